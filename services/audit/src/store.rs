//! The log in `audit.redb`: group commit, signing, recovery and reads.
//!
//! # Tables
//! | table | key → value | what |
//! |---|---|---|
//! | `records` | seq → canonical CBOR | every record, gapless from 0 |
//! | `nodes` | `level << 56 \| index` → 32 bytes | every complete subtree of level ≥ 6, i.e. of 64 leaves or more (smaller ones are hashed from `records` when needed) |
//! | `checkpoints` | tree size → signed note | the checkpoint signed after each batch |
//! | `keys` | seq of the introducing record → verifier key line | key history, oldest first |
//! | `policies` | SHA-256 → text | policy texts, content-addressed |
//! | `subjects` | subject id → 32 bytes | linking keys; a row is deleted by erasure (a key made for an intent with `link_kept_on_success` is written only with its successful outcome: `store/pending_links.rs`) |
//! | `open_intents` | seq → SHA-256(actor‖0‖action‖0‖resource) | intents still waiting for their outcome, as of record `open_intents_upto` |
//! | `meta` | name → text | `format`, `origin`, `session`, `open_intents_upto` |
//!
//! A commit of one record thus touches `records` and, when a checkpoint was
//! signed since the last commit, `checkpoints`, and little else: tree
//! nodes are written once per 64 records, and the open intents are kept in
//! memory and written once per [`OPEN_INTENTS_PERSIST_RECORDS`] records (the
//! records after `open_intents_upto` are replayed at open). Fewer pages per
//! commit is what keeps a single action's latency near the disk's own
//! commit latency; so does writing the file's new space with zeros before
//! redb first uses it (`src/zerofill.rs`), which spares most commits a
//! file-system allocation.
//!
//! # Group commit
//! There is one writer, lent to whoever performs the next batch
//! (`src/writer_queue.rs`): in the audit service, the runtime's one thread,
//! which decodes the requests ([`AuditLog::commit_here`]); elsewhere, and
//! for key rotation, erasure, session start and flush, the log's background
//! thread. Either takes every `record` call queued (up to
//! [`MAX_BATCH_RECORDS`] records), validates each call, builds the records,
//! extends the tree and writes the batch in ONE write transaction, committed
//! with `Durability::Immediate` (on disk when `commit` returns). A signer
//! thread signs the newest committed tree: when the batch holds an intent it
//! starts on the batch's tree while the commit runs (the signature is used
//! only if that very tree is committed), so sign and commit overlap; when
//! the commit returns with that signature ready, the writer publishes it and
//! answers at once, without another thread hop. The writer never waits for
//! the signer; one signature covers every batch committed before it
//! started. So each batch costs one commit and at most one signature; a
//! batch of one is handled the same way.
//!
//! Signed checkpoints are stored [`NOTES_PER_STORE`] at a time by a record
//! commit, or by the first one after the oldest has waited [`IDLE_FLUSH`],
//! or on their own after [`IDLE_FLUSH`] without commits; until then they are
//! kept in memory, and [`AuditLog::checkpoints`] lists them all the same. If
//! the process dies first, [`AuditLog::open`] signs the recovered tree again
//! (ML-DSA signing here is deterministic: if that tree was signed before,
//! the same bytes); unstored checkpoints of smaller trees are not made
//! again, and need not be: the records they covered are durable and covered
//! by that one.
//!
//! # When a write is acknowledged
//! - a call whose drafts include an intent: once its batch is committed
//!   durably **and** a checkpoint covering it is signed;
//! - any other call (outcomes, events): once its batch is committed durably;
//!   a checkpoint covering it follows within [`IDLE_SIGN`] or with the next
//!   intent. [`AuditLog::flush`] waits for it.
//!
//! # Sessions and abandoned intents
//! An intent whose outcome never comes (the kernel died mid-action) must
//! not stay open for ever without the log saying why. The service is told,
//! once at start, which kernel *session* it serves ([`AuditLog::begin_session`]);
//! if the log was last opened for another session, the kernel that made the
//! open intents is gone, and each of them gets a `process-died` outcome
//! (detail [`ABANDONED_DETAIL`]) before anything else is written. Within one
//! session (the audit service restarted alone) open intents stay open: the
//! kernel that made them is alive and may still record their outcomes.
//!
//! # Submodules
//! - `signer`: the signer thread, and how a signature reaches the intent
//!   calls waiting for it;
//! - `notes`: signed checkpoint notes between signing and storing;
//! - `validate`: the rules a `record` call must meet before any of it is
//!   written.

use crate::checkpoint::{Checkpoint, verify_checkpoint};
use crate::keys::{self, KeyError, PublicKey, SecretKey};
use crate::linking;
use crate::merkle::{self, Frontier, Hash, NodeSource};
use crate::record::{self, Kind, Record, RecordDecision};
use crate::writer_queue::WriterQueue;
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition,
    WriteTransaction,
};
use sha2::{Digest as _, Sha256};
use sios_ipc::latency::LiveHistogram;
use sios_ipc::storage::{self, Closure, Remedy};
use sios_ipc::{
    ActionResult, AppendReceipt, AuditError, AuditEvent, BrainRef, CheckpointPage,
    ConsistencyProof, Digest, DraftKind, InclusionProof, PublicKeyInfo, Receipt, RecordDraft,
    RecordPage, RecordTimings, RotationReport, SignedCheckpoint, StageTimings,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

mod notes;
mod pending_links;
mod signer;
mod validate;

pub use notes::NOTES_PER_STORE;
use notes::{NotePage, UnstoredNotes, insert_notes};
use pending_links::PendingLinks;
pub use signer::IDLE_SIGN;
use signer::{Signer, Waiter};
use validate::check_call;

pub const DB_FILE: &str = "audit.redb";
/// The `meta.format` value of this layout.
pub const STORE_FORMAT: &str = "sios-oar-store/2";
/// The previous layout, upgraded in place when opened: format 1 kept every
/// tree node and an always-current `open_intents` table (see
/// [`STORED_NODE_LEVEL`] and [`OPEN_INTENTS_PERSIST_RECORDS`]).
const STORE_FORMAT_1: &str = "sios-oar-store/1";
/// `meta` key: the tree size up to which `open_intents` is current; the
/// records after it are replayed at open.
const META_OPEN_UPTO: &str = "open_intents_upto";
/// The open intents live in memory; their table is brought up to date once
/// this many records have been written since it last was (and the records
/// since then replayed at open), so a commit does not rewrite it for each
/// intent and each outcome.
pub const OPEN_INTENTS_PERSIST_RECORDS: u64 = 4096;
/// Most records written in one batch; the rest wait for the next one.
pub const MAX_BATCH_RECORDS: usize = 16_384;
pub use sios_ipc::audit::{MAX_CALLS_PER_REQUEST, MAX_DRAFTS_PER_CALL};
/// Longest policy text.
pub const MAX_POLICY_TEXT: usize = 1 << 20;
/// How long a signed checkpoint may wait to be stored: after that the next
/// record commit carries it, or, if none comes, a commit of its own.
pub const IDLE_FLUSH: Duration = Duration::from_millis(20);
/// The detail of the `process-died` outcome written for an intent whose
/// kernel session ended before its outcome was recorded.
pub const ABANDONED_DETAIL: &str =
    "abandoned: the kernel session that started this action ended before recording its outcome";
/// Longest session name ([`AuditLog::begin_session`]).
pub const MAX_SESSION: usize = 512;

const RECORDS: TableDefinition<u64, &[u8]> = TableDefinition::new("records");
const NODES: TableDefinition<u64, [u8; 32]> = TableDefinition::new("nodes");
const CHECKPOINTS: TableDefinition<u64, &str> = TableDefinition::new("checkpoints");
const KEYS: TableDefinition<u64, &str> = TableDefinition::new("keys");
const POLICIES: TableDefinition<[u8; 32], &str> = TableDefinition::new("policies");
const SUBJECTS: TableDefinition<&str, [u8; 32]> = TableDefinition::new("subjects");
const OPEN_INTENTS: TableDefinition<u64, [u8; 32]> = TableDefinition::new("open_intents");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

fn node_key(level: u8, index: u64) -> u64 {
    (u64::from(level) << 56) | index
}

/// The lowest level of tree node the store keeps. Smaller subtrees (under
/// 64 leaves) are recomputed from their records when a proof or a restart
/// needs them: at most 63 record reads, while storing them would put a
/// `nodes` write (several pages) into nearly every commit. Stores written
/// before format 2 also hold the lower levels; they are simply not read.
const STORED_NODE_LEVEL: u8 = 6;

/// Passes on the tree nodes a store keeps (see [`STORED_NODE_LEVEL`]).
fn keep_node(level: u8, index: u64, hash: &Hash, mut store: impl FnMut(u64, Hash)) {
    if level >= STORED_NODE_LEVEL {
        store(node_key(level, index), *hash);
    }
}

/// Why the log could not be opened. Each message names the file and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    #[error("{path}: another process has the audit log open; stop the other sios-audit first")]
    AlreadyOpen { path: PathBuf },
    #[error(
        "{path} is damaged and cannot be opened ({reason}). Nothing was changed. Keep the file for \
         investigation; restore the audit directory from the latest backup (README: Backup and \
         restore), or move the file aside to start a new log (the old log stays verifiable from \
         its last export)"
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("{path}: {reason}")]
    Storage { path: PathBuf, reason: String },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(
        "{key_path} holds key {found}, but the log {db} is signed by key {expected}. Restore the \
         matching signing.key from backup (a log cannot change keys except by `sios keys rotate`)"
    )]
    WrongKey {
        key_path: PathBuf,
        db: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{key_path} is missing, but the log {db} already holds {records} records signed by key \
         {expected}. Restore signing.key from backup; without it the log cannot be continued"
    )]
    MissingKey {
        key_path: PathBuf,
        db: PathBuf,
        records: u64,
        expected: String,
    },
}

