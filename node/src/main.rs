//! `telemesh`: run a node, query it, ask its status.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand};
use telemesh_node::api::client::{self, OutputFormat};
use telemesh_node::api::mesh_cli;
use telemesh_node::config::File;
use telemesh_node::store::Store;
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::Dialect;
use tokio_util::sync::CancellationToken;

/// Exit code for a bad command line or configuration (BSD EX_USAGE).
const EX_USAGE: u8 = 64;

/// telemesh — a loss-resilient telemetry mesh node.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: UDP ingest, sled store, HTTP query API.
    Node(Box<NodeArgs>),
    /// Print the records of one device, in device order.
    Query(QueryArgs),
    /// List every device the mesh holds records of, with its counts and last-seen time.
    Devices {
        /// Only this dialect: iotstream, tinytelemetry or secure.
        #[arg(long)]
        dialect: Option<Dialect>,
        /// Only devices not heard here for this long (e.g. 10m, 1h; devices only other
        /// sites heard: no record by device time for that long).
        #[arg(long, value_name = "DURATION")]
        stale: Option<String>,
        /// table, or ndjson (one device per line); both list every device, page by page.
        #[arg(long, value_enum, default_value_t = client::ListFormat::Table)]
        format: client::ListFormat,
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Verify a stopped node's store: every sealed window's Merkle root and hash tree
    /// recompute from its blob, every live chunk decodes. Exit 1 on any problem.
    Check {
        /// Data directory of the node (which must not be running).
        #[arg(long, value_name = "DIR", default_value = "./telemesh-data")]
        data: PathBuf,
    },
    /// Check a records page written with proof (`GET …/records?proof=true`) offline: every
    /// record is in its window as shown, and every node in its heard_by and proved_by
    /// signed a statement saying so, as a member of the mesh. Exit 1 on anything unbacked.
    Verify {
        /// The page (JSON).
        file: PathBuf,
        /// The mesh owner's id (`12D3KooW…`, as `telemesh mesh members` shows it).
        /// [default: the owner of the roster in --data]
        #[arg(long, value_name = "ID")]
        owner: Option<String>,
        /// Data directory of a node of the mesh, whose roster names the owner.
        #[arg(long, value_name = "DIR", default_value = "./telemesh-data")]
        data: PathBuf,
    },
    /// Membership of a closed mesh: invite a node, list members, remove one.
    #[command(subcommand)]
    Mesh(MeshCommand),
    /// Certificates for the secure (DTLS) listener, signed by the node's built-in CA.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Print a node's status.
    Status {
        #[command(flatten)]
        api: client::ApiArgs,
    },
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Write a device certificate for CLIENT_ID: DIR/ca.pem, DIR/device.pem and
    /// DIR/device.key (an EC P-256 key), signed by the CA in <data>/secure/ (the node creates
    /// it on its first start). The certificate's subject CN is the client id.
    Device {
        /// The client id the device sends in every frame (0..=4294967295).
        client_id: u32,
        /// Where to write the three files (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Data directory of the node whose CA signs. [default: ./telemesh-data]
        #[arg(long, value_name = "DIR", default_value = "./telemesh-data")]
        data: PathBuf,
        /// Days the certificate is valid.
        #[arg(long, value_name = "N", default_value_t = telemesh_node::ingest::dtls::cert::DEVICE_DAYS,
              value_parser = clap::value_parser!(u32).range(1..=36_500))]
        days: u32,
    },
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// Print a join token for one new node (ask a node that holds the owner key). The new
    /// site starts with `telemesh node --join TOKEN`.
    Invite {
        #[command(flatten)]
        api: client::ApiArgs,
        /// How long the token admits a node, e.g. 30m, 2h (at most 7days). [default: 1h]
        #[arg(long, value_name = "DURATION")]
        expires: Option<String>,
    },
    /// List the members of the mesh, as the node's roster has them.
    Members {
        #[command(flatten)]
        api: client::ApiArgs,
    },
    /// Remove a member: every node disconnects it and refuses it from then on (ask a node
    /// that holds the owner key). Its records heard before stay.
    Remove {
        /// The member's peer id (`telemesh mesh members` lists them).
        peer_id: String,
        #[command(flatten)]
        api: client::ApiArgs,
    },
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// TOML config file; command-line options override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (the sled store and the node id). [default: ./telemesh-data]
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// IoTStream v1 UDP listener, or "off". [default: 0.0.0.0:5005]
    #[arg(long, value_name = "ADDR")]
    iotstream: Option<String>,
    /// TinyTelemetry v1 UDP listener, or "off". [default: 0.0.0.0:5000]
    #[arg(long, value_name = "ADDR")]
    tinytelemetry: Option<String>,
    /// Secure (secure telemetry README frames over DTLS 1.2, client certificates) UDP listener, or "off".
    /// [default: 0.0.0.0:5006]
    #[arg(long, value_name = "ADDR")]
    secure: Option<String>,
    /// The CA that signs device certificates (a real PKI; with --secure-cert and
    /// --secure-key). [default: the built-in CA in <data>/secure/]
    #[arg(long, value_name = "FILE", requires_all = ["secure_cert", "secure_key"])]
    secure_ca: Option<PathBuf>,
    /// The node's certificate for the secure listener (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["secure_ca", "secure_key"])]
    secure_cert: Option<PathBuf>,
    /// The node's private key for the secure listener (PEM, mode 0600).
    #[arg(long, value_name = "FILE", requires_all = ["secure_ca", "secure_cert"])]
    secure_key: Option<PathBuf>,
    /// HTTP API and /metrics. An address off loopback needs --http-token-file or
    /// --http-insecure. [default: 127.0.0.1:8080]
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// File holding the bearer token every HTTP request must carry (Authorization: Bearer
    /// TOKEN), on any address; one line, mode 0600.
    #[arg(long, value_name = "FILE")]
    http_token_file: Option<PathBuf>,
    /// Serve the HTTP API off loopback without a token: anyone who reaches it can use it.
    #[arg(long)]
    http_insecure: bool,
    /// Serve /metrics without the token (for a Prometheus that does not send it).
    #[arg(long)]
    metrics_open: bool,
    /// Close an HTTP connection that has not sent a complete request head this long after
    /// opening or after its last answer (also the keep-alive timeout). [default: 10s]
    #[arg(long, value_name = "DURATION")]
    http_header_timeout: Option<String>,
    /// Close an HTTP connection on which nothing moves this long mid-request. [default: 60s]
    #[arg(long, value_name = "DURATION")]
    http_idle_timeout: Option<String>,
    /// HTTP connections served at once; more wait to be accepted. [default: 256]
    #[arg(long, value_name = "N")]
    http_max_connections: Option<usize>,
    /// Unit of IoTStream's 32-bit timestamp: Unix milliseconds mod 2^32, or seconds. [default: ms]
    #[arg(long, value_name = "UNIT", value_parser = ["ms", "s"])]
    iotstream_timestamp: Option<String>,
    /// Records reach disk within this interval. [default: 500ms]
    #[arg(long, value_name = "DURATION")]
    flush_interval: Option<String>,
    /// Overlay address to listen on; repeat for several. Given, it replaces the defaults
    /// (/ip4/0.0.0.0/udp/4001/quic-v1 and /ip4/0.0.0.0/tcp/4001).
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<String>,
    /// A peer to join the mesh through, e.g. /ip4/10.0.0.1/udp/4001/quic-v1/p2p/12D3Koo…
    /// (a node prints its own at start); repeat for several.
    #[arg(long, value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// Tell peers to dial this address instead of the listen addresses (behind NAT, a port
    /// forward or a relay); repeat for several.
    #[arg(long, value_name = "MULTIADDR")]
    external_address: Vec<String>,
    /// The mesh to join: nodes of different meshes do not exchange data. [default: default]
    #[arg(long, value_name = "NAME")]
    mesh: Option<String>,
    /// Compare window summaries with one peer this often, beside gossip. [default: 10s]
    #[arg(long, value_name = "DURATION")]
    sync_interval: Option<String>,
    /// Members that announce each window to the mesh with every site's receipts (the others
    /// offer theirs to them only); 0: every node announces to every node. [default: 3]
    #[arg(long, value_name = "N", env = "TELEMESH_COORDINATORS")]
    coordinators: Option<usize>,
    /// Join a closed mesh with a token from `telemesh mesh invite` (run on a node that holds
    /// the owner key); no --bootstrap needed. Later starts may keep or drop it.
    #[arg(long, value_name = "TOKEN", env = "TELEMESH_JOIN", hide_env_values = true)]
    join: Option<String>,
    /// The mesh owner's key file, created if missing [default: <data>/owner.key]. Only the
    /// first node of a mesh needs it (it admits and removes members).
    #[arg(long, value_name = "FILE", conflicts_with = "join")]
    owner_key: Option<PathBuf>,
    /// An open mesh: any node that reaches the overlay port and names the same mesh may
    /// join and write every node's history. For trials on one machine only.
    #[arg(long, conflicts_with_all = ["join", "owner_key"])]
    open: bool,
    // Authenticated datagrams (issue 13).
    /// Per-device keys of the plain dialects: lines `dialect device hex-key` (mode 0600). A
    /// device with a key must append its authentication trailer (docs/protocol.md).
    #[arg(long, value_name = "FILE")]
    device_keys: Option<PathBuf>,
    /// Refuse IoTStream and TinyTelemetry datagrams of devices without a key (default: let
    /// them in unauthenticated). Needs --device-keys.
    #[arg(long)]
    require_auth: bool,
    /// New streams (device ids this node has never heard) one source address may start:
    /// RATE:BURST, e.g. 10:100 — 10 a second, 100 at once. Authenticated devices are
    /// exempt; refused datagrams are counted. [default: unlimited]
    #[arg(long, value_name = "RATE:BURST")]
    new_streams_per_source: Option<String>,
    /// New streams each dialect may start, from all sources together: RATE:BURST.
    /// [default: unlimited]
    #[arg(long, value_name = "RATE:BURST")]
    new_streams_per_dialect: Option<String>,
    /// Device ids this node holds nothing of that one mesh peer may make it repair:
    /// RATE:BURST. More are counted (`new_stream_deferred`) and found again by a later
    /// summary exchange. [default: 200:2000]
    #[arg(long, value_name = "RATE:BURST")]
    new_streams_per_peer: Option<String>,
}

