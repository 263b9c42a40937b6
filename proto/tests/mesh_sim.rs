//! The mesh protocol on a simulated network: N nodes, each hearing a seeded-lossy subset
//! of the same sensors, exchange announcements, summaries, indexes, symbols and
//! provenance through a network that loses requests. No sockets, no clock: virtual time.
//! After the mesh is quiet every node must hold, for every window, exactly the union of
//! what any node heard, with the same root and the same provenance table.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::mesh::{self, message, serve, Action, Held, Holdings, Reconciler, Request, Response, StreamDigest, Summary, Table, WindowId};
use telemesh_proto::record::{Kind, Readings, Record, StreamId};
use telemesh_proto::repair::{CacheConfig, EncoderCache};
use telemesh_proto::window::{self, Root};
use telemesh_proto::Dialect;

type Key = (u64, u64, [u8; 8]);

fn key(r: &Record) -> Key {
    (r.device_time_ns, r.seq, r.content_tag())
}

#[derive(Clone)]
struct Win {
    records: BTreeMap<Key, Record>,
    heard: BTreeMap<Key, BTreeSet<String>>,
    blob: Arc<Vec<u8>>,
    table: Table,
    summary: Summary,
}

impl Win {
    fn build(w: WindowId, records: BTreeMap<Key, Record>, heard: BTreeMap<Key, BTreeSet<String>>) -> Win {
        let list: Vec<Record> = records.values().cloned().collect();
        let blob = window::encode(w.stream, w.start, &list).expect("blob");
        let table = Table::from_heard(
            records.len(),
            records.keys().enumerate().flat_map(|(i, k)| heard.get(k).into_iter().flatten().map(move |n| (i, n.as_str()))),
        );
        let summary = mesh::summarize(&blob, &table).expect("summary");
        Win { records, heard, blob: Arc::new(blob), table, summary }
    }
}

#[derive(Default)]
struct Store {
    windows: BTreeMap<WindowId, Win>,
    /// List every record twice (as a node does with a record both stored and in memory).
    twice: bool,
}

impl Holdings for Store {
    fn summary(&self, window: WindowId) -> Option<Summary> {
        self.windows.get(&window).map(|w| w.summary)
    }
    fn stream(&self, stream: StreamId) -> Option<StreamDigest> {
        let list: Vec<Summary> = self.windows.values().filter(|w| w.summary.window.stream == stream).map(|w| w.summary).collect();
        (!list.is_empty()).then(|| mesh::stream_digest(stream, &list))
    }
    fn streams(&self, after: Option<StreamId>, limit: usize) -> Vec<StreamDigest> {
        let streams: BTreeSet<StreamId> = self.windows.keys().map(|w| w.stream).filter(|s| after.is_none_or(|a| *s > a)).collect();
        streams.into_iter().take(limit).filter_map(|s| self.stream(s)).collect()
    }
    fn windows(&self, stream: StreamId, after: Option<u64>, limit: usize) -> Vec<Summary> {
        self.windows
            .values()
            .filter(|w| w.summary.window.stream == stream && after.is_none_or(|a| w.summary.window.start > a))
            .take(limit)
            .map(|w| w.summary)
            .collect()
    }
    fn records(&self, window: WindowId) -> Vec<Record> {
        let once: Vec<Record> = self.windows.get(&window).map(|w| w.records.values().cloned().collect()).unwrap_or_default();
        if self.twice {
            once.iter().chain(&once).cloned().collect()
        } else {
            once
        }
    }
    fn by_root(&self, root: &Root) -> Option<Held> {
        self.windows.values().find(|w| w.summary.root == *root).map(|w| Held { blob: Arc::clone(&w.blob), table: w.table.clone() })
    }
}

/// How a node misbehaves when it serves.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    Honest,
    /// Flips bits in every index, proof and symbol it sends.
    Corrupt,
}

struct Node {
    name: String,
    store: Store,
    reconciler: Reconciler<usize>,
    encoders: EncoderCache,
    serve: Serve,
    served: u64,
    blamed: Vec<(usize, mesh::Blame)>,
    disconnected: BTreeSet<usize>,
}

