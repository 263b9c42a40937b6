//! The store: per-stream windows of records, and per-stream state, in sled, behind a
//! small [`Store`] trait.
//!
//! Records are not stored one key each. A stream's new records are written once per
//! flush interval as one *chunk* per (stream, window); reading a window merges its chunks.
//! A closed window is compacted into a single chunk. So sled sees about one write per
//! active stream per flush, whatever the datagram rate. The byte-exact layout, what is
//! durable when, and recovery are in `docs/storage.md`. Bytes read back are decoded with
//! a size limit; a value that does not decode is skipped and counted, never a panic.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use telemesh_proto::record::{codec, Kind, Readings, Record, StreamId};
use telemesh_proto::stream;
use telemesh_proto::window;

/// Current on-disk format, stored under `meta/format`.
pub const FORMAT: u32 = 1;

/// A record as this node holds it: the record plus what this node knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub record: Record,
    /// 8 bytes of BLAKE3 over the content: the last part of the record key.
    pub tag: [u8; 8],
    /// Sequence number extended across wraparound (restarts at reboots).
    pub ext_seq: u64,
    /// When this node first received it (Unix ns, this node's clock).
    pub arrival_ns: u64,
    /// How many times this node received it (duplicates add one).
    pub copies: u32,
}

impl StoredRecord {
    pub fn new(record: Record, ext_seq: u64, arrival_ns: u64) -> StoredRecord {
        let tag = record.content_tag();
        StoredRecord { record, tag, ext_seq, arrival_ns, copies: 1 }
    }

    /// Device order: time, seq, content tag — the order of record keys.
    pub fn order_key(&self) -> (u64, u64, [u8; 8]) {
        (self.record.device_time_ns, self.record.seq, self.tag)
    }

    pub fn window(&self) -> u64 {
        window::start(self.record.device_time_ns)
    }
}

/// Sorts records into device order and merges entries with the same key — a duplicate's
/// one-copy delta, or a record written twice after a crash: copies add up, and the
/// earliest receipt's arrival time and extended seq win.
pub fn merge(mut records: Vec<StoredRecord>) -> Vec<StoredRecord> {
    records.sort_by_key(StoredRecord::order_key);
    let mut out: Vec<StoredRecord> = Vec::with_capacity(records.len());
    for r in records {
        match out.last_mut() {
            Some(last) if last.order_key() == r.order_key() => {
                let copies = last.copies.saturating_add(r.copies);
                if r.arrival_ns < last.arrival_ns {
                    *last = r;
                }
                last.copies = copies;
            }
            _ => out.push(r),
        }
    }
    out
}

/// One record inside a chunk (the stream is in the chunk's key).
#[derive(Debug, Serialize, Deserialize)]
struct ChunkRecord {
    device_time_ns: u64,
    seq: u64,
    tag: [u8; 8],
    kind: Kind,
    readings: Readings,
    timestamp_raw: u64,
    ext_seq: u64,
    arrival_ns: u64,
    copies: u32,
}

fn encode_chunk(records: &[StoredRecord]) -> Vec<u8> {
    let rows: Vec<ChunkRecord> = records
        .iter()
        .map(|r| ChunkRecord {
            device_time_ns: r.record.device_time_ns,
            seq: r.record.seq,
            tag: r.tag,
            kind: r.record.kind,
            readings: r.record.readings.clone(),
            timestamp_raw: r.record.timestamp_raw,
            ext_seq: r.ext_seq,
            arrival_ns: r.arrival_ns,
            copies: r.copies,
        })
        .collect();
    codec::to_vec(&rows)
}

fn decode_chunk(stream: StreamId, bytes: &[u8]) -> Option<Vec<StoredRecord>> {
    let rows: Vec<ChunkRecord> = codec::from_slice(bytes, "chunk").ok()?;
    Some(
        rows.into_iter()
            .map(|c| StoredRecord {
                record: Record {
                    stream,
                    device_time_ns: c.device_time_ns,
                    seq: c.seq,
                    timestamp_raw: c.timestamp_raw,
                    kind: c.kind,
                    readings: c.readings,
                },
                tag: c.tag,
                ext_seq: c.ext_seq,
                arrival_ns: c.arrival_ns,
                copies: c.copies,
            })
            .collect(),
    )
}

/// Chunk key: stream (dialect u8, device u32), window start u64, chunk id u64; big-endian.
fn chunk_key(stream: StreamId, window_start: u64, id: u64) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[..5].copy_from_slice(&stream.key_prefix());
    k[5..13].copy_from_slice(&window_start.to_be_bytes());
    k[13..].copy_from_slice(&id.to_be_bytes());
    k
}

