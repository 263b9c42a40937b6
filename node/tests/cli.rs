//! The `telemesh` binary as a person runs it: bad configuration, a port in use, SIGTERM
//! with records still in memory, `query` and `status` output.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{free_port, Daemon};

use telemesh_proto::wire::iotstream::{MsgType, Repr};

const BIN: &str = common::BIN;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN).args(args).output().expect("runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configuration_is_one_line_and_exit_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("utf-8 path");
    for (args, says) in [
        (vec!["node", "--data", data, "--http", "nowhere"], "http:"),
        (vec!["node", "--data", data, "--flush-interval", "soon"], "flush_interval:"),
        (
            vec!["node", "--data", data, "--iotstream", "off", "--tinytelemetry", "off", "--secure", "off"],
            "at least one ingest listener",
        ),
        (vec!["node", "--config", "/nonexistent/telemesh.toml"], "cannot read config file"),
        (vec!["node", "--data", data, "--listen", "localhost:4001"], "listen:"),
        (vec!["node", "--data", data, "--bootstrap", "/ip4/10.0.0.1/tcp/4001"], "bootstrap:"),
        (vec!["node", "--data", data, "--mesh", "my mesh"], "mesh:"),
        (vec!["node", "--data", data, "--external-address", "127.0.0.1:4001"], "external_addresses:"),
        (vec!["node", "--data", data, "--join", "tmjoin1.not-a-token"], "join: invalid join token"),
        (vec!["node", "--data", data, "--join", "hello"], "telemesh mesh invite"),
        (vec!["node", "--data", data, "--http", "0.0.0.0:8080"], "http: 0.0.0.0:8080 is not a loopback address"),
        (vec!["node", "--data", data, "--http-token-file", "/nonexistent/token"], "http_token_file: cannot read"),
    ] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line, got {err:?}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let toml = dir.path().join("bad.toml");
    std::fs::write(&toml, "colour = \"red\"\n").expect("write");
    let (code, _, err) = run(&["node", "--config", toml.to_str().expect("utf-8")]);
    assert_eq!(code, 64);
    assert!(err.contains("bad.toml: line 1, column 1: unknown field `colour`"), "{err}");
    // A value refused after parsing names its line too, unless a flag gave it.
    std::fs::write(&toml, "mesh = \"ok\"\n\nflush_interval = \"soon\"\n").expect("write");
    let (code, _, err) = run(&["node", "--data", data, "--config", toml.to_str().expect("utf-8")]);
    assert_eq!(code, 64);
    assert!(err.starts_with("telemesh: flush_interval:") && err.trim_end().ends_with("bad.toml line 3)"), "{err}");
    let (_, _, err) = run(&["node", "--data", data, "--config", toml.to_str().expect("utf-8"), "--flush-interval", "later"]);
    assert!(err.contains("\"later\"") && !err.contains("line 3"), "{err}");
    // A command line clap refuses is a usage error too; --help is not.
    for args in [vec!["node", "--colour", "red"], vec!["query", "iotstream"], vec!["query", "mqtt", "1"], vec!["query", "iotstream", "1", "--limit", "0"], vec!["query", "iotstream", "x"], vec!["query", "iotstream", "9-1"]] {
        let (code, _, err) = run(&args);
        assert_eq!(code, 64, "{args:?}: {err}");
    }
    assert_eq!(run(&["query", "--help"]).0, 0);
}

