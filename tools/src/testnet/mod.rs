//! The local testnet behind `testnet/run.sh` and `telemesh-testnet`: several `telemesh
//! node` processes on loopback in one closed mesh (node `a` creates it, the others join
//! with its invitations), simulated sensors whose every datagram reaches each site through
//! that site's own impaired relay (several radio gateways hearing one sensor), optionally
//! relays between the nodes and an uninvited node trying to get in, and at the end a check
//! that every node converged on the same merged history and that the uninvited node was
//! kept out ([`check`]).
//!
//! With the secure dialect every node issues a certificate for every device from its own
//! built-in CA (`telemesh certs device`, into `<data>/certs/<node>/<device>/`), and each
//! device speaks DTLS with each site through the site's relay, with that site's certificate.

pub mod check;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use telemesh_proto::impair;
use telemesh_proto::wire::Dialect;

use crate::cluster::{self, Mesh, MeshSpec, NodeProcess, NodeSpec, Roots};
use crate::dtls;
use crate::relay;
use crate::sensor;
use check::{HeardBy, IntruderVerdict, IntruderView, Key, NodeView, Verdict};

/// How long a stream must be quiet before the node seals its open window (the node's
/// `QUIET_NS`), plus a margin for the flush.
const SEAL_DELAY: Duration = Duration::from_secs(7);

/// How often the nodes are polled while the testnet runs.
const POLL: Duration = Duration::from_millis(250);

/// Mean length of a loss burst with `--burst`, in packets.
const MEAN_BURST: f64 = 4.0;

/// The first IoTStream seq of the records fabricated for the uninvited node: far above
/// the sensors' (which start at 1), so that no fabricated record has a real one's identity.
const FABRICATED_SEQ: u32 = 40_000;

/// The refusal reasons that count connections of peers not proven members.
const UNPROVEN: [&str; 2] = ["unproven_connection", "unproven_timeout"];

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Nodes (sites).
    pub nodes: usize,
    /// What the sensors speak: IoTStream, or the secure dialect over DTLS.
    pub dialect: Dialect,
    /// Devices, ids 1001, 1002, ….
    pub devices: u16,
    /// How long the sensors send.
    pub duration: Duration,
    /// Reporting interval per device.
    pub interval: Duration,
    /// Loss between the sensors and each site, 0..1.
    pub loss: f64,
    /// `loss` comes in bursts (Gilbert–Elliott, mean burst 4 packets) instead of independently.
    pub burst: bool,
    /// Delay of the sensor links, ms.
    pub delay_ms: f64,
    /// Jitter of the sensor links, ms.
    pub jitter_ms: f64,
    /// Loss between nodes (each way); `Some` puts a relay in front of each node.
    pub link_loss: Option<f64>,
    /// Cut the last node's links from 20% to 70% of the run.
    pub partition: bool,
    /// Also run an uninvited node: `--open --bootstrap <a>` with the mesh's name, hearing
    /// every sensor datagram and records fabricated for the same devices; the run fails
    /// unless it was kept out.
    pub intruder: bool,
    /// Seed of sensors and relays.
    pub seed: u64,
    /// Where the nodes' data goes; `None` = a temporary directory, removed at the end.
    pub data: Option<PathBuf>,
    /// How long to wait for the mesh to settle after the sensors stop.
    pub settle_timeout: Duration,
    /// Show a progress bar.
    pub progress: bool,
}

