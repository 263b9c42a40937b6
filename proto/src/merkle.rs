//! BEP 52-style Merkle trees over a byte blob, generic over the hash.
//!
//! # Geometry
//!
//! A blob of `total_len` bytes is cut into leaves of `leaf_size` bytes; the last leaf may
//! be short and is hashed as it is, never padded with bytes. The leaf layer is padded with
//! *zero digests* (all-zero bytes, not the hash of anything) up to the next power of two,
//! and every interior node is `H(left || right)`. This is exactly BitTorrent v2's
//! `pieces root` when the hash is SHA-256 and the leaf size is 16 KiB — the vectors in
//! `proto/tests/vectors/` (made by libtorrent 2.0) check that. A node wholly to the right
//! of the last real leaf is a *padding* node: its digest depends only on its level
//! ([`zero_subtree`]) and it is never stored or sent.
//!
//! Levels count up from the leaves: level 0 is the leaf layer, level
//! [`Geometry::height`] holds the root alone. A [`Node`] is `(level, index)`, index
//! counted from the left within its level; a [`ChunkNum`] is a leaf index.
//!
//! **Empty data.** BEP 52 gives an empty file no `pieces root` at all (libtorrent omits
//! the key, and refuses to make a torrent whose only file is empty). Here an empty blob
//! has zero leaves, which pads to one padding leaf, so its tree is a single zero digest:
//! `root(b"") == H::zero()`. That value can never be the root of non-empty data (it would
//! take a hash output of all zeros), its outboard is the header alone, and every chunk
//! range of it is out of bounds, so no proof of an empty blob exists or is needed.
//!
//! The geometry ([`Geometry`], [`Node`], [`ChunkNum`], [`ProofNodes`]) is pure index
//! arithmetic with no hashing; [`Outboard`], [`Proof`], [`verify`] and [`RootHasher`] do
//! the hashing. [`reference`](mod@reference) is a naive recursive implementation, the oracle the
//! proptests compare the fast one against.
//!
//! # What the root commits to
//!
//! As in BEP 52, the root commits to the data but not to `leaf_size` (data `a || b` in
//! 32-byte leaves and the 64 bytes `H(a) || H(b)` as one leaf share a root) and leaf
//! hashes are not domain-separated from node hashes. A verifier must therefore take the
//! hash, `leaf_size` and `total_len` from the same trusted source as the root (the signed
//! window announcement); given those, every hash has a fixed place in the tree and no
//! leaf/node confusion is possible.
//!
//! # Outboard byte layout
//!
//! [`Outboard::to_bytes`] writes a 20-byte header, then every stored node digest:
//!
//! | offset | size | field                                                         |
//! |--------|------|---------------------------------------------------------------|
//! | 0      | 4    | magic `b"TMOB"`                                               |
//! | 4      | 1    | format version, **1**                                         |
//! | 5      | 1    | hash id ([`TreeHash::ID`]): 1 = BLAKE3, 2 = SHA-256           |
//! | 6      | 2    | reserved, must be zero                                        |
//! | 8      | 4    | `leaf_size`, u32 big-endian, ≥ 1                              |
//! | 12     | 8    | `total_len`, u64 big-endian                                   |
//! | 20     | …    | digests: level 0 (leaves) left to right, then level 1, …, up to the root, which is last |
//!
//! Padding nodes are omitted, so level `l` holds `ceil(num_leaves / 2^l)` digests and
//! the whole body is [`Geometry::node_count`] × [`TreeHash::DIGEST_LEN`] bytes (fewer
//! than `2 × num_leaves` digests). [`Outboard::from_bytes`] checks every header field and
//! the exact length before it allocates; [`Outboard::check`] additionally re-hashes the
//! interior nodes from the stored leaves.
//!
//! # Proof byte layout
//!
//! A proof for chunks `[a, b)` is the concatenation of the uncle digests, no header
//! (the range and geometry travel with the request). Order: by level from the leaves up;
//! within a level, the left uncle (sibling of the leftmost covered node, if that is a
//! right child) before the right uncle (sibling of the rightmost covered node, if that is
//! a left child). Padding uncles are omitted — the verifier knows they are
//! [`zero_subtree`]s. So a proof has at most two digests per level, its length is fixed by
//! `(total_len, leaf_size, range)` ([`Geometry::proof_len`]) and [`ProofNodes`] lists its
//! nodes.

use std::fmt::Debug;
use std::hash::Hash;
use std::ops::Range;

use sha2::Digest as _;

/// Largest number of leaves a tree may have (so that index arithmetic never overflows).
pub const MAX_LEAVES: u64 = 1 << 62;

/// Largest number of digests in any proof: two per level below the root.
pub const MAX_PROOF_DIGESTS: usize = 2 * 62;

/// Length of the [`Outboard`] byte header.
pub const OUTBOARD_HEADER_LEN: usize = 20;

const OUTBOARD_MAGIC: [u8; 4] = *b"TMOB";
const OUTBOARD_VERSION: u8 = 1;

/// A hash function as the tree uses it.
pub trait TreeHash: Copy + Debug + Eq + Hash + Send + Sync + 'static {
    /// A digest, exactly [`Self::DIGEST_LEN`] bytes.
    type Digest: Copy + Eq + Hash + AsRef<[u8]> + Debug + Send + Sync + 'static;
    /// Identifies the hash in the outboard header.
    const ID: u8;
    /// Lower-case name, e.g. `"blake3"`.
    const NAME: &'static str;
    /// Length of a digest in bytes.
    const DIGEST_LEN: usize;

    /// Digest of one leaf (up to `leaf_size` bytes).
    fn leaf(data: &[u8]) -> Self::Digest;
    /// Digest of an interior node: `H(left || right)`.
    fn node(left: &Self::Digest, right: &Self::Digest) -> Self::Digest;
    /// The padding leaf: all zero bytes.
    fn zero() -> Self::Digest;
    /// A digest from its bytes; `None` unless `bytes.len() == DIGEST_LEN`.
    fn digest_from_slice(bytes: &[u8]) -> Option<Self::Digest>;

    /// Appends the digests of `data`'s leaves (`leaf_size` bytes, the last may be short)
    /// to `out`. All bulk hashing goes through here: an instance able to hash several
    /// leaves at once (multi-buffer SIMD) overrides it; the result must equal `leaf` on
    /// each leaf.
    fn hash_leaves(data: &[u8], leaf_size: usize, out: &mut Vec<Self::Digest>) {
        out.extend(data.chunks(leaf_size).map(Self::leaf));
    }
}

