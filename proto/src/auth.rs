//! Authenticated datagrams for the plain dialects (IoTStream, TinyTelemetry): a trailer
//! after the plain datagram carrying a per-device counter and a truncated keyed-BLAKE3
//! tag, and a replay window on the counter. Pure: no I/O, no clock.
//!
//! ```text
//!  0                 N                 N+4                N+12   (N + 12 ≤ 200)
//! +-----------------+-----------------+------------------+
//! | seed datagram   | counter u32 BE  | tag (8 bytes)    |
//! +-----------------+-----------------+------------------+
//! tag = first 8 bytes of BLAKE3-keyed(key, "telemesh/auth/1/" ‖ dialect name ‖ 0x00
//!                                         ‖ bytes 0..N+4)
//! ```
//!
//! N, the length of the seed datagram, is read from its own header (IoTStream: 12 + 4 ×
//! batch; TinyTelemetry: 12 for a HEARTBEAT, 13 + 5 × count for DATA), so a datagram that
//! lost bytes of its trailer is told apart from one whose tag is wrong. Without the
//! trailer the bytes are exactly the plain datagram. `docs/protocol.md` is the reference.

use std::collections::HashMap;
use std::fmt;

use crate::wire::{Dialect, MAX_SENSOR_DATAGRAM};

/// Bytes of the counter.
pub const COUNTER_LEN: usize = 4;
/// Bytes of the (truncated) tag.
pub const TAG_LEN: usize = 8;
/// Bytes the trailer adds to a datagram.
pub const TRAILER_LEN: usize = COUNTER_LEN + TAG_LEN;
/// The longest seed datagram that still fits the 200-byte limit with its trailer.
pub const MAX_BODY: usize = MAX_SENSOR_DATAGRAM - TRAILER_LEN;
/// Bytes of a device key.
pub const KEY_LEN: usize = 32;
/// The domain string's prefix; the dialect's name follows, then a zero byte.
pub const DOMAIN: &str = "telemesh/auth/1/";
/// Counters this far below the highest one seen (and no further) may still arrive.
pub const WINDOW: u32 = 64;
/// A counter more than this far below the highest is a reset of the device, not a late packet.
pub const RESET_DISTANCE: u32 = 1 << 16;

/// A 32-byte per-device key. Its `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; KEY_LEN]);

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key(bytes)
    }

    /// 8 bytes that name this key without revealing it (keyed BLAKE3 of a fixed string),
    /// so saved state can tell whether a device's key changed.
    pub fn fingerprint(&self) -> [u8; 8] {
        let hash = blake3::keyed_hash(&self.0, b"telemesh/auth/1/fingerprint");
        let mut out = [0u8; 8];
        out.copy_from_slice(&hash.as_bytes()[..8]);
        out
    }

    /// A key from 64 hexadecimal digits. The error never repeats the text.
    pub fn from_hex(text: &str) -> Result<Key, &'static str> {
        let mut bytes = [0u8; KEY_LEN];
        hex::decode_to_slice(text, &mut bytes).map_err(|_| "a key is 64 hexadecimal digits (32 bytes)")?;
        Ok(Key(bytes))
    }
}

/// Why a datagram was refused. `reason()` is the label of the drop counter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("truncated: {len} bytes, the header and trailer need {need}")]
    Truncated { len: usize, need: usize },
    #[error("overlong: {len} bytes, the header and trailer make {expected} (at most 200)")]
    Overlong { len: usize, expected: usize },
    #[error("the authentication tag does not verify")]
    BadTag,
    #[error("counter {counter} was already received")]
    Replay { counter: u32 },
    #[error("counter {counter} is older than the replay window (highest {highest})")]
    TooOld { counter: u32, highest: u32 },
    #[error("counter {counter} is far behind the highest {highest}: the device was reset")]
    Reset { counter: u32, highest: u32 },
    #[error("device {device} has no key and authentication is required")]
    UnknownKey { device: u16 },
}

