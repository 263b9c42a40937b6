//! Proof of provenance: the signed statements behind each record's `heard_by` and
//! `proved_by` (`GET …/records?proof=true`, `telemesh verify FILE`; `docs/api.md`).
//!
//! A page with proof carries, for every window its records fall in, the window's
//! canonical blob as this node holds it and, per node named, the signed statement that
//! backs it ([`telemesh_proto::mesh::statement`]). [`check`] is the verifier, run by the
//! node before it answers (to list what it could not back) and by `telemesh verify`
//! offline against the mesh's roster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use futures::StreamExt as _;
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use telemesh_proto::mesh::statement::{Evidence, Statement};
use telemesh_proto::mesh::{message, Members, Request, Response, WindowId};
use telemesh_proto::record::{codec, Record, StreamId};
use telemesh_proto::window;

use super::export::{ReadingView, RecordView};
use crate::mesh::overlay::Client;
use crate::store::Store;

/// What a page with proof adds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Proof {
    /// The mesh's name.
    pub mesh: String,
    /// The signed roster (base64) that names the members whose keys sign statements;
    /// absent in an open mesh, which has no membership to check against.
    pub roster: Option<String>,
    pub windows: Vec<WindowProof>,
    /// Entries of `heard_by`/`proved_by` that no statement this node holds or could fetch
    /// backs: `telemesh verify` fails on the same ones.
    pub unbacked: Vec<UnbackedEntry>,
}

/// One window's evidence.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowProof {
    pub start_ns: u64,
    /// The window's canonical blob (base64): every record of it, as this node holds it.
    pub blob: String,
    /// The statements used, by node.
    pub statements: Vec<SignedStatement>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SignedStatement {
    pub node: String,
    /// The statement's bytes (base64 of its bincode form).
    pub statement: String,
}

/// A node named in a record's `heard_by` (or `proved_by`) that nothing backs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UnbackedEntry {
    pub device_time_ns: u64,
    pub seq: u64,
    pub node: String,
    /// `heard` or `proved`.
    pub claim: String,
}

/// What [`check`] found.
#[derive(Debug, Default)]
pub struct Checked {
    /// Entries backed by a statement.
    pub backed: usize,
    /// Entries not backed.
    pub unbacked: Vec<UnbackedEntry>,
    /// Everything else wrong, one line each: a record not in its window, a statement that
    /// does not verify, a window that does not decode.
    pub problems: Vec<String>,
}

/// Checks `records` against `proof`: each record must be in its window's blob as shown,
/// and each node of its `heard_by` and `proved_by` backed by a statement of that node
/// whose signature `verify(node, bytes, signature)` accepts.
pub fn check(stream: StreamId, records: &[RecordView], proof: &Proof, verify: impl Fn(&str, &[u8], &[u8]) -> bool) -> Checked {
    let mut out = Checked::default();
    let mut windows: BTreeMap<u64, (Vec<Record>, Evidence)> = BTreeMap::new();
    for w in &proof.windows {
        let id = WindowId { stream, start: w.start_ns };
        let blob = match BASE64.decode(&w.blob) {
            Ok(b) => b,
            Err(e) => {
                out.problems.push(format!("window {id}: blob is not base64: {e}"));
                continue;
            }
        };
        let recs = match window::decode(&blob) {
            Ok((h, recs)) if h.stream == stream && h.start_ns == w.start_ns => recs,
            Ok(_) => {
                out.problems.push(format!("window {id}: the blob is of another window"));
                continue;
            }
            Err(e) => {
                out.problems.push(format!("window {id}: blob does not decode: {e}"));
                continue;
            }
        };
        let mut evidence = Evidence::default();
        for s in &w.statements {
            let statement = BASE64.decode(&s.statement).ok().and_then(|b| codec::from_slice::<Statement>(&b, "statement").ok());
            let Some(statement) = statement else {
                out.problems.push(format!("window {id}: the statement of {} does not decode", s.node));
                continue;
            };
            if let Err(e) = evidence.add(id, &recs, &s.node, &statement, |m, sig| verify(&s.node, m, sig)) {
                out.problems.push(format!("window {id}: the statement of {} backs nothing: {e}", s.node));
            }
        }
        windows.insert(w.start_ns, (recs, evidence));
    }
    let empty = BTreeMap::new();
    for v in records {
        // A window the proof leaves out (not sealed yet where the page was made) backs
        // nothing; a record missing from a window the proof has is not the one shown.
        let (key, heard, proved) = match windows.get(&window::start(v.device_time_ns)) {
            None => (None, &empty, &empty),
            Some((recs, evidence)) => match recs.iter().find(|r| same(r, v)) {
                Some(r) => (Some(r.key()), &evidence.heard, &evidence.proved),
                None => {
                    out.problems.push(format!("record seq {} at {}: not in its window's blob", v.seq, v.device_time));
                    continue;
                }
            },
        };
        for (names, backed, claim) in [(&v.heard_by, heard, "heard"), (&v.proved_by, proved, "proved")] {
            for node in names {
                if key.and_then(|k| backed.get(&k)).is_some_and(|b| b.contains(node)) {
                    out.backed += 1;
                } else {
                    let entry = UnbackedEntry { device_time_ns: v.device_time_ns, seq: v.seq, node: node.clone(), claim: claim.into() };
                    out.unbacked.push(entry);
                }
            }
        }
    }
    out
}

