//! `…/records?follow=true`: a live tail of one device as server-sent events — records as
//! they arrive here, and those that arrive later by repair from other sites or late
//! from the device. Documented in `docs/api.md`, "Live tail".
//!
//! The tail polls the device's history (every [`POLL`]) over the last [`HORIZON_NS`] of
//! device time behind the newest record it has sent, and sends what it has not sent yet:
//! so a record repaired into a gap, or arriving out of order, is sent when it comes, in
//! whatever place of the history it lands. Each follower has a queue of [`QUEUE`] events;
//! a client that lets it fill is dropped (and counted), so a slow reader cannot make the
//! node hold more. At most [`MAX_FOLLOWERS`] at once.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use telemesh_proto::record::StreamId;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::export::{self, RecordView};
use super::{cursor_text, error, App, Format, RecordsQuery};
use crate::store::{history, StoreError};

/// Followers served at once, node-wide.
pub const MAX_FOLLOWERS: usize = 64;
/// Events waiting for one follower at most.
pub const QUEUE: usize = 1024;
/// How often a follower looks for new records.
pub const POLL: Duration = Duration::from_millis(500);
/// A record that arrives with a device time this far behind the newest one sent (late
/// from the device, or repaired from another site) is still sent; an older one is not.
pub const HORIZON_NS: u64 = 120_000_000_000;
/// A comment line after this long without an event, so the connection is not idle.
pub const KEEPALIVE: Duration = Duration::from_secs(15);
/// Records read per look while catching up from `from`.
const PAGE: usize = 10_000;

/// Starts a live tail of `stream`: JSON records (or CloudEvents with
/// `format=cloudevents`), from `from` if given, else from what arrives next.
pub fn start(app: &App, stream: StreamId, q: RecordsQuery, from_given: bool) -> Response {
    if !matches!(q.format, Format::Json | Format::CloudEvents) {
        return super::bad("format", "follow sends server-sent events of JSON records: format json or cloudevents");
    }
    let Ok(permit) = Arc::clone(&app.followers).try_acquire_owned() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, Some("follow"), &format!("{MAX_FOLLOWERS} live tails are open already; try later"));
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    let app = app.clone();
    tokio::spawn(async move {
        let metrics = &app.shared.metrics;
        metrics.followers.inc();
        if let Err(e) = tail(&app, stream, &q, from_given, &tx).await {
            match e {
                Ended::Slow => drop(metrics.follow_dropped.inc()),
                Ended::Store(e) => tracing::warn!(error = %e, %stream, "live tail ended: store error"),
                Ended::Gone => {}
            }
        }
        metrics.followers.dec();
        drop(permit);
    });
    let body = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    (
        [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")],
        Body::from_stream(body),
    )
        .into_response()
}

/// Why a tail stopped.
#[derive(Debug)]
enum Ended {
    /// The client went away.
    Gone,
    /// The client read too slowly: its queue filled.
    Slow,
    Store(StoreError),
}

/// Queues one event; a full queue ends the tail.
fn send(tx: &mpsc::Sender<Bytes>, event: String) -> Result<(), Ended> {
    match tx.try_send(Bytes::from(event)) {
        Ok(()) => Ok(()),
        Err(TrySendError::Full(_)) => Err(Ended::Slow),
        Err(TrySendError::Closed(_)) => Err(Ended::Gone),
    }
}

/// One record as a server-sent event: its cursor as the event id, the record (or its
/// CloudEvent) as data.
fn event(v: &RecordView, format: Format) -> String {
    let data = match format {
        Format::CloudEvents => serde_json::to_string(&export::CloudEvent::new(v)),
        _ => serde_json::to_string(v),
    }
    .unwrap_or_default();
    let id = cursor_text((v.device_time_ns, v.seq, v.tag.unwrap_or_default()));
    format!("id: {id}\nevent: record\ndata: {data}\n\n")
}

async fn tail(app: &App, stream: StreamId, q: &RecordsQuery, from_given: bool, tx: &mpsc::Sender<Bytes>) -> Result<(), Ended> {
    let shared = Arc::clone(&app.shared);
    // Records are read off the async threads: from `start` (or, without a start, only the
    // newest record held, to begin after it).
    let read = |start: Option<history::OrderKey>, limit: usize| {
        let shared = Arc::clone(&shared);
        let q = q.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let store = shared.store.as_ref();
                let pending = shared.unflushed_of(&stream)?;
                let recs = match start {
                    Some(start) => history::records_from(store, &pending, stream, start, q.to_ns, limit)?,
                    None => history::record_before_key(store, &pending, stream, history::at(u64::MAX))?.into_iter().collect(),
                };
                let before = match recs.first() {
                    Some(r) => history::record_before_key(store, &pending, stream, r.order_key())?,
                    None => None,
                };
                let views = export::views(&recs, before.as_ref(), store.node_id(), q.view);
                Ok::<_, StoreError>((recs.into_iter().map(|r| r.order_key()).collect::<Vec<_>>(), views))
            })
            .await
            // The read panicked (a bug, logged by the panic hook): end this tail.
            .map_err(|_| Ended::Gone)?
            .map_err(Ended::Store)
        }
    };
    let mut seen: BTreeSet<history::OrderKey> = BTreeSet::new();
    // Catching up: from `from` page by page; without it, everything held now is seen.
    let mut newest = 0u64;
    if from_given {
        let mut start = history::at(q.from_ns);
        loop {
            let (keys, views) = read(Some(start), PAGE).await?;
            for v in &views {
                send(tx, event(v, q.format))?;
            }
            newest = newest.max(keys.last().map_or(0, |k| k.0));
            seen.extend(keys.iter().copied());
            match (keys.len() == PAGE, keys.last().and_then(|k| history::after(*k))) {
                (true, Some(next)) => start = next,
                _ => break,
            }
            seen.retain(|k| k.0.saturating_add(HORIZON_NS) >= newest);
        }
    } else {
        let (last, _) = read(None, 1).await?;
        newest = last.first().map_or(0, |k| k.0);
        let (keys, _) = read(Some(history::at(newest.saturating_sub(HORIZON_NS).max(q.from_ns))), usize::MAX).await?;
        seen.extend(keys);
    }
    let mut quiet = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(POLL).await;
        if tx.is_closed() {
            return Err(Ended::Gone);
        }
        let (keys, views) = read(Some(history::at(newest.saturating_sub(HORIZON_NS).max(q.from_ns))), usize::MAX).await?;
        // `views` may hold fewer than `keys` (the local view keeps this node's own).
        let mut sent = false;
        for v in &views {
            let key = (v.device_time_ns, v.seq, v.tag.unwrap_or_default());
            if !seen.contains(&key) {
                send(tx, event(v, q.format))?;
                sent = true;
            }
        }
        newest = newest.max(keys.last().map_or(0, |k| k.0));
        seen.extend(keys);
        seen.retain(|k| k.0.saturating_add(HORIZON_NS) >= newest);
        if sent {
            quiet = tokio::time::Instant::now();
        } else if quiet.elapsed() >= KEEPALIVE {
            send(tx, ": keep-alive\n\n".to_owned())?;
            quiet = tokio::time::Instant::now();
        }
    }
}
