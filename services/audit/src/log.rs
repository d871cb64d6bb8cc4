//! The append-only event log in `audit.redb`, with group commit.
//!
//! Appends from any number of concurrent callers are queued to one writer
//! thread, which takes everything queued, writes it in one redb transaction
//! and commits it durably (`Durability::Immediate`: on disk when `commit`
//! returns), then answers every caller in the batch. One fsync serves the
//! whole batch; a batch of one is just as correct.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use sios_ipc::{AppendReceipt, AuditError, AuditEvent};
use std::path::Path;
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Sequence number → event (JSON). Sequence numbers start at 0 and have no gaps.
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

type Reply = oneshot::Sender<Result<AppendReceipt, AuditError>>;

/// A handle to the writer thread. Cloning shares the same writer.
#[derive(Clone, Debug)]
pub struct AuditLog {
    queue: mpsc::Sender<(Vec<AuditEvent>, Reply)>,
}

fn storage(err: impl std::fmt::Display) -> AuditError {
    AuditError::Storage(err.to_string())
}

impl AuditLog {
    /// Opens (or creates) the log and starts its writer thread.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let db = Database::create(path).map_err(storage)?;
        // Create the table up front so readers never see it missing.
        let txn = db.begin_write().map_err(storage)?;
        txn.open_table(EVENTS).map_err(storage)?;
        txn.commit().map_err(storage)?;
        let next_seq = next_sequence(&db)?;
        let (queue, batches) = mpsc::channel();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer(db, next_seq, batches))
            .map_err(storage)?;
        Ok(AuditLog { queue })
    }

    /// Appends `events`; resolves once they are durable.
    pub async fn append(&self, events: Vec<AuditEvent>) -> Result<AppendReceipt, AuditError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((events, reply))
            .map_err(|_| storage("the audit writer has stopped"))?;
        answer
            .await
            .map_err(|_| storage("the audit writer has stopped"))?
    }
}

fn next_sequence(db: &Database) -> Result<u64, AuditError> {
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(EVENTS).map_err(storage)?;
    Ok(match table.last().map_err(storage)? {
        Some((seq, _)) => seq.value() + 1,
        None => 0,
    })
}

fn writer(db: Database, mut next_seq: u64, batches: mpsc::Receiver<(Vec<AuditEvent>, Reply)>) {
    while let Ok(first) = batches.recv() {
        let mut batch = vec![first];
        batch.extend(batches.try_iter());
        let start = next_seq;
        let result = write_batch(&db, start, &batch);
        let mut seq = start;
        for (events, reply) in batch {
            let count = events.len() as u64;
            let answer = match &result {
                Ok(()) => Ok(AppendReceipt {
                    first_seq: seq,
                    count,
                }),
                Err(err) => Err(err.clone()),
            };
            seq += count;
            // A caller that gave up waiting is not an error of the log.
            let _ = reply.send(answer);
        }
        if result.is_ok() {
            next_seq = seq;
        } else if let Err(err) = &result {
            tracing::error!(error = %err, "audit batch not written; its callers were told");
        }
    }
}

fn write_batch(
    db: &Database,
    start: u64,
    batch: &[(Vec<AuditEvent>, Reply)],
) -> Result<(), AuditError> {
    let txn = db.begin_write().map_err(storage)?;
    {
        let mut table = txn.open_table(EVENTS).map_err(storage)?;
        for (seq, event) in (start..).zip(batch.iter().flat_map(|(events, _)| events)) {
            let bytes = serde_json::to_vec(event).map_err(storage)?;
            table.insert(seq, bytes.as_slice()).map_err(storage)?;
        }
    }
    txn.commit().map_err(storage)
}

/// Reads every event, in order (for tests and, later, `sios audit tail`).
pub fn read_all(path: &Path) -> Result<Vec<(u64, AuditEvent)>, AuditError> {
    let db = Database::open(path).map_err(storage)?;
    let txn = db.begin_read().map_err(storage)?;
    let table = txn.open_table(EVENTS).map_err(storage)?;
    let mut out = Vec::new();
    for entry in table.iter().map_err(storage)? {
        let (seq, bytes) = entry.map_err(storage)?;
        let event = serde_json::from_slice(bytes.value()).map_err(storage)?;
        out.push((seq.value(), event));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(i: u64) -> AuditEvent {
        AuditEvent {
            time_unix_ms: i,
            actor: "kernel".into(),
            action: "test".into(),
            resource: format!("r{i}"),
            detail: String::new(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appends_get_distinct_gapless_sequence_numbers_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.redb");
        {
            let log = AuditLog::open(&path).unwrap();
            let tasks: Vec<_> = (0..64)
                .map(|i| {
                    let log = log.clone();
                    tokio::spawn(async move { log.append(vec![event(i), event(i)]).await.unwrap() })
                })
                .collect();
            let mut firsts = Vec::new();
            for task in tasks {
                let receipt = task.await.unwrap();
                assert_eq!(receipt.count, 2);
                firsts.push(receipt.first_seq);
            }
            firsts.sort();
            assert_eq!(firsts, (0..64).map(|i| i * 2).collect::<Vec<_>>());
        }
        // The writer thread owns the database; wait until it has let go.
        let mut all = None;
        for _ in 0..100 {
            match read_all(&path) {
                Ok(events) => {
                    all = Some(events);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
        let all = all.expect("database reopens");
        assert_eq!(all.len(), 128);
        assert!(all.iter().enumerate().all(|(i, (seq, _))| *seq == i as u64));
    }
}
