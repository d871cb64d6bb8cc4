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
//! to nothing. So does an intent whose outcome never comes while the service
//! runs (its caller timed out): past [`MAX_WAITING_INTENTS`], the oldest
//! waiting intent's claim is dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Intents whose keys may wait at once. Each holds a few hundred bytes; the
/// kernel's data-subject requests are a person's export or erasure, so this
/// is far above any real backlog.
pub(super) const MAX_WAITING_INTENTS: usize = 4096;

/// One subject's key, not yet stored, and the intents made with it.
struct Pending {
    key: [u8; 32],
    intents: BTreeSet<u64>,
}

/// Keys waiting for an outcome; owned by the log's writer.
#[derive(Default)]
pub(super) struct PendingLinks {
    by_subject: HashMap<String, Pending>,
    /// Each waiting intent's subject, oldest (lowest seq) first.
    by_intent: BTreeMap<u64, String>,
}

impl PendingLinks {
    /// The key held for `subject`, now also used by the intent `seq`.
    pub(super) fn join(&mut self, subject: &str, seq: u64) -> Option<[u8; 32]> {
        let pending = self.by_subject.get_mut(subject)?;
        pending.intents.insert(seq);
        let key = pending.key;
        self.by_intent.insert(seq, subject.to_owned());
        self.bound();
        Some(key)
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
        self.bound();
    }

    /// Drops the oldest waiting intents past [`MAX_WAITING_INTENTS`].
    fn bound(&mut self) {
        while self.by_intent.len() > MAX_WAITING_INTENTS {
            let Some((&oldest, _)) = self.by_intent.first_key_value() else {
                return;
            };
            self.settle(oldest, false);
        }
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

    /// Forgets every held key.
    pub(super) fn clear(&mut self) {
        self.by_subject.clear();
        self.by_intent.clear();
    }

    /// Keeps only the intents below seq `size`: after a failed commit the
    /// log is re-read, and intents of the failed batch were never written.
    pub(super) fn keep_intents_below(&mut self, size: u64) {
        let unwritten: Vec<u64> = self.by_intent.range(size..).map(|(s, _)| *s).collect();
        for seq in unwritten {
            self.settle(seq, false);
        }
    }

    /// Whether the intent `seq` waits with a held key.
    pub(super) fn waits(&self, seq: u64) -> bool {
        self.by_intent.contains_key(&seq)
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

    #[test]
    fn a_failed_batch_drops_only_its_own_intents() {
        let mut links = PendingLinks::default();
        links.hold("data-subject:a", [1; 32], 5);
        links.join("data-subject:a", 9);
        links.hold("data-subject:b", [2; 32], 10);
        links.keep_intents_below(9);
        assert_eq!(links.waiting(), 1);
        assert_eq!(
            links.join("data-subject:b", 11),
            None,
            "b was only in the batch"
        );
        assert_eq!(
            links.settle(5, true),
            Some(("data-subject:a".to_owned(), [1; 32]))
        );
    }

    #[test]
    fn intents_whose_outcome_never_comes_are_bounded() {
        let mut links = PendingLinks::default();
        for seq in 0..(MAX_WAITING_INTENTS as u64 + 10) {
            links.hold(&format!("data-subject:{seq}"), [0; 32], seq);
        }
        assert_eq!(links.waiting(), MAX_WAITING_INTENTS);
        assert_eq!(links.settle(0, true), None, "the oldest went first");
        assert!(links.settle(MAX_WAITING_INTENTS as u64 + 9, true).is_some());
        assert_eq!(links.by_subject.len(), MAX_WAITING_INTENTS - 1);
    }
}
