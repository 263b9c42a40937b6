//! Sealed windows' values, in append-only segment files beside sled.
//!
//! A sealed window is written once (again only if a late record reseals it), so it is
//! appended to `<data>/sealed/<segment number, 16 hex digits>.seg` as a checksummed frame
//! (`wal::frame`), and sled keeps only where it is. This keeps sled's log, which holds on to
//! rewritten and deleted values for long, down to small index entries (`docs/storage.md`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::wal::{frame, unframe, FRAME_HEADER};

/// A segment is closed and a new one started past this size.
pub const SEGMENT_MAX: u64 = 64 << 20;

/// Where a frame is: segment, byte offset, frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Loc {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

#[derive(Debug)]
struct Current {
    segment: u64,
    file: File,
    len: u64,
}

/// The segment files.
#[derive(Debug)]
pub struct Segments {
    dir: PathBuf,
    current: Mutex<Option<Current>>,
    /// The highest segment number removed: never used again while the process runs, so
    /// a reader holding a location from before a removal cannot find another value there.
    removed: Mutex<Option<u64>>,
}

fn path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:016x}.seg"))
}

/// The segment number a file name gives ([`path`]'s), if it is a segment file's.
fn number(name: &std::ffi::OsStr) -> Option<u64> {
    u64::from_str_radix(name.to_str()?.strip_suffix(".seg")?, 16).ok()
}

impl Segments {
    /// Opens the segments in `dir`; appends go to a new segment after the last one.
    pub fn open(dir: &Path) -> io::Result<Segments> {
        fs::create_dir_all(dir)?;
        Ok(Segments { dir: dir.to_owned(), current: Mutex::new(None), removed: Mutex::new(None) })
    }

    fn last_segment(&self) -> io::Result<Option<u64>> {
        Ok(fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok())
            .filter_map(|e| number(&e.file_name()))
            .max())
    }

    /// Appends `payload` as a frame, durably; see [`Segments::append_all`].
    pub fn append(&self, payload: &[u8]) -> io::Result<Loc> {
        Ok(self.append_all(&[payload])?.remove(0))
    }

    /// Appends each payload as a frame and makes them all durable (one sync per segment)
    /// before returning where they are: whatever refers to them may be written as soon
    /// as this returns.
    pub fn append_all(&self, payloads: &[&[u8]]) -> io::Result<Vec<Loc>> {
        let mut cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let mut locs = Vec::with_capacity(payloads.len());
        for payload in payloads {
            if cur.as_ref().is_none_or(|c| c.len >= SEGMENT_MAX) {
                let segment = match cur.take() {
                    Some(c) => {
                        c.file.sync_data()?;
                        c.segment + 1
                    }
                    None => {
                        let removed = *self.removed.lock().unwrap_or_else(PoisonError::into_inner);
                        self.last_segment()?.max(removed).map_or(0, |s| s + 1)
                    }
                };
                let file = OpenOptions::new().create(true).append(true).open(path(&self.dir, segment))?;
                *cur = Some(Current { segment, file, len: 0 });
            }
            let Some(c) = cur.as_mut() else { return Err(io::Error::other("no segment")) };
            let f = frame(payload);
            c.file.write_all(&f)?;
            locs.push(Loc { segment: c.segment, offset: c.len, len: f.len() as u32 });
            c.len += f.len() as u64;
        }
        if let Some(c) = cur.as_ref() {
            c.file.sync_data()?;
        }
        Ok(locs)
    }

    /// The payload at `loc`, checked against its checksum; `None` if missing or damaged.
    pub fn read(&self, loc: Loc) -> io::Result<Option<Vec<u8>>> {
        if (loc.len as usize) < FRAME_HEADER {
            return Ok(None);
        }
        let file = match File::open(path(&self.dir, loc.segment)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        // A location past the end of the file (a damaged index entry) is a miss: neither a
        // buffer of its length (up to 4 GiB) nor a read at an offset the OS refuses.
        let size = file.metadata()?.len();
        if loc.offset.checked_add(u64::from(loc.len)).is_none_or(|end| end > size) {
            return Ok(None);
        }
        let mut buf = vec![0u8; loc.len as usize];
        match file.read_exact_at(&mut buf, loc.offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(unframe(&buf).filter(|(_, n)| *n == buf.len()).map(|(p, _)| p.to_vec()))
    }

    /// Bytes of all segment files.
    pub fn size(&self) -> io::Result<u64> {
        dir_size(&self.dir)
    }

    /// Every segment file but the one appends go to, with its size: those that may be
    /// rewritten and removed ([`Segments::remove`]).
    pub fn closed(&self) -> io::Result<Vec<(u64, u64)>> {
        let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the first append of this run every file is closed (appends start a new one).
        let current = cur.as_ref().map(|c| c.segment);
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let Some(segment) = number(&e.file_name()) else { continue };
            if Some(segment) != current {
                out.push((segment, e.metadata()?.len()));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Deletes a closed segment file (nothing may point into it any more).
    pub fn remove(&self, segment: u64) -> io::Result<()> {
        let cur = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if cur.as_ref().is_some_and(|c| c.segment == segment) {
            return Err(io::Error::other("the segment appends go to is not removed"));
        }
        let mut removed = self.removed.lock().unwrap_or_else(PoisonError::into_inner);
        *removed = (*removed).max(Some(segment));
        match fs::remove_file(path(&self.dir, segment)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Bytes of the files in `dir`; a file removed while it is read counts nothing.
pub fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut total = 0;
    for e in fs::read_dir(dir)? {
        match e.and_then(|e| e.metadata()) {
            Ok(m) => total += m.len(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_read_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Segments::open(dir.path()).expect("open");
        let a = s.append(b"first").expect("append");
        let b = s.append(b"second").expect("append");
        assert_eq!(s.read(a).expect("read"), Some(b"first".to_vec()));
        assert_eq!(s.read(b).expect("read"), Some(b"second".to_vec()));
        drop(s);
        let s = Segments::open(dir.path()).expect("reopen");
        let c = s.append(b"third").expect("append");
        assert_eq!(c.segment, 1, "a reopened store appends to a new segment");
        assert_eq!(s.read(a).expect("read"), Some(b"first".to_vec()));
        // A wrong location is a miss, not garbage and not a panic.
        assert_eq!(s.read(Loc { offset: a.offset + 1, ..a }).expect("read"), None);
        assert_eq!(s.read(Loc { segment: 9, ..a }).expect("read"), None);
        assert_eq!(s.read(Loc { len: 3, ..a }).expect("read"), None);
    }
}