/// Counters, for tests and benchmarks.
#[derive(Debug, Default)]
pub struct Stats {
    /// Batches of records written (each: one write transaction, one durable commit).
    pub batches: AtomicU64,
    /// Durable commits that carried records.
    pub record_commits: AtomicU64,
    /// Every durable commit, including idle checkpoint flushes and control jobs.
    pub commits: AtomicU64,
    /// Checkpoints signed and published (a signature computed for a tree
    /// that was superseded before its commit finished is not counted).
    pub signatures: AtomicU64,
    pub records: AtomicU64,
    /// Where `record` calls spent their time; read with [`Stats::record_timings`].
    timings: LiveTimings,
}

impl Stats {
    /// Where `record` calls spent their time since the log was opened.
    pub fn record_timings(&self) -> RecordTimings {
        RecordTimings {
            intents: self.timings.intents.snapshot(),
            durable_only: self.timings.durable_only.snapshot(),
        }
    }
}

/// [`RecordTimings`] being recorded.
#[derive(Debug, Default)]
struct LiveTimings {
    intents: LiveStages,
    durable_only: LiveStages,
}

impl LiveTimings {
    /// The stages of calls (or batches) with an intent, or of the others.
    fn of(&self, intent: bool) -> &LiveStages {
        if intent {
            &self.intents
        } else {
            &self.durable_only
        }
    }
}

/// [`StageTimings`] being recorded.
#[derive(Debug, Default)]
struct LiveStages {
    queued: LiveHistogram,
    prepared: LiveHistogram,
    committed: LiveHistogram,
    answered: LiveHistogram,
}

impl LiveStages {
    fn snapshot(&self) -> StageTimings {
        StageTimings {
            queued: self.queued.snapshot(),
            prepared: self.prepared.snapshot(),
            committed: self.committed.snapshot(),
            answered: self.answered.snapshot(),
        }
    }
}

/// Whether a call holds an intent (and is answered only once signed).
fn has_intent(drafts: &[RecordDraft]) -> bool {
    drafts.iter().any(|d| d.kind == DraftKind::Intent)
}

enum Job {
    Record {
        drafts: Vec<RecordDraft>,
        reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
        /// When it was queued (for [`StageTimings::queued`]).
        queued_at: Instant,
    },
    Rotate {
        requested_by: String,
        reply: oneshot::Sender<Result<RotationReport, AuditError>>,
    },
    Erase {
        subject: String,
        reply: oneshot::Sender<Result<bool, AuditError>>,
    },
    Session {
        session: String,
        reply: oneshot::Sender<Result<Vec<u64>, AuditError>>,
    },
    Shutdown(mpsc::Sender<()>),
    Flush(oneshot::Sender<()>),
}

struct Shared {
    db: RwLock<DbState>,
    path: PathBuf,
    latest: Mutex<SignedCheckpoint>,
    /// Checkpoints signed but not yet stored.
    unstored: Mutex<UnstoredNotes>,
    stats: Stats,
}

/// The database, or why it is closed.
enum DbState {
    Open(Database),
    /// Closed after a write failed (a full disk, a failing device). redb
    /// refuses every later operation on a database one of whose writes
    /// failed until it is reopened, so the writer closes it at once and
    /// reopens it before its next write or in its idle time (see
    /// [`Writer::ensure_open`]):
    /// reopening rolls the file back to its last durable commit. Meanwhile
    /// every call is refused with what `closure` says, and nothing is
    /// acknowledged.
    Closed {
        closure: Closure,
        /// When the writer last tried to reopen it.
        tried_at: Instant,
    },
}

/// How often a closed log is tried again: reopening may mean a repair scan
/// of the whole file, which a full disk must not cost every call.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

impl Shared {
    fn begin_read(&self) -> Result<ReadTransaction, AuditError> {
        match &*self
            .db
            .read()
            .map_err(|_| storage("the database lock is poisoned"))?
        {
            DbState::Open(db) => db.begin_read().map_err(storage),
            DbState::Closed { closure, .. } => Err(self.closed(closure)),
        }
    }

    /// What a caller is told while the log is closed.
    fn closed(&self, closure: &Closure) -> AuditError {
        AuditError::Storage(closure.refusal(
            &self.path,
            "the log is closed. Every record is refused, so every action is, until the log \
             can be written again",
            "the log reopens by itself within a second of that",
            "nothing acknowledged is lost",
        ))
    }
}

/// A handle to the log. Clones share the same writer.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
    queue: WriterQueue<Writer>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditLog({})", self.shared.path.display())
    }
}

/// The cause given when a write into the log's file failed.
fn write_failed(err: &AuditError) -> String {
    match err {
        AuditError::Storage(reason) => format!("a write to its file failed ({reason})"),
        other => format!("a write to its file failed ({other})"),
    }
}

fn storage(err: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(err.to_string())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn stopped() -> AuditError {
    AuditError::Storage("the audit writer has stopped; restart the audit service".into())
}

/// Reads tree nodes inside one read (or write) transaction.
/// How many records `table` holds (their seqs run from 0 without a gap).
fn record_count(table: &impl ReadableTable<u64, &'static [u8]>) -> Result<u64, AuditError> {
    Ok(table
        .last()
        .map_err(storage)?
        .map_or(0, |(k, _)| k.value() + 1))
}

/// A proof the store could not make: its own storage error as it is, any
/// other as a storage error (the sizes were checked before asking).
fn proof_failed(err: merkle::ProofRequestError<AuditError>) -> AuditError {
    match err {
        merkle::ProofRequestError::Source(e) => e,
        other => storage(other),
    }
}

struct TxnNodes<'a, R: ReadableTable<u64, &'static [u8]>, N: ReadableTable<u64, [u8; 32]>> {
    records: &'a R,
    nodes: &'a N,
}

impl<R: ReadableTable<u64, &'static [u8]>, N: ReadableTable<u64, [u8; 32]>> NodeSource
    for TxnNodes<'_, R, N>
{
    type Error = AuditError;
    fn node(&self, level: u8, index: u64) -> Result<Hash, AuditError> {
        if level == 0 {
            let bytes = self
                .records
                .get(index)
                .map_err(storage)?
                .ok_or_else(|| storage(format!("record {index} is missing from the store")))?;
            Ok(Record::hash_of(bytes.value()))
        } else if level < STORED_NODE_LEVEL {
            // Not stored: hash its records (one range read).
            let start = index << level;
            let end = start + (1u64 << level);
            let mut frontier = Frontier::new();
            for entry in self.records.range(start..end).map_err(storage)? {
                let (k, v) = entry.map_err(storage)?;
                if k.value() != start + frontier.size() {
                    break;
                }
                frontier.push(Record::hash_of(v.value()), |_, _, _| {});
            }
            if frontier.size() != end - start {
                return Err(storage(format!(
                    "record {} is missing from the store",
                    start + frontier.size()
                )));
            }
            Ok(frontier.root())
        } else {
            Ok(self
                .nodes
                .get(node_key(level, index))
                .map_err(storage)?
                .ok_or_else(|| storage(format!("tree node {level}/{index} is missing")))?
                .value())
        }
    }
}

/// Everything the writer knows about the tree's right edge.
struct TreeState {
    frontier: Frontier,
    last_hash: Hash,
    last_time: u64,
}

fn load_tree(txn: &ReadTransaction) -> Result<TreeState, AuditError> {
    let records = txn.open_table(RECORDS).map_err(storage)?;
    let nodes = txn.open_table(NODES).map_err(storage)?;
    let (size, last) = match records.last().map_err(storage)? {
        Some((k, v)) => (k.value() + 1, Some(v.value().to_vec())),
        None => (0, None),
    };
    let source = TxnNodes {
        records: &records,
        nodes: &nodes,
    };
    let frontier = Frontier::from_source(size, &source)?;
    let (last_hash, last_time) = match last {
        Some(bytes) => {
            let r = Record::decode(&bytes)
                .map_err(|e| storage(format!("the last record does not decode: {e}")))?;
            (Record::hash_of(&bytes), r.time_ms)
        }
        None => ([0; 32], 0),
    };
    Ok(TreeState {
        frontier,
        last_hash,
        last_time,
    })
}

/// The open intents in memory and what the store still lacks of them.
#[derive(Default)]
struct OpenIntents {
    /// Every intent without its outcome: seq → [`intent_tag`].
    open: BTreeMap<u64, Hash>,
    /// Changes not yet in the `open_intents` table (`None`: closed).
    changes: HashMap<u64, Option<Hash>>,
    /// The tree size up to which the table is current.
    upto: u64,
}

impl OpenIntents {
    fn apply(&mut self, record: &Record) {
        match &record.kind {
            Kind::Intent => {
                let tag = intent_tag(&record.actor, &record.action, &record.resource);
                self.open.insert(record.seq, tag);
                self.changes.insert(record.seq, Some(tag));
            }
            Kind::Outcome { intent_seq, .. } => {
                self.open.remove(intent_seq);
                self.changes.insert(*intent_seq, None);
            }
            Kind::Event => {}
        }
    }

    /// Writes the pending changes into `txn` once enough records have
    /// accumulated since the last time (or always, with `force`); returns
    /// whether it did. Call [`OpenIntents::persisted`] once `txn` commits.
    fn persist(&self, txn: &WriteTransaction, size: u64, force: bool) -> Result<bool, AuditError> {
        if size == self.upto || (!force && size - self.upto < OPEN_INTENTS_PERSIST_RECORDS) {
            return Ok(false);
        }
        let mut table = txn.open_table(OPEN_INTENTS).map_err(storage)?;
        for (seq, change) in &self.changes {
            match change {
                Some(tag) => table.insert(*seq, *tag).map_err(storage)?,
                None => table.remove(*seq).map_err(storage)?,
            };
        }
        txn.open_table(META)
            .map_err(storage)?
            .insert(META_OPEN_UPTO, size.to_string().as_str())
            .map_err(storage)?;
        Ok(true)
    }

    fn persisted(&mut self, size: u64) {
        self.changes.clear();
        self.upto = size;
    }
}

/// The open intents of a tree of `size` records: the `open_intents` table,
/// then the records written since it was last brought up to date.
fn load_open(txn: &ReadTransaction, size: u64) -> Result<OpenIntents, AuditError> {
    let meta = txn.open_table(META).map_err(storage)?;
    let upto = match meta.get(META_OPEN_UPTO).map_err(storage)? {
        Some(v) => v.value().parse::<u64>().map_err(|_| {
            storage(format!(
                "meta `{META_OPEN_UPTO}` is not a number: {}",
                v.value()
            ))
        })?,
        None => return Err(storage(format!("meta `{META_OPEN_UPTO}` is missing"))),
    };
    if upto > size {
        return Err(storage(format!(
            "open intents are stored up to record {upto}, but the log has only {size}"
        )));
    }
    let mut state = OpenIntents {
        upto,
        ..OpenIntents::default()
    };
    for entry in txn
        .open_table(OPEN_INTENTS)
        .map_err(storage)?
        .iter()
        .map_err(storage)?
    {
        let (k, v) = entry.map_err(storage)?;
        state.open.insert(k.value(), v.value());
    }
    let records = txn.open_table(RECORDS).map_err(storage)?;
    for entry in records.range(upto..size).map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let r = Record::decode(v.value())
            .map_err(|e| storage(format!("record {} does not decode: {e}", k.value())))?;
        state.apply(&r);
    }
    Ok(state)
}

