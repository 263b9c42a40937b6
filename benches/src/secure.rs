//! `telemesh-bench secure`: the secure telemetry collection README's load table. 1, 5 and 10
//! DTLS clients send its
//! frames (`CPU=…;MEM=…;TEMP=…`, one frame per DTLS record) at 1,000, 5,000 and 20,000
//! frames/s in total to a real `telemesh node` process, and beside each the same load in
//! the plain binary dialect (IoTStream DATA with the same three values, one UDP socket per
//! client): the baseline, in the same run.
//!
//! Each trial starts a fresh node (the release binary next to this one, own temp dir),
//! issues the clients' certificates from its built-in CA (`cert::write_device`, what
//! `telemesh certs device` does), completes every handshake (timed: first ClientHello to
//! the node's Finished), then one thread sends round-robin over the clients, paced to the
//! rate, for `--seconds`. It waits for the node to drain its socket, reads the node's CPU
//! time from `/proc`, stops it (SIGTERM: it flushes) and opens its store. Then:
//!
//! * **loss**: frames sent and not in the store;
//! * **throughput**: frame bytes stored per second of sending (the DTLS record adds 29
//!   bytes of header, explicit nonce and AES-GCM tag on the wire, not counted);
//! * **latency**: from the client's clock just before it encrypts and sends the frame to
//!   the node's arrival stamp on the stored record (`arrival_ns`, taken when the listener
//!   hands the decoded frame to the store), both on this machine's clock;
//! * **node CPU per frame**: user + system time of the node process from before the first
//!   frame until drained, over frames received (the idle node's background work included,
//!   which matters at 1,000/s);
//! * **handshake**: the median over the trial's clients.
//!
//! Each cell runs `--runs` times; the table shows medians and how many runs were lossless.

use std::collections::HashMap;
use std::io;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use comfy_table::{presets, Table};
use hdrhistogram::Histogram;
use telemesh_node::ingest::dtls::cert;
use telemesh_node::store::Store;
use telemesh_proto::wire::{iotstream, secure};
use telemesh_tools::cluster::{self, NodeProcess, NodeSpec};
use telemesh_tools::dtls;

/// The first client id (and device id); client i is `FIRST + i`.
const FIRST: u16 = 1001;

/// Options of the secure-load benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Client counts.
    #[arg(long, value_delimiter = ',', default_value = "1,5,10")]
    pub clients: Vec<u16>,
    /// Total frames/s across the clients.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000,20000")]
    pub rates: Vec<f64>,
    /// Seconds each trial sends for.
    #[arg(long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Runs per cell (the table shows medians).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Only the secure dialect, without the IoTStream baseline.
    #[arg(long)]
    pub no_baseline: bool,
    /// Where `secure.csv` goes.
    #[arg(long, default_value = "bench-results")]
    pub out: PathBuf,
}

/// What the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    /// The secure telemetry collection README's frames over DTLS 1.2.
    Secure,
    /// IoTStream DATA datagrams, the same three values: the baseline.
    Plain,
}

impl Dialect {
    fn name(self) -> &'static str {
        match self {
            Dialect::Secure => "secure (DTLS)",
            Dialect::Plain => "IoTStream (plain)",
        }
    }
}

/// One client's way to the node.
enum Client {
    Dtls(Box<dtls::Session>),
    Udp(UdpSocket),
}

impl Client {
    fn send(&mut self, frame: &[u8]) -> io::Result<()> {
        match self {
            Client::Dtls(s) => s.send(frame),
            Client::Udp(u) => u.send(frame).map(|_| ()),
        }
    }
}

/// Result of one trial.
#[derive(Debug, Clone)]
struct Trial {
    sent: u64,
    send_errors: u64,
    received: u64,
    persisted: u64,
    /// Frame bytes stored.
    bytes: u64,
    elapsed: Duration,
    cpu_us: f64,
    /// Median handshake, ms (secure only).
    handshake_ms: Option<f64>,
    /// Client send → stored, µs.
    latency: Histogram<u64>,
}

