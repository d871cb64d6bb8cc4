//! The log end to end, in process: group commit, the write rules, recovery
//! on reopen, export and offline verification, tamper detection, key
//! rotation, subject-key erasure, proofs.
//!
//! Modules, one concern each:
//! - `group_commit`: 64 concurrent appenders, gapless, one commit and one signature per batch.
//! - `idle_signing`: records nobody waits for are still signed within `IDLE_SIGN`.
//! - `rules`: what the service refuses so that the log always verifies.
//! - `recovery`: reopen continues the chain and the tree.
//! - `tamper`: each kind of damage is caught and the first bad record named.
//! - `naming`: OAR.md §8.2 row by row: the record each failure names, and the check.
//! - `rotation`: the verifier follows key rotations.
//! - `erasure`: erasing a subject key leaves the log verifying and the key gone from the file.
//! - `proofs`: inclusion and consistency proofs from the store, checked offline.

use sios_audit::AuditLog;
use sios_audit::keys::{self, PublicKey};
use sios_audit::progress::Progress;
use sios_audit::record::Record;
use sios_audit::verify::{VerifyFailure, VerifyOptions, verify_bundle, verify_bundle_with};
use sios_ipc::{ActionResult, Decision, Digest, DraftKind, Effect, RecordDraft};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

fn intent(actor: &str, resource: &str) -> RecordDraft {
    let mut d = RecordDraft::new(actor, "invoke", resource, DraftKind::Intent);
    d.decision = Some(Decision {
        effect: Effect::Allow,
        policy_hash: Digest([7; 32]),
        policy_ids: vec!["p2".into(), "p1".into()],
    });
    d.subject = Some(actor.to_owned());
    d.input_digests = vec![Digest([1; 32])];
    d
}

fn outcome(actor: &str, resource: &str, intent_seq: u64, result: ActionResult) -> RecordDraft {
    let mut d = RecordDraft::new(
        actor,
        "invoke",
        resource,
        DraftKind::Outcome { intent_seq, result },
    );
    d.subject = Some(actor.to_owned());
    d.output_digests = vec![Digest([2; 32])];
    d
}

fn event(i: u64) -> RecordDraft {
    let mut d = RecordDraft::new(
        "kernel",
        "process.exited",
        format!("process:b{i}"),
        DraftKind::Event,
    );
    d.detail = format!("exit {i}");
    d
}

/// Exports the log to a bundle and exports the current public key.
async fn export(log: &AuditLog, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let bundle = dir.join(format!("{name}.bundle"));
    let _ = std::fs::remove_file(&bundle);
    log.flush().await.unwrap();
    sios_audit::export::write_bundle(log, &bundle)
        .await
        .unwrap();
    (bundle, dir.join("data").join(keys::PUBLIC_FILE))
}

fn first_key(data: &Path) -> PublicKey {
    keys::read_public(&data.join(keys::PUBLIC_FILE)).unwrap()
}

/// Writes `n` invoke actions (intent + outcome each) sequentially.
/// A new log in a temporary directory (its data dir returned too), with
/// `n` actions written, and its first public key saved as `k0.pub` beside.
async fn log_with_actions(n: u64) -> (tempfile::TempDir, PathBuf, AuditLog, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = AuditLog::open(&data).unwrap();
    let k0_path = dir.path().join("k0.pub");
    keys::write_public(&k0_path, &first_key(&data)).unwrap();
    actions(&log, n).await;
    (dir, data, log, k0_path)
}

/// Flushes `log` and checks that its checkpoint now extends `before`: the
/// log's own consistency proof between the two verifies.
async fn extends(log: &AuditLog, before: &sios_ipc::SignedCheckpoint) {
    log.flush().await.unwrap();
    let after = log.checkpoint();
    let proof = log.prove_consistency(before.size, after.size).unwrap();
    let path: Vec<_> = proof.path.iter().map(|d| d.0).collect();
    sios_audit::proof::verify_consistency(
        before.size,
        after.size,
        &path,
        &before.root.0,
        &after.root.0,
    )
    .unwrap();
}

async fn actions(log: &AuditLog, n: u64) {
    for i in 0..n {
        let r = log
            .record(vec![intent("uid:1000", &format!("brain:b{}", i % 3))])
            .await
            .unwrap();
        log.record(vec![outcome(
            "uid:1000",
            &format!("brain:b{}", i % 3),
            r[0].seq,
            if i % 4 == 3 {
                ActionResult::Error("boom".into())
            } else {
                ActionResult::Ok
            },
        )])
        .await
        .unwrap();
    }
}

mod group_commit {
    use super::*;

    /// Without `commit_here`: the log's background thread commits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn sixty_four_appenders_get_gapless_seqs_one_commit_per_batch_and_at_most_one_signature()
    {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        let batches = sixty_four_appenders(&log, dir.path()).await;
        assert!(
            batches <= 64 * 20,
            "calls were grouped: {batches} batches for 1280 calls"
        );
    }

    /// As the audit service runs it: one runtime thread that decodes the
    /// calls and commits them (`commit_here`). The 64 callers ready together
    /// must still share commits.
    #[tokio::test(flavor = "current_thread")]
    async fn the_same_with_commits_on_the_callers_runtime_thread() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        let committer = tokio::spawn(log.commit_here());
        let batches = sixty_four_appenders(&log, dir.path()).await;
        assert!(
            batches <= 64 * 20 / 4,
            "calls ready together share a commit: {batches} batches for 1280 calls"
        );
        committer.abort();
    }

    /// 64 tasks × 20 calls of 3 intents, then checks seqs, commits,
    /// signatures and the export; returns the number of batches.
    async fn sixty_four_appenders(log: &AuditLog, dir: &std::path::Path) -> u64 {
        let commits_before = log.stats().commits.load(Ordering::Relaxed);
        let signatures_before = log.stats().signatures.load(Ordering::Relaxed);
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let log = log.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::new();
                    for round in 0..20u64 {
                        let drafts: Vec<_> = (0..3)
                            .map(|k| intent(&format!("uid:{t}"), &format!("brain:{round}-{k}")))
                            .collect();
                        let receipts = log.record(drafts).await.unwrap();
                        // One call's records are consecutive, and an intent's
                        // reply comes with the signed checkpoint covering it.
                        assert!(receipts.windows(2).all(|w| w[1].seq == w[0].seq + 1));
                        assert!(receipts.iter().all(|r| r.checkpoint_size.unwrap() > r.seq));
                        seqs.extend(receipts.iter().map(|r| r.seq));
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        // Record 0 is log.init; the 64 × 20 × 3 appended follow without gaps.
        assert_eq!(all, (1..=64 * 20 * 3).collect::<Vec<u64>>());
        let stats = log.stats();
        let batches = stats.batches.load(Ordering::Relaxed);
        assert_eq!(
            stats.record_commits.load(Ordering::Relaxed),
            batches,
            "one commit per batch"
        );
        // A signature covers every batch committed before it started:
        // never more signatures than batches.
        let signatures = stats.signatures.load(Ordering::Relaxed) - signatures_before;
        assert!(
            (1..=batches).contains(&signatures),
            "{signatures} signatures for {batches} batches"
        );
        let commits = stats.commits.load(Ordering::Relaxed) - commits_before;
        assert!(commits >= batches);
        // A batch of one is correct too.
        let one = log.record(vec![event(99)]).await.unwrap();
        assert_eq!(one[0].seq, 64 * 20 * 3 + 1);
        // An event is answered once durable; its checkpoint follows.
        log.flush().await.unwrap();
        assert!(log.checkpoint().size > one[0].seq);
        let (bundle, key) = export(log, dir, "all").await;
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(report.records, 64 * 20 * 3 + 2);
        println!("{batches} batches, {signatures} signatures; {report}");
        batches
    }
}

/// Records nobody waits to see signed (outcomes, events) wake no looking
/// signer; it still covers them within `IDLE_SIGN`, with no flush and no
/// later intent to carry them, and a signer idle long enough to stop
/// looking is woken by them.
mod idle_signing {
    use super::*;
    use sios_audit::store::IDLE_SIGN;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn records_nobody_waits_for_are_signed_within_the_idle_bound() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let key = first_key(&data);
        // Idle first: the signer is between its looks, or, after over a
        // second of idling, has stopped looking and must be woken. Round 0
        // commits no intent at all, so nothing else wakes it.
        let rounds = [
            (IDLE_SIGN * 60, false),
            (IDLE_SIGN * 3, true),
            (IDLE_SIGN * 3, true),
        ];
        for (round, (idle, with_intent)) in rounds.into_iter().enumerate() {
            std::thread::sleep(idle);
            let mut drafts = vec![event(round as u64)];
            if with_intent {
                let r = log.record(vec![intent("uid:7", "brain:a")]).await.unwrap();
                drafts.insert(0, outcome("uid:7", "brain:a", r[0].seq, ActionResult::Ok));
            }
            let receipts = log.record(drafts).await.unwrap();
            let (first, last) = (receipts[0].seq, receipts[receipts.len() - 1].seq);
            // IDLE_SIGN is the promise; the margin is for a loaded machine.
            let deadline = Instant::now() + Duration::from_secs(10);
            while log.checkpoint().size <= last {
                assert!(
                    Instant::now() < deadline,
                    "round {round}: records {first}..={last} stayed unsigned for 10 s"
                );
                std::thread::sleep(Duration::from_millis(2));
            }
            let cp = log.checkpoint();
            sios_audit::checkpoint::verify_checkpoint(&cp.note, &[&key]).unwrap();
        }
        log.close();
    }
}

