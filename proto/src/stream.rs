//! Per-stream ingest state: duplicates, gaps, reordering, reboots, jitter, clock.
//!
//! Pure and bounded: one [`State`] is a few hundred bytes whatever the stream's length
//! (264, and the duplicate window's 256 on the heap once the stream has two records).
//! Duplicate detection keeps a 2048-bit window of recently seen extended sequence
//! numbers (the Mini-RFC's collector keeps a 2000-entry set); for anything outside it — older, or from a
//! previous boot — the state asks the caller, who looks in the store (see
//! [`State::observe`]). The store is the exact authority; the window only saves lookups.

use serde::{Deserialize, Serialize};

use crate::record::{Kind, Record};

/// Sequence numbers the duplicate window remembers behind the highest.
pub const SEEN_WINDOW: u64 = 2048;
const WORDS: usize = (SEEN_WINDOW / 64) as usize;

/// Reorder window (the TinyTelemetry v1 design document's: 10 packets, 2 seconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// An arrival at most this many sequence numbers behind the highest is "reordered"…
    pub reorder_packets: u64,
    /// …if it also arrives within this long of the highest; otherwise it is "late".
    pub reorder_ns: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config { reorder_packets: 10, reorder_ns: 2_000_000_000 }
    }
}

/// What a stream has seen so far. Monotonic counts except `missing`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Valid datagrams, duplicates included.
    pub received: u64,
    /// Distinct records stored (conflicting versions included).
    pub records: u64,
    /// Datagrams identical to a record already held.
    pub duplicates: u64,
    /// Datagrams with a known identity but different content (kept, and counted here).
    pub conflicts: u64,
    /// Times the sequence jumped ahead by more than one.
    pub gaps: u64,
    /// Sequence numbers skipped and not (yet) filled by a later arrival.
    pub missing: u64,
    /// Arrivals behind the highest, within the reorder window.
    pub reordered: u64,
    /// Arrivals behind the highest, beyond the reorder window (still stored).
    pub late: u64,
    /// Reboots seen: an INIT, or the sequence restarting while device time moves on.
    pub reboots: u64,
}

/// The record just before a given one, in device order, as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbour {
    pub seq: u64,
    pub ext_seq: u64,
}

/// Whether the store holds a record with the same identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Absent,
    /// Same identity, same content.
    Same,
    /// Same identity, other content.
    Different,
}

/// What the caller's store lookup answers, when [`State::observe`] asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    pub presence: Presence,
    /// The stored record just before this identity, if any.
    pub predecessor: Option<Neighbour>,
}

/// Where an arrival fell relative to what came before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    InOrder,
    Reordered,
    Late,
}

/// The verdict on one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A record not held before: store it.
    New { ext_seq: u64, gap: u64, order: Order },
    /// Already held: drop it (count only).
    Duplicate,
    /// Same identity as a held record, other content: store it too, beside the other.
    Conflict { ext_seq: u64 },
}

/// The highest record of the current boot ("epoch") and the duplicate window behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(from = "HeadRepr", into = "HeadRepr")]
struct Head {
    /// Device time the epoch started (its INIT, or the first record seen of it).
    epoch_start_ns: u64,
    /// True if the epoch's INIT has not been seen (started by inference).
    implicit: bool,
    ext_seq: u64,
    seq: u64,
    device_time_ns: u64,
    arrival_ns: u64,
    /// The window's bits, once a slot other than the head's is marked; until then only the
    /// head's is. A stream heard once (most of a flood of device ids) keeps none: 256 bytes
    /// less in memory for each.
    seen: Option<Box<[u64; WORDS]>>,
}

/// [`Head`] as it is stored: the window's bits always there (the encoding did not change
/// when they became optional in memory).
#[derive(PartialEq, Serialize, Deserialize)]
struct HeadRepr {
    epoch_start_ns: u64,
    implicit: bool,
    ext_seq: u64,
    seq: u64,
    device_time_ns: u64,
    arrival_ns: u64,
    seen: [u64; WORDS],
}

/// Equal when they answer the same: the window's bits compared, kept or not.
impl PartialEq for Head {
    fn eq(&self, other: &Head) -> bool {
        HeadRepr::from(self.clone()) == HeadRepr::from(other.clone())
    }
}

impl Eq for Head {}