impl Trial {
    fn lossless(&self) -> bool {
        self.persisted == self.sent
    }
    fn loss(&self) -> f64 {
        1.0 - self.persisted as f64 / self.sent.max(1) as f64
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
    fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

/// CPU, MEM and TEMP for frame `n` of a client: the secure README's example, moving a little.
fn values(n: u64) -> [f64; 3] {
    let wobble = (n % 200) as f64 / 10.0 - 10.0;
    [72.3 + wobble, 41.2 + wobble / 4.0, 67.5 + wobble / 2.0].map(|v| (v * 10.0).round() / 10.0)
}

/// The frame, and its identity in the store: (device, wire seq, wire timestamp).
fn frame(dialect: Dialect, client: u16, seq: u64, at_ns: u64) -> (Vec<u8>, (u32, u64, u64)) {
    let [cpu, mem, temp] = values(seq);
    match dialect {
        Dialect::Secure => {
            let payload = format!("CPU={cpu:.1};MEM={mem:.1};TEMP={temp:.1}");
            let bytes = secure::Repr::new(u32::from(client), seq, at_ns, &payload)
                .expect("a short valid payload")
                .to_bytes();
            (bytes, (u32::from(client), seq, at_ns))
        }
        Dialect::Plain => {
            let (wire_seq, ts) = ((seq & 0xffff) as u16, ((at_ns / 1_000_000) & 0xffff_ffff) as u32);
            let readings = [cpu as f32, mem as f32, temp as f32];
            let bytes = iotstream::Repr::new(iotstream::MsgType::Data, client, wire_seq, ts, &readings)
                .expect("three readings make a valid DATA batch")
                .to_bytes();
            (bytes, (u32::from(client), u64::from(wire_seq), u64::from(ts)))
        }
    }
}

/// Connects `clients` clients of `dialect` to `node`; the handshake times (secure).
fn connect(
    node: &NodeProcess,
    data: &Path,
    dialect: Dialect,
    clients: u16,
) -> anyhow::Result<(Vec<Client>, Vec<Duration>)> {
    match dialect {
        Dialect::Plain => {
            let mut out = Vec::new();
            for _ in 0..clients {
                let s = UdpSocket::bind("127.0.0.1:0")?;
                s.connect(node.iotstream)?;
                out.push(Client::Udp(s));
            }
            Ok((out, Vec::new()))
        }
        Dialect::Secure => {
            let mut sessions = Vec::new();
            for i in 0..clients {
                let id = FIRST + i;
                let dir = data.join("certs").join(id.to_string());
                cert::write_device(data, u32::from(id), 2, &dir)?;
                let credentials = dtls::Credentials {
                    ca: dir.join("ca.pem"),
                    cert: dir.join("device.pem"),
                    key: dir.join("device.key"),
                };
                let context = dtls::Context::new(&credentials, Some(u32::from(id)))?;
                sessions.push(dtls::Session::start(&context, node.secure)?);
            }
            let pending = dtls::handshake_all(&mut sessions, Duration::from_secs(30))?;
            anyhow::ensure!(pending == 0, "{pending} handshake(s) did not finish within 30 s");
            let times = sessions.iter().filter_map(dtls::Session::handshake_time).collect();
            Ok((sessions.into_iter().map(|s| Client::Dtls(Box::new(s))).collect(), times))
        }
    }
}

fn trial(opts: &Opts, binary: &Path, dialect: Dialect, clients: u16, rate: f64) -> anyhow::Result<Trial> {
    let dir = tempfile::tempdir()?;
    let mut node = NodeProcess::start(binary, &NodeSpec::new("secure-bench", dir.path()))?;
    node.wait_ready(Duration::from_secs(30))?;
    let (mut out, handshakes) = connect(&node, dir.path(), dialect, clients)?;
    let cpu = |node: &NodeProcess| node.cpu_time().context("the node's CPU time (/proc)");
    let cpu_before = cpu(&node)?;

    let total = (rate * opts.seconds).round() as u64;
    // Per frame: when it was sent, and its length.
    let mut sent_at: HashMap<(u32, u64, u64), (u64, u64)> = HashMap::with_capacity(total as usize);
    let mut seqs = vec![0u64; out.len()];
    let (mut sent, mut send_errors) = (0u64, 0u64);
    let start = Instant::now();
    let start_ns = now_ns();
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * rate) as u64).min(total);
        if sent >= due {
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        while sent < due {
            let c = (sent % out.len() as u64) as usize;
            seqs[c] += 1;
            let at = start_ns + start.elapsed().as_nanos() as u64;
            let (bytes, key) = frame(dialect, FIRST + c as u16, seqs[c], at);
            if out[c].send(&bytes).is_err() {
                send_errors += 1;
            }
            sent_at.insert(key, (at, bytes.len() as u64));
            sent += 1;
        }
    }
    let elapsed = start.elapsed();

