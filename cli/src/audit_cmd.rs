//! `sios audit …` and `sios keys …`: the operator's and the auditor's view of
//! the Open Audit Record (services/audit/OAR.md).
//!
//! Commands that read the live log talk to it through an [`AuditSource`]
//! (implemented by the CLI over the kernel's client socket). `verify` and
//! `verify-proof` need no appliance: they run the `sios-audit` library on
//! files. `keys init` and `keys export-public` work on the audit data
//! directory directly, so they run before `sios up`.
//!
//! Exit status: 0 ok; 1 verification failed, or the appliance said no;
//! 2 usage error (bad arguments, unreadable files); 3 the appliance is not
//! running (for commands that need it). A closed stdout (`| head`) ends
//! quietly with 0.

use crate::progress::{Meter, Unit};
use clap::Subcommand;
use sios_audit::export;
use sios_audit::keys::{self, PublicKey};
use sios_audit::proof::{
    CONSISTENCY_FORMAT, CheckWith, ConsistencyProofFile, INCLUSION_FORMAT, InclusionProofFile,
    OldSignedBy, ProofFileError,
};
use sios_audit::record::Record;
use sios_audit::verify::{VerifyFailure, VerifyOptions, VerifyReport, counted, verify_bundle_with};
use sios_ipc::{
    AuditError, CheckpointPage, ConsistencyProof, Digest, FollowSession, FollowSummary,
    InclusionProof, PublicKeyInfo, RecordPage, RecordTimings, RotationReport, SignedCheckpoint,
    StageTimings,
};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// `sios audit …`
#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Print the last N records, oldest first.
    ///
    /// One line per record: seq, time (RFC 3339, UTC), kind, actor,
    /// action, resource, and for outcomes the result. With --json, one JSON
    /// object per line: {"seq", "time_unix_ms", "kind", "actor", "action",
    /// "resource", "prev", "hash", and when present "intent_seq", "result",
    /// "error", "decision", "subject", "inputs", "outputs", "brain", "policy",
    /// "detail"}; hashes in hex.
    ///
    /// With --follow, keeps printing records as they are written, like
    /// `tail -f`, until Ctrl-C. Following is one action in the log: its
    /// intent is recorded when it starts (`audit_read` on `audit:follow`)
    /// and its outcome when it stops; the reads in between are not recorded
    /// one by one. A follower killed without Ctrl-C is ended by the kernel
    /// after 30 s of silence, and the outcome says so.
    Tail {
        /// How many records (with --follow: how many existing ones to show
        /// before the new ones).
        #[arg(default_value_t = 20)]
        n: u64,
        /// One JSON object per record instead of text.
        #[arg(long)]
        json: bool,
        /// Keep printing new records until Ctrl-C (or SIGTERM).
        #[arg(short, long)]
        follow: bool,
    },
    /// Write the whole log to a self-contained bundle: records, signed
    /// checkpoints, public keys and policy texts (OAR.md §7).
    ///
    /// The bundle ends at the latest signed checkpoint. Hand it to an auditor
    /// with the public key (`sios keys export-public`).
    Export {
        /// The bundle file to create (must not exist). It appears under
        /// this name only once complete and synced; an export that fails
        /// or is interrupted leaves nothing there.
        file: PathBuf,
    },
    /// Verify a bundle offline: every record, the hash chain, the Merkle tree
    /// at every checkpoint, every signature (following key rotations).
    ///
    /// Needs no appliance. Without BUNDLE, exports the running appliance's
    /// log to a temporary file and verifies that. On failure, names the first
    /// bad record and why (OAR.md §8.2), and exits 1.
    ///
    /// A bundle alone cannot show that it is the whole log: every prefix
    /// ending at a checkpoint is a valid log. Keep the last checkpoint of
    /// each bundle you verify (--keep-checkpoint) and check the next bundle
    /// against it (--extends): a log cut short, or a second history signed
    /// with the same key, is then caught.
    Verify {
        /// The bundle (`sios audit export`); default: the live log.
        bundle: Option<PathBuf>,
        /// The operator's public key file, as the auditor received it.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// A checkpoint kept from an earlier verification: the bundle must
        /// extend it (same records up to its size, and at least as many).
        #[arg(long, value_name = "FILE")]
        extends: Option<PathBuf>,
        /// After a successful verification, write the bundle's last signed
        /// checkpoint to FILE, for the next --extends (replacing a checkpoint
        /// kept there before; any other file there is refused).
        #[arg(long, value_name = "FILE")]
        keep_checkpoint: Option<PathBuf>,
        /// One JSON object instead of text: {"ok": true, "origin",
        /// "records", "checkpoints", "root", "keys", "intents", "outcomes",
        /// "events", "open_intents", "policies"} or {"ok": false, "check"
        /// (OAR.md §8.1), "seq" (the record named, or null), "checkpoint",
        /// "reason"}; for input that cannot be read or is not a bundle (exit
        /// 2), "check" is null.
        #[arg(long)]
        json: bool,
    },
    /// Print an inclusion proof of record SEQ in a signed checkpoint, as
    /// JSON that `sios audit verify-proof` checks offline.
    Prove {
        seq: u64,
        /// The checkpoint's tree size [default: the latest checkpoint].
        #[arg(long)]
        tree_size: Option<u64>,
        /// Write the proof here instead of standard output (replacing an
        /// earlier JSON output; any other file there is refused).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Check a proof file (from `prove` or `consistency`) offline.
    ///
    /// A proof rests on a signed checkpoint. With --pubkey alone, that
    /// checkpoint must carry a signature by the key given. A proof made
    /// before a key rotation is signed by an earlier key: give that key, or
    /// give --bundle an export of the same log, from which the key the log
    /// had in force at each size is taken.
    ///
    /// Exit status: 0, the proof holds; 1, it is false (evidence against
    /// the log), or the export given with --bundle does not verify; 2, NOT
    /// CHECKED: the key(s) to check with have no signature on the checkpoint
    /// the proof rests on (made before or after a key rotation, or signed
    /// by no key of the log), which says nothing either way, or a usage
    /// error. OAR.md §7.2 defines the checks.
    VerifyProof {
        /// The proof file, or - for standard input.
        proof: PathBuf,
        /// The operator's public key file.
        #[arg(long, value_name = "FILE")]
        pubkey: PathBuf,
        /// An export of the same log (`sios audit export`), verified first
        /// with the same key. Each checkpoint of the proof is then checked
        /// with the key(s) the log had in force at its size (following key
        /// rotations), and where the export reaches that size, it must have
        /// the export's root there.
        #[arg(long, value_name = "FILE")]
        bundle: Option<PathBuf>,
        /// One JSON object instead of text: {"ok": true, "verdict": "holds",
        /// "proof": "inclusion" or "consistency", "origin", "signed_by" (key
        /// ids), and "seq", "kind", "actor", "action", "resource",
        /// "tree_size", "root"; or "old_size", "new_size", "old_root",
        /// "new_root", "old_signature"} or {"ok": false, "verdict": "fails"
        /// (exit 1), "not-checked" or "usage" (exit 2), "reason"}.
        #[arg(long)]
        json: bool,
    },
    /// Print a consistency proof between the signed checkpoints of tree sizes
    /// OLD and NEW (both must be stored checkpoints), as JSON that
    /// `verify-proof` checks offline.
    Consistency {
        old: u64,
        new: u64,
        /// Write the proof here instead of standard output (replacing an
        /// earlier JSON output; any other file there is refused).
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Show where the audit service's record calls spent their time since it
    /// started, stage by stage: how many, and the median, 90th and 99th
    /// percentile and longest time in microseconds.
    ///
    /// Calls with an intent are answered once their checkpoint is signed;
    /// outcomes and events once durable. Stages: `queued` (waiting for the
    /// writer), `prepared` (checking, building and storing the records),
    /// `committed` (the durable commit: the disk's share; if it is far above
    /// what the disk usually takes, look at the disk), `answered` (until the
    /// reply; for intents this includes the signature). Queued and answered
    /// count calls, prepared and committed count batches (concurrent calls
    /// share one). With --json, one object: {"intents": {STAGE: {"count",
    /// "p50_us", "p90_us", "p99_us", "max_us"}}, "durable_only": {…}}, times
    /// null where nothing was counted.
    Timings {
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
}

impl AuditCommand {
    /// Whether the command needs a running appliance.
    pub fn needs_appliance(&self) -> bool {
        match self {
            AuditCommand::Verify { bundle, .. } => bundle.is_none(),
            AuditCommand::VerifyProof { .. } => false,
            _ => true,
        }
    }
}

/// `sios keys …`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Generate the operator's ML-DSA-65 signing key in the audit data
    /// directory (the secret file is mode 0600 and never leaves it). The
    /// audit service also does this on its first start.
    Init,
    /// Write the operator's current public key to FILE (for auditors).
    ///
    /// FILE may hold an earlier export, which is replaced; any other file
    /// there (`signing.key`, say) is refused, not overwritten.
    ExportPublic { file: PathBuf },
    /// Replace the signing key. Recorded in the log as a `key.rotate` record
    /// signed by the old key; earlier checkpoints stay verifiable.
    Rotate,
}

impl KeysCommand {
    pub fn needs_appliance(&self) -> bool {
        matches!(self, KeysCommand::Rotate)
    }
}

/// What `sios audit` reads from the running appliance. The CLI implements
/// it over the kernel's client socket (the kernel relays to the audit
/// service after deciding the request with the policy); each method is the
/// `sios_ipc::Audit` method of the same name. Map transport failures to
/// [`AuditError::Unavailable`].
#[allow(async_fn_in_trait)]
pub trait AuditSource {
    async fn tail(&self, n: u64) -> Result<RecordPage, AuditError>;
    async fn read(&self, from_seq: u64, max: u64) -> Result<RecordPage, AuditError>;
    async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError>;
    async fn checkpoints(&self, after_size: u64, max: u64) -> Result<CheckpointPage, AuditError>;
    async fn prove_inclusion(
        &self,
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, AuditError>;
    async fn prove_consistency(
        &self,
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, AuditError>;
    async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError>;
    async fn policy_text(&self, hash: Digest) -> Result<String, AuditError>;
    /// The kernel fills in who asked (from SO_PEERCRED).
    async fn rotate_key(&self) -> Result<RotationReport, AuditError>;
    async fn record_timings(&self) -> Result<RecordTimings, AuditError>;
}

/// What `sios audit tail --follow` needs of the running appliance: a follow
/// session (`sios_ipc::Kernel::audit_follow_start` and the two calls after
/// it). Separate from [`AuditSource`] because only a live kernel has one.
#[allow(async_fn_in_trait)]
pub trait FollowSource {
    async fn follow_start(&self, back: u64) -> Result<FollowSession, AuditError>;
    async fn follow_next(
        &self,
        session: u64,
        max: u64,
        wait_ms: u64,
    ) -> Result<RecordPage, AuditError>;
    async fn follow_stop(&self, session: u64) -> Result<FollowSummary, AuditError>;
}

/// How long one follow request waits for a record: short enough that a
/// dead kernel is noticed promptly, long enough to cost nothing when idle.
const FOLLOW_WAIT_MS: u64 = 2_000;

/// `sios audit tail --follow`: prints the last `back` records, then each
/// new one as it is written, until SIGINT or SIGTERM; then ends the session,
/// so that its outcome is recorded, and says what it delivered on stderr.
pub async fn follow<S: FollowSource>(s: &S, back: u64, json: bool) -> Result<(), AuditCliError> {
    let mut out = Out { closed: false };
    let started = s.follow_start(back).await?;
    let stop = sios_ipc::process::shutdown_signal();
    tokio::pin!(stop);
    let mut shown = 0u64;
    let ended = loop {
        let page = tokio::select! {
            signal = &mut stop => break signal.map_err(|e| usage(format!("waiting for Ctrl-C: {e}"))),
            page = s.follow_next(started.session, 1024, FOLLOW_WAIT_MS) => page?,
        };
        print_records(&mut out, &page, json)?;
        shown += page.records.len() as u64;
        if out.closed {
            // The reader went away (e.g. `| head`): end as it would.
            break Ok("the reader closed standard output");
        }
    };
    // Counted here, not by the session: a page the kernel read for a
    // request that Ctrl-C then abandoned was never shown.
    s.follow_stop(started.session).await?;
    let why = ended?;
    eprintln!(
        "followed the audit log from seq {}: {shown} records shown; stopped ({why})",
        started.from_seq
    );
    Ok(())
}

/// Prints a page of records, one line each (text, or JSON with `json`).
fn print_records(out: &mut Out, page: &RecordPage, json: bool) -> Result<(), AuditCliError> {
    for bytes in &page.records {
        let record = Record::decode(bytes).map_err(|e| {
            AuditCliError::Failed(format!("the log returned an invalid record: {e}"))
        })?;
        if json {
            out.line(&record.to_json(&Record::hash_of(bytes)).to_string())?;
        } else {
            out.line(&record.to_line())?;
        }
    }
    Ok(())
}

/// Lets the library's exporter read through an [`AuditSource`].
struct Exporter<'a, S>(&'a S);

impl<S: AuditSource> export::Source for Exporter<'_, S> {
    async fn read(&self, from_seq: u64, max: u64) -> Result<RecordPage, AuditError> {
        self.0.read(from_seq, max).await
    }
    async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        self.0.checkpoint().await
    }
    async fn checkpoints(&self, after_size: u64, max: u64) -> Result<CheckpointPage, AuditError> {
        self.0.checkpoints(after_size, max).await
    }
    async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError> {
        self.0.public_keys().await
    }
    async fn policy_text(&self, hash: Digest) -> Result<String, AuditError> {
        self.0.policy_text(hash).await
    }
}

