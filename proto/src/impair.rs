//! A pure, seeded model of an impaired network link: random and burst (Gilbert–Elliott)
//! loss, delay with jitter, duplication, reordering, bit corruption and a token-bucket
//! rate limit.
//!
//! Like the rest of `proto` it does no I/O and reads no clock: [`Link::send`] takes the
//! current time in nanoseconds and returns the [`Delivery`]s — when and what arrives at the
//! other end (none = lost, two = duplicated). The same [`Config`], seed and inputs always
//! give the same outputs, so one failing seed reproduces both in an in-process simulation
//! and behind the `telemesh-relay` UDP proxy (`docs/relay.md`), which drives this model.
//!
//! # Order of effects per packet
//!
//! 1. Gilbert–Elliott state transition (if configured), then burst loss by state;
//! 2. random loss (`loss`);
//! 3. rate limit: a packet that finds fewer tokens than its length is dropped, as a full
//!    queue would drop it (lost packets consume no tokens);
//! 4. corruption: one random bit of the delivered copy is flipped;
//! 5. delay: `delay_ns` ± uniform `jitter_ns` (never before `now`), plus
//!    `reorder_extra_ns` for a `reorder` fraction of packets so later ones overtake them;
//! 6. duplication: a second copy of the (possibly corrupted) packet, with its own delay.
//!
//! A feature that is off draws no random numbers, so the default configuration delivers
//! every packet unchanged at `now` and consumes nothing from the generator.
//!
//! [`Config::netem`] prints the equivalent Linux `tc netem` command for real hosts.

use std::fmt::Write as _;

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Default extra delay of a reordered packet: 10 ms.
pub const DEFAULT_REORDER_EXTRA_NS: u64 = 10_000_000;
/// Default token-bucket size of the rate limit: 64 KiB.
pub const DEFAULT_BUCKET_BYTES: u64 = 64 * 1024;

/// Gilbert–Elliott two-state burst loss: a Markov chain between a good and a bad state,
/// stepped once per packet, with a loss probability per state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Burst {
    /// Probability of moving from good to bad per packet (netem's `p`).
    pub p_good_to_bad: f64,
    /// Probability of moving from bad to good per packet (netem's `r`).
    pub p_bad_to_good: f64,
    /// Loss probability in the good state (netem's `1-k`).
    pub loss_good: f64,
    /// Loss probability in the bad state (netem's `1-h`).
    pub loss_bad: f64,
}

impl Burst {
    /// The simple Gilbert model: lossless good state, everything lost in the bad state.
    pub fn gilbert(p_good_to_bad: f64, p_bad_to_good: f64) -> Self {
        Burst { p_good_to_bad, p_bad_to_good, loss_good: 0.0, loss_bad: 1.0 }
    }

    /// Long-run average loss probability (stationary distribution of the chain).
    pub fn mean_loss(&self) -> f64 {
        let total = self.p_good_to_bad + self.p_bad_to_good;
        if total <= 0.0 {
            return self.loss_good;
        }
        let bad = self.p_good_to_bad / total;
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// What a link does to packets. `Default` is a perfect link.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Independent random loss probability, 0..=1.
    pub loss: f64,
    /// Optional burst loss, applied in addition to `loss`.
    pub burst: Option<Burst>,
    /// Base one-way delay.
    pub delay_ns: u64,
    /// Uniform jitter: each delay is `delay_ns ± jitter_ns`, never below zero.
    pub jitter_ns: u64,
    /// Probability that a packet is delivered twice, 0..=1.
    pub duplicate: f64,
    /// Probability that a packet is held back by `reorder_extra_ns`, 0..=1.
    pub reorder: f64,
    /// Extra delay of a reordered packet.
    pub reorder_extra_ns: u64,
    /// Probability that one random bit of a packet is flipped, 0..=1.
    pub corrupt: f64,
    /// Optional rate limit in bytes per second; packets beyond it are dropped.
    pub rate_bps: Option<u64>,
    /// Token-bucket size of the rate limit in bytes (the burst it lets through at once).
    pub bucket_bytes: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            loss: 0.0,
            burst: None,
            delay_ns: 0,
            jitter_ns: 0,
            duplicate: 0.0,
            reorder: 0.0,
            reorder_extra_ns: DEFAULT_REORDER_EXTRA_NS,
            corrupt: 0.0,
            rate_bps: None,
            bucket_bytes: DEFAULT_BUCKET_BYTES,
        }
    }
}

