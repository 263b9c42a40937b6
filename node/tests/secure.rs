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
    // Each record says the device proved it with its certificate, to this node.
    for view in ["local", "merged"] {
        let page = common::get_json(&format!("{}/v1/streams/secure/1001/records?view={view}", node.url()));
        for r in page["records"].as_array().expect("records") {
            assert_eq!(r["auth"], "certificate", "{r}");
            assert_eq!(r["proved_by"], r["heard_by"], "{r}");
            assert_eq!(r["proved_by"].as_array().map(Vec::len), Some(1), "{r}");
        }
    }
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

/// A DTLS client written with the openssl crate over a connected UDP socket, which can lose
/// chosen datagrams from the node (by their order of arrival) to exercise retransmission.
mod rust_client {
    use std::io::{self, Read, Write};
    use std::net::{SocketAddr, UdpSocket};
    use std::path::Path;
    use std::time::{Duration, Instant};

    use openssl::ssl::{ErrorCode, Ssl, SslContextBuilder, SslFiletype, SslMethod, SslOptions, SslStream, SslVerifyMode};

    #[derive(Debug)]
    pub struct Udp {
        socket: UdpSocket,
        lose: Vec<usize>,
        received: usize,
        /// From the datagram it numbers (0 = the first sent), everything this client sends
        /// is lost for the duration.
        pub blackout: Option<(usize, Duration)>,
        sent: usize,
        blackout_until: Option<Instant>,
    }

    impl Udp {
        pub fn local_addr(&self) -> SocketAddr {
            self.socket.local_addr().expect("local address")
        }
    }

