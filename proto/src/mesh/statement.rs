//! Signed statements: what a node says it heard, in a form anyone can check later
//! (`docs/protocol.md`, "Statements").
//!
//! A node's row of a window — which of the records under its root it received itself,
//! and proved — is a [`Claim`]. Every announcement or offer a node authors carries one
//! signature, by the node's own key, over the root of a small Merkle tree whose leaves
//! are the claims of the message's windows in order ([`to_sign`]): one signature per
//! message, not per window. A receiver checks it at once (everything a leaf hashes is in
//! the message) and keeps, per window and author, the last [`Statement`]: the claim, its
//! place in the tree, the path to the signed root, the signature, and the compact index
//! of the author's window, which tells which records the claimed root covers.
//!
//! [`Evidence`] is the other end: given a window's canonical blob (every record of it)
//! and statements about it, it says which node each statement backs as having heard or
//! proved which record — after re-encoding the records each statement covers and checking
//! that they give the claimed root. Signature checks are the caller's (a closure over the
//! author's key): `proto` holds no keys.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::message::{Announce, IndexPart};
use super::{Summary, WindowId};
use crate::record::{Key, Record};
use crate::window::{self, Root};

/// What a signature over a statements root signs: this context, then the root.
pub const SIGNED_CONTEXT: &[u8] = b"telemesh/statements/1 ";
/// Longest path a statement carries: a message holds at most
/// [`super::message::MAX_ANNOUNCE`] windows, so 10 levels suffice; more is refused.
pub const MAX_PATH: usize = 16;
/// Longest signature kept (ed25519's is 64 bytes).
pub const MAX_SIGNATURE: usize = 128;

/// A node's row of one window: of the `count` records whose blob has `root` (the window
/// as the node held it), which it heard — and, after those `count` bits rounded up to
/// bytes, which it proved if any — in the form of a [`super::Table`] row.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Claim {
    pub window: WindowId,
    pub root: Root,
    pub count: u32,
    pub row: Vec<u8>,
}

fn bit(bits: &[u8], i: usize) -> bool {
    bits.get(i / 8).is_some_and(|x| x >> (i % 8) & 1 == 1)
}

impl Claim {
    /// The leaf of this claim in a statements tree.
    pub fn leaf(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key("telemesh 2026-12 statement claim v1");
        h.update(&self.window.stream.key_prefix());
        h.update(&self.window.start.to_be_bytes());
        h.update(&self.root);
        h.update(&self.count.to_be_bytes());
        h.update(&(self.row.len() as u64).to_be_bytes());
        h.update(&self.row);
        *h.finalize().as_bytes()
    }

    /// How many records the node says it heard itself.
    pub fn heard_count(&self) -> u32 {
        self.row.iter().take(self.count.div_ceil(8) as usize).map(|b| b.count_ones()).sum()
    }

    /// Whether the node says it heard record `i` (in key order) itself.
    pub fn heard(&self, i: usize) -> bool {
        bit(&self.row, i)
    }

    /// Whether the node says it proved record `i` (received it authenticated).
    pub fn proved(&self, i: usize) -> bool {
        bit(&self.row, self.count.div_ceil(8) as usize * 8 + i)
    }
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("telemesh 2026-12 statement node v1");
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

/// The root of the tree over `leaves`: pairs hashed level by level, an odd last node
/// carried up as it is. One leaf is its own root; none gives zeros.
pub fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = level.chunks(2).map(|p| if let [l, r] = p { node_hash(l, r) } else { p[0] }).collect();
    }
    level.first().copied().unwrap_or([0; 32])
}

/// The siblings from leaf `at` up to the root of the tree over `leaves`.
pub fn tree_path(leaves: &[[u8; 32]], at: usize) -> Vec<[u8; 32]> {
    let mut path = Vec::new();
    let mut level = leaves.to_vec();
    let mut i = at;
    while level.len() > 1 {
        if let Some(sibling) = level.get(i ^ 1) {
            path.push(*sibling);
        }
        level = level.chunks(2).map(|p| if let [l, r] = p { node_hash(l, r) } else { p[0] }).collect();
        i /= 2;
    }
    path
}

/// The root a leaf at `at` of `of` leaves leads to along `path`; `None` if the path does
/// not fit that place (too short, too long, or `at` out of range).
pub fn root_along(leaf: [u8; 32], at: u32, of: u32, path: &[[u8; 32]]) -> Option<[u8; 32]> {
    if at >= of || path.len() > MAX_PATH {
        return None;
    }
    let (mut i, mut width, mut hash) = (at as usize, of as usize, leaf);
    let mut siblings = path.iter();
    while width > 1 {
        if i ^ 1 < width {
            let s = siblings.next()?;
            hash = if i % 2 == 0 { node_hash(&hash, s) } else { node_hash(s, &hash) };
        }
        i /= 2;
        width = width.div_ceil(2);
    }
    siblings.next().is_none().then_some(hash)
}

