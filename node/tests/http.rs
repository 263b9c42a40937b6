//! The HTTP API as a client on the network sees it, byte for byte: the bearer token,
//! `/metrics` open by option, the header-read timeout, the connection cap, and a JSON
//! body on every error (`docs/api.md`, "Authentication" and "Errors and limits").

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use telemesh_node::api::auth::Token;
use telemesh_node::api::server::Limits;
use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;

const TOKEN: &str = "tm-test-7f3a9c1e5b";

fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("http.token");
    std::fs::write(&path, format!("{TOKEN}\n")).expect("write token");
    path
}

fn config(dir: &Path) -> Config {
    common::config(&dir.join("data"), TimestampUnit::Ms)
}

fn with_token(dir: &Path, metrics_open: bool) -> Config {
    let token = Token::load(&token_file(dir)).expect("token");
    Config { http_token: Some(token), metrics_open, ..config(dir) }
}

/// An answer as it came off the socket.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn json(&self) -> serde_json::Value {
        assert_eq!(self.header("content-type"), Some("application/json"), "{self:?}");
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// Reads one answer from `s`: the head, then `Content-Length` bytes of body.
fn read_answer(s: &mut TcpStream) -> Answer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).expect("read answer");
        assert!(n > 0, "connection closed before a complete answer: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).expect("status line");
    let mut answer = Answer { status, head, body: buf[head_end..].to_vec() };
    let length: usize = answer.header("content-length").and_then(|l| l.parse().ok()).expect("content-length");
    while answer.body.len() < length {
        let n = s.read(&mut chunk).expect("read body");
        assert!(n > 0, "connection closed inside the body");
        answer.body.extend_from_slice(&chunk[..n]);
    }
    answer
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s
}

/// Sends `request` as it is on a new connection and reads the answer.
fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut s = connect(addr);
    s.write_all(request).expect("write");
    read_answer(&mut s)
}

fn get(addr: SocketAddr, path: &str, authorization: Option<&str>) -> Answer {
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: node\r\n{auth}Connection: close\r\n\r\n").as_bytes())
}

/// Waits for the peer to close `s`; returns how long that took. Fails if it sends a byte.
fn closed_within(s: &mut TcpStream, bound: Duration) -> Duration {
    let start = Instant::now();
    s.set_read_timeout(Some(bound)).expect("timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Ok(_) => panic!("the server sent bytes instead of closing"),
        Err(e) => panic!("still open after {:?}: {e}", start.elapsed()),
    }
    start.elapsed()
}

#[test]
fn without_the_token_401_with_a_wrong_one_401_with_the_right_one_200() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(with_token(dir.path(), false)).expect("node starts");

    for (authorization, says) in [
        (None, "needs a bearer token"),
        (Some("Basic dG06dGVzdA=="), "needs a bearer token"),
        (Some("Bearer tm-test-7f3a9c1e5"), "not this node's"),
        (Some("Bearer tm-test-7f3a9c1e5bX"), "not this node's"),
    ] {
        for path in ["/v1/status", "/metrics", "/v1/streams", "/no/such/path"] {
            let a = get(node.http, path, authorization);
            assert_eq!(a.status, 401, "{path} {authorization:?}: {a:?}");
            assert!(a.header("www-authenticate").is_some_and(|c| c.starts_with("Bearer")), "{a:?}");
            let e = a.json();
            assert!(e["error"].as_str().is_some_and(|m| m.contains(says)), "{e}");
            assert!(e["parameter"].is_null(), "{e}");
        }
    }

    let bearer = format!("Bearer {TOKEN}");
    let a = get(node.http, "/v1/status", Some(&bearer));
    assert_eq!(a.status, 200, "{a:?}");
    let status = a.json();
    assert_eq!(status["http"], serde_json::json!({ "auth": "token", "metrics_open": false }));
    assert!(!String::from_utf8_lossy(&a.body).contains(TOKEN), "the token is never served");
    assert_eq!(get(node.http, "/metrics", Some(&bearer)).status, 200);
    assert_eq!(get(node.http, "/v1/status", Some(&format!("bearer {TOKEN}"))).status, 200, "the scheme is case-insensitive");
    // Unknown paths are 404 only for those who hold the token.
    assert_eq!(get(node.http, "/no/such/path", Some(&bearer)).status, 404);
    node.stop().expect("stops");
}

