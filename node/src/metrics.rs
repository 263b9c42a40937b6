//! Prometheus metrics (`GET /metrics`), via prometheus-client.
//!
//! Hot-path handles (one counter per dialect) are resolved once, so a datagram costs a
//! few atomic adds, not a label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use telemesh_proto::auth;
use telemesh_proto::wire::{self, Dialect};

pub use crate::ingest::dtls::CLIENT_MISMATCH;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DialectLabel {
    dialect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabel {
    dialect: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    dialect: &'static str,
    outcome: &'static str,
}

/// Why a datagram that decoded was still not stored.
pub const STORE_ERROR: &str = "store_error";

/// Every drop reason: malformed datagrams, refused authentication (`auth_*`), store errors.
fn drop_reasons() -> impl Iterator<Item = &'static str> {
    wire::Error::REASONS.into_iter().chain(auth::Refusal::REASONS).chain([STORE_ERROR])
}

/// The node's metrics registry and its handles.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    packets: Family<DialectLabel, Counter>,
    bytes: Family<DialectLabel, Counter>,
    drops: Family<DropLabel, Counter>,
    outcomes: Family<OutcomeLabel, Counter>,
    /// Per-datagram processing time (decode, classify, queue for storage).
    pub processing: Histogram,
    /// Per-stream states held in memory.
    pub streams_in_memory: Gauge,
    /// Stored values that failed to decode (read at scrape time).
    pub corrupt_values: Gauge,
    /// Live tails open (`…/records?follow=true`).
    pub followers: Gauge,
    /// Live tails ended because their client read too slowly.
    pub follow_dropped: Counter,
    pub mesh: crate::mesh::metrics::Metrics,
    pub trust: crate::trust::Metrics,
    pub secure: crate::ingest::dtls::Metrics,
}

/// Counters one listener touches per datagram.
#[derive(Debug, Clone)]
pub struct DialectHandles {
    pub packets: Counter,
    pub bytes: Counter,
    pub new: Counter,
    pub duplicate: Counter,
    pub conflict: Counter,
    drops: Family<DropLabel, Counter>,
    dialect: &'static str,
}

impl DialectHandles {
    /// Counts one dropped datagram.
    pub fn count_drop(&self, reason: &'static str) {
        self.drops.get_or_create(&DropLabel { dialect: self.dialect, reason }).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("telemesh");
        let packets = Family::<DialectLabel, Counter>::default();
        let bytes = Family::<DialectLabel, Counter>::default();
        let drops = Family::<DropLabel, Counter>::default();
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        let processing = Histogram::new(exponential_buckets(1e-7, 2.0, 20));
        let streams_in_memory = Gauge::default();
        let corrupt_values = Gauge::default();
        let followers = Gauge::default();
        let follow_dropped = Counter::default();
        registry.register("http_followers", "Live tails open (records?follow=true)", followers.clone());
        registry.register("http_follow_dropped", "Live tails ended because their client read too slowly", follow_dropped.clone());
        registry.register("packets", "Datagrams received, valid or not", packets.clone());
        registry.register("received_bytes", "Datagram bytes received", bytes.clone());
        registry.register("drops", "Datagrams dropped, by reason", drops.clone());
        registry.register("records", "Valid datagrams by outcome: new, duplicate, conflict", outcomes.clone());
        registry.register(
            "packet_processing_seconds",
            "Time to decode, classify and queue one datagram (its share of its receive batch)",
            processing.clone(),
        );
        registry.register("streams_in_memory", "Per-stream states held in memory", streams_in_memory.clone());
        registry.register("store_corrupt_values", "Stored values that failed to decode and were skipped", corrupt_values.clone());
        // Pre-register every drop reason so dashboards see zeros, not gaps.
        for d in Dialect::ALL {
            for reason in drop_reasons() {
                let _ = drops.get_or_create(&DropLabel { dialect: d.name(), reason });
            }
        }
        let _ = drops.get_or_create(&DropLabel { dialect: Dialect::Secure.name(), reason: CLIENT_MISMATCH });
        // New streams over budget: the plain dialects only (secure devices authenticate).
        for d in [Dialect::Iotstream, Dialect::Tinytelemetry] {
            for reason in [crate::ingest::admit::SOURCE_LIMITED, crate::ingest::admit::DIALECT_LIMITED] {
                let _ = drops.get_or_create(&DropLabel { dialect: d.name(), reason });
            }
        }
        let mesh = crate::mesh::metrics::Metrics::new();
        mesh.register(&mut registry);
        let trust = crate::trust::Metrics::default();
        trust.register(&mut registry);
        let secure = crate::ingest::dtls::Metrics::default();
        secure.register(&mut registry);
        Metrics {
            registry,
            packets,
            bytes,
            drops,
            followers,
            follow_dropped,
            outcomes,
            processing,
            streams_in_memory,
            corrupt_values,
            mesh,
            trust,
            secure,
        }
    }

    pub fn for_dialect(&self, dialect: Dialect) -> DialectHandles {
        let d = dialect.name();
        let outcome = |outcome| self.outcomes.get_or_create(&OutcomeLabel { dialect: d, outcome }).clone();
        DialectHandles {
            packets: self.packets.get_or_create(&DialectLabel { dialect: d }).clone(),
            bytes: self.bytes.get_or_create(&DialectLabel { dialect: d }).clone(),
            new: outcome("new"),
            duplicate: outcome("duplicate"),
            conflict: outcome("conflict"),
            drops: self.drops.clone(),
            dialect: d,
        }
    }

    /// Drops counted so far for `dialect` and `reason`.
    pub fn drops(&self, dialect: Dialect, reason: &'static str) -> u64 {
        self.drops.get_or_create(&DropLabel { dialect: dialect.name(), reason }).get()
    }

    /// All drops for `dialect`, whatever the reason.
    pub fn total_drops(&self, dialect: Dialect) -> u64 {
        drop_reasons().chain([CLIENT_MISMATCH]).map(|r| self.drops(dialect, r)).sum()
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
