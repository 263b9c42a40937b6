//! The peer-to-peer overlay: libp2p with QUIC and TCP+noise+yamux, identify, kademlia,
//! signed gossipsub for window announcements and a request-response protocol for repair.
//!
//! One task owns the [`Swarm`](libp2p::Swarm) ([`start`] spawns it); the rest of the node
//! talks to it through a cloneable [`Client`] (commands over a bounded channel, each with a
//! oneshot reply) and receives [`Event`]s on a bounded channel. Every queue is bounded:
//! when the event channel is full a gossip message is dropped and counted, and an inbound
//! request is answered with an empty response and counted.
//!
//! Meshes are kept apart by name ([`Config::mesh`]): the gossip topic
//! (`telemesh/<mesh>/windows/5`), the repair protocol (`/telemesh/<mesh>/repair/2`), the
//! kademlia protocol (`/telemesh/<mesh>/kad/1.0.0`) and the identify protocol version
//! (`telemesh/<mesh>/1`) all carry it. A peer that identifies with another protocol version
//! is disconnected and kept out of the routing table. The name keeps no one out; the
//! [`Membership`] does: identify, kademlia, gossipsub and repair run only on connections to
//! members (`gate`), and the trust protocol (`/telemesh/<mesh>/trust/1`: rosters and join
//! tickets) is all a peer not proven a member can speak, for 10 s (`docs/security.md`).
//!
//! Discovery: every peer learnt through identify or kademlia is added to the routing table
//! and dialled while fewer than [`Config::max_peers`] peers are connected, so a node that
//! knows only its bootstrap peer ends up directly connected to every node of a small mesh
//! (gossipsub forms its mesh over direct connections). Every [`Config::refresh`] the node
//! runs a kademlia bootstrap and dials again every bootstrap peer it is not connected to.

mod codec;
mod gate;
mod run;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::trust::Membership;

/// Capacity of the command channel from [`Client`]s to the event loop.
const COMMAND_QUEUE: usize = 256;
/// Capacity of the event channel from the event loop to the node.
const EVENT_QUEUE: usize = 1024;
/// How long [`Client::listen_addrs`] waits for every listener to report its address.
const LISTEN_WAIT: Duration = Duration::from_secs(2);

/// The overlay's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to listen on (`/ip4/…/udp/<port>/quic-v1`, `/ip4/…/tcp/<port>`; port 0 picks one).
    pub listen: Vec<Multiaddr>,
    /// Peers to join through; each address ends in `/p2p/<peer id>` ([`validate_bootstrap`]).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses advertised to peers (identify) instead of the listen addresses; empty =
    /// advertise the listen addresses.
    pub external: Vec<Multiaddr>,
    /// The mesh's name; nodes of different meshes neither gossip nor answer each other.
    pub mesh: String,
    /// The largest repair request sent or accepted, in bytes (without the length prefix).
    pub max_request_bytes: usize,
    /// The largest repair response sent or accepted, in bytes (without the length prefix).
    pub max_response_bytes: usize,
    /// Inbound requests being answered per peer at once; the ones beyond are answered with an
    /// empty response and counted ([`Traffic::inbound_rejected_busy`]).
    pub max_inbound_per_peer: usize,
    /// How long a request may take, from sending to the complete response; also how long an
    /// inbound request waits for the node's answer.
    pub request_timeout: Duration,
    /// Period of the kademlia bootstrap and of re-dialling disconnected bootstrap peers.
    pub refresh: Duration,
    /// Connections kept at most (at most two per peer); discovery stops dialling at this
    /// many connected peers.
    pub max_peers: usize,
    /// How long a connection no protocol needs is kept open.
    pub idle_timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![
                "/ip4/0.0.0.0/udp/4001/quic-v1".parse().expect("a valid constant multiaddr"),
                "/ip4/0.0.0.0/tcp/4001".parse().expect("a valid constant multiaddr"),
            ],
            bootstrap: Vec::new(),
            external: Vec::new(),
            mesh: "default".to_owned(),
            max_request_bytes: 64 * 1024,
            max_response_bytes: 8 * 1024 * 1024,
            max_inbound_per_peer: 8,
            request_timeout: Duration::from_secs(10),
            refresh: Duration::from_secs(30),
            max_peers: 64,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

impl Config {
    /// The gossipsub topic of window announcements.
    pub fn topic(&self) -> String {
        format!("telemesh/{}/windows/5", self.mesh)
    }

    /// The repair request-response protocol.
    pub fn repair_protocol(&self) -> String {
        format!("/telemesh/{}/repair/2", self.mesh)
    }

    /// The kademlia protocol.
    pub fn kad_protocol(&self) -> String {
        format!("/telemesh/{}/kad/1.0.0", self.mesh)
    }

