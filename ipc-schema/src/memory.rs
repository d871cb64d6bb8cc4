//! The memory service's contract: what the kernel sends `sios-memory` and
//! what it promises back, plus the export line format every party shares.
//!
//! ```text
//!  sios memory … ──Kernel──▶ sios-kernel ──(policy, audit intent)──Memory──▶ sios-memory
//! ```
//! Only the kernel is a client of [`Memory`]. It decides each request with
//! the policy and records the intent in the audit log before routing it.
//!
//! # Model
//! An [`Item`] lives at (namespace, key) and belongs to exactly one data
//! subject. Its value, metadata and embedding are encrypted at rest with that
//! subject's own key; [`Memory::erase_subject`] destroys the key and every
//! item of the subject, in every namespace. Namespaces, keys and subject ids
//! are identifiers (they index, order and route), not content: keep personal
//! data in values and metadata.
//!
//! # When is a write acknowledged?
//! [`Memory::put`], [`Memory::delete`], [`Memory::erase_subject`] and
//! [`Memory::import`] answer `Ok` only after their redb transaction is
//! committed with `Durability::Immediate` (on disk when the commit returns)
//! and any subject key they created or destroyed is written and `fsync`ed:
//! an acknowledged write survives `kill -9` and power loss (assuming a disk
//! that honours flushes). An `Err` means nothing was changed, except for
//! `erase_subject`, which once started always completes (on restart if
//! need be).
//!
//! # Bounds
//! Every message is bounded: one value ≤ [`MAX_VALUE_BYTES`], one page of
//! [`Memory::list`] / [`Memory::export`] ≤ [`MAX_PAGE_ITEMS`] items and about
//! [`MAX_PAGE_BYTES`], search ≤ [`MAX_SEARCH_K`] hits, import ≤
//! [`MAX_IMPORT_ITEMS`] items and about [`MAX_PAGE_BYTES`] per call (use
//! [`import_chunks`]). With the default 16 MiB frame limit every message fits.
//!
//! # Export format
//! JSON Lines of [`ExportLine`]: one header, then one item per line. The
//! specification is `services/memory/EXPORT.md`; this module is its codec.

use crate::services::ServiceInfo;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_BYTES: usize = 128;
/// Longest item key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Longest data-subject id, in bytes.
pub const MAX_SUBJECT_BYTES: usize = 128;
/// Largest value, in bytes (text is counted as UTF-8).
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most metadata entries on one item.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_BYTES: usize = 128;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 1024;
/// Most dimensions of an embedding.
pub const MAX_EMBEDDING_DIM: usize = 4096;
/// Most items in one list or export page.
pub const MAX_PAGE_ITEMS: u32 = 1000;
/// Page size used when a request asks for 0 items.
pub const DEFAULT_PAGE_ITEMS: u32 = 100;
/// A page stops growing once its items' [`Item::approx_bytes`] pass this (a
/// page always holds at least one item, and one item is at most
/// [`MAX_ITEM_BYTES`]).
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;
/// Most hits one search returns.
pub const MAX_SEARCH_K: u32 = 100;
/// The largest [`Item::approx_bytes`] an item can have: every field at its
/// limit (about 1.1 MiB).
pub const MAX_ITEM_BYTES: usize = 64
    + MAX_NAMESPACE_BYTES
    + MAX_KEY_BYTES
    + MAX_SUBJECT_BYTES
    + MAX_VALUE_BYTES
    + MAX_METADATA_ENTRIES * (16 + MAX_METADATA_KEY_BYTES + MAX_METADATA_VALUE_BYTES)
    + 4 * MAX_EMBEDDING_DIM;
/// The most bytes one search answer can take: values up to
/// [`MAX_PAGE_BYTES`] in all (the rest are left out), and each of at most
/// [`MAX_SEARCH_K`] hits with everything but its value at its limit.
pub const MAX_SEARCH_ANSWER_BYTES: usize =
    MAX_PAGE_BYTES + MAX_SEARCH_K as usize * (MAX_ITEM_BYTES - MAX_VALUE_BYTES);
/// Most items in one import call.
pub const MAX_IMPORT_ITEMS: usize = 1000;
/// Most metadata filter entries in one search.
pub const MAX_SEARCH_FILTERS: usize = 16;
/// Most namespaces one search may be restricted to.
pub const MAX_SEARCH_NAMESPACES: usize = 256;

/// Default `[memory] owner_quota_mib`: what one owner's namespaces may hold
/// together (see [`quota_owner`]), in MiB of stored items.
pub const DEFAULT_OWNER_QUOTA_MIB: u64 = 512;
/// Default `[memory] capacity_mib`: what the whole store may hold, in MiB.
/// Every embedding is also held in RAM by the search index, so this stays
/// well inside the service's memory limit (`[sandbox.services] memory_mib`,
/// 4096 by default, of which redb's cache takes up to 1 GiB).
pub const DEFAULT_CAPACITY_MIB: u64 = 2048;
/// Default `[memory] max_items`: items in the whole store (each costs the
/// index a few hundred bytes of RAM beyond its embedding).
pub const DEFAULT_MAX_ITEMS: u64 = 1_000_000;

/// The principal a namespace belongs to, if its name starts with one:
/// `client:alice/notes` is `client:alice`'s, `brain:legal/cache` is
/// `brain:legal`'s. Other namespaces (`tenant/acme`) belong to nobody and
/// are usable only through grants in the config.
pub fn namespace_principal(namespace: &str) -> Option<&str> {
    namespace
        .split('/')
        .next()
        .filter(|first| first.starts_with("client:") || first.starts_with("brain:"))
}

/// Whose quota a namespace's items count against: its principal, so that
/// making more namespaces gains nobody room; a namespace without one is
/// its own (only the config's grants make those writable, one by one).
pub fn quota_owner(namespace: &str) -> &str {
    namespace_principal(namespace).unwrap_or(namespace)
}

