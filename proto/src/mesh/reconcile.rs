//! The requester's side of the mesh: learn what peers hold, repair what we lack.
//!
//! [`Reconciler`] is a state machine in the quinn-proto style: the node feeds it
//! announcements, responses and ticks (with the time), and drains [`Action`]s — requests
//! to send, repaired windows to store, provenance to merge, peers to blame. It reads what
//! the node holds through [`Holdings`] and does no I/O of its own.
//!
//! For each window where a peer announced a root we do not hold, we keep a *target*: the
//! root, its summary and every peer that announced it. A *session* repairs one target:
//!
//! 1. **Index.** Ask one holder for the compact index (times and seqs; tags only on
//!    ties). Place our own records by (time, seq); the other slots are erasures.
//! 2. **Symbols.** Ask every holder of the root at once for its share of
//!    `missing + overhead` repair symbols, each from its own ESI band
//!    ([`repair::holder_range`]), so no two holders send the same symbol. A failed
//!    request's share is asked again from the holders left (one that does not answer
//!    stays a holder until [`Config::max_failures`] in a row); a decode that needs more
//!    asks for more.
//! 3. **Verify.** Fill in the tags of rebuilt slots, rebuild the blob and check its root
//!    against the announced one. Only then is anything handed to the node to store.
//!
//! If the root does not check out, the session starts again in *verified* mode with one
//! holder at a time: the index comes as Merkle-proven leaves (BEP 52 style), checked
//! against the root before use, and symbols only from that holder; a holder whose proof
//! or symbols fail is blamed, dropped from the target, and disconnected after repeats.
//!
//! Live gossip is not relied on: every [`Config::sync_interval_ns`] the reconciler
//! compares per-stream digests with one peer (and with each new peer at once), then the
//! window summaries of streams that differ, and treats what it learns like announcements.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use super::message::{self, Entry, Request, Response, Summary};
use super::serve::max_symbols;
use super::{Holdings, RecordKey, Table, WindowId};
use crate::budget::{Bucket, Budget};
use crate::record::{Record, StreamId};
use crate::repair::{self, Decoder, Layout, Symbol};
use crate::window::{self, IndexEntry, Root};

/// Tuning of the reconciler.
#[derive(Debug, Clone)]
pub struct Config {
    /// Windows repaired at once.
    pub max_sessions: usize,
    /// Repair symbols asked beyond the number missing. Each one makes a failed decode
    /// about 100× less likely (`docs/benchmarks.md`, "Decode failure"), but windows
    /// usually miss only a few records, so each also costs a large share of the repair
    /// bytes. The default, 0, lets about 1 decode in 200 ask for one more symbol.
    pub overhead: u32,
    /// Summary exchange with one peer this often (and with each new peer at once).
    pub sync_interval_ns: u64,
    /// A session that makes no progress for this long is dropped and retried.
    pub session_timeout_ns: u64,
    /// Verification failures after which a peer is disconnected.
    pub blame_limit: u32,
    /// How long a peer blamed `blame_limit` times is ignored; then its count starts over.
    pub ban_ns: u64,
    /// Windows with targets remembered at once; more are dropped (and found again by
    /// the next summary exchange).
    pub max_wanted: usize,
    /// Roots remembered as holding nothing we lack.
    pub max_covered: usize,
    /// Summary-exchange requests in flight at once.
    pub max_sync_requests: usize,
    /// Requests in flight to one peer at once; more wait their turn (a peer answers only
    /// so many at once, and refuses the rest).
    pub max_requests_per_peer: usize,
    /// Requests to one holder of a target that may go unanswered in a row (timeout,
    /// disconnect) before the holder is dropped from the target; until then it is asked
    /// again. A holder that answers `NotFound` or a wrong answer is dropped at once.
    pub max_failures: u32,
    /// Bytes of announced compact indexes and provenance rows kept with targets at once;
    /// beyond it a target is kept without its index (and its index is asked for, as
    /// without one) or without the row (the summary exchange brings it later).
    pub max_index_bytes: usize,
    /// Streams this node holds nothing of that one peer may make it want: a rate a second
    /// and a burst. A peer's announcements of more are dropped and counted
    /// ([`Stats::new_streams_deferred`]); the summary exchange finds them again, within the
    /// same budget. Streams the node holds a window of are never limited
    /// (`docs/protocol.md`, "Repair").
    pub new_streams_per_peer: Budget,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_sessions: 32,
            overhead: 0,
            sync_interval_ns: 10_000_000_000,
            session_timeout_ns: 30_000_000_000,
            blame_limit: 3,
            ban_ns: 600_000_000_000,
            max_wanted: 100_000,
            max_covered: 100_000,
            max_sync_requests: 8,
            max_requests_per_peer: 8,
            max_failures: 3,
            max_index_bytes: 16 << 20,
            new_streams_per_peer: Budget { rate: 200.0, burst: 2_000 },
        }
    }
}

/// The largest window blob repaired (a minute of one device at about 1,000 records a
/// second with 1 KiB readings is 60 MiB); an announced window beyond it is ignored, so a
/// peer cannot make a node hold more than this for one decode.
pub const MAX_REPAIR_BLOB: usize = 64 << 20;

/// How long a window whose repair was handed to the node waits for
/// [`Reconciler::handle_local`] before it may be repaired again.
pub const UNSTORED_NS: u64 = 5_000_000_000;

/// Identifies a request the reconciler sent, so its response finds its way back.
pub type RequestId = u64;

/// Why a peer was blamed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Blame {
    /// A response that does not decode or does not match what was asked.
    Malformed,
    /// An index whose Merkle proof fails against the announced root.
    BadProof,
    /// Symbols that rebuilt a window whose root is not the announced one.
    BadSymbols,
    /// A coordinator's announcement that names this node as having heard (or proved)
    /// records it did not: a forged row of ours.
    ForgedRow,
    /// A message whose signature does not verify against the peer that sent it
    /// ([`super::statement`]): a statement forged in its name, or altered on the way.
    BadSignature,
}

impl Blame {
    pub fn name(self) -> &'static str {
        match self {
            Blame::Malformed => "malformed",
            Blame::BadProof => "bad_proof",
            Blame::BadSymbols => "bad_symbols",
            Blame::ForgedRow => "forged_row",
            Blame::BadSignature => "bad_signature",
        }
    }
}

/// A window rebuilt from peers and verified against its announced root (against each
/// of them, when several roots of a window were repaired together).
#[derive(Debug, Clone, PartialEq)]
pub struct Repaired {
    pub window: WindowId,
    /// The (last) verified root.
    pub root: Root,
    /// Every record of the rebuilt window(s), each once (the node keeps those it lacks).
    pub records: Vec<Record>,
    /// When the (first) root was announced to us.
    pub announced_ns: u64,
}

/// What the node should do next.
#[derive(Debug, Clone)]
pub enum Action<P> {
    /// Send `request` to `peer`; hand the answer (or the failure) to
    /// [`Reconciler::handle_response`] with `id`.
    Send { id: RequestId, peer: P, request: Request },
    /// Store the records of a repaired window.
    Store(Repaired),
    /// Merge a peer's provenance table into ours, if our root is still `root`.
    Provenance { window: WindowId, root: Root, table: Table },
    /// Merge provenance rows over the records `keys` (in key order; records of ours, all
    /// of them held once any [`Action::Store`] queued before it is done): what peers
    /// stated about their own receipts in their announcements.
    Rows { window: WindowId, keys: Vec<RecordKey>, table: Table },
    /// A peer sent bad data; `disconnect` once it has done so [`Config::blame_limit`] times.
    Blame { peer: P, reason: Blame, disconnect: bool },
}

/// Counters, for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub request_failures: u64,
    pub symbols_requested: u64,
    pub symbols_received: u64,
    pub symbols_used: u64,
    pub symbols_rejected: u64,
    /// Decodes that needed more symbols than `missing` (RaptorQ's small failure chance).
    pub decode_failures: u64,
    /// Rebuilt windows or index proofs that failed against the announced root.
    pub verification_failures: u64,
    pub windows_repaired: u64,
    pub records_repaired: u64,
    /// Targets found to hold nothing we lack.
    pub windows_covered: u64,
    pub announcements_ignored: u64,
    pub sessions_abandoned: u64,
    /// Announced compact indexes that failed their checks (dropped; the summary counts).
    pub indexes_refused: u64,
    /// Targets repaired or checked from an announced index, with no index request.
    pub windows_from_gossip: u64,
    /// Announcers' provenance rows dropped with a target that was never resolved (its
    /// holders gone or failing): the summary exchange brings them later.
    pub rows_lost: u64,
    /// Rows of ours, relayed by a coordinator, that claimed receipts we do not have.
    pub rows_forged: u64,
    /// Windows of new streams a peer announced, and new streams its summary exchange
    /// listed, beyond its budget ([`Config::new_streams_per_peer`]): not wanted for now.
    pub new_streams_deferred: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Compact index from one holder, symbols from all.
    Compact,
    /// Merkle-proven index and symbols from one holder.
    Verified,
}

struct Target<P> {
    summary: Summary,
    holders: BTreeSet<P>,
    /// Holders already tried alone in verified mode.
    tried: BTreeSet<P>,
    announced_ns: u64,
    /// The last compact attempt failed verification: go verified.
    escalate: bool,
    /// Per holder: requests in a row that got no answer.
    failures: BTreeMap<P, u32>,
    /// The compact index announced with the root (gossip), if any.
    index: Option<message::IndexPart>,
    /// Announcers' own rows over the root's records, applied once it is held.
    rows: BTreeMap<String, Vec<u8>>,
    /// Rows of ours that coordinators relayed, checked against our receipts once the
    /// root is held (at most [`MAX_CLAIMS`]).
    claims: Vec<(P, Vec<u8>)>,
}

/// Relayed rows of ours kept per target, to check.
const MAX_CLAIMS: usize = 4;

/// Bytes an announced row is counted as while kept (against the indexes' budget).
fn row_cost(name: &str, bits: &[u8]) -> usize {
    32 + name.len() + bits.len()
}

/// Bytes an announced index is counted as while kept.
fn index_cost(part: &message::IndexPart) -> usize {
    match part {
        message::IndexPart::Compact { columns, tags, .. } => 32 + columns.len() + 12 * tags.len(),
        message::IndexPart::Verified { leaves, proof } => 32 + leaves.len() + proof.len(),
    }
}

