//! `/v1/streams/{dialect}/{device}/aggregate` and `/v1/align` on a node on loopback:
//! exact statistics per bucket (across window boundaries, NaN skipped, records this node
//! only holds by repair included), every bad parameter refused by name, the bucket cap,
//! two devices with known clock offsets lined up on one time base, and the examples of
//! `docs/api.md` run as written.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use telemesh_node::store::{Encoded, SledStore, Store, StoredRecord};
use telemesh_proto::record::{Kind, Readings, Record, StreamId, TimestampUnit};
use telemesh_proto::window;
use telemesh_proto::wire::{iotstream, Dialect};

/// 2023-11-14T22:14:00Z: a window start (a multiple of 60 s) and of 40 s.
const W: u32 = 1_700_000_040;

/// Device 3001, one record a second for two windows: `r1 = 20 + i/4`, `r2 = 45.5` except
/// every tenth, which is NaN; and a heartbeat (no readings) in the middle.
fn two_windows() -> Vec<Vec<u8>> {
    let mut d: Vec<Vec<u8>> = (0..120u16)
        .map(|i| {
            let r2 = if i % 10 == 0 { f32::NAN } else { 45.5 };
            iotstream::Repr::new(iotstream::MsgType::Data, 3001, i, W + u32::from(i), &[r1(i), r2]).expect("valid").to_bytes()
        })
        .collect();
    d.push(iotstream::Repr::new(iotstream::MsgType::Heartbeat, 3001, 120, W + 70, &[]).expect("valid").to_bytes());
    d
}

fn r1(i: u16) -> f32 {
    20.0 + f32::from(i) / 4.0
}