/// Exports the live log to a new file at `path`, drawing its progress on a
/// terminal.
async fn export_live<S: AuditSource>(
    s: &S,
    path: &Path,
) -> Result<export::ExportSummary, export::ExportError> {
    let meter = Meter::on_terminal("exporting the audit log", Unit::Records);
    let progress = meter.as_ref().map(Meter::progress);
    export::write_bundle_with(&Exporter(s), path, progress.as_ref()).await
}

/// Verifies the bundle file at `path`, drawing its progress on a terminal.
fn verify_file(
    path: &Path,
    pubkey: &Path,
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyFailure> {
    let meter = Meter::on_terminal("verifying", Unit::Bytes);
    let options = VerifyOptions {
        progress: meter.as_ref().map(Meter::progress),
        ..options
    };
    verify_bundle_with(path, pubkey, &options)
}

/// A failure of an audit or keys command, with its exit status.
#[derive(Debug, thiserror::Error)]
pub enum AuditCliError {
    /// Verification failed, or the appliance refused: exit 1.
    #[error("{0}")]
    Failed(String),
    /// Bad arguments or unreadable files: exit 2.
    #[error("{0}")]
    Usage(String),
    /// The command needs a running appliance and none was given: exit 3.
    #[error("this command needs a running appliance (`sios up`)")]
    NotRunning,
}

impl AuditCliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            AuditCliError::Failed(_) => 1,
            AuditCliError::Usage(_) => 2,
            AuditCliError::NotRunning => 3,
        }
    }
}