mod rules {
    use super::*;

    #[tokio::test]
    async fn outcomes_must_close_an_open_intent_of_the_same_action() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        let r = log.record(vec![intent("uid:1", "brain:a")]).await.unwrap();
        let seq = r[0].seq;
        // Unknown intent, an event's seq, another actor: refused, nothing written.
        for bad in [
            outcome("uid:1", "brain:a", 99, ActionResult::Ok),
            outcome("uid:1", "brain:a", 0, ActionResult::Ok),
            outcome("uid:2", "brain:a", seq, ActionResult::Ok),
            outcome("uid:1", "brain:b", seq, ActionResult::Ok),
        ] {
            assert!(log.record(vec![bad]).await.is_err());
        }
        // An invalid draft anywhere in a call refuses the whole call.
        let before = log.size().unwrap();
        assert!(
            log.record(vec![
                event(1),
                RecordDraft::new("", "x", "y", DraftKind::Event)
            ])
            .await
            .is_err()
        );
        assert_eq!(log.size().unwrap(), before);
        // Digests without a subject, reserved actions.
        let mut no_subject = event(2);
        no_subject.input_digests = vec![Digest([0; 32])];
        assert!(log.record(vec![no_subject]).await.is_err());
        assert!(
            log.record(vec![RecordDraft::new(
                "x",
                "key.rotate",
                "y",
                DraftKind::Event
            )])
            .await
            .is_err()
        );
        // The right outcome, once.
        log.record(vec![outcome("uid:1", "brain:a", seq, ActionResult::Denied)])
            .await
            .unwrap();
        assert!(
            log.record(vec![outcome("uid:1", "brain:a", seq, ActionResult::Ok)])
                .await
                .is_err()
        );
        // Intent and outcome in one call.
        let base = log.size().unwrap();
        log.record(vec![
            intent("uid:3", "brain:c"),
            outcome("uid:3", "brain:c", base, ActionResult::ProcessDied),
        ])
        .await
        .unwrap();
        let (bundle, key) = export(&log, dir.path(), "rules").await;
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(
            (report.intents, report.outcomes, report.open_intents),
            (2, 2, 0)
        );
    }

    #[tokio::test]
    async fn records_hold_keyed_hashes_never_bare_digests() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        let digest = Digest([0xd1; 32]);
        let mut d = intent("uid:5", "brain:a");
        d.input_digests = vec![digest];
        let r = log.record(vec![d]).await.unwrap();
        let page = log.read(r[0].seq, 1, 1 << 20).unwrap();
        let bytes = &page.records[0];
        assert!(
            !bytes.windows(32).any(|w| w == digest.0),
            "the bare digest is not stored"
        );
        let record = Record::decode(bytes).unwrap();
        let key = log.subject_key_for_tests("uid:5").unwrap().unwrap();
        assert_eq!(
            record.inputs,
            vec![sios_audit::linking::keyed(&key, &digest.0)]
        );
        assert_eq!(record.subject, Some(sios_audit::linking::subject_ref(&key)));
        assert_eq!(
            record.decision.unwrap().policy_ids,
            vec!["p1", "p2"],
            "sorted"
        );
    }

    #[tokio::test]
    async fn policy_texts_are_stored_content_addressed_and_exported() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        let text = "permit(principal, action, resource);";
        let mut d = RecordDraft::new(
            "operator:uid:0",
            "policy.activate",
            "policy:default",
            DraftKind::Event,
        );
        d.policy_text = Some(text.into());
        log.record(vec![d]).await.unwrap();
        use sha2::Digest as _;
        let hash = Digest(sha2::Sha256::digest(text.as_bytes()).into());
        assert_eq!(log.policy_text(hash).unwrap(), text);
        let (bundle, key) = export(&log, dir.path(), "policy").await;
        assert_eq!(verify_bundle(&bundle, &key).unwrap().policies, 1);
    }
}

