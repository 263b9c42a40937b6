//! The two baselines telemesh's repair is measured against (`telemesh-bench repair`),
//! implemented in earnest: real messages with their real bytes, every repaired window
//! checked against its announced root before anything is kept.
//!
//! - **ARQ** ([`Mode::Arq`]): a node that lacks records of a window asks one holder of
//!   the announced root for them, and gets exactly those records back. The request names
//!   what the node *has*: its own compact index ([`IndexPart::compact`], the same
//!   encoding as the mesh's index), in which each gap in its seqs costs a few bytes and its
//!   first and last keys bound the head and the tail — the "missing seqs" and "everything
//!   after seq N" of a NACK, in one form that also copes with conflicts and reboots. The
//!   holder answers with the records the node lacks (their keys as a compact index, their
//!   slots) and the positions in the node's index of the records the root does not
//!   contain. The node rebuilds the root's blob from its own records and those, and checks
//!   the root: the whole answer is the proof. (Per-record Merkle proofs against the
//!   announced root would cost whole 4 KiB leaves — a 60-record window is one leaf — so
//!   the root check of the rebuilt blob is both the cheapest and a complete check, as in
//!   telemesh's compact mode.) If the root does not match, the node falls back to fetching
//!   that holder's whole blob. A request that fails (lost request or response, timeout) is
//!   retried at once with the next holder of the root; a holder that fails three times in
//!   a row is dropped.
//! - **Whole-window fetch** ([`Mode::Fetch`]): the node downloads the whole blob of the
//!   announced root from one holder, checks its root and every record in it, and keeps
//!   the records it lacked. Failures are retried as for ARQ.
//!
//! Both choose what to repair exactly as [`Reconciler`] does (one session per window, up
//! to [`Config::max_sessions`], the announced root with the most records first, at most
//! [`Config::max_requests_per_peer`] requests in flight to one peer), and both run a
//! [`Reconciler`] with repair sessions switched off for the gossip, the summary exchange
//! and the provenance exchange, so that those are the same as telemesh's.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Answer, Ask, Out, RepairStats};
use crate::mesh::message::{IndexPart, Response as MeshResponse, Summary};
use crate::mesh::reconcile::{
    Action, Blame, Config, Reconciler, Repaired, RequestId, MAX_REPAIR_BLOB,
};
use crate::mesh::{Holdings, WindowId};
use crate::window::{self, IndexEntry, Root};

/// A baseline's request: further variants of the repair protocol's request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// ARQ: the records of `window`, if its root is `root`, that are not in `have` (the
    /// requester's compact index of the records it holds; `None` if it holds none).
    Records { window: WindowId, root: Root, have: Option<IndexPart> },
    /// The whole blob of `window`, if its root is `root`.
    Blob { window: WindowId, root: Root },
}

/// A baseline's response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The records the requester lacks: their keys (a compact index, `None` if none),
    /// their slots back to back, and the indices into `have` of the entries the root does
    /// not hold.
    Records {
        missing: Option<IndexPart>,
        slots: Vec<u8>,
        absent: Vec<u32>,
    },
    /// The window's blob.
    Blob {
        data: Vec<u8>,
    },
    NotFound,
    Refused,
}

/// Which baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Arq,
    Fetch,
}

/// Failures in a row after which a holder is dropped from a target.
pub const MAX_FAILURES: u32 = 3;

/// The summary a compact index of `count` entries of `slot_size` is read against.
fn pseudo(window: WindowId, count: u32, slot_size: u16) -> Summary {
    Summary {
        window,
        root: [0; 32],
        count,
        slot_size,
        provenance: [0; 8],
    }
}

/// Entries of a compact index with no summary to check it against beyond its own fields.
fn entries_of(part: &IndexPart, window: WindowId) -> Option<Vec<crate::mesh::message::Entry>> {
    let IndexPart::Compact {
        count, slot_size, ..
    } = part
    else {
        return None;
    };
    part.entries(&pseudo(window, *count, *slot_size)).ok()
}

