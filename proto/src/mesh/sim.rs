//! A simulated mesh: N nodes, each with a requester state machine and an in-memory
//! [`Store`], exchanging gossip and repair-protocol messages through seeded impaired links
//! on a virtual clock. Pure and deterministic like the rest of `proto`: the same
//! [`Config`], seeds and inputs give the same run, byte for byte, in milliseconds.
//!
//! It is the mesh's behavioural test bed (`proto/tests/mesh_sim.rs`) and the engine of
//! the in-process repair-overhead benchmark (`telemesh-bench repair`, `docs/benchmarks.md`).
//!
//! # The model
//!
//! - **Nodes.** Each node has a [`Store`] (the [`Holdings`] the protocol asks), an
//!   [`EncoderCache`] for answering symbol requests, and a requester chosen by
//!   [`Scheme`]: telemesh's own [`Reconciler`], or one of the two baselines of
//!   [`baseline`] (ARQ, whole-window fetch). All three share the same gossip and summary
//!   exchange (the baselines run a [`Reconciler`] with repair sessions switched off for
//!   that), so only the repair differs.
//! - **Links.** Every directed pair of nodes has its own [`impair::Link`]; each message
//!   (a gossip announcement, a request, a response) is one `send` on it: lost whole or
//!   delivered whole after the link's delay. A request whose request or response is lost
//!   fails after [`Config::request_timeout_ns`], as a request over the node's overlay fails
//!   after its timeout. The link between nodes `a < b` is relay session `a·n + b` of the
//!   overlay seed: `seed + 2(a·n + b)` from `a` to `b`, `+ 1` back (`telemesh-relay`'s
//!   numbering, `docs/relay.md`).
//! - **Time.** An event queue ordered by (time, arrival order). Every node ticks every
//!   [`Config::tick_ns`]: windows whose set or provenance changed since the last tick are
//!   announced then (as the node does), and the requester's timers run.
//! - **Bytes.** Every message is encoded as the node would send it (bincode, `message`)
//!   and decoded on arrival. A repair-protocol request or response counts its bytes plus
//!   the 4-byte length prefix of its frame; a gossip announcement counts its bytes only
//!   (gossipsub's signature and framing, about 150 bytes a message, are not modelled).
//!   Bytes are counted when sent, whether or not they arrive. See [`Kind`].
//! - **Round trips.** Each node keeps, per window, the number of repair exchanges
//!   (request and response, or request and timeout) on the critical path to what it holds:
//!   a repair request goes out at one more than the node's count for that window, an
//!   answer or timeout raises the count to the request's, and an announcement raises the
//!   receiver's count to the sender's. Requests in flight together count once. When all
//!   nodes first hold the same root of a window, its round trips are the largest count.
//!
//! Helpers for benchmarks ([`Sensors`], [`SensorLoss`], [`hear`]) make the sensors' records
//! and the seeded pattern of which site hears which datagram, the same pattern a
//! `telemesh-relay` with the same seeds would make.

pub mod baseline;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use std::sync::Arc;

use super::message::{self, IndexPart, Request, Response, StreamDigest, Summary};
use super::reconcile::{self, Action, Blame, Reconciler, Repaired, RequestId};
use super::announce::{self as schedule, Announcer};
use super::{serve, Held, Holdings, Table, WindowId};
use crate::impair;
use crate::record::{Kind as RecordKind, Readings, Record, StreamId};
use crate::repair::{CacheConfig, EncoderCache};
use crate::window::{self, Root};
use crate::wire::Dialect;

/// A node's index in the simulation.
pub type NodeId = usize;

/// A record's identity in a window: device time, seq, content tag.
pub type Key = (u64, u64, [u8; 8]);

/// A simulated node's signature: as long as ed25519's (64 bytes), so that announcements
/// weigh what they weigh on real nodes; nobody checks it (the simulator's nodes are
/// members whose keys `node/` would hold).
fn signature(node: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 64];
    blake3::Hasher::new_keyed(blake3::hash(node.as_bytes()).as_bytes()).update(bytes).finalize_xof().fill(&mut out);
    out
}

/// The key of a record.
pub fn key(r: &Record) -> Key {
    (r.device_time_ns, r.seq, r.content_tag())
}

/// Which repair scheme the nodes run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// telemesh: compact index, then RaptorQ symbols from every holder ([`Reconciler`]).
    Telemesh,
    /// Baseline: ask one holder for the records we lack ([`baseline`]).
    Arq,
    /// Baseline: download a holder's whole blob ([`baseline`]).
    Fetch,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::Telemesh, Scheme::Arq, Scheme::Fetch];

    pub fn name(self) -> &'static str {
        match self {
            Scheme::Telemesh => "telemesh",
            Scheme::Arq => "arq",
            Scheme::Fetch => "whole-window",
        }
    }
}

/// How a node answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Serve {
    Honest,
    /// Well-formed but wrong answers: every compact index shifted, every other proof
    /// broken, bits flipped in every symbol, record slot and blob it sends.
    Corrupt,
    /// Honest answers, but as a coordinator it says every other node heard every record
    /// of the windows it announces (forged rows).
    ForgeRows,
}

/// A simulation's set-up.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: usize,
    pub scheme: Scheme,
    /// The requesters' tuning (the baselines use its limits, sync interval and ban rules).
    pub mesh: reconcile::Config,
    /// Every overlay link, each direction.
    pub overlay: impair::Config,
    /// Base seed of the overlay links.
    pub seed: u64,
    /// A request with no answer by then fails.
    pub request_timeout_ns: u64,
    /// Every node ticks this often.
    pub tick_ns: u64,
    /// Per node; missing entries are honest.
    pub serve: Vec<Serve>,
    /// Simulated time at the start.
    pub start_ns: u64,
    /// telemesh announces each window with its compact index (gossip mode of
    /// [`Reconciler`]); off, every repair asks a holder for the index first.
    pub gossip_index: bool,
    /// telemesh with coordinators (`docs/protocol.md`, "Coordinators"): each window's
    /// `r` coordinators ([`super::Members::coordinators`]) announce it to every node with
    /// the rows of every node they know; the others send their own changes to those
    /// coordinators only, and announce nothing they got by repair. `None`: every node
    /// announces every change to every node.
    pub coordinators: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            nodes: 3,
            scheme: Scheme::Telemesh,
            mesh: reconcile::Config::default(),
            overlay: impair::Config {
                delay_ns: 20_000_000,
                ..impair::Config::default()
            },
            seed: 0,
            request_timeout_ns: 500_000_000,
            tick_ns: 250_000_000,
            serve: Vec::new(),
            start_ns: 0,
            gossip_index: true,
            coordinators: None,
        }
    }
}

/// One window as a simulated node holds it: its records, and the blob, table and summary
/// made from them. The table is the node's whole record of who heard each record: a row
/// per node, a bit per record (not a set of names per record, which at N nodes is N² names
/// per window on every node); it is rebuilt over the new record order when records come.
#[derive(Debug, Clone)]
pub struct Win {
    records: BTreeMap<Key, Record>,
    blob: Arc<Vec<u8>>,
    table: Table,
    summary: Summary,
}

