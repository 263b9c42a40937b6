//! The in-memory table of streams: each stream's ingest state and its records not yet in
//! a chunk or a sealed window, bounded in size.
//!
//! A stream's state is loaded from the store on its first datagram. Every flush interval
//! each stream's pending records are written: a stream with at least [`CHUNK_MIN`] new
//! records gets a chunk of its own per window; the records of slower streams go, all
//! streams together, into one write-ahead log entry, and stay there as the stream's
//! *live* records until their window is sealed (one log write per flush instead of one
//! tiny chunk per stream: `docs/storage.md`). Memory holds only where a window's newest
//! part is in the log ([`Chain`]: each part names the one before). Windows a stream has
//! moved past, or that got late records, or whose records have waited in the log for
//! [`MAX_CHAIN_FLUSHES`], are sealed; log entries no live record needs any more are deleted.
//!
//! The writing and the sealing run without the table lock ([`Table::begin_flush`],
//! [`Flush::write`], [`Table::finish_flush`], [`SealJob::run`], [`Table::finish_seal`]):
//! meanwhile the records being written stay visible as `in_flight`, and the records being
//! sealed as `live`. Streams silent for `stream_idle`, or the least recently active when the
//! table is full, leave memory: their states are written at once, and their records go
//! straight into their windows' sealed values with the next flush ([`Gone`],
//! [`Table::take_evicted`]), never into chunks written only to be read back and deleted.
//! Memory is bounded by `max_streams` × (state size + map overhead, about 700 bytes),
//! [`MAX_LEAVING`] streams waiting to leave ([`Table::may_enter`]), the records received
//! within one flush interval (at most [`MAX_UNFLUSHED_BYTES`] when the store is behind),
//! and a [`Chain`] (about 70 bytes) per open window of a stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use telemesh_proto::record::StreamId;
use telemesh_proto::stream::State;
use telemesh_proto::window;

use crate::ingest::pending::Pending;
use crate::store::{Encoded, Logged, PartLoc, Sealing, Store, StoreError, StoredRecord};

/// A stream with at least this many new records in a flush writes its own chunk.
pub const CHUNK_MIN: usize = 32;
/// A window whose records have waited in the log for this many flushes (2 minutes at the
/// default interval) is sealed as it is, even if its stream is still writing to it (a
/// device whose clock stands still): the log, deleted segment by segment, holds no more
/// than about this many flushes of records. Later records seal it again.
pub const MAX_CHAIN_FLUSHES: u64 = 240;
/// Streams that left memory and wait for the next flush to write them at most (a state,
/// the records, the windows: about 1 KB each besides the records, which are bounded with
/// the others); while this many wait, no stream that is not in memory comes in.
pub const MAX_LEAVING: usize = 65_536;
/// A window sealed again for late records waits this many flushes (5 s at the default
/// interval) for more of them, so a stream sending late records steadily costs one seal
/// of the window per this many flushes instead of one per flush.
pub const LATE_SEAL_FLUSHES: u64 = 10;
/// Changed stream states are saved every this many flushes (and on eviction and
/// shutdown); after a crash the counters may lag by that long.
pub const STATE_EVERY: u64 = 600;
/// Windows sealed in one call to the store: their records are decoded (or copied) for the
/// seal, so a flush that seals thousands of windows (10,000 devices crossing a minute, or
/// thousands of evicted streams) holds one group's records decoded at a time.
const WINDOWS_PER_SEAL_CALL: usize = 512;
/// A call ends its group once it holds this many records (about 1.5 MB decoded): 512
/// windows of 900 records each (10,000 devices at 150,000 datagrams/s crossing a minute)
/// were 40–70 MB at once, the node's peak; 32,768 records still put the seal of every
/// window at once 7 MB above the level while datagrams arrive, 8,192 about 1 MB.
const RECORDS_PER_SEAL_CALL: usize = 8_192;

/// One stream in memory.
#[derive(Debug)]
pub struct Entry {
    pub state: State,
    /// Records received since the last flush, encoded.
    pub pending: Pending,
    /// Records being written by a flush that has not finished.
    pub in_flight: Option<Arc<Pending>>,
    /// Its windows' records in the write-ahead log, until the window is sealed.
    pub live: Vec<Chain>,
    dirty: bool,
    touched_ns: u64,
    /// The newest window written to, to seal it when the stream moves on.
    open_window: Option<u64>,
}

impl Entry {
    fn new(state: State, now_ns: u64) -> Entry {
        let open_window = state.last_device_time_ns().map(window::start);
        Entry { state, pending: Pending::default(), in_flight: None, live: Vec::new(), dirty: false, touched_ns: now_ns, open_window }
    }
}

/// The live records of one stream in one window: a chain of parts in the write-ahead log,
/// one per flush that wrote some, each naming the one before (`store::wal`). Memory holds
/// only where the newest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    window_start: u64,
    head: PartLoc,
    /// The newest part already sealed, where reading stops: parts were written after it
    /// while the window was being sealed. (Or, for a chain begun then, the part before.)
    stop: Option<PartLoc>,
    /// Records in the parts after `stop`.
    records: usize,
    /// The oldest log entry those parts may be in, and the entry of `head`.
    first_wal: u64,
    head_wal: u64,
}

impl Chain {
    /// Its records, read from the log, in the order written.
    fn read(&self, stream: StreamId, store: &dyn Store) -> Result<Vec<StoredRecord>, StoreError> {
        store.read_live(stream, self.window_start, self.head, self.stop)
    }
}

/// What a stream that left memory still holds there: its state, its records not yet in a
/// sealed window, and the windows to seal. The next flush writes the state and seals the
/// windows without the table lock ([`Table::take_evicted`], [`EvictedJob::run`],
/// [`Table::finish_evicted`]), so ingest never waits on the disk to make room; meanwhile
/// queries, duplicate checks and a stream coming back still see them.
#[derive(Debug, Default, Clone)]
pub struct Gone {
    /// Its state when it left, until written (`None` once the stream is back in memory,
    /// whose entry holds a newer one).
    state: Option<State>,
    /// Records written nowhere yet (the stream's pending records when it left).
    pending: Pending,
    /// Records in the write-ahead log.
    live: Vec<Chain>,
    /// Windows to seal: those of the records, the stream's open window, and windows with
    /// late records waiting to be sealed again.
    windows: BTreeSet<u64>,
}

impl Gone {
    fn records(&self, stream: StreamId, store: &dyn Store) -> Result<Vec<StoredRecord>, StoreError> {
        unflushed(stream, &self.live, None, &self.pending, store)
    }

