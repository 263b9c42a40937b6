//! The properties the node's fuzz targets check, one function per target, and the seeds
//! they start from. Shared by the targets (`fuzz_targets/*.rs`, through `#[path]`) and by
//! `node/tests/fuzz_corpus.rs` (every checked-in input under plain `cargo test`; it also
//! writes the seeds, from the store's own encoders). Depends on `telemesh-node`,
//! `telemesh-proto` and std only.
//!
//! The values are those the store reads back from disk (`node/src/store/`, through
//! `store::fuzzing`): a sealed window's value (and, read from the same bytes, a stream's
//! sum), a chunk, a sealed window's location and the
//! segment file it points into, and the write-ahead log's segment files. A property
//! violated is a panic: that is what the fuzzer reports. Records are compared as bytes
//! (re-encoded), never as values, because a NaN reading is not equal to itself.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use telemesh_node::store::fuzzing;
use telemesh_node::store::segment::{Loc, Segments};
use telemesh_node::store::wal::{self, Entry, Wal, FRAME_HEADER};
use telemesh_node::store::{self, StoredRecord};
use telemesh_proto::mesh::StreamSum;
use telemesh_proto::record::{codec, Kind, Readings, Record, SensorCode, StreamId};
use telemesh_proto::window;
use telemesh_proto::wire::Dialect;

/// The targets, as named in `Cargo.toml` and `corpus/`.
pub const TARGETS: [&str; 5] = ["sealed", "chunk", "wal", "wal_legacy", "segment"];

/// Runs target `name` on one input.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "sealed" => sealed(data),
        "chunk" => chunk(data),
        "wal" => wal_segment(data),
        "wal_legacy" => legacy_segment(data),
        "segment" => sealed_segment(data),
        _ => panic!("no target {name}"),
    }
}

// ------------------------------------------------------------------ samples

/// Start of the samples' window (aligned); every value is read as a value of it.
pub const START: u64 = 1_765_477_200_000_000_000 - 1_765_477_200_000_000_000 % window::SPAN_NS;

/// The node the store runs as (the name its provenance tables give it).
pub const ME: &str = "12D3KooWAlpha";

/// The streams a value is read as (the store takes the stream from the value's key): a
/// target's first byte picks one.
pub fn streams() -> [StreamId; 5] {
    [
        StreamId::new(Dialect::Iotstream, 1001),
        StreamId::new(Dialect::Tinytelemetry, 7),
        StreamId::new(Dialect::Secure, 42),
        StreamId::new(Dialect::Iotstream, 65535),
        StreamId::new(Dialect::Iotstream, 1002),
    ]
}

fn pick(b: u8) -> StreamId {
    streams()[usize::from(b) % 5]
}

fn rec(stream: StreamId, offset_ms: u64, seq: u64, kind: Kind, readings: Readings) -> Record {
    Record { stream, device_time_ns: START + offset_ms * 1_000_000, seq, timestamp_raw: offset_ms, kind, readings }
}

/// What this node knows of a record, varied by `i`: copies (one, several, none: repaired),
/// proved, an extended seq past a wrap or a reboot, a transit time (negative: a device
/// clock ahead), and other nodes that heard and proved it.
fn stored(record: Record, i: u64) -> StoredRecord {
    let transit = [758_614_000i64, 12_000, -3_000_000_000, 0][i as usize % 4];
    let ext = record.seq + [0, 1 << 32, 0, 5 << 16][i as usize % 4];
    let arrival = record.device_time_ns.wrapping_add(transit as u64);
    let mut r = if i % 5 == 4 { StoredRecord::repaired(record, ext) } else { StoredRecord::new(record, ext, arrival) };
    r.copies = if r.copies == 0 { 0 } else { [1, 2, 1, 40_000][i as usize % 4] };
    r.proved = i % 3 == 1;
    let others: [&[&str]; 4] = [&[], &["12D3KooWBravo"], &["12D3KooWBravo", "12D3KooWCharlie"], &["12D3KooWCharlie"]];
    r.heard_by = others[i as usize % 4].iter().map(|n| Arc::from(*n)).collect();
    r.proved_by = r.heard_by.iter().filter(|_| i.is_multiple_of(2)).take(1).cloned().collect();
    r
}

