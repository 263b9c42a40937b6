//! The properties the mesh-side fuzz targets check, one function per target, and the seeds
//! they start from. Shared by the targets (`fuzz_targets/*.rs`, through `#[path]`), by
//! `proto/tests/fuzz_corpus.rs` (every checked-in input, on stable, without cargo-fuzz) and
//! by `proto/examples/fuzz_seeds.rs` (writes `corpus/<target>/seed_*` from the real
//! encoders). Depends on `telemesh-proto` and std only.
//!
//! A property violated is a panic: that is what the fuzzer reports. Floats are compared as
//! bytes (re-encoded), never as values, because a NaN reading is not equal to itself.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use telemesh_proto::merkle::{self, Blake3, ChunkNum, Outboard, Proof};
use telemesh_proto::mesh::message::{self, Announce, IndexPart, Request, Response, Summary, MAX_GOSSIP, MAX_MESSAGE};
use telemesh_proto::mesh::statement::{Evidence, Statement, Unbacked, MAX_SIGNATURE};
use telemesh_proto::mesh::{self, serve, Held, Holdings, StreamDigest, Table, WindowId};
use telemesh_proto::record::{codec, Kind, Readings, Record, SensorCode, StreamId};
use telemesh_proto::stream::{self, Lookup, Neighbour, Presence};
use telemesh_proto::repair::{self, CacheConfig, Decoder, EncoderCache, EsiRange, Layout, Plan, Symbol};
use telemesh_proto::window::{self, compact, IndexEntry};
use telemesh_proto::wire::Dialect;

/// The targets, as named in `Cargo.toml` and `corpus/`.
pub const TARGETS: [&str; 9] =
    ["mesh_message", "index", "window", "window_compact", "merkle", "table", "repair", "stream_state", "statement"];

/// Runs target `name` on one input.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "mesh_message" => mesh_message(data),
        "index" => index(data),
        "window" => window_blob(data),
        "window_compact" => window_compact(data),
        "merkle" => merkle_proof(data),
        "table" => table(data),
        "repair" => repair_symbols(data),
        "stream_state" => stream_state(data),
        "statement" => statement(data),
        _ => panic!("no target {name}"),
    }
}

// ------------------------------------------------------------------ sample windows

/// Start of the samples' window (aligned).
pub const START: u64 = 1_765_477_200_000_000_000 - 1_765_477_200_000_000_000 % window::SPAN_NS;

fn rec(stream: StreamId, offset_ms: u64, seq: u64, kind: Kind, readings: Readings) -> Record {
    Record { stream, device_time_ns: START + offset_ms * 1_000_000, seq, timestamp_raw: offset_ms, kind, readings }
}

/// Windows as the node seals them: every dialect's readings, a gap, a conflict (two records
/// with the same time and seq), odd floats, and one window of irregular times.
pub fn samples() -> Vec<Vec<Record>> {
    let iot = StreamId::new(Dialect::Iotstream, 1001);
    let mut a: Vec<Record> = vec![rec(iot, 0, 0, Kind::Init, Readings::None)];
    a.extend((1..40u64).filter(|i| *i != 17).map(|i| {
        rec(iot, i * 1000, i, Kind::Data, Readings::Batch(vec![29.37, 23.53, 22.61, 22.04, i as f32 / 4.0]))
    }));
    a.push(rec(iot, 20_000, 20, Kind::Data, Readings::Batch(vec![-1.0]))); // conflict with seq 20
    a.push(rec(iot, 41_000, 41, Kind::Heartbeat, Readings::None));
    let tt = StreamId::new(Dialect::Tinytelemetry, 7);
    let b: Vec<Record> = (0..12u64)
        .map(|i| {
            let odd = [0.0, -0.0, f32::INFINITY, f32::NAN, 1e-45, f32::MAX][i as usize % 6];
            rec(tt, i * 5000, 100 + i, Kind::Data, Readings::Sensors(vec![(SensorCode(1), 21.5), (SensorCode(3), odd)]))
        })
        .collect();
    let sec = StreamId::new(Dialect::Secure, 42);
    let c: Vec<Record> = (0..6u64)
        .map(|i| {
            let pairs = vec![("CPU".to_owned(), 72.3), ("MEM".to_owned(), 41.2 + i as f64), ("E".to_owned(), 1e-300)];
            rec(sec, i * 9_731 + i * i * 17, 1 << 40 | i, Kind::Data, Readings::Pairs(pairs))
        })
        .collect();
    let d = vec![rec(StreamId::new(Dialect::Iotstream, 65535), 59_999, 65535, Kind::Heartbeat, Readings::None)];
    vec![a, b, c, d]
}

/// A sample's blob.
pub fn blob(records: &[Record]) -> Vec<u8> {
    window::encode(records[0].stream, START, records).expect("a sample encodes")
}

/// A sample's summary, with an empty table.
pub fn summary(blob: &[u8]) -> Summary {
    mesh::summarize(blob, &Table::default()).expect("a sample summarises")
}

/// The samples as a holder: their blobs, tables and summaries.
pub struct Fixed {
    held: Vec<(Summary, Held, Vec<Record>)>,
}

impl Holdings for Fixed {
    fn summary(&self, window: WindowId) -> Option<Summary> {
        self.held.iter().find(|h| h.0.window == window).map(|h| h.0)
    }
    fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
        let list: Vec<Summary> = self.held.iter().filter(|h| h.0.window.stream == stream).map(|h| h.0).collect();
        (!list.is_empty()).then(|| mesh::stream_digest(stream, &list))
    }
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Vec<StreamDigest> {
        let mut streams: Vec<StreamId> = self.held.iter().map(|h| h.0.window.stream).collect();
        streams.sort();
        streams.dedup();
        let after = |s: &StreamId| after.is_none_or(|a| *s > a);
        streams.into_iter().filter(after).take(limit).filter_map(|s| self.stream(s)).collect()
    }
    fn windows(&self, stream: StreamId, after: Option<u64>, limit: usize) -> Vec<Summary> {
        let want = |s: &&Summary| s.window.stream == stream && after.is_none_or(|a| s.window.start > a);
        self.held.iter().map(|h| &h.0).filter(want).take(limit).copied().collect()
    }
    fn records(&self, window: WindowId) -> Vec<Record> {
        self.held.iter().find(|h| h.0.window == window).map(|h| h.2.clone()).unwrap_or_default()
    }
    fn held(&self, window: WindowId, root: &window::Root) -> Option<Held> {
        self.held.iter().find(|h| h.0.window == window && h.0.root == *root).map(|h| h.1.clone())
    }
}