impl Options {
    /// Checks the options against each other.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=26).contains(&self.nodes), "--nodes must be between 1 and 26");
        anyhow::ensure!(
            matches!(self.dialect, Dialect::Iotstream | Dialect::Secure),
            "--dialect must be iotstream or secure"
        );
        anyhow::ensure!(
            !(self.intruder && self.dialect == Dialect::Secure),
            "--intruder is for --dialect iotstream (an outsider gets no certificate to speak the secure dialect with)"
        );
        anyhow::ensure!(self.devices >= 1 && self.devices <= 50_000, "--devices must be between 1 and 50000");
        anyhow::ensure!((0.0..1.0).contains(&self.loss), "--loss must be at least 0 and below 1 (e.g. 0.1 or 10%)");
        if let Some(l) = self.link_loss {
            anyhow::ensure!((0.0..1.0).contains(&l), "--link-loss must be at least 0 and below 1");
        }
        anyhow::ensure!(!self.partition || self.nodes >= 2, "--partition needs at least 2 nodes");
        // The cut (half the run) must outlast the QUIC idle timeout for the node to notice.
        anyhow::ensure!(
            !self.partition || self.duration >= Duration::from_secs(60),
            "--partition needs --duration 60s or more"
        );
        anyhow::ensure!(self.duration >= Duration::from_secs(1), "--duration must be at least 1s");
        anyhow::ensure!(self.interval >= Duration::from_millis(1), "--interval must be at least 1ms");
        if let Some(dir) = &self.data {
            // Old data would show up as records no sensor of this run sent.
            let empty = std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none());
            anyhow::ensure!(empty, "--data {} is not empty; give a new directory", dir.display());
        }
        Ok(())
    }

    /// The impairment of each sensor → site link.
    pub fn sensor_link(&self) -> impair::Config {
        let (loss, burst) = match self.burst {
            // Stationary loss p_gb / (p_gb + p_bg) = loss, with bursts of 1 / p_bg packets.
            true if self.loss > 0.0 => {
                let p_bg = 1.0 / MEAN_BURST;
                (0.0, Some(impair::Burst::gilbert(self.loss * p_bg / (1.0 - self.loss), p_bg)))
            }
            _ => (self.loss, None),
        };
        impair::Config {
            loss,
            burst,
            delay_ns: (self.delay_ms * 1e6) as u64,
            jitter_ns: (self.jitter_ms * 1e6) as u64,
            ..impair::Config::default()
        }
    }

    fn node_link(&self) -> Option<(impair::Config, u64)> {
        match (self.link_loss, self.partition) {
            (None, false) => None,
            (loss, _) => Some((
                impair::Config { loss: loss.unwrap_or(0.0), ..impair::Config::default() },
                self.seed.wrapping_add(500),
            )),
        }
    }

    /// One line saying what runs.
    pub fn describe(&self) -> String {
        let mut s = format!(
            "{} nodes, {} {} devices every {:?} for {:?}; sensor → site links: `{}`",
            self.nodes,
            self.devices,
            match self.dialect {
                Dialect::Secure => "secure (DTLS)",
                _ => "IoTStream",
            },
            self.interval,
            self.duration,
            self.sensor_link().netem()
        );
        match self.node_link() {
            Some((link, _)) => {
                let _ = write!(s, "; node ↔ node through relays: `{}`", link.netem());
            }
            None => s.push_str("; node ↔ node direct"),
        }
        if self.partition {
            s.push_str("; partition of the last node");
        }
        if self.intruder {
            s.push_str("; an uninvited node");
        }
        let _ = write!(s, "; seed {}", self.seed);
        s
    }
}

/// Per-node measurements beside the verdict.
#[derive(Debug, Clone)]
pub struct NodeReport {
    /// `a`, `b`, ….
    pub name: String,
    /// Its peer id.
    pub peer_id: String,
    /// Repair bytes it received (`telemesh_mesh_bytes_total{kind="repair",direction="in"}`).
    pub repair_bytes_in: f64,
    /// From the last datagram sent until it listed its final windows.
    pub converged_after: Option<Duration>,
    /// Its `/metrics` text at the end.
    pub metrics: String,
}

/// What a partition did, relative to the cut and the heal.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    /// The cut node's name.
    pub node: String,
    /// When, from the sensors' start, the cut began and was healed.
    pub cut_at: Duration,
    pub healed_at: Duration,
    /// How long after the cut the node had no peers.
    pub alone_after: Option<Duration>,
    /// How long after healing it had all its peers again.
    pub reconnected_after: Option<Duration>,
    /// How long after healing all nodes agreed on every window that ended before the heal.
    pub converged_after: Option<Duration>,
    /// Windows that ended before the heal on which the nodes disagreed at the heal.
    pub differing_at_heal: usize,
}

