//! A stream's history as the node knows it: stored windows plus the records still
//! pending in memory, merged in device order.

use telemesh_proto::record::{Record, StreamId};
use telemesh_proto::stream::{Lookup, Neighbour, Presence};
use telemesh_proto::window;

use crate::store::{merge, Store, StoreError, StoredRecord};

/// Records of `stream`'s window starting at `w`: stored chunks and pending, merged.
fn window_with_pending(store: &dyn Store, pending: &[StoredRecord], stream: StreamId, w: u64, stored: bool) -> Result<Vec<StoredRecord>, StoreError> {
    let mut recs = if stored { store.window(stream, w)? } else { Vec::new() };
    recs.extend(pending.iter().filter(|r| r.window() == w).cloned());
    Ok(merge(recs))
}

/// A record's place in its stream: device time, seq, content tag
/// ([`StoredRecord::order_key`]).
pub type OrderKey = (u64, u64, [u8; 8]);

/// The first place at device time `ns`.
pub fn at(ns: u64) -> OrderKey {
    (ns, 0, [0; 8])
}

/// The place just after `key`, if there is one.
pub fn after(key: OrderKey) -> Option<OrderKey> {
    let (t, seq, tag) = key;
    match u64::from_be_bytes(tag).checked_add(1) {
        Some(next) => Some((t, seq, next.to_be_bytes())),
        None => match seq.checked_add(1) {
            Some(s) => Some((t, s, [0; 8])),
            None => t.checked_add(1).map(at),
        },
    }
}

/// Records of `stream` with `from_ns <= device time <= to_ns`, in device order, at most
/// `limit`.
pub fn records(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    from_ns: u64,
    to_ns: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, StoreError> {
    records_from(store, pending, stream, at(from_ns), to_ns, limit)
}

/// Records of `stream` at or after `start` with device time up to `to_ns`, in order, at
/// most `limit`.
pub fn records_from(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    start: OrderKey,
    to_ns: u64,
    limit: usize,
) -> Result<Vec<StoredRecord>, StoreError> {
    let mut out = Vec::new();
    forward(store, pending, stream, start, to_ns, |recs| {
        out.extend(recs);
        out.len() < limit
    })?;
    out.truncate(limit);
    Ok(out)
}

/// The last `limit` records of `stream` before `bound` with device time from `from_ns`,
/// in order (oldest first): a page read backwards, for the newest records first.
pub fn records_back(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    from_ns: u64,
    bound: OrderKey,
    limit: usize,
) -> Result<Vec<StoredRecord>, StoreError> {
    let mut out: Vec<StoredRecord> = Vec::new();
    backward(store, pending, stream, from_ns, bound, |mut recs| {
        recs.append(&mut out);
        out = recs;
        out.len() < limit
    })?;
    let cut = out.len().saturating_sub(limit);
    Ok(out.split_off(cut))
}

/// Records of `stream` with `from_ns <= device time <= to_ns`, handed to `f` one window at
/// a time in device order (stored and pending records merged, as [`records`] gives them): a
/// pass over a long range holds one window in memory, not the range.
pub fn for_each_window(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    from_ns: u64,
    to_ns: u64,
    mut f: impl FnMut(Vec<StoredRecord>),
) -> Result<(), StoreError> {
    forward(store, pending, stream, at(from_ns), to_ns, |recs| {
        f(recs);
        true
    })
}

/// The last record of `stream` before device time `before_ns`.
pub fn record_before(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    before_ns: u64,
) -> Result<Option<StoredRecord>, StoreError> {
    record_before_key(store, pending, stream, at(before_ns))
}

/// The last record of `stream` before `bound`.
pub fn record_before_key(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    bound: OrderKey,
) -> Result<Option<StoredRecord>, StoreError> {
    let mut last = None;
    backward(store, pending, stream, 0, bound, |mut recs| {
        last = recs.pop();
        last.is_none()
    })?;
    Ok(last)
}

/// Hands `f` the records of `stream` at or after `start` with device time up to `to_ns`,
/// one window at a time in device order (stored and pending records merged; windows
/// without any are skipped), while `f` says to go on.
fn forward(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    start: OrderKey,
    to_ns: u64,
    mut f: impl FnMut(Vec<StoredRecord>) -> bool,
) -> Result<(), StoreError> {
    let mut w = window::start(start.0);
    loop {
        let stored = store.window_at_or_after(stream, w)?;
        let in_memory = pending.iter().map(StoredRecord::window).filter(|x| *x >= w).min();
        let Some(cur) = [stored, in_memory].into_iter().flatten().min() else { break };
        if cur > to_ns {
            break;
        }
        let mut recs = window_with_pending(store, pending, stream, cur, stored == Some(cur))?;
        recs.retain(|r| r.order_key() >= start && r.record.device_time_ns <= to_ns);
        if !f(recs) || window::next(cur) == cur {
            break;
        }
        w = window::next(cur);
    }
    Ok(())
}

/// Hands `f` the records of `stream` before `bound` with device time from `from_ns`, one
/// window at a time, newest window first (each in device order), while `f` says to go on.
fn backward(
    store: &dyn Store,
    pending: &[StoredRecord],
    stream: StreamId,
    from_ns: u64,
    bound: OrderKey,
    mut f: impl FnMut(Vec<StoredRecord>) -> bool,
) -> Result<(), StoreError> {
    let first = window::start(from_ns);
    // The window holding `bound` may hold earlier records too; then each earlier one that
    // holds records.
    let mut w = window::start(bound.0);
    let mut stored = store.window_at_or_after(stream, w)? == Some(w);
    while w >= first {
        let mut recs = window_with_pending(store, pending, stream, w, stored)?;
        recs.retain(|r| r.order_key() < bound && r.record.device_time_ns >= from_ns);
        if !f(recs) {
            break;
        }
        let earlier_stored = store.window_before(stream, w)?;
        let earlier_pending = pending.iter().map(StoredRecord::window).filter(|x| *x < w).max();
        let Some(prev) = [earlier_stored, earlier_pending].into_iter().flatten().max() else { break };
        stored = earlier_stored == Some(prev);
        w = prev;
    }
    Ok(())
}

/// What the ingest state asks when its window cannot decide: is `rec`'s identity held,
/// and what is the record before it. Pending records are looked at first, so a quick
/// duplicate costs no store read.
pub fn lookup(store: &dyn Store, pending: &[StoredRecord], rec: &Record) -> Result<Lookup, StoreError> {
    let tag = rec.content_tag();
    let same_identity = |r: &StoredRecord| r.record.device_time_ns == rec.device_time_ns && r.record.seq == rec.seq;
    if pending.iter().any(|r| same_identity(r) && r.tag == tag && r.record.same_content(rec)) {
        return Ok(Lookup { presence: Presence::Same, predecessor: None });
    }
    let w = window::start(rec.device_time_ns);
    let recs = window_with_pending(store, pending, rec.stream, w, true)?;
    let presence = if recs.iter().any(|r| same_identity(r) && r.record.same_content(rec)) {
        Presence::Same
    } else if recs.iter().any(same_identity) {
        Presence::Different
    } else {
        Presence::Absent
    };
    let before = (rec.device_time_ns, rec.seq);
    let predecessor = match recs.iter().rfind(|r| (r.record.device_time_ns, r.record.seq) < before) {
        Some(r) => Some(r.clone()),
        None => record_before(store, pending, rec.stream, w)?,
    };
    Ok(Lookup { presence, predecessor: predecessor.map(|p| Neighbour { seq: p.record.seq, ext_seq: p.ext_seq }) })
}
