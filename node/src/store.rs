//! The store: records and per-stream state in sled, behind a small [`Store`] trait.
//!
//! The byte-exact layout, what is durable when, and recovery are in `docs/storage.md`.
//! Bytes read back from disk are decoded with a size limit; a value that does not
//! decode is skipped and counted (`corrupt_values`), never a panic.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use telemesh_proto::record::{codec, Identity, Key, Kind, Readings, Record, StreamId};
use telemesh_proto::stream::{self, Lookup, Neighbour, Presence};

/// Current on-disk format, stored under `meta/format`.
pub const FORMAT: u32 = 1;

/// A record as the store holds it: the record plus what this node knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub record: Record,
    /// Sequence number extended across wraparound (restarts at reboots).
    pub ext_seq: u64,
    /// When this node first received it (Unix ns, this node's clock).
    pub arrival_ns: u64,
    /// How many times this node received it (duplicates add one).
    pub copies: u32,
}

/// The value stored under a record key (the key carries stream, device time and seq).
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    kind: Kind,
    readings: Readings,
    timestamp_raw: u64,
    ext_seq: u64,
    arrival_ns: u64,
    copies: u32,
}

impl StoredRecord {
    fn value_bytes(&self) -> Vec<u8> {
        codec::to_vec(&Value {
            kind: self.record.kind,
            readings: self.record.readings.clone(),
            timestamp_raw: self.record.timestamp_raw,
            ext_seq: self.ext_seq,
            arrival_ns: self.arrival_ns,
            copies: self.copies,
        })
    }