#[derive(Debug, Args)]
struct QueryArgs {
    /// iotstream, tinytelemetry or secure.
    dialect: Dialect,
    /// Device (client) id; or several, and ranges of ids (the devices the node knows in
    /// each): 3001,3002 or 10-20.
    #[arg(value_parser = device_spec)]
    device: String,
    /// From this device time: RFC 3339 (2025-12-11T18:20:00Z) or Unix seconds.
    #[arg(long)]
    from: Option<String>,
    /// Up to this device time (inclusive).
    #[arg(long)]
    to: Option<String>,
    /// At most this many records. A table or JSON is one page of at most 100,000
    /// [default: 1000]; CSV and NDJSON page through every record in the range unless given.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    limit: Option<usize>,
    /// Only the latest N records (1..=100000), printed oldest first.
    #[arg(long, value_name = "N", conflicts_with = "limit", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=100_000))]
    last: Option<usize>,
    /// Keep printing records as they arrive — here, late, or repaired from other sites —
    /// until stopped (or --limit records): from --from if given, else from now. Prints a
    /// table, ndjson or cloudevents.
    #[arg(long, conflicts_with = "last")]
    follow: bool,
    #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
    format: OutputFormat,
    /// merged: every record any node heard (the same answer from every node once the
    /// mesh is quiet); local: only what this node received, with arrival times.
    #[arg(long, value_enum, default_value_t = client::ViewArg::Merged)]
    view: client::ViewArg,
    #[command(flatten)]
    api: client::ApiArgs,
}

