//! Runs every wire decoder over its fuzz seed corpus (`proto/fuzz/corpus/<dialect>/`,
//! written by `proto/fuzz/make_corpus.py`), so the seeds are checked by `cargo test`
//! on stable without cargo-fuzz.
//!
//! - Every file: decoding must not panic.
//! - `valid*`: decodes, re-emits the input byte for byte, and the re-emitted bytes
//!   decode and re-emit identically (bytes, not floats: NaN != NaN).
//! - `bad_*`: rejected with the `wire::Error::reason()` the name carries, either as
//!   its whole prefix (`bad_checksum_f2` → "bad_checksum") or after `bad_`
//!   (`bad_too_short_11` → "too_short").
//! - Any other name (inputs a fuzzing run added) gets only the no-panic check.

use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use telemesh_proto::wire::{self, iotstream, secure, tinytelemetry};

/// Decodes and, if Ok, re-emits. `Ok(bytes)` is what `to_bytes()` wrote.
type Decoder = fn(&[u8]) -> Result<Vec<u8>, wire::Error>;

fn decode_iotstream(b: &[u8]) -> Result<Vec<u8>, wire::Error> {
    iotstream::Repr::decode(b).map(|r| r.to_bytes())
}
fn decode_tinytelemetry(b: &[u8]) -> Result<Vec<u8>, wire::Error> {
    tinytelemetry::Repr::decode(b).map(|r| r.to_bytes())
}
fn decode_secure(b: &[u8]) -> Result<Vec<u8>, wire::Error> {
    secure::Repr::decode(b).map(|r| r.to_bytes())
}

fn corpus_dir(dialect: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(dialect)
}

/// The reason a `bad_*` file name asks for; exactly one must match.
fn expected_reason(name: &str) -> &'static str {
    let after_bad = &name["bad_".len()..];
    let matches_at = |rest: &str, reason: &str| {
        rest.strip_prefix(reason)
            .is_some_and(|tail| tail.is_empty() || tail.starts_with('_'))
    };
    let found: Vec<&'static str> = wire::Error::REASONS
        .iter()
        .copied()
        .filter(|r| matches_at(name, r) || matches_at(after_bad, r))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "corpus file {name:?} must name exactly one reason of {:?}, found {found:?}",
        wire::Error::REASONS
    );
    found[0]
}

/// Checks one dialect's corpus; returns (valid, bad, other) file counts.
fn check(dialect: &str, decode: Decoder) -> (usize, usize, usize) {
    let dir = corpus_dir(dialect);
    let mut entries: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    let (mut valid, mut bad, mut other) = (0, 0, 0);
    for path in entries {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("UTF-8 file name")
            .to_owned();
        let bytes = fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let result = catch_unwind(AssertUnwindSafe(|| decode(&bytes)))
            .unwrap_or_else(|_| panic!("{dialect}/{name}: decoder panicked"));
        if name.starts_with("valid") {
            let emitted = result
                .unwrap_or_else(|e| panic!("{dialect}/{name}: rejected ({}): {e}", e.reason()));
            assert_eq!(
                emitted, bytes,
                "{dialect}/{name}: re-emitted bytes differ from the input"
            );
            let again = decode(&emitted)
                .unwrap_or_else(|e| panic!("{dialect}/{name}: re-emitted bytes rejected: {e}"));
            assert_eq!(
                again, emitted,
                "{dialect}/{name}: second round trip differs"
            );
            valid += 1;
        } else if name.starts_with("bad_") {
            let want = expected_reason(&name);
            match result {
                Ok(_) => panic!("{dialect}/{name}: accepted, expected reject with reason {want:?}"),
                Err(e) => assert_eq!(
                    e.reason(),
                    want,
                    "{dialect}/{name}: rejected for the wrong reason: {e}"
                ),
            }
            bad += 1;
        } else {
            other += 1;
        }
    }
    assert!(
        valid > 0 && bad > 0,
        "{dialect}: corpus at {} needs valid* and bad_* seeds (run proto/fuzz/make_corpus.py)",
        dir.display()
    );
    (valid, bad, other)
}

#[test]
fn iotstream_corpus() {
    let (valid, bad, _) = check("iotstream", decode_iotstream);
    assert!(
        valid >= 5 && bad >= 9,
        "iotstream seeds missing: {valid} valid, {bad} bad"
    );
}

#[test]
fn tinytelemetry_corpus() {
    let (valid, bad, _) = check("tinytelemetry", decode_tinytelemetry);
    assert!(
        valid >= 4 && bad >= 10,
        "tinytelemetry seeds missing: {valid} valid, {bad} bad"
    );
}

#[test]
fn secure_corpus() {
    let (valid, bad, _) = check("secure", decode_secure);
    assert!(
        valid >= 5 && bad >= 9,
        "secure seeds missing: {valid} valid, {bad} bad"
    );
}

/// Each dialect's seeds cover every reject reason its decoder can produce, so a new
/// reason (or a renamed one) shows up here as a missing seed.
#[test]
fn every_reachable_reason_has_a_seed() {
    let reachable: [(&str, &[&str]); 3] = [
        (
            "iotstream",
            &[
                "too_short",
                "too_long",
                "bad_version",
                "bad_type",
                "bad_checksum",
                "length_mismatch",
                "bad_count",
            ],
        ),
        (
            "tinytelemetry",
            &[
                "too_short",
                "too_long",
                "bad_version",
                "bad_type",
                "length_mismatch",
                "bad_count",
                "device_zero",
                "bad_sensor_type",
            ],
        ),
        (
            "secure",
            &[
                "too_short",
                "too_long",
                "length_mismatch",
                "bad_utf8",
                "bad_pair",
            ],
        ),
    ];
    for (dialect, reasons) in reachable {
        let seeded: Vec<&str> = fs::read_dir(corpus_dir(dialect))
            .expect("corpus dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with("bad_"))
            .map(|n| expected_reason(&n))
            .collect();
        for r in reasons {
            assert!(
                seeded.contains(r),
                "{dialect}: no bad_* seed for reason {r:?}"
            );
        }
    }
}