    /// Its records of window `w`.
    fn window(&self, stream: StreamId, w: u64, store: &dyn Store) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out = Vec::new();
        for c in self.live.iter().filter(|c| c.window_start == w) {
            out.extend(c.read(stream, store)?);
        }
        out.extend(self.pending.window(w));
        Ok(out)
    }

    /// Adds what the stream left behind later.
    fn absorb(&mut self, more: Gone) {
        if more.state.is_some() {
            self.state = more.state;
        }
        self.pending.append(more.pending);
        self.live.extend(more.live);
        self.windows.extend(more.windows);
    }
}

/// The records of a stream that left memory and are still waiting for their windows'
/// seal: in the queue and in a seal running now ([`Table::entry`] gives them for
/// duplicate checks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Leaving<'a> {
    queued: Option<&'a Gone>,
    sealing: Option<&'a Gone>,
}

impl Leaving<'_> {
    pub fn records(&self, stream: StreamId, store: &dyn Store) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out = Vec::new();
        for gone in [self.queued, self.sealing].into_iter().flatten() {
            out.extend(gone.records(stream, store)?);
        }
        Ok(out)
    }
}

/// The windows of streams that left memory, to seal with their records
/// ([`Table::take_evicted`]).
#[derive(Debug, Default)]
pub struct EvictedJob {
    streams: Vec<(StreamId, Arc<Gone>)>,
}

impl EvictedJob {
    /// Streams whose windows it seals.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Windows it seals.
    pub fn windows(&self) -> usize {
        self.streams.iter().map(|(_, g)| g.windows.len()).sum()
    }

    /// Writes the states, then seals every window, each with its records held here, a few
    /// hundred windows at a time (their records are copied for the seal).
    pub fn run(&self, store: &dyn Store) -> Result<(), StoreError> {
        let states: Vec<(StreamId, State)> =
            self.streams.iter().filter_map(|(id, gone)| Some((*id, gone.state.clone()?))).collect();
        if !states.is_empty() {
            store.append(&[], &[], &states)?;
        }
        let windows = self.streams.iter().flat_map(|(stream, gone)| gone.windows.iter().map(move |&w| (*stream, gone, w)));
        seal_in_groups(store, windows.map(|(stream, gone, w)| Ok((stream, w, gone.window(stream, w, store)?))))
    }
}

/// Seals `windows` (stream, window start, the records held in memory and the log for it),
/// [`WINDOWS_PER_SEAL_CALL`] or [`RECORDS_PER_SEAL_CALL`] to a call, in order: only one
/// group's records are taken from `windows` (read or decoded) at a time.
fn seal_in_groups(
    store: &dyn Store,
    windows: impl Iterator<Item = Result<(StreamId, u64, Vec<StoredRecord>), StoreError>>,
) -> Result<(), StoreError> {
    let mut group: Vec<(StreamId, u64, Vec<StoredRecord>)> = Vec::with_capacity(WINDOWS_PER_SEAL_CALL);
    let mut windows = windows.fuse();
    loop {
        group.clear();
        let mut records = 0;
        for w in windows.by_ref() {
            let w = w?;
            records += w.2.len();
            group.push(w);
            if group.len() == WINDOWS_PER_SEAL_CALL || records >= RECORDS_PER_SEAL_CALL {
                break;
            }
        }
        if group.is_empty() {
            return Ok(());
        }
        let sealing: Vec<Sealing<'_>> =
            group.iter().map(|(stream, window_start, live)| Sealing { stream: *stream, window_start: *window_start, live }).collect();
        store.seal_windows(&sealing)?;
    }
}

/// A stream's records not in a chunk or a sealed window (live, read from the log, in
/// flight, then pending), from the parts of its [`Entry`].
pub fn unflushed(
    stream: StreamId,
    live: &[Chain],
    in_flight: Option<&Pending>,
    pending: &Pending,
    store: &dyn Store,
) -> Result<Vec<StoredRecord>, StoreError> {
    let mut taken = Unflushed { stream, chains: Vec::new(), memory: Vec::new() };
    taken.add(live, in_flight, pending);
    taken.read(store)
}

/// A stream's records not in a chunk or a sealed window, as taken under the table lock
/// ([`Table::unflushed_of`]): those in memory, decoded, and where the others are in the
/// log, to read without the lock ([`Unflushed::read`]).
#[derive(Debug)]
pub struct Unflushed {
    stream: StreamId,
    chains: Vec<Chain>,
    memory: Vec<StoredRecord>,
}

impl Unflushed {
    /// Adds a stream's chains, in-flight and pending records.
    fn add(&mut self, live: &[Chain], in_flight: Option<&Pending>, pending: &Pending) {
        self.chains.extend_from_slice(live);
        self.memory.extend(in_flight.into_iter().flat_map(Pending::records));
        self.memory.extend(pending.records());
    }

    /// Every record: those in the log (parts of a window sealed since may be gone from it,
    /// and are in the store, which the caller reads after this), then those that were in
    /// memory.
    pub fn read(self, store: &dyn Store) -> Result<Vec<StoredRecord>, StoreError> {
        let mut out = Vec::new();
        for c in &self.chains {
            out.extend(c.read(self.stream, store)?);
        }
        out.extend(self.memory);
        Ok(out)
    }
}

/// A flush taken from the table: what to write, and to whom it belongs.
#[derive(Debug, Default)]
pub struct Flush {
    /// Streams writing chunks of their own.
    chunked: Vec<(StreamId, Arc<Pending>)>,
    /// Streams whose records go into the shared log entry, with the newest part in the
    /// log of each window they have records of (window order, as [`Pending::encode`]).
    logged: Vec<(StreamId, Arc<Pending>, Vec<Option<PartLoc>>)>,
    states: Vec<(StreamId, State)>,
}

/// What a flush wrote.
#[derive(Debug)]
pub struct Written {
    /// The (stream, window) of each chunk written.
    chunks: Vec<(StreamId, u64)>,
    /// The log entry, and each part of it.
    logged: Option<(u64, Vec<LoggedPart>)>,
}

/// One part of a flush's log entry.
#[derive(Debug)]
struct LoggedPart {
    stream: StreamId,
    window_start: u64,
    records: usize,
    at: PartLoc,
    prev: Option<PartLoc>,
}

