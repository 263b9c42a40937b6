//! The HTTP query API (axum): `/v1/streams`, `/v1/streams/{dialect}/{device}/records`,
//! `/v1/status`, `/metrics`. Documented in `docs/api.md`.
//!
//! A request passes, in order: hyper's parser and header-read timeout ([`server`]), the
//! request limits ([`limit`]), the bearer token ([`auth`]), then the router. Every answer
//! from the last three is JSON, errors included.

pub mod aggregate;
pub mod align;
pub mod auth;
pub mod client;
pub mod dashboard;
pub mod devices;
pub mod export;
pub mod follow;
pub mod mesh_cli;
mod members;
pub mod limit;
pub mod many;
pub mod meter;
pub mod proof;
pub mod server;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::json;
use telemesh_proto::record::StreamId;
use telemesh_proto::stream::Report;
use telemesh_proto::wire::Dialect;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use self::export::RecordView;
use base64::Engine as _;
use crate::store::{history, StoreError, StoredRecord};
use crate::shared::Shared;

/// Default and largest `limit` of a records query.
pub const DEFAULT_LIMIT: usize = 1000;
pub const MAX_LIMIT: usize = 100_000;

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct App {
    pub shared: Arc<Shared>,
    pub started: Instant,
    pub listeners: Listeners,
    pub data_dir: String,
    /// The mesh as the driver last saw it.
    pub mesh: Arc<std::sync::Mutex<crate::mesh::Status>>,
    /// This node's membership of the mesh.
    pub membership: Arc<crate::trust::Membership>,
    /// Asks peers for the statements a proof needs (`None`: no overlay).
    pub fetcher: Option<proof::Fetcher>,
    /// Who may use the API.
    pub policy: auth::Policy,
    /// Live tails open now, at most [`follow::MAX_FOLLOWERS`].
    pub followers: Arc<tokio::sync::Semaphore>,
}

/// The addresses this node actually bound.
#[derive(Debug, Clone, Serialize)]
pub struct Listeners {
    pub iotstream: Option<SocketAddr>,
    pub tinytelemetry: Option<SocketAddr>,
    pub secure: Option<SocketAddr>,
    pub http: SocketAddr,
}

/// The API with its limits and authentication (the outermost layer runs first).
pub fn router(app: App) -> Router {
    let policy = app.policy.clone();
    let http = app.shared.metrics.http.clone();
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/streams", get(streams))
        .route("/v1/devices", get(devices::devices))
        .route("/v1/records", get(many::records))
        .route("/v1/peers", get(peers))
        .route("/v1/windows", get(windows))
        .route("/v1/streams/{dialect}/{device}/records", get(records))
        .route("/v1/streams/{dialect}/{device}/aggregate", get(aggregate::aggregate))
        .route("/v1/align", get(align::align))
        .route("/v1/mesh/members", get(members::members))
        .route("/v1/mesh/members/{peer}", axum::routing::delete(members::remove))
        .route("/v1/mesh/invites", axum::routing::post(members::invite))
        .route("/metrics", get(metrics))
        .merge(dashboard::routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, None, "no such endpoint; see docs/api.md") })
        .method_not_allowed_fallback(|method: axum::http::Method| async move {
            error(StatusCode::METHOD_NOT_ALLOWED, None, &format!("{method} is not served here; see docs/api.md"))
        })
        .with_state(app)
        .layer(axum::middleware::from_fn_with_state(policy, auth::require))
        .layer(axum::middleware::from_fn(limit::check))
        .layer(axum::middleware::from_fn_with_state(http, meter::count))
}

/// A JSON error body: `{"error": "...", "parameter": "..."}`. Routes added later (and
/// their extractor rejections) answer with this too.
pub fn error(status: StatusCode, parameter: Option<&str>, message: &str) -> Response {
    (status, Json(json!({ "error": message, "parameter": parameter }))).into_response()
}

/// Runs a store read off the async runtime: its value, or the 500 that a failed read (or a
/// task that panicked) answers.
pub(crate) async fn blocking<T, E>(read: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, Response>
where
    T: Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    match tokio::task::spawn_blocking(read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string())),
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string())),
    }
}

