//! `telemesh-bench churn`: a node under device-id churn, as an attacker on the network
//! would cause it (issue 15). One sender cycles through `--ids` IoTStream device ids at
//! `--rate` datagrams/s (so nearly every datagram is a stream the node has not heard for a
//! while, and windows of a record or two), while an honest device sends at `--honest-hz`
//! from another socket, started first. Measured per configuration: the honest device's
//! records kept, valid datagrams persisted per second, `/v1/status` latency while under
//! load (polled every 200 ms), the node's peak RSS, and its store's size on disk after it
//! stopped. With `--budget RATE:BURST` a second
//! run gives the node `--new-streams-per-source RATE:BURST` (`docs/operations.md`, "New
//! streams"); each `--with OPTIONS` adds a run with those node options.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use comfy_table::{presets, Table};
use telemesh_node::store::Store;
use telemesh_proto::record::StreamId;
use telemesh_proto::wire::iotstream::{MsgType, Repr};
use telemesh_proto::wire::Dialect;
use telemesh_tools::cluster::{self, NodeProcess, NodeSpec};

use crate::load::{self, Traffic};

#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Distinct device ids the attacker cycles through (at most 64,000: ids 1000..).
    #[arg(long, default_value_t = 64_000)]
    ids: u16,
    /// The attacker's datagrams a second.
    #[arg(long, default_value_t = 10_000.0)]
    rate: f64,
    /// Seconds the attacker sends.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
    /// The honest device's datagrams a second.
    #[arg(long, default_value_t = 10.0)]
    honest_hz: f64,
    /// Also run with `--new-streams-per-source RATE:BURST`.
    #[arg(long, value_name = "RATE:BURST")]
    budget: Option<String>,
    /// Also run with these node options (split at spaces; may be given more than once), e.g.
    /// `--with "--config small-cache.toml"`.
    #[arg(long = "with", value_name = "OPTIONS", allow_hyphen_values = true)]
    with: Vec<String>,
    /// Also print the node's resident memory every this many seconds while the attacker
    /// sends (0: only the peak), to see whether it levels off.
    #[arg(long, default_value_t = 0.0)]
    rss_every: f64,
}

/// The unit of the node's memory here (as this bench has always reported it).
const MIB: f64 = (1 << 20) as f64;

/// The honest device: below the attacker's ids (1000..).
const HONEST: u16 = 999;

struct Outcome {
    config: String,
    attacker_sent: u64,
    honest_sent: u64,
    honest_kept: u64,
    persisted_per_s: f64,
    status_ms: Vec<f64>,
    peak_rss_mb: f64,
    disk_mb: f64,
    /// The store's parts on disk: sled, sealed segments, write-ahead log (MB).
    parts_mb: [f64; 3],
    /// Sealed windows in the store at the end.
    sealed_windows: u64,
}

pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.ids > 0 && opts.ids <= 64_000, "--ids must be 1..=64000");
    anyhow::ensure!(opts.rate > 0.0 && opts.seconds > 0.0 && opts.honest_hz > 0.0, "--rate, --seconds, --honest-hz must be positive");
    anyhow::ensure!(opts.rss_every >= 0.0 && opts.rss_every.is_finite(), "--rss-every must be 0 or more seconds");
    let binary = cluster::node_binary()?;
    let mut configs: Vec<(String, Vec<String>)> = vec![("defaults".into(), Vec::new())];
    if let Some(b) = &opts.budget {
        configs.push((format!("--new-streams-per-source {b}"), vec!["--new-streams-per-source".into(), b.clone()]));
    }
    for w in &opts.with {
        configs.push((w.clone(), w.split_whitespace().map(String::from).collect()));
    }
    let mut outcomes = Vec::new();
    for (name, args) in configs {
        eprintln!("churn: {name}: {} ids at {:.0}/s for {:.0} s, an honest device at {} Hz", opts.ids, opts.rate, opts.seconds, opts.honest_hz);
        outcomes.push(trial(opts, &binary, name, args)?);
    }
    let mut table = Table::new();
    table.load_preset(presets::ASCII_MARKDOWN);
    table.set_header([
        "node",
        "attacker sent",
        "honest sent",
        "honest kept",
        "valid persisted/s",
        "/v1/status p50 / p99 / max (ms)",
        "peak RSS (MiB)",
        "store on disk (MB)",
        "sled / sealed / log (MB)",
        "sealed windows",
    ]);
    for o in &outcomes {
        let p = |q: f64| crate::repair::percentile(&o.status_ms, q);
        table.add_row([
            o.config.clone(),
            o.attacker_sent.to_string(),
            o.honest_sent.to_string(),
            format!("{} ({:.1} %)", o.honest_kept, 100.0 * o.honest_kept as f64 / o.honest_sent.max(1) as f64),
            format!("{:.0}", o.persisted_per_s),
            format!("{:.0} / {:.0} / {:.0}", p(0.5), p(0.99), p(1.0)),
            format!("{:.0}", o.peak_rss_mb),
            format!("{:.0}", o.disk_mb),
            format!("{:.0} / {:.0} / {:.0}", o.parts_mb[0], o.parts_mb[1], o.parts_mb[2]),
            o.sealed_windows.to_string(),
        ]);
    }
    println!("{table}");
    Ok(())
}