/// One root of a window repaired in a gossip-mode session: its announced entries, and
/// symbols from its holders for exactly the records no earlier part of the session gives.
struct Part<P> {
    target: Summary,
    holders: Vec<P>,
    entries: Vec<Entry>,
    layout: Layout,
    /// Symbols asked at the start: its records not among ours or an earlier part's.
    need: u32,
    asked: Asked,
    /// Symbols received while an earlier part is not decoded yet (at most those asked).
    buffered: Vec<Symbol>,
    /// Once every earlier part is done: the decoder and the tags of placed slots.
    decoder: Option<(Decoder, Vec<Option<[u8; 8]>>)>,
    state: PartState,
}

impl<P> Part<P> {
    fn new(target: Summary, holders: Vec<P>, entries: Vec<Entry>, layout: Layout, need: u32) -> Self {
        let asked = Asked::new(holders.len());
        Part { target, holders, entries, layout, need, asked, buffered: Vec::new(), decoder: None, state: PartState::Open }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartState {
    Open,
    Done,
    Dropped,
}

/// A gossip-mode session: every announced root of a window that holds records we lack,
/// asked for symbols all at once, decoded in turn (largest first), each placed with our
/// records and those of the parts before it.
struct Multi<P> {
    parts: Vec<Part<P>>,
    own: Own,
}

/// The symbols requests of a session (or a part of one) to its holders.
struct Asked {
    /// Per holder (index into the holders): symbols asked so far.
    served: Vec<u32>,
    /// Holders that failed during this session.
    failed: Vec<bool>,
    /// Requests in flight: id → (holder index, count).
    outstanding: BTreeMap<RequestId, (usize, u32)>,
}

impl Asked {
    fn new(holders: usize) -> Self {
        Asked { served: vec![0; holders], failed: vec![false; holders], outstanding: BTreeMap::new() }
    }
}

struct Slots {
    entries: Vec<Entry>,
    decoder: Decoder,
    asked: Asked,
    /// Slots known from verified leaves or our records (for the blob's assembly).
    known_tags: Vec<Option<[u8; 8]>>,
    /// Records of the target new to us: the slots our own records do not fill. Not the
    /// decoder's missing slots, which verified leaves may have filled.
    new: u32,
}

enum Phase<P> {
    Index { id: RequestId },
    Symbols(Box<Slots>),
    Gossip(Box<Multi<P>>),
}

struct Session<P> {
    target: Summary,
    mode: Mode,
    holders: Vec<P>,
    phase: Phase<P>,
    progress_ns: u64,
}

#[derive(Debug, Clone)]
enum Purpose {
    Session(WindowId),
    Streams,
    Windows(StreamId),
    Provenance { window: WindowId, root: Root, digest: [u8; 8] },
}

/// A bounded set that forgets its oldest members.
struct Recent<T: std::hash::Hash + Eq + Clone> {
    set: HashSet<T>,
    order: VecDeque<T>,
    cap: usize,
}

impl<T: std::hash::Hash + Eq + Clone> Recent<T> {
    fn new(cap: usize) -> Self {
        Recent { set: HashSet::new(), order: VecDeque::new(), cap: cap.max(1) }
    }
    fn insert(&mut self, v: T) {
        if self.set.insert(v.clone()) {
            self.order.push_back(v);
            while self.order.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
    fn contains(&self, v: &T) -> bool {
        self.set.contains(v)
    }
}

/// The requester's state machine (module docs).
pub struct Reconciler<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> {
    config: Config,
    /// Targets boxed: a map's node holds room for 11 entries even with one, and most
    /// windows have one target (a flood of new windows is held as these).
    wanted: BTreeMap<WindowId, BTreeMap<Root, Box<Target<P>>>>,
    /// The wanted windows of streams this node held when it first wanted them: repaired
    /// before the others (`docs/protocol.md`, "Repair").
    first: BTreeSet<WindowId>,
    sessions: BTreeMap<WindowId, Session<P>>,
    pending: HashMap<RequestId, (P, Purpose)>,
    covered: Recent<Root>,
    /// Bytes of announced indexes kept with targets ([`index_cost`]).
    index_bytes: usize,
    /// Windows whose repaired records were handed to the node and not yet reported
    /// stored ([`Self::handle_local`]), and when: no new session starts for them until then
    /// (or [`UNSTORED_NS`]), as one would count records the node is about to hold as
    /// missing.
    unstored: HashMap<WindowId, u64>,
    provenance_seen: Recent<(Root, [u8; 8])>,
    /// Per peer: blames, and when the last one was.
    blames: BTreeMap<P, (u32, u64)>,
    /// The time of the latest input.
    now_ns: u64,
    connected: BTreeSet<P>,
    /// Summary exchange: streams to ask about, per peer.
    sync_queue: VecDeque<(P, Request)>,
    next_sync_ns: u64,
    sync_cursor: Option<P>,
    next_id: RequestId,
    /// Requests sent and not yet answered (whether still wanted or not), per peer, and
    /// those waiting for one to finish.
    sent: HashMap<RequestId, P>,
    in_flight: HashMap<P, usize>,
    waiting: HashMap<P, VecDeque<(RequestId, Request)>>,
    out: VecDeque<Action<P>>,
    stats: Stats,
    /// The mesh's members: names of the nodes other rows in announcements refer to.
    members: super::Members,
    /// This node's name among them: a relayed row naming it is checked, never merged.
    me: Option<String>,
    /// Per peer: its budget of new streams ([`Config::new_streams_per_peer`]); one that
    /// has refilled is forgotten.
    new_streams: HashMap<P, Bucket>,
}

impl<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> std::fmt::Debug for Reconciler<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reconciler")
            .field("wanted", &self.wanted.len())
            .field("sessions", &self.sessions.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

/// Our records of a window, by (time offset, seq): their tags and content bytes.
type Own = BTreeMap<(u64, u64), Vec<([u8; 8], Vec<u8>)>>;

fn own_records(holdings: &dyn Holdings, w: WindowId) -> Own {
    let mut own: Own = BTreeMap::new();
    add_own(&mut own, w, holdings.records(w));
    own
}

fn add_own(own: &mut Own, w: WindowId, records: impl IntoIterator<Item = Record>) {
    for r in records {
        if r.stream != w.stream || window::start(r.device_time_ns) != w.start {
            continue;
        }
        let bytes = r.content_bytes();
        let tag = crate::record::content::tag(&bytes);
        // The same record may be listed twice (stored, and in memory): one copy is enough,
        // and only distinct contents make a (time, seq) ambiguous.
        let same = own.entry((r.device_time_ns - w.start, r.seq)).or_default();
        if !same.iter().any(|(t, _)| *t == tag) {
            same.push((tag, bytes));
        }
    }
}

/// Our records (and those already rebuilt) placed into a layout by (time, seq), by tag
/// where the index gives one: the present slots, and each slot's tag where known.
fn place(entries: &[Entry], own: &Own, slot: usize) -> (Vec<(u32, Vec<u8>)>, Vec<Option<[u8; 8]>>) {
    let mut present = Vec::new();
    let mut known_tags = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        match own_slot(e, own, slot) {
            Some((tag, s)) => {
                present.push((i as u32, s));
                known_tags.push(Some(tag));
            }
            None => known_tags.push(e.tag),
        }
    }
    (present, known_tags)
}

/// Our copy of the record `e` names, padded to `slot` bytes, and its tag: if we hold it
/// (by tag where the index gives one, else if we hold one record at its time and seq)
/// and it fits the slot.
fn own_slot(e: &Entry, own: &Own, slot: usize) -> Option<([u8; 8], Vec<u8>)> {
    let mine = own.get(&(e.offset_ns, e.seq)).map(Vec::as_slice).unwrap_or_default();
    let (tag, bytes) = match e.tag {
        Some(tag) => mine.iter().find(|(t, _)| *t == tag),
        None if mine.len() == 1 => mine.first(),
        None => None,
    }?;
    (bytes.len() <= slot).then(|| {
        let mut s = bytes.clone();
        s.resize(slot, 0);
        (*tag, s)
    })
}

/// The records of `target` rebuilt from its entries and slots, if the blob they make has
/// the announced root (and passes every check of a window blob); `None` otherwise.
fn rebuild(target: &Summary, entries: &[Entry], known_tags: &[Option<[u8; 8]>], slot_part: Vec<u8>) -> Option<Vec<Record>> {
    let slot = usize::from(target.slot_size);
    let mut index = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        let tag = match known_tags.get(i).copied().flatten() {
            Some(t) => t,
            None => window::slot_tag(slot_part.get(i * slot..(i + 1) * slot)?).ok()?,
        };
        index.push(IndexEntry { offset_ns: e.offset_ns, seq: e.seq, tag });
    }
    let blob = [window::prefix(&target.header(), &index), slot_part].concat();
    let root = window::outboard(&blob).ok()?.root();
    if root != target.root {
        return None;
    }
    window::decode(&blob).ok().map(|(_, records)| records)
}

impl<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> Reconciler<P> {
    pub fn new(config: Config) -> Self {
        Reconciler {
            covered: Recent::new(config.max_covered),
            index_bytes: 0,
            unstored: HashMap::new(),
            provenance_seen: Recent::new(config.max_covered),
            config,
            wanted: BTreeMap::new(),
            first: BTreeSet::new(),
            sessions: BTreeMap::new(),
            pending: HashMap::new(),
            blames: BTreeMap::new(),
            now_ns: 0,
            connected: BTreeSet::new(),
            sync_queue: VecDeque::new(),
            next_sync_ns: 0,
            sync_cursor: None,
            next_id: 0,
            sent: HashMap::new(),
            in_flight: HashMap::new(),
            waiting: HashMap::new(),
            out: VecDeque::new(),
            stats: Stats::default(),
            members: super::Members::default(),
            me: None,
            new_streams: HashMap::new(),
        }
    }

    /// The mesh's member list (the roster's), which coordinators' announcements index
    /// other nodes' rows into. Until set, or while ours differs from a sender's, those
    /// rows are ignored.
    pub fn set_members(&mut self, members: super::Members, me: &str) {
        self.members = members;
        self.me = Some(me.to_owned());
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Whether a root of `window` we lack is known (announced, not yet held or given up).
    pub fn wants(&self, window: WindowId) -> bool {
        self.wanted.contains_key(&window)
    }

    /// Windows with a root we lack, and sessions repairing them.
    pub fn backlog(&self) -> (usize, usize) {
        (self.wanted.len(), self.sessions.len())
    }

    /// Windows for which `peer` announced a root we do not hold (behind us or ahead).
    pub fn differing(&self, peer: &P) -> usize {
        self.wanted.values().filter(|t| t.values().any(|t| t.holders.contains(peer))).count()
    }

    /// The next thing to do, if any.
    pub fn poll(&mut self) -> Option<Action<P>> {
        self.out.pop_front()
    }

    /// Whether `peer` is ignored: blamed `blame_limit` times, the last less than `ban_ns` ago.
    fn banned(&mut self, peer: &P) -> bool {
        match self.blames.get(peer) {
            Some((count, last)) if *count >= self.config.blame_limit => {
                if self.now_ns.saturating_sub(*last) < self.config.ban_ns {
                    return true;
                }
                self.blames.remove(peer); // served its time
                false
            }
            _ => false,
        }
    }

    fn send(&mut self, peer: P, request: Request, purpose: Purpose) -> RequestId {
        self.next_id += 1;
        let id = self.next_id;
        self.stats.requests += 1;
        self.pending.insert(id, (peer.clone(), purpose));
        let busy = self.in_flight.entry(peer.clone()).or_insert(0);
        if *busy < self.config.max_requests_per_peer {
            *busy += 1;
            self.sent.insert(id, peer.clone());
            self.out.push_back(Action::Send { id, peer, request });
        } else {
            self.waiting.entry(peer).or_default().push_back((id, request));
        }
        id
    }

    /// A request to `peer` finished: the next waiting one (still wanted) goes out.
    fn finished(&mut self, peer: &P) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
        }
        while let Some((id, request)) = self.waiting.get_mut(peer).and_then(VecDeque::pop_front) {
            if self.pending.contains_key(&id) {
                *self.in_flight.entry(peer.clone()).or_insert(0) += 1;
                self.sent.insert(id, peer.clone());
                self.out.push_back(Action::Send { id, peer: peer.clone(), request });
                break;
            }
        }
        if self.waiting.get(peer).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(peer);
        }
        if self.in_flight.get(peer) == Some(&0) {
            self.in_flight.remove(peer);
        }
    }

    /// Blames `peer` for something the node found wrong outside the repair protocol (a
    /// message whose signature fails): counted like any blame, and a disconnect once it has
    /// happened [`Config::blame_limit`] times ([`Action::Blame`]).
    pub fn blame(&mut self, peer: &P, reason: Blame) {
        let now = self.now_ns;
        let (count, last) = self.blames.entry(peer.clone()).or_insert((0, now));
        *count += 1;
        *last = now;
        let disconnect = *count >= self.config.blame_limit;
        self.out.push_back(Action::Blame { peer: peer.clone(), reason, disconnect });
        if disconnect {
            // Forget it as a holder everywhere.
            for targets in self.wanted.values_mut() {
                for t in targets.values_mut() {
                    t.holders.remove(peer);
                }
            }
            self.connected.remove(peer);
        }
    }

    /// A peer connected: exchange summaries with it now.
    pub fn peer_up(&mut self, peer: P, now_ns: u64) {
        self.now_ns = self.now_ns.max(now_ns);
        if self.banned(&peer) {
            return;
        }
        if self.connected.insert(peer.clone()) {
            self.sync_queue.push_back((peer, Request::Streams { after: None }));
        }
    }

    /// A peer went away: it no longer serves anything.
    pub fn peer_down(&mut self, peer: &P) {
        self.connected.remove(peer);
        self.sync_queue.retain(|(p, _)| p != peer);
    }

    /// Summaries this node asked a peer for in the summary exchange (new streams among
    /// them were counted against the peer's budget when asked for). Where its provenance
    /// digest differs from ours for a root we hold, its table is asked for.
    pub fn handle_announce(&mut self, peer: P, windows: &[Summary], now_ns: u64, holdings: &dyn Holdings) {
        let bare = message::Announce { windows: windows.to_vec(), indexes: Vec::new(), rows: Vec::new(), others: None, signature: Vec::new() };
        self.announced(peer, None, &bare, now_ns, holdings);
    }

    /// An announcement `author` (the node's name in provenance tables) published, as
    /// `peer` (its address for requests) delivered it: each window's summary, compact
    /// index and the author's own row (`docs/protocol.md`, "Repair", "Provenance"). A
    /// target with an index is repaired without asking for it; the author's row joins our
    /// table once we hold the root's records, and no table is asked for.
    pub fn handle_gossip(&mut self, peer: P, author: &str, announce: &message::Announce, now_ns: u64, holdings: &dyn Holdings) {
        self.announced(peer, Some(author), announce, now_ns, holdings);
    }

    fn announced(&mut self, peer: P, author: Option<&str>, announce: &message::Announce, now_ns: u64, holdings: &dyn Holdings) {
        let (windows, indexes) = (&announce.windows, &announce.indexes);
        self.now_ns = self.now_ns.max(now_ns);
        if self.banned(&peer) {
            self.stats.announcements_ignored += windows.len() as u64;
            return;
        }
        let mut extend = BTreeSet::new();
        for (k, s) in windows.iter().enumerate() {
            if !s.check() {
                self.stats.announcements_ignored += 1;
                continue;
            }
            // The author's own row, and the other nodes' rows a coordinator relays; one
            // naming us is a claim about our receipts, to check, not to merge.
            let mut rows: Vec<(String, Vec<u8>)> = Vec::new();
            let mut claims: Vec<(P, Vec<u8>)> = Vec::new();
            if let Some(a) = author {
                rows.extend(announce.row(k).map(|bits| (a.to_owned(), bits)));
                for (m, bits) in announce.others(k, self.members.digest()) {
                    match self.members.name(m) {
                        Some(name) if Some(name) == self.me.as_deref() => claims.push((peer.clone(), bits)),
                        Some(name) if name != a => rows.push((name.to_owned(), bits)),
                        _ => {}
                    }
                }
            }
            let local = holdings.summary(s.window);
            if local.is_some_and(|l| l.root == s.root) {
                let differs = local.is_some_and(|l| l.provenance != s.provenance);
                // From the summary exchange (no author): ask for a table that differs.
                let ask = differs && author.is_none();
                self.check_claims(s.window, &s.root, claims, holdings);
                self.settle(s.window, &s.root, rows, holdings);
                if ask && !self.provenance_seen.contains(&(s.root, s.provenance)) {
                    self.provenance_seen.insert((s.root, s.provenance));
                    let purpose = Purpose::Provenance { window: s.window, root: s.root, digest: s.provenance };
                    self.send(peer.clone(), Request::Provenance { window: s.window, root: s.root }, purpose);
                }
                continue;
            }
            if self.covered.contains(&s.root) {
                if let Some(part) = announce.index(k) {
                    self.rows_by_index(s, part, &rows, holdings);
                }
                continue;
            }
            if !self.wanted.contains_key(&s.window) {
                if self.wanted.len() >= self.config.max_wanted {
                    self.stats.announcements_ignored += 1;
                    continue;
                }
                if holdings.holds(s.window.stream) {
                    self.first.insert(s.window);
                } else if author.is_some() && !self.may_want_new(&peer, s.window.stream, now_ns) {
                    // Pushed to us (gossip); what we asked for was counted when asked.
                    continue;
                }
            }
            let targets = self.wanted.entry(s.window).or_default();
            let t = targets.entry(s.root).or_insert_with(|| Box::new(Target {
                summary: *s,
                holders: BTreeSet::new(),
                tried: BTreeSet::new(),
                announced_ns: now_ns,
                escalate: false,
                failures: BTreeMap::new(),
                index: None,
                rows: BTreeMap::new(),
                claims: Vec::new(),
            }));
            t.holders.insert(peer.clone());
            let room = MAX_CLAIMS.saturating_sub(t.claims.len());
            t.claims.extend(claims.into_iter().take(room));
            // Rows are kept within the announced indexes' memory budget.
            for (name, bits) in rows {
                if t.rows.len() >= crate::mesh::MAX_TABLE_NODES && !t.rows.contains_key(&name) {
                    continue;
                }
                let cost = row_cost(&name, &bits);
                if self.index_bytes + cost <= self.config.max_index_bytes {
                    self.index_bytes += cost;
                    if let Some(old) = t.rows.insert(name.clone(), bits) {
                        self.index_bytes = self.index_bytes.saturating_sub(row_cost(&name, &old));
                    }
                }
            }
            if let Some(part) = indexes.get(k).and_then(Option::as_ref).filter(|_| t.index.is_none()) {
                let cost = index_cost(part);
                if !matches!(part, message::IndexPart::Compact { .. }) || part.entries(s).is_err() {
                    self.stats.indexes_refused += 1;
                } else if self.index_bytes + cost <= self.config.max_index_bytes {
                    self.index_bytes += cost;
                    t.index = Some(part.clone());
                    extend.insert(s.window);
                }
            }
        }
        for w in extend {
            self.extend_gossip(w);
        }
        self.start_sessions(now_ns, holdings);
    }

    /// Whether `peer` may make this node want a window of `stream`, a stream it holds
    /// nothing of: free while a window of the stream is wanted already, otherwise one of the
    /// peer's new-stream tokens; without one, counted as deferred.
    fn may_want_new(&mut self, peer: &P, stream: StreamId, now_ns: u64) -> bool {
        let first = WindowId { stream, start: 0 };
        if self.wanted.range(first..).next().is_some_and(|(w, _)| w.stream == stream) {
            return true;
        }
        let budget = self.config.new_streams_per_peer;
        let bucket = self.new_streams.entry(peer.clone()).or_insert_with(|| Bucket::full(&budget, now_ns));
        let ok = bucket.take(&budget, now_ns);
        if !ok {
            self.stats.new_streams_deferred += 1;
        }
        ok
    }

    /// Our copy of `window` changed (new records sealed, a repair stored, provenance
    /// merged): targets we now hold are done.
    pub fn handle_local(&mut self, window: WindowId, holdings: &dyn Holdings, now_ns: u64) {
        self.unstored.remove(&window);
        if let Some(local) = holdings.summary(window) {
            self.settle(window, &local.root, Vec::new(), holdings);
        }
        self.start_sessions(now_ns, holdings);
    }

    fn drop_target(&mut self, window: WindowId, root: &Root) {
        let (rows, _) = self.take_target(window, root);
        self.stats.rows_lost += rows.len() as u64;
    }

    /// We hold `root` ourselves: the target is done, and the rows its announcers sent (and
    /// `more`, just received) are over our records, in our order.
    fn settle(&mut self, window: WindowId, root: &Root, more: Vec<(String, Vec<u8>)>, holdings: &dyn Holdings) {
        let (mut rows, claims) = self.take_target(window, root);
        self.check_claims(window, root, claims, holdings);
        for (name, bits) in more {
            match rows.entry(name) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    let mut t = Table { nodes: vec![(e.key().clone(), e.get().clone())] };
                    t.merge(&Table { nodes: vec![(e.key().clone(), bits)] });
                    if let Some((_, merged)) = t.nodes.pop() {
                        e.insert(merged);
                    }
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(bits);
                }
            }
        }
        if !rows.is_empty() {
            self.out.push_back(Action::Provenance { window, root: *root, table: Table { nodes: rows.into_iter().collect() } });
        }
    }

    /// Rows of ours that peers relayed over `root`, which we hold: a claim that we heard
    /// (or proved) a record our own receipts do not have is a forgery, and its relayer is
    /// blamed (`docs/protocol.md`, "Coordinators"). A claim that says less than we hold is
    /// only late.
    fn check_claims(&mut self, window: WindowId, root: &Root, claims: Vec<(P, Vec<u8>)>, holdings: &dyn Holdings) {
        if claims.is_empty() {
            return;
        }
        let Some(held) = holdings.held(window, root) else { return };
        let Ok(header) = window::Header::parse(&held.blob) else { return };
        let count = header.count as usize;
        let me = self.me.as_deref().unwrap_or_default();
        let mine = held.table.nodes.iter().find(|(n, _)| n == me).map(|(_, b)| b.as_slice()).unwrap_or_default();
        for (peer, bits) in claims {
            let forged = (0..count).any(|i| match (Table::receipt(&bits, count, i), Table::receipt(mine, count, i)) {
                (Some(_), None) => true,
                (Some(claimed), Some(ours)) => claimed && !ours,
                (None, _) => false,
            });
            if forged {
                self.stats.rows_forged += 1;
                self.blame(&peer, Blame::ForgedRow);
            }
        }
    }

    /// Forgets a target; returns the announcers' rows it kept, and the claims about ours.
    fn take_target(&mut self, window: WindowId, root: &Root) -> (BTreeMap<String, Vec<u8>>, Vec<(P, Vec<u8>)>) {
        let mut rows = BTreeMap::new();
        let mut claims = Vec::new();
        if let Some(targets) = self.wanted.get_mut(&window) {
            if let Some(t) = targets.remove(root) {
                if let Some(part) = &t.index {
                    self.index_bytes = self.index_bytes.saturating_sub(index_cost(part));
                }
                let held: usize = t.rows.iter().map(|(n, b)| row_cost(n, b)).sum();
                self.index_bytes = self.index_bytes.saturating_sub(held);
                rows = t.rows;
                claims = t.claims;
            }
            if targets.is_empty() {
                self.wanted.remove(&window);
                self.first.remove(&window);
            }
        }
        (rows, claims)
    }

    /// What merges the announcers' `rows` of a root whose records, in key order, are
    /// `records` (to be queued after those records are).
    fn rows_action(&self, window: WindowId, records: &[Record], rows: BTreeMap<String, Vec<u8>>) -> Option<Action<P>> {
        let table = Table { nodes: rows.into_iter().collect() };
        if table.nodes.is_empty() || !table.fits(records.len()) {
            return None;
        }
        let keys = records.iter().map(|r| (r.device_time_ns, r.seq, r.content_tag())).collect();
        Some(Action::Rows { window, keys, table })
    }

    /// Rows (an author's, and those a coordinator relays) over a root we hold all of
    /// already (covered earlier): its compact index names the records by (time, seq), with
    /// tags where the root itself has two at one (time, seq). A record of ours at that
    /// (time, seq) is the one it names, unless we hold several versions there and the
    /// index gives no tag: that bit is left out (the summary exchange brings it later).
    fn rows_by_index(&mut self, s: &Summary, part: &message::IndexPart, rows: &[(String, Vec<u8>)], holdings: &dyn Holdings) {
        if rows.is_empty() {
            return;
        }
        let Ok(entries) = part.entries(s) else { return };
        let own = own_records(holdings, s.window);
        let count = entries.len();
        let mut keys = Vec::new();
        let mut receipts = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let heard: Vec<(&str, bool)> =
                rows.iter().filter_map(|(n, bits)| Table::receipt(bits, count, i).map(|p| (n.as_str(), p))).collect();
            if heard.is_empty() {
                continue;
            }
            let mine = own.get(&(e.offset_ns, e.seq)).map(Vec::as_slice).unwrap_or_default();
            let tag = match e.tag {
                Some(t) => mine.iter().find(|(x, _)| *x == t).map(|(x, _)| *x),
                None if mine.len() == 1 => mine.first().map(|(x, _)| *x),
                None => None,
            };
            if let Some(tag) = tag {
                receipts.extend(heard.into_iter().map(|(n, p)| (keys.len(), n, p)));
                keys.push((s.window.start + e.offset_ns, e.seq, tag));
            }
        }
        if keys.is_empty() {
            return;
        }
        let table = Table::from_receipts(keys.len(), receipts);
        self.out.push_back(Action::Rows { window: s.window, keys, table });
    }

    /// Time passes: summary exchange, stalled sessions, new sessions.
    pub fn tick(&mut self, now_ns: u64, holdings: &dyn Holdings) {
        self.now_ns = self.now_ns.max(now_ns);
        if now_ns >= self.next_sync_ns && !self.connected.is_empty() {
            self.next_sync_ns = now_ns + self.config.sync_interval_ns;
            let next = match &self.sync_cursor {
                Some(c) => self.connected.range((std::ops::Bound::Excluded(c.clone()), std::ops::Bound::Unbounded)).next(),
                None => None,
            }
            .or_else(|| self.connected.iter().next())
            .cloned();
            if let Some(peer) = next {
                self.sync_cursor = Some(peer.clone());
                self.sync_queue.push_back((peer, Request::Streams { after: None }));
            }
        }
        let stalled: Vec<WindowId> = self
            .sessions
            .iter()
            .filter(|(_, s)| now_ns.saturating_sub(s.progress_ns) > self.config.session_timeout_ns)
            .map(|(w, _)| *w)
            .collect();
        for w in stalled {
            self.stats.sessions_abandoned += 1;
            self.end_session(w);
        }
        let budget = self.config.new_streams_per_peer;
        self.new_streams.retain(|_, b| {
            b.refill(&budget, now_ns);
            !b.is_full(&budget)
        });
        self.start_sessions(now_ns, holdings);
    }

    fn pump_sync(&mut self) {
        let in_flight = self
            .pending
            .values()
            .filter(|(_, p)| matches!(p, Purpose::Streams | Purpose::Windows(_)))
            .count();
        for _ in in_flight..self.config.max_sync_requests {
            let Some((peer, request)) = self.sync_queue.pop_front() else { break };
            let purpose = match &request {
                Request::Windows { stream, .. } => Purpose::Windows(*stream),
                _ => Purpose::Streams,
            };
            self.send(peer, request, purpose);
        }
    }

    fn end_session(&mut self, w: WindowId) {
        if let Some(s) = self.sessions.remove(&w) {
            let ids: Vec<RequestId> = match s.phase {
                Phase::Index { id } => vec![id],
                Phase::Symbols(slots) => slots.asked.outstanding.keys().copied().collect(),
                Phase::Gossip(multi) => multi.parts.iter().flat_map(|p| p.asked.outstanding.keys().copied()).collect(),
            };
            for id in ids {
                self.pending.remove(&id);
            }
        }
    }

    fn start_sessions(&mut self, now_ns: u64, holdings: &dyn Holdings) {
        self.pump_sync();
        if self.sessions.len() >= self.config.max_sessions {
            return;
        }
        // Windows of streams we held when we first wanted them come first, then the others,
        // each in window order: a burst of new streams at some site (a flood of device ids)
        // waits behind the repair of established ones instead of starving it
        // (`docs/protocol.md`, "Repair").
        let candidates: Vec<WindowId> = self
            .first
            .iter()
            .chain(self.wanted.keys().filter(|w| !self.first.contains(w)))
            .filter(|w| !self.sessions.contains_key(w))
            .filter(|w| self.unstored.get(w).is_none_or(|t| now_ns.saturating_sub(*t) >= UNSTORED_NS))
            .copied()
            .collect();
        for w in candidates {
            if self.sessions.len() >= self.config.max_sessions {
                break;
            }
            let local = holdings.summary(w);
            let Some(targets) = self.wanted.get_mut(&w) else { continue };
            // A root we now hold settles (its announcers' rows are over our records); one
            // no holder is left to try for is dropped.
            let mut done = Vec::new();
            for (root, t) in targets.iter_mut() {
                t.holders.retain(|h| !t.tried.contains(h) || !t.escalate);
                if local.is_some_and(|l| l.root == *root) {
                    done.push((*root, true));
                } else if t.holders.is_empty() {
                    done.push((*root, false));
                }
            }
            for (root, held) in done {
                if held {
                    self.settle(w, &root, Vec::new(), holdings);
                } else {
                    self.drop_target(w, &root);
                }
            }
            if !self.wanted.contains_key(&w) {
                continue;
            }
            if self.start_gossip(w, now_ns, holdings) {
                continue;
            }
            let Some(targets) = self.wanted.get_mut(&w) else { continue };
            // The biggest set first: it is the most likely to hold what we lack.
            let Some(target) = targets.values().max_by_key(|t| (t.summary.count, std::cmp::Reverse(t.summary.root))) else {
                self.wanted.remove(&w);
                self.first.remove(&w);
                continue;
            };
            let summary = target.summary;
            if summary.count > Layout::MAX_SLOTS || summary.blob_len() > MAX_REPAIR_BLOB {
                // One source block per window; windows this big are not repairable yet.
                // A blob over MAX_REPAIR_BLOB would make the decoder hold that much.
                self.stats.announcements_ignored += 1;
                self.drop_target(w, &summary.root);
                continue;
            }
            let (mode, holders): (Mode, Vec<P>) = if target.escalate {
                let Some(h) = target.holders.iter().find(|h| !target.tried.contains(*h)).cloned() else {
                    self.drop_target(w, &summary.root);
                    continue;
                };
                (Mode::Verified, vec![h])
            } else {
                (Mode::Compact, target.holders.iter().cloned().collect())
            };
            let Some(first) = holders.first().cloned() else { continue };
            let verified = mode == Mode::Verified;
            let id = self.send(first, Request::Index { window: w, root: summary.root, verified }, Purpose::Session(w));
            self.sessions.insert(w, Session { target: summary, mode, holders, phase: Phase::Index { id }, progress_ns: now_ns });
        }
    }

    /// The answer to request `id`: the peer's response bytes decoded, or `None` if the
    /// request failed (timeout, disconnect, undecodable answer).
    pub fn handle_response(&mut self, id: RequestId, response: Option<Response>, now_ns: u64, holdings: &dyn Holdings) {
        self.now_ns = self.now_ns.max(now_ns);
        if let Some(to) = self.sent.remove(&id) {
            self.finished(&to);
        }
        let Some((peer, purpose)) = self.pending.remove(&id) else {
            self.start_sessions(now_ns, holdings);
            return;
        };
        if response.is_none() {
            self.stats.request_failures += 1;
        }
        match purpose {
            Purpose::Streams => self.on_streams(peer, response, holdings),
            Purpose::Windows(stream) => self.on_windows(peer, stream, response, now_ns, holdings),
            Purpose::Provenance { window, root, digest } => match response {
                Some(Response::Provenance { table }) => {
                    let fits = holdings.summary(window).is_some_and(|l| l.root == root && table.fits(l.count as usize));
                    if fits {
                        self.out.push_back(Action::Provenance { window, root, table });
                    } else if holdings.summary(window).is_some_and(|l| l.root == root) {
                        self.blame(&peer, Blame::Malformed);
                    }
                }
                // Not held any more (its root moved on), or failed: ask again when next announced.
                _ => self.provenance_seen.set.retain(|x| *x != (root, digest)),
            },
            Purpose::Session(w) => self.on_session(w, id, peer, response, now_ns, holdings),
        }
        self.start_sessions(now_ns, holdings);
    }

    fn on_streams(&mut self, peer: P, response: Option<Response>, holdings: &dyn Holdings) {
        let Some(Response::Streams { digests, more }) = response else { return };
        for d in &digests {
            let mine = holdings.stream(d.stream);
            if mine.is_some_and(|mine| mine.digest == d.digest) || self.sync_queue.len() >= 100_000 {
                continue;
            }
            // A stream new to us is counted against the peer's budget now, when asked for.
            if mine.is_none() && !self.may_want_new(&peer, d.stream, self.now_ns) {
                continue;
            }
            self.sync_queue.push_back((peer.clone(), Request::Windows { stream: d.stream, after: None }));
        }
        if more {
            if let Some(last) = digests.last() {
                self.sync_queue.push_back((peer, Request::Streams { after: Some(last.stream) }));
            }
        }
    }

    fn on_windows(&mut self, peer: P, stream: StreamId, response: Option<Response>, now_ns: u64, holdings: &dyn Holdings) {
        let Some(Response::Windows { windows, more }) = response else { return };
        if windows.iter().any(|s| s.window.stream != stream) {
            self.blame(&peer, Blame::Malformed);
            return;
        }
        self.handle_announce(peer.clone(), &windows, now_ns, holdings);
        if more {
            if let Some(last) = windows.last() {
                self.sync_queue.push_back((peer, Request::Windows { stream, after: Some(last.window.start) }));
            }
        }
    }

    fn on_session(&mut self, w: WindowId, id: RequestId, peer: P, response: Option<Response>, now_ns: u64, holdings: &dyn Holdings) {
        let Some(mut session) = self.sessions.remove(&w) else { return };
        session.progress_ns = now_ns;
        let outcome = match &mut session.phase {
            Phase::Index { .. } => self.on_index(&mut session, peer, response, holdings),
            Phase::Symbols(_) => self.on_symbols(&mut session, id, peer, response),
            Phase::Gossip(_) => self.on_gossip(&mut session, id, peer, response),
        };
        match outcome {
            Step::Continue => {
                self.sessions.insert(w, session);
            }
            Step::Done => {
                let ids: Vec<RequestId> = match &session.phase {
                    Phase::Symbols(s) => s.asked.outstanding.keys().copied().collect(),
                    Phase::Gossip(m) => m.parts.iter().flat_map(|p| p.asked.outstanding.keys().copied()).collect(),
                    Phase::Index { .. } => Vec::new(),
                };
                for id in ids {
                    self.pending.remove(&id);
                }
            }
        }
    }

    /// Marks `peer` as unable to serve this target (not found, or failed verified mode).
    fn drop_holder(&mut self, w: WindowId, root: &Root, peer: &P) {
        if let Some(t) = self.wanted.get_mut(&w).and_then(|t| t.get_mut(root)) {
            t.holders.remove(peer);
        }
    }

    /// `peer` did not answer a request for the target `root` of `w` (timeout, disconnect):
    /// counted, and the holder dropped after [`Config::max_failures`] in a row. Returns
    /// whether it is still a holder.
    fn no_answer(&mut self, w: WindowId, root: &Root, peer: &P) -> bool {
        let limit = self.config.max_failures;
        let Some(t) = self.wanted.get_mut(&w).and_then(|t| t.get_mut(root)) else { return false };
        let n = t.failures.entry(peer.clone()).or_insert(0);
        *n += 1;
        if *n >= limit {
            t.holders.remove(peer);
            return false;
        }
        t.holders.contains(peer)
    }

    /// `peer` answered a request for the target `root` of `w`.
    fn answered(&mut self, w: WindowId, root: &Root, peer: &P) {
        if let Some(t) = self.wanted.get_mut(&w).and_then(|t| t.get_mut(root)) {
            t.failures.remove(peer);
        }
    }

    fn escalate(&mut self, w: WindowId, root: &Root, tried: Option<&P>) {
        if let Some(t) = self.wanted.get_mut(&w).and_then(|t| t.get_mut(root)) {
            t.escalate = true;
            if let Some(p) = tried {
                t.tried.insert(p.clone());
            }
        }
    }

    fn on_index(&mut self, session: &mut Session<P>, peer: P, response: Option<Response>, holdings: &dyn Holdings) -> Step {
        let target = session.target;
        let w = target.window;
        let part = match response {
            Some(Response::Index(part)) => {
                self.answered(w, &target.root, &peer);
                part
            }
            // No answer: the session starts again (asking the same holders) unless the
            // holder has now failed too often.
            None => {
                self.no_answer(w, &target.root, &peer);
                return Step::Done;
            }
            Some(Response::NotFound) => {
                self.drop_holder(w, &target.root, &peer);
                return Step::Done;
            }
            Some(_) => {
                self.blame(&peer, Blame::Malformed);
                self.drop_holder(w, &target.root, &peer);
                return Step::Done;
            }
        };
        let own = own_records(holdings, w);
        let slot = usize::from(target.slot_size);
        let (entries, verified_leaves) = match session.mode {
            Mode::Compact => match part.entries(&target) {
                Ok(e) => (e, None),
                Err(_) => {
                    self.blame(&peer, Blame::Malformed);
                    self.drop_holder(w, &target.root, &peer);
                    return Step::Done;
                }
            },
            Mode::Verified => match message::verify(&part, &target) {
                Ok(leaves) => match window::index(&leaves) {
                    Ok((_, entries)) => {
                        let e = entries.iter().map(|e| Entry { offset_ns: e.offset_ns, seq: e.seq, tag: Some(e.tag) }).collect();
                        (e, Some(leaves))
                    }
                    Err(_) => {
                        self.stats.verification_failures += 1;
                        self.blame(&peer, Blame::BadProof);
                        self.escalate(w, &target.root, Some(&peer));
                        return Step::Done;
                    }
                },
                Err(_) => {
                    self.stats.verification_failures += 1;
                    self.blame(&peer, Blame::BadProof);
                    self.escalate(w, &target.root, Some(&peer));
                    return Step::Done;
                }
            },
        };
        // Place what we hold: our records by key, and slots inside verified leaves.
        let prefix_len = target.header().prefix_len();
        let mut present: Vec<(u32, Vec<u8>)> = Vec::new();
        let mut known_tags = Vec::with_capacity(entries.len());
        let mut new = 0u32;
        for (i, e) in entries.iter().enumerate() {
            let mine = own_slot(e, &own, slot);
            new += u32::from(mine.is_none());
            let from_leaves = verified_leaves.as_ref().and_then(|l| l.get(prefix_len + i * slot..prefix_len + (i + 1) * slot));
            if let (Some(bytes), Some(tag)) = (from_leaves, e.tag) {
                present.push((i as u32, bytes.to_vec()));
                known_tags.push(Some(tag));
                continue;
            }
            match mine {
                Some((tag, s)) => {
                    present.push((i as u32, s));
                    known_tags.push(Some(tag));
                }
                None => known_tags.push(e.tag),
            }
        }
        let Ok(layout) = Layout::new(slot, entries.len()) else {
            self.drop_target(w, &target.root);
            return Step::Done;
        };
        let Ok(decoder) = Decoder::new(layout, present.iter().map(|(i, b)| (*i, b.as_slice()))) else {
            self.drop_target(w, &target.root);
            return Step::Done;
        };
        let n = session.holders.len();
        let mut slots = Box::new(Slots {
            entries,
            decoder,
            asked: Asked::new(n),
            known_tags,
            new,
        });
        if slots.decoder.missing() == 0 {
            // We hold every record of the target (or the verified leaves held the rest).
            return match slots.decoder.try_finish() {
                Some(slot_part) => self.verify_and_store(session, &slots, slot_part),
                None => Step::Done,
            };
        }
        let want = slots.decoder.missing() + self.config.overhead;
        self.ask(session, &mut slots, want);
        session.phase = Phase::Symbols(slots);
        Step::Continue
    }

    /// Asks the session's working holders for `want` more symbols, split evenly.
    fn ask(&mut self, session: &Session<P>, slots: &mut Slots, want: u32) {
        let layout = slots.decoder.layout();
        self.ask_holders(session.target.window, session.target.root, &layout, &session.holders, &mut slots.asked, want);
    }

    /// Asks the working `holders` of `root` (window `w`) for `want` more symbols, split
    /// evenly, each from its own ESI band after those it was asked for already.
    fn ask_holders(&mut self, w: WindowId, root: Root, layout: &Layout, holders: &[P], asked: &mut Asked, want: u32) {
        let working: Vec<usize> = (0..holders.len()).filter(|i| !asked.failed[*i]).collect();
        for (k, count) in repair::split(want, working.len() as u32).enumerate() {
            let i = working[k];
            let mut left = count;
            while left > 0 {
                let chunk = left.min(max_symbols(layout));
                let Ok(range) = repair::holder_range(layout, i as u32, asked.served[i], chunk) else {
                    asked.failed[i] = true;
                    break;
                };
                asked.served[i] += chunk;
                left -= chunk;
                self.stats.symbols_requested += u64::from(chunk);
                let request = Request::Symbols { window: w, root, start: range.start, count: range.count };
                let id = self.send(holders[i].clone(), request, Purpose::Session(w));
                asked.outstanding.insert(id, (i, chunk));
            }
        }
    }

    /// Gossip mode: repairs window `w` from the targets whose index was announced, with
    /// no index request. Targets holding nothing we lack are checked at once (their blob
    /// rebuilt from our records); the others become the parts of one session, each asked
    /// at once for as many symbols as it holds records neither we nor a larger part hold.
    /// Returns whether a session started.
    fn start_gossip(&mut self, w: WindowId, now_ns: u64, holdings: &dyn Holdings) -> bool {
        let indexed = self.indexed_targets(w, &HashSet::new());
        if indexed.is_empty() {
            return false;
        }
        let own = own_records(holdings, w);
        let mut known: HashSet<(u64, u64)> = own.keys().copied().collect();
        let mut parts = Vec::new();
        for (target, holders, entries) in indexed {
            let slot = usize::from(target.slot_size);
            let Ok(layout) = Layout::new(slot, entries.len()) else {
                self.drop_target(w, &target.root);
                continue;
            };
            if entries.iter().all(|e| own.contains_key(&(e.offset_ns, e.seq))) {
                self.check_locally(&target, &entries, layout, &own);
                continue;
            }
            let need = entries.iter().filter(|e| !known.contains(&(e.offset_ns, e.seq))).count() as u32;
            known.extend(entries.iter().map(|e| (e.offset_ns, e.seq)));
            if need == 0 {
                // A larger part gives all it holds: checked once that one is stored.
                continue;
            }
            parts.push(Part::new(target, holders, entries, layout, need));
        }
        if parts.is_empty() {
            return false;
        }
        for part in &mut parts {
            let want = part.need + self.config.overhead;
            self.ask_part(w, part, want);
        }
        let first = parts[0].target;
        let holders = parts[0].holders.clone();
        let mut multi = Box::new(Multi { parts, own });
        // A part whose requests could not be made is settled at once.
        let step = self.advance(w, &mut multi);
        if matches!(step, Step::Continue) {
            let phase = Phase::Gossip(multi);
            self.sessions.insert(w, Session { target: first, mode: Mode::Compact, holders, phase, progress_ns: now_ns });
        }
        true
    }

    /// The targets of window `w` with an announced index (its entries checked), but not
    /// those in `skip`, nor those gone verified or too big to repair: largest first.
    fn indexed_targets(&self, w: WindowId, skip: &HashSet<Root>) -> Vec<(Summary, Vec<P>, Vec<Entry>)> {
        let mut indexed: Vec<(Summary, Vec<P>, Vec<Entry>)> = self
            .wanted
            .get(&w)
            .into_iter()
            .flat_map(|t| t.values())
            .filter(|t| !t.escalate && !skip.contains(&t.summary.root))
            .filter(|t| t.summary.count <= Layout::MAX_SLOTS && t.summary.blob_len() <= MAX_REPAIR_BLOB)
            .filter_map(|t| {
                let entries = t.index.as_ref()?.entries(&t.summary).ok()?;
                Some((t.summary, t.holders.iter().cloned().collect(), entries))
            })
            .collect();
        indexed.sort_by_key(|(s, _, _)| (std::cmp::Reverse(s.count), s.root));
        indexed
    }

    /// A root announced with its index while a gossip-mode session repairs its window:
    /// it joins the session as a last part, asked at once for the records no part holds.
    fn extend_gossip(&mut self, w: WindowId) {
        let Some(mut session) = self.sessions.remove(&w) else { return };
        if let Phase::Gossip(multi) = &mut session.phase {
            let in_session: HashSet<Root> = multi.parts.iter().map(|p| p.target.root).collect();
            let mut known: HashSet<(u64, u64)> = multi.own.keys().copied().collect();
            for p in &multi.parts {
                known.extend(p.entries.iter().map(|e| (e.offset_ns, e.seq)));
            }
            for (target, holders, entries) in self.indexed_targets(w, &in_session) {
                let Ok(layout) = Layout::new(usize::from(target.slot_size), entries.len()) else { continue };
                let need = entries.iter().filter(|e| !known.contains(&(e.offset_ns, e.seq))).count() as u32;
                known.extend(entries.iter().map(|e| (e.offset_ns, e.seq)));
                if need == 0 {
                    continue;
                }
                let mut part = Part::new(target, holders, entries, layout, need);
                let want = need + self.config.overhead;
                self.ask_part(w, &mut part, want);
                multi.parts.push(part);
            }
        }
        self.sessions.insert(w, session);
    }

    /// A target that holds nothing we lack: rebuild its blob from our records and check
    /// its root. Covered if it checks; otherwise it goes to verified mode (a conflict we
    /// hold one side of, or a wrong index).
    fn check_locally(&mut self, target: &Summary, entries: &[Entry], layout: Layout, own: &Own) {
        let w = target.window;
        let (present, known_tags) = place(entries, own, layout.slot_size());
        let slot_part = Decoder::new(layout, present.iter().map(|(i, b)| (*i, b.as_slice())))
            .ok()
            .filter(|d| d.missing() == 0)
            .and_then(|mut d| d.try_finish());
        match slot_part.and_then(|p| rebuild(target, entries, &known_tags, p)) {
            Some(records) => {
                self.stats.windows_covered += 1;
                self.stats.windows_from_gossip += 1;
                // Claims about our row are checked only over a root we hold as such.
                let (rows, _) = self.take_target(w, &target.root);
                self.out.extend(self.rows_action(w, &records, rows));
                self.covered.insert(target.root);
            }
            None => {
                self.stats.verification_failures += 1;
                self.escalate(w, &target.root, None);
            }
        }
    }

    /// Asks a part's working holders for `want` more symbols, split evenly, each from
    /// its own ESI band.
    fn ask_part(&mut self, w: WindowId, part: &mut Part<P>, want: u32) {
        self.ask_holders(w, part.target.root, &part.layout, &part.holders, &mut part.asked, want);
    }

    fn on_gossip(&mut self, session: &mut Session<P>, id: RequestId, peer: P, response: Option<Response>) -> Step {
        let phase = std::mem::replace(&mut session.phase, Phase::Index { id: 0 });
        let Phase::Gossip(mut multi) = phase else {
            session.phase = phase;
            return Step::Continue;
        };
        let w = session.target.window;
        if let Some(k) = multi.parts.iter().position(|p| p.asked.outstanding.contains_key(&id)) {
            let part = &mut multi.parts[k];
            let (holder, count) = part.asked.outstanding.remove(&id).unwrap_or_default();
            let root = part.target.root;
            let layout = part.layout;
            match response {
                _ if part.state != PartState::Open => {}
                Some(Response::Symbols { data })
                    if data.len() % layout.symbol_len() == 0 && data.len() / layout.symbol_len() <= count as usize =>
                {
                    self.answered(w, &root, &peer);
                    for bytes in data.chunks_exact(layout.symbol_len()) {
                        self.stats.symbols_received += 1;
                        let Ok(symbol) = Symbol::from_bytes(bytes, &layout) else {
                            self.stats.symbols_rejected += 1;
                            continue;
                        };
                        match &mut part.decoder {
                            Some((decoder, _)) => match decoder.push(symbol) {
                                Ok(p) if p.symbol == repair::Disposition::Used => self.stats.symbols_used += 1,
                                Ok(_) => {}
                                Err(_) => self.stats.symbols_rejected += 1,
                            },
                            None => part.buffered.push(symbol),
                        }
                    }
                }
                None if self.no_answer(w, &root, &peer) => {}
                other => {
                    if !matches!(other, None | Some(Response::NotFound)) {
                        self.blame(&peer, Blame::Malformed);
                    }
                    part.asked.failed[holder] = true;
                    self.drop_holder(w, &root, &peer);
                }
            }
        }
        let step = self.advance(w, &mut multi);
        session.phase = Phase::Gossip(multi);
        step
    }

    /// Decodes what can be decoded, in part order, and asks again for what failed.
    fn advance(&mut self, w: WindowId, multi: &mut Multi<P>) -> Step {
        // Parts after the first open one wait for its records before decoding.
        let mut blocked = false;
        for k in 0..multi.parts.len() {
            if multi.parts[k].state != PartState::Open {
                continue;
            }
            if blocked {
                let part = &mut multi.parts[k];
                let have = part.buffered.len() as u32;
                if part.asked.outstanding.is_empty() && have < part.need {
                    if part.asked.failed.iter().all(|f| *f) {
                        part.state = PartState::Dropped;
                        continue;
                    }
                    let want = part.need - have;
                    self.ask_part(w, part, want);
                    if part.asked.outstanding.is_empty() {
                        part.state = PartState::Dropped;
                    }
                }
                continue;
            }
            if multi.parts[k].decoder.is_none() {
                let part = &mut multi.parts[k];
                let (present, known_tags) = place(&part.entries, &multi.own, part.layout.slot_size());
                match Decoder::new(part.layout, present.iter().map(|(i, b)| (*i, b.as_slice()))) {
                    Ok(mut decoder) => {
                        for symbol in part.buffered.drain(..) {
                            match decoder.push(symbol) {
                                Ok(p) if p.symbol == repair::Disposition::Used => self.stats.symbols_used += 1,
                                Ok(_) => {}
                                Err(_) => self.stats.symbols_rejected += 1,
                            }
                        }
                        part.decoder = Some((decoder, known_tags));
                    }
                    Err(_) => {
                        part.state = PartState::Dropped;
                        let root = part.target.root;
                        self.drop_target(w, &root);
                        continue;
                    }
                }
            }
            let part = &mut multi.parts[k];
            let Some((decoder, known_tags)) = part.decoder.as_mut() else { continue };
            if decoder.missing() == 0 || decoder.ready() {
                match decoder.try_finish() {
                    Some(slot_part) => {
                        let missing = decoder.missing();
                        let target = part.target;
                        match rebuild(&target, &part.entries, known_tags, slot_part) {
                            Some(records) => {
                                part.state = PartState::Done;
                                add_own(&mut multi.own, w, records.iter().cloned());
                                self.finish_part(&target, missing, records);
                            }
                            None => {
                                // As in compact mode: a guessed tag, or a lying holder.
                                part.state = PartState::Dropped;
                                self.stats.verification_failures += 1;
                                self.escalate(w, &target.root, None);
                            }
                        }
                        continue;
                    }
                    None => self.stats.decode_failures += 1,
                }
            }
            if part.asked.outstanding.is_empty() {
                let Some((decoder, _)) = part.decoder.as_ref() else { continue };
                let need = decoder.needed().max(1);
                if part.asked.failed.iter().all(|f| *f) {
                    part.state = PartState::Dropped;
                    continue;
                }
                self.ask_part(w, part, need);
                if part.asked.outstanding.is_empty() {
                    part.state = PartState::Dropped;
                    continue;
                }
            }
            blocked = true;
        }
        if multi.parts.iter().all(|p| p.state != PartState::Open) {
            Step::Done
        } else {
            Step::Continue
        }
    }

    /// A part verified against its root: hand its records to the node.
    fn finish_part(&mut self, target: &Summary, missing: u32, records: Vec<Record>) {
        self.stats.windows_from_gossip += 1;
        self.hand_over(target, missing, records);
    }

    /// A target verified against its root, `missing` of its records new to us: the target
    /// is done, and its records go to the node. Until the node reports them stored
    /// ([`Self::handle_local`]) no session starts for the window, or it would count them
    /// missing again and fetch them twice. Parts of one session decoded together go out
    /// as one [`Action::Store`]: stored one by one, the first store's `handle_local`
    /// would start a session that counts the others' records missing.
    fn hand_over(&mut self, target: &Summary, missing: u32, records: Vec<Record>) {
        let w = target.window;
        let announced_ns = self.wanted.get(&w).and_then(|t| t.get(&target.root)).map_or(0, |t| t.announced_ns);
        let (rows, _) = self.take_target(w, &target.root);
        let rows = self.rows_action(w, &records, rows);
        self.covered.insert(target.root);
        if missing == 0 {
            self.stats.windows_covered += 1;
        } else {
            self.stats.windows_repaired += 1;
            self.stats.records_repaired += u64::from(missing);
            if self.unstored.len() < self.config.max_wanted {
                self.unstored.insert(w, self.now_ns);
            }
            let queued = self.out.iter_mut().find_map(|a| match a {
                Action::Store(r) if r.window == w => Some(r),
                _ => None,
            });
            match queued {
                Some(r) => {
                    let mut keys: HashSet<(u64, u64, Vec<u8>)> =
                        r.records.iter().map(|x| (x.device_time_ns, x.seq, x.content_bytes())).collect();
                    r.records.extend(records.into_iter().filter(|x| keys.insert((x.device_time_ns, x.seq, x.content_bytes()))));
                    r.root = target.root;
                    r.announced_ns = r.announced_ns.min(announced_ns);
                }
                None => self.out.push_back(Action::Store(Repaired { window: w, root: target.root, records, announced_ns })),
            }
        }
        // After the records they are over.
        self.out.extend(rows);
    }

    fn on_symbols(&mut self, session: &mut Session<P>, id: RequestId, peer: P, response: Option<Response>) -> Step {
        let phase = std::mem::replace(&mut session.phase, Phase::Index { id: 0 });
        let Phase::Symbols(mut slots) = phase else {
            session.phase = phase;
            return Step::Continue;
        };
        let step = self.on_symbols_inner(session, &mut slots, id, peer, response);
        session.phase = Phase::Symbols(slots);
        step
    }

    fn on_symbols_inner(&mut self, session: &mut Session<P>, slots: &mut Slots, id: RequestId, peer: P, response: Option<Response>) -> Step {
        let w = session.target.window;
        let Some((holder, count)) = slots.asked.outstanding.remove(&id) else { return Step::Continue };
        let layout = slots.decoder.layout();
        match response {
            Some(Response::Symbols { data }) if data.len() % layout.symbol_len() == 0 && data.len() / layout.symbol_len() <= count as usize => {
                self.answered(w, &session.target.root, &peer);
                for bytes in data.chunks_exact(layout.symbol_len()) {
                    self.stats.symbols_received += 1;
                    match Symbol::from_bytes(bytes, &layout).map(|s| slots.decoder.push(s)) {
                        Ok(Ok(p)) if p.symbol == repair::Disposition::Used => self.stats.symbols_used += 1,
                        Ok(Ok(_)) => {}
                        _ => self.stats.symbols_rejected += 1,
                    }
                }
            }
            // No answer: its share is asked again in the next round, from it too unless it
            // has now failed too often.
            None if self.no_answer(w, &session.target.root, &peer) => {}
            other => {
                if !matches!(other, None | Some(Response::NotFound)) {
                    self.blame(&peer, Blame::Malformed);
                }
                slots.asked.failed[holder] = true;
                self.drop_holder(w, &session.target.root, &peer);
            }
        }
        if slots.decoder.ready() {
            if let Some(slot_part) = slots.decoder.try_finish() {
                return self.verify_and_store(session, slots, slot_part);
            }
            self.stats.decode_failures += 1;
        }
        if slots.asked.outstanding.is_empty() {
            if slots.asked.failed.iter().all(|f| *f) {
                return Step::Done;
            }
            let need = slots.decoder.needed().max(1);
            self.ask(session, slots, need);
            if slots.asked.outstanding.is_empty() {
                return Step::Done;
            }
        }
        Step::Continue
    }

    /// Fills in the rebuilt slots' tags, rebuilds the blob and checks its root: the only
    /// way records leave a session. On a mismatch, compact mode goes verified; verified
    /// mode blames its one holder.
    fn verify_and_store(&mut self, session: &Session<P>, slots: &Slots, slot_part: Vec<u8>) -> Step {
        let target = session.target;
        let w = target.window;
        match rebuild(&target, &slots.entries, &slots.known_tags, slot_part) {
            Some(records) => self.hand_over(&target, slots.new, records),
            None => {
                self.stats.verification_failures += 1;
                match session.mode {
                    // Our guess of a tag may be wrong (a conflict), or a holder lied:
                    // start again with proofs, one holder at a time.
                    Mode::Compact => self.escalate(w, &target.root, None),
                    Mode::Verified => {
                        let h = session.holders[0].clone();
                        self.blame(&h, Blame::BadSymbols);
                        self.escalate(w, &target.root, Some(&h));
                    }
                }
            }
        }
        Step::Done
    }
}