impl Win {
    /// The window of `records` (all of window `w`), with provenance `heard`: `(key, node)`
    /// for each node that heard the record of that key (keys of no record are left out);
    /// `None` if they do not form a blob.
    pub fn build<'a>(
        w: WindowId,
        records: BTreeMap<Key, Record>,
        heard: impl IntoIterator<Item = (Key, &'a str)>,
    ) -> Option<Win> {
        let list: Vec<Record> = records.values().cloned().collect();
        let blob = window::encode(w.stream, w.start, &list).ok()?;
        let at: HashMap<&Key, usize> = records.keys().zip(0..).collect();
        let heard = heard.into_iter().filter_map(|(k, n)| Some((*at.get(&k)?, n)));
        let table = Table::from_heard(records.len(), heard);
        let summary = super::summarize(&blob, &table)?;
        Some(Win {
            records,
            blob: Arc::new(blob),
            table,
            summary,
        })
    }

    pub fn records(&self) -> &BTreeMap<Key, Record> {
        &self.records
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn summary(&self) -> Summary {
        self.summary
    }

    pub fn blob(&self) -> &[u8] {
        &self.blob
    }
}

/// What `table` (over the records `keys`, in key order) says: `(key, node)` for each
/// record a node heard.
fn heard_in<'a>(keys: &'a [Key], table: &'a Table) -> impl Iterator<Item = (Key, &'a str)> {
    keys.iter().enumerate().flat_map(move |(i, k)| table.heard(i).map(move |n| (*k, n)))
}

/// A node's windows, in memory: the [`Holdings`] of a simulated node. Every window in it
/// is sealed.
#[derive(Debug, Default)]
pub struct Store {
    windows: BTreeMap<WindowId, Win>,
    /// List every record twice in [`Holdings::records`] (as a node does with a record both
    /// stored and still in memory).
    pub twice: bool,
    /// Roots this node held and replaced, still served (newest last, at most
    /// [`RETIRED_ROOTS`]): a peer that heard our announcement may ask for symbols of a root
    /// after our repair replaced it.
    retired: std::collections::VecDeque<(Root, Held)>,
}

/// Replaced roots a simulated node keeps serving.
pub const RETIRED_ROOTS: usize = 4096;

impl Store {
    pub fn windows(&self) -> &BTreeMap<WindowId, Win> {
        &self.windows
    }

    pub fn window(&self, w: WindowId) -> Option<&Win> {
        self.windows.get(&w)
    }

    /// Adds `records` to window `w` (those it holds already count once) and `heard_by` to
    /// their provenance; returns the new summary.
    fn add(
        &mut self,
        w: WindowId,
        records: impl IntoIterator<Item = Record>,
        heard_by: Option<&str>,
    ) -> Option<Summary> {
        let old = self.current(w);
        let (mut all, table) = self.take(w);
        let keys: Vec<Key> = all.keys().copied().collect();
        let mut given = Vec::new();
        for r in records {
            if r.stream != w.stream || window::start(r.device_time_ns) != w.start {
                continue;
            }
            let k = key(&r);
            all.entry(k).or_insert(r);
            given.push(k);
        }
        let heard = heard_by.into_iter().flat_map(|name| given.iter().map(move |k| (*k, name)));
        let new = self.put(w, all, heard_in(&keys, &table).chain(heard));
        self.retire(old, new);
        new
    }

    /// Window `w` as held now, with its root.
    fn current(&self, w: WindowId) -> Option<(Root, Held)> {
        self.windows.get(&w).map(|win| (win.summary.root, Held { blob: Arc::clone(&win.blob), table: win.table.clone() }))
    }

    /// Keeps serving `old` if `new` replaced it with another root.
    fn retire(&mut self, old: Option<(Root, Held)>, new: Option<Summary>) {
        if let Some((root, held)) = old.filter(|(r, _)| new.is_none_or(|n| n.root != *r)) {
            self.retired.push_back((root, held));
            while self.retired.len() > RETIRED_ROOTS {
                self.retired.pop_front();
            }
        }
    }

    /// Merges a peer's provenance table of the window whose root is `root`.
    fn merge_table(&mut self, w: WindowId, root: &Root, table: &Table) -> Option<Summary> {
        let win = self.windows.get(&w).filter(|win| win.summary.root == *root)?;
        let keys: Vec<Key> = win.records.keys().copied().collect();
        self.merge_rows(w, &keys, table)
    }

    /// Merges rows of `table` over the records `keys` (some of this window's).
    fn merge_rows(&mut self, w: WindowId, keys: &[Key], table: &Table) -> Option<Summary> {
        let win = self.windows.get(&w)?;
        if !table.fits(keys.len()) || keys.iter().any(|k| !win.records.contains_key(k)) {
            return None;
        }
        let (all, own) = self.take(w);
        let held: Vec<Key> = all.keys().copied().collect();
        self.put(w, all, heard_in(&held, &own).chain(heard_in(keys, table)))
    }

    /// Takes window `w` out: its records and its table (over them, in key order).
    fn take(&mut self, w: WindowId) -> (BTreeMap<Key, Record>, Table) {
        match self.windows.remove(&w) {
            Some(win) => (win.records, win.table),
            None => Default::default(),
        }
    }

    fn put<'a>(
        &mut self,
        w: WindowId,
        all: BTreeMap<Key, Record>,
        heard: impl IntoIterator<Item = (Key, &'a str)>,
    ) -> Option<Summary> {
        if all.is_empty() {
            return None;
        }
        let win = Win::build(w, all, heard)?;
        let summary = win.summary;
        self.windows.insert(w, win);
        Some(summary)
    }
}

impl Holdings for Store {
    fn summary(&self, window: WindowId) -> Option<Summary> {
        self.windows.get(&window).map(|w| w.summary)
    }
    fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
        let list: Vec<Summary> = self
            .windows
            .range(stream_range(stream))
            .map(|(_, w)| w.summary)
            .collect();
        (!list.is_empty()).then(|| super::stream_digest(stream, &list))
    }
    fn holds(&self, stream: StreamId) -> bool {
        self.windows.range(stream_range(stream)).next().is_some()
    }
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Vec<StreamDigest> {
        let streams: BTreeSet<StreamId> = self
            .windows
            .keys()
            .map(|w| w.stream)
            .filter(|s| after.is_none_or(|a| *s > a))
            .collect();
        streams
            .into_iter()
            .take(limit)
            .filter_map(|s| self.stream(s))
            .collect()
    }
    fn windows(&self, stream: StreamId, after: Option<u64>, limit: usize) -> Vec<Summary> {
        self.windows
            .range(stream_range(stream))
            .filter(|(w, _)| after.is_none_or(|a| w.start > a))
            .take(limit)
            .map(|(_, w)| w.summary)
            .collect()
    }
    fn records(&self, window: WindowId) -> Vec<Record> {
        let once: Vec<Record> = self
            .windows
            .get(&window)
            .map(|w| w.records.values().cloned().collect())
            .unwrap_or_default();
        if self.twice {
            once.iter().chain(&once).cloned().collect()
        } else {
            once
        }
    }
    fn held(&self, window: WindowId, root: &Root) -> Option<Held> {
        match self.windows.get(&window).filter(|w| w.summary.root == *root) {
            Some(w) => Some(Held {
                blob: Arc::clone(&w.blob),
                table: w.table.clone(),
            }),
            None => self.retired.iter().rev().find(|(r, _)| r == root).map(|(_, h)| h.clone()),
        }
    }
}

fn stream_range(stream: StreamId) -> std::ops::RangeInclusive<WindowId> {
    WindowId { stream, start: 0 }..=WindowId {
        stream,
        start: u64::MAX,
    }
}

