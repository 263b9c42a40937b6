//! IoTStream v1 decoder: no input panics; whatever decodes re-emits canonically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemesh_proto::wire::iotstream::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    // The checked view's promise: after `new_checked` is Ok, no accessor panics
    // (`reading(i)` for i < batch).
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (
            p.version(),
            p.msg_type(),
            p.device(),
            p.seq(),
            p.timestamp(),
            p.checksum(),
        );
        let _ = p.computed_checksum();
        for i in 0..usize::from(p.batch()) {
            let _ = p.reading(i);
        }
    }

    let Ok(repr) = Repr::decode(data) else { return };
    let bytes = repr.to_bytes();
    // Compare bytes, never Reprs: a NaN reading makes `Repr != Repr`.
    let again = Repr::decode(&bytes).expect("re-emitted bytes must decode");
    assert_eq!(again.to_bytes(), bytes, "re-emit is not stable");
    // Every field of the datagram is carried by the Repr, so emit is the inverse of decode.
    assert_eq!(bytes, data, "decode accepted a non-canonical datagram");
    // What decode accepts, the constructor accepts, and it builds the same datagram.
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
