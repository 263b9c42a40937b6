//! `GET /v1/align`: several streams resampled onto one time base, this node's clock. Each
//! record's device time is moved onto that clock with its stream's offset and drift as
//! this node estimates them (`proto::stream::State`); the method and what it is worth are
//! in `docs/protocol.md`, "Aligning streams", the answer in `docs/api.md`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;
use telemesh_proto::record::StreamId;
use telemesh_proto::stream::Report;
use telemesh_proto::wire::Dialect;

use super::aggregate::{bucket, buckets_between, extent, parse_every, parse_format, too_many, Num, Series, MAX_BUCKETS};
use super::export::rfc3339;
use super::{bad, error, parse_time, rejected, App, Format};
use crate::store::{history, StoreError};

/// Fewest and most streams one request aligns.
pub const MIN_STREAMS: usize = 2;
pub const MAX_STREAMS: usize = 16;

/// A drift estimate beyond this is taken for a clock that was stepped, not one that runs
/// fast or slow (a cheap crystal drifts well under 100 ppm), and is not applied.
pub const MAX_DRIFT_PPM: f64 = 1000.0;

/// Device time is read this far beyond what the correction maps onto `from..=to`, then
/// cut exactly on the corrected time: the inverse mapping is only first-order.
const MARGIN_NS: u64 = 1_000_000_000;

/// A validated align query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlignQuery {
    pub streams: Vec<StreamId>,
    pub every: String,
    pub every_ns: u64,
    /// This node's clock, inclusive.
    pub from_ns: u64,
    pub to_ns: u64,
    pub label: Option<String>,
    pub format: Format,
}

impl AlignQuery {
    /// Parses query parameters; an unknown, repeated or bad one is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<AlignQuery, (String, String)> {
        let mut q = AlignQuery {
            streams: Vec::new(),
            every: "1s".into(),
            every_ns: 1_000_000_000,
            from_ns: 0,
            to_ns: u64::MAX,
            label: None,
            format: Format::Json,
        };
        let known = ["streams", "every", "from", "to", "label", "format"];
        for (name, value) in super::once(params, &known)? {
            let err = |m: String| (name.to_owned(), m);
            match name {
                "streams" => q.streams = parse_streams(value).map_err(err)?,
                "every" => {
                    q.every_ns = parse_every(value).map_err(err)?;
                    q.every = value.to_owned();
                }
                "from" => q.from_ns = parse_time(value).map_err(err)?,
                "to" => q.to_ns = parse_time(value).map_err(err)?,
                "label" if value.is_empty() => return Err(err("label is empty".into())),
                "label" => q.label = Some(value.to_owned()),
                "format" => q.format = parse_format(value).map_err(err)?,
                // `once` lets no other name through.
                _ => {}
            }
        }
        if q.streams.is_empty() {
            return Err(("streams".into(), "streams is required: dialect:device,dialect:device,…".into()));
        }
        if q.from_ns > q.to_ns {
            return Err(("from".into(), "from is after to".into()));
        }
        Ok(q)
    }
}

/// `iotstream:3001,tinytelemetry:5`: 2 to 16 distinct streams.
fn parse_streams(value: &str) -> Result<Vec<StreamId>, String> {
    let mut out: Vec<StreamId> = Vec::new();
    for item in value.split(',') {
        let Some((dialect, device)) = item.split_once(':') else {
            return Err(format!("{item:?} is not dialect:device (iotstream:3001)"));
        };
        let id = super::stream_id(dialect, device).map_err(|(_, m)| format!("{item:?}: {m}"))?;
        if out.contains(&id) {
            return Err(format!("{item} named more than once"));
        }
        out.push(id);
    }
    if !(MIN_STREAMS..=MAX_STREAMS).contains(&out.len()) {
        return Err(format!("{} streams named: align {MIN_STREAMS} to {MAX_STREAMS}", out.len()));
    }
    Ok(out)
}

/// The text of a stream in `streams=` and in column names.
pub fn stream_name(id: StreamId) -> String {
    format!("{}:{}", id.dialect, id.device)
}

/// How one stream's device times are put on this node's clock:
/// `collector = device + offset + s·(device + offset − reference)`, `s = −drift·10⁻⁶`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Correction {
    /// Whether this node has an estimate: it received records of the stream itself.
    pub measured: bool,
    /// Collector clock minus device clock (0 when not measured).
    pub offset_ns: i64,
    /// The drift applied, ppm (positive: the device clock runs fast); `None` when not
    /// measured yet or beyond [`MAX_DRIFT_PPM`].
    pub drift_ppm: Option<f64>,
    /// Where on this node's clock `offset_ns` holds: the stream's last arrival here.
    pub reference_ns: u64,
    pub jitter_ms: f64,
}

