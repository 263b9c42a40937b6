//! How records leave the node: JSON, NDJSON and the source documents' CSV log columns.

use serde::{Deserialize, Serialize, Serializer};
use telemesh_proto::record::{Kind, Value};
use telemesh_proto::wire::Dialect;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::store::{Auth, StoredRecord};

/// One reading as the API shows it. Binary dialects' f32 readings print in their
/// shortest form (`29.37`); a NaN prints as `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadingView {
    pub label: String,
    #[serde(serialize_with = "serialize_value", deserialize_with = "deserialize_value")]
    pub value: Value,
}

fn serialize_value<S: Serializer>(v: &Value, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Value::F32(x) if x.is_finite() => s.serialize_f32(*x),
        Value::F64(x) if x.is_finite() => s.serialize_f64(*x),
        _ => s.serialize_none(),
    }
}

fn deserialize_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Ok(Value::F64(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN)))
}

/// One record in the query API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    pub dialect: Dialect,
    pub device: u32,
    /// Sequence number as sent.
    pub seq: u64,
    /// Sequence number extended across 16-bit wraparound; restarts at a reboot.
    pub ext_seq: u64,
    /// Device time, RFC 3339 (UTC).
    pub device_time: String,
    pub device_time_ns: u64,
    /// The timestamp field as sent.
    pub timestamp: u64,
    pub kind: Kind,
    pub readings: Vec<ReadingView>,
    /// When this node first received it, RFC 3339 (UTC), by its own clock. Only in the
    /// local view: the merged view carries nothing that differs between nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrival_ns: Option<u64>,
    /// Times this node received it (more than 1: duplicates arrived). Local view only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copies: Option<u32>,
    /// Sequence numbers missing just before this record (0: none).
    pub gap: u64,
    /// Nodes that received this record (peer ids, sorted).
    pub heard_by: Vec<String>,
    /// How the device proved it sent this record: `none`, `tag` (a valid device tag) or
    /// `certificate` (over DTLS with its client certificate) — to this node in the local
    /// view, to any node in the merged view.
    #[serde(default)]
    pub auth: Auth,
    /// Those of `heard_by` that received it authenticated (sorted).
    #[serde(default)]
    pub proved_by: Vec<String>,
    /// Its content tag: with device time and seq, its identity (conflicting versions
    /// included). Not shown; CloudEvents' `id` and cursors are made of it.
    #[serde(skip)]
    pub tag: Option<[u8; 8]>,
}

/// Which history a query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// Every record any node heard, with what is the same on every node.
    Merged,
    /// Only the records this node received, with its arrival times and copy counts.
    Local,
}

/// RFC 3339 for Unix nanoseconds (UTC); out-of-range values print as the raw number.
pub fn rfc3339(ns: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// RFC 3339 with nanoseconds always written (`2025-12-11T18:20:00.758000000Z`): record
/// times line up in a table and sort as text, whatever their resolution.
pub fn rfc3339_ns(ns: u64) -> String {
    const FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| ns.to_string())
}

impl RecordView {
    /// A view of `r`; `previous_ext` is the extended seq of the record before it, `node_id`
    /// this node's name.
    pub fn new(r: &StoredRecord, previous_ext: Option<u64>, node_id: &str, view: View) -> RecordView {
        let local = view == View::Local;
        let heard_by = names(&r.heard_by, (r.copies > 0).then_some(node_id));
        let proved_by = names(&r.proved_by, (r.copies > 0 && r.proved).then_some(node_id));
        let auth = if local { Auth::of(r.record.stream.dialect, r.copies > 0 && r.proved) } else { r.auth() };
        let gap = match previous_ext {
            Some(p) if r.ext_seq > p + 1 => r.ext_seq - p - 1,
            _ => 0,
        };
        RecordView {
            dialect: r.record.stream.dialect,
            device: r.record.stream.device,
            seq: r.record.seq,
            ext_seq: r.ext_seq,
            device_time: rfc3339_ns(r.record.device_time_ns),
            device_time_ns: r.record.device_time_ns,
            timestamp: r.record.timestamp_raw,
            kind: r.record.kind,
            readings: r
                .record
                .readings
                .labelled()
                .into_iter()
                .map(|(label, value)| ReadingView { label, value })
                .collect(),
            arrival_time: local.then(|| rfc3339_ns(r.arrival_ns)),
            arrival_ns: local.then_some(r.arrival_ns),
            copies: local.then_some(r.copies),
            gap,
            heard_by,
            auth,
            proved_by,
            tag: Some(r.tag),
        }
    }
}

