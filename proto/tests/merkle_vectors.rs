//! BEP 52 conformance: `merkle` with SHA-256 and 16 KiB leaves reproduces BitTorrent v2's
//! `pieces root` (and `piece layers`) exactly, as made by an independent implementation,
//! libtorrent 2.0 (`vectors/make_vectors.py`, output `vectors/bep52_sha256.json`).
//!
//! The JSON is written one entry per line, so it is read here line by line (proto has no
//! JSON dependency); the counts are asserted so a parsing slip cannot pass silently.

use telemesh_proto::merkle::{self, ChunkNum, Node, Outboard, RootHasher, Sha256, TreeHash};

const VECTORS: &str = include_str!("vectors/bep52_sha256.json");
const LEAF: u32 = 16 * 1024;

/// The generator's file contents: byte i = (i * 31 + 7) % 251.
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31 + 7) % 251) as u8).collect()
}

/// The raw JSON token after `"key": ` on `line` (quotes stripped from strings).
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = &line[line.find(&format!("\"{key}\": "))? + key.len() + 4..];
    if let Some(s) = rest.strip_prefix('"') {
        return s.split('"').next();
    }
    rest.split([',', '}', ']']).next().map(str::trim)
}

fn hex32(s: &str) -> [u8; 32] {
    let v = hex::decode(s).expect("hex digest");
    v.try_into().expect("32-byte digest")
}

/// (size, pieces root or None) per file line.
fn files() -> Vec<(usize, Option<[u8; 32]>)> {
    VECTORS
        .lines()
        .filter(|l| l.contains("\"pieces_root\""))
        .map(|l| {
            let size = field(l, "size")
                .expect("size")
                .parse()
                .expect("size is a number");
            let root = match field(l, "pieces_root").expect("pieces_root") {
                "null" => None,
                hex => Some(hex32(hex)),
            };
            (size, root)
        })
        .collect()
}

/// (size, piece length, piece layer) per layer line.
fn layers() -> Vec<(usize, u64, Vec<[u8; 32]>)> {
    VECTORS
        .lines()
        .filter(|l| l.contains("\"hashes\""))
        .map(|l| {
            let size = field(l, "size").expect("size").parse().expect("number");
            let pl = field(l, "piece_length")
                .expect("piece_length")
                .parse()
                .expect("number");
            let list = &l[l.find('[').expect("hash list") + 1..l.rfind(']').expect("hash list")];
            let hashes = list
                .split(',')
                .map(|h| hex32(h.trim().trim_matches('"')))
                .collect();
            (size, pl, hashes)
        })
        .collect()
}

#[test]
fn pieces_roots_match_libtorrent() {
    let files = files();
    let sizes: Vec<usize> = files.iter().map(|f| f.0).collect();
    assert_eq!(sizes, [0, 1, 16383, 16384, 16385, 65536, (1 << 20) + 7]);
    for (size, expected) in files {
        let data = content(size);
        let ob = Outboard::<Sha256>::build(&data, LEAF).expect("valid geometry");
        let mut streamed = RootHasher::<Sha256>::new(LEAF).expect("valid leaf size");
        for piece in data.chunks(1000) {
            streamed.update(piece);
        }
        let streamed = streamed.finalize();
        let reference = merkle::reference::root::<Sha256>(&data, LEAF).expect("valid geometry");
        match expected {
            Some(root) => {
                assert_eq!(
                    hex::encode(ob.root()),
                    hex::encode(root),
                    "outboard root, size {size}"
                );
                assert_eq!(streamed, root, "streamed root, size {size}");
                assert_eq!(reference, root, "reference root, size {size}");
            }
            None => {
                // BEP 52 / libtorrent: an empty file has no pieces root. Ours is defined as
                // the zero digest (one padding leaf); see the `merkle` module docs.
                assert_eq!(size, 0);
                assert_eq!(
                    (ob.root(), streamed, reference),
                    ([0; 32], [0; 32], [0; 32])
                );
            }
        }
    }
}

/// A file smaller than one 16 KiB block: the root is SHA-256 of the bytes themselves, not
/// of a block padded to 16 KiB, and not a tree over zero leaves.
#[test]
fn short_file_root_is_the_plain_sha256() {
    let files = files();
    let (_, one) = files.iter().find(|f| f.0 == 1).expect("size-1 vector");
    assert_eq!(*one, Some(Sha256::leaf(&content(1))));
    let (_, short) = files
        .iter()
        .find(|f| f.0 == 16383)
        .expect("size-16383 vector");
    assert_eq!(*short, Some(Sha256::leaf(&content(16383))));
}

/// libtorrent's piece layers are our tree's interior levels, including the last piece,
/// which is a subtree padded with zero leaves.
#[test]
fn piece_layers_match_libtorrent() {
    let layers = layers();
    assert_eq!(layers.len(), 2);
    for (size, piece_length, hashes) in layers {
        let data = content(size);
        let ob = Outboard::<Sha256>::build(&data, LEAF).expect("valid geometry");
        let level = (piece_length / u64::from(LEAF)).trailing_zeros();
        assert_eq!(
            hashes.len() as u64,
            ob.geometry().level_len(level),
            "piece length {piece_length}"
        );
        for (i, h) in hashes.iter().enumerate() {
            assert_eq!(
                ob.node(Node::new(level, i as u64)),
                Some(*h),
                "piece {i} of {piece_length}"
            );
        }
    }
}

/// Proofs verify against libtorrent's root: every single block of the largest file, and a
/// range that straddles the padded right edge.
#[test]
fn proofs_verify_against_libtorrent_root() {
    let files = files();
    let (size, root) = files.last().copied().expect("vectors");
    let root = root.expect("non-empty file");
    let data = content(size);
    let ob = Outboard::<Sha256>::build(&data, LEAF).expect("valid geometry");
    let g = *ob.geometry();
    for range in (0..g.num_leaves())
        .map(|i| ChunkNum(i)..ChunkNum(i + 1))
        .chain([ChunkNum(60)..ChunkNum(65)])
    {
        let proof = ob.prove(range.clone()).expect("in range");
        let bytes = g.range_bytes(&range).expect("in range");
        let leaves = &data[bytes.start as usize..bytes.end as usize];
        merkle::verify(&root, LEAF, size as u64, range, leaves, &proof).expect("verifies");
    }
}