/// BLAKE3, telemesh's tree hash. Leaf = `blake3::hash(leaf)`, node = `blake3::hash(l || r)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Blake3;

impl TreeHash for Blake3 {
    type Digest = [u8; 32];
    const ID: u8 = 1;
    const NAME: &'static str = "blake3";
    const DIGEST_LEN: usize = 32;

    fn leaf(data: &[u8]) -> [u8; 32] {
        *blake3::hash(data).as_bytes()
    }

    fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
        *blake3::hash(&concat(left, right)).as_bytes()
    }

    fn zero() -> [u8; 32] {
        [0; 32]
    }

    fn digest_from_slice(bytes: &[u8]) -> Option<[u8; 32]> {
        bytes.try_into().ok()
    }
}

/// SHA-256, for BEP 52 conformance: with 16 KiB leaves the root is BitTorrent v2's
/// `pieces root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Sha256;

impl TreeHash for Sha256 {
    type Digest = [u8; 32];
    const ID: u8 = 2;
    const NAME: &'static str = "sha256";
    const DIGEST_LEN: usize = 32;

    fn leaf(data: &[u8]) -> [u8; 32] {
        sha2::Sha256::digest(data).into()
    }

    fn node(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
        sha2::Sha256::digest(concat(left, right)).into()
    }

    fn zero() -> [u8; 32] {
        [0; 32]
    }

    fn digest_from_slice(bytes: &[u8]) -> Option<[u8; 32]> {
        bytes.try_into().ok()
    }
}

fn concat(left: &[u8; 32], right: &[u8; 32]) -> [u8; 64] {
    let mut buf = [0; 64];
    buf[..32].copy_from_slice(left);
    buf[32..].copy_from_slice(right);
    buf
}

/// The digest of a subtree of `level` levels made only of padding: `zero()` at level 0,
/// `node(z, z)` above.
pub fn zero_subtree<H: TreeHash>(level: u32) -> H::Digest {
    (0..level).fold(H::zero(), |z, _| H::node(&z, &z))
}

/// Geometry, ranges and proofs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("leaf size must be at least 1 byte")]
    ZeroLeafSize,
    #[error("{total_len} bytes in {leaf_size}-byte leaves is more than 2^62 leaves")]
    TooLarge { total_len: u64, leaf_size: u32 },
    #[error("chunk range {start}..{end} is empty")]
    EmptyRange { start: u64, end: u64 },
    #[error("chunk range {start}..{end} is outside the blob's {num_leaves} leaves")]
    RangeOutOfBounds {
        start: u64,
        end: u64,
        num_leaves: u64,
    },
    #[error("leaf data for chunks {start}..{end} must be {expected} bytes, got {actual}")]
    LeafDataLength {
        start: u64,
        end: u64,
        expected: u64,
        actual: u64,
    },
    #[error("proof for chunks {start}..{end} must hold {expected} digests, got {actual}")]
    ProofLength {
        start: u64,
        end: u64,
        expected: usize,
        actual: usize,
    },
    #[error("chunks {start}..{end} and their proof do not hash to the expected root")]
    RootMismatch { start: u64, end: u64 },
}

/// Decoding an [`Outboard`] or a [`Proof`] from bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("outboard is {actual} bytes, shorter than its {OUTBOARD_HEADER_LEN}-byte header")]
    OutboardTruncated { actual: usize },
    #[error("outboard magic is {found:02x?}, not \"TMOB\"")]
    OutboardMagic { found: [u8; 4] },
    #[error("outboard format version {found} is not supported (expected 1)")]
    OutboardVersion { found: u8 },
    #[error("outboard is for hash id {found}, expected {expected} ({name})")]
    OutboardHash {
        found: u8,
        expected: u8,
        name: &'static str,
    },
    #[error("outboard reserved bytes are {found:02x?}, must be zero")]
    OutboardReserved { found: [u8; 2] },
    #[error("outboard header: {0}")]
    OutboardGeometry(#[source] Error),
    #[error("outboard is {actual} bytes, its header implies {expected}")]
    OutboardLength { expected: u64, actual: u64 },
    #[error("outboard node (level {level}, index {index}) is not the hash of its children")]
    OutboardInconsistent { level: u32, index: u64 },
    #[error("proof is {len} bytes, not a multiple of the {digest_len}-byte digest")]
    ProofLength { len: usize, digest_len: usize },
    #[error("proof of {digests} digests is longer than any tree's ({MAX_PROOF_DIGESTS})")]
    ProofTooLong { digests: usize },
}

/// A leaf (chunk) index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ChunkNum(pub u64);

/// A node of the (padded) tree: `level` 0 is the leaf layer; `index` counts from the left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Node {
    pub level: u32,
    pub index: u64,
}

impl Node {
    pub const fn new(level: u32, index: u64) -> Self {
        Node { level, index }
    }

    /// The leaf `chunk` as a node.
    pub const fn leaf(chunk: ChunkNum) -> Self {
        Node {
            level: 0,
            index: chunk.0,
        }
    }

    pub const fn parent(self) -> Self {
        Node {
            level: self.level.saturating_add(1),
            index: self.index >> 1,
        }
    }

    pub const fn sibling(self) -> Self {
        Node {
            level: self.level,
            index: self.index ^ 1,
        }
    }

    pub const fn is_left(self) -> bool {
        self.index & 1 == 0
    }

    /// The children, `None` for a leaf.
    pub const fn children(self) -> Option<(Node, Node)> {
        if self.level == 0 {
            return None;
        }
        let level = self.level - 1;
        Some((
            Node {
                level,
                index: self.index << 1,
            },
            Node {
                level,
                index: (self.index << 1) | 1,
            },
        ))
    }

    /// The leaves under this node in the padded tree (saturating at `u64::MAX`).
    pub fn leaves(self) -> Range<ChunkNum> {
        let shift = |i: u64| i.checked_shl(self.level).filter(|&x| x >> self.level == i);
        let start = shift(self.index).unwrap_or(u64::MAX);
        let end = self
            .index
            .checked_add(1)
            .and_then(shift)
            .unwrap_or(u64::MAX);
        ChunkNum(start)..ChunkNum(end)
    }
}

