//! Optional packet capture of a run (`--pcap`): `tcpdump` or, failing that, `tshark` on
//! the loopback interface, as the IoTStream v1 Mini-RFC's
//! experiment plan does. Capturing usually needs privileges; a
//! capturer that is missing or cannot start is reported, never an error of the run.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A capture program found on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capturer {
    /// `tcpdump` or `tshark`.
    pub name: &'static str,
    pub program: PathBuf,
}

/// The first of `tcpdump`, `tshark` in the directories of `path` (a `PATH` value).
pub fn find_in(path: &OsStr) -> Option<Capturer> {
    ["tcpdump", "tshark"].into_iter().find_map(|name| {
        std::env::split_paths(path)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
            .map(|program| Capturer { name, program })
    })
}

/// [`find_in`] on this process's `PATH`.
pub fn find() -> Option<Capturer> {
    find_in(&std::env::var_os("PATH").unwrap_or_default())
}

/// The BPF filter for UDP to or from any of `ports`.
pub fn filter(ports: &[u16]) -> String {
    let ports: Vec<String> = ports.iter().map(|p| format!("port {p}")).collect();
    format!("udp and ({})", ports.join(" or "))
}

/// The capturer's arguments to write `ports`' UDP traffic on `lo` into `out`.
pub fn args(capturer: &Capturer, ports: &[u16], out: &Path) -> Vec<String> {
    let out = out.display().to_string();
    match capturer.name {
        // -U: write each packet as it comes, so a stopped capture is complete.
        "tcpdump" => vec![
            "-i".into(),
            "lo".into(),
            "-U".into(),
            "-w".into(),
            out,
            filter(ports),
        ],
        _ => vec![
            "-i".into(),
            "lo".into(),
            "-f".into(),
            filter(ports),
            "-w".into(),
            out,
        ],
    }
}

/// A running capture; stopped (and killed if need be) when dropped.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    /// The pcap file.
    pub path: PathBuf,
}

impl Capture {
    /// Starts the capture and gives it a moment to fail (no privileges, no `lo`). Errors
    /// are the capturer's own words, for a note.
    pub fn start(capturer: &Capturer, ports: &[u16], path: &Path) -> Result<Capture, String> {
        let mut child = Command::new(&capturer.program)
            .args(args(capturer, ports, path))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", capturer.program.display()))?;
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                let mut why = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut why);
                }
                return Err(format!(
                    "{} exited at once ({status}): {}",
                    capturer.name,
                    why.split_whitespace().collect::<Vec<_>>().join(" ")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // Its stderr is no longer read: let a chatty capturer write into the void.
        drop(child.stderr.take());
        Ok(Capture {
            child: Some(child),
            path: path.to_owned(),
        })
    }

    /// Stops the capture (SIGINT, as Ctrl-C would, so it flushes) and waits for it.
    pub fn stop(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_is_preferred_and_absence_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        let path = std::env::join_paths([&a, &b]).expect("PATH");
        assert_eq!(find_in(&path), None);
        std::fs::write(b.join("tshark"), "").expect("write");
        assert_eq!(find_in(&path).map(|c| c.name), Some("tshark"));
        std::fs::write(b.join("tcpdump"), "").expect("write");
        let found = find_in(&path).expect("tcpdump");
        assert_eq!((found.name, found.program), ("tcpdump", b.join("tcpdump")));
    }

    #[test]
    fn arguments_follow_the_seeds_commands() {
        let out = Path::new("/tmp/trace_loss_1s_run1.pcap");
        let tcpdump = Capturer {
            name: "tcpdump",
            program: "tcpdump".into(),
        };
        assert_eq!(
            args(&tcpdump, &[6005, 5005], out).join(" "),
            "-i lo -U -w /tmp/trace_loss_1s_run1.pcap udp and (port 6005 or port 5005)"
        );
        let tshark = Capturer {
            name: "tshark",
            program: "tshark".into(),
        };
        assert_eq!(
            args(&tshark, &[6005], out),
            [
                "-i",
                "lo",
                "-f",
                "udp and (port 6005)",
                "-w",
                "/tmp/trace_loss_1s_run1.pcap"
            ]
        );
    }

    /// An executable script standing in for tcpdump.
    fn script(dir: &Path, body: &str) -> Capturer {
        use std::os::unix::fs::PermissionsExt;
        let program = dir.join("tcpdump");
        std::fs::write(&program, format!("#!/bin/sh\n{body}\n")).expect("write");
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        Capturer {
            name: "tcpdump",
            program,
        }
    }

    #[test]
    fn a_capturer_that_exits_at_once_is_an_error_with_its_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("x.pcap");
        let failing = script(dir.path(), "echo 'lo: permission denied' >&2; exit 1");
        let e = Capture::start(&failing, &[1], &out).expect_err("exits at once");
        assert!(
            e.contains("exited at once") && e.contains("lo: permission denied"),
            "{e}"
        );
        let missing = Capturer {
            name: "tcpdump",
            program: dir.path().join("nope"),
        };
        let e = Capture::start(&missing, &[1], &out).expect_err("missing");
        assert!(e.contains("cannot start"), "{e}");
    }

    #[test]
    fn a_running_capture_is_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let running = script(dir.path(), "exec sleep 30");
        let capture = Capture::start(&running, &[1], &dir.path().join("x.pcap")).expect("runs");
        let started = Instant::now();
        capture.stop();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "stopped by SIGINT, not by the kill after 3 s"
        );
    }
}