impl Refusal {
    /// A short, stable label for metrics (`reason="auth_bad_tag"`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Truncated { .. } => "auth_truncated",
            Refusal::Overlong { .. } => "auth_overlong",
            Refusal::BadTag => "auth_bad_tag",
            Refusal::Replay { .. } => "auth_replay",
            Refusal::TooOld { .. } => "auth_too_old",
            Refusal::Reset { .. } => "auth_reset",
            Refusal::UnknownKey { .. } => "auth_unknown_key",
        }
    }

    /// Every reason label, so metrics can pre-register them.
    pub const REASONS: [&'static str; 7] = [
        "auth_truncated",
        "auth_overlong",
        "auth_bad_tag",
        "auth_replay",
        "auth_too_old",
        "auth_reset",
        "auth_unknown_key",
    ];
}

/// Why a trailer could not be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    #[error("datagram of {len} bytes: with its trailer it would exceed 200 bytes (at most {max})")]
    TooLong { len: usize, max: usize },
}

/// The device id of a datagram, peeked from its header (bytes 2..4 in both plain dialects).
pub fn device(bytes: &[u8]) -> Option<u16> {
    match bytes {
        [_, _, a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
        _ => None,
    }
}

/// The length of the seed datagram at the start of `bytes`, as its header states it;
/// `Err(need)` when the header is too short to say. A header whose type is unknown
/// (IoTStream's batch is read whatever the type; TinyTelemetry's type decides) counts as
/// the whole datagram but the trailer, and its tag is checked as such.
fn body_len(dialect: Dialect, bytes: &[u8]) -> Result<usize, usize> {
    let fallback = bytes.len().saturating_sub(TRAILER_LEN);
    match dialect {
        Dialect::Iotstream => bytes.get(10).map(|batch| 12 + 4 * usize::from(*batch)).ok_or(11),
        Dialect::Tinytelemetry => match bytes.get(1) {
            None => Err(2),
            Some(2) => Ok(12),
            Some(1) => bytes.get(12).map(|count| 13 + 5 * usize::from(*count)).ok_or(13),
            Some(_) => Ok(fallback),
        },
        Dialect::Secure => Ok(fallback),
    }
}

/// The tag over `signed` (the seed datagram and the counter).
pub fn tag(dialect: Dialect, key: &Key, signed: &[u8]) -> [u8; TAG_LEN] {
    // One contiguous input on the stack: BLAKE3's one-shot `keyed_hash` is cheaper for a
    // datagram than a `Hasher` fed in four pieces. Longer inputs (not a valid datagram,
    // but `tag` is public) take the incremental path.
    let domain = [DOMAIN.as_bytes(), dialect.name().as_bytes(), &[0]];
    let domain_len: usize = domain.iter().map(|d| d.len()).sum();
    let hash = if domain_len + signed.len() <= INPUT_MAX {
        let mut input = [0u8; INPUT_MAX];
        let mut at = 0;
        for part in domain.into_iter().chain([signed]) {
            input[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        blake3::keyed_hash(&key.0, &input[..at])
    } else {
        let mut hasher = blake3::Hasher::new_keyed(&key.0);
        domain.into_iter().chain([signed]).for_each(|part| {
            hasher.update(part);
        });
        hasher.finalize()
    };
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
    out
}

/// Room for the longest domain string and a 200-byte datagram.
const INPUT_MAX: usize = 256;

/// Appends the trailer (counter and tag) to `datagram`.
pub fn seal(dialect: Dialect, key: &Key, counter: u32, datagram: &mut Vec<u8>) -> Result<(), SealError> {
    if datagram.len() > MAX_BODY {
        return Err(SealError::TooLong { len: datagram.len(), max: MAX_BODY });
    }
    datagram.extend_from_slice(&counter.to_be_bytes());
    let t = tag(dialect, key, datagram);
    datagram.extend_from_slice(&t);
    Ok(())
}

/// A datagram whose tag verified: the seed datagram and its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opened<'a> {
    pub datagram: &'a [u8],
    pub counter: u32,
}

/// Checks the trailer of `bytes` under `key` (not the replay window: see [`Window`]).
pub fn open<'a>(dialect: Dialect, key: &Key, bytes: &'a [u8]) -> Result<Opened<'a>, Refusal> {
    let len = bytes.len();
    let body = body_len(dialect, bytes).map_err(|need| Refusal::Truncated { len, need: need + TRAILER_LEN })?;
    let expected = body + TRAILER_LEN;
    if len < expected {
        return Err(Refusal::Truncated { len, need: expected });
    }
    if len > expected || len > MAX_SENSOR_DATAGRAM {
        return Err(Refusal::Overlong { len, expected });
    }
    let (signed, stated) = bytes.split_at(body + COUNTER_LEN);
    let computed = tag(dialect, key, signed);
    // Compare without an early exit, so the time taken does not tell how much matched.
    let diff = computed.iter().zip(stated).fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if diff != 0 {
        return Err(Refusal::BadTag);
    }
    let (datagram, counter) = signed.split_at(body);
    let counter = u32::from_be_bytes([counter[0], counter[1], counter[2], counter[3]]);
    Ok(Opened { datagram, counter })
}

