//! A node on loopback: duplicates, gaps, reordering, wraparound, reboots, conflicts and
//! every malformed case, asserted against the exact API output and counters; then a
//! restart on the same store.

mod common;

use serde_json::Value;
use telemesh_proto::record::TimestampUnit;
use telemesh_node::api::client;
use telemesh_proto::wire::{iotstream, tinytelemetry, Dialect};

const T: u32 = 1_700_000_000;

fn iot(kind: iotstream::MsgType, device: u16, seq: u16, ts: u32, readings: &[f32]) -> Vec<u8> {
    iotstream::Repr::new(kind, device, seq, ts, readings).expect("valid").to_bytes()
}
fn data(device: u16, seq: u16, ts: u32, v: f32) -> Vec<u8> {
    iot(iotstream::MsgType::Data, device, seq, ts, &[v])
}
fn init(device: u16, ts: u32) -> Vec<u8> {
    iot(iotstream::MsgType::Init, device, 0, ts, &[])
}

/// Device 1001: INIT, a duplicate, a gap filled by a reordered packet, a gap filled late,
/// a gap never filled, a reboot, a conflict. Device 1002: 16-bit wraparound.
fn iotstream_traffic() -> Vec<Vec<u8>> {
    let mut d = vec![
        init(1001, T),
        data(1001, 1, T + 1, 1.5),
        data(1001, 1, T + 1, 1.5), // duplicate
        data(1001, 3, T + 3, 3.5), // gap: 2 missing
        data(1001, 2, T + 2, 2.5), // reordered (1 behind, within 2 s)
        iot(iotstream::MsgType::Heartbeat, 1001, 4, T + 4, &[]),
    ];
    for seq in 6..=20u16 {
        d.push(data(1001, seq, T + u32::from(seq), f32::from(seq)));
    }
    d.push(data(1001, 5, T + 5, 5.5)); // late: 15 behind
    d.push(data(1001, 23, T + 23, 23.5)); // 21 and 22 never arrive
    d.push(init(1001, T + 100)); // reboot
    d.push(data(1001, 1, T + 101, 9.0)); // seq 1 again: a new record, not a duplicate
    d.push(data(1001, 2, T + 102, 9.5));
    d.push(data(1001, 2, T + 102, 7.0)); // conflict: same identity, other content
    for (i, seq) in [65_533u16, 65_534, 65_535, 0, 1].into_iter().enumerate() {
        d.push(data(1002, seq, T + i as u32, f32::from(seq)));
    }
    d
}

fn tiny(kind: tinytelemetry::MsgType, seq: u32, ts: u32, r: &[(tinytelemetry::SensorType, f32)]) -> Vec<u8> {
    tinytelemetry::Repr::new(kind, 7, seq, ts, r).expect("valid").to_bytes()
}

fn tinytelemetry_traffic() -> Vec<Vec<u8>> {
    use tinytelemetry::{MsgType::*, SensorType::*};
    vec![
        tiny(Data, 0, T, &[(Temperature, 21.5)]),
        tiny(Heartbeat, 1, T + 1, &[]),
        tiny(Heartbeat, 1, T + 1, &[]),
        tiny(Data, 3, T + 3, &[(Humidity, 40.25), (Voltage, 3.3)]),
    ]
}

/// One datagram per malformed case, with the drop reason it must be counted under.
fn malformed_iotstream() -> Vec<(Vec<u8>, &'static str)> {
    let good = data(1001, 1, T, 1.0);
    let with = |i: usize, v: u8, fix: bool| {
        let mut b = good.clone();
        b[i] = v;
        if fix {
            b[11] = iotstream::checksum(&b);
        }
        b
    };
    vec![
        (vec![1, 1], "too_short"),
        (vec![1; 201], "too_long"),
        (with(0, 2, true), "bad_version"),
        (with(1, 9, true), "bad_type"),
        (with(11, 0, false), "bad_checksum"),
        (good[..15].to_vec(), "length_mismatch"),
        (iot(iotstream::MsgType::Init, 1001, 0, T, &[])[..].iter().copied().enumerate().map(|(i, b)| if i == 1 { 1 } else if i == 11 { b.wrapping_add(1) } else { b }).collect(), "bad_count"),
    ]
}