/// What became of the uninvited node.
#[derive(Debug, Clone)]
pub struct IntruderReport {
    /// Its peer id.
    pub peer_id: String,
    /// Records sent to it directly: the sensors' and the fabricated ones.
    pub sent: usize,
    /// Records fabricated for it.
    pub fabricated: usize,
    /// Records in its merged history.
    pub held: usize,
    /// Per refusal reason of [`UNPROVEN`]: the members' count since it started.
    pub refusals: Vec<(&'static str, f64)>,
    /// The most peers it listed at a poll, and the members that listed it.
    pub max_peers: u64,
    pub listed_by: BTreeSet<String>,
    pub verdict: IntruderVerdict,
}

/// Everything the testnet found.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub nodes: Vec<NodeReport>,
    pub partition: Option<PartitionReport>,
    /// With `--intruder`.
    pub intruder: Option<IntruderReport>,
    /// The mesh settled (all nodes listed the same windows) before the timeout.
    pub settled: bool,
    /// For each window that ended while the sensors sent: from its end until every node
    /// listed it with the same root and provenance, as polled every 250 ms; ascending.
    pub window_latencies: Vec<Duration>,
    /// The median slot size of node a's windows (bytes per record in a window blob).
    pub median_slot_size: u64,
    /// With relays between the nodes: the UDP payload bytes the nodes sent each other
    /// through them (QUIC, every protocol and copy, all framing), each way.
    pub node_link_bytes: Option<u64>,
    /// The mesh, still running when `keep` was asked.
    pub kept: Option<Kept>,
}

impl Outcome {
    /// Settled, no problem found, a partition (if any) isolated its node, and an uninvited
    /// node (if any) was kept out.
    pub fn ok(&self) -> bool {
        self.settled
            && self.verdict.problems.is_empty()
            && self.partition.as_ref().is_none_or(|p| p.alone_after.is_some())
            && self.intruder.as_ref().is_none_or(|i| i.verdict.problems.is_empty())
    }
}

/// A mesh left running (`--keep`); its data directory is not removed.
#[derive(Debug)]
pub struct Kept {
    pub mesh: Mesh,
    pub dir: PathBuf,
    /// The relays in front of each site's sensor port (IoTStream or secure), in node order.
    pub site_relays: Vec<relay::Relay>,
    /// The uninvited node, with `--intruder`.
    pub intruder: Option<NodeProcess>,
}

/// The uninvited node while the testnet runs.
#[derive(Debug)]
struct Intruder {
    node: NodeProcess,
    peer_id: String,
    /// Per member: its [`UNPROVEN`] refusals, by reason, when the intruder started.
    baseline: Vec<Vec<f64>>,
    max_peers: u64,
    listed_by: BTreeSet<String>,
}

impl Intruder {
    /// Starts a node as an outsider would: a fresh data directory, `--open`, the mesh's name
    /// and node `a`'s advertised address to bootstrap from — everything but an invitation.
    fn start(binary: &std::path::Path, mesh: &Mesh, dir: &std::path::Path) -> anyhow::Result<Intruder> {
        let baseline = mesh.nodes.iter().map(unproven_refusals).collect::<anyhow::Result<_>>()?;
        let spec = NodeSpec {
            bootstrap: vec![mesh.bootstrap_addr()?],
            open: true,
            ..NodeSpec::new("intruder", &dir.join("intruder"))
        };
        let mut node = NodeProcess::start(binary, &spec)?;
        let peer_id = node.wait_ready(Duration::from_secs(30)).context("starting the uninvited node")?;
        Ok(Intruder { node, peer_id, baseline, max_peers: 0, listed_by: BTreeSet::new() })
    }

    /// Notes whether it has peers and whether any member lists it (a failed request is
    /// skipped: the next poll asks again).
    fn poll(&mut self, mesh: &Mesh) {
        if let Some(peers) = self.node.json("/v1/status").ok().and_then(|s| s["peers"].as_u64()) {
            self.max_peers = self.max_peers.max(peers);
        }
        for node in &mesh.nodes {
            let Ok(v) = node.json("/v1/peers") else { continue };
            let mut peers = v["peers"].as_array().into_iter().flatten();
            if peers.any(|p| p["peer_id"].as_str() == Some(&self.peer_id)) {
                self.listed_by.insert(node.name.clone());
            }
        }
    }
}

/// A node's [`UNPROVEN`] refusals, by reason.
fn unproven_refusals(node: &NodeProcess) -> anyhow::Result<Vec<f64>> {
    let metrics = node.metrics()?;
    let count = |r: &str| cluster::metric(&metrics, &format!("telemesh_trust_refusals_total{{reason=\"{r}\"}}"));
    Ok(UNPROVEN.iter().map(|r| count(r)).collect())
}

/// Every record of `devices` a node holds in `view` (`local` or `merged`), with `heard_by`,
/// and the response bodies per device.
fn node_records(
    node: &NodeProcess,
    dialect: Dialect,
    devices: std::ops::Range<u16>,
    view: &str,
) -> anyhow::Result<(HeardBy, BTreeMap<u16, String>)> {
    let mut records = BTreeMap::new();
    let mut bodies = BTreeMap::new();
    for device in devices {
        let body = node.get(&format!("/v1/streams/{}/{device}/records?view={view}&limit=100000", dialect.name()))?;
        records.extend(check::parse_records(&body)?);
        bodies.insert(device, body);
    }
    Ok((records, bodies))
}