/// Whether the record shown is `r`: identity, timestamp, kind and every reading (f32
/// readings compared at f32, as they were sent; NaN, shown as null, equals NaN).
fn same(r: &Record, v: &RecordView) -> bool {
    let readings = r.readings.labelled();
    r.device_time_ns == v.device_time_ns
        && r.seq == v.seq
        && r.timestamp_raw == v.timestamp
        && r.kind == v.kind
        && readings.len() == v.readings.len()
        && readings.iter().zip(&v.readings).all(|((label, value), shown)| label == &shown.label && same_value(value, shown))
}

fn same_value(value: &telemesh_proto::record::Value, shown: &ReadingView) -> bool {
    use telemesh_proto::record::Value;
    let shown = match shown.value {
        Value::F32(x) => f64::from(x),
        Value::F64(x) => x,
    };
    match *value {
        Value::F32(x) => (x.is_nan() && shown.is_nan()) || x == shown as f32,
        Value::F64(x) => (x.is_nan() && shown.is_nan()) || x == shown,
    }
}

/// Asks peers for the statements of a window.
#[derive(Debug, Clone)]
pub struct Fetcher {
    pub client: Client,
    /// Coordinators per window (0: none), as the mesh driver runs.
    pub coordinators: usize,
}

/// Most peers asked per window.
const MAX_ASKED: usize = 8;
/// Windows whose statements are asked for at once.
const WINDOWS_AT_ONCE: usize = 8;

impl Fetcher {
    /// Statements of window `w` from the nodes in `wanted` themselves and from the
    /// window's coordinators among `members`, of those `connected`, whichever answer.
    async fn fetch(&self, w: WindowId, wanted: &BTreeSet<String>, members: &Members, connected: &BTreeSet<PeerId>) -> Vec<(String, Statement)> {
        let mut ask: Vec<PeerId> = wanted.iter().filter_map(|n| n.parse().ok()).collect();
        if self.coordinators > 0 {
            let coordinators = members.coordinators(w, self.coordinators).into_iter().filter_map(|m| members.name(m)?.parse::<PeerId>().ok());
            ask.extend(coordinators);
        }
        ask.retain(|p| connected.contains(p));
        ask.sort();
        ask.dedup();
        ask.truncate(MAX_ASKED);
        let request = message::encode(&Request::Statements { window: w });
        let asks = ask.into_iter().map(|peer| {
            let (client, request) = (self.client.clone(), request.clone());
            async move { client.request(peer, request).await.ok() }
        });
        let mut out = Vec::new();
        for answer in futures::future::join_all(asks).await.into_iter().flatten() {
            if let Ok(Response::Statements(list)) = message::decode::<Response>(&answer) {
                out.extend(list.into_iter().filter(|(n, s)| wanted.contains(n) && s.claim.window == w));
            }
        }
        out
    }
}

