//! The mesh protocol: what nodes tell each other about the windows they hold, and how a
//! node repairs a window from its peers. Pure, like the rest of `proto`: the node's
//! overlay carries the bytes, its store answers [`Holdings`], and time is passed in.
//!
//! - [`message`]: the gossip announcement, the repair protocol's requests and responses,
//!   and their byte form (`docs/protocol.md`, "Mesh").
//! - [`serve`]: a holder's side — answer one request from what it holds.
//! - [`reconcile`]: a requester's side — the state machine that learns what peers hold
//!   (gossip and periodic summary exchange) and repairs windows from every holder at once
//!   with RaptorQ symbols, verified against the announced root before anything is kept.
//! - [`members`] and [`announce`]: who tells whom about a changed window — in a closed
//!   mesh, offers to the window's few coordinators, which announce it to everyone with
//!   every node's row (`docs/protocol.md`, "Coordinators").
//! - [`statement`]: what a node signs of its own rows, and the evidence a window's
//!   statements give of who heard which record (`docs/protocol.md`, "Statements").
//! - [`sim`]: N nodes on a simulated network with seeded loss and a virtual clock — the
//!   behavioural tests' mesh and the repair-overhead benchmark's, with two baseline
//!   repair schemes to compare against.
//!
//! A window's **records** converge through repair; its **provenance** (which node heard
//! which record directly) converges through the rows announcements carry, merged into
//! [`Table`]s — a grow-only set per record, merged by union — and, for what announcements
//! missed, tables exchanged once two nodes hold the same root.

pub mod announce;
pub mod members;
pub mod message;
pub mod reconcile;
pub mod serve;
pub mod sim;
pub mod statement;

/// What the mesh modules' tests share.
#[cfg(test)]
pub(crate) mod testing {
    use crate::record::{Kind, Readings, Record, StreamId};
    use crate::wire::Dialect;

    /// Record `seq` of IoTStream device 3: one second of device time apart, five readings.
    pub fn rec(seq: u64) -> Record {
        Record {
            stream: StreamId::new(Dialect::Iotstream, 3),
            device_time_ns: 1_800_000_000_000_000_000 + seq * 1_000_000_000,
            seq,
            timestamp_raw: seq,
            kind: Kind::Data,
            readings: Readings::Batch(vec![seq as f32; 5]),
        }
    }
}

use serde::{Deserialize, Serialize};

use crate::record::{Record, StreamId};
use crate::window::{self, Root};

pub use members::Members;
pub use message::{Announce, Announced, IndexPart, Request, Response, Row, StreamDigest, Summary};
pub use reconcile::{Action, Blame, Config, Reconciler, Repaired, RequestId, Stats};

/// A record's identity within its stream: device time (Unix ns), seq, content tag — the
/// order of records in a window.
pub type RecordKey = (u64, u64, [u8; 8]);

/// One window: a stream and the start of its span of device time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowId {
    pub stream: StreamId,
    pub start: u64,
}

impl std::fmt::Display for WindowId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.stream, self.start / 1_000_000_000)
    }
}

/// Which node heard which record of one window directly, and which of those it received
/// authenticated: for each node (by name, sorted), a bitmap over the window's records in
/// key order (bit `i` of byte `i / 8`, least significant first) — the records it heard —
/// optionally followed by a second bitmap of the same length: the records it *proved*,
/// i.e. received with a valid device tag (`proto::auth`) or over DTLS from a client with a
/// certificate (the secure dialect). Proved records are a subset of heard ones, and the
/// second bitmap is left out when it would be all zeros, so a table has one form (and one
/// digest) per content. Only meaningful together with the root it was made for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    pub nodes: Vec<(String, Vec<u8>)>,
}

/// Longest node name a table carries (a libp2p peer id in base58 is 52 characters).
pub const MAX_NODE_NAME: usize = 128;
/// Most nodes one window's table lists. A table built or merged past it keeps the nodes
/// whose names sort first (the same ones whatever the order of merging), so that every
/// table this module makes fits.
pub const MAX_TABLE_NODES: usize = 256;

/// Whether bit `i` of `bits` is set.
fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|x| x >> (i % 8) & 1 == 1)
}

/// A node's row in canonical form: the heard half, and the proved half only if not empty.
fn canonical(mut bits: Vec<u8>, len: usize) -> Vec<u8> {
    if bits.len() > len && bits[len..].iter().all(|x| *x == 0) {
        bits.truncate(len);
    }
    bits
}

