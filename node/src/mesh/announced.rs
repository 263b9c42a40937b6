//! Windows this node announced lately, kept a while after a new seal replaces them.
//!
//! A peer repairs from the compact index it saw in an announcement and asks for that
//! root's symbols. If a repair or new records changed the window here in the meantime,
//! the store holds only the new root, and the peer would get `NotFound` and start over.
//! So the blob of every announced root stays servable for [`KEEP`] (or until
//! [`MAX_BYTES`] of newer blobs push it out), whatever the store does
//! (`docs/protocol.md`, "Repair").

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use telemesh_proto::mesh::Held;
use telemesh_proto::window::Root;

/// How long an announced root stays servable.
pub const KEEP: Duration = Duration::from_secs(30);
/// Blob bytes kept at most; the oldest go first.
pub const MAX_BYTES: usize = 16 << 20;

/// Announced roots and their blobs, oldest first.
#[derive(Debug)]
pub struct Announced {
    held: HashMap<Root, Held>,
    order: VecDeque<(u64, Root)>,
    bytes: usize,
    keep_ns: u64,
    max_bytes: usize,
}

impl Default for Announced {
    fn default() -> Self {
        Announced::new(KEEP, MAX_BYTES)
    }
}

impl Announced {
    pub fn new(keep: Duration, max_bytes: usize) -> Self {
        let keep_ns = u64::try_from(keep.as_nanos()).unwrap_or(u64::MAX);
        Announced { held: HashMap::new(), order: VecDeque::new(), bytes: 0, keep_ns, max_bytes }
    }

    /// Keeps `held` (whose root is `root`) from `now_ns` on; a blob larger than the whole
    /// budget is not kept.
    pub fn insert(&mut self, root: Root, held: Held, now_ns: u64) {
        self.expire(now_ns);
        let len = held.blob.len();
        if len > self.max_bytes || self.held.contains_key(&root) {
            return;
        }
        while self.bytes + len > self.max_bytes {
            self.pop_oldest();
        }
        self.bytes += len;
        self.held.insert(root, held);
        self.order.push_back((now_ns, root));
    }

    /// The blob and provenance of `root`, if announced within [`KEEP`] and still kept.
    pub fn get(&self, root: &Root) -> Option<Held> {
        self.held.get(root).cloned()
    }

    /// Forgets roots announced more than [`KEEP`] before `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        while self.order.front().is_some_and(|(at, _)| now_ns.saturating_sub(*at) > self.keep_ns) {
            self.pop_oldest();
        }
    }

    /// Blob bytes kept.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn pop_oldest(&mut self) {
        if let Some((_, root)) = self.order.pop_front() {
            if let Some(held) = self.held.remove(&root) {
                self.bytes -= held.blob.len();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use telemesh_proto::mesh::Table;

    fn held(len: usize) -> Held {
        Held { blob: Arc::new(vec![0; len]), table: Table::default() }
    }

    #[test]
    fn a_root_is_served_for_keep_then_forgotten() {
        let mut a = Announced::new(Duration::from_secs(30), 1 << 20);
        a.insert([1; 32], held(100), 0);
        a.insert([2; 32], held(100), 10_000_000_000);
        a.expire(30_000_000_000);
        assert!(a.get(&[1; 32]).is_some());
        a.expire(30_000_000_001);
        assert!(a.get(&[1; 32]).is_none(), "kept past KEEP");
        assert!(a.get(&[2; 32]).is_some());
        assert_eq!(a.bytes(), 100);
    }

    #[test]
    fn the_oldest_go_first_when_the_budget_is_full() {
        let mut a = Announced::new(Duration::from_secs(30), 250);
        for k in 0..3u8 {
            a.insert([k; 32], held(100), u64::from(k));
        }
        assert!(a.get(&[0; 32]).is_none());
        assert!(a.get(&[1; 32]).is_some() && a.get(&[2; 32]).is_some());
        assert_eq!(a.bytes(), 200);
        // Too big to keep at all: nothing else is pushed out for it.
        a.insert([9; 32], held(251), 5);
        assert!(a.get(&[9; 32]).is_none());
        assert_eq!(a.bytes(), 200);
        // The same root twice counts once.
        a.insert([2; 32], held(100), 6);
        assert_eq!(a.bytes(), 200);
    }
}