fn bad(parameter: &str, message: impl Into<String>) -> Response {
    error(StatusCode::BAD_REQUEST, Some(parameter), &message.into())
}

/// One stream in `GET /v1/streams`.
#[derive(Debug, Serialize)]
pub struct StreamView {
    pub dialect: Dialect,
    pub device: u32,
    #[serde(flatten)]
    pub report: Report,
}

async fn streams(State(app): State<App>) -> Response {
    let shared = Arc::clone(&app.shared);
    let result = blocking(move || {
        let mut all: BTreeMap<StreamId, Report> = BTreeMap::new();
        for (id, state) in shared.store.states()? {
            all.insert(id, state.report());
        }
        // In-memory states are newer than stored ones.
        for (id, state) in shared.table().snapshot() {
            all.insert(id, state.report());
        }
        Ok::<_, crate::store::StoreError>(
            all.into_iter()
                .map(|(id, report)| StreamView { dialect: id.dialect, device: id.device, report })
                .collect::<Vec<_>>(),
        )
    })
    .await;
    match result {
        Ok(streams) => Json(json!({ "streams": streams })).into_response(),
        Err(response) => response,
    }
}

/// Output format of a records query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Ndjson,
    Csv,
    /// A CloudEvents 1.0 batch: one event per record.
    CloudEvents,
}

/// A validated records query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsQuery {
    pub from_ns: u64,
    pub to_ns: u64,
    pub limit: usize,
    pub format: Format,
    pub view: export::View,
    /// Carry the signed statements behind `heard_by` and `proved_by` ([`proof`]).
    pub proof: bool,
    /// Continue after this record (a page's `next_cursor`).
    pub cursor: Option<history::OrderKey>,
    pub order: Order,
    /// CSV: the reading labels that get a column each (default: those of the page).
    pub columns: Option<Vec<String>>,
    /// A live tail ([`follow`]).
    pub follow: bool,
}

/// The order of a records page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Device order, oldest first.
    Asc,
    /// Newest first: the latest `limit` records.
    Desc,
}

/// A records cursor: the place of the last record of a page, `<device time ns>-<seq>-<content
/// tag, 16 hex digits>`. Exact where a time is not: records can share a device time.
pub fn cursor_text((t, seq, tag): history::OrderKey) -> String {
    format!("{t}-{seq}-{:016x}", u64::from_be_bytes(tag))
}

/// Reads a cursor written by [`cursor_text`].
pub fn parse_cursor(s: &str) -> Result<history::OrderKey, String> {
    let bad = || format!("{s:?} is not a cursor (a page's next_cursor)");
    let mut parts = s.split('-');
    let (Some(t), Some(seq), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return Err(bad()) };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(t) || !digits(seq) || tag.len() != 16 {
        return Err(bad());
    }
    let tag = u64::from_str_radix(tag, 16).map_err(|_| bad())?;
    Ok((t.parse().map_err(|_| bad())?, seq.parse().map_err(|_| bad())?, tag.to_be_bytes()))
}

/// A time parameter: RFC 3339 (`2025-12-11T18:20:00Z`), Unix seconds (`1765477200.5`),
/// `now`, or a time before now (`-1h`, `-15m`, `-1d12h`: a minus and a duration).
pub fn parse_time(s: &str) -> Result<u64, String> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    parse_time_at(s, u64::try_from(now).unwrap_or(u64::MAX))
}

/// [`parse_time`], with `now_ns` as now.
pub fn parse_time_at(s: &str, now_ns: u64) -> Result<u64, String> {
    if s == "now" {
        return Ok(now_ns);
    }
    if let Some(ago) = s.strip_prefix('-') {
        let d = humantime::parse_duration(ago).map_err(|e| format!("{s:?}: {e} (a time before now is like -1h, -15m, -1d12h)"))?;
        return Ok(now_ns.saturating_sub(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)));
    }
    if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
        return u64::try_from(t.unix_timestamp_nanos()).map_err(|_| format!("{s:?} is before 1970"));
    }
    match s.parse::<f64>() {
        Ok(secs) if (0.0..1.8e10).contains(&secs) => Ok((secs * 1e9).round() as u64),
        _ => Err(format!("{s:?} is not RFC 3339 (2025-12-11T18:20:00Z), Unix seconds, now, or a time before now (-1h)")),
    }
}

