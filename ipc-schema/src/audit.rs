//! The audit service's contract: what the kernel sends `sios-audit` and what
//! it promises back.
//!
//! The records themselves, their canonical bytes, the Merkle tree and the
//! signed checkpoints are defined in `services/audit/OAR.md` (the Open Audit
//! Record). This module only carries them across the socket: a record travels
//! as its canonical CBOR bytes, so that whoever receives it can hash and verify
//! exactly what was logged.
//!
//! # When is a write acknowledged?
//! [`Audit::record`] answers a caller whose drafts include an *intent* only
//! once (1) the batch holding them is committed to `audit.redb` with
//! `redb::Durability::Immediate` (on disk when the commit returns) and (2) a
//! checkpoint covering them is signed with the operator's ML-DSA-65 key. A
//! caller whose drafts are only outcomes or events is answered after (1):
//! the checkpoint covering them is signed right after and, signing being
//! deterministic, is re-created byte for byte if the process dies before
//! storing it.

use crate::latency::Histogram;
use crate::services::ServiceInfo;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::fmt;

/// Most drafts one [`Audit::record`] call (or one call of
/// [`Audit::record_each`]) may carry.
pub const MAX_DRAFTS_PER_CALL: usize = 4096;
/// Most calls one [`Audit::record_each`] request may carry.
pub const MAX_CALLS_PER_REQUEST: usize = 1024;

/// A SHA-256 value (32 bytes). Printed as lower-case hex.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Parses 64 hex digits (either case).
    pub fn from_hex(text: &str) -> Option<Digest> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks(2).enumerate() {
            let digit = |c: u8| (c as char).to_digit(16);
            out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Digest(out))
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.to_hex())
    }
}

/// What the policy decided.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    Allow,
    Deny,
}

/// The policy decision an intent was made under.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub effect: Effect,
    /// SHA-256 of the active policy set's text (the text stored by the
    /// policy-activation record that carried it).
    pub policy_hash: Digest,
    /// Ids of the policies that decided (any order; the record sorts them).
    pub policy_ids: Vec<String>,
}

/// The brain an action ran on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BrainRef {
    /// The brain's name, e.g. `text-embedding`.
    pub id: String,
    /// SHA-256 of its model file.
    pub model_sha256: Digest,
}

/// How an action ended.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ActionResult {
    Ok,
    /// Failed; a short operator-readable reason (never customer content).
    Error(String),
    /// The process doing the work died before answering.
    ProcessDied,
    /// Refused by the policy; the action never ran.
    Denied,
}

/// Whether a draft announces an action, reports how one ended, or states a fact.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DraftKind {
    /// Written (durable and signed) before the action runs.
    Intent,
    /// Written after the action; names the intent's sequence number. Its actor,
    /// action and resource must equal the intent's.
    Outcome {
        intent_seq: u64,
        result: ActionResult,
    },
    /// A fact with no before/after, e.g. `process.exited`.
    Event,
}

/// One record as the kernel knows it. The audit service adds the sequence
/// number, the time, the predecessor hash and the keyed hashes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecordDraft {
    /// Who acted: `uid:1000`, `brain:text-embedding`, `kernel`, `operator:uid:0`.
    pub actor: String,
    /// What: `invoke`, `brain.call`, `memory.read`, `memory.write`, `memory.erase`,
    /// `memory.export`, `policy.activate`, `process.restart`, …
    pub action: String,
    /// On what: `brain:text-embedding`, `memory:uid:1000/notes`, `process:audit`, …
    pub resource: String,
    pub kind: DraftKind,
    pub decision: Option<Decision>,
    pub brain: Option<BrainRef>,
    /// The data subject whose content the digests are of (e.g. `uid:1000`).
    /// Required when `input_digests` or `output_digests` is non-empty.
    pub subject: Option<String>,
    /// SHA-256 of each input. Stored only as HMAC-SHA256 under the subject's
    /// linking key, never bare.
    pub input_digests: Vec<Digest>,
    /// SHA-256 of each output, likewise.
    pub output_digests: Vec<Digest>,
    /// For `policy.activate`: the policy text, stored content-addressed; the
    /// record carries its SHA-256.
    pub policy_text: Option<String>,
    /// A short operator-readable detail (never customer content); may be empty.
    pub detail: String,
    /// For an intent with a `subject` that may name nobody the appliance
    /// holds (a person a data-subject request asks about): if the subject
    /// has no linking key yet, the one made for this record is kept only
    /// once an outcome of this intent reports `ok`. Until then the key is
    /// held in memory only; it is dropped, never written, if the outcome
    /// reports anything else, if the subject's key is erased meanwhile, or
    /// if the service restarts. Asking about someone who is not held then
    /// leaves no key under their name (OAR.md §3.4).
    #[serde(default)]
    pub link_kept_on_success: bool,
}