    // Wait for the node to drain its socket.
    let received = crate::ingest::drained(&node, Duration::from_millis(500), sent, Duration::from_secs(60))?;
    let cpu_used = cpu(&node)?.saturating_sub(cpu_before);
    drop(out); // close_notify
    let status = node.stop(Duration::from_secs(60))?;
    anyhow::ensure!(status.success(), "the node exited with {status}");

    let config = telemesh_node::Config { data_dir: dir.path().to_owned(), ..telemesh_node::Config::default() };
    let store = telemesh_node::open_store(&config)?;
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut persisted, mut bytes) = (0u64, 0u64);
    for (id, _) in store.states()? {
        for r in telemesh_node::store::history::records(&store, &[], id, 0, u64::MAX, usize::MAX)? {
            let key = (r.record.stream.device, r.record.seq, r.record.timestamp_raw);
            let Some((at, len)) = sent_at.remove(&key) else { continue };
            persisted += 1;
            bytes += len;
            latency.saturating_record(r.arrival_ns.saturating_sub(at).div_ceil(1000).max(1));
        }
    }
    let mut hs: Vec<f64> = handshakes.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    hs.sort_by(f64::total_cmp);
    Ok(Trial {
        sent,
        send_errors,
        received,
        persisted,
        bytes,
        elapsed,
        cpu_us: cpu_used.as_secs_f64() * 1e6 / received.max(1) as f64,
        handshake_ms: hs.get(hs.len() / 2).copied(),
        latency,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// One cell's medians.
#[derive(Debug, Clone)]
struct Cell {
    dialect: Dialect,
    clients: u16,
    rate: f64,
    offered: f64,
    loss: f64,
    lossless: usize,
    mb_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    handshake_ms: Option<f64>,
    send_errors: u64,
}

/// Runs the benchmark: a table on stdout, `secure.csv` in `--out`.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.runs > 0 && opts.seconds > 0.0, "--runs and --seconds must be positive");
    anyhow::ensure!(opts.clients.iter().all(|&c| c > 0 && c <= 1000), "--clients must be 1..=1000");
    anyhow::ensure!(opts.rates.iter().all(|&r| r.is_finite() && r > 0.0), "--rates must be positive");
    let binary = cluster::node_binary()?;
    let dialects: &[Dialect] = if opts.no_baseline { &[Dialect::Secure] } else { &[Dialect::Secure, Dialect::Plain] };
    eprintln!(
        "secure: node {}, {} s per trial, {} runs per cell, clients {:?}, rates {:?}/s",
        binary.display(),
        opts.seconds,
        opts.runs,
        opts.clients,
        opts.rates
    );
    let mut cells = Vec::new();
    for &clients in &opts.clients {
        for &rate in &opts.rates {
            for &dialect in dialects {
                let mut trials = Vec::new();
                for _ in 0..opts.runs {
                    let t = trial(opts, &binary, dialect, clients, rate)?;
                    eprintln!(
                        "  {:<17} {clients:>2} clients {rate:>6}/s: sent {} ({:.0}/s), received {}, stored {}, \
                         latency p50 {:.2} ms p99 {:.2} ms, {:.1} µs CPU/frame, handshake {} -> {}",
                        dialect.name(),
                        t.sent,
                        t.rate(),
                        t.received,
                        t.persisted,
                        t.latency.value_at_quantile(0.5) as f64 / 1e3,
                        t.latency.value_at_quantile(0.99) as f64 / 1e3,
                        t.cpu_us,
                        t.handshake_ms.map_or("-".to_owned(), |h| format!("{h:.1} ms")),
                        if t.lossless() { "lossless" } else { "LOSS" }
                    );
                    trials.push(t);
                }
                let m = |f: &dyn Fn(&Trial) -> f64| median(trials.iter().map(f).collect());
                cells.push(Cell {
                    dialect,
                    clients,
                    rate,
                    offered: m(&|t| t.rate()),
                    loss: m(&|t| t.loss()),
                    lossless: trials.iter().filter(|t| t.lossless()).count(),
                    mb_per_s: m(&|t| t.mb_per_s()),
                    p50_ms: m(&|t| t.latency.value_at_quantile(0.5) as f64 / 1e3),
                    p99_ms: m(&|t| t.latency.value_at_quantile(0.99) as f64 / 1e3),
                    cpu_us: m(&|t| t.cpu_us),
                    handshake_ms: (dialect == Dialect::Secure).then(|| m(&|t| t.handshake_ms.unwrap_or(f64::NAN))),
                    send_errors: trials.iter().map(|t| t.send_errors).sum(),
                });
            }
        }
    }

    let mut table = Table::new();
    table.load_preset(presets::ASCII_MARKDOWN);
    table.set_header(vec![
        "clients",
        "frames/s (total)",
        "dialect",
        "loss (median)",
        "lossless runs",
        "throughput MB/s",
        "latency p50 ms",
        "latency p99 ms",
        "node CPU µs/frame",
        "handshake ms (median)",
    ]);
    for c in &cells {
        table.add_row(vec![
            c.clients.to_string(),
            format!("{:.0}", c.rate),
            c.dialect.name().to_owned(),
            format!("{:.3}%", c.loss * 100.0),
            format!("{}/{}", c.lossless, opts.runs),
            format!("{:.3}", c.mb_per_s),
            format!("{:.2}", c.p50_ms),
            format!("{:.2}", c.p99_ms),
            format!("{:.1}", c.cpu_us),
            c.handshake_ms.map_or("—".to_owned(), |h| format!("{h:.1}")),
        ]);
    }
    println!("{table}");

    std::fs::create_dir_all(&opts.out).with_context(|| format!("cannot create {}", opts.out.display()))?;
    let path = opts.out.join("secure.csv");
    let mut w = csv::Writer::from_path(&path)?;
    w.write_record([
        "clients",
        "rate_per_s",
        "dialect",
        "offered_per_s",
        "loss_fraction",
        "lossless_runs",
        "runs",
        "mb_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "cpu_us_per_frame",
        "handshake_ms",
        "send_errors",
    ])?;
    for c in &cells {
        w.write_record([
            c.clients.to_string(),
            format!("{:.0}", c.rate),
            match c.dialect {
                Dialect::Secure => "secure",
                Dialect::Plain => "iotstream",
            }
            .to_owned(),
            format!("{:.0}", c.offered),
            format!("{:.6}", c.loss),
            c.lossless.to_string(),
            opts.runs.to_string(),
            format!("{:.4}", c.mb_per_s),
            format!("{:.3}", c.p50_ms),
            format!("{:.3}", c.p99_ms),
            format!("{:.2}", c.cpu_us),
            c.handshake_ms.map_or(String::new(), |h| format!("{h:.2}")),
            c.send_errors.to_string(),
        ])?;
    }
    w.flush()?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_decode_to_the_identity_the_store_is_searched_by() {
        let at = 1_765_477_200_123_456_789;
        let (bytes, key) = frame(Dialect::Secure, 1003, 7, at);
        let r = secure::Repr::decode(&bytes).expect("valid");
        assert_eq!((r.client, r.seq, r.timestamp), key);
        let [cpu, mem, temp] = values(7);
        assert_eq!(r.payload(), format!("CPU={cpu:.1};MEM={mem:.1};TEMP={temp:.1}"));
        assert_eq!(r.pairs().map(|(_, v)| v).collect::<Vec<_>>(), [cpu, mem, temp], "the values parse back exactly");
        let (bytes, key) = frame(Dialect::Plain, 1003, 65_537, at);
        let p = iotstream::Repr::decode(&bytes).expect("valid");
        assert_eq!((u32::from(p.device), u64::from(p.seq), u64::from(p.timestamp)), key);
        assert_eq!(key.1, 1, "the 16-bit seq wraps");
    }
}
