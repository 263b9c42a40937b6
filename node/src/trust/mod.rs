//! Trust: who may speak. Today the node's own overlay identity; membership of the mesh
//! and signed provenance come here.

pub mod identity;