/// `others` and `me`, sorted, once each.
fn names(others: &[std::sync::Arc<str>], me: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = others.iter().map(|n| n.to_string()).chain(me.map(str::to_owned)).collect();
    out.sort();
    out.dedup();
    out
}

/// Views of consecutive records; `before` is the record preceding the first one. The
/// local view keeps only the records this node received (gaps count what it missed).
pub fn views(records: &[StoredRecord], before: Option<&StoredRecord>, node_id: &str, view: View) -> Vec<RecordView> {
    let mut previous = before.map(|r| r.ext_seq);
    records
        .iter()
        .filter(|r| view == View::Merged || r.copies > 0)
        .map(|r| {
            let v = RecordView::new(r, previous, node_id, view);
            previous = Some(r.ext_seq);
            v
        })
        .collect()
}

/// The CSV columns before the readings: the per-packet log columns of the IoTStream v1
/// Mini-RFC and the TinyTelemetry v1 design document, then telemesh's.
pub const CSV_COLUMNS: [&str; 13] = [
    "device_id",
    "seq",
    "timestamp",
    "arrival_time",
    "msg_type",
    "duplicate_flag",
    "gap_flag",
    "gap_size",
    "reading_count",
    "ext_seq",
    "device_time",
    "heard_by",
    "auth",
];

/// The last CSV column: readings whose label has no column of its own, `label=value`
/// joined by `;`.
pub const CSV_OTHER: &str = "other";

/// Where a reading label's column goes: IoTStream's `r1`, `r2` … in number order, then
/// TinyTelemetry's sensors in code order, then any other label (the secure frame's keys)
/// alphabetically.
fn label_order(label: &str) -> (u8, u64, &str) {
    use telemesh_proto::wire::tinytelemetry::SensorType;
    if let Some(n) = label.strip_prefix('r').and_then(|n| n.parse::<u64>().ok()) {
        return (0, n, "");
    }
    match SensorType::ALL.iter().position(|t| t.name() == label) {
        Some(i) => (1, i as u64, ""),
        None => (2, 0, label),
    }
}

/// The reading columns of `views` when none are asked for: every label they carry.
pub fn csv_labels(views: &[RecordView]) -> Vec<String> {
    let mut labels: Vec<&str> = views.iter().flat_map(|v| v.readings.iter().map(|r| r.label.as_str())).collect();
    labels.sort_unstable_by_key(|l| label_order(l));
    labels.dedup();
    labels.into_iter().map(str::to_owned).collect()
}

