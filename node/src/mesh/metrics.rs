//! The mesh's metrics, registered under `telemesh_mesh_*` (`docs/api.md`, "/metrics").

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// The reasons of `telemesh_mesh_rejects_total`.
const REJECTS: [&str; 13] = [
    "gossip_rejected",
    "busy",
    "events_dropped",
    "announcement_ignored",
    "index_refused",
    "session_abandoned",
    "request_failed",
    "symbol_rejected",
    "rows_lost",
    "rows_stale",
    "offer_failed",
    "bad_signature",
    "new_stream_deferred",
];

/// The mesh's metrics (`docs/api.md`, "/metrics").
#[derive(Debug)]
pub struct Metrics {
    /// Bytes on the wire by kind (repair, sync, provenance, gossip, offer, statements) and
    /// direction.
    pub bytes: Family<BytesLabel, Counter>,
    pub symbols_sent: Counter,
    pub symbols_received: Counter,
    pub symbols_used: Counter,
    pub decode_failures: Counter,
    pub verification_failures: Counter,
    pub windows_repaired: Counter,
    pub records_repaired: Counter,
    /// Repaired records whose (time, seq) this node held with other content.
    pub conflicts_repaired: Counter,
    /// Windows repaired or found covered from an announced index, with no index request.
    pub windows_from_gossip: Counter,
    pub blames: Family<ReasonLabel, Counter>,
    /// `heard_by`/`proved_by` entries a proof asked of this node could not back with a
    /// signed statement.
    pub unbacked: Counter,
    /// Inputs from peers refused or dropped, by reason.
    pub rejects: Family<ReasonLabel, Counter>,
    pub peers: Gauge,
    /// Peers that came up (connected and identified as of this mesh), and went down.
    pub peer_joins: Counter,
    pub peer_leaves: Counter,
    pub windows: Gauge,
    pub windows_wanted: Gauge,
    /// Seconds from a root's first announcement to its window being repaired here.
    pub repair_seconds: Histogram,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct BytesLabel {
    pub kind: &'static str,
    pub direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            bytes: Family::default(),
            symbols_sent: Counter::default(),
            symbols_received: Counter::default(),
            symbols_used: Counter::default(),
            decode_failures: Counter::default(),
            verification_failures: Counter::default(),
            windows_repaired: Counter::default(),
            records_repaired: Counter::default(),
            conflicts_repaired: Counter::default(),
            windows_from_gossip: Counter::default(),
            blames: Family::default(),
            unbacked: Counter::default(),
            rejects: Family::default(),
            peers: Gauge::default(),
            peer_joins: Counter::default(),
            peer_leaves: Counter::default(),
            windows: Gauge::default(),
            windows_wanted: Gauge::default(),
            repair_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
        }
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register("mesh_bytes", "Mesh bytes on the wire (payload and length prefix), by kind and direction", self.bytes.clone());
        registry.register("mesh_symbols_sent", "RaptorQ repair symbols served to peers", self.symbols_sent.clone());
        registry.register("mesh_symbols_received", "RaptorQ repair symbols received", self.symbols_received.clone());
        registry.register("mesh_symbols_used", "Repair symbols received and kept for a decode", self.symbols_used.clone());
        registry.register("mesh_decode_failures", "Decodes that needed more symbols than missing slots", self.decode_failures.clone());
        registry.register(
            "mesh_verification_failures",
            "Rebuilt windows or index proofs that did not match the announced root",
            self.verification_failures.clone(),
        );
        registry.register("mesh_windows_repaired", "Windows repaired from peers", self.windows_repaired.clone());
        registry.register("mesh_records_repaired", "Records repaired from peers", self.records_repaired.clone());
        registry.register(
            "mesh_conflicts_repaired",
            "Records repaired from peers that another record held here shares (time, seq) with: another version",
            self.conflicts_repaired.clone(),
        );
        registry.register(
            "mesh_windows_from_gossip",
            "Windows repaired or found covered from an announced compact index, with no index request",
            self.windows_from_gossip.clone(),
        );
        registry.register("mesh_blames", "Peers blamed for bad data, by reason", self.blames.clone());
        registry.register(
            "mesh_unbacked",
            "heard_by and proved_by entries that a proof asked of this node could not back with a signed statement",
            self.unbacked.clone(),
        );
        registry.register(
            "mesh_rejects",
            "Peer inputs refused or dropped: gossip_rejected, busy, events_dropped, announcement_ignored, index_refused, session_abandoned, request_failed, symbol_rejected",
            self.rejects.clone(),
        );
        registry.register("mesh_peers", "Connected peers of this mesh", self.peers.clone());
        let joins = self.peer_joins.clone();
        registry.register("mesh_peer_joins", "Peers that connected and were identified as of this mesh", joins);
        registry.register("mesh_peer_leaves", "Peers whose last connection closed", self.peer_leaves.clone());
        registry.register("mesh_windows", "Sealed windows this node holds", self.windows.clone());
        registry.register("mesh_windows_wanted", "Windows a peer holds a root of that this node lacks", self.windows_wanted.clone());
        registry.register(
            "mesh_repair_seconds",
            "Time from a root's first announcement to its window being repaired here",
            self.repair_seconds.clone(),
        );
        for reason in REJECTS {
            let _ = self.rejects.get_or_create(&ReasonLabel { reason });
        }
        for kind in ["repair", "sync", "provenance", "gossip", "offer", "statements"] {
            for direction in ["in", "out"] {
                let _ = self.bytes.get_or_create(&BytesLabel { kind, direction });
            }
        }
    }

    /// Counts a repair-protocol message: its bytes and the 4-byte length prefix.
    pub(super) fn count_bytes(&self, kind: &'static str, direction: &'static str, n: usize) {
        self.bytes.get_or_create(&BytesLabel { kind, direction }).inc_by(n as u64 + 4);
    }

    pub(super) fn count_gossip(&self, direction: &'static str, n: usize) {
        self.bytes.get_or_create(&BytesLabel { kind: "gossip", direction }).inc_by(n as u64);
    }

    pub(super) fn reject(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.rejects.get_or_create(&ReasonLabel { reason }).inc_by(n);
        }
    }
}
