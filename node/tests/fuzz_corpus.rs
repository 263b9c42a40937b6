//! The node's fuzz targets' inputs under `cargo test`, without cargo-fuzz: every file of
//! `node/fuzz/corpus/<target>/` goes through the same checks the target makes
//! (`node/fuzz/check.rs`; `seed_*`: the seeds; `regress_*`: minimised inputs a fuzzing run
//! found, kept so that their fix stays fixed; other files: a run's minimised corpus). The
//! checked-in seeds must be what `check::seeds()` writes today, and the copies of the
//! store's writers and readers the targets use (`store::fuzzing`) must agree with a real
//! store's files.
//!
//! To write the seeds again (replacing `seed_*`, keeping every other file):
//!
//!     cargo test -p telemesh-node --test fuzz_corpus -- --ignored write_seeds

#[path = "../fuzz/check.rs"]
mod check;
#[path = "../../proto/tests/replay/mod.rs"]
mod replay;

use std::path::{Path, PathBuf};

use telemesh_node::store::fuzzing;
use telemesh_node::store::wal::{self, Wal};
use telemesh_node::store::{Encoded, Sealing, SledStore, Store, StoredRecord};

fn dir(target: &str) -> PathBuf {
    replay::dir(env!("CARGO_MANIFEST_DIR"), target)
}

#[test]
fn every_input_passes_its_target() {
    replay::every_input_passes(env!("CARGO_MANIFEST_DIR"), &check::TARGETS, check::run);
}

#[test]
fn the_seeds_are_up_to_date() {
    let rerun = "cargo test -p telemesh-node --test fuzz_corpus -- --ignored write_seeds";
    replay::seeds_are_up_to_date(env!("CARGO_MANIFEST_DIR"), &check::TARGETS, &check::seeds(), rerun);
}

/// Writes `node/fuzz/corpus/<target>/seed_*` (replacing the old seeds, leaving every other
/// file alone). Deterministic.
#[test]
#[ignore = "writes the seed corpus"]
fn write_seeds() {
    let seeds = check::seeds();
    for target in check::TARGETS {
        let dir = dir(target);
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for entry in std::fs::read_dir(&dir).expect("corpus directory") {
            let entry = entry.expect("entry");
            if entry.file_name().to_string_lossy().starts_with("seed_") {
                std::fs::remove_file(entry.path()).expect("remove an old seed");
            }
        }
        let mine: Vec<_> = seeds.iter().filter(|s| s.0 == target).collect();
        for (_, name, bytes) in &mine {
            std::fs::write(dir.join(name), bytes).expect("write a seed");
        }
        println!("{target:<8} {:3} seeds", mine.len());
    }
}

/// The frames of a segment file, in order.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).expect("read a segment");
    let mut out = Vec::new();
    let mut at = 0;
    while let Some((payload, len)) = wal::unframe(&bytes[at..]) {
        out.push(payload.to_vec());
        at += len;
    }
    assert_eq!(at, bytes.len(), "{}: a damaged frame", path.display());
    out
}

fn only_file(dir: &Path) -> PathBuf {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir).expect("dir").map(|e| e.expect("entry").path()).collect();
    assert_eq!(paths.len(), 1, "{}: one file", dir.display());
    paths.remove(0)
}

