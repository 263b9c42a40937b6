//! One run of a scenario against real processes: three `telemesh node`s (sites a, b, c)
//! joined into one mesh on loopback, a relay in front of each node's IoTStream port with
//! the scenario's impairment, and the sensor simulator sending every datagram to all three
//! relays. Then it waits for the mesh to converge and reads what the nodes hold.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use telemesh_proto::wire::Dialect;

use super::capture::{Capture, Capturer};
use super::measure::{Received, RepairMetrics, SiteMetrics, Truth};
use super::report::Run;
use super::scenario::{derive_seed, Role, Scenario};
use crate::cluster::{self, Mesh, MeshSpec, Windows};
use crate::relay::{self, Relay};
use crate::sensor;

/// The first simulated device id (the Mini-RFC's example device); the others follow.
pub const FIRST_DEVICE: u16 = 1001;
/// Sites per run.
pub const SITES: usize = 3;
/// A stream's window seals this long after its last datagram (docs/protocol.md).
const QUIET: Duration = Duration::from_secs(5);
/// The most records one page of the records API returns.
const PAGE: usize = 100_000;
/// The repair-protocol bytes a node sent.
const REPAIR_OUT: &str = "telemesh_mesh_bytes_total{kind=\"repair\",direction=\"out\"}";

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long the sensor sends in each run.
    pub duration: Duration,
    /// Simulated devices (ids from [`FIRST_DEVICE`]).
    pub devices: u16,
    /// Base seed; every sensor and relay seed is derived from it.
    pub seed: u64,
    /// Where results go; the nodes' data go to `<out>/work/<run>` (removed after a
    /// successful run).
    pub out: PathBuf,
    /// Capture each run with this program.
    pub pcap: Option<Capturer>,
    /// How long after the windows seal the mesh may take to converge.
    pub settle_timeout: Duration,
    /// Keep each run's work directory (node data and logs, the truth log).
    pub keep: bool,
}

impl Options {
    /// The most packets one device sends in a run: one per interval × (1 − jitter), plus
    /// the first.
    pub fn packets_per_device(&self, interval: Duration) -> u64 {
        let min_gap = interval.as_secs_f64() * (1.0 - sensor::DEFAULT_JITTER);
        (self.duration.as_secs_f64() / min_gap).ceil() as u64 + 1
    }

    /// Refuses settings whose runs the records API could not page through in one request.
    pub fn check(&self, scenarios: &[Scenario]) -> Result<(), String> {
        for s in scenarios {
            if self.packets_per_device(s.interval) > PAGE as u64 {
                return Err(format!(
                    "--duration {:?} gives more than {PAGE} packets per device in {}",
                    self.duration,
                    s.name()
                ));
            }
        }
        Ok(())
    }
}

/// The run was stopped by Ctrl-C.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// Where a run reports what it is doing.
pub trait Progress {
    /// What it is doing now ("sending", "waiting for the mesh").
    fn phase(&self, what: &str);
    /// Something worth telling that does not fail the run.
    fn note(&self, what: &str);
}

fn check(stop: &AtomicBool) -> anyhow::Result<()> {
    if stop.load(Ordering::Relaxed) {
        return Err(Interrupted.into());
    }
    Ok(())
}

/// Sleeps `d`, waking early if `stop` is set.
fn pause(d: Duration, stop: &AtomicBool) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        check(stop)?;
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    check(stop)
}

/// The work directory of one run (node data and logs, the truth log).
pub fn work_dir(out: &Path, scenario: &Scenario, run: usize) -> PathBuf {
    out.join("work").join(scenario.stem(run))
}

