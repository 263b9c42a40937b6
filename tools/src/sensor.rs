//! The sensor simulator behind `telemesh-sensor`: many devices in one process, speaking
//! IoTStream v1 (the IoTStream v1 Mini-RFC), TinyTelemetry v1 (the TinyTelemetry v1 design
//! document) or the secure frame (the secure telemetry collection README) over
//! DTLS 1.2 ([`crate::dtls`]).
//!
//! Two layers, kept apart so that tests and the testnet can reuse the first without
//! sockets or sleeping:
//!
//! * [`Simulator`] — a pure, deterministic generator. Given a [`Config`] (seed and clock
//!   origin included) it yields every device's [`Packet`]s in schedule order, each with the
//!   exact datagram bytes and its `due` time since the start.
//! * [`run`] — paces that schedule against the real clock, sends each datagram to every
//!   destination over a std `UdpSocket`, writes the ground-truth log (one [`TruthRecord`]
//!   per packet, NDJSON), and returns a [`Summary`].
//!
//! # Device behaviour
//!
//! * **IoTStream**: a device boots by sending INIT with seq 0 (no payload, batch 0); then
//!   at each reporting interval it sends DATA with probability 0.8 (a batch of `batch`
//!   readings, default 5, plausible temperatures 20–30 °C) or HEARTBEAT (no payload).
//!   seq increments per packet and wraps at 65536. The timestamp is Unix milliseconds mod
//!   2^32 (the Mini-RFC's latency measurement and worked example; `docs/design.md`), or Unix
//!   seconds by option.
//! * **TinyTelemetry**: no INIT; DATA/HEARTBEAT with the same 80/20 rule; DATA carries
//!   `batch` readings (default 1) whose sensor type cycles temperature → humidity →
//!   voltage with plausible values (20–30 °C, 30–70 %, 3.0–3.6 V); seq is a u32 from 0;
//!   the timestamp is Unix seconds.
//! * **Secure** (the secure README): no INIT; DATA (80 %) carries the README's payload
//!   `CPU=72.3;MEM=41.2;TEMP=67.5`, each value a bounded random walk per device with one
//!   decimal (CPU and MEM 1–99 %, TEMP 35–90 °C); HEARTBEAT (20 %) is a frame with an empty
//!   payload; seq is a u64 from 1; the timestamp is Unix nanoseconds. Each device speaks
//!   over its own DTLS session with each destination, with a certificate that names it
//!   ([`run_secure`]); one frame is one DTLS record.
//!
//! # Schedule
//!
//! * Interval mode (default): each device boots at a random offset in `[0, interval)` —
//!   so that a hundred devices do not all fire in the same millisecond — and then sends
//!   one packet per `interval × (1 ± jitter)` (jitter 10 %, as in the Mini-RFC).
//! * Rate mode (`rate`): `rate` packets per second in total, the devices served
//!   round-robin (device *i*'s *j*-th packet is packet number `j·n + i`, due at that
//!   number / `rate`); no jitter. For load tests.
//!
//! Each device draws its packet contents (kinds, readings) and its jitter from two
//! separate ChaCha8 streams keyed by the seed and the device id, so a device's contents
//! do not depend on which other devices are simulated or on the schedule mode.
//!
//! # Clock
//!
//! With `start_time_ms` set, device time is `start_time_ms + due`: the whole packet
//! stream — bytes included — is a function of the configuration. Without it, the
//! [`Simulator`] iterator uses the real clock at construction as the origin, and [`run`]
//! stamps each packet with the real clock at the moment it sends it.
//!
//! # Test hooks
//!
//! * `start_seq`: the first seq after INIT (IoTStream) or the first seq (TinyTelemetry) of
//!   a device's first boot, e.g. 65534 to exercise the 16-bit wraparound.
//! * `reboot_after = N`: every N packets (the INIT included) a device reboots. IoTStream:
//!   it sends INIT with seq 0 again and numbers on from 1. TinyTelemetry (no INIT in the
//!   dialect): its seq restarts at 0, as a device whose counter lives in RAM would. The
//!   device clock keeps running, so a new boot's timestamps are later than the last one's.
//!   A reboot starts from seq 0/1, not from `start_seq`.
//!
//! `count` and the truth log count *packets*: one per device transmission, INITs
//! included, however many destinations hear it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use telemesh_proto::auth;
use telemesh_proto::record::{Readings, Record, TimestampUnit as RecordTimestampUnit};
use telemesh_proto::wire::{self, iotstream, secure, tinytelemetry, Dialect};
use tinytelemetry::SensorType;

use crate::dtls;

/// Probability that a reporting interval produces DATA rather than HEARTBEAT (the
/// Mini-RFC's message type distribution).
pub const DATA_PROBABILITY: f64 = 0.8;
/// Default interval jitter: ±10 % (the Mini-RFC's).
pub const DEFAULT_JITTER: f64 = 0.1;
/// Default IoTStream batch: five readings per DATA (the Mini-RFC's payload format and
/// batching).
pub const IOTSTREAM_DEFAULT_BATCH: usize = 5;
/// Default TinyTelemetry batch: one reading per DATA (the TinyTelemetry document's `batch_size`
/// default).
pub const TINYTELEMETRY_DEFAULT_BATCH: usize = 1;
/// Default collector port for IoTStream (the Mini-RFC's).
pub const IOTSTREAM_DEFAULT_PORT: u16 = 5005;
/// Default collector port for TinyTelemetry (its design document's).
pub const TINYTELEMETRY_DEFAULT_PORT: u16 = 5000;
/// Default collector port for the secure dialect (DTLS).
pub const SECURE_DEFAULT_PORT: u16 = 5006;
/// How long [`run_secure`] waits for every DTLS handshake before it starts sending, unless told.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest single sleep in [`run`], so that a stop request is seen promptly.
const MAX_SLEEP: Duration = Duration::from_millis(50);
/// How often [`run`] flushes the truth log while running (so it can be tailed).
const TRUTH_FLUSH_EVERY: Duration = Duration::from_secs(1);

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// Why the simulator could not start or stopped with a failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An option has a bad value or does not fit the others.
    #[error("invalid {option}: {why}")]
    Invalid { option: &'static str, why: String },
    /// A DTLS client could not be set up, or a handshake failed.
    #[error("{0}")]
    Dtls(#[from] dtls::Error),
    /// A socket or file operation failed.
    #[error("{what}: {err}")]
    Io { what: String, err: io::Error },
    /// A truth-log line could not be read back.
    #[error("{path}:{line}: {why}")]
    BadTruth {
        path: String,
        line: usize,
        why: String,
    },
}

impl Error {
    /// True for errors in the user's input (the CLI exits with code 2 for these).
    pub fn is_usage(&self) -> bool {
        matches!(self, Error::Invalid { .. } | Error::Dtls(dtls::Error::File { .. } | dtls::Error::WrongDevice { .. }))
    }

    fn invalid(option: &'static str, why: impl Into<String>) -> Self {
        Error::Invalid {
            option,
            why: why.into(),
        }
    }

    fn io(what: impl Into<String>, err: io::Error) -> Self {
        Error::Io {
            what: what.into(),
            err,
        }
    }
}

/// A command-line value that does not parse (device list, duration, address, dialect).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

// ---------------------------------------------------------------------------------------
// Parsing helpers (used by the CLI, public for tests and the testnet)
// ---------------------------------------------------------------------------------------

/// Parses a device list: one id (`1001`), a range (`1001-1100`, inclusive) or a comma
/// list of both (`1,5,9-12`). Ids are 0..=65535; an id may not be listed twice.
pub fn parse_devices(s: &str) -> Result<Vec<u16>, ParseError> {
    let mut devices = Vec::new();
    let mut seen = HashSet::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(ParseError(format!("empty item in device list {s:?}")));
        }
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (parse_device_id(a)?, parse_device_id(b)?),
            None => {
                let id = parse_device_id(item)?;
                (id, id)
            }
        };
        if lo > hi {
            return Err(ParseError(format!("device range {item:?} runs backwards")));
        }
        for id in lo..=hi {
            if !seen.insert(id) {
                return Err(ParseError(format!("device {id} is listed twice")));
            }
            devices.push(id);
        }
    }
    Ok(devices)
}

fn parse_device_id(s: &str) -> Result<u16, ParseError> {
    let s = s.trim();
    s.parse::<u16>().map_err(|_| {
        ParseError(format!(
            "bad device id {s:?} (expected an integer 0..=65535)"
        ))
    })
}

/// Parses a duration: a number with a unit `ns`, `us`, `ms`, `s`, `m` or `h` (`1s`,
/// `250ms`, `1.5s`, `2m`), or a bare number of seconds (`5`).
pub fn parse_duration(s: &str) -> Result<Duration, ParseError> {
    let t = s.trim();
    let bad = || {
        ParseError(format!(
            "bad duration {s:?} (expected e.g. 1s, 500ms, 2.5s, 1m)"
        ))
    };
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hr" | "hrs" => 3600.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| bad())
}

/// Parses a destination `host:port` (`127.0.0.1:5005`, `[::1]:5005`, `localhost:5005`).
pub fn parse_addr(s: &str) -> Result<SocketAddr, ParseError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || {
        ParseError(format!(
            "bad address {s:?} (expected host:port, e.g. 127.0.0.1:5005)"
        ))
    };
    s.to_socket_addrs()
        .map_err(|_| bad())?
        .next()
        .ok_or_else(bad)
}

/// Parses a dialect name: `iotstream`, `tinytelemetry` or `secure`.
pub fn parse_dialect(s: &str) -> Result<Dialect, ParseError> {
    s.parse::<Dialect>()
        .map_err(|_| ParseError(format!("unknown dialect {s:?} (expected iotstream, tinytelemetry or secure)")))
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// The unit of an IoTStream timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampUnit {
    /// Unix milliseconds mod 2^32 (the default: the Mini-RFC's latency measurement and
    /// worked example).
    Millis,
    /// Unix seconds (the Mini-RFC's header table; TinyTelemetry always uses this).
    Seconds,
}