/// A request on the simulated wire: the mesh protocol's, or a baseline's (whose bytes are
/// those it would have as further variants of [`Request`]: its own enum's one-byte
/// variant number stands for theirs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    Mesh(Request),
    Baseline(baseline::Request),
}

/// A response on the simulated wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Mesh(Response),
    Baseline(baseline::Response),
}

/// What a requester asks the simulation to do (the baselines' form of [`Action`]).
#[derive(Debug, Clone)]
pub enum Out<P = NodeId> {
    Send {
        id: RequestId,
        peer: P,
        ask: Ask,
    },
    Store(Repaired),
    Provenance {
        window: WindowId,
        root: Root,
        table: Table,
    },
    Rows {
        window: WindowId,
        keys: Vec<Key>,
        table: Table,
    },
    Blame {
        peer: P,
        reason: Blame,
        disconnect: bool,
    },
}

impl<P> From<Action<P>> for Out<P> {
    /// A reconciler's action as the simulation carries it (its requests are `Ask::Mesh`).
    fn from(action: Action<P>) -> Self {
        match action {
            Action::Send { id, peer, request } => Out::Send { id, peer, ask: Ask::Mesh(request) },
            Action::Store(r) => Out::Store(r),
            Action::Provenance { window, root, table } => Out::Provenance { window, root, table },
            Action::Rows { window, keys, table } => Out::Rows { window, keys, table },
            Action::Blame { peer, reason, disconnect } => Out::Blame { peer, reason, disconnect },
        }
    }
}

/// Which leg of an exchange a message is (gossip counts as a request).
#[derive(Debug, Clone, Copy)]
enum Leg {
    Request,
    Response,
}

/// Kinds of traffic, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// Gossip announcements.
    Gossip,
    /// Summary exchange: `Streams` and `Windows` requests and responses.
    Summary,
    /// Provenance tables.
    Provenance,
    /// telemesh: `Index` requests and responses.
    Index,
    /// telemesh: `Symbols` requests and responses.
    Symbols,
    /// ARQ: record requests and responses.
    Records,
    /// Whole-window fetch (and ARQ's fallback).
    Blob,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Gossip,
        Kind::Summary,
        Kind::Provenance,
        Kind::Index,
        Kind::Symbols,
        Kind::Records,
        Kind::Blob,
    ];

    /// Whether this is repair traffic (what the repair overhead counts).
    pub fn is_repair(self) -> bool {
        matches!(
            self,
            Kind::Index | Kind::Symbols | Kind::Records | Kind::Blob
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Gossip => "gossip",
            Kind::Summary => "summary",
            Kind::Provenance => "provenance",
            Kind::Index => "index",
            Kind::Symbols => "symbols",
            Kind::Records => "records",
            Kind::Blob => "blob",
        }
    }

    fn of(ask: &Ask) -> Kind {
        match ask {
            Ask::Mesh(Request::Streams { .. } | Request::Windows { .. }) => Kind::Summary,
            Ask::Mesh(Request::Provenance { .. } | Request::Statements { .. }) => Kind::Provenance,
            Ask::Mesh(Request::Offer(_)) => Kind::Gossip,
            Ask::Mesh(Request::Index { .. }) => Kind::Index,
            Ask::Mesh(Request::Symbols { .. }) => Kind::Symbols,
            Ask::Baseline(baseline::Request::Records { .. }) => Kind::Records,
            Ask::Baseline(baseline::Request::Blob { .. }) => Kind::Blob,
        }
    }
}

/// Messages and bytes of one [`Kind`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    /// Requests sent (or gossip messages).
    pub requests: u64,
    /// Responses sent.
    pub responses: u64,
    /// Bytes sent, both ways, frames included.
    pub bytes: u64,
    /// … of which in requests (or gossip messages).
    pub request_bytes: u64,
    /// Messages lost on the way.
    pub lost: u64,
    /// Responses saying the responder does not hold that root (any more), and the bytes
    /// of those exchanges (request and response).
    pub not_found: u64,
    pub not_found_bytes: u64,
}

/// Bytes of the length prefix framing each repair-protocol message.
pub const FRAME_LEN: u64 = 4;

/// A requester's counters, the same for every scheme.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepairStats {
    pub requests: u64,
    pub request_failures: u64,
    /// Symbols (telemesh) or records (ARQ, whole-window fetch) asked for.
    pub symbols_requested: u64,
    /// Symbols or records received.
    pub symbols_received: u64,
    pub decode_failures: u64,
    pub verification_failures: u64,
    pub windows_repaired: u64,
    /// Records this node lacked and got (the erasures of its successful repairs).
    pub records_repaired: u64,
    /// Targets found to hold nothing this node lacked.
    pub windows_covered: u64,
}

impl RepairStats {
    pub fn add(&mut self, o: &RepairStats) {
        self.requests += o.requests;
        self.request_failures += o.request_failures;
        self.symbols_requested += o.symbols_requested;
        self.symbols_received += o.symbols_received;
        self.decode_failures += o.decode_failures;
        self.verification_failures += o.verification_failures;
        self.windows_repaired += o.windows_repaired;
        self.records_repaired += o.records_repaired;
        self.windows_covered += o.windows_covered;
    }
}

#[derive(Debug)]
enum Requester {
    Telemesh(Box<Reconciler<NodeId>>),
    Baseline(Box<baseline::Requester<NodeId>>),
}

