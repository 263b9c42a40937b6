//! The mesh protocol on a simulated network (`proto::mesh::sim`): N nodes, each hearing a
//! seeded-lossy subset of the same sensors, exchange announcements, summaries, indexes,
//! symbols and provenance through links that lose messages. No sockets, no clock: virtual
//! time. After the mesh is quiet every node must hold, for every window, exactly the union
//! of what any node heard, with the same root and the same provenance table.

use std::collections::{BTreeMap, BTreeSet};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::impair;
use telemesh_proto::mesh;
use telemesh_proto::mesh::sim::{self, key, Key, Serve, Sim};
use telemesh_proto::record::{Kind, Readings, Record, StreamId};
use telemesh_proto::window;
use telemesh_proto::Dialect;

/// Simulated time the tests give a mesh to become quiet (the old step loop's 5,000 steps
/// of 100 ms).
const DEADLINE_NS: u64 = 500_000_000_000;

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
                readings: if reboot {
                    Readings::None
                } else {
                    Readings::Batch(
                        (0..3)
                            .map(|_| rng.gen_range(0..1000) as f32 / 10.0)
                            .collect(),
                    )
                },
            });
            seq = (seq + 1) % 65_536;
        }
    }
    out
}

/// `n` nodes; `loss` is the probability that a message (announcement, request or
/// response) is lost on its way, each way.
fn mesh(n: usize, serve: &[Serve], loss: f64, seed: u64) -> Sim {
    Sim::new(sim::Config {
        nodes: n,
        serve: serve.to_vec(),
        mesh: mesh::Config {
            sync_interval_ns: 2_000_000_000,
            ..mesh::Config::default()
        },
        overlay: impair::Config {
            loss,
            delay_ns: 10_000_000,
            ..impair::Config::default()
        },
        seed,
        request_timeout_ns: 1_000_000_000,
        tick_ns: 100_000_000,
        start_ns: 1_000_000_000,
        ..sim::Config::default()
    })
}

/// Runs until the mesh is quiet; false if it is not by the deadline.
fn run(m: &mut Sim) -> bool {
    let deadline = m.now_ns() + DEADLINE_NS;
    m.run_until_quiet(deadline).is_some()
}

/// Feeds every record to every node through independent `sensor_loss`; returns, per
/// record key, the nodes that heard it.
fn feed(
    m: &mut Sim,
    records: &[Record],
    sensor_loss: f64,
    rng: &mut ChaCha8Rng,
) -> BTreeMap<(StreamId, Key), BTreeSet<String>> {
    let mut heard: BTreeMap<(StreamId, Key), BTreeSet<String>> = BTreeMap::new();
    let mut lists: Vec<Vec<Record>> = vec![Vec::new(); m.nodes().len()];
    for r in records {
        for (i, list) in lists.iter_mut().enumerate() {
            if !rng.gen_bool(sensor_loss) {
                list.push(r.clone());
                heard
                    .entry((r.stream, key(r)))
                    .or_default()
                    .insert(m.node(i).name().to_owned());
            }
        }
    }
    for (i, list) in lists.iter().enumerate() {
        m.hear(i, list);
    }
    heard
}

fn assert_union(m: &Sim, heard: &BTreeMap<(StreamId, Key), BTreeSet<String>>) {
    for node in m.honest() {
        let mut got: BTreeMap<(StreamId, Key), BTreeSet<String>> = BTreeMap::new();
        for (w, win) in node.store().windows() {
            for (i, k) in win.records().keys().enumerate() {
                got.insert(
                    (w.stream, *k),
                    win.table().heard(i).map(str::to_owned).collect(),
                );
            }
        }
        assert_eq!(got.len(), heard.len(), "{}: records", node.name());
        assert!(
            got == *heard,
            "{}: records or provenance differ from the union",
            node.name()
        );
    }
}

#[test]
fn three_nodes_converge_to_the_union_with_provenance_under_loss() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let records = truth(4, 200, 1, &mut rng);
    let mut m = mesh(3, &[], 0.1, 1);
    let heard = feed(&mut m, &records, 0.2, &mut rng);
    m.connect_all();
    // Everyone announces what it holds; 10% of announcements, requests and responses are lost.
    m.announce_all();
    assert!(run(&mut m), "no convergence");
    assert!(m.converged());
    assert_union(&m, &heard);
    let repaired: u64 = m.nodes().iter().map(|n| n.stats().records_repaired).sum();
    assert!(repaired > 0);
    assert!(
        m.nodes().iter().all(|n| n.blamed().is_empty()),
        "no honest node is blamed"
    );
    let cap = mesh::Config::default().max_requests_per_peer;
    assert!(
        m.most_in_flight() <= cap,
        "{} requests in flight to one peer (cap {cap})",
        m.most_in_flight()
    );
    assert!(m.most_in_flight() > 1, "requests to one peer overlap");
}

