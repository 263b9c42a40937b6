//! The two text formats `/metrics` serves, and which one a scraper asked for.
//!
//! prometheus-client writes OpenMetrics 1.0. Prometheus' classic text format (0.0.4), which
//! `promtool check metrics`, older Prometheus servers and most other scrapers read, differs
//! in a few rules: a counter's `# TYPE` and `# HELP` lines name its sample (`x_total`), not
//! the family (`x`); there is no `# UNIT`, no `_created` sample, no exemplar, no `info`
//! type (a gauge named `x_info`) and no `# EOF`. [`to_classic`] rewrites one into the other;
//! samples and label sets are written the same way in both.

use std::fmt::Write as _;

/// A text format of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' text format 0.0.4: what a scraper gets unless it asks for OpenMetrics.
    Classic,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Classic => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header prefers: OpenMetrics when it ranks
    /// `application/openmetrics-text` (version 1.0.0, 0.0.1 or none) strictly above the
    /// classic format (`text/plain` of version 0.0.4 or none, `text/*`, `*/*`); the classic
    /// format otherwise, and when the header is missing or accepts neither.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else { return Format::Classic };
        let om = quality(accept, "application", "openmetrics-text", &["1.0.0", "0.0.1"]);
        let classic = quality(accept, "text", "plain", &["0.0.4"]);
        if om > classic {
            Format::OpenMetrics
        } else {
            Format::Classic
        }
    }
}

/// The quality an `Accept` header gives `kind/sub` in one of `versions` (or with no
/// version): that of the most specific media range matching it (RFC 9110, 12.5.1), 0 if
/// none does. Parameters other than `version` and `q` are ignored.
fn quality(accept: &str, kind: &str, sub: &str, versions: &[&str]) -> f32 {
    // (specificity, q) of the best match so far.
    let mut best: Option<(u8, f32)> = None;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let Some((k, s)) = parts.next().and_then(|m| m.split_once('/')) else { continue };
        let (mut q, mut version) = (1.0f32, None);
        for p in parts {
            let Some((name, value)) = p.split_once('=') else { continue };
            let value = value.trim().trim_matches('"');
            match name.trim().to_ascii_lowercase().as_str() {
                "q" => q = value.parse().unwrap_or(0.0),
                "version" => version = Some(value),
                _ => {}
            }
        }
        let specificity = match (k.eq_ignore_ascii_case(kind), s.eq_ignore_ascii_case(sub), k == "*", s == "*") {
            (true, true, _, _) => match version {
                None => 2,
                Some(v) if versions.contains(&v) => 3,
                Some(_) => continue,
            },
            (true, false, _, true) => 1,
            (false, _, true, true) => 0,
            _ => continue,
        };
        if best.is_none_or(|(b, _)| specificity > b) {
            best = Some((specificity, q.clamp(0.0, 1.0)));
        }
    }
    best.map_or(0.0, |(_, q)| q)
}