impl RecordsQuery {
    /// Parses query parameters; an unknown, repeated or bad one is an error naming it.
    pub fn parse(params: &[(String, String)]) -> Result<RecordsQuery, (String, String)> {
        let mut q = RecordsQuery {
            from_ns: 0,
            to_ns: u64::MAX,
            limit: DEFAULT_LIMIT,
            format: Format::Json,
            view: export::View::Merged,
            proof: false,
            cursor: None,
            order: Order::Asc,
            columns: None,
            follow: false,
        };
        let known = ["from", "to", "limit", "cursor", "order", "format", "view", "columns", "follow", "proof"];
        for (name, value) in once(params, &known)? {
            let err = |m: String| (name.to_owned(), m);
            match name {
                "from" => q.from_ns = parse_time(value).map_err(err)?,
                "to" => q.to_ns = parse_time(value).map_err(err)?,
                "limit" => {
                    q.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => return Err(err(format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}"))),
                    }
                }
                "format" => {
                    q.format = match value {
                        "json" => Format::Json,
                        "ndjson" => Format::Ndjson,
                        "csv" => Format::Csv,
                        "cloudevents" => Format::CloudEvents,
                        _ => return Err(err(format!("{value:?} is not one of json, ndjson, csv, cloudevents"))),
                    }
                }
                "view" => {
                    q.view = match value {
                        "merged" => export::View::Merged,
                        "local" => export::View::Local,
                        _ => return Err(err(format!("{value:?} is not one of merged, local"))),
                    }
                }
                "cursor" => q.cursor = Some(parse_cursor(value).map_err(err)?),
                "follow" => {
                    q.follow = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err(format!("{value:?} is not one of true, false"))),
                    }
                }
                "columns" => q.columns = Some(value.split(',').filter(|l| !l.is_empty()).map(str::to_owned).collect()),
                "order" => {
                    q.order = match value {
                        "asc" => Order::Asc,
                        "desc" => Order::Desc,
                        _ => return Err(err(format!("{value:?} is not one of asc, desc"))),
                    }
                }
                "proof" => {
                    q.proof = match value {
                        "true" => true,
                        "false" => false,
                        _ => return Err(err(format!("{value:?} is not one of true, false"))),
                    }
                }
                // `once` lets no other name through.
                _ => {}
            }
        }
        if q.follow && (q.proof || q.order == Order::Desc || q.cursor.is_some()) {
            return Err(("follow".into(), "a live tail starts at from (or now), in device order, without proof".into()));
        }
        if q.columns.is_some() && q.format != Format::Csv {
            return Err(("columns".into(), "columns are for format=csv".into()));
        }
        if q.proof && (q.format != Format::Json || q.view != export::View::Merged) {
            return Err(("proof".into(), "a proof comes with the merged view in JSON only".into()));
        }
        if q.from_ns > q.to_ns {
            return Err(("from".into(), "from is after to".into()));
        }
        Ok(q)
    }
}

/// A stream from a path's or parameter's dialect and device id: the dialect known, the id
/// within the dialect's ([`Dialect::devices`]); else the part to name in a 400 and why.
pub fn stream_id(dialect: &str, device: &str) -> Result<StreamId, (&'static str, String)> {
    let dialect: Dialect = dialect.parse().map_err(|e: telemesh_proto::wire::UnknownDialect| ("dialect", e.to_string()))?;
    let range = dialect.devices();
    match device.parse::<u32>() {
        Ok(d) if range.contains(&d) => Ok(StreamId::new(dialect, d)),
        _ => Err(("device", format!("{device:?} is not a {dialect} device id ({}..={})", range.start(), range.end()))),
    }
}

/// An extractor's refusal as the API's JSON error (the limits layer catches bad encoding
/// first, so these are unlikely).
fn rejected(parameter: &str, status: StatusCode, body: String) -> Response {
    error(status, Some(parameter), &body)
}

