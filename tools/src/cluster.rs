//! Local `telemesh node` processes for the testnet and the experiments: start them on
//! loopback with their own data directories and ports, read their HTTP API, and stop
//! them. A [`NodeProcess`] kills its process when dropped, so an error or a panic in the
//! caller leaves nothing running.
//!
//! A [`Mesh`] is closed, as every mesh is by default: node `a` starts on a fresh data
//! directory and creates it (its owner key and a roster with itself), and every other
//! node joins with an invitation `a` issued (`POST /v1/mesh/invites`, `--join TOKEN`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use telemesh_proto::impair;

use crate::relay::{self, Cut, Relay};

/// The largest HTTP body read (a records page of 100,000 records is about 40 MB).
const MAX_BODY: u64 = 256 << 20;

/// How long an invitation [`Mesh::invite`] asks for is valid: each is spent by a node
/// started right after, so this only has to cover a slow start.
pub const INVITE_VALID: &str = "10m";

/// The environment variable `telemesh node` reads a join token from (its `--join`).
const JOIN_ENV: &str = "TELEMESH_JOIN";

/// The `telemesh` binary: `$TELEMESH_BIN`, else `telemesh` next to the running program
/// (cargo puts all the workspace's binaries in one directory).
pub fn node_binary() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("TELEMESH_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot find the running program's path")?;
    let dir = exe.parent().context("the running program has no directory")?;
    // Integration tests run from target/<profile>/deps.
    for candidate in [dir.join("telemesh"), dir.join("../telemesh")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("no telemesh binary next to {} (build it with `cargo build --release`, or set TELEMESH_BIN)", exe.display())
}

/// A free UDP port on 127.0.0.1, never one this process handed out before (free when
/// asked; another program could take it before the node binds it, which then fails to
/// start with a clear error).
pub fn free_udp_port() -> anyhow::Result<u16> {
    fresh_port(|| UdpSocket::bind("127.0.0.1:0")?.local_addr())
}

/// A free TCP port on 127.0.0.1 (see [`free_udp_port`]).
pub fn free_tcp_port() -> anyhow::Result<u16> {
    fresh_port(|| TcpListener::bind("127.0.0.1:0")?.local_addr())
}

/// Every port [`free_udp_port`] and [`free_tcp_port`] handed out. The kernel may give a
/// probe's port to the next probe as soon as it is closed, and one node's ingest and
/// overlay ports must differ (the testnet once failed to start a node whose QUIC port was
/// its IoTStream port).
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port from `probe` that is not in [`HANDED_OUT`], which it then joins.
fn fresh_port(probe: impl Fn() -> std::io::Result<SocketAddr>) -> anyhow::Result<u16> {
    const TRIES: usize = 64;
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..TRIES {
        let port = probe().context("cannot bind a loopback port")?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
    }
    bail!("the kernel gave only ports handed out before, {TRIES} times")
}

/// How to start one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// A short name for messages and the log file (`a`, `b`, …).
    pub name: String,
    /// Its data directory (created if missing).
    pub data_dir: PathBuf,
    /// Peers to join through (`…/p2p/<peer id>`): with `open`, or for a node that holds a
    /// roster already. A new node of a closed mesh joins with `join` instead.
    pub bootstrap: Vec<String>,
    /// A join token from a node holding the owner key ([`Mesh::invite`]), given to the node
    /// as `--join` (through `TELEMESH_JOIN`, so that it is not on the command line while
    /// it is still unspent). A node that holds a roster ignores it, so a restart with the
    /// spent token works.
    pub join: Option<String>,
    /// `--open`: the node takes every peer of the same mesh name as a member (the old,
    /// open mode; the testnet's uninvited node).
    pub open: bool,
    /// Addresses advertised instead of the QUIC listen address (a relay in front).
    pub external: Vec<String>,
    /// The mesh's name.
    pub mesh: String,
    /// Summary exchange interval (e.g. `2s`).
    pub sync_interval: Option<String>,
    /// More `telemesh node` arguments.
    pub extra: Vec<String>,
}

impl NodeSpec {
    /// A node named `name` with data in `data_dir`, in mesh `testnet`.
    pub fn new(name: &str, data_dir: &Path) -> Self {
        NodeSpec {
            name: name.to_owned(),
            data_dir: data_dir.to_owned(),
            bootstrap: Vec::new(),
            join: None,
            open: false,
            external: Vec::new(),
            mesh: "testnet".to_owned(),
            sync_interval: None,
            extra: Vec::new(),
        }
    }
}

