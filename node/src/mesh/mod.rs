//! The mesh driver: runs `proto::mesh` over the overlay and the store.
//!
//! One task owns the [`Reconciler`], which reads this node's sealed windows' summaries
//! and streams' sums from the store (none are kept in memory). It feeds the reconciler
//! gossip, responses and ticks, carries out what it asks (requests through the overlay,
//! repaired windows into the store, provenance merges, blame), answers peers' repair
//! requests from the store, and announces windows the store sealed. `docs/protocol.md` ("Mesh") describes the protocol.

pub mod announced;
pub mod metrics;
pub mod overlay;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use telemesh_proto::mesh::announce::{self as schedule, Announcer};
use telemesh_proto::mesh::message::{self, Announce, IndexPart, Row, MAX_ANNOUNCE};
use telemesh_proto::mesh::statement::Statement;
use telemesh_proto::mesh::{
    self, serve, Action, Held, Holdings, Members, RecordKey, Reconciler, Repaired, Request, Response, StreamDigest, Summary,
    Table, WindowId,
};
use telemesh_proto::record::StreamId;
use telemesh_proto::repair::{CacheConfig, EncoderCache};
use telemesh_proto::window::{self, Root};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::announced::Announced;
pub use self::metrics::Metrics;
use self::metrics::{BytesLabel, ReasonLabel};
use crate::shared::{now_ns, Shared};
use self::overlay::{Client, Event};
use crate::store::{self, Store, StoredRecord};
use crate::trust::identity;

/// How often the driver ticks: announcements go out, the reconciler's timers run.
pub const TICK: Duration = Duration::from_millis(250);
/// How often windows waiting for their coordinator's announcement are checked.
const ANNOUNCE_CHECK: Duration = Duration::from_millis(50);
/// How long a peer that keeps sending bad data is refused.
pub const BAN: Duration = Duration::from_secs(600);
/// Windows announced with their compact index per tick at most: each costs a read of its
/// blob. Newly sealed windows beyond it wait for the next tick (up to
/// [`INDEX_BACKLOG`]); the announcement of everything held at start goes without.
const INDEXED_PER_TICK: usize = 1024;
/// Newly sealed windows waiting for their indexed announcement at most (16 ticks, 4 s);
/// those beyond it are announced without their index.
const INDEX_BACKLOG: usize = 16 * INDEXED_PER_TICK;
/// Windows remembered per peer for `/v1/peers` (in sync, behind, ahead).
const PEER_WINDOWS: usize = 100_000;
/// How a peer's copy of a window compares with this node's (`/v1/peers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compared {
    InSync,
    /// We hold more records of it.
    Behind,
    /// As many records, another set.
    Differing,
    /// The peer holds more, or we hold none.
    Ahead,
}

impl Compared {
    fn of(mine: Option<&Summary>, root: &Root, count: u32) -> Compared {
        match mine {
            Some(m) if m.root == *root => Compared::InSync,
            Some(m) if m.count > count => Compared::Behind,
            Some(m) if m.count == count => Compared::Differing,
            _ => Compared::Ahead,
        }
    }
}

/// What the mesh answers from: the store (sealed windows' summaries and streams' sums,
/// read when asked: nothing of them is kept in memory), records not yet in the store, and
/// roots announced lately that the store has replaced.
///
/// A view lives for one event; the summaries it reads are kept for that event (at most
/// [`VIEW_MEMO`]), so the peer comparison and the reconciler, looking at the same announced
/// windows, read each from the store once.
struct View<'a> {
    store: &'a dyn Store,
    shared: &'a Shared,
    announced: &'a Announced,
    read: RefCell<HashMap<WindowId, Option<Summary>>>,
}

/// Summaries a [`View`] keeps for its event at most (an announcement names up to
/// [`MAX_ANNOUNCE`] windows).
const VIEW_MEMO: usize = 4 * MAX_ANNOUNCE;

/// `result`'s value, or (logged) the default: the mesh answers what it can read.
fn or_logged<T: Default>(result: Result<T, store::StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "cannot read {what}");
        T::default()
    })
}

impl Holdings for View<'_> {
    fn summary(&self, window: WindowId) -> Option<Summary> {
        if let Some(known) = self.read.borrow().get(&window) {
            return *known;
        }
        let summary = or_logged(self.store.summary(window), "a window's summary");
        let mut read = self.read.borrow_mut();
        if read.len() < VIEW_MEMO {
            read.insert(window, summary);
        }
        summary
    }
    fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
        or_logged(self.store.stream_sum(stream), "a stream's sum").map(|sum| sum.digest(stream))
    }
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Vec<StreamDigest> {
        let sums = or_logged(self.store.stream_sums(after, limit), "streams' sums");
        sums.into_iter().map(|(stream, sum)| sum.digest(stream)).collect()
    }
    fn windows(&self, stream: StreamId, after: Option<u64>, limit: usize) -> Vec<Summary> {
        let from = after.map_or(Some(0), |a| a.checked_add(1));
        from.map_or_else(Vec::new, |from| or_logged(self.store.summaries_of(stream, from, limit), "a stream's summaries"))
    }
    /// Every record of the window this node holds: stored, and still in memory (a window
    /// a peer has sealed may still be open here).
    fn records(&self, window: WindowId) -> Vec<telemesh_proto::Record> {
        let pending = match self.shared.unflushed_of(&window.stream) {
            Ok(pending) => pending,
            Err(e) => {
                tracing::warn!(error = %e, %window, "cannot read a window's live records to repair it");
                return Vec::new();
            }
        };
        let in_memory = pending.into_iter().filter(|r| r.window() == window.start).map(|r| r.record);
        match self.store.window(window.stream, window.start) {
            Ok(recs) => recs.into_iter().map(|r| r.record).chain(in_memory).collect(),
            Err(e) => {
                tracing::warn!(error = %e, %window, "cannot read a window to repair it");
                Vec::new()
            }
        }
    }
    fn held(&self, window: WindowId, root: &Root) -> Option<Held> {
        let stored = || {
            let sealed = self.store.sealed(window.stream, window.start).ok().flatten()?;
            (sealed.root == *root).then(|| Held { blob: Arc::new(sealed.blob), table: sealed.table })
        };
        // The store first: its provenance table is the current one.
        stored().or_else(|| self.announced.get(root))
    }
    fn statements(&self, window: WindowId) -> Vec<(String, Statement)> {
        self.store.statements(window).unwrap_or_else(|e| {
            tracing::warn!(error = %e, %window, "cannot read a window's statements");
            Vec::new()
        })
    }
}

