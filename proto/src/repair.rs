//! The RaptorQ (RFC 6330) repair codec for a window's *slot part*.
//!
//! A window's canonical blob is an index part followed by a slot part: `K` records, each
//! padded to one slot size `T`, in key order (`docs/protocol.md`, DESIGN "Data model"). A
//! node that lacks some records places the ones it has into the layout it learned from a
//! peer's verified index part; the slots it lacks are *erasures*. It asks every holder of
//! the window for repair symbols, decodes once it has a few more symbols than erasures, and
//! accepts the rebuilt slot part only if the window's Merkle root checks out. This module
//! is the codec only: it knows nothing about records, windows or Merkle trees, does no
//! I/O and reads no clock.
//!
//! # Geometry: one source block per window, one symbol per slot
//!
//! The slot part is one RFC 6330 source block (SBN 0, no sub-blocks) and each slot is one
//! source symbol, so `K = slots` and the symbol size is the slot size. This keeps a
//! request to "missing slots + a few symbols" with no per-block bookkeeping, and a slot
//! that a node has is exactly a source symbol it already holds. RFC 6330 caps a source
//! block at `K'max` = 56,403 symbols ([`Layout::MAX_SLOTS`]): a window with more slots is
//! split into several windows by the caller. Measured (raptorq 2, 64-byte slots, 10%
//! erased): a decode costs ≈ 2 µs per slot up to K ≈ 4,096, then more per slot as `K`
//! grows (≈ 4 µs at 16,384, ≈ 6 µs at 56,403), and an uncached plan costs 8 ms at 4,096
//! slots, 290 ms at 56,403. Several source blocks per window would win at most that
//! 2–3× for the largest windows; the window layer keeping windows at or below a few
//! thousand slots wins the same more simply, so one source block it is.
//!
//! # Symbol ids
//!
//! Source symbols have ESIs `0..K`, repair symbols `K..2^24`. Only repair symbols travel:
//! the requester never says *which* slots it lacks, only which ESIs it wants. To keep
//! independent holders from ever sending the same symbol, the requester numbers the
//! holders of the window `0, 1, 2, …` (any stable order, e.g. by peer id) and gives
//! holder `i` the ESIs of its own disjoint band: see [`holder_range`].
//!
//! # Wire form of a symbol
//!
//! ```text
//! 0      1              4                    4+T
//! +------+--------------+--------------------+
//! | SBN  | ESI (u24 BE) | data (T bytes)     |
//! +------+--------------+--------------------+
//! ```
//!
//! The first four bytes are RFC 6330's FEC Payload ID (§3.2); SBN is always 0 (one source
//! block per window) and anything else is rejected. The length must be exactly `4 + T`.
//! Every symbol is checked — length, SBN, ESI in the repair range — before raptorq sees
//! it: raptorq's own deserialiser and decoder panic on malformed input by design.
//!
//! # Caches
//!
//! A holder answers many requests for the same window. Building an encoder needs an
//! encoding plan for `K` (expensive, a function of `K` alone) and then a pass over the slot
//! part; both are kept in [`EncoderCache`], a bounded LRU keyed by `K` and by the window
//! root.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use raptorq::{
    EncodingPacket, ObjectTransmissionInformation, PayloadId, SourceBlockDecoder,
    SourceBlockEncoder, SourceBlockEncodingPlan,
};

/// Encoding symbol ids are 24-bit (RFC 6330 §3.2): every ESI is `< ESI_LIMIT`.
pub const ESI_LIMIT: u32 = 1 << 24;

/// Bytes before a symbol's data on the wire: SBN (1) + ESI (3).
pub const HEADER_LEN: usize = 4;

/// How many holders of one window a requester can address with [`holder_range`].
pub const MAX_HOLDERS: u32 = 256;

/// Width of each holder's ESI band: the repair space of the largest block, divided evenly
/// among [`MAX_HOLDERS`] holders (65,315 — more than [`Layout::MAX_SLOTS`], so a single
/// holder can rebuild a whole window alone).
pub const HOLDER_STRIDE: u32 = (ESI_LIMIT - Layout::MAX_SLOTS) / MAX_HOLDERS;

/// Extra symbols beyond the erasure count for a decode that must not need a second round:
/// RFC 6330 bounds the decode failure probability at about 1e-2, 1e-4, 1e-6 for 0, 1, 2
/// extra symbols. (The mesh asks for none and asks again on the rare failure:
/// `mesh::Config::overhead`.)
pub const DEFAULT_OVERHEAD: u32 = 2;

/// A [`Decoder`] keeps at most `missing + MAX_OVERHEAD` repair symbols; later ones are
/// ignored and counted as excess (memory stays bounded whatever peers send). An
/// [`Encoder`] serves at most `slots + MAX_OVERHEAD` symbols per request.
pub const MAX_OVERHEAD: u32 = 32;

/// Geometry of a window's slot part: `slots` slots of `slot_size` bytes each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Layout {
    slot_size: u16,
    slots: u32,
}

/// Why a [`Layout`] is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    #[error(
        "slot size {slot_size} is not a positive multiple of {} up to {}",
        Layout::ALIGNMENT,
        Layout::MAX_SLOT_SIZE
    )]
    SlotSize { slot_size: usize },
    #[error(
        "{slots} slots: a window's slot part holds 1..={} slots (RFC 6330 K'max)",
        Layout::MAX_SLOTS
    )]
    Slots { slots: usize },
}

impl Layout {
    /// RFC 6330's symbol alignment `Al`: slot sizes are multiples of it. 8 is what raptorq
    /// picks itself for packets of 64 bytes and more; it keeps every symbol a whole number
    /// of 64-bit words for raptorq's XOR loops (no tails), and costs a record format at
    /// most 7 bytes of padding.
    pub const ALIGNMENT: u16 = 8;
    /// Largest slot size: RFC 6330's `T` is 16-bit, rounded down to the alignment.
    pub const MAX_SLOT_SIZE: u16 = u16::MAX - u16::MAX % Self::ALIGNMENT;
    /// RFC 6330's `K'max`: the most source symbols in one source block.
    pub const MAX_SLOTS: u32 = 56_403;

    /// A validated layout.
    pub fn new(slot_size: usize, slots: usize) -> Result<Self, LayoutError> {
        let ok_size = slot_size >= 1
            && slot_size <= usize::from(Self::MAX_SLOT_SIZE)
            && slot_size.is_multiple_of(usize::from(Self::ALIGNMENT));
        let Some(slot_size) = u16::try_from(slot_size).ok().filter(|_| ok_size) else {
            return Err(LayoutError::SlotSize { slot_size });
        };
        let Some(slots) = u32::try_from(slots)
            .ok()
            .filter(|&k| (1..=Self::MAX_SLOTS).contains(&k))
        else {
            return Err(LayoutError::Slots { slots });
        };
        Ok(Self { slot_size, slots })
    }

