//! The secure listener against a client the project did not write: `openssl s_client
//! -dtls1_2` with certificates from `telemesh certs device`. Frames come back through the
//! HTTP API exactly; clients with a foreign CA, no certificate, an expired or a
//! not-yet-valid certificate are refused and counted by reason, and nothing of theirs is
//! stored; a frame naming another client id than the certificate's is dropped and counted.
//!
//! Every step waits for an outcome (a counter, a record) with a generous deadline, never
//! for a fixed time, so a loaded machine makes the test slower, not flaky.

mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telemesh_node::ingest::dtls::cert::{self, Role};
use telemesh_node::Node;
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::secure;

const BIN: &str = env!("CARGO_BIN_EXE_telemesh");
const DEADLINE: Duration = Duration::from_secs(60);
const PAYLOAD: &str = "CPU=72.3;MEM=41.2;TEMP=67.5";
/// 2025-12-11T18:20:00Z in Unix nanoseconds.
const T0: u64 = 1_765_477_200_000_000_000;

/// `openssl` must be there: a test that cannot find it fails and says so.
fn openssl() -> &'static str {
    let ok = Command::new("openssl").arg("version").output().map(|o| o.status.success()).unwrap_or(false);
    assert!(ok, "the `openssl` command is missing: these interop tests need it (apt-get install -y openssl)");
    "openssl"
}

