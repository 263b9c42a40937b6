//! `telemesh-bench repair`: repair overhead of telemesh against two baselines (ARQ and
//! whole-window fetch), in-process on the pure state machines (`proto::mesh::sim`):
//! seeded, deterministic, about a second per point.
//!
//! Every point of the sweep — sensor loss (random or bursty), sites, overlay loss, records
//! per window — makes one set of sensor records and one pattern of which site heard which
//! datagram, then runs the same simulated mesh once per scheme on them: the same gossip
//! and summary exchange, the same overlay links (seeds), only the repair differs. See
//! `docs/benchmarks.md`, "Repair overhead", for what each column means.
//!
//! [`Point`], [`Measure`] and the [`report`] functions do not depend on the simulation, so
//! a sweep over real nodes can fill them in and print the same table, CSV and plots.

pub mod report;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use telemesh_proto::mesh::sim::{self, Kind, Scheme, SensorLoss, Sensors, Sim};
use telemesh_proto::mesh::WindowId;
use telemesh_proto::record::Record;
use telemesh_proto::{impair, mesh, window};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// A small sweep (3 sites, fewer losses and devices) for a quick look.
    #[arg(long)]
    quick: bool,
    /// Seed of the sensors' readings and of every loss pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Devices per point (default 20, or 6 with --quick).
    #[arg(long)]
    devices: Option<u32>,
    /// Minutes (windows per device) per point (default 3, or 1 with --quick).
    #[arg(long)]
    minutes: Option<u32>,
    /// One-way delay of every overlay link, in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// A request unanswered for this long fails, in milliseconds.
    #[arg(long, default_value_t = 500)]
    timeout_ms: u64,
    /// Mean length of a loss burst for the bursty sensor loss, in datagrams.
    #[arg(long, default_value_t = 5.0)]
    burst: f64,
    /// Simulations run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Site counts of the sweep, comma-separated (default 2,3,5, or 3 with --quick);
    /// `telemesh-bench scale` measures the overlay's cost per site.
    #[arg(long, value_delimiter = ',')]
    sites: Vec<usize>,
    /// Directory for repair.csv and the plots.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

/// How the sensors' datagrams are lost on their way to a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    Random,
    /// Gilbert bursts of this mean length.
    Burst(f64),
}

impl Pattern {
    pub fn name(&self) -> &'static str {
        match self {
            Pattern::Random => "random",
            Pattern::Burst(_) => "bursty",
        }
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub pattern: Pattern,
    /// Mean loss between the sensors and each site.
    pub sensor_loss: f64,
    pub sites: usize,
    /// Loss of every message on every overlay link.
    pub overlay_loss: f64,
    /// Records per device and window (60 at 1 Hz, 600 at 10 Hz).
    pub per_window: u64,
}

