//! Counts and times every HTTP request the router answers (`telemesh_http_requests_total`,
//! `telemesh_http_request_duration_seconds`), labelled by the route template it matched
//! (`/v1/streams/{dialect}/{device}/records`, never the path itself: the labels stay a
//! bounded set), its method and its status code. It is the router's outermost layer, so
//! refusals by the limits and the token check count too.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::metrics::Http;

pub async fn count(State(http): State<Http>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    http.observe(route.as_ref().map(MatchedPath::as_str), method.as_str(), response.status().as_u16(), started.elapsed());
    response
}