impl Flush {
    /// Writes the chunks, the log entry and the states.
    pub fn write(&self, store: &dyn Store) -> Result<Written, StoreError> {
        let chunks: Vec<Encoded> = self.chunked.iter().flat_map(|(_, p)| p.encode()).collect();
        let encoded: Vec<(Encoded, Option<PartLoc>)> =
            self.logged.iter().flat_map(|(_, p, prevs)| p.encode().zip(prevs.iter().copied())).collect();
        let logged: Vec<Logged<'_>> = encoded.iter().map(|(rows, prev)| Logged { rows, prev: *prev }).collect();
        let written = store.append(&chunks, &logged, &self.states)?;
        let logged = written.map(|(id, at)| {
            let parts = encoded.iter().zip(at).map(|((e, prev), at)| LoggedPart {
                stream: e.stream,
                window_start: e.window_start,
                records: e.records,
                at,
                prev: *prev,
            });
            (id, parts.collect())
        });
        Ok(Written { chunks: chunks.iter().map(|c| (c.stream, c.window_start)).collect(), logged })
    }
}

/// Windows to seal, with the live records of each, taken from the table so the sealing
/// itself can run without the table lock.
#[derive(Debug, Default)]
pub struct SealJob {
    windows: Vec<ToSeal>,
}

/// One window of a [`SealJob`].
#[derive(Debug)]
struct ToSeal {
    stream: StreamId,
    window_start: u64,
    /// Its live records, as the chain was when the job was taken.
    chain: Option<Chain>,
}

impl SealJob {
    /// Seals the windows a group at a time ([`seal_in_groups`]), each group's live records
    /// read from the log only for its turn (in window order, so a stream's windows are
    /// sealed in order).
    pub fn run(&self, store: &dyn Store) -> Result<(), StoreError> {
        let windows = self.windows.iter().map(|w| {
            let live = match &w.chain {
                Some(c) => c.read(w.stream, store)?,
                None => Vec::new(),
            };
            Ok((w.stream, w.window_start, live))
        });
        seal_in_groups(store, windows)
    }

    /// Live records of each window: `(window start, records)`.
    #[cfg(test)]
    fn live_counts(&self) -> Vec<(u64, usize)> {
        self.windows.iter().map(|w| (w.window_start, w.chain.map_or(0, |c| c.records))).collect()
    }
}

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub records: usize,
    pub chunks: usize,
    pub logged: usize,
    pub states: usize,
    pub sealed: usize,
}

impl std::ops::AddAssign for Flushed {
    fn add_assign(&mut self, d: Flushed) {
        self.records += d.records;
        self.chunks += d.chunks;
        self.logged += d.logged;
        self.states += d.states;
        self.sealed += d.sealed;
    }
}

/// Streams flushed together at shutdown ([`Table::flush`]).
pub const SHUTDOWN_SLICE: usize = 1_000;

/// Most bytes of records held in memory unflushed (pending or in flight, encoded: about 60
/// bytes an IoTStream record, so some 550,000 records: 2 s at 250,000 datagrams/s). Reached
/// when the store falls behind the datagrams, or keeps failing: past it, new records are
/// refused (and counted, `store_behind`) rather than growing memory without bound.
pub const MAX_UNFLUSHED_BYTES: usize = 32 << 20;

/// Streams in memory.
#[derive(Debug)]
pub struct Table {
    /// Boxed: an entry is a few hundred bytes, and the map has room for up to twice as many
    /// entries as it holds (and for a moment three times, while it grows).
    entries: HashMap<StreamId, Box<Entry>>,
    max: usize,
    unflushed: usize,
    /// Their encoded bytes ([`Pending::bytes`]), and its bound.
    unflushed_bytes: usize,
    max_unflushed_bytes: usize,
    max_leaving: usize,
    /// Streams that left memory, with what they still hold there, to seal by the next
    /// flush; and those being sealed now.
    evicted: BTreeMap<StreamId, Gone>,
    sealing: BTreeMap<StreamId, Arc<Gone>>,
    /// Live records across all streams.
    live: usize,
    /// For each log entry, how many chains may still need it (its oldest).
    wal_refs: BTreeMap<u64, usize>,
    /// Windows whose sealing failed, sealed again with the next flush.
    retry_seal: Vec<(StreamId, u64)>,
    /// Sealed windows that got late records, with the flush that wrote the first of them:
    /// sealed again [`LATE_SEAL_FLUSHES`] later.
    late: BTreeMap<(StreamId, u64), u64>,
    flushes: u64,
}

impl Table {
    pub fn new(max: usize) -> Table {
        Table::with_unflushed_limit(max, MAX_UNFLUSHED_BYTES)
    }