impl Node {
    fn new(i: usize, serve: Serve) -> Node {
        let config = mesh::Config { sync_interval_ns: 2_000_000_000, ..mesh::Config::default() };
        Node {
            name: format!("n{i}"),
            store: Store::default(),
            reconciler: Reconciler::new(config),
            encoders: EncoderCache::new(CacheConfig::default()),
            serve,
            served: 0,
            blamed: Vec::new(),
            disconnected: BTreeSet::new(),
        }
    }

    fn hear(&mut self, r: &Record) {
        let w = WindowId { stream: r.stream, start: window::start(r.device_time_ns) };
        let (mut records, mut heard) = self.store.windows.remove(&w).map(|w| (w.records, w.heard)).unwrap_or_default();
        records.insert(key(r), r.clone());
        heard.entry(key(r)).or_default().insert(self.name.clone());
        self.store.windows.insert(w, Win::build(w, records, heard));
    }

    fn respond(&mut self, request: &Request) -> Response {
        let response = serve::respond(request, &self.store, &mut self.encoders);
        if self.serve == Serve::Honest {
            return response;
        }
        self.served += 1;
        match response {
            // Well-formed but wrong: the first time shifts every entry by one unit.
            Response::Index(message::IndexPart::Compact { count, slot_size, mut columns, tags }) => {
                if let Some(b) = columns.first_mut() {
                    *b ^= 0x01;
                }
                Response::Index(message::IndexPart::Compact { count, slot_size, columns, tags })
            }
            // Every other proof is wrong (the others lead to corrupted symbols).
            Response::Index(message::IndexPart::Verified { leaves, mut proof }) if self.served.is_multiple_of(2) => {
                match proof.last_mut() {
                    Some(b) => *b ^= 1,
                    None => proof = vec![0; 32],
                }
                Response::Index(message::IndexPart::Verified { leaves, proof })
            }
            Response::Symbols { mut data } => {
                for b in data.iter_mut().skip(5).step_by(7) {
                    *b ^= 0x55;
                }
                Response::Symbols { data }
            }
            other => other,
        }
    }
}

struct Mesh {
    nodes: Vec<Node>,
    now_ns: u64,
    rng: ChaCha8Rng,
    /// Probability that a request or its response is lost.
    loss: f64,
    /// Responses on their way: (to node, request id, response).
    inflight: VecDeque<(usize, u64, Option<Response>, usize)>,
    repair_bytes: usize,
    by_kind: BTreeMap<&'static str, usize>,
    /// Requests in flight per (from, to), and the most seen at once.
    in_flight: BTreeMap<(usize, usize), usize>,
    most_in_flight: usize,
}

impl Mesh {
    fn announce_all(&mut self, from: usize, windows: Vec<Summary>) {
        for to in 0..self.nodes.len() {
            if to != from && !self.nodes[to].disconnected.contains(&from) && !self.rng.gen_bool(self.loss) {
                let node = &mut self.nodes[to];
                node.reconciler.handle_announce(from, &windows, self.now_ns, &node.store);
            }
        }
    }

    /// Runs every node's actions until nothing moves; returns the steps taken.
    fn run(&mut self, max_steps: usize) -> usize {
        for step in 0..max_steps {
            let mut moved = false;
            for i in 0..self.nodes.len() {
                let node = &mut self.nodes[i];
                node.reconciler.tick(self.now_ns, &node.store);
                while let Some(action) = self.nodes[i].reconciler.poll() {
                    moved = true;
                    self.act(i, action);
                }
            }
            while let Some((to, id, response, from)) = self.inflight.pop_front() {
                moved = true;
                if let Some(n) = self.in_flight.get_mut(&(to, from)) {
                    *n -= 1;
                }
                let node = &mut self.nodes[to];
                node.reconciler.handle_response(id, response, self.now_ns, &node.store);
                while let Some(action) = self.nodes[to].reconciler.poll() {
                    self.act(to, action);
                }
            }
            self.now_ns += 100_000_000;
            if !moved && self.converged() && step > 50 {
                return step;
            }
        }
        max_steps
    }