fn malformed_tinytelemetry() -> Vec<(Vec<u8>, &'static str)> {
    let good = tiny(tinytelemetry::MsgType::Data, 9, T, &[(tinytelemetry::SensorType::Voltage, 3.0)]);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    vec![
        (with(2, 0).into_iter().enumerate().map(|(i, b)| if i == 3 { 0 } else { b }).collect(), "device_zero"),
        (with(13, 4), "bad_sensor_type"),
        (with(1, 3), "bad_type"),
        (with(0, 0), "bad_version"),
        (with(12, 2), "length_mismatch"),
        (good[..13].iter().copied().enumerate().map(|(i, b)| if i == 12 { 0 } else { b }).collect(), "bad_count"),
        (vec![1, 2, 3], "too_short"),
    ]
}

/// `(seq, ext_seq, kind, gap, copies, device time s, readings)` of each record.
fn summary(page: &Value) -> Vec<(u64, u64, String, u64, u64, u64, String)> {
    page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| {
            let readings: Vec<String> = r["readings"]
                .as_array()
                .expect("readings")
                .iter()
                .map(|x| format!("{}={}", x["label"].as_str().expect("label"), x["value"]))
                .collect();
            (
                r["seq"].as_u64().expect("seq"),
                r["ext_seq"].as_u64().expect("ext"),
                r["kind"].as_str().expect("kind").to_owned(),
                r["gap"].as_u64().expect("gap"),
                r["copies"].as_u64().expect("copies"),
                r["device_time_ns"].as_u64().expect("t") / 1_000_000_000,
                readings.join(" "),
            )
        })
        .collect()
}

fn counters(s: &Value) -> [u64; 9] {
    let f = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("counter {k}"));
    [
        f("received"),
        f("records"),
        f("duplicates"),
        f("conflicts"),
        f("gaps"),
        f("missing"),
        f("reordered"),
        f("late"),
        f("reboots"),
    ]
}

fn feed(node: &telemesh_node::Node) {
    let iot_addr = node.iotstream.expect("iotstream on");
    let tiny_addr = node.tinytelemetry.expect("tinytelemetry on");
    let iot_bad: Vec<Vec<u8>> = malformed_iotstream().into_iter().map(|(b, _)| b).collect();
    let tiny_bad: Vec<Vec<u8>> = malformed_tinytelemetry().into_iter().map(|(b, _)| b).collect();
    common::send(iot_addr, &iotstream_traffic());
    common::send(iot_addr, &iot_bad);
    common::send(tiny_addr, &tinytelemetry_traffic());
    common::send(tiny_addr, &tiny_bad);
    let total = iotstream_traffic().len() + iot_bad.len() + tinytelemetry_traffic().len() + tiny_bad.len();
    common::wait_received(node, total as u64);
}

