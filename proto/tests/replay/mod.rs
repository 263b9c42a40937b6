//! Replaying a crate's fuzz corpus under `cargo test` (`proto/tests/fuzz_corpus.rs`,
//! `node/tests/fuzz_corpus.rs`): each target's directory `fuzz/corpus/<target>/` of the
//! crate, the checks its `fuzz/check.rs` makes, and the seeds that file writes.

use std::path::{Path, PathBuf};

/// `fuzz/corpus/<target>` of the crate at `manifest_dir`.
pub fn dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("fuzz").join("corpus").join(target)
}

/// Every file of a corpus directory, by name.
pub fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().into_string().ok()?;
            let bytes = std::fs::read(e.path()).ok()?;
            Some((name, bytes))
        })
        .collect();
    out.sort();
    out
}

/// Every input of every target passes the target's checks (`run` panics if not), and
/// every target has seeds.
pub fn every_input_passes(manifest_dir: &str, targets: &[&str], run: fn(&str, &[u8])) {
    for target in targets {
        let files = files(&dir(manifest_dir, target));
        assert!(files.iter().any(|(n, _)| n.starts_with("seed_")), "{target}: no seeds");
        for (name, bytes) in files {
            let ran = std::panic::catch_unwind(|| run(target, &bytes));
            assert!(ran.is_ok(), "{target}/{name} fails its checks");
        }
    }
}

/// The checked-in `seed_*` files are exactly `seeds` (target, name, bytes); if not, the
/// message says to run `rerun`.
pub fn seeds_are_up_to_date(manifest_dir: &str, targets: &[&str], seeds: &[(&str, String, Vec<u8>)], rerun: &str) {
    for target in targets {
        let want: Vec<(String, Vec<u8>)> =
            seeds.iter().filter(|s| s.0 == *target).map(|s| (s.1.clone(), s.2.clone())).collect();
        let have: Vec<(String, Vec<u8>)> =
            files(&dir(manifest_dir, target)).into_iter().filter(|(n, _)| n.starts_with("seed_")).collect();
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&have), { let mut n = names(&want); n.sort(); n }, "{target}: run {rerun}");
        for (name, bytes) in &want {
            let file = have.iter().find(|h| &h.0 == name).map(|h| &h.1);
            assert_eq!(file, Some(bytes), "{target}/{name} differs: run {rerun}");
        }
    }
}