mod recovery {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reopen_continues_the_same_chain_and_tree() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        actions(&log, 10).await;
        log.flush().await.unwrap();
        let before = log.checkpoint();
        log.close();
        let log = AuditLog::open(&data).unwrap();
        assert!(
            log.checkpoint() == before,
            "the same signed checkpoint after reopen"
        );
        actions(&log, 5).await;
        extends(&log, &before).await;
        let (bundle, key) = export(&log, dir.path(), "reopened").await;
        assert_eq!(verify_bundle(&bundle, &key).unwrap().records, 1 + 30);
    }

    /// Signed checkpoints are stored a few at a time (OAR.md §10
    /// "Acknowledgement"), so the newest are in memory only for a while;
    /// `checkpoints` lists every signed one all the same, and an export
    /// holds them all, ends on the latest and verifies.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_signed_checkpoint_is_listed_and_exported_before_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        log.flush().await.unwrap();
        actions(&log, 3).await;
        let r = log
            .record(vec![intent("uid:1000", "brain:b")])
            .await
            .unwrap();
        let latest = log.checkpoint();
        assert_eq!(latest.size, r[0].seq + 1, "the intent's own checkpoint");
        // One signed per intent call: trees of 2, 4, 6 and 8 records.
        let page = log.checkpoints(0, 1000, 1 << 20).unwrap();
        let listed: Vec<u64> = page.checkpoints.iter().map(|c| c.size).collect();
        assert_eq!(listed, [1, 2, 4, 6, 8]);
        // Pages of one: the same, one at a time.
        let mut after = 0;
        for size in [1, 2, 4, 6, 8] {
            let page = log.checkpoints(after, 1, 1 << 20).unwrap();
            assert_eq!(page.checkpoints.len(), 1);
            assert_eq!(page.checkpoints[0].size, size);
            after = size;
        }
        assert!(
            log.checkpoints(8, 1, 1 << 20)
                .unwrap()
                .checkpoints
                .is_empty()
        );

        let bundle = dir.path().join("unflushed.bundle");
        // Both report their progress: the export in records, the
        // verification in bytes, from nothing to all of it.
        let reports = |seen: &std::sync::Arc<std::sync::Mutex<Vec<(u64, u64)>>>| {
            let seen = seen.clone();
            Progress::new(move |done, total| seen.lock().unwrap().push((done, total)))
        };
        let exported = std::sync::Arc::default();
        let summary =
            sios_audit::export::write_bundle_with(&log, &bundle, Some(&reports(&exported)))
                .await
                .unwrap();
        assert_eq!(summary.tree_size, latest.size);
        assert_eq!(summary.checkpoints, 5);
        let key = data.join(keys::PUBLIC_FILE);
        let verified = std::sync::Arc::default();
        let options = VerifyOptions {
            progress: Some(reports(&verified)),
            ..VerifyOptions::default()
        };
        let report = verify_bundle_with(&bundle, &key, &options).unwrap();
        assert_eq!(report.records, latest.size);
        let bytes = std::fs::metadata(&bundle).unwrap().len();
        for (seen, total) in [(&exported, latest.size), (&verified, bytes)] {
            let seen: &Vec<(u64, u64)> = &seen.lock().unwrap();
            assert_eq!(seen.first(), Some(&(0, total)), "{seen:?}");
            assert_eq!(seen.last(), Some(&(total, total)), "{seen:?}");
            assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
        }
        let notes: Vec<String> = sios_audit::bundle::read_items(&bundle)
            .unwrap()
            .into_iter()
            .filter_map(|item| match item {
                sios_audit::bundle::Item::Checkpoint(note) => Some(note),
                _ => None,
            })
            .collect();
        let listed: Vec<String> = page.checkpoints.into_iter().map(|c| c.note).collect();
        assert_eq!(notes, listed);
        assert_eq!(notes.last(), Some(&latest.note));
    }

    /// Through the kernel each call of an export is itself an audited
    /// action, so the log grows while it is exported: by the time the
    /// export pages through the checkpoints, the one it started from may be
    /// neither stored yet nor the latest. The bundle still ends on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_of_a_log_that_grows_meanwhile_ends_on_its_checkpoint() {
        use sios_audit::export::Source;
        use sios_ipc::{CheckpointPage, PublicKeyInfo, RecordPage, SignedCheckpoint};
        /// The log, with an intent recorded before each call, as the kernel does.
        struct Audited<'a>(&'a AuditLog);
        impl Audited<'_> {
            async fn audit(&self) {
                self.0
                    .record(vec![intent("uid:1000", "audit")])
                    .await
                    .unwrap();
            }
        }
        impl Source for Audited<'_> {
            async fn read(&self, from: u64, max: u64) -> Result<RecordPage, sios_ipc::AuditError> {
                self.audit().await;
                Source::read(self.0, from, max).await
            }
            async fn checkpoint(&self) -> Result<SignedCheckpoint, sios_ipc::AuditError> {
                self.audit().await;
                Source::checkpoint(self.0).await
            }
            async fn checkpoints(
                &self,
                after: u64,
                max: u64,
            ) -> Result<CheckpointPage, sios_ipc::AuditError> {
                self.audit().await;
                Source::checkpoints(self.0, after, max).await
            }
            async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, sios_ipc::AuditError> {
                self.audit().await;
                Source::public_keys(self.0).await
            }
            async fn policy_text(&self, hash: Digest) -> Result<String, sios_ipc::AuditError> {
                self.audit().await;
                Source::policy_text(self.0, hash).await
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        actions(&log, 3).await;
        let bundle = dir.path().join("growing.bundle");
        let summary =
            sios_audit::export::write_to(&Audited(&log), std::fs::File::create(&bundle).unwrap())
                .await
                .unwrap();
        assert!(
            log.checkpoint().size > summary.tree_size,
            "the log grew meanwhile"
        );
        let key = data.join(keys::PUBLIC_FILE);
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(report.records, summary.tree_size);
    }

    /// An export that fails half way (here: the log stops answering after
    /// the first record was written) leaves no file at its path, not even a
    /// shorter bundle; a later export to the same path then succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_that_fails_half_way_leaves_no_file() {
        use sios_audit::export::{Source, write_bundle};
        use sios_ipc::{CheckpointPage, PublicKeyInfo, RecordPage, SignedCheckpoint};
        /// The log, until it is asked for its checkpoints.
        struct Failing<'a>(&'a AuditLog);
        impl Source for Failing<'_> {
            async fn read(&self, from: u64, max: u64) -> Result<RecordPage, sios_ipc::AuditError> {
                Source::read(self.0, from, max).await
            }
            async fn checkpoint(&self) -> Result<SignedCheckpoint, sios_ipc::AuditError> {
                Source::checkpoint(self.0).await
            }
            async fn checkpoints(
                &self,
                _: u64,
                _: u64,
            ) -> Result<CheckpointPage, sios_ipc::AuditError> {
                Err(sios_ipc::AuditError::Unavailable(
                    "the service went away".into(),
                ))
            }
            async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, sios_ipc::AuditError> {
                Source::public_keys(self.0).await
            }
            async fn policy_text(&self, hash: Digest) -> Result<String, sios_ipc::AuditError> {
                Source::policy_text(self.0, hash).await
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        actions(&log, 3).await;
        let out = dir.path().join("exports");
        std::fs::create_dir(&out).unwrap();
        let bundle = out.join("log.bundle");
        let err = write_bundle(&Failing(&log), &bundle).await.unwrap_err();
        assert!(err.to_string().contains("went away"), "{err}");
        let left: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
        assert!(left.is_empty(), "a failed export left {left:?}");
        let summary = write_bundle(&log, &bundle).await.unwrap();
        let report = verify_bundle(&bundle, &data.join(keys::PUBLIC_FILE)).unwrap();
        assert_eq!(report.records, summary.tree_size);
    }

    /// OAR.md §10 "Abandoned intents": a new kernel session closes the
    /// intents the previous one left open, with `process-died`; a restart
    /// within one session leaves them open for the live kernel to finish.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_kernel_session_closes_the_intents_the_last_one_left_open() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        assert!(log.begin_session("kernel-1").await.unwrap().is_empty());
        let mut brainy = intent("uid:1000", "brain:b0");
        brainy.brain = Some(sios_ipc::BrainRef {
            id: "b0".into(),
            model_sha256: Digest([9; 32]),
        });
        let a = log.record(vec![brainy]).await.unwrap()[0].seq;
        let b = log
            .record(vec![intent("uid:1001", "brain:b1")])
            .await
            .unwrap()[0]
            .seq;
        let done = log
            .record(vec![intent("uid:1002", "brain:b2")])
            .await
            .unwrap()[0]
            .seq;
        log.record(vec![outcome(
            "uid:1002",
            "brain:b2",
            done,
            ActionResult::Ok,
        )])
        .await
        .unwrap();
        log.close();

        // The audit service alone restarts: same session, nothing closed, and
        // the live kernel can still record an outcome.
        let log = AuditLog::open(&data).unwrap();
        assert!(log.begin_session("kernel-1").await.unwrap().is_empty());
        log.record(vec![outcome("uid:1001", "brain:b1", b, ActionResult::Ok)])
            .await
            .unwrap();
        log.close();

        // A new kernel: the intent still open is closed as process-died.
        let log = AuditLog::open(&data).unwrap();
        let size = log.size().unwrap();
        assert_eq!(log.begin_session("kernel-2").await.unwrap(), vec![a]);
        let page = log.read(size, 10, 1 << 20).unwrap();
        assert_eq!(page.records.len(), 1, "one outcome, nothing else");
        let closing = Record::decode(&page.records[0]).unwrap();
        assert_eq!(
            closing.kind,
            sios_audit::record::Kind::Outcome {
                intent_seq: a,
                result: ActionResult::ProcessDied
            }
        );
        assert_eq!(
            (closing.actor.as_str(), closing.action.as_str()),
            ("uid:1000", "invoke")
        );
        assert_eq!(closing.resource, "brain:b0");
        assert_eq!(closing.brain, Some(("b0".to_owned(), [9; 32])));
        assert_eq!(closing.detail, sios_audit::store::ABANDONED_DETAIL);
        // Idempotent, and the closed intent can no longer get another outcome.
        assert!(log.begin_session("kernel-2").await.unwrap().is_empty());
        let late = log
            .record(vec![outcome("uid:1000", "brain:b0", a, ActionResult::Ok)])
            .await;
        assert!(
            matches!(late, Err(sios_ipc::AuditError::InvalidDraft { .. })),
            "{late:?}"
        );
        let (bundle, key) = export(&log, dir.path(), "sessions").await;
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(
            (report.intents, report.outcomes, report.open_intents),
            (3, 3, 0)
        );
    }

    /// Open intents live in memory; their table is brought up to date every
    /// `OPEN_INTENTS_PERSIST_RECORDS` records and the records after it are
    /// replayed at open. Either way a reopened log knows exactly which
    /// intents are open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_intents_survive_reopen_from_the_table_and_from_replay() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let a = log.record(vec![intent("uid:1", "r:a")]).await.unwrap()[0].seq;
        let c = log.record(vec![intent("uid:3", "r:c")]).await.unwrap()[0].seq;
        log.record(vec![outcome("uid:3", "r:c", c, ActionResult::Ok)])
            .await
            .unwrap();
        // Enough records that the table is written (with `a` open, `c` closed).
        let mut written = 0;
        while written <= sios_audit::store::OPEN_INTENTS_PERSIST_RECORDS {
            log.record((written..written + 1000).map(event).collect())
                .await
                .unwrap();
            written += 1000;
        }
        // After it, only in records: `b` opened, `d` opened and closed.
        let b = log.record(vec![intent("uid:2", "r:b")]).await.unwrap()[0].seq;
        let d = log.record(vec![intent("uid:4", "r:d")]).await.unwrap()[0].seq;
        log.record(vec![outcome("uid:4", "r:d", d, ActionResult::Ok)])
            .await
            .unwrap();
        log.close();
        let log = AuditLog::open(&data).unwrap();
        for (actor, resource, seq) in [("uid:3", "r:c", c), ("uid:4", "r:d", d)] {
            let late = log
                .record(vec![outcome(actor, resource, seq, ActionResult::Ok)])
                .await;
            assert!(
                matches!(late, Err(sios_ipc::AuditError::InvalidDraft { .. })),
                "intent {seq} was closed before the reopen: {late:?}"
            );
        }
        log.record(vec![
            outcome("uid:1", "r:a", a, ActionResult::Ok),
            outcome("uid:2", "r:b", b, ActionResult::Ok),
        ])
        .await
        .expect("intents open before the reopen take their outcomes");
        let (bundle, key) = export(&log, dir.path(), "open-intents").await;
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(
            (report.intents, report.outcomes, report.open_intents),
            (4, 4, 0)
        );
    }

    /// A store of format 1 (every tree node stored, `open_intents` always
    /// current, no `open_intents_upto`) opens, is upgraded, and continues.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_format_1_store_opens_and_continues() {
        use redb::{ReadableDatabase as _, TableDefinition};
        use sha2::{Digest as _, Sha256};
        const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
        const OPEN: TableDefinition<u64, [u8; 32]> = TableDefinition::new("open_intents");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        actions(&log, 3).await;
        let a = log.record(vec![intent("uid:1", "r:a")]).await.unwrap()[0].seq;
        log.flush().await.unwrap();
        let before = log.checkpoint();
        log.close();
        // Make it what format 1 wrote.
        {
            let db = redb::Database::create(data.join(sios_audit::store::DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            {
                let mut meta = txn.open_table(META).unwrap();
                meta.insert("format", "sios-oar-store/1").unwrap();
                meta.remove("open_intents_upto").unwrap();
                let tag: [u8; 32] = Sha256::new()
                    .chain_update(b"uid:1\0invoke\0r:a")
                    .finalize()
                    .into();
                txn.open_table(OPEN).unwrap().insert(a, tag).unwrap();
            }
            txn.commit().unwrap();
            let read = db.begin_read().unwrap();
            let meta = read.open_table(META).unwrap();
            assert_eq!(
                meta.get("format").unwrap().unwrap().value(),
                "sios-oar-store/1"
            );
        }
        let log = AuditLog::open(&data).unwrap();
        assert!(log.checkpoint() == before, "the same signed checkpoint");
        log.record(vec![outcome("uid:1", "r:a", a, ActionResult::Ok)])
            .await
            .expect("the intent open in the format-1 table takes its outcome");
        actions(&log, 2).await;
        extends(&log, &before).await;
        log.close();
        let db = redb::Database::create(data.join(sios_audit::store::DB_FILE)).unwrap();
        let read = db.begin_read().unwrap();
        let meta = read.open_table(META).unwrap();
        assert_eq!(
            meta.get("format").unwrap().unwrap().value(),
            sios_audit::store::STORE_FORMAT
        );
    }

    /// Only one writer: a second open of the same log is refused while the
    /// first holds it, and allowed once it is closed.
    #[tokio::test]
    async fn a_second_open_of_a_log_in_use_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let second = AuditLog::open(&data);
        assert!(
            matches!(second, Err(sios_audit::OpenError::AlreadyOpen { .. })),
            "{second:?}"
        );
        log.close();
        AuditLog::open(&data).unwrap().close();
    }

    #[tokio::test]
    async fn a_damaged_file_gives_a_clear_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("audit.redb"), vec![0x5a; 64 * 1024]).unwrap();
        let err = AuditLog::open(&data).unwrap_err().to_string();
        assert!(err.contains("audit.redb"), "{err}");
        assert!(err.contains("damaged") || err.contains("restore"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_or_foreign_key_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        log.close();
        let secret = data.join(keys::SECRET_FILE);
        let saved = std::fs::read(&secret).unwrap();
        std::fs::remove_file(&secret).unwrap();
        let err = AuditLog::open(&data).unwrap_err().to_string();
        assert!(
            err.contains("signing.key") && err.contains("Restore"),
            "{err}"
        );
        keys::SecretKey::generate("sios/audit/other")
            .unwrap()
            .store(&secret)
            .unwrap();
        let err = AuditLog::open(&data).unwrap_err().to_string();
        assert!(err.contains("is signed by key"), "{err}");
        std::fs::remove_file(&secret).unwrap();
        std::fs::write(&secret, saved).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        AuditLog::open(&data).unwrap();
    }
}