/// The bytes a signature over a statements tree with `root` signs.
pub fn signed_bytes(root: &[u8; 32]) -> Vec<u8> {
    [SIGNED_CONTEXT, root].concat()
}

/// The claim an announcement makes of its window `i`: the author's row of it (empty if
/// it sends none, or one that does not fit the window).
pub fn claim(announce: &Announce, i: usize) -> Option<Claim> {
    let s = announce.windows.get(i)?;
    Some(Claim { window: s.window, root: s.root, count: s.count, row: announce.row(i).unwrap_or_default() })
}

/// The leaves of an announcement's claims, one per window in order.
pub fn leaves(announce: &Announce) -> Vec<[u8; 32]> {
    (0..announce.windows.len()).filter_map(|i| claim(announce, i)).map(|c| c.leaf()).collect()
}

/// What the author of `announce` signs: [`signed_bytes`] of its claims' tree root.
pub fn to_sign(announce: &Announce) -> Vec<u8> {
    signed_bytes(&tree_root(&leaves(announce)))
}

/// A node's signed claim about one window, as receivers keep it and proofs carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub claim: Claim,
    /// The claim's leaf index among the `of` leaves of the signed tree.
    pub at: u32,
    pub of: u32,
    pub path: Vec<[u8; 32]>,
    pub signature: Vec<u8>,
    /// The compact index of the author's window at the claimed root, when the message
    /// carried it: which records the root covers, where it is not the whole window.
    pub index: Option<IndexPart>,
}

impl Statement {
    /// The statements a signed announcement makes: one per window with a non-empty row
    /// (the others claim nothing), each with its path to the signed root; none if it is
    /// not signed.
    pub fn all_of(announce: &Announce) -> Vec<Statement> {
        if !announce.signed() {
            return Vec::new();
        }
        let leaves = leaves(announce);
        let of = leaves.len() as u32;
        (0..announce.windows.len())
            .filter_map(|i| {
                let claim = claim(announce, i).filter(|c| !c.row.is_empty())?;
                Some(Statement {
                    claim,
                    at: i as u32,
                    of,
                    path: tree_path(&leaves, i),
                    signature: announce.signature.clone(),
                    index: announce.index(i).cloned(),
                })
            })
            .collect()
    }

    /// The bytes its author signed, if the path leads anywhere.
    pub fn signed(&self) -> Option<Vec<u8>> {
        root_along(self.claim.leaf(), self.at, self.of, &self.path).map(|r| signed_bytes(&r))
    }

    /// Whether the statement is well-formed and `verify(signed bytes, signature)` holds.
    pub fn verify(&self, verify: impl Fn(&[u8], &[u8]) -> bool) -> bool {
        self.signature.len() <= MAX_SIGNATURE && self.signed().is_some_and(|bytes| verify(&bytes, &self.signature))
    }

    /// Which of a window's `records` (all of it, in key order) the claimed root covers:
    /// all of them if they give that root, else those the statement's index names (one
    /// record per entry, found by time, seq and — where the index gives one — content
    /// tag); `None` if that does not give the root either.
    pub fn covers(&self, records: &[Record]) -> Option<Vec<bool>> {
        let w = self.claim.window;
        if records.len() == self.claim.count as usize && root_of(w, records.iter()) == Some(self.claim.root) {
            return Some(vec![true; records.len()]);
        }
        let index = self.index.as_ref()?;
        let IndexPart::Compact { slot_size, .. } = index else { return None };
        let summary = Summary { window: w, root: self.claim.root, count: self.claim.count, slot_size: *slot_size, provenance: [0; 8] };
        let entries = index.entries(&summary).ok()?;
        // Candidates per entry: more than one only where the merged window holds two
        // versions of a record and the author's index, which had one, gave no tag.
        let mut candidates = Vec::with_capacity(entries.len());
        let mut choices = 1usize;
        for e in entries {
            let time = w.start.checked_add(e.offset_ns)?;
            let found: Vec<usize> = (0..records.len())
                .filter(|&i| {
                    let r = &records[i];
                    r.device_time_ns == time && r.seq == e.seq && e.tag.is_none_or(|t| t == r.content_tag())
                })
                .collect();
            choices = choices.checked_mul(found.len()).filter(|c| (1..=MAX_CHOICES).contains(c))?;
            candidates.push(found);
        }
        // Every combination of versions (at most `MAX_CHOICES`), until one gives the root.
        (0..choices).find_map(|mut pick| {
            let mut held = vec![false; records.len()];
            for found in &candidates {
                held[found[pick % found.len()]] = true;
                pick /= found.len();
            }
            let chosen = records.iter().zip(&held).filter(|(_, h)| **h).map(|(r, _)| r);
            (root_of(w, chosen) == Some(self.claim.root)).then_some(held)
        })
    }
}

