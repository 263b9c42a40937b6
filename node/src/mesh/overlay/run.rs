//! The event loop: owns the swarm, serves [`Command`]s, turns swarm events into [`Event`]s.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::core::ConnectedPoint;
use libp2p::gossipsub::{self, IdentTopic, MessageAcceptance, MessageAuthenticity, MessageId, ValidationMode};
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, OutboundFailure, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, connection_limits, identify, noise, tcp, yamux, Multiaddr, PeerId, Swarm};
use serde::{Deserialize, Serialize};
use telemesh_proto::record::codec as bincode_codec;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::codec::{self, Codec};
use super::gate::Gated;
use crate::trust::roster::MAX_ROSTER_BYTES;
use crate::trust::{Membership, Refusal, Ticket};
use super::{
    split_bootstrap, stream_protocol, Command, Config, Counters, Error, Event, ListenState, PeerInfo, RequestError,
    Validator,
};

/// The largest gossip message on the wire (data, signature, key, topic and framing).
const MAX_TRANSMIT_SIZE: usize = 64 * 1024;
/// How often bans are checked for expiry.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// Connections kept to one peer at most (a simultaneous dial from both ends makes two, and
/// a peer just admitted has its new connection beside the old, gated one for a moment).
const MAX_CONNECTIONS_PER_PEER: u32 = 3;
/// How long a connection to a peer not proven a member is kept: time enough to present a
/// roster or a ticket over the trust protocol.
const UNPROVEN_GRACE: Duration = Duration::from_secs(10);
/// Connections from peers not proven members kept at once: the rest of the connection
/// budget ([`Config::max_peers`]) stays for members, whatever outsiders open.
const MAX_UNPROVEN: usize = 16;
/// Trust-protocol streams open at once on one connection.
const TRUST_STREAMS: usize = 2;
/// Trust-protocol messages are a roster or a ticket, and a little framing.
const MAX_TRUST_MESSAGE: usize = MAX_ROSTER_BYTES + 4096;

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    // The gatekeepers come first so that a denied connection never reaches the others.
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    /// Rosters and tickets: the one protocol spoken before a peer is proven a member.
    trust: request_response::Behaviour<Codec>,
    /// Everything else, on members' connections only (`gate`).
    members: Gated<Members>,
}

#[derive(NetworkBehaviour)]
pub(crate) struct Members {
    identify: identify::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    repair: request_response::Behaviour<Codec>,
}

/// A trust-protocol request.
#[derive(Debug, Serialize, Deserialize)]
enum TrustRequest {
    /// The sender's signed roster (sent to members on connect and whenever it changes).
    Roster(Vec<u8>),
    /// A node asks to join with a ticket (sent by a node that holds no roster yet).
    Join(Ticket),
}

/// A trust-protocol response.
#[derive(Debug, Serialize, Deserialize)]
enum TrustResponse {
    Ack,
    /// A newer roster than the requester's (to a member), or the roster that admits a joiner.
    Roster(Vec<u8>),
    /// Refused, with [`Refusal::reason`].
    Refused(String),
}

/// What the loop knows of one connected peer.
#[derive(Debug)]
struct PeerState {
    connections: HashMap<ConnectionId, Multiaddr>,
    since: Instant,
    /// Set once identify showed the peer is of this mesh ([`Event::PeerUp`] was sent).
    agent: Option<String>,
}

/// An inbound request handed to the node, waiting for its answer.
type Answer = (PeerId, ResponseChannel<Vec<u8>>, Option<Vec<u8>>);

pub(crate) struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    validate: Validator,
    counters: Arc<Counters>,
    listen: watch::Sender<ListenState>,
    unreported: HashSet<libp2p::core::transport::ListenerId>,
    topic: IdentTopic,
    protocol_version: String,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    max_peers: usize,
    max_inbound_per_peer: usize,
    max_response_bytes: usize,
    request_timeout: Duration,
    refresh: Duration,
    peers: HashMap<PeerId, PeerState>,
    outbound: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<u8>, RequestError>>>,
    inbound: HashMap<PeerId, usize>,
    answers: FuturesUnordered<BoxFuture<'static, Answer>>,
    bans: HashMap<PeerId, Instant>,
    membership: Arc<Membership>,
    roster: watch::Receiver<u64>,
    /// Connections established before their peer was proven a member: when, and the address
    /// we dialled (so that we can dial again once it is a member).
    unproven: HashMap<ConnectionId, (PeerId, Instant, Option<Multiaddr>)>,
    /// Peers removed from the mesh: blocked, connection and all.
    removed: HashSet<PeerId>,
}

