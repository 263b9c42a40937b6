//! IoTStream v1, as the IoTStream v1 Mini-RFC defines it, with the choices of `docs/design.md`.
//!
//! ```text
//!  0        1        2        4        6                10       11       12
//! +--------+--------+--------+--------+-----------------+--------+--------+------------+
//! |version | type   | device | seq    | timestamp       | batch  | cksum  | batch×f32  |
//! |  = 1   |0/1/2   | u16    | u16    | u32             | u8     | u8     | big-endian |
//! +--------+--------+--------+--------+-----------------+--------+--------+------------+
//! ```
//!
//! type: INIT = 0, DATA = 1, HEARTBEAT = 2. INIT and HEARTBEAT carry batch 0 and no
//! payload; DATA carries 1..=47 readings (47 × 4 + 12 = 200 bytes, the size limit).
//! checksum = (sum of header bytes 0..=10) mod 256. The timestamp is Unix milliseconds
//! mod 2^32 by default (the Mini-RFC's latency measurement and its worked example), seconds by
//! option.

use super::{be, Error, MAX_SENSOR_DATAGRAM};

/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// Most readings one datagram can carry within 200 bytes.
pub const MAX_BATCH: usize = (MAX_SENSOR_DATAGRAM - HEADER_LEN) / 4;
/// The version this codec speaks.
pub const VERSION: u8 = 1;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const DEVICE: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..6;
    pub const TIMESTAMP: Range<usize> = 6..10;
    pub const BATCH: usize = 10;
    pub const CHECKSUM: usize = 11;
    pub const PAYLOAD: usize = 12;
}

/// Message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Init,
    Data,
    Heartbeat,
}

impl MsgType {
    pub fn code(self) -> u8 {
        match self {
            MsgType::Init => 0,
            MsgType::Data => 1,
            MsgType::Heartbeat => 2,
        }
    }
    pub fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            0 => Ok(MsgType::Init),
            1 => Ok(MsgType::Data),
            2 => Ok(MsgType::Heartbeat),
            other => Err(Error::BadType(other)),
        }
    }
}

/// The Mini-RFC's checksum rule: sum of header bytes 0..=10, mod 256.
pub fn checksum(header: &[u8]) -> u8 {
    header[..field::CHECKSUM].iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

/// A read/write view of an IoTStream datagram.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer without checking it; accessors may panic on short buffers.
    pub fn new_unchecked(buffer: T) -> Self {
        Packet { buffer }
    }

    /// Wraps untrusted bytes: after `Ok`, no accessor panics.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        let packet = Packet::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the header is complete, the datagram is within 200 bytes, and the
    /// payload is exactly `batch` readings long.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::TooShort { len, need: HEADER_LEN });
        }
        if len > MAX_SENSOR_DATAGRAM {
            return Err(Error::TooLong { len, max: MAX_SENSOR_DATAGRAM });
        }
        let expected = HEADER_LEN + 4 * usize::from(self.batch());
        if len != expected {
            return Err(Error::LengthMismatch { expected, actual: len });
        }
        Ok(())
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VERSION]
    }
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }
    pub fn device(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::DEVICE)
    }
    pub fn seq(&self) -> u16 {
        be::u16_at(self.buffer.as_ref(), field::SEQ)
    }
    pub fn timestamp(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::TIMESTAMP)
    }
    pub fn batch(&self) -> u8 {
        self.buffer.as_ref()[field::BATCH]
    }
    pub fn checksum(&self) -> u8 {
        self.buffer.as_ref()[field::CHECKSUM]
    }
    /// The checksum the header bytes call for.
    pub fn computed_checksum(&self) -> u8 {
        checksum(&self.buffer.as_ref()[..HEADER_LEN])
    }
    /// Reading `i` (0-based); `i < batch()` on a checked packet.
    pub fn reading(&self, i: usize) -> f32 {
        be::f32_at(self.buffer.as_ref(), field::PAYLOAD + 4 * i)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    pub fn set_version(&mut self, v: u8) {
        self.buffer.as_mut()[field::VERSION] = v;
    }
    pub fn set_msg_type(&mut self, v: u8) {
        self.buffer.as_mut()[field::TYPE] = v;
    }
    pub fn set_device(&mut self, v: u16) {
        self.buffer.as_mut()[field::DEVICE].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_seq(&mut self, v: u16) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, v: u32) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_batch(&mut self, v: u8) {
        self.buffer.as_mut()[field::BATCH] = v;
    }
    pub fn set_checksum(&mut self, v: u8) {
        self.buffer.as_mut()[field::CHECKSUM] = v;
    }
    /// Recomputes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let c = self.computed_checksum();
        self.set_checksum(c);
    }
    pub fn set_reading(&mut self, i: usize, v: f32) {
        let at = field::PAYLOAD + 4 * i;
        self.buffer.as_mut()[at..at + 4].copy_from_slice(&v.to_bits().to_be_bytes());
    }
}