mod tamper {
    use super::*;
    use sios_audit::bundle::Item;

    /// A log of 12 actions, each call its own batch and (flushed) checkpoint,
    /// so checkpoint k has size k + 1.
    async fn fixture() -> (tempfile::TempDir, Vec<Item>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        for i in 0..12u64 {
            let resource = format!("brain:b{}", i % 3);
            let r = log
                .record(vec![intent("uid:1000", &resource)])
                .await
                .unwrap();
            log.flush().await.unwrap();
            log.record(vec![outcome(
                "uid:1000",
                &resource,
                r[0].seq,
                ActionResult::Ok,
            )])
            .await
            .unwrap();
            log.flush().await.unwrap();
        }
        let (bundle, key) = export(&log, dir.path(), "good").await;
        verify_bundle(&bundle, &key).unwrap();
        let items = read(&bundle);
        (dir, items, key)
    }

    /// The items of the bundle at `path`, in order.
    pub(super) fn read(path: &Path) -> Vec<Item> {
        sios_audit::bundle::read_items(path).unwrap()
    }

    /// Writes `items` as a bundle, the end item recounted.
    pub(super) fn write(items: &[Item], path: &Path) {
        sios_audit::bundle::write_items(path, items).unwrap();
    }

    fn record_index(items: &[Item], seq: u64) -> usize {
        items
            .iter()
            .position(|i| matches!(i, Item::Record(b) if Record::decode(b).unwrap().seq == seq))
            .unwrap()
    }

    fn checkpoint_index(items: &[Item], nth: usize) -> usize {
        items
            .iter()
            .enumerate()
            .filter(|(_, i)| matches!(i, Item::Checkpoint(_)))
            .nth(nth)
            .unwrap()
            .0
    }

    fn failure(items: &[Item], dir: &Path, key: &Path) -> (Option<u64>, String) {
        let path = dir.join("tampered.bundle");
        write(items, &path);
        match verify_bundle(&path, key) {
            Ok(r) => panic!("tampered bundle verified: {r}"),
            Err(f) => (f.seq(), f.to_string()),
        }
    }

    #[tokio::test]
    async fn flipping_a_byte_in_a_record_names_it() {
        let (dir, items, key) = fixture().await;
        for seq in [1u64, 5, 10, 24] {
            let mut t = items.clone();
            let i = record_index(&t, seq);
            if let Item::Record(b) = &mut t[i] {
                // A byte inside the actor text: still canonical CBOR, different content.
                let at = b.windows(8).position(|w| w == b"uid:1000").unwrap() + 5;
                b[at] ^= 0x01;
            }
            let (got, why) = failure(&t, dir.path(), &key);
            assert_eq!(got, Some(seq), "{why}");
            // Record 10 is an outcome: its changed actor no longer matches its intent's.
            assert!(
                why.contains("altered") || why.contains("does not repeat"),
                "{why}"
            );
        }
        // A byte that breaks the encoding itself.
        let mut t = items.clone();
        let i = record_index(&t, 3);
        if let Item::Record(b) = &mut t[i] {
            b[0] = 0xbf; // an indefinite-length map
        }
        let (got, why) = failure(&t, dir.path(), &key);
        assert_eq!(got, Some(3), "{why}");
        assert!(why.contains("canonical"), "{why}");
    }

    #[tokio::test]
    async fn flipping_a_byte_in_a_checkpoint_or_its_signature_is_caught() {
        let (dir, items, key) = fixture().await;
        // Checkpoint k covers records up to k (batches of one).
        let nth = 6;
        let i = checkpoint_index(&items, nth);
        let Item::Checkpoint(note) = &items[i] else {
            unreachable!()
        };
        let body_end = note.find("\n\n").unwrap();
        // In the root line of the body.
        let mut t = items.clone();
        let mut bytes = note.clone().into_bytes();
        bytes[body_end - 3] = if bytes[body_end - 3] == b'A' {
            b'B'
        } else {
            b'A'
        };
        t[i] = Item::Checkpoint(String::from_utf8(bytes).unwrap());
        let (got, why) = failure(&t, dir.path(), &key);
        assert_eq!(got, Some(nth as u64), "{why}");
        // In the signature.
        let mut t = items.clone();
        let mut bytes = note.clone().into_bytes();
        let at = bytes.len() - 100;
        bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
        t[i] = Item::Checkpoint(String::from_utf8(bytes).unwrap());
        let (got, why) = failure(&t, dir.path(), &key);
        assert_eq!(got, Some(nth as u64), "{why}");
        assert!(why.contains("signature") || why.contains("signed"), "{why}");
    }

