//! The store: per-stream windows of records, and per-stream state, in sled, behind a
//! small [`Store`] trait.
//!
//! Records are not stored one key each. A stream's new records are written once per
//! flush interval as one *chunk* per (stream, window): the window is *live*. When the
//! stream moves on, the window is *sealed*: its records become the canonical window blob
//! (`proto::window`) with its Merkle root and hash tree, plus this node's provenance of
//! each record, and the chunks go. Reading a window merges its sealed blob and any chunks
//! written since. So sled sees about one write per active stream per flush, whatever the
//! datagram rate. The byte-exact layout, what is durable when, and recovery are in
//! `docs/storage.md`. Bytes read back are decoded with a size limit and validated; a value
//! that does not decode is skipped and counted, never a panic.

#[doc(hidden)] pub mod fuzzing;
#[cfg(test)]
pub mod broken;
mod compact;
pub mod history;
pub use self::compact::Compacted;
pub mod segment;
pub mod wal;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};


use serde::{Deserialize, Serialize};
use telemesh_proto::mesh::{RecordKey, StreamSum, Summary, Table, WindowId};
use telemesh_proto::mesh::statement::Statement;
use telemesh_proto::record::{codec, Kind, Readings, Record, StreamId};
use telemesh_proto::stream;
use telemesh_proto::window::{self, Root};
use telemesh_proto::wire::Dialect;
use telemesh_proto::{columns, merkle};

use self::segment::{Loc, Segments};
use self::wal::Wal;
pub use self::wal::PartLoc;

/// Current on-disk format, stored under `meta/format`. Format 5 adds proofs (a record
/// received authenticated) to format 4: the top bit of a stored copy count, and a second
/// bitmap in a provenance table's rows. Format 6 drops format 5's `roots` tree (root →
/// window), which cost a random sled write per seal. Format 7 adds each stream's
/// [`StreamSum`] to `windows`, under the stream's prefix alone ([`sum_key`]).
pub const FORMAT: u32 = 7;
/// The earlier formats whose values read unchanged as [`FORMAT`]'s: opened, their `roots`
/// tree dropped, their streams' sums added, and marked.
const READS_AS_IS: [u32; 3] = [4, 5, 6];

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
    /// How many times this node received it (duplicates add one; 0: it came from a peer).
    pub copies: u32,
    /// Whether this node received it authenticated: with a valid device tag, or over DTLS
    /// from a client with a certificate (the secure dialect).
    pub proved: bool,
    /// The other nodes that received it, as their peers told us (sorted).
    pub heard_by: Vec<Arc<str>>,
    /// Those of `heard_by` that received it authenticated (sorted).
    pub proved_by: Vec<Arc<str>>,
}

impl StoredRecord {
    pub fn new(record: Record, ext_seq: u64, arrival_ns: u64) -> StoredRecord {
        let tag = record.content_tag();
        StoredRecord { record, tag, ext_seq, arrival_ns, copies: 1, proved: false, heard_by: Vec::new(), proved_by: Vec::new() }
    }

    /// How it was authenticated, to this node or any other.
    pub fn auth(&self) -> Auth {
        Auth::of(self.record.stream.dialect, self.proved || !self.proved_by.is_empty())
    }

    /// A record repaired from peers: this node did not receive it.
    pub fn repaired(record: Record, ext_seq: u64) -> StoredRecord {
        StoredRecord { copies: 0, ..StoredRecord::new(record, ext_seq, 0) }
    }

    /// Device order: time, seq, content tag — the order of record keys.
    pub fn order_key(&self) -> (u64, u64, [u8; 8]) {
        (self.record.device_time_ns, self.record.seq, self.tag)
    }

    pub fn window(&self) -> u64 {
        window::start(self.record.device_time_ns)
    }
}

/// How a record was authenticated: what a proof is depends on its dialect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Not proved.
    #[default]
    None,
    /// A valid device tag (`proto::auth`): IoTStream and TinyTelemetry.
    Tag,
    /// Received over DTLS from a client whose certificate names the device: the secure frame.
    Certificate,
}

impl Auth {
    /// What a proof is in `dialect`, if `proved`.
    pub fn of(dialect: Dialect, proved: bool) -> Auth {
        match dialect {
            _ if !proved => Auth::None,
            Dialect::Secure => Auth::Certificate,
            Dialect::Iotstream | Dialect::Tinytelemetry => Auth::Tag,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Auth::None => "none",
            Auth::Tag => "tag",
            Auth::Certificate => "certificate",
        }
    }
}

/// Sorts records into device order and merges entries with the same key — a duplicate's
/// one-copy delta, a record written twice after a crash, or one received here and from a
/// peer: copies add up, the earliest receipt's arrival time and extended seq win (a
/// receipt here over a repair), it is proved if any receipt was, and the nodes that heard
/// (and proved) it are united.
pub fn merge(mut records: Vec<StoredRecord>) -> Vec<StoredRecord> {
    records.sort_by_key(StoredRecord::order_key);
    let mut out: Vec<StoredRecord> = Vec::with_capacity(records.len());
    for mut r in records {
        match out.last_mut() {
            Some(last) if last.order_key() == r.order_key() => {
                let copies = last.copies.saturating_add(r.copies);
                let proved = last.proved || r.proved;
                let heard = union(std::mem::take(&mut last.heard_by), &mut r.heard_by);
                let proved_by = union(std::mem::take(&mut last.proved_by), &mut r.proved_by);
                let earlier = (r.copies == 0, r.arrival_ns) < (last.copies == 0, last.arrival_ns);
                if earlier {
                    *last = r;
                }
                last.copies = copies;
                last.proved = proved;
                last.heard_by = heard;
                last.proved_by = proved_by;
            }
            _ => out.push(r),
        }
    }
    out
}

/// `a` and `b` together, sorted, once each.
fn union(mut a: Vec<Arc<str>>, b: &mut Vec<Arc<str>>) -> Vec<Arc<str>> {
    a.append(b);
    a.sort();
    a.dedup();
    a
}

/// Adds `name` to the sorted `names`; whether it was not there.
fn insert_sorted(names: &mut Vec<Arc<str>>, name: &Arc<str>) -> bool {
    match names.binary_search(name) {
        Ok(_) => false,
        Err(at) => {
            names.insert(at, Arc::clone(name));
            true
        }
    }
}

/// Stored in place of `copies` (in chunks and in a sealed window's provenance columns):
/// the count in the low 31 bits, and whether the record was proved in the top bit — so a
/// value written before proofs existed reads as not proved.
const PROVED: u32 = 1 << 31;

fn receipt(r: &StoredRecord) -> u32 {
    r.copies.min(PROVED - 1) | if r.proved { PROVED } else { 0 }
}

/// `(copies, proved)` from a stored [`receipt`].
fn from_receipt(v: u32) -> (u32, bool) {
    (v & !PROVED, v & PROVED != 0)
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
    /// Copies and proof ([`receipt`]).
    copies: u32,
}

/// A [`ChunkRecord`] borrowed from a [`StoredRecord`] to encode it (the same bytes).
#[derive(Serialize)]
struct ChunkRow<'a> {
    device_time_ns: u64,
    seq: u64,
    tag: [u8; 8],
    kind: Kind,
    readings: &'a Readings,
    timestamp_raw: u64,
    ext_seq: u64,
    arrival_ns: u64,
    copies: u32,
}

impl<'a> ChunkRow<'a> {
    fn of(r: &'a StoredRecord) -> ChunkRow<'a> {
        ChunkRow {
            device_time_ns: r.record.device_time_ns,
            seq: r.record.seq,
            tag: r.tag,
            kind: r.record.kind,
            readings: &r.record.readings,
            timestamp_raw: r.record.timestamp_raw,
            ext_seq: r.ext_seq,
            arrival_ns: r.arrival_ns,
            copies: receipt(r),
        }
    }
}

fn encode_chunk<'a>(records: impl IntoIterator<Item = &'a StoredRecord>) -> Vec<u8> {
    let rows: Vec<ChunkRow<'_>> = records.into_iter().map(ChunkRow::of).collect();
    codec::to_vec(&rows)
}

fn decode_chunk(stream: StreamId, bytes: &[u8]) -> Option<Vec<StoredRecord>> {
    let rows: Vec<ChunkRecord> = codec::from_slice(bytes, "chunk").ok()?;
    Some(
        rows.into_iter()
            .map(|c| {
                let (copies, proved) = from_receipt(c.copies);
                let record = Record {
                    stream,
                    device_time_ns: c.device_time_ns,
                    seq: c.seq,
                    timestamp_raw: c.timestamp_raw,
                    kind: c.kind,
                    readings: c.readings,
                };
                StoredRecord {
                    record,
                    tag: c.tag,
                    ext_seq: c.ext_seq,
                    arrival_ns: c.arrival_ns,
                    copies,
                    proved,
                    heard_by: Vec::new(),
                    proved_by: Vec::new(),
                }
            })
            .collect(),
    )
}

/// What follows the window prefix in a key: the sealed blob sorts before the chunks.
const PART_SEALED: u8 = 0;
const PART_CHUNK: u8 = 1;

/// Window key: stream (dialect u8, device u32), window start u64, part u8, id u64;
/// big-endian. The sealed blob has part 0 and id 0; chunks part 1 and a sled id.
fn window_key(stream: StreamId, window_start: u64, part: u8, id: u64) -> [u8; 22] {
    let mut k = [0u8; 22];
    k[..5].copy_from_slice(&stream.key_prefix());
    k[5..13].copy_from_slice(&window_start.to_be_bytes());
    k[13] = part;
    k[14..].copy_from_slice(&id.to_be_bytes());
    k
}

/// Blobs over this many bytes keep their hash tree; smaller ones are rehashed when
/// needed (16 leaves: tens of microseconds).
pub const OUTBOARD_KEPT_OVER: usize = 16 * window::LEAF_SIZE as usize;

/// The value of a sealed window. The canonical blob is not stored as it is: it is a
/// deterministic function of the records, rebuilt from the compact form on demand.
#[derive(Debug, Serialize, Deserialize)]
struct SealedValue {
    /// Merkle root of the canonical blob.
    root: Root,
    /// The records, `proto::window::compact`.
    records: Vec<u8>,
    /// This node's provenance, packed columns in key order (`proto::columns`): arrival
    /// minus device time (ns, biased), copies and proof ([`receipt`]), extended seq minus
    /// seq (biased).
    provenance: Vec<u8>,
    /// The other nodes that heard (and proved) each record: a provenance table
    /// (`proto::mesh::Table`).
    heard: Table,
    /// The blob's hash tree, kept only for blobs over [`OUTBOARD_KEPT_OVER`] bytes.
    outboard: Option<Vec<u8>>,
    /// The window's summary besides its root: record count, slot size, and the digest
    /// of its provenance table (this node included). Kept here, not in sled's index:
    /// sled rewrites whole pages for every value it stores, so its values stay small.
    count: u32,
    slot_size: u16,
    digest: [u8; 8],
}

const BIAS: u64 = 1 << 63;

fn pack_provenance(records: &[StoredRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    let transit: Vec<u64> =
        records.iter().map(|r| r.arrival_ns.wrapping_sub(r.record.device_time_ns) ^ BIAS).collect();
    columns::pack(&mut out, &transit);
    columns::pack(&mut out, &records.iter().map(|r| u64::from(receipt(r))).collect::<Vec<_>>());
    columns::pack(&mut out, &records.iter().map(|r| r.ext_seq.wrapping_sub(r.record.seq) ^ BIAS).collect::<Vec<_>>());
    out
}

/// A sealed window as the mesh serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub root: Root,
    pub blob: Vec<u8>,
    pub outboard: Vec<u8>,
    /// Who heard which record, this node included.
    pub table: Table,
}