impl Table {
    /// A table from each record's list of nodes (records in key order), none proved.
    pub fn from_heard<'a>(count: usize, heard: impl IntoIterator<Item = (usize, &'a str)>) -> Table {
        Table::from_receipts(count, heard.into_iter().map(|(i, n)| (i, n, false)))
    }

    /// A table from receipts `(record index, node, proved)` (records in key order).
    pub fn from_receipts<'a>(count: usize, receipts: impl IntoIterator<Item = (usize, &'a str, bool)>) -> Table {
        let len = count.div_ceil(8);
        let mut nodes: std::collections::BTreeMap<&str, Vec<u8>> = std::collections::BTreeMap::new();
        for (i, name, proved) in receipts {
            if i < count {
                let bits = nodes.entry(name).or_insert_with(|| vec![0; 2 * len]);
                bits[i / 8] |= 1 << (i % 8);
                if proved {
                    bits[len + i / 8] |= 1 << (i % 8);
                }
            }
        }
        Table { nodes: nodes.into_iter().take(MAX_TABLE_NODES).map(|(n, b)| (n.to_owned(), canonical(b, len))).collect() }
    }

    /// The nodes that heard record `i`.
    pub fn heard(&self, i: usize) -> impl Iterator<Item = &str> {
        self.nodes.iter().filter(move |(_, b)| bit(b, i)).map(|(n, _)| n.as_str())
    }

    /// What one node's row (its bitmaps) says of record `i` of `count`: `None` if it did
    /// not hear it, else whether it proved it.
    pub fn receipt(row: &[u8], count: usize, i: usize) -> Option<bool> {
        let len = count.div_ceil(8);
        bit(row, i).then(|| row.len() > len && bit(&row[len..], i))
    }

    /// The nodes that proved record `i` (received it authenticated); `count` is the
    /// window's record count.
    pub fn proved(&self, count: usize, i: usize) -> impl Iterator<Item = &str> {
        let len = count.div_ceil(8);
        self.nodes.iter().filter(move |(_, b)| b.len() > len && bit(&b[len..], i)).map(|(n, _)| n.as_str())
    }

    /// Whether the table fits a window of `count` records: names sorted, unique, bounded,
    /// one bitmap (or two: heard, then proved — a non-empty subset) of the right length
    /// with no bit past `count`.
    pub fn fits(&self, count: usize) -> bool {
        let len = count.div_ceil(8);
        let clean = |b: &[u8]| count.is_multiple_of(8) || b.last().is_none_or(|x| x >> (count % 8) == 0);
        self.nodes.len() <= MAX_TABLE_NODES
            && self.nodes.windows(2).all(|w| w[0].0 < w[1].0)
            && self.nodes.iter().all(|(n, b)| {
                !n.is_empty()
                    && n.len() <= MAX_NODE_NAME
                    && clean(&b[..len.min(b.len())])
                    && if b.len() == len {
                        true
                    } else if b.len() == 2 * len {
                        let (heard, proved) = b.split_at(len);
                        clean(proved)
                            && proved.iter().any(|x| *x != 0)
                            && heard.iter().zip(proved).all(|(h, p)| p & !h == 0)
                    } else {
                        false
                    }
            })
    }

    /// Adds everything `other` says (union per node, of what each heard and proved). Both
    /// must fit the same window; the result then fits it too: past [`MAX_TABLE_NODES`]
    /// nodes, the names that sort last are left out.
    pub fn merge(&mut self, other: &Table) {
        for (name, bits) in &other.nodes {
            match self.nodes.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
                Ok(i) => {
                    let mine = &mut self.nodes[i].1;
                    if mine.len() < bits.len() {
                        mine.resize(bits.len(), 0);
                    }
                    for (a, b) in mine.iter_mut().zip(bits) {
                        *a |= b;
                    }
                }
                Err(i) => self.nodes.insert(i, (name.clone(), bits.clone())),
            }
        }
        self.nodes.retain(|(_, b)| b.iter().any(|x| *x != 0));
        self.nodes.truncate(MAX_TABLE_NODES);
    }

    /// 8 bytes of BLAKE3 over the table's bytes: equal tables, equal digests. Nodes with
    /// no bit set are not listed, so they do not change it.
    pub fn digest(&self) -> [u8; 8] {
        let mut h = blake3::Hasher::new();
        for (name, bits) in self.nodes.iter().filter(|(_, b)| b.iter().any(|x| *x != 0)) {
            h.update(&(name.len() as u32).to_be_bytes());
            h.update(name.as_bytes());
            h.update(&(bits.len() as u32).to_be_bytes());
            h.update(bits);
        }
        let mut out = [0u8; 8];
        out.copy_from_slice(&h.finalize().as_bytes()[..8]);
        out
    }
}

