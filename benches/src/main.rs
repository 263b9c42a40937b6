//! `telemesh-bench`: the project's benchmarks that need more than criterion (see
//! `docs/benchmarks.md`). Each subcommand prints a markdown table on stdout and its
//! progress on stderr.

mod ingest;
pub mod load;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(version, about = "telemesh benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Sustained datagrams/s a node accepts and persists with zero loss, against a bare recv loop.
    Ingest(ingest::Opts),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Ingest(opts) => ingest::run(&opts),
    }
}