fn window_prefix(stream: StreamId, window_start: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&stream.key_prefix());
    k[5..].copy_from_slice(&window_start.to_be_bytes());
    k
}

fn key_window(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.get(5..13)?.try_into().ok()?))
}

/// New records of one stream in one window, to be appended as one chunk.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub stream: StreamId,
    pub window_start: u64,
    pub records: Vec<StoredRecord>,
}

/// A store failure: sled's I/O error, or a store written by another format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Sled(#[from] sled::Error),
    #[error("store at {path} has format {found}, this build reads format {FORMAT}")]
    Format { path: String, found: u32 },
}

/// What the node needs from storage. Small on purpose: sled today, something else later.
pub trait Store: Send + Sync + 'static {
    /// Appends each chunk and saves stream states.
    fn append(&self, chunks: &[Chunk], states: &[(StreamId, stream::State)]) -> Result<(), StoreError>;
    /// Every record of one window of `stream`, merged across chunks, in device order.
    fn window(&self, stream: StreamId, window_start: u64) -> Result<Vec<StoredRecord>, StoreError>;
    /// Merges a window's chunks into one. Only the chunks read are replaced (atomically),
    /// so a chunk appended meanwhile is kept.
    fn compact_window(&self, stream: StreamId, window_start: u64) -> Result<(), StoreError>;
    /// The first window of `stream` starting at or after `from` that holds records.
    fn window_at_or_after(&self, stream: StreamId, from: u64) -> Result<Option<u64>, StoreError>;
    /// The last window of `stream` starting before `before` that holds records.
    fn window_before(&self, stream: StreamId, before: u64) -> Result<Option<u64>, StoreError>;
    fn state(&self, id: StreamId) -> Result<Option<stream::State>, StoreError>;
    fn states(&self) -> Result<Vec<(StreamId, stream::State)>, StoreError>;
    /// This node's id, created on first open.
    fn node_id(&self) -> &str;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Stored values that failed to decode and were skipped.
    fn corrupt_values(&self) -> u64;
}

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("node_id", &self.node_id()).finish_non_exhaustive()
    }
}

