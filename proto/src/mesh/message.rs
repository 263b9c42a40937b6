//! The mesh's messages and their bytes (`docs/protocol.md`, "Mesh").
//!
//! Gossip carries [`Announce`]; the repair protocol is one [`Request`] answered by one
//! [`Response`]. All are bincode 2 (standard configuration) behind [`encode`]/[`decode`],
//! which refuse anything over [`MAX_MESSAGE`] before allocating for it, and every decoded
//! message is checked ([`Summary::check`], [`IndexPart::entries`]) before use.

use serde::{Deserialize, Serialize};

use super::{Table, WindowId};
use crate::columns::{self, put_varint, unzigzag, zigzag};
use crate::repair::Layout;
use crate::window::{self, IndexEntry, Root};

/// Largest message of the repair protocol, either way.
pub const MAX_MESSAGE: usize = 4 << 20;
/// Largest gossip message (gossipsub's default limit is 64 KiB).
pub const MAX_GOSSIP: usize = 60 << 10;
/// Summaries per announcement: at most about 70 bytes each, so a full one stays under
/// [`MAX_GOSSIP`].
pub const MAX_ANNOUNCE: usize = 800;
/// Largest compact index sent in an announcement; a bigger one (a long window with
/// irregular gaps) is left out, and receivers ask for it when they need it.
pub const MAX_ANNOUNCED_INDEX: usize = 8 << 10;
/// Stream digests or window summaries per page of the summary exchange.
pub const MAX_PAGE: usize = 800;

/// What a node says about one window it holds: equal roots, equal record sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Summary {
    pub window: WindowId,
    pub root: Root,
    /// Records in the set.
    pub count: u32,
    /// The blob's slot size (with `count`, it gives the blob's length).
    pub slot_size: u16,
    /// Digest of the holder's provenance table ([`Table::digest`]).
    pub provenance: [u8; 8],
}

impl Summary {
    /// Length of the window's canonical blob.
    pub fn blob_len(&self) -> usize {
        self.header().blob_len()
    }

    pub fn header(&self) -> window::Header {
        window::Header { stream: self.window.stream, start_ns: self.window.start, count: self.count, slot_size: self.slot_size }
    }

    /// Whether the summary describes a window this node could hold: aligned, at least one
    /// record and at most [`window::MAX_RECORDS`], slot size a non-zero multiple of 8.
    pub fn check(&self) -> bool {
        self.window.start.is_multiple_of(window::SPAN_NS)
            && self.count > 0
            && self.count <= window::MAX_RECORDS
            && self.slot_size > 0
            && usize::from(self.slot_size) % window::SLOT_ALIGN == 0
    }
}

/// A digest of everything a node holds of one stream ([`super::stream_digest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamDigest {
    pub stream: crate::record::StreamId,
    pub windows: u32,
    pub digest: [u8; 16],
}

/// Gossip: windows whose record set or provenance changed at the sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announce {
    pub windows: Vec<Summary>,
    /// Empty, or one per window: its compact index ([`IndexPart::Compact`]), so that a
    /// receiver knows the sender's record set without asking for it. `None` where it did
    /// not fit the message. Checked like an `Index` response ([`IndexPart::entries`])
    /// before use; one that fails is dropped and counted, the summary still counts.
    pub indexes: Vec<Option<IndexPart>>,
    /// Empty, or one per window: the sender's own row of the window's provenance table —
    /// which of the announced root's records it received itself, and proved ([`Row`]).
    /// The message is signed by its author, so this is the author's own statement; the
    /// receivers build their tables from these rows rather than pulling whole tables.
    pub rows: Vec<Row>,
    /// What a window's coordinator relays: the rows of the other nodes it learnt, by
    /// member index (`docs/protocol.md`, "Coordinators").
    pub others: Option<Others>,
    /// The author's signature over its claims — the windows with its own rows
    /// ([`super::statement::to_sign`]); empty if not [`Announce::sign`]ed.
    pub signature: Vec<u8>,
}

/// Rows of other nodes, one [`OtherRows`] per announced window, naming their nodes by
/// index into the member list whose [`super::Members::digest`] is `members`. A receiver
/// whose list differs ignores them (the summary exchange brings its tables later).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Others {
    pub members: [u8; 8],
    pub rows: Vec<OtherRows>,
}

/// Longest member bitmap an [`OtherRows`] carries (8,192 members).
pub const MAX_MEMBER_BITMAP: usize = 1024;

/// The rows of one window's other nodes: which members they are — a bitmap over the
/// member list, bit `i` of byte `i / 8`, least significant first — and each one's row, in
/// member order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OtherRows {
    pub nodes: Vec<u8>,
    pub rows: Vec<Row>,
}