impl FromStr for TimestampUnit {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ms" | "millis" | "milliseconds" => Ok(TimestampUnit::Millis),
            "s" | "secs" | "seconds" => Ok(TimestampUnit::Seconds),
            _ => Err(ParseError(format!(
                "bad timestamp unit {s:?} (expected ms or s)"
            ))),
        }
    }
}

/// Everything the simulator can be told. `Config::default()` is one IoTStream device
/// (1001) reporting every second to 127.0.0.1:5005 until stopped.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `Iotstream`, `Tinytelemetry` or `Secure` (which [`run_secure`] sends).
    pub dialect: Dialect,
    /// Device ids to simulate, in this order (ties in the schedule go to the earlier one).
    pub devices: Vec<u16>,
    /// Reporting interval per device (ignored when `rate` is set).
    pub interval: Duration,
    /// Interval jitter as a fraction: each gap is `interval × (1 ± jitter)`, 0 ≤ jitter < 1.
    pub jitter: f64,
    /// Readings per DATA packet; `None` = the dialect's default (5 / 1).
    pub batch: Option<usize>,
    /// IoTStream timestamp unit; `None` = milliseconds. TinyTelemetry accepts only seconds.
    pub timestamp_unit: Option<TimestampUnit>,
    /// First seq after INIT (IoTStream, default 1) / first seq (TinyTelemetry, default 0).
    pub start_seq: Option<u32>,
    /// Reboot every N packets (INIT included); `None` = never.
    pub reboot_after: Option<u64>,
    /// Total packets per second across all devices, round-robin; overrides `interval`.
    pub rate: Option<f64>,
    /// Packets per device, then that device stops.
    pub count: Option<u64>,
    /// Stop after this much schedule time (and, in [`run`], wall time).
    pub duration: Option<Duration>,
    /// Seed for contents and jitter; `None` = a random one (reported in the summary).
    pub seed: Option<u64>,
    /// Fixed clock origin, Unix ms: device time = origin + due. `None` = the real clock.
    pub start_time_ms: Option<u64>,
    /// Destinations; every packet goes to each. Empty = the dialect's default on 127.0.0.1.
    pub to: Vec<SocketAddr>,
    /// Where [`run`] writes the NDJSON ground-truth log.
    pub truth: Option<PathBuf>,
    /// [`run`] sends nothing and does not wait: it only writes the truth log.
    pub dry_run: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dialect: Dialect::Iotstream,
            devices: vec![1001],
            interval: Duration::from_secs(1),
            jitter: DEFAULT_JITTER,
            batch: None,
            timestamp_unit: None,
            start_seq: None,
            reboot_after: None,
            rate: None,
            count: None,
            duration: None,
            seed: None,
            start_time_ms: None,
            to: Vec::new(),
            truth: None,
            dry_run: false,
        }
    }
}

impl Config {
    /// Checks every option on its own and against the others.
    pub fn validate(&self) -> Result<(), Error> {
        let flavor = Flavor::of(self.dialect)?;
        if self.devices.is_empty() {
            return Err(Error::invalid("--devices", "no devices"));
        }
        let mut seen = HashSet::new();
        for &id in &self.devices {
            if !seen.insert(id) {
                return Err(Error::invalid(
                    "--devices",
                    format!("device {id} is listed twice"),
                ));
            }
        }
        if flavor == Flavor::Tiny && seen.contains(&0) {
            return Err(Error::invalid(
                "--devices",
                "device id 0 is invalid in tinytelemetry",
            ));
        }
        if self.rate.is_none() && self.interval.is_zero() {
            return Err(Error::invalid("--interval", "must be greater than zero"));
        }
        if !(self.jitter.is_finite() && (0.0..1.0).contains(&self.jitter)) {
            return Err(Error::invalid(
                "--jitter",
                format!("must be in 0 ≤ jitter < 1, got {}", self.jitter),
            ));
        }
        if let Some(batch) = self.batch {
            let max = flavor.max_batch();
            if !(1..=max).contains(&batch) {
                return Err(Error::invalid(
                    "--batch",
                    format!("must be 1..={max} for {}, got {batch}", self.dialect),
                ));
            }
        }
        if flavor == Flavor::Secure {
            let not = |option, why: &str| Err(Error::invalid(option, format!("not with --dialect secure ({why})")));
            if self.batch.is_some() {
                return not("--batch", "its payload is always CPU, MEM and TEMP");
            }
            if self.timestamp_unit.is_some() {
                return not("--timestamp-unit", "its timestamps are Unix nanoseconds");
            }
            if self.reboot_after.is_some() {
                return not("--reboot-after", "a reboot would be a new DTLS session, which is not simulated");
            }
        }
        if flavor == Flavor::Tiny && self.timestamp_unit == Some(TimestampUnit::Millis) {
            return Err(Error::invalid(
                "--timestamp-unit",
                "tinytelemetry timestamps are Unix seconds",
            ));
        }
        if let (Flavor::Iot, Some(seq)) = (flavor, self.start_seq) {
            if seq > u32::from(u16::MAX) {
                return Err(Error::invalid(
                    "--start-seq",
                    format!("iotstream seq is 16-bit (0..=65535), got {seq}"),
                ));
            }
        }
        if self.reboot_after == Some(0) {
            return Err(Error::invalid("--reboot-after", "must be at least 1"));
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::invalid(
                    "--rate",
                    format!("must be a positive number of packets/s, got {rate}"),
                ));
            }
        }
        if self.count == Some(0) {
            return Err(Error::invalid("--count", "must be at least 1"));
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(Error::invalid("--duration", "must be greater than zero"));
        }
        if self.dry_run && self.count.is_none() && self.duration.is_none() {
            return Err(Error::invalid(
                "--dry-run",
                "needs --count or --duration (a dry run does not wait, so it would never end)",
            ));
        }
        Ok(())
    }

    /// Readings per DATA packet, the dialect's default applied.
    pub fn batch_size(&self) -> usize {
        self.batch.unwrap_or(match self.dialect {
            Dialect::Tinytelemetry => TINYTELEMETRY_DEFAULT_BATCH,
            _ => IOTSTREAM_DEFAULT_BATCH,
        })
    }

    /// The timestamp unit in force.
    pub fn effective_timestamp_unit(&self) -> TimestampUnit {
        match self.dialect {
            Dialect::Tinytelemetry => TimestampUnit::Seconds,
            _ => self.timestamp_unit.unwrap_or(TimestampUnit::Millis),
        }
    }

    /// Where packets go: `to`, or the dialect's default collector on 127.0.0.1.
    pub fn destinations(&self) -> Vec<SocketAddr> {
        if !self.to.is_empty() {
            return self.to.clone();
        }
        let port = match self.dialect {
            Dialect::Tinytelemetry => TINYTELEMETRY_DEFAULT_PORT,
            Dialect::Secure => SECURE_DEFAULT_PORT,
            _ => IOTSTREAM_DEFAULT_PORT,
        };
        vec![SocketAddr::from(([127, 0, 0, 1], port))]
    }
}

/// The dialects the simulator speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Iot,
    Tiny,
    Secure,
}

impl Flavor {
    fn of(dialect: Dialect) -> Result<Self, Error> {
        match dialect {
            Dialect::Iotstream => Ok(Flavor::Iot),
            Dialect::Tinytelemetry => Ok(Flavor::Tiny),
            Dialect::Secure => Ok(Flavor::Secure),
        }
    }
    fn dialect(self) -> Dialect {
        match self {
            Flavor::Iot => Dialect::Iotstream,
            Flavor::Tiny => Dialect::Tinytelemetry,
            Flavor::Secure => Dialect::Secure,
        }
    }
    fn max_batch(self) -> usize {
        match self {
            Flavor::Iot => iotstream::MAX_BATCH,
            Flavor::Tiny => tinytelemetry::MAX_COUNT,
            Flavor::Secure => Metric::ALL.len(),
        }
    }
    /// The first seq after a (re)boot's INIT, or the first seq at all.
    fn boot_seq(self) -> u64 {
        match self {
            Flavor::Iot | Flavor::Secure => 1,
            Flavor::Tiny => 0,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packets and truth records
// ---------------------------------------------------------------------------------------

/// What a packet is: the node's own record kind (`"init"`, `"data"`, `"heartbeat"`).
pub use telemesh_proto::record::Kind;

/// One reading. In the truth log an IoTStream reading is a bare number, a TinyTelemetry
/// reading is `{"sensor":"temperature","value":21.5}` and a secure one
/// `{"key":"CPU","value":72.3}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Reading {
    /// A TinyTelemetry reading: what it measures and the value.
    Typed {
        #[serde(with = "sensor_name")]
        sensor: SensorType,
        value: f32,
    },
    /// A secure-frame reading: `KEY=VALUE` with one of the secure README's keys.
    Keyed { key: Metric, value: f64 },
    /// An IoTStream reading (the dialect carries no type).
    Plain(f32),
}

impl Reading {
    /// The value, whatever the dialect (a secure reading's f64 rounded to f32).
    pub fn value(&self) -> f32 {
        match *self {
            Reading::Typed { value, .. } | Reading::Plain(value) => value,
            Reading::Keyed { value, .. } => value as f32,
        }
    }
    /// The sensor type, for TinyTelemetry readings.
    pub fn sensor(&self) -> Option<SensorType> {
        match *self {
            Reading::Typed { sensor, .. } => Some(sensor),
            Reading::Keyed { .. } | Reading::Plain(_) => None,
        }
    }
}

/// The keys of the secure README's payload, `CPU=72.3;MEM=41.2;TEMP=67.5`, in that order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Metric {
    /// CPU load, %.
    Cpu,
    /// Memory in use, %.
    Mem,
    /// Temperature, °C.
    Temp,
}

impl Metric {
    pub const ALL: [Metric; 3] = [Metric::Cpu, Metric::Mem, Metric::Temp];

    /// The key on the wire.
    pub fn key(self) -> &'static str {
        match self {
            Metric::Cpu => "CPU",
            Metric::Mem => "MEM",
            Metric::Temp => "TEMP",
        }
    }

    /// Where the random walk starts (the secure README's example), how far it may go, and its step.
    fn walk(self) -> (f64, f64, f64, f64) {
        match self {
            Metric::Cpu => (72.3, 1.0, 99.0, 4.0),
            Metric::Mem => (41.2, 1.0, 99.0, 0.5),
            Metric::Temp => (67.5, 35.0, 90.0, 1.0),
        }
    }
}

