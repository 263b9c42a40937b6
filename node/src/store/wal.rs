//! The write-ahead log of open windows' records, as plain files beside sled.
//!
//! Every flush appends one entry: per stream and window, the records received since the
//! last flush (a *part*, a chunk's value). Each part names the part of the same window
//! written before it, so the records of an open window are a chain through the log, of
//! which memory holds only the newest link ([`PartLoc`]); sealing the window reads the
//! chain back ([`Wal::read_chain`]) and lets the log go. It lives in files, not in sled,
//! because it is written once and deleted minutes later: sled keeps what was written long
//! after it is deleted, while a log segment goes back to the file system whole
//! (`docs/storage.md`).
//!
//! `<data>/wal/<first entry id, 16 hex digits>.wal` segments, each a sequence of frames:
//!
//! ```text
//! length u32 | checksum [u8; 8] (BLAKE3 of the payload) | payload:
//!   entry id u64, then parts, each:
//!     stream key [u8; 5] | window start u64 | previous part: segment u64, offset u32,
//!     length u32 (all ones: none) | rows length u32 | checksum [u8; 8] | rows
//! ```
//!
//! (integers big-endian; a part's checksum is BLAKE3 of everything else in it, so a part
//! read alone is checked). A frame that is cut short or fails its checksum ends the
//! segment (a crash in the middle of a write): what came before it is kept.
//!
//! Nodes before this format wrote `<id>.log` segments of whole entries, without chains
//! (bincode: entry id u64, [(stream key [u8; 5], window start u64, chunk bytes)]); they are
//! read once at start ([`Opened::legacy`]) and removed with the rest by [`Wal::clear`].

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use telemesh_proto::record::codec;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 32 << 20;
/// Largest frame payload read back (a flush's records are bounded far below it).
const FRAME_MAX: usize = 256 << 20;
/// Most parts one chain walk reads: a window's records arrive in at most one part per
/// flush, and a chain older than a few minutes is sealed (`ingest::streams`).
pub const MAX_CHAIN: usize = 100_000;

/// One entry of the log before chains: per (stream key, window start), chunk bytes.
pub type Entry = Vec<([u8; 5], u64, Vec<u8>)>;

/// Where one part lies: the segment (its first entry id), the offset of the part in the
/// file, and its length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartLoc {
    pub segment: u64,
    pub offset: u32,
    pub len: u32,
}

/// One part to append: a stream's records of one window, after the window's part `prev`.
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    pub key: [u8; 5],
    pub window_start: u64,
    pub prev: Option<PartLoc>,
    pub rows: &'a [u8],
}

/// The head of a chain: the (stream key, window start) of its window, and where its newest
/// part is.
pub type Head = ([u8; 5], u64, PartLoc);

/// How a part with no part before it names its previous part.
const NO_PART: PartLoc = PartLoc { segment: u64::MAX, offset: u32::MAX, len: u32::MAX };

/// Bytes of a part before its rows.
pub const PART_HEADER: usize = 5 + 8 + 16 + 4 + 8;
/// Where a part's checksum starts.
const PART_SUM: usize = PART_HEADER - 8;
/// Bytes of an entry before its parts (the entry id).
const ENTRY_HEADER: usize = 8;

fn part_sum(head: &[u8], rows: &[u8]) -> [u8; 8] {
    let mut h = blake3::Hasher::new();
    h.update(head);
    h.update(rows);
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&h.finalize().as_bytes()[..8]);
    sum
}

/// The bytes of `part` before its rows.
fn part_header(part: &Part<'_>) -> [u8; PART_HEADER] {
    let mut h = [0u8; PART_HEADER];
    h[..5].copy_from_slice(&part.key);
    h[5..13].copy_from_slice(&part.window_start.to_be_bytes());
    let prev = part.prev.unwrap_or(NO_PART);
    h[13..21].copy_from_slice(&prev.segment.to_be_bytes());
    h[21..25].copy_from_slice(&prev.offset.to_be_bytes());
    h[25..29].copy_from_slice(&prev.len.to_be_bytes());
    h[29..33].copy_from_slice(&(part.rows.len() as u32).to_be_bytes());
    let sum = part_sum(&h[..PART_SUM], part.rows);
    h[PART_SUM..].copy_from_slice(&sum);
    h
}