/// An out-of-range [`Config`] value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A probability outside 0..=1 (or NaN).
    #[error("{field} must be a probability between 0 and 1, got {value}")]
    Probability {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: f64,
    },
    /// `rate_bps` of zero would drop everything; use `loss = 1` for that.
    #[error("rate must be at least 1 byte per second")]
    ZeroRate,
    /// A rate limit with an empty bucket would drop everything.
    #[error("the rate limit's bucket must be at least 1 byte")]
    ZeroBucket,
}

impl Config {
    /// Checks that every probability is in 0..=1 and the rate limit is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut probs = vec![
            ("loss", self.loss),
            ("duplicate", self.duplicate),
            ("reorder", self.reorder),
            ("corrupt", self.corrupt),
        ];
        if let Some(b) = &self.burst {
            probs.extend([
                ("p_good_to_bad", b.p_good_to_bad),
                ("p_bad_to_good", b.p_bad_to_good),
                ("loss_good", b.loss_good),
                ("loss_bad", b.loss_bad),
            ]);
        }
        for (field, value) in probs {
            if !(0.0..=1.0).contains(&value) {
                return Err(ConfigError::Probability { field, value });
            }
        }
        if let Some(rate) = self.rate_bps {
            if rate == 0 {
                return Err(ConfigError::ZeroRate);
            }
            if self.bucket_bytes == 0 {
                return Err(ConfigError::ZeroBucket);
            }
        }
        Ok(())
    }

    /// True if this configuration changes nothing.
    pub fn is_perfect(&self) -> bool {
        self.loss == 0.0
            && self.burst.is_none()
            && self.delay_ns == 0
            && self.jitter_ns == 0
            && self.duplicate == 0.0
            && self.reorder == 0.0
            && self.corrupt == 0.0
            && self.rate_bps.is_none()
    }

    /// The equivalent Linux command for a real host, with the literal interface name
    /// `IFACE`: `tc qdisc add dev IFACE root netem ...`.
    ///
    /// Differences from this model, where netem has no exact equivalent:
    /// - netem has one loss model: with `burst`, the random `loss` is folded into both
    ///   states' loss probabilities (exactly equivalent, as both are independent);
    /// - netem's `reorder P` sends P of the packets *without* the delay, so they jump
    ///   ahead, where this model holds P back. With no base delay the command is exact
    ///   (`delay EXTRA reorder 1-P`); with a delay it is the mirror image (`reorder P`),
    ///   which reorders the same fraction of packets;
    /// - netem's `rate` queues packets instead of dropping them at a 64 KiB bucket.
    pub fn netem(&self) -> String {
        let mut cmd = String::from("tc qdisc add dev IFACE root netem");
        if let Some(b) = &self.burst {
            let keep = 1.0 - self.loss;
            let loss_good = 1.0 - keep * (1.0 - b.loss_good);
            let loss_bad = 1.0 - keep * (1.0 - b.loss_bad);
            let _ = write!(
                cmd,
                " loss gemodel {} {} {} {}",
                pct(b.p_good_to_bad),
                pct(b.p_bad_to_good),
                pct(loss_bad),
                pct(loss_good)
            );
        } else if self.loss > 0.0 {
            let _ = write!(cmd, " loss {}", pct(self.loss));
        }
        let reorder_only = self.reorder > 0.0 && self.delay_ns == 0 && self.jitter_ns == 0;
        if reorder_only {
            let _ = write!(
                cmd,
                " delay {}us reorder {}",
                self.reorder_extra_ns / 1000,
                pct(1.0 - self.reorder)
            );
        } else if self.delay_ns > 0 || self.jitter_ns > 0 {
            let _ = write!(cmd, " delay {}us", self.delay_ns / 1000);
            if self.jitter_ns > 0 {
                let _ = write!(cmd, " {}us", self.jitter_ns / 1000);
            }
            if self.reorder > 0.0 {
                let _ = write!(cmd, " reorder {}", pct(self.reorder));
            }
        }
        if self.duplicate > 0.0 {
            let _ = write!(cmd, " duplicate {}", pct(self.duplicate));
        }
        if self.corrupt > 0.0 {
            let _ = write!(cmd, " corrupt {}", pct(self.corrupt));
        }
        if let Some(rate) = self.rate_bps {
            let _ = write!(cmd, " rate {}bit", rate.saturating_mul(8));
        }
        cmd
    }
}