#[test]
fn metrics_open_serves_metrics_alone_without_the_token() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(with_token(dir.path(), true)).expect("node starts");
    let a = get(node.http, "/metrics", None);
    assert_eq!(a.status, 200, "{a:?}");
    assert!(String::from_utf8_lossy(&a.body).contains("telemesh_packets_total"));
    assert_eq!(get(node.http, "/v1/status", None).status, 401);
    assert_eq!(get(node.http, "/v1/streams", None).status, 401);
    let status = get(node.http, "/v1/status", Some(&format!("Bearer {TOKEN}"))).json();
    assert_eq!(status["http"], serde_json::json!({ "auth": "token", "metrics_open": true }));
    node.stop().expect("stops");

    // Without a token everything is open, and /v1/status says so.
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(config(dir.path())).expect("node starts");
    assert_eq!(get(node.http, "/metrics", None).status, 200);
    let status = get(node.http, "/v1/status", None).json();
    assert_eq!(status["http"], serde_json::json!({ "auth": "none", "metrics_open": false }));
}

#[test]
fn a_connection_that_never_finishes_its_request_head_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let limits = Limits { header_timeout: Duration::from_secs(1), ..Limits::default() };
    let node = Node::start(Config { http_limits: limits, ..config(dir.path()) }).expect("node starts");

    // Half a head, never finished.
    let mut s = connect(node.http);
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n").expect("write");
    let took = closed_within(&mut s, Duration::from_secs(15));
    assert!(took >= Duration::from_millis(800), "closed after {took:?}, before the timeout");

    // Nothing at all.
    let mut s = connect(node.http);
    let took = closed_within(&mut s, Duration::from_secs(15));
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");

    // A keep-alive connection, idle after its answer.
    let mut s = connect(node.http);
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n").expect("write");
    assert_eq!(read_answer(&mut s).status, 200);
    let took = closed_within(&mut s, Duration::from_secs(15));
    assert!(took >= Duration::from_millis(800), "closed after {took:?}");
}

#[test]
fn connections_beyond_the_cap_wait_until_one_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A header timeout far longer than the test: only closing one frees a slot.
    let limits = Limits { max_connections: 3, header_timeout: Duration::from_secs(60), ..Limits::default() };
    let node = Node::start(Config { http_limits: limits, ..config(dir.path()) }).expect("node starts");

    // Three keep-alive connections, each served once (so each certainly holds a slot).
    let mut held: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = connect(node.http);
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\n\r\n").expect("write");
            assert_eq!(read_answer(&mut s).status, 200);
            s
        })
        .collect();

    // Two more: the kernel completes their handshakes, the server does not answer them.
    let mut waiting: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(node.http);
            s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: node\r\nConnection: close\r\n\r\n").expect("write");
            s
        })
        .collect();
    for s in &mut waiting {
        s.set_read_timeout(Some(Duration::from_millis(700))).expect("timeout");
        let mut byte = [0u8; 1];
        match s.read(&mut byte) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            other => panic!("a connection beyond the cap was served or closed: {other:?}"),
        }
    }

    // One held connection closes: exactly one waiting one is served, in full.
    drop(held.pop());
    let mut first = waiting.remove(0);
    first.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(read_answer(&mut first).status, 200);
    // The second still waits (the first's slot is free again only once it closes, which
    // `Connection: close` makes happen right after its answer: then it is served too).
    let mut second = waiting.remove(0);
    second.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    assert_eq!(read_answer(&mut second).status, 200);
    drop(held);
}