    impl Read for Udp {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            loop {
                // A read timeout surfaces as WouldBlock: OpenSSL then checks its retransmission timer.
                let n = self.socket.recv(buf)?;
                self.received += 1;
                if !self.lose.contains(&(self.received - 1)) {
                    return Ok(n);
                }
            }
        }
    }

    impl Write for Udp {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent += 1;
            if let Some((from, long)) = self.blackout {
                if self.sent - 1 == from {
                    self.blackout_until = Some(Instant::now() + long);
                }
            }
            if self.blackout_until.is_some_and(|t| Instant::now() < t) {
                return Ok(buf.len());
            }
            self.socket.send(buf)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Connects with the files in `certs` (as `telemesh certs device` writes them), losing the
    /// node's datagrams numbered in `lose` (0 = the first).
    pub fn connect(addr: SocketAddr, certs: &Path, lose: Vec<usize>) -> SslStream<Udp> {
        connect_with(addr, certs, lose, None)
    }

    /// [`connect`], with a blackout of what the client sends (see [`Udp::blackout`]).
    pub fn connect_with(
        addr: SocketAddr,
        certs: &Path,
        lose: Vec<usize>,
        blackout: Option<(usize, Duration)>,
    ) -> SslStream<Udp> {
        let mut stream = new(addr, certs, lose, blackout);
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            match stream.do_handshake() {
                Ok(()) => return stream,
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    assert!(Instant::now() < deadline, "the handshake did not finish");
                }
                Err(e) => panic!("handshake failed: {e}"),
            }
        }
    }

    /// A client that sends its ClientHello, answers the HelloVerifyRequest with the cookie,
    /// then falls silent: a handshake left half-open on the node.
    pub fn stall(addr: SocketAddr, certs: &Path) -> SslStream<Udp> {
        // Everything from its second flight on (sent datagram 2) is lost.
        let mut stream = new(addr, certs, Vec::new(), Some((2, Duration::from_secs(3600))));
        let deadline = Instant::now() + super::DEADLINE;
        while stream.get_ref().sent < 2 {
            assert!(Instant::now() < deadline, "no HelloVerifyRequest");
            let _ = stream.do_handshake();
        }
        stream
    }

    /// A handshake from the local address `from`.
    pub fn connect_from(addr: SocketAddr, certs: &Path, from: SocketAddr) -> SslStream<Udp> {
        let mut stream = new_from(addr, certs, Vec::new(), None, from);
        let deadline = Instant::now() + super::DEADLINE;
        loop {
            match stream.do_handshake() {
                Ok(()) => return stream,
                Err(e) if e.code() == ErrorCode::WANT_READ => {
                    assert!(Instant::now() < deadline, "the handshake did not finish");
                }
                Err(e) => panic!("handshake failed: {e}"),
            }
        }
    }

    fn new(addr: SocketAddr, certs: &Path, lose: Vec<usize>, blackout: Option<(usize, Duration)>) -> SslStream<Udp> {
        new_from(addr, certs, lose, blackout, "127.0.0.1:0".parse().expect("addr"))
    }

    fn new_from(
        addr: SocketAddr,
        certs: &Path,
        lose: Vec<usize>,
        blackout: Option<(usize, Duration)>,
        from: SocketAddr,
    ) -> SslStream<Udp> {
        let mut b = SslContextBuilder::new(SslMethod::dtls()).expect("context");
        b.set_ca_file(certs.join("ca.pem")).expect("ca");
        b.set_certificate_file(certs.join("device.pem"), SslFiletype::PEM).expect("cert");
        b.set_private_key_file(certs.join("device.key"), SslFiletype::PEM).expect("key");
        b.set_verify(SslVerifyMode::PEER);
        b.set_options(SslOptions::NO_QUERY_MTU);
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx).expect("ssl");
        ssl.set_connect_state();
        ssl.set_mtu(1200).expect("mtu");
        let socket = UdpSocket::bind(from).expect("bind");
        socket.connect(addr).expect("connect");
        socket.set_read_timeout(Some(Duration::from_millis(50))).expect("timeout");
        let udp = Udp { socket, lose, received: 0, blackout, sent: 0, blackout_until: None };
        SslStream::new(ssl, udp).expect("stream")
    }

    /// The first datagram a client sends: a ClientHello, without a cookie.
    pub fn client_hello(certs: &Path) -> Vec<u8> {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
        let sink = UdpSocket::bind("127.0.0.1:0").expect("bind");
        sink.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let addr = sink.local_addr().expect("addr");
        socket.connect(addr).expect("connect");
        socket.set_nonblocking(true).expect("nonblocking");
        let mut b = SslContextBuilder::new(SslMethod::dtls()).expect("context");
        b.set_certificate_file(certs.join("device.pem"), SslFiletype::PEM).expect("cert");
        b.set_private_key_file(certs.join("device.key"), SslFiletype::PEM).expect("key");
        b.set_options(SslOptions::NO_QUERY_MTU);
        let ctx = b.build();
        let mut ssl = Ssl::new(&ctx).expect("ssl");
        ssl.set_connect_state();
        ssl.set_mtu(1200).expect("mtu");
        let udp = Udp { socket, lose: Vec::new(), received: 0, blackout: None, sent: 0, blackout_until: None };
        let mut stream = SslStream::new(ssl, udp).expect("stream");
        let _ = stream.do_handshake();
        let mut buf = vec![0u8; 4096];
        let n = sink.recv(&mut buf).expect("a ClientHello");
        buf.truncate(n);
        buf
    }
}

/// `hello` (a ClientHello without a cookie, one record, one fragment) with `cookie` in it.
fn with_cookie(hello: &[u8], cookie: &[u8]) -> Vec<u8> {
    // Record header 13 bytes, handshake header 12, client version 2, random 32: then the
    // session id (length byte first), then the cookie's length byte.
    let sid = 13 + 12 + 34;
    let at = sid + 1 + usize::from(hello[sid]);
    assert_eq!(hello[at], 0, "a ClientHello without a cookie");
    let mut out = hello[..at].to_vec();
    out.push(u8::try_from(cookie.len()).expect("short cookie"));
    out.extend_from_slice(cookie);
    out.extend_from_slice(&hello[at + 1..]);
    let grow = cookie.len();
    let record = usize::from(u16::from_be_bytes([hello[11], hello[12]])) + grow;
    out[11..13].copy_from_slice(&u16::try_from(record).expect("fits").to_be_bytes());
    let body = u32::from_be_bytes([0, hello[14], hello[15], hello[16]]) as usize + grow;
    let b = u32::try_from(body).expect("fits").to_be_bytes();
    out[14..17].copy_from_slice(&b[1..]); // message length
    out[22..25].copy_from_slice(&b[1..]); // fragment length
    out
}