impl From<HeadRepr> for Head {
    fn from(r: HeadRepr) -> Head {
        let mut head = Head {
            epoch_start_ns: r.epoch_start_ns,
            implicit: r.implicit,
            ext_seq: r.ext_seq,
            seq: r.seq,
            device_time_ns: r.device_time_ns,
            arrival_ns: r.arrival_ns,
            seen: None,
        };
        if r.seen != head.bits() {
            head.seen = Some(Box::new(r.seen));
        }
        head
    }
}

impl From<Head> for HeadRepr {
    fn from(h: Head) -> HeadRepr {
        HeadRepr {
            seen: h.bits(),
            epoch_start_ns: h.epoch_start_ns,
            implicit: h.implicit,
            ext_seq: h.ext_seq,
            seq: h.seq,
            device_time_ns: h.device_time_ns,
            arrival_ns: h.arrival_ns,
        }
    }
}

impl Head {
    fn start(rec: &Record, ext_seq: u64, implicit: bool, arrival_ns: u64) -> Head {
        Head {
            epoch_start_ns: rec.device_time_ns,
            implicit,
            ext_seq,
            seq: rec.seq,
            device_time_ns: rec.device_time_ns,
            arrival_ns,
            seen: None, // the head's own slot: marked
        }
    }

    fn bit(ext: u64) -> (usize, u64) {
        let slot = ext % SEEN_WINDOW;
        ((slot / 64) as usize, 1u64 << (slot % 64))
    }
    /// The window's bits, whether kept or only the head's.
    fn bits(&self) -> [u64; WORDS] {
        match &self.seen {
            Some(bits) => **bits,
            None => {
                let mut bits = [0; WORDS];
                let (w, b) = Head::bit(self.ext_seq);
                bits[w] |= b;
                bits
            }
        }
    }
    fn mark(&mut self, ext: u64) {
        if self.seen.is_none() && Head::bit(ext) == Head::bit(self.ext_seq) {
            return;
        }
        let (w, b) = Head::bit(ext);
        self.bits_mut()[w] |= b;
    }
    /// The window's bits, kept from now on.
    fn bits_mut(&mut self) -> &mut [u64; WORDS] {
        let (w, b) = Head::bit(self.ext_seq);
        self.seen.get_or_insert_with(|| {
            let mut bits = Box::new([0; WORDS]);
            bits[w] |= b;
            bits
        })
    }
    fn is_marked(&self, ext: u64) -> bool {
        let (w, b) = Head::bit(ext);
        match &self.seen {
            Some(bits) => bits[w] & b != 0,
            None => Head::bit(self.ext_seq) == (w, b),
        }
    }
    /// Moves the head forward to `ext`, forgetting the slots that fall out of the window.
    fn advance(&mut self, rec: &Record, ext: u64, arrival_ns: u64) {
        // Extended seqs of a 64-bit dialect wrap like its seqs (SEEN_WINDOW divides 2^64,
        // so the slots stay in place across the wrap).
        let distance = ext.wrapping_sub(self.ext_seq);
        if distance >= SEEN_WINDOW {
            self.seen = None; // only the new head's slot, marked below
        } else if distance > 0 {
            let head = self.ext_seq;
            let bits = self.bits_mut();
            for i in 1..=distance {
                let (w, b) = Head::bit(head.wrapping_add(i));
                bits[w] &= !b;
            }
        }
        self.ext_seq = ext;
        self.seq = rec.seq;
        self.device_time_ns = rec.device_time_ns;
        self.arrival_ns = arrival_ns;
        self.mark(ext);
    }
}

/// How one arrival relates to the head, before any store lookup.
enum Step {
    /// A new epoch: first record, an INIT, or an inferred reboot.
    Start { ext: u64, implicit: bool },
    Forward { ext: u64, gap: u64 },
    /// Behind the head, inside the window, not seen yet.
    Back { ext: u64, behind: u64, adopt_init: bool },
    /// Behind the head and already marked seen: duplicate or conflict.
    Seen { ext: u64 },
    /// Outside what the window can answer: ask the store.
    Unknown,
}

/// `a − b` as a signed distance on a `bits`-wide wrapping counter.
pub fn signed_delta(a: u64, b: u64, bits: u32) -> i64 {
    let shift = 64 - bits;
    ((a.wrapping_sub(b) << shift) as i64) >> shift
}

