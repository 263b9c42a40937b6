//! The testnet's verdict, computed from what the nodes answered and the sensors' ground
//! truth, without I/O: does every node return the same merged history, holding exactly
//! the records some site received, each with the right `heard_by`?

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

/// A record's identity across nodes and the truth log: (device, wire seq, wire timestamp).
pub type Key = (u16, u32, u32);

/// What one node answered.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    /// The node's name (`a`, `b`, …).
    pub name: String,
    /// Its peer id, as `heard_by` names it.
    pub peer_id: String,
    /// The records it received itself (its local view).
    pub local: BTreeSet<Key>,
    /// Its merged history: each record's `heard_by`.
    pub merged: BTreeMap<Key, Vec<String>>,
    /// The merged-view response bodies, per device, as sent (compared byte for byte).
    pub merged_bodies: BTreeMap<u16, String>,
}

/// One node's line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCounts {
    /// Records it received directly.
    pub received: usize,
    /// Records in its merged history.
    pub merged: usize,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Per node, in the views' order.
    pub nodes: Vec<NodeCounts>,
    /// Records the sensors sent (ground truth).
    pub sent: usize,
    /// Records at least one site received.
    pub heard: usize,
    /// Records in every node's merged history.
    pub in_every: usize,
    /// Records no site received.
    pub lost_everywhere: usize,
    /// Everything wrong, one line each; empty = converged and complete.
    pub problems: Vec<String>,
}

