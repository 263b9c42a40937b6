//! `/metrics` as Prometheus and Grafana read it: the classic text format by default and
//! OpenMetrics when asked, both parsed here by a parser written from the two formats'
//! rules (not the node's converter); `promtool check metrics` on the classic text when
//! promtool is installed; the metrics this node adds (process, build, store, flushes,
//! per-dialect stream events, devices, HTTP, peers); every metric the Grafana dashboard in
//! `docs/grafana/` queries, found in a running node's output; and, with Debian's
//! `prometheus` installed, a real Prometheus scraping a node, every dashboard query
//! answered.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use telemesh_node::{Config, Node};
use telemesh_proto::record::TimestampUnit;
use telemesh_proto::wire::iotstream;

const OPENMETRICS: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
                           text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One sample line: its name, its labels in the order written, its value.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// One metric family as a text exposition declares it.
#[derive(Debug, Clone, Default)]
struct Family {
    kind: String,
    help: Option<String>,
    samples: Vec<Sample>,
}

/// The sample names a family of `kind` named `family` may have, in either format.
fn sample_names(family: &str, kind: &str, openmetrics: bool) -> Vec<String> {
    let with = |suffixes: &[&str]| suffixes.iter().map(|s| format!("{family}{s}")).collect();
    match (kind, openmetrics) {
        ("counter", true) => with(&["_total", "_created"]),
        ("info", true) => with(&["_info"]),
        ("histogram", true) => with(&["_bucket", "_sum", "_count", "_created"]),
        ("histogram", false) => with(&["_bucket", "_sum", "_count"]),
        ("summary", _) => with(&["", "_sum", "_count"]),
        _ => with(&[""]),
    }
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

/// Reads `{a="x",b="y"} 1.5` (labels optional) after a sample's name.
fn parse_rest(rest: &str) -> Result<(Vec<(String, String)>, f64), String> {
    let mut labels = Vec::new();
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let (name, r) = rest.split_once("=\"").ok_or("a label without =\"")?;
            if !is_name(name, false) || name.starts_with("__") {
                return Err(format!("bad label name {name:?}"));
            }
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        Some((_, 'n')) => value.push('\n'),
                        other => return Err(format!("bad escape {other:?} in a label value")),
                    },
                    Some((i, '"')) => break i,
                    Some((_, '\n')) | None => return Err("an unterminated label value".into()),
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.iter().any(|(n, _): &(String, String)| n == name) {
                return Err(format!("label {name} twice"));
            }
            labels.push((name.to_owned(), value));
            rest = &r[end + 1..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value = rest.split(' ').next().unwrap_or("");
    if rest.contains(" # ") {
        return Err("an exemplar".into());
    }
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("value {v:?} is not a number"))?,
    };
    Ok((labels, value))
}

