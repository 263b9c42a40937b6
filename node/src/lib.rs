//! The telemesh node: a thin shell around `telemesh_proto`.
//!
//! [`bind`] takes a validated [`Config`] and binds every socket; [`run`] takes the bound
//! sockets and a shutdown token, so tests bind `127.0.0.1:0` and run many nodes in one
//! process ([`Node::start`] does both on a thread of its own).

pub mod api;
pub mod config;
pub mod ingest;
pub mod mesh;
pub mod metrics;
pub mod shared;
pub mod store;
pub mod trust;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use telemesh_proto::wire::Dialect;
use tokio_util::sync::CancellationToken;

pub use config::Config;

use crate::ingest::Listener;
use crate::shared::{now_ns, Shared};
use crate::store::{SledStore, Store};
use crate::ingest::streams::{self, Table};
use crate::mesh::overlay;
use crate::trust::identity;

/// The sockets a node serves on, bound before it starts.
#[derive(Debug)]
pub struct Sockets {
    pub iotstream: Option<UdpSocket>,
    pub tinytelemetry: Option<UdpSocket>,
    pub secure: Option<UdpSocket>,
    pub http: TcpListener,
}

/// A socket that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot bind {what} on {addr}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

fn bind_udp(what: &'static str, addr: SocketAddr, recv_buffer: usize) -> Result<UdpSocket, BindError> {
    use socket2::{Domain, Protocol, Socket, Type};
    let err = |source| BindError { what, addr, source };
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
    // A bigger kernel buffer rides out bursts; the kernel may grant less (net.core.rmem_max).
    if let Err(e) = socket.set_recv_buffer_size(recv_buffer) {
        tracing::warn!(%addr, error = %e, "cannot enlarge receive buffer");
    }
    socket.bind(&addr.into()).map_err(err)?;
    Ok(socket.into())
}

/// Binds every configured socket.
pub fn bind(config: &Config) -> Result<Sockets, BindError> {
    Ok(Sockets {
        iotstream: config.iotstream.map(|a| bind_udp("iotstream (udp)", a, config.recv_buffer)).transpose()?,
        tinytelemetry: config.tinytelemetry.map(|a| bind_udp("tinytelemetry (udp)", a, config.recv_buffer)).transpose()?,
        secure: config.secure.map(|a| bind_udp("secure (udp, dtls)", a, config.recv_buffer)).transpose()?,
        http: TcpListener::bind(config.http).map_err(|source| BindError { what: "http (tcp)", addr: config.http, source })?,
    })
}

/// Opens the store in `config.data_dir`, creating the directory and the node's identity
/// (`identity::load_or_create`) if needed; the store names this node by its peer id.
pub fn open_store(config: &Config) -> anyhow::Result<SledStore> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    trust::mark_open_if_legacy(&config.data_dir);
    let key = identity::load_or_create(&config.data_dir)?;
    let name = key.public().to_peer_id().to_string();
    SledStore::open_as(&config.data_dir, config.cache_mb, Some(&name))
        .with_context(|| format!("cannot open the store in {}", config.data_dir.display()))
}

/// How this node takes part in the mesh, from `config` and its data directory (after
/// [`open_store`], which creates the node key). `run` does this itself; a binary calls it
/// first to refuse a configuration that cannot join a mesh before binding any port.
pub fn membership(config: &Config, metrics: trust::Metrics) -> Result<trust::Membership, trust::TrustError> {
    let keypair = identity::load_or_create(&config.data_dir)?;
    let setup = trust::Setup {
        open: config.open,
        join: config.join.clone(),
        owner_key: config.owner_key.clone(),
        bootstrap: config.bootstrap.clone(),
    };
    trust::Membership::load(&config.data_dir, &config.mesh, keypair.public().to_peer_id(), setup, metrics)
}

