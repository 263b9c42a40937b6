//! Bearer-token authentication of the HTTP API (`docs/api.md`, "Authentication").
//!
//! The token comes from a file (`--http-token-file`) holding one token; the same parser
//! reads it for the node and for the CLI client (`--token-file`, `$TELEMESH_HTTP_TOKEN`).
//! A request proves it knows the token with `Authorization: Bearer <token>`; the
//! comparison is of BLAKE3 hashes with a constant-time equality, so its time does not
//! depend on how much of a guess is right. The token is never logged or served. The
//! dashboard's static files alone are served without it (`docs/dashboard.md`).

use std::path::Path;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

/// Largest token file read (a token must fit an HTTP header line comfortably).
pub const MAX_TOKEN_FILE: u64 = 4096;

/// A bearer token. Its `Debug` does not show it.
#[derive(Clone)]
pub struct Token {
    secret: String,
    hash: blake3::Hash,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Token) -> bool {
        // blake3::Hash compares in constant time.
        self.hash == other.hash
    }
}

impl Eq for Token {}

/// Why a token (file) was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is larger than {MAX_TOKEN_FILE} bytes; it must hold one token")]
    TooLarge { path: String },
    #[error("{0} is empty; it must hold one token")]
    Empty(String),
    #[error("{0} must hold one token of visible ASCII characters (no spaces inside, no other lines)")]
    NotOneToken(String),
}

impl Token {
    /// A token from text: surrounding whitespace (a final newline) is trimmed; what is
    /// left must be one word of visible ASCII. `what` names the source in errors.
    pub fn parse(text: &str, what: &str) -> Result<Token, TokenError> {
        let secret = text.trim();
        if secret.is_empty() {
            return Err(TokenError::Empty(what.to_owned()));
        }
        if !secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotOneToken(what.to_owned()));
        }
        Ok(Token { secret: secret.to_owned(), hash: blake3::hash(secret.as_bytes()) })
    }

    /// Reads a token file. A file that group or others may read is accepted with a
    /// warning (the node's own keys are written 0600; a mounted secret is often 0644).
    pub fn load(path: &Path) -> Result<Token, TokenError> {
        use std::io::Read;
        let shown = path.display().to_string();
        let read_err = |source| TokenError::Read { path: shown.clone(), source };
        let file = std::fs::File::open(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = file.metadata().map_err(read_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %shown, mode = format!("{:o}", mode & 0o777), "token file is readable by group or others; chmod 600 it");
            }
        }
        let mut text = String::new();
        let read = file.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text);
        match read {
            Ok(n) if n as u64 > MAX_TOKEN_FILE => Err(TokenError::TooLarge { path: shown }),
            Ok(_) => Token::parse(&text, &shown),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(TokenError::NotOneToken(shown)),
            Err(e) => Err(read_err(e)),
        }
    }

    /// Whether `presented` (the credentials of an `Authorization: Bearer` header) is this token.
    pub fn matches(&self, presented: &[u8]) -> bool {
        blake3::hash(presented) == self.hash
    }

    /// The value of an `Authorization` header carrying this token (for clients).
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.secret)
    }
}

/// Who may use the API: set once at start.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// `None`: every request is served (loopback, or `--http-insecure`).
    pub token: Option<Token>,
    /// `/metrics` is served without the token.
    pub metrics_open: bool,
}

impl Policy {
    /// What `/v1/status` says about it (never the token).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "auth": if self.token.is_some() { "token" } else { "none" },
            "metrics_open": self.metrics_open,
        })
    }
}

/// What a request's `Authorization` header amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// No `Authorization` header, or not of the `Bearer` scheme.
    Missing,
    /// A bearer token that is not this node's.
    Wrong,
}

/// The one decision: may a request to `path` with this `Authorization` header be served?
pub fn check(policy: &Policy, path: &str, authorization: Option<&HeaderValue>) -> Verdict {
    let Some(token) = &policy.token else { return Verdict::Allowed };
    if policy.metrics_open && path == "/metrics" {
        return Verdict::Allowed;
    }
    // The dashboard's static files hold no data; the page asks for the token and sends it
    // with every API request it makes.
    if super::dashboard::is_page(path) {
        return Verdict::Allowed;
    }
    let Some(value) = authorization else { return Verdict::Missing };
    let bytes = value.as_bytes();
    // The scheme is case-insensitive (RFC 9110 §11.1); one space, then the token.
    let credentials = match bytes.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => &bytes[7..],
        _ => return Verdict::Missing,
    };
    if token.matches(credentials.trim_ascii()) {
        Verdict::Allowed
    } else {
        Verdict::Wrong
    }
}

