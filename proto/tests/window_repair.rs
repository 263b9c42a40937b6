//! The repair path end to end, without sockets: a node holding part of a window fetches
//! the blob's prefix (header and index) with a Merkle proof, places its records, asks two
//! holders for RaptorQ symbols, decodes, and accepts the rebuilt blob only if its root is
//! the announced one.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::merkle::{self, Blake3, ChunkNum, Geometry};
use telemesh_proto::record::{Kind, Readings, Record, StreamId};
use telemesh_proto::repair::{holder_range, split, Decoder, Encoder, Error, Layout, Plan, Symbol};
use telemesh_proto::window::{self, Root};
use telemesh_proto::wire::Dialect;

const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 1001 };
const W: u64 = 1_765_477_200_000_000_000 - 1_765_477_200_000_000_000 % window::SPAN_NS;

fn records(n: u64, rng: &mut ChaCha8Rng) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let data = rng.gen_bool(0.8);
            Record {
                stream: S,
                device_time_ns: W + i * 50_000_000,
                seq: i,
                timestamp_raw: i,
                kind: if data { Kind::Data } else { Kind::Heartbeat },
                readings: if data {
                    Readings::Batch((0..5).map(|_| rng.gen_range(2000..3000) as f32 / 100.0).collect())
                } else {
                    Readings::None
                },
            }
        })
        .collect()
}

/// What a window's announcement carries: its root and blob length.
struct Announced {
    root: Root,
    len: u64,
}

/// The leaves spanning a blob's header and index, with their proof.
struct Prefix {
    leaves: std::ops::Range<ChunkNum>,
    bytes: Vec<u8>,
    proof: merkle::Proof<Blake3>,
}

/// A holder serves the prefix of a blob with a proof for the leaves it spans.
fn fetch_prefix(blob: &[u8]) -> Prefix {
    let tree = window::outboard(blob).expect("tree");
    let header = window::Header::parse(blob).expect("header");
    let geometry = *tree.geometry();
    let leaves = geometry.chunks_covering(0..header.prefix_len() as u64);
    let bytes = geometry.range_bytes(&leaves).expect("range");
    let proof = tree.prove(leaves.clone()).expect("proof");
    Prefix { leaves, bytes: blob[bytes.start as usize..bytes.end as usize].to_vec(), proof }
}

/// The requester's side: verify the prefix, place, decode from symbols (optionally
/// corrupted on the way), check the root.
fn repair(ann: &Announced, fetched: &Prefix, held: &[Record], holders: &[&[u8]], rng: &mut ChaCha8Rng, corrupt: bool) -> Result<Vec<u8>, Error> {
    let Announced { root, len } = ann;
    merkle::verify::<Blake3>(root, window::LEAF_SIZE, *len, fetched.leaves.clone(), &fetched.bytes, &fetched.proof)
        .expect("prefix verifies against the announced root");
    let prefix_leaves = &fetched.bytes;
    let (header, index) = window::index(prefix_leaves).expect("index");
    let prefix = &prefix_leaves[..header.prefix_len()];
    let placed = window::place(&header, &index, held);
    let layout = Layout::new(usize::from(header.slot_size), header.count as usize).expect("layout");
    let slot = usize::from(header.slot_size);
    let present = placed.present.iter().enumerate().filter(|(_, p)| **p).map(|(i, _)| (i as u32, &placed.slots[i * slot..(i + 1) * slot]));
    let mut decoder = Decoder::new(layout, present).expect("decoder");

    // Ask every holder for its share of missing + 2 symbols; some are lost on the way.
    let plan = Plan::new(&layout);
    let want = placed.missing() as u32 + 2;
    let mut symbols: Vec<Symbol> = Vec::new();
    let mut served = vec![0u32; holders.len()];
    let encoders: Vec<Encoder> = holders
        .iter()
        .map(|blob| {
            let full = window::Header::parse(blob).expect("a holder's blob");
            Encoder::new(layout, &blob[full.prefix_len()..], &plan).expect("encoder")
        })
        .collect();
    while !decoder.ready() {
        for (i, count) in split(want, holders.len() as u32).enumerate() {
            let encoder = &encoders[i];
            let range = holder_range(&layout, i as u32, served[i], count).expect("band");
            served[i] += count;
            symbols.extend(encoder.repair(range).expect("symbols").into_iter().filter(|_| rng.gen_bool(0.8)));
        }
        symbols.shuffle(rng);
        for s in symbols.drain(..) {
            let s = if corrupt {
                let mut bytes = s.to_bytes();
                let last = bytes.len() - 1;
                bytes[last] ^= 0x01;
                Symbol::from_bytes(&bytes, &layout).expect("still well-formed")
            } else {
                s
            };
            decoder.push(s).expect("well-formed symbol");
        }
        if !decoder.ready() && decoder.try_finish().is_some() {
            break;
        }
    }
    let name = format!("{S}/{W}");
    let slots = decoder
        .finish_verified(&name, |slots| {
            window::assemble(prefix, slots).ok().and_then(|b| window::outboard(&b).ok()).is_some_and(|t| t.root() == *root)
        })?
        .expect("decoded");
    Ok(window::assemble(prefix, &slots).expect("assembles"))
}

#[test]
fn a_partial_holder_rebuilds_the_exact_blob_from_two_holders() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for (n, keep) in [(1200u64, 0.8), (300, 0.5), (40, 0.0), (500, 1.0)] {
        let all = records(n, &mut rng);
        let blob = window::encode(S, W, &all).expect("blob");
        let root = window::outboard(&blob).expect("tree").root();
        let held: Vec<Record> = all.iter().filter(|_| rng.gen_bool(keep)).cloned().collect();
        let ann = Announced { root, len: blob.len() as u64 };
        let rebuilt = repair(&ann, &fetch_prefix(&blob), &held, &[&blob, &blob], &mut rng, false).expect("repaired");
        assert_eq!(rebuilt, blob, "{n} records, {} held", held.len());
        assert_eq!(window::decode(&rebuilt).expect("decodes").1.len(), all.len());
    }
}

#[test]
fn corrupted_symbols_are_a_root_mismatch_naming_the_window_never_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let all = records(400, &mut rng);
    let blob = window::encode(S, W, &all).expect("blob");
    let root = window::outboard(&blob).expect("tree").root();
    let held: Vec<Record> = all.iter().filter(|_| rng.gen_bool(0.7)).cloned().collect();
    let ann = Announced { root, len: blob.len() as u64 };
    match repair(&ann, &fetch_prefix(&blob), &held, &[&blob], &mut rng, true) {
        Err(Error::RootMismatch { window }) => assert_eq!(window, format!("{S}/{W}")),
        other => panic!("expected a root mismatch, got {other:?}"),
    }
}

#[test]
fn a_forged_prefix_does_not_verify() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let blob = window::encode(S, W, &records(200, &mut rng)).expect("blob");
    let root = window::outboard(&blob).expect("tree").root();
    let mut fetched = fetch_prefix(&blob);
    fetched.bytes[window::HEADER_LEN + 5] ^= 0x10; // move a record in time
    let geometry = Geometry::new(blob.len() as u64, window::LEAF_SIZE).expect("geometry");
    assert!(geometry.verify::<Blake3>(&root, fetched.leaves, &fetched.bytes, &fetched.proof).is_err());
}