fn row_kind(row: &Row) -> &'static str {
    match row {
        Row::None => "none",
        Row::All => "all",
        Row::Bits(_) => "bits",
        Row::Missing(_) => "missing",
    }
}

fn names(table: &Table) -> Vec<&str> {
    table.nodes.iter().map(|(n, _)| n.get(n.len().saturating_sub(6)..).unwrap_or(n)).collect()
}

/// What a request was for, for byte accounting.
fn kind(request: &Request) -> &'static str {
    match request {
        Request::Index { .. } | Request::Symbols { .. } => "repair",
        Request::Streams { .. } | Request::Windows { .. } => "sync",
        Request::Provenance { .. } => "provenance",
        Request::Offer(_) => "offer",
        Request::Statements { .. } => "statements",
    }
}

/// One peer, as `/v1/peers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub peer_id: String,
    pub addrs: Vec<String>,
    pub connected_seconds: u64,
    /// Windows it announced with the root we hold.
    pub in_sync: usize,
    /// Windows where its root holds fewer records than ours.
    pub behind: usize,
    /// Windows where its root holds more records than ours (or we hold none).
    pub ahead: usize,
    /// Windows with as many records as ours but a different root.
    pub differing: usize,
}

/// The mesh as the API shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub peer_id: String,
    pub mesh: String,
    pub listen: Vec<String>,
    pub peers: Vec<PeerStatus>,
    pub windows: usize,
    /// Windows where some peer holds a root we lack, and repairs running.
    pub wanted: usize,
    pub repairing: usize,
    pub stats: StatsView,
}

/// The reconciler's counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsView {
    pub windows_repaired: u64,
    pub records_repaired: u64,
    pub symbols_received: u64,
    pub symbols_used: u64,
    pub decode_failures: u64,
    pub verification_failures: u64,
    pub repair_bytes_in: u64,
    pub repair_bytes_out: u64,
}

/// Mesh settings of a node.
#[derive(Debug, Clone)]
pub struct Config {
    pub overlay: overlay::Config,
    pub reconcile: mesh::Config,
    /// Coordinators per window in a closed mesh; 0: everyone announces to everyone.
    pub coordinators: usize,
}

/// Starts the overlay and the driver; returns the driver's task and a client of the
/// overlay. `status` is kept up to date.
pub fn start(
    config: Config,
    keypair: libp2p::identity::Keypair,
    shared: Arc<Shared>,
    status: Arc<Mutex<Status>>,
    membership: Arc<crate::trust::Membership>,
    shutdown: CancellationToken,
) -> anyhow::Result<(tokio::task::JoinHandle<()>, Client)> {
    // An announcement is accepted (and forwarded) only if well-formed and, if signed,
    // signed by its author's own key (`docs/protocol.md`, "Statements").
    let validate: overlay::Validator = Arc::new(|author: &PeerId, bytes: &[u8]| {
        message::decode::<Announce>(bytes).is_ok_and(|a| a.check() && (!a.signed() || a.verify(|m, sig| identity::verify(author, m, sig))))
    });
    let mesh_name = config.overlay.mesh.clone();
    let external = config.overlay.external.clone();
    let roster = membership.subscribe();
    let signer = keypair.clone();
    let (client, events) = overlay::start(config.overlay, keypair, validate, Arc::clone(&membership), shutdown.clone())?;
    let mut driver = Driver {
        shared,
        client: client.clone(),
        keypair: signer,
        reconciler: Reconciler::new(config.reconcile),
        encoders: EncoderCache::new(CacheConfig::default()),
        announcer: Announcer::new(None, u64::try_from(TICK.as_nanos()).unwrap_or(u64::MAX)),
        coordinators: config.coordinators,
        members: Members::default(),
        membership,
        roster,
        fallback: BTreeSet::new(),
        unoffered_tx: None,
        announce_bare: BTreeSet::new(),
        announced: Announced::default(),
        peer_windows: BTreeMap::new(),
        pending_rows: PendingRows::default(),
        status,
        mesh_name,
        external,
        last_stats: mesh::Stats::default(),
        last_traffic: overlay::Traffic::default(),
    };
    driver.refresh_members();
    Ok((tokio::spawn(driver.run(events, shutdown)), client))
}