/// Tracks when each node's window list last changed, and since when all nodes have
/// agreed on each window.
#[derive(Debug)]
struct Watch {
    last: Vec<Roots>,
    changed_at: Vec<Instant>,
    stable_since: Instant,
    /// Per window: since when (Unix ns) every node has listed it with the same value.
    agreed_since: BTreeMap<(String, u64, u64), u64>,
}

impl Watch {
    fn new(nodes: usize) -> Self {
        Watch {
            last: vec![Roots::new(); nodes],
            changed_at: vec![Instant::now(); nodes],
            stable_since: Instant::now(),
            agreed_since: BTreeMap::new(),
        }
    }

    fn update(&mut self, now: Instant, now_ns: u64, views: Vec<Roots>) {
        for (i, v) in views.into_iter().enumerate() {
            if self.last[i] != v {
                self.last[i] = v;
                self.changed_at[i] = now;
                self.stable_since = now;
            }
        }
        let Some((first, rest)) = self.last.split_first() else { return };
        let agreed: BTreeSet<&(String, u64, u64)> =
            first.iter().filter(|(k, v)| rest.iter().all(|r| r.get(*k) == Some(*v))).map(|(k, _)| k).collect();
        self.agreed_since.retain(|k, _| agreed.contains(k));
        for k in agreed {
            self.agreed_since.entry(k.clone()).or_insert(now_ns);
        }
    }

    /// For every window that ended by `end_ns` and all nodes agree on: from its end until
    /// they agreed (as polled).
    fn window_latencies(&self, end_ns: u64) -> Vec<Duration> {
        let mut out: Vec<Duration> = self
            .agreed_since
            .iter()
            .filter_map(|(k, since)| {
                let window_end = k.2 + telemesh_proto::window::SPAN_NS;
                (window_end <= end_ns).then(|| Duration::from_nanos(since.saturating_sub(window_end)))
            })
            .collect();
        out.sort_unstable();
        out
    }

    fn agree(&self) -> bool {
        self.last.iter().all(|r| *r == self.last[0]) && !self.last[0].is_empty()
    }

    /// Windows ending at or before `end_ns` on which the nodes disagree.
    fn differing_before(&self, end_ns: u64) -> usize {
        let keys: BTreeSet<&(String, u64, u64)> = self
            .last
            .iter()
            .flat_map(|r| r.keys())
            .filter(|k| k.2 + telemesh_proto::window::SPAN_NS <= end_ns)
            .collect();
        keys.into_iter().filter(|k| self.last.iter().any(|r| r.get(*k) != self.last[0].get(*k))).count()
    }
}

