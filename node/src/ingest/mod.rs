//! UDP ingest: one listener thread per dialect.
//!
//! Each datagram's authentication trailer, when its device has a key, is verified and
//! stripped (`proto::auth`; a refusal is counted as a drop by reason); then it is decoded
//! by `proto::wire` into a `Record` (or counted as a drop by reason), classified by its
//! stream's `proto::stream::State`, and appended to the stream's pending records in the
//! [`Table`]; the maintenance task writes those to the store every flush interval (see
//! `streams`).
//!
//! The hot loop is a plain blocking thread rather than a tokio task: it does a little
//! CPU work per datagram and never awaits, and a thread of its own keeps it off the
//! runtime that serves HTTP.

pub mod admit;
pub mod counters;
pub mod dtls;
pub mod heard;
pub mod pending;
pub mod streams;

use std::io::{ErrorKind, IoSliceMut};
use std::net::{IpAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags};
use telemesh_proto::auth;
use telemesh_proto::record::Record;
use telemesh_proto::stream::{Lookup, Outcome, Presence};
use telemesh_proto::wire::Dialect;
use tokio_util::sync::CancellationToken;

use self::streams::{Entry, Table};
use crate::metrics::{DialectHandles, STORE_BEHIND, STORE_ERROR, STREAMS_FULL};
use crate::shared::{now_ns, Shared};
use crate::store::{history, Store, StoredRecord};

/// How often a listener waiting for datagrams wakes up to check for shutdown.
const POLL: Duration = Duration::from_millis(20);
const POLL_MS: u16 = POLL.as_millis() as u16;
/// Datagrams received per system call.
pub const BATCH: usize = 32;
/// Bytes per receive slot: larger than any valid datagram, so oversize ones are seen as
/// such, and room for what UDP GRO coalesces where the kernel does (`quinn-udp` asks).
const SLOT: usize = 64 * 1024;

/// One dialect's receive loop.
#[derive(Debug)]
pub struct Listener {
    dialect: Dialect,
    shared: Arc<Shared>,
    handles: DialectHandles,
    /// Device keys and replay windows; `None`: no device of this dialect has a key and
    /// none needs one.
    auth: Option<auth::Verifier>,
    /// Limits on new streams (`None`: none).
    admission: Option<admit::Admission>,
}

impl Listener {
    pub fn new(dialect: Dialect, shared: Arc<Shared>) -> Listener {
        let handles = shared.metrics.for_dialect(dialect);
        Listener { dialect, shared, handles, auth: None, admission: None }
    }

    /// Limits how many new streams a source address, and the dialect, may start ([`admit`]).
    pub fn with_admission(mut self, policy: admit::Policy) -> Listener {
        self.admission = admit::Admission::new(policy, now_ns());
        self
    }

    /// Verifies the authentication trailer of each datagram with `verifier` (see
    /// `proto::auth`): a device with a key must tag its datagrams; one without is let in
    /// or refused as the verifier's policy says.
    pub fn with_auth(mut self, verifier: auth::Verifier) -> Listener {
        self.auth = verifier.is_active().then_some(verifier);
        self
    }