/// The `format` field of an export header.
pub const EXPORT_FORMAT: &str = "sios-memory-export";
/// The export format version this build writes and reads.
pub const EXPORT_VERSION: u32 = 1;

/// A value: UTF-8 text or arbitrary bytes. The distinction survives storage,
/// export and import.
///
/// In JSON: `{"text": "…"}` or `{"base64": "…"}` (RFC 4648 §4, padded).
/// In bincode: the variant index, then a string or a byte string.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
pub enum Value {
    #[serde(rename = "text")]
    Text(String),
    #[serde(rename = "base64")]
    Bytes(#[serde(with = "bytes_or_base64")] Vec<u8>),
}

impl Value {
    /// The value's bytes (text as UTF-8).
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Text(text) => text.as_bytes(),
            Value::Bytes(bytes) => bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }
}

impl fmt::Debug for Value {
    /// Length only: values are customer content and must not reach logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(text) => write!(f, "Text({} bytes)", text.len()),
            Value::Bytes(bytes) => write!(f, "Bytes({} bytes)", bytes.len()),
        }
    }
}

/// An embedding vector.
///
/// In JSON an array of numbers (each the shortest decimal that reads back as
/// the same `f32`); in bincode one packed little-endian byte string, because
/// bincode encodes a `Vec<f32>` element by element (see DESIGN.md).
#[derive(Clone, PartialEq, Default)]
pub struct Embedding(pub Vec<f32>);

impl fmt::Debug for Embedding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Embedding({} dims)", self.0.len())
    }
}

impl Serialize for Embedding {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.0.serialize(serializer)
        } else {
            let bytes: Vec<u8> = self.0.iter().flat_map(|x| x.to_le_bytes()).collect();
            serializer.serialize_bytes(&bytes)
        }
    }
}

impl<'de> Deserialize<'de> for Embedding {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(Embedding(Vec::<f32>::deserialize(deserializer)?))
        } else {
            let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
            if bytes.len() % 4 != 0 {
                return Err(serde::de::Error::invalid_length(
                    bytes.len(),
                    &"a multiple of 4 bytes (packed little-endian f32)",
                ));
            }
            Ok(Embedding(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ))
        }
    }
}

/// Metadata: string pairs, always in key order (so every encoding of an item
/// is deterministic).
pub type Metadata = BTreeMap<String, String>;

/// One stored item, as `get`, `list` and `export` return it and `import`
/// takes it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Item {
    pub namespace: String,
    pub key: String,
    /// The data subject the item is about; its key encrypts the item.
    pub subject: String,
    pub value: Value,
    pub metadata: Metadata,
    /// When the item was first stored, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// When the item was last stored, milliseconds since the Unix epoch.
    pub updated_ms: u64,
    pub embedding: Option<Embedding>,
}

impl Item {
    /// Roughly how many bytes this item takes in a message: what page and
    /// import-chunk budgets count.
    pub fn approx_bytes(&self) -> usize {
        64 + self.namespace.len()
            + self.key.len()
            + self.subject.len()
            + self.value.len()
            + self
                .metadata
                .iter()
                .map(|(k, v)| 16 + k.len() + v.len())
                .sum::<usize>()
            + self.embedding.as_ref().map_or(0, |e| 4 * e.0.len())
    }
}

/// A request to store one item (replacing any item at the same key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PutRequest {
    pub namespace: String,
    pub key: String,
    /// The data subject the item is about. The kernel passes it; an item
    /// replaced under another subject moves to that subject.
    pub subject: String,
    pub value: Value,
    pub metadata: Metadata,
    /// Finite, not all zero, at most [`MAX_EMBEDDING_DIM`] dimensions.
    pub embedding: Option<Embedding>,
}

/// What a durable put did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PutResponse {
    /// True if no item was at that key before.
    pub created: bool,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// One page of a namespace, in key order (bytewise UTF-8).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub namespace: String,
    /// Start after this key (the previous page's `next`); `None` starts at
    /// the beginning. The cursor is a key, so it stays valid whatever is
    /// written meanwhile: every item present for the whole walk is returned
    /// exactly once.
    pub after: Option<String>,
    /// Items wanted, 1 to [`MAX_PAGE_ITEMS`] (0 means [`DEFAULT_PAGE_ITEMS`],
    /// more is capped). A page may be shorter because of [`MAX_PAGE_BYTES`].
    pub limit: u32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ListPage {
    pub items: Vec<Item>,
    /// The cursor for the next page; `None` when this page is the last.
    pub next: Option<String>,
}

/// Exact k-nearest-neighbour search by cosine similarity.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SearchRequest {
    /// The query vector; only items whose embedding has the same number of
    /// dimensions are compared.
    pub query: Embedding,
    /// Hits wanted, 1 to [`MAX_SEARCH_K`].
    pub k: u32,
    /// Only these namespaces (at most [`MAX_SEARCH_NAMESPACES`]); `None`
    /// searches every namespace. The kernel passes the namespaces the policy
    /// grants the caller. Names that hold no items simply match nothing.
    pub namespaces: Option<Vec<String>>,
    /// Only items whose metadata has every one of these pairs.
    pub metadata: Metadata,
    /// Return each hit's value too (values that would push the response past
    /// [`MAX_PAGE_BYTES`] are left out and counted in `values_omitted`).
    pub include_values: bool,
}

/// One search hit.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SearchHit {
    pub namespace: String,
    pub key: String,
    pub subject: String,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    pub metadata: Metadata,
    pub created_ms: u64,
    pub updated_ms: u64,
    /// Present when asked for and within the response budget.
    pub value: Option<Value>,
}

