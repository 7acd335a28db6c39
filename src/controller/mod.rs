//! The operator: reconcilers, target resolution, the shared daemon event streams.
//!
//! - [`run`]: the `sandbox-operator run` process (controllers, metrics/health, leader election,
//!   shutdown).
//! - [`process`]: the `SandboxProcess` reconciler.
//! - [`daemons`]: one `/events` stream per daemon, shared by every object on it.
//! - [`target`], [`conditions`], [`metrics`], [`events`], [`error`]: one job each.

pub mod conditions;
pub mod daemons;
pub mod error;
pub mod events;
pub mod leader;
pub mod metrics;
pub mod object;
pub mod process;
pub mod pty;
pub mod run;
pub mod target;

pub use error::Error;
pub use run::{Config, run};
