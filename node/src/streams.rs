//! The in-memory table of per-stream states, bounded in size.
//!
//! A stream's state is loaded from the store on its first datagram, marked dirty when it
//! changes, written back every flush interval, and dropped from memory when the stream is
//! idle or the table is full (least recently active first). Memory is therefore bounded
//! by `max_streams` × (state size + map overhead), about 700 bytes each.

use std::collections::HashMap;

use telemesh_proto::record::StreamId;
use telemesh_proto::stream::State;

use crate::store::{Store, StoreError};

#[derive(Debug)]
struct Entry {
    state: State,
    dirty: bool,
    touched_ns: u64,
}

/// Per-stream states in memory.
#[derive(Debug)]
pub struct Table {
    entries: HashMap<StreamId, Entry>,
    max: usize,
}

impl Table {
    pub fn new(max: usize) -> Table {
        Table { entries: HashMap::new(), max }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The state of `id`, loaded from the store (or new) if not in memory; marked dirty.
    /// At capacity, the least recently active tenth of the table is written back and
    /// dropped first.
    pub fn get_mut(&mut self, id: StreamId, now_ns: u64, store: &dyn Store) -> Result<&mut State, StoreError> {
        if !self.entries.contains_key(&id) {
            if self.entries.len() >= self.max {
                let keep = self.max - self.max / 10 - 1;
                self.shrink_to(keep, store)?;
            }
            let state = store.state(id)?.unwrap_or_default();
            self.entries.insert(id, Entry { state, dirty: false, touched_ns: now_ns });
        }
        // Just inserted if absent, so present.
        let entry = self.entries.entry(id).or_insert_with(|| Entry { state: State::default(), dirty: false, touched_ns: now_ns });
        entry.dirty = true;
        entry.touched_ns = now_ns;
        Ok(&mut entry.state)
    }

    /// States changed since the last call, marked clean.
    pub fn take_dirty(&mut self) -> Vec<(StreamId, State)> {
        self.entries
            .iter_mut()
            .filter(|(_, e)| e.dirty)
            .map(|(id, e)| {
                e.dirty = false;
                (*id, e.state.clone())
            })
            .collect()
    }

    /// Writes back and drops streams silent since before `cutoff_ns`.
    pub fn evict_idle(&mut self, cutoff_ns: u64, store: &dyn Store) -> Result<usize, StoreError> {
        let idle: Vec<StreamId> =
            self.entries.iter().filter(|(_, e)| e.touched_ns < cutoff_ns).map(|(id, _)| *id).collect();
        self.evict(&idle, store)?;
        Ok(idle.len())
    }

    fn shrink_to(&mut self, keep: usize, store: &dyn Store) -> Result<(), StoreError> {
        let mut by_age: Vec<(u64, StreamId)> = self.entries.iter().map(|(id, e)| (e.touched_ns, *id)).collect();
        by_age.sort_unstable();
        let n = self.entries.len().saturating_sub(keep);
        let oldest: Vec<StreamId> = by_age.into_iter().take(n).map(|(_, id)| id).collect();
        self.evict(&oldest, store)
    }

    fn evict(&mut self, ids: &[StreamId], store: &dyn Store) -> Result<(), StoreError> {
        let dirty: Vec<(StreamId, State)> = ids
            .iter()
            .filter_map(|id| self.entries.get(id).filter(|e| e.dirty).map(|e| (*id, e.state.clone())))
            .collect();
        store.put_states(&dirty)?;
        for id in ids {
            self.entries.remove(id);
        }
        Ok(())
    }

    /// A copy of every in-memory state.
    pub fn snapshot(&self) -> Vec<(StreamId, State)> {
        self.entries.iter().map(|(id, e)| (*id, e.state.clone())).collect()
    }

    pub fn get(&self, id: &StreamId) -> Option<&State> {
        self.entries.get(id).map(|e| &e.state)
    }
}
