//! `sios ask`: one text through several brains, by a rule that depends only
//! on the input, the catalog and the policy.
//!
//! The pipeline, in order:
//! 1. **Screen**: every installed screening brain ([`SCREENS`]) reads the
//!    text. If `safety-screen`'s top label is not `safe` with probability at
//!    least [`BLOCK_AT`], the pipeline stops there and says why.
//! 2. **Recall** (only when the asker names memory namespaces): the
//!    `text-embedding` brain embeds the text and the memory service returns
//!    the nearest items of those namespaces, each read decided by the policy
//!    as the asker's own (a namespace the asker may not read is refused and
//!    noted; the pipeline goes on without it).
//! 3. **Route**: the `router` brain ranks the domain specialists.
//! 4. **Answer**: the specialists picked by [`pick`] — the best, plus any
//!    other scoring at least [`ALSO_AT`] and at least half the best, at most
//!    [`MAX_SPECIALISTS`] — each give their reading, in routing order.
//!
//! A text longer than [`sios_ipc::ask::MAX_TEXT_READ_BYTES`] goes to each
//! brain cut one character past that bound ([`text_sent`]): no brain reads
//! further, and the answer says how much of the text each one read.
//!
//! Every step is an ordinary invoke on the asker's behalf, so each is
//! decided by the policy and recorded in the audit log like any other; a
//! specialist that is not ready, disabled or refused by the policy is
//! skipped with a note and the next one in the ranking is tried. Ties in the
//! ranking break by brain name, so the same input always takes the same path.

use crate::appliance::{Appliance, Requester, outcome_of};
use sios_ipc::ask::{
    EMBEDDER, MAX_RECALL, PartlyRead, embedding_of, embedding_request, partly_read_note, text_sent,
};
use sios_ipc::audit::{ActionResult, DraftKind, RecordDraft};
use sios_ipc::memory::{Metadata, SearchRequest};
use sios_ipc::{AskAnswer, AskRequest, Finding, InferRequest, InvokeError, Tensor};

/// Screening brains, run in this order when installed.
pub const SCREENS: [&str; 2] = ["safety-screen", "pii-screen"];
/// `safety-screen` blocks when its top label is not `safe` with at least this probability.
pub const BLOCK_AT: f32 = 0.5;
/// A second or third specialist must score at least this…
pub const ALSO_AT: f32 = 0.25;
/// …and at least this fraction of the best score.
pub const ALSO_RELATIVE: f32 = 0.5;
/// Most specialists asked.
pub const MAX_SPECIALISTS: usize = 3;
/// The brain that ranks specialists.
pub const ROUTER: &str = "router";

impl Appliance {
    /// Runs the pipeline on `text` on behalf of `requester`.
    pub async fn ask(
        &self,
        requester: &Requester,
        request: &AskRequest,
    ) -> Result<AskAnswer, InvokeError> {
        // Every brain would still give a label for nothing at all (the
        // router always ranks someone first): an answer to an empty
        // question would look like one to a real one.
        if request.text.trim().is_empty() {
            return Err(InvokeError::BadRequest {
                reason: "the text to ask about is empty (or only blanks): there is nothing \
                         to screen, route or answer"
                    .into(),
            });
        }
        if !request.recall.is_empty() && !(1..=MAX_RECALL).contains(&request.recall_k) {
            return Err(InvokeError::BadRequest {
                reason: format!(
                    "recall asks for {} memory items; ask for 1 to {MAX_RECALL}",
                    request.recall_k
                ),
            });
        }
        let mut answer = AskAnswer {
            plan: Vec::new(),
            screening: Vec::new(),
            route: Vec::new(),
            answers: Vec::new(),
            refused: None,
            notes: Vec::new(),
            audit_seqs: Vec::new(),
            recalled: Vec::new(),
            partly_read: Vec::new(),
        };
        // The plan, recorded before anything runs: the screens installed, the
        // router, then the specialists it picks (recorded once picked).
        let screens: Vec<&str> = SCREENS.into_iter().filter(|s| self.has_brain(s)).collect();
        let mut intent = RecordDraft::new(
            requester.actor(),
            "ask",
            "appliance:pipeline",
            DraftKind::Intent,
        );
        let recall = if request.recall.is_empty() {
            String::new()
        } else {
            format!(
                " -> {EMBEDDER} -> memory recall ({} nearest in {})",
                request.recall_k,
                request.recall.join(", ")
            )
        };
        intent.detail = format!(
            "plan: {}{recall} -> {ROUTER} -> up to {MAX_SPECIALISTS} specialists in the router's order",
            if screens.is_empty() {
                "no screens".to_owned()
            } else {
                screens.join(" -> ")
            }
        );
        let intent_seq = self.record_one(intent.clone()).await?;
        answer.audit_seqs.push(intent_seq);
        let result = self
            .run_pipeline(requester, request, &screens, &mut answer)
            .await;
        // Said once for the whole answer: every text brain reads the same
        // bounded start of the text, and a reading of a long text that did
        // not say so would pass for a reading of all of it.
        answer
            .notes
            .extend(partly_read_note(&request.text, &answer.partly_read));
        let ended = match &result {
            Ok(()) if answer.refused.is_some() => {
                ActionResult::Error("refused by screening".into())
            }
            Ok(()) => ActionResult::Ok,
            Err(err) => ActionResult::Error(err.to_string()),
        };
        let outcome_seq = self
            .record_one(outcome_of(&intent, intent_seq, ended))
            .await?;
        answer.audit_seqs.push(outcome_seq);
        result.map(|()| answer)
    }