    fn from_kv(key: &[u8], value: &[u8]) -> Option<StoredRecord> {
        let id = Key::from_slice(key)?.identity()?;
        let v: Value = codec::from_slice(value, "record").ok()?;
        Some(StoredRecord {
            record: Record {
                stream: id.stream,
                device_time_ns: id.device_time_ns,
                seq: id.seq,
                timestamp_raw: v.timestamp_raw,
                kind: v.kind,
                readings: v.readings,
            },
            ext_seq: v.ext_seq,
            arrival_ns: v.arrival_ns,
            copies: v.copies,
        })
    }
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
    /// Writes records atomically (all or none).
    fn put_records(&self, batch: &[(Key, StoredRecord)]) -> Result<(), StoreError>;
    /// Whether a record with `rec`'s identity is held, and the record before it.
    fn lookup(&self, rec: &Record) -> Result<Lookup, StoreError>;
    /// Counts one more receipt of a record already held.
    fn add_copy(&self, key: &Key) -> Result<(), StoreError>;
    /// Records of `stream` with `from_ns <= device time < to_ns`, in device order.
    fn records(&self, stream: StreamId, from_ns: u64, to_ns: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError>;
    /// The last record of `stream` with device time before `before_ns`.
    fn record_before(&self, stream: StreamId, before_ns: u64) -> Result<Option<StoredRecord>, StoreError>;
    fn put_states(&self, states: &[(StreamId, stream::State)]) -> Result<(), StoreError>;
    fn state(&self, id: StreamId) -> Result<Option<stream::State>, StoreError>;
    fn states(&self) -> Result<Vec<(StreamId, stream::State)>, StoreError>;
    /// This node's id, created on first open.
    fn node_id(&self) -> &str;
    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError>;
    /// Stored values that failed to decode and were skipped.
    fn corrupt_values(&self) -> u64;
}

/// The sled implementation: trees `records`, `streams`, `meta`.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    records: sled::Tree,
    streams: sled::Tree,
    node_id: String,
    corrupt: AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. sled flushes on its own every `flush`.
    pub fn open(dir: &Path, flush: Duration, cache_mb: u64) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(cache_mb << 20)
            .flush_every_ms(Some(u64::try_from(flush.as_millis()).unwrap_or(u64::MAX).max(1)))
            .open()?;
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
            records: db.open_tree("records")?,
            streams: db.open_tree("streams")?,
            db,
            node_id,
            corrupt: AtomicU64::new(0),
        })
    }

    fn decode_record(&self, k: &[u8], v: &[u8]) -> Option<StoredRecord> {
        let r = StoredRecord::from_kv(k, v);
        if r.is_none() {
            self.corrupt.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn time_key(stream: StreamId, t_ns: u64) -> [u8; 13] {
        let mut k = [0u8; 13];
        k[..5].copy_from_slice(&stream.key_prefix());
        k[5..].copy_from_slice(&t_ns.to_be_bytes());
        k
    }
}

impl Store for SledStore {
    fn put_records(&self, batch: &[(Key, StoredRecord)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (key, rec) in batch {
            b.insert(key.as_bytes(), rec.value_bytes());
        }
        self.records.apply_batch(b)?;
        Ok(())
    }

    fn lookup(&self, rec: &Record) -> Result<Lookup, StoreError> {
        let id: Identity = rec.identity();
        let mut presence = Presence::Absent;
        for item in self.records.scan_prefix(id.key_prefix()) {
            let (k, v) = item?;
            match self.decode_record(&k, &v) {
                Some(held) if held.record.same_content(rec) => {
                    presence = Presence::Same;
                    break;
                }
                Some(_) => presence = Presence::Different,
                None => {}
            }
        }
        let start = SledStore::time_key(rec.stream, 0);
        let mut predecessor = None;
        for item in self.records.range(start.as_slice()..id.key_prefix().as_slice()).rev() {
            let (k, v) = item?;
            if let Some(p) = self.decode_record(&k, &v) {
                predecessor = Some(Neighbour { seq: p.record.seq, ext_seq: p.ext_seq });
                break;
            }
        }
        Ok(Lookup { presence, predecessor })
    }

    fn add_copy(&self, key: &Key) -> Result<(), StoreError> {
        self.records.fetch_and_update(key.as_bytes(), |old| {
            let old = old?;
            let mut v: Value = codec::from_slice(old, "record").ok()?;
            v.copies = v.copies.saturating_add(1);
            Some(codec::to_vec(&v))
        })?;
        Ok(())
    }

    fn records(&self, stream: StreamId, from_ns: u64, to_ns: u64, limit: usize) -> Result<Vec<StoredRecord>, StoreError> {
        let start = SledStore::time_key(stream, from_ns);
        let end = SledStore::time_key(stream, to_ns);
        let mut out = Vec::new();
        for item in self.records.range(start.as_slice()..end.as_slice()) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            out.extend(self.decode_record(&k, &v));
        }
        Ok(out)
    }

    fn record_before(&self, stream: StreamId, before_ns: u64) -> Result<Option<StoredRecord>, StoreError> {
        let start = SledStore::time_key(stream, 0);
        let end = SledStore::time_key(stream, before_ns);
        for item in self.records.range(start.as_slice()..end.as_slice()).rev() {
            let (k, v) = item?;
            if let Some(r) = self.decode_record(&k, &v) {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn put_states(&self, states: &[(StreamId, stream::State)]) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (id, state) in states {
            b.insert(id.key_prefix().as_slice(), codec::to_vec(state));
        }
        self.streams.apply_batch(b)?;
        Ok(())
    }

    fn state(&self, id: StreamId) -> Result<Option<stream::State>, StoreError> {
        Ok(self.streams.get(id.key_prefix())?.and_then(|v| match codec::from_slice(&v, "stream state") {
            Ok(s) => Some(s),
            Err(_) => {
                self.corrupt.fetch_add(1, Ordering::Relaxed);
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
                _ => {
                    self.corrupt.fetch_add(1, Ordering::Relaxed);
                }
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

    fn rec(seq: u64, t: u64, v: f32) -> Record {
        Record {
            stream: StreamId::new(Dialect::Iotstream, 7),
            device_time_ns: t,
            seq,
            timestamp_raw: t,
            kind: Kind::Data,
            readings: Readings::Batch(vec![v]),
        }
    }
    fn stored(r: Record, ext: u64) -> (Key, StoredRecord) {
        (r.key(), StoredRecord { record: r, ext_seq: ext, arrival_ns: 1, copies: 1 })
    }

    #[test]
    fn round_trip_lookup_and_ranges() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), Duration::from_millis(100), 4).expect("open");
        s.put_records(&[stored(rec(1, 10, 1.0), 1), stored(rec(2, 20, 2.0), 2), stored(rec(3, 30, 3.0), 3)])
            .expect("put");
        let l = s.lookup(&rec(2, 20, 2.0)).expect("lookup");
        assert_eq!(l.presence, Presence::Same);
        assert_eq!(l.predecessor, Some(Neighbour { seq: 1, ext_seq: 1 }));
        assert_eq!(s.lookup(&rec(2, 20, 9.0)).expect("lookup").presence, Presence::Different);
        assert_eq!(s.lookup(&rec(4, 40, 0.0)).expect("lookup").presence, Presence::Absent);
        let got = s.records(StreamId::new(Dialect::Iotstream, 7), 15, 31, 10).expect("range");
        assert_eq!(got.iter().map(|r| r.record.seq).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(s.records(StreamId::new(Dialect::Iotstream, 7), 0, u64::MAX, 2).expect("range").len(), 2);
        assert_eq!(s.record_before(StreamId::new(Dialect::Iotstream, 7), 20).expect("before").map(|r| r.record.seq), Some(1));
        s.add_copy(&rec(2, 20, 2.0).key()).expect("copy");
        assert_eq!(s.records(StreamId::new(Dialect::Iotstream, 7), 20, 21, 1).expect("range")[0].copies, 2);
        let id = s.node_id().to_owned();
        drop(s);
        let again = SledStore::open(dir.path(), Duration::from_millis(100), 4).expect("reopen");
        assert_eq!(again.node_id(), id);
    }

    #[test]
    fn corrupt_values_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), Duration::from_millis(100), 4).expect("open");
        let (k, _) = stored(rec(1, 10, 1.0), 1);
        s.records.insert(k.as_bytes(), &[0xff, 0xff, 0xff][..]).expect("raw insert");
        s.put_records(&[stored(rec(2, 20, 2.0), 2)]).expect("put");
        let got = s.records(StreamId::new(Dialect::Iotstream, 7), 0, u64::MAX, 10).expect("range");
        assert_eq!(got.len(), 1);
        assert_eq!(s.corrupt_values(), 1);
    }
}
