//! Several nodes in one process on loopback, each hearing the same simulated sensors
//! through its own seeded 20% loss: after the mesh is quiet every node answers with the
//! same bytes — the union of what any node heard, with who heard each record.

mod common;

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

const DEVICES: [u16; 4] = [101, 102, 103, 104];

/// A node of a closed mesh: the first creates it (and holds the owner key), the others join
/// `owner`'s with an invitation.
fn config(dir: &Path, owner: Option<&Node>, mesh: &str) -> Config {
    let config = Config { sync_interval: Duration::from_secs(1), mesh: mesh.to_owned(), ..common::config(dir, TimestampUnit::Ms) };
    match owner {
        Some(owner) => common::joining(config, owner),
        None => config,
    }
}

fn status(node: &Node) -> serde_json::Value {
    common::get_json(&format!("{}/v1/status", node.url()))
}

use common::bootstrap_addr;

fn peer_id(node: &Node) -> String {
    let addr = bootstrap_addr(node);
    addr.rsplit('/').next().expect("peer id").to_owned()
}

/// Sensors: 4 IoTStream devices, 1 s apart in device time, ending now; every device's
/// seq wraps 65535 → 0 and reboots (INIT, seq 0) at packet 200.
fn sensors(dir: &Path, count: u64, end_ms: u64, seed: u64) -> Vec<sensor::TruthRecord> {
    let config = sensor::Config {
        dialect: Dialect::Iotstream,
        devices: DEVICES.to_vec(),
        count: Some(count),
        start_seq: Some(65_450),
        reboot_after: Some(200),
        seed: Some(seed),
        start_time_ms: Some(end_ms - count * 1000),
        dry_run: true,
        truth: Some(dir.join(format!("truth-{seed}.ndjson"))),
        ..sensor::Config::default()
    };
    sensor::run(&config, &AtomicBool::new(false)).expect("simulator runs");
    sensor::read_truth(config.truth.as_deref().expect("path")).expect("truth")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// (device, device time ns, seq) → the nodes that heard it.
type Heard = BTreeMap<(u32, u64, u64), BTreeSet<String>>;

/// Sends every datagram to each node through independent `loss`; returns who heard what.
fn feed(nodes: &[(&Node, String)], truth: &[sensor::TruthRecord], loss: f64, seed: u64, heard: &mut Heard) {
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
        common::send_fast(node.iotstream.expect("on"), sent.into_iter());
    }
}

fn merged(node: &Node, device: u16) -> String {
    common::get_text(&format!("{}/v1/streams/iotstream/{device}/records?limit=100000", node.url()))
}

