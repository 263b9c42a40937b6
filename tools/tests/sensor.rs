//! The sensor simulator end to end: `run()` over loopback UDP, the truth log, and the CLI.

use std::net::UdpSocket;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::thread;
use std::time::{Duration, Instant};

use telemesh_proto::wire::Dialect;
use telemesh_tools::sensor::{self, Config, Kind, Simulator, TruthRecord};

const T0: u64 = 1_765_477_199_815;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_telemesh-sensor"))
}

/// Every datagram decodes with the proto codec to exactly the record's fields.
fn assert_decodes(r: &TruthRecord) {
    if let Err(e) = r.check_datagram() {
        panic!("{e}: {r:?}");
    }
}

/// Receives datagrams until none arrives for `quiet`.
fn drain(socket: &UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    socket.set_read_timeout(Some(quiet)).expect("timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    while let Ok(n) = socket.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    got
}

fn read(path: &Path) -> Vec<TruthRecord> {
    sensor::read_truth(path).expect("truth log reads back")
}

#[test]
fn dry_run_truth_log_is_reproducible_and_decodes() {
    let dir = tempfile::tempdir().expect("tempdir");
    for dialect in [Dialect::Iotstream, Dialect::Tinytelemetry] {
        let config = |name: &str| Config {
            dialect,
            devices: sensor::parse_devices("1-10,20").expect("list"),
            count: Some(60),
            reboot_after: Some(25),
            seed: Some(99),
            start_time_ms: Some(T0),
            truth: Some(dir.path().join(name)),
            dry_run: true,
            ..Config::default()
        };
        let stop = AtomicBool::new(false);
        let a = sensor::run(&config("a.ndjson"), &stop).expect("dry run a");
        let b = sensor::run(&config("b.ndjson"), &stop).expect("dry run b");
        assert_eq!((a.packets, a.datagrams_sent, a.destinations), (660, 0, 0));
        assert_eq!(a.init + a.data + a.heartbeat, a.packets);
        assert_eq!(b.packets, a.packets);
        let bytes_a = std::fs::read(dir.path().join("a.ndjson")).expect("a");
        let bytes_b = std::fs::read(dir.path().join("b.ndjson")).expect("b");
        assert_eq!(
            bytes_a, bytes_b,
            "same seed and origin: byte-identical truth logs"
        );

        let records = read(&dir.path().join("a.ndjson"));
        assert_eq!(records.len(), 660);
        let pure: Vec<_> = Simulator::new(Config {
            truth: None,
            ..config("x")
        })
        .expect("valid")
        .collect();
        for (r, p) in records.iter().zip(&pure) {
            assert_decodes(r);
            assert_eq!(
                r,
                &TruthRecord::new(p, r.sent_at_ns),
                "the log is the generator's stream"
            );
            assert_eq!(
                r.sent_at_ns,
                T0 * 1_000_000 + p.due.as_nanos() as u64,
                "dry run: scheduled time"
            );
        }
        if dialect == Dialect::Iotstream {
            let inits = records.iter().filter(|r| r.kind == Kind::Init).count();
            assert_eq!(
                inits,
                11 * 3,
                "boot + two reboots (at 25 and 50) per device"
            );
        }
    }
}

#[test]
fn loopback_receivers_get_exactly_the_truth_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rx1 = UdpSocket::bind("127.0.0.1:0").expect("bind rx1");
    let rx2 = UdpSocket::bind("127.0.0.1:0").expect("bind rx2");
    let truth = dir.path().join("truth.ndjson");
    let config = Config {
        devices: sensor::parse_devices("1001-1005").expect("list"),
        rate: Some(2000.0),
        count: Some(12),
        start_seq: Some(65530),
        seed: Some(5),
        to: vec![
            rx1.local_addr().expect("addr"),
            rx2.local_addr().expect("addr"),
        ],
        truth: Some(truth.clone()),
        ..Config::default()
    };
    let started = Instant::now();
    let summary = sensor::run(&config, &AtomicBool::new(false)).expect("run");
    // 60 packets at 2000/s: the last is due at 29.5 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(29),
        "paced, not blasted"
    );
    assert_eq!(
        (
            summary.packets,
            summary.destinations,
            summary.datagrams_sent
        ),
        (60, 2, 120)
    );
    assert_eq!(summary.send_errors, 0);
    assert!(!summary.interrupted);

    let records = read(&truth);
    assert_eq!(
        records.len(),
        60,
        "one line per packet, not per destination"
    );
    let sent: Vec<Vec<u8>> = records.iter().map(|r| r.datagram.clone()).collect();
    assert_eq!(drain(&rx1, Duration::from_millis(300)), sent);
    assert_eq!(drain(&rx2, Duration::from_millis(50)), sent);

    for r in &records {
        assert_decodes(r);
        // Real clock: the timestamp is the sending moment, Unix ms mod 2^32.
        assert_eq!(
            r.timestamp,
            (r.sent_at_ns / 1_000_000) % (1 << 32)
        );
    }
    assert!(records
        .windows(2)
        .all(|w| w[0].sent_at_ns <= w[1].sent_at_ns));
    for id in 1001..=1005 {
        let seqs: Vec<u64> = records
            .iter()
            .filter(|r| r.device == id)
            .map(|r| r.seq)
            .collect();
        assert_eq!(
            seqs,
            [0, 65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4]
        );
    }
}

