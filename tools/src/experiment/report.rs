//! The results: markdown tables (min / median / max across runs), `metrics.json` in seed
//! 003's shape, and the files' names. Pure except [`write`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::measure::{spread, RepairMetrics, SiteMetrics, Spread};
use super::scenario::Scenario;

/// One finished run of a scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// From 1.
    pub run: usize,
    pub sensor_seed: u64,
    /// The relays' seeds, site a first.
    pub relay_seeds: Vec<u64>,
    /// Site a on its own.
    pub metrics: SiteMetrics,
    /// Site a's merged view once the mesh has converged.
    pub after_repair: RepairMetrics,
    /// The per-packet CSV's file name.
    pub csv: String,
    /// The capture's file name, if one was made.
    pub pcap: Option<String>,
}

/// Every run of one scenario.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub scenario: Scenario,
    /// How long the sensor sent in each run.
    pub duration: Duration,
    /// Simulated devices.
    pub devices: u16,
    /// Readings per DATA packet.
    pub batch_size: usize,
    pub runs: Vec<Run>,
    /// Runs that failed: (run, error).
    pub failed: Vec<(usize, String)>,
}

/// One reported metric: its key in `metrics.json`, its label in the tables, how many
/// decimals the tables show, and how to read it from a run.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub key: &'static str,
    pub label: &'static str,
    pub decimals: usize,
    pub get: fn(&Run) -> Option<f64>,
}

/// Site a on its own: the source documents' metrics (the TinyTelemetry document's names first).
pub const SITE: &[Metric] = &[
    Metric {
        key: "bytes_per_report",
        label: "bytes per report (UDP payload per datagram received)",
        decimals: 2,
        get: |r| r.metrics.bytes_per_report,
    },
    Metric {
        key: "packets_received",
        label: "packets received",
        decimals: 0,
        get: |r| Some(r.metrics.packets_received as f64),
    },
    Metric {
        key: "packets_sent",
        label: "packets sent",
        decimals: 0,
        get: |r| Some(r.metrics.packets_sent as f64),
    },
    Metric {
        key: "duplicate_rate",
        label: "duplicate rate",
        decimals: 4,
        get: |r| r.metrics.duplicate_rate,
    },
    Metric {
        key: "sequence_gap_count",
        label: "sequence gap count",
        decimals: 0,
        get: |r| Some(r.metrics.sequence_gap_count as f64),
    },
    Metric {
        key: "cpu_ms_per_report",
        label: "CPU ms per report (node a)",
        decimals: 3,
        get: |r| r.metrics.cpu_ms_per_report,
    },
    Metric {
        key: "processing_ms_per_report",
        label: "processing ms per report (node a's own histogram)",
        decimals: 4,
        get: |r| r.metrics.processing_ms_per_report,
    },
    Metric {
        key: "packets_lost",
        label: "packets lost (never received)",
        decimals: 0,
        get: |r| Some(r.metrics.packets_lost as f64),
    },
    Metric {
        key: "bytes_per_reading",
        label: "bytes per reading",
        decimals: 2,
        get: |r| r.metrics.bytes_per_reading,
    },
    Metric {
        key: "latency_mean_ms",
        label: "end-to-end latency, mean (ms)",
        decimals: 3,
        get: |r| r.metrics.latency_mean_ms,
    },
    Metric {
        key: "latency_p99_ms",
        label: "end-to-end latency, p99 (ms)",
        decimals: 3,
        get: |r| r.metrics.latency_p99_ms,
    },
];

/// After mesh repair with 3 sites.
pub const REPAIR: &[Metric] = &[
    Metric {
        key: "records_after_repair",
        label: "records at site a after repair",
        decimals: 0,
        get: |r| Some(r.after_repair.records_after_repair as f64),
    },
    Metric {
        key: "repaired_at_site_a",
        label: "of which repaired from b and c",
        decimals: 0,
        get: |r| Some(r.after_repair.repaired_at_site_a as f64),
    },
    Metric {
        key: "sequence_gap_count",
        label: "sequence gap count after repair",
        decimals: 0,
        get: |r| Some(r.after_repair.sequence_gap_count_after_repair as f64),
    },
    Metric {
        key: "lost_by_every_site",
        label: "packets lost by every site",
        decimals: 0,
        get: |r| Some(r.after_repair.lost_by_every_site as f64),
    },
    Metric {
        key: "expected_lost_by_every_site",
        label: "expected lost by every site (sent × loss³)",
        decimals: 2,
        get: |r| Some(r.after_repair.expected_lost_by_every_site),
    },
    Metric {
        key: "unrepaired",
        label: "heard by some site, missing at a (unrepaired)",
        decimals: 0,
        get: |r| Some(r.after_repair.unrepaired as f64),
    },
    Metric {
        key: "repair_bytes",
        label: "repair bytes sent (all nodes)",
        decimals: 0,
        get: |r| Some(r.after_repair.repair_bytes as f64),
    },
    Metric {
        key: "symbols_received",
        label: "repair symbols received (all nodes)",
        decimals: 0,
        get: |r| Some(r.after_repair.symbols_received as f64),
    },
    Metric {
        key: "settle_seconds",
        label: "last packet → same roots on all nodes (s)",
        decimals: 1,
        get: |r| Some(r.after_repair.settle_seconds),
    },
];

