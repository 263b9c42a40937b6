//! Cost per datagram of the authentication trailer (`proto::auth`), against plain decode,
//! one packet per iteration (`Throughput::Elements(1)`), all in the same run.
//!
//! ```sh
//! cargo bench -p telemesh-benches --bench auth -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! For each of IoTStream DATA with 5 readings (the Mini-RFC's example, 32 + 12 bytes) and
//! TinyTelemetry DATA with 10 readings (63 + 12 bytes):
//! - `decode`: `Repr::decode` of the plain datagram (the baseline, as in `decode.rs`);
//! - `tag`: `auth::open` alone — the keyed BLAKE3 over the domain, datagram and counter,
//!   and the comparison of the truncated tag;
//! - `verify_decode`: what the node adds and does for a keyed device — `auth::open`, the
//!   replay window's `admit` (a new, higher counter each iteration, as a live device sends)
//!   and `Repr::decode` of the stripped datagram.
//!
//! `std::hint::black_box` and routines returning `()`, for the reasons given in `decode.rs`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemesh_proto::auth::{self, Key, Window};
use telemesh_proto::wire::{iotstream, tinytelemetry, Dialect};

fn iotstream_data_5() -> Vec<u8> {
    iotstream::Repr::new(iotstream::MsgType::Data, 1001, 1, 245_642_102, &[29.37, 23.53, 22.61, 22.04, 22.99])
        .expect("valid IoTStream DATA")
        .to_bytes()
}

fn tinytelemetry_data_10() -> Vec<u8> {
    let readings: Vec<(tinytelemetry::SensorType, f32)> =
        (0..10u8).map(|i| (tinytelemetry::SensorType::ALL[usize::from(i % 3)], 20.0 + f32::from(i) * 0.5)).collect();
    tinytelemetry::Repr::new(tinytelemetry::MsgType::Data, 1001, 100, 1_698_765_435, &readings)
        .expect("valid TinyTelemetry DATA")
        .to_bytes()
}

fn bench_dialect(c: &mut Criterion, dialect: Dialect, name: &str, plain: Vec<u8>, decode: fn(&[u8]) -> bool) {
    let key = Key::new([0x5a; 32]);
    let mut sealed = plain.clone();
    auth::seal(dialect, &key, 1, &mut sealed).expect("fits");
    // The benchmark measures the accept path: make sure each packet is accepted.
    assert!(decode(&plain));
    let opened = auth::open(dialect, &key, &sealed).expect("verifies");
    assert!(decode(opened.datagram));

    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("{name}/decode"), |b| {
        b.iter(|| {
            black_box(decode(black_box(&plain[..])));
        })
    });
    group.bench_function(format!("{name}/tag"), |b| {
        b.iter(|| {
            let _ = black_box(auth::open(dialect, &key, black_box(&sealed[..])));
        })
    });
    group.bench_function(format!("{name}/verify_decode"), |b| {
        let mut window = Window::default();
        let mut counter = 0u32;
        b.iter(|| {
            counter = counter.wrapping_add(1);
            let ok = auth::open(dialect, &key, black_box(&sealed[..]))
                .and_then(|o| window.admit(counter).map(|()| o))
                .map(|o| decode(o.datagram));
            black_box(ok.is_ok());
        })
    });
    group.finish();
}

fn auth_cost(c: &mut Criterion) {
    bench_dialect(c, Dialect::Iotstream, "iotstream/data_5", iotstream_data_5(), |b| {
        black_box(iotstream::Repr::decode(b)).is_ok()
    });
    bench_dialect(c, Dialect::Tinytelemetry, "tinytelemetry/data_10", tinytelemetry_data_10(), |b| {
        black_box(tinytelemetry::Repr::decode(b)).is_ok()
    });
}

criterion_group!(benches, auth_cost);
criterion_main!(benches);