/// The shape of the tree over `total_len` bytes in `leaf_size`-byte leaves. Pure index
/// arithmetic: which nodes exist, where they are stored, which ones a proof needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Geometry {
    total_len: u64,
    leaf_size: u32,
    num_leaves: u64,
    height: u32,
}

impl Geometry {
    pub fn new(total_len: u64, leaf_size: u32) -> Result<Self, Error> {
        if leaf_size == 0 {
            return Err(Error::ZeroLeafSize);
        }
        let num_leaves = total_len.div_ceil(u64::from(leaf_size));
        if num_leaves > MAX_LEAVES {
            return Err(Error::TooLarge {
                total_len,
                leaf_size,
            });
        }
        let height = match num_leaves {
            0 | 1 => 0,
            n => 64 - (n - 1).leading_zeros(),
        };
        Ok(Geometry {
            total_len,
            leaf_size,
            num_leaves,
            height,
        })
    }

    pub const fn total_len(&self) -> u64 {
        self.total_len
    }

    pub const fn leaf_size(&self) -> u32 {
        self.leaf_size
    }

    /// Real (data-bearing) leaves: `ceil(total_len / leaf_size)`; 0 for empty data.
    pub const fn num_leaves(&self) -> u64 {
        self.num_leaves
    }

    /// Levels above the leaves: `ceil(log2(num_leaves))`, 0 for one leaf or none.
    pub const fn height(&self) -> u32 {
        self.height
    }

    pub const fn root_node(&self) -> Node {
        Node {
            level: self.height,
            index: 0,
        }
    }

    /// Whether `node` is part of the padded tree at all.
    pub fn contains(&self, node: Node) -> bool {
        node.level <= self.height && node.index >> (self.height - node.level) == 0
    }

    /// Whether `node` covers no real leaf (its digest is [`zero_subtree`] of its level).
    pub fn is_padding(&self, node: Node) -> bool {
        node.leaves().start.0 >= self.num_leaves
    }

    /// Real (non-padding) nodes at `level`: `ceil(num_leaves / 2^level)`.
    pub fn level_len(&self, level: u32) -> u64 {
        if level > self.height {
            return 0;
        }
        // num_leaves ≤ 2^62 and level ≤ 62: no overflow.
        (self.num_leaves + (1 << level) - 1) >> level
    }

    /// Digests in the outboard: all real nodes of all levels.
    pub fn node_count(&self) -> u64 {
        (0..=self.height).map(|l| self.level_len(l)).sum()
    }

    /// Position of `node`'s digest in the outboard's digest list (levels bottom-up, left
    /// to right); `None` for padding nodes and nodes outside the tree.
    pub fn outboard_index(&self, node: Node) -> Option<u64> {
        if !self.contains(node) || self.is_padding(node) {
            return None;
        }
        let offset: u64 = (0..node.level).map(|l| self.level_len(l)).sum();
        Some(offset + node.index)
    }

    /// Bytes of leaf `chunk`, `None` past the last leaf.
    pub fn leaf_bytes(&self, chunk: ChunkNum) -> Option<Range<u64>> {
        (chunk.0 < self.num_leaves).then(|| {
            let start = chunk.0 * u64::from(self.leaf_size);
            start
                ..self
                    .total_len
                    .min(start.saturating_add(u64::from(self.leaf_size)))
        })
    }

    /// Checks that `range` is a non-empty range of real leaves.
    pub fn check_range(&self, range: &Range<ChunkNum>) -> Result<(), Error> {
        let (start, end) = (range.start.0, range.end.0);
        if start >= end {
            return Err(Error::EmptyRange { start, end });
        }
        if end > self.num_leaves {
            return Err(Error::RangeOutOfBounds {
                start,
                end,
                num_leaves: self.num_leaves,
            });
        }
        Ok(())
    }

    /// Bytes of the leaves in `range`.
    pub fn range_bytes(&self, range: &Range<ChunkNum>) -> Result<Range<u64>, Error> {
        self.check_range(range)?;
        let start = range.start.0 * u64::from(self.leaf_size);
        let end = self
            .total_len
            .min(range.end.0.saturating_mul(u64::from(self.leaf_size)));
        Ok(start..end)
    }

    /// The leaves holding the bytes `bytes` (clamped to the blob); may be empty.
    pub fn chunks_covering(&self, bytes: Range<u64>) -> Range<ChunkNum> {
        let ls = u64::from(self.leaf_size);
        let end = bytes.end.min(self.total_len);
        let start = bytes.start.min(end);
        ChunkNum(start / ls)..ChunkNum(end.div_ceil(ls))
    }

    /// The uncle nodes whose digests prove `range`, in proof order (see the module docs).
    pub fn proof_nodes(&self, range: Range<ChunkNum>) -> Result<ProofNodes, Error> {
        self.check_range(&range)?;
        Ok(ProofNodes {
            geometry: *self,
            level: 0,
            lo: range.start.0,
            hi: range.end.0,
            step: Step::Left,
        })
    }

    /// Digests in the proof of `range`.
    pub fn proof_len(&self, range: Range<ChunkNum>) -> Result<usize, Error> {
        Ok(self.proof_nodes(range)?.count())
    }

