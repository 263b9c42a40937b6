//! The metrics of one run, computed from the sensor's ground truth and the records the
//! nodes' API returns. Pure: no sockets, no clock, no files (docs/experiments.md defines
//! each metric; the tests here pin those definitions down).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::sensor::TruthRecord;

/// One record of a node's records API (`GET /v1/streams/…/records`), reduced to what the
/// metrics use. Records are matched to the truth by (device, seq, timestamp), all three
/// as they are on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub device: u32,
    pub seq: u64,
    pub timestamp: u64,
    /// First receipt by the node's clock, Unix ns (local view only).
    pub arrival_ns: Option<u64>,
    /// How many times the node received it (local view only; the merged view counts 1).
    pub copies: u32,
}

impl Received {
    /// From one JSON record of either view; `None` if a needed field is missing.
    pub fn from_json(v: &serde_json::Value) -> Option<Received> {
        Some(Received {
            device: u32::try_from(v["device"].as_u64()?).ok()?,
            seq: v["seq"].as_u64()?,
            timestamp: v["timestamp"].as_u64()?,
            arrival_ns: v["arrival_ns"].as_u64(),
            copies: v["copies"]
                .as_u64()
                .map_or(Some(1), |c| u32::try_from(c).ok())?,
        })
    }
}

/// The truth log indexed for matching and for counting gaps in each device's send order.
#[derive(Debug)]
pub struct Truth<'a> {
    records: &'a [TruthRecord],
    index: HashMap<(u32, u64, u64), usize>,
    /// Per device, its packets' truth indices in send order.
    by_device: BTreeMap<u16, Vec<usize>>,
}

impl<'a> Truth<'a> {
    /// Indexes `records` (in the order the sensor sent them, as its truth log lists them).
    pub fn new(records: &'a [TruthRecord]) -> Self {
        let mut index = HashMap::with_capacity(records.len());
        let mut by_device: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, t) in records.iter().enumerate() {
            index.insert(
                (
                    u32::from(t.device),
                    t.seq,
                    t.timestamp,
                ),
                i,
            );
            by_device.entry(t.device).or_default().push(i);
        }
        Truth {
            records,
            index,
            by_device,
        }
    }

    /// Packets sent.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing was sent.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The truth index of a received record, if it is one the sensor sent.
    pub fn find(&self, r: &Received) -> Option<usize> {
        self.index.get(&(r.device, r.seq, r.timestamp)).copied()
    }

    /// The truth indices of `records` that match (unmatched ones are left out).
    pub fn matched(&self, records: &[Received]) -> HashSet<usize> {
        records.iter().filter_map(|r| self.find(r)).collect()
    }

    /// Sequence gap count (the Mini-RFC's gap count, the TinyTelemetry document's gap detection): per device, the
    /// packets missing between two received ones, in the device's send order (= sorted by
    /// client timestamp, with 16-bit wraparound taken care of by the truth's order).
    /// Packets lost before a device's first received one or after its last are not gaps.
    pub fn gap_count(&self, present: &HashSet<usize>) -> u64 {
        let mut gaps = 0;
        for packets in self.by_device.values() {
            let mut last: Option<usize> = None;
            for (pos, i) in packets.iter().enumerate() {
                if present.contains(i) {
                    if let Some(l) = last {
                        gaps += (pos - l - 1) as u64;
                    }
                    last = Some(pos);
                }
            }
        }
        gaps
    }
}

/// What one site received on its own (the source documents' experiment: one collector).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiteMetrics {
    /// Packets the sensor sent (INIT, DATA and HEARTBEAT).
    pub packets_sent: u64,
    /// Datagrams the node received, duplicates included (Σ `copies`).
    pub packets_received: u64,
    /// Packets sent that the node never received.
    pub packets_lost: u64,
    /// Duplicate datagrams ÷ datagrams received.
    pub duplicate_rate: Option<f64>,
    /// See [`Truth::gap_count`].
    pub sequence_gap_count: u64,
    /// UDP payload bytes received ÷ datagrams received.
    pub bytes_per_report: Option<f64>,
    /// UDP payload bytes received ÷ readings received.
    pub bytes_per_reading: Option<f64>,
    /// Mean of (first arrival at the node − sent by the sensor), ms.
    pub latency_mean_ms: Option<f64>,
    /// 99th percentile (nearest rank) of the same, ms.
    pub latency_p99_ms: Option<f64>,
    /// The node's CPU time while the sensor sent ÷ datagrams received, ms.
    pub cpu_ms_per_report: Option<f64>,
    /// The node's own mean time to decode, classify and queue one datagram, ms (its
    /// `telemesh_packet_processing_seconds` histogram); filled in by the runner.
    pub processing_ms_per_report: Option<f64>,
    /// Records in the node's local view that the sensor never sent (expected 0).
    pub unmatched_records: u64,
}