/// Parses a whole exposition in the classic format (0.0.4) or OpenMetrics 1.0, checking
/// what Prometheus and promtool rely on: every family has HELP and TYPE before its samples,
/// appears once and contiguously, names its samples as its type says, keeps one label
/// order; counters end in `_total` (classic) and only their samples do; histograms are
/// whole. OpenMetrics ends with `# EOF`; the classic text has no `# EOF`, `# UNIT` or
/// `_created` and no OpenMetrics-only type.
fn parse(text: &str, openmetrics: bool) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut done: BTreeSet<String> = BTreeSet::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut eof = false;
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for (n, line) in text.lines().enumerate() {
        let at = |m: String| format!("line {}: {m}: {line:?}", n + 1);
        if eof {
            return Err(at("something after # EOF".into()));
        }
        if line == "# EOF" {
            if !openmetrics {
                return Err(at("# EOF in the classic format".into()));
            }
            eof = true;
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').ok_or_else(|| at("HELP without text".into()))?;
            if help.trim().is_empty() {
                return Err(at("empty HELP".into()));
            }
            if helps.insert(name.to_owned(), help.to_owned()).is_some() {
                return Err(at("a second HELP".into()));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').ok_or_else(|| at("TYPE without a type".into()))?;
            let kinds: &[&str] = if openmetrics {
                &["counter", "gauge", "histogram", "gaugehistogram", "stateset", "info", "summary", "unknown"]
            } else {
                &["counter", "gauge", "histogram", "summary", "untyped"]
            };
            if !kinds.contains(&kind) || !is_name(name, true) {
                return Err(at("bad TYPE".into()));
            }
            if families.contains_key(name) {
                return Err(at("a family declared twice".into()));
            }
            if kind == "counter" && name.ends_with("_total") == openmetrics {
                let why = match openmetrics {
                    true => "an OpenMetrics counter family ends in _total",
                    false => "a counter not ending in _total",
                };
                return Err(at(why.into()));
            }
            if kind != "counter" && name.ends_with("_total") {
                return Err(at("a non-counter ending in _total".into()));
            }
            if let Some(c) = current.replace(name.to_owned()) {
                done.insert(c);
            }
            let family = Family { kind: kind.to_owned(), help: helps.get(name).cloned(), ..Family::default() };
            families.insert(name.to_owned(), family);
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            if !openmetrics {
                return Err(at("# UNIT in the classic format".into()));
            }
            let name = rest.split(' ').next().unwrap_or("");
            if current.as_deref() != Some(name) {
                return Err(at("UNIT of another family".into()));
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("an unexpected comment".into()));
        }
        let end = line.find(['{', ' ']).ok_or_else(|| at("a sample without a value".into()))?;
        let name = &line[..end];
        let (labels, value) = parse_rest(&line[end..]).map_err(at)?;
        let family_name = current.clone().ok_or_else(|| at("a sample before any TYPE (untyped)".into()))?;
        let family = families.get_mut(&family_name).ok_or_else(|| at("no family".into()))?;
        if !sample_names(&family_name, &family.kind, openmetrics).iter().any(|s| s == name) {
            return Err(at(format!("a sample that is not of family {family_name} ({})", family.kind)));
        }
        if done.contains(name) {
            return Err(at("a family's samples are not together".into()));
        }
        if let Some(first) = family.samples.iter().find(|s| s.name == name) {
            let order = |l: &[(String, String)]| l.iter().map(|(k, _)| k.clone()).filter(|k| k != "le").collect::<Vec<_>>();
            if order(&first.labels) != order(&labels) {
                return Err(at("labels in another order (or other labels) than the family's first sample".into()));
            }
            if family.samples.iter().any(|s| s.name == name && s.labels == labels) {
                return Err(at("a sample twice".into()));
            }
        }
        family.samples.push(Sample { name: name.to_owned(), labels, value });
    }
    if openmetrics && !eof {
        return Err("no # EOF".into());
    }
    for (name, f) in &families {
        if f.help.is_none() {
            return Err(format!("{name}: no HELP"));
        }
        if f.kind == "histogram" {
            check_histogram(name, f)?;
        }
    }
    if let Some(orphan) = helps.keys().find(|h| !families.contains_key(*h)) {
        return Err(format!("HELP for {orphan}, which has no TYPE"));
    }
    Ok(families)
}

/// Each series of a histogram: buckets in ascending `le` with non-decreasing counts, the
/// last `+Inf` and equal to `_count`.
fn check_histogram(name: &str, f: &Family) -> Result<(), String> {
    let key = |s: &Sample| s.labels.iter().filter(|(k, _)| k != "le").cloned().collect::<Vec<_>>();
    let series: BTreeSet<Vec<(String, String)>> = f.samples.iter().map(key).collect();
    for labels in series {
        let of = |suffix: &str| {
            f.samples.iter().filter(|s| s.name == format!("{name}{suffix}") && key(s) == labels).collect::<Vec<_>>()
        };
        let buckets = of("_bucket");
        let count = of("_count");
        let sum = of("_sum");
        if buckets.is_empty() || count.len() != 1 || sum.len() != 1 {
            return Err(format!("{name}{labels:?}: buckets, _sum and _count must all be there"));
        }
        let mut last = (f64::NEG_INFINITY, 0.0);
        for b in &buckets {
            let le = b.labels.iter().find(|(k, _)| k == "le").ok_or(format!("{name}: a bucket without le"))?;
            let le: f64 = match le.1.as_str() {
                "+Inf" => f64::INFINITY,
                v => v.parse().map_err(|_| format!("{name}: le {v:?}"))?,
            };
            if le <= last.0 || b.value < last.1 {
                return Err(format!("{name}{labels:?}: buckets out of order"));
            }
            last = (le, b.value);
        }
        if last.0 != f64::INFINITY || last.1 != count[0].value {
            return Err(format!("{name}{labels:?}: the +Inf bucket is missing or differs from _count"));
        }
    }
    Ok(())
}