#[test]
fn an_overlay_tcp_port_in_use_is_one_line_and_exit_1() {
    // Another node's listener: libp2p sets SO_REUSEPORT, which would let a second node
    // share the port instead of failing.
    let taken = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    taken.set_reuse_port(true).expect("reuseport");
    taken.bind(&"127.0.0.1:0".parse::<SocketAddr>().expect("addr").into()).expect("bind");
    taken.listen(8).expect("listen");
    let port = taken.local_addr().expect("addr").as_socket().expect("inet").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let http = format!("127.0.0.1:{}", free_port());
    let (iot, tiny) = (format!("127.0.0.1:{}", free_port()), format!("127.0.0.1:{}", free_port()));
    let data = dir.path().to_str().expect("utf-8");
    let args = ["node", "--data", data, "--listen", &listen, "--http", &http, "--iotstream", &iot, "--tinytelemetry", &tiny, "--secure", "off"];
    let (code, _, err) = run(&args);
    assert_eq!(code, 1, "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(last.contains(&format!("cannot listen on {listen}")) && last.contains("in use"), "{err}");
}

#[test]
fn node_without_a_scheme_and_a_server_that_is_not_a_node() {
    // `--node host:port` means http://host:port.
    let port = free_port();
    let (code, _, err) = run(&["status", "--node", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 1);
    assert!(err.starts_with(&format!("telemesh: cannot reach the node at http://127.0.0.1:{port}")), "{err}");
    let (code, _, err) = run(&["status", "--node", "https://127.0.0.1:1"]);
    assert_eq!(code, 1);
    assert!(err.contains("https:// is not supported"), "{err}");
    // Another web server where the node was expected: one line, not its HTML page.
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let at = server.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in server.incoming().take(1) {
            let mut stream = stream.expect("accept");
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut stream, &mut buf);
            let page = "<!DOCTYPE html>\n<html><body><h1>Not Found</h1>\n<p>nothing here</p></body></html>\n";
            let answer = format!("HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}", page.len());
            let _ = std::io::Write::write_all(&mut stream, answer.as_bytes());
        }
    });
    let (code, out, err) = run(&["query", "iotstream", "1", "--node", &at.to_string()]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains("node answered 404: not a telemesh API") && err.contains("<!DOCTYPE html>"), "{err}");
}

#[test]
fn a_port_in_use_is_one_line_and_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let taken = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let (code, _, err) = run(&[
        "node",
        "--data",
        dir.path().to_str().expect("utf-8"),
        "--iotstream",
        &format!("127.0.0.1:{port}"),
        "--tinytelemetry",
        "off",
        "--secure",
        "off",
        "--http",
        &format!("127.0.0.1:{}", free_port()),
    ]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err.lines().count(), 1, "{err:?}");
    assert!(err.contains(&format!("cannot bind iotstream (udp) on 127.0.0.1:{port}")), "{err}");
}

fn send(to: SocketAddr, n: u16) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    for seq in 0..n {
        let d = Repr::new(MsgType::Data, 77, seq, 1_700_000_000 + u32::from(seq), &[f32::from(seq)]).expect("valid");
        s.send_to(&d.to_bytes(), to).expect("send");
        std::thread::sleep(Duration::from_micros(300));
    }
}

fn received(url: &str) -> u64 {
    let body = ureq::get(&format!("{url}/v1/status")).call().expect("status").into_string().expect("body");
    serde_json::from_str::<serde_json::Value>(&body).expect("json")["totals"]["received"].as_u64().expect("count")
}

#[test]
fn sigterm_drains_records_still_in_memory_and_a_restart_serves_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A flush interval far longer than the test: only the drain on SIGTERM can save these.
    let mut node = Daemon::start(dir.path(), "60s");
    send(node.udp, 300);
    let deadline = Instant::now() + Duration::from_secs(10);
    while received(&node.url()) < 300 {
        assert!(Instant::now() < deadline, "node did not receive the datagrams");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (code, log) = node.signal("-TERM");
    assert_eq!(code, 0, "{log}");
    assert!(log.contains("telemesh node listening"), "startup line: {log}");
    assert!(log.contains("telemesh node stopped"), "{log}");

    let node = Daemon::start(dir.path(), "60s");
    let (code, table, err) = run(&["query", "iotstream", "77", "--node", &node.url(), "--limit", "1000"]);
    assert_eq!(code, 0, "{err}");
    assert!(table.starts_with("device time"), "{table}");
    assert!(table.trim_end().ends_with("300 record(s)"), "{table}");
    let (code, csv, _) = run(&["query", "iotstream", "77", "--node", &node.url(), "--format", "csv", "--limit", "2"]);
    assert_eq!(code, 0);
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.lines().nth(2).expect("row").starts_with("77,1,1700000001,"), "{csv}");
    let (code, status, _) = run(&["status", "--node", &node.url()]);
    assert_eq!(code, 0);
    assert!(status.contains("listening  iotstream") && status.contains("tinytelemetry off  secure off"), "{status}");
    let mut node = node;
    let (code, _) = node.signal("-INT");
    assert_eq!(code, 0);
}

