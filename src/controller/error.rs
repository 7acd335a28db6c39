//! The one error type of the reconcilers. Each variant's name is the `error` label of
//! `sandbox_operator_reconcile_errors_total`, so variants name kinds of failure and never carry
//! object names into labels (the message may name them; the label does not).

use crate::client::ClientError;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// A call to a sandbox daemon failed.
    #[error("daemon: {0}")]
    Daemon(#[from] ClientError),
    /// The target cannot be resolved (no such Pod/Secret, or no core API on this server). Not
    /// retried quickly: the object is marked Stalled.
    #[error("target: {0}")]
    Target(String),
    /// The operator-wide token file cannot be read.
    #[error("token file: {0}")]
    TokenFile(String),
    /// The object lacks something the schema should have guaranteed (name, uid, namespace).
    #[error("invalid object: {0}")]
    InvalidObject(String),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// Deletion is waiting for the process to end.
    #[error("process still stopping: {0}")]
    CleanupPending(String),
}

impl Error {
    /// The metric label: the variant's name.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "Kube",
            Error::Daemon(_) => "Daemon",
            Error::Target(_) => "Target",
            Error::TokenFile(_) => "TokenFile",
            Error::InvalidObject(_) => "InvalidObject",
            Error::Finalizer(_) => "Finalizer",
            Error::CleanupPending(_) => "CleanupPending",
        }
    }
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            // Keep the inner kind so metrics say what really failed.
            F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner,
            other => Error::Finalizer(other.to_string()),
        }
    }
}

/// The reconcilers' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
