//! `telemesh-testnet`'s command line: bad options are refused before anything starts.
// A failed setup step is a failed test; unwrap says so as clearly as expect here.
#![allow(clippy::unwrap_used)]

#[test]
fn bad_options_exit_2_with_one_line_naming_the_option() {
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("old"), b"x").unwrap();
    let data = data.path().to_str().unwrap();
    for (args, says) in [
        (&["--loss", "150%"][..], "--loss"),
        (&["--link-loss", "1"], "--link-loss"),
        (&["--nodes", "0"], "--nodes"),
        (&["--nodes", "1", "--partition"], "--partition"),
        (&["--partition", "--duration", "30s"], "--duration 60s"),
        (&["--duration", "soon"], "--duration"),
        (&["--data", data], "is not empty"),
        (&["--dialect", "tinytelemetry"], "--dialect"),
        (&["--dialect", "secure", "--intruder"], "--intruder"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_telemesh-testnet")).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line for {args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
}