    fn act(&mut self, i: usize, action: Action<usize>) {
        match action {
            Action::Send { id, peer, request } => {
                let n = self.in_flight.entry((i, peer)).or_default();
                *n += 1;
                self.most_in_flight = self.most_in_flight.max(*n);
                let lost = self.rng.gen_bool(self.loss) || self.nodes[peer].disconnected.contains(&i) || self.nodes[i].disconnected.contains(&peer);
                let response = if lost {
                    None
                } else {
                    let bytes = message::encode(&request);
                    let request: Request = message::decode(&bytes).expect("request decodes");
                    let response = self.nodes[peer].respond(&request);
                    let bytes = message::encode(&response);
                    if matches!(request, Request::Index { .. } | Request::Symbols { .. }) {
                        self.repair_bytes += bytes.len() + message::encode(&request).len();
                        let kind = if matches!(request, Request::Index { .. }) { "index" } else { "symbols" };
                        *self.by_kind.entry(kind).or_default() += bytes.len() + message::encode(&request).len();
                        *self.by_kind.entry(if matches!(request, Request::Index { .. }) { "index_n" } else { "symbols_n" }).or_default() += 1;
                    }
                    Some(message::decode::<Response>(&bytes).expect("response decodes"))
                };
                self.inflight.push_back((i, id, response, peer));
            }
            Action::Store(repaired) => {
                let node = &mut self.nodes[i];
                let w = repaired.window;
                let (mut records, heard) = node.store.windows.remove(&w).map(|w| (w.records, w.heard)).unwrap_or_default();
                for r in repaired.records {
                    records.entry(key(&r)).or_insert(r);
                }
                let win = Win::build(w, records, heard);
                let summary = win.summary;
                node.store.windows.insert(w, win);
                node.reconciler.handle_local(w, &node.store, self.now_ns);
                self.announce_all(i, vec![summary]);
            }
            Action::Provenance { window: w, root, table } => {
                let node = &mut self.nodes[i];
                let Some(win) = node.store.windows.get(&w) else { return };
                if win.summary.root != root {
                    return;
                }
                let mut heard = win.heard.clone();
                for (idx, k) in win.records.keys().enumerate() {
                    for name in table.heard(idx) {
                        heard.entry(*k).or_default().insert(name.to_owned());
                    }
                }
                let records = win.records.clone();
                let win = Win::build(w, records, heard);
                let summary = win.summary;
                node.store.windows.insert(w, win);
                self.announce_all(i, vec![summary]);
            }
            Action::Blame { peer, reason, disconnect } => {
                let node = &mut self.nodes[i];
                node.blamed.push((peer, reason));
                if disconnect {
                    node.disconnected.insert(peer);
                    node.reconciler.peer_down(&peer);
                }
            }
        }
    }

    fn honest(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter(|n| n.serve == Serve::Honest)
    }

    fn converged(&self) -> bool {
        let mut views = self.honest().map(|n| n.store.windows.values().map(|w| (w.summary.window, w.summary.root, w.summary.provenance)).collect::<Vec<_>>());
        let Some(first) = views.next() else { return true };
        views.all(|v| v == first)
    }
}

/// Sensors: `devices` IoTStream devices at `hz` for `seconds`, one with a reboot.
fn truth(devices: u32, seconds: u64, hz: u64, rng: &mut ChaCha8Rng) -> Vec<Record> {
    let t0 = 1_800_000_000_000u64; // ms
    let mut out = Vec::new();
    for d in 0..devices {
        let mut seq = u64::from(d) * 9_000 % 65_536;
        for s in 0..seconds * hz {
            let reboot = d == 1 && s == seconds * hz / 2;
            if reboot {
                seq = 0;
            }
            let t = t0 + s * 1000 / hz + u64::from(d);
            out.push(Record {
                stream: StreamId::new(Dialect::Iotstream, 100 + d),
                device_time_ns: t * 1_000_000,
                seq,
                timestamp_raw: t % (1 << 32),
                kind: if reboot { Kind::Init } else { Kind::Data },
                readings: if reboot { Readings::None } else { Readings::Batch((0..3).map(|_| rng.gen_range(0..1000) as f32 / 10.0).collect()) },
            });
            seq = (seq + 1) % 65_536;
        }
    }
    out
}