impl RecordDraft {
    /// A draft with only the three names and the kind set.
    pub fn new(
        actor: impl Into<String>,
        action: impl Into<String>,
        resource: impl Into<String>,
        kind: DraftKind,
    ) -> RecordDraft {
        RecordDraft {
            actor: actor.into(),
            action: action.into(),
            resource: resource.into(),
            kind,
            decision: None,
            brain: None,
            subject: None,
            input_digests: Vec::new(),
            output_digests: Vec::new(),
            policy_text: None,
            detail: String::new(),
            link_kept_on_success: false,
        }
    }
}

/// Longest actor, action, resource, subject, brain id or policy id of a
/// record, in bytes (OAR.md §3.3).
pub const MAX_NAME_BYTES: usize = 512;
/// Longest detail or error message of a record, in bytes.
pub const MAX_DETAIL_BYTES: usize = 4096;

impl RecordDraft {
    /// Makes the draft's free-text fields fit the record's limits.
    ///
    /// Several of them carry words a client or a brain chose: the brain name
    /// of a `restart`, the namespaces of a search, a brain's error message.
    /// Were they passed on as they are, a long one would make the audit
    /// service refuse the draft, and the action could not be recorded at all
    /// (its denial neither). So a field over its limit keeps its first bytes
    /// and ends in `… [N bytes, sha256:HEX]`: still readable, and naming the
    /// whole text without holding it. The same input always fits the same way,
    /// so an intent and its outcome keep equal names.
    pub fn fit_to_limits(&mut self) {
        for name in [&mut self.actor, &mut self.action, &mut self.resource] {
            fit(name, MAX_NAME_BYTES);
        }
        if let Some(subject) = &mut self.subject {
            fit(subject, MAX_NAME_BYTES);
        }
        fit(&mut self.detail, MAX_DETAIL_BYTES);
        if let DraftKind::Outcome {
            result: ActionResult::Error(reason),
            ..
        } = &mut self.kind
        {
            if reason.is_empty() {
                // The record format needs a reason; an empty one says nothing.
                reason.push_str("failed (no reason given)");
            }
            fit(reason, MAX_DETAIL_BYTES);
        }
    }
}

/// Shortens `text` to at most `limit` bytes as [`RecordDraft::fit_to_limits`]
/// describes; leaves a text that fits untouched.
fn fit(text: &mut String, limit: usize) {
    if text.len() <= limit {
        return;
    }
    let digest = Digest(Sha256::digest(text.as_bytes()).into());
    let tail = format!("… [{} bytes, sha256:{}]", text.len(), digest.to_hex());
    let mut keep = limit.saturating_sub(tail.len());
    while !text.is_char_boundary(keep) {
        keep -= 1;
    }
    text.truncate(keep);
    text.push_str(&tail);
}

/// What the audit service promises for one appended record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receipt {
    pub seq: u64,
    /// SHA-256(0x00 || canonical record bytes): its Merkle leaf hash.
    pub record_hash: Digest,
    /// The tree size of the signed checkpoint that covers this record, when
    /// one was signed before the reply: always for a call with an intent.
    /// `None` for a call of only outcomes or events, which is answered once
    /// durable; a checkpoint covering it follows within 20 ms or with the
    /// next intent, whichever comes first.
    pub checkpoint_size: Option<u64>,
}

/// A signed checkpoint: a C2SP signed note whose body is a tlog-checkpoint.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub size: u64,
    pub root: Digest,
    /// The whole note text, signature lines included.
    pub note: String,
}

/// A page of records, in sequence order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RecordPage {
    /// Canonical CBOR bytes of each record, from `from_seq` on.
    pub records: Vec<serde_bytes::ByteBuf>,
    /// The number of records in the log when the page was read.
    pub tree_size: u64,
}

/// A page of stored checkpoints, by increasing size.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CheckpointPage {
    pub checkpoints: Vec<SignedCheckpoint>,
}

/// RFC 9162 §2.1.3 inclusion proof of record `seq` in the tree of `tree_size`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InclusionProof {
    pub seq: u64,
    pub tree_size: u64,
    pub leaf_hash: Digest,
    pub path: Vec<Digest>,
}

/// RFC 9162 §2.1.4 consistency proof between two tree sizes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProof {
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<Digest>,
}

/// One of the log's signing keys, oldest first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PublicKeyInfo {
    /// The record that introduced the key (0: the log's first record).
    pub introduced_at_seq: u64,
    /// The verifier key line: `<name>+<key id hex>+<base64(0xff || public key)>`.
    pub vkey: String,
}

