//! `GET /v1/records?devices=…`: the records of several devices, or of every known device
//! in a range of ids, in one query — stream after stream, each in device order, pages
//! chained by a cursor that names the stream. Documented in `docs/api.md`.

use std::collections::BTreeSet;
use std::ops::RangeInclusive;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use telemesh_proto::record::StreamId;
use telemesh_proto::wire::Dialect;

use super::export::{self, RecordView};
use super::{bad, error, link_next, parse_cursor, App, Format, Order, RecordsQuery};
use crate::store::{history, StoreError};

/// Most device ids one query may name (a range counts as the devices it holds).
pub const MAX_DEVICES: usize = 10_000;

/// `dialect:device` or `dialect:first-last`, comma-separated.
pub fn parse_devices(s: &str) -> Result<Vec<(Dialect, RangeInclusive<u32>)>, String> {
    let mut out = Vec::new();
    for part in s.split(',') {
        let (name, ids) = part.split_once(':').ok_or_else(|| format!("{part:?} is not dialect:device or dialect:first-last"))?;
        let dialect: Dialect = name.parse().map_err(|e: telemesh_proto::wire::UnknownDialect| e.to_string())?;
        let id = |x: &str| super::stream_id(name, x).map(|s| s.device).map_err(|(_, m)| m);
        let range = match ids.split_once('-') {
            Some((a, b)) => id(a)?..=id(b)?,
            None => id(ids).map(|d| d..=d)?,
        };
        if range.is_empty() {
            return Err(format!("{part:?}: the range is empty"));
        }
        out.push((dialect, range));
    }
    Ok(out)
}

/// The streams `devices` names: single ids as given, ranges as the devices this node
/// knows in them (`known`).
fn streams(devices: &[(Dialect, RangeInclusive<u32>)], known: &BTreeSet<StreamId>) -> BTreeSet<StreamId> {
    let mut out = BTreeSet::new();
    for (dialect, range) in devices {
        if range.start() == range.end() {
            out.insert(StreamId::new(*dialect, *range.start()));
        } else {
            let (lo, hi) = (StreamId::new(*dialect, *range.start()), StreamId::new(*dialect, *range.end()));
            out.extend(known.range(lo..=hi).copied());
        }
    }
    out
}

/// A cursor of this endpoint: the stream and the record cursor within it.
fn parse_many_cursor(s: &str) -> Result<(StreamId, history::OrderKey), String> {
    let mut parts = s.splitn(3, ':');
    let (Some(dialect), Some(device), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("{s:?} is not a cursor (a page's next_cursor)"));
    };
    Ok((super::devices::parse_stream(&format!("{dialect}:{device}"))?, parse_cursor(key)?))
}

/// The JSON body.
#[derive(Debug, Serialize)]
struct Page<'a> {
    count: usize,
    truncated: bool,
    next_cursor: Option<String>,
    records: &'a [RecordView],
}

pub async fn records(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), Some("query"), &e.body_text()),
    };
    // `devices` and this endpoint's `cursor` here; the rest as a one-device query has them.
    let (mut devices, mut cursor, mut rest) = (None, None, Vec::new());
    for (name, value) in &params {
        match name.as_str() {
            "devices" | "cursor" if params.iter().filter(|(n, _)| n == name).count() > 1 => {
                return bad(name, format!("{name} given more than once"));
            }
            "devices" => match parse_devices(value) {
                Ok(d) => devices = Some(d),
                Err(m) => return bad("devices", m),
            },
            "cursor" => match parse_many_cursor(value) {
                Ok(c) => cursor = Some(c),
                Err(m) => return bad("cursor", m),
            },
            _ => rest.push((name.clone(), value.clone())),
        }
    }
    let Some(devices) = devices else { return bad("devices", "give devices=dialect:device,… (e.g. iotstream:3001,iotstream:10-20)") };
    let q = match RecordsQuery::parse(&rest) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    if q.order == Order::Desc || q.proof {
        return bad(if q.proof { "proof" } else { "order" }, "several devices come in device order, without proof: ask one device for that");
    }
    if q.format == Format::Csv && devices.iter().any(|(d, _)| *d != devices[0].0) {
        return bad("format", "CSV names devices by id alone: ask one dialect at a time");
    }
    let known = super::devices::known_streams(&app.shared);
    let known = match known {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
    };
    let streams = streams(&devices, &known);
    if streams.len() > MAX_DEVICES {
        return bad("devices", format!("{} devices; at most {MAX_DEVICES} in one query", streams.len()));
    }
    let (shared, format, columns) = (Arc::clone(&app.shared), q.format, q.columns.clone());
    let fetched = super::blocking(move || page(&shared, &streams, cursor, &q)).await;
    let (views, next) = match fetched {
        Ok(v) => v,
        Err(response) => return response,
    };
    let mut response = match format {
        Format::Json => Json(Page { count: views.len(), truncated: next.is_some(), next_cursor: next.clone(), records: &views }).into_response(),
        Format::Ndjson => {
            let body: String = views.iter().map(|v| serde_json::to_string(v).unwrap_or_default() + "\n").collect();
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], export::csv(&views, columns.as_deref())).into_response(),
        Format::CloudEvents => ([(header::CONTENT_TYPE, export::CLOUDEVENTS_BATCH)], export::cloudevents(&views)).into_response(),
    };
    if let Some(cursor) = next {
        link_next(&mut response, "/v1/records", &params, cursor);
    }
    response
}

