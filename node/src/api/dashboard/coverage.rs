//! `GET /v1/coverage`: for each device, over a range of device time, how many records the
//! merged history holds, how many extended seqs are missing from it, and how many records
//! each site heard itself — what each site alone would have of a device, against what the
//! mesh has after repair (the dashboard's site page). Documented in `docs/api.md`.
//!
//! The node reads every record of the range once, one window at a time, and keeps a few
//! counters per device and site.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use telemesh_proto::record::StreamId;
use telemesh_proto::wire::Dialect;

use super::super::{bad, devices, error, export, parse_time, App};
use crate::store::{history, StoreError};

/// Default and largest number of devices in one answer.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 10_000;
/// Default range: the last hour of device time.
pub const DEFAULT_FROM: &str = "-1h";

/// A validated query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageQuery {
    pub from_ns: u64,
    pub to_ns: u64,
    pub dialect: Option<Dialect>,
    pub limit: usize,
    /// Continue after this device (`dialect:device`).
    pub after: Option<StreamId>,
}

impl CoverageQuery {
    /// Parses query parameters; an unknown, repeated or bad one is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<CoverageQuery, (String, String)> {
        let mut q = CoverageQuery { from_ns: 0, to_ns: u64::MAX, dialect: None, limit: DEFAULT_LIMIT, after: None };
        let mut from = DEFAULT_FROM;
        for (name, value) in super::super::once(params, &["from", "to", "dialect", "limit", "cursor"])? {
            let err = |m: String| (name.to_owned(), m);
            match name {
                "from" => from = value,
                "to" => q.to_ns = parse_time(value).map_err(err)?,
                "dialect" => {
                    let dialect = value.parse().map_err(|e: telemesh_proto::wire::UnknownDialect| err(e.to_string()))?;
                    q.dialect = Some(dialect);
                }
                "limit" => {
                    q.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => return Err(err(format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}"))),
                    }
                }
                "cursor" => q.after = Some(devices::parse_stream(value).map_err(err)?),
                // `once` lets no other name through.
                _ => {}
            }
        }
        q.from_ns = parse_time(from).map_err(|m| ("from".to_owned(), m))?;
        if q.from_ns > q.to_ns {
            return Err(("from".into(), "from is after to".into()));
        }
        Ok(q)
    }
}

/// One device's coverage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    pub dialect: Dialect,
    pub device: u32,
    /// Records of the merged history in the range.
    pub records: u64,
    /// Extended seqs missing from it: the sum of the records' `gap`.
    pub missing: u64,
    /// Records each site (node id) received itself.
    pub heard: BTreeMap<String, u64>,
}

/// The JSON body.
#[derive(Debug, Serialize)]
pub struct Page {
    pub from: String,
    pub to: Option<String>,
    /// Every site that heard a record listed, sorted.
    pub sites: Vec<String>,
    pub count: usize,
    pub truncated: bool,
    pub next_cursor: Option<String>,
    pub devices: Vec<Device>,
}

pub async fn coverage(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), Some("query"), &e.body_text()),
    };
    let q = match CoverageQuery::parse(&params) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    let known = devices::known_streams(&app.shared);
    let known = match known {
        Ok(k) => k,
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
    };
    let shared = Arc::clone(&app.shared);
    let page = tokio::task::spawn_blocking(move || page(&shared, &q, known)).await;
    let page = match page {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
    };
    let next = page.next_cursor.clone();
    let mut response = Json(page).into_response();
    if let Some(cursor) = next {
        super::super::link_next(&mut response, "/v1/coverage", &params, cursor);
    }
    response
}