impl From<AuditError> for AuditCliError {
    fn from(err: AuditError) -> AuditCliError {
        match err {
            AuditError::NoSuchRecord { .. } | AuditError::BadTreeSize { .. } => {
                AuditCliError::Usage(err.to_string())
            }
            AuditError::Unavailable(_) => AuditCliError::Failed(err.to_string()),
            other => AuditCliError::Failed(other.to_string()),
        }
    }
}

fn usage(err: impl std::fmt::Display) -> AuditCliError {
    AuditCliError::Usage(err.to_string())
}

/// Standard output that ends quietly when the reader goes away.
struct Out {
    closed: bool,
}

impl Out {
    fn line(&mut self, text: &str) -> Result<(), AuditCliError> {
        if self.closed {
            return Ok(());
        }
        let mut stdout = std::io::stdout().lock();
        match writeln!(stdout, "{text}") {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            Err(e) => Err(usage(format!("writing to standard output: {e}"))),
        }
    }
}

fn source<S>(s: Option<&S>) -> Result<&S, AuditCliError> {
    s.ok_or(AuditCliError::NotRunning)
}

fn read_pubkey(path: &Path) -> Result<PublicKey, AuditCliError> {
    keys::read_public(path).map_err(usage)
}

fn write_json(value: serde_json::Value, output: Option<&Path>) -> Result<(), AuditCliError> {
    let text = serde_json::to_string_pretty(&value).map_err(usage)?;
    match output {
        // Whole or not at all, so a proof file is never half written; and
        // only over an earlier JSON output, never over another file.
        Some(path) => sios_ipc::new_file::replace_own(
            path,
            format!("{text}\n").as_bytes(),
            0o644,
            "a JSON file",
            |bytes| serde_json::from_slice::<serde_json::Value>(bytes).is_ok(),
        )
        .map_err(|e| usage(format!("{}: {e}", path.display()))),
        None => Out { closed: false }.line(&text),
    }
}