    /// Bytes per slot (the symbol size `T`).
    pub fn slot_size(&self) -> usize {
        usize::from(self.slot_size)
    }

    /// Number of slots (the source symbol count `K`).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Length of the whole slot part: `slots × slot_size`.
    pub fn slot_part_len(&self) -> usize {
        self.slots as usize * self.slot_size()
    }

    /// Bytes of one symbol on the wire.
    pub fn symbol_len(&self) -> usize {
        HEADER_LEN + self.slot_size()
    }

    /// Is `esi` a repair symbol id of this layout?
    pub fn is_repair_esi(&self, esi: u32) -> bool {
        (self.slots..ESI_LIMIT).contains(&esi)
    }

    fn oti(&self) -> ObjectTransmissionInformation {
        // Cannot panic: transfer length ≤ 56,403 × 65,528 < 2^40, T % Al == 0, K ≤ K'max.
        ObjectTransmissionInformation::new(
            self.slot_part_len() as u64,
            self.slot_size,
            1,
            1,
            Self::ALIGNMENT as u8,
        )
    }
}

/// Why a symbol (from the wire or handed to a [`Decoder`]) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SymbolError {
    #[error("symbol of {len} bytes is shorter than its {HEADER_LEN}-byte header")]
    Truncated { len: usize },
    #[error("source block {sbn}: a window is one source block (0)")]
    SourceBlock { sbn: u8 },
    #[error("symbol data of {got} bytes, the slot size is {expected}")]
    Length { expected: usize, got: usize },
    #[error("ESI {esi} is not 24-bit")]
    EsiTooLarge { esi: u32 },
    #[error("ESI {esi} is a source symbol id (< {slots}); only repair symbols are exchanged")]
    SourceEsi { esi: u32, slots: u32 },
}

/// Errors of the encoder, the decoder's inputs and the final check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Layout(#[from] LayoutError),
    #[error(transparent)]
    Symbol(#[from] SymbolError),
    #[error("slot part of {got} bytes, the layout needs {expected}")]
    SlotPartLength { expected: usize, got: usize },
    #[error("encoding plan is for {plan} slots, the layout has {slots}")]
    PlanMismatch { plan: u32, slots: u32 },
    #[error("present slot {index} is outside the {slots} slots")]
    SlotIndex { index: u32, slots: u32 },
    #[error("present slot {index} given twice")]
    DuplicateSlot { index: u32 },
    #[error("repair range {start}+{count} is not within {slots}..{ESI_LIMIT} or too long")]
    Range { start: u32, count: u32, slots: u32 },
    #[error("holder {holder} (of at most {MAX_HOLDERS}) asked for {served}+{count} symbols, its band holds {HOLDER_STRIDE}")]
    HolderBand {
        holder: u32,
        served: u32,
        count: u32,
    },
    #[error("window {window}: the rebuilt slot part does not match the window's root")]
    RootMismatch { window: String },
}

/// A contiguous run of encoding symbol ids: `start..start + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EsiRange {
    pub start: u32,
    pub count: u32,
}

impl EsiRange {
    /// One past the last ESI (as `u64`: cannot overflow).
    pub fn end(&self) -> u64 {
        u64::from(self.start) + u64::from(self.count)
    }

    /// The ESIs, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> {
        self.start..self.start.saturating_add(self.count)
    }
}

/// The ESIs a requester asks holder number `holder` for, when it has already asked that
/// holder for `served` symbols of this window and now wants `count` more.
///
/// Holder `i` owns the band `K + i·HOLDER_STRIDE .. K + (i+1)·HOLDER_STRIDE` and is asked
/// for its band in order, so:
/// - two holders never send the same symbol, whatever mix of holders answers and in
///   whatever order — no coordination between holders, only the requester's numbering;
/// - a follow-up request (after loss, or a decode that needs one more) continues where
///   the previous one stopped and never repeats a symbol;
/// - every ESI is a repair ESI (`≥ K`), 24-bit.
///
/// The numbering is the requester's own for this one decode (e.g. holders sorted by peer
/// id); holders need not know it, they just serve the range they are asked for. Fails if
/// `holder ≥ MAX_HOLDERS` or the band is used up (`served + count > HOLDER_STRIDE`, more
/// than a whole window's worth of symbols from one holder).
pub fn holder_range(
    layout: &Layout,
    holder: u32,
    served: u32,
    count: u32,
) -> Result<EsiRange, Error> {
    let fits =
        holder < MAX_HOLDERS && u64::from(served) + u64::from(count) <= u64::from(HOLDER_STRIDE);
    if !fits {
        return Err(Error::HolderBand {
            holder,
            served,
            count,
        });
    }
    // ≤ K'max + MAX_HOLDERS · HOLDER_STRIDE ≤ 2^24: no overflow.
    Ok(EsiRange {
        start: layout.slots + holder * HOLDER_STRIDE + served,
        count,
    })
}

/// How many of `total` symbols to ask each of `holders` holders for: as even as possible,
/// the first `total % holders` holders one more. Empty if `holders == 0`.
pub fn split(total: u32, holders: u32) -> impl Iterator<Item = u32> {
    let each = total.checked_div(holders).unwrap_or(0);
    let rest = total.checked_rem(holders).unwrap_or(0);
    (0..holders).map(move |i| each + u32::from(i < rest))
}

/// One encoding symbol: its ESI and `T` bytes of data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    esi: u32,
    data: Vec<u8>,
}

impl Symbol {
    /// A symbol; `esi` must be 24-bit. Its length is checked against a layout where it is
    /// used ([`Decoder::push`]).
    pub fn new(esi: u32, data: Vec<u8>) -> Result<Self, SymbolError> {
        if esi >= ESI_LIMIT {
            return Err(SymbolError::EsiTooLarge { esi });
        }
        Ok(Self { esi, data })
    }

    /// Parses and checks a symbol from the wire: exactly `4 + T` bytes, SBN 0, a repair
    /// ESI of `layout`. After `Ok`, [`Decoder::push`] cannot reject it for its form.
    pub fn from_bytes(bytes: &[u8], layout: &Layout) -> Result<Self, SymbolError> {
        let Some((header, data)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(SymbolError::Truncated { len: bytes.len() });
        };
        let [sbn, e2, e1, e0] = *header;
        if sbn != 0 {
            return Err(SymbolError::SourceBlock { sbn });
        }
        let esi = u32::from_be_bytes([0, e2, e1, e0]);
        let symbol = Self {
            esi,
            data: data.to_vec(),
        };
        symbol.check(layout)?;
        Ok(symbol)
    }

