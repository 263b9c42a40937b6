//! `telemesh-bench scale`: what the overlay costs each node per record as the number of
//! sites grows — gossip, provenance and summary exchange, every copy sent — in the pure
//! simulation (`proto::mesh::sim`), with seals at once and seals spread over a second on
//! slower, jittery links. Repair is measured too, as the check that it still scales.
//! The goal it measures (issue 14): per node at most O(log N), no more than 2 × the 5-site
//! value at 50 sites (`docs/benchmarks.md`, "Overlay cost per site").

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use comfy_table::{presets, Table};
use telemesh_proto::mesh::sim::Scheme;
use telemesh_tools::plot;

use crate::repair::{simulate, Measure, Pattern, Point, Setup};

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Site counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "2,5,10,20,50")]
    sites: Vec<usize>,
    /// Devices (1 Hz, 60 records per window).
    #[arg(long, default_value_t = 20)]
    devices: u32,
    /// Minutes (windows per device).
    #[arg(long, default_value_t = 3)]
    minutes: u32,
    /// Loss between the sensors and each site.
    #[arg(long, default_value_t = 0.05)]
    loss: f64,
    /// Seed of the readings and every loss pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulations run at once.
    #[arg(long, default_value_t = 2)]
    jobs: usize,
    /// Directory for scale.csv and scale.svg (total bytes per record per node against sites).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Coordinators per window, as a node of a closed mesh runs them (0: every node
    /// announces to every node, as in an open mesh).
    #[arg(long, default_value_t = 3)]
    coordinators: usize,
}

/// How the sites seal and how the overlay behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mode {
    pub name: &'static str,
    pub spread_ns: u64,
    pub latency_ns: u64,
    pub jitter_ns: u64,
}

pub const MODES: [Mode; 2] = [
    Mode { name: "at once, 20 ms links", spread_ns: 0, latency_ns: 20_000_000, jitter_ns: 0 },
    Mode { name: "spread over 1 s, 100 ± 100 ms links", spread_ns: 1_000_000_000, latency_ns: 100_000_000, jitter_ns: 100_000_000 },
];

/// One point's per-node costs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    pub sites: usize,
    pub mode: &'static str,
    pub records: u64,
    /// Bytes sent on the overlay per record heard, divided by the number of nodes (each
    /// copy is received by one node): what one node receives per record, on average.
    pub gossip_per_record_node: f64,
    pub provenance_per_record_node: f64,
    pub summary_per_record_node: f64,
    pub total_per_record_node: f64,
    /// Repair bytes per byte lacked.
    pub repair_overhead: f64,
    pub same_root_p50_s: f64,
    pub same_root_p99_s: f64,
    pub same_table_p50_s: f64,
    pub same_table_p99_s: f64,
    pub unconverged: usize,
    pub tables_unconverged: usize,
}

