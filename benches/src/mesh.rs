//! `telemesh-bench mesh`: repair across real nodes. Each point is one local testnet
//! (`telemesh_tools::testnet`, as `testnet/run.sh` runs it): `telemesh node` processes on
//! loopback, sensors in real time whose every datagram reaches each site through that
//! site's own lossy relay, and optionally lossy relays between the nodes. Measures the
//! repair bytes on the wire per byte of record a node lacked, gossip, summary-exchange
//! and provenance bytes per record, and the time from a window's end until every node
//! lists the same root; and checks, as the testnet does, that every node ends with the
//! same complete merged history.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context;
use telemesh_proto::window;
use telemesh_tools::cluster::metric;
use telemesh_tools::{plot, testnet};

use crate::repair::percentile;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Sites (nodes) per point.
    #[arg(long, value_delimiter = ',', default_value = "3")]
    sites: Vec<usize>,
    /// Loss between the sensors and each site, as fractions, independent per site.
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.2")]
    loss: Vec<f64>,
    /// Loss on node ↔ node links (through relays), as fractions; 0 = direct.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    link_loss: Vec<f64>,
    /// Sensor loss in Gilbert–Elliott bursts (mean 4 packets) at the same average.
    #[arg(long)]
    burst: bool,
    /// Put a loss-free relay in front of each node's QUIC port (as --link-loss does) to
    /// count what each node receives on the wire per record: every protocol and copy,
    /// gossipsub's and QUIC's framing included.
    #[arg(long)]
    wire: bool,
    /// IoTStream devices.
    #[arg(long, default_value_t = 100)]
    devices: u16,
    /// Reports per second per device.
    #[arg(long, default_value_t = 2.0)]
    hz: f64,
    /// How long the sensors send, in seconds (windows are 60 s of device time).
    #[arg(long, default_value_t = 150)]
    seconds: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where `mesh.csv` and the plots go.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
}

struct Point {
    sites: usize,
    loss: f64,
    link_loss: f64,
    sent: usize,
    heard: usize,
    /// Σ over nodes of the records some site heard but that node did not.
    lacked: usize,
    repaired: f64,
    repair_bytes: f64,
    record_bytes: f64,
    gossip: f64,
    sync: f64,
    provenance: f64,
    /// UDP payload bytes between the nodes (through the relays), if counted.
    wire: Option<f64>,
    latency_ms: Vec<f64>,
    ok: bool,
}

impl Point {
    fn per_lacked(&self) -> f64 {
        self.repair_bytes / (self.lacked as f64 * self.record_bytes).max(1.0)
    }
}

fn one(opts: &Opts, sites: usize, loss: f64, link_loss: f64) -> anyhow::Result<Point> {
    let net = testnet::Options {
        nodes: sites,
        dialect: telemesh_proto::wire::Dialect::Iotstream,
        devices: opts.devices,
        duration: Duration::from_secs(opts.seconds),
        interval: Duration::from_secs_f64(1.0 / opts.hz),
        loss,
        burst: opts.burst,
        delay_ms: 0.0,
        jitter_ms: 0.0,
        link_loss: (link_loss > 0.0 || opts.wire).then_some(link_loss),
        partition: false,
        intruder: false,
        seed: opts.seed,
        data: None,
        settle_timeout: Duration::from_secs(120),
        progress: false,
    };
    eprintln!("mesh: {}", net.describe());
    let outcome = testnet::run(&net, &AtomicBool::new(false), false)?;
    let v = &outcome.verdict;
    let sum = |name: &str| outcome.nodes.iter().map(|n| metric(&n.metrics, name)).sum::<f64>();
    let bytes = |kind: &str| sum(&format!("telemesh_mesh_bytes_total{{kind=\"{kind}\",direction=\"out\"}}"));
    let point = Point {
        sites,
        loss,
        link_loss,
        sent: v.sent,
        heard: v.heard,
        lacked: v.nodes.iter().map(|n| v.heard.saturating_sub(n.received)).sum(),
        repaired: sum("telemesh_mesh_records_repaired_total"),
        repair_bytes: bytes("repair"),
        // A record's bytes: its index entry and its slot in the canonical blob.
        record_bytes: window::INDEX_ENTRY_LEN as f64 + outcome.median_slot_size as f64,
        // Announcements, and offers to coordinators (`docs/protocol.md`, "Coordinators").
        gossip: bytes("gossip") + bytes("offer"),
        sync: bytes("sync"),
        provenance: bytes("provenance"),
        wire: outcome.node_link_bytes.map(|b| b as f64),
        latency_ms: outcome.window_latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect(),
        ok: outcome.ok(),
    };
    if !point.ok {
        eprint!("{}", testnet::render(&net, &outcome));
    }
    Ok(point)
}