/// A probability as a netem percentage, without float noise (`0.3` → `30%`).
fn pct(p: f64) -> String {
    let s = format!("{:.4}", p * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// One copy of a packet arriving at the far end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Arrival time, in the same nanosecond clock as `now_ns` of [`Link::send`].
    pub at_ns: u64,
    /// The bytes that arrive (possibly with one bit flipped).
    pub bytes: Vec<u8>,
}

/// What a [`Link`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Packets given to [`Link::send`].
    pub sent: u64,
    /// Packets lost to random loss.
    pub lost_random: u64,
    /// Packets lost to Gilbert–Elliott burst loss.
    pub lost_burst: u64,
    /// Packets dropped by the rate limit.
    pub lost_rate: u64,
    /// Packets delivered twice.
    pub duplicated: u64,
    /// Packets with a flipped bit.
    pub corrupted: u64,
    /// Packets held back by the reorder delay.
    pub reordered: u64,
}

impl Stats {
    /// All packets lost, whatever the cause.
    pub fn lost(&self) -> u64 {
        self.lost_random + self.lost_burst + self.lost_rate
    }

    /// Adds another set of counters to these (e.g. to total several links).
    pub fn add(&mut self, other: &Stats) {
        self.sent += other.sent;
        self.lost_random += other.lost_random;
        self.lost_burst += other.lost_burst;
        self.lost_rate += other.lost_rate;
        self.duplicated += other.duplicated;
        self.corrupted += other.corrupted;
        self.reordered += other.reordered;
    }
}

/// One direction of an impaired link: a [`Config`], a seeded generator and the state of
/// the burst chain and the token bucket.
#[derive(Debug, Clone)]
pub struct Link {
    config: Config,
    rng: ChaCha8Rng,
    bad: bool,
    tokens: u64,
    last_refill_ns: Option<u64>,
    stats: Stats,
}

impl Link {
    /// A link with the given behaviour and generator seed. The config should have passed
    /// [`Config::validate`]; out-of-range probabilities act as clamped to 0..=1.
    pub fn new(config: Config, seed: u64) -> Self {
        let tokens = config.bucket_bytes;
        Link {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            bad: false,
            tokens,
            last_refill_ns: None,
            stats: Stats::default(),
        }
    }

    /// The link's configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Sends one packet at `now_ns`; returns its deliveries (none if lost, two if
    /// duplicated), each at or after `now_ns`.
    pub fn send(&mut self, now_ns: u64, bytes: &[u8]) -> Vec<Delivery> {
        self.stats.sent += 1;

        if let Some(b) = self.config.burst {
            let flip = if self.bad { b.p_bad_to_good } else { b.p_good_to_bad };
            if self.chance(flip) {
                self.bad = !self.bad;
            }
            let loss = if self.bad { b.loss_bad } else { b.loss_good };
            if self.chance(loss) {
                self.stats.lost_burst += 1;
                return Vec::new();
            }
        }
        if self.chance(self.config.loss) {
            self.stats.lost_random += 1;
            return Vec::new();
        }
        if let Some(rate) = self.config.rate_bps {
            self.refill(now_ns, rate);
            let len = bytes.len() as u64;
            if len > self.tokens {
                self.stats.lost_rate += 1;
                return Vec::new();
            }
            self.tokens -= len;
        }

        let mut data = bytes.to_vec();
        if !data.is_empty() && self.chance(self.config.corrupt) {
            let bit = self.below(data.len() as u64 * 8);
            data[(bit / 8) as usize] ^= 1 << (bit % 8);
            self.stats.corrupted += 1;
        }

        let duplicate = self.chance(self.config.duplicate);
        let mut out = Vec::with_capacity(if duplicate { 2 } else { 1 });
        let at_ns = self.arrival(now_ns);
        if duplicate {
            self.stats.duplicated += 1;
            let at_ns = self.arrival(now_ns);
            out.push(Delivery { at_ns, bytes: data.clone() });
        }
        out.insert(0, Delivery { at_ns, bytes: data });
        out
    }