struct Driver {
    shared: Arc<Shared>,
    client: Client,
    /// Signs this node's announcements and offers.
    keypair: libp2p::identity::Keypair,
    reconciler: Reconciler<PeerId>,
    encoders: EncoderCache,
    /// Windows sealed with new records or receipts, to announce with their index, or to
    /// offer to their coordinators (`docs/protocol.md`, "Coordinators").
    announcer: Announcer,
    /// Coordinators per window when the mesh is closed (0: none).
    coordinators: usize,
    /// The closed mesh's members (empty in an open mesh, or before admission).
    members: Members,
    membership: Arc<crate::trust::Membership>,
    /// Wakes when the roster changes.
    roster: tokio::sync::watch::Receiver<u64>,
    /// Windows whose offer a coordinator did not take (down, unreachable): announced to
    /// everyone with their index at the next tick, as without coordinators.
    fallback: BTreeSet<WindowId>,
    /// Where offer tasks report the windows of a failed offer.
    unoffered_tx: Option<mpsc::Sender<Vec<WindowId>>>,
    /// Windows announced without an index (beyond the backlog of indexed ones).
    announce_bare: BTreeSet<WindowId>,
    /// Blobs of roots announced lately, served after the store replaced them.
    announced: Announced,
    /// What each peer last announced of each window, (root, count), and how it compares
    /// with ours: at most [`PEER_WINDOWS`] a peer.
    peer_windows: PeerWindows,
    /// Provenance rows over windows this node holds only live (not sealed yet), merged
    /// when they are sealed; at most [`PENDING_ROW_KEYS`] record keys in all.
    pending_rows: PendingRows,
    status: Arc<Mutex<Status>>,
    mesh_name: String,
    /// The addresses peers are told to dial, when given (`--external-address`).
    external: Vec<Multiaddr>,
    last_stats: mesh::Stats,
    last_traffic: overlay::Traffic,
}

/// Per peer, what it last announced of each window: (root, count) and how that compares
/// with ours.
type PeerWindows = BTreeMap<PeerId, BTreeMap<WindowId, (Root, u32, Compared)>>;

/// Notes what `peer` says it holds of `windows`, compared with ours (read through `view`).
fn note_peer_windows(peers: &mut PeerWindows, peer: PeerId, windows: &[Summary], view: &View<'_>) {
    let map = peers.entry(peer).or_default();
    for s in windows {
        if map.len() < PEER_WINDOWS || map.contains_key(&s.window) {
            let compared = Compared::of(view.summary(s.window).as_ref(), &s.root, s.count);
            map.insert(s.window, (s.root, s.count, compared));
        }
    }
}