/// Waits until every node answers with the same bytes for every device and the count
/// matches `expected`; returns how long it took.
fn wait_converged(nodes: &[&Node], expected: usize, timeout: Duration) -> Duration {
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
fn assert_union(node: &Node, heard: &Heard) {
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

#[test]
fn three_lossy_sites_converge_then_a_late_node_and_a_restarted_node_catch_up() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "test")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "test")).expect("b starts");
    let c = Node::start(config(dirs[2].path(), Some(&a), "test")).expect("c starts");
    let ids = [peer_id(&a), peer_id(&b), peer_id(&c)];

    // 300 packets per device, 20% independent loss at each site.
    let truth = sensors(dirs[0].path(), 300, now_ms() - 60_000, 1);
    let mut heard = Heard::new();
    feed(&[(&a, ids[0].clone()), (&b, ids[1].clone()), (&c, ids[2].clone())], &truth, 0.2, 1, &mut heard);
    let sent = truth.len();
    assert!(heard.len() < sent, "some records were lost by every site");
    assert!(heard.len() > sent * 9 / 10);
    let took = wait_converged(&[&a, &b, &c], heard.len(), Duration::from_secs(60));
    eprintln!("3 nodes converged {took:?} after the last datagram");
    for n in [&a, &b, &c] {
        assert_union(n, &heard);
    }
    let metrics = common::get_text(&format!("{}/metrics", a.url()));
    assert!(metrics.contains("telemesh_mesh_records_repaired_total"), "{metrics}");
    // Windows are repaired from the indexes that came with the announcements.
    let from_gossip: f64 =
        [&a, &b, &c].iter().map(|n| common::metric(&common::get_text(&format!("{}/metrics", n.url())), "telemesh_mesh_windows_from_gossip_total")).sum();
    assert!(from_gossip > 0.0, "no window repaired from an announced index");

    // A fourth node, started after the data, knowing only its invitation.
    let d = Node::start(config(dirs[3].path(), Some(&a), "test")).expect("d starts");
    wait_converged(&[&a, &d], heard.len(), Duration::from_secs(60));
    assert_union(&d, &heard);

    // C stops; more data arrives at A and B; C restarts on its store and catches up.
    let c_dir = dirs[2].path().to_owned();
    c.stop().expect("c stops");
    let more = sensors(dirs[0].path(), 120, now_ms(), 2);
    feed(&[(&a, ids[0].clone()), (&b, ids[1].clone())], &more, 0.2, 2, &mut heard);
    // With a new invitation in its config, as an operator who kept `--join` would have it:
    // it is a member already, so the token is not needed (nor spent).
    let c = Node::start(config(&c_dir, Some(&a), "test")).expect("c restarts");
    assert_eq!(status(&c)["membership"]["member"], true);
    assert_eq!(peer_id(&c), ids[2], "the peer id survives a restart");
    wait_converged(&[&a, &b, &c, &d], heard.len(), Duration::from_secs(60));
    assert_union(&c, &heard);

    let peers = common::get_json(&format!("{}/v1/peers", a.url()));
    assert!(peers["peers"].as_array().expect("peers").len() >= 3, "{peers}");
    for n in [a, b, c, d] {
        n.stop().expect("stops");
    }
}

/// Two closed meshes, each with its own owner, B bootstrapping through A: with different
/// names, and with the same name (where only the owners tell them apart).
#[test]
fn two_meshes_with_different_owners_on_one_machine_exchange_nothing() {
    for (blue, green) in [("blue", "green"), ("test", "test")] {
        let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let a = Node::start(config(da.path(), None, blue)).expect("a starts");
        let boot = bootstrap_addr(&a);
        // B creates a mesh of its own (its own owner key) and dials A.
        let b = Node::start(Config {
            bootstrap: vec![boot.parse().expect("multiaddr")],
            owner_key: Some(db.path().join("owner.key")),
            ..config(db.path(), None, green)
        })
        .expect("b starts");
        assert_ne!(status(&a)["membership"]["owner"], status(&b)["membership"]["owner"]);
        let truth = sensors(da.path(), 150, now_ms() - 60_000, 3);
        let mut heard = Heard::new();
        feed(&[(&a, peer_id(&a))], &truth, 0.0, 3, &mut heard);
        // Long enough for a's windows to seal (quiet streams after 5 s) and for several
        // summary exchanges, had they been peers.
        std::thread::sleep(Duration::from_secs(9));
        for d in DEVICES {
            let page: serde_json::Value = serde_json::from_str(&merged(&b, d)).expect("json");
            assert_eq!(page["count"], 0, "mesh {green} got data from mesh {blue}");
        }
        assert_eq!(status(&b)["peers"], 0);
        assert_eq!(status(&a)["peers"], 0);
        if blue == green {
            // Same name: they connected, and the gate kept every protocol but trust off it.
            let refused = common::metric(
                &common::get_text(&format!("{}/metrics", a.url())),
                "telemesh_trust_refusals_total{reason=\"unproven_connection\"}",
            );
            assert!(refused >= 1.0, "A never saw B's connection");
        }
        a.stop().expect("stops");
        b.stop().expect("stops");
    }
}