/// What the targets check is what the store writes and reads: a store sealing the samples
/// (written as chunks, as the node writes them) writes the values `fuzzing::seal` makes of
/// the records it then holds;
/// the log's segment file is `check::log_file` of its entries, each chain reads back, and
/// `Wal::open` reads it as `wal::read_segment` does; `Segments::read` and
/// `fuzzing::read_frame` agree.
#[test]
fn the_copies_are_the_stores() {
    let data = tempfile::tempdir().expect("tempdir");
    let samples = check::samples();
    let chunks: Vec<Encoded> = samples.iter().map(|w| Encoded::new(w[0].record.stream, check::START, w)).collect();
    // The records as the store holds them once sealed (it extends their seqs).
    let held: Vec<Vec<StoredRecord>> = {
        let store = SledStore::open_as(data.path(), 4, Some(check::ME)).expect("open");
        store.append(&chunks, &[], &[]).expect("append");
        let sealing: Vec<Sealing<'_>> = samples
            .iter()
            .map(|w| Sealing { stream: w[0].record.stream, window_start: check::START, live: &[] })
            .collect();
        let roots = store.seal_windows(&sealing).expect("seal");
        assert!(roots.iter().all(Option::is_some));
        store.flush().expect("flush");
        samples.iter().map(|w| store.window(w[0].record.stream, check::START).expect("window")).collect()
    };
    let written = frames(&only_file(&data.path().join("sealed")));
    for (w, records) in samples.iter().zip(&held) {
        assert_eq!(records.len(), w.len());
        let value = fuzzing::seal(w[0].record.stream, check::START, records, check::ME).expect("seal");
        assert!(written.contains(&value), "the store wrote another value for {}", w[0].record.stream);
    }
    let seg = only_file(&data.path().join("sealed"));
    let file = std::fs::read(&seg).expect("read");
    let mut at = 0u64;
    for payload in &written {
        let loc = telemesh_node::store::segment::Loc { segment: 0, offset: at, len: wal::frame(payload).len() as u32 };
        assert_eq!(fuzzing::read_frame(&file, loc).as_ref(), Some(payload));
        assert_eq!(check::segments_read(&file, loc).as_ref(), Some(payload));
        at += u64::from(loc.len);
    }

    // The log: three flushes, each a part of every sample's window naming the one before.
    let log = tempfile::tempdir().expect("tempdir");
    let wal = Wal::open(log.path()).expect("open").wal;
    let mut heads: Vec<Option<wal::PartLoc>> = vec![None; chunks.len()];
    let mut entries: Vec<(u64, Vec<wal::Part<'_>>)> = Vec::new();
    for id in 0..3u64 {
        let parts: Vec<wal::Part<'_>> = chunks
            .iter()
            .zip(&heads)
            .map(|(c, prev)| wal::Part { key: c.stream.key_prefix(), window_start: c.window_start, prev: *prev, rows: &c.bytes })
            .collect();
        let (got, at) = wal.append(&parts).expect("append");
        assert_eq!(got, id);
        heads = at.into_iter().map(Some).collect();
        entries.push((id, parts));
    }
    wal.sync().expect("sync");
    for (c, head) in chunks.iter().zip(&heads) {
        let walk = wal.read_chain(c.stream.key_prefix(), c.window_start, head.expect("written"), None).expect("read");
        assert_eq!((walk.rows, walk.end), (vec![c.bytes.to_vec(); 3], wal::End::Start));
    }
    drop(wal);
    let file = std::fs::read(only_file(log.path())).expect("read");
    assert_eq!(file, check::log_file(&entries));
    let (read_heads, ids, torn) = wal::read_segment(&file, 0);
    assert_eq!((ids, torn), (vec![0, 1, 2], false));
    assert_eq!(Wal::open(log.path()).expect("reopen").heads, read_heads);
    let mut want: Vec<_> = chunks.iter().zip(&heads).map(|(c, h)| (c.stream.key_prefix(), c.window_start, h.expect("written"))).collect();
    want.sort_unstable();
    assert_eq!(read_heads, want);
}

// ------------------------------------------------------------------ crashes found

/// Found by `sealed` (`corpus/sealed/regress_records_out_of_key_order`): a sealed value
/// whose compact records list two versions of one (time, seq) out of key order decoded, in
/// that order, and its provenance columns and table rows (by position) went to the other
/// version once the store merged the window. `decode_sealed` now refuses records out of
/// key order (or twice).
#[test]
fn a_sealed_value_with_records_out_of_key_order_is_refused() {
    let stream = check::streams()[0];
    let records = check::samples().remove(0);
    let value = fuzzing::seal(stream, check::START, &records, check::ME).expect("seal");
    let (fields, back) = fuzzing::decode_sealed(stream, check::START, &value).expect("the sample decodes");
    let at = back.windows(2).position(|w| w[0].record.identity() == w[1].record.identity()).expect("a conflict");
    let mut plain: Vec<telemesh_proto::record::Record> = back.iter().map(|r| r.record.clone()).collect();
    plain.swap(at, at + 1);
    let swapped = telemesh_proto::window::compact::encode(check::START, &plain);
    let bad = fuzzing::encode_sealed(&fuzzing::SealedFields { records: swapped, ..fields.clone() });
    assert!(fuzzing::decode_sealed(stream, check::START, &bad).is_none());
    let twice = [&plain[..at], &plain[at..=at], &plain[at..at + 1], &plain[at + 2..]].concat();
    let dup = fuzzing::encode_sealed(&fuzzing::SealedFields {
        records: telemesh_proto::window::compact::encode(check::START, &twice),
        ..fields
    });
    assert!(fuzzing::decode_sealed(stream, check::START, &dup).is_none(), "a record twice");
    let found = std::fs::read(dir("sealed").join("regress_records_out_of_key_order")).expect("read");
    assert!(fuzzing::decode_sealed(check::streams()[0], check::START, &found[1..]).is_none());
}

/// Found by `segment` (`corpus/segment/regress_location_past_the_file`): a sealed window's
/// location with an offset past 2^63 made `Segments::read` an I/O error (the OS refuses
/// the offset), so every read of the window failed instead of skipping it as damaged; and
/// a length of up to 4 GiB was allocated before the read found the file shorter.
/// `Segments::read` now returns a miss for a location past the end of the file.
#[test]
fn a_location_past_the_end_of_its_segment_is_a_miss() {
    use telemesh_node::store::segment::{Loc, Segments};
    let data = tempfile::tempdir().expect("tempdir");
    let segments = Segments::open(data.path()).expect("open");
    let loc = segments.append(b"a sealed value").expect("append");
    assert_eq!(segments.read(loc).expect("read"), Some(b"a sealed value".to_vec()));
    for far in [
        Loc { offset: 1 << 63, ..loc },
        Loc { offset: u64::MAX - 4, ..loc },
        Loc { len: u32::MAX, ..loc },
        Loc { offset: loc.offset + 1, ..loc },
    ] {
        assert_eq!(segments.read(far).expect("a miss, not an error"), None, "{far:?}");
    }
}

/// Found reading `Wal::open` for the `wal` target, now `wal_legacy`
/// (`corpus/wal_legacy/regress_entry_id_max`, whose frame the target's checksum mode makes
/// from any bytes): a log entry with id u64::MAX overflowed the next id (a panic with
/// overflow checks, as in debug builds and under the fuzzer; a wrap in release). Ids now
/// wrap explicitly, on opening and on appending, in the log before chains and in today's.
#[test]
fn a_log_entry_id_at_the_maximum_does_not_overflow() {
    let entries = vec![(u64::MAX, vec![([1, 0, 0, 3, 233], check::START, vec![0])])];
    let file = check::legacy_file(&entries);
    let found = std::fs::read(dir("wal_legacy").join("regress_entry_id_max")).expect("read");
    assert_eq!(found[1..], file[..]);
    let part = wal::Part { key: [1, 0, 0, 3, 233], window_start: check::START, prev: None, rows: &[0] };
    let log = tempfile::tempdir().expect("tempdir");
    std::fs::write(log.path().join(format!("{:016x}.log", 0)), &file).expect("write");
    let opened = Wal::open(log.path()).expect("open");
    assert_eq!(opened.legacy, entries);
    assert_eq!(opened.wal.append(&[part]).expect("append").0, 0, "the next id wraps");
    assert_eq!(opened.wal.append(&[part]).expect("append").0, 1);

    let log = tempfile::tempdir().expect("tempdir");
    std::fs::write(log.path().join(format!("{:016x}.wal", 0)), check::log_file(&[(u64::MAX, vec![part])])).expect("write");
    let opened = Wal::open(log.path()).expect("open");
    assert_eq!(opened.heads.len(), 1);
    assert_eq!(opened.wal.append(&[part]).expect("append").0, 0, "the next id wraps");
}
