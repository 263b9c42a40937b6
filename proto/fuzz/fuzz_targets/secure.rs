//! Secure-frame (the secure telemetry collection README's dialect) decoder: no input panics; whatever decodes re-emits canonically.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemesh_proto::wire::secure::{Packet, Repr};

fuzz_target!(|data: &[u8]| {
    let decoded = Repr::decode(data);

    // The checked view's promise: after `new_checked` is Ok, no accessor panics. And the
    // two entry points, `parse` over the view and `decode` over bytes, must agree.
    if let Ok(p) = Packet::new_checked(data) {
        let _ = (
            p.client(),
            p.seq(),
            p.timestamp(),
            p.payload_len(),
            p.payload(),
        );
        assert_eq!(Repr::parse(&p), decoded, "parse and decode disagree");
    }

    let Ok(repr) = decoded else { return };
    // `pairs()` skips items that do not parse; in an accepted payload there are none.
    let items = repr.payload().split(';').filter(|s| !s.is_empty()).count();
    assert_eq!(
        repr.pairs().count(),
        items,
        "pairs() dropped an item of an accepted payload"
    );

    let bytes = repr.to_bytes();
    let again = Repr::decode(&bytes).expect("re-emitted bytes must decode");
    assert_eq!(again.to_bytes(), bytes, "re-emit is not stable");
    assert_eq!(bytes, data, "decode accepted a non-canonical frame");
    let built = Repr::new(repr.client, repr.seq, repr.timestamp, repr.payload())
        .expect("Repr::new rejects a decoded frame");
    assert_eq!(built.to_bytes(), bytes, "Repr::new builds different bytes");
});
