//! Integer columns, packed: frame of reference plus bit-packing.
//!
//! A column of `n` u64 values is stored as its minimum (LEB128 varint), the bit width
//! `w` of `max − min` (one byte), then the `n` values `v − min` in `w` bits each,
//! little-endian bit order, padded to a whole byte. A constant column costs two or three
//! bytes whatever its length. Signed deltas go through [`zigzag`] first. The count `n` is
//! not stored: the reader knows it. Decoding checks every length, so hostile bytes give
//! an error, never a panic or an unbounded allocation.

/// Why packed bytes did not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("packed data ends early")]
    Truncated,
    #[error("varint longer than 10 bytes")]
    Varint,
    #[error("bit width {0} is more than 64")]
    Width(u8),
    #[error("value overflows 64 bits")]
    Overflow,
}

/// Maps a signed value to an unsigned one, small magnitudes to small numbers.
pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A cursor over packed bytes.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::Truncated);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1)?[0])
    }

    pub fn varint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f).checked_shl(7 * i).ok_or(Error::Overflow)?;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Varint)
    }

    /// A column of `n` values written by [`pack_patched`].
    pub fn unpack_patched(&mut self, n: usize) -> Result<Vec<u64>, Error> {
        let count = self.varint()?;
        if count > n as u64 {
            return Err(Error::Truncated);
        }
        let mut exceptions = Vec::with_capacity(count as usize);
        let mut at = 0u64;
        for i in 0..count {
            at = if i == 0 { self.varint()? } else { at.checked_add(self.varint()?).ok_or(Error::Overflow)? };
            if at >= n as u64 {
                return Err(Error::Truncated);
            }
            exceptions.push((at as usize, self.varint()?));
        }
        let mut values = self.unpack(n)?;
        for (i, v) in exceptions {
            values[i] = v;
        }
        Ok(values)
    }

    /// A column of `n` values written by [`pack`].
    pub fn unpack(&mut self, n: usize) -> Result<Vec<u64>, Error> {
        let min = self.varint()?;
        let w = self.u8()?;
        if w > 64 {
            return Err(Error::Width(w));
        }
        let nbytes = (n as u128 * u128::from(w)).div_ceil(8);
        let data = self.take(usize::try_from(nbytes).map_err(|_| Error::Truncated)?)?;
        let mut out = Vec::with_capacity(n);
        let mut bit = 0usize;
        for _ in 0..n {
            let mut v = 0u64;
            for j in 0..usize::from(w) {
                let b = bit + j;
                v |= u64::from((data[b / 8] >> (b % 8)) & 1) << j;
            }
            bit += usize::from(w);
            out.push(min.checked_add(v).ok_or(Error::Overflow)?);
        }
        Ok(out)
    }
}

/// Appends a packed column.
pub fn pack(out: &mut Vec<u8>, values: &[u64]) {
    let min = values.iter().copied().min().unwrap_or(0);
    let max = values.iter().copied().max().unwrap_or(0);
    let w = (64 - (max - min).leading_zeros()) as u8;
    put_varint(out, min);
    out.push(w);
    let start = out.len();
    out.resize(start + (values.len() * usize::from(w)).div_ceil(8), 0);
    let mut bit = 0usize;
    for v in values {
        let d = v - min;
        for j in 0..usize::from(w) {
            if (d >> j) & 1 == 1 {
                let b = bit + j;
                out[start + b / 8] |= 1 << (b % 8);
            }
        }
        bit += usize::from(w);
    }
}

fn varint_len(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).max(1).div_ceil(7)
}