#[test]
fn exact_history_counters_and_drops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    feed(&node);

    let s = |seq, ext, kind: &str, gap, copies, t: u32, r: &str| (seq, ext, kind.to_owned(), gap, copies, u64::from(t), r.to_owned());
    let mut want = vec![
        s(0, 0, "init", 0, 1, T, ""),
        s(1, 1, "data", 0, 2, T + 1, "r1=1.5"),
        s(2, 2, "data", 0, 1, T + 2, "r1=2.5"),
        s(3, 3, "data", 0, 1, T + 3, "r1=3.5"),
        s(4, 4, "heartbeat", 0, 1, T + 4, ""),
        s(5, 5, "data", 0, 1, T + 5, "r1=5.5"),
    ];
    for seq in 6..=20u64 {
        want.push(s(seq, seq, "data", 0, 1, T + seq as u32, &format!("r1={seq}.0")));
    }
    want.push(s(23, 23, "data", 2, 1, T + 23, "r1=23.5"));
    want.push(s(0, 0, "init", 0, 1, T + 100, ""));
    want.push(s(1, 1, "data", 0, 1, T + 101, "r1=9.0"));
    let got = summary(&common::records(&node, "iotstream", 1001));
    assert_eq!(got[..want.len()], want[..]);
    // The conflict: both versions of seq 2 of the second boot, in content-tag order.
    assert_eq!(got.len(), want.len() + 2);
    let mut conflict: Vec<String> = got[want.len()..].iter().map(|r| r.6.clone()).collect();
    conflict.sort();
    assert_eq!(conflict, ["r1=7.0", "r1=9.5"]);
    assert!(got[want.len()..].iter().all(|r| (r.0, r.1, r.5) == (2, 2, u64::from(T + 102))));

    let wrap = summary(&common::records(&node, "iotstream", 1002));
    let ext: Vec<(u64, u64)> = wrap.iter().map(|r| (r.0, r.1)).collect();
    assert_eq!(ext, [(65_533, 65_533), (65_534, 65_534), (65_535, 65_535), (0, 65_536), (1, 65_537)]);
    assert!(wrap.iter().all(|r| r.3 == 0));

    let tiny = summary(&common::records(&node, "tinytelemetry", 7));
    assert_eq!(
        tiny,
        [
            s(0, 0, "data", 0, 1, T, "temperature=21.5"),
            s(1, 1, "heartbeat", 0, 2, T + 1, ""),
            s(3, 3, "data", 1, 1, T + 3, "humidity=40.25 voltage=3.3"),
        ]
    );

    let streams = common::get_json(&format!("{}/v1/streams", node.url()));
    // received, records, duplicates, conflicts, gaps, missing, reordered, late, reboots
    assert_eq!(counters(common::stream(&streams, "iotstream", 1001)), [27, 26, 1, 1, 3, 2, 1, 1, 1]);
    assert_eq!(common::stream(&streams, "iotstream", 1001)["out_of_order"], 2);
    assert_eq!(counters(common::stream(&streams, "iotstream", 1002)), [5, 5, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(counters(common::stream(&streams, "tinytelemetry", 7)), [4, 3, 1, 0, 1, 1, 0, 0, 0]);
    assert_eq!(streams["streams"].as_array().expect("array").len(), 3, "malformed datagrams create no stream");

    let metrics = common::get_text(&format!("{}/metrics", node.url()));
    for (dialect, cases) in [("iotstream", malformed_iotstream()), ("tinytelemetry", malformed_tinytelemetry())] {
        for (_, reason) in cases {
            let line = format!("telemesh_drops_total{{dialect=\"{dialect}\",reason=\"{reason}\"}} ");
            let count: Vec<&str> = metrics.lines().filter(|l| l.starts_with(&line)).collect();
            assert_eq!(count, [format!("{line}1").as_str()], "{dialect} {reason}");
        }
    }
    let status = common::get_json(&format!("{}/v1/status", node.url()));
    assert_eq!(status["totals"]["dropped"], 14);
    assert_eq!(status["totals"]["duplicates"], 2);
    node.stop().expect("clean stop");
}

#[test]
fn restart_resumes_identical_history_and_counters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    feed(&node);
    let before_records = common::records(&node, "iotstream", 1001);
    let before_tiny = common::records(&node, "tinytelemetry", 7);
    let before_streams = common::get_json(&format!("{}/v1/streams", node.url()));
    let node_id = common::get_json(&format!("{}/v1/status", node.url()))["node_id"].clone();
    node.stop().expect("clean stop");

    let node = common::start(dir.path(), TimestampUnit::S);
    assert_eq!(common::records(&node, "iotstream", 1001), before_records);
    assert_eq!(common::records(&node, "tinytelemetry", 7), before_tiny);
    assert_eq!(common::get_json(&format!("{}/v1/streams", node.url())), before_streams);
    assert_eq!(common::get_json(&format!("{}/v1/status", node.url()))["node_id"], node_id);

    // State carried over: the old duplicate is still a duplicate, the next seq follows on.
    common::send(node.tinytelemetry.expect("on"), &[tinytelemetry_traffic()[0].clone(), tiny(tinytelemetry::MsgType::Heartbeat, 4, T + 4, &[])]);
    common::wait_received(&node, 2);
    let streams = common::get_json(&format!("{}/v1/streams", node.url()));
    assert_eq!(counters(common::stream(&streams, "tinytelemetry", 7)), [6, 4, 2, 0, 1, 1, 0, 0, 0]);
    node.stop().expect("clean stop");
}

#[test]
fn millisecond_timestamps_unwrap_against_the_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::Ms);
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let wire = (now_ms % (1 << 32)) as u32;
    common::send(node.iotstream.expect("on"), &[data(42, 1, wire, 1.0)]);
    common::wait_received(&node, 1);
    let page = common::records(&node, "iotstream", 42);
    assert_eq!(page["records"][0]["device_time_ns"].as_u64(), Some(now_ms * 1_000_000));
    assert_eq!(page["records"][0]["timestamp"].as_u64(), Some(u64::from(wire)));
    node.stop().expect("clean stop");
}