/// What one scheme did at one point.
#[derive(Debug, Clone, Default)]
pub struct Measure {
    pub scheme: &'static str,
    /// Records heard by at least one site.
    pub union: u64,
    /// Σ over sites of the records some site heard and it did not.
    pub lacked: u64,
    /// Σ over sites of the records it got by repair.
    pub repaired: u64,
    /// Bytes a record takes in a window: its index entry and its slot.
    pub record_bytes: u64,
    /// Bytes of a record's datagram.
    pub datagram_bytes: u64,
    /// Repair requests and responses, frames included.
    pub repair_bytes: u64,
    /// … of which each repair kind (`index`, `symbols`, `records`, `blob`): all bytes,
    /// request bytes, requests.
    pub repair_by_kind: Vec<(&'static str, u64, u64, u64)>,
    pub repair_requests: u64,
    pub request_failures: u64,
    /// Symbols (telemesh) or records (baselines) received, and asked for.
    pub symbols_received: u64,
    pub symbols_requested: u64,
    pub decode_failures: u64,
    pub verification_failures: u64,
    /// Index exchanges answered `NotFound` (the holder's root moved on), and their bytes.
    pub index_not_found: u64,
    pub index_not_found_bytes: u64,
    /// Repairs that got records, and those that found nothing lacked.
    pub windows_repaired: u64,
    pub windows_covered: u64,
    pub gossip_bytes: u64,
    pub summary_bytes: u64,
    pub provenance_bytes: u64,
    pub windows: usize,
    /// Windows on which the sites never agreed.
    pub unconverged: usize,
    /// Per converged window: repair round trips on the critical path.
    pub round_trips: Vec<u32>,
    /// Per converged window: ms from its seal until every site held the same root.
    pub times_ms: Vec<f64>,
    /// Per window: ms from its seal until every site held the same root and the same
    /// provenance table.
    pub table_times_ms: Vec<f64>,
    /// Windows whose provenance tables never became the same everywhere.
    pub tables_unconverged: usize,
    /// Wall time of the simulation.
    pub wall_ms: f64,
}

impl Measure {
    /// Repair bytes per byte of record lacked (index entry + slot): the headline.
    pub fn overhead(&self) -> f64 {
        self.repair_bytes as f64 / (self.lacked * self.record_bytes).max(1) as f64
    }
    /// Repair bytes per datagram byte lacked.
    pub fn overhead_datagram(&self) -> f64 {
        self.repair_bytes as f64 / (self.lacked * self.datagram_bytes).max(1) as f64
    }
    pub fn mean_round_trips(&self) -> f64 {
        mean(self.round_trips.iter().map(|x| f64::from(*x)))
    }
    pub fn max_round_trips(&self) -> u32 {
        self.round_trips.iter().copied().max().unwrap_or(0)
    }
    pub fn time_ms(&self, p: f64) -> f64 {
        percentile(&self.times_ms, p)
    }
    pub fn table_time_ms(&self, p: f64) -> f64 {
        percentile(&self.table_times_ms, p)
    }
    /// Symbols (or records) received per record repaired.
    pub fn received_per_missing(&self) -> f64 {
        self.symbols_received as f64 / self.repaired.max(1) as f64
    }
    /// Gossip and summary-exchange bytes per record heard.
    pub fn gossip_per_record(&self) -> f64 {
        (self.gossip_bytes + self.summary_bytes) as f64 / self.union.max(1) as f64
    }
}

fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0usize), |(s, n), x| (s + x, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The `p` quantile (nearest rank) of unsorted values; NaN if none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// The sweep's simulation settings beside the point.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub devices: u32,
    pub minutes: u32,
    pub latency_ns: u64,
    pub timeout_ns: u64,
    pub seed: u64,
    /// Seals spread over this much time: site i seals its windows i × spread / sites after
    /// the first (0: every site at once).
    pub spread_ns: u64,
    /// Jitter of every overlay link (± this much on top of `latency_ns`).
    pub jitter_ns: u64,
    /// Coordinators per window (`sim::Config::coordinators`); `None`: every node
    /// announces to every node.
    pub coordinators: Option<usize>,
}

/// Device time of the first window: a window boundary.
const START_NS: u64 = 1_800_000_000 * 1_000_000_000;

/// The sensors' records of a point, and which site heard each.
pub fn workload(point: &Point, setup: &Setup) -> (Sensors, Vec<Record>, Vec<Vec<bool>>) {
    let sensors = Sensors {
        devices: setup.devices,
        period_ns: window::SPAN_NS / point.per_window,
        minutes: setup.minutes,
        start_ns: START_NS,
    };
    let records = sensors.records(setup.seed);
    let loss = match point.pattern {
        Pattern::Random => SensorLoss::Random(point.sensor_loss),
        Pattern::Burst(mean_burst) => SensorLoss::Burst {
            loss: point.sensor_loss,
            mean_burst,
        },
    };
    let heard = sim::hear(
        &records,
        point.sites,
        &loss.link(),
        setup.seed.wrapping_mul(1_000_003),
    );
    (sensors, records, heard)
}