/// The samples' provenance: a few nodes over each window's records.
pub fn sample_table(count: usize) -> Table {
    let names = ["12D3KooWAlpha", "12D3KooWBravo", "12D3KooWCharlie"];
    let mut heard = Vec::new();
    for i in 0..count {
        heard.extend(names.iter().enumerate().filter(|(j, _)| (i + j) % 3 != 0).map(|(_, n)| (i, *n)));
    }
    Table::from_heard(count, heard)
}

fn fixed() -> &'static Fixed {
    static FIXED: OnceLock<Fixed> = OnceLock::new();
    FIXED.get_or_init(|| {
        let held = samples()
            .into_iter()
            .map(|records| {
                let blob = blob(&records);
                let (header, sorted) = window::decode(&blob).expect("a sample decodes");
                let table = sample_table(header.count as usize);
                let s = mesh::summarize(&blob, &table).expect("a sample summarises");
                (s, Held { blob: Arc::new(blob), table }, sorted)
            })
            .collect();
        Fixed { held }
    })
}

/// One encoder cache for the whole run, as a node keeps one.
fn encoders() -> &'static Mutex<EncoderCache> {
    static CACHE: OnceLock<Mutex<EncoderCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(EncoderCache::new(CacheConfig::default())))
}

// ------------------------------------------------------------------ mesh messages

/// Decoded, re-encoded and decoded again: the same value, and the re-encoding is stable.
/// (The input's own bytes are not required back: bincode accepts some non-minimal
/// encodings, which is harmless for messages nobody hashes.)
fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: &T) -> Vec<u8> {
    let bytes = message::encode(value);
    let back: T = message::decode(&bytes).expect("a re-encoded message decodes");
    assert_eq!(&back, value, "decode(encode(m)) != m");
    assert_eq!(message::encode(&back), bytes, "re-encoding is not stable");
    bytes
}

/// Gossip, requests and responses, each decoded from the same bytes as the node does it
/// (`message::decode`, gossip within `MAX_GOSSIP`), then used as the node uses it: an
/// announcement is checked and its compact indexes read; a request is answered from the
/// samples (`serve::respond`), the answer within `MAX_MESSAGE`; a response's index, symbols,
/// table and statements go through the index, repair, table and statement checks.
pub fn mesh_message(data: &[u8]) {
    if data.len() <= MAX_GOSSIP {
        if let Ok(announce) = message::decode::<Announce>(data) {
            round_trip(&announce);
            if announce.check() {
                for (i, s) in announce.windows.iter().enumerate() {
                    assert!(s.check());
                    assert!(s.blob_len() >= window::HEADER_LEN);
                    if let Some(part) = announce.index(i) {
                        compact_index(part, s);
                    }
                    // A row that passes its check is a table row that fits the window.
                    if let Some(bits) = announce.row(i) {
                        let table = telemesh_proto::mesh::Table { nodes: vec![("author".into(), bits)] };
                        assert!(table.fits(s.count as usize));
                    }
                }
            }
        }
    }
    if let Ok(request) = message::decode::<Request>(data) {
        round_trip(&request);
        let response = {
            let mut cache = encoders().lock().unwrap_or_else(|e| e.into_inner());
            serve::respond(&request, fixed(), &mut cache)
        };
        let bytes = round_trip(&response);
        assert!(bytes.len() <= MAX_MESSAGE, "a response of {} bytes", bytes.len());
        if let (Request::Symbols { root, count, .. }, Response::Symbols { data }) = (&request, &response) {
            let held = fixed().held.iter().find(|h| h.0.root == *root).expect("symbols of a held window");
            let layout = Layout::new(usize::from(held.0.slot_size), held.0.count as usize).expect("a held layout");
            assert_eq!(data.len() % layout.symbol_len(), 0);
            assert!(data.len() / layout.symbol_len() <= *count as usize);
            for bytes in data.chunks_exact(layout.symbol_len()) {
                Symbol::from_bytes(bytes, &layout).expect("a served symbol is well-formed");
            }
        }
    }
    if let Ok(response) = message::decode::<Response>(data) {
        round_trip(&response);
        match &response {
            Response::Windows { windows, .. } => {
                for s in windows.iter().filter(|s| s.check()) {
                    assert_eq!(s.blob_len(), s.header().blob_len());
                }
            }
            Response::Index(part) => index_part(part),
            Response::Symbols { data } => {
                // As the requester splits them, against each sample's layout.
                for (s, _, _) in &fixed().held {
                    let layout = Layout::new(usize::from(s.slot_size), s.count as usize).expect("a held layout");
                    if data.len() % layout.symbol_len() == 0 {
                        for bytes in data.chunks_exact(layout.symbol_len()) {
                            if let Ok(symbol) = Symbol::from_bytes(bytes, &layout) {
                                assert_eq!(symbol.to_bytes(), bytes);
                            }
                        }
                    }
                }
            }
            Response::Provenance { table } => {
                for (s, held, _) in &fixed().held {
                    table_pair(s.count as usize, table, &held.table);
                }
            }
            Response::Statements(list) => {
                for (author, s) in list {
                    statement_checks(author, s);
                }
            }
            _ => {}
        }
    }
}

// ------------------------------------------------------------------ indexes

/// A compact index is read against a summary made from its own count and slot size (so
/// the count check passes and the columns are what is exercised); a verified index
/// against every sample's real summary.
fn index_part(part: &IndexPart) {
    match part {
        IndexPart::Compact { count, slot_size, .. } => {
            let window = fixed().held[0].0.window;
            let s = Summary { window, root: [0; 32], count: *count, slot_size: *slot_size, provenance: [0; 8] };
            if s.check() {
                compact_index(part, &s);
            }
        }
        IndexPart::Verified { leaves, .. } => {
            for (s, held, _) in &fixed().held {
                if let Ok(verified) = message::verify(part, s) {
                    // Sound: only the blob's own leaves verify against its root.
                    assert_eq!(&verified, leaves);
                    assert_eq!(verified[..], held.blob[..verified.len()], "a verified index that is not the blob's");
                    assert!(verified.len() >= s.header().prefix_len());
                }
            }
        }
    }
}