fn main() -> ExitCode {
    // clap exits with 2 on a bad command line; telemesh's usage errors exit 64 (EX_USAGE),
    // as docs/operations.md says. `--help` and `--version` still print and exit 0.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
    };
    match cli.command {
        Command::Node(args) => node(*args),
        Command::Query(q) => {
            let query = client::Query {
                dialect: q.dialect,
                device: &q.device,
                from: q.from.as_deref(),
                to: q.to.as_deref(),
                limit: q.limit,
                format: q.format,
                view: q.view,
                page: telemesh_node::api::MAX_LIMIT,
                last: q.last,
                follow: q.follow,
            };
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = q.api.api().and_then(|api| client::query(&api, query, &mut out));
            print(written.and_then(|()| Ok(std::io::Write::flush(&mut out).map(|()| String::new())?)))
        }
        Command::Devices { dialect, stale, format, api } => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let written = api.api().and_then(|api| client::devices(&api, dialect, stale.as_deref(), format, &mut out));
            print(written.and_then(|()| Ok(std::io::Write::flush(&mut out).map(|()| String::new())?)))
        }
        Command::Status { api } => print(api.api().and_then(|api| client::status(&api))),
        Command::Mesh(MeshCommand::Invite { api, expires }) => {
            print(api.api().and_then(|api| mesh_cli::invite(&api, expires.as_deref())))
        }
        Command::Mesh(MeshCommand::Members { api }) => print(api.api().and_then(|api| mesh_cli::members(&api))),
        Command::Mesh(MeshCommand::Remove { peer_id, api }) => {
            print(api.api().and_then(|api| mesh_cli::remove(&api, &peer_id)))
        }
        Command::Check { data } => check(&data),
        Command::Verify { file, owner, data } => verify(&file, owner.as_deref(), &data),
        Command::Certs(CertsCommand::Device { client_id, out, data, days }) => {
            match telemesh_node::ingest::dtls::cert::write_device(&data, client_id, days, &out) {
                Ok(()) => {
                    let o = out.display();
                    println!("wrote {o}/ca.pem, {o}/device.pem and {o}/device.key for client id {client_id} ({days} days)");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e.into()),
            }
        }
    }
}

