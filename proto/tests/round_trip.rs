//! decode ∘ encode = id, over arbitrary values, for the encoder/decoder pairs of `proto`
//! that had no such property test in their module: the mesh's messages (requests,
//! responses, announcements, as `message::encode`/`decode`), compact indexes (entries →
//! `IndexPart::compact` → `entries`), provenance tables, signed statements and stream
//! states (in the store's codec, `record::codec`, and as messages carry them), and repair
//! symbols over any layout (their module checks golden bytes, and bytes → symbol → bytes);
//! and an announcement's short forms: a table row → `Row::of` → `bits`, and a
//! coordinator's rows by member → `OtherRows::new` → `list`.
//! The other pairs — the wire dialects, the auth seal, record content and codec, the window
//! blob and its compact form, Merkle proofs and outboards, columns — have theirs in their
//! module's tests. A value holding floats (a stream state) is compared re-encoded, as
//! bytes, since a NaN is not equal to itself.

use proptest::prelude::*;

use telemesh_proto::mesh::message::{self, Announce, IndexPart, OtherRows, Others, Request, Response, Row, Summary};
use telemesh_proto::mesh::statement::{Claim, Statement};
use telemesh_proto::mesh::{self, StreamDigest, Table, WindowId};
use telemesh_proto::record::{codec, Kind, Readings, Record, StreamId};
use telemesh_proto::repair::{Layout, Symbol};
use telemesh_proto::stream::{self, Lookup, Neighbour, Presence};
use telemesh_proto::window;
use telemesh_proto::wire::Dialect;

const W: u64 = 1_765_477_200_000_000_000 - 1_765_477_200_000_000_000 % window::SPAN_NS;

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn stream_id() -> impl Strategy<Value = StreamId> {
    (0usize..3, any::<u32>())
        .prop_map(|(d, device)| StreamId::new([Dialect::Iotstream, Dialect::Tinytelemetry, Dialect::Secure][d], device))
}

fn window_id() -> impl Strategy<Value = WindowId> {
    (stream_id(), any::<u64>()).prop_map(|(stream, start)| WindowId { stream, start })
}

fn summary() -> impl Strategy<Value = Summary> {
    (window_id(), any::<[u8; 32]>(), any::<u32>(), any::<u16>(), any::<[u8; 8]>())
        .prop_map(|(window, root, count, slot_size, provenance)| Summary { window, root, count, slot_size, provenance })
}

fn row() -> impl Strategy<Value = Row> {
    prop_oneof![
        Just(Row::None),
        Just(Row::All),
        bytes(20).prop_map(Row::Bits),
        proptest::collection::vec(any::<u32>(), 0..8).prop_map(Row::Missing),
    ]
}

fn index_part() -> impl Strategy<Value = IndexPart> {
    prop_oneof![
        (any::<u32>(), any::<u16>(), bytes(40), proptest::collection::vec((any::<u32>(), any::<[u8; 8]>()), 0..4))
            .prop_map(|(count, slot_size, columns, tags)| IndexPart::Compact { count, slot_size, columns, tags }),
        (bytes(60), bytes(60)).prop_map(|(leaves, proof)| IndexPart::Verified { leaves, proof }),
    ]
}

fn name() -> impl Strategy<Value = String> {
    "[1-9A-HJ-NP-Za-km-z]{1,52}"
}

fn table() -> impl Strategy<Value = Table> {
    proptest::collection::vec((name(), bytes(12)), 0..5).prop_map(|nodes| Table { nodes })
}

fn announce() -> impl Strategy<Value = Announce> {
    let others = (any::<[u8; 8]>(), proptest::collection::vec((bytes(4), proptest::collection::vec(row(), 0..3)), 0..3))
        .prop_map(|(members, rows)| {
            let rows = rows.into_iter().map(|(nodes, rows)| OtherRows { nodes, rows }).collect();
            Others { members, rows }
        });
    (
        proptest::collection::vec(summary(), 0..4),
        proptest::collection::vec(proptest::option::of(index_part()), 0..3),
        proptest::collection::vec(row(), 0..4),
        proptest::option::of(others),
        bytes(65),
    )
        .prop_map(|(windows, indexes, rows, others, signature)| Announce { windows, indexes, rows, others, signature })
}

