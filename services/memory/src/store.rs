//! The store: memory.redb (rows, indexes, erasure tombstones) plus the
//! subject-key file, and the in-memory vector index.
//!
//! # Tables of memory.redb
//! | table | key | value |
//! |---|---|---|
//! | `items.v1` | (namespace, key) | a [`Row`]: clear header + sealed attrs + sealed value |
//! | `subject_items.v1` | (subject handle, namespace, key) | () — finds a subject's items |
//! | `namespaces.v1` | namespace | number of items in it (a namespace exists while > 0) |
//! | `erasing.v1` | subject handle | slot it had in the key file — an erasure in progress |
//! | `meta.v1` | name | u64 (`compaction_due`) |
//!
//! # Writes
//! One [`Mutex`] serialises writers (the key file and redb's single writer);
//! readers never wait for it. Every write transaction commits with
//! `Durability::Immediate`, and a new subject key is written and
//! `fdatasync`ed before the first transaction that uses it, so an
//! acknowledged write is on disk with the key that opens it. A write the
//! disk refuses closes memory.redb until it can be reopened (see
//! `DbState`).
//!
//! # Erasure, and why nothing comes back
//! 1. Commit a tombstone `erasing[handle]` (durable). From here the erasure
//!    always completes: on restart, [`MemoryStore::open`] finishes every
//!    tombstoned erasure before the store is served.
//! 2. Remove the subject's entries from the vector index, then destroy the
//!    key: in memory (so no read can open a row any more) and on disk (slot
//!    zeroed in place, `fdatasync`).
//! 3. One transaction deletes every row of the subject and the tombstone.
//!
//! A crash before 1 leaves everything readable (and the erasure was never
//! acknowledged); after 1, nothing of the subject is readable again: reads
//! find no key (in memory from step 2 on, and after a restart because
//! recovery destroys it before serving). Every read path (get, list, search
//! with values, export) opens rows with the key, so a row whose key is gone
//! is skipped as if absent; search reads the index, which step 2 cleaned.

use crate::index::{Filter, VectorIndex};
use crate::keys::{KeyFile, SubjectKey};
use crate::quota::{Quotas, Usage, UsageChange, stored_bytes};
use crate::seal::{Place, Row, SealError};
use redb::{
    Database, Durability, ReadTransaction, ReadableDatabase as _, ReadableTable as _,
    ReadableTableMetadata as _, TableDefinition, TableHandle as _, WriteTransaction,
};
use sios_ipc::memory::{
    DEFAULT_PAGE_ITEMS, MAX_IMPORT_ITEMS, MAX_PAGE_BYTES, MAX_PAGE_ITEMS, MAX_SEARCH_FILTERS,
    MAX_SEARCH_K, MAX_SEARCH_NAMESPACES, validate_embedding, validate_key, validate_metadata,
    validate_namespace, validate_subject,
};
use sios_ipc::storage::{self, Closure, Remedy};
use sios_ipc::{
    CompactReport, Embedding, EraseReport, ExportCursor, ExportPage, ExportRequest, ExportScope,
    ImportReport, ImportRequest, Item, ListPage, ListRequest, MemoryError, PutRequest, PutResponse,
    SearchHit, SearchRequest, SearchResponse,
};
use std::collections::{BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

/// The database file's name inside the data directory.
pub const DATABASE_FILE: &str = "memory.redb";

const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items.v1");
const SUBJECT_ITEMS: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("subject_items.v1");
const NAMESPACES: TableDefinition<&str, u64> = TableDefinition::new("namespaces.v1");
const ERASING: TableDefinition<u64, u64> = TableDefinition::new("erasing.v1");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta.v1");
const COMPACTION_DUE: &str = "compaction_due";
/// The foundation build's plaintext table: refused, never read.
const LEGACY_ITEMS: &str = "items";

/// What an operator must do about memory.redb when redb cannot open it.
fn remedy_of(err: &redb::DatabaseError) -> Remedy {
    match err {
        redb::DatabaseError::Storage(redb::StorageError::Io(io)) => Remedy::of_io(io),
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(_))
        | redb::DatabaseError::UpgradeRequired(_)
        | redb::DatabaseError::RepairAborted => Remedy::RestoreFile,
        _ => Remedy::CheckDisk,
    }
}

fn storage(err: impl std::fmt::Display) -> MemoryError {
    MemoryError::Storage(err.to_string())
}

fn unreadable(namespace: &str, key: &str, err: SealError) -> MemoryError {
    MemoryError::Storage(format!(
        "item `{key}` in namespace `{namespace}` cannot be read: {err}"
    ))
}

/// The row a write is about to replace.
#[derive(Debug, Clone, Copy)]
struct Previous {
    handle: u64,
    created_ms: u64,
    /// What it occupies ([`stored_bytes`]).
    bytes: u64,
}

/// The row a write is about to replace, if there is one.
fn previous_row(
    items: &redb::Table<(&str, &str), &[u8]>,
    namespace: &str,
    key: &str,
) -> Result<Option<Previous>, MemoryError> {
    let Some(value) = items.get((namespace, key)).map_err(storage)? else {
        return Ok(None);
    };
    let row = value.value();
    let (handle, created_ms, _) = Row::peek(row).map_err(|e| unreadable(namespace, key, e))?;
    Ok(Some(Previous {
        handle,
        created_ms,
        bytes: stored_bytes(namespace, key, row.len()),
    }))
}

