//! Node configuration: defaults, the TOML file, command-line overrides, validation.
//!
//! Everything is parsed and validated before any port is bound, so a bad setting ends
//! the process with one clear line and exit code 64, never half a node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::Multiaddr;
use serde::Deserialize;
use telemesh_proto::auth;
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::stream;

use crate::api::auth::Token;
use crate::api::server::Limits;

/// A complete, validated node configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where the sled store and the node id live.
    pub data_dir: PathBuf,
    /// IoTStream v1 listener; `None` = off.
    pub iotstream: Option<SocketAddr>,
    /// TinyTelemetry v1 listener; `None` = off.
    pub tinytelemetry: Option<SocketAddr>,
    /// Secure (the secure telemetry collection README's frame over DTLS) listener; `None` = off.
    pub secure: Option<SocketAddr>,
    /// A real PKI for the secure listener (all three or none): the CA that signs device
    /// certificates, and the node's certificate and key. `None`: the built-in CA of
    /// `<data_dir>/secure/`, created on the first start.
    pub secure_pki: Option<SecurePki>,
    /// The secure listener's bounds (handshakes in progress, sessions, timeouts); not in the
    /// config file yet: the defaults are documented in `docs/security.md`.
    pub secure_limits: crate::ingest::dtls::Limits,
    /// HTTP query API and `/metrics`.
    pub http: SocketAddr,
    /// The bearer token every HTTP request must carry (read from `http_token_file`);
    /// `None`: no authentication, which off loopback needs `http_insecure`.
    pub http_token: Option<Token>,
    /// Serve the HTTP API off loopback without a token (an explicit choice).
    pub http_insecure: bool,
    /// `/metrics` answers without the token.
    pub metrics_open: bool,
    /// The HTTP server's timeouts and connection cap.
    pub http_limits: Limits,
    /// How the IoTStream listener reads the 32-bit timestamp.
    pub iotstream_timestamp: TimestampUnit,
    /// Records reach disk within this interval (and on SIGINT/SIGTERM).
    pub flush_interval: Duration,
    /// Reorder window: packets and time (the TinyTelemetry v1 design document's: 10 / 2 s).
    pub reorder: stream::Config,
    /// Per-stream states kept in memory; the least recently active beyond this are
    /// written to the store and dropped from memory.
    pub max_streams: usize,
    /// A stream silent this long leaves memory (its state stays in the store).
    pub stream_idle: Duration,
    /// sled page cache, in MiB.
    pub cache_mb: u64,
    /// Kernel receive buffer requested for each UDP listener, in bytes.
    pub recv_buffer: usize,
    /// Overlay listen addresses (QUIC and TCP on port 4001 by default).
    pub listen: Vec<Multiaddr>,
    /// Peers to join the mesh through, each ending in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses peers are told to dial instead of the listen addresses (behind NAT, a port
    /// forward or a relay); empty = advertise the listen addresses.
    pub external_addresses: Vec<Multiaddr>,
    /// The mesh's name: nodes of different meshes do not exchange anything.
    pub mesh: String,
    /// Summary exchange with one peer this often (anti-entropy, beside gossip).
    pub sync_interval: Duration,
    /// Members that coordinate each window's announcements in a closed mesh
    /// (`docs/protocol.md`, "Coordinators"); 0: every node announces to every node.
    pub coordinators: usize,
    /// An open mesh: any node of the same mesh name may join (trials on one machine).
    pub open: bool,
    /// A join token from `telemesh mesh invite` (a new node of a closed mesh).
    pub join: Option<crate::trust::Token>,
    /// The owner key's file; default `<data_dir>/owner.key`, created by the first node of a
    /// new mesh.
    pub owner_key: Option<PathBuf>,
    // Authenticated datagrams (issue 13).
    /// Per-device keys of the plain dialects (read from `device_keys`); empty: none.
    pub device_keys: auth::Keys,
    /// A plain-dialect device without a key is refused (otherwise let in unauthenticated).
    pub require_auth: bool,
    /// How many new streams a source address, and each dialect, may start (issue 15;
    /// `crate::ingest::admit`); unlimited by default.
    pub new_streams: crate::ingest::admit::Policy,
    /// Streams the node holds nothing of that one peer may make it repair, a second and at
    /// once (`telemesh_proto::mesh::Config::new_streams_per_peer`).
    pub new_streams_per_peer: crate::ingest::admit::Budget,
}

