//! The live tail (`…/records?follow=true`, `telemesh query --follow`): records as they
//! arrive, late ones too, as server-sent events; a client that does not read is dropped
//! and counted, and the node holds no more for it.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::Value;
use telemesh_node::api::client;
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::iotstream::{MsgType, Repr};
use telemesh_proto::wire::Dialect;

const T: u32 = 1_700_000_000;

fn data(device: u16, seq: u16, ts: u32) -> Vec<u8> {
    Repr::new(MsgType::Data, device, seq, ts, &[f32::from(seq)]).expect("valid").to_bytes()
}

fn query(device: &'static str, format: client::OutputFormat, limit: usize, from: Option<&'static str>) -> client::Query<'static> {
    client::Query {
        dialect: Dialect::Iotstream,
        device,
        from,
        to: None,
        limit: Some(limit),
        format,
        view: client::ViewArg::Merged,
        page: telemesh_node::api::MAX_LIMIT,
        last: None,
        follow: true,
    }
}

#[test]
fn a_tail_sends_records_as_they_arrive_late_ones_included() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    let to = node.iotstream.expect("on");
    // Held before the tail starts: not sent (it starts from now).
    common::send(to, &[data(4, 1, T + 1)]);
    common::wait_received(&node, 1);
    let url = node.url();
    let tail = std::thread::spawn(move || {
        let mut out = Vec::new();
        client::query(&client::Api::new(&url, None), query("4", client::OutputFormat::Ndjson, 3, None), &mut out).expect("tail");
        String::from_utf8(out).expect("utf-8")
    });
    std::thread::sleep(Duration::from_millis(1500));
    // Two new records, then one late (behind them in device time, as a repaired one is).
    common::send(to, &[data(4, 5, T + 5), data(4, 6, T + 6)]);
    std::thread::sleep(Duration::from_millis(1000));
    common::send(to, &[data(4, 3, T + 3)]);
    let lines = tail.join().expect("tail thread");
    let seqs: Vec<u64> = lines.lines().map(|l| serde_json::from_str::<Value>(l).expect("json")["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, [5, 6, 3], "{lines}");

    // With `from`, what is held comes first; CloudEvents and a table work the same way.
    let api = client::Api::new(&node.url(), None);
    let mut out = Vec::new();
    client::query(&api, query("4", client::OutputFormat::Cloudevents, 2, Some("0")), &mut out).expect("tail");
    let events: Vec<Value> = String::from_utf8(out).expect("utf-8").lines().map(|l| serde_json::from_str(l).expect("json")).collect();
    assert_eq!(events.iter().map(|e| e["data"]["seq"].as_u64().expect("seq")).collect::<Vec<_>>(), [1, 3]);
    assert_eq!(events[0]["type"], "telemesh.record.data");
    let mut out = Vec::new();
    client::query(&api, query("4", client::OutputFormat::Table, 4, Some("0")), &mut out).expect("tail");
    let table = String::from_utf8(out).expect("utf-8");
    assert!(table.starts_with("device time") && table.lines().count() == 5, "{table}");

    // Not with another format, a cursor, or several devices.
    for bad in ["format=csv&follow=true", "follow=true&order=desc", "follow=true&cursor=1-1-0000000000000000", "follow=yes"] {
        match ureq::get(&format!("{}/v1/streams/iotstream/4/records?{bad}", node.url())).call() {
            Err(ureq::Error::Status(400, _)) => {}
            other => panic!("{bad}: {other:?}"),
        }
    }
    node.stop().expect("clean stop");
}

#[test]
fn a_client_that_does_not_read_is_dropped_and_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    // Far more events than the queue and the sockets' buffers hold.
    let datagrams: Vec<Vec<u8>> = (0..30_000u32).map(|i| data(8, (i % 65_536) as u16, T + i / 10)).collect();
    common::send_fast(node.iotstream.expect("on"), datagrams.iter().map(Vec::as_slice));
    common::wait_received(&node, datagrams.len() as u64);
    let addr = node.url().trim_start_matches("http://").to_owned();
    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    write!(stream, "GET /v1/streams/iotstream/8/records?follow=true&from=0 HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
    // … and never read.
    let metric = |name: &str| common::metric(&common::get_text(&format!("{}/metrics", node.url())), name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric("telemesh_http_follow_dropped_total") < 1.0 {
        assert!(Instant::now() < deadline, "the slow client was never dropped");
        std::thread::sleep(Duration::from_millis(100));
    }
    while metric("telemesh_http_followers") > 0.0 {
        assert!(Instant::now() < deadline, "the dropped tail is still counted as open");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stream);
    node.stop().expect("clean stop");
}

#[test]
fn a_flood_of_tails_is_capped_and_the_rest_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    let addr = node.url().trim_start_matches("http://").to_owned();
    // An attacker opens as many live tails as the node allows, and keeps them.
    let held: Vec<std::net::TcpStream> = (0..telemesh_node::api::follow::MAX_FOLLOWERS)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&addr).expect("connect");
            write!(s, "GET /v1/streams/iotstream/8/records?follow=true HTTP/1.1\r\nHost: {addr}\r\n\r\n").expect("request");
            s
        })
        .collect();
    let metric = |name: &str| common::metric(&common::get_text(&format!("{}/metrics", node.url())), name);
    let deadline = Instant::now() + Duration::from_secs(30);
    while metric("telemesh_http_followers") < telemesh_node::api::follow::MAX_FOLLOWERS as f64 {
        assert!(Instant::now() < deadline, "the tails did not open");
        std::thread::sleep(Duration::from_millis(100));
    }
    // One more is refused at once, and the rest of the API still answers.
    match ureq::get(&format!("{}/v1/streams/iotstream/8/records?follow=true", node.url())).call() {
        Err(ureq::Error::Status(503, resp)) => {
            let body: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
            assert_eq!(body["parameter"], "follow");
        }
        other => panic!("a tail beyond the cap: {other:?}"),
    }
    assert_eq!(common::get_json(&format!("{}/v1/streams/iotstream/8/records", node.url()))["count"], 0);
    drop(held);
    node.stop().expect("clean stop");
}
