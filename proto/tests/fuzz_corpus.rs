//! The mesh-side fuzz targets' inputs under `cargo test`, without cargo-fuzz: every file of
//! `proto/fuzz/corpus/<target>/` for the targets of `proto/fuzz/check.rs` goes through the
//! same checks the target makes (`seed_*`: the seeds; `regress_*`: minimised inputs a
//! fuzzing run found, kept so that their fix stays fixed; files named by their SHA-1: the
//! corpus a 10-minute run grew, merged in with `-merge=1`), and the checked-in seeds must be
//! what `cargo run -p telemesh-proto --example fuzz_seeds` writes today.

#[path = "../fuzz/check.rs"]
mod check;
mod replay;

#[test]
fn every_input_passes_its_target() {
    replay::every_input_passes(env!("CARGO_MANIFEST_DIR"), &check::TARGETS, check::run);
}

#[test]
fn the_seeds_are_up_to_date() {
    replay::seeds_are_up_to_date(env!("CARGO_MANIFEST_DIR"), &check::TARGETS, &check::seeds(), "the fuzz_seeds example");
}