/// Most combinations of conflicting versions [`Statement::covers`] tries.
const MAX_CHOICES: usize = 64;

/// The root of the window `w` made of `records`.
fn root_of<'a>(w: WindowId, records: impl Iterator<Item = &'a Record>) -> Option<Root> {
    let records: Vec<Record> = records.cloned().collect();
    let blob = window::encode(w.stream, w.start, &records).ok()?;
    Some(window::outboard(&blob).ok()?.root())
}

/// Why a statement backs nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unbacked {
    #[error("its signature does not verify")]
    Signature,
    #[error("it is about another window")]
    Window,
    #[error("the window's records do not give the root it claims")]
    Root,
}

/// What a window's statements back: for each record key, the nodes that signed that they
/// heard it, and those that signed that they proved it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evidence {
    pub heard: BTreeMap<Key, BTreeSet<String>>,
    pub proved: BTreeMap<Key, BTreeSet<String>>,
}

impl Evidence {
    /// Adds what `statement`, signed by `author`, backs of window `w` whose records
    /// (every one, in key order) are `records`. `verify` checks the author's signature.
    pub fn add(
        &mut self,
        w: WindowId,
        records: &[Record],
        author: &str,
        statement: &Statement,
        verify: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<(), Unbacked> {
        if statement.claim.window != w {
            return Err(Unbacked::Window);
        }
        if !statement.verify(verify) {
            return Err(Unbacked::Signature);
        }
        let held = statement.covers(records).ok_or(Unbacked::Root)?;
        let covered = records.iter().zip(held).filter(|(_, h)| *h).map(|(r, _)| r);
        for (i, r) in covered.enumerate() {
            if statement.claim.heard(i) {
                self.heard.entry(r.key()).or_default().insert(author.to_owned());
            }
            if statement.claim.proved(i) {
                self.proved.entry(r.key()).or_default().insert(author.to_owned());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mesh::message::{Announced, Row};
    use crate::mesh::{summarize, Table};
    use crate::mesh::testing::rec;
    use crate::record::Readings;

    /// A stand-in for a signature scheme: a keyed hash, the key being the author's name.
    fn sign(author: &str, bytes: &[u8]) -> Vec<u8> {
        blake3::keyed_hash(blake3::hash(author.as_bytes()).as_bytes(), bytes).as_bytes().to_vec()
    }

    fn verifier(author: &str) -> impl Fn(&[u8], &[u8]) -> bool + '_ {
        move |bytes, signature| sign(author, bytes) == signature
    }

    /// The announcement a node holding `held` (in key order) of a window makes, with its
    /// row: it heard the records `heard` says, and proved those `proved` says.
    fn announced(held: &[Record], heard: impl Fn(u64) -> bool, proved: impl Fn(u64) -> bool) -> Announced {
        let w = WindowId { stream: held[0].stream, start: window::start(held[0].device_time_ns) };
        let blob = window::encode(w.stream, w.start, held).expect("blob");
        let receipts = held.iter().enumerate().filter(|(_, r)| heard(r.seq)).map(|(i, r)| (i, "me", proved(r.seq)));
        let table = Table::from_receipts(held.len(), receipts);
        let summary = summarize(&blob, &table).expect("summary");
        let (header, entries) = window::index(&blob).expect("index");
        let row = Row::of(table.nodes.first().map(|(_, b)| b.as_slice()), held.len());
        Announced { summary, index: Some(IndexPart::compact(&header, &entries)), row, others: Vec::new() }
    }

    fn signed(author: &str, windows: &[Announced]) -> Announce {
        let mut a = message::pack_announces(windows, [0; 8]).remove(0);
        a.sign(|bytes| sign(author, bytes));
        a
    }

    use crate::mesh::message;

    #[test]
    fn every_leaf_leads_to_the_root_and_nothing_else_does() {
        for n in 1..=17usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| *blake3::hash(&[i as u8]).as_bytes()).collect();
            let root = tree_root(&leaves);
            for at in 0..n {
                let path = tree_path(&leaves, at);
                assert!(path.len() <= (n as f64).log2().ceil() as usize);
                assert_eq!(root_along(leaves[at], at as u32, n as u32, &path), Some(root), "leaf {at} of {n}");
                // Another leaf, another place, a path cut short or lengthened: no.
                assert_ne!(root_along(leaves[(at + 1) % n], at as u32, n as u32, &path), Some(root).filter(|_| n > 1));
                if n > 1 {
                    assert_ne!(root_along(leaves[at], ((at + 1) % n) as u32, n as u32, &path), Some(root));
                    assert_eq!(root_along(leaves[at], at as u32, n as u32, &path[1..]), None);
                }
                let mut longer = path.clone();
                longer.push([0; 32]);
                assert_eq!(root_along(leaves[at], at as u32, n as u32, &longer), None);
            }
            assert_eq!(root_along(leaves[0], n as u32, n as u32, &[]), None);
        }
    }

    #[test]
    fn one_signature_backs_every_window_of_a_message_and_a_changed_row_breaks_it() {
        let a: Vec<Record> = (0..10).map(rec).collect();
        let mut b: Vec<Record> = (0..10).map(|s| rec(s + 60)).collect();
        b.retain(|r| r.seq != 65);
        let message = signed("site-a", &[announced(&a, |_| true, |_| false), announced(&b, |s| s % 2 == 0, |s| s == 62)]);
        assert!(message.verify(verifier("site-a")));
        assert!(!message.verify(verifier("site-b")), "signed by another key");
        let statements = Statement::all_of(&message);
        assert_eq!(statements.len(), 2);
        for s in &statements {
            assert!(s.verify(verifier("site-a")));
            assert!(!s.verify(verifier("site-b")));
        }
        // A relay that sets one more bit in a row (says the author heard a record it did
        // not) breaks the signature: of the message, and of the statement.
        let mut forged = message.clone();
        forged.rows[1] = Row::All;
        assert!(!forged.verify(verifier("site-a")));
        let mut s = statements[1].clone();
        s.claim.row[0] |= 0b10;
        assert!(!s.verify(verifier("site-a")));
        // … and so does one moved to another window.
        let mut moved = statements[0].clone();
        moved.claim.window.start += window::SPAN_NS;
        assert!(!moved.verify(verifier("site-a")));
    }

    #[test]
    fn evidence_backs_exactly_what_each_author_signed_over_the_merged_window() {
        // The merged window holds 12 records; site a heard 0..10 (and proved seq 3), site
        // b heard 2..12 — each statement is about its own window, a root of its own.
        let all: Vec<Record> = (0..12).map(rec).collect();
        let a = Statement::all_of(&signed("a", &[announced(&all[..10], |_| true, |s| s == 3)])).remove(0);
        let b = Statement::all_of(&signed("b", &[announced(&all[2..], |_| true, |_| false)])).remove(0);
        // Site c repaired the whole window, and heard only seq 11 itself.
        let c = Statement::all_of(&signed("c", &[announced(&all, |s| s == 11, |_| false)])).remove(0);
        let w = a.claim.window;
        let mut evidence = Evidence::default();
        evidence.add(w, &all, "a", &a, verifier("a")).expect("a");
        evidence.add(w, &all, "b", &b, verifier("b")).expect("b");
        evidence.add(w, &all, "c", &c, verifier("c")).expect("c");
        let names = |k: &Key, m: &BTreeMap<Key, BTreeSet<String>>| m.get(k).map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(names(&all[0].key(), &evidence.heard), ["a"]);
        assert_eq!(names(&all[5].key(), &evidence.heard), ["a", "b"]);
        assert_eq!(names(&all[11].key(), &evidence.heard), ["b", "c"]);
        assert_eq!(names(&all[3].key(), &evidence.proved), ["a"]);
        assert_eq!(evidence.proved.len(), 1);

        // Someone else's signature, another window, records that do not give the root.
        assert_eq!(Evidence::default().add(w, &all, "a", &a, verifier("b")), Err(Unbacked::Signature));
        let other = WindowId { start: w.start + window::SPAN_NS, ..w };
        assert_eq!(Evidence::default().add(other, &all, "a", &a, verifier("a")), Err(Unbacked::Window));
        let mut changed = all.clone();
        changed[4].readings = Readings::Batch(vec![-1.0]);
        assert_eq!(Evidence::default().add(w, &changed, "a", &a, verifier("a")), Err(Unbacked::Root));
        // Without its index, a statement over part of the window cannot say which part.
        let bare = Statement { index: None, ..a.clone() };
        assert_eq!(Evidence::default().add(w, &all, "a", &bare, verifier("a")), Err(Unbacked::Root));
        assert!(Evidence::default().add(w, &all, "c", &Statement { index: None, ..c }, verifier("c")).is_ok());
    }

    #[test]
    fn a_conflicting_version_is_told_apart_by_its_tag() {
        // Two versions of seq 4: site a heard one, the merged window holds both.
        let mut all: Vec<Record> = (0..8).map(rec).collect();
        let mut twin = rec(4);
        twin.readings = Readings::Batch(vec![-4.0]);
        let a = Statement::all_of(&signed("a", &[announced(&all, |_| true, |_| false)])).remove(0);
        all.push(twin.clone());
        all.sort_by_key(Record::key);
        let mut evidence = Evidence::default();
        evidence.add(a.claim.window, &all, "a", &a, verifier("a")).expect("a");
        assert!(!evidence.heard.contains_key(&twin.key()));
        assert_eq!(evidence.heard.len(), 8);
    }
}