mod sensor_name {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};
    use telemesh_proto::wire::tinytelemetry::SensorType;

    pub fn serialize<S: Serializer>(sensor: &SensorType, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(sensor.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<SensorType, D::Error> {
        let name = String::deserialize(de)?;
        SensorType::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| D::Error::custom(format!("unknown sensor {name:?}")))
    }
}

mod hex_bytes {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(de)?;
        hex::decode(&s).map_err(D::Error::custom)
    }
}

/// One simulated transmission.
#[derive(Debug, Clone, PartialEq)]
pub struct Packet {
    pub dialect: Dialect,
    pub device: u16,
    /// The wire seq (0..=65535 for IoTStream, u32 for TinyTelemetry, u64 for secure).
    pub seq: u64,
    /// The wire timestamp (Unix ms mod 2^32 or s for IoTStream, s for TinyTelemetry, ns
    /// for secure).
    pub timestamp: u64,
    pub kind: Kind,
    /// The DATA readings (empty for INIT and HEARTBEAT).
    pub readings: Vec<Reading>,
    /// The exact datagram bytes.
    pub datagram: Vec<u8>,
    /// When the packet is due, measured from the start of the simulation.
    pub due: Duration,
    /// Which boot of the device sent it: 0, then +1 per `reboot_after` reboot.
    pub boot: u32,
}

/// One line of the ground-truth log (NDJSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TruthRecord {
    pub dialect: Dialect,
    pub device: u16,
    pub seq: u64,
    pub timestamp: u64,
    pub kind: Kind,
    pub readings: Vec<Reading>,
    /// Unix ns when the packet was sent (in a dry run: when it was due).
    pub sent_at_ns: u64,
    /// The exact datagram, lowercase hex in the log.
    #[serde(with = "hex_bytes")]
    pub datagram: Vec<u8>,
}

impl TruthRecord {
    /// The record for `packet`, sent at `sent_at_ns`.
    pub fn new(packet: &Packet, sent_at_ns: u64) -> Self {
        TruthRecord {
            dialect: packet.dialect,
            device: packet.device,
            seq: packet.seq,
            timestamp: packet.timestamp,
            kind: packet.kind,
            readings: packet.readings.clone(),
            sent_at_ns,
            datagram: packet.datagram.clone(),
        }
    }
}

impl TruthRecord {
    /// Checks that the datagram is what this line says it is: it decodes (as the node
    /// decodes it) to this device, seq, timestamp, kind and readings, bit for bit, and fits
    /// the 200-byte limit.
    pub fn check_datagram(&self) -> Result<(), String> {
        if self.datagram.len() > wire::MAX_SENSOR_DATAGRAM {
            return Err(format!("{} bytes, more than {}", self.datagram.len(), wire::MAX_SENSOR_DATAGRAM));
        }
        let rec = Record::from_datagram(self.dialect, &self.datagram, 0, RecordTimestampUnit::Ms)
            .map_err(|e| format!("datagram does not decode: {e}"))?;
        // (sensor type or key, value bits)
        let readings: Vec<(String, u64)> = match &rec.readings {
            Readings::None => Vec::new(),
            Readings::Batch(v) => v.iter().map(|x| (String::new(), u64::from(x.to_bits()))).collect(),
            Readings::Sensors(v) => v.iter().map(|(s, x)| (s.0.to_string(), u64::from(x.to_bits()))).collect(),
            Readings::Pairs(v) => v.iter().map(|(k, x)| (k.clone(), x.to_bits())).collect(),
        };
        let stated: Vec<(String, u64)> = self
            .readings
            .iter()
            .map(|r| match *r {
                Reading::Plain(x) => (String::new(), u64::from(x.to_bits())),
                Reading::Typed { sensor, value } => (sensor.code().to_string(), u64::from(value.to_bits())),
                Reading::Keyed { key, value } => (key.key().to_owned(), value.to_bits()),
            })
            .collect();
        let got = (rec.stream.device, rec.seq, rec.timestamp_raw, rec.kind, readings);
        let want = (u32::from(self.device), self.seq, self.timestamp, self.kind, stated);
        if got != want {
            return Err(format!("datagram says {got:?}, the line says {want:?}"));
        }
        Ok(())
    }
}

/// Reads a truth log written by [`run`].
pub fn read_truth(path: &Path) -> Result<Vec<TruthRecord>, Error> {
    let file = File::open(path).map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut records = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|e| Error::BadTruth {
            path: path.display().to_string(),
            line: i + 1,
            why: e.to_string(),
        })?;
        records.push(record);
    }
    Ok(records)
}

// ---------------------------------------------------------------------------------------
// The pure generator
// ---------------------------------------------------------------------------------------

/// Per-device simulation state.
#[derive(Debug)]
struct Device {
    id: u16,
    /// Draws kinds and readings.
    content: ChaCha8Rng,
    /// Draws the boot offset and the jitter.
    schedule: ChaCha8Rng,
    /// Packets sent so far.
    sent: u64,
    /// Packets sent since the last (re)boot.
    in_boot: u64,
    boot: u32,
    /// The seq of the next non-INIT packet.
    next_seq: u64,
    /// Position in the temperature → humidity → voltage cycle (TinyTelemetry).
    sensor_cursor: usize,
    /// CPU, MEM and TEMP now (secure).
    gauges: [f64; 3],
    /// When the device's next packet is due.
    due: Duration,
}

/// The deterministic packet generator: an iterator over every device's packets in
/// schedule order (by `due`, ties by position in `Config::devices`). No sockets, no
/// sleeping; the only outside input is the real clock at construction, and only when
/// `Config::start_time_ms` is `None`.
#[derive(Debug)]
pub struct Simulator {
    config: Config,
    flavor: Flavor,
    batch: usize,
    unit: TimestampUnit,
    seed: u64,
    origin_ms: u64,
    devices: Vec<Device>,
    /// (due, device position), earliest first.
    queue: BinaryHeap<Reverse<(Duration, usize)>>,
}

impl Simulator {
    /// Validates `config` and sets every device at its boot.
    pub fn new(config: Config) -> Result<Self, Error> {
        config.validate()?;
        let flavor = Flavor::of(config.dialect)?;
        let seed = config.seed.unwrap_or_else(rand::random);
        let origin_ms = config
            .start_time_ms
            .unwrap_or_else(|| unix_ns_now() / 1_000_000);
        let first_seq = config.start_seq.map_or(flavor.boot_seq(), u64::from);
        let mut sim = Simulator {
            flavor,
            batch: config.batch_size(),
            unit: config.effective_timestamp_unit(),
            seed,
            origin_ms,
            devices: Vec::with_capacity(config.devices.len()),
            queue: BinaryHeap::with_capacity(config.devices.len()),
            config,
        };
        let ids = sim.config.devices.clone();
        for (pos, id) in ids.into_iter().enumerate() {
            let mut content = ChaCha8Rng::seed_from_u64(seed);
            content.set_stream(u64::from(id) << 1);
            let mut schedule = ChaCha8Rng::seed_from_u64(seed);
            schedule.set_stream((u64::from(id) << 1) | 1);
            sim.devices.push(Device {
                id,
                content,
                schedule,
                sent: 0,
                in_boot: 0,
                boot: 0,
                next_seq: first_seq,
                sensor_cursor: 0,
                gauges: Metric::ALL.map(|m| m.walk().0),
                due: Duration::ZERO,
            });
            if let Some(due) = sim.first_due(pos) {
                sim.devices[pos].due = due;
                sim.queue.push(Reverse((due, pos)));
            }
        }
        Ok(sim)
    }

    /// The seed in use (drawn at random if the config had none).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The clock origin, Unix ms: device time = origin + due (unless stamped).
    pub fn origin_ms(&self) -> u64 {
        self.origin_ms
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// When the next packet is due, or `None` if the stream has ended.
    pub fn peek_due(&self) -> Option<Duration> {
        let Reverse((due, _)) = *self.queue.peek()?;
        match self.config.duration {
            Some(limit) if due >= limit => None,
            _ => Some(due),
        }
    }

    /// The next packet, its timestamp taken from `device_clock_ms` (Unix ms, e.g. the
    /// real clock at sending) instead of `origin + due`. Contents are unaffected.
    pub fn next_stamped(&mut self, device_clock_ms: u64) -> Option<Packet> {
        self.next_packet(Some(device_clock_ms.saturating_mul(1_000_000)))
    }

    /// [`Simulator::next_stamped`] with a clock in Unix ns (the secure frame's resolution).
    pub fn next_stamped_ns(&mut self, device_clock_ns: u64) -> Option<Packet> {
        self.next_packet(Some(device_clock_ns))
    }

    fn first_due(&mut self, pos: usize) -> Option<Duration> {
        match self.config.rate {
            Some(rate) => Duration::try_from_secs_f64(pos as f64 / rate).ok(),
            None => {
                let dev = &mut self.devices[pos];
                let frac: f64 = dev.schedule.gen_range(0.0..1.0);
                Some(self.config.interval.mul_f64(frac))
            }
        }
    }

    /// When the device at `pos`, having just sent a packet, sends its next one.
    fn following_due(&mut self, pos: usize) -> Option<Duration> {
        let n = self.devices.len() as u64;
        let dev = &mut self.devices[pos];
        match self.config.rate {
            Some(rate) => {
                let index = dev.sent.checked_mul(n)?.checked_add(pos as u64)?;
                Duration::try_from_secs_f64(index as f64 / rate).ok()
            }
            None => {
                let wobble: f64 = dev.schedule.gen_range(-1.0..=1.0);
                let gap = self.config.interval.as_secs_f64() * (1.0 + self.config.jitter * wobble);
                dev.due.checked_add(Duration::try_from_secs_f64(gap).ok()?)
            }
        }
    }

    fn next_packet(&mut self, device_clock_ns: Option<u64>) -> Option<Packet> {
        let due = self.peek_due()?;
        let Reverse((_, pos)) = self.queue.pop()?;
        let (flavor, batch, unit) = (self.flavor, self.batch, self.unit);
        let dev = &mut self.devices[pos];

        let (kind, seq) = if flavor == Flavor::Iot && dev.in_boot == 0 {
            (Kind::Init, 0)
        } else {
            let kind = if dev.content.gen_bool(DATA_PROBABILITY) {
                Kind::Data
            } else {
                Kind::Heartbeat
            };
            let seq = dev.next_seq;
            dev.next_seq = match flavor {
                Flavor::Iot => (seq + 1) & 0xffff,
                Flavor::Tiny => (seq + 1) & 0xffff_ffff,
                Flavor::Secure => seq.wrapping_add(1),
            };
            (kind, seq)
        };
        let readings = match kind {
            Kind::Data if flavor == Flavor::Secure => walk(&mut dev.gauges, &mut dev.content),
            Kind::Data => make_readings(flavor, batch, &mut dev.content, &mut dev.sensor_cursor),
            Kind::Init | Kind::Heartbeat => Vec::new(),
        };
        let clock_ns =
            device_clock_ns.unwrap_or_else(|| self.origin_ms.saturating_mul(1_000_000).saturating_add(nanos(due)));
        let clock_ms = clock_ns / 1_000_000;
        let timestamp = match (flavor, unit) {
            (Flavor::Secure, _) => clock_ns,
            (_, TimestampUnit::Millis) => clock_ms & 0xffff_ffff,
            (_, TimestampUnit::Seconds) => (clock_ms / 1000) & 0xffff_ffff,
        };
        let datagram = encode(flavor, kind, dev.id, seq, timestamp, &readings);
        let packet = Packet {
            dialect: flavor.dialect(),
            device: dev.id,
            seq,
            timestamp,
            kind,
            readings,
            datagram,
            due,
            boot: dev.boot,
        };

        dev.sent += 1;
        dev.in_boot += 1;
        if self.config.reboot_after == Some(dev.in_boot) {
            dev.in_boot = 0;
            dev.boot += 1;
            dev.next_seq = flavor.boot_seq();
        }
        let more = !matches!(self.config.count, Some(count) if dev.sent >= count);
        if more {
            if let Some(next) = self.following_due(pos) {
                self.devices[pos].due = next;
                self.queue.push(Reverse((next, pos)));
            }
        }
        Some(packet)
    }
}

impl Iterator for Simulator {
    type Item = Packet;