/// The secure listener's certificates: the real PKI's files if configured, else the
/// built-in CA and node certificate of `<data_dir>/secure/`, created on the first start.
pub fn secure_credentials(config: &Config) -> anyhow::Result<ingest::dtls::Credentials> {
    use ingest::dtls::cert;
    match &config.secure_pki {
        Some(p) => cert::load(&p.ca, &p.cert, &p.key).context("cannot load the secure listener's certificates"),
        None => cert::load_or_create(&config.data_dir).context("cannot create the secure listener's certificates"),
    }
}

/// The mesh settings of `config`.
fn mesh_config(config: &Config) -> mesh::Config {
    mesh::Config {
        overlay: overlay::Config {
            listen: config.listen.clone(),
            // A joining node reaches the mesh through the nodes its token names.
            bootstrap: config
                .bootstrap
                .iter()
                .chain(config.join.iter().flat_map(|t| t.bootstrap.iter()))
                .cloned()
                .collect(),
            external: config.external_addresses.clone(),
            mesh: config.mesh.clone(),
            max_response_bytes: telemesh_proto::mesh::message::MAX_MESSAGE,
            // Twice what the reconciler sends one peer at once, so summary exchange and
            // repair fit side by side.
            max_inbound_per_peer: 2 * telemesh_proto::mesh::Config::default().max_requests_per_peer,
            ..overlay::Config::default()
        },
        reconcile: telemesh_proto::mesh::Config {
            sync_interval_ns: u64::try_from(config.sync_interval.as_nanos()).unwrap_or(u64::MAX),
            new_streams_per_peer: config.new_streams_per_peer,
            ..telemesh_proto::mesh::Config::default()
        },
        coordinators: config.coordinators,
    }
}