impl Requester {
    fn peer_up(&mut self, peer: NodeId, now: u64) {
        match self {
            Requester::Telemesh(r) => r.peer_up(peer, now),
            Requester::Baseline(r) => r.peer_up(peer, now),
        }
    }
    fn peer_down(&mut self, peer: &NodeId) {
        match self {
            Requester::Telemesh(r) => r.peer_down(peer),
            Requester::Baseline(r) => r.peer_down(peer),
        }
    }
    fn handle_announce(&mut self, peer: NodeId, author: &str, announce: &message::Announce, now: u64, h: &dyn Holdings) {
        match self {
            Requester::Telemesh(r) => r.handle_gossip(peer, author, announce, now, h),
            Requester::Baseline(r) => r.handle_announce(peer, &announce.windows, now, h),
        }
    }
    fn handle_local(&mut self, w: WindowId, h: &dyn Holdings, now: u64) {
        match self {
            Requester::Telemesh(r) => r.handle_local(w, h, now),
            Requester::Baseline(r) => r.handle_local(w, h, now),
        }
    }
    fn tick(&mut self, now: u64, h: &dyn Holdings) {
        match self {
            Requester::Telemesh(r) => r.tick(now, h),
            Requester::Baseline(r) => r.tick(now, h),
        }
    }
    fn handle_response(
        &mut self,
        id: RequestId,
        answer: Option<Answer>,
        now: u64,
        h: &dyn Holdings,
    ) {
        match self {
            Requester::Telemesh(r) => {
                let response = match answer {
                    Some(Answer::Mesh(r)) => Some(r),
                    _ => None,
                };
                r.handle_response(id, response, now, h)
            }
            Requester::Baseline(r) => r.handle_response(id, answer, now, h),
        }
    }
    fn poll(&mut self) -> Option<Out> {
        match self {
            Requester::Telemesh(r) => r.poll().map(Out::from),
            Requester::Baseline(r) => r.poll(),
        }
    }
    fn stats(&self) -> RepairStats {
        match self {
            Requester::Telemesh(r) => {
                let s = r.stats();
                RepairStats {
                    requests: s.requests,
                    request_failures: s.request_failures,
                    symbols_requested: s.symbols_requested,
                    symbols_received: s.symbols_received,
                    decode_failures: s.decode_failures,
                    verification_failures: s.verification_failures,
                    windows_repaired: s.windows_repaired,
                    records_repaired: s.records_repaired,
                    windows_covered: s.windows_covered,
                }
            }
            Requester::Baseline(r) => r.stats(),
        }
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct Node {
    name: String,
    store: Store,
    requester: Requester,
    encoders: EncoderCache,
    serve: Serve,
    served: u64,
    blamed: Vec<(NodeId, Blame)>,
    disconnected: BTreeSet<NodeId>,
    /// Windows to announce at a coming tick, and to whom.
    announcer: Announcer,
    /// Windows whose offer to a coordinator was lost or could not be sent: announced to
    /// everyone at the next tick, as a node does when an offer fails.
    unoffered: BTreeSet<WindowId>,
}

impl Node {
    /// Its name in provenance tables: `n0`, `n1`, …
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    /// Who it blamed, and why, in order.
    pub fn blamed(&self) -> &[(NodeId, Blame)] {
        &self.blamed
    }
    /// Peers it disconnected after repeated blame.
    pub fn disconnected(&self) -> &BTreeSet<NodeId> {
        &self.disconnected
    }
    pub fn is_honest(&self) -> bool {
        self.serve == Serve::Honest
    }
    pub fn stats(&self) -> RepairStats {
        self.requester.stats()
    }

    fn answer(&mut self, ask: &Ask) -> Answer {
        let answer = match ask {
            Ask::Mesh(request) => {
                Answer::Mesh(serve::respond(request, &self.store, &mut self.encoders))
            }
            Ask::Baseline(request) => Answer::Baseline(baseline::respond(request, &self.store)),
        };
        if self.serve != Serve::Corrupt {
            return answer;
        }
        self.served += 1;
        let flip = |data: &mut Vec<u8>| {
            for b in data.iter_mut().skip(5).step_by(7) {
                *b ^= 0x55;
            }
        };
        match answer {
            // Well-formed but wrong: every entry shifted by one unit.
            Answer::Mesh(Response::Index(IndexPart::Compact {
                count,
                slot_size,
                mut columns,
                tags,
            })) => {
                if let Some(b) = columns.first_mut() {
                    *b ^= 0x01;
                }
                Answer::Mesh(Response::Index(IndexPart::Compact {
                    count,
                    slot_size,
                    columns,
                    tags,
                }))
            }
            // Every other proof is wrong (the others lead to corrupted symbols).
            Answer::Mesh(Response::Index(IndexPart::Verified { leaves, mut proof }))
                if self.served.is_multiple_of(2) =>
            {
                match proof.last_mut() {
                    Some(b) => *b ^= 1,
                    None => proof = vec![0; 32],
                }
                Answer::Mesh(Response::Index(IndexPart::Verified { leaves, proof }))
            }
            Answer::Mesh(Response::Symbols { mut data }) => {
                flip(&mut data);
                Answer::Mesh(Response::Symbols { data })
            }
            Answer::Baseline(baseline::Response::Records {
                missing,
                mut slots,
                absent,
            }) => {
                flip(&mut slots);
                Answer::Baseline(baseline::Response::Records {
                    missing,
                    slots,
                    absent,
                })
            }
            Answer::Baseline(baseline::Response::Blob { mut data }) => {
                flip(&mut data);
                Answer::Baseline(baseline::Response::Blob { data })
            }
            other => other,
        }
    }
}

#[derive(Debug)]
enum Event {
    Tick,
    Request {
        from: NodeId,
        to: NodeId,
        id: RequestId,
        kind: Kind,
        bytes: Vec<u8>,
    },
    Response {
        from: NodeId,
        to: NodeId,
        id: RequestId,
        kind: Kind,
        bytes: Vec<u8>,
    },
    Timeout {
        node: NodeId,
        id: RequestId,
    },
    Announce {
        from: NodeId,
        to: NodeId,
        bytes: Vec<u8>,
        depth: Vec<u32>,
    },
}

#[derive(Debug)]
struct Queued {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug)]
struct Outstanding {
    peer: NodeId,
    window: Option<WindowId>,
    depth: u32,
}

/// When all honest nodes first held the same root of a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Convergence {
    /// When the first node got records of the window (its seal, in a benchmark).
    pub first_ns: u64,
    /// When every honest node first held the same root.
    pub same_ns: Option<u64>,
    /// When every honest node first held the same root and the same provenance table.
    pub same_table_ns: Option<u64>,
    /// Repair round trips on the critical path to it (module docs).
    pub round_trips: u32,
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    config: Config,
    nodes: Vec<Node>,
    now_ns: u64,
    queue: BinaryHeap<Reverse<Queued>>,
    next_seq: u64,
    /// Messages (not ticks) in the queue.
    in_transit: usize,
    links: Vec<impair::Link>,
    outstanding: HashMap<(NodeId, RequestId), Outstanding>,
    in_flight: BTreeMap<(NodeId, NodeId), usize>,
    most_in_flight: usize,
    traffic: BTreeMap<Kind, Count>,
    depth: HashMap<(NodeId, WindowId), u32>,
    convergence: BTreeMap<WindowId, Convergence>,
    /// The nodes' names as a member list, and each node's index in it.
    members: super::Members,
    /// Node of each member index.
    member_node: Vec<NodeId>,
}

