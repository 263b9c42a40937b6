//! Trust: who may speak.
//!
//! - [`identity`]: the node's own overlay key, and the files keys live in.
//! - [`roster`]: what the mesh's owner signs (the roster of members, tickets, tokens).
//! - [`Membership`]: this node's view of the mesh it belongs to: open, or closed with the
//!   roster it holds, the owner key if this node holds it, and a ticket while it waits to be
//!   admitted. The overlay asks it, for every peer, whether the peer is a member
//!   ([`Membership::is_member`]) and hands it every roster and ticket a peer presents.
//!
//! `docs/security.md` is the threat model; `docs/operations.md` says how to run it.

pub mod identity;
pub mod roster;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::sync::watch;

use self::identity::IdentityError;
pub use self::roster::{Owner, Refusal, Roster, Ticket, Token};
use crate::mesh::metrics::ReasonLabel;

/// The signed roster this node holds, in the data directory.
pub const ROSTER_FILE: &str = "roster";
/// The owner key, in the data directory of the node that created the mesh.
pub const OWNER_KEY_FILE: &str = "owner.key";
/// Left in a data directory that predates closed meshes: the node stays in an open mesh
/// until it is given an owner key or a join token (`docs/operations.md`).
pub const OPEN_MARKER: &str = "OPEN_MESH";
/// How long an invitation is valid unless `--expires` says otherwise.
pub const DEFAULT_INVITE: Duration = Duration::from_secs(3600);
/// The longest invitation: tickets are meant to be short-lived.
pub const MAX_INVITE: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a node takes part in the mesh, from its configuration.
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// An open mesh: every peer of the same mesh name is a member (trials on one machine).
    pub open: bool,
    /// A join token from `telemesh mesh invite`.
    pub join: Option<Token>,
    /// Where the owner key is (created there if missing); default `<data>/owner.key`.
    pub owner_key: Option<PathBuf>,
    /// The configured bootstrap peers (a new node of a closed mesh joins with a token).
    pub bootstrap: Vec<Multiaddr>,
}

/// Membership could not be set up from the data directory and the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrustError {
    #[error(transparent)]
    Key(#[from] IdentityError),
    #[error("the roster {} does not verify ({refusal}); it was written by this node, so the data directory is damaged or was edited: restore it, or delete the file and join again with a new token", path.display())]
    BadRoster { refusal: Refusal, path: PathBuf },
    #[error("cannot read the roster {}: {source}", path.display())]
    ReadRoster {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the owner key {} is not the owner of this node's mesh ({roster}); it holds the key of {key}", path.display())]
    OwnerMismatch { path: PathBuf, roster: Owner, key: Owner },
    #[error("the owner key {} is not an ed25519 key", .0.display())]
    OwnerKeyType(PathBuf),
    #[error("this node is a member of the mesh owned by {held}; the join token is for the mesh owned by {token} (use another data directory to join that one)")]
    OtherOwner { held: Owner, token: Owner },
    #[error("--bootstrap alone does not join a closed mesh: get a token with `telemesh mesh invite` on a node that holds the owner key and start this node with --join TOKEN (or start every node with --open for an open mesh)")]
    BootstrapWithoutJoin,
    #[error("the join token names no valid owner key")]
    InvalidToken,
}

impl TrustError {
    /// Whether the configuration is at fault (exit 64), not the data directory.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            TrustError::OwnerMismatch { .. }
                | TrustError::OwnerKeyType(_)
                | TrustError::OtherOwner { .. }
                | TrustError::BootstrapWithoutJoin
                | TrustError::InvalidToken
        )
    }
}

/// What the trust plane counts (`telemesh_trust_*` in `/metrics`).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    /// Everything refused from peers and clients, by reason ([`Refusal::reason`] and the
    /// overlay's own: `unproven_connection`, `unproven_timeout`, `gossip_not_member`,
    /// `request_not_member`).
    pub refusals: Family<ReasonLabel, Counter>,
    /// Members in the roster this node holds (0 in an open mesh).
    pub members: Gauge,
    pub roster_version: Gauge,
}

