//! The `auth` fuzz target's seeds (`proto/fuzz/corpus/auth/`, written by
//! `proto/fuzz/make_corpus.py` from the golden vectors) mean what their names say, under
//! the same reading as the target: the first byte picks the dialect (bit 0: TinyTelemetry),
//! whether the device has its key (bit 1 set: no key) and the policy (bit 2: required).

use std::path::PathBuf;

use telemesh_proto::auth::{self, Key, Keys, Refusal, Verdict, Verifier};
use telemesh_proto::wire::Dialect;

fn verdict(seed: &[u8]) -> Result<(bool, Vec<u8>), Refusal> {
    let (&pick, bytes) = seed.split_first().expect("a pick byte");
    let (dialect, key) = match pick & 1 {
        0 => (Dialect::Iotstream, Key::new([0x07; 32])),
        _ => (Dialect::Tinytelemetry, Key::new([0x01; 32])),
    };
    let mut keys = Keys::default();
    if let Some(device) = auth::device(bytes).filter(|_| pick & 2 == 0) {
        keys.insert(dialect, device, key);
    }
    match Verifier::new(dialect, &keys, pick & 4 != 0).verify(bytes)? {
        Verdict::Verified { datagram, .. } => Ok((true, datagram.to_vec())),
        Verdict::Unauthenticated { datagram } => Ok((false, datagram.to_vec())),
    }
}

#[test]
fn auth_seeds_mean_what_their_names_say() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz").join("corpus").join("auth");
    let read = |name: &str| std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    let (tagged, iot) = verdict(&read("valid_iotstream_tagged")).expect("verifies");
    assert!(tagged);
    assert_eq!(iot.len(), 16);
    assert_eq!(verdict(&read("valid_tinytelemetry_tagged")).map(|v| (v.0, v.1.len())), Ok((true, 12)));
    assert_eq!(verdict(&read("valid_iotstream_no_key")), Ok((false, iot.clone())));
    assert_eq!(verdict(&read("bad_unknown_key")), Err(Refusal::UnknownKey { device: 42 }));
    assert_eq!(verdict(&read("bad_truncated")).map_err(|r| r.reason()), Err("auth_truncated"));
    assert_eq!(verdict(&read("bad_tag")), Err(Refusal::BadTag));
    assert_eq!(verdict(&read("bad_overlong")).map_err(|r| r.reason()), Err("auth_overlong"));
    let seeds = std::fs::read_dir(&dir)
        .expect("corpus dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with("valid") || n.starts_with("bad_"))
        .count();
    assert_eq!(seeds, 7, "a seed without a check here");
}