/// The signed checkpoint of exactly `size`.
async fn checkpoint_of<S: AuditSource>(
    s: &S,
    size: u64,
) -> Result<SignedCheckpoint, AuditCliError> {
    let latest = s.checkpoint().await?;
    if latest.size == size {
        return Ok(latest);
    }
    let page = s.checkpoints(size.saturating_sub(1), 1).await?;
    match page.checkpoints.into_iter().next() {
        Some(cp) if cp.size == size => Ok(cp),
        Some(cp) => Err(usage(format!(
            "no signed checkpoint of size {size}; the next one has size {} (latest: {})",
            cp.size, latest.size
        ))),
        None => Err(usage(format!(
            "no signed checkpoint of size {size}; the latest has size {}",
            latest.size
        ))),
    }
}

/// Runs `sios audit CMD`. `source` is the running appliance, if any;
/// commands that need one fail with [`AuditCliError::NotRunning`] without it.
pub async fn run_audit<S: AuditSource>(
    cmd: AuditCommand,
    source_opt: Option<&S>,
) -> Result<(), AuditCliError> {
    let mut out = Out { closed: false };
    match cmd {
        AuditCommand::Tail { follow: true, .. } => Err(usage(
            "--follow needs a live kernel; `sios audit tail --follow` runs it through `follow`",
        )),
        AuditCommand::Tail { n, json, .. } => {
            let page = source(source_opt)?.tail(n).await?;
            print_records(&mut out, &page, json)
        }
        AuditCommand::Timings { json } => {
            let timings = source(source_opt)?.record_timings().await?;
            if json {
                out.line(&timings_json(&timings).to_string())
            } else {
                timings_table(&timings)
                    .iter()
                    .try_for_each(|line| out.line(line))
            }
        }
        AuditCommand::Export { file } => {
            let s = source(source_opt)?;
            let summary = export_live(s, &file).await.map_err(|e| match e {
                export::ExportError::Io(io) => usage(format!("{}: {io}", file.display())),
                other => AuditCliError::Failed(other.to_string()),
            })?;
            eprintln!(
                "wrote {}: {}, {}, tree size {}, root {}",
                file.display(),
                counted(summary.records, "record"),
                counted(summary.checkpoints, "signed checkpoint"),
                summary.tree_size,
                summary.root
            );
            Ok(())
        }
        AuditCommand::Verify {
            bundle,
            pubkey,
            extends,
            keep_checkpoint,
            json,
        } => {
            let options = VerifyOptions {
                extends: extends
                    .map(|p| {
                        sios_ipc::input::read_at_most(&p, MAX_NOTE_FILE_BYTES, "a checkpoint note")
                            .map_err(usage)
                    })
                    .transpose()?,
                ..VerifyOptions::default()
            };
            let (path, _tmp) = match bundle {
                Some(p) => (p, None),
                None => {
                    let s = source(source_opt)?;
                    let dir = TempDir::new().map_err(usage)?;
                    let path = dir.0.join("live.bundle");
                    export_live(s, &path)
                        .await
                        .map_err(|e| AuditCliError::Failed(e.to_string()))?;
                    (path, Some(dir))
                }
            };
            match verify_file(&path, &pubkey, options) {
                Ok(report) => {
                    if let Some(keep) = keep_checkpoint {
                        keep_checkpoint_file(&keep, &report.last_checkpoint)?;
                    }
                    if json {
                        out.line(&report_json(&report).to_string())
                    } else {
                        out.line(&report.to_string())
                    }
                }
                Err(failure @ VerifyFailure::Unreadable { .. }) => {
                    // Not a verdict on any log (exit 2), but a script asking
                    // for JSON still gets an object saying why.
                    if json {
                        out.line(&failure_json(&failure).to_string())?;
                    }
                    Err(usage(failure))
                }
                Err(failure) => {
                    if json {
                        out.line(&failure_json(&failure).to_string())?;
                    }
                    Err(AuditCliError::Failed(format!(
                        "verification FAILED: {failure}"
                    )))
                }
            }
        }
        AuditCommand::Prove {
            seq,
            tree_size,
            output,
        } => {
            let s = source(source_opt)?;
            let cp = match tree_size {
                Some(size) => checkpoint_of(s, size).await?,
                None => s.checkpoint().await?,
            };
            let proof = s.prove_inclusion(seq, Some(cp.size)).await?;
            let page = s.read(seq, 1).await?;
            let record = page
                .records
                .first()
                .ok_or_else(|| usage(format!("no record {seq}")))?;
            let file = InclusionProofFile::new(record, &proof, &cp.note);
            write_json(
                serde_json::to_value(&file).map_err(usage)?,
                output.as_deref(),
            )
        }
        AuditCommand::Consistency { old, new, output } => {
            let s = source(source_opt)?;
            let old_cp = checkpoint_of(s, old).await?;
            let new_cp = checkpoint_of(s, new).await?;
            let proof = s.prove_consistency(old, new).await?;
            let file = ConsistencyProofFile::new(&proof, &old_cp.note, &new_cp.note);
            // Check it before handing it out, with the log's own keys.
            let keys: Vec<PublicKey> = s
                .public_keys()
                .await?
                .iter()
                .filter_map(|k| PublicKey::parse_vkey(&k.vkey).ok())
                .collect();
            let refs: Vec<&PublicKey> = keys.iter().collect();
            file.check(&refs)
                .map_err(|e| AuditCliError::Failed(format!("the log's own proof fails: {e}")))?;
            write_json(
                serde_json::to_value(&file).map_err(usage)?,
                output.as_deref(),
            )
        }
        AuditCommand::VerifyProof {
            proof,
            pubkey,
            bundle,
            json,
        } => verify_proof(&proof, &pubkey, bundle.as_deref(), json, &mut out),
    }
}

