//! The secure telemetry frame (the secure telemetry collection README), carried inside DTLS 1.2.
//!
//! ```text
//!  0                 4                               12                              20       22
//! +-----------------+-------------------------------+-------------------------------+--------+-----------+
//! | client id u32   | seq u64                       | timestamp u64 (Unix ns)       | len u16| payload   |
//! +-----------------+-------------------------------+-------------------------------+--------+-----------+
//! ```
//!
//! All big-endian. The payload is UTF-8 `KEY=VALUE;KEY=VALUE…` (e.g.
//! `CPU=72.3;MEM=41.2;TEMP=67.5`): keys are 1..=32 bytes of `[A-Za-z0-9_.-]`, values are
//! finite decimal numbers, at most 64 pairs, one trailing `;` tolerated. An empty payload
//! is a liveness beacon (a heartbeat). A frame is at most 1200 bytes so it fits one DTLS
//! record on a 1280-byte path MTU.

use super::{be, Error};

/// Fixed header length in bytes.
pub const HEADER_LEN: usize = 22;
/// Largest frame accepted.
pub const MAX_FRAME: usize = 1200;
/// Longest key.
pub const MAX_KEY_LEN: usize = 32;
/// Most `KEY=VALUE` pairs in one payload.
pub const MAX_PAIRS: usize = 64;

mod field {
    use std::ops::Range;
    pub const CLIENT: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..12;
    pub const TIMESTAMP: Range<usize> = 12..20;
    pub const LEN: Range<usize> = 20..22;
    pub const PAYLOAD: usize = 22;
}

/// A read/write view of a secure frame.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps untrusted bytes: after `Ok`, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks the header is complete, the frame is ≤ 1200 bytes, and the payload length
    /// field matches the bytes present.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::TooShort { len, need: HEADER_LEN });
        }
        if len > MAX_FRAME {
            return Err(Error::TooLong { len, max: MAX_FRAME });
        }
        let expected = HEADER_LEN + usize::from(self.payload_len());
        if len != expected {
            return Err(Error::LengthMismatch { expected, actual: len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn client(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::CLIENT)
    }
    pub fn seq(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), field::SEQ)
    }
    pub fn timestamp(&self) -> u64 {
        be::u64_at(self.buffer.as_ref(), field::TIMESTAMP)
    }
    pub fn payload_len(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::LEN)
    }
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        &b[field::PAYLOAD..field::PAYLOAD + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_client(&mut self, v: u32) {
        self.buffer.as_mut()[field::CLIENT].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_seq(&mut self, v: u64) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, v: u64) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_payload_len(&mut self, v: u16) {
        self.buffer.as_mut()[field::LEN].copy_from_slice(&v.to_be_bytes());
    }
    /// The payload bytes (per the length field) for writing.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.payload_len());
        &mut self.buffer.as_mut()[field::PAYLOAD..field::PAYLOAD + n]
    }
}

/// A validated secure frame; the payload is borrowed from the datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub client: u32,
    pub seq: u64,
    /// Unix nanoseconds.
    pub timestamp: u64,
    payload: &'a str,
}

impl<'a> Repr<'a> {
    /// Builds a frame description, validating the payload syntax.
    pub fn new(client: u32, seq: u64, timestamp: u64, payload: &'a str) -> Result<Self, Error> {
        let len = HEADER_LEN + payload.len();
        if len > MAX_FRAME {
            return Err(Error::TooLong { len, max: MAX_FRAME });
        }
        validate_payload(payload)?;
        Ok(Repr { client, seq, timestamp, payload })
    }

    /// Validates a checked packet.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(packet: &'a Packet<&'a T>) -> Result<Self, Error> {
        let payload = std::str::from_utf8(packet_payload(packet)).map_err(|_| Error::BadUtf8)?;
        validate_payload(payload)?;
        Ok(Repr { client: packet.client(), seq: packet.seq(), timestamp: packet.timestamp(), payload })
    }

    /// Parses untrusted bytes in one step.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let packet = Packet::new_checked(bytes)?;
        let payload = std::str::from_utf8(&bytes[field::PAYLOAD..]).map_err(|_| Error::BadUtf8)?;
        validate_payload(payload)?;
        Ok(Repr { client: packet.client(), seq: packet.seq(), timestamp: packet.timestamp(), payload })
    }

    /// The payload text, as received.
    pub fn payload(&self) -> &'a str {
        self.payload
    }

    /// The `(key, value)` pairs, in payload order.
    pub fn pairs(&self) -> impl Iterator<Item = (&'a str, f64)> + 'a {
        split_pairs(self.payload).filter_map(|item| parse_pair(item).ok())
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload.len()
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_client(self.client);
        packet.set_seq(self.seq);
        packet.set_timestamp(self.timestamp);
        // `new`/`parse` bound the payload to MAX_FRAME, so it fits a u16.
        packet.set_payload_len(self.payload.len() as u16);
        packet.payload_mut().copy_from_slice(self.payload.as_bytes());
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

fn packet_payload<'a, T: AsRef<[u8]> + ?Sized>(packet: &Packet<&'a T>) -> &'a [u8] {
    let b: &'a [u8] = packet.buffer.as_ref();
    &b[field::PAYLOAD..field::PAYLOAD + usize::from(packet.payload_len())]
}

fn split_pairs(payload: &str) -> impl Iterator<Item = &str> {
    let body = payload.strip_suffix(';').unwrap_or(payload);
    body.split(';').filter(move |_| !body.is_empty())
}