/// One running `telemesh node` on loopback. Killed when dropped.
#[derive(Debug)]
pub struct NodeProcess {
    /// Its name.
    pub name: String,
    /// HTTP API address.
    pub http: SocketAddr,
    /// IoTStream ingest address.
    pub iotstream: SocketAddr,
    /// TinyTelemetry ingest address.
    pub tinytelemetry: SocketAddr,
    /// Secure (DTLS) ingest address.
    pub secure: SocketAddr,
    /// QUIC overlay address it binds.
    pub quic: SocketAddr,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
    child: Option<Child>,
}

impl NodeProcess {
    /// Starts `binary node` with fresh loopback ports; its output goes to
    /// `<data_dir>/node.log`. Does not wait for it to be ready ([`NodeProcess::wait_ready`]).
    pub fn start(binary: &Path, spec: &NodeSpec) -> anyhow::Result<NodeProcess> {
        Self::start_with_quic(binary, spec, free_udp_port()?)
    }

    /// [`NodeProcess::start`] with the QUIC port chosen by the caller.
    pub fn start_with_quic(binary: &Path, spec: &NodeSpec, quic_port: u16) -> anyhow::Result<NodeProcess> {
        std::fs::create_dir_all(&spec.data_dir)
            .with_context(|| format!("cannot create {}", spec.data_dir.display()))?;
        let http: SocketAddr = ([127, 0, 0, 1], free_tcp_port()?).into();
        let iotstream: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let tinytelemetry: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let secure: SocketAddr = ([127, 0, 0, 1], free_udp_port()?).into();
        let quic: SocketAddr = ([127, 0, 0, 1], quic_port).into();
        let log = spec.data_dir.join("node.log");
        let out = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
        let mut cmd = Command::new(binary);
        cmd.arg("node")
            .arg("--data")
            .arg(&spec.data_dir)
            .args(["--http", &http.to_string()])
            .args(["--iotstream", &iotstream.to_string()])
            .args(["--tinytelemetry", &tinytelemetry.to_string()])
            .args(["--secure", &secure.to_string()])
            .args(["--listen", &format!("/ip4/127.0.0.1/udp/{}/quic-v1", quic.port())])
            .args(["--mesh", &spec.mesh])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        for b in &spec.bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        for e in &spec.external {
            cmd.args(["--external-address", e]);
        }
        // Never one inherited from the caller's environment: that would make node `a` a joiner.
        cmd.env_remove(JOIN_ENV);
        if let Some(token) = &spec.join {
            cmd.env(JOIN_ENV, token);
        }
        if spec.open {
            cmd.arg("--open");
        }
        if let Some(s) = &spec.sync_interval {
            cmd.args(["--sync-interval", s]);
        }
        cmd.args(&spec.extra);
        let child = cmd.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        Ok(NodeProcess { name: spec.name.clone(), http, iotstream, tinytelemetry, secure, quic, log, child: Some(child) })
    }