    /// Checks `leaf_data` (the bytes of the leaves in `range`) against `root` with `proof`.
    pub fn verify<H: TreeHash>(
        &self,
        root: &H::Digest,
        range: Range<ChunkNum>,
        leaf_data: &[u8],
        proof: &Proof<H>,
    ) -> Result<(), Error> {
        let (start, end) = (range.start.0, range.end.0);
        let bytes = self.range_bytes(&range)?;
        let expected = bytes.end - bytes.start;
        if leaf_data.len() as u64 != expected {
            return Err(Error::LeafDataLength {
                start,
                end,
                expected,
                actual: leaf_data.len() as u64,
            });
        }
        let expected = self.proof_len(range)?;
        if proof.digests.len() != expected {
            return Err(Error::ProofLength {
                start,
                end,
                expected,
                actual: proof.digests.len(),
            });
        }

        // Walk up exactly as `ProofNodes` does, hashing the covered nodes of each level
        // in place; `cur[i]` is the node `lo + i` of the current level.
        let mut cur = Vec::with_capacity((end - start) as usize + 2);
        H::hash_leaves(leaf_data, self.leaf_size as usize, &mut cur);
        let mut uncles = proof.digests.iter();
        let mut zero = (0, H::zero()); // (level, zero_subtree(level)), advanced on demand
        let (mut lo, mut hi) = (start, end);
        for level in 0..self.height {
            if lo & 1 == 1 {
                let &left = uncles.next().ok_or(Error::RootMismatch { start, end })?;
                cur.insert(0, left);
            }
            if hi & 1 == 1 {
                let right = if self.is_padding(Node::new(level, hi)) {
                    while zero.0 < level {
                        zero = (zero.0 + 1, H::node(&zero.1, &zero.1));
                    }
                    zero.1
                } else {
                    *uncles.next().ok_or(Error::RootMismatch { start, end })?
                };
                cur.push(right);
            }
            let parents = cur.len() / 2;
            for i in 0..parents {
                cur[i] = H::node(&cur[2 * i], &cur[2 * i + 1]);
            }
            cur.truncate(parents);
            lo >>= 1;
            hi = hi.div_ceil(2);
        }
        match cur.as_slice() {
            [computed] if computed == root => Ok(()),
            _ => Err(Error::RootMismatch { start, end }),
        }
    }
}

/// Checks `leaf_data` — the bytes of leaves `range` of a `total_len`-byte blob cut into
/// `leaf_size`-byte leaves — against `root` with `proof`.
pub fn verify<H: TreeHash>(
    root: &H::Digest,
    leaf_size: u32,
    total_len: u64,
    range: Range<ChunkNum>,
    leaf_data: &[u8],
    proof: &Proof<H>,
) -> Result<(), Error> {
    Geometry::new(total_len, leaf_size)?.verify(root, range, leaf_data, proof)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Left,
    Right,
}

/// The walk that names a proof's nodes, bottom-up (from [`Geometry::proof_nodes`]).
#[derive(Debug, Clone)]
pub struct ProofNodes {
    geometry: Geometry,
    level: u32,
    /// Covered nodes of `level`: `[lo, hi)`.
    lo: u64,
    hi: u64,
    step: Step,
}

impl Iterator for ProofNodes {
    type Item = Node;

    fn next(&mut self) -> Option<Node> {
        while self.level < self.geometry.height {
            if self.step == Step::Left {
                self.step = Step::Right;
                if self.lo & 1 == 1 {
                    return Some(Node::new(self.level, self.lo - 1));
                }
            }
            let right = Node::new(self.level, self.hi);
            self.lo >>= 1;
            self.hi = self.hi.div_ceil(2);
            self.level += 1;
            self.step = Step::Left;
            if right.index & 1 == 1 && !self.geometry.is_padding(right) {
                return Some(right);
            }
        }
        None
    }
}

/// An uncle-hash proof for a chunk range (layout in the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Proof<H: TreeHash> {
    digests: Vec<H::Digest>,
}

impl<H: TreeHash> Proof<H> {
    pub fn new(digests: Vec<H::Digest>) -> Self {
        Proof { digests }
    }

    pub fn digests(&self) -> &[H::Digest] {
        &self.digests
    }

    pub fn encoded_len(&self) -> usize {
        self.digests.len() * H::DIGEST_LEN
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        for d in &self.digests {
            out.extend_from_slice(d.as_ref());
        }
        out
    }

    /// Decodes concatenated digests. Whether the count fits the range is checked by
    /// [`verify`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        if !bytes.len().is_multiple_of(H::DIGEST_LEN) {
            return Err(DecodeError::ProofLength {
                len: bytes.len(),
                digest_len: H::DIGEST_LEN,
            });
        }
        let digests = bytes.len() / H::DIGEST_LEN;
        if digests > MAX_PROOF_DIGESTS {
            return Err(DecodeError::ProofTooLong { digests });
        }
        let digests = bytes
            .chunks_exact(H::DIGEST_LEN)
            .filter_map(H::digest_from_slice)
            .collect();
        Ok(Proof { digests })
    }
}

/// The stored hash tree of one blob: every real node's digest, built once, so that
/// proofs need no hashing at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outboard<H: TreeHash> {
    geometry: Geometry,
    /// Levels bottom-up, each left to right; padding omitted; the root is last.
    nodes: Vec<H::Digest>,
}

impl<H: TreeHash> Outboard<H> {
    /// Hashes `data` into its tree.
    pub fn build(data: &[u8], leaf_size: u32) -> Result<Self, Error> {
        let geometry = Geometry::new(data.len() as u64, leaf_size)?;
        let mut nodes = Vec::with_capacity(geometry.node_count() as usize);
        H::hash_leaves(data, leaf_size as usize, &mut nodes);
        Self::build_interior(&mut nodes);
        Ok(Outboard { geometry, nodes })
    }

    /// Appends the interior levels above the leaf layer held in `nodes`.
    fn build_interior(nodes: &mut Vec<H::Digest>) {
        let (mut start, mut len, mut zero) = (0, nodes.len(), H::zero());
        while len > 1 {
            for i in (start..start + len).step_by(2) {
                let right = if i + 1 < start + len {
                    nodes[i + 1]
                } else {
                    zero
                };
                let parent = H::node(&nodes[i], &right);
                nodes.push(parent);
            }
            start += len;
            len = len.div_ceil(2);
            zero = H::node(&zero, &zero);
        }
    }

    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    pub fn root(&self) -> H::Digest {
        self.nodes.last().copied().unwrap_or_else(H::zero)
    }

    /// The leaf digests, in order.
    pub fn leaves(&self) -> &[H::Digest] {
        self.nodes
            .get(..self.geometry.num_leaves as usize)
            .unwrap_or_default()
    }

    /// The digest of any node of the padded tree; `None` outside it.
    pub fn node(&self, node: Node) -> Option<H::Digest> {
        if !self.geometry.contains(node) {
            return None;
        }
        match self.geometry.outboard_index(node) {
            Some(i) => self.nodes.get(i as usize).copied(),
            None => Some(zero_subtree::<H>(node.level)),
        }
    }

    /// The proof for `range`: a lookup per uncle, no hashing.
    pub fn prove(&self, range: Range<ChunkNum>) -> Result<Proof<H>, Error> {
        let digests = self
            .geometry
            .proof_nodes(range)?
            .filter_map(|n| self.geometry.outboard_index(n))
            .filter_map(|i| self.nodes.get(i as usize).copied())
            .collect();
        Ok(Proof { digests })
    }