/// A device's replay window (RFC 4303 §3.4.3, LoRaWAN's frame counter): the highest
/// counter seen and a bitmap of the 64 counters up to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    highest: Option<u32>,
    /// Bit `i` set: counter `highest - i` was received.
    seen: u64,
}

impl Window {
    /// The highest counter accepted so far.
    pub fn highest(&self) -> Option<u32> {
        self.highest
    }

    /// A window that resumes after `highest`, saved before a restart: every counter up to
    /// it counts as received (which of the last 64 were is not kept).
    pub fn resume(highest: u32) -> Window {
        Window { highest: Some(highest), seen: u64::MAX }
    }

    /// Whether `counter` would be accepted, without recording it.
    pub fn check(&self, counter: u32) -> Result<(), Refusal> {
        let Some(highest) = self.highest else { return Ok(()) };
        if counter > highest {
            return Ok(());
        }
        let behind = highest - counter;
        if behind > RESET_DISTANCE {
            Err(Refusal::Reset { counter, highest })
        } else if behind >= WINDOW {
            Err(Refusal::TooOld { counter, highest })
        } else if self.seen & (1u64 << behind) != 0 {
            Err(Refusal::Replay { counter })
        } else {
            Ok(())
        }
    }

    /// Accepts `counter` once: records it, or says why not.
    pub fn admit(&mut self, counter: u32) -> Result<(), Refusal> {
        self.check(counter)?;
        match self.highest {
            Some(highest) if counter <= highest => self.seen |= 1u64 << (highest - counter),
            Some(highest) => {
                let ahead = counter - highest;
                self.seen = if ahead >= WINDOW { 0 } else { self.seen << ahead };
                self.seen |= 1;
                self.highest = Some(counter);
            }
            None => {
                self.seen = 1;
                self.highest = Some(counter);
            }
        }
        Ok(())
    }
}

/// A line of a key file that is not `dialect device hex-key`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct KeysError {
    pub line: usize,
    pub message: String,
}

/// The device keys of a site: one per `(dialect, device)`. Its `Debug` shows only how many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Keys {
    map: HashMap<(Dialect, u16), Key>,
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keys({} devices)", self.map.len())
    }
}

impl Keys {
    /// Parses a key file: one `dialect device hex-key` per line (dialect `iotstream` or
    /// `tinytelemetry`, device a decimal u16, the key 64 hex digits); blank lines and lines
    /// starting with `#` are ignored; a device listed twice is an error. Errors name the
    /// line, never its key.
    pub fn parse(text: &str) -> Result<Keys, KeysError> {
        let mut keys = Keys::default();
        for (i, line) in text.lines().enumerate() {
            let line_no = i + 1;
            let err = |message: String| KeysError { line: line_no, message };
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [dialect, device, key] = fields[..] else {
                return Err(err(format!("expected `dialect device hex-key`, found {} fields", fields.len())));
            };
            let dialect: Dialect = dialect.parse().map_err(|e: crate::wire::UnknownDialect| err(e.to_string()))?;
            if dialect == Dialect::Secure {
                return Err(err("the secure dialect authenticates with certificates, not keys".to_owned()));
            }
            let device: u16 =
                device.parse().map_err(|_| err(format!("device {device:?} is not a number from 0 to 65535")))?;
            if dialect == Dialect::Tinytelemetry && device == 0 {
                return Err(err("tinytelemetry device 0 is invalid".to_owned()));
            }
            let key = Key::from_hex(key).map_err(|m| err(m.to_owned()))?;
            if keys.insert(dialect, device, key).is_some() {
                return Err(err(format!("{dialect} device {device} is listed twice")));
            }
        }
        Ok(keys)
    }

