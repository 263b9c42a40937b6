//! A store for tests whose writes always fail, as on a full disk.

use std::sync::{Mutex, PoisonError};

use telemesh_proto::mesh::{RecordKey, StreamSum, Summary, Table, WindowId};
use telemesh_proto::record::StreamId;
use telemesh_proto::stream;
use telemesh_proto::window;

use super::{Encoded, Logged, PartLoc, Sealed, Sealing, Store, StoreError, StoredRecord};

/// A store whose writes always fail (a full disk, say), though writing nothing succeeds;
/// reads find nothing. It notes the calls that make records durable or let the log drop
/// them ([`Broken::calls`]).
#[derive(Debug, Default)]
pub struct Broken {
    calls: Mutex<Vec<&'static str>>,
}

impl Broken {
    /// `flush` and `release_wal`, in the order they were called.
    pub fn calls(&self) -> Vec<&'static str> {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn note(&self, call: &'static str) {
        self.calls.lock().unwrap_or_else(PoisonError::into_inner).push(call);
    }
}

fn broken() -> StoreError {
    StoreError::Sled(sled::Error::Unsupported("disk full".into()))
}

impl Store for Broken {
    fn append(&self, chunks: &[Encoded], logged: &[Logged<'_>], states: &[(StreamId, stream::State)]) -> Result<Option<(u64, Vec<PartLoc>)>, StoreError> {
        // Writing nothing writes nothing, on a full disk too.
        if chunks.is_empty() && logged.is_empty() && states.is_empty() {
            return Ok(None);
        }
        Err(broken())
    }
    fn read_live(&self, _: StreamId, _: u64, _: PartLoc, _: Option<PartLoc>) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn release_wal(&self, _: u64) -> Result<(), StoreError> {
        self.note("release_wal");
        Err(broken())
    }
    fn window(&self, _: StreamId, _: u64) -> Result<Vec<StoredRecord>, StoreError> {
        Ok(Vec::new())
    }
    fn seal_windows(&self, _: &[Sealing<'_>]) -> Result<Vec<Option<window::Root>>, StoreError> {
        Err(broken())
    }
    fn sealed(&self, _: StreamId, _: u64) -> Result<Option<Sealed>, StoreError> {
        Ok(None)
    }
    fn summary(&self, _: WindowId) -> Result<Option<Summary>, StoreError> {
        Ok(None)
    }
    fn summaries(&self) -> Result<Vec<Summary>, StoreError> {
        Ok(Vec::new())
    }
    fn summaries_of(&self, _: StreamId, _: u64, _: usize) -> Result<Vec<Summary>, StoreError> {
        Ok(Vec::new())
    }
    fn stream_sum(&self, _: StreamId) -> Result<Option<StreamSum>, StoreError> {
        Ok(None)
    }
    fn stream_sums(&self, _: Option<StreamId>, _: usize) -> Result<Vec<(StreamId, StreamSum)>, StoreError> {
        Ok(Vec::new())
    }
    fn streams(&self, _: Option<StreamId>, _: usize) -> Result<Vec<StreamId>, StoreError> {
        Ok(Vec::new())
    }
    fn sealed_totals(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add_provenance(
        &self,
        _: WindowId,
        _: &window::Root,
        _: &Table,
    ) -> Result<Option<Summary>, StoreError> {
        Err(broken())
    }
    fn add_rows(
        &self,
        _: WindowId,
        _: &[RecordKey],
        _: &Table,
    ) -> Result<Option<(Summary, usize)>, StoreError> {
        Err(broken())
    }
    fn window_at_or_after(&self, _: StreamId, _: u64) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    fn window_before(&self, _: StreamId, _: u64) -> Result<Option<u64>, StoreError> {
        Ok(None)
    }
    fn state(&self, _: StreamId) -> Result<Option<stream::State>, StoreError> {
        Ok(None)
    }
    fn states(&self) -> Result<Vec<(StreamId, stream::State)>, StoreError> {
        Ok(Vec::new())
    }
    fn node_id(&self) -> &str {
        "broken"
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.note("flush");
        Err(broken())
    }
    fn corrupt_values(&self) -> u64 {
        0
    }
}