/// Windows as the store seals them (merged, in key order), one per stream of
/// [`streams`]: every dialect's readings, a gap, a conflict (two records with the same
/// time and seq), odd floats, repaired records; and a window of 350 large records, whose blob
/// is large enough for the store to keep its hash tree.
pub fn samples() -> Vec<Vec<StoredRecord>> {
    let [iot, tt, sec, one, big] = streams();
    let mut a: Vec<Record> = vec![rec(iot, 0, 0, Kind::Init, Readings::None)];
    a.extend((1..30u64).filter(|i| *i != 17).map(|i| {
        rec(iot, i * 1000, i, Kind::Data, Readings::Batch(vec![29.37, 23.53, 22.61, i as f32 / 4.0]))
    }));
    a.push(rec(iot, 20_000, 20, Kind::Data, Readings::Batch(vec![-1.0]))); // conflict with seq 20
    a.push(rec(iot, 31_000, 31, Kind::Heartbeat, Readings::None));
    let b: Vec<Record> = (0..12u64)
        .map(|i| {
            let odd = [0.0, -0.0, f32::INFINITY, f32::NAN, 1e-45, f32::MAX][i as usize % 6];
            rec(tt, i * 5000, 100 + i, Kind::Data, Readings::Sensors(vec![(SensorCode(1), 21.5), (SensorCode(3), odd)]))
        })
        .collect();
    let c: Vec<Record> = (0..6u64)
        .map(|i| {
            let pairs = vec![("CPU".to_owned(), 72.3), ("MEM".to_owned(), 41.2 + i as f64), ("E".to_owned(), 1e-300)];
            rec(sec, i * 9_731 + i * i * 17, 1 << 40 | i, Kind::Data, Readings::Pairs(pairs))
        })
        .collect();
    let d = vec![rec(one, 59_999, 65535, Kind::Heartbeat, Readings::None)];
    let e: Vec<Record> =
        (0..350u64).map(|i| rec(big, i * 150, i, Kind::Data, Readings::Batch(vec![20.5; 47]))).collect();
    [a, b, c, d, e]
        .into_iter()
        .map(|w| store::merge(w.into_iter().enumerate().map(|(i, r)| stored(r, i as u64)).collect()))
        .collect()
}

// ------------------------------------------------------------------ helpers

fn names(list: &[Arc<str>]) -> Vec<&str> {
    list.iter().map(|n| n.as_ref()).collect()
}

/// Everything stored records hold, as bytes: the chunk encoding (time, seq, tag, kind,
/// readings, raw timestamp, extended seq, arrival, receipt) plus the stream, the exact
/// copy count and who else heard and proved each.
pub fn fingerprint(records: &[StoredRecord]) -> Vec<u8> {
    let mut out = fuzzing::encode_chunk(records);
    for r in records {
        let extra = (r.record.stream.key_prefix(), r.copies, r.proved, names(&r.heard_by), names(&r.proved_by));
        out.extend(codec::to_vec(&extra));
    }
    out
}