fn metrics(node: &Node) -> String {
    common::get_text(&format!("{}/metrics", node.url()))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn counter(node: &Node, name: &str) -> f64 {
    common::metric(&metrics(node), name)
}

/// `telemesh certs device ID --out DIR --data DATA`.
fn device_certs(data: &Path, client: u32, out: &Path) {
    let o = Command::new(BIN)
        .args(["certs", "device", &client.to_string(), "--out"])
        .arg(out)
        .arg("--data")
        .arg(data)
        .args(["--days", "2"])
        .output()
        .expect("runs telemesh certs");
    assert!(o.status.success(), "telemesh certs device failed: {}", String::from_utf8_lossy(&o.stderr));
    for f in ["ca.pem", "device.pem", "device.key"] {
        assert!(out.join(f).exists(), "{f} written");
    }
}

/// An `openssl s_client -dtls1_2` talking to `addr`, with `cert`/`key` if given.
struct Client {
    child: Child,
}

impl Client {
    fn start(addr: SocketAddr, ca: &Path, cert: Option<(&Path, &Path)>) -> Client {
        let mut cmd = Command::new(openssl());
        cmd.args(["s_client", "-dtls1_2", "-nocommands", "-connect", &addr.to_string(), "-CAfile"]).arg(ca);
        if let Some((c, k)) = cert {
            cmd.arg("-cert").arg(c).arg("-key").arg(k);
        }
        let child = cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("s_client");
        Client { child }
    }

    /// Writes one frame to s_client's stdin: one read of its stdin, one DTLS record.
    fn send(&mut self, frame: &[u8]) {
        self.try_send(frame).expect("write to s_client");
    }

    /// [`Client::send`] to a client that may have exited.
    fn try_send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        let stdin = self.child.stdin.as_mut().expect("stdin");
        stdin.write_all(frame)?;
        stdin.flush()
    }

    /// Closes stdin and waits for s_client to exit (killing it past the deadline); its stderr.
    fn finish(mut self) -> String {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self.child.try_wait().expect("wait") {
                Some(_) => break,
                None if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        err
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// s_client with the files `telemesh certs device` wrote in `certs`.
fn device_client(addr: SocketAddr, certs: &Path) -> Client {
    Client::start(addr, &certs.join("ca.pem"), Some((&certs.join("device.pem"), &certs.join("device.key"))))
}

fn frame(client: u32, seq: u64, payload: &str) -> Vec<u8> {
    secure::Repr::new(client, seq, T0 + seq * 1_000_000_000, payload).expect("valid frame").to_bytes()
}

/// `(seq, device_time_ns, kind, "LABEL=value …")` of each stored record of `client`.
fn stored(node: &Node, client: u32) -> Vec<(u64, u64, String, String)> {
    let page = common::records(node, "secure", client);
    page["records"]
        .as_array()
        .map(|rs| {
            rs.iter()
                .map(|r| {
                    let readings: Vec<String> = r["readings"]
                        .as_array()
                        .expect("readings")
                        .iter()
                        .map(|x| format!("{}={}", x["label"].as_str().expect("label"), x["value"]))
                        .collect();
                    (
                        r["seq"].as_u64().expect("seq"),
                        r["device_time_ns"].as_u64().expect("time"),
                        r["kind"].as_str().expect("kind").to_owned(),
                        readings.join(" "),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn node(dir: &Path) -> (Node, SocketAddr) {
    let node = common::start(dir, TimestampUnit::Ms);
    let addr = node.secure.expect("secure listener on");
    (node, addr)
}

#[test]
fn s_client_frames_come_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    // The node made its CA and certificate on its first start, keys readable by it alone.
    for f in ["ca.pem", "ca.key", "node.pem", "node.key"] {
        assert!(data.join("secure").join(f).exists(), "{f}");
    }
    let certs = dir.path().join("dev1001");
    device_certs(&data, 1001, &certs);

    let mut client = device_client(addr, &certs);
    wait_for("the handshake", || counter(&node, "telemesh_secure_handshakes_total") >= 1.0);
    // Each frame is written once the one before has arrived, so s_client reads exactly one
    // frame from its stdin at a time: one frame, one DTLS record.
    let frames = [
        frame(1001, 1, PAYLOAD),
        frame(1001, 2, ""),
        frame(1001, 3, "CPU=10;MEM=20.5;TEMP=-3.25"),
        frame(1001, 5, PAYLOAD),
    ];
    for (i, f) in frames.iter().enumerate() {
        client.send(f);
        let want = (i + 1) as f64;
        wait_for("a frame", || counter(&node, "telemesh_packets_total{dialect=\"secure\"}") >= want);
    }
    wait_for("the records", || stored(&node, 1001).len() == 4);
    let got = stored(&node, 1001);
    let s = |n: u64| T0 + n * 1_000_000_000;
    assert_eq!(
        got,
        vec![
            (1, s(1), "data".to_owned(), "CPU=72.3 MEM=41.2 TEMP=67.5".to_owned()),
            (2, s(2), "heartbeat".to_owned(), String::new()),
            (3, s(3), "data".to_owned(), "CPU=10.0 MEM=20.5 TEMP=-3.25".to_owned()),
            (5, s(5), "data".to_owned(), "CPU=72.3 MEM=41.2 TEMP=67.5".to_owned()),
        ]
    );
    let m = metrics(&node);
    assert_eq!(common::metric(&m, "telemesh_drops_total{dialect=\"secure\""), 0.0, "{m}");
    let err = client.finish();
    // s_client sends close_notify when its stdin ends; the session is forgotten.
    wait_for("the session to close", || counter(&node, "telemesh_secure_sessions ") == 0.0);
    assert!(counter(&node, "telemesh_secure_closed_total{reason=\"close_notify\"}") >= 1.0, "{err}");
    node.stop().expect("stops");
}

#[test]
fn refused_clients_are_counted_by_reason_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    let ca_pem = data.join(cert::DIR).join("ca.pem");
    let ca = cert::load_pair(&ca_pem, &data.join(cert::DIR).join("ca.key")).expect("the node's CA");
    let now = cert::now_secs();
    let write = |name: &str, pair: &cert::Pair| -> (PathBuf, PathBuf) {
        let c = dir.path().join(format!("{name}.pem"));
        let k = dir.path().join(format!("{name}.key"));
        std::fs::write(&c, pair.cert.to_pem().expect("pem")).expect("write");
        std::fs::write(&k, pair.key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
        (c, k)
    };
    let issue = |cn: &str, by: &cert::Pair, from: i64, to: i64| {
        cert::issue(cn, Role::Client, Some(by), from, to).expect("a client certificate")
    };
    let foreign_ca = cert::issue("another CA", Role::Authority, None, now - 60, now + 86_400).expect("ca");
    let cases: Vec<(u32, Option<cert::Pair>, &str)> = vec![
        (2001, Some(issue("2001", &foreign_ca, now - 60, now + 86_400)), "unknown_ca"),
        (2002, None, "missing_certificate"),
        (2003, Some(issue("2003", &ca, now - 86_400, now - 3_600)), "expired"),
        (2004, Some(issue("2004", &ca, now + 86_400, now + 2 * 86_400)), "not_yet_valid"),
    ];
    for (client, pair, reason) in &cases {
        let files = pair.as_ref().map(|p| write(&client.to_string(), p));
        let mut c = Client::start(addr, &ca_pem, files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())));
        let name = format!("telemesh_secure_refused_total{{reason=\"{reason}\"}}");
        wait_for(reason, || counter(&node, &name) >= 1.0);
        // Whatever it still tries to send goes nowhere.
        let _ = c.try_send(&frame(*client, 1, PAYLOAD));
        let _ = c.finish();
        assert_eq!(counter(&node, &name), 1.0, "{reason}");
    }
    let m = metrics(&node);
    assert_eq!(common::metric(&m, "telemesh_secure_handshakes_total"), 0.0, "{m}");
    assert_eq!(common::metric(&m, "telemesh_packets_total{dialect=\"secure\"}"), 0.0, "{m}");
    assert_eq!(common::metric(&m, "telemesh_secure_sessions "), 0.0, "{m}");
    for (client, _, _) in &cases {
        assert!(stored(&node, *client).is_empty(), "nothing stored for {client}");
    }
    node.stop().expect("stops");
}

#[test]
fn a_frame_for_another_client_id_is_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    let certs = dir.path().join("dev3001");
    device_certs(&data, 3001, &certs);
    let mut client = device_client(addr, &certs);
    wait_for("the handshake", || counter(&node, "telemesh_secure_handshakes_total") >= 1.0);
    client.send(&frame(3002, 1, PAYLOAD));
    let mismatch = "telemesh_drops_total{dialect=\"secure\",reason=\"client_mismatch\"}";
    wait_for("the drop", || counter(&node, mismatch) >= 1.0);
    // The session stays up: its own frames are still taken.
    client.send(&frame(3001, 1, PAYLOAD));
    wait_for("its own record", || stored(&node, 3001).len() == 1);
    let _ = client.finish();
    assert_eq!(counter(&node, mismatch), 1.0);
    assert!(stored(&node, 3002).is_empty(), "nothing stored under the other id");
    node.stop().expect("stops");
}
