//! `GET /v1/devices`: every device the mesh holds records of, not only those this node
//! heard — the streams of its sealed windows (its own and those repaired from other
//! sites), the streams it holds states of, and those still only in memory — with their
//! first and last device time, records, when this node last heard each, what its own
//! ingest counted, and which sites heard its latest window. Documented in `docs/api.md`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use telemesh_proto::record::StreamId;
use telemesh_proto::stream::Report;
use telemesh_proto::wire::Dialect;

use super::{bad, error, export, App};
use crate::store::{history, Auth, StoreError};

/// Default and largest number of devices in one answer.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;

/// A validated `GET /v1/devices` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesQuery {
    pub dialect: Option<Dialect>,
    /// Only devices not heard (or, heard only by other sites, with no record) for this long.
    pub stale_ns: Option<u64>,
    pub limit: usize,
    /// Continue after this device (a page's `next_cursor`: `dialect:device`).
    pub after: Option<StreamId>,
}

/// Reads `dialect:device`.
pub fn parse_stream(s: &str) -> Result<StreamId, String> {
    let (dialect, device) = s.split_once(':').ok_or_else(|| format!("{s:?} is not dialect:device (iotstream:3001)"))?;
    super::stream_id(dialect, device).map_err(|(_, m)| m)
}

impl DevicesQuery {
    /// Parses query parameters; an unknown, repeated or bad one is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<DevicesQuery, (String, String)> {
        let mut q = DevicesQuery { dialect: None, stale_ns: None, limit: DEFAULT_LIMIT, after: None };
        let known = ["dialect", "stale", "limit", "cursor"];
        for (name, value) in super::once(params, &known)? {
            let err = |m: String| (name.to_owned(), m);
            match name {
                "dialect" => q.dialect = Some(value.parse().map_err(|e: telemesh_proto::wire::UnknownDialect| err(e.to_string()))?),
                "stale" => {
                    let d = humantime::parse_duration(value).map_err(|e| err(format!("{value:?}: {e} (e.g. 10m, 1h)")))?;
                    q.stale_ns = Some(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
                }
                "limit" => {
                    q.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => return Err(err(format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}"))),
                    }
                }
                "cursor" => q.after = Some(parse_stream(value).map_err(err)?),
                // `once` lets no other name through.
                _ => {}
            }
        }
        Ok(q)
    }
}

/// One device in `GET /v1/devices`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView {
    pub dialect: Dialect,
    pub device: u32,
    /// Device time of its first and last record this node holds (merged history).
    pub first_device_time: Option<String>,
    pub last_device_time: Option<String>,
    /// Records in its sealed windows: the merged history, as far as sealed.
    pub records: u64,
    pub windows: usize,
    /// When this node last received a datagram of it (null: only other sites did).
    pub last_seen: Option<String>,
    /// Whether it is stale by the query's `stale`: not heard here (or, if never heard here,
    /// no record by device time) for that long.
    pub stale: bool,
    /// What this node's own ingest counted of it (null: never heard here).
    pub heard_here: Option<Report>,
    /// The sites (node ids) that heard records of its latest sealed window.
    pub sites: Vec<String>,
    /// How its latest record was proved to any node (`none`, `tag`, `certificate`; null:
    /// no record held), as the records' `auth` in the merged view.
    pub auth: Option<Auth>,
}

/// The JSON body of `GET /v1/devices`.
#[derive(Debug, Serialize)]
pub struct DevicesPage {
    pub count: usize,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub devices: Vec<DeviceView>,
}


pub async fn devices(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), Some("query"), &e.body_text()),
    };
    let q = match DevicesQuery::parse(&params) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    let shared = Arc::clone(&app.shared);
    let q2 = q.clone();
    let page = super::blocking(move || page(&shared, &q2)).await;
    let page = match page {
        Ok(p) => p,
        Err(response) => return response,
    };
    let next = page.next_cursor.clone();
    let mut response = Json(page).into_response();
    if let Some(cursor) = next {
        super::link_next(&mut response, "/v1/devices", &params, cursor);
    }
    response
}

/// Every stream this node knows: those with stored records, stored states, and in memory.
pub fn known_streams(shared: &crate::shared::Shared) -> Result<std::collections::BTreeSet<StreamId>, StoreError> {
    let mut out: std::collections::BTreeSet<StreamId> = shared.store.streams(None, usize::MAX)?.into_iter().collect();
    out.extend(shared.store.states()?.into_iter().map(|(id, _)| id));
    out.extend(shared.table().snapshot().into_iter().map(|(id, _)| id));
    Ok(out)
}