/// A proof file, by its `format`.
/// Most bytes a kept checkpoint note is read to: a note with two
/// signatures (a key hand-over) is some 9 KB.
const MAX_NOTE_FILE_BYTES: usize = 64 * 1024;
/// Most bytes a proof file is read to: a proof holds at most 64 hashes a
/// path (some 10 KB of JSON for two paths), and its checkpoints.
const MAX_PROOF_FILE_BYTES: usize = 1 << 20;

enum ProofFile {
    Inclusion(InclusionProofFile),
    Consistency(ConsistencyProofFile),
}

impl ProofFile {
    fn read(path: &Path) -> Result<ProofFile, AuditCliError> {
        let bytes = sios_ipc::input::read_at_most(path, MAX_PROOF_FILE_BYTES, "a proof file")
            .map_err(usage)?;
        let text = String::from_utf8(bytes).map_err(|_| {
            usage(format!(
                "{}: not a sios proof file: it is not text (a proof is JSON, from \
                 `sios audit prove` or `sios audit consistency`)",
                path.display()
            ))
        })?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| usage(format!("{}: not JSON: {e}", path.display())))?;
        let damaged =
            |e: serde_json::Error| usage(format!("{}: a damaged proof: {e}", path.display()));
        match value.get("format").and_then(|f| f.as_str()) {
            Some(INCLUSION_FORMAT) => Ok(ProofFile::Inclusion(
                serde_json::from_value(value).map_err(damaged)?,
            )),
            Some(CONSISTENCY_FORMAT) => Ok(ProofFile::Consistency(
                serde_json::from_value(value).map_err(damaged)?,
            )),
            other => Err(usage(format!(
                "{}: not a sios proof file: its \"format\" is {}; expected \"{INCLUSION_FORMAT}\" \
                 (from `sios audit prove`) or \"{CONSISTENCY_FORMAT}\" (from `sios audit consistency`)",
                path.display(),
                other.map_or_else(|| "missing".to_owned(), |f| format!("\"{f}\"")),
            ))),
        }
    }

    /// The sizes its checkpoints claim, as far as they can be read: the
    /// roots an export must report to check them against.
    fn checkpoint_sizes(&self) -> Vec<u64> {
        let notes = match self {
            ProofFile::Inclusion(f) => vec![&f.checkpoint],
            ProofFile::Consistency(f) => vec![&f.old_checkpoint, &f.new_checkpoint],
        };
        notes
            .into_iter()
            .filter_map(|note| {
                let (body, _) = sios_audit::checkpoint::open_note(note).ok()?;
                Some(
                    sios_audit::checkpoint::Checkpoint::parse_body(body)
                        .ok()?
                        .size,
                )
            })
            .collect()
    }
}