/// The files of a real PKI for the secure listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurePki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./telemesh-data"),
            iotstream: Some(SocketAddr::from(([0, 0, 0, 0], 5005))),
            tinytelemetry: Some(SocketAddr::from(([0, 0, 0, 0], 5000))),
            secure: Some(SocketAddr::from(([0, 0, 0, 0], 5006))),
            secure_pki: None,
            secure_limits: crate::ingest::dtls::Limits::default(),
            http: SocketAddr::from(([127, 0, 0, 1], 8080)),
            http_token: None,
            http_insecure: false,
            metrics_open: false,
            http_limits: Limits::default(),
            iotstream_timestamp: TimestampUnit::Ms,
            flush_interval: Duration::from_millis(500),
            reorder: stream::Config::default(),
            max_streams: 20_000,
            stream_idle: Duration::from_secs(600),
            cache_mb: 32,
            recv_buffer: 8 << 20,
            listen: crate::mesh::overlay::Config::default().listen,
            bootstrap: Vec::new(),
            external_addresses: Vec::new(),
            mesh: "default".to_owned(),
            sync_interval: Duration::from_secs(10),
            coordinators: 3,
            open: false,
            join: None,
            owner_key: None,
            device_keys: auth::Keys::default(),
            require_auth: false,
            new_streams: crate::ingest::admit::Policy::default(),
            new_streams_per_peer: telemesh_proto::mesh::Config::default().new_streams_per_peer,
        }
    }
}

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// The config file: every key optional, names as on the command line with `_`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    pub data_dir: Option<PathBuf>,
    pub iotstream: Option<String>,
    pub tinytelemetry: Option<String>,
    pub secure: Option<String>,
    pub secure_ca: Option<PathBuf>,
    pub secure_cert: Option<PathBuf>,
    pub secure_key: Option<PathBuf>,
    pub http: Option<String>,
    pub http_token_file: Option<PathBuf>,
    pub http_insecure: Option<bool>,
    pub metrics_open: Option<bool>,
    pub http_header_timeout: Option<String>,
    pub http_idle_timeout: Option<String>,
    pub http_max_connections: Option<usize>,
    pub iotstream_timestamp: Option<TimestampUnit>,
    pub flush_interval: Option<String>,
    pub reorder_packets: Option<u64>,
    pub reorder_window: Option<String>,
    pub max_streams: Option<usize>,
    pub stream_idle: Option<String>,
    pub cache_mb: Option<u64>,
    pub recv_buffer: Option<usize>,
    pub listen: Option<Vec<String>>,
    pub bootstrap: Option<Vec<String>>,
    pub external_addresses: Option<Vec<String>>,
    pub mesh: Option<String>,
    pub sync_interval: Option<String>,
    pub coordinators: Option<usize>,
    pub open: Option<bool>,
    pub join: Option<String>,
    pub owner_key: Option<PathBuf>,
    pub device_keys: Option<PathBuf>,
    pub require_auth: Option<bool>,
    pub new_streams_per_source: Option<String>,
    pub new_streams_per_dialect: Option<String>,
    pub new_streams_per_peer: Option<String>,
}

