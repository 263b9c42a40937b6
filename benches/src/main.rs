//! `telemesh-bench`: the project's benchmarks that need more than criterion (see
//! `docs/benchmarks.md`). Each subcommand prints a markdown table on stdout and its
//! progress on stderr.

mod churn;
mod decode_failure;
mod disk;
mod ingest;
mod mesh;
pub mod load;
mod repair;
mod scale;
mod secure;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "telemesh benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// A node under device-id churn: an honest device's records kept, API latency, peak RSS.
    Churn(churn::Opts),
    /// Sustained datagrams/s a node accepts and persists with zero loss, against a bare recv loop.
    Ingest(ingest::Opts),
    /// RaptorQ repair: decode failure rate from exactly m, m+1, m+2 repair symbols.
    DecodeFailure(decode_failure::Opts),
    /// Bytes on disk per reading for the IoTStream Mini-RFC's workload, against raw datagrams and CSV.
    Disk(disk::Opts),
    /// Nodes on loopback (real processes, relays) under independent loss: repair bytes per repaired byte, time to the same root.
    Mesh(mesh::Opts),
    /// Repair overhead of telemesh against ARQ and whole-window fetch, in a simulated mesh (sweep).
    Repair(repair::Opts),
    /// Overlay bytes per record per node (gossip, provenance, summary exchange) as sites grow, simulated.
    Scale(scale::Opts),
    /// The secure README's load table: 1/5/10 DTLS clients at 1,000/5,000/20,000 frames/s, beside plain IoTStream.
    Secure(secure::Opts),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Churn(opts) => churn::run(&opts),
        Command::Ingest(opts) => ingest::run(&opts),
        Command::DecodeFailure(opts) => decode_failure::run(&opts),
        Command::Disk(opts) => disk::run(&opts),
        Command::Mesh(opts) => mesh::run(&opts),
        Command::Repair(opts) => repair::run(&opts),
        Command::Scale(opts) => scale::run(&opts),
        Command::Secure(opts) => secure::run(&opts),
    }
}
