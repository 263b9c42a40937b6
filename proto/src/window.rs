//! Windows: the records of one stream in one span of device time, and their canonical
//! blob.
//!
//! Window boundaries are a mesh-wide constant (every node must cut the same windows to
//! compare them), aligned to multiples of [`SPAN_NS`] in Unix device time.
//!
//! A window's **blob** is a deterministic function of its record *set*: the same set, in
//! any order, gives the same bytes on any machine, hence the same Merkle root. Layout
//! (format 1, all integers big-endian; `docs/protocol.md`, "Window blobs"):
//!
//! ```text
//! header (40 bytes)
//!   0  magic "TMWB"     4  format u8 = 1      5  dialect u8        6  slot size u16
//!   8  device u32      12  window start u64  20  record count u32  24  index length u32
//!  28  slot part length u32                  32  reserved, zero (8 bytes)
//! index part: count × 24 bytes, strictly increasing:
//!   device time − window start u64 | seq u64 | content tag [u8; 8]
//! slot part: count × slot size bytes, same order:
//!   the record's canonical content (`record::content`), zero-padded
//! ```
//!
//! The index part is small and comes first, so a node holding part of the set can fetch
//! and verify just the header and index, place its own records into their slots
//! ([`place`]), and repair the slots it lacks as erasures.

use crate::merkle::{self, Outboard};
use crate::record::{content, Identity, Record, StreamId};
use crate::wire::Dialect;

/// Device-time span of one window: 60 s (see `docs/protocol.md`, "Windows").
pub const SPAN_NS: u64 = 60_000_000_000;

/// Start of the window holding device time `t_ns`.
pub fn start(t_ns: u64) -> u64 {
    t_ns - t_ns % SPAN_NS
}

/// The window after the one starting at `start` (saturating at the end of time).
pub fn next(start: u64) -> u64 {
    start.saturating_add(SPAN_NS)
}

/// Leaf size of a blob's Merkle tree: 4 KiB. Separate 1 KiB leaves (BLAKE3's own chunk
/// size) hash at about a third of BLAKE3's speed, since each is hashed alone; 4 KiB leaves
/// reach about 2 GB/s here, with proofs and hash trees a quarter the size
/// (`docs/benchmarks.md`, "Merkle trees").
pub const LEAF_SIZE: u32 = 4096;

/// A blob's Merkle root (BEP 52 geometry over BLAKE3, [`LEAF_SIZE`] leaves).
pub type Root = [u8; 32];

/// The hash tree ("outboard") of a blob; its root is the window's root.
pub fn outboard(blob: &[u8]) -> Result<Outboard<merkle::Blake3>, merkle::Error> {
    Outboard::build(blob, LEAF_SIZE)
}

/// Magic bytes opening every blob.
pub const MAGIC: [u8; 4] = *b"TMWB";
/// Blob format this code writes and reads.
pub const FORMAT: u8 = 1;
/// Header length.
pub const HEADER_LEN: usize = 40;
/// One index entry: time offset u64, seq u64, tag.
pub const INDEX_ENTRY_LEN: usize = 24;
/// Slot sizes are rounded up to a multiple of this.
pub const SLOT_ALIGN: usize = 8;
/// Most records one window may hold (bounds what a hostile header can claim).
pub const MAX_RECORDS: u32 = 1 << 20;

/// Why records could not form a blob, or bytes are not a valid blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("blob too short: {len} bytes, need {need}")]
    TooShort { len: usize, need: usize },
    #[error("not a window blob (bad magic)")]
    Magic,
    #[error("blob format {0}, this build reads format {FORMAT}")]
    Format(u8),
    #[error("unknown dialect code {0}")]
    Dialect(u8),
    #[error("window start {0} is not a multiple of the window span")]
    Unaligned(u64),
    #[error("{0} records is more than a window may hold ({MAX_RECORDS})")]
    TooMany(u64),
    #[error("slot size {0} is not a positive multiple of {SLOT_ALIGN}")]
    SlotSize(usize),
    #[error("header says {expected} bytes, blob has {actual}")]
    Length { expected: usize, actual: usize },
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("index entry {0} is not after the one before it")]
    Unsorted(usize),
    #[error("index entry {0} lies outside the window")]
    OutsideWindow(usize),
    #[error("slot {index}: {source}")]
    Content { index: usize, source: content::Error },
    #[error("slot {0}: content does not match the index tag")]
    TagMismatch(usize),
    #[error("record {0:?} belongs to another stream or window")]
    Foreign(Identity),
    #[error("a record's content does not fit a slot (more than 65535 bytes)")]
    Oversize,
}

