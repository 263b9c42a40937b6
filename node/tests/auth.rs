//! Authenticated datagrams (issue 13) on a node with device keys and `require_auth`:
//! tagged packets from the simulator are stored exactly; a wrong tag, a replay of a captured
//! packet, a truncated tag, a device without a key, a counter far behind (a reset) and one
//! just behind the window are each dropped, counted by reason, and nothing of them stored;
//! after a clean restart the captured packet is still refused.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;
use std::sync::atomic::AtomicBool;

use telemesh_proto::auth::{self, Key, Keys};
use telemesh_proto::record::{Record, TimestampUnit};
use telemesh_proto::wire::{iotstream, Dialect};
use telemesh_tools::sensor;

const T0_MS: u64 = 1_765_477_199_815;

/// `(device time ns, seq, kind, readings)` of each record.
type Set = BTreeSet<(u64, u64, String, String)>;

fn stored(node: &telemesh_node::Node, dialect: &str, device: u16) -> Set {
    let page = common::records(node, dialect, u32::from(device));
    page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            assert_eq!(r["copies"].as_u64(), Some(1), "no copy of a record was let in twice: {r}");
            assert_eq!((&r["auth"], r["proved_by"].as_array().map(Vec::len)), (&serde_json::json!("tag"), Some(1)), "{r}");
            let readings: Vec<String> = r["readings"]
                .as_array()
                .expect("readings")
                .iter()
                .map(|x| format!("{}={}", x["label"].as_str().expect("label"), x["value"].as_f64().expect("value")))
                .collect();
            (
                r["device_time_ns"].as_u64().expect("time"),
                r["seq"].as_u64().expect("seq"),
                r["kind"].as_str().expect("kind").to_owned(),
                readings.join(" "),
            )
        })
        .collect()
}

fn truth_set(truth: &[sensor::TruthRecord], device: u16) -> Set {
    truth
        .iter()
        .filter(|t| t.device == device)
        .map(|t| {
            // Unwrapped against the clock when it was sent, as the node does on arrival.
            let r = Record::from_datagram(t.dialect, &t.datagram, t.sent_at_ns, TimestampUnit::Ms).expect("valid");
            let readings: Vec<String> = r.readings.labelled().into_iter().map(|(l, v)| format!("{l}={v}")).collect();
            (r.device_time_ns, r.seq, r.kind.name().to_owned(), readings.join(" "))
        })
        .collect()
}

/// Runs the simulator against `to` and returns its ground truth and how many datagrams it sent.
fn simulate(dir: &Path, name: &str, config: sensor::Config, auth: &sensor::Auth) -> (Vec<sensor::TruthRecord>, u64) {
    let truth = dir.join(format!("{name}.ndjson"));
    let config =
        sensor::Config { truth: Some(truth.clone()), seed: Some(5), interval: Duration::from_millis(2), ..config };
    let summary = sensor::run_with_auth(&config, auth, &AtomicBool::new(false)).expect("simulator runs");
    (sensor::read_truth(&truth).expect("truth"), summary.datagrams_sent)
}

fn drops(node: &telemesh_node::Node, dialect: &str, reason: &str) -> f64 {
    let text = common::get_text(&format!("{}/metrics", node.url()));
    common::metric(&text, &format!("telemesh_drops_total{{dialect=\"{dialect}\",reason=\"{reason}\"}}"))
}

