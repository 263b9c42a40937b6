//! Decode cost per datagram for each wire dialect (`proto::wire`), one packet per
//! iteration (`Throughput::Elements(1)`), so criterion reports ns/packet and packets/s.
//!
//! ```sh
//! cargo bench -p telemesh-benches --bench decode -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! The packets:
//! - iotstream: DATA with 5 readings, the IoTStream v1 Mini-RFC's worked example (checksum by its rule);
//! - tinytelemetry: DATA with 10 readings (mixed sensor types);
//! - secure: the secure telemetry collection README's frame, payload `CPU=72.3;MEM=41.2;TEMP=67.5`.
//!
//! Each iteration decodes the bytes into a `Repr` and passes it to `black_box`, so the
//! measurement includes validation (checksum, counts, payload syntax and float parsing for
//! the secure frame) but not re-emitting.
//!
//! `std::hint::black_box`, not `criterion::black_box`: without criterion's `real_blackbox`
//! feature the latter is a `read_volatile` copy of its argument, which for a 200–300-byte
//! `Repr` cost several times the decode itself (≈130 ns vs ≈20 ns for IoTStream). For the
//! same reason the routines return `()`: criterion passes the routine's result through its
//! own `black_box`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemesh_proto::wire::{iotstream, secure, tinytelemetry};

/// The Mini-RFC's worked example: device 1001, seq 1, timestamp 245642102, five readings.
fn iotstream_data_5() -> Vec<u8> {
    iotstream::Repr::new(
        iotstream::MsgType::Data,
        1001,
        1,
        245_642_102,
        &[29.37, 23.53, 22.61, 22.04, 22.99],
    )
    .expect("valid IoTStream DATA")
    .to_bytes()
}

fn tinytelemetry_data_10() -> Vec<u8> {
    let readings: Vec<(tinytelemetry::SensorType, f32)> = (0..10u8)
        .map(|i| {
            (
                tinytelemetry::SensorType::ALL[usize::from(i % 3)],
                20.0 + f32::from(i) * 0.5,
            )
        })
        .collect();
    tinytelemetry::Repr::new(
        tinytelemetry::MsgType::Data,
        1001,
        100,
        1_698_765_435,
        &readings,
    )
    .expect("valid TinyTelemetry DATA")
    .to_bytes()
}

/// The secure telemetry collection README's example frame: client 7, seq 42, timestamp in Unix ns.
fn secure_frame() -> Vec<u8> {
    secure::Repr::new(
        7,
        42,
        1_765_477_200_758_614_000,
        "CPU=72.3;MEM=41.2;TEMP=67.5",
    )
    .expect("valid secure frame")
    .to_bytes()
}

fn decode(c: &mut Criterion) {
    let iot = iotstream_data_5();
    let tt = tinytelemetry_data_10();
    let sec = secure_frame();
    // The benchmark measures the accept path: make sure each packet is accepted.
    assert_eq!(iot.len(), 32);
    assert!(iotstream::Repr::decode(&iot).is_ok());
    assert_eq!(tt.len(), 63);
    assert!(tinytelemetry::Repr::decode(&tt).is_ok());
    assert_eq!(sec.len(), 49);
    assert!(secure::Repr::decode(&sec).is_ok());

    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(1));
    group.bench_function("iotstream/data_5", |b| {
        b.iter(|| {
            let _ = black_box(iotstream::Repr::decode(black_box(&iot[..])));
        })
    });
    group.bench_function("tinytelemetry/data_10", |b| {
        b.iter(|| {
            let _ = black_box(tinytelemetry::Repr::decode(black_box(&tt[..])));
        })
    });
    group.bench_function("secure/cpu_mem_temp", |b| {
        b.iter(|| {
            let _ = black_box(secure::Repr::decode(black_box(&sec[..])));
        })
    });
    group.finish();
}

criterion_group!(benches, decode);
criterion_main!(benches);
