//! The secure frame in Wireshark, end to end: `telemesh-sensor --dialect secure` sends
//! frames over DTLS 1.2 to a node through a relay that keeps every datagram (what a capture
//! on the link holds), with `SSLKEYLOGFILE` set; tshark, given that key log, decrypts the
//! sessions and the dissector (`tools/wireshark/telemesh.lua`) shows each frame as the
//! simulator's truth log says, on the node's port 5006 and, by heuristic, on another.
//! Without the key log nothing is readable; the frames exported from the decrypted capture
//! ("OSI layer 7") read back without it.
//!
//! Without `tshark` the test says so and passes, except under CI (`CI` set), where
//! `.ci/run` installs it and a missing `tshark` fails it.

mod common;

#[path = "../../tools/tests/support/tshark.rs"]
mod tshark;

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::Dialect;
use telemesh_tools::dtls::{Credentials, KEYLOG_ENV};
use telemesh_tools::sensor::{self, Config, Dtls, Kind, Reading};
use tshark::{have_tshark, tshark, Pcap, ETHERNET};

const BIN: &str = env!("CARGO_BIN_EXE_telemesh");
const FRAMES: u64 = 30;

/// One datagram through the relay: when, whether from the sensor, the bytes.
type Passed = (u64, bool, Vec<u8>);

/// A UDP relay for one client: what the client sends goes to `to`, what comes back goes to
/// the client, and every datagram is kept with its time and direction.
struct Relay {
    addr: SocketAddr,
    client: Arc<Mutex<Option<SocketAddr>>>,
    passed: Arc<Mutex<Vec<Passed>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

impl Relay {
    fn start(to: SocketAddr) -> Relay {
        let front = UdpSocket::bind("127.0.0.1:0").expect("binds");
        let back = UdpSocket::bind("127.0.0.1:0").expect("binds");
        back.connect(to).expect("connects");
        front.set_nonblocking(true).expect("non-blocking");
        back.set_nonblocking(true).expect("non-blocking");
        let addr = front.local_addr().expect("address");
        let client = Arc::new(Mutex::new(None));
        let passed = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (client, passed, stop) = (client.clone(), passed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let mut idle = true;
                    if let Ok((n, from)) = front.recv_from(&mut buf) {
                        idle = false;
                        *client.lock().expect("lock") = Some(from);
                        passed.lock().expect("lock").push((now_ns(), true, buf[..n].to_vec()));
                        let _ = back.send(&buf[..n]);
                    }
                    if let Ok(n) = back.recv(&mut buf) {
                        idle = false;
                        let to = *client.lock().expect("lock");
                        if let Some(to) = to {
                            passed.lock().expect("lock").push((now_ns(), false, buf[..n].to_vec()));
                            let _ = front.send_to(&buf[..n], to);
                        }
                    }
                    if idle {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
            })
        };
        Relay { addr, client, passed, stop, thread: Some(thread) }
    }