type Answer = (mesh::RequestId, PeerId, &'static str, Option<Vec<u8>>);

/// Record keys that [`PendingRows`] holds at most (24 bytes each: 24 MiB).
const PENDING_ROW_KEYS: usize = 1 << 20;

/// How long rows wait for the records they are over.
const PENDING_ROW_NS: u64 = 60_000_000_000;

/// Rows over records this node holds only live yet: the window is not sealed here, or was
/// sealed (by a repair) before this node's own records of it were.
#[derive(Debug, Default)]
struct PendingRows {
    rows: BTreeMap<WindowId, Vec<PendingRow>>,
    keys: usize,
}

#[derive(Debug)]
struct PendingRow {
    /// The sealed root the rows missed records of (`None`: nothing sealed).
    root: Option<Root>,
    since_ns: u64,
    keys: Vec<RecordKey>,
    table: Table,
}

impl PendingRows {
    /// Keeps rows for the window's next seal; false if over the bound (they are dropped).
    fn keep(&mut self, window: WindowId, row: PendingRow) -> bool {
        if self.keys + row.keys.len() > PENDING_ROW_KEYS {
            return false;
        }
        self.keys += row.keys.len();
        self.rows.entry(window).or_default().push(row);
        true
    }

    /// The rows kept for `window` while its sealed root was other than `root`.
    fn take(&mut self, window: WindowId, root: Option<Root>) -> Vec<PendingRow> {
        let Some(all) = self.rows.get_mut(&window) else { return Vec::new() };
        let (taken, left): (Vec<_>, Vec<_>) = std::mem::take(all).into_iter().partition(|r| r.root != root);
        *all = left;
        if all.is_empty() {
            self.rows.remove(&window);
        }
        self.keys -= taken.iter().map(|r| r.keys.len()).sum::<usize>();
        taken
    }

    /// Drops rows older than [`PENDING_ROW_NS`]; returns how many tables' nodes were dropped.
    fn expire(&mut self, now_ns: u64) -> u64 {
        let mut dropped = 0;
        self.rows.retain(|_, rows| {
            rows.retain(|r| {
                let keep = now_ns.saturating_sub(r.since_ns) < PENDING_ROW_NS;
                if !keep {
                    self.keys -= r.keys.len();
                    dropped += r.table.nodes.len() as u64;
                }
                keep
            });
            !rows.is_empty()
        });
        dropped
    }

}

impl Driver {
    fn metrics(&self) -> &Metrics {
        &self.shared.metrics.mesh
    }

    async fn run(mut self, mut events: mpsc::Receiver<Event>, shutdown: CancellationToken) {
        let (answers_tx, mut answers) = mpsc::channel::<Answer>(4096);
        let (unoffered_tx, mut unoffered) = mpsc::channel::<Vec<WindowId>>(1024);
        self.unoffered_tx = Some(unoffered_tx);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut soon = tokio::time::interval(ANNOUNCE_CHECK);
        soon.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut status_every = 0u32;
        let notify = Arc::clone(&self.shared.sealed);
        loop {
            let mut sealed = false;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = notify.notified() => sealed = true,
                event = events.recv() => match event {
                    Some(e) => self.on_event(e),
                    None => return,
                },
                // An offer a coordinator did not take: those windows go to everyone.
                Some(windows) = unoffered.recv() => {
                    self.metrics().reject("offer_failed", windows.len() as u64);
                    self.fallback.extend(windows);
                }
                Some((id, peer, kind, answer)) = answers.recv() => {
                    let response = answer.and_then(|bytes| {
                        self.metrics().count_bytes(kind, "in", bytes.len());
                        message::decode::<Response>(&bytes).ok()
                    });
                    let view = View::new(&self.shared, &self.announced);
                    if let Some(Response::Windows { windows, .. }) = &response {
                        note_peer_windows(&mut self.peer_windows, peer, windows, &view);
                    }
                    self.reconciler.handle_response(id, response, now_ns(), &view);
                }
                // A coordinator's announcement is due half a tick after the last offer: checked
                // more often than the tick, so it does not wait for the next one.
                _ = soon.tick(), if self.announcer.coordinated() && !self.announcer.is_empty() => {
                    self.publish().await;
                }
                _ = tick.tick() => {
                    self.on_tick().await;
                    status_every += 1;
                    if status_every.is_multiple_of(4) {
                        self.refresh_status().await;
                    }
                }
            }
            // Windows sealed here (by a repair, or by the flush that signalled) join the
            // reconciler's view at once. The flush's seals, which peers wait for, are
            // announced at once; repairs' new roots together at the next tick: one message
            // per tick costs 40 % fewer bytes on the wire than one per repair.
            if self.act(&answers_tx) || sealed {
                self.absorb_seals();
                self.act(&answers_tx);
                if sealed {
                    self.publish().await;
                }
            }
        }
    }

    fn on_event(&mut self, event: Event) {
        let now = now_ns();
        match event {
            Event::Gossip { source, data } => {
                self.metrics().count_gossip("in", data.len());
                let Ok(announce) = message::decode::<Announce>(&data) else { return };
                if !announce.check() {
                    return;
                }
                if tracing::enabled!(tracing::Level::DEBUG) {
                    for (k, s) in announce.windows.iter().enumerate() {
                        let row = announce.rows.get(k).map_or("absent", row_kind);
                        tracing::debug!(author = %source, window = %s.window, root = hex::encode(&s.root[..4]), row, "announced");
                    }
                }
                self.take_announce(source, &announce, now);
            }
            Event::Request { peer, data, reply } => {
                let response = match message::decode::<Request>(&data) {
                    Ok(Request::Offer(announce)) => {
                        self.metrics().count_bytes("offer", "in", data.len());
                        let response = if !announce.check() {
                            Response::Refused
                        } else if announce.signed() && !announce.verify(|m, sig| identity::verify(&peer, m, sig)) {
                            // Offers come over a connection authenticated as `peer`: a
                            // signature that fails is a member's forgery, or a bug.
                            tracing::warn!(%peer, "offer with a signature that does not verify, refused");
                            self.metrics().reject("bad_signature", 1);
                            self.reconciler.blame(&peer, mesh::Blame::BadSignature);
                            Response::Refused
                        } else {
                            self.take_announce(peer, &announce, now);
                            Response::Accepted
                        };
                        let bytes = message::encode(&response);
                        self.metrics().count_bytes("offer", "out", bytes.len());
                        bytes
                    }
                    Ok(request) => {
                        let kind = kind(&request);
                        self.metrics().count_bytes(kind, "in", data.len());
                        let view = View::new(&self.shared, &self.announced);
                        let response = serve::respond(&request, &view, &mut self.encoders);
                        if let (Request::Symbols { window, root, .. }, Response::Symbols { data }) = (&request, &response) {
                            let slot = view.slot_size(*window, root).unwrap_or(0);
                            let n = data.len() / (telemesh_proto::repair::HEADER_LEN + slot).max(1);
                            self.metrics().symbols_sent.inc_by(n as u64);
                        }
                        let bytes = message::encode(&response);
                        self.metrics().count_bytes(kind, "out", bytes.len());
                        bytes
                    }
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "undecodable repair request");
                        message::encode(&Response::Refused)
                    }
                };
                let _ = reply.send(response);
            }
            Event::PeerUp(peer) => {
                tracing::info!(%peer, "peer connected");
                self.metrics().peer_joins.inc();
                self.reconciler.peer_up(peer, now);
            }
            Event::PeerDown(peer) => {
                tracing::info!(%peer, "peer disconnected");
                self.metrics().peer_leaves.inc();
                self.reconciler.peer_down(&peer);
                self.peer_windows.remove(&peer);
            }
        }
    }

    /// An announcement `author` gossiped or offered us: the reconciler repairs what it names
    /// and merges its rows; the announcer learns what the window's coordinators said.
    fn take_announce(&mut self, author: PeerId, announce: &Announce, now: u64) {
        let view = View::new(&self.shared, &self.announced);
        note_peer_windows(&mut self.peer_windows, author, &announce.windows, &view);
        let name = author.to_string();
        self.keep_statements(&name, announce);
        let me = self.shared.store.node_id().to_owned();
        for s in &announce.windows {
            self.announcer.told(&self.members, &me, &name, s, now);
        }
        self.reconciler.handle_gossip(author, &name, announce, now, &view);
    }

    /// Keeps the statements of a signed (and checked) announcement by `author`: what its
    /// rows back when someone asks for proof (`docs/protocol.md`, "Statements").
    fn keep_statements(&self, author: &str, announce: &Announce) {
        let statements = Statement::all_of(announce);
        if statements.is_empty() {
            return;
        }
        if let Err(e) = self.shared.store.keep_statements(author, &statements) {
            tracing::warn!(error = %e, "cannot keep signed statements");
        }
    }

    /// Signs an announcement or offer of this node's, and keeps its statements.
    fn sign(&self, announce: &mut Announce) {
        announce.sign(|bytes| self.keypair.sign(bytes).unwrap_or_default());
        self.keep_statements(self.shared.store.node_id(), announce);
    }

    /// Follows the roster: in a closed mesh this node is a member of, with more members
    /// than coordinators per window, windows are announced through coordinators; otherwise
    /// to everyone (with every member a coordinator of every window, offers would only
    /// add a hop).
    fn refresh_members(&mut self) {
        self.roster.borrow_and_update();
        let names: Vec<String> = self.membership.members().into_iter().map(|m| m.peer_id).collect();
        let me = self.shared.store.node_id();
        let coordinated = self.coordinators > 0
            && names.len() > self.coordinators
            && !self.membership.is_open()
            && names.iter().any(|n| n == me);
        self.members = Members::new(if coordinated { names } else { Vec::new() });
        self.reconciler.set_members(self.members.clone(), me);
        self.announcer.set_coordinators(coordinated.then_some(self.coordinators));
    }
    /// New seals from the store, then the reconciler's timers, then announcements.
    async fn on_tick(&mut self) {
        let expired = self.pending_rows.expire(now_ns());
        if expired > 0 {
            self.metrics().reject("rows_stale", expired);
        }
        self.absorb_seals();
        {
            let view = View::new(&self.shared, &self.announced);
            self.reconciler.tick(now_ns(), &view);
        }
        self.publish().await;
    }

    /// Reads the summaries of windows the store sealed since the last call, tells the
    /// reconciler, and queues them for announcement.
    fn absorb_seals(&mut self) {
        let store = Arc::clone(&self.shared.store);
        let (changed, overflowed) = store.take_changed();
        let now = now_ns();
        if overflowed {
            // Peers find the windows not listed through the summary exchange.
            tracing::info!(listed = changed.len(), "more windows changed at once than the store lists; the rest go unannounced");
        }
        for (w, change) in changed {
            let summary = match store.summary(w) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, %w, "cannot read a window's summary");
                    continue;
                }
            };
            // Rows that waited for this seal; merging them is a change the next call reads.
            for r in self.pending_rows.take(w, summary.map(|s| s.root)) {
                self.add_rows(w, r.keys, r.table, false);
            }
            let Some(s) = summary else { continue };
            for map in self.peer_windows.values_mut() {
                if let Some((root, count, compared)) = map.get_mut(&w) {
                    *compared = Compared::of(Some(&s), root, *count);
                }
            }
            // The store lists a window only if its summary changed. To everyone: new
            // records, or new receipts of this node's, are announced with this node's row;
            // rows of other nodes merged here are not: their authors announced them
            // (`docs/protocol.md`, "Provenance tables"). With coordinators: this node's
            // receipts are offered to them, and a coordinator announces every change
            // (`docs/protocol.md`, "Coordinators").
            if self.announcer.coordinated() {
                self.announcer.changed(w, change.receipts, now);
            } else if change.own {
                self.announcer.changed(w, true, now);
            }
            let view = View::new(&self.shared, &self.announced);
            self.reconciler.handle_local(w, &view, now);
        }
    }

    /// Announces (or offers to their coordinators) the windows the announcer says are due,
    /// with their compact indexes — at most [`INDEXED_PER_TICK`] a tick, the rest waiting
    /// for the next (up to [`INDEX_BACKLOG`]), and only while a peer is connected — and
    /// those in `announce_bare` to everyone without, keeping the blob of each root
    /// announced with its index in `announced`.
    async fn publish(&mut self) {
        let now = now_ns();
        self.announced.expire(now);
        if self.roster.has_changed().unwrap_or(false) {
            self.refresh_members();
        }
        let peers = self.metrics().peers.get() > 0;
        let mut sends = Vec::new();
        if peers {
            let me = self.shared.store.node_id().to_owned();
            let view = View::new(&self.shared, &self.announced);
            let reconciler = &self.reconciler;
            sends = self.announcer.due(&self.members, &me, now, |w| view.summary(w), |w| reconciler.wants(w));
            if sends.len() > INDEXED_PER_TICK {
                for late in sends.split_off(INDEXED_PER_TICK) {
                    self.announcer.defer(&late, now);
                }
            }
            self.announce_bare.extend(self.announcer.take_over(INDEX_BACKLOG));
        } else {
            // Nobody hears it now; the summary exchange tells peers when they come.
            self.announce_bare.extend(self.announcer.take_over(0));
        }
        if peers {
            let fallback = std::mem::take(&mut self.fallback);
            // Signed: no coordinator kept them.
            sends.extend(fallback.into_iter().map(|window| schedule::Send { window, offer: Vec::new(), publish: true, sign: true }));
        }
        // What is signed (`docs/protocol.md`, "Statements"): offers to the first coordinator
        // a window is offered to, which keeps the statement, and announcements that carry
        // receipts of ours no offer carried (`Send::sign`).
        let coordinated = self.announcer.coordinated();
        let (mut signed, mut plain) = (Vec::new(), Vec::new());
        let mut offers: BTreeMap<PeerId, (Vec<message::Announced>, bool)> = BTreeMap::new();
        for send in &sends {
            self.announce_bare.remove(&send.window);
            let Some(s) = View::new(&self.shared, &self.announced).summary(send.window) else { continue };
            let Some((index, row, table)) = self.index_of(&s, now) else { continue };
            let item = message::Announced { summary: s, index: Some(index), row, others: Vec::new() };
            for (k, m) in send.offer.iter().enumerate() {
                let Some(peer) = self.members.name(*m).and_then(|n| n.parse::<PeerId>().ok()) else { continue };
                let (list, keeps) = offers.entry(peer).or_default();
                list.push(item.clone());
                *keeps |= k == 0;
            }
            if send.publish {
                let me = self.shared.store.node_id();
                let count = s.count as usize;
                let others = match coordinated {
                    true => self.members.others(&table, me, count),
                    false => Vec::new(),
                };
                tracing::debug!(window = %s.window, root = hex::encode(&s.root[..4]), row = row_kind(&item.row), others = others.len(), "announce");
                let to = if send.sign { &mut signed } else { &mut plain };
                to.push(message::Announced { others, ..item });
            }
        }
        for w in std::mem::take(&mut self.announce_bare) {
            let Some(s) = View::new(&self.shared, &self.announced).summary(w) else { continue };
            plain.push(message::Announced { summary: s, index: None, row: Row::None, others: Vec::new() });
        }
        let digest = self.members.digest();
        let chunks = signed.chunks(MAX_ANNOUNCE).map(|c| (c, true)).chain(plain.chunks(MAX_ANNOUNCE).map(|c| (c, false)));
        for (chunk, sign) in chunks {
            let messages = message::pack_announces(chunk, digest).into_iter().map(|mut a| {
                if sign {
                    self.sign(&mut a);
                }
                message::encode(&a)
            });
            for bytes in messages.collect::<Vec<_>>() {
                let len = bytes.len();
                match self.client.publish(bytes).await {
                    Ok(true) => self.metrics().count_gossip("out", len),
                    // No peer subscribed yet: the summary exchange tells them later.
                    Ok(false) => {}
                    Err(e) => tracing::debug!(error = %e, "cannot publish an announcement"),
                }
            }
        }
        for (peer, (list, keeps)) in offers {
            tracing::debug!(%peer, windows = list.len(), "offer");
            for mut announce in message::pack_announces(&list, digest) {
                if keeps {
                    self.sign(&mut announce);
                }
                let windows: Vec<WindowId> = announce.windows.iter().map(|s| s.window).collect();
                let bytes = message::encode(&Request::Offer(announce));
                self.metrics().count_bytes("offer", "out", bytes.len());
                let client = self.client.clone();
                let shared = Arc::clone(&self.shared);
                let unoffered = self.unoffered_tx.clone();
                tokio::spawn(async move {
                    let taken = match client.request(peer, bytes).await {
                        Ok(answer) => {
                            shared.metrics.mesh.count_bytes("offer", "in", answer.len());
                            message::decode::<Response>(&answer).is_ok_and(|r| r == Response::Accepted)
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "offer failed");
                            false
                        }
                    };
                    if let (false, Some(tx)) = (taken, unoffered) {
                        let _ = tx.try_send(windows);
                    }
                });
            }
        }
    }

    /// The compact index of the sealed window `s` describes and this node's row of its
    /// provenance table, its blob kept servable in `announced`; `None` if the store has
    /// moved on from that root or cannot be read.
    fn index_of(&mut self, s: &Summary, now: u64) -> Option<(IndexPart, Row, Table)> {
        let sealed = match self.shared.store.sealed(s.window.stream, s.window.start) {
            Ok(sealed) => sealed.filter(|x| x.root == s.root)?,
            Err(e) => {
                tracing::warn!(error = %e, window = %s.window, "cannot read a window to announce its index");
                return None;
            }
        };
        let (header, entries) = window::index(&sealed.blob).ok()?;
        let part = IndexPart::compact(&header, &entries);
        let me = self.shared.store.node_id();
        let row = Row::of(sealed.table.nodes.iter().find(|(n, _)| n == me).map(|(_, b)| b.as_slice()), entries.len());
        let table = sealed.table.clone();
        self.announced.insert(s.root, Held { blob: Arc::new(sealed.blob), table: sealed.table }, now);
        Some((part, row, table))
    }

    /// Carries out what the reconciler asks. Returns whether windows were stored.
    fn act(&mut self, answers: &mpsc::Sender<Answer>) -> bool {
        let mut repaired = Vec::new();
        let mut rows = Vec::new();
        while let Some(action) = self.reconciler.poll() {
            match action {
                Action::Send { id, peer, request } => {
                    if let Request::Provenance { root, .. } = &request {
                        tracing::debug!(%peer, root = hex::encode(&root[..4]), "provenance pull");
                    }
                    let bytes = message::encode(&request);
                    let kind = kind(&request);
                    self.metrics().count_bytes(kind, "out", bytes.len());
                    let client = self.client.clone();
                    let answers = answers.clone();
                    tokio::spawn(async move {
                        let answer = client.request(peer, bytes).await.map_err(|e| tracing::debug!(%peer, error = %e, "repair request failed")).ok();
                        let _ = answers.send((id, peer, kind, answer)).await;
                    });
                }
                Action::Store(r) => repaired.push(r),
                Action::Provenance { window, root, table } => match self.shared.store.add_provenance(window, &root, &table) {
                    Ok(Some(_)) => {
                        tracing::debug!(%window, nodes = ?names(&table), "provenance merged");
                    }
                    // The window changed since (a seal of late records): its rows wait for
                    // the next announcement or the summary exchange.
                    Ok(None) => self.metrics().reject("rows_stale", table.nodes.len() as u64),
                    Err(e) => tracing::warn!(error = %e, %window, "cannot merge provenance"),
                },
                // Over records that may come with a repair in this batch: merged after it.
                Action::Rows { window, keys, table } => rows.push((window, keys, table)),
                Action::Blame { peer, reason, disconnect } => {
                    tracing::warn!(%peer, reason = reason.name(), disconnect, "peer sent data that failed verification");
                    self.metrics().blames.get_or_create(&ReasonLabel { reason: reason.name() }).inc();
                    if disconnect {
                        self.reconciler.peer_down(&peer);
                        let client = self.client.clone();
                        tokio::spawn(async move { client.disconnect(peer, BAN).await });
                    }
                }
            }
        }
        let stored = !repaired.is_empty();
        self.store_repaired(repaired);
        for (window, keys, table) in rows {
            self.add_rows(window, keys, table, true);
        }
        self.mirror_stats();
        stored
    }

    /// Merges rows over `keys` into the sealed window. Rows over records held only live
    /// (the window is not sealed, or was sealed by a repair before this node's own records
    /// of it) wait for its next seal (`keep`), once.
    fn add_rows(&mut self, window: WindowId, keys: Vec<RecordKey>, table: Table, keep: bool) {
        let root = match self.shared.store.add_rows(window, &keys, &table) {
            Ok(Some((summary, skipped))) => {
                tracing::debug!(%window, nodes = ?names(&table), keys = keys.len(), skipped, "rows merged");
                if skipped == 0 {
                    return;
                }
                Some(summary.root)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, %window, "cannot merge provenance");
                return;
            }
        };
        let n = table.nodes.len() as u64;
        let row = PendingRow { root, since_ns: now_ns(), keys, table };
        if !(keep && self.pending_rows.keep(window, row)) && root.is_none() {
            self.metrics().reject("rows_stale", n);
        }
    }

    /// Keeps what this node lacks of repaired windows and seals them together, with one
    /// sync (sealing gives the new records their extended seqs).
    fn store_repaired(&mut self, repaired: Vec<Repaired>) {
        if repaired.is_empty() {
            return;
        }
        let store = self.shared.store.as_ref();
        let mut conflicts = 0u64;
        let result = (|| {
            let mut new: Vec<(WindowId, Vec<StoredRecord>)> = Vec::with_capacity(repaired.len());
            for r in &repaired {
                let held: BTreeSet<(u64, u64, [u8; 8])> =
                    store.window(r.window.stream, r.window.start)?.iter().map(StoredRecord::order_key).collect();
                let records: Vec<StoredRecord> =
                    r.records.iter().map(|x| StoredRecord::repaired(x.clone(), 0)).filter(|x| !held.contains(&x.order_key())).collect();
                // Another version of a record held here: both are kept (two devices with one
                // id, or a spoofer); worth a line in the log.
                let identities: BTreeSet<(u64, u64)> = held.iter().map(|(t, s, _)| (*t, *s)).collect();
                let versions = records.iter().filter(|x| identities.contains(&(x.record.device_time_ns, x.record.seq))).count();
                if versions > 0 {
                    tracing::info!(window = %r.window, records = versions, "peers hold other versions of records held here; both kept");
                    conflicts += versions as u64;
                }
                new.push((r.window, records));
            }
            let sealing: Vec<store::Sealing<'_>> =
                new.iter().map(|(w, live)| store::Sealing { stream: w.stream, window_start: w.start, live }).collect();
            store.seal_windows(&sealing)?;
            store.flush()?;
            Ok::<_, store::StoreError>(new.iter().map(|(_, l)| l.len()).sum::<usize>())
        })();
        match result {
            Ok(n) => {
                self.metrics().conflicts_repaired.inc_by(conflicts);
                let now = now_ns();
                for r in &repaired {
                    self.metrics().repair_seconds.observe(now.saturating_sub(r.announced_ns) as f64 / 1e9);
                }
                tracing::debug!(windows = repaired.len(), records = n, "windows repaired");
            }
            Err(e) => tracing::warn!(error = %e, windows = repaired.len(), "cannot store repaired windows"),
        }
    }

    /// Adds the reconciler's counters since the last call to the metrics.
    fn mirror_stats(&mut self) {
        let s = self.reconciler.stats().clone();
        let l = &self.last_stats;
        let m = &self.shared.metrics.mesh;
        m.symbols_received.inc_by(s.symbols_received - l.symbols_received);
        m.symbols_used.inc_by(s.symbols_used - l.symbols_used);
        m.decode_failures.inc_by(s.decode_failures - l.decode_failures);
        m.verification_failures.inc_by(s.verification_failures - l.verification_failures);
        m.windows_repaired.inc_by(s.windows_repaired - l.windows_repaired);
        m.records_repaired.inc_by(s.records_repaired - l.records_repaired);
        m.windows_from_gossip.inc_by(s.windows_from_gossip - l.windows_from_gossip);
        m.reject("announcement_ignored", s.announcements_ignored - l.announcements_ignored);
        m.reject("index_refused", s.indexes_refused - l.indexes_refused);
        m.reject("session_abandoned", s.sessions_abandoned - l.sessions_abandoned);
        m.reject("request_failed", s.request_failures - l.request_failures);
        m.reject("symbol_rejected", s.symbols_rejected - l.symbols_rejected);
        m.reject("rows_lost", s.rows_lost - l.rows_lost);
        m.reject("new_stream_deferred", s.new_streams_deferred - l.new_streams_deferred);
        let t = self.client.traffic();
        let lt = &self.last_traffic;
        m.reject("gossip_rejected", t.gossip_rejected - lt.gossip_rejected);
        m.reject("busy", t.inbound_rejected_busy - lt.inbound_rejected_busy);
        m.reject("events_dropped", t.events_dropped - lt.events_dropped);
        self.last_traffic = t;
        self.last_stats = s;
    }

    async fn refresh_status(&mut self) {
        let peers = self.client.peers().await;
        let listen = if self.external.is_empty() { self.client.listen_addrs().await } else { self.external.clone() };
        let me = self.client.local_peer_id();
        let (wanted, repairing) = self.reconciler.backlog();
        let (windows, _) = self.shared.store.sealed_totals();
        let m = &self.shared.metrics.mesh;
        m.peers.set(peers.len() as i64);
        m.windows.set(i64::try_from(windows).unwrap_or(i64::MAX));
        m.windows_wanted.set(wanted as i64);
        let bytes = |direction| m.bytes.get_or_create(&BytesLabel { kind: "repair", direction }).get();
        let s = self.reconciler.stats();
        let mut out = Status {
            peer_id: me.to_string(),
            mesh: self.mesh_name.clone(),
            listen: listen.iter().map(|a: &Multiaddr| format!("{a}/p2p/{me}")).collect(),
            peers: Vec::new(),
            windows: usize::try_from(windows).unwrap_or(usize::MAX),
            wanted,
            repairing,
            stats: StatsView {
                windows_repaired: s.windows_repaired,
                records_repaired: s.records_repaired,
                symbols_received: s.symbols_received,
                symbols_used: s.symbols_used,
                decode_failures: s.decode_failures,
                verification_failures: s.verification_failures,
                repair_bytes_in: bytes("in"),
                repair_bytes_out: bytes("out"),
            },
        };
        for p in peers {
            let mut ps = PeerStatus {
                peer_id: p.peer.to_string(),
                addrs: p.addrs.iter().map(ToString::to_string).collect(),
                connected_seconds: p.connected_since.elapsed().as_secs(),
                in_sync: 0,
                behind: 0,
                ahead: 0,
                differing: 0,
            };
            for (_, _, compared) in self.peer_windows.get(&p.peer).into_iter().flat_map(BTreeMap::values) {
                match compared {
                    Compared::InSync => ps.in_sync += 1,
                    Compared::Behind => ps.behind += 1,
                    Compared::Differing => ps.differing += 1,
                    Compared::Ahead => ps.ahead += 1,
                }
            }
            out.peers.push(ps);
        }
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = out;
    }
}