/// The keys of records in a records response (`records[]`, with `device`, `seq`,
/// `timestamp` and, in the merged view, `heard_by`).
pub fn parse_records(body: &str) -> anyhow::Result<Vec<(Key, Vec<String>)>> {
    let v: serde_json::Value = serde_json::from_str(body)?;
    anyhow::ensure!(v["next_from"].is_null(), "more records than one page holds");
    let mut out = Vec::new();
    for r in v["records"].as_array().context("no records array")? {
        let field = |name: &str| r[name].as_u64().with_context(|| format!("record without {name}"));
        let key = (u16::try_from(field("device")?)?, u32::try_from(field("seq")?)?, u32::try_from(field("timestamp")?)?);
        let heard_by = r["heard_by"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        out.push((key, heard_by));
    }
    Ok(out)
}

/// At most this many examples per kind of problem.
const EXAMPLES: usize = 3;

fn examples(keys: impl IntoIterator<Item = Key>) -> String {
    let keys: Vec<Key> = keys.into_iter().collect();
    let mut shown: Vec<String> =
        keys.iter().take(EXAMPLES).map(|(d, s, t)| format!("device {d} seq {s} timestamp {t}")).collect();
    if keys.len() > EXAMPLES {
        shown.push("…".to_owned());
    }
    shown.join(", ")
}

/// Compares the nodes' answers with each other and with the ground truth.
pub fn check(truth: &BTreeSet<Key>, views: &[NodeView]) -> Verdict {
    let mut problems = Vec::new();
    let heard: BTreeSet<Key> = views.iter().flat_map(|v| v.local.iter().copied()).collect();
    let mut in_every: Option<BTreeSet<Key>> = None;

    for view in views {
        let merged: BTreeSet<Key> = view.merged.keys().copied().collect();
        in_every = Some(match in_every {
            None => merged.clone(),
            Some(set) => set.intersection(&merged).copied().collect(),
        });
        let lacking: Vec<Key> = heard.difference(&merged).copied().collect();
        if !lacking.is_empty() {
            problems.push(format!(
                "node {} lacks {} record(s) a site received: {}",
                view.name,
                lacking.len(),
                examples(lacking)
            ));
        }
        let invented: Vec<Key> = merged.difference(&heard).copied().collect();
        if !invented.is_empty() {
            problems.push(format!(
                "node {} has {} record(s) no site received: {}",
                view.name,
                invented.len(),
                examples(invented)
            ));
        }
        let unsent: Vec<Key> = view.local.difference(truth).copied().collect();
        if !unsent.is_empty() {
            problems.push(format!(
                "site {} received {} record(s) no sensor sent: {}",
                view.name,
                unsent.len(),
                examples(unsent)
            ));
        }
        // heard_by must name exactly the sites whose local view holds the record.
        let wrong: Vec<Key> = view
            .merged
            .iter()
            .filter(|(key, heard_by)| {
                let expected: BTreeSet<&str> =
                    views.iter().filter(|v| v.local.contains(key)).map(|v| v.peer_id.as_str()).collect();
                heard_by.iter().map(String::as_str).collect::<BTreeSet<_>>() != expected
            })
            .map(|(key, _)| *key)
            .collect();
        if !wrong.is_empty() {
            problems.push(format!(
                "node {}: heard_by of {} record(s) differs from the sites that received them: {}",
                view.name,
                wrong.len(),
                examples(wrong)
            ));
        }
    }

    if let Some(first) = views.first() {
        for view in &views[1..] {
            let devices: BTreeSet<u16> = first.merged_bodies.keys().chain(view.merged_bodies.keys()).copied().collect();
            let differing: Vec<String> = devices
                .into_iter()
                .filter(|d| first.merged_bodies.get(d) != view.merged_bodies.get(d))
                .map(|d| d.to_string())
                .collect();
            if !differing.is_empty() {
                let n = differing.len();
                let mut shown = differing;
                shown.truncate(EXAMPLES);
                problems.push(format!(
                    "node {}'s merged history differs from node {}'s for {n} device(s): {}{}",
                    view.name,
                    first.name,
                    shown.join(", "),
                    if n > EXAMPLES { ", …" } else { "" }
                ));
            }
        }
    }

    Verdict {
        nodes: views.iter().map(|v| NodeCounts { received: v.local.len(), merged: v.merged.len() }).collect(),
        sent: truth.len(),
        heard: heard.len(),
        in_every: in_every.map_or(0, |s| s.len()),
        lost_everywhere: truth.difference(&heard).count(),
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, local: &[Key], merged: &[(Key, &[&str])]) -> NodeView {
        let merged: BTreeMap<Key, Vec<String>> =
            merged.iter().map(|(k, h)| (*k, h.iter().map(|s| (*s).to_owned()).collect())).collect();
        NodeView {
            name: name.to_owned(),
            peer_id: format!("peer-{name}"),
            local: local.iter().copied().collect(),
            merged_bodies: [(1, format!("{merged:?}"))].into(),
            merged,
        }
    }

    const K1: Key = (1, 1, 100);
    const K2: Key = (1, 2, 101);
    const K3: Key = (1, 3, 102);

    #[test]
    fn a_converged_complete_mesh_has_no_problems() {
        let truth = [K1, K2, K3].into();
        let merged: &[(Key, &[&str])] = &[(K1, &["peer-a", "peer-b"]), (K2, &["peer-b"])];
        let views = [view("a", &[K1], merged), view("b", &[K1, K2], merged)];
        let v = check(&truth, &views);
        assert_eq!(v.problems, Vec::<String>::new());
        assert_eq!((v.sent, v.heard, v.in_every, v.lost_everywhere), (3, 2, 2, 1));
        assert_eq!(v.nodes, [NodeCounts { received: 1, merged: 2 }, NodeCounts { received: 2, merged: 2 }]);
    }

    #[test]
    fn a_missing_record_a_wrong_heard_by_and_differing_bodies_are_each_reported() {
        let truth = [K1, K2].into();
        let views = [
            view("a", &[K1], &[(K1, &["peer-a", "peer-b"]), (K2, &["peer-b"])]),
            // b lacks K2 although it received it, and lists the wrong heard_by for K1.
            view("b", &[K1, K2], &[(K1, &["peer-b"])]),
        ];
        let v = check(&truth, &views);
        assert_eq!(v.problems.len(), 3, "{:#?}", v.problems);
        assert!(v.problems[0].starts_with("node b lacks 1 record(s) a site received: device 1 seq 2"));
        assert!(v.problems[1].starts_with("node b: heard_by of 1 record(s)"));
        assert!(v.problems[2].starts_with("node b's merged history differs from node a's for 1 device(s): 1"));
        assert_eq!(v.in_every, 1);
    }

    #[test]
    fn records_no_site_or_no_sensor_had_are_reported() {
        let truth = [K1].into();
        let merged: &[(Key, &[&str])] = &[(K1, &["peer-a"]), (K2, &["peer-a"]), (K3, &[])];
        let views = [view("a", &[K1, K2], merged)];
        let v = check(&truth, &views);
        assert!(v.problems.iter().any(|p| p.starts_with("node a has 1 record(s) no site received: device 1 seq 3")));
        assert!(v.problems.iter().any(|p| p.starts_with("site a received 1 record(s) no sensor sent: device 1 seq 2")));
    }

    #[test]
    fn records_are_parsed_from_the_api_shape() {
        let body = r#"{"records":[{"device":7,"seq":2,"timestamp":99,"heard_by":["x","y"]}],"next_from":null}"#;
        assert_eq!(parse_records(body).expect("parses"), [((7, 2, 99), vec!["x".to_owned(), "y".to_owned()])]);
        assert!(parse_records(r#"{"records":[],"next_from":"1.5"}"#).is_err());
    }
}
