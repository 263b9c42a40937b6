//! The authentication trailer (`proto::auth`): no input panics the verifier or the key
//! file parser; whatever verifies is exactly a seal of what it yields.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemesh_proto::auth::{self, Key, Keys, Verdict, Verifier};
use telemesh_proto::wire::Dialect;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the dialect and the policy; the rest is the datagram.
    let Some((&pick, bytes)) = data.split_first() else { return };
    // The keys of the golden vectors in `proto/src/auth.rs`, so the seeds verify.
    let (dialect, key) = match pick & 1 {
        0 => (Dialect::Iotstream, Key::new([0x07; 32])),
        _ => (Dialect::Tinytelemetry, Key::new([0x01; 32])),
    };
    let mut keys = Keys::default();
    // The datagram's own device has a key when bit 1 is clear, so both paths are explored.
    if let Some(device) = auth::device(bytes).filter(|_| pick & 2 == 0) {
        keys.insert(dialect, device, key.clone());
    }
    let mut verifier = Verifier::new(dialect, &keys, pick & 4 != 0);
    match verifier.verify(bytes) {
        Ok(Verdict::Verified { counter, datagram }) => {
            let mut again = datagram.to_vec();
            auth::seal(dialect, &key, counter, &mut again).expect("a verified datagram fits");
            assert_eq!(again, bytes, "open is not the inverse of seal");
            assert!(verifier.verify(bytes).is_err(), "the same counter was accepted twice");
        }
        Ok(Verdict::Unauthenticated { datagram }) => assert_eq!(datagram, bytes),
        Err(refusal) => assert!(auth::Refusal::REASONS.contains(&refusal.reason())),
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = Keys::parse(text);
    }
});