/// Runs a node on bound sockets until `shutdown` is cancelled, then drains: listeners
/// stop, pending records and stream states are written, the store is flushed.
pub async fn run(config: Config, sockets: Sockets, store: Arc<dyn Store>, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = metrics::Metrics::new();
    for (dialect, socket) in [
        (Dialect::Iotstream, &sockets.iotstream),
        (Dialect::Tinytelemetry, &sockets.tinytelemetry),
        (Dialect::Secure, &sockets.secure),
    ] {
        if let Some(socket) = socket {
            metrics.udp.watch(dialect.name(), socket);
        }
    }
    let shared = Arc::new(Shared {
        store: Arc::clone(&store),
        table: Mutex::new(Table::new(config.max_streams)),
        metrics,
        reorder: config.reorder,
        iotstream_timestamp: config.iotstream_timestamp,
        sealed: Arc::default(),
    });
    let listeners = api::Listeners {
        iotstream: sockets.iotstream.as_ref().and_then(|s| s.local_addr().ok()),
        tinytelemetry: sockets.tinytelemetry.as_ref().and_then(|s| s.local_addr().ok()),
        secure: sockets.secure.as_ref().and_then(|s| s.local_addr().ok()),
        http: sockets.http.local_addr()?,
    };
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_owned(), |a| format!("udp {a}"));
    tracing::info!(
        node_id = store.node_id(),
        version = env!("CARGO_PKG_VERSION"),
        iotstream = %show(listeners.iotstream),
        tinytelemetry = %show(listeners.tinytelemetry),
        secure = %show(listeners.secure),
        http = %listeners.http,
        data = %config.data_dir.display(),
        "telemesh node listening"
    );
    if !config.device_keys.is_empty() || config.require_auth {
        // How many keys, never which.
        tracing::info!(devices = config.device_keys.len(), require_auth = config.require_auth, "device keys loaded");
    }
    if config.http_token.is_none() && !listeners.http.ip().to_canonical().is_loopback() {
        tracing::warn!(
            http = %listeners.http,
            "the HTTP API is served off loopback without a token (--http-insecure): anyone who reaches it can use it"
        );
    }

    let mut threads = Vec::new();
    let mut saved_counters = ingest::counters::load(&config.data_dir);
    for (dialect, socket) in
        [(Dialect::Iotstream, sockets.iotstream), (Dialect::Tinytelemetry, sockets.tinytelemetry)]
    {
        let Some(socket) = socket else { continue };
        let mut verifier = telemesh_proto::auth::Verifier::new(dialect, &config.device_keys, config.require_auth);
        for (device, highest, fingerprint) in saved_counters.remove(&dialect).unwrap_or_default() {
            verifier.resume(device, highest, fingerprint);
        }
        let listener = Listener::new(dialect, Arc::clone(&shared)).with_auth(verifier).with_admission(config.new_streams);
        let token = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name(format!("ingest-{dialect}"))
                .spawn(move || (dialect, listener.run(socket, token)))
                .context("cannot start an ingest thread")?,
        );
    }

    if let Some(socket) = sockets.secure {
        let credentials = secure_credentials(&config)?;
        let listener = ingest::dtls::Secure::new(&credentials, config.secure_limits, Arc::clone(&shared))?;
        let token = shutdown.clone();
        threads.push(
            std::thread::Builder::new()
                .name("ingest-secure".to_owned())
                // The secure dialect authenticates in DTLS: no trailer verifier to save.
                .spawn(move || {
                    listener.run(socket, token);
                    (Dialect::Secure, None)
                })
                .context("cannot start the secure ingest thread")?,
        );
    }

    let maintenance = tokio::spawn(maintain(Arc::clone(&shared), config.flush_interval, config.stream_idle, shutdown.clone()));

    let keypair = identity::load_or_create(&config.data_dir)?;
    let membership = Arc::new(membership(&config, shared.metrics.trust.clone())?);
    let mesh_status = Arc::new(Mutex::new(mesh::Status::default()));
    let mesh_config = mesh_config(&config);
    let coordinators = mesh_config.coordinators;
    let (mesh, overlay) = mesh::start(
        mesh_config,
        keypair,
        Arc::clone(&shared),
        Arc::clone(&mesh_status),
        Arc::clone(&membership),
        shutdown.clone(),
    )
    .context("cannot start the overlay")?;

    sockets.http.set_nonblocking(true)?;
    let http = tokio::net::TcpListener::from_std(sockets.http)?;
    let app = api::App {
        shared: Arc::clone(&shared),
        started: Instant::now(),
        listeners,
        data_dir: config.data_dir.display().to_string(),
        mesh: mesh_status,
        membership,
        fetcher: Some(api::proof::Fetcher { client: overlay, coordinators }),
        policy: api::auth::Policy { token: config.http_token.clone(), metrics_open: config.metrics_open },
        followers: Arc::new(tokio::sync::Semaphore::new(api::follow::MAX_FOLLOWERS)),
    };
    api::server::serve(http, api::router(app), config.http_limits, shutdown.clone()).await;

    // Drain: listeners stop first, then everything pending goes to disk.
    shutdown.cancel();
    let joined = tokio::task::spawn_blocking(move || {
        threads.into_iter().filter_map(|t| t.join().ok()).collect::<Vec<_>>()
    });
    let verifiers = joined.await.unwrap_or_default();
    let keyed: Vec<_> = verifiers.iter().filter_map(|(d, v)| Some((*d, v.as_ref()?))).collect();
    if !keyed.is_empty() {
        // The replay windows' highest counters, so a clean restart does not reopen them.
        if let Err(e) = ingest::counters::save(&config.data_dir, &keyed) {
            tracing::warn!(error = %e, "cannot save the replay counters");
        }
    }
    let _ = maintenance.await;
    let _ = mesh.await;
    final_flush(&shared).context("final flush failed")?;
    tracing::info!("telemesh node stopped");
    Ok(())
}