async fn records(
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
    let stream = match stream_id(&dialect, &device) {
        Ok(s) => s,
        Err((p, m)) => return bad(p, m),
    };
    let q = match RecordsQuery::parse(&params) {
        Ok(q) => q,
        Err((p, m)) => return bad(&p, m),
    };
    if q.follow {
        return follow::start(&app, stream, q, params.iter().any(|(k, _)| k == "from"));
    }
    let shared = Arc::clone(&app.shared);
    let query = q.clone();
    let fetched = blocking(move || {
        let q = query;
        let store = shared.store.as_ref();
        let pending = shared.unflushed_of(&stream)?;
        let (recs, before, next) = match q.order {
            Order::Asc => page_forward(store, &pending, stream, &q)?,
            Order::Desc => page_back(store, &pending, stream, &q)?,
        };
        let mut views = export::views(&recs, before.as_ref(), store.node_id(), q.view);
        if q.order == Order::Desc {
            views.reverse();
        }
        Ok::<_, crate::store::StoreError>((views, next))
    })
    .await;
    let (views, next) = match fetched {
        Ok(v) => v,
        Err(response) => return response,
    };
    let mut response = if !q.proof {
        render(stream, &views, next, q.format, q.columns.as_deref())
    } else {
        let views = Arc::new(views);
        match prove(&app, stream, Arc::clone(&views)).await {
            Ok(proof) => Json(RecordsPage::new(stream, &views, next, Some(&proof))).into_response(),
            Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
        }
    };
    if let Some(n) = next {
        link_next(&mut response, &format!("/v1/streams/{}/{}/records", stream.dialect, stream.device), &params, cursor_text(n.cursor));
    }
    response
}

/// Records, the record before them (for the first one's gap) and where a cut page stops.
type Page = (Vec<StoredRecord>, Option<StoredRecord>, Option<Next>);

/// A page in device order: from `from`, or after the cursor's record.
fn page_forward(store: &dyn crate::store::Store, pending: &[StoredRecord], stream: StreamId, q: &RecordsQuery) -> Result<Page, StoreError> {
    let start = match q.cursor.map(history::after) {
        // Nothing comes after the last place there is.
        Some(None) => return Ok((Vec::new(), None, None)),
        Some(Some(after)) => after.max(history::at(q.from_ns)),
        None => history::at(q.from_ns),
    };
    // One extra record tells whether the page is complete.
    let mut recs = history::records_from(store, pending, stream, start, q.to_ns, q.limit + 1)?;
    let before = history::record_before_key(store, pending, stream, start)?;
    let next = (recs.len() > q.limit)
        .then(|| Next { from_ns: Some(recs[q.limit].record.device_time_ns), cursor: recs[q.limit - 1].order_key() });
    recs.truncate(q.limit);
    Ok((recs, before, next))
}

/// A page newest first (returned oldest first, reversed by the caller): up to `to`, or
/// before the cursor's record.
fn page_back(store: &dyn crate::store::Store, pending: &[StoredRecord], stream: StreamId, q: &RecordsQuery) -> Result<Page, StoreError> {
    let end = q.to_ns.checked_add(1).map_or((u64::MAX, u64::MAX, [0xff; 8]), history::at);
    let bound = q.cursor.map_or(end, |c| c.min(end));
    let mut recs = history::records_back(store, pending, stream, q.from_ns, bound, q.limit + 1)?;
    if recs.len() > q.limit {
        // The extra, oldest record: the one before the page.
        let before = recs.remove(0);
        let next = Next { from_ns: None, cursor: recs[0].order_key() };
        return Ok((recs, Some(before), Some(next)));
    }
    let before = match recs.first() {
        Some(r) => history::record_before_key(store, pending, stream, r.order_key())?,
        None => None,
    };
    Ok((recs, before, None))
}

/// The header naming the cursor of the next page when `limit` cut an answer (with a
/// `Link: <…>; rel="next"` to it), in every format.
pub const NEXT_CURSOR_HEADER: &str = "telemesh-next-cursor";

