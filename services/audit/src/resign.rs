//! Rebuilding a bundle around edited records, signed with other keys.
//!
//! This is what somebody who holds (or has replaced) the signing key could
//! forge: every record edited at will, the hash chain, the Merkle tree and
//! every checkpoint recomputed and re-signed, so that `sios audit verify`
//! accepts the result against the forger's public key. It exists for tests
//! and drills: it shows what signatures alone cannot catch and what the
//! other checks (`sios audit replay` re-deciding every recorded decision,
//! comparing the trusted key) still do. It never touches a live log.
//!
//! The `i`-th key the log introduces (record 0's `log.init`, then each
//! `key.rotate`) is replaced by the `i`-th key given; every checkpoint is
//! signed by each replacement key introduced at or before its tree size,
//! which always includes the key(s) OAR.md §6.3 requires (verifiers ignore
//! signatures by other keys, as C2SP signed notes require).

use crate::bundle::{BundleError, BundleReader, BundleWriter, Item};
use crate::checkpoint::{Checkpoint, NoteError, open_note};
use crate::keys::SecretKey;
use crate::merkle::{Frontier, Hash};
use crate::record::{Record, RecordError};
use std::io::{Read, Write};

/// What a re-signed bundle holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResignSummary {
    pub records: u64,
    pub checkpoints: u64,
    /// Records `edit` changed.
    pub edited: Vec<u64>,
    pub root: Hash,
}

/// Why a bundle could not be rebuilt.
#[derive(Debug, thiserror::Error)]
pub enum ResignError {
    #[error("reading the bundle: {0}")]
    Bundle(#[from] BundleError),
    #[error("writing the bundle: {0}")]
    Io(#[from] std::io::Error),
    #[error("record {seq} does not decode: {source}")]
    BadRecord {
        seq: u64,
        #[source]
        source: RecordError,
    },
    #[error("the edited record {seq} is no longer a valid record: {source}")]
    BadEdit {
        seq: u64,
        #[source]
        source: RecordError,
    },
    #[error("a checkpoint in the bundle is malformed: {0}")]
    BadCheckpoint(#[from] NoteError),
    #[error(
        "the bundle introduces more keys than the {given} given; pass one replacement key per key of the log"
    )]
    NotEnoughKeys { given: usize },
    #[error(
        "replacement key {index} is named `{name}`, but the log's origin is `{origin}`: name every key after the origin \
         (SecretKey::from_seed(origin, …))"
    )]
    WrongKeyName {
        index: usize,
        name: String,
        origin: String,
    },
}