/// A blob's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    pub stream: StreamId,
    pub start_ns: u64,
    pub count: u32,
    pub slot_size: u16,
}

impl Header {
    pub fn index_len(&self) -> usize {
        self.count as usize * INDEX_ENTRY_LEN
    }
    pub fn slot_len(&self) -> usize {
        self.count as usize * usize::from(self.slot_size)
    }
    /// Bytes of header and index: what a partial holder fetches first.
    pub fn prefix_len(&self) -> usize {
        HEADER_LEN + self.index_len()
    }
    pub fn blob_len(&self) -> usize {
        self.prefix_len() + self.slot_len()
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&MAGIC);
        out.push(FORMAT);
        out.push(self.stream.dialect.code());
        out.extend_from_slice(&self.slot_size.to_be_bytes());
        out.extend_from_slice(&self.stream.device.to_be_bytes());
        out.extend_from_slice(&self.start_ns.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&(self.index_len() as u32).to_be_bytes());
        out.extend_from_slice(&(self.slot_len() as u32).to_be_bytes());
        out.extend_from_slice(&[0; 8]);
    }

    /// Parses and checks a header (the first [`HEADER_LEN`] bytes of `bytes`).
    pub fn parse(bytes: &[u8]) -> Result<Header, Error> {
        let b = bytes.get(..HEADER_LEN).ok_or(Error::TooShort { len: bytes.len(), need: HEADER_LEN })?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u64_at = |i: usize| (u64::from(u32_at(i)) << 32) | u64::from(u32_at(i + 4));
        if b[..4] != MAGIC {
            return Err(Error::Magic);
        }
        if b[4] != FORMAT {
            return Err(Error::Format(b[4]));
        }
        let dialect = Dialect::from_code(b[5]).ok_or(Error::Dialect(b[5]))?;
        let slot_size = u16::from_be_bytes([b[6], b[7]]);
        let header = Header {
            stream: StreamId::new(dialect, u32_at(8)),
            start_ns: u64_at(12),
            count: u32_at(20),
            slot_size,
        };
        if !header.start_ns.is_multiple_of(SPAN_NS) {
            return Err(Error::Unaligned(header.start_ns));
        }
        if header.count > MAX_RECORDS {
            return Err(Error::TooMany(u64::from(header.count)));
        }
        if slot_size == 0 || usize::from(slot_size) % SLOT_ALIGN != 0 {
            return Err(Error::SlotSize(usize::from(slot_size)));
        }
        let (index_len, slot_len) = (u32_at(24) as usize, u32_at(28) as usize);
        if index_len != header.index_len() {
            return Err(Error::Length { expected: header.index_len(), actual: index_len });
        }
        if slot_len != header.slot_len() {
            return Err(Error::Length { expected: header.slot_len(), actual: slot_len });
        }
        if b[32..40].iter().any(|x| *x != 0) {
            return Err(Error::Reserved);
        }
        Ok(header)
    }
}

/// One record's key within a window, as the index part lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IndexEntry {
    /// Device time minus the window start, ns.
    pub offset_ns: u64,
    pub seq: u64,
    pub tag: [u8; 8],
}

impl IndexEntry {
    fn of(record: &Record, start_ns: u64, tag: [u8; 8]) -> IndexEntry {
        IndexEntry { offset_ns: record.device_time_ns - start_ns, seq: record.seq, tag }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.offset_ns.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.tag);
    }

    fn parse(b: &[u8]) -> IndexEntry {
        let mut o = [0u8; 8];
        let mut s = [0u8; 8];
        let mut tag = [0u8; 8];
        o.copy_from_slice(&b[..8]);
        s.copy_from_slice(&b[8..16]);
        tag.copy_from_slice(&b[16..24]);
        IndexEntry { offset_ns: u64::from_be_bytes(o), seq: u64::from_be_bytes(s), tag }
    }
}