/// Where a cut page stops.
#[derive(Debug, Clone, Copy)]
struct Next {
    /// Device time of the first record not returned (in device order only).
    from_ns: Option<u64>,
    /// The last record returned.
    cursor: history::OrderKey,
}

/// The proof of a page of merged records: statements this node keeps, and those it asks
/// the nodes named (or the windows' coordinators) for; what stays unbacked is listed and
/// counted.
async fn prove(app: &App, stream: StreamId, views: Arc<Vec<RecordView>>) -> anyhow::Result<proof::Proof> {
    let membership = Arc::clone(&app.membership);
    let names: Vec<String> = membership.members().into_iter().map(|m| m.peer_id).collect();
    let members = telemesh_proto::mesh::Members::new(if membership.is_open() { Vec::new() } else { names });
    let m = Arc::clone(&membership);
    let member: proof::Verify = Arc::new(move |node: &str, bytes: &[u8], sig: &[u8]| {
        node.parse::<libp2p::PeerId>().is_ok_and(|peer| m.is_member(&peer) && crate::trust::identity::verify(&peer, bytes, sig))
    });
    let store = Arc::clone(&app.shared.store);
    let (mut proof, checked) = proof::build(store, stream, views, app.fetcher.as_ref(), &members, member).await?;
    app.shared.metrics.mesh.unbacked.inc_by(checked.unbacked.len() as u64);
    proof.mesh = membership.mesh().to_owned();
    proof.roster = membership.signed_roster().map(|r| base64::engine::general_purpose::STANDARD.encode(r));
    proof.unbacked = checked.unbacked;
    Ok(proof)
}

/// The JSON body of a records query.
#[derive(Debug, Serialize)]
pub struct RecordsPage<'a> {
    pub dialect: Dialect,
    pub device: u32,
    pub count: usize,
    /// Whether `limit` cut the page: more records follow `next_cursor`.
    pub truncated: bool,
    /// When `limit` cut the page: the cursor to continue with (`cursor=`).
    pub next_cursor: Option<String>,
    /// When `limit` cut the page: the device time of the first record not returned (a
    /// record sharing the last one's time may be returned again from it; prefer the cursor).
    pub next_from: Option<String>,
    pub records: &'a [RecordView],
    /// With `proof=true`: the signed statements behind `heard_by` and `proved_by`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<&'a proof::Proof>,
}

impl<'a> RecordsPage<'a> {
    fn new(stream: StreamId, views: &'a [RecordView], next: Option<Next>, proof: Option<&'a proof::Proof>) -> RecordsPage<'a> {
        RecordsPage {
            dialect: stream.dialect,
            device: stream.device,
            count: views.len(),
            truncated: next.is_some(),
            next_cursor: next.map(|n| cursor_text(n.cursor)),
            next_from: next.and_then(|n| n.from_ns).map(export::rfc3339_ns),
            records: views,
            proof,
        }
    }
}

fn render(stream: StreamId, views: &[RecordView], next: Option<Next>, format: Format, columns: Option<&[String]>) -> Response {
    match format {
        // Typed, not `json!`: a `serde_json::Value` would widen f32 readings to f64.
        Format::Json => Json(RecordsPage::new(stream, views, next, None)).into_response(),
        Format::Ndjson => {
            let mut body = String::new();
            for v in views {
                body.push_str(&serde_json::to_string(v).unwrap_or_default());
                body.push('\n');
            }
            ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
        }
        Format::Csv => ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], export::csv(views, columns)).into_response(),
        Format::CloudEvents => ([(header::CONTENT_TYPE, export::CLOUDEVENTS_BATCH)], export::cloudevents(views)).into_response(),
    }
}