/// Up to `q.limit` records of `streams`, stream after stream, from the cursor on; and the
/// cursor after the last, if more follow. As for one device, `limit` counts records of the
/// merged history, before a local view picks out this node's.
fn page(
    shared: &crate::shared::Shared,
    streams: &BTreeSet<StreamId>,
    cursor: Option<(StreamId, history::OrderKey)>,
    q: &RecordsQuery,
) -> Result<(Vec<RecordView>, Option<String>), StoreError> {
    let store = shared.store.as_ref();
    let mut views = Vec::new();
    let mut taken = 0;
    let mut last: Option<(StreamId, history::OrderKey)> = None;
    let text = |(s, k): (StreamId, history::OrderKey)| format!("{}:{}:{}", s.dialect, s.device, super::cursor_text(k));
    let first = cursor.map_or(std::ops::Bound::Unbounded, |(s, _)| std::ops::Bound::Included(s));
    for stream in streams.range((first, std::ops::Bound::Unbounded)) {
        let left = q.limit - taken;
        let start = match cursor {
            Some((s, key)) if s == *stream => match history::after(key) {
                Some(after) => after.max(history::at(q.from_ns)),
                None => continue,
            },
            _ => history::at(q.from_ns),
        };
        let pending = shared.unflushed_of(stream)?;
        // One more than fits tells whether anything follows.
        let mut recs = history::records_from(store, &pending, *stream, start, q.to_ns, left + 1)?;
        if recs.is_empty() {
            continue;
        }
        if left == 0 {
            return Ok((views, last.map(text)));
        }
        let before = history::record_before_key(store, &pending, *stream, start)?;
        let more = recs.len() > left;
        recs.truncate(left);
        taken += recs.len();
        last = recs.last().map(|r| (*stream, r.order_key()));
        views.extend(export::views(&recs, before.as_ref(), store.node_id(), q.view));
        if more {
            return Ok((views, last.map(text)));
        }
    }
    Ok((views, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_and_cursors() {
        let d = parse_devices("iotstream:3001,iotstream:10-20,tinytelemetry:5").expect("valid");
        assert_eq!(d, vec![(Dialect::Iotstream, 3001..=3001), (Dialect::Iotstream, 10..=20), (Dialect::Tinytelemetry, 5..=5)]);
        for bad in ["", "3001", "iotstream:70000", "tinytelemetry:0-5", "iotstream:20-10", "mqtt:1", "iotstream:1,"] {
            assert!(parse_devices(bad).is_err(), "{bad:?}");
        }
        let known: BTreeSet<StreamId> = [1, 12, 15, 30].into_iter().map(|n| StreamId::new(Dialect::Iotstream, n)).collect();
        let got: Vec<u32> = streams(&d, &known).into_iter().map(|s| s.device).collect();
        // Single ids as given (known or not), ranges as the devices known in them.
        assert_eq!(got, [12, 15, 3001, 5]);
        let (s, key) = parse_many_cursor("iotstream:12:5-1-00000000000000ff").expect("cursor");
        assert_eq!((s, key), (StreamId::new(Dialect::Iotstream, 12), (5, 1, 255u64.to_be_bytes())));
        assert!(parse_many_cursor("iotstream:12").is_err());
    }
}
