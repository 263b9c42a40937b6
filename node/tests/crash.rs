//! Crash test: a node ingesting as fast as a steady sender feeds it is killed with
//! SIGKILL at random moments, 20 times over the same data directory. After each kill the
//! store opens again, every sealed window's Merkle root and hash tree recompute equal to
//! the stored ones (`telemesh check`), and every datagram sent more than one flush
//! interval (plus a margin for the flush itself) before the kill is in the history. And a
//! node killed at random moments while it repairs a peer's windows checks clean after each
//! kill and then catches up.

mod common;

use std::collections::HashSet;
use std::net::UdpSocket;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::Daemon;
use rand::{Rng, SeedableRng};
use telemesh_proto::wire::iotstream::{MsgType, Repr};

const DEVICES: u16 = 4;
const FLUSH: Duration = Duration::from_millis(100);
/// Time for a flush to reach disk and for the node to take a datagram off its socket.
const MARGIN: Duration = Duration::from_millis(400);
/// Datagrams per second: steady, well within what a debug build takes in.
const RATE: u64 = 4000;
/// Base device time (seconds); each packet of a device advances its clock by one second,
/// so windows close and are sealed all the time.
const T0: u32 = 1_700_000_000;

fn rounds() -> usize {
    std::env::var("TELEMESH_CRASH_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20)
}

/// Sends until `stop`, logging `(device, seq)` and when each left.
fn sender(to: std::net::SocketAddr, next_seq: Arc<Mutex<Vec<u16>>>, log: Arc<Mutex<Vec<(u16, u16, Instant)>>>, stop: Arc<AtomicBool>) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let start = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let device = (n % u64::from(DEVICES)) as u16;
        let seq = {
            let mut seqs = next_seq.lock().expect("lock");
            let s = seqs[usize::from(device)];
            seqs[usize::from(device)] = s + 1;
            s
        };
        let ts = T0 + u32::from(seq);
        let d = Repr::new(MsgType::Data, device, seq, ts, &[f32::from(seq)]).expect("valid").to_bytes();
        // Logged before it leaves: a datagram counts as sent only once it was.
        if s.send_to(&d, to).is_ok() {
            log.lock().expect("lock").push((device, seq, Instant::now()));
        }
        n += 1;
        let due = start + Duration::from_micros(n * 1_000_000 / RATE);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// `telemesh check` on a stopped node's data: whether it passed, its report, and the sealed
/// windows it checked.
fn check(data: &std::path::Path) -> (bool, String, u64) {
    let out = Command::new(common::BIN).args(["check", "--data", data.to_str().expect("utf-8")]).output().expect("check runs");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let sealed = report.split(": ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).unwrap_or(0);
    let report = format!("{report}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), report, sealed)
}

fn held(node: &Daemon) -> HashSet<(u16, u16)> {
    let mut out = HashSet::new();
    for device in 0..DEVICES {
        let url = format!("{}/v1/streams/iotstream/{device}/records?limit=100000", node.url());
        let body = telemesh_node::api::client::body(ureq::get(&url).call().expect("records")).expect("body");
        let page: serde_json::Value = serde_json::from_str(&body).expect("json");
        for r in page["records"].as_array().expect("records") {
            out.insert((device, r["seq"].as_u64().expect("seq") as u16));
        }
    }
    out
}

#[test]
fn sigkill_at_random_moments_loses_nothing_older_than_the_flush_interval() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let next_seq = Arc::new(Mutex::new(vec![0u16; usize::from(DEVICES)]));
    let log = Arc::new(Mutex::new(Vec::new()));
    let flush = format!("{}ms", FLUSH.as_millis());
    let mut checked_windows = 0;
    // Records proven present in earlier rounds: they must stay present.
    let mut required: HashSet<(u16, u16)> = HashSet::new();

    for round in 0..rounds() {
        log.lock().expect("lock").clear();
        let mut node = Daemon::start(dir.path(), &flush);
        let stop = Arc::new(AtomicBool::new(false));
        let t = {
            let (seqs, log, stop, to) = (Arc::clone(&next_seq), Arc::clone(&log), Arc::clone(&stop), node.udp);
            std::thread::spawn(move || sender(to, seqs, log, stop))
        };
        std::thread::sleep(Duration::from_millis(rng.gen_range(300..1500)));
        let (code, killed_log) = node.signal("-KILL");
        let killed_at = Instant::now();
        stop.store(true, Ordering::Relaxed);
        t.join().expect("sender");
        assert_ne!(code, 0, "round {round}: the node was killed, not stopped");

        // The store opens again, and everything older than the flush interval is there.
        let mut node = Daemon::start(dir.path(), &flush);
        let have = held(&node);
        let must: Vec<(u16, u16)> = log
            .lock()
            .expect("lock")
            .iter()
            .filter(|(_, _, at)| killed_at.duration_since(*at) > FLUSH + MARGIN)
            .map(|(d, s, _)| (*d, *s))
            .collect();
        required.extend(must.iter().copied());
        let lost: Vec<&(u16, u16)> = required.iter().filter(|k| !have.contains(k)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} of {} records older than the flush interval lost, e.g. {:?}\nlog of the killed node:\n{killed_log}",
            lost.len(),
            required.len(),
            &lost[..lost.len().min(5)]
        );
        let (code, log_text) = node.signal("-TERM");
        assert_eq!(code, 0, "round {round}: {log_text}");

        // Every sealed window's root and hash tree recompute from its blob.
        let (clean, report, sealed) = check(dir.path());
        assert!(clean, "round {round}: {report}");
        checked_windows = sealed;
    }
    assert!(checked_windows > 10, "windows were sealed and checked ({checked_windows})");
}

/// A node killed at random moments while it repairs a peer's windows (a new site joining a
/// mesh with half an hour of history): after every kill its store checks clean, and once
/// it is left running its merged history is the peer's, byte for byte.
#[test]
fn sigkill_while_repairing_leaves_a_store_that_checks_clean_and_catches_up() {
    use common::mesh::{config, merged, now_ms, sensors, DEVICES};

    let peer_dir = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2027);
    let peer = telemesh_node::Node::start(config(peer_dir.path(), None, "crash")).expect("peer starts");
    // Four devices, two hours of history ending 2 minutes ago: 480 windows, sealed.
    const WINDOWS: u64 = 480;
    let truth = sensors(peer_dir.path(), WINDOWS / 4 * 60, now_ms() - 120_000, 5);
    common::send_fast(peer.iotstream.expect("on"), truth.iter().map(|t| t.datagram.as_slice()));
    common::wait_quiet(&peer);
    let want: Vec<String> = DEVICES.iter().map(|d| merged(&peer, *d)).collect();
    let sealed = |node: &str| {
        common::get_json(&format!("{node}/v1/peers"))["windows"].as_u64().unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while sealed(&peer.url()) < WINDOWS {
        assert!(Instant::now() < deadline, "the peer sealed {} windows", sealed(&peer.url()));
        std::thread::sleep(Duration::from_millis(100));
    }
    let token = common::invite(&peer, "10m").encode();
    let args = ["--join", token.as_str(), "--mesh", "crash", "--sync-interval", "1s"];

    let mut mid_repair = 0;
    for round in 0..5 {
        let mut node = Daemon::start_with(dir.path(), "100ms", &args);
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1500)));
        let held = sealed(&node.url());
        let (code, log) = node.signal("-KILL");
        assert_ne!(code, 0, "round {round}: the node was killed, not stopped");
        let (clean, report, stored) = check(dir.path());
        assert!(clean, "round {round} (killed holding {held} windows): {report}\nlog of the killed node:\n{log}");
        eprintln!("round {round}: {stored} windows");
        if (1..WINDOWS).contains(&stored) {
            mid_repair += 1;
        }
    }
    assert!(mid_repair > 0, "no kill landed while windows were being repaired");
    // Left running, it catches up: the same merged history as the peer's, byte for byte.
    let mut node = Daemon::start_with(dir.path(), "100ms", &args);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let have: Vec<String> = DEVICES
            .iter()
            .map(|d| {
                let url = format!("{}/v1/streams/iotstream/{d}/records?limit=100000", node.url());
                telemesh_node::api::client::body(ureq::get(&url).call().expect("records")).expect("body")
            })
            .collect();
        if have == want {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted node did not catch up: {} of {WINDOWS} windows", sealed(&node.url()));
        std::thread::sleep(Duration::from_millis(500));
    }
    let (code, log) = node.signal("-TERM");
    assert_eq!(code, 0, "{log}");
    peer.stop().expect("stops");
}