/// Every sample name a classic exposition's families allow (a family with no sample yet
/// still names them).
fn known_names(classic: &BTreeMap<String, Family>) -> BTreeSet<String> {
    classic.iter().flat_map(|(name, f)| sample_names(name, &f.kind, false)).collect()
}

/// `GET /metrics` with `accept` (none: no header): content type and body.
fn scrape(node: &Node, accept: Option<&str>) -> (String, String) {
    let mut request = ureq::get(&format!("{}/metrics", node.url()));
    if let Some(a) = accept {
        request = request.set("Accept", a);
    }
    let response = request.call().expect("GET /metrics");
    let content_type = response.header("content-type").unwrap_or_default().to_owned();
    (content_type, response.into_string().expect("body"))
}

/// The value of the sample `name` with exactly `labels`.
fn value(families: &BTreeMap<String, Family>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families.values().flat_map(|f| &f.samples).find(|s| {
        s.name == name
            && s.labels.len() == labels.len()
            && labels.iter().all(|(k, v)| s.labels.iter().any(|(a, b)| a == k && b == v))
    })
    .map(|s| s.value)
}

fn classic(node: &Node) -> BTreeMap<String, Family> {
    let (content_type, text) = scrape(node, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    parse(&text, false).unwrap_or_else(|e| panic!("classic text: {e}\n{text}"))
}

/// Polls the classic text until `f` holds (15 s at most).
fn wait_for(node: &Node, what: &str, f: impl Fn(&BTreeMap<String, Family>) -> bool) -> BTreeMap<String, Family> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = classic(node);
        if f(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "waited in vain for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const T: u32 = 1_700_000_000;

fn data(device: u16, seq: u16, ts: u32) -> Vec<u8> {
    iotstream::Repr::new(iotstream::MsgType::Data, device, seq, ts, &[f32::from(seq)]).expect("valid").to_bytes()
}

fn init(device: u16, ts: u32) -> Vec<u8> {
    iotstream::Repr::new(iotstream::MsgType::Init, device, 0, ts, &[]).expect("valid").to_bytes()
}

/// Device 1001 in 25 datagrams: a duplicate, a gap of two half filled by a reordered
/// record, a gap of one filled late, a reboot, a conflict: 24 records.
fn traffic() -> Vec<Vec<u8>> {
    let mut d = vec![init(1001, T), data(1001, 1, T + 1), data(1001, 1, T + 1), data(1001, 4, T + 4), data(1001, 2, T + 2)];
    for seq in 6..=20u16 {
        d.push(data(1001, seq, T + u32::from(seq)));
    }
    d.push(data(1001, 5, T + 5)); // 15 behind: late
    d.push(init(1001, T + 100)); // reboot
    d.push(data(1001, 1, T + 101));
    d.push(data(1001, 2, T + 102));
    // Same identity, other reading: a conflict, kept.
    d.push(iotstream::Repr::new(iotstream::MsgType::Data, 1001, 2, T + 102, &[7.0]).expect("valid").to_bytes());
    d
}

fn node_config(dir: &Path) -> Config {
    // A short stream_idle, so devices go stale within the test.
    Config { stream_idle: Duration::from_secs(3), ..common::config(dir, TimestampUnit::S) }
}

#[test]
fn classic_text_by_default_openmetrics_when_asked_and_the_same_metrics_in_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(node_config(dir.path())).expect("node starts");
    let iot = node.iotstream.expect("iotstream listener");
    common::send(iot, &traffic());
    common::wait_received(&node, 25);
    // A first scrape, so both below hold the same series of /metrics' own HTTP counters.
    let _ = scrape(&node, None);

    let (content_type, classic_text) = scrape(&node, None);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let classic = parse(&classic_text, false).unwrap_or_else(|e| panic!("classic text: {e}\n{classic_text}"));
    for accept in ["*/*", "text/plain", "application/json", "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"] {
        assert_eq!(scrape(&node, Some(accept)).0, "text/plain; version=0.0.4; charset=utf-8", "{accept}");
    }
    let (content_type, om_text) = scrape(&node, Some(OPENMETRICS));
    assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
    let om = parse(&om_text, true).unwrap_or_else(|e| panic!("OpenMetrics text: {e}\n{om_text}"));
    // Each format read by the other's rules fails: they are not the same text.
    assert!(parse(&classic_text, true).is_err() && parse(&om_text, false).is_err());

    // The same families, types, help and series in both.
    let mut from_om = BTreeMap::new();
    for (name, f) in &om {
        let classic_name = match f.kind.as_str() {
            "counter" => format!("{name}_total"),
            "info" => format!("{name}_info"),
            _ => name.clone(),
        };
        from_om.insert(classic_name, f);
    }
    assert_eq!(from_om.keys().collect::<Vec<_>>(), classic.keys().collect::<Vec<_>>());
    for (name, f) in &classic {
        let o = from_om[name];
        assert_eq!((&f.kind, &f.help), (&o.kind, &o.help), "{name}");
        let series = |f: &Family| f.samples.iter().map(|s| (s.name.clone(), s.labels.clone())).collect::<BTreeSet<_>>();
        assert_eq!(series(f), series(o), "{name}");
    }
    assert!(classic.len() >= 60, "{} families", classic.len());

    // A running total is a counter: the store's corrupt values.
    assert_eq!(classic["telemesh_store_corrupt_values_total"].kind, "counter");
    assert!(!classic.contains_key("telemesh_store_corrupt_values"));
    node.stop().expect("clean stop");
}

#[test]
fn promtool_accepts_the_classic_text_and_refuses_a_bad_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(node_config(dir.path())).expect("node starts");
    common::send(node.iotstream.expect("iotstream"), &traffic());
    common::wait_received(&node, 25);
    let _ = ureq::get(&format!("{}/v1/streams/iotstream/1001/records", node.url())).call();
    let (_, text) = scrape(&node, None);
    node.stop().expect("clean stop");

    // The independent check, always: it passes the node's text and fails known-bad ones.
    parse(&text, false).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let bad = [
        ("# TYPE x_total counter\nx_total 1\n", "no HELP"),
        ("# HELP x A counter.\n# TYPE x counter\nx 1\n", "a counter not ending in _total"),
        ("# HELP x_total A counter.\n# TYPE x_total counter\nx_total 1\n# EOF\n", "# EOF in the classic format"),
        ("x_total 1\n", "untyped"),
        ("# HELP g A gauge.\n# TYPE g gauge\ng{a=\"1\",b=\"2\"} 1\ng{b=\"3\",a=\"4\"} 1\n", "another order"),
        (
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
            "buckets out of order",
        ),
    ];
    for (text, why) in bad {
        let err = parse(text, false).expect_err(why);
        assert!(err.contains(why), "{why}: {err}");
    }

    match Command::new("promtool").arg("--version").output() {
        Err(e) => note(&format!(
            "promtool is not installed ({e}): `promtool check metrics` cannot run here; only this test's own \
             parser checked the text. `apt-get install prometheus` provides promtool (.ci/run installs it)."
        )),
        Ok(_) => {
            let (code, out) = promtool(&["check", "metrics"], &text);
            eprintln!("promtool check metrics: exit {code}\n{out}");
            assert_eq!(code, 0, "promtool check metrics refused the classic text:\n{out}");
            // It can fail: a counter without HELP, and OpenMetrics' counter naming.
            assert_ne!(promtool(&["check", "metrics"], "# TYPE x_total counter\nx_total 1\n").0, 0);
            assert_ne!(promtool(&["check", "metrics"], "# HELP x X.\n# TYPE x counter\nx_total 1\n").0, 0);
        }
    }
}

