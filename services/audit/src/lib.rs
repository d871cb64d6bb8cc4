//! sios-audit: the only process that opens `audit.redb`.
//!
//! This is the foundation's audit service: a durable, gap-free, append-only
//! event log with group commit. The Open Audit Record (canonical records,
//! hash chain, Merkle tree, ML-DSA-65 checkpoints) is built on it.

pub mod log;
pub use log::AuditLog;