fn setup<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> Error {
    move |e| Error::Setup(format!("{what}: {e}"))
}

fn behaviour(
    config: &Config,
    keypair: &Keypair,
    counters: Arc<Counters>,
    membership: &Arc<Membership>,
) -> Result<Behaviour, Error> {
    let local = keypair.public().to_peer_id();

    let identify = identify::Behaviour::new(
        identify::Config::new(config.protocol_version(), keypair.public())
            .with_agent_version(format!("telemesh/{}", env!("CARGO_PKG_VERSION")))
            // With external addresses given, peers learn only those (e.g. a relay in front).
            .with_hide_listen_addrs(!config.external.is_empty()),
    );

    let mut kad_config = kad::Config::new(stream_protocol(config.kad_protocol())?);
    // Peers only; nothing a remote stores is kept.
    kad_config.set_record_filtering(kad::StoreInserts::FilterBoth);
    let mut kad = kad::Behaviour::with_config(local, MemoryStore::new(local), kad_config);
    kad.set_mode(Some(kad::Mode::Server));

    let gossip_config = gossipsub::ConfigBuilder::default()
        .heartbeat_interval(Duration::from_millis(500))
        .validation_mode(ValidationMode::Strict)
        .validate_messages()
        .max_transmit_size(MAX_TRANSMIT_SIZE)
        .message_id_fn(|message: &gossipsub::Message| MessageId::from(blake3::hash(&message.data).as_bytes().to_vec()))
        // Small meshes of 2-4 nodes must work: one mesh peer is enough, and a publisher sends to
        // every subscribed peer it is connected to.
        .mesh_n_low(1)
        .mesh_n(3)
        .mesh_n_high(6)
        .mesh_outbound_min(1)
        .flood_publish(true)
        .build()
        .map_err(setup("gossipsub configuration"))?;
    let mut gossipsub = gossipsub::Behaviour::new(MessageAuthenticity::Signed(keypair.clone()), gossip_config)
        .map_err(setup("gossipsub"))?;
    gossipsub.subscribe(&IdentTopic::new(config.topic())).map_err(setup("gossipsub subscription"))?;

    let codec = Codec { max_request: config.max_request_bytes, max_response: config.max_response_bytes, counters };
    let repair = request_response::Behaviour::with_codec(
        codec,
        [(stream_protocol(config.repair_protocol())?, ProtocolSupport::Full)],
        request_response::Config::default().with_request_timeout(config.request_timeout),
    );

    let max_peers = u32::try_from(config.max_peers).unwrap_or(u32::MAX);
    let limits = connection_limits::Behaviour::new(
        connection_limits::ConnectionLimits::default()
            .with_max_established(Some(max_peers))
            .with_max_established_per_peer(Some(MAX_CONNECTIONS_PER_PEER))
            .with_max_pending_incoming(Some(max_peers))
            .with_max_pending_outgoing(Some(max_peers)),
    );

    // The trust protocol's bytes are not the mesh's repair traffic: counted apart.
    let trust_codec = Codec { max_request: MAX_TRUST_MESSAGE, max_response: MAX_TRUST_MESSAGE, counters: Arc::default() };
    // Two trust messages in flight per connection: what an outsider can make a node buffer is
    // 16 unproven connections × 2 × 260 KiB, about 8 MiB.
    let trust = request_response::Behaviour::with_codec(
        trust_codec,
        [(stream_protocol(config.trust_protocol())?, ProtocolSupport::Full)],
        request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(TRUST_STREAMS),
    );
    let admit = {
        let membership = Arc::clone(membership);
        Arc::new(move |peer: &PeerId| membership.is_member(peer))
    };
    let members = Gated::new(Members { identify, kad, gossipsub, repair }, admit);
    Ok(Behaviour { blocked: Default::default(), limits, trust, members })
}