/// `GET /v1/windows?from=T&limit=N&cursor=C`: the sealed windows this node holds that
/// start at or after device time `from`, in (stream, start) order, with their roots —
/// what the mesh compares; pages chain by cursor (`dialect:device:start_ns`).
async fn windows(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return rejected("query", e.status(), e.body_text()),
    };
    let given = match once(&params, &["from", "limit", "cursor"]) {
        Ok(g) => g,
        Err((p, m)) => return bad(&p, m),
    };
    let mut from = 0u64;
    let mut limit = 10_000usize;
    let mut after = None;
    for (name, value) in given {
        match name {
            "from" => match parse_time(value) {
                Ok(t) => from = t,
                Err(m) => return bad("from", m),
            },
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => limit = n,
                _ => return bad("limit", format!("{value:?} is not a whole number from 1 to {MAX_LIMIT}")),
            },
            _ => {
                let window = value.rsplit_once(':').and_then(|(stream, start)| {
                    Some(telemesh_proto::mesh::WindowId { stream: devices::parse_stream(stream).ok()?, start: start.parse().ok()? })
                });
                match window {
                    Some(w) => after = Some(w),
                    None => return bad("cursor", format!("{value:?} is not a cursor (a page's next_cursor: dialect:device:start_ns)")),
                }
            }
        }
    }
    // One more tells whether the page is complete.
    let shared = Arc::clone(&app.shared);
    let page = move || crate::store::summaries_from(shared.store.as_ref(), from, after, limit + 1);
    let mut summaries = match blocking(page).await {
        Ok(s) => s,
        Err(response) => return response,
    };
    let truncated = summaries.len() > limit;
    summaries.truncate(limit);
    let next_cursor = truncated
        .then(|| summaries.last().map(|s| format!("{}:{}:{}", s.window.stream.dialect, s.window.stream.device, s.window.start)))
        .flatten();
    let windows: Vec<serde_json::Value> = summaries
        .iter()
        .map(|s| {
            json!({
                "dialect": s.window.stream.dialect,
                "device": s.window.stream.device,
                "start_ns": s.window.start,
                "root": hex::encode(s.root),
                "count": s.count,
                "slot_size": s.slot_size,
                "provenance": hex::encode(s.provenance),
            })
        })
        .collect();
    let mut response = Json(json!({ "count": windows.len(), "truncated": truncated, "next_cursor": next_cursor, "windows": windows })).into_response();
    if let Some(cursor) = next_cursor {
        link_next(&mut response, "/v1/windows", &params, cursor);
    }
    response
}

/// The parameters given, each known and at most once; else the parameter to name in a
/// 400 and why — so every endpoint refuses unknown and repeated parameters alike.
pub(crate) fn once<'a>(params: &'a [(String, String)], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, (String, String)> {
    let mut seen: Vec<(&str, &str)> = Vec::new();
    for (name, value) in params {
        if seen.iter().any(|(n, _)| n == name) {
            return Err((name.clone(), format!("{name} given more than once")));
        }
        if !known.contains(&name.as_str()) {
            return Err((name.clone(), format!("unknown parameter {name:?} (known: {})", known.join(", "))));
        }
        seen.push((name, value));
    }
    Ok(seen)
}

/// Marks a cut answer: `Link: <path?query&cursor=…>; rel="next"` and the cursor header.
fn link_next(response: &mut Response, path: &str, params: &[(String, String)], cursor: String) {
    let mut query = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params.iter().filter(|(k, _)| k != "cursor") {
        query.append_pair(k, v);
    }
    query.append_pair("cursor", &cursor);
    let link = format!("<{path}?{}>; rel=\"next\"", query.finish());
    for (name, value) in [(header::LINK, link), (axum::http::HeaderName::from_static(NEXT_CURSOR_HEADER), cursor)] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            response.headers_mut().insert(name, v);
        }
    }
}

/// `GET /v1/peers`: connected peers, windows in sync / behind / ahead of each, repair counters.
async fn peers(State(app): State<App>) -> Response {
    let mesh = app.mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    Json(mesh).into_response()
}

async fn status(State(app): State<App>) -> Response {
    Json(status_body(&app)).into_response()
}