/// Middleware: answers 401 with a JSON error and `WWW-Authenticate: Bearer` unless the
/// request may be served.
pub async fn require(State(policy): State<Policy>, request: Request, next: Next) -> Response {
    let verdict = check(&policy, request.uri().path(), request.headers().get(header::AUTHORIZATION));
    let (message, challenge) = match verdict {
        Verdict::Allowed => return next.run(request).await,
        Verdict::Missing => (
            "this node's API needs a bearer token: send Authorization: Bearer <token>",
            HeaderValue::from_static("Bearer realm=\"telemesh\""),
        ),
        Verdict::Wrong => (
            "the bearer token is not this node's",
            HeaderValue::from_static("Bearer realm=\"telemesh\", error=\"invalid_token\""),
        ),
    };
    let mut response = super::error(StatusCode::UNAUTHORIZED, None, message);
    response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(metrics_open: bool) -> Policy {
        Policy { token: Some(Token::parse("s3cret-token\n", "test").expect("valid")), metrics_open }
    }

    #[test]
    fn parse_trims_and_refuses_empty_or_several_words() {
        let t = Token::parse("  abc.DEF-123_~  \n", "f").expect("valid");
        assert_eq!(t.header_value(), "Bearer abc.DEF-123_~");
        assert!(matches!(Token::parse(" \n\t", "f"), Err(TokenError::Empty(_))));
        assert!(matches!(Token::parse("", "f"), Err(TokenError::Empty(_))));
        assert!(matches!(Token::parse("two words", "f"), Err(TokenError::NotOneToken(_))));
        assert!(matches!(Token::parse("line1\nline2", "f"), Err(TokenError::NotOneToken(_))));
        assert!(matches!(Token::parse("tökén", "f"), Err(TokenError::NotOneToken(_))));
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
    }

    #[test]
    fn load_refuses_an_empty_file_and_a_huge_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").expect("write");
        assert!(matches!(Token::load(&empty), Err(TokenError::Empty(_))));
        let huge = dir.path().join("huge");
        std::fs::write(&huge, "x".repeat(5000)).expect("write");
        assert!(matches!(Token::load(&huge), Err(TokenError::TooLarge { .. })));
        let binary = dir.path().join("binary");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).expect("write");
        assert!(matches!(Token::load(&binary), Err(TokenError::NotOneToken(_))));
        assert!(matches!(Token::load(&dir.path().join("missing")), Err(TokenError::Read { .. })));
        let good = dir.path().join("good");
        std::fs::write(&good, "tok\n").expect("write");
        assert_eq!(Token::load(&good).expect("valid"), Token::parse("tok", "x").expect("valid"));
    }

    #[test]
    fn check_is_total_over_headers() {
        let v = |p: &Policy, path: &str, h: Option<&str>| {
            let value = h.map(|s| HeaderValue::from_str(s).expect("header"));
            check(p, path, value.as_ref())
        };
        let p = policy(false);
        assert_eq!(v(&p, "/v1/status", None), Verdict::Missing);
        assert_eq!(v(&p, "/v1/status", Some("Basic czNjcmV0LXRva2Vu")), Verdict::Missing);
        assert_eq!(v(&p, "/v1/status", Some("Bearer")), Verdict::Missing);
        assert_eq!(v(&p, "/v1/status", Some("Bearer ")), Verdict::Wrong);
        assert_eq!(v(&p, "/v1/status", Some("Bearer s3cret-tokeN")), Verdict::Wrong);
        assert_eq!(v(&p, "/v1/status", Some("Bearer s3cret-token-and-more")), Verdict::Wrong);
        assert_eq!(v(&p, "/v1/status", Some("Bearer s3cret-token")), Verdict::Allowed);
        assert_eq!(v(&p, "/v1/status", Some("bearer s3cret-token")), Verdict::Allowed);
        assert_eq!(v(&p, "/metrics", None), Verdict::Missing);
        let open = policy(true);
        assert_eq!(v(&open, "/metrics", None), Verdict::Allowed);
        assert_eq!(v(&open, "/metrics/", None), Verdict::Missing);
        assert_eq!(v(&open, "/v1/status", None), Verdict::Missing);
        assert_eq!(v(&Policy::default(), "/v1/status", None), Verdict::Allowed);
        // The dashboard's files, and only those, without it; its data endpoints want it.
        for page in ["/", "/ui/app.js", "/ui/uPlot.iife.min.js"] {
            assert_eq!(v(&p, page, None), Verdict::Allowed, "{page}");
        }
        for data in ["/ui/", "/ui/secret", "/v1/summary", "/v1/coverage", "//"] {
            assert_eq!(v(&p, data, None), Verdict::Missing, "{data}");
        }
    }
}