/// A window as a holder serves it.
#[derive(Debug, Clone)]
pub struct Held {
    /// The canonical blob (`proto::window`); its root is the window's root.
    pub blob: std::sync::Arc<Vec<u8>>,
    /// Its provenance, over the blob's records.
    pub table: Table,
}

/// What a node holds, as the mesh protocol asks it. The node implements it over its
/// store; the simulated mesh in the tests over a map. Only sealed windows count: a
/// window's summary is that of its last seal.
pub trait Holdings {
    /// Our summary of one window, if we hold any of it.
    fn summary(&self, window: WindowId) -> Option<Summary>;
    /// The digest of one stream's summaries, if we hold any of it.
    fn stream(&self, stream: StreamId) -> Option<StreamDigest>;
    /// Whether we hold any window of `stream` (cheap: the reconciler asks it of every
    /// window it wants, each time it starts repairs).
    fn holds(&self, stream: StreamId) -> bool {
        self.stream(stream).is_some()
    }
    /// Per-stream digests of our summaries, streams after `after`, at most `limit`.
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Vec<StreamDigest>;
    /// Our summaries of `stream`'s windows starting after `after`, at most `limit`.
    fn windows(&self, stream: StreamId, after: Option<u64>, limit: usize) -> Vec<Summary>;
    /// Our records of a window (to place into a peer's layout).
    fn records(&self, window: WindowId) -> Vec<Record>;
    /// Window `window`, if we hold exactly the set whose root is `root` (or did lately).
    fn held(&self, window: WindowId, root: &Root) -> Option<Held>;
    /// The signed statements we keep of a window, by author ([`statement`]).
    fn statements(&self, _window: WindowId) -> Vec<(String, statement::Statement)> {
        Vec::new()
    }
}

/// What a node keeps of one stream's sealed windows to give the stream's digest without
/// reading them: how many windows, their records, and the sum of each window's [`term`],
/// lane by lane. A window sealed, changed or merged changes the sum by its old and new
/// terms alone, so the digest costs the same for a stream of ten windows and of a million.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamSum {
    pub windows: u32,
    pub records: u64,
    pub lanes: [u64; 8],
}

impl StreamSum {
    /// The sum of `windows` (one summary per window).
    pub fn of<'a>(windows: impl IntoIterator<Item = &'a Summary>) -> StreamSum {
        let mut sum = StreamSum::default();
        for s in windows {
            sum.add(s);
        }
        sum
    }

    /// A window's summary `old` (if it had one) replaced by `new` (if it has one).
    pub fn replace(&mut self, old: Option<&Summary>, new: Option<&Summary>) {
        if let Some(old) = old {
            self.remove(old);
        }
        if let Some(new) = new {
            self.add(new);
        }
    }

    pub fn add(&mut self, s: &Summary) {
        self.windows = self.windows.saturating_add(1);
        self.records = self.records.saturating_add(u64::from(s.count));
        for (lane, t) in self.lanes.iter_mut().zip(term(s)) {
            *lane = lane.wrapping_add(t);
        }
    }

    pub fn remove(&mut self, s: &Summary) {
        self.windows = self.windows.saturating_sub(1);
        self.records = self.records.saturating_sub(u64::from(s.count));
        for (lane, t) in self.lanes.iter_mut().zip(term(s)) {
            *lane = lane.wrapping_sub(t);
        }
    }

    /// Whether no window is in it.
    pub fn is_empty(&self) -> bool {
        self.windows == 0
    }

    /// The stream's digest as the summary exchange sends it: the first 16 bytes of
    /// BLAKE3 over the stream, the window count and the lanes. Two nodes with equal
    /// digests hold the same windows with the same provenance (`docs/protocol.md`,
    /// "Stream digest", says how hard a collision is to make).
    pub fn digest(&self, stream: StreamId) -> StreamDigest {
        let mut h = blake3::Hasher::new_derive_key("telemesh 2026 stream digest");
        h.update(&stream.key_prefix());
        h.update(&self.windows.to_be_bytes());
        for lane in self.lanes {
            h.update(&lane.to_le_bytes());
        }
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&h.finalize().as_bytes()[..16]);
        StreamDigest { stream, windows: self.windows, digest }
    }
}

