//! Linking keys made for intents that asked to keep them only on success
//! (`RecordDraft::link_kept_on_success`; OAR.md §3.4).
//!
//! A request about a person the customer's memory may not hold (an export or
//! erasure by data-subject id) must not leave a key stored under that
//! person's name when they turn out not to be held: the name is their id,
//! and a stored row (or its bytes in a freed page) would outlive the request.
//! Such an intent's key is therefore held here, in memory, and written to
//! `subjects` only in the commit of an outcome of one of its intents that
//! reports `ok`. Any other outcome, an erasure of the subject, or a restart
//! drops it unwritten; the records made with it keep a pseudonym that links
//! to nothing.

use std::collections::{BTreeSet, HashMap};

/// One subject's key, not yet stored, and the intents made with it.
struct Pending {
    key: [u8; 32],
    intents: BTreeSet<u64>,
}

/// Keys waiting for an outcome; owned by the log's writer.
#[derive(Default)]
pub(super) struct PendingLinks {
    by_subject: HashMap<String, Pending>,
    /// Each waiting intent's subject.
    by_intent: HashMap<u64, String>,
}

impl PendingLinks {
    /// The key held for `subject`, now also used by the intent `seq`.
    pub(super) fn join(&mut self, subject: &str, seq: u64) -> Option<[u8; 32]> {
        let pending = self.by_subject.get_mut(subject)?;
        pending.intents.insert(seq);
        self.by_intent.insert(seq, subject.to_owned());
        Some(pending.key)
    }

    /// Holds a fresh `key` for `subject`, made for the intent `seq`.
    pub(super) fn hold(&mut self, subject: &str, key: [u8; 32], seq: u64) {
        self.by_subject.insert(
            subject.to_owned(),
            Pending {
                key,
                intents: BTreeSet::from([seq]),
            },
        );
        self.by_intent.insert(seq, subject.to_owned());
    }

    /// The outcome of intent `intent_seq` is being recorded. With `ok`, the
    /// subject's key is returned to be stored with it (and every intent made
    /// with it is settled); otherwise the intent stops waiting, and the key
    /// is dropped once no intent waits for it.
    pub(super) fn settle(&mut self, intent_seq: u64, ok: bool) -> Option<(String, [u8; 32])> {
        let subject = self.by_intent.remove(&intent_seq)?;
        if ok {
            let key = self.take(&subject)?;
            return Some((subject, key));
        }
        if let Some(pending) = self.by_subject.get_mut(&subject) {
            pending.intents.remove(&intent_seq);
            if pending.intents.is_empty() {
                self.by_subject.remove(&subject);
            }
        }
        None
    }

    /// Removes `subject`'s key (to be stored now, or dropped by an erasure),
    /// settling every intent made with it.
    pub(super) fn take(&mut self, subject: &str) -> Option<[u8; 32]> {
        let pending = self.by_subject.remove(subject)?;
        for seq in &pending.intents {
            self.by_intent.remove(seq);
        }
        Some(pending.key)
    }

    /// Forgets every held key (after a failed commit, the writer's state is
    /// re-read from the file, where none of them is).
    pub(super) fn clear(&mut self) {
        self.by_subject.clear();
        self.by_intent.clear();
    }

    /// Intents waiting, for tests.
    #[cfg(test)]
    pub(super) fn waiting(&self) -> usize {
        self.by_intent.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_kept_by_the_first_success_and_dropped_by_the_last_failure() {
        let mut links = PendingLinks::default();
        links.hold("data-subject:p", [1; 32], 10);
        assert_eq!(links.join("data-subject:p", 12), Some([1; 32]));
        assert_eq!(links.join("data-subject:q", 13), None);
        // One failure: the other intent still waits.
        assert_eq!(links.settle(10, false), None);
        assert_eq!(links.waiting(), 1);
        // Its success keeps the key, and settles everything about it.
        assert_eq!(
            links.settle(12, true),
            Some(("data-subject:p".to_owned(), [1; 32]))
        );
        assert_eq!(links.waiting(), 0);
        assert_eq!(links.settle(12, true), None, "settled once");

        links.hold("data-subject:r", [2; 32], 20);
        assert_eq!(links.settle(20, false), None);
        assert_eq!(links.join("data-subject:r", 21), None, "dropped");

        links.hold("data-subject:s", [3; 32], 30);
        assert_eq!(links.take("data-subject:s"), Some([3; 32]));
        assert_eq!(links.settle(30, true), None, "taken by an erasure");
    }
}