/// Runs `scenario` once (`run` counts from 1) with the `telemesh` at `binary`.
pub fn run(
    binary: &Path,
    opts: &Options,
    scenario: &Scenario,
    run: usize,
    stop: &AtomicBool,
    progress: &dyn Progress,
) -> anyhow::Result<Run> {
    let name = scenario.name();
    let work = work_dir(&opts.out, scenario, run);
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;

    progress.phase("starting 3 nodes");
    let spec = MeshSpec {
        nodes: SITES,
        dir: work.clone(),
        mesh: "experiment".to_owned(),
        sync_interval: None,
        node_link: None,
    };
    let mesh = Mesh::start(binary, &spec, Duration::from_secs(60))?;
    check(stop)?;
    let relay_seeds: Vec<u64> = (0..SITES)
        .map(|i| derive_seed(opts.seed, &name, run, Role::Relay(i)))
        .collect();
    let relays = mesh
        .nodes
        .iter()
        .zip(&relay_seeds)
        .map(|(node, &seed)| {
            relay::spawn(relay::Config {
                forward: scenario.impairment.clone(),
                seed,
                ..relay::Config::new(([127, 0, 0, 1], 0).into(), node.iotstream)
            })
        })
        .collect::<Result<Vec<Relay>, _>>()?;

    let mut pcap = None;
    let capture = match &opts.pcap {
        Some(capturer) => {
            let path = opts.out.join(scenario.pcap_name(run));
            let ports = [
                relays[0].local_addr().port(),
                mesh.nodes[0].iotstream.port(),
            ];
            match Capture::start(capturer, &ports, &path) {
                Ok(c) => {
                    pcap = Some(scenario.pcap_name(run));
                    Some(c)
                }
                Err(e) => {
                    progress.note(&format!("{name} run {run}: no capture: {e}"));
                    None
                }
            }
        }
        None => None,
    };

    // Send, timing node a's CPU over the sending (and the relay's last delay).
    let truth_path = work.join("truth.ndjson");
    let devices: Vec<u16> = (0..opts.devices).map(|i| FIRST_DEVICE + i).collect();
    let sensor_seed = derive_seed(opts.seed, &name, run, Role::Sensor);
    let config = sensor::Config {
        dialect: Dialect::Iotstream,
        devices: devices.clone(),
        interval: scenario.interval,
        duration: Some(opts.duration),
        seed: Some(sensor_seed),
        to: relays.iter().map(Relay::local_addr).collect(),
        truth: Some(truth_path.clone()),
        ..sensor::Config::default()
    };
    let cpu_before = mesh.nodes[0].cpu_time();
    progress.phase(&format!("sending for {} s", opts.duration.as_secs_f64()));
    let summary = sensor::run(&config, stop)?;
    check(stop)?;
    if summary.send_errors > 0 {
        progress.note(&format!(
            "{name} run {run}: {} sends failed (first: {})",
            summary.send_errors,
            summary.first_send_error.as_deref().unwrap_or("?")
        ));
    }
    pause(scenario.max_delay() + Duration::from_millis(200), stop)?;
    let cpu = match (cpu_before, mesh.nodes[0].cpu_time()) {
        (Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    };
    let truth = sensor::read_truth(&truth_path)?;
    let last_sent_ns = truth
        .iter()
        .map(|t| t.sent_at_ns)
        .max()
        .unwrap_or_else(cluster::now_ns);

    // What each site received is final now (repair does not add to a local view).
    progress.phase("reading the records");
    let dialect = Dialect::Iotstream.name();
    let read = |node: &cluster::NodeProcess, view: &str| -> anyhow::Result<Vec<Received>> {
        let mut out = Vec::new();
        for &d in &devices {
            for v in node.records(dialect, u64::from(d), view)? {
                out.push(Received::from_json(&v).with_context(|| {
                    format!(
                        "node {}: a record without device, seq or timestamp: {v}",
                        node.name
                    )
                })?);
            }
        }
        Ok(out)
    };
    let locals = mesh
        .nodes
        .iter()
        .map(|n| read(n, "local"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let heard: BTreeSet<(u32, u64, u64)> = locals
        .iter()
        .flatten()
        .map(|r| (r.device, r.seq, r.timestamp))
        .collect();

    // Converged: every node lists the same sealed windows with the same roots and
    // provenance, and they hold every record any site heard.
    progress.phase("waiting for the mesh to converge");
    let deadline = Instant::now() + QUIET + opts.settle_timeout;
    let settle_seconds = loop {
        check(stop)?;
        let views = mesh
            .nodes
            .iter()
            .map(|n| n.windows(0))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let same = views.iter().all(|v| *v == views[0]);
        let held: u64 = views[0].values().map(|w| w.count).sum();
        if same && held >= heard.len() as u64 {
            break cluster::now_ns().saturating_sub(last_sent_ns) as f64 / 1e9;
        }
        if Instant::now() > deadline {
            bail!(
                "the mesh did not converge within {:?} after the windows sealed: {} \
                 ({} records heard by some site, {held} in site a's sealed windows)",
                opts.settle_timeout,
                describe(&views),
                heard.len()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    };

    let merged = read(&mesh.nodes[0], "merged")?;
    let csv = scenario.csv_name(run);
    let rows = write_csv(&mesh.nodes[0], &devices, &opts.out.join(&csv))?;
    if rows != locals[0].len() {
        bail!(
            "{csv}: the CSV export has {rows} rows, the local view {} records",
            locals[0].len()
        );
    }
    let mut repair_bytes = 0.0;
    let mut symbols = 0.0;
    let mut processing = None;
    for (i, node) in mesh.nodes.iter().enumerate() {
        let text = node.metrics()?;
        repair_bytes += cluster::metric(&text, REPAIR_OUT);
        symbols += cluster::metric(&text, "telemesh_mesh_symbols_received_total");
        if i == 0 {
            let count = cluster::metric(&text, "telemesh_packet_processing_seconds_count");
            let sum = cluster::metric(&text, "telemesh_packet_processing_seconds_sum");
            processing = (count > 0.0).then(|| sum * 1e3 / count);
        }
    }

    // Stop everything; the nodes flush on SIGTERM.
    if let Some(c) = capture {
        c.stop();
    }
    let relay_stats: Vec<relay::Stats> = relays.into_iter().map(Relay::stop).collect();
    for node in mesh.nodes {
        node.stop(Duration::from_secs(10))?;
    }

    let truth = Truth::new(&truth);
    let mut metrics = SiteMetrics::compute(&truth, &locals[0], cpu);
    metrics.processing_ms_per_report = processing;
    let mut after_repair =
        RepairMetrics::compute(&truth, &locals, &merged, &[scenario.impairment.loss; SITES]);
    after_repair.repair_bytes = repair_bytes as u64;
    after_repair.symbols_received = symbols as u64;
    after_repair.settle_seconds = settle_seconds;
    if metrics.unmatched_records > 0 {
        progress.note(&format!(
            "{name} run {run}: site a holds {} records the sensor did not send",
            metrics.unmatched_records
        ));
    }
    if let Some(stats) = relay_stats.first() {
        if stats.forward.delivered != metrics.packets_received {
            progress.note(&format!(
                "{name} run {run}: relay a delivered {} datagrams, node a counted {}",
                stats.forward.delivered, metrics.packets_received
            ));
        }
    }
    if !opts.keep {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
        // The parent `work` goes too once it is empty (an error just means it is not).
        let _ = work.parent().map(std::fs::remove_dir);
    }
    Ok(Run {
        run,
        sensor_seed,
        relay_seeds,
        metrics,
        after_repair,
        csv,
        pcap,
    })
}

/// Site a's local view of every device as the node's CSV export (seed columns first), one
/// header; returns the number of rows.
fn write_csv(node: &cluster::NodeProcess, devices: &[u16], path: &Path) -> anyhow::Result<usize> {
    let mut csv = String::new();
    let mut rows = 0;
    for (i, d) in devices.iter().enumerate() {
        let body = node.get(&format!(
            "/v1/streams/iotstream/{d}/records?view=local&format=csv&limit={PAGE}"
        ))?;
        let mut lines = body.lines();
        let header = lines.next().context("an empty CSV export")?;
        if i == 0 {
            csv.push_str(header);
            csv.push('\n');
        }
        for line in lines.filter(|l| !l.is_empty()) {
            csv.push_str(line);
            csv.push('\n');
            rows += 1;
        }
    }
    std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(rows)
}

/// Which windows the nodes disagree on, for the timeout error.
pub fn describe(roots: &[Windows]) -> String {
    let keys: BTreeSet<_> = roots.iter().flat_map(|r| r.keys()).collect();
    let differ: Vec<_> = keys
        .iter()
        .filter(|k| roots.iter().any(|r| r.get(**k) != roots[0].get(**k)))
        .collect();
    let counts: Vec<String> = roots
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{} {}", cluster::node_name(i), r.len()))
        .collect();
    let mut out = format!(
        "windows per node: {}; {} of {} differ",
        counts.join(", "),
        differ.len(),
        keys.len()
    );
    if let Some((dialect, device, start)) = differ.first() {
        out.push_str(&format!(
            " (first: {dialect}/{device} starting at {start} ns)"
        ));
    }
    if keys.is_empty() {
        out.push_str(" (no node holds any sealed window)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::scenario;

    #[test]
    fn describe_names_the_differing_windows() {
        let w = |root: &str, count| cluster::WindowInfo { root: root.into(), provenance: "p".into(), count, slot_size: 32 };
        let mut a = Windows::new();
        a.insert(("iotstream".into(), 1001, 60), w("r1", 5));
        a.insert(("iotstream".into(), 1002, 60), w("r2", 5));
        let mut b = a.clone();
        b.insert(("iotstream".into(), 1002, 60), w("r2", 4));
        let c = Windows::new();
        let text = describe(&[a.clone(), b, c]);
        assert_eq!(
            text,
            "windows per node: a 2, b 2, c 0; 2 of 2 differ (first: iotstream/1001 starting at 60 ns)"
        );
        assert!(describe(&[a.clone(), a.clone()]).contains("0 of 2 differ"));
        assert!(describe(&[Windows::new()]).contains("no node holds any sealed window"));
    }

    #[test]
    fn options_refuse_runs_the_api_cannot_page() {
        let opts = Options {
            duration: Duration::from_secs(60),
            devices: 10,
            seed: 1,
            out: PathBuf::from("x"),
            pcap: None,
            settle_timeout: Duration::from_secs(1),
            keep: false,
        };
        let one = scenario::by_name("baseline-1s").expect("1s");
        // 60 s at 0.9 s at least between packets: 67 + the first.
        assert_eq!(opts.packets_per_device(one.interval), 68);
        assert!(opts.check(&scenario::all()).is_ok());
        let long = Options {
            duration: Duration::from_secs(200_000),
            ..opts
        };
        let e = long.check(&scenario::all()).expect_err("too long");
        assert!(e.contains("baseline-1s"), "{e}");
    }
}
