//! `telemesh_tools::relay` end to end on loopback: a UDP echo server behind a relay.
// A failed setup step is a failed test; unwrap says so as clearly as expect here.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use telemesh_proto::impair;
use telemesh_tools::relay;

/// Echoes every datagram back to its sender and records what it received.
struct Echo {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Echo {
    fn start() -> Echo {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let addr = socket.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, flag) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !flag.load(Ordering::Relaxed) {
                if let Ok((len, from)) = socket.recv_from(&mut buf) {
                    log.lock().unwrap().push(buf[..len].to_vec());
                    let _ = socket.send_to(&buf[..len], from);
                }
            }
        });
        Echo { addr, received, stop, thread: Some(thread) }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn client(timeout_ms: u64) -> UdpSocket {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(timeout_ms))).unwrap();
    socket
}

fn relay_with(
    echo: &Echo,
    forward: impair::Config,
    reverse: impair::Config,
    seed: u64,
) -> relay::Relay {
    let config = relay::Config {
        forward,
        reverse,
        seed,
        ..relay::Config::new("127.0.0.1:0".parse().unwrap(), echo.addr)
    };
    relay::spawn(config).unwrap()
}

/// Sends `n` numbered datagrams paced so that no socket buffer overflows, then waits a
/// little for stragglers; returns the sequence numbers that reached the echo server.
fn send_paced(relay: &relay::Relay, echo: &Echo, n: u32) -> BTreeSet<u32> {
    let socket = client(10);
    for seq in 0..n {
        socket.send_to(&seq.to_be_bytes(), relay.local_addr()).unwrap();
        if seq % 20 == 19 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    echo.received().iter().map(|b| u32::from_be_bytes(b[..4].try_into().unwrap())).collect()
}

#[test]
fn no_impairment_delivers_everything_and_replies_reach_the_right_client() {
    let echo = Echo::start();
    let relay = relay_with(&echo, impair::Config::default(), impair::Config::default(), 1);
    let to = relay.local_addr();
    let clients: Vec<_> = (0..2u8)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = client(2000);
                let mut buf = [0u8; 64];
                for seq in 0..500u32 {
                    let mut msg = vec![c];
                    msg.extend_from_slice(&seq.to_be_bytes());
                    msg.extend_from_slice(b"payload");
                    socket.send_to(&msg, to).unwrap();
                    let (len, from) = socket.recv_from(&mut buf).unwrap();
                    assert_eq!(from, to);
                    assert_eq!(&buf[..len], &msg[..], "client {c} got someone else's reply");
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let received = echo.received();
    assert_eq!(received.len(), 1000);
    for c in 0..2u8 {
        let seqs: Vec<u32> = received
            .iter()
            .filter(|m| m[0] == c)
            .map(|m| u32::from_be_bytes(m[1..5].try_into().unwrap()))
            .collect();
        assert_eq!(seqs, (0..500).collect::<Vec<_>>());
    }
    let stats = relay.stop();
    assert_eq!(stats.sessions_opened, 2);
    assert_eq!(stats.forward.received, 1000);
    assert_eq!(stats.forward.delivered, 1000);
    assert_eq!(stats.reverse.delivered, 1000);
    assert_eq!(stats.forward.impair.lost(), 0);
}

#[test]
fn seeded_loss_is_near_the_rate_and_reproducible() {
    let lossy = impair::Config { loss: 0.3, ..impair::Config::default() };
    let run = |seed| {
        let echo = Echo::start();
        let relay = relay_with(&echo, lossy.clone(), impair::Config::default(), seed);
        let delivered = send_paced(&relay, &echo, 2000);
        let stats = relay.stop();
        assert_eq!(stats.forward.received, 2000, "the relay itself must see every datagram");
        assert_eq!(stats.forward.impair.lost_random + delivered.len() as u64, 2000);
        delivered
    };
    let a = run(7);
    let lost = 1.0 - a.len() as f64 / 2000.0;
    assert!((lost - 0.3).abs() < 0.05, "observed loss {lost}");
    assert_eq!(a, run(7), "same seed, same delivered set");
    assert_ne!(a, run(8), "another seed loses other datagrams");
}

#[test]
fn delay_applies_each_way() {
    let delayed = impair::Config { delay_ns: 50_000_000, ..impair::Config::default() };
    let echo = Echo::start();
    let relay = relay_with(&echo, delayed.clone(), delayed, 1);
    let socket = client(2000);
    let mut buf = [0u8; 16];
    for seq in 0..3u32 {
        let start = Instant::now();
        socket.send_to(&seq.to_be_bytes(), relay.local_addr()).unwrap();
        let (len, _) = socket.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..len], &seq.to_be_bytes());
        let rtt = start.elapsed();
        assert!(rtt >= Duration::from_millis(100), "round trip {rtt:?}");
    }
}

