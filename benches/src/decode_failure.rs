//! `telemesh-bench decode-failure`: how often `proto::repair` fails to rebuild a window's
//! slot part from exactly `m`, `m + 1` and `m + 2` repair symbols (`m` = erased slots),
//! against RFC 6330's targets (failure ≤ 1e-2, 1e-4, 1e-6 at overhead 0, 1, 2).
//!
//! Each trial: a random erasure pattern (each slot erased with probability `p`, at least
//! one), repair symbols with distinct ESIs drawn uniformly from the whole repair space
//! `K..2^24` (symbols from many holders' bands look like that to the decoder), pushed
//! one by one; `try_finish` after the `m`-th, `m+1`-th and `m+2`-th. Decodability depends
//! only on the set of ESIs, and adding a symbol never makes a solvable system unsolvable,
//! so one trial measures all three points: a trial that failed at `m + 1` also failed at
//! `m`. Every decoded slot part is compared with the original (a wrong one is counted
//! separately and must be 0).
//!
//! The upper bound column is the one-sided 95% Clopper–Pearson bound: with zero failures
//! in `n` trials it is ≈ 3/n, so 10,000 trials can show a rate below 3e-4 but not 1e-6.
//! The symbol size does not change which systems are solvable, so it is small (8 bytes).

use std::time::Instant;

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use telemesh_proto::repair::{Decoder, Encoder, EsiRange, Layout, Plan, ESI_LIMIT};

/// Options of the decode-failure benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct Opts {
    /// Trials per erasure rate (each gives the m, m+1 and m+2 points).
    #[arg(long, default_value_t = 10_000)]
    pub trials: u32,
    /// Slots per window (source symbols K), 1..=56403.
    #[arg(long, default_value_t = 1024)]
    pub slots: u32,
    /// Probabilities that a slot is erased; 1.0 is a node that holds nothing.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.1,1.0")]
    pub erasure: Vec<f64>,
    /// Seed of the ChaCha8 generator.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Slot (symbol) size in bytes, a multiple of 8.
    #[arg(long, default_value_t = 8)]
    pub slot_size: usize,
}

/// RFC 6330 §1's decode failure targets for overhead 0, 1, 2.
const RFC_BOUND: [f64; 3] = [1e-2, 1e-4, 1e-6];

/// Runs the benchmark and prints its table.
pub fn run(opts: &Opts) -> anyhow::Result<()> {
    anyhow::ensure!(opts.trials > 0, "--trials must be positive");
    let layout = Layout::new(opts.slot_size, opts.slots as usize)?;
    let k = layout.slots();
    let t = layout.slot_size();
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let part: Vec<u8> = (0..layout.slot_part_len()).map(|_| rng.gen()).collect();
    let encoder = Encoder::new(layout, &part, &Plan::new(&layout))?;
    println!(
        "Decode failure of `proto::repair` (raptorq 2), K = {k} slots of {t} bytes, {} trials per erasure rate, seed {}.",
        opts.trials, opts.seed
    );
    println!();
    println!("| erased slots (p) | mean m | symbols received | failures | failure rate | 95% upper bound | RFC 6330 target |");
    println!("|---|---:|---|---:|---:|---:|---:|");
    for &p in &opts.erasure {
        anyhow::ensure!(
            (0.0..=1.0).contains(&p),
            "--erasure {p} is not a probability"
        );
        let started = Instant::now();
        let mut failures = [0u32; 3];
        let mut wrong = 0u32;
        let mut total_m = 0u64;
        for trial in 0..opts.trials {
            let mut erased: Vec<bool> = (0..k).map(|_| rng.gen_bool(p)).collect();
            if !erased.contains(&true) {
                erased[rng.gen_range(0..k as usize)] = true;
            }
            let m = erased.iter().filter(|&&e| e).count() as u32;
            total_m += u64::from(m);
            let present = (0..k)
                .filter(|&i| !erased[i as usize])
                .map(|i| (i, &part[i as usize * t..(i as usize + 1) * t]));
            let mut decoder = Decoder::new(layout, present)?;
            let repair_space = (ESI_LIMIT - k) as usize;
            let esis = index::sample(&mut rng, repair_space, m as usize + 2);
            let mut decoded = None;
            for (n, offset) in esis.iter().enumerate() {
                let esi = k + offset as u32;
                for symbol in encoder.repair(EsiRange {
                    start: esi,
                    count: 1,
                })? {
                    decoder.push(symbol)?;
                }
                let received = n as u32 + 1;
                if received >= m {
                    if let Some(out) = decoder.try_finish() {
                        decoded = Some((received - m, out));
                        break;
                    }
                }
            }
            let overhead = match decoded {
                Some((overhead, out)) => {
                    wrong += u32::from(out != part);
                    overhead as usize
                }
                None => 3,
            };
            for f in failures.iter_mut().take(overhead) {
                *f += 1;
            }
            if (trial + 1) % 2000 == 0 {
                eprintln!(
                    "  p = {p}: {} trials, failures {failures:?}, {:.1} s",
                    trial + 1,
                    started.elapsed().as_secs_f64()
                );
            }
        }
        anyhow::ensure!(wrong == 0, "{wrong} decodes returned a wrong slot part");
        let mean_m = total_m as f64 / f64::from(opts.trials);
        for (extra, (&fails, bound)) in failures.iter().zip(RFC_BOUND).enumerate() {
            let rate = f64::from(fails) / f64::from(opts.trials);
            let upper = clopper_pearson_upper(fails, opts.trials, 0.05);
            let rate = if fails == 0 {
                "0".to_owned()
            } else {
                format!("{rate:.1e}")
            };
            let received = if extra == 0 {
                "m".to_owned()
            } else {
                format!("m + {extra}")
            };
            println!(
                "| {p} | {mean_m:.1} | {received} | {fails} / {} | {rate} | {upper:.1e} | {bound:.0e} |",
                opts.trials
            );
        }
        eprintln!(
            "  p = {p}: done in {:.1} s",
            started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// One-sided upper confidence bound on a binomial rate: the `p` at which seeing `x` or
/// fewer in `n` trials has probability `alpha`.
fn clopper_pearson_upper(x: u32, n: u32, alpha: f64) -> f64 {
    if x >= n {
        return 1.0;
    }
    let (mut lo, mut hi) = (f64::from(x) / f64::from(n), 1.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if binomial_cdf(x, n, mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// `P(X ≤ x)` for `X ~ Binomial(n, p)`, summed in log space (no underflow at large n).
fn binomial_cdf(x: u32, n: u32, p: f64) -> f64 {
    let (n_f, lp, lq) = (f64::from(n), p.ln(), (-p).ln_1p());
    let mut log_pmf = n_f * lq; // i = 0
    let mut terms = vec![log_pmf];
    for i in 0..x {
        let i_f = f64::from(i);
        log_pmf += ((n_f - i_f) / (i_f + 1.0)).ln() + lp - lq;
        terms.push(log_pmf);
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max.exp() * terms.iter().map(|t| (t - max).exp()).sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_known_values() {
        // Zero failures: 1 - alpha^(1/n) ≈ 3/n.
        let u = clopper_pearson_upper(0, 10_000, 0.05);
        assert!((u - (1.0 - 0.05f64.powf(1e-4))).abs() < 1e-9, "{u}");
        // 10 of 1000: the exact one-sided 95% bound is 0.016903.
        let u = clopper_pearson_upper(10, 1000, 0.05);
        assert!((u - 0.016_903).abs() < 1e-5, "{u}");
    }
}
