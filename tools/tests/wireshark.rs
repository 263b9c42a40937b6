//! The Wireshark dissector (`tools/wireshark/telemesh.lua`) under Debian's `tshark`, against
//! the simulator's ground truth: `telemesh-sensor --dry-run --truth` writes what each device
//! sent, the test writes those datagrams into a capture, and every field tshark decodes must
//! be the truth log's — device, seq, timestamp, kind, each reading's bits and, for
//! TinyTelemetry, its sensor type by name. The IoTStream checksum must be checked (a
//! corrupted one flagged), the trailer of tagged datagrams shown and, given the node's key
//! file, verified; the verdict the dissector gives (`<proto>.drop_reason`) must be the node
//! decoders' own for hundreds of damaged datagrams. The secure frame is read from decrypted
//! bytes: an exported-PDU capture, and plain UDP with "Decode As".
//!
//! Without `tshark` the tests say so and pass, except under CI (`CI` set), where `.ci/run`
//! installs it and a missing `tshark` fails them.

#[path = "support/tshark.rs"]
mod tshark;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::auth::{self, Key, Keys, Verifier};
use telemesh_proto::record::{Kind, Record, TimestampUnit};
use telemesh_proto::wire::{iotstream, Dialect};
use telemesh_tools::sensor::{self, Reading, TruthRecord};
use tshark::{have_tshark, tshark, Packet, Pcap, ETHERNET, UPPER_PDU};

/// 2025-12-11T18:20:00Z, the source documents' example session, in Unix ms.
const T0_MS: u64 = 1_765_477_200_000;

// ---------------------------------------------------------------------------------------
// Ground truth
// ---------------------------------------------------------------------------------------

/// `telemesh-sensor --dry-run --truth` with `args`: the packets the devices send, in order.
fn simulate(dir: &Path, name: &str, args: &[&str]) -> Vec<TruthRecord> {
    let truth = dir.join(format!("{name}.ndjson"));
    let out = Command::new(env!("CARGO_BIN_EXE_telemesh-sensor"))
        .args(args)
        .args(["--seed", "17", "--start-time-ms", &T0_MS.to_string(), "--dry-run", "--truth"])
        .arg(&truth)
        .output()
        .expect("runs telemesh-sensor");
    assert!(out.status.success(), "telemesh-sensor failed: {}", String::from_utf8_lossy(&out.stderr));
    let records = sensor::read_truth(&truth).expect("reads the truth log");
    assert!(!records.is_empty());
    records
}

fn iotstream_truth(dir: &Path) -> Vec<TruthRecord> {
    let args = ["--dialect", "iotstream", "--devices", "1-6,1001", "--count", "40", "--reboot-after", "15"];
    simulate(dir, "iotstream", &args)
}

fn tinytelemetry_truth(dir: &Path) -> Vec<TruthRecord> {
    let args = ["--dialect", "tinytelemetry", "--devices", "1-4,7000,7001", "--count", "40", "--batch", "4"];
    simulate(dir, "tinytelemetry", &args)
}

fn secure_truth(dir: &Path) -> Vec<TruthRecord> {
    simulate(dir, "secure", &["--dialect", "secure", "--devices", "1001-1006", "--count", "40"])
}

/// The message type on the wire (INIT 0, DATA 1, HEARTBEAT 2, in both plain dialects).
fn kind_code(kind: Kind) -> u8 {
    match kind {
        Kind::Init => 0,
        Kind::Data => 1,
        Kind::Heartbeat => 2,
    }
}

/// The bits of an f32 as PDML prints a field's bytes.
fn f32_hex(v: f32) -> String {
    format!("{:08x}", v.to_bits())
}

