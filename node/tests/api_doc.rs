//! `docs/api.md` run against a two-node closed mesh: every endpoint's JSON example has the
//! fields the endpoint answers with (no more, no fewer, of the same types), the CSV, live
//! tail and CLI examples have the shape the node prints, and every flag of the CLI synopsis
//! exists. The aggregate and align examples are run value for value in `aggregate.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::time::{Duration, Instant};

use common::mesh::{config, now_ms, peer_id, wait_full_mesh};
use serde_json::Value;
use telemesh_node::Node;
use telemesh_proto::wire::iotstream::{MsgType, Repr};

const DOC: &str = include_str!("../../docs/api.md");

/// The code blocks under a heading (`## ` or `### `) that starts with `heading`, up to the
/// next heading of either level: `(language, body)`.
fn blocks(heading: &str) -> Vec<(&'static str, &'static str)> {
    let start = DOC
        .match_indices("\n#")
        .map(|(i, _)| i + 1)
        .find(|&i| DOC[i..].trim_start_matches('#').trim_start().starts_with(heading))
        .unwrap_or_else(|| panic!("docs/api.md has no heading {heading}"));
    let body = &DOC[start..];
    let body = body.split_once('\n').map_or("", |(_, rest)| rest);
    let section = body.split("\n## ").next().unwrap_or(body).split("\n### ").next().unwrap_or(body);
    let blocks: Vec<(&str, &str)> = section
        .split("```")
        .skip(1)
        .step_by(2)
        .map(|b| {
            let (lang, body) = b.split_once('\n').unwrap_or((b, ""));
            (lang.trim(), body.trim_end())
        })
        .collect();
    assert!(!blocks.is_empty(), "no example under {heading}");
    blocks
}

/// The `n`th JSON example under `heading`; a fragment (`"key": …,` lines) is read as the
/// object it belongs in.
fn json(heading: &str, n: usize) -> Value {
    let (_, body) = blocks(heading).into_iter().filter(|(lang, _)| *lang == "json").nth(n).expect("a json block");
    let text = body.trim();
    let text = if text.starts_with('{') || text.starts_with('[') {
        text.to_owned()
    } else {
        format!("{{ {} }}", text.trim_end_matches(','))
    };
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("the JSON example under {heading} does not parse: {e}\n{text}"))
}

/// Where `got` differs in shape from the documented `doc`: a field documented and not
/// answered or answered and not documented (a `"…"` field in `doc` stands for more), a
/// value of another type (`null` matches anything: documented values may be absent and
/// answered ones may be filled), array elements each of the documented first's shape.
fn shape(doc: &Value, got: &Value, at: &str, problems: &mut Vec<String>) {
    match (doc, got) {
        (Value::Null, _) | (_, Value::Null) => {}
        (Value::Object(d), Value::Object(g)) => {
            let open = d.contains_key("…");
            for key in d.keys().filter(|k| *k != "…") {
                match g.get(key) {
                    Some(v) => shape(&d[key], v, &format!("{at}.{key}"), problems),
                    None => problems.push(format!("{at}.{key}: documented, not in the answer")),
                }
            }
            if !open {
                for key in g.keys().filter(|k| !d.contains_key(*k)) {
                    problems.push(format!("{at}.{key}: in the answer, not documented"));
                }
            }
        }
        (Value::Array(d), Value::Array(g)) => {
            if let Some(first) = d.first() {
                for (i, v) in g.iter().enumerate() {
                    shape(first, v, &format!("{at}[{i}]"), problems);
                }
            }
        }
        (Value::Bool(_), Value::Bool(_)) | (Value::Number(_), Value::Number(_)) | (Value::String(_), Value::String(_)) => {}
        _ => problems.push(format!("{at}: documented as {doc}, answered {got}")),
    }
}

fn assert_shape(heading: &str, doc: &Value, got: &Value) {
    let mut problems = Vec::new();
    shape(doc, got, "", &mut problems);
    assert!(problems.is_empty(), "docs/api.md, {heading}, against the node's answer:\n{}\nanswer: {got}", problems.join("\n"));
}

fn get(node: &Node, target: &str) -> Value {
    common::get_json(&format!("{}{target}", node.url()))
}