fn intent_tag(actor: &str, action: &str, resource: &str) -> Hash {
    Sha256::new()
        .chain_update(actor.as_bytes())
        .chain_update([0])
        .chain_update(action.as_bytes())
        .chain_update([0])
        .chain_update(resource.as_bytes())
        .finalize()
        .into()
}

fn signed(size: u64, root: Hash, note: String) -> SignedCheckpoint {
    SignedCheckpoint {
        size,
        root: Digest(root),
        note,
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `data_dir`: `audit.redb` and the key
    /// files. Creates the key pair and the log's first record if missing;
    /// finishes an interrupted key rotation; re-signs a checkpoint lost in a
    /// crash. Starts the writer and signer threads.
    pub fn open(data_dir: &Path) -> Result<AuditLog, OpenError> {
        std::fs::create_dir_all(data_dir).map_err(|e| OpenError::Storage {
            path: data_dir.to_owned(),
            reason: e.to_string(),
        })?;
        let path = data_dir.join(DB_FILE);
        let db = open_db(&path)?;
        let fail = |e: &dyn std::fmt::Display| OpenError::Storage {
            path: path.clone(),
            reason: e.to_string(),
        };
        let corrupt = |reason: String| OpenError::Corrupt {
            path: path.clone(),
            reason,
        };
        // Create every table, so readers never find one missing.
        {
            let txn = db.begin_write().map_err(|e| fail(&e))?;
            {
                txn.open_table(RECORDS).map_err(|e| fail(&e))?;
                txn.open_table(NODES).map_err(|e| fail(&e))?;
                txn.open_table(CHECKPOINTS).map_err(|e| fail(&e))?;
                txn.open_table(KEYS).map_err(|e| fail(&e))?;
                txn.open_table(POLICIES).map_err(|e| fail(&e))?;
                txn.open_table(SUBJECTS).map_err(|e| fail(&e))?;
                txn.open_table(OPEN_INTENTS).map_err(|e| fail(&e))?;
                let records = txn
                    .open_table(RECORDS)
                    .map_err(|e| fail(&e))?
                    .last()
                    .map_err(|e| fail(&e))?
                    .map_or(0, |(k, _)| k.value() + 1);
                let mut meta = txn.open_table(META).map_err(|e| fail(&e))?;
                let format = meta
                    .get("format")
                    .map_err(|e| fail(&e))?
                    .map(|v| v.value().to_owned());
                match format.as_deref() {
                    // New, or format 1 (whose `open_intents` is current):
                    // from here on the table is current up to `records`.
                    None | Some(STORE_FORMAT_1) => {
                        meta.insert("format", STORE_FORMAT).map_err(|e| fail(&e))?;
                        meta.insert(META_OPEN_UPTO, records.to_string().as_str())
                            .map_err(|e| fail(&e))?;
                    }
                    Some(STORE_FORMAT) => {}
                    Some(other) => {
                        return Err(corrupt(format!(
                            "store format `{other}` is not `{STORE_FORMAT}` (or the older \
                             `{STORE_FORMAT_1}`); it was written by a newer sios-audit: run that \
                             version, or export the log with it (`sios audit export`)"
                        )));
                    }
                }
            }
            txn.commit().map_err(|e| fail(&e))?;
        }
        let read = db.begin_read().map_err(|e| fail(&e))?;
        let tree = load_tree(&read).map_err(|e| corrupt(e.to_string()))?;
        let size = tree.frontier.size();
        let open_intents = load_open(&read, size).map_err(|e| corrupt(e.to_string()))?;
        let key_history = read_keys(&read).map_err(|e| corrupt(e.to_string()))?;
        let last_stored = {
            let table = read.open_table(CHECKPOINTS).map_err(|e| fail(&e))?;
            table
                .last()
                .map_err(|e| fail(&e))?
                .map(|(k, v)| (k.value(), v.value().to_owned()))
        };
        drop(read);

        let secret_path = data_dir.join(keys::SECRET_FILE);
        let next_path = data_dir.join(keys::NEXT_SECRET_FILE);
        let key = if size == 0 {
            // A new log: adopt the key made by `sios keys init`, or make one.
            let key = if secret_path.exists() {
                SecretKey::load(&secret_path)?
            } else {
                let key = SecretKey::generate(&keys::fresh_name()?)?;
                key.store(&secret_path)?;
                key
            };
            keys::write_public(&data_dir.join(keys::PUBLIC_FILE), key.public())?;
            let _ = std::fs::remove_file(&next_path);
            key
        } else {
            let (_, current) = key_history
                .last()
                .ok_or_else(|| corrupt("the log has records but no key history".into()))?;
            recover_key(data_dir, &path, size, current)?
        };
        let origin = key.public().name().to_owned();
        let shared = Arc::new(Shared {
            db: RwLock::new(DbState::Open(db)),
            path: path.clone(),
            latest: Mutex::new(signed(0, merkle::empty_root(), String::new())),
            unstored: Mutex::new(UnstoredNotes::default()),
            stats: Stats::default(),
        });
        let mut writer = Writer {
            shared: shared.clone(),
            tree,
            origin: origin.clone(),
            key: Arc::new(key),
            data_dir: data_dir.to_owned(),
            subjects: HashMap::new(),
            pending_links: PendingLinks::default(),
            open: open_intents,
            scrub_pending: false,
            last_commit: Instant::now(),
            failing_since: None,
            signer: Signer::start(shared.clone(), origin.clone()).map_err(|e| fail(&e))?,
        };
        if size == 0 {
            writer.genesis().map_err(|e| fail(&e))?;
        } else {
            // The latest checkpoint must match the stored tree; if the last
            // batch's checkpoint was lost in a crash, sign it again.
            let root = writer.tree.frontier.root();
            match last_stored {
                Some((stored_size, note)) if stored_size == size => {
                    let in_force = keys::in_force(&key_history, size);
                    let cp = verify_checkpoint(&note, &in_force).map_err(|e| {
                        corrupt(format!(
                            "the latest checkpoint (size {size}) does not verify: {e}"
                        ))
                    })?;
                    if cp.root != root {
                        return Err(corrupt(format!(
                            "the stored tree does not match the latest signed checkpoint (size {size})"
                        )));
                    }
                    *shared.latest.lock().expect("latest lock") = signed(size, root, note);
                }
                Some((stored_size, _)) if stored_size > size => {
                    return Err(corrupt(format!(
                        "a checkpoint of size {stored_size} is stored but only {size} records are"
                    )));
                }
                _ => {
                    let note = writer.sign_now(size, root, &[writer.key.clone()]);
                    writer
                        .persist_checkpoint(size, &note)
                        .map_err(|e| fail(&e))?;
                    *shared.latest.lock().expect("latest lock") = signed(size, root, note);
                    tracing::info!(size, "re-signed the checkpoint lost in the last crash");
                }
            }
        }
        let queue = WriterQueue::start(writer, "audit-writer", IDLE_FLUSH).map_err(|e| fail(&e))?;
        Ok(AuditLog { shared, queue })
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Why the log refuses every record right now (a write failed and it is
    /// closed until the disk takes writes again), in the words a refused
    /// caller gets; `None` while it is open. Touches no disk.
    pub fn fault(&self) -> Option<String> {
        match &*self.shared.db.read().expect("database lock") {
            DbState::Open(_) => None,
            DbState::Closed { closure, .. } => Some(self.shared.closed(closure).to_string()),
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    /// Appends records; see the module doc for when this resolves. All
    /// drafts of one call are validated first: one invalid draft and none
    /// is written.
    pub async fn record(&self, drafts: Vec<RecordDraft>) -> Result<Vec<Receipt>, AuditError> {
        self.queue_record(drafts)?
            .await
            .unwrap_or_else(|_| Err(stopped()))
    }

    /// Several independent [`AuditLog::record`] calls at once: each is
    /// queued as its own call (so they share a batch, and an invalid draft
    /// refuses only its own call), and their results come back in order.
    pub async fn record_each(
        &self,
        calls: Vec<Vec<RecordDraft>>,
    ) -> Result<Vec<Result<Vec<Receipt>, AuditError>>, AuditError> {
        if calls.len() > MAX_CALLS_PER_REQUEST {
            return Err(AuditError::TooLarge(format!(
                "{} calls in one request; at most {MAX_CALLS_PER_REQUEST}",
                calls.len()
            )));
        }
        // Every call is queued before the first answer is awaited, so the
        // writer finds them together.
        let answers: Vec<_> = calls
            .into_iter()
            .map(|drafts| self.queue_record(drafts))
            .collect();
        let mut results = Vec::with_capacity(answers.len());
        for answer in answers {
            results.push(match answer {
                Ok(answer) => answer.await.unwrap_or_else(|_| Err(stopped())),
                Err(refused) => Err(refused),
            });
        }
        Ok(results)
    }

    /// Queues one `record` call; the receiver yields its answer.
    fn queue_record(
        &self,
        drafts: Vec<RecordDraft>,
    ) -> Result<oneshot::Receiver<Result<Vec<Receipt>, AuditError>>, AuditError> {
        if drafts.len() > MAX_DRAFTS_PER_CALL {
            return Err(AuditError::TooLarge(format!(
                "{} drafts in one call; at most {MAX_DRAFTS_PER_CALL}",
                drafts.len()
            )));
        }
        self.enqueue(|reply| Job::Record {
            drafts,
            reply,
            queued_at: Instant::now(),
        })
    }

    /// Queues the job `make` builds around a reply channel; the receiver
    /// yields the reply (an error if the writer stopped first).
    fn enqueue<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Job,
    ) -> Result<oneshot::Receiver<T>, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.queue.submit(make(reply)).map_err(|_| stopped())?;
        Ok(answer)
    }

    /// [`AuditLog::enqueue`], then waits for the reply.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, AuditError> {
        self.enqueue(make)?.await.map_err(|_| stopped())
    }

    /// Commits `record` calls on the thread of the runtime that polls this
    /// future, for as long as it runs; run it as a task of its own. Each
    /// call then costs no thread hand-off: without it, calls are committed
    /// on the log's background thread, which must be woken for each batch
    /// and must wake the caller with the answer (`src/writer_queue.rs`).
    /// The audit service runs it on its one runtime thread; that thread
    /// blocks for each commit, which is the point.
    pub fn commit_here(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.queue.clone().commit_here()
    }

    /// Legacy entry point: each event becomes a `kind = event` record.
    /// Durable on return.
    pub async fn append_events(
        &self,
        events: Vec<AuditEvent>,
    ) -> Result<AppendReceipt, AuditError> {
        let count = events.len() as u64;
        let drafts = events
            .into_iter()
            .map(|e| {
                let mut d = RecordDraft::new(e.actor, e.action, e.resource, DraftKind::Event);
                d.detail = e.detail;
                d
            })
            .collect();
        let receipts = self.record(drafts).await?;
        Ok(AppendReceipt {
            first_seq: receipts.first().map_or(0, |r| r.seq),
            count,
        })
    }

    /// Replaces the signing key (OAR.md §6.3). Durable on return.
    pub async fn rotate_key(&self, requested_by: String) -> Result<RotationReport, AuditError> {
        self.ask(|reply| Job::Rotate {
            requested_by,
            reply,
        })
        .await?
    }

    /// Deletes the subject's linking key, commits durably and compacts the
    /// file, so that the key's bytes are gone from `audit.redb`.
    pub async fn erase_subject_key(&self, subject: String) -> Result<bool, AuditError> {
        self.ask(|reply| Job::Erase { subject, reply }).await?
    }

    /// Declares the kernel session this service serves; call once at start,
    /// before serving anyone. If the log was last opened for a different
    /// session (or none was recorded), every intent still open was left by a
    /// kernel that is gone: each gets a `process-died` outcome with detail
    /// [`ABANDONED_DETAIL`], durably, and the new session is stored. Returns
    /// the seqs of the intents so closed (empty within one session).
    pub async fn begin_session(&self, session: &str) -> Result<Vec<u64>, AuditError> {
        if session.is_empty() || session.len() > MAX_SESSION {
            return Err(AuditError::InvalidDraft {
                index: 0,
                reason: format!("a session name must be 1..{MAX_SESSION} bytes"),
            });
        }
        self.ask(|reply| Job::Session {
            session: session.to_owned(),
            reply,
        })
        .await?
    }

    /// Resolves once everything queued before it is committed, its
    /// checkpoint signed, and every signed checkpoint stored: then
    /// [`AuditLog::checkpoint`] covers every record acknowledged so far, and
    /// [`AuditLog::checkpoints`] lists it.
    pub async fn flush(&self) -> Result<(), AuditError> {
        self.ask(Job::Flush).await
    }

    /// Stops the writer after everything queued, stores the last checkpoint
    /// and closes the file.
    pub fn close(self) {
        let (done, wait) = mpsc::channel();
        if self.queue.submit(Job::Shutdown(done)).is_ok() {
            let _ = wait.recv();
        }
        self.queue.join();
    }

    fn begin_read(&self) -> Result<ReadTransaction, AuditError> {
        self.shared.begin_read()
    }

    /// The latest signed checkpoint (possibly not yet stored; see module doc).
    pub fn checkpoint(&self) -> SignedCheckpoint {
        self.shared.latest.lock().expect("latest lock").clone()
    }

    /// Up to `max` records from `from_seq`, at most `max_bytes` of record
    /// bytes (at least one record if any).
    pub fn read(
        &self,
        from_seq: u64,
        max: u64,
        max_bytes: usize,
    ) -> Result<RecordPage, AuditError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(RECORDS).map_err(storage)?;
        let tree_size = record_count(&table)?;
        let mut records = Vec::new();
        let mut bytes = 0usize;
        for entry in table.range(from_seq..).map_err(storage)? {
            let (_, v) = entry.map_err(storage)?;
            let value = v.value();
            if records.len() as u64 >= max
                || (!records.is_empty() && bytes + value.len() > max_bytes)
            {
                break;
            }
            bytes += value.len();
            records.push(serde_bytes::ByteBuf::from(value.to_vec()));
        }
        Ok(RecordPage { records, tree_size })
    }

    /// The last `n` records, oldest first.
    pub fn tail(&self, n: u64, max_bytes: usize) -> Result<RecordPage, AuditError> {
        let size = self.size()?;
        self.read(size.saturating_sub(n), n, max_bytes)
    }

    /// Records committed so far.
    pub fn size(&self) -> Result<u64, AuditError> {
        let txn = self.begin_read()?;
        record_count(&txn.open_table(RECORDS).map_err(storage)?)
    }

    /// Runs `f` on the stored tree (records and interior nodes) of one read
    /// transaction and the number of records it holds.
    fn with_tree<T>(
        &self,
        f: impl FnOnce(&dyn NodeSource<Error = AuditError>, u64) -> Result<T, AuditError>,
    ) -> Result<T, AuditError> {
        let txn = self.begin_read()?;
        let records = txn.open_table(RECORDS).map_err(storage)?;
        let nodes = txn.open_table(NODES).map_err(storage)?;
        let have = record_count(&records)?;
        f(
            &TxnNodes {
                records: &records,
                nodes: &nodes,
            },
            have,
        )
    }

    /// Stored checkpoints with size > `after_size`, up to `max` and `max_bytes`.
    pub fn checkpoints(
        &self,
        after_size: u64,
        max: u64,
        max_bytes: usize,
    ) -> Result<CheckpointPage, AuditError> {
        // Those signed but not stored yet are read first: one leaves memory
        // only once the commit storing it is durable, so none can fall
        // between this and the read transaction below.
        let pending = self.shared.unstored.lock().expect("unstored lock").all();
        let txn = self.begin_read()?;
        let table = txn.open_table(CHECKPOINTS).map_err(storage)?;
        let mut page = NotePage {
            out: Vec::new(),
            bytes: 0,
            max,
            max_bytes,
        };
        for entry in table
            .range(after_size.saturating_add(1)..)
            .map_err(storage)?
        {
            let (k, v) = entry.map_err(storage)?;
            if !page.take(k.value(), v.value())? {
                return Ok(CheckpointPage {
                    checkpoints: page.out,
                });
            }
        }
        for (size, note) in &pending {
            if *size > page.covered(after_size) && !page.take(*size, note)? {
                break;
            }
        }
        Ok(CheckpointPage {
            checkpoints: page.out,
        })
    }

    /// RFC 9162 inclusion proof of `seq` in the tree of `tree_size`
    /// (default: the latest checkpoint's size).
    pub fn prove_inclusion(
        &self,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, AuditError> {
        let size = tree_size.unwrap_or_else(|| self.checkpoint().size);
        self.with_tree(|source, have| {
            if size == 0 || size > have {
                return Err(AuditError::BadTreeSize {
                    requested: size,
                    size: have,
                });
            }
            if seq >= size {
                return Err(AuditError::NoSuchRecord { seq, size });
            }
            let leaf = source.node(0, seq)?;
            let path = merkle::prove_inclusion(source, seq, size).map_err(proof_failed)?;
            Ok(InclusionProof {
                seq,
                tree_size: size,
                leaf_hash: Digest(leaf),
                path: path.into_iter().map(Digest).collect(),
            })
        })
    }

    /// RFC 9162 consistency proof from `old_size` to `new_size`.
    pub fn prove_consistency(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        self.with_tree(|source, have| {
            if new_size > have || new_size == 0 {
                return Err(AuditError::BadTreeSize {
                    requested: new_size,
                    size: have,
                });
            }
            if old_size == 0 || old_size > new_size {
                return Err(AuditError::BadTreeSize {
                    requested: old_size,
                    size: new_size,
                });
            }
            let path =
                merkle::prove_consistency(source, old_size, new_size).map_err(proof_failed)?;
            Ok(ConsistencyProof {
                old_size,
                new_size,
                path: path.into_iter().map(Digest).collect(),
            })
        })
    }

    /// The root of the tree of `size` records, computed from the store.
    pub fn root_at(&self, size: u64) -> Result<Hash, AuditError> {
        self.with_tree(|source, _| merkle::root_of(source, size))
    }

    /// Every key the log has had, oldest first.
    pub fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError> {
        let txn = self.begin_read()?;
        Ok(read_keys(&txn)?
            .into_iter()
            .map(|(seq, key)| PublicKeyInfo {
                introduced_at_seq: seq,
                vkey: key.to_vkey(),
            })
            .collect())
    }

    pub fn policy_text(&self, hash: Digest) -> Result<String, AuditError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(POLICIES).map_err(storage)?;
        table
            .get(hash.0)
            .map_err(storage)?
            .map(|v| v.value().to_owned())
            .ok_or(AuditError::NoSuchPolicy(hash))
    }

    /// Whether a linking key is stored for `subject` (for tests and tools).
    pub fn has_subject_key(&self, subject: &str) -> Result<bool, AuditError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SUBJECTS).map_err(storage)?;
        Ok(table.get(subject).map_err(storage)?.is_some())
    }

    /// The subject's linking key, if any (for tests: the erasure test looks
    /// for these bytes in the file).
    pub fn subject_key_for_tests(&self, subject: &str) -> Result<Option<[u8; 32]>, AuditError> {
        let txn = self.begin_read()?;
        let table = txn.open_table(SUBJECTS).map_err(storage)?;
        Ok(table.get(subject).map_err(storage)?.map(|v| v.value()))
    }
}