    #[tokio::test]
    async fn dropping_reordering_truncating_and_the_wrong_key_are_caught() {
        let (dir, items, key) = fixture().await;
        // Drop record 7.
        let mut t = items.clone();
        t.remove(record_index(&t, 7));
        let (got, why) = failure(&t, dir.path(), &key);
        assert_eq!(got, Some(7), "{why}");
        // Swap records 9 and 10.
        let mut t = items.clone();
        let (a, b) = (record_index(&t, 9), record_index(&t, 10));
        t.swap(a, b);
        let (got, why) = failure(&t, dir.path(), &key);
        assert_eq!(got, Some(9), "{why}");
        // Truncate the file's tail.
        let path = dir.path().join("cut.bundle");
        write(&items, &path);
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 2000).unwrap();
        let err = verify_bundle(&path, &key).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
        assert!(err.seq().is_some());
        // Drop the last records and checkpoints but keep a consistent end.
        let mut t = items.clone();
        let last_cp = checkpoint_index(&t, 20);
        t.truncate(last_cp);
        let (got, why) = failure(&t, dir.path(), &key);
        assert!(why.contains("not covered"), "{why}");
        assert!(got.is_some());
        // The wrong public key.
        let other = dir.path().join("other.pub");
        keys::write_public(
            &other,
            keys::SecretKey::generate("sios/audit/x").unwrap().public(),
        )
        .unwrap();
        let err = verify_bundle(&dir.path().join("good.bundle"), &other).unwrap_err();
        assert_eq!(err.seq(), Some(0));
        assert!(err.to_string().contains("not a key of this log"), "{err}");
        assert!(matches!(err, VerifyFailure::Invalid { .. }));
    }
}

mod rotation {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_verifier_follows_rotations_and_old_checkpoints_stay_verifiable() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let k0 = first_key(&data);
        let k0_path = dir.path().join("k0.pub");
        keys::write_public(&k0_path, &k0).unwrap();
        actions(&log, 3).await;
        let old_checkpoint = log.checkpoint();
        let report = log.rotate_key("operator:uid:0".into()).await.unwrap();
        assert_eq!(report.old_key_id, k0.id_hex());
        let k1 = first_key(&data);
        assert_ne!(k1, k0);
        assert_eq!(report.new_key_id, k1.id_hex());
        // The hand-over checkpoint carries both signatures.
        sios_audit::checkpoint::verify_checkpoint(&report.checkpoint.note, &[&k0, &k1]).unwrap();
        actions(&log, 3).await;
        // Survives a reopen with the new key.
        log.close();
        let log = AuditLog::open(&data).unwrap();
        log.rotate_key("operator:uid:0".into()).await.unwrap();
        actions(&log, 2).await;
        let keys_listed = log.public_keys().unwrap();
        assert_eq!(keys_listed.len(), 3);
        let (bundle, k2_path) = export(&log, dir.path(), "rotated").await;
        // Trusting the first, or the latest key: both verify.
        let r = verify_bundle(&bundle, &k0_path).unwrap();
        assert_eq!(r.keys.len(), 3);
        verify_bundle(&bundle, &k2_path).unwrap();
        // Old checkpoints stay verifiable under the old key.
        sios_audit::checkpoint::verify_checkpoint(&old_checkpoint.note, &[&k0]).unwrap();
        // The old key's signature on a later checkpoint is not accepted.
        assert!(sios_audit::checkpoint::verify_checkpoint(&log.checkpoint().note, &[&k0]).is_err());
    }
}

mod rotation_failures {
    use super::*;

    /// The rotation commits, then replacing the key files fails (here: a
    /// directory where `signing.pub` goes). The log names the new key, so
    /// only the new key may sign from then on; the next start finishes the
    /// files. Before, the old key kept signing and the next start refused
    /// the log for good (its latest checkpoint not by the key in force).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_whose_key_files_fail_still_signs_with_the_new_key() {
        let (dir, data, log, k0_path) = log_with_actions(2).await;
        let public = data.join(keys::PUBLIC_FILE);
        std::fs::remove_file(&public).unwrap();
        std::fs::create_dir(&public).unwrap();
        std::fs::write(public.join("in-the-way"), b"x").unwrap();
        let report = log
            .rotate_key("operator:uid:0".into())
            .await
            .expect("the rotation is committed, so it succeeded");
        actions(&log, 2).await;
        log.flush().await.unwrap();
        let latest = log.checkpoint();
        log.close();
        std::fs::remove_dir_all(&public).unwrap();

        let log = AuditLog::open(&data).expect("the next start finishes the rotation");
        let k1 = first_key(&data);
        assert_eq!(k1.id_hex(), report.new_key_id);
        sios_audit::checkpoint::verify_checkpoint(&latest.note, &[&k1])
            .expect("what followed the rotation is signed by the new key");
        actions(&log, 1).await;
        let (bundle, _) = export(&log, dir.path(), "after").await;
        verify_bundle(&bundle, &k0_path).unwrap();
    }

    /// An export that reads its checkpoint, then meets a rotation before it
    /// lists the keys: the new key's record is past the bundle's end, so the
    /// bundle must not list it (the verifier would refuse the bundle).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_export_that_races_a_rotation_lists_only_its_own_keys() {
        use sios_audit::export::Source;
        use sios_ipc::{AuditError, CheckpointPage, PublicKeyInfo, RecordPage, SignedCheckpoint};
        struct RotatesWhileExporting<'a>(&'a AuditLog);
        impl Source for RotatesWhileExporting<'_> {
            async fn read(&self, from: u64, max: u64) -> Result<RecordPage, AuditError> {
                self.0.read(from, max, sios_audit::export::LOCAL_PAGE_BYTES)
            }
            async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
                Ok(self.0.checkpoint())
            }
            async fn checkpoints(
                &self,
                after: u64,
                max: u64,
            ) -> Result<CheckpointPage, AuditError> {
                self.0
                    .checkpoints(after, max, sios_audit::export::LOCAL_PAGE_BYTES)
            }
            async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError> {
                self.0.rotate_key("operator:uid:0".into()).await?;
                self.0.public_keys()
            }
            async fn policy_text(&self, hash: Digest) -> Result<String, AuditError> {
                self.0.policy_text(hash)
            }
        }
        let (dir, _data, log, k0_path) = log_with_actions(2).await;
        log.flush().await.unwrap();
        let bundle = dir.path().join("raced.bundle");
        sios_audit::export::write_bundle(&RotatesWhileExporting(&log), &bundle)
            .await
            .unwrap();
        verify_bundle(&bundle, &k0_path).expect("the bundle verifies as of its checkpoint");
    }

    /// A kill while the next key is written leaves a file that does not
    /// load. That rotation never committed: the start sets the file aside
    /// and goes on with the key in force, instead of failing every start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_half_written_next_key_is_set_aside_at_start() {
        let (dir, data, log, _) = log_with_actions(2).await;
        log.close();
        let next = data.join(keys::NEXT_SECRET_FILE);
        std::fs::write(&next, b"").unwrap();
        let log = AuditLog::open(&data).expect("a torn next key does not stop the start");
        assert!(!next.exists());
        let aside: Vec<_> = std::fs::read_dir(&data)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("unusable"))
            .collect();
        assert_eq!(aside.len(), 1, "set aside, not deleted: {aside:?}");
        actions(&log, 1).await;
        let (bundle, key) = export(&log, dir.path(), "after").await;
        verify_bundle(&bundle, &key).unwrap();
    }
}

mod hand_over {
    use super::*;
    use sios_audit::bundle::Item;

    /// Without its hand-over checkpoint (size r + 1, signed by both keys) a
    /// rotation would let anyone holding only the public key append a
    /// `key.rotate` to a key of their own and sign what follows; the
    /// verifier refuses it and names the rotation record. (Found by the
    /// independent verifier written from OAR.md: this verifier accepted it.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rotation_without_its_hand_over_checkpoint_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        actions(&log, 3).await;
        let report = log.rotate_key("operator:uid:0".into()).await.unwrap();
        actions(&log, 3).await;
        let (bundle, key) = export(&log, dir.path(), "rotated").await;
        verify_bundle(&bundle, &key).unwrap();
        let mut items = super::tamper::read(&bundle);
        let hand_over = format!("\n{}\n", report.seq + 1);
        let before = items.len();
        items.retain(|i| !matches!(i, Item::Checkpoint(n) if n.contains(&hand_over)));
        assert_eq!(items.len(), before - 1, "the hand-over checkpoint found");
        let forged = dir.path().join("forged.bundle");
        super::tamper::write(&items, &forged);
        let err = verify_bundle(&forged, &key).unwrap_err();
        assert_eq!(err.seq(), Some(report.seq), "{err}");
        assert!(err.to_string().contains("no hand-over checkpoint"), "{err}");
    }
}

mod erasure {
    use super::*;

