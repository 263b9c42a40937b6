//! `check::legacy_segment`: see `node/fuzz/check.rs` and README.md.
#![no_main]

#[path = "../check.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::run("wal_legacy", data));