impl Row {
    fn of(sites: usize, mode: Mode, m: &Measure) -> Row {
        let per = |bytes: u64| bytes as f64 / m.union.max(1) as f64 / sites as f64;
        Row {
            sites,
            mode: mode.name,
            records: m.union,
            gossip_per_record_node: per(m.gossip_bytes),
            provenance_per_record_node: per(m.provenance_bytes),
            summary_per_record_node: per(m.summary_bytes),
            total_per_record_node: per(m.gossip_bytes + m.provenance_bytes + m.summary_bytes),
            repair_overhead: m.overhead(),
            same_root_p50_s: m.time_ms(0.5) / 1e3,
            same_root_p99_s: m.time_ms(0.99) / 1e3,
            same_table_p50_s: m.table_time_ms(0.5) / 1e3,
            same_table_p99_s: m.table_time_ms(0.99) / 1e3,
            unconverged: m.unconverged,
            tables_unconverged: m.tables_unconverged,
        }
    }
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.jobs > 0 && opts.devices > 0 && opts.minutes > 0, "--jobs, --devices, --minutes must be positive");
    anyhow::ensure!(opts.sites.iter().all(|n| *n >= 2), "every site count must be at least 2");
    let jobs: Vec<(usize, Mode)> = opts.sites.iter().flat_map(|n| MODES.iter().map(move |m| (*n, *m))).collect();
    let bar = indicatif::ProgressBar::new(jobs.len() as u64);
    let began = Instant::now();
    let results: Mutex<Vec<Option<Row>>> = Mutex::new(vec![None; jobs.len()]);
    let next = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for _ in 0..opts.jobs {
            scope.spawn(|| loop {
                let j = next.fetch_add(1, Ordering::Relaxed);
                let Some(&(sites, mode)) = jobs.get(j) else { break };
                let point = Point { pattern: Pattern::Random, sensor_loss: opts.loss, sites, overlay_loss: 0.0, per_window: 60 };
                let setup = Setup {
                    devices: opts.devices,
                    minutes: opts.minutes,
                    latency_ns: mode.latency_ns,
                    timeout_ns: 4 * (mode.latency_ns + mode.jitter_ns) + 100_000_000,
                    seed: opts.seed,
                    spread_ns: mode.spread_ns,
                    jitter_ns: mode.jitter_ns,
                    coordinators: (opts.coordinators > 0).then_some(opts.coordinators),
                };
                let row = Row::of(sites, mode, &simulate(&point, &setup, Scheme::Telemesh));
                if let Ok(mut r) = results.lock() {
                    r[j] = Some(row);
                }
                bar.inc(1);
            });
        }
    });
    bar.finish_and_clear();
    let rows: Vec<Row> = results
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a simulation panicked"))?
        .into_iter()
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| anyhow::anyhow!("a simulation did not finish"))?;

    println!(
        "In-process simulation (proto::mesh::sim), seed {}: {} IoTStream devices at 1 Hz × {} min, {:.0} % random loss \
         per site, no overlay loss. Bytes per record per node: every copy sent on the overlay ÷ records heard ÷ nodes. \
         {:.0} s on {} threads.\n",
        opts.seed,
        opts.devices,
        opts.minutes,
        opts.loss * 100.0,
        began.elapsed().as_secs_f64(),
        opts.jobs
    );
    println!("{}\n", table(&rows));
    for mode in MODES {
        let of = |n: usize| rows.iter().find(|r| r.sites == n && r.mode == mode.name).map(|r| r.total_per_record_node);
        let most = rows.iter().filter(|r| r.mode == mode.name).map(|r| r.sites).max();
        if let (Some(five), Some(n), Some(at_n)) = (of(5), most, most.and_then(of)) {
            let ratio = at_n / five.max(f64::MIN_POSITIVE);
            println!(
                "goal ({}): {n} sites cost {at_n:.1} B/record/node, {ratio:.2} × the 5-site {five:.1} (goal ≤ 2 ×): {}",
                mode.name,
                if ratio <= 2.0 { "met" } else { "missed" }
            );
        }
    }
    if let Some(dir) = &opts.out {
        std::fs::create_dir_all(dir)?;
        let mut w = csv::Writer::from_path(dir.join("scale.csv"))?;
        for r in &rows {
            w.serialize(r)?;
        }
        w.flush()?;
        let series: Vec<plot::Series> = MODES
            .iter()
            .map(|mode| plot::Series {
                name: mode.name.to_owned(),
                points: rows.iter().filter(|r| r.mode == mode.name).map(|r| (r.sites as f64, r.total_per_record_node)).collect(),
            })
            .collect();
        let title = match opts.coordinators {
            0 => "Overlay bytes per record per node, everyone to everyone".to_owned(),
            r => format!("Overlay bytes per record per node, {r} coordinators per window"),
        };
        plot::lines(&dir.join("scale.svg"), &title, "sites", "B per record per node", &series)?;
        eprintln!("wrote {0}/scale.csv and {0}/scale.svg", dir.display());
    }
    Ok(())
}

fn table(rows: &[Row]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::ASCII_MARKDOWN).set_header([
        "sites",
        "seals and links",
        "gossip B/rec/node",
        "provenance",
        "summary",
        "total",
        "repair ÷ lacked",
        "same root p50 / p99 (s)",
        "same provenance p50 / p99 (s)",
        "unconverged (roots / tables)",
    ]);
    for r in rows {
        t.add_row([
            r.sites.to_string(),
            r.mode.to_owned(),
            format!("{:.1}", r.gossip_per_record_node),
            format!("{:.1}", r.provenance_per_record_node),
            format!("{:.1}", r.summary_per_record_node),
            format!("{:.1}", r.total_per_record_node),
            format!("{:.2}", r.repair_overhead),
            format!("{:.2} / {:.2}", r.same_root_p50_s, r.same_root_p99_s),
            format!("{:.2} / {:.2}", r.same_table_p50_s, r.same_table_p99_s),
            format!("{} / {}", r.unconverged, r.tables_unconverged),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_per_node_cost_is_the_overlay_bytes_over_records_and_nodes() {
        let m = Measure { union: 100, gossip_bytes: 4_000, provenance_bytes: 2_000, summary_bytes: 1_000, ..Measure::default() };
        let r = Row::of(4, MODES[0], &m);
        assert_eq!(r.gossip_per_record_node, 10.0);
        assert_eq!(r.provenance_per_record_node, 5.0);
        assert_eq!(r.summary_per_record_node, 2.5);
        assert_eq!(r.total_per_record_node, 17.5);
    }
}
