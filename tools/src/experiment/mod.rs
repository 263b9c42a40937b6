//! The source documents' experiment plan (the IoTStream v1 Mini-RFC's experimental evaluation
//! plan, the TinyTelemetry v1 design document's testing strategy), run through the
//! relay instead of netem: `telemesh-experiment`.
//!
//! * [`scenario`] — the five scenarios, their impairment, file names and seeds;
//! * [`runner`] — one run against real processes (3 nodes, 3 relays, the sensor);
//! * [`measure`] — the metrics of a run from the sensor's truth and the nodes' records
//!   (pure);
//! * [`report`] — markdown tables, `metrics.json` (pure, and [`report::write`]);
//! * [`plot`] — the TinyTelemetry document's plots as SVG;
//! * [`capture`] — the optional tcpdump/tshark capture.
//!
//! `docs/experiments.md` describes the runner and defines every metric.

pub mod capture;
pub mod measure;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