fn rust_node(dir: &Path, limits: telemesh_node::ingest::dtls::Limits) -> (Node, SocketAddr) {
    let config = telemesh_node::Config { secure_limits: limits, ..common::config(dir, TimestampUnit::Ms) };
    let node = Node::start(config).expect("node starts");
    let addr = node.secure.expect("secure listener on");
    (node, addr)
}

#[test]
fn many_clients_at_once_some_behind_loss() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = rust_node(&data, Default::default());
    const CLIENTS: u32 = 6;
    const FRAMES: u64 = 40;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let client = 5000 + i;
            let certs = dir.path().join(format!("dev{client}"));
            device_certs(&data, client, &certs);
            std::thread::spawn(move || {
                // Odd clients lose the node's first datagram after its HelloVerifyRequest (part
                // of its ServerHello flight): the handshake must recover by retransmission.
                let lose = if i % 2 == 1 { vec![1] } else { Vec::new() };
                let mut s = rust_client::connect(addr, &certs, lose);
                for seq in 1..=FRAMES {
                    let f = frame(client, seq, PAYLOAD);
                    assert_eq!(s.ssl_write(&f).expect("write"), f.len());
                    if seq % 10 == 0 {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
                let _ = s.shutdown();
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    for i in 0..CLIENTS {
        let client = 5000 + i;
        wait_for("every record", || stored(&node, client).len() == FRAMES as usize);
        let seqs: Vec<u64> = stored(&node, client).iter().map(|r| r.0).collect();
        assert_eq!(seqs, (1..=FRAMES).collect::<Vec<_>>(), "client {client}");
    }
    let m = metrics(&node);
    assert_eq!(common::metric(&m, "telemesh_secure_handshakes_total"), f64::from(CLIENTS), "{m}");
    assert_eq!(common::metric(&m, "telemesh_drops_total{dialect=\"secure\""), 0.0, "{m}");
    wait_for("the sessions to close", || counter(&node, "telemesh_secure_sessions ") == 0.0);
    node.stop().expect("stops");
}

#[test]
fn a_flood_of_client_hellos_is_bounded_and_established_clients_go_on() {
    use telemesh_node::ingest::dtls::Limits;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    // The default handshake timeout (30 s): long enough that no stalled handshake expires
    // before the last one is refused, however slow the machine.
    let limits = Limits { max_half_open: 4, max_sessions: 64, ..Limits::default() };
    let (node, addr) = rust_node(&data, limits);
    let certs = dir.path().join("dev7001");
    device_certs(&data, 7001, &certs);
    let mut established = rust_client::connect(addr, &certs, Vec::new());

    // Twenty "peers" (spoofed addresses, as far as the node can tell) that send a
    // ClientHello and never answer: each gets a HelloVerifyRequest, and no state.
    let hello = rust_client::client_hello(&certs);
    let spoofed: Vec<std::net::UdpSocket> =
        (0..20).map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind")).collect();
    let verify = "telemesh_secure_hello_verify_total";
    let before = counter(&node, verify);
    for s in &spoofed {
        s.send_to(&hello, addr).expect("send");
    }
    wait_for("the cookies", || counter(&node, verify) == before + 20.0);
    assert_eq!(counter(&node, "telemesh_secure_half_open "), 0.0);
    assert_eq!(counter(&node, "telemesh_secure_sessions "), 1.0);
    // A forged cookie gets a new HelloVerifyRequest (RFC 6347), and no state either; a
    // ClientHello that does not parse is dropped and counted.
    spoofed[0].send_to(&with_cookie(&hello, &[0xAA; 32]), addr).expect("send");
    wait_for("the forged cookie's answer", || counter(&node, verify) == before + 21.0);
    spoofed[1].send_to(&hello[..40], addr).expect("send");
    let bad = "telemesh_secure_refused_total{reason=\"bad_client_hello\"}";
    wait_for("the truncated ClientHello", || counter(&node, bad) == 1.0);
    assert_eq!(counter(&node, "telemesh_secure_half_open "), 0.0);
    assert_eq!(counter(&node, "telemesh_secure_sessions "), 1.0);
    // Six peers that do answer the cookie, then fall silent: four handshakes are held, two
    // refused.
    let stalled: Vec<_> = (0..6).map(|_| rust_client::stall(addr, &certs)).collect();
    let full = "telemesh_secure_refused_total{reason=\"half_open_full\"}";
    wait_for("the cap", || counter(&node, full) == 2.0);
    assert_eq!(counter(&node, "telemesh_secure_half_open "), 4.0);

    // The established client is not stalled.
    for seq in 1..=3 {
        established.ssl_write(&frame(7001, seq, PAYLOAD)).expect("write");
    }
    wait_for("its records", || stored(&node, 7001).len() == 3);

    // The half-open handshakes expire; then a new client gets in.
    wait_for("the handshakes to expire", || counter(&node, "telemesh_secure_half_open ") == 0.0);
    assert_eq!(counter(&node, "telemesh_secure_refused_total{reason=\"handshake_timeout\"}"), 4.0);
    let certs2 = dir.path().join("dev7002");
    device_certs(&data, 7002, &certs2);
    let mut late = rust_client::connect(addr, &certs2, Vec::new());
    late.ssl_write(&frame(7002, 1, PAYLOAD)).expect("write");
    wait_for("the late client's record", || stored(&node, 7002).len() == 1);
    drop(stalled);
    node.stop().expect("stops");
}

#[test]
fn the_node_retransmits_its_flight_from_its_timer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = rust_node(&data, Default::default());
    let certs = dir.path().join("dev8001");
    device_certs(&data, 8001, &certs);
    // The client's second flight (its certificate, key exchange, Finished: sent datagram 2
    // on, after the two ClientHellos) and its own retransmissions are lost for 2.5 s: the
    // node hears nothing, so only its timer can send its flight again. Past the blackout
    // the client's next retransmission gets through and the handshake completes.
    let mut s = rust_client::connect_with(addr, &certs, Vec::new(), Some((2, Duration::from_millis(2500))));
    s.ssl_write(&frame(8001, 1, PAYLOAD)).expect("write");
    wait_for("the record", || stored(&node, 8001).len() == 1);
    assert!(counter(&node, "telemesh_secure_retransmissions_total") >= 1.0, "{}", metrics(&node));
    node.stop().expect("stops");
}

#[test]
fn a_device_that_restarts_on_the_same_address_gets_a_new_session() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = rust_node(&data, Default::default());
    let certs = dir.path().join("dev9001");
    device_certs(&data, 9001, &certs);
    let mut first = rust_client::connect(addr, &certs, Vec::new());
    let from = first.get_ref().local_addr();
    first.ssl_write(&frame(9001, 1, PAYLOAD)).expect("write");
    wait_for("the first record", || stored(&node, 9001).len() == 1);
    // The device reboots: no close_notify, the same address and port, a new handshake.
    drop(first);
    let mut second = rust_client::connect_from(addr, &certs, from);
    second.ssl_write(&frame(9001, 2, PAYLOAD)).expect("write");
    wait_for("the second record", || stored(&node, 9001).len() == 2);
    assert_eq!(counter(&node, "telemesh_secure_closed_total{reason=\"replaced\"}"), 1.0);
    assert_eq!(counter(&node, "telemesh_secure_sessions "), 1.0);
    node.stop().expect("stops");
}

/// `telemesh-sensor --dialect secure` (its library, `sensor::run_secure`) with the files of
/// `telemesh certs device`.
mod simulator {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    use telemesh_proto::wire::Dialect;
    use telemesh_tools::dtls::Credentials;
    use telemesh_tools::sensor::{self, Config, Dtls};

    /// `count` frames from each of `devices` at `rate`/s in total to `to`, seed 5.
    pub fn config(devices: &[u16], count: u64, rate: f64, to: SocketAddr, truth: &Path) -> Config {
        Config {
            dialect: Dialect::Secure,
            devices: devices.to_vec(),
            count: Some(count),
            rate: Some(rate),
            seed: Some(5),
            to: vec![to],
            truth: Some(truth.to_owned()),
            ..Config::default()
        }
    }

    pub fn dtls(ca: &Path, cert: &Path, key: &Path) -> Dtls {
        Dtls {
            credentials: vec![Credentials { ca: ca.to_owned(), cert: cert.to_owned(), key: key.to_owned() }],
            handshake_timeout: Duration::from_secs(30),
        }
    }

    pub fn run(config: &Config, dtls: &Dtls) -> Result<sensor::Summary, sensor::Error> {
        sensor::run_secure(config, dtls, &AtomicBool::new(false))
    }

    /// `(seq, device_time_ns, kind, "LABEL=value …")` of each line of a truth log, as
    /// [`super::stored`] lists stored records.
    pub fn truth(path: &Path) -> Vec<(u64, u64, String, String)> {
        let mut out: Vec<_> = sensor::read_truth(path)
            .expect("truth log")
            .iter()
            .map(|t| {
                let readings: Vec<String> = t
                    .readings
                    .iter()
                    .map(|r| match r {
                        sensor::Reading::Keyed { key, value } => format!("{}={}", key.key(), serde_json::json!(value)),
                        other => panic!("not a secure reading: {other:?}"),
                    })
                    .collect();
                (t.seq, t.timestamp, t.kind.name().to_owned(), readings.join(" "))
            })
            .collect();
        out.sort();
        out
    }
}

#[test]
fn the_simulators_secure_frames_come_back_exactly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    for id in [1001, 1002] {
        device_certs(&data, id, &dir.path().join("certs").join(id.to_string()));
    }
    let certs = dir.path().join("certs");
    let (ca, cert, key) = (certs.join("1001/ca.pem"), certs.join("{id}/device.pem"), certs.join("{id}/device.key"));
    let truth = dir.path().join("truth.ndjson");
    let config = simulator::config(&[1001, 1002], 25, 500.0, addr, &truth);
    let summary = simulator::run(&config, &simulator::dtls(&ca, &cert, &key)).expect("the simulator runs");
    assert_eq!((summary.packets, summary.datagrams_sent, summary.send_errors), (50, 50, 0), "{summary}");
    assert_eq!((summary.sessions, summary.handshakes.len()), (2, 2), "{summary}");
    let sent = simulator::truth(&truth);
    assert!(sent.iter().any(|r| r.2 == "data") && sent.iter().any(|r| r.2 == "heartbeat"), "{sent:?}");
    for id in [1001u32, 1002] {
        wait_for("every record", || stored(&node, id).len() == 25);
    }
    let mut got = [stored(&node, 1001), stored(&node, 1002)].concat();
    got.sort();
    // Two devices, seqs 1..=25 each; every seq, time, kind and KEY=VALUE as sent.
    assert_eq!(got, sent);
    let m = metrics(&node);
    assert_eq!(common::metric(&m, "telemesh_secure_handshakes_total"), 2.0, "{m}");
    assert_eq!(common::metric(&m, "telemesh_drops_total{dialect=\"secure\""), 0.0, "{m}");
    // The simulator ended its sessions with close_notify.
    wait_for("the sessions to close", || counter(&node, "telemesh_secure_sessions ") == 0.0);
    assert_eq!(counter(&node, "telemesh_secure_closed_total{reason=\"close_notify\"}"), 2.0);
    node.stop().expect("stops");
}

