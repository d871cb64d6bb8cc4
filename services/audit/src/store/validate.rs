//! The rules a `record` call must meet before any of it is written.

use super::{MAX_POLICY_TEXT, intent_tag};
use crate::merkle::Hash;
use crate::record;
use sios_ipc::{AuditError, DraftKind, RecordDraft};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Checks one call's drafts against the rules of OAR.md §3.3 and §4 that a
/// record must meet to keep the log verifiable. `base` is the first seq the
/// call would get. `holds_link(seq)`: the intent `seq` waits for an outcome
/// to keep its subject's linking key (see `pending_links.rs`).
pub(super) fn check_call(
    drafts: &[RecordDraft],
    base: u64,
    open: &BTreeMap<u64, Hash>,
    holds_link: &dyn Fn(u64) -> bool,
) -> Result<(), AuditError> {
    let mut opened: HashMap<u64, Hash> = HashMap::new();
    // Intents of this call that may hold a key until their outcome.
    let mut holding: HashSet<u64> = HashSet::new();
    let mut closed: HashSet<u64> = HashSet::new();
    for (index, d) in drafts.iter().enumerate() {
        let refuse = |reason: String| AuditError::InvalidDraft { index, reason };
        for (name, v) in [
            ("actor", &d.actor),
            ("action", &d.action),
            ("resource", &d.resource),
        ] {
            if v.is_empty() || v.len() > record::MAX_NAME {
                return Err(refuse(format!(
                    "{name} must be 1..{} bytes",
                    record::MAX_NAME
                )));
            }
        }
        if d.action == record::ACTION_LOG_INIT || d.action == record::ACTION_KEY_ROTATE {
            return Err(refuse(format!(
                "action `{}` is reserved for the audit service",
                d.action
            )));
        }
        if d.detail.len() > record::MAX_DETAIL {
            return Err(refuse(format!(
                "detail is longer than {} bytes",
                record::MAX_DETAIL
            )));
        }
        if d.input_digests.len() > record::MAX_LIST || d.output_digests.len() > record::MAX_LIST {
            return Err(refuse(format!("more than {} digests", record::MAX_LIST)));
        }
        if (!d.input_digests.is_empty() || !d.output_digests.is_empty()) && d.subject.is_none() {
            return Err(refuse(
                "input/output digests need a subject to key them".into(),
            ));
        }
        if let Some(s) = &d.subject
            && (s.is_empty() || s.len() > record::MAX_NAME)
        {
            return Err(refuse("subject must be 1..512 bytes".into()));
        }
        if d.link_kept_on_success && (d.kind != DraftKind::Intent || d.subject.is_none()) {
            return Err(refuse(
                "link_kept_on_success is for an intent with a subject: only its outcome can \
                 keep the key"
                    .into(),
            ));
        }
        if let Some(dec) = &d.decision
            && (dec.policy_ids.len() > record::MAX_LIST
                || dec
                    .policy_ids
                    .iter()
                    .any(|id| id.is_empty() || id.len() > record::MAX_NAME))
        {
            return Err(refuse(
                "policy ids must be 1..512 bytes, at most 1024 of them".into(),
            ));
        }
        if let Some(b) = &d.brain
            && (b.id.is_empty() || b.id.len() > record::MAX_NAME)
        {
            return Err(refuse("brain id must be 1..512 bytes".into()));
        }
        if let Some(t) = &d.policy_text
            && t.len() > MAX_POLICY_TEXT
        {
            return Err(refuse(format!(
                "policy text is longer than {MAX_POLICY_TEXT} bytes"
            )));
        }
        let seq = base + index as u64;
        match &d.kind {
            DraftKind::Intent => {
                opened.insert(seq, intent_tag(&d.actor, &d.action, &d.resource));
                if d.link_kept_on_success {
                    holding.insert(seq);
                }
            }
            DraftKind::Outcome { intent_seq, result } => {
                if let sios_ipc::ActionResult::Error(m) = result
                    && (m.is_empty() || m.len() > record::MAX_DETAIL)
                {
                    return Err(refuse("an error message must be 1..4096 bytes".into()));
                }
                let tag = if closed.contains(intent_seq) {
                    None
                } else if let Some(t) = opened.get(intent_seq) {
                    Some(*t)
                } else {
                    open.get(intent_seq).copied()
                };
                let Some(tag) = tag else {
                    return Err(refuse(format!(
                        "intent {intent_seq} is not open: no such intent, or it already has its outcome"
                    )));
                };
                if tag != intent_tag(&d.actor, &d.action, &d.resource) {
                    return Err(refuse(format!(
                        "an outcome must repeat its intent's actor, action and resource (intent {intent_seq} differs)"
                    )));
                }
                // Naming a subject would store a linking key whatever the
                // result, which the intent asked to keep only on success.
                if d.subject.is_some() && (holding.contains(intent_seq) || holds_link(*intent_seq))
                {
                    return Err(refuse(format!(
                        "intent {intent_seq} keeps its subject's linking key only on success, so its \
                         outcome must not name a subject"
                    )));
                }
                closed.insert(*intent_seq);
            }
            DraftKind::Event => {}
        }
    }
    Ok(())
}
