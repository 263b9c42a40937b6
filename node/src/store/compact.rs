//! Reclaiming dead frames in segment files. A window sealed again (a late record, a
//! repair, a provenance merge, a stream of device-id churn that went quiet or left memory
//! once more) leaves its earlier frame dead in its segment file. A closed segment file
//! that is mostly dead has its live frames copied to the segment appends go to, the
//! index pointed at the copies (under the sealing lock, a slice at a time, so a seal
//! waits for at most one slice), the index synced, and only then the file removed. A
//! crash anywhere in between leaves every window readable: at worst a copy is dead space.
//! A reader that read a location just before it moved finds the file gone and reads the
//! index again ([`SledStore::sealed_payload`]).

use std::collections::HashMap;

use telemesh_proto::record::codec;

use super::segment::Loc;
use super::{SledStore, StoreError, PART_SEALED};

/// A closed segment file is rewritten once less than this percentage of it is live.
const LIVE_PERCENT_BELOW: u64 = 50;
/// Values moved per hold of the sealing lock.
const MOVE_SLICE: usize = 512;

/// What one [`SledStore::compact`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Compacted {
    /// Segment files removed.
    pub segments: usize,
    /// Live values copied out of them.
    pub moved: usize,
    /// Bytes of dead frames freed.
    pub reclaimed: u64,
}

/// A sealed window's index entry: its key and where its value is.
fn sealed_entry(key: &[u8], value: &[u8]) -> Option<Loc> {
    if key.get(13) != Some(&PART_SEALED) {
        return None;
    }
    codec::from_slice::<Loc>(value, "sealed window location").ok()
}

impl SledStore {
    /// Rewrites every closed segment file less than half live, and removes it. A file
    /// with a frame that cannot be read (damaged) keeps what it has.
    pub fn compact(&self) -> Result<Compacted, StoreError> {
        let closed = self.segments.closed()?;
        if closed.is_empty() {
            return Ok(Compacted::default());
        }
        let mut live: HashMap<u64, u64> = HashMap::new();
        for item in self.windows.iter() {
            let (k, v) = item?;
            if let Some(loc) = sealed_entry(&k, &v) {
                *live.entry(loc.segment).or_default() += u64::from(loc.len);
            }
        }
        let mostly_dead: Vec<(u64, u64, u64)> = closed
            .into_iter()
            .map(|(segment, size)| (segment, size, live.get(&segment).copied().unwrap_or(0)))
            .filter(|&(_, size, live)| size > 0 && live.saturating_mul(100) < size.saturating_mul(LIVE_PERCENT_BELOW))
            .collect();
        if mostly_dead.is_empty() {
            return Ok(Compacted::default());
        }
        // The index entries pointing into them, in one more pass.
        let mut keys: HashMap<u64, Vec<sled::IVec>> =
            mostly_dead.iter().map(|&(segment, _, _)| (segment, Vec::new())).collect();
        for item in self.windows.iter() {
            let (k, v) = item?;
            if let Some(into) = sealed_entry(&k, &v).and_then(|loc| keys.get_mut(&loc.segment)) {
                into.push(k);
            }
        }
        let mut done = Compacted::default();
        for (segment, size, live) in mostly_dead {
            let Some(moved) = self.move_out(segment, keys.remove(&segment).unwrap_or_default())? else {
                tracing::warn!(segment, "a sealed value in this segment file cannot be read; the file is kept");
                continue;
            };
            // The index must point at the copies, durably, before the file goes.
            self.db.flush()?;
            self.segments.remove(segment)?;
            done.segments += 1;
            done.moved += moved;
            done.reclaimed += size.saturating_sub(live);
        }
        Ok(done)
    }

