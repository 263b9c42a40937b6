//! decode ∘ encode = id, over arbitrary values, for what the store writes to disk
//! (`node/src/store/`, through `store::fuzzing`): a chunk, a sealed window's value (the
//! records as the store seals them, read back with this node's receipts and who else heard
//! and proved each), a sealed window's location, and a write-ahead log entry in its frame
//! (and one of the log before chains).
//! Records are compared as bytes (`check::fingerprint`), since a NaN is not equal to itself.

#[path = "../fuzz/check.rs"]
mod check;

use std::sync::Arc;

use proptest::prelude::*;

use telemesh_node::store::fuzzing;
use telemesh_node::store::segment::Loc;
use telemesh_node::store::wal::{self, Entry};
use telemesh_node::store::{self, StoredRecord};
use telemesh_proto::record::{codec, Kind, Readings, Record, SensorCode};

const NODES: [&str; 4] = ["12D3KooWAlpha", "12D3KooWBravo", "12D3KooWCharlie", "12D3KooWDelta"];

/// Readings of every form, floats of every kind (NaN, infinities, signed zeros).
fn readings() -> impl Strategy<Value = Readings> {
    let f32s = prop_oneof![any::<f32>(), Just(f32::NAN), Just(-0.0f32), Just(f32::INFINITY)];
    prop_oneof![
        Just(Readings::None),
        proptest::collection::vec(f32s.clone(), 1..6).prop_map(Readings::Batch),
        proptest::collection::vec((any::<u8>(), f32s), 1..4)
            .prop_map(|v| Readings::Sensors(v.into_iter().map(|(c, x)| (SensorCode(c), x)).collect())),
        proptest::collection::vec(("[A-Z]{1,4}", any::<f64>()), 1..4).prop_map(Readings::Pairs),
    ]
}