/// An entry as the requester fills it in, a zero tag where none was sent.
fn entry(e: &message::Entry) -> IndexEntry {
    IndexEntry { offset_ns: e.offset_ns, seq: e.seq, tag: e.tag.unwrap_or([0; 8]) }
}

/// `IndexPart::entries`, and what the requester does next: the entries it returns are in
/// the window, in blob order, and rebuild a prefix that `window::index` reads back as the
/// same entries; compacting them again gives the same entries and is a fixed point.
fn compact_index(part: &IndexPart, s: &Summary) {
    let Ok(entries) = part.entries(s) else { return };
    assert_eq!(entries.len(), s.count as usize);
    // Untagged entries are never tied with a neighbour, so a zero tag keeps the order strict.
    let full: Vec<IndexEntry> = entries.iter().map(entry).collect();
    assert!(full.iter().all(|e| e.offset_ns < window::SPAN_NS), "an entry outside the window");
    assert!(full.windows(2).all(|w| w[0] < w[1]), "entries out of blob order");
    let header = s.header();
    let prefix = window::prefix(&header, &full);
    let (h, back) = window::index(&prefix).expect("a checked compact index rebuilds a valid prefix");
    assert_eq!(h, header);
    assert_eq!(back, full);
    let again = IndexPart::compact(&header, &full);
    let second = again.entries(s).expect("a re-compacted index reads");
    let keys = |v: &[message::Entry]| v.iter().map(|e| (e.offset_ns, e.seq)).collect::<Vec<_>>();
    assert_eq!(keys(&second), keys(&entries));
    for (a, b) in second.iter().zip(&entries) {
        assert!(a.tag.is_none() || a.tag == b.tag, "re-compacting changed a tag");
    }
    let full2: Vec<IndexEntry> = second.iter().map(entry).collect();
    assert_eq!(IndexPart::compact(&header, &full2), again, "compacting is not a fixed point");
}

/// The `index` target: an `IndexPart` as a response carries it (its bincode form).
pub fn index(data: &[u8]) {
    let Ok(part) = message::decode::<IndexPart>(data) else { return };
    round_trip(&part);
    index_part(&part);
}

// ------------------------------------------------------------------ window blobs

/// Writes each slot's content tag into the index, so that mutated slots get past the tag
/// check and reach the content decoder and the canonical-form checks.
fn retag(bytes: &mut [u8]) {
    let Ok(header) = window::Header::parse(bytes) else { return };
    let slot = usize::from(header.slot_size);
    for i in 0..header.count as usize {
        let at = header.prefix_len() + i * slot;
        let Some(tag) = bytes.get(at..at + slot).and_then(|s| window::slot_tag(s).ok()) else { continue };
        let t = window::HEADER_LEN + i * window::INDEX_ENTRY_LEN + 16;
        if let Some(dst) = bytes.get_mut(t..t + 8) {
            dst.copy_from_slice(&tag);
        }
    }
}

/// `window::decode` on a blob from a peer or the disk (first byte odd: with the tags
/// recomputed, see [`retag`]). Whatever decodes is canonical — the records re-encode to the
/// same bytes, hence the same root — and `index`, `place`/`assemble` (a partial holder) and
/// the store's compact form all agree with it.
pub fn window_blob(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let mut blob = rest.to_vec();
    if mode & 1 == 1 {
        retag(&mut blob);
    }
    let index = window::index(&blob);
    let Ok((header, records)) = window::decode(&blob) else { return };
    let (h, entries) = index.expect("decode accepted what index refused");
    assert_eq!(h, header);
    assert_eq!(entries.len(), records.len());
    let again = window::encode(header.stream, header.start_ns, &records).expect("decoded records re-encode");
    assert!(again == blob, "decode accepted a non-canonical blob");
    let placed = window::place(&header, &entries, &records);
    assert_eq!(placed.missing(), 0);
    assert_eq!(window::assemble(&blob[..header.prefix_len()], &placed.slots).as_deref(), Ok(&blob[..]));
    let stored = compact::encode(header.start_ns, &records);
    let back = compact::decode(header.stream, header.start_ns, &stored).expect("the compact form decodes");
    let rebuilt = window::encode(header.stream, header.start_ns, &back);
    assert!(rebuilt.as_deref() == Ok(&blob[..]), "compact form lost data");
    let tree = window::outboard(&blob).expect("an outboard");
    assert_eq!(Some(tree.root()), merkle::root::<Blake3>(&blob, window::LEAF_SIZE).ok());
    let s = mesh::summarize(&blob, &Table::default()).expect("a decoded blob summarises");
    assert!(s.count == 0 || s.check());
    assert_eq!(s.blob_len(), blob.len());
}

/// `window::compact::decode` (the store's form of a sealed window, read back from disk):
/// the first byte picks the stream. What decodes lies in the window and is the store's
/// round trip: blob, decode, compact, decode gives the same blob, and compacting is stable.
pub fn window_compact(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else { return };
    let dialect = [Dialect::Iotstream, Dialect::Tinytelemetry, Dialect::Secure][usize::from(pick % 3)];
    let stream = StreamId::new(dialect, u32::from(pick));
    let Ok(records) = compact::decode(stream, START, rest) else { return };
    assert!(records.iter().all(|r| r.stream == stream));
    assert!(
        records.iter().all(|r| window::start(r.device_time_ns) == START),
        "compact::decode returned a record outside its window"
    );
    let blob = window::encode(stream, START, &records).expect("decoded records make a blob");
    let (_, sorted) = window::decode(&blob).expect("the blob decodes");
    let stored = compact::encode(START, &sorted);
    let back = compact::decode(stream, START, &stored).expect("re-compacted records decode");
    assert!(window::encode(stream, START, &back).as_deref() == Ok(&blob[..]), "compact round trip lost data");
    assert!(compact::encode(START, &back) == stored, "compacting is not stable");
}

// ------------------------------------------------------------------ Merkle proofs

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