/// What writing `row_bytes` at (namespace, key) over `previous` adds.
fn count_write(
    change: &mut UsageChange,
    namespace: &str,
    key: &str,
    row_bytes: usize,
    previous: Option<Previous>,
) {
    let bytes = stored_bytes(namespace, key, row_bytes) as i64;
    match previous {
        Some(p) => change.add(namespace, 0, bytes - p.bytes as i64),
        None => change.add(namespace, 1, bytes),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn page_limit(limit: u32) -> usize {
    match limit {
        0 => DEFAULT_PAGE_ITEMS as usize,
        n => n.min(MAX_PAGE_ITEMS) as usize,
    }
}

// Locks are never poisoned in a way that matters: every critical section
// either completes its durable step or leaves memory as it was.
fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
fn lock<T>(lock: &Mutex<T>) -> MutexGuard<'_, T> {
    lock.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_txn(db: &Database) -> Result<WriteTransaction, MemoryError> {
    let mut txn = db.begin_write().map_err(storage)?;
    txn.set_durability(Durability::Immediate).map_err(storage)?;
    Ok(txn)
}

/// Where an interrupted erasure stops (crash tests only).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseStop {
    /// After the tombstone commit, before the key is destroyed.
    AfterTombstone,
    /// After the key is destroyed on disk, before the rows are deleted.
    AfterKeyDestroyed,
}

/// memory.redb, or why it is closed. redb refuses every operation on a
/// database one of whose writes failed (a full disk, a failing device)
/// until it is reopened; so a write that fails closes it, and the next
/// request reopens it, at most once per [`REOPEN_EVERY`] (reopening after a
/// failure may mean a repair scan of the whole file). Reopening rolls the
/// file back to its last durable commit; the usage is then counted and the
/// vector index rebuilt from the file before the request that reopened it
/// goes on ([`MemoryStore::resync`]), since a commit reported failed may
/// have been that last durable one.
#[derive(Debug)]
enum DbState {
    Open(Database),
    Closed(Closure),
}

/// See [`DbState`].
const REOPEN_EVERY: Duration = Duration::from_secs(1);

/// A read lock on memory.redb, open.
struct OpenDb<'a>(RwLockReadGuard<'a, DbState>);

impl std::ops::Deref for OpenDb<'_> {
    type Target = Database;
    fn deref(&self) -> &Database {
        match &*self.0 {
            DbState::Open(db) => db,
            DbState::Closed(_) => unreachable!("OpenDb is made only over an open database"),
        }
    }
}

/// The memory store. Share it behind an `Arc`; every method is blocking
/// (disk I/O): call it from a blocking thread.
#[derive(Debug)]
pub struct MemoryStore {
    dir: PathBuf,
    db_path: PathBuf,
    /// Write-locked only by compaction (which needs no live transaction)
    /// and to close or reopen the database (see [`DbState`]).
    db: RwLock<DbState>,
    /// When memory.redb was last reopened after a failed write.
    reopened_at: Mutex<Option<Instant>>,
    /// memory.redb was reopened and what it holds is not yet taken in
    /// ([`MemoryStore::resync`]): set by the reopen, cleared by whoever
    /// then holds the writer lock, set again if that fails.
    recovery_due: std::sync::atomic::AtomicBool,
    /// Why the last [`MemoryStore::resync`] failed, while none has
    /// succeeded since: reported by [`MemoryStore::health`].
    resync_failure: Mutex<Option<String>>,
    keys: RwLock<KeyFile>,
    index: RwLock<VectorIndex>,
    writer: Mutex<()>,
    quotas: Quotas,
    /// What the store holds, as [`Quotas`] count it; see [`crate::quota`].
    usage: Mutex<Usage>,
}

impl MemoryStore {
    /// Opens (or creates) the store in `dir`: makes the directory 0700 and
    /// the files 0600, finishes any erasure a crash interrupted, compacts if
    /// an erasure happened since the last compaction, and builds the search
    /// index. Only then may the store be served.
    pub fn open(dir: &Path) -> Result<MemoryStore, MemoryError> {
        MemoryStore::open_with(dir, Quotas::default())
    }