/// A window's term in its stream's sum: 512 bits of BLAKE3 (extended output) over its
/// stream, start, root and provenance digest, as eight little-endian lanes.
pub fn term(s: &Summary) -> [u64; 8] {
    let mut h = blake3::Hasher::new_derive_key("telemesh 2026 stream digest term");
    h.update(&s.window.stream.key_prefix());
    h.update(&s.window.start.to_be_bytes());
    h.update(&s.root);
    h.update(&s.provenance);
    let mut bytes = [0u8; 64];
    h.finalize_xof().fill(&mut bytes);
    let mut lanes = [0u64; 8];
    for (lane, b) in lanes.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        *lane = u64::from_le_bytes(word);
    }
    lanes
}

/// The digest of one stream's windows (one summary per window, any order).
pub fn stream_digest<'a>(stream: StreamId, windows: impl IntoIterator<Item = &'a Summary>) -> StreamDigest {
    StreamSum::of(windows).digest(stream)
}

/// A window's summary from its blob and table.
pub fn summarize(blob: &[u8], table: &Table) -> Option<Summary> {
    let header = window::Header::parse(blob).ok()?;
    let root = window::outboard(blob).ok()?.root();
    Some(Summary {
        window: WindowId { stream: header.stream, start: header.start_ns },
        root,
        count: header.count,
        slot_size: header.slot_size,
        provenance: table.digest(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(device: u32, start: u64, root: u8, provenance: u8) -> Summary {
        let stream = StreamId::new(crate::wire::Dialect::Iotstream, device);
        Summary { window: WindowId { stream, start }, root: [root; 32], count: 3, slot_size: 8, provenance: [provenance; 8] }
    }

    /// A stream's sum kept as windows are sealed, replaced and merged gives the digest of
    /// the windows it ends with, computed from scratch; any difference in the windows
    /// (a root, a provenance digest, a window more) gives another digest.
    #[test]
    fn a_stream_sum_kept_by_changes_is_the_sum_of_its_windows() {
        let (a, b, c) = (summary(1, 0, 1, 0), summary(1, 60, 2, 0), summary(1, 120, 3, 0));
        let stream = a.window.stream;
        let mut kept = StreamSum::default();
        kept.replace(None, Some(&a));
        kept.replace(None, Some(&b));
        let b2 = Summary { root: [9; 32], count: 5, ..b };
        kept.replace(Some(&b), Some(&b2));
        kept.replace(None, Some(&c));
        let c2 = Summary { provenance: [4; 8], ..c };
        kept.replace(Some(&c), Some(&c2));
        assert_eq!(kept, StreamSum::of([&c2, &a, &b2]), "order does not matter");
        assert_eq!((kept.windows, kept.records), (3, 11));
        let digest = kept.digest(stream);
        assert_eq!(digest, stream_digest(stream, [&a, &b2, &c2]));
        for other in [[&a, &b, &c2], [&a, &b2, &c], [&a, &b2, &summary(1, 180, 3, 0)]] {
            assert_ne!(stream_digest(stream, other), digest);
        }
        assert_ne!(stream_digest(stream, [&a, &b2]), digest);
        kept.replace(Some(&c2), None);
        assert_eq!(kept.digest(stream), stream_digest(stream, [&a, &b2]));
        let other = StreamId::new(crate::wire::Dialect::Iotstream, 2);
        assert_ne!(kept.digest(other).digest, kept.digest(stream).digest, "the stream is in the digest");
    }

    #[test]
    fn tables_merge_by_union_and_digest_ignores_order_of_learning() {
        let a = Table::from_heard(10, [(0, "a"), (3, "a"), (9, "b")]);
        let b = Table::from_heard(10, [(1, "b"), (3, "c")]);
        assert!(a.fits(10) && b.fits(10));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert_eq!(ab, ba);
        assert_eq!(ab.digest(), ba.digest());
        assert_ne!(ab.digest(), a.digest());
        assert_eq!(ab.heard(3).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(ab.heard(9).collect::<Vec<_>>(), ["b"]);
        assert_eq!(ab.heard(5).count(), 0);
        let mut again = ab.clone();
        again.merge(&a);
        assert_eq!(again, ab);
    }

    /// Found by the `table` fuzz target: two tables of 200-odd nodes each, both fitting,
    /// merged into one of more than `MAX_TABLE_NODES` that no peer (and no store) accepts.
    #[test]
    fn merged_and_built_tables_stay_within_the_node_limit() {
        let names: Vec<String> = (0..400).map(|i| format!("12D3KooW{i:03}")).collect();
        let a = Table::from_heard(9, names[..200].iter().enumerate().map(|(i, n)| (i % 9, n.as_str())));
        let b = Table::from_heard(9, names[150..].iter().enumerate().map(|(i, n)| (i % 9, n.as_str())));
        assert!(a.fits(9) && b.fits(9));
        let mut ab = a.clone();
        ab.merge(&b);
        let mut ba = b.clone();
        ba.merge(&a);
        assert!(ab.fits(9));
        assert_eq!(ab, ba);
        // The names that sort first are kept, whatever the order of merging.
        assert_eq!(ab.nodes.len(), MAX_TABLE_NODES);
        assert_eq!(ab.nodes.last().map(|n| n.0.as_str()), Some("12D3KooW255"));
        let mut again = ab.clone();
        again.merge(&a);
        assert_eq!(again, ab);
        // Built from more names than that (a store's records heard by many nodes), too.
        let all = Table::from_heard(9, names.iter().enumerate().map(|(i, n)| (i % 9, n.as_str())));
        assert!(all.fits(9));
        let names = |t: &Table| t.nodes.iter().map(|n| n.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&all), names(&ab));
    }

    #[test]
    fn tables_that_do_not_fit_are_refused() {
        let t = Table::from_heard(10, [(0, "a")]);
        assert!(!t.fits(20)); // bitmap length
        let stray = Table { nodes: vec![("a".into(), vec![0, 0b100])] };
        assert!(!stray.fits(10)); // bit 10 of 10
        let unsorted = Table { nodes: vec![("b".into(), vec![1, 0]), ("a".into(), vec![1, 0])] };
        assert!(!unsorted.fits(10));
    }

    #[test]
    fn proofs_are_a_second_bitmap_kept_only_when_something_was_proved() {
        // 10 records: a heard 0 and 3 and proved 3; b heard 9, proved nothing.
        let t = Table::from_receipts(10, [(0, "a", false), (3, "a", true), (9, "b", false)]);
        assert!(t.fits(10));
        assert_eq!(t.nodes[0].1, [0b1001, 0, 0b1000, 0]);
        assert_eq!(t.nodes[1].1, [0, 0b10]);
        assert_eq!(t.proved(10, 3).collect::<Vec<_>>(), ["a"]);
        assert_eq!(t.proved(10, 0).count(), 0);
        assert_eq!(t.heard(3).collect::<Vec<_>>(), ["a"]);
        // Nothing proved: the same table, byte for byte, as one made without proofs.
        let plain = Table::from_receipts(10, [(0, "a", false), (9, "b", false)]);
        assert_eq!(plain, Table::from_heard(10, [(0, "a"), (9, "b")]));

        // A proof learnt later joins by union, from either side, and changes the digest.
        let mut learnt = plain.clone();
        learnt.merge(&Table::from_receipts(10, [(3, "a", true)]));
        let mut other_way = Table::from_receipts(10, [(3, "a", true)]);
        other_way.merge(&plain);
        assert_eq!(learnt, other_way);
        assert_eq!(learnt, t);
        assert_ne!(learnt.digest(), plain.digest());
        assert!(learnt.fits(10));
    }

    #[test]
    fn a_proof_of_a_record_not_heard_or_an_empty_proof_does_not_fit() {
        let not_heard = Table { nodes: vec![("a".into(), vec![0b01, 0, 0b10, 0])] };
        assert!(!not_heard.fits(10));
        let empty_proof = Table { nodes: vec![("a".into(), vec![0b01, 0, 0, 0])] };
        assert!(!empty_proof.fits(10)); // not canonical: two forms, two digests
        let stray = Table { nodes: vec![("a".into(), vec![0xff, 0b11, 0xff, 0b111])] };
        assert!(!stray.fits(10));
        let three = Table { nodes: vec![("a".into(), vec![1, 0, 1, 0, 1, 0])] };
        assert!(!three.fits(10));
        assert!(Table { nodes: vec![("a".into(), vec![0xff, 0b11, 0xff, 0b11])] }.fits(10));
    }
}
