//! The simulator's ground-truth log equals what the node returns when nothing is lost:
//! several devices, 16-bit wraparound and a reboot (IoTStream), and TinyTelemetry.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;

use telemesh_proto::record::{Record, TimestampUnit};
use telemesh_proto::wire::Dialect;
use telemesh_tools::sensor;

/// `(device time ns, seq, kind, readings)` per device.
type History = BTreeMap<u64, Vec<(u64, u64, String, String)>>;

fn expected(truth: &[sensor::TruthRecord]) -> History {
    let mut h = History::new();
    for t in truth {
        let r = Record::from_datagram(t.dialect, &t.datagram, t.sent_at_ns, TimestampUnit::Ms).expect("the simulator sends valid datagrams");
        let readings: Vec<String> = r.readings.labelled().into_iter().map(|(l, v)| format!("{l}={v}")).collect();
        h.entry(u64::from(t.device)).or_default().push((r.device_time_ns, r.seq, r.kind.name().to_owned(), readings.join(" ")));
    }
    for v in h.values_mut() {
        v.sort();
    }
    h
}

fn returned(node: &telemesh_node::Node, dialect: &str, devices: &[u16]) -> History {
    let mut h = History::new();
    for d in devices {
        let page = common::records(node, dialect, u32::from(*d));
        for r in page["records"].as_array().expect("records") {
            let readings: Vec<String> = r["readings"]
                .as_array()
                .expect("readings")
                .iter()
                .map(|x| format!("{}={}", x["label"].as_str().expect("label"), x["value"].as_f64().expect("value")))
                .collect();
            h.entry(u64::from(*d)).or_default().push((
                r["device_time_ns"].as_u64().expect("time"),
                r["seq"].as_u64().expect("seq"),
                r["kind"].as_str().expect("kind").to_owned(),
                readings.join(" "),
            ));
        }
    }
    h
}

/// Asserts equal histories, naming the first difference instead of printing them whole.
fn same(got: &History, want: &History) {
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "devices");
    for (device, w) in want {
        let g = &got[device];
        if let Some(i) = (0..w.len().min(g.len())).find(|i| g[*i] != w[*i]) {
            panic!("device {device}, record {i}: node has {:?}, truth has {:?}", g[i], w[i]);
        }
        assert_eq!(g.len(), w.len(), "device {device}: record count");
    }
}

fn simulate(config: sensor::Config) -> Vec<sensor::TruthRecord> {
    let summary = sensor::run(&config, &AtomicBool::new(false)).expect("simulator runs");
    assert_eq!(summary.send_errors, 0);
    sensor::read_truth(config.truth.as_deref().expect("truth path")).expect("truth log")
}

#[test]
fn ground_truth_equals_node_history_when_nothing_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = common::start(dir.path(), TimestampUnit::Ms);
    let devices: Vec<u16> = (1001..=1006).collect();

    let iot = simulate(sensor::Config {
        dialect: Dialect::Iotstream,
        devices: devices.clone(),
        rate: Some(3000.0),
        count: Some(150),
        reboot_after: Some(100), // reboots (INIT, seq 0) at packet 100
        seed: Some(7),
        to: vec![node.iotstream.expect("on")],
        truth: Some(dir.path().join("iotstream.ndjson")),
        ..sensor::Config::default()
    });
    // One device counting all the way through 65535 → 0 on a 1 s schedule (18 hours of
    // device time, ending now): generated without waiting, then sent quickly.
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64;
    let wrap_config = sensor::Config {
        dialect: Dialect::Iotstream,
        devices: vec![2001],
        count: Some(65_600),
        seed: Some(9),
        start_time_ms: Some(now_ms - 65_600 * 1000),
        dry_run: true,
        truth: Some(dir.path().join("wrap.ndjson")),
        ..sensor::Config::default()
    };
    let wrap = simulate(wrap_config);
    common::send_fast(node.iotstream.expect("on"), wrap.iter().map(|t| t.datagram.as_slice()));
    let tiny = simulate(sensor::Config {
        dialect: Dialect::Tinytelemetry,
        devices: devices.clone(),
        rate: Some(3000.0),
        count: Some(60),
        batch: Some(10),
        seed: Some(8),
        to: vec![node.tinytelemetry.expect("on")],
        truth: Some(dir.path().join("tiny.ndjson")),
        ..sensor::Config::default()
    });
    assert_eq!(iot.len(), 6 * 150);
    assert!(iot.iter().filter(|t| t.seq == 0).count() >= 12, "every device sends INIT twice (boot and reboot)");
    common::wait_received(&node, (iot.len() + wrap.len() + tiny.len()) as u64);

    same(&returned(&node, "iotstream", &devices), &expected(&iot));
    same(&returned(&node, "iotstream", &[2001]), &expected(&wrap));
    same(&returned(&node, "tinytelemetry", &devices), &expected(&tiny));

    // The reboot restarts the extended seq; the wrap extends it past 65535.
    let ext = |device: u32| -> Vec<u64> {
        let page = common::records(&node, "iotstream", device);
        page["records"].as_array().expect("records").iter().map(|r| r["ext_seq"].as_u64().expect("ext")).collect()
    };
    let boots = ext(1001);
    assert_eq!(boots.iter().filter(|e| **e == 0).count(), 2, "two boots");
    assert_eq!(ext(2001), (0..65_600).collect::<Vec<u64>>(), "extended seq runs on across the wrap");

    let streams = common::get_json(&format!("{}/v1/streams", node.url()));
    for d in &devices {
        let s = common::stream(&streams, "iotstream", u64::from(*d));
        assert_eq!((s["received"].as_u64(), s["duplicates"].as_u64(), s["missing"].as_u64()), (Some(150), Some(0), Some(0)));
        assert_eq!(s["reboots"].as_u64(), Some(1));
    }
    let s = common::stream(&streams, "iotstream", 2001);
    assert_eq!((s["received"].as_u64(), s["missing"].as_u64(), s["reboots"].as_u64()), (Some(65_600), Some(0), Some(0)));
    node.stop().expect("clean stop");
}