/// The devices of `known` that `q` asks for and that have records in its range.
fn page(
    shared: &crate::shared::Shared,
    q: &CoverageQuery,
    known: std::collections::BTreeSet<StreamId>,
) -> Result<Page, StoreError> {
    let store = shared.store.as_ref();
    let me: Arc<str> = Arc::from(store.node_id());
    let start = q.after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded);
    let mut out: Vec<Device> = Vec::new();
    let mut next_cursor = None;
    for id in known.range((start, std::ops::Bound::Unbounded)) {
        if q.dialect.is_some_and(|d| d != id.dialect) {
            continue;
        }
        let pending = shared.unflushed_of(id)?;
        let before = history::record_before(store, &pending, *id, q.from_ns)?;
        let device = count(store, &pending, *id, q, before.map(|r| r.ext_seq), &me)?;
        if device.records == 0 {
            continue;
        }
        if out.len() == q.limit {
            next_cursor = out.last().map(|d| format!("{}:{}", d.dialect, d.device));
            break;
        }
        out.push(device);
    }
    let mut sites: Vec<String> = out.iter().flat_map(|d| d.heard.keys().cloned()).collect();
    sites.sort();
    sites.dedup();
    Ok(Page {
        from: export::rfc3339_ns(q.from_ns),
        to: (q.to_ns != u64::MAX).then(|| export::rfc3339_ns(q.to_ns)),
        sites,
        count: out.len(),
        truncated: next_cursor.is_some(),
        next_cursor,
        devices: out,
    })
}

/// One device's counts over the range; `previous_ext` is the extended seq of the record
/// before it (the first record's gap counts from there, as the records endpoint shows it).
fn count(
    store: &dyn crate::store::Store,
    pending: &[crate::store::StoredRecord],
    stream: StreamId,
    q: &CoverageQuery,
    mut previous_ext: Option<u64>,
    me: &Arc<str>,
) -> Result<Device, StoreError> {
    let mut records = 0u64;
    let mut missing = 0u64;
    let mut heard: BTreeMap<Arc<str>, u64> = BTreeMap::new();
    history::for_each_window(store, pending, stream, q.from_ns, q.to_ns, |recs| {
        for r in recs {
            records += 1;
            if let Some(p) = previous_ext {
                missing += r.ext_seq.saturating_sub(p.saturating_add(1));
            }
            previous_ext = Some(r.ext_seq);
            // As the records' `heard_by`: the others listed, and this node if it holds a copy
            // of its own.
            let here = r.copies > 0 && !r.heard_by.contains(me);
            for site in r.heard_by.iter().chain(here.then_some(me)) {
                *heard.entry(Arc::clone(site)).or_default() += 1;
            }
        }
    })?;
    Ok(Device {
        dialect: stream.dialect,
        device: stream.device,
        records,
        missing,
        heard: heard.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::api::tests::p;

    #[test]
    fn parameters() {
        let given = [("from", "1765477200"), ("to", "1765477260"), ("dialect", "iotstream"), ("limit", "5")];
        let q = CoverageQuery::parse(&p(&given)).expect("valid");
        assert_eq!((q.from_ns, q.to_ns), (1_765_477_200_000_000_000, 1_765_477_260_000_000_000));
        assert_eq!((q.dialect, q.limit), (Some(Dialect::Iotstream), 5));
        let q = CoverageQuery::parse(&[]).expect("valid");
        assert!(q.from_ns > 0 && q.to_ns == u64::MAX, "the last hour by default");
        let err = |pairs: &[(&str, &str)]| CoverageQuery::parse(&p(pairs)).expect_err("invalid").0;
        for (bad, name) in [
            (vec![("from", "yesterday")], "from"),
            (vec![("from", "20"), ("to", "10")], "from"),
            (vec![("dialect", "mqtt")], "dialect"),
            (vec![("limit", "0")], "limit"),
            (vec![("limit", "10001")], "limit"),
            (vec![("cursor", "iotstream")], "cursor"),
            (vec![("view", "local")], "view"),
            (vec![("to", "1"), ("to", "2")], "to"),
        ] {
            assert_eq!(err(&bad), name, "{bad:?}");
        }
    }
}