/// The sled implementation: trees `windows`, `streams`, `meta`.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    windows: sled::Tree,
    streams: sled::Tree,
    node_id: String,
    corrupt: AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_mb` MiB.
    /// Durability is the caller's: [`Store::flush`] after each append.
    pub fn open(dir: &Path, cache_mb: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new().path(dir.join("sled")).cache_capacity(cache_mb << 20).flush_every_ms(None).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("format")? {
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0);
                if found != FORMAT {
                    return Err(StoreError::Format { path: dir.display().to_string(), found });
                }
            }
            None => {
                meta.insert("format", &FORMAT.to_be_bytes())?;
            }
        }
        let node_id = match meta.get("node_id")? {
            Some(v) => String::from_utf8_lossy(&v).into_owned(),
            None => {
                let id = hex::encode(rand::random::<[u8; 8]>());
                meta.insert("node_id", id.as_bytes())?;
                id
            }
        };
        db.flush()?;
        Ok(SledStore {
            windows: db.open_tree("windows")?,
            streams: db.open_tree("streams")?,
            db,
            node_id,
            corrupt: AtomicU64::new(0),
        })
    }

    fn corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    fn stream_range(stream: StreamId) -> (Vec<u8>, Vec<u8>) {
        let p = stream.key_prefix();
        let mut end = p.to_vec();
        end.extend_from_slice(&[0xff; 17]);
        (p.to_vec(), end)
    }
}

impl Store for SledStore {
    fn append(&self, chunks: &[Chunk], states: &[(StreamId, stream::State)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for c in chunks {
            let id = self.db.generate_id()?;
            b.insert(chunk_key(c.stream, c.window_start, id).as_slice(), encode_chunk(&c.records));
        }
        self.windows.apply_batch(b)?;
        let mut s = sled::Batch::default();
        for (id, state) in states {
            s.insert(id.key_prefix().as_slice(), codec::to_vec(state));
        }
        self.streams.apply_batch(s)?;
        Ok(())
    }

    fn window(&self, stream: StreamId, window_start: u64) -> Result<Vec<StoredRecord>, StoreError> {
        let mut all = Vec::new();
        for item in self.windows.scan_prefix(window_prefix(stream, window_start)) {
            let (_, v) = item?;
            match decode_chunk(stream, &v) {
                Some(rs) => all.extend(rs),
                None => self.corrupt(),
            }
        }
        Ok(merge(all))
    }

    fn compact_window(&self, stream: StreamId, window_start: u64) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        let mut all = Vec::new();
        let mut read = 0;
        for item in self.windows.scan_prefix(window_prefix(stream, window_start)) {
            let (k, v) = item?;
            // A chunk that does not decode is left as it is: compaction never deletes what
            // it cannot read.
            if let Some(rs) = decode_chunk(stream, &v) {
                all.extend(rs);
                b.remove(k);
                read += 1;
            }
        }
        if read < 2 {
            return Ok(());
        }
        let id = self.db.generate_id()?;
        b.insert(chunk_key(stream, window_start, id).as_slice(), encode_chunk(&merge(all)));
        self.windows.apply_batch(b)?;
        Ok(())
    }

    fn window_at_or_after(&self, stream: StreamId, from: u64) -> Result<Option<u64>, StoreError> {
        let (_, end) = SledStore::stream_range(stream);
        match self.windows.range(window_prefix(stream, from).to_vec()..end).next() {
            Some(item) => Ok(key_window(&item?.0)),
            None => Ok(None),
        }
    }

    fn window_before(&self, stream: StreamId, before: u64) -> Result<Option<u64>, StoreError> {
        let (start, _) = SledStore::stream_range(stream);
        match self.windows.range(start..window_prefix(stream, before).to_vec()).next_back() {
            Some(item) => Ok(key_window(&item?.0)),
            None => Ok(None),
        }
    }

    fn state(&self, id: StreamId) -> Result<Option<stream::State>, StoreError> {
        Ok(self.streams.get(id.key_prefix())?.and_then(|v| match codec::from_slice(&v, "stream state") {
            Ok(s) => Some(s),
            Err(_) => {
                self.corrupt();
                None
            }
        }))
    }

    fn states(&self) -> Result<Vec<(StreamId, stream::State)>, StoreError> {
        let mut out = Vec::new();
        for item in self.streams.iter() {
            let (k, v) = item?;
            match (StreamId::from_key_prefix(&k), codec::from_slice(&v, "stream state")) {
                (Some(id), Ok(state)) => out.push((id, state)),
                _ => self.corrupt(),
            }
        }
        Ok(out)
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::wire::Dialect;

    const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 7 };

    fn rec(seq: u64, t: u64, v: f32) -> StoredRecord {
        let r = Record {
            stream: S,
            device_time_ns: t,
            seq,
            timestamp_raw: t,
            kind: Kind::Data,
            readings: Readings::Batch(vec![v]),
        };
        StoredRecord::new(r, seq, 1)
    }

    #[test]
    fn chunks_merge_into_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let w0 = 0;
        let w1 = window::SPAN_NS;
        s.append(&[Chunk { stream: S, window_start: w0, records: vec![rec(3, 30, 3.0), rec(1, 10, 1.0)] }], &[])
            .expect("append");
        s.append(
            &[
                Chunk { stream: S, window_start: w0, records: vec![rec(2, 20, 2.0), rec(1, 10, 1.0)] },
                Chunk { stream: S, window_start: w1, records: vec![rec(9, w1 + 5, 9.0)] },
            ],
            &[],
        )
        .expect("append");
        let got = s.window(S, w0).expect("window");
        assert_eq!(got.iter().map(|r| (r.record.seq, r.copies)).collect::<Vec<_>>(), [(1, 2), (2, 1), (3, 1)]);
        assert_eq!(s.window_at_or_after(S, 1).expect("after"), Some(w1));
        assert_eq!(s.window_at_or_after(S, 0).expect("after"), Some(w0));
        assert_eq!(s.window_before(S, w1).expect("before"), Some(w0));
        assert_eq!(s.window_before(S, w0).expect("before"), None);
        assert_eq!(s.window_at_or_after(StreamId { device: 8, ..S }, 0).expect("other"), None);

        s.compact_window(S, w0).expect("compact");
        assert_eq!(s.window(S, w0).expect("window"), got);
        assert_eq!(s.windows.scan_prefix(window_prefix(S, w0)).count(), 1);
        let id = s.node_id().to_owned();
        drop(s);
        let again = SledStore::open(dir.path(), 4).expect("reopen");
        assert_eq!(again.node_id(), id);
        assert_eq!(again.window(S, w0).expect("window"), got);
    }

    #[test]
    fn corrupt_values_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        s.windows.insert(chunk_key(S, 0, 1), &[0xff, 0xff, 0xff][..]).expect("raw insert");
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![rec(2, 20, 2.0)] }], &[]).expect("append");
        assert_eq!(s.window(S, 0).expect("window").len(), 1);
        assert_eq!(s.corrupt_values(), 1);
        s.streams.insert(S.key_prefix(), &[0xff][..]).expect("raw insert");
        assert_eq!(s.state(S).expect("state"), None);
        assert_eq!(s.corrupt_values(), 2);
    }
}
