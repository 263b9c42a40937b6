//! Merkle tree cost (`proto::merkle`): building the outboard of a 1 MiB blob (hashing
//! throughput, `Throughput::Bytes`, so criterion reports MiB/s or GiB/s) and verifying a
//! chunk-range proof.
//!
//! ```sh
//! cargo bench -p telemesh-benches --bench merkle -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `merkle_build/<hash>/<leaf>`: `Outboard::build` of 1 MiB (leaf hashes, interior
//!   nodes, the digest vector). `blake3/1MiB` is the tree of one leaf — plain
//!   `blake3::hash` of the whole MiB — the baseline the smaller leaves are measured
//!   against (BLAKE3 hashes a long input several 1 KiB chunks at a time with SIMD; a
//!   1 KiB leaf is hashed on its own, one chunk, so gets none of that).
//! - `merkle_verify/blake3_1KiB/<n>_leaf`: `merkle::verify` of `n` leaves of that blob
//!   with its proof (leaf hashes + path to the root, 10 levels). The ranges start at leaf
//!   517 — not aligned — so the 16-leaf range needs both left and right uncles.
//!
//! `std::hint::black_box`, not `criterion::black_box` (a volatile copy in criterion 0.5
//! without `real_blackbox`); the routines return `()`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemesh_proto::merkle::{self, Blake3, ChunkNum, Outboard, Sha256, TreeHash};

const BLOB: usize = 1 << 20;

fn blob() -> Vec<u8> {
    (0..BLOB).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

fn build<H: TreeHash>(c: &mut Criterion, data: &[u8], leaves: &[(u32, &str)]) {
    let mut group = c.benchmark_group("merkle_build");
    group.throughput(Throughput::Bytes(data.len() as u64));
    for &(leaf, name) in leaves {
        group.bench_function(format!("{}/{name}", H::NAME), |b| {
            b.iter(|| {
                let ob = Outboard::<H>::build(black_box(data), black_box(leaf));
                black_box(ob.map(|ob| ob.root()).ok());
            })
        });
    }
    group.finish();
}

fn merkle_build(c: &mut Criterion) {
    let data = blob();
    build::<Blake3>(
        c,
        &data,
        &[
            (1 << 10, "1KiB"),
            (4 << 10, "4KiB"),
            (16 << 10, "16KiB"),
            (1 << 20, "1MiB"),
        ],
    );
    build::<Sha256>(c, &data, &[(16 << 10, "16KiB")]);
}

fn merkle_verify(c: &mut Criterion) {
    const LEAF: u32 = 1024;
    let data = blob();
    let ob = Outboard::<Blake3>::build(&data, LEAF).expect("valid geometry");
    let root = ob.root();
    let mut group = c.benchmark_group("merkle_verify");
    for n in [1u64, 16] {
        let range = ChunkNum(517)..ChunkNum(517 + n);
        let proof = ob.prove(range.clone()).expect("in range");
        let bytes = ob.geometry().range_bytes(&range).expect("in range");
        let leaves = &data[bytes.start as usize..bytes.end as usize];
        // The benchmark measures the accept path.
        assert_eq!(
            merkle::verify(&root, LEAF, BLOB as u64, range.clone(), leaves, &proof),
            Ok(())
        );
        group.throughput(Throughput::Bytes(leaves.len() as u64));
        group.bench_function(format!("blake3_1KiB/{n}_leaf"), |b| {
            b.iter(|| {
                let r = merkle::verify(
                    black_box(&root),
                    LEAF,
                    BLOB as u64,
                    black_box(range.clone()),
                    black_box(leaves),
                    black_box(&proof),
                );
                black_box(r.is_ok());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, merkle_build, merkle_verify);
criterion_main!(benches);
