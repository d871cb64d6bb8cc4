//! Single proofs, checkable offline (OAR.md §4.3, §4.4, §7.2): an inclusion
//! proof of one record in a signed checkpoint, and a consistency proof
//! between two signed checkpoints. `sios audit prove` writes the JSON forms
//! defined here; `sios audit verify-proof` checks them.
//!
//! A proof is checked with the keys the auditor holds ([`CheckWith::Keys`]),
//! or with a verified export of the same log ([`CheckWith::Export`]), whose
//! key history tells which key signed the log's checkpoint of each size, so
//! that a proof made before a key rotation can be checked with the current
//! key alone (OAR.md §7.2).

pub use crate::merkle::{ProofError, verify_consistency, verify_inclusion};

use crate::checkpoint::{Checkpoint, NoteError, NoteSignature, open_note, verify_checkpoint};
use crate::hex;
use crate::keys::{self, PublicKey};
use crate::merkle::Hash;
use crate::record::{Record, RecordError};
use crate::verify::VerifyReport;
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
         OLD NEW` with NEW after the rotation), or give --bundle an export of the log, whose key \
         history says which key signed it"
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
         ({lines}), so key {trusted} cannot check it. Ask the appliance for a \
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
    /// With an export: the checkpoint lacks the line of the key the export
    /// has in force at its size, and carries another key of the log.
    #[error(
        "the checkpoint of size {size} is signed by key {signed_by} of log {origin}, not by the key \
         the export you gave has in force at that size ({in_force}), so it cannot be checked with \
         this export. If the checkpoint was made after the export's last key rotation, check it \
         with a newer export (`sios audit export`)"
    )]
    NotInForce {
        size: u64,
        origin: String,
        signed_by: String,
        in_force: String,
    },
    /// With an export: a validly signed checkpoint whose root is not the
    /// export's at its size. The key signed two different histories.
    #[error(
        "the checkpoint of size {size} has root {root}, but the export you gave, which verifies \
         with the same key, has root {export_root} at that size: the operator's key signed two \
         different histories"
    )]
    NotTheExportsTree {
        size: u64,
        root: String,
        export_root: String,
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
                | ProofFileError::NotInForce { .. }
        )
    }
}

/// What a proof's checkpoints are checked with (OAR.md §7.2).
#[derive(Clone, Copy, Debug)]
pub enum CheckWith<'k> {
    /// Public keys the auditor holds. A checkpoint must carry a line by one
    /// of them, and every line by one of them must verify.
    Keys(&'k [&'k PublicKey]),
    /// A verified export of the same log (its report, which carries the
    /// log's key history and the roots at the proof's sizes) and the key it
    /// was verified with. A checkpoint must carry valid lines by every key
    /// the log has in force at its size (OAR.md §6.3), and where the export
    /// reaches its size, have the export's root.
    Export {
        log: &'k VerifyReport,
        trusted: &'k PublicKey,
    },
}

impl<'k> CheckWith<'k> {
    /// The keys an inclusion proof's checkpoint, or a consistency proof's
    /// new one, of `size` is checked with.
    pub fn keys_for(&self, size: u64) -> Vec<&'k PublicKey> {
        match *self {
            CheckWith::Keys(keys) => keys.to_vec(),
            CheckWith::Export { log, .. } => keys::in_force(&log.key_history, size),
        }
    }

    /// The keys whose lines on a consistency proof's old checkpoint are
    /// checked, where it carries any: with an export, the trusted key too.
    fn keys_for_old(&self, size: u64) -> Vec<&'k PublicKey> {
        let mut keys = self.keys_for(size);
        if let CheckWith::Export { trusted, .. } = *self
            && !keys.contains(&trusted)
        {
            keys.push(trusted);
        }
        keys
    }

    /// A checkpoint the export also covers must have the export's root.
    fn agrees(&self, cp: &Checkpoint) -> Result<(), ProofFileError> {
        if let CheckWith::Export { log, .. } = *self
            && let Some(root) = log.roots.get(&cp.size)
            && *root != cp.root
        {
            return Err(ProofFileError::NotTheExportsTree {
                size: cp.size,
                root: hex(&cp.root),
                export_root: hex(root),
            });
        }
        Ok(())
    }
}

/// Hex digits, two a byte, either case; nothing else (no sign, no space),
/// and no panic on text that is not ASCII.
fn unhex(s: &str) -> Result<Vec<u8>, ProofFileError> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(ProofFileError::Format("odd-length hex".into()));
    }
    let digit = |c: u8| {
        (c as char)
            .to_digit(16)
            .ok_or_else(|| ProofFileError::Format("invalid hex".into()))
    };
    bytes
        .chunks(2)
        .map(|pair| Ok((digit(pair[0])? * 16 + digit(pair[1])?) as u8))
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

    /// Checks the checkpoint's signature by one of `keys`, the record's
    /// canonical form, and the audit path to the signed root.
    pub fn check(&self, keys: &[&PublicKey]) -> Result<(Record, Checkpoint), ProofFileError> {
        self.check_with(CheckWith::Keys(keys))
    }

    /// [`InclusionProofFile::check`], with the checkpoint checked as `with` says.
    pub fn check_with(&self, with: CheckWith) -> Result<(Record, Checkpoint), ProofFileError> {
        if self.format != INCLUSION_FORMAT {
            return Err(ProofFileError::Format(format!(
                "format is `{}`, expected `{INCLUSION_FORMAT}`",
                self.format
            )));
        }
        let cp = signed_as_required(&self.checkpoint, with)?;
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
        self.check_with(CheckWith::Keys(keys))
    }

    /// [`ConsistencyProofFile::check`], with the checkpoints checked as
    /// `with` says.
    pub fn check_with(&self, with: CheckWith) -> Result<ConsistencyChecked, ProofFileError> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(ProofFileError::Format(format!(
                "format is `{}`, expected `{CONSISTENCY_FORMAT}`",
                self.format
            )));
        }
        let new = signed_as_required(&self.new_checkpoint, with)?;
        // The old checkpoint's lines are checked only where a key checked
        // with made them; its body is what the proof then establishes.
        let (old, lines) = parse(&self.old_checkpoint)?;
        let old_signed_by = match signers(&old, &lines, &with.keys_for_old(old.size)) {
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
        with.agrees(&old)?;
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
    /// One of the keys checked with (the key given; with an export, also
    /// the key in force at its size); its signature was checked.
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

/// Parses a signed note into its checkpoint body and signature lines.
fn parse(note: &str) -> Result<(Checkpoint, Vec<NoteSignature>), ProofFileError> {
    let (body, lines) = open_note(note)?;
    Ok((Checkpoint::parse_body(body)?, lines))
}

/// Sorts a note's signature lines by who made them: `keys`, other keys of
/// the note's log, or none of its log.
fn signers<'k>(cp: &Checkpoint, lines: &[NoteSignature], keys: &[&'k PublicKey]) -> Signers<'k> {
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
        return Signers::Trusted(ours);
    }
    let of_the_log: Vec<String> = lines
        .iter()
        .filter(|l| l.name == cp.origin)
        .map(|l| hex(&l.key_id))
        .collect();
    if !of_the_log.is_empty() {
        return Signers::OtherKeysOfTheLog(of_the_log.join(" and "));
    }
    let others: Vec<String> = lines
        .iter()
        .map(|l| format!("{}+{}", l.name, hex(&l.key_id)))
        .collect();
    Signers::NoKeyOfTheLog(match others.len() {
        0 => "it carries no signature line".to_owned(),
        1 => format!("its only signature line is by {}", others[0]),
        _ => format!("its signature lines are by {}", others.join(", ")),
    })
}

/// Verifies an inclusion proof's checkpoint, or a consistency proof's new
/// one, as `with` requires: with keys, one of them has a line on it and
/// every line by one of them verifies; with an export, every key in force
/// at its size has a line that verifies (a rotation's hand-over checkpoint
/// needs two), and its root is the export's. Without a line by any of the
/// keys, says why they cannot check it: the note is of another log, or
/// signed by other keys of its log, or by no key of its log.
fn signed_as_required(note: &str, with: CheckWith) -> Result<Checkpoint, ProofFileError> {
    let (cp, lines) = parse(note)?;
    let keys = with.keys_for(cp.size);
    let ids = |joint: &str| {
        keys.iter()
            .map(|k| k.id_hex())
            .collect::<Vec<_>>()
            .join(joint)
    };
    match (
        signers(&cp, &lines, &keys),
        keys.iter().find(|k| k.name() != cp.origin),
    ) {
        (Signers::Trusted(ours), _) => {
            let required = match with {
                CheckWith::Keys(_) => &ours,
                CheckWith::Export { .. } => &keys,
            };
            verify_checkpoint(note, required)?;
            with.agrees(&cp)?;
            Ok(cp)
        }
        (_, Some(other)) => Err(ProofFileError::OtherLog {
            origin: cp.origin,
            key_log: other.name().to_owned(),
        }),
        (Signers::OtherKeysOfTheLog(signed_by), None) => Err(match with {
            CheckWith::Keys(_) => ProofFileError::OtherKey {
                size: cp.size,
                origin: cp.origin,
                signed_by,
                trusted: ids(" or "),
            },
            CheckWith::Export { .. } => ProofFileError::NotInForce {
                size: cp.size,
                origin: cp.origin,
                signed_by,
                in_force: ids(" and "),
            },
        }),
        (Signers::NoKeyOfTheLog(lines), None) => Err(ProofFileError::NoKeyOfTheLog {
            size: cp.size,
            origin: cp.origin,
            lines,
            trusted: ids(" or "),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_digits_only_and_never_panics() {
        assert_eq!(unhex("00aFff").unwrap(), vec![0x00, 0xaf, 0xff]);
        // A sign that `from_str_radix` would take, and text that is not
        // ASCII (slicing it by bytes would panic mid-character).
        for bad in ["+a", "aé0", "0 ", "zz"] {
            assert!(unhex(bad).is_err(), "{bad:?}");
        }
        assert!(unhex("abc").is_err());
    }
}