/// The extended sequence of `rec` given the record before it in device order: the
/// predecessor's plus the forward distance, or a restart (INIT, or seq going back while
/// time goes on) at the packet's own seq.
pub fn ext_after(predecessor: Option<Neighbour>, rec: &Record) -> u64 {
    if rec.kind == Kind::Init {
        return 0;
    }
    let bits = Record::seq_bits(rec.stream.dialect);
    match predecessor {
        Some(p) => match signed_delta(rec.seq, p.seq, bits) {
            d if d > 0 => p.ext_seq.wrapping_add(d as u64),
            _ => rec.seq,
        },
        None => rec.seq,
    }
}

/// RFC 3550 §6.4.1 interarrival jitter, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Jitter {
    prev_transit_ns: Option<i64>,
    jitter_ns: f64,
}

impl Jitter {
    fn update(&mut self, transit_ns: i64) {
        if let Some(prev) = self.prev_transit_ns {
            let d = transit_ns.abs_diff(prev) as f64;
            self.jitter_ns += (d - self.jitter_ns) / 16.0;
        }
        self.prev_transit_ns = Some(transit_ns);
    }
}

/// Samples per minimum-filter window of the clock estimator.
const CLOCK_WINDOW: u32 = 32;
/// Weight kept by older windows at each new one (exponential forgetting).
const CLOCK_DECAY: f64 = 0.9;

/// Device clock offset and drift against the collector's clock.
///
/// The offset sample is `arrival − device time`: the true offset plus a network delay
/// that is never negative, so the minimum over a window of samples is the best offset
/// estimate (NTP's minimum filter). Drift is the slope of a weighted least-squares line
/// through the window minima, older windows decaying.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Clock {
    window_min_ns: Option<i64>,
    window_len: u32,
    /// Latest complete window's minimum offset.
    offset_ns: Option<i64>,
    /// Arrival time origin for the regression, to keep the sums well conditioned.
    origin_ns: Option<u64>,
    sw: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
}

impl Clock {
    fn update(&mut self, arrival_ns: u64, offset_ns: i64) {
        self.window_min_ns = Some(self.window_min_ns.map_or(offset_ns, |m| m.min(offset_ns)));
        self.window_len = self.window_len.saturating_add(1);
        if self.window_len < CLOCK_WINDOW {
            return;
        }
        let min = self.window_min_ns.take().unwrap_or(offset_ns);
        self.window_len = 0;
        self.offset_ns = Some(min);
        let origin = *self.origin_ns.get_or_insert(arrival_ns);
        let x = arrival_ns.saturating_sub(origin) as f64 / 1e9; // seconds
        let y = min as f64 / 1e6; // ms
        for s in [&mut self.sw, &mut self.sx, &mut self.sy, &mut self.sxx, &mut self.sxy] {
            *s *= CLOCK_DECAY;
        }
        self.sw += 1.0;
        self.sx += x;
        self.sy += y;
        self.sxx += x * x;
        self.sxy += x * y;
    }

    fn offset_ms(&self) -> Option<f64> {
        self.offset_ns.or(self.window_min_ns).map(|o| o as f64 / 1e6)
    }

    /// Parts per million the device clock runs fast (positive) or slow against ours.
    fn drift_ppm(&self) -> Option<f64> {
        let den = self.sw * self.sxx - self.sx * self.sx;
        if self.sw < 2.0 || den.abs() < 1e-9 {
            return None;
        }
        let slope_ms_per_s = (self.sw * self.sxy - self.sx * self.sy) / den;
        // offset = arrival − device; it grows when the device clock runs slow.
        Some(-slope_ms_per_s * 1000.0)
    }
}

/// Everything one stream remembers. Serialisable, so the node persists it with the
/// records and a restart resumes the same counters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub counters: Counters,
    head: Option<Head>,
    jitter: Jitter,
    clock: Clock,
    pub first_arrival_ns: u64,
    pub last_arrival_ns: u64,
}

/// A stream's state as the query API reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub counters: Counters,
    /// Arrivals behind the highest: `reordered + late`.
    pub out_of_order: u64,
    pub last_seq: Option<u64>,
    pub last_ext_seq: Option<u64>,
    pub last_device_time_ns: Option<u64>,
    pub first_arrival_ns: u64,
    pub last_arrival_ns: u64,
    /// RFC 3550 interarrival jitter.
    pub jitter_ms: f64,
    /// Collector clock minus device clock, minimum-filtered (network delay excluded).
    pub clock_offset_ms: Option<f64>,
    pub clock_drift_ppm: Option<f64>,
}