    /// The HTTP API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the API answers and the overlay reports its peer id; returns the peer id.
    /// Fails early, with the log's last lines, if the process exits.
    pub fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("node {} exited ({status}) at start:\n{}", self.name, tail(&self.log, 10));
                }
            }
            if let Ok(status) = self.json("/v1/status") {
                if let Some(id) = status["peer_id"].as_str().filter(|s| !s.is_empty()) {
                    return Ok(id.to_owned());
                }
            }
            if Instant::now() > deadline {
                bail!("node {} did not become ready in {timeout:?}:\n{}", self.name, tail(&self.log, 10));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` (with its query) as text.
    pub fn get(&self, path: &str) -> anyhow::Result<String> {
        get(&format!("{}{path}", self.url()))
    }

    /// GET `path` as JSON.
    pub fn json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.get(path)?)?)
    }

    /// Every record of one device as JSON values, paging through `limit` by cursor.
    pub fn records(&self, dialect: &str, device: u64, view: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/streams/{dialect}/{device}/records?view={view}&limit=100000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.json(&path)?;
            out.extend(page["records"].as_array().context("records")?.iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return Ok(out),
            }
        }
    }

    /// The sealed windows starting at or after `from_ns`, from `GET /v1/windows` (at most
    /// 100,000). Two nodes listing the same windows with the same roots and provenance
    /// digests return the same merged history, `heard_by` included.
    pub fn windows(&self, from_ns: u64) -> anyhow::Result<Windows> {
        let v = self.json(&format!("/v1/windows?from={}&limit=100000", from_ns as f64 / 1e9))?;
        let mut out = Windows::new();
        for w in v["windows"].as_array().context("GET /v1/windows: no windows")? {
            let key = (
                w["dialect"].as_str().context("dialect")?.to_owned(),
                w["device"].as_u64().context("device")?,
                w["start_ns"].as_u64().context("start_ns")?,
            );
            let info = WindowInfo {
                root: w["root"].as_str().context("root")?.to_owned(),
                provenance: w["provenance"].as_str().context("provenance")?.to_owned(),
                count: w["count"].as_u64().context("count")?,
                slot_size: w["slot_size"].as_u64().context("slot_size")?,
            };
            out.insert(key, info);
        }
        Ok(out)
    }

    /// [`NodeProcess::windows`] reduced to `root/provenance` per window.
    pub fn roots(&self, from_ns: u64) -> anyhow::Result<Roots> {
        Ok(self.windows(from_ns)?.into_iter().map(|(k, w)| (k, format!("{}/{}", w.root, w.provenance))).collect())
    }

    /// Its `/metrics` text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        self.get("/metrics")
    }

    /// CPU time (user + system) the process used so far, from `/proc` (Linux only).
    pub fn cpu_time(&self) -> Option<Duration> {
        cpu_time(self.pid()?)
    }

    /// The most resident memory the process has had so far (`VmHWM`, Linux only).
    pub fn peak_rss(&self) -> Option<u64> {
        Some(status(self.pid()?)?.vmhwm? * 1024)
    }

    /// Its resident memory now (`VmRSS`, Linux only).
    pub fn rss(&self) -> Option<u64> {
        Some(status(self.pid()?)?.vmrss? * 1024)
    }

    /// Asks the node to stop (SIGTERM, so it flushes) and waits up to `timeout`, then kills it.
    pub fn stop(mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        terminate(&child);
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Ok(child.wait()?);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends SIGTERM (the node drains and flushes on it) through kill(1), which keeps this
/// crate free of `unsafe`.
fn terminate(child: &Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
}

/// Several nodes on loopback in one closed mesh: the first created it and holds its owner
/// key; each other joined with an invitation from it.
#[derive(Debug)]
pub struct Mesh {
    /// The nodes, `a`, `b`, … in start order; `a` holds the owner key and issues invitations.
    pub nodes: Vec<NodeProcess>,
    /// Their peer ids, in the same order.
    pub peer_ids: Vec<String>,
    /// With node↔node impairment: the relay in front of each node's QUIC port, in the
    /// same order; peers dial a node only through its relay.
    pub relays: Vec<Relay>,
}

/// How to start a [`Mesh`].
#[derive(Debug, Clone)]
pub struct MeshSpec {
    /// How many nodes.
    pub nodes: usize,
    /// Parent of the nodes' data directories (`<dir>/a`, `<dir>/b`, …).
    pub dir: PathBuf,
    /// The mesh's name.
    pub mesh: String,
    /// Summary-exchange interval given to every node.
    pub sync_interval: Option<String>,
    /// Impairment of node↔node traffic (both directions) and the seed of its relays;
    /// `None` = nodes talk directly.
    pub node_link: Option<(impair::Config, u64)>,
}

impl Mesh {
    /// Starts the nodes one by one (each waits for the previous to be ready): the first on
    /// a fresh data directory, so that it creates a closed mesh, and each other with a join
    /// token node `a` issued for it just before (the token's bootstrap address is `a`'s
    /// advertised one: its relay's, if any). Then waits until every node is a member and
    /// connected to all others.
    pub fn start(binary: &Path, spec: &MeshSpec, timeout: Duration) -> anyhow::Result<Mesh> {
        anyhow::ensure!((1..=26).contains(&spec.nodes), "between 1 and 26 nodes");
        let mut mesh = Mesh { nodes: Vec::new(), peer_ids: Vec::new(), relays: Vec::new() };
        for i in 0..spec.nodes {
            let name = node_name(i);
            let mut node_spec = NodeSpec {
                mesh: spec.mesh.clone(),
                sync_interval: spec.sync_interval.clone(),
                ..NodeSpec::new(&name, &spec.dir.join(&name))
            };
            if i > 0 {
                node_spec.join = Some(mesh.invite()?);
            }
            let quic_port = free_udp_port()?;
            let relay = match &spec.node_link {
                Some((link, seed)) => {
                    let target: SocketAddr = ([127, 0, 0, 1], quic_port).into();
                    let config = relay::Config {
                        forward: link.clone(),
                        reverse: link.clone(),
                        seed: seed.wrapping_add(1000 * i as u64),
                        // Not port 0: the kernel could give it `quic_port`, probed and closed.
                        ..relay::Config::new(([127, 0, 0, 1], free_udp_port()?).into(), target)
                    };
                    let relay = relay::spawn(config)?;
                    node_spec.external = vec![quic_multiaddr(relay.local_addr())];
                    Some(relay)
                }
                None => None,
            };
            let mut node = NodeProcess::start_with_quic(binary, &node_spec, quic_port)?;
            let id = node.wait_ready(Duration::from_secs(30))?;
            mesh.peer_ids.push(id);
            mesh.nodes.push(node);
            mesh.relays.extend(relay);
        }
        mesh.wait_connected(timeout)?;
        Ok(mesh)
    }

    /// The address other nodes join `node` (the `i`th) through: its relay's, if any.
    fn advertised(&self, i: usize, node: &NodeProcess) -> anyhow::Result<String> {
        let addr = self.relays.get(i).map_or(node.quic, Relay::local_addr);
        Ok(format!("{}/p2p/{}", quic_multiaddr(addr), self.peer_ids.get(i).context("peer id")?))
    }

    /// Node `a`'s advertised address (`…/p2p/<peer id>`), which every node dials. Alone it
    /// admits nobody to the closed mesh: it is for `--open` nodes (the testnet's uninvited
    /// node) and for checking invitations.
    pub fn bootstrap_addr(&self) -> anyhow::Result<String> {
        self.advertised(0, self.nodes.first().context("no nodes")?)
    }

    /// A join token for one new node, from node `a` (which holds the owner key), valid for
    /// [`INVITE_VALID`]. Its bootstrap addresses must be exactly `a`'s advertised one: a
    /// direct address in it would let the new node bypass the relays between the nodes.
    pub fn invite(&self) -> anyhow::Result<String> {
        let first = self.nodes.first().context("no nodes to invite from")?;
        let url = format!("{}/v1/mesh/invites?expires={INVITE_VALID}", first.url());
        // The node answers 503 until the overlay has a listen address to put in the token.
        let deadline = Instant::now() + Duration::from_secs(15);
        let answer = loop {
            match request("POST", &url)? {
                (200..=299, body) => break body,
                (503, _) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                (code, body) => bail!("node {} issued no invitation: POST {url}: {code} {body}", first.name),
            }
        };
        let v: serde_json::Value = serde_json::from_str(&answer).context("the invitation is not JSON")?;
        let token = v["token"].as_str().filter(|t| !t.is_empty()).context("the invitation has no token")?;
        let bootstrap: Vec<&str> = v["bootstrap"].as_array().into_iter().flatten().filter_map(|a| a.as_str()).collect();
        let want = self.bootstrap_addr()?;
        anyhow::ensure!(
            bootstrap == [want.as_str()],
            "node {}'s invitation names {bootstrap:?} to dial, not its advertised address {want}",
            first.name
        );
        Ok(token.to_owned())
    }

    /// Waits until every node reports itself a member of the closed mesh (it holds a roster
    /// naming it) and all others as peers.
    pub fn wait_connected(&self, timeout: Duration) -> anyhow::Result<()> {
        let want = self.nodes.len() as u64 - 1;
        let deadline = Instant::now() + timeout;
        loop {
            let states: Vec<(bool, u64)> = self
                .nodes
                .iter()
                .map(|n| {
                    n.json("/v1/status").map_or((false, 0), |s| {
                        (s["membership"]["member"].as_bool().unwrap_or(false), s["peers"].as_u64().unwrap_or(0))
                    })
                })
                .collect();
            if states.iter().all(|&(member, peers)| member && peers == want) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let shown: Vec<String> = self
                    .nodes
                    .iter()
                    .zip(&states)
                    .map(|(n, (member, peers))| {
                        format!("{}: {}, {peers} peer(s)", n.name, if *member { "member" } else { "not a member" })
                    })
                    .collect();
                bail!(
                    "the nodes did not all join and connect in {timeout:?} ({}; want {want} peer(s) each)",
                    shown.join("; ")
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Every node's window roots from `from_ns` on, in node order.
    pub fn roots(&self, from_ns: u64) -> anyhow::Result<Vec<Roots>> {
        self.nodes.iter().map(|n| n.roots(from_ns)).collect()
    }

    /// Cuts (or, with `false`, heals) every link of node `i`: its own relay drops all
    /// traffic and the other nodes' relays drop its sessions. Needs `node_link`.
    pub fn isolate(&self, i: usize, cut: bool) -> anyhow::Result<()> {
        anyhow::ensure!(self.relays.len() == self.nodes.len(), "isolating a node needs relays between the nodes");
        let node = self.nodes.get(i).context("no such node")?;
        for (j, relay) in self.relays.iter().enumerate() {
            relay.set_cut(match (cut, j == i) {
                (false, _) => Cut::None,
                (true, true) => Cut::All,
                // QUIC dials from the listening socket, so its sessions at other relays come
                // from its QUIC address.
                (true, false) => Cut::Clients([node.quic].into()),
            });
        }
        Ok(())
    }
}

/// `a`, `b`, … `z`.
pub fn node_name(i: usize) -> String {
    char::from(b'a' + (i % 26) as u8).to_string()
}

/// `/ip4/127.0.0.1/udp/<port>/quic-v1` for a socket address.
pub fn quic_multiaddr(addr: SocketAddr) -> String {
    format!("/ip4/{}/udp/{}/quic-v1", addr.ip(), addr.port())
}

/// One sealed window as `GET /v1/windows` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    /// The Merkle root, hex.
    pub root: String,
    /// The provenance table's digest, hex.
    pub provenance: String,
    /// Records in the window.
    pub count: u64,
    /// Bytes per record slot in the window's blob.
    pub slot_size: u64,
}

/// (dialect, device, window start ns) → the window, as one node lists them.
pub type Windows = BTreeMap<(String, u64, u64), WindowInfo>;

/// (dialect, device, window start ns) → `root/provenance` (hex), as one node lists them.
pub type Roots = BTreeMap<(String, u64, u64), String>;

/// GET a URL as text, with a 30 s timeout and a bounded body; a non-2xx status is an error
/// carrying the body.
pub fn get(url: &str) -> anyhow::Result<String> {
    ok_body("GET", url)
}

/// POST to a URL with an empty body, as [`get`] does GET.
pub fn post(url: &str) -> anyhow::Result<String> {
    ok_body("POST", url)
}

fn ok_body(method: &str, url: &str) -> anyhow::Result<String> {
    match request(method, url)? {
        (200..=299, body) => Ok(body),
        (code, body) => bail!("{method} {url}: {code} {body}"),
    }
}

/// One request with a 30 s timeout: the status and the body (bounded), whatever the status;
/// an error only when there is no answer.
fn request(method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    let response = match ureq::request(method, url).timeout(Duration::from_secs(30)).call() {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => bail!("{method} {url}: {e}"),
    };
    let code = response.status();
    let mut body = String::new();
    response.into_reader().take(MAX_BODY).read_to_string(&mut body)?;
    Ok((code, body))
}

/// The sum of every sample of `name` in Prometheus text; `name` may include labels as the
/// exporter writes them (`telemesh_mesh_bytes_total{kind="repair",direction="out"}`).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Process `pid` in `/proc` (Linux only).
fn process(pid: u32) -> Option<procfs::process::Process> {
    procfs::process::Process::new(i32::try_from(pid).ok()?).ok()
}

/// `pid`'s `/proc/<pid>/status` (Linux only).
fn status(pid: u32) -> Option<procfs::process::Status> {
    process(pid)?.status().ok()
}

/// CPU time (user + system) of process `pid`, from `/proc/<pid>/stat`.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = process(pid)?.stat().ok()?;
    let ticks = stat.utime + stat.stime;
    Some(Duration::from_secs_f64(ticks as f64 / procfs::ticks_per_second().max(1) as f64))
}

/// The last `n` lines of a file, for error messages.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Now, Unix ns.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_handed_out_are_never_handed_out_again() {
        // Closed probes make the kernel's picks repeat within a few hundred draws.
        let mut seen = BTreeSet::new();
        for i in 0..2_000 {
            let port = if i % 2 == 0 { free_udp_port() } else { free_tcp_port() }.expect("a port");
            assert!(seen.insert(port), "port {port} handed out twice");
        }
    }

    #[test]
    fn metric_sums_samples_of_exactly_that_name() {
        let text = "# HELP x\nfoo_total 2\nfoo_total_more 100\nfoo_total{a=\"1\"} 3\nbar 7\n";
        assert_eq!(metric(text, "foo_total"), 5.0);
        assert_eq!(metric(text, "foo_total{a=\"1\"}"), 3.0);
        assert_eq!(metric(text, "nothing"), 0.0);
    }

    #[test]
    fn cpu_time_of_this_process_is_read() {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_time(std::process::id()).is_some_and(|t| t > Duration::ZERO));
    }

    #[test]
    fn resident_memory_of_this_process_is_read() {
        let me = status(std::process::id()).expect("/proc/self/status");
        let (peak, now) = (me.vmhwm.expect("VmHWM"), me.vmrss.expect("VmRSS"));
        assert!(now > 0 && peak >= now, "peak {peak} kB, now {now} kB");
    }
}