#[test]
fn full_duplication_doubles_arrivals() {
    let dup = impair::Config { duplicate: 1.0, ..impair::Config::default() };
    let echo = Echo::start();
    let relay = relay_with(&echo, dup, impair::Config::default(), 1);
    send_paced(&relay, &echo, 200);
    let received = echo.received();
    assert_eq!(received.len(), 400);
    let stats = relay.stop();
    assert_eq!(stats.forward.impair.duplicated, 200);
    assert_eq!(stats.forward.delivered, 400);
}

#[test]
fn invalid_config_is_rejected_before_binding() {
    let bad = impair::Config { loss: 2.0, ..impair::Config::default() };
    let config = relay::Config {
        forward: bad,
        ..relay::Config::new("127.0.0.1:0".parse().unwrap(), "127.0.0.1:9".parse().unwrap())
    };
    assert!(matches!(relay::spawn(config), Err(relay::Error::Impair { direction: "forward", .. })));
}

#[test]
fn cli_rejects_bad_options_with_exit_2() {
    for args in
        [&["--to", "127.0.0.1:9", "--loss", "2"][..], &["--to", "127.0.0.1:9", "--burst", "x"]]
    {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemesh-relay"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one-line error: {stderr}");
    }
}

#[test]
fn a_cut_drops_everything_or_only_named_clients_until_healed() {
    let echo = Echo::start();
    let relay = relay_with(&echo, impair::Config::default(), impair::Config::default(), 1);
    let (a, b) = (client(300), client(300));
    let mut buf = [0u8; 16];
    let round_trip = |socket: &UdpSocket, byte: u8, buf: &mut [u8]| {
        socket.send_to(&[byte], relay.local_addr()).unwrap();
        socket.recv_from(buf).is_ok()
    };
    assert!(round_trip(&a, 1, &mut buf) && round_trip(&b, 2, &mut buf));

    relay.set_cut(relay::Cut::All);
    assert!(!round_trip(&a, 3, &mut buf) && !round_trip(&b, 4, &mut buf));

    relay.set_cut(relay::Cut::Clients([a.local_addr().unwrap()].into()));
    assert!(!round_trip(&a, 5, &mut buf), "a is cut");
    assert!(round_trip(&b, 6, &mut buf), "b is not");

    relay.set_cut(relay::Cut::None);
    assert!(round_trip(&a, 7, &mut buf), "healed");
    let stats = relay.stop();
    assert_eq!(stats.forward.cut, 3);
    let bytes: Vec<u8> = echo.received().iter().map(|m| m[0]).collect();
    assert_eq!(bytes, [1, 2, 6, 7]);
}

#[test]
fn cli_reverse_flags_override_only_the_replies() {
    // --reverse-loss 1 with no forward loss: requests arrive, no reply comes back.
    let echo = Echo::start();
    let mut relay = std::process::Command::new(env!("CARGO_BIN_EXE_telemesh-relay"))
        .args(["--listen", "127.0.0.1:0", "--to", &echo.addr.to_string(), "--reverse-loss", "1", "--reverse-delay", "5"])
        .args(["--seed", "1", "--stats-every", "0"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The relay prints its address first: "telemesh-relay X: ADDR -> …; forward ≈ `…`; reverse ≈ `…`".
    let mut stderr = std::io::BufReader::new(relay.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
    let addr: SocketAddr = line.split(": ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(line.contains("reverse ≈ `tc qdisc add dev IFACE root netem loss 100% delay 5000us`"), "{line}");
    let socket = client(300);
    let mut buf = [0u8; 16];
    for i in 0..3u8 {
        socket.send_to(&[i], addr).unwrap();
        assert!(socket.recv_from(&mut buf).is_err(), "a reply got through");
    }
    assert_eq!(echo.received().len(), 3);
    relay.kill().unwrap();
    relay.wait().unwrap();
}