impl Sim {
    pub fn new(config: Config) -> Sim {
        let n = config.nodes;
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let requester = match config.scheme {
                    Scheme::Telemesh => {
                        Requester::Telemesh(Box::new(Reconciler::new(config.mesh.clone())))
                    }
                    Scheme::Arq => Requester::Baseline(Box::new(baseline::Requester::new(
                        baseline::Mode::Arq,
                        config.mesh.clone(),
                    ))),
                    Scheme::Fetch => Requester::Baseline(Box::new(baseline::Requester::new(
                        baseline::Mode::Fetch,
                        config.mesh.clone(),
                    ))),
                };
                Node {
                    name: format!("n{i}"),
                    store: Store::default(),
                    requester,
                    encoders: EncoderCache::new(CacheConfig::default()),
                    serve: config.serve.get(i).copied().unwrap_or(Serve::Honest),
                    served: 0,
                    blamed: Vec::new(),
                    disconnected: BTreeSet::new(),
                    // As a node: coordinators only with more members than coordinators.
                    announcer: Announcer::new(
                        config.coordinators.filter(|r| config.scheme == Scheme::Telemesh && n > *r),
                        config.tick_ns,
                    ),
                    unoffered: BTreeSet::new(),
                }
            })
            .collect();
        let mut links = Vec::with_capacity(n * n);
        for a in 0..n {
            for b in 0..n {
                let (lo, hi) = (a.min(b) as u64, a.max(b) as u64);
                let seed = config
                    .seed
                    .wrapping_add(2 * (lo * n as u64 + hi))
                    .wrapping_add(u64::from(a > b));
                links.push(impair::Link::new(config.overlay.clone(), seed));
            }
        }
        let now_ns = config.start_ns;
        let names: Vec<String> = nodes.iter().map(|n: &Node| n.name.clone()).collect();
        let members = super::Members::new(names.clone());
        let member_node: Vec<NodeId> =
            (0..members.len() as u32).filter_map(|m| names.iter().position(|n| Some(n.as_str()) == members.name(m))).collect();
        let mut nodes = nodes;
        for node in &mut nodes {
            if let Requester::Telemesh(r) = &mut node.requester {
                r.set_members(members.clone(), &node.name);
            }
        }
        let mut sim = Sim {
            config,
            nodes,
            now_ns,
            queue: BinaryHeap::new(),
            next_seq: 0,
            in_transit: 0,
            links,
            outstanding: HashMap::new(),
            in_flight: BTreeMap::new(),
            most_in_flight: 0,
            traffic: BTreeMap::new(),
            depth: HashMap::new(),
            convergence: BTreeMap::new(),
            members,
            member_node,
        };
        sim.schedule(now_ns + sim.config.tick_ns, Event::Tick);
        sim
    }

    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn node(&self, i: NodeId) -> &Node {
        &self.nodes[i]
    }

    /// Makes node `i` list every record twice to its requester (see [`Store::twice`]).
    pub fn list_twice(&mut self, i: NodeId, on: bool) {
        self.nodes[i].store.twice = on;
    }

    /// The honest nodes.
    pub fn honest(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.is_honest())
    }

    /// Traffic so far, by kind.
    pub fn traffic(&self) -> &BTreeMap<Kind, Count> {
        &self.traffic
    }

    /// Repair bytes so far (requests and responses of every repair kind, frames included).
    pub fn repair_bytes(&self) -> u64 {
        self.traffic
            .iter()
            .filter(|(k, _)| k.is_repair())
            .map(|(_, c)| c.bytes)
            .sum()
    }

    /// The most requests one node had in flight to one peer at once.
    pub fn most_in_flight(&self) -> usize {
        self.most_in_flight
    }

    /// Every node's requester counters, summed.
    pub fn stats(&self) -> RepairStats {
        let mut s = RepairStats::default();
        for n in &self.nodes {
            s.add(&n.stats());
        }
        s
    }

    /// Per window: when it first appeared and when all honest nodes first agreed on it.
    pub fn convergence(&self) -> &BTreeMap<WindowId, Convergence> {
        &self.convergence
    }

    /// Every node learns every other as a peer (and starts a summary exchange with it).
    pub fn connect_all(&mut self) {
        let now = self.now_ns;
        for i in 0..self.nodes.len() {
            for j in 0..self.nodes.len() {
                if i != j {
                    let node = &mut self.nodes[i];
                    node.requester.peer_up(j, now);
                }
            }
            self.drain(i);
        }
    }

    /// Node `i` receives `records` directly (from sensors) and seals them at once; they
    /// are not announced (see [`Self::announce`]).
    pub fn hear(&mut self, i: NodeId, records: &[Record]) {
        let mut by_window: BTreeMap<WindowId, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_window
                .entry(WindowId {
                    stream: r.stream,
                    start: window::start(r.device_time_ns),
                })
                .or_default()
                .push(r.clone());
        }
        let now = self.now_ns;
        for (w, list) in by_window {
            self.convergence.entry(w).or_insert(Convergence {
                first_ns: now,
                same_ns: None,
                same_table_ns: None,
                round_trips: 0,
            });
            let name = self.nodes[i].name.clone();
            let _ = self.nodes[i].store.add(w, list, Some(&name));
            let node = &mut self.nodes[i];
            node.requester.handle_local(w, &node.store, now);
            self.drain(i);
            self.check_same(w);
        }
    }

    /// Node `i` announces `windows` (those it holds) at its next tick.
    pub fn announce(&mut self, i: NodeId, windows: impl IntoIterator<Item = WindowId>) {
        let now = self.now_ns;
        for w in windows {
            self.nodes[i].announcer.changed(w, true, now);
        }
    }

    /// Every node announces everything it holds at its next tick.
    pub fn announce_all(&mut self) {
        let now = self.now_ns;
        for node in &mut self.nodes {
            for w in node.store.windows.keys() {
                node.announcer.changed(*w, true, now);
            }
        }
    }

    /// Whether every honest node holds the same windows with the same roots and
    /// provenance.
    pub fn converged(&self) -> bool {
        let mut views = self.honest().map(|n| {
            n.store
                .windows
                .values()
                .map(|w| (w.summary.window, w.summary.root, w.summary.provenance))
        });
        let Some(first) = views.next() else {
            return true;
        };
        let first: Vec<_> = first.collect();
        views.all(|v| v.eq(first.iter().copied()))
    }

    /// Whether every honest node holds the same roots (provenance aside).
    pub fn same_roots(&self) -> bool {
        let mut views = self.honest().map(|n| {
            n.store
                .windows
                .values()
                .map(|w| (w.summary.window, w.summary.root))
        });
        let Some(first) = views.next() else {
            return true;
        };
        let first: Vec<_> = first.collect();
        views.all(|v| v.eq(first.iter().copied()))
    }

    /// Whether nothing is on its way: no message in transit, no request outstanding, no
    /// announcement waiting.
    pub fn idle(&self) -> bool {
        self.in_transit == 0
            && self.outstanding.is_empty()
            && self.nodes.iter().all(|n| n.announcer.is_empty())
    }

    /// Runs every event up to `t_ns`; the clock then reads `t_ns`.
    pub fn run_until(&mut self, t_ns: u64) {
        while self.queue.peek().is_some_and(|Reverse(q)| q.at <= t_ns) {
            self.step();
        }
        self.now_ns = self.now_ns.max(t_ns);
    }

    /// Runs until, at a tick, the mesh is [`Self::converged`] and [`Self::idle`]; returns
    /// that time, or `None` if it has not by `deadline_ns`.
    pub fn run_until_quiet(&mut self, deadline_ns: u64) -> Option<u64> {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > deadline_ns {
                break;
            }
            let tick = matches!(q.event, Event::Tick);
            self.step();
            if tick && self.idle() && self.converged() {
                return Some(self.now_ns);
            }
        }
        self.now_ns = self.now_ns.max(deadline_ns);
        None
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if !matches!(event, Event::Tick) {
            self.in_transit += 1;
        }
        self.next_seq += 1;
        self.queue.push(Reverse(Queued {
            at,
            seq: self.next_seq,
            event,
        }));
    }

    fn step(&mut self) {
        let Some(Reverse(q)) = self.queue.pop() else {
            return;
        };
        self.now_ns = self.now_ns.max(q.at);
        if !matches!(q.event, Event::Tick) {
            self.in_transit -= 1;
        }
        match q.event {
            Event::Tick => self.tick(),
            Event::Request {
                from,
                to,
                id,
                kind,
                bytes,
            } => self.on_request(from, to, id, kind, &bytes),
            Event::Response {
                from,
                to,
                id,
                kind,
                bytes,
            } => {
                let answer = match kind {
                    Kind::Records | Kind::Blob => message::decode::<baseline::Response>(&bytes)
                        .ok()
                        .map(Answer::Baseline),
                    _ => message::decode::<Response>(&bytes).ok().map(Answer::Mesh),
                };
                self.finish(to, id, from, answer);
            }
            Event::Timeout { node, id } => {
                if let Some(o) = self.outstanding.get(&(node, id)) {
                    let peer = o.peer;
                    self.finish(node, id, peer, None);
                }
            }
            Event::Announce {
                from,
                to,
                bytes,
                depth,
            } => {
                let Ok(announce) = message::decode::<message::Announce>(&bytes) else {
                    return;
                };
                if self.cut(from, to) {
                    return;
                }
                for (s, d) in announce.windows.iter().zip(depth) {
                    let e = self.depth.entry((to, s.window)).or_default();
                    *e = (*e).max(d);
                    let author = self.nodes[from].name.clone();
                    let node = &mut self.nodes[to];
                    node.announcer.told(&self.members, &node.name, &author, s, self.now_ns);
                }
                let now = self.now_ns;
                let author = self.nodes[from].name.clone();
                let node = &mut self.nodes[to];
                node.requester.handle_announce(from, &author, &announce, now, &node.store);
                self.drain(to);
            }
        }
    }

    fn tick(&mut self) {
        let now = self.now_ns;
        let with_index = self.config.gossip_index && self.config.scheme == Scheme::Telemesh;
        let digest = self.members.digest();
        for i in 0..self.nodes.len() {
            let Node { announcer, store, requester, name, .. } = &mut self.nodes[i];
            let requester = &*requester;
            let wants = |w| matches!(requester, Requester::Telemesh(r) if r.wants(w));
            let mut sends = announcer.due(&self.members, name, now, |w| store.summary(w), wants);
            let unoffered = std::mem::take(&mut self.nodes[i].unoffered);
            // Offers a coordinator did not take go to everyone, signed: nobody kept them.
            sends.extend(unoffered.into_iter().map(|window| schedule::Send { window, offer: Vec::new(), publish: true, sign: true }));
            let name = self.nodes[i].name.clone();
            // To every node (`None`), or to one coordinator; signed or not, as the node signs
            // (`docs/protocol.md`, "Statements"): offers to the first coordinator offered,
            // and announcements that carry receipts no offer carried.
            let mut batches: BTreeMap<(Option<NodeId>, bool), Vec<message::Announced>> = BTreeMap::new();
            for send in sends {
                let Some(win) = self.nodes[i].store.window(send.window) else { continue };
                let count = win.records.len();
                let index = with_index
                    .then(|| window::index(&win.blob).ok())
                    .flatten()
                    .map(|(header, entries)| IndexPart::compact(&header, &entries));
                let own_row = win.table.nodes.iter().find(|(n, _)| *n == name).map(|(_, b)| b.as_slice());
                let row = if with_index { message::Row::of(own_row, count) } else { message::Row::None };
                let item = message::Announced { summary: win.summary, index, row, others: Vec::new() };
                for (k, m) in send.offer.iter().enumerate() {
                    batches.entry((Some(self.member_node[*m as usize]), k == 0)).or_default().push(item.clone());
                }
                if send.publish {
                    let others = if !with_index || !self.nodes[i].announcer.coordinated() {
                        Vec::new()
                    } else if self.nodes[i].serve == Serve::ForgeRows {
                        let all = (0..self.members.len() as u32).filter(|m| self.members.name(*m) != Some(name.as_str()));
                        all.map(|m| (m, message::Row::All)).collect()
                    } else {
                        self.members.others(&win.table, &name, count)
                    };
                    batches.entry((None, send.sign)).or_default().push(message::Announced { others, ..item });
                }
            }
            for ((to, signed), list) in batches {
                let sign = |b: &[u8]| if signed { signature(&name, b) } else { Vec::new() };
                for bytes in message::encode_announces(&list, digest, sign) {
                    let Ok(batch) = message::decode::<message::Announce>(&bytes) else {
                        continue;
                    };
                    let depth: Vec<u32> = batch
                        .windows
                        .iter()
                        .map(|s| self.depth.get(&(i, s.window)).copied().unwrap_or(0))
                        .collect();
                    // An offer to a coordinator is a request of the repair protocol: its
                    // variant byte and frame, and a one-byte answer in its own.
                    let (receivers, frame): (Vec<NodeId>, u64) = match to {
                        None => ((0..self.nodes.len()).collect(), 0),
                        Some(c) => (vec![c], 2 * FRAME_LEN + 2),
                    };
                    for to in receivers {
                        if to == i {
                            continue;
                        }
                        let delivered = if self.cut(i, to) { None } else { self.transmit(Kind::Gossip, i, to, &bytes, frame, Leg::Request) };
                        match delivered {
                            Some(d) => {
                                let event = Event::Announce { from: i, to, bytes: d.bytes, depth: depth.clone() };
                                self.schedule(d.at_ns, event);
                            }
                            None if frame > 0 => self.nodes[i].unoffered.extend(batch.windows.iter().map(|s| s.window)),
                            None => {}
                        }
                    }
                }
            }
            let node = &mut self.nodes[i];
            node.requester.tick(now, &node.store);
            self.drain(i);
        }
        self.schedule_tick();
    }

    fn schedule_tick(&mut self) {
        let at = self.now_ns + self.config.tick_ns;
        self.schedule(at, Event::Tick);
    }

    /// Whether either of two nodes has disconnected the other.
    fn cut(&self, a: NodeId, b: NodeId) -> bool {
        self.nodes[a].disconnected.contains(&b) || self.nodes[b].disconnected.contains(&a)
    }

    fn window_of(ask: &Ask) -> Option<WindowId> {
        match ask {
            Ask::Mesh(Request::Index { window, .. } | Request::Symbols { window, .. }) => Some(*window),
            Ask::Baseline(
                baseline::Request::Records { window, .. } | baseline::Request::Blob { window, .. },
            ) => Some(*window),
            _ => None,
        }
    }

    /// Hands node `i`'s actions to the network and its store.
    fn drain(&mut self, i: NodeId) {
        while let Some(out) = self.nodes[i].requester.poll() {
            self.act(i, out);
        }
    }

    fn act(&mut self, i: NodeId, out: Out) {
        let now = self.now_ns;
        match out {
            Out::Send { id, peer, ask } => {
                let kind = Kind::of(&ask);
                let window = if kind.is_repair() {
                    Self::window_of(&ask)
                } else {
                    None
                };
                let depth = window.map_or(0, |w| self.depth.get(&(i, w)).copied().unwrap_or(0) + 1);
                self.outstanding.insert(
                    (i, id),
                    Outstanding {
                        peer,
                        window,
                        depth,
                    },
                );
                let n = self.in_flight.entry((i, peer)).or_default();
                *n += 1;
                self.most_in_flight = self.most_in_flight.max(*n);
                if peer >= self.nodes.len() || self.cut(i, peer) {
                    self.schedule(now, Event::Timeout { node: i, id });
                    return;
                }
                let bytes = match &ask {
                    Ask::Mesh(r) => message::encode(r),
                    Ask::Baseline(r) => message::encode(r),
                };
                self.schedule(
                    now + self.config.request_timeout_ns,
                    Event::Timeout { node: i, id },
                );
                if let Some(d) = self.transmit(kind, i, peer, &bytes, FRAME_LEN, Leg::Request) {
                    let event = Event::Request { from: i, to: peer, id, kind, bytes: d.bytes };
                    self.schedule(d.at_ns, event);
                }
            }
            Out::Store(repaired) => {
                let w = repaired.window;
                let _ = self.nodes[i].store.add(w, repaired.records, None);
                let node = &mut self.nodes[i];
                node.requester.handle_local(w, &node.store, now);
                node.announcer.changed(w, false, now);
                self.check_same(w);
            }
            Out::Provenance {
                window: w,
                root,
                table,
            } => self.merged(i, w, |store| store.merge_table(w, &root, &table)),
            Out::Rows { window: w, keys, table } => self.merged(i, w, |store| store.merge_rows(w, &keys, &table)),
            Out::Blame {
                peer,
                reason,
                disconnect,
            } => {
                let node = &mut self.nodes[i];
                node.blamed.push((peer, reason));
                if disconnect {
                    node.disconnected.insert(peer);
                    node.requester.peer_down(&peer);
                }
            }
        }
    }

    fn on_request(&mut self, from: NodeId, to: NodeId, id: RequestId, kind: Kind, bytes: &[u8]) {
        if self.cut(from, to) {
            return;
        }
        let request_len = bytes.len();
        let ask = match kind {
            Kind::Records | Kind::Blob => {
                message::decode::<baseline::Request>(bytes).map(Ask::Baseline)
            }
            _ => message::decode::<Request>(bytes).map(Ask::Mesh),
        };
        let answer = match ask {
            Ok(ask) => self.nodes[to].answer(&ask),
            Err(_) if matches!(kind, Kind::Records | Kind::Blob) => {
                Answer::Baseline(baseline::Response::Refused)
            }
            Err(_) => Answer::Mesh(Response::Refused),
        };
        let bytes = match &answer {
            Answer::Mesh(r) => message::encode(r),
            Answer::Baseline(r) => message::encode(r),
        };
        if matches!(
            answer,
            Answer::Mesh(Response::NotFound) | Answer::Baseline(baseline::Response::NotFound)
        ) {
            let count = self.traffic.entry(kind).or_default();
            count.not_found += 1;
            count.not_found_bytes += (request_len + bytes.len()) as u64 + 2 * FRAME_LEN;
        }
        if let Some(d) = self.transmit(kind, to, from, &bytes, FRAME_LEN, Leg::Response) {
            let event = Event::Response { from: to, to: from, id, kind, bytes: d.bytes };
            self.schedule(d.at_ns, event);
        }
    }

    /// Counts a message of `kind` (its bytes plus `frame` bytes of framing) and sends it
    /// over the link from `from` to `to`: its delivery, or `None` when the link lost it
    /// (counted too).
    fn transmit(&mut self, kind: Kind, from: NodeId, to: NodeId, bytes: &[u8], frame: u64, leg: Leg) -> Option<impair::Delivery> {
        let len = bytes.len() as u64 + frame;
        let count = self.traffic.entry(kind).or_default();
        count.bytes += len;
        match leg {
            Leg::Request => {
                count.requests += 1;
                count.request_bytes += len;
            }
            Leg::Response => count.responses += 1,
        }
        let delivery = self.links[from * self.nodes.len() + to].send(self.now_ns, bytes).into_iter().next();
        if delivery.is_none() {
            self.traffic.entry(kind).or_default().lost += 1;
        }
        delivery
    }

    /// Request `id` of node `i` is over: answered, or failed.
    fn finish(&mut self, i: NodeId, id: RequestId, peer: NodeId, answer: Option<Answer>) {
        let Some(o) = self.outstanding.remove(&(i, id)) else {
            return;
        };
        if let Some(n) = self.in_flight.get_mut(&(i, peer)) {
            *n = n.saturating_sub(1);
        }
        if let Some(w) = o.window {
            let e = self.depth.entry((i, w)).or_default();
            *e = (*e).max(o.depth);
        }
        let now = self.now_ns;
        let node = &mut self.nodes[i];
        node.requester.handle_response(id, answer, now, &node.store);
        self.drain(i);
    }

    /// Records when all honest nodes first hold the same root of `w`.
    /// Node `i` merged provenance into window `w` (`merge` returns the new summary, if
    /// it merged). Telemesh does not announce rows of other nodes again (their authors
    /// did); the baseline announced every provenance change.
    fn merged(&mut self, i: NodeId, w: WindowId, merge: impl FnOnce(&mut Store) -> Option<Summary>) {
        let now = self.now_ns;
        let node = &mut self.nodes[i];
        let before = node.store.summary(w);
        if let Some(s) = merge(&mut node.store) {
            // Only coordinators announce merges (the announcer drops them for the rest).
            if before != Some(s) && (node.announcer.coordinated() || matches!(node.requester, Requester::Baseline(_))) {
                node.announcer.changed(w, false, now);
            }
            self.check_same(w);
        }
    }

    fn check_same(&mut self, w: WindowId) {
        if self.convergence.get(&w).is_none_or(|c| c.same_table_ns.is_some()) {
            return;
        }
        let summaries: Vec<Option<(Root, [u8; 8])>> = self
            .honest()
            .map(|n| n.store.windows.get(&w).map(|x| (x.summary.root, x.summary.provenance)))
            .collect();
        let Some(Some(first)) = summaries.first().copied() else {
            return;
        };
        if !summaries.iter().all(|r| r.is_some_and(|(root, _)| root == first.0)) {
            return;
        }
        let now = self.now_ns;
        if summaries.iter().all(|r| *r == Some(first)) {
            if let Some(c) = self.convergence.get_mut(&w) {
                c.same_table_ns = Some(now);
            }
        }
        if self.convergence.get(&w).is_some_and(|c| c.same_ns.is_some()) {
            return;
        }
        let trips = (0..self.nodes.len())
            .filter(|i| self.nodes[*i].is_honest())
            .map(|i| self.depth.get(&(i, w)).copied().unwrap_or(0))
            .max()
            .unwrap_or(0);
        if let Some(c) = self.convergence.get_mut(&w) {
            c.same_ns = Some(now);
            c.round_trips = trips;
        }
    }
}