/// Every field of an IoTStream or TinyTelemetry packet is the truth record's.
fn assert_plain(p: &Packet, t: &TruthRecord) {
    let proto = t.dialect.name();
    let ctx = format!("{proto} device {} seq {}", t.device, t.seq);
    let field = |f: &str| format!("{proto}.{f}");
    assert!(p.has(proto), "{ctx}: not decoded as {proto}");
    assert_eq!(p.show(&field("version")), "1", "{ctx}");
    assert_eq!(p.show(&field("type")), kind_code(t.kind).to_string(), "{ctx}");
    let kind_name = match t.kind {
        Kind::Init => "INIT",
        Kind::Data => "DATA",
        Kind::Heartbeat => "HEARTBEAT",
    };
    assert!(p.one(&field("type")).showname.contains(kind_name), "{ctx}");
    assert_eq!(p.show(&field("device")), t.device.to_string(), "{ctx}");
    assert_eq!(p.show(&field("seq")), t.seq.to_string(), "{ctx}");
    assert_eq!(p.show(&field("timestamp")), t.timestamp.to_string(), "{ctx}");
    assert_eq!(p.drop_reason(proto), None, "{ctx}: a valid datagram is not dropped");
    match t.dialect {
        Dialect::Iotstream => {
            assert_eq!(p.show("iotstream.batch"), t.readings.len().to_string(), "{ctx}");
            assert_eq!(p.one("iotstream.checksum").value, format!("{:02x}", t.datagram[11]), "{ctx}");
            assert_eq!(p.show("iotstream.checksum.status"), "1", "{ctx}: checksum good");
            let got = p.all("iotstream.reading");
            assert_eq!(got.len(), t.readings.len(), "{ctx}");
            for (i, (g, r)) in got.iter().zip(&t.readings).enumerate() {
                let Reading::Plain(v) = *r else { panic!("{ctx}: an IoTStream reading has no type") };
                assert_eq!(g.value, f32_hex(v), "{ctx}: reading {i}");
                // The label the node gives (`r1..rN`) and the value in its shortest form.
                assert_eq!(g.showname, format!("r{}: {v}", i + 1), "{ctx}");
            }
        }
        Dialect::Tinytelemetry => {
            let readings = p.all("tinytelemetry.reading");
            let sensors = p.all("tinytelemetry.sensor");
            let values = p.all("tinytelemetry.value");
            let n = t.readings.len();
            assert_eq!((readings.len(), sensors.len(), values.len()), (n, n, n), "{ctx}");
            if t.kind == Kind::Data {
                assert_eq!(p.show("tinytelemetry.count"), t.readings.len().to_string(), "{ctx}");
            } else {
                assert!(!p.has("tinytelemetry.count"), "{ctx}: a HEARTBEAT has no count byte");
            }
            for (i, r) in t.readings.iter().enumerate() {
                let Reading::Typed { sensor, value } = *r else { panic!("{ctx}: a TinyTelemetry reading is typed") };
                assert_eq!(sensors[i].show, sensor.code().to_string(), "{ctx}: reading {i}");
                assert_eq!(sensors[i].showname, format!("Sensor type: {} ({})", sensor.name(), sensor.code()), "{ctx}");
                assert_eq!(values[i].value, f32_hex(value), "{ctx}: reading {i}");
                assert_eq!(readings[i].showname, format!("Reading {}: {} {value}", i + 1, sensor.name()), "{ctx}");
            }
        }
        Dialect::Secure => unreachable!("plain dialects only"),
    }
}

/// Every field of a secure frame is the truth record's.
fn assert_secure(p: &Packet, t: &TruthRecord) {
    let ctx = format!("secure client {} seq {}", t.device, t.seq);
    assert!(p.has("telemesh_secure"), "{ctx}: not decoded");
    assert_eq!(p.show("telemesh_secure.client"), t.device.to_string(), "{ctx}");
    assert_eq!(p.show("telemesh_secure.seq"), t.seq.to_string(), "{ctx}");
    assert_eq!(p.show("telemesh_secure.timestamp"), t.timestamp.to_string(), "{ctx}");
    assert_eq!(p.show("telemesh_secure.length"), (t.datagram.len() - 22).to_string(), "{ctx}");
    assert_eq!(p.drop_reason("telemesh_secure"), None, "{ctx}");
    let keys = p.all("telemesh_secure.key");
    let values = p.all("telemesh_secure.value");
    assert_eq!((keys.len(), values.len()), (t.readings.len(), t.readings.len()), "{ctx}");
    match t.kind {
        Kind::Heartbeat => assert_eq!(p.show("telemesh_secure.heartbeat"), "1", "{ctx}"),
        _ => assert!(!p.has("telemesh_secure.heartbeat"), "{ctx}"),
    }
    for (i, r) in t.readings.iter().enumerate() {
        let Reading::Keyed { key, value } = *r else { panic!("{ctx}: a secure reading has a key") };
        assert_eq!(keys[i].show, key.key(), "{ctx}: pair {i}");
        let shown: f64 = values[i].show.parse().expect("a number");
        assert_eq!(shown.to_bits(), value.to_bits(), "{ctx}: pair {i}: {}", values[i].show);
        assert_eq!(values[i].showname, format!("Value: {value:.1}"), "{ctx}");
    }
}

