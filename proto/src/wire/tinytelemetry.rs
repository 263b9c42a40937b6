//! TinyTelemetry v1 (the TinyTelemetry v1 design document).
//!
//! ```text
//!  0        1        2        4                 8                 12       13
//! +--------+--------+--------+-----------------+-----------------+--------+----------------------+
//! |version | type   | device | seq             | timestamp       | count  | count × (type u8,    |
//! |  = 1   | 1 / 2  | u16>0  | u32             | u32 Unix s      | 1..=37 |          f32 BE)     |
//! +--------+--------+--------+-----------------+-----------------+--------+----------------------+
//! ```
//!
//! type: DATA = 1 (count byte and readings follow), HEARTBEAT = 2 (header only).
//! Validation rules (the design document's, kept as they are): version 1, type 1 or 2, device > 0, size ≤ 200,
//! DATA has at least one reading, count matches the length, sensor type 1, 2 or 3.

use super::{be, Error, MAX_SENSOR_DATAGRAM};

/// Header length in bytes.
pub const HEADER_LEN: usize = 12;
/// Bytes per reading: sensor type u8 + f32.
pub const READING_LEN: usize = 5;
/// Most readings one datagram may carry: (200 − 12 − 1) / 5.
pub const MAX_COUNT: usize = (MAX_SENSOR_DATAGRAM - HEADER_LEN - 1) / READING_LEN;
/// The version this codec speaks.
pub const VERSION: u8 = 1;

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const TYPE: usize = 1;
    pub const DEVICE: Range<usize> = 2..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const TIMESTAMP: Range<usize> = 8..12;
    pub const COUNT: usize = 12;
    pub const READINGS: usize = 13;
}

/// Message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MsgType {
    Data,
    Heartbeat,
}

impl MsgType {
    pub fn code(self) -> u8 {
        match self {
            MsgType::Data => 1,
            MsgType::Heartbeat => 2,
        }
    }
    pub fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(MsgType::Data),
            2 => Ok(MsgType::Heartbeat),
            other => Err(Error::BadType(other)),
        }
    }
}

/// What a reading measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SensorType {
    Temperature,
    Humidity,
    Voltage,
}

impl SensorType {
    pub const ALL: [SensorType; 3] = [SensorType::Temperature, SensorType::Humidity, SensorType::Voltage];

    pub fn code(self) -> u8 {
        match self {
            SensorType::Temperature => 1,
            SensorType::Humidity => 2,
            SensorType::Voltage => 3,
        }
    }
    pub fn from_code(code: u8) -> Result<Self, Error> {
        match code {
            1 => Ok(SensorType::Temperature),
            2 => Ok(SensorType::Humidity),
            3 => Ok(SensorType::Voltage),
            other => Err(Error::BadSensorType(other)),
        }
    }
    /// Label used in the query API.
    pub fn name(self) -> &'static str {
        match self {
            SensorType::Temperature => "temperature",
            SensorType::Humidity => "humidity",
            SensorType::Voltage => "voltage",
        }
    }
}

/// A read/write view of a TinyTelemetry datagram.
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

    /// Checks the header is complete, the size is ≤ 200, the type is known, and, for a
    /// DATA datagram, that the count byte is present and matches the length. A HEARTBEAT
    /// is header only.
    pub fn check_len(&self) -> Result<(), Error> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(Error::TooShort { len, need: HEADER_LEN });
        }
        if len > MAX_SENSOR_DATAGRAM {
            return Err(Error::TooLong { len, max: MAX_SENSOR_DATAGRAM });
        }
        // The length rule depends on the type, so an unknown type is reported as such.
        let msg_type = MsgType::from_code(self.msg_type())?;
        let expected = if msg_type == MsgType::Data {
            if len < field::READINGS {
                return Err(Error::TooShort { len, need: field::READINGS });
            }
            field::READINGS + READING_LEN * usize::from(self.count())
        } else {
            HEADER_LEN
        };
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
    pub fn seq(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::SEQ)
    }
    pub fn timestamp(&self) -> u32 {
        be::u32_at(self.buffer.as_ref(), field::TIMESTAMP)
    }
    /// The count byte of a DATA datagram; 0 for a datagram without one (a HEARTBEAT).
    pub fn count(&self) -> u8 {
        self.buffer.as_ref().get(field::COUNT).copied().unwrap_or(0)
    }
    /// Raw sensor type code of reading `i`.
    pub fn sensor_type(&self, i: usize) -> u8 {
        self.buffer.as_ref()[field::READINGS + READING_LEN * i]
    }
    pub fn value(&self, i: usize) -> f32 {
        be::f32_at(self.buffer.as_ref(), field::READINGS + READING_LEN * i + 1)
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
    pub fn set_seq(&mut self, v: u32) {
        self.buffer.as_mut()[field::SEQ].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_timestamp(&mut self, v: u32) {
        self.buffer.as_mut()[field::TIMESTAMP].copy_from_slice(&v.to_be_bytes());
    }
    pub fn set_count(&mut self, v: u8) {
        self.buffer.as_mut()[field::COUNT] = v;
    }
    pub fn set_reading(&mut self, i: usize, sensor: u8, value: f32) {
        let at = field::READINGS + READING_LEN * i;
        let b = self.buffer.as_mut();
        b[at] = sensor;
        b[at + 1..at + 5].copy_from_slice(&value.to_bits().to_be_bytes());
    }
}

/// A validated TinyTelemetry datagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Repr {
    pub msg_type: MsgType,
    /// Never 0.
    pub device: u16,
    pub seq: u32,
    /// Unix seconds.
    pub timestamp: u32,
    readings: [(SensorType, f32); MAX_COUNT],
    count: u8,
}