fn verify(file: &std::path::Path, owner: Option<&str>, data: &std::path::Path) -> ExitCode {
    use telemesh_node::trust::{roster, Owner, ROSTER_FILE};
    let owner = match owner {
        Some(id) => match id.parse().ok().as_ref().and_then(Owner::from_id) {
            Some(o) => o,
            None => return fail(anyhow::anyhow!("--owner {id:?} is not the id of an ed25519 key")),
        },
        None => {
            let path = data.join(ROSTER_FILE);
            match std::fs::read(&path).map_err(anyhow::Error::from).and_then(|b| Ok(roster::owner_named(&b)?)) {
                Ok(o) => o,
                Err(e) => {
                    return fail(e.context(format!("cannot read the mesh owner from {} (give --owner ID)", path.display())))
                }
            }
        }
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return fail(anyhow::anyhow!("cannot read {}: {e}", file.display())),
    };
    match telemesh_node::api::proof::verify_page(&text, &owner) {
        Ok((records, checked)) => {
            for p in &checked.problems {
                println!("problem: {p}");
            }
            for u in &checked.unbacked {
                println!("unbacked: record seq {} at {} ns: {} {} it, and signed nothing saying so", u.seq, u.device_time_ns, u.node, u.claim);
            }
            let bad = checked.problems.len() + checked.unbacked.len();
            println!(
                "{}: {records} records, {} heard_by/proved_by entries backed by signed statements of members of the mesh owned by {owner}: {}",
                file.display(),
                checked.backed,
                if bad == 0 { "ok".to_owned() } else { format!("{bad} problem(s)") }
            );
            if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e.into()),
    }
}

fn check(data: &std::path::Path) -> ExitCode {
    if !data.join("sled").exists() {
        eprintln!("telemesh: no store in {}", data.display());
        return ExitCode::FAILURE;
    }
    let store = match telemesh_node::store::SledStore::open(data, 64) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("telemesh: cannot open the store in {}: {e} (is a node running on it?)", data.display());
            return ExitCode::FAILURE;
        }
    };
    match store.check() {
        Ok(r) => {
            for p in &r.problems {
                println!("problem: {p}");
            }
            println!(
                "{}: {} sealed windows, {} live chunks, {} records: {}",
                data.display(),
                r.sealed_windows,
                r.chunks,
                r.records,
                if r.problems.is_empty() { "ok".to_owned() } else { format!("{} problem(s)", r.problems.len()) }
            );
            if r.problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => fail(e.into()),
    }
}