/// What a key rotation did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct RotationReport {
    /// The `key.rotate` record.
    pub seq: u64,
    pub old_key_id: String,
    pub new_key_id: String,
    /// The hand-over checkpoint (size `seq + 1`), signed by both keys.
    pub checkpoint: SignedCheckpoint,
}

/// Why the audit service refused or failed a request.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum AuditError {
    #[error("the audit log could not be written: {0}")]
    Storage(String),
    #[error("draft {index} was refused: {reason}")]
    InvalidDraft { index: usize, reason: String },
    #[error(
        "no record {seq}: the log holds {size} records, seq 0 to {}; `sios audit tail` shows the latest",
        .size.saturating_sub(1)
    )]
    NoSuchRecord { seq: u64, size: u64 },
    #[error(
        "tree size {requested} is not available: the log holds {size} records; ask for a size between 1 and {size}"
    )]
    BadTreeSize { requested: u64, size: u64 },
    #[error("no stored policy text has SHA-256 {0}")]
    NoSuchPolicy(Digest),
    #[error("the signing key could not be used: {0}")]
    Key(String),
    #[error("request too large: {0}")]
    TooLarge(String),
    #[error("the audit service is unavailable: {0}")]
    Unavailable(String),
}

/// What [`Audit::append`] promised (legacy; see [`Audit::record`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AppendReceipt {
    /// Sequence number of the first appended event.
    pub first_seq: u64,
    /// Number of events appended, all durable on disk.
    pub count: u64,
}

/// One lifecycle event, as the kernel reported it before the Open Audit
/// Record (legacy; use [`RecordDraft`] with [`DraftKind::Event`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct AuditEvent {
    /// Milliseconds since the Unix epoch, from the kernel's clock (the record
    /// carries the audit service's own time instead).
    pub time_unix_ms: u64,
    pub actor: String,
    pub action: String,
    pub resource: String,
    pub detail: String,
}

/// Where the audit service's `record` calls spent their time since it
/// started ([`Audit::record_timings`]). A measurement for operators and
/// benchmarks, not part of the log: take one before and one after a run and
/// subtract ([`crate::latency::Histogram::since`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct RecordTimings {
    /// Calls and batches holding an intent: answered once signed.
    pub intents: StageTimings,
    /// Calls and batches of outcomes and events only: answered once durable.
    pub durable_only: StageTimings,
}

/// The stages of a `record` call inside the audit service, in order.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct StageTimings {
    /// Per call: from its arrival in the writer's queue until its batch began.
    pub queued: Histogram,
    /// Per batch: from its start until its commit began (validating,
    /// building, hashing and inserting the records; handing the new tree
    /// head to the signer).
    pub prepared: Histogram,
    /// Per batch: the durable redb commit.
    pub committed: Histogram,
    /// Per call: from its batch's commit until it was answered; for a call
    /// with an intent this includes waiting for its signed checkpoint.
    pub answered: Histogram,
}

impl RecordTimings {
    /// What was recorded after `earlier` (see [`Histogram::since`]).
    pub fn since(&self, earlier: &RecordTimings) -> RecordTimings {
        RecordTimings {
            intents: self.intents.since(&earlier.intents),
            durable_only: self.durable_only.since(&earlier.durable_only),
        }
    }
}

impl StageTimings {
    /// What was recorded after `earlier` (see [`Histogram::since`]).
    pub fn since(&self, earlier: &StageTimings) -> StageTimings {
        StageTimings {
            queued: self.queued.since(&earlier.queued),
            prepared: self.prepared.since(&earlier.prepared),
            committed: self.committed.since(&earlier.committed),
            answered: self.answered.since(&earlier.answered),
        }
    }