/// Checks a statement's signature: `(node, signed bytes, signature)`.
pub type Verify = Arc<dyn Fn(&str, &[u8], &[u8]) -> bool + Send + Sync>;

/// Builds the proof of a page: for each window of `records`, its blob and the statements
/// this node keeps of it — and, for nodes named that those do not back, statements asked
/// of peers (`fetcher`) — then checks the page with it ([`check`]). Reading the store and
/// checking (re-encoding windows) run on the blocking pool.
pub async fn build(
    store: Arc<dyn Store>,
    stream: StreamId,
    records: Arc<Vec<RecordView>>,
    fetcher: Option<&Fetcher>,
    members: &Members,
    verify: Verify,
) -> anyhow::Result<(Proof, Checked)> {
    let (r, v) = (Arc::clone(&records), Arc::clone(&verify));
    let (mut proof, mut kept, checked) = tokio::task::spawn_blocking(move || {
        let mut proof = Proof::default();
        let starts: BTreeSet<u64> = r.iter().map(|v| window::start(v.device_time_ns)).collect();
        let mut kept: BTreeMap<u64, Vec<(String, Statement)>> = BTreeMap::new();
        for &start in &starts {
            let Some(sealed) = store.sealed(stream, start)? else { continue };
            kept.insert(start, store.statements(WindowId { stream, start })?);
            proof.windows.push(WindowProof { start_ns: start, blob: BASE64.encode(&sealed.blob), statements: Vec::new() });
        }
        fill(&mut proof, &kept, &*v);
        let checked = check(stream, &r, &proof, &*v);
        Ok::<_, crate::store::StoreError>((proof, kept, checked))
    })
    .await??;
    let Some(fetcher) = fetcher.filter(|_| !checked.unbacked.is_empty()) else { return Ok((proof, checked)) };
    let mut missing: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for u in &checked.unbacked {
        missing.entry(window::start(u.device_time_ns)).or_default().insert(u.node.clone());
    }
    let connected: BTreeSet<PeerId> = fetcher.client.peers().await.into_iter().map(|p| p.peer).collect();
    let connected = &connected;
    let fetches: Vec<_> = missing
        .into_iter()
        .map(|(start, nodes)| async move {
            (start, fetcher.fetch(WindowId { stream, start }, &nodes, members, connected).await)
        })
        .collect();
    let mut fetched = futures::stream::iter(fetches).buffer_unordered(WINDOWS_AT_ONCE);
    while let Some((start, list)) = fetched.next().await {
        kept.entry(start).or_default().extend(list);
    }
    Ok(tokio::task::spawn_blocking(move || {
        fill(&mut proof, &kept, &*verify);
        let checked = check(stream, &records, &proof, &*verify);
        (proof, checked)
    })
    .await?)
}

/// Puts into each window of `proof` one statement per node: of those whose signature
/// verifies, the one that backs the most records heard.
fn fill(proof: &mut Proof, kept: &BTreeMap<u64, Vec<(String, Statement)>>, verify: impl Fn(&str, &[u8], &[u8]) -> bool) {
    for w in &mut proof.windows {
        let mut best: BTreeMap<&str, &Statement> = BTreeMap::new();
        for (node, s) in kept.get(&w.start_ns).into_iter().flatten() {
            if !s.verify(|m, sig| verify(node, m, sig)) {
                continue;
            }
            if best.get(node.as_str()).is_none_or(|b| b.claim.heard_count() < s.claim.heard_count()) {
                best.insert(node, s);
            }
        }
        w.statements = best
            .into_iter()
            .map(|(node, s)| SignedStatement { node: node.to_owned(), statement: BASE64.encode(codec::to_vec(s)) })
            .collect();
    }
}