/// Reasons the overlay counts besides [`Refusal`]s.
pub const OVERLAY_REFUSALS: [&str; 6] = [
    "unproven_connection",
    "unproven_timeout",
    "unproven_limit",
    "gossip_not_member",
    "request_not_member",
    "removed_peer",
];

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "trust_refusals",
            "Peers, rosters, tickets and messages refused by the trust plane, by reason",
            self.refusals.clone(),
        );
        registry.register("trust_members", "Members in the roster this node holds", self.members.clone());
        registry.register("trust_roster_version", "Version of the roster this node holds", self.roster_version.clone());
        for r in Refusal::ALL {
            let _ = self.refusals.get_or_create(&ReasonLabel { reason: r.reason() });
        }
        for reason in OVERLAY_REFUSALS {
            let _ = self.refusals.get_or_create(&ReasonLabel { reason });
        }
    }

    pub fn refuse(&self, reason: &'static str) {
        self.refusals.get_or_create(&ReasonLabel { reason }).inc();
    }
}

#[derive(Debug)]
enum State {
    Open,
    Closed(Closed),
}

#[derive(Debug)]
struct Closed {
    owner: Owner,
    /// The owner key, on the node that holds it.
    key: Option<Keypair>,
    /// `None` until this node is admitted.
    roster: Option<Roster>,
    /// The ticket this node joins with, until it holds a roster.
    ticket: Option<Ticket>,
}

/// This node's membership; shared by the overlay and the HTTP API.
#[derive(Debug)]
pub struct Membership {
    state: Mutex<State>,
    mesh: String,
    local: PeerId,
    dir: PathBuf,
    changed: watch::Sender<u64>,
    pub metrics: Metrics,
}

/// A member as `GET /v1/mesh/members` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct MemberView {
    pub peer_id: String,
    pub since: u64,
    /// This node.
    #[serde(rename = "self")]
    pub is_self: bool,
}

/// The membership part of `GET /v1/status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusView {
    /// `open` or `closed`.
    pub mode: &'static str,
    /// The owner's id (closed meshes).
    pub owner: Option<String>,
    /// Whether this node is in the roster it holds (always in an open mesh).
    pub member: bool,
    pub holds_owner_key: bool,
    pub roster_version: Option<u64>,
    pub members: Option<usize>,
    /// Waiting to be admitted with a join token.
    pub joining: bool,
}

fn now_s() -> u64 {
    crate::shared::now_ns() / 1_000_000_000
}

impl Membership {
    /// Sets up membership from the data directory and `setup`; `local` is this node.
    pub fn load(dir: &Path, mesh: &str, local: PeerId, setup: Setup, metrics: Metrics) -> Result<Membership, TrustError> {
        let state = Self::initial_state(dir, mesh, local, setup)?;
        let version = match &state {
            State::Closed(Closed { roster: Some(r), .. }) => r.version(),
            _ => 0,
        };
        let m = Membership {
            state: Mutex::new(state),
            mesh: mesh.to_owned(),
            local,
            dir: dir.to_path_buf(),
            changed: watch::channel(version).0,
            metrics,
        };
        m.update_gauges(&m.state());
        Ok(m)
    }

    /// An open mesh, not backed by files (tests and tools that run a bare overlay).
    pub fn open(mesh: &str, local: PeerId) -> Membership {
        Membership {
            state: Mutex::new(State::Open),
            mesh: mesh.to_owned(),
            local,
            dir: PathBuf::new(),
            changed: watch::channel(0).0,
            metrics: Metrics::default(),
        }
    }

