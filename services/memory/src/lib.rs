//! sios-memory: customer-owned memory. The only process that opens
//! `memory.redb` and the subject-key file.
//!
//! Items live in namespaces and belong to one data subject each; each
//! subject's values, metadata and embeddings are encrypted with that
//! subject's own key, so erasing a subject is destroying one key (and
//! deleting its rows). Exact cosine k-NN search runs over an in-memory index
//! of the embeddings. The contract (trait, messages, limits, export lines) is
//! `sios_ipc::memory`; the export format is specified in `EXPORT.md`.
//!
//! # Layout
//! - [`store`]: [`MemoryStore`]: redb tables, writes, reads, erasure and its
//!   crash recovery, compaction.
//! - [`keys`]: the subject-key file (fixed slots, zeroed in place on erasure).
//! - [`seal`]: row encoding and XChaCha20-Poly1305 sealing.
//! - [`index`]: the in-memory exact k-NN index, and where it stops scaling.
//! - [`jsonl`]: export/import of JSON Lines files straight against a store.
//!
//! # Files in the data directory (0700)
//! - `memory.redb` (0600): rows; values, metadata and embeddings only as
//!   ciphertext; subject handles instead of subject ids.
//! - `subject-keys` (0600): one slot per subject: id, handle, key.
//!
//! No plaintext value, metadata or embedding and no key is ever written to
//! memory.redb, so redb's copy-on-write pages cannot hold one; the only key
//! bytes on disk are in live slots of the key file (see [`keys`]).

pub mod index;
pub mod jsonl;
pub mod keys;
pub mod quota;
pub mod seal;
pub mod store;

pub use quota::Quotas;
pub use store::{DATABASE_FILE, EraseStop, MemoryStore};