/// A holder's answer to a baseline request.
pub fn respond(request: &Request, holdings: &dyn Holdings) -> Response {
    match request {
        Request::Blob { window, root } => match holdings.held(*window, root) {
            Some(held) => Response::Blob {
                data: held.blob.to_vec(),
            },
            None => Response::NotFound,
        },
        Request::Records { window, root, have } => {
            let Some(held) = holdings.held(*window, root) else {
                return Response::NotFound;
            };
            let Ok((header, entries)) = window::index(&held.blob) else {
                return Response::NotFound;
            };
            let mine = match have {
                Some(part) => match entries_of(
                    part,
                    WindowId {
                        stream: header.stream,
                        start: header.start_ns,
                    },
                ) {
                    Some(e) => e,
                    None => return Response::Refused,
                },
                None => Vec::new(),
            };
            // Walk both lists in key order; a (time, seq) present on both sides matches by
            // tag where the requester gave one, else when it is the only one on both.
            let mut matched_ours = vec![false; entries.len()];
            let mut matched_theirs = vec![false; mine.len()];
            let (mut i, mut j) = (0, 0);
            while i < entries.len() && j < mine.len() {
                let a = (entries[i].offset_ns, entries[i].seq);
                let b = (mine[j].offset_ns, mine[j].seq);
                if a < b {
                    i += 1;
                } else if b < a {
                    j += 1;
                } else {
                    let i_end = (i..entries.len())
                        .find(|&k| (entries[k].offset_ns, entries[k].seq) != a)
                        .unwrap_or(entries.len());
                    let j_end = (j..mine.len())
                        .find(|&k| (mine[k].offset_ns, mine[k].seq) != b)
                        .unwrap_or(mine.len());
                    for (jj, m) in mine.iter().enumerate().take(j_end).skip(j) {
                        let found = match m.tag {
                            Some(tag) => (i..i_end).find(|&k| entries[k].tag == tag),
                            None if i_end - i == 1 && j_end - j == 1 => Some(i),
                            None => None,
                        };
                        if let Some(k) = found {
                            matched_ours[k] = true;
                            matched_theirs[jj] = true;
                        }
                    }
                    i = i_end;
                    j = j_end;
                }
            }
            let slot = usize::from(header.slot_size);
            let slots_at = header.prefix_len();
            let lacking: Vec<usize> = (0..entries.len()).filter(|k| !matched_ours[*k]).collect();
            let mut slots = Vec::with_capacity(lacking.len() * slot);
            for &k in &lacking {
                match held
                    .blob
                    .get(slots_at + k * slot..slots_at + (k + 1) * slot)
                {
                    Some(s) => slots.extend_from_slice(s),
                    None => return Response::Refused,
                }
            }
            let keys: Vec<IndexEntry> = lacking.iter().map(|k| entries[*k]).collect();
            let missing = (!keys.is_empty()).then(|| {
                IndexPart::compact(
                    &window::Header {
                        count: keys.len() as u32,
                        ..header
                    },
                    &keys,
                )
            });
            let absent = (0..mine.len())
                .filter(|k| !matched_theirs[*k])
                .map(|k| k as u32)
                .collect();
            Response::Records {
                missing,
                slots,
                absent,
            }
        }
    }
}

struct Target<P> {
    summary: Summary,
    holders: BTreeSet<P>,
    failures: BTreeMap<P, u32>,
    announced_ns: u64,
}

struct Session<P> {
    target: Summary,
    holder: P,
    id: RequestId,
    /// Fetching the whole blob (the fetch baseline, or ARQ's fallback).
    blob: bool,
    /// Our records of the window when asked: entry (tag known) and slot bytes, in key
    /// order, as `have` listed them.
    own: Vec<(IndexEntry, Vec<u8>)>,
}

/// Request ids of a baseline's own requests start here (below are its reconciler's).
const OWN_IDS: RequestId = 1 << 48;