#[test]
fn a_node_with_nothing_and_no_gossip_catches_up_by_summary_exchange() {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let records = truth(3, 150, 1, &mut rng);
    let mut m = mesh(3, &[], 0.0, 2);
    // Nodes 0 and 1 heard the sensors; node 2 starts later and hears nothing.
    let mut heard = BTreeMap::new();
    let mut lists: Vec<Vec<Record>> = vec![Vec::new(); 2];
    for r in &records {
        for (i, list) in lists.iter_mut().enumerate() {
            if !rng.gen_bool(0.2) {
                list.push(r.clone());
                heard
                    .entry((r.stream, key(r)))
                    .or_insert_with(BTreeSet::new)
                    .insert(m.node(i).name().to_owned());
            }
        }
    }
    for (i, list) in lists.iter().enumerate() {
        m.hear(i, list);
    }
    m.connect_all();
    assert!(run(&mut m), "no convergence");
    assert_union(&m, &heard);
    assert!(m.node(2).stats().windows_repaired > 0);
}

#[test]
fn a_corrupting_peer_is_blamed_and_nothing_corrupt_is_stored() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let records = truth(2, 120, 5, &mut rng);
    // Node 2 serves corrupted indexes, proofs and symbols.
    let mut m = mesh(3, &[Serve::Honest, Serve::Honest, Serve::Corrupt], 0.0, 3);
    let heard = feed(&mut m, &records, 0.2, &mut rng);
    m.connect_all();
    m.announce_all();
    run(&mut m);
    let truth: BTreeSet<(StreamId, Key)> = records.iter().map(|r| (r.stream, key(r))).collect();
    for node in m.honest() {
        for (w, win) in node.store().windows() {
            for k in win.records().keys() {
                assert!(
                    truth.contains(&(w.stream, *k)),
                    "{} stored a record nobody sent",
                    node.name()
                );
            }
        }
        assert!(
            node.blamed().iter().all(|(p, _)| *p == 2),
            "only the corrupting peer is blamed"
        );
        assert!(
            node.disconnected().contains(&2),
            "{} disconnected the corrupting peer",
            node.name()
        );
        let failures = node.stats().verification_failures;
        assert!(
            failures >= 2,
            "{}: {failures} verification failures",
            node.name()
        );
        let reasons: BTreeSet<&str> = node.blamed().iter().map(|(_, r)| r.name()).collect();
        eprintln!(
            "{}: blamed for {reasons:?}, {failures} verification failures",
            node.name()
        );
    }
    // The honest pair still converges on the union of what the honest nodes heard, and
    // on what they repaired from each other.
    assert!(m.converged());
    let honest_heard: usize = heard
        .values()
        .filter(|n| n.contains("n0") || n.contains("n1"))
        .count();
    let held: usize = m
        .node(0)
        .store()
        .windows()
        .values()
        .map(|w| w.records().len())
        .sum();
    assert!(held >= honest_heard);
}

#[test]
fn only_what_a_node_lacks_is_repaired() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let records = truth(3, 120, 1, &mut rng);
    let mut m = mesh(2, &[], 0.0, 5);
    m.list_twice(0, true);
    let mut lacked = 0u64;
    let mut zero = Vec::new();
    for r in &records {
        if rng.gen_bool(0.8) {
            zero.push(r.clone());
        } else {
            lacked += 1;
        }
    }
    m.hear(1, &records);
    m.hear(0, &zero);
    m.connect_all();
    run(&mut m);
    assert!(m.converged());
    assert_eq!(m.node(0).stats().records_repaired, lacked);
    assert_eq!(m.node(1).stats().records_repaired, 0);
}