enum Step {
    Continue,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::{Held, StreamDigest};
    use crate::record::StreamId;
    use crate::wire::Dialect;

    /// A node that holds windows of some streams (and nothing a test asks of them).
    struct Holds(Vec<StreamId>);

    impl Holdings for Holds {
        fn summary(&self, _: WindowId) -> Option<Summary> {
            None
        }
        fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
            self.0.contains(&stream).then_some(StreamDigest { stream, windows: 1, digest: [0; 16] })
        }
        fn streams(&self, _: Option<StreamId>, _: usize) -> Vec<StreamDigest> {
            Vec::new()
        }
        fn windows(&self, _: StreamId, _: Option<u64>, _: usize) -> Vec<Summary> {
            Vec::new()
        }
        fn records(&self, _: WindowId) -> Vec<Record> {
            Vec::new()
        }
        fn held(&self, _: WindowId, _: &Root) -> Option<Held> {
            None
        }
    }

    /// A node that holds nothing.
    const EMPTY: Holds = Holds(Vec::new());

    fn summary(count: u32, slot_size: u16) -> Summary {
        Summary {
            window: WindowId { stream: StreamId::new(Dialect::Iotstream, 1), start: 0 },
            root: [7; 32],
            count,
            slot_size,
            provenance: [0; 8],
        }
    }

    #[test]
    fn a_window_too_big_to_decode_is_not_asked_for() {
        let mut r: Reconciler<u8> = Reconciler::new(Config::default());
        // 50,000 records of 2 KiB: a 100 MiB blob.
        r.handle_announce(1, &[summary(50_000, 2048)], 0, &EMPTY);
        assert!(r.poll().is_none());
        assert_eq!(r.stats().announcements_ignored, 1);
        // A normal window is asked for: its index, from the peer that announced it.
        r.handle_announce(1, &[summary(60, 32)], 0, &EMPTY);
        match r.poll() {
            Some(Action::Send { peer: 1, request: Request::Index { verified: false, .. }, .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// The compact index of `summary(60, 32)`'s window: records a second apart.
    fn index_of_60() -> message::IndexPart {
        let s = summary(60, 32);
        let header = window::Header { stream: s.window.stream, start_ns: s.window.start, count: 60, slot_size: 32 };
        let entries: Vec<window::IndexEntry> =
            (0..60u64).map(|i| window::IndexEntry { offset_ns: i * 1_000_000_000, seq: i, tag: [0; 8] }).collect();
        message::IndexPart::compact(&header, &entries)
    }

    #[test]
    fn an_announced_index_is_used_and_a_bad_one_refused() {
        let requests = |r: &mut Reconciler<u8>| -> Vec<Request> {
            std::iter::from_fn(|| r.poll())
                .filter_map(|a| match a {
                    Action::Send { request, .. } => Some(request),
                    _ => None,
                })
                .collect()
        };
        // With its index: the symbols of every record at once, no index request.
        let mut r: Reconciler<u8> = Reconciler::new(Config::default());
        let announce = message::Announce { windows: vec![summary(60, 32)], indexes: vec![Some(index_of_60())], rows: Vec::new(), others: None, signature: Vec::new() };
        r.handle_gossip(1, "n1", &announce, 0, &EMPTY);
        let sent = requests(&mut r);
        assert!(!sent.is_empty() && sent.iter().all(|q| matches!(q, Request::Symbols { .. })), "{sent:?}");
        let asked: u32 = sent.iter().map(|q| if let Request::Symbols { count, .. } = q { *count } else { 0 }).sum();
        assert_eq!(asked, 60 + Config::default().overhead);
        assert_eq!(r.stats().indexes_refused, 0);

        // An index that does not fit its summary (another count), or a verified one where
        // only compact ones are allowed: refused and counted; the summary still counts and
        // the window is repaired the old way, from an index request.
        let message::IndexPart::Compact { slot_size, columns, tags, .. } = index_of_60() else { panic!() };
        let wrong_count = message::IndexPart::Compact { count: 59, slot_size, columns, tags };
        let verified = message::IndexPart::Verified { leaves: vec![0; 64], proof: Vec::new() };
        for (k, bad) in [wrong_count, verified].into_iter().enumerate() {
            let mut r: Reconciler<u8> = Reconciler::new(Config::default());
            let announce = message::Announce { windows: vec![summary(60, 32)], indexes: vec![Some(bad)], rows: Vec::new(), others: None, signature: Vec::new() };
            r.handle_gossip(1, "n1", &announce, 0, &EMPTY);
            assert_eq!(r.stats().indexes_refused, 1, "case {k}");
            assert!(matches!(requests(&mut r)[..], [Request::Index { verified: false, .. }]), "case {k}");
        }
    }

    #[test]
    fn a_holder_that_does_not_answer_is_asked_again_then_dropped() {
        let mut r: Reconciler<u8> = Reconciler::new(Config::default());
        r.handle_announce(1, &[summary(60, 32)], 0, &EMPTY);
        let index = |r: &mut Reconciler<u8>| -> Vec<RequestId> {
            std::iter::from_fn(|| r.poll())
                .filter_map(|a| match a {
                    Action::Send { id, peer: 1, request: Request::Index { .. } } => Some(id),
                    _ => None,
                })
                .collect()
        };
        let mut ids = index(&mut r);
        for attempt in 1..=Config::default().max_failures {
            assert_eq!(ids.len(), 1, "attempt {attempt}: one index request to the only holder");
            r.handle_response(ids[0], None, u64::from(attempt), &EMPTY);
            ids = index(&mut r);
        }
        assert!(ids.is_empty(), "dropped after {} unanswered requests", Config::default().max_failures);
        assert_eq!(r.backlog(), (0, 0));
        // A holder that says it does not hold the root is dropped at once.
        r.handle_announce(2, &[Summary { root: [8; 32], ..summary(60, 32) }], 10, &EMPTY);
        let id = match r.poll() {
            Some(Action::Send { id, peer: 2, .. }) => id,
            other => panic!("{other:?}"),
        };
        r.handle_response(id, Some(Response::NotFound), 11, &EMPTY);
        assert!(r.poll().is_none());
    }

    #[test]
    fn a_burst_of_new_streams_waits_behind_the_repair_of_established_ones() {
        let config = Config { max_sessions: 4, max_requests_per_peer: 64, ..Config::default() };
        let mut r: Reconciler<u8> = Reconciler::new(config);
        let window = |device: u32, root: u8| Summary {
            window: WindowId { stream: StreamId::new(Dialect::Iotstream, device), start: window::SPAN_NS },
            root: [root; 32],
            ..summary(60, 32)
        };
        // 200 one-minute windows of device ids this node has never heard of, all sorting
        // before the one established stream's window (device 50,000), in one announcement.
        let mut windows: Vec<Summary> = (1..=200u32).map(|d| window(d, 1)).collect();
        windows.push(window(50_000, 2));
        let established = Holds(vec![StreamId::new(Dialect::Iotstream, 50_000)]);
        r.handle_announce(1, &windows, 0, &established);
        let asked = |r: &mut Reconciler<u8>| -> Vec<Root> {
            std::iter::from_fn(|| r.poll())
                .filter_map(|a| match a {
                    Action::Send { request: Request::Index { root, .. }, .. } => Some(root),
                    _ => None,
                })
                .collect()
        };
        let first = asked(&mut r);
        assert_eq!(first.len(), 4, "as many sessions as allowed");
        assert_eq!(first[0], [2; 32], "the established stream's window first");
        // Without anything held, the same windows go in window order.
        let mut r: Reconciler<u8> = Reconciler::new(Config { max_sessions: 4, max_requests_per_peer: 64, ..Config::default() });
        r.handle_announce(1, &windows, 0, &EMPTY);
        assert_eq!(asked(&mut r), vec![[1; 32]; 4], "new streams only, the lowest ids first");
    }

    #[test]
    fn a_peer_flooding_new_streams_makes_this_node_want_them_at_its_budget_only() {
        // Sessions off: what is wanted stays wanted, so the backlog counts what was taken.
        let budget = Budget { rate: 10.0, burst: 100 };
        let config = Config { new_streams_per_peer: budget, max_sessions: 0, ..Config::default() };
        let mut r: Reconciler<u8> = Reconciler::new(config);
        let established = StreamId::new(Dialect::Iotstream, 65_000);
        let holds = Holds(vec![established]);
        let window = |device: u32, k: u64| Summary {
            window: WindowId { stream: StreamId::new(Dialect::Iotstream, device), start: k * window::SPAN_NS },
            root: [1; 32],
            ..summary(60, 32)
        };
        let gossip = |windows: &[Summary]| message::Announce {
            windows: windows.to_vec(),
            indexes: Vec::new(),
            rows: Vec::new(),
            others: None,
            signature: Vec::new(),
        };
        // Peer 1 announces 10,000 device ids nobody has heard, a window each, then a second
        // window of the first of them and ten windows of a stream this node holds.
        let mut flood: Vec<Summary> = (1..=10_000).map(|d| window(d, 1)).collect();
        flood.push(window(1, 2));
        flood.extend((1..=10).map(|k| window(65_000, k)));
        for part in flood.chunks(800) {
            r.handle_gossip(1, "n1", &gossip(part), 0, &holds);
        }
        assert_eq!(r.backlog().0, 100 + 1 + 10, "its burst, a wanted stream's next window, the held stream's windows");
        assert_eq!(r.stats().new_streams_deferred, 9_900);
        // Another peer has a budget of its own.
        let other: Vec<Summary> = (20_001..=20_050).map(|d| window(d, 1)).collect();
        r.handle_gossip(2, "n2", &gossip(&other), 0, &holds);
        assert_eq!(r.backlog().0, 161);
        // A second later, peer 1 gets its rate: ten more.
        r.handle_gossip(1, "n1", &gossip(&flood[..800]), 1_000_000_000, &holds);
        assert_eq!(r.backlog().0, 171);

        // The summary exchange finds the rest within the same budget: of peer 1's streams,
        // the held one that differs is asked for at once, new ones as tokens come.
        // Every stream asked for, each answered (with nothing) so the next one goes out.
        let windows_asked = |r: &mut Reconciler<u8>, now: u64| -> Vec<StreamId> {
            let mut asked = Vec::new();
            loop {
                let sent: Vec<(RequestId, StreamId)> = std::iter::from_fn(|| r.poll())
                    .filter_map(|a| match a {
                        Action::Send { id, request: Request::Windows { stream, .. }, .. } => Some((id, stream)),
                        _ => None,
                    })
                    .collect();
                if sent.is_empty() {
                    return asked;
                }
                for (id, stream) in sent {
                    asked.push(stream);
                    r.handle_response(id, Some(Response::Windows { windows: Vec::new(), more: false }), now, &holds);
                }
            }
        };
        let list = |r: &mut Reconciler<u8>, now: u64| {
            r.peer_up(1, now);
            r.tick(now, &holds);
            let id = std::iter::from_fn(|| r.poll())
                .find_map(|a| match a {
                    Action::Send { id, peer: 1, request: Request::Streams { .. } } => Some(id),
                    _ => None,
                })
                .expect("a summary exchange with peer 1");
            let digests = (1_001..=1_500)
                .chain([65_000])
                .map(|d| StreamDigest { stream: StreamId::new(Dialect::Iotstream, d), windows: 1, digest: [9; 16] })
                .collect();
            r.handle_response(id, Some(Response::Streams { digests, more: false }), now, &holds);
        };
        list(&mut r, 1_000_000_000);
        assert_eq!(windows_asked(&mut r, 1_000_000_000), [established], "no tokens left: only the held stream");
        r.peer_down(&1);
        list(&mut r, 3_000_000_000);
        let asked = windows_asked(&mut r, 3_000_000_000);
        assert_eq!(asked.len(), 21, "two seconds' tokens, and the held stream: {asked:?}");
        assert_eq!(r.stats().new_streams_deferred, 9_900 + 690 + 500 + 480);
    }

    #[test]
    fn requests_beyond_the_per_peer_cap_wait_their_turn() {
        let config = Config { max_requests_per_peer: 2, ..Config::default() };
        let mut r: Reconciler<u8> = Reconciler::new(config);
        let windows: Vec<Summary> = (0..5u64)
            .map(|i| Summary { window: WindowId { stream: StreamId::new(Dialect::Iotstream, 1), start: i * window::SPAN_NS }, ..summary(60, 32) })
            .collect();
        r.handle_announce(9, &windows, 0, &EMPTY);
        let mut sent = Vec::new();
        while let Some(Action::Send { id, .. }) = r.poll() {
            sent.push(id);
        }
        assert_eq!(sent.len(), 2, "two in flight, three waiting");
        r.handle_response(sent[0], None, 1, &EMPTY);
        let next: Vec<_> = std::iter::from_fn(|| r.poll()).filter(|a| matches!(a, Action::Send { .. })).collect();
        assert_eq!(next.len(), 1, "one answer lets one more go");
    }
}
