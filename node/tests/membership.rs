//! A closed mesh, as an attacker tries it: an uninvited node with a valid libp2p identity
//! that dials a member over QUIC, over TCP, or knows only another member (and would find
//! the rest through kademlia); and a member the owner removes while the mesh runs.
//!
//! The outsiders are complete `telemesh` nodes of an open mesh with the same mesh name —
//! everything `docs/protocol.md` publishes — that hear fabricated records for the members'
//! own device ids.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;

use common::mesh::*;

const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const TCP: &str = "/ip4/127.0.0.1/tcp/0";

/// A member: the first creates the mesh, the others join `owner`'s with an invitation.
fn member(dir: &Path, owner: Option<&Node>) -> Node {
    let config = Config {
        sync_interval: Duration::from_secs(1),
        mesh: "test".into(),
        listen: vec![QUIC.parse().expect("multiaddr"), TCP.parse().expect("multiaddr")],
        ..common::config(dir, TimestampUnit::Ms)
    };
    let config = match owner {
        Some(owner) => common::joining(config, owner),
        None => config,
    };
    Node::start(config).expect("member starts")
}

/// An uninvited node: open mesh, same name, dialling `boot`.
fn outsider(dir: &Path, boot: &str) -> Node {
    Node::start(Config {
        open: true,
        bootstrap: vec![boot.parse().expect("multiaddr")],
        sync_interval: Duration::from_secs(1),
        mesh: "test".into(),
        listen: vec![QUIC.parse().expect("multiaddr"), TCP.parse().expect("multiaddr")],
        ..common::config(dir, TimestampUnit::Ms)
    })
    .expect("outsider starts")
}

/// The node's overlay address over `transport` (`/quic-v1` or `/tcp/`), with its peer id.
fn address(node: &Node, transport: &str) -> String {
    common::bootstrap_addr(node);
    let status = common::get_json(&format!("{}/v1/status", node.url()));
    let listen = status["listen"].as_array().expect("listen");
    listen.iter().filter_map(|a| a.as_str()).find(|a| a.contains(transport)).expect("an address").to_owned()
}

fn status(node: &Node) -> serde_json::Value {
    common::get_json(&format!("{}/v1/status", node.url()))
}

fn peers(node: &Node) -> BTreeSet<String> {
    let v = common::get_json(&format!("{}/v1/peers", node.url()));
    v["peers"].as_array().expect("peers").iter().map(|p| p["peer_id"].as_str().expect("id").to_owned()).collect()
}

fn refusals(node: &Node, reason: &str) -> f64 {
    let text = common::get_text(&format!("{}/metrics", node.url()));
    common::metric(&text, &format!("telemesh_trust_refusals_total{{reason=\"{reason}\"}}"))
}

/// Every record of `node`'s merged history, with who heard it.
fn history(node: &Node) -> Heard {
    let mut got = Heard::new();
    for d in DEVICES {
        let page: serde_json::Value = serde_json::from_str(&merged(node, d)).expect("json");
        for r in page["records"].as_array().expect("records") {
            let by = r["heard_by"].as_array().expect("heard_by").iter().map(|x| x.as_str().expect("id").to_owned()).collect();
            got.insert((u32::from(d), r["device_time_ns"].as_u64().expect("t"), r["seq"].as_u64().expect("seq")), by);
        }
    }
    got
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

#[test]
fn an_uninvited_node_is_kept_out_over_quic_over_tcp_and_through_kademlia() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = member(dirs[0].path(), None);
    let b = member(dirs[1].path(), Some(&a));
    let ids = [peer_id(&a), peer_id(&b)];
    wait_for("b joins a", Duration::from_secs(20), || peers(&a).contains(&ids[1]));

    // The one that knows only b first: if b handed out routing entries, it would find a.
    // (b's own first connection, made before it was admitted, counts at a already.)
    let (a_before, b_before) = (refusals(&a, "unproven_connection"), refusals(&b, "unproven_connection"));
    let through_kad = outsider(dirs[4].path(), &address(&b, "/tcp/"));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(refusals(&a, "unproven_connection"), a_before, "the outsider found a through b");
    assert!(refusals(&b, "unproven_connection") > b_before, "the outsider never reached b");
    let over_quic = outsider(dirs[2].path(), &address(&a, "/quic-v1"));
    let over_tcp = outsider(dirs[3].path(), &address(&a, "/tcp/"));
    let outsiders = [&over_quic, &over_tcp, &through_kad];

    // The members hear the devices; each outsider hears fabricated records of the same
    // devices (other times and readings) and tries to get them into the members' history.
    let truth = sensors(dirs[0].path(), 120, now_ms() - 120_000, 7);
    let mut heard = Heard::new();
    feed(&[(&a, ids[0].clone()), (&b, ids[1].clone())], &truth, 0.1, 7, &mut heard);
    let fake = sensors(dirs[2].path(), 60, now_ms() - 60_000, 99);
    let mut fabricated = Vec::new();
    for o in outsiders {
        let mut theirs = Heard::new();
        feed(&[(o, peer_id(o))], &fake, 0.0, 99, &mut theirs);
        fabricated.push(theirs);
    }
    wait_converged(&[&a, &b], heard.len(), Duration::from_secs(60));
    // Past the outsiders' windows sealing, several summary exchanges and the grace period.
    std::thread::sleep(Duration::from_secs(12));

    let outsider_ids: BTreeSet<String> = outsiders.iter().map(|o| peer_id(o)).collect();
    for m in [&a, &b] {
        assert_union(m, &heard);
        assert!(peers(m).is_disjoint(&outsider_ids), "a member lists an outsider as a peer");
    }
    for (o, theirs) in outsiders.iter().zip(&fabricated) {
        // Nothing of the mesh reached it, and it found no one else through the members.
        assert_eq!(history(o), *theirs, "an outsider's history holds more than it heard itself");
        assert_eq!(status(o)["peers"], 0);
    }
    assert!(refusals(&a, "unproven_connection") >= a_before + 2.0, "QUIC and TCP connections were not counted");
    assert!(refusals(&a, "unproven_timeout") >= 2.0, "the outsiders' connections were not closed after the grace");
    for n in [over_quic, over_tcp, through_kad, b, a] {
        n.stop().expect("stops");
    }
}