/// Adds to a count, saturating: a state read back from a damaged store may hold anything.
fn add(count: &mut u64, n: u64) {
    *count = count.saturating_add(n);
}

impl State {
    /// Classifies one datagram of this stream and updates the state.
    ///
    /// `lookup` is called only when the window cannot decide (a possible duplicate, or
    /// an arrival older than the window or the current boot); it must answer from the
    /// store, with every record observed so far already visible.
    pub fn observe(
        &mut self,
        rec: &Record,
        arrival_ns: u64,
        cfg: &Config,
        lookup: impl FnOnce() -> Lookup,
    ) -> Outcome {
        add(&mut self.counters.received, 1);
        if self.first_arrival_ns == 0 {
            self.first_arrival_ns = arrival_ns;
        }
        self.last_arrival_ns = self.last_arrival_ns.max(arrival_ns);

        let outcome = match self.step(rec) {
            Step::Start { ext, implicit } => {
                if self.head.is_some() {
                    add(&mut self.counters.reboots, 1);
                    if implicit && ext > 0 {
                        // The new boot's earlier packets (its INIT at least) were not heard.
                        add(&mut self.counters.gaps, 1);
                        add(&mut self.counters.missing, ext);
                    }
                }
                self.head = Some(Head::start(rec, ext, implicit, arrival_ns));
                Outcome::New { ext_seq: ext, gap: 0, order: Order::InOrder }
            }
            Step::Forward { ext, gap } => {
                if let Some(h) = self.head.as_mut() {
                    h.advance(rec, ext, arrival_ns);
                }
                if gap > 0 {
                    add(&mut self.counters.gaps, 1);
                    add(&mut self.counters.missing, gap);
                }
                Outcome::New { ext_seq: ext, gap, order: Order::InOrder }
            }
            Step::Back { ext, behind, adopt_init } => {
                let mut order = Order::Late;
                if let Some(h) = self.head.as_mut() {
                    h.mark(ext);
                    if adopt_init {
                        h.implicit = false;
                        h.epoch_start_ns = rec.device_time_ns;
                    }
                    if behind <= cfg.reorder_packets && arrival_ns.saturating_sub(h.arrival_ns) <= cfg.reorder_ns {
                        order = Order::Reordered;
                    }
                }
                self.counters.missing = self.counters.missing.saturating_sub(1);
                Outcome::New { ext_seq: ext, gap: 0, order }
            }
            Step::Seen { ext } => {
                let found = lookup();
                match found.presence {
                    Presence::Same => Outcome::Duplicate,
                    Presence::Different => Outcome::Conflict { ext_seq: ext },
                    // Same sequence number, other device time: a distinct record.
                    Presence::Absent => Outcome::New { ext_seq: ext, gap: 0, order: Order::Late },
                }
            }
            Step::Unknown => {
                let found = lookup();
                let ext = ext_after(found.predecessor, rec);
                match found.presence {
                    Presence::Same => Outcome::Duplicate,
                    Presence::Different => Outcome::Conflict { ext_seq: ext },
                    Presence::Absent => Outcome::New { ext_seq: ext, gap: 0, order: Order::Late },
                }
            }
        };

        match outcome {
            Outcome::Duplicate => add(&mut self.counters.duplicates, 1),
            Outcome::Conflict { .. } => {
                add(&mut self.counters.conflicts, 1);
                add(&mut self.counters.records, 1);
            }
            Outcome::New { order, .. } => {
                add(&mut self.counters.records, 1);
                match order {
                    Order::InOrder => {}
                    Order::Reordered => add(&mut self.counters.reordered, 1),
                    Order::Late => add(&mut self.counters.late, 1),
                }
                let transit = (arrival_ns as i64).saturating_sub(rec.device_time_ns as i64);
                self.jitter.update(transit);
                self.clock.update(arrival_ns, transit);
            }
        }
        outcome
    }

