//! `telemesh-bench ingest`: sustained datagrams/s a node accepts *and persists* with zero
//! loss, against a bare `recv` loop on the same socket settings measured in the same run,
//! at several device counts; with the node's CPU time per datagram and peak RSS.
//!
//! 1. Ceiling: a thread that only `recv`s and counts, fed by the generator at full speed.
//! 2. For each device count, a ladder of offered rates (fractions of the ceiling), each
//!    run `--runs` times: a run starts a fresh `telemesh node` process (the release
//!    binary next to this one, own temp dir), sends for `--seconds`, waits for the node
//!    to drain its socket, reads its CPU time and peak RSS from `/proc`, stops it with
//!    SIGTERM (it flushes) and opens its store: the run is lossless when every datagram
//!    sent was received *and* is found in the store. The machine is shared and noisy, so
//!    each rung reports the median and how many runs were lossless; the headline is the
//!    highest rung at which every run was.

use std::fmt::Write as _;
use std::net::UdpSocket;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use telemesh_node::store::Store;
use telemesh_tools::cluster::{self, NodeProcess, NodeSpec};

use crate::load::{self, Traffic};
use telemesh_tools::plot;

/// Options of the ingest benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Seconds each trial sends for.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Device counts to measure; the traffic cycles through the devices round-robin.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000")]
    pub devices: Vec<u16>,
    /// Runs per offered rate.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Offered rates, as fractions of the measured ceiling.
    #[arg(long, value_delimiter = ',', default_value = "0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0")]
    pub ladder: Vec<f64>,
    /// Offered rates in datagrams/s instead of `--ladder` (to compare builds at equal
    /// rates, as the ceiling moves with what else the machine runs); the ceiling is still
    /// measured and reported.
    #[arg(long, value_delimiter = ',', conflicts_with = "ladder")]
    pub rates: Vec<f64>,
    /// Seconds to wait after the node drained before reading its peak RSS and stopping
    /// it: past 5 s every stream is quiet and the windows they were writing are sealed
    /// together, as when thousands of devices cross a minute at once.
    #[arg(long, default_value_t = 0.0)]
    pub linger: f64,
    /// Also print the node's resident memory every this many seconds while it is sent to
    /// and until it drained (0: only the peak), to see whether it levels off.
    #[arg(long, default_value_t = 0.0)]
    pub rss_every: f64,
    /// Kernel receive buffer of the ceiling's socket, bytes (the node asks for the same,
    /// its default `recv_buffer`).
    #[arg(long, default_value_t = 8 << 20)]
    pub recv_buffer: usize,
    /// Where `ingest.csv` and `ingest.svg` go.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// Result of one trial.
#[derive(Debug, Clone, Copy)]
struct Trial {
    sent: u64,
    received: u64,
    persisted: u64,
    rate: f64,
    /// Node CPU time (user + system) from the first datagram until drained, per datagram received.
    cpu_us: f64,
    /// Peak resident memory of the node process, bytes.
    peak_rss: u64,
}

impl Trial {
    fn lossless(&self) -> bool {
        self.received == self.sent && self.persisted == self.sent
    }
}

fn ceiling(opts: &Opts, devices: u16) -> anyhow::Result<(f64, f64)> {
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
    let sent = load::blast(addr, &mut Traffic::new(devices), None, Duration::from_secs_f64(opts.seconds))?;
    done.store(true, Ordering::Relaxed);
    let busy = receiver.join().map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let got = count.load(Ordering::Relaxed);
    Ok((got as f64 / busy.as_secs_f64().max(1e-9), sent.datagrams as f64 / sent.elapsed.as_secs_f64()))
}

/// Datagrams `node` has received, once the count has not moved for `quiet`, or has
/// reached `sent`, or `deadline` has passed.
pub fn drained(node: &NodeProcess, quiet: Duration, sent: u64, deadline: Duration) -> anyhow::Result<u64> {
    let mut received = 0;
    let mut stable_since = Instant::now();
    let give_up = Instant::now() + deadline;
    while stable_since.elapsed() < quiet && received < sent && Instant::now() < give_up {
        std::thread::sleep(Duration::from_millis(50));
        let now = node.json("/v1/status")?["totals"]["received"].as_u64().context("status has totals.received")?;
        if now != received {
            received = now;
            stable_since = Instant::now();
        }
    }
    Ok(received)
}

