//! telemesh's protocol core: the wire dialects, normalised records and the per-stream
//! ingest state. Pure and deterministic: no sockets, no files, no clock — time is passed
//! in — so everything here is tested without I/O, and the node is a thin shell around it.

pub mod auth;
pub mod budget;
pub mod columns;
pub mod impair;
pub mod merkle;
pub mod mesh;
pub mod record;
pub mod repair;
pub mod stream;
pub mod window;
pub mod wire;

pub use record::{Kind, Record, StreamId};
pub use wire::Dialect;