#[test]
fn formats_and_bad_parameters() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    common::send(node.iotstream.expect("on"), &[init(5, T), data(5, 1, T + 1, 29.37), data(5, 3, T + 3, 22.99)]);
    common::wait_received(&node, 3);
    let base = format!("{}/v1/streams/iotstream/5/records", node.url());

    // The source documents' per-packet log is this node's own view: arrival times and duplicate flags.
    let csv = common::get_text(&format!("{base}?format=csv&view=local"));
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "device_id,seq,timestamp,arrival_time,msg_type,duplicate_flag,gap_flag,gap_size,reading_count,ext_seq,device_time,heard_by,auth,r1,other");
    let cols = |l: &str| -> Vec<String> { l.split(',').map(str::to_owned).collect() };
    let row = cols(lines[3]);
    assert_eq!((row[0].as_str(), row[1].as_str(), row[2].as_str()), ("5", "3", "1700000003"));
    assert_eq!((row[4].as_str(), row[5].as_str(), row[6].as_str(), row[7].as_str(), row[8].as_str()), ("DATA", "0", "1", "1", "1"));
    assert_eq!((row[12].as_str(), row[13].as_str(), row[14].as_str()), ("none", "22.99", ""));
    assert_eq!(lines.len(), 4);
    // The merged view leaves out what differs between nodes.
    let merged = common::get_text(&format!("{base}?format=csv"));
    let row = cols(merged.lines().nth(3).expect("row"));
    assert_eq!((row[3].as_str(), row[5].as_str()), ("", ""));

    let nd = common::get_text(&format!("{base}?format=ndjson&from={}&to={}", T + 1, T + 1));
    assert_eq!(nd.lines().count(), 1);
    assert!(nd.contains("\"value\":29.37"), "{nd}");

    // CloudEvents 1.0, as an independent reader (the CloudEvents SDK) parses them: every
    // required attribute, the record's identity as id, its stream as source, its device
    // time as time, and who heard it as an extension.
    let resp = ureq::get(&format!("{base}?format=cloudevents&view=local")).call().expect("cloudevents");
    assert_eq!(resp.header("content-type"), Some("application/cloudevents-batch+json"));
    let events: Vec<cloudevents::Event> = serde_json::from_str(&resp.into_string().expect("body")).expect("a CloudEvents batch");
    assert_eq!(events.len(), 3);
    let records = common::get_json(&format!("{base}?view=local"));
    for (e, r) in events.iter().zip(records["records"].as_array().expect("records")) {
        use cloudevents::AttributesReader;
        assert_eq!(e.specversion(), cloudevents::event::SpecVersion::V10);
        assert_eq!(e.source().to_string(), "/v1/streams/iotstream/5");
        assert!(e.id().starts_with(&format!("iotstream:5:{}-{}-", r["device_time_ns"], r["seq"])), "{}", e.id());
        assert_eq!(e.ty(), format!("telemesh.record.{}", r["kind"].as_str().expect("kind")));
        let time = e.time().expect("time").timestamp_nanos_opt().expect("ns");
        assert_eq!(time as u64, r["device_time_ns"].as_u64().expect("ns"));
        assert_eq!(e.extension("telemeshheardby").map(|x| x.to_string()), Some(r["heard_by"][0].as_str().expect("id").to_owned()));
        let data: Value = match e.data() {
            Some(cloudevents::Data::Json(v)) => v.clone(),
            other => panic!("data: {other:?}"),
        };
        assert_eq!(&data, r);
    }
    let ids: std::collections::BTreeSet<&str> = events.iter().map(|e| cloudevents::AttributesReader::id(e)).collect();
    assert_eq!(ids.len(), 3, "one id per record");

    let page = common::get_json(&format!("{base}?limit=2"));
    assert_eq!(page["count"], 2);
    assert_eq!(page["next_from"], "2023-11-14T22:13:23.000000000Z");

    for (query, param) in [("limit=0", "limit"), ("from=tomorrow", "from"), ("format=xml", "format"), ("view=all", "view"), ("colour=red", "colour")] {
        let err = ureq::get(&format!("{base}?{query}")).call().expect_err("400");
        match err {
            ureq::Error::Status(400, resp) => {
                let body: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
                assert_eq!(body["parameter"], param, "{query}");
                assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()));
            }
            other => panic!("{query}: {other:?}"),
        }
    }
    let bad_paths = [
        ("/v1/streams/mqtt/5/records", "dialect"),
        ("/v1/streams/iotstream/x/records", "device"),
        // Outside the dialect's ids: IoTStream's are u16, TinyTelemetry's from 1.
        ("/v1/streams/iotstream/65536/records", "device"),
        ("/v1/streams/tinytelemetry/0/records", "device"),
        ("/v1/streams/iotstream/5/records?cursor=12", "cursor"),
    ];
    for (path, param) in bad_paths {
        match ureq::get(&format!("{}{path}", node.url())).call() {
            Err(ureq::Error::Status(400, resp)) => {
                let body: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
                assert_eq!(body["parameter"], param);
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    node.stop().expect("clean stop");
}

/// Pages cut by `limit` chain by their cursor: every record exactly once, also where
/// records share a device time (three a second, at IoTStream's second resolution), and a
/// cut answer says so in every format.
#[test]
fn pages_chain_by_cursor_with_every_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    let mut sent = vec![init(9, T)];
    for seq in 1..=9u16 {
        // Three records a second: seqs 1-3 at T+1, 4-6 at T+2, 7-9 at T+3.
        sent.push(data(9, seq, T + (u32::from(seq) + 2) / 3, f32::from(seq)));
    }
    common::send(node.iotstream.expect("on"), &sent);
    common::wait_received(&node, sent.len() as u64);
    let base = format!("{}/v1/streams/iotstream/9/records", node.url());

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            Some(c) => format!("{base}?limit=4&cursor={c}"),
            None => format!("{base}?limit=4"),
        };
        let resp = ureq::get(&url).call().expect("page");
        let link = resp.header("link").map(str::to_owned);
        let header = resp.header(telemesh_node::api::NEXT_CURSOR_HEADER).map(str::to_owned);
        let page: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
        seen.extend(page["records"].as_array().expect("records").iter().map(|r| r["seq"].as_u64().expect("seq")));
        assert_eq!(page["truncated"], page["next_cursor"].is_string(), "{page}");
        assert_eq!(header.as_deref(), page["next_cursor"].as_str());
        match page["next_cursor"].as_str() {
            Some(next) => {
                let link = link.expect("a cut page links to the next");
                assert!(link.starts_with("</v1/streams/iotstream/9/records?limit=4&cursor=") && link.ends_with(">; rel=\"next\""), "{link}");
                cursor = Some(next.to_owned());
            }
            None => {
                assert!(link.is_none());
                break;
            }
        }
    }
    assert_eq!(seen, (0..=9).collect::<Vec<u64>>(), "each record once, in order");

    // Newest first: the same records, backwards, pages chained the same way.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let url = match &cursor {
            Some(c) => format!("{base}?order=desc&limit=4&cursor={c}"),
            None => format!("{base}?order=desc&limit=4"),
        };
        let page = common::get_json(&url);
        seen.extend(page["records"].as_array().expect("records").iter().map(|r| r["seq"].as_u64().expect("seq")));
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, (0..=9).rev().collect::<Vec<u64>>(), "each record once, newest first");
    // Within `from`/`to`, and with each record's gap as in device order.
    let page = common::get_json(&format!("{base}?order=desc&limit=2&to={}", T + 2));
    let got: Vec<(u64, u64)> = page["records"].as_array().expect("records").iter().map(|r| (r["seq"].as_u64().expect("seq"), r["gap"].as_u64().expect("gap"))).collect();
    assert_eq!(got, [(6, 0), (5, 0)]);

    // CSV and NDJSON say it in headers (their bodies stay rows); the client pages through.
    let resp = ureq::get(&format!("{base}?format=csv&limit=4")).call().expect("csv");
    assert!(resp.header(telemesh_node::api::NEXT_CURSOR_HEADER).is_some());
    for (format, lines) in [(client::OutputFormat::Csv, 11), (client::OutputFormat::Ndjson, 10)] {
        let api = client::Api::new(&node.url(), None);
        let q = client::Query { dialect: Dialect::Iotstream, device: "9", from: None, to: None, limit: None, format, view: client::ViewArg::Merged, page: 2, last: None, follow: false };
        let mut out = Vec::new();
        client::query(&api, q, &mut out).expect("query");
        let text = String::from_utf8(out).expect("utf-8");
        assert_eq!(text.lines().count(), lines, "{format:?}: every record, one header: {text}");
        assert_eq!(text.lines().filter(|l| l.starts_with("device_id,")).count(), usize::from(format == client::OutputFormat::Csv));
        // The latest three, oldest first.
        let mut out = Vec::new();
        client::query(&api, client::Query { last: Some(3), ..q }, &mut out).expect("query");
        let text = String::from_utf8(out).expect("utf-8");
        let seqs: Vec<&str> = text.lines().filter(|l| !l.starts_with("device_id,")).collect();
        assert_eq!(seqs.len(), 3, "{text}");
        for (line, seq) in seqs.iter().zip(["7", "8", "9"]) {
            let field = if format == client::OutputFormat::Csv { line.split(',').nth(1).unwrap_or_default().to_owned() } else { serde_json::from_str::<Value>(line).expect("json")["seq"].to_string() };
            assert_eq!(field, seq, "{text}");
        }
        // With a limit, that many records and no more.
        let mut out = Vec::new();
        client::query(&api, client::Query { limit: Some(5), ..q }, &mut out).expect("query");
        assert_eq!(String::from_utf8(out).expect("utf-8").lines().count(), lines - 5);
    }
    node.stop().expect("clean stop");
}