/// `sios audit verify-proof`: the verdict in words, or with `json` as one
/// JSON object, and the exit status that goes with it.
fn verify_proof(
    path: &Path,
    pubkey: &Path,
    bundle: Option<&Path>,
    json: bool,
    out: &mut Out,
) -> Result<(), AuditCliError> {
    match check_proof(path, pubkey, bundle) {
        Ok((text, fields)) => {
            if json {
                let mut object = serde_json::json!({"ok": true, "verdict": "holds"});
                object
                    .as_object_mut()
                    .expect("an object")
                    .extend(fields.as_object().expect("an object").clone());
                out.line(&object.to_string())
            } else {
                out.line(&text)
            }
        }
        Err(verdict) => {
            let (name, error) = match verdict {
                ProofVerdict::Fails(why) => ("fails", AuditCliError::Failed(why)),
                ProofVerdict::NotChecked(why) => ("not-checked", usage(why)),
                ProofVerdict::Usage(error) => ("usage", error),
            };
            if json {
                out.line(
                    &serde_json::json!({"ok": false, "verdict": name, "reason": error.to_string()})
                        .to_string(),
                )?;
            }
            Err(error)
        }
    }
}

/// Why `sios audit verify-proof` does not say OK.
enum ProofVerdict {
    /// The proof is false, or the export given does not verify (exit 1).
    Fails(String),
    /// The keys to check with have no line on the checkpoint (exit 2).
    NotChecked(String),
    /// The inputs are not usable (exit 2).
    Usage(AuditCliError),
}

impl From<AuditCliError> for ProofVerdict {
    fn from(e: AuditCliError) -> ProofVerdict {
        ProofVerdict::Usage(e)
    }
}

/// A proof that does not check out: evidence against the log (exit 1), or
/// a key that cannot check it (exit 2: give the right key, OAR.md §7.2).
fn proof_failure(e: ProofFileError, what: String) -> ProofVerdict {
    if e.not_checked() {
        ProofVerdict::NotChecked(format!("{what} NOT CHECKED: {e}"))
    } else {
        ProofVerdict::Fails(format!("{what} FAILED: {e}"))
    }
}

/// Checks a proof file: on success, the line to print and the fields of
/// the JSON reply.
fn check_proof(
    path: &Path,
    pubkey: &Path,
    bundle: Option<&Path>,
) -> Result<(String, serde_json::Value), ProofVerdict> {
    let key = read_pubkey(pubkey)?;
    let file = ProofFile::read(path)?;
    let log = match bundle {
        None => None,
        Some(bundle) => {
            let options = VerifyOptions {
                roots_at: file.checkpoint_sizes(),
                ..VerifyOptions::default()
            };
            match verify_file(bundle, pubkey, options) {
                Ok(report) => Some(report),
                Err(failure @ VerifyFailure::Unreadable { .. }) => {
                    return Err(usage(format!("--bundle: {failure}")).into());
                }
                Err(failure) => {
                    return Err(ProofVerdict::Fails(format!(
                        "the export given with --bundle does not verify, so it cannot vouch for \
                         any key: {failure}"
                    )));
                }
            }
        }
    };
    let keys = [&key];
    let with = match &log {
        None => CheckWith::Keys(&keys),
        Some(log) => CheckWith::Export { log, trusted: &key },
    };
    let ids =
        |size: u64| -> Vec<String> { with.keys_for(size).iter().map(|k| k.id_hex()).collect() };
    // Who signed a checkpoint of `size`, in the words of the reply.
    let signed_by = |size: u64| {
        let ids = ids(size);
        match (&log, ids.len()) {
            (None, _) => format!("key {}", ids.join(" or ")),
            (Some(_), 1) => format!("key {} (in force at that size, per the export)", ids[0]),
            (Some(_), _) => format!(
                "keys {} (the hand-over of a key rotation, per the export)",
                ids.join(" and ")
            ),
        }
    };
    match file {
        ProofFile::Inclusion(file) => {
            let (record, cp) = file
                .check_with(with)
                .map_err(|e| proof_failure(e, format!("proof for record {}", file.seq)))?;
            let text = format!(
                "OK: record {} ({} {} {}) is in the log {} of size {} signed by {}",
                record.seq,
                record.kind.name(),
                record.action,
                record.resource,
                cp.origin,
                cp.size,
                signed_by(cp.size)
            );
            let fields = serde_json::json!({
                "proof": "inclusion",
                "origin": cp.origin,
                "seq": record.seq,
                "kind": record.kind.name(),
                "actor": record.actor,
                "action": record.action,
                "resource": record.resource,
                "tree_size": cp.size,
                "root": sios_audit::hex(&cp.root),
                "signed_by": ids(cp.size),
            });
            Ok((text, fields))
        }
        ProofFile::Consistency(file) => {
            let checked = file.check_with(with).map_err(|e| {
                proof_failure(
                    e,
                    format!("consistency proof ({} -> {})", file.old_size, file.new_size),
                )
            })?;
            let (old, new) = (&checked.old, &checked.new);
            let smaller = match &checked.old_signed_by {
                OldSignedBy::TheKeyGiven => {
                    let (by_old, by_new) = (signed_by(old.size), signed_by(new.size));
                    if by_old == by_new {
                        format!("both signed by {by_new}")
                    } else {
                        format!("signed by {by_new}; the smaller checkpoint by {by_old}")
                    }
                }
                OldSignedBy::EarlierKey(id) => format!(
                    "signed by {}; the smaller checkpoint is signed by key {id} (an earlier key) \
                     and proven by the larger",
                    signed_by(new.size)
                ),
                OldSignedBy::NoKeyOfTheLog(lines) => format!(
                    "signed by {}; the smaller checkpoint is signed by no key of the log \
                     ({lines}) and proven by the larger",
                    signed_by(new.size)
                ),
            };
            let text = format!(
                "OK: the log {} of size {} is a prefix of its size {}, {smaller}",
                new.origin, old.size, new.size,
            );
            let old_signature = match &checked.old_signed_by {
                OldSignedBy::TheKeyGiven => "checked",
                OldSignedBy::EarlierKey(_) => "by an earlier key, proven by the larger",
                OldSignedBy::NoKeyOfTheLog(_) => "by no key of the log, proven by the larger",
            };
            let fields = serde_json::json!({
                "proof": "consistency",
                "origin": new.origin,
                "old_size": old.size,
                "new_size": new.size,
                "old_root": sios_audit::hex(&old.root),
                "new_root": sios_audit::hex(&new.root),
                "signed_by": ids(new.size),
                "old_signature": old_signature,
            });
            Ok((text, fields))
        }
    }
}