impl OtherRows {
    /// From (member index, row) pairs, in any order; a member listed twice keeps its
    /// first row.
    pub fn new(mut list: Vec<(u32, Row)>) -> OtherRows {
        list.sort_by_key(|(m, _)| *m);
        list.dedup_by_key(|(m, _)| *m);
        let mut nodes = vec![0u8; list.last().map_or(0, |(m, _)| *m as usize / 8 + 1)];
        for (m, _) in &list {
            nodes[*m as usize / 8] |= 1 << (m % 8);
        }
        OtherRows { nodes, rows: list.into_iter().map(|(_, r)| r).collect() }
    }

    /// The (member index, row) pairs, if the bitmap names as many members as there are
    /// rows.
    pub fn list(&self) -> Option<Vec<(u32, &Row)>> {
        let members = (0..self.nodes.len() * 8).filter(|i| self.nodes[i / 8] >> (i % 8) & 1 == 1).map(|i| i as u32);
        let list: Vec<(u32, &Row)> = members.zip(&self.rows).collect();
        (list.len() == self.rows.len() && self.nodes.iter().map(|b| b.count_ones() as usize).sum::<usize>() == self.rows.len())
            .then_some(list)
    }
}

/// A node's row of a window's provenance table as its announcement carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Row {
    /// It received none of the records itself (it holds them by repair).
    None,
    /// It received every record itself, and proved none: the common case at a seal.
    All,
    /// A [`Table`] row: heard bitmap, optionally followed by the proved one.
    Bits(Vec<u8>),
    /// It received every record but these (their places in key order, increasing), and
    /// proved none: shorter than a bitmap when a site misses a few records.
    Missing(Vec<u32>),
}

impl Row {
    /// The short form of a table row over `count` records.
    pub fn of(bits: Option<&[u8]>, count: usize) -> Row {
        let len = count.div_ceil(8);
        match bits {
            None => Row::None,
            Some(b) if b.len() == len => {
                let missing: Vec<u32> = (0..count).filter(|i| b[i / 8] >> (i % 8) & 1 == 0).map(|i| i as u32).collect();
                if missing.is_empty() {
                    Row::All
                } else if encode(&missing).len() < b.len() + 1 {
                    Row::Missing(missing)
                } else {
                    Row::Bits(b.to_vec())
                }
            }
            Some(b) => Row::Bits(b.to_vec()),
        }
    }

    /// The table row over `count` records (`None`: no row), checked: a one-row table of
    /// it must fit the window.
    pub fn bits(&self, count: usize) -> Option<Vec<u8>> {
        let bits = match self {
            Row::None => return None,
            Row::All => {
                let mut b = vec![0xff; count.div_ceil(8)];
                if !count.is_multiple_of(8) {
                    if let Some(last) = b.last_mut() {
                        *last = (1 << (count % 8)) - 1;
                    }
                }
                b
            }
            Row::Bits(b) => b.clone(),
            Row::Missing(missing) => {
                let mut b = Row::All.bits(count)?;
                let mut last = None;
                for &i in missing {
                    if last.is_some_and(|l| i <= l) || i as usize >= count {
                        return None;
                    }
                    last = Some(i);
                    b[i as usize / 8] &= !(1 << (i % 8));
                }
                b
            }
        };
        let fits = Table { nodes: vec![("x".to_owned(), bits.clone())] }.fits(count);
        (fits && bits.iter().any(|x| *x != 0)).then_some(bits)
    }
}

/// One window as an announcement carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub summary: Summary,
    pub index: Option<IndexPart>,
    pub row: Row,
    /// Rows of other nodes by member index (a coordinator's announcement), or empty.
    pub others: Vec<(u32, Row)>,
}

impl Announce {
    /// Signs the message's claims with `sign` (the author's key over the bytes given).
    pub fn sign(&mut self, sign: impl FnOnce(&[u8]) -> Vec<u8>) {
        self.signature = sign(&super::statement::to_sign(self));
    }

    /// Whether the author signed its claims (an unsigned message's rows are only the word
    /// of the peer that sent it).
    pub fn signed(&self) -> bool {
        !self.signature.is_empty()
    }

    /// Whether `verify(signed bytes, signature)` holds for the message's claims.
    pub fn verify(&self, verify: impl FnOnce(&[u8], &[u8]) -> bool) -> bool {
        self.signature.len() <= super::statement::MAX_SIGNATURE && verify(&super::statement::to_sign(self), &self.signature)
    }

    /// The index announced with window `i`, if any.
    pub fn index(&self, i: usize) -> Option<&IndexPart> {
        self.indexes.get(i).and_then(Option::as_ref)
    }

