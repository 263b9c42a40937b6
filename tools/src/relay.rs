//! A userspace UDP impairment proxy: the library behind `telemesh-relay`.
//!
//! The relay listens on one UDP address and forwards to one target. For each distinct
//! client source address it opens its own upstream socket to the target (a *session*), so
//! replies coming back on that socket go to that client only; this keeps QUIC and other
//! connection-ish UDP protocols working between nodes. Each direction of each session has
//! its own [`impair::Link`] — forward (client → target) and reverse (target → client) —
//! seeded deterministically: session `i` (in order of first datagram, from 0) uses
//! `seed + 2i` forward and `seed + 2i + 1` reverse. Deliveries are scheduled on a timer
//! heap ordered by arrival time.
//!
//! Bounded: at most [`Config::max_sessions`] sessions (when full, the least recently
//! active one is evicted; sessions idle for [`Config::idle_timeout`] are evicted too) and
//! at most [`Config::max_queued`] datagrams waiting in the delay queue (beyond that they
//! are dropped and counted in [`DirectionStats::queue_dropped`]).
//!
//! [`spawn`] runs the relay on its own thread with a single-threaded tokio runtime, so
//! tests, the testnet and benchmarks can run many relays in one process; [`Relay::stop`]
//! or dropping the [`Relay`] stops it. [`Relay::set_cut`] cuts the link on purpose (all
//! traffic, or only some clients') for partition experiments, beside the impairment.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::io;
use std::net::{SocketAddr, UdpSocket as StdUdpSocket};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use telemesh_proto::impair;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch};

/// Largest datagram the relay forwards (the UDP maximum).
const MAX_DATAGRAM: usize = 65_535;

/// What to relay and how to impair it.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on for clients (port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where to forward client datagrams.
    pub target: SocketAddr,
    /// Impairment of client → target datagrams.
    pub forward: impair::Config,
    /// Impairment of target → client datagrams.
    pub reverse: impair::Config,
    /// Base seed of the per-session, per-direction generators.
    pub seed: u64,
    /// Most client sessions at once.
    pub max_sessions: usize,
    /// A session with no datagram in either direction for this long is evicted.
    pub idle_timeout: Duration,
    /// Most datagrams waiting in the delay queue; more are dropped.
    pub max_queued: usize,
}

impl Config {
    /// A relay with no impairment and the default bounds.
    pub fn new(listen: SocketAddr, target: SocketAddr) -> Self {
        Config {
            listen,
            target,
            forward: impair::Config::default(),
            reverse: impair::Config::default(),
            seed: 0,
            max_sessions: 1024,
            idle_timeout: Duration::from_secs(60),
            max_queued: 100_000,
        }
    }

    /// Checks both impairment configs and the bounds.
    pub fn validate(&self) -> Result<(), Error> {
        self.forward.validate().map_err(|e| Error::Impair { direction: "forward", source: e })?;
        self.reverse.validate().map_err(|e| Error::Impair { direction: "reverse", source: e })?;
        if self.max_sessions == 0 || self.max_queued == 0 {
            return Err(Error::Bounds);
        }
        Ok(())
    }
}

/// Why a relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An impairment config is out of range.
    #[error("{direction} impairment: {source}")]
    Impair {
        /// `forward` or `reverse`.
        direction: &'static str,
        /// The problem.
        source: impair::ConfigError,
    },
    /// `max_sessions` or `max_queued` is zero.
    #[error("max_sessions and max_queued must be at least 1")]
    Bounds,
    /// Binding or setting up a socket or the runtime failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Counters of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Datagrams received from the sender side.
    pub received: u64,
    /// Their bytes (UDP payload).
    pub received_bytes: u64,
    /// Datagrams sent on to the receiver side (duplicates count twice).
    pub delivered: u64,
    /// Datagrams dropped because the delay queue was full.
    pub queue_dropped: u64,
    /// Datagrams whose send failed (e.g. ICMP unreachable) or whose session was gone.
    pub send_failed: u64,
    /// Datagrams dropped because the link was cut ([`Relay::set_cut`]).
    pub cut: u64,
    /// What the impairment model did, summed over all sessions.
    pub impair: impair::Stats,
}