/// Sensors for a benchmark: IoTStream devices `1..=devices`, each sending one DATA report
/// of five readings (the Mini-RFC's packet: a 32-byte datagram, a 32-byte slot) every
/// `period_ns` of device time for `minutes` whole windows, from `start_ns` (a window
/// boundary). Device `d` sends at `start + k·period + d·period / (devices + 1)` with seq `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sensors {
    pub devices: u32,
    pub period_ns: u64,
    pub minutes: u32,
    pub start_ns: u64,
}

/// Bytes of one sensor datagram of [`Sensors`]: the 12-byte IoTStream header and five f32.
pub const SENSOR_DATAGRAM_LEN: usize = 32;

impl Sensors {
    /// Records per device and window.
    pub fn per_window(&self) -> u64 {
        window::SPAN_NS / self.period_ns.max(1)
    }

    /// Every report, in the order sent (device time, then device), with seeded readings.
    pub fn records(&self, seed: u64) -> Vec<Record> {
        use rand_chacha::rand_core::{RngCore, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let per_window = self.per_window();
        let mut out = Vec::with_capacity(
            (u64::from(self.devices) * per_window * u64::from(self.minutes)) as usize,
        );
        for k in 0..per_window * u64::from(self.minutes) {
            for d in 1..=self.devices {
                let t = self.start_ns
                    + k * self.period_ns
                    + u64::from(d) * self.period_ns / (u64::from(self.devices) + 1);
                let readings = (0..5)
                    .map(|_| (rng.next_u32() % 1000) as f32 / 10.0)
                    .collect();
                out.push(Record {
                    stream: StreamId::new(Dialect::Iotstream, d),
                    device_time_ns: t,
                    seq: k % 65_536,
                    timestamp_raw: (t / 1_000_000) % (1 << 32),
                    kind: RecordKind::Data,
                    readings: Readings::Batch(readings),
                });
            }
        }
        out
    }
}

/// Loss between the sensors and a site.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SensorLoss {
    /// Each datagram lost independently with this probability.
    Random(f64),
    /// Gilbert bursts: the same mean loss, in runs of `mean_burst` datagrams on average
    /// (lossless good state, everything lost in the bad state).
    Burst { loss: f64, mean_burst: f64 },
}

