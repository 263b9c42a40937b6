//! Prometheus metrics (`GET /metrics`), via prometheus-client; every name is in
//! `docs/api.md`.
//!
//! Hot-path handles (one counter per dialect) are resolved once, so a datagram costs a
//! few atomic adds, not a label lookup. What is read at scrape time (the store's size,
//! `/proc`) is read by the handler, off the ingest path and without the stream table.
//! The classic text format or OpenMetrics, as the scraper asks ([`exposition`]).

pub mod exposition;
pub mod process;

use std::sync::atomic::Ordering;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use telemesh_proto::auth;
use telemesh_proto::stream;
use telemesh_proto::wire::{self, Dialect};

pub use crate::ingest::dtls::CLIENT_MISMATCH;

pub use self::exposition::Format;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DialectLabel {
    dialect: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartLabel {
    part: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabel {
    version: &'static str,
}

/// An HTTP request's route (the template it matched, or `unmatched`), method and status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabel {
    route: String,
    method: &'static str,
    code: u16,
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
/// A datagram that decoded while the records waiting for the store already hold
/// [`crate::ingest::streams::MAX_UNFLUSHED_BYTES`]: the store is behind, or failing.
pub const STORE_BEHIND: &str = "store_behind";
/// A datagram of a stream not in memory while [`crate::ingest::streams::MAX_LEAVING`]
/// streams that left memory still wait for the store ([`crate::ingest::streams::Table::may_enter`]).
pub const STREAMS_FULL: &str = "streams_full";

/// Every drop reason: malformed datagrams, refused authentication (`auth_*`), store errors
/// and a store too slow for the records waiting or for the streams leaving memory.
fn drop_reasons() -> impl Iterator<Item = &'static str> {
    wire::Error::REASONS.into_iter().chain(auth::Refusal::REASONS).chain([STORE_ERROR, STORE_BEHIND, STREAMS_FULL])
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
    /// Stored values that failed to decode: the store's running total, read at scrape time.
    corrupt_values: Counter,
    /// Bytes on disk by part of the store (`sled`, `sealed`, `wal`), read at scrape time.
    disk_bytes: Family<PartLabel, Gauge>,
    /// Records in sealed windows, read at scrape time.
    stored_records: Gauge,
    /// Records in memory waiting to be written, and records in the write-ahead log waiting
    /// for their window's seal, as of the start of the last flush.
    pub pending_records: Gauge,
    pub wal_records: Gauge,
    /// Each flush's duration, and flushes that failed.
    pub flush_seconds: Histogram,
    pub flush_failures: Counter,
    /// Devices heard here, and those of them silent for longer than `stream_idle`, by dialect.
    devices: Family<DialectLabel, Gauge>,
    devices_stale: Family<DialectLabel, Gauge>,
    /// Live tails open (`…/records?follow=true`).
    pub followers: Gauge,
    /// Live tails ended because their client read too slowly.
    pub follow_dropped: Counter,
    pub http: Http,
    /// The kernel's drops on the UDP listeners.
    pub udp: process::Udp,
    streams: StreamFamilies,
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
    gaps: Counter,
    skipped: Counter,
    reordered: Counter,
    late: Counter,
    reboots: Counter,
    drops: Family<DropLabel, Counter>,
    dialect: &'static str,
}

impl DialectHandles {
    /// Counts one dropped datagram.
    pub fn count_drop(&self, reason: &'static str) {
        self.drops.get_or_create(&DropLabel { dialect: self.dialect, reason }).inc();
    }

    /// Adds what one datagram added to its stream's counters (`before` → `after`): gaps,
    /// sequence numbers skipped, reordered and late arrivals, reboots.
    pub fn count_stream(&self, before: &stream::Counters, after: &stream::Counters) {
        for (counter, b, a) in [
            (&self.gaps, before.gaps, after.gaps),
            // `missing` falls when a skipped number arrives late; only its rises are skips.
            (&self.skipped, before.missing, after.missing),
            (&self.reordered, before.reordered, after.reordered),
            (&self.late, before.late, after.late),
            (&self.reboots, before.reboots, after.reboots),
        ] {
            if a > b {
                counter.inc_by(a - b);
            }
        }
    }
}

/// Per-dialect totals of what streams saw, one family each (summing them means nothing).
#[derive(Debug, Clone, Default)]
struct StreamFamilies {
    gaps: Family<DialectLabel, Counter>,
    skipped: Family<DialectLabel, Counter>,
    reordered: Family<DialectLabel, Counter>,
    late: Family<DialectLabel, Counter>,
    reboots: Family<DialectLabel, Counter>,
}

/// HTTP requests by route, method and status (`telemesh_http_*`): the API's middleware
/// ([`crate::api::meter`]) counts and times each one.
#[derive(Debug, Clone)]
pub struct Http {
    requests: Family<HttpLabel, Counter>,
    seconds: Family<HttpLabel, Histogram, fn() -> Histogram>,
}

/// A label value for any method: the ones the API serves, or `other`.
fn method_label(method: &str) -> &'static str {
    ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"].into_iter().find(|m| *m == method).unwrap_or("other")
}