/// Hits best first: higher score first, equal scores by (namespace, key).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SearchResponse {
    pub hits: Vec<SearchHit>,
    /// Embeddings compared (items with the query's dimension that passed the
    /// filters).
    pub scanned: u64,
    /// Hits whose value was asked for but left out to bound the response.
    pub values_omitted: u32,
}

/// What an erasure removed.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EraseReport {
    pub subject: String,
    /// Items deleted, across all namespaces.
    pub items_erased: u64,
    /// Namespaces that held items of the subject, in order.
    pub namespaces: Vec<String>,
    /// True if the subject had a key and it was destroyed; false if the
    /// service held nothing about the subject.
    pub key_destroyed: bool,
    /// Set by the kernel: true if the audit log held a linking key for the
    /// subject and it is now removed. With `key_destroyed` false, this is
    /// the retry that finished an earlier, unfinished erasure.
    #[serde(default)]
    pub audit_link_removed: bool,
}

/// What to export: one namespace, or everything about one data subject.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportScope {
    Namespace(String),
    Subject(String),
}

/// Where an export page ends. Items are exported in (namespace, key) order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExportCursor {
    pub namespace: String,
    pub key: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExportRequest {
    pub scope: ExportScope,
    /// Start after this item (the previous page's `next`).
    pub after: Option<ExportCursor>,
    /// As [`ListRequest::limit`].
    pub limit: u32,
}

/// One page of an export. Plaintext by design: exporting is the customer
/// taking their data.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ExportPage {
    pub items: Vec<Item>,
    pub next: Option<ExportCursor>,
}

/// Items to restore exactly (timestamps included), replacing any item at the
/// same (namespace, key). All or nothing: one durable transaction.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ImportRequest {
    /// At most [`MAX_IMPORT_ITEMS`] and about [`MAX_PAGE_BYTES`].
    pub items: Vec<Item>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct ImportReport {
    /// Items that were not there before.
    pub created: u64,
    /// Items that replaced one at the same (namespace, key).
    pub replaced: u64,
}

/// What a compaction did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CompactReport {
    /// memory.redb's size on disk before and after, in bytes allocated
    /// (the file may be sparse: its length can exceed this).
    pub database_bytes_before: u64,
    pub database_bytes_after: u64,
    /// The subject-key file's size before and after, in bytes.
    pub key_file_bytes_before: u64,
    pub key_file_bytes_after: u64,
}

/// Which kind of name was refused.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NameKind {
    Namespace,
    Key,
    Subject,
    MetadataKey,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Namespace => "namespace",
            NameKind::Key => "key",
            NameKind::Subject => "subject id",
            NameKind::MetadataKey => "metadata key",
        })
    }
}

/// Why the memory service refused or failed a request.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum MemoryError {
    #[error("invalid {kind} {name:?}: {reason}")]
    InvalidName {
        kind: NameKind,
        /// The refused name, cut to 80 bytes.
        name: String,
        reason: String,
    },
    #[error(
        "no namespace `{namespace}` holds any items (a namespace exists from its first put until its last item goes); check the name"
    )]
    UnknownNamespace { namespace: String },
    #[error("no item `{key}` in namespace `{namespace}`")]
    NotFound { namespace: String, key: String },
    /// The message leaves the id out: it is also recorded in the audit
    /// log, which outlives an erasure (the caller knows whom it asked about).
    #[error(
        "the memory service holds nothing about that data subject (never stored, or erased already)"
    )]
    UnknownSubject { subject: String },
    #[error("{what} is {size}, over the limit of {limit}")]
    TooLarge { what: String, size: u64, limit: u64 },
    #[error("invalid memory request: {0}")]
    Invalid(String),
    #[error("memory storage failed: {0}; the service log has details")]
    Storage(String),
    /// Set by the kernel: the policy refused the request (never by the
    /// memory service itself).
    #[error("denied by policy: {reason}")]
    Denied { reason: String },
    /// Set by the kernel: the memory service did not answer.
    #[error("the memory service is unavailable ({0}); retry once `sios status` shows it ready")]
    Unavailable(String),
    /// Set by the kernel: the requests in flight to the memory service
    /// held its whole share of bytes for the request's whole timeout, so
    /// this one was never sent (see `[sandbox.services] memory_mib`).
    #[error("the memory service is busy ({0}); nothing was done: retry later")]
    Busy(String),
    /// A write would take its owner, or the whole store, past a limit the
    /// operator set; nothing of it was stored.
    #[error(
        "{scope} would hold {would} {unit}, over its limit of {limit}; nothing was stored: delete items (`sios memory rm`) or ask the operator to raise `[memory] {setting}` in the config"
    )]
    QuotaExceeded {
        /// `memory of client:alice` or `the memory store`.
        scope: String,
        would: u64,
        limit: u64,
        /// `bytes` or `items`.
        unit: String,
        /// The config setting that sets the limit.
        setting: String,
    },
    /// Set by the kernel: an erasure did part of its work. Erasing again is
    /// harmless and finishes it.
    #[error(
        "the erasure is not finished: {0}; run `sios memory erase-subject` for the same subject \
         to finish it"
    )]
    EraseUnfinished(String),
}

impl MemoryError {
    /// A negative answer (nothing there) rather than a failure.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            MemoryError::UnknownNamespace { .. }
                | MemoryError::NotFound { .. }
                | MemoryError::UnknownSubject { .. }
        )
    }

    /// The request itself was wrong (a bad name, a value too large, a
    /// malformed query): fix the request, do not retry it.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            MemoryError::InvalidName { .. }
                | MemoryError::TooLarge { .. }
                | MemoryError::Invalid(_)
        )
    }
}