    /// The next packet in schedule order, stamped `origin + due`.
    fn next(&mut self) -> Option<Packet> {
        self.next_packet(None)
    }
}

/// A DATA packet's readings.
fn make_readings(
    flavor: Flavor,
    batch: usize,
    rng: &mut ChaCha8Rng,
    cursor: &mut usize,
) -> Vec<Reading> {
    (0..batch)
        .map(|_| match flavor {
            Flavor::Iot | Flavor::Secure => Reading::Plain(plausible(SensorType::Temperature, rng)),
            Flavor::Tiny => {
                let sensor = SensorType::ALL[*cursor % SensorType::ALL.len()];
                *cursor = cursor.wrapping_add(1);
                Reading::Typed {
                    sensor,
                    value: plausible(sensor, rng),
                }
            }
        })
        .collect()
}

/// A secure DATA frame's readings: each of CPU, MEM and TEMP takes a step of its random
/// walk, stays in its range, and is reported with one decimal, as the secure README's example.
fn walk(gauges: &mut [f64; 3], rng: &mut ChaCha8Rng) -> Vec<Reading> {
    Metric::ALL
        .iter()
        .zip(gauges.iter_mut())
        .map(|(&key, now)| {
            let (_, lo, hi, step) = key.walk();
            *now = (*now + rng.gen_range(-step..=step)).clamp(lo, hi);
            // The value the node parses back from the one-decimal text.
            let value = (*now * 10.0).round() / 10.0;
            Reading::Keyed { key, value }
        })
        .collect()
}

/// A plausible value, rounded the way a cheap sensor reports it.
fn plausible(sensor: SensorType, rng: &mut ChaCha8Rng) -> f32 {
    match sensor {
        // 20.00..=30.00 °C
        SensorType::Temperature => f32::from(rng.gen_range(2000u16..=3000)) / 100.0,
        // 30.0..=70.0 % relative humidity
        SensorType::Humidity => f32::from(rng.gen_range(300u16..=700)) / 10.0,
        // 3.000..=3.600 V (a Li-ion cell behind a regulator)
        SensorType::Voltage => f32::from(rng.gen_range(3000u16..=3600)) / 1000.0,
    }
}

/// The datagram, via the proto codecs. `Config::validate` keeps batch and seq in range,
/// so the codecs cannot refuse.
fn encode(
    flavor: Flavor,
    kind: Kind,
    device: u16,
    seq: u64,
    timestamp: u64,
    readings: &[Reading],
) -> Vec<u8> {
    match flavor {
        Flavor::Iot => {
            let msg_type = match kind {
                Kind::Init => iotstream::MsgType::Init,
                Kind::Data => iotstream::MsgType::Data,
                Kind::Heartbeat => iotstream::MsgType::Heartbeat,
            };
            let values: Vec<f32> = readings.iter().map(Reading::value).collect();
            iotstream::Repr::new(msg_type, device, (seq & 0xffff) as u16, (timestamp & 0xffff_ffff) as u32, &values)
                .expect("batch validated by Config::validate")
                .to_bytes()
        }
        Flavor::Tiny => {
            // TinyTelemetry has no INIT; the generator never makes one for it.
            let msg_type = match kind {
                Kind::Data => tinytelemetry::MsgType::Data,
                Kind::Init | Kind::Heartbeat => tinytelemetry::MsgType::Heartbeat,
            };
            let typed: Vec<(SensorType, f32)> = readings
                .iter()
                .map(|r| (r.sensor().unwrap_or(SensorType::Temperature), r.value()))
                .collect();
            let (seq, timestamp) = ((seq & 0xffff_ffff) as u32, (timestamp & 0xffff_ffff) as u32);
            tinytelemetry::Repr::new(msg_type, device, seq, timestamp, &typed)
                .expect("device and batch validated by Config::validate")
                .to_bytes()
        }
        Flavor::Secure => {
            let payload = secure_payload(readings);
            secure::Repr::new(u32::from(device), seq, timestamp, &payload)
                .expect("three one-decimal pairs make a valid, short payload")
                .to_bytes()
        }
    }
}

/// `CPU=72.3;MEM=41.2;TEMP=67.5` (empty for a heartbeat).
fn secure_payload(readings: &[Reading]) -> String {
    let pairs: Vec<String> = readings
        .iter()
        .map(|r| match *r {
            Reading::Keyed { key, value } => format!("{}={value:.1}", key.key()),
            other => format!("V={}", other.value()),
        })
        .collect();
    pairs.join(";")
}

// ---------------------------------------------------------------------------------------
// Pacing and sending
// ---------------------------------------------------------------------------------------

/// What [`run`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Packets generated (each once, however many destinations).
    pub packets: u64,
    pub init: u64,
    pub data: u64,
    pub heartbeat: u64,
    /// Datagram bytes, once per packet.
    pub bytes: u64,
    /// Destinations each packet was sent to (0 in a dry run).
    pub destinations: usize,
    /// Successful `send_to` calls (packets × destinations, less failures).
    pub datagrams_sent: u64,
    /// Failed `send_to` calls (the simulator carries on, as a sensor would).
    pub send_errors: u64,
    /// The first send failure, for the report.
    pub first_send_error: Option<String>,
    /// Wall time from start to stop.
    pub elapsed: Duration,
    /// The seed in use.
    pub seed: u64,
    pub dry_run: bool,
    /// Stopped by the stop flag (Ctrl-C) rather than by count or duration.
    pub interrupted: bool,
    /// DTLS sessions (secure dialect: one per device and destination).
    pub sessions: usize,
    /// Their handshake times, in the order they finished.
    pub handshakes: Vec<Duration>,
    /// Handshakes started over from a new socket because they took too long
    /// (`dtls::RESTART_AFTER`: a lossy link).
    pub handshake_restarts: u32,
}

impl Summary {
    /// Packets per second of wall time.
    pub fn rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.packets as f64 / secs
        } else {
            0.0
        }
    }

    /// The median DTLS handshake time.
    pub fn median_handshake(&self) -> Option<Duration> {
        let mut v = self.handshakes.clone();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    }

    fn send_error(&mut self, what: impl FnOnce() -> String) {
        self.send_errors += 1;
        if self.first_send_error.is_none() {
            self.first_send_error = Some(what());
        }
    }

    fn count(&mut self, packet: &Packet) {
        self.packets += 1;
        self.bytes += packet.datagram.len() as u64;
        match packet.kind {
            Kind::Init => self.init += 1,
            Kind::Data => self.data += 1,
            Kind::Heartbeat => self.heartbeat += 1,
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run { "generated" } else { "sent" };
        write!(
            f,
            "{verb} {} packets (init {}, data {}, heartbeat {}), {} bytes",
            self.packets, self.init, self.data, self.heartbeat, self.bytes
        )?;
        if !self.dry_run {
            let s = if self.destinations == 1 { "" } else { "s" };
            write!(f, " to {} destination{s}", self.destinations)?;
        }
        write!(
            f,
            " in {:.3}s ({:.1} packets/s), seed {}",
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.seed
        )?;
        if self.sessions > 0 {
            let median = self.median_handshake().map_or("-".to_owned(), |d| format!("{:.1} ms", d.as_secs_f64() * 1e3));
            let s = if self.sessions == 1 { "" } else { "s" };
            write!(f, ", {} DTLS session{s} (handshake median {median}", self.sessions)?;
            if self.handshake_restarts > 0 {
                write!(f, ", {} started over", self.handshake_restarts)?;
            }
            f.write_str(")")?;
        }
        if self.send_errors > 0 {
            write!(f, ", {} send errors", self.send_errors)?;
            if let Some(first) = &self.first_send_error {
                write!(f, " (first: {first})")?;
            }
        }
        if self.interrupted {
            f.write_str(", interrupted")?;
        }
        Ok(())
    }
}

/// The sending side: one unbound-port socket per address family in use.
#[derive(Debug)]
struct Sender {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    destinations: Vec<SocketAddr>,
}