impl Correction {
    /// The correction of a stream with `report` as its state (`None`: no state here).
    pub fn of(report: Option<&Report>) -> Correction {
        let offset = report.and_then(|r| r.clock_offset_ms).filter(|o| o.is_finite());
        match (report, offset) {
            (Some(r), Some(offset_ms)) => Correction {
                measured: true,
                offset_ns: (offset_ms * 1e6).round() as i64,
                drift_ppm: r.clock_drift_ppm.filter(|d| d.is_finite() && d.abs() <= MAX_DRIFT_PPM),
                reference_ns: r.last_arrival_ns,
                jitter_ms: r.jitter_ms,
            },
            _ => Correction { measured: false, offset_ns: 0, drift_ppm: None, reference_ns: 0, jitter_ms: 0.0 },
        }
    }

    fn slope(self) -> f64 {
        self.drift_ppm.map_or(0.0, |ppm| -ppm * 1e-6)
    }

    /// This node's clock at device time `device_ns`, if the clock reaches it.
    pub fn to_collector(self, device_ns: u64) -> Option<u64> {
        let base = i128::from(device_ns) + i128::from(self.offset_ns);
        let drift = (self.slope() * (base - i128::from(self.reference_ns)) as f64).round() as i128;
        u64::try_from(base + drift).ok()
    }

    /// Device time near this node's time `ns` (first-order inverse of [`Self::to_collector`]),
    /// clamped to the clock's range.
    fn to_device(self, ns: u64) -> u64 {
        let x = i128::from(ns);
        let drift = (self.slope() * (x - i128::from(self.reference_ns)) as f64).round() as i128;
        (x - i128::from(self.offset_ns) - drift).clamp(0, i128::from(u64::MAX)) as u64
    }

    /// Device times to read for this node's times `from..=to`.
    fn device_range(self, from_ns: u64, to_ns: u64) -> (u64, u64) {
        (self.to_device(from_ns).saturating_sub(MARGIN_NS), self.to_device(to_ns).saturating_add(MARGIN_NS))
    }

    /// The scale of the error of corrected times in `lo..=hi` (this node's clock), ms: the
    /// jitter (how far above the delay floor a window's minimum may sit) plus what the
    /// drift estimate moves the offset by over the farthest distance from the reference.
    /// `None` when not measured.
    pub fn uncertainty_ms(&self, lo: u64, hi: u64) -> Option<f64> {
        if !self.measured {
            return None;
        }
        let far = lo.abs_diff(self.reference_ns).max(hi.abs_diff(self.reference_ns)) as f64;
        Some(self.jitter_ms + self.slope().abs() * far / 1e6)
    }
}

/// One stream of the answer.
#[derive(Debug, Serialize)]
struct StreamOut {
    stream: String,
    dialect: Dialect,
    device: u32,
    /// Records placed in the answer's range.
    records: u64,
    /// Readings skipped for not being finite.
    skipped: u64,
    labels: Vec<String>,
    correction: CorrectionOut,
}

#[derive(Debug, Serialize)]
struct CorrectionOut {
    measured: bool,
    offset_ms: f64,
    drift_ppm: Option<f64>,
    reference: Option<String>,
    reference_ns: Option<u64>,
    jitter_ms: Option<f64>,
    uncertainty_ms: Option<f64>,
}

/// What the blocking part hands back.
enum Pass {
    Done(Vec<(StreamId, Correction, Series)>),
    TooMany(u64),
}

/// The state of `id`: in memory if it is there (newer), else as stored.
fn report(app: &App, id: StreamId) -> Result<Option<Report>, StoreError> {
    let state = app.shared.table().state_of(&id);
    Ok(match state {
        Some(s) => Some(s.report()),
        None => app.shared.store.state(id)?.map(|s| s.report()),
    })
}