impl Repr {
    /// Builds a datagram description; DATA needs 1..=37 readings, HEARTBEAT none.
    pub fn new(
        msg_type: MsgType,
        device: u16,
        seq: u32,
        timestamp: u32,
        readings: &[(SensorType, f32)],
    ) -> Result<Self, Error> {
        if device == 0 {
            return Err(Error::DeviceZero);
        }
        let count = u8::try_from(readings.len()).unwrap_or(u8::MAX);
        check_count(msg_type, count)?;
        let mut r = Repr {
            msg_type,
            device,
            seq,
            timestamp,
            readings: [(SensorType::Temperature, 0.0); MAX_COUNT],
            count,
        };
        r.readings[..readings.len()].copy_from_slice(readings);
        Ok(r)
    }

    /// Validates a checked packet against the design document's rules.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>) -> Result<Self, Error> {
        if packet.version() != VERSION {
            return Err(Error::BadVersion(packet.version()));
        }
        let msg_type = MsgType::from_code(packet.msg_type())?;
        if packet.device() == 0 {
            return Err(Error::DeviceZero);
        }
        let count = if msg_type == MsgType::Data { packet.count() } else { 0 };
        check_count(msg_type, count)?;
        let mut readings = [(SensorType::Temperature, 0.0); MAX_COUNT];
        for (i, slot) in readings.iter_mut().take(usize::from(count)).enumerate() {
            *slot = (SensorType::from_code(packet.sensor_type(i))?, packet.value(i));
        }
        Ok(Repr {
            msg_type,
            device: packet.device(),
            seq: packet.seq(),
            timestamp: packet.timestamp(),
            readings,
            count,
        })
    }

    /// Parses untrusted bytes in one step.
    pub fn decode(bytes: &[u8]) -> Result<Self, Error> {
        Repr::parse(&Packet::new_checked(bytes)?)
    }

    pub fn readings(&self) -> &[(SensorType, f32)] {
        &self.readings[..usize::from(self.count)]
    }

    pub fn buffer_len(&self) -> usize {
        match self.msg_type {
            MsgType::Data => field::READINGS + READING_LEN * usize::from(self.count),
            MsgType::Heartbeat => HEADER_LEN,
        }
    }

    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) {
        packet.set_version(VERSION);
        packet.set_msg_type(self.msg_type.code());
        packet.set_device(self.device);
        packet.set_seq(self.seq);
        packet.set_timestamp(self.timestamp);
        if self.msg_type == MsgType::Data {
            packet.set_count(self.count);
            for (i, (sensor, value)) in self.readings().iter().enumerate() {
                packet.set_reading(i, sensor.code(), *value);
            }
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = vec![0u8; self.buffer_len()];
        self.emit(&mut Packet::new_unchecked(&mut buf[..]));
        buf
    }
}