    pub fn encoded_len(&self) -> usize {
        OUTBOARD_HEADER_LEN + self.nodes.len() * H::DIGEST_LEN
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        out.extend_from_slice(&OUTBOARD_MAGIC);
        out.extend_from_slice(&[OUTBOARD_VERSION, H::ID, 0, 0]);
        out.extend_from_slice(&self.geometry.leaf_size.to_be_bytes());
        out.extend_from_slice(&self.geometry.total_len.to_be_bytes());
        for d in &self.nodes {
            out.extend_from_slice(d.as_ref());
        }
        out
    }

    /// Decodes an outboard, checking the header and the exact length (not the digests:
    /// see [`Outboard::check`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Some((header, body)) = bytes.split_first_chunk::<OUTBOARD_HEADER_LEN>() else {
            return Err(DecodeError::OutboardTruncated {
                actual: bytes.len(),
            });
        };
        let magic = [header[0], header[1], header[2], header[3]];
        if magic != OUTBOARD_MAGIC {
            return Err(DecodeError::OutboardMagic { found: magic });
        }
        if header[4] != OUTBOARD_VERSION {
            return Err(DecodeError::OutboardVersion { found: header[4] });
        }
        if header[5] != H::ID {
            return Err(DecodeError::OutboardHash {
                found: header[5],
                expected: H::ID,
                name: H::NAME,
            });
        }
        if header[6..8] != [0, 0] {
            return Err(DecodeError::OutboardReserved {
                found: [header[6], header[7]],
            });
        }
        let leaf_size = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
        let mut total_len = [0; 8];
        total_len.copy_from_slice(&header[12..20]);
        let total_len = u64::from_be_bytes(total_len);
        let geometry =
            Geometry::new(total_len, leaf_size).map_err(DecodeError::OutboardGeometry)?;
        let expected = geometry
            .node_count()
            .saturating_mul(H::DIGEST_LEN as u64)
            .saturating_add(OUTBOARD_HEADER_LEN as u64);
        if bytes.len() as u64 != expected {
            return Err(DecodeError::OutboardLength {
                expected,
                actual: bytes.len() as u64,
            });
        }
        let nodes = body
            .chunks_exact(H::DIGEST_LEN)
            .filter_map(H::digest_from_slice)
            .collect();
        Ok(Outboard { geometry, nodes })
    }

    /// Re-hashes every interior node from the stored leaves: an outboard read from disk
    /// or a peer is consistent (its root is the hash of its leaves) if this passes.
    pub fn check(&self) -> Result<(), DecodeError> {
        let mut rebuilt = self.leaves().to_vec();
        Self::build_interior(&mut rebuilt);
        match rebuilt.iter().zip(&self.nodes).position(|(a, b)| a != b) {
            None => Ok(()),
            Some(i) => {
                let mut i = i as u64;
                let mut level = 0;
                while i >= self.geometry.level_len(level) {
                    i -= self.geometry.level_len(level);
                    level += 1;
                }
                Err(DecodeError::OutboardInconsistent { level, index: i })
            }
        }
    }
}

/// Incremental root computation in O(leaf_size + log n) memory, for data that arrives in
/// pieces (files, streams). Same root as [`Outboard::build`].
#[derive(Debug, Clone)]
pub struct RootHasher<H: TreeHash> {
    leaf_size: usize,
    buf: Vec<u8>,
    /// `pending[l]`: a complete left subtree at level `l` awaiting its right sibling.
    pending: Vec<Option<H::Digest>>,
    leaves: u64,
}

impl<H: TreeHash> RootHasher<H> {
    pub fn new(leaf_size: u32) -> Result<Self, Error> {
        if leaf_size == 0 {
            return Err(Error::ZeroLeafSize);
        }
        Ok(RootHasher {
            leaf_size: leaf_size as usize,
            buf: Vec::new(),
            pending: Vec::new(),
            leaves: 0,
        })
    }

    pub fn update(&mut self, mut data: &[u8]) {
        if !self.buf.is_empty() {
            let take = (self.leaf_size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() < self.leaf_size {
                return;
            }
            let leaf = H::leaf(&self.buf);
            self.buf.clear();
            self.push(leaf);
        }
        let (whole, rest) = data.split_at(data.len() - data.len() % self.leaf_size);
        // Whole leaves straight from the input, in batches of 64 (bounded scratch).
        let mut digests = Vec::new();
        for batch in whole.chunks(self.leaf_size.saturating_mul(64)) {
            H::hash_leaves(batch, self.leaf_size, &mut digests);
            for leaf in digests.drain(..) {
                self.push(leaf);
            }
        }
        self.buf.extend_from_slice(rest);
    }

    fn push(&mut self, leaf: H::Digest) {
        self.leaves += 1;
        let mut carry = leaf;
        for slot in self.pending.iter_mut() {
            match slot.take() {
                Some(left) => carry = H::node(&left, &carry),
                None => {
                    *slot = Some(carry);
                    return;
                }
            }
        }
        self.pending.push(Some(carry));
    }

    /// The root of everything passed to [`RootHasher::update`].
    pub fn finalize(mut self) -> H::Digest {
        if !self.buf.is_empty() {
            let leaf = H::leaf(&self.buf);
            self.push(leaf);
        }
        let height = match self.leaves {
            0 => return H::zero(),
            1 => 0,
            n => 64 - (n - 1).leading_zeros(),
        } as usize;
        // Fold the pending left subtrees with the partial right edge, padding with zeros.
        let mut carry: Option<H::Digest> = None;
        let mut zero = H::zero();
        for level in 0..height {
            let pending = self.pending.get(level).copied().flatten();
            carry = match (pending, carry) {
                (Some(left), Some(right)) => Some(H::node(&left, &right)),
                (Some(left), None) => Some(H::node(&left, &zero)),
                (None, Some(left)) => Some(H::node(&left, &zero)),
                (None, None) => None,
            };
            zero = H::node(&zero, &zero);
        }
        carry
            .or_else(|| self.pending.get(height).copied().flatten())
            .unwrap_or_else(H::zero)
    }
}

/// The root of `data` (convenience for [`RootHasher`]).
pub fn root<H: TreeHash>(data: &[u8], leaf_size: u32) -> Result<H::Digest, Error> {
    let mut hasher = RootHasher::<H>::new(leaf_size)?;
    hasher.update(data);
    Ok(hasher.finalize())
}

/// The naive recursive definition, the oracle the tests hold the fast code to. It walks
/// the whole padded tree (O(next power of two) hashes), so it is for tests only.
pub mod reference {
    use super::{ChunkNum, Error, Geometry, Node, TreeHash};
    use std::ops::Range;

