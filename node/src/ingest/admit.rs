//! Admission of new streams: how many devices a source address, or a dialect as a whole,
//! may start per second (`docs/operations.md`, "New streams").
//!
//! A datagram whose stream this node has no state for starts a stream: in memory, on
//! disk, in the mesh. Each start takes one token from its source address's budget and one
//! from its dialect's (token buckets: a rate and a burst); with either empty the datagram is
//! dropped and counted, and the device tries again with its next datagram. Streams that
//! exist are never limited, and neither are authenticated devices (a valid tag, or DTLS
//! with a client certificate): what is limited is anyone on the network speaking for
//! device ids nobody has heard before. Both budgets are off unless configured.

use std::collections::HashMap;
use std::net::IpAddr;

pub use telemesh_proto::budget::Budget;
use telemesh_proto::budget::Bucket;

/// The operator's limits (`--new-streams-per-source`, `--new-streams-per-dialect`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Policy {
    pub per_source: Option<Budget>,
    pub per_dialect: Option<Budget>,
}

/// Source addresses whose budgets are remembered; beyond it, those refilled to their
/// burst (they hold nothing worth keeping) are forgotten first.
pub const MAX_SOURCES: usize = 65_536;
/// After a sweep that forgot nothing, how long before the next one (a sweep reads every
/// source): new sources meanwhile are refused.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

/// Why a new stream was refused: the drop reasons it is counted under.
pub const SOURCE_LIMITED: &str = "new_stream_source_limit";
pub const DIALECT_LIMITED: &str = "new_stream_dialect_limit";

/// One dialect's admission state (a listener's: each dialect has its own thread).
#[derive(Debug)]
pub struct Admission {
    policy: Policy,
    dialect: Option<Bucket>,
    sources: HashMap<IpAddr, Bucket>,
    swept_ns: Option<u64>,
}

impl Admission {
    /// `None` when the policy limits nothing.
    pub fn new(policy: Policy, now_ns: u64) -> Option<Admission> {
        (policy.per_source.is_some() || policy.per_dialect.is_some()).then(|| Admission {
            policy,
            dialect: policy.per_dialect.map(|b| Bucket::full(&b, now_ns)),
            sources: HashMap::new(),
            swept_ns: None,
        })
    }

    /// Whether a new stream from `source` may start now: if so one token is taken from
    /// each budget, if not none is and the reason is returned.
    pub fn admit(&mut self, source: Option<IpAddr>, now_ns: u64) -> Result<(), &'static str> {
        if let (Some(budget), Some(bucket)) = (&self.policy.per_dialect, &mut self.dialect) {
            bucket.refill(budget, now_ns);
            if !bucket.has_token() {
                return Err(DIALECT_LIMITED);
            }
        }
        if let (Some(budget), Some(ip)) = (self.policy.per_source, source) {
            if !self.sources.contains_key(&ip) && !self.room(&budget, now_ns) {
                return Err(SOURCE_LIMITED);
            }
            let bucket = self.sources.entry(ip).or_insert_with(|| Bucket::full(&budget, now_ns));
            bucket.refill(&budget, now_ns);
            if !bucket.has_token() {
                return Err(SOURCE_LIMITED);
            }
            bucket.spend();
        }
        if let Some(bucket) = &mut self.dialect {
            bucket.spend();
        }
        Ok(())
    }

    /// Room for one more source: forgets refilled ones when the map is full.
    fn room(&mut self, budget: &Budget, now_ns: u64) -> bool {
        if self.sources.len() < MAX_SOURCES {
            return true;
        }
        if self.swept_ns.is_some_and(|t| now_ns.saturating_sub(t) < SWEEP_EVERY_NS) {
            return false;
        }
        self.sources.retain(|_, b| {
            b.refill(budget, now_ns);
            !b.is_full(budget)
        });
        self.swept_ns = (self.sources.len() >= MAX_SOURCES).then_some(now_ns);
        self.sources.len() < MAX_SOURCES
    }

    /// Source addresses remembered.
    pub fn sources(&self) -> usize {
        self.sources.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(i: u32) -> Option<IpAddr> {
        Some(IpAddr::from(i.to_be_bytes()))
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate_and_others_are_not_held_back() {
        let per_source = Some(Budget { rate: 2.0, burst: 5 });
        let mut a = Admission::new(Policy { per_source, per_dialect: None }, 0).expect("limits");
        let took = (0..20).filter(|_| a.admit(ip(1), 0).is_ok()).count();
        assert_eq!(took, 5, "the burst");
        assert_eq!(a.admit(ip(1), 0), Err(SOURCE_LIMITED));
        assert!(a.admit(ip(2), 0).is_ok(), "another source has its own budget");
        // Two a second after that.
        let took = (0..20).filter(|_| a.admit(ip(1), S).is_ok()).count();
        assert_eq!(took, 2);
        // No address (a frame from a channel that has none): only the dialect's budget.
        assert!(a.admit(None, S).is_ok());
        assert!(Admission::new(Policy::default(), 0).is_none());
    }

    #[test]
    fn the_dialect_budget_holds_spoofed_sources_back_and_a_refusal_takes_nothing() {
        let policy = Policy { per_source: Some(Budget { rate: 1.0, burst: 1 }), per_dialect: Some(Budget { rate: 10.0, burst: 10 }) };
        let mut a = Admission::new(policy, 0).expect("limits");
        let took = (0..1000).filter(|i| a.admit(ip(*i), 0).is_ok()).count();
        assert_eq!(took, 10, "a thousand addresses, ten new streams");
        // A source refused by its own budget does not spend the dialect's.
        let mut b = Admission::new(policy, 0).expect("limits");
        assert!(b.admit(ip(7), 0).is_ok());
        for _ in 0..100 {
            assert_eq!(b.admit(ip(7), 0), Err(SOURCE_LIMITED));
        }
        assert_eq!((0..100).filter(|i| b.admit(ip(100 + i), 0).is_ok()).count(), 9);
    }

    #[test]
    fn remembered_sources_are_bounded() {
        let per_source = Some(Budget { rate: 1.0, burst: 2 });
        let mut a = Admission::new(Policy { per_source, per_dialect: None }, 0).expect("limits");
        for i in 0..MAX_SOURCES as u32 {
            assert!(a.admit(ip(i), 0).is_ok());
        }
        // Full of sources that spent a token: a new one waits (and no sweep runs for it
        // again within the second).
        assert_eq!(a.admit(ip(u32::MAX), 0), Err(SOURCE_LIMITED));
        assert_eq!(a.admit(ip(u32::MAX - 1), S / 2), Err(SOURCE_LIMITED));
        assert_eq!(a.sources(), MAX_SOURCES);
        // Two seconds on, every bucket is full again and forgotten; the new one fits.
        assert!(a.admit(ip(u32::MAX), 2 * S).is_ok());
        assert_eq!(a.sources(), 1);
    }
}