/// Runs the testnet: start, send, settle, check. `stop` (Ctrl-C) ends it early with an error.
pub fn run(opts: &Options, stop: &AtomicBool, keep: bool) -> anyhow::Result<Outcome> {
    opts.validate()?;
    let binary = cluster::node_binary()?;
    let (temp, dir) = match &opts.data {
        Some(d) => (None, d.clone()),
        None => {
            let t = tempfile::Builder::new().prefix("telemesh-testnet-").tempdir()?;
            let d = t.path().to_owned();
            (Some(t), d)
        }
    };
    let spec = MeshSpec { nodes: opts.nodes, dir: dir.clone(), mesh: "testnet".to_owned(), sync_interval: None, node_link: opts.node_link() };
    let mesh = Mesh::start(&binary, &spec, Duration::from_secs(60)).context("starting the nodes")?;
    let from_ns = cluster::now_ns().saturating_sub(telemesh_proto::window::SPAN_NS);
    let mut intruder = match opts.intruder {
        true => Some(Intruder::start(&binary, &mesh, &dir)?),
        false => None,
    };

    // Secure: every site issues each device a certificate.
    let credentials = match opts.dialect {
        Dialect::Secure => Some(issue_certificates(&binary, &mesh, &dir, opts.devices)?),
        _ => None,
    };
    // One relay per site in front of its sensor port.
    let link = opts.sensor_link();
    let site_relays: Vec<relay::Relay> = mesh
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let config = relay::Config {
                forward: link.clone(),
                reverse: link.clone(),
                seed: opts.seed.wrapping_mul(1000).wrapping_add(i as u64),
                ..relay::Config::new(
                    "127.0.0.1:0".parse().expect("a constant address"),
                    if opts.dialect == Dialect::Secure { n.secure } else { n.iotstream },
                )
            };
            relay::spawn(config)
        })
        .collect::<Result<_, _>>()?;

    let truth_path = dir.join("truth.ndjson");
    let sensors = sensor::Config {
        dialect: opts.dialect,
        devices: (1001..1001 + opts.devices).collect(),
        interval: opts.interval,
        duration: Some(opts.duration),
        seed: Some(opts.seed),
        // The uninvited node hears every datagram, directly.
        to: site_relays
            .iter()
            .map(relay::Relay::local_addr)
            .chain(intruder.as_ref().map(|i| i.node.iotstream))
            .collect(),
        truth: Some(truth_path.clone()),
        ..sensor::Config::default()
    };
    sensors.validate()?;
    // Records for the same devices that no sensor sent (other seqs, readings and times), to
    // the uninvited node alone.
    let fabricated_path = dir.join("fabricated.ndjson");
    let fabricated = intruder.as_ref().map(|i| sensor::Config {
        seed: Some(opts.seed.wrapping_add(0xbad)),
        start_seq: Some(FABRICATED_SEQ),
        to: vec![i.node.iotstream],
        truth: Some(fabricated_path.clone()),
        ..sensors.clone()
    });

    let progress = progress_bar(opts);
    let sensor_stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let stop = Arc::clone(&sensor_stop);
        let dtls = credentials.map(|credentials| sensor::Dtls {
            credentials,
            handshake_timeout: sensor::DEFAULT_HANDSHAKE_TIMEOUT,
        });
        std::thread::spawn(move || match &dtls {
            Some(dtls) => sensor::run_secure(&sensors, dtls, &stop),
            None => sensor::run(&sensors, &stop),
        })
    };
    let forger = fabricated.map(|config| {
        let stop = Arc::clone(&sensor_stop);
        std::thread::spawn(move || sensor::run(&config, &stop))
    });

    let start = Instant::now();
    let partition_window = opts.partition.then(|| (opts.duration.mul_f64(0.2), opts.duration.mul_f64(0.7)));
    let isolated = opts.nodes - 1;
    let mut partition = opts.partition.then(|| PartitionReport {
        node: cluster::node_name(isolated),
        cut_at: partition_window.map_or(Duration::ZERO, |w| w.0),
        healed_at: partition_window.map_or(Duration::ZERO, |w| w.1),
        ..PartitionReport::default()
    });
    let mut cut = false;
    let mut healed_ns = None;
    let mut watch = Watch::new(opts.nodes);
    let mut sent_until: Option<Instant> = None;
    let mut sent_until_ns = 0;
    let deadline_after_send = SEAL_DELAY + opts.settle_timeout;
    let settled = loop {
        if stop.load(Ordering::Relaxed) {
            sensor_stop.store(true, Ordering::Relaxed);
            let _ = sender.join();
            if let Some(f) = forger {
                let _ = f.join();
            }
            progress.abandon_with_message("interrupted");
            anyhow::bail!("interrupted");
        }
        std::thread::sleep(POLL);
        let now = Instant::now();
        let elapsed = now - start;

        if let (Some(p), Some((from, to))) = (partition.as_mut(), partition_window) {
            if !cut && healed_ns.is_none() && elapsed >= from {
                mesh.isolate(isolated, true)?;
                cut = true;
            } else if cut && elapsed >= to {
                mesh.isolate(isolated, false)?;
                cut = false;
                healed_ns = Some(cluster::now_ns());
                p.differing_at_heal = watch.differing_before(cluster::now_ns());
            }
            let peers = |i: usize| mesh.nodes[i].json("/v1/status").ok().and_then(|s| s["peers"].as_u64());
            if cut && p.alone_after.is_none() && peers(isolated) == Some(0) {
                p.alone_after = Some(elapsed - from);
            }
            if healed_ns.is_some() && p.reconnected_after.is_none() && peers(isolated) == Some(opts.nodes as u64 - 1) {
                p.reconnected_after = Some(elapsed - to);
            }
            if let (Some(h), None) = (healed_ns, p.converged_after) {
                if watch.differing_before(h) == 0 {
                    p.converged_after = Some(elapsed.saturating_sub(to));
                }
            }
        }

        if let Ok(views) = mesh.roots(from_ns) {
            watch.update(now, cluster::now_ns(), views);
        }
        if let Some(i) = intruder.as_mut() {
            i.poll(&mesh);
        }
        if sent_until.is_none() && sender.is_finished() {
            sent_until = Some(now);
            sent_until_ns = cluster::now_ns();
        }
        let windows = watch.last.first().map_or(0, BTreeMap::len);
        match sent_until {
            None => {
                progress.set_position(elapsed.as_secs().min(opts.duration.as_secs()));
                progress.set_message(format!("sending; {windows} windows sealed on node a{}", if cut { "; partitioned" } else { "" }));
            }
            Some(end) => {
                let agree = watch.agree();
                progress.set_message(format!(
                    "settling: {windows} windows on node a, nodes {}",
                    if agree { "agree" } else { "differ" }
                ));
                let quiet_enough = now - end >= SEAL_DELAY && now - watch.stable_since >= Duration::from_secs(2);
                if agree && quiet_enough && !cut {
                    break true;
                }
                if now - end > deadline_after_send {
                    break false;
                }
            }
        }
    };
    progress.finish_and_clear();
    let summary = sender.join().map_err(|_| anyhow::anyhow!("the sensor thread panicked"))??;
    let end = sent_until.unwrap_or_else(Instant::now);
    tracing::debug!(?summary, "sensors done");
    if let Some(f) = forger {
        let summary = f.join().map_err(|_| anyhow::anyhow!("the fabricating sensor thread panicked"))??;
        tracing::debug!(?summary, "fabricated records sent");
    }

    let truth: BTreeSet<Key> =
        sensor::read_truth(&truth_path)?.iter().map(|t| (t.device, t.seq, t.timestamp)).collect();
    let mut views = Vec::new();
    let mut reports = Vec::new();
    let mut slot_sizes = Vec::new();
    let devices = 1001..1001 + opts.devices;
    for (i, node) in mesh.nodes.iter().enumerate() {
        let (local, _) = node_records(node, opts.dialect, devices.clone(), "local")?;
        let (merged, merged_bodies) = node_records(node, opts.dialect, devices.clone(), "merged")?;
        views.push(NodeView {
            name: node.name.clone(),
            peer_id: mesh.peer_ids[i].clone(),
            local: local.into_keys().collect(),
            merged,
            merged_bodies,
        });
        let metrics = node.metrics()?;
        if i == 0 {
            slot_sizes = node.windows(from_ns)?.values().map(|w| w.slot_size).collect();
        }
        reports.push(NodeReport {
            name: node.name.clone(),
            peer_id: mesh.peer_ids[i].clone(),
            repair_bytes_in: cluster::metric(&metrics, "telemesh_mesh_bytes_total{kind=\"repair\",direction=\"in\"}"),
            converged_after: settled.then(|| watch.changed_at[i].saturating_duration_since(end)),
            metrics,
        });
    }
    let verdict = check::check(&truth, &views);
    let node_link_bytes = (!mesh.relays.is_empty()).then(|| {
        mesh.relays.iter().map(|r| r.stats()).map(|s| s.forward.received_bytes + s.reverse.received_bytes).sum()
    });
    let intruder_report = match &mut intruder {
        Some(i) => {
            i.poll(&mesh);
            Some(intruder_report(i, &mesh, &truth, &fabricated_path, &views, devices)?)
        }
        None => None,
    };

    let kept = match keep {
        // The data stays after the mesh stops.
        true => {
            if let Some(t) = temp {
                let _ = t.keep();
            }
            Some(Kept { mesh, dir, site_relays, intruder: intruder.map(|i| i.node) })
        }
        false => None,
    };
    slot_sizes.sort_unstable();
    let window_latencies = watch.window_latencies(sent_until_ns);
    let median_slot_size = slot_sizes.get(slot_sizes.len() / 2).copied().unwrap_or(0);
    Ok(Outcome {
        verdict,
        nodes: reports,
        partition,
        intruder: intruder_report,
        settled,
        window_latencies,
        median_slot_size,
        node_link_bytes,
        kept,
    })
}

