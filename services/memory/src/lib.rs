//! sios-memory: the only process that opens `memory.redb`.
//!
//! The foundation's memory service: durable namespaced key/value storage.
//! Every `put` is committed with `Durability::Immediate` before it is
//! acknowledged, so an acknowledged write survives `kill -9`.

use redb::{Database, ReadableDatabase, TableDefinition};
use sios_ipc::MemoryError;
use std::path::Path;

/// (namespace, key) → value.
const ITEMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("items");

/// Longest namespace or key, in bytes.
pub const MAX_NAME_BYTES: usize = 512;

fn storage(err: impl std::fmt::Display) -> MemoryError {
    MemoryError::Storage(err.to_string())
}

/// The store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct MemoryStore {
    db: Database,
}

impl MemoryStore {
    pub fn open(path: &Path) -> Result<MemoryStore, MemoryError> {
        let db = Database::create(path).map_err(storage)?;
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(ITEMS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        Ok(MemoryStore { db })
    }

    /// Stores `value`; durable when this returns `Ok`.
    pub fn put(&self, namespace: &str, key: &str, value: &[u8]) -> Result<(), MemoryError> {
        check_name("namespace", namespace)?;
        check_name("key", key)?;
        let txn = self.db.begin_write().map_err(storage)?;
        txn.open_table(ITEMS)
            .map_err(storage)?
            .insert((namespace, key), value)
            .map_err(storage)?;
        txn.commit().map_err(storage)
    }

    pub fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, MemoryError> {
        let txn = self.db.begin_read().map_err(storage)?;
        let table = txn.open_table(ITEMS).map_err(storage)?;
        Ok(table
            .get((namespace, key))
            .map_err(storage)?
            .map(|v| v.value().to_vec()))
    }
}

fn check_name(what: &str, name: &str) -> Result<(), MemoryError> {
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(MemoryError::Invalid(format!(
            "{what} must be 1 to {MAX_NAME_BYTES} bytes long"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_survives_reopen_and_namespaces_do_not_mix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.redb");
        {
            let store = MemoryStore::open(&path).unwrap();
            store.put("a", "k", b"one").unwrap();
            store.put("b", "k", b"two").unwrap();
            assert!(store.put("", "k", b"x").is_err());
        }
        let store = MemoryStore::open(&path).unwrap();
        assert_eq!(store.get("a", "k").unwrap().as_deref(), Some(&b"one"[..]));
        assert_eq!(store.get("b", "k").unwrap().as_deref(), Some(&b"two"[..]));
        assert_eq!(store.get("c", "k").unwrap(), None);
    }
}