fn statement() -> impl Strategy<Value = Statement> {
    let claim = (window_id(), any::<[u8; 32]>(), any::<u32>(), bytes(30))
        .prop_map(|(window, root, count, row)| Claim { window, root, count, row });
    let path = proptest::collection::vec(any::<[u8; 32]>(), 0..17);
    (claim, any::<u32>(), any::<u32>(), path, bytes(129), proptest::option::of(index_part()))
        .prop_map(|(claim, at, of, path, signature, index)| Statement { claim, at, of, path, signature, index })
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        proptest::option::of(stream_id()).prop_map(|after| Request::Streams { after }),
        (stream_id(), proptest::option::of(any::<u64>()))
            .prop_map(|(stream, after)| Request::Windows { stream, after }),
        (window_id(), any::<[u8; 32]>(), any::<bool>())
            .prop_map(|(window, root, verified)| Request::Index { window, root, verified }),
        (window_id(), any::<[u8; 32]>(), any::<u32>(), any::<u32>())
            .prop_map(|(window, root, start, count)| Request::Symbols { window, root, start, count }),
        (window_id(), any::<[u8; 32]>()).prop_map(|(window, root)| Request::Provenance { window, root }),
        announce().prop_map(Request::Offer),
        window_id().prop_map(|window| Request::Statements { window }),
    ]
}

fn response() -> impl Strategy<Value = Response> {
    let digest = (stream_id(), any::<u32>(), any::<[u8; 16]>())
        .prop_map(|(stream, windows, digest)| StreamDigest { stream, windows, digest });
    prop_oneof![
        (proptest::collection::vec(digest, 0..4), any::<bool>())
            .prop_map(|(digests, more)| Response::Streams { digests, more }),
        (proptest::collection::vec(summary(), 0..4), any::<bool>())
            .prop_map(|(windows, more)| Response::Windows { windows, more }),
        index_part().prop_map(Response::Index),
        bytes(200).prop_map(|data| Response::Symbols { data }),
        table().prop_map(|table| Response::Provenance { table }),
        Just(Response::NotFound),
        Just(Response::Refused),
        Just(Response::Accepted),
        proptest::collection::vec((name(), statement()), 0..3).prop_map(Response::Statements),
    ]
}

/// A message encoded decodes to itself, and encodes again to the same bytes.
fn message_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = message::encode(value);
    let back: T = message::decode(&bytes).map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&back, value);
    prop_assert_eq!(message::encode(&back), bytes);
    Ok(())
}

/// A value in the store's codec decodes to itself, and encodes again to the same bytes.
fn codec_round_trip<T>(value: &T) -> Result<(), TestCaseError>
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = codec::to_vec(value);
    let back: T = codec::from_slice(&bytes, "value").map_err(|e| TestCaseError::fail(format!("{e}")))?;
    prop_assert_eq!(&back, value);
    prop_assert_eq!(codec::to_vec(&back), bytes);
    Ok(())
}

