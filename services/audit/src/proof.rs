//! Single proofs, checkable offline (OAR.md §4.3, §4.4, §7.2): an inclusion
//! proof of one record in a signed checkpoint, and a consistency proof
//! between two signed checkpoints. `sios audit prove` writes the JSON forms
//! defined here; `sios audit verify-proof` checks them.

pub use crate::merkle::{ProofError, verify_consistency, verify_inclusion};

use crate::checkpoint::{Checkpoint, NoteError, verify_checkpoint};
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
    #[error("the proof is for size {proof}, the checkpoint has size {checkpoint}")]
    SizeMismatch { proof: u64, checkpoint: u64 },
    #[error("the record is seq {record}, the proof is for seq {proof}")]
    SeqMismatch { record: u64, proof: u64 },
    #[error("the proof does not verify: {0}")]
    Proof(#[from] ProofError),
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
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
        let cp = verify_any(&self.checkpoint, keys)?;
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

    /// Checks both checkpoints' signatures and the proof between them.
    pub fn check(&self, keys: &[&PublicKey]) -> Result<(Checkpoint, Checkpoint), ProofFileError> {
        if self.format != CONSISTENCY_FORMAT {
            return Err(ProofFileError::Format(format!(
                "format is `{}`, expected `{CONSISTENCY_FORMAT}`",
                self.format
            )));
        }
        let old = verify_any(&self.old_checkpoint, keys)?;
        let new = verify_any(&self.new_checkpoint, keys)?;
        for (cp, size) in [(&old, self.old_size), (&new, self.new_size)] {
            if cp.size != size {
                return Err(ProofFileError::SizeMismatch {
                    proof: size,
                    checkpoint: cp.size,
                });
            }
        }
        if old.origin != new.origin {
            return Err(ProofFileError::Format(
                "the checkpoints are of different logs".into(),
            ));
        }
        let path = self
            .path
            .iter()
            .map(|h| unhex32(h))
            .collect::<Result<Vec<_>, _>>()?;
        verify_consistency(old.size, new.size, &path, &old.root, &new.root)?;
        Ok((old, new))
    }
}

/// Verifies `note` with the first of `keys` that signed it.
fn verify_any(note: &str, keys: &[&PublicKey]) -> Result<Checkpoint, NoteError> {
    let mut last = None;
    for key in keys {
        match verify_checkpoint(note, &[key]) {
            Ok(cp) => return Ok(cp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| NoteError::Malformed("no public key to check it with".into())))
}
