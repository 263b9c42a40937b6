//! `telemesh-merkle`: prints the Merkle root (`telemesh_proto::merkle`) of each file.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, ValueEnum};
use telemesh_proto::merkle::{Blake3, RootHasher, Sha256, TreeHash};

const EXAMPLES: &str = "\
Examples:
  # telemesh window blobs: BLAKE3, 1 KiB leaves
  telemesh-merkle blob.bin

  # BitTorrent v2 (BEP 52) pieces root of each file
  telemesh-merkle --hash sha256 --leaf 16KiB *.iso

Exit status: 0 when every file was hashed, 1 if any file could not be read, 2 for bad
options.";

/// Prints the BEP 52-style Merkle root of each FILE, one `<hex>  <path>` line per file.
///
/// Leaves of --leaf bytes (the last one may be short), leaf layer padded to a power of
/// two with all-zero digests, node = H(left || right). With --hash sha256 --leaf 16KiB
/// the root is the file's BitTorrent v2 `pieces root`. An empty file's root is all
/// zeros (BitTorrent v2 gives empty files none).
#[derive(Debug, Parser)]
#[command(name = "telemesh-merkle", version, after_help = EXAMPLES, verbatim_doc_comment)]
struct Cli {
    /// Hash function.
    #[arg(long, value_enum, default_value_t = HashFn::Blake3)]
    hash: HashFn,

    /// Leaf size in bytes: 1024, 16384, 16KiB, 1MiB (K/KiB/M/MiB are powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "1024", value_parser = parse_leaf)]
    leaf: u32,

    /// Files to hash.
    #[arg(value_name = "FILE", required = true)]
    files: Vec<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashFn {
    Blake3,
    Sha256,
}

fn parse_leaf(s: &str) -> Result<u32, String> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let scale: u64 = match unit {
        "" => 1,
        "k" | "K" | "KiB" => 1 << 10,
        "m" | "M" | "MiB" => 1 << 20,
        _ => return Err(format!("unknown unit {unit:?} (use K, KiB, M or MiB)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size in bytes"))?;
    match n.checked_mul(scale).map(u32::try_from) {
        Some(Ok(0)) => Err("the leaf size must be at least 1 byte".into()),
        Some(Ok(n)) => Ok(n),
        _ => Err(format!(
            "{s} is larger than the maximum leaf size ({} bytes)",
            u32::MAX
        )),
    }
}

/// Streams `path` through the tree hasher in 1 MiB reads.
fn file_root<H: TreeHash>(path: &Path, leaf: u32) -> io::Result<H::Digest> {
    let mut hasher = RootHasher::<H>::new(leaf).map_err(io::Error::other)?;
    let mut file = File::open(path)?;
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize()),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = match telemesh_tools::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let mut status = ExitCode::SUCCESS;
    let mut stdout = io::stdout().lock();
    for path in &cli.files {
        let root = match cli.hash {
            HashFn::Blake3 => file_root::<Blake3>(path, cli.leaf).map(hex::encode),
            HashFn::Sha256 => file_root::<Sha256>(path, cli.leaf).map(hex::encode),
        };
        match root {
            Ok(hex) => {
                if let Err(e) = writeln!(stdout, "{hex}  {}", path.display()) {
                    eprintln!("error: writing to stdout: {e}");
                    return ExitCode::FAILURE;
                }
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                status = ExitCode::FAILURE;
            }
        }
    }
    status
}
