//! Writing an export bundle (OAR.md §7) from anything that can page through
//! a log: the [`AuditLog`] itself, or the audit service over a socket.
//!
//! The bundle covers records `0..N` where `N` is the size of the latest
//! signed checkpoint when the export starts; records appended meanwhile are
//! left for the next export, so the bundle always ends on a checkpoint
//! (`checkpoints` lists every one signed, stored yet or not).

use crate::bundle::BundleWriter;
use crate::progress::Progress;
use crate::record::Record;
use crate::store::AuditLog;
use sios_ipc::{AuditError, CheckpointPage, Digest, PublicKeyInfo, RecordPage, SignedCheckpoint};
use std::io::Write;
use std::path::Path;

/// Records (and checkpoints) asked for per page.
pub const PAGE: u64 = 4096;
/// Record bytes per page when reading a local log.
pub const LOCAL_PAGE_BYTES: usize = 8 << 20;

/// What an export reads from. Implemented by [`AuditLog`] and, in the CLI,
/// over the kernel's client socket.
#[allow(async_fn_in_trait)]
pub trait Source {
    async fn read(&self, from_seq: u64, max: u64) -> Result<RecordPage, AuditError>;
    async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError>;
    async fn checkpoints(&self, after_size: u64, max: u64) -> Result<CheckpointPage, AuditError>;
    async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError>;
    async fn policy_text(&self, hash: Digest) -> Result<String, AuditError>;
}

impl Source for AuditLog {
    async fn read(&self, from_seq: u64, max: u64) -> Result<RecordPage, AuditError> {
        AuditLog::read(self, from_seq, max, LOCAL_PAGE_BYTES)
    }
    async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        Ok(AuditLog::checkpoint(self))
    }
    async fn checkpoints(&self, after_size: u64, max: u64) -> Result<CheckpointPage, AuditError> {
        AuditLog::checkpoints(self, after_size, max, LOCAL_PAGE_BYTES)
    }
    async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError> {
        AuditLog::public_keys(self)
    }
    async fn policy_text(&self, hash: Digest) -> Result<String, AuditError> {
        AuditLog::policy_text(self, hash)
    }
}

/// What an export wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportSummary {
    pub records: u64,
    pub checkpoints: u64,
    pub tree_size: u64,
    pub root: Digest,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Source(#[from] AuditError),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error("the log sent a record that does not decode at seq {seq}: {reason}")]
    BadRecord { seq: u64, reason: String },
    #[error("the log skipped from record {expected} to {found}")]
    Gap { expected: u64, found: u64 },
}

/// Writes the bundle to `out`.
pub async fn write_to<S: Source, W: Write>(
    source: &S,
    out: W,
) -> Result<ExportSummary, ExportError> {
    write_to_with(source, out, None).await
}

/// [`write_to`], telling `progress` the records written of those the
/// bundle will hold, page by page.
pub async fn write_to_with<S: Source, W: Write>(
    source: &S,
    out: W,
    progress: Option<&Progress>,
) -> Result<ExportSummary, ExportError> {
    let latest = source.checkpoint().await?;
    let target = latest.size;
    let report = |done| {
        if let Some(p) = progress {
            p.report(done, target)
        }
    };
    report(0);
    let mut w = BundleWriter::new(out)?;
    // Only the keys the exported records introduce: a rotation after the
    // checkpoint above was read adds a key the bundle must not list (its
    // record is past the bundle's end, so the verifier would refuse it).
    for key in source.public_keys().await? {
        if key.introduced_at_seq < target {
            w.key(&key.vkey)?;
        }
    }
    let mut checkpoints: std::collections::VecDeque<SignedCheckpoint> = Default::default();
    let mut after = 0u64;
    let mut exhausted = false;
    let mut seq = 0u64;
    let mut count_cp = 0u64;
    while seq < target {
        report(seq);
        let page = source.read(seq, PAGE.min(target - seq)).await?;
        if page.records.is_empty() {
            return Err(ExportError::Gap {
                expected: seq,
                found: page.tree_size,
            });
        }
        for bytes in page.records {
            if seq >= target {
                break;
            }
            let record = Record::decode(&bytes).map_err(|e| ExportError::BadRecord {
                seq,
                reason: e.to_string(),
            })?;
            if record.seq != seq {
                return Err(ExportError::Gap {
                    expected: seq,
                    found: record.seq,
                });
            }
            w.record(&bytes)?;
            if let Some(hash) = record.policy {
                w.policy(&source.policy_text(Digest(hash)).await?)?;
            }
            seq += 1;
            // Checkpoints of size `seq` go right after this record.
            loop {
                if checkpoints.is_empty() && !exhausted {
                    let page = source.checkpoints(after, PAGE).await?;
                    if page.checkpoints.is_empty() {
                        exhausted = true;
                    }
                    for cp in page.checkpoints {
                        after = cp.size;
                        if cp.size <= target {
                            checkpoints.push_back(cp);
                        } else {
                            exhausted = true;
                        }
                    }
                }
                match checkpoints.front() {
                    Some(cp) if cp.size < seq => {
                        checkpoints.pop_front();
                    }
                    Some(cp) if cp.size == seq => {
                        let cp = checkpoints.pop_front().expect("front exists");
                        w.checkpoint(&cp.note)?;
                        count_cp += 1;
                    }
                    _ => break,
                }
            }
        }
    }
    w.finish()?.flush()?;
    report(seq);
    Ok(ExportSummary {
        records: seq,
        checkpoints: count_cp,
        tree_size: target,
        root: latest.root,
    })
}

/// Writes the bundle to a new file at `path` (fails if it exists), synced.
/// The file appears at `path` only once complete (`sios_ipc::new_file`):
/// an export that fails or is killed half way leaves no shorter bundle
/// there to be mistaken for the log.
pub async fn write_bundle<S: Source>(
    source: &S,
    path: &Path,
) -> Result<ExportSummary, ExportError> {
    write_bundle_with(source, path, None).await
}

/// [`write_bundle`], telling `progress` how far it got ([`write_to_with`]).
pub async fn write_bundle_with<S: Source>(
    source: &S,
    path: &Path,
    progress: Option<&Progress>,
) -> Result<ExportSummary, ExportError> {
    // Hashes and signatures only, no customer content: readable like the
    // public key it is verified with.
    let file = sios_ipc::new_file::NewFile::create(path, 0o644)?;
    let summary = write_to_with(source, file.file(), progress).await?;
    file.commit()?;
    Ok(summary)
}
