//! Several nodes in one process on loopback, each hearing the same simulated sensors
//! through its own seeded 20% loss: after the mesh is quiet every node answers with the
//! same bytes — the union of what any node heard, with who heard each record.

mod common;

use std::time::Duration;

use telemesh_node::{Config, Node};

use common::bootstrap_addr;
use common::mesh::*;

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

/// Three sites hear device ids that two (or three) devices share, each site one device's
/// version of every record — the same (time, seq), other readings. Every version is a
/// record of the merged history: every node ends with all of them, each version with the
/// sites that heard it.
#[test]
fn every_version_of_a_shared_device_id_reaches_every_node() {
    use std::collections::{BTreeMap, BTreeSet};
    use telemesh_proto::record::{Record, TimestampUnit};
    use telemesh_proto::wire::iotstream;

    /// (device, device time, seq, readings) → the sites that heard that version.
    type Versions = BTreeMap<(u64, u64, u64, String), BTreeSet<String>>;
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "conflicts")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "conflicts")).expect("b starts");
    let c = Node::start(config(dirs[2].path(), Some(&a), "conflicts")).expect("c starts");
    let ids = [peer_id(&a), peer_id(&b), peer_id(&c)];
    let truth = sensors(dirs[0].path(), 100, now_ms() - 120_000, 3);
    // Site i hears version i (readings + 1000 × i): three versions of DEVICES[0], two of
    // DEVICES[1] (not heard at c). INIT and HEARTBEAT carry no readings: one version.
    let version = |datagram: &[u8], v: f32| {
        let r = iotstream::Repr::decode(datagram).expect("valid");
        let readings: Vec<f32> = r.readings().iter().map(|x| x + 1000.0 * v).collect();
        iotstream::Repr::new(r.msg_type, r.device, r.seq, r.timestamp, &readings).expect("valid").to_bytes()
    };
    let text = |readings: Vec<String>| readings.join(" ");
    let mut want = Versions::new();
    for (site, node) in [&a, &b, &c].into_iter().enumerate() {
        let mut sent = Vec::new();
        for t in truth.iter().filter(|t| t.device == DEVICES[0] || (t.device == DEVICES[1] && site < 2)) {
            let bytes = version(&t.datagram, site as f32);
            let r = Record::from_datagram(t.dialect, &bytes, t.sent_at_ns, TimestampUnit::Ms).expect("valid");
            let readings = r.readings.labelled().into_iter().map(|(_, v)| (v.as_f64() as f32).to_string()).collect();
            want.entry((u64::from(t.device), r.device_time_ns, r.seq, text(readings))).or_default().insert(ids[site].clone());
            sent.push(bytes);
        }
        common::send_fast(node.iotstream.expect("on"), sent.iter().map(Vec::as_slice));
    }
    let versions = |node: &Node| -> Versions {
        let mut got = Versions::new();
        for d in &DEVICES[..2] {
            let page: serde_json::Value = serde_json::from_str(&merged(node, *d)).expect("json");
            for r in page["records"].as_array().expect("records") {
                let readings =
                    r["readings"].as_array().expect("readings").iter().map(|x| (x["value"].as_f64().expect("value") as f32).to_string()).collect();
                let by = r["heard_by"].as_array().expect("heard_by").iter().map(|x| x.as_str().expect("id").to_owned()).collect();
                let t = r["device_time_ns"].as_u64().expect("t");
                got.insert((u64::from(*d), t, r["seq"].as_u64().expect("seq"), text(readings)), by);
            }
        }
        got
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = [&a, &b, &c].map(versions);
        if got.iter().all(|g| *g == want) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "versions per node {:?}, want {}",
            got.iter().map(BTreeMap::len).collect::<Vec<_>>(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // Each node repaired other versions of records it held, and counted them.
    for n in [&a, &b, &c] {
        let m = common::get_text(&format!("{}/metrics", n.url()));
        assert!(common::metric(&m, "telemesh_mesh_conflicts_repaired_total") > 0.0, "{m}");
    }
    for n in [a, b, c] {
        n.stop().expect("stops");
    }
}

/// Who heard which record travels only in the announcements of the node it is about: with
/// no summary exchange (its interval is an hour), a site that repairs a window before its
/// own receipts of it are written (its flush is slow) still announces them once they are,
/// and a third site that heard nothing ends with every record's `heard_by` right.
#[test]
fn each_sites_receipts_reach_every_node_without_the_summary_exchange() {
    receipts_reach_every_node(3);
}

/// The same with one coordinator per window: two of the three nodes only offer their
/// receipts to it, and every row reaches them in its announcements alone.
#[test]
fn each_sites_receipts_reach_every_node_through_one_coordinator_per_window() {
    receipts_reach_every_node(1);
}

fn receipts_reach_every_node(coordinators: usize) {
    use std::collections::{BTreeMap, BTreeSet};
    use telemesh_proto::record::{Record, TimestampUnit};

    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let quiet = |c: Config| Config { sync_interval: Duration::from_secs(3600), coordinators, ..c };
    let a = Node::start(quiet(config(dirs[0].path(), None, "receipts"))).expect("a starts");
    let b = Node::start(Config { flush_interval: Duration::from_secs(5), ..quiet(config(dirs[1].path(), Some(&a), "receipts")) })
        .expect("b starts");
    let c = Node::start(quiet(config(dirs[2].path(), Some(&a), "receipts"))).expect("c starts");
    let ids = [peer_id(&a), peer_id(&b)];
    wait_full_mesh(&[&a, &b, &c]);
    // The first device: b hears half of what a hears, so b's own receipts add no record
    // to what it repaired from a. The others: every third record only at a, every third
    // only at b, the rest at both.
    let truth = sensors(dirs[0].path(), 90, now_ms() - 120_000, 7);
    let mut want: BTreeMap<(u64, u64, u64), BTreeSet<String>> = BTreeMap::new();
    let mut to: [Vec<&[u8]>; 2] = [Vec::new(), Vec::new()];
    for (i, t) in truth.iter().enumerate() {
        let at = |s: usize| if t.device == DEVICES[0] { s == 0 || i % 2 == 0 } else { i % 3 == 2 || i % 3 == s };
        for site in [0, 1].into_iter().filter(|s| at(*s)) {
            to[site].push(&t.datagram);
            let r = Record::from_datagram(t.dialect, &t.datagram, t.sent_at_ns, TimestampUnit::Ms).expect("valid");
            want.entry((u64::from(t.device), r.device_time_ns, r.seq)).or_default().insert(ids[site].clone());
        }
    }
    common::send_fast(a.iotstream.expect("on"), to[0].iter().copied());
    common::send_fast(b.iotstream.expect("on"), to[1].iter().copied());

    let heard = |node: &Node| {
        let mut got = BTreeMap::new();
        for d in DEVICES {
            let page: serde_json::Value = serde_json::from_str(&merged(node, d)).expect("json");
            for r in page["records"].as_array().into_iter().flatten() {
                let by: BTreeSet<String> =
                    r["heard_by"].as_array().expect("heard_by").iter().map(|x| x.as_str().expect("id").to_owned()).collect();
                got.insert((u64::from(d), r["device_time_ns"].as_u64().expect("t"), r["seq"].as_u64().expect("seq")), by);
            }
        }
        got
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = [&a, &b, &c].map(heard);
        if got.iter().all(|g| *g == want) {
            break;
        }
        let wrong: Vec<usize> = got.iter().map(|g| want.iter().filter(|(k, v)| g.get(*k) != Some(*v)).count()).collect();
        assert!(std::time::Instant::now() < deadline, "records whose heard_by is wrong, per node: {wrong:?} of {}", want.len());
        std::thread::sleep(Duration::from_millis(250));
    }
    // With fewer coordinators than members, offers went to the coordinators (each node
    // coordinates some windows and not others); with as many, everyone announced to
    // everyone and nothing was offered.
    let offered = |n: &Node| common::metric(&common::get_text(&format!("{}/metrics", n.url())), "telemesh_mesh_bytes_total{kind=\"offer\",direction=\"out\"}");
    if coordinators < 3 {
        assert!([&a, &b].iter().all(|n| offered(n) > 0.0), "the sites offered their receipts");
    } else {
        assert!([&a, &b, &c].iter().all(|n| offered(n) == 0.0), "three members, three coordinators: no offers");
    }
    for n in [a, b, c] {
        n.stop().expect("stops");
    }
}

/// More windows seal at one moment than a tick indexes (1,024): the rest are announced with
/// their index at the next ticks, so a peer repairs every one from the announcements and
/// never has to ask for an index.
#[test]
fn thousands_of_windows_sealed_at_once_are_all_repaired_from_their_announcements() {
    use telemesh_proto::wire::iotstream::{MsgType, Repr};

    const STREAMS: u16 = 1500;
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "many")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "many")).expect("b starts");
    let metric = |n: &Node, name: &str| common::metric(&common::get_text(&format!("{}/metrics", n.url())), name);
    wait_full_mesh(&[&a, &b]);
    // One record from each of 1,500 devices: their windows seal together when the streams
    // go quiet.
    let datagrams: Vec<Vec<u8>> =
        (1..=STREAMS).map(|d| Repr::new(MsgType::Data, d, 1, 5_000, &[f32::from(d)]).expect("valid").to_bytes()).collect();
    common::send_fast(a.iotstream.expect("on"), datagrams.iter().map(Vec::as_slice));
    let sent = std::time::Instant::now();
    let deadline = sent + Duration::from_secs(90);
    while metric(&b, "telemesh_mesh_windows_repaired_total") < f64::from(STREAMS) {
        assert!(
            std::time::Instant::now() < deadline,
            "b repaired {} of {STREAMS} windows",
            metric(&b, "telemesh_mesh_windows_repaired_total")
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    eprintln!("b repaired {STREAMS} windows {:?} after the datagrams were sent", sent.elapsed());
    assert_eq!(metric(&b, "telemesh_mesh_windows_from_gossip_total"), f64::from(STREAMS), "some windows needed an index request");
    for n in [a, b] {
        n.stop().expect("stops");
    }
}

/// A site takes in a flood of new device ids (a record each): another node takes their
/// windows to repair at most at its budget for that peer (here 40 at once, then 20 a
/// second), counts the rest as deferred, and finds them again in the summary exchange until
/// it holds every one (`docs/protocol.md`, "Repair").
#[test]
fn a_flood_of_new_streams_reaches_another_node_at_its_budget_and_whole_in_the_end() {
    use telemesh_proto::budget::Budget;
    use telemesh_proto::wire::iotstream::{MsgType, Repr};

    const STREAMS: u16 = 200;
    let (burst, rate) = (40.0, 20.0);
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "flooded")).expect("a starts");
    let budget = Budget { rate, burst: burst as u32 };
    let b = Node::start(Config { new_streams_per_peer: budget, ..config(dirs[1].path(), Some(&a), "flooded") }).expect("b starts");
    let metric = |n: &Node, name: &str| common::metric(&common::get_text(&format!("{}/metrics", n.url())), name);
    wait_full_mesh(&[&a, &b]);
    let datagrams: Vec<Vec<u8>> =
        (1..=STREAMS).map(|d| Repr::new(MsgType::Data, d, 1, 5_000, &[f32::from(d)]).expect("valid").to_bytes()).collect();
    let sent = std::time::Instant::now();
    common::send_fast(a.iotstream.expect("on"), datagrams.iter().map(Vec::as_slice));
    let deadline = sent + Duration::from_secs(90);
    loop {
        // B's budget starts full when it first takes one of them, after `sent`.
        let bound = burst + rate * sent.elapsed().as_secs_f64() + 1.0;
        let repaired = metric(&b, "telemesh_mesh_windows_repaired_total");
        assert!(repaired <= bound, "b repaired {repaired} windows, over its budget of {bound:.0} by now");
        if repaired >= f64::from(STREAMS) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "b repaired {repaired} of {STREAMS} windows");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("b repaired {STREAMS} new streams' windows {:?} after the datagrams were sent", sent.elapsed());
    let deferred = metric(&b, "telemesh_mesh_rejects_total{reason=\"new_stream_deferred\"}");
    assert!(deferred > 0.0, "the flood was over the budget: some windows were deferred");
    for n in [a, b] {
        n.stop().expect("stops");
    }
}

