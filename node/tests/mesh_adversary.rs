//! A peer that lies: it announces a real window with a corrupted compact index, and serves
//! corrupted compact indexes,
//! wrong Merkle proofs and corrupted symbols. The honest node stores nothing of it,
//! counts the verification failures, blames the peer and disconnects it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::PeerId;
use telemesh_node::trust::Membership;
use telemesh_node::mesh::overlay::{self, Event};
use telemesh_node::Node;
use telemesh_proto::mesh::message::{self, IndexPart};
use telemesh_proto::mesh::{self, serve, Held, Holdings, Request, Response, StreamDigest, Summary, Table, WindowId};
use telemesh_proto::record::{Kind, Readings, Record, StreamId, TimestampUnit};
use telemesh_proto::repair::{CacheConfig, EncoderCache};
use telemesh_proto::window::{self, Root};
use telemesh_proto::Dialect;
use tokio_util::sync::CancellationToken;

const DEVICE: u32 = 999;

/// The liar's one window: 300 records, so the blob spans several Merkle leaves and a
/// verified index still leaves slots to rebuild from symbols.
struct One {
    blob: Arc<Vec<u8>>,
    summary: Summary,
}

impl One {
    fn new() -> One {
        let stream = StreamId::new(Dialect::Iotstream, DEVICE);
        let start = window::start(1_795_000_000_000_000_000);
        let records: Vec<Record> = (0..300u64)
            .map(|i| Record {
                stream,
                device_time_ns: start + i * 200_000_000,
                seq: i,
                timestamp_raw: (start / 1_000_000 + i * 200) % (1 << 32),
                kind: Kind::Data,
                readings: Readings::Batch(vec![i as f32, 1.5, 2.5, 3.5, 4.5]),
            })
            .collect();
        let blob = window::encode(stream, start, &records).expect("blob");
        let table = Table::from_heard(records.len(), (0..records.len()).map(|i| (i, "liar")));
        let summary = mesh::summarize(&blob, &table).expect("summary");
        One { blob: Arc::new(blob), summary }
    }
}

impl Holdings for One {
    fn summary(&self, window: WindowId) -> Option<Summary> {
        (window == self.summary.window).then_some(self.summary)
    }
    fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
        (stream == self.summary.window.stream).then(|| mesh::stream_digest(stream, [&self.summary]))
    }
    fn streams(&self, after: Option<StreamId>, _: usize) -> Vec<StreamDigest> {
        self.stream(self.summary.window.stream).into_iter().filter(|d| after.is_none_or(|a| d.stream > a)).collect()
    }
    fn windows(&self, stream: StreamId, after: Option<u64>, _: usize) -> Vec<Summary> {
        self.summary(WindowId { stream, start: self.summary.window.start })
            .into_iter()
            .filter(|s| after.is_none_or(|a| s.window.start > a))
            .collect()
    }
    fn records(&self, _: WindowId) -> Vec<Record> {
        Vec::new()
    }
    fn held(&self, window: WindowId, root: &Root) -> Option<Held> {
        (window == self.summary.window && *root == self.summary.root).then(|| Held { blob: Arc::clone(&self.blob), table: Table::default() })
    }
}

/// The honest answer, corrupted: every compact index shifted, every other proof wrong
/// (`proofs` counts the verified indexes served), every symbol flipped.
fn lie(response: Response, proofs: u64) -> Response {
    match response {
        Response::Index(IndexPart::Compact { count, slot_size, mut columns, tags }) => {
            columns[0] ^= 1;
            Response::Index(IndexPart::Compact { count, slot_size, columns, tags })
        }
        Response::Index(IndexPart::Verified { leaves, mut proof }) if proofs % 2 == 1 => {
            if let Some(b) = proof.last_mut() {
                *b ^= 1;
            }
            Response::Index(IndexPart::Verified { leaves, proof })
        }
        Response::Symbols { mut data } => {
            for b in data.iter_mut().skip(5).step_by(3) {
                *b ^= 0x5a;
            }
            Response::Symbols { data }
        }
        other => other,
    }
}

/// A node of the open mesh `mesh`: every peer of that name is a member, so the test's raw
/// peer is one (in a closed mesh it would be one the owner invited; what keeps outsiders
/// out is tested in `membership.rs`).
fn open_node(dir: &std::path::Path, mesh: &str) -> Node {
    Node::start(telemesh_node::Config { mesh: mesh.into(), open: true, ..common::config(dir, TimestampUnit::Ms) })
        .expect("node starts")
}