/// Proofs, leaf data and outboards from untrusted bytes, against the root of a blob the
/// target builds itself. Layout: `sel u8 | start u16 | end u16 | blob length u16 | blob |
/// untrusted bytes`; `sel` picks the leaf size (low 3 bits) and what is untrusted (bits
/// 3–4): the proof, the leaf data, an outboard, or leaf data and proof (split at half).
/// Sound: whatever verifies against the honest root is the honest proof and leaf data.
/// Complete: the honest proof verifies. Decoders re-encode their input exactly.
pub fn merkle_proof(data: &[u8]) {
    if data.len() < 7 {
        return;
    }
    let sel = data[0];
    let leaf_size = [1u32, 2, 3, 7, 32, 64, 1024, 4096][usize::from(sel & 7)];
    let (start, end, len) = (u64::from(u16_at(data, 1)), u64::from(u16_at(data, 3)), usize::from(u16_at(data, 5)));
    let rest = &data[7..];
    let (blob, untrusted) = rest.split_at(len.min(rest.len()));
    let tree = Outboard::<Blake3>::build(blob, leaf_size).expect("a tree");
    let root = tree.root();
    assert_eq!(Ok(root), merkle::root::<Blake3>(blob, leaf_size));
    let g = *tree.geometry();
    assert_eq!(Outboard::<Blake3>::from_bytes(&tree.to_bytes()).as_ref(), Ok(&tree));

    let mode = (sel >> 3) & 3;
    if mode == 2 {
        if let Ok(ob) = Outboard::<Blake3>::from_bytes(untrusted) {
            assert_eq!(ob.to_bytes(), untrusted, "outboard decode is not exact");
            if ob.check().is_ok() && ob.geometry() == &g && ob.leaves() == tree.leaves() {
                assert_eq!(ob, tree, "a consistent outboard with the same leaves differs");
            }
        }
    }
    let n = g.num_leaves();
    if n == 0 {
        return;
    }
    let start = start % n;
    let end = start + 1 + end % (n - start);
    let range = ChunkNum(start)..ChunkNum(end);
    let bytes = g.range_bytes(&range).expect("an in-bounds range");
    let leaves = &blob[bytes.start as usize..bytes.end as usize];
    let proof = tree.prove(range.clone()).expect("a proof");
    assert_eq!(Ok(proof.digests().len()), g.proof_len(range.clone()));
    assert_eq!(g.verify(&root, range.clone(), leaves, &proof), Ok(()), "the honest proof does not verify");
    assert_eq!(Proof::<Blake3>::from_bytes(&proof.to_bytes()).as_ref(), Ok(&proof));
    let (their_leaves, their_proof) = match mode {
        0 => (leaves, untrusted),
        1 => (untrusted, &proof.to_bytes()[..]),
        3 => untrusted.split_at(untrusted.len() / 2),
        _ => return,
    };
    let Ok(their) = Proof::<Blake3>::from_bytes(their_proof) else { return };
    assert_eq!(their.to_bytes(), their_proof, "proof decode is not exact");
    if g.verify(&root, range.clone(), their_leaves, &their).is_ok() {
        assert_eq!(their_leaves, leaves, "other leaf data verified");
        assert_eq!(their, proof, "another proof verified");
    }
    let verified = merkle::verify(&root, leaf_size, g.total_len(), range, their_leaves, &their).is_ok();
    assert_eq!(verified, their == proof && their_leaves == leaves);
}

// ------------------------------------------------------------------ provenance tables

/// Two tables that fit the same window: their merge fits it too, is the per-record union
/// of who heard what, does not depend on the order (value and digest), is idempotent, and
/// the digest ignores nodes with no bit set.
fn table_pair(count: usize, a: &Table, b: &Table) {
    for t in [a, b] {
        for i in 0..count + 9 {
            let _ = t.heard(i).count();
        }
        let _ = t.digest();
    }
    if !(a.fits(count) && b.fits(count)) {
        return;
    }
    let mut ab = a.clone();
    ab.merge(b);
    let mut ba = b.clone();
    ba.merge(a);
    assert!(ab.fits(count), "two tables that fit merged into one that does not");
    assert_eq!(ab, ba, "merge depends on the order");
    assert_eq!(ab.digest(), ba.digest());
    let mut again = ab.clone();
    again.merge(a);
    again.merge(b);
    assert_eq!(again, ab, "merge is not idempotent");
    if ab.nodes.len() < mesh::MAX_TABLE_NODES {
        // Nothing was left out: the merge is the union, record by record.
        for i in 0..count {
            let mut want: Vec<&str> = a.heard(i).chain(b.heard(i)).collect();
            want.sort_unstable();
            want.dedup();
            assert_eq!(ab.heard(i).collect::<Vec<_>>(), want, "record {i}");
        }
    }
    let mut trimmed = a.clone();
    trimmed.nodes.retain(|(_, bits)| bits.iter().any(|x| *x != 0));
    assert_eq!(trimmed.digest(), a.digest());
}

/// The `table` target: `(count, a, b)` in bincode, the form a `Provenance` response uses
/// for each table (`count` is taken modulo 4096). Through serde and `Table`'s public
/// methods only, so that a change to the table's fields changes the seeds, not this.
pub fn table(data: &[u8]) {
    let Ok((count, a, b)) = message::decode::<(u32, Table, Table)>(data) else { return };
    round_trip(&a);
    table_pair(count as usize % 4096, &a, &b);
}

// ------------------------------------------------------------------ RaptorQ symbols

fn plan(layout: &Layout) -> Arc<Plan> {
    static PLANS: OnceLock<Mutex<HashMap<u32, Arc<Plan>>>> = OnceLock::new();
    let mut plans = PLANS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(plans.entry(layout.slots()).or_insert_with(|| Arc::new(Plan::new(layout))))
}