/// Says what a test could not check, on stderr even when the test harness captures output.
fn note(what: &str) {
    let _ = writeln!(std::io::stderr(), "NOTE (node/tests/metrics.rs): {what}");
}

/// Runs promtool with `input` on stdin: exit code and everything it printed.
fn promtool(args: &[&str], input: &str) -> (i32, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write");
    let out = child.wait_with_output().expect("promtool ends");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn the_added_metrics_count_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(node_config(dir.path())).expect("node starts");
    let iot = node.iotstream.expect("iotstream");
    common::send(iot, &traffic());
    common::wait_received(&node, 25);
    let _ = ureq::get(&format!("{}/v1/streams/iotstream/1001/records", node.url())).call().expect("records");
    let nope = ureq::get(&format!("{}/no/such/path", node.url())).call();
    assert!(matches!(nope, Err(ureq::Error::Status(404, _))));

    let m = classic(&node);
    let d = [("dialect", "iotstream")];
    // Gaps 1→4 and 4→6 skipped 3 numbers; 2 came reordered (within the reorder window), 5
    // late (15 behind), 3 never; one reboot.
    assert_eq!(value(&m, "telemesh_stream_gaps_total", &d), Some(2.0));
    assert_eq!(value(&m, "telemesh_stream_skipped_total", &d), Some(3.0));
    assert_eq!(value(&m, "telemesh_stream_reordered_total", &d), Some(1.0));
    assert_eq!(value(&m, "telemesh_stream_late_total", &d), Some(1.0));
    assert_eq!(value(&m, "telemesh_stream_reboots_total", &d), Some(1.0));
    assert_eq!(value(&m, "telemesh_records_total", &[("dialect", "iotstream"), ("outcome", "duplicate")]), Some(1.0));
    assert_eq!(value(&m, "telemesh_records_total", &[("dialect", "iotstream"), ("outcome", "conflict")]), Some(1.0));
    assert_eq!(value(&m, "telemesh_stream_gaps_total", &[("dialect", "tinytelemetry")]), Some(0.0));

    // HTTP requests by route template and status; nothing per path or device.
    let route = "/v1/streams/{dialect}/{device}/records";
    let requests = |route, code| {
        value(&m, "telemesh_http_requests_total", &[("route", route), ("method", "GET"), ("code", code)])
    };
    assert_eq!(requests(route, "200"), Some(1.0));
    assert_eq!(requests("unmatched", "404"), Some(1.0));
    let timed = [("route", route), ("method", "GET"), ("code", "200")];
    assert_eq!(value(&m, "telemesh_http_request_duration_seconds_count", &timed), Some(1.0));
    for s in m.values().flat_map(|f| &f.samples) {
        assert!(!s.labels.iter().any(|(k, v)| k == "device" || v.contains("1001")), "a per-device label: {s:?}");
    }

    // The process and the build.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64();
    assert!(value(&m, "process_cpu_seconds_total", &[]).expect("cpu") > 0.0);
    assert!(value(&m, "process_resident_memory_bytes", &[]).expect("rss") > 1e6);
    let (fds, max) = (value(&m, "process_open_fds", &[]).expect("fds"), value(&m, "process_max_fds", &[]).expect("max fds"));
    assert!(fds > 3.0 && fds < max, "{fds} of {max}");
    let start = value(&m, "process_start_time_seconds", &[]).expect("start");
    assert!(start <= now + 1.0 && now - start < 3600.0, "started at {start}, now {now}");
    assert_eq!(value(&m, "telemesh_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));

    // The store: on disk, flushes; then, the stream silent for stream_idle (3 s), it leaves
    // memory, its windows are sealed: 24 records in sealed windows.
    assert!(value(&m, "telemesh_store_disk_bytes", &[("part", "sled")]).expect("sled") > 0.0);
    assert!(value(&m, "telemesh_flush_seconds_count", &[]).expect("flushes") > 0.0);
    assert_eq!(value(&m, "telemesh_flush_failures_total", &[]), Some(0.0));
    for dialect in ["iotstream", "tinytelemetry", "secure"] {
        assert_eq!(value(&m, "telemesh_udp_socket_drops_total", &[("dialect", dialect)]), Some(0.0), "{dialect}");
    }
    assert!(value(&m, "telemesh_udp_rcvbuf_errors_total", &[]).is_some());
    let m = wait_for(&node, "24 records sealed", |m| value(m, "telemesh_store_records", &[]) == Some(24.0));
    assert!(value(&m, "telemesh_store_disk_bytes", &[("part", "sealed")]).expect("sealed") > 0.0);
    assert_eq!(value(&m, "telemesh_store_pending_records", &[]), Some(0.0));
    assert_eq!(value(&m, "telemesh_devices", &d), Some(1.0));
    assert_eq!(value(&m, "telemesh_devices_stale", &d), Some(1.0), "silent for more than stream_idle (3 s)");

    // A second device, heard now, is not stale; then it is.
    common::send(iot, &[data(1002, 1, T)]);
    let m = wait_for(&node, "device 1002", |m| value(m, "telemesh_devices", &d) == Some(2.0));
    assert_eq!(value(&m, "telemesh_devices_stale", &d), Some(1.0));
    wait_for(&node, "device 1002 stale", |m| value(m, "telemesh_devices_stale", &d) == Some(2.0));
    node.stop().expect("clean stop");

    // Devices heard before a restart still count, as stale.
    let node = Node::start(node_config(dir.path())).expect("node restarts");
    let m = wait_for(&node, "devices after restart", |m| value(m, "telemesh_devices", &d) == Some(2.0));
    assert_eq!(value(&m, "telemesh_devices_stale", &d), Some(2.0));
    assert_eq!(value(&m, "telemesh_store_records", &[]), Some(25.0));
    node.stop().expect("clean stop");
}

#[test]
fn peers_joining_and_leaving_are_counted() {
    let (da, db) = (tempfile::tempdir().expect("tempdir"), tempfile::tempdir().expect("tempdir"));
    let a = Node::start(common::mesh::config(da.path(), None, "metrics")).expect("a starts");
    let b = Node::start(common::mesh::config(db.path(), Some(&a), "metrics")).expect("b starts");
    common::mesh::wait_full_mesh(&[&a, &b]);
    for n in [&a, &b] {
        let m = classic(n);
        assert_eq!(value(&m, "telemesh_mesh_peer_joins_total", &[]), Some(1.0));
        assert_eq!(value(&m, "telemesh_mesh_peer_leaves_total", &[]), Some(0.0));
    }
    b.stop().expect("b stops");
    let m = wait_for(&a, "b to leave", |m| value(m, "telemesh_mesh_peer_leaves_total", &[]) == Some(1.0));
    assert_eq!(value(&m, "telemesh_mesh_peer_joins_total", &[]), Some(1.0));
    a.stop().expect("a stops");
}

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/grafana/telemesh.json")
}

/// Every PromQL expression of a Grafana dashboard: its panels' (and rows' panels') targets
/// and its query variables.
fn expressions(dashboard: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                let variable = m.get("type").and_then(|t| t.as_str()) == Some("query");
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("expr", serde_json::Value::String(e)) => out.push(e.clone()),
                        // A query variable: `label_values(metric{…}, label)`, or an object with `query`.
                        ("query", serde_json::Value::String(q)) if variable => {
                            out.push(q.clone());
                        }
                        ("query", serde_json::Value::Object(q)) => {
                            if let Some(serde_json::Value::String(q)) = q.get("query") {
                                out.push(q.clone());
                            }
                        }
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, &mut out);
    out
}

