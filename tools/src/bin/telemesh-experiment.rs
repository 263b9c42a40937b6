//! `telemesh-experiment`: the source documents' experiment plan through the relay — every scenario
//! `--runs` times against three real `telemesh node`s on loopback, then markdown tables,
//! `metrics.json`, per-run CSVs and SVG plots in `--out`. The logic lives in
//! `telemesh_tools::experiment`; docs/experiments.md describes it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use telemesh_tools::experiment::report::Outcome;
use telemesh_tools::experiment::runner::{self, Interrupted, Options, Progress};
use telemesh_tools::experiment::scenario::{self, Scenario};
use telemesh_tools::experiment::{capture, plot, report};
use telemesh_tools::{cluster, sensor};

const EXAMPLES: &str = "\
Examples:
  # the source documents' plan: every scenario, 5 runs of 60 s (about 30 minutes)
  telemesh-experiment
  # CI: every scenario once for 10 s (under 2 minutes)
  telemesh-experiment --quick
  telemesh-experiment --scenario loss-1s --runs 2 --duration 20s

Files in --out: results.md (also printed), metrics.json, results_<scenario>_<interval>_run<N>.csv,
bytes_per_report_vs_interval.svg, duplicate_rate_vs_loss.svg, and with --pcap
trace_<scenario>_<interval>_run<N>.pcap. The telemesh binary is found next to this one or
in $TELEMESH_BIN.

Exit status: 0 when every run succeeded, 1 when one failed, 2 for bad options, 130 on Ctrl-C.";

/// Runs the source documents' experiment scenarios against three telemesh nodes on loopback.
///
/// Each run starts sites a, b and c (one mesh), puts a relay with the scenario's
/// impairment in front of each node's IoTStream port, and sends the simulated devices'
/// datagrams to all three relays. It measures site a on its own (the source documents' metrics) and,
/// once all nodes hold the same window roots, site a's merged view after mesh repair.
#[derive(Debug, Parser)]
#[command(name = "telemesh-experiment", version, verbatim_doc_comment, after_help = after_help())]
struct Cli {
    /// A scenario to run, repeatable: baseline-1s, baseline-5s, baseline-30s, loss-1s,
    /// delay-1s [default: all five].
    #[arg(long = "scenario", value_name = "NAME", value_parser = parse_scenario)]
    scenarios: Vec<Scenario>,

    /// Runs per scenario [default: 5, with --quick 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=100))]
    runs: Option<u16>,

    /// How long the sensor sends in each run, e.g. 60s, 2m [default: 60s, with --quick 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Simulated IoTStream devices (ids 1001, 1002, …).
    #[arg(long, value_name = "N", default_value_t = 10,
          value_parser = clap::value_parser!(u16).range(1..=1000))]
    devices: u16,

    /// Base seed of the sensor and the relays (each run and site gets its own from it).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,

    /// Directory for the results (created if missing).
    #[arg(long, value_name = "DIR", default_value = "experiment-results")]
    out: PathBuf,

    /// CI mode: 1 run of 10 s per scenario unless --runs / --duration say otherwise.
    #[arg(long)]
    quick: bool,

    /// Capture each run's UDP at site a with tcpdump or tshark, if installed.
    #[arg(long)]
    pcap: bool,

    /// How long the mesh may take to converge once the windows have sealed.
    #[arg(long, value_name = "DURATION", default_value = "120s", value_parser = parse_duration)]
    settle_timeout: Duration,

    /// Keep each run's node data, node logs and truth log in DIR/work/ (removed otherwise
    /// unless the run fails).
    #[arg(long)]
    keep: bool,
}

fn after_help() -> String {
    format!("{}\n{EXAMPLES}", scenario::help())
}

fn parse_scenario(s: &str) -> Result<Scenario, String> {
    scenario::by_name(s).ok_or_else(|| {
        let names: Vec<String> = scenario::all().iter().map(Scenario::name).collect();
        format!("unknown scenario {s:?} (known: {})", names.join(", "))
    })
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = sensor::parse_duration(s).map_err(|e| e.to_string())?;
    if !(Duration::from_secs(1)..=Duration::from_secs(24 * 3600)).contains(&d) {
        return Err(format!("{s:?} is not between 1s and 24h"));
    }
    Ok(d)
}

/// The progress bar (hidden when stderr is not a terminal); notes and per-run lines go to
/// stderr either way.
struct Bar {
    bar: ProgressBar,
    prefix: String,
}

impl Progress for Bar {
    fn phase(&self, what: &str) {
        self.bar.set_message(format!("{}: {what}", self.prefix));
    }
    fn note(&self, what: &str) {
        self.line(&format!("note: {what}"));
    }
}

impl Bar {
    fn line(&self, text: &str) {
        self.bar.suspend(|| eprintln!("{text}"));
    }
}