#[test]
fn the_simulator_with_a_foreign_or_mismatched_certificate_is_refused_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    let ours = dir.path().join("dev1001");
    device_certs(&data, 1001, &ours);
    let truth = dir.path().join("truth.ndjson");

    // A certificate from another CA: the node refuses the handshake with an alert, and the
    // simulator says so and sends nothing.
    let now = cert::now_secs();
    let foreign_ca = cert::issue("another CA", Role::Authority, None, now - 60, now + 86_400).expect("ca");
    let foreign = cert::issue("2001", Role::Client, Some(&foreign_ca), now - 60, now + 86_400).expect("cert");
    let (c, k) = (dir.path().join("2001.pem"), dir.path().join("2001.key"));
    std::fs::write(&c, foreign.cert.to_pem().expect("pem")).expect("write");
    std::fs::write(&k, foreign.key.private_key_to_pem_pkcs8().expect("pem")).expect("write");
    let ca = ours.join("ca.pem");
    let run = |devices: &[u16], dtls| simulator::run(&simulator::config(devices, 5, 100.0, addr, &truth), &dtls);
    let e = run(&[2001], simulator::dtls(&ca, &c, &k)).expect_err("refused");
    let text = e.to_string();
    assert!(text.contains(&format!("handshake with {addr} failed")), "{text}");
    assert!(text.contains("unknown ca") && text.contains("does not trust the CA that signed --cert"), "{text}");
    assert!(!e.is_usage(), "a refusal is not a usage error");
    wait_for("the refusal", || counter(&node, "telemesh_secure_refused_total{reason=\"unknown_ca\"}") == 1.0);

    // The node's certificate checked against a CA that did not sign it: the simulator refuses.
    let other = dir.path().join("other-ca.pem");
    std::fs::write(&other, foreign_ca.cert.to_pem().expect("pem")).expect("write");
    let (dc, dk) = (ours.join("device.pem"), ours.join("device.key"));
    let e = run(&[1001], simulator::dtls(&other, &dc, &dk)).expect_err("the node is not trusted");
    assert!(e.to_string().contains("the node's certificate does not verify against --ca"), "{e}");

    // A device id that is not the certificate's, and two devices on one certificate: usage
    // errors before anything is sent.
    let e = run(&[1002], simulator::dtls(&ca, &dc, &dk)).expect_err("wrong device");
    assert!(e.is_usage() && e.to_string().contains("is for client 1001, not device 1002"), "{e}");
    let e = run(&[1001, 1002], simulator::dtls(&ca, &dc, &dk)).expect_err("one certificate, two devices");
    assert!(e.is_usage() && e.to_string().contains("{id}"), "{e}");

    let m = metrics(&node);
    assert_eq!(common::metric(&m, "telemesh_secure_handshakes_total"), 0.0, "{m}");
    assert_eq!(common::metric(&m, "telemesh_packets_total{dialect=\"secure\"}"), 0.0, "{m}");
    assert!(stored(&node, 2001).is_empty() && stored(&node, 1001).is_empty());
    node.stop().expect("stops");
}