    fn leaf_count(data: &[u8], leaf_size: u32) -> Result<(u64, u32), Error> {
        let g = Geometry::new(data.len() as u64, leaf_size)?;
        let n = g.num_leaves();
        let mut height = 0;
        while (1u64 << height) < n {
            height += 1;
        }
        Ok((n, height))
    }

    /// Digest of `node`: a leaf hashes its bytes (zero past the data), a parent hashes
    /// its two children.
    fn digest<H: TreeHash>(data: &[u8], leaf_size: u32, n: u64, node: Node) -> H::Digest {
        if node.level == 0 {
            if node.index >= n {
                return H::zero();
            }
            let start = node.index as usize * leaf_size as usize;
            let end = data.len().min(start + leaf_size as usize);
            return H::leaf(&data[start..end]);
        }
        let left = Node::new(node.level - 1, 2 * node.index);
        let right = Node::new(node.level - 1, 2 * node.index + 1);
        H::node(
            &digest::<H>(data, leaf_size, n, left),
            &digest::<H>(data, leaf_size, n, right),
        )
    }

    pub fn root<H: TreeHash>(data: &[u8], leaf_size: u32) -> Result<H::Digest, Error> {
        let (n, height) = leaf_count(data, leaf_size)?;
        Ok(digest::<H>(data, leaf_size, n, Node::new(height, 0)))
    }

    /// The proof of `range`, by definition: the digests of every node that covers some
    /// data, is disjoint from `range` and whose parent overlaps it — by level, then index.
    pub fn proof<H: TreeHash>(
        data: &[u8],
        leaf_size: u32,
        range: Range<ChunkNum>,
    ) -> Result<Vec<H::Digest>, Error> {
        let (n, height) = leaf_count(data, leaf_size)?;
        let overlaps = |node: Node| {
            let (lo, hi) = (node.index << node.level, (node.index + 1) << node.level);
            lo < range.end.0 && range.start.0 < hi
        };
        let mut nodes = Vec::new();
        let mut stack = vec![Node::new(height, 0)];
        while let Some(node) = stack.pop() {
            if node.level == 0 || !overlaps(node) {
                continue;
            }
            for child in [
                Node::new(node.level - 1, 2 * node.index),
                Node::new(node.level - 1, 2 * node.index + 1),
            ] {
                if !overlaps(child) && (child.index << child.level) < n {
                    nodes.push(child);
                }
                stack.push(child);
            }
        }
        nodes.sort();
        Ok(nodes
            .into_iter()
            .map(|node| digest::<H>(data, leaf_size, n, node))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + 7) as u8).collect()
    }

    fn chunks(a: u64, b: u64) -> Range<ChunkNum> {
        ChunkNum(a)..ChunkNum(b)
    }

    #[test]
    fn digest_len_matches_digest() {
        assert_eq!(Blake3::zero().as_ref().len(), Blake3::DIGEST_LEN);
        assert_eq!(Sha256::zero().as_ref().len(), Sha256::DIGEST_LEN);
        assert_eq!(Blake3::leaf(b"").as_ref().len(), Blake3::DIGEST_LEN);
    }

    #[test]
    fn geometry_of_five_leaves() {
        let g = Geometry::new(5 * 10 - 3, 10).expect("valid geometry");
        assert_eq!((g.num_leaves(), g.height()), (5, 3));
        assert_eq!(
            (0..=3).map(|l| g.level_len(l)).collect::<Vec<_>>(),
            [5, 3, 2, 1]
        );
        assert_eq!(g.node_count(), 11);
        assert_eq!(g.leaf_bytes(ChunkNum(4)), Some(40..47));
        assert_eq!(g.leaf_bytes(ChunkNum(5)), None);
        assert!(g.is_padding(Node::new(0, 5)) && g.is_padding(Node::new(1, 3)));
        assert!(!g.is_padding(Node::new(2, 1)));
        assert_eq!(g.outboard_index(Node::new(2, 1)), Some(9));
        assert_eq!(g.outboard_index(g.root_node()), Some(10));
        assert_eq!(g.outboard_index(Node::new(1, 3)), None);
        assert_eq!(g.chunks_covering(12..31), chunks(1, 4));
        // Leaf 2: its right sibling, the left half of the left subtree, the right subtree.
        let nodes: Vec<_> = g.proof_nodes(chunks(2, 3)).expect("in range").collect();
        assert_eq!(nodes, [Node::new(0, 3), Node::new(1, 0), Node::new(2, 1)]);
        // Leaf 4: its siblings at levels 0 and 1 are padding, so only the left subtree.
        let nodes: Vec<_> = g.proof_nodes(chunks(4, 5)).expect("in range").collect();
        assert_eq!(nodes, [Node::new(2, 0)]);
        // Leaves 1..4: left uncle at level 0, right uncle at level 0, then the right subtree.
        let nodes: Vec<_> = g.proof_nodes(chunks(1, 4)).expect("in range").collect();
        assert_eq!(nodes, [Node::new(0, 0), Node::new(2, 1)]);
        assert_eq!(g.proof_nodes(chunks(0, 5)).expect("in range").count(), 0);
    }