/// The memory service; the kernel is its only client.
#[tarpc::service]
pub trait Memory {
    /// The readiness probe: answers once recovery (finishing any interrupted
    /// erasure) is done and the store is open.
    async fn ready() -> ServiceInfo;
    /// Stores one item, replacing any at the same key; durable when `Ok`.
    async fn put(request: PutRequest) -> Result<PutResponse, MemoryError>;
    /// One item. `UnknownNamespace` or `NotFound` when it is not there.
    async fn get(namespace: String, key: String) -> Result<Item, MemoryError>;
    /// One page of a namespace in key order.
    async fn list(request: ListRequest) -> Result<ListPage, MemoryError>;
    /// Deletes one item; durable when `Ok`. `NotFound` if it was not there.
    async fn delete(namespace: String, key: String) -> Result<(), MemoryError>;
    /// Exact cosine k-NN over stored embeddings.
    async fn search(request: SearchRequest) -> Result<SearchResponse, MemoryError>;
    /// Destroys the subject's key and deletes all its items in every
    /// namespace; durable when `Ok`. Erasing an unknown subject is not an
    /// error: the report says nothing was held.
    async fn erase_subject(subject: String) -> Result<EraseReport, MemoryError>;
    /// One page of a namespace's or a subject's items, plaintext.
    async fn export(request: ExportRequest) -> Result<ExportPage, MemoryError>;
    /// Restores items exactly (one chunk of an export); durable when `Ok`.
    async fn import(request: ImportRequest) -> Result<ImportReport, MemoryError>;
    /// Rewrites memory.redb and the subject-key file without their free
    /// space. Blocks other requests while it runs.
    async fn compact() -> Result<CompactReport, MemoryError>;
}

// ---------------------------------------------------------------------------
// Validation, shared by the service (which enforces it) and its clients
// (which can refuse early with the same words).

fn invalid(kind: NameKind, name: &str, reason: impl Into<String>) -> MemoryError {
    let mut shown = name.to_owned();
    if shown.len() > 80 {
        let mut cut = 80;
        while !shown.is_char_boundary(cut) {
            cut -= 1;
        }
        shown.truncate(cut);
        shown.push('…');
    }
    MemoryError::InvalidName {
        kind,
        name: shown,
        reason: reason.into(),
    }
}

fn check_identifier(
    kind: NameKind,
    name: &str,
    max: usize,
    extra: &str,
) -> Result<(), MemoryError> {
    if name.is_empty() || name.len() > max {
        return Err(invalid(
            kind,
            name,
            format!("must be 1 to {max} bytes long"),
        ));
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return Err(invalid(
            kind,
            name,
            "must start with an ASCII letter or digit",
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || extra.contains(*c)))
    {
        return Err(invalid(
            kind,
            name,
            format!("{bad:?} is not allowed (use ASCII letters, digits and {extra})"),
        ));
    }
    Ok(())
}

/// A namespace: 1–128 bytes of ASCII letters, digits and `-_.:@/`, starting
/// with a letter or digit, without `//` or a trailing `/`. Convention:
/// `tenant/<id>`, `brain/<name>`, `client:<name>/…`. Namespace names are
/// recorded in the audit log, which outlives any erasure: never name one
/// after a person (an item's data subject is its `subject` field).
pub fn validate_namespace(namespace: &str) -> Result<(), MemoryError> {
    check_identifier(
        NameKind::Namespace,
        namespace,
        MAX_NAMESPACE_BYTES,
        "-_.:@/",
    )?;
    if namespace.contains("//") || namespace.ends_with('/') {
        return Err(invalid(
            NameKind::Namespace,
            namespace,
            "must not contain an empty `/` segment",
        ));
    }
    Ok(())
}

/// A data-subject id: 1–128 bytes of ASCII letters, digits and `-_.:@+=/`,
/// starting with a letter or digit (fits UUIDs, e-mail addresses, URNs).
pub fn validate_subject(subject: &str) -> Result<(), MemoryError> {
    check_identifier(NameKind::Subject, subject, MAX_SUBJECT_BYTES, "-_.:@+=/")
}

/// An item key: 1–512 bytes of UTF-8 without control characters.
pub fn validate_key(key: &str) -> Result<(), MemoryError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(invalid(
            NameKind::Key,
            key,
            format!("must be 1 to {MAX_KEY_BYTES} bytes long"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(
            NameKind::Key,
            key,
            "must not contain control characters",
        ));
    }
    Ok(())
}

fn too_large(what: impl Into<String>, size: usize, limit: usize) -> MemoryError {
    MemoryError::TooLarge {
        what: what.into(),
        size: size as u64,
        limit: limit as u64,
    }
}

/// Metadata: at most [`MAX_METADATA_ENTRIES`] pairs; keys 1–128 bytes of ASCII
/// letters, digits and `-_.:/`; values at most 1024 bytes of UTF-8.
pub fn validate_metadata(metadata: &Metadata) -> Result<(), MemoryError> {
    if metadata.len() > MAX_METADATA_ENTRIES {
        return Err(too_large(
            "metadata (entries)",
            metadata.len(),
            MAX_METADATA_ENTRIES,
        ));
    }
    for (key, value) in metadata {
        check_identifier(NameKind::MetadataKey, key, MAX_METADATA_KEY_BYTES, "-_.:/")?;
        if value.len() > MAX_METADATA_VALUE_BYTES {
            return Err(too_large(
                format!("metadata value `{key}` (bytes)"),
                value.len(),
                MAX_METADATA_VALUE_BYTES,
            ));
        }
    }
    Ok(())
}

/// An embedding (stored or query): 1 to [`MAX_EMBEDDING_DIM`] finite numbers,
/// not all zero (cosine similarity is undefined for the zero vector).
pub fn validate_embedding(embedding: &Embedding) -> Result<(), MemoryError> {
    let dims = embedding.0.len();
    if dims == 0 {
        return Err(MemoryError::Invalid(
            "an embedding needs at least one dimension".into(),
        ));
    }
    if dims > MAX_EMBEDDING_DIM {
        return Err(too_large("embedding (dimensions)", dims, MAX_EMBEDDING_DIM));
    }
    if let Some(i) = embedding.0.iter().position(|x| !x.is_finite()) {
        return Err(MemoryError::Invalid(format!(
            "embedding element {i} is {}, not a finite number",
            embedding.0[i]
        )));
    }
    if embedding.0.iter().all(|x| *x == 0.0) {
        return Err(MemoryError::Invalid(
            "the zero vector has no direction; cosine similarity is undefined for it".into(),
        ));
    }
    Ok(())
}

/// Everything about one item that a put or import must satisfy.
pub fn validate_item_parts(
    namespace: &str,
    key: &str,
    subject: &str,
    value: &Value,
    metadata: &Metadata,
    embedding: Option<&Embedding>,
) -> Result<(), MemoryError> {
    validate_namespace(namespace)?;
    validate_key(key)?;
    validate_subject(subject)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(too_large("value (bytes)", value.len(), MAX_VALUE_BYTES));
    }
    validate_metadata(metadata)?;
    if let Some(embedding) = embedding {
        validate_embedding(embedding)?;
    }
    Ok(())
}

