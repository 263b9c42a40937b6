//! `telemesh-bench mesh`: three nodes on loopback hear the same sensors, in real time,
//! each through its own independent loss; the mesh repairs them. Measures the wire bytes
//! spent on repair per byte of record repaired, gossip and summary-exchange bytes per
//! record, and the time from a window's end until every node holds the same root.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_node::{Config, Node};
use telemesh_proto::wire::Dialect;
use telemesh_proto::window;
use telemesh_tools::sensor;

#[derive(Debug, clap::Args)]
pub struct Opts {
    /// Independent loss between the sensors and each site, as fractions (one run each).
    #[arg(long, value_delimiter = ',', default_value = "0.05,0.2")]
    loss: Vec<f64>,
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
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

fn get(url: &str) -> anyhow::Result<serde_json::Value> {
    let body = telemesh_node::client::body(ureq::get(url).call()?)?;
    Ok(serde_json::from_str(&body)?)
}

/// Sum of every sample of `name` (with its labels as written) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// (dialect, device, window start) → (root, slot size), as one node reports it.
type Roots = BTreeMap<(String, u64, u64), (String, u64)>;

/// When each poll was taken, and every node's roots then.
type History = Arc<Mutex<Vec<(u64, Vec<Roots>)>>>;

/// A node's windows starting at or after `from_ns`, from `GET /v1/windows`.
fn roots(url: &str, from_ns: u64) -> anyhow::Result<Roots> {
    let v = get(&format!("{url}/v1/windows?from={}&limit=100000", from_ns as f64 / 1e9))?;
    let mut out = Roots::new();
    for w in v["windows"].as_array().context("windows")? {
        let key = (
            w["dialect"].as_str().context("dialect")?.to_owned(),
            w["device"].as_u64().context("device")?,
            w["start_ns"].as_u64().context("start_ns")?,
        );
        out.insert(key, (w["root"].as_str().context("root")?.to_owned(), w["slot_size"].as_u64().context("slot_size")?));
    }
    Ok(out)
}

struct Point {
    loss: f64,
    sent: usize,
    union: usize,
    repaired: f64,
    /// Σ over nodes of the records heard by some site but not by that node.
    lacked: usize,
    repair_bytes: f64,
    /// The median slot size of the windows.
    slot_size: f64,
    datagram_bytes: f64,
    gossip: f64,
    sync: f64,
    provenance: f64,
    latency_ms: Vec<f64>,
    windows: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn one(opts: &Opts, loss: f64) -> anyhow::Result<Point> {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir()).collect::<Result<_, _>>()?;
    let config = |dir: &std::path::Path, bootstrap: Option<String>| -> anyhow::Result<Config> {
        Ok(Config {
            data_dir: dir.to_owned(),
            iotstream: Some("127.0.0.1:0".parse()?),
            tinytelemetry: None,
            http: "127.0.0.1:0".parse()?,
            listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?],
            bootstrap: bootstrap.map(|b| b.parse()).transpose()?.into_iter().collect(),
            ..Config::default()
        })
    };
    let a = Node::start(config(dirs[0].path(), None)?)?;
    let boot = loop {
        if let Some(addr) = get(&format!("{}/v1/status", a.url()))?["listen"][0].as_str() {
            break addr.to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let b = Node::start(config(dirs[1].path(), Some(boot.clone()))?)?;
    let c = Node::start(config(dirs[2].path(), Some(boot))?)?;
    let nodes = [a, b, c];
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.iter().any(|n| get(&format!("{}/v1/status", n.url())).map_or(true, |s| s["peers"].as_u64() != Some(2))) {
        anyhow::ensure!(Instant::now() < deadline, "the three nodes did not connect");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The sensors' schedule, in real time from 1 s from now.
    let start_ms = now_ns() / 1_000_000 + 1000;
    let truth_path = dirs[0].path().join("truth.ndjson");
    let sensors = sensor::Config {
        dialect: Dialect::Iotstream,
        devices: (1..=opts.devices).collect(),
        interval: Duration::from_secs_f64(1.0 / opts.hz),
        jitter: 0.0,
        count: Some((opts.seconds as f64 * opts.hz) as u64),
        seed: Some(opts.seed),
        start_time_ms: Some(start_ms),
        dry_run: true,
        truth: Some(truth_path.clone()),
        ..sensor::Config::default()
    };
    sensor::run(&sensors, &AtomicBool::new(false))?;
    let mut truth = sensor::read_truth(&truth_path)?;
    truth.sort_by_key(|t| t.sent_at_ns);

    // Poll every node's roots while it runs: when did all three first hold each final root?
    let history: History = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let poller = {
        let (history, stop) = (Arc::clone(&history), Arc::clone(&stop));
        let from = start_ms * 1_000_000 - window::SPAN_NS;
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let t = now_ns();
                let views: Vec<Roots> = urls.iter().filter_map(|u| roots(u, from).ok()).collect();
                if views.len() == 3 {
                    if let Ok(mut h) = history.lock() {
                        h.push((t, views));
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // Send: each datagram to each site through that site's own loss.
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let targets: Vec<std::net::SocketAddr> = nodes.iter().map(|n| n.iotstream.context("iotstream on")).collect::<Result<_, _>>()?;
    let mut rngs: Vec<ChaCha8Rng> = (0..3).map(|i| ChaCha8Rng::seed_from_u64(opts.seed * 1000 + i)).collect();
    let mut heard = std::collections::BTreeSet::new();
    let mut received = [0usize; 3];
    let mut datagram_bytes = 0usize;
    for (i, t) in truth.iter().enumerate() {
        let wait = t.sent_at_ns.saturating_sub(now_ns());
        if wait > 0 {
            std::thread::sleep(Duration::from_nanos(wait));
        }
        let mut any = false;
        for ((to, rng), got) in targets.iter().zip(&mut rngs).zip(&mut received) {
            if !rng.gen_bool(loss) {
                socket.send_to(&t.datagram, to)?;
                any = true;
                *got += 1;
            }
        }
        if any {
            heard.insert(i);
            datagram_bytes += t.datagram.len();
        }
        if i % 5000 == 0 {
            eprint!("\rloss {loss}: {}/{} datagrams", i, truth.len());
        }
    }
    eprintln!("\rloss {loss}: {} datagrams sent; waiting for the mesh to settle", truth.len());
    let end_ns = truth.last().map_or(0, |t| t.sent_at_ns);

    // Settle: quiet streams seal after 5 s; wait until every node holds the same roots.
    let deadline = Instant::now() + Duration::from_secs(120);
    let from_ns = start_ms * 1_000_000 - window::SPAN_NS;
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let views: Vec<Roots> = nodes.iter().map(|n| roots(&n.url(), from_ns)).collect::<Result<_, _>>()?;
        let counted: usize = views[0].len();
        if now_ns() > end_ns + 8_000_000_000 && views.iter().all(|v| *v == views[0]) && counted > 0 {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the mesh did not settle in 120 s");
    }
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let _ = poller.join();

    let finals = roots(&nodes[0].url(), from_ns)?;
    let history = history.lock().map_err(|_| anyhow::anyhow!("poller panicked"))?;
    let mut latency_ms = Vec::new();
    for (key, (root, _)) in &finals {
        let end = key.2 + window::SPAN_NS;
        if end > end_ns {
            continue; // the last windows end with the run, not while it runs
        }
        // The first poll from which on all three hold the final root.
        let mut since = None;
        for (t, views) in history.iter() {
            let all = views.iter().all(|v| v.get(key).is_some_and(|(r, _)| r == root));
            match (all, since) {
                (true, None) => since = Some(*t),
                (false, Some(_)) => since = None,
                _ => {}
            }
        }
        if let Some(t) = since {
            latency_ms.push(t.saturating_sub(end) as f64 / 1e6);
        }
    }
    latency_ms.sort_by(f64::total_cmp);
    if std::env::var_os("TELEMESH_BENCH_VERBOSE").is_some() {
        eprintln!("latencies (ms): {latency_ms:?}");
    }

    let mut texts = Vec::new();
    for n in &nodes {
        texts.push(telemesh_node::client::body(ureq::get(&format!("{}/metrics", n.url())).call()?)?);
    }
    let sum = |name: &str| texts.iter().map(|t| metric(t, name)).sum::<f64>();
    let repaired = sum("telemesh_mesh_records_repaired_total");
    let mut slots: Vec<u64> = finals.values().map(|(_, s)| *s).collect();
    slots.sort_unstable();
    let slot = slots.get(slots.len() / 2).copied().unwrap_or(0) as f64;
    let point = Point {
        loss,
        sent: truth.len(),
        union: heard.len(),
        repaired,
        lacked: received.iter().map(|r| heard.len() - r).sum(),
        repair_bytes: sum("telemesh_mesh_bytes_total{kind=\"repair\",direction=\"out\"}"),
        slot_size: slot,
        datagram_bytes: datagram_bytes as f64 / heard.len().max(1) as f64,
        gossip: sum("telemesh_mesh_bytes_total{kind=\"gossip\",direction=\"out\"}"),
        sync: sum("telemesh_mesh_bytes_total{kind=\"sync\",direction=\"out\"}"),
        provenance: sum("telemesh_mesh_bytes_total{kind=\"provenance\",direction=\"out\"}"),
        latency_ms,
        windows: finals.len(),
    };
    for n in nodes {
        n.stop()?;
    }
    Ok(point)
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.loss.iter().all(|l| (0.0..1.0).contains(l)), "--loss values must be in [0, 1)");
    anyhow::ensure!(opts.devices > 0 && opts.hz > 0.0 && opts.seconds > 0, "--devices, --hz and --seconds must be positive");
    let mut points = Vec::new();
    for &loss in &opts.loss {
        points.push(one(opts, loss)?);
    }
    println!(
        "3 nodes on loopback (QUIC), {} IoTStream devices at {} Hz for {} s, independent loss per site\n",
        opts.devices, opts.hz, opts.seconds
    );
    println!("| loss | sent | heard by ≥1 site | records lacked (Σ nodes) | records repaired | repair bytes | per byte lacked | per byte repaired | per datagram byte lacked | gossip B/record | summary-exchange B/record | provenance B/record | windows | window end → same root p50 / p99 / max |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &points {
        let per_record = |b: f64| b / p.union.max(1) as f64;
        // A record's bytes: its index entry and its slot in the canonical blob.
        let record_bytes = window::INDEX_ENTRY_LEN as f64 + p.slot_size;
        println!(
            "| {:.0}% | {} | {} | {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} | {} | {:.0} / {:.0} / {:.0} ms |",
            p.loss * 100.0,
            p.sent,
            p.union,
            p.lacked,
            p.repaired,
            p.repair_bytes,
            p.repair_bytes / (p.lacked as f64 * record_bytes).max(1.0),
            p.repair_bytes / (p.repaired * record_bytes).max(1.0),
            p.repair_bytes / (p.lacked as f64 * p.datagram_bytes).max(1.0),
            per_record(p.gossip),
            per_record(p.sync),
            per_record(p.provenance),
            p.windows,
            percentile(&p.latency_ms, 0.5),
            percentile(&p.latency_ms, 0.99),
            p.latency_ms.last().copied().unwrap_or(f64::NAN),
        );
    }
    Ok(())
}