/// Runs one scheme on one point in the simulated mesh.
pub fn simulate(point: &Point, setup: &Setup, scheme: Scheme) -> Measure {
    let began = Instant::now();
    let (sensors, records, heard) = workload(point, setup);
    let config = sim::Config {
        nodes: point.sites,
        scheme,
        mesh: mesh::Config::default(),
        overlay: impair::Config {
            loss: point.overlay_loss,
            delay_ns: setup.latency_ns,
            jitter_ns: setup.jitter_ns,
            ..impair::Config::default()
        },
        seed: setup.seed.wrapping_mul(7_919).wrapping_add(1_000_000),
        request_timeout_ns: setup.timeout_ns,
        coordinators: setup.coordinators,
        ..sim::Config::default()
    };
    let mut s = Sim::new(config);
    s.connect_all();
    // Sim time 0 is device time START_NS. A window is sealed when the device's next
    // record arrives, one period after its end; every site seals it then and announces it.
    for m in 0..u64::from(sensors.minutes) {
        let seal = (m + 1) * window::SPAN_NS + sensors.period_ns;
        let span = START_NS + m * window::SPAN_NS..START_NS + (m + 1) * window::SPAN_NS;
        // Every site holds its records when the first seals (a real node counts the records
        // of a window still open as held); the announcements go out spread over `spread_ns`.
        s.run_until(seal);
        let mut announced = Vec::with_capacity(heard.len());
        for (site, h) in heard.iter().enumerate() {
            let mine: Vec<Record> = records
                .iter()
                .zip(h)
                .filter(|(r, h)| **h && span.contains(&r.device_time_ns))
                .map(|(r, _)| r.clone())
                .collect();
            let windows: std::collections::BTreeSet<WindowId> = mine
                .iter()
                .map(|r| WindowId {
                    stream: r.stream,
                    start: window::start(r.device_time_ns),
                })
                .collect();
            s.hear(site, &mine);
            announced.push(windows);
        }
        for (site, windows) in announced.into_iter().enumerate() {
            s.run_until(seal + site as u64 * setup.spread_ns / point.sites as u64);
            s.announce(site, windows);
        }
    }
    let last = u64::from(sensors.minutes) * window::SPAN_NS + sensors.period_ns;
    s.run_until_quiet(last + 600 * 1_000_000_000);

    let mut union = 0u64;
    let mut lacked = 0u64;
    for i in 0..records.len() {
        let n = heard.iter().filter(|h| h[i]).count() as u64;
        if n > 0 {
            union += 1;
            lacked += point.sites as u64 - n;
        }
    }
    let traffic = s.traffic();
    let bytes = |k: Kind| traffic.get(&k).map_or(0, |c| c.bytes);
    let stats = s.stats();
    let slot = s
        .nodes()
        .iter()
        .flat_map(|n| n.store().windows().values())
        .map(|w| u64::from(w.summary().slot_size))
        .max()
        .unwrap_or(0);
    let mut m = Measure {
        scheme: scheme.name(),
        union,
        lacked,
        repaired: stats.records_repaired,
        record_bytes: window::INDEX_ENTRY_LEN as u64 + slot,
        datagram_bytes: sim::SENSOR_DATAGRAM_LEN as u64,
        repair_bytes: s.repair_bytes(),
        repair_by_kind: Kind::ALL
            .iter()
            .filter(|k| k.is_repair())
            .map(|k| {
                (
                    k.name(),
                    bytes(*k),
                    traffic.get(k).map_or(0, |c| c.request_bytes),
                    traffic.get(k).map_or(0, |c| c.requests),
                )
            })
            .collect(),
        repair_requests: traffic
            .iter()
            .filter(|(k, _)| k.is_repair())
            .map(|(_, c)| c.requests)
            .sum(),
        request_failures: stats.request_failures,
        symbols_received: stats.symbols_received,
        symbols_requested: stats.symbols_requested,
        decode_failures: stats.decode_failures,
        verification_failures: stats.verification_failures,
        index_not_found: traffic.get(&Kind::Index).map_or(0, |c| c.not_found),
        index_not_found_bytes: traffic.get(&Kind::Index).map_or(0, |c| c.not_found_bytes),
        windows_repaired: stats.windows_repaired,
        windows_covered: stats.windows_covered,
        gossip_bytes: bytes(Kind::Gossip),
        summary_bytes: bytes(Kind::Summary),
        provenance_bytes: bytes(Kind::Provenance),
        windows: s.convergence().len(),
        ..Measure::default()
    };
    for c in s.convergence().values() {
        match c.same_ns {
            Some(t) => {
                m.round_trips.push(c.round_trips);
                m.times_ms.push(t.saturating_sub(c.first_ns) as f64 / 1e6);
            }
            None => m.unconverged += 1,
        }
        match c.same_table_ns {
            Some(t) => m.table_times_ms.push(t.saturating_sub(c.first_ns) as f64 / 1e6),
            None => m.tables_unconverged += 1,
        }
    }
    m.wall_ms = began.elapsed().as_secs_f64() * 1e3;
    m
}