/// The requester's side of repair: `slots u8 | slot size u8 | seed u8 | ops…`. The target
/// builds a slot part (`1..=64` slots of `8..=64` bytes), a decoder holding the slots the
/// seed picks, and the holder's encoder. Each op byte then sends one symbol: even, a real
/// one (ESI from the next two bytes); odd, raw bytes from the input, of the symbol's length
/// or one byte off. Every symbol goes through `Symbol::from_bytes`, as the requester splits
/// a response. Checked: a symbol that validates re-encodes exactly and is never refused by
/// `Decoder::push`, raptorq never panics, a decode has the slot part's length, and a decode
/// from real symbols only is the slot part itself.
pub fn repair_symbols(data: &[u8]) {
    let [slots, size, seed, ops @ ..] = data else { return };
    let layout = Layout::new(8 * (1 + usize::from(size % 8)), 1 + usize::from(slots % 64)).expect("a layout");
    let (k, t) = (layout.slots(), layout.slot_size());
    let part: Vec<u8> = (0..layout.slot_part_len()).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
    let encoder = repair::Encoder::new(layout, &part, &plan(&layout)).expect("an encoder");
    let present: Vec<(u32, &[u8])> = (0..k)
        .filter(|i| (u32::from(*seed) >> (i % 8)) & 1 == 1 && i % 5 != 4)
        .map(|i| (i, &part[i as usize * t..(i as usize + 1) * t]))
        .collect();
    let mut decoder = Decoder::new(layout, present.iter().copied()).expect("a decoder");
    let mut genuine = true;
    let mut ops = ops;
    let mut done = decoder.try_finish().map(|p| assert_eq!(p, part)).is_some();
    while let [op, more @ ..] = ops {
        let wire = if op & 1 == 0 {
            let [e0, e1, more @ ..] = more else { break };
            ops = more;
            let esi = k + u32::from(u16::from_be_bytes([*e0, *e1]));
            encoder.repair(EsiRange { start: esi, count: 1 }).expect("a repair symbol").remove(0).to_bytes()
        } else {
            genuine = false;
            let len = (layout.symbol_len() + usize::from(op >> 1) % 3).saturating_sub(1).min(more.len());
            let (raw, more) = more.split_at(len);
            ops = more;
            raw.to_vec()
        };
        match Symbol::from_bytes(&wire, &layout) {
            Ok(symbol) => {
                assert_eq!(symbol.to_bytes(), wire, "symbol decode is not exact");
                assert!(layout.is_repair_esi(symbol.esi()));
                assert!(decoder.push(symbol).is_ok(), "push refused a checked symbol");
            }
            Err(_) => {
                let esi = || u32::from_be_bytes([0, wire[1], wire[2], wire[3]]);
                assert!(wire.len() != layout.symbol_len() || wire[0] != 0 || esi() < k, "a good symbol refused");
            }
        }
        if decoder.ready() {
            if let Some(rebuilt) = decoder.try_finish() {
                assert_eq!(rebuilt.len(), part.len());
                assert!(!genuine || rebuilt == part, "real symbols decoded to another slot part");
                done = true;
            }
        }
    }
    if !done {
        if let Some(rebuilt) = decoder.try_finish() {
            assert_eq!(rebuilt.len(), part.len());
            assert!(!genuine || rebuilt == part);
        }
    }
}

// ------------------------------------------------------------------ stream state

/// A stream's state as the store reads it back (`record::codec::from_slice`, as the node
/// does for "stream state"), then used: it re-encodes stably, reports, and takes the next
/// datagrams of its stream (a run of seqs, a duplicate, an old one, a reboot) without
/// panicking, whatever the stored counters and clocks hold.
pub fn stream_state(data: &[u8]) {
    let Ok(mut state) = codec::from_slice::<stream::State>(data, "stream state") else { return };
    let bytes = codec::to_vec(&state);
    let back: stream::State = codec::from_slice(&bytes, "stream state").expect("re-encoded state decodes");
    assert!(codec::to_vec(&back) == bytes, "re-encoding the state is not stable");
    let _ = state.report();
    let _ = state.last_device_time_ns();
    let s = StreamId::new(Dialect::Iotstream, 1001);
    let cfg = stream::Config::default();
    let arrival = 1_765_477_200_758_614_000u64;
    let steps: [(u64, u64, Kind, Presence); 6] = [
        (1, 1_000, Kind::Data, Presence::Absent),
        (2, 2_000, Kind::Data, Presence::Absent),
        (2, 2_000, Kind::Data, Presence::Same),
        (u64::MAX, 0, Kind::Data, Presence::Absent),
        (0, 3_000, Kind::Init, Presence::Absent),
        (1, 3_500, Kind::Heartbeat, Presence::Different),
    ];
    for (i, (seq, ms, kind, presence)) in steps.into_iter().enumerate() {
        let r = rec(s, ms, seq, kind, Readings::None);
        let predecessor = (i % 2 == 1).then_some(Neighbour { seq: 0, ext_seq: u64::MAX });
        let lookup = || Lookup { presence, predecessor };
        let _ = state.observe(&r, arrival + i as u64 * 1_000_000, &cfg, lookup);
        let _ = state.report();
    }
}

// ------------------------------------------------------------------ signed statements

/// The author a stored statement is checked as: the store keeps the author in the key, not
/// in the value.
pub const AUTHOR: &str = "12D3KooWAlpha";

/// A stand-in for the author's signature (`proto` holds no keys): the signed bytes XOR a
/// key stream made from the author's name. Injective in the bytes for one author, so a
/// statement whose signed bytes change cannot keep a signature that verifies; what the
/// target checks is that every change to a claim or a path changes the signed bytes.
pub fn sign(author: &str, bytes: &[u8]) -> Vec<u8> {
    let key = author.as_bytes();
    let k = |i: usize| key.get(i % key.len().max(1)).copied().unwrap_or(0).wrapping_mul(167).wrapping_add(i as u8);
    bytes.iter().enumerate().map(|(i, b)| b ^ k(i)).collect()
}

/// `verify(signed bytes, signature)` for [`sign`]'s author.
pub fn verifier(author: &str) -> impl Fn(&[u8], &[u8]) -> bool + '_ {
    move |bytes, signature| sign(author, bytes) == signature
}