    async fn record_one(&self, draft: RecordDraft) -> Result<u64, InvokeError> {
        let receipts = self
            .record(vec![draft])
            .await
            .map_err(|reason| InvokeError::Unrecorded { reason })?;
        Ok(receipts.first().map_or(0, |r| r.seq))
    }

    async fn run_pipeline(
        &self,
        requester: &Requester,
        request: &AskRequest,
        screens: &[&str],
        answer: &mut AskAnswer,
    ) -> Result<(), InvokeError> {
        // Its start, when it is longer than any brain reads (`text_sent`).
        let text = text_sent(&request.text);
        for screen in SCREENS {
            if !screens.contains(&screen) {
                answer.notes.push(format!(
                    "screening brain `{screen}` is not installed; skipped"
                ));
                continue;
            }
            answer.plan.push(screen.to_owned());
            let finding = self.read(requester, screen, text, answer).await?;
            let blocks = screen == "safety-screen"
                && finding.label != "safe"
                && finding.confidence >= BLOCK_AT;
            if blocks {
                answer.refused = Some(format!(
                    "`{screen}` read the text as `{}` (confidence {:.2}); no specialist was asked",
                    finding.label, finding.confidence
                ));
            }
            answer.screening.push(finding);
            if answer.refused.is_some() {
                return Ok(());
            }
        }

        if !request.recall.is_empty() {
            self.recall(requester, request, answer).await;
        }

        answer.plan.push(ROUTER.to_owned());
        let ranking = self.read_all(requester, ROUTER, text, answer).await?;
        answer.route = ranking.iter().take(5).cloned().collect();
        let (wanted, order) = pick(&ranking);
        let mut route = RecordDraft::new(
            requester.actor(),
            "ask.route",
            "appliance:pipeline",
            DraftKind::Event,
        );
        route.detail = format!("asking {wanted} of, in order: {}", order.join(", "));
        answer.audit_seqs.push(self.record_one(route).await?);
        for specialist in order {
            if answer.answers.len() == wanted {
                break;
            }
            match self.read(requester, &specialist, text, answer).await {
                Ok(finding) => {
                    answer.plan.push(specialist);
                    answer.answers.push(finding);
                }
                Err(err) => answer
                    .notes
                    .push(format!("specialist `{specialist}` skipped: {err}")),
            }
        }
        if answer.answers.is_empty() {
            answer
                .notes
                .push("no specialist could answer; `sios brain list` shows their states".into());
        }
        Ok(())
    }

    /// The recall step: embeds the text, then searches the named namespaces
    /// as the asker. A failure here (embedder not ready, a namespace the
    /// policy refuses) becomes a note: memory enriches the answer, it is not
    /// needed for one.
    async fn recall(&self, requester: &Requester, request: &AskRequest, answer: &mut AskAnswer) {
        let embedded = match self
            .invoke_recorded(
                requester,
                EMBEDDER,
                embedding_request(text_sent(&request.text)),
            )
            .await
        {
            Ok((response, recorded)) => {
                answer.audit_seqs.extend(recorded);
                answer.partly_read.extend(PartlyRead::of(
                    EMBEDDER,
                    text_sent(&request.text),
                    &response,
                ));
                answer.plan.push(EMBEDDER.to_owned());
                embedding_of(&response)
            }
            Err(err) => Err(err.to_string()),
        };
        let query = match embedded {
            Ok(query) => query,
            Err(reason) => {
                answer.notes.push(format!(
                    "memory not consulted: no embedding of the text ({reason})"
                ));
                return;
            }
        };
        let search = SearchRequest {
            query,
            k: request.recall_k,
            namespaces: Some(request.recall.clone()),
            metadata: Metadata::default(),
            include_values: true,
        };
        match self.memory_search(requester, search).await {
            Ok(found) => answer.recalled = found.hits,
            Err(err) => answer.notes.push(format!("memory not consulted: {err}")),
        }
    }

