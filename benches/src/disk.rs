//! `telemesh-bench disk`: bytes on disk per reading for the IoTStream v1 Mini-RFC's
//! workload, against the raw datagram bytes and against the source documents' CSV log.
//!
//! The workload: `--devices` IoTStream sensors (default 1,000) reporting every second for
//! `--hours` (default 1) — INIT, then DATA (five readings) 80 % / HEARTBEAT 20 %, as
//! `telemesh-sensor` generates them (deterministic with `--seed`). The datagrams go
//! through the node's ingest path in this process (no sockets: the network is not what is
//! measured), with a flush every 500 ms of device time, as the node does. At the end every
//! window is sealed, the store is closed, and its directory is measured.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use telemesh_node::api::export;
use telemesh_node::ingest::Listener;
use telemesh_node::shared::Shared;
use telemesh_node::store::{SledStore, Store};
use telemesh_node::ingest::streams::Table;
use telemesh_proto::record::StreamId;
use telemesh_proto::wire::Dialect;
use telemesh_tools::sensor;

/// Options of the disk benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Simulated devices.
    #[arg(long, default_value_t = 1000)]
    pub devices: u16,
    /// Hours of device time at one report per second.
    #[arg(long, default_value_t = 1.0)]
    pub hours: f64,
    /// Seed of the simulated readings.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Flush interval, in device time (the node's default is 500 ms).
    #[arg(long, default_value_t = 500)]
    pub flush_ms: u64,
}

/// Bytes of every file under `path`.
pub fn dir_size(path: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() { dir_size(&entry.path())? } else { meta.len() };
    }
    Ok(total)
}

/// Runs the benchmark and prints a markdown table.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let origin_ms = 1_765_477_200_000u64;
    let config = sensor::Config {
        dialect: Dialect::Iotstream,
        devices: (1..=opts.devices).collect(),
        interval: Duration::from_secs(1),
        duration: Some(Duration::from_secs_f64(opts.hours * 3600.0)),
        seed: Some(opts.seed),
        start_time_ms: Some(origin_ms),
        dry_run: true,
        ..sensor::Config::default()
    };
    let sim = sensor::Simulator::new(config).context("simulator")?;

    let store: Arc<dyn Store> = Arc::new(SledStore::open(dir.path(), 32)?);
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        table: Mutex::new(Table::new(usize::from(opts.devices) * 2 + 16)),
        metrics: Default::default(),
        reorder: Default::default(),
        iotstream_timestamp: Default::default(),
        sealed: Default::default(),
    });
    let mut listener = Listener::new(Dialect::Iotstream, Arc::clone(&shared));
    let (mut packets, mut readings, mut datagram_bytes) = (0u64, 0u64, 0u64);
    let every = Duration::from_millis(opts.flush_ms.max(1));
    let mut next_flush = every;
    for p in sim {
        if p.due >= next_flush {
            telemesh_node::flush(&shared)?;
            next_flush += every;
        }
        // Arrives 5 ms after it was stamped, by the collector's clock.
        let arrival_ns = (origin_ms + p.due.as_millis() as u64 + 5) * 1_000_000;
        listener.handle(&p.datagram, arrival_ns);
        packets += 1;
        readings += p.readings.len() as u64;
        datagram_bytes += p.datagram.len() as u64;
        if packets % 500_000 == 0 {
            eprintln!("  {packets} datagrams in {:.1}s", started.elapsed().as_secs_f64());
        }
    }
    // The streams go quiet: flushed, evicted, every window sealed.
    shared.table().evict_idle(u64::MAX);
    telemesh_node::flush(&shared)?;

    // The source documents' CSV log of the same records (their columns, plus readings).
    let mut csv_bytes = 0u64;
    let mut stored = 0u64;
    let node_id = store.node_id().to_owned();
    for device in 1..=opts.devices {
        let id = StreamId::new(Dialect::Iotstream, u32::from(device));
        let recs = telemesh_node::store::history::records(store.as_ref(), &[], id, 0, u64::MAX, usize::MAX)?;
        stored += recs.len() as u64;
        let csv = export::csv(&export::views(&recs, None, &node_id, export::View::Merged), None);
        // One header line for the whole log.
        let header = if device == 1 { 0 } else { csv.find('\n').map_or(0, |n| n + 1) };
        csv_bytes += (csv.len() - header) as u64;
    }
    anyhow::ensure!(stored == packets, "stored {stored} of {packets} records");
    drop(listener);
    drop(shared);
    drop(store);
    let reopened = SledStore::open(dir.path(), 32)?;
    for (tree, bytes) in reopened.sizes()? {
        // (segment files are counted in the directory total below)
        eprintln!("  {tree}: {bytes} bytes ({:.2} per reading)", bytes as f64 / readings as f64);
    }
    drop(reopened);
    let on_disk = dir_size(dir.path())?;

    let per = |b: u64| b as f64 / readings as f64;
    eprintln!("disk: {packets} datagrams, {readings} readings in {:.1}s", started.elapsed().as_secs_f64());
    println!("| {} devices × {} h at 1 s, {packets} datagrams, {readings} readings | bytes | bytes per reading |", opts.devices, opts.hours);
    println!("|---|---:|---:|");
    println!("| telemesh store on disk (sled, sealed windows) | {on_disk} | **{:.2}** |", per(on_disk));
    println!("| raw datagrams | {datagram_bytes} | {:.2} |", per(datagram_bytes));
    println!("| source documents' CSV log (+ readings) | {csv_bytes} | {:.2} |", per(csv_bytes));
    Ok(())
}