impl Http {
    fn new() -> Http {
        fn histogram() -> Histogram {
            // 0.5 ms to 16 s.
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        }
        Http { requests: Family::default(), seconds: Family::new_with_constructor(histogram) }
    }

    /// Counts one request answered with `code` after `took`; `route` is the route template
    /// it matched (`None`: none did).
    pub fn observe(&self, route: Option<&str>, method: &str, code: u16, took: Duration) {
        let label = HttpLabel { route: route.unwrap_or("unmatched").to_owned(), method: method_label(method), code };
        self.requests.get_or_create(&label).inc();
        self.seconds.get_or_create(&label).observe(took.as_secs_f64());
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut root = Registry::default();
        root.register_collector(Box::new(process::Process));
        let registry = root.sub_registry_with_prefix("telemesh");
        let packets = Family::<DialectLabel, Counter>::default();
        let bytes = Family::<DialectLabel, Counter>::default();
        let drops = Family::<DropLabel, Counter>::default();
        let outcomes = Family::<OutcomeLabel, Counter>::default();
        let processing = Histogram::new(exponential_buckets(1e-7, 2.0, 20));
        let streams_in_memory = Gauge::default();
        let corrupt_values = Counter::default();
        let followers = Gauge::default();
        let follow_dropped = Counter::default();
        let build = Family::<BuildLabel, Gauge>::default();
        build.get_or_create(&BuildLabel { version: env!("CARGO_PKG_VERSION") }).set(1);
        registry.register("build_info", "The node's build: always 1, its version in the label", build);
        let help = "Live tails (records?follow=true) and summary feeds (summary?follow=true) open";
        registry.register("http_followers", help, followers.clone());
        registry.register("http_follow_dropped", "Live tails ended because their client read too slowly", follow_dropped.clone());
        let http = Http::new();
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status code",
            http.requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from an HTTP request's arrival to its answer's head, by route template, method and status code",
            http.seconds.clone(),
        );
        registry.register("packets", "Datagrams received, valid or not", packets.clone());
        registry.register("received_bytes", "Datagram bytes received", bytes.clone());
        registry.register("drops", "Datagrams dropped, by reason", drops.clone());
        registry.register("records", "Valid datagrams by outcome: new, duplicate, conflict", outcomes.clone());
        let streams = StreamFamilies::default();
        registry.register(
            "stream_gaps",
            "Times a stream's sequence jumped ahead by more than one, by dialect",
            streams.gaps.clone(),
        );
        registry.register(
            "stream_skipped",
            "Sequence numbers skipped by those gaps when they were seen (some may arrive later), by dialect",
            streams.skipped.clone(),
        );
        registry.register(
            "stream_reordered",
            "Records that arrived behind a later one, within the reorder window",
            streams.reordered.clone(),
        );
        registry.register(
            "stream_late",
            "Records that arrived behind a later one, beyond the reorder window (still stored)",
            streams.late.clone(),
        );
        registry.register(
            "stream_reboots",
            "Device reboots seen: an INIT, or the sequence restarting as device time moves on",
            streams.reboots.clone(),
        );
        registry.register(
            "packet_processing_seconds",
            "Time to decode, classify and queue one datagram (its share of its receive batch)",
            processing.clone(),
        );
        registry.register(
            "streams_in_memory",
            "Per-stream states held in memory, as of the last flush",
            streams_in_memory.clone(),
        );
        let devices = Family::<DialectLabel, Gauge>::default();
        let devices_stale = Family::<DialectLabel, Gauge>::default();
        registry.register("devices", "Devices this node has heard, by dialect, as of the last flush", devices.clone());
        registry.register(
            "devices_stale",
            "Devices this node has heard that sent nothing for longer than stream_idle, as of the last flush",
            devices_stale.clone(),
        );
        registry.register(
            "store_corrupt_values",
            "Stored values that failed to decode and were skipped",
            corrupt_values.clone(),
        );
        let disk_bytes = Family::<PartLabel, Gauge>::default();
        registry.register(
            "store_disk_bytes",
            "Bytes the store takes on disk: sled (index, chunks, states), sealed (segment files), \
             wal (write-ahead log)",
            disk_bytes.clone(),
        );
        let stored_records = Gauge::default();
        registry.register(
            "store_records",
            "Records in sealed windows: the merged history, as far as sealed",
            stored_records.clone(),
        );
        let pending_records = Gauge::default();
        registry.register(
            "store_pending_records",
            "Records in memory waiting to be written, at the start of the last flush",
            pending_records.clone(),
        );
        let wal_records = Gauge::default();
        registry.register(
            "store_wal_records",
            "Records in the write-ahead log waiting for their window's seal, at the start of the last flush",
            wal_records.clone(),
        );
        // 1 ms to 16 s.
        let flush_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "flush_seconds",
            "Time to write, seal and sync what the last interval queued",
            flush_seconds.clone(),
        );
        let flush_failures = Counter::default();
        registry.register(
            "flush_failures",
            "Flushes that failed (their records stay in memory and are retried)",
            flush_failures.clone(),
        );
        let udp = process::Udp::default();
        registry.register_collector(Box::new(udp.clone()));
        // Pre-register every drop reason so dashboards see zeros, not gaps.
        for d in Dialect::ALL {
            for reason in drop_reasons() {
                let _ = drops.get_or_create(&DropLabel { dialect: d.name(), reason });
            }
            let label = DialectLabel { dialect: d.name() };
            for family in [&streams.gaps, &streams.skipped, &streams.reordered, &streams.late, &streams.reboots] {
                let _ = family.get_or_create(&label);
            }
            let _ = devices.get_or_create(&label);
            let _ = devices_stale.get_or_create(&label);
        }
        for part in ["sled", "sealed", "wal"] {
            let _ = disk_bytes.get_or_create(&PartLabel { part });
        }
        let _ = drops.get_or_create(&DropLabel { dialect: Dialect::Secure.name(), reason: CLIENT_MISMATCH });
        // New streams over budget: the plain dialects only (secure devices authenticate).
        for d in [Dialect::Iotstream, Dialect::Tinytelemetry] {
            for reason in [crate::ingest::admit::SOURCE_LIMITED, crate::ingest::admit::DIALECT_LIMITED] {
                let _ = drops.get_or_create(&DropLabel { dialect: d.name(), reason });
            }
        }
        let mesh = crate::mesh::metrics::Metrics::new();
        mesh.register(registry);
        let trust = crate::trust::Metrics::default();
        trust.register(registry);
        let secure = crate::ingest::dtls::Metrics::default();
        secure.register(registry);
        Metrics {
            registry: root,
            packets,
            bytes,
            drops,
            followers,
            follow_dropped,
            outcomes,
            streams,
            processing,
            streams_in_memory,
            corrupt_values,
            disk_bytes,
            stored_records,
            pending_records,
            wal_records,
            flush_seconds,
            flush_failures,
            devices,
            devices_stale,
            http,
            udp,
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
            gaps: self.streams.gaps.get_or_create(&DialectLabel { dialect: d }).clone(),
            skipped: self.streams.skipped.get_or_create(&DialectLabel { dialect: d }).clone(),
            reordered: self.streams.reordered.get_or_create(&DialectLabel { dialect: d }).clone(),
            late: self.streams.late.get_or_create(&DialectLabel { dialect: d }).clone(),
            reboots: self.streams.reboots.get_or_create(&DialectLabel { dialect: d }).clone(),
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

    /// Devices heard here and, of them, those silent too long, for `dialect`.
    pub fn set_devices(&self, dialect: Dialect, heard: usize, stale: usize) {
        let label = DialectLabel { dialect: dialect.name() };
        self.devices.get_or_create(&label).set(heard as i64);
        self.devices_stale.get_or_create(&label).set(stale as i64);
    }

    /// The text exposition in `format`, with what is read at scrape time taken from
    /// `store` first, and `sealed_records` the records its sealed windows hold. Reads the
    /// disk: call it off the async runtime.
    pub fn scrape(&self, store: &dyn crate::store::Store, sealed_records: u64, format: Format) -> String {
        // The store's count only grows; the larger of two racing scrapes wins.
        self.corrupt_values.inner().fetch_max(store.corrupt_values(), Ordering::Relaxed);
        for (part, bytes) in store.disk_bytes() {
            self.disk_bytes.get_or_create(&PartLabel { part }).set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        self.stored_records.set(i64::try_from(sealed_records).unwrap_or(i64::MAX));
        self.encode(format)
    }

    /// The text exposition in `format`, as the metrics stand.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Classic => exposition::to_classic(&out),
        }
    }
}