/// Several devices, or the known devices of a range of ids, in one query: stream after
/// stream, each record once across pages; the CLI takes the same forms.
#[test]
fn several_devices_in_one_query() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    let mut sent = Vec::new();
    for (device, n) in [(21u16, 3u16), (22, 2), (25, 4)] {
        for seq in 1..=n {
            sent.push(data(device, seq, T + u32::from(seq), f32::from(seq)));
        }
    }
    common::send(node.iotstream.expect("on"), &sent);
    common::wait_received(&node, sent.len() as u64);
    let url = |q: &str| format!("{}/v1/records?{q}", node.url());
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = common::get_json(&url(&match &cursor {
            Some(c) => format!("devices=iotstream:20-30&limit=4&cursor={c}"),
            None => "devices=iotstream:20-30&limit=4".to_owned(),
        }));
        pages += 1;
        seen.extend(page["records"].as_array().expect("records").iter().map(|r| (r["device"].as_u64().expect("d"), r["seq"].as_u64().expect("s"))));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(pages < 10);
    }
    let want = [(21, 1), (21, 2), (21, 3), (22, 1), (22, 2), (25, 1), (25, 2), (25, 3), (25, 4)];
    assert_eq!((seen.as_slice(), pages), (&want[..], 3));
    // A single id is asked even if unknown; ranges hold only known devices.
    let page = common::get_json(&url("devices=iotstream:22,iotstream:99&format=json"));
    assert_eq!(page["count"], 2);
    for (q, param) in [("limit=2", "devices"), ("devices=iotstream:1-2&devices=iotstream:3", "devices"), ("devices=iotstream:5,tinytelemetry:5&format=csv", "format"), ("devices=iotstream:5&order=desc", "order"), ("devices=iotstream:5&cursor=5", "cursor")] {
        match ureq::get(&url(q)).call() {
            Err(ureq::Error::Status(400, resp)) => {
                let body: Value = serde_json::from_str(&resp.into_string().expect("body")).expect("json");
                assert_eq!(body["parameter"], param, "{q}");
            }
            other => panic!("{q}: {other:?}"),
        }
    }
    let api = client::Api::new(&node.url(), None);
    let q = client::Query { dialect: Dialect::Iotstream, device: "20-30", from: None, to: None, limit: None, format: client::OutputFormat::Csv, view: client::ViewArg::Merged, page: 4, last: None, follow: false };
    let mut out = Vec::new();
    client::query(&api, q, &mut out).expect("query");
    let csv = String::from_utf8(out).expect("utf-8");
    assert_eq!(csv.lines().count(), 1 + want.len(), "{csv}");
    let mut out = Vec::new();
    client::query(&api, client::Query { device: "21,25", format: client::OutputFormat::Table, ..q }, &mut out).expect("query");
    let table = String::from_utf8(out).expect("utf-8");
    assert!(table.starts_with("device ") && table.trim_end().ends_with("7 record(s)"), "{table}");
    node.stop().expect("clean stop");
}