    /// [`MemoryStore::open`] with the limits the config sets. A store
    /// already over a limit opens; only writes that would grow it are
    /// refused.
    pub fn open_with(dir: &Path, quotas: Quotas) -> Result<MemoryStore, MemoryError> {
        std::fs::create_dir_all(dir).map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| storage(format!("{}: {e}", dir.display())))?;
        let keys = KeyFile::open(dir).map_err(storage)?;
        let db_path = dir.join(DATABASE_FILE);
        let db = Database::create(&db_path).map_err(|e| {
            storage(format!(
                "{}: {e}; {}",
                db_path.display(),
                remedy_of(&e).advice(&db_path)
            ))
        })?;
        std::fs::set_permissions(&db_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| storage(format!("{}: {e}", db_path.display())))?;
        {
            let txn = write_txn(&db)?;
            if txn
                .list_tables()
                .map_err(storage)?
                .any(|t| t.name() == LEGACY_ITEMS)
            {
                return Err(MemoryError::Storage(format!(
                    "{} holds a table written by the unencrypted foundation build; move it aside (its items have no data subject and cannot be imported)",
                    db_path.display()
                )));
            }
            txn.open_table(ITEMS).map_err(storage)?;
            txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
            txn.open_table(NAMESPACES).map_err(storage)?;
            txn.open_table(ERASING).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
            let items = txn
                .open_table(ITEMS)
                .map_err(storage)?
                .len()
                .map_err(storage)?;
            if items > 0 && keys.was_created() {
                // Without the key file every item is unreadable for good:
                // refuse to start rather than serve a store of ciphertext,
                // and leave no empty key file behind to be taken for the
                // real one at the next start.
                let _ = std::fs::remove_file(keys.path());
                return Err(MemoryError::Storage(format!(
                    "{} holds {items} items but {} was missing: restore the key file that belongs with this database (from the same backup), or move the database aside to start afresh",
                    db_path.display(),
                    keys.path().display()
                )));
            }
            txn.commit().map_err(storage)?;
        }
        let store = MemoryStore {
            dir: dir.to_owned(),
            db_path,
            db: RwLock::new(DbState::Open(db)),
            reopened_at: Mutex::new(None),
            recovery_due: std::sync::atomic::AtomicBool::new(false),
            resync_failure: Mutex::new(None),
            keys: RwLock::new(keys),
            index: RwLock::new(VectorIndex::default()),
            writer: Mutex::new(()),
            quotas,
            usage: Mutex::new(Usage::default()),
        };
        store.recover()?;
        let due = {
            let db = store.db()?;
            let txn = db.begin_read().map_err(storage)?;
            let meta = txn.open_table(META).map_err(storage)?;
            meta.get(COMPACTION_DUE)
                .map_err(storage)?
                .map(|v| v.value())
                == Some(1)
        };
        if due || read(&store.keys).compaction_worthwhile() {
            store.compact()?;
        }
        store.build_index_and_usage()?;
        Ok(store)
    }

    /// The database file.
    pub fn database_path(&self) -> &Path {
        &self.db_path
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the store holds, as its quotas count it.
    pub fn usage(&self) -> Usage {
        lock(&self.usage).clone()
    }

    /// Why the store cannot do its job, if it cannot: memory.redb is closed
    /// after a failed write, or the store is at a store-wide limit.
    pub fn health(&self) -> Option<String> {
        self.fault()
            .or_else(|| {
                lock(&self.resync_failure).as_ref().map(|err| {
                    format!(
                        "memory.redb was reopened after a failed write, but what it holds \
                         could not be taken in ({err}); every write is refused until that \
                         is repaired (restore memory.redb and its key file from the same \
                         backup), and reads go on"
                    )
                })
            })
            .or_else(|| lock(&self.usage).full(&self.quotas))
    }

    /// What it holds against its limits, for `sios status`.
    pub fn holds(&self) -> String {
        lock(&self.usage).describe(&self.quotas)
    }

    /// The limits it was opened with.
    pub fn quotas(&self) -> Quotas {
        self.quotas
    }

    /// Items held with an embedding (the search index's size).
    pub fn indexed(&self) -> usize {
        read(&self.index).len()
    }

    /// Why every request is refused right now (a write failed and
    /// memory.redb is closed until the disk takes writes again), in the words
    /// a refused caller gets; `None` while it is open. Reopens it first if
    /// that is due, as a request would.
    pub fn fault(&self) -> Option<String> {
        self.db().err().map(|err| err.to_string())
    }

    /// The open database, reopened first if a failed write closed it (and
    /// what it then holds taken in, see [`MemoryStore::resync_after_reopen`]).
    fn db(&self) -> Result<OpenDb<'_>, MemoryError> {
        let state = read(&self.db);
        if let DbState::Open(_) = &*state {
            return Ok(OpenDb(state));
        }
        drop(state);
        self.reopen()?;
        self.resync_after_reopen();
        let state = read(&self.db);
        match &*state {
            DbState::Open(_) => Ok(OpenDb(state)),
            DbState::Closed(closure) => Err(self.closed(closure)),
        }
    }

    /// Reopens memory.redb after a failed write, unless that was tried less
    /// than [`REOPEN_EVERY`] ago.
    fn reopen(&self) -> Result<(), MemoryError> {
        let mut state = write(&self.db);
        let DbState::Closed(closure) = &mut *state else {
            return Ok(());
        };
        let mut reopened_at = lock(&self.reopened_at);
        if reopened_at.is_some_and(|at| at.elapsed() < REOPEN_EVERY) {
            return Err(self.closed(closure));
        }
        *reopened_at = Some(Instant::now());
        // Reopening needs no new space: first check the disk has some, or a
        // still-full disk would pass for healthy memory until the next write.
        if let Err(err) = storage::check_room(&self.dir, storage::REOPEN_ROOM_BYTES) {
            tracing::debug!(error = %err, "memory's disk has no room yet");
            closure.room_check_failed(&err);
            return Err(self.closed(closure));
        }
        match Database::create(&self.db_path) {
            Ok(db) => {
                tracing::debug!(after = %closure.cause, "memory.redb reopened");
                *state = DbState::Open(db);
                self.recovery_due
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
            Err(err) => {
                closure.reopen_failed(err.to_string(), remedy_of(&err));
                Err(self.closed(closure))
            }
        }
    }

    /// Takes in what a just reopened memory.redb holds, unless a writer is
    /// busy (this very thread, when a write reopened it): then that writer
    /// does it, since [`MemoryStore::write_with`] checks before its own
    /// work. So reads and `sios status` after a reopen count what the file
    /// holds without waiting for a write. A failure is logged and shown by
    /// [`MemoryStore::health`]; every write retries it first and, while it
    /// still fails, is refused with it, as the service's start would be.
    fn resync_after_reopen(&self) {
        use std::sync::atomic::Ordering;
        let _writer = match self.writer.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if !self.recovery_due.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Err(err) = self.resync() {
            tracing::error!(
                error = %err,
                "memory.redb reopened, but what it holds could not be counted; every write will retry and report this"
            );
            self.recovery_due.store(true, Ordering::Release);
        }
    }

    /// What a request is told while memory.redb is closed.
    fn closed(&self, closure: &Closure) -> MemoryError {
        MemoryError::Storage(closure.refusal(
            &self.db_path,
            "memory is closed. Every request is refused until it can be written again",
            "memory reopens by itself at the next request after that",
            "nothing stored is lost",
        ))
    }

    /// Runs a write (holding the writer lock): a storage error closes the
    /// database (see [`DbState`]); after a reopen whose resync is still due
    /// (it failed, or the reopen came while a writer was busy), the write
    /// first finishes the erasure the reopened database may hold and
    /// measures the usage and rebuilds the search index from the file (see
    /// [`MemoryStore::resync`]).
    fn write_with<T>(&self, f: impl FnOnce() -> Result<T, MemoryError>) -> Result<T, MemoryError> {
        let _writer = lock(&self.writer);
        // A closed database due to be tried again is reopened here, so that
        // what it holds is taken in before this write.
        drop(self.db());
        let result = if self
            .recovery_due
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            let resynced = self.resync();
            if resynced.is_err() {
                // Tried again by the next write.
                self.recovery_due
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            resynced.and_then(|()| f())
        } else {
            f()
        };
        match result {
            Err(MemoryError::Storage(reason)) if !self.still_writable() => {
                Err(self.close_after_failure(&reason))
            }
            other => other,
        }
    }

    /// Whether memory.redb still takes a durable commit (an empty one): a
    /// storage error that was not the disk's (an unreadable row) leaves it
    /// open.
    fn still_writable(&self) -> bool {
        self.db()
            .and_then(|db| write_txn(&db)?.commit().map_err(storage))
            .is_ok()
    }

    /// Closes memory.redb after a failed write and returns what the caller
    /// is told.
    fn close_after_failure(&self, reason: &str) -> MemoryError {
        let mut state = write(&self.db);
        // Already closed: `reason` is the refusal itself; the first cause
        // stands.
        if let DbState::Closed(closure) = &*state {
            return self.closed(closure);
        }
        let closure = Closure::after_failed_write(
            format!("a write to memory.redb failed ({reason})"),
            &self.dir,
        );
        tracing::error!(
            what_to_do = %closure.remedy.advice(&self.db_path),
            "{}; memory is closed until it can be written again",
            closure.cause
        );
        let refusal = self.closed(&closure);
        // Dropping the database releases the file, to be opened again.
        *state = DbState::Closed(closure);
        refusal
    }

    /// Takes in what a reopened memory.redb holds (the writer lock held):
    /// finishes the erasure a failure interrupted, then counts the usage
    /// and rebuilds the search index from the file. Both were kept in step
    /// with each commit that succeeded; a commit reported failed may still
    /// have reached the disk (redb can fail after the data is durable), and
    /// without this its items would count against no quota and be found by
    /// no search until the next start. Costs one pass over every row, as at
    /// open; it happens only after a failed write.
    fn resync(&self) -> Result<(), MemoryError> {
        let started = Instant::now();
        let taken_in = self
            .recover_locked()
            .and_then(|()| self.build_index_and_usage());
        *lock(&self.resync_failure) = taken_in.as_ref().err().map(|err| err.to_string());
        taken_in?;
        tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "memory.redb reopened: usage counted and search index rebuilt from the file"
        );
        Ok(())
    }

    /// Closes memory.redb as a failed write does; the next request reopens
    /// it (tests: a commit that reached the disk though it was reported
    /// failed).
    #[doc(hidden)]
    pub fn close_as_after_failure(&self) {
        self.close_after_failure("closed by a test");
    }

    /// Runs recovery on a live store, as a reopen does (tests: an erasure
    /// cut short by a failed write).
    #[doc(hidden)]
    pub fn recover_as_after_reopen(&self) -> Result<(), MemoryError> {
        self.recover()
    }

    /// Finishes tombstoned erasures; reports rows whose key is missing.
    fn recover(&self) -> Result<(), MemoryError> {
        let _writer = lock(&self.writer);
        self.recover_locked()
    }

    /// [`MemoryStore::recover`], the writer lock already held.
    fn recover_locked(&self) -> Result<(), MemoryError> {
        let db = self.db()?;
        let (tombstones, orphans, max_handle) = {
            let txn = db.begin_read().map_err(storage)?;
            let erasing = txn.open_table(ERASING).map_err(storage)?;
            let tombstones: Vec<u64> = erasing
                .iter()
                .map_err(storage)?
                .map(|r| r.map(|(k, _)| k.value()).map_err(storage))
                .collect::<Result<_, _>>()?;
            let keys = read(&self.keys);
            let mut handles = BTreeSet::new();
            let subject_items = txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
            // Walk handle by handle: jump past each handle's rows.
            let mut next: Option<u64> = Some(0);
            while let Some(from) = next {
                let first = subject_items
                    .range((from, "", "")..)
                    .map_err(storage)?
                    .next()
                    .transpose()
                    .map_err(storage)?;
                next = match first {
                    Some((k, _)) => {
                        let handle = k.value().0;
                        handles.insert(handle);
                        handle.checked_add(1)
                    }
                    None => None,
                };
            }
            let orphans: Vec<u64> = handles
                .iter()
                .copied()
                .filter(|h| keys.by_handle(*h).is_none() && !tombstones.contains(h))
                .collect();
            let max = handles
                .iter()
                .chain(tombstones.iter())
                .max()
                .copied()
                .unwrap_or(0);
            (tombstones, orphans, max)
        };
        write(&self.keys).raise_next_handle(max_handle + 1);
        for handle in tombstones {
            tracing::warn!(handle, "finishing an erasure interrupted by a crash");
            // After a reopen the index is the live one (at open it is built
            // later, from rows that no longer include these).
            write(&self.index).remove_handle(handle);
            write(&self.keys).destroy(handle).map_err(storage)?;
            self.delete_subject_rows(&db, handle)?;
        }
        for handle in orphans {
            // Cannot happen in operation (a key goes only after its erasure's
            // tombstone, and the tombstone only with the rows); a key file
            // restored from another backup can cause it. The rows are left
            // as they are, unreadable, and every read path skips them.
            tracing::error!(
                handle,
                "items whose subject key is not in the key file cannot be decrypted; they are skipped (was the key file restored from a different backup?)"
            );
        }
        Ok(())
    }

    /// Builds the search index and measures the usage, in one pass over
    /// every row.
    fn build_index_and_usage(&self) -> Result<(), MemoryError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let items = txn.open_table(ITEMS).map_err(storage)?;
        let keys = read(&self.keys);
        let mut index = VectorIndex::default();
        let mut usage = Usage::default();
        let mut cache: HashMap<u64, Option<Arc<SubjectKey>>> = HashMap::new();
        for entry in items.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let (namespace, key) = k.value();
            usage.count(namespace, stored_bytes(namespace, key, v.value().len()));
            let row = Row::from_bytes(v.value()).map_err(|e| unreadable(namespace, key, e))?;
            if !row.has_embedding {
                continue;
            }
            let Some(subject_key) = cache
                .entry(row.handle)
                .or_insert_with(|| keys.by_handle(row.handle))
                .clone()
            else {
                continue;
            };
            let place = Place { namespace, key };
            let (metadata, embedding) = row
                .open_attrs(&subject_key, place)
                .map_err(|e| unreadable(namespace, key, e))?;
            if let Some(embedding) = embedding {
                index.insert(
                    namespace,
                    key,
                    row.handle,
                    &subject_key.subject,
                    metadata,
                    &embedding,
                    row.created_ms,
                    row.updated_ms,
                );
            }
        }
        *write(&self.index) = index;
        *lock(&self.usage) = usage;
        Ok(())
    }

    // ---------------------------------------------------------------- reads

    fn require_namespace(&self, txn: &ReadTransaction, namespace: &str) -> Result<(), MemoryError> {
        let namespaces = txn.open_table(NAMESPACES).map_err(storage)?;
        if namespaces.get(namespace).map_err(storage)?.is_none() {
            return Err(MemoryError::UnknownNamespace {
                namespace: namespace.to_owned(),
            });
        }
        Ok(())
    }

    /// Opens a stored row; `None` if its subject's key is gone (erased).
    fn open_item(
        &self,
        namespace: &str,
        key: &str,
        bytes: &[u8],
    ) -> Result<Option<Item>, MemoryError> {
        let row = Row::from_bytes(bytes).map_err(|e| unreadable(namespace, key, e))?;
        let Some(subject_key) = read(&self.keys).by_handle(row.handle) else {
            return Ok(None);
        };
        let place = Place { namespace, key };
        let value = row
            .open_value(&subject_key, place)
            .map_err(|e| unreadable(namespace, key, e))?;
        let (metadata, embedding) = row
            .open_attrs(&subject_key, place)
            .map_err(|e| unreadable(namespace, key, e))?;
        Ok(Some(Item {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            subject: subject_key.subject.clone(),
            value,
            metadata,
            created_ms: row.created_ms,
            updated_ms: row.updated_ms,
            embedding: embedding.map(Embedding),
        }))
    }

    /// One item.
    pub fn get(&self, namespace: &str, key: &str) -> Result<Item, MemoryError> {
        validate_namespace(namespace)?;
        validate_key(key)?;
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        self.require_namespace(&txn, namespace)?;
        let items = txn.open_table(ITEMS).map_err(storage)?;
        let not_found = || MemoryError::NotFound {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
        };
        let row = items
            .get((namespace, key))
            .map_err(storage)?
            .ok_or_else(not_found)?;
        self.open_item(namespace, key, row.value())?
            .ok_or_else(not_found)
    }

    /// One page of a namespace, in key order.
    pub fn list(&self, request: &ListRequest) -> Result<ListPage, MemoryError> {
        validate_namespace(&request.namespace)?;
        if let Some(after) = &request.after {
            validate_key(after)?;
        }
        let (items, next) = self.namespace_page(
            &request.namespace,
            request.after.as_deref(),
            page_limit(request.limit),
        )?;
        Ok(ListPage {
            items,
            next: next.map(|c| c.key),
        })
    }

    fn namespace_page(
        &self,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<ExportCursor>), MemoryError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        self.require_namespace(&txn, namespace)?;
        let table = txn.open_table(ITEMS).map_err(storage)?;
        let mut page = Page::new(limit);
        for entry in table
            .range((namespace, after.unwrap_or(""))..)
            .map_err(storage)?
        {
            let (k, v) = entry.map_err(storage)?;
            let (ns, key) = k.value();
            if ns != namespace {
                break;
            }
            if after == Some(key) {
                continue;
            }
            if page.full() {
                page.more = true;
                break;
            }
            if let Some(item) = self.open_item(ns, key, v.value())?
                && !page.push(item)
            {
                break;
            }
        }
        Ok(page.finish())
    }

    fn subject_page(
        &self,
        subject: &str,
        after: Option<&ExportCursor>,
        limit: usize,
    ) -> Result<(Vec<Item>, Option<ExportCursor>), MemoryError> {
        let Some(subject_key) = read(&self.keys).by_subject(subject) else {
            return Err(MemoryError::UnknownSubject {
                subject: subject.to_owned(),
            });
        };
        let handle = subject_key.handle;
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let index = txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
        let items = txn.open_table(ITEMS).map_err(storage)?;
        let start = after.map_or(("", ""), |c| (c.namespace.as_str(), c.key.as_str()));
        let mut page = Page::new(limit);
        for entry in index.range((handle, start.0, start.1)..).map_err(storage)? {
            let (k, _) = entry.map_err(storage)?;
            let (h, namespace, key) = k.value();
            if h != handle {
                break;
            }
            if after.is_some() && (namespace, key) == start {
                continue;
            }
            if page.full() {
                page.more = true;
                break;
            }
            let Some(row) = items.get((namespace, key)).map_err(storage)? else {
                continue;
            };
            if let Some(item) = self.open_item(namespace, key, row.value())?
                && !page.push(item)
            {
                break;
            }
        }
        Ok(page.finish())
    }

    /// Exact cosine k-NN.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, MemoryError> {
        validate_embedding(&request.query)?;
        if request.k == 0 || request.k > MAX_SEARCH_K {
            return Err(MemoryError::Invalid(format!(
                "k must be 1 to {MAX_SEARCH_K}, not {}",
                request.k
            )));
        }
        if let Some(namespaces) = &request.namespaces {
            if namespaces.len() > MAX_SEARCH_NAMESPACES {
                return Err(MemoryError::TooLarge {
                    what: "namespace filter (entries)".into(),
                    size: namespaces.len() as u64,
                    limit: MAX_SEARCH_NAMESPACES as u64,
                });
            }
            for namespace in namespaces {
                validate_namespace(namespace)?;
            }
        }
        if request.metadata.len() > MAX_SEARCH_FILTERS {
            return Err(MemoryError::TooLarge {
                what: "metadata filter (entries)".into(),
                size: request.metadata.len() as u64,
                limit: MAX_SEARCH_FILTERS as u64,
            });
        }
        validate_metadata(&request.metadata)?;
        let filter = Filter {
            namespaces: request.namespaces.as_deref(),
            metadata: &request.metadata,
        };
        let (hits, scanned) =
            read(&self.index).search(&request.query.0, request.k as usize, &filter);
        let mut response = SearchResponse {
            hits: Vec::with_capacity(hits.len()),
            scanned,
            values_omitted: 0,
        };
        let mut budget = MAX_PAGE_BYTES;
        let db = self.db()?;
        let txn = if request.include_values {
            Some(db.begin_read().map_err(storage)?)
        } else {
            None
        };
        for hit in hits {
            let entry = hit.entry;
            let mut value = None;
            if let Some(txn) = &txn {
                let items = txn.open_table(ITEMS).map_err(storage)?;
                let row = items
                    .get((&*entry.namespace, &*entry.key))
                    .map_err(storage)?;
                // Gone since the index was read (deleted or erased): drop the hit.
                let Some(item) = row
                    .map(|row| self.open_item(&entry.namespace, &entry.key, row.value()))
                    .transpose()?
                    .flatten()
                else {
                    continue;
                };
                if item.value.len() <= budget {
                    budget -= item.value.len();
                    value = Some(item.value);
                } else {
                    response.values_omitted += 1;
                }
            }
            response.hits.push(SearchHit {
                namespace: entry.namespace.to_string(),
                key: entry.key.to_string(),
                subject: entry.subject.to_string(),
                score: hit.score,
                metadata: entry.metadata,
                created_ms: entry.created_ms,
                updated_ms: entry.updated_ms,
                value,
            });
        }
        Ok(response)
    }

    /// One page of an export.
    pub fn export(&self, request: &ExportRequest) -> Result<ExportPage, MemoryError> {
        let limit = page_limit(request.limit);
        let (items, next) = match &request.scope {
            ExportScope::Namespace(namespace) => {
                validate_namespace(namespace)?;
                let after = match &request.after {
                    Some(c) if c.namespace != *namespace => {
                        return Err(MemoryError::Invalid(format!(
                            "the cursor is in namespace `{}`, not `{namespace}`",
                            c.namespace
                        )));
                    }
                    Some(c) => {
                        validate_key(&c.key)?;
                        Some(c.key.as_str())
                    }
                    None => None,
                };
                self.namespace_page(namespace, after, limit)?
            }
            ExportScope::Subject(subject) => {
                validate_subject(subject)?;
                if let Some(c) = &request.after {
                    validate_namespace(&c.namespace)?;
                    validate_key(&c.key)?;
                }
                self.subject_page(subject, request.after.as_ref(), limit)?
            }
        };
        Ok(ExportPage { items, next })
    }

    // --------------------------------------------------------------- writes

    /// The key of `subject`, created (durably) if it has none.
    /// The subject's key, created if it has none; a created key's handle
    /// is added to `minted`, for [`MemoryStore::check_quota`].
    fn key_for_subject(
        &self,
        subject: &str,
        minted: &mut Vec<u64>,
    ) -> Result<Arc<SubjectKey>, MemoryError> {
        if let Some(key) = read(&self.keys).by_subject(subject) {
            return Ok(key);
        }
        let key = write(&self.keys).create(subject).map_err(storage)?;
        minted.push(key.handle);
        Ok(key)
    }

    /// Checks a write against the quotas before it commits. A refused write
    /// stores nothing: the keys it created for new subjects (`minted`, no
    /// row uses them yet) are destroyed too, or refused writes would grow
    /// the key file without bound.
    fn check_quota(&self, change: &UsageChange, minted: &[u64]) -> Result<(), MemoryError> {
        let refused = match lock(&self.usage).check(change, &self.quotas) {
            Ok(()) => return Ok(()),
            Err(refused) => refused,
        };
        let mut keys = write(&self.keys);
        for handle in minted {
            keys.destroy(*handle).map_err(storage)?;
        }
        Err(refused)
    }

    /// Stores one item; durable when `Ok`.
    pub fn put(&self, request: &PutRequest) -> Result<PutResponse, MemoryError> {
        request.validate()?;
        self.write_with(|| {
            let mut minted = Vec::new();
            let subject_key = self.key_for_subject(&request.subject, &mut minted)?;
            let db = self.db()?;
            let txn = write_txn(&db)?;
            let now = now_ms();
            let mut change = UsageChange::default();
            let (created, created_ms) = {
                let mut items = txn.open_table(ITEMS).map_err(storage)?;
                let previous = previous_row(&items, &request.namespace, &request.key)?;
                let created_ms = previous.map_or(now, |p| p.created_ms);
                let row = Row::seal(
                    &subject_key,
                    Place {
                        namespace: &request.namespace,
                        key: &request.key,
                    },
                    created_ms,
                    now,
                    &request.value,
                    &request.metadata,
                    request.embedding.as_ref().map(|e| e.0.as_slice()),
                )
                .map_err(storage)?;
                let row = row.to_bytes();
                count_write(
                    &mut change,
                    &request.namespace,
                    &request.key,
                    row.len(),
                    previous,
                );
                self.check_quota(&change, &minted)?;
                items
                    .insert(
                        (request.namespace.as_str(), request.key.as_str()),
                        row.as_slice(),
                    )
                    .map_err(storage)?;
                link(
                    &txn,
                    &request.namespace,
                    &request.key,
                    previous.map(|p| p.handle),
                    subject_key.handle,
                )?;
                (previous.is_none(), created_ms)
            };
            txn.commit().map_err(storage)?;
            lock(&self.usage).apply(change);
            let mut index = write(&self.index);
            match &request.embedding {
                Some(embedding) => index.insert(
                    &request.namespace,
                    &request.key,
                    subject_key.handle,
                    &subject_key.subject,
                    request.metadata.clone(),
                    &embedding.0,
                    created_ms,
                    now,
                ),
                None => {
                    index.remove(&request.namespace, &request.key);
                }
            }
            Ok(PutResponse {
                created,
                created_ms,
                updated_ms: now,
            })
        })
    }

    /// Deletes one item; durable when `Ok`.
    pub fn delete(&self, namespace: &str, key: &str) -> Result<(), MemoryError> {
        validate_namespace(namespace)?;
        validate_key(key)?;
        self.write_with(|| {
            let db = self.db()?;
            let txn = write_txn(&db)?;
            let mut change = UsageChange::default();
            {
                let namespaces = txn.open_table(NAMESPACES).map_err(storage)?;
                if namespaces.get(namespace).map_err(storage)?.is_none() {
                    return Err(MemoryError::UnknownNamespace {
                        namespace: namespace.to_owned(),
                    });
                }
                let mut items = txn.open_table(ITEMS).map_err(storage)?;
                let removed = items.remove((namespace, key)).map_err(storage)?;
                let Some(removed) = removed else {
                    return Err(MemoryError::NotFound {
                        namespace: namespace.to_owned(),
                        key: key.to_owned(),
                    });
                };
                let (handle, _, _) =
                    Row::peek(removed.value()).map_err(|e| unreadable(namespace, key, e))?;
                change.add(
                    namespace,
                    -1,
                    -(stored_bytes(namespace, key, removed.value().len()) as i64),
                );
                drop(removed);
                let mut subject_items = txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
                subject_items
                    .remove((handle, namespace, key))
                    .map_err(storage)?;
            }
            count_namespace(&txn, namespace, -1)?;
            txn.commit().map_err(storage)?;
            lock(&self.usage).apply(change);
            write(&self.index).remove(namespace, key);
            Ok(())
        })
    }

    /// Erases everything about `subject`; see the module doc for the order
    /// of steps. Durable when `Ok`.
    pub fn erase_subject(&self, subject: &str) -> Result<EraseReport, MemoryError> {
        self.erase_subject_until(subject, None)
    }

    /// Runs an erasure only up to `stop`, as a crash there would leave it.
    /// The store must be dropped (and reopened) afterwards.
    #[doc(hidden)]
    pub fn erase_subject_interrupted(
        &self,
        subject: &str,
        stop: EraseStop,
    ) -> Result<(), MemoryError> {
        self.erase_subject_until(subject, Some(stop)).map(|_| ())
    }

    fn erase_subject_until(
        &self,
        subject: &str,
        stop: Option<EraseStop>,
    ) -> Result<EraseReport, MemoryError> {
        validate_subject(subject)?;
        self.write_with(|| {
            let (handle, slot) = {
                let keys = read(&self.keys);
                match keys.by_subject(subject) {
                    Some(key) => (key.handle, keys.slot_of(key.handle).unwrap_or(0) as u64),
                    None => {
                        return Ok(EraseReport {
                            subject: subject.to_owned(),
                            items_erased: 0,
                            namespaces: Vec::new(),
                            key_destroyed: false,
                            audit_link_removed: false,
                        });
                    }
                }
            };
            let db = self.db()?;
            // 1. The tombstone: from its commit on, the erasure always completes.
            let txn = write_txn(&db)?;
            txn.open_table(ERASING)
                .map_err(storage)?
                .insert(handle, slot)
                .map_err(storage)?;
            txn.open_table(META)
                .map_err(storage)?
                .insert(COMPACTION_DUE, 1)
                .map_err(storage)?;
            txn.commit().map_err(storage)?;
            if stop == Some(EraseStop::AfterTombstone) {
                return Err(MemoryError::Storage("erasure interrupted (test)".into()));
            }
            // 2. Nothing of the subject is readable from here on.
            write(&self.index).remove_handle(handle);
            write(&self.keys).destroy(handle).map_err(storage)?;
            if stop == Some(EraseStop::AfterKeyDestroyed) {
                return Err(MemoryError::Storage("erasure interrupted (test)".into()));
            }
            // 3. The rows and the tombstone, in one transaction.
            let (items_erased, namespaces) = self.delete_subject_rows(&db, handle)?;
            Ok(EraseReport {
                subject: subject.to_owned(),
                items_erased,
                namespaces,
                key_destroyed: true,
                audit_link_removed: false,
            })
        })
    }

    /// Deletes every row of `handle` and its tombstone in one durable
    /// transaction.
    fn delete_subject_rows(
        &self,
        db: &Database,
        handle: u64,
    ) -> Result<(u64, Vec<String>), MemoryError> {
        let txn = write_txn(db)?;
        let mut per_namespace: std::collections::BTreeMap<String, i64> = Default::default();
        let mut change = UsageChange::default();
        {
            let mut subject_items = txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
            let mut items = txn.open_table(ITEMS).map_err(storage)?;
            let doomed: Vec<(String, String)> = subject_items
                .range((handle, "", "")..)
                .map_err(storage)?
                .map(|r| {
                    r.map_err(storage).map(|(k, _)| {
                        let (h, ns, key) = k.value();
                        (h, ns.to_owned(), key.to_owned())
                    })
                })
                .take_while(|r| r.as_ref().map_or(true, |(h, _, _)| *h == handle))
                .map(|r| r.map(|(_, ns, key)| (ns, key)))
                .collect::<Result<_, _>>()?;
            for (namespace, key) in &doomed {
                if let Some(row) = items
                    .remove((namespace.as_str(), key.as_str()))
                    .map_err(storage)?
                {
                    change.add(
                        namespace,
                        -1,
                        -(stored_bytes(namespace, key, row.value().len()) as i64),
                    );
                }
                subject_items
                    .remove((handle, namespace.as_str(), key.as_str()))
                    .map_err(storage)?;
                *per_namespace.entry(namespace.clone()).or_default() -= 1;
            }
            txn.open_table(ERASING)
                .map_err(storage)?
                .remove(handle)
                .map_err(storage)?;
        }
        let mut erased = 0;
        for (namespace, delta) in &per_namespace {
            count_namespace(&txn, namespace, *delta)?;
            erased += delta.unsigned_abs();
        }
        txn.commit().map_err(storage)?;
        lock(&self.usage).apply(change);
        Ok((erased, per_namespace.into_keys().collect()))
    }

    /// Restores items exactly (timestamps included); durable when `Ok`.
    pub fn import(&self, request: &ImportRequest) -> Result<ImportReport, MemoryError> {
        if request.items.len() > MAX_IMPORT_ITEMS {
            return Err(MemoryError::TooLarge {
                what: "import chunk (items)".into(),
                size: request.items.len() as u64,
                limit: MAX_IMPORT_ITEMS as u64,
            });
        }
        for item in &request.items {
            item.validate()?;
        }
        self.write_with(|| {
            let mut subject_keys: HashMap<&str, Arc<SubjectKey>> = HashMap::new();
            let mut minted = Vec::new();
            for item in &request.items {
                if !subject_keys.contains_key(item.subject.as_str()) {
                    let key = self.key_for_subject(&item.subject, &mut minted)?;
                    subject_keys.insert(&item.subject, key);
                }
            }
            let db = self.db()?;
            let txn = write_txn(&db)?;
            let mut report = ImportReport::default();
            let mut change = UsageChange::default();
            for item in &request.items {
                let subject_key = &subject_keys[item.subject.as_str()];
                let mut items = txn.open_table(ITEMS).map_err(storage)?;
                let previous = previous_row(&items, &item.namespace, &item.key)?;
                let row = Row::seal(
                    subject_key,
                    Place {
                        namespace: &item.namespace,
                        key: &item.key,
                    },
                    item.created_ms,
                    item.updated_ms,
                    &item.value,
                    &item.metadata,
                    item.embedding.as_ref().map(|e| e.0.as_slice()),
                )
                .map_err(storage)?;
                let row = row.to_bytes();
                count_write(&mut change, &item.namespace, &item.key, row.len(), previous);
                items
                    .insert((item.namespace.as_str(), item.key.as_str()), row.as_slice())
                    .map_err(storage)?;
                drop(items);
                link(
                    &txn,
                    &item.namespace,
                    &item.key,
                    previous.map(|p| p.handle),
                    subject_key.handle,
                )?;
                if previous.is_some() {
                    report.replaced += 1;
                } else {
                    report.created += 1;
                }
            }
            // The whole chunk or none of it: a refused chunk stores nothing.
            self.check_quota(&change, &minted)?;
            txn.commit().map_err(storage)?;
            lock(&self.usage).apply(change);
            let mut index = write(&self.index);
            for item in &request.items {
                let subject_key = &subject_keys[item.subject.as_str()];
                match &item.embedding {
                    Some(embedding) => index.insert(
                        &item.namespace,
                        &item.key,
                        subject_key.handle,
                        &subject_key.subject,
                        item.metadata.clone(),
                        &embedding.0,
                        item.created_ms,
                        item.updated_ms,
                    ),
                    None => {
                        index.remove(&item.namespace, &item.key);
                    }
                }
            }
            Ok(report)
        })
    }

    /// Compacts memory.redb (redb's `Database::compact`) and rewrites the key
    /// file without its free slots. Blocks every other request meanwhile.
    pub fn compact(&self) -> Result<CompactReport, MemoryError> {
        self.write_with(|| {
            let size = |p: &Path| allocated_bytes(p);
            let database_bytes_before = size(&self.db_path);
            let key_file_bytes_before = read(&self.keys).file_bytes();
            {
                // Reopened first if a failed write closed it.
                drop(self.db()?);
                let mut state = write(&self.db);
                let db = match &mut *state {
                    DbState::Open(db) => db,
                    DbState::Closed(closure) => return Err(self.closed(closure)),
                };
                // redb frees a transaction's old pages only at a later commit;
                // two commits first let `compact` reclaim a large erasure's pages
                // in one go (measured: without them a 2 000-item erasure in a
                // 40 MiB file needed a second compaction to shrink). The file's
                // length may grow back at the next commit, as a hole: what
                // compaction released stays released (see `allocated_bytes`).
                // The flag stays set until the compaction is done, so a crash
                // during it means another compaction at the next start.
                for _ in 0..2 {
                    let txn = write_txn(db)?;
                    txn.open_table(META)
                        .map_err(storage)?
                        .insert(COMPACTION_DUE, 1)
                        .map_err(storage)?;
                    txn.commit().map_err(storage)?;
                }
                db.compact()
                    .map_err(|e| storage(format!("compaction failed: {e}")))?;
                let txn = write_txn(db)?;
                txn.open_table(META)
                    .map_err(storage)?
                    .remove(COMPACTION_DUE)
                    .map_err(storage)?;
                txn.commit().map_err(storage)?;
            }
            {
                let mut keys = write(&self.keys);
                if keys.file_bytes() > 0 {
                    keys.compact().map_err(storage)?;
                }
            }
            Ok(CompactReport {
                database_bytes_before,
                database_bytes_after: size(&self.db_path),
                key_file_bytes_before,
                key_file_bytes_after: read(&self.keys).file_bytes(),
            })
        })
    }

    /// The raw key of `subject`, if it has one (tests prove these bytes are
    /// gone from every file after erasure).
    #[doc(hidden)]
    pub fn subject_key_bytes(&self, subject: &str) -> Option<[u8; 32]> {
        read(&self.keys).by_subject(subject).map(|k| *k.key)
    }

    /// Items in memory.redb (for tests and benchmarks).
    pub fn item_count(&self) -> Result<u64, MemoryError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        txn.open_table(ITEMS)
            .map_err(storage)?
            .len()
            .map_err(storage)
    }

    /// The namespaces that hold items, with their counts, in name order.
    pub fn namespaces(&self) -> Result<Vec<(String, u64)>, MemoryError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(storage)?;
        let table = txn.open_table(NAMESPACES).map_err(storage)?;
        table
            .iter()
            .map_err(storage)?
            .map(|r| {
                r.map(|(k, v)| (k.value().to_owned(), v.value()))
                    .map_err(storage)
            })
            .collect()
    }
}