    fn step(&self, rec: &Record) -> Step {
        let Some(h) = self.head.as_ref() else {
            let ext = if rec.kind == Kind::Init { 0 } else { rec.seq };
            return Step::Start { ext, implicit: rec.kind != Kind::Init };
        };
        let t = rec.device_time_ns;
        if rec.kind == Kind::Init {
            // Later than the last datagram, or in its clock tick but after this boot began (a
            // device that rebooted within its timestamp's resolution, 1 ms for IoTStream's
            // millisecond timestamps): a new boot.
            if t > h.device_time_ns || (t == h.device_time_ns && t > h.epoch_start_ns) {
                return Step::Start { ext: 0, implicit: false };
            }
            if h.implicit && rec.seq == 0 && t <= h.epoch_start_ns {
                // The INIT of the current boot, arriving after some of its data.
                return self.back(h, h.ext_seq, true);
            }
            return Step::Unknown;
        }
        let d = signed_delta(rec.seq, h.seq, Record::seq_bits(rec.stream.dialect));
        let forward = Step::Forward { ext: h.ext_seq.wrapping_add(d as u64), gap: (d as u64).wrapping_sub(1) };
        match t.cmp(&h.device_time_ns) {
            std::cmp::Ordering::Greater if d > 0 => forward,
            std::cmp::Ordering::Greater => Step::Start { ext: rec.seq, implicit: true },
            std::cmp::Ordering::Equal if d > 0 => forward,
            std::cmp::Ordering::Equal if d == 0 => Step::Seen { ext: h.ext_seq },
            _ if t < h.epoch_start_ns || d >= 0 => Step::Unknown,
            _ => self.back(h, d.unsigned_abs(), false),
        }
    }

    fn back(&self, h: &Head, behind: u64, adopt_init: bool) -> Step {
        if behind > h.ext_seq || behind >= SEEN_WINDOW {
            return Step::Unknown;
        }
        let ext = h.ext_seq - behind;
        if h.is_marked(ext) {
            Step::Seen { ext }
        } else {
            Step::Back { ext, behind, adopt_init }
        }
    }

    /// Device time of the highest record of the current boot.
    pub fn last_device_time_ns(&self) -> Option<u64> {
        self.head.as_ref().map(|h| h.device_time_ns)
    }