/// The classic (0.0.4) text of an OpenMetrics text exposition, as prometheus-client writes
/// it (one `# HELP` before each `# TYPE`).
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    // The family being written and the sample name its `_created` samples would have.
    let mut created = String::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = Some(rest.split_once(' ').unwrap_or((rest, "")));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (name, kind) = match kind {
                "counter" => (format!("{family}_total"), "counter"),
                "info" => (format!("{family}_info"), "gauge"),
                "gauge" | "histogram" | "summary" => (family.to_owned(), kind),
                // stateset, gaugehistogram, unknown: samples as they are, untyped.
                _ => (family.to_owned(), "untyped"),
            };
            if let Some((_, text)) = help.take().filter(|(f, _)| *f == family) {
                // OpenMetrics escapes `"` in help text; the classic format does not.
                let _ = writeln!(out, "# HELP {name} {}", text.replace("\\\"", "\""));
            }
            let _ = writeln!(out, "# TYPE {name} {kind}");
            created = format!("{family}_created");
            continue;
        }
        if line.starts_with('#') {
            // `# UNIT`, `# EOF`: nothing in the classic format.
            continue;
        }
        let sample = line.split(['{', ' ']).next().unwrap_or("");
        if sample == created {
            continue;
        }
        // An exemplar follows ` # ` after the value; the classic format has none.
        let at = value_start(line);
        let line = match line[at..].find(" # ") {
            Some(i) => &line[..at + i],
            None => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Where a sample line's value starts: after its name and its label set, whose quoted
/// values may hold anything (`}`, `#`, escaped quotes).
fn value_start(line: &str) -> usize {
    let Some(open) = line.find(['{', ' ']) else { return line.len() };
    if line.as_bytes()[open] == b' ' {
        return open;
    }
    let (mut quoted, mut escaped) = (false, false);
    for (i, b) in line.bytes().enumerate().skip(open + 1) {
        match b {
            _ if escaped => escaped = false,
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b'}' if !quoted => return i + 1,
            _ => {}
        }
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scraper_gets_openmetrics_only_when_it_prefers_it() {
        let om = Format::OpenMetrics;
        let classic = Format::Classic;
        for (accept, want) in [
            (None, classic),
            (Some(""), classic),
            (Some("*/*"), classic),
            (Some("text/plain"), classic),
            (Some("application/json"), classic),
            // Prometheus 2.x.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                     text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                ),
                om,
            ),
            // Prometheus 3.x.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.5,\
                     application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.3,\
                     text/plain;version=0.0.4;q=0.2,*/*;q=0.1",
                ),
                om,
            ),
            // Prometheus with `scrape_protocols: [PrometheusText0.0.4]`.
            (Some("text/plain;version=0.0.4;q=0.9,*/*;q=0.1"), classic),
            (Some("application/openmetrics-text"), om),
            (Some("Application/OpenMetrics-Text; Version=\"1.0.0\""), om),
            (Some("application/openmetrics-text; version=2.0.0"), classic),
            (Some("application/openmetrics-text;q=0"), classic),
            (Some("application/openmetrics-text;q=0.5, text/plain;q=0.5"), classic),
            (Some("text/plain;q=0.2, application/*;q=0.8"), om),
            (Some("text/*;q=0.9, application/openmetrics-text;q=0.3"), classic),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn openmetrics_becomes_classic_text() {
        let om = "# HELP telemesh_packets Datagrams received.\n\
                  # TYPE telemesh_packets counter\n\
                  telemesh_packets_total{dialect=\"iotstream\"} 3\n\
                  telemesh_packets_created{dialect=\"iotstream\"} 1700000000.5\n\
                  # HELP up_seconds Time \\\"up\\\".\n\
                  # TYPE up_seconds gauge\n\
                  # UNIT up_seconds seconds\n\
                  up_seconds 2.5\n\
                  # HELP telemesh_build Build.\n\
                  # TYPE telemesh_build info\n\
                  telemesh_build_info{version=\"0.1.0\"} 1\n\
                  # HELP t Times.\n\
                  # TYPE t histogram\n\
                  t_sum 1.5\n\
                  t_count 2\n\
                  t_bucket{le=\"1.0\",x=\"} # \\\"\"} 1 # {trace=\"a # b\"} 0.5\n\
                  t_bucket{le=\"+Inf\"} 2\n\
                  # EOF\n";
        let want = "# HELP telemesh_packets_total Datagrams received.\n\
                    # TYPE telemesh_packets_total counter\n\
                    telemesh_packets_total{dialect=\"iotstream\"} 3\n\
                    # HELP up_seconds Time \"up\".\n\
                    # TYPE up_seconds gauge\n\
                    up_seconds 2.5\n\
                    # HELP telemesh_build_info Build.\n\
                    # TYPE telemesh_build_info gauge\n\
                    telemesh_build_info{version=\"0.1.0\"} 1\n\
                    # HELP t Times.\n\
                    # TYPE t histogram\n\
                    t_sum 1.5\n\
                    t_count 2\n\
                    t_bucket{le=\"1.0\",x=\"} # \\\"\"} 1\n\
                    t_bucket{le=\"+Inf\"} 2\n";
        assert_eq!(to_classic(om), want);
    }
}