/// Bytes a file occupies on disk (`st_blocks` × 512): redb's file can be
/// sparse after a compaction, so its length overstates it.
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(path).map_or(0, |m| m.blocks() * 512)
}

/// Points the subject index at the item's (possibly new) subject and counts
/// a new item in its namespace.
fn link(
    txn: &WriteTransaction,
    namespace: &str,
    key: &str,
    previous: Option<u64>,
    handle: u64,
) -> Result<(), MemoryError> {
    let mut subject_items = txn.open_table(SUBJECT_ITEMS).map_err(storage)?;
    if let Some(old) = previous
        && old != handle
    {
        subject_items
            .remove((old, namespace, key))
            .map_err(storage)?;
    }
    subject_items
        .insert((handle, namespace, key), ())
        .map_err(storage)?;
    drop(subject_items);
    if previous.is_none() {
        count_namespace(txn, namespace, 1)?;
    }
    Ok(())
}

/// Adds `delta` to a namespace's item count; a namespace at zero is removed.
fn count_namespace(txn: &WriteTransaction, namespace: &str, delta: i64) -> Result<(), MemoryError> {
    let mut table = txn.open_table(NAMESPACES).map_err(storage)?;
    let current = table
        .get(namespace)
        .map_err(storage)?
        .map_or(0, |v| v.value());
    let updated = (current as i64 + delta).max(0) as u64;
    if updated == 0 {
        table.remove(namespace).map_err(storage)?;
    } else {
        table.insert(namespace, updated).map_err(storage)?;
    }
    Ok(())
}