/// The metric names a PromQL expression (or a Grafana `label_values(…)` query) selects:
/// identifiers that are not functions or aggregations (followed by `(`), keywords, label
/// names (inside `{…}`, `by (…)`, `on (…)` …), strings, durations, numbers or Grafana
/// variables (`$__rate_interval`, `${x}`).
fn metric_names(expr: &str) -> Vec<String> {
    // Grafana's `label_values(metric, label)`: the last argument is a label (the only one,
    // in `label_values(label)`).
    let expr = match expr.trim().strip_prefix("label_values(").and_then(|e| e.strip_suffix(')')) {
        Some(args) => args.rsplit_once(',').map_or("", |(selector, _)| selector),
        None => expr,
    };
    const KEYWORDS: [&str; 22] = [
        "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2", // operators, modifiers, numbers
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
        "quantile", "limitk", "limit_ratio", // aggregations, which may have `by (…)` before their `(`
    ];
    const GROUPING: [&str; 6] = ["by", "without", "on", "ignoring", "group_left", "group_right"];
    let b = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_to = |i: usize, close: u8| -> usize {
        let mut j = i + 1;
        let mut quote: Option<u8> = None;
        while j < b.len() {
            match (quote, b[j]) {
                (Some(_), b'\\') => j += 1,
                (Some(q), c) if c == q => quote = None,
                (None, c @ (b'"' | b'\'' | b'`')) => quote = Some(c),
                (None, c) if c == close => return j + 1,
                _ => {}
            }
            j += 1;
        }
        j
    };
    while i < b.len() {
        let c = b[i];
        match c {
            b'"' | b'\'' | b'`' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != c {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                i = j + 1;
            }
            b'{' => i = skip_to(i, b'}'),
            b'[' => i = skip_to(i, b']'),
            b'$' => {
                i += 1;
                if b.get(i) == Some(&b'{') {
                    i = skip_to(i, b'}');
                } else {
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                }
            }
            c if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit)) => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'+' || b[i] == b'-') {
                    let sign = b[i] == b'+' || b[i] == b'-';
                    if sign && !matches!(b[i - 1], b'e' | b'E') {
                        break;
                    }
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {
                let start = i;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                    i += 1;
                }
                let word = &expr[start..i];
                let mut j = i;
                while j < b.len() && b[j].is_ascii_whitespace() {
                    j += 1;
                }
                let call = b.get(j) == Some(&b'(');
                if GROUPING.contains(&word.to_ascii_lowercase().as_str()) {
                    if call {
                        i = skip_to(j, b')');
                    }
                } else if !call && !KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                    out.push(word.to_owned());
                }
            }
            _ => i += 1,
        }
    }
    out
}