/// The body of `GET /v1/status` (also part of the dashboard's `/v1/summary`).
pub(crate) fn status_body(app: &App) -> serde_json::Value {
    let m = &app.shared.metrics;
    let mut received = 0;
    let mut records = 0;
    let mut duplicates = 0;
    let mut conflicts = 0;
    let mut dropped = 0;
    for d in Dialect::ALL {
        let h = m.for_dialect(d);
        received += h.packets.get();
        records += h.new.get() + h.conflict.get();
        duplicates += h.duplicate.get();
        conflicts += h.conflict.get();
        dropped += m.total_drops(d);
    }
    let mesh = app.mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    json!({
        "node_id": app.shared.store.node_id(),
        "peer_id": mesh.peer_id,
        "mesh": mesh.mesh,
        "listen": mesh.listen,
        "peers": mesh.peers.len(),
        "membership": app.membership.status(),
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": app.started.elapsed().as_secs(),
        "data_dir": app.data_dir,
        "listeners": app.listeners,
        "http": app.policy.describe(),
        "totals": {
            "received": received,
            "records": records,
            "duplicates": duplicates,
            "conflicts": conflicts,
            "dropped": dropped,
            // As of the last flush: the API never waits on the ingest path's table.
            "streams_in_memory": m.streams_in_memory.get(),
        },
    })
}

/// The classic text format, or OpenMetrics if the `Accept` header prefers it.
async fn metrics(State(app): State<App>, headers: axum::http::HeaderMap) -> Response {
    let format = crate::metrics::Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
    let (_, records) = app.shared.store.sealed_totals();
    let shared = Arc::clone(&app.shared);
    // The store's size and /proc are read from disk: not on the runtime's threads.
    match tokio::task::spawn_blocking(move || shared.metrics.scrape(shared.store.as_ref(), records, format)).await {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type()), (header::VARY, "Accept")], text).into_response(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, None, &e.to_string()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Query parameters as the handlers get them.
    pub(crate) fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn query_parameters() {
        let q = RecordsQuery::parse(&p(&[("from", "2025-12-11T18:20:00Z"), ("to", "1765477300.5"), ("limit", "10"), ("format", "csv")]))
            .expect("valid");
        assert_eq!(q.from_ns, 1_765_477_200_000_000_000);
        assert_eq!(q.to_ns, 1_765_477_300_500_000_000);
        assert_eq!((q.limit, q.format), (10, Format::Csv));
        let err = |pairs: &[(&str, &str)]| RecordsQuery::parse(&p(pairs)).expect_err("invalid").0;
        assert_eq!(err(&[("limit", "0")]), "limit");
        assert_eq!(err(&[("limit", "x")]), "limit");
        assert_eq!(err(&[("from", "yesterday")]), "from");
        assert_eq!(err(&[("format", "xml")]), "format");
        assert_eq!(err(&[("colour", "red")]), "colour");
        assert_eq!(err(&[("to", "1"), ("to", "2")]), "to");
        assert_eq!(err(&[("from", "5"), ("to", "1")]), "from");
        assert_eq!(err(&[("cursor", "1-2")]), "cursor");
    }

    #[test]
    fn times_before_now_and_cursors() {
        let now = 1_765_477_200_000_000_000;
        assert_eq!(parse_time_at("now", now), Ok(now));
        assert_eq!(parse_time_at("-1h", now), Ok(now - 3_600_000_000_000));
        assert_eq!(parse_time_at("-1d12h", now), Ok(now - 36 * 3_600_000_000_000));
        assert_eq!(parse_time_at("-90s", 5), Ok(0), "before 1970 is 1970");
        assert!(parse_time_at("-1", now).is_err(), "a duration needs a unit");
        assert!(parse_time_at("-", now).is_err());
        let key = (now, 7, 0xdead_beef_u64.to_be_bytes());
        assert_eq!(parse_cursor(&cursor_text(key)), Ok(key));
        for bad in ["", "1-2", "1-2-3", "1-2-00000000deadbeef-4", "x-2-00000000deadbeef", "1--00000000deadbeef", "+1-2-00000000deadbeef"] {
            assert!(parse_cursor(bad).is_err(), "{bad:?}");
        }
        assert_eq!(history::after((1, 2, [0xff; 8])), Some((1, 3, [0; 8])));
        assert_eq!(history::after((1, u64::MAX, [0xff; 8])), Some(history::at(2)));
        assert_eq!(history::after((u64::MAX, u64::MAX, [0xff; 8])), None);
    }
}