/// The canonical blob of `records`, all of `stream` and in the window starting at
/// `start_ns`. Order does not matter; identical records count once.
pub fn encode(stream: StreamId, start_ns: u64, records: &[Record]) -> Result<Vec<u8>, Error> {
    let mut rows: Vec<(IndexEntry, Vec<u8>)> = Vec::with_capacity(records.len());
    for r in records {
        if r.stream != stream || start(r.device_time_ns) != start_ns {
            return Err(Error::Foreign(r.identity()));
        }
        let bytes = r.content_bytes();
        rows.push((IndexEntry::of(r, start_ns, content::tag(&bytes)), bytes));
    }
    rows.sort_unstable_by_key(|r| r.0);
    rows.dedup_by(|a, b| a.0 == b.0);
    if rows.len() > MAX_RECORDS as usize {
        return Err(Error::TooMany(rows.len() as u64));
    }
    let longest = rows.iter().map(|r| r.1.len()).max().unwrap_or(1).max(1);
    let slot = longest.div_ceil(SLOT_ALIGN) * SLOT_ALIGN;
    let slot_size = u16::try_from(slot).map_err(|_| Error::Oversize)?;
    let header = Header { stream, start_ns, count: rows.len() as u32, slot_size };
    let mut out = Vec::with_capacity(header.blob_len());
    header.emit(&mut out);
    for (entry, _) in &rows {
        entry.emit(&mut out);
    }
    for (_, bytes) in &rows {
        out.extend_from_slice(bytes);
        out.resize(out.len() + slot - bytes.len(), 0);
    }
    Ok(out)
}

/// Header and index from the start of a blob (the rest may be absent): what a node
/// holding part of the window reads first. The index is checked for order and bounds.
pub fn index(prefix: &[u8]) -> Result<(Header, Vec<IndexEntry>), Error> {
    let header = Header::parse(prefix)?;
    let need = header.prefix_len();
    let part = prefix.get(HEADER_LEN..need).ok_or(Error::TooShort { len: prefix.len(), need })?;
    let mut entries = Vec::with_capacity(header.count as usize);
    for (i, chunk) in part.chunks_exact(INDEX_ENTRY_LEN).enumerate() {
        let e = IndexEntry::parse(chunk);
        if e.offset_ns >= SPAN_NS {
            return Err(Error::OutsideWindow(i));
        }
        if entries.last().is_some_and(|prev: &IndexEntry| *prev >= e) {
            return Err(Error::Unsorted(i));
        }
        entries.push(e);
    }
    Ok((header, entries))
}

/// Parses and fully validates a blob from anywhere (disk or peer): header, index order,
/// every slot's content and its tag. Returns the records in key order.
pub fn decode(blob: &[u8]) -> Result<(Header, Vec<Record>), Error> {
    let (header, entries) = index(blob)?;
    if blob.len() != header.blob_len() {
        return Err(Error::Length { expected: header.blob_len(), actual: blob.len() });
    }
    let slots = &blob[header.prefix_len()..];
    let mut records = Vec::with_capacity(entries.len());
    for (i, (e, slot)) in entries.iter().zip(slots.chunks_exact(usize::from(header.slot_size))).enumerate() {
        let (kind, timestamp_raw, readings) = content::decode(slot).map_err(|source| Error::Content { index: i, source })?;
        let record = Record {
            stream: header.stream,
            device_time_ns: header.start_ns + e.offset_ns,
            seq: e.seq,
            timestamp_raw,
            kind,
            readings,
        };
        if record.content_tag() != e.tag {
            return Err(Error::TagMismatch(i));
        }
        records.push(record);
    }
    Ok((header, records))
}

/// A partial holder's records placed into a window's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The slot part with the held slots filled and the others zero.
    pub slots: Vec<u8>,
    /// Which slots are filled.
    pub present: Vec<bool>,
}

impl Placement {
    pub fn missing(&self) -> usize {
        self.present.iter().filter(|p| !**p).count()
    }
}

/// Places `held` records into the layout given by a verified header and index. Records
/// the index does not list are ignored (the caller holds more than this blob).
pub fn place(header: &Header, entries: &[IndexEntry], held: &[Record]) -> Placement {
    let slot = usize::from(header.slot_size);
    let mut p = Placement { slots: vec![0; header.slot_len()], present: vec![false; entries.len()] };
    for r in held {
        if r.stream != header.stream || start(r.device_time_ns) != header.start_ns {
            continue;
        }
        let bytes = r.content_bytes();
        if bytes.len() > slot {
            continue;
        }
        let key = IndexEntry::of(r, header.start_ns, content::tag(&bytes));
        if let Ok(i) = entries.binary_search(&key) {
            p.slots[i * slot..i * slot + bytes.len()].copy_from_slice(&bytes);
            p.present[i] = true;
        }
    }
    p
}