/// Appends `part` encoded to `out`.
pub fn encode_part(part: &Part<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(&part_header(part));
    out.extend_from_slice(part.rows);
}

/// The part at the start of `bytes` and its length; `None` if it is cut short or fails its
/// checksum.
pub fn decode_part(bytes: &[u8]) -> Option<(Part<'_>, usize)> {
    let head = bytes.get(..PART_HEADER)?;
    let be32 = |at: usize| u32::from_be_bytes(head[at..at + 4].try_into().expect("4 bytes"));
    let be64 = |at: usize| u64::from_be_bytes(head[at..at + 8].try_into().expect("8 bytes"));
    let rows_len = be32(29) as usize;
    let rows = bytes.get(PART_HEADER..PART_HEADER.checked_add(rows_len)?)?;
    if part_sum(&head[..PART_SUM], rows) != head[PART_SUM..] {
        return None;
    }
    let prev = PartLoc { segment: be64(13), offset: be32(21), len: be32(25) };
    let prev = (prev != NO_PART).then_some(prev);
    let key = head[..5].try_into().expect("5 bytes");
    Some((Part { key, window_start: be64(5), prev, rows }, PART_HEADER + rows_len))
}

/// An entry's payload: its id, then its parts; with each part's offset in the payload.
pub fn encode_entry(id: u64, parts: &[Part<'_>]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let size = ENTRY_HEADER + parts.iter().map(|p| PART_HEADER + p.rows.len()).sum::<usize>();
    let mut payload = Vec::with_capacity(size);
    payload.extend_from_slice(&id.to_be_bytes());
    let mut at = Vec::with_capacity(parts.len());
    for p in parts {
        let start = payload.len();
        encode_part(p, &mut payload);
        at.push((start, payload.len() - start));
    }
    (payload, at)
}

/// An entry's id and parts, each with its offset in `payload`; `None` if any part does
/// not decode.
pub fn decode_entry(payload: &[u8]) -> Option<(u64, Vec<(usize, Part<'_>)>)> {
    let id = u64::from_be_bytes(payload.get(..ENTRY_HEADER)?.try_into().ok()?);
    let mut parts = Vec::new();
    let mut at = ENTRY_HEADER;
    while at < payload.len() {
        let (part, len) = decode_part(&payload[at..])?;
        parts.push((at, part));
        at += len;
    }
    Some((id, parts))
}

/// Bytes before a frame's payload: length u32, checksum [u8; 8].
pub const FRAME_HEADER: usize = 12;

/// A frame around `payload`: length, checksum, payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(FRAME_HEADER + payload.len());
    f.extend_from_slice(&header(payload));
    f.extend_from_slice(payload);
    f
}

/// The header of `payload`'s frame: its length and checksum.
fn header(payload: &[u8]) -> [u8; FRAME_HEADER] {
    frame_header(payload.len() as u32, telemesh_proto::record::content::tag(payload))
}

/// A frame's header: the payload's length and checksum.
fn frame_header(len: u32, sum: [u8; 8]) -> [u8; FRAME_HEADER] {
    let mut h = [0; FRAME_HEADER];
    h[..4].copy_from_slice(&len.to_be_bytes());
    h[4..].copy_from_slice(&sum);
    h
}

/// The payload of the frame starting `bytes`, and the frame's length; `None` if it is
/// cut short, too large, or fails its checksum.
pub fn unframe(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let head = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len).filter(|_| len <= FRAME_MAX)?;
    (telemesh_proto::record::content::tag(payload) == head[4..12]).then_some((payload, FRAME_HEADER + len))
}

/// The entries of a segment file of the log before chains, up to its first damaged frame,
/// and whether there was one.
pub fn read_legacy(bytes: &[u8]) -> (Vec<(u64, Entry)>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some((payload, len)) = unframe(&bytes[at..]) else { return (out, true) };
        match codec::from_slice::<(u64, Entry)>(payload, "log entry") {
            Ok(e) => out.push(e),
            Err(_) => return (out, true),
        }
        at += len;
    }
    (out, false)
}