    fn initial_state(dir: &Path, mesh: &str, local: PeerId, setup: Setup) -> Result<State, TrustError> {
        if setup.open {
            return Ok(State::Open);
        }
        let roster_path = dir.join(ROSTER_FILE);
        let key_path = setup.owner_key.clone().unwrap_or_else(|| dir.join(OWNER_KEY_FILE));
        let held = match std::fs::read(&roster_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(TrustError::ReadRoster { path: roster_path, source }),
        };
        if let Some(bytes) = held {
            let owner = roster::owner_named(&bytes).map_err(|refusal| TrustError::BadRoster { refusal, path: roster_path.clone() })?;
            let roster = Roster::verify(&bytes, &owner, mesh).map_err(|refusal| TrustError::BadRoster { refusal, path: roster_path.clone() })?;
            if let Some(token) = &setup.join {
                let token_owner = token.ticket.owner().map_err(|_| TrustError::InvalidToken)?;
                if token_owner != owner {
                    return Err(TrustError::OtherOwner { held: owner, token: token_owner });
                }
            }
            let key = match identity::load_key(&key_path, "owner key")? {
                Some(key) => Some(Self::check_owner_key(&key, &owner, &key_path)?),
                None => None,
            };
            return Ok(State::Closed(Closed { owner, key, roster: Some(roster), ticket: None }));
        }
        if let Some(token) = setup.join {
            let owner = token.ticket.owner().map_err(|_| TrustError::InvalidToken)?;
            return Ok(State::Closed(Closed { owner, key: None, roster: None, ticket: Some(token.ticket) }));
        }
        if dir.join(OPEN_MARKER).exists() && setup.owner_key.is_none() {
            tracing::warn!(
                "open mesh: this data directory predates closed meshes, so any peer that reaches the overlay port may join; \
                 docs/operations.md says how to close the mesh"
            );
            return Ok(State::Open);
        }
        if !setup.bootstrap.is_empty() && setup.owner_key.is_none() {
            return Err(TrustError::BootstrapWithoutJoin);
        }
        // The first node of a new mesh.
        let key = identity::load_or_create_key(&key_path, "owner key")?;
        let owner = Owner::of(&key).ok_or_else(|| TrustError::OwnerKeyType(key_path.clone()))?;
        let roster =
            Roster::genesis(&key, mesh, local, now_s()).map_err(|_| TrustError::OwnerKeyType(key_path.clone()))?;
        identity::write_private(&roster_path, roster.signed(), "roster")?;
        let _ = std::fs::remove_file(dir.join(OPEN_MARKER));
        tracing::info!(owner = %owner, key = %key_path.display(), "created a new closed mesh; this node holds its owner key");
        Ok(State::Closed(Closed { owner, key: Some(key), roster: Some(roster), ticket: None }))
    }