fn trial(opts: &Opts, binary: &std::path::Path, devices: u16, rate: Option<f64>) -> anyhow::Result<Trial> {
    let dir = tempfile::tempdir()?;
    let mut node = NodeProcess::start(binary, &NodeSpec::new("ingest", dir.path()))?;
    node.wait_ready(Duration::from_secs(30))?;
    let cpu = |node: &NodeProcess| node.cpu_time().context("the node's CPU time (/proc)");
    let cpu_before = cpu(&node)?;
    let done = AtomicBool::new(false);
    let (sent, received, series) = std::thread::scope(|scope| {
        let sampler = (opts.rss_every > 0.0).then(|| scope.spawn(|| rss_series(&node, opts.rss_every, 1e6, &done)));
        let sent = load::blast(node.iotstream, &mut Traffic::new(devices), rate, Duration::from_secs_f64(opts.seconds));
        // Wait for the node to drain its socket.
        let received = sent.as_ref().ok().map(|_| drained(&node, Duration::from_millis(300), u64::MAX, Duration::from_secs(600)));
        done.store(true, Ordering::Relaxed);
        let series = sampler.map(|s| s.join().unwrap_or_default());
        (sent, received, series)
    });
    let sent = sent?;
    let received = received.context("not sent")??;
    if let Some(series) = series {
        eprintln!("    RSS (s: MB) {series}");
    }
    let cpu_used = cpu(&node)?.saturating_sub(cpu_before);
    std::thread::sleep(Duration::from_secs_f64(opts.linger));
    let peak_rss = node.peak_rss().context("the node's peak RSS (/proc)")?;
    if received < sent.datagrams {
        eprintln!("    where the lost went: {}", losses(&node.metrics()?));
    }
    let status = node.stop(Duration::from_secs(60))?;
    anyhow::ensure!(status.success(), "the node exited with {status}");
    let config = telemesh_node::Config { data_dir: dir.path().to_owned(), ..telemesh_node::Config::default() };
    let store = telemesh_node::open_store(&config)?;
    let mut persisted = 0;
    for (id, _) in store.states()? {
        persisted += telemesh_node::store::history::records(&store, &[], id, 0, u64::MAX, usize::MAX)?.len() as u64;
    }
    if std::env::var_os("TELEMESH_BENCH_KEEP").is_some() {
        eprintln!("  kept {}", dir.keep().display());
    }
    Ok(Trial {
        sent: sent.datagrams,
        received,
        persisted,
        rate: sent.datagrams as f64 / sent.elapsed.as_secs_f64(),
        cpu_us: cpu_used.as_secs_f64() * 1e6 / received.max(1) as f64,
        peak_rss,
    })
}

/// The node's resident memory every `every` seconds until `done`: `"0.0: 25 0.5: 31 …"`.
/// The node's resident memory every `every` seconds until `done`, in units of `unit`
/// bytes, as `seconds: size` pairs.
pub(crate) fn rss_series(node: &NodeProcess, every: f64, unit: f64, done: &AtomicBool) -> String {
    let start = Instant::now();
    let mut out = Vec::new();
    while !done.load(Ordering::Relaxed) {
        if let Some(rss) = node.rss() {
            out.push(format!("{:.1}: {:.0}", start.elapsed().as_secs_f64(), rss as f64 / unit));
        }
        std::thread::sleep(Duration::from_secs_f64(every));
    }
    out.join(" ")
}