    /// The sender's row of window `i`, checked against its count, if any.
    pub fn row(&self, i: usize) -> Option<Vec<u8>> {
        let count = self.windows.get(i)?.count as usize;
        self.rows.get(i)?.bits(count)
    }

    /// The other nodes' rows of window `i` (by member index, checked against its count)
    /// if the sender's member list has digest `members`.
    pub fn others(&self, i: usize, members: [u8; 8]) -> Vec<(u32, Vec<u8>)> {
        let (Some(o), Some(s)) = (&self.others, self.windows.get(i)) else { return Vec::new() };
        if o.members != members {
            return Vec::new();
        }
        let count = s.count as usize;
        let list = o.rows.get(i).and_then(OtherRows::list).unwrap_or_default();
        list.into_iter().filter_map(|(m, r)| Some((m, r.bits(count)?))).collect()
    }

    /// Whether the message is well-formed: at most [`MAX_ANNOUNCE`] summaries, each
    /// valid, no index list or one of the same length holding compact indexes only, and
    /// no row list or one of the same length.
    pub fn check(&self) -> bool {
        self.windows.len() <= MAX_ANNOUNCE
            && self.windows.iter().all(Summary::check)
            && (self.indexes.is_empty() || self.indexes.len() == self.windows.len())
            && self.indexes.iter().flatten().all(|p| matches!(p, IndexPart::Compact { .. }))
            && (self.rows.is_empty() || self.rows.len() == self.windows.len())
            && self.others.as_ref().is_none_or(|o| {
                o.rows.len() == self.windows.len()
                    && o.rows.iter().all(|r| {
                        r.nodes.len() <= MAX_MEMBER_BITMAP && r.rows.len() <= crate::mesh::MAX_TABLE_NODES && r.list().is_some()
                    })
            })
    }
}

/// A repair-protocol request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Summary exchange, top level: digests of every stream after `after`.
    Streams { after: Option<crate::record::StreamId> },
    /// Summary exchange, second level: one stream's window summaries after `after`.
    Windows { stream: crate::record::StreamId, after: Option<u64> },
    /// The index of `window` if its root is `root`: compact, or (`verified`) as the blob's
    /// leaves covering header and index with their Merkle proof. A request names the
    /// window as well as the root so that a holder finds it by its key, with no index of
    /// roots.
    Index { window: WindowId, root: Root, verified: bool },
    /// Repair symbols `start..start + count` of `window` if its root is `root`.
    Symbols { window: WindowId, root: Root, start: u32, count: u32 },
    /// The provenance table of `window` if its root is `root`.
    Provenance { window: WindowId, root: Root },
    /// Windows whose records or own receipts changed at the sender, offered to a
    /// coordinator of theirs (`docs/protocol.md`, "Coordinators"): summaries, indexes and
    /// the sender's rows, as an announcement carries them.
    Offer(Announce),
    /// The statements the responder keeps of `window` (`docs/protocol.md`, "Statements").
    Statements { window: WindowId },
}

/// A repair-protocol response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Streams { digests: Vec<StreamDigest>, more: bool },
    Windows { windows: Vec<Summary>, more: bool },
    Index(IndexPart),
    /// Symbols in their wire form (`proto::repair`), back to back.
    Symbols { data: Vec<u8> },
    Provenance { table: Table },
    /// The responder does not hold that root (any more).
    NotFound,
    /// The request was malformed or asked too much.
    Refused,
    /// An offer was taken.
    Accepted,
    /// Signed statements of one window, by author (at most [`super::MAX_TABLE_NODES`]).
    Statements(Vec<(String, super::statement::Statement)>),
}

/// A window's index as a holder sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IndexPart {
    /// Times and seqs as packed columns; content tags only where two entries share a
    /// (time, seq) — the requester takes the others from its own records, or from the
    /// slot once rebuilt. Not verifiable before the rebuilt blob's root is checked.
    Compact { count: u32, slot_size: u16, columns: Vec<u8>, tags: Vec<(u32, [u8; 8])> },
    /// The blob's leaves `0..n` that cover header and index, and their proof: verified
    /// against the root before anything else is done with them.
    Verified { leaves: Vec<u8>, proof: Vec<u8> },
}

/// Why a peer's message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("message does not decode: {0}")]
    Decode(String),
    #[error("message over {MAX_MESSAGE} bytes")]
    TooLarge,
    #[error("index columns: {0}")]
    Columns(#[from] columns::Error),
    #[error("index does not match the announced window: {0}")]
    Mismatch(&'static str),
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_MESSAGE>()
}

/// A message's bytes.
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Serialising plain data into a Vec cannot fail.
    bincode::serde::encode_to_vec(message, bincode::config::standard()).unwrap_or_default()
}