impl SensorLoss {
    pub fn mean(&self) -> f64 {
        match self {
            SensorLoss::Random(p) | SensorLoss::Burst { loss: p, .. } => *p,
        }
    }

    /// The link model.
    pub fn link(&self) -> impair::Config {
        match *self {
            SensorLoss::Random(loss) => impair::Config {
                loss,
                ..impair::Config::default()
            },
            SensorLoss::Burst { loss, mean_burst } if loss > 0.0 && loss < 1.0 => {
                let r = 1.0 / mean_burst.max(1.0);
                impair::Config {
                    burst: Some(impair::Burst::gilbert(loss * r / (1.0 - loss), r)),
                    ..impair::Config::default()
                }
            }
            SensorLoss::Burst { loss, .. } => impair::Config {
                loss,
                ..impair::Config::default()
            },
        }
    }
}

/// Which of `sites` sites hears each record: `out[site][i]` for `records[i]`. Each device
/// reaches each site through its own link (`link`), relay session `device_index · sites +
/// site` of `seed` (seeds `seed + 2·session`, as `telemesh-relay` numbers sessions), the
/// device's datagrams in the order given.
pub fn hear(records: &[Record], sites: usize, link: &impair::Config, seed: u64) -> Vec<Vec<bool>> {
    let mut devices: BTreeMap<StreamId, usize> = BTreeMap::new();
    for r in records {
        let n = devices.len();
        devices.entry(r.stream).or_insert(n);
    }
    let mut links: Vec<impair::Link> = (0..devices.len() * sites)
        .map(|session| impair::Link::new(link.clone(), seed.wrapping_add(2 * session as u64)))
        .collect();
    let mut out = vec![vec![false; records.len()]; sites];
    let datagram = [0u8; SENSOR_DATAGRAM_LEN];
    for (i, r) in records.iter().enumerate() {
        let d = devices.get(&r.stream).copied().unwrap_or(0);
        for (site, heard) in out.iter_mut().enumerate() {
            let t = r.device_time_ns;
            heard[i] = !links[d * sites + site].send(t, &datagram).is_empty();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request names a window and a root: a holder answers only for that pair, so a
    /// requester cannot reach one window through another's key or by a root it replaced
    /// long ago.
    #[test]
    fn a_holder_answers_only_for_the_window_a_request_names_with_its_root() {
        let sensors = Sensors { devices: 2, period_ns: 1_000_000_000, minutes: 1, start_ns: 1_800_000_000 * 1_000_000_000 };
        let mut store = Store::default();
        let mut summaries = Vec::new();
        for r in sensors.records(1) {
            let w = WindowId { stream: r.stream, start: window::start(r.device_time_ns) };
            summaries.push(store.add(w, [r], Some("a")).expect("added"));
        }
        let mut latest: BTreeMap<WindowId, Summary> = BTreeMap::new();
        for s in &summaries {
            latest.insert(s.window, *s);
        }
        let [a, b] = [0, 1].map(|i| *latest.values().nth(i).expect("two windows"));
        let mut encoders = crate::repair::EncoderCache::new(crate::repair::CacheConfig::default());
        let mut ask = |window: WindowId, root: Root| {
            let index = serve::respond(&Request::Index { window, root, verified: false }, &store, &mut encoders);
            let table = serve::respond(&Request::Provenance { window, root }, &store, &mut encoders);
            let symbols = serve::respond(&Request::Symbols { window, root, start: 1 << 20, count: 1 }, &store, &mut encoders);
            [index, table, symbols].map(|r| !matches!(r, Response::NotFound))
        };
        assert_eq!(ask(a.window, a.root), [true; 3]);
        assert_eq!(ask(b.window, b.root), [true; 3]);
        assert_eq!(ask(a.window, b.root), [false; 3], "another window's root");
        assert_eq!(ask(b.window, a.root), [false; 3], "another window's root");
        assert_eq!(ask(a.window, [7; 32]), [false; 3], "a root never held");
    }

    fn point(
        scheme: Scheme,
        seed: u64,
    ) -> (BTreeMap<Kind, Count>, RepairStats, Vec<Convergence>, u64) {
        let sensors = Sensors {
            devices: 3,
            period_ns: 1_000_000_000,
            minutes: 1,
            start_ns: 1_800_000_000 * 1_000_000_000,
        };
        let records = sensors.records(seed);
        let heard = hear(
            &records,
            3,
            &SensorLoss::Burst {
                loss: 0.1,
                mean_burst: 3.0,
            }
            .link(),
            seed,
        );
        let config = Config {
            scheme,
            overlay: impair::Config {
                loss: 0.1,
                delay_ns: 20_000_000,
                ..impair::Config::default()
            },
            seed,
            ..Config::default()
        };
        let mut sim = Sim::new(config);
        sim.connect_all();
        sim.run_until(61_000_000_000);
        for (site, h) in heard.iter().enumerate() {
            let mine: Vec<Record> = records
                .iter()
                .zip(h)
                .filter(|(_, h)| **h)
                .map(|(r, _)| r.clone())
                .collect();
            sim.hear(site, &mine);
            sim.announce_all();
        }
        let end = sim.run_until_quiet(400_000_000_000).expect("quiet");
        assert!(sim.same_roots());
        (
            sim.traffic().clone(),
            sim.stats(),
            sim.convergence().values().copied().collect(),
            end,
        )
    }

    #[test]
    fn a_seed_reproduces_the_same_run() {
        for scheme in Scheme::ALL {
            let a = point(scheme, 5);
            assert_eq!(a, point(scheme, 5), "{scheme:?}");
            assert!(
                a.1.records_repaired > 0,
                "{scheme:?}: something was repaired"
            );
            assert!(a.2.iter().all(|c| c.same_ns.is_some()));
            assert_ne!(
                a.0,
                point(scheme, 6).0,
                "{scheme:?}: another seed, another run"
            );
        }
    }

    #[test]
    fn burst_loss_has_the_mean_asked_for_in_longer_runs() {
        // One device: its datagrams are one link's, in order.
        let sensors = Sensors {
            devices: 1,
            period_ns: 100_000_000,
            minutes: 40,
            start_ns: 0,
        };
        let records = sensors.records(1);
        let runs = |loss: SensorLoss| {
            let heard = hear(&records, 1, &loss.link(), 9);
            let lost = heard[0].iter().filter(|h| !**h).count();
            let starts = heard[0].windows(2).filter(|w| w[0] && !w[1]).count().max(1);
            (
                lost as f64 / records.len() as f64,
                lost as f64 / starts as f64,
            )
        };
        let (random, random_run) = runs(SensorLoss::Random(0.2));
        let (burst, burst_run) = runs(SensorLoss::Burst {
            loss: 0.2,
            mean_burst: 8.0,
        });
        assert!(
            (random - 0.2).abs() < 0.02 && (burst - 0.2).abs() < 0.04,
            "{random} {burst}"
        );
        assert!(burst_run > 2.0 * random_run, "{burst_run} vs {random_run}");
    }
}