/// The quantiles `sios audit timings` shows, with their column names.
const TIMING_QUANTILES: [(&str, f64); 4] =
    [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("max", 1.0)];

/// Each kind of call with its heading.
fn timing_kinds(t: &RecordTimings) -> [(&'static str, &'static str, &StageTimings); 2] {
    [
        (
            "intents",
            "calls with an intent (answered once signed)",
            &t.intents,
        ),
        (
            "durable_only",
            "outcomes and events (answered once durable)",
            &t.durable_only,
        ),
    ]
}

/// `sios audit timings`: a table per kind of call, a row per stage.
pub fn timings_table(t: &RecordTimings) -> Vec<String> {
    let mut lines = Vec::new();
    for (_, heading, stages) in timing_kinds(t) {
        lines.push(heading.to_owned());
        let mut header = format!("  {:<10} {:>10}", "stage", "count");
        for (name, _) in TIMING_QUANTILES {
            header += &format!(" {:>9}", format!("{name} µs"));
        }
        lines.push(header);
        for (stage, histogram) in stages.stages() {
            let mut line = format!("  {stage:<10} {:>10}", histogram.count());
            for (_, q) in TIMING_QUANTILES {
                let cell = histogram
                    .quantile(q)
                    .map_or_else(|| "-".to_owned(), |d| d.as_micros().to_string());
                line += &format!(" {cell:>9}");
            }
            lines.push(line);
        }
    }
    lines
}

/// `sios audit verify --json`, when the log verifies.
fn report_json(r: &VerifyReport) -> serde_json::Value {
    serde_json::json!({
        "ok": true,
        "origin": r.origin,
        "records": r.records,
        "checkpoints": r.checkpoints,
        "root": sios_audit::hex(&r.root),
        "keys": r.keys,
        "intents": r.intents,
        "outcomes": r.outcomes,
        "events": r.events,
        "open_intents": r.open_intents,
        "policies": r.policies,
    })
}

/// `sios audit verify --json`, when it does not.
fn failure_json(f: &VerifyFailure) -> serde_json::Value {
    let (checkpoint, reason) = match f {
        VerifyFailure::Invalid {
            checkpoint, reason, ..
        } => (*checkpoint, reason.clone()),
        VerifyFailure::Unreadable { .. } => (None, f.to_string()),
    };
    serde_json::json!({
        "ok": false,
        "check": f.check(),
        "seq": f.seq(),
        "checkpoint": checkpoint,
        "reason": reason,
    })
}

/// `sios audit timings --json`.
pub fn timings_json(t: &RecordTimings) -> serde_json::Value {
    let mut kinds = serde_json::Map::new();
    for (key, _, stages) in timing_kinds(t) {
        let mut by_stage = serde_json::Map::new();
        for (stage, histogram) in stages.stages() {
            let mut fields = serde_json::Map::new();
            fields.insert("count".into(), histogram.count().into());
            for (name, q) in TIMING_QUANTILES {
                let micros = histogram.quantile(q).map(|d| d.as_micros() as u64);
                fields.insert(format!("{name}_us"), micros.into());
            }
            by_stage.insert(stage.into(), fields.into());
        }
        kinds.insert(key.into(), by_stage.into());
    }
    kinds.into()
}