/// A message from a peer's bytes: bounded, never a panic; trailing bytes are refused.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    if bytes.len() > MAX_MESSAGE {
        return Err(Error::TooLarge);
    }
    match bincode::serde::decode_from_slice(bytes, config()) {
        Ok((v, used)) if used == bytes.len() => Ok(v),
        Ok(_) => Err(Error::Decode("trailing bytes".into())),
        Err(e) => Err(Error::Decode(e.to_string())),
    }
}

/// Announcements of `windows` with their compact indexes and the sender's rows, packed
/// greedily into as few gossip messages as fit [`MAX_GOSSIP`] and [`MAX_ANNOUNCE`]; a
/// window whose index is over [`MAX_ANNOUNCED_INDEX`] bytes is announced without it.
/// Other nodes' rows (a coordinator's) name them in the member list whose digest is
/// `members`.
/// Each message is signed with `sign` ([`Announce::sign`]).
pub fn encode_announces(windows: &[Announced], members: [u8; 8], sign: impl Fn(&[u8]) -> Vec<u8>) -> Vec<Vec<u8>> {
    let mut messages = pack_announces(windows, members);
    for m in &mut messages {
        m.sign(&sign);
    }
    messages.iter().map(encode).collect()
}

/// The announcements [`encode_announces`] encodes, unsigned (an offer wraps them).
pub fn pack_announces(windows: &[Announced], members: [u8; 8]) -> Vec<Announce> {
    // Bytes of an announcement: list lengths (varints, at most 3 bytes each here), the
    // member digest, the signature made after packing, and each summary,
    // `Option<IndexPart>`, row and other rows.
    let size = |a: &Announced| {
        encode(&a.summary).len() + encode(&a.index).len() + encode(&a.row).len() + encode(&a.others).len()
    };
    let mut out = Vec::new();
    let mut batch: Vec<Announced> = Vec::new();
    const FRAME: usize = 20 + 1 + super::statement::MAX_SIGNATURE;
    let mut used = FRAME;
    for a in windows {
        let index = a.index.as_ref().filter(|i| encode(*i).len() <= MAX_ANNOUNCED_INDEX);
        let item = Announced { summary: a.summary, index: index.cloned(), row: a.row.clone(), others: a.others.clone() };
        let len = size(&item);
        if !batch.is_empty() && (used + len > MAX_GOSSIP || batch.len() >= MAX_ANNOUNCE) {
            out.push(std::mem::take(&mut batch));
            used = FRAME;
        }
        used += len;
        batch.push(item);
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out.into_iter()
        .map(|b| {
            let relays = b.iter().any(|a| !a.others.is_empty());
            let mut m =
                Announce { windows: Vec::new(), indexes: Vec::new(), rows: Vec::new(), others: None, signature: Vec::new() };
            let mut others = Vec::new();
            for a in b {
                m.windows.push(a.summary);
                m.indexes.push(a.index);
                m.rows.push(a.row);
                others.push(OtherRows::new(a.others));
            }
            if relays {
                m.others = Some(Others { members, rows: others });
            }
            m
        })
        .filter(|m| encode(m).len() <= MAX_GOSSIP)
        .collect()
}

/// One index entry as the requester learns it: the tag is known only where the holder
/// sent it (or the index was verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub offset_ns: u64,
    pub seq: u64,
    pub tag: Option<[u8; 8]>,
}

impl IndexPart {
    /// The compact index of a blob's sorted `entries`:
    ///
    /// ```text
    /// first offset varint | first seq varint | time unit exponent u8 (offsets in 10^e ns)
    /// period varint (time units per seq step, the median)
    /// seq steps − 1, zigzag, patched column     (0 while no record is missing)
    /// time steps − period × seq steps, zigzag, patched column   (the sender's jitter)
    /// ```
    ///
    /// A sensor sending at a steady rate costs a few bits per record.
    pub fn compact(header: &window::Header, entries: &[IndexEntry]) -> IndexPart {
        let mut columns = Vec::new();
        put_varint(&mut columns, entries.first().map_or(0, |e| e.offset_ns));
        put_varint(&mut columns, entries.first().map_or(0, |e| e.seq));
        let exponent = (0..=9u32).rev().find(|e| entries.iter().all(|x| x.offset_ns % 10u64.pow(*e) == 0)).unwrap_or(0);
        let unit = 10u64.pow(exponent);
        let steps: Vec<(u64, i64)> =
            entries.windows(2).map(|w| ((w[1].offset_ns - w[0].offset_ns) / unit, w[1].seq.wrapping_sub(w[0].seq) as i64)).collect();
        let mut rates: Vec<u64> = steps.iter().filter(|(_, s)| *s > 0).map(|(t, s)| t / *s as u64).collect();
        rates.sort_unstable();
        let period = rates.get(rates.len() / 2).copied().unwrap_or(0);
        columns.push(exponent as u8);
        put_varint(&mut columns, period);
        let seqs: Vec<u64> = steps.iter().map(|(_, s)| zigzag(s.wrapping_sub(1))).collect();
        let times: Vec<u64> =
            steps.iter().map(|(t, s)| zigzag((*t as i64).wrapping_sub((period as i64).wrapping_mul(*s)))).collect();
        columns::pack_patched(&mut columns, &seqs);
        columns::pack_patched(&mut columns, &times);
        let same = |i: usize, j: usize| entries[i].offset_ns == entries[j].offset_ns && entries[i].seq == entries[j].seq;
        let tags = (0..entries.len())
            .filter(|&i| (i > 0 && same(i, i - 1)) || (i + 1 < entries.len() && same(i, i + 1)))
            .map(|i| (i as u32, entries[i].tag))
            .collect();
        IndexPart::Compact { count: header.count, slot_size: header.slot_size, columns, tags }
    }