    /// The wire form: `[0, esi (u24 BE), data…]`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.data.len());
        self.write_to(&mut out);
        out
    }

    /// Appends the wire form to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let [_, e2, e1, e0] = self.esi.to_be_bytes();
        out.extend_from_slice(&[0, e2, e1, e0]);
        out.extend_from_slice(&self.data);
    }

    /// The encoding symbol id.
    pub fn esi(&self) -> u32 {
        self.esi
    }

    /// The symbol's bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }

    /// Consumes the symbol, returning its bytes.
    pub fn into_data(self) -> Vec<u8> {
        self.data
    }

    fn check(&self, layout: &Layout) -> Result<(), SymbolError> {
        if self.data.len() != layout.slot_size() {
            return Err(SymbolError::Length {
                expected: layout.slot_size(),
                got: self.data.len(),
            });
        }
        if self.esi >= ESI_LIMIT {
            return Err(SymbolError::EsiTooLarge { esi: self.esi });
        }
        if self.esi < layout.slots {
            return Err(SymbolError::SourceEsi {
                esi: self.esi,
                slots: layout.slots,
            });
        }
        Ok(())
    }
}

/// raptorq's encoding plan for one source symbol count: the schedule of the intermediate
/// symbol computation, a function of `K` alone. Generating it is most of the cost of an
/// uncached encoder; reuse it (see [`EncoderCache`]).
pub struct Plan {
    slots: u32,
    inner: SourceBlockEncodingPlan,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

impl Plan {
    /// Generates the plan for `layout.slots()` source symbols.
    pub fn new(layout: &Layout) -> Self {
        // K ≤ K'max < 2^16.
        Self {
            slots: layout.slots,
            inner: SourceBlockEncodingPlan::generate(layout.slots as u16),
        }
    }

    /// The source symbol count this plan is for.
    pub fn slots(&self) -> u32 {
        self.slots
    }
}

/// The holder side: the intermediate symbols of one window's slot part, from which any
/// repair symbol is computed on demand.
pub struct Encoder {
    layout: Layout,
    inner: SourceBlockEncoder,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder")
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl Encoder {
    /// Prepares to serve repair symbols of `slot_part`, using `plan` (which must be for
    /// `layout.slots()`).
    pub fn new(layout: Layout, slot_part: &[u8], plan: &Plan) -> Result<Self, Error> {
        if slot_part.len() != layout.slot_part_len() {
            return Err(Error::SlotPartLength {
                expected: layout.slot_part_len(),
                got: slot_part.len(),
            });
        }
        if plan.slots != layout.slots {
            return Err(Error::PlanMismatch {
                plan: plan.slots,
                slots: layout.slots,
            });
        }
        // Cannot panic: the length is K·T, T % Al == 0 and the plan is for K.
        let inner =
            SourceBlockEncoder::with_encoding_plan(0, &layout.oti(), slot_part, &plan.inner);
        Ok(Self { layout, inner })
    }

    /// The layout this encoder serves.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Approximate heap bytes held (source and intermediate symbols).
    pub fn heap_bytes(&self) -> usize {
        // K source symbols (one allocation each) + L ≈ K + small intermediate symbols.
        let k = self.layout.slots as usize;
        2 * self.layout.slot_part_len() + k * 32 + 1024
    }

    /// The repair symbols with ESIs `range`. The range must be repair ESIs (`≥ K`,
    /// 24-bit) and at most `K + MAX_OVERHEAD` long — no request needs more.
    pub fn repair(&self, range: EsiRange) -> Result<Vec<Symbol>, Error> {
        let k = self.layout.slots;
        let ok = range.start >= k
            && range.end() <= u64::from(ESI_LIMIT)
            && range.count <= k + MAX_OVERHEAD;
        if !ok {
            return Err(Error::Range {
                start: range.start,
                count: range.count,
                slots: k,
            });
        }
        Ok(self
            .inner
            .repair_packets(range.start - k, range.count)
            .into_iter()
            .map(|packet| {
                let (id, data) = packet.split();
                Symbol {
                    esi: id.encoding_symbol_id(),
                    data,
                }
            })
            .collect())
    }
}

/// Sizes of an [`EncoderCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// Encoding plans kept (one per distinct slot count).
    pub plans: usize,
    /// Encoders kept (one per window root).
    pub encoders: usize,
    /// Bound on the encoders' [`Encoder::heap_bytes`] together.
    pub encoder_bytes: usize,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            plans: 16,
            encoders: 64,
            encoder_bytes: 64 << 20,
        }
    }
}

/// Hit and miss counts of an [`EncoderCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub plan_hits: u64,
    pub plan_misses: u64,
    pub encoder_hits: u64,
    pub encoder_misses: u64,
    pub evictions: u64,
}

/// Bounded LRU caches of encoding plans (by slot count) and encoders (by window root).
///
/// Plain data: wrap it in a mutex to share it; the `Arc`s it hands out are used outside
/// the lock. An encoder larger than the byte budget is built and returned but not kept.
#[derive(Debug)]
pub struct EncoderCache {
    plans: Lru<u32, Arc<Plan>>,
    encoders: Lru<[u8; 32], Arc<Encoder>>,
    stats: CacheStats,
}

impl EncoderCache {
    /// An empty cache.
    pub fn new(config: CacheConfig) -> Self {
        Self {
            plans: Lru::new(config.plans, usize::MAX),
            encoders: Lru::new(config.encoders, config.encoder_bytes),
            stats: CacheStats::default(),
        }
    }

    /// The plan for `layout.slots()`, generated on a miss.
    pub fn plan(&mut self, layout: &Layout) -> Arc<Plan> {
        if let Some(plan) = self.plans.get(&layout.slots) {
            self.stats.plan_hits += 1;
            return Arc::clone(plan);
        }
        self.stats.plan_misses += 1;
        let plan = Arc::new(Plan::new(layout));
        self.stats.evictions += self.plans.insert(layout.slots, Arc::clone(&plan), 1);
        plan
    }

    /// The cached encoder of the window with this root, if any.
    pub fn get(&mut self, root: &[u8; 32]) -> Option<Arc<Encoder>> {
        let found = self.encoders.get(root).map(Arc::clone);
        if found.is_some() {
            self.stats.encoder_hits += 1;
        }
        found
    }

    /// The encoder of the window with this root: cached, or built from `slot_part` (with a
    /// cached plan) and cached. A cached encoder whose layout differs from `layout` is
    /// replaced. Look up with [`Self::get`] first to avoid loading the slot part on a hit.
    pub fn get_or_build(
        &mut self,
        root: [u8; 32],
        layout: Layout,
        slot_part: &[u8],
    ) -> Result<Arc<Encoder>, Error> {
        if let Some(encoder) = self.encoders.get(&root) {
            if encoder.layout == layout {
                self.stats.encoder_hits += 1;
                return Ok(Arc::clone(encoder));
            }
        }
        self.stats.encoder_misses += 1;
        let plan = self.plan(&layout);
        let encoder = Arc::new(Encoder::new(layout, slot_part, &plan)?);
        let weight = encoder.heap_bytes();
        self.stats.evictions += self.encoders.insert(root, Arc::clone(&encoder), weight);
        Ok(encoder)
    }