#[test]
fn tagged_datagrams_are_stored_and_every_attack_is_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keys = Keys::default();
    let devices = [(Dialect::Iotstream, 11, 1u8), (Dialect::Iotstream, 12, 2), (Dialect::Tinytelemetry, 21, 3)];
    for (dialect, device, b) in devices {
        keys.insert(dialect, device, Key::new([b; 32]));
    }
    let config = telemesh_node::Config {
        device_keys: keys.clone(),
        require_auth: true,
        ..common::config(dir.path(), TimestampUnit::Ms)
    };
    let node = telemesh_node::Node::start(config.clone()).expect("node starts");
    let iot_addr = node.iotstream.expect("iotstream");
    let tiny_addr = node.tinytelemetry.expect("tinytelemetry");
    let honest = sensor::Auth { keys: keys.clone(), counter_start: Some(1_000_000), attack: None };
    let iot = |devices: &[u16], count, start_ms| sensor::Config {
        devices: devices.to_vec(),
        count: Some(count),
        start_time_ms: Some(start_ms),
        to: vec![iot_addr],
        ..sensor::Config::default()
    };
    let mut sent = 0;

    // Honest devices of both dialects: stored exactly.
    let (truth_iot, n) = simulate(dir.path(), "iot", iot(&[11, 12], 6, T0_MS), &honest);
    sent += n;
    let tiny = sensor::Config { dialect: Dialect::Tinytelemetry, to: vec![tiny_addr], ..iot(&[21], 4, T0_MS) };
    let (truth_tiny, n) = simulate(dir.path(), "tiny", tiny, &honest);
    sent += n;
    assert_eq!(sent, 16);

    // A captured packet of device 11 (counter 5,000,000), delivered, then replayed by hand.
    let captured = {
        let mut b = iotstream::Repr::new(iotstream::MsgType::Heartbeat, 11, 900, 4242, &[]).expect("valid").to_bytes();
        auth::seal(Dialect::Iotstream, &Key::new([1; 32]), 5_000_000, &mut b).expect("fits");
        b
    };
    common::send(iot_addr, std::slice::from_ref(&captured));
    sent += 1;
    common::wait_received(&node, sent);
    let want11 = stored(&node, "iotstream", 11);
    let (captured_rec, honest11): (Set, Set) = want11.iter().cloned().partition(|r| r.1 == 900);
    assert_eq!(honest11, truth_set(&truth_iot, 11));
    assert_eq!(captured_rec.len(), 1, "the captured heartbeat was stored once");
    assert_eq!(stored(&node, "iotstream", 12), truth_set(&truth_iot, 12));
    assert_eq!(stored(&node, "tinytelemetry", 21), truth_set(&truth_tiny, 21));
    assert_eq!(truth_set(&truth_iot, 11).len(), 6);

    // Each attack, with the reason it must be counted under and the datagrams it sends.
    let attack = |attack| sensor::Auth { counter_start: Some(6_000_000), attack: Some(attack), ..honest.clone() };
    let counter = |start| sensor::Auth { counter_start: Some(start), ..honest.clone() };
    let later = T0_MS + 3_600_000;
    let (_, bad_tag) = simulate(dir.path(), "bad-tag", iot(&[11], 3, later), &attack(sensor::Attack::BadTag));
    let (_, truncated) = simulate(dir.path(), "truncated", iot(&[12], 3, later), &attack(sensor::Attack::Truncated));
    common::send(iot_addr, &[captured.clone(), captured.clone()]);
    // Device 99 has no key: refused under require_auth.
    let (_, unknown) = simulate(dir.path(), "unknown", iot(&[99], 3, later), &honest);
    // Device 12's counter starts over from 1 (a reset), then one just behind its window.
    let (_, reset) = simulate(dir.path(), "reset", iot(&[12], 2, later), &counter(1));
    let (_, too_old) = simulate(dir.path(), "too-old", iot(&[12], 1, later), &counter(1_000_000 - 100));
    sent += bad_tag + truncated + 2 + unknown + reset + too_old;
    common::wait_received(&node, sent);
    for (reason, want) in [
        ("auth_bad_tag", bad_tag),
        ("auth_truncated", truncated),
        ("auth_replay", 2),
        ("auth_unknown_key", unknown),
        ("auth_reset", reset),
        ("auth_too_old", too_old),
    ] {
        assert_eq!(drops(&node, "iotstream", reason), want as f64, "{reason}");
        assert!(want > 0, "{reason}");
    }
    assert_eq!(drops(&node, "tinytelemetry", "auth_bad_tag"), 0.0);
    // Nothing of them was stored.
    assert_eq!(stored(&node, "iotstream", 11), want11);
    assert_eq!(stored(&node, "iotstream", 12), truth_set(&truth_iot, 12));
    assert!(common::records(&node, "iotstream", 99)["records"].as_array().is_none_or(Vec::is_empty));
    node.stop().expect("stops");

    // A clean restart keeps each device's highest counter: the captured packet is still a replay.
    let saved = std::fs::read_to_string(dir.path().join("auth-counters")).expect("counters saved at stop");
    assert!(saved.contains("iotstream 11 5000000 ") && saved.contains("tinytelemetry 21 1000003 "), "{saved}");
    let node = telemesh_node::Node::start(config).expect("node restarts");
    common::send(node.iotstream.expect("iotstream"), std::slice::from_ref(&captured));
    common::wait_received(&node, 1);
    assert_eq!(drops(&node, "iotstream", "auth_replay"), 1.0);
    assert_eq!(stored(&node, "iotstream", 11), want11);
    node.stop().expect("stops");
}