/// Every change to what a statement says that its signature must catch: each field of the
/// claim (window, root, count, row), each sibling of the path (one bit flipped), the path
/// cut short, lengthened or given another first sibling. Only real changes are returned.
fn tampered(s: &Statement) -> Vec<(String, Statement)> {
    let mut out: Vec<(String, Statement)> = Vec::new();
    let mut with = |what: String, change: &dyn Fn(&mut Statement)| {
        let mut t = s.clone();
        change(&mut t);
        if t.claim != s.claim || t.path != s.path {
            out.push((what, t));
        }
    };
    with("stream".into(), &|t| t.claim.window.stream.device ^= 1);
    with("dialect".into(), &|t| {
        let d = &mut t.claim.window.stream.dialect;
        *d = if *d == Dialect::Secure { Dialect::Iotstream } else { Dialect::Secure };
    });
    with("start".into(), &|t| t.claim.window.start ^= 1);
    with("window".into(), &|t| t.claim.window.start = t.claim.window.start.wrapping_add(window::SPAN_NS));
    with("root".into(), &|t| t.claim.root[31] ^= 0x80);
    with("count".into(), &|t| t.claim.count ^= 1);
    with("first row byte".into(), &|t| match t.claim.row.first_mut() {
        Some(b) => *b ^= 1,
        None => t.claim.row.push(1),
    });
    with("last row byte".into(), &|t| {
        if let Some(b) = t.claim.row.last_mut() {
            *b ^= 0x80;
        }
    });
    with("row lengthened".into(), &|t| t.claim.row.push(0));
    with("row shortened".into(), &|t| {
        t.claim.row.pop();
    });
    for k in 0..s.path.len() {
        with(format!("sibling {k}"), &|t| t.path[k][k % 32] ^= 1 << (k % 8));
    }
    with("path shortened".into(), &|t| {
        t.path.pop();
    });
    with("path lengthened".into(), &|t| t.path.push([0; 32]));
    with("path prefixed".into(), &|t| t.path.insert(0, [0; 32]));
    out
}

/// A statement as the node uses it, kept from gossip or a `Statements` response or read
/// back from the store, signed (it says) by `author`:
///
/// - it re-encodes (the store's codec) to bytes that decode to the same value, stably;
/// - `signed()` and `verify` (with [`verifier`]) never panic and agree with each other; the
///   statement signed again over its own signed bytes verifies, and with any change of
///   [`tampered`] it does not;
/// - `covers` over every sample window never panics, gives one flag per record, and the
///   records it picks give the claimed root;
/// - `Evidence::add` (as it is, and signed again) over every sample window refuses exactly
///   what it should (another window, a bad signature, no cover), adds nothing when it
///   refuses, and backs only records the statement covers, each by `author` alone.
///
/// Bounded time is the implementation's (`covers` tries at most 64 combinations) and is
/// what libFuzzer's `-timeout` checks.
pub fn statement_checks(author: &str, s: &Statement) {
    let bytes = codec::to_vec(s);
    let back: Statement = codec::from_slice(&bytes, "statement").expect("a re-encoded statement decodes");
    assert_eq!(&back, s, "decode(encode(statement)) != statement");
    assert!(codec::to_vec(&back) == bytes, "re-encoding the statement is not stable");

    let verify = verifier(author);
    let signed = s.signed();
    let verifies = s.verify(&verify);
    let expected = s.signature.len() <= MAX_SIGNATURE && signed.as_ref().is_some_and(|b| sign(author, b) == s.signature);
    assert_eq!(verifies, expected, "verify disagrees with signed()");
    let resigned = signed.map(|b| Statement { signature: sign(author, &b), ..s.clone() });
    if let Some(r) = &resigned {
        assert!(r.verify(&verify), "a statement signed over its own signed bytes does not verify");
        for (what, t) in tampered(r) {
            assert!(!t.verify(&verify), "a statement with its {what} changed still verifies");
        }
    }

    for (summary, _, records) in &fixed().held {
        let covers = s.covers(records);
        if let Some(held) = &covers {
            assert_eq!(held.len(), records.len());
            let chosen: Vec<Record> = records.iter().zip(held).filter(|(_, h)| **h).map(|(r, _)| r.clone()).collect();
            let w = s.claim.window;
            let root = window::encode(w.stream, w.start, &chosen).ok().and_then(|b| window::outboard(&b).ok()).map(|t| t.root());
            assert_eq!(root, Some(s.claim.root), "covers picked records that do not give the claimed root");
        }
        let covered: BTreeSet<_> =
            records.iter().zip(covers.iter().flatten()).filter(|(_, h)| **h).map(|(r, _)| r.key()).collect();
        let w = summary.window;
        for statement in [Some(s), resigned.as_ref()].into_iter().flatten() {
            let mut evidence = Evidence::default();
            let result = evidence.add(w, records, author, statement, &verify);
            let expected = if statement.claim.window != w {
                Err(Unbacked::Window)
            } else if !statement.verify(&verify) {
                Err(Unbacked::Signature)
            } else if covers.is_none() {
                Err(Unbacked::Root)
            } else {
                Ok(())
            };
            assert_eq!(result, expected);
            if result.is_err() {
                assert_eq!(evidence, Evidence::default(), "a refused statement backed something");
            }
            for (key, names) in evidence.heard.iter().chain(&evidence.proved) {
                assert!(covered.contains(key), "evidence for a record the statement does not cover");
                assert!(names.len() == 1 && names.contains(author), "evidence names another author");
            }
        }
    }
}

/// The `statement` target: the bytes as the store keeps a statement
/// (`record::codec::from_slice::<Statement>`, the author being [`AUTHOR`]) and as a
/// `Statements` response (`message::decode::<Response>`, authors from the list), each
/// statement through [`statement_checks`].
pub fn statement(data: &[u8]) {
    if let Ok(s) = codec::from_slice::<Statement>(data, "statement") {
        statement_checks(AUTHOR, &s);
    }
    if let Ok(response @ Response::Statements(_)) = message::decode::<Response>(data) {
        round_trip(&response);
        let Response::Statements(list) = &response else { return };
        for (author, s) in list {
            statement_checks(author, s);
        }
    }
}