    /// Stops the relay; what passed, and the client's port.
    fn finish(mut self) -> (Vec<Passed>, u16) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("relay thread");
        }
        let port = self.client.lock().expect("lock").map_or(0, |a| a.port());
        let passed = std::mem::take(&mut *self.passed.lock().expect("lock"));
        (passed, port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A capture of what passed, the node at `server_port`.
fn capture(path: &Path, passed: &[Passed], client_port: u16, server_port: u16) {
    let mut pcap = Pcap::new(ETHERNET);
    for (at, from_client, bytes) in passed {
        let (from, to) = if *from_client { (client_port, server_port) } else { (server_port, client_port) };
        pcap.udp(*at, from, to, bytes);
    }
    pcap.write(path);
}

#[test]
fn tshark_decrypts_the_simulators_dtls_with_its_key_log() {
    if !have_tshark("tshark_decrypts_the_simulators_dtls_with_its_key_log") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let node = common::start(&data, TimestampUnit::Ms);
    let certs = dir.path().join("dev1001");
    let o = Command::new(BIN)
        .args(["certs", "device", "1001", "--out"])
        .arg(&certs)
        .arg("--data")
        .arg(&data)
        .output()
        .expect("runs telemesh certs");
    assert!(o.status.success(), "telemesh certs: {}", String::from_utf8_lossy(&o.stderr));

    let relay = Relay::start(node.secure.expect("secure listener"));
    let keylog = dir.path().join("keys.log");
    let truth = dir.path().join("truth.ndjson");
    // The only test in this file, so its process's environment is its own.
    std::env::set_var(KEYLOG_ENV, &keylog);
    let config = Config {
        dialect: Dialect::Secure,
        devices: vec![1001],
        count: Some(FRAMES),
        interval: Duration::from_millis(20),
        seed: Some(5),
        to: vec![relay.addr],
        truth: Some(truth.clone()),
        ..Config::default()
    };
    let credentials = Credentials {
        ca: certs.join("ca.pem"),
        cert: certs.join("device.pem"),
        key: certs.join("device.key"),
    };
    let dtls = Dtls { credentials: vec![credentials], handshake_timeout: Duration::from_secs(30) };
    let summary = sensor::run_secure(&config, &dtls, &AtomicBool::new(false)).expect("the sensor runs");
    std::env::remove_var(KEYLOG_ENV);
    assert_eq!((summary.packets, summary.send_errors), (FRAMES, 0));
    let deadline = Instant::now() + Duration::from_secs(60);
    let metric = "telemesh_packets_total{dialect=\"secure\"}";
    while common::metric(&common::get_text(&format!("{}/metrics", node.url())), metric) < FRAMES as f64 {
        assert!(Instant::now() < deadline, "the node did not receive every frame");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (passed, client_port) = relay.finish();
    let log = std::fs::read_to_string(&keylog).expect("the sensor wrote a key log");
    assert!(log.lines().any(|l| l.starts_with("CLIENT_RANDOM ")), "NSS key log lines: {log}");
    let truth = sensor::read_truth(&truth).expect("truth log");
    assert_eq!(truth.len() as u64, FRAMES);
    assert!(truth.iter().any(|t| t.kind == Kind::Heartbeat) && truth.iter().any(|t| t.kind == Kind::Data));

    let keys = format!("tls.keylog_file:{}", keylog.display());
    for server_port in [5006, relay_port(&node)] {
        let path = dir.path().join(format!("dtls-{server_port}.pcap"));
        capture(&path, &passed, client_port, server_port);

        let sealed = tshark(&path, &[]);
        assert_eq!(sealed.len(), passed.len());
        assert!(sealed.iter().all(|p| p.has("dtls")), "every datagram is DTLS");
        assert!(!sealed.iter().any(|p| p.has("telemesh_secure")), "nothing readable without the key log");

        let packets = tshark(&path, &["-o", &keys]);
        let frames: Vec<_> = packets.iter().filter(|p| p.has("telemesh_secure")).collect();
        assert_eq!(frames.len(), truth.len(), "port {server_port}: one frame per DTLS record");
        for (p, t) in frames.iter().zip(&truth) {
            let ctx = format!("port {server_port}, seq {}", t.seq);
            assert_eq!(p.show("telemesh_secure.client"), "1001", "{ctx}");
            assert_eq!(p.show("telemesh_secure.seq"), t.seq.to_string(), "{ctx}");
            assert_eq!(p.show("telemesh_secure.timestamp"), t.timestamp.to_string(), "{ctx}");
            assert_eq!(p.drop_reason("telemesh_secure"), None, "{ctx}");
            let keys: Vec<&str> = p.all("telemesh_secure.key").iter().map(|f| f.show.as_str()).collect();
            let values: Vec<f64> =
                p.all("telemesh_secure.value").iter().map(|f| f.show.parse().expect("a number")).collect();
            let want: Vec<(&str, f64)> = t
                .readings
                .iter()
                .map(|r| match r {
                    Reading::Keyed { key, value } => (key.key(), *value),
                    other => panic!("{ctx}: a secure reading has a key: {other:?}"),
                })
                .collect();
            let got: Vec<(&str, f64)> = keys.into_iter().zip(values).collect();
            assert_eq!(got, want, "{ctx}");
        }
    }
    // The frames exported from the decrypted capture (Export PDUs, "OSI layer 7") read
    // back without the keys.
    let decrypted = dir.path().join("dtls-5006.pcap");
    let exported = dir.path().join("frames.pcap");
    let o = Command::new("tshark")
        .arg("-r")
        .arg(&decrypted)
        .arg("-X")
        .arg(format!("lua_script:{}", tshark::LUA))
        .args(["-o", &keys, "-U", "OSI layer 7", "-w"])
        .arg(&exported)
        .output()
        .expect("runs tshark");
    assert!(o.status.success(), "tshark -U: {}", String::from_utf8_lossy(&o.stderr));
    let frames = tshark(&exported, &[]);
    assert_eq!(frames.len(), truth.len(), "one exported PDU per frame");
    for (p, t) in frames.iter().zip(&truth) {
        assert_eq!(p.show("telemesh_secure.seq"), t.seq.to_string());
        let payload = p.all("telemesh_secure.payload").first().map_or(String::new(), |f| f.show.clone());
        assert_eq!(payload, secure_payload(&t.datagram), "seq {}", t.seq);
    }
    eprintln!(
        "{} datagrams through the relay; {} frames decrypted and decoded twice, exported and read back",
        passed.len(),
        truth.len()
    );
}

/// The payload text of a frame (bytes 22 on); empty for a heartbeat, which has no payload field.
fn secure_payload(frame: &[u8]) -> String {
    String::from_utf8_lossy(&frame[22..]).into_owned()
}

/// A port other than 5006 for the node's side of the capture, where DTLS and the frame are
/// found by heuristic.
fn relay_port(node: &telemesh_node::Node) -> u16 {
    match node.secure.map(|a| a.port()) {
        Some(5006) | None => 15_006,
        Some(p) => p,
    }
}