impl Outcome {
    /// The spread of one metric across the successful runs.
    pub fn spread(&self, metric: &Metric) -> Option<Spread> {
        spread(self.runs.iter().map(metric.get))
    }
}

/// A number with `decimals` decimals, or `–` for none.
fn number(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(x) => format!("{x:.decimals$}"),
        None => "–".to_owned(),
    }
}

fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{s:.0} s")
    } else {
        format!("{s} s")
    }
}

/// The markdown report: a summary of medians, then per scenario a min / median / max
/// table of every metric. `command` is the command line that made it.
pub fn markdown(outcomes: &[Outcome], command: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("Command: `{command}`\n\n"));
    if let Some(first) = outcomes.first() {
        out.push_str(&format!(
            "{} IoTStream devices ({} readings per DATA, about 20% HEARTBEAT, one INIT each), \
             every datagram sent to 3 sites (a, b, c), each through its own relay. \
             Single-site numbers are site a's own receipt; \"after mesh repair\" is site a's \
             merged view once all three nodes list the same window roots.\n\n",
            first.devices, first.batch_size
        ));
    }
    out.push_str("Medians across runs:\n\n");
    out.push_str(
        "| scenario | relay (≈ netem) | runs × duration | bytes/report | packets received | \
         duplicate rate | gap count | latency mean (ms) | CPU ms/report | processing ms/report | \
         lost by every site | unrepaired |\n",
    );
    out.push_str("|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n");
    let median = |o: &Outcome, m: &Metric| number(o.spread(m).map(|s| s.median), m.decimals);
    let find = |table: &[Metric], key: &str| table.iter().find(|m| m.key == key).copied();
    for o in outcomes {
        let mut cells = vec![
            o.scenario.name(),
            format!("`{}`", o.scenario.netem()),
            format!("{} × {}", o.runs.len(), seconds(o.duration)),
        ];
        for key in [
            "bytes_per_report",
            "packets_received",
            "duplicate_rate",
            "sequence_gap_count",
            "latency_mean_ms",
            "cpu_ms_per_report",
            "processing_ms_per_report",
        ] {
            cells.extend(find(SITE, key).map(|m| median(o, &m)));
        }
        for key in ["lost_by_every_site", "unrepaired"] {
            cells.extend(find(REPAIR, key).map(|m| median(o, &m)));
        }
        out.push_str(&format!("| {} |\n", cells.join(" | ")));
    }
    for o in outcomes {
        out.push_str(&format!(
            "\n### {}: {}\n\n{} run(s) × {}, relay ≈ `{}`",
            o.scenario.name(),
            o.scenario.description,
            o.runs.len(),
            seconds(o.duration),
            o.scenario.netem()
        ));
        if !o.failed.is_empty() {
            let runs: Vec<String> = o.failed.iter().map(|(r, _)| r.to_string()).collect();
            out.push_str(&format!(" — **failed run(s): {}**", runs.join(", ")));
        }
        out.push('\n');
        if !o.runs.is_empty() {
            out.push_str("\n| metric | min | median | max |\n|---|--:|--:|--:|\n");
            for (heading, table) in [
                (None, SITE),
                (Some("**after mesh repair (3 sites)**"), REPAIR),
            ] {
                if let Some(h) = heading {
                    out.push_str(&format!("| {h} | | | |\n"));
                }
                for m in table {
                    let s = o.spread(m);
                    out.push_str(&format!(
                        "| {} | {} | {} | {} |\n",
                        m.label,
                        number(s.map(|s| s.min), m.decimals),
                        number(s.map(|s| s.median), m.decimals),
                        number(s.map(|s| s.max), m.decimals)
                    ));
                }
            }
        }
        for (run, error) in &o.failed {
            out.push_str(&format!(
                "\nRun {run} failed:\n\n```\n{}\n```\n",
                error.trim()
            ));
        }
    }
    out
}