#[test]
fn paced_run_with_fixed_origin_sends_the_pure_stream() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let config = Config {
        dialect: Dialect::Tinytelemetry,
        devices: vec![1, 2, 3],
        interval: Duration::from_millis(10),
        count: Some(5),
        batch: Some(6),
        seed: Some(11),
        start_time_ms: Some(T0),
        to: vec![rx.local_addr().expect("addr")],
        ..Config::default()
    };
    let summary = sensor::run(&config, &AtomicBool::new(false)).expect("run");
    assert_eq!(summary.packets, 15);
    let want: Vec<Vec<u8>> = Simulator::new(config)
        .expect("valid")
        .map(|p| p.datagram)
        .collect();
    assert_eq!(drain(&rx, Duration::from_millis(300)), want);
}

#[test]
fn stop_flag_ends_an_endless_run() {
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let config = Config {
        interval: Duration::from_millis(5),
        to: vec![rx.local_addr().expect("addr")],
        ..Config::default()
    };
    let stop = AtomicBool::new(false);
    let summary = thread::scope(|s| {
        let handle = s.spawn(|| sensor::run(&config, &stop));
        thread::sleep(Duration::from_millis(100));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        handle.join().expect("no panic")
    })
    .expect("run");
    assert!(summary.interrupted);
    assert!(summary.packets >= 5, "{summary}");
    assert_eq!(
        drain(&rx, Duration::from_millis(100)).len() as u64,
        summary.packets
    );
}

#[test]
fn cli_bad_input_is_one_line_and_exit_2() {
    let cases: &[&[&str]] = &[
        &["--devices", "1100-1001"],
        &["--devices", "x"],
        &["--batch", "48"],
        &["--batch", "0"],
        &["--dialect", "tinytelemetry", "--batch", "38"],
        &["--to", "not-an-address"],
        &["--interval", "soon"],
        &["--dialect", "secure"],
        &["--dialect", "secure", "--cert", "no.pem", "--key", "no.key", "--ca", "no-ca.pem"],
        &["--dialect", "secure", "--batch", "3", "--count", "1", "--dry-run"],
        &["--dialect", "secure", "--device-keys", "keys.txt"],
        &["--cert", "c.pem", "--key", "c.key", "--ca", "ca.pem"],
        &["--dialect", "secure", "--cert", "c.pem"],
        &["--dialect", "mqtt"],
        &["--start-seq", "70000"],
        &["--dry-run"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = bin()
            .args(*args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{stderr}"
        );
    }
    let out = bin().args(["--dialect", "secure"]).output().expect("spawn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--dialect secure needs --cert, --key and --ca"));
    let out = bin().args(["--dialect", "secure", "--cert", "c", "--key", "k", "--ca", "no-ca.pem"]).output().expect("spawn");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca no-ca.pem: No such file"));
}

#[test]
fn cli_help_lists_every_flag() {
    let out = bin().arg("--help").output().expect("spawn");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--dialect",
        "--devices",
        "--interval",
        "--jitter",
        "--batch",
        "--timestamp-unit",
        "--start-seq",
        "--reboot-after",
        "--rate",
        "--count",
        "--duration",
        "--seed",
        "--start-time-ms",
        "--to",
        "--truth",
        "--dry-run",
        "--quiet",
        "--cert",
        "--key",
        "--ca",
        "--handshake-timeout",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
}

#[test]
fn cli_dry_run_matches_the_library() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth = dir.path().join("cli.ndjson");
    let out = bin()
        .args([
            "--dialect",
            "tinytelemetry",
            "--devices",
            "1,5,9-12",
            "--batch",
            "3",
            "--count",
            "7",
        ])
        .args([
            "--start-seq",
            "4294967294",
            "--seed",
            "3",
            "--start-time-ms",
            "1765477199815",
            "--dry-run",
        ])
        .arg("--truth")
        .arg(&truth)
        .output()
        .expect("spawn");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr
            .lines()
            .last()
            .is_some_and(|l| l.contains("generated 42 packets")),
        "{stderr}"
    );

    let config = Config {
        dialect: Dialect::Tinytelemetry,
        devices: vec![1, 5, 9, 10, 11, 12],
        batch: Some(3),
        count: Some(7),
        start_seq: Some(u32::MAX - 1),
        seed: Some(3),
        start_time_ms: Some(T0),
        ..Config::default()
    };
    let want: Vec<Vec<u8>> = Simulator::new(config)
        .expect("valid")
        .map(|p| p.datagram)
        .collect();
    let got: Vec<Vec<u8>> = read(&truth).into_iter().map(|r| r.datagram).collect();
    assert_eq!(got, want);

    let quiet = bin()
        .args(["--count", "2", "--dry-run", "-q"])
        .output()
        .expect("spawn");
    assert!(quiet.status.success());
    assert!(quiet.stderr.is_empty() && quiet.stdout.is_empty());
}

#[test]
fn cli_ctrl_c_stops_cleanly_and_flushes_the_truth_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let truth = dir.path().join("sigint.ndjson");
    let rx = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let mut child = bin()
        .args(["--devices", "1-3", "--interval", "20ms", "--to"])
        .arg(rx.local_addr().expect("addr").to_string())
        .arg("--truth")
        .arg(&truth)
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    thread::sleep(Duration::from_millis(400));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success());
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("telemesh-sensor did not stop on SIGINT");
        }
        thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert!(stderr.contains("interrupted"), "{stderr}");

    let records = read(&truth);
    assert!(records.len() >= 10, "{} lines", records.len());
    assert_eq!(drain(&rx, Duration::from_millis(100)).len(), records.len());
    records.iter().for_each(assert_decodes);
}