/// A validated IoTStream datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Repr {
    pub msg_type: MsgType,
    pub device: u16,
    pub seq: u16,
    pub timestamp: u32,
    readings: [f32; MAX_BATCH],
    batch: u8,
}

impl Repr {
    /// Builds a datagram description; DATA needs 1..=47 readings, INIT and HEARTBEAT none.
    pub fn new(
        msg_type: MsgType,
        device: u16,
        seq: u16,
        timestamp: u32,
        readings: &[f32],
    ) -> Result<Self, Error> {
        let batch = u8::try_from(readings.len()).unwrap_or(u8::MAX);
        check_batch(msg_type, batch)?;
        let mut r = Repr { msg_type, device, seq, timestamp, readings: [0.0; MAX_BATCH], batch };
        r.readings[..readings.len()].copy_from_slice(readings);
        Ok(r)
    }

    /// Validates a checked packet: version, type, checksum, batch rules.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        if packet.version() != VERSION {
            return Err(Error::BadVersion(packet.version()));
        }
        let msg_type = MsgType::from_code(packet.msg_type())?;
        let (stated, computed) = (packet.checksum(), packet.computed_checksum());
        if stated != computed {
            return Err(Error::BadChecksum { stated, computed });
        }
        let batch = packet.batch();
        check_batch(msg_type, batch)?;
        let mut readings = [0.0; MAX_BATCH];
        for (i, slot) in readings.iter_mut().take(usize::from(batch)).enumerate() {
            *slot = packet.reading(i);
        }
        Ok(Repr {
            msg_type,
            device: packet.device(),
            seq: packet.seq(),
            timestamp: packet.timestamp(),
            readings,
            batch,
        })
    }

    /// Parses untrusted bytes in one step.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    pub fn readings(&self) -> &[f32] {
        &self.readings[..usize::from(self.batch)]
    }

    /// Bytes `emit` writes.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + 4 * usize::from(self.batch)
    }

    /// Writes the datagram, checksum included, into `packet` (at least `buffer_len()`).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(VERSION);
        packet.set_msg_type(self.msg_type.code());
        packet.set_device(self.device);
        packet.set_seq(self.seq);
        packet.set_timestamp(self.timestamp);
        packet.set_batch(self.batch);
        packet.fill_checksum();
        for (i, v) in self.readings().iter().enumerate() {
            packet.set_reading(i, *v);
        }
    }

    /// The datagram as a new byte vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