/// `{key: value}` of one statistic of a metric table (`null` where no run has a value).
fn stat_map(o: &Outcome, table: &[Metric], pick: fn(&Spread) -> f64) -> Value {
    let map: Map<String, Value> = table
        .iter()
        .map(|m| {
            let v = o.spread(m).as_ref().map(pick);
            let v = match (v, m.decimals) {
                (Some(x), 0) => whole(x),
                (v, _) => json!(v),
            };
            (m.key.to_owned(), v)
        })
        .collect();
    Value::Object(map)
}

fn statistics(o: &Outcome, table: &[Metric]) -> Value {
    json!({
        "min": stat_map(o, table, |s| s.min),
        "median": stat_map(o, table, |s| s.median),
        "max": stat_map(o, table, |s| s.max),
    })
}

/// A whole number as an integer (`60`, as the TinyTelemetry document writes it), anything else as is.
fn whole(x: f64) -> Value {
    if x.fract() == 0.0 && (0.0..9e15).contains(&x) {
        json!(x as u64)
    } else {
        json!(x)
    }
}

/// `metrics.json`: a list with one entry per scenario in the TinyTelemetry document's shape
/// (`test_scenario`, `duration_seconds`, `reporting_interval`, `batch_size`, `metrics`,
/// `statistics{min,median,max}`), where `metrics` holds the medians across runs; plus the
/// same for `after_repair`, the runs themselves and anything that failed.
pub fn metrics_json(outcomes: &[Outcome]) -> Value {
    let entries: Vec<Value> = outcomes
        .iter()
        .map(|o| {
            json!({
                "test_scenario": o.scenario.kind,
                "scenario": o.scenario.name(),
                "description": o.scenario.description,
                "netem": o.scenario.netem(),
                "duration_seconds": whole(o.duration.as_secs_f64()),
                "reporting_interval": whole(o.scenario.interval.as_secs_f64()),
                "batch_size": o.batch_size,
                "devices": o.devices,
                "sites": 3,
                "runs": o.runs.len(),
                "metrics": stat_map(o, SITE, |s| s.median),
                "statistics": statistics(o, SITE),
                "after_repair": {
                    "metrics": stat_map(o, REPAIR, |s| s.median),
                    "statistics": statistics(o, REPAIR),
                },
                "per_run": o.runs,
                "failed_runs": o.failed.iter()
                    .map(|(run, error)| json!({"run": run, "error": error}))
                    .collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(entries)
}

/// Writes `results.md` and `metrics.json` into `dir`; returns their paths.
pub fn write(dir: &Path, outcomes: &[Outcome], command: &str) -> anyhow::Result<Vec<PathBuf>> {
    let md = dir.join("results.md");
    let text = format!(
        "# telemesh experiment results\n\n{}",
        markdown(outcomes, command)
    );
    std::fs::write(&md, text).with_context(|| format!("cannot write {}", md.display()))?;
    let js = dir.join("metrics.json");
    let body = serde_json::to_string_pretty(&metrics_json(outcomes))? + "\n";
    std::fs::write(&js, body).with_context(|| format!("cannot write {}", js.display()))?;
    Ok(vec![md, js])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::experiment::scenario;

    fn site(received: u64, bytes_per_report: Option<f64>) -> SiteMetrics {
        SiteMetrics {
            packets_sent: 100,
            packets_received: received,
            packets_lost: 100 - received,
            duplicate_rate: Some(0.0),
            sequence_gap_count: 100 - received,
            bytes_per_report,
            bytes_per_reading: Some(6.9),
            latency_mean_ms: Some(0.2),
            latency_p99_ms: Some(0.5),
            cpu_ms_per_report: None,
            processing_ms_per_report: Some(0.02),
            unmatched_records: 0,
        }
    }

    pub(crate) fn outcome(name: &str, received: &[u64]) -> Outcome {
        let runs = received
            .iter()
            .enumerate()
            .map(|(i, &n)| Run {
                run: i + 1,
                sensor_seed: 1,
                relay_seeds: vec![2, 3, 4],
                metrics: site(n, Some(20.0 + n as f64 / 10.0)),
                after_repair: RepairMetrics {
                    records_after_repair: 100,
                    repaired_at_site_a: 100 - n,
                    sequence_gap_count_after_repair: 0,
                    lost_by_every_site: 0,
                    expected_lost_by_every_site: 0.0125,
                    unrepaired: 0,
                    repair_bytes: 1000,
                    symbols_received: 12,
                    settle_seconds: 6.5,
                },
                csv: format!("results_x_run{}.csv", i + 1),
                pcap: None,
            })
            .collect();
        Outcome {
            scenario: scenario::by_name(name).expect("scenario"),
            duration: Duration::from_secs(60),
            devices: 10,
            batch_size: 5,
            runs,
            failed: vec![(9, "the mesh did not converge".to_owned())],
        }
    }

    #[test]
    fn metrics_json_has_seed_003s_shape_with_min_median_max() {
        let v = metrics_json(&[outcome("loss-1s", &[95, 90, 97])]);
        let e = &v[0];
        assert_eq!(e["test_scenario"], "loss");
        assert_eq!(e["scenario"], "loss-1s");
        assert_eq!(e["duration_seconds"], 60);
        assert_eq!(e["reporting_interval"], 1);
        assert_eq!(e["batch_size"], 5);
        assert_eq!(e["runs"], 3);
        for key in [
            "bytes_per_report",
            "packets_received",
            "packets_sent",
            "duplicate_rate",
            "sequence_gap_count",
            "cpu_ms_per_report",
        ] {
            assert!(e["metrics"].get(key).is_some(), "metrics.{key}");
            assert!(
                e["statistics"]["max"].get(key).is_some(),
                "statistics.max.{key}"
            );
        }
        // Counts are integers, as in the TinyTelemetry document's example.
        assert_eq!(e["metrics"]["packets_received"].as_u64(), Some(95));
        assert_eq!(
            e["statistics"]["min"]["packets_received"].as_u64(),
            Some(90)
        );
        assert_eq!(
            e["statistics"]["max"]["packets_received"].as_u64(),
            Some(97)
        );
        assert_eq!(e["statistics"]["median"]["bytes_per_report"], 29.5);
        // No run measured CPU: null, not 0 and not NaN.
        assert!(e["metrics"]["cpu_ms_per_report"].is_null());
        assert_eq!(e["after_repair"]["metrics"]["repaired_at_site_a"], 5);
        assert_eq!(
            e["after_repair"]["statistics"]["max"]["repaired_at_site_a"],
            10
        );
        assert_eq!(e["after_repair"]["metrics"]["settle_seconds"], 6.5);
        assert_eq!(e["per_run"].as_array().map(Vec::len), Some(3));
        assert_eq!(e["per_run"][1]["metrics"]["packets_received"], 90);
        assert_eq!(e["failed_runs"][0]["run"], 9);
    }

    #[test]
    fn markdown_tables_show_min_median_max_and_failures() {
        let md = markdown(
            &[
                outcome("baseline-1s", &[100, 98, 99]),
                outcome("delay-1s", &[]),
            ],
            "telemesh-experiment --quick",
        );
        assert!(md.starts_with("Command: `telemesh-experiment --quick`"));
        assert!(md.contains("### baseline-1s: no impairment, 1 s interval"));
        assert!(md.contains("| packets received | 98 | 99 | 100 |"), "{md}");
        assert!(md.contains(
            "| bytes per report (UDP payload per datagram received) | 29.80 | 29.90 | 30.00 |"
        ));
        assert!(md.contains("| CPU ms per report (node a) | – | – | – |"));
        assert!(md.contains("| **after mesh repair (3 sites)** | | | |"));
        assert!(md.contains("| of which repaired from b and c | 0 | 1 | 2 |"));
        // The summary row of medians.
        assert!(
            md.contains("| baseline-1s | `none` | 3 × 60 s | 29.90 | 99 |"),
            "{md}"
        );
        assert!(md.contains(
            "| delay-1s | `tc qdisc add dev lo root netem delay 100000us 10000us` | 0 × 60 s | – |"
        ));
        assert!(md.contains("**failed run(s): 9**"));
        assert!(md.contains("Run 9 failed:\n\n```\nthe mesh did not converge\n```"));
        // A scenario without a successful run has no table of dashes.
        let delay = &md[md.find("### delay-1s").expect("delay section")..];
        assert!(!delay.contains("| metric |"), "{delay}");
    }

    #[test]
    fn write_puts_both_files_in_the_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = write(dir.path(), &[outcome("baseline-5s", &[50])], "cmd").expect("write");
        assert_eq!(paths.len(), 2);
        let js: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.path().join("metrics.json")).expect("read"),
        )
        .expect("json");
        assert_eq!(js[0]["reporting_interval"], 5);
        let md = std::fs::read_to_string(dir.path().join("results.md")).expect("read");
        assert!(md.starts_with("# telemesh experiment results"));
    }
}