    /// Forgets the encoder of this root (e.g. the window changed).
    pub fn remove(&mut self, root: &[u8; 32]) {
        self.encoders.remove(root);
    }

    /// Plans and encoders held.
    pub fn len(&self) -> (usize, usize) {
        (self.plans.len(), self.encoders.len())
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.plans.len() == 0 && self.encoders.len() == 0
    }

    /// Hit, miss and eviction counts.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }
}

/// A tiny LRU map bounded by entry count and total weight. `O(log n)` per operation.
#[derive(Debug)]
struct Lru<K, V> {
    max_entries: usize,
    max_weight: usize,
    weight: usize,
    tick: u64,
    map: HashMap<K, (V, u64, usize)>,
    order: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V> Lru<K, V> {
    fn new(max_entries: usize, max_weight: usize) -> Self {
        Self {
            max_entries,
            max_weight,
            weight: 0,
            tick: 0,
            map: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    fn get(&mut self, key: &K) -> Option<&V> {
        let (value, used, _) = self.map.get_mut(key)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, key.clone());
        Some(value)
    }

    fn remove(&mut self, key: &K) {
        if let Some((_, used, weight)) = self.map.remove(key) {
            self.order.remove(&used);
            self.weight -= weight;
        }
    }

    /// Inserts (replacing any entry of `key`) and returns how many entries were evicted.
    /// An entry that alone exceeds a bound is not kept.
    fn insert(&mut self, key: K, value: V, weight: usize) -> u64 {
        self.remove(&key);
        if self.max_entries == 0 || weight > self.max_weight {
            return 0;
        }
        let mut evicted = 0;
        while self.map.len() + 1 > self.max_entries || self.weight + weight > self.max_weight {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, _, w)) = self.map.remove(&oldest) {
                self.weight -= w;
            }
            evicted += 1;
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.map.insert(key, (value, self.tick, weight));
        self.weight += weight;
        evicted
    }
}

/// What [`Decoder::push`] did with one symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// A new repair symbol, kept for the decode.
    Used,
    /// Its ESI was already received: ignored.
    Duplicate,
    /// The decode is over, or `missing + MAX_OVERHEAD` symbols are already held: ignored.
    Excess,
}

/// The decoder's counts after a [`Decoder::push`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What happened to this symbol.
    pub symbol: Disposition,
    /// Well-formed symbols pushed so far (used + duplicate + excess).
    pub received: u32,
    /// Distinct repair symbols kept for the decode.
    pub used: u32,
    /// Symbols ignored as duplicates.
    pub duplicate: u32,
    /// Symbols ignored as excess.
    pub excess: u32,
    /// Symbols rejected as malformed (returned as errors by `push`).
    pub rejected: u32,
    /// How many more symbols the decoder expects to need ([`Decoder::needed`]).
    pub needed: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Collecting symbols.
    Open,
    /// Decoded; the result waits in `result`.
    Decoded,
    /// The result was taken, or failed verification: nothing more happens.
    Done,
}

