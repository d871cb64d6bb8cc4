//! The audit service's contract: what the kernel sends it and what it promises.

use crate::services::ServiceInfo;
use serde::{Deserialize, Serialize};

/// One lifecycle or request event, as the kernel reports it to the audit service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch, from the kernel's clock.
    pub time_unix_ms: u64,
    /// Who acted: `kernel`, `uid:1000`, `brain:text-embedding`, …
    pub actor: String,
    /// What happened: `process.started`, `process.exited`, `invoke`, …
    pub action: String,
    /// What it happened to.
    pub resource: String,
    /// A short operator-readable detail (never customer content).
    pub detail: String,
}

/// What the audit service promises after [`Audit::append`] returns `Ok`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AppendReceipt {
    /// Sequence number of the first appended event.
    pub first_seq: u64,
    /// Number of events appended, all durable on disk.
    pub count: u64,
}

#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    Storage(String),
}

/// The audit service; the kernel is its only client.
#[tarpc::service]
pub trait Audit {
    async fn ready() -> ServiceInfo;
    /// Appends events; returns only once they are durable.
    async fn append(events: Vec<AuditEvent>) -> Result<AppendReceipt, AuditError>;
}
