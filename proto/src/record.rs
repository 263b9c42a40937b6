//! Records: one received datagram, normalised (see `docs/protocol.md`, "Records").
//!
//! A record's identity comes from the packet alone: `(stream, device time, seq)`. Every
//! node derives the same [`Key`] without talking. The key also carries an 8-byte tag of
//! the record's content, so that two records with the same identity but different
//! content (a *conflict*) are both kept, in a deterministic order, while a true
//! duplicate maps onto the same key.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::wire::{self, iotstream, secure, tinytelemetry, tinytelemetry::SensorType, Dialect};

/// Which device a record came from: the dialect and the device (client) id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StreamId {
    pub dialect: Dialect,
    pub device: u32,
}

impl StreamId {
    pub fn new(dialect: Dialect, device: u32) -> Self {
        StreamId { dialect, device }
    }

    /// The 5-byte key prefix shared by every record of this stream.
    pub fn key_prefix(&self) -> [u8; 5] {
        let mut k = [0u8; 5];
        k[0] = self.dialect.code();
        k[1..5].copy_from_slice(&self.device.to_be_bytes());
        k
    }

    pub fn from_key_prefix(b: &[u8]) -> Option<StreamId> {
        let dialect = Dialect::from_code(*b.first()?)?;
        let device = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
        Some(StreamId { dialect, device })
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.dialect, self.device)
    }
}

/// What a datagram announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// IoTStream INIT: the device (re)booted; its seq restarts at 0.
    Init,
    Data,
    Heartbeat,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Init => "init",
            Kind::Data => "data",
            Kind::Heartbeat => "heartbeat",
        }
    }
    /// Upper-case form used in the source documents' CSV log (`msg_type` column).
    pub fn csv_name(self) -> &'static str {
        match self {
            Kind::Init => "INIT",
            Kind::Data => "DATA",
            Kind::Heartbeat => "HEARTBEAT",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The readings a record carries, in the shape its dialect sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Readings {
    None,
    /// IoTStream: an unlabelled batch of f32.
    Batch(Vec<f32>),
    /// TinyTelemetry: (sensor type, f32) pairs.
    Sensors(Vec<(SensorCode, f32)>),
    /// Secure frame: `KEY=VALUE` pairs.
    Pairs(Vec<(String, f64)>),
}

/// A TinyTelemetry sensor type as stored (its wire code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorCode(pub u8);

impl SensorCode {
    pub fn name(self) -> &'static str {
        SensorType::from_code(self.0).map(SensorType::name).unwrap_or("unknown")
    }
}

/// One reading, as the query API shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    F32(f32),
    F64(f64),
}

impl Value {
    pub fn as_f64(self) -> f64 {
        match self {
            Value::F32(v) => f64::from(v),
            Value::F64(v) => v,
        }
    }
}

impl fmt::Display for Value {
    /// Shortest text that reads back to the same value (`29.37`, not `29.3700008`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::F32(v) => write!(f, "{v}"),
            Value::F64(v) => write!(f, "{v}"),
        }
    }
}

