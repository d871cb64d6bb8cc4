//! Single proofs, checkable offline (OAR.md §4.3, §4.4, §7.2): an inclusion
//! proof of one record in a signed checkpoint, and a consistency proof
//! between two signed checkpoints. `sios audit prove` writes the JSON forms
//! defined here; `sios audit verify-proof` checks them.

pub use crate::merkle::{ProofError, verify_consistency, verify_inclusion};

use crate::checkpoint::{Checkpoint, NoteError, open_note, verify_checkpoint};
use crate::hex;
use crate::keys::PublicKey;
use crate::merkle::Hash;
use crate::record::{Record, RecordError};
use serde::{Deserialize, Serialize};
use sios_ipc::{ConsistencyProof, InclusionProof};

pub const INCLUSION_FORMAT: &str = "sios-oar-inclusion-proof/1";
pub const CONSISTENCY_FORMAT: &str = "sios-oar-consistency-proof/1";

/// `sios audit prove` output: a record, its audit path and the checkpoint
/// the path leads to.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct InclusionProofFile {
    pub format: String,
    pub seq: u64,
    pub tree_size: u64,
    /// The record's canonical bytes, hex.
    pub record: String,
    /// The audit path, hex, bottom-up.
    pub path: Vec<String>,
    /// The signed checkpoint of `tree_size`.
    pub checkpoint: String,
}

/// `sios audit consistency` output.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyProofFile {
    pub format: String,
    pub old_size: u64,
    pub new_size: u64,
    pub path: Vec<String>,
    pub old_checkpoint: String,
    pub new_checkpoint: String,
}

/// Why a proof file does not check out.
#[derive(Debug, thiserror::Error)]
pub enum ProofFileError {
    #[error("not a proof file: {0}")]
    Format(String),
    #[error("the record in the proof is not a valid record: {0}")]
    Record(#[from] RecordError),
    #[error("the checkpoint: {0}")]
    Checkpoint(#[from] NoteError),
    /// Not evidence of tampering: the checkpoint was signed by another key
    /// of the log, before or after a key rotation (OAR.md §7.2).
    #[error(
        "the checkpoint of size {size} is signed by key {signed_by} of log {origin}, not by the key \
         you gave ({trusted}): it was made before or after a key rotation, so this key cannot check \
         it. Check the proof with the key that signed it, or make the proof against a checkpoint \
         the key you hold signed (`sios audit prove SEQ` uses the latest; `sios audit consistency \
         OLD NEW` with NEW after the rotation), or verify the whole export, which follows rotations"
    )]
    OtherKey {
        size: u64,
        origin: String,
        signed_by: String,
        trusted: String,
    },
    #[error("the proof is about the log {origin}, and the key you gave is for the log {key_log}")]
    OtherLog { origin: String, key_log: String },
    /// No line by any key of the log at all: nothing the trusted key could
    /// check, and not evidence either way (OAR.md §7.2).
    #[error(
        "the checkpoint of size {size} carries no signature by any key of log {origin} \
         ({lines}), so the key you gave ({trusted}) cannot check it. Ask the appliance for a \
         proof against a checkpoint it signs now (`sios audit prove SEQ`, `sios audit \
         consistency OLD NEW`), or verify the whole export"
    )]
    NoKeyOfTheLog {
        size: u64,
        origin: String,
        /// The signature lines it does carry, in words, e.g. "its only
        /// signature line is by someone/else+1a2b3c4d".
        lines: String,
        trusted: String,
    },
    #[error("the two checkpoints are of different logs: {old} and {new}")]
    DifferentLogs { old: String, new: String },
    #[error("the proof is for size {proof}, the checkpoint has size {checkpoint}")]
    SizeMismatch { proof: u64, checkpoint: u64 },
    #[error("the record is seq {record}, the proof is for seq {proof}")]
    SeqMismatch { record: u64, proof: u64 },
    #[error("the proof does not verify: {0}")]
    Proof(#[from] ProofError),
}

impl ProofFileError {
    /// The key given cannot check the proof (OAR.md §7.2): not a verdict on
    /// the proof, which may well be true; the remedy is another key or proof.
    pub fn not_checked(&self) -> bool {
        matches!(
            self,
            ProofFileError::OtherKey { .. }
                | ProofFileError::OtherLog { .. }
                | ProofFileError::NoKeyOfTheLog { .. }
        )
    }
}