/// Counters of a relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Client → target.
    pub forward: DirectionStats,
    /// Target → client.
    pub reverse: DirectionStats,
    /// Sessions open now.
    pub sessions: u64,
    /// Sessions opened so far.
    pub sessions_opened: u64,
    /// Sessions evicted (idle or to make room).
    pub sessions_evicted: u64,
    /// Datagrams waiting in the delay queue now.
    pub queued: u64,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = |d: &DirectionStats| {
            format!(
                "rx {} tx {} lost {} (random {} burst {} rate {}) dup {} corrupt {} reorder {} \
                 qdrop {} fail {} cut {}",
                d.received,
                d.delivered,
                d.impair.lost(),
                d.impair.lost_random,
                d.impair.lost_burst,
                d.impair.lost_rate,
                d.impair.duplicated,
                d.impair.corrupted,
                d.impair.reordered,
                d.queue_dropped,
                d.send_failed,
                d.cut
            )
        };
        write!(
            f,
            "sessions {} (opened {} evicted {}) queued {} | forward: {} | reverse: {}",
            self.sessions,
            self.sessions_opened,
            self.sessions_evicted,
            self.queued,
            dir(&self.forward),
            dir(&self.reverse)
        )
    }
}

/// Traffic a relay drops on purpose, whatever the impairment: a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Cut {
    /// Nothing is cut.
    #[default]
    None,
    /// Every datagram, both directions.
    All,
    /// Both directions of these clients' sessions (by client source address).
    Clients(BTreeSet<SocketAddr>),
}

impl Cut {
    fn cuts(&self, client: &SocketAddr) -> bool {
        match self {
            Cut::None => false,
            Cut::All => true,
            Cut::Clients(set) => set.contains(client),
        }
    }
}

