//! `telemesh-relay`: a userspace UDP impairment proxy (loss, burst loss, delay, jitter,
//! duplication, reordering, corruption, rate limit). The logic lives in
//! `telemesh_tools::relay` and `telemesh_proto::impair`; this is only the command line.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use telemesh_proto::impair;
use telemesh_tools::relay;

const EXAMPLES: &str = "\
Examples:
  # 10% loss and 50 ms ± 10 ms each way in front of a node listening on 5005
  telemesh-relay --listen 127.0.0.1:6005 --to 127.0.0.1:5005 --loss 0.1 --delay 50 --jitter 10
  telemesh-sensor --to 127.0.0.1:6005

  # Bursty loss (Gilbert: 1% chance to enter a loss burst, 20% to leave it), reproducible
  telemesh-relay --listen 127.0.0.1:6005 --to 127.0.0.1:5005 --burst 0.01,0.2 --seed 7

Exit status: 0 when stopped by Ctrl-C, 2 for bad options, 1 for other errors.";

/// Forwards UDP datagrams between clients and one target, impairing both directions.
///
/// Each client source address gets its own upstream socket, so replies go back to the
/// right client (QUIC between nodes works through it). The impairment flags apply to
/// both directions (client → target and back); each --reverse-* flag overrides its
/// counterpart for replies (target → client). The same seed and traffic give the same
/// losses: see docs/relay.md.
#[derive(Debug, Parser)]
#[command(name = "telemesh-relay", version, after_help = EXAMPLES, verbatim_doc_comment)]
struct Cli {
    /// Address to listen on for clients.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:6005")]
    listen: SocketAddr,

    /// Address to forward to.
    #[arg(long, value_name = "ADDR")]
    to: SocketAddr,

    /// Random loss probability, 0..1.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    loss: f64,

    /// Gilbert burst loss: P_GOOD_TO_BAD,P_BAD_TO_GOOD (every packet in the bad state is lost).
    #[arg(long, value_name = "P_GB,P_BG", value_parser = parse_burst)]
    burst: Option<impair::Burst>,

    /// One-way delay in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    delay: f64,

    /// Uniform jitter in milliseconds: each delay is delay ± jitter.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    jitter: f64,

    /// Duplication probability, 0..1.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    duplicate: f64,

    /// Probability that a datagram is held back 10 ms (later ones overtake it), 0..1.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    reorder: f64,

    /// Probability that one random bit of a datagram is flipped, 0..1.
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    corrupt: f64,

    /// Rate limit in bytes per second (64 KiB bucket; datagrams beyond it are dropped).
    #[arg(long, value_name = "BYTES_PER_S")]
    rate: Option<u64>,

    /// Replies (target → client): random loss instead of --loss.
    #[arg(long, value_name = "P", help_heading = "Replies (target → client)")]
    reverse_loss: Option<f64>,

    /// Replies: burst loss instead of --burst ("none" for none).
    #[arg(long, value_name = "P_GB,P_BG", value_parser = parse_reverse_burst, help_heading = "Replies (target → client)")]
    reverse_burst: Option<Option<impair::Burst>>,

    /// Replies: delay instead of --delay.
    #[arg(long, value_name = "MS", help_heading = "Replies (target → client)")]
    reverse_delay: Option<f64>,

    /// Replies: jitter instead of --jitter.
    #[arg(long, value_name = "MS", help_heading = "Replies (target → client)")]
    reverse_jitter: Option<f64>,

    /// Replies: duplication instead of --duplicate.
    #[arg(long, value_name = "P", help_heading = "Replies (target → client)")]
    reverse_duplicate: Option<f64>,

    /// Replies: reordering instead of --reorder.
    #[arg(long, value_name = "P", help_heading = "Replies (target → client)")]
    reverse_reorder: Option<f64>,

    /// Replies: corruption instead of --corrupt.
    #[arg(long, value_name = "P", help_heading = "Replies (target → client)")]
    reverse_corrupt: Option<f64>,