fn run(args: &[&str]) -> String {
    let out = Command::new(common::BIN).args(args).output().expect("runs");
    assert!(out.status.success(), "telemesh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Ten records a second apart, with five readings, starting `start` ms.
fn datagrams(device: u16, start: u64) -> Vec<Vec<u8>> {
    (0..10u16)
        .map(|i| {
            let t = (start + u64::from(i) * 1000) as u32;
            Repr::new(MsgType::Data, device, i, t, &[29.37, 23.53, 22.61, 22.04, f32::from(i)]).expect("valid").to_bytes()
        })
        .collect()
}

#[test]
fn every_example_of_the_api_document_has_the_shape_the_node_answers_with() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let a = Node::start(config(dirs[0].path(), None, "docs")).expect("a starts");
    let b = Node::start(config(dirs[1].path(), Some(&a), "docs")).expect("b starts");
    wait_full_mesh(&[&a, &b]);
    // Device 1001 heard at both sites, 7001 at A only, a minute ago, a second into a
    // minute: one window each, sealed once the streams are quiet, 7001's repaired to B.
    let start = (now_ms() - 70_000) / 60_000 * 60_000 + 1_000;
    for node in [&a, &b] {
        common::send(node.iotstream.expect("on"), &datagrams(1001, start));
    }
    common::send(a.iotstream.expect("on"), &datagrams(7001, start));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&b, "/v1/devices")["devices"].as_array().map(|d| d.iter().map(|d| d["records"].clone()).collect())
        != Some(vec![Value::from(10), Value::from(10)])
    {
        assert!(Instant::now() < deadline, "B does not list both devices sealed");
        std::thread::sleep(Duration::from_millis(250));
    }
    // Provenance tables reach B after the windows: wait for both sites on 1001's records.
    let records = "/v1/streams/iotstream/1001/records";
    while get(&b, records)["records"][0]["heard_by"].as_array().map(Vec::len) != Some(2) {
        assert!(Instant::now() < deadline, "B does not say both sites heard 1001");
        std::thread::sleep(Duration::from_millis(250));
    }

    let answers = [
        ("`GET /v1/status`", get(&b, "/v1/status")),
        ("`GET /v1/mesh/members`", get(&a, "/v1/mesh/members")),
        ("`GET /v1/peers`", get(&b, "/v1/peers")),
        ("`GET /v1/windows`", get(&b, "/v1/windows")),
        ("`GET /v1/streams`", get(&b, "/v1/streams")),
        ("`GET /v1/devices`", get(&b, "/v1/devices")),
        ("`GET /v1/streams/{dialect}/{device}/records`", get(&b, records)),
        ("`GET /v1/records?devices=…`", get(&b, "/v1/records?devices=iotstream:1001,iotstream:7001&limit=11")),
        ("CloudEvents", get(&b, &format!("{records}?format=cloudevents"))),
    ];
    for (heading, answer) in &answers {
        assert_shape(heading, &json(heading, 0), answer);
    }
    // The dashboard's two: a coverage's `heard` is keyed by the sites' ids, which differ.
    let mut documented = json("`GET /v1/coverage`", 0);
    documented["devices"][0]["heard"] = Value::Null;
    let coverage = get(&b, "/v1/coverage?from=0");
    assert_shape("`GET /v1/coverage`", &documented, &coverage);
    assert_eq!(coverage["devices"][0]["heard"].as_object().map(|h| h.len()), Some(2), "both sites heard 1001: {coverage}");
    assert_shape("`GET /v1/summary`", &json("`GET /v1/summary`", 0), &get(&b, "/v1/summary"));
    let invite = ureq::post(&format!("{}/v1/mesh/invites?expires=1h", a.url())).call().expect("POST");
    let invite: Value = serde_json::from_str(&telemesh_node::api::client::body(invite).expect("body")).expect("json");
    assert_shape("`POST /v1/mesh/invites", &json("`POST /v1/mesh/invites", 0), &invite);

    // The local view's fields, added to the merged view's.
    let heading = "`GET /v1/streams/{dialect}/{device}/records`";
    let mut local_doc = json(heading, 0);
    let added = json(heading, 1);
    let record = local_doc["records"][0].as_object_mut().expect("a record");
    record.extend(added.as_object().expect("fields").clone());
    assert_shape("the local view", &local_doc, &get(&b, &format!("{records}?view=local")));

    // Proof: the fragment is the page's `proof` field.
    let proved = get(&b, &format!("{records}?proof=true"));
    assert_shape("`proof=true`", &json("With proof", 0), &serde_json::json!({ "proof": proved["proof"] }));

    // CSV: the documented header exactly (device 1001's five readings), and rows as wide.
    let csv_blocks: Vec<&str> = blocks(heading).into_iter().filter(|(lang, _)| lang.is_empty()).map(|(_, b)| b).collect();
    let (merged_csv, local_csv) = (csv_blocks[0], csv_blocks[1]);
    let header = merged_csv.lines().next().expect("a header");
    let width = |line: &str| csv::ReaderBuilder::new().has_headers(false).from_reader(line.as_bytes()).records().next()
        .expect("a row").expect("csv").len();
    for (view, example) in [("merged", merged_csv.lines().nth(1).expect("a row")), ("local", local_csv.lines().next().expect("a row"))] {
        let answer = common::get_text(&format!("{}{records}?format=csv&view={view}", b.url()));
        let mut lines = answer.lines();
        assert_eq!(lines.next(), Some(header), "the CSV header of docs/api.md");
        let row = lines.next().expect("a row");
        assert_eq!((width(example), width(row)), (width(header), width(header)), "{view} CSV: documented {example}, answered {row}");
    }

    // The live tail: an event of the documented lines, its data a record as documented.
    let tail = ureq::get(&format!("{}{records}?follow=true&from=0", b.url())).call().expect("tail");
    let mut event = Vec::new();
    for line in BufReader::new(tail.into_reader()).lines() {
        let line = line.expect("a line");
        if line.is_empty() {
            break;
        }
        event.push(line);
    }
    let (_, documented) = blocks("Live tail")[0];
    let fields = |lines: &mut dyn Iterator<Item = &str>| -> Vec<String> {
        lines.map(|l| l.split_once(": ").map_or(l, |(name, _)| name).to_owned()).collect()
    };
    assert_eq!(fields(&mut documented.lines()), fields(&mut event.iter().map(String::as_str)), "{event:?}");
    let data: Value = serde_json::from_str(event[2].trim_start_matches("data: ")).expect("json");
    assert_shape("the live tail's data", &json(heading, 0)["records"][0], &data);

    // The CLI's tables start with the documented header lines.
    let node = b.url();
    let cli = blocks("CLI");
    let table_headers: Vec<&str> =
        cli.iter().filter_map(|(_, b)| b.lines().next()).filter(|l| l.starts_with("device ")).collect();
    assert_eq!(table_headers.len(), 2, "the query and devices tables");
    assert_eq!(run(&["query", "--node", &node, "iotstream", "1001"]).lines().next(), Some(table_headers[0]));
    assert_eq!(run(&["devices", "--node", &node]).lines().next(), Some(table_headers[1]));

    // Every flag of the synopsis is one the command takes.
    for line in cli[0].1.lines() {
        let words: Vec<&str> = line.split_whitespace().skip(1).take_while(|w| w.chars().all(|c| c.is_ascii_lowercase())).collect();
        let help = run(&[words.as_slice(), &["--help"]].concat());
        for flag in line.split(|c: char| c.is_whitespace() || "[]|".contains(c)).filter(|w| w.starts_with("--")) {
            assert!(help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")), "telemesh {words:?} has no {flag}:\n{help}");
        }
    }

    // Every metric of the tables is served (a family without samples yet by its TYPE line,
    // which names `x_total` in the classic format and `x` in OpenMetrics).
    let metrics = common::get_text(&format!("{}/metrics", b.url()));
    let section = DOC.split("\n## `GET /metrics`").nth(1).expect("a metrics section").split("\n## ").next().expect("text");
    let documented: Vec<&str> =
        section.lines().filter_map(|l| l.strip_prefix("| `")?.split('`').next()).filter(|n| n.starts_with("telemesh_")).collect();
    assert!(documented.len() > 30, "{documented:?}");
    for name in documented {
        let family = name.strip_suffix("_total").unwrap_or(name);
        let served = metrics.lines().any(|l| {
            l.strip_prefix(name).is_some_and(|rest| ["{", " ", "_bucket", "_count"].iter().any(|s| rest.starts_with(s)))
                || l.strip_prefix("# TYPE ").is_some_and(|t| t.split(' ').next().is_some_and(|n| n == family || n == name))
        });
        assert!(served, "docs/api.md lists {name}, /metrics has no such family");
    }

    // Last, as it takes B out of the mesh.
    let removed = ureq::delete(&format!("{}/v1/mesh/members/{}", a.url(), peer_id(&b))).call().expect("DELETE");
    let removed: Value = serde_json::from_str(&telemesh_node::api::client::body(removed).expect("body")).expect("json");
    assert_shape("`DELETE /v1/mesh/members/{peer}`", &json("`DELETE /v1/mesh/members", 0), &removed);
}
