//! tshark with the project's dissector, its PDML read back, and captures written for it:
//! shared by the dissector's tests (`tools/tests/wireshark.rs`, and `node/tests/wireshark.rs`
//! for DTLS, which includes this file by path).
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The dissector, from either crate's directory.
pub const LUA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/wireshark/telemesh.lua");

// ---------------------------------------------------------------------------------------
// tshark and its PDML
// ---------------------------------------------------------------------------------------

/// Whether `tshark` runs here. Under CI a missing `tshark` is a failure: `.ci/run` installs it.
pub fn have_tshark(test: &str) -> bool {
    let ok = Command::new("tshark").arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "tshark is missing under CI: .ci/run installs it (apt-get install -y tshark)"
        );
        // Straight to stderr: the test harness would hide an `eprintln!` of a test that passes.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: NOT RUN: `tshark` is not installed, so the Wireshark dissector cannot be checked \
             (DEBIAN_FRONTEND=noninteractive apt-get install -y tshark)"
        );
    }
    ok
}

/// One field (or protocol) of a packet's tree, in document order.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub show: String,
    pub showname: String,
    /// The field's bytes in hex, as PDML gives them.
    pub value: String,
}

/// A decoded packet: its fields in tree order, depth first.
#[derive(Debug)]
pub struct Packet {
    pub fields: Vec<Field>,
}

impl Packet {
    pub fn all(&self, name: &str) -> Vec<&Field> {
        self.fields.iter().filter(|f| f.name == name).collect()
    }
    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|f| f.name == name)
    }
    /// The one field called `name`.
    pub fn one(&self, name: &str) -> &Field {
        let all = self.all(name);
        let names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(all.len(), 1, "{name}: expected one field, found {} among {names:?}", all.len());
        all[0]
    }
    pub fn show(&self, name: &str) -> &str {
        &self.one(name).show
    }
    pub fn drop_reason(&self, proto: &str) -> Option<&str> {
        let name = format!("{proto}.drop_reason");
        self.fields.iter().find(|f| f.name == name).map(|f| f.show.as_str())
    }
}

/// Runs `tshark -r pcap -X lua_script:telemesh.lua -T pdml` with `args` and parses its packets.
pub fn tshark(pcap: &Path, args: &[&str]) -> Vec<Packet> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .arg("-X")
        .arg(format!("lua_script:{LUA}"))
        .args(args)
        .args(["-T", "pdml"])
        .output()
        .expect("runs tshark");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "tshark failed: {stderr}");
    // A Lua error does not fail tshark: it prints it and goes on without the dissector.
    assert!(!stderr.contains("Lua:") && !stderr.contains("lua_script"), "tshark reported: {stderr}");
    // A damaged payload's bytes reach the PDML as they are.
    let xml = String::from_utf8_lossy(&out.stdout);
    let doc = roxmltree::Document::parse(&xml).expect("tshark writes well-formed PDML");
    let attr = |n: &roxmltree::Node, a: &str| n.attribute(a).unwrap_or_default().to_owned();
    let packets: Vec<Packet> = doc
        .root_element()
        .children()
        .filter(|n| n.has_tag_name("packet"))
        .map(|p| Packet {
            fields: p
                .descendants()
                .filter(|n| n.has_tag_name("field") || n.has_tag_name("proto"))
                .map(|n| Field {
                    name: attr(&n, "name"),
                    show: attr(&n, "show"),
                    showname: attr(&n, "showname"),
                    value: attr(&n, "value"),
                })
                .collect(),
        })
        .collect();
    // A Lua error inside the dissector shows in the tree, not in tshark's exit status.
    for (i, p) in packets.iter().enumerate() {
        if let Some(e) = p.fields.iter().find(|f| f.name == "_ws.lua.error") {
            panic!("packet {}: {}", i + 1, e.showname);
        }
    }
    packets
}

// ---------------------------------------------------------------------------------------
// Captures
// ---------------------------------------------------------------------------------------

/// A classic pcap file with nanosecond timestamps (magic `a1b23c4d`). Written by hand: a
/// 24-byte file header and a 16-byte header per packet are the whole format.
pub struct Pcap {
    bytes: Vec<u8>,
}

/// LINKTYPE_ETHERNET.
pub const ETHERNET: u32 = 1;
/// LINKTYPE_WIRESHARK_UPPER_PDU: each packet names the dissector for its bytes (what
/// Wireshark's "Export PDUs" writes, e.g. for the plaintext of a decrypted DTLS session).
pub const UPPER_PDU: u32 = 252;

impl Pcap {
    pub fn new(linktype: u32) -> Pcap {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&0xa1b2_3c4d_u32.to_le_bytes());
        bytes.extend_from_slice(&2u16.to_le_bytes());
        bytes.extend_from_slice(&4u16.to_le_bytes());
        bytes.extend_from_slice(&0i32.to_le_bytes()); // UTC
        bytes.extend_from_slice(&0u32.to_le_bytes()); // accuracy
        bytes.extend_from_slice(&65_535u32.to_le_bytes()); // snap length
        bytes.extend_from_slice(&linktype.to_le_bytes());
        Pcap { bytes }
    }

    pub fn packet(&mut self, at_ns: u64, data: &[u8]) {
        let len = u32::try_from(data.len()).expect("small packet");
        let secs = u32::try_from(at_ns / 1_000_000_000).expect("before 2106");
        self.bytes.extend_from_slice(&secs.to_le_bytes());
        self.bytes.extend_from_slice(&((at_ns % 1_000_000_000) as u32).to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(data);
    }

    /// `payload` in a UDP datagram from 127.0.0.1:`from` to 127.0.0.1:`to`, as a capture on
    /// `lo` holds it.
    pub fn udp(&mut self, at_ns: u64, from: u16, to: u16, payload: &[u8]) {
        let builder =
            etherparse::PacketBuilder::ethernet2([0; 6], [0; 6]).ipv4([127, 0, 0, 1], [127, 0, 0, 1], 64).udp(from, to);
        let mut frame = Vec::with_capacity(builder.size(payload.len()));
        builder.write(&mut frame, payload).expect("writes to a Vec");
        self.packet(at_ns, &frame);
    }

    /// `pdu` for the dissector called `dissector`, in an exported-PDU record: tag 12 (the
    /// dissector's name, NUL-padded to a multiple of 4), then tag 0 (end of options).
    pub fn exported(&mut self, at_ns: u64, dissector: &str, pdu: &[u8]) {
        let mut name = dissector.as_bytes().to_vec();
        name.resize((name.len() / 4 + 1) * 4, 0);
        let mut record = Vec::new();
        record.extend_from_slice(&12u16.to_be_bytes());
        record.extend_from_slice(&u16::try_from(name.len()).expect("short name").to_be_bytes());
        record.extend_from_slice(&name);
        record.extend_from_slice(&[0, 0, 0, 0]);
        record.extend_from_slice(pdu);
        self.packet(at_ns, &record);
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, &self.bytes).expect("writes the capture");
    }
}