/// What a chain walk found before it stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The chain's first part, or the part it was asked to stop at.
    Start,
    /// A segment is no longer on disk: the window was sealed and the log released since.
    Gone,
    /// A part that does not read (damaged, or not of this window).
    Damaged,
}

/// The rows of a chain's parts, oldest first, and how the walk ended.
#[derive(Debug)]
pub struct Walk {
    pub rows: Vec<Vec<u8>>,
    pub end: End,
}

/// A log just opened.
#[derive(Debug)]
pub struct Opened {
    pub wal: Wal,
    /// The head of every chain in the log (a part no later part names), by window: usually
    /// one a window.
    pub heads: Vec<Head>,
    /// Entries of segments written before chains, oldest first.
    pub legacy: Vec<(u64, Entry)>,
    /// Segments that ended in a damaged frame (a crash in the middle of a write).
    pub damaged: usize,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    file: File,
    len: u64,
}

/// The log: append, read a chain, sync, release what is no longer needed.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
    /// A handle to read each segment a chain was read from, until the segment is deleted:
    /// a seal of thousands of windows opens each segment once, not once per window.
    readers: Mutex<HashMap<u64, Arc<File>>>,
}

#[derive(Debug)]
struct State {
    current: Option<Segment>,
    next_id: u64,
    /// First entry id of every segment on disk, current included, ascending.
    segments: Vec<u64>,
    /// Segments written before chains (removed by [`Wal::clear`]).
    legacy: Vec<PathBuf>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:016x}.wal"))
}

