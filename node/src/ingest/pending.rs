//! A stream's records received since the last flush, kept encoded (one [`Rows`] per
//! window) as the flush will write them: about 60 bytes a record in memory instead of
//! some 180 as [`StoredRecord`]s, and no encoding left for the flush to do.

use telemesh_proto::record::Record;

use crate::store::{Encoded, Rows, StoredRecord};

/// Records received since the last flush, per window (in window order), each window's in
/// arrival order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pending {
    windows: Vec<Rows>,
}

impl Pending {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.windows.iter().map(|w| w.records).sum()
    }

    /// Bytes of the encoded records (what bounds the records waiting in memory).
    pub fn bytes(&self) -> usize {
        self.windows.iter().map(Rows::len_bytes).sum()
    }

    /// The windows it has records of.
    pub fn windows(&self) -> impl Iterator<Item = u64> + '_ {
        self.windows.iter().map(|w| w.window_start)
    }

    /// The rows of `r`'s window, made if there are none yet.
    fn rows_for(&mut self, r: &StoredRecord) -> &mut Rows {
        let w = r.window();
        let at = match self.windows.binary_search_by_key(&w, |rows| rows.window_start) {
            Ok(at) => at,
            Err(at) => {
                self.windows.insert(at, Rows::new(r.record.stream, w));
                at
            }
        };
        &mut self.windows[at]
    }

    pub fn push(&mut self, r: &StoredRecord) {
        self.rows_for(r).push(r);
    }

    /// Appends what `later` holds after what this holds.
    pub fn append(&mut self, later: Pending) {
        for rows in later.windows {
            match self.windows.binary_search_by_key(&rows.window_start, |w| w.window_start) {
                Ok(at) => self.windows[at].append(rows),
                Err(at) => self.windows.insert(at, rows),
            }
        }
    }

    /// The records, decoded: window by window, each in arrival order.
    pub fn records(&self) -> Vec<StoredRecord> {
        self.windows.iter().flat_map(Rows::decode).collect()
    }

    /// The records of window `w`, decoded, in arrival order.
    pub fn window(&self, w: u64) -> Vec<StoredRecord> {
        self.windows.iter().filter(|rows| rows.window_start == w).flat_map(Rows::decode).collect()
    }

    /// One chunk's value per window, in window order.
    pub fn encode(&self) -> impl Iterator<Item = Encoded> + '_ {
        self.windows.iter().map(Rows::encode)
    }

    /// Counts one more receipt of a record already held (`proved`: this one was
    /// authenticated): in place if it is here (its window re-encoded: duplicates are
    /// rare, and a flood of them already costs a look through what is unflushed), else as
    /// a one-copy delta that [`crate::store::merge`] adds to the stored record
    /// when the window is read.
    pub fn add_copy(&mut self, rec: Record, arrival_ns: u64, proved: bool) {
        let delta = StoredRecord { proved, ..StoredRecord::new(rec, 0, arrival_ns) };
        let rows = self.rows_for(&delta);
        let mut records = rows.decode();
        match records.iter_mut().find(|r| r.order_key() == delta.order_key()) {
            Some(r) => {
                r.copies = r.copies.saturating_add(1);
                r.proved |= proved;
                *rows = Rows::of(rows.stream, rows.window_start, &records);
            }
            None => rows.push(&delta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemesh_proto::record::{Kind, Readings, StreamId};
    use telemesh_proto::window;
    use telemesh_proto::wire::Dialect;

    const S: StreamId = StreamId { dialect: Dialect::Iotstream, device: 7 };

    fn record(seq: u64, t: u64) -> Record {
        Record { stream: S, device_time_ns: t, seq, timestamp_raw: t, kind: Kind::Data, readings: Readings::Batch(vec![seq as f32, 1.5]) }
    }

    #[test]
    fn records_come_back_as_they_went_in_window_by_window() {
        let w2 = window::next(0);
        let mut p = Pending::default();
        let a = StoredRecord::new(record(1, w2 + 5), 1, 100);
        let b = StoredRecord::new(record(2, 3), 2, 101);
        let c = StoredRecord::new(record(3, w2 + 1), 3, 102);
        for r in [&a, &b, &c] {
            p.push(r);
        }
        assert_eq!((p.len(), p.windows().collect::<Vec<_>>()), (3, vec![0, w2]));
        assert_eq!(p.records(), vec![b.clone(), a.clone(), c.clone()]);
        let chunks: Vec<Encoded> = p.encode().collect();
        assert_eq!(chunks, vec![Encoded::new(S, 0, [&b]), Encoded::new(S, w2, [&a, &c])]);

        let mut later = Pending::default();
        let d = StoredRecord::new(record(4, w2 + 9), 4, 103);
        later.push(&d);
        p.append(later);
        assert_eq!(p.records(), vec![b, a, c, d]);
    }

    #[test]
    fn a_copy_of_a_pending_record_is_counted_on_it_and_of_another_pushed_as_a_delta() {
        let mut p = Pending::default();
        p.push(&StoredRecord::new(record(1, 10), 1, 100));
        p.add_copy(record(1, 10), 200, true);
        p.add_copy(record(2, 20), 300, false);
        let got = p.records();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].copies, got[0].proved, got[0].ext_seq, got[0].arrival_ns), (2, true, 1, 100));
        assert_eq!((got[1].copies, got[1].record.seq, got[1].arrival_ns), (1, 2, 300));
        assert_eq!(p.bytes(), p.encode().map(|e| e.bytes.len() - 1).sum::<usize>());
    }
}