#[test]
fn promql_metric_names_are_found_and_everything_else_left_out() {
    let expr = "histogram_quantile(0.99, sum by (route, le) (rate(telemesh_http_request_duration_seconds_bucket\
                {instance=~\"$instance\", route!=\"unmatched\"}[$__rate_interval]))) > 1e-3 \
                and on (instance) group_left(version) telemesh_build_info offset 5m or vector(0) / ${x} \
                - sum without(le) (foo:bar_total) * -.5e+2";
    let want = ["telemesh_http_request_duration_seconds_bucket", "telemesh_build_info", "foo:bar_total"];
    assert_eq!(metric_names(expr), want);
    assert_eq!(metric_names("label_values(telemesh_build_info{job=~\"$job\"}, instance)"), ["telemesh_build_info"]);
    assert!(metric_names("label_values(instance)").is_empty());
    assert_eq!(metric_names("time() - process_start_time_seconds"), ["process_start_time_seconds"]);
}

#[test]
fn every_metric_the_grafana_dashboard_queries_is_served() {
    let text = std::fs::read_to_string(dashboard_path()).expect("docs/grafana/telemesh.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let exprs = expressions(&dashboard);
    assert!(exprs.len() >= 20, "only {} expressions", exprs.len());

    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(node_config(dir.path())).expect("node starts");
    let m = classic(&node);
    node.stop().expect("clean stop");
    let known = known_names(&m);

    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for e in &exprs {
        let names = metric_names(e);
        if names.is_empty() {
            missing.push(format!("{e}: names no metric"));
        }
        for n in names {
            if !known.contains(&n) {
                missing.push(format!("{n} (in {e})"));
            }
            used.insert(n);
        }
    }
    assert!(missing.is_empty(), "the dashboard queries metrics a node does not serve:\n{}", missing.join("\n"));
    // The list: each is on the dashboard.
    for name in [
        "telemesh_packets_total",
        "telemesh_drops_total",
        "telemesh_udp_socket_drops_total",
        "telemesh_records_total",
        "telemesh_stream_gaps_total",
        "telemesh_stream_reboots_total",
        "telemesh_store_disk_bytes",
        "telemesh_flush_seconds_bucket",
        "telemesh_mesh_bytes_total",
        "telemesh_mesh_peers",
        "telemesh_http_request_duration_seconds_bucket",
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
    ] {
        assert!(used.contains(name), "the dashboard does not show {name}");
    }

    // Every panel reads the dashboard's Prometheus data source variable.
    let mut panels = Vec::new();
    fn collect<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in v["panels"].as_array().into_iter().flatten() {
            out.push(p);
            collect(p, out);
        }
    }
    collect(&dashboard, &mut panels);
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert_eq!(p["datasource"]["uid"], "${datasource}", "panel {}", p["title"]);
        assert!(p["targets"].as_array().is_some_and(|t| !t.is_empty()), "panel {} has no query", p["title"]);
    }

    // With promtool, every expression is also valid PromQL (Grafana's interval variables
    // given a value), as recording rules.
    if Command::new("promtool").arg("--version").output().is_err() {
        note("promtool is not installed: the dashboard's PromQL is not checked (apt-get install prometheus).");
        return;
    }
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().filter(|e| !e.starts_with("label_values(")).enumerate() {
        let e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h");
        let quoted = serde_json::to_string(&e).expect("json");
        rules.push_str(&format!("      - record: dashboard_expr_{i}\n        expr: {quoted}\n"));
    }
    let file = dir.path().join("dashboard-rules.yaml");
    std::fs::write(&file, &rules).expect("write rules");
    let (code, out) = promtool(&["check", "rules", file.to_str().expect("utf-8 path")], "");
    assert_eq!(code, 0, "promtool check rules:\n{out}\n{rules}");
}