/// `views` as CSV: [`CSV_COLUMNS`], a column per reading label of `labels` (by default
/// [`csv_labels`]), and [`CSV_OTHER`]; quoted as RFC 4180 says (the `csv` crate).
/// `arrival_time` is Unix seconds with microseconds, as the source documents log it (empty in the
/// merged view, with `duplicate_flag`).
pub fn csv(views: &[RecordView], labels: Option<&[String]>) -> String {
    let default;
    let labels = match labels {
        Some(l) => l,
        None => {
            default = csv_labels(views);
            &default
        }
    };
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let header = CSV_COLUMNS.iter().copied().chain(labels.iter().map(String::as_str)).chain([CSV_OTHER]);
    // Writing into memory cannot fail.
    let _ = w.write_record(header);
    for v in views {
        let arrival = v.arrival_ns.map_or(String::new(), |a| format!("{}.{:06}", a / 1_000_000_000, (a % 1_000_000_000) / 1_000));
        let mut row = vec![
            v.device.to_string(),
            v.seq.to_string(),
            v.timestamp.to_string(),
            arrival,
            v.kind.csv_name().to_owned(),
            v.copies.map_or(String::new(), |c| u8::from(c > 1).to_string()),
            u8::from(v.gap > 0).to_string(),
            v.gap.to_string(),
            v.readings.len().to_string(),
            v.ext_seq.to_string(),
            v.device_time.clone(),
            v.heard_by.join(";"),
            v.auth.name().to_owned(),
        ];
        let mut cells = vec![String::new(); labels.len()];
        let mut other = Vec::new();
        for r in &v.readings {
            match labels.iter().position(|l| *l == r.label) {
                Some(i) if cells[i].is_empty() => cells[i] = value_text(r.value),
                _ => other.push(format!("{}={}", r.label, value_text(r.value))),
            }
        }
        row.extend(cells);
        row.push(other.join(";"));
        let _ = w.write_record(&row);
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

/// A record as a CloudEvents 1.0 event, in structured JSON mode (a batch is an array of
/// them).
#[derive(Debug, Serialize)]
pub struct CloudEvent<'a> {
    pub specversion: &'static str,
    /// The record's identity: `<dialect>:<device>:<device time ns>-<seq>-<content tag>`,
    /// unique per record (two conflicting versions differ in their tag).
    pub id: String,
    /// The stream: its path in this API, `/v1/streams/<dialect>/<device>`.
    pub source: String,
    /// `telemesh.record.data`, `.init` or `.heartbeat`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The device time.
    pub time: &'a str,
    pub datacontenttype: &'static str,
    /// The record as the JSON API shows it.
    pub data: &'a RecordView,
    /// Extension: the nodes that heard it (peer ids, comma-separated).
    pub telemeshheardby: String,
    /// Extension: how the device proved it sent it (`none`, `tag`, `certificate`).
    pub telemeshauth: &'static str,
}

impl<'a> CloudEvent<'a> {
    pub fn new(v: &'a RecordView) -> CloudEvent<'a> {
        let tag = u64::from_be_bytes(v.tag.unwrap_or_default());
        CloudEvent {
            specversion: "1.0",
            id: format!("{}:{}:{}-{}-{tag:016x}", v.dialect, v.device, v.device_time_ns, v.seq),
            source: format!("/v1/streams/{}/{}", v.dialect, v.device),
            kind: format!("telemesh.record.{}", v.kind.name()),
            time: &v.device_time,
            datacontenttype: "application/json",
            data: v,
            telemeshheardby: v.heard_by.join(","),
            telemeshauth: v.auth.name(),
        }
    }
}

/// The content type of a batch of CloudEvents (a JSON array).
pub const CLOUDEVENTS_BATCH: &str = "application/cloudevents-batch+json";

/// `views` as a CloudEvents batch: a JSON array of structured events.
pub fn cloudevents(views: &[RecordView]) -> String {
    let events: Vec<CloudEvent<'_>> = views.iter().map(CloudEvent::new).collect();
    serde_json::to_string(&events).unwrap_or_else(|_| "[]".to_owned())
}

/// A reading's value as text: shortest round-trip form, `NaN` for not-a-number.
pub fn value_text(v: Value) -> String {
    match v {
        Value::F32(x) if x.is_nan() => "NaN".to_owned(),
        Value::F64(x) if x.is_nan() => "NaN".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::record::{Readings, Record, StreamId};

    #[test]
    fn seed_example_row() {
        let r = StoredRecord::new(
            Record {
                stream: StreamId::new(Dialect::Iotstream, 1001),
                device_time_ns: 1_765_477_200_758_000_000,
                seq: 1,
                timestamp_raw: 245_642_102,
                kind: Kind::Data,
                readings: Readings::Batch(vec![29.37, 23.53, 22.61, 22.04, 22.99]),
            },
            1,
            1_765_477_200_758_614_000,
        );
        let v = RecordView::new(&r, Some(0), "n1", View::Local);
        assert_eq!(v.device_time, "2025-12-11T18:20:00.758000000Z");
        assert_eq!(
            csv(std::slice::from_ref(&v), None),
            "device_id,seq,timestamp,arrival_time,msg_type,duplicate_flag,gap_flag,gap_size,reading_count,ext_seq,device_time,heard_by,auth,r1,r2,r3,r4,r5,other\n\
             1001,1,245642102,1765477200.758614,DATA,0,0,0,5,1,2025-12-11T18:20:00.758000000Z,n1,none,29.37,23.53,22.61,22.04,22.99,\n"
        );
        let json = serde_json::to_string(&v.readings[0]).expect("json");
        assert_eq!(json, r#"{"label":"r1","value":29.37}"#);
        let gap = RecordView::new(&r, None, "n1", View::Merged);
        assert_eq!(gap.gap, 0);
        // Asked for fewer columns: the rest go in `other`.
        let two = ["r2".to_owned(), "r1".to_owned()];
        assert!(csv(std::slice::from_ref(&gap), Some(&two)).ends_with(
            ",r2,r1,other\n1001,1,245642102,,DATA,,0,0,5,1,2025-12-11T18:20:00.758000000Z,n1,none,23.53,29.37,r3=22.61;r4=22.04;r5=22.99\n"
        ));
        let r4 = StoredRecord { ext_seq: 4, heard_by: vec!["a".into(), "z".into()], ..r };
        let v4 = RecordView::new(&r4, Some(1), "n1", View::Merged);
        assert_eq!(v4.gap, 2);
        assert_eq!(v4.heard_by, ["a", "n1", "z"]);
        let repaired = StoredRecord { copies: 0, ..r4 };
        assert_eq!(RecordView::new(&repaired, None, "n1", View::Merged).heard_by, ["a", "z"]);
        assert!(views(&[repaired], None, "n1", View::Local).is_empty());
    }

    #[test]
    fn a_record_shows_how_it_was_proved_and_by_whom() {
        let record = Record {
            stream: StreamId::new(Dialect::Iotstream, 7),
            device_time_ns: 1_765_477_200_000_000_000,
            seq: 3,
            timestamp_raw: 3,
            kind: Kind::Data,
            readings: Readings::Batch(vec![1.5]),
        };
        let plain = StoredRecord::new(record.clone(), 3, 1_765_477_200_100_000_000);
        assert_eq!(RecordView::new(&plain, None, "n1", View::Merged).auth, Auth::None);
        // Proved here: both views say so, and name this node.
        let here = StoredRecord { proved: true, ..plain.clone() };
        for view in [View::Local, View::Merged] {
            let v = RecordView::new(&here, None, "n1", view);
            assert_eq!((v.auth, v.proved_by.as_slice()), (Auth::Tag, ["n1".to_owned()].as_slice()));
            assert!(csv(std::slice::from_ref(&v), None).contains(",n1,tag,1.5,\n"));
        }
        // Heard here unauthenticated, proved by a peer: the merged history says the device
        // proved it; this node's own receipt did not.
        let peer = StoredRecord { heard_by: vec!["p".into()], proved_by: vec!["p".into()], ..plain };
        let merged = RecordView::new(&peer, None, "n1", View::Merged);
        assert_eq!((merged.auth, merged.proved_by.as_slice(), merged.heard_by.len()), (Auth::Tag, ["p".to_owned()].as_slice(), 2));
        assert_eq!(RecordView::new(&peer, None, "n1", View::Local).auth, Auth::None);
        // The secure frame's proof is the client certificate.
        let secure = StoredRecord {
            record: Record { stream: StreamId::new(Dialect::Secure, 7), ..record },
            ..StoredRecord { proved: true, ..peer }
        };
        assert_eq!(RecordView::new(&secure, None, "n1", View::Merged).auth, Auth::Certificate);
    }

    #[test]
    fn csv_columns_go_in_label_order_and_text_is_quoted() {
        let view = |readings: &[(&str, f64)]| RecordView {
            readings: readings.iter().map(|(l, v)| ReadingView { label: (*l).to_owned(), value: Value::F64(*v) }).collect(),
            ..RecordView::new(
                &StoredRecord::new(
                    Record {
                        stream: StreamId::new(Dialect::Secure, 7),
                        device_time_ns: 0,
                        seq: 1,
                        timestamp_raw: 0,
                        kind: Kind::Data,
                        readings: Readings::None,
                    },
                    1,
                    0,
                ),
                None,
                "n1",
                View::Merged,
            )
        };
        let views = [view(&[("r10", 1.0), ("r2", 2.0), ("voltage", 3.0), ("humidity", 4.0)]), view(&[("MEM,x", 5.0), ("CPU\"", 6.0)])];
        assert_eq!(csv_labels(&views), ["r2", "r10", "humidity", "voltage", "CPU\"", "MEM,x"]);
        let text = csv(&views, None);
        let mut rows = ::csv::Reader::from_reader(text.as_bytes());
        let header: Vec<String> = rows.headers().expect("header").iter().map(str::to_owned).collect();
        assert_eq!(&header[CSV_COLUMNS.len()..], ["r2", "r10", "humidity", "voltage", "CPU\"", "MEM,x", "other"]);
        let second: Vec<String> = rows.records().nth(1).expect("row").expect("parses").iter().map(str::to_owned).collect();
        assert_eq!(&second[CSV_COLUMNS.len()..], ["", "", "", "", "6", "5", ""]);
    }
}
