//! `GET /v1/streams/{dialect}/{device}/aggregate`: per interval of device time and per
//! reading label, count, avg, min, max, sum, first and last over the merged history
//! (`docs/api.md`).
//!
//! One pass through the stream's windows in device order ([`history::for_each_window`]),
//! each record folded into the accumulator of its bucket and dropped: memory is one
//! window's records plus the buckets, however many records the range holds. The number of
//! buckets is known before the pass (from the first and last record in range), so a
//! request that would answer too many is refused without reading the range.

use std::collections::{BTreeMap, HashMap};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use telemesh_proto::record::{Record, StreamId, Value};

use super::export::rfc3339;
use super::{bad, error, parse_time, rejected, App, Format};
use crate::store::{history, Store, StoreError, StoredRecord};

/// Most buckets one answer holds (here and in `/v1/align`).
pub const MAX_BUCKETS: u64 = 10_000;

/// The shortest `every`: finer buckets than a millisecond hold nothing a sensor resolves.
pub const MIN_EVERY_NS: u64 = 1_000_000;

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Count,
    Avg,
    Min,
    Max,
    Sum,
    First,
    Last,
}

impl Func {
    /// Every function, in the order answers list them.
    pub const ALL: [Func; 7] = [Func::Count, Func::Avg, Func::Min, Func::Max, Func::Sum, Func::First, Func::Last];
    /// What `fn` means when it is not given.
    pub const DEFAULT: [Func; 4] = [Func::Count, Func::Avg, Func::Min, Func::Max];

    pub fn name(self) -> &'static str {
        match self {
            Func::Count => "count",
            Func::Avg => "avg",
            Func::Min => "min",
            Func::Max => "max",
            Func::Sum => "sum",
            Func::First => "first",
            Func::Last => "last",
        }
    }
}

/// An `every` parameter: a duration like `10s`, `1m` or `1h` (humantime, as the
/// configuration's durations), at least 1 ms, in nanoseconds.
pub fn parse_every(s: &str) -> Result<u64, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?} is not a duration like 10s, 1m or 1h: {e}"))?;
    match u64::try_from(d.as_nanos()) {
        Ok(ns) if ns >= MIN_EVERY_NS => Ok(ns),
        Ok(_) => Err(format!("{s:?} is shorter than 1ms")),
        Err(_) => Err(format!("{s:?} is longer than the clock goes")),
    }
}

/// Start of the bucket of `every_ns` holding `t_ns`: buckets are aligned to multiples of
/// `every` since the Unix epoch.
pub fn bucket(t_ns: u64, every_ns: u64) -> u64 {
    t_ns - t_ns % every_ns
}

/// The 400 for an answer of `n` buckets, over [`MAX_BUCKETS`].
pub fn too_many(n: u64, every: &str) -> Response {
    bad(
        "every",
        format!(
            "the range holds {n} intervals of {every}, more than {MAX_BUCKETS} in one answer: narrow from/to or widen every"
        ),
    )
}

/// How many buckets of `every_ns` the device times `lo..=hi` touch.
pub fn buckets_between(lo: u64, hi: u64, every_ns: u64) -> u64 {
    (bucket(hi, every_ns) - bucket(lo.min(hi), every_ns)) / every_ns + 1
}

/// A validated aggregate query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateQuery {
    /// `every` as given (echoed in the answer) and in nanoseconds.
    pub every: String,
    pub every_ns: u64,
    /// The functions asked for, in [`Func::ALL`]'s order.
    pub fns: Vec<Func>,
    pub from_ns: u64,
    pub to_ns: u64,
    pub format: Format,
}

impl AggregateQuery {
    /// Parses query parameters; an unknown, repeated or bad one is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<AggregateQuery, (String, String)> {
        let mut q = AggregateQuery {
            every: "1m".into(),
            every_ns: 60_000_000_000,
            fns: Func::DEFAULT.to_vec(),
            from_ns: 0,
            to_ns: u64::MAX,
            format: Format::Json,
        };
        let known = ["every", "fn", "from", "to", "format"];
        for (name, value) in super::once(params, &known)? {
            let err = |m: String| (name.to_owned(), m);
            match name {
                "every" => {
                    q.every_ns = parse_every(value).map_err(err)?;
                    q.every = value.to_owned();
                }
                "fn" => q.fns = parse_fns(value).map_err(err)?,
                "from" => q.from_ns = parse_time(value).map_err(err)?,
                "to" => q.to_ns = parse_time(value).map_err(err)?,
                "format" => q.format = parse_format(value).map_err(err)?,
                // `once` lets no other name through.
                _ => {}
            }
        }
        if q.from_ns > q.to_ns {
            return Err(("from".into(), "from is after to".into()));
        }
        Ok(q)
    }
}