#[test]
fn repair_bytes_stay_near_the_bytes_repaired() {
    // One window per device, 3 nodes at 20% sensor loss: the wire cost of index and
    // symbol exchanges per canonical byte of record repaired.
    let mut rng = ChaCha8Rng::seed_from_u64(10);
    let records = truth(5, 60, 1, &mut rng);
    let mut m = mesh(3, &[], 0.0, 4);
    feed(&mut m, &records, 0.2, &mut rng);
    m.connect_all();
    m.announce_all();
    run(&mut m);
    assert!(m.converged());
    let slot = m
        .node(0)
        .store()
        .windows()
        .values()
        .next()
        .map(|w| usize::from(w.summary().slot_size))
        .unwrap_or(0);
    let repaired: u64 = m.nodes().iter().map(|n| n.stats().records_repaired).sum();
    let ratio =
        m.repair_bytes() as f64 / (repaired as f64 * (window::INDEX_ENTRY_LEN + slot) as f64);
    eprintln!("{:?}", m.traffic());
    for n in m.nodes() {
        eprintln!("{:?}", n.stats());
    }
    eprintln!(
        "repair bytes {} for {} records of {} B: ratio {ratio:.2}",
        m.repair_bytes(),
        repaired,
        window::INDEX_ENTRY_LEN + slot
    );
    assert!(ratio < 3.0, "ratio {ratio}");
}

#[test]
fn announced_indexes_repair_every_window_in_one_round_with_no_index_request() {
    // 3 nodes at 5% sensor loss, no message loss: every node hears every announcement,
    // so it asks each holder of records it lacks for exactly that many symbols, once,
    // and all reach the union with no chain.
    let run_with = |gossip_index: bool| {
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let records = truth(6, 60, 1, &mut rng);
        let mut m = Sim::new(sim::Config {
            gossip_index,
            ..sim::Config {
                nodes: 3,
                seed: 7,
                start_ns: 1_000_000_000,
                ..sim::Config::default()
            }
        });
        let heard = feed(&mut m, &records, 0.05, &mut rng);
        m.connect_all();
        m.announce_all();
        assert!(run(&mut m));
        assert_union(&m, &heard);
        let index = m.traffic().get(&sim::Kind::Index).map_or(0, |c| c.requests);
        let trips = m.convergence().values().map(|c| c.round_trips).max().unwrap_or(0);
        let lacked: u64 = m.nodes().iter().map(|n| n.stats().records_repaired).sum();
        (index, trips, m.repair_bytes(), lacked)
    };
    let (index, trips, bytes, lacked) = run_with(true);
    let (old_index, old_trips, old_bytes, old_lacked) = run_with(false);
    eprintln!("gossip: {index} index requests, {trips} round trips, {bytes} B for {lacked}; without: {old_index}, {old_trips}, {old_bytes} B for {old_lacked}");
    assert_eq!(lacked, old_lacked, "the same records are repaired");
    assert_eq!(index, 0, "no index request");
    assert!(trips <= 1, "one round trip: {trips}");
    assert!(old_index > 0 && old_trips > 1, "without indexes: {old_index} index requests, {old_trips} round trips");
    assert!(bytes < old_bytes);
}

/// Two or three versions of each record — the same (time, seq), other readings: devices
/// configured with one id, or a spoofer — heard at different sites. Every version is a
/// record: every node must end with all of them, each with the sites that heard it.
#[test]
fn every_version_of_a_conflicting_record_reaches_every_node() {
    for versions in [2usize, 3] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let base = truth(2, 120, 1, &mut rng);
        let mut m = mesh(4, &[], 0.05, 3);
        let mut heard: BTreeMap<(StreamId, Key), BTreeSet<String>> = BTreeMap::new();
        let mut lists: Vec<Vec<Record>> = vec![Vec::new(); 4];
        for r in &base {
            // Site v hears version v; the last site hears a random one, sometimes none.
            for v in 0..versions {
                let mut version = r.clone();
                if let Readings::Batch(b) = &mut version.readings {
                    b[0] += v as f32 * 1000.0;
                }
                let mut sites = vec![v];
                if rng.gen_range(0..versions + 1) == v {
                    sites.push(3);
                }
                for s in sites {
                    lists[s].push(version.clone());
                    heard.entry((version.stream, key(&version))).or_default().insert(m.node(s).name().to_owned());
                }
            }
        }
        for (i, list) in lists.iter().enumerate() {
            m.hear(i, list);
        }
        m.connect_all();
        m.announce_all();
        let quiet = run(&mut m);
        let held: Vec<Vec<usize>> =
            m.nodes().iter().map(|n| n.store().windows().values().map(|w| w.records().len()).collect()).collect();
        assert!(quiet, "{versions} versions: no convergence; records per window at each node {held:?}");
        assert!(m.converged());
        assert_union(&m, &heard);
    }
}