    /// Arrival time of one copy: delay, jitter and the reorder hold-back.
    fn arrival(&mut self, now_ns: u64) -> u64 {
        let mut delay = self.config.delay_ns;
        let jitter = self.config.jitter_ns;
        if jitter > 0 {
            // Uniform in [delay - jitter, delay + jitter], never below zero.
            let offset = self.below(jitter.saturating_mul(2).saturating_add(1));
            delay = delay.saturating_add(offset).saturating_sub(jitter);
        }
        if self.chance(self.config.reorder) {
            self.stats.reordered += 1;
            delay = delay.saturating_add(self.config.reorder_extra_ns);
        }
        now_ns.saturating_add(delay)
    }

    fn refill(&mut self, now_ns: u64, rate: u64) {
        let last = self.last_refill_ns.get_or_insert(now_ns);
        let elapsed = now_ns.saturating_sub(*last);
        let earned = (u128::from(elapsed) * u128::from(rate) / 1_000_000_000) as u64;
        if earned > 0 {
            self.tokens = self.tokens.saturating_add(earned).min(self.config.bucket_bytes);
            // Advance only by the time the earned tokens account for, so that
            // fractions of a byte are not lost between closely spaced packets.
            let used = (u128::from(earned) * 1_000_000_000 / u128::from(rate)) as u64;
            *last = last.saturating_add(used.max(1));
            if self.tokens == self.config.bucket_bytes {
                *last = now_ns;
            }
        }
    }

