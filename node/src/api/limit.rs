//! Limits on a request, checked before authentication and routing, each answered with
//! the API's JSON error (`docs/api.md`, "Errors and limits").
//!
//! hyper reads the request head first, within its own larger bounds
//! ([`HYPER_MAX_BUF`], [`HYPER_MAX_HEADERS`]); what passes those but exceeds these
//! limits gets a JSON answer here. Beyond hyper's bounds hyper answers by itself, with
//! an empty body (`docs/api.md` says where).

use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Longest request target (path and query) served; longer answers 414.
pub const MAX_URI: usize = 8 * 1024;
/// Largest total of header names and values (plus 4 bytes a line); larger answers 431.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields served; more answers 431.
pub const MAX_HEADERS: usize = 64;
/// Largest request body (by `Content-Length`); larger answers 413. No route reads a body
/// yet; this bounds what hyper would read and throw away.
pub const MAX_BODY: u64 = 64 * 1024;

/// hyper's read buffer: a request head larger than this is answered by hyper (431, empty).
pub const HYPER_MAX_BUF: usize = 64 * 1024;
/// Header fields hyper parses: more are answered by hyper (431, empty).
pub const HYPER_MAX_HEADERS: usize = 128;

/// Middleware: 414, 431, 413 and 400 (bad percent-encoding or UTF-8) as JSON.
pub async fn check(request: Request, next: Next) -> Response {
    match refuse(&request) {
        Some(response) => response,
        None => next.run(request).await,
    }
}

fn refuse(request: &Request) -> Option<Response> {
    let uri = request.uri();
    let target_len = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > MAX_URI {
        return Some(super::error(
            StatusCode::URI_TOO_LONG,
            None,
            &format!("the request target is {target_len} bytes; at most {MAX_URI} are served"),
        ));
    }
    let headers = request.headers();
    let header_bytes: usize = headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if headers.len() > MAX_HEADERS || header_bytes > MAX_HEADER_BYTES {
        return Some(super::error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            None,
            &format!(
                "{} header fields of {header_bytes} bytes; at most {MAX_HEADERS} fields of {MAX_HEADER_BYTES} bytes are served",
                headers.len()
            ),
        ));
    }
    if let Some(length) = headers.get(header::CONTENT_LENGTH) {
        match length.to_str().ok().and_then(|s| s.parse::<u64>().ok()) {
            Some(n) if n > MAX_BODY => {
                return Some(super::error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    None,
                    &format!("the body is {n} bytes; at most {MAX_BODY} are read"),
                ))
            }
            _ => {}
        }
    }
    if let Err(e) = decodes(uri.path()) {
        return Some(super::bad("path", format!("the path {e}")));
    }
    for pair in uri.query().unwrap_or("").split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let shown = match decodes(name) {
            Ok(n) => n,
            Err(e) => return Some(super::bad("query", format!("a parameter name {e}"))),
        };
        if let Err(e) = decodes(value) {
            return Some(super::bad(&shown, format!("the value {e}")));
        }
    }
    None
}

/// Percent-decodes `s` strictly: every `%` followed by two hex digits, the result UTF-8.
/// Errors finish the sentence "the path …".
pub fn decodes(s: &str) -> Result<String, &'static str> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
            match (hex(bytes.get(i + 1)), hex(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                _ => return Err("has a '%' not followed by two hex digits"),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_percent_decoding() {
        assert_eq!(decodes("/v1/a%20b").as_deref(), Ok("/v1/a b"));
        assert_eq!(decodes("%C3%A9t%c3%a9").as_deref(), Ok("été"));
        assert_eq!(decodes("").as_deref(), Ok(""));
        assert!(decodes("%").is_err());
        assert!(decodes("%4").is_err());
        assert!(decodes("%zz").is_err());
        assert!(decodes("%FF").is_err());
        assert!(decodes("%C3").is_err());
        assert!(decodes("%%41").is_err());
    }
}
