#!/usr/bin/env python3
"""Writes the seed corpus for the wire-decoder fuzz targets (and proto/tests/corpus.rs).

    python3 proto/fuzz/make_corpus.py          # from anywhere; writes proto/fuzz/corpus/

Deterministic: the same bytes every run, so `git diff` after re-running shows nothing.
Only the standard library (struct) is used.

File names are read by proto/tests/corpus.rs:
  valid*        must decode and re-emit byte-identically;
  bad_<reason>* must be rejected with `wire::Error::reason() == <reason>`, where the
                reason is one of `wire::Error::REASONS`, either as the whole prefix
                (`bad_checksum_f2` -> "bad_checksum") or after `bad_`
                (`bad_too_short` -> "too_short").
"""

import math
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "corpus")
MAX_SENSOR_DATAGRAM = 200

# ---------------------------------------------------------------- IoTStream v1 (the Mini-RFC)
# header !BBHHIBB: version, type (INIT 0, DATA 1, HEARTBEAT 2), device, seq, timestamp,
# batch, checksum = sum(header[0..=10]) mod 256; then batch x f32 BE.


def iot(msg_type, device, seq, ts, readings, version=1, batch=None, checksum=None):
    batch = len(readings) if batch is None else batch
    head = struct.pack("!BBHHIB", version, msg_type, device, seq, ts, batch)
    cks = sum(head) % 256 if checksum is None else checksum
    return head + bytes([cks]) + b"".join(struct.pack("!f", r) for r in readings)


SEED_READINGS = [29.37, 23.53, 22.61, 22.04, 22.99]
SEED_EXAMPLE = iot(1, 1001, 1, 245642102, SEED_READINGS)
assert SEED_EXAMPLE[11] == 0x4F and len(SEED_EXAMPLE) == 32


def iotstream():
    c = {}
    c["valid_data_5"] = SEED_EXAMPLE
    c["valid_data_1"] = iot(1, 7, 65535, 0xFFFFFFFF, [-40.0])
    c["valid_init"] = iot(0, 1001, 0, 245641159, [])
    c["valid_heartbeat"] = iot(2, 65535, 12345, 245700000, [])
    # 47 readings = 12 + 188 = 200 bytes, the size limit; odd values included.
    odd = [0.0, -0.0, math.inf, -math.inf, 1e-45, 3.4028235e38]
    vals = odd + [20.0 + i * 0.25 for i in range(47 - len(odd))]
    c["valid_data_47_max"] = iot(1, 1, 1, 1, vals)
    assert len(c["valid_data_47_max"]) == MAX_SENSOR_DATAGRAM
    # NaN bit patterns must survive decode -> emit unchanged (quiet, signalling, payload).
    # Packed by hand: Python's float cannot carry a signalling NaN through struct.
    nan_bits = [0x7FC00000, 0x7F800001, 0xFFC12345]
    head = struct.pack("!BBHHIB", 1, 1, 42, 9, 1000, len(nan_bits))
    c["valid_data_nan"] = head + bytes([sum(head) % 256]) + b"".join(struct.pack("!I", b) for b in nan_bits)

    c["bad_too_short_empty"] = b""
    c["bad_too_short_11"] = SEED_EXAMPLE[:11]
    c["bad_too_long_201"] = SEED_EXAMPLE + bytes(201 - len(SEED_EXAMPLE))
    c["bad_version_2"] = iot(1, 1001, 1, 245642102, SEED_READINGS, version=2)
    c["bad_type_3"] = iot(3, 1001, 1, 245642102, SEED_READINGS)
    c["bad_checksum_f2"] = iot(1, 1001, 1, 245642102, SEED_READINGS, checksum=0xF2)
    c["bad_length_mismatch_31"] = SEED_EXAMPLE[:31]
    c["bad_count_heartbeat_5"] = iot(2, 1001, 1, 245642102, SEED_READINGS)
    c["bad_count_data_0"] = iot(1, 1001, 2, 245642102, [])
    return c


# ---------------------------------------------------------------- TinyTelemetry v1 (its design document)
# header !BBHII: version, type (DATA 1, HEARTBEAT 2), device (>0), seq u32, timestamp u32;
# DATA: count u8 (1..=37) + count x (sensor type u8 in {1,2,3}, f32 BE).


def tt(msg_type, device, seq, ts, readings, version=1, count=None):
    head = struct.pack("!BBHII", version, msg_type, device, seq, ts)
    if msg_type != 1:
        return head
    count = len(readings) if count is None else count
    return head + bytes([count]) + b"".join(struct.pack("!Bf", s, v) for s, v in readings)


TT_GOLDEN = tt(1, 1001, 3, 1698765435, [(1, 21.5), (2, 40.25)])
assert len(TT_GOLDEN) == 23