fn trial(opts: &Opts, binary: &std::path::Path, config: String, args: Vec<String>) -> anyhow::Result<Outcome> {
    let dir = tempfile::tempdir()?;
    let spec = NodeSpec { extra: args, ..NodeSpec::new("churn", dir.path()) };
    let mut node = NodeProcess::start(binary, &spec)?;
    node.wait_ready(Duration::from_secs(30))?;
    let to = node.iotstream;
    let stop = Arc::new(AtomicBool::new(false));
    // The honest device first, so that its stream exists before the churn starts.
    let honest = {
        let (stop, hz) = (Arc::clone(&stop), opts.honest_hz);
        std::thread::spawn(move || -> anyhow::Result<u64> {
            let sock = UdpSocket::bind("127.0.0.1:0")?;
            let base = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() as u32;
            let start = Instant::now();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let seq = (n % 65_536) as u16;
                let time = base.wrapping_add((n as f64 / hz) as u32);
                let d = Repr::new(MsgType::Data, HONEST, seq, time.wrapping_mul(1000), &[n as f32]).context("valid")?.to_bytes();
                sock.send_to(&d, to)?;
                n += 1;
                let due = start + Duration::from_secs_f64(n as f64 / hz);
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
            Ok(n)
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    // `/v1/status` latency while the churn runs.
    let poller = {
        let (stop, url) = (Arc::clone(&stop), format!("{}/v1/status", node.url()));
        std::thread::spawn(move || {
            let mut out = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if cluster::get(&url).is_ok() {
                    out.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            out
        })
    };
    let began = Instant::now();
    let done = AtomicBool::new(false);
    let (sent, series) = std::thread::scope(|scope| {
        let sample = || crate::ingest::rss_series(&node, opts.rss_every, MIB, &done);
        let sampler = (opts.rss_every > 0.0).then(|| scope.spawn(sample));
        let sent = load::blast(to, &mut Traffic::new(opts.ids), Some(opts.rate), Duration::from_secs_f64(opts.seconds));
        done.store(true, Ordering::Relaxed);
        (sent, sampler.map(|s| s.join().unwrap_or_default()))
    });
    let sent = sent?;
    if let Some(series) = series {
        eprintln!("    RSS (s: MiB) {series}");
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let honest_sent = honest.join().map_err(|_| anyhow::anyhow!("the honest sender panicked"))??;
    let status_ms = poller.join().map_err(|_| anyhow::anyhow!("the poller panicked"))?;
    crate::ingest::drained(&node, Duration::from_millis(500), u64::MAX, Duration::from_secs(120))?;
    let elapsed = began.elapsed().as_secs_f64();
    let peak_rss_mb = node.peak_rss().context("the node's peak RSS (/proc)")? as f64 / MIB;
    let status = node.stop(Duration::from_secs(120))?;
    anyhow::ensure!(status.success(), "the node exited with {status}");
    let disk_mb = crate::disk::dir_size(dir.path())? as f64 / 1e6;
    let mut parts_mb = [0.0; 3];
    for (part, name) in parts_mb.iter_mut().zip(["sled", "sealed", "wal"]) {
        let path = dir.path().join(name);
        if path.exists() {
            *part = crate::disk::dir_size(&path)? as f64 / 1e6;
        }
    }
    let store = telemesh_node::open_store(&telemesh_node::Config { data_dir: dir.path().to_owned(), ..telemesh_node::Config::default() })?;
    let count = |id: StreamId| -> anyhow::Result<u64> {
        Ok(telemesh_node::store::history::records(&store, &[], id, 0, u64::MAX, usize::MAX)?.len() as u64)
    };
    let honest_kept = count(StreamId::new(Dialect::Iotstream, u32::from(HONEST)))?;
    let (sealed_windows, _) = store.sealed_totals();
    let mut persisted = 0;
    for (id, _) in store.states()? {
        persisted += count(id)?;
    }
    Ok(Outcome {
        config,
        attacker_sent: sent.datagrams,
        honest_sent,
        honest_kept,
        persisted_per_s: persisted as f64 / elapsed,
        status_ms,
        peak_rss_mb,
        disk_mb,
        parts_mb,
        sealed_windows,
    })
}