impl PutRequest {
    pub fn validate(&self) -> Result<(), MemoryError> {
        validate_item_parts(
            &self.namespace,
            &self.key,
            &self.subject,
            &self.value,
            &self.metadata,
            self.embedding.as_ref(),
        )
    }
}

impl Item {
    pub fn validate(&self) -> Result<(), MemoryError> {
        validate_item_parts(
            &self.namespace,
            &self.key,
            &self.subject,
            &self.value,
            &self.metadata,
            self.embedding.as_ref(),
        )
    }
}

/// Splits items into import requests that respect [`MAX_IMPORT_ITEMS`] and
/// [`MAX_PAGE_BYTES`] (an item larger than the byte budget goes alone).
pub fn import_chunks(items: Vec<Item>) -> Vec<ImportRequest> {
    let mut chunker = ImportChunker::default();
    let mut chunks: Vec<ImportRequest> = items
        .into_iter()
        .filter_map(|item| chunker.push(item))
        .collect();
    chunks.extend(chunker.finish());
    chunks
}

// ---------------------------------------------------------------------------
// Export lines (JSON Lines; spec in services/memory/EXPORT.md).

/// The first line of an export.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExportHeader {
    /// Always [`EXPORT_FORMAT`].
    pub format: String,
    /// [`EXPORT_VERSION`] when written by this build.
    pub version: u32,
    /// When the export started, milliseconds since the Unix epoch.
    pub exported_at_ms: u64,
    pub scope: ExportScope,
}

impl ExportHeader {
    pub fn new(scope: ExportScope, exported_at_ms: u64) -> ExportHeader {
        ExportHeader {
            format: EXPORT_FORMAT.into(),
            version: EXPORT_VERSION,
            exported_at_ms,
            scope,
        }
    }
}

/// One line of an export file: `{"type":"header",…}` or `{"type":"item",…}`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExportLine {
    Header(ExportHeader),
    Item(Item),
}

/// Why an export line could not be read.
#[derive(thiserror::Error, Debug, Clone, PartialEq)]
pub enum ExportLineError {
    #[error("line {line}: not a sios memory export line: {reason}")]
    Syntax { line: u64, reason: String },
    #[error(
        "line {line}: export format {format:?} version {version} is not readable by this build (it reads {EXPORT_FORMAT:?} version {EXPORT_VERSION})"
    )]
    Version {
        line: u64,
        format: String,
        version: u32,
    },
    #[error("line 1: an export starts with a header line ({{\"type\":\"header\",…}})")]
    MissingHeader,
    #[error("line {line}: cannot be read: {reason}")]
    Read { line: u64, reason: String },
    #[error("line {line}: not UTF-8 text (the first bad byte is byte {at} of the line)")]
    NotUtf8 {
        line: u64,
        /// 1-based, like the line.
        at: usize,
    },
    #[error(
        "line {line}: longer than {} MiB, which no export line is; the file is damaged or not an export",
        MAX_EXPORT_LINE_BYTES >> 20
    )]
    TooLong { line: u64 },
    #[error("line {line}: {source}")]
    Item {
        line: u64,
        #[source]
        source: MemoryError,
    },
}

impl ExportLine {
    /// The line's JSON, without the trailing newline.
    pub fn to_json(&self) -> String {
        // Serialising these types cannot fail: every map key is a string and
        // validated embeddings are finite.
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
    }

    /// Parses one line (`number` is 1-based, for messages). Header versions
    /// other than [`EXPORT_VERSION`] and invalid items are refused.
    pub fn parse(text: &str, number: u64) -> Result<ExportLine, ExportLineError> {
        let line: ExportLine = serde_json::from_str(text).map_err(|e| ExportLineError::Syntax {
            line: number,
            reason: e.to_string(),
        })?;
        match &line {
            ExportLine::Header(header) => {
                if header.format != EXPORT_FORMAT || header.version != EXPORT_VERSION {
                    return Err(ExportLineError::Version {
                        line: number,
                        format: header.format.clone(),
                        version: header.version,
                    });
                }
            }
            ExportLine::Item(item) => item.validate().map_err(|source| ExportLineError::Item {
                line: number,
                source,
            })?,
        }
        Ok(line)
    }
}