/// A scratch directory of this process and thread, for the readers that want a file.
fn scratch(what: &str) -> PathBuf {
    let thread = format!("{:?}", std::thread::current().id()).replace(|c: char| !c.is_ascii_alphanumeric(), "");
    let dir = std::env::temp_dir().join(format!("telemesh-fuzz-{what}-{}-{thread}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// `file` with every frame's checksum recomputed, walking the frames from the start as far
/// as their lengths go: so that mutated payloads get past the checksum to the decoders.
pub fn retag(file: &[u8]) -> Vec<u8> {
    let mut out = file.to_vec();
    let mut at = 0usize;
    while let Some(head) = out.get(at..at + FRAME_HEADER) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let Some(payload) = out.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else { break };
        let sum: [u8; 8] = wal::frame(payload)[4..FRAME_HEADER].try_into().expect("8 bytes");
        out[at + 4..at + FRAME_HEADER].copy_from_slice(&sum);
        at += FRAME_HEADER + len;
    }
    out
}

/// Where to change a frame of `len` bytes at `at` of a file: every header byte, and the
/// payload's first, middle and last.
fn changes(at: usize, len: usize) -> Vec<usize> {
    let mut p: Vec<usize> = (at..at + FRAME_HEADER.min(len)).collect();
    if len > FRAME_HEADER {
        p.extend([at + FRAME_HEADER, at + (FRAME_HEADER + len) / 2, at + len - 1]);
    }
    p.dedup();
    p
}

fn changed(file: &[u8], at: usize) -> Vec<u8> {
    let mut m = file.to_vec();
    m[at] ^= 1 << (at % 8);
    m
}

// ------------------------------------------------------------------ chunks

/// A chunk (first byte: the stream of its key, then the value).
pub fn chunk(data: &[u8]) {
    let Some((&p, bytes)) = data.split_first() else { return };
    let _ = chunk_value(pick(p), bytes);
}

/// A chunk's value as the store reads it (a live window's part, or a log entry's chunk at
/// recovery): if it decodes, its records re-encode to bytes that decode to the same records,
/// stably; merged as a window's parts are merged (with itself: a record written twice), one
/// record per key, in key order, copies added up.
pub fn chunk_value(stream: StreamId, bytes: &[u8]) -> Option<Vec<StoredRecord>> {
    let records = fuzzing::decode_chunk(stream, bytes)?;
    let again = fuzzing::encode_chunk(&records);
    let back = fuzzing::decode_chunk(stream, &again).expect("a re-encoded chunk decodes");
    assert!(fingerprint(&back) == fingerprint(&records), "decode(encode(chunk)) != chunk");
    assert!(fuzzing::encode_chunk(&back) == again, "re-encoding a chunk is not stable");
    for r in &records {
        assert!(r.record.stream == stream && r.heard_by.is_empty() && r.proved_by.is_empty());
        assert!(r.copies < 1 << 31, "a copy count past the receipt's 31 bits");
    }
    let once = store::merge(records.clone());
    let twice = store::merge(records.iter().chain(&records).cloned().collect());
    assert!(twice.windows(2).all(|w| w[0].order_key() < w[1].order_key()), "merged records out of key order");
    assert_eq!(twice.len(), once.len(), "a record written twice is two records");
    for (t, o) in twice.iter().zip(&once) {
        assert_eq!(t.order_key(), o.order_key());
        assert_eq!(t.copies, o.copies.saturating_mul(2), "copies of a record written twice");
    }
    Some(records)
}

// ------------------------------------------------------------------ sealed windows

/// A sealed window's value (first byte: the stream of its key, then the value).
pub fn sealed(data: &[u8]) {
    let Some((&p, bytes)) = data.split_first() else { return };
    sealed_value(pick(p), bytes);
    stream_sum(bytes);
}

/// A stream's sum (the other value `windows` holds, under the stream's prefix): if the
/// bytes decode, the sum re-encoded decodes to the same sum, stably, and its digest is
/// that of the stream it is read for.
pub fn stream_sum(bytes: &[u8]) {
    let Ok(sum) = codec::from_slice::<StreamSum>(bytes, "stream sum") else { return };
    let again = codec::to_vec(&sum);
    let back = codec::from_slice::<StreamSum>(&again, "stream sum").expect("a re-encoded stream sum decodes");
    assert!(back == sum, "decode(encode(sum)) != sum");
    assert!(codec::to_vec(&back) == again, "re-encoding a stream sum is not stable");
    let stream = streams()[0];
    assert!(sum.digest(stream).windows == sum.windows && sum.digest(stream).stream == stream);
}

/// A sealed window's value as the store reads it (`decode_sealed`; `read_summary` reads the
/// value alone and must agree). If it decodes: the records are as many as the provenance
/// table and columns say (the table fits them, each record lists exactly the nodes whose
/// row has its bit, proved ones among them; the table the store serves fits too); the
/// value re-encoded decodes to the same value and records, stably; and sealed again from
/// its records, as a merge of peers' rows rewrites it, it reads back as the same records
/// (stably), with the root, count and hash tree of their blob.
pub fn sealed_value(stream: StreamId, bytes: &[u8]) {
    let value = fuzzing::decode_sealed_value(bytes);
    let Some((fields, records)) = fuzzing::decode_sealed(stream, START, bytes) else { return };
    assert!(value.as_ref() == Some(&fields), "the summary's reading of the value differs");
    let n = records.len();
    assert!(fields.heard.fits(n), "a decoded window's records do not fit its provenance table");
    for (i, r) in records.iter().enumerate() {
        let inside = r.record.stream == stream && window::start(r.record.device_time_ns) == START;
        assert!(inside, "a record outside its window");
        assert_eq!(names(&r.heard_by), fields.heard.heard(i).collect::<Vec<_>>(), "record {i}: who heard it");
        assert_eq!(names(&r.proved_by), fields.heard.proved(n, i).collect::<Vec<_>>(), "record {i}: who proved it");
        assert!(r.tag == r.record.content_tag());
    }
    assert!(store::table(&records, ME).fits(n), "the table served for a window does not fit it");

    let again = fuzzing::encode_sealed(&fields);
    let (f2, r2) = fuzzing::decode_sealed(stream, START, &again).expect("a re-encoded sealed value decodes");
    assert!(f2 == fields, "decode(encode(value)) != value");
    assert!(fingerprint(&r2) == fingerprint(&records), "decode(encode(value)) has other records");
    assert!(fuzzing::encode_sealed(&f2) == again, "re-encoding a sealed value is not stable");

    let Some(resealed) = fuzzing::seal(stream, START, &records, ME) else { return };
    let (f3, r3) = fuzzing::decode_sealed(stream, START, &resealed).expect("a value the store writes reads back");
    assert!(fingerprint(&r3) == fingerprint(&records), "sealing a window's records again changes them");
    assert!(fuzzing::seal(stream, START, &r3, ME).as_ref() == Some(&resealed), "sealing again is not stable");
    assert!(fingerprint(&store::merge(records.clone())) == fingerprint(&records), "a sealed window is not merged");
    // Served as `Store::sealed` serves it: the blob of the records, its tree and root.
    let plain: Vec<Record> = records.iter().map(|r| r.record.clone()).collect();
    let blob = window::encode(stream, START, &plain).expect("the records sealed, so they encode");
    let tree = window::outboard(&blob).expect("a blob's tree");
    assert!(f3.root == tree.root() && f3.count as usize == n);
    assert!(f3.outboard.as_ref().is_none_or(|o| *o == tree.to_bytes()), "a kept hash tree is not the blob's");
    assert!(f3.outboard.is_some() == (blob.len() > store::OUTBOARD_KEPT_OVER));
}

// ------------------------------------------------------------------ the write-ahead log

/// Entries as the log appends them: one frame each, of the entry's payload.
pub fn log_file(entries: &[(u64, Vec<wal::Part<'_>>)]) -> Vec<u8> {
    entries.iter().flat_map(|(id, parts)| wal::frame(&wal::encode_entry(*id, parts).0)).collect()
}

/// A segment file of the write-ahead log (first byte: bit 0 set, every frame's checksum is
/// recomputed first; then the file). `Wal::open` over the file (written to a scratch
/// directory as the log's only segment) and `wal::read_segment` on its bytes agree (the
/// heads of the chains, damaged or not); every chain read back from a head
/// (`Wal::read_chain`, as a seal or recovery reads it) ends, and its parts' rows go through
/// the chunk checks; every entry's parts re-encode to its payload; cut inside frame `j`,
/// the file reads as the first `j` entries and damaged; with one byte changed in frame `j`,
/// as the first `j` entries or more (a frame is refused or read as the same payload).
pub fn wal_segment(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode & 1 == 1 { retag(rest) } else { rest.to_vec() };
    let (heads, ids, torn) = wal::read_segment(&file, 0);

    let dir = scratch("wal");
    let path = dir.join(format!("{:016x}.wal", 0));
    std::fs::write(&path, &file).expect("write the log segment");
    let opened = Wal::open(&dir).expect("open the log");
    let agree = opened.heads == heads && opened.damaged == usize::from(torn) && opened.legacy.is_empty();
    assert!(agree, "Wal::open and wal::read_segment disagree");
    for (key, w, head) in heads.iter().take(8) {
        let walk = opened.wal.read_chain(*key, *w, *head, None).expect("read a chain");
        assert!(walk.rows.len() <= wal::MAX_CHAIN);
        if let Some(stream) = StreamId::from_key_prefix(key) {
            for rows in walk.rows.iter().take(4) {
                let _ = chunk_value(stream, rows);
            }
        }
    }
    drop(opened);
    let _ = std::fs::remove_file(&path);

    let mut at = 0usize;
    let mut j = 0usize;
    while let Some((payload, len)) = file.get(at..).and_then(wal::unframe) {
        let Some((id, parts)) = wal::decode_entry(payload) else { break };
        let parts: Vec<wal::Part<'_>> = parts.into_iter().map(|(_, p)| p).collect();
        assert!(wal::encode_entry(id, &parts).0 == payload, "an entry re-encodes otherwise");
        if j < 4 {
            for cut in [at + 1, at + len / 2, at + len - 1] {
                let (_, got, torn) = wal::read_segment(&file[..cut], 0);
                assert!(torn && got[..] == ids[..j], "a log cut inside entry {j}");
            }
            for p in changes(at, len) {
                let (_, got, _) = wal::read_segment(&changed(&file, p), 0);
                assert!(got.len() >= j && got[..] == ids[..got.len()], "entry {j} changed at {p} reads otherwise");
            }
        }
        j += 1;
        at += len;
    }
}

/// Entries of the log before chains, as older nodes appended them: one frame each.
pub fn legacy_file(entries: &[(u64, Entry)]) -> Vec<u8> {
    entries.iter().flat_map(|e| wal::frame(&codec::to_vec(e))).collect()
}

/// A segment file of the log before chains (first byte: bit 0 set, every frame's checksum
/// is recomputed first, then the file), as a node reads it once at start. `Wal::open` over
/// the file (written to a scratch directory) and `wal::read_legacy` on its bytes agree;
/// every entry's chunks go through the chunk checks, as recovery reads them (`wal::unframe`
/// on the file re-frames to the same bytes); the entries framed again read back as they
/// are; cut inside frame `j`, the file reads as the first `j` entries and damaged; with one
/// byte changed in frame `j`, as the first `j` entries or more, each as it is (a frame is
/// refused or read as the same payload).
pub fn legacy_segment(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode & 1 == 1 { retag(rest) } else { rest.to_vec() };
    if let Some((payload, n)) = wal::unframe(&file) {
        assert!(wal::frame(payload) == file[..n], "a frame that reads is not the frame of its payload");
    }
    let (entries, torn) = wal::read_legacy(&file);

    let dir = scratch("wal_legacy");
    let path = dir.join(format!("{:016x}.log", 0));
    std::fs::write(&path, &file).expect("write the log segment");
    let opened = Wal::open(&dir).expect("open the log");
    let _ = std::fs::remove_file(&path);
    assert!(opened.legacy == entries && opened.damaged == usize::from(torn), "Wal::open and wal::read_legacy disagree");
    drop(opened);

    for (_, entry) in &entries {
        for (prefix, _, bytes) in entry {
            if let Some(stream) = StreamId::from_key_prefix(prefix) {
                let _ = chunk_value(stream, bytes);
            }
        }
    }

    let again = legacy_file(&entries);
    assert!(wal::read_legacy(&again) == (entries.clone(), false), "entries framed again read otherwise");
    let mut at = 0usize;
    for (j, e) in entries.iter().enumerate().take(4) {
        let len = wal::frame(&codec::to_vec(e)).len();
        for cut in [at + 1, at + len / 2, at + len - 1] {
            let (got, torn) = wal::read_legacy(&again[..cut]);
            assert!(torn && got[..] == entries[..j], "a log cut inside entry {j}");
        }
        for p in changes(at, len) {
            let (got, _) = wal::read_legacy(&changed(&again, p));
            assert!(got.len() >= j && got[..] == entries[..got.len()], "entry {j} changed at {p} reads otherwise");
        }
        at += len;
    }
}

// ------------------------------------------------------------------ sealed segments

/// `Segments::read` over `file` (written to a scratch directory as segment 0).
pub fn segments_read(file: &[u8], loc: Loc) -> Option<Vec<u8>> {
    let dir = scratch("sealed");
    let path = dir.join(format!("{:016x}.seg", 0));
    std::fs::write(&path, file).expect("write the segment");
    let got = Segments::open(&dir).expect("open the segments").read(Loc { segment: 0, ..loc }).expect("read");
    let _ = std::fs::remove_file(&path);
    got
}

/// A sealed window's location and the segment file it points into (`mode u8, location
/// length u8, location, file`; mode bit 0: every frame's checksum is recomputed first, the
/// other bits pick the stream). A location that decodes re-encodes to itself;
/// `Segments::read` and its copy on bytes agree; a payload read is framed by the bytes at
/// its location, and goes through the sealed value's checks. Every frame of the file from
/// its start (as the store appends them) reads back at its location; changed in one byte,
/// or read at a location one byte off, it is refused or read as the same payload.
pub fn sealed_segment(data: &[u8]) {
    let [mode, n, rest @ ..] = data else { return };
    let (loc_bytes, file) = rest.split_at(usize::from(*n).min(rest.len()));
    let file = if mode & 1 == 1 { retag(file) } else { file.to_vec() };
    let stream = pick(mode >> 1);
    if let Some(loc) = fuzzing::decode_loc(loc_bytes) {
        let loc = Loc { segment: 0, ..loc };
        assert!(fuzzing::decode_loc(&codec::to_vec(&loc)) == Some(loc), "a location re-encodes otherwise");
        let got = fuzzing::read_frame(&file, loc);
        assert!(segments_read(&file, loc) == got, "Segments::read and its copy disagree");
        if let Some(payload) = got {
            let at = loc.offset as usize;
            assert!(wal::frame(&payload) == file[at..at + loc.len as usize], "a payload read is not framed there");
            sealed_value(stream, &payload);
        }
    }
    let mut at = 0usize;
    let mut frames = 0;
    while let Some((payload, len)) = file.get(at..).and_then(wal::unframe) {
        let loc = Loc { segment: 0, offset: at as u64, len: len as u32 };
        assert!(fuzzing::read_frame(&file, loc).as_deref() == Some(payload), "a frame does not read at its location");
        if frames < 4 {
            for p in changes(at, len) {
                let got = fuzzing::read_frame(&changed(&file, p), loc);
                assert!(got.is_none() || got.as_deref() == Some(payload), "a changed frame reads as another payload");
            }
            let off = [
                Loc { offset: loc.offset + 1, ..loc },
                Loc { offset: loc.offset.saturating_sub(1), ..loc },
                Loc { len: loc.len + 1, ..loc },
                Loc { len: loc.len - 1, ..loc },
            ];
            for other in off.into_iter().filter(|o| *o != loc) {
                let got = fuzzing::read_frame(&file, other);
                assert!(got.is_none() || got.as_deref() == Some(payload), "a frame read one byte off");
            }
        }
        frames += 1;
        at += len;
    }
}

// ------------------------------------------------------------------ seeds

/// The checked-in seeds: `(target, file name, bytes)`, from the store's encoders.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |target: &'static str, name: String, bytes: Vec<u8>| {
        out.push((target, format!("seed_{name}"), bytes));
    };
    let samples = samples();
    let pick_of =
        |w: &[StoredRecord]| streams().iter().position(|s| *s == w[0].record.stream).expect("a sample stream") as u8;

    // sealed: each sample as the store seals it, and an empty window.
    let mut values = Vec::new();
    for (i, w) in samples.iter().enumerate() {
        let value = fuzzing::seal(w[0].record.stream, START, w, ME).expect("a sample seals");
        add("sealed", format!("sample_{i}"), [&[pick_of(w)][..], &value].concat());
        values.push((pick_of(w), value));
    }
    let empty = fuzzing::seal(streams()[2], START, &[], ME).expect("an empty window seals");
    add("sealed", "empty".into(), [&[2u8][..], &empty].concat());
    // A stream's sum of the samples' summaries, as the store keeps it.
    let summaries: Vec<telemesh_proto::mesh::Summary> = values
        .iter()
        .filter_map(|(p, v)| fuzzing::decode_sealed_value(v).map(|f| (streams()[usize::from(*p)], f)))
        .map(|(stream, f)| telemesh_proto::mesh::Summary {
            window: telemesh_proto::mesh::WindowId { stream, start: START },
            root: f.root,
            count: f.count,
            slot_size: f.slot_size,
            provenance: f.digest,
        })
        .collect();
    add("sealed", "stream_sum".into(), [&[0u8][..], &codec::to_vec(&StreamSum::of(&summaries))].concat());

    // chunk: each sample as one chunk, a few records of it (a flush), and an empty chunk.
    for (i, w) in samples.iter().enumerate().take(4) {
        add("chunk", format!("sample_{i}"), [&[pick_of(w)][..], &fuzzing::encode_chunk(w)].concat());
        let few: Vec<StoredRecord> = w.iter().skip(1).step_by(3).take(4).cloned().collect();
        add("chunk", format!("flush_{i}"), [&[pick_of(w)][..], &fuzzing::encode_chunk(&few)].concat());
    }
    add("chunk", "empty".into(), vec![0, 0]);

    // wal: entries as the store appends them (per flush, every slow stream's part of each
    // window, naming the window's part before), as they are and with checksums recomputed,
    // and a segment whose last frame is torn.
    let chunks: Vec<Vec<Vec<u8>>> = (0..4usize)
        .map(|id| {
            samples.iter().take(4).map(|w| fuzzing::encode_chunk(&w.iter().skip(id).step_by(4).cloned().collect::<Vec<_>>())).collect()
        })
        .collect();
    let mut entries: Vec<(u64, Vec<wal::Part<'_>>)> = Vec::new();
    let mut heads: Vec<Option<wal::PartLoc>> = vec![None; 4];
    let mut offset = 0usize;
    for (id, rows) in chunks.iter().enumerate() {
        let parts: Vec<wal::Part<'_>> = samples
            .iter()
            .take(4)
            .zip(rows)
            .enumerate()
            .filter(|(i, (w, _))| (w.len() + id + i).is_multiple_of(2) || id == 0)
            .map(|(i, (w, rows))| wal::Part { key: w[0].record.stream.key_prefix(), window_start: START, prev: heads[i], rows })
            .collect();
        let (payload, at) = wal::encode_entry(id as u64, &parts);
        for (part, (off, len)) in parts.iter().zip(&at) {
            let i = samples.iter().position(|w| w[0].record.stream.key_prefix() == part.key).expect("a sample");
            heads[i] = Some(wal::PartLoc { segment: 0, offset: (offset + FRAME_HEADER + off) as u32, len: *len as u32 });
        }
        offset += FRAME_HEADER + payload.len();
        entries.push((id as u64, parts));
    }
    let file = log_file(&entries);
    add("wal", "segment".into(), [&[0u8][..], &file].concat());
    add("wal", "segment_retag".into(), [&[1u8][..], &file].concat());
    add("wal", "torn".into(), [&[0u8][..], &file[..file.len() - 5]].concat());

    // wal_legacy: entries as older nodes appended them (per flush, every slow stream's chunk
    // of it), as they are and with checksums recomputed, and a segment whose last frame is
    // torn.
    let entries: Vec<(u64, Entry)> = (0..4u64)
        .map(|id| {
            let entry: Entry = samples
                .iter()
                .take(4)
                .filter(|w| (w.len() as u64 + id).is_multiple_of(2) || id == 0)
                .map(|w| {
                    let part: Vec<StoredRecord> = w.iter().skip(id as usize).step_by(4).cloned().collect();
                    (w[0].record.stream.key_prefix(), START, fuzzing::encode_chunk(&part))
                })
                .collect();
            (id + 7, entry)
        })
        .collect();
    let file = legacy_file(&entries);
    add("wal_legacy", "segment".into(), [&[0u8][..], &file].concat());
    add("wal_legacy", "segment_retag".into(), [&[1u8][..], &file].concat());
    add("wal_legacy", "torn".into(), [&[0u8][..], &file[..file.len() - 5]].concat());
    add("wal_legacy", "one".into(), [&[1u8][..], &legacy_file(&entries[1..2])].concat());

    // segment: the sealed values of the small samples in one segment file, a location of
    // each (mode: the stream, checksums as they are; one with them recomputed).
    let mut file = Vec::new();
    let mut locs = Vec::new();
    for (pick, value) in values.iter().take(4) {
        let f = wal::frame(value);
        locs.push((*pick, Loc { segment: 0, offset: file.len() as u64, len: f.len() as u32 }));
        file.extend(f);
    }
    for (i, (pick, loc)) in locs.iter().enumerate() {
        let loc = codec::to_vec(loc);
        let retag = u8::from(i == 3);
        add("segment", format!("loc_{i}"), [&[pick << 1 | retag, loc.len() as u8][..], &loc, &file].concat());
    }
    out
}