fn get(url: &str) -> Result<String, (u16, Value)> {
    match ureq::get(url).call() {
        Ok(r) => Ok(telemesh_node::api::client::body(r).expect("body")),
        Err(ureq::Error::Status(code, r)) => {
            Err((code, serde_json::from_str(&r.into_string().expect("body")).expect("json error")))
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

/// The JSON answer to a request that must succeed.
fn ok(url: &str) -> Value {
    serde_json::from_str(&get(url).unwrap_or_else(|e| panic!("{url}: {e:?}"))).expect("json")
}

/// The 400 a request gets, and the parameter it names.
fn refused(url: &str) -> String {
    match get(url) {
        Err((400, body)) => {
            assert!(body["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
            body["parameter"].as_str().expect("a parameter named").to_owned()
        }
        other => panic!("{url}: {other:?}"),
    }
}

/// `(start_ns / 1e9, label, count, avg, min, max, skipped)` of each bucket and label.
fn rows(answer: &Value) -> Vec<(u64, String, u64, f64, f64, f64, u64)> {
    let mut out = Vec::new();
    for b in answer["buckets"].as_array().expect("buckets") {
        for (label, s) in b["labels"].as_object().expect("labels") {
            let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
            out.push((
                b["start_ns"].as_u64().expect("start_ns") / 1_000_000_000,
                label.clone(),
                s["count"].as_u64().expect("count"),
                f("avg"),
                f("min"),
                f("max"),
                s["skipped"].as_u64().expect("skipped"),
            ));
        }
    }
    out
}

/// The examples of a section of `docs/api.md`: each code block that is a `GET` request,
/// with the block after it (its answer).
fn examples(heading: &str) -> Vec<(String, String)> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).expect("docs/api.md");
    let section = doc.split("\n## ").find(|s| s.starts_with(heading)).unwrap_or_else(|| panic!("no section {heading}"));
    let section = section.split("\n### ").next().unwrap_or(section);
    // Odd pieces between fences are code blocks; drop each one's language line.
    let blocks: Vec<&str> =
        section.split("```").skip(1).step_by(2).map(|b| b.split_once('\n').map_or("", |(_, body)| body).trim()).collect();
    let pairs: Vec<(String, String)> = blocks
        .windows(2)
        .filter(|w| w[0].starts_with("GET "))
        .map(|w| (w[0].trim_start_matches("GET ").to_owned(), w[1].to_owned()))
        .collect();
    assert!(!pairs.is_empty(), "no GET example in {heading}");
    pairs
}

#[test]
fn aggregates_are_exact_per_bucket_and_label() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::S);
    let traffic = two_windows();
    common::send(node.iotstream.expect("iotstream on"), &traffic);
    common::wait_received(&node, traffic.len() as u64);
    let base = format!("{}/v1/streams/iotstream/3001/aggregate", node.url());
    let w = u64::from(W);

    // One bucket a window: r1 = 20 + i/4 over i = 0..59 and 60..119; r2's NaNs skipped.
    let minute = ok(&format!("{base}?every=1m"));
    let head = (&minute["dialect"], &minute["device"], &minute["every"], &minute["every_ns"]);
    assert_eq!(head, (&"iotstream".into(), &3001.into(), &"1m".into(), &60_000_000_000u64.into()));
    assert_eq!(minute["functions"], serde_json::json!(["count", "avg", "min", "max"]));
    assert_eq!(minute["buckets"][0]["start"], "2023-11-14T22:14:00Z");
    assert_eq!(
        rows(&minute),
        [
            (w, "r1".into(), 60, 27.375, 20.0, 34.75, 0),
            (w, "r2".into(), 54, 45.5, 45.5, 45.5, 6),
            (w + 60, "r1".into(), 60, 42.375, 35.0, 49.75, 0),
            (w + 60, "r2".into(), 54, 45.5, 45.5, 45.5, 6),
        ]
    );

    // 40 s buckets: the middle one spans the window boundary at W + 60.
    let forty = ok(&format!("{base}?every=40s&fn=sum,first,last,count"));
    let r1s: Vec<(u64, u64, f64, f64, f64)> = forty["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            let s = &b["labels"]["r1"];
            let f = |k: &str| s[k].as_f64().expect(k);
            let start = b["start_ns"].as_u64().expect("start") / 1_000_000_000;
            (start, s["count"].as_u64().expect("count"), f("sum"), f("first"), f("last"))
        })
        .collect();
    assert_eq!(r1s, [(w, 40, 995.0, 20.0, 29.75), (w + 40, 40, 1395.0, 30.0, 39.75), (w + 80, 40, 1795.0, 40.0, 49.75)]);
    assert!(forty["buckets"][0]["labels"]["r1"].get("avg").is_none(), "only the functions asked for");
    let mid = &forty["buckets"][1]["labels"]["r2"];
    assert_eq!((&mid["count"], &mid["skipped"], &mid["first"]), (&36.into(), &4.into(), &45.5.into()));

    // from/to cut inside buckets: the buckets keep their aligned starts, counting only
    // what is in range (both ends inclusive).
    let cut = ok(&format!("{base}?every=1m&from={}&to={}", w + 30, w + 89));
    let r1_cut: Vec<_> = rows(&cut).into_iter().filter(|r| r.1 == "r1").collect();
    assert_eq!(r1_cut, [(w, "r1".into(), 30, 31.125, 27.5, 34.75, 0), (w + 60, "r1".into(), 30, 38.625, 35.0, 42.25, 0)]);

    // CSV: one row per bucket and label, functions in a fixed order, empty where none.
    let csv = get(&format!("{base}?every=1m&fn=max,avg,count,min&format=csv")).expect("200");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines,
        [
            "start,label,count,avg,min,max,skipped",
            "2023-11-14T22:14:00Z,r1,60,27.375,20,34.75,0",
            "2023-11-14T22:14:00Z,r2,54,45.5,45.5,45.5,6",
            "2023-11-14T22:15:00Z,r1,60,42.375,35,49.75,0",
            "2023-11-14T22:15:00Z,r2,54,45.5,45.5,45.5,6",
        ]
    );
    // A bucket where every reading was NaN: counted as skipped, no value.
    let nan_only = ok(&format!("{base}?every=1s&from={w}&to={w}&fn=avg,sum"));
    assert_eq!(nan_only["buckets"][0]["labels"]["r2"], serde_json::json!({ "avg": null, "sum": null, "skipped": 1 }));
    // Nothing in range: no buckets.
    let empty = ok(&format!("{base}?to={}", w - 1));
    assert_eq!(empty["buckets"], serde_json::json!([]));

    // The bucket cap: 120 s in 10 ms is 11,901 intervals; in 12 ms, 9,917.
    assert_eq!(refused(&format!("{base}?every=10ms")), "every");
    let (code, body) = get(&format!("{base}?every=10ms")).expect_err("400");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(code == 400 && message.contains("11901") && message.contains("narrow from/to"), "{body}");
    let fine = ok(&format!("{base}?every=12ms"));
    assert_eq!(fine["buckets"].as_array().map(Vec::len), Some(120));
    // …counted over from..to clipped to the records there, not over the whole clock.
    assert!(get(&format!("{base}?every=1ms&from={}&to={}", w, w + 5)).is_ok());

    let url = node.url();
    for (query, param) in [
        ("every=0s", "every"),
        ("every=soon", "every"),
        ("every=1m&every=2m", "every"),
        ("fn=median", "fn"),
        ("fn=avg,avg", "fn"),
        ("fn=", "fn"),
        ("from=yesterday", "from"),
        ("from=5&to=1", "from"),
        ("format=xml", "format"),
        ("view=local", "view"),
    ] {
        assert_eq!(refused(&format!("{base}?{query}")), param, "{query}");
    }
    for (path, param) in [
        ("/v1/streams/mqtt/5/aggregate", "dialect"),
        ("/v1/streams/iotstream/x/aggregate", "device"),
        ("/v1/streams/iotstream/65536/aggregate", "device"),
        ("/v1/streams/tinytelemetry/0/aggregate", "device"),
    ] {
        assert_eq!(refused(&format!("{url}{path}")), param, "{path}");
    }

    // docs/api.md's examples, run as written: the same answers, byte for byte in CSV.
    for (request, answer) in examples("`GET /v1/streams/{dialect}/{device}/aggregate") {
        let got = get(&format!("{url}{request}")).expect("the documented request succeeds");
        if request.contains("format=csv") {
            assert_eq!(got.trim_end(), answer, "{request}");
        } else {
            let want: Value = serde_json::from_str(&answer).expect("the documented answer is JSON");
            assert_eq!(serde_json::from_str::<Value>(&got).expect("json"), want, "{request}");
        }
    }
    node.stop().expect("clean stop");
}