/// One point's row: (table header, CSV header, value), the value the same in both.
fn columns(p: &Point) -> Vec<(&'static str, &'static str, String)> {
    let per_record = |b: f64| format!("{:.1}", b / p.heard.max(1) as f64);
    let per_repaired = p.repair_bytes / (p.repaired * p.record_bytes).max(1.0);
    vec![
        ("sites", "sites", p.sites.to_string()),
        ("sensor loss (%)", "sensor_loss_pct", format!("{:.0}", p.loss * 100.0)),
        ("node-link loss (%)", "link_loss_pct", format!("{:.0}", p.link_loss * 100.0)),
        ("sent", "sent", p.sent.to_string()),
        ("heard by ≥1 site", "heard", p.heard.to_string()),
        ("records lacked (Σ nodes)", "lacked", p.lacked.to_string()),
        ("records repaired", "repaired", format!("{:.0}", p.repaired)),
        ("repair bytes", "repair_bytes", format!("{:.0}", p.repair_bytes)),
        ("per byte lacked", "per_byte_lacked", format!("{:.3}", p.per_lacked())),
        ("per byte repaired", "per_byte_repaired", format!("{per_repaired:.3}")),
        ("gossip and offers B/record", "gossip_per_record", per_record(p.gossip)),
        ("summary-exchange B/record", "sync_per_record", per_record(p.sync)),
        ("provenance B/record", "provenance_per_record", per_record(p.provenance)),
        // What one node receives on the wire per record: every byte sent is received once.
        ("wire B/record/node", "wire_per_record_node", p.wire.map_or("-".to_owned(), |b| per_record(b / p.sites as f64))),
        ("windows", "windows", p.latency_ms.len().to_string()),
        ("window end → same root p50 (ms)", "latency_p50_ms", format!("{:.0}", percentile(&p.latency_ms, 0.5))),
        ("p99 (ms)", "latency_p99_ms", format!("{:.0}", percentile(&p.latency_ms, 0.99))),
        ("max (ms)", "latency_max_ms", format!("{:.0}", p.latency_ms.last().copied().unwrap_or(f64::NAN))),
        ("converged, complete", "ok", if p.ok { "yes" } else { "no" }.to_owned()),
    ]
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.loss.iter().chain(&opts.link_loss).all(|l| (0.0..1.0).contains(l)), "losses must be in [0, 1)");
    anyhow::ensure!(opts.devices > 0 && opts.hz > 0.0 && opts.seconds > 0, "--devices, --hz and --seconds must be positive");
    let mut points = Vec::new();
    for &sites in &opts.sites {
        for &link_loss in &opts.link_loss {
            for &loss in &opts.loss {
                points.push(one(opts, sites, loss, link_loss)?);
            }
        }
    }
    println!(
        "Real nodes on loopback (QUIC), {} IoTStream devices at {} Hz for {} s, independent {} loss per site\n",
        opts.devices,
        opts.hz,
        opts.seconds,
        if opts.burst { "bursty" } else { "random" }
    );
    let mut csv = String::new();
    for (i, p) in points.iter().enumerate() {
        let cells = columns(p);
        if i == 0 {
            let headers: Vec<&str> = cells.iter().map(|c| c.0).collect();
            println!("| {} |", headers.join(" | "));
            println!("|{}", "---:|".repeat(cells.len()));
            let _ = writeln!(csv, "{}", cells.iter().map(|c| c.1).collect::<Vec<_>>().join(","));
        }
        let values: Vec<&str> = cells.iter().map(|c| c.2.as_str()).collect();
        println!("| {} |", values.join(" | "));
        let _ = writeln!(csv, "{}", values.join(","));
    }
    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    std::fs::write(opts.out.join("mesh.csv"), csv)?;
    let series = |y: &dyn Fn(&Point) -> f64| -> Vec<plot::Series> {
        let mut out = Vec::new();
        for &sites in &opts.sites {
            for &link_loss in &opts.link_loss {
                out.push(plot::Series {
                    name: format!("{sites} sites, node links {:.0}% loss", link_loss * 100.0),
                    points: points
                        .iter()
                        .filter(|p| p.sites == sites && p.link_loss == link_loss)
                        .map(|p| (p.loss * 100.0, y(p)))
                        .collect(),
                });
            }
        }
        out
    };
    plot::lines(
        &opts.out.join("mesh_overhead_vs_loss.svg"),
        "Real nodes: repair bytes per byte lacked",
        "sensor → site loss (%)",
        "repair bytes / bytes lacked",
        &series(&|p| p.per_lacked()),
    )?;
    plot::lines(
        &opts.out.join("mesh_time_vs_loss.svg"),
        "Real nodes: window end → same root on every node (median)",
        "sensor → site loss (%)",
        "ms",
        &series(&|p| percentile(&p.latency_ms, 0.5)),
    )?;
    eprintln!("wrote mesh.csv, mesh_overhead_vs_loss.svg and mesh_time_vs_loss.svg in {}", opts.out.display());
    anyhow::ensure!(points.iter().all(|p| p.ok), "a point did not converge on a complete merged history (above)");
    Ok(())
}