    /// Each stage with its name, in order.
    pub fn stages(&self) -> [(&'static str, &Histogram); 4] {
        [
            ("queued", &self.queued),
            ("prepared", &self.prepared),
            ("committed", &self.committed),
            ("answered", &self.answered),
        ]
    }
}

/// The audit service; the kernel is its only client.
#[tarpc::service]
pub trait Audit {
    async fn ready() -> ServiceInfo;
    /// Appends records, sharing one redb commit and one signed checkpoint with
    /// every concurrent caller. See the module doc for when it answers.
    /// All drafts of one call get consecutive sequence numbers; a call with an
    /// invalid draft appends nothing.
    async fn record(drafts: Vec<RecordDraft>) -> Result<Vec<Receipt>, AuditError>;
    /// Legacy: appends each event as a `kind = event` record. Durable on return.
    async fn append(events: Vec<AuditEvent>) -> Result<AppendReceipt, AuditError>;
    /// The last `n` records (at most one frame's worth), oldest first.
    async fn tail(n: u64) -> Result<RecordPage, AuditError>;
    /// Up to `max` records from `from_seq` on (fewer if a frame would overflow).
    async fn read(from_seq: u64, max: u64) -> Result<RecordPage, AuditError>;
    /// The latest signed checkpoint.
    async fn checkpoint() -> Result<SignedCheckpoint, AuditError>;
    /// Stored checkpoints with size > `after_size`, up to `max`.
    async fn checkpoints(after_size: u64, max: u64) -> Result<CheckpointPage, AuditError>;
    /// Inclusion proof of `seq` in the tree of `tree_size` (`None`: the latest checkpoint's).
    async fn prove_inclusion(
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, AuditError>;
    /// Consistency proof between two tree sizes, `0 < old <= new <= size`.
    async fn prove_consistency(
        old_size: u64,
        new_size: u64,
    ) -> Result<ConsistencyProof, AuditError>;
    /// Every signing key the log has had, oldest first; the last signs now.
    async fn public_keys() -> Result<Vec<PublicKeyInfo>, AuditError>;
    /// Replaces the signing key; recorded as a `key.rotate` record by `requested_by`.
    async fn rotate_key(requested_by: String) -> Result<RotationReport, AuditError>;
    /// Forgets the subject's linking key for good: the log's keyed hashes for
    /// that subject can no longer be linked to any content. Returns whether
    /// the subject had a key. Durable (and the file compacted) on return.
    async fn erase_subject_key(subject: String) -> Result<bool, AuditError>;
    /// A stored policy text by its SHA-256.
    async fn policy_text(hash: Digest) -> Result<String, AuditError>;
    /// Several independent [`Audit::record`] calls in one request, as a busy
    /// kernel sends them (see [`crate::recorder`]). Each call is judged,
    /// committed and answered as if it had come alone (an invalid draft
    /// refuses only its own call; a call with an intent is answered once
    /// signed); the reply holds their results in order, once all are
    /// answered. The outer error refuses the whole request (too many calls).
    /// Last in the trait so that the methods before it keep their numbers
    /// on the wire.
    async fn record_each(
        calls: Vec<Vec<RecordDraft>>,
    ) -> Result<Vec<Result<Vec<Receipt>, AuditError>>, AuditError>;
    /// Where `record` calls spent their time since the service started.
    /// After `record_each` so that every earlier method keeps its number.
    async fn record_timings() -> Result<RecordTimings, AuditError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_record_names_the_last_seq_there_is() {
        let err = AuditError::NoSuchRecord {
            seq: 999,
            size: 212,
        };
        assert!(
            err.to_string().contains("212 records, seq 0 to 211"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_field_keeps_its_head_and_names_the_whole_by_hash() {
        // A multi-byte character sits across the cut, which must not split it.
        let long = format!("{}é{}", "a".repeat(400), "z".repeat(9000));
        let mut draft = RecordDraft::new(
            "uid:1000",
            "process_restart",
            format!("process:{long}"),
            DraftKind::Outcome {
                intent_seq: 7,
                result: ActionResult::Error(long.clone()),
            },
        );
        draft.detail = long.clone();
        let before = draft.clone();
        draft.fit_to_limits();
        let whole = Digest(Sha256::digest(format!("process:{long}").as_bytes()).into());
        assert!(
            draft.resource.len() <= MAX_NAME_BYTES,
            "{}",
            draft.resource.len()
        );
        assert!(draft.resource.starts_with("process:aaaa"));
        assert!(
            draft
                .resource
                .ends_with(&format!("… [9410 bytes, sha256:{}]", whole.to_hex())),
            "{}",
            draft.resource
        );
        assert!(draft.detail.len() <= MAX_DETAIL_BYTES);
        let DraftKind::Outcome {
            result: ActionResult::Error(reason),
            ..
        } = &draft.kind
        else {
            panic!("the kind is kept")
        };
        assert!(reason.len() <= MAX_DETAIL_BYTES && reason.contains("é"));
        // Names that fit are untouched, and fitting is deterministic.
        assert_eq!(draft.actor, before.actor);
        let mut again = before;
        again.fit_to_limits();
        assert_eq!(again, draft);
    }

    #[test]
    fn an_empty_error_gets_a_reason() {
        let mut draft = RecordDraft::new(
            "kernel",
            "invoke",
            "brain:x",
            DraftKind::Outcome {
                intent_seq: 1,
                result: ActionResult::Error(String::new()),
            },
        );
        draft.fit_to_limits();
        assert_eq!(
            draft.kind,
            DraftKind::Outcome {
                intent_seq: 1,
                result: ActionResult::Error("failed (no reason given)".into()),
            }
        );
    }

    #[test]
    fn digest_hex_round_trips() {
        let d = Digest([0xab; 32]);
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert_eq!(Digest::from_hex("zz"), None);
        assert_eq!(Digest::from_hex(&"g".repeat(64)), None);
    }
}