/// A running relay. Dropping it stops it.
#[derive(Debug)]
pub struct Relay {
    local_addr: SocketAddr,
    stats: Arc<Mutex<Stats>>,
    cut: Arc<Mutex<Cut>>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    /// The address clients send to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cuts (or heals, with [`Cut::None`]) the link from the next datagram on. Datagrams
    /// already in the delay queue are still delivered.
    pub fn set_cut(&self, cut: Cut) {
        *self.cut.lock().unwrap_or_else(PoisonError::into_inner) = cut;
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the relay and waits for its thread; queued datagrams are dropped.
    pub fn stop(mut self) -> Stats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Validates the config, binds the listening socket and starts the relay on its own
/// thread.
pub fn spawn(config: Config) -> Result<Relay, Error> {
    config.validate()?;
    let socket = StdUdpSocket::bind(config.listen)?;
    socket.set_nonblocking(true)?;
    let local_addr = socket.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let stats = Arc::new(Mutex::new(Stats::default()));
    let cut = Arc::new(Mutex::new(Cut::None));
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::clone(&stats);
    let cut_shared = Arc::clone(&cut);
    let thread = std::thread::Builder::new().name("telemesh-relay".into()).spawn(move || {
        runtime.block_on(async move {
            match UdpSocket::from_std(socket) {
                Ok(socket) => EventLoop::new(config, socket, shared, cut_shared).run(stopped).await,
                Err(e) => tracing::error!(error = %e, "relay: cannot register the socket"),
            }
        });
    })?;
    Ok(Relay { local_addr, stats, cut, stop, thread: Some(thread) })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Direction {
    Forward,
    Reverse,
}

/// A datagram waiting for its delivery time. Ordered by time, then FIFO.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Scheduled {
    at_ns: u64,
    order: u64,
    direction: Direction,
    client: SocketAddr,
    bytes: Vec<u8>,
}

#[derive(Debug)]
struct Session {
    id: u64,
    upstream: Arc<UdpSocket>,
    forward: impair::Link,
    reverse: impair::Link,
    last_active: Instant,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

#[derive(Debug)]
struct EventLoop {
    config: Config,
    socket: UdpSocket,
    shared: Arc<Mutex<Stats>>,
    cut: Arc<Mutex<Cut>>,
    stats: Stats,
    start: Instant,
    sessions: HashMap<SocketAddr, Session>,
    next_session: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    order: u64,
    replies_tx: mpsc::Sender<(SocketAddr, u64, Vec<u8>)>,
    replies_rx: mpsc::Receiver<(SocketAddr, u64, Vec<u8>)>,
}

impl EventLoop {
    fn new(config: Config, socket: UdpSocket, shared: Arc<Mutex<Stats>>, cut: Arc<Mutex<Cut>>) -> Self {
        let (replies_tx, replies_rx) = mpsc::channel(1024);
        EventLoop {
            config,
            socket,
            shared,
            cut,
            stats: Stats::default(),
            start: Instant::now(),
            sessions: HashMap::new(),
            next_session: 0,
            queue: BinaryHeap::new(),
            order: 0,
            replies_tx,
            replies_rx,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    async fn run(mut self, mut stopped: watch::Receiver<bool>) {
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        loop {
            let next = self.queue.peek().map(|Reverse(s)| s.at_ns);
            let wake = match next {
                Some(at) => self.start + Duration::from_nanos(at),
                None => Instant::now() + Duration::from_secs(3600),
            };
            tokio::select! {
                _ = stopped.changed() => break,
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, client)) => self.on_client(client, &buf[..len]).await,
                    // ICMP errors from earlier sends to clients surface here; keep going.
                    Err(e) => tracing::debug!(error = %e, "relay: recv from clients"),
                },
                Some((client, id, bytes)) = self.replies_rx.recv() => {
                    self.on_target(client, id, bytes);
                }
                _ = tokio::time::sleep_until(wake.into()) => {}
                _ = sweep.tick() => self.evict_idle(),
            }
            self.deliver_due().await;
            self.publish();
        }
    }

    fn is_cut(&self, client: &SocketAddr) -> bool {
        self.cut.lock().unwrap_or_else(PoisonError::into_inner).cuts(client)
    }

    async fn on_client(&mut self, client: SocketAddr, bytes: &[u8]) {
        self.stats.forward.received += 1;
        self.stats.forward.received_bytes += bytes.len() as u64;
        if self.is_cut(&client) {
            self.stats.forward.cut += 1;
            return;
        }
        if !self.sessions.contains_key(&client) {
            if let Err(e) = self.open_session(client).await {
                tracing::warn!(%client, error = %e, "relay: cannot open an upstream socket");
                self.stats.forward.send_failed += 1;
                return;
            }
        }
        let now = self.now_ns();
        let Some(session) = self.sessions.get_mut(&client) else { return };
        session.last_active = Instant::now();
        let before = session.forward.stats();
        let deliveries = session.forward.send(now, bytes);
        let after = session.forward.stats();
        add_delta(&mut self.stats.forward.impair, &before, &after);
        self.schedule(Direction::Forward, client, deliveries);
    }

    fn on_target(&mut self, client: SocketAddr, id: u64, bytes: Vec<u8>) {
        let now = self.now_ns();
        // A reply from a session that was evicted and replaced is dropped.
        let Some(session) = self.sessions.get_mut(&client).filter(|s| s.id == id) else {
            return;
        };
        self.stats.reverse.received += 1;
        self.stats.reverse.received_bytes += bytes.len() as u64;
        if self.cut.lock().unwrap_or_else(PoisonError::into_inner).cuts(&client) {
            self.stats.reverse.cut += 1;
            return;
        }
        session.last_active = Instant::now();
        let before = session.reverse.stats();
        let deliveries = session.reverse.send(now, &bytes);
        let after = session.reverse.stats();
        add_delta(&mut self.stats.reverse.impair, &before, &after);
        self.schedule(Direction::Reverse, client, deliveries);
    }

    fn schedule(&mut self, direction: Direction, client: SocketAddr, out: Vec<impair::Delivery>) {
        for d in out {
            if self.queue.len() >= self.config.max_queued {
                match direction {
                    Direction::Forward => self.stats.forward.queue_dropped += 1,
                    Direction::Reverse => self.stats.reverse.queue_dropped += 1,
                }
                continue;
            }
            self.order += 1;
            self.queue.push(Reverse(Scheduled {
                at_ns: d.at_ns,
                order: self.order,
                direction,
                client,
                bytes: d.bytes,
            }));
        }
    }

    async fn deliver_due(&mut self) {
        let now = self.now_ns();
        while self.queue.peek().is_some_and(|Reverse(s)| s.at_ns <= now) {
            let Some(Reverse(s)) = self.queue.pop() else { break };
            let sent = match s.direction {
                Direction::Forward => match self.sessions.get(&s.client) {
                    Some(session) => session.upstream.send(&s.bytes).await.is_ok(),
                    None => false,
                },
                Direction::Reverse => self.socket.send_to(&s.bytes, s.client).await.is_ok(),
            };
            let stats = match s.direction {
                Direction::Forward => &mut self.stats.forward,
                Direction::Reverse => &mut self.stats.reverse,
            };
            if sent {
                stats.delivered += 1;
            } else {
                stats.send_failed += 1;
            }
        }
    }

    async fn open_session(&mut self, client: SocketAddr) -> io::Result<()> {
        if self.sessions.len() >= self.config.max_sessions {
            let oldest = self.sessions.iter().min_by_key(|(_, s)| s.last_active).map(|(a, _)| *a);
            if let Some(addr) = oldest {
                self.sessions.remove(&addr);
                self.stats.sessions_evicted += 1;
            }
        }
        let bind: SocketAddr = if self.config.target.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let upstream = Arc::new(UdpSocket::bind(bind).await?);
        upstream.connect(self.config.target).await?;
        let id = self.next_session;
        self.next_session += 1;
        let seed = self.config.seed.wrapping_add(id.wrapping_mul(2));
        let reader =
            tokio::spawn(read_upstream(Arc::clone(&upstream), client, id, self.replies_tx.clone()));
        self.sessions.insert(
            client,
            Session {
                id,
                upstream,
                forward: impair::Link::new(self.config.forward.clone(), seed),
                reverse: impair::Link::new(self.config.reverse.clone(), seed.wrapping_add(1)),
                last_active: Instant::now(),
                reader,
            },
        );
        self.stats.sessions_opened += 1;
        tracing::debug!(%client, session = id, "relay: session opened");
        Ok(())
    }

    fn evict_idle(&mut self) {
        let timeout = self.config.idle_timeout;
        let before = self.sessions.len();
        self.sessions.retain(|_, s| s.last_active.elapsed() < timeout);
        self.stats.sessions_evicted += (before - self.sessions.len()) as u64;
    }

    fn publish(&mut self) {
        self.stats.sessions = self.sessions.len() as u64;
        self.stats.queued = self.queue.len() as u64;
        *self.shared.lock().unwrap_or_else(PoisonError::into_inner) = self.stats;
    }
}

/// Reads replies from the target on one session's upstream socket.
async fn read_upstream(
    upstream: Arc<UdpSocket>,
    client: SocketAddr,
    id: u64,
    replies: mpsc::Sender<(SocketAddr, u64, Vec<u8>)>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        match upstream.recv(&mut buf).await {
            Ok(len) => {
                if replies.send((client, id, buf[..len].to_vec())).await.is_err() {
                    return;
                }
            }
            // ICMP port unreachable while the target is down: keep the session.
            Err(e) => {
                tracing::debug!(%client, error = %e, "relay: recv from target");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Adds what a link counted between two snapshots to a running total.
fn add_delta(total: &mut impair::Stats, before: &impair::Stats, after: &impair::Stats) {
    total.add(&impair::Stats {
        sent: after.sent - before.sent,
        lost_random: after.lost_random - before.lost_random,
        lost_burst: after.lost_burst - before.lost_burst,
        lost_rate: after.lost_rate - before.lost_rate,
        duplicated: after.duplicated - before.duplicated,
        corrupted: after.corrupted - before.corrupted,
        reordered: after.reordered - before.reordered,
    });
}