/// Writes pending records and changed states, seals the windows of evicted streams, then
/// makes it all durable. The writes run without the table lock where they can, so ingest
/// does not stall behind the disk.
pub fn flush(shared: &Shared) -> Result<streams::Flushed, store::StoreError> {
    let store = shared.store.as_ref();
    let job = {
        let mut table = shared.table();
        // Read by the API and the metrics without waiting for the table.
        shared.metrics.streams_in_memory.set(table.len() as i64);
        shared.metrics.pending_records.set(table.unflushed() as i64);
        shared.metrics.wal_records.set(table.live() as i64);
        table.begin_flush()
    };
    let written = job.write(store);
    let (mut done, seal) = shared.table().finish_flush(job, written)?;
    let sealed = seal.run(store);
    let sealed = shared.table().finish_seal(seal, sealed);
    // Streams that left memory: their records go straight into their windows.
    let evicted = shared.table().take_evicted();
    let started = std::time::Instant::now();
    let evicted_sealed = evicted.run(store);
    if evicted.streams() > 0 {
        let (streams, windows, took) = (evicted.streams(), evicted.windows(), started.elapsed());
        tracing::debug!(streams, windows, ?took, "sealed streams that left memory");
    }
    done.sealed += evicted.windows();
    let evicted_sealed = shared.table().finish_evicted(evicted, evicted_sealed);
    // What was written is synced even if a seal failed (it is retried with the next flush).
    store.flush()?;
    // Only now may the log drop what the seals took: they are durable.
    let oldest = shared.table().oldest_needed_wal();
    store.release_wal(oldest)?;
    sealed?;
    evicted_sealed?;
    Ok(done)
}

/// At shutdown: everything pending and every changed state, written and synced.
fn final_flush(shared: &Shared) -> Result<(), store::StoreError> {
    let store = shared.store.as_ref();
    shared.table().flush(store)?;
    flush(shared)?;
    Ok(())
}

/// A stream quiet this long has its open window sealed, so the mesh sees it.
pub const QUIET_NS: u64 = 5_000_000_000;

/// Every flush interval: write and sync what is pending, evict idle streams; count the
/// devices heard and those silent for longer than `idle`.
async fn maintain(shared: Arc<Shared>, every: Duration, idle: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let s = Arc::clone(&shared);
    // The devices heard before this start, from the stored states, read beside the first
    // flushes rather than before them.
    let mut seed = Some(tokio::task::spawn_blocking(move || {
        let mut heard = ingest::heard::Heard::default();
        match s.store.states() {
            Ok(states) => states.iter().for_each(|(id, state)| heard.note(*id, state.last_arrival_ns)),
            Err(e) => tracing::warn!(error = %e, "cannot read the stream states: devices heard before are not counted"),
        }
        heard
    }));
    let heard = Arc::new(Mutex::new(ingest::heard::Heard::default()));
    let mut since = 0;
    let compact_every = (COMPACT_EVERY.as_nanos() / every.as_nanos().max(1)).max(1);
    let mut ticks: u128 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Some(task) = seed.take_if(|t| t.is_finished()) {
            if let Ok(before) = task.await {
                heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner).absorb(before);
            }
        }
        let s = Arc::clone(&shared);
        let heard = Arc::clone(&heard);
        let from = since;
        ticks += 1;
        let compact = ticks.is_multiple_of(compact_every);
        let result = tokio::task::spawn_blocking(move || {
            let now = now_ns();
            let cutoff = now.saturating_sub(u64::try_from(idle.as_nanos()).unwrap_or(u64::MAX));
            // Streams heard lately, before idle ones leave memory.
            let recent = s.table().heard_since(from);
            let mut h = heard.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            recent.into_iter().for_each(|(id, t)| h.note(id, t));
            for (dialect, all, stale) in h.count(cutoff) {
                s.metrics.set_devices(dialect, all, stale);
            }
            drop(h);
            let started = Instant::now();
            let result = maintain_once(&s, cutoff);
            s.metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
            if result.is_err() {
                s.metrics.flush_failures.inc();
            }
            if compact {
                compact_store(&s);
            }
            release_freed_memory();
            (now, result)
        })
        .await;
        let Ok((now, result)) = result else { continue };
        // An arrival timed just before `now` may reach the table after the scan: look again.
        since = now.saturating_sub(HEARD_MARGIN_NS);
        if let Err(e) = result {
            tracing::error!(error = %e, "flush failed; pending records stay in memory");
        }
    }
}

/// Hands back to the system the pages a flush freed. glibc keeps freed memory in the arena
/// of the thread that allocated it (one per thread, up to eight per core) and returns only
/// the top of each: what a flush's records and seals leave free stays resident until that
/// arena happens to need it again.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn release_freed_memory() {
    // SAFETY: `malloc_trim` takes no pointer and only walks the allocator's free lists,
    // under each arena's own lock.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory() {}

