//! The three ingest dialects, bit for bit (see `docs/protocol.md`).
//!
//! Each dialect follows smoltcp's `wire` pattern: a zero-copy `Packet<T: AsRef<[u8]>>`
//! view whose `new_checked` validates lengths (after it returns `Ok`, no accessor panics),
//! setters where `T: AsMut<[u8]>`, and a validated `Repr` with `parse` and `emit`.
//!
//! The dialects cannot be told apart by their bytes (IoTStream and TinyTelemetry headers
//! both start `01 01`), so a node runs one listener per dialect.

pub mod iotstream;
pub mod secure;
pub mod tinytelemetry;

use std::fmt;

/// Largest datagram the two sensor dialects allow (the Mini-RFC's and the TinyTelemetry
/// document's packet size limit).
pub const MAX_SENSOR_DATAGRAM: usize = 200;

/// A dialect: which wire format a datagram (and so a stream) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    /// IoTStream v1 (the IoTStream v1 Mini-RFC), default UDP port 5005.
    Iotstream,
    /// TinyTelemetry v1 (the TinyTelemetry v1 design document), default UDP port 5000.
    Tinytelemetry,
    /// The secure telemetry collection README's frame, carried over DTLS, default UDP port 5006.
    Secure,
}

impl Dialect {
    /// Every dialect, in code order.
    pub const ALL: [Dialect; 3] = [Dialect::Iotstream, Dialect::Tinytelemetry, Dialect::Secure];

    /// The stable one-byte code used in storage keys.
    pub fn code(self) -> u8 {
        match self {
            Dialect::Iotstream => 1,
            Dialect::Tinytelemetry => 2,
            Dialect::Secure => 3,
        }
    }

    /// The dialect for a storage code.
    pub fn from_code(code: u8) -> Option<Dialect> {
        Dialect::ALL.into_iter().find(|d| d.code() == code)
    }

    /// The device ids the dialect can carry: IoTStream's is a u16, TinyTelemetry's a u16
    /// other than 0, the secure frame's client id a u32.
    pub fn devices(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Dialect::Iotstream => 0..=u32::from(u16::MAX),
            Dialect::Tinytelemetry => 1..=u32::from(u16::MAX),
            Dialect::Secure => 0..=u32::MAX,
        }
    }

    /// The lowercase name used in URLs, metrics and the CLI.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Iotstream => "iotstream",
            Dialect::Tinytelemetry => "tinytelemetry",
            Dialect::Secure => "secure",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Dialect {
    type Err = UnknownDialect;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Dialect::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownDialect(s.to_owned()))
    }
}

/// A dialect name that is not one of `iotstream`, `tinytelemetry`, `secure`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown dialect {0:?} (expected iotstream, tinytelemetry or secure)")]
pub struct UnknownDialect(pub String);

/// Why a datagram was rejected. Each variant names what is wrong; `reason()` is the
/// stable label used for the drop counter in `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("too short: {len} bytes, need at least {need}")]
    TooShort { len: usize, need: usize },
    #[error("too long: {len} bytes, at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("bad version {0}, expected 1")]
    BadVersion(u8),
    #[error("bad message type {0}")]
    BadType(u8),
    #[error("bad checksum: header says {stated:#04x}, bytes sum to {computed:#04x}")]
    BadChecksum { stated: u8, computed: u8 },
    #[error("length mismatch: header implies {expected} bytes, datagram has {actual}")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("bad reading count {count} for {kind} (allowed {min}..={max})")]
    BadCount { kind: &'static str, count: u8, min: u8, max: u8 },
    #[error("device id 0 is invalid")]
    DeviceZero,
    #[error("bad sensor type {0} (expected 1 temperature, 2 humidity or 3 voltage)")]
    BadSensorType(u8),
    #[error("payload is not UTF-8")]
    BadUtf8,
    #[error("payload item {index} is not KEY=VALUE: {why}")]
    BadPair { index: usize, why: &'static str },
}

impl Error {
    /// A short, stable, snake_case label for metrics (`reason="bad_checksum"`).
    pub fn reason(&self) -> &'static str {
        match self {
            Error::TooShort { .. } => "too_short",
            Error::TooLong { .. } => "too_long",
            Error::BadVersion(_) => "bad_version",
            Error::BadType(_) => "bad_type",
            Error::BadChecksum { .. } => "bad_checksum",
            Error::LengthMismatch { .. } => "length_mismatch",
            Error::BadCount { .. } => "bad_count",
            Error::DeviceZero => "device_zero",
            Error::BadSensorType(_) => "bad_sensor_type",
            Error::BadUtf8 => "bad_utf8",
            Error::BadPair { .. } => "bad_pair",
        }
    }

    /// Every reason label, so metrics can pre-register them.
    pub const REASONS: [&'static str; 11] = [
        "too_short",
        "too_long",
        "bad_version",
        "bad_type",
        "bad_checksum",
        "length_mismatch",
        "bad_count",
        "device_zero",
        "bad_sensor_type",
        "bad_utf8",
        "bad_pair",
    ];
}

/// Big-endian field readers over a slice whose length the caller has checked.
pub(crate) mod be {
    use std::ops::Range;

    pub fn u16_at(b: &[u8], r: Range<usize>) -> u16 {
        let mut a = [0u8; 2];
        a.copy_from_slice(&b[r]);
        u16::from_be_bytes(a)
    }
    pub fn u32_at(b: &[u8], r: Range<usize>) -> u32 {
        let mut a = [0u8; 4];
        a.copy_from_slice(&b[r]);
        u32::from_be_bytes(a)
    }
    pub fn u64_at(b: &[u8], r: Range<usize>) -> u64 {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[r]);
        u64::from_be_bytes(a)
    }
    pub fn f32_at(b: &[u8], at: usize) -> f32 {
        f32::from_bits(u32_at(b, at..at + 4))
    }
}
