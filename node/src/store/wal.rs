//! The write-ahead log of slow streams' records, as plain files beside sled.
//!
//! Records of slow streams wait in memory until their window is sealed; the log makes
//! them durable meanwhile. It lives in files, not in sled, because it is written once
//! and deleted a minute later: sled keeps what was written long after it is deleted,
//! while a log segment goes back to the file system whole (`docs/storage.md`).
//!
//! `<data>/wal/<first entry id, 16 hex digits>.log` segments, each a sequence of frames:
//!
//! ```text
//! length u32 | checksum [u8; 8] (BLAKE3 of the payload) | payload (bincode):
//!   entry id u64, [(stream key [u8; 5], window start u64, chunk bytes)]
//! ```
//!
//! A frame that is cut short or fails its checksum ends the segment (a crash in the
//! middle of a write): what came before it is kept.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use telemesh_proto::record::codec;

/// A segment is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 8 << 20;
/// Largest frame payload read back (a flush of slow streams is far smaller).
const FRAME_MAX: usize = 256 << 20;

/// One log entry: per (stream key, window start), chunk bytes.
pub type Entry = Vec<([u8; 5], u64, Vec<u8>)>;

/// A log just opened.
#[derive(Debug)]
pub struct Opened {
    pub wal: Wal,
    /// Every entry on disk, oldest first.
    pub entries: Vec<(u64, Entry)>,
    /// Segments that ended in a damaged frame (a crash in the middle of a write).
    pub damaged: usize,
}

#[derive(Debug)]
struct Segment {
    first: u64,
    file: File,
    len: u64,
}

/// The log: append, sync, release what is no longer needed.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    current: Option<Segment>,
    next_id: u64,
    /// First entry id of every segment on disk, current included, ascending.
    segments: Vec<u64>,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:016x}.log"))
}

/// The first 8 bytes of BLAKE3 over the payload (the same function as a content tag).
fn checksum(payload: &[u8]) -> [u8; 8] {
    telemesh_proto::record::content::tag(payload)
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
    let mut h = [0; FRAME_HEADER];
    h[..4].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    h[4..].copy_from_slice(&checksum(payload));
    h
}

/// The payload of the frame starting `bytes`, and the frame's length; `None` if it is
/// cut short, too large, or fails its checksum.
pub fn unframe(bytes: &[u8]) -> Option<(&[u8], usize)> {
    let head = bytes.get(..FRAME_HEADER)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let payload = bytes.get(FRAME_HEADER..FRAME_HEADER + len).filter(|_| len <= FRAME_MAX)?;
    (checksum(payload) == head[4..12]).then_some((payload, FRAME_HEADER + len))
}

/// Reads the frames of one segment up to the first damaged one.
fn read_segment(path: &Path) -> io::Result<(Vec<(u64, Entry)>, bool)> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < bytes.len() {
        let Some((payload, len)) = unframe(&bytes[at..]) else { return Ok((out, true)) };
        match codec::from_slice::<(u64, Entry)>(payload, "log entry") {
            Ok(e) => out.push(e),
            Err(_) => return Ok((out, true)),
        }
        at += len;
    }
    Ok((out, false))
}