/// `telemesh certs device ID` on every node for every device, into
/// `dir/certs/<node>/<ID>/`; the credentials per site, in node order, `{id}` in the paths.
fn issue_certificates(binary: &Path, mesh: &Mesh, dir: &Path, devices: u16) -> anyhow::Result<Vec<dtls::Credentials>> {
    let mut credentials = Vec::new();
    for node in &mesh.nodes {
        let data = dir.join(&node.name);
        let certs = dir.join("certs").join(&node.name);
        for device in 1001..1001 + u32::from(devices) {
            let out = std::process::Command::new(binary)
                .args(["certs", "device", &device.to_string(), "--data"])
                .arg(&data)
                .arg("--out")
                .arg(certs.join(device.to_string()))
                .output()
                .context("running telemesh certs device")?;
            anyhow::ensure!(
                out.status.success(),
                "telemesh certs device {device} on node {}: {}",
                node.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        credentials.push(dtls::Credentials {
            ca: certs.join("1001").join("ca.pem"),
            cert: certs.join("{id}").join("device.pem"),
            key: certs.join("{id}").join("device.key"),
        });
    }
    Ok(credentials)
}

/// Reads what the uninvited node holds and what the members counted, and checks it was
/// kept out.
fn intruder_report(
    intruder: &Intruder,
    mesh: &Mesh,
    truth: &BTreeSet<Key>,
    fabricated_path: &std::path::Path,
    views: &[NodeView],
    devices: std::ops::Range<u16>,
) -> anyhow::Result<IntruderReport> {
    // A fabricated record that happens to have a real one's identity (an INIT at the same
    // millisecond) is not a fabrication anyone could tell.
    let fabricated: BTreeSet<Key> = sensor::read_truth(fabricated_path)?
        .iter()
        .map(|t| (t.device, t.seq, t.timestamp))
        .filter(|k| !truth.contains(k))
        .collect();
    let (merged, _) = node_records(&intruder.node, Dialect::Iotstream, devices, "merged")?;
    let metrics = intruder.node.metrics()?;
    let mut by_reason = vec![0.0; UNPROVEN.len()];
    let mut refusals = Vec::new();
    for (node, before) in mesh.nodes.iter().zip(&intruder.baseline) {
        let now = unproven_refusals(node)?;
        let delta: Vec<f64> = now.iter().zip(before).map(|(n, b)| n - b).collect();
        for (sum, d) in by_reason.iter_mut().zip(&delta) {
            *sum += d;
        }
        refusals.push((node.name.clone(), delta.iter().sum()));
    }
    let view = IntruderView {
        peer_id: intruder.peer_id.clone(),
        sent: truth.union(&fabricated).copied().collect(),
        fabricated,
        merged,
        repair_bytes_in: cluster::metric(&metrics, "telemesh_mesh_bytes_total{kind=\"repair\",direction=\"in\"}"),
        max_peers: intruder.max_peers,
        listed_by: intruder.listed_by.clone(),
        refusals,
    };
    Ok(IntruderReport {
        peer_id: view.peer_id.clone(),
        sent: view.sent.len(),
        fabricated: view.fabricated.len(),
        held: view.merged.len(),
        refusals: UNPROVEN.iter().copied().zip(by_reason).collect(),
        max_peers: view.max_peers,
        listed_by: view.listed_by.clone(),
        verdict: check::check_intruder(&view, views),
    })
}

fn progress_bar(opts: &Options) -> ProgressBar {
    if !opts.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(opts.duration.as_secs());
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// The report a person reads at the end.
pub fn render(opts: &Options, outcome: &Outcome) -> String {
    let mut out = String::new();
    let v = &outcome.verdict;
    let _ = writeln!(out, "per node");
    let _ = writeln!(out, "  node  peer id            received  after repair  repair bytes in  converged");
    for (n, counts) in outcome.nodes.iter().zip(&v.nodes) {
        let short = n.peer_id.get(n.peer_id.len().saturating_sub(8)..).unwrap_or(&n.peer_id);
        let converged = n.converged_after.map_or("-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "  {:<4}  …{:<16} {:>9}  {:>12}  {:>15}  {:>9}",
            n.name, short, counts.received, counts.merged, n.repair_bytes_in as u64, converged
        );
    }
    let _ = writeln!(out, "  (converged: from the last datagram sent until the node listed its final windows; windows seal 5 s after a stream goes quiet)");
    let _ = writeln!(out, "mesh-wide");
    let _ = writeln!(out, "  records sent (ground truth)      {:>9}", v.sent);
    let _ = writeln!(out, "  heard by at least one site       {:>9}", v.heard);
    let _ = writeln!(out, "  in every node's merged history   {:>9}", v.in_every);
    let _ = writeln!(out, "  lost by every site               {:>9}", v.lost_everywhere);
    let l = &outcome.window_latencies;
    if !l.is_empty() {
        let at = |p: f64| l[((l.len() - 1) as f64 * p).round() as usize].as_secs_f64();
        let _ = writeln!(
            out,
            "  {} window(s) ended while the sensors sent; from a window's end until every node listed the same root: median {:.1} s, p99 {:.1} s",
            l.len(),
            at(0.5),
            at(0.99)
        );
    }
    if let Some(p) = &outcome.partition {
        let secs = |d: Option<Duration>| d.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()));
        let _ = writeln!(
            out,
            "partition: node {} cut at {:.0} s, healed at {:.0} s; alone after {}; reconnected {} after healing; \
             {} window(s) differed at the heal, all nodes agreed on them {} after healing",
            p.node,
            p.cut_at.as_secs_f64(),
            p.healed_at.as_secs_f64(),
            secs(p.alone_after),
            secs(p.reconnected_after),
            p.differing_at_heal,
            secs(p.converged_after)
        );
    }
    if let Some(i) = &outcome.intruder {
        let v = &i.verdict;
        let short = i.peer_id.get(i.peer_id.len().saturating_sub(8)..).unwrap_or(&i.peer_id);
        let refusals: Vec<String> = i.refusals.iter().map(|(r, n)| format!("{r} {n:.0}")).collect();
        let _ = writeln!(out, "uninvited node …{short} (--open, --bootstrap node a, same mesh name, no invitation)");
        let _ = writeln!(
            out,
            "  sent to it directly: {} records, {} of them fabricated for the sensors' device ids; \
             it holds {}, {} from the mesh",
            i.sent, i.fabricated, i.held, v.from_mesh
        );
        let _ = writeln!(
            out,
            "  fabricated records in the members' merged histories: {}; members' refusals since it started: {}",
            v.fabricated_in_members,
            refusals.join(", ")
        );
        let _ = writeln!(
            out,
            "  most peers it had at a poll: {}; members that listed it in /v1/peers: {}",
            i.max_peers,
            if i.listed_by.is_empty() { "none".to_owned() } else { Vec::from_iter(i.listed_by.clone()).join(", ") }
        );
    }
    if let Some(p) = outcome.partition.as_ref().filter(|p| p.alone_after.is_none()) {
        let _ = writeln!(out, "FAILED: node {} kept its peers through the cut: the partition did not isolate it", p.node);
    }
    if !outcome.settled {
        let _ = writeln!(
            out,
            "FAILED: the nodes did not list the same windows within {:?} after the sensors stopped",
            opts.settle_timeout
        );
    }
    for p in &v.problems {
        let _ = writeln!(out, "FAILED: {p}");
    }
    if let Some(i) = &outcome.intruder {
        for p in &i.verdict.problems {
            let _ = writeln!(out, "FAILED: {p}");
        }
    }
    if outcome.ok() {
        let _ = writeln!(
            out,
            "OK: every node's merged history is byte-identical and holds every record some site received."
        );
        if outcome.intruder.is_some() {
            let _ = writeln!(
                out,
                "OK: the uninvited node was kept out: no peer, no member listed it, nothing of its in any member's \
                 history, nothing of the mesh in its own."
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::window::SPAN_NS;

    fn roots(entries: &[(u64, &str)]) -> Roots {
        entries.iter().map(|(start, v)| (("iotstream".to_owned(), 1001, *start), (*v).to_owned())).collect()
    }

    #[test]
    fn a_window_counts_as_agreed_from_the_last_time_all_nodes_came_to_list_it_alike() {
        let mut w = Watch::new(2);
        let now = Instant::now();
        // Window 0: both agree at 70 s, differ at 71 s, agree again from 72 s.
        // Window SPAN: only one node lists it.
        w.update(now, 70 * 1_000_000_000, vec![roots(&[(0, "r")]), roots(&[(0, "r")])]);
        w.update(now, 71 * 1_000_000_000, vec![roots(&[(0, "r")]), roots(&[(0, "x")])]);
        w.update(now, 72 * 1_000_000_000, vec![roots(&[(0, "r"), (SPAN_NS, "s")]), roots(&[(0, "r")])]);
        w.update(now, 73 * 1_000_000_000, vec![roots(&[(0, "r"), (SPAN_NS, "s")]), roots(&[(0, "r")])]);
        assert_eq!(w.window_latencies(u64::MAX), [Duration::from_secs(12)]);
        assert!(w.window_latencies(SPAN_NS - 1).is_empty(), "window 0 ends at 60 s");
        assert!(!w.agree());
        assert_eq!(w.differing_before(2 * SPAN_NS), 1);
    }
}