impl File {
    pub fn load(path: &Path) -> Result<File, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        toml::from_str(&text).map_err(|e| {
            // toml's own text spans several lines with a caret; one line names the place.
            let message = match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                    format!("line {line}, column {column}: {}", e.message())
                }
                None => e.message().to_owned(),
            };
            ConfigError::Parse { path: path.to_owned(), message }
        })
    }

    /// The line of `path` that sets `key` (`key = …`), if one does: to point at it when
    /// its value is refused after parsing.
    pub fn line_of(path: &Path, key: &str) -> Option<usize> {
        let text = std::fs::read_to_string(path).ok()?;
        text.lines()
            .position(|l| l.trim_start().strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')))
            .map(|i| i + 1)
    }

    /// Applies `over` on top of `self` (command-line flags over the file).
    pub fn overlay(self, over: File) -> File {
        File {
            data_dir: over.data_dir.or(self.data_dir),
            iotstream: over.iotstream.or(self.iotstream),
            tinytelemetry: over.tinytelemetry.or(self.tinytelemetry),
            secure: over.secure.or(self.secure),
            secure_ca: over.secure_ca.or(self.secure_ca),
            secure_cert: over.secure_cert.or(self.secure_cert),
            secure_key: over.secure_key.or(self.secure_key),
            http: over.http.or(self.http),
            http_token_file: over.http_token_file.or(self.http_token_file),
            http_insecure: over.http_insecure.or(self.http_insecure),
            metrics_open: over.metrics_open.or(self.metrics_open),
            http_header_timeout: over.http_header_timeout.or(self.http_header_timeout),
            http_idle_timeout: over.http_idle_timeout.or(self.http_idle_timeout),
            http_max_connections: over.http_max_connections.or(self.http_max_connections),
            iotstream_timestamp: over.iotstream_timestamp.or(self.iotstream_timestamp),
            flush_interval: over.flush_interval.or(self.flush_interval),
            reorder_packets: over.reorder_packets.or(self.reorder_packets),
            reorder_window: over.reorder_window.or(self.reorder_window),
            max_streams: over.max_streams.or(self.max_streams),
            stream_idle: over.stream_idle.or(self.stream_idle),
            cache_mb: over.cache_mb.or(self.cache_mb),
            recv_buffer: over.recv_buffer.or(self.recv_buffer),
            listen: over.listen.or(self.listen),
            bootstrap: over.bootstrap.or(self.bootstrap),
            external_addresses: over.external_addresses.or(self.external_addresses),
            mesh: over.mesh.or(self.mesh),
            sync_interval: over.sync_interval.or(self.sync_interval),
            coordinators: over.coordinators.or(self.coordinators),
            open: over.open.or(self.open),
            join: over.join.or(self.join),
            owner_key: over.owner_key.or(self.owner_key),
            device_keys: over.device_keys.or(self.device_keys),
            require_auth: over.require_auth.or(self.require_auth),
            new_streams_per_source: over.new_streams_per_source.or(self.new_streams_per_source),
            new_streams_per_dialect: over.new_streams_per_dialect.or(self.new_streams_per_dialect),
            new_streams_per_peer: over.new_streams_per_peer.or(self.new_streams_per_peer),
        }
    }

    /// Fills defaults and validates every field.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let d = Config::default();
        let config = Config {
            data_dir: self.data_dir.unwrap_or(d.data_dir),
            iotstream: optional_addr("iotstream", self.iotstream, d.iotstream)?,
            tinytelemetry: optional_addr("tinytelemetry", self.tinytelemetry, d.tinytelemetry)?,
            secure: optional_addr("secure", self.secure, d.secure)?,
            secure_limits: d.secure_limits,
            secure_pki: match (self.secure_ca, self.secure_cert, self.secure_key) {
                (None, None, None) => None,
                (Some(ca), Some(cert), Some(key)) => Some(SecurePki { ca, cert, key }),
                _ => {
                    return Err(ConfigError::Invalid {
                        field: "secure_ca/secure_cert/secure_key",
                        message: "a real PKI needs all three files (or none, for the built-in CA)".to_owned(),
                    })
                }
            },
            http: match self.http {
                Some(s) => addr("http", &s)?,
                None => d.http,
            },
            http_token: match &self.http_token_file {
                Some(path) => Some(
                    Token::load(path)
                        .map_err(|e| ConfigError::Invalid { field: "http_token_file", message: e.to_string() })?,
                ),
                None => None,
            },
            http_insecure: self.http_insecure.unwrap_or(d.http_insecure),
            metrics_open: self.metrics_open.unwrap_or(d.metrics_open),
            http_limits: Limits {
                header_timeout: duration("http_header_timeout", self.http_header_timeout, d.http_limits.header_timeout)?,
                idle_timeout: duration("http_idle_timeout", self.http_idle_timeout, d.http_limits.idle_timeout)?,
                max_connections: self.http_max_connections.unwrap_or(d.http_limits.max_connections),
            },
            iotstream_timestamp: self.iotstream_timestamp.unwrap_or(d.iotstream_timestamp),
            flush_interval: duration("flush_interval", self.flush_interval, d.flush_interval)?,
            reorder: stream::Config {
                reorder_packets: self.reorder_packets.unwrap_or(d.reorder.reorder_packets),
                reorder_ns: u64::try_from(
                    duration("reorder_window", self.reorder_window, Duration::from_nanos(d.reorder.reorder_ns))?
                        .as_nanos(),
                )
                .unwrap_or(u64::MAX),
            },
            max_streams: self.max_streams.unwrap_or(d.max_streams),
            stream_idle: duration("stream_idle", self.stream_idle, d.stream_idle)?,
            cache_mb: self.cache_mb.unwrap_or(d.cache_mb),
            recv_buffer: self.recv_buffer.unwrap_or(d.recv_buffer),
            listen: match self.listen {
                Some(list) => list.iter().map(|s| multiaddr("listen", s)).collect::<Result<_, _>>()?,
                None => d.listen,
            },
            bootstrap: match self.bootstrap {
                Some(list) => list.iter().map(|s| multiaddr("bootstrap", s)).collect::<Result<_, _>>()?,
                None => d.bootstrap,
            },
            external_addresses: match self.external_addresses {
                Some(list) => list.iter().map(|s| multiaddr("external_addresses", s)).collect::<Result<_, _>>()?,
                None => d.external_addresses,
            },
            mesh: self.mesh.unwrap_or(d.mesh),
            sync_interval: duration("sync_interval", self.sync_interval, d.sync_interval)?,
            coordinators: self.coordinators.unwrap_or(d.coordinators),
            open: self.open.unwrap_or(d.open),
            join: match self.join {
                Some(text) => Some(crate::trust::Token::parse(&text).map_err(|e| ConfigError::Invalid { field: "join", message: e.to_string() })?),
                None => d.join,
            },
            owner_key: self.owner_key.or(d.owner_key),
            device_keys: match &self.device_keys {
                Some(path) => load_device_keys(path)?,
                None => d.device_keys,
            },
            require_auth: self.require_auth.unwrap_or(d.require_auth),
            new_streams: crate::ingest::admit::Policy {
                per_source: budget("new_streams_per_source", self.new_streams_per_source)?,
                per_dialect: budget("new_streams_per_dialect", self.new_streams_per_dialect)?,
            },
            new_streams_per_peer: budget("new_streams_per_peer", self.new_streams_per_peer)?
                .unwrap_or(d.new_streams_per_peer),
        };
        config.validate()?;
        Ok(config)
    }
}