#[test]
fn query_against_no_node_is_one_line_and_exit_1() {
    let (code, out, err) = run(&["query", "iotstream", "1", "--node", &format!("http://127.0.0.1:{}", free_port())]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.starts_with("telemesh: cannot reach the node at"), "{err}");
    assert_eq!(err.lines().count(), 1);
}

fn json(url: &str) -> serde_json::Value {
    common::get_json(url)
}

/// A closed mesh as an operator makes one: the first node creates it; a fresh node with
/// only `--bootstrap` is told to get a token; `mesh invite` prints one line that `node
/// --join` takes; `mesh members` lists both; only the owner's node removes.
#[test]
fn a_closed_mesh_from_the_command_line() {
    let (da, db, dc) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let owner = Daemon::start(da.path(), "200ms");
    let status = json(&format!("{}/v1/status", owner.url()));
    assert_eq!(status["membership"]["mode"], "closed");
    assert_eq!(status["membership"]["holds_owner_key"], true);
    let boot = loop {
        let s = json(&format!("{}/v1/status", owner.url()));
        if let Some(a) = s["listen"][0].as_str() {
            break a.to_owned();
        }
        std::thread::sleep(Duration::from_millis(100));
    };

    let http = format!("127.0.0.1:{}", common::free_port());
    let fresh = dc.path().to_str().expect("utf-8");
    let (code, _, err) = run(&[
        "node", "--data", fresh, "--bootstrap", &boot, "--http", &http, "--listen", "/ip4/127.0.0.1/tcp/0", "--iotstream",
        "127.0.0.1:0", "--tinytelemetry", "off", "--secure", "off",
    ]);
    assert_eq!(code, 64, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("--join TOKEN") && err.contains("telemesh mesh invite"), "{err}");

    let (code, token, err) = run(&["mesh", "invite", "--node", &owner.url(), "--expires", "5m"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(token.lines().count(), 1, "{token}");
    assert!(token.starts_with("tmjoin1."), "{token}");
    let joiner = Daemon::start_with(db.path(), "200ms", &["--join", token.trim()]);
    let joiner_id = json(&format!("{}/v1/status", joiner.url()))["node_id"].as_str().expect("id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    while json(&format!("{}/v1/status", joiner.url()))["membership"]["member"] != true {
        assert!(Instant::now() < deadline, "the joiner was not admitted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, out, _) = run(&["mesh", "members", "--node", &owner.url()]);
    assert_eq!(code, 0);
    assert!(out.contains("2 member(s)") && out.contains(&joiner_id) && out.contains("(this node)"), "{out}");

    let (code, _, err) = run(&["mesh", "remove", &joiner_id, "--node", &joiner.url()]);
    assert_eq!(code, 1);
    assert!(err.contains("409") && err.contains("owner key"), "{err}");
    let (code, _, err) = run(&["mesh", "invite", "--node", &owner.url(), "--expires", "forever"]);
    assert_eq!(code, 1);
    assert!(err.contains("expires"), "{err}");
    let (code, out, err) = run(&["mesh", "remove", &joiner_id, "--node", &owner.url()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with(&format!("removed {joiner_id}")), "{out}");
    let (_, out, _) = run(&["mesh", "members", "--node", &owner.url()]);
    assert!(out.contains("1 member(s)") && !out.contains(&joiner_id), "{out}");
    let (code, _, err) = run(&["mesh", "remove", &joiner_id, "--node", &owner.url()]);
    assert_eq!(code, 1);
    assert!(err.contains("404"), "{err}");
}