/// `json` or `csv`.
pub fn parse_format(value: &str) -> Result<Format, String> {
    match value {
        "json" => Ok(Format::Json),
        "csv" => Ok(Format::Csv),
        _ => Err(format!("{value:?} is not one of json, csv")),
    }
}

/// A comma-separated list of functions, each once.
fn parse_fns(value: &str) -> Result<Vec<Func>, String> {
    let known = Func::ALL.map(Func::name).join(", ");
    let mut asked = Vec::new();
    for name in value.split(',') {
        let Some(f) = Func::ALL.into_iter().find(|f| f.name() == name) else {
            return Err(format!("{name:?} is not a function (known: {known})"));
        };
        if asked.contains(&f) {
            return Err(format!("{name} asked for more than once"));
        }
        asked.push(f);
    }
    Ok(Func::ALL.into_iter().filter(|f| asked.contains(f)).collect())
}

/// What a bucket keeps of one label: enough for every [`Func`], nothing per record.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acc {
    /// Finite readings folded in.
    pub count: u64,
    /// Readings skipped for not being finite (NaN, ±infinity).
    pub skipped: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
    pub first: f64,
    pub last: f64,
}

impl Default for Acc {
    fn default() -> Acc {
        Acc { count: 0, skipped: 0, sum: 0.0, min: f64::INFINITY, max: f64::NEG_INFINITY, first: f64::NAN, last: f64::NAN }
    }
}

impl Acc {
    /// Folds in one reading; readings come in device order, so `first` and `last` are
    /// the earliest and latest.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            self.skipped += 1;
            return;
        }
        if self.count == 0 {
            self.first = x;
        }
        self.count += 1;
        self.last = x;
        self.sum += x;
        self.min = self.min.min(x);
        self.max = self.max.max(x);
    }

    /// Whether any reading came (finite or not).
    pub fn touched(&self) -> bool {
        self.count + self.skipped > 0
    }

    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// `f` of the finite readings; `None` when there were none (and for `count`).
    fn get(&self, f: Func) -> Option<f64> {
        if self.count == 0 {
            return None;
        }
        match f {
            Func::Count => None,
            Func::Avg => self.avg(),
            Func::Min => Some(self.min),
            Func::Max => Some(self.max),
            Func::Sum => Some(self.sum),
            Func::First => Some(self.first),
            Func::Last => Some(self.last),
        }
    }
}

/// A number as the answer prints it. Readings of the binary dialects are f32: their min,
/// max, first, last and avg print as f32 in shortest form (`21.3`, not the
/// `21.299999237060547` of the f64 the sums are kept in). Sums print as f64.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Num {
    pub value: f64,
    pub narrow: bool,
}

impl Num {
    fn of(f: Func, value: f64, narrow: bool) -> Num {
        Num { value, narrow: narrow && f != Func::Sum }
    }

    /// The CSV text: the same digits as JSON.
    pub fn text(self) -> String {
        if self.narrow {
            (self.value as f32).to_string()
        } else {
            self.value.to_string()
        }
    }
}

impl Serialize for Num {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.narrow {
            s.serialize_f32(self.value as f32)
        } else {
            s.serialize_f64(self.value)
        }
    }
}

/// A stream's reading labels, numbered in the order first seen.
#[derive(Debug, Default)]
pub struct Labels {
    pub names: Vec<String>,
    /// Whether each label's readings are f32 (IoTStream, TinyTelemetry).
    pub narrow: Vec<bool>,
    index: HashMap<String, usize>,
}

impl Labels {
    fn id(&mut self, label: String, value: Value) -> usize {
        if let Some(&id) = self.index.get(&label) {
            return id;
        }
        let id = self.names.len();
        self.names.push(label.clone());
        self.narrow.push(matches!(value, Value::F32(_)));
        self.index.insert(label, id);
        id
    }

    pub fn get(&self, label: &str) -> Option<usize> {
        self.index.get(label).copied()
    }
}

/// One stream's buckets: for each bucket start, one accumulator per label id.
#[derive(Debug, Default)]
pub struct Series {
    pub labels: Labels,
    pub buckets: BTreeMap<u64, Vec<Acc>>,
    /// Records folded in.
    pub records: u64,
}

impl Series {
    /// Folds the readings of `rec` (only those labelled `only`, if given) into the bucket
    /// starting at `start`. A record without readings (INIT, heartbeat) makes no bucket.
    pub fn add(&mut self, start: u64, rec: &Record, only: Option<&str>) {
        self.records += 1;
        for (label, value) in rec.readings.labelled() {
            if only.is_some_and(|o| o != label) {
                continue;
            }
            let id = self.labels.id(label, value);
            let accs = self.buckets.entry(start).or_default();
            if accs.len() <= id {
                accs.resize(id + 1, Acc::default());
            }
            accs[id].add(value.as_f64());
        }
    }
}