    /// Receives until `shutdown`; returns the verifier, whose counters the node saves.
    ///
    /// Datagrams are taken up to [`BATCH`] per system call (`recvmmsg(2)` through
    /// `quinn-udp`), decoded, then queued under one lock of the stream table.
    pub fn run(mut self, socket: UdpSocket, shutdown: CancellationToken) -> Option<auth::Verifier> {
        let state = match quinn_udp::UdpSocketState::new((&socket).into()) {
            Ok(state) => state,
            Err(e) => {
                tracing::error!(dialect = %self.dialect, error = %e, "cannot set up the UDP socket");
                return self.auth;
            }
        };
        // Pages the kernel never writes to are never resident: a slot costs what it receives.
        let mut slots = vec![0u8; BATCH * SLOT];
        let mut meta = [quinn_udp::RecvMeta::default(); BATCH];
        while !shutdown.is_cancelled() {
            let mut bufs: Vec<IoSliceMut<'_>> = slots.chunks_mut(SLOT).map(IoSliceMut::new).collect();
            match state.recv((&socket).into(), &mut bufs, &mut meta) {
                Ok(n) => {
                    let arrival_ns = now_ns();
                    let datagrams = bufs.iter().zip(&meta).take(n).flat_map(|(buf, m)| {
                        // With UDP GRO a slot may hold several datagrams of one sender, `stride` apart.
                        buf[..m.len].chunks(m.stride.max(1)).map(move |d| (d, Some(m.addr.ip())))
                    });
                    self.receive(datagrams, arrival_ns);
                }
                // The socket is non-blocking (a batch is what the kernel holds now, so one
                // arrival time fits all of it): wait for the next datagram.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    let mut fds = [PollFd::new(socket.as_fd(), PollFlags::POLLIN)];
                    if let Err(e) = poll(&mut fds, POLL_MS) {
                        if e != nix::errno::Errno::EINTR {
                            tracing::warn!(dialect = %self.dialect, error = %e, "poll failed");
                            std::thread::sleep(POLL);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(dialect = %self.dialect, error = %e, "recv failed");
                    std::thread::sleep(POLL);
                }
            }
        }
        self.auth
    }

    /// Decodes, classifies and queues one datagram received at `arrival_ns`.
    pub fn handle(&mut self, bytes: &[u8], arrival_ns: u64) {
        self.receive(std::iter::once((bytes, None)), arrival_ns);
    }

    /// [`Listener::handle`] for a frame that came over a channel that authenticated its
    /// sender (DTLS with a client certificate): `check` binds the decoded record to that
    /// sender — an `Err(reason)` drops it and counts `reason` (the secure listener drops a
    /// frame whose client id is not its certificate's) — and what passes is stored as proved.
    pub fn handle_authenticated(
        &mut self,
        bytes: &[u8],
        arrival_ns: u64,
        check: impl FnOnce(&Record) -> Result<(), &'static str>,
    ) {
        let started = Instant::now();
        let decoded = self.decode(bytes, arrival_ns, None, check, true);
        self.queue(decoded.into_iter().collect(), started);
        self.count_received(1, bytes.len());
    }

    /// Decodes a batch of datagrams received at `arrival_ns` (with their senders), then
    /// queues what is valid under one lock of the table.
    fn receive<'a>(&mut self, datagrams: impl Iterator<Item = (&'a [u8], Option<IpAddr>)>, arrival_ns: u64) {
        let started = Instant::now();
        let (mut packets, mut total) = (0, 0);
        let decoded = datagrams
            .filter_map(|(bytes, source)| {
                packets += 1;
                total += bytes.len();
                self.decode(bytes, arrival_ns, source, |_| Ok(()), false)
            })
            .collect();
        self.queue(decoded, started);
        self.count_received(packets, total);
    }

    /// Counts datagrams received once their batch is queued, so that when the count stops
    /// moving every datagram it counts has been classified (`/v1/status` adds up).
    fn count_received(&self, packets: u64, bytes: usize) {
        self.handles.packets.inc_by(packets);
        self.handles.bytes.inc_by(bytes as u64);
    }

    /// Verifies and decodes one datagram; `None` if it was dropped (and counted).
    fn decode(
        &mut self,
        bytes: &[u8],
        arrival_ns: u64,
        source: Option<IpAddr>,
        check: impl FnOnce(&Record) -> Result<(), &'static str>,
        channel_proved: bool,
    ) -> Option<Decoded> {
        let (bytes, proved) = match self.auth.as_mut().map(|v| v.verify(bytes)) {
            None => (bytes, channel_proved),
            Some(Ok(verdict)) => (verdict.datagram(), channel_proved || matches!(verdict, auth::Verdict::Verified { .. })),
            Some(Err(refusal)) => {
                tracing::trace!(dialect = %self.dialect, error = %refusal, "unauthenticated datagram dropped");
                self.handles.count_drop(refusal.reason());
                return None;
            }
        };
        let record = match Record::from_datagram(self.dialect, bytes, arrival_ns, self.shared.iotstream_timestamp) {
            Ok(r) => r,
            Err(e) => {
                tracing::trace!(dialect = %self.dialect, error = %e, "malformed datagram dropped");
                self.handles.count_drop(e.reason());
                return None;
            }
        };
        if let Err(reason) = check(&record) {
            tracing::debug!(dialect = %self.dialect, stream = %record.stream, reason, "record refused");
            self.handles.count_drop(reason);
            return None;
        }
        Some(Decoded { record, proved, source, arrival_ns })
    }

    /// Classifies and queues decoded datagrams under one lock of the table; each is
    /// counted in the processing histogram at its share of the time since `started`.
    fn queue(&mut self, decoded: Vec<Decoded>, started: Instant) {
        let shared = Arc::clone(&self.shared);
        let store = shared.store.as_ref();
        let mut table = shared.table();
        let n = decoded.len();
        for d in decoded {
            self.queue_one(&mut table, store, d);
        }
        drop(table);
        let share = started.elapsed().as_secs_f64() / n.max(1) as f64;
        for _ in 0..n {
            shared.metrics.processing.observe(share);
        }
    }

    fn queue_one(&mut self, table: &mut Table, store: &dyn Store, d: Decoded) {
        let Decoded { record, proved, source, arrival_ns } = d;
        let shared = &*self.shared;
        if !table.has_room() {
            // The store is behind the datagrams, or failing: refuse rather than grow.
            self.handles.count_drop(STORE_BEHIND);
            return;
        }
        if !table.may_enter(&record.stream) {
            // 65,536 streams wait to leave memory (the store is slow or failing): streams in
            // memory go on, no other comes in to push more out.
            self.handles.count_drop(STREAMS_FULL);
            return;
        }
        // A stream this node has no state for, from a device that did not authenticate:
        // it may start only within the operator's budgets.
        if let (Some(admission), false) = (self.admission.as_mut(), proved) {
            match table.knows(record.stream, store) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(reason) = admission.admit(source, arrival_ns) {
                        self.handles.count_drop(reason);
                        return;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot load stream state");
                    self.handles.count_drop(STORE_ERROR);
                    return;
                }
            }
        }
        let (Entry { state, pending, in_flight, live, .. }, leaving) = match table.entry(record.stream, arrival_ns, store) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot load stream state");
                self.handles.count_drop(STORE_ERROR);
                return;
            }
        };
        let before = state.counters.clone();
        let held = (pending.len(), pending.bytes());
        let outcome = state.observe(&record, arrival_ns, &shared.reorder, || {
            // Rare (possible duplicates, late arrivals): reading what is unflushed is fine.
            let found = || {
                let mut unflushed = leaving.records(record.stream, store)?;
                unflushed.extend(crate::ingest::streams::unflushed(record.stream, live, in_flight.as_deref(), pending, store)?);
                history::lookup(store, &unflushed, &record)
            };
            found().unwrap_or_else(|e| {
                tracing::error!(error = %e, "store lookup failed; treating record as new");
                Lookup { presence: Presence::Absent, predecessor: None }
            })
        });
        self.handles.count_stream(&before, &state.counters);
        match outcome {
            Outcome::New { ext_seq, .. } | Outcome::Conflict { ext_seq } => {
                if matches!(outcome, Outcome::Conflict { .. }) {
                    self.handles.conflict.inc();
                    tracing::debug!(stream = %record.stream, seq = record.seq, "conflicting record kept");
                } else {
                    self.handles.new.inc();
                }
                pending.push(&StoredRecord { proved, ..StoredRecord::new(record, ext_seq, arrival_ns) });
            }
            Outcome::Duplicate => {
                self.handles.duplicate.inc();
                pending.add_copy(record, arrival_ns, proved);
            }
        }
        let grew = (pending.len().saturating_sub(held.0), pending.bytes().saturating_sub(held.1));
        table.queued(grew.0, grew.1);
    }
}

/// A datagram verified and decoded, waiting for the table.
struct Decoded {
    record: Record,
    proved: bool,
    source: Option<IpAddr>,
    arrival_ns: u64,
}