fn check_count(msg_type: MsgType, count: u8) -> Result<(), Error> {
    let (kind, min, max) = match msg_type {
        MsgType::Data => ("DATA", 1, MAX_COUNT as u8),
        MsgType::Heartbeat => ("HEARTBEAT", 0, 0),
    };
    if count < min || count > max {
        return Err(Error::BadCount { kind, count, min, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// DATA from device 1001, seq 3, timestamp 1698765435 (the design document's CSV example),
    /// two readings: temperature 21.5, humidity 40.25. Hand-built from the header diagram.
    const DATA: [u8; 23] = [
        0x01, 0x01, // version 1, DATA
        0x03, 0xe9, // device 1001
        0x00, 0x00, 0x00, 0x03, // seq 3
        0x65, 0x41, 0x1a, 0x7b, // timestamp 1698765435
        0x02, // count 2
        0x01, 0x41, 0xac, 0x00, 0x00, // temperature 21.5
        0x02, 0x42, 0x21, 0x00, 0x00, // humidity 40.25
    ];
    const HEARTBEAT: [u8; 12] = [0x01, 0x02, 0x00, 0x07, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00];

    #[test]
    fn deconstruct_golden() {
        let p = Packet::new_checked(&DATA[..]).expect("checked");
        assert_eq!((p.version(), p.msg_type(), p.device(), p.seq(), p.timestamp()), (1, 1, 1001, 3, 1_698_765_435));
        assert_eq!(p.count(), 2);
        assert_eq!((p.sensor_type(0), p.value(0)), (1, 21.5));
        assert_eq!((p.sensor_type(1), p.value(1)), (2, 40.25));
    }

    #[test]
    fn construct_golden() {
        let r = Repr::new(
            MsgType::Data,
            1001,
            3,
            1_698_765_435,
            &[(SensorType::Temperature, 21.5), (SensorType::Humidity, 40.25)],
        )
        .expect("valid");
        assert_eq!(r.to_bytes(), DATA);
        assert_eq!(Repr::decode(&DATA), Ok(r));
        // Every accessor is safe on a checked packet, the header-only HEARTBEAT included.
        assert_eq!(Packet::new_checked(&HEARTBEAT[..]).expect("checked").count(), 0);
        let hb = Repr::decode(&HEARTBEAT).expect("heartbeat");
        assert_eq!((hb.msg_type, hb.device, hb.seq), (MsgType::Heartbeat, 7, u32::MAX));
        assert_eq!(hb.to_bytes(), HEARTBEAT);
    }

    #[test]
    fn max_count_fits_200_bytes() {
        let readings = vec![(SensorType::Voltage, 3.3); MAX_COUNT];
        let r = Repr::new(MsgType::Data, 1, 0, 0, &readings).expect("37 readings");
        assert_eq!(MAX_COUNT, 37);
        assert_eq!(r.to_bytes().len(), 198);
        assert!(Repr::new(MsgType::Data, 1, 0, 0, &vec![(SensorType::Voltage, 3.3); 38]).is_err());
    }

    #[test]
    fn validation_rules() {
        let mut v = DATA;
        v[0] = 0;
        assert_eq!(Repr::decode(&v), Err(Error::BadVersion(0)));
        let mut t = HEARTBEAT;
        t[1] = 0;
        assert_eq!(Repr::decode(&t), Err(Error::BadType(0)));
        let mut d = DATA;
        d[2] = 0;
        d[3] = 0;
        assert_eq!(Repr::decode(&d), Err(Error::DeviceZero));
        let mut s = DATA;
        s[13] = 4;
        assert_eq!(Repr::decode(&s), Err(Error::BadSensorType(4)));
        let mut c = DATA;
        c[12] = 3;
        assert_eq!(Repr::decode(&c), Err(Error::LengthMismatch { expected: 28, actual: 23 }));
        let mut zero = DATA[..13].to_vec();
        zero[12] = 0;
        assert!(matches!(Repr::decode(&zero), Err(Error::BadCount { kind: "DATA", count: 0, .. })));
        assert_eq!(Repr::decode(&DATA[..12]), Err(Error::TooShort { len: 12, need: 13 }));
        assert_eq!(Repr::decode(&DATA[..5]), Err(Error::TooShort { len: 5, need: 12 }));
        let mut hb_payload = HEARTBEAT.to_vec();
        hb_payload.push(0);
        assert_eq!(Repr::decode(&hb_payload), Err(Error::LengthMismatch { expected: 12, actual: 13 }));
        assert_eq!(Repr::decode(&[1u8; 201]), Err(Error::TooLong { len: 201, max: 200 }));
    }

    fn arb_repr() -> impl Strategy<Value = Repr> {
        let reading = (1u8..=3, any::<f32>()).prop_map(|(t, v)| (SensorType::from_code(t).expect("1..=3"), v));
        (any::<bool>(), 1u16.., any::<u32>(), any::<u32>(), proptest::collection::vec(reading, 1..=MAX_COUNT))
            .prop_map(|(data, device, seq, ts, readings)| {
                if data {
                    Repr::new(MsgType::Data, device, seq, ts, &readings).expect("valid")
                } else {
                    Repr::new(MsgType::Heartbeat, device, seq, ts, &[]).expect("valid")
                }
            })
    }

    proptest! {
        #[test]
        fn round_trip(r in arb_repr()) {
            let bytes = r.to_bytes();
            let back = Repr::decode(&bytes).expect("emitted bytes parse");
            prop_assert_eq!(back.to_bytes(), bytes);
            prop_assert_eq!((back.msg_type, back.device, back.seq, back.timestamp), (r.msg_type, r.device, r.seq, r.timestamp));
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..260)) {
            let _ = Repr::decode(&bytes);
        }
    }
}