/// A baseline requester (module docs).
pub struct Requester<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> {
    mode: Mode,
    config: Config,
    inner: Reconciler<P>,
    inner_sent: HashMap<RequestId, P>,
    targets: BTreeMap<WindowId, BTreeMap<Root, Target<P>>>,
    sessions: BTreeMap<WindowId, Session<P>>,
    pending: HashMap<RequestId, WindowId>,
    /// Windows repaired and handed to the node, not yet stored ([`Self::handle_local`]):
    /// a session for them now would list stale records.
    storing: BTreeSet<WindowId>,
    covered: BTreeSet<Root>,
    covered_order: VecDeque<Root>,
    blames: BTreeMap<P, u32>,
    in_flight: HashMap<P, usize>,
    waiting: BTreeMap<P, VecDeque<(RequestId, Request)>>,
    sent: HashMap<RequestId, P>,
    next_id: RequestId,
    out: VecDeque<Out<P>>,
    stats: RepairStats,
}

impl<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> std::fmt::Debug for Requester<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requester")
            .field("mode", &self.mode)
            .field("targets", &self.targets.len())
            .field("sessions", &self.sessions.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<P: Clone + Ord + std::hash::Hash + std::fmt::Debug> Requester<P> {
    pub fn new(mode: Mode, config: Config) -> Self {
        Requester {
            mode,
            inner: Reconciler::new(Config {
                max_sessions: 0,
                ..config.clone()
            }),
            config,
            inner_sent: HashMap::new(),
            targets: BTreeMap::new(),
            sessions: BTreeMap::new(),
            pending: HashMap::new(),
            storing: BTreeSet::new(),
            covered: BTreeSet::new(),
            covered_order: VecDeque::new(),
            blames: BTreeMap::new(),
            in_flight: HashMap::new(),
            waiting: BTreeMap::new(),
            sent: HashMap::new(),
            next_id: OWN_IDS,
            out: VecDeque::new(),
            stats: RepairStats::default(),
        }
    }

    pub fn stats(&self) -> RepairStats {
        let s = self.inner.stats();
        RepairStats {
            requests: self.stats.requests + s.requests,
            request_failures: self.stats.request_failures + s.request_failures,
            ..self.stats
        }
    }

    pub fn peer_up(&mut self, peer: P, now_ns: u64) {
        self.inner.peer_up(peer, now_ns);
    }

    pub fn peer_down(&mut self, peer: &P) {
        self.inner.peer_down(peer);
        for t in self.targets.values_mut().flat_map(|t| t.values_mut()) {
            t.holders.remove(peer);
        }
    }

    pub fn handle_announce(
        &mut self,
        peer: P,
        windows: &[Summary],
        now_ns: u64,
        holdings: &dyn Holdings,
    ) {
        self.inner
            .handle_announce(peer.clone(), windows, now_ns, holdings);
        self.learn(peer, windows, now_ns, holdings);
        self.start_sessions(holdings);
    }

    pub fn handle_local(&mut self, w: WindowId, holdings: &dyn Holdings, now_ns: u64) {
        self.inner.handle_local(w, holdings, now_ns);
        self.storing.remove(&w);
        if let Some(local) = holdings.summary(w) {
            self.drop_target(w, &local.root);
        }
        self.start_sessions(holdings);
    }

    pub fn tick(&mut self, now_ns: u64, holdings: &dyn Holdings) {
        self.inner.tick(now_ns, holdings);
        self.start_sessions(holdings);
    }

    pub fn poll(&mut self) -> Option<Out<P>> {
        if let Some(action) = self.inner.poll() {
            if let Action::Send { id, peer, .. } = &action {
                self.inner_sent.insert(*id, peer.clone());
            }
            return Some(Out::from(action));
        }
        self.out.pop_front()
    }

    pub fn handle_response(
        &mut self,
        id: RequestId,
        answer: Option<Answer>,
        now_ns: u64,
        holdings: &dyn Holdings,
    ) {
        if id < OWN_IDS {
            let peer = self.inner_sent.remove(&id);
            let response = match answer {
                Some(Answer::Mesh(r)) => Some(r),
                _ => None,
            };
            // What the summary exchange learns is learnt here too.
            if let (Some(peer), Some(MeshResponse::Windows { windows, .. })) = (peer, &response) {
                if windows.iter().all(|s| {
                    windows
                        .first()
                        .is_some_and(|f| f.window.stream == s.window.stream)
                }) {
                    self.learn(peer, windows, now_ns, holdings);
                }
            }
            self.inner.handle_response(id, response, now_ns, holdings);
            self.start_sessions(holdings);
            return;
        }
        if let Some(peer) = self.sent.remove(&id) {
            self.finished(&peer);
        }
        if answer.is_none() {
            self.stats.request_failures += 1;
        }
        let Some(w) = self.pending.remove(&id) else {
            self.start_sessions(holdings);
            return;
        };
        let Some(session) = self.sessions.remove(&w) else {
            return;
        };
        match answer {
            Some(Answer::Baseline(response)) => self.on_answer(session, response, holdings),
            _ => self.retry(session, false),
        }
        self.start_sessions(holdings);
    }

    fn learn(&mut self, peer: P, windows: &[Summary], now_ns: u64, holdings: &dyn Holdings) {
        for s in windows {
            if !s.check() || self.covered.contains(&s.root) {
                continue;
            }
            if holdings.summary(s.window).is_some_and(|l| l.root == s.root) {
                self.drop_target(s.window, &s.root);
                continue;
            }
            if !self.targets.contains_key(&s.window) && self.targets.len() >= self.config.max_wanted
            {
                continue;
            }
            let t = self
                .targets
                .entry(s.window)
                .or_default()
                .entry(s.root)
                .or_insert_with(|| Target {
                    summary: *s,
                    holders: BTreeSet::new(),
                    failures: BTreeMap::new(),
                    announced_ns: now_ns,
                });
            t.holders.insert(peer.clone());
        }
    }

    fn drop_target(&mut self, w: WindowId, root: &Root) {
        if let Some(t) = self.targets.get_mut(&w) {
            t.remove(root);
            if t.is_empty() {
                self.targets.remove(&w);
            }
        }
    }

    fn cover(&mut self, root: Root) {
        if self.covered.insert(root) {
            self.covered_order.push_back(root);
            while self.covered_order.len() > self.config.max_covered.max(1) {
                if let Some(old) = self.covered_order.pop_front() {
                    self.covered.remove(&old);
                }
            }
        }
    }

    fn start_sessions(&mut self, holdings: &dyn Holdings) {
        let candidates: Vec<WindowId> = self
            .targets
            .keys()
            .filter(|w| !self.sessions.contains_key(*w) && !self.storing.contains(*w))
            .copied()
            .collect();
        for w in candidates {
            if self.sessions.len() >= self.config.max_sessions {
                break;
            }
            let local = holdings.summary(w);
            let Some(targets) = self.targets.get_mut(&w) else {
                continue;
            };
            targets
                .retain(|root, t| local.is_none_or(|l| l.root != *root) && !t.holders.is_empty());
            let Some(target) = targets
                .values()
                .max_by_key(|t| (t.summary.count, std::cmp::Reverse(t.summary.root)))
            else {
                self.targets.remove(&w);
                continue;
            };
            let summary = target.summary;
            if summary.count > crate::repair::Layout::MAX_SLOTS
                || summary.blob_len() > MAX_REPAIR_BLOB
            {
                self.drop_target(w, &summary.root);
                continue;
            }
            let Some(holder) = target.holders.iter().next().cloned() else {
                continue;
            };
            let own = own_entries(holdings, w, summary.slot_size);
            let session = Session {
                target: summary,
                holder,
                id: 0,
                blob: self.mode == Mode::Fetch,
                own,
            };
            self.ask(w, session);
        }
    }

    /// Sends the session's request to its holder.
    fn ask(&mut self, w: WindowId, mut session: Session<P>) {
        let summary = session.target;
        let request = if session.blob {
            self.stats.symbols_requested += u64::from(summary.count);
            Request::Blob { window: w, root: summary.root }
        } else {
            let entries: Vec<IndexEntry> = session.own.iter().map(|(e, _)| *e).collect();
            let have = (!entries.is_empty()).then(|| {
                let header = window::Header {
                    stream: w.stream,
                    start_ns: w.start,
                    count: entries.len() as u32,
                    slot_size: summary.slot_size,
                };
                IndexPart::compact(&header, &entries)
            });
            self.stats.symbols_requested +=
                u64::from(summary.count).saturating_sub(entries.len() as u64);
            Request::Records {
                window: w,
                root: summary.root,
                have,
            }
        };
        self.next_id += 1;
        let id = self.next_id;
        session.id = id;
        self.stats.requests += 1;
        self.pending.insert(id, w);
        let peer = session.holder.clone();
        self.sessions.insert(w, session);
        let busy = self.in_flight.entry(peer.clone()).or_insert(0);
        if *busy < self.config.max_requests_per_peer {
            *busy += 1;
            self.sent.insert(id, peer.clone());
            self.out.push_back(Out::Send {
                id,
                peer,
                ask: Ask::Baseline(request),
            });
        } else {
            self.waiting
                .entry(peer)
                .or_default()
                .push_back((id, request));
        }
    }

    fn finished(&mut self, peer: &P) {
        if let Some(n) = self.in_flight.get_mut(peer) {
            *n = n.saturating_sub(1);
        }
        while let Some((id, request)) = self.waiting.get_mut(peer).and_then(VecDeque::pop_front) {
            if self.pending.contains_key(&id) {
                *self.in_flight.entry(peer.clone()).or_insert(0) += 1;
                self.sent.insert(id, peer.clone());
                self.out.push_back(Out::Send {
                    id,
                    peer: peer.clone(),
                    ask: Ask::Baseline(request),
                });
                break;
            }
        }
        if self.waiting.get(peer).is_some_and(VecDeque::is_empty) {
            self.waiting.remove(peer);
        }
    }

    fn blame(&mut self, peer: &P, reason: Blame) {
        let count = self.blames.entry(peer.clone()).or_insert(0);
        *count += 1;
        let disconnect = *count >= self.config.blame_limit;
        self.out.push_back(Out::Blame {
            peer: peer.clone(),
            reason,
            disconnect,
        });
        if disconnect {
            self.peer_down(peer);
        }
    }

    /// The session's holder failed: `drop` it at once, or after [`MAX_FAILURES`] in a
    /// row; then ask the next holder (in order, wrapping), if any is left.
    fn retry(&mut self, session: Session<P>, drop: bool) {
        let w = session.target.window;
        let root = session.target.root;
        let Some(t) = self.targets.get_mut(&w).and_then(|t| t.get_mut(&root)) else {
            return;
        };
        let failures = t.failures.entry(session.holder.clone()).or_insert(0);
        *failures += 1;
        if drop || *failures >= MAX_FAILURES {
            t.holders.remove(&session.holder);
        }
        let next = t
            .holders
            .range((
                std::ops::Bound::Excluded(session.holder.clone()),
                std::ops::Bound::Unbounded,
            ))
            .next()
            .or_else(|| t.holders.iter().next())
            .cloned();
        match next {
            Some(holder) => self.ask(w, Session { holder, ..session }),
            None => self.drop_target(w, &root),
        }
    }

    fn on_answer(&mut self, session: Session<P>, response: Response, holdings: &dyn Holdings) {
        let summary = session.target;
        let w = summary.window;
        let peer = session.holder.clone();
        match (session.blob, response) {
            (_, Response::NotFound) => self.retry(session, true),
            (
                false,
                Response::Records {
                    missing,
                    slots,
                    absent,
                },
            ) => match self.rebuild(&session, missing.as_ref(), &slots, &absent) {
                Ok((blob, received)) => self.check_and_store(session, &blob, received, holdings),
                Err(Rebuild::Malformed) => {
                    self.blame(&peer, Blame::Malformed);
                    self.retry(session, true);
                }
                Err(Rebuild::Mismatch) => {
                    // A conflict we hold one side of, or a lying holder: take its blob.
                    self.stats.verification_failures += 1;
                    self.ask(
                        w,
                        Session {
                            blob: true,
                            ..session
                        },
                    );
                }
            },
            (true, Response::Blob { data }) => {
                let count = window::Header::parse(&data).map_or(0, |h| u64::from(h.count));
                self.check_and_store(session, &data, count, holdings);
            }
            _ => {
                self.blame(&peer, Blame::Malformed);
                self.retry(session, true);
            }
        }
    }

    /// The target's blob from our records and an ARQ answer; and the records received.
    fn rebuild(
        &self,
        session: &Session<P>,
        missing: Option<&IndexPart>,
        slots: &[u8],
        absent: &[u32],
    ) -> Result<(Vec<u8>, u64), Rebuild> {
        let summary = session.target;
        let slot = usize::from(summary.slot_size);
        let keys = match missing {
            Some(part) => entries_of(part, summary.window).ok_or(Rebuild::Malformed)?,
            None => Vec::new(),
        };
        if slots.len() != keys.len() * slot
            || absent.iter().any(|a| *a as usize >= session.own.len())
        {
            return Err(Rebuild::Malformed);
        }
        let absent: BTreeSet<u32> = absent.iter().copied().collect();
        let mut rows: Vec<(IndexEntry, &[u8])> = session
            .own
            .iter()
            .enumerate()
            .filter(|(i, _)| !absent.contains(&(*i as u32)))
            .map(|(_, (e, s))| (*e, s.as_slice()))
            .collect();
        for (k, bytes) in keys.iter().zip(slots.chunks_exact(slot.max(1))) {
            let tag = window::slot_tag(bytes).map_err(|_| Rebuild::Mismatch)?;
            rows.push((
                IndexEntry {
                    offset_ns: k.offset_ns,
                    seq: k.seq,
                    tag,
                },
                bytes,
            ));
        }
        rows.sort_by_key(|r| r.0);
        if rows.len() != summary.count as usize
            || rows.windows(2).any(|p| p[0].0 == p[1].0)
            || rows.iter().any(|r| r.1.len() != slot)
        {
            return Err(Rebuild::Mismatch);
        }
        let entries: Vec<IndexEntry> = rows.iter().map(|r| r.0).collect();
        let mut blob = window::prefix(&summary.header(), &entries);
        for (_, s) in &rows {
            blob.extend_from_slice(s);
        }
        Ok((blob, keys.len() as u64))
    }

    /// Checks a rebuilt or fetched blob against the target's root; stores it, or blames
    /// the holder and tries the next.
    fn check_and_store(
        &mut self,
        session: Session<P>,
        blob: &[u8],
        received: u64,
        holdings: &dyn Holdings,
    ) {
        let summary = session.target;
        let w = summary.window;
        self.stats.symbols_received += received;
        let root = window::outboard(blob).ok().map(|t| t.root());
        let records = match root {
            Some(r) if r == summary.root => window::decode(blob).ok().map(|(_, records)| records),
            _ => None,
        };
        let Some(records) = records else {
            self.stats.verification_failures += 1;
            if session.blob {
                let peer = session.holder.clone();
                self.blame(&peer, Blame::BadSymbols);
                self.retry(session, true);
            } else {
                self.ask(
                    w,
                    Session {
                        blob: true,
                        ..session
                    },
                );
            }
            return;
        };
        let own: BTreeSet<(u64, u64, [u8; 8])> = own_entries(holdings, w, summary.slot_size)
            .iter()
            .map(|(e, _)| (e.offset_ns, e.seq, e.tag))
            .collect();
        let lacked = records
            .iter()
            .filter(|r| !own.contains(&(r.device_time_ns - w.start, r.seq, r.content_tag())))
            .count() as u64;
        let announced_ns = self
            .targets
            .get(&w)
            .and_then(|t| t.get(&summary.root))
            .map_or(0, |t| t.announced_ns);
        self.drop_target(w, &summary.root);
        self.cover(summary.root);
        if lacked == 0 {
            self.stats.windows_covered += 1;
        } else {
            self.stats.windows_repaired += 1;
            self.stats.records_repaired += lacked;
            self.storing.insert(w);
            self.out.push_back(Out::Store(Repaired {
                window: w,
                root: summary.root,
                records,
                announced_ns,
            }));
        }
    }
}

enum Rebuild {
    /// The answer does not fit the request.
    Malformed,
    /// It fits, but does not make the announced set.
    Mismatch,
}

/// Our records of window `w` as index entries and slots of `slot_size` (those longer are
/// left out: they cannot be in a window of that slot size), in key order, each once.
fn own_entries(holdings: &dyn Holdings, w: WindowId, slot_size: u16) -> Vec<(IndexEntry, Vec<u8>)> {
    let slot = usize::from(slot_size);
    let mut rows: BTreeMap<IndexEntry, Vec<u8>> = BTreeMap::new();
    for r in holdings.records(w) {
        if r.stream != w.stream || window::start(r.device_time_ns) != w.start {
            continue;
        }
        let mut bytes = r.content_bytes();
        if bytes.len() > slot {
            continue;
        }
        let tag = crate::record::content::tag(&bytes);
        bytes.resize(slot, 0);
        rows.insert(
            IndexEntry {
                offset_ns: r.device_time_ns - w.start,
                seq: r.seq,
                tag,
            },
            bytes,
        );
    }
    rows.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::sim::{Scheme, Store};
    use crate::mesh::{Held, StreamDigest};
    use crate::mesh::testing::rec;
    use crate::record::Record;

    struct One(Vec<u8>);
    impl Holdings for One {
        fn summary(&self, _: WindowId) -> Option<Summary> {
            None
        }
        fn stream(&self, _: crate::record::StreamId) -> Option<StreamDigest> {
            None
        }
        fn streams(&self, _: Option<crate::record::StreamId>, _: usize) -> Vec<StreamDigest> {
            Vec::new()
        }
        fn windows(&self, _: crate::record::StreamId, _: Option<u64>, _: usize) -> Vec<Summary> {
            Vec::new()
        }
        fn records(&self, _: WindowId) -> Vec<Record> {
            Vec::new()
        }
        fn held(&self, _: WindowId, _: &Root) -> Option<Held> {
            Some(Held {
                blob: std::sync::Arc::new(self.0.clone()),
                table: Default::default(),
            })
        }
    }

    #[test]
    fn an_arq_answer_holds_exactly_the_difference() {
        let all: Vec<Record> = (0..60).map(rec).collect();
        let stream = all[0].stream;
        let start = window::start(all[0].device_time_ns);
        let w = WindowId { stream, start };
        // The holder lacks 7; the requester lacks 3, 10, 11 and 59 (the tail).
        let holder: Vec<Record> = all.iter().filter(|r| r.seq != 7).cloned().collect();
        let blob = window::encode(stream, start, &holder).expect("blob");
        let mine: Vec<Record> = all
            .iter()
            .filter(|r| ![3, 10, 11, 59].contains(&r.seq))
            .cloned()
            .collect();
        let own = {
            let mut s = Store::default();
            let _ = s.add(w, mine.clone(), Some("a"));
            own_entries(&s, w, 32)
        };
        let header = window::Header {
            stream,
            start_ns: start,
            count: own.len() as u32,
            slot_size: 32,
        };
        let have = IndexPart::compact(&header, &own.iter().map(|(e, _)| *e).collect::<Vec<_>>());
        let response = respond(
            &Request::Records {
                window: w,
                root: [1; 32],
                have: Some(have),
            },
            &One(blob.clone()),
        );
        let Response::Records {
            missing: Some(missing),
            slots,
            absent,
        } = &response
        else {
            panic!("{response:?}")
        };
        let keys = entries_of(missing, w).expect("keys");
        assert_eq!(
            keys.iter().map(|k| k.seq).collect::<Vec<_>>(),
            [3, 10, 11, 59]
        );
        assert_eq!(slots.len(), 4 * 32);
        let seven = own.iter().position(|(e, _)| e.seq == 7).expect("7") as u32;
        assert_eq!(absent, &[seven]);
        // The requester rebuilds the holder's blob exactly.
        let summary = crate::mesh::summarize(&blob, &Default::default()).expect("summary");
        let r: Requester<u8> = Requester::new(Mode::Arq, Config::default());
        let session = Session {
            target: summary,
            holder: 1u8,
            id: 0,
            blob: false,
            own,
        };
        let (rebuilt, received) = r
            .rebuild(&session, Some(missing), slots, absent)
            .ok()
            .expect("rebuilds");
        assert_eq!(rebuilt, blob);
        assert_eq!(received, 4);
        // Its bytes: the four slots and a few bytes of keys and framing.
        let bytes = crate::mesh::message::encode(&response).len();
        assert!(bytes < 4 * 32 + 30, "{bytes}");
        let _ = Scheme::Arq;
    }
}
