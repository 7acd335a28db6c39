//! The operator: reconcilers, target resolution, the shared daemon event streams.

pub mod daemons;