/// A page being filled, bounded by item count and bytes.
struct Page {
    items: Vec<Item>,
    limit: usize,
    bytes: usize,
    more: bool,
}

impl Page {
    fn new(limit: usize) -> Page {
        Page {
            items: Vec::new(),
            limit,
            bytes: 0,
            more: false,
        }
    }

    fn full(&self) -> bool {
        self.items.len() >= self.limit
    }

    /// Adds `item` unless the byte budget is spent (a page always takes its
    /// first item); returns false, and marks that more remain, if it did not.
    fn push(&mut self, item: Item) -> bool {
        let size = item.approx_bytes();
        if !self.items.is_empty() && self.bytes + size > MAX_PAGE_BYTES {
            self.more = true;
            return false;
        }
        self.bytes += size;
        self.items.push(item);
        true
    }

    fn finish(self) -> (Vec<Item>, Option<ExportCursor>) {
        let next = if self.more {
            self.items.last().map(|i| ExportCursor {
                namespace: i.namespace.clone(),
                key: i.key.clone(),
            })
        } else {
            None
        };
        (self.items, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sios_ipc::{Metadata, Value};

    fn item(key: &str, value_bytes: usize) -> Item {
        Item {
            namespace: "ns".into(),
            key: key.into(),
            subject: "s".into(),
            value: Value::Bytes(vec![0; value_bytes]),
            metadata: Metadata::new(),
            created_ms: 0,
            updated_ms: 0,
            embedding: None,
        }
    }

    #[test]
    fn pages_stop_at_the_byte_budget_but_never_empty() {
        let mut page = Page::new(1000);
        assert!(
            page.push(item("0", MAX_PAGE_BYTES + 10)),
            "a page takes its first item"
        );
        assert!(!page.push(item("1", 1)));
        let (items, next) = page.finish();
        assert_eq!(items.len(), 1);
        assert_eq!(next.unwrap().key, "0");

        let mut page = Page::new(1000);
        let mut pushed = 0;
        while page.push(item(&pushed.to_string(), 1 << 20)) {
            pushed += 1;
        }
        assert_eq!(
            pushed, 3,
            "4 MiB holds three 1 MiB items and their overhead"
        );
        assert_eq!(page.finish().1.unwrap().key, "2");

        let mut page = Page::new(2);
        assert!(page.push(item("a", 1)) && page.push(item("b", 1)));
        assert!(page.full());
        assert!(
            page.finish().1.is_none(),
            "the caller marks `more` when it sees another row"
        );
    }
}
