//! Who tells whom about a window that changed (`docs/protocol.md`, "Coordinators").
//!
//! Without coordinators every node announces every change of its copy to every node: a
//! node then receives one announcement per site and window, and more after repairs — a
//! cost per record that grows with the number of sites. With `r` coordinators per window
//! ([`super::Members::coordinators`]):
//!
//! - a node sends its own changes (a seal, a late record: its receipts changed) at once
//!   to the window's coordinators only — an *offer*, with its index and its own row;
//! - a coordinator repairs what it was offered like any announced root, and announces
//!   the window to every node — with the rows of every node it knows — once it holds
//!   every root it was told of and every other member has offered it, or nothing new has
//!   come for half a tick — or, whatever it still waits for, once the change is
//!   [`MAX_HOLD_TICKS`] ticks old;
//! - the coordinator of rank `k` (0 first) waits `k` ticks more and stays silent if a
//!   coordinator of lower rank announced the same root and provenance: usually one
//!   announcement per window reaches each node;
//! - nothing is announced because of a repair or a merge of other nodes' rows, except by
//!   coordinators.
//!
//! Pure: time is passed in, and the caller says what it holds and wants.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::{Members, Summary, WindowId};
use crate::window::Root;

/// Most windows whose members' announcements and offers are remembered.
pub const MAX_HEARD: usize = 1 << 16;
/// A coordinator announces a change this many ticks old (plus its rank) even if a root
/// it was told of is still not held (its holder gone) or offers keep coming.
pub const MAX_HOLD_TICKS: u64 = 8;

/// What to send about one window now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub window: WindowId,
    /// Members to offer it to (our own change, to its coordinators but us).
    pub offer: Vec<u32>,
    /// Announce it to every node, with the rows of every node we know.
    pub publish: bool,
    /// Sign the announcement: it carries our own receipts and no offer of ours does (no
    /// coordinators, or we are the window's only one) — `docs/protocol.md`, "Statements".
    pub sign: bool,
}

/// What one window's members told us.
#[derive(Debug, Default)]
struct Heard {
    /// The rank, root and provenance digest of the latest announcement one of its
    /// coordinators made.
    said: Option<(usize, Root, [u8; 8])>,
    /// The members that announced or offered it to us (a bitmap over the member list).
    told_by: Vec<u8>,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Our own receipts changed since we last sent it.
    own: bool,
    /// When it (or what we were told of it) last changed.
    since_ns: u64,
    /// When it first waited.
    first_ns: u64,
    /// Our rank among its coordinators, for the member list with this digest (worked out
    /// once: a coordinator's window is looked at every check while it waits).
    rank: Option<([u8; 8], usize)>,
    /// Our own receipts changed and no offer of ours carried them: the announcement does.
    unkept: bool,
}

/// One node's announcement schedule (module docs).
#[derive(Debug)]
pub struct Announcer {
    /// Coordinators per window; `None`: every node announces every change to everyone.
    coordinators: Option<usize>,
    tick_ns: u64,
    pending: BTreeMap<WindowId, Pending>,
    /// Per window: what its coordinators and sites told us.
    heard: HashMap<WindowId, Heard>,
    heard_order: VecDeque<WindowId>,
}

impl Announcer {
    pub fn new(coordinators: Option<usize>, tick_ns: u64) -> Self {
        Announcer { coordinators, tick_ns, pending: BTreeMap::new(), heard: HashMap::new(), heard_order: VecDeque::new() }
    }

    /// Whether windows are announced through coordinators.
    pub fn coordinated(&self) -> bool {
        self.coordinators.is_some()
    }

    /// Coordinators per window from now on (`None`: everyone announces to everyone, as
    /// in an open mesh or before this node is admitted to a closed one).
    pub fn set_coordinators(&mut self, coordinators: Option<usize>) {
        self.coordinators = coordinators;
    }