pub async fn align(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return rejected("query", e.status(), e.body_text()),
    };
    let q = match AlignQuery::parse(&params) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    let (app2, q2) = (app.clone(), q.clone());
    let pass = super::blocking(move || {
        let q = q2;
        let store = app2.shared.store.as_ref();
        // Corrections, and how many buckets the corrected records span, before any pass.
        let mut plan = Vec::with_capacity(q.streams.len());
        let mut span: Option<(u64, u64)> = None;
        for &id in &q.streams {
            let c = Correction::of(report(&app2, id)?.as_ref());
            let pending = app2.shared.unflushed_of(&id)?;
            let (dlo, dhi) = c.device_range(q.from_ns, q.to_ns);
            if let Some((first, last)) = extent(store, &pending, id, dlo, dhi)? {
                let clip = |d: u64| c.to_collector(d).unwrap_or(u64::MAX).clamp(q.from_ns, q.to_ns);
                let (lo, hi) = (clip(first), clip(last));
                span = Some(span.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
            }
            plan.push((id, c, pending, (dlo, dhi)));
        }
        if let Some((lo, hi)) = span {
            let n = buckets_between(lo, hi, q.every_ns);
            if n > MAX_BUCKETS {
                return Ok(Pass::TooMany(n));
            }
        }
        let mut out = Vec::with_capacity(plan.len());
        for (id, c, pending, (dlo, dhi)) in plan {
            let mut series = Series::default();
            history::for_each_window(store, &pending, id, dlo, dhi, |window| {
                for r in &window {
                    match c.to_collector(r.record.device_time_ns) {
                        Some(t) if (q.from_ns..=q.to_ns).contains(&t) => {
                            series.add(bucket(t, q.every_ns), &r.record, q.label.as_deref())
                        }
                        _ => {}
                    }
                }
            })?;
            out.push((id, c, series));
        }
        Ok::<_, StoreError>(Pass::Done(out))
    })
    .await;
    let aligned = match pass {
        Ok(Pass::Done(a)) => a,
        Ok(Pass::TooMany(n)) => return too_many(n, &q.every),
        Err(response) => return response,
    };
    let table = Table::new(&aligned, &q);
    match q.format {
        Format::Csv => match table.to_csv() {
            Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
        },
        _ => {
            let streams: Vec<StreamOut> =
                aligned.iter().map(|(id, c, s)| stream_out(*id, c, s, table.lo, table.hi, &q)).collect();
            Json(Answer { every: &q.every, every_ns: q.every_ns, streams, table: &table }).into_response()
        }
    }
}

fn stream_out(id: StreamId, c: &Correction, s: &Series, lo: u64, hi: u64, q: &AlignQuery) -> StreamOut {
    let skipped = s.buckets.values().flatten().map(|a| a.skipped).sum();
    StreamOut {
        stream: stream_name(id),
        dialect: id.dialect,
        device: id.device,
        records: s.records,
        skipped,
        labels: labels_of(s, q),
        correction: CorrectionOut {
            measured: c.measured,
            offset_ms: c.offset_ns as f64 / 1e6,
            drift_ppm: c.drift_ppm,
            reference: c.measured.then(|| rfc3339(c.reference_ns)),
            reference_ns: c.measured.then_some(c.reference_ns),
            jitter_ms: c.measured.then_some(c.jitter_ms),
            uncertainty_ms: c.uncertainty_ms(lo, hi),
        },
    }
}

/// A stream's columns: the label asked for, or every label it has in range.
fn labels_of(s: &Series, q: &AlignQuery) -> Vec<String> {
    match &q.label {
        Some(l) => vec![l.clone()],
        None => s.labels.names.clone(),
    }
}

/// The aligned values: one row per bucket from the first to the last that holds a
/// reading, one column per stream and label; a cell is the mean of the finite readings
/// the stream has in the bucket, or none.
struct Table {
    columns: Vec<String>,
    /// First and last bucket start (0, 0 when there is nothing).
    lo: u64,
    hi: u64,
    rows: Vec<(u64, Vec<Option<Num>>)>,
}

impl Table {
    fn new(aligned: &[(StreamId, Correction, Series)], q: &AlignQuery) -> Table {
        let mut columns = vec!["start".to_owned(), "start_ns".to_owned()];
        let mut cells = Vec::new();
        for (id, _, s) in aligned {
            for label in labels_of(s, q) {
                columns.push(format!("{}/{label}", stream_name(*id)));
                cells.push((s, s.labels.get(&label)));
            }
        }
        let starts = aligned.iter().flat_map(|(_, _, s)| [s.buckets.keys().next(), s.buckets.keys().next_back()]).flatten();
        let (lo, hi) = starts
            .fold(None, |acc: Option<(u64, u64)>, &t| Some(acc.map_or((t, t), |(a, b)| (a.min(t), b.max(t)))))
            .unwrap_or((0, 0));
        let mut rows = Vec::new();
        if !aligned.iter().all(|(_, _, s)| s.buckets.is_empty()) {
            let n = buckets_between(lo, hi, q.every_ns).min(MAX_BUCKETS);
            for i in 0..n {
                let start = lo + i * q.every_ns;
                let values = cells
                    .iter()
                    .map(|(s, id)| {
                        let acc = s.buckets.get(&start).and_then(|accs| accs.get((*id)?))?;
                        Some(Num { value: acc.avg()?, narrow: s.labels.narrow[(*id)?] })
                    })
                    .collect();
                rows.push((start, values));
            }
        }
        Table { columns, lo, hi, rows }
    }