fn unhex(s: &str) -> Result<Vec<u8>, ProofFileError> {
    if !s.len().is_multiple_of(2) {
        return Err(ProofFileError::Format("odd-length hex".into()));
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16)
                .map_err(|_| ProofFileError::Format("invalid hex".into()))
        })
        .collect()
}

fn unhex32(s: &str) -> Result<Hash, ProofFileError> {
    unhex(s)?
        .try_into()
        .map_err(|_| ProofFileError::Format("a hash is not 32 bytes".into()))
}

impl InclusionProofFile {
    pub fn new(record: &[u8], proof: &InclusionProof, checkpoint_note: &str) -> InclusionProofFile {
        InclusionProofFile {
            format: INCLUSION_FORMAT.into(),
            seq: proof.seq,
            tree_size: proof.tree_size,
            record: hex(record),
            path: proof.path.iter().map(|h| h.to_hex()).collect(),
            checkpoint: checkpoint_note.to_owned(),
        }
    }

    /// Checks the checkpoint's signature by `key` (any of `keys`), the
    /// record's canonical form, and the audit path to the signed root.
    pub fn check(&self, keys: &[&PublicKey]) -> Result<(Record, Checkpoint), ProofFileError> {
        if self.format != INCLUSION_FORMAT {
            return Err(ProofFileError::Format(format!(
                "format is `{}`, expected `{INCLUSION_FORMAT}`",
                self.format
            )));
        }
        let cp = signed_by_one_of(&self.checkpoint, keys)?;
        if cp.size != self.tree_size {
            return Err(ProofFileError::SizeMismatch {
                proof: self.tree_size,
                checkpoint: cp.size,
            });
        }
        let bytes = unhex(&self.record)?;
        let record = Record::decode(&bytes)?;
        if record.seq != self.seq {
            return Err(ProofFileError::SeqMismatch {
                record: record.seq,
                proof: self.seq,
            });
        }
        let path = self
            .path
            .iter()
            .map(|h| unhex32(h))
            .collect::<Result<Vec<_>, _>>()?;
        verify_inclusion(&Record::hash_of(&bytes), self.seq, cp.size, &path, &cp.root)?;
        Ok((record, cp))
    }
}

impl ConsistencyProofFile {
    pub fn new(proof: &ConsistencyProof, old_note: &str, new_note: &str) -> ConsistencyProofFile {
        ConsistencyProofFile {
            format: CONSISTENCY_FORMAT.into(),
            old_size: proof.old_size,
            new_size: proof.new_size,
            path: proof.path.iter().map(|h| h.to_hex()).collect(),
            old_checkpoint: old_note.to_owned(),
            new_checkpoint: new_note.to_owned(),
        }
    }

    /// Checks the new checkpoint's signature by one of `keys` and the proof
    /// between the two; the old checkpoint's signature too if one of `keys`
    /// signed it (OAR.md §7.2: a proof that passes proves the old body by the
    /// new one, so one made before a key rotation needs no earlier key).
    pub fn check(&self, keys: &[&PublicKey]) -> Result<ConsistencyChecked, ProofFileError> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(ProofFileError::Format(format!(
                "format is `{}`, expected `{CONSISTENCY_FORMAT}`",
                self.format
            )));
        }
        let new = signed_by_one_of(&self.new_checkpoint, keys)?;
        // The old checkpoint's lines are checked only where one of `keys`
        // made them; its body is what the proof then establishes.
        let (old, signers) = signers(&self.old_checkpoint, keys)?;
        let old_signed_by = match signers {
            Signers::Trusted(ours) => {
                verify_checkpoint(&self.old_checkpoint, &ours)?;
                OldSignedBy::TheKeyGiven
            }
            Signers::OtherKeysOfTheLog(ids) => OldSignedBy::EarlierKey(ids),
            Signers::NoKeyOfTheLog(lines) => OldSignedBy::NoKeyOfTheLog(lines),
        };
        for (cp, size) in [(&old, self.old_size), (&new, self.new_size)] {
            if cp.size != size {
                return Err(ProofFileError::SizeMismatch {
                    proof: size,
                    checkpoint: cp.size,
                });
            }
        }
        if old.origin != new.origin {
            return Err(ProofFileError::DifferentLogs {
                old: old.origin,
                new: new.origin,
            });
        }
        let path = self
            .path
            .iter()
            .map(|h| unhex32(h))
            .collect::<Result<Vec<_>, _>>()?;
        verify_consistency(old.size, new.size, &path, &old.root, &new.root)?;
        Ok(ConsistencyChecked {
            old,
            new,
            old_signed_by,
        })
    }
}