impl Config {
    /// Checks ranges and combinations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: &str| Err(ConfigError::Invalid { field, message: message.to_owned() });
        if self.flush_interval.is_zero() || self.flush_interval > Duration::from_secs(60) {
            return invalid("flush_interval", "must be between 1ms and 60s");
        }
        if self.max_streams < 16 {
            return invalid("max_streams", "must be at least 16");
        }
        if self.stream_idle < Duration::from_secs(1) {
            return invalid("stream_idle", "must be at least 1s");
        }
        if self.cache_mb == 0 {
            return invalid("cache_mb", "must be at least 1");
        }
        if self.iotstream.is_none() && self.tinytelemetry.is_none() && self.secure.is_none() {
            return invalid("iotstream/tinytelemetry/secure", "at least one ingest listener must be on");
        }
        if let (Some(a), Some(b)) = (self.iotstream, self.tinytelemetry) {
            if a == b && a.port() != 0 {
                return invalid("tinytelemetry", "must not use the same address as iotstream");
            }
        }
        for other in [self.iotstream, self.tinytelemetry].into_iter().flatten() {
            if self.secure == Some(other) && other.port() != 0 {
                return invalid("secure", "must not use the same address as iotstream or tinytelemetry");
            }
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if self.listen.is_empty() {
            return invalid("listen", "at least one overlay address is needed");
        }
        for b in &self.bootstrap {
            if let Err(e) = crate::mesh::overlay::validate_bootstrap(b) {
                return Err(ConfigError::Invalid { field: "bootstrap", message: e.to_string() });
            }
        }
        let name_ok = |c: char| c.is_ascii_alphanumeric() || "._-".contains(c);
        if self.mesh.is_empty() || self.mesh.len() > 64 || !self.mesh.chars().all(name_ok) {
            return invalid("mesh", "must be 1 to 64 letters, digits, '.', '_' or '-'");
        }
        if self.sync_interval < Duration::from_millis(100) {
            return invalid("sync_interval", "must be at least 100ms");
        }
        if self.open && self.join.is_some() {
            return invalid("join", "an open mesh has no tokens: drop --open to join a closed mesh");
        }
        if self.open && self.owner_key.is_some() {
            return invalid("owner_key", "an open mesh has no owner: drop --open or --owner-key");
        }
        if self.join.is_some() && self.owner_key.is_some() {
            return invalid("owner_key", "a node that joins with a token does not create a mesh: drop --owner-key");
        }
        if let Some(token) = &self.join {
            if token.ticket.mesh() != self.mesh {
                return Err(ConfigError::Invalid {
                    field: "join",
                    message: format!(
                        "the token is for mesh {:?}, this node is configured for mesh {:?} (set --mesh {})",
                        token.ticket.mesh(),
                        self.mesh,
                        token.ticket.mesh()
                    ),
                });
            }
        }
        if self.require_auth && self.device_keys.is_empty() {
            return invalid(
                "require_auth",
                "without device_keys every datagram would be refused: give --device-keys FILE",
            );
        }
        self.validate_http()
    }