    #[test]
    fn bad_ranges_are_typed_errors() {
        let g = Geometry::new(100, 10).expect("valid geometry");
        assert_eq!(
            g.check_range(&chunks(3, 3)),
            Err(Error::EmptyRange { start: 3, end: 3 })
        );
        assert_eq!(
            g.check_range(&chunks(9, 11)),
            Err(Error::RangeOutOfBounds {
                start: 9,
                end: 11,
                num_leaves: 10
            })
        );
        assert_eq!(Geometry::new(1, 0), Err(Error::ZeroLeafSize));
        assert!(matches!(
            Geometry::new(u64::MAX, 1),
            Err(Error::TooLarge { .. })
        ));
        let ob = Outboard::<Blake3>::build(&data(100), 10).expect("valid");
        let proof = ob.prove(chunks(2, 4)).expect("in range");
        let root = ob.root();
        let d = data(100);
        assert_eq!(
            verify(&root, 10, 100, chunks(2, 4), &d[20..39], &proof),
            Err(Error::LeafDataLength {
                start: 2,
                end: 4,
                expected: 20,
                actual: 19
            })
        );
        let short = Proof::<Blake3>::new(proof.digests()[1..].to_vec());
        assert_eq!(
            verify(&root, 10, 100, chunks(2, 4), &d[20..40], &short),
            Err(Error::ProofLength {
                start: 2,
                end: 4,
                expected: 3,
                actual: 2
            })
        );
        assert_eq!(
            verify(&root, 10, 100, chunks(2, 4), &d[30..50], &proof),
            Err(Error::RootMismatch { start: 2, end: 4 })
        );
        assert_eq!(
            verify(&root, 10, 100, chunks(2, 4), &d[20..40], &proof),
            Ok(())
        );
        assert_eq!(
            verify(&root, 0, 100, chunks(2, 4), &d[20..40], &proof),
            Err(Error::ZeroLeafSize)
        );
    }

    #[test]
    fn empty_data_is_the_zero_digest() {
        let ob = Outboard::<Blake3>::build(b"", 1024).expect("valid");
        assert_eq!(ob.root(), [0; 32]);
        assert_eq!(root::<Sha256>(b"", 16384), Ok([0; 32]));
        assert_eq!(reference::root::<Blake3>(b"", 1024), Ok([0; 32]));
        assert_eq!(ob.to_bytes().len(), OUTBOARD_HEADER_LEN);
        assert_eq!(
            Outboard::<Blake3>::from_bytes(&ob.to_bytes()),
            Ok(ob.clone())
        );
        assert_eq!(
            ob.prove(chunks(0, 1)),
            Err(Error::RangeOutOfBounds {
                start: 0,
                end: 1,
                num_leaves: 0
            })
        );
        assert_eq!(ob.node(Node::new(0, 0)), Some([0; 32]));
    }

    #[test]
    fn one_leaf_root_is_the_leaf_hash() {
        // Not padded to the leaf size: BEP 52 hashes a short last block as it is.
        assert_eq!(root::<Sha256>(b"abc", 16384), Ok(Sha256::leaf(b"abc")));
        let ob = Outboard::<Sha256>::build(b"abc", 16384).expect("valid");
        assert_eq!(ob.prove(chunks(0, 1)).expect("in range").digests().len(), 0);
    }

    #[test]
    fn padding_nodes_are_zero_subtrees() {
        let ob = Outboard::<Blake3>::build(&data(50), 10).expect("valid");
        let z1 = Blake3::node(&[0; 32], &[0; 32]);
        assert_eq!(ob.node(Node::new(1, 3)), Some(z1));
        assert_eq!(ob.node(Node::new(2, 1)).map(|d| d != z1), Some(true));
        assert_eq!(ob.node(Node::new(4, 0)), None);
        assert_eq!(ob.node(Node::new(0, 8)), None);
        assert_eq!(zero_subtree::<Blake3>(1), z1);
    }