/// Longest line an export may hold, newline included. The longest valid
/// item line is well under it: a value of [`MAX_VALUE_BYTES`] as base64
/// (4/3 of it) or as a JSON string escaped at worst six bytes to one (6 MiB
/// for a 1 MiB text of control characters), plus its bounded key, subject,
/// metadata and embedding. A longer line is not an item, and reading it
/// whole would let one damaged file hold any amount of memory.
pub const MAX_EXPORT_LINE_BYTES: usize = 8 * 1024 * 1024;

/// Reads an export line by line: the header when made, then one item per
/// [`Iterator::next`]. It holds one line at a time, so a file of any size
/// is read in memory bounded by [`MAX_EXPORT_LINE_BYTES`]. Blank lines are
/// skipped; the first bad line ends the items with its error.
#[derive(Debug)]
pub struct ExportReader<R> {
    lines: Lines<R>,
    header: ExportHeader,
    failed: bool,
}

impl<R: std::io::BufRead> ExportReader<R> {
    /// Reads up to and including the header line, which must come first.
    pub fn new(input: R) -> Result<ExportReader<R>, ExportLineError> {
        let mut lines = Lines {
            input,
            line: 0,
            bytes_read: 0,
            buffer: Vec::new(),
        };
        match lines.next_line()? {
            Some(ExportLine::Header(header)) => Ok(ExportReader {
                lines,
                header,
                failed: false,
            }),
            Some(ExportLine::Item(_)) | None => Err(ExportLineError::MissingHeader),
        }
    }

    pub fn header(&self) -> &ExportHeader {
        &self.header
    }

    /// Bytes read so far, for progress.
    pub fn bytes_read(&self) -> u64 {
        self.lines.bytes_read
    }
}

/// An export's lines, one at a time.
#[derive(Debug)]
struct Lines<R> {
    input: R,
    /// Lines read so far (the 1-based number of the last one).
    line: u64,
    bytes_read: u64,
    buffer: Vec<u8>,
}

impl<R: std::io::BufRead> Lines<R> {
    /// The next line that is not blank, parsed, or `None` at the end.
    fn next_line(&mut self) -> Result<Option<ExportLine>, ExportLineError> {
        use std::io::{BufRead as _, Read as _};
        loop {
            self.buffer.clear();
            let number = self.line + 1;
            let read = (&mut self.input)
                .take(MAX_EXPORT_LINE_BYTES as u64)
                .read_until(b'\n', &mut self.buffer)
                .map_err(|e| ExportLineError::Read {
                    line: number,
                    reason: e.to_string(),
                })?;
            if read == 0 {
                return Ok(None);
            }
            self.line = number;
            self.bytes_read += read as u64;
            if read == MAX_EXPORT_LINE_BYTES && self.buffer.last() != Some(&b'\n') {
                return Err(ExportLineError::TooLong { line: number });
            }
            let text = std::str::from_utf8(&self.buffer)
                .map_err(|e| ExportLineError::NotUtf8 {
                    line: number,
                    at: e.valid_up_to() + 1,
                })?
                .trim();
            if text.is_empty() {
                continue;
            }
            return ExportLine::parse(text, number).map(Some);
        }
    }
}

impl<R: std::io::BufRead> Iterator for ExportReader<R> {
    type Item = Result<Item, ExportLineError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let next = match self.lines.next_line() {
            Ok(None) => return None,
            Ok(Some(ExportLine::Item(item))) => Ok(item),
            Ok(Some(ExportLine::Header(_))) => Err(ExportLineError::Syntax {
                line: self.lines.line,
                reason: "a second header line".into(),
            }),
            Err(err) => Err(err),
        };
        self.failed = next.is_err();
        Some(next)
    }
}

/// Reads a whole export held in memory: the header, then the items.
pub fn parse_export(text: &str) -> Result<(ExportHeader, Vec<Item>), ExportLineError> {
    let reader = ExportReader::new(text.as_bytes())?;
    let header = reader.header().clone();
    Ok((header, reader.collect::<Result<_, _>>()?))
}

/// Groups items into import requests within both bounds of one request
/// ([`MAX_IMPORT_ITEMS`] items, [`MAX_PAGE_BYTES`]), as they come.
#[derive(Debug, Default)]
pub struct ImportChunker {
    current: Vec<Item>,
    bytes: usize,
}

impl ImportChunker {
    /// Adds `item`; returns the full request it does not fit in, if any.
    pub fn push(&mut self, item: Item) -> Option<ImportRequest> {
        let size = item.approx_bytes();
        let full = !self.current.is_empty()
            && (self.current.len() == MAX_IMPORT_ITEMS || self.bytes + size > MAX_PAGE_BYTES);
        let done = full.then(|| self.take());
        self.bytes += size;
        self.current.push(item);
        done
    }

    /// The last request, if any item is left.
    pub fn finish(mut self) -> Option<ImportRequest> {
        (!self.current.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> ImportRequest {
        self.bytes = 0;
        ImportRequest {
            items: std::mem::take(&mut self.current),
        }
    }
}

/// Bytes as a byte string in binary formats and as base64 text in
/// human-readable ones (JSON).
mod bytes_or_base64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&super::base64::encode(bytes))
        } else {
            serializer.serialize_bytes(bytes)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        if deserializer.is_human_readable() {
            let text = String::deserialize(deserializer)?;
            super::base64::decode(&text).map_err(serde::de::Error::custom)
        } else {
            Ok(serde_bytes::ByteBuf::deserialize(deserializer)?.into_vec())
        }
    }
}