    /// A send that could not go out now (over a tick's budget) waits for the next tick:
    /// an offer as our own change, an announcement as one already due.
    pub fn defer(&mut self, send: &Send, now_ns: u64) {
        let since_ns = if send.offer.is_empty() { 0 } else { now_ns };
        let p = self.pending.entry(send.window).or_insert(Pending { own: false, since_ns, first_ns: since_ns, rank: None, unkept: false });
        p.own |= !send.offer.is_empty();
        p.unkept |= send.sign;
    }

    /// Nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Windows waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Forgets the windows waiting beyond the first `keep` (in window order) and returns
    /// them: the caller announces them another way (without an index, or not at all).
    pub fn take_over(&mut self, keep: usize) -> Vec<WindowId> {
        let mut out = Vec::new();
        while self.pending.len() > keep {
            match self.pending.pop_last() {
                Some((w, _)) => out.push(w),
                None => break,
            }
        }
        out
    }

    /// Our copy of `window` changed: `own` if our own receipts did (records we heard, or
    /// our receipts of records we held by repair), else by repair or merged rows.
    pub fn changed(&mut self, window: WindowId, own: bool, now_ns: u64) {
        let p = self.pending.entry(window).or_insert(Pending { own: false, since_ns: now_ns, first_ns: now_ns, rank: None, unkept: false });
        p.own |= own;
        p.since_ns = p.since_ns.max(now_ns);
    }

    /// `from` told us of `summary` (announced or offered it): if it coordinates the
    /// window, its announcement may make ours redundant; if we do, it is one more member
    /// heard from, and if it does not, we wait a little longer for the others.
    pub fn told(&mut self, members: &Members, me: &str, from: &str, summary: &Summary, now_ns: u64) {
        let Some(r) = self.coordinators else { return };
        let list = members.coordinators(summary.window, r);
        let rank = |name: &str| members.index(name).and_then(|m| list.iter().position(|c| *c == m));
        let (Some(m), Some(_)) = (members.index(from), rank(me).or(rank(from))) else { return };
        if !self.heard.contains_key(&summary.window) {
            self.heard_order.push_back(summary.window);
            while self.heard_order.len() > MAX_HEARD {
                if let Some(old) = self.heard_order.pop_front() {
                    self.heard.remove(&old);
                }
            }
        }
        let heard = self.heard.entry(summary.window).or_default();
        if let Some(k) = rank(from) {
            heard.said = Some((k, summary.root, summary.provenance));
        }
        if heard.told_by.len() <= m as usize / 8 {
            heard.told_by.resize(m as usize / 8 + 1, 0);
        }
        heard.told_by[m as usize / 8] |= 1 << (m % 8);
        // A site's offer is news for a coordinator: it waits a little longer. (Another
        // coordinator's offer comes with our own, which restarts the wait anyway.)
        if rank(me).is_some() && rank(from).is_none() {
            if let Some(p) = self.pending.get_mut(&summary.window) {
                p.since_ns = p.since_ns.max(now_ns);
            }
        }
    }