    /// The trust protocol: rosters and join tickets, the one protocol spoken with a peer
    /// before it is proven a member.
    pub fn trust_protocol(&self) -> String {
        format!("/telemesh/{}/trust/1", self.mesh)
    }

    /// The identify protocol version; peers announcing another one are disconnected.
    pub fn protocol_version(&self) -> String {
        format!("telemesh/{}/1", self.mesh)
    }

    /// Checks everything [`start`] would refuse, without binding anything.
    pub fn validate(&self) -> Result<(), Error> {
        validate_mesh(&self.mesh)?;
        for addr in &self.bootstrap {
            validate_bootstrap(addr)?;
        }
        let invalid = |what: &'static str| Err(Error::InvalidConfig(what));
        if self.refresh.is_zero() {
            return invalid("refresh must be positive");
        }
        if self.request_timeout.is_zero() {
            return invalid("request_timeout must be positive");
        }
        if self.max_peers == 0 {
            return invalid("max_peers must be at least 1");
        }
        if u32::try_from(self.max_request_bytes).is_err() || u32::try_from(self.max_response_bytes).is_err() {
            return invalid("max_request_bytes and max_response_bytes must fit the u32 length prefix");
        }
        Ok(())
    }
}

/// A mesh name: 1 to 64 of `A-Z a-z 0-9 . _ -` (it becomes part of protocol names).
fn validate_mesh(mesh: &str) -> Result<(), Error> {
    let ok = !mesh.is_empty()
        && mesh.len() <= 64
        && mesh.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidMesh(mesh.to_owned()))
    }
}

/// Checks a bootstrap address: a transport address followed by `/p2p/<peer id>`.
/// Returns the peer id.
pub fn validate_bootstrap(addr: &Multiaddr) -> Result<PeerId, Error> {
    let bad = |reason: &'static str| Error::InvalidBootstrap { addr: addr.clone(), reason };
    let mut protocols: Vec<Protocol<'_>> = addr.iter().collect();
    let peer = match protocols.pop() {
        Some(Protocol::P2p(peer)) => peer,
        _ => return Err(bad("it must end in /p2p/<peer id>, as logged by the node at start")),
    };
    if protocols.is_empty() {
        return Err(bad("it has a peer id but no address to dial"));
    }
    if protocols.iter().any(|p| matches!(p, Protocol::P2p(_))) {
        return Err(bad("it names more than one peer id"));
    }
    Ok(peer)
}

/// The overlay could not start or a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid bootstrap address {addr}: {reason}")]
    InvalidBootstrap { addr: Multiaddr, reason: &'static str },
    #[error("invalid mesh name {0:?}: use 1 to 64 of A-Z a-z 0-9 . _ -")]
    InvalidMesh(String),
    #[error("invalid overlay configuration: {0}")]
    InvalidConfig(&'static str),
    #[error("the overlay must be started from within a tokio runtime")]
    NoRuntime,
    #[error("cannot set up the overlay: {0}")]
    Setup(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: Multiaddr,
        #[source]
        source: libp2p::TransportError<std::io::Error>,
    },
    #[error("gossip message of {len} bytes is too large to publish")]
    MessageTooLarge { len: usize },
    #[error("cannot publish: {0}")]
    Publish(String),
    #[error("the overlay has stopped")]
    EventLoopGone,
}

/// A repair request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    #[error("no response within the request timeout")]
    Timeout,
    #[error("cannot connect to the peer")]
    DialFailure,
    #[error("the connection closed before the response arrived")]
    ConnectionClosed,
    #[error("the peer closed the stream without answering")]
    NoResponse,
    #[error("{what} of {len} bytes exceeds the cap of {max} bytes")]
    TooLarge { what: &'static str, len: usize, max: usize },
    #[error("the peer does not speak this mesh's repair protocol")]
    UnsupportedProtocol,
    #[error("i/o error on the repair stream: {0}")]
    Io(#[source] std::io::Error),
    #[error("the overlay has stopped")]
    EventLoopGone,
}

/// Decides whether a gossip message from its (signed) author is accepted (and forwarded)
/// or rejected.
pub type Validator = Arc<dyn Fn(&PeerId, &[u8]) -> bool + Send + Sync>;

/// What the overlay tells the node.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event {
    /// A gossip message that passed the validator; `source` is its signed author.
    Gossip { source: PeerId, data: Vec<u8> },
    /// An inbound repair request; answer through `reply` (dropping it makes the request fail
    /// on the requester; not answering within the request timeout too).
    Request { peer: PeerId, data: Vec<u8>, reply: oneshot::Sender<Vec<u8>> },
    /// A peer of this mesh connected (its identify info matched).
    PeerUp(PeerId),
    /// The last connection to a peer reported by [`Event::PeerUp`] closed.
    PeerDown(PeerId),
}

/// A connected peer of this mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub peer: PeerId,
    /// Remote address of each open connection.
    pub addrs: Vec<Multiaddr>,
    /// When its first open connection was established.
    pub connected_since: Instant,
    /// The agent version it announced through identify.
    pub agent: String,
}

