//! The tarpc `Audit` service (see `sios_ipc::audit`) over an [`AuditLog`].
//! Every reply is kept under the connection's frame limit by paging.

use crate::store::AuditLog;
use sios_ipc::{
    AppendReceipt, Audit, AuditError, AuditEvent, CheckpointPage, ConsistencyProof, Digest,
    InclusionProof, PublicKeyInfo, Receipt, RecordDraft, RecordPage, RecordTimings, RotationReport,
    ServiceInfo, SignedCheckpoint,
};
use tarpc::context::Context;

/// The kernel session to use when the kernel named none
/// (`--kernel-session`), e.g. when the service is started by hand or by a
/// test: the identity (device and inode) of the inherited listening socket.
/// A kernel binds that socket once per start and hands the same one to every
/// audit service it restarts, so the identity changes when the kernel does;
/// unlike the kernel's own session id it may repeat after a reboot.
pub fn socket_session(listener: &std::os::unix::net::UnixListener) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt as _;
    let file = std::fs::File::from(std::os::fd::OwnedFd::from(listener.try_clone()?));
    let meta = file.metadata()?;
    Ok(format!("socket {}:{}", meta.dev(), meta.ino()))
}

/// One connection's view of the service.
#[derive(Clone, Debug)]
pub struct AuditServer {
    log: AuditLog,
    /// Bytes of records or notes one reply may carry (well under the frame limit).
    page_bytes: usize,
}

impl AuditServer {
    /// `max_frame_bytes`: the transport's frame limit; replies use at most half.
    pub fn new(log: AuditLog, max_frame_bytes: usize) -> AuditServer {
        AuditServer {
            log,
            page_bytes: (max_frame_bytes / 2).max(64 * 1024),
        }
    }
}

/// The most records (or checkpoints) one page holds, whatever was asked.
const MAX_PAGE: u64 = 65_536;

impl Audit for AuditServer {
    async fn ready(self, _: Context) -> ServiceInfo {
        ServiceInfo {
            name: "audit".into(),
            pid: std::process::id(),
            database: self.log.path().display().to_string(),
            fault: self.log.fault(),
            holds: Some(format!("{} records", self.log.checkpoint().size)),
        }
    }

    async fn record(
        self,
        _: Context,
        drafts: Vec<RecordDraft>,
    ) -> Result<Vec<Receipt>, AuditError> {
        self.log.record(drafts).await
    }

    async fn record_each(
        self,
        _: Context,
        calls: Vec<Vec<RecordDraft>>,
    ) -> Result<Vec<Result<Vec<Receipt>, AuditError>>, AuditError> {
        self.log.record_each(calls).await
    }

    async fn record_timings(self, _: Context) -> Result<RecordTimings, AuditError> {
        Ok(self.log.stats().record_timings())
    }

    async fn append(
        self,
        _: Context,
        events: Vec<AuditEvent>,
    ) -> Result<AppendReceipt, AuditError> {
        self.log.append_events(events).await
    }

    async fn tail(self, _: Context, n: u64) -> Result<RecordPage, AuditError> {
        self.log.tail(n.min(MAX_PAGE), self.page_bytes)
    }

    async fn read(self, _: Context, from_seq: u64, max: u64) -> Result<RecordPage, AuditError> {
        self.log.read(from_seq, max.min(MAX_PAGE), self.page_bytes)
    }

    async fn checkpoint(self, _: Context) -> Result<SignedCheckpoint, AuditError> {
        Ok(self.log.checkpoint())
    }

    async fn checkpoints(
        self,
        _: Context,
        after_size: u64,
        max: u64,
    ) -> Result<CheckpointPage, AuditError> {
        self.log
            .checkpoints(after_size, max.min(MAX_PAGE), self.page_bytes)
    }

    async fn prove_inclusion(
        self,
        _: Context,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, AuditError> {
        self.log.prove_inclusion(seq, tree_size)
    }

    async fn prove_consistency(
        self,
        _: Context,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, AuditError> {
        self.log.prove_consistency(old_size, new_size)
    }

    async fn public_keys(self, _: Context) -> Result<Vec<PublicKeyInfo>, AuditError> {
        self.log.public_keys()
    }

    async fn rotate_key(
        self,
        _: Context,
        requested_by: String,
    ) -> Result<RotationReport, AuditError> {
        self.log.rotate_key(requested_by).await
    }

    async fn erase_subject_key(self, _: Context, subject: String) -> Result<bool, AuditError> {
        self.log.erase_subject_key(subject).await
    }

    async fn policy_text(self, _: Context, hash: Digest) -> Result<String, AuditError> {
        self.log.policy_text(hash)
    }
}