/// Copies the bundle from `input` to `output`, passing every record through
/// `edit` and replacing the log's keys by `keys` (see the module docs).
pub fn resign<R: Read, W: Write>(
    input: R,
    output: W,
    keys: &[SecretKey],
    mut edit: impl FnMut(&mut Record),
) -> Result<ResignSummary, ResignError> {
    let mut reader = BundleReader::new(input)?;
    let mut writer = BundleWriter::new(output)?;
    let mut listed = 0usize;
    // Replacement keys introduced so far, by the records read so far.
    let mut introduced = 0usize;
    let mut origin: Option<String> = None;
    let mut frontier = Frontier::new();
    let mut prev: Hash = [0; 32];
    let mut checkpoints = 0u64;
    let mut edited = Vec::new();
    let key = |index: usize| {
        keys.get(index)
            .ok_or(ResignError::NotEnoughKeys { given: keys.len() })
    };
    while let Some(item) = reader.next_item()? {
        match item {
            Item::Key(_) => {
                writer.key(&key(listed)?.public().to_vkey())?;
                listed += 1;
            }
            Item::Policy(text) => writer.policy(&text)?,
            Item::Record(bytes) => {
                let seq = frontier.size();
                let mut record = Record::decode(&bytes)
                    .map_err(|source| ResignError::BadRecord { seq, source })?;
                let original = record.clone();
                edit(&mut record);
                if record != original {
                    edited.push(seq);
                }
                if seq == 0 {
                    origin = Some(record.resource.clone());
                }
                if record.public_key.is_some() {
                    let replacement = key(introduced)?;
                    let origin = origin.clone().unwrap_or_default();
                    if replacement.public().name() != origin {
                        return Err(ResignError::WrongKeyName {
                            index: introduced,
                            name: replacement.public().name().to_owned(),
                            origin,
                        });
                    }
                    record.public_key = Some(replacement.public().bytes().to_vec());
                    introduced += 1;
                }
                record.prev = prev;
                let bytes = record.encode();
                // What a verifier will read back must be a valid record.
                Record::decode(&bytes).map_err(|source| ResignError::BadEdit { seq, source })?;
                prev = Record::hash_of(&bytes);
                frontier.push(prev, |_, _, _| {});
                writer.record(&bytes)?;
            }
            Item::Checkpoint(note) => {
                let (body, _) = open_note(&note)?;
                let old = Checkpoint::parse_body(body)?;
                let checkpoint = Checkpoint {
                    origin: old.origin,
                    size: old.size,
                    root: frontier.root(),
                };
                let signers: Vec<&SecretKey> = keys.iter().take(introduced).collect();
                writer.checkpoint(&checkpoint.sign(&signers))?;
                checkpoints += 1;
            }
            Item::End { .. } => break,
        }
    }
    writer.finish()?.flush()?;
    Ok(ResignSummary {
        records: frontier.size(),
        checkpoints,
        edited,
        root: frontier.root(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::write_to;
    use crate::keys::PublicKey;
    use crate::store::AuditLog;
    use crate::verify::verify_reader;
    use sios_ipc::audit::{DraftKind, RecordDraft};

    fn event(n: u32) -> RecordDraft {
        RecordDraft::new("uid:0", "test", format!("thing:{n}"), DraftKind::Event)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rebuilt_log_verifies_against_the_replacement_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(dir.path()).unwrap();
        log.record((0..5).map(event).collect()).await.unwrap();
        log.rotate_key("operator:uid:0".into()).await.unwrap();
        log.record((5..9).map(event).collect()).await.unwrap();
        let mut original = Vec::new();
        write_to(&log, &mut original).await.unwrap();
        let trusted = PublicKey::parse_vkey(&log.public_keys().unwrap()[0].vkey).unwrap();
        let origin = trusted.name().to_owned();
        log.close();
        verify_reader(&original[..], &trusted).unwrap();

        // Two keys for a log that rotated once; record 3 rewritten.
        let keys = [
            SecretKey::from_seed(&origin, [1; 32]).unwrap(),
            SecretKey::from_seed(&origin, [2; 32]).unwrap(),
        ];
        let mut forged = Vec::new();
        let summary = resign(&original[..], &mut forged, &keys, |r| {
            if r.seq == 3 {
                r.detail = "forged".into();
            }
        })
        .unwrap();
        assert_eq!(summary.edited, [3]);
        let report = verify_reader(&forged[..], keys[0].public()).unwrap();
        assert_eq!(report.records, summary.records);
        assert_eq!(
            report.keys.len(),
            2,
            "the rotation is followed to the second key"
        );
        // The operator's key no longer verifies it.
        assert!(verify_reader(&forged[..], &trusted).is_err());

        // One key for a log that holds two: refused, not half re-signed.
        let short = resign(&original[..], &mut Vec::new(), &keys[..1], |_| {});
        assert!(
            matches!(short, Err(ResignError::NotEnoughKeys { given: 1 })),
            "{short:?}"
        );
        // A key not named after the log's origin: refused.
        let misnamed = [
            SecretKey::from_seed("sios/audit/other", [3; 32]).unwrap(),
            SecretKey::from_seed("sios/audit/other", [4; 32]).unwrap(),
        ];
        let wrong = resign(&original[..], &mut Vec::new(), &misnamed, |_| {});
        assert!(
            matches!(wrong, Err(ResignError::WrongKeyName { .. })),
            "{wrong:?}"
        );
    }
}
