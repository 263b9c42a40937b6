//! CPU cost of the node's per-datagram path, without sockets: decode, classify, queue,
//! and the periodic flush to sled (amortised), for 1,000 interleaved IoTStream devices.
//!
//! ```sh
//! cargo bench -p telemesh-benches --bench ingest_path -- --warm-up-time 1 --measurement-time 5
//! ```
//!
//! One iteration handles one datagram; every 75,000 datagrams (500 ms at 150,000/s, the
//! default flush interval at the ingest goal) the table is flushed and sled synced, as the
//! node's maintenance task does.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemesh_node::ingest::Listener;
use telemesh_node::shared::{now_ns, Shared};
use telemesh_node::store::{SledStore, Store};
use telemesh_node::ingest::streams::Table;
use telemesh_proto::wire::iotstream::{MsgType, Repr};
use telemesh_proto::wire::Dialect;

const DEVICES: u16 = 1000;
const FLUSH_EVERY: u64 = 75_000;

/// The `i`-th datagram: devices round-robin, each device's seq and millisecond timestamp
/// advancing by one per packet, so every datagram is a new record.
fn datagram(i: u64, base_ms: u64) -> Vec<u8> {
    let device = (i % u64::from(DEVICES)) as u16;
    let seq = i / u64::from(DEVICES) + 1;
    let ts = ((base_ms + seq) % (1 << 32)) as u32;
    let v = (i % 1000) as f32 / 10.0;
    Repr::new(MsgType::Data, 1000 + device, seq as u16, ts, &[v, v + 1.0, v + 2.0, v + 3.0, v + 4.0])
        .expect("valid")
        .to_bytes()
}

fn handle(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 32).expect("store"));
    let shared = Arc::new(Shared {
        store,
        table: Mutex::new(Table::new(20_000)),
        metrics: Default::default(),
        reorder: Default::default(),
        iotstream_timestamp: Default::default(),
        sealed: Default::default(),
    });
    let mut listener = Listener::new(Dialect::Iotstream, Arc::clone(&shared));
    let base_ms = now_ns() / 1_000_000;
    let mut next = 0u64;
    let mut group = c.benchmark_group("ingest_path");
    group.throughput(Throughput::Elements(1));
    group.bench_function("iotstream_1000_devices", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let d = datagram(next, base_ms);
                let start = Instant::now();
                listener.handle(&d, now_ns());
                next += 1;
                if next.is_multiple_of(FLUSH_EVERY) {
                    telemesh_node::flush(&shared).expect("flush");
                }
                spent += start.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, handle);
criterion_main!(benches);