/// A raw overlay peer of `mesh` joining through `boot` with `keypair`, which the test
/// scripts; call within a tokio runtime.
fn raw_peer(
    boot: &str,
    mesh: &str,
    keypair: Keypair,
    shutdown: &CancellationToken,
) -> (overlay::Client, tokio::sync::mpsc::Receiver<Event>) {
    let config = overlay::Config {
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse().expect("multiaddr")],
        bootstrap: vec![boot.parse().expect("multiaddr")],
        mesh: mesh.into(),
        ..overlay::Config::default()
    };
    let open = Arc::new(Membership::open(mesh, keypair.public().to_peer_id()));
    overlay::start(config, keypair, Arc::new(|_: &PeerId, _: &[u8]| true), open, shutdown.clone()).expect("overlay")
}

#[test]
fn a_lying_peer_is_blamed_disconnected_and_nothing_of_it_is_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    // The liar is a member.
    let honest = open_node(dir.path(), "test");
    let boot = common::bootstrap_addr(&honest);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let shutdown = CancellationToken::new();
    let liar_id = rt.block_on(async {
        let keypair = Keypair::generate_ed25519();
        let signer = keypair.clone();
        let (client, mut events) = raw_peer(&boot, "test", keypair, &shutdown);
        let id = client.local_peer_id();
        let one = One::new();
        // Announced with its compact index, shifted like every index it serves.
        let (header, entries) = window::index(&one.blob).expect("index");
        let Response::Index(shifted) = lie(Response::Index(IndexPart::compact(&header, &entries)), 0) else { unreachable!() };
        let item = message::Announced { summary: one.summary, index: Some(shifted), row: message::Row::All, others: Vec::new() };
        // Signed, as every announcement must be: the liar is a member, its lies are in what
        // it serves.
        let mut announce = message::pack_announces(&[item], [0; 8]).remove(0);
        announce.sign(|bytes| signer.sign(bytes).unwrap_or_default());
        let announce = message::encode(&announce);
        let token = shutdown.clone();
        tokio::spawn(async move {
            let mut encoders = EncoderCache::new(CacheConfig::default());
            let mut proofs = 0u64;
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = tick.tick() => { let _ = client.publish(announce.clone()).await; }
                    Some(event) = events.recv() => {
                        if let Event::Request { data, reply, .. } = event {
                            let response = match message::decode::<Request>(&data) {
                                Ok(request) => {
                                    if matches!(request, Request::Index { verified: true, .. }) {
                                        proofs += 1;
                                    }
                                    lie(serve::respond(&request, &one, &mut encoders), proofs)
                                }
                                Err(_) => Response::Refused,
                            };
                            let _ = reply.send(message::encode(&response));
                        }
                    }
                }
            }
        });
        id
    });

    // The honest node tries, fails verification, blames, and finally disconnects the liar.
    let deadline = Instant::now() + Duration::from_secs(60);
    let metrics = loop {
        let m = common::get_text(&format!("{}/metrics", honest.url()));
        let peers = common::get_json(&format!("{}/v1/peers", honest.url()));
        let connected = peers["peers"].as_array().is_some_and(|p| p.iter().any(|p| p["peer_id"] == liar_id.to_string()));
        if common::metric(&m, "telemesh_mesh_blames_total") >= 3.0 && !connected {
            break m;
        }
        assert!(Instant::now() < deadline, "the liar was not blamed 3 times and disconnected:\n{m}");
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(common::metric(&metrics, "telemesh_mesh_verification_failures_total") >= 3.0, "{metrics}");
    assert!(common::metric(&metrics, "telemesh_mesh_blames_total{reason=\"bad_proof\"}") >= 1.0, "{metrics}");
    assert!(common::metric(&metrics, "telemesh_mesh_blames_total{reason=\"bad_symbols\"}") >= 1.0, "{metrics}");
    assert_eq!(common::metric(&metrics, "telemesh_mesh_windows_repaired_total"), 0.0);
    assert_eq!(common::metric(&metrics, "telemesh_mesh_windows_from_gossip_total"), 0.0);
    let page = common::get_json(&format!("{}/v1/streams/iotstream/{DEVICE}/records", honest.url()));
    assert_eq!(page["count"], 0, "nothing of the liar's window is stored");
    shutdown.cancel();
    drop(rt);
    honest.stop().expect("stops");
}