// ---------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------

/// IoTStream and TinyTelemetry on their default ports and, found by heuristic, on the ports
/// an experiment's relay uses; one datagram with a corrupted checksum.
#[test]
fn plain_dialects_decode_as_the_truth_log_says() {
    if !have_tshark("plain_dialects_decode_as_the_truth_log_says") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let iot = iotstream_truth(dir.path());
    let tiny = tinytelemetry_truth(dir.path());
    assert!(iot.iter().any(|t| t.kind == Kind::Init) && tiny.iter().any(|t| t.kind == Kind::Heartbeat));

    // Odd packets to the node's port, even ones to another port (found by heuristic).
    let mut pcap = Pcap::new(ETHERNET);
    let mut order = Vec::new();
    for (i, t) in iot.iter().chain(&tiny).enumerate() {
        let port = match (t.dialect, i % 2) {
            (Dialect::Iotstream, 0) => 5005,
            (Dialect::Iotstream, _) => 6005,
            (_, 0) => 5000,
            _ => 46_000,
        };
        pcap.udp(t.sent_at_ns, 40_000 + t.device % 1000, port, &t.datagram);
        order.push(t);
    }
    // A DATA datagram with its checksum corrupted.
    let mut bad = iot.iter().find(|t| t.kind == Kind::Data).expect("a DATA").datagram.clone();
    let right = bad[11];
    bad[11] = right.wrapping_add(0x5a);
    pcap.udp(T0_MS * 1_000_000 + 999, 40_001, 5005, &bad);
    // Readings no sensor sends, printed as the node prints them (Rust's `Display` for f32).
    let odd = [1e38, -0.0, 1e-45, 3.402_823_5e38, 1.175_494_4e-38, 123_456.7, f32::NAN, f32::NEG_INFINITY];
    let odd_datagram = iotstream::Repr::new(iotstream::MsgType::Data, 9, 9, 9, &odd).expect("valid").to_bytes();
    pcap.udp(T0_MS * 1_000_000 + 1_999, 40_001, 5005, &odd_datagram);
    let path = dir.path().join("plain.pcap");
    pcap.write(&path);

    let packets = tshark(&path, &[]);
    assert_eq!(packets.len(), order.len() + 2);
    let odd_packet = &packets[order.len() + 1];
    let shown: Vec<&str> = odd_packet.all("iotstream.reading").iter().map(|f| f.showname.as_str()).collect();
    let want: Vec<String> = odd.iter().enumerate().map(|(i, v)| format!("r{}: {v}", i + 1)).collect();
    assert_eq!(shown, want);
    for (p, t) in packets.iter().zip(&order) {
        assert_plain(p, t);
        let other = if t.dialect == Dialect::Iotstream { "tinytelemetry" } else { "iotstream" };
        assert!(!p.has(other), "{} datagram also decoded as {other}", t.dialect);
    }
    let corrupt = &packets[order.len()];
    assert_eq!(corrupt.show("iotstream.checksum.status"), "0", "a wrong checksum is flagged");
    assert_eq!(corrupt.show("iotstream.checksum.computed"), format!("0x{right:02x}"));
    assert!(corrupt.has("iotstream.checksum.bad"), "with an expert item");
    assert_eq!(corrupt.drop_reason("iotstream"), Some("bad_checksum"));
    let fields: usize = packets.iter().map(|p| p.fields.iter().filter(|f| f.name.contains('.')).count()).sum();
    eprintln!(
        "checked {} IoTStream and {} TinyTelemetry datagrams against the truth log and a bad checksum \
         ({fields} fields)",
        iot.len(),
        tiny.len()
    );
}

/// The length of the datagram before a trailer, as docs/protocol.md ("Authenticated
/// datagrams") says a header states it.
fn stated_len(dialect: Dialect, b: &[u8]) -> Option<usize> {
    match dialect {
        Dialect::Iotstream => b.get(10).map(|n| 12 + 4 * usize::from(*n)),
        _ => match b.get(1) {
            Some(2) => Some(12),
            Some(1) => b.get(12).map(|n| 13 + 5 * usize::from(*n)),
            _ => None,
        },
    }
}