/// RFC 4648 §4 base64 (standard alphabet, `=` padding), strict on decode.
pub mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        let bytes = text.as_bytes();
        if !bytes.len().is_multiple_of(4) {
            return Err(format!(
                "base64 length {} is not a multiple of 4",
                bytes.len()
            ));
        }
        let value =
            |c: u8| -> Option<u32> { ALPHABET.iter().position(|a| *a == c).map(|p| p as u32) };
        let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
        let groups = bytes.len() / 4;
        for (g, chunk) in bytes.chunks(4).enumerate() {
            let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
            if pad > 2 || (pad > 0 && g + 1 != groups) {
                return Err("misplaced `=` padding in base64".into());
            }
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = if i >= 4 - pad {
                    0
                } else {
                    value(*c)
                        .ok_or_else(|| format!("{:?} is not a base64 character", *c as char))?
                };
                n = (n << 6) | v;
            }
            let decoded = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            // Canonical form only: the bits under the padding must be zero.
            if (pad == 1 && decoded[2] != 0) || (pad == 2 && decoded[1] != 0) {
                return Err("non-canonical base64 (stray bits before the padding)".into());
            }
            out.extend_from_slice(&decoded[..3 - pad]);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound the kernel reserves for one item really bounds it: an item
    /// with every field at its limit counts exactly `MAX_ITEM_BYTES`, and
    /// its encoding in a frame takes no more.
    #[test]
    fn an_item_at_every_limit_takes_max_item_bytes() {
        let text = |n: usize, c: char| c.to_string().repeat(n);
        let item = Item {
            namespace: text(MAX_NAMESPACE_BYTES, 'n'),
            key: text(MAX_KEY_BYTES, 'k'),
            subject: text(MAX_SUBJECT_BYTES, 's'),
            value: Value::Bytes(vec![0xab; MAX_VALUE_BYTES]),
            metadata: (0..MAX_METADATA_ENTRIES)
                .map(|i| {
                    let key = format!("{i:0width$}", width = MAX_METADATA_KEY_BYTES);
                    (key, text(MAX_METADATA_VALUE_BYTES, 'v'))
                })
                .collect(),
            created_ms: u64::MAX,
            updated_ms: u64::MAX,
            embedding: Some(Embedding(vec![f32::MAX; MAX_EMBEDDING_DIM])),
        };
        assert_eq!(item.approx_bytes(), MAX_ITEM_BYTES);
        let encoded = crate::budget::encoded_size(&item);
        assert!(
            encoded <= MAX_ITEM_BYTES as u64,
            "{encoded} > {MAX_ITEM_BYTES}"
        );
        let hit = SearchHit {
            namespace: item.namespace,
            key: item.key,
            subject: item.subject,
            score: 1.0,
            metadata: item.metadata,
            created_ms: item.created_ms,
            updated_ms: item.updated_ms,
            value: None,
        };
        let hits = SearchResponse {
            hits: vec![hit; MAX_SEARCH_K as usize],
            scanned: u64::MAX,
            values_omitted: u32::MAX,
        };
        let encoded = crate::budget::encoded_size(&hits) + MAX_PAGE_BYTES as u64;
        assert!(
            encoded <= MAX_SEARCH_ANSWER_BYTES as u64,
            "{encoded} > {MAX_SEARCH_ANSWER_BYTES}"
        );
    }

    #[test]
    fn base64_matches_rfc4648_test_vectors() {
        // RFC 4648 §10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64::encode(plain.as_bytes()), encoded);
            assert_eq!(base64::decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64::decode(&base64::encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zm9v=Zm9", "Zh==", "Zm9*"] {
            assert!(base64::decode(bad).is_err(), "{bad}");
        }
    }

    fn sample() -> Item {
        Item {
            namespace: "tenant/acme".into(),
            key: "notes/1".into(),
            subject: "alice@example.com".into(),
            value: Value::Bytes(vec![0, 159, 146, 150, 255]),
            metadata: [("lang".to_owned(), "en".to_owned())].into(),
            created_ms: 1_700_000_000_000,
            updated_ms: 1_700_000_000_123,
            embedding: Some(Embedding(vec![0.1, -2.5e-8, 3.0, f32::MIN_POSITIVE])),
        }
    }

    #[test]
    fn export_line_json_is_the_documented_shape_and_round_trips() {
        let item = sample();
        let json = ExportLine::Item(item.clone()).to_json();
        assert!(json.starts_with(r#"{"type":"item","namespace":"tenant/acme","key":"notes/1","subject":"alice@example.com","value":{"base64":"AJ+Slv8="},"metadata":{"lang":"en"},"created_ms":1700000000000,"updated_ms":1700000000123,"embedding":[0.1,"#), "{json}");
        assert_eq!(
            ExportLine::parse(&json, 2).unwrap(),
            ExportLine::Item(item.clone())
        );
        let text = Item {
            value: Value::Text("héllo".into()),
            embedding: None,
            ..item
        };
        let json = ExportLine::Item(text.clone()).to_json();
        assert!(
            json.contains(r#""value":{"text":"héllo"}"#) && json.ends_with(r#""embedding":null}"#),
            "{json}"
        );
        assert_eq!(ExportLine::parse(&json, 2).unwrap(), ExportLine::Item(text));
        let header = ExportLine::Header(ExportHeader::new(ExportScope::Subject("alice".into()), 5));
        assert_eq!(
            header.to_json(),
            r#"{"type":"header","format":"sios-memory-export","version":1,"exported_at_ms":5,"scope":{"subject":"alice"}}"#
        );
        let future = r#"{"type":"header","format":"sios-memory-export","version":2,"exported_at_ms":5,"scope":{"subject":"alice"}}"#;
        assert!(matches!(
            ExportLine::parse(future, 1),
            Err(ExportLineError::Version { version: 2, .. })
        ));
    }

    #[test]
    fn bincode_carries_embeddings_and_bytes_packed() {
        use std::pin::Pin;
        use tarpc::tokio_serde::formats::SymmetricalBincode;
        use tarpc::tokio_serde::{Deserializer as _, Serializer as _};
        let item = sample();
        let mut codec = SymmetricalBincode::<Item>::default();
        let encoded = Pin::new(&mut codec).serialize(&item).unwrap();
        // The 4 floats travel packed, as one 16-byte string.
        let packed: Vec<u8> = item
            .embedding
            .as_ref()
            .unwrap()
            .0
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        assert!(encoded.windows(16).any(|w| w == packed.as_slice()));
        let decoded = Pin::new(&mut codec)
            .deserialize(&encoded.as_ref().into())
            .unwrap();
        assert_eq!(decoded, item);
    }

    #[test]
    fn names_are_validated_with_reasons() {
        assert!(validate_namespace("tenant/acme").is_ok());
        assert!(validate_namespace("brain/text-embedding").is_ok());
        for bad in ["", "/x", "a//b", "a/", "a b", "ä", &"n".repeat(129)] {
            assert!(
                matches!(
                    validate_namespace(bad),
                    Err(MemoryError::InvalidName {
                        kind: NameKind::Namespace,
                        ..
                    })
                ),
                "{bad:?}"
            );
        }
        assert!(validate_subject("alice@example.com").is_ok());
        assert!(validate_subject("urn:uuid:0b0c").is_ok());
        assert!(validate_subject("-x").is_err());
        assert!(validate_key("any key, even ünïcode / spaces").is_ok());
        assert!(validate_key("tab\there").is_err());
        let err = validate_namespace(&"n".repeat(300)).unwrap_err();
        assert!(err.to_string().len() < 250, "{err}");
        assert!(validate_embedding(&Embedding(vec![0.0, 0.0])).is_err());
        assert!(validate_embedding(&Embedding(vec![f32::NAN])).is_err());
    }

    #[test]
    fn import_chunks_respect_both_bounds() {
        let small = sample();
        let chunks = import_chunks(vec![small.clone(); 2500]);
        assert_eq!(
            chunks.iter().map(|c| c.items.len()).collect::<Vec<_>>(),
            [1000, 1000, 500]
        );
        let big = Item {
            value: Value::Bytes(vec![7; MAX_VALUE_BYTES]),
            ..small
        };
        let chunks = import_chunks(vec![big; 9]);
        assert!(
            chunks
                .iter()
                .all(|c| c.items.iter().map(Item::approx_bytes).sum::<usize>() <= MAX_PAGE_BYTES)
        );
        assert_eq!(chunks.iter().map(|c| c.items.len()).sum::<usize>(), 9);
    }

    #[test]
    fn an_export_is_read_a_line_at_a_time_and_a_bad_line_is_named() {
        let header = ExportLine::Header(ExportHeader::new(ExportScope::Namespace("t".into()), 5));
        let item = ExportLine::Item(sample());
        let file = format!(
            "{}\n\n{}\n  \n{}",
            header.to_json(),
            item.to_json(),
            item.to_json()
        );
        let mut reader = ExportReader::new(file.as_bytes()).unwrap();
        assert_eq!(reader.header().exported_at_ms, 5);
        assert_eq!(reader.next(), Some(Ok(sample())));
        assert_eq!(reader.next(), Some(Ok(sample())));
        assert_eq!(reader.next(), None);
        assert_eq!(reader.bytes_read(), file.len() as u64);

        let read_all = |text: &[u8]| -> Result<Vec<Item>, ExportLineError> {
            ExportReader::new(text)?.collect()
        };
        let bad_utf8 = [
            header.to_json().as_bytes(),
            b"\n",
            item.to_json().as_bytes(),
            b"\n{\"type\":\"item\",\"key\":\"\xff\"}\n",
        ]
        .concat();
        assert_eq!(
            read_all(&bad_utf8),
            Err(ExportLineError::NotUtf8 { line: 3, at: 23 })
        );
        let twice = format!("{0}\n{1}\n{0}\n{1}\n", header.to_json(), item.to_json());
        assert!(matches!(
            read_all(twice.as_bytes()),
            Err(ExportLineError::Syntax { line: 3, .. })
        ));
        assert_eq!(
            read_all(format!("{}\n", item.to_json()).as_bytes()),
            Err(ExportLineError::MissingHeader)
        );
        assert_eq!(read_all(b""), Err(ExportLineError::MissingHeader));
        // A line past the bound is refused once the bound is read, not held
        // whole: no newline for 9 MiB.
        let endless = [
            header.to_json().as_bytes(),
            b"\n",
            &vec![b'x'; MAX_EXPORT_LINE_BYTES + (1 << 20)],
        ]
        .concat();
        let err = read_all(&endless).unwrap_err();
        assert_eq!(err, ExportLineError::TooLong { line: 2 });
        assert!(err.to_string().contains("longer than 8 MiB"), "{err}");
        // The longest item a request may hold fits well within the bound,
        // even as a text of characters JSON must escape.
        let longest = Item {
            value: Value::Text("\u{1}".repeat(MAX_VALUE_BYTES)),
            embedding: Some(Embedding(vec![-1.234_567_8e-30; MAX_EMBEDDING_DIM])),
            ..sample()
        };
        let line = ExportLine::Item(longest.clone()).to_json();
        assert!(line.len() < MAX_EXPORT_LINE_BYTES, "{}", line.len());
        let file = format!("{}\n{line}\n", header.to_json());
        assert_eq!(read_all(file.as_bytes()), Ok(vec![longest]));
    }

    #[test]
    fn the_chunker_gives_what_import_chunks_gives() {
        let items = vec![sample(); 2345];
        let mut chunker = ImportChunker::default();
        let mut chunks: Vec<ImportRequest> = Vec::new();
        for item in items.clone() {
            chunks.extend(chunker.push(item));
        }
        chunks.extend(chunker.finish());
        assert_eq!(chunks, import_chunks(items));
        assert!(ImportChunker::default().finish().is_none());
    }
}
