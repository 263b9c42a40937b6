//! Crash test: a node ingesting as fast as a steady sender feeds it is killed with
//! SIGKILL at random moments, 20 times over the same data directory. After each kill the
//! store opens again, every sealed window's Merkle root and hash tree recompute equal to
//! the stored ones (`telemesh check`), and every datagram sent more than one flush
//! interval (plus a margin for the flush itself) before the kill is in the history.

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
        let out = Command::new(common::BIN).args(["check", "--data", dir.path().to_str().expect("utf-8")]).output().expect("check runs");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "round {round}: {report}");
        let sealed: u64 = report.split(": ").nth(1).and_then(|s| s.split(' ').next()).and_then(|n| n.parse().ok()).expect("sealed count");
        checked_windows = sealed;
    }
    assert!(checked_windows > 10, "windows were sealed and checked ({checked_windows})");
}