fn mesh(n: usize, serve: &[Serve], loss: f64, seed: u64) -> Mesh {
    Mesh {
        nodes: (0..n).map(|i| Node::new(i, serve.get(i).copied().unwrap_or(Serve::Honest))).collect(),
        now_ns: 1_000_000_000,
        rng: ChaCha8Rng::seed_from_u64(seed),
        loss,
        inflight: VecDeque::new(),
        repair_bytes: 0,
        by_kind: BTreeMap::new(),
        in_flight: BTreeMap::new(),
        most_in_flight: 0,
    }
}

/// Feeds every record to every node through independent `sensor_loss`; returns, per
/// record key, the nodes that heard it.
fn feed(m: &mut Mesh, records: &[Record], sensor_loss: f64, rng: &mut ChaCha8Rng) -> BTreeMap<(StreamId, Key), BTreeSet<String>> {
    let mut heard: BTreeMap<(StreamId, Key), BTreeSet<String>> = BTreeMap::new();
    for r in records {
        for node in &mut m.nodes {
            if !rng.gen_bool(sensor_loss) {
                node.hear(r);
                heard.entry((r.stream, key(r))).or_default().insert(node.name.clone());
            }
        }
    }
    heard
}

fn connect_all(m: &mut Mesh) {
    let n = m.nodes.len();
    for i in 0..n {
        for j in 0..n {
            if i != j {
                let now = m.now_ns;
                m.nodes[i].reconciler.peer_up(j, now);
            }
        }
    }
}

fn assert_union(m: &Mesh, heard: &BTreeMap<(StreamId, Key), BTreeSet<String>>) {
    for node in m.honest() {
        let mut got: BTreeMap<(StreamId, Key), BTreeSet<String>> = BTreeMap::new();
        for (w, win) in &node.store.windows {
            for (i, k) in win.records.keys().enumerate() {
                got.insert((w.stream, *k), win.table.heard(i).map(str::to_owned).collect());
            }
        }
        assert_eq!(got.len(), heard.len(), "{}: records", node.name);
        assert!(got == *heard, "{}: records or provenance differ from the union", node.name);
    }
}

#[test]
fn three_nodes_converge_to_the_union_with_provenance_under_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let records = truth(4, 200, 1, &mut rng);
    let mut m = mesh(3, &[], 0.1, 1);
    let heard = feed(&mut m, &records, 0.2, &mut rng);
    connect_all(&mut m);
    // Everyone announces what it holds; 10% of announcements and requests are lost.
    for i in 0..3 {
        let all: Vec<Summary> = m.nodes[i].store.windows.values().map(|w| w.summary).collect();
        m.announce_all(i, all);
    }
    let steps = m.run(5_000);
    assert!(steps < 5_000, "no convergence");
    assert!(m.converged());
    assert_union(&m, &heard);
    let repaired: u64 = m.nodes.iter().map(|n| n.reconciler.stats().records_repaired).sum();
    assert!(repaired > 0);
    assert!(m.nodes.iter().all(|n| n.blamed.is_empty()), "no honest node is blamed");
    let cap = mesh::Config::default().max_requests_per_peer;
    assert!(m.most_in_flight <= cap, "{} requests in flight to one peer (cap {cap})", m.most_in_flight);
    assert!(m.most_in_flight > 1, "requests to one peer overlap");
}

#[test]
fn a_node_with_nothing_and_no_gossip_catches_up_by_summary_exchange() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let records = truth(3, 150, 1, &mut rng);
    let mut m = mesh(3, &[], 0.0, 2);
    // Nodes 0 and 1 heard the sensors; node 2 starts later and hears nothing.
    let mut heard = BTreeMap::new();
    for r in &records {
        for i in 0..2 {
            if !rng.gen_bool(0.2) {
                m.nodes[i].hear(r);
                heard.entry((r.stream, key(r))).or_insert_with(BTreeSet::new).insert(m.nodes[i].name.clone());
            }
        }
    }
    connect_all(&mut m);
    let steps = m.run(5_000);
    assert!(steps < 5_000, "no convergence");
    assert_union(&m, &heard);
    assert!(m.nodes[2].reconciler.stats().windows_repaired > 0);
}

