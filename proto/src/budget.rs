//! Token buckets: how many of something (new streams, from a source address, a dialect or
//! a peer) may start per second, with a burst. Time is passed in.

use std::str::FromStr;

/// A token bucket's settings: a rate a second, and how many at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub rate: f64,
    pub burst: u32,
}

impl FromStr for Budget {
    type Err = String;

    /// `RATE:BURST`, e.g. `10:100` (10 a second, 100 at once).
    fn from_str(s: &str) -> Result<Budget, String> {
        let bad = || format!("{s:?} is not RATE:BURST (new streams a second : at once, e.g. 10:100)");
        let (rate, burst) = s.split_once(':').ok_or_else(bad)?;
        let rate: f64 = rate.trim().parse().map_err(|_| bad())?;
        let burst: u32 = burst.trim().parse().map_err(|_| bad())?;
        if !(rate.is_finite() && rate > 0.0) || burst == 0 {
            return Err(format!("{s:?}: the rate and the burst must be above 0"));
        }
        Ok(Budget { rate, burst })
    }
}

/// One budget's tokens, as of a time.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    tokens: f64,
    at_ns: u64,
}

impl Bucket {
    /// A bucket holding its whole burst.
    pub fn full(budget: &Budget, now_ns: u64) -> Bucket {
        Bucket { tokens: f64::from(budget.burst), at_ns: now_ns }
    }

    /// Adds what the time since the last refill earned, up to the burst.
    pub fn refill(&mut self, budget: &Budget, now_ns: u64) {
        let elapsed = now_ns.saturating_sub(self.at_ns) as f64 / 1e9;
        self.tokens = (self.tokens + elapsed * budget.rate).min(f64::from(budget.burst));
        self.at_ns = self.at_ns.max(now_ns);
    }

    /// Whether a token is there (after a [`Self::refill`]).
    pub fn has_token(&self) -> bool {
        self.tokens >= 1.0
    }

    /// Spends a token; callers check [`Self::has_token`] first.
    pub fn spend(&mut self) {
        self.tokens -= 1.0;
    }

    /// Refills, then spends a token if there is one: whether there was.
    pub fn take(&mut self, budget: &Budget, now_ns: u64) -> bool {
        self.refill(budget, now_ns);
        let ok = self.has_token();
        if ok {
            self.spend();
        }
        ok
    }

    /// Whether it holds its whole burst (after a [`Self::refill`]): it then says nothing a
    /// new bucket would not, and may be forgotten.
    pub fn is_full(&self, budget: &Budget) -> bool {
        self.tokens >= f64::from(budget.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_parse_and_refuse_nonsense() {
        assert_eq!("10:100".parse::<Budget>(), Ok(Budget { rate: 10.0, burst: 100 }));
        assert_eq!("0.5:1".parse::<Budget>(), Ok(Budget { rate: 0.5, burst: 1 }));
        for bad in ["10", "10:", ":5", "0:5", "5:0", "-1:5", "x:5", "inf:5", "NaN:5"] {
            assert!(bad.parse::<Budget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn a_bucket_gives_its_burst_then_its_rate_and_never_more_than_its_burst() {
        let b = Budget { rate: 2.0, burst: 5 };
        let mut bucket = Bucket::full(&b, 0);
        assert_eq!((0..20).filter(|_| bucket.take(&b, 0)).count(), 5);
        assert_eq!((0..20).filter(|_| bucket.take(&b, 1_000_000_000)).count(), 2);
        // An hour idle refills to the burst, not beyond; time going back earns nothing.
        assert_eq!((0..20).filter(|_| bucket.take(&b, 3_601_000_000_000)).count(), 5);
        assert!(!bucket.take(&b, 0));
        bucket.refill(&b, 3_700_000_000_000);
        assert!(bucket.is_full(&b));
    }
}