/// The sweep: every combination, sensor loss varying fastest; `sites`, if not empty,
/// replaces its site counts.
pub fn sweep(quick: bool, burst: f64, only_sites: &[usize]) -> Vec<Point> {
    let (losses, sites, overlays): (&[f64], &[usize], &[f64]) = if quick {
        (&[0.01, 0.05, 0.2], &[3], &[0.0, 0.2])
    } else {
        (
            &[0.0, 0.01, 0.05, 0.1, 0.2, 0.3],
            &[2, 3, 5],
            &[0.0, 0.05, 0.2],
        )
    };
    let sites = if only_sites.is_empty() { sites } else { only_sites };
    let mut out = Vec::new();
    for per_window in [60, 600] {
        for &sites in sites {
            for &overlay_loss in overlays {
                for pattern in [Pattern::Random, Pattern::Burst(burst)] {
                    for &sensor_loss in losses {
                        if sensor_loss == 0.0 && pattern != Pattern::Random {
                            continue; // no loss is no loss
                        }
                        out.push(Point {
                            pattern,
                            sensor_loss,
                            sites,
                            overlay_loss,
                            per_window,
                        });
                    }
                }
            }
        }
    }
    out
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(
        opts.jobs > 0 && opts.latency_ms > 0 && opts.timeout_ms > 2 * opts.latency_ms,
        "--jobs must be positive and --timeout-ms above a round trip"
    );
    let setup = Setup {
        devices: opts.devices.unwrap_or(if opts.quick { 6 } else { 20 }),
        minutes: opts.minutes.unwrap_or(if opts.quick { 1 } else { 3 }),
        latency_ns: opts.latency_ms * 1_000_000,
        timeout_ns: opts.timeout_ms * 1_000_000,
        seed: opts.seed,
        spread_ns: 0,
        jitter_ns: 0,
        coordinators: None,
    };
    anyhow::ensure!(
        setup.devices > 0 && setup.minutes > 0,
        "--devices and --minutes must be positive"
    );
    anyhow::ensure!(opts.sites.iter().all(|n| *n >= 2), "every site count must be at least 2");
    let points = sweep(opts.quick, opts.burst, &opts.sites);
    let jobs: Vec<(usize, Scheme)> = (0..points.len())
        .flat_map(|p| Scheme::ALL.into_iter().map(move |s| (p, s)))
        .collect();
    let bar = indicatif::ProgressBar::new(jobs.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} simulations, eta {eta} {msg}",
        )?
        .progress_chars("=> "),
    );
    let began = Instant::now();
    let results: Mutex<Vec<Option<Measure>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(p, scheme)) = jobs.get(j) else {
                    break;
                };
                let m = simulate(&points[p], &setup, scheme);
                if let Ok(mut r) = results.lock() {
                    r[j] = Some(m);
                }
                bar.inc(1);
            });
        }
    });
    bar.finish_with_message(format!("in {:.0} s", began.elapsed().as_secs_f64()));
    let results = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a simulation panicked"))?;
    let rows: Vec<(Point, Vec<Measure>)> = points
        .iter()
        .enumerate()
        .map(|(p, point)| {
            (
                *point,
                (0..Scheme::ALL.len())
                    .filter_map(|s| results[p * Scheme::ALL.len() + s].clone())
                    .collect(),
            )
        })
        .collect();
    anyhow::ensure!(
        rows.iter().all(|(_, m)| m.len() == Scheme::ALL.len()),
        "a simulation did not finish"
    );

    println!(
        "In-process simulation (proto::mesh::sim), seed {}: {} IoTStream devices × {} min per point, 32-byte datagrams (56 bytes a record in a window); \
         overlay links {} ms one way, requests time out after {} ms; bursty sensor loss in bursts of {} datagrams on average. \
         Simulated in {:.0} s on {} threads.\n",
        setup.seed,
        setup.devices,
        setup.minutes,
        opts.latency_ms,
        opts.timeout_ms,
        opts.burst,
        began.elapsed().as_secs_f64(),
        opts.jobs
    );
    print!("{}", report::markdown(&rows));
    print!("{}", report::breakdown(&rows));
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("repair.csv"), report::csv(&rows))?;
        report::plot_overhead(&rows, &dir.join("repair_overhead_vs_loss.svg"))?;
        report::plot_time(&rows, &dir.join("repair_time_vs_loss.svg"))?;
        eprintln!(
            "wrote {}/repair.csv, repair_overhead_vs_loss.svg, repair_time_vs_loss.svg",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (Point, Setup) {
        let point = Point {
            pattern: Pattern::Burst(3.0),
            sensor_loss: 0.1,
            sites: 3,
            overlay_loss: 0.2,
            per_window: 60,
        };
        let setup = Setup {
            devices: 2,
            minutes: 1,
            latency_ns: 20_000_000,
            timeout_ns: 500_000_000,
            seed: 3,
            spread_ns: 0,
            jitter_ns: 0,
            coordinators: None,
        };
        (point, setup)
    }

    #[test]
    fn a_point_gives_the_same_numbers_twice() {
        let (point, setup) = tiny();
        for scheme in Scheme::ALL {
            let (a, b) = (
                simulate(&point, &setup, scheme),
                simulate(&point, &setup, scheme),
            );
            // Everything but the wall time (the last column).
            let row = |m: &Measure| {
                report::csv_row(&point, m)
                    .rsplit_once(',')
                    .map(|(r, _)| r.to_owned())
            };
            assert_eq!(row(&a), row(&b), "{scheme:?}");
            assert!(
                a.lacked > 0 && a.repaired == a.lacked,
                "{scheme:?}: {} lacked, {} repaired",
                a.lacked,
                a.repaired
            );
            assert_eq!(a.unconverged, 0, "{scheme:?}");
        }
    }

    #[test]
    fn no_record_is_repaired_twice_when_the_overlay_loses_messages() {
        // Lost announcements and requests make sessions that repair several roots of a
        // window at once; stored one by one, the first store started a session that
        // fetched the others' records again (2,082 lacked, 2,105 repaired here).
        let point = Point { pattern: Pattern::Random, sensor_loss: 0.2, sites: 3, overlay_loss: 0.2, per_window: 600 };
        let setup = Setup {
            devices: 6,
            minutes: 1,
            latency_ns: 20_000_000,
            timeout_ns: 500_000_000,
            seed: 1,
            spread_ns: 0,
            jitter_ns: 0,
            coordinators: None,
        };
        let m = simulate(&point, &setup, Scheme::Telemesh);
        assert_eq!((m.repaired, m.unconverged), (m.lacked, 0), "{m:?}");
    }

    #[test]
    fn whole_window_fetch_moves_whole_windows() {
        // The baseline fetches a whole blob per repair: at least a window per site that
        // lacked something, so its overhead is far above telemesh's at low loss.
        let (mut point, setup) = tiny();
        point.overlay_loss = 0.0;
        point.sensor_loss = 0.02;
        let fetch = simulate(&point, &setup, Scheme::Fetch);
        let telemesh = simulate(&point, &setup, Scheme::Telemesh);
        assert!(
            fetch.repair_bytes >= fetch.symbols_received * fetch.record_bytes,
            "{fetch:?}"
        );
        assert!(
            fetch.overhead() > 3.0 * telemesh.overhead(),
            "{} vs {}",
            fetch.overhead(),
            telemesh.overhead()
        );
    }
}