#[test]
fn the_simulators_handshakes_get_through_a_lossy_relay() {
    use telemesh_tools::relay;
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let (node, addr) = node(&data);
    for id in [1001, 1002, 1003] {
        device_certs(&data, id, &dir.path().join("certs").join(id.to_string()));
    }
    // 30 % of the datagrams lost each way: most handshakes lose a flight and retransmit.
    let lossy = telemesh_proto::impair::Config { loss: 0.3, ..Default::default() };
    let relay = relay::spawn(relay::Config {
        forward: lossy.clone(),
        reverse: lossy,
        seed: 11,
        ..relay::Config::new("127.0.0.1:0".parse().expect("addr"), addr)
    })
    .expect("relay");
    let certs = dir.path().join("certs");
    let (ca, cert, key) = (certs.join("1001/ca.pem"), certs.join("{id}/device.pem"), certs.join("{id}/device.key"));
    let truth = dir.path().join("truth.ndjson");
    let config = simulator::config(&[1001, 1002, 1003], 20, 60.0, relay.local_addr(), &truth);
    let summary = simulator::run(&config, &simulator::dtls(&ca, &cert, &key)).expect("the simulator runs");
    assert_eq!(summary.handshakes.len(), 3, "every handshake finished: {summary}");
    wait_for("the handshakes", || counter(&node, "telemesh_secure_handshakes_total") == 3.0);
    // What got through is what was sent, and nothing else.
    let sent = simulator::truth(&truth);
    let all = || -> Vec<_> { [1001, 1002, 1003].iter().flat_map(|&id| stored(&node, id)).collect() };
    // About 70 % arrive; a third is far below what any seed of this relay gives.
    wait_for("a third of the frames", || all().len() >= 20);
    let got = all();
    for r in &got {
        assert!(sent.contains(r), "{r:?} was not sent");
    }
    assert_eq!(counter(&node, "telemesh_drops_total{dialect=\"secure\""), 0.0);
    drop(relay);
    node.stop().expect("stops");
}