/// The requester side: a window's slot part with some slots present and the rest erased,
/// rebuilt from repair symbols from any holders, in any order.
pub struct Decoder {
    layout: Layout,
    missing: u32,
    inner: SourceBlockDecoder,
    /// Repair ESIs kept (bounded by `missing + MAX_OVERHEAD`).
    seen: HashSet<u32>,
    /// Kept but not yet handed to raptorq (it attempts a full decode on every hand-over
    /// once it has `K` symbols, so they are handed over in batches by `try_finish`).
    pending: Vec<EncodingPacket>,
    result: Option<Vec<u8>>,
    state: State,
    received: u32,
    duplicate: u32,
    excess: u32,
    rejected: u32,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decoder")
            .field("layout", &self.layout)
            .field("missing", &self.missing)
            .field("used", &self.seen.len())
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Decoder {
    /// A decoder for `layout`, holding the slots `present` as `(slot index, slot bytes)`
    /// (each exactly `slot_size` bytes, each index once); every other slot is an erasure.
    pub fn new<'a>(
        layout: Layout,
        present: impl IntoIterator<Item = (u32, &'a [u8])>,
    ) -> Result<Self, Error> {
        let k = layout.slots;
        let mut have = vec![false; k as usize];
        let mut packets = Vec::new();
        for (index, bytes) in present {
            let Some(slot) = have.get_mut(index as usize) else {
                return Err(Error::SlotIndex { index, slots: k });
            };
            if std::mem::replace(slot, true) {
                return Err(Error::DuplicateSlot { index });
            }
            if bytes.len() != layout.slot_size() {
                return Err(SymbolError::Length {
                    expected: layout.slot_size(),
                    got: bytes.len(),
                }
                .into());
            }
            packets.push(EncodingPacket::new(
                PayloadId::new(0, index),
                bytes.to_vec(),
            ));
        }
        let missing = k - packets.len() as u32;
        let mut inner = SourceBlockDecoder::new(0, &layout.oti(), layout.slot_part_len() as u64);
        // With fewer than K symbols raptorq only stores them; with all K (nothing missing)
        // it returns the slot part at once.
        let result = inner.decode(packets);
        let state = if result.is_some() {
            State::Decoded
        } else {
            State::Open
        };
        Ok(Self {
            layout,
            missing,
            inner,
            seen: HashSet::new(),
            pending: Vec::new(),
            result,
            state,
            received: 0,
            duplicate: 0,
            excess: 0,
            rejected: 0,
        })
    }

    /// The layout being rebuilt.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Erased slots (`m`).
    pub fn missing(&self) -> u32 {
        self.missing
    }

    /// Distinct repair symbols kept so far.
    pub fn used(&self) -> u32 {
        self.seen.len() as u32
    }

    /// How many more symbols this decoder expects to need: `missing − used` while that is
    /// positive; 1 once it has `missing` or more but has not decoded (each extra symbol
    /// makes a failure ~100× less likely); 0 once decoded.
    pub fn needed(&self) -> u32 {
        match self.state {
            State::Open if self.used() < self.missing => self.missing - self.used(),
            State::Open => 1,
            State::Decoded | State::Done => 0,
        }
    }

    /// Whether a [`Self::try_finish`] could succeed now.
    pub fn ready(&self) -> bool {
        match self.state {
            State::Open => self.used() >= self.missing && !self.pending.is_empty(),
            State::Decoded => true,
            State::Done => false,
        }
    }

    /// Takes one symbol from a holder. Malformed symbols (wrong length, source ESI) are
    /// errors and counted; duplicates and symbols beyond need are ignored and counted.
    /// Never decodes (that is [`Self::try_finish`]), so it is cheap.
    pub fn push(&mut self, symbol: Symbol) -> Result<Progress, SymbolError> {
        if let Err(e) = symbol.check(&self.layout) {
            self.rejected += 1;
            return Err(e);
        }
        self.received += 1;
        let disposition = if self.state != State::Open || self.used() >= self.missing + MAX_OVERHEAD
        {
            self.excess += 1;
            Disposition::Excess
        } else if !self.seen.insert(symbol.esi) {
            self.duplicate += 1;
            Disposition::Duplicate
        } else {
            // Checked: 24-bit ESI, length T, ESI ≥ K.
            self.pending.push(EncodingPacket::new(
                PayloadId::new(0, symbol.esi),
                symbol.data,
            ));
            Disposition::Used
        };
        Ok(self.progress(disposition))
    }

    fn progress(&self, symbol: Disposition) -> Progress {
        Progress {
            symbol,
            received: self.received,
            used: self.used(),
            duplicate: self.duplicate,
            excess: self.excess,
            rejected: self.rejected,
            needed: self.needed(),
        }
    }

    /// Counts so far (`symbol` is `Used` when nothing was pushed).
    pub fn counts(&self) -> Progress {
        self.progress(Disposition::Used)
    }

    /// Decodes if it can: returns the whole slot part once the present slots and the
    /// repair symbols determine it, and `None` until then (always `None` with fewer than
    /// `missing` symbols). The slot part is handed out once; afterwards the decoder is
    /// finished and ignores further symbols. The caller must check it against the
    /// window's root before using it — or use [`Self::finish_verified`].
    pub fn try_finish(&mut self) -> Option<Vec<u8>> {
        if self.state == State::Open && self.used() >= self.missing && !self.pending.is_empty() {
            let batch = std::mem::take(&mut self.pending);
            self.result = self.inner.decode(batch);
            if self.result.is_some() {
                self.state = State::Decoded;
            }
        }
        if self.state == State::Decoded {
            self.state = State::Done;
            return self.result.take();
        }
        None
    }

    /// [`Self::try_finish`], then `expected(slot_part)` (e.g. "the window's Merkle root
    /// over index part + this slot part equals the announced root"). A slot part that
    /// fails it is dropped and reported as [`Error::RootMismatch`] naming `window`: some
    /// symbol was corrupt. The decoder is then finished; start a new one (with other
    /// holders) to retry.
    pub fn finish_verified(
        &mut self,
        window: &str,
        expected: impl FnOnce(&[u8]) -> bool,
    ) -> Result<Option<Vec<u8>>, Error> {
        match self.try_finish() {
            None => Ok(None),
            Some(slot_part) => verify_with(slot_part, expected, window).map(Some),
        }
    }
}

/// Returns `slot_part` if `expected` accepts it, else [`Error::RootMismatch`] naming
/// `window`. Never hands out data that failed the check.
pub fn verify_with(
    slot_part: Vec<u8>,
    expected: impl FnOnce(&[u8]) -> bool,
    window: &str,
) -> Result<Vec<u8>, Error> {
    if expected(&slot_part) {
        Ok(slot_part)
    } else {
        Err(Error::RootMismatch {
            window: window.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// splitmix64: the tests' seeded randomness (proto has no rand dependency).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        fn chance(&mut self, p: f64) -> bool {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
        }

        fn shuffle<T>(&mut self, v: &mut [T]) {
            for i in (1..v.len()).rev() {
                v.swap(i, self.below(i as u64 + 1) as usize);
            }
        }

        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn slot(part: &[u8], layout: Layout, i: u32) -> &[u8] {
        let t = layout.slot_size();
        &part[i as usize * t..(i as usize + 1) * t]
    }

    /// A decoder holding every slot of `part` except `erased`.
    fn decoder(layout: Layout, part: &[u8], erased: &[bool]) -> Decoder {
        let present = (0..layout.slots())
            .filter(|&i| !erased[i as usize])
            .map(move |i| (i, slot(part, layout, i)));
        Decoder::new(layout, present).expect("valid present slots")
    }

    fn encoder(layout: Layout, part: &[u8]) -> Encoder {
        Encoder::new(layout, part, &Plan::new(&layout)).expect("valid slot part")
    }

    fn hash_check(part: &[u8]) -> impl Fn(&[u8]) -> bool {
        let want = blake3::hash(part);
        move |got| blake3::hash(got) == want
    }

    #[test]
    fn layout_validation() {
        assert!(Layout::new(64, 1).is_ok());
        assert!(Layout::new(8, 56_403).is_ok());
        assert!(Layout::new(65_528, 3).is_ok());
        assert_eq!(
            Layout::new(0, 4),
            Err(LayoutError::SlotSize { slot_size: 0 })
        );
        assert_eq!(
            Layout::new(12, 4),
            Err(LayoutError::SlotSize { slot_size: 12 })
        );
        assert_eq!(
            Layout::new(65_536, 4),
            Err(LayoutError::SlotSize { slot_size: 65_536 })
        );
        assert_eq!(Layout::new(64, 0), Err(LayoutError::Slots { slots: 0 }));
        assert_eq!(
            Layout::new(64, 56_404),
            Err(LayoutError::Slots { slots: 56_404 })
        );
        assert_eq!(
            Layout::new(64, usize::MAX),
            Err(LayoutError::Slots { slots: usize::MAX })
        );
        let l = Layout::new(64, 100).expect("valid");
        assert_eq!((l.slot_part_len(), l.symbol_len()), (6400, 68));
        assert!(!l.is_repair_esi(99) && l.is_repair_esi(100) && !l.is_repair_esi(ESI_LIMIT));
    }

    #[test]
    fn symbol_golden_bytes() {
        let layout = Layout::new(8, 16).expect("valid");
        let s = Symbol::new(0x01_2345, (1..=8).collect()).expect("24-bit");
        let bytes = s.to_bytes();
        assert_eq!(hex::encode(&bytes), "000123450102030405060708");
        assert_eq!(Symbol::from_bytes(&bytes, &layout), Ok(s));
    }

    #[test]
    fn symbol_rejects() {
        let layout = Layout::new(8, 16).expect("valid");
        let ok = Symbol::new(16, vec![7; 8]).expect("24-bit").to_bytes();
        assert!(Symbol::from_bytes(&ok, &layout).is_ok());
        for len in 0..4 {
            assert_eq!(
                Symbol::from_bytes(&ok[..len], &layout),
                Err(SymbolError::Truncated { len })
            );
        }
        assert_eq!(
            Symbol::from_bytes(&ok[..11], &layout),
            Err(SymbolError::Length {
                expected: 8,
                got: 7
            })
        );
        let mut long = ok.clone();
        long.push(0);
        assert_eq!(
            Symbol::from_bytes(&long, &layout),
            Err(SymbolError::Length {
                expected: 8,
                got: 9
            })
        );
        let mut sbn = ok.clone();
        sbn[0] = 1;
        assert_eq!(
            Symbol::from_bytes(&sbn, &layout),
            Err(SymbolError::SourceBlock { sbn: 1 })
        );
        let source = Symbol::new(15, vec![0; 8]).expect("24-bit").to_bytes();
        assert_eq!(
            Symbol::from_bytes(&source, &layout),
            Err(SymbolError::SourceEsi { esi: 15, slots: 16 })
        );
        assert_eq!(
            Symbol::new(ESI_LIMIT, vec![]),
            Err(SymbolError::EsiTooLarge { esi: ESI_LIMIT })
        );
        // The largest ESI round-trips.
        let max = Symbol::new(ESI_LIMIT - 1, vec![1; 8]).expect("24-bit");
        assert_eq!(Symbol::from_bytes(&max.to_bytes(), &layout), Ok(max));
    }

    #[test]
    fn decoder_rejects_bad_present_slots() {
        let layout = Layout::new(8, 4).expect("valid");
        let s = [0u8; 8];
        assert_eq!(
            Decoder::new(layout, [(4, &s[..])]).err(),
            Some(Error::SlotIndex { index: 4, slots: 4 })
        );
        assert_eq!(
            Decoder::new(layout, [(1, &s[..]), (1, &s[..])]).err(),
            Some(Error::DuplicateSlot { index: 1 })
        );
        assert_eq!(
            Decoder::new(layout, [(0, &s[..7])]).err(),
            Some(Error::Symbol(SymbolError::Length {
                expected: 8,
                got: 7
            }))
        );
    }

    #[test]
    fn encoder_checks_inputs() {
        let layout = Layout::new(8, 4).expect("valid");
        let plan = Plan::new(&layout);
        assert_eq!(
            Encoder::new(layout, &[0; 31], &plan).err(),
            Some(Error::SlotPartLength {
                expected: 32,
                got: 31
            })
        );
        let other = Plan::new(&Layout::new(8, 5).expect("valid"));
        assert_eq!(
            Encoder::new(layout, &[0; 32], &other).err(),
            Some(Error::PlanMismatch { plan: 5, slots: 4 })
        );
        let enc = Encoder::new(layout, &[0; 32], &plan).expect("valid");
        let bad = |start, count| enc.repair(EsiRange { start, count }).is_err();
        assert!(bad(3, 1), "source ESI");
        assert!(bad(ESI_LIMIT - 1, 2), "past 24 bits");
        assert!(bad(4, 4 + MAX_OVERHEAD + 1), "too many");
        let ok = enc
            .repair(EsiRange {
                start: ESI_LIMIT - 2,
                count: 2,
            })
            .expect("in range");
        assert_eq!(
            ok.iter().map(Symbol::esi).collect::<Vec<_>>(),
            [ESI_LIMIT - 2, ESI_LIMIT - 1]
        );
        assert!(enc
            .repair(EsiRange { start: 4, count: 0 })
            .expect("empty")
            .is_empty());
    }

    #[test]
    fn repair_symbols_do_not_depend_on_request_shape() {
        // The symbol for an ESI is the same whether asked alone or in a range.
        let layout = Layout::new(16, 50).expect("valid");
        let part = Rng(1).bytes(layout.slot_part_len());
        let enc = encoder(layout, &part);
        let run = enc
            .repair(EsiRange {
                start: 60,
                count: 10,
            })
            .expect("range");
        for s in &run {
            let one = enc
                .repair(EsiRange {
                    start: s.esi(),
                    count: 1,
                })
                .expect("range");
            assert_eq!(one, std::slice::from_ref(s));
        }
    }

    #[test]
    fn nothing_missing_finishes_at_once() {
        let layout = Layout::new(8, 10).expect("valid");
        let part = Rng(2).bytes(layout.slot_part_len());
        let mut dec = decoder(layout, &part, &[false; 10]);
        assert_eq!((dec.missing(), dec.needed()), (0, 0));
        assert!(dec.ready());
        assert_eq!(dec.try_finish(), Some(part.clone()));
        assert_eq!(dec.try_finish(), None, "handed out once");
        let late = Symbol::new(10, vec![0; 8]).expect("24-bit");
        assert_eq!(dec.push(late).map(|p| p.symbol), Ok(Disposition::Excess));
    }

    /// Decodes `part` with `erased` slots from `symbols` in order,
    /// calling `try_finish` after each; returns how many symbols were used.
    fn decode_with(
        layout: Layout,
        part: &[u8],
        erased: &[bool],
        symbols: Vec<Symbol>,
    ) -> Option<u32> {
        let mut dec = decoder(layout, part, erased);
        for s in symbols {
            dec.push(s).expect("well-formed");
            if let Some(out) = dec.try_finish() {
                assert_eq!(out, part);
                assert!(dec.used() >= dec.missing());
                return Some(dec.used());
            }
        }
        None
    }

    #[test]
    fn new_node_with_nothing_rebuilds_from_k_plus_two() {
        // m = K: the whole window from repair symbols only, from three holders.
        let layout = Layout::new(64, 200).expect("valid");
        let part = Rng(3).bytes(layout.slot_part_len());
        let enc = encoder(layout, &part);
        let mut symbols = Vec::new();
        for (i, n) in split(202, 3).enumerate() {
            let range = holder_range(&layout, i as u32, 0, n).expect("band");
            symbols.extend(enc.repair(range).expect("range"));
        }
        Rng(4).shuffle(&mut symbols);
        let mut dec = decoder(layout, &part, &[true; 200]);
        for s in symbols {
            dec.push(s).expect("well-formed");
        }
        assert_eq!(dec.needed(), 1);
        assert_eq!(
            dec.finish_verified("w", hash_check(&part))
                .expect("root matches"),
            Some(part)
        );
    }

    #[test]
    fn single_slot_window() {
        let layout = Layout::new(8, 1).expect("valid");
        let part = Rng(5).bytes(8);
        let enc = encoder(layout, &part);
        let symbols = enc.repair(EsiRange { start: 1, count: 3 }).expect("range");
        let used = decode_with(layout, &part, &[true], symbols).expect("decodes");
        assert!(used >= 1);
        let mut dec = decoder(layout, &part, &[false]);
        assert_eq!(dec.try_finish(), Some(part));
    }

    #[test]
    fn duplicates_and_excess_are_counted_not_used() {
        let layout = Layout::new(8, 20).expect("valid");
        let part = Rng(6).bytes(layout.slot_part_len());
        let enc = encoder(layout, &part);
        let mut erased = [false; 20];
        erased[3] = true;
        let mut dec = decoder(layout, &part, &erased);
        let s = enc
            .repair(EsiRange {
                start: 20,
                count: 1,
            })
            .expect("range");
        let p = dec.push(s[0].clone()).expect("ok");
        assert_eq!((p.symbol, p.used, p.needed), (Disposition::Used, 1, 1));
        let p = dec.push(s[0].clone()).expect("ok");
        assert_eq!(
            (p.symbol, p.received, p.used, p.duplicate),
            (Disposition::Duplicate, 2, 1, 1)
        );
        // Cap: missing + MAX_OVERHEAD symbols kept at most.
        for s in enc
            .repair(EsiRange {
                start: 21,
                count: MAX_OVERHEAD + 5,
            })
            .expect("range")
        {
            dec.push(s).expect("ok");
        }
        let c = dec.counts();
        assert_eq!((c.used, c.excess), (1 + MAX_OVERHEAD, 5));
        let bad = Symbol::new(3, vec![0; 8]).expect("24-bit");
        assert_eq!(
            dec.push(bad),
            Err(SymbolError::SourceEsi { esi: 3, slots: 20 })
        );
        assert_eq!(dec.counts().rejected, 1);
        assert_eq!(dec.try_finish(), Some(part));
    }

    #[test]
    fn corrupted_symbol_is_a_root_mismatch() {
        let layout = Layout::new(64, 100).expect("valid");
        let part = Rng(7).bytes(layout.slot_part_len());
        let enc = encoder(layout, &part);
        let mut erased = [false; 100];
        for i in [5, 17, 40, 41, 99] {
            erased[i] = true;
        }
        // Exactly m symbols, so every one of them takes part in the solve (retry with the
        // next ESIs if these five happen to be singular).
        let mut start = 100;
        loop {
            let mut symbols = enc.repair(EsiRange { start, count: 5 }).expect("range");
            let mut data = symbols[2].data().to_vec();
            data[10] ^= 0x40;
            symbols[2] = Symbol::new(symbols[2].esi(), data).expect("24-bit");
            let mut dec = decoder(layout, &part, &erased);
            for s in symbols {
                dec.push(s).expect("well-formed");
            }
            match dec.finish_verified("dev-7/1700000000", hash_check(&part)) {
                Ok(None) => start += 5,
                Ok(Some(_)) => panic!("corrupt data accepted"),
                Err(e) => {
                    assert_eq!(
                        e,
                        Error::RootMismatch {
                            window: "dev-7/1700000000".into()
                        }
                    );
                    assert!(e.to_string().contains("dev-7/1700000000"));
                    assert_eq!(
                        dec.try_finish(),
                        None,
                        "nothing handed out after a mismatch"
                    );
                    return;
                }
            }
        }
    }

    #[test]
    fn cache_reuses_and_bounds() {
        let layout = Layout::new(8, 10).expect("valid");
        let part = vec![1u8; 80];
        let mut cache = EncoderCache::new(CacheConfig {
            plans: 2,
            encoders: 2,
            encoder_bytes: usize::MAX,
        });
        let a = cache.get_or_build([1; 32], layout, &part).expect("valid");
        let a2 = cache.get_or_build([1; 32], layout, &part).expect("valid");
        assert!(Arc::ptr_eq(&a, &a2));
        cache.get_or_build([2; 32], layout, &part).expect("valid");
        let s = cache.stats();
        assert_eq!(
            (s.plan_hits, s.plan_misses, s.encoder_hits, s.encoder_misses),
            (1, 1, 1, 2)
        );
        assert!(cache.get(&[1; 32]).is_some()); // 1 is now the most recently used
        cache.get_or_build([3; 32], layout, &part).expect("valid");
        assert!(cache.get(&[2; 32]).is_none(), "least recently used evicted");
        assert!(cache.get(&[1; 32]).is_some() && cache.get(&[3; 32]).is_some());
        for k in [11, 12, 13] {
            cache.plan(&Layout::new(8, k).expect("valid"));
        }
        assert_eq!(cache.len(), (2, 2));
        assert_eq!(cache.stats().evictions, 3, "encoder 2, plans 10 and 11");
        cache.remove(&[1; 32]);
        assert!(cache.get(&[1; 32]).is_none());

        // Byte budget: room for one encoder only; an over-budget one is not kept.
        let one = a.heap_bytes();
        let mut small = EncoderCache::new(CacheConfig {
            plans: 4,
            encoders: 10,
            encoder_bytes: one,
        });
        small.get_or_build([1; 32], layout, &part).expect("valid");
        small.get_or_build([2; 32], layout, &part).expect("valid");
        assert_eq!(small.len().1, 1);
        let big = Layout::new(8, 100).expect("valid");
        small.get_or_build([3; 32], big, &[0; 800]).expect("valid");
        assert!(small.get(&[2; 32]).is_some() && small.get(&[3; 32]).is_none());
        // A root cached with another layout is rebuilt.
        assert_eq!(
            small
                .get_or_build([2; 32], big, &[0; 800])
                .expect("valid")
                .layout(),
            big
        );
    }

    #[test]
    fn split_is_even() {
        assert_eq!(split(10, 3).collect::<Vec<_>>(), [4, 3, 3]);
        assert_eq!(split(2, 4).collect::<Vec<_>>(), [1, 1, 0, 0]);
        assert_eq!(split(5, 0).count(), 0);
    }

    #[test]
    fn holder_bands_are_bounded() {
        let layout = Layout::new(8, Layout::MAX_SLOTS as usize).expect("valid");
        let last = holder_range(&layout, MAX_HOLDERS - 1, HOLDER_STRIDE - 1, 1).expect("fits");
        assert!(last.end() <= u64::from(ESI_LIMIT));
        assert!(holder_range(&layout, MAX_HOLDERS, 0, 1).is_err());
        assert!(holder_range(&layout, 0, HOLDER_STRIDE, 1).is_err());
        assert!(holder_range(&layout, 0, u32::MAX, u32::MAX).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// Random erasures, several holders, random loss, shuffled arrival, follow-up
        /// requests until decoded: always the exact slot part, never before `m` symbols.
        #[test]
        fn recovers_exact_slot_part(
            seed in any::<u64>(),
            slots in 1usize..160,
            slot_size in prop::sample::select(vec![8usize, 16, 64]),
            erase_p in 0.0f64..=1.0,
            holders in 1u32..6,
            loss in 0.0f64..0.5,
        ) {
            let mut rng = Rng(seed);
            let layout = Layout::new(slot_size, slots).expect("valid");
            let part = rng.bytes(layout.slot_part_len());
            let erased: Vec<bool> = (0..slots).map(|_| rng.chance(erase_p)).collect();
            let m = erased.iter().filter(|&&e| e).count() as u32;
            let enc = encoder(layout, &part);
            let mut dec = decoder(layout, &part, &erased);
            prop_assert_eq!(dec.missing(), m);
            let mut served = vec![0u32; holders as usize];
            let mut out = dec.try_finish();
            let mut rounds = 0;
            while out.is_none() {
                rounds += 1;
                prop_assert!(rounds < 100, "no progress");
                let mut batch = Vec::new();
                for (i, n) in split(dec.needed() + DEFAULT_OVERHEAD, holders).enumerate() {
                    let range = holder_range(&layout, i as u32, served[i], n).expect("band");
                    served[i] += n;
                    batch.extend(enc.repair(range).expect("range").into_iter().filter(|_| !rng.chance(loss)));
                }
                rng.shuffle(&mut batch);
                for s in batch {
                    let p = dec.push(s).expect("well-formed");
                    prop_assert_eq!(p.duplicate, 0, "holders never overlap");
                    if rng.chance(0.3) || p.needed <= 1 {
                        let used = dec.used();
                        out = dec.try_finish();
                        if out.is_some() {
                            prop_assert!(used >= m, "decoded from {} < {} symbols", used, m);
                            break;
                        }
                    }
                }
                if out.is_none() {
                    out = dec.try_finish();
                }
            }
            prop_assert_eq!(out, Some(part));
        }

        /// Fewer than `m` distinct repair symbols never yield a result.
        #[test]
        fn fewer_than_missing_never_decodes(
            seed in any::<u64>(),
            slots in 1usize..120,
            erase_p in 0.01f64..=1.0,
        ) {
            let mut rng = Rng(seed);
            let layout = Layout::new(8, slots).expect("valid");
            let part = rng.bytes(layout.slot_part_len());
            let mut erased: Vec<bool> = (0..slots).map(|_| rng.chance(erase_p)).collect();
            erased[rng.below(slots as u64) as usize] = true;
            let m = erased.iter().filter(|&&e| e).count() as u32;
            let enc = encoder(layout, &part);
            let mut dec = decoder(layout, &part, &erased);
            let start = slots as u32 + rng.below(1000) as u32;
            for s in enc.repair(EsiRange { start, count: m - 1 }).expect("range") {
                dec.push(s.clone()).expect("well-formed");
                dec.push(s).expect("duplicate is fine");
                prop_assert!(dec.try_finish().is_none());
            }
            prop_assert_eq!(dec.needed(), 1);
            prop_assert!(!dec.ready());
        }

        /// A corrupted symbol never gets through the caller's check: the outcome is the
        /// exact slot part or a root mismatch naming the window.
        #[test]
        fn corruption_never_accepted(
            seed in any::<u64>(),
            slots in 2usize..100,
            extra in 0u32..3,
        ) {
            let mut rng = Rng(seed);
            let layout = Layout::new(16, slots).expect("valid");
            let part = rng.bytes(layout.slot_part_len());
            let erased: Vec<bool> = (0..slots).map(|_| rng.chance(0.3)).collect();
            let m = erased.iter().filter(|&&e| e).count() as u32;
            let enc = encoder(layout, &part);
            let mut symbols = enc.repair(EsiRange { start: slots as u32, count: m + extra + 3 }).expect("range");
            if let Some(victim) = symbols.get_mut(rng.below(u64::from(m.max(1))) as usize) {
                let mut data = victim.data().to_vec();
                data[rng.below(16) as usize] ^= 1 << rng.below(8);
                *victim = Symbol::new(victim.esi(), data).expect("24-bit");
            }
            let mut dec = decoder(layout, &part, &erased);
            for s in symbols {
                dec.push(s).expect("well-formed");
                match dec.finish_verified("w9", hash_check(&part)) {
                    Ok(None) => continue,
                    Ok(Some(out)) => { prop_assert_eq!(out, part); break; }
                    Err(e) => { prop_assert_eq!(e, Error::RootMismatch { window: "w9".into() }); break; }
                }
            }
        }

        /// Arbitrary bytes never panic the parser or the decoder.
        #[test]
        fn malformed_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..80),
            slot_size in prop::sample::select(vec![8usize, 16, 64]),
            slots in 1usize..40,
            esi in any::<u32>(),
            len in 0usize..80,
        ) {
            let layout = Layout::new(slot_size, slots).expect("valid");
            let mut dec = Decoder::new(layout, []).expect("empty");
            if let Ok(s) = Symbol::from_bytes(&bytes, &layout) {
                prop_assert_eq!(s.to_bytes(), bytes.clone());
                prop_assert!(dec.push(s).is_ok());
            }
            if let Ok(s) = Symbol::new(esi, vec![0xA5; len]) {
                let _ = dec.push(s);
            }
            let _ = dec.try_finish();
            // Whatever the header says, the length rule alone decides on a well-formed one.
            let mut framed = bytes;
            framed.resize(layout.symbol_len(), 0);
            framed[0] = 0;
            let parsed = Symbol::from_bytes(&framed, &layout);
            let esi = u32::from_be_bytes([0, framed[1], framed[2], framed[3]]);
            prop_assert_eq!(parsed.is_ok(), esi >= slots as u32);
        }

        /// Two holders' bands never overlap; every ESI is a 24-bit repair ESI.
        #[test]
        fn holder_ranges_disjoint(
            slots in 1usize..=56_403,
            a in 0u32..MAX_HOLDERS, b in 0u32..MAX_HOLDERS,
            sa in 0u32..HOLDER_STRIDE, sb in 0u32..HOLDER_STRIDE,
            na in 0u32..1000, nb in 0u32..1000,
        ) {
            let layout = Layout::new(8, slots).expect("valid");
            let (ra, rb) = (holder_range(&layout, a, sa, na), holder_range(&layout, b, sb, nb));
            for (r, s, n) in [(&ra, sa, na), (&rb, sb, nb)] {
                match r {
                    Ok(r) => {
                        prop_assert!(r.start >= layout.slots() && r.end() <= u64::from(ESI_LIMIT));
                        prop_assert_eq!(r.count, n);
                    }
                    Err(_) => prop_assert!(u64::from(s) + u64::from(n) > u64::from(HOLDER_STRIDE)),
                }
            }
            if let (Ok(ra), Ok(rb)) = (ra, rb) {
                if a != b {
                    prop_assert!(ra.end() <= u64::from(rb.start) || rb.end() <= u64::from(ra.start));
                }
            }
        }
    }
}
