//! TinyTelemetry v1 decoder: no input panics; whatever decodes re-emits canonically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemesh_proto::wire::tinytelemetry::{MsgType, Packet, Repr};

fuzz_target!(|data: &[u8]| {
    // The checked view's promise: after `new_checked` is Ok, no accessor panics.
    // `count()` and the readings exist only in a DATA datagram (a HEARTBEAT is the
    // 12-byte header alone), so they are read only there.
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.msg_type(),
            p.device(),
            p.seq(),
            p.timestamp(),
        );
        if p.msg_type() == MsgType::Data.code() {
            for i in 0..usize::from(p.count()) {
                let _ = (p.sensor_type(i), p.value(i));
            }
        }
    }

    let Ok(repr) = Repr::decode(data) else { return };
    let bytes = repr.to_bytes();
    // Compare bytes, never Reprs: a NaN reading makes `Repr != Repr`.
    let again = Repr::decode(&bytes).expect("re-emitted bytes must decode");
    assert_eq!(again.to_bytes(), bytes, "re-emit is not stable");
    assert_eq!(bytes, data, "decode accepted a non-canonical datagram");
    let built = Repr::new(
        repr.msg_type,
        repr.device,
        repr.seq,
        repr.timestamp,
        repr.readings(),
    )
    .expect("Repr::new rejects a decoded datagram");
    assert_eq!(built.to_bytes(), bytes, "Repr::new builds different bytes");
});