    pub fn report(&self) -> Report {
        Report {
            counters: self.counters.clone(),
            out_of_order: self.counters.reordered.saturating_add(self.counters.late),
            last_seq: self.head.as_ref().map(|h| h.seq),
            last_ext_seq: self.head.as_ref().map(|h| h.ext_seq),
            last_device_time_ns: self.head.as_ref().map(|h| h.device_time_ns),
            first_arrival_ns: self.first_arrival_ns,
            last_arrival_ns: self.last_arrival_ns,
            jitter_ms: self.jitter.jitter_ns / 1e6,
            clock_offset_ms: self.clock.offset_ms(),
            clock_drift_ppm: self.clock.drift_ppm(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Readings, StreamId};
    use crate::wire::Dialect;
    use std::collections::BTreeMap;

    const MS: u64 = 1_000_000;

    /// A stream fed through `State` with a BTreeMap standing in for the store.
    struct Harness {
        state: State,
        store: BTreeMap<(u64, u64), (Record, u64)>,
        cfg: Config,
    }

    impl Harness {
        fn new() -> Self {
            Harness { state: State::default(), store: BTreeMap::new(), cfg: Config::default() }
        }
        fn feed(&mut self, rec: Record, arrival_ns: u64) -> Outcome {
            let store = &self.store;
            let key = (rec.device_time_ns, rec.seq);
            let outcome = self.state.observe(&rec, arrival_ns, &self.cfg, || Lookup {
                presence: match store.get(&key) {
                    None => Presence::Absent,
                    Some((r, _)) if r.same_content(&rec) => Presence::Same,
                    Some(_) => Presence::Different,
                },
                predecessor: store
                    .range(..key)
                    .next_back()
                    .map(|(_, (r, ext))| Neighbour { seq: r.seq, ext_seq: *ext }),
            });
            match outcome {
                Outcome::New { ext_seq, .. } | Outcome::Conflict { ext_seq } => {
                    self.store.entry(key).or_insert((rec, ext_seq));
                }
                Outcome::Duplicate => {}
            }
            outcome
        }
    }

    fn rec(kind: Kind, seq: u64, t_ms: u64) -> Record {
        Record {
            stream: StreamId::new(Dialect::Iotstream, 1001),
            device_time_ns: t_ms * MS,
            seq,
            timestamp_raw: t_ms,
            kind,
            readings: if kind == Kind::Data { Readings::Batch(vec![seq as f32]) } else { Readings::None },
        }
    }
    fn data(seq: u64, t_ms: u64) -> Record {
        rec(Kind::Data, seq, t_ms)
    }
    fn new(ext_seq: u64, gap: u64, order: Order) -> Outcome {
        Outcome::New { ext_seq, gap, order }
    }

    /// Found by the `stream_state` fuzz target (built with overflow checks): the extended
    /// seq of a 64-bit seq passing u64::MAX, counts read back from the store at u64::MAX and
    /// the transit time of a device time past 2^63 ns overflowed — a panic in debug builds,
    /// a silent wrap in release. Extended seqs now wrap as the seqs do; counts saturate.
    #[test]
    fn extreme_seqs_times_and_counts_do_not_overflow() {
        let secure = |seq: u64, t_ms: u64| Record { stream: StreamId::new(Dialect::Secure, 7), ..data(seq, t_ms) };
        let mut h = Harness::new();
        assert_eq!(h.feed(secure(u64::MAX - 1, 1000), MS), new(u64::MAX - 1, 0, Order::InOrder));
        assert_eq!(h.feed(secure(u64::MAX, 2000), 2 * MS), new(u64::MAX, 0, Order::InOrder));
        // Seq 0 lost across the wrap, then arriving late.
        assert_eq!(h.feed(secure(1, 3000), 3 * MS), new(1, 1, Order::InOrder));
        assert_eq!(h.feed(secure(0, 2500), 4 * MS), new(0, 0, Order::Reordered));
        assert_eq!(h.state.counters.missing, 0);
        // The store's predecessor at the top of the range.
        assert_eq!(ext_after(Some(Neighbour { seq: u64::MAX, ext_seq: u64::MAX }), &secure(0, 0)), 0);
        // Counts read back at their maximum stay there.
        h.state.counters.received = u64::MAX;
        h.state.counters.records = u64::MAX;
        h.feed(secure(2, 4000), 5 * MS);
        assert_eq!((h.state.counters.received, h.state.counters.records), (u64::MAX, u64::MAX));
        // A device time of 2^63 ns: the transit time saturates.
        let far = Record { device_time_ns: 1 << 63, ..secure(3, 0) };
        assert_eq!(h.feed(far, 6 * MS), new(3, 0, Order::InOrder));
        assert!(h.state.report().jitter_ms.is_finite());
    }

    #[test]
    fn in_order_gap_duplicate() {
        let mut h = Harness::new();
        assert_eq!(h.feed(rec(Kind::Init, 0, 1000), 1), new(0, 0, Order::InOrder));
        assert_eq!(h.feed(data(1, 2000), 2), new(1, 0, Order::InOrder));
        assert_eq!(h.feed(data(1, 2000), 3), Outcome::Duplicate);
        assert_eq!(h.feed(data(4, 5000), 4), new(4, 2, Order::InOrder));
        let c = &h.state.counters;
        assert_eq!((c.received, c.records, c.duplicates, c.gaps, c.missing), (4, 3, 1, 1, 2));
    }

    #[test]
    fn reordered_within_window_and_late_beyond_it() {
        let mut h = Harness::new();
        h.feed(data(0, 0), 0);
        h.feed(data(3, 3000), 3_000 * MS);
        // seq 2 arrives 100 ms after seq 3: inside 10 packets / 2 s.
        assert_eq!(h.feed(data(2, 2000), 3_100 * MS), new(2, 0, Order::Reordered));
        // seq 1 arrives 5 s later: late.
        assert_eq!(h.feed(data(1, 1000), 8_100 * MS), new(1, 0, Order::Late));
        let c = &h.state.counters;
        assert_eq!((c.gaps, c.missing, c.reordered, c.late), (1, 0, 1, 1));
        // A duplicate of a reordered one is still a duplicate.
        assert_eq!(h.feed(data(2, 2000), 9_000 * MS), Outcome::Duplicate);
    }

    #[test]
    fn wraparound_extends_the_sequence() {
        let mut h = Harness::new();
        h.feed(rec(Kind::Init, 0, 0), 0);
        let mut t = 1;
        for seq in 1..=65_535u64 {
            h.feed(data(seq, t), t * MS);
            t += 1;
        }
        assert_eq!(h.feed(data(0, t), t * MS), new(65_536, 0, Order::InOrder));
        assert_eq!(h.feed(data(2, t + 2), (t + 2) * MS), new(65_538, 1, Order::InOrder));
        assert_eq!(h.feed(data(1, t + 1), (t + 2) * MS), new(65_537, 0, Order::Reordered));
        assert_eq!(h.state.counters.reboots, 0);
        assert_eq!(h.state.counters.duplicates, 0);
        assert_eq!(h.state.counters.records, 65_539);
    }

    #[test]
    fn reboot_starts_a_new_epoch_without_merging() {
        let mut h = Harness::new();
        h.feed(rec(Kind::Init, 0, 0), 0);
        h.feed(data(1, 1000), 1);
        h.feed(data(2, 2000), 2);
        // Reboot: INIT seq 0 again, later device time. Seq 1 of the new boot is new, not a duplicate.
        assert_eq!(h.feed(rec(Kind::Init, 0, 10_000), 3), new(0, 0, Order::InOrder));
        assert_eq!(h.feed(data(1, 11_000), 4), new(1, 0, Order::InOrder));
        // A late packet of the old boot is placed after its own predecessor.
        assert_eq!(h.feed(data(3, 3000), 5), new(3, 0, Order::Late));
        assert_eq!(h.feed(data(1, 1000), 6), Outcome::Duplicate);
        let c = &h.state.counters;
        assert_eq!((c.reboots, c.records, c.duplicates), (1, 6, 1));
    }

    /// Found by a fresh-clone CI run on a loaded machine (`node/tests/simulator.rs`): a
    /// reboot's INIT in the same millisecond as the old boot's last datagram was taken for
    /// an old packet, and the new boot's seq 1 for a reboot whose INIT was lost (one record
    /// counted missing that was not).
    #[test]
    fn an_init_in_the_last_datagrams_clock_tick_is_a_reboot_unless_it_began_this_boot() {
        let mut h = Harness::new();
        h.feed(rec(Kind::Init, 0, 1000), 1);
        h.feed(data(1, 1000), 2);
        // This boot's INIT again, in the tick it began in: the same packet.
        assert_eq!(h.feed(rec(Kind::Init, 0, 1000), 3), Outcome::Duplicate);
        h.feed(data(2, 2000), 4);
        assert_eq!(h.feed(rec(Kind::Init, 0, 2000), 5), new(0, 0, Order::InOrder), "a reboot in the same tick");
        assert_eq!(h.feed(data(1, 2000), 6), new(1, 0, Order::InOrder));
        let c = &h.state.counters;
        assert_eq!((c.reboots, c.missing, c.gaps, c.duplicates, c.records), (1, 0, 0, 1, 5));
    }

    #[test]
    fn missed_init_is_inferred_and_adopted_when_it_arrives() {
        let mut h = Harness::new();
        h.feed(data(500, 500_000), 1);
        // Seq restarts while time moves on: a reboot whose INIT was lost (or is late).
        assert_eq!(h.feed(data(1, 601_000), 2), new(1, 0, Order::InOrder));
        assert_eq!((h.state.counters.reboots, h.state.counters.missing), (1, 1));
        assert_eq!(h.feed(rec(Kind::Init, 0, 600_000), 3), new(0, 0, Order::Reordered));
        assert_eq!(h.state.counters.missing, 0);
    }

    #[test]
    fn conflict_is_kept_and_counted() {
        let mut h = Harness::new();
        h.feed(data(1, 1000), 0);
        let mut other = data(1, 1000);
        other.readings = Readings::Batch(vec![99.0]);
        assert_eq!(h.feed(other, 1), Outcome::Conflict { ext_seq: 1 });
        assert_eq!((h.state.counters.conflicts, h.state.counters.records), (1, 2));
    }

    #[test]
    fn window_boundary_asks_the_store() {
        let mut h = Harness::new();
        for seq in 0..3000u64 {
            h.feed(data(seq, seq * 10), seq);
        }
        // 2999 − 100 = 2899 behind: beyond the 2048 window, so the store answers.
        assert_eq!(h.feed(data(100, 1000), 4000), Outcome::Duplicate);
        assert_eq!(h.state.counters.duplicates, 1);
    }

    #[test]
    fn signed_delta_widths() {
        assert_eq!(signed_delta(0, 65_535, 16), 1);
        assert_eq!(signed_delta(65_535, 0, 16), -1);
        assert_eq!(signed_delta(5, 3, 32), 2);
        assert_eq!(signed_delta(0, u64::from(u32::MAX), 32), 1);
        assert_eq!(signed_delta(3, 5, 64), -2);
    }

    #[test]
    fn jitter_and_clock_track_a_skewed_device() {
        let mut h = Harness::new();
        // Device clock 250 ms behind ours and running 100 ppm slow; network delay 1..=4 ms.
        for i in 0..2000u64 {
            let ours = 1_000_000 * MS + i * 1000 * MS;
            let device = ours - 250 * MS - i * 100_000; // loses 0.1 ms per second
            let arrival = ours + (1 + i % 4) * MS;
            h.feed(data(i % 65_536, device / MS), arrival);
        }
        let r = h.state.report();
        let offset = r.clock_offset_ms.expect("offset");
        assert!((offset - (250.0 + 0.1 * 2000.0)).abs() < 10.0, "offset {offset}");
        let drift = r.clock_drift_ppm.expect("drift");
        assert!((drift + 100.0).abs() < 15.0, "drift {drift}");
        assert!(r.jitter_ms > 0.5 && r.jitter_ms < 4.0, "jitter {}", r.jitter_ms);
    }

    /// The window that keeps its bits only once a slot other than the head's is marked
    /// answers exactly as one that always keeps them, through advances (by one, within the
    /// window, past it) and marks behind the head, and reads back the same from its stored
    /// form.
    #[test]
    fn the_window_answers_the_same_whether_its_bits_are_kept_or_not() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let set = |model: &mut [u64; WORDS], ext: u64| {
            let (w, b) = Head::bit(ext);
            model[w] |= b;
        };
        for _ in 0..100 {
            let start = rng.gen_range(0..5000u64);
            let mut head = Head::start(&data(start, 0), start, false, 0);
            assert!(head.seen.is_none(), "a stream heard once keeps no bits");
            let mut model = [0u64; WORDS];
            set(&mut model, start);
            for _ in 0..30 {
                if rng.gen_bool(0.4) {
                    let d = match rng.gen_range(0..4) {
                        0 => 1,
                        1 => rng.gen_range(2..SEEN_WINDOW),
                        2 => SEEN_WINDOW - 1,
                        _ => SEEN_WINDOW + rng.gen_range(0..100),
                    };
                    if d >= SEEN_WINDOW {
                        model = [0; WORDS];
                    }
                    for i in 1..=d.min(SEEN_WINDOW) {
                        let (w, b) = Head::bit(head.ext_seq + i);
                        model[w] &= !b;
                    }
                    let ext = head.ext_seq + d;
                    set(&mut model, ext);
                    head.advance(&data(ext, 0), ext, 0);
                    if d >= SEEN_WINDOW {
                        assert!(head.seen.is_none(), "past the window, only the new head");
                    }
                } else {
                    let behind = rng.gen_range(0..SEEN_WINDOW.min(head.ext_seq + 1));
                    set(&mut model, head.ext_seq - behind);
                    head.mark(head.ext_seq - behind);
                }
                assert_eq!(head.bits(), model);
                for behind in 0..SEEN_WINDOW.min(head.ext_seq + 1) {
                    let (w, b) = Head::bit(head.ext_seq - behind);
                    assert_eq!(head.is_marked(head.ext_seq - behind), model[w] & b != 0);
                }
                let bytes = crate::record::codec::to_vec(&head);
                let stored: Head = crate::record::codec::from_slice(&bytes, "t").expect("decodes");
                assert_eq!((stored.bits(), &stored), (model, &head));
            }
        }
    }

    #[test]
    fn state_is_small() {
        let mut h = Harness::new();
        for seq in 0..5000u64 {
            h.feed(data(seq, seq), seq);
        }
        let bytes = crate::record::codec::to_vec(&h.state);
        assert!(bytes.len() < 512, "{} bytes", bytes.len());
        // In memory: 264 bytes, and the window's 256 once a stream has more than one record.
        assert!(std::mem::size_of::<State>() <= 300, "{}", std::mem::size_of::<State>());
    }
}