    fn to_csv(&self) -> Result<Vec<u8>, csv::Error> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.columns)?;
        for (start, values) in &self.rows {
            let mut row = vec![rfc3339(*start), start.to_string()];
            row.extend(values.iter().map(|v| v.map_or(String::new(), Num::text)));
            w.write_record(&row)?;
        }
        w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
    }
}

/// The JSON answer: `columns` and `values` rows, as a data frame takes them.
struct Answer<'a> {
    every: &'a str,
    every_ns: u64,
    streams: Vec<StreamOut>,
    table: &'a Table,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(5))?;
        m.serialize_entry("every", self.every)?;
        m.serialize_entry("every_ns", &self.every_ns)?;
        m.serialize_entry("streams", &self.streams)?;
        m.serialize_entry("columns", &self.table.columns)?;
        m.serialize_entry("values", &Rows(&self.table.rows))?;
        m.end()
    }
}

struct Rows<'a>(&'a [(u64, Vec<Option<Num>>)]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (start, values) in self.0 {
            seq.serialize_element(&Row(*start, values))?;
        }
        seq.end()
    }
}

/// `[start, start_ns, value, …]`.
struct Row<'a>(u64, &'a [Option<Num>]);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.1.len() + 2))?;
        seq.serialize_element(&rfc3339(self.0))?;
        seq.serialize_element(&self.0)?;
        for v in self.1 {
            seq.serialize_element(v)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::p;

    #[test]
    fn query_parameters() {
        let q = AlignQuery::parse(&p(&[("streams", "iotstream:3001,tinytelemetry:5"), ("every", "250ms"), ("label", "r1")]))
            .expect("valid");
        assert_eq!(q.streams, [StreamId::new(Dialect::Iotstream, 3001), StreamId::new(Dialect::Tinytelemetry, 5)]);
        assert_eq!((q.every_ns, q.label.as_deref()), (250_000_000, Some("r1")));
        let err = |pairs: &[(&str, &str)]| AlignQuery::parse(&p(pairs)).expect_err("invalid").0;
        assert_eq!(err(&[]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1")]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:1")]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1,tinytelemetry:0")]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:65536")]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1,modbus:2")]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1;iotstream:2")]), "streams");
        let seventeen: Vec<String> = (0..17).map(|d| format!("iotstream:{d}")).collect();
        assert_eq!(err(&[("streams", &seventeen.join(","))]), "streams");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:2"), ("every", "0s")]), "every");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:2"), ("label", "")]), "label");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:2"), ("from", "9"), ("to", "1")]), "from");
        assert_eq!(err(&[("streams", "iotstream:1,iotstream:2"), ("device", "1")]), "device");
    }

    fn report(offset_ms: Option<f64>, drift_ppm: Option<f64>, last_arrival_ns: u64, jitter_ms: f64) -> Report {
        let mut state = telemesh_proto::stream::State::default();
        state.last_arrival_ns = last_arrival_ns;
        let mut r = state.report();
        r.clock_offset_ms = offset_ms;
        r.clock_drift_ppm = drift_ppm;
        r.jitter_ms = jitter_ms;
        r
    }

    #[test]
    fn corrections() {
        const S: u64 = 1_000_000_000;
        // 5 s behind this node, no drift measured: a plain shift.
        let c = Correction::of(Some(&report(Some(5000.0), None, 1000 * S, 0.5)));
        assert!(c.measured);
        assert_eq!(c.to_collector(100 * S), Some(105 * S));
        assert_eq!(c.device_range(105 * S, 110 * S), (99 * S, 106 * S));
        assert_eq!(c.uncertainty_ms(0, 2000 * S), Some(0.5));
        // Running 100 ppm fast: 1000 s before the reference the offset was 0.1 s larger.
        let d = Correction::of(Some(&report(Some(0.0), Some(100.0), 2000 * S, 0.0)));
        assert_eq!(d.to_collector(1000 * S), Some(1000 * S + 100_000_000));
        assert_eq!(d.to_collector(2000 * S), Some(2000 * S));
        assert!(d.uncertainty_ms(1000 * S, 2000 * S).is_some_and(|u| (u - 100.0).abs() < 1e-9));
        // A drift beyond belief is not applied; no estimate is no correction.
        assert_eq!(Correction::of(Some(&report(Some(1.0), Some(5e4), S, 0.0))).drift_ppm, None);
        let none = Correction::of(None);
        assert_eq!((none.measured, none.to_collector(7), none.uncertainty_ms(0, 1)), (false, Some(7), None));
        assert!(!Correction::of(Some(&report(None, None, S, 0.0))).measured);
        // Device times the clock cannot place are left out, not wrapped.
        let ahead = Correction::of(Some(&report(Some(-5000.0), None, S, 0.0)));
        assert_eq!(ahead.to_collector(S), None);
    }
}
