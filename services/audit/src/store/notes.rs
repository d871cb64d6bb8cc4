//! Signed checkpoint notes between signing and storing, and pages of them
//! for readers.

use super::{CHECKPOINTS, IDLE_FLUSH, signed, storage};
use crate::checkpoint::Checkpoint;
use redb::WriteTransaction;
use sios_ipc::{AuditError, SignedCheckpoint};
use std::time::Instant;

/// One page of [`AuditLog::checkpoints`] being filled.
pub(super) struct NotePage {
    pub(super) out: Vec<SignedCheckpoint>,
    pub(super) bytes: usize,
    pub(super) max: u64,
    pub(super) max_bytes: usize,
}

impl NotePage {
    /// Adds the note of tree `size` unless the page is full (then `false`).
    pub(super) fn take(&mut self, size: u64, note: &str) -> Result<bool, AuditError> {
        if self.out.len() as u64 >= self.max
            || (!self.out.is_empty() && self.bytes + note.len() > self.max_bytes)
        {
            return Ok(false);
        }
        self.bytes += note.len();
        let cp = crate::checkpoint::open_note(note)
            .ok()
            .and_then(|(body, _)| Checkpoint::parse_body(body).ok())
            .ok_or_else(|| storage(format!("stored checkpoint {size} is malformed")))?;
        self.out.push(signed(cp.size, cp.root, note.to_owned()));
        Ok(true)
    }

    /// The largest tree size on the page, or `after` if none.
    pub(super) fn covered(&self, after: u64) -> u64 {
        self.out.last().map_or(after, |c| c.size)
    }
}

/// Signed checkpoints are stored in batches of this many (or once the oldest
/// has waited [`IDLE_FLUSH`]), not one with every commit. Storing one
/// touches the `checkpoints` table, which adds pages to the commit that
/// carries it; at one client every outcome carried the note signed for the
/// intent before it, and took 35-65 µs longer for it (measured through the
/// service, `cargo bench -p sios-audit --bench audit`). A note not yet
/// stored is kept in memory and served like a stored one; a crash loses at
/// most these, every record they cover is durable, and the next start signs
/// the recovered tree again (OAR.md §10, "Acknowledgement").
pub const NOTES_PER_STORE: usize = 16;

/// Checkpoints signed but not yet stored, oldest first, each with when it
/// was signed. A note leaves only once a commit holding it is durable, so
/// every signed checkpoint is always either here or in the table (readers
/// look here first, see [`AuditLog::checkpoints`]).
#[derive(Default)]
pub(super) struct UnstoredNotes {
    notes: Vec<(u64, String, Instant)>,
    /// A commit that held them failed: the next one carries them.
    retry: bool,
}

impl UnstoredNotes {
    pub(super) fn push(&mut self, size: u64, note: String, now: Instant) {
        self.notes.push((size, note, now));
    }

    /// Copies of all of them, smallest tree first.
    pub(super) fn all(&self) -> Vec<(u64, String)> {
        let mut all: Vec<_> = self
            .notes
            .iter()
            .map(|(size, note, _)| (*size, note.clone()))
            .collect();
        all.sort_unstable_by_key(|n| n.0);
        all
    }

    /// Copies of all of them if a record commit should carry them now (see
    /// [`NOTES_PER_STORE`]), else none.
    pub(super) fn due(&self, now: Instant) -> Vec<(u64, String)> {
        let due = self.retry
            || self.notes.len() >= NOTES_PER_STORE
            || self
                .notes
                .first()
                .is_some_and(|n| now.saturating_duration_since(n.2) >= IDLE_FLUSH);
        if due { self.all() } else { Vec::new() }
    }

    /// A commit holding `notes` is durable: they are in the table now.
    /// Only those leave; any signed meanwhile stay, whatever their size.
    pub(super) fn stored(&mut self, notes: &[(u64, String)]) {
        if !notes.is_empty() {
            self.notes
                .retain(|n| !notes.iter().any(|(size, _)| *size == n.0));
            self.retry = false;
        }
    }

    /// A commit holding `notes` failed: they stay, and go with the next.
    pub(super) fn not_stored(&mut self, notes: &[(u64, String)]) {
        self.retry |= !notes.is_empty();
    }
}

/// Stores signed checkpoint notes, keyed by tree size, in `txn`.
pub(super) fn insert_notes(
    txn: &WriteTransaction,
    notes: &[(u64, String)],
) -> Result<(), AuditError> {
    let mut table = txn.open_table(CHECKPOINTS).map_err(storage)?;
    for (size, note) in notes {
        table.insert(*size, note.as_str()).map_err(storage)?;
    }
    Ok(())
}