/// A site with device 11's key hears its tagged datagrams; a site without keys does not
/// hear device 11 and hears device 12 (no key) with the first site. Every record says how
/// it was proved and by whom, on both sites' merged histories: device 11's records are
/// `tag`, proved by the first site; device 12's are `none`. The second site learns the
/// proof through the mesh — and keeps the first site's word for it, nothing more.
#[test]
fn the_mesh_carries_which_site_proved_which_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut keys = Keys::default();
    keys.insert(Dialect::Iotstream, 11, Key::new([1; 32]));
    let a = telemesh_node::Node::start(telemesh_node::Config {
        device_keys: keys.clone(),
        ..common::mesh::config(&dir.path().join("a"), None, "auth")
    })
    .expect("site a starts");
    let b = telemesh_node::Node::start(common::mesh::config(&dir.path().join("b"), Some(&a), "auth")).expect("site b starts");
    let (id_a, id_b) = (common::mesh::peer_id(&a), common::mesh::peer_id(&b));
    // Ten minutes ago: the windows are complete and seal at once.
    let start = common::mesh::now_ms() - 600_000;
    let tagged = sensor::Auth { keys, counter_start: Some(1), attack: None };
    let cfg = |devices: &[u16], to| sensor::Config {
        devices: devices.to_vec(),
        count: Some(5),
        start_time_ms: Some(start),
        to,
        ..sensor::Config::default()
    };
    let on = |n: &telemesh_node::Node| n.iotstream.expect("iotstream");
    simulate(dir.path(), "tagged", cfg(&[11], vec![on(&a)]), &tagged);
    simulate(dir.path(), "plain", cfg(&[12], vec![on(&a), on(&b)]), &tagged);

    // (auth, heard_by, proved_by) of each record of `device`, as `node` merges them.
    let proofs = |node: &telemesh_node::Node, device: u32| -> Vec<(String, Vec<String>, Vec<String>)> {
        let list = |v: &serde_json::Value| -> Vec<String> {
            v.as_array().expect("list").iter().map(|x| x.as_str().expect("id").to_owned()).collect()
        };
        common::get_json(&format!("{}/v1/streams/iotstream/{device}/records", node.url()))["records"]
            .as_array()
            .map(|rs| {
                rs.iter()
                    .map(|r| (r["auth"].as_str().expect("auth").to_owned(), list(&r["heard_by"]), list(&r["proved_by"])))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut both = vec![id_a.clone(), id_b.clone()];
    both.sort();
    let want11 = vec![("tag".to_owned(), vec![id_a.clone()], vec![id_a.clone()]); 5];
    let want12 = vec![("none".to_owned(), both, vec![]); 5];
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = [&a, &b].map(|n| (proofs(n, 11), proofs(n, 12)));
        if got.iter().all(|(p11, p12)| *p11 == want11 && *p12 == want12) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no agreement: a {:?}, b {:?}", got[0], got[1]);
        std::thread::sleep(Duration::from_millis(250));
    }
    // Site b's own receipts prove nothing, and it received none of device 11's records.
    let local = |device| common::get_json(&format!("{}/v1/streams/iotstream/{device}/records?view=local", b.url()));
    assert!(local(11)["records"].as_array().is_none_or(Vec::is_empty));
    assert!(local(12)["records"].as_array().expect("records").iter().all(|r| r["auth"] == "none"));
    b.stop().expect("b stops");
    a.stop().expect("a stops");
}

/// The `telemesh` binary refuses a bad key file, or `--require-auth` without one, before it
/// binds anything: one line on stderr, exit 64, and never a key in the message.
#[test]
fn a_bad_key_file_is_one_line_and_exit_64() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let data = data.to_str().expect("utf-8");
    let secret = "5a".repeat(32);
    let file = |name: &str, text: &str, mode: u32| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        path.to_str().expect("utf-8").to_owned()
    };
    let bad_line = file("bad", &format!("iotstream 1 {secret}\niotstream 2 {}\n", &secret[..63]), 0o600);
    let readable = file("open", &format!("iotstream 1 {secret}\n"), 0o644);
    for (args, says) in [
        (vec!["node", "--data", data, "--device-keys", &bad_line], "line 2: a key is 64 hexadecimal digits"),
        (vec!["node", "--data", data, "--device-keys", &readable], "chmod 600"),
        (vec!["node", "--data", data, "--require-auth"], "require_auth: "),
    ] {
        let out = std::process::Command::new(common::BIN).args(&args).output().expect("runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(says) && !err.contains(&secret[..63]), "{args:?}: {err}");
    }
    assert!(!Path::new(data).exists(), "nothing was created");
}