    /// The HTTP API: off loopback only with a token or an explicit `http_insecure`.
    fn validate_http(&self) -> Result<(), ConfigError> {
        let invalid = |field, message: String| Err(ConfigError::Invalid { field, message });
        if !self.http.ip().to_canonical().is_loopback() && self.http_token.is_none() && !self.http_insecure {
            return invalid(
                "http",
                format!(
                    "{} is not a loopback address: give a bearer token with --http-token-file FILE \
                     (http_token_file), or serve without one with --http-insecure (http_insecure = true)",
                    self.http
                ),
            );
        }
        if self.http_token.is_some() && self.http_insecure {
            return invalid("http_insecure", "contradicts http_token_file: give one or the other".to_owned());
        }
        let l = &self.http_limits;
        if l.header_timeout < Duration::from_millis(100) || l.header_timeout > Duration::from_secs(600) {
            return invalid("http_header_timeout", "must be between 100ms and 10m".to_owned());
        }
        if l.idle_timeout < Duration::from_millis(100) || l.idle_timeout > Duration::from_secs(3600) {
            return invalid("http_idle_timeout", "must be between 100ms and 1h".to_owned());
        }
        if !(1..=65_536).contains(&l.max_connections) {
            return invalid("http_max_connections", "must be between 1 and 65536".to_owned());
        }
        Ok(())
    }
}

/// Most bytes a device key file may have (about 190,000 keys).
const MAX_DEVICE_KEYS_FILE: u64 = 16 << 20;

/// Reads and checks a device key file (`proto::auth::Keys::parse`: lines `dialect device
/// hex-key`). Keys are secrets: a file that others may read is refused, one the group may
/// read is accepted with a warning. Errors name the file and line, never a key.
/// A new-streams budget, `RATE:BURST`.
fn budget(field: &'static str, value: Option<String>) -> Result<Option<crate::ingest::admit::Budget>, ConfigError> {
    value.map(|v| v.parse().map_err(|message| ConfigError::Invalid { field, message })).transpose()
}