    /// Adds or replaces a key; returns the one replaced.
    pub fn insert(&mut self, dialect: Dialect, device: u16, key: Key) -> Option<Key> {
        self.map.insert((dialect, device), key)
    }

    pub fn get(&self, dialect: Dialect, device: u16) -> Option<&Key> {
        self.map.get(&(dialect, device))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// What a verified datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// The device has a key, the tag verified and the counter is new.
    Verified { counter: u32, datagram: &'a [u8] },
    /// The device has no key and the policy lets it in: the bytes as they came.
    Unauthenticated { datagram: &'a [u8] },
}

impl<'a> Verdict<'a> {
    /// The seed datagram, trailer stripped.
    pub fn datagram(&self) -> &'a [u8] {
        match self {
            Verdict::Verified { datagram, .. } | Verdict::Unauthenticated { datagram } => datagram,
        }
    }
}

/// One dialect's policy and replay windows: a listener owns one. Memory is bounded by the
/// keys: only a device with a key has a window.
#[derive(Debug)]
pub struct Verifier {
    dialect: Dialect,
    keys: HashMap<u16, (Key, Window)>,
    require: bool,
}

impl Verifier {
    /// A verifier for `dialect` with its devices' keys from `keys`; `require`: a device
    /// without a key is refused, otherwise let in unauthenticated.
    pub fn new(dialect: Dialect, keys: &Keys, require: bool) -> Verifier {
        let keys = keys
            .map
            .iter()
            .filter(|((d, _), _)| *d == dialect)
            .map(|((_, device), key)| (*device, (key.clone(), Window::default())))
            .collect();
        Verifier { dialect, keys, require }
    }

    /// Whether any device of this dialect has a key, or every device must have one.
    pub fn is_active(&self) -> bool {
        self.require || !self.keys.is_empty()
    }

    /// Each keyed device that has sent: its highest accepted counter and its key's
    /// fingerprint, by device id (what a node saves across a restart).
    pub fn saved(&self) -> Vec<(u16, u32, [u8; 8])> {
        let mut out: Vec<_> = self
            .keys
            .iter()
            .filter_map(|(device, (key, window))| Some((*device, window.highest()?, key.fingerprint())))
            .collect();
        out.sort_unstable();
        out
    }

    /// Resumes `device`'s window after `highest`, saved with [`Verifier::saved`] before a
    /// restart. Ignored for a device without a key, for a key other than the one saved
    /// (a new key starts a fresh window), and when the window is already past `highest`.
    pub fn resume(&mut self, device: u16, highest: u32, fingerprint: [u8; 8]) {
        if let Some((key, window)) = self.keys.get_mut(&device) {
            if key.fingerprint() == fingerprint && window.highest().is_none_or(|h| h < highest) {
                *window = Window::resume(highest);
            }
        }
    }

    /// Verifies one datagram and, if it verifies, records its counter.
    pub fn verify<'a>(&mut self, bytes: &'a [u8]) -> Result<Verdict<'a>, Refusal> {
        let Some(device) = device(bytes) else {
            return if self.require {
                Err(Refusal::Truncated { len: bytes.len(), need: 4 + TRAILER_LEN })
            } else {
                Ok(Verdict::Unauthenticated { datagram: bytes })
            };
        };
        match self.keys.get_mut(&device) {
            None if self.require => Err(Refusal::UnknownKey { device }),
            None => Ok(Verdict::Unauthenticated { datagram: bytes }),
            Some((key, window)) => {
                let opened = open(self.dialect, key, bytes)?;
                window.admit(opened.counter)?;
                Ok(Verdict::Verified { counter: opened.counter, datagram: opened.datagram })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{iotstream, tinytelemetry};
    use proptest::prelude::*;

    fn key(b: u8) -> Key {
        Key::new([b; KEY_LEN])
    }

    /// IoTStream DATA, device 0x002a, seq 7, timestamp 0x0ea4_1c76, one reading 21.5.
    const IOT: [u8; 16] = [1, 1, 0, 0x2a, 0, 7, 0x0e, 0xa4, 0x1c, 0x76, 1, 0x78, 0x41, 0xac, 0, 0];

    #[test]
    fn golden_iotstream_trailer() {
        assert_eq!(iotstream::checksum(&IOT[..12]), IOT[11]);
        let mut bytes = IOT.to_vec();
        seal(Dialect::Iotstream, &key(7), 0x0102_0304, &mut bytes).expect("fits");
        assert_eq!(bytes.len(), IOT.len() + TRAILER_LEN);
        assert_eq!(&bytes[..16], &IOT);
        assert_eq!(&bytes[16..20], &[1, 2, 3, 4]);
        // The tag is keyed BLAKE3 over the domain, a zero byte, the datagram and the counter.
        let mut input = b"telemesh/auth/1/iotstream\0".to_vec();
        input.extend_from_slice(&bytes[..20]);
        let full = blake3::keyed_hash(&[7; 32], &input);
        assert_eq!(&bytes[20..], &full.as_bytes()[..8]);
        assert_eq!(hex::encode(&bytes[20..]), GOLDEN_IOT_TAG);
        let opened = open(Dialect::Iotstream, &key(7), &bytes).expect("verifies");
        assert_eq!(opened, Opened { datagram: &IOT, counter: 0x0102_0304 });
        assert!(iotstream::Packet::new_checked(opened.datagram).is_ok());
        assert_eq!(open(Dialect::Iotstream, &key(8), &bytes), Err(Refusal::BadTag));
        // Read as TinyTelemetry, byte 12 (0x41) is a DATA count: the header wants 350 bytes.
        assert_eq!(open(Dialect::Tinytelemetry, &key(7), &bytes), Err(Refusal::Truncated { len: 28, need: 350 }));
    }

    /// The tag of `golden_iotstream_trailer`, recorded: a change of layout or domain shows here.
    const GOLDEN_IOT_TAG: &str = "3fbb48747f9a76e7";

    #[test]
    fn golden_tinytelemetry_heartbeat() {
        let hb = [1u8, 2, 0, 5, 0, 0, 0, 9, 0x69, 0x3a, 0xa0, 0x50];
        assert!(tinytelemetry::Packet::new_checked(&hb[..]).is_ok());
        let mut bytes = hb.to_vec();
        seal(Dialect::Tinytelemetry, &key(1), 1, &mut bytes).expect("fits");
        assert_eq!(&bytes[12..16], &[0, 0, 0, 1]);
        assert_eq!(hex::encode(&bytes[16..]), GOLDEN_TT_TAG);
        assert_eq!(open(Dialect::Tinytelemetry, &key(1), &bytes).map(|o| o.datagram), Ok(&hb[..]));
        assert_eq!(open(Dialect::Tinytelemetry, &key(2), &bytes), Err(Refusal::BadTag));
        // Read as IoTStream, byte 10 (0xa0) is a batch of 160 readings.
        assert_eq!(open(Dialect::Iotstream, &key(1), &bytes), Err(Refusal::Truncated { len: 24, need: 664 }));
        // A tag computed under the other dialect's domain does not verify.
        let mut cross = hb.to_vec();
        seal(Dialect::Iotstream, &key(1), 1, &mut cross).expect("fits");
        assert_eq!(open(Dialect::Tinytelemetry, &key(1), &cross), Err(Refusal::BadTag));
    }

    const GOLDEN_TT_TAG: &str = "043e97fbf592d500";

    #[test]
    fn lengths_are_read_from_the_header() {
        let mut bytes = IOT.to_vec();
        seal(Dialect::Iotstream, &key(7), 5, &mut bytes).expect("fits");
        for cut in 1..=TRAILER_LEN {
            let short = &bytes[..bytes.len() - cut];
            assert!(matches!(open(Dialect::Iotstream, &key(7), short), Err(Refusal::Truncated { .. })), "{cut}");
        }
        for len in 0..11 {
            assert!(matches!(open(Dialect::Iotstream, &key(7), &bytes[..len]), Err(Refusal::Truncated { .. })));
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(open(Dialect::Iotstream, &key(7), &long), Err(Refusal::Overlong { len: 29, expected: 28 }));
        // A DATA datagram too long for a trailer cannot be sealed.
        let mut full = vec![0u8; MAX_BODY + 1];
        assert_eq!(
            seal(Dialect::Iotstream, &key(7), 0, &mut full),
            Err(SealError::TooLong { len: MAX_BODY + 1, max: MAX_BODY })
        );
        let mut fits = vec![0u8; MAX_BODY];
        assert!(seal(Dialect::Iotstream, &key(7), 0, &mut fits).is_ok());
        assert_eq!(fits.len(), MAX_SENSOR_DATAGRAM);
    }

    #[test]
    fn window_refusals() {
        let mut w = Window::default();
        assert_eq!(w.admit(100), Ok(()));
        assert_eq!(w.admit(100), Err(Refusal::Replay { counter: 100 }));
        assert_eq!(w.admit(99), Ok(()));
        assert_eq!(w.admit(37), Ok(()), "63 behind is inside the window");
        assert_eq!(w.admit(36), Err(Refusal::TooOld { counter: 36, highest: 100 }));
        assert_eq!(w.admit(170), Ok(()), "a jump ahead clears the bitmap");
        assert_eq!(w.admit(100), Err(Refusal::TooOld { counter: 100, highest: 170 }));
        assert_eq!(w.admit(169), Ok(()));
        assert_eq!(w.admit(200_000), Ok(()));
        let behind = 200_000 - RESET_DISTANCE;
        assert_eq!(w.check(behind), Err(Refusal::TooOld { counter: behind, highest: 200_000 }));
        assert_eq!(w.admit(behind - 1), Err(Refusal::Reset { counter: behind - 1, highest: 200_000 }));
        assert_eq!(w.admit(0), Err(Refusal::Reset { counter: 0, highest: 200_000 }));
        assert_eq!(w.highest(), Some(200_000));
        let mut top = Window::default();
        assert_eq!(top.admit(u32::MAX), Ok(()));
        assert_eq!(top.admit(u32::MAX), Err(Refusal::Replay { counter: u32::MAX }));
        assert_eq!(top.admit(0), Err(Refusal::Reset { counter: 0, highest: u32::MAX }));
    }

    #[test]
    fn verifier_policy() {
        let mut keys = Keys::default();
        keys.insert(Dialect::Iotstream, 0x2a, key(7));
        keys.insert(Dialect::Tinytelemetry, 0x2b, key(8));
        let mut sealed = IOT.to_vec();
        seal(Dialect::Iotstream, &key(7), 1, &mut sealed).expect("fits");
        let mut other = IOT.to_vec();
        other[3] = 0x2b;
        let mut open_v = Verifier::new(Dialect::Iotstream, &keys, false);
        assert!(open_v.is_active());
        assert_eq!(open_v.verify(&sealed), Ok(Verdict::Verified { counter: 1, datagram: &IOT }));
        assert_eq!(open_v.verify(&sealed), Err(Refusal::Replay { counter: 1 }));
        // 0x2b has a key only for TinyTelemetry: as IoTStream it is let in as it came.
        assert_eq!(open_v.verify(&other), Ok(Verdict::Unauthenticated { datagram: &other }));
        // A keyed device's datagram without its trailer.
        assert_eq!(open_v.verify(&IOT), Err(Refusal::Truncated { len: 16, need: 28 }));
        let mut strict = Verifier::new(Dialect::Iotstream, &keys, true);
        assert_eq!(strict.verify(&other), Err(Refusal::UnknownKey { device: 0x2b }));
        assert_eq!(strict.verify(&[1, 1]), Err(Refusal::Truncated { len: 2, need: 16 }));
        assert_eq!(strict.verify(&sealed).map(|v| v.datagram()), Ok(&IOT[..]));
        assert!(!Verifier::new(Dialect::Iotstream, &Keys::default(), false).is_active());
    }

    #[test]
    fn windows_resume_after_a_restart_for_the_same_key_only() {
        let mut keys = Keys::default();
        keys.insert(Dialect::Iotstream, 0x2a, key(7));
        keys.insert(Dialect::Iotstream, 0x2b, key(8));
        let sealed = |counter| {
            let mut b = IOT.to_vec();
            seal(Dialect::Iotstream, &key(7), counter, &mut b).expect("fits");
            b
        };
        let mut before = Verifier::new(Dialect::Iotstream, &keys, false);
        for c in [10, 12, 11] {
            assert!(before.verify(&sealed(c)).is_ok());
        }
        let saved = before.saved();
        assert_eq!(saved, vec![(0x2a, 12, key(7).fingerprint())], "only devices that sent");
        let mut after = Verifier::new(Dialect::Iotstream, &keys, false);
        for (device, highest, fingerprint) in &saved {
            after.resume(*device, *highest, *fingerprint);
        }
        after.resume(0x2b, 99, key(7).fingerprint()); // another key's fingerprint: ignored
        after.resume(0x2c, 99, key(7).fingerprint()); // no key: ignored
        assert_eq!(after.saved(), saved);
        // Everything up to the saved highest counts as received; later counters go on.
        assert_eq!(after.verify(&sealed(12)), Err(Refusal::Replay { counter: 12 }));
        assert_eq!(after.verify(&sealed(5)), Err(Refusal::Replay { counter: 5 }));
        assert_eq!(after.verify(&sealed(13)).map(|v| v.datagram()), Ok(&IOT[..]));
        // A saved counter behind the window's is ignored; a rotated key starts afresh.
        after.resume(0x2a, 1, key(7).fingerprint());
        assert_eq!(after.saved()[0].1, 13);
        let mut rotated = Keys::default();
        rotated.insert(Dialect::Iotstream, 0x2a, key(9));
        let mut fresh = Verifier::new(Dialect::Iotstream, &rotated, false);
        fresh.resume(0x2a, 12, key(7).fingerprint());
        assert!(fresh.saved().is_empty());
        assert_ne!(key(7).fingerprint(), key(9).fingerprint());
    }

    #[test]
    fn key_file() {
        let k = "00".repeat(31) + "ff";
        let text = format!("# site keys\n\niotstream 42 {k}\n  tinytelemetry   7\t{k}  \n");
        let keys = Keys::parse(&text).expect("valid");
        assert_eq!(keys.len(), 2);
        let mut want = [0u8; 32];
        want[31] = 0xff;
        assert_eq!(keys.get(Dialect::Iotstream, 42), Some(&Key::new(want)));
        assert_eq!(keys.get(Dialect::Tinytelemetry, 42), None);
        assert_eq!(format!("{keys:?}"), "Keys(2 devices)");
        assert!(!format!("{:?}", keys.get(Dialect::Tinytelemetry, 7)).contains("ff"));
        let bad = |t: &str| Keys::parse(t).expect_err("invalid").to_string();
        let twice = bad(&format!("iotstream 1 {k}\niotstream 1 {k}"));
        assert!(twice.starts_with("line 2: iotstream device 1 is listed twice"), "{twice}");
        assert!(bad(&format!("secure 1 {k}")).contains("certificates"));
        assert!(bad(&format!("tinytelemetry 0 {k}")).contains("device 0"));
        assert!(bad(&format!("lora 1 {k}")).starts_with("line 1: unknown dialect"));
        assert!(bad(&format!("iotstream 65536 {k}")).contains("0 to 65535"));
        assert!(bad("iotstream 1").contains("found 2 fields"));
        let secret = "ab".repeat(31) + "zz";
        let e = bad(&format!("iotstream 1 {secret}"));
        assert!(e.contains("64 hexadecimal") && !e.contains(&secret), "{e}");
        assert!(bad(&format!("iotstream 1 {}", "ab".repeat(31))).contains("64 hexadecimal"));
    }

    fn arb_iotstream() -> impl Strategy<Value = Vec<u8>> {
        (0u8..3, any::<u16>(), any::<u16>(), any::<u32>(), proptest::collection::vec(any::<f32>(), 0..=44)).prop_map(
            |(t, device, seq, ts, mut readings)| {
                // DATA carries 1..=44 readings (room for the trailer), INIT and HEARTBEAT none.
                match t {
                    1 if readings.is_empty() => readings.push(0.5),
                    1 => {}
                    _ => readings.clear(),
                }
                let mut b = vec![1, t];
                b.extend_from_slice(&device.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ts.to_be_bytes());
                b.push(readings.len() as u8);
                b.push(iotstream::checksum(&[b.as_slice(), &[0]].concat()));
                for r in readings {
                    b.extend_from_slice(&r.to_be_bytes());
                }
                b
            },
        )
    }

    fn arb_tinytelemetry() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), 1u16.., any::<u32>(), proptest::collection::vec((1u8..=3, any::<f32>()), 1..=35)).prop_map(
            |(heartbeat, device, seq, readings)| {
                let mut b = vec![1, if heartbeat { 2 } else { 1 }];
                b.extend_from_slice(&device.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&0x693a_a050u32.to_be_bytes());
                if !heartbeat {
                    b.push(readings.len() as u8);
                    for (t, v) in readings {
                        b.push(t);
                        b.extend_from_slice(&v.to_be_bytes());
                    }
                }
                b
            },
        )
    }

    fn arb_datagram() -> impl Strategy<Value = (Dialect, Vec<u8>)> {
        prop_oneof![
            arb_iotstream().prop_map(|b| (Dialect::Iotstream, b)),
            arb_tinytelemetry().prop_map(|b| (Dialect::Tinytelemetry, b)),
        ]
    }

    proptest! {
        #[test]
        fn tag_round_trips((dialect, datagram) in arb_datagram(), k in any::<[u8; 32]>(), counter in any::<u32>()) {
            prop_assert!(crate::record::Record::from_datagram(dialect, &datagram, 0, Default::default()).is_ok());
            let mut bytes = datagram.clone();
            seal(dialect, &Key::new(k), counter, &mut bytes).expect("fits");
            prop_assert!(bytes.len() <= MAX_SENSOR_DATAGRAM);
            let opened = open(dialect, &Key::new(k), &bytes).expect("verifies");
            prop_assert_eq!(opened, Opened { datagram: &datagram, counter });
        }

        #[test]
        fn any_flipped_bit_fails(
            (dialect, datagram) in arb_datagram(),
            k in any::<[u8; 32]>(),
            counter in any::<u32>(),
            bit in any::<prop::sample::Index>(),
        ) {
            let mut bytes = datagram;
            seal(dialect, &Key::new(k), counter, &mut bytes).expect("fits");
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(open(dialect, &Key::new(k), &bytes).is_err());
        }

        #[test]
        fn any_bytes_never_panic(dialect in prop_oneof![Just(Dialect::Iotstream), Just(Dialect::Tinytelemetry)],
                                 bytes in proptest::collection::vec(any::<u8>(), 0..260), require in any::<bool>()) {
            let mut keys = Keys::default();
            keys.insert(dialect, device(&bytes).unwrap_or(0), key(3));
            let mut v = Verifier::new(dialect, &keys, require);
            let _ = v.verify(&bytes);
            let _ = open(dialect, &key(3), &bytes);
        }

        #[test]
        fn window_accepts_each_counter_once_in_any_order(
            base in 0u32..(u32::MAX - 128),
            order in Just((0..WINDOW).collect::<Vec<u32>>()).prop_shuffle(),
            repeats in proptest::collection::vec(0..WINDOW, 0..32),
        ) {
            // Any 64 consecutive counters are within the window of each other, in any order.
            let mut w = Window::default();
            for c in &order {
                prop_assert_eq!(w.admit(base + c), Ok(()));
            }
            for c in repeats {
                prop_assert_eq!(w.admit(base + c), Err(Refusal::Replay { counter: base + c }));
            }
        }

        #[test]
        fn window_matches_a_set_model(counters in proptest::collection::vec(0u32..300, 1..200)) {
            // Reference: accepted iff never seen and within 64 of the highest seen so far.
            let mut w = Window::default();
            let mut seen = std::collections::BTreeSet::new();
            for c in counters {
                let highest = seen.iter().next_back().copied();
                let want = match highest {
                    None => true,
                    Some(h) => !seen.contains(&c) && (c > h || h - c < WINDOW),
                };
                prop_assert_eq!(w.admit(c).is_ok(), want, "counter {}", c);
                if want {
                    seen.insert(c);
                }
            }
        }
    }
}