fn main() -> ExitCode {
    let cli: Cli = match telemesh_tools::parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("telemesh-experiment: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut scenarios: Vec<Scenario> = Vec::new();
    for s in if cli.scenarios.is_empty() {
        scenario::all()
    } else {
        cli.scenarios
    } {
        if !scenarios.contains(&s) {
            scenarios.push(s);
        }
    }
    let runs = usize::from(cli.runs.unwrap_or(if cli.quick { 1 } else { 5 }));
    let duration = cli
        .duration
        .unwrap_or(Duration::from_secs(if cli.quick { 10 } else { 60 }));
    let pcap = match cli.pcap {
        true => {
            let found = capture::find();
            if found.is_none() {
                eprintln!("note: --pcap: neither tcpdump nor tshark is on PATH; running without packet capture");
            }
            found
        }
        false => None,
    };
    let opts = Options {
        duration,
        devices: cli.devices,
        seed: cli.seed,
        out: cli.out,
        pcap,
        settle_timeout: cli.settle_timeout,
        keep: cli.keep,
    };
    if let Err(e) = opts.check(&scenarios) {
        eprintln!("error: {e}");
        return Ok(ExitCode::from(2));
    }
    let binary = cluster::node_binary()?;
    std::fs::create_dir_all(&opts.out)?;

    let stop = match telemesh_tools::stop_flag() {
        Ok(s) => s,
        Err(code) => return Ok(code),
    };

    let command = std::iter::once("telemesh-experiment".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "telemesh-experiment: {} scenario(s) × {runs} run(s) × {} s, {} devices, seed {}, node {}, results in {}",
        scenarios.len(),
        duration.as_secs_f64(),
        opts.devices,
        opts.seed,
        binary.display(),
        opts.out.display()
    );
    let bar = ProgressBar::new((scenarios.len() * runs) as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:25} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut progress = Bar {
        bar,
        prefix: String::new(),
    };

    let started = Instant::now();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut interrupted = false;
    'scenarios: for s in &scenarios {
        let mut outcome = Outcome {
            scenario: s.clone(),
            duration,
            devices: opts.devices,
            batch_size: sensor::IOTSTREAM_DEFAULT_BATCH,
            runs: Vec::new(),
            failed: Vec::new(),
        };
        for run in 1..=runs {
            progress.prefix = format!("{} run {run}/{runs}", s.name());
            match runner::run(&binary, &opts, s, run, &stop, &progress) {
                Ok(r) => {
                    progress.line(&format!(
                        "{}: site a received {}/{} packets ({} lost, {} gaps); after repair {} \
                         ({} lost by every site, {} unrepaired), converged {:.1} s after the last packet",
                        progress.prefix,
                        r.metrics.packets_received,
                        r.metrics.packets_sent,
                        r.metrics.packets_lost,
                        r.metrics.sequence_gap_count,
                        r.after_repair.records_after_repair,
                        r.after_repair.lost_by_every_site,
                        r.after_repair.unrepaired,
                        r.after_repair.settle_seconds
                    ));
                    outcome.runs.push(r);
                }
                Err(e) if e.is::<Interrupted>() || stop.load(Ordering::Relaxed) => {
                    interrupted = true;
                    if !opts.keep {
                        let _ = std::fs::remove_dir_all(runner::work_dir(&opts.out, s, run));
                        let _ = std::fs::remove_dir(opts.out.join("work"));
                    }
                    outcomes.push(outcome);
                    break 'scenarios;
                }
                Err(e) => {
                    let work = runner::work_dir(&opts.out, s, run);
                    progress.line(&format!(
                        "{} FAILED: {e:#} (node logs in {})",
                        progress.prefix,
                        work.display()
                    ));
                    outcome.failed.push((run, format!("{e:#}")));
                }
            }
            progress.bar.inc(1);
        }
        outcomes.push(outcome);
    }
    progress.bar.finish_and_clear();
    outcomes.retain(|o| !o.runs.is_empty() || !o.failed.is_empty());

    if !outcomes.is_empty() {
        let mut files = report::write(&opts.out, &outcomes, &command)?;
        for p in plot::ALL {
            files.push(p.write(&opts.out, &outcomes)?);
        }
        println!("{}", report::markdown(&outcomes, &command));
        let names: Vec<String> = files
            .iter()
            .map(|f| {
                f.file_name()
                    .map_or(String::new(), |n| n.to_string_lossy().into_owned())
            })
            .collect();
        eprintln!(
            "telemesh-experiment: wrote {} and the per-run CSVs in {} ({:.0} s)",
            names.join(", "),
            opts.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let failed: usize = outcomes.iter().map(|o| o.failed.len()).sum();
    if interrupted {
        eprintln!("telemesh-experiment: interrupted");
        return Ok(ExitCode::from(130));
    }
    if failed > 0 {
        eprintln!("telemesh-experiment: {failed} run(s) failed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
