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
    #[error("slot size {actual}, the records make it {canonical} (the longest content, rounded up to {SLOT_ALIGN})")]
    SlotSizeNotCanonical { actual: usize, canonical: usize },
}

/// The slot size of a blob whose longest record content is `longest` bytes.
fn slot_size_for(longest: usize) -> usize {
    longest.max(1).div_ceil(SLOT_ALIGN) * SLOT_ALIGN
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
    let slot = slot_size_for(rows.iter().map(|r| r.1.len()).max().unwrap_or(1));
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
/// every slot's content and its tag, and that the slot size is the one [`encode`] gives
/// these records (so a blob that decodes is the canonical blob of its set, and its root
/// the set's root). Returns the records in key order.
pub fn decode(blob: &[u8]) -> Result<(Header, Vec<Record>), Error> {
    let (header, entries) = index(blob)?;
    if blob.len() != header.blob_len() {
        return Err(Error::Length { expected: header.blob_len(), actual: blob.len() });
    }
    let slots = &blob[header.prefix_len()..];
    let mut records = Vec::with_capacity(entries.len());
    let mut longest = 0;
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
        let content = record.content_bytes();
        if content::tag(&content) != e.tag {
            return Err(Error::TagMismatch(i));
        }
        longest = longest.max(content.len());
        records.push(record);
    }
    let canonical = slot_size_for(longest);
    if usize::from(header.slot_size) != canonical {
        return Err(Error::SlotSizeNotCanonical { actual: usize::from(header.slot_size), canonical });
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

/// The blob's prefix (header and index part) for `header` and its sorted `entries`: what
/// a requester rebuilds from a compact index before checking the rebuilt blob's root.
pub fn prefix(header: &Header, entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.prefix_len());
    header.emit(&mut out);
    for e in entries {
        e.emit(&mut out);
    }
    out
}

/// The content tag of the record in a slot (content followed by zero padding): the tag a
/// requester fills into the index for a slot it rebuilt.
pub fn slot_tag(slot: &[u8]) -> Result<[u8; 8], content::Error> {
    let (kind, timestamp_raw, readings) = content::decode(slot)?;
    Ok(content::tag(&content::encode(kind, timestamp_raw, &readings)))
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

/// A compact, exact encoding of a window's records for storage: columns packed with
/// frame of reference and bit-packing (`crate::columns`), readings that are exact
/// decimals stored as scaled integers. It carries no content tags (they are recomputed)
/// and no padding, so it is a fraction of the canonical blob's size; the blob, and so the
/// root, is rebuilt from it exactly ([`encode`] of the decoded records).
///
/// ```text
/// version u8 = 1 | count varint | time unit exponent u8 (offsets in 10^e ns)
/// first offset varint, offset deltas column          (records in key order)
/// first seq varint, seq deltas column (biased)
/// first raw timestamp varint, raw residual column (biased): each raw
///   timestamp minus (the previous one + the offset delta in time units), which is 0
///   when the raw timestamp counts in the detected unit (IoTStream ms, TinyTelemetry s)
/// shapes: count varint, (kind u8, readings form u8, readings count u8)… sorted, and a
///   shape index column (an IoTStream window has three shapes: INIT, DATA×5, HEARTBEAT)
/// f32 values: scale u8 (decimal digits; 255 = raw bits) + column (biased)
/// sensor codes column
/// f64 values: scale u8 + column (biased) | keys: count varint, (len u8, bytes)…, key index column
/// ```
pub mod compact {
    use crate::columns::{pack, put_varint, Reader};
    use crate::record::{Kind, Readings, Record, SensorCode, StreamId};

    const VERSION: u8 = 1;
    const RAW: u8 = 255;
    const BIAS: u64 = 1 << 63;

    /// Why compact bytes did not decode.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum Error {
        #[error("compact window: {0}")]
        Columns(#[from] crate::columns::Error),
        #[error("compact window format {0}, this build reads 1")]
        Version(u8),
        #[error("compact window claims {0} records, more than a window may hold")]
        TooMany(u64),
        #[error("compact window: bad {0}")]
        Bad(&'static str),
    }

    fn signed(v: i64) -> u64 {
        (v as u64) ^ BIAS
    }
    fn unsigned(v: u64) -> i64 {
        (v ^ BIAS) as i64
    }
    fn kind_code(k: Kind) -> u64 {
        match k {
            Kind::Init => 0,
            Kind::Data => 1,
            Kind::Heartbeat => 2,
        }
    }

    /// The smallest number of decimal digits (up to `max`) that stores every value exactly
    /// as an integer below `limit`, or `None`.
    fn scale_of(values: &[f64], max: u8, limit: f64, same: impl Fn(f64, f64) -> bool) -> Option<u8> {
        (0..=max).find(|d| {
            let s = 10f64.powi(i32::from(*d));
            values.iter().all(|v| {
                let x = (v * s).round();
                // Checked along the decoder's own path (through the integer), so -0.0 and
                // anything else the integer cannot carry falls back to raw bits.
                v.is_finite() && x.abs() < limit && same((x as i64) as f64 / s, *v)
            })
        })
    }

    fn put_values(out: &mut Vec<u8>, values: &[f64], bits: &[u64], scale: Option<u8>) {
        match scale {
            Some(d) => {
                out.push(d);
                let s = 10f64.powi(i32::from(d));
                let ints: Vec<u64> = values.iter().map(|v| signed((v * s).round() as i64)).collect();
                pack(out, &ints);
            }
            None => {
                out.push(RAW);
                pack(out, bits);
            }
        }
    }

    fn get_values(r: &mut Reader<'_>, n: usize) -> Result<(Option<f64>, Vec<u64>), Error> {
        let d = r.u8()?;
        let col = r.unpack(n)?;
        if d == RAW {
            return Ok((None, col));
        }
        if d > 15 {
            return Err(Error::Bad("decimal scale"));
        }
        Ok((Some(10f64.powi(i32::from(d))), col))
    }

    fn deltas(out: &mut Vec<u8>, values: &[u64]) {
        put_varint(out, values.first().copied().unwrap_or(0));
        let d: Vec<u64> = values.windows(2).map(|w| signed(w[1].wrapping_sub(w[0]) as i64)).collect();
        pack(out, &d);
    }

    fn undeltas(r: &mut Reader<'_>, n: usize) -> Result<Vec<u64>, Error> {
        let first = r.varint()?;
        let d = r.unpack(n.saturating_sub(1))?;
        let mut out = Vec::with_capacity(n);
        if n > 0 {
            out.push(first);
        }
        for x in d {
            let prev = *out.last().unwrap_or(&first);
            out.push(prev.wrapping_add(unsigned(x) as u64));
        }
        Ok(out)
    }

    /// Encodes records of one window, given in key order (as [`super::decode`] returns
    /// them), relative to the window start.
    pub fn encode(start_ns: u64, records: &[Record]) -> Vec<u8> {
        let mut out = vec![VERSION];
        put_varint(&mut out, records.len() as u64);
        let offsets: Vec<u64> = records.iter().map(|r| r.device_time_ns.wrapping_sub(start_ns)).collect();
        let e = (0..=9u32).rev().find(|e| offsets.iter().all(|o| o % 10u64.pow(*e) == 0)).unwrap_or(0);
        out.push(e as u8);
        let unit = 10u64.pow(e);
        deltas(&mut out, &offsets.iter().map(|o| o / unit).collect::<Vec<_>>());
        deltas(&mut out, &records.iter().map(|r| r.seq).collect::<Vec<_>>());
        let offsets_u: Vec<u64> = offsets.iter().map(|o| o / unit).collect();
        put_varint(&mut out, records.first().map_or(0, |r| r.timestamp_raw));
        let residuals: Vec<u64> = (1..records.len())
            .map(|i| {
                let predicted = records[i - 1].timestamp_raw.wrapping_add(offsets_u[i].wrapping_sub(offsets_u[i - 1]));
                signed(records[i].timestamp_raw.wrapping_sub(predicted) as i64)
            })
            .collect();
        pack(&mut out, &residuals);

        let (mut forms, mut counts) = (Vec::new(), Vec::new());
        let (mut f32s, mut sensors, mut f64s, mut keys) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for r in records {
            let (form, n) = match &r.readings {
                Readings::None => (0, 0),
                Readings::Batch(v) => {
                    f32s.extend(v);
                    (1, v.len())
                }
                Readings::Sensors(v) => {
                    for (s, x) in v {
                        sensors.push(u64::from(s.0));
                        f32s.push(*x);
                    }
                    (2, v.len())
                }
                Readings::Pairs(v) => {
                    for (k, x) in v {
                        keys.push(k.as_str());
                        f64s.push(*x);
                    }
                    (3, v.len())
                }
            };
            forms.push(form);
            counts.push(n as u64);
        }
        let shape: Vec<(u64, u64, u64)> =
            records.iter().zip(forms.iter().zip(&counts)).map(|(r, (f, c))| (kind_code(r.kind), *f, *c)).collect();
        let mut shapes = shape.clone();
        shapes.sort_unstable();
        shapes.dedup();
        put_varint(&mut out, shapes.len() as u64);
        for (k, f, c) in &shapes {
            out.extend_from_slice(&[*k as u8, *f as u8, *c as u8]);
        }
        pack(&mut out, &shape.iter().map(|s| shapes.binary_search(s).unwrap_or(0) as u64).collect::<Vec<_>>());
        let f32_wide: Vec<f64> = f32s.iter().map(|v| f64::from(*v)).collect();
        let f32_scale = scale_of(&f32_wide, 6, 2f64.powi(31), |a, b| (a as f32).to_bits() == (b as f32).to_bits());
        put_values(&mut out, &f32_wide, &f32s.iter().map(|v| u64::from(v.to_bits())).collect::<Vec<_>>(), f32_scale);
        pack(&mut out, &sensors);
        let f64_scale = scale_of(&f64s, 9, 2f64.powi(53), |a, b| a.to_bits() == b.to_bits());
        put_values(&mut out, &f64s, &f64s.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), f64_scale);
        let mut dict: Vec<&str> = keys.clone();
        dict.sort_unstable();
        dict.dedup();
        put_varint(&mut out, dict.len() as u64);
        for k in &dict {
            let k = &k.as_bytes()[..k.len().min(255)];
            out.push(k.len() as u8);
            out.extend_from_slice(k);
        }
        pack(&mut out, &keys.iter().map(|k| dict.binary_search(k).unwrap_or(0) as u64).collect::<Vec<_>>());
        out
    }

    /// Decodes records written by [`encode`] for `stream`'s window at `start_ns`. A record
    /// whose time falls outside that window is an error ([`Error::Bad`]`("time")`). The
    /// records come back in the order written, which is not checked: key order needs each
    /// record's content tag, which the caller computes anyway (the node's store refuses a
    /// sealed value out of key order).
    pub fn decode(stream: StreamId, start_ns: u64, bytes: &[u8]) -> Result<Vec<Record>, Error> {
        let mut r = Reader::new(bytes);
        let v = r.u8()?;
        if v != VERSION {
            return Err(Error::Version(v));
        }
        let n64 = r.varint()?;
        if n64 > u64::from(super::MAX_RECORDS) {
            return Err(Error::TooMany(n64));
        }
        let n = n64 as usize;
        let e = r.u8()?;
        if e > 9 {
            return Err(Error::Bad("time unit"));
        }
        let unit = 10u64.pow(u32::from(e));
        let offsets = undeltas(&mut r, n)?;
        let seqs = undeltas(&mut r, n)?;
        let first_raw = r.varint()?;
        let residuals = r.unpack(n.saturating_sub(1))?;
        let mut raws: Vec<u64> = Vec::with_capacity(n);
        for i in 0..n {
            raws.push(match i {
                0 => first_raw,
                _ => raws[i - 1]
                    .wrapping_add(offsets[i].wrapping_sub(offsets[i - 1]))
                    .wrapping_add(unsigned(residuals[i - 1]) as u64),
            });
        }
        let nshapes = r.varint()?;
        if nshapes > 3 * 4 * 256 || (n == 0 && nshapes > 0) {
            return Err(Error::Bad("shape count"));
        }
        let mut shapes = Vec::with_capacity(nshapes as usize);
        for _ in 0..nshapes {
            let s = r.take(3)?;
            shapes.push((u64::from(s[0]), u64::from(s[1]), u64::from(s[2])));
        }
        let index = r.unpack(n)?;
        let mut kinds = Vec::with_capacity(n);
        let mut forms = Vec::with_capacity(n);
        let mut counts = Vec::with_capacity(n);
        for i in index {
            let (k, f, c) = *shapes.get(i as usize).ok_or(Error::Bad("shape index"))?;
            kinds.push(k);
            forms.push(f);
            counts.push(c);
        }
        let (mut n32, mut nsensor, mut n64v) = (0usize, 0usize, 0usize);
        for (f, c) in forms.iter().zip(&counts) {
            let c = usize::try_from(*c).map_err(|_| Error::Bad("reading count"))?;
            if c > 255 {
                return Err(Error::Bad("reading count"));
            }
            match f {
                0 if c == 0 => {}
                1 => n32 += c,
                2 => {
                    n32 += c;
                    nsensor += c;
                }
                3 => n64v += c,
                _ => return Err(Error::Bad("readings form")),
            }
        }
        let (s32, v32) = get_values(&mut r, n32)?;
        let sensors = r.unpack(nsensor)?;
        let (s64, v64) = get_values(&mut r, n64v)?;
        let nkeys = r.varint()?;
        if nkeys > n64v as u64 {
            return Err(Error::Bad("key count"));
        }
        let mut dict = Vec::with_capacity(nkeys as usize);
        for _ in 0..nkeys {
            let len = r.u8()?;
            let k = std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| Error::Bad("key"))?;
            dict.push(k.to_owned());
        }
        let key_index = r.unpack(n64v)?;
        if !r.is_empty() {
            return Err(Error::Bad("trailing bytes"));
        }

        let f32_at = |i: usize| -> Result<f32, Error> {
            let x = v32[i];
            Ok(match s32 {
                Some(s) => (unsigned(x) as f64 / s) as f32,
                None => f32::from_bits(u32::try_from(x).map_err(|_| Error::Bad("f32 bits"))?),
            })
        };
        let f64_at = |i: usize| -> f64 {
            match s64 {
                Some(s) => unsigned(v64[i]) as f64 / s,
                None => f64::from_bits(v64[i]),
            }
        };
        let (mut i32_, mut is, mut i64_) = (0usize, 0usize, 0usize);
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let c = counts[i] as usize;
            let readings = match forms[i] {
                1 => Readings::Batch((0..c).map(|j| f32_at(i32_ + j)).collect::<Result<_, _>>()?),
                2 => Readings::Sensors(
                    (0..c)
                        .map(|j| Ok((SensorCode(u8::try_from(sensors[is + j]).map_err(|_| Error::Bad("sensor"))?), f32_at(i32_ + j)?)))
                        .collect::<Result<_, Error>>()?,
                ),
                3 => Readings::Pairs(
                    (0..c)
                        .map(|j| {
                            let k = dict.get(key_index[i64_ + j] as usize).ok_or(Error::Bad("key index"))?;
                            Ok((k.clone(), f64_at(i64_ + j)))
                        })
                        .collect::<Result<_, Error>>()?,
                ),
                _ => Readings::None,
            };
            match forms[i] {
                1 => i32_ += c,
                2 => {
                    i32_ += c;
                    is += c;
                }
                3 => i64_ += c,
                _ => {}
            }
            let kind = match kinds[i] {
                0 => Kind::Init,
                1 => Kind::Data,
                2 => Kind::Heartbeat,
                _ => return Err(Error::Bad("kind")),
            };
            let offset = offsets[i].checked_mul(unit).filter(|o| *o < super::SPAN_NS).ok_or(Error::Bad("time"))?;
            out.push(Record {
                stream,
                device_time_ns: start_ns.checked_add(offset).ok_or(Error::Bad("time"))?,
                seq: seqs[i],
                timestamp_raw: raws[i],
                kind,
                readings,
            });
        }
        Ok(out)
    }
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

    /// Found by the `window` fuzz target: a blob whose slots are wider than its longest
    /// record decoded, although its records encode to other bytes (another root for the
    /// same set). An empty window with 4104-byte slots was the first.
    #[test]
    fn a_blob_with_wider_slots_than_its_records_need_is_refused() {
        let empty = hex::decode(concat!(
            "544d5742010310080000000118803c28d50d2000", // magic, format 1, secure, slots of 4104, device 1, start
            "0000000000000000000000000000000000000000", // no records, no index, no slots, reserved
        ))
        .expect("hex");
        assert_eq!(decode(&empty), Err(Error::SlotSizeNotCanonical { actual: 4104, canonical: 8 }));
        let mut canonical = empty.clone();
        canonical[6..8].copy_from_slice(&8u16.to_be_bytes());
        assert!(decode(&canonical).is_ok());
        // The sample's 32-byte slots widened to 40: index unchanged, each slot zero-padded.
        let blob = encode(S, W, &sample()).expect("encodes");
        let (h, _) = index(&blob).expect("index");
        let mut wide = blob[..h.prefix_len()].to_vec();
        wide[6..8].copy_from_slice(&40u16.to_be_bytes());
        wide[28..32].copy_from_slice(&(40 * h.count).to_be_bytes());
        for slot in blob[h.prefix_len()..].chunks_exact(32) {
            wide.extend_from_slice(slot);
            wide.extend_from_slice(&[0; 8]);
        }
        assert_eq!(decode(&wide), Err(Error::SlotSizeNotCanonical { actual: 40, canonical: 32 }));
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
    fn compact_is_exact_and_small() {
        let all = sample();
        let blob = encode(S, W, &all).expect("encodes");
        let (_, sorted) = decode(&blob).expect("decodes");
        let c = compact::encode(W, &sorted);
        let back = compact::decode(S, W, &c).expect("decodes");
        assert_eq!(encode(S, W, &back).expect("encodes"), blob, "the blob rebuilds exactly");
        assert!(c.len() * 3 < blob.len(), "{} compact bytes for a {}-byte blob", c.len(), blob.len());
        assert!(compact::decode(S, W, &c[..c.len() - 1]).is_err());
        let mut bad = c.clone();
        bad[0] = 9;
        assert_eq!(compact::decode(S, W, &bad), Err(compact::Error::Version(9)));
    }

    /// Found by the `window_compact` fuzz target: compact bytes whose first time offset is
    /// 1,389 s decoded into a record of no blob (`encode` then refused it as foreign).
    #[test]
    fn compact_records_outside_the_window_are_refused() {
        let found = hex::decode("010106dfe8d40000000000000000000102000000000000000000000000000000").expect("hex");
        assert_eq!(compact::decode(S, W, &found), Err(compact::Error::Bad("time")));
        let inside = rec(59_999, 1, Kind::Heartbeat, Readings::None);
        assert!(compact::decode(S, W, &compact::encode(W, std::slice::from_ref(&inside))).is_ok());
        let outside = Record { device_time_ns: W + SPAN_NS, ..inside };
        assert_eq!(compact::decode(S, W, &compact::encode(W, &[outside])), Err(compact::Error::Bad("time")));
    }

    fn arb_any_record() -> impl Strategy<Value = Record> {
        let readings = prop_oneof![
            Just(Readings::None),
            proptest::collection::vec(any::<f32>(), 0..6).prop_map(Readings::Batch),
            proptest::collection::vec((0..3000i32).prop_map(|x| x as f32 / 100.0), 0..6).prop_map(Readings::Batch),
            proptest::collection::vec((1u8..4, any::<f32>()), 0..6)
                .prop_map(|v| Readings::Sensors(v.into_iter().map(|(s, x)| (SensorCode(s), x)).collect())),
            proptest::collection::vec(("[A-Z]{1,4}", any::<f64>()), 0..4).prop_map(Readings::Pairs),
            proptest::collection::vec(("[A-Z]{1,4}", (0..100_000i64).prop_map(|x| x as f64 / 10.0)), 0..4).prop_map(Readings::Pairs),
        ];
        (0u64..SPAN_NS, any::<u64>(), 0u8..3, any::<u64>(), readings).prop_map(|(t, seq, kind, raw, readings)| Record {
            stream: S,
            device_time_ns: W + t,
            seq,
            timestamp_raw: raw,
            kind: [Kind::Init, Kind::Data, Kind::Heartbeat][usize::from(kind)],
            readings,
        })
    }

    proptest! {
        #[test]
        fn compact_round_trips_any_window(set in proptest::collection::vec(arb_any_record(), 0..30)) {
            let blob = encode(S, W, &set).expect("encodes");
            let (_, sorted) = decode(&blob).expect("decodes");
            let back = compact::decode(S, W, &compact::encode(W, &sorted)).expect("decodes");
            prop_assert_eq!(encode(S, W, &back).expect("encodes"), blob);
        }

        #[test]
        fn compact_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = compact::decode(S, W, &bytes);
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
