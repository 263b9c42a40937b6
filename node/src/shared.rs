//! What every plane of a running node shares: the store, the table of streams that
//! ingest fills and the flush drains, the metrics, and the clock.
//!
//! It lives here, above the planes, so that ingest, the mesh, the API and the metrics each
//! depend on it and not on one another.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use telemesh_proto::record::{StreamId, TimestampUnit};
use telemesh_proto::stream;

use crate::ingest::streams::Table;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError, StoredRecord};

/// What listeners, the HTTP API and the maintenance task share.
#[derive(Debug)]
pub struct Shared {
    pub store: Arc<dyn Store>,
    pub table: Mutex<Table>,
    pub metrics: Metrics,
    pub reorder: stream::Config,
    pub iotstream_timestamp: TimestampUnit,
    /// Signalled after a flush that may have sealed windows (the mesh announces them).
    pub sealed: Arc<tokio::sync::Notify>,
}

impl Shared {
    /// The stream table; a listener that panicked cannot leave it half-updated in a
    /// way that matters (each update is one state), so poisoning is ignored.
    pub fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The records of `stream` not yet in a chunk or sealed window (a copy: the table is
    /// held only to take those in memory and where the others are in the log). Read them
    /// before the store, so that a window sealed meanwhile is found there.
    pub fn unflushed_of(&self, stream: &StreamId) -> Result<Vec<StoredRecord>, StoreError> {
        let unflushed = self.table().unflushed_of(stream);
        unflushed.read(self.store.as_ref())
    }
}

/// Unix time in nanoseconds by the system clock.
pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}