/// A member forges statements: offers signed with another key, a row changed after
/// signing, gossip signed by someone else. Each is refused (offers) or rejected (gossip),
/// counted, the offers blamed until the forger is disconnected, and no forged statement is
/// kept — while its one honest offer was taken and its statement kept.
#[test]
fn forged_statements_are_refused_blamed_and_never_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let honest = open_node(dir.path(), "forge");
    let boot = common::bootstrap_addr(&honest);
    let honest_id: PeerId = boot.rsplit('/').next().expect("peer id").parse().expect("peer id");
    let metric = |name: &str| common::metric(&common::get_text(&format!("{}/metrics", honest.url())), name);

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let shutdown = CancellationToken::new();
    let keypair = Keypair::generate_ed25519();
    let other = Keypair::generate_ed25519();
    let signer = keypair.clone();
    let (client, _events) = rt.block_on(async { raw_peer(&boot, "forge", keypair, &shutdown) });
    let forger = client.local_peer_id();
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("telemesh_mesh_peers") < 1.0 {
        assert!(Instant::now() < deadline, "the forger did not connect");
        std::thread::sleep(Duration::from_millis(100));
    }

    let one = One::new();
    let (header, entries) = window::index(&one.blob).expect("index");
    let item = message::Announced {
        summary: one.summary,
        index: Some(IndexPart::compact(&header, &entries)),
        row: message::Row::All,
        others: Vec::new(),
    };
    let unsigned = message::pack_announces(&[item], [0; 8]).remove(0);
    let signed_by = |key: &Keypair, announce: &message::Announce| {
        let mut a = announce.clone();
        a.sign(|bytes| key.sign(bytes).unwrap_or_default());
        a
    };
    let offer = |announce: message::Announce| {
        let answer = rt.block_on(client.request(honest_id, message::encode(&Request::Offer(announce)))).expect("answered");
        message::decode::<Response>(&answer).expect("response")
    };

    // Its own, signed: taken, and the statement kept.
    assert_eq!(offer(signed_by(&signer, &unsigned)), Response::Accepted);
    let statements = |window| {
        let answer = rt.block_on(client.request(honest_id, message::encode(&Request::Statements { window }))).expect("answered");
        match message::decode::<Response>(&answer).expect("response") {
            Response::Statements(list) => list,
            other => panic!("{other:?}"),
        }
    };
    let kept = statements(one.summary.window);
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].0, forger.to_string());
    assert!(kept[0].1.verify(|m, sig| signer.public().verify(m, sig)));

    // Gossip signed by another key: rejected by validation, never delivered.
    let before = metric("telemesh_mesh_rejects_total{reason=\"gossip_rejected\"}");
    let forged_gossip = message::encode(&signed_by(&other, &unsigned));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("telemesh_mesh_rejects_total{reason=\"gossip_rejected\"}") <= before {
        let _ = rt.block_on(client.publish(forged_gossip.clone()));
        assert!(Instant::now() < deadline, "forged gossip was not rejected");
        std::thread::sleep(Duration::from_millis(300));
    }

    // A row changed after signing (it heard fewer than it now claims), then offers signed
    // by another key: refused, counted, blamed — the third blame disconnects it.
    let mut less = unsigned.clone();
    less.rows[0] = message::Row::Missing(vec![0, 1, 2]);
    let mut altered = signed_by(&signer, &less);
    altered.rows[0] = message::Row::All;
    assert_eq!(offer(altered), Response::Refused);
    assert_eq!(offer(signed_by(&other, &unsigned)), Response::Refused);
    let _ = rt.block_on(client.request(honest_id, message::encode(&Request::Offer(signed_by(&other, &unsigned)))));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric("telemesh_mesh_blames_total{reason=\"bad_signature\"}") < 3.0 || metric("telemesh_mesh_peers") > 0.0 {
        assert!(Instant::now() < deadline, "the forger was not blamed 3 times and disconnected");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(metric("telemesh_mesh_rejects_total{reason=\"bad_signature\"}") >= 3.0);
    shutdown.cancel();
    drop(rt);

    // Nothing forged was kept: the store holds the one honest statement.
    honest.stop().expect("stops");
    let store = telemesh_node::store::SledStore::open(dir.path(), 16).expect("store");
    use telemesh_node::store::Store as _;
    let kept = store.statements(one.summary.window).expect("statements");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].1.claim.row, message::Row::All.bits(300).expect("bits"));
}
