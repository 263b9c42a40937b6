//! telemesh tools. `sensor` is the simulator behind the `telemesh-sensor` binary, kept as
//! a library so that integration tests and the testnet can drive it in-process.

pub mod cluster;
pub mod dtls;
pub mod experiment;
pub mod plot;
pub mod relay;
pub mod testnet;
pub mod sensor;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A flag Ctrl-C sets, for a clean stop; a second Ctrl-C exits at once (status 130). If
/// the handler cannot be installed, prints one line and gives exit status 1.
pub fn stop_flag() -> Result<Arc<AtomicBool>, ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let installed = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::Relaxed) {
            std::process::exit(130);
        }
    });
    match installed {
        Ok(()) => Ok(stop),
        Err(e) => {
            eprintln!("error: cannot install the Ctrl-C handler: {e}");
            Err(ExitCode::from(1))
        }
    }
}

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
