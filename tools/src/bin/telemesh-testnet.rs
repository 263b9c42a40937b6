//! `telemesh-testnet`: a local multi-site mesh in one command (what `testnet/run.sh`
//! runs). The logic lives in `telemesh_tools::testnet`; this is only the command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use clap::Parser;
use telemesh_tools::{sensor, testnet};

const EXAMPLES: &str = "\
Examples:
  # Three sites, each hearing the sensors through its own 10% loss, for a minute
  testnet/run.sh

  # Five sites, bursty 20% loss, 2% loss between nodes too, and one node cut off for a while
  testnet/run.sh --nodes 5 --loss 20% --burst --link-loss 2% --partition --duration 120s

  # The sensors speak the secure dialect (DTLS with device certificates) to every site
  testnet/run.sh --dialect secure

  # An uninvited node tries to get in (and must be kept out)
  testnet/run.sh --intruder

  # Leave the mesh running afterwards and query it
  testnet/run.sh --keep

Exit status: 0 when every node converged on the same complete merged history (and the
uninvited node, with --intruder, was kept out); 1 when not (each problem is printed); 2
for bad options; 130 when interrupted.";

/// Starts a local multi-site telemesh mesh, feeds it lossy sensor traffic, and checks
/// that every node converged on the same merged history.
///
/// N nodes run on loopback with their own data directories and ports, in a closed mesh:
/// the first creates it (and holds its owner key), the others join with an invitation
/// from it (--join TOKEN). Simulated IoTStream (or, --dialect secure, DTLS) sensors send every
/// datagram to each site through that site's own impaired relay (as several radio
/// gateways hear one sensor). At the end it prints, per node, the records it received
/// directly and after repair, the repair bytes and the time to converge, and mesh-wide the
/// records sent, heard by at least one site, present everywhere and lost everywhere.
#[derive(Debug, Parser)]
#[command(name = "telemesh-testnet", version, after_help = EXAMPLES, verbatim_doc_comment)]
struct Cli {
    /// Nodes (sites), 1..=26.
    #[arg(long, value_name = "N", default_value_t = 3)]
    nodes: usize,

    /// Simulated devices (ids from 1001).
    #[arg(long, value_name = "D", default_value_t = 20)]
    devices: u16,

    /// What the sensors speak: iotstream, or secure (secure telemetry README frames over DTLS; every site
    /// issues each device a certificate with `telemesh certs device`).
    #[arg(long, value_name = "DIALECT", default_value = "iotstream", value_parser = sensor::parse_dialect)]
    dialect: telemesh_proto::wire::Dialect,

    /// How long the sensors send: 60s, 2m, ...
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = sensor::parse_duration)]
    duration: Duration,

    /// Reporting interval of each device.
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = sensor::parse_duration)]
    interval: Duration,

    /// Loss on each sensor → site link, independent per site: 0.1 or 10%.
    #[arg(long, value_name = "P", default_value = "10%", value_parser = parse_probability)]
    loss: f64,

    /// Lose in bursts (Gilbert–Elliott, mean burst 4 packets) at the same average --loss.
    #[arg(long)]
    burst: bool,

    /// One-way delay of the sensor links, ms.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    delay: f64,

    /// Jitter of the sensor links (delay ± jitter), ms.
    #[arg(long, value_name = "MS", default_value_t = 0.0)]
    jitter: f64,

    /// Put a relay in front of each node's QUIC port with this loss each way (e.g. 2%).
    #[arg(long, value_name = "P", value_parser = parse_probability)]
    link_loss: Option<f64>,

    /// Cut the last node off from the others from 20% to 70% of --duration, then heal, and
    /// report how long the mesh takes to agree again (--duration 120s or more makes sure a
    /// window ends during the cut).
    #[arg(long)]
    partition: bool,

    /// Also start an uninvited node: a fresh `telemesh node --open --bootstrap <node a>`
    /// with the mesh's name but no invitation, hearing every sensor datagram plus records
    /// fabricated for the same device ids. The run fails unless it was kept out: none of its
    /// records in a member's history, nothing of the mesh in its own, no member lists it as
    /// a peer, and the members count its refused connections.
    #[arg(long)]
    intruder: bool,

    /// Seed of the sensors and of every relay.
    #[arg(long, value_name = "X", default_value_t = 1)]
    seed: u64,

    /// Keep the nodes' data here instead of a temporary directory.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,

    /// Leave the mesh running after the check (until Ctrl-C) and print how to query it.
    #[arg(long)]
    keep: bool,

    /// How long to wait for the nodes to agree after the sensors stop.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = sensor::parse_duration)]
    settle_timeout: Duration,

    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_probability(s: &str) -> Result<f64, String> {
    let (number, scale) = match s.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (s, 1.0),
    };
    let p = number.trim().parse::<f64>().map_err(|e| format!("{s:?}: {e}"))? / scale;
    if !(0.0..1.0).contains(&p) {
        return Err(format!("{s:?} is not at least 0 and below 1 (or 100%)"));
    }
    Ok(p)
}

fn main() -> ExitCode {
    let cli: Cli = match telemesh_tools::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let opts = testnet::Options {
        nodes: cli.nodes,
        dialect: cli.dialect,
        devices: cli.devices,
        duration: cli.duration,
        interval: cli.interval,
        loss: cli.loss,
        burst: cli.burst,
        delay_ms: cli.delay,
        jitter_ms: cli.jitter,
        link_loss: cli.link_loss,
        partition: cli.partition,
        intruder: cli.intruder,
        seed: cli.seed,
        data: cli.data,
        settle_timeout: cli.settle_timeout,
        progress: !cli.quiet,
    };
    if let Err(e) = opts.validate() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let stop = match telemesh_tools::stop_flag() {
        Ok(s) => s,
        Err(code) => return code,
    };

    println!("telemesh testnet: {}", opts.describe());
    let outcome = match testnet::run(&opts, &stop, cli.keep) {
        Ok(o) => o,
        Err(e) if stop.load(Ordering::Relaxed) => {
            eprintln!("interrupted ({e}); every process it started is stopped");
            return ExitCode::from(130);
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    print!("{}", testnet::render(&opts, &outcome));
    let ok = outcome.ok();

    if let Some(kept) = outcome.kept {
        println!("\nThe mesh keeps running (data in {}); Ctrl-C stops it.", kept.dir.display());
        for (i, node) in kept.mesh.nodes.iter().enumerate() {
            println!(
                "  node {}: {}  iotstream {} (through the lossy relay: {})  log {}",
                node.name,
                node.url(),
                node.iotstream,
                kept.site_relays[i].local_addr(),
                node.log.display()
            );
        }
        if let Some(intruder) = &kept.intruder {
            let log = intruder.log.display();
            println!("  uninvited node: {}  iotstream {}  log {log}", intruder.url(), intruder.iotstream);
        }
        if let Some(a) = kept.mesh.nodes.first() {
            println!("  e.g. telemesh status --node {}", a.url());
            println!("       telemesh query --node {} iotstream 1001 --limit 10", a.url());
            println!("       telemesh mesh members --node {}", a.url());
            println!("       telemesh-sensor --devices 1001-1005 --to {}", kept.site_relays[0].local_addr());
        }
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("stopping");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