    /// Copies the live values of `segment` (those of index entries `keys`) to the segment
    /// appends go to and points the index at the copies. Returns how many moved, or `None`
    /// if one could not be read.
    fn move_out(&self, segment: u64, keys: Vec<sled::IVec>) -> Result<Option<usize>, StoreError> {
        let (mut moved, mut unreadable) = (0, false);
        for slice in keys.chunks(MOVE_SLICE) {
            let _sealing = self.lock_sealing();
            let mut entries = Vec::with_capacity(slice.len());
            for k in slice {
                // Read again under the lock: a seal may have replaced it since the scan
                // (into the segment appends go to, never into this one).
                let Some(loc) = self.windows.get(k)?.and_then(|v| sealed_entry(k, &v)) else { continue };
                if loc.segment != segment {
                    continue;
                }
                match self.segments.read(loc)? {
                    Some(payload) => entries.push((k.clone(), payload)),
                    None => unreadable = true,
                }
            }
            let payloads: Vec<&[u8]> = entries.iter().map(|(_, p)| p.as_slice()).collect();
            let locs = self.segments.append_all(&payloads)?;
            let mut batch = sled::Batch::default();
            for ((k, _), loc) in entries.iter().zip(&locs) {
                batch.insert(k.clone(), codec::to_vec(loc));
            }
            self.windows.apply_batch(batch)?;
            moved += entries.len();
        }
        Ok((!unreadable).then_some(moved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Sealing, Store, StoredRecord};
    use telemesh_proto::record::{Kind, Readings, Record, StreamId};
    use telemesh_proto::wire::Dialect;

    fn streams(n: u32) -> Vec<StreamId> {
        (1..=n).map(|device| StreamId { dialect: Dialect::Iotstream, device }).collect()
    }

    fn rec(stream: StreamId, seq: u64) -> StoredRecord {
        let t = seq * 1_000_000;
        let readings = Readings::Batch(vec![seq as f32]);
        let r = Record { stream, device_time_ns: t, seq, timestamp_raw: t, kind: Kind::Data, readings };
        StoredRecord::new(r, seq, 1)
    }

    /// Each stream's window 0 sealed `rounds` times, one record more each time: all but
    /// the last frame of each window are dead. Then the store is reopened, so the file
    /// they are in is closed.
    fn resealed(dir: &std::path::Path, ids: &[StreamId], rounds: u64) -> SledStore {
        let s = SledStore::open(dir, 4).expect("open");
        for round in 0..rounds {
            let records: Vec<Vec<StoredRecord>> = ids.iter().map(|&id| vec![rec(id, round)]).collect();
            let sealing: Vec<Sealing<'_>> =
                ids.iter().zip(&records).map(|(&stream, live)| Sealing { stream, window_start: 0, live }).collect();
            s.seal_windows(&sealing).expect("seal");
        }
        drop(s);
        SledStore::open(dir, 4).expect("reopen")
    }

    fn contents(s: &SledStore, ids: &[StreamId]) -> Vec<(Vec<u8>, Vec<u8>, usize)> {
        ids.iter()
            .map(|&id| {
                let sealed = s.sealed(id, 0).expect("read").expect("sealed");
                (sealed.root.to_vec(), sealed.blob, s.window(id, 0).expect("window").len())
            })
            .collect()
    }

    #[test]
    fn a_mostly_dead_segment_file_is_removed_and_every_window_reads_the_same() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = streams(300);
        let s = resealed(dir.path(), &ids, 5);
        let before = contents(&s, &ids);
        assert!(before.iter().all(|(_, _, n)| *n == 5));
        let size = s.segments.size().expect("size");

        let done = s.compact().expect("compact");
        assert_eq!((done.segments, done.moved), (1, 300));
        let after = s.segments.size().expect("size");
        assert!(after * 3 < size, "{after} bytes of segment files left of {size}");
        assert_eq!(contents(&s, &ids), before);
        assert!(s.check().expect("check").problems.is_empty());
        assert_eq!(s.compact().expect("compact"), Compacted::default(), "the copies are live, in the open file");

        drop(s);
        let s = SledStore::open(dir.path(), 4).expect("reopen");
        assert_eq!(contents(&s, &ids), before, "the moved index entries were made durable");
        // A file mostly live is left as it is.
        assert_eq!(s.compact().expect("compact"), Compacted::default());
    }

    #[test]
    fn a_reader_holding_a_location_from_before_a_move_still_reads_the_value() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = streams(20);
        let s = resealed(dir.path(), &ids, 3);
        let key = super::super::window_key(ids[0], 0, PART_SEALED, 0);
        let old = s.windows.get(key).expect("get").expect("indexed");
        let (value, records) = s.read_sealed(ids[0], 0, &old).expect("read").expect("sealed");
        assert_eq!(s.compact().expect("compact").segments, 1);
        assert_ne!(s.windows.get(key).expect("get").expect("indexed"), old, "moved");
        let (again, records_again) = s.read_sealed(ids[0], 0, &old).expect("read").expect("followed the moved entry");
        assert_eq!((again.root, records_again), (value.root, records));
    }

    /// Windows of [`compaction_child`]; round `r` seals all but those with
    /// `index % 4 == r % 4` again, with record `r` more: the file of a round is a third
    /// live after the next one, so it is compacted, its live third moved.
    const CHILD_WINDOWS: u32 = 150;
    const CHILD_DIR: &str = "TELEMESH_COMPACT_CHILD";

    /// The rounds `progress` says were durable, and the compactions that moved values.
    fn progress(dir: &std::path::Path) -> (Option<u64>, usize) {
        let text = std::fs::read_to_string(dir.join("progress")).unwrap_or_default();
        let durable = text.lines().filter_map(|l| l.strip_prefix("durable ")?.parse().ok()).max();
        (durable, text.lines().filter(|l| l.starts_with("moved ")).count())
    }