fn read_keys(txn: &ReadTransaction) -> Result<Vec<(u64, PublicKey)>, AuditError> {
    let table = txn.open_table(KEYS).map_err(storage)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (k, v) = entry.map_err(storage)?;
        let key = PublicKey::parse_vkey(v.value())
            .map_err(|e| storage(format!("stored key {} is malformed: {e}", k.value())))?;
        out.push((k.value(), key));
    }
    Ok(out)
}

fn open_db(path: &Path) -> Result<Database, OpenError> {
    let p = path.to_owned();
    // redb may panic on a file it did not write; report that as damage.
    let result = sios_ipc::process::catch_panic(move || {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)?;
        Database::builder().create_with_backend(crate::zerofill::ZeroFilledFile::new(file)?)
    });
    match result {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(OpenError::AlreadyOpen {
            path: path.to_owned(),
        }),
        Ok(Err(redb::DatabaseError::Storage(redb::StorageError::Io(e))))
            if !matches!(
                e.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            Err(OpenError::Storage {
                path: path.to_owned(),
                reason: e.to_string(),
            })
        }
        Ok(Err(e)) => Err(OpenError::Corrupt {
            path: path.to_owned(),
            reason: e.to_string(),
        }),
        Err(panic) => Err(OpenError::Corrupt {
            path: path.to_owned(),
            reason: format!("the storage engine panicked while reading it: {panic}"),
        }),
    }
}

