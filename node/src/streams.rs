//! The in-memory table of streams: each stream's ingest state and the records it
//! received since the last flush, bounded in size.
//!
//! A stream's state is loaded from the store on its first datagram. Every flush interval
//! each stream's pending records are appended as one chunk per window, changed states are
//! saved, and windows the stream has moved past are compacted. The write itself runs
//! without the table lock ([`Table::begin_flush`], [`Flush::write`], [`Table::finish_flush`]):
//! meanwhile the records being written stay visible as `in_flight`. Streams silent for
//! `stream_idle`, or the least recently active when the table is full, are flushed and
//! dropped from memory. Memory is therefore bounded by `max_streams` × (state size + map
//! overhead, about 700 bytes) plus the records received within one flush interval.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use telemesh_proto::record::StreamId;
use telemesh_proto::stream::State;

use crate::store::{Chunk, Store, StoreError, StoredRecord};

/// One stream in memory.
#[derive(Debug)]
pub struct Entry {
    pub state: State,
    /// Records received since the last flush, in arrival order.
    pub pending: Vec<StoredRecord>,
    /// Records being written by a flush that has not finished.
    pub in_flight: Option<Arc<Vec<StoredRecord>>>,
    dirty: bool,
    touched_ns: u64,
    /// The newest window written to, to seal it when the stream moves on.
    open_window: Option<u64>,
}

impl Entry {
    fn new(state: State, now_ns: u64) -> Entry {
        Entry { state, pending: Vec::new(), in_flight: None, dirty: false, touched_ns: now_ns, open_window: None }
    }

    /// Records not yet in the store: in flight, then pending.
    pub fn unflushed(&self) -> Vec<StoredRecord> {
        self.in_flight.iter().flat_map(|f| f.iter()).chain(&self.pending).cloned().collect()
    }
}

/// A flush taken from the table: what to write, and to whom it belongs.
#[derive(Debug, Default)]
pub struct Flush {
    records: Vec<(StreamId, Arc<Vec<StoredRecord>>)>,
    states: Vec<(StreamId, State)>,
}

impl Flush {
    /// Appends the records as one chunk per (stream, window) and saves the states.
    pub fn write(&self, store: &dyn Store) -> Result<Vec<Chunk>, StoreError> {
        let mut chunks = Vec::new();
        for (id, records) in &self.records {
            let mut by_window: BTreeMap<u64, Vec<StoredRecord>> = BTreeMap::new();
            for r in records.iter() {
                by_window.entry(r.window()).or_default().push(r.clone());
            }
            chunks.extend(by_window.into_iter().map(|(window_start, records)| Chunk { stream: *id, window_start, records }));
        }
        store.append(&chunks, &self.states)?;
        Ok(chunks)
    }
}

/// What one flush wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub records: usize,
    pub chunks: usize,
    pub states: usize,
    pub sealed: usize,
}

/// Most records held in memory unflushed (pending or in flight). Only reached when the
/// store keeps failing: past it, new records are refused (and counted) rather than
/// growing memory without bound.
pub const MAX_UNFLUSHED: usize = 1_000_000;

/// Most windows of evicted streams queued for sealing. Past it (a flood of new device ids
/// faster than sealing), a window stays live until its stream writes to it again.
pub const MAX_TO_SEAL: usize = 1_000_000;

/// Streams in memory.
#[derive(Debug)]
pub struct Table {
    entries: HashMap<StreamId, Entry>,
    max: usize,
    unflushed: usize,
    max_unflushed: usize,
    to_seal: Vec<(StreamId, u64)>,
}

impl Table {
    pub fn new(max: usize) -> Table {
        Table::with_unflushed_limit(max, MAX_UNFLUSHED)
    }