    /// The verified index of `blob`, whose hash tree is `tree`.
    pub fn verified(blob: &[u8], tree: &crate::merkle::Outboard<crate::merkle::Blake3>) -> Option<IndexPart> {
        let header = window::Header::parse(blob).ok()?;
        let geometry = *tree.geometry();
        let leaves = geometry.chunks_covering(0..header.prefix_len() as u64);
        let bytes = geometry.range_bytes(&leaves).ok()?;
        let proof = tree.prove(leaves).ok()?;
        Some(IndexPart::Verified { leaves: blob.get(bytes.start as usize..bytes.end as usize)?.to_vec(), proof: proof.to_bytes() })
    }

    /// The entries of a compact index for the window `summary` announced, checked against
    /// it (count, slot size, order, offsets inside the window). A verified index is
    /// checked with [`verify`] instead.
    pub fn entries(&self, summary: &Summary) -> Result<Vec<Entry>, Error> {
        let IndexPart::Compact { count, slot_size, columns, tags } = self else {
            return Err(Error::Mismatch("not a compact index"));
        };
        if *count != summary.count || *slot_size != summary.slot_size {
            return Err(Error::Mismatch("count or slot size"));
        }
        let n = *count as usize;
        if n > Layout::MAX_SLOTS as usize || tags.len() > n {
            return Err(Error::Mismatch("count"));
        }
        let mut r = columns::Reader::new(columns);
        let (mut offset, mut seq) = (r.varint()?, r.varint()?);
        let exponent = r.u8()?;
        if exponent > 9 {
            return Err(Error::Mismatch("time unit"));
        }
        let unit = 10u64.pow(u32::from(exponent));
        let period = r.varint()?;
        let seqs = r.unpack_patched(n.saturating_sub(1))?;
        let times = r.unpack_patched(n.saturating_sub(1))?;
        if !r.is_empty() {
            return Err(Error::Mismatch("trailing bytes"));
        }
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            if i > 0 {
                let step = unzigzag(seqs[i - 1]).wrapping_add(1);
                let units = unzigzag(times[i - 1]).wrapping_add((period as i64).wrapping_mul(step));
                let delta = u64::try_from(units).ok().and_then(|u| u.checked_mul(unit)).ok_or(Error::Mismatch("offset"))?;
                offset = offset.checked_add(delta).ok_or(Error::Mismatch("offset"))?;
                seq = seq.wrapping_add(step as u64);
            }
            if offset >= window::SPAN_NS {
                return Err(Error::Mismatch("offset outside the window"));
            }
            out.push(Entry { offset_ns: offset, seq, tag: None });
        }
        let mut last = None;
        for (i, tag) in tags {
            let i = *i as usize;
            if i >= n || last.is_some_and(|l| l >= i) {
                return Err(Error::Mismatch("tag index"));
            }
            last = Some(i);
            out[i].tag = Some(*tag);
        }
        // Sorted by (time, seq); ties must carry tags, in increasing order.
        for i in 1..n {
            let (a, b) = (out[i - 1], out[i]);
            match (a.offset_ns, a.seq).cmp(&(b.offset_ns, b.seq)) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal if a.tag.zip(b.tag).is_some_and(|(x, y)| x < y) => {}
                _ => return Err(Error::Mismatch("entries out of order")),
            }
        }
        Ok(out)
    }
}