/// Loads the signing key of a non-empty log, finishing a rotation that
/// committed but did not get to replace the key file.
fn recover_key(
    data_dir: &Path,
    db: &Path,
    records: u64,
    current: &PublicKey,
) -> Result<SecretKey, OpenError> {
    let secret_path = data_dir.join(keys::SECRET_FILE);
    let next_path = data_dir.join(keys::NEXT_SECRET_FILE);
    if next_path.exists() {
        let next = match SecretKey::load(&next_path) {
            Ok(next) => next,
            Err(why) => {
                // Written and synced in full before its rotation commits, so
                // a next key that does not load was never committed (a kill
                // mid-write): set it aside, never fail every start on it.
                let aside = next_path.with_extension(format!("next.unusable-{}", now_ms()));
                tracing::warn!(
                    file = %next_path.display(),
                    moved_to = %aside.display(),
                    "the key of an interrupted rotation does not load ({why}); it was never in use, so it is set aside"
                );
                std::fs::rename(&next_path, &aside).map_err(|e| OpenError::Storage {
                    path: next_path.clone(),
                    reason: e.to_string(),
                })?;
                return recover_key(data_dir, db, records, current);
            }
        };
        if next.public() == current {
            std::fs::rename(&next_path, &secret_path).map_err(|e| OpenError::Storage {
                path: secret_path.clone(),
                reason: e.to_string(),
            })?;
            keys::sync_parent(&secret_path)?;
            keys::write_public(&data_dir.join(keys::PUBLIC_FILE), current)?;
            tracing::info!(key = %current.id_hex(), "finished an interrupted key rotation");
            return Ok(next);
        }
        // A rotation that never committed: its key was never used.
        let _ = std::fs::remove_file(&next_path);
    }
    if !secret_path.exists() {
        return Err(OpenError::MissingKey {
            key_path: secret_path,
            db: db.to_owned(),
            records,
            expected: current.id_hex(),
        });
    }
    let key = SecretKey::load(&secret_path)?;
    if key.public() != current {
        return Err(OpenError::WrongKey {
            key_path: secret_path,
            db: db.to_owned(),
            found: key.public().id_hex(),
            expected: current.id_hex(),
        });
    }
    // The public key file follows the key in force: a rotation whose last
    // step failed may have left it missing or naming the old key.
    let public_path = data_dir.join(keys::PUBLIC_FILE);
    if keys::read_public(&public_path).ok().as_ref() != Some(current) {
        keys::write_public(&public_path, current)?;
        tracing::info!(key = %current.id_hex(), file = %public_path.display(), "rewrote the public key file to the key in force");
    }
    Ok(key)
}

struct Writer {
    shared: Arc<Shared>,
    tree: TreeState,
    origin: String,
    key: Arc<SecretKey>,
    data_dir: PathBuf,
    /// Linking keys seen so far (a cache of the `subjects` table).
    subjects: HashMap<String, [u8; 32]>,
    /// Linking keys not stored until an outcome reports success.
    pending_links: PendingLinks,
    open: OpenIntents,
    /// An erasure's scrub failed and must be redone.
    scrub_pending: bool,
    signer: Signer,
    /// When the last durable commit returned.
    last_commit: Instant,
    /// Since when writes fail (the log closes and reopens meanwhile; see
    /// [`DbState::Closed`]): logged once when it starts and once when it ends.
    failing_since: Option<Instant>,
}

impl crate::writer_queue::Worker for Writer {
    type Job = Job;

    fn inline(job: &Job) -> bool {
        matches!(job, Job::Record { .. })
    }

    /// Consecutive `record` calls up to [`MAX_BATCH_RECORDS`] records, or
    /// one control job.
    fn next_batch(jobs: &mut VecDeque<Job>) -> Vec<Job> {
        let first = jobs.pop_front().expect("next_batch is given a job");
        let mut records = match &first {
            Job::Record { drafts, .. } => drafts.len(),
            _ => return vec![first],
        };
        let mut batch = vec![first];
        while records < MAX_BATCH_RECORDS
            && let Some(Job::Record { drafts, .. }) = jobs.front()
        {
            records += drafts.len();
            batch.push(jobs.pop_front().expect("front checked"));
        }
        batch
    }

    fn perform(&mut self, batch: Vec<Job>) -> bool {
        let mut calls = Vec::with_capacity(batch.len());
        for job in batch {
            match job {
                Job::Record {
                    drafts,
                    reply,
                    queued_at,
                } => {
                    let stages = self.shared.stats.timings.of(has_intent(&drafts));
                    stages.queued.record(queued_at.elapsed());
                    calls.push((drafts, reply));
                }
                Job::Shutdown(done) => {
                    self.finish();
                    let _ = done.send(());
                    return false;
                }
                Job::Rotate {
                    requested_by,
                    reply,
                } => {
                    let result = self.rotate(&requested_by);
                    if result.is_err() {
                        self.reload();
                    }
                    let _ = reply.send(result);
                }
                Job::Erase { subject, reply } => {
                    let _ = reply.send(self.erase(&subject));
                }
                Job::Session { session, reply } => {
                    let _ = reply.send(self.begin_session(&session));
                }
                Job::Flush(reply) => {
                    self.signer.drain();
                    self.store_unstored();
                    let _ = reply.send(());
                }
            }
        }
        if !calls.is_empty() {
            self.write_batch(calls);
        }
        true
    }

    /// Stores the checkpoints signed since the last commit if no commit
    /// came for [`IDLE_FLUSH`] to carry them. Reopens a log a failed write
    /// closed, so that reads come back once the disk takes writes again
    /// even if no write comes to reopen it.
    fn idle(&mut self) {
        // Every 20 ms while closed: `ensure_open` logs its attempts (once a
        // second); the refusals in between are not news.
        if self.ensure_open().is_err() {
            return;
        }
        if self.last_commit.elapsed() >= IDLE_FLUSH {
            self.store_unstored();
        }
    }

    fn finish(&mut self) {
        self.signer.stop();
        self.store_unstored();
    }
}

/// One queued `record` call: its drafts and where to answer.
type Call = (Vec<RecordDraft>, Reply);
type Reply = oneshot::Sender<Result<Vec<Receipt>, AuditError>>;

/// One `record` call, validated and turned into records.
struct Prepared {
    reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
    receipts: Vec<Receipt>,
    has_intent: bool,
}

impl Writer {
    fn begin_write(&mut self) -> Result<WriteTransaction, AuditError> {
        self.ensure_open()?;
        let begun = match &*self.shared.db.read().expect("database lock") {
            DbState::Open(db) => db.begin_write(),
            DbState::Closed { closure, .. } => return Err(self.shared.closed(closure)),
        };
        let mut txn = match begun {
            Ok(txn) => txn,
            Err(err) => {
                let cause = format!("a write to its file could not begin ({err})");
                return Err(self.close_after_failure(&cause));
            }
        };
        txn.set_durability(Durability::Immediate).map_err(storage)?;
        Ok(txn)
    }

    /// A failed commit closes the log (see [`DbState::Closed`]).
    fn commit(&mut self, txn: WriteTransaction) -> Result<(), AuditError> {
        if let Err(err) = txn.commit() {
            return Err(self.close_after_failure(&format!("a commit to its file failed ({err})")));
        }
        self.last_commit = Instant::now();
        self.shared.stats.commits.fetch_add(1, Ordering::Relaxed);
        if let Some(since) = self.failing_since.take() {
            tracing::info!(
                after_s = since.elapsed().as_secs(),
                "the audit log takes writes again; records are accepted"
            );
        }
        Ok(())
    }

