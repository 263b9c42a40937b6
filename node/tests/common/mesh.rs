//! Helpers for tests of several nodes on loopback: simulated sensors heard through seeded
//! loss, who heard what, waiting for the merged histories to agree.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_node::{Config, Node};
use telemesh_proto::record::{Record, TimestampUnit};
use telemesh_proto::wire::Dialect;
use telemesh_tools::sensor;

pub const DEVICES: [u16; 4] = [101, 102, 103, 104];

/// A node of a closed mesh: the first creates it (and holds the owner key), the others join
/// `owner`'s with an invitation.
pub fn config(dir: &Path, owner: Option<&Node>, mesh: &str) -> Config {
    let config = Config { sync_interval: Duration::from_secs(1), mesh: mesh.to_owned(), ..super::config(dir, TimestampUnit::Ms) };
    match owner {
        Some(owner) => super::joining(config, owner),
        None => config,
    }
}

/// Waits until every node is connected to all the others, and a second more for their
/// gossip subscriptions: announcements reach connected peers only.
pub fn wait_full_mesh(nodes: &[&Node]) {
    let peers = |n: &Node| super::metric(&super::get_text(&format!("{}/metrics", n.url())), "telemesh_mesh_peers");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !nodes.iter().all(|n| peers(n) >= (nodes.len() - 1) as f64) {
        assert!(std::time::Instant::now() < deadline, "the {} nodes did not connect", nodes.len());
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
}

pub fn status(node: &Node) -> serde_json::Value {
    super::get_json(&format!("{}/v1/status", node.url()))
}

use super::bootstrap_addr;

pub fn peer_id(node: &Node) -> String {
    let addr = bootstrap_addr(node);
    addr.rsplit('/').next().expect("peer id").to_owned()
}

/// Sensors: 4 IoTStream devices, 1 s apart in device time, ending now; every device's
/// seq wraps 65535 → 0 and reboots (INIT, seq 0) at packet 200.
pub fn sensors(dir: &Path, count: u64, end_ms: u64, seed: u64) -> Vec<sensor::TruthRecord> {
    simulate(sensor::Config { start_seq: Some(65_450), reboot_after: Some(200), ..quiet_day(dir, count, end_ms, seed) })
}

/// The same devices from seq 0 without a reboot: what a site hears on a quiet day.
pub fn quiet_sensors(dir: &Path, count: u64, end_ms: u64, seed: u64) -> Vec<sensor::TruthRecord> {
    simulate(quiet_day(dir, count, end_ms, seed))
}

/// [`DEVICES`], `count` packets each 1 s apart in device time ending at `end_ms`, with
/// the truth log in `dir`.
fn quiet_day(dir: &Path, count: u64, end_ms: u64, seed: u64) -> sensor::Config {
    sensor::Config {
        dialect: Dialect::Iotstream,
        devices: DEVICES.to_vec(),
        count: Some(count),
        seed: Some(seed),
        start_time_ms: Some(end_ms - count * 1000),
        dry_run: true,
        truth: Some(dir.join(format!("truth-{seed}.ndjson"))),
        ..sensor::Config::default()
    }
}

/// Runs the simulator without sending, and reads back its truth log.
fn simulate(config: sensor::Config) -> Vec<sensor::TruthRecord> {
    sensor::run(&config, &AtomicBool::new(false)).expect("simulator runs");
    sensor::read_truth(config.truth.as_deref().expect("path")).expect("truth")
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// (device, device time ns, seq) → the nodes that heard it.
pub type Heard = BTreeMap<(u32, u64, u64), BTreeSet<String>>;

/// Sends every datagram to each node through independent `loss`; returns who heard what.
pub fn feed(nodes: &[(&Node, String)], truth: &[sensor::TruthRecord], loss: f64, seed: u64, heard: &mut Heard) {
    for (i, (node, id)) in nodes.iter().enumerate() {
        let mut rng = ChaCha8Rng::seed_from_u64(seed * 100 + i as u64);
        let mut sent = Vec::new();
        for t in truth {
            if rng.gen_bool(loss) {
                continue;
            }
            let r = Record::from_datagram(t.dialect, &t.datagram, t.sent_at_ns, TimestampUnit::Ms).expect("valid");
            heard.entry((r.stream.device, r.device_time_ns, r.seq)).or_default().insert(id.clone());
            sent.push(t.datagram.as_slice());
        }
        super::send_fast(node.iotstream.expect("on"), sent.into_iter());
    }
}

pub fn merged(node: &Node, device: u16) -> String {
    super::get_text(&format!("{}/v1/streams/iotstream/{device}/records?limit=100000", node.url()))
}

/// Waits until every node answers with the same bytes for every device and the count
/// matches `expected`; returns how long it took.
pub fn wait_converged(nodes: &[&Node], expected: usize, timeout: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let answers: Vec<Vec<String>> = nodes.iter().map(|n| DEVICES.iter().map(|d| merged(n, *d)).collect()).collect();
        let count: usize = answers[0]
            .iter()
            .map(|a| serde_json::from_str::<serde_json::Value>(a).expect("json")["count"].as_u64().expect("count") as usize)
            .sum();
        if count == expected && answers.iter().all(|a| *a == answers[0]) {
            return start.elapsed();
        }
        if start.elapsed() > timeout {
            let counts: Vec<usize> = answers
                .iter()
                .map(|n| n.iter().map(|a| serde_json::from_str::<serde_json::Value>(a).expect("json")["count"].as_u64().unwrap_or(0) as usize).sum())
                .collect();
            let first_difference = (0..DEVICES.len()).find_map(|d| {
                let recs = |n: usize| serde_json::from_str::<serde_json::Value>(&answers[n][d]).expect("json")["records"].clone();
                let base = recs(0);
                (1..answers.len()).find_map(|n| {
                    let other = recs(n);
                    let (x, y) = (base.as_array()?, other.as_array()?);
                    x.iter().zip(y).find(|(p, q)| p != q).map(|(p, q)| format!("device {}: node 0 has {p}, node {n} has {q}", DEVICES[d]))
                })
            });
            panic!("no convergence in {timeout:?}: records per node {counts:?}, expected {expected}; {first_difference:?}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The merged history equals the union, with the right `heard_by` on every record.
pub fn assert_union(node: &Node, heard: &Heard) {
    let mut got = Heard::new();
    for d in DEVICES {
        let page: serde_json::Value = serde_json::from_str(&merged(node, d)).expect("json");
        for r in page["records"].as_array().expect("records") {
            assert!(r.get("arrival_ns").is_none(), "the merged view carries no per-node fields");
            let by: BTreeSet<String> = r["heard_by"].as_array().expect("heard_by").iter().map(|x| x.as_str().expect("id").to_owned()).collect();
            got.insert((u32::from(d), r["device_time_ns"].as_u64().expect("t"), r["seq"].as_u64().expect("seq")), by);
        }
    }
    assert_eq!(got.len(), heard.len(), "record count");
    for (k, want) in heard {
        assert_eq!(got.get(k), Some(want), "record {k:?}");
    }
}