#[test]
fn a_corrupting_peer_is_blamed_and_nothing_corrupt_is_stored() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let records = truth(2, 120, 5, &mut rng);
    // Node 2 serves corrupted indexes, proofs and symbols.
    let mut m = mesh(3, &[Serve::Honest, Serve::Honest, Serve::Corrupt], 0.0, 3);
    let heard = feed(&mut m, &records, 0.2, &mut rng);
    connect_all(&mut m);
    for i in 0..3 {
        let all: Vec<Summary> = m.nodes[i].store.windows.values().map(|w| w.summary).collect();
        m.announce_all(i, all);
    }
    m.run(5_000);
    let truth: BTreeSet<(StreamId, Key)> = records.iter().map(|r| (r.stream, key(r))).collect();
    for node in m.honest() {
        for (w, win) in &node.store.windows {
            for k in win.records.keys() {
                assert!(truth.contains(&(w.stream, *k)), "{} stored a record nobody sent", node.name);
            }
        }
        assert!(node.blamed.iter().all(|(p, _)| *p == 2), "only the corrupting peer is blamed");
        assert!(node.disconnected.contains(&2), "{} disconnected the corrupting peer", node.name);
        let failures = node.reconciler.stats().verification_failures;
        assert!(failures >= 2, "{}: {failures} verification failures", node.name);
        let reasons: BTreeSet<&str> = node.blamed.iter().map(|(_, r)| r.name()).collect();
        eprintln!("{}: blamed for {reasons:?}, {failures} verification failures", node.name);
    }
    // The honest pair still converges on the union of what the honest nodes heard, and
    // on what they repaired from each other.
    assert!(m.converged());
    let honest_heard: usize = heard.values().filter(|n| n.contains("n0") || n.contains("n1")).count();
    let held: usize = m.nodes[0].store.windows.values().map(|w| w.records.len()).sum();
    assert!(held >= honest_heard);
}

#[test]
fn only_what_a_node_lacks_is_repaired() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let records = truth(3, 120, 1, &mut rng);
    let mut m = mesh(2, &[], 0.0, 5);
    m.nodes[0].store.twice = true;
    let mut lacked = 0u64;
    for r in &records {
        m.nodes[1].hear(r);
        if rng.gen_bool(0.8) {
            m.nodes[0].hear(r);
        } else {
            lacked += 1;
        }
    }
    connect_all(&mut m);
    m.run(5_000);
    assert!(m.converged());
    assert_eq!(m.nodes[0].reconciler.stats().records_repaired, lacked);
    assert_eq!(m.nodes[1].reconciler.stats().records_repaired, 0);
}

#[test]
fn repair_bytes_stay_near_the_bytes_repaired() {
    // One window per device, 3 nodes at 20% sensor loss: the wire cost of index and
    // symbol exchanges per canonical byte of record repaired.
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let records = truth(5, 60, 1, &mut rng);
    let mut m = mesh(3, &[], 0.0, 4);
    feed(&mut m, &records, 0.2, &mut rng);
    connect_all(&mut m);
    for i in 0..3 {
        let all: Vec<Summary> = m.nodes[i].store.windows.values().map(|w| w.summary).collect();
        m.announce_all(i, all);
    }
    m.run(5_000);
    assert!(m.converged());
    let slot = m.nodes[0].store.windows.values().next().map(|w| usize::from(w.summary.slot_size)).unwrap_or(0);
    let repaired: u64 = m.nodes.iter().map(|n| n.reconciler.stats().records_repaired).sum();
    let ratio = m.repair_bytes as f64 / (repaired as f64 * (window::INDEX_ENTRY_LEN + slot) as f64);
    eprintln!("{:?}", m.by_kind);
    for n in &m.nodes {
        eprintln!("{:?}", n.reconciler.stats());
    }
    eprintln!("repair bytes {} for {} records of {} B: ratio {ratio:.2}", m.repair_bytes, repaired, window::INDEX_ENTRY_LEN + slot);
    assert!(ratio < 3.0, "ratio {ratio}");
}