/// Appends a packed column whose few outliers are listed apart ("patched" frame of
/// reference): a count of exceptions (varint), each as (index delta, value) varints, then
/// [`pack`] of the values with the exceptions replaced by the smallest value. The number
/// of exceptions is the one that makes the whole smallest, so a column of small jitter
/// with a rare large step costs a few bits per value, not the step's width.
pub fn pack_patched(out: &mut Vec<u8>, values: &[u64]) {
    let n = values.len();
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let min = sorted.first().copied().unwrap_or(0);
    let width = |range: u64| u64::from(64 - range.leading_zeros());
    // Cost in bits of listing the k largest values apart.
    let mut best = (u64::MAX, 0usize);
    let mut listed = 0u64;
    for k in 0..=n / 4 {
        if k > 0 {
            listed += 8 * (2 + varint_len(sorted[n - k]) as u64);
        }
        let range = sorted.get(n.wrapping_sub(k + 1)).map_or(0, |top| top - min);
        let cost = n as u64 * width(range) + listed;
        if cost < best.0 {
            best = (cost, k);
        }
    }
    let threshold = if best.1 == 0 { None } else { Some(sorted[n - best.1]) };
    let mut exceptions = Vec::new();
    let mut packed = Vec::with_capacity(n);
    for (i, v) in values.iter().enumerate() {
        // Ties at the threshold may make a few more exceptions than planned: still exact.
        if threshold.is_some_and(|t| *v >= t) {
            exceptions.push((i, *v));
            packed.push(min);
        } else {
            packed.push(*v);
        }
    }
    put_varint(out, exceptions.len() as u64);
    let mut prev = 0;
    for (j, (i, v)) in exceptions.iter().enumerate() {
        put_varint(out, if j == 0 { *i as u64 } else { (*i - prev) as u64 });
        put_varint(out, *v);
        prev = *i;
    }
    pack(out, &packed);
}


#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constant_columns_are_tiny() {
        let mut out = Vec::new();
        pack(&mut out, &[1000; 500]);
        assert_eq!(out, [0xe8, 0x07, 0]);
        assert_eq!(Reader::new(&out).unpack(500), Ok(vec![1000; 500]));
    }

    #[test]
    fn patched_columns_list_outliers_apart() {
        let mut v = vec![3u64; 400];
        v[17] = 1 << 40;
        let (mut plain, mut patched) = (Vec::new(), Vec::new());
        pack(&mut plain, &v);
        pack_patched(&mut patched, &v);
        assert!(patched.len() < 12, "{} bytes", patched.len());
        assert!(plain.len() > 400 * 40 / 8);
        assert_eq!(Reader::new(&patched).unpack_patched(400), Ok(v));
    }

    #[test]
    fn golden() {
        let mut out = Vec::new();
        pack(&mut out, &[5, 6, 7, 8]); // min 5, range 3: 2 bits, 00 01 10 11
        assert_eq!(out, [5, 2, 0b1110_0100]);
        assert_eq!(zigzag(-1), 1);
        assert_eq!(zigzag(1), 2);
        assert_eq!(unzigzag(zigzag(i64::MIN)), i64::MIN);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert_eq!(Reader::new(&[]).unpack(1), Err(Error::Truncated));
        assert_eq!(Reader::new(&[0, 65]).unpack(1), Err(Error::Width(65)));
        assert_eq!(Reader::new(&[0, 64]).unpack(1 << 40), Err(Error::Truncated));
        assert_eq!(Reader::new(&[0xff; 11]).varint(), Err(Error::Varint));
    }

    proptest! {
        #[test]
        fn round_trip(values in proptest::collection::vec(any::<u64>(), 0..200), small in proptest::collection::vec(0u64..1000, 0..200)) {
            for v in [values, small] {
                let mut out = Vec::new();
                pack(&mut out, &v);
                let mut r = Reader::new(&out);
                prop_assert_eq!(r.unpack(v.len()).expect("unpacks"), v);
                prop_assert!(r.is_empty());
            }
        }

        #[test]
        fn patched_round_trip(jitter in proptest::collection::vec(0u64..8, 0..300), steps in proptest::collection::vec((0usize..300, any::<u64>()), 0..10)) {
            let mut v = jitter;
            for (i, x) in steps {
                if let Some(slot) = v.get_mut(i) {
                    *slot = x;
                }
            }
            let mut out = Vec::new();
            pack_patched(&mut out, &v);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.unpack_patched(v.len()).expect("unpacks"), v);
            prop_assert!(r.is_empty());
        }

        #[test]
        fn unpack_patched_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..100) {
            let _ = Reader::new(&bytes).unpack_patched(n);
        }

        #[test]
        fn zigzag_round_trip(v: i64) {
            prop_assert_eq!(unzigzag(zigzag(v)), v);
        }

        #[test]
        fn unpack_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..100) {
            let _ = Reader::new(&bytes).unpack(n);
        }
    }
}
