//! The testnet's verdict, computed from what the nodes answered and the sensors' ground
//! truth, without I/O: does every node return the same merged history, holding exactly
//! the records some site received, each with the right `heard_by`?

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

/// A record's identity across nodes and the truth log: (device, wire seq, wire timestamp).
pub type Key = (u16, u64, u64);

/// Records with their `heard_by` (peer ids), as a merged view lists them.
pub type HeardBy = BTreeMap<Key, Vec<String>>;

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
    pub merged: HeardBy,
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
        let key = (u16::try_from(field("device")?)?, field("seq")?, field("timestamp")?);
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

/// What the uninvited node (`--intruder`) and the members showed about it.
#[derive(Debug, Clone, Default)]
pub struct IntruderView {
    /// Its peer id.
    pub peer_id: String,
    /// The records fabricated for it alone (same device ids as the sensors, other seqs and
    /// readings), from their truth log.
    pub fabricated: BTreeSet<Key>,
    /// Everything sent to it directly: the sensors' records and the fabricated ones.
    pub sent: BTreeSet<Key>,
    /// Its merged history: each record's `heard_by`.
    pub merged: HeardBy,
    /// Repair bytes it received from the mesh.
    pub repair_bytes_in: f64,
    /// The most peers its `/v1/status` listed at any poll.
    pub max_peers: u64,
    /// The members (names) whose `/v1/peers` listed it at some poll.
    pub listed_by: BTreeSet<String>,
    /// Per member (name): the connections from peers not proven members it refused since the
    /// uninvited node started (`telemesh_trust_refusals_total`, `unproven_connection` and
    /// `unproven_timeout`).
    pub refusals: Vec<(String, f64)>,
}

/// Was the uninvited node kept out?
#[derive(Debug, Clone, PartialEq)]
pub struct IntruderVerdict {
    /// Fabricated records the uninvited node holds (it accepted them from its sensors).
    pub fabricated_held: usize,
    /// Fabricated records in some member's merged history.
    pub fabricated_in_members: usize,
    /// Records in its merged history it was not sent directly or that a member heard.
    pub from_mesh: usize,
    /// Refusals the members counted since it started.
    pub refusals: f64,
    /// Everything that shows it got in, one line each; empty = kept out.
    pub problems: Vec<String>,
}

