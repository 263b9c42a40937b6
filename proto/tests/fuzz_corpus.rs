//! The mesh-side fuzz targets' inputs under `cargo test`, without cargo-fuzz: every file of
//! `proto/fuzz/corpus/<target>/` for the targets of `proto/fuzz/check.rs` goes through the
//! same checks the target makes (`seed_*`: the seeds; `regress_*`: minimised inputs a
//! fuzzing run found, kept so that their fix stays fixed; files named by their SHA-1: the
//! corpus a 10-minute run grew, merged in with `-merge=1`), and the checked-in seeds must be
//! what `cargo run -p telemesh-proto --example fuzz_seeds` writes today.

#[path = "../fuzz/check.rs"]
mod check;

use std::path::PathBuf;

fn dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join(target)
}

fn files(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir(target))
        .unwrap_or_else(|e| panic!("{target}: {e}"))
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

#[test]
fn every_input_passes_its_target() {
    for target in check::TARGETS {
        let files = files(target);
        assert!(files.iter().any(|(n, _)| n.starts_with("seed_")), "{target}: no seeds");
        for (name, bytes) in files {
            let run = std::panic::catch_unwind(|| check::run(target, &bytes));
            assert!(run.is_ok(), "{target}/{name} fails its checks");
        }
    }
}

#[test]
fn the_seeds_are_up_to_date() {
    let seeds = check::seeds();
    for target in check::TARGETS {
        let want: Vec<(String, Vec<u8>)> =
            seeds.iter().filter(|s| s.0 == target).map(|s| (s.1.clone(), s.2.clone())).collect();
        let have: Vec<(String, Vec<u8>)> = files(target).into_iter().filter(|(n, _)| n.starts_with("seed_")).collect();
        let names = |v: &[(String, Vec<u8>)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
        assert_eq!(names(&have), { let mut n = names(&want); n.sort(); n }, "{target}: run the fuzz_seeds example");
        for (name, bytes) in &want {
            let file = have.iter().find(|h| &h.0 == name).map(|h| &h.1);
            assert_eq!(file, Some(bytes), "{target}/{name} differs: run the fuzz_seeds example");
        }
    }
}