/// Records of one window: times (in ms, on a coarse grid so that ties happen), seqs, a
/// reading each.
fn window_records() -> impl Strategy<Value = Vec<Record>> {
    let stream = StreamId::new(Dialect::Iotstream, 1001);
    proptest::collection::vec((0u64..60, 0u64..40, -100i16..100), 1..60).prop_map(move |v| {
        v.into_iter()
            .map(|(s, seq, x)| Record {
                stream,
                device_time_ns: W + s * 1_000_000_000 + seq % 3 * 1_000_000,
                seq,
                timestamp_raw: s,
                kind: Kind::Data,
                readings: Readings::Batch(vec![f32::from(x) / 4.0]),
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn requests_round_trip(r in request()) {
        message_round_trip(&r)?;
    }

    #[test]
    fn responses_round_trip(r in response()) {
        message_round_trip(&r)?;
    }

    #[test]
    fn announcements_round_trip(a in announce()) {
        message_round_trip(&a)?;
    }

    /// A stream's sum as a store keeps it.
    #[test]
    fn stream_sums_round_trip(windows in any::<u32>(), records in any::<u64>(), lanes in any::<[u64; 8]>()) {
        codec_round_trip(&mesh::StreamSum { windows, records, lanes })?;
    }

    #[test]
    fn tables_round_trip(
        count in 0usize..40,
        receipts in proptest::collection::vec((0usize..40, name(), any::<bool>()), 0..30),
    ) {
        let table = Table::from_receipts(count, receipts.iter().map(|(i, n, p)| (*i, n.as_str(), *p)));
        prop_assert!(table.fits(count));
        message_round_trip(&table)?;
        codec_round_trip(&table)?;
        // A table's bincode form as a `Provenance` response carries it, with its count.
        message_round_trip(&(count as u32, table.clone(), Table::default()))?;
    }

    #[test]
    fn statements_round_trip(s in statement()) {
        codec_round_trip(&s)?;
        message_round_trip(&s)?;
    }

    /// A window's entries → compact index → entries: the same times and seqs, tags where
    /// two entries tie (and only there).
    #[test]
    fn compact_indexes_round_trip(records in window_records()) {
        let blob = window::encode(records[0].stream, W, &records).expect("encodes");
        let (header, entries) = window::index(&blob).expect("index");
        let part = IndexPart::compact(&header, &entries);
        message_round_trip(&part)?;
        let summary = mesh::summarize(&blob, &Table::default()).expect("summary");
        let back = part.entries(&summary).map_err(|e| TestCaseError::fail(format!("{e}")))?;
        prop_assert_eq!(back.len(), entries.len());
        for (i, (b, e)) in back.iter().zip(&entries).enumerate() {
            prop_assert_eq!((b.offset_ns, b.seq), (e.offset_ns, e.seq));
            let tie = |j: usize| entries.get(j).is_some_and(|o| (o.offset_ns, o.seq) == (e.offset_ns, e.seq));
            let tied = (i > 0 && tie(i - 1)) || tie(i + 1);
            prop_assert_eq!(b.tag, tied.then_some(e.tag));
        }
    }

    /// A stream's state after any run of datagrams, in the store's codec: decoded and
    /// encoded again, the same bytes.
    #[test]
    fn stream_states_round_trip(
        steps in proptest::collection::vec(
            (any::<u64>(), any::<u64>(), 0u8..3, 0u8..3, any::<bool>(), any::<u64>()),
            0..20,
        ),
    ) {
        let s = StreamId::new(Dialect::Secure, 42);
        let mut state = stream::State::default();
        let cfg = stream::Config::default();
        for (seq, time, kind, presence, before, arrival) in steps {
            let kind = [Kind::Init, Kind::Data, Kind::Heartbeat][usize::from(kind)];
            let presence = [Presence::Absent, Presence::Same, Presence::Different][usize::from(presence)];
            let readings = Readings::None;
            let r = Record { stream: s, device_time_ns: time, seq, timestamp_raw: time, kind, readings };
            let predecessor = before.then_some(Neighbour { seq: seq.wrapping_sub(1), ext_seq: seq.wrapping_sub(1) });
            let _ = state.observe(&r, arrival, &cfg, || Lookup { presence, predecessor });
            let bytes = codec::to_vec(&state);
            let back: stream::State = codec::from_slice(&bytes, "stream state").expect("decodes");
            prop_assert_eq!(codec::to_vec(&back), bytes);
        }
    }

    /// A repair symbol of any layout and ESI past the source symbols: its bytes are the
    /// layout's symbol length and read back as the same symbol.
    #[test]
    fn repair_symbols_round_trip(
        slot_size in proptest::sample::select(vec![8usize, 16, 64, 1024]),
        slots in 1usize..200,
        esi in 0u32..(1 << 24),
        seed: u8,
    ) {
        let layout = Layout::new(slot_size, slots).expect("valid");
        let esi = esi.max(slots as u32);
        let data: Vec<u8> = (0..layout.symbol_len() - 4).map(|i| seed.wrapping_add(i as u8)).collect();
        let symbol = Symbol::new(esi, data).expect("24-bit");
        let bytes = symbol.to_bytes();
        prop_assert_eq!(bytes.len(), layout.symbol_len());
        prop_assert_eq!(Symbol::from_bytes(&bytes, &layout), Ok(symbol));
    }

    /// A node's table row (heard, and proved if any) in an announcement's short form and
    /// back: the same bits.
    #[test]
    fn rows_round_trip(count in 1usize..80, receipts in proptest::collection::vec((0usize..80, any::<bool>()), 1..80)) {
        let table = Table::from_receipts(count, receipts.iter().map(|(i, p)| (*i, "12D3KooWAlpha", *p)));
        if let Some((_, bits)) = table.nodes.first() {
            let row = Row::of(Some(bits), count);
            prop_assert_eq!(row.bits(count), Some(bits.clone()));
            message_round_trip(&row)?;
        }
    }

    /// A coordinator's rows of other nodes by member index, and back: in member order,
    /// a member listed twice once (its first row).
    #[test]
    fn other_rows_round_trip(list in proptest::collection::vec((0u32..300, row()), 0..20)) {
        let others = OtherRows::new(list.clone());
        let mut want: Vec<(u32, Row)> = Vec::new();
        for (m, r) in list {
            if !want.iter().any(|(w, _)| *w == m) {
                want.push((m, r));
            }
        }
        want.sort_by_key(|(m, _)| *m);
        let got = others.list().expect("as many members as rows");
        prop_assert_eq!(got, want.iter().map(|(m, r)| (*m, r)).collect::<Vec<_>>());
        message_round_trip(&others)?;
    }
}
