//! When each device was last heard here, for `telemesh_devices` and `telemesh_devices_stale`.
//!
//! Kept by the maintenance task, not by ingest: at each flush it takes from the stream
//! table the streams that received a datagram lately
//! ([`crate::ingest::streams::Table::heard_since`]), so a datagram costs nothing more and
//! the scrape never waits for the table. Streams that left memory keep their last time
//! here. Seeded at start from the stored stream states ([`Heard::absorb`]). Bounded as the
//! stream states are: one entry per stream this node ever heard (at most 65,535 ids per
//! plain dialect).

use std::collections::HashMap;

use telemesh_proto::record::StreamId;
use telemesh_proto::wire::Dialect;

/// The last arrival here of every stream this node has heard.
#[derive(Debug, Default)]
pub struct Heard {
    last: HashMap<StreamId, u64>,
}

impl Heard {
    /// Notes that `stream` was last heard at `arrival_ns` (an earlier time changes nothing).
    pub fn note(&mut self, stream: StreamId, arrival_ns: u64) {
        if arrival_ns == 0 {
            // A state that never received anything (a damaged one could say so).
            return;
        }
        let t = self.last.entry(stream).or_insert(arrival_ns);
        *t = (*t).max(arrival_ns);
    }

    /// Takes in what `other` heard.
    pub fn absorb(&mut self, other: Heard) {
        other.last.into_iter().for_each(|(id, t)| self.note(id, t));
    }

    /// For each dialect: devices heard, and those of them last heard before `cutoff_ns`.
    pub fn count(&self, cutoff_ns: u64) -> [(Dialect, usize, usize); 3] {
        let mut out = Dialect::ALL.map(|d| (d, 0, 0));
        for (id, t) in &self.last {
            if let Some(c) = out.iter_mut().find(|c| c.0 == id.dialect) {
                c.1 += 1;
                if *t < cutoff_ns {
                    c.2 += 1;
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_stale_once_its_last_arrival_is_before_the_cutoff() {
        let mut h = Heard::default();
        let a = StreamId::new(Dialect::Iotstream, 1);
        let b = StreamId::new(Dialect::Iotstream, 2);
        let c = StreamId::new(Dialect::Tinytelemetry, 2);
        h.note(a, 100);
        h.note(b, 300);
        h.note(b, 200);
        h.note(c, 50);
        h.note(StreamId::new(Dialect::Secure, 9), 0);
        let count = h.count(250);
        assert_eq!(count[0], (Dialect::Iotstream, 2, 1), "b's latest arrival (300) counts, not the older one");
        assert_eq!(count.iter().find(|c| c.0 == Dialect::Tinytelemetry), Some(&(Dialect::Tinytelemetry, 1, 1)));
        let secure = count.iter().find(|c| c.0 == Dialect::Secure);
        assert_eq!(secure, Some(&(Dialect::Secure, 0, 0)), "never heard: not a device");
        h.note(a, 400);
        assert_eq!(h.count(250)[0], (Dialect::Iotstream, 2, 0), "heard again: no longer stale");
        let mut seeded = Heard::default();
        seeded.note(a, 90);
        seeded.note(StreamId::new(Dialect::Iotstream, 3), 90);
        h.absorb(seeded);
        assert_eq!(h.count(250)[0], (Dialect::Iotstream, 3, 1), "an older time changes nothing; a new device counts");
    }
}