/// Records of the samples' first stream in one window, with anything this node may know
/// of them, merged into key order as the store holds them.
fn records() -> impl Strategy<Value = Vec<StoredRecord>> {
    let stream = check::streams()[0];
    let receipt = (any::<u64>(), any::<u64>(), any::<u32>(), any::<bool>(), 0u8..16, 0u8..16);
    let one = (0u64..60_000, 0u64..50, 0u8..3, readings(), receipt);
    proptest::collection::vec(one, 0..40).prop_map(move |v| {
        let records = v
            .into_iter()
            .map(|(ms, seq, kind, readings, (ext, arrival, copies, proved, heard, proved_by))| {
                let kind = [Kind::Init, Kind::Data, Kind::Heartbeat][usize::from(kind)];
                let readings = if kind == Kind::Data { readings } else { Readings::None };
                let device_time_ns = check::START + ms * 1_000_000;
                let record = Record { stream, device_time_ns, seq, timestamp_raw: ms, kind, readings };
                let mut r = StoredRecord::new(record, ext, arrival);
                r.copies = copies % 1000; // summed by merging, far from the 2^31 - 1 a value keeps
                r.proved = proved;
                let names = |bits: u8| {
                    NODES.iter().enumerate().filter(move |(i, _)| bits >> i & 1 == 1).map(|(_, n)| Arc::from(*n))
                };
                r.heard_by = names(heard | proved_by).collect();
                r.proved_by = names(proved_by).collect();
                r
            })
            .collect();
        store::merge(records)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// A chunk: decoded, the records it was encoded from (who else heard them is not in a
    /// chunk), and encoded again, the same bytes.
    #[test]
    fn chunks_round_trip(records in records()) {
        let stream = check::streams()[0];
        let bytes = fuzzing::encode_chunk(&records);
        let back = fuzzing::decode_chunk(stream, &bytes).expect("a chunk decodes");
        let plain: Vec<StoredRecord> =
            records.iter().map(|r| StoredRecord { heard_by: Vec::new(), proved_by: Vec::new(), ..r.clone() }).collect();
        prop_assert_eq!(check::fingerprint(&back), check::fingerprint(&plain));
        prop_assert_eq!(fuzzing::encode_chunk(&back), bytes);
    }

    /// A sealed window's value: read back, the records it was sealed from, with their
    /// content tags, receipts, extended seqs, arrival times and who heard and proved them;
    /// the value re-encoded and the records sealed again, the same bytes.
    #[test]
    fn sealed_values_round_trip(records in records()) {
        let stream = check::streams()[0];
        let sealed = fuzzing::seal(stream, check::START, &records, check::ME);
        // Records that form no window blob get no sealed value (proptest fails the test if
        // that is most cases).
        prop_assume!(sealed.is_some());
        let bytes = sealed.expect("assumed");
        let (fields, back) = fuzzing::decode_sealed(stream, check::START, &bytes).expect("a sealed value decodes");
        let want: Vec<StoredRecord> =
            records.iter().map(|r| StoredRecord { tag: r.record.content_tag(), ..r.clone() }).collect();
        prop_assert_eq!(check::fingerprint(&back), check::fingerprint(&want));
        prop_assert_eq!(fields.count as usize, records.len());
        prop_assert_eq!(fuzzing::encode_sealed(&fields), bytes.clone());
        prop_assert_eq!(fuzzing::seal(stream, check::START, &back, check::ME), Some(bytes.clone()));
        // A value whose count disagrees with its records (the summary announced for the
        // window is read from the count alone) is not a window.
        let wrong = fuzzing::SealedFields { count: fields.count + 1, ..fields };
        prop_assert!(fuzzing::decode_sealed(stream, check::START, &fuzzing::encode_sealed(&wrong)).is_none());
    }

    /// A sealed window's location, in the store's codec.
    #[test]
    fn locations_round_trip(segment: u64, offset: u64, len: u32) {
        let loc = Loc { segment, offset, len };
        prop_assert_eq!(fuzzing::decode_loc(&codec::to_vec(&loc)), Some(loc));
    }

    /// Log entries, framed as the log appends them: each part decodes as it was written
    /// (and each read alone, as a chain is read), every part is a head of its window unless
    /// a later part names it, the frame re-made byte for byte.
    #[test]
    fn log_entries_round_trip(
        entries in proptest::collection::vec(
            proptest::collection::vec(
                (any::<[u8; 5]>(), 0..3u64, any::<Option<(u64, u32, u32)>>(), proptest::collection::vec(any::<u8>(), 0..40)),
                0..4,
            ),
            0..5,
        ),
    ) {
        let entries: Vec<(u64, Vec<wal::Part<'_>>)> = entries
            .iter()
            .enumerate()
            .map(|(id, parts)| {
                let parts = parts.iter().map(|(key, w, prev, rows)| wal::Part {
                    key: *key,
                    window_start: *w,
                    prev: prev.map(|(segment, offset, len)| wal::PartLoc { segment, offset, len }),
                    rows,
                });
                (id as u64, parts.collect())
            })
            .collect();
        let file = check::log_file(&entries);
        let (heads, ids, torn) = wal::read_segment(&file, 0);
        prop_assert_eq!(ids, (0..entries.len() as u64).collect::<Vec<_>>());
        prop_assert!(!torn);
        let mut expected = std::collections::BTreeSet::new();
        let mut at = 0usize;
        for (id, parts) in &entries {
            let (payload, offsets) = wal::encode_entry(*id, parts);
            let (back_id, back) = wal::decode_entry(&payload).expect("an entry decodes");
            prop_assert_eq!(back_id, *id);
            prop_assert_eq!(back.len(), parts.len());
            for ((off, got), (want, (o, len))) in back.iter().zip(parts.iter().zip(&offsets)) {
                prop_assert_eq!((*off, got.key, got.window_start, got.prev, got.rows), (*o, want.key, want.window_start, want.prev, want.rows));
                let (alone, n) = wal::decode_part(&payload[*o..*o + *len]).expect("a part decodes alone");
                prop_assert_eq!((n, alone.rows), (*len, want.rows));
                let loc = wal::PartLoc { segment: 0, offset: (at + wal::FRAME_HEADER + o) as u32, len: *len as u32 };
                expected.retain(|(k, w, l): &([u8; 5], u64, wal::PartLoc)| !(*k == want.key && *w == want.window_start && Some(*l) == want.prev));
                expected.insert((want.key, want.window_start, loc));
            }
            at += wal::FRAME_HEADER + payload.len();
        }
        prop_assert_eq!(heads, expected.into_iter().collect::<Vec<_>>());
        if let Some((payload, n)) = wal::unframe(&file) {
            prop_assert_eq!(wal::frame(payload), file[..n].to_vec());
        }
    }

    /// Entries of the log before chains, framed as older nodes appended them: read back as
    /// they are.
    #[test]
    fn legacy_log_entries_round_trip(
        entries in proptest::collection::vec(
            (
                any::<u64>(),
                proptest::collection::vec(
                    (any::<[u8; 5]>(), any::<u64>(), proptest::collection::vec(any::<u8>(), 0..40)),
                    0..4,
                ),
            ),
            0..5,
        ),
    ) {
        let entries: Vec<(u64, Entry)> = entries;
        let file = check::legacy_file(&entries);
        prop_assert_eq!(wal::read_legacy(&file), (entries.clone(), false));
    }
}