impl SealedValue {
    fn summary(&self, window: WindowId) -> Summary {
        Summary { window, root: self.root, count: self.count, slot_size: self.slot_size, provenance: self.digest }
    }
}

/// The provenance table of `records` (in key order): `me` for those received here, and
/// the other nodes each lists.
pub fn table(records: &[StoredRecord], me: &str) -> Table {
    Table::from_receipts(
        records.len(),
        records.iter().enumerate().flat_map(|(i, r)| (r.copies > 0).then_some((i, me, r.proved)).into_iter().chain(others_of(i, r))),
    )
}

/// The table of other nodes only (what a sealed value stores; this node's part is `copies`).
fn others(records: &[StoredRecord]) -> Table {
    Table::from_receipts(records.len(), records.iter().enumerate().flat_map(|(i, r)| others_of(i, r)))
}

/// The receipts of record `i` by other nodes: `(i, node, proved)`.
fn others_of(i: usize, r: &StoredRecord) -> impl Iterator<Item = (usize, &str, bool)> {
    r.heard_by.iter().map(move |n| (i, n.as_ref(), r.proved_by.binary_search(n).is_ok()))
}

fn decode_sealed(stream: StreamId, window_start: u64, bytes: &[u8]) -> Option<(SealedValue, Vec<StoredRecord>)> {
    let v: SealedValue = codec::from_slice(bytes, "sealed window").ok()?;
    let records = window::compact::decode(stream, window_start, &v.records).ok()?;
    let count = records.len();
    // The summary announced for the window is read from the value alone (`read_summary`).
    if v.count as usize != count || !v.heard.fits(count) {
        return None;
    }
    let names: Vec<Arc<str>> = v.heard.nodes.iter().map(|(n, _)| Arc::from(n.as_str())).collect();
    let mut r = columns::Reader::new(&v.provenance);
    let (transit, receipts, ext) = (r.unpack(count).ok()?, r.unpack(count).ok()?, r.unpack(count).ok()?);
    let stored: Vec<StoredRecord> = records
        .into_iter()
        .enumerate()
        .map(|(i, record)| {
            let tag = record.content_tag();
            let (mut heard_by, mut proved_by) = (Vec::new(), Vec::new());
            for ((_, row), name) in v.heard.nodes.iter().zip(&names) {
                if let Some(proved) = Table::receipt(row, count, i) {
                    heard_by.push(Arc::clone(name));
                    if proved {
                        proved_by.push(Arc::clone(name));
                    }
                }
            }
            let (copies, proved) = from_receipt(u32::try_from(receipts[i]).unwrap_or(PROVED - 1));
            StoredRecord {
                tag,
                arrival_ns: record.device_time_ns.wrapping_add(transit[i] ^ BIAS),
                copies,
                proved,
                ext_seq: record.seq.wrapping_add(ext[i] ^ BIAS),
                heard_by,
                proved_by,
                record,
            }
        })
        .collect();
    // The store writes a window's records in key order, once each; in any other order the
    // provenance columns and table rows (by position) would be other records' once merged.
    if !stored.windows(2).all(|w| w[0].order_key() < w[1].order_key()) {
        return None;
    }
    Some((v, stored))
}

/// The canonical blob and hash tree of a sealed window's records.
fn rebuild(stream: StreamId, window_start: u64, records: &[StoredRecord]) -> Option<(Vec<u8>, merkle::Outboard<merkle::Blake3>)> {
    let plain: Vec<Record> = records.iter().map(|r| r.record.clone()).collect();
    let blob = window::encode(stream, window_start, &plain).ok()?;
    let tree = window::outboard(&blob).ok()?;
    Some((blob, tree))
}

/// A window as read from the store: the keys of its parts, its sealed value if any, all
/// its records merged, and this node's own receipts in the sealed value (key, proved).
type WindowParts = (Vec<sled::IVec>, Option<SealedValue>, Vec<StoredRecord>, Vec<(RecordKey, bool)>);

/// Opens sled, waiting up to a second for its file lock: sled releases it a moment
/// after the last handle is dropped (its background threads hold it), so a store
/// reopened at once — a node restarted in one process — would otherwise fail. Another
/// process holding the store still fails, a second later.
fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match config.open() {
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// Whether the sled database at `path` compresses its pages: as it was created (sled
/// refuses to open with another setting), and off for a new one. zstd made every page
/// write build a compression context — a third of the node's CPU when many small streams
/// are written — for little: what is large (sealed windows, the log) lives outside sled.
fn compressed(path: &Path) -> bool {
    // `conf`: sled's settings as `key: value` lines, then a CRC.
    std::fs::read(path.join("conf")).is_ok_and(|conf| String::from_utf8_lossy(&conf).lines().any(|l| l == "use_compression: true"))
}

/// This node's own receipts among `records`: the keys it heard itself, and whether it
/// proved each.
fn own_receipts(records: &[StoredRecord]) -> Vec<(RecordKey, bool)> {
    records.iter().filter(|r| r.copies > 0).map(|r| (r.order_key(), r.proved)).collect()
}

/// What `telemesh check` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    pub sealed_windows: u64,
    pub chunks: u64,
    pub records: u64,
    /// One line per problem: the key and what is wrong.
    pub problems: Vec<String>,
}

fn window_prefix(stream: StreamId, window_start: u64) -> [u8; 13] {
    let mut k = [0u8; 13];
    k[..5].copy_from_slice(&stream.key_prefix());
    k[5..].copy_from_slice(&window_start.to_be_bytes());
    k
}

/// The key of a stream's [`StreamSum`] in `windows`: the stream's prefix alone, so it
/// sorts before the stream's windows and is in no window's range. Only a stream of two
/// sealed windows or more has one: the sum of one window is read from that window, so a
/// device id flooded into being once costs no sled write more.
fn sum_key(stream: StreamId) -> [u8; 5] {
    stream.key_prefix()
}

/// Every key of `stream` in `windows` sorts at or before this one (keys are at most 22
/// bytes).
fn past_stream(stream: StreamId) -> Vec<u8> {
    let mut k = stream.key_prefix().to_vec();
    k.extend_from_slice(&[0xff; 18]);
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

/// New records of one stream in one window, encoded as a chunk's value: what the log
/// holds, and how live records wait in memory for their window's seal (about 60 bytes
/// a record, against some 170 as [`StoredRecord`]s).
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    pub stream: StreamId,
    pub window_start: u64,
    /// How many records `bytes` holds.
    pub records: usize,
    pub bytes: Box<[u8]>,
}

impl Encoded {
    /// `records` (all of `window_start`), encoded.
    pub fn new<'a>(stream: StreamId, window_start: u64, records: impl IntoIterator<Item = &'a StoredRecord>) -> Encoded {
        let mut n = 0;
        let bytes = encode_chunk(records.into_iter().inspect(|_| n += 1)).into_boxed_slice();
        Encoded { stream, window_start, records: n, bytes }
    }

    /// The records back (bytes this node encoded itself always decode).
    pub fn decode(&self) -> Vec<StoredRecord> {
        decode_chunk(self.stream, &self.bytes).unwrap_or_default()
    }
}

/// Records of one stream in one window appended one at a time, encoded as a chunk holds
/// them but without the chunk's count in front: how records received since the last flush
/// wait in memory (about 60 bytes a record, against some 180 as [`StoredRecord`]s).
#[derive(Debug, Clone, PartialEq)]
pub struct Rows {
    pub stream: StreamId,
    pub window_start: u64,
    /// How many records `bytes` holds.
    pub records: usize,
    bytes: Vec<u8>,
}

impl Rows {
    pub fn new(stream: StreamId, window_start: u64) -> Rows {
        Rows { stream, window_start, records: 0, bytes: Vec::new() }
    }

    /// `records` (all of `stream` and `window_start`), encoded.
    pub fn of<'a>(stream: StreamId, window_start: u64, records: impl IntoIterator<Item = &'a StoredRecord>) -> Rows {
        let mut rows = Rows::new(stream, window_start);
        for r in records {
            rows.push(r);
        }
        rows
    }

    /// Appends `r` (of this stream and window).
    pub fn push(&mut self, r: &StoredRecord) {
        debug_assert!(r.record.stream == self.stream && r.window() == self.window_start);
        codec::append(&ChunkRow::of(r), &mut self.bytes);
        self.records += 1;
    }

    /// Appends the records of `later` (of this stream and window) after these.
    pub fn append(&mut self, later: Rows) {
        self.bytes.extend_from_slice(&later.bytes);
        self.records += later.records;
    }

    /// Bytes of the encoded records.
    pub fn len_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// As one chunk's value: the count, then the records.
    pub fn encode(&self) -> Encoded {
        let mut bytes = Vec::with_capacity(self.bytes.len() + 9);
        codec::append(&(self.records as u64), &mut bytes);
        bytes.extend_from_slice(&self.bytes);
        Encoded { stream: self.stream, window_start: self.window_start, records: self.records, bytes: bytes.into_boxed_slice() }
    }

    /// The records back, in the order they were appended.
    pub fn decode(&self) -> Vec<StoredRecord> {
        self.encode().decode()
    }
}

impl Chunk {
    pub fn encode(&self) -> Encoded {
        Encoded::new(self.stream, self.window_start, &self.records)
    }
}

/// One stream's new records of one window, for the log, after the window's part `prev`
/// (its newest part in the log, if it has one there).
#[derive(Debug, Clone, Copy)]
pub struct Logged<'a> {
    pub rows: &'a Encoded,
    pub prev: Option<PartLoc>,
}

/// A window to seal, with the records of it held only in memory (and the log).
#[derive(Debug, Clone, Copy)]
pub struct Sealing<'a> {
    pub stream: StreamId,
    pub window_start: u64,
    pub live: &'a [StoredRecord],
}

/// A sealed window ready to be written.
struct Prepared {
    stream: StreamId,
    window_start: u64,
    keys: Vec<sled::IVec>,
    /// The summary it replaces, if the window was sealed before.
    old: Option<Summary>,
    summary: Summary,
    value: Vec<u8>,
    /// This node's own receipts of the window change with it.
    receipts: bool,
}

/// A store failure: sled's I/O error, or a store written by another format.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("store I/O: {0}")]
    Sled(#[from] sled::Error),
    #[error("store at {path} has format {found}, this build reads format {FORMAT}")]
    Format { path: String, found: u32 },
    #[error("write-ahead log: {0}")]
    Wal(#[from] std::io::Error),
}

/// What changed in a sealed window since the last [`Store::take_changed`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Change {
    /// Its records or this node's own receipts changed, not only other nodes' rows.
    pub own: bool,
    /// This node's own receipts changed: what it heard (or proved) itself.
    pub receipts: bool,
}