/// A window's only coordinator is down: the sites' offers to it fail, and they announce
/// those windows to everyone instead — no summary exchange needed (its interval is an
/// hour) for the two live sites to hold each other's records with the right `heard_by`.
#[test]
fn windows_whose_coordinator_is_down_are_announced_to_everyone() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let quiet = |c: Config| Config { sync_interval: Duration::from_secs(3600), coordinators: 1, ..c };
    let a = Node::start(quiet(config(dirs[0].path(), None, "down"))).expect("a starts");
    let b = Node::start(quiet(config(dirs[1].path(), Some(&a), "down"))).expect("b starts");
    let c = Node::start(quiet(config(dirs[2].path(), Some(&a), "down"))).expect("c starts");
    wait_full_mesh(&[&a, &b, &c]);
    let ids = [peer_id(&a), peer_id(&b), peer_id(&c)];
    c.stop().expect("c stops");

    // 5 minutes of 4 devices: 20-odd windows, about a third of them coordinated by c.
    let truth = sensors(dirs[0].path(), 300, now_ms() - 360_000, 9);
    let members = telemesh_proto::mesh::Members::new(ids.to_vec());
    let by_c = truth
        .iter()
        .filter_map(|t| {
            let r = telemesh_proto::record::Record::from_datagram(t.dialect, &t.datagram, t.sent_at_ns, telemesh_proto::record::TimestampUnit::Ms).ok()?;
            let w = telemesh_proto::mesh::WindowId { stream: r.stream, start: telemesh_proto::window::start(r.device_time_ns) };
            Some(w).filter(|w| members.coordinators(*w, 1).first().and_then(|i| members.name(*i)) == Some(ids[2].as_str()))
        })
        .collect::<std::collections::BTreeSet<_>>();
    assert!(!by_c.is_empty(), "some window is coordinated by c");
    let mut heard = Heard::new();
    let halves: [Vec<_>; 2] = [0, 1].map(|s| truth.iter().enumerate().filter(|(i, _)| i % 2 == s).map(|(_, t)| t.clone()).collect());
    feed(&[(&a, ids[0].clone())], &halves[0], 0.0, 1, &mut heard);
    feed(&[(&b, ids[1].clone())], &halves[1], 0.0, 2, &mut heard);
    wait_converged(&[&a, &b], heard.len(), Duration::from_secs(60));
    for n in [&a, &b] {
        assert_union(n, &heard);
    }
    let failed = |n: &Node| common::metric(&common::get_text(&format!("{}/metrics", n.url())), "telemesh_mesh_rejects_total{reason=\"offer_failed\"}");
    assert!(failed(&a) + failed(&b) > 0.0, "offers to c failed and were counted");
    for n in [a, b] {
        n.stop().expect("stops");
    }
}