    #[tokio::test]
    async fn erasing_a_subject_key_keeps_the_log_verifying_and_removes_the_key_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        actions(&log, 20).await;
        let r = log
            .record(vec![intent("uid:2000", "brain:z")])
            .await
            .unwrap();
        log.record(vec![outcome(
            "uid:2000",
            "brain:z",
            r[0].seq,
            ActionResult::Ok,
        )])
        .await
        .unwrap();
        let key = log.subject_key_for_tests("uid:2000").unwrap().unwrap();
        let other = log.subject_key_for_tests("uid:1000").unwrap().unwrap();
        log.close();
        let file = data.join("audit.redb");
        let contains = |needle: &[u8; 32]| {
            let bytes = std::fs::read(&file).unwrap();
            bytes.windows(32).any(|w| w == needle)
        };
        assert!(contains(&key), "the key is in the file before erasure");
        let log = AuditLog::open(&data).unwrap();
        assert!(log.erase_subject_key("uid:2000".into()).await.unwrap());
        assert!(
            !log.erase_subject_key("uid:2000".into()).await.unwrap(),
            "already gone"
        );
        assert!(!log.has_subject_key("uid:2000").unwrap());
        assert!(log.has_subject_key("uid:1000").unwrap());
        let (bundle, pubkey) = export(&log, dir.path(), "erased").await;
        verify_bundle(&bundle, &pubkey).unwrap();
        // New records for the subject get a new, unrelated key.
        log.record(vec![intent("uid:2000", "brain:z")])
            .await
            .unwrap();
        let new_key = log.subject_key_for_tests("uid:2000").unwrap().unwrap();
        assert_ne!(new_key, key);
        log.close();
        assert!(
            !contains(&key),
            "the erased key's bytes are gone from audit.redb"
        );
        assert!(contains(&other), "other subjects' keys are kept");
    }

    /// An intent with `link_kept_on_success`, as the kernel sends for a
    /// data-subject request: the subject's new key is written only with an
    /// outcome reporting `ok`; after any other outcome, or an erasure while
    /// it waits, neither the key nor the subject's name is in the file, and
    /// erasing it reports no stored key (so no scrub).
    #[tokio::test]
    async fn a_key_asked_to_be_kept_on_success_is_written_only_then() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let about = |name: &str| {
            let mut d = RecordDraft::new(
                "uid:0",
                "memory_export",
                "memory:subject/*",
                DraftKind::Intent,
            );
            d.subject = Some(name.to_owned());
            d.link_kept_on_success = true;
            d
        };
        let closing = |intent_seq: u64, result: ActionResult| {
            RecordDraft::new(
                "uid:0",
                "memory_export",
                "memory:subject/*",
                DraftKind::Outcome { intent_seq, result },
            )
        };
        // Records an intent about `name`; returns its seq.
        let open_about = |name: &'static str| {
            let log = log.clone();
            async move { log.record(vec![about(name)]).await.unwrap()[0].seq }
        };
        let close = |intent_seq: u64, result: ActionResult| {
            let log = log.clone();
            async move {
                log.record(vec![closing(intent_seq, result)]).await.unwrap();
            }
        };
        let failed = open_about("data-subject:failed-qx81").await;
        close(failed, ActionResult::Error("unknown".into())).await;
        let kept = open_about("data-subject:kept-zr44").await;
        close(kept, ActionResult::Ok).await;
        // Two intents share the held key; the first fails, the second keeps it.
        let first = open_about("data-subject:shared-pw07").await;
        let second = open_about("data-subject:shared-pw07").await;
        close(first, ActionResult::Denied).await;
        assert!(!log.has_subject_key("data-subject:shared-pw07").unwrap());
        close(second, ActionResult::Ok).await;
        // An outcome of an intent holding a key must not name a subject
        // (that would store a key whatever its result).
        let held = open_about("data-subject:named-vb19").await;
        let naming = |intent_seq: u64| {
            let mut d = closing(intent_seq, ActionResult::Ok);
            d.subject = Some("data-subject:named-vb19".into());
            d
        };
        // Alone, and in one call with its intent (which gets the next seq:
        // the refused call wrote nothing).
        let calls = [
            (vec![naming(held)], 0),
            (vec![about("data-subject:named-vb19"), naming(held + 1)], 1),
        ];
        for (call, bad) in calls {
            match log.record(call).await {
                Err(sios_ipc::AuditError::InvalidDraft { index, reason }) => {
                    assert_eq!(index, bad);
                    assert!(reason.contains("only on success"), "{reason}")
                }
                other => panic!("an outcome naming a subject was taken: {other:?}"),
            }
        }
        close(held, ActionResult::Error("x".into())).await;
        // Erased while its intent waits: its success keeps nothing.
        let waiting = open_about("data-subject:erased-mm52").await;
        assert!(
            !log.erase_subject_key("data-subject:erased-mm52".into())
                .await
                .unwrap(),
            "no stored key to erase"
        );
        close(waiting, ActionResult::Ok).await;
        // Only an intent may ask.
        let mut outcome = closing(0, ActionResult::Ok);
        outcome.subject = Some("data-subject:x".into());
        outcome.link_kept_on_success = true;
        assert!(matches!(
            log.record(vec![outcome]).await,
            Err(sios_ipc::AuditError::InvalidDraft { .. })
        ));
        assert!(log.has_subject_key("data-subject:kept-zr44").unwrap());
        assert!(log.has_subject_key("data-subject:shared-pw07").unwrap());
        assert!(!log.has_subject_key("data-subject:failed-qx81").unwrap());
        assert!(!log.has_subject_key("data-subject:erased-mm52").unwrap());
        let (bundle, pubkey) = export(&log, dir.path(), "pending").await;
        verify_bundle(&bundle, &pubkey).unwrap();
        log.close();
        let bytes = std::fs::read(data.join("audit.redb")).unwrap();
        let holds = |name: &str| bytes.windows(name.len()).any(|w| w == name.as_bytes());
        assert!(holds("kept-zr44"), "a kept key is stored under its name");
        for name in ["failed-qx81", "erased-mm52", "named-vb19"] {
            assert!(!holds(name), "audit.redb holds {name}");
        }
    }
}

mod proofs {
    use super::*;
    use sios_audit::proof::{CheckWith, ConsistencyProofFile, InclusionProofFile, OldSignedBy};
    use sios_audit::verify::verify_reader_with;