impl Sender {
    fn bind(destinations: Vec<SocketAddr>) -> Result<Self, Error> {
        let bind = |addr: SocketAddr| {
            UdpSocket::bind(addr).map_err(|e| Error::io(format!("bind UDP socket on {addr}"), e))
        };
        let v4 = match destinations.iter().any(SocketAddr::is_ipv4) {
            true => Some(bind(SocketAddr::from(([0, 0, 0, 0], 0)))?),
            false => None,
        };
        let v6 = match destinations.iter().any(SocketAddr::is_ipv6) {
            true => Some(bind(SocketAddr::from(([0u16; 8], 0)))?),
            false => None,
        };
        Ok(Sender {
            v4,
            v6,
            destinations,
        })
    }

    fn send(&self, datagram: &[u8], summary: &mut Summary) {
        for dest in &self.destinations {
            let socket = if dest.is_ipv4() {
                self.v4.as_ref()
            } else {
                self.v6.as_ref()
            };
            let result = match socket {
                Some(socket) => socket.send_to(datagram, dest).map(|_| ()),
                None => Err(io::Error::other("no socket for this address family")),
            };
            match result {
                Ok(()) => summary.datagrams_sent += 1,
                Err(e) => summary.send_error(|| format!("{dest}: {e}")),
            }
        }
    }
}

/// The secure dialect's credentials, and how long to wait for the handshakes.
#[derive(Debug, Clone)]
pub struct Dtls {
    /// One set for every destination, or one per destination in the order of
    /// `Config::destinations` (sites with CAs of their own). A certificate and key path with
    /// `{id}` names one file per device; without it, the one certificate serves one device.
    pub credentials: Vec<dtls::Credentials>,
    /// How long every handshake has before sending starts. A destination with none done by
    /// then is an error; the others start sending, and a handshake still under way (a
    /// lossy link) goes on while they do, its device's frames to that destination counted as
    /// send errors until it is done.
    pub handshake_timeout: Duration,
}

/// The secure dialect's sending side: one DTLS session per device and destination.
#[derive(Debug)]
struct Links {
    /// Per device, its sessions in destination order.
    sessions: std::collections::HashMap<u16, Vec<dtls::Session>>,
    /// Sessions whose handshake is still under way.
    pending: usize,
}

impl Links {
    /// Checks the credentials, starts every handshake and waits for them (see [`Dtls`]).
    fn open(config: &Config, setup: &Dtls, summary: &mut Summary) -> Result<Links, Error> {
        let destinations = config.destinations();
        let n = setup.credentials.len();
        if n != 1 && n != destinations.len() {
            return Err(Error::invalid(
                "--cert",
                format!("give one --ca/--cert/--key for every destination, or one set per --to ({n} sets, {} --to)",
                    destinations.len()),
            ));
        }
        let mut sessions: std::collections::HashMap<u16, Vec<dtls::Session>> = Default::default();
        for (i, to) in destinations.iter().enumerate() {
            let credentials = &setup.credentials[if n == 1 { 0 } else { i }];
            if !credentials.per_device() && config.devices.len() > 1 {
                return Err(Error::invalid(
                    "--devices",
                    format!("--cert {} is one device's certificate, and {} devices are simulated: give one device, or \
                        --cert and --key paths with {{id}} (one certificate per device, e.g. certs/{{id}}/device.pem)",
                        credentials.cert.display(), config.devices.len()),
                ));
            }
            for &device in &config.devices {
                let context = dtls::Context::new(&credentials.for_device(u32::from(device)), Some(u32::from(device)))?;
                sessions.entry(device).or_default().push(dtls::Session::start(&context, *to)?);
            }
        }
        summary.sessions = sessions.values().map(Vec::len).sum();
        // A handshake can finish within its first step (on a loaded machine the node's
        // answers may all be waiting by the time each read comes): count those too.
        summary.handshakes.extend(sessions.values().flatten().filter_map(dtls::Session::handshake_time));
        let pending = sessions.values().flatten().filter(|s| !s.is_up()).count();
        let mut links = Links { sessions, pending };
        let deadline = Instant::now() + setup.handshake_timeout;
        loop {
            links.progress(summary)?;
            if links.pending == 0 || Instant::now() >= deadline {
                break;
            }
            thread::sleep(dtls::POLL);
        }
        for (i, to) in destinations.iter().enumerate() {
            if links.sessions.values().all(|s| !s[i].is_up()) {
                return Err(dtls::Error::Timeout { to: *to, after: setup.handshake_timeout }.into());
            }
        }
        Ok(links)
    }

    /// Moves every unfinished handshake on (a refusal is an error).
    fn progress(&mut self, summary: &mut Summary) -> Result<(), Error> {
        if self.pending == 0 {
            return Ok(());
        }
        let mut pending = 0;
        for s in self.sessions.values_mut().flatten().filter(|s| !s.is_up()) {
            if s.progress()? {
                summary.handshakes.extend(s.handshake_time());
                summary.handshake_restarts += s.restarts();
            } else {
                pending += 1;
            }
        }
        self.pending = pending;
        Ok(())
    }

    /// One frame to each of `device`'s sessions, one DTLS record each.
    fn send(&mut self, device: u16, frame: &[u8], summary: &mut Summary) -> Result<(), Error> {
        self.progress(summary)?;
        for s in self.sessions.get_mut(&device).into_iter().flatten() {
            match s.send(frame) {
                Ok(()) => summary.datagrams_sent += 1,
                Err(e) => summary.send_error(|| format!("device {device} to {}: {e}", s.to())),
            }
        }
        Ok(())
    }
}

/// Where packets go: plain datagrams, or DTLS records.
#[derive(Debug)]
enum Out {
    Plain(Sender),
    Dtls(Links),
}

/// The truth log, buffered, flushed about once a second and at the end.
#[derive(Debug)]
struct TruthWriter {
    path: PathBuf,
    out: BufWriter<File>,
    last_flush: Instant,
}

impl TruthWriter {
    fn create(path: &Path) -> Result<Self, Error> {
        let file = File::create(path)
            .map_err(|e| Error::io(format!("create truth log {}", path.display()), e))?;
        Ok(TruthWriter {
            path: path.to_owned(),
            out: BufWriter::new(file),
            last_flush: Instant::now(),
        })
    }

    fn write(&mut self, record: &TruthRecord) -> Result<(), Error> {
        serde_json::to_writer(&mut self.out, record)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| Error::io(format!("write truth log {}", self.path.display()), e))?;
        if self.last_flush.elapsed() >= TRUTH_FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        self.last_flush = Instant::now();
        self.out
            .flush()
            .map_err(|e| Error::io(format!("flush truth log {}", self.path.display()), e))
    }
}

/// Runs the simulation: paces the [`Simulator`]'s schedule against the real clock, sends
/// every packet to each destination, and writes the truth log (flushed on return, also
/// when stopped). Returns when every device has sent `count` packets, when `duration` has
/// passed, or soon after `stop` becomes true.
///
/// Without `start_time_ms`, each packet is stamped with the real clock when it is sent.
/// With `dry_run`, nothing is sent and nothing waits (so `Config::validate` requires
/// `count` or `duration`); `sent_at_ns` is then the packet's scheduled time.
pub fn run(config: &Config, stop: &AtomicBool) -> Result<Summary, Error> {
    run_with_auth(config, &Auth::default(), stop)
}

/// [`run`], with the devices that have a key in `auth` appending the authentication
/// trailer (and misbehaving as `auth.attack` says). The truth log holds the seed datagrams,
/// without trailers: what the node stores.
pub fn run_with_auth(config: &Config, auth: &Auth, stop: &AtomicBool) -> Result<Summary, Error> {
    run_inner(config, auth, None, stop)
}

/// [`run`] for the secure dialect: every device opens a DTLS session with each destination
/// (with the credentials in `dtls`) before the schedule starts, and sends each frame as
/// one DTLS record; the sessions are closed (close_notify) at the end.
pub fn run_secure(config: &Config, dtls: &Dtls, stop: &AtomicBool) -> Result<Summary, Error> {
    run_inner(config, &Auth::default(), Some(dtls), stop)
}

fn run_inner(config: &Config, auth: &Auth, dtls: Option<&Dtls>, stop: &AtomicBool) -> Result<Summary, Error> {
    config.validate()?;
    let secure = config.dialect == Dialect::Secure;
    if secure && !auth.keys.is_empty() {
        let why = "not with --dialect secure (its devices prove who they are with certificates)";
        return Err(Error::invalid("--device-keys", why));
    }
    if !secure && dtls.is_some() {
        return Err(Error::invalid("--cert", "only with --dialect secure"));
    }
    let mut tagger = Tagger::new(config, auth)?;
    let mut sim = Simulator::new(config.clone())?;
    let mut summary = Summary { seed: sim.seed(), dry_run: config.dry_run, ..Summary::default() };
    let mut out = match (config.dry_run, dtls) {
        (true, _) => None,
        (false, Some(dtls)) => Some(Out::Dtls(Links::open(config, dtls, &mut summary)?)),
        (false, None) if secure => {
            return Err(Error::invalid("--cert", "the secure dialect needs --cert, --key and --ca (DTLS credentials)"))
        }
        (false, None) => Some(Out::Plain(Sender::bind(config.destinations())?)),
    };
    summary.destinations = if out.is_some() { config.destinations().len() } else { 0 };
    let mut truth = match &config.truth {
        Some(path) => Some(TruthWriter::create(path)?),
        None => None,
    };
    let real_clock = config.start_time_ms.is_none();
    let start = Instant::now();
    let start_unix_ns = unix_ns_now();

    let result = loop {
        if stop.load(Ordering::Relaxed) {
            summary.interrupted = true;
            break Ok(());
        }
        let Some(due) = sim.peek_due() else {
            break Ok(());
        };
        let (packet, sent_at_ns) = match &mut out {
            Some(out) => {
                let elapsed = start.elapsed();
                if config.duration.is_some_and(|limit| elapsed >= limit) {
                    break Ok(());
                }
                if due > elapsed {
                    if let Out::Dtls(links) = out {
                        // Handshakes still under way retransmit from here.
                        if let Err(e) = links.progress(&mut summary) {
                            break Err(e);
                        }
                    }
                    thread::sleep((due - elapsed).min(MAX_SLEEP));
                    continue;
                }
                let now_ns = start_unix_ns.saturating_add(nanos(start.elapsed()));
                let packet = match (real_clock, secure) {
                    (true, true) => sim.next_stamped_ns(now_ns),
                    (true, false) => sim.next_stamped(now_ns / 1_000_000),
                    (false, _) => sim.next(),
                };
                let Some(packet) = packet else { break Ok(()) };
                match (out, tagger.as_mut()) {
                    (Out::Dtls(links), _) => {
                        if let Err(e) = links.send(packet.device, &packet.datagram, &mut summary) {
                            break Err(e);
                        }
                    }
                    (Out::Plain(sender), None) => sender.send(&packet.datagram, &mut summary),
                    (Out::Plain(sender), Some(tagger)) => match tagger.datagrams(&packet) {
                        Ok(datagrams) => datagrams.iter().for_each(|d| sender.send(d, &mut summary)),
                        Err(e) => break Err(e),
                    },
                }
                (packet, now_ns)
            }
            None => {
                let Some(packet) = sim.next() else {
                    break Ok(());
                };
                let at = sim
                    .origin_ms()
                    .saturating_mul(1_000_000)
                    .saturating_add(nanos(packet.due));
                (packet, at)
            }
        };
        summary.count(&packet);
        if let Some(truth) = truth.as_mut() {
            if let Err(e) = truth.write(&TruthRecord::new(&packet, sent_at_ns)) {
                break Err(e);
            }
        }
    };
    summary.elapsed = start.elapsed();
    // Sessions end with close_notify (when dropped).
    drop(out);
    let flushed = match truth.as_mut() {
        Some(truth) => truth.flush(),
        None => Ok(()),
    };
    result.and(flushed).map(|()| summary)
}