/// Provenance rides in the announcements: with nothing lost on the overlay, five nodes end
/// with the same tables — each record with every node that heard it — without asking
/// anyone for a table (before rows, every merge was announced and answered by pulls).
#[test]
fn provenance_tables_are_built_from_announced_rows_without_pulling_tables() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let records = truth(3, 120, 1, &mut rng);
    let mut m = mesh(5, &[], 0.0, 2);
    let heard = feed(&mut m, &records, 0.1, &mut rng);
    m.connect_all();
    m.announce_all();
    assert!(run(&mut m), "no convergence");
    assert!(m.converged());
    assert_union(&m, &heard);
    let pulls = m.traffic().get(&sim::Kind::Provenance).map_or(0, |c| c.requests);
    assert_eq!(pulls, 0, "no table was asked for");
}

/// `n` nodes announcing through `r` coordinators per window (`docs/protocol.md`,
/// "Coordinators").
fn coordinated(n: usize, serve: &[Serve], r: Option<usize>, loss: f64, seed: u64) -> Sim {
    let mut config = mesh(n, serve, loss, seed).config().clone();
    config.coordinators = r;
    Sim::new(config)
}

/// Every node announces what it holds; the mesh must be quiet with every honest node
/// holding the union, provenance included.
fn converge_to_union(m: &mut Sim, heard: &BTreeMap<(StreamId, Key), BTreeSet<String>>) {
    m.connect_all();
    m.announce_all();
    assert!(run(m), "no convergence");
    assert!(m.converged());
    assert_union(m, heard);
}

#[test]
fn coordinators_bring_every_record_and_row_to_every_node_for_a_fraction_of_the_gossip() {
    let mut gossip = Vec::new();
    for r in [None, Some(3)] {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let records = truth(6, 180, 1, &mut rng);
        let mut m = coordinated(12, &[], r, 0.0, 3);
        let heard = feed(&mut m, &records, 0.1, &mut rng);
        converge_to_union(&mut m, &heard);
        let pulls = m.traffic().get(&sim::Kind::Provenance).map_or(0, |c| c.requests);
        // Everyone to everyone needs no table; with coordinators the summary exchange
        // still pulls a few (a node whose copy changed between two announcements).
        let bound = if r.is_none() { 0 } else { 40 };
        assert!(pulls <= bound, "{pulls} tables asked for ({r:?})");
        gossip.push(m.traffic().get(&sim::Kind::Gossip).map_or(0, |c| c.bytes));
    }
    // 12 nodes: every node announcing to every node, twice a window (its seal, its
    // repair), against offers to 3 coordinators and one announcement to everyone.
    assert!(gossip[1] * 3 < gossip[0], "gossip bytes: everyone {} coordinators {}", gossip[0], gossip[1]);
}

#[test]
fn with_coordinators_a_lossy_overlay_still_brings_the_union_to_every_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let records = truth(4, 180, 1, &mut rng);
    let mut m = coordinated(8, &[], Some(3), 0.1, 4);
    let heard = feed(&mut m, &records, 0.2, &mut rng);
    converge_to_union(&mut m, &heard);
}

/// A coordinator that says every node heard every record of the windows it announces:
/// each node it names as having heard a record it missed finds its own row forged once it
/// holds the announced root, and blames the coordinator. (The others cannot tell yet: a
/// relayed row is the coordinator's word until rows are signed.)
#[test]
fn a_coordinator_forging_a_nodes_row_is_blamed_by_that_node() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let records = truth(6, 180, 1, &mut rng);
    let mut m = coordinated(8, &[Serve::ForgeRows], Some(3), 0.0, 5);
    feed(&mut m, &records, 0.2, &mut rng);
    m.connect_all();
    m.announce_all();
    run(&mut m);
    let blamers: Vec<&str> = m
        .honest()
        .filter(|n| n.blamed().iter().any(|(p, why)| *p == 0 && *why == mesh::Blame::ForgedRow))
        .map(|n| n.name())
        .collect();
    assert!(blamers.len() >= 4, "honest nodes that caught n0 forging their rows: {blamers:?}");
    assert!(
        m.honest().all(|n| n.blamed().iter().all(|(p, why)| *p == 0 && *why == mesh::Blame::ForgedRow)),
        "nobody else is blamed, for nothing else"
    );
}