fn print(result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("telemesh: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn node(args: NodeArgs) -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    // 1. The whole configuration, validated, before any port is bound.
    let file = match &args.config {
        Some(path) => match File::load(path) {
            Ok(f) => f,
            Err(e) => return usage(e),
        },
        None => File::default(),
    };
    let flags = File {
        data_dir: args.data,
        iotstream: args.iotstream,
        tinytelemetry: args.tinytelemetry,
        secure: args.secure,
        secure_ca: args.secure_ca,
        secure_cert: args.secure_cert,
        secure_key: args.secure_key,
        http: args.http,
        http_token_file: args.http_token_file,
        // A flag can only turn these on; the config file may too.
        http_insecure: args.http_insecure.then_some(true),
        metrics_open: args.metrics_open.then_some(true),
        http_header_timeout: args.http_header_timeout,
        http_idle_timeout: args.http_idle_timeout,
        http_max_connections: args.http_max_connections,
        iotstream_timestamp: args.iotstream_timestamp.map(|u| if u == "s" { TimestampUnit::S } else { TimestampUnit::Ms }),
        flush_interval: args.flush_interval,
        listen: (!args.listen.is_empty()).then_some(args.listen),
        bootstrap: (!args.bootstrap.is_empty()).then_some(args.bootstrap),
        external_addresses: (!args.external_address.is_empty()).then_some(args.external_address),
        mesh: args.mesh,
        sync_interval: args.sync_interval,
        coordinators: args.coordinators,
        open: args.open.then_some(true),
        join: args.join,
        owner_key: args.owner_key,
        device_keys: args.device_keys,
        require_auth: args.require_auth.then_some(true),
        new_streams_per_source: args.new_streams_per_source,
        new_streams_per_dialect: args.new_streams_per_dialect,
        new_streams_per_peer: args.new_streams_per_peer,
        ..File::default()
    };
    let config_path = args.config.clone();
    let mut config = match file.overlay(flags).resolve() {
        Ok(c) => c,
        Err(e) => {
            // A value from the config file: say where it is (unless the flag overrode it).
            let flag = |field: &str| format!("--{}", field.replace('_', "-"));
            let place = match (&e, &config_path) {
                (telemesh_node::config::ConfigError::Invalid { field, .. }, Some(path))
                    if !std::env::args().any(|a| a == flag(field) || a.starts_with(&format!("{}=", flag(field)))) =>
                {
                    File::line_of(path, field).map(|line| format!(" (config file {} line {line})", path.display()))
                }
                _ => None,
            };
            return usage(format!("{e}{}", place.unwrap_or_default()));
        }
    };
    open_files(&mut config);

    // 2. Store and sockets: failures here are the environment's (exit 1).
    let store: Arc<dyn Store> = match telemesh_node::open_store(&config) {
        Ok(s) => Arc::new(s),
        Err(e) => return fail(e),
    };
    // The secure listener's certificates: the built-in CA made on the first start, or the
    // real PKI's files, read and checked before any port is bound.
    if config.secure.is_some() {
        if let Err(e) = telemesh_node::secure_credentials(&config) {
            return fail(e);
        }
    }
    let sockets = match telemesh_node::bind(&config) {
        Ok(s) => s,
        Err(e) => return fail(e.into()),
    };
    // Membership: a node that cannot join a mesh as configured stops here, before it
    // starts (a configuration at fault is exit 64; the first node of a mesh creates it here).
    match telemesh_node::membership(&config, telemesh_node::trust::Metrics::default()) {
        Ok(_) => {}
        Err(e) if e.is_usage() => return usage(e),
        Err(e) => return fail(e.into()),
    }

    // 3. Run until SIGINT/SIGTERM, then drain.
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => return fail(e.into()),
    };
    let shutdown = CancellationToken::new();
    runtime.spawn(wait_for_signal(shutdown.clone()));
    match runtime.block_on(telemesh_node::run(config, sockets, store, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

/// File descriptors kept for everything but HTTP connections: the store (sled's files,
/// the write-ahead log, sealed segments), the overlay's sockets and connections (at most
/// 64 members and 16 unproven), the UDP listeners and the secure listener.
const FDS_RESERVED: u64 = 512;

/// Raises the soft limit on open files to the hard one (a common soft limit is 1,024), and
/// keeps the HTTP connection cap below what is left after [`FDS_RESERVED`]: clients that
/// hold connections open must never take the descriptors the store needs to make records
/// durable (`docs/operations.md`, "Open files").
fn open_files(config: &mut telemesh_node::Config) {
    let soft = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(soft) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open files limit");
            return;
        }
    };
    tracing::debug!(limit = soft, "open files");
    let room = usize::try_from(soft.saturating_sub(FDS_RESERVED)).unwrap_or(usize::MAX).max(16);
    let cap = &mut config.http_limits.max_connections;
    if *cap > room {
        tracing::warn!(
            limit = soft,
            http_max_connections = room,
            "the open files limit leaves room for {room} HTTP connections, not {cap}: capped (raise it with `ulimit -n`)"
        );
        *cap = room;
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                shutdown.cancel();
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// `telemesh query`'s DEVICE: ids and ranges of ids, comma-separated.
fn device_spec(s: &str) -> Result<String, String> {
    let id = |x: &str| x.parse::<u32>().map_err(|_| format!("{x:?} is not a device id"));
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) if id(a)? <= id(b)? => {}
            Some(_) => return Err(format!("{part:?}: the range is empty")),
            None => drop(id(part)?),
        }
    }
    Ok(s.to_owned())
}

fn usage(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("telemesh: {e}");
    ExitCode::from(EX_USAGE)
}

fn fail(e: anyhow::Error) -> ExitCode {
    eprintln!("telemesh: {e:#}");
    ExitCode::FAILURE
}
