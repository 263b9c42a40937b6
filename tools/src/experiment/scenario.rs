//! The source documents' scenarios (the IoTStream v1 Mini-RFC's test scenarios, the TinyTelemetry
//! v1 design document's integration tests), their relay
//! impairment, file names and seeds.

use std::time::Duration;

use telemesh_proto::impair;

/// One scenario: a kind of network (`baseline`, `loss`, `delay`) at one reporting interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// `baseline`, `loss` or `delay`: the source documents' `SCENARIO` in `results_SCENARIO_…`.
    pub kind: &'static str,
    /// The sensors' reporting interval.
    pub interval: Duration,
    /// What each site's relay does to the sensor → node datagrams.
    pub impairment: impair::Config,
    /// One line for `--help` and the report.
    pub description: &'static str,
}

const MS: u64 = 1_000_000;

/// The five scenarios of the source documents, in the order they run.
pub fn all() -> Vec<Scenario> {
    let none = impair::Config::default;
    vec![
        Scenario {
            kind: "baseline",
            interval: Duration::from_secs(1),
            impairment: none(),
            description: "no impairment, 1 s interval",
        },
        Scenario {
            kind: "baseline",
            interval: Duration::from_secs(5),
            impairment: none(),
            description: "no impairment, 5 s interval",
        },
        Scenario {
            kind: "baseline",
            interval: Duration::from_secs(30),
            impairment: none(),
            description: "no impairment, 30 s interval",
        },
        Scenario {
            kind: "loss",
            interval: Duration::from_secs(1),
            impairment: impair::Config {
                loss: 0.05,
                ..none()
            },
            description: "5% independent random loss, 1 s interval",
        },
        Scenario {
            kind: "delay",
            interval: Duration::from_secs(1),
            impairment: impair::Config {
                delay_ns: 100 * MS,
                jitter_ns: 10 * MS,
                ..none()
            },
            description: "100 ms ± 10 ms delay (uniform), 1 s interval",
        },
    ]
}

/// The scenario called `name` (`baseline-1s`, …), if any.
pub fn by_name(name: &str) -> Option<Scenario> {
    all().into_iter().find(|s| s.name() == name)
}

/// `--help` text listing every scenario with its relay's netem equivalent.
pub fn help() -> String {
    let mut out = String::from("Scenarios (each through a relay in front of every site):\n");
    for s in all() {
        out.push_str(&format!("  {:<13} {}\n", s.name(), s.description));
    }
    out
}

impl Scenario {
    /// `baseline-1s`, `loss-1s`, …: what `--scenario` takes.
    pub fn name(&self) -> String {
        format!("{}-{}", self.kind, self.interval_label())
    }

    /// The interval as the source documents write it in file names: `1s`, `5s`, `30s`, `500ms`.
    pub fn interval_label(&self) -> String {
        let ms = self.interval.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }

    /// `baseline_1s_run1`: the source documents' `SCENARIO_INTERVALS_runN` (runs count from 1).
    pub fn stem(&self, run: usize) -> String {
        format!("{}_{}_run{run}", self.kind, self.interval_label())
    }

    /// `results_baseline_1s_run1.csv` (as the Mini-RFC's experiment script names it).
    pub fn csv_name(&self, run: usize) -> String {
        format!("results_{}.csv", self.stem(run))
    }

    /// `trace_baseline_1s_run1.pcap` (as the Mini-RFC's experiment script names it).
    pub fn pcap_name(&self, run: usize) -> String {
        format!("trace_{}.pcap", self.stem(run))
    }

    /// Random loss in percent (the x axis of the duplicate-rate plot).
    pub fn loss_percent(&self) -> f64 {
        self.impairment.loss * 100.0
    }

    /// Whether the relay leaves the datagrams alone.
    pub fn is_unimpaired(&self) -> bool {
        self.impairment == impair::Config::default()
    }

    /// The `tc netem` command a real host would use instead of the relay (`none`).
    pub fn netem(&self) -> String {
        if self.is_unimpaired() {
            "none".to_owned()
        } else {
            self.impairment.netem().replace("IFACE", "lo")
        }
    }

    /// How long datagrams can be held in the relay: delay plus jitter.
    pub fn max_delay(&self) -> Duration {
        Duration::from_nanos(self.impairment.delay_ns + self.impairment.jitter_ns)
    }
}

/// What a derived seed is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sensor simulator (contents and schedule jitter).
    Sensor,
    /// The relay in front of site `i` (0 = a).
    Relay(usize),
}

/// The seed of one component of one run: a SplitMix64 mix of the base seed, the scenario's
/// name (not its position, so `--scenario loss-1s` alone reproduces the same run as a full
/// set), the run number and the role. Different runs, sites and the sensor get unrelated
/// seeds; the same inputs always give the same seed.
pub fn derive_seed(base: u64, scenario: &str, run: usize, role: Role) -> u64 {
    // FNV-1a of the name.
    let mut name = 0xcbf2_9ce4_8422_2325u64;
    for b in scenario.bytes() {
        name = (name ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    let role = match role {
        Role::Sensor => 0,
        Role::Relay(i) => 1 + i as u64,
    };
    [name, run as u64, role]
        .into_iter()
        .fold(splitmix(base), |acc, x| splitmix(acc ^ splitmix(x)))
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn the_five_seed_scenarios_with_their_names_and_files() {
        let names: Vec<String> = all().iter().map(Scenario::name).collect();
        assert_eq!(
            names,
            [
                "baseline-1s",
                "baseline-5s",
                "baseline-30s",
                "loss-1s",
                "delay-1s"
            ]
        );
        let loss = by_name("loss-1s").expect("loss-1s");
        assert_eq!(loss.csv_name(3), "results_loss_1s_run3.csv");
        assert_eq!(loss.pcap_name(1), "trace_loss_1s_run1.pcap");
        assert_eq!(loss.loss_percent(), 5.0);
        assert_eq!(
            by_name("baseline-30s").expect("30s").csv_name(1),
            "results_baseline_30s_run1.csv"
        );
        assert!(by_name("baseline").is_none());
        let half = Scenario {
            interval: Duration::from_millis(500),
            ..loss
        };
        assert_eq!(half.stem(2), "loss_500ms_run2");
    }

    #[test]
    fn impairments_match_the_seeds_netem_commands() {
        assert_eq!(by_name("baseline-1s").expect("b").netem(), "none");
        assert_eq!(
            by_name("loss-1s").expect("l").netem(),
            "tc qdisc add dev lo root netem loss 5%"
        );
        let delay = by_name("delay-1s").expect("d");
        assert_eq!(
            delay.netem(),
            "tc qdisc add dev lo root netem delay 100000us 10000us"
        );
        assert_eq!(delay.max_delay(), Duration::from_millis(110));
        assert!(help().contains("delay-1s"));
    }

    #[test]
    fn derived_seeds_are_stable_and_distinct() {
        let a = derive_seed(1, "loss-1s", 1, Role::Relay(0));
        assert_eq!(a, derive_seed(1, "loss-1s", 1, Role::Relay(0)));
        let mut seen = HashSet::new();
        for base in [0, 1, 2] {
            for name in ["baseline-1s", "loss-1s"] {
                for run in 1..=5 {
                    for role in [Role::Sensor, Role::Relay(0), Role::Relay(1), Role::Relay(2)] {
                        assert!(seen.insert(derive_seed(base, name, run, role)));
                    }
                }
            }
        }
    }
}