/// `GET /v1/devices` lists every device of the mesh on every node: one heard only at the
/// other site is there, with that site and no counts of this node's own; filters and
/// pages by cursor; `telemesh devices` prints them all.
#[test]
fn every_node_lists_every_device_of_the_mesh() {
    use telemesh_proto::wire::iotstream::{MsgType, Repr};
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "test")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "test")).expect("b starts");
    wait_full_mesh(&[&a, &b]);
    let (id_a, id_b) = (peer_id(&a), peer_id(&b));
    // Ten records of device 7001 at A only, and of 7002 at B only, a minute ago (their
    // window is over, so it is sealed once the streams are quiet).
    // A second into a minute, so each device's ten records fall in one window.
    let start = (now_ms() - 70_000) / 60_000 * 60_000 + 1_000;
    let datagrams = |device: u16| -> Vec<Vec<u8>> {
        (0..10u16)
            .map(|i| {
                let t = (start + u64::from(i) * 1000) as u32;
                Repr::new(MsgType::Data, device, i, t, &[f32::from(i)]).expect("valid").to_bytes()
            })
            .collect()
    };
    // A live tail on B of the device only A hears: its records reach it by repair.
    let b_url = b.url();
    let tail = std::thread::spawn(move || {
        use telemesh_node::api::client;
        let q = client::Query {
            dialect: telemesh_proto::wire::Dialect::Iotstream,
            device: "7001",
            from: None,
            to: None,
            limit: Some(10),
            format: client::OutputFormat::Ndjson,
            view: client::ViewArg::Merged,
            page: 1000,
            last: None,
            follow: true,
        };
        let mut out = Vec::new();
        client::query(&client::Api::new(&b_url, None), q, &mut out).expect("tail");
        String::from_utf8(out).expect("utf-8")
    });
    std::thread::sleep(Duration::from_millis(500));
    common::send(a.iotstream.expect("on"), &datagrams(7001));
    common::send(b.iotstream.expect("on"), &datagrams(7002));
    let listed = |node: &Node, query: &str| common::get_json(&format!("{}/v1/devices{query}", node.url()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let page = loop {
        let page = listed(&b, "");
        let records: Vec<u64> = page["devices"].as_array().expect("devices").iter().map(|d| d["records"].as_u64().expect("n")).collect();
        if records == [10, 10] {
            break page;
        }
        assert!(std::time::Instant::now() < deadline, "B does not list both devices sealed: {page}");
        std::thread::sleep(Duration::from_millis(250));
    };
    let tailed = tail.join().expect("tail thread");
    let seqs: Vec<u64> = tailed.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, (0..10).collect::<Vec<u64>>(), "{tailed}");
    let devices = page["devices"].as_array().expect("devices");
    let (remote, local) = (&devices[0], &devices[1]);
    assert_eq!((remote["device"].as_u64(), local["device"].as_u64()), (Some(7001), Some(7002)));
    assert!(remote["heard_here"].is_null() && remote["last_seen"].is_null(), "B never heard 7001: {remote}");
    assert_eq!(remote["sites"], serde_json::json!([id_a]));
    assert_eq!(local["heard_here"]["received"], 10);
    assert_eq!(local["sites"], serde_json::json!([id_b]));
    assert!(local["last_seen"].as_str().is_some_and(|t| t.ends_with('Z')), "{local}");
    let last = remote["last_device_time"].as_str().expect("time");
    assert_eq!(last, telemesh_node::api::export::rfc3339_ns((start + 9_000) * 1_000_000));

    // Filters, and pages chained by cursor.
    assert_eq!(listed(&b, "?dialect=tinytelemetry")["count"], 0);
    assert_eq!(listed(&b, "?stale=1h")["count"], 0);
    assert_eq!(listed(&b, "?stale=1ms")["count"], 2, "every device is stale by a millisecond");
    let first = listed(&b, "?limit=1");
    assert_eq!((first["truncated"].as_bool(), first["next_cursor"].as_str()), (Some(true), Some("iotstream:7001")));
    let second = listed(&b, "?limit=1&cursor=iotstream:7001");
    assert_eq!((second["devices"][0]["device"].as_u64(), second["truncated"].as_bool()), (Some(7002), Some(false)));

    // The windows behind them page the same way.
    let windows = |query: &str| common::get_json(&format!("{}/v1/windows{query}", b.url()));
    let first = windows("?limit=1");
    let cursor = first["next_cursor"].as_str().expect("cut").to_owned();
    assert!(cursor.starts_with("iotstream:7001:"), "{first}");
    let second = windows(&format!("?limit=1&cursor={cursor}"));
    assert_eq!((second["windows"][0]["device"].as_u64(), second["truncated"].as_bool()), (Some(7002), Some(false)));
    for bad in ["?cursor=7001", "?limit=1&limit=2", "?colour=red"] {
        match ureq::get(&format!("{}/v1/windows{bad}", b.url())).call() {
            Err(ureq::Error::Status(400, _)) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }

    let api = telemesh_node::api::client::Api::new(&b.url(), None);
    let mut out = Vec::new();
    telemesh_node::api::client::devices(&api, None, None, telemesh_node::api::client::ListFormat::Table, &mut out).expect("devices");
    let table = String::from_utf8(out).expect("utf-8");
    assert!(table.contains("iotstream:7001") && table.contains("iotstream:7002") && table.trim_end().ends_with("2 device(s)"), "{table}");
    for n in [a, b] {
        n.stop().expect("stops");
    }
}
