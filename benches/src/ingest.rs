//! `telemesh-bench ingest`: sustained datagrams/s a node accepts *and persists* with zero
//! loss, against a bare `recv` loop on the same socket settings measured in the same run.
//!
//! 1. Ceiling: a thread that only `recv`s and counts, fed by the generator at full speed.
//! 2. A ladder of offered rates (fractions of the ceiling), each run `--runs` times: a run
//!    is lossless when every datagram sent is received *and* found in the store after the
//!    node is stopped and reopened. The machine is shared and noisy, so each rung reports
//!    the median and how many runs were lossless; the headline is the highest rung at
//!    which every run was.
//!
//! Each run starts a fresh node (own temp dir) in this process.

use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use telemesh_node::store::Store;
use telemesh_node::{Config, Node};

use crate::load::{self, Traffic};

/// Options of the ingest benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Seconds each trial sends for.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Distinct devices the traffic cycles through.
    #[arg(long, default_value_t = 1000)]
    pub devices: u16,
    /// Runs per offered rate.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Offered rates, as fractions of the measured ceiling.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")]
    pub ladder: Vec<f64>,
    /// Kernel receive buffer for the node's and the ceiling's sockets, bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub recv_buffer: usize,
}

/// Result of one trial.
#[derive(Debug, Clone, Copy)]
struct Trial {
    sent: u64,
    received: u64,
    persisted: u64,
    rate: f64,
}

impl Trial {
    fn lossless(&self) -> bool {
        self.received == self.sent && self.persisted == self.sent
    }
}

fn ceiling(opts: &Opts) -> anyhow::Result<(f64, f64)> {
    let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    sock.set_recv_buffer_size(opts.recv_buffer)?;
    sock.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>()?.into())?;
    let sock: UdpSocket = sock.into();
    sock.set_read_timeout(Some(Duration::from_millis(300)))?;
    let addr = sock.local_addr()?;
    let count = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let (c, d) = (Arc::clone(&count), Arc::clone(&done));
    let receiver = std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        let mut first: Option<Instant> = None;
        let mut last = Instant::now();
        loop {
            match sock.recv_from(&mut buf) {
                Ok(_) => {
                    first.get_or_insert_with(Instant::now);
                    last = Instant::now();
                    c.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) if d.load(Ordering::Relaxed) => break,
                Err(_) => {}
            }
        }
        first.map(|f| last.duration_since(f)).unwrap_or_default()
    });
    let sent = load::blast(addr, &mut Traffic::new(opts.devices), None, Duration::from_secs_f64(opts.seconds))?;
    done.store(true, Ordering::Relaxed);
    let busy = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let got = count.load(Ordering::Relaxed);
    Ok((got as f64 / busy.as_secs_f64().max(1e-9), sent.datagrams as f64 / sent.elapsed.as_secs_f64()))
}

fn trial(opts: &Opts, rate: Option<f64>) -> anyhow::Result<Trial> {
    let dir = tempfile::tempdir()?;
    let config = Config {
        data_dir: dir.path().to_owned(),
        iotstream: Some("127.0.0.1:0".parse()?),
        tinytelemetry: None,
        http: "127.0.0.1:0".parse()?,
        recv_buffer: opts.recv_buffer,
        max_streams: usize::from(opts.devices) * 2 + 16,
        // A node alone: its overlay on a loopback port of its own.
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        ..Config::default()
    };
    let node = Node::start(config.clone())?;
    let to = node.iotstream.context("iotstream listener")?;
    let sent = load::blast(to, &mut Traffic::new(opts.devices), rate, Duration::from_secs_f64(opts.seconds))?;
    // Wait for the node to drain its socket.
    let mut received = 0;
    let mut stable_since = Instant::now();
    while stable_since.elapsed() < Duration::from_millis(300) {
        std::thread::sleep(Duration::from_millis(50));
        let now = received_so_far(&node)?;
        if now != received {
            received = now;
            stable_since = Instant::now();
        }
    }
    node.stop()?;
    let store = telemesh_node::open_store(&config)?;
    let mut persisted = 0;
    for (id, _) in store.states()? {
        persisted += telemesh_node::history::records(&store, &[], id, 0, u64::MAX, usize::MAX)?.len() as u64;
    }
    Ok(Trial { sent: sent.datagrams, received, persisted, rate: sent.datagrams as f64 / sent.elapsed.as_secs_f64() })
}

fn received_so_far(node: &Node) -> anyhow::Result<u64> {
    let body = ureq_get(&format!("{}/v1/status", node.url()))?;
    let v: serde_json::Value = serde_json::from_str(&body)?;
    v["totals"]["received"].as_u64().context("status has totals.received")
}

fn ureq_get(url: &str) -> anyhow::Result<String> {
    Ok(ureq::get(url).call()?.into_string()?)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Runs the benchmark and prints a markdown table.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    eprintln!(
        "ingest: {} s runs, {} devices, IoTStream DATA batch 5 (32-byte datagrams), {} runs per rate",
        opts.seconds, opts.devices, opts.runs
    );
    let ceilings: Vec<(f64, f64)> = (0..opts.runs).map(|_| ceiling(opts)).collect::<anyhow::Result<_>>()?;
    let ceiling_rate = median(ceilings.iter().map(|c| c.0).collect());
    let sender_rate = median(ceilings.iter().map(|c| c.1).collect());
    eprintln!("  bare recv loop: median {ceiling_rate:.0}/s (generator offered {sender_rate:.0}/s)");
    println!("| offered (× ceiling) | offered datagrams/s (median) | received and persisted (median) | lossless runs |");
    println!("|---:|---:|---:|---:|");
    println!("| bare `recv` loop = ceiling | {ceiling_rate:.0} | {ceiling_rate:.0} | — |");
    let mut best = 0.0f64;
    for &f in &opts.ladder {
        let mut trials = Vec::new();
        for _ in 0..opts.runs {
            let t = trial(opts, Some(f * ceiling_rate))?;
            eprintln!(
                "  {f:.2} × ceiling: offered {:.0}/s, sent {}, received {}, persisted {} -> {}",
                t.rate,
                t.sent,
                t.received,
                t.persisted,
                if t.lossless() { "zero loss" } else { "LOSS" }
            );
            trials.push(t);
        }
        let offered = median(trials.iter().map(|t| t.rate).collect());
        let kept = median(trials.iter().map(|t| t.persisted.min(t.received) as f64 / t.sent as f64).collect());
        let lossless = trials.iter().filter(|t| t.lossless()).count();
        println!("| {f:.2} | {offered:.0} | {:.2}% | {lossless}/{} |", kept * 100.0, opts.runs);
        if lossless == opts.runs {
            best = best.max(offered);
        }
    }
    println!();
    println!(
        "Highest rate with every run lossless: **{best:.0} datagrams/s persisted** = {:.2} × the bare-recv ceiling.",
        best / ceiling_rate
    );
    Ok(())
}