impl EventLoop {
    pub(crate) fn new(
        config: &Config,
        keypair: &Keypair,
        validate: Validator,
        counters: Arc<Counters>,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        listen: watch::Sender<ListenState>,
        membership: Arc<Membership>,
    ) -> Result<EventLoop, Error> {
        let bootstrap = config.bootstrap.iter().map(split_bootstrap).collect::<Result<Vec<_>, _>>()?;
        let behaviour = behaviour(config, keypair, Arc::clone(&counters), &membership)?;
        let idle = config.idle_timeout;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(keypair.clone())
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)
            .map_err(setup("tcp transport"))?
            .with_quic()
            .with_behaviour(move |_| behaviour)
            .map_err(setup("behaviour"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
            .build();

        let mut unreported = HashSet::new();
        for addr in &config.listen {
            tcp_port_free(addr).map_err(|e| Error::Listen { addr: addr.clone(), source: libp2p::TransportError::Other(e) })?;
            let id = swarm.listen_on(addr.clone()).map_err(|source| Error::Listen { addr: addr.clone(), source })?;
            unreported.insert(id);
        }
        listen.send_replace(ListenState { addrs: Vec::new(), unreported: unreported.len() });
        for addr in &config.external {
            swarm.add_external_address(addr.clone());
        }
        for (peer, addr) in &bootstrap {
            swarm.behaviour_mut().members.inner().kad.add_address(peer, addr.clone());
        }
        let roster = membership.subscribe();

        let mut this = EventLoop {
            swarm,
            commands,
            events,
            validate,
            counters,
            listen,
            unreported,
            topic: IdentTopic::new(config.topic()),
            protocol_version: config.protocol_version(),
            bootstrap,
            max_peers: config.max_peers,
            max_inbound_per_peer: config.max_inbound_per_peer,
            max_response_bytes: config.max_response_bytes,
            request_timeout: config.request_timeout,
            refresh: config.refresh,
            peers: HashMap::new(),
            outbound: HashMap::new(),
            inbound: HashMap::new(),
            answers: FuturesUnordered::new(),
            bans: HashMap::new(),
            membership,
            roster,
            unproven: HashMap::new(),
            removed: HashSet::new(),
        };
        this.on_roster_change();
        Ok(this)
    }

    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let local = *self.swarm.local_peer_id();
        tracing::debug!(peer = %local, mesh = %self.protocol_version, "overlay started");
        // Refreshes come quickly at first (1, 2, 4 … s) and then every `refresh`, so nodes
        // that joined through the same bootstrap peer at about the same time find each
        // other within seconds.
        let mut every = Duration::from_secs(1).min(self.refresh);
        let refresh = tokio::time::sleep(every);
        tokio::pin!(refresh);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(command) = self.commands.recv() => self.on_command(command),
                Some(answer) = self.answers.next(), if !self.answers.is_empty() => self.on_answer(answer),
                _ = &mut refresh => {
                    self.refresh();
                    every = (every * 2).min(self.refresh);
                    refresh.as_mut().reset(tokio::time::Instant::now() + every);
                }
                _ = housekeeping.tick() => {
                    self.expire_bans();
                    self.expire_unproven();
                }
                Ok(()) = self.roster.changed() => self.on_roster_change(),
            }
        }
        tracing::debug!(peer = %local, "overlay stopped");
    }

    fn connected(&self, peer: &PeerId) -> bool {
        self.swarm.is_connected(peer)
    }

    /// Dials a peer learnt through discovery, unless it is us, connected, banned, or we have
    /// enough peers.
    fn discovered(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if peer == *self.swarm.local_peer_id()
            || self.connected(&peer)
            || self.bans.contains_key(&peer)
            || self.peers.len() >= self.max_peers
        {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .addresses(addrs)
            .extend_addresses_through_behaviour()
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => tracing::debug!(%peer, error = %e, "cannot dial a discovered peer"),
        }
    }

    /// Kademlia bootstrap, and a new dial of every bootstrap peer we are not connected to.
    fn refresh(&mut self) {
        for (peer, addr) in self.bootstrap.clone() {
            if self.connected(&peer) || self.bans.contains_key(&peer) {
                continue;
            }
            tracing::debug!(%peer, %addr, "dialling bootstrap peer");
            self.swarm.behaviour_mut().members.inner().kad.add_address(&peer, addr.clone());
            let opts = DialOpts::peer_id(peer)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .addresses(vec![addr])
                .build();
            match self.swarm.dial(opts) {
                // Already being dialled (by kademlia, say).
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                Err(e) => tracing::debug!(%peer, error = %e, "cannot dial bootstrap peer"),
            }
        }
        if let Err(e) = self.swarm.behaviour_mut().members.inner().kad.bootstrap() {
            tracing::trace!(error = %e, "no kademlia bootstrap");
        }
    }

    fn expire_bans(&mut self) {
        let now = Instant::now();
        let expired: Vec<PeerId> = self.bans.iter().filter(|(_, until)| **until <= now).map(|(p, _)| *p).collect();
        for peer in expired {
            self.bans.remove(&peer);
            if self.removed.contains(&peer) {
                continue;
            }
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
            tracing::info!(%peer, "ban expired");
        }
    }

    /// Sends an event to the node without waiting; a full channel drops it (counted).
    fn emit(&self, event: Event) -> Result<(), Event> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(event) | mpsc::error::TrySendError::Closed(event)) => Err(event),
        }
    }

    fn emit_or_count(&self, event: Event) {
        if let Err(event) = self.emit(event) {
            self.counters.events_dropped.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?event, "event channel full or closed; event dropped");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Publish { data, reply } => {
                let len = data.len();
                let result = match self.swarm.behaviour_mut().members.inner().gossipsub.publish(self.topic.clone(), data) {
                    Ok(_) => {
                        self.counters.gossip_bytes_out.fetch_add(len as u64, Ordering::Relaxed);
                        Ok(true)
                    }
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(false),
                    Err(gossipsub::PublishError::Duplicate) => Ok(true),
                    Err(gossipsub::PublishError::MessageTooLarge) => Err(Error::MessageTooLarge { len }),
                    Err(e) => Err(Error::Publish(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Command::Request { peer, data, reply } => {
                let id = self.swarm.behaviour_mut().members.inner().repair.send_request(&peer, data);
                self.outbound.insert(id, reply);
            }
            Command::Peers { reply } => {
                let peers = self
                    .peers
                    .iter()
                    .filter_map(|(peer, state)| {
                        Some(PeerInfo {
                            peer: *peer,
                            addrs: state.connections.values().cloned().collect(),
                            connected_since: state.since,
                            agent: state.agent.clone()?,
                        })
                    })
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Disconnect { peer, ban_for, reply } => {
                tracing::info!(%peer, ban_secs = ban_for.as_secs(), "disconnecting peer");
                if ban_for.is_zero() {
                    let _ = self.swarm.disconnect_peer_id(peer);
                } else {
                    self.bans.insert(peer, Instant::now() + ban_for);
                    // Closes every connection and denies new ones in both directions.
                    self.swarm.behaviour_mut().blocked.block_peer(peer);
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                let _ = reply.send(());
            }
        }
    }

    fn on_answer(&mut self, (peer, channel, answer): Answer) {
        if let Some(n) = self.inbound.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.inbound.remove(&peer);
            }
        }
        match answer {
            Some(data) if data.len() > self.max_response_bytes => {
                tracing::warn!(%peer, len = data.len(), max = self.max_response_bytes, "repair response over the cap; not sent");
            }
            Some(data) => {
                if self.swarm.behaviour_mut().members.inner().repair.send_response(channel, data).is_err() {
                    tracing::debug!(%peer, "repair response too late: the request timed out or its connection closed");
                }
            }
            None => tracing::debug!(%peer, "repair request not answered"),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Members(e)) => match e {
                MembersEvent::Identify(e) => self.on_identify(e),
                MembersEvent::Kad(e) => self.on_kad(e),
                MembersEvent::Gossipsub(e) => self.on_gossip(e),
                MembersEvent::Repair(e) => self.on_repair(e),
            },
            SwarmEvent::Behaviour(BehaviourEvent::Trust(e)) => self.on_trust(e),
            SwarmEvent::Behaviour(BehaviourEvent::Blocked(never) | BehaviourEvent::Limits(never)) => {
                let never: Infallible = never;
                match never {}
            }
            SwarmEvent::NewListenAddr { listener_id, address } => {
                let local = *self.swarm.local_peer_id();
                let full = address.clone().with_p2p(local).unwrap_or_else(|a| a);
                tracing::info!(address = %full, "overlay listening");
                self.unreported.remove(&listener_id);
                let unreported = self.unreported.len();
                self.listen.send_modify(|s| {
                    if !s.addrs.contains(&address) {
                        s.addrs.push(address);
                    }
                    s.unreported = unreported;
                });
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                tracing::info!(%address, "overlay no longer listening");
                self.listen.send_modify(|s| s.addrs.retain(|a| *a != address));
            }
            SwarmEvent::ListenerClosed { listener_id, addresses, reason } => {
                tracing::warn!(?addresses, ?reason, "overlay listener closed");
                self.unreported.remove(&listener_id);
                let unreported = self.unreported.len();
                self.listen.send_modify(|s| {
                    s.addrs.retain(|a| !addresses.contains(a));
                    s.unreported = unreported;
                });
            }
            SwarmEvent::ListenerError { error, .. } => tracing::warn!(error = %error, "overlay listener error"),
            SwarmEvent::ConnectionEstablished { peer_id, connection_id, endpoint, .. } => {
                let remote = endpoint.get_remote_address().clone();
                tracing::debug!(peer = %peer_id, %remote, dialer = matches!(endpoint, ConnectedPoint::Dialer { .. }), "connection established");
                let dialled = matches!(endpoint, ConnectedPoint::Dialer { .. }).then(|| remote.clone());
                let state = self
                    .peers
                    .entry(peer_id)
                    .or_insert_with(|| PeerState { connections: HashMap::new(), since: Instant::now(), agent: None });
                state.connections.insert(connection_id, remote);
                let first = state.connections.len() == 1;
                self.on_connection(peer_id, connection_id, dialled, first);
            }
            SwarmEvent::ConnectionClosed { peer_id, connection_id, cause, .. } => {
                tracing::debug!(peer = %peer_id, cause = ?cause.as_ref().map(ToString::to_string), "connection closed");
                self.unproven.remove(&connection_id);
                let Some(state) = self.peers.get_mut(&peer_id) else { return };
                state.connections.remove(&connection_id);
                if state.connections.is_empty() {
                    let was_up = state.agent.is_some();
                    self.peers.remove(&peer_id);
                    if was_up {
                        tracing::info!(peer = %peer_id, "peer down");
                        self.emit_or_count(Event::PeerDown(peer_id));
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                tracing::debug!(peer = ?peer_id, error = %error, "outgoing connection failed");
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                tracing::debug!(remote = %send_back_addr, error = %error, "incoming connection failed");
            }
            _ => {}
        }
    }

    /// A connection is up. One to a member runs every protocol: our roster goes to the
    /// peer (it may hold an older one) and older connections made before it was a member
    /// go. One to a peer not proven a member only speaks the trust protocol, for a short
    /// while: a node waiting to join presents its ticket on it.
    fn on_connection(&mut self, peer: PeerId, connection: ConnectionId, dialled: Option<Multiaddr>, first: bool) {
        let gate = &self.swarm.behaviour().members;
        if gate.gated_connections(&peer).contains(&connection) {
            self.membership.metrics.refuse("unproven_connection");
            if self.unproven.len() >= MAX_UNPROVEN {
                self.membership.metrics.refuse("unproven_limit");
                tracing::debug!(%peer, "too many connections from peers not proven members; closed");
                self.swarm.close_connection(connection);
                return;
            }
            tracing::debug!(%peer, "connection from a peer not proven a member: trust protocol only");
            self.unproven.insert(connection, (peer, Instant::now(), dialled));
            if let Some(ticket) = self.membership.pending_ticket() {
                tracing::info!(%peer, "asking to join the mesh");
                self.swarm.behaviour_mut().trust.send_request(&peer, TrustRequest::Join(ticket).encode());
            }
            return;
        }
        for old in self.swarm.behaviour().members.gated_connections(&peer) {
            self.swarm.close_connection(old);
        }
        if first {
            if let Some(roster) = self.membership.signed_roster() {
                self.swarm.behaviour_mut().trust.send_request(&peer, TrustRequest::Roster(roster).encode());
            }
        }
    }

    /// Closes connections that stayed unproven past the grace period.
    fn expire_unproven(&mut self) {
        let now = Instant::now();
        let expired: Vec<ConnectionId> = self
            .unproven
            .iter()
            .filter(|(_, (_, since, _))| now.duration_since(*since) >= UNPROVEN_GRACE)
            .map(|(c, _)| *c)
            .collect();
        for connection in expired {
            if let Some((peer, _, _)) = self.unproven.remove(&connection) {
                self.membership.metrics.refuse("unproven_timeout");
                tracing::debug!(%peer, "peer not proven a member in time; connection closed");
                self.swarm.close_connection(connection);
            }
        }
    }

    /// A new roster was adopted (from a peer, an admission or a removal here): removed peers
    /// are cut off, peers now members get a connection that runs every protocol, and the
    /// roster goes to every member connected.
    fn on_roster_change(&mut self) {
        let removed: HashSet<PeerId> = self.membership.removed().into_iter().collect();
        for peer in removed.difference(&self.removed) {
            tracing::info!(%peer, "peer removed from the mesh; disconnecting");
            self.swarm.behaviour_mut().blocked.block_peer(*peer);
        }
        for peer in self.removed.difference(&removed) {
            if !self.bans.contains_key(peer) {
                self.swarm.behaviour_mut().blocked.unblock_peer(*peer);
            }
        }
        self.removed = removed;
        let connected: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in connected {
            let member = self.membership.is_member(&peer);
            let open = self.swarm.behaviour().members.is_open(&peer);
            if open && !member {
                self.membership.metrics.refuse("removed_peer");
                self.swarm.behaviour_mut().members.inner().kad.remove_peer(&peer);
                let _ = self.swarm.disconnect_peer_id(peer);
            } else if member && !open {
                // Connections we dialled are dialled again; the peer does the same with
                // the ones it dialled (or they expire).
                let again: Vec<(ConnectionId, Multiaddr)> = self
                    .unproven
                    .iter()
                    .filter(|(_, (p, _, dialled))| *p == peer && dialled.is_some())
                    .filter_map(|(c, (_, _, dialled))| Some((*c, dialled.clone()?)))
                    .collect();
                if again.is_empty() {
                    continue;
                }
                let addrs = again.iter().map(|(_, a)| a.clone()).collect();
                for (connection, _) in again {
                    self.unproven.remove(&connection);
                    self.swarm.close_connection(connection);
                }
                tracing::debug!(%peer, "peer proven a member; connecting again");
                let opts = DialOpts::peer_id(peer).condition(PeerCondition::Always).addresses(addrs).build();
                if let Err(e) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, error = %e, "cannot dial a new member");
                }
            }
        }
        if let Some(roster) = self.membership.signed_roster() {
            let members: Vec<PeerId> =
                self.peers.keys().filter(|p| self.swarm.behaviour().members.is_open(p)).copied().collect();
            for peer in members {
                self.swarm.behaviour_mut().trust.send_request(&peer, TrustRequest::Roster(roster.clone()).encode());
            }
        }
    }

    fn on_trust(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    let response = self.on_trust_request(peer, &request);
                    let _ = self.swarm.behaviour_mut().trust.send_response(channel, response.encode());
                }
                request_response::Message::Response { response, .. } => {
                    match bincode_codec::from_slice::<TrustResponse>(&response, "trust response") {
                        Ok(TrustResponse::Ack) => {}
                        Ok(TrustResponse::Roster(roster)) => {
                            if let Err(refusal) = self.membership.offer(&roster) {
                                self.refused(peer, refusal, "roster in a response");
                            }
                        }
                        Ok(TrustResponse::Refused(reason)) => {
                            if self.membership.pending_ticket().is_some() {
                                tracing::warn!(%peer, %reason, "the peer refused to admit this node");
                            } else {
                                tracing::debug!(%peer, %reason, "the peer refused our roster");
                            }
                        }
                        Err(_) => self.refused(peer, Refusal::Malformed, "trust response"),
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "trust request failed");
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "inbound trust request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_trust_request(&mut self, peer: PeerId, request: &[u8]) -> TrustResponse {
        let refuse = |this: &mut Self, refusal: Refusal, what: &str| {
            this.refused(peer, refusal, what);
            TrustResponse::Refused(refusal.reason().to_owned())
        };
        match bincode_codec::from_slice::<TrustRequest>(request, "trust request") {
            Ok(TrustRequest::Roster(roster)) => match self.membership.offer(&roster) {
                Ok(_) => TrustResponse::Ack,
                // A member behind us gets ours; anyone else learns nothing.
                Err(Refusal::Stale) if self.membership.is_member(&peer) => {
                    self.membership.signed_roster().map_or(TrustResponse::Ack, TrustResponse::Roster)
                }
                Err(refusal) => refuse(self, refusal, "roster"),
            },
            Ok(TrustRequest::Join(ticket)) => match self.membership.join(&ticket, peer) {
                Ok(roster) => TrustResponse::Roster(roster),
                Err(refusal) => refuse(self, refusal, "join"),
            },
            Err(_) => refuse(self, Refusal::Malformed, "trust request"),
        }
    }

    fn refused(&self, peer: PeerId, refusal: Refusal, what: &str) {
        self.membership.metrics.refuse(refusal.reason());
        match refusal {
            Refusal::Stale | Refusal::Open => tracing::debug!(%peer, %refusal, what, "refused"),
            _ => tracing::info!(%peer, %refusal, what, "refused"),
        }
    }

    fn on_identify(&mut self, event: identify::Event) {
        let identify::Event::Received { peer_id: peer, info, .. } = event else { return };
        if info.protocol_version != self.protocol_version {
            tracing::warn!(%peer, theirs = %info.protocol_version, ours = %self.protocol_version, "peer of another mesh; disconnecting");
            self.swarm.behaviour_mut().members.inner().kad.remove_peer(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
            return;
        }
        for addr in &info.listen_addrs {
            self.swarm.behaviour_mut().members.inner().kad.add_address(&peer, addr.clone());
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            let first = state.agent.is_none();
            state.agent = Some(info.agent_version.clone());
            if first {
                tracing::info!(%peer, agent = %info.agent_version, "peer up");
                self.emit_or_count(Event::PeerUp(peer));
            }
        }
        self.discovered(peer, info.listen_addrs);
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutingUpdated { peer, addresses, is_new_peer, .. } => {
                if is_new_peer {
                    tracing::debug!(%peer, "peer added to the routing table");
                }
                self.discovered(peer, addresses.into_vec());
            }
            kad::Event::OutboundQueryProgressed { result: kad::QueryResult::GetClosestPeers(Ok(ok)), .. } => {
                for info in ok.peers {
                    self.discovered(info.peer_id, info.addrs);
                }
            }
            kad::Event::OutboundQueryProgressed { result: kad::QueryResult::Bootstrap(result), .. } => {
                tracing::trace!(?result, "kademlia bootstrap progressed");
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        let gossipsub::Event::Message { propagation_source, message_id, message } = event else { return };
        self.counters.gossip_bytes_in.fetch_add(message.data.len() as u64, Ordering::Relaxed);
        // Strict validation with signed messages: the author is always present and verified.
        // Only members' messages, forwarded by members, are accepted: a member that has not
        // yet learnt of a removal may still forward its messages.
        let members = |source: &PeerId| {
            let ok = self.membership.is_member(source) && self.membership.is_member(&propagation_source);
            if !ok {
                self.membership.metrics.refuse("gossip_not_member");
            }
            ok
        };
        let accept = match message.source {
            Some(source) => members(&source) && (self.validate)(&source, &message.data),
            None => false,
        };
        let acceptance = if accept { MessageAcceptance::Accept } else { MessageAcceptance::Reject };
        self.swarm.behaviour_mut().members.inner().gossipsub.report_message_validation_result(
            &message_id,
            &propagation_source,
            acceptance,
        );
        match (accept, message.source) {
            (true, Some(source)) => self.emit_or_count(Event::Gossip { source, data: message.data }),
            _ => {
                self.counters.gossip_rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(peer = %propagation_source, source = ?message.source, "gossip message rejected");
            }
        }
    }

    fn on_repair(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message { peer, message, .. } => match message {
                request_response::Message::Request { request, channel, .. } => {
                    self.on_inbound_request(peer, request, channel)
                }
                request_response::Message::Response { request_id, response } => {
                    if let Some(reply) = self.outbound.remove(&request_id) {
                        let _ = reply.send(Ok(response));
                    }
                }
            },
            request_response::Event::OutboundFailure { peer, request_id, error, .. } => {
                tracing::debug!(%peer, error = %error, "repair request failed");
                if let Some(reply) = self.outbound.remove(&request_id) {
                    let _ = reply.send(Err(request_error(error)));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, error = %error, "inbound repair request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn on_inbound_request(&mut self, peer: PeerId, data: Vec<u8>, channel: ResponseChannel<Vec<u8>>) {
        let busy = |this: &mut Self, channel, why: &'static str| {
            this.counters.inbound_rejected_busy.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%peer, why, "inbound repair request answered empty");
            let _ = this.swarm.behaviour_mut().members.inner().repair.send_response(channel, Vec::new());
        };
        if !self.membership.is_member(&peer) {
            // The gate keeps non-members off the repair protocol; this covers a member
            // removed a moment ago whose connection is closing.
            self.membership.metrics.refuse("request_not_member");
            return busy(self, channel, "not a member");
        }
        let in_flight = self.inbound.get(&peer).copied().unwrap_or(0);
        if in_flight >= self.max_inbound_per_peer {
            return busy(self, channel, "too many requests from this peer at once");
        }
        let (reply, answer) = oneshot::channel();
        if self.emit(Event::Request { peer, data, reply }).is_err() {
            return busy(self, channel, "event channel full");
        }
        *self.inbound.entry(peer).or_insert(0) += 1;
        let timeout = self.request_timeout;
        self.answers.push(
            async move {
                let answer = tokio::time::timeout(timeout, answer).await.ok().and_then(Result::ok);
                (peer, channel, answer)
            }
            .boxed(),
        );
    }
}

impl TrustRequest {
    fn encode(&self) -> Vec<u8> {
        bincode_codec::to_vec(self)
    }
}

impl TrustResponse {
    fn encode(&self) -> Vec<u8> {
        bincode_codec::to_vec(self)
    }
}

fn request_error(failure: OutboundFailure) -> RequestError {
    match failure {
        OutboundFailure::DialFailure => RequestError::DialFailure,
        OutboundFailure::Timeout => RequestError::Timeout,
        OutboundFailure::ConnectionClosed => RequestError::ConnectionClosed,
        OutboundFailure::UnsupportedProtocols => RequestError::UnsupportedProtocol,
        OutboundFailure::Io(e) => {
            if let Some(codec::TooLarge { what, len, max }) =
                e.get_ref().and_then(|e| e.downcast_ref::<codec::TooLarge>())
            {
                RequestError::TooLarge { what, len: *len, max: *max }
            } else if e.kind() == std::io::ErrorKind::UnexpectedEof {
                RequestError::NoResponse
            } else {
                RequestError::Io(e)
            }
        }
    }
}

/// Fails if `addr` is a TCP address with a port another socket listens on. libp2p's TCP
/// transport sets `SO_REUSEPORT` on its listeners, so a second node would share the port
/// (and half of the first one's connections) instead of failing; a plain bind, without
/// it, does fail. Dropped at once: the window until libp2p binds is a moment at start.
fn tcp_port_free(addr: &Multiaddr) -> std::io::Result<()> {
    use libp2p::multiaddr::Protocol;
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => std::net::TcpListener::bind((ip, port)).map(drop),
        _ => Ok(()),
    }
}