    /// A table holding at most `max` streams and `max_unflushed_bytes` of unflushed records.
    pub fn with_unflushed_limit(max: usize, max_unflushed_bytes: usize) -> Table {
        Table {
            entries: HashMap::new(),
            max,
            unflushed: 0,
            unflushed_bytes: 0,
            max_unflushed_bytes,
            max_leaving: MAX_LEAVING,
            evicted: BTreeMap::new(),
            sealing: BTreeMap::new(),
            live: 0,
            wal_refs: BTreeMap::new(),
            retry_seal: Vec::new(),
            late: BTreeMap::new(),
            flushes: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records in memory not yet written (pending or in flight).
    pub fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// Bytes of memory the unflushed records hold.
    pub fn unflushed_bytes(&self) -> usize {
        self.unflushed_bytes
    }

    /// Live records: in the log, awaiting their window's seal.
    pub fn live(&self) -> usize {
        self.live
    }

    /// Whether another record may be queued (see [`MAX_UNFLUSHED_BYTES`]).
    pub fn has_room(&self) -> bool {
        self.unflushed_bytes < self.max_unflushed_bytes
    }

    /// At most `n` streams wait to leave memory ([`Table::may_enter`]).
    pub fn with_leaving_limit(mut self, n: usize) -> Table {
        self.max_leaving = n;
        self
    }

    /// Whether a datagram of stream `id` may come in: always for a stream in memory; for
    /// another, which may push a stream out to make room, not while [`MAX_LEAVING`]
    /// streams that left memory still wait for their seal (the store is slow or failing).
    pub fn may_enter(&self, id: &StreamId) -> bool {
        // The counts first: on every datagram, and nearly always enough.
        self.evicted.len() + self.sealing.len() < self.max_leaving || self.entries.contains_key(id)
    }

    /// Counts what an entry's `pending` grew by: `records` more, `bytes` more encoded
    /// ([`Pending::bytes`]).
    pub fn queued(&mut self, records: usize, bytes: usize) {
        self.unflushed += records;
        self.unflushed_bytes += bytes;
    }

    /// Uncounts records that left memory unflushed.
    fn written(&mut self, records: &Pending) {
        self.unflushed = self.unflushed.saturating_sub(records.len());
        self.unflushed_bytes = self.unflushed_bytes.saturating_sub(records.bytes());
    }

    /// Whether this node has a state for stream `id`: in memory, or in the store.
    pub fn knows(&self, id: StreamId, store: &dyn Store) -> Result<bool, StoreError> {
        Ok(self.entries.contains_key(&id) || self.left_state(&id).is_some() || store.state(id)?.is_some())
    }

    /// The state a stream out of memory left that is not written yet: the latest it left
    /// (queued), else the one a running seal is writing.
    fn left_state(&self, id: &StreamId) -> Option<State> {
        let queued = self.evicted.get(id).and_then(|g| g.state.as_ref());
        queued.or_else(|| self.sealing.get(id).and_then(|g| g.state.as_ref())).cloned()
    }

    /// The entry of `id`, loaded from the store (or new) if not in memory, marked dirty.
    /// At capacity, the least recently active tenth of the table leaves memory ([`Gone`]).
    /// With it, the records the stream left behind when it last left memory, if they are
    /// still waiting for their windows' seal: what a duplicate check must see too.
    pub fn entry(&mut self, id: StreamId, now_ns: u64, store: &dyn Store) -> Result<(&mut Entry, Leaving<'_>), StoreError> {
        if !self.entries.contains_key(&id) {
            if self.entries.len() >= self.max {
                self.shrink_to(self.max - self.max / 10 - 1);
            }
            let state = match self.left_state(&id) {
                Some(state) => state,
                None => store.state(id)?.unwrap_or_default(),
            };
            self.entries.insert(id, Box::new(Entry::new(state, now_ns)));
        }
        let entry = self.entries.entry(id).or_insert_with(|| Box::new(Entry::new(State::default(), now_ns)));
        entry.dirty = true;
        entry.touched_ns = now_ns;
        let leaving = Leaving { queued: self.evicted.get(&id), sealing: self.sealing.get(&id).map(|g| &**g) };
        Ok((entry, leaving))
    }

    /// Takes every stream's pending records (they become `in_flight`), and the changed
    /// states every [`STATE_EVERY`] flushes. Streams with a flush in flight wait.
    pub fn begin_flush(&mut self) -> Flush {
        let ids: Vec<StreamId> = self.entries.keys().copied().collect();
        let states = self.flushes.is_multiple_of(STATE_EVERY);
        self.flushes += 1;
        self.begin_flush_of(&ids, states)
    }

    fn begin_flush_of(&mut self, ids: &[StreamId], states: bool) -> Flush {
        let mut flush = Flush::default();
        for id in ids {
            let Some(e) = self.entries.get_mut(id) else { continue };
            if e.in_flight.is_some() {
                continue;
            }
            if !e.pending.is_empty() {
                let records = Arc::new(std::mem::take(&mut e.pending));
                e.in_flight = Some(Arc::clone(&records));
                if records.len() >= CHUNK_MIN {
                    flush.chunked.push((*id, records));
                } else {
                    let heads = records.windows().map(|w| e.live.iter().find(|c| c.window_start == w).map(|c| c.head)).collect();
                    flush.logged.push((*id, records, heads));
                }
            }
            if e.dirty && states {
                e.dirty = false;
                flush.states.push((*id, e.state.clone()));
            }
        }
        flush
    }

    /// Ends a flush. On success the written records leave `in_flight` (logged ones become
    /// live), and the windows the streams moved past or that got late records are returned
    /// as a [`SealJob`], to run without the table lock ([`SealJob::run`], then
    /// [`Table::finish_seal`]). On failure the records go back to pending.
    pub fn finish_flush(&mut self, flush: Flush, written: Result<Written, StoreError>) -> Result<(Flushed, SealJob), StoreError> {
        let written = match written {
            Ok(w) => w,
            Err(err) => {
                let logged = flush.logged.into_iter().map(|(id, records, _)| (id, records));
                for (id, records) in flush.chunked.into_iter().chain(logged) {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.in_flight = None;
                        let newer = std::mem::take(&mut e.pending);
                        e.pending = Arc::unwrap_or_clone(records);
                        e.pending.append(newer);
                    }
                }
                for (id, _) in flush.states {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.dirty = true;
                    }
                }
                return Err(err);
            }
        };
        let (wal_id, parts) = written.logged.unwrap_or_default();
        let mut done =
            Flushed { chunks: written.chunks.len(), logged: parts.len(), states: flush.states.len(), ..Flushed::default() };
        let logged = flush.logged.iter().map(|(id, records, _)| (id, records));
        for (id, records) in flush.chunked.iter().map(|(id, records)| (id, records)).chain(logged) {
            done.records += records.len();
            self.written(records);
            if let Some(e) = self.entries.get_mut(id) {
                e.in_flight = None;
            }
        }
        let windows: Vec<(StreamId, u64)> =
            written.chunks.iter().copied().chain(parts.iter().map(|p| (p.stream, p.window_start))).collect();
        for part in parts {
            // A stream with a write in flight stays in memory.
            let Some(e) = self.entries.get_mut(&part.stream) else { continue };
            self.live += part.records;
            match e.live.iter_mut().find(|c| c.window_start == part.window_start) {
                Some(c) => {
                    debug_assert_eq!(Some(c.head), part.prev, "a chain goes on from its head");
                    c.head = part.at;
                    c.head_wal = wal_id;
                    c.records += part.records;
                }
                None => {
                    // A new chain; or one whose part before was sealed while this was written.
                    *self.wal_refs.entry(wal_id).or_default() += 1;
                    let chain = Chain {
                        window_start: part.window_start,
                        head: part.at,
                        stop: part.prev,
                        records: part.records,
                        first_wal: wal_id,
                        head_wal: wal_id,
                    };
                    e.live.push(chain);
                }
            }
        }
        let mut closed = Vec::new();
        // Windows whose records have waited in the log too long are sealed as they are.
        let old = wal_id.saturating_sub(MAX_CHAIN_FLUSHES);
        if self.oldest_needed_wal() < old {
            for (id, e) in &self.entries {
                closed.extend(e.live.iter().filter(|c| c.first_wal < old).map(|c| (*id, c.window_start)));
            }
        }
        for (stream, window_start) in windows {
            let Some(e) = self.entries.get_mut(&stream) else { continue };
            e.open_window = match e.open_window {
                Some(w) if w == window_start => Some(w),
                Some(w) if w < window_start => {
                    closed.push((stream, w));
                    Some(window_start)
                }
                Some(open) => {
                    // Late records for a closed window: sealed again a little later.
                    self.late.entry((stream, window_start)).or_insert(self.flushes);
                    Some(open)
                }
                None => Some(window_start),
            };
        }
        closed.append(&mut self.retry_seal);
        let due = self.flushes.saturating_sub(LATE_SEAL_FLUSHES);
        let (waiting, ready): (BTreeMap<_, _>, BTreeMap<_, _>) = std::mem::take(&mut self.late).into_iter().partition(|(_, at)| *at > due);
        self.late = waiting;
        closed.extend(ready.into_keys());
        closed.sort_unstable();
        closed.dedup();
        done.sealed = closed.len();
        Ok((done, self.seal_job(&closed)))
    }