    /// Closes the database after a failed write and returns what callers
    /// are told until it reopens.
    fn close_after_failure(&mut self, cause: &str) -> AuditError {
        let dir = self.shared.path.parent().unwrap_or(&self.shared.path);
        let closure = Closure::after_failed_write(cause.to_owned(), dir);
        if self.failing_since.is_none() {
            self.failing_since = Some(Instant::now());
            tracing::error!(
                "the audit log is closed: {cause}; refusing every record until it can be written again"
            );
        } else {
            tracing::debug!("the audit log is closed again: {cause}");
        }
        let refusal = self.shared.closed(&closure);
        let mut db = self.shared.db.write().expect("database lock");
        // Dropping the database releases the file (once no reader holds a
        // transaction on it), so that it can be opened again.
        *db = DbState::Closed {
            closure,
            tried_at: Instant::now(),
        };
        drop(db);
        refusal
    }

    /// Reopens a log closed after a failed write, at most once per
    /// [`REOPEN_EVERY`], and re-reads the tree from its last durable commit.
    fn ensure_open(&mut self) -> Result<(), AuditError> {
        // The usual case, without holding readers off.
        if matches!(
            *self.shared.db.read().expect("database lock"),
            DbState::Open(_)
        ) {
            return Ok(());
        }
        let mut db = self.shared.db.write().expect("database lock");
        let DbState::Closed { closure, tried_at } = &mut *db else {
            return Ok(());
        };
        if tried_at.elapsed() < REOPEN_EVERY {
            return Err(self.shared.closed(closure));
        }
        *tried_at = Instant::now();
        // Reopening needs no new space: first check the disk has some, or a
        // still-full disk would pass for a healthy log until the next write.
        let dir = self.shared.path.parent().unwrap_or(&self.shared.path);
        if let Err(err) = storage::check_room(dir, storage::REOPEN_ROOM_BYTES) {
            tracing::debug!(error = %err, "the audit log's disk has no room yet");
            closure.room_check_failed(&err);
            return Err(self.shared.closed(closure));
        }
        match open_db(&self.shared.path) {
            Ok(reopened) => {
                tracing::debug!(after = %closure.cause, "the audit log reopened");
                *db = DbState::Open(reopened);
                drop(db);
                self.reload();
                Ok(())
            }
            Err(err) => {
                tracing::debug!(error = %err, "the audit log could not be reopened yet");
                // The disk had room a moment ago (checked above): unless the
                // file is damaged, the disk is to blame.
                let remedy = match err {
                    OpenError::Corrupt { .. } => Remedy::RestoreFile,
                    _ => Remedy::CheckDisk,
                };
                closure.reopen_failed(err.to_string(), remedy);
                Err(self.shared.closed(closure))
            }
        }
    }

    fn sign_now(&self, size: u64, root: Hash, keys: &[Arc<SecretKey>]) -> String {
        self.shared.stats.signatures.fetch_add(1, Ordering::Relaxed);
        let cp = Checkpoint {
            origin: self.origin.clone(),
            size,
            root,
        };
        let refs: Vec<&SecretKey> = keys.iter().map(|k| k.as_ref()).collect();
        cp.sign(&refs)
    }

    fn persist_checkpoint(&mut self, size: u64, note: &str) -> Result<(), AuditError> {
        let txn = self.begin_write()?;
        txn.open_table(CHECKPOINTS)
            .map_err(storage)?
            .insert(size, note)
            .map_err(storage)?;
        self.commit(txn)
    }

    /// Writes record 0 (`log.init`, naming the key) and its checkpoint.
    fn genesis(&mut self) -> Result<(), AuditError> {
        let record = Record {
            seq: 0,
            time_ms: now_ms(),
            kind: Kind::Event,
            actor: "sios-audit".into(),
            action: record::ACTION_LOG_INIT.into(),
            resource: self.origin.clone(),
            prev: [0; 32],
            decision: None,
            subject: None,
            inputs: vec![],
            outputs: vec![],
            brain: None,
            policy: None,
            public_key: Some(self.key.public().bytes().to_vec()),
            detail: format!("log created; signing key {}", self.key.public().id_hex()),
        };
        let txn = self.begin_write()?;
        let bytes = record.encode();
        {
            let mut records = txn.open_table(RECORDS).map_err(storage)?;
            records.insert(0, bytes.as_slice()).map_err(storage)?;
            let mut keys_t = txn.open_table(KEYS).map_err(storage)?;
            keys_t
                .insert(0, self.key.public().to_vkey().as_str())
                .map_err(storage)?;
            let mut meta = txn.open_table(META).map_err(storage)?;
            meta.insert("origin", self.origin.as_str())
                .map_err(storage)?;
        }
        let leaf = Record::hash_of(&bytes);
        self.tree.frontier.push(leaf, |_, _, _| {});
        self.tree.last_hash = leaf;
        self.tree.last_time = record.time_ms;
        let root = self.tree.frontier.root();
        let note = self.sign_now(1, root, std::slice::from_ref(&self.key));
        txn.open_table(CHECKPOINTS)
            .map_err(storage)?
            .insert(1, note.as_str())
            .map_err(storage)?;
        self.commit(txn)?;
        *self.shared.latest.lock().expect("latest lock") = signed(1, root, note);
        tracing::info!(origin = %self.origin, key = %self.key.public().id_hex(), "new audit log created");
        Ok(())
    }

    /// Stores the checkpoints signed since the last commit, in a commit of
    /// their own (used when no batch comes to carry them).
    fn store_unstored(&mut self) {
        let notes = self.unstored().all();
        if notes.is_empty() {
            return;
        }
        let result = self.begin_write().and_then(|txn| {
            if let Err(err) = insert_notes(&txn, &notes) {
                drop(txn);
                return Err(self.close_after_failure(&write_failed(&err)));
            }
            self.commit(txn)
        });
        match result {
            Ok(()) => self.unstored().stored(&notes),
            Err(err) => {
                // Not lost: they stay in memory, and the next open re-signs
                // the latest identically. A closed log has said why already.
                if self.failing_since.is_none() {
                    tracing::warn!(error = %err, "could not store the latest checkpoints yet");
                }
                self.unstored().not_stored(&notes);
            }
        }
    }

