//! Helpers for the node's integration tests: a node on loopback port 0 in a temp dir.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;

/// A config for a node on loopback, ephemeral ports, data in `dir`.
pub fn config(dir: &Path, unit: TimestampUnit) -> Config {
    Config {
        data_dir: dir.to_owned(),
        iotstream: Some("127.0.0.1:0".parse().expect("addr")),
        tinytelemetry: Some("127.0.0.1:0".parse().expect("addr")),
        http: "127.0.0.1:0".parse().expect("addr"),
        iotstream_timestamp: unit,
        flush_interval: Duration::from_millis(50),
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
    let body = telemesh_node::client::body(ureq::get(url).call().expect("GET")).expect("body");
    serde_json::from_str(&body).expect("json")
}

pub fn get_text(url: &str) -> String {
    telemesh_node::client::body(ureq::get(url).call().expect("GET")).expect("body")
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
    get_json(&format!("{}/v1/streams/{dialect}/{device}/records?limit=100000", node.url()))
}

pub fn stream<'a>(streams: &'a serde_json::Value, dialect: &str, device: u64) -> &'a serde_json::Value {
    streams["streams"]
        .as_array()
        .expect("streams array")
        .iter()
        .find(|s| s["dialect"] == dialect && s["device"].as_u64() == Some(device))
        .expect("stream listed")
}