/// Checks a verified index against the announced root and returns the verified leaf
/// bytes (they start with header and index, and may hold some slots too).
pub fn verify(part: &IndexPart, summary: &Summary) -> Result<Vec<u8>, Error> {
    let IndexPart::Verified { leaves, proof } = part else {
        return Err(Error::Mismatch("not a verified index"));
    };
    let geometry = crate::merkle::Geometry::new(summary.blob_len() as u64, window::LEAF_SIZE)
        .map_err(|_| Error::Mismatch("blob length"))?;
    let range = geometry.chunks_covering(0..summary.header().prefix_len() as u64);
    let proof = crate::merkle::Proof::<crate::merkle::Blake3>::from_bytes(proof).map_err(|_| Error::Mismatch("proof bytes"))?;
    geometry.verify(&summary.root, range, leaves, &proof).map_err(|_| Error::Mismatch("proof does not verify"))?;
    let header = window::Header::parse(leaves).map_err(|_| Error::Mismatch("header"))?;
    if header != summary.header() {
        return Err(Error::Mismatch("header"));
    }
    Ok(leaves.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::WindowId;
    use crate::record::{Kind, Readings, Record, StreamId};
    use crate::wire::Dialect;

    fn rec(seq: u64, t_ms: u64) -> Record {
        Record {
            stream: StreamId::new(Dialect::Iotstream, 7),
            device_time_ns: 1_800_000_000_000_000_000 + t_ms * 1_000_000,
            seq,
            timestamp_raw: t_ms,
            kind: Kind::Data,
            readings: Readings::Batch(vec![seq as f32]),
        }
    }

    fn unsigned(_: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn summary(blob: &[u8]) -> Summary {
        super::super::summarize(blob, &Table::default()).expect("summary")
    }

    #[test]
    fn compact_index_round_trips_with_tags_only_on_ties() {
        let mut records: Vec<Record> = (0..50).map(|i| rec(i, i * 1000)).collect();
        let mut twin = rec(10, 10_000);
        twin.readings = Readings::Batch(vec![-1.0]); // a conflict: same (time, seq)
        records.push(twin);
        let blob = window::encode(records[0].stream, window::start(records[0].device_time_ns), &records).expect("blob");
        let (header, entries) = window::index(&blob).expect("index");
        let part = IndexPart::compact(&header, &entries);
        let IndexPart::Compact { tags, columns, .. } = &part else { panic!() };
        assert_eq!(tags.len(), 2);
        assert!(columns.len() < 20, "regular times and seqs pack to a few bytes: {}", columns.len());
        let got = part.entries(&summary(&blob)).expect("entries");
        assert_eq!(got.len(), entries.len());
        for (g, e) in got.iter().zip(&entries) {
            assert_eq!((g.offset_ns, g.seq), (e.offset_ns, e.seq));
            assert!(g.tag.is_none() || g.tag == Some(e.tag));
        }
        let bytes = encode(&Response::Index(part.clone()));
        assert_eq!(decode::<Response>(&bytes).expect("decode"), Response::Index(part));
    }

    #[test]
    fn a_compact_index_that_disagrees_with_the_summary_is_refused() {
        let records: Vec<Record> = (0..20).map(|i| rec(i, i * 1000)).collect();
        let blob = window::encode(records[0].stream, window::start(records[0].device_time_ns), &records).expect("blob");
        let (header, entries) = window::index(&blob).expect("index");
        let s = summary(&blob);
        let part = IndexPart::compact(&header, &entries);
        let IndexPart::Compact { columns, slot_size, tags, .. } = part.clone() else { panic!() };
        let wrong_count = IndexPart::Compact { count: 19, slot_size, columns: columns.clone(), tags: tags.clone() };
        assert!(wrong_count.entries(&s).is_err());
        let truncated = IndexPart::Compact { count: 20, slot_size, columns: columns[..columns.len() - 1].to_vec(), tags };
        assert!(truncated.entries(&s).is_err());
    }

    #[test]
    fn a_verified_index_checks_against_the_root() {
        let records: Vec<Record> = (0..400).map(|i| rec(i, i * 100)).collect();
        let blob = window::encode(records[0].stream, window::start(records[0].device_time_ns), &records).expect("blob");
        let tree = window::outboard(&blob).expect("tree");
        let s = summary(&blob);
        let part = IndexPart::verified(&blob, &tree).expect("part");
        let leaves = verify(&part, &s).expect("verifies");
        assert!(leaves.len() >= s.header().prefix_len());
        let IndexPart::Verified { mut leaves, proof } = part else { panic!() };
        leaves[100] ^= 1;
        assert!(verify(&IndexPart::Verified { leaves, proof }, &s).is_err());
    }

    /// The sizes and bytes `docs/protocol.md` ("Messages", "Compact index") gives.
    #[test]
    fn documented_sizes_and_bytes() {
        let stream = StreamId::new(Dialect::Iotstream, 1001);
        let start = 1_765_477_200_000_000_000;
        let s = Summary { window: WindowId { stream, start }, root: [0xaa; 32], count: 60, slot_size: 32, provenance: [0xbb; 8] };
        assert_eq!(encode(&s).len(), 55);
        let widest = Summary {
            window: WindowId { stream: StreamId::new(Dialect::Secure, u32::MAX), start: u64::MAX - u64::MAX % window::SPAN_NS },
            count: window::MAX_RECORDS,
            slot_size: u16::MAX - u16::MAX % 8,
            ..s
        };
        assert_eq!(encode(&widest).len(), 63);
        assert_eq!(encode(&Announce { windows: vec![widest; MAX_ANNOUNCE], indexes: Vec::new(), rows: Vec::new(), others: None, signature: Vec::new() }).len(), 50_407);
        // 800 of the widest summaries, without indexes, with short rows, go in one message.
        let bare = Announced { summary: widest, index: None, row: Row::All, others: Vec::new() };
        assert_eq!(encode_announces(&vec![bare; MAX_ANNOUNCE], [0; 8], unsigned).len(), 1);

        // 60 IoTStream DATA records of five readings one second apart, seq 100.., none missing.
        let records: Vec<Record> = (0..60u64)
            .map(|i| Record {
                stream,
                device_time_ns: start + 758_000_000 + i * 1_000_000_000,
                seq: 100 + i,
                timestamp_raw: i,
                kind: Kind::Data,
                readings: Readings::Batch(vec![1.0, 2.0, 3.0, 4.0, 5.0]),
            })
            .collect();
        let blob = window::encode(stream, start, &records).expect("blob");
        let (header, entries) = window::index(&blob).expect("index");
        let bytes = encode(&Response::Index(IndexPart::compact(&header, &entries)));
        let want: [u8; 21] = [
            0x02, 0x00, 0x3c, 0x20, 0x0f, // Index, Compact, count 60, slot size 32, 15 bytes of columns
            0x80, 0xd3, 0xb8, 0xe9, 0x02, // first offset 758000000 ns
            0x64, // first seq 100
            0x06, // time unit 10^6 ns
            0xe8, 0x07, // period 1000
            0x00, 0x00, 0x00, // seq column
            0x00, 0x00, 0x00, // time column
            0x00, // no tags
        ];
        assert_eq!(bytes, want);

        // The same window announced with its index and the sender's row (it heard every
        // record): 55 + 1 + 20 + 1 bytes, 3 of list lengths, 1 for no other rows and 1 for no
        // signature (a signed one has 65: `statement`).
        let index = IndexPart::compact(&header, &entries);
        let one = Announce { windows: vec![s], indexes: vec![Some(index.clone())], rows: vec![Row::All], others: None, signature: Vec::new() };
        assert_eq!(encode(&one).len(), 82);
        let item = |s: Summary| Announced { summary: s, index: Some(index.clone()), row: Row::All, others: Vec::new() };
        assert_eq!(encode_announces(&[item(s)], [0; 8], unsigned), vec![encode(&one)]);
        assert!(one.check());
        // Many windows are packed into messages under the gossip limit, with every index.
        let many: Vec<Announced> =
            (0..2000u64).map(|i| item(Summary { window: WindowId { stream: StreamId::new(Dialect::Iotstream, i as u32), start }, ..s })).collect();
        let messages = encode_announces(&many, [0; 8], unsigned);
        assert!(messages.iter().all(|m| m.len() <= MAX_GOSSIP));
        let back: Vec<Announce> = messages.iter().map(|m| decode(m).expect("decodes")).collect();
        assert!(back.iter().all(Announce::check));
        assert_eq!(back.iter().map(|a| a.windows.len()).sum::<usize>(), 2000);
        assert!(back.iter().flat_map(|a| &a.indexes).all(Option::is_some));
        // An index over the cap is left out; its summary is still announced.
        let IndexPart::Compact { count, slot_size, tags, .. } = index.clone() else { panic!() };
        let big = IndexPart::Compact { count, slot_size, columns: vec![0; MAX_ANNOUNCED_INDEX], tags };
        let back: Announce =
            decode(&encode_announces(&[Announced { summary: s, index: Some(big), row: Row::None, others: Vec::new() }], [0; 8], unsigned)[0]).expect("decodes");
        assert_eq!(back, Announce { windows: vec![s], indexes: vec![None], rows: vec![Row::None], others: None, signature: Vec::new() });
        // An index or row list of the wrong length, or a verified index, is refused.
        assert!(!Announce { windows: vec![s, s], indexes: vec![None], rows: Vec::new(), others: None, signature: Vec::new() }.check());
        assert!(!Announce { windows: vec![s], indexes: Vec::new(), rows: vec![Row::All, Row::All], others: None, signature: Vec::new() }.check());
        let verified = IndexPart::Verified { leaves: Vec::new(), proof: Vec::new() };
        assert!(!Announce { windows: vec![s], indexes: vec![Some(verified)], rows: Vec::new(), others: None, signature: Vec::new() }.check());
    }

    #[test]
    fn rows_have_a_short_form_and_are_checked_against_the_count() {
        let all10 = vec![0xff, 0b11];
        assert_eq!(Row::of(Some(&all10), 10), Row::All);
        assert_eq!(Row::All.bits(10), Some(all10));
        assert_eq!(Row::All.bits(16), Some(vec![0xff, 0xff]));
        let some = vec![0b101, 0];
        assert_eq!(Row::of(Some(&some), 10), Row::Bits(some.clone()));
        assert_eq!(Row::Bits(some.clone()).bits(10), Some(some));
        // Proved records make a second bitmap: never the short form.
        let proved = vec![0xff, 0b11, 0b1, 0];
        assert_eq!(Row::of(Some(&proved), 10), Row::Bits(proved.clone()));
        assert_eq!(Row::of(None, 10), Row::None);
        assert_eq!(Row::None.bits(10), None);
        // Wrong length, a bit past the count, an empty row, a proof of an unheard record.
        for bad in [vec![0xff], vec![0xff, 0b111], vec![0, 0], vec![0b1, 0, 0b10, 0]] {
            assert_eq!(Row::Bits(bad.clone()).bits(10), None, "{bad:?}");
        }
        // A site that missed 3 of 60 records: 4 bytes of misses rather than 8 of bitmap.
        let mut most = vec![0xff; 8];
        most[7] = 0x0f;
        for i in [5, 17, 40] {
            most[i / 8] &= !(1 << (i % 8));
        }
        assert_eq!(Row::of(Some(&most), 60), Row::Missing(vec![5, 17, 40]));
        assert_eq!(encode(&Row::Missing(vec![5, 17, 40])).len(), 5);
        assert_eq!(Row::Missing(vec![5, 17, 40]).bits(60), Some(most));
        // Misses out of order, repeated, past the count, or all of them: refused.
        for bad in [vec![17, 5], vec![5, 5], vec![60], (0..10).collect()] {
            assert_eq!(Row::Missing(bad.clone()).bits(if bad.len() == 10 { 10 } else { 60 }), None, "{bad:?}");
        }
    }

    #[test]
    fn a_coordinators_rows_of_other_nodes_travel_by_member_index_for_the_same_member_list() {
        let s = Summary {
            window: WindowId { stream: StreamId::new(Dialect::Iotstream, 7), start: 0 },
            root: [1; 32],
            count: 10,
            slot_size: 32,
            provenance: [2; 8],
        };
        let others = vec![(9, Row::Missing(vec![3])), (2, Row::All), (9, Row::None)];
        let item = Announced { summary: s, index: None, row: Row::All, others };
        let bytes = encode_announces(&[item], [5; 8], unsigned);
        let back: Announce = decode(&bytes[0]).expect("decodes");
        assert!(back.check());
        let o = back.others.as_ref().expect("others");
        // Members 2 and 9: a 2-byte bitmap and the rows in member order, the repeat left out.
        assert_eq!(o.rows[0], OtherRows { nodes: vec![0b100, 0b10], rows: vec![Row::All, Row::Missing(vec![3])] });
        let all = vec![0xff, 0b11];
        assert_eq!(back.others(0, [5; 8]), vec![(2, all), (9, vec![0b1111_0111, 0b11])]);
        // Another member list: ignored.
        assert!(back.others(0, [6; 8]).is_empty());
        // A bitmap naming more members than there are rows (or fewer) is refused.
        for nodes in [vec![0b111], vec![0b1]] {
            let mut bad = back.clone();
            bad.others = Some(Others { members: [5; 8], rows: vec![OtherRows { nodes, rows: vec![Row::All, Row::All] }] });
            assert!(!bad.check());
        }
    }

    #[test]
    fn hostile_bytes_give_errors() {
        assert!(decode::<Request>(&[]).is_err());
        assert!(decode::<Response>(&[0xff; 64]).is_err());
        assert!(decode::<Announce>(&vec![0xfe; MAX_MESSAGE + 1]).is_err());
        // A length prefix claiming gigabytes is refused without allocating them.
        assert!(decode::<Response>(&[3, 0xfc, 0xff, 0xff, 0xff, 0x7f]).is_err());
    }
}