/// How often [`maintain`] reclaims the store's dead space, after that tick's flush.
const COMPACT_EVERY: Duration = Duration::from_secs(60);

/// Reclaims the store's dead space ([`store::Store::compact`]); a failure is logged and
/// tried again next time.
fn compact_store(s: &Shared) {
    let started = Instant::now();
    match s.store.compact() {
        Ok(done) if done.segments > 0 => {
            let (segments, moved, reclaimed, took) = (done.segments, done.moved, done.reclaimed, started.elapsed());
            tracing::info!(segments, moved, reclaimed, ?took, "reclaimed segment files of dead sealed values");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot reclaim the store's dead space; trying again later"),
    }
}

/// How far back each tick looks again for streams heard ([`maintain`]).
const HEARD_MARGIN_NS: u64 = 5_000_000_000;

/// One tick of [`maintain`]: idle streams leave memory, quiet ones get their window
/// sealed, and what is pending is written and synced.
fn maintain_once(s: &Shared, cutoff: u64) -> Result<(), store::StoreError> {
    let evicted = s.table().evict_idle(cutoff);
    // A stream quiet for a while gets its last window sealed (and announced).
    s.table().close_quiet(now_ns().saturating_sub(QUIET_NS));
    let done = flush(s)?;
    tracing::trace!(?done, "flushed");
    if done.sealed > 0 {
        s.sealed.notify_one();
    }
    if evicted > 0 {
        tracing::debug!(evicted, "idle streams left memory");
    }
    Ok(())
}

/// A node running on a thread of its own, for tests and benchmarks.
#[derive(Debug)]
pub struct Node {
    pub iotstream: Option<SocketAddr>,
    pub tinytelemetry: Option<SocketAddr>,
    pub secure: Option<SocketAddr>,
    pub http: SocketAddr,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    /// Binds, opens the store and runs `config` until [`Node::stop`] (or drop).
    pub fn start(config: Config) -> anyhow::Result<Node> {
        config.validate()?;
        let sockets = bind(&config)?;
        let store: Arc<dyn Store> = Arc::new(open_store(&config)?);
        if config.secure.is_some() {
            // Created (or checked) before `start` returns, so callers find the files.
            secure_credentials(&config)?;
        }
        let iotstream = sockets.iotstream.as_ref().map(UdpSocket::local_addr).transpose()?;
        let tinytelemetry = sockets.tinytelemetry.as_ref().map(UdpSocket::local_addr).transpose()?;
        let secure = sockets.secure.as_ref().map(UdpSocket::local_addr).transpose()?;
        let http = sockets.http.local_addr()?;
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let thread = std::thread::Builder::new().name("telemesh-node".into()).spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            rt.block_on(run(config, sockets, store, token))
        })?;
        Ok(Node { iotstream, tinytelemetry, secure, http, shutdown, thread: Some(thread) })
    }

    /// The base URL of the HTTP API.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// Stops the node and waits for it to drain.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown_and_join()
    }

    fn shutdown_and_join(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| anyhow::anyhow!("node thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.shutdown_and_join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::broken::Broken;

    /// A flush that cannot sync the store (a full disk) leaves the log alone: what its seals
    /// took from the log is durable nowhere else yet.
    #[test]
    fn the_log_is_released_only_after_the_store_is_synced() {
        let store = Arc::new(Broken::default());
        let shared = Shared {
            store: Arc::clone(&store) as Arc<dyn Store>,
            table: Mutex::new(Table::new(16)),
            metrics: metrics::Metrics::new(),
            reorder: telemesh_proto::stream::Config::default(),
            iotstream_timestamp: telemesh_proto::record::TimestampUnit::Ms,
            sealed: Arc::default(),
        };
        assert!(flush(&shared).is_err());
        assert_eq!(store.calls(), ["flush"], "the sync failed, so nothing may be released");
    }
}