/// Runs `sios keys CMD`. `audit_data_dir` is the audit service's data
/// directory (`<state-dir>/audit`).
pub async fn run_keys<S: AuditSource>(
    cmd: KeysCommand,
    audit_data_dir: &Path,
    source_opt: Option<&S>,
) -> Result<(), AuditCliError> {
    let mut out = Out { closed: false };
    match cmd {
        KeysCommand::Init => {
            let key = keys::init(audit_data_dir).map_err(|e| match e {
                keys::KeyError::Exists(_) => AuditCliError::Failed(e.to_string()),
                other => usage(other),
            })?;
            out.line(&format!(
                "created signing key {}+{} in {} (secret: {}, mode 0600; public: {})",
                key.name(),
                key.id_hex(),
                audit_data_dir.display(),
                keys::SECRET_FILE,
                keys::PUBLIC_FILE
            ))
        }
        KeysCommand::ExportPublic { file } => {
            let key = keys::export_public(audit_data_dir, &file).map_err(usage)?;
            out.line(&format!(
                "wrote public key {}+{} to {}",
                key.name(),
                key.id_hex(),
                file.display()
            ))
        }
        KeysCommand::Rotate => {
            let report = source(source_opt)?.rotate_key().await?;
            out.line(&format!(
                "rotated: key {} -> {} (record {}, hand-over checkpoint of size {} signed by both); \
                 give auditors the new public key (`sios keys export-public`)",
                report.old_key_id, report.new_key_id, report.seq, report.checkpoint.size
            ))
        }
    }
}

/// Writes the checkpoint a verification ended on to `path`, for the next
/// `verify --extends`; replaces an earlier kept checkpoint, never another file.
fn keep_checkpoint_file(path: &Path, note: &str) -> Result<(), AuditCliError> {
    let is_checkpoint = |bytes: &[u8]| {
        std::str::from_utf8(bytes).is_ok_and(|text| {
            sios_audit::checkpoint::open_note(text)
                .is_ok_and(|(body, _)| sios_audit::checkpoint::Checkpoint::parse_body(body).is_ok())
        })
    };
    sios_ipc::new_file::replace_own(
        path,
        note.as_bytes(),
        0o644,
        "a kept checkpoint",
        is_checkpoint,
    )
    .map_err(|e| usage(format!("{}: {e}", path.display())))
}

/// Removes a temporary directory when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// A new directory only this user can enter, under a name nobody could
    /// have made first: it is created here or not at all (never reused), so
    /// another local user cannot read the bundle or swap in another.
    fn new() -> std::io::Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt as _;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("sios-verify-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod temp_dir_tests {
    use super::TempDir;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_verify_directory_is_new_private_and_removed_after() {
        let (a, b) = (TempDir::new().unwrap(), TempDir::new().unwrap());
        assert_ne!(a.0, b.0, "never reused");
        let mode = std::fs::metadata(&a.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let path = a.0.clone();
        drop(a);
        assert!(!path.exists());
    }
}

#[cfg(test)]
mod output_file_tests {
    use super::{keep_checkpoint_file, write_json};
    use sios_audit::checkpoint::Checkpoint;
    use sios_audit::keys::SecretKey;

    #[test]
    fn outputs_replace_their_own_kind_and_never_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let precious = dir.path().join("audit.redb");
        std::fs::write(&precious, b"\x00redb pages").unwrap();

        let key = SecretKey::from_seed("sios/audit/test", [3; 32]).unwrap();
        let note = |size| {
            Checkpoint {
                origin: "sios/audit/test".into(),
                size,
                root: [size as u8; 32],
            }
            .sign(&[&key])
        };
        let kept = dir.path().join("kept.checkpoint");
        keep_checkpoint_file(&kept, &note(1)).unwrap();
        keep_checkpoint_file(&kept, &note(2)).unwrap();
        assert_eq!(std::fs::read_to_string(&kept).unwrap(), note(2));
        let err = keep_checkpoint_file(&precious, &note(3)).unwrap_err();
        assert!(
            err.to_string().contains("is not a kept checkpoint"),
            "{err}"
        );

        let proof = dir.path().join("proof.json");
        write_json(serde_json::json!({"seq": 1}), Some(&proof)).unwrap();
        write_json(serde_json::json!({"seq": 2}), Some(&proof)).unwrap();
        assert!(
            std::fs::read_to_string(&proof)
                .unwrap()
                .contains("\"seq\": 2")
        );
        let err = write_json(serde_json::json!({"seq": 3}), Some(&precious)).unwrap_err();
        assert!(err.to_string().contains("is not a JSON file"), "{err}");

        assert_eq!(std::fs::read(&precious).unwrap(), b"\x00redb pages");
    }
}