def tinytelemetry():
    c = {}
    c["valid_data_2"] = TT_GOLDEN
    c["valid_data_10"] = tt(1, 1001, 100, 1698765435, [(1 + i % 3, 20.0 + i * 0.5) for i in range(10)])
    c["valid_data_37_max"] = tt(1, 65535, 0xFFFFFFFF, 0xFFFFFFFF, [(1 + i % 3, -1.0 * i) for i in range(37)])
    assert len(c["valid_data_37_max"]) == 198
    c["valid_heartbeat"] = tt(2, 7, 0xFFFFFFFF, 0, [])

    c["bad_too_short_5"] = TT_GOLDEN[:5]
    c["bad_too_short_data_no_count"] = TT_GOLDEN[:12]
    c["bad_too_long_201"] = bytes([1]) * 201
    c["bad_version_0"] = tt(1, 1001, 3, 1698765435, [(1, 21.5), (2, 40.25)], version=0)
    c["bad_type_0"] = tt(0, 1001, 3, 1698765435, [])
    c["bad_length_mismatch_count_3"] = tt(1, 1001, 3, 1698765435, [(1, 21.5), (2, 40.25)], count=3)
    c["bad_length_mismatch_heartbeat_13"] = tt(2, 7, 1, 0, []) + b"\x00"
    c["bad_count_0"] = tt(1, 1001, 3, 1698765435, [])
    c["bad_device_zero"] = tt(1, 0, 3, 1698765435, [(1, 21.5), (2, 40.25)])
    c["bad_sensor_type_4"] = tt(1, 1001, 3, 1698765435, [(1, 21.5), (4, 40.25)])
    return c


# ---------------------------------------------------------------- secure frame (the secure README)
# client u32, seq u64, timestamp u64 (Unix ns), payload length u16, UTF-8 KEY=VALUE;...
MAX_FRAME = 1200


def sec(payload, client=7, seq=42, ts=1765477200758614000, length=None):
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    length = len(payload) if length is None else length
    return struct.pack("!IQQH", client, seq, ts, length) + payload


SEC_GOLDEN = sec("CPU=72.3;MEM=41.2;TEMP=67.5")
assert SEC_GOLDEN[12:20] == bytes.fromhex("18803c290244a7f0")


def max_payload():
    """64 pairs (the most allowed) filling the frame to exactly 1200 bytes."""
    pairs, room = 64, MAX_FRAME - 22 - 63  # 63 ';' separators
    key_total = room - pairs * len("=1")
    base, extra = divmod(key_total, pairs)
    keys = []
    for i in range(pairs):
        n = base + (1 if i < extra else 0)
        stem = "K%02d" % i
        keys.append(stem + "_" * (n - len(stem)))
    assert all(1 <= len(k) <= 32 for k in keys)
    return ";".join(k + "=1" for k in keys)


def secure():
    c = {}
    c["valid_golden"] = SEC_GOLDEN
    c["valid_empty_heartbeat"] = sec("", client=0, seq=0, ts=0)
    c["valid_trailing_semicolon"] = sec("A=1;", client=0xFFFFFFFF, seq=2**64 - 1, ts=2**64 - 1)
    c["valid_numbers"] = sec("T=-1.5e3;V=+2;k.x-y_z=0.000001;E=1E-300;I=10")
    c["valid_max_1200"] = sec(max_payload())
    assert len(c["valid_max_1200"]) == MAX_FRAME

    c["bad_too_short_21"] = SEC_GOLDEN[:21]
    c["bad_too_long_1201"] = sec("A=1", length=MAX_FRAME + 1 - 22) + bytes(MAX_FRAME + 1 - 25)
    assert len(c["bad_too_long_1201"]) == MAX_FRAME + 1
    c["bad_length_mismatch_30"] = SEC_GOLDEN[:30]
    c["bad_utf8"] = sec(b"\xffPU=72.3")
    c["bad_pair_missing_eq"] = sec("CPU")
    c["bad_pair_empty_item"] = sec("A=1;;B=2")
    c["bad_pair_nan"] = sec("A=NaN")
    c["bad_pair_not_finite"] = sec("A=1e999")
    c["bad_pair_key_33"] = sec("K" * 33 + "=1")
    c["bad_pair_65_pairs"] = sec(";".join("K%d=1" % i for i in range(65)))
    return c


# ---------------------------------------------------------------- authentication trailer
# The `auth` target: one byte picking dialect and policy (bit 0: tinytelemetry; bit 1: no
# key; bit 2: require a key), then a datagram with its trailer. The standard library has no
# BLAKE3, so the tagged seeds are the golden vectors of proto/src/auth.rs (the target uses
# their keys: 32 x 07 for iotstream, 32 x 01 for tinytelemetry); the fuzzer mutates them.


def auth():
    iot_tagged = bytes.fromhex("0101002a00070ea41c760178" "41ac0000" "01020304" "3fbb48747f9a76e7")
    tt_tagged = bytes.fromhex("0102000500000009693aa050" "00000001" "043e97fbf592d500")
    c = {
        "valid_iotstream_tagged": b"\x00" + iot_tagged,
        "valid_tinytelemetry_tagged": b"\x01" + tt_tagged,
        "valid_iotstream_no_key": b"\x02" + iot_tagged[:16],
        "bad_unknown_key": b"\x06" + iot_tagged[:16],
        "bad_truncated": b"\x00" + iot_tagged[:-4],
        "bad_tag": b"\x00" + iot_tagged[:-1] + bytes([iot_tagged[-1] ^ 1]),
        "bad_overlong": b"\x01" + tt_tagged + b"\x00",
    }
    return c


def main():
    # auth's seeds are not read by proto/tests/corpus.rs (it checks the decoders' corpora).
    for target, cases in (("iotstream", iotstream()), ("tinytelemetry", tinytelemetry()), ("secure", secure()),
                          ("auth", auth())):
        d = os.path.join(OUT, target)
        # Only the seeds this script owns are replaced; fuzzer finds kept elsewhere survive.
        os.makedirs(d, exist_ok=True)
        for name in os.listdir(d):
            if name.startswith("valid") or name.startswith("bad_"):
                os.remove(os.path.join(d, name))
        for name, data in sorted(cases.items()):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        print("%-14s %2d files" % (target, len(cases)))


if __name__ == "__main__":
    main()
