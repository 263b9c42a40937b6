//! Verifiable provenance, as an attacker would test it: a page of merged records with
//! proof from a node that heard nothing itself, checked offline by `telemesh verify`; the
//! same page with a `heard_by` entry added, or a reading changed; and a forged row that
//! made its way into a node's table (as a lying coordinator would relay it), which the
//! node's own proof exposes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mesh::{config, feed, now_ms, peer_id, sensors, wait_converged, wait_full_mesh, Heard, DEVICES};
use telemesh_node::store::{SledStore, Store};
use telemesh_node::{Config, Node};
use telemesh_proto::mesh::{Table, WindowId};
use telemesh_proto::window;

const BIN: &str = env!("CARGO_BIN_EXE_telemesh");

fn proof_page(node: &Node, device: u16) -> serde_json::Value {
    let url = format!("{}/v1/streams/iotstream/{device}/records?limit=100000&proof=true", node.url());
    serde_json::from_str(&common::get_text(&url)).expect("json")
}

/// `telemesh verify FILE --data DIR`: (exit success, stdout).
fn verify(page: &serde_json::Value, owner_data: &std::path::Path) -> (bool, String) {
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(file.path(), serde_json::to_vec(page).expect("json")).expect("write");
    let out = Command::new(BIN).arg("verify").arg(file.path()).arg("--data").arg(owner_data).output().expect("runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Waits until `node` backs every entry of every device's page, and returns the pages.
fn backed_pages(node: &Node) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pages: Vec<serde_json::Value> = DEVICES.iter().map(|d| proof_page(node, *d)).collect();
        let unbacked: usize = pages.iter().map(|p| p["proof"]["unbacked"].as_array().map_or(0, Vec::len)).sum();
        if unbacked == 0 {
            return pages;
        }
        let first = pages.iter().flat_map(|p| p["proof"]["unbacked"].as_array().cloned().unwrap_or_default()).next();
        assert!(Instant::now() < deadline, "{unbacked} entries still unbacked, the first: {first:?}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn a_node_that_heard_nothing_proves_who_heard_what_and_forgeries_fail() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    // One coordinator per window: a site's statement is kept by the site and by that
    // coordinator only, so the querying node has to ask for most of them.
    let with = |c: Config| Config { coordinators: 1, ..c };
    let a = Node::start(with(config(dirs[0].path(), None, "proof"))).expect("a starts");
    let b = Node::start(with(config(dirs[1].path(), Some(&a), "proof"))).expect("b starts");
    let c = Node::start(with(config(dirs[2].path(), Some(&a), "proof"))).expect("c starts");
    let d = Node::start(with(config(dirs[3].path(), Some(&a), "proof"))).expect("d starts");
    wait_full_mesh(&[&a, &b, &c, &d]);
    let truth = sensors(dirs[0].path(), 90, now_ms() - 120_000, 11);
    let mut heard = Heard::new();
    feed(&[(&a, peer_id(&a)), (&b, peer_id(&b)), (&c, peer_id(&c))], &truth, 0.2, 11, &mut heard);
    wait_converged(&[&a, &b, &c, &d], heard.len(), Duration::from_secs(60));

    // d heard nothing: every entry of its pages is backed by statements it kept or asked
    // for, and says exactly who heard what.
    let pages = backed_pages(&d);
    let mut shown: BTreeMap<(u64, u64, u64), BTreeSet<String>> = BTreeMap::new();
    for (device, page) in DEVICES.iter().zip(&pages) {
        for r in page["records"].as_array().expect("records") {
            let by = r["heard_by"].as_array().expect("heard_by").iter().map(|x| x.as_str().expect("id").to_owned()).collect();
            shown.insert((u64::from(*device), r["device_time_ns"].as_u64().expect("t"), r["seq"].as_u64().expect("seq")), by);
        }
    }
    let want: BTreeMap<(u64, u64, u64), BTreeSet<String>> =
        heard.iter().map(|((dev, t, s), by)| ((u64::from(*dev), *t, *s), by.clone())).collect();
    assert_eq!(shown, want);
    let (ok, out) = verify(&pages[0], dirs[0].path());
    assert!(ok, "an honest page verifies: {out}");
    assert!(out.contains(": ok"), "{out}");

    // Someone adds a node to a record's heard_by: the entry is unbacked.
    let records = pages[0]["records"].as_array().expect("records");
    let (i, stranger) = records
        .iter()
        .enumerate()
        .find_map(|(i, r)| {
            let by: Vec<&str> = r["heard_by"].as_array()?.iter().filter_map(|x| x.as_str()).collect();
            [peer_id(&a), peer_id(&b), peer_id(&c)].into_iter().find(|n| !by.contains(&n.as_str())).map(|n| (i, n))
        })
        .expect("a record some site missed (20 % loss)");
    let mut forged = pages[0].clone();
    forged["records"][i]["heard_by"].as_array_mut().expect("heard_by").push(stranger.clone().into());
    let (ok, out) = verify(&forged, dirs[0].path());
    assert!(!ok, "an added heard_by entry must fail: {out}");
    assert!(out.contains("unbacked") && out.contains(&stranger), "{out}");
    // … or changes a reading: the record is not the one in the window.
    let mut changed = pages[0].clone();
    let with_readings = records.iter().position(|r| r["readings"].as_array().is_some_and(|x| !x.is_empty())).expect("readings");
    changed["records"][with_readings]["readings"][0]["value"] = serde_json::json!(-12345.0);
    let (ok, out) = verify(&changed, dirs[0].path());
    assert!(!ok && out.contains("not in its window's blob"), "{out}");
    // … or checks it against another mesh's owner.
    let other = tempfile::tempdir().expect("tempdir");
    let stranger_mesh = Node::start(config(other.path(), None, "other")).expect("starts");
    stranger_mesh.stop().expect("stops");
    let (ok, out) = verify(&pages[0], other.path());
    assert!(!ok && out.contains("does not verify"), "{out}");

    // A forged row reaches d's table — what a coordinator that lies about b relays: b
    // heard a record it did not. d's proof lists the entry as unbacked, and counts it.
    let r = &records[i];
    let victim = stranger.clone();
    d.stop().expect("d stops");
    {
        let store = SledStore::open(dirs[3].path(), 16).expect("store");
        let t = r["device_time_ns"].as_u64().expect("t");
        let stream = telemesh_proto::record::StreamId::new(telemesh_proto::Dialect::Iotstream, u32::from(DEVICES[0]));
        let held = store.window(stream, window::start(t)).expect("window");
        let key = held.iter().find(|x| x.record.device_time_ns == t).map(|x| x.order_key()).expect("held");
        let table = Table::from_heard(1, [(0, victim.as_str())]);
        store.add_rows(WindowId { stream, start: window::start(t) }, &[key], &table).expect("rows");
        store.flush().expect("flush");
    }
    let d = Node::start(with(config(dirs[3].path(), Some(&a), "proof"))).expect("d restarts");
    wait_full_mesh(&[&a, &b, &c, &d]);
    let page = proof_page(&d, DEVICES[0]);
    let unbacked = page["proof"]["unbacked"].as_array().expect("unbacked");
    assert!(
        unbacked.iter().any(|u| u["node"] == victim.as_str() && u["device_time_ns"] == r["device_time_ns"] && u["claim"] == "heard"),
        "the forged entry is listed: {unbacked:?}"
    );
    let counted = common::metric(&common::get_text(&format!("{}/metrics", d.url())), "telemesh_mesh_unbacked_total");
    assert!(counted >= 1.0, "and counted: {counted}");
    let (ok, out) = verify(&page, dirs[0].path());
    assert!(!ok && out.contains(&victim), "{out}");
    for n in [a, b, c, d] {
        n.stop().expect("stops");
    }
}