/// Unix milliseconds now, by this machine's clock (the node's).
fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_millis() as u64
}

/// A record of device 3003 this node holds only as a peer would have repaired it: in the
/// store, never received here, so the node has no clock estimate for it.
fn repaired_only(dir: &std::path::Path, device_time_ns: u64) {
    let stream = StreamId::new(Dialect::Iotstream, 3003);
    let record =
        Record { stream, device_time_ns, seq: 1, timestamp_raw: 1, kind: Kind::Data, readings: Readings::Batch(vec![7.25]) };
    let store = SledStore::open(dir, 16).expect("store");
    let repaired = StoredRecord::repaired(record, 1);
    store.append(&[Encoded::new(stream, window::start(device_time_ns), [&repaired])], &[], &[]).expect("append");
    store.flush().expect("flush");
}

#[test]
fn align_puts_devices_with_known_offsets_on_one_time_base() {
    let dir = tempfile::tempdir().expect("tempdir");
    repaired_only(dir.path(), 1_700_000_000_500_000_000);
    let node = common::start(dir.path(), TimestampUnit::Ms);
    let to = node.iotstream.expect("iotstream on");
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let send = |device: u16, seq: u16, ts: u64, v: f32| {
        let d = iotstream::Repr::new(iotstream::MsgType::Data, device, seq, ts as u32, &[v]).expect("valid").to_bytes();
        socket.send_to(&d, to).expect("send");
    };
    // Device 3001's clock is 5 s behind this machine's, 3002's 2 s ahead. In the middle of
    // each of four seconds both send at once: their device times are 7 s apart, the
    // instant the same.
    let mut seconds = Vec::new();
    for k in 0..4u16 {
        let now = now_ms();
        std::thread::sleep(Duration::from_millis(1500 - now % 1000));
        let now = now_ms();
        seconds.push(now / 1000);
        send(3001, k, now - 5000, 10.0 + f32::from(k));
        send(3002, k, now + 2000, 20.0 + f32::from(k));
    }
    common::wait_received(&node, 8);
    let (first, last) = (seconds[0], seconds[3]);
    let url = node.url();
    let query = format!("streams=iotstream:3001,iotstream:3002,iotstream:3003&every=1s&from={}&to={}", first - 1, last + 1);
    let a = ok(&format!("{url}/v1/align?{query}"));
    assert_eq!(a["columns"], serde_json::json!(["start", "start_ns", "iotstream:3001/r1", "iotstream:3002/r1"]), "{a}");
    // (A machine too slow to send within half a second would leave a row of nulls between.)
    let values: Vec<(u64, f64, f64)> = a["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter(|row| !row[2].is_null() || !row[3].is_null())
        .map(|row| {
            (row[1].as_u64().expect("start_ns") / 1_000_000_000, row[2].as_f64().expect("3001"), row[3].as_f64().expect("3002"))
        })
        .collect();
    let want: Vec<(u64, f64, f64)> =
        seconds.iter().zip(0..).map(|(s, k)| (*s, 10.0 + f64::from(k), 20.0 + f64::from(k))).collect();
    assert_eq!(values, want, "{a}");
    assert_eq!(a["values"][0][0].as_str().map(str::len), Some("2025-12-11T18:20:00Z".len()));

    let streams = a["streams"].as_array().expect("streams");
    let stream = |name: &str| streams.iter().find(|s| s["stream"] == name).expect(name).clone();
    let (s1, s2, s3) = (stream("iotstream:3001"), stream("iotstream:3002"), stream("iotstream:3003"));
    let offset = |s: &Value| s["correction"]["offset_ms"].as_f64().expect("offset");
    // The estimate is the smallest arrival − device time: the offset plus the quickest
    // delivery over loopback, under a millisecond here (a slow machine may take longer).
    assert!((5000.0..5250.0).contains(&offset(&s1)), "{s1}");
    assert!((-2000.0..-1750.0).contains(&offset(&s2)), "{s2}");
    for s in [&s1, &s2] {
        let c = &s["correction"];
        let got = (&c["measured"], &c["drift_ppm"], &s["records"], &s["labels"]);
        assert_eq!(got, (&true.into(), &Value::Null, &4.into(), &serde_json::json!(["r1"])), "{s}");
        assert!(c["uncertainty_ms"].as_f64().is_some_and(|u| u >= 0.0) && c["reference_ns"].as_u64().is_some(), "{s}");
    }
    // Uncorrected, the two devices' records lie 7 s apart.
    let raw = |device: u32| {
        let page = common::get_json(&format!("{url}/v1/streams/iotstream/{device}/aggregate?every=1s&from={}", first - 10));
        page["buckets"][0]["start_ns"].as_u64().expect("a bucket") / 1_000_000_000
    };
    assert_eq!((raw(3001), raw(3002)), (first - 5, first + 2));

    // No estimate for 3003 (never heard here): no correction, said so; with label=r1 its
    // column is there, empty.
    let c3 = &s3["correction"];
    let got = (&c3["measured"], &c3["offset_ms"], &c3["uncertainty_ms"], &s3["records"]);
    assert_eq!(got, (&false.into(), &0.0.into(), &Value::Null, &0.into()));
    let labelled = common::get_json(&format!("{url}/v1/align?{query}&label=r1"));
    assert_eq!(labelled["columns"][4], "iotstream:3003/r1");
    assert!(labelled["values"].as_array().expect("values").iter().all(|row| row[4].is_null() && row[2].is_number()));
    // Its repaired record is aligned at its device time, and counts in the merged history.
    let old = ok(&format!("{url}/v1/align?streams=iotstream:3001,iotstream:3003&from=1699999999.5&to=1700000001.5"));
    assert_eq!(old["columns"], serde_json::json!(["start", "start_ns", "iotstream:3003/r1"]), "{old}");
    assert_eq!(old["values"], serde_json::json!([["2023-11-14T22:13:20Z", 1_700_000_000_000_000_000u64, 7.25]]));
    assert_eq!(old["streams"][1]["correction"]["measured"], false);
    let merged = common::get_json(&format!("{url}/v1/streams/iotstream/3003/aggregate"));
    assert_eq!(merged["buckets"][0]["labels"]["r1"]["count"], 1);

    // CSV: the same table.
    let csv = get(&format!("{url}/v1/align?{query}&format=csv")).expect("200");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "start,start_ns,iotstream:3001/r1,iotstream:3002/r1");
    assert_eq!(lines.len(), 5);
    assert!(lines[1].ends_with(",10,20"), "{csv}");

    for (q, param) in [
        ("", "streams"),
        ("streams=iotstream:3001", "streams"),
        ("streams=iotstream:3001,iotstream:3001", "streams"),
        ("streams=iotstream:3001,tinytelemetry:0", "streams"),
        ("streams=iotstream:3001,iotstream:70000", "streams"),
        ("streams=iotstream:3001,mqtt:2", "streams"),
        ("streams=iotstream:3001,iotstream:3002&every=0s", "every"),
        ("streams=iotstream:3001,iotstream:3002&from=9&to=1", "from"),
        ("streams=iotstream:3001,iotstream:3002&label=", "label"),
        ("streams=iotstream:3001,iotstream:3002&format=ndjson", "format"),
        ("streams=iotstream:3001,iotstream:3002&colour=red", "colour"),
        ("streams=iotstream:3001,iotstream:3002&to=1&to=2", "to"),
    ] {
        assert_eq!(refused(&format!("{url}/v1/align?{q}")), param, "{q}");
    }
    // The cap counts the span of the corrected records: 4 s in 1 ms is over 3,000
    // intervals, fine; 3003's repaired record, years before, with the others is not.
    assert!(get(&format!("{url}/v1/align?streams=iotstream:3001,iotstream:3002&every=1ms")).is_ok());
    assert_eq!(refused(&format!("{url}/v1/align?streams=iotstream:3001,iotstream:3003")), "every");

    // docs/api.md's example: the documented request (over this test's seconds) answers
    // in the documented shape, with the documented columns.
    for (request, answer) in examples("`GET /v1/align") {
        let want: Value = serde_json::from_str(&answer).expect("the documented answer is JSON");
        let request: String = request
            .split('&')
            .map(|p| match p.split_once('=') {
                Some(("from", _)) => format!("from={}", first - 1),
                Some(("to", _)) => format!("to={}", last + 1),
                _ => p.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("&");
        let got = common::get_json(&format!("{url}{request}"));
        let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(keys(&got), keys(&want), "{request}");
        assert_eq!(got["columns"], want["columns"], "{request}");
        assert_eq!(keys(&got["streams"][0]), keys(&want["streams"][0]));
        assert_eq!(keys(&got["streams"][0]["correction"]), keys(&want["streams"][0]["correction"]));
        assert_eq!(got["values"][0].as_array().map(Vec::len), want["values"][0].as_array().map(Vec::len));
    }
    node.stop().expect("clean stop");
}