    #[tokio::test]
    async fn inclusion_and_consistency_proofs_from_the_store_verify_offline() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let key = first_key(&data);
        actions(&log, 9).await;
        log.flush().await.unwrap();
        let early = log.checkpoint();
        actions(&log, 13).await;
        log.flush().await.unwrap();
        let cp = log.checkpoint();
        for seq in 0..cp.size {
            let proof = log.prove_inclusion(seq, Some(cp.size)).unwrap();
            let record = log.read(seq, 1, 1 << 20).unwrap().records.remove(0);
            let file = InclusionProofFile::new(&record, &proof, &cp.note);
            let json = serde_json::to_string(&file).unwrap();
            let back: InclusionProofFile = serde_json::from_str(&json).unwrap();
            back.check(&[&key]).unwrap();
            let mut bad = back.clone();
            bad.seq = (seq + 1) % cp.size;
            assert!(bad.check(&[&key]).is_err());
        }
        let proof = log.prove_consistency(early.size, cp.size).unwrap();
        let file = ConsistencyProofFile::new(&proof, &early.note, &cp.note);
        file.check(&[&key]).unwrap();
        let mut bad = file.clone();
        bad.path[0] = "00".repeat(32);
        assert!(bad.check(&[&key]).is_err());
        assert!(log.prove_inclusion(cp.size, None).is_err());
        assert!(log.prove_consistency(0, cp.size).is_err());
    }

    /// OAR.md §7.2: a checkpoint made before a key rotation is signed by the
    /// earlier key. A consistency proof from it to a later checkpoint needs
    /// only the current key (the later checkpoint proves the earlier body);
    /// an inclusion proof in it cannot be checked with the current key, and
    /// says which key signed it instead of calling the proof false.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proofs_across_a_key_rotation_need_only_the_current_key_or_say_which_key_signed() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        let k0 = first_key(&data);
        actions(&log, 3).await;
        log.flush().await.unwrap();
        let before = log.checkpoint();
        log.rotate_key("operator:uid:0".into()).await.unwrap();
        actions(&log, 3).await;
        log.flush().await.unwrap();
        let after = log.checkpoint();
        let k1 = first_key(&data);
        let proof = log.prove_consistency(before.size, after.size).unwrap();
        let file = ConsistencyProofFile::new(&proof, &before.note, &after.note);
        let checked = file.check(&[&k1]).unwrap();
        assert_eq!(checked.old_signed_by, OldSignedBy::EarlierKey(k0.id_hex()));
        // With both keys, both signatures are checked; a damaged path still fails.
        assert_eq!(
            file.check(&[&k0, &k1]).unwrap().old_signed_by,
            OldSignedBy::TheKeyGiven
        );
        let mut bad = file.clone();
        bad.path[0] = "00".repeat(32);
        assert!(matches!(
            bad.check(&[&k1]),
            Err(sios_audit::proof::ProofFileError::Proof(_))
        ));
        // The old key cannot vouch for the new checkpoint.
        assert!(matches!(
            file.check(&[&k0]),
            Err(sios_audit::proof::ProofFileError::OtherKey { .. })
        ));
        // Inclusion in the pre-rotation checkpoint: the key that signed it
        // checks it; the current key says which key that was.
        let record = log.read(2, 1, 1 << 20).unwrap().records.remove(0);
        let inclusion = log.prove_inclusion(2, Some(before.size)).unwrap();
        let file = InclusionProofFile::new(&record, &inclusion, &before.note);
        file.check(&[&k0]).unwrap();
        let err = file.check(&[&k1]).unwrap_err();
        assert!(
            matches!(&err, sios_audit::proof::ProofFileError::OtherKey { signed_by, .. } if *signed_by == k0.id_hex()),
            "{err}"
        );
        assert!(
            err.to_string().contains("before or after a key rotation"),
            "{err}"
        );
        // With an export that holds the rotation, the current key alone
        // checks it: the export's key history says K0 was in force at its
        // size, and the export's tree has its root there.
        let (bundle, _) = export(&log, dir.path(), "rotated").await;
        let options = VerifyOptions {
            roots_at: vec![before.size],
            ..VerifyOptions::default()
        };
        let report = verify_reader_with(std::fs::File::open(&bundle).unwrap(), &k1, &options)
            .expect("the export verifies");
        let with = CheckWith::Export {
            log: &report,
            trusted: &k1,
        };
        assert_eq!(with.keys_for(before.size), vec![&k0]);
        file.check_with(with).unwrap();
        // The export's root is what exposes a second history signed by the
        // same key: against a report with another root at that size, the
        // same validly signed proof fails (and is not "not checked").
        let mut other_root = report.clone();
        other_root.roots.insert(before.size, [7; 32]);
        let err = file
            .check_with(CheckWith::Export {
                log: &other_root,
                trusted: &k1,
            })
            .unwrap_err();
        assert!(
            matches!(
                err,
                sios_audit::proof::ProofFileError::NotTheExportsTree { .. }
            ),
            "{err}"
        );
        assert!(!err.not_checked());
    }

    /// The store keeps only subtrees of 64 leaves or more and hashes smaller
    /// ones from the records: roots and proofs across those boundaries match
    /// a tree computed from every leaf, before and after a reopen.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn proofs_across_stored_and_recomputed_subtrees_match_the_full_tree() {
        use sios_audit::merkle::{naive_root, verify_consistency, verify_inclusion};
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let log = AuditLog::open(&data).unwrap();
        for c in 0..7u64 {
            log.record((c * 50..c * 50 + 50).map(event).collect())
                .await
                .unwrap();
        }
        log.flush().await.unwrap();
        let before = log.checkpoint();
        log.close();
        // Reopening rebuilds the tree's right edge from stored and
        // recomputed subtrees; it must match the signed checkpoint.
        let log = AuditLog::open(&data).unwrap();
        assert!(log.checkpoint() == before);
        let size = log.size().unwrap();
        let leaves: Vec<_> = log
            .read(0, size, usize::MAX)
            .unwrap()
            .records
            .iter()
            .map(|r| Record::hash_of(r))
            .collect();
        let sizes = [1, 2, 63, 64, 65, 127, 128, 129, 192, 256, 257, 300, size];
        for &n in &sizes {
            let root = naive_root(&leaves[..n as usize]);
            assert_eq!(log.root_at(n).unwrap(), root, "root of size {n}");
            for seq in [0, n / 3, n / 2, n - 1] {
                let proof = log.prove_inclusion(seq, Some(n)).unwrap();
                let path: Vec<_> = proof.path.iter().map(|d| d.0).collect();
                verify_inclusion(&leaves[seq as usize], seq, n, &path, &root)
                    .unwrap_or_else(|e| panic!("inclusion of {seq} in {n}: {e}"));
            }
            for &m in sizes.iter().filter(|&&m| m >= n) {
                let proof = log.prove_consistency(n, m).unwrap();
                let path: Vec<_> = proof.path.iter().map(|d| d.0).collect();
                verify_consistency(n, m, &path, &root, &naive_root(&leaves[..m as usize]))
                    .unwrap_or_else(|e| panic!("consistency {n} → {m}: {e}"));
            }
        }
        log.close();
    }
}

mod naming {
    //! OAR.md §8.2, row by row: each kind of damage names the record whose
    //! change alone explains it (or, when no record changed, none), and the
    //! failing check of §8.1.
    use super::tamper::{read, write};
    use super::*;
    use sios_audit::bundle::Item;
    use sios_audit::checkpoint::{Checkpoint, open_note};

    /// Records 0 (`log.init`), 1..=6 (one batch), 7 (a policy activation),
    /// 8..=13, 14..=19 (one batch each), a checkpoint after each batch; so
    /// a checkpoint covers several records and only the last of each batch
    /// stands right before one.
    async fn fixture() -> (tempfile::TempDir, Vec<Item>, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        log.flush().await.unwrap();
        let batch = |from: u64| (from..from + 6).map(event).collect::<Vec<_>>();
        log.record(batch(1)).await.unwrap();
        log.flush().await.unwrap();
        let mut policy = RecordDraft::new(
            "operator:uid:0",
            "policy.activate",
            "policy:default",
            DraftKind::Event,
        );
        policy.policy_text = Some("permit(principal, action, resource);".into());
        log.record(vec![policy]).await.unwrap();
        log.flush().await.unwrap();
        for from in [8, 14] {
            log.record(batch(from)).await.unwrap();
            log.flush().await.unwrap();
        }
        let (bundle, key) = export(&log, dir.path(), "good").await;
        let report = verify_bundle(&bundle, &key).unwrap();
        assert_eq!(report.records, 20);
        let items = read(&bundle);
        for size in [7, 8, 14, 20] {
            at_checkpoint(&items, size);
        }
        (dir, items, key)
    }

    fn at_record(items: &[Item], seq: u64) -> usize {
        items
            .iter()
            .position(|i| matches!(i, Item::Record(b) if Record::decode(b).unwrap().seq == seq))
            .unwrap()
    }

    fn size_of(note: &str) -> u64 {
        Checkpoint::parse_body(open_note(note).unwrap().0)
            .unwrap()
            .size
    }

    fn at_checkpoint(items: &[Item], size: u64) -> usize {
        items
            .iter()
            .position(|i| matches!(i, Item::Checkpoint(n) if size_of(n) == size))
            .unwrap_or_else(|| panic!("no checkpoint of size {size}"))
    }

    fn record_mut(items: &mut [Item], seq: u64) -> &mut Vec<u8> {
        let i = at_record(items, seq);
        match &mut items[i] {
            Item::Record(b) => b,
            _ => unreachable!(),
        }
    }

    /// Changes one character of the record's detail ("exit N"): still a
    /// canonical record, with a different hash.
    fn change_in_place(items: &mut [Item], seq: u64) {
        let b = record_mut(items, seq);
        let at = b.windows(5).position(|w| w == b"exit ").unwrap();
        b[at] = b'E';
    }

    /// Rewrites the record's `prev` field to `prev`.
    fn relink(items: &mut [Item], seq: u64, prev: [u8; 32]) {
        let b = record_mut(items, seq);
        let mut r = Record::decode(b).unwrap();
        r.prev = prev;
        *b = r.encode();
    }

    fn hash(items: &[Item], seq: u64) -> [u8; 32] {
        match &items[at_record(items, seq)] {
            Item::Record(b) => Record::hash_of(b),
            _ => unreachable!(),
        }
    }

    /// Verifies `items` and returns the failure: (check, record named, message).
    fn failure(items: &[Item], dir: &Path, key: &Path) -> (&'static str, Option<u64>, String) {
        let path = dir.join("tampered.bundle");
        write(items, &path);
        match verify_bundle(&path, key) {
            Ok(r) => panic!("tampered bundle verified: {r}"),
            Err(f) => (f.check().unwrap(), f.seq(), f.to_string()),
        }
    }