/// A Prometheus server (Debian's `prometheus`) scraping `target` every second, on a port of
/// its own, stopped (by its pid) when dropped.
struct Prometheus {
    child: std::process::Child,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr) -> Option<Prometheus> {
        let config = dir.join("prometheus.yml");
        let yaml = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
             scrape_configs:\n  - job_name: telemesh\n    static_configs: [{{targets: [\"{target}\"]}}]\n"
        );
        std::fs::write(&config, yaml).expect("write prometheus.yml");
        let listen = format!("127.0.0.1:{}", common::free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={listen}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        Some(Prometheus { child, url: format!("http://{listen}") })
    }

    /// An instant query's result (`data.result`); `Err` with Prometheus' error.
    fn query(&self, q: &str) -> Result<Vec<serde_json::Value>, String> {
        let response = ureq::get(&format!("{}/api/v1/query", self.url)).query("query", q).call();
        let body = match response {
            Ok(r) => r.into_string().map_err(|e| e.to_string())?,
            Err(ureq::Error::Status(_, r)) => r.into_string().map_err(|e| e.to_string())?,
            Err(e) => return Err(e.to_string()),
        };
        let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn prometheus_scrapes_a_node_and_every_dashboard_query_answers() {
    if Command::new("prometheus").arg("--version").output().is_err() {
        note("no prometheus server installed: none scrapes a node here (apt-get install prometheus).");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let node = Node::start(node_config(dir.path())).expect("node starts");
    common::send(node.iotstream.expect("iotstream"), &traffic());
    let prometheus = Prometheus::start(dir.path(), node.http).expect("prometheus starts");
    // Up, and scraped for long enough that rates over 10 s have two samples.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let up = prometheus.query("count_over_time(up{job=\"telemesh\"}[1m]) >= 4 and up{job=\"telemesh\"} == 1");
        if up.is_ok_and(|r| r.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not scrape the node");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Prometheus read the types: a counter is a counter.
    let metadata = ureq::get(&format!("{}/api/v1/metadata", prometheus.url)).call().expect("metadata");
    let metadata: serde_json::Value = serde_json::from_str(&metadata.into_string().expect("body")).expect("json");
    assert_eq!(metadata["data"]["telemesh_packets"][0]["type"], "counter", "{metadata}");
    assert_eq!(metadata["data"]["telemesh_store_corrupt_values"][0]["type"], "counter", "{metadata}");
    assert_eq!(metadata["data"]["process_resident_memory_bytes"][0]["type"], "gauge", "{metadata}");
    let received = prometheus.query("sum(telemesh_packets_total{dialect=\"iotstream\"})").expect("query");
    assert_eq!(received[0]["value"][1], "25", "{received:?}");

    let text = std::fs::read_to_string(dashboard_path()).expect("docs/grafana/telemesh.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("json");
    let mut failed = Vec::new();
    for e in expressions(&dashboard).iter().filter(|e| !e.starts_with("label_values(")) {
        let q = e.replace("$__rate_interval", "10s").replace("$job", ".*").replace("$instance", ".*");
        match prometheus.query(&q) {
            // A query filtered by `> 0` may rightly be empty; every other has a series.
            Ok(r) if r.is_empty() && !q.contains("> 0") => failed.push(format!("{q}: no series")),
            Ok(_) => {}
            Err(e) => failed.push(format!("{q}: {e}")),
        }
    }
    assert!(failed.is_empty(), "dashboard queries that failed on a real Prometheus:\n{}", failed.join("\n"));
    drop(prometheus);
    node.stop().expect("clean stop");
}