    #[test]
    fn outboard_bytes_are_checked() {
        let ob = Outboard::<Sha256>::build(&data(1000), 64).expect("valid");
        let bytes = ob.to_bytes();
        assert_eq!(&bytes[..8], b"TMOB\x01\x02\x00\x00");
        assert_eq!(&bytes[8..20], &[0, 0, 0, 64, 0, 0, 0, 0, 0, 0, 0x03, 0xe8]);
        assert_eq!(bytes.len(), 20 + (16 + 8 + 4 + 2 + 1) * 32);
        assert_eq!(&bytes[bytes.len() - 32..], &ob.root());
        assert_eq!(Outboard::<Sha256>::from_bytes(&bytes), Ok(ob.clone()));
        assert_eq!(ob.check(), Ok(()));

        let e = |b: &[u8]| Outboard::<Sha256>::from_bytes(b).expect_err("must be rejected");
        assert_eq!(
            e(&bytes[..19]),
            DecodeError::OutboardTruncated { actual: 19 }
        );
        assert_eq!(
            e(&bytes[..bytes.len() - 1]),
            DecodeError::OutboardLength {
                expected: bytes.len() as u64,
                actual: bytes.len() as u64 - 1
            }
        );
        let mut b = bytes.clone();
        b.push(0);
        assert!(matches!(e(&b), DecodeError::OutboardLength { .. }));
        let mut b = bytes.clone();
        b[0] = b'X';
        assert!(matches!(e(&b), DecodeError::OutboardMagic { .. }));
        let mut b = bytes.clone();
        b[4] = 2;
        assert_eq!(e(&b), DecodeError::OutboardVersion { found: 2 });
        assert_eq!(
            Outboard::<Blake3>::from_bytes(&bytes),
            Err(DecodeError::OutboardHash {
                found: 2,
                expected: 1,
                name: "blake3"
            })
        );
        let mut b = bytes.clone();
        b[7] = 1;
        assert!(matches!(e(&b), DecodeError::OutboardReserved { .. }));
        let mut b = bytes.clone();
        b[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(e(&b), DecodeError::OutboardGeometry(Error::ZeroLeafSize));
        // A huge total_len must not allocate: the length check comes first.
        let mut b = bytes.clone();
        b[12..20].copy_from_slice(&(1u64 << 61).to_be_bytes());
        assert!(matches!(e(&b), DecodeError::OutboardLength { .. }));
        // A stored digest that does not match its children is found by check().
        let mut b = bytes.clone();
        b[20 + 17 * 32] ^= 1; // level 1, index 1
        let bad = Outboard::<Sha256>::from_bytes(&b).expect("well-formed");
        assert_eq!(
            bad.check(),
            Err(DecodeError::OutboardInconsistent { level: 1, index: 1 })
        );
    }

    #[test]
    fn proof_bytes_are_checked() {
        assert_eq!(
            Proof::<Blake3>::from_bytes(&[0; 33]),
            Err(DecodeError::ProofLength {
                len: 33,
                digest_len: 32
            })
        );
        assert_eq!(
            Proof::<Blake3>::from_bytes(&[0; 32 * 125]),
            Err(DecodeError::ProofTooLong { digests: 125 })
        );
        let proof = Proof::<Blake3>::from_bytes(&[7; 64]).expect("two digests");
        assert_eq!(proof.digests(), &[[7; 32], [7; 32]]);
        assert_eq!(proof.to_bytes(), vec![7; 64]);
    }

    /// (data, leaf_size): up to ~70 leaves, so trees of height 0 to 7, with short tails.
    fn blob() -> impl Strategy<Value = (Vec<u8>, u32)> {
        (1u32..=64).prop_flat_map(|leaf| {
            (
                proptest::collection::vec(any::<u8>(), 0..=(leaf as usize * 70)),
                Just(leaf),
            )
        })
    }

    /// (data, leaf_size, range) with a non-empty range of real leaves.
    fn blob_and_range() -> impl Strategy<Value = (Vec<u8>, u32, Range<ChunkNum>)> {
        blob()
            .prop_filter("needs data", |(d, _)| !d.is_empty())
            .prop_flat_map(|(d, leaf)| {
                let n = (d.len() as u64).div_ceil(u64::from(leaf));
                (
                    Just(d),
                    Just(leaf),
                    (0..n).prop_flat_map(move |a| (Just(a), a + 1..=n)),
                )
            })
            .prop_map(|(d, leaf, (a, b))| (d, leaf, chunks(a, b)))
    }

    fn leaf_data(d: &[u8], leaf: u32, r: &Range<ChunkNum>) -> Vec<u8> {
        let g = Geometry::new(d.len() as u64, leaf).expect("valid geometry");
        let bytes = g.range_bytes(r).expect("in range");
        d[bytes.start as usize..bytes.end as usize].to_vec()
    }

    proptest! {
        #[test]
        fn roots_match_reference((d, leaf) in blob(), split in any::<prop::sample::Index>()) {
            let expected = reference::root::<Blake3>(&d, leaf).expect("valid");
            let ob = Outboard::<Blake3>::build(&d, leaf).expect("valid");
            prop_assert_eq!(ob.root(), expected);
            prop_assert_eq!(ob.geometry().node_count() as usize, ob.nodes.len());
            prop_assert_eq!(ob.check(), Ok(()));
            // The streaming hasher, fed in two pieces split anywhere.
            let at = split.index(d.len() + 1);
            let mut h = RootHasher::<Blake3>::new(leaf).expect("valid");
            h.update(&d[..at]);
            h.update(&d[at..]);
            prop_assert_eq!(h.finalize(), expected);
            prop_assert_eq!(
                root::<Sha256>(&d, leaf).expect("valid"),
                reference::root::<Sha256>(&d, leaf).expect("valid")
            );
        }

        #[test]
        fn proofs_match_reference_and_verify((d, leaf, r) in blob_and_range()) {
            let ob = Outboard::<Blake3>::build(&d, leaf).expect("valid");
            let proof = ob.prove(r.clone()).expect("in range");
            let expected = reference::proof::<Blake3>(&d, leaf, r.clone()).expect("valid");
            prop_assert_eq!(proof.digests(), &expected[..]);
            prop_assert_eq!(ob.geometry().proof_len(r.clone()), Ok(expected.len()));
            let data = leaf_data(&d, leaf, &r);
            prop_assert_eq!(verify(&ob.root(), leaf, d.len() as u64, r.clone(), &data, &proof), Ok(()));
            let decoded = Proof::<Blake3>::from_bytes(&proof.to_bytes()).expect("decodes");
            prop_assert_eq!(&decoded, &proof);
            let sha = Outboard::<Sha256>::build(&d, leaf).expect("valid");
            let sha_proof = sha.prove(r.clone()).expect("in range");
            prop_assert_eq!(sha_proof.digests(), &reference::proof::<Sha256>(&d, leaf, r.clone()).expect("valid")[..]);
            prop_assert_eq!(verify(&sha.root(), leaf, d.len() as u64, r, &data, &sha_proof), Ok(()));
        }

        #[test]
        fn any_bit_flip_is_rejected((d, leaf, r) in blob_and_range(), bit in any::<prop::sample::Index>(), what in 0..3u8) {
            let ob = Outboard::<Blake3>::build(&d, leaf).expect("valid");
            let mut root = ob.root();
            let mut proof = ob.prove(r.clone()).expect("in range").to_bytes();
            let mut data = leaf_data(&d, leaf, &r);
            let target: &mut [u8] = match what {
                0 => &mut data,
                1 if !proof.is_empty() => &mut proof,
                _ => &mut root,
            };
            let i = bit.index(target.len() * 8);
            target[i / 8] ^= 1 << (i % 8);
            let proof = Proof::<Blake3>::from_bytes(&proof).expect("same length");
            prop_assert_eq!(
                verify(&root, leaf, d.len() as u64, r.clone(), &data, &proof),
                Err(Error::RootMismatch { start: r.start.0, end: r.end.0 })
            );
        }

        #[test]
        fn outboard_roundtrips((d, leaf) in blob()) {
            let ob = Outboard::<Blake3>::build(&d, leaf).expect("valid");
            let bytes = ob.to_bytes();
            prop_assert_eq!(bytes.len(), ob.encoded_len());
            prop_assert_eq!(Outboard::<Blake3>::from_bytes(&bytes), Ok(ob));
        }

        #[test]
        fn garbage_never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            leaf in any::<u32>(),
            total in prop_oneof![any::<u64>(), 0..10_000u64],
            a in 0..200u64,
            len in 0..200u64,
        ) {
            let _ = Outboard::<Blake3>::from_bytes(&bytes);
            let mut header = b"TMOB\x01\x01\x00\x00".to_vec();
            header.extend_from_slice(&leaf.to_be_bytes());
            header.extend_from_slice(&total.to_be_bytes());
            header.extend_from_slice(&bytes);
            let _ = Outboard::<Blake3>::from_bytes(&header);
            let digests = bytes.len() / 32 * 32;
            let proof = Proof::<Blake3>::from_bytes(&bytes[..digests]).expect("whole digests");
            let _ = verify(&[0; 32], leaf, total, chunks(a, a + len), &bytes, &proof);
            if let Ok(g) = Geometry::new(total, leaf) {
                let _ = g.proof_nodes(chunks(a, a.saturating_add(len))).map(Iterator::count);
                let _ = g.chunks_covering(a..a + len);
            }
        }
    }
}