impl Wal {
    /// Opens the log in `dir`, with every entry it holds.
    pub fn open(dir: &Path) -> io::Result<Opened> {
        fs::create_dir_all(dir)?;
        let mut firsts: Vec<u64> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                u64::from_str_radix(name.strip_suffix(".log")?, 16).ok()
            })
            .collect();
        firsts.sort_unstable();
        let mut entries = Vec::new();
        let mut damaged = 0;
        for first in &firsts {
            let (mut e, torn) = read_segment(&segment_path(dir, *first))?;
            damaged += usize::from(torn);
            entries.append(&mut e);
        }
        // Ids wrap (a damaged log may hold any id; recovery empties the log anyway).
        let next_id = entries.iter().map(|(id, _)| id.wrapping_add(1)).chain(firsts.iter().copied()).max().unwrap_or(0);
        let wal = Wal { dir: dir.to_owned(), state: Mutex::new(State { current: None, next_id, segments: firsts }) };
        Ok(Opened { wal, entries, damaged })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends an entry (an [`Entry`], or the same with borrowed chunk bytes, which
    /// encodes alike) and returns its id; durable after [`Wal::sync`].
    pub fn append<E: serde::Serialize + ?Sized>(&self, entry: &E) -> io::Result<u64> {
        let mut s = self.lock();
        let id = s.next_id;
        let payload = codec::to_vec(&(id, entry));
        let rotate = s.current.as_ref().is_none_or(|c| c.len >= SEGMENT_MAX);
        if rotate {
            if let Some(old) = s.current.take() {
                old.file.sync_data()?;
            }
            let file = OpenOptions::new().create(true).append(true).open(segment_path(&self.dir, id))?;
            s.segments.push(id);
            s.current = Some(Segment { first: id, file, len: 0 });
        }
        // The header, then the payload: not a copy of a flush's records in one frame
        // (megabytes at 150,000 datagrams/s). A crash between the two leaves a frame cut
        // short, as a crash within one write does.
        if let Some(c) = s.current.as_mut() {
            c.file.write_all(&header(&payload))?;
            c.file.write_all(&payload)?;
            c.len += (FRAME_HEADER + payload.len()) as u64;
        }
        s.next_id = id.wrapping_add(1);
        Ok(id)
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
                match fs::remove_file(segment_path(&self.dir, *first)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => {
                        keep.extend_from_slice(&segments[i..]);
                        s.segments = keep;
                        return Err(e);
                    }
                }
            } else {
                keep.push(*first);
            }
        }
        s.segments = keep;
        Ok(())
    }

    /// Deletes every segment (after recovery moved their records into the store).
    pub fn clear(&self) -> io::Result<()> {
        let mut s = self.lock();
        s.current = None;
        for first in std::mem::take(&mut s.segments) {
            match fs::remove_file(segment_path(&self.dir, first)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Bytes of the segment files on disk, read without the log's lock (a write or sync in
    /// progress does not hold it up).
    pub fn size(&self) -> u64 {
        super::segment::dir_size(&self.dir).unwrap_or(0)
    }

    /// Segment files on disk.
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8) -> Entry {
        vec![([1, 0, 0, 0, n], u64::from(n), vec![n; 10])]
    }

    #[test]
    fn append_reopen_release() {
        let dir = tempfile::tempdir().expect("tempdir");
        let Opened { wal, entries: old, damaged } = Wal::open(dir.path()).expect("open");
        assert!(old.is_empty() && damaged == 0);
        let a = wal.append(&entry(1)).expect("append");
        let b = wal.append(&entry(2)).expect("append");
        wal.sync().expect("sync");
        assert_eq!((a, b), (0, 1));
        drop(wal);
        let Opened { wal, entries: back, .. } = Wal::open(dir.path()).expect("reopen");
        assert_eq!(back, vec![(0, entry(1)), (1, entry(2))]);
        assert_eq!(wal.append(&entry(3)).expect("append"), 2, "ids go on after a reopen");
        wal.clear().expect("clear");
        assert_eq!(wal.segments(), 0);
        assert!(Wal::open(dir.path()).expect("reopen").entries.is_empty());
    }

    #[test]
    fn entries_of_many_mebibytes_read_back() {
        // One flush of 10,000 slow streams is over 1 MiB; it once failed to decode at
        // recovery, and everything after it in the segment was lost.
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        let big: Entry = (0..10_000u32).map(|i| ([1, 0, 0, (i >> 8) as u8, i as u8], u64::from(i), vec![7; 300])).collect();
        wal.append(&big).expect("append");
        wal.append(&entry(2)).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let Opened { entries, damaged, .. } = Wal::open(dir.path()).expect("reopen");
        assert_eq!(damaged, 0);
        assert_eq!(entries, vec![(0, big), (1, entry(2))]);
    }

    #[test]
    fn a_torn_tail_keeps_what_came_before() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        wal.append(&entry(1)).expect("append");
        wal.append(&entry(2)).expect("append");
        wal.sync().expect("sync");
        drop(wal);
        let path = segment_path(dir.path(), 0);
        let len = fs::metadata(&path).expect("meta").len();
        OpenOptions::new().write(true).open(&path).expect("open").set_len(len - 3).expect("truncate");
        let opened = Wal::open(dir.path()).expect("reopen");
        assert_eq!((opened.entries, opened.damaged), (vec![(0, entry(1))], 1));
    }

    #[test]
    fn full_segments_are_released_once_no_entry_is_needed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wal = Wal::open(dir.path()).expect("open").wal;
        let big = vec![([1, 0, 0, 0, 1], 0, vec![7u8; (SEGMENT_MAX / 2) as usize])];
        for _ in 0..5 {
            wal.append(&big).expect("append");
        }
        assert_eq!(wal.segments(), 3); // 0,1 | 2,3 | 4
        wal.release_below(3).expect("release");
        assert_eq!(wal.segments(), 2, "the first segment (entries 0 and 1) is gone");
        wal.release_below(u64::MAX).expect("release");
        assert_eq!(wal.segments(), 1, "the current segment stays");
    }
}