/// Reads the frames of one segment (`size` bytes from `file`), up to the first damaged one,
/// giving each entry's parts with their locations to `each`; returns the last entry id
/// read and whether a frame was damaged.
fn scan(file: impl Read, size: u64, first: u64, mut each: impl FnMut(u64, &[(PartLoc, Part<'_>)])) -> io::Result<(Option<u64>, bool)> {
    let mut file = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut last_id = None;
    let mut payload = Vec::new();
    while offset < size {
        let mut head = [0u8; FRAME_HEADER];
        if size - offset < FRAME_HEADER as u64 {
            return Ok((last_id, true));
        }
        file.read_exact(&mut head)?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if len > FRAME_MAX || size - offset - (FRAME_HEADER as u64) < len as u64 {
            return Ok((last_id, true));
        }
        payload.resize(len, 0);
        file.read_exact(&mut payload)?;
        if telemesh_proto::record::content::tag(&payload) != head[4..] {
            return Ok((last_id, true));
        }
        let Some((id, parts)) = decode_entry(&payload) else { return Ok((last_id, true)) };
        let base = offset + FRAME_HEADER as u64;
        let mut located = Vec::with_capacity(parts.len());
        for (at, part) in parts {
            let Ok(offset) = u32::try_from(base + at as u64) else { return Ok((last_id, true)) };
            located.push((PartLoc { segment: first, offset, len: (PART_HEADER + part.rows.len()) as u32 }, part));
        }
        each(id, &located);
        last_id = Some(id);
        offset += (FRAME_HEADER + len) as u64;
    }
    Ok((last_id, false))
}

/// The heads of the chains in a log, by (stream key, window): each part is a head until a
/// later part names it.
#[derive(Debug, Default)]
struct Heads(HashMap<([u8; 5], u64), Vec<PartLoc>>);

impl Heads {
    fn add(&mut self, parts: &[(PartLoc, Part<'_>)]) {
        for (loc, part) in parts {
            let window = self.0.entry((part.key, part.window_start)).or_default();
            window.retain(|h| Some(*h) != part.prev);
            window.push(*loc);
        }
    }

    /// In key order.
    fn into_sorted(self) -> Vec<Head> {
        let mut heads: Vec<Head> =
            self.0.into_iter().flat_map(|((k, w), locs)| locs.into_iter().map(move |loc| (k, w, loc))).collect();
        heads.sort_unstable();
        heads
    }
}

/// A segment file's bytes as [`Wal::open`] reads them, were it the log's only segment
/// (its first entry id `first`): the heads of its chains, each entry's id, and whether a
/// frame was damaged.
pub fn read_segment(bytes: &[u8], first: u64) -> (Vec<Head>, Vec<u64>, bool) {
    let mut heads = Heads::default();
    let mut ids = Vec::new();
    let each = |id, parts: &[(PartLoc, Part<'_>)]| {
        ids.push(id);
        heads.add(parts);
    };
    let torn = scan(bytes, bytes.len() as u64, first, each).map_or(true, |(_, torn)| torn);
    (heads.into_sorted(), ids, torn)
}

/// Segment files of `dir`: (first entry id, whether it is of the log before chains).
fn list(dir: &Path) -> io::Result<Vec<(u64, bool)>> {
    let mut found: Vec<(u64, bool)> = fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (stem, legacy) = match name.strip_suffix(".wal") {
                Some(stem) => (stem.to_owned(), false),
                None => (name.strip_suffix(".log")?.to_owned(), true),
            };
            Some((u64::from_str_radix(&stem, 16).ok()?, legacy))
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

impl Wal {
    /// Opens the log in `dir`: the newest part of every window it holds, and the entries of
    /// any segment written before chains.
    pub fn open(dir: &Path) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let mut heads = Heads::default();
        let mut legacy = Vec::new();
        let mut legacy_files = Vec::new();
        let mut segments = Vec::new();
        let mut damaged = 0;
        let mut next_id = 0u64;
        for (first, old) in list(dir)? {
            next_id = next_id.max(first);
            if old {
                let path = dir.join(format!("{first:016x}.log"));
                let (mut entries, torn) = read_legacy(&fs::read(&path)?);
                damaged += usize::from(torn);
                next_id = entries.iter().map(|(id, _)| id.wrapping_add(1)).fold(next_id, u64::max);
                legacy.append(&mut entries);
                legacy_files.push(path);
                continue;
            }
            let file = File::open(segment_path(dir, first))?;
            let size = file.metadata()?.len();
            let (last, torn) = scan(file, size, first, |_, parts| heads.add(parts))?;
            damaged += usize::from(torn);
            next_id = next_id.max(last.map_or(first, |id| id.wrapping_add(1)));
            segments.push(first);
        }
        let heads = heads.into_sorted();
        let state = State { current: None, next_id, segments, legacy: legacy_files };
        let wal = Wal { dir: dir.to_owned(), state: Mutex::new(state), readers: Mutex::new(HashMap::new()) };
        Ok(Opened { wal, heads, legacy, damaged })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A handle to read segment `first`, if it is on disk.
    fn reader(&self, first: u64) -> io::Result<Option<Arc<File>>> {
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = readers.get(&first) {
            return Ok(Some(Arc::clone(f)));
        }
        match File::open(segment_path(&self.dir, first)) {
            Ok(f) => Ok(Some(Arc::clone(readers.entry(first).or_insert(Arc::new(f))))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Forgets the read handles of segments deleted.
    fn forget_readers(&self, kept: &[u64]) {
        self.readers.lock().unwrap_or_else(PoisonError::into_inner).retain(|first, _| kept.contains(first));
    }

    /// Appends an entry of `parts` and returns its id and where each part lies; durable
    /// after [`Wal::sync`].
    pub fn append(&self, parts: &[Part<'_>]) -> io::Result<(u64, Vec<PartLoc>)> {
        let mut s = self.lock();
        let id = s.next_id;
        // The frame's length and checksum first, then the payload part by part: a flush's
        // records are not copied into one buffer (megabytes at 150,000 datagrams/s). A
        // crash in the middle leaves a frame cut short, as a crash within one write does.
        let heads: Vec<[u8; PART_HEADER]> = parts.iter().map(part_header).collect();
        let mut sum = blake3::Hasher::new();
        sum.update(&id.to_be_bytes());
        let mut len = ENTRY_HEADER;
        for (head, part) in heads.iter().zip(parts) {
            sum.update(head);
            sum.update(part.rows);
            len += PART_HEADER + part.rows.len();
        }
        let len32 = u32::try_from(len).ok().filter(|n| *n as usize <= FRAME_MAX).ok_or_else(|| io::Error::other("log entry too large"))?;
        let mut checksum = [0u8; 8];
        checksum.copy_from_slice(&sum.finalize().as_bytes()[..8]);
        let frame_head = frame_header(len32, checksum);
        let rotate = s.current.as_ref().is_none_or(|c| c.len >= SEGMENT_MAX);
        if rotate {
            if let Some(old) = s.current.take() {
                old.file.sync_data()?;
            }
            let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, id))?;
            s.segments.push(id);
            s.current = Some(Segment { first: id, file, len: 0 });
        }
        let Some(c) = s.current.as_mut() else { return Err(io::Error::other("no log segment open")) };
        let too_far = || io::Error::other("log segment past 4 GiB");
        let mut at = c.len + (FRAME_HEADER + ENTRY_HEADER) as u64;
        let mut locs = Vec::with_capacity(parts.len());
        let mut out = io::BufWriter::with_capacity(256 << 10, &c.file);
        out.write_all(&frame_head)?;
        out.write_all(&id.to_be_bytes())?;
        for (head, part) in heads.iter().zip(parts) {
            let n = PART_HEADER + part.rows.len();
            locs.push(PartLoc { segment: c.first, offset: u32::try_from(at).map_err(|_| too_far())?, len: n as u32 });
            out.write_all(head)?;
            out.write_all(part.rows)?;
            at += n as u64;
        }
        out.flush()?;
        drop(out);
        c.len += (FRAME_HEADER + len) as u64;
        s.next_id = id.wrapping_add(1);
        Ok((id, locs))
    }

    /// The rows of the chain of `key`'s window `window_start` from its part `head` back to
    /// its first part, or to `stop` (left out); oldest first. Each part is read alone and
    /// checked; each earlier part must lie before the one naming it.
    pub fn read_chain(&self, key: [u8; 5], window_start: u64, head: PartLoc, stop: Option<PartLoc>) -> io::Result<Walk> {
        // Each segment read, with its size when last looked at.
        let mut files: Vec<(u64, Arc<File>, u64)> = Vec::new();
        let mut rows = Vec::new();
        let mut at = Some(head);
        let end = loop {
            let Some(loc) = at.filter(|l| Some(*l) != stop) else { break End::Start };
            if rows.len() >= MAX_CHAIN {
                break End::Damaged;
            }
            let i = match files.iter().position(|(s, _, _)| *s == loc.segment) {
                Some(i) => i,
                None => match self.reader(loc.segment)? {
                    Some(f) => {
                        files.push((loc.segment, f, 0));
                        files.len() - 1
                    }
                    None => break End::Gone,
                },
            };
            let end = u64::from(loc.offset) + u64::from(loc.len);
            let (_, file, size) = &mut files[i];
            // A part past the segment's end is damaged (and a buffer of a damaged length is
            // never made); the size is looked at again only then, as the current one grows.
            if end > *size {
                *size = file.metadata()?.len();
            }
            if end > *size || (loc.len as usize) < PART_HEADER {
                break End::Damaged;
            }
            let mut buf = vec![0u8; loc.len as usize];
            file.read_exact_at(&mut buf, u64::from(loc.offset))?;
            let Some((part, n)) = decode_part(&buf) else { break End::Damaged };
            if n != buf.len() || part.key != key || part.window_start != window_start {
                break End::Damaged;
            }
            if part.prev.is_some_and(|p| (p.segment, p.offset) >= (loc.segment, loc.offset)) {
                break End::Damaged;
            }
            at = part.prev;
            rows.push(part.rows.to_vec());
        };
        rows.reverse();
        Ok(Walk { rows, end })
    }

    /// Makes every appended entry durable.
    pub fn sync(&self) -> io::Result<()> {
        match self.lock().current.as_ref() {
            Some(c) => c.file.sync_data(),
            None => Ok(()),
        }
    }

    /// Deletes the segments holding only entries with ids below `below` (the current
    /// segment stays open until it is full).
    pub fn release_below(&self, below: u64) -> io::Result<()> {
        let mut s = self.lock();
        let current = s.current.as_ref().map(|c| c.first);
        let mut keep = Vec::new();
        let segments = std::mem::take(&mut s.segments);
        for (i, first) in segments.iter().enumerate() {
            let next = segments.get(i + 1).copied();
            let done = next.is_some_and(|n| n <= below) && Some(*first) != current;
            if done {
                if let Err(e) = remove(&segment_path(&self.dir, *first)) {
                    keep.extend_from_slice(&segments[i..]);
                    s.segments = keep;
                    return Err(e);
                }
            } else {
                keep.push(*first);
            }
        }
        self.forget_readers(&keep);
        s.segments = keep;
        Ok(())
    }

    /// Deletes every segment (after recovery moved their records into the store).
    pub fn clear(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.current = None;
        for path in std::mem::take(&mut s.legacy) {
            remove(&path)?;
        }
        for first in std::mem::take(&mut s.segments) {
            remove(&segment_path(&self.dir, first))?;
        }
        self.forget_readers(&[]);
        Ok(())
    }

    /// Bytes of the segment files on disk, read without the log's lock (a write or sync in
    /// progress does not hold it up).
    pub fn size(&self) -> u64 {
        super::segment::dir_size(&self.dir).unwrap_or(0)
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        let s = self.lock();
        s.segments.len() + s.legacy.len()
    }
}

/// Removes a file that may already be gone.
fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: [u8; 5] = [1, 0, 0, 0, 7];

    fn part(window_start: u64, prev: Option<PartLoc>, rows: &[u8]) -> Part<'_> {
        Part { key: K, window_start, prev, rows }
    }

    fn walk(wal: &Wal, w: u64, head: PartLoc, stop: Option<PartLoc>) -> (Vec<Vec<u8>>, End) {
        let Walk { rows, end } = wal.read_chain(K, w, head, stop).expect("read");
        (rows, end)
    }

    #[test]
    fn a_window_reads_back_along_its_chain_and_reopens_at_its_newest_part() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { wal, heads, legacy, damaged } = Wal::open(dir.path()).expect("open");
        assert!(heads.is_empty() && legacy.is_empty() && damaged == 0);
        let (a, la) = wal.append(&[part(0, None, b"one"), part(60, None, b"other")]).expect("append");
        let (b, lb) = wal.append(&[part(0, Some(la[0]), b"two")]).expect("append");
        let (c, lc) = wal.append(&[part(0, Some(lb[0]), b"three")]).expect("append");
        assert_eq!((a, b, c), (0, 1, 2));
        let rows = |v: &[&[u8]]| v.iter().map(|r| r.to_vec()).collect::<Vec<_>>();
        assert_eq!(walk(&wal, 0, lc[0], None), (rows(&[b"one", b"two", b"three"]), End::Start));
        assert_eq!(walk(&wal, 0, lc[0], Some(la[0])), (rows(&[b"two", b"three"]), End::Start), "stopped before a sealed part");
        assert_eq!(walk(&wal, 60, la[1], None), (rows(&[b"other"]), End::Start));
        assert_eq!(walk(&wal, 60, lc[0], None).1, End::Damaged, "a part of another window is not read as this one's");
        wal.sync().expect("sync");
        drop(wal);
        let Opened { wal, heads, .. } = Wal::open(dir.path()).expect("reopen");
        assert_eq!(heads, vec![(K, 0, lc[0]), (K, 60, la[1])]);
        assert_eq!(wal.append(&[part(0, None, b"x")]).expect("append").0, 3, "ids go on after a reopen");
        wal.clear().expect("clear");
        assert_eq!(wal.segments(), 0);
        assert!(Wal::open(dir.path()).expect("reopen").heads.is_empty());
    }

    #[test]
    fn a_torn_tail_keeps_what_came_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        let (_, first) = wal.append(&[part(0, None, b"one")]).expect("append");
        wal.append(&[part(0, Some(first[0]), b"two")]).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let path = segment_path(dir.path(), 0);
        let len = fs::metadata(&path).expect("meta").len();
        OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 3).expect("truncate");
        let opened = Wal::open(dir.path()).expect("reopen");
        assert_eq!((opened.heads, opened.damaged), (vec![(K, 0, first[0])], 1));
        assert_eq!(opened.wal.append(&[part(0, None, b"x")]).expect("append").0, 1, "the torn entry's id is used again");
    }

    #[test]
    fn a_damaged_or_released_part_ends_the_walk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        let big = vec![7u8; SEGMENT_MAX as usize];
        let (_, l0) = wal.append(&[part(0, None, &big)]).expect("append");
        let (_, l1) = wal.append(&[part(0, Some(l0[0]), b"b")]).expect("append");
        let (_, l2) = wal.append(&[part(0, Some(l1[0]), b"c")]).expect("append");
        assert_eq!((l0[0].segment, l1[0].segment, l2[0].segment), (0, 1, 1));
        // One byte of the middle part's rows changed on disk.
        let file = OpenOptions::new().write(true).open(segment_path(dir.path(), 1)).expect("open");
        file.write_all_at(b"X", u64::from(l1[0].offset) + PART_HEADER as u64).expect("write");
        assert_eq!(walk(&wal, 0, l2[0], None), (vec![b"c".to_vec()], End::Damaged));
        assert_eq!(walk(&wal, 0, l1[0], Some(l0[0])).1, End::Damaged);
        wal.release_below(1).expect("release");
        assert_eq!(wal.segments(), 1);
        assert_eq!(walk(&wal, 0, l0[0], None), (vec![], End::Gone));
        // A part naming a later one as its previous (a loop) is not followed.
        let (_, l3) = wal.append(&[part(0, Some(PartLoc { offset: l2[0].offset + 1000, ..l2[0] }), b"d")]).expect("append");
        assert_eq!(walk(&wal, 0, l3[0], None).1, End::Damaged);
    }

    #[test]
    fn segments_of_the_log_before_chains_are_read_once_and_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old: Vec<(u64, Entry)> = vec![(4, vec![(K, 0, vec![1, 2, 3])]), (5, vec![(K, 60, vec![4])])];
        let bytes: Vec<u8> = old.iter().flat_map(|e| frame(&codec::to_vec(e))).collect();
        fs::write(dir.path().join(format!("{:016x}.log", 4)), bytes).expect("write");
        let Opened { wal, legacy, heads, damaged } = Wal::open(dir.path()).expect("open");
        assert_eq!((legacy, heads.len(), damaged), (old, 0, 0));
        assert_eq!(wal.append(&[part(0, None, b"x")]).expect("append").0, 6, "ids go on after the old ones");
        wal.clear().expect("clear");
        assert_eq!(fs::read_dir(dir.path()).expect("dir").count(), 0);
    }

    #[test]
    fn full_segments_are_released_once_no_entry_is_needed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        let big = vec![7u8; (SEGMENT_MAX / 2) as usize];
        for _ in 0..5 {
            wal.append(&[part(0, None, &big)]).expect("append");
        }
        assert_eq!(wal.segments(), 3); // 0,1 | 2,3 | 4
        wal.release_below(3).expect("release");
        assert_eq!(wal.segments(), 2, "the first segment (entries 0 and 1) is gone");
        wal.release_below(u64::MAX).expect("release");
        assert_eq!(wal.segments(), 1, "the current segment stays");
    }

    #[test]
    fn parts_and_entries_decode_as_they_were_encoded() {
        let prev = Some(PartLoc { segment: 9, offset: 100, len: 50 });
        let parts = [part(0, None, b""), part(60, prev, b"rows")];
        let (payload, at) = encode_entry(42, &parts);
        let (id, back) = decode_entry(&payload).expect("decodes");
        assert_eq!(id, 42);
        assert_eq!(back.iter().map(|(o, p)| (*o, p.window_start, p.prev, p.rows)).collect::<Vec<_>>(), vec![
            (at[0].0, 0, None, &b""[..]),
            (at[1].0, 60, prev, &b"rows"[..])
        ]);
        for end in ENTRY_HEADER + 1..payload.len() {
            // Cut inside a part (an entry is framed: at a part's end it is one part less).
            assert_eq!(decode_entry(&payload[..end]).is_none(), end != at[1].0, "cut at {end}");
        }
    }
}
