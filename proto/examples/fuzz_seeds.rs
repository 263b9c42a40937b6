//! Writes the seed corpus of the mesh-side fuzz targets (`proto/fuzz/check.rs`) from the
//! real encoders: `proto/fuzz/corpus/<target>/seed_*`, replacing the old seeds and leaving
//! every other file (`regress_*`) alone. Deterministic.
//!
//!     cargo run -p telemesh-proto --example fuzz_seeds

#[path = "../fuzz/check.rs"]
mod check;

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus");
    let seeds = check::seeds();
    for target in check::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("seed_") {
                std::fs::remove_file(entry.path())?;
            }
        }
        let mine: Vec<_> = seeds.iter().filter(|s| s.0 == target).collect();
        for (_, name, bytes) in &mine {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{target:<15} {:3} seeds", mine.len());
    }
    Ok(())
}