/// The announcement of an author holding `held` (records of one sample window, in key
/// order), as `statement::tests` builds it: its row says it heard the records `heard`
/// picks and proved those `proved` picks; with the compact index of its blob.
fn author_announced(held: &[Record], heard: impl Fn(usize) -> bool, proved: impl Fn(usize) -> bool) -> message::Announced {
    let blob = blob(held);
    let receipts = (0..held.len()).filter(|i| heard(*i)).map(|i| (i, "me", proved(i)));
    let table = Table::from_receipts(held.len(), receipts);
    let summary = mesh::summarize(&blob, &table).expect("summary");
    let (header, entries) = window::index(&blob).expect("index");
    let row = message::Row::of(table.nodes.first().map(|(_, b)| b.as_slice()), held.len());
    message::Announced { summary, index: Some(IndexPart::compact(&header, &entries)), row, others: Vec::new() }
}

/// The statements of one signed announcement of `windows` by `author`.
fn statements(author: &str, windows: &[message::Announced]) -> Vec<Statement> {
    let mut a = message::pack_announces(windows, [0; 8]).remove(0);
    a.sign(|bytes| sign(author, bytes));
    assert!(a.verify(verifier(author)));
    let all = Statement::all_of(&a);
    assert_eq!(all.len(), windows.len());
    all
}

// ------------------------------------------------------------------ seeds