    /// The brain's top reading of `text`.
    async fn read(
        &self,
        requester: &Requester,
        brain: &str,
        text: &str,
        answer: &mut AskAnswer,
    ) -> Result<Finding, InvokeError> {
        let ranked = self.read_all(requester, brain, text, answer).await?;
        let (label, confidence) = ranked.first().cloned().unwrap_or_default();
        Ok(Finding {
            brain: brain.to_owned(),
            label,
            confidence,
            top: ranked.into_iter().take(3).collect(),
        })
    }

    /// Every label of the brain's first labelled output, best first (ties
    /// by label). The invoke's audit records, and how much of the text the
    /// brain read if not all, go into `answer`.
    async fn read_all(
        &self,
        requester: &Requester,
        brain: &str,
        text: &str,
        answer: &mut AskAnswer,
    ) -> Result<Vec<(String, f32)>, InvokeError> {
        let request = InferRequest {
            id: None,
            inputs: vec![Tensor::from_strings("text", vec![1], &[text])],
        };
        let (response, recorded) = self.invoke_recorded(requester, brain, request).await?;
        answer.audit_seqs.extend(recorded);
        answer
            .partly_read
            .extend(PartlyRead::of(brain, text, &response));
        let labels = self.labels_of(brain);
        let bad = |reason: String| InvokeError::Brain {
            name: brain.to_owned(),
            source: sios_ipc::BrainError::Output {
                name: "probabilities".into(),
                reason,
            },
        };
        let (output, names) = labels
            .iter()
            .next()
            .ok_or_else(|| bad("its manifest names no [labels], so `ask` cannot read it".into()))?;
        let tensor = response
            .outputs
            .iter()
            .find(|t| &t.name == output)
            .ok_or_else(|| bad(format!("it did not return `{output}`")))?;
        let values = tensor
            .to_elements::<f32>()
            .map_err(|e| bad(e.to_string()))?;
        if values.len() != names.len() {
            return Err(bad(format!(
                "{} values for {} labels",
                values.len(),
                names.len()
            )));
        }
        Ok(rank(names.iter().cloned().zip(values).collect()))
    }
}

/// Sorts by probability, best first; equal probabilities by name, so the
/// order never depends on anything but the values.
pub fn rank(mut scores: Vec<(String, f32)>) -> Vec<(String, f32)> {
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    scores
}

/// The specialists to ask: how many answers are wanted, and the order to
/// try them in. Wanted: the best, plus every other that scores at least
/// [`ALSO_AT`] and [`ALSO_RELATIVE`] of the best (at most
/// [`MAX_SPECIALISTS`]). The order is the ranking, so one that cannot answer
/// is replaced by the next in line.
pub fn pick(ranking: &[(String, f32)]) -> (usize, Vec<String>) {
    let Some((_, best)) = ranking.first() else {
        return (0, Vec::new());
    };
    let strong = ranking
        .iter()
        .enumerate()
        .filter(|(i, (_, p))| *i == 0 || (*p >= ALSO_AT && *p >= best * ALSO_RELATIVE))
        .count();
    let order = ranking.iter().map(|(name, _)| name.clone()).collect();
    (strong.min(MAX_SPECIALISTS), order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(items: &[(&str, f32)]) -> Vec<(String, f32)> {
        items.iter().map(|(n, p)| (n.to_string(), *p)).collect()
    }

    #[test]
    fn ranking_breaks_ties_by_name() {
        let ranked = rank(scores(&[("b", 0.3), ("a", 0.3), ("c", 0.4)]));
        assert_eq!(ranked, scores(&[("c", 0.4), ("a", 0.3), ("b", 0.3)]));
    }

    #[test]
    fn picks_the_best_and_close_seconds_in_ranking_order() {
        let ranking = rank(scores(&[
            ("legal", 0.5),
            ("finance", 0.3),
            ("hr", 0.1),
            ("tax", 0.1),
        ]));
        assert_eq!(
            pick(&ranking),
            (
                2,
                vec!["legal".into(), "finance".into(), "hr".into(), "tax".into()]
            )
        );
        let lone = rank(scores(&[("legal", 0.9), ("finance", 0.05), ("hr", 0.05)]));
        assert_eq!(pick(&lone).0, 1);
        let flat = rank(scores(&[
            ("a", 0.26),
            ("b", 0.26),
            ("c", 0.26),
            ("d", 0.22),
        ]));
        assert_eq!(pick(&flat).0, MAX_SPECIALISTS);
        assert_eq!(pick(&[]), (0, Vec::new()));
    }
}