/// Snapshot of the overlay's traffic counters (since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Data bytes of gossip messages published.
    pub gossip_bytes_out: u64,
    /// Data bytes of gossip messages received (before validation).
    pub gossip_bytes_in: u64,
    /// Repair request bytes written, length prefixes included.
    pub request_bytes_out: u64,
    /// Repair request bytes read, length prefixes included.
    pub request_bytes_in: u64,
    /// Repair response bytes written, length prefixes included.
    pub response_bytes_out: u64,
    /// Repair response bytes read, length prefixes included.
    pub response_bytes_in: u64,
    /// Inbound requests answered empty: too many from one peer at once, or the event channel full.
    pub inbound_rejected_busy: u64,
    /// Gossip messages the validator rejected.
    pub gossip_rejected: u64,
    /// Gossip messages and peer events dropped because the event channel was full.
    pub events_dropped: u64,
}

/// The shared counters behind [`Traffic`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub gossip_bytes_out: AtomicU64,
    pub gossip_bytes_in: AtomicU64,
    pub request_bytes_out: AtomicU64,
    pub request_bytes_in: AtomicU64,
    pub response_bytes_out: AtomicU64,
    pub response_bytes_in: AtomicU64,
    pub inbound_rejected_busy: AtomicU64,
    pub gossip_rejected: AtomicU64,
    pub events_dropped: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> Traffic {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Traffic {
            gossip_bytes_out: get(&self.gossip_bytes_out),
            gossip_bytes_in: get(&self.gossip_bytes_in),
            request_bytes_out: get(&self.request_bytes_out),
            request_bytes_in: get(&self.request_bytes_in),
            response_bytes_out: get(&self.response_bytes_out),
            response_bytes_in: get(&self.response_bytes_in),
            inbound_rejected_busy: get(&self.inbound_rejected_busy),
            gossip_rejected: get(&self.gossip_rejected),
            events_dropped: get(&self.events_dropped),
        }
    }
}

/// The listen addresses as the event loop reports them.
#[derive(Debug, Default, Clone)]
pub(crate) struct ListenState {
    /// Bound addresses (port 0 resolved).
    pub addrs: Vec<Multiaddr>,
    /// Listeners that have not reported an address yet.
    pub unreported: usize,
}

/// What a [`Client`] asks of the event loop.
pub(crate) enum Command {
    Publish { data: Vec<u8>, reply: oneshot::Sender<Result<bool, Error>> },
    Request { peer: PeerId, data: Vec<u8>, reply: oneshot::Sender<Result<Vec<u8>, RequestError>> },
    Peers { reply: oneshot::Sender<Vec<PeerInfo>> },
    Disconnect { peer: PeerId, ban_for: Duration, reply: oneshot::Sender<()> },
}

/// A handle on the running overlay; cheap to clone.
#[derive(Clone)]
pub struct Client {
    local_peer_id: PeerId,
    commands: mpsc::Sender<Command>,
    counters: Arc<Counters>,
    listen: watch::Receiver<ListenState>,
    max_request_bytes: usize,
    request_timeout: Duration,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("local_peer_id", &self.local_peer_id).finish_non_exhaustive()
    }
}