/// What the node needs from storage. Small on purpose: sled today, something else later.
pub trait Store: Send + Sync + 'static {
    /// Appends each chunk, writes `logged` (open windows' new records, each after its
    /// window's previous part) as one log entry, and saves stream states. Returns the log
    /// entry's id and where each of `logged` lies in it, if one was written.
    fn append(&self, chunks: &[Encoded], logged: &[Logged<'_>], states: &[(StreamId, stream::State)]) -> Result<Option<(u64, Vec<PartLoc>)>, StoreError>;
    /// The records of `stream`'s window `window_start` in the log, from its part `head` back
    /// to its first part or to `stop` (left out), in the order they were written. Parts the
    /// log no longer holds are left out: their window was sealed since, and the store has
    /// them (a reader outside the table lock reads the log before the store).
    fn read_live(&self, stream: StreamId, window_start: u64, head: PartLoc, stop: Option<PartLoc>) -> Result<Vec<StoredRecord>, StoreError>;
    /// Lets the log drop entries with ids below `below`: no record in them is needed any
    /// more (all are sealed or in chunks).
    fn release_wal(&self, below: u64) -> Result<(), StoreError>;
    /// Reclaims the space of values no longer pointed to (for the sled store: segment
    /// files mostly dead, [`SledStore::compact`]).
    fn compact(&self) -> Result<Compacted, StoreError> {
        Ok(Compacted::default())
    }
    /// Every record of one window of `stream`, merged across chunks, in device order.
    fn window(&self, stream: StreamId, window_start: u64) -> Result<Vec<StoredRecord>, StoreError>;
    /// Seals windows, together: each one's records (sealed blob, chunks, and `live`
    /// records held in memory and in the log) become one canonical blob with its Merkle
    /// root. Only the parts read are replaced, each window's in one transaction, so a
    /// chunk appended meanwhile is kept. Returns each window's root (`None`: nothing to
    /// seal).
    fn seal_windows(&self, windows: &[Sealing<'_>]) -> Result<Vec<Option<Root>>, StoreError>;
    /// Seals one window ([`Store::seal_windows`]).
    fn seal_window(&self, stream: StreamId, window_start: u64, live: &[StoredRecord]) -> Result<Option<Root>, StoreError> {
        Ok(self.seal_windows(&[Sealing { stream, window_start, live }])?.pop().flatten())
    }
    /// The summary of a sealed window (as of its last seal).
    fn summary(&self, window: WindowId) -> Result<Option<Summary>, StoreError>;
    /// The summaries of every sealed window, in window order (reads every window: for
    /// checks and tools, not for serving).
    fn summaries(&self) -> Result<Vec<Summary>, StoreError>;
    /// The summaries of `stream`'s sealed windows starting at or after `from`, in window
    /// order, at most `limit`.
    fn summaries_of(&self, stream: StreamId, from: u64, limit: usize) -> Result<Vec<Summary>, StoreError>;
    /// The sum of `stream`'s sealed windows ([`StreamSum`]), if it has any.
    fn stream_sum(&self, stream: StreamId) -> Result<Option<StreamSum>, StoreError>;
    /// The sums of the streams after `after` that have sealed windows, in stream order, at
    /// most `limit`.
    fn stream_sums(&self, after: Option<StreamId>, limit: usize) -> Result<Vec<(StreamId, StreamSum)>, StoreError>;
    /// The streams after `after` with records in the store (sealed windows or chunks), in
    /// stream order, at most `limit`: a seek each, nothing else read.
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Result<Vec<StreamId>, StoreError>;
    /// Sealed windows and the records in them, in the whole store.
    fn sealed_totals(&self) -> (u64, u64);
    /// Adds a peer's provenance table to the sealed window, if its root is still `root`.
    /// Returns the new summary, or `None` if the root moved on (or there is no window).
    fn add_provenance(&self, window: WindowId, root: &Root, table: &Table) -> Result<Option<Summary>, StoreError>;
    /// Merges rows of `table` over the records `keys` ([`StoredRecord::order_key`]s, some
    /// of a sealed window's): what peers stated of their own receipts. Keys this node does
    /// not hold are skipped, and rows naming this node ignored. Returns the new summary and
    /// how many keys were skipped.
    fn add_rows(&self, window: WindowId, keys: &[RecordKey], table: &Table) -> Result<Option<(Summary, usize)>, StoreError>;
    /// A sealed window's blob, root and hash tree.
    fn sealed(&self, stream: StreamId, window_start: u64) -> Result<Option<Sealed>, StoreError>;
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
    /// Bytes on disk by part (`sled`, `sealed`, `wal`), read without waiting for writers.
    fn disk_bytes(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
    /// Windows whose summary changed (sealed, or their provenance merged) since the last
    /// call, each with what changed ([`Change`]), and whether more changed than could be
    /// remembered (the summary exchange brings peers the rest).
    fn take_changed(&self) -> (Vec<(WindowId, Change)>, bool) {
        (Vec::new(), false)
    }
    /// Keeps signed statements by `author`, each unless one already kept of its window
    /// backs more records heard (an author's receipts only grow, so that one is later).
    fn keep_statements(&self, _author: &str, _statements: &[Statement]) -> Result<(), StoreError> {
        Ok(())
    }
    /// The statements kept of a window, by author.
    fn statements(&self, _window: WindowId) -> Result<Vec<(String, Statement)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Summaries of sealed windows starting at or after `from`, in (stream, start) order after
/// window `after`, at most `limit` (`GET /v1/windows`): a seek a stream, the streams found
/// through their sums.
pub fn summaries_from(
    store: &dyn Store,
    from: u64,
    after: Option<WindowId>,
    limit: usize,
) -> Result<Vec<Summary>, StoreError> {
    let mut out = Vec::new();
    if let Some(a) = after {
        if let Some(next) = a.start.checked_add(1) {
            out.extend(store.summaries_of(a.stream, from.max(next), limit)?);
        }
    }
    let mut cursor = after.map(|a| a.stream);
    while out.len() < limit {
        let streams = store.stream_sums(cursor, 256)?;
        let Some(&(last, _)) = streams.last() else { break };
        cursor = Some(last);
        for (stream, _) in streams {
            if out.len() >= limit {
                break;
            }
            out.extend(store.summaries_of(stream, from, limit - out.len())?);
        }
    }
    Ok(out)
}

/// Most later windows one seal re-seals because their extended seqs changed.
const MAX_CASCADE: usize = 10_000;

/// Writes (inserts and removals) per sled batch, at most: chunks appended, stream states
/// written, windows pointed at their sealed values (a window's writes are never split).
/// A batch (or transaction) keeps every copy of a leaf it replaced alive until it ends,
/// and they are freed only a little at a time after: 5,000 windows in one transaction (a
/// flush under device-id churn) held hundreds of MB, and 10,000 chunks in one batch twice
/// a second (10,000 devices) grew the node by some 30 MB a flush, without end (heaptrack;
/// a program doing only that with sled: 1.8 GB after 37 s, about 100 MB with 32 or 256
/// writes a batch).
const SEAL_SLICE: usize = 32;

/// Windows whose sealed values are held before they are written (one segment sync each).
const SEAL_GROUP: usize = 512;
/// Records recovered from the log held decoded at once, for one seal (about 5 MB).
const RECOVERED_PER_SEAL: usize = 32_768;

/// Gives each record (in key order) its extended seq, continuing from `before` (the record
/// before the window): a function of the records alone, so equal sets get equal values.
fn extend_seqs(mut before: Option<stream::Neighbour>, records: &mut [StoredRecord]) {
    for r in records {
        r.ext_seq = match before {
            // A conflict: the same seq again (another content) keeps the same extension.
            Some(b) if b.seq == r.record.seq && r.record.kind != Kind::Init => b.ext_seq,
            _ => stream::ext_after(before, &r.record),
        };
        before = Some(stream::Neighbour { seq: r.record.seq, ext_seq: r.ext_seq });
    }
}

/// Most changed windows remembered between two [`Store::take_changed`] calls.
pub const MAX_CHANGED: usize = 100_000;

impl std::fmt::Debug for dyn Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("node_id", &self.node_id()).finish_non_exhaustive()
    }
}

/// The sled implementation: trees `windows`, `streams`, `statements`, `meta`.
#[derive(Debug)]
pub struct SledStore {
    db: sled::Db,
    windows: sled::Tree,
    /// Signed statements of windows, by window and author (`telemesh_proto::mesh::statement`).
    statements: sled::Tree,
    streams: sled::Tree,
    wal: Wal,
    segments: Segments,
    node_id: String,
    corrupt: AtomicU64,
    /// Held while a sealed value is replaced, so a seal and a provenance merge of the
    /// same window cannot overwrite each other.
    sealing: Mutex<()>,
    /// Windows sealed since [`Store::take_changed`], and whether some were not remembered.
    changed: Mutex<(BTreeMap<WindowId, Change>, bool)>,
    /// Sealed windows and the records in them ([`Store::sealed_totals`]).
    totals: Mutex<(u64, u64)>,
}

impl SledStore {
    /// Opens (or creates) the store in `dir` with a page cache of `cache_mb` MiB, under a
    /// node id of its own (random, kept in the store). Durability is the caller's:
    /// [`Store::flush`] after each append.
    pub fn open(dir: &Path, cache_mb: u64) -> Result<SledStore, StoreError> {
        SledStore::open_as(dir, cache_mb, None)
    }

    /// [`SledStore::open`] as the node named `node` (its peer id): the name provenance
    /// tables give this node.
    pub fn open_as(dir: &Path, cache_mb: u64, node: Option<&str>) -> Result<SledStore, StoreError> {
        let config = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(cache_mb << 20)
            .use_compression(compressed(&dir.join("sled")))
            .flush_every_ms(None);
        let db = open_sled(&config)?;
        let meta = db.open_tree("meta")?;
        let upgrade = match meta.get("format")? {
            Some(v) => {
                let found = v.as_ref().try_into().map(u32::from_be_bytes).unwrap_or(0);
                if READS_AS_IS.contains(&found) {
                    // Every format 4 value reads as format 5 (nothing proved), format 6 is
                    // format 5 without the `roots` tree, and format 7 is format 6 with its
                    // streams' sums. Marking the store keeps builds that would misread a
                    // proof, look roots up in sled, or leave sums behind from opening it.
                    db.drop_tree("roots")?;
                    Some(found)
                } else if found != FORMAT {
                    return Err(StoreError::Format { path: dir.display().to_string(), found });
                } else {
                    None
                }
            }
            None => {
                meta.insert("format", &FORMAT.to_be_bytes())?;
                None
            }
        };
        let node_id = match (node, meta.get("node_id")?) {
            (Some(name), stored) => {
                if stored.as_deref() != Some(name.as_bytes()) {
                    meta.insert("node_id", name.as_bytes())?;
                }
                name.to_owned()
            }
            (None, Some(v)) => String::from_utf8_lossy(&v).into_owned(),
            (None, None) => {
                let id = hex::encode(rand::random::<[u8; 8]>());
                meta.insert("node_id", id.as_bytes())?;
                id
            }
        };
        db.flush()?;
        let wal::Opened { wal, heads, legacy, damaged } = Wal::open(&dir.join("wal"))?;
        if damaged > 0 {
            tracing::warn!(segments = damaged, "the write-ahead log ends in a damaged frame (a crash during a write?); the entries before it are recovered");
        }
        let store = SledStore {
            windows: db.open_tree("windows")?,
            statements: db.open_tree("statements")?,
            streams: db.open_tree("streams")?,
            wal,
            segments: Segments::open(&dir.join("sealed"))?,
            db,
            node_id,
            corrupt: AtomicU64::new(damaged as u64),
            sealing: Mutex::new(()),
            changed: Mutex::new((BTreeMap::new(), false)),
            totals: Mutex::new((0, 0)),
        };
        if let Some(found) = upgrade {
            // Sums first, then the mark: a crash between them adds them again.
            let streams = store.add_sums()?;
            meta.insert("format", &FORMAT.to_be_bytes())?;
            store.db.flush()?;
            let path = dir.display();
            let what = "the root index dropped, every stream's sum added";
            tracing::info!(%path, streams, "store format {found} upgraded to {FORMAT} ({what})");
        }
        // One stream at a time: a store of millions of streams is not listed in memory.
        let (mut totals, mut after) = ((0, 0), None);
        while let Some((stream, sum)) = store.next_sum(after)? {
            totals.0 += u64::from(sum.windows);
            totals.1 += sum.records;
            after = Some(stream);
        }
        *store.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = totals;
        store.recover(legacy, &heads)?;
        Ok(store)
    }

    /// Writes the sum of every stream of two sealed windows or more from their summaries
    /// (replacing any sum already there), in one pass over `windows`; returns the streams
    /// summed.
    fn add_sums(&self) -> Result<usize, StoreError> {
        let mut streams = 0;
        let mut current: Option<(StreamId, StreamSum)> = None;
        let mut finish = |current: Option<(StreamId, StreamSum)>| -> Result<(), StoreError> {
            if let Some((stream, sum)) = current.filter(|(_, sum)| sum.windows > 1) {
                self.windows.insert(sum_key(stream), codec::to_vec(&sum))?;
                streams += 1;
            }
            Ok(())
        };
        for item in self.windows.iter() {
            let (k, v) = item?;
            if k.len() == 5 {
                self.windows.remove(&k)?;
                continue;
            }
            let (Some(stream), Some(start)) = (StreamId::from_key_prefix(&k), key_window(&k)) else { continue };
            if k.get(13) != Some(&PART_SEALED) {
                continue;
            }
            let Some(summary) = self.read_summary(WindowId { stream, start }, &v)? else {
                self.corrupt();
                continue;
            };
            if current.as_ref().is_some_and(|(s, _)| *s != stream) {
                finish(current.take())?;
            }
            current.get_or_insert((stream, StreamSum::default())).1.add(&summary);
        }
        finish(current)?;
        Ok(streams)
    }

    /// `stream`'s sum: as stored, or (none stored) that of its one sealed window if it has
    /// one; a stored sum that does not decode is counted and summed again. `known`: a
    /// window's summary already in hand, not read again.
    fn stored_sum(&self, stream: StreamId, known: Option<&Summary>) -> Result<StreamSum, StoreError> {
        let stored = self.windows.get(sum_key(stream))?;
        if let Some(sum) = stored.as_ref().and_then(|v| codec::from_slice::<StreamSum>(v, "stream sum").ok()) {
            return Ok(sum);
        }
        if stored.is_some() {
            self.corrupt();
        }
        Ok(StreamSum::of(&self.summaries_in(stream, 0, usize::MAX, known)?))
    }

    /// [`Store::summaries_of`], taking `known`'s window's summary as given.
    fn summaries_in(
        &self,
        stream: StreamId,
        from: u64,
        limit: usize,
        known: Option<&Summary>,
    ) -> Result<Vec<Summary>, StoreError> {
        let (_, end) = SledStore::stream_range(stream);
        let mut out = Vec::new();
        for item in self.windows.range(window_prefix(stream, from).to_vec()..end) {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let (Some(start), Some(&PART_SEALED)) = (key_window(&k), k.get(13)) else { continue };
            let window = WindowId { stream, start };
            if let Some(s) = known.filter(|s| s.window == window) {
                out.push(*s);
                continue;
            }
            match self.read_summary(window, &v)? {
                Some(s) => out.push(s),
                None => self.corrupt(),
            }
        }
        Ok(out)
    }

    /// The first stream after `after` with a key in `windows` (a sealed window, a chunk,
    /// a sum): one seek, nothing read.
    fn next_stream(&self, after: Option<StreamId>) -> Result<Option<StreamId>, StoreError> {
        let mut from = after.map(past_stream);
        loop {
            let next = match &from {
                Some(k) => {
                    let after_it = (std::ops::Bound::Excluded(k.as_slice()), std::ops::Bound::Unbounded);
                    self.windows.range::<&[u8], _>(after_it).next()
                }
                None => self.windows.iter().next(),
            };
            let Some(item) = next else { return Ok(None) };
            let (k, _) = item?;
            match StreamId::from_key_prefix(&k) {
                Some(stream) => return Ok(Some(stream)),
                // A damaged key (no stream of ours starts with it): passed, not the end.
                None => {
                    self.corrupt();
                    from = Some(k.to_vec());
                }
            }
        }
    }

    /// The first stream after `after` with a sealed window, and its sum (streams with
    /// only chunks are passed over).
    fn next_sum(&self, after: Option<StreamId>) -> Result<Option<(StreamId, StreamSum)>, StoreError> {
        let mut after = after;
        while let Some(stream) = self.next_stream(after)? {
            let sum = self.stored_sum(stream, None)?;
            if !sum.is_empty() {
                return Ok(Some((stream, sum)));
            }
            after = Some(stream);
        }
        Ok(None)
    }

    /// Moves what the log holds after a crash into the store, skipping records a window
    /// already has (sealed or chunked), then deletes the log. Idempotent: a crash during
    /// recovery is recovered the same way.
    ///
    /// Every chain (each head: a part no later part names) is read back and its window
    /// sealed, [`SEAL_GROUP`] windows or [`RECOVERED_PER_SEAL`] records at a time (a minute
    /// of 10,000 devices at 150,000/s is some 9 million records); entries of the log
    /// before chains go into chunks first, and their windows are sealed too (their streams
    /// may never write to them again; a later record seals its window again).
    fn recover(&self, legacy: Vec<(u64, wal::Entry)>, heads: &[wal::Head]) -> Result<(), StoreError> {
        if legacy.is_empty() && heads.is_empty() {
            self.wal.clear()?;
            return Ok(());
        }
        let mut moved = 0usize;
        let mut touched = std::collections::BTreeSet::new();
        let held = |stream, window_start| -> Result<std::collections::HashSet<(u64, u64, [u8; 8])>, StoreError> {
            Ok(self.window(stream, window_start)?.iter().map(StoredRecord::order_key).collect())
        };
        for (_, streams) in &legacy {
            let mut chunks = Vec::new();
            for (prefix, window_start, bytes) in streams {
                let stream = StreamId::from_key_prefix(prefix);
                let Some((stream, records)) = stream.and_then(|s| Some((s, decode_chunk(s, bytes)?))) else {
                    self.corrupt();
                    continue;
                };
                let held = held(stream, *window_start)?;
                let new: Vec<StoredRecord> = records.into_iter().filter(|r| !held.contains(&r.order_key())).collect();
                touched.insert((stream, *window_start));
                if !new.is_empty() {
                    moved += new.len();
                    chunks.push(Encoded::new(stream, *window_start, &new));
                }
            }
            self.append(&chunks, &[], &[])?;
        }
        let mut windows: Vec<(StreamId, u64, Vec<StoredRecord>)> = Vec::new();
        let chains = heads.len();
        let mut in_group = 0usize;
        let mut heads = heads.iter().peekable();
        while let Some((prefix, window_start, head)) = heads.next() {
            let Some(stream) = StreamId::from_key_prefix(prefix) else {
                self.corrupt();
                continue;
            };
            let mut records = self.read_live(stream, *window_start, *head, None)?;
            // A window may have several chains (one left behind by a stream that left memory
            // and came back before it was sealed, one a failed flush wrote): read them all.
            while let Some((_, _, more)) = heads.next_if(|(p, w, _)| p == prefix && w == window_start) {
                records.extend(self.read_live(stream, *window_start, *more, None)?);
            }
            let held = held(stream, *window_start)?;
            records.retain(|r| !held.contains(&r.order_key()));
            // The same receipt written twice (a flush that failed after its log entry, and
            // was written again) counts once.
            records.sort_by_key(|r| (r.order_key(), r.arrival_ns, r.copies));
            records.dedup();
            moved += records.len();
            in_group += records.len();
            touched.remove(&(stream, *window_start));
            windows.push((stream, *window_start, records));
            if windows.len() >= SEAL_GROUP || in_group >= RECOVERED_PER_SEAL {
                self.seal_recovered(&mut windows)?;
                in_group = 0;
            }
        }
        // The legacy entries' windows have no records left to add (they are in chunks).
        windows.extend(touched.into_iter().map(|(stream, window_start)| (stream, window_start, Vec::new())));
        self.seal_recovered(&mut windows)?;
        self.db.flush()?;
        self.wal.clear()?;
        tracing::info!(legacy_entries = legacy.len(), chains, records = moved, "recovered the write-ahead log");
        Ok(())
    }

    /// Seals windows recovered from the log with their records, and empties `windows`.
    fn seal_recovered(&self, windows: &mut Vec<(StreamId, u64, Vec<StoredRecord>)>) -> Result<(), StoreError> {
        let sealing: Vec<Sealing<'_>> =
            windows.iter().map(|(stream, window_start, live)| Sealing { stream: *stream, window_start: *window_start, live }).collect();
        self.seal_windows(&sealing)?;
        windows.clear();
        Ok(())
    }

    fn corrupt(&self) {
        self.corrupt.fetch_add(1, Ordering::Relaxed);
    }

    /// The range of `stream`'s window keys (its sum's key, the prefix alone, is before it).
    fn stream_range(stream: StreamId) -> (Vec<u8>, Vec<u8>) {
        let mut start = stream.key_prefix().to_vec();
        start.push(0);
        (start, past_stream(stream))
    }

    /// Every part of one window: the keys read, the sealed value if any, and all
    /// records merged. Undecodable parts are counted and left out (and not in the keys).
    fn window_parts(&self, stream: StreamId, window_start: u64) -> Result<WindowParts, StoreError> {
        let mut keys = Vec::new();
        let mut sealed = None;
        let mut mine = Vec::new();
        let mut all = Vec::new();
        for item in self.windows.scan_prefix(window_prefix(stream, window_start)) {
            let (k, v) = item?;
            let decoded = match k.get(13) {
                Some(&PART_SEALED) => self.read_sealed(stream, window_start, &v)?.map(|(value, records)| {
                    sealed = Some(value);
                    mine = own_receipts(&records);
                    records
                }),
                _ => decode_chunk(stream, &v),
            };
            match decoded {
                Some(rs) => {
                    all.extend(rs);
                    keys.push(k);
                }
                None => self.corrupt(),
            }
        }
        Ok((keys, sealed, merge(all), mine))
    }

    /// A sealed window's value, from the segment file its index entry points to.
    fn read_sealed(&self, stream: StreamId, window_start: u64, index: &[u8]) -> Result<Option<(SealedValue, Vec<StoredRecord>)>, StoreError> {
        Ok(self.sealed_payload(stream, window_start, index)?.and_then(|payload| decode_sealed(stream, window_start, &payload)))
    }

    /// The payload a sealed window's index entry `index` points to. A miss is tried once
    /// more with the entry read again: compaction may have moved the value and removed
    /// the file since `index` was read ([`SledStore::compact`]).
    fn sealed_payload(&self, stream: StreamId, window_start: u64, index: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let Ok(loc) = codec::from_slice::<Loc>(index, "sealed window location") else { return Ok(None) };
        if let Some(payload) = self.segments.read(loc)? {
            return Ok(Some(payload));
        }
        let Some(now) = self.windows.get(window_key(stream, window_start, PART_SEALED, 0))? else { return Ok(None) };
        match codec::from_slice::<Loc>(&now, "sealed window location") {
            Ok(moved) if moved != loc => Ok(self.segments.read(moved)?),
            _ => Ok(None),
        }
    }

    /// Merges `table`'s rows (ignoring any naming this node) into a sealed window: over
    /// its records as they are if its root is still `root`, or over the records `keys`
    /// names (those not held skipped).
    fn merge_rows(
        &self,
        window: WindowId,
        root: Option<&Root>,
        keys: Option<&[RecordKey]>,
        table: &Table,
    ) -> Result<Option<(Summary, usize)>, StoreError> {
        let _sealing = self.lock_sealing();
        let key = window_key(window.stream, window.start, PART_SEALED, 0);
        let Some(v) = self.windows.get(key)? else { return Ok(None) };
        let Some((value, mut records)) = self.read_sealed(window.stream, window.start, &v)? else { return Ok(None) };
        if root.is_some_and(|r| value.root != *r) {
            return Ok(None);
        }
        // Where in `records` each of the table's records is.
        let at: Vec<Option<usize>> = match keys {
            None => (0..records.len()).map(Some).collect(),
            Some(keys) => keys.iter().map(|k| records.binary_search_by_key(k, StoredRecord::order_key).ok()).collect(),
        };
        if !table.fits(at.len()) {
            return Ok(None);
        }
        let skipped = at.iter().filter(|p| p.is_none()).count();
        let mut changed = false;
        for (name, row) in table.nodes.iter().filter(|(n, _)| *n != self.node_id) {
            let name: Arc<str> = Arc::from(name.as_str());
            for (i, pos) in at.iter().enumerate() {
                let (Some(proved), Some(r)) = (Table::receipt(row, at.len(), i), pos.and_then(|p| records.get_mut(p))) else {
                    continue;
                };
                changed |= insert_sorted(&mut r.heard_by, &name);
                if proved {
                    changed |= insert_sorted(&mut r.proved_by, &name);
                }
            }
        }
        if !changed {
            return Ok(self.summary(window)?.map(|s| (s, skipped)));
        }
        let Some(built) = rebuild(window.stream, window.start, &records) else {
            self.corrupt();
            return Ok(None);
        };
        let (old, keys) = (Some(value.summary(window)), vec![sled::IVec::from(&key[..])]);
        let Some(p) = self.prepare(window.stream, window.start, &records, keys, &built, old) else {
            return Ok(None);
        };
        let summary = p.summary;
        self.write_sealed(&[p], false)?;
        Ok(Some((summary, skipped)))
    }

    /// A sealed window's summary, from its value (without decoding its records).
    fn read_summary(&self, window: WindowId, index: &[u8]) -> Result<Option<Summary>, StoreError> {
        let payload = self.sealed_payload(window.stream, window.start, index)?;
        let value = payload.and_then(|p| codec::from_slice::<SealedValue>(&p, "sealed window").ok());
        Ok(value.map(|v| v.summary(window)))
    }

    fn lock_sealing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.sealing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes sealed values to a segment file, durably, then points the windows at them,
    /// a batch of about [`SEAL_SLICE`] writes at a time (each reported changed once it is in).
    /// `own`: the records or this node's receipts changed, not only other nodes' rows.
    fn write_sealed(&self, prepared: &[Prepared], own: bool) -> Result<(), StoreError> {
        let payloads: Vec<&[u8]> = prepared.iter().map(|p| p.value.as_slice()).collect();
        let locs = self.segments.append_all(&payloads)?;
        let index: Vec<Vec<u8>> = locs.iter().map(codec::to_vec).collect();
        let mut at = 0;
        while at < prepared.len() {
            // Whole windows (the pointer and the chunks it replaces), up to the batch's size.
            let mut end = at + 1;
            let mut writes = prepared[at].keys.len() + 1;
            while end < prepared.len() && writes + prepared[end].keys.len() < SEAL_SLICE {
                writes += prepared[end].keys.len() + 1;
                end += 1;
            }
            let (prepared, index) = (&prepared[at..end], &index[at..end]);
            at = end;
            self.point_at(prepared, index)?;
            let mut changed = self.changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for p in prepared.iter().filter(|p| p.old != Some(p.summary)) {
                let w = WindowId { stream: p.stream, start: p.window_start };
                if changed.0.len() < MAX_CHANGED || changed.0.contains_key(&w) {
                    let c = changed.0.entry(w).or_default();
                    c.own |= own;
                    c.receipts |= p.receipts;
                } else {
                    changed.1 = true;
                }
            }
        }
        Ok(())
    }

    /// Points the windows at sealed values written at `index`, in one batch (atomic): each
    /// window's chunks go as its location is written, and its stream's sum changes by its
    /// old and new summaries. Called with the sealing lock held (the sums are read, then
    /// written).
    fn point_at(&self, prepared: &[Prepared], index: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        let mut sums: BTreeMap<StreamId, StreamSum> = BTreeMap::new();
        let (mut windows, mut records) = (0i64, 0i64);
        for (p, value) in prepared.iter().zip(index) {
            for k in &p.keys {
                batch.remove(k.clone());
            }
            batch.insert(window_key(p.stream, p.window_start, PART_SEALED, 0).as_slice(), value.as_slice());
            let sum = match sums.entry(p.stream) {
                std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                // The window's old summary is in hand: a one-window stream's sum is not read.
                std::collections::btree_map::Entry::Vacant(e) => e.insert(self.stored_sum(p.stream, p.old.as_ref())?),
            };
            sum.replace(p.old.as_ref(), Some(&p.summary));
            windows += i64::from(p.old.is_none());
            records += i64::from(p.summary.count) - p.old.map_or(0, |o| i64::from(o.count));
        }
        // Windows are never removed: a stream that has a sum keeps having one.
        for (stream, sum) in sums.iter().filter(|(_, sum)| sum.windows > 1) {
            batch.insert(&sum_key(*stream)[..], codec::to_vec(sum));
        }
        self.windows.apply_batch(batch)?;
        let mut totals = self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        totals.0 = totals.0.saturating_add_signed(windows);
        totals.1 = totals.1.saturating_add_signed(records);
        Ok(())
    }

    /// A sealed value and its index entry for `records` (merged, in key order).
    /// `old`: the window's summary before, if it was sealed.
    fn prepare(&self, stream: StreamId, window_start: u64, records: &[StoredRecord], keys: Vec<sled::IVec>, built: &(Vec<u8>, merkle::Outboard<merkle::Blake3>), old: Option<Summary>) -> Option<Prepared> {
        let (blob_len, tree) = (built.0.len(), &built.1);
        let root = tree.root();
        let sorted: Vec<Record> = records.iter().map(|r| r.record.clone()).collect();
        let value = SealedValue {
            root,
            records: window::compact::encode(window_start, &sorted),
            provenance: pack_provenance(records),
            heard: others(records),
            outboard: (blob_len > OUTBOARD_KEPT_OVER).then(|| tree.to_bytes()),
            count: records.len() as u32,
            slot_size: u16::try_from(
                (blob_len - window::HEADER_LEN - records.len() * window::INDEX_ENTRY_LEN).checked_div(records.len()).unwrap_or(0),
            )
            .ok()?,
            digest: table(records, &self.node_id).digest(),
        };
        let summary = value.summary(WindowId { stream, start: window_start });
        Some(Prepared { stream, window_start, keys, old, summary, value: codec::to_vec(&value), receipts: false })
    }

    /// Bytes of live keys and values per tree, and sled's own count of bytes on disk:
    /// how much of the files is data and how much is sled's log and garbage.
    pub fn sizes(&self) -> Result<Vec<(&'static str, u64)>, StoreError> {
        let mut out = Vec::new();
        let trees = [("windows", &self.windows), ("streams", &self.streams), ("statements", &self.statements)];
        for (name, tree) in trees {
            let mut bytes = 0u64;
            for item in tree.iter() {
                let (k, v) = item?;
                bytes += (k.len() + v.len()) as u64;
            }
            out.push((name, bytes));
        }
        out.push(("sled size_on_disk", self.db.size_on_disk()?));
        out.push(("sealed segment files", self.segments.size()?));
        Ok(out)
    }

    /// Walks the whole store: every sealed blob decodes, its hash tree recomputes to the
    /// stored tree and root; every chunk decodes.
    pub fn check(&self) -> Result<CheckReport, StoreError> {
        let mut report = CheckReport::default();
        let mut stream_sums: Option<StreamCheck> = None;
        for item in self.windows.iter() {
            let (k, v) = item?;
            let key = hex::encode(&k);
            let Some(stream) = StreamId::from_key_prefix(&k) else {
                report.problems.push(format!("{key}: unknown stream prefix"));
                continue;
            };
            if stream_sums.as_ref().is_none_or(|c| c.stream != stream) {
                let problems_before = report.problems.len();
                let next = StreamCheck { stream, stored: None, summed: StreamSum::default(), problems_before };
                if let Some(done) = stream_sums.replace(next) {
                    done.compare(&mut report);
                }
            }
            if k.len() == 5 {
                match codec::from_slice::<StreamSum>(&v, "stream sum") {
                    Ok(sum) => stream_sums.as_mut().into_iter().for_each(|c| c.stored = Some(sum)),
                    Err(_) => report.problems.push(format!("{key}: stream sum does not decode")),
                }
                continue;
            }
            if k.get(13) == Some(&PART_SEALED) {
                report.sealed_windows += 1;
                let start = key_window(&k).unwrap_or(0);
                let Some((value, records)) = self.read_sealed(stream, start, &v)? else {
                    report.problems.push(format!("{key}: sealed window does not decode"));
                    continue;
                };
                report.records += records.len() as u64;
                if let Some(c) = stream_sums.as_mut() {
                    c.summed.add(&value.summary(WindowId { stream, start }));
                }
                match rebuild(stream, start, &records) {
                    Some((_, tree)) if tree.root() != value.root => report.problems.push(format!(
                        "{key}: root recomputes to {}, stored {}",
                        hex::encode(tree.root()),
                        hex::encode(value.root)
                    )),
                    Some((_, tree)) if value.outboard.as_ref().is_some_and(|o| *o != tree.to_bytes()) => {
                        report.problems.push(format!("{key}: stored hash tree differs from the blob's"))
                    }
                    Some(_) => {}
                    None => report.problems.push(format!("{key}: records do not form a window blob")),
                }
            } else {
                report.chunks += 1;
                match decode_chunk(stream, &v) {
                    Some(rs) => report.records += rs.len() as u64,
                    None => report.problems.push(format!("{key}: chunk does not decode")),
                }
            }
        }
        if let Some(done) = stream_sums {
            done.compare(&mut report);
        }
        Ok(report)
    }
}

/// What [`SledStore::check`] gathers of one stream while it reads the stream's keys.
struct StreamCheck {
    stream: StreamId,
    stored: Option<StreamSum>,
    /// The sum of the stream's sealed windows as read.
    summed: StreamSum,
    /// Problems found before the stream's keys: a window of its own already reported
    /// makes its sum differ too, and that is not reported again.
    problems_before: usize,
}

impl StreamCheck {
    fn compare(self, report: &mut CheckReport) {
        // A stream of one window has no sum stored.
        let fine = match self.stored {
            Some(stored) => stored == self.summed,
            None => self.summed.windows <= 1,
        };
        if fine || report.problems.len() > self.problems_before {
            return;
        }
        let key = hex::encode(sum_key(self.stream));
        let stored = self.stored.map_or("none".to_owned(), |s| format!("{} windows, {} records", s.windows, s.records));
        let (windows, records) = (self.summed.windows, self.summed.records);
        let summed = format!("{windows} windows, {records} records");
        report.problems.push(format!("{key}: stream sum stored ({stored}) differs from its windows' ({summed})"));
    }
}

impl Store for SledStore {
    fn append(&self, chunks: &[Encoded], logged: &[Logged<'_>], states: &[(StreamId, stream::State)]) -> Result<Option<(u64, Vec<PartLoc>)>, StoreError> {
        for slice in chunks.chunks(SEAL_SLICE) {
            let mut b = sled::Batch::default();
            for c in slice {
                let id = self.db.generate_id()?;
                b.insert(window_key(c.stream, c.window_start, PART_CHUNK, id).as_slice(), &c.bytes[..]);
            }
            self.windows.apply_batch(b)?;
        }
        let written = if logged.is_empty() {
            None
        } else {
            let parts: Vec<wal::Part<'_>> = logged
                .iter()
                .map(|l| wal::Part { key: l.rows.stream.key_prefix(), window_start: l.rows.window_start, prev: l.prev, rows: &l.rows.bytes })
                .collect();
            Some(self.wal.append(&parts)?)
        };
        for slice in states.chunks(SEAL_SLICE) {
            let mut s = sled::Batch::default();
            for (id, state) in slice {
                s.insert(id.key_prefix().as_slice(), codec::to_vec(state));
            }
            self.streams.apply_batch(s)?;
        }
        Ok(written)
    }

    fn read_live(&self, stream: StreamId, window_start: u64, head: PartLoc, stop: Option<PartLoc>) -> Result<Vec<StoredRecord>, StoreError> {
        let walk = self.wal.read_chain(stream.key_prefix(), window_start, head, stop)?;
        if walk.end == wal::End::Damaged {
            self.corrupt();
        }
        let mut out = Vec::new();
        for rows in &walk.rows {
            match decode_chunk(stream, rows) {
                Some(mut records) => out.append(&mut records),
                None => self.corrupt(),
            }
        }
        Ok(out)
    }

    fn compact(&self) -> Result<Compacted, StoreError> {
        SledStore::compact(self)
    }

    fn release_wal(&self, below: u64) -> Result<(), StoreError> {
        self.wal.release_below(below)?;
        Ok(())
    }

    fn window(&self, stream: StreamId, window_start: u64) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(self.window_parts(stream, window_start)?.2)
    }

    fn seal_windows(&self, windows: &[Sealing<'_>]) -> Result<Vec<Option<Root>>, StoreError> {
        let _sealing = self.lock_sealing();
        let mut roots = vec![None; windows.len()];
        let mut prepared = Vec::new();
        // Windows are sealed in order, each one's extended seqs continuing from the record
        // before it; when that changes a window's last one, the next sealed window is
        // sealed again ("cascade"), so every node that holds the same records ends with
        // the same extended seqs, whatever order they arrived in.
        let mut work: BTreeMap<(StreamId, u64), Option<usize>> = BTreeMap::new();
        for (i, w) in windows.iter().enumerate() {
            work.insert((w.stream, w.window_start), Some(i));
        }
        let mut last: HashMap<StreamId, (u64, stream::Neighbour)> = HashMap::new();
        let mut cascaded = 0usize;
        while let Some(((stream, start), requested)) = work.pop_first() {
            let live = requested.map_or(&[][..], |i| windows[i].live);
            let (keys, old, stored, mine) = self.window_parts(stream, start)?;
            if requested.is_some() && live.is_empty() && (stored.is_empty() || (keys.len() == 1 && old.is_some())) {
                if let Some(i) = requested {
                    roots[i] = old.as_ref().map(|v| v.root); // nothing new since the last seal
                }
                continue;
            }
            if stored.is_empty() && live.is_empty() {
                continue;
            }
            let before = match (last.get(&stream), self.window_before(stream, start)?) {
                (Some((w, n)), Some(s)) if *w >= s => Some(*n),
                (Some((_, n)), None) => Some(*n),
                (_, Some(s)) => self.window(stream, s)?.last().map(|r| stream::Neighbour { seq: r.record.seq, ext_seq: r.ext_seq }),
                (None, None) => None,
            };
            let old_ext: Vec<u64> = stored.iter().map(|r| r.ext_seq).collect();
            let old_last = stored.last().map(|r| r.ext_seq);
            let mut records = stored;
            records.extend(live.iter().filter(|r| r.window() == start).cloned());
            let mut records = merge(records);
            extend_seqs(before, &mut records);
            if let Some(r) = records.last() {
                last.insert(stream, (start, stream::Neighbour { seq: r.record.seq, ext_seq: r.ext_seq }));
            }
            let unchanged = requested.is_none() && records.len() == old_ext.len() && records.iter().map(|r| r.ext_seq).eq(old_ext.iter().copied());
            if unchanged {
                continue;
            }
            if records.last().map(|r| r.ext_seq) != old_last && cascaded < MAX_CASCADE {
                if let Some(next) = self.window_at_or_after(stream, window::next(start))? {
                    if next > start {
                        cascaded += 1;
                        work.entry((stream, next)).or_insert(None);
                    }
                }
            }
            let old_summary = old.as_ref().map(|v| v.summary(WindowId { stream, start }));
            let built = rebuild(stream, start, &records);
            let built = built.and_then(|b| self.prepare(stream, start, &records, keys, &b, old_summary));
            let Some(p) = built else {
                // Only records of this window are ever written under its prefix.
                self.corrupt();
                continue;
            };
            if let Some(i) = requested {
                roots[i] = Some(p.summary.root);
            }
            prepared.push(Prepared { receipts: own_receipts(&records) != mine, ..p });
            if prepared.len() >= SEAL_GROUP {
                self.write_sealed(&prepared, true)?;
                prepared.clear();
            }
        }
        if !prepared.is_empty() {
            self.write_sealed(&prepared, true)?;
        }
        Ok(roots)
    }

    fn summary(&self, window: WindowId) -> Result<Option<Summary>, StoreError> {
        let Some(v) = self.windows.get(window_key(window.stream, window.start, PART_SEALED, 0))? else { return Ok(None) };
        let summary = self.read_summary(window, &v)?;
        if summary.is_none() {
            self.corrupt();
        }
        Ok(summary)
    }

    fn summaries(&self) -> Result<Vec<Summary>, StoreError> {
        let mut out = Vec::new();
        for item in self.windows.iter() {
            let (k, v) = item?;
            if k.get(13) != Some(&PART_SEALED) {
                continue;
            }
            let (Some(stream), Some(start)) = (StreamId::from_key_prefix(&k), key_window(&k)) else { continue };
            match self.read_summary(WindowId { stream, start }, &v)? {
                Some(s) => out.push(s),
                None => self.corrupt(),
            }
        }
        Ok(out)
    }

    fn summaries_of(&self, stream: StreamId, from: u64, limit: usize) -> Result<Vec<Summary>, StoreError> {
        self.summaries_in(stream, from, limit, None)
    }

    fn stream_sum(&self, stream: StreamId) -> Result<Option<StreamSum>, StoreError> {
        Ok(Some(self.stored_sum(stream, None)?).filter(|s| !s.is_empty()))
    }

    fn stream_sums(&self, after: Option<StreamId>, limit: usize) -> Result<Vec<(StreamId, StreamSum)>, StoreError> {
        let mut out: Vec<(StreamId, StreamSum)> = Vec::new();
        while out.len() < limit {
            // `next_sum` passes streams without a sealed window (an empty sum).
            let Some(next) = self.next_sum(out.last().map(|(id, _)| *id).or(after))? else { break };
            out.push(next);
        }
        Ok(out)
    }

    fn streams(&self, after: Option<StreamId>, limit: usize) -> Result<Vec<StreamId>, StoreError> {
        let mut out = Vec::new();
        while out.len() < limit {
            let Some(stream) = self.next_stream(out.last().copied().or(after))? else { break };
            out.push(stream);
        }
        Ok(out)
    }

    fn sealed_totals(&self) -> (u64, u64) {
        *self.totals.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add_provenance(&self, window: WindowId, root: &Root, table: &Table) -> Result<Option<Summary>, StoreError> {
        Ok(self.merge_rows(window, Some(root), None, table)?.map(|(s, _)| s))
    }

    fn add_rows(&self, window: WindowId, keys: &[RecordKey], table: &Table) -> Result<Option<(Summary, usize)>, StoreError> {
        self.merge_rows(window, None, Some(keys), table)
    }

    fn sealed(&self, stream: StreamId, window_start: u64) -> Result<Option<Sealed>, StoreError> {
        let Some(v) = self.windows.get(window_key(stream, window_start, PART_SEALED, 0))? else { return Ok(None) };
        let rebuilt = self.read_sealed(stream, window_start, &v)?.and_then(|(value, records)| {
            let table = table(&records, &self.node_id);
            let plain: Vec<Record> = records.into_iter().map(|r| r.record).collect();
            let blob = window::encode(stream, window_start, &plain).ok()?;
            // A kept hash tree is served as it is (`check` verifies it); a small blob is
            // rehashed, and must give the stored root.
            let outboard = match value.outboard {
                Some(o) => o,
                None => {
                    let tree = window::outboard(&blob).ok()?;
                    if tree.root() != value.root {
                        return None;
                    }
                    tree.to_bytes()
                }
            };
            Some(Sealed { root: value.root, blob, outboard, table })
        });
        if rebuilt.is_none() {
            self.corrupt();
        }
        Ok(rebuilt)
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
        self.wal.sync()?;
        self.db.flush()?;
        Ok(())
    }

    fn corrupt_values(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }

    fn disk_bytes(&self) -> Vec<(&'static str, u64)> {
        vec![
            ("sled", self.db.size_on_disk().unwrap_or(0)),
            ("sealed", self.segments.size().unwrap_or(0)),
            ("wal", self.wal.size()),
        ]
    }

    fn keep_statements(&self, author: &str, statements: &[Statement]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for s in statements {
            let w = s.claim.window;
            let key = [&window_prefix(w.stream, w.start)[..], author.as_bytes()].concat();
            let kept = self.statements.get(&key)?.and_then(|v| codec::from_slice::<Statement>(&v, "statement").ok());
            if kept.is_none_or(|k| k.claim.heard_count() <= s.claim.heard_count()) {
                batch.insert(key, codec::to_vec(s));
            }
        }
        self.statements.apply_batch(batch)?;
        Ok(())
    }

    fn statements(&self, window: WindowId) -> Result<Vec<(String, Statement)>, StoreError> {
        let mut out = Vec::new();
        for item in self.statements.scan_prefix(window_prefix(window.stream, window.start)) {
            let (k, v) = item?;
            let author = std::str::from_utf8(&k[13..]).ok().map(str::to_owned);
            match (author, codec::from_slice::<Statement>(&v, "statement")) {
                (Some(author), Ok(s)) if s.claim.window == window => out.push((author, s)),
                _ => self.corrupt(),
            }
        }
        Ok(out)
    }

    fn take_changed(&self) -> (Vec<(WindowId, Change)>, bool) {
        let mut changed = self.changed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let overflowed = std::mem::take(&mut changed.1);
        (std::mem::take(&mut changed.0).into_iter().collect(), overflowed)
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
    fn rows_appended_one_at_a_time_are_the_chunk_of_all_of_them() {
        // Past 250 records the chunk's count takes three bytes instead of one.
        let mut records: Vec<StoredRecord> = (0..300).map(|i| rec(i, i * 1_000, i as f32 / 3.0)).collect();
        records[7].proved = true;
        records[8].copies = 70_000;
        for n in [0, 1, 250, 251, 300] {
            let mut rows = Rows::new(S, 0);
            for r in &records[..n] {
                rows.push(r);
            }
            let chunk = Encoded::new(S, 0, &records[..n]);
            assert_eq!(rows.encode(), chunk, "{n} records");
            assert_eq!(rows.decode(), records[..n].to_vec());
        }
    }

    #[test]
    fn chunks_merge_into_windows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let w0 = 0;
        let w1 = window::SPAN_NS;
        s.append(&[Chunk { stream: S, window_start: w0, records: vec![rec(3, 30, 3.0), rec(1, 10, 1.0)] }.encode()], &[], &[])
            .expect("append");
        s.append(
            &[
                Chunk { stream: S, window_start: w0, records: vec![rec(2, 20, 2.0), rec(1, 10, 1.0)] }.encode(),
                Chunk { stream: S, window_start: w1, records: vec![rec(9, w1 + 5, 9.0)] }.encode(),
            ],
            &[],
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

        let root = s.seal_window(S, w0, &[]).expect("seal").expect("a root");
        assert_eq!(s.window(S, w0).expect("window"), got, "sealing keeps records and provenance");
        assert_eq!(s.windows.scan_prefix(window_prefix(S, w0)).count(), 1, "one sealed value, no chunks");
        let sealed = s.sealed(S, w0).expect("read").expect("sealed");
        assert_eq!(sealed.root, root);
        assert_eq!(window::outboard(&sealed.blob).expect("tree").root(), root);
        assert_eq!(s.seal_window(S, w0, &[]).expect("seal again"), Some(root), "nothing new: same root");

        // A late record after sealing: a chunk beside the sealed blob, merged on read,
        // and a new root when sealed again.
        s.append(&[Chunk { stream: S, window_start: w0, records: vec![rec(4, 40, 4.0)] }.encode()], &[], &[]).expect("append");
        assert_eq!(s.window(S, w0).expect("window").len(), 4);
        let root2 = s.seal_window(S, w0, &[]).expect("seal").expect("a root");
        assert_ne!(root2, root);
        assert_eq!(s.sealed(S, w0).expect("read").expect("sealed").root, root2);
        assert_eq!(s.check().expect("check"), CheckReport { sealed_windows: 1, chunks: 1, records: 5, problems: vec![] });
        let id = s.node_id().to_owned();
        drop(s);
        let again = SledStore::open(dir.path(), 4).expect("reopen");
        assert_eq!(again.node_id(), id);
        assert_eq!(again.window(S, w0).expect("window").len(), 4);
    }

    #[test]
    fn corrupt_values_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        s.windows.insert(window_key(S, 0, PART_CHUNK, 1), &[0xff, 0xff, 0xff][..]).expect("raw insert");
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![rec(2, 20, 2.0)] }.encode()], &[], &[]).expect("append");
        assert_eq!(s.window(S, 0).expect("window").len(), 1);
        assert_eq!(s.corrupt_values(), 1);
        s.streams.insert(S.key_prefix(), &[0xff][..]).expect("raw insert");
        assert_eq!(s.state(S).expect("state"), None);
        assert_eq!(s.corrupt_values(), 2);
        assert_eq!(s.check().expect("check").problems.len(), 1);
    }

    #[test]
    fn a_crash_leaves_the_log_and_reopening_seals_every_chain_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let rows = |w: u64, records: Vec<StoredRecord>| Chunk { stream: S, window_start: w, records }.encode();
        // Record 1 is sealed already (a seal that ended before the crash).
        s.seal_window(S, 0, &[rec(1, 10, 1.0)]).expect("seal");
        // Window 0's chain: records 1 (again) and 2, then 3; a second chain of window 0 (a
        // stream that left memory and came back before the first was sealed): 4; window 1: 5.
        let (one, two, four) = (rows(0, vec![rec(1, 10, 1.0), rec(2, 20, 2.0)]), rows(0, vec![rec(3, 30, 3.0)]), rows(0, vec![rec(4, 40, 4.0)]));
        let next = rows(window::SPAN_NS, vec![rec(5, window::SPAN_NS + 5, 5.0)]);
        let (_, at) = s.append(&[], &[Logged { rows: &one, prev: None }], &[]).expect("log").expect("an entry");
        let later = [Logged { rows: &two, prev: Some(at[0]) }, Logged { rows: &next, prev: None }, Logged { rows: &four, prev: None }];
        let (_, at2) = s.append(&[], &later, &[]).expect("log").expect("an entry");
        let seqs = |recs: Vec<StoredRecord>| recs.iter().map(|r| r.record.seq).collect::<Vec<_>>();
        assert_eq!(seqs(s.read_live(S, 0, at2[0], None).expect("read")), [1, 2, 3]);
        assert_eq!(seqs(s.read_live(S, 0, at2[0], Some(at[0])).expect("read")), [3]);
        s.flush().expect("flush");
        drop(s); // a crash: the log was never released
        let s = SledStore::open(dir.path(), 4).expect("reopen recovers");
        assert_eq!(s.wal.segments(), 0);
        let got = |s: &SledStore, w| s.window(S, w).expect("window").iter().map(|r| (r.record.seq, r.copies)).collect::<Vec<_>>();
        assert_eq!(got(&s, 0), [(1, 1), (2, 1), (3, 1), (4, 1)], "each once, record 1 not counted twice");
        assert_eq!(got(&s, window::SPAN_NS), [(5, 1)]);
        assert!(s.sealed(S, 0).expect("read").is_some() && s.sealed(S, window::SPAN_NS).expect("read").is_some());
        assert_eq!(s.read_live(S, 0, at2[0], None).expect("read"), [], "the log is gone");
        drop(s);
        let s = SledStore::open(dir.path(), 4).expect("reopen again");
        assert_eq!(got(&s, 0).len(), 4, "recovery is idempotent");
    }

    #[test]
    fn a_log_written_before_chains_is_recovered_into_its_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        drop(SledStore::open(dir.path(), 4).expect("open"));
        let entry: (u64, wal::Entry) = (7, vec![(S.key_prefix(), 0, encode_chunk(&[rec(1, 10, 1.0), rec(2, 20, 2.0)]))]);
        std::fs::write(dir.path().join("wal").join(format!("{:016x}.log", 7)), wal::frame(&codec::to_vec(&entry))).expect("write");
        let s = SledStore::open(dir.path(), 4).expect("reopen recovers");
        assert_eq!(s.window(S, 0).expect("window").len(), 2);
        assert!(s.sealed(S, 0).expect("read").is_some());
        assert_eq!(std::fs::read_dir(dir.path().join("wal")).expect("dir").count(), 0);
    }

    /// sled frees its file lock a moment after the last handle is dropped: a store opened
    /// meanwhile (a node restarted in one process) waits for it rather than failing.
    #[test]
    fn a_store_opened_while_its_last_handle_closes_waits_for_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(s);
        });
        let again = SledStore::open(dir.path(), 4).expect("opened once the lock is free");
        closer.join().expect("closer");
        drop(again);
    }

    #[test]
    fn proofs_survive_chunks_seals_duplicates_and_peer_tables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open_as(dir.path(), 4, Some("me")).expect("open");
        let proved = StoredRecord { proved: true, ..rec(1, 10, 1.0) };
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![proved, rec(2, 20, 2.0)] }.encode()], &[], &[])
            .expect("append");
        let proof = |s: &SledStore| s.window(S, 0).expect("window").iter().map(|r| (r.copies, r.proved)).collect::<Vec<_>>();
        assert_eq!(proof(&s), [(1, true), (1, false)]);
        // A second, authenticated copy of record 2 proves it too.
        let delta = StoredRecord { proved: true, ..StoredRecord::new(rec(2, 20, 2.0).record, 0, 5) };
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![delta] }.encode()], &[], &[]).expect("append");
        assert_eq!(proof(&s), [(1, true), (2, true)]);
        let root = s.seal_window(S, 0, &[]).expect("seal").expect("root");
        assert_eq!(proof(&s), [(1, true), (2, true)]);
        // A peer's table: p heard both, proved the second; q heard the first only.
        let peers = Table::from_receipts(2, [(0, "p", false), (1, "p", true), (0, "q", false), (0, "me", false)]);
        s.add_provenance(WindowId { stream: S, start: 0 }, &root, &peers).expect("provenance");
        drop(s);
        let s = SledStore::open_as(dir.path(), 4, Some("me")).expect("reopen");
        let w = s.window(S, 0).expect("window");
        let by = |v: &[Arc<str>]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!((by(&w[0].heard_by), by(&w[0].proved_by)), (vec!["p".to_owned(), "q".to_owned()], vec![]));
        assert_eq!((by(&w[1].heard_by), by(&w[1].proved_by)), (vec!["p".to_owned()], vec!["p".to_owned()]));
        assert_eq!(proof(&s), [(1, true), (2, true)], "a peer cannot speak for this node");
        let table = s.sealed(S, 0).expect("sealed").expect("window").table;
        assert_eq!(table.proved(2, 1).collect::<Vec<_>>(), ["me", "p"]);
        assert!(table.fits(2));
    }

    /// Each stream's sum follows every seal, re-seal and merge of its windows (kept in sled
    /// from its second window), is what its windows sum to after reopening, and `check`
    /// finds a sum that is not; one that does not decode is counted and summed again.
    #[test]
    fn a_streams_sum_follows_its_windows_through_seals_merges_and_reopening() {
        let dir = tempfile::tempdir().expect("tempdir");
        let other = StreamId { device: 8, ..S };
        let of = |stream: StreamId, k: u64, w: u64| StoredRecord {
            record: Record { stream, ..rec(k, w * window::SPAN_NS + k, k as f32).record },
            ..rec(k, 0, 1.0)
        };
        let summed = |s: &SledStore, stream| StreamSum::of(&s.summaries_of(stream, 0, usize::MAX).expect("summaries"));
        {
            let s = SledStore::open_as(dir.path(), 4, Some("me")).expect("open");
            assert_eq!((s.stream_sum(S).expect("sum"), s.sealed_totals()), (None, (0, 0)));
            for w in 0..4 {
                s.seal_window(S, w * window::SPAN_NS, &[of(S, 1, w), of(S, 2, w)]).expect("seal");
            }
            s.seal_window(other, 0, &[of(other, 1, 0)]).expect("seal");
            // A late record seals window 1 again; a peer's table changes window 2's summary.
            s.seal_window(S, window::SPAN_NS, &[of(S, 3, 1)]).expect("seal again");
            let root = s.summary(WindowId { stream: S, start: 2 * window::SPAN_NS }).expect("summary").expect("sealed").root;
            let peers = Table::from_receipts(2, [(0, "p", false)]);
            s.add_provenance(WindowId { stream: S, start: 2 * window::SPAN_NS }, &root, &peers).expect("provenance");
            for stream in [S, other] {
                assert_eq!(s.stream_sum(stream).expect("sum"), Some(summed(&s, stream)));
            }
            assert_eq!(s.sealed_totals(), (5, 10));
            // A stream of one window has no sum of its own in sled: it is that window's.
            assert!(s.windows.get(sum_key(S)).expect("get").is_some());
            assert!(s.windows.get(sum_key(other)).expect("get").is_none());
            let listed: Vec<StreamId> = s.stream_sums(None, 10).expect("sums").into_iter().map(|(id, _)| id).collect();
            assert_eq!(listed, [S, other]);
            assert_eq!(s.stream_sums(Some(S), 10).expect("sums").len(), 1);
            assert_eq!(s.summaries_of(S, window::SPAN_NS, 2).expect("page").len(), 2);
            assert!(s.check().expect("check").problems.is_empty());
            // What the summary exchange sends: the digest of the windows held.
            let digest = s.stream_sum(S).expect("sum").expect("some").digest(S);
            assert_eq!(digest, telemesh_proto::mesh::stream_digest(S, &s.summaries_of(S, 0, usize::MAX).expect("all")));
        }
        let s = SledStore::open_as(dir.path(), 4, Some("me")).expect("reopen");
        assert_eq!(s.sealed_totals(), (5, 10));
        assert_eq!(s.stream_sum(S).expect("sum"), Some(summed(&s, S)));
        // A damaged key before every stream (no dialect is 0) is passed, and counted; a
        // stream with only a chunk has records but no sum.
        s.windows.insert([0, 1, 2], &[1][..]).expect("insert");
        let chunked = StreamId { device: 9, ..S };
        s.append(&[Chunk { stream: chunked, window_start: 0, records: vec![of(chunked, 1, 0)] }.encode()], &[], &[])
            .expect("append");
        let listed: Vec<StreamId> = s.stream_sums(None, 10).expect("sums").into_iter().map(|(id, _)| id).collect();
        assert_eq!((listed, s.corrupt_values()), (vec![S, other], 1));
        assert_eq!(s.streams(None, 10).expect("streams"), [S, other, chunked]);
        assert_eq!(s.streams(Some(S), 1).expect("streams"), [other]);
        assert_eq!(s.corrupt_values(), 2, "each listing from the start passed the damaged key");
        s.windows.remove([0, 1, 2]).expect("remove");
        s.seal_window(chunked, 0, &[]).expect("seal");
        // A wrong sum is a problem `check` reports; one that does not decode is summed again.
        s.windows.insert(sum_key(S), codec::to_vec(&StreamSum::default())).expect("insert");
        let problems = s.check().expect("check").problems;
        assert!(problems.len() == 1 && problems[0].contains("stream sum"), "{problems:?}");
        s.windows.insert(sum_key(S), &[0xff, 0xff][..]).expect("insert");
        assert_eq!(s.stream_sum(S).expect("sum"), Some(summed(&s, S)));
        assert_eq!(s.corrupt_values(), 3);
    }

    #[test]
    fn a_store_keeps_the_page_compression_it_was_created_with() {
        let (old, new) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
        drop(sled::Config::new().path(old.path().join("sled")).use_compression(true).open().expect("sled"));
        drop(SledStore::open(old.path(), 4).expect("a store created with compression opens"));
        assert!(compressed(&old.path().join("sled")));
        drop(SledStore::open(new.path(), 4).expect("open"));
        assert!(!compressed(&new.path().join("sled")), "new stores are not compressed");
        drop(SledStore::open(new.path(), 4).expect("and reopen"));
    }

    #[test]
    fn format_4_to_6_stores_open_as_format_7_with_sums_without_a_root_index_and_older_ones_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Waits, as the store does, for a handle just dropped to let go of the lock.
        let raw = || open_sled(&sled::Config::new().path(dir.path().join("sled"))).expect("sled");
        // Two streams' windows, written as any format would (values unchanged since 4).
        let other = StreamId { device: 8, ..S };
        {
            let s = SledStore::open(dir.path(), 4).expect("open");
            for (i, stream) in [S, other].into_iter().enumerate() {
                for w in 0..3u64 {
                    let live: Vec<StoredRecord> = (0..=i as u64 + w)
                        .map(|k| StoredRecord { record: Record { stream, ..rec(k, w * window::SPAN_NS + k, 1.0).record }, ..rec(k, 0, 1.0) })
                        .collect();
                    s.seal_window(stream, w * window::SPAN_NS, &live).expect("seal");
                }
            }
        }
        let set = |format: u32| {
            let db = raw();
            db.open_tree("meta").expect("meta").insert("format", &format.to_be_bytes()).expect("insert");
            db.open_tree("roots").expect("roots").insert([7; 32], &[1; 13]).expect("insert");
            // No sums before format 7 (and a stale one of a stream with no windows).
            let windows = db.open_tree("windows").expect("windows");
            for stream in [S, other] {
                windows.remove(sum_key(stream)).expect("remove");
            }
            windows.insert(sum_key(StreamId { device: 9, ..S }), codec::to_vec(&StreamSum { windows: 4, ..StreamSum::default() })).expect("insert");
            db.flush().expect("flush");
        };
        for old in [4, 5, 6] {
            set(old);
            let s = SledStore::open(dir.path(), 4).expect("an earlier format opens");
            for stream in [S, other] {
                let sum = s.stream_sum(stream).expect("sum").expect("some");
                assert_eq!(sum, StreamSum::of(&s.summaries_of(stream, 0, usize::MAX).expect("summaries")), "format {old}");
                assert_eq!(sum.windows, 3);
            }
            assert_eq!(s.stream_sums(None, 10).expect("sums").len(), 2, "the stale sum is gone");
            assert_eq!(s.sealed_totals(), (6, 15));
            assert!(s.check().expect("check").problems.is_empty());
            drop(s);
            let db = raw();
            let format = db.open_tree("meta").expect("meta").get("format").expect("get");
            assert_eq!(format.as_deref(), Some(&FORMAT.to_be_bytes()[..]));
            assert!(!db.tree_names().iter().any(|t| t.as_ref() == b"roots"), "format {old}'s root index is dropped");
        }
        set(3);
        assert!(matches!(SledStore::open(dir.path(), 4), Err(StoreError::Format { found: 3, .. })));
    }

    /// The mesh announces a window again when its records or this node's own receipts
    /// change, not when other nodes' rows are merged: the store tells the two apart.
    #[test]
    fn a_statement_is_kept_per_window_and_author_unless_it_backs_fewer_records() {
        use telemesh_proto::mesh::statement::Claim;
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let w = WindowId { stream: S, start: 0 };
        let statement = |root: u8, row: u8| Statement {
            claim: Claim { window: w, root: [root; 32], count: 8, row: vec![row] },
            at: 0,
            of: 1,
            path: Vec::new(),
            signature: vec![root; 64],
            index: None,
        };
        s.keep_statements("a", &[statement(1, 0b0000_0111)]).expect("keep");
        s.keep_statements("b", &[statement(2, 0b0000_0001)]).expect("keep");
        // A (replayed, reordered) statement of fewer records does not replace a's; one of
        // as many or more (a later root) does.
        s.keep_statements("a", &[statement(3, 0b0000_0001)]).expect("keep");
        assert_eq!(s.statements(w).expect("read").iter().find(|(n, _)| n == "a").map(|(_, x)| x.claim.root), Some([1; 32]));
        s.keep_statements("a", &[statement(4, 0b0000_1110)]).expect("keep");
        let kept = s.statements(w).expect("read");
        assert_eq!(kept.iter().map(|(n, x)| (n.as_str(), x.claim.root[0])).collect::<Vec<_>>(), [("a", 4), ("b", 2)]);
        // Another window's are its own; the store keeps them across a reopen.
        assert!(s.statements(WindowId { stream: S, start: window::SPAN_NS }).expect("read").is_empty());
        drop(s);
        let s = SledStore::open(dir.path(), 4).expect("reopen");
        assert_eq!(s.statements(w).expect("read").len(), 2);
    }

    #[test]
    fn a_change_says_whether_this_nodes_receipts_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open_as(dir.path(), 4, Some("me")).expect("open");
        let w = WindowId { stream: S, start: 0 };
        // Repaired first: held, but not heard here.
        let root = s.seal_window(S, 0, &[StoredRecord::repaired(rec(1, 10, 1.0).record, 0)]).expect("seal").expect("root");
        let change = |own, receipts| (vec![(w, Change { own, receipts })], false);
        assert_eq!(s.take_changed(), change(true, false));
        // A peer's row, over the record held and one that is not.
        let keys = [rec(1, 10, 1.0).order_key(), rec(2, 20, 2.0).order_key()];
        let row = Table::from_receipts(2, [(0, "p", false), (1, "p", false)]);
        let (summary, skipped) = s.add_rows(w, &keys, &row).expect("rows").expect("sealed");
        assert_eq!((summary.root, skipped), (root, 1));
        assert_eq!(s.take_changed(), change(false, false));
        // Then this node's own receipt of it is written: same root, a change of its own.
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![rec(1, 10, 1.0)] }.encode()], &[], &[]).expect("append");
        assert_eq!(s.seal_window(S, 0, &[]).expect("seal"), Some(root));
        assert_eq!(s.take_changed(), change(true, true));
        // A record heard here later: records and receipts change.
        assert!(s.seal_window(S, 0, &[rec(3, 30, 3.0)]).expect("seal").is_some_and(|r| r != root));
        assert_eq!(s.take_changed(), change(true, true));
        let table = s.sealed(S, 0).expect("sealed").expect("window").table;
        assert_eq!(table.nodes.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["me", "p"]);
    }

    #[test]
    fn sealing_takes_live_records_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![rec(1, 10, 1.0)] }.encode()], &[], &[]).expect("append");
        let live = vec![rec(2, 20, 2.0), rec(9, window::SPAN_NS + 1, 9.0)]; // one in another window
        s.seal_window(S, 0, &live).expect("seal").expect("root");
        assert_eq!(s.window(S, 0).expect("window").iter().map(|r| r.record.seq).collect::<Vec<_>>(), [1, 2]);
    }

    /// Windows sealed together go into the index a slice at a time: every one of them is
    /// there afterwards, with its root, and reported changed once.
    #[test]
    fn many_windows_sealed_at_once_are_all_indexed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        let n = SEAL_GROUP as u64 + SEAL_SLICE as u64 * 3 + 5;
        let lives: Vec<Vec<StoredRecord>> = (0..n).map(|i| vec![rec(i, i * window::SPAN_NS + 1, i as f32)]).collect();
        let sealing: Vec<Sealing<'_>> =
            lives.iter().enumerate().map(|(i, live)| Sealing { stream: S, window_start: i as u64 * window::SPAN_NS, live }).collect();
        let roots = s.seal_windows(&sealing).expect("seal");
        for (i, root) in roots.iter().enumerate() {
            let root = root.expect("a root for every window");
            assert_eq!(s.sealed(S, i as u64 * window::SPAN_NS).expect("read").expect("sealed").root, root);
        }
        let (changed, overflow) = s.take_changed();
        assert_eq!((changed.len() as u64, overflow), (n, false));
        assert!(s.check().expect("check").problems.is_empty());
    }

    #[test]
    fn check_finds_a_sealed_window_whose_bytes_changed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = SledStore::open(dir.path(), 4).expect("open");
        s.append(&[Chunk { stream: S, window_start: 0, records: vec![rec(1, 10, 1.0), rec(2, 20, 2.0)] }.encode()], &[], &[]).expect("append");
        s.seal_window(S, 0, &[]).expect("seal");
        let key = window_key(S, 0, PART_SEALED, 0);
        let loc: Loc = codec::from_slice(&s.windows.get(key).expect("get").expect("sealed"), "t").expect("decodes");
        let mut v: SealedValue = codec::from_slice(&s.segments.read(loc).expect("read").expect("frame"), "t").expect("decodes");
        v.root[0] ^= 1;
        let moved = s.segments.append(&codec::to_vec(&v)).expect("append");
        s.windows.insert(key, codec::to_vec(&moved)).expect("raw insert");
        let report = s.check().expect("check");
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(report.problems[0].contains("root recomputes to"), "{:?}", report.problems);
    }
}