/// Device times of the first and last records of `stream` in `from..=to` of the merged
/// history, if it holds any: two short reads, however long the range.
pub fn extent(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    from_ns: u64,
    to_ns: u64,
) -> Result<Option<(u64, u64)>, StoreError> {
    let Some(first) = history::records(store, pending, stream, from_ns, to_ns, 1)?.pop() else { return Ok(None) };
    let first = first.record.device_time_ns;
    // The place just after every record at `to_ns`.
    let bound = history::after((to_ns, u64::MAX, [0xff; 8])).unwrap_or((u64::MAX, u64::MAX, [0xff; 8]));
    let last = history::record_before_key(store, pending, stream, bound)?.map_or(first, |r| r.record.device_time_ns);
    Ok(Some((first, last.max(first))))
}

/// What a pass ends with.
enum Pass {
    Done(Series),
    TooMany(u64),
}

pub async fn aggregate(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let (dialect, device) = match path {
        Ok(Path(p)) => p,
        Err(e) => return rejected("path", e.status(), e.body_text()),
    };
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return rejected("query", e.status(), e.body_text()),
    };
    let stream = match super::stream_id(&dialect, &device) {
        Ok(s) => s,
        Err((p, m)) => return bad(p, m),
    };
    let q = match AggregateQuery::parse(&params) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    let (every_ns, from_ns, to_ns) = (q.every_ns, q.from_ns, q.to_ns);
    let app2 = app.clone();
    let pass = super::blocking(move || {
        let pending = app2.shared.unflushed_of(&stream)?;
        let store = app2.shared.store.as_ref();
        let Some((lo, hi)) = extent(store, &pending, stream, from_ns, to_ns)? else {
            return Ok(Pass::Done(Series::default()));
        };
        let n = buckets_between(lo, hi, every_ns);
        if n > MAX_BUCKETS {
            return Ok(Pass::TooMany(n));
        }
        let mut series = Series::default();
        history::for_each_window(store, &pending, stream, from_ns, to_ns, |window| {
            for r in &window {
                series.add(bucket(r.record.device_time_ns, every_ns), &r.record, None);
            }
        })?;
        Ok::<_, StoreError>(Pass::Done(series))
    })
    .await;
    let series = match pass {
        Ok(Pass::Done(s)) => s,
        Ok(Pass::TooMany(n)) => return too_many(n, &q.every),
        Err(response) => return response,
    };
    match q.format {
        Format::Csv => match to_csv(&series, &q.fns) {
            Ok(body) => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], body).into_response(),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
        },
        _ => Json(Answer { stream, every: &q.every, every_ns, fns: &q.fns, series: &series }).into_response(),
    }
}

/// The JSON answer.
struct Answer<'a> {
    stream: StreamId,
    every: &'a str,
    every_ns: u64,
    fns: &'a [Func],
    series: &'a Series,
}

impl Serialize for Answer<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("dialect", &self.stream.dialect)?;
        m.serialize_entry("device", &self.stream.device)?;
        m.serialize_entry("every", self.every)?;
        m.serialize_entry("every_ns", &self.every_ns)?;
        m.serialize_entry("functions", &self.fns.iter().map(|f| f.name()).collect::<Vec<_>>())?;
        let buckets: Vec<BucketOut<'_>> = self
            .series
            .buckets
            .iter()
            .map(|(start, accs)| BucketOut { start: *start, accs, labels: &self.series.labels, fns: self.fns })
            .collect();
        m.serialize_entry("buckets", &buckets)?;
        m.end()
    }
}

/// One bucket: `{"start", "start_ns", "labels": {label: {function: value, …, "skipped"}}}`.
struct BucketOut<'a> {
    start: u64,
    accs: &'a [Acc],
    labels: &'a Labels,
    fns: &'a [Func],
}

impl Serialize for BucketOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("start", &rfc3339(self.start))?;
        m.serialize_entry("start_ns", &self.start)?;
        m.serialize_entry("labels", &LabelsOut(self))?;
        m.end()
    }
}

struct LabelsOut<'a, 'b>(&'b BucketOut<'a>);

impl Serialize for LabelsOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        let mut m = s.serialize_map(None)?;
        for (id, acc) in b.accs.iter().enumerate().filter(|(_, a)| a.touched()) {
            let narrow = b.labels.narrow[id];
            m.serialize_entry(&b.labels.names[id], &StatsOut { acc, narrow, fns: b.fns })?;
        }
        m.end()
    }
}