impl Client {
    /// This node's peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local_peer_id
    }

    /// The bound listen addresses (port 0 resolved, one per interface for 0.0.0.0), waiting
    /// up to 2 s for every configured listener to report its first address.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut listen = self.listen.clone();
        let _ = tokio::time::timeout(LISTEN_WAIT, listen.wait_for(|s| s.unreported == 0)).await;
        let addrs = listen.borrow().addrs.clone();
        addrs
    }

    async fn call<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        answer.await.ok()
    }

    /// Publishes `data` on the mesh's topic. `Ok(false)`: no peer subscribed to it yet (not
    /// an error; try again later). Data published already within gossipsub's duplicate
    /// window is suppressed and reported as `Ok(true)` (it is in the mesh).
    pub async fn publish(&self, data: Vec<u8>) -> Result<bool, Error> {
        self.call(|reply| Command::Publish { data, reply }).await.unwrap_or(Err(Error::EventLoopGone))
    }

    /// Sends a repair request to `peer` (dialling it if needed) and waits for its response.
    /// An empty response may mean the peer was busy.
    pub async fn request(&self, peer: PeerId, data: Vec<u8>) -> Result<Vec<u8>, RequestError> {
        if data.len() > self.max_request_bytes {
            return Err(RequestError::TooLarge { what: "request", len: data.len(), max: self.max_request_bytes });
        }
        // The event loop enforces the timeout; this guard only covers a stuck loop.
        let guard = self.request_timeout.saturating_mul(2).saturating_add(Duration::from_secs(5));
        match tokio::time::timeout(guard, self.call(|reply| Command::Request { peer, data, reply })).await {
            Ok(Some(result)) => result,
            Ok(None) => Err(RequestError::EventLoopGone),
            Err(_) => Err(RequestError::Timeout),
        }
    }

    /// The connected peers of this mesh.
    pub async fn peers(&self) -> Vec<PeerInfo> {
        self.call(|reply| Command::Peers { reply }).await.unwrap_or_default()
    }

    /// Closes every connection to `peer` and refuses connections to and from it for
    /// `ban_for` (zero: just close them).
    pub async fn disconnect(&self, peer: PeerId, ban_for: Duration) {
        let _ = self.call(|reply| Command::Disconnect { peer, ban_for, reply }).await;
    }

    /// The traffic counters.
    pub fn traffic(&self) -> Traffic {
        self.counters.snapshot()
    }
}

/// Starts the overlay on the current tokio runtime: builds the swarm, opens every listener
/// and spawns the event loop, which stops when `shutdown` is cancelled. Every gossip message
/// goes through `validate` before it is accepted, forwarded or delivered.
pub fn start(
    config: Config,
    keypair: Keypair,
    validate: Validator,
    membership: Arc<Membership>,
    shutdown: CancellationToken,
) -> Result<(Client, mpsc::Receiver<Event>), Error> {
    config.validate()?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
    let counters = Arc::new(Counters::default());
    let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let (listen_tx, listen_rx) = watch::channel(ListenState::default());
    let local_peer_id = keypair.public().to_peer_id();
    let client = Client {
        local_peer_id,
        commands: commands_tx,
        counters: Arc::clone(&counters),
        listen: listen_rx,
        max_request_bytes: config.max_request_bytes,
        request_timeout: config.request_timeout,
    };
    let event_loop = {
        // Building the swarm (QUIC's endpoint) needs the runtime's context.
        let _entered = runtime.enter();
        run::EventLoop::new(
            &config,
            &keypair,
            validate,
            Arc::clone(&counters),
            commands_rx,
            events_tx,
            listen_tx,
            membership,
        )?
    };
    runtime.spawn(event_loop.run(shutdown));
    Ok((client, events_rx))
}

/// Splits a bootstrap address into its peer id and the address to dial (without `/p2p`).
pub(crate) fn split_bootstrap(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), Error> {
    let peer = validate_bootstrap(addr)?;
    let mut dial = addr.clone();
    dial.pop();
    Ok((peer, dial))
}

/// A protocol name built from a validated mesh name.
pub(crate) fn stream_protocol(name: String) -> Result<StreamProtocol, Error> {
    StreamProtocol::try_from_owned(name).map_err(|e| Error::Setup(format!("invalid protocol name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bootstrap_address_must_name_its_peer() -> Result<(), Box<dyn std::error::Error>> {
        let peer = Keypair::generate_ed25519().public().to_peer_id();
        let good: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}").parse()?;
        assert_eq!(validate_bootstrap(&good)?, peer);
        let (p, dial) = split_bootstrap(&good)?;
        assert_eq!((p, dial.to_string()), (peer, "/ip4/127.0.0.1/tcp/4001".to_owned()));

        for bad in [
            "/ip4/127.0.0.1/tcp/4001".to_owned(),
            format!("/p2p/{peer}"),
            format!("/ip4/127.0.0.1/tcp/1/p2p/{peer}/p2p/{peer}"),
        ] {
            let bad: Multiaddr = bad.parse()?;
            let err = validate_bootstrap(&bad).err().ok_or("accepted")?;
            assert!(err.to_string().contains(&bad.to_string()), "{err}");
        }
        Ok(())
    }

    #[test]
    fn mesh_names_are_checked() {
        for good in ["default", "a", "lab-2.west_1"] {
            assert!(validate_mesh(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "a b", &"x".repeat(65)] {
            assert!(validate_mesh(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_config_is_valid_and_names_its_protocols() {
        let config = Config::default();
        assert!(config.validate().is_ok());
        assert_eq!(config.topic(), "telemesh/default/windows/5");
        assert_eq!(config.repair_protocol(), "/telemesh/default/repair/2");
        assert_eq!(config.kad_protocol(), "/telemesh/default/kad/1.0.0");
        assert_eq!(config.protocol_version(), "telemesh/default/1");
        assert_eq!(config.listen.len(), 2);
    }
}