/// The checked-in seeds: `(target, file name, bytes)`, from the real encoders.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let fixed = fixed();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        out.push((target, format!("seed_{name}"), bytes));
    };

    // mesh_message: gossip, every request against the samples, every response they get.
    let announced: Vec<message::Announced> = fixed
        .held
        .iter()
        .enumerate()
        .map(|(i, (s, held, _))| {
            let (header, entries) = window::index(&held.blob).expect("index");
            // Every kind of row: all heard, some heard and proved, none.
            let row = match i % 3 {
                0 => message::Row::All,
                1 => message::Row::of(held.table.nodes.first().map(|(_, b)| b.as_slice()), entries.len()),
                _ => message::Row::None,
            };
            // A coordinator's announcement relays other nodes' rows, misses among them.
            let others = if i % 3 == 0 { vec![(1, message::Row::Missing(vec![0])), (2, message::Row::All)] } else { Vec::new() };
            message::Announced { summary: *s, index: Some(IndexPart::compact(&header, &entries)), row, others }
        })
        .collect();
    // Signed by a stand-in as long as an ed25519 signature (`proto` holds no keys).
    for (i, bytes) in message::encode_announces(&announced, [7; 8], |b| vec![b.len() as u8; 64]).into_iter().enumerate() {
        add("mesh_message", format!("announce_{i}"), bytes);
    }
    let bare = Announce { windows: vec![announced[0].summary], indexes: vec![], rows: vec![], others: None, signature: vec![] };
    add("mesh_message", "announce_no_index".into(), message::encode(&bare));
    let (s0, _, _) = &fixed.held[0];
    let mut requests = vec![
        ("streams", Request::Streams { after: None }),
        ("windows", Request::Windows { stream: s0.window.stream, after: None }),
        ("provenance", Request::Provenance { window: s0.window, root: s0.root }),
        ("not_found", Request::Provenance { window: s0.window, root: [7; 32] }),
        ("statements", Request::Statements { window: s0.window }),
        ("symbols_refused", Request::Symbols { window: s0.window, root: s0.root, start: 0, count: 3 }),
    ];
    for (i, (s, _, _)) in fixed.held.iter().enumerate() {
        requests.push(("index", Request::Index { window: s.window, root: s.root, verified: false }));
        requests.push(("index_verified", Request::Index { window: s.window, root: s.root, verified: true }));
        let symbols = Request::Symbols { window: s.window, root: s.root, start: s.count + 5 * i as u32, count: 3 };
        requests.push(("symbols", symbols));
    }
    for (i, (name, request)) in requests.iter().enumerate() {
        add("mesh_message", format!("request_{i:02}_{name}"), message::encode(request));
        let response = serve::respond(request, fixed, &mut encoders().lock().unwrap_or_else(|e| e.into_inner()));
        add("mesh_message", format!("response_{i:02}_{name}"), message::encode(&response));
    }

    // index: each sample's compact and verified index.
    for (i, (s, held, _)) in fixed.held.iter().enumerate() {
        let (header, entries) = window::index(&held.blob).expect("index");
        add("index", format!("compact_{i}"), message::encode(&IndexPart::compact(&header, &entries)));
        let tree = window::outboard(&held.blob).expect("tree");
        let verified = IndexPart::verified(&held.blob, &tree).expect("verified");
        assert!(message::verify(&verified, s).is_ok());
        add("index", format!("verified_{i}"), message::encode(&verified));
    }

    // window: each sample's blob, as it is and (mode 1) with a reading changed and the
    // tags recomputed; the empty window.
    for (i, (_, held, _)) in fixed.held.iter().enumerate() {
        add("window", format!("blob_{i}"), [&[0u8][..], &held.blob].concat());
        let mut changed = held.blob.to_vec();
        let last = changed.len() - 9;
        changed[last] ^= 0x40;
        add("window", format!("blob_{i}_retag"), [&[1u8][..], &changed].concat());
    }
    let empty = window::encode(StreamId::new(Dialect::Secure, 1), START, &[]).expect("empty");
    add("window", "empty".into(), [&[0u8][..], &empty].concat());

    // window_compact: each sample as the store keeps it (pick byte: the sample's dialect).
    for (i, (_, _, sorted)) in fixed.held.iter().enumerate() {
        let pick = match sorted[0].stream.dialect {
            Dialect::Iotstream => 0u8,
            Dialect::Tinytelemetry => 1,
            Dialect::Secure => 2,
        };
        add("window_compact", format!("sample_{i}"), [&[pick][..], &compact::encode(START, sorted)].concat());
    }

    // merkle: a blob, each leaf size, a range, and each kind of untrusted part (honest).
    let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 13) as u8).collect();
    let cases: [(u8, u16, u16, u16); 6] =
        [(0, 3, 9, 40), (1, 0, 0, 21), (4, 2, 1, 300), (5, 1, 3, 130), (7, 0, 0, 300), (3, 5, 40, 299)];
    for (sel, start, end, len) in cases {
        let leaf_size = [1u32, 2, 3, 7, 32, 64, 1024, 4096][usize::from(sel & 7)];
        let blob = &data[..usize::from(len)];
        let tree = Outboard::<Blake3>::build(blob, leaf_size).expect("tree");
        let g = *tree.geometry();
        let n = g.num_leaves();
        let s = u64::from(start) % n;
        let e = s + 1 + u64::from(end) % (n - s);
        let range = ChunkNum(s)..ChunkNum(e);
        let b = g.range_bytes(&range).expect("range");
        let leaves = &blob[b.start as usize..b.end as usize];
        let proof = tree.prove(range).expect("proof").to_bytes();
        let head = |mode: u8| {
            [&[sel | mode << 3][..], &start.to_be_bytes(), &end.to_be_bytes(), &len.to_be_bytes(), blob].concat()
        };
        add("merkle", format!("proof_{sel}"), [head(0), proof.clone()].concat());
        add("merkle", format!("leaves_{sel}"), [head(1), leaves.to_vec()].concat());
        add("merkle", format!("outboard_{sel}"), [head(2), tree.to_bytes()].concat());
        if leaves.len() == proof.len() {
            add("merkle", format!("both_{sel}"), [head(3), leaves.to_vec(), proof].concat());
        }
    }

    // table: the samples' tables against each other, and the largest table that fits.
    for (i, (s, held, _)) in fixed.held.iter().enumerate() {
        let other = Table::from_heard(s.count as usize, (0..s.count as usize).map(|r| (r, "12D3KooWDelta")));
        add("table", format!("sample_{i}"), message::encode(&(s.count, &held.table, &other)));
    }
    let names: Vec<String> = (0..mesh::MAX_TABLE_NODES).map(|i| format!("12D3KooW{i:03}")).collect();
    let widest = Table::from_heard(9, names.iter().enumerate().map(|(i, n)| (i % 9, n.as_str())));
    assert!(widest.fits(9));
    add("table", "widest".into(), message::encode(&(9u32, &widest, &Table::from_heard(9, [(0, "12D3KooW000")]))));

    // repair: real symbols only (enough to decode), a corrupt one among them, a short one.
    add("repair", "real".into(), vec![9, 3, 0b1011_0110, 0, 0, 0, 0, 0, 1, 0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5]);
    let mut corrupt = vec![9, 3, 0b1011_0110, 0, 0, 0, 0, 0, 1, 3];
    corrupt.extend_from_slice(&[0, 0, 0, 12]);
    corrupt.extend((0..32).map(|i| i as u8));
    corrupt.extend_from_slice(&[0, 0, 2, 0, 0, 3, 0, 0, 4, 0, 0, 5]);
    add("repair", "corrupt".into(), corrupt);
    add("repair", "short".into(), vec![0, 0, 0, 3, 0, 0, 0]);
    add("repair", "all_present".into(), vec![7, 0, 0xff]);

    // stream_state: states after a few datagrams of each kind, in order, lost and reordered.
    let s = StreamId::new(Dialect::Iotstream, 1001);
    let cfg = stream::Config::default();
    let mut state = stream::State::default();
    add("stream_state", "new".into(), codec::to_vec(&state));
    for (i, (seq, kind)) in [(0, Kind::Init), (1, Kind::Data), (2, Kind::Data), (5, Kind::Data), (4, Kind::Heartbeat)]
        .into_iter()
        .enumerate()
    {
        let r = rec(s, 1_000 * seq, seq, kind, Readings::Batch(vec![1.0]));
        let _ = state.observe(&r, 1_765_477_200_000_000_000 + i as u64 * 999_000_000, &cfg, || Lookup {
            presence: Presence::Absent,
            predecessor: None,
        });
        add("stream_state", format!("after_{i}"), codec::to_vec(&state));
    }
    // statement: real signed statements of the samples. Whole windows (one announcement of
    // all four, rows with some records not heard and some proved); partial windows with
    // their index (the first sample without every seventh record and with one version of
    // its conflict, so that `covers` has two candidates to try; three windows, so one
    // path carries a node up); a partial one without its index (backs nothing); and a
    // `Statements` response of three authors.
    let held = &fixed.held;
    let whole = statements(
        AUTHOR,
        &[
            author_announced(&held[0].2, |_| true, |_| false),
            author_announced(&held[1].2, |i| i % 2 == 0, |i| i % 4 == 0),
            author_announced(&held[2].2, |_| true, |_| true),
            author_announced(&held[3].2, |_| true, |_| false),
        ],
    );
    let mut conflict = 0;
    let a: Vec<Record> = held[0]
        .2
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let twin = r.seq == 20 && {
                conflict += 1;
                conflict == 2
            };
            i % 7 != 3 && !twin
        })
        .map(|(_, r)| r.clone())
        .collect();
    assert_eq!(conflict, 2, "the first sample has its conflict");
    let partial_windows = [
        author_announced(&a, |i| i != 5, |i| i % 3 == 1),
        author_announced(&held[1].2[3..], |_| true, |i| i == 2),
        author_announced(&held[2].2[..held[2].2.len() - 1], |i| i > 0, |_| false),
    ];
    let partial = statements(AUTHOR, &partial_windows);
    for (i, (s, sample)) in whole.iter().zip(held).chain(partial.iter().zip(held)).enumerate() {
        let mut evidence = Evidence::default();
        evidence.add(sample.0.window, &sample.2, AUTHOR, s, verifier(AUTHOR)).expect("a seed backs its records");
        assert!(!evidence.heard.is_empty(), "seed statement {i} backs nothing");
    }
    assert!(partial[2].path.len() == 1 && partial[2].at == 2, "a carried-up node");
    for (i, s) in whole.iter().enumerate() {
        add("statement", format!("stored_whole_{i}"), codec::to_vec(s));
    }
    for (i, s) in partial.iter().enumerate() {
        add("statement", format!("stored_partial_{i}"), codec::to_vec(s));
    }
    add("statement", "stored_partial_no_index".into(), codec::to_vec(&Statement { index: None, ..partial[0].clone() }));
    let bravo = statements("12D3KooWBravo", &partial_windows[..1]).remove(0);
    let charlie = statements("12D3KooWCharlie", &[author_announced(&held[0].2, |i| i % 5 != 0, |_| false)]).remove(0);
    let list = vec![(AUTHOR.to_owned(), whole[0].clone()), ("12D3KooWBravo".to_owned(), bravo), ("12D3KooWCharlie".to_owned(), charlie)];
    add("statement", "response".into(), message::encode(&Response::Statements(list)));
    out
}
