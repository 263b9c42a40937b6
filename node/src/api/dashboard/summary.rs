//! `GET /v1/summary[?follow=true]`: the node and the mesh in one body — `/v1/status` and
//! `/v1/peers` together, with the node's clock — once, or every [`INTERVAL`] as
//! server-sent events (`event: summary`). The dashboard's mesh page draws it, and its
//! other pages take each event as the cue to read again what they show.
//!
//! A feed counts among the live tails ([`super::super::follow`]): it takes one of the
//! [`MAX_FOLLOWERS`](super::super::follow::MAX_FOLLOWERS) places, shows in
//! `telemesh_http_followers`, and a client that lets its queue of [`QUEUE`] events fill
//! is dropped and counted in `telemesh_http_follow_dropped_total`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use tokio::sync::mpsc::{self, error::TrySendError};

use super::super::{bad, error, export, follow, App};

/// How often a feed sends the summary.
pub const INTERVAL: Duration = Duration::from_secs(2);
/// Events waiting for one client at most (`QUEUE` × `INTERVAL` behind, it is dropped).
pub const QUEUE: usize = 8;

pub async fn summary(State(app): State<App>, query: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Response {
    let params = match query {
        Ok(Query(q)) => q,
        Err(e) => return error(e.status(), Some("query"), &e.body_text()),
    };
    let mut follow = false;
    match super::super::once(&params, &["follow"]) {
        Ok(given) => {
            for (_, value) in given {
                follow = match value {
                    "true" => true,
                    "false" => false,
                    _ => return bad("follow", format!("{value:?} is not one of true, false")),
                };
            }
        }
        Err((p, m)) => return bad(&p, m),
    }
    if !follow {
        return Json(body(&app)).into_response();
    }
    let Ok(permit) = Arc::clone(&app.followers).try_acquire_owned() else {
        let message = format!("{} live tails and feeds are open already; try later", follow::MAX_FOLLOWERS);
        return error(StatusCode::SERVICE_UNAVAILABLE, Some("follow"), &message);
    };
    let (tx, rx) = mpsc::channel::<Bytes>(QUEUE);
    tokio::spawn(async move {
        let metrics = &app.shared.metrics;
        metrics.followers.inc();
        loop {
            let event = format!("event: summary\ndata: {}\n\n", body(&app));
            match tx.try_send(Bytes::from(event)) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    metrics.follow_dropped.inc();
                    break;
                }
                Err(TrySendError::Closed(_)) => break,
            }
            tokio::select! {
                () = tokio::time::sleep(INTERVAL) => {}
                () = tx.closed() => break,
            }
        }
        metrics.followers.dec();
        drop(permit);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    (headers, Body::from_stream(stream)).into_response()
}

/// `/v1/status` as `status`, `/v1/peers` as `peers`, and the node's clock.
fn body(app: &App) -> Value {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let now = u64::try_from(now).unwrap_or(u64::MAX);
    let peers = app.mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
    json!({
        "time": export::rfc3339_ns(now),
        "time_ns": now,
        "status": super::super::status_body(app),
        "peers": peers,
    })
}