impl SiteMetrics {
    /// From the truth, the node's local view of every device, and the node's CPU time
    /// over the sending (`None` if unknown).
    pub fn compute(truth: &Truth<'_>, local: &[Received], cpu: Option<Duration>) -> Self {
        let mut received = 0u64;
        let mut bytes = 0u64;
        let mut readings = 0u64;
        let mut unique = HashSet::new();
        let mut latencies = Vec::new();
        let mut unmatched = 0;
        for r in local {
            let Some(i) = truth.find(r) else {
                unmatched += 1;
                continue;
            };
            let t = &truth.records[i];
            let copies = u64::from(r.copies.max(1));
            received += copies;
            bytes += copies * t.datagram.len() as u64;
            readings += copies * t.readings.len() as u64;
            unique.insert(i);
            if let Some(arrival) = r.arrival_ns {
                latencies.push((i128::from(arrival) - i128::from(t.sent_at_ns)) as f64 / 1e6);
            }
        }
        latencies.sort_by(f64::total_cmp);
        let per = |num: f64, den: u64| (den > 0).then(|| num / den as f64);
        SiteMetrics {
            packets_sent: truth.len() as u64,
            packets_received: received,
            packets_lost: (truth.len() - unique.len()) as u64,
            duplicate_rate: per((received - unique.len() as u64) as f64, received),
            sequence_gap_count: truth.gap_count(&unique),
            bytes_per_report: per(bytes as f64, received),
            bytes_per_reading: per(bytes as f64, readings),
            latency_mean_ms: mean(&latencies),
            latency_p99_ms: percentile(&latencies, 0.99),
            cpu_ms_per_report: cpu.and_then(|c| per(c.as_secs_f64() * 1e3, received)),
            processing_ms_per_report: None,
            unmatched_records: unmatched,
        }
    }
}

/// What the mesh made of it: site a's merged view once every node lists the same roots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RepairMetrics {
    /// Packets sent that site a's merged view holds.
    pub records_after_repair: u64,
    /// Of those, the ones site a did not receive itself (it got them from b or c).
    pub repaired_at_site_a: u64,
    /// [`Truth::gap_count`] of the merged view.
    pub sequence_gap_count_after_repair: u64,
    /// Packets sent that no site received (nothing can repair those).
    pub lost_by_every_site: u64,
    /// What independent loss predicts for that: Σ over packets of Π over sites of the loss
    /// probability.
    pub expected_lost_by_every_site: f64,
    /// Packets some site received that site a's merged view lacks (expected 0).
    pub unrepaired: u64,
    /// Repair-protocol bytes all nodes sent (`telemesh_mesh_bytes_total{kind="repair",
    /// direction="out"}`); filled in by the runner.
    pub repair_bytes: u64,
    /// RaptorQ repair symbols all nodes received (`telemesh_mesh_symbols_received_total`);
    /// filled in by the runner.
    pub symbols_received: u64,
    /// From the sensor's last packet until every node listed the same roots, s; filled in
    /// by the runner.
    pub settle_seconds: f64,
}

impl RepairMetrics {
    /// From the truth, every site's local view (site a first), site a's merged view, and
    /// each site's loss probability.
    pub fn compute(
        truth: &Truth<'_>,
        locals: &[Vec<Received>],
        merged_a: &[Received],
        site_loss: &[f64],
    ) -> Self {
        let per_site: Vec<HashSet<usize>> = locals.iter().map(|l| truth.matched(l)).collect();
        let heard: HashSet<usize> = per_site.iter().flatten().copied().collect();
        let merged = truth.matched(merged_a);
        let own = per_site.first().cloned().unwrap_or_default();
        RepairMetrics {
            records_after_repair: merged.len() as u64,
            repaired_at_site_a: merged.difference(&own).count() as u64,
            sequence_gap_count_after_repair: truth.gap_count(&merged),
            lost_by_every_site: (truth.len() - heard.len()) as u64,
            expected_lost_by_every_site: truth.len() as f64 * site_loss.iter().product::<f64>(),
            unrepaired: heard.difference(&merged).count() as u64,
            repair_bytes: 0,
            symbols_received: 0,
            settle_seconds: 0.0,
        }
    }
}

/// The mean, or `None` for no values.
pub fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Nearest-rank percentile of sorted values (`p` in 0..=1), or `None` for no values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// Minimum, median and maximum across runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    pub min: f64,
    /// The middle value; for an even count the mean of the two middle ones.
    pub median: f64,
    pub max: f64,
}

