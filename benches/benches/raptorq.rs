//! `proto::repair` (RaptorQ, raptorq 2) throughput on a window's slot part.
//!
//! ```sh
//! cargo bench -p telemesh-benches --bench raptorq -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! Slot parts of 4 KiB, 64 KiB and 1 MiB; slots (= symbols) of 64 bytes (a telemetry
//! record is 30–60 bytes) and of 1024 bytes; 1%, 10% and 30% of the slots erased (at
//! least one), seeded. The requester gets `m + 2` repair symbols (`m` = erased slots).
//!
//! - `encode/...`: what a holder does on a cache miss for the window: build the encoder
//!   from the slot part with a *cached* encoding plan, then produce the `m + 2` symbols.
//!   `Throughput::Bytes` = slot part.
//! - `encode_uncached_plan/...`: the same, generating the plan too (what raptorq's
//!   `Encoder::new`/`with_defaults` do on every call). Only at 10% erasures.
//! - `repair/...`: a cache hit: the `m + 2` symbols from a cached encoder.
//!   `Throughput::Bytes` = bytes of the symbols produced, `(m + 2) · T`.
//! - `decode/...`: the requester: a decoder from the present slots (copied in), `m + 2`
//!   symbols pushed, the slot part rebuilt. `Throughput::Bytes` = slot part.
//!
//! Routines return `()` and use `std::hint::black_box` (see `decode.rs` for why not
//! `criterion::black_box`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::repair::{Decoder, Encoder, EsiRange, Layout, Plan, Symbol};

const SIZES: [(usize, &str); 3] = [(4 << 10, "4KiB"), (64 << 10, "64KiB"), (1 << 20, "1MiB")];
const SLOT_SIZES: [usize; 2] = [64, 1024];
const ERASURES: [(f64, &str); 3] = [(0.01, "1pct"), (0.10, "10pct"), (0.30, "30pct")];

/// One benchmark case: a slot part, its erasures and the symbols that repair them.
struct Case {
    name: String,
    layout: Layout,
    part: Vec<u8>,
    plan: Plan,
    encoder: Encoder,
    erased: Vec<bool>,
    range: EsiRange,
    symbols: Vec<Symbol>,
}

impl Case {
    fn new(bytes: usize, size_name: &str, slot_size: usize, p: f64, p_name: &str) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(bytes as u64 ^ slot_size as u64 ^ p.to_bits());
        let slots = bytes / slot_size;
        let layout = Layout::new(slot_size, slots).expect("valid layout");
        let part: Vec<u8> = (0..bytes).map(|_| rng.gen()).collect();
        let m = ((slots as f64 * p).round() as usize).max(1);
        let mut erased = vec![false; slots];
        for i in index::sample(&mut rng, slots, m) {
            erased[i] = true;
        }
        let plan = Plan::new(&layout);
        let encoder = Encoder::new(layout, &part, &plan).expect("valid slot part");
        let range = EsiRange {
            start: slots as u32,
            count: m as u32 + 2,
        };
        let symbols = encoder.repair(range).expect("repair range");
        let case = Self {
            name: format!("T{slot_size}/{size_name}/{p_name}"),
            layout,
            part,
            plan,
            encoder,
            erased,
            range,
            symbols,
        };
        // The benchmark measures successful decodes: check this one is.
        assert_eq!(
            case.decode().as_deref(),
            Some(&case.part[..]),
            "{}",
            case.name
        );
        case
    }

    fn decode(&self) -> Option<Vec<u8>> {
        self.decode_with(self.symbols.clone())
    }

    fn decode_with(&self, symbols: Vec<Symbol>) -> Option<Vec<u8>> {
        let t = self.layout.slot_size();
        let present = (0..self.layout.slots())
            .filter(|&i| !self.erased[i as usize])
            .map(|i| (i, &self.part[i as usize * t..(i as usize + 1) * t]));
        let mut decoder = Decoder::new(self.layout, present).expect("valid present slots");
        for s in symbols {
            decoder.push(s).expect("well-formed symbol");
        }
        decoder.try_finish()
    }
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for slot_size in SLOT_SIZES {
        for (bytes, size_name) in SIZES {
            for (p, p_name) in ERASURES {
                cases.push(Case::new(bytes, size_name, slot_size, p, p_name));
            }
        }
    }
    cases
}

fn raptorq(c: &mut Criterion) {
    let cases = cases();

    let mut group = c.benchmark_group("encode");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.part.len() as u64));
        group.sample_size(if case.part.len() >= 1 << 20 { 20 } else { 50 });
        group.bench_function(&case.name, |b| {
            b.iter(|| {
                let encoder = Encoder::new(case.layout, black_box(&case.part), &case.plan)
                    .expect("valid slot part");
                black_box(encoder.repair(case.range).expect("repair range"));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("encode_uncached_plan");
    for case in cases.iter().filter(|c| c.name.ends_with("/10pct")) {
        group.throughput(Throughput::Bytes(case.part.len() as u64));
        group.sample_size(if case.part.len() >= 1 << 20 { 10 } else { 30 });
        group.bench_function(&case.name, |b| {
            b.iter(|| {
                let plan = Plan::new(&case.layout);
                let encoder = Encoder::new(case.layout, black_box(&case.part), &plan)
                    .expect("valid slot part");
                black_box(encoder.repair(case.range).expect("repair range"));
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("repair");
    for case in &cases {
        let symbol_bytes = u64::from(case.range.count) * case.layout.slot_size() as u64;
        group.throughput(Throughput::Bytes(symbol_bytes));
        group.sample_size(50);
        group.bench_function(&case.name, |b| {
            b.iter(|| {
                black_box(
                    case.encoder
                        .repair(black_box(case.range))
                        .expect("repair range"),
                );
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("decode");
    for case in &cases {
        group.throughput(Throughput::Bytes(case.part.len() as u64));
        group.sample_size(if case.part.len() >= 1 << 20 { 10 } else { 30 });
        group.bench_function(&case.name, |b| {
            b.iter_batched(
                || case.symbols.clone(),
                |symbols| {
                    black_box(case.decode_with(symbols));
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1));
    targets = raptorq
}
criterion_main!(benches);