fn parse_pair(item: &str) -> Result<(&str, f64), &'static str> {
    let (key, value) = item.split_once('=').ok_or("missing '='")?;
    if key.is_empty() {
        return Err("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return Err("key longer than 32 bytes");
    }
    if !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-') {
        return Err("key has a character outside [A-Za-z0-9_.-]");
    }
    // Rust's float grammar also takes "inf" and "NaN"; a text reading must be a number.
    if !value.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'+' | b'e' | b'E')) {
        return Err("value is not a decimal number");
    }
    let v: f64 = value.parse().map_err(|_| "value is not a decimal number")?;
    if !v.is_finite() {
        return Err("value is not finite");
    }
    Ok((key, v))
}

fn validate_payload(payload: &str) -> Result<(), Error> {
    let mut n = 0;
    for (index, item) in split_pairs(payload).enumerate() {
        parse_pair(item).map_err(|why| Error::BadPair { index, why })?;
        n += 1;
        if n > MAX_PAIRS {
            return Err(Error::BadPair { index, why: "more than 64 pairs" });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Client 7, seq 42, timestamp 1765477200758614000 ns, payload "CPU=72.3;MEM=41.2;TEMP=67.5"
    /// (the README's example), hand-built from the field table.
    fn golden() -> Vec<u8> {
        let mut v = vec![
            0x00, 0x00, 0x00, 0x07, // client 7
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, // seq 42
            0x18, 0x80, 0x3c, 0x29, 0x02, 0x44, 0xa7, 0xf0, // ts 1765477200758614000
            0x00, 0x1b, // payload length 27
        ];
        v.extend_from_slice(b"CPU=72.3;MEM=41.2;TEMP=67.5");
        v
    }

    #[test]
    fn deconstruct_and_construct_golden() {
        let bytes = golden();
        let p = Packet::new_checked(&bytes[..]).expect("checked");
        assert_eq!((p.client(), p.seq(), p.timestamp(), p.payload_len()), (7, 42, 1_765_477_200_758_614_000, 27));
        let r = Repr::decode(&bytes).expect("valid");
        assert_eq!(r.pairs().collect::<Vec<_>>(), vec![("CPU", 72.3), ("MEM", 41.2), ("TEMP", 67.5)]);
        let built = Repr::new(7, 42, 1_765_477_200_758_614_000, "CPU=72.3;MEM=41.2;TEMP=67.5").expect("valid");
        assert_eq!(built, r);
        assert_eq!(built.to_bytes(), bytes);
        assert_eq!(Repr::parse(&p), Ok(r));
    }

    #[test]
    fn payload_syntax() {
        assert!(Repr::new(1, 0, 0, "").is_ok());
        assert!(Repr::new(1, 0, 0, "A=1;").is_ok());
        assert_eq!(Repr::new(1, 0, 0, "A=1;").expect("ok").pairs().count(), 1);
        let bad = |p: &str| Repr::new(1, 0, 0, p).err();
        assert_eq!(bad("CPU"), Some(Error::BadPair { index: 0, why: "missing '='" }));
        assert_eq!(bad("A=1;=2"), Some(Error::BadPair { index: 1, why: "empty key" }));
        assert_eq!(bad("A=1;;B=2"), Some(Error::BadPair { index: 1, why: "missing '='" }));
        assert_eq!(bad("A=x"), Some(Error::BadPair { index: 0, why: "value is not a decimal number" }));
        assert_eq!(bad("A=NaN"), Some(Error::BadPair { index: 0, why: "value is not a decimal number" }));
        assert_eq!(bad("A B=1"), Some(Error::BadPair { index: 0, why: "key has a character outside [A-Za-z0-9_.-]" }));
        assert_eq!(bad(&format!("{}=1", "K".repeat(33))), Some(Error::BadPair { index: 0, why: "key longer than 32 bytes" }));
        let many: Vec<String> = (0..65).map(|i| format!("K{i}=1")).collect();
        assert_eq!(bad(&many.join(";")), Some(Error::BadPair { index: 64, why: "more than 64 pairs" }));
    }

    #[test]
    fn malformed_frames() {
        let bytes = golden();
        assert_eq!(Repr::decode(&bytes[..21]), Err(Error::TooShort { len: 21, need: 22 }));
        assert_eq!(Repr::decode(&bytes[..30]), Err(Error::LengthMismatch { expected: 49, actual: 30 }));
        let mut utf = bytes.clone();
        utf[22] = 0xff;
        assert_eq!(Repr::decode(&utf), Err(Error::BadUtf8));
        let big = vec![0u8; MAX_FRAME + 1];
        assert_eq!(Repr::decode(&big), Err(Error::TooLong { len: 1201, max: 1200 }));
    }

    proptest! {
        #[test]
        fn round_trip(client: u32, seq: u64, ts: u64,
                      pairs in proptest::collection::vec(("[A-Za-z0-9_.-]{1,32}", -1e9f64..1e9), 0..20)) {
            let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let payload = text.join(";");
            let r = Repr::new(client, seq, ts, &payload).expect("valid by construction");
            let bytes = r.to_bytes();
            let back = Repr::decode(&bytes).expect("parses");
            prop_assert_eq!(back, r);
            let values: Vec<f64> = back.pairs().map(|(_, v)| v).collect();
            let want: Vec<f64> = pairs.iter().map(|(_, v)| *v).collect();
            prop_assert_eq!(values, want);
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Repr::decode(&bytes);
        }
    }
}