pub fn load_device_keys(path: &Path) -> Result<auth::Keys, ConfigError> {
    use std::io::Read;
    let invalid = |message: String| ConfigError::Invalid { field: "device_keys", message };
    let shown = path.display();
    let file = std::fs::File::open(path).map_err(|e| invalid(format!("cannot read {shown}: {e}")))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = file.metadata().map_err(|e| invalid(format!("cannot read {shown}: {e}")))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            return Err(invalid(format!("{shown} has mode {mode:o}: others may read the device keys; chmod 600 it")));
        }
        if mode & 0o070 != 0 {
            tracing::warn!(
                path = %shown,
                mode = format!("{mode:o}"),
                "the device key file is readable by its group; chmod 600 it"
            );
        }
    }
    let mut text = String::new();
    match file.take(MAX_DEVICE_KEYS_FILE + 1).read_to_string(&mut text) {
        Ok(n) if n as u64 > MAX_DEVICE_KEYS_FILE => Err(invalid(format!("{shown} is larger than 16 MiB"))),
        Ok(_) => auth::Keys::parse(&text).map_err(|e| invalid(format!("{shown}: {e}"))),
        Err(e) => Err(invalid(format!("cannot read {shown}: {e}"))),
    }
}

fn multiaddr(field: &'static str, s: &str) -> Result<Multiaddr, ConfigError> {
    s.parse().map_err(|e| ConfigError::Invalid {
        field,
        message: format!("{s:?} is not a multiaddr like /ip4/0.0.0.0/udp/4001/quic-v1 or /ip4/0.0.0.0/tcp/4001: {e}"),
    })
}

fn addr(field: &'static str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| ConfigError::Invalid {
        field,
        message: format!("{s:?} is not an address like 0.0.0.0:5005 or [::]:5005"),
    })
}

fn optional_addr(
    field: &'static str,
    value: Option<String>,
    default: Option<SocketAddr>,
) -> Result<Option<SocketAddr>, ConfigError> {
    match value.as_deref() {
        None => Ok(default),
        Some("off") => Ok(None),
        Some(s) => addr(field, s).map(Some),
    }
}