impl Readings {
    pub fn len(&self) -> usize {
        match self {
            Readings::None => 0,
            Readings::Batch(v) => v.len(),
            Readings::Sensors(v) => v.len(),
            Readings::Pairs(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(label, value)` for each reading: `r1..rN` for an IoTStream batch, the sensor type
    /// for TinyTelemetry, the key for the secure frame.
    pub fn labelled(&self) -> Vec<(String, Value)> {
        match self {
            Readings::None => Vec::new(),
            Readings::Batch(v) => v.iter().enumerate().map(|(i, x)| (format!("r{}", i + 1), Value::F32(*x))).collect(),
            Readings::Sensors(v) => v.iter().map(|(s, x)| (s.name().to_owned(), Value::F32(*x))).collect(),
            Readings::Pairs(v) => v.iter().map(|(k, x)| (k.clone(), Value::F64(*x))).collect(),
        }
    }
}

/// How an IoTStream listener reads the 32-bit timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestampUnit {
    /// Unix milliseconds mod 2^32, unwrapped against the collector's clock (as the IoTStream v1 Mini-RFC's
    /// latency measurement reads it).
    #[default]
    Ms,
    /// Unix seconds (as the Mini-RFC's header table says).
    S,
}

/// A normalised datagram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub stream: StreamId,
    /// Device time in Unix nanoseconds (unwrapped, unit-normalised).
    pub device_time_ns: u64,
    /// The sequence number as sent (16-bit for IoTStream, 32 for TinyTelemetry, 64 secure).
    pub seq: u64,
    /// The timestamp field as sent, before unwrapping.
    pub timestamp_raw: u64,
    pub kind: Kind,
    pub readings: Readings,
}

const NS_PER_MS: u64 = 1_000_000;
const NS_PER_S: u64 = 1_000_000_000;

/// The value `v + k·2^32` (k ≥ 0) closest to `reference`: a wrapped 32-bit counter
/// read against a full-width clock.
pub fn unwrap_u32(v: u32, reference: u64) -> u64 {
    const SPAN: u64 = 1 << 32;
    let base = reference & !(SPAN - 1);
    let candidates = [base.checked_sub(SPAN), Some(base), base.checked_add(SPAN)];
    candidates
        .into_iter()
        .flatten()
        .filter_map(|b| b.checked_add(u64::from(v)))
        .min_by_key(|c| c.abs_diff(reference))
        .unwrap_or(u64::from(v))
}

impl Record {
    /// Decodes and normalises one datagram of `dialect`. `arrival_ns` (Unix ns, the
    /// collector's clock) is only used to unwrap IoTStream's millisecond timestamp.
    pub fn from_datagram(
        dialect: Dialect,
        bytes: &[u8],
        arrival_ns: u64,
        unit: TimestampUnit,
    ) -> Result<Record, wire::Error> {
        match dialect {
            Dialect::Iotstream => Ok(Record::from_iotstream(&iotstream::Repr::decode(bytes)?, arrival_ns, unit)),
            Dialect::Tinytelemetry => Ok(Record::from_tinytelemetry(&tinytelemetry::Repr::decode(bytes)?)),
            Dialect::Secure => Ok(Record::from_secure(&secure::Repr::decode(bytes)?)),
        }
    }

    pub fn from_iotstream(r: &iotstream::Repr, arrival_ns: u64, unit: TimestampUnit) -> Record {
        let device_time_ns = match unit {
            TimestampUnit::Ms => unwrap_u32(r.timestamp, arrival_ns / NS_PER_MS).saturating_mul(NS_PER_MS),
            TimestampUnit::S => u64::from(r.timestamp) * NS_PER_S,
        };
        let (kind, readings) = match r.msg_type {
            iotstream::MsgType::Init => (Kind::Init, Readings::None),
            iotstream::MsgType::Heartbeat => (Kind::Heartbeat, Readings::None),
            iotstream::MsgType::Data => (Kind::Data, Readings::Batch(r.readings().to_vec())),
        };
        Record {
            stream: StreamId::new(Dialect::Iotstream, u32::from(r.device)),
            device_time_ns,
            seq: u64::from(r.seq),
            timestamp_raw: u64::from(r.timestamp),
            kind,
            readings,
        }
    }

    pub fn from_tinytelemetry(r: &tinytelemetry::Repr) -> Record {
        let (kind, readings) = match r.msg_type {
            tinytelemetry::MsgType::Heartbeat => (Kind::Heartbeat, Readings::None),
            tinytelemetry::MsgType::Data => (
                Kind::Data,
                Readings::Sensors(r.readings().iter().map(|(s, v)| (SensorCode(s.code()), *v)).collect()),
            ),
        };
        Record {
            stream: StreamId::new(Dialect::Tinytelemetry, u32::from(r.device)),
            device_time_ns: u64::from(r.timestamp) * NS_PER_S,
            seq: u64::from(r.seq),
            timestamp_raw: u64::from(r.timestamp),
            kind,
            readings,
        }
    }

    pub fn from_secure(r: &secure::Repr<'_>) -> Record {
        let pairs: Vec<(String, f64)> = r.pairs().map(|(k, v)| (k.to_owned(), v)).collect();
        let (kind, readings) =
            if pairs.is_empty() { (Kind::Heartbeat, Readings::None) } else { (Kind::Data, Readings::Pairs(pairs)) };
        Record {
            stream: StreamId::new(Dialect::Secure, r.client),
            device_time_ns: r.timestamp,
            seq: r.seq,
            timestamp_raw: r.timestamp,
            kind,
            readings,
        }
    }

    /// Bit width of this dialect's sequence number.
    pub fn seq_bits(dialect: Dialect) -> u32 {
        match dialect {
            Dialect::Iotstream => 16,
            Dialect::Tinytelemetry => 32,
            Dialect::Secure => 64,
        }
    }

    /// The identity part of the key: `(stream, device time, seq)`.
    pub fn identity(&self) -> Identity {
        Identity { stream: self.stream, device_time_ns: self.device_time_ns, seq: self.seq }
    }

    /// The canonical content bytes (kind, raw timestamp, readings): see [`content`].
    pub fn content_bytes(&self) -> Vec<u8> {
        content::encode(self.kind, self.timestamp_raw, &self.readings)
    }

    /// 8 bytes of BLAKE3 over [`Record::content_bytes`].
    pub fn content_tag(&self) -> [u8; 8] {
        content::tag(&self.content_bytes())
    }

    pub fn key(&self) -> Key {
        self.identity().key(self.content_tag())
    }

    /// True if the two records say the same thing (compares float bits, so NaN == NaN).
    pub fn same_content(&self, other: &Record) -> bool {
        self.content_bytes() == other.content_bytes()
    }
}

/// `(stream, device time, seq)`: what makes two datagrams "the same packet".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Identity {
    pub stream: StreamId,
    pub device_time_ns: u64,
    pub seq: u64,
}

impl Identity {
    /// The 21-byte prefix shared by all records with this identity (conflicts included).
    pub fn key_prefix(&self) -> [u8; Key::IDENTITY_LEN] {
        let mut k = [0u8; Key::IDENTITY_LEN];
        k[..5].copy_from_slice(&self.stream.key_prefix());
        k[5..13].copy_from_slice(&self.device_time_ns.to_be_bytes());
        k[13..21].copy_from_slice(&self.seq.to_be_bytes());
        k
    }

    pub fn key(&self, tag: [u8; 8]) -> Key {
        let mut k = [0u8; Key::LEN];
        k[..Key::IDENTITY_LEN].copy_from_slice(&self.key_prefix());
        k[Key::IDENTITY_LEN..].copy_from_slice(&tag);
        Key(k)
    }
}

/// A record's storage key: dialect u8, device u32, device time u64 ns, seq u64, content
/// tag 8 bytes — all big-endian, so byte order is device order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(pub [u8; Key::LEN]);

impl Key {
    pub const LEN: usize = 29;
    pub const IDENTITY_LEN: usize = 21;

    pub fn from_slice(b: &[u8]) -> Option<Key> {
        Some(Key(b.try_into().ok()?))
    }

    pub fn identity(&self) -> Option<Identity> {
        let stream = StreamId::from_key_prefix(&self.0[..5])?;
        let device_time_ns = u64::from_be_bytes(self.0[5..13].try_into().ok()?);
        let seq = u64::from_be_bytes(self.0[13..21].try_into().ok()?);
        Some(Identity { stream, device_time_ns, seq })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// The canonical encoding of a record's content: what its content tag hashes and what a
/// window blob's slot holds. Versioned with the blob format (`docs/protocol.md`).
///
/// ```text
/// kind u8 (0 init, 1 data, 2 heartbeat) | timestamp_raw u64 | readings
/// readings: 0 (none)
///         | 1 n:u8 n×(f32)                       IoTStream batch
///         | 2 n:u8 n×(sensor u8, f32)            TinyTelemetry
///         | 3 n:u8 n×(len u8, key, f64)          secure KEY=VALUE
/// ```
///
/// All big-endian; floats by their bit pattern, so every value (NaN included) round-trips.
pub mod content {
    use super::{Kind, Readings, SensorCode};

    /// Why content bytes did not decode.
    #[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
    #[non_exhaustive]
    pub enum Error {
        #[error("content ends early")]
        Truncated,
        #[error("unknown kind {0}")]
        Kind(u8),
        #[error("unknown readings form {0}")]
        Form(u8),
        #[error("key is not UTF-8")]
        Key,
        #[error("trailing byte {0:#04x} after the content (padding must be zero)")]
        Trailing(u8),
    }

    fn kind_code(k: Kind) -> u8 {
        match k {
            Kind::Init => 0,
            Kind::Data => 1,
            Kind::Heartbeat => 2,
        }
    }

    /// Content bytes; more than 255 readings are cut to 255 (no dialect sends that many).
    pub fn encode(kind: Kind, timestamp_raw: u64, readings: &Readings) -> Vec<u8> {
        let mut out = Vec::with_capacity(32);
        out.push(kind_code(kind));
        out.extend_from_slice(&timestamp_raw.to_be_bytes());
        match readings {
            Readings::None => out.push(0),
            Readings::Batch(v) => {
                out.push(1);
                out.push(v.len().min(255) as u8);
                for x in v.iter().take(255) {
                    out.extend_from_slice(&x.to_bits().to_be_bytes());
                }
            }
            Readings::Sensors(v) => {
                out.push(2);
                out.push(v.len().min(255) as u8);
                for (s, x) in v.iter().take(255) {
                    out.push(s.0);
                    out.extend_from_slice(&x.to_bits().to_be_bytes());
                }
            }
            Readings::Pairs(v) => {
                out.push(3);
                out.push(v.len().min(255) as u8);
                for (k, x) in v.iter().take(255) {
                    let k = &k.as_bytes()[..k.len().min(255)];
                    out.push(k.len() as u8);
                    out.extend_from_slice(k);
                    out.extend_from_slice(&x.to_bits().to_be_bytes());
                }
            }
        }
        out
    }

    /// 8 bytes of BLAKE3 over content bytes.
    pub fn tag(content: &[u8]) -> [u8; 8] {
        let hash = blake3::hash(content);
        let mut tag = [0u8; 8];
        tag.copy_from_slice(&hash.as_bytes()[..8]);
        tag
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
            if self.0.len() < n {
                return Err(Error::Truncated);
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn u8(&mut self) -> Result<u8, Error> {
            Ok(self.take(1)?[0])
        }
        fn u32(&mut self) -> Result<u32, Error> {
            let mut a = [0u8; 4];
            a.copy_from_slice(self.take(4)?);
            Ok(u32::from_be_bytes(a))
        }
        fn u64(&mut self) -> Result<u64, Error> {
            let mut a = [0u8; 8];
            a.copy_from_slice(self.take(8)?);
            Ok(u64::from_be_bytes(a))
        }
    }

    /// Decodes content bytes, followed only by zero padding (as in a window slot).
    pub fn decode(bytes: &[u8]) -> Result<(Kind, u64, Readings), Error> {
        let mut r = Reader(bytes);
        let kind = match r.u8()? {
            0 => Kind::Init,
            1 => Kind::Data,
            2 => Kind::Heartbeat,
            k => return Err(Error::Kind(k)),
        };
        let ts = r.u64()?;
        let readings = match r.u8()? {
            0 => Readings::None,
            1 => {
                let n = r.u8()?;
                Readings::Batch((0..n).map(|_| r.u32().map(f32::from_bits)).collect::<Result<_, _>>()?)
            }
            2 => {
                let n = r.u8()?;
                Readings::Sensors(
                    (0..n).map(|_| Ok((SensorCode(r.u8()?), f32::from_bits(r.u32()?)))).collect::<Result<_, Error>>()?,
                )
            }
            3 => {
                let n = r.u8()?;
                let mut pairs = Vec::with_capacity(usize::from(n));
                for _ in 0..n {
                    let len = r.u8()?;
                    let key = std::str::from_utf8(r.take(usize::from(len))?).map_err(|_| Error::Key)?.to_owned();
                    pairs.push((key, f64::from_bits(r.u64()?)));
                }
                Readings::Pairs(pairs)
            }
            f => return Err(Error::Form(f)),
        };
        if let Some(b) = r.0.iter().find(|b| **b != 0) {
            return Err(Error::Trailing(*b));
        }
        Ok((kind, ts, readings))
    }
}

/// The one binary encoding of records and state: bincode 2, standard configuration
/// (little-endian, varints), with a decode size limit so hostile bytes cannot make it
/// allocate without bound.
pub mod codec {
    use serde::{de::DeserializeOwned, Serialize};

    /// Largest value `from_slice` accepts. The codec reads what the store wrote itself
    /// (chunks, log entries, sealed windows), which can be tens of MiB: a write-ahead log
    /// entry holds every slow stream's records of one flush, a sealed window up to a
    /// million records. A smaller limit would make such values unreadable, i.e. lose them.
    /// The limit is not what bounds memory for damaged bytes: serde preallocates
    /// containers cautiously and grows them only as the input really holds elements.
    pub const MAX_VALUE: usize = 1 << 30;

    fn config() -> impl bincode::config::Config {
        bincode::config::standard().with_limit::<MAX_VALUE>()
    }

    /// Why stored or received bytes did not decode.
    #[derive(Debug, thiserror::Error)]
    #[error("undecodable {what}: {source}")]
    pub struct DecodeError {
        pub what: &'static str,
        #[source]
        pub source: bincode::error::DecodeError,
    }

    pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
        // Serialising plain data into a Vec cannot fail.
        bincode::serde::encode_to_vec(value, bincode::config::standard()).unwrap_or_default()
    }

    /// Appends `value`'s encoding to `out` (the bytes [`to_vec`] would give).
    pub fn append<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
        // Writing plain data into a Vec cannot fail.
        let _ = bincode::serde::encode_into_std_write(value, out, bincode::config::standard());
    }

    pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], what: &'static str) -> Result<T, DecodeError> {
        bincode::serde::decode_from_slice(bytes, config()).map(|(v, _)| v).map_err(|source| DecodeError { what, source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unwrap_millis_against_clock() {
        // The Mini-RFC's example: 245642102 = 1765477200758 mod 2^32, received at 1765477200.758614.
        assert_eq!(unwrap_u32(245_642_102, 1_765_477_200_759), 1_765_477_200_758);
        // Near a wrap: the device stamped just before 2^32, the collector reads just after.
        let wrap = 410u64 << 32;
        assert_eq!(unwrap_u32(u32::MAX, wrap + 5), wrap - 1);
        assert_eq!(unwrap_u32(3, wrap - 2), wrap + 3);
        assert_eq!(unwrap_u32(7, 0), 7);
    }

    #[test]
    fn seed_example_normalises() {
        let r = iotstream::Repr::new(iotstream::MsgType::Data, 1001, 1, 245_642_102, &[29.37, 23.53, 22.61, 22.04, 22.99])
            .expect("valid");
        let rec = Record::from_datagram(Dialect::Iotstream, &r.to_bytes(), 1_765_477_200_758_614_000, TimestampUnit::Ms)
            .expect("decodes");
        assert_eq!(rec.device_time_ns, 1_765_477_200_758_000_000);
        assert_eq!(rec.stream, StreamId::new(Dialect::Iotstream, 1001));
        assert_eq!((rec.seq, rec.kind), (1, Kind::Data));
        let labels: Vec<String> = rec.readings.labelled().iter().map(|(l, v)| format!("{l}={v}")).collect();
        assert_eq!(labels, ["r1=29.37", "r2=23.53", "r3=22.61", "r4=22.04", "r5=22.99"]);
        let secs = Record::from_datagram(Dialect::Iotstream, &r.to_bytes(), 0, TimestampUnit::S).expect("decodes");
        assert_eq!(secs.device_time_ns, 245_642_102 * NS_PER_S);
    }

    #[test]
    fn key_orders_by_device_time_then_seq() {
        let base = Identity { stream: StreamId::new(Dialect::Iotstream, 9), device_time_ns: 5, seq: 65_535 };
        let later = Identity { device_time_ns: 6, seq: 0, ..base };
        assert!(base.key([0xff; 8]) < later.key([0; 8]));
        assert_eq!(base.key([1; 8]).identity(), Some(base));
    }

    #[test]
    fn conflict_has_same_identity_other_tag() {
        let a = Record {
            stream: StreamId::new(Dialect::Tinytelemetry, 3),
            device_time_ns: 10,
            seq: 1,
            timestamp_raw: 0,
            kind: Kind::Data,
            readings: Readings::Sensors(vec![(SensorCode(1), 20.0)]),
        };
        let mut b = a.clone();
        b.readings = Readings::Sensors(vec![(SensorCode(1), 21.0)]);
        assert_eq!(a.identity(), b.identity());
        assert_ne!(a.key(), b.key());
        assert_eq!(a.key(), a.clone().key());
        assert!(!a.same_content(&b));
    }

    fn arb_readings() -> impl Strategy<Value = Readings> {
        prop_oneof![
            Just(Readings::None),
            proptest::collection::vec(any::<f32>(), 0..48).prop_map(Readings::Batch),
            proptest::collection::vec((1u8..=3, any::<f32>()), 0..38)
                .prop_map(|v| Readings::Sensors(v.into_iter().map(|(s, x)| (SensorCode(s), x)).collect())),
            proptest::collection::vec(("[A-Za-z0-9_.-]{1,32}", any::<f64>()), 0..65).prop_map(Readings::Pairs),
        ]
    }

    #[test]
    fn content_golden() {
        let bytes = content::encode(Kind::Data, 245_642_102, &Readings::Batch(vec![29.37]));
        assert_eq!(hex::encode(&bytes), "01000000000ea43376010141eaf5c3");
        let mut padded = bytes.clone();
        padded.extend_from_slice(&[0, 0, 0]);
        assert_eq!(content::decode(&padded), Ok((Kind::Data, 245_642_102, Readings::Batch(vec![29.37]))));
        padded.push(1);
        assert_eq!(content::decode(&padded), Err(content::Error::Trailing(1)));
        assert_eq!(content::decode(&bytes[..5]), Err(content::Error::Truncated));
        assert_eq!(content::decode(&[9]), Err(content::Error::Kind(9)));
    }

    proptest! {
        #[test]
        fn content_round_trip(kind in 0u8..3, ts: u64, readings in arb_readings()) {
            let kind = [Kind::Init, Kind::Data, Kind::Heartbeat][usize::from(kind)];
            let bytes = content::encode(kind, ts, &readings);
            let (k, t, r) = content::decode(&bytes).expect("decodes");
            prop_assert_eq!((k, t), (kind, ts));
            prop_assert_eq!(content::encode(k, t, &r), bytes);
        }

        #[test]
        fn content_decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = content::decode(&bytes);
        }

        #[test]
        fn unwrap_is_within_half_span(v: u32, reference in 0u64..(1u64 << 50)) {
            let u = unwrap_u32(v, reference);
            prop_assert_eq!(u & 0xffff_ffff, u64::from(v));
            prop_assert!(u.abs_diff(reference) <= 1 << 31 || reference < 1 << 31);
        }

        #[test]
        fn record_codec_round_trip(device: u32, t: u64, seq: u64, vals in proptest::collection::vec(-1e6f32..1e6, 0..10)) {
            let r = Record {
                stream: StreamId::new(Dialect::Iotstream, device),
                device_time_ns: t,
                seq,
                timestamp_raw: t,
                kind: Kind::Data,
                readings: Readings::Batch(vals),
            };
            let back: Record = codec::from_slice(&codec::to_vec(&r), "record").expect("decodes");
            prop_assert_eq!(back, r);
        }
    }
}