/// The page of devices `q` asks for.
fn page(shared: &crate::shared::Shared, q: &DevicesQuery) -> Result<DevicesPage, StoreError> {
    let store = shared.store.as_ref();
    // Every stream known: stored records, stored states, states in memory (newer).
    let mut reports: BTreeMap<StreamId, Option<Report>> =
        store.streams(None, usize::MAX)?.into_iter().map(|s| (s, None)).collect();
    for (id, state) in store.states()? {
        reports.insert(id, Some(state.report()));
    }
    for (id, state) in shared.table().snapshot() {
        reports.insert(id, Some(state.report()));
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let now = u64::try_from(now).unwrap_or(u64::MAX);
    let mut devices = Vec::new();
    let mut next_cursor = None;
    let start = match q.after {
        Some(a) => std::ops::Bound::Excluded(a),
        None => std::ops::Bound::Unbounded,
    };
    for (id, report) in reports.range((start, std::ops::Bound::Unbounded)) {
        if q.dialect.is_some_and(|d| d != id.dialect) {
            continue;
        }
        let pending = shared.unflushed_of(id)?;
        let first = history::records(store, &pending, *id, 0, u64::MAX, 1)?.pop().map(|r| r.record.device_time_ns);
        let latest = history::record_before_key(store, &pending, *id, history::at(u64::MAX))?;
        let last = latest.as_ref().map(|r| r.record.device_time_ns);
        // A stream heard here with a first arrival of 0 has never been heard (a state
        // written for nothing cannot be, but a damaged one could).
        let heard = report.as_ref().filter(|r| r.first_arrival_ns > 0);
        let last_seen = heard.map(|r| r.last_arrival_ns);
        let stale = q.stale_ns.is_some_and(|d| last_seen.or(last).is_none_or(|t| now.saturating_sub(t) > d));
        if q.stale_ns.is_some() && !stale {
            continue;
        }
        if devices.len() == q.limit {
            next_cursor = devices.last().map(|d: &DeviceView| format!("{}:{}", d.dialect, d.device));
            break;
        }
        let sum = store.stream_sum(*id)?.unwrap_or_default();
        let sites = match last_sealed(store, *id)? {
            Some(w) => w.table.nodes.into_iter().map(|(n, _)| n).collect(),
            None => Vec::new(),
        };
        devices.push(DeviceView {
            dialect: id.dialect,
            device: id.device,
            first_device_time: first.map(export::rfc3339_ns),
            last_device_time: last.map(export::rfc3339_ns),
            records: sum.records,
            windows: sum.windows as usize,
            last_seen: last_seen.map(export::rfc3339_ns),
            stale,
            heard_here: heard.cloned(),
            sites,
            auth: latest.map(|r| r.auth()),
        });
    }
    Ok(DevicesPage { count: devices.len(), truncated: next_cursor.is_some(), next_cursor, devices })
}

/// The latest sealed window of `stream`: windows after it hold only chunks (open, or not
/// sealed yet), a few at most, so at most 16 are passed over.
fn last_sealed(store: &dyn crate::store::Store, stream: StreamId) -> Result<Option<crate::store::Sealed>, StoreError> {
    let mut before = u64::MAX;
    for _ in 0..16 {
        let Some(w) = store.window_before(stream, before)? else { return Ok(None) };
        if let Some(sealed) = store.sealed(stream, w)? {
            return Ok(Some(sealed));
        }
        before = w;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::p;

    #[test]
    fn parameters() {
        let q = DevicesQuery::parse(&p(&[("dialect", "tinytelemetry"), ("stale", "10m"), ("limit", "5"), ("cursor", "tinytelemetry:7")]))
            .expect("valid");
        assert_eq!(q.dialect, Some(Dialect::Tinytelemetry));
        assert_eq!(q.stale_ns, Some(600_000_000_000));
        assert_eq!(q.after, Some(StreamId::new(Dialect::Tinytelemetry, 7)));
        let err = |pairs: &[(&str, &str)]| DevicesQuery::parse(&p(pairs)).expect_err("invalid").0;
        for (bad, name) in [
            (vec![("dialect", "mqtt")], "dialect"),
            (vec![("stale", "soon")], "stale"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "10001")], "limit"),
            (vec![("cursor", "iotstream:70000")], "cursor"),
            (vec![("cursor", "tinytelemetry:0")], "cursor"),
            (vec![("cursor", "3001")], "cursor"),
            (vec![("colour", "red")], "colour"),
            (vec![("limit", "1"), ("limit", "2")], "limit"),
        ] {
            assert_eq!(err(&bad), name, "{bad:?}");
        }
    }
}