    /// The windows to seal, with where their live records are in the log.
    fn seal_job(&self, windows: &[(StreamId, u64)]) -> SealJob {
        SealJob {
            windows: windows
                .iter()
                .map(|(stream, w)| {
                    let chain = self.entries.get(stream).and_then(|e| e.live.iter().find(|c| c.window_start == *w)).copied();
                    ToSeal { stream: *stream, window_start: *w, chain }
                })
                .collect(),
        }
    }

    /// After a [`SealJob`] ran: on success exactly the live records it sealed leave
    /// memory (one that arrived meanwhile stays live, and its window is sealed again), and
    /// the log entries they needed may go once the seal is durable
    /// ([`Table::oldest_needed_wal`]); on failure the windows are sealed again with the next
    /// flush.
    pub fn finish_seal(&mut self, job: SealJob, sealed: Result<(), StoreError>) -> Result<(), StoreError> {
        if let Err(e) = sealed {
            self.retry_seal.extend(job.windows.into_iter().map(|w| (w.stream, w.window_start)));
            return Err(e);
        }
        for ToSeal { stream, chain, .. } in job.windows {
            if let Some(sealed) = chain {
                self.sealed(stream, &sealed);
            }
        }
        Ok(())
    }

    /// The records of chain `sealed` (as a seal job took it) are sealed: the chain leaves
    /// the stream (in memory, or waiting to leave it), or, if parts were written after it
    /// meanwhile, keeps only those.
    fn sealed(&mut self, stream: StreamId, sealed: &Chain) {
        let chains = match self.entries.get_mut(&stream) {
            Some(e) => &mut e.live,
            None => match self.evicted.get_mut(&stream) {
                Some(gone) => &mut gone.live,
                None => return, // being sealed with the stream's other windows
            },
        };
        let same = |c: &Chain| c.window_start == sealed.window_start && c.first_wal == sealed.first_wal && c.stop == sealed.stop;
        let Some(i) = chains.iter().position(same) else { return };
        let now = chains[i];
        let rest = (now.head != sealed.head).then(|| Chain {
            stop: Some(sealed.head),
            records: now.records.saturating_sub(sealed.records),
            first_wal: sealed.head_wal + 1,
            ..now
        });
        match rest {
            Some(rest) => chains[i] = rest,
            None => {
                chains.remove(i);
            }
        }
        self.release(&Chain { records: sealed.records, ..now });
        if let Some(rest) = rest {
            *self.wal_refs.entry(rest.first_wal).or_default() += 1;
        }
    }