    #[tokio::test]
    async fn a_record_changed_in_place_is_named_by_its_successors_link() {
        let (dir, mut items, key) = fixture().await;
        change_in_place(&mut items, 10);
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("R-c", Some(10)), "{why}");
    }

    #[tokio::test]
    async fn a_changed_link_breaks_both_links_and_names_its_record() {
        let (dir, mut items, key) = fixture().await;
        relink(&mut items, 10, [9; 32]);
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("R-c", Some(10)), "{why}");
        assert!(
            why.contains("its successor does not name its hash either"),
            "{why}"
        );
    }

    /// Record 13 is the last before a checkpoint: nothing tells a changed
    /// record 12 from a changed link in record 13; the earlier is named and
    /// the message says both.
    #[tokio::test]
    async fn a_changed_link_before_a_checkpoint_names_both_candidates() {
        let (dir, mut items, key) = fixture().await;
        relink(&mut items, 13, [9; 32]);
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("R-c", Some(12)), "{why}");
        assert!(why.contains("or record 13's link to it was"), "{why}");
    }

    /// The last record can change without breaking a link; the checkpoint's
    /// valid signature over another root says the records changed.
    #[tokio::test]
    async fn the_last_record_changed_is_named_through_the_signed_root() {
        let (dir, mut items, key) = fixture().await;
        change_in_place(&mut items, 19);
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-e", Some(19)), "{why}");
        // Before a checkpoint with records after it, the successor's link names it.
        let (dir, mut items, key) = fixture().await;
        change_in_place(&mut items, 13);
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-e", Some(13)), "{why}");
    }

    #[tokio::test]
    async fn records_rewritten_with_their_links_name_the_first_record_not_proven() {
        let (dir, mut items, key) = fixture().await;
        change_in_place(&mut items, 10);
        for seq in 11..=14 {
            let prev = hash(&items, seq - 1);
            relink(&mut items, seq, prev);
        }
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-e", Some(8)), "{why}");
        assert!(why.contains("rewritten with their links"), "{why}");
    }

    #[tokio::test]
    async fn a_checkpoint_with_a_changed_size_is_altered_not_misplaced() {
        let (dir, mut items, key) = fixture().await;
        let i = at_checkpoint(&items, 14);
        if let Item::Checkpoint(n) = &mut items[i] {
            *n = n.replacen("\n14\n", "\n15\n", 1);
        }
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-b", Some(8)), "{why}");
        assert!(why.contains("no key of the log signed it"), "{why}");
        // Its root changed instead: also the checkpoint, not the records.
        let (dir, mut items, key) = fixture().await;
        let i = at_checkpoint(&items, 14);
        if let Item::Checkpoint(n) = &mut items[i] {
            let root_at = n.find("\n14\n").unwrap() + 4;
            let c = if n.as_bytes()[root_at] == b'A' {
                "B"
            } else {
                "A"
            };
            n.replace_range(root_at..root_at + 1, c);
        }
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-e", Some(8)), "{why}");
        assert!(why.contains("no signature on it is valid"), "{why}");
    }

    #[tokio::test]
    async fn records_removed_before_the_last_checkpoint_are_named() {
        let (dir, mut items, key) = fixture().await;
        items.remove(at_record(&items, 19));
        items.remove(at_record(&items, 18));
        let (check, seq, why) = failure(&items, dir.path(), &key);
        assert_eq!((check, seq), ("C-b", Some(18)), "{why}");
        assert!(why.contains("missing before it"), "{why}");
    }

    /// No record is wrong: none is named.
    #[tokio::test]
    async fn a_repeated_checkpoint_names_no_record() {
        let (dir, items, key) = fixture().await;
        for size in [14, 20] {
            let mut t = items.clone();
            let i = at_checkpoint(&t, size);
            t.insert(i + 1, t[i].clone());
            let (check, seq, why) = failure(&t, dir.path(), &key);
            assert_eq!((check, seq), ("C-b", None), "{why}");
            assert!(why.contains("repeated or moved"), "{why}");
        }
    }

    #[tokio::test]
    async fn the_end_items_counts_and_bytes_after_it() {
        let (dir, items, key) = fixture().await;
        let path = dir.path().join("ends.bundle");
        let patched = |records: u64, checkpoints: u64, extra: &[u8]| {
            write(&items, &path);
            let mut bytes = std::fs::read(&path).unwrap();
            let n = bytes.len();
            bytes[n - 16..n - 8].copy_from_slice(&records.to_be_bytes());
            bytes[n - 8..].copy_from_slice(&checkpoints.to_be_bytes());
            bytes.extend_from_slice(extra);
            std::fs::write(&path, bytes).unwrap();
            let f = verify_bundle(&path, &key).unwrap_err();
            (f.check().unwrap(), f.seq(), f.to_string())
        };
        let cps = items
            .iter()
            .filter(|i| matches!(i, Item::Checkpoint(_)))
            .count() as u64;
        let (check, seq, why) = patched(20, cps + 1, b"");
        assert_eq!((check, seq), ("E-a", None), "{why}");
        let (check, seq, why) = patched(22, cps, b"");
        assert_eq!((check, seq), ("E-a", Some(20)), "{why}");
        let (check, seq, why) = patched(20, cps, b"R\0\0\0\0");
        assert_eq!((check, seq), ("F", None), "{why}");
        assert!(why.contains("bytes follow the end item"), "{why}");
    }

    /// Not evidence against any log: a file that is not a bundle, named.
    #[tokio::test]
    async fn a_file_that_is_not_a_bundle_is_unreadable_not_a_verdict() {
        let (dir, _, key) = fixture().await;
        for (name, bytes) in [("empty", &b""[..]), ("text", &b"hello, auditor\n"[..])] {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let f = verify_bundle(&path, &key).unwrap_err();
            assert!(
                matches!(&f, VerifyFailure::Unreadable { path: p, .. } if *p == path),
                "{f}"
            );
            assert!(f.to_string().contains("not a sios audit bundle"), "{f}");
        }
    }

    #[tokio::test]
    async fn a_policy_text_missing_altered_or_added_is_caught() {
        let (dir, items, key) = fixture().await;
        let p = items
            .iter()
            .position(|i| matches!(i, Item::Policy(_)))
            .unwrap();
        assert_eq!(p, at_record(&items, 7) + 1, "the text follows its record");
        // Removed.
        let mut t = items.clone();
        t.remove(p);
        let (check, seq, why) = failure(&t, dir.path(), &key);
        assert_eq!((check, seq), ("P-a", Some(7)), "{why}");
        // Altered.
        let mut t = items.clone();
        t[p] = Item::Policy("forbid(principal, action, resource);".into());
        let (check, seq, why) = failure(&t, dir.path(), &key);
        assert_eq!((check, seq), ("P-b", Some(7)), "{why}");
        // Added after a record that activates nothing, or repeated.
        for at in [at_record(&items, 3) + 1, p + 1] {
            let mut t = items.clone();
            t.insert(at, items[p].clone());
            let (check, seq, why) = failure(&t, dir.path(), &key);
            assert_eq!((check, seq), ("P-c", None), "{why}");
        }
    }

    /// OAR.md §8.3: a bundle cut back to an earlier checkpoint verifies on
    /// its own; against the later checkpoint the auditor kept, it does not.
    #[tokio::test]
    async fn a_kept_checkpoint_catches_a_shorter_log_and_a_second_history() {
        let (dir, items, key) = fixture().await;
        let kept = match &items[at_checkpoint(&items, 20)] {
            Item::Checkpoint(n) => n.clone(),
            _ => unreachable!(),
        };
        let with = |items: &[Item], kept: &str| {
            let path = dir.path().join("cut.bundle");
            write(items, &path);
            let options = VerifyOptions {
                extends: Some(kept.as_bytes().to_vec()),
                ..VerifyOptions::default()
            };
            verify_bundle_with(&path, &key, &options)
        };
        // The whole log extends its own last checkpoint, and the one before.
        assert_eq!(with(&items, &kept).unwrap().last_checkpoint, kept);
        let earlier = match &items[at_checkpoint(&items, 14)] {
            Item::Checkpoint(n) => n.clone(),
            _ => unreachable!(),
        };
        with(&items, &earlier).unwrap();
        // Cut back to the checkpoint of size 14.
        let cut = &items[..=at_checkpoint(&items, 14)];
        let alone = dir.path().join("alone.bundle");
        write(cut, &alone);
        assert_eq!(verify_bundle(&alone, &key).unwrap().records, 14);
        let f = with(cut, &kept).unwrap_err();
        assert_eq!((f.check(), f.seq()), (Some("X-b"), Some(14)), "{f}");
        assert!(f.to_string().contains("cut from its end"), "{f}");
        // The operator's key signing another history of the same size.
        let secret =
            keys::SecretKey::load(&dir.path().join("data").join(keys::SECRET_FILE)).unwrap();
        let mut other = Checkpoint::parse_body(open_note(&kept).unwrap().0).unwrap();
        other.root = [9; 32];
        let f = with(&items, &other.sign(&[&secret])).unwrap_err();
        assert_eq!((f.check(), f.seq()), (Some("X-d"), None), "{f}");
        assert!(f.to_string().contains("two different histories"), "{f}");
        // A checkpoint no key of this log signed is not one of this log.
        let stranger = keys::SecretKey::generate(&other.origin).unwrap();
        let f = with(&items, &other.sign(&[&stranger])).unwrap_err();
        assert_eq!(f.check(), Some("X-c"), "{f}");
        // Nor is one of another log.
        let mut foreign = other.clone();
        foreign.origin = "sios/audit/elsewhere".into();
        let f = with(&items, &foreign.sign(&[&stranger])).unwrap_err();
        assert_eq!(f.check(), Some("X-a"), "{f}");
    }
}
