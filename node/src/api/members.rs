//! `/v1/mesh/…`: the members of a closed mesh, invitations and removal (`docs/api.md`).
//!
//! Inviting and removing need the owner key, so they work only on the node that holds it;
//! elsewhere they answer 409 with the reason.

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use libp2p::{Multiaddr, PeerId};
use serde::Deserialize;
use serde_json::json;

use super::{bad, error, App};
use crate::trust::{Refusal, DEFAULT_INVITE, MAX_INVITE};

/// How long an invitation waits for the overlay's addresses, in steps of 100 ms.
const LISTEN_WAIT_STEPS: usize = 50;

fn refused(refusal: Refusal) -> Response {
    let status = match refusal {
        Refusal::NotMember => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    error(status, None, &refusal.to_string())
}

/// `GET /v1/mesh/members`
pub async fn members(State(app): State<App>) -> Response {
    let status = app.membership.status();
    Json(json!({
        "mode": status.mode,
        "owner": status.owner,
        "roster_version": status.roster_version,
        "members": app.membership.members(),
    }))
    .into_response()
}

#[derive(Debug, Deserialize)]
pub struct InviteQuery {
    /// How long the invitation is valid, e.g. `30m` (humantime).
    expires: Option<String>,
}

/// `POST /v1/mesh/invites?expires=1h`: a join token, on the node holding the owner key.
pub async fn invite(State(app): State<App>, query: Result<Query<InviteQuery>, QueryRejection>) -> Response {
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad("query", e.body_text()),
    };
    let valid = match query.expires {
        None => DEFAULT_INVITE,
        Some(text) => match humantime::parse_duration(&text) {
            Ok(d) if d >= Duration::from_secs(1) && d <= MAX_INVITE => d,
            Ok(_) => return bad("expires", "must be between 1s and 7days"),
            Err(e) => return bad("expires", format!("{text:?} is not a duration like 30m or 2h: {e}")),
        },
    };
    // The joining node dials the addresses this node advertises (known a moment after start).
    let mut bootstrap = Vec::new();
    for _ in 0..LISTEN_WAIT_STEPS {
        let listen = app.mesh.lock().unwrap_or_else(std::sync::PoisonError::into_inner).listen.clone();
        bootstrap = listen.iter().filter_map(|a| a.parse::<Multiaddr>().ok()).collect();
        if !bootstrap.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if bootstrap.is_empty() {
        return error(StatusCode::SERVICE_UNAVAILABLE, None, "the overlay has no listen address yet; try again");
    }
    match app.membership.invite(valid, bootstrap) {
        Ok(token) => Json(json!({
            "token": token.encode(),
            "expires": super::export::rfc3339(token.ticket.expires_s().saturating_mul(1_000_000_000)),
            "bootstrap": token.bootstrap.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(refusal) => refused(refusal),
    }
}

/// `DELETE /v1/mesh/members/{peer}`: removes a member, on the node holding the owner key.
pub async fn remove(State(app): State<App>, Path(peer): Path<String>) -> Response {
    let Ok(peer) = peer.parse::<PeerId>() else {
        return bad("peer", format!("{peer:?} is not a peer id like 12D3KooW…"));
    };
    if peer == app.membership.local() && app.membership.status().holds_owner_key {
        return error(StatusCode::CONFLICT, Some("peer"), "this node holds the owner key and cannot remove itself");
    }
    match app.membership.remove(peer) {
        Ok(version) => Json(json!({ "removed": peer.to_string(), "roster_version": version })).into_response(),
        Err(refusal) => refused(refusal),
    }
}