    /// Chain `c`'s records are sealed: they leave the count, and it no longer needs its
    /// oldest log entry.
    fn release(&mut self, c: &Chain) {
        self.live = self.live.saturating_sub(c.records);
        if let Some(n) = self.wal_refs.get_mut(&c.first_wal) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.wal_refs.remove(&c.first_wal);
            }
        }
    }

    /// The oldest log entry a live record still needs (everything, if none): the log may
    /// drop the entries before it ([`Store::release_wal`]) once what was sealed is durable
    /// ([`Store::flush`]) — not before, or a crash between the two would lose records that
    /// are neither in the log nor in a durable seal.
    pub fn oldest_needed_wal(&self) -> u64 {
        self.wal_refs.keys().min().copied().unwrap_or(u64::MAX)
    }

    /// Flushes the given streams while holding the table, with their states.
    fn flush_now(&mut self, ids: &[StreamId], store: &dyn Store) -> Result<Flushed, StoreError> {
        let flush = self.begin_flush_of(ids, true);
        let written = flush.write(store);
        let (done, job) = self.finish_flush(flush, written)?;
        let sealed = job.run(store);
        self.finish_seal(job, sealed)?;
        Ok(done)
    }

    /// Flushes every stream, with its state, while holding the table (shutdown); windows
    /// waiting to be sealed again for late records are sealed now.
    ///
    /// A slice of [`SHUTDOWN_SLICE`] streams at a time, so that what a flush holds in
    /// memory at once (the write's batch, the records of the windows it seals) does not
    /// grow with the table.
    pub fn flush(&mut self, store: &dyn Store) -> Result<Flushed, StoreError> {
        self.retry_seal.extend(std::mem::take(&mut self.late).into_keys());
        let ids: Vec<StreamId> = self.entries.keys().copied().collect();
        let mut done = Flushed::default();
        for slice in ids.chunks(SHUTDOWN_SLICE) {
            done += self.flush_now(slice, store)?;
        }
        Ok(done)
    }

    /// Drops streams silent since before `cutoff_ns` from memory (for the next flush to
    /// write and seal what they leave); returns how many.
    pub fn evict_idle(&mut self, cutoff_ns: u64) -> usize {
        let idle: Vec<StreamId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.touched_ns < cutoff_ns && e.in_flight.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.evict(&idle);
        idle.len()
    }

    fn shrink_to(&mut self, keep: usize) {
        let mut by_age: Vec<(u64, StreamId)> =
            self.entries.iter().filter(|(_, e)| e.in_flight.is_none()).map(|(id, e)| (e.touched_ns, *id)).collect();
        by_age.sort_unstable();
        let n = self.entries.len().saturating_sub(keep);
        let oldest: Vec<StreamId> = by_age.into_iter().take(n).map(|(_, id)| id).collect();
        self.evict(&oldest);
    }

    /// Drops `ids` from memory: their states and what they hold (pending and live records,
    /// the windows they were writing or had late records in) wait in [`Gone`] for the next
    /// flush to write and seal (a stream leaving memory is quiet, so its windows are
    /// done). Streams with a write in flight stay.
    fn evict(&mut self, ids: &[StreamId]) {
        for &id in ids {
            if self.entries.get(&id).is_none_or(|e| e.in_flight.is_some()) {
                continue;
            }
            let Some(e) = self.entries.remove(&id) else { continue };
            let mut windows: BTreeSet<u64> = e.open_window.into_iter().collect();
            windows.extend(e.pending.windows());
            windows.extend(e.live.iter().map(|c| c.window_start));
            let late: Vec<(StreamId, u64)> = self.late.range((id, 0)..=(id, u64::MAX)).map(|(k, _)| *k).collect();
            for k in late {
                self.late.remove(&k);
                windows.insert(k.1);
            }
            self.evicted.entry(id).or_default().absorb(Gone { state: Some(e.state), pending: e.pending, live: e.live, windows });
        }
    }

    /// The windows of streams that left memory, with their records, to seal without the
    /// table lock; the records stay visible until [`Table::finish_evicted`].
    pub fn take_evicted(&mut self) -> EvictedJob {
        let mut job = EvictedJob::default();
        for (id, mut gone) in std::mem::take(&mut self.evicted) {
            if self.entries.contains_key(&id) {
                gone.state = None; // back in memory, with a newer state
            }
            let gone = Arc::new(gone);
            self.sealing.insert(id, Arc::clone(&gone));
            job.streams.push((id, gone));
        }
        job
    }

    /// After an [`EvictedJob`] ran: on success its records leave memory and the log
    /// entries no longer needed are released; on failure it waits for the next flush.
    pub fn finish_evicted(&mut self, job: EvictedJob, sealed: Result<(), StoreError>) -> Result<(), StoreError> {
        for (id, _) in &job.streams {
            self.sealing.remove(id);
        }
        if let Err(e) = sealed {
            for (id, gone) in job.streams {
                let gone = Arc::unwrap_or_clone(gone);
                // Older first: what the stream left behind since goes after.
                let newer = self.evicted.remove(&id);
                let merged = self.evicted.entry(id).or_default();
                merged.absorb(gone);
                merged.absorb(newer.unwrap_or_default());
            }
            return Err(e);
        }
        for (_, gone) in job.streams {
            self.written(&gone.pending);
            for c in &gone.live {
                self.release(c);
            }
        }
        Ok(())
    }

    /// Closes the open window of every stream quiet since before `cutoff_ns`: it is sealed
    /// with the next flush, so the mesh sees a stream's last window without waiting for
    /// the stream to move on or leave memory. A record arriving later opens it again.
    pub fn close_quiet(&mut self, cutoff_ns: u64) {
        for (id, e) in &mut self.entries {
            if e.touched_ns < cutoff_ns && e.in_flight.is_none() && e.pending.is_empty() {
                if let Some(w) = e.open_window.take() {
                    self.retry_seal.push((*id, w));
                }
            }
        }
    }

    /// The streams in memory that received a datagram at or after `since_ns`, with the
    /// time of their latest ([`crate::ingest::heard`]).
    pub fn heard_since(&self, since_ns: u64) -> Vec<(StreamId, u64)> {
        self.entries.iter().filter(|(_, e)| e.touched_ns >= since_ns).map(|(id, e)| (*id, e.touched_ns)).collect()
    }

    /// A copy of every state in memory, those of streams that left and are not written
    /// yet included.
    pub fn snapshot(&self) -> Vec<(StreamId, State)> {
        let left = self.sealing.keys().chain(self.evicted.keys()).filter(|id| !self.entries.contains_key(id));
        let left: BTreeSet<StreamId> = left.copied().collect();
        let left = left.into_iter().filter_map(|id| Some((id, self.left_state(&id)?)));
        self.entries.iter().map(|(id, e)| (*id, e.state.clone())).chain(left).collect()
    }

    /// A copy of the state of `id`, if it is in memory (or left and is not written yet).
    pub fn state_of(&self, id: &StreamId) -> Option<State> {
        self.entries.get(id).map(|e| e.state.clone()).or_else(|| self.left_state(id))
    }

    /// The records of `id` not yet in a chunk or sealed window, in memory or left behind
    /// when the stream last left it: a copy of those in memory, and where the others are in
    /// the log ([`Unflushed::read`], without the table lock).
    pub fn unflushed_of(&self, id: &StreamId) -> Unflushed {
        let mut out = Unflushed { stream: *id, chains: Vec::new(), memory: Vec::new() };
        let gones = [self.evicted.get(id), self.sealing.get(id).map(|g| &**g)];
        for gone in gones.into_iter().flatten() {
            out.add(&gone.live, None, &gone.pending);
        }
        if let Some(e) = self.entries.get(id) {
            out.add(&e.live, e.in_flight.as_deref(), &e.pending);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::broken::Broken;
    use telemesh_proto::record::{Kind, Readings, Record};
    use telemesh_proto::window;
    use telemesh_proto::wire::Dialect;

    const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 3 };

    /// Pushes `record` onto the pending records of stream `id`, and counts it.
    fn pend(table: &mut Table, id: StreamId, now_ns: u64, store: &dyn Store, record: StoredRecord) {
        let bytes = encoded_size(&record);
        table.entry(id, now_ns, store).expect("entry").0.pending.push(&record);
        table.queued(1, bytes);
    }

    /// Pushes record `seq` at device time `t` onto the pending records of each of `ids`.
    fn pend_to_each(table: &mut Table, store: &dyn Store, ids: &[StreamId], seq: u64, t: u64) {
        for &id in ids {
            let mut r = record(seq, t);
            r.record.stream = id;
            pend(table, id, 1, store, r);
        }
    }

    /// The records of `id` not in a chunk or sealed window.
    fn held(table: &Table, id: &StreamId, store: &dyn Store) -> Vec<StoredRecord> {
        table.unflushed_of(id).read(store).expect("read the log")
    }

    /// Bytes `r` takes in memory while pending.
    fn encoded_size(r: &StoredRecord) -> usize {
        crate::store::Rows::of(r.record.stream, r.window(), [r]).len_bytes()
    }

    fn queue(table: &mut Table, store: &dyn Store, seq: u64) {
        let r = Record { stream: S, device_time_ns: seq, seq, timestamp_raw: seq, kind: Kind::Data, readings: Readings::None };
        pend(table, S, 1, store, StoredRecord::new(r, seq, 1));
    }

    #[test]
    fn records_waiting_for_the_store_are_bounded_by_their_size_not_their_count() {
        let mut table = Table::with_unflushed_limit(16, 64 << 10);
        // A secure frame's worth of readings: some 1.5 KB a record encoded.
        let readings = Readings::Pairs((0..40).map(|i| (format!("a-rather-long-reading-key-{i}"), 1.0)).collect());
        let record = |seq: u64| {
            let r = Record { stream: S, device_time_ns: seq, seq, timestamp_raw: 0, kind: Kind::Data, readings: readings.clone() };
            StoredRecord::new(r, seq, 1)
        };
        let one = encoded_size(&record(0));
        assert!(one > 1_000, "{one} bytes");
        let (mut queued, broken) = (0u64, Broken::default());
        while table.has_room() {
            pend(&mut table, S, 1, &broken, record(queued));
            queued += 1;
        }
        // 64 KiB holds some 2,000 records without readings.
        assert_eq!(queued as usize, (64usize << 10).div_ceil(one), "{queued} records of {one} bytes fill 64 KiB");
        assert_eq!(table.unflushed_bytes(), table.entries[&S].pending.bytes());
    }

    #[test]
    fn a_failing_store_keeps_records_and_bounds_them() {
        // Room for five of these records.
        let r = Record { stream: S, device_time_ns: 1, seq: 1, timestamp_raw: 1, kind: Kind::Data, readings: Readings::None };
        let mut table = Table::with_unflushed_limit(16, 5 * encoded_size(&StoredRecord::new(r, 1, 1)));
        let broken = Broken::default();
        queue(&mut table, &broken, 1);
        queue(&mut table, &broken, 2);
        let job = table.begin_flush();
        // Meanwhile a record arrives; it must come after the ones in flight.
        queue(&mut table, &broken, 3);
        assert_eq!(held(&table, &S, &broken).iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let written = job.write(&broken);
        assert!(table.finish_flush(job, written).is_err());
        assert_eq!(held(&table, &S, &broken).iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(table.unflushed(), 3);
        assert!(table.has_room());
        queue(&mut table, &broken, 4);
        queue(&mut table, &broken, 5);
        assert!(!table.has_room(), "five unflushed records reach the limit");

        // The store comes back: everything is written, and the room with it.
        let dir = tempfile::tempdir().expect("tempdir");
        let good = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let done = table.flush(&good).expect("flush");
        assert_eq!((done.records, table.unflushed(), table.unflushed_bytes()), (5, 0, 0));
        assert!(table.has_room());
        // A slow stream's records wait in the log, live in memory, until their window is
        // sealed; leaving memory moves them into the window.
        assert_eq!((table.live(), done.logged), (5, 1));
        assert_eq!(held(&table, &S, &good).len(), 5);
        table.evict_idle(u64::MAX);
        assert_eq!(held(&table, &S, &good).len(), 5, "still seen while its windows wait for their seal");
        let job = table.take_evicted();
        let sealed = job.run(&good);
        table.finish_evicted(job, sealed).expect("sealed");
        assert_eq!(table.live(), 0);
        assert!(held(&table, &S, &good).is_empty());
        assert_eq!(good.window(S, 0).expect("window").len(), 5);
    }

    fn record(seq: u64, t: u64) -> StoredRecord {
        let r = Record { stream: S, device_time_ns: t, seq, timestamp_raw: t, kind: Kind::Data, readings: Readings::None };
        StoredRecord::new(r, seq, 1)
    }

    fn flush_parts(table: &mut Table, store: &dyn Store) -> SealJob {
        let flush = table.begin_flush();
        let written = flush.write(store);
        table.finish_flush(flush, written).expect("flushed").1
    }

    #[test]
    fn late_records_every_flush_do_not_reseal_their_window_every_flush() {
        // A device whose clock went back (or that replays old data) sends late records
        // for a sealed window in every flush interval. Each seal reads, rebuilds and
        // rewrites the whole window; once per flush, that took both cores under load.
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let mut table = Table::new(16);
        let push = |table: &mut Table, seq: u64, t: u64| {
            pend(table, S, 1, &store, record(seq, t));
        };
        // Seals (windows written sealed) per flush.
        let run = |table: &mut Table| {
            let job = flush_parts(table, &store);
            let sealed = job.run(&store);
            table.finish_seal(job, sealed).expect("finish");
            store.take_changed().0.len()
        };
        push(&mut table, 1, 10);
        run(&mut table);
        push(&mut table, 2, window::SPAN_NS + 5); // moves on: window 0 is sealed
        assert_eq!(run(&mut table), 1);
        let mut seals = 0;
        for i in 0..30 {
            push(&mut table, 100 + i, 100 + i); // late, for window 0
            seals += run(&mut table);
        }
        assert!((2..=4).contains(&seals), "30 flushes with late records sealed window 0 {seals} times");
        table.flush(&store).expect("shutdown flush");
        assert_eq!(store.window(S, 0).expect("window").len(), 31, "every late record is in the window");
        let summary = store.summary(telemesh_proto::mesh::WindowId { stream: S, start: 0 }).expect("read").expect("sealed");
        assert_eq!(summary.count, 31, "and sealed into it by the shutdown flush");
    }

    #[test]
    fn a_record_arriving_while_its_window_is_sealed_stays_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let mut table = Table::new(16);
        for (seq, t) in [(1, 10), (2, 20)] {
            pend(&mut table, S, 1, &store, record(seq, t));
        }
        assert!(flush_parts(&mut table, &store).windows.is_empty());
        // The stream moves on to the next window: window 0 is to be sealed…
        pend(&mut table, S, 2, &store, record(3, window::SPAN_NS + 5));
        let job = flush_parts(&mut table, &store);
        assert_eq!(job.live_counts(), [(0, 2)]);
        // …and while it is, a late record for window 0 arrives and is logged.
        pend(&mut table, S, 3, &store, record(4, 40));
        let late = flush_parts(&mut table, &store);
        let sealed = job.run(&store);
        table.finish_seal(job, sealed).expect("finish");
        assert!(held(&table, &S, &store).iter().any(|r| r.record.seq == 4), "the late record is still live");
        assert_eq!(store.window(S, 0).expect("window").len(), 2, "two sealed; the late one is live");
        let history = crate::store::history::records(&store, &held(&table, &S, &store), S, 0, u64::MAX, 100).expect("history");
        assert_eq!(history.iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 4, 3], "queries see all of them");
        // Its own seal takes it in, once the window has waited for more late records.
        assert!(late.windows.is_empty(), "a late record's window is not sealed again at once");
        let mut late = late;
        for _ in 0..LATE_SEAL_FLUSHES {
            if !late.windows.is_empty() {
                break;
            }
            late = flush_parts(&mut table, &store);
        }
        assert_eq!(late.live_counts(), [(0, 1)]);
        let sealed = late.run(&store);
        table.finish_seal(late, sealed).expect("finish");
        assert!(!held(&table, &S, &store).iter().any(|r| r.record.seq == 4));
        assert_eq!(store.window(S, 0).expect("window").iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 4]);
    }

    #[test]
    fn a_stream_leaving_memory_goes_into_its_window_without_chunks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let mut table = Table::new(16);
        // Three records in the log (live), then two still pending when the stream leaves.
        for (seq, t) in [(1, 10), (2, 20), (3, 30)] {
            pend(&mut table, S, 1, &store, record(seq, t));
        }
        assert!(flush_parts(&mut table, &store).windows.is_empty());
        for (seq, t) in [(4, 40), (5, 50)] {
            pend(&mut table, S, 1, &store, record(seq, t));
        }
        assert_eq!(table.evict_idle(u64::MAX), 1);
        // Nothing was written into chunks: the store holds none of the five yet, and every
        // one is still seen (by queries, and by the duplicate check of a stream coming back).
        assert!(store.window(S, 0).expect("window").is_empty());
        assert_eq!(held(&table, &S, &store).len(), 5);
        assert_eq!(table.entry(S, 2, &store).expect("entry").1.records(S, &store).expect("read").len(), 5);
        let job = table.take_evicted();
        assert_eq!(job.windows(), 1);
        assert_eq!(held(&table, &S, &store).len(), 5, "still seen while being sealed");
        let sealed = job.run(&store);
        table.finish_evicted(job, sealed).expect("sealed");
        assert!(store.sealed(S, 0).expect("sealed").is_some());
        assert_eq!(store.window(S, 0).expect("window").iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
        assert_eq!((table.live(), table.unflushed()), (0, 0));
        assert!(held(&table, &S, &store).is_empty());
    }

    /// A stream's state leaves memory with it and is written by the next flush, not by
    /// the ingest path making room; until then it is what the API and a stream coming
    /// back see, and a stream back in memory has its newer state, never the older one.
    #[test]
    fn a_leaving_streams_state_is_written_by_the_flush_and_seen_until_then() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let mut table = Table::new(16);
        let received = |s: &State| s.counters.received;
        table.entry(S, 1, &store).expect("entry").0.state.first_arrival_ns = 1;
        table.entry(S, 2, &store).expect("entry").0.state.counters.received = 7;
        assert_eq!(table.evict_idle(u64::MAX), 1);
        assert_eq!(store.state(S).expect("read"), None, "not written on the ingest path");
        assert_eq!(table.state_of(&S).as_ref().map(received), Some(7));
        assert_eq!(table.snapshot().iter().map(|(id, s)| (*id, received(s))).collect::<Vec<_>>(), [(S, 7)]);
        assert!(table.knows(S, &store).expect("knows"), "not a new stream");
        // It comes back before the flush: its state is the one it left with.
        table.entry(S, 3, &store).expect("entry").0.state.counters.received = 8;
        let job = table.take_evicted();
        let sealed = job.run(&store);
        table.finish_evicted(job, sealed).expect("sealed");
        assert_eq!(store.state(S).expect("read"), None, "the older state is not written over the newer one");
        // It leaves again: the flush writes the state it left with.
        assert_eq!(table.evict_idle(u64::MAX), 1);
        let job = table.take_evicted();
        let sealed = job.run(&store);
        table.finish_evicted(job, sealed).expect("sealed");
        assert_eq!(store.state(S).expect("read").as_ref().map(received), Some(8));
        assert_eq!(table.state_of(&S), None);
        assert_eq!(table.entry(S, 4, &store).expect("entry").0.state.counters.received, 8, "read back");
    }

    /// More streams leave at once than one sealing group holds: every one's window is
    /// sealed, group after group.
    #[test]
    fn thousands_of_streams_leaving_at_once_are_all_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let n = WINDOWS_PER_SEAL_CALL as u32 * 2 + 7;
        let mut table = Table::new(n as usize * 2);
        let ids: Vec<StreamId> = (0..n).map(|device| StreamId { device, ..S }).collect();
        pend_to_each(&mut table, &store, &ids, 1, 10);
        assert_eq!(table.evict_idle(u64::MAX), n as usize);
        let job = table.take_evicted();
        let sealed = job.run(&store);
        table.finish_evicted(job, sealed).expect("sealed");
        for id in ids {
            assert_eq!(store.window(id, 0).expect("window").len(), 1, "{id:?}");
        }
        assert_eq!(table.unflushed(), 0);
    }

    /// More windows close in one flush than one sealing group holds (devices crossing a
    /// minute together): every one is sealed with its live records, group after group,
    /// and only those records leave memory.
    #[test]
    fn thousands_of_windows_closing_at_once_are_all_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let n = WINDOWS_PER_SEAL_CALL as u32 * 2 + 7;
        let mut table = Table::new(n as usize * 2);
        let ids: Vec<StreamId> = (0..n).map(|device| StreamId { device, ..S }).collect();
        for (seq, t) in [(1, 10), (2, window::SPAN_NS + 10)] {
            pend_to_each(&mut table, &store, &ids, seq, t);
            let job = flush_parts(&mut table, &store);
            let sealed = job.run(&store);
            table.finish_seal(job, sealed).expect("sealed");
        }
        for &id in &ids {
            assert_eq!(store.window(id, 0).expect("window").len(), 1, "{id:?}");
            assert_eq!(held(&table, &id, &store).iter().map(|r| r.record.seq).collect::<Vec<_>>(), [2], "{id:?}");
        }
        assert_eq!(table.live(), n as usize, "the next window's records stay live");
    }

    #[test]
    fn streams_waiting_to_leave_memory_are_bounded_while_the_store_cannot_take_them() {
        let mut table = Table::new(4).with_leaving_limit(4);
        let dir = tempfile::tempdir().expect("tempdir");
        let good = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let id = |device| StreamId { device, ..S };
        for device in 0..4 {
            pend(&mut table, id(device), 1, &good, record(1, 10));
        }
        // A fifth pushes one out; the other three leave idle.
        table.entry(id(7), 5, &good).expect("entry");
        assert_eq!(table.evict_idle(2), 3);
        let job = table.take_evicted();
        let failed = job.run(&Broken::default());
        assert!(table.finish_evicted(job, failed).is_err());
        // Four wait to leave, the limit: only streams in memory come in.
        assert!(table.may_enter(&id(7)));
        assert!(!table.may_enter(&id(9)), "a new stream would push another out");
        assert!(!table.may_enter(&id(0)), "so would one of those leaving, coming back");
        let job = table.take_evicted();
        let sealed = job.run(&good);
        table.finish_evicted(job, sealed).expect("sealed");
        assert!(table.may_enter(&id(9)), "once they are written");
    }

    #[test]
    fn an_evicted_streams_records_stay_in_memory_while_their_seal_fails() {
        let mut table = Table::new(16);
        let dir = tempfile::tempdir().expect("tempdir");
        let good = crate::store::SledStore::open(dir.path(), 4).expect("open");
        pend(&mut table, S, 1, &good, record(1, 10));
        table.evict_idle(u64::MAX);
        let job = table.take_evicted();
        let failed = job.run(&Broken::default());
        assert!(table.finish_evicted(job, failed).is_err());
        assert_eq!((table.unflushed(), held(&table, &S, &good).len()), (1, 1), "kept for the next flush");
        let job = table.take_evicted();
        let sealed = job.run(&good);
        table.finish_evicted(job, sealed).expect("sealed");
        assert_eq!(good.window(S, 0).expect("window").len(), 1);
        assert_eq!(table.unflushed(), 0);
    }
}
