//! The web dashboard at `/` (`docs/dashboard.md`): a few static files compiled into the
//! binary — one HTML page, plain JavaScript modules, a stylesheet and the vendored uPlot
//! (MIT, its licence served beside it) — that read the same JSON API users read, with two
//! endpoints of their own: `/v1/summary` ([`summary`]: the node and the mesh, once or as
//! server-sent events) and `/v1/coverage` ([`coverage`]: which site heard how much of
//! each device).
//!
//! The files hold no data, so they are served without the API's token ([`is_page`]); the
//! page asks for the token and sends it as `Authorization: Bearer` on every request, live
//! streams included (read with `fetch`, since `EventSource` cannot send a header).
//! Every file goes out with a content security policy that lets the page run only its
//! own scripts and talk only to this node, and with `Cache-Control: no-cache` and an
//! `ETag`, so a browser revalidates (a `304` without the body) and never keeps the files
//! of an older build.

pub mod coverage;
pub mod summary;

use std::sync::OnceLock;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::App;

/// One file the dashboard serves.
#[derive(Debug)]
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($path:literal, $file:literal, $type:expr) => {
        Asset { path: $path, content_type: $type, body: include_bytes!(concat!("static/", $file)) }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file, by the path it is served at.
const ASSETS: &[Asset] = &[
    asset!("/", "index.html", "text/html; charset=utf-8"),
    asset!("/ui/style.css", "style.css", "text/css; charset=utf-8"),
    asset!("/ui/icon.svg", "icon.svg", "image/svg+xml"),
    asset!("/ui/app.js", "app.js", JS),
    asset!("/ui/api.js", "api.js", JS),
    asset!("/ui/format.js", "format.js", JS),
    asset!("/ui/mesh.js", "mesh.js", JS),
    asset!("/ui/devices.js", "devices.js", JS),
    asset!("/ui/device.js", "device.js", JS),
    asset!("/ui/site.js", "site.js", JS),
    asset!("/ui/uPlot.iife.min.js", "uPlot.iife.min.js", JS),
    asset!("/ui/uPlot.min.css", "uPlot.min.css", "text/css; charset=utf-8"),
    asset!("/ui/uPlot-LICENSE.txt", "uPlot-LICENSE.txt", "text/plain; charset=utf-8"),
];

/// The page runs only the node's own scripts and styles (no inline script, no `eval`),
/// fetches only from this node, and may not be framed.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is one of the dashboard's files: served without the token (they hold
/// no data; everything the page shows comes from the API, which wants it).
pub fn is_page(path: &str) -> bool {
    ASSETS.iter().any(|a| a.path == path)
}

/// The routes of the dashboard's files and of its two endpoints.
pub fn routes() -> Router<App> {
    let mut router = Router::new()
        .route("/v1/summary", get(summary::summary))
        .route("/v1/coverage", get(coverage::coverage));
    for (i, asset) in ASSETS.iter().enumerate() {
        router = router.route(asset.path, get(move |headers: HeaderMap| async move { serve(i, asset, &headers) }));
    }
    router
}

/// The entity tag of each file: its BLAKE3 hash, computed once.
fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    let tag = |a: &Asset| format!("\"{}\"", &blake3::hash(a.body).to_hex()[..32]);
    let tags = TAGS.get_or_init(|| ASSETS.iter().map(tag).collect());
    &tags[i]
}

/// Whether an `If-None-Match` header names `tag` (or is `*`).
fn not_modified(headers: &HeaderMap, tag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == tag || t == "*")
}

fn serve(i: usize, asset: &Asset, request: &HeaderMap) -> Response {
    let tag = etag(i);
    let mut response = if not_modified(request, tag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-cache"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if let Ok(v) = HeaderValue::from_str(tag) {
        headers.insert(header::ETAG, v);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_a_type_and_a_tag_and_revalidates() {
        for (i, a) in ASSETS.iter().enumerate() {
            assert!(!a.body.is_empty() && !a.content_type.is_empty(), "{}", a.path);
            assert!(is_page(a.path));
            let tag = etag(i);
            let mut h = HeaderMap::new();
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"other\", W/{tag}")).expect("header"));
            assert!(not_modified(&h, tag));
            h.insert(header::IF_NONE_MATCH, HeaderValue::from_static("\"other\""));
            assert!(!not_modified(&h, tag));
            assert!(!not_modified(&HeaderMap::new(), tag));
        }
        for path in ["/ui/", "/ui/nope.js", "/index.html", "/v1/status", "/ui/app.js/"] {
            assert!(!is_page(path), "{path}");
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let html = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        // Every <script> names its file, and no element carries a style or handler attribute.
        let own = html.matches("<script src=\"/ui/").count() + html.matches("<script type=\"module\" src=\"/ui/").count();
        assert_eq!(html.matches("<script").count(), own);
        assert!(!html.contains("<style") && !html.contains(" style=") && !html.contains(" onclick="));
    }
}