/// What a consistency proof that checks out established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyChecked {
    pub old: Checkpoint,
    pub new: Checkpoint,
    /// Who signed the old checkpoint. Unless one of the keys given did, its
    /// body is proven by the new checkpoint alone.
    pub old_signed_by: OldSignedBy,
}

/// Who signed the old checkpoint of a consistency proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldSignedBy {
    /// One of the keys given; its signature was checked.
    TheKeyGiven,
    /// Other keys of the log (their ids), e.g. the key before a rotation.
    EarlierKey(String),
    /// No key of the log: the signature lines it carries, in words.
    NoKeyOfTheLog(String),
}

/// Who signed a note, as far as the keys given can tell.
enum Signers<'k> {
    /// These of the keys given have a line on it (not yet verified).
    Trusted(Vec<&'k PublicKey>),
    /// Only other keys of the note's log: their ids.
    OtherKeysOfTheLog(String),
    /// No key of the note's log: its lines, in words.
    NoKeyOfTheLog(String),
}

/// Parses `note` and sorts its signature lines by who made them.
fn signers<'k>(
    note: &str,
    keys: &[&'k PublicKey],
) -> Result<(Checkpoint, Signers<'k>), ProofFileError> {
    let (body, lines) = open_note(note)?;
    let cp = Checkpoint::parse_body(body)?;
    let ours: Vec<&PublicKey> = keys
        .iter()
        .copied()
        .filter(|k| {
            lines
                .iter()
                .any(|l| l.name == k.name() && l.key_id == k.id())
        })
        .collect();
    if !ours.is_empty() {
        return Ok((cp, Signers::Trusted(ours)));
    }
    let of_the_log: Vec<String> = lines
        .iter()
        .filter(|l| l.name == cp.origin)
        .map(|l| hex(&l.key_id))
        .collect();
    if !of_the_log.is_empty() {
        return Ok((cp, Signers::OtherKeysOfTheLog(of_the_log.join(" and "))));
    }
    let others: Vec<String> = lines
        .iter()
        .map(|l| format!("{}+{}", l.name, hex(&l.key_id)))
        .collect();
    let said = match others.len() {
        0 => "it carries no signature line".to_owned(),
        1 => format!("its only signature line is by {}", others[0]),
        _ => format!("its signature lines are by {}", others.join(", ")),
    };
    Ok((cp, Signers::NoKeyOfTheLog(said)))
}

/// Verifies `note`: one of `keys` has a signature line on it, and every
/// line by one of `keys` verifies. Without such a line, says why the keys
/// cannot check it: the note is of another log, or signed by other keys of
/// its log, or by no key of its log.
fn signed_by_one_of(note: &str, keys: &[&PublicKey]) -> Result<Checkpoint, ProofFileError> {
    let (cp, signers) = signers(note, keys)?;
    let trusted = || {
        keys.iter()
            .map(|k| k.id_hex())
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match (signers, keys.iter().find(|k| k.name() != cp.origin)) {
        (Signers::Trusted(ours), _) => {
            verify_checkpoint(note, &ours)?;
            Ok(cp)
        }
        (_, Some(other)) => Err(ProofFileError::OtherLog {
            origin: cp.origin,
            key_log: other.name().to_owned(),
        }),
        (Signers::OtherKeysOfTheLog(signed_by), None) => Err(ProofFileError::OtherKey {
            size: cp.size,
            origin: cp.origin,
            signed_by,
            trusted: trusted(),
        }),
        (Signers::NoKeyOfTheLog(lines), None) => Err(ProofFileError::NoKeyOfTheLog {
            size: cp.size,
            origin: cp.origin,
            lines,
            trusted: trusted(),
        }),
    }
}