struct StatsOut<'a> {
    acc: &'a Acc,
    narrow: bool,
    fns: &'a [Func],
}

impl Serialize for StatsOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fns.len() + 1))?;
        for &f in self.fns {
            match f {
                Func::Count => m.serialize_entry("count", &self.acc.count)?,
                _ => m.serialize_entry(f.name(), &self.acc.get(f).map(|v| Num::of(f, v, self.narrow)))?,
            }
        }
        m.serialize_entry("skipped", &self.acc.skipped)?;
        m.end()
    }
}

/// One row per bucket and label: `start,label,<functions>,skipped` (empty: no value).
fn to_csv(series: &Series, fns: &[Func]) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    let mut head = vec!["start", "label"];
    head.extend(fns.iter().map(|f| f.name()));
    head.push("skipped");
    w.write_record(&head)?;
    for (start, accs) in &series.buckets {
        let start = rfc3339(*start);
        for (id, acc) in accs.iter().enumerate().filter(|(_, a)| a.touched()) {
            let mut row = vec![start.clone(), series.labels.names[id].clone()];
            for &f in fns {
                row.push(match f {
                    Func::Count => acc.count.to_string(),
                    _ => acc.get(f).map_or(String::new(), |v| Num::of(f, v, series.labels.narrow[id]).text()),
                });
            }
            row.push(acc.skipped.to_string());
            w.write_record(&row)?;
        }
    }
    w.into_inner().map_err(|e| csv::Error::from(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::p;

    #[test]
    fn query_parameters() {
        let q = AggregateQuery::parse(&p(&[("every", "10s"), ("fn", "max,count,last"), ("format", "csv")])).expect("valid");
        let fns = [Func::Count, Func::Max, Func::Last];
        assert_eq!((q.every_ns, q.fns.as_slice(), q.format), (10_000_000_000, fns.as_slice(), Format::Csv));
        let d = AggregateQuery::parse(&[]).expect("defaults");
        let defaults = (d.every_ns, d.fns.as_slice(), d.from_ns, d.to_ns);
        assert_eq!(defaults, (60_000_000_000, Func::DEFAULT.as_slice(), 0, u64::MAX));
        let err = |pairs: &[(&str, &str)]| AggregateQuery::parse(&p(pairs)).expect_err("invalid").0;
        assert_eq!(err(&[("every", "0s")]), "every");
        assert_eq!(err(&[("every", "soon")]), "every");
        assert_eq!(err(&[("every", "999us")]), "every");
        assert_eq!(err(&[("every", "1000years")]), "every");
        assert_eq!(err(&[("fn", "median")]), "fn");
        assert_eq!(err(&[("fn", "avg,avg")]), "fn");
        assert_eq!(err(&[("fn", "")]), "fn");
        assert_eq!(err(&[("format", "ndjson")]), "format");
        assert_eq!(err(&[("view", "local")]), "view");
        assert_eq!(err(&[("from", "2"), ("from", "3")]), "from");
        assert_eq!(err(&[("from", "5"), ("to", "1")]), "from");
    }

    #[test]
    fn buckets_align_to_the_epoch() {
        let s = 1_000_000_000;
        assert_eq!(bucket(125 * s + 7, 60 * s), 120 * s);
        assert_eq!(buckets_between(119 * s, 120 * s, 60 * s), 2);
        assert_eq!(buckets_between(120 * s, 179 * s, 60 * s), 1);
        assert_eq!(buckets_between(0, u64::MAX, MIN_EVERY_NS), u64::MAX / MIN_EVERY_NS + 1);
    }

    #[test]
    fn accumulator_skips_what_is_not_finite() {
        let mut a = Acc::default();
        for x in [2.5, f64::NAN, -1.0, f64::INFINITY, 4.5] {
            a.add(x);
        }
        assert_eq!((a.count, a.skipped, a.sum, a.min, a.max, a.first, a.last), (3, 2, 6.0, -1.0, 4.5, 2.5, 4.5));
        assert_eq!(a.avg(), Some(2.0));
        let mut nan = Acc::default();
        nan.add(f64::NAN);
        assert!(nan.touched());
        assert_eq!((nan.get(Func::Min), nan.avg()), (None, None));
        // An f32 reading prints as sent; its sum keeps f64's digits.
        let x = f64::from(21.3f32);
        assert_eq!(serde_json::to_string(&Num::of(Func::Max, x, true)).expect("json"), "21.3");
        assert_eq!(Num::of(Func::Max, x, true).text(), "21.3");
        assert_eq!(Num::of(Func::Sum, x, true).text(), x.to_string());
    }
}