/// What a node says of `bytes`: the drop reason, or `None` for a record. With `keys`, the
/// node's verifier (`proto::auth::Verifier`, a fresh replay window) runs first.
fn node_verdict(dialect: Dialect, bytes: &[u8], keys: Option<&Keys>) -> Option<String> {
    let datagram = match keys {
        Some(keys) => match Verifier::new(dialect, keys, false).verify(bytes) {
            Ok(verdict) => verdict.datagram(),
            Err(refusal) => return Some(refusal.reason().to_owned()),
        },
        None => bytes,
    };
    Record::from_datagram(dialect, datagram, T0_MS * 1_000_000, TimestampUnit::Ms).err().map(|e| e.reason().to_owned())
}

/// The verdict the dissector must give: the node's for a device with a key in `keys`;
/// otherwise bytes past the length the header states are read as a trailer (in
/// `proto::auth::open`'s order, the tag unchecked) and the rest as a node without keys
/// reads it (docs/wireshark.md, "What it shows").
fn dissector_verdict(dialect: Dialect, b: &[u8], keys: &Keys) -> Option<String> {
    if auth::device(b).is_some_and(|d| keys.get(dialect, d).is_some()) {
        return node_verdict(dialect, b, Some(keys));
    }
    match stated_len(dialect, b) {
        Some(n) if b.len() > n && b.len() < n + auth::TRAILER_LEN => Some("auth_truncated".to_owned()),
        Some(n) if b.len() > n + auth::TRAILER_LEN || (b.len() > n && b.len() > 200) => {
            Some("auth_overlong".to_owned())
        }
        Some(n) if b.len() > n => node_verdict(dialect, &b[..n], None),
        _ => node_verdict(dialect, b, None),
    }
}

/// One random change to a datagram: a byte overwritten, a field set out of range, bytes cut
/// or added. Bytes 2..4 (the device) are left alone, so the keyed run finds the key.
fn damage(dialect: Dialect, rng: &mut ChaCha8Rng, good: &[u8]) -> Vec<u8> {
    let mut b = good.to_vec();
    match rng.gen_range(0..9) {
        0 => {
            let i = rng.gen_range(0..b.len());
            if !(2..4).contains(&i) {
                b[i] = rng.gen();
            }
        }
        1 => b[0] = rng.gen_range(0..3),
        2 => b[1] = rng.gen_range(0..4),
        3 if dialect == Dialect::Iotstream => b[10] = rng.gen_range(0..50),
        3 if b.len() > 12 => b[12] = rng.gen_range(0..40),
        4 if dialect == Dialect::Iotstream => b[11] = rng.gen(),
        4 => {
            let readings = b.len().saturating_sub(13) / 5;
            if readings > 0 {
                let i = 13 + 5 * rng.gen_range(0..readings);
                b[i] = rng.gen_range(0..5);
            }
        }
        // Not to 0: UDP hands an empty payload to no dissector.
        5 => b.truncate(rng.gen_range(1..b.len())),
        6 => b.extend((0..rng.gen_range(1..16)).map(|_| rng.gen::<u8>())),
        7 => {
            b.resize(rng.gen_range(195..215), 0x41);
            if rng.gen_bool(0.5) {
                // A length byte that states more than 200 bytes.
                let at = if dialect == Dialect::Iotstream { 10 } else { 12 };
                b[at] = 50;
            }
        }
        _ => {} // left as it is: a datagram the node takes
    }
    if dialect == Dialect::Iotstream && b.len() >= 12 && rng.gen_bool(0.7) {
        // Mostly with the checksum the damaged header calls for, so the later checks are reached.
        b[11] = b[..11].iter().fold(0u8, |a, x| a.wrapping_add(*x));
    }
    b
}

/// A made-up key for a device; another `salt`, another key.
fn key_bytes(dialect: Dialect, device: u16, salt: u8) -> [u8; 32] {
    let mut k = [0u8; 32];
    k[0] = dialect.code();
    k[1..3].copy_from_slice(&device.to_be_bytes());
    k[3..].iter_mut().enumerate().for_each(|(i, x)| *x = i as u8 ^ salt);
    k
}

fn key_for(dialect: Dialect, device: u16) -> Key {
    Key::new(key_bytes(dialect, device, 0xa5))
}