    /// True with probability `p`; draws nothing when `p <= 0`.
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        if p >= 1.0 {
            return true;
        }
        self.unit() < p
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) for n > 0 (Lemire's multiply-shift; bias is below 2^-32 here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.rng.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn run(config: &Config, seed: u64, n: u64) -> (Link, Vec<Vec<Delivery>>) {
        let mut link = Link::new(config.clone(), seed);
        let out = (0..n).map(|i| link.send(i * MS, &i.to_be_bytes())).collect();
        (link, out)
    }

    /// Lengths of the runs of consecutive losses.
    fn loss_runs(out: &[Vec<Delivery>]) -> Vec<usize> {
        let mut runs = Vec::new();
        let mut current = 0;
        for d in out {
            if d.is_empty() {
                current += 1;
            } else if current > 0 {
                runs.push(current);
                current = 0;
            }
        }
        if current > 0 {
            runs.push(current);
        }
        runs
    }

    #[test]
    fn perfect_link_delivers_everything_unchanged_now() {
        let mut link = Link::new(Config::default(), 7);
        for i in 0..1000u64 {
            let bytes = i.to_le_bytes();
            let out = link.send(i * 13, &bytes);
            assert_eq!(out, vec![Delivery { at_ns: i * 13, bytes: bytes.to_vec() }]);
        }
        assert_eq!(link.stats(), Stats { sent: 1000, ..Stats::default() });
        assert!(Config::default().is_perfect());
        assert_eq!(Config::default().netem(), "tc qdisc add dev IFACE root netem");
    }

    #[test]
    fn same_seed_same_outputs_other_seed_differs() {
        let config = Config {
            loss: 0.1,
            burst: Some(Burst::gilbert(0.01, 0.3)),
            delay_ns: 20 * MS,
            jitter_ns: 5 * MS,
            duplicate: 0.05,
            reorder: 0.05,
            corrupt: 0.05,
            rate_bps: Some(4000),
            ..Config::default()
        };
        let (a_link, a) = run(&config, 42, 5000);
        let (b_link, b) = run(&config, 42, 5000);
        assert_eq!(a, b);
        assert_eq!(a_link.stats(), b_link.stats());
        let (_, c) = run(&config, 43, 5000);
        assert_ne!(a, c);
    }

    #[test]
    fn random_loss_rate_within_tolerance() {
        for loss in [0.01, 0.3, 0.9] {
            for seed in [1, 2, 3] {
                let config = Config { loss, ..Config::default() };
                let (link, out) = run(&config, seed, 100_000);
                let lost = out.iter().filter(|d| d.is_empty()).count() as f64 / 1e5;
                assert!((lost - loss).abs() < 0.01, "loss {loss} seed {seed}: {lost}");
                assert_eq!(link.stats().lost_random as f64 / 1e5, lost);
            }
        }
    }

    #[test]
    fn burst_loss_gives_longer_runs_at_the_same_average() {
        // Stationary bad fraction 0.01 / (0.01 + 0.09) = 10%, all of it lost.
        let burst = Burst::gilbert(0.01, 0.09);
        assert!((burst.mean_loss() - 0.1).abs() < 1e-12);
        for seed in [1, 2, 3] {
            let (_, ge) = run(&Config { burst: Some(burst), ..Config::default() }, seed, 100_000);
            let (_, random) = run(&Config { loss: 0.1, ..Config::default() }, seed, 100_000);
            let ge_lost = ge.iter().filter(|d| d.is_empty()).count() as f64 / 1e5;
            assert!((ge_lost - 0.1).abs() < 0.02, "seed {seed}: {ge_lost}");
            let mean = |runs: Vec<usize>| runs.iter().sum::<usize>() as f64 / runs.len() as f64;
            let (ge_run, random_run) = (mean(loss_runs(&ge)), mean(loss_runs(&random)));
            // Expected: 1 / 0.09 ≈ 11 for the burst model, 1 / 0.9 ≈ 1.1 for random loss.
            assert!(ge_run > 5.0 * random_run, "seed {seed}: {ge_run} vs {random_run}");
        }
    }

    #[test]
    fn delay_and_jitter_stay_in_bounds_and_spread() {
        let config = Config { delay_ns: 50 * MS, jitter_ns: 10 * MS, ..Config::default() };
        let (_, out) = run(&config, 5, 10_000);
        let delays: Vec<u64> =
            out.iter().enumerate().map(|(i, d)| d[0].at_ns - i as u64 * MS).collect();
        assert!(delays.iter().all(|&d| (40 * MS..=60 * MS).contains(&d)));
        assert!(delays.iter().any(|&d| d < 42 * MS) && delays.iter().any(|&d| d > 58 * MS));

        // Jitter larger than the delay never schedules before `now`.
        let config = Config { delay_ns: MS, jitter_ns: 5 * MS, ..Config::default() };
        let (_, out) = run(&config, 5, 10_000);
        for (i, d) in out.iter().enumerate() {
            let now = i as u64 * MS;
            assert!(d[0].at_ns >= now && d[0].at_ns <= now + 6 * MS);
        }
    }

    #[test]
    fn reorder_holds_back_a_fraction() {
        let config = Config { reorder: 0.2, ..Config::default() };
        let (link, out) = run(&config, 9, 100_000);
        let held = out.iter().enumerate().filter(|(i, d)| d[0].at_ns > *i as u64 * MS).count();
        assert_eq!(held as u64, link.stats().reordered);
        assert!((held as f64 / 1e5 - 0.2).abs() < 0.01);
        // Held-back packets arrive after the next ones (1 ms apart, 10 ms extra).
        let overtaken = out.windows(2).filter(|w| w[0][0].at_ns > w[1][0].at_ns).count();
        assert!(overtaken > 10_000);
    }

    #[test]
    fn duplication_and_corruption_rates() {
        let config = Config { duplicate: 0.25, corrupt: 0.1, ..Config::default() };
        let (link, out) = run(&config, 11, 100_000);
        let dups = out.iter().filter(|d| d.len() == 2).count() as f64 / 1e5;
        assert!((dups - 0.25).abs() < 0.01, "{dups}");
        let mut corrupted = 0;
        for (i, d) in out.iter().enumerate() {
            let sent = (i as u64).to_be_bytes();
            let diff: u32 = d[0].bytes.iter().zip(sent).map(|(a, b)| (a ^ b).count_ones()).sum();
            assert!(diff <= 1);
            corrupted += diff as u64;
            if d.len() == 2 {
                assert_eq!(d[0].bytes, d[1].bytes);
            }
        }
        assert_eq!(corrupted, link.stats().corrupted);
        assert!((corrupted as f64 / 1e5 - 0.1).abs() < 0.01);
        let full = Config { duplicate: 1.0, ..Config::default() };
        let (_, out) = run(&full, 1, 100);
        assert!(out.iter().all(|d| d.len() == 2));
    }

    #[test]
    fn rate_limit_caps_throughput() {
        // 1,000-byte packets every 1 ms (1 MB/s) through a 100 kB/s limit for 10 s.
        let config = Config { rate_bps: Some(100_000), ..Config::default() };
        let mut link = Link::new(config, 3);
        let packet = [0u8; 1000];
        let delivered = (0..10_000u64).filter(|i| !link.send(i * MS, &packet).is_empty()).count();
        let bytes = delivered as u64 * 1000;
        // 10 s × 100 kB/s plus the initial 64 KiB bucket.
        let cap = 1_000_000 + DEFAULT_BUCKET_BYTES;
        assert!(bytes <= cap && bytes > cap - 5_000, "{bytes}");
        assert_eq!(link.stats().lost_rate, 10_000 - delivered as u64);

        // Below the limit nothing is dropped.
        let config = Config { rate_bps: Some(2_000_000), ..Config::default() };
        let mut link = Link::new(config, 3);
        assert!((0..10_000u64).all(|i| !link.send(i * MS, &packet).is_empty()));
    }

    #[test]
    fn validate_rejects_out_of_range() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = Config { loss: 1.5, ..Config::default() };
        assert!(matches!(bad.validate(), Err(ConfigError::Probability { field: "loss", .. })));
        let bad = Config { duplicate: f64::NAN, ..Config::default() };
        assert!(bad.validate().is_err());
        let bad = Config { burst: Some(Burst::gilbert(-0.1, 0.5)), ..Config::default() };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::Probability { field: "p_good_to_bad", .. })
        ));
        let bad = Config { rate_bps: Some(0), ..Config::default() };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroRate));
        let bad = Config { rate_bps: Some(1), bucket_bytes: 0, ..Config::default() };
        assert_eq!(bad.validate(), Err(ConfigError::ZeroBucket));
    }

    #[test]
    fn netem_command_lines() {
        let config = Config {
            loss: 0.3,
            delay_ns: 50 * MS,
            jitter_ns: 5 * MS,
            duplicate: 0.01,
            reorder: 0.25,
            corrupt: 0.001,
            rate_bps: Some(125_000),
            ..Config::default()
        };
        assert_eq!(
            config.netem(),
            "tc qdisc add dev IFACE root netem loss 30% delay 50000us 5000us reorder 25% \
             duplicate 1% corrupt 0.1% rate 1000000bit"
        );
        let config = Config {
            burst: Some(Burst {
                p_good_to_bad: 0.01,
                p_bad_to_good: 0.2,
                loss_good: 0.0,
                loss_bad: 0.5,
            }),
            reorder: 0.1,
            ..Config::default()
        };
        assert_eq!(
            config.netem(),
            "tc qdisc add dev IFACE root netem loss gemodel 1% 20% 50% 0% delay 10000us reorder 90%"
        );
    }
}