    /// A table holding at most `max` streams and `max_unflushed` unflushed records.
    pub fn with_unflushed_limit(max: usize, max_unflushed: usize) -> Table {
        Table { entries: HashMap::new(), max, unflushed: 0, max_unflushed, to_seal: Vec::new() }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Records in memory not yet in the store.
    pub fn unflushed(&self) -> usize {
        self.unflushed
    }

    /// Whether another record may be queued (see [`MAX_UNFLUSHED`]).
    pub fn has_room(&self) -> bool {
        self.unflushed < self.max_unflushed
    }

    /// Counts a record just pushed onto an entry's `pending`.
    pub fn queued(&mut self) {
        self.unflushed += 1;
    }

    /// The entry of `id`, loaded from the store (or new) if not in memory, marked dirty.
    /// At capacity, the least recently active tenth of the table is flushed and dropped.
    pub fn entry(&mut self, id: StreamId, now_ns: u64, store: &dyn Store) -> Result<&mut Entry, StoreError> {
        if !self.entries.contains_key(&id) {
            if self.entries.len() >= self.max {
                self.shrink_to(self.max - self.max / 10 - 1, store)?;
            }
            let state = store.state(id)?.unwrap_or_default();
            self.entries.insert(id, Entry::new(state, now_ns));
        }
        let entry = self.entries.entry(id).or_insert_with(|| Entry::new(State::default(), now_ns));
        entry.dirty = true;
        entry.touched_ns = now_ns;
        Ok(entry)
    }

    /// Takes every stream's pending records (they become `in_flight`) and changed states.
    /// Streams with a flush already in flight are left for the next one.
    pub fn begin_flush(&mut self) -> Flush {
        let ids: Vec<StreamId> = self.entries.keys().copied().collect();
        self.begin_flush_of(&ids)
    }

    fn begin_flush_of(&mut self, ids: &[StreamId]) -> Flush {
        let mut flush = Flush::default();
        for id in ids {
            let Some(e) = self.entries.get_mut(id) else { continue };
            if e.in_flight.is_some() {
                continue;
            }
            if !e.pending.is_empty() {
                let records = Arc::new(std::mem::take(&mut e.pending));
                e.in_flight = Some(Arc::clone(&records));
                flush.records.push((*id, records));
            }
            if e.dirty {
                e.dirty = false;
                flush.states.push((*id, e.state.clone()));
            }
        }
        flush
    }

    /// Ends a flush: on success the written records leave memory, and windows the streams
    /// have moved past (or that received late records) are sealed; on failure the records
    /// go back to pending.
    pub fn finish_flush(&mut self, flush: Flush, written: Result<Vec<Chunk>, StoreError>, store: &dyn Store) -> Result<Flushed, StoreError> {
        let chunks = match written {
            Ok(chunks) => chunks,
            Err(err) => {
                for (id, records) in flush.records {
                    if let Some(e) = self.entries.get_mut(&id) {
                        e.in_flight = None;
                        let newer = std::mem::take(&mut e.pending);
                        e.pending = Arc::unwrap_or_clone(records);
                        e.pending.extend(newer);
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
        for (id, _) in &flush.records {
            if let Some(e) = self.entries.get_mut(id) {
                e.in_flight = None;
            }
        }
        let mut done = Flushed { chunks: chunks.len(), states: flush.states.len(), ..Flushed::default() };
        let mut closed = Vec::new();
        for c in &chunks {
            done.records += c.records.len();
            self.unflushed = self.unflushed.saturating_sub(c.records.len());
            let Some(e) = self.entries.get_mut(&c.stream) else { continue };
            e.open_window = match e.open_window {
                Some(w) if w == c.window_start => Some(w),
                Some(w) if w < c.window_start => {
                    closed.push((c.stream, w));
                    Some(c.window_start)
                }
                Some(open) => {
                    closed.push((c.stream, c.window_start)); // late records for a closed window
                    Some(open)
                }
                None => Some(c.window_start),
            };
        }
        closed.sort_unstable();
        closed.dedup();
        for (stream, w) in closed {
            store.seal_window(stream, w)?;
            done.sealed += 1;
        }
        Ok(done)
    }

    /// Flushes the given streams while holding the table (eviction, shutdown).
    fn flush_now(&mut self, ids: &[StreamId], store: &dyn Store) -> Result<Flushed, StoreError> {
        let flush = self.begin_flush_of(ids);
        let written = flush.write(store);
        self.finish_flush(flush, written, store)
    }

    /// Flushes every stream while holding the table.
    pub fn flush(&mut self, store: &dyn Store) -> Result<Flushed, StoreError> {
        let ids: Vec<StreamId> = self.entries.keys().copied().collect();
        self.flush_now(&ids, store)
    }

    /// Flushes and drops streams silent since before `cutoff_ns`.
    pub fn evict_idle(&mut self, cutoff_ns: u64, store: &dyn Store) -> Result<usize, StoreError> {
        let idle: Vec<StreamId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.touched_ns < cutoff_ns && e.in_flight.is_none())
            .map(|(id, _)| *id)
            .collect();
        self.evict(&idle, store)?;
        Ok(idle.len())
    }

    fn shrink_to(&mut self, keep: usize, store: &dyn Store) -> Result<(), StoreError> {
        let mut by_age: Vec<(u64, StreamId)> =
            self.entries.iter().filter(|(_, e)| e.in_flight.is_none()).map(|(id, e)| (e.touched_ns, *id)).collect();
        by_age.sort_unstable();
        let n = self.entries.len().saturating_sub(keep);
        let oldest: Vec<StreamId> = by_age.into_iter().take(n).map(|(_, id)| id).collect();
        self.evict(&oldest, store)
    }

    /// Flushes `ids` and drops them; the window each was writing to is queued for sealing
    /// (a stream leaving memory is quiet, so its window is done).
    fn evict(&mut self, ids: &[StreamId], store: &dyn Store) -> Result<(), StoreError> {
        self.flush_now(ids, store)?;
        for id in ids {
            if let Some(w) = self.entries.remove(id).and_then(|e| e.open_window) {
                if self.to_seal.len() < MAX_TO_SEAL {
                    self.to_seal.push((*id, w));
                }
            }
        }
        Ok(())
    }

    /// Windows of evicted streams waiting to be sealed (by the maintenance task, without
    /// the table lock: no ingest touches an evicted stream's window meanwhile).
    pub fn take_to_seal(&mut self) -> Vec<(StreamId, u64)> {
        std::mem::take(&mut self.to_seal)
    }

    /// A copy of every in-memory state.
    pub fn snapshot(&self) -> Vec<(StreamId, State)> {
        self.entries.iter().map(|(id, e)| (*id, e.state.clone())).collect()
    }

    /// A copy of the records of `id` not yet in the store.
    pub fn unflushed_of(&self, id: &StreamId) -> Vec<StoredRecord> {
        self.entries.get(id).map(Entry::unflushed).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::record::{Kind, Readings, Record};
    use telemesh_proto::stream;
    use telemesh_proto::window;
    use telemesh_proto::wire::Dialect;

    const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 3 };

    /// A store whose writes always fail (a full disk, say); reads find nothing.
    #[derive(Debug)]
    struct Broken;

    fn broken() -> StoreError {
        StoreError::Sled(sled::Error::Unsupported("disk full".into()))
    }

    impl Store for Broken {
        fn append(&self, _: &[Chunk], _: &[(StreamId, stream::State)]) -> Result<(), StoreError> {
            Err(broken())
        }
        fn window(&self, _: StreamId, _: u64) -> Result<Vec<StoredRecord>, StoreError> {
            Ok(Vec::new())
        }
        fn seal_window(&self, _: StreamId, _: u64) -> Result<Option<window::Root>, StoreError> {
            Err(broken())
        }
        fn sealed(&self, _: StreamId, _: u64) -> Result<Option<crate::store::Sealed>, StoreError> {
            Ok(None)
        }
        fn window_by_root(&self, _: &window::Root) -> Result<Option<(StreamId, u64)>, StoreError> {
            Ok(None)
        }
        fn window_at_or_after(&self, _: StreamId, _: u64) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        fn window_before(&self, _: StreamId, _: u64) -> Result<Option<u64>, StoreError> {
            Ok(None)
        }
        fn state(&self, _: StreamId) -> Result<Option<stream::State>, StoreError> {
            Ok(None)
        }
        fn states(&self) -> Result<Vec<(StreamId, stream::State)>, StoreError> {
            Ok(Vec::new())
        }
        fn node_id(&self) -> &str {
            "broken"
        }
        fn flush(&self) -> Result<(), StoreError> {
            Err(broken())
        }
        fn corrupt_values(&self) -> u64 {
            0
        }
    }

    fn queue(table: &mut Table, store: &dyn Store, seq: u64) {
        let r = Record { stream: S, device_time_ns: seq, seq, timestamp_raw: seq, kind: Kind::Data, readings: Readings::None };
        table.entry(S, 1, store).expect("entry").pending.push(StoredRecord::new(r, seq, 1));
        table.queued();
    }

    #[test]
    fn a_failing_store_keeps_records_and_bounds_them() {
        let mut table = Table::with_unflushed_limit(16, 5);
        queue(&mut table, &Broken, 1);
        queue(&mut table, &Broken, 2);
        let job = table.begin_flush();
        // Meanwhile a record arrives; it must come after the ones in flight.
        queue(&mut table, &Broken, 3);
        assert_eq!(table.unflushed_of(&S).iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3]);
        let written = job.write(&Broken);
        assert!(table.finish_flush(job, written, &Broken).is_err());
        assert_eq!(table.unflushed_of(&S).iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(table.unflushed(), 3);
        assert!(table.has_room());
        queue(&mut table, &Broken, 4);
        queue(&mut table, &Broken, 5);
        assert!(!table.has_room(), "five unflushed records reach the limit");

        // The store comes back: everything is written, and the room with it.
        let dir = tempfile::tempdir().expect("tempdir");
        let good = crate::store::SledStore::open(dir.path(), 4).expect("open");
        let done = table.flush(&good).expect("flush");
        assert_eq!((done.records, table.unflushed()), (5, 0));
        assert!(table.has_room());
        assert_eq!(good.window(S, 0).expect("window").len(), 5);
    }
}
