//! `telemesh-experiment`'s command line without starting nodes: bad options exit 2 with
//! one line, `--help` lists the scenarios. The runs themselves are exercised by
//! `telemesh-experiment --quick` in CI (.ci/run) and by the unit tests of
//! `telemesh_tools::experiment`.

use std::process::{Command, Output};

fn experiment(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_telemesh-experiment"))
        .args(args)
        // If an option were accepted by mistake, no node could start: fail fast.
        .env("TELEMESH_BIN", "/nonexistent/telemesh")
        .output()
        .expect("run telemesh-experiment")
}

#[test]
fn bad_options_exit_2_with_one_line() {
    for (args, needle) in [
        (
            &["--scenario", "baseline-2s"][..],
            "unknown scenario \"baseline-2s\"",
        ),
        (&["--duration", "0s"][..], "not between 1s and 24h"),
        (&["--runs", "0"][..], "--runs"),
        (&["--devices", "1001"][..], "--devices"),
        (&["--bogus"][..], "--bogus"),
    ] {
        let out = experiment(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn help_lists_every_scenario_and_its_files() {
    let out = experiment(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for name in [
        "baseline-1s",
        "baseline-5s",
        "baseline-30s",
        "loss-1s",
        "delay-1s",
    ] {
        assert!(help.contains(name), "{name} missing from --help");
    }
    assert!(help.contains("results_<scenario>_<interval>_run<N>.csv"));
}

#[test]
fn a_node_that_cannot_start_fails_every_run_with_exit_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = experiment(&["--quick", "--out", &dir.path().display().to_string()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node a exited") || stderr.contains("cannot start"),
        "{stderr}"
    );
    // Every run failed, and the report says so.
    let md = std::fs::read_to_string(dir.path().join("results.md")).expect("results.md");
    assert_eq!(md.matches("failed run(s): 1").count(), 5, "{md}");
}