/// Checks that nothing passed between the members (`views`) and the uninvited node.
pub fn check_intruder(intruder: &IntruderView, views: &[NodeView]) -> IntruderVerdict {
    let mut problems = Vec::new();
    let fabricated_held = intruder.merged.keys().filter(|k| intruder.fabricated.contains(k)).count();
    if fabricated_held == 0 {
        // Otherwise the checks below would pass for want of anything to keep out.
        problems.push(format!(
            "the uninvited node holds none of the {} record(s) fabricated for it: nothing was there to keep out",
            intruder.fabricated.len()
        ));
    }
    let mut in_members = BTreeSet::new();
    for view in views {
        let planted: Vec<Key> = view.merged.keys().filter(|k| intruder.fabricated.contains(k)).copied().collect();
        if !planted.is_empty() {
            problems.push(format!(
                "node {}'s merged history holds {} record(s) fabricated by the uninvited node: {}",
                view.name,
                planted.len(),
                examples(planted.iter().copied())
            ));
        }
        in_members.extend(planted);
        let credited: Vec<Key> =
            view.merged.iter().filter(|(_, h)| h.contains(&intruder.peer_id)).map(|(k, _)| *k).collect();
        if !credited.is_empty() {
            problems.push(format!(
                "node {} names the uninvited node in heard_by of {} record(s): {}",
                view.name,
                credited.len(),
                examples(credited)
            ));
        }
    }
    for name in &intruder.listed_by {
        problems.push(format!("node {name} listed the uninvited node among its peers (GET /v1/peers)"));
    }
    if intruder.max_peers > 0 {
        problems.push(format!("the uninvited node had {} peer(s) from the mesh", intruder.max_peers));
    }
    let from_mesh: Vec<Key> = intruder
        .merged
        .iter()
        .filter(|(k, h)| !intruder.sent.contains(k) || h.iter().any(|p| *p != intruder.peer_id))
        .map(|(k, _)| *k)
        .collect();
    if !from_mesh.is_empty() {
        problems.push(format!(
            "the uninvited node's merged history holds {} record(s) from the mesh: {}",
            from_mesh.len(),
            examples(from_mesh.iter().copied())
        ));
    }
    if intruder.repair_bytes_in > 0.0 {
        problems.push(format!("the uninvited node received {} repair bytes from the mesh", intruder.repair_bytes_in));
    }
    let refusals: f64 = intruder.refusals.iter().map(|(_, n)| n).sum();
    if refusals <= 0.0 {
        problems.push(
            "no member counted a refused connection of a peer not proven a member \
             (telemesh_trust_refusals_total{reason=\"unproven_connection\"|\"unproven_timeout\"})"
                .to_owned(),
        );
    }
    IntruderVerdict {
        fabricated_held,
        fabricated_in_members: in_members.len(),
        from_mesh: from_mesh.len(),
        refusals,
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

    fn kept_out() -> (IntruderView, Vec<NodeView>) {
        const FAKE: Key = (1, 40_000, 100);
        let merged: &[(Key, &[&str])] = &[(K1, &["peer-a"])];
        let intruder = IntruderView {
            peer_id: "peer-x".to_owned(),
            fabricated: [FAKE].into(),
            sent: [K1, FAKE].into(),
            merged: [(K1, vec!["peer-x".to_owned()]), (FAKE, vec!["peer-x".to_owned()])].into(),
            refusals: vec![("a".to_owned(), 2.0), ("b".to_owned(), 0.0)],
            ..IntruderView::default()
        };
        (intruder, vec![view("a", &[K1], merged), view("b", &[], merged)])
    }

    #[test]
    fn an_intruder_that_got_nothing_in_and_nothing_out_was_kept_out() {
        let (intruder, views) = kept_out();
        let v = check_intruder(&intruder, &views);
        assert_eq!(v.problems, Vec::<String>::new());
        assert_eq!((v.fabricated_held, v.fabricated_in_members, v.from_mesh, v.refusals), (1, 0, 0, 2.0));
    }

    #[test]
    fn each_way_in_or_out_is_reported() {
        let (mut intruder, mut views) = kept_out();
        let fake = *intruder.fabricated.first().expect("one fabricated record");
        // A member took a fabricated record, crediting the intruder; the intruder got a
        // record repaired from the mesh, had a peer, was listed, and nobody counted it.
        views[1].merged.insert(fake, vec!["peer-x".to_owned()]);
        intruder.merged.insert(K2, vec!["peer-a".to_owned()]);
        intruder.max_peers = 1;
        intruder.listed_by.insert("a".to_owned());
        intruder.refusals = vec![("a".to_owned(), 0.0)];
        let v = check_intruder(&intruder, &views);
        let expected = [
            "node b's merged history holds 1 record(s) fabricated by the uninvited node: device 1 seq 40000",
            "node b names the uninvited node in heard_by of 1 record(s)",
            "node a listed the uninvited node among its peers",
            "the uninvited node had 1 peer(s) from the mesh",
            "the uninvited node's merged history holds 1 record(s) from the mesh: device 1 seq 2",
            "no member counted a refused connection",
        ];
        assert_eq!(v.problems.len(), expected.len(), "{:#?}", v.problems);
        for (p, e) in v.problems.iter().zip(expected) {
            assert!(p.starts_with(e), "{p:?} should start with {e:?}");
        }
        assert_eq!((v.fabricated_in_members, v.from_mesh), (1, 1));
    }

    #[test]
    fn an_intruder_without_fabricated_records_proves_nothing() {
        let (mut intruder, views) = kept_out();
        intruder.merged.clear();
        let v = check_intruder(&intruder, &views);
        assert_eq!(v.problems.len(), 1);
        assert!(v.problems[0].contains("nothing was there to keep out"), "{:?}", v.problems);
    }

    #[test]
    fn records_are_parsed_from_the_api_shape() {
        let body = r#"{"records":[{"device":7,"seq":2,"timestamp":99,"heard_by":["x","y"]}],"next_from":null}"#;
        assert_eq!(parse_records(body).expect("parses"), [((7, 2, 99), vec!["x".to_owned(), "y".to_owned()])]);
        assert!(parse_records(r#"{"records":[],"next_from":"1.5"}"#).is_err());
    }
}