/// A page of records with its proof, as `GET …/records?proof=true` writes it.
#[derive(Debug, Deserialize)]
pub struct ProvedPage {
    pub dialect: telemesh_proto::wire::Dialect,
    pub device: u32,
    pub records: Vec<RecordView>,
    pub proof: Option<Proof>,
}

/// Why a file could not be checked at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    #[error("not a records page: {0}")]
    Parse(#[from] serde_json::Error),
    #[error("the page carries no proof: ask for it with proof=true")]
    NoProof,
    #[error("the page is from an open mesh, which has no membership to check statements against")]
    OpenMesh,
    #[error("the page's roster does not verify against owner {owner} and mesh {mesh:?}: {refusal}")]
    Roster { owner: crate::trust::Owner, mesh: String, refusal: crate::trust::Refusal },
}

/// Checks a page written by `GET …/records?proof=true` against the mesh owned by `owner`:
/// its roster must be signed by `owner`, and every statement by a member of it.
pub fn verify_page(text: &str, owner: &crate::trust::Owner) -> Result<(usize, Checked), VerifyError> {
    let page: ProvedPage = serde_json::from_str(text)?;
    let proof = page.proof.ok_or(VerifyError::NoProof)?;
    let roster = proof.roster.as_deref().ok_or(VerifyError::OpenMesh)?;
    let signed = BASE64.decode(roster).unwrap_or_default();
    let roster = crate::trust::Roster::verify(&signed, owner, &proof.mesh)
        .map_err(|refusal| VerifyError::Roster { owner: owner.clone(), mesh: proof.mesh.clone(), refusal })?;
    let stream = StreamId::new(page.dialect, page.device);
    let member = |node: &str, m: &[u8], sig: &[u8]| {
        node.parse::<PeerId>().is_ok_and(|p| roster.contains(&p) && crate::trust::identity::verify(&p, m, sig))
    };
    let mut checked = check(stream, &page.records, &proof, member);
    for s in proof.windows.iter().flat_map(|w| &w.statements) {
        if !s.node.parse::<PeerId>().is_ok_and(|p| roster.contains(&p)) {
            checked.problems.push(format!("{} signed a statement but is not a member of the roster", s.node));
        }
    }
    checked.problems.sort();
    checked.problems.dedup();
    Ok((page.records.len(), checked))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::export::View;
    use crate::store::StoredRecord;
    use telemesh_proto::record::{Kind, Readings};
    use telemesh_proto::wire::Dialect;

    #[test]
    fn a_record_of_a_window_the_proof_leaves_out_is_unbacked_and_one_missing_from_its_blob_is_a_problem() {
        let stream = StreamId::new(Dialect::Iotstream, 5);
        let record = Record {
            stream,
            device_time_ns: 1_800_000_000_000_000_000,
            seq: 1,
            timestamp_raw: 1,
            kind: Kind::Data,
            readings: Readings::Batch(vec![1.5]),
        };
        let mut stored = StoredRecord::new(record.clone(), 1, 0);
        stored.heard_by = vec!["12D3KooWother".into()];
        let view = RecordView::new(&stored, None, "me", View::Merged);
        let accept = |_: &str, _: &[u8], _: &[u8]| true;
        // Not sealed where the page was made: no window in the proof, every entry unbacked.
        let checked = check(stream, std::slice::from_ref(&view), &Proof::default(), accept);
        assert!(checked.problems.is_empty(), "{:?}", checked.problems);
        assert_eq!(checked.unbacked.len(), 2, "this node and the other: {:?}", checked.unbacked);
        // A window that holds another record: the one shown is not in it.
        let mut other = record;
        other.readings = Readings::Batch(vec![2.5]);
        let start = window::start(other.device_time_ns);
        let blob = window::encode(stream, start, &[other]).expect("blob");
        let proof = Proof { windows: vec![WindowProof { start_ns: start, blob: BASE64.encode(blob), statements: Vec::new() }], ..Proof::default() };
        let checked = check(stream, std::slice::from_ref(&view), &proof, accept);
        assert_eq!(checked.problems.len(), 1, "{:?}", checked.problems);
        assert!(checked.unbacked.is_empty());
    }
}