/// Reassembles a blob from its verified prefix (header and index) and a slot part.
pub fn assemble(prefix: &[u8], slots: &[u8]) -> Result<Vec<u8>, Error> {
    let header = Header::parse(prefix)?;
    if prefix.len() < header.prefix_len() {
        return Err(Error::TooShort { len: prefix.len(), need: header.prefix_len() });
    }
    if slots.len() != header.slot_len() {
        return Err(Error::Length { expected: header.slot_len(), actual: slots.len() });
    }
    let mut blob = Vec::with_capacity(header.blob_len());
    blob.extend_from_slice(&prefix[..header.prefix_len()]);
    blob.extend_from_slice(slots);
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::record::{Kind, Readings, SensorCode};
    use proptest::prelude::*;

    const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 1001 };
    const W: u64 = 1_765_477_200_000_000_000 - 1_765_477_200_000_000_000 % SPAN_NS;

    fn rec(offset_ms: u64, seq: u64, kind: Kind, readings: Readings) -> Record {
        Record { stream: S, device_time_ns: W + offset_ms * 1_000_000, seq, timestamp_raw: offset_ms, kind, readings }
    }

    fn sample() -> Vec<Record> {
        vec![
            rec(0, 0, Kind::Init, Readings::None),
            rec(1000, 1, Kind::Data, Readings::Batch(vec![29.37, 23.53, 22.61, 22.04, 22.99])),
            rec(2000, 2, Kind::Heartbeat, Readings::None),
            rec(3000, 3, Kind::Data, Readings::Batch(vec![1.0])),
            rec(3000, 3, Kind::Data, Readings::Batch(vec![2.0])), // a conflict: same identity
        ]
    }

    #[test]
    fn golden_header_and_layout() {
        let blob = encode(S, W, &sample()).expect("encodes");
        let (h, entries) = index(&blob).expect("index");
        assert_eq!(&blob[..4], b"TMWB");
        assert_eq!((h.count, h.slot_size), (5, 32)); // 1 + 8 + 1 + 1 + 20 = 31 → 32
        assert_eq!(blob.len(), 40 + 5 * 24 + 5 * 32);
        assert_eq!(entries[1].offset_ns, 1_000_000_000);
        // Slot 1 holds the seed example's content, zero-padded.
        let slot1 = &blob[h.prefix_len() + 32..h.prefix_len() + 64];
        assert_eq!(hex::encode(slot1), "0100000000000003e8010541eaf5c341bc3d7141b4e14841b051ec41b7eb8500");
    }

    #[test]
    fn same_set_same_bytes_any_order() {
        let a = encode(S, W, &sample()).expect("encodes");
        let mut shuffled = sample();
        shuffled.reverse();
        shuffled.push(sample()[1].clone()); // a duplicate counts once
        assert_eq!(encode(S, W, &shuffled).expect("encodes"), a);
        let (_, back) = decode(&a).expect("decodes");
        assert_eq!(encode(S, W, &back).expect("encodes"), a);
    }

    #[test]
    fn foreign_records_are_refused() {
        let mut other = sample();
        other[0].device_time_ns = W + SPAN_NS;
        assert!(matches!(encode(S, W, &other), Err(Error::Foreign(_))));
        let mut dev = sample();
        dev[0].stream.device = 7;
        assert!(matches!(encode(S, W, &dev), Err(Error::Foreign(_))));
    }

    #[test]
    fn a_partial_holder_places_its_records() {
        let all = sample();
        let blob = encode(S, W, &all).expect("encodes");
        let (h, entries) = index(&blob[..100 + 24 * 5]).expect("index from the prefix alone");
        let held = vec![all[0].clone(), all[3].clone()];
        let p = place(&h, &entries, &held);
        assert_eq!(p.missing(), 3);
        let full = place(&h, &entries, &all);
        assert_eq!(full.missing(), 0);
        assert_eq!(assemble(&blob[..h.prefix_len()], &full.slots).expect("assembles"), blob);
        // The held slots match the real ones byte for byte; the others are zero.
        let slot = usize::from(h.slot_size);
        for (i, present) in p.present.iter().enumerate() {
            let real = &blob[h.prefix_len() + i * slot..h.prefix_len() + (i + 1) * slot];
            let placed = &p.slots[i * slot..(i + 1) * slot];
            if *present {
                assert_eq!(placed, real);
            } else {
                assert!(placed.iter().all(|b| *b == 0));
            }
        }
    }

    #[test]
    fn corruption_is_named() {
        let blob = encode(S, W, &sample()).expect("encodes");
        let (h, _) = index(&blob).expect("index");
        let mut b = blob.clone();
        b[0] = b'X';
        assert_eq!(decode(&b), Err(Error::Magic));
        let mut b = blob.clone();
        b[4] = 2;
        assert_eq!(decode(&b), Err(Error::Format(2)));
        // A time offset is not covered by the content tag: flipping one still in order is
        // another valid set (the Merkle root tells them apart), never the same set.
        let mut b = blob.clone();
        b[HEADER_LEN + INDEX_ENTRY_LEN + 7] ^= 1;
        let (h2, recs) = decode(&b).expect("another valid set");
        assert_ne!(encode(h2.stream, h2.start_ns, &recs).expect("encodes"), blob);
        let mut b = blob.clone();
        b[h.prefix_len() + 32 + 12] ^= 0x40; // a reading bit in slot 1
        assert_eq!(decode(&b), Err(Error::TagMismatch(1)));
        let mut b = blob.clone();
        b[h.prefix_len() + 32 + 31] = 1; // padding
        assert!(matches!(decode(&b), Err(Error::Content { index: 1, .. })));
        assert!(matches!(decode(&blob[..blob.len() - 1]), Err(Error::Length { .. })));
        let mut b = blob.clone();
        b[HEADER_LEN..HEADER_LEN + 24].copy_from_slice(&blob[HEADER_LEN + 24..HEADER_LEN + 48]);
        assert_eq!(decode(&b), Err(Error::Unsorted(1)));
    }

    fn arb_record() -> impl Strategy<Value = Record> {
        (0u64..60_000, 0u64..5, 0u8..3, proptest::collection::vec(any::<f32>(), 0..6), 1u8..4).prop_map(
            |(ms, seq, kind, vals, sensor)| {
                let kind = [Kind::Init, Kind::Data, Kind::Heartbeat][usize::from(kind)];
                let readings = match (kind, sensor) {
                    (Kind::Data, 1) => Readings::Batch(vals),
                    (Kind::Data, _) => Readings::Sensors(vals.into_iter().map(|v| (SensorCode(sensor), v)).collect()),
                    _ => Readings::None,
                };
                rec(ms, seq, kind, readings)
            },
        )
    }

    proptest! {
        #[test]
        fn round_trip_any_set_any_order(mut set in proptest::collection::vec(arb_record(), 0..40), seed: u64) {
            let blob = encode(S, W, &set).expect("encodes");
            let (_, back) = decode(&blob).expect("decodes");
            // Rotating the input changes nothing.
            let k = if set.is_empty() { 0 } else { (seed as usize) % set.len() };
            set.rotate_left(k);
            prop_assert_eq!(encode(S, W, &set).expect("encodes"), blob.clone());
            prop_assert_eq!(encode(S, W, &back).expect("encodes"), blob);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = decode(&bytes);
            let _ = index(&bytes);
        }

        #[test]
        fn any_bit_flip_is_caught(set in proptest::collection::vec(arb_record(), 1..20), at: usize, bit in 0u8..8) {
            let blob = encode(S, W, &set).expect("encodes");
            let mut b = blob.clone();
            let i = at % b.len();
            b[i] ^= 1 << bit;
            // Either rejected, or (a flip in a time offset or seq that keeps order) a
            // different but valid set — never the same set with other bytes.
            match decode(&b) {
                Err(_) => {}
                Ok((h, recs)) => prop_assert_ne!(encode(h.stream, h.start_ns, &recs).expect("encodes"), blob),
            }
        }
    }

    #[test]
    fn windows_tile_device_time() {
        assert_eq!(start(0), 0);
        assert_eq!(start(SPAN_NS - 1), 0);
        assert_eq!(start(SPAN_NS), SPAN_NS);
        assert_eq!(next(start(1_765_477_200_758_000_000)), 1_765_477_260_000_000_000);
        assert_eq!(next(start(u64::MAX)), u64::MAX);
    }
}