// ---------------------------------------------------------------------------------------
// Authentication trailers (issue 13)
// ---------------------------------------------------------------------------------------

/// A way a keyed device misbehaves, to test that the node refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attack {
    /// The tag's last byte flipped (`auth_bad_tag`).
    BadTag,
    /// The tag cut to 4 bytes (`auth_truncated`).
    Truncated,
    /// Each datagram sent twice, the same bytes (the second is `auth_replay`).
    Replay,
}

impl FromStr for Attack {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bad-tag" => Ok(Attack::BadTag),
            "truncated" => Ok(Attack::Truncated),
            "replay" => Ok(Attack::Replay),
            _ => Err(ParseError(format!("{s:?} is not bad-tag, truncated or replay"))),
        }
    }
}

/// The simulated devices' keys and counters.
#[derive(Debug, Clone, Default)]
pub struct Auth {
    /// Devices with a key tag their datagrams; the others send them plain.
    pub keys: auth::Keys,
    /// Each device's first counter; `None`: the clock origin in Unix seconds (so that a
    /// later run, at one packet a second or less per device, continues above an earlier one).
    pub counter_start: Option<u32>,
    pub attack: Option<Attack>,
}

/// Reads a device key file (the node's format: `proto::auth::Keys::parse`).
pub fn load_keys(path: &Path) -> Result<auth::Keys, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
    auth::Keys::parse(&text).map_err(|e| Error::invalid("--device-keys", format!("{}: {e}", path.display())))
}

/// Appends trailers with a per-device counter.
#[derive(Debug)]
struct Tagger {
    dialect: Dialect,
    keys: auth::Keys,
    next: std::collections::HashMap<u16, u32>,
    start: u32,
    attack: Option<Attack>,
}

impl Tagger {
    /// `None` when no simulated device has a key.
    fn new(config: &Config, auth: &Auth) -> Result<Option<Tagger>, Error> {
        if !config.devices.iter().any(|d| auth.keys.get(config.dialect, *d).is_some()) {
            return Ok(None);
        }
        let header = match config.dialect {
            Dialect::Tinytelemetry => tinytelemetry::HEADER_LEN + 1,
            _ => iotstream::HEADER_LEN,
        };
        let per_reading = if config.dialect == Dialect::Tinytelemetry { tinytelemetry::READING_LEN } else { 4 };
        let max = (auth::MAX_BODY - header) / per_reading;
        if config.batch_size() > max {
            return Err(Error::invalid("--batch", format!("at most {max} with an authentication trailer")));
        }
        let origin_ms = config.start_time_ms.unwrap_or_else(|| unix_ns_now() / 1_000_000);
        let start = auth.counter_start.unwrap_or(u32::try_from(origin_ms / 1000).unwrap_or(u32::MAX / 2));
        Ok(Some(Tagger {
            dialect: config.dialect,
            keys: auth.keys.clone(),
            next: Default::default(),
            start,
            attack: auth.attack,
        }))
    }

