//! The members of a closed mesh as the mesh protocol uses them: a sorted list of node
//! names that every member holds alike (the roster's), so that a row of a provenance
//! table can name its node by an index into it, and every node can work out, with no
//! message, which members *coordinate* a window (`docs/protocol.md`, "Coordinators").
//!
//! A window's coordinators are the `r` members with the smallest BLAKE3 of (member,
//! window) — rendezvous hashing. Each member coordinates `r / n` of the windows, evenly
//! (Kademlia's XOR distance to the window's key, tried first, gave members between 0.6
//! and 1.5 × their share at 20 members: a name's share is the gap its key falls in), and
//! a change of membership moves only the windows of the members that came or went.

use super::message::Row;
use super::{Table, WindowId};

/// A member list, sorted, with each name's place on the distance ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Members {
    names: Vec<String>,
    keys: Vec<[u8; 32]>,
    digest: [u8; 8],
}

impl Members {
    /// The members named (sorted, duplicates once).
    pub fn new(mut names: Vec<String>) -> Members {
        names.sort();
        names.dedup();
        let keys = names.iter().map(|n| *blake3::hash(n.as_bytes()).as_bytes()).collect();
        let mut h = blake3::Hasher::new_derive_key("telemesh/members/1");
        for n in &names {
            h.update(&(n.len() as u32).to_be_bytes());
            h.update(n.as_bytes());
        }
        let mut digest = [0u8; 8];
        digest.copy_from_slice(&h.finalize().as_bytes()[..8]);
        Members { names, keys, digest }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// 8 bytes that differ between two different lists: an index is only meaningful to a
    /// node whose list has the same digest.
    pub fn digest(&self) -> [u8; 8] {
        self.digest
    }

    pub fn name(&self, index: u32) -> Option<&str> {
        self.names.get(index as usize).map(String::as_str)
    }

    pub fn index(&self, name: &str) -> Option<u32> {
        self.names.binary_search_by(|n| n.as_str().cmp(name)).ok().map(|i| i as u32)
    }

    /// The `r` members that coordinate `window`, first (rank 0) first; every member if
    /// there are no more than `r`.
    pub fn coordinators(&self, window: WindowId, r: usize) -> Vec<u32> {
        let mut id = [0u8; 13];
        id[..5].copy_from_slice(&window.stream.key_prefix());
        id[5..].copy_from_slice(&window.start.to_be_bytes());
        let mut order: Vec<(u64, u32)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let score = blake3::keyed_hash(k, &id);
                (u64::from_be_bytes(score.as_bytes()[..8].try_into().unwrap_or_default()), i as u32)
            })
            .collect();
        order.sort_unstable();
        order.into_iter().take(r).map(|(_, i)| i).collect()
    }

    /// The rows a window's coordinator relays (`Announce::others`): every node of `table`
    /// (over `count` records) but `me` that is a member, by member index.
    pub fn others(&self, table: &Table, me: &str, count: usize) -> Vec<(u32, Row)> {
        let rows = table.nodes.iter().filter(|(n, _)| n != me);
        rows.filter_map(|(n, b)| Some((self.index(n)?, Row::of(Some(b), count)))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StreamId;
    use crate::wire::Dialect;

    fn window(device: u32, minute: u64) -> WindowId {
        WindowId { stream: StreamId::new(Dialect::Iotstream, device), start: minute * 60_000_000_000 }
    }

    #[test]
    fn every_member_works_out_the_same_coordinators_and_they_spread_evenly() {
        let names: Vec<String> = (0..20).map(|i| format!("n{i}")).collect();
        let a = Members::new(names.clone());
        let mut reversed = names.clone();
        reversed.reverse();
        let b = Members::new(reversed);
        assert_eq!(a, b);
        let mut load = vec![0u32; 20];
        for d in 0..200 {
            for m in 0..10 {
                let c = a.coordinators(window(d, m), 3);
                assert_eq!(c, b.coordinators(window(d, m), 3));
                assert_eq!(c.len(), 3);
                for i in c {
                    load[i as usize] += 1;
                }
            }
        }
        // 6,000 places over 20 members: 300 each, give or take chance (σ ≈ 17).
        assert!(load.iter().all(|l| (240..360).contains(l)), "{load:?}");
        // Kademlia's XOR distance to the window's key, the first choice, spreads them by
        // the gaps between the members' keys: measured here (`cargo test -p
        // telemesh-proto members -- --nocapture` prints both).
        let keys: Vec<[u8; 32]> = names.iter().map(|n| *blake3::hash(n.as_bytes()).as_bytes()).collect();
        let mut xor = vec![0u32; 20];
        for d in 0..200 {
            for m in 0..10 {
                let w = window(d, m);
                let mut id = [0u8; 13];
                id[..5].copy_from_slice(&w.stream.key_prefix());
                id[5..].copy_from_slice(&w.start.to_be_bytes());
                let target = blake3::hash(&id);
                let mut by: Vec<([u8; 32], usize)> =
                    keys.iter().enumerate().map(|(i, k)| (std::array::from_fn(|j| k[j] ^ target.as_bytes()[j]), i)).collect();
                by.sort_unstable();
                for (_, i) in by.into_iter().take(3) {
                    xor[i] += 1;
                }
            }
        }
        let spread = |l: &[u32]| (*l.iter().min().unwrap_or(&0) as f64 / 300.0, *l.iter().max().unwrap_or(&0) as f64 / 300.0);
        println!("share of 20 members, min and max: rendezvous {:.2?}, XOR distance {:.2?}", spread(&load), spread(&xor));
        assert!(spread(&xor).1 - spread(&xor).0 > spread(&load).1 - spread(&load).0);
        // Fewer members than asked for: all of them.
        assert_eq!(Members::new(vec!["a".into(), "b".into()]).coordinators(window(1, 1), 3).len(), 2);
    }

    #[test]
    fn a_change_of_membership_moves_only_the_windows_of_who_came_or_went_and_changes_the_digest() {
        let names: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        let before = Members::new(names.clone());
        let after = Members::new(names[1..].to_vec());
        assert_ne!(before.digest(), after.digest());
        for d in 0..100 {
            let w = window(d, 0);
            let was: Vec<&str> = before.coordinators(w, 3).into_iter().filter_map(|i| before.name(i)).collect();
            let now: Vec<&str> = after.coordinators(w, 3).into_iter().filter_map(|i| after.name(i)).collect();
            if !was.contains(&"n0") {
                assert_eq!(was, now);
            }
        }
        assert_eq!(before.index("n3"), Some(3));
        assert_eq!(before.index("x"), None);
    }
}