/// The node's drops by reason, and its socket's (`telemesh_drops_total`,
/// `telemesh_udp_socket_drops`), those that are not 0.
fn losses(metrics: &str) -> String {
    let mut by_reason = std::collections::BTreeMap::<String, f64>::new();
    for line in metrics.lines().filter(|l| l.starts_with("telemesh_drops_total{") || l.starts_with("telemesh_udp_socket_drops")) {
        let Some((name, value)) = line.rsplit_once(' ') else { continue };
        let reason = name.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("socket");
        *by_reason.entry(reason.to_owned()).or_default() += value.parse::<f64>().unwrap_or(0.0);
    }
    let nonzero: Vec<String> = by_reason.into_iter().filter(|(_, n)| *n > 0.0).map(|(r, n)| format!("{r} {n:.0}")).collect();
    if nonzero.is_empty() { "no drop counted".to_owned() } else { nonzero.join(", ") }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// One rung's medians.
struct Rung {
    devices: u16,
    fraction: f64,
    offered: f64,
    kept: f64,
    lossless: usize,
    cpu_us: f64,
    peak_rss_mb: f64,
}

/// Runs the benchmark, prints markdown tables, writes `ingest.csv` and `ingest.svg`.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.runs > 0 && opts.seconds > 0.0, "--runs and --seconds must be positive");
    anyhow::ensure!(opts.linger >= 0.0 && opts.linger.is_finite(), "--linger must be 0 or more seconds");
    anyhow::ensure!(opts.rss_every >= 0.0 && opts.rss_every.is_finite(), "--rss-every must be 0 or more seconds");
    anyhow::ensure!(opts.devices.iter().all(|&d| d > 0), "--devices must be positive");
    anyhow::ensure!(opts.rates.iter().chain(&opts.ladder).all(|&r| r > 0.0), "--rates and --ladder must be positive");
    let binary = cluster::node_binary()?;
    eprintln!(
        "ingest: node {}, {} s runs, {:?} devices, IoTStream DATA batch 5 (32-byte datagrams), {} runs per rate",
        binary.display(),
        opts.seconds,
        opts.devices,
        opts.runs
    );
    let mut rungs = Vec::new();
    let mut summary = String::new();
    let mut ceilings = Vec::new();
    for &devices in &opts.devices {
        let measured: Vec<(f64, f64)> = (0..opts.runs).map(|_| ceiling(opts, devices)).collect::<anyhow::Result<_>>()?;
        let ceiling_rate = median(measured.iter().map(|c| c.0).collect());
        let sender_rate = median(measured.iter().map(|c| c.1).collect());
        eprintln!("  {devices} devices: bare recv loop median {ceiling_rate:.0}/s (generator offered {sender_rate:.0}/s)");
        ceilings.push((devices, ceiling_rate));
        let mut best: Option<&Rung> = None;
        let first = rungs.len();
        let offered: Vec<f64> = if opts.rates.is_empty() {
            opts.ladder.iter().map(|f| f * ceiling_rate).collect()
        } else {
            opts.rates.clone()
        };
        for rate in offered {
            let f = rate / ceiling_rate.max(1.0);
            let mut trials = Vec::new();
            for _ in 0..opts.runs {
                let t = trial(opts, &binary, devices, Some(rate))?;
                eprintln!(
                    "  {devices} devices, {f:.2} × ceiling: offered {:.0}/s, sent {}, received {}, persisted {}, \
                     {:.2} µs CPU/datagram, peak RSS {:.1} MB -> {}",
                    t.rate,
                    t.sent,
                    t.received,
                    t.persisted,
                    t.cpu_us,
                    t.peak_rss as f64 / 1e6,
                    if t.lossless() { "zero loss" } else { "LOSS" }
                );
                trials.push(t);
            }
            rungs.push(Rung {
                devices,
                fraction: f,
                offered: median(trials.iter().map(|t| t.rate).collect()),
                kept: median(trials.iter().map(|t| t.persisted.min(t.received) as f64 / t.sent as f64).collect()),
                lossless: trials.iter().filter(|t| t.lossless()).count(),
                cpu_us: median(trials.iter().map(|t| t.cpu_us).collect()),
                peak_rss_mb: median(trials.iter().map(|t| t.peak_rss as f64 / 1e6).collect()),
            });
        }
        for r in &rungs[first..] {
            if r.lossless == opts.runs && best.is_none_or(|b| r.offered > b.offered) {
                best = Some(r);
            }
        }
        let _ = match best {
            Some(b) => writeln!(
                summary,
                "| {devices} | {ceiling_rate:.0} | **{:.0}** | **{:.2}** | {:.2} | {:.1} |",
                b.offered,
                b.offered / ceiling_rate,
                b.cpu_us,
                b.peak_rss_mb
            ),
            None => writeln!(summary, "| {devices} | {ceiling_rate:.0} | no rung lossless | — | — | — |"),
        };
    }

    println!("| devices | offered (× ceiling) | offered datagrams/s (median) | received and persisted (median) | lossless runs | node CPU µs/datagram | node peak RSS (MB) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rungs {
        println!(
            "| {} | {:.2} | {:.0} | {:.2}% | {}/{} | {:.2} | {:.1} |",
            r.devices,
            r.fraction,
            r.offered,
            r.kept * 100.0,
            r.lossless,
            opts.runs,
            r.cpu_us,
            r.peak_rss_mb
        );
    }
    println!();
    println!("| devices | bare-recv ceiling (datagrams/s) | highest rate with every run lossless | × ceiling | node CPU µs/datagram there | node peak RSS there (MB) |");
    println!("|---:|---:|---:|---:|---:|---:|");
    print!("{summary}");

    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let mut csv = String::from("devices,ceiling_per_s,offered_fraction,offered_per_s,kept_fraction,lossless_runs,runs,cpu_us_per_datagram,peak_rss_mb\n");
    for r in &rungs {
        let ceiling = ceilings.iter().find(|c| c.0 == r.devices).map_or(0.0, |c| c.1);
        let _ = writeln!(
            csv,
            "{},{ceiling:.0},{:.2},{:.0},{:.5},{},{},{:.3},{:.2}",
            r.devices, r.fraction, r.offered, r.kept, r.lossless, opts.runs, r.cpu_us, r.peak_rss_mb
        );
    }
    let csv_path = opts.out.join("ingest.csv");
    std::fs::write(&csv_path, csv).with_context(|| format!("cannot write {}", csv_path.display()))?;
    let series: Vec<plot::Series> = opts
        .devices
        .iter()
        .map(|&d| plot::Series {
            name: format!("{d} devices"),
            points: rungs.iter().filter(|r| r.devices == d).map(|r| (r.offered, r.kept * 100.0)).collect(),
        })
        .collect();
    let svg_path = opts.out.join("ingest.svg");
    plot::lines(&svg_path, "Datagrams persisted vs offered rate", "offered datagrams/s", "received and persisted (%)", &series)?;
    eprintln!("wrote {} and {}", csv_path.display(), svg_path.display());
    Ok(())
}