fn check_batch(msg_type: MsgType, batch: u8) -> Result<(), Error> {
    let (kind, min, max) = match msg_type {
        MsgType::Init => ("INIT", 0, 0),
        MsgType::Heartbeat => ("HEARTBEAT", 0, 0),
        MsgType::Data => ("DATA", 1, MAX_BATCH as u8),
    };
    if batch < min || batch > max {
        return Err(Error::BadCount { kind, count: batch, min, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The Mini-RFC's worked example: device 1001, seq 1, timestamp 245642102, DATA, batch 5,
    /// readings 29.37 23.53 22.61 22.04 22.99. Built by hand from Table 5; the checksum is
    /// the rule (0x4f), not the example's 0xf2, which no reading of the rule gives.
    const SEED_EXAMPLE: [u8; 32] = [
        0x01, 0x01, // version 1, DATA
        0x03, 0xe9, // device 1001
        0x00, 0x01, // seq 1
        0x0e, 0xa4, 0x33, 0x76, // timestamp 245642102
        0x05, // batch 5
        0x4f, // checksum: 0x01+0x01+0x03+0xe9+0x00+0x01+0x0e+0xa4+0x33+0x76+0x05 = 0x24f
        0x41, 0xea, 0xf5, 0xc3, // 29.37
        0x41, 0xbc, 0x3d, 0x71, // 23.53
        0x41, 0xb4, 0xe1, 0x48, // 22.61
        0x41, 0xb0, 0x51, 0xec, // 22.04
        0x41, 0xb7, 0xeb, 0x85, // 22.99
    ];

    const INIT: [u8; 12] = [0x01, 0x00, 0x03, 0xe9, 0x00, 0x00, 0x0e, 0xa4, 0x2f, 0xc7, 0x00, 0x95];

    #[test]
    fn deconstruct_seed_example() {
        let p = Packet::new_checked(&SEED_EXAMPLE[..]).expect("checked");
        assert_eq!(p.version(), 1);
        assert_eq!(p.msg_type(), 1);
        assert_eq!(p.device(), 1001);
        assert_eq!(p.seq(), 1);
        assert_eq!(p.timestamp(), 245_642_102);
        assert_eq!(p.batch(), 5);
        assert_eq!(p.checksum(), 0x4f);
        assert_eq!(p.computed_checksum(), 0x4f);
        let want = [29.37f32, 23.53, 22.61, 22.04, 22.99];
        for (i, w) in want.iter().enumerate() {
            assert_eq!(p.reading(i), *w);
        }
    }

    #[test]
    fn construct_seed_example() {
        let r = Repr::new(MsgType::Data, 1001, 1, 245_642_102, &[29.37, 23.53, 22.61, 22.04, 22.99])
            .expect("valid");
        assert_eq!(r.to_bytes(), SEED_EXAMPLE);
        assert_eq!(Repr::decode(&SEED_EXAMPLE), Ok(r));
    }

    #[test]
    fn init_golden() {
        // INIT, device 1001, seq 0, timestamp 245641159 (the Mini-RFC's example session), batch 0.
        let r = Repr::decode(&INIT).expect("valid INIT");
        assert_eq!((r.msg_type, r.device, r.seq, r.timestamp), (MsgType::Init, 1001, 0, 245_641_159));
        assert!(r.readings().is_empty());
        assert_eq!(r.to_bytes(), INIT);
    }

    #[test]
    fn the_example_checksum_0xf2_is_rejected() {
        let mut bytes = SEED_EXAMPLE;
        bytes[11] = 0xf2;
        assert_eq!(Repr::decode(&bytes), Err(Error::BadChecksum { stated: 0xf2, computed: 0x4f }));
    }

    #[test]
    fn malformed() {
        assert_eq!(Repr::decode(&[]), Err(Error::TooShort { len: 0, need: 12 }));
        assert_eq!(Repr::decode(&SEED_EXAMPLE[..11]), Err(Error::TooShort { len: 11, need: 12 }));
        assert_eq!(
            Repr::decode(&SEED_EXAMPLE[..31]),
            Err(Error::LengthMismatch { expected: 32, actual: 31 })
        );
        let mut long = SEED_EXAMPLE.to_vec();
        long.resize(201, 0);
        assert_eq!(Repr::decode(&long), Err(Error::TooLong { len: 201, max: 200 }));

        let mut v = SEED_EXAMPLE;
        v[0] = 2;
        assert_eq!(Repr::decode(&v), Err(Error::BadVersion(2)));
        let mut t = SEED_EXAMPLE;
        t[1] = 3;
        t[11] = t[11].wrapping_add(2);
        assert_eq!(Repr::decode(&t), Err(Error::BadType(3)));
        // A HEARTBEAT that claims a batch.
        let mut hb = SEED_EXAMPLE;
        hb[1] = 2;
        hb[11] = hb[11].wrapping_add(1);
        assert!(matches!(Repr::decode(&hb), Err(Error::BadCount { kind: "HEARTBEAT", count: 5, .. })));
        // DATA with no readings.
        let mut empty = INIT;
        empty[1] = 1;
        empty[11] = empty[11].wrapping_add(1);
        assert!(matches!(Repr::decode(&empty), Err(Error::BadCount { kind: "DATA", count: 0, .. })));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        (0u8..3, any::<u16>(), any::<u16>(), any::<u32>(), proptest::collection::vec(any::<f32>(), 1..=MAX_BATCH))
            .prop_map(|(t, device, seq, ts, readings)| {
                let msg_type = MsgType::from_code(t).expect("0..3");
                let readings = if msg_type == MsgType::Data { readings } else { Vec::new() };
                Repr::new(msg_type, device, seq, ts, &readings).expect("valid by construction")
            })
    }

    proptest! {
        #[test]
        fn round_trip(r in arb_repr()) {
            let bytes = r.to_bytes();
            let back = Repr::decode(&bytes).expect("emitted bytes parse");
            // Compare bit patterns: NaN != NaN as floats.
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!((back.msg_type, back.device, back.seq, back.timestamp), (r.msg_type, r.device, r.seq, r.timestamp));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
            let _ = Repr::decode(&bytes);
        }
    }
}