    /// The process [`a_crash_anywhere_in_a_compaction_leaves_every_window_readable`] kills:
    /// over the store in `$TELEMESH_COMPACT_CHILD`, opens it (the segment file written to
    /// before is closed), seals three quarters of its windows again (their frames in
    /// closed files die), syncs and says so, compacts, waits, closes; over and over.
    #[test]
    #[ignore = "run as a child process by a_crash_anywhere_in_a_compaction_leaves_every_window_readable"]
    fn compaction_child() {
        use std::io::Write;
        let dir = std::path::PathBuf::from(std::env::var_os(CHILD_DIR).expect("TELEMESH_COMPACT_CHILD"));
        let ids = streams(CHILD_WINDOWS);
        let mut round = progress(&dir).0.map_or(0, |r| r + 1);
        let mut log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("progress")).expect("progress");
        // Each line goes in one write; a kill between two would leave one unfinished.
        let mut say = |line: String| log.write_all(format!("\n{line}\n").as_bytes()).and_then(|()| log.sync_data());
        loop {
            let s = SledStore::open(&dir.join("store"), 4).expect("open");
            // A round sealed but not said durable before a kill is sealed again: only
            // windows without the round's record get it, so no record is counted twice.
            let records: Vec<(StreamId, Vec<StoredRecord>)> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| *i as u64 % 4 != round % 4)
                .filter(|(_, &id)| s.window(id, 0).expect("window").iter().all(|r| r.record.seq != round))
                .map(|(_, &id)| (id, vec![rec(id, round)]))
                .collect();
            let sealing: Vec<Sealing<'_>> =
                records.iter().map(|(stream, live)| Sealing { stream: *stream, window_start: 0, live }).collect();
            s.seal_windows(&sealing).expect("seal");
            s.flush().expect("flush");
            say(format!("durable {round}")).expect("progress");
            let done = s.compact().expect("compact");
            if done.moved > 0 {
                say(format!("moved {}", done.moved)).expect("progress");
            }
            // A node goes on without syncing sled until its next flush; closing the store
            // here at once would sync it and hide a compaction that relied on that.
            std::thread::sleep(std::time::Duration::from_millis(20));
            round += 1;
        }
    }

    /// A compaction killed at any moment (copying values, pointing the index at them,
    /// syncing, removing the file) loses nothing made durable and counts nothing twice:
    /// after each of 25 SIGKILLs the store opens, every window holds exactly the records
    /// of the rounds said durable (and perhaps of the one after), once each, and `check`
    /// finds every root and tree as stored.
    #[test]
    fn a_crash_anywhere_in_a_compaction_leaves_every_window_readable() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let ids = streams(CHILD_WINDOWS);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(15);
        for kill in 0..25 {
            let mut child = std::process::Command::new(&exe)
                .args(["--exact", "store::compact::tests::compaction_child", "--ignored", "--test-threads", "1"])
                .env(CHILD_DIR, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("child");
            std::thread::sleep(std::time::Duration::from_millis(rng.gen_range(30..400)));
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");

            let Some(durable) = progress(dir.path()).0 else { continue };
            let s = SledStore::open(&dir.path().join("store"), 4).expect("opens after a kill");
            let problems = s.check().expect("check").problems;
            assert!(problems.is_empty(), "kill {kill}: {problems:?}");
            for (i, &id) in ids.iter().enumerate() {
                let held: Vec<(u64, u32)> = s.window(id, 0).expect("window").iter().map(|r| (r.record.seq, r.copies)).collect();
                let due: Vec<(u64, u32)> = (0..=durable).filter(|r| r % 4 != i as u64 % 4).map(|r| (r, 1)).collect();
                let next = (durable + 1) % 4 != i as u64 % 4;
                let also = [due.clone(), vec![(durable + 1, 1)]].concat();
                assert!(held == due || (next && held == also), "kill {kill}, window {i}: {held:?}, durable to round {durable}");
            }
        }
        let (durable, compactions) = progress(dir.path());
        assert!(durable.is_some_and(|d| d >= 20), "rounds made durable: {durable:?}");
        assert!(compactions >= 5, "{compactions} compactions moved values between kills");
    }

    #[test]
    fn a_segment_file_with_a_damaged_value_is_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ids = streams(20);
        let s = resealed(dir.path(), &ids, 3);
        drop(s);
        // Damage the last bytes of the only segment file: the last value written there.
        let mut files = std::fs::read_dir(dir.path().join("sealed")).expect("dir");
        let file = files.next().expect("a file").expect("entry").path();
        let mut bytes = std::fs::read(&file).expect("read");
        let n = bytes.len();
        bytes[n - 4..].copy_from_slice(&[0xff; 4]);
        std::fs::write(&file, bytes).expect("write");
        let s = SledStore::open(dir.path(), 4).expect("reopen");
        assert_eq!(s.compact().expect("compact").segments, 0);
        assert!(file.exists(), "kept: what it still holds is not lost");
        let readable = ids.iter().filter(|&&id| s.sealed(id, 0).expect("read").is_some()).count();
        assert_eq!(readable, ids.len() - 1, "every undamaged window still reads");
    }
}