    fn check_owner_key(key: &Keypair, owner: &Owner, path: &Path) -> Result<Keypair, TrustError> {
        let held = Owner::of(key).ok_or_else(|| TrustError::OwnerKeyType(path.to_path_buf()))?;
        if &held != owner {
            return Err(TrustError::OwnerMismatch { path: path.to_path_buf(), roster: owner.clone(), key: held });
        }
        Ok(key.clone())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn update_gauges(&self, state: &State) {
        let (members, version) = match state {
            State::Closed(Closed { roster: Some(r), .. }) => (r.len(), r.version()),
            _ => (0, 0),
        };
        self.metrics.members.set(i64::try_from(members).unwrap_or(i64::MAX));
        self.metrics.roster_version.set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// Whether `peer` may exchange anything with this node: every peer in an open mesh; in a
    /// closed one, the members of the roster held — and nobody while this node holds none.
    pub fn is_member(&self, peer: &PeerId) -> bool {
        match &*self.state() {
            State::Open => true,
            State::Closed(c) => c.roster.as_ref().is_some_and(|r| r.contains(peer)),
        }
    }

    /// This node's peer id.
    /// The mesh's name.
    pub fn mesh(&self) -> &str {
        &self.mesh
    }

    pub fn local(&self) -> PeerId {
        self.local
    }

    pub fn is_open(&self) -> bool {
        matches!(&*self.state(), State::Open)
    }

    /// Peers removed from the mesh (refused outright, connection and all).
    pub fn removed(&self) -> Vec<PeerId> {
        match &*self.state() {
            State::Closed(Closed { roster: Some(r), .. }) => r.removed().filter(|p| !r.contains(p)).collect(),
            _ => Vec::new(),
        }
    }

    /// The roster's version; it changes (and [`Membership::subscribe`] wakes) whenever a new
    /// roster is adopted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The signed roster held, to send to a member.
    pub fn signed_roster(&self) -> Option<Vec<u8>> {
        match &*self.state() {
            State::Closed(Closed { roster: Some(r), .. }) => Some(r.signed().to_vec()),
            _ => None,
        }
    }

    /// The ticket to present while this node waits to be admitted.
    pub fn pending_ticket(&self) -> Option<Ticket> {
        match &*self.state() {
            State::Closed(Closed { roster: None, ticket, .. }) => ticket.clone(),
            _ => None,
        }
    }

    /// A roster a peer sent. Adopted if it is the owner's, for this mesh, newer than the one
    /// held, and (while this node holds none) names this node. `Ok(true)`: adopted;
    /// `Ok(false)`: the very roster held already.
    pub fn offer(&self, signed: &[u8]) -> Result<bool, Refusal> {
        let mut state = self.state();
        let State::Closed(closed) = &mut *state else { return Err(Refusal::Open) };
        let roster = Roster::verify(signed, &closed.owner, &self.mesh)?;
        match &closed.roster {
            Some(held) if held.signed() == roster.signed() => return Ok(false),
            Some(held) if roster.version() <= held.version() => return Err(Refusal::Stale),
            None if !roster.contains(&self.local) => return Err(Refusal::NotMember),
            _ => {}
        }
        self.adopt(closed, roster);
        self.update_gauges(&state);
        Ok(true)
    }

    /// Holds `roster` from now on: written to disk (a failure is logged; the roster still
    /// holds in memory) and announced to [`Membership::subscribe`]rs.
    fn adopt(&self, closed: &mut Closed, roster: Roster) {
        if let Err(e) = identity::write_private(&self.dir.join(ROSTER_FILE), roster.signed(), "roster") {
            tracing::error!(error = %e, "cannot store the new roster; it holds until the node stops");
        }
        let _ = std::fs::remove_file(self.dir.join(OPEN_MARKER));
        tracing::info!(version = roster.version(), members = roster.len(), "roster adopted");
        let version = roster.version();
        closed.roster = Some(roster);
        closed.ticket = None;
        self.changed.send_replace(version);
    }

    /// A peer asks to join with `ticket`: only the node holding the owner key admits it.
    /// Returns the new roster to send back.
    pub fn join(&self, ticket: &Ticket, peer: PeerId) -> Result<Vec<u8>, Refusal> {
        let mut state = self.state();
        let State::Closed(closed) = &mut *state else { return Err(Refusal::Open) };
        let (Some(key), Some(held)) = (&closed.key, &closed.roster) else { return Err(Refusal::NotOwner) };
        let next = held.admit(key, ticket, peer, now_s())?;
        let signed = next.signed().to_vec();
        if next.version() != held.version() {
            tracing::info!(%peer, version = next.version(), "admitted a new member");
            self.adopt(closed, next);
            self.update_gauges(&state);
        }
        Ok(signed)
    }

    /// A join token for a new node, valid for `valid`; `bootstrap` are this node's
    /// addresses (each ending in `/p2p/<peer id>`).
    pub fn invite(&self, valid: Duration, bootstrap: Vec<Multiaddr>) -> Result<Token, Refusal> {
        let state = self.state();
        let State::Closed(closed) = &*state else { return Err(Refusal::Open) };
        let Some(key) = &closed.key else { return Err(Refusal::NotOwner) };
        let ticket = Ticket::issue(key, &self.mesh, now_s(), valid.as_secs())?;
        Ok(Token { ticket, bootstrap })
    }

    /// Removes `peer` from the mesh (owner only; not the owner's own node).
    pub fn remove(&self, peer: PeerId) -> Result<u64, Refusal> {
        let mut state = self.state();
        let State::Closed(closed) = &mut *state else { return Err(Refusal::Open) };
        let (Some(key), Some(held)) = (&closed.key, &closed.roster) else { return Err(Refusal::NotOwner) };
        if peer == self.local {
            return Err(Refusal::NotOwner);
        }
        let next = held.remove(key, peer, now_s())?;
        let version = next.version();
        tracing::info!(%peer, version, "removed a member");
        self.adopt(closed, next);
        self.update_gauges(&state);
        Ok(version)
    }

    /// The members of the roster held (empty in an open mesh or before admission).
    pub fn members(&self) -> Vec<MemberView> {
        match &*self.state() {
            State::Closed(Closed { roster: Some(r), .. }) => r
                .members()
                .map(|(peer, since)| MemberView { peer_id: peer.to_string(), since, is_self: peer == self.local })
                .collect(),
            _ => Vec::new(),
        }
    }

    pub fn status(&self) -> StatusView {
        match &*self.state() {
            State::Open => StatusView {
                mode: "open",
                owner: None,
                member: true,
                holds_owner_key: false,
                roster_version: None,
                members: None,
                joining: false,
            },
            State::Closed(c) => StatusView {
                mode: "closed",
                owner: Some(c.owner.to_string()),
                member: c.roster.as_ref().is_some_and(|r| r.contains(&self.local)),
                holds_owner_key: c.key.is_some(),
                roster_version: c.roster.as_ref().map(Roster::version),
                members: c.roster.as_ref().map(Roster::len),
                joining: c.roster.is_none(),
            },
        }
    }
}

/// Called before the node's key is first created: a data directory that already has a node
/// key but no roster belongs to a node of an open mesh from before closed meshes, and stays
/// open (`OPEN_MESH`) until it is given an owner key or a join token.
pub fn mark_open_if_legacy(dir: &Path) {
    let legacy = dir.join(identity::KEY_FILE).exists() && !dir.join(ROSTER_FILE).exists();
    if legacy && !dir.join(OPEN_MARKER).exists() {
        let note = "This node ran before telemesh had closed meshes, so it stays in an open mesh.\n\
                    See docs/operations.md, \"Closing an open mesh\".\n";
        if let Err(e) = std::fs::write(dir.join(OPEN_MARKER), note) {
            tracing::warn!(error = %e, "cannot write the open-mesh marker");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> PeerId {
        Keypair::generate_ed25519().public().to_peer_id()
    }

    fn owner_node(dir: &Path) -> (Membership, PeerId) {
        let me = peer();
        (Membership::load(dir, "lab", me, Setup::default(), Metrics::default()).expect("a new mesh"), me)
    }

    #[test]
    fn the_first_node_creates_the_mesh_and_keeps_it_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (m, me) = owner_node(dir.path());
        assert!(m.is_member(&me) && !m.is_member(&peer()));
        let status = m.status();
        assert_eq!((status.mode, status.holds_owner_key, status.roster_version), ("closed", true, Some(1)));
        let mode = std::fs::metadata(dir.path().join(OWNER_KEY_FILE)).map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode() & 0o777
        });
        assert_eq!(mode.expect("owner key written"), 0o600);
        let owner = status.owner.clone();
        drop(m);
        let again = Membership::load(dir.path(), "lab", me, Setup::default(), Metrics::default()).expect("loads");
        assert_eq!(again.status().owner, owner);
        // A roster edited on disk is an error, not a silent new mesh.
        std::fs::write(dir.path().join(ROSTER_FILE), b"edited").expect("write");
        let err = Membership::load(dir.path(), "lab", me, Setup::default(), Metrics::default()).expect_err("refused");
        assert!(err.to_string().contains("does not verify"), "{err}");
    }

    #[test]
    fn a_joiner_adopts_only_a_roster_that_names_it_and_never_an_older_one() {
        let (od, jd) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (owner, _) = owner_node(od.path());
        let token = owner.invite(Duration::from_secs(60), Vec::new()).expect("invite");
        let me = peer();
        let joiner = Membership::load(jd.path(), "lab", me, Setup { join: Some(token.clone()), ..Setup::default() }, Metrics::default())
            .expect("joining");
        assert!(joiner.pending_ticket().is_some() && joiner.status().joining);
        // The owner's current roster does not name the joiner yet: refused.
        let v1 = owner.signed_roster().expect("roster");
        assert_eq!(joiner.offer(&v1), Err(Refusal::NotMember));
        let v2 = owner.join(&token.ticket, me).expect("admitted");
        assert_eq!(joiner.offer(&v2), Ok(true));
        assert!(joiner.is_member(&me) && joiner.pending_ticket().is_none());
        assert_eq!(joiner.offer(&v2), Ok(false));
        // Replaying the old version (as a removed member would) is refused.
        let third = peer();
        let ticket = owner.invite(Duration::from_secs(60), Vec::new()).expect("invite").ticket;
        owner.join(&ticket, third).expect("admitted");
        owner.remove(third).expect("removed");
        let v4 = owner.signed_roster().expect("roster");
        assert_eq!(joiner.offer(&v4), Ok(true));
        assert!(!joiner.is_member(&third));
        assert_eq!(joiner.removed(), vec![third]);
        assert_eq!(joiner.offer(&v2), Err(Refusal::Stale));
        assert!(!joiner.is_member(&third));
        // Only the owner's node admits, invites and removes.
        assert_eq!(joiner.join(&ticket, peer()).err(), Some(Refusal::NotOwner));
        assert_eq!(joiner.invite(Duration::from_secs(60), Vec::new()).err(), Some(Refusal::NotOwner));
        assert_eq!(joiner.remove(third), Err(Refusal::NotOwner));
        // The roster survives a restart; the token is not needed any more.
        drop(joiner);
        let again = Membership::load(jd.path(), "lab", me, Setup { join: Some(token), ..Setup::default() }, Metrics::default())
            .expect("loads");
        assert_eq!(again.status().roster_version, Some(4));
    }

    #[test]
    fn a_roster_of_another_owner_is_refused_and_counted_apart() {
        let (ad, bd) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        let (a, _) = owner_node(ad.path());
        let (b, _) = owner_node(bd.path());
        assert_eq!(a.offer(&b.signed_roster().expect("roster")), Err(Refusal::WrongOwner));
        let open = Membership::open("lab", peer());
        assert!(open.is_member(&peer()));
        assert_eq!(open.offer(&a.signed_roster().expect("roster")), Err(Refusal::Open));
    }

    #[test]
    fn a_fresh_node_with_only_bootstrap_peers_is_told_to_join() {
        let dir = tempfile::tempdir().expect("tempdir");
        let boot: Multiaddr = format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", peer()).parse().expect("addr");
        let setup = Setup { bootstrap: vec![boot], ..Setup::default() };
        let err = Membership::load(dir.path(), "lab", peer(), setup, Metrics::default()).expect_err("refused");
        assert!(matches!(err, TrustError::BootstrapWithoutJoin), "{err}");
        assert!(err.to_string().contains("--join"), "{err}");
        assert!(!dir.path().join(OWNER_KEY_FILE).exists(), "no mesh created by mistake");
    }

    #[test]
    fn a_data_dir_from_before_closed_meshes_stays_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(identity::KEY_FILE), b"key").expect("write");
        mark_open_if_legacy(dir.path());
        let m = Membership::load(dir.path(), "lab", peer(), Setup::default(), Metrics::default()).expect("loads");
        assert!(m.is_open() && m.is_member(&peer()));
        // Given an owner key, it closes the mesh with itself as the first member.
        let me = peer();
        let setup = Setup { owner_key: Some(dir.path().join("owner.key")), ..Setup::default() };
        let closed = Membership::load(dir.path(), "lab", me, setup, Metrics::default()).expect("loads");
        assert!(!closed.is_open() && closed.is_member(&me) && !closed.is_member(&peer()));
        assert!(!dir.path().join(OPEN_MARKER).exists());
    }
}