    fn unstored(&self) -> std::sync::MutexGuard<'_, UnstoredNotes> {
        self.shared.unstored.lock().expect("unstored lock")
    }

    /// A batch that could not be committed: every caller gets the error, the
    /// notes it carried wait for the next commit, and the tree state is
    /// re-read from the last commit (at once, or when a closed log reopens).
    fn fail_batch(&mut self, prepared: Vec<Prepared>, err: AuditError, notes: Vec<(u64, String)>) {
        for p in prepared {
            let _ = p.reply.send(Err(err.clone()));
        }
        self.unstored().not_stored(&notes);
        self.reload();
    }

    /// Re-reads the tree state after a failed commit (a closed log does it
    /// when it reopens).
    fn reload(&mut self) {
        if matches!(
            *self.shared.db.read().expect("database lock"),
            DbState::Closed { .. }
        ) {
            return;
        }
        self.subjects.clear();
        let loaded = self.shared.begin_read().and_then(|t| load_tree(&t));
        let loaded = loaded.and_then(|tree| {
            let open = load_open(&self.shared.begin_read()?, tree.frontier.size())?;
            Ok((tree, open))
        });
        match loaded {
            Ok((tree, open)) => {
                // Keys held for intents the failed batch wrote vanish with
                // it; those of committed intents still wait for outcomes.
                self.pending_links.keep_intents_below(tree.frontier.size());
                self.tree = tree;
                self.open = open;
            }
            Err(err) => {
                self.pending_links.clear();
                tracing::error!(error = %err, "could not reload the tree after a failed write")
            }
        }
    }

    /// `subject`'s linking key, made if it has none. `kept_on_success`: the
    /// intent (by seq) asked that a key made for it be stored only with a
    /// successful outcome; it is held in [`PendingLinks`] until then.
    fn linking_key(
        &mut self,
        subjects: &mut redb::Table<'_, &'static str, [u8; 32]>,
        subject: &str,
        kept_on_success: Option<u64>,
    ) -> Result<[u8; 32], AuditError> {
        if let Some(k) = self.subjects.get(subject) {
            return Ok(*k);
        }
        if let Some(stored) = subjects.get(subject).map_err(storage)?.map(|v| v.value()) {
            self.subjects.insert(subject.to_owned(), stored);
            return Ok(stored);
        }
        let fresh = || linking::fresh_key().map_err(|e| storage(format!("random: {e}")));
        if let Some(seq) = kept_on_success {
            if let Some(held) = self.pending_links.join(subject, seq) {
                return Ok(held);
            }
            let key = fresh()?;
            self.pending_links.hold(subject, key, seq);
            return Ok(key);
        }
        // A record that keeps its key at once also keeps one held for others.
        let key = match self.pending_links.take(subject) {
            Some(held) => held,
            None => fresh()?,
        };
        self.store_linking_key(subjects, subject, key)?;
        Ok(key)
    }

    fn store_linking_key(
        &mut self,
        subjects: &mut redb::Table<'_, &'static str, [u8; 32]>,
        subject: &str,
        key: [u8; 32],
    ) -> Result<(), AuditError> {
        subjects.insert(subject, key).map_err(storage)?;
        self.subjects.insert(subject.to_owned(), key);
        Ok(())
    }

    fn write_batch(&mut self, batch: Vec<Call>) {
        let started = Instant::now();
        let mut txn = match self.begin_write() {
            Ok(t) => t,
            Err(err) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let start_size = self.tree.frontier.size();
        let prepared = match self.fill(&mut txn, batch) {
            Ok(p) => p,
            Err((err, replies)) => {
                drop(txn);
                // A write the storage refused: the database must be reopened
                // before it takes another (see `DbState::Closed`).
                let err = self.close_after_failure(&write_failed(&err));
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
                return;
            }
        };
        let size = self.tree.frontier.size();
        if size == start_size {
            // Every call in the batch was refused: nothing to commit.
            drop(txn);
            for p in prepared {
                let _ = p.reply.send(Ok(p.receipts));
            }
            return;
        }
        // Signed checkpoints waiting to be stored ride along, when due.
        let notes = self.unstored().due(Instant::now());
        // A write the storage refused leaves the database unusable until
        // reopened: the batch fails with the real cause (see `DbState`).
        if !notes.is_empty()
            && let Err(err) = insert_notes(&txn, &notes)
        {
            drop(txn);
            let err = self.close_after_failure(&write_failed(&err));
            self.fail_batch(prepared, err, notes);
            return;
        }
        let open_persisted = match self.open.persist(&txn, size, false) {
            Ok(done) => done,
            Err(err) => {
                drop(txn);
                let err = self.close_after_failure(&write_failed(&err));
                self.fail_batch(prepared, err, notes);
                return;
            }
        };
        let batch_has_intent = prepared.iter().any(|p| p.has_intent);
        if batch_has_intent {
            self.signer
                .presign(size, self.tree.frontier.root(), self.key.clone());
        }
        let committing = Instant::now();
        if let Err(err) = self.commit(txn) {
            self.fail_batch(prepared, err, notes);
            return;
        }
        let committed_at = Instant::now();
        let stages = self.shared.stats.timings.of(batch_has_intent);
        stages.prepared.record(committing - started);
        stages.committed.record(committed_at - committing);
        if open_persisted {
            self.open.persisted(size);
        }
        self.unstored().stored(&notes);
        let root = self.tree.frontier.root();
        let stats = &self.shared.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.record_commits.fetch_add(1, Ordering::Relaxed);
        stats
            .records
            .fetch_add(size - start_size, Ordering::Relaxed);
        // Durable: answer the calls that wait only for durability; hand the
        // intents to the signer.
        let mut waiters = Vec::new();
        for p in prepared {
            if p.has_intent {
                waiters.push(Waiter {
                    reply: p.reply,
                    receipts: p.receipts,
                    committed_at,
                });
            } else {
                let _ = p.reply.send(Ok(p.receipts));
                let answered = &self.shared.stats.timings.durable_only.answered;
                answered.record(committed_at.elapsed());
            }
        }
        self.signer
            .committed(&self.shared, size, root, self.key.clone(), waiters);
    }

    /// Validates each call and writes its records into `txn`. A call with an
    /// invalid draft is answered with the error and writes nothing. A storage
    /// error fails the whole batch (returned with every reply not yet sent).
    fn fill(
        &mut self,
        txn: &mut WriteTransaction,
        batch: Vec<Call>,
    ) -> Result<Vec<Prepared>, (AuditError, Vec<Reply>)> {
        let mut records = txn.open_table(RECORDS).map_err(|e| (storage(e), vec![]))?;
        let mut nodes = txn.open_table(NODES).map_err(|e| (storage(e), vec![]))?;
        let mut subjects = txn.open_table(SUBJECTS).map_err(|e| (storage(e), vec![]))?;
        let mut policies = txn.open_table(POLICIES).map_err(|e| (storage(e), vec![]))?;
        let mut out: Vec<Prepared> = Vec::with_capacity(batch.len());
        let mut iter = batch.into_iter();
        while let Some((drafts, reply)) = iter.next() {
            let base = self.tree.frontier.size();
            let pending = &self.pending_links;
            match check_call(&drafts, base, &self.open.open, &|seq| pending.waits(seq)) {
                Ok(()) => {}
                Err(AuditError::Storage(e)) => {
                    let mut replies: Vec<_> = out.into_iter().map(|p| p.reply).collect();
                    replies.push(reply);
                    replies.extend(iter.map(|(_, r)| r));
                    return Err((AuditError::Storage(e), replies));
                }
                Err(refusal) => {
                    let _ = reply.send(Err(refusal));
                    continue;
                }
            }
            let mut receipts = Vec::with_capacity(drafts.len());
            let call_has_intent = has_intent(&drafts);
            let applied: Result<(), AuditError> = (|| {
                for draft in drafts {
                    let r = self.build(draft, &mut subjects, &mut policies)?;
                    let bytes = r.encode();
                    let leaf = Record::hash_of(&bytes);
                    self.open.apply(&r);
                    records.insert(r.seq, bytes.as_slice()).map_err(storage)?;
                    let mut node_err = None;
                    self.tree.frontier.push(leaf, |level, index, hash| {
                        keep_node(level, index, hash, |k, h| {
                            if let Err(e) = nodes.insert(k, h) {
                                node_err = Some(storage(e));
                            }
                        })
                    });
                    if let Some(e) = node_err {
                        return Err(e);
                    }
                    self.tree.last_hash = leaf;
                    self.tree.last_time = r.time_ms;
                    receipts.push(Receipt {
                        seq: r.seq,
                        record_hash: Digest(leaf),
                        checkpoint_size: None,
                    });
                }
                Ok(())
            })();
            if let Err(err) = applied {
                let mut replies: Vec<_> = out.into_iter().map(|p| p.reply).collect();
                replies.push(reply);
                replies.extend(iter.map(|(_, r)| r));
                return Err((err, replies));
            }
            out.push(Prepared {
                reply,
                receipts,
                has_intent: call_has_intent,
            });
        }
        Ok(out)
    }

    fn build(
        &mut self,
        draft: RecordDraft,
        subjects: &mut redb::Table<'_, &'static str, [u8; 32]>,
        policies: &mut redb::Table<'_, [u8; 32], &'static str>,
    ) -> Result<Record, AuditError> {
        let seq = self.tree.frontier.size();
        // An outcome settles a key held for its intent: kept with an `ok`,
        // dropped otherwise. (Such an outcome names no subject of its own:
        // `check_call` refuses that.)
        if let DraftKind::Outcome { intent_seq, result } = &draft.kind {
            let ok = *result == ActionResult::Ok;
            if let Some((name, key)) = self.pending_links.settle(*intent_seq, ok) {
                self.store_linking_key(subjects, &name, key)?;
            }
        }
        let (subject, inputs, outputs) = match &draft.subject {
            Some(s) => {
                let kept_on_success = draft.link_kept_on_success.then_some(seq);
                let k = self.linking_key(subjects, s, kept_on_success)?;
                (
                    Some(linking::subject_ref(&k)),
                    draft
                        .input_digests
                        .iter()
                        .map(|d| linking::keyed(&k, &d.0))
                        .collect(),
                    draft
                        .output_digests
                        .iter()
                        .map(|d| linking::keyed(&k, &d.0))
                        .collect(),
                )
            }
            None => (None, vec![], vec![]),
        };
        let policy = match &draft.policy_text {
            Some(text) => {
                let h: Hash = Sha256::digest(text.as_bytes()).into();
                if policies.get(h).map_err(storage)?.is_none() {
                    policies.insert(h, text.as_str()).map_err(storage)?;
                }
                Some(h)
            }
            None => None,
        };
        let kind = match draft.kind {
            DraftKind::Event => Kind::Event,
            DraftKind::Intent => Kind::Intent,
            DraftKind::Outcome { intent_seq, result } => Kind::Outcome { intent_seq, result },
        };
        let time_ms = now_ms().max(self.tree.last_time);
        Ok(Record {
            seq,
            time_ms,
            kind,
            actor: draft.actor,
            action: draft.action,
            resource: draft.resource,
            prev: self.tree.last_hash,
            decision: draft.decision.map(|d| {
                let mut ids = d.policy_ids;
                ids.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
                ids.dedup();
                RecordDecision {
                    effect: d.effect,
                    policy_hash: d.policy_hash.0,
                    policy_ids: ids,
                }
            }),
            subject,
            inputs,
            outputs,
            brain: draft.brain.map(|b| (b.id, b.model_sha256.0)),
            policy,
            public_key: None,
            detail: draft.detail,
        })
    }

    /// OAR.md §6.3: a `key.rotate` record in a batch of its own, whose
    /// checkpoint both keys sign, in one durable commit; then the key files.
    fn rotate(&mut self, requested_by: &str) -> Result<RotationReport, AuditError> {
        // Everything before the rotation is signed by the old key first.
        self.signer.drain();
        self.store_unstored();
        if requested_by.is_empty() || requested_by.len() > record::MAX_NAME {
            return Err(AuditError::InvalidDraft {
                index: 0,
                reason: "requested_by must be 1..512 bytes".into(),
            });
        }
        let key_err = |e: KeyError| AuditError::Key(e.to_string());
        // Begun before the tree is read: beginning may reopen a log closed
        // after a failed commit, which reloads the tree to what is on disk.
        let txn = self.begin_write()?;
        let next_path = self.data_dir.join(keys::NEXT_SECRET_FILE);
        let _ = std::fs::remove_file(&next_path);
        let next = Arc::new(SecretKey::generate(&self.origin).map_err(key_err)?);
        next.store(&next_path).map_err(key_err)?;
        let old = self.key.clone();
        let seq = self.tree.frontier.size();
        let record = Record {
            seq,
            time_ms: now_ms().max(self.tree.last_time),
            kind: Kind::Event,
            actor: requested_by.to_owned(),
            action: record::ACTION_KEY_ROTATE.into(),
            resource: format!("key:{}", next.public().id_hex()),
            prev: self.tree.last_hash,
            decision: None,
            subject: None,
            inputs: vec![],
            outputs: vec![],
            brain: None,
            policy: None,
            public_key: Some(next.public().bytes().to_vec()),
            detail: format!("replaces key {}", old.public().id_hex()),
        };
        let bytes = record.encode();
        let leaf = Record::hash_of(&bytes);
        let mut frontier = self.tree.frontier.clone();
        let mut new_nodes = Vec::new();
        frontier.push(leaf, |l, i, h| {
            keep_node(l, i, h, |k, h| new_nodes.push((k, h)))
        });
        let size = frontier.size();
        let root = frontier.root();
        let note = self.sign_now(size, root, &[old.clone(), next.clone()]);
        {
            let mut records = txn.open_table(RECORDS).map_err(storage)?;
            records.insert(seq, bytes.as_slice()).map_err(storage)?;
            let mut nodes = txn.open_table(NODES).map_err(storage)?;
            for (k, h) in new_nodes {
                nodes.insert(k, h).map_err(storage)?;
            }
            let mut keys_t = txn.open_table(KEYS).map_err(storage)?;
            keys_t
                .insert(seq, next.public().to_vkey().as_str())
                .map_err(storage)?;
            let mut cps = txn.open_table(CHECKPOINTS).map_err(storage)?;
            cps.insert(size, note.as_str()).map_err(storage)?;
        }
        self.commit(txn)?;
        self.tree.frontier = frontier;
        self.tree.last_hash = leaf;
        self.tree.last_time = record.time_ms;
        self.shared.stats.records.fetch_add(1, Ordering::Relaxed);
        // Committed: the log now names the new key, and from here on only it
        // may sign (OAR.md §6.3), whatever becomes of the key files.
        self.key = next;
        let checkpoint = signed(size, root, note);
        *self.shared.latest.lock().expect("latest lock") = checkpoint.clone();
        // Then the key files. A failure here loses nothing: the new key is in
        // `signing.key.next`, synced before the commit, and the next start
        // finishes the rotation from it (`recover_key`).
        if let Err(why) = self.install_key_files(&next_path) {
            tracing::error!(
                "the key rotation is committed and the new key signs, but its key files were not \
                 all replaced ({why}); the next start of the audit service finishes this from {}",
                next_path.display()
            );
        }
        tracing::info!(old = %old.public().id_hex(), new = %self.key.public().id_hex(), seq, "signing key rotated");
        Ok(RotationReport {
            seq,
            old_key_id: old.public().id_hex(),
            new_key_id: self.key.public().id_hex(),
            checkpoint,
        })
    }

    /// Makes the key in `next_path` the service's key file and writes its
    /// public key beside it.
    fn install_key_files(&self, next_path: &Path) -> Result<(), String> {
        let secret_path = self.data_dir.join(keys::SECRET_FILE);
        std::fs::rename(next_path, &secret_path)
            .map_err(|e| format!("{}: {e}", secret_path.display()))?;
        keys::sync_parent(&secret_path).map_err(|e| e.to_string())?;
        keys::write_public(&self.data_dir.join(keys::PUBLIC_FILE), self.key.public())
            .map_err(|e| e.to_string())
    }

    /// See [`AuditLog::begin_session`]. The outcomes go through the normal
    /// write path (validated, one batch, durable); the session is stored
    /// after them, so a crash in between only means the next start finds no
    /// open intents left to close.
    fn begin_session(&mut self, session: &str) -> Result<Vec<u64>, AuditError> {
        let drafts = {
            let txn = self.shared.begin_read()?;
            let meta = txn.open_table(META).map_err(storage)?;
            let previous = meta.get("session").map_err(storage)?;
            if previous.as_ref().map(|v| v.value()) == Some(session) {
                return Ok(Vec::new());
            }
            let records = txn.open_table(RECORDS).map_err(storage)?;
            let mut drafts = Vec::new();
            for &seq in self.open.open.keys() {
                let bytes = records
                    .get(seq)
                    .map_err(storage)?
                    .ok_or_else(|| storage(format!("open intent {seq} is missing")))?;
                let intent = Record::decode(bytes.value())
                    .map_err(|e| storage(format!("open intent {seq} does not decode: {e}")))?;
                // An outcome repeats its intent's actor, action and resource
                // (OAR.md §8); the brain too, so the record reads on its own.
                let mut d = RecordDraft::new(
                    intent.actor,
                    intent.action,
                    intent.resource,
                    DraftKind::Outcome {
                        intent_seq: seq,
                        result: ActionResult::ProcessDied,
                    },
                );
                d.brain = intent.brain.map(|(id, hash)| BrainRef {
                    id,
                    model_sha256: Digest(hash),
                });
                d.detail = ABANDONED_DETAIL.to_owned();
                drafts.push(d);
            }
            drafts
        };
        let closed: Vec<u64> = drafts
            .iter()
            .filter_map(|d| match d.kind {
                DraftKind::Outcome { intent_seq, .. } => Some(intent_seq),
                _ => None,
            })
            .collect();
        for chunk in drafts.chunks(MAX_DRAFTS_PER_CALL) {
            let (reply, mut answer) = oneshot::channel();
            // Outcomes only: answered as soon as the batch is durable, before
            // `write_batch` returns.
            self.write_batch(vec![(chunk.to_vec(), reply)]);
            answer
                .try_recv()
                .map_err(|_| storage("the abandoned intents were not answered"))??;
        }
        let txn = self.begin_write()?;
        txn.open_table(META)
            .map_err(storage)?
            .insert("session", session)
            .map_err(storage)?;
        self.commit(txn)?;
        if !closed.is_empty() {
            tracing::warn!(
                count = closed.len(),
                "intents left open by the previous kernel session recorded as process-died"
            );
        }
        Ok(closed)
    }

    /// Deletes the linking key, then compacts the file and overwrites its
    /// free pages so that the key's bytes do not survive in it.
    fn erase(&mut self, subject: &str) -> Result<bool, AuditError> {
        self.subjects.remove(subject);
        // A key never stored needs no scrub: dropping it is its erasure.
        self.pending_links.take(subject);
        let txn = self.begin_write()?;
        let existed = {
            let mut table = txn.open_table(SUBJECTS).map_err(storage)?;
            table.remove(subject).map_err(storage)?.is_some()
        };
        self.commit(txn)?;
        if existed || self.scrub_pending {
            // Erased for good already; the scrub removes the stale bytes.
            // If it fails, the next erase call (of any subject) retries it.
            self.scrub_pending = true;
            self.scrub().map_err(|e| {
                storage(format!(
                    "the key is deleted, but its bytes may remain in the file until a scrub \
                     succeeds; call erase again to retry ({e})"
                ))
            })?;
            self.scrub_pending = false;
            tracing::info!("a subject linking key was erased");
        }
        Ok(existed)
    }

    /// Makes freed pages unreadable: redb does not zero a page it frees, so
    /// fill every free page with fresh bytes (a scratch table), drop it, and
    /// compact, which also truncates the file.
    fn scrub(&mut self) -> Result<(), AuditError> {
        const SCRATCH: TableDefinition<u64, &[u8]> = TableDefinition::new("scrub-scratch");
        // Two empty commits let redb release the pages freed by the deletion.
        for _ in 0..2 {
            let txn = self.begin_write()?;
            self.commit(txn)?;
        }
        let free_bytes = {
            let txn = self.begin_write()?;
            let stats = txn.stats().map_err(storage)?;
            drop(txn);
            stats.fragmented_bytes()
        };
        let chunk = vec![0u8; 2048];
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(SCRATCH).map_err(storage)?;
            let n = free_bytes / 2048 + 64;
            for i in 0..n {
                t.insert(i, chunk.as_slice()).map_err(storage)?;
            }
        }
        self.commit(txn)?;
        let txn = self.begin_write()?;
        txn.delete_table(SCRATCH).map_err(storage)?;
        self.commit(txn)?;
        for _ in 0..2 {
            let txn = self.begin_write()?;
            self.commit(txn)?;
        }
        // Compaction needs the database to itself: wait for readers to finish.
        for attempt in 0.. {
            let mut state = self.shared.db.write().expect("database lock");
            let db = match &mut *state {
                DbState::Open(db) => db,
                DbState::Closed { closure, .. } => return Err(self.shared.closed(closure)),
            };
            match db.compact() {
                Ok(_) => return Ok(()),
                Err(redb::CompactionError::TransactionInProgress) if attempt < 200 => {
                    drop(state);
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(storage(format!("compaction after erasure failed: {e}"))),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waiting checkpoints go with a record commit once
    /// [`NOTES_PER_STORE`] wait or the oldest has waited [`IDLE_FLUSH`];
    /// they leave memory only once a commit holding them is durable, and
    /// after a failed one they go with the next.
    #[test]
    fn unstored_checkpoints_are_due_by_count_by_age_or_after_a_failure() {
        let t0 = Instant::now();
        let mut u = UnstoredNotes::default();
        let note = |size: u64| (size, format!("note {size}"));
        for size in 2..2 + NOTES_PER_STORE as u64 - 1 {
            u.push(size, note(size).1, t0);
        }
        let just_under = t0 + IDLE_FLUSH - Duration::from_millis(1);
        assert!(u.due(just_under).is_empty(), "too few, too young");
        let last = 1 + NOTES_PER_STORE as u64;
        u.push(last, note(last).1, just_under);
        let all: Vec<_> = (2..=last).map(note).collect();
        let carried = u.due(just_under);
        assert_eq!(carried, all, "enough of them");
        // Signed while that commit ran: stays.
        u.push(last + 1, note(last + 1).1, just_under);
        assert_eq!(u.all().len(), all.len() + 1, "kept until stored");
        u.stored(&carried);
        assert_eq!(u.all(), vec![note(last + 1)], "the stored ones left");
        assert!(u.due(just_under).is_empty());
        assert_eq!(
            u.due(just_under + IDLE_FLUSH),
            vec![note(last + 1)],
            "the oldest waited long enough"
        );

        let failed = u.due(just_under + IDLE_FLUSH);
        u.not_stored(&failed);
        u.push(50, note(50).1, t0 + IDLE_FLUSH * 10);
        assert_eq!(
            u.due(t0 + IDLE_FLUSH * 10),
            vec![note(last + 1), note(50)],
            "after a failed commit, the next carries them all"
        );
        // One of a smaller tree signed while that commit ran stays.
        u.push(45, note(45).1, t0 + IDLE_FLUSH * 10);
        u.stored(&[note(last + 1), note(50)]);
        assert_eq!(u.all(), vec![note(45)], "only what was stored left");
        u.stored(&[note(45)]);
        assert!(u.all().is_empty());
        assert!(u.due(t0 + IDLE_FLUSH * 10).is_empty(), "nothing to retry");
    }
}
