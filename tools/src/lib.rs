//! telemesh tools. `sensor` is the simulator behind the `telemesh-sensor` binary, kept as
//! a library so that integration tests and the testnet can drive it in-process.

pub mod relay;
pub mod sensor;

use std::process::ExitCode;

/// Parses the command line; on `--help`/`--version` prints and exits 0, on bad arguments
/// prints one line (clap's first paragraph, whitespace collapsed) and exits 2.
pub fn parse_args<C: clap::Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            // Printing help can only fail on a closed stdout; nothing to do then.
            let _ = e.print();
            ExitCode::SUCCESS
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.split("\n\n").next().unwrap_or("error: bad arguments");
            eprintln!("{}", first.split_whitespace().collect::<Vec<_>>().join(" "));
            ExitCode::from(2)
        }
    })
}
