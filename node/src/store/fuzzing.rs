//! The store's decoders and encoders of what it keeps on disk, for the fuzz targets
//! (`node/fuzz/`, properties in `node/fuzz/check.rs`) and their corpus test
//! (`node/tests/fuzz_corpus.rs`). Not an API: thin public wrappers over the private
//! functions of [`super`], and a pure copy of the file reader `Segments::read`, which works
//! on files and here on bytes in memory (the write-ahead log's readers on bytes are its own:
//! `wal::read_segment`, `wal::read_legacy`). The corpus test checks the copy against a real
//! store's files. Nothing here is used by the node.

use telemesh_proto::mesh::Table;
use telemesh_proto::record::{codec, Record, StreamId};
use telemesh_proto::window::{self, Root};

use super::segment::Loc;
use super::wal::{self, FRAME_HEADER};
use super::{SealedValue, StoredRecord};

/// A sealed window's value (`SealedValue`), its fields public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedFields {
    pub root: Root,
    pub records: Vec<u8>,
    pub provenance: Vec<u8>,
    pub heard: Table,
    pub outboard: Option<Vec<u8>>,
    pub count: u32,
    pub slot_size: u16,
    pub digest: [u8; 8],
}

impl From<SealedValue> for SealedFields {
    fn from(v: SealedValue) -> SealedFields {
        let SealedValue { root, records, provenance, heard, outboard, count, slot_size, digest } = v;
        SealedFields { root, records, provenance, heard, outboard, count, slot_size, digest }
    }
}

/// A chunk's records, as the store reads a chunk (`decode_chunk`).
pub fn decode_chunk(stream: StreamId, bytes: &[u8]) -> Option<Vec<StoredRecord>> {
    super::decode_chunk(stream, bytes)
}

/// A chunk's value, as the store writes it (`encode_chunk`).
pub fn encode_chunk(records: &[StoredRecord]) -> Vec<u8> {
    super::encode_chunk(records)
}

/// A sealed window's value and its records, as the store reads them (`decode_sealed`).
pub fn decode_sealed(stream: StreamId, window_start: u64, bytes: &[u8]) -> Option<(SealedFields, Vec<StoredRecord>)> {
    super::decode_sealed(stream, window_start, bytes).map(|(v, records)| (v.into(), records))
}

/// The value alone, as the store reads a summary (`read_summary`).
pub fn decode_sealed_value(bytes: &[u8]) -> Option<SealedFields> {
    codec::from_slice::<SealedValue>(bytes, "sealed window").ok().map(Into::into)
}

/// `fields` encoded as the store encodes a sealed value.
pub fn encode_sealed(fields: &SealedFields) -> Vec<u8> {
    let f = fields.clone();
    let value = SealedValue {
        root: f.root,
        records: f.records,
        provenance: f.provenance,
        heard: f.heard,
        outboard: f.outboard,
        count: f.count,
        slot_size: f.slot_size,
        digest: f.digest,
    };
    codec::to_vec(&value)
}

/// The sealed value the store writes for `records` (merged, in key order) of a window, as
/// node `me`: `rebuild`, then `SledStore::prepare`'s value (same fields, same order).
/// `None` where the store writes nothing (the records do not form a window blob).
pub fn seal(stream: StreamId, window_start: u64, records: &[StoredRecord], me: &str) -> Option<Vec<u8>> {
    let (blob, tree) = super::rebuild(stream, window_start, records)?;
    let sorted: Vec<Record> = records.iter().map(|r| r.record.clone()).collect();
    let value = SealedValue {
        root: tree.root(),
        records: window::compact::encode(window_start, &sorted),
        provenance: super::pack_provenance(records),
        heard: super::others(records),
        outboard: (blob.len() > super::OUTBOARD_KEPT_OVER).then(|| tree.to_bytes()),
        count: records.len() as u32,
        slot_size: u16::try_from(
            (blob.len() - window::HEADER_LEN - records.len() * window::INDEX_ENTRY_LEN)
                .checked_div(records.len())
                .unwrap_or(0),
        )
        .ok()?,
        digest: super::table(records, me).digest(),
    };
    Some(codec::to_vec(&value))
}

/// A sealed window's location, as the store reads its index entry.
pub fn decode_loc(bytes: &[u8]) -> Option<Loc> {
    codec::from_slice::<Loc>(bytes, "sealed window location").ok()
}

/// The payload at `loc` in a sealed segment file's bytes, checked against its checksum;
/// `None` if missing or damaged: `Segments::read` on bytes.
pub fn read_frame(file: &[u8], loc: Loc) -> Option<Vec<u8>> {
    if (loc.len as usize) < FRAME_HEADER {
        return None;
    }
    // As `Segments::read` does: nothing past the end of the file, else a buffer of the
    // frame's length filled from the file.
    if loc.offset.checked_add(u64::from(loc.len)).is_none_or(|end| end > file.len() as u64) {
        return None;
    }
    let mut buf = vec![0u8; loc.len as usize];
    let start = usize::try_from(loc.offset).ok()?;
    buf.copy_from_slice(file.get(start..start + loc.len as usize)?);
    wal::unframe(&buf).filter(|(_, n)| *n == buf.len()).map(|(p, _)| p.to_vec())
}