#[test]
fn a_removed_member_is_cut_off_within_seconds_and_its_later_records_stay_out() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = member(dirs[0].path(), None);
    let b = member(dirs[1].path(), Some(&a));
    let c_token = common::invite(&a, "10m");
    let c_config = Config {
        join: Some(c_token),
        sync_interval: Duration::from_secs(1),
        mesh: "test".into(),
        listen: vec![TCP.parse().expect("multiaddr")],
        ..common::config(dirs[2].path(), TimestampUnit::Ms)
    };
    let c = Node::start(c_config.clone()).expect("c starts");
    let ids = [peer_id(&a), peer_id(&b), peer_id(&c)];

    let truth = sensors(dirs[0].path(), 150, now_ms() - 180_000, 11);
    let mut heard = Heard::new();
    feed(&[(&a, ids[0].clone()), (&b, ids[1].clone()), (&c, ids[2].clone())], &truth, 0.2, 11, &mut heard);
    wait_converged(&[&a, &b, &c], heard.len(), Duration::from_secs(60));
    assert!(heard.values().any(|by| by.len() == 1 && by.contains(&ids[2])), "c alone heard some records");

    let url = format!("{}/v1/mesh/members/{}", a.url(), ids[2]);
    let answer = ureq::delete(&url).call().expect("DELETE");
    assert_eq!(answer.status(), 200);
    let took = wait_for("no member exchanges anything with c", Duration::from_secs(10), || {
        !peers(&a).contains(&ids[2]) && !peers(&b).contains(&ids[2]) && status(&c)["peers"] == 0
    });
    eprintln!("c cut off {took:?} after its removal");
    assert_eq!(status(&b)["membership"]["members"], 2);
    assert_eq!(status(&b)["membership"]["roster_version"], status(&a)["membership"]["roster_version"]);

    // What c heard before stays, with its provenance; what it hears now does not enter.
    let later = sensors(dirs[2].path(), 60, now_ms() - 20_000, 12);
    let mut c_alone = heard.clone();
    feed(&[(&c, ids[2].clone())], &later, 0.0, 12, &mut c_alone);
    std::thread::sleep(Duration::from_secs(10));
    assert_union(&a, &heard);
    assert_union(&b, &heard);
    assert_eq!(history(&c), c_alone);

    // Restarted on its data (its old roster, its spent token), it stays out.
    c.stop().expect("c stops");
    let c = Node::start(c_config).expect("c restarts");
    std::thread::sleep(Duration::from_secs(8));
    assert!(!peers(&a).contains(&ids[2]) && !peers(&b).contains(&ids[2]));
    assert_eq!(status(&c)["peers"], 0);
    assert_union(&a, &heard);
    for n in [c, b, a] {
        n.stop().expect("stops");
    }
}