impl<'a> View<'a> {
    fn new(shared: &'a Shared, announced: &'a Announced) -> Self {
        View { store: shared.store.as_ref(), shared, announced, read: RefCell::default() }
    }

    /// The slot size of `window` if its root is `root` and we hold it.
    fn slot_size(&self, window: WindowId, root: &Root) -> Option<usize> {
        if let Some(held) = self.announced.get(root) {
            return window::Header::parse(&held.blob).ok().map(|h| usize::from(h.slot_size));
        }
        self.summary(window).filter(|s| s.root == *root).map(|s| usize::from(s.slot_size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::wire::Dialect;

    fn row(root: Option<Root>, since_ns: u64, keys: usize) -> PendingRow {
        let keys = (0..keys as u64).map(|i| (i, i, [0; 8])).collect();
        PendingRow { root, since_ns, keys, table: Table { nodes: vec![("p".to_owned(), vec![1])] } }
    }

    /// A peer that sends rows over records this node will never hold (a flood of them)
    /// fills the waiting room only up to its bound, and what waits is dropped after 60 s.
    #[test]
    fn waiting_rows_are_bounded_and_expire() {
        let w = WindowId { stream: StreamId { dialect: Dialect::Iotstream, device: 1 }, start: 0 };
        let mut pending = PendingRows::default();
        assert!(pending.keep(w, row(None, 0, PENDING_ROW_KEYS - 1)));
        assert!(!pending.keep(w, row(None, 0, 2)), "over the bound");
        assert!(pending.keep(w, row(Some([7; 32]), 10, 1)));
        // A seal with root 7 takes the rows that waited for any seal, not those that
        // missed records of root 7 itself.
        assert_eq!(pending.take(w, Some([7; 32])).len(), 1);
        assert_eq!(pending.keys, 1);
        assert_eq!(pending.expire(10 + PENDING_ROW_NS - 1), 0);
        assert_eq!(pending.expire(10 + PENDING_ROW_NS), 1, "one table's node dropped");
        assert_eq!(pending.keys, 0);
        assert!(pending.rows.is_empty());
    }
}