/// The device's line of a key file (docs/operations.md, "Device keys").
fn key_line(dialect: Dialect, device: u16, salt: u8) -> String {
    format!("{:<14} {device:<6} {}\n", dialect.name(), hex(&key_bytes(dialect, device, salt)))
}

/// Damaged datagrams: the dissector's verdict is the node decoders' drop reason, for a node
/// without keys (bytes past the stated length read as a trailer, as docs/wireshark.md says)
/// and for a node with every device's key (`-o telemesh.device_keys:FILE`).
#[test]
fn drop_reasons_are_the_decoders() {
    if !have_tshark("drop_reasons_are_the_decoders") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let truth: Vec<TruthRecord> = [iotstream_truth(dir.path()), tinytelemetry_truth(dir.path())].concat();
    let mut keys_file = String::from("# every simulated device\n");
    let mut seen = std::collections::BTreeSet::new();
    for t in &truth {
        if seen.insert((t.dialect, t.device)) {
            keys_file.push_str(&key_line(t.dialect, t.device, 0xa5));
        }
    }
    let keys_path = dir.path().join("device-keys");
    std::fs::write(&keys_path, &keys_file).expect("writes keys");
    let keys = Keys::parse(&keys_file).expect("the node reads the key file");

    // Plain damaged datagrams, then the same damage sealed with the device's key (and now
    // and then a damaged trailer), each to the dialect's port.
    let mut plain = Vec::new();
    let mut sealed = Vec::new();
    for (round, t) in truth.iter().cycle().take(3 * truth.len()).enumerate() {
        let b = damage(t.dialect, &mut rng, &t.datagram);
        let key = key_for(t.dialect, t.device);
        let mut s = b.clone();
        if s.len() <= auth::MAX_BODY {
            auth::seal(t.dialect, &key, round as u32, &mut s).expect("fits");
            match rng.gen_range(0..6) {
                0 => s.truncate(s.len() - rng.gen_range(1..12)),
                1 => {
                    let i = s.len() - rng.gen_range(1..=8);
                    s[i] ^= 1 << rng.gen_range(0..8);
                }
                _ => {}
            }
        }
        plain.push((t.dialect, b));
        sealed.push((t.dialect, s, key));
    }
    let write = |name: &str, datagrams: &mut dyn Iterator<Item = (Dialect, &Vec<u8>)>| {
        let mut pcap = Pcap::new(ETHERNET);
        for (i, (dialect, b)) in datagrams.enumerate() {
            let port = if dialect == Dialect::Iotstream { 5005 } else { 5000 };
            pcap.udp(T0_MS * 1_000_000 + i as u64 * 1_000_000, 40_000, port, b);
        }
        let path = dir.path().join(name);
        pcap.write(&path);
        path
    };
    let plain_pcap = write("plain.pcap", &mut plain.iter().map(|(d, b)| (*d, b)));
    let sealed_pcap = write("sealed.pcap", &mut sealed.iter().map(|(d, b, _)| (*d, b)));

    let mut reasons: HashMap<String, usize> = HashMap::new();
    let got = tshark(&plain_pcap, &[]);
    assert_eq!(got.len(), plain.len());
    for (p, (dialect, b)) in got.iter().zip(&plain) {
        let want = dissector_verdict(*dialect, b, &Keys::default());
        assert_eq!(p.drop_reason(dialect.name()).map(str::to_owned), want, "{dialect} {}", hex(b));
        *reasons.entry(want.unwrap_or_else(|| "accepted".into())).or_default() += 1;
    }

    let keys_pref = format!("telemesh.device_keys:{}", keys_path.display());
    let got = tshark(&sealed_pcap, &["-o", &keys_pref]);
    assert_eq!(got.len(), sealed.len());
    for (p, (dialect, b, key)) in got.iter().zip(&sealed) {
        let want = dissector_verdict(*dialect, b, &keys);
        assert_eq!(p.drop_reason(dialect.name()).map(str::to_owned), want, "{dialect} keyed {}", hex(b));
        let status = p.all(&format!("{}.auth.tag_status", dialect.name()));
        if want.as_deref() == Some("auth_bad_tag") {
            assert_eq!(status.first().map(|f| f.show.as_str()), Some("2"), "a bad tag is shown as bad");
        } else if auth::open(*dialect, key, b).is_ok() {
            assert_eq!(status.first().map(|f| f.show.as_str()), Some("1"), "a good tag is shown as good");
        }
        *reasons.entry(format!("keyed {}", want.unwrap_or_else(|| "accepted".into()))).or_default() += 1;
    }
    let mut list: Vec<_> = reasons.into_iter().collect();
    list.sort();
    eprintln!("{} damaged datagrams, verdicts as the node's decoders: {list:?}", plain.len() + sealed.len());
    for must in ["accepted", "bad_checksum", "bad_version", "bad_type", "length_mismatch", "bad_count", "too_short",
        "too_long", "bad_sensor_type", "auth_truncated", "auth_overlong", "keyed accepted", "keyed auth_bad_tag",
        "keyed auth_truncated", "keyed bad_checksum"]
    {
        assert!(list.iter().any(|(r, _)| r == must), "no case of {must}: {list:?}");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Tagged datagrams (`telemesh-sensor --device-keys`): the counter and tag shown, unverified
/// without keys; good under the right key, bad under another, and a keyed device's datagram
/// without a trailer dropped. The golden vectors of docs/protocol.md among them.
#[test]
fn tagged_datagrams_show_their_trailer() {
    if !have_tshark("tagged_datagrams_show_their_trailer") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let truth: Vec<TruthRecord> = [iotstream_truth(dir.path()), tinytelemetry_truth(dir.path())].concat();
    let mut pcap = Pcap::new(ETHERNET);
    let mut sent = Vec::new();
    for (i, t) in truth.iter().enumerate() {
        let counter = 1_765_477_200 + i as u32;
        let mut b = t.datagram.clone();
        auth::seal(t.dialect, &key_for(t.dialect, t.device), counter, &mut b).expect("fits");
        let port = match (t.dialect, i % 2) {
            (Dialect::Iotstream, 0) => 5005,
            (Dialect::Iotstream, _) => 6005,
            (_, 0) => 5000,
            _ => 46_000,
        };
        pcap.udp(t.sent_at_ns, 40_000, port, &b);
        sent.push((t, counter, b));
    }
    // docs/protocol.md's vectors: key 32 × 07 and 32 × 01.
    let golden_iot = "0101002a00070ea41c76017841ac0000010203043fbb48747f9a76e7";
    let golden_tiny = "0102000500000009693aa05000000001043e97fbf592d500";
    pcap.udp(T0_MS * 1_000_000, 40_000, 5005, &hex_bytes(golden_iot));
    pcap.udp(T0_MS * 1_000_000, 40_000, 5000, &hex_bytes(golden_tiny));
    let path = dir.path().join("tagged.pcap");
    pcap.write(&path);

    let check = |packets: &[Packet], keyed: bool| {
        assert_eq!(packets.len(), sent.len() + 2);
        for (p, (t, counter, b)) in packets.iter().zip(&sent) {
            assert_plain(p, t);
            let proto = t.dialect.name();
            assert_eq!(p.show(&format!("{proto}.auth.counter")), counter.to_string());
            assert_eq!(p.one(&format!("{proto}.auth.tag")).value, hex(&b[b.len() - 8..]));
            assert_eq!(p.show(&format!("{proto}.auth.tag_status")), if keyed { "1" } else { "0" });
        }
    };
    check(&tshark(&path, &[]), false);

    let keys = dir.path().join("device-keys");
    let lines = |salt: u8| {
        let mut text: String = truth
            .iter()
            .map(|t| key_line(t.dialect, t.device, salt))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        text.push_str(&format!("iotstream 42 {}\ntinytelemetry 5 {}\n", "07".repeat(32), "01".repeat(32)));
        text
    };
    std::fs::write(&keys, lines(0xa5)).expect("writes keys");
    let pref = format!("telemesh.device_keys:{}", keys.display());
    let packets = tshark(&path, &["-o", &pref]);
    check(&packets, true);
    let n = packets.len();
    for (p, proto) in [(&packets[n - 2], "iotstream"), (&packets[n - 1], "tinytelemetry")] {
        assert_eq!(p.show(&format!("{proto}.auth.tag_status")), "1", "{proto} golden vector verifies");
        assert_eq!(p.drop_reason(proto), None);
    }

    // Every simulated device's key changed: every tag is bad, the datagrams dropped as auth_bad_tag.
    std::fs::write(&keys, lines(0x5a)).expect("writes keys");
    let packets = tshark(&path, &["-o", &pref]);
    for (p, (t, _, _)) in packets.iter().zip(&sent) {
        let proto = t.dialect.name();
        assert_eq!(p.show(&format!("{proto}.auth.tag_status")), "2");
        assert!(p.has(&format!("{proto}.auth.tag_computed")) && p.has(&format!("{proto}.auth.bad_tag")));
        assert_eq!(p.drop_reason(proto), Some("auth_bad_tag"));
    }
    eprintln!("checked {} tagged datagrams without keys, with the right keys and with wrong ones", sent.len() + 2);
}

fn hex_bytes(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// The secure frame from decrypted bytes: an exported-PDU capture naming the dissector, and
/// frames in plain UDP decoded with `-d udp.port==7006,telemesh_secure`.
#[test]
fn secure_frames_decode_from_decrypted_bytes() {
    if !have_tshark("secure_frames_decode_from_decrypted_bytes") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let truth = secure_truth(dir.path());
    assert!(truth.iter().any(|t| t.kind == Kind::Heartbeat) && truth.iter().any(|t| t.kind == Kind::Data));

    let mut exported = Pcap::new(UPPER_PDU);
    let mut udp = Pcap::new(ETHERNET);
    for t in &truth {
        exported.exported(t.sent_at_ns, "telemesh_secure", &t.datagram);
        udp.udp(t.sent_at_ns, 40_000, 7006, &t.datagram);
    }
    // Damaged frames: the verdict is the decoder's.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let mut damaged = Vec::new();
    for t in truth.iter().cycle().take(200) {
        let mut b = t.datagram.clone();
        match rng.gen_range(0..6) {
            0 => b[20..22].copy_from_slice(&rng.gen_range(0u16..40).to_be_bytes()),
            1 => b.truncate(rng.gen_range(1..b.len())),
            2 if b.len() > 22 => {
                let i = rng.gen_range(22..b.len());
                let set = b"=;.e+-x 9A\xff\xc3";
                b[i] = set[rng.gen_range(0..set.len())];
            }
            3 => {
                let extra: &[u8] = [&b";"[..], b";;", b"K=1e999", b"K=NaN", b"=1", b"K=.", b"K=1.", b"K=+.5e-3"]
                    [rng.gen_range(0..8)];
                b.extend_from_slice(extra);
                let n = (b.len() - 22) as u16;
                b[20..22].copy_from_slice(&n.to_be_bytes());
            }
            4 => b.resize(1201, b'1'),
            _ => {}
        }
        exported.exported(t.sent_at_ns, "telemesh_secure", &b);
        damaged.push(b);
    }
    // And one of each rarer case, whatever the random ones hit.
    for payload in [&b"CPU=\xff"[..], b"CPU=1e999", b"CPU=inf", b"C PU=1", b"CPU=1;;MEM=2", b"CPU=-.5e+3;"] {
        let t = &truth[0];
        let mut b = t.datagram[..20].to_vec();
        b.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        b.extend_from_slice(payload);
        exported.exported(t.sent_at_ns, "telemesh_secure", &b);
        damaged.push(b);
    }
    let exported_path = dir.path().join("secure-exported.pcap");
    let udp_path = dir.path().join("secure-udp.pcap");
    exported.write(&exported_path);
    udp.write(&udp_path);

    let packets = tshark(&exported_path, &[]);
    assert_eq!(packets.len(), truth.len() + damaged.len());
    for (p, t) in packets.iter().zip(&truth) {
        assert_secure(p, t);
    }
    let mut reasons: HashMap<String, usize> = HashMap::new();
    for (p, b) in packets[truth.len()..].iter().zip(&damaged) {
        let want = node_verdict(Dialect::Secure, b, None);
        assert_eq!(p.drop_reason("telemesh_secure").map(str::to_owned), want, "{}", hex(b));
        *reasons.entry(want.unwrap_or_else(|| "accepted".into())).or_default() += 1;
    }
    for must in ["accepted", "too_short", "too_long", "length_mismatch", "bad_utf8", "bad_pair"] {
        assert!(reasons.contains_key(must), "no case of {must}: {reasons:?}");
    }

    let packets = tshark(&udp_path, &["-d", "udp.port==7006,telemesh_secure"]);
    assert_eq!(packets.len(), truth.len());
    for (p, t) in packets.iter().zip(&truth) {
        assert_secure(p, t);
    }
    eprintln!("checked {} secure frames twice and {} damaged ones: {reasons:?}", truth.len(), damaged.len());
}