    /// Replies: rate limit instead of --rate (0 for none).
    #[arg(long, value_name = "BYTES_PER_S", help_heading = "Replies (target → client)")]
    reverse_rate: Option<u64>,

    /// Seed of the impairment generators [default: random, printed at start].
    #[arg(long, value_name = "N")]
    seed: Option<u64>,

    /// Print counters to stderr every S seconds (0: only at exit).
    #[arg(long, value_name = "S", default_value_t = 10)]
    stats_every: u64,
}

fn parse_burst(s: &str) -> Result<impair::Burst, String> {
    let (gb, bg) = s.split_once(',').ok_or("expected P_GOOD_TO_BAD,P_BAD_TO_GOOD")?;
    let p = |v: &str| v.trim().parse::<f64>().map_err(|e| format!("{v:?}: {e}"));
    Ok(impair::Burst::gilbert(p(gb)?, p(bg)?))
}

fn parse_reverse_burst(s: &str) -> Result<Option<impair::Burst>, String> {
    if s == "none" {
        return Ok(None);
    }
    parse_burst(s).map(Some)
}

fn ms_to_ns(ms: f64) -> Result<u64, String> {
    if !(0.0..=3_600_000.0).contains(&ms) {
        return Err(format!("{ms} ms is not between 0 and 3600000"));
    }
    Ok((ms * 1e6).round() as u64)
}

impl Cli {
    fn into_config(self) -> Result<(relay::Config, u64), String> {
        let forward = impair::Config {
            loss: self.loss,
            burst: self.burst,
            delay_ns: ms_to_ns(self.delay).map_err(|e| format!("--delay: {e}"))?,
            jitter_ns: ms_to_ns(self.jitter).map_err(|e| format!("--jitter: {e}"))?,
            duplicate: self.duplicate,
            reorder: self.reorder,
            corrupt: self.corrupt,
            rate_bps: self.rate,
            ..impair::Config::default()
        };
        let reverse = impair::Config {
            loss: self.reverse_loss.unwrap_or(forward.loss),
            burst: self.reverse_burst.unwrap_or(forward.burst),
            delay_ns: match self.reverse_delay {
                Some(ms) => ms_to_ns(ms).map_err(|e| format!("--reverse-delay: {e}"))?,
                None => forward.delay_ns,
            },
            jitter_ns: match self.reverse_jitter {
                Some(ms) => ms_to_ns(ms).map_err(|e| format!("--reverse-jitter: {e}"))?,
                None => forward.jitter_ns,
            },
            duplicate: self.reverse_duplicate.unwrap_or(forward.duplicate),
            reorder: self.reverse_reorder.unwrap_or(forward.reorder),
            corrupt: self.reverse_corrupt.unwrap_or(forward.corrupt),
            rate_bps: match self.reverse_rate {
                Some(0) => None,
                Some(r) => Some(r),
                None => forward.rate_bps,
            },
            ..forward.clone()
        };
        let seed = self.seed.unwrap_or_else(rand::random);
        let config =
            relay::Config { forward, reverse, seed, ..relay::Config::new(self.listen, self.to) };
        Ok((config, self.stats_every))
    }
}

fn main() -> ExitCode {
    let cli: Cli = match telemesh_tools::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let (config, stats_every) = match cli.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = config.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }

    let stop = match telemesh_tools::stop_flag() {
        Ok(s) => s,
        Err(code) => return code,
    };

    let (target, seed) = (config.target, config.seed);
    let (forward_netem, reverse_netem) = (config.forward.netem(), config.reverse.netem());
    let relay = match relay::spawn(config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    eprintln!(
        "telemesh-relay {}: {} -> {target}, seed {seed}; forward ≈ `{forward_netem}`; reverse ≈ `{reverse_netem}`",
        env!("CARGO_PKG_VERSION"),
        relay.local_addr()
    );

    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        if stats_every > 0 && last.elapsed() >= Duration::from_secs(stats_every) {
            last = Instant::now();
            eprintln!("telemesh-relay: {}", relay.stats());
        }
    }
    eprintln!("telemesh-relay: stopped; {}", relay.stop());
    ExitCode::SUCCESS
}