fn duration(field: &'static str, value: Option<String>, default: Duration) -> Result<Duration, ConfigError> {
    match value {
        None => Ok(default),
        Some(s) => humantime::parse_duration(&s)
            .map_err(|e| ConfigError::Invalid { field, message: format!("{s:?} is not a duration like 500ms or 2s: {e}") }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_docs() {
        let c = File::default().resolve().expect("defaults are valid");
        assert_eq!(c, Config::default());
        assert_eq!(c.iotstream, Some("0.0.0.0:5005".parse().expect("addr")));
        assert_eq!(c.tinytelemetry, Some("0.0.0.0:5000".parse().expect("addr")));
        assert_eq!(c.secure, Some("0.0.0.0:5006".parse().expect("addr")));
        assert_eq!(c.http, "127.0.0.1:8080".parse().expect("addr"));
        assert!(c.flush_interval <= Duration::from_secs(1));
    }

    #[test]
    fn file_then_flags() {
        let file: File = toml::from_str("iotstream = \"127.0.0.1:7000\"\nflush_interval = \"200ms\"\ntinytelemetry = \"off\"")
            .expect("parses");
        let flags = File { iotstream: Some("127.0.0.1:7001".into()), ..File::default() };
        let c = file.overlay(flags).resolve().expect("valid");
        assert_eq!(c.iotstream, Some("127.0.0.1:7001".parse().expect("addr")));
        assert_eq!(c.tinytelemetry, None);
        assert_eq!(c.flush_interval, Duration::from_millis(200));
    }

    #[test]
    fn membership_settings_that_contradict_each_other_are_refused() {
        let bad = |f: File| f.resolve().expect_err("invalid").to_string();
        assert!(bad(File { join: Some("garbage".into()), ..File::default() }).starts_with("join: invalid join token"));
        let key = libp2p::identity::Keypair::generate_ed25519();
        let ticket = crate::trust::Ticket::issue(&key, "default", 0, 60).expect("ticket");
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/1/p2p/{}", key.public().to_peer_id()).parse().expect("addr");
        let token = crate::trust::Token { ticket, bootstrap: vec![addr] }.encode();
        let good = File { join: Some(token.clone()), ..File::default() }.resolve().expect("valid");
        assert!(good.join.is_some());
        assert!(bad(File { join: Some(token.clone()), open: Some(true), ..File::default() }).starts_with("join:"));
        assert!(bad(File { owner_key: Some("k".into()), open: Some(true), ..File::default() }).starts_with("owner_key:"));
        assert!(bad(File { join: Some(token.clone()), owner_key: Some("k".into()), ..File::default() }).starts_with("owner_key:"));
        let other_mesh = bad(File { join: Some(token), mesh: Some("lab".into()), ..File::default() });
        assert!(other_mesh.starts_with("join:") && other_mesh.contains("--mesh default"), "{other_mesh}");
    }

    #[test]
    fn errors_name_the_field() {
        let bad = |f: File| f.resolve().expect_err("invalid").to_string();
        assert!(bad(File { http: Some("localhost".into()), ..File::default() }).starts_with("http:"));
        assert!(bad(File { flush_interval: Some("soon".into()), ..File::default() }).starts_with("flush_interval:"));
        assert!(bad(File { flush_interval: Some("0s".into()), ..File::default() }).starts_with("flush_interval:"));
        let all_off = File {
            iotstream: Some("off".into()),
            tinytelemetry: Some("off".into()),
            secure: Some("off".into()),
            ..File::default()
        };
        assert!(bad(all_off).contains("at least one ingest listener"));
        let at = |a: &str| Some(a.to_owned());
        let same = File { iotstream: at("127.0.0.1:7000"), secure: at("127.0.0.1:7000"), ..File::default() };
        assert!(bad(same).starts_with("secure:"));
        let partial_pki = File { secure_ca: Some("ca.pem".into()), ..File::default() };
        assert!(bad(partial_pki).starts_with("secure_ca/secure_cert/secure_key:"));
        let secure_only = File { iotstream: Some("off".into()), tinytelemetry: Some("off".into()), ..File::default() };
        assert_eq!(secure_only.resolve().expect("valid").secure, Some("0.0.0.0:5006".parse().expect("addr")));
        assert!(toml::from_str::<File>("colour = 1").is_err());
    }

    #[test]
    fn http_off_loopback_needs_a_token_or_insecure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "s3cret\n").expect("write");
        let with = |http: &str, token_file: Option<&Path>, insecure: Option<bool>| File {
            http: Some(http.into()),
            http_token_file: token_file.map(Path::to_owned),
            http_insecure: insecure,
            ..File::default()
        };
        for http in ["0.0.0.0:8080", "10.0.0.1:8080", "[::]:8080", "192.168.1.5:80"] {
            let e = with(http, None, None).resolve().expect_err("refused").to_string();
            assert!(e.starts_with("http: "), "{e}");
            assert!(e.contains("not a loopback address") && e.contains("--http-token-file"), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
            assert!(with(http, None, Some(false)).resolve().is_err());
            let c = with(http, Some(&token), None).resolve().expect("a token makes it valid");
            assert_eq!(c.http_token, Some(Token::parse("s3cret", "t").expect("valid")));
            let c = with(http, None, Some(true)).resolve().expect("insecure makes it valid");
            assert!(c.http_insecure && c.http_token.is_none());
        }
        for http in ["127.0.0.1:8080", "127.0.0.2:0", "[::1]:8080", "[::ffff:127.0.0.1]:8080"] {
            assert!(with(http, None, None).resolve().is_ok(), "{http}");
        }
        // The token applies on loopback too; both at once is a contradiction.
        assert!(with("127.0.0.1:8080", Some(&token), None).resolve().expect("valid").http_token.is_some());
        let both = with("0.0.0.0:8080", Some(&token), Some(true)).resolve().expect_err("refused").to_string();
        assert!(both.starts_with("http_insecure:"), "{both}");
        // A token file that is missing or empty is refused, naming the key.
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").expect("write");
        let e = with("0.0.0.0:8080", Some(&empty), None).resolve().expect_err("refused").to_string();
        assert!(e.starts_with("http_token_file:") && e.contains("is empty"), "{e}");
        let e = with("0.0.0.0:8080", Some(&dir.path().join("nope")), None).resolve().expect_err("refused").to_string();
        assert!(e.starts_with("http_token_file: cannot read"), "{e}");
        // The keys read from a config file.
        let file: File = toml::from_str(&format!(
            "http = \"0.0.0.0:9090\"\nhttp_token_file = {:?}\nmetrics_open = true\nhttp_header_timeout = \"2s\"\n\
             http_idle_timeout = \"30s\"\nhttp_max_connections = 8",
            token.display().to_string()
        ))
        .expect("parses");
        let c = file.resolve().expect("valid");
        assert!(c.metrics_open && c.http_token.is_some());
        assert_eq!(
            c.http_limits,
            Limits { header_timeout: Duration::from_secs(2), idle_timeout: Duration::from_secs(30), max_connections: 8 }
        );
        let bad = File { http_max_connections: Some(0), ..File::default() }.resolve().expect_err("refused").to_string();
        assert!(bad.starts_with("http_max_connections:"), "{bad}");
        let bad = File { http_header_timeout: Some("1ms".into()), ..File::default() }.resolve().expect_err("x").to_string();
        assert!(bad.starts_with("http_header_timeout:"), "{bad}");
    }

    #[test]
    fn new_stream_budgets_are_parsed_and_a_bad_one_names_its_key() {
        use crate::ingest::admit::Budget;
        let c = File { new_streams_per_source: Some("10:100".into()), ..File::default() }.resolve().expect("valid");
        assert_eq!(c.new_streams.per_source, Some(Budget { rate: 10.0, burst: 100 }));
        assert_eq!(c.new_streams.per_dialect, None);
        let e = File { new_streams_per_dialect: Some("100".into()), ..File::default() }.resolve().expect_err("no burst");
        assert!(matches!(e, ConfigError::Invalid { field: "new_streams_per_dialect", .. }), "{e}");
        assert_eq!(File::default().resolve().expect("valid").new_streams_per_peer, Budget { rate: 200.0, burst: 2_000 });
        let c = File { new_streams_per_peer: Some("5:50".into()), ..File::default() }.resolve().expect("valid");
        assert_eq!(c.new_streams_per_peer, Budget { rate: 5.0, burst: 50 });
    }

    #[test]
    fn device_keys_are_read_and_checked_at_config_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = "3f".repeat(32);
        let write = |name: &str, text: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
            path
        };
        let keys = |path: &Path, require: Option<bool>| {
            File { device_keys: Some(path.to_owned()), require_auth: require, ..File::default() }.resolve()
        };
        let good = write("good", &format!("# two devices\niotstream 42 {secret}\ntinytelemetry 7 {secret}\n"), 0o600);
        let c = keys(&good, Some(true)).expect("valid");
        assert_eq!(c.device_keys.len(), 2);
        assert!(c.require_auth);
        assert!(c.device_keys.get(telemesh_proto::Dialect::Iotstream, 42).is_some());
        assert!(!format!("{c:?}").contains(&secret), "the configuration's Debug shows no key");
        // From the config file too.
        let text = format!("device_keys = {:?}\nrequire_auth = true", good.display().to_string());
        let file: File = toml::from_str(&text).expect("parses");
        assert_eq!(file.resolve().expect("valid").device_keys.len(), 2);
        let bad = |r: Result<Config, ConfigError>| r.expect_err("refused").to_string();
        let e = bad(keys(&write("dup", &format!("iotstream 1 {secret}\niotstream 1 {secret}"), 0o600), None));
        assert!(e.starts_with("device_keys: ") && e.contains("line 2") && e.contains("listed twice"), "{e}");
        let e = bad(keys(&write("short", &format!("iotstream 1 {}", &secret[..60]), 0o600), None));
        assert!(e.contains("line 1") && !e.contains(&secret[..60]) && !e.contains('\n'), "{e}");
        let e = bad(keys(&write("open", &format!("iotstream 1 {secret}"), 0o644), None));
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        assert!(keys(&write("group", &format!("iotstream 1 {secret}"), 0o640), None).is_ok(), "group: a warning");
        let e = bad(keys(&dir.path().join("missing"), None));
        assert!(e.starts_with("device_keys: cannot read"), "{e}");
        let e = bad(File { require_auth: Some(true), ..File::default() }.resolve());
        assert!(e.starts_with("require_auth:") && e.contains("--device-keys"), "{e}");
    }
}