/// The spread of the values that exist (`None`s and NaNs are skipped), or `None`.
pub fn spread(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
    let mut v: Vec<f64> = values
        .into_iter()
        .flatten()
        .filter(|x| !x.is_nan())
        .collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = match n {
        0 => return None,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    Some(Spread {
        min: v[0],
        median,
        max: v[n - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensor::{Kind, Reading};
    use telemesh_proto::wire::Dialect;

    /// A truth record: DATA with 5 readings (32 bytes) or HEARTBEAT/INIT (12 bytes).
    fn sent(device: u16, seq: u64, kind: Kind, sent_at_ns: u64) -> TruthRecord {
        let readings = match kind {
            Kind::Data => vec![Reading::Plain(21.5); 5],
            _ => Vec::new(),
        };
        TruthRecord {
            dialect: Dialect::Iotstream,
            device,
            seq,
            timestamp: 1_000 + seq * 1000,
            kind,
            datagram: vec![0; 12 + 4 * readings.len()],
            readings,
            sent_at_ns,
        }
    }

    fn got(t: &TruthRecord, arrival_ns: u64, copies: u32) -> Received {
        Received {
            device: u32::from(t.device),
            seq: t.seq,
            timestamp: t.timestamp,
            arrival_ns: Some(arrival_ns),
            copies,
        }
    }

    /// Two devices, 6 packets each (INIT then DATA/HEARTBEAT), interleaved as sent.
    fn truth() -> Vec<TruthRecord> {
        let mut out = Vec::new();
        for seq in 0..6u64 {
            for device in [1, 2] {
                let kind = match seq {
                    0 => Kind::Init,
                    3 => Kind::Heartbeat,
                    _ => Kind::Data,
                };
                out.push(sent(device, seq, kind, seq * 1_000_000_000));
            }
        }
        out
    }

    #[test]
    fn site_metrics_count_loss_gaps_duplicates_bytes_and_latency() {
        let truth_log = truth();
        let truth = Truth::new(&truth_log);
        let of = |device: u16, seq: u64| {
            truth_log
                .iter()
                .find(|t| t.device == device && t.seq == seq)
                .expect("sent")
        };
        // Device 1 loses seqs 2 and 3 (one gap of 2) and seq 5 (the end: not a gap);
        // device 2 loses seq 0 (the start: not a gap) and gets seq 4 twice.
        let local = vec![
            got(of(1, 0), 1_000_000, 1),
            got(of(1, 1), 1_000_000_000 + 2_000_000, 1),
            got(of(1, 4), 4_000_000_000 + 3_000_000, 1),
            got(of(2, 1), 1_000_000_000 + 1_000_000, 1),
            got(of(2, 2), 2_000_000_000 + 1_000_000, 1),
            got(of(2, 3), 3_000_000_000 + 1_000_000, 1),
            got(of(2, 4), 4_000_000_000 + 1_000_000, 2),
            got(of(2, 5), 5_000_000_000 + 1_000_000, 1),
            // A record the sensor never sent.
            Received {
                device: 3,
                seq: 0,
                timestamp: 0,
                arrival_ns: Some(0),
                copies: 1,
            },
        ];
        let m = SiteMetrics::compute(&truth, &local, Some(Duration::from_millis(90)));
        assert_eq!(m.packets_sent, 12);
        assert_eq!(m.packets_received, 9);
        assert_eq!(m.packets_lost, 4);
        assert_eq!(m.sequence_gap_count, 2);
        assert_eq!(m.duplicate_rate, Some(1.0 / 9.0));
        // INIT 12 + DATA 32 + DATA 32 | DATA 32 ×2, HEARTBEAT 12, DATA 32 ×2 (twice) + 32.
        let bytes = 12 + 32 + 32 + 32 + 32 + 12 + 32 * 2 + 32;
        assert_eq!(m.bytes_per_report, Some(f64::from(bytes) / 9.0));
        // 7 DATA datagrams of 5 readings.
        assert_eq!(m.bytes_per_reading, Some(f64::from(bytes) / 35.0));
        // Latencies 1, 2, 3 ms and 1 ms × 5.
        assert_eq!(m.latency_mean_ms, Some(11.0 / 8.0));
        assert_eq!(m.latency_p99_ms, Some(3.0));
        assert_eq!(m.cpu_ms_per_report, Some(10.0));
        assert_eq!(m.unmatched_records, 1);
    }

    #[test]
    fn nothing_received_gives_no_ratios_rather_than_nan() {
        let truth_log = truth();
        let m = SiteMetrics::compute(
            &Truth::new(&truth_log),
            &[],
            Some(Duration::from_millis(10)),
        );
        assert_eq!(
            (m.packets_sent, m.packets_received, m.packets_lost),
            (12, 0, 12)
        );
        assert_eq!(m.duplicate_rate, None);
        assert_eq!(m.bytes_per_report, None);
        assert_eq!(m.latency_mean_ms, None);
        assert_eq!(m.cpu_ms_per_report, None);
        assert_eq!(m.sequence_gap_count, 0);
    }

    #[test]
    fn gaps_follow_send_order_across_seq_wraparound() {
        // seqs 65534, 65535, 0, 1, 2 of one device; 65535 and 0 lost: one gap of 2,
        // though the seqs go backwards.
        let truth_log: Vec<TruthRecord> = [65534u64, 65535, 0, 1, 2]
            .iter()
            .enumerate()
            .map(|(i, &seq)| TruthRecord {
                timestamp: 5000 + i as u64,
                ..sent(7, seq, Kind::Data, i as u64)
            })
            .collect();
        let truth = Truth::new(&truth_log);
        let present: HashSet<usize> = [0, 3, 4].into();
        assert_eq!(truth.gap_count(&present), 2);
        assert_eq!(truth.gap_count(&HashSet::new()), 0);
        assert_eq!(truth.gap_count(&(0..5).collect()), 0);
    }

    #[test]
    fn repair_metrics_compare_the_merged_view_with_every_sites_own() {
        let truth_log = truth();
        let truth = Truth::new(&truth_log);
        let rec = |i: usize| got(&truth_log[i], 0, 1);
        // a got 0..6, b got 4..10, c got 0 and 9; nobody got 10 and 11.
        let locals = vec![
            (0..6).map(rec).collect::<Vec<_>>(),
            (4..10).map(rec).collect(),
            vec![rec(0), rec(9)],
        ];
        // a's merged view lacks 6 (not repaired) but holds the rest anyone heard.
        let merged: Vec<Received> = (0..10)
            .filter(|&i| i != 6)
            .map(|i| Received {
                arrival_ns: None,
                ..rec(i)
            })
            .collect();
        let m = RepairMetrics::compute(&truth, &locals, &merged, &[0.1, 0.1, 0.5]);
        assert_eq!(m.records_after_repair, 9);
        assert_eq!(m.repaired_at_site_a, 3);
        assert_eq!(m.lost_by_every_site, 2);
        assert_eq!(m.unrepaired, 1);
        assert!((m.expected_lost_by_every_site - 12.0 * 0.005).abs() < 1e-12);
        // Index 6 is device 1 seq 3: device 1 has seqs 0, 1, 2, _, 4 (seq 5, index 10, lost
        // at the end is no gap) → one gap; device 2 has 0..=4 → none.
        assert_eq!(m.sequence_gap_count_after_repair, 1);
    }

    #[test]
    fn received_parses_both_views() {
        let local = serde_json::json!({"device": 1001, "seq": 4, "timestamp": 245642102u64,
            "arrival_ns": 1765477200758614000u64, "copies": 2, "gap": 0});
        assert_eq!(
            Received::from_json(&local),
            Some(Received {
                device: 1001,
                seq: 4,
                timestamp: 245642102,
                arrival_ns: Some(1765477200758614000),
                copies: 2
            })
        );
        let merged = serde_json::json!({"device": 1001, "seq": 4, "timestamp": 7});
        assert_eq!(
            Received::from_json(&merged).map(|r| (r.copies, r.arrival_ns)),
            Some((1, None))
        );
        assert_eq!(Received::from_json(&serde_json::json!({"device": 1})), None);
    }

    #[test]
    fn spread_and_percentiles() {
        assert_eq!(spread([]), None);
        assert_eq!(spread([None, Some(f64::NAN)]), None);
        let s = spread([Some(3.0), None, Some(1.0), Some(2.0)]).expect("three values");
        assert_eq!((s.min, s.median, s.max), (1.0, 2.0, 3.0));
        let even = spread([Some(4.0), Some(1.0), Some(2.0), Some(10.0)]).expect("four");
        assert_eq!(even.median, 3.0);
        let sorted: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(percentile(&sorted, 0.99), Some(198.0));
        assert_eq!(percentile(&sorted, 0.5), Some(100.0));
        assert_eq!(percentile(&[5.0], 0.99), Some(5.0));
        assert_eq!(percentile(&[], 0.99), None);
        assert_eq!(mean(&[1.0, 2.0]), Some(1.5));
    }
}
