//! The gate: a behaviour that exists only on connections to members.
//!
//! [`Gated`] wraps the behaviours that carry the mesh's data (identify, kademlia, gossipsub,
//! repair). When a connection is established it asks [`Admit`] whether the peer is a
//! member: if so, the wrapped behaviours get their handlers on it as usual; if not, the
//! connection gets a `dummy` handler, which offers no protocol and opens no stream, and the
//! wrapped behaviours are never told the connection exists. So before a peer is proven a
//! member nothing is exchanged with it — no gossip in either direction, no kademlia query
//! answered, no repair request served — whatever it sends; it can only speak the trust
//! protocol, which lives outside the gate. A connection's fate is fixed when it is
//! established: when a peer becomes a member the event loop opens a new connection, and
//! when one is removed it closes them all.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use either::Either;
use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished};
use libp2p::swarm::{
    dummy, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

/// Decides, when a connection is established, whether its peer is a member.
pub type Admit = Arc<dyn Fn(&PeerId) -> bool + Send + Sync>;

pub(crate) struct Gated<B> {
    inner: B,
    admit: Admit,
    /// Connections the wrapped behaviours have handlers on, by peer.
    open: HashMap<PeerId, HashSet<ConnectionId>>,
    /// Connections given the dummy handler, by peer.
    gated: HashMap<ConnectionId, PeerId>,
    /// Connections whose handler was made but whose establishment was not reported yet.
    deciding: HashMap<ConnectionId, bool>,
}

impl<B> Gated<B> {
    pub(crate) fn new(inner: B, admit: Admit) -> Gated<B> {
        Gated { inner, admit, open: HashMap::new(), gated: HashMap::new(), deciding: HashMap::new() }
    }

    pub(crate) fn inner(&mut self) -> &mut B {
        &mut self.inner
    }

    /// The connections to `peer` established before it was a member.
    pub(crate) fn gated_connections(&self, peer: &PeerId) -> Vec<ConnectionId> {
        self.gated.iter().filter(|(_, p)| *p == peer).map(|(c, _)| *c).collect()
    }

    /// Whether `peer` has a connection the wrapped behaviours run on.
    pub(crate) fn is_open(&self, peer: &PeerId) -> bool {
        self.open.get(peer).is_some_and(|c| !c.is_empty())
    }

    fn handler<H>(
        &mut self,
        connection: ConnectionId,
        peer: PeerId,
        make: impl FnOnce(&mut B) -> Result<H, ConnectionDenied>,
    ) -> Result<Either<H, dummy::ConnectionHandler>, ConnectionDenied> {
        if (self.admit)(&peer) {
            let handler = make(&mut self.inner)?;
            self.deciding.insert(connection, true);
            Ok(Either::Left(handler))
        } else {
            self.deciding.insert(connection, false);
            Ok(Either::Right(dummy::ConnectionHandler))
        }
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Gated<B> {
    type ConnectionHandler = Either<THandler<B>, dummy::ConnectionHandler>;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner.handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(connection_id, peer, |inner| {
            inner.handle_established_inbound_connection(connection_id, peer, local_addr, remote_addr)
        })
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(connection_id, maybe_peer, addresses, effective_role)
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.handler(connection_id, peer, |inner| {
            inner.handle_established_outbound_connection(connection_id, peer, addr, role_override, port_use)
        })
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if self.deciding.remove(&e.connection_id) != Some(true) {
                    self.gated.insert(e.connection_id, e.peer_id);
                    return;
                }
                let open = self.open.entry(e.peer_id).or_default();
                let other_established = open.len();
                open.insert(e.connection_id);
                self.inner.on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                    other_established,
                    ..e
                }));
            }
            FromSwarm::ConnectionClosed(e) => {
                if self.gated.remove(&e.connection_id).is_some() {
                    return;
                }
                let Some(open) = self.open.get_mut(&e.peer_id) else { return };
                if !open.remove(&e.connection_id) {
                    return;
                }
                let remaining_established = open.len();
                if open.is_empty() {
                    self.open.remove(&e.peer_id);
                }
                self.inner.on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed { remaining_established, ..e }));
            }
            FromSwarm::AddressChange(e) => {
                if !self.gated.contains_key(&e.connection_id) {
                    self.inner.on_swarm_event(event);
                }
            }
            FromSwarm::DialFailure(e) => {
                self.deciding.remove(&e.connection_id);
                self.inner.on_swarm_event(event);
            }
            FromSwarm::ListenFailure(e) => {
                self.deciding.remove(&e.connection_id);
                self.inner.on_swarm_event(event);
            }
            other => self.inner.on_swarm_event(other),
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            Either::Left(event) => self.inner.on_connection_handler_event(peer_id, connection_id, event),
            Either::Right(never) => {
                let never: Infallible = never;
                match never {}
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        loop {
            let Poll::Ready(event) = self.inner.poll(cx) else { return Poll::Pending };
            let event = match event {
                // An event for a handler goes to a connection the wrapped behaviour runs on;
                // never to a gated one, whose handler could not take it.
                ToSwarm::NotifyHandler { peer_id, handler, event } => {
                    let open = self.open.get(&peer_id);
                    let target = match handler {
                        NotifyHandler::One(c) => open.and_then(|o| o.contains(&c).then_some(c)),
                        NotifyHandler::Any => open.and_then(|o| o.iter().next().copied()),
                    };
                    match target {
                        Some(c) => {
                            ToSwarm::NotifyHandler { peer_id, handler: NotifyHandler::One(c), event: Either::Left(event) }
                        }
                        None => {
                            tracing::debug!(peer = %peer_id, "event for a connection that is gone or gated; dropped");
                            continue;
                        }
                    }
                }
                other => other.map_in(Either::Left),
            };
            return Poll::Ready(event);
        }
    }
}