#[test]
fn every_error_is_a_json_body_with_the_right_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(config(dir.path())).expect("node starts");
    let h = node.http;
    let check = |request: &[u8], status: u16, parameter: serde_json::Value, says: &str| {
        let a = raw(h, request);
        assert_eq!(a.status, status, "{a:?}");
        let e = a.json();
        assert!(e["error"].as_str().is_some_and(|m| m.contains(says)), "{status}: {e}");
        assert_eq!(e["parameter"], parameter, "{status}: {e}");
        a
    };
    let null = serde_json::Value::Null;

    check(b"GET /nope HTTP/1.1\r\nHost: n\r\nConnection: close\r\n\r\n", 404, null.clone(), "no such endpoint");
    let a = check(b"POST /v1/status HTTP/1.1\r\nHost: n\r\nContent-Length: 0\r\n\r\n", 405, null.clone(), "POST");
    assert_eq!(a.header("allow"), Some("GET,HEAD"), "{a:?}");
    check(b"DELETE /metrics HTTP/1.1\r\nHost: n\r\n\r\n", 405, null.clone(), "DELETE");

    let long = format!("GET /v1/windows?from={} HTTP/1.1\r\nHost: n\r\n\r\n", "1".repeat(9000));
    check(long.as_bytes(), 414, null.clone(), "request target");
    let big = format!("GET /v1/status HTTP/1.1\r\nHost: n\r\nCookie: {}\r\n\r\n", "c".repeat(20_000));
    check(big.as_bytes(), 431, null.clone(), "header fields");
    let many: String = (0..80).map(|i| format!("X-H{i}: v\r\n")).collect();
    check(format!("GET /v1/status HTTP/1.1\r\nHost: n\r\n{many}\r\n").as_bytes(), 431, null.clone(), "header fields");
    check(b"POST /v1/status HTTP/1.1\r\nHost: n\r\nContent-Length: 100000\r\n\r\n", 413, null.clone(), "body");

    // Bad UTF-8 and bad percent-encoding, in the path and in the query.
    let path = serde_json::json!("path");
    check(b"GET /v1/streams/iotstream/%FF/records HTTP/1.1\r\nHost: n\r\n\r\n", 400, path.clone(), "not UTF-8");
    check(b"GET /v1/streams/iotstream/%C3/records HTTP/1.1\r\nHost: n\r\n\r\n", 400, path.clone(), "not UTF-8");
    check(b"GET /v1/streams/iotstream/%G1/records HTTP/1.1\r\nHost: n\r\n\r\n", 400, path.clone(), "'%'");
    check(b"GET /v1/windows?from=%FF HTTP/1.1\r\nHost: n\r\n\r\n", 400, serde_json::json!("from"), "not UTF-8");
    check(b"GET /v1/windows?fr%E9=1 HTTP/1.1\r\nHost: n\r\n\r\n", 400, serde_json::json!("query"), "not UTF-8");
    check(b"GET /v1/windows?from=1%2 HTTP/1.1\r\nHost: n\r\n\r\n", 400, serde_json::json!("from"), "'%'");
    // What the handlers refuse stays as it was.
    check(b"GET /v1/streams/iotstream/x/records HTTP/1.1\r\nHost: n\r\n\r\n", 400, serde_json::json!("device"), "device id");

    // What hyper refuses before any request exists (raw bytes that are not ASCII in the
    // target, a head over 64 KiB, no HTTP at all) is JSON too on a connection's first request.
    check(b"GET /v1/status/\xff\xfe HTTP/1.1\r\nHost: n\r\n\r\n", 400, null.clone(), "target must be ASCII");
    // (Raw UTF-8 in the target passes hyper and reaches the router.)
    check(b"GET /v1/st\xc3\xa9 HTTP/1.1\r\nHost: n\r\n\r\n", 404, null.clone(), "no such endpoint");
    check(b"HELLO\r\n\r\n", 400, null.clone(), "not a valid HTTP/1.1 request");
    let huge = format!("GET /v1/status HTTP/1.1\r\nHost: n\r\nCookie: {}\r\n\r\n", "c".repeat(200_000));
    check(huge.as_bytes(), 431, null.clone(), "request head is too large");
    let lots: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    check(format!("GET /v1/status HTTP/1.1\r\nHost: n\r\n{lots}\r\n").as_bytes(), 431, null, "too large");
    // On a later request of a keep-alive connection hyper's answer goes out as hyper
    // writes it, with an empty body (docs/api.md, "Errors and limits").
    let mut s = connect(h);
    s.write_all(b"GET /v1/status HTTP/1.1\r\nHost: n\r\n\r\n").expect("write");
    assert_eq!(read_answer(&mut s).status, 200);
    s.write_all(b"GET /\xff HTTP/1.1\r\nHost: n\r\n\r\n").expect("write");
    let a = read_answer(&mut s);
    assert_eq!((a.status, a.body.len()), (400, 0), "{a:?}");
}

fn run(args: &[&str], env_token: Option<&str>) -> (i32, String, String) {
    let mut cmd = Command::new(common::BIN);
    cmd.args(args).env_remove("TELEMESH_HTTP_TOKEN").env_remove("TELEMESH_NODE");
    if let Some(t) = env_token {
        cmd.env("TELEMESH_HTTP_TOKEN", t);
    }
    let out = cmd.output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_cli_sends_the_token_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(with_token(dir.path(), false)).expect("node starts");
    let url = node.url();
    let file = dir.path().join("http.token");
    let file = file.to_str().expect("utf-8");

    let (code, out, err) = run(&["status", "--node", &url, "--token-file", file], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("http auth  token  metrics open false"), "{out}");
    let (code, out, err) = run(&["status", "--node", &url], Some(TOKEN));
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("node "), "{out}");
    let (code, out, err) = run(&["query", "iotstream", "1", "--node", &url, "--token-file", file], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim_end().ends_with("0 record(s)"), "{out}");

    let (code, out, err) = run(&["status", "--node", &url], None);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("telemesh: node answered 401: this node's API needs a bearer token"), "{err}");
    assert!(err.contains("give --token-file FILE"), "{err}");
    let (code, _, err) = run(&["query", "iotstream", "1", "--node", &url], Some("wrong"));
    assert_eq!(code, 1);
    assert!(err.contains("401: the bearer token is not this node's (check --token-file"), "{err}");
    let (code, _, err) = run(&["status", "--node", &url, "--token-file", "/nonexistent/token"], None);
    assert_eq!(code, 1);
    assert!(err.starts_with("telemesh: --token-file: cannot read /nonexistent/token"), "{err}");
}
