//! sios-audit: the Open Audit Record. The only process that opens
//! `audit.redb` and the only holder of the operator's signing key.
//!
//! The format is specified in `OAR.md` next to this crate; every module
//! below implements one section of it.
//!
//! # Layout
//! - [`cbor`]: the deterministic CBOR subset records are written in (§3.1).
//! - [`record`]: one record, its fields, canonical bytes and rules (§3).
//! - [`linking`]: keyed hashes of customer content, per data subject (§3.4).
//! - [`merkle`]: the RFC 9162 tree, inclusion and consistency proofs (§4).
//! - [`keys`]: ML-DSA-65 key pairs and their files (§6).
//! - [`checkpoint`]: C2SP tlog-checkpoints in C2SP signed notes (§5).
//! - [`store`]: `audit.redb`, group commit, recovery, reads ([`AuditLog`]).
//! - [`bundle`]: the export bundle format, writer and reader (§7).
//! - [`export`]: writing a bundle from a log or from any [`export::Source`].
//! - [`verify`]: offline verification of a bundle (§8).
//! - [`proof`]: checking single inclusion / consistency proofs offline.
//! - [`progress`]: how far an export or a verification got, for a display.
//! - [`service`]: the tarpc `Audit` service over an [`AuditLog`].

pub mod bundle;
pub mod cbor;
pub mod checkpoint;
pub mod export;
pub mod keys;
pub mod linking;
pub mod merkle;
pub mod progress;
pub mod proof;
pub mod record;
pub mod resign;
pub mod service;
pub mod store;
pub mod verify;
mod writer_queue;
mod zerofill;

pub use store::{AuditLog, OpenError};

/// Bytes as lower-case hex, the way OAR.md (§2) and every report of this
/// crate write hashes, key ids and signatures.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