    /// What to send now. `ours(w)` is our current summary of a window (`None`: we no
    /// longer hold it), `wants(w)` whether a root of it we were told of is not held yet.
    /// A coordinator's windows that are not due stay pending.
    pub fn due(
        &mut self,
        members: &Members,
        me: &str,
        now_ns: u64,
        ours: impl Fn(WindowId) -> Option<Summary>,
        wants: impl Fn(WindowId) -> bool,
    ) -> Vec<Send> {
        let mut out = Vec::new();
        let Some(r) = self.coordinators else {
            let all = std::mem::take(&mut self.pending);
            let due = all.into_keys().filter(|w| ours(*w).is_some());
            return due.map(|window| Send { window, offer: Vec::new(), publish: true, sign: true }).collect();
        };
        let me_index = members.index(me);
        for (window, p) in std::mem::take(&mut self.pending) {
            let Some(summary) = ours(window) else { continue };
            let (rank, offer) = match p.rank {
                Some((digest, k)) if digest == members.digest() && !p.own => (Some(k), Vec::new()),
                _ => {
                    let list = members.coordinators(window, r);
                    let rank = me_index.and_then(|m| list.iter().position(|c| *c == m));
                    let offer: Vec<u32> = if p.own { list.into_iter().filter(|c| Some(*c) != me_index).collect() } else { Vec::new() };
                    (rank, offer)
                }
            };
            let unkept = p.unkept || (p.own && offer.is_empty());
            let mut publish = false;
            if let Some(k) = rank {
                // An offer of ours counts as a change: the other coordinators' offers, sent
                // at their tick, have time to arrive.
                let since = if offer.is_empty() { p.since_ns } else { now_ns };
                let first = if offer.is_empty() { p.first_ns } else { now_ns };
                // Every other member told us of it: nobody's offer is still to come.
                let told = self.heard.get(&window).map_or(0, |h| h.told_by.iter().map(|b| b.count_ones() as usize).sum());
                let everyone = told + 1 >= members.len();
                let quiet = if everyone { 0 } else { self.tick_ns / 2 } + k as u64 * self.tick_ns;
                let overdue = now_ns.saturating_sub(first) >= (MAX_HOLD_TICKS + k as u64) * self.tick_ns;
                if !overdue && (wants(window) || now_ns.saturating_sub(since) < quiet) {
                    let rank = Some((members.digest(), k));
                    self.pending.insert(window, Pending { own: false, since_ns: since, first_ns: first, rank, unkept });
                } else {
                    let said = self.heard.get(&window).and_then(|h| h.said);
                    publish = !said.is_some_and(|(j, root, p)| j < k && root == summary.root && p == summary.provenance);
                }
            }
            if publish || !offer.is_empty() {
                out.push(Send { window, offer, publish, sign: publish && unkept });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::StreamId;
    use crate::wire::Dialect;

    const TICK: u64 = 250_000_000;

    fn setup() -> (Members, WindowId, Vec<String>) {
        let members = Members::new((0..10).map(|i| format!("n{i}")).collect());
        let w = WindowId { stream: StreamId::new(Dialect::Iotstream, 7), start: 60_000_000_000 };
        let order: Vec<String> = members.coordinators(w, 3).into_iter().filter_map(|i| members.name(i).map(str::to_owned)).collect();
        (members, w, order)
    }

    fn summary(w: WindowId, root: u8) -> Summary {
        Summary { window: w, root: [root; 32], count: 60, slot_size: 32, provenance: [root; 8] }
    }

    #[test]
    fn a_site_offers_its_seal_to_the_coordinators_and_announces_nothing_it_repaired() {
        let (members, w, coordinators) = setup();
        let me = (0..10).map(|i| format!("n{i}")).find(|n| !coordinators.contains(n)).expect("a non-coordinator");
        let mut a = Announcer::new(Some(3), TICK);
        a.changed(w, true, 0);
        let sent = a.due(&members, &me, 0, |_| Some(summary(w, 1)), |_| false);
        let names: Vec<&str> = sent[0].offer.iter().filter_map(|i| members.name(*i)).collect();
        assert_eq!(names, coordinators.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!sent[0].publish);
        assert!(a.is_empty());
        // A repair (not our receipts) changes nothing we tell anyone.
        a.changed(w, false, TICK);
        assert!(a.due(&members, &me, TICK, |_| Some(summary(w, 2)), |_| false).is_empty());
        assert!(a.is_empty());
    }

    #[test]
    fn the_first_coordinator_announces_once_it_holds_everything_and_the_next_stays_silent() {
        let (members, w, coordinators) = setup();
        let (first, second) = (&coordinators[0], &coordinators[1]);
        let mut near = Announcer::new(Some(3), TICK);
        let mut next = Announcer::new(Some(3), TICK);
        for a in [&mut near, &mut next] {
            a.changed(w, true, 0);
        }
        // Each offers its seal to the other coordinators at once, and waits.
        let sent = near.due(&members, first, 0, |_| Some(summary(w, 1)), |_| false);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].offer.len(), 2);
        assert!(!sent[0].publish);
        assert!(next.due(&members, second, 0, |_| Some(summary(w, 2)), |_| false).iter().all(|s| !s.publish));
        // Offers arrive and are repaired: still waiting while a root is wanted.
        near.told(&members, first, "n0", &summary(w, 3), 50_000_000);
        near.changed(w, false, 80_000_000);
        assert!(near.due(&members, first, TICK, |_| Some(summary(w, 9)), |_| true).is_empty());
        // Holds everything, quiet for half a tick: announces, offers nothing more.
        let sent = near.due(&members, first, 2 * TICK, |_| Some(summary(w, 9)), |_| false);
        assert_eq!(sent, vec![Send { window: w, offer: Vec::new(), publish: true, sign: false }]);
        // The next coordinator waits a tick more, hears the same, and stays silent.
        next.changed(w, false, 200_000_000);
        assert!(next.due(&members, second, 2 * TICK, |_| Some(summary(w, 9)), |_| false).is_empty());
        next.told(&members, second, first, &summary(w, 9), 2 * TICK + 20_000_000);
        assert!(next.due(&members, second, 3 * TICK + 20_000_000, |_| Some(summary(w, 9)), |_| false).is_empty());
        assert!(next.is_empty());
        // Had the first said something else (or nothing), it would have spoken.
        let mut other = Announcer::new(Some(3), TICK);
        other.changed(w, false, 0);
        other.told(&members, second, first, &summary(w, 8), TICK / 4);
        assert!(other.due(&members, second, 2 * TICK, |_| Some(summary(w, 9)), |_| false)[0].publish);
    }

    #[test]
    fn once_every_other_member_has_offered_a_window_its_first_coordinator_need_not_wait() {
        let (members, w, coordinators) = setup();
        let first = &coordinators[0];
        let mut a = Announcer::new(Some(3), TICK);
        a.changed(w, false, 0);
        let others: Vec<String> = (0..10).map(|i| format!("n{i}")).filter(|n| n != first).collect();
        for (i, n) in others.iter().enumerate() {
            a.told(&members, first, n, &summary(w, i as u8), 1_000);
            // All but the last: the quiet after the latest offer still counts.
            if i + 2 < others.len() {
                assert!(a.due(&members, first, 2_000, |_| Some(summary(w, 9)), |_| false).is_empty());
            }
        }
        let sent = a.due(&members, first, 2_000, |_| Some(summary(w, 9)), |_| false);
        assert_eq!(sent, vec![Send { window: w, offer: Vec::new(), publish: true, sign: false }]);
    }

    #[test]
    fn a_coordinator_waiting_for_a_root_that_never_comes_announces_what_it_holds_in_the_end() {
        let (members, w, coordinators) = setup();
        let mut a = Announcer::new(Some(3), TICK);
        a.changed(w, false, 0);
        let mut t = 0;
        while a.due(&members, &coordinators[0], t, |_| Some(summary(w, 1)), |_| true).is_empty() {
            t += TICK;
            assert!(t <= MAX_HOLD_TICKS * TICK, "still silent after {t} ns");
        }
        assert_eq!(t, MAX_HOLD_TICKS * TICK);
    }

    #[test]
    fn without_coordinators_every_change_goes_to_everyone() {
        let (members, w, _) = setup();
        let mut a = Announcer::new(None, TICK);
        a.changed(w, false, 0);
        let signed = vec![Send { window: w, offer: Vec::new(), publish: true, sign: true }];
        assert_eq!(a.due(&members, "n1", 0, |_| Some(summary(w, 1)), |_| true), signed);
        a.changed(w, true, 0);
        assert!(a.due(&members, "n1", 0, |_| None, |_| false).is_empty());
    }
}