    /// What to send for `packet`: as it is (no key), or tagged, once or twice.
    fn datagrams(&mut self, packet: &Packet) -> Result<Vec<Vec<u8>>, Error> {
        let Some(key) = self.keys.get(self.dialect, packet.device) else {
            return Ok(vec![packet.datagram.clone()]);
        };
        let next = self.next.entry(packet.device).or_insert(self.start);
        let counter = *next;
        *next = counter
            .checked_add(1)
            .ok_or_else(|| Error::invalid("--auth-counter", format!("device {} ran out of counters", packet.device)))?;
        let mut bytes = packet.datagram.clone();
        auth::seal(self.dialect, key, counter, &mut bytes).map_err(|e| Error::invalid("--batch", e.to_string()))?;
        Ok(match self.attack {
            None => vec![bytes],
            Some(Attack::BadTag) => {
                if let Some(last) = bytes.last_mut() {
                    *last ^= 0x01;
                }
                vec![bytes]
            }
            Some(Attack::Truncated) => {
                bytes.truncate(bytes.len() - auth::TAG_LEN / 2);
                vec![bytes]
            }
            Some(Attack::Replay) => vec![bytes.clone(), bytes],
        })
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn unix_ns_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(nanos)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The INIT of the Mini-RFC's example session: Unix ms 1765477199815 ≡ 245641159 (its client timestamp)
    /// mod 2^32.
    const T0: u64 = 1_765_477_199_815;

    fn iot(devices: &[u16], count: u64) -> Config {
        Config {
            devices: devices.to_vec(),
            count: Some(count),
            seed: Some(7),
            start_time_ms: Some(T0),
            ..Config::default()
        }
    }

    fn secure_config(devices: &[u16], count: u64) -> Config {
        Config { dialect: Dialect::Secure, ..iot(devices, count) }
    }

    fn tiny(devices: &[u16], count: u64) -> Config {
        Config {
            dialect: Dialect::Tinytelemetry,
            ..iot(devices, count)
        }
    }

    fn packets(config: Config) -> Vec<Packet> {
        Simulator::new(config).expect("valid config").collect()
    }

    fn of_device(all: &[Packet], id: u16) -> Vec<Packet> {
        all.iter().filter(|p| p.device == id).cloned().collect()
    }

    #[test]
    fn device_lists() {
        assert_eq!(parse_devices("1001"), Ok(vec![1001]));
        assert_eq!(parse_devices("1001-1003"), Ok(vec![1001, 1002, 1003]));
        assert_eq!(parse_devices("1,5,9-12"), Ok(vec![1, 5, 9, 10, 11, 12]));
        assert_eq!(parse_devices(" 7 , 8 "), Ok(vec![7, 8]));
        assert_eq!(parse_devices("0-65535").map(|d| d.len()), Ok(65536));
        for bad in [
            "", "x", "1-", "-5", "5-1", "1,,2", "65536", "1-3,2", "1.5", "1-2-3",
        ] {
            assert!(parse_devices(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("100us"), Ok(Duration::from_micros(100)));
        for bad in ["", "s", "1x", "-1s", "1e3s", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn addresses_and_dialects() {
        assert_eq!(
            parse_addr("127.0.0.1:5005"),
            Ok(SocketAddr::from(([127, 0, 0, 1], 5005)))
        );
        assert!(parse_addr("[::1]:5005").is_ok_and(|a| a.is_ipv6()));
        assert!(parse_addr("127.0.0.1").is_err());
        assert!(parse_addr("not an address").is_err());
        assert_eq!(parse_dialect("iotstream"), Ok(Dialect::Iotstream));
        assert_eq!(parse_dialect("tinytelemetry"), Ok(Dialect::Tinytelemetry));
        assert_eq!(parse_dialect("secure"), Ok(Dialect::Secure));
        assert!(parse_dialect("mqtt").is_err());
    }

    #[test]
    fn bad_configs_are_refused() {
        let cases = [
            (Config { batch: Some(3), ..secure_config(&[1], 1) }, "--batch"),
            (Config { timestamp_unit: Some(TimestampUnit::Millis), ..secure_config(&[1], 1) }, "--timestamp-unit"),
            (Config { reboot_after: Some(3), ..secure_config(&[1], 1) }, "--reboot-after"),
            (
                Config {
                    devices: vec![],
                    ..Config::default()
                },
                "--devices",
            ),
            (
                Config {
                    devices: vec![3, 3],
                    ..Config::default()
                },
                "--devices",
            ),
            (
                Config {
                    devices: vec![0],
                    ..tiny(&[1], 1)
                },
                "--devices",
            ),
            (
                Config {
                    batch: Some(0),
                    ..Config::default()
                },
                "--batch",
            ),
            (
                Config {
                    batch: Some(48),
                    ..Config::default()
                },
                "--batch",
            ),
            (
                Config {
                    batch: Some(38),
                    ..tiny(&[1], 1)
                },
                "--batch",
            ),
            (
                Config {
                    start_seq: Some(65536),
                    ..Config::default()
                },
                "--start-seq",
            ),
            (
                Config {
                    timestamp_unit: Some(TimestampUnit::Millis),
                    ..tiny(&[1], 1)
                },
                "--timestamp-unit",
            ),
            (
                Config {
                    interval: Duration::ZERO,
                    ..Config::default()
                },
                "--interval",
            ),
            (
                Config {
                    jitter: 1.0,
                    ..Config::default()
                },
                "--jitter",
            ),
            (
                Config {
                    rate: Some(0.0),
                    ..Config::default()
                },
                "--rate",
            ),
            (
                Config {
                    rate: Some(f64::NAN),
                    ..Config::default()
                },
                "--rate",
            ),
            (
                Config {
                    count: Some(0),
                    ..Config::default()
                },
                "--count",
            ),
            (
                Config {
                    reboot_after: Some(0),
                    ..Config::default()
                },
                "--reboot-after",
            ),
            (
                Config {
                    duration: Some(Duration::ZERO),
                    ..Config::default()
                },
                "--duration",
            ),
            (
                Config {
                    dry_run: true,
                    ..Config::default()
                },
                "--dry-run",
            ),
        ];
        for (config, needle) in cases {
            let err = Simulator::new(config.clone()).expect_err("must be refused");
            assert!(err.is_usage(), "{err}");
            assert!(
                err.to_string().contains(needle),
                "{err} should mention {needle}"
            );
        }
        // Edges that are fine.
        assert!(Simulator::new(Config {
            batch: Some(47),
            ..Config::default()
        })
        .is_ok());
        assert!(Simulator::new(Config {
            batch: Some(37),
            ..tiny(&[1], 1)
        })
        .is_ok());
        assert!(Simulator::new(Config {
            start_seq: Some(u32::MAX),
            ..tiny(&[1], 1)
        })
        .is_ok());
        assert!(Simulator::new(Config {
            devices: vec![0],
            ..Config::default()
        })
        .is_ok());
    }

    #[test]
    fn same_seed_same_stream_other_seed_other_stream() {
        let config = Config {
            devices: parse_devices("1-20").expect("list"),
            ..iot(&[], 50)
        };
        let a = packets(config.clone());
        let b = packets(config.clone());
        assert_eq!(a.len(), 20 * 50);
        assert_eq!(a, b);
        let c = packets(Config {
            seed: Some(8),
            ..config
        });
        assert_ne!(
            a.iter().map(|p| &p.datagram).collect::<Vec<_>>(),
            c.iter().map(|p| &p.datagram).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_devices_contents_do_not_depend_on_the_others_or_the_mode() {
        let alone = packets(iot(&[5], 30));
        let crowd = of_device(&packets(iot(&[1, 2, 3, 4, 5, 6], 30)), 5);
        let rated = of_device(
            &packets(Config {
                rate: Some(1000.0),
                ..iot(&[1, 5], 30)
            }),
            5,
        );
        let contents = |ps: &[Packet]| {
            ps.iter()
                .map(|p| (p.kind, p.seq, p.readings.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(contents(&alone), contents(&crowd));
        assert_eq!(contents(&alone), contents(&rated));
    }

    #[test]
    fn iotstream_boots_with_init_seq_0_then_counts_from_1() {
        let all = packets(iot(&[1001, 1002, 1003], 10));
        for id in [1001, 1002, 1003] {
            let dev = of_device(&all, id);
            assert_eq!(dev.len(), 10);
            assert_eq!(dev[0].kind, Kind::Init);
            assert_eq!(dev[0].seq, 0);
            assert!(dev[0].readings.is_empty());
            assert_eq!(dev[0].datagram.len(), iotstream::HEADER_LEN);
            assert_eq!(dev[0].datagram[10], 0, "INIT has batch 0");
            for (i, p) in dev.iter().enumerate().skip(1) {
                assert_ne!(p.kind, Kind::Init);
                assert_eq!(p.seq, i as u64);
                match p.kind {
                    Kind::Data => assert_eq!(p.readings.len(), IOTSTREAM_DEFAULT_BATCH),
                    _ => assert!(p.readings.is_empty()),
                }
            }
        }
    }

    #[test]
    fn tinytelemetry_has_no_init_and_counts_from_0() {
        let all = packets(Config {
            batch: Some(4),
            ..tiny(&[1, 2], 12)
        });
        for id in [1, 2] {
            let dev = of_device(&all, id);
            assert_eq!(
                dev.iter().map(|p| p.seq).collect::<Vec<_>>(),
                (0..12).collect::<Vec<_>>()
            );
            assert!(dev.iter().all(|p| p.kind != Kind::Init));
            // Sensor types cycle across the device's readings, values are plausible.
            let readings: Vec<Reading> = dev.iter().flat_map(|p| p.readings.clone()).collect();
            assert!(readings.len() >= 8);
            for (i, r) in readings.iter().enumerate() {
                let sensor = r.sensor().expect("typed");
                assert_eq!(sensor, SensorType::ALL[i % 3]);
                let range = match sensor {
                    SensorType::Temperature => 20.0..=30.0,
                    SensorType::Humidity => 30.0..=70.0,
                    SensorType::Voltage => 3.0..=3.6,
                };
                assert!(range.contains(&r.value()), "{sensor:?} {}", r.value());
            }
        }
    }

    #[test]
    fn about_80_percent_data_20_percent_heartbeat() {
        for config in [iot(&[1, 2, 3, 4], 5001), tiny(&[1, 2, 3, 4], 5000)] {
            let all = packets(config);
            let beats: Vec<Kind> = all
                .iter()
                .map(|p| p.kind)
                .filter(|k| *k != Kind::Init)
                .collect();
            assert_eq!(beats.len(), 20_000);
            let data =
                beats.iter().filter(|k| **k == Kind::Data).count() as f64 / beats.len() as f64;
            // 20,000 Bernoulli(0.8) draws: σ ≈ 0.0028, so ±0.015 is > 5σ.
            assert!((0.785..=0.815).contains(&data), "data fraction {data}");
        }
    }

    #[test]
    fn iotstream_seq_wraps_at_65536() {
        let dev = packets(Config {
            start_seq: Some(65534),
            ..iot(&[9], 5)
        });
        assert_eq!(
            dev.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [0, 65534, 65535, 0, 1]
        );
        assert_eq!(dev[0].kind, Kind::Init);
        assert!(
            dev[1..].iter().all(|p| p.kind != Kind::Init),
            "wraparound is not a reboot"
        );
        let ts: Vec<u64> = dev.iter().map(|p| p.timestamp).collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
    }

    #[test]
    fn tinytelemetry_seq_wraps_at_2_pow_32() {
        let dev = packets(Config {
            start_seq: Some(u32::MAX - 1),
            ..tiny(&[9], 4)
        });
        assert_eq!(
            dev.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [u64::from(u32::MAX) - 1, u64::from(u32::MAX), 0, 1]
        );
    }

    #[test]
    fn reboot_sends_init_seq_0_again_with_later_timestamps() {
        let dev = packets(Config {
            reboot_after: Some(4),
            start_seq: Some(100),
            ..iot(&[3], 10)
        });
        let seqs: Vec<u64> = dev.iter().map(|p| p.seq).collect();
        let kinds: Vec<bool> = dev.iter().map(|p| p.kind == Kind::Init).collect();
        assert_eq!(seqs, [0, 100, 101, 102, 0, 1, 2, 3, 0, 1]);
        assert_eq!(
            kinds,
            [true, false, false, false, true, false, false, false, true, false]
        );
        assert_eq!(
            dev.iter().map(|p| p.boot).collect::<Vec<_>>(),
            [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
        );
        assert!(dev[4].timestamp > dev[3].timestamp);
        assert!(dev.windows(2).all(|w| w[0].timestamp < w[1].timestamp));

        let tiny_dev = packets(Config {
            reboot_after: Some(3),
            ..tiny(&[3], 7)
        });
        assert_eq!(
            tiny_dev.iter().map(|p| p.seq).collect::<Vec<_>>(),
            [0, 1, 2, 0, 1, 2, 0]
        );
    }

    #[test]
    fn timestamps_follow_the_clock_origin() {
        let dev = packets(Config {
            jitter: 0.0,
            ..iot(&[1], 3)
        });
        for p in &dev {
            let ms = T0 + p.due.as_millis() as u64;
            assert_eq!(p.timestamp, ms % (1 << 32));
        }
        let secs = packets(Config {
            timestamp_unit: Some(TimestampUnit::Seconds),
            ..iot(&[1], 3)
        });
        for p in &secs {
            assert_eq!(
                p.timestamp,
                (T0 + p.due.as_millis() as u64) / 1000
            );
        }
        let tiny_dev = packets(tiny(&[1], 3));
        for p in &tiny_dev {
            assert_eq!(
                p.timestamp,
                (T0 + p.due.as_millis() as u64) / 1000
            );
        }
        // Stamping from outside changes the timestamp only.
        let mut a = Simulator::new(iot(&[1], 2)).expect("valid");
        let mut b = Simulator::new(iot(&[1], 2)).expect("valid");
        a.next();
        b.next();
        let pa = a.next().expect("second packet");
        let pb = b.next_stamped(T0 + 123_456).expect("second packet");
        assert_eq!(pb.timestamp, (T0 + 123_456) % (1 << 32));
        assert_eq!(
            (pa.kind, pa.seq, &pa.readings),
            (pb.kind, pb.seq, &pb.readings)
        );
    }

    #[test]
    fn interval_jitter_stays_within_10_percent() {
        let all = packets(Config {
            interval: Duration::from_millis(1000),
            ..iot(&[1, 2], 200)
        });
        for id in [1, 2] {
            let dev = of_device(&all, id);
            assert!(
                dev[0].due < Duration::from_secs(1),
                "boot offset within one interval"
            );
            let gaps: Vec<f64> = dev
                .windows(2)
                .map(|w| (w[1].due - w[0].due).as_secs_f64())
                .collect();
            assert!(
                gaps.iter().all(|g| (0.9 - 1e-9..=1.1 + 1e-9).contains(g)),
                "{gaps:?}"
            );
            let spread = gaps.iter().cloned().fold(f64::MIN, f64::max)
                - gaps.iter().cloned().fold(f64::MAX, f64::min);
            assert!(spread > 0.1, "jitter is actually applied");
        }
        let dues: Vec<Duration> = all.iter().map(|p| p.due).collect();
        assert!(dues.windows(2).all(|w| w[0] <= w[1]), "schedule order");
    }

    #[test]
    fn rate_mode_is_round_robin() {
        let all = packets(Config {
            rate: Some(100.0),
            ..iot(&[7, 8, 9], 4)
        });
        assert_eq!(all.len(), 12);
        let order: Vec<u16> = all.iter().map(|p| p.device).collect();
        assert_eq!(order, [7, 8, 9, 7, 8, 9, 7, 8, 9, 7, 8, 9]);
        for (i, p) in all.iter().enumerate() {
            let want = Duration::from_secs_f64(i as f64 / 100.0);
            assert!(
                (p.due.as_secs_f64() - want.as_secs_f64()).abs() < 1e-6,
                "{i}: {:?}",
                p.due
            );
        }
    }

    #[test]
    fn duration_bounds_the_schedule() {
        let config = Config {
            count: None,
            rate: Some(10.0),
            duration: Some(Duration::from_secs(2)),
            ..iot(&[1, 2], 1)
        };
        let all = packets(config);
        assert_eq!(all.len(), 20);
        assert!(all.iter().all(|p| p.due < Duration::from_secs(2)));
        // count and duration together: whichever ends first.
        let both = packets(Config {
            count: Some(3),
            rate: Some(10.0),
            duration: Some(Duration::from_secs(2)),
            ..iot(&[1, 2], 1)
        });
        assert_eq!(both.len(), 6);
    }

    #[test]
    fn datagrams_decode_to_the_packet_and_truth_fields() {
        let configs = [
            Config {
                reboot_after: Some(7),
                start_seq: Some(65530),
                ..iot(&[1, 2, 3], 40)
            },
            Config {
                batch: Some(47),
                timestamp_unit: Some(TimestampUnit::Seconds),
                ..iot(&[4], 20)
            },
            Config {
                batch: Some(37),
                ..tiny(&[5, 6], 20)
            },
            Config {
                reboot_after: Some(5),
                ..tiny(&[7], 20)
            },
            Config { start_seq: Some(u32::MAX), ..secure_config(&[8, 9], 30) },
        ];
        for config in configs {
            for p in packets(config) {
                let record = TruthRecord::new(&p, 1);
                let line = serde_json::to_string(&record).expect("serialise");
                let back: TruthRecord = serde_json::from_str(&line).expect("parse back");
                assert_eq!(back, record, "{line}");
                assert_eq!(
                    hex::encode(&p.datagram),
                    line.split("\"datagram\":\"")
                        .nth(1)
                        .and_then(|s| s.split('"').next())
                        .unwrap_or("")
                );
                check_decodes(&back);
            }
        }
    }

    #[test]
    fn secure_frames_carry_the_seeds_payload_with_plausible_values() {
        let all = packets(secure_config(&[1001, 1002], 500));
        assert_eq!(all.len(), 1000);
        let first = of_device(&all, 1001);
        // No INIT; seq from 1; Unix ns from the clock origin.
        assert_eq!(first[0].seq, 1);
        assert_eq!(first.last().map(|p| p.seq), Some(500));
        assert_eq!(first[0].timestamp, first[0].due.as_nanos() as u64 + T0 * 1_000_000);
        assert!(first.iter().all(|p| p.kind != Kind::Init));
        let data: Vec<&Packet> = first.iter().filter(|p| p.kind == Kind::Data).collect();
        assert!((350..=450).contains(&data.len()), "about 80 % DATA: {}", data.len());
        for p in &first {
            let frame = secure::Repr::decode(&p.datagram).expect("a valid secure frame");
            assert_eq!((frame.client, frame.seq, frame.timestamp), (1001, p.seq, p.timestamp));
            match p.kind {
                Kind::Heartbeat => assert_eq!(frame.payload(), ""),
                _ => {
                    let keys: Vec<&str> = frame.pairs().map(|(k, _)| k).collect();
                    assert_eq!(keys, ["CPU", "MEM", "TEMP"], "{}", frame.payload());
                    let values: Vec<f64> = frame.pairs().map(|(_, v)| v).collect();
                    assert_eq!(values, p.readings.iter().map(|r| match r {
                        Reading::Keyed { value, .. } => *value,
                        other => panic!("{other:?}"),
                    }).collect::<Vec<_>>());
                    assert!((1.0..=99.0).contains(&values[0]) && (35.0..=90.0).contains(&values[2]), "{values:?}");
                }
            }
        }
        // The first DATA starts near the secure README's example, and the values move.
        let payload = |p: &Packet| secure::Repr::decode(&p.datagram).expect("frame").payload().to_owned();
        let cpu: std::collections::BTreeSet<String> =
            data.iter().map(|p| payload(p).split(';').next().unwrap_or("").to_owned()).collect();
        assert!(cpu.len() > 50, "CPU varies: {cpu:?}");
        assert!(payload(data[0]).starts_with("CPU="), "{}", payload(data[0]));
        let line = serde_json::to_string(&TruthRecord::new(data[0], 1)).expect("json");
        assert!(line.contains(r#"{"key":"CPU","value":"#), "{line}");
    }

    #[test]
    fn check_datagram_catches_a_line_that_does_not_match_its_datagram() {
        let p = Simulator::new(iot(&[1001], 3)).expect("valid").nth(1).expect("a DATA or HEARTBEAT");
        let good = TruthRecord::new(&p, 0);
        assert_eq!(good.check_datagram(), Ok(()));
        let mut seq = good.clone();
        seq.seq += 1;
        assert!(seq.check_datagram().is_err());
        let mut bytes = good.clone();
        bytes.datagram[11] ^= 1; // the IoTStream checksum
        assert!(bytes.check_datagram().expect_err("bad checksum").contains("does not decode"));
        let mut kind = good;
        kind.kind = Kind::Init;
        assert!(kind.check_datagram().is_err());
    }

    /// The datagram decodes with the proto codec to the record's fields.
    fn check_decodes(r: &TruthRecord) {
        if let Err(e) = r.check_datagram() {
            panic!("{e}: {r:?}");
        }
    }

    #[test]
    fn truth_json_shape() {
        let p = packets(Config {
            batch: Some(2),
            ..tiny(&[1], 5)
        })
        .into_iter()
        .find(|p| p.kind == Kind::Data)
        .expect("some DATA in 5 packets");
        let v: serde_json::Value = serde_json::to_value(TruthRecord::new(&p, 42)).expect("json");
        assert_eq!(v["dialect"], "tinytelemetry");
        assert_eq!(v["kind"], "data");
        assert_eq!(v["sent_at_ns"], 42);
        assert!(v["readings"][0]["sensor"].is_string());
        assert!(v["readings"][0]["value"].is_number());

        let p = packets(iot(&[1], 10))
            .into_iter()
            .find(|p| p.kind == Kind::Data)
            .expect("DATA");
        let line = serde_json::to_string(&TruthRecord::new(&p, 0)).expect("json");
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert!(v["readings"]
            .as_array()
            .is_some_and(|a| a.len() == 5 && a.iter().all(|x| x.is_number())));
        // f32 values are written in their shortest form (29.37, not 29.3700008392334).
        let readings = line
            .split("\"readings\":[")
            .nth(1)
            .and_then(|s| s.split(']').next())
            .unwrap_or("");
        assert!(readings.split(',').all(|v| v.len() <= 5), "{line}");
    }

    #[test]
    fn summary_line() {
        let s = Summary {
            packets: 10,
            init: 2,
            data: 6,
            heartbeat: 2,
            bytes: 256,
            destinations: 2,
            elapsed: Duration::from_secs(2),
            seed: 9,
            ..Summary::default()
        };
        assert_eq!(
            s.to_string(),
            "sent 10 packets (init 2, data 6, heartbeat 2), 256 bytes to 2 destinations in 2.000s (5.0 packets/s), seed 9"
        );
    }

    #[test]
    fn keyed_devices_tag_with_a_counter_each_the_others_send_plain() {
        let config = iot(&[1, 2, 3], 4);
        let mut keys = auth::Keys::default();
        keys.insert(Dialect::Iotstream, 1, auth::Key::new([1; 32]));
        keys.insert(Dialect::Iotstream, 2, auth::Key::new([2; 32]));
        keys.insert(Dialect::Tinytelemetry, 3, auth::Key::new([3; 32]));
        let with = |attack| Auth { keys: keys.clone(), counter_start: Some(100), attack };
        let mut tagger = Tagger::new(&config, &with(None)).expect("valid").expect("keyed devices");
        let mut counters: std::collections::HashMap<u16, Vec<u32>> = Default::default();
        for packet in packets(config.clone()) {
            let sent = tagger.datagrams(&packet).expect("tags");
            assert_eq!(sent.len(), 1);
            match keys.get(Dialect::Iotstream, packet.device) {
                None => assert_eq!(sent[0], packet.datagram, "device 3 has a key for the other dialect only"),
                Some(key) => {
                    let opened = auth::open(Dialect::Iotstream, key, &sent[0]).expect("verifies");
                    assert_eq!(opened.datagram, &packet.datagram[..]);
                    counters.entry(packet.device).or_default().push(opened.counter);
                }
            }
        }
        assert_eq!(counters[&1], vec![100, 101, 102, 103]);
        assert_eq!(counters[&2], vec![100, 101, 102, 103]);
        let first = &packets(config.clone())[0];
        let key = keys.get(Dialect::Iotstream, first.device).expect("key").clone();
        let attacked = |attack| {
            let mut t = Tagger::new(&config, &with(Some(attack))).expect("valid").expect("keyed");
            t.datagrams(first).expect("tags")
        };
        assert_eq!(auth::open(Dialect::Iotstream, &key, &attacked(Attack::BadTag)[0]), Err(auth::Refusal::BadTag));
        assert!(matches!(
            auth::open(Dialect::Iotstream, &key, &attacked(Attack::Truncated)[0]),
            Err(auth::Refusal::Truncated { .. })
        ));
        let replay = attacked(Attack::Replay);
        assert_eq!(replay.len(), 2);
        assert_eq!(replay[0], replay[1]);
        // No keyed device: no tagger. A batch that leaves no room for the trailer is refused.
        assert!(Tagger::new(&iot(&[9], 1), &with(None)).expect("valid").is_none());
        let full = Config { batch: Some(47), ..iot(&[1], 1) };
        assert!(Tagger::new(&full, &with(None)).expect_err("no room").to_string().contains("at most 44"));
        assert_eq!("replay".parse::<Attack>().ok(), Some(Attack::Replay));
        assert!("nonsense".parse::<Attack>().is_err());
    }
}
