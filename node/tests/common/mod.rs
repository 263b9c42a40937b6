//! Helpers for the node's integration tests: a node on loopback port 0 in a temp dir.
#![allow(dead_code)]

pub mod mesh;

use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;

/// A config for a node on loopback, ephemeral ports, data in `dir`.
pub fn config(dir: &Path, unit: TimestampUnit) -> Config {
    Config {
        data_dir: dir.to_owned(),
        iotstream: Some("127.0.0.1:0".parse().expect("addr")),
        tinytelemetry: Some("127.0.0.1:0".parse().expect("addr")),
        secure: Some("127.0.0.1:0".parse().expect("addr")),
        http: "127.0.0.1:0".parse().expect("addr"),
        iotstream_timestamp: unit,
        flush_interval: Duration::from_millis(50),
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        ..Config::default()
    }
}

pub fn start(dir: &Path, unit: TimestampUnit) -> Node {
    Node::start(config(dir, unit)).expect("node starts")
}

/// Sends each datagram, in order, with a short pause so loopback never overflows.
pub fn send(to: SocketAddr, datagrams: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for d in datagrams {
        s.send_to(d, to).expect("send");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Sends many datagrams quickly: bursts of 32, a millisecond apart.
pub fn send_fast<'a>(to: SocketAddr, datagrams: impl Iterator<Item = &'a [u8]>) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for (i, d) in datagrams.enumerate() {
        s.send_to(d, to).expect("send");
        if i % 32 == 31 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn get_json(url: &str) -> serde_json::Value {
    let body = telemesh_node::api::client::body(ureq::get(url).call().expect("GET")).expect("body");
    serde_json::from_str(&body).expect("json")
}

/// The node's first overlay address with its peer id (a `--bootstrap` address), once the
/// mesh driver has published it in `/v1/status`.
pub fn bootstrap_addr(node: &Node) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = get_json(&format!("{}/v1/status", node.url()));
        if let Some(a) = s["listen"].as_array().and_then(|l| l.first()).and_then(|a| a.as_str()) {
            return a.to_owned();
        }
        assert!(Instant::now() < deadline, "no listen address in /v1/status");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn get_text(url: &str) -> String {
    telemesh_node::api::client::body(ureq::get(url).call().expect("GET")).expect("body")
}

/// The sum of a metric's samples whose line starts with `name` (all its labels, unless
/// `name` names some) in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Waits until the node has taken in `n` datagrams and written what it queued.
pub fn wait_received(node: &Node, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = get_json(&format!("{}/v1/status", node.url()));
        if s["totals"]["received"].as_u64() == Some(n) {
            break;
        }
        assert!(Instant::now() < deadline, "node received {} of {n} datagrams", s["totals"]["received"]);
        std::thread::sleep(Duration::from_millis(20));
    }
    // Records are written within the listener's batch delay and poll interval.
    std::thread::sleep(Duration::from_millis(100));
}

/// Waits until the node's received count stops moving (the kernel may have dropped
/// some of a flood) and returns it.
pub fn wait_quiet(node: &Node) -> u64 {
    let mut last = u64::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = get_json(&format!("{}/v1/status", node.url()))["totals"]["received"].as_u64().expect("received");
        if now == last {
            std::thread::sleep(Duration::from_millis(100));
            return now;
        }
        last = now;
    }
}

pub fn records(node: &Node, dialect: &str, device: u32) -> serde_json::Value {
    get_json(&format!("{}/v1/streams/{dialect}/{device}/records?limit=100000&view=local", node.url()))
}

pub fn stream<'a>(streams: &'a serde_json::Value, dialect: &str, device: u64) -> &'a serde_json::Value {
    streams["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .find(|s| s["dialect"] == dialect && s["device"].as_u64() == Some(device))
        .expect("stream listed")
}

/// The `telemesh` binary built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_telemesh");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// The `telemesh` binary running a node as a child process (iotstream only, seconds).
pub struct Daemon {
    pub child: Child,
    pub http: SocketAddr,
    pub udp: SocketAddr,
}

/// A daemon a test did not stop is killed with the test, not left running.
impl Drop for Daemon {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Daemon {
    pub fn start(data: &std::path::Path, flush: &str) -> Daemon {
        Daemon::start_with(data, flush, &[])
    }

    /// [`Daemon::start`] with more `telemesh node` arguments.
    pub fn start_with(data: &std::path::Path, flush: &str, extra: &[&str]) -> Daemon {
        let http: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let udp_port = UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let udp: SocketAddr = format!("127.0.0.1:{udp_port}").parse().expect("addr");
        let child = Command::new(BIN)
            .args(["node", "--data", data.to_str().expect("utf-8"), "--tinytelemetry", "off", "--secure", "off"])
            .args(["--iotstream", &udp.to_string(), "--http", &http.to_string(), "--iotstream-timestamp", "s"])
            .args(["--flush-interval", flush, "--listen", "/ip4/127.0.0.1/tcp/0"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawns");
        let d = Daemon { child, http, udp };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(&format!("http://{http}/v1/status")).call().is_err() {
            assert!(Instant::now() < deadline, "node did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn signal(&mut self, sig: &str) -> (i32, String) {
        let pid = self.child.id().to_string();
        Command::new("kill").args([sig, &pid]).status().expect("kill");
        let status = self.child.wait().expect("exits");
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        (status.code().unwrap_or(-1), err)
    }
}


/// A join token from `owner` (a node that holds its mesh's owner key), valid for `expires`.
pub fn invite(owner: &Node, expires: &str) -> telemesh_node::trust::Token {
    let url = format!("{}/v1/mesh/invites?expires={expires}", owner.url());
    let body = telemesh_node::api::client::body(ureq::post(&url).call().expect("POST invite")).expect("body");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    telemesh_node::trust::Token::parse(v["token"].as_str().expect("a token")).expect("the token parses")
}

/// `config` for a node that joins `owner`'s closed mesh with a fresh invitation.
pub fn joining(config: Config, owner: &Node) -> Config {
    Config { join: Some(invite(owner, "10m")), ..config }
}
