//! The CLI's `sios audit` / `sios keys` module (cli/src/audit_cmd.rs),
//! compiled here against this crate and driven over an in-process log, so
//! that it is tested where the library it wraps is.

#[path = "../../../cli/src/audit_cmd.rs"]
#[allow(dead_code)]
mod audit_cmd;
#[path = "../../../cli/src/progress.rs"]
#[allow(dead_code)]
mod progress;

use audit_cmd::{AuditCliError, AuditCommand, AuditSource, KeysCommand, run_audit, run_keys};
use sios_audit::AuditLog;
use sios_audit::keys;
use sios_ipc::{
    ActionResult, AuditError, CheckpointPage, ConsistencyProof, Digest, DraftKind, InclusionProof,
    PublicKeyInfo, RecordDraft, RecordPage, RecordTimings, RotationReport, SignedCheckpoint,
};

/// What the CLI will implement over the kernel client, here over the log.
struct Local(AuditLog);

impl AuditSource for Local {
    async fn tail(&self, n: u64) -> Result<RecordPage, AuditError> {
        self.0.tail(n, 1 << 20)
    }
    async fn read(&self, from_seq: u64, max: u64) -> Result<RecordPage, AuditError> {
        self.0.read(from_seq, max, 1 << 20)
    }
    async fn checkpoint(&self) -> Result<SignedCheckpoint, AuditError> {
        Ok(self.0.checkpoint())
    }
    async fn checkpoints(&self, after: u64, max: u64) -> Result<CheckpointPage, AuditError> {
        self.0.checkpoints(after, max, 1 << 20)
    }
    async fn prove_inclusion(
        &self,
        seq: u64,
        size: Option<u64>,
    ) -> Result<InclusionProof, AuditError> {
        self.0.prove_inclusion(seq, size)
    }
    async fn prove_consistency(&self, old: u64, new: u64) -> Result<ConsistencyProof, AuditError> {
        self.0.prove_consistency(old, new)
    }
    async fn public_keys(&self) -> Result<Vec<PublicKeyInfo>, AuditError> {
        self.0.public_keys()
    }
    async fn policy_text(&self, hash: Digest) -> Result<String, AuditError> {
        self.0.policy_text(hash)
    }
    async fn rotate_key(&self) -> Result<RotationReport, AuditError> {
        self.0.rotate_key("operator:uid:0".into()).await
    }
    async fn record_timings(&self) -> Result<RecordTimings, AuditError> {
        Ok(self.0.stats().record_timings())
    }
}

async fn populated(dir: &std::path::Path) -> Local {
    let log = AuditLog::open(&dir.join("audit")).unwrap();
    for i in 0..5u64 {
        let r = log
            .record(vec![RecordDraft::new(
                "uid:1000",
                "invoke",
                format!("brain:b{i}"),
                DraftKind::Intent,
            )])
            .await
            .unwrap();
        log.record(vec![RecordDraft::new(
            "uid:1000",
            "invoke",
            format!("brain:b{i}"),
            DraftKind::Outcome {
                intent_seq: r[0].seq,
                result: ActionResult::Ok,
            },
        )])
        .await
        .unwrap();
        log.flush().await.unwrap();
    }
    Local(log)
}

#[tokio::test]
async fn export_verify_prove_and_keys_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let src = populated(dir.path()).await;
    let pubkey = dir.path().join("operator.pub");
    run_keys(
        KeysCommand::ExportPublic {
            file: pubkey.clone(),
        },
        &dir.path().join("audit"),
        Some(&src),
    )
    .await
    .unwrap();
    run_audit(
        AuditCommand::Tail {
            n: 3,
            json: true,
            follow: false,
        },
        Some(&src),
    )
    .await
    .unwrap();
    let bundle = dir.path().join("log.bundle");
    run_audit(
        AuditCommand::Export {
            file: bundle.clone(),
        },
        Some(&src),
    )
    .await
    .unwrap();
    // Offline: no source at all.
    run_audit::<Local>(verify(Some(bundle.clone()), &pubkey), None)
        .await
        .unwrap();
    // Keep its last checkpoint; the same bundle extends it, a shorter one not.
    let kept = dir.path().join("kept.note");
    let mut keep = verify(Some(bundle.clone()), &pubkey);
    if let AuditCommand::Verify {
        keep_checkpoint, ..
    } = &mut keep
    {
        *keep_checkpoint = Some(kept.clone());
    }
    run_audit::<Local>(keep, None).await.unwrap();
    assert!(
        std::fs::read_to_string(&kept)
            .unwrap()
            .contains("\n\n\u{2014} ")
    );
    let extends = |bundle: &std::path::Path| {
        let mut cmd = verify(Some(bundle.to_owned()), &pubkey);
        if let AuditCommand::Verify { extends, json, .. } = &mut cmd {
            *extends = Some(kept.clone());
            *json = true;
        }
        cmd
    };
    run_audit::<Local>(extends(&bundle), None).await.unwrap();
    use sios_audit::bundle::{Item, read_items, write_items};
    let items = read_items(&bundle).unwrap();
    let is_checkpoint = |i: &Item| matches!(i, Item::Checkpoint(_));
    let last = items.iter().rposition(is_checkpoint).unwrap();
    let before_last = items[..last].iter().rposition(is_checkpoint).unwrap();
    let short = dir.path().join("short.bundle");
    write_items(&short, &items[..=before_last]).unwrap();
    run_audit::<Local>(verify(Some(short.clone()), &pubkey), None)
        .await
        .unwrap();
    let err = run_audit::<Local>(extends(&short), None).await.unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("cut from its end"), "{err}");
    // The live log, verified through the source.
    run_audit(verify(None, &pubkey), Some(&src)).await.unwrap();
    // A damaged bundle: exit 1, the first bad record named.
    let mut bytes = std::fs::read(&bundle).unwrap();
    let at = bytes.windows(8).rposition(|w| w == b"brain:b2").unwrap();
    bytes[at + 7] = b'9';
    let bad = dir.path().join("bad.bundle");
    std::fs::write(&bad, bytes).unwrap();
    let err = run_audit::<Local>(verify(Some(bad.clone()), &pubkey), None)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(err.to_string().contains("record"), "{err}");
    // Unreadable inputs are usage errors.
    let err = run_audit::<Local>(verify(Some(dir.path().join("missing")), &pubkey), None)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    // Commands that need the appliance say so.
    let err = run_audit::<Local>(
        AuditCommand::Tail {
            n: 1,
            json: false,
            follow: false,
        },
        None,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AuditCliError::NotRunning));
    // prove -> verify-proof, and a consistency proof.
    let proof = dir.path().join("proof.json");
    run_audit(
        AuditCommand::Prove {
            seq: 3,
            tree_size: None,
            output: Some(proof.clone()),
        },
        Some(&src),
    )
    .await
    .unwrap();
    let verify_proof = |bundle: Option<&std::path::Path>| AuditCommand::VerifyProof {
        proof: proof.clone(),
        pubkey: pubkey.clone(),
        bundle: bundle.map(std::path::Path::to_owned),
        json: false,
    };
    run_audit::<Local>(verify_proof(None), None).await.unwrap();
    // With an export: it must verify first (a damaged one is a failed
    // check, exit 1; a missing one a usage error, exit 2).
    run_audit::<Local>(verify_proof(Some(&bundle)), None)
        .await
        .unwrap();
    let err = run_audit::<Local>(verify_proof(Some(&bad)), None)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(
        err.to_string().contains("--bundle does not verify"),
        "{err}"
    );
    let err = run_audit::<Local>(verify_proof(Some(&dir.path().join("missing"))), None)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    let text = std::fs::read_to_string(&proof)
        .unwrap()
        .replacen("\"seq\": 3", "\"seq\": 4", 1);
    std::fs::write(&proof, text).unwrap();
    let err = run_audit::<Local>(
        AuditCommand::VerifyProof {
            proof,
            pubkey: pubkey.clone(),
            bundle: None,
            json: false,
        },
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 1, "{err}");
    // Not a proof, a proof missing a part, and bytes that are not text:
    // usage errors (2) that say what the file should be, not verdicts on
    // the log.
    let other = dir.path().join("other.json");
    for (bytes, says) in [
        (
            &b"{}"[..],
            "its \"format\" is missing; expected \"sios-oar-inclusion-proof/1\"",
        ),
        (
            br#"{"format": "sios-oar-inclusion-proof/1"}"#,
            "a damaged proof: missing field",
        ),
        (&[0xff, 0xfe, 0x00, 0x9c], "it is not text"),
    ] {
        std::fs::write(&other, bytes).unwrap();
        let err = run_audit::<Local>(
            AuditCommand::VerifyProof {
                proof: other.clone(),
                pubkey: pubkey.clone(),
                bundle: None,
                json: false,
            },
            None,
        )
        .await
        .unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let said = err.to_string();
        assert!(said.starts_with(&other.display().to_string()), "{said}");
        assert!(said.contains(says), "{said}");
    }
    let cons = dir.path().join("consistency.json");
    let size = src.0.checkpoint().size;
    run_audit(
        AuditCommand::Consistency {
            old: 3,
            new: size,
            output: Some(cons.clone()),
        },
        Some(&src),
    )
    .await
    .unwrap();
    run_audit::<Local>(
        AuditCommand::VerifyProof {
            proof: cons,
            pubkey: pubkey.clone(),
            bundle: None,
            json: false,
        },
        None,
    )
    .await
    .unwrap();
    // keys: rotate through the source; init refuses an existing key.
    run_keys(KeysCommand::Rotate, &dir.path().join("audit"), Some(&src))
        .await
        .unwrap();
    let err = run_keys(KeysCommand::Init, &dir.path().join("audit"), Some(&src))
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 1);
    let fresh = dir.path().join("fresh");
    run_keys::<Local>(KeysCommand::Init, &fresh, None)
        .await
        .unwrap();
    assert!(fresh.join(keys::SECRET_FILE).exists());
}

/// `sios audit timings`: after five lone actions (each call a batch of its
/// own), every stage of both kinds of call counted five, with times; the
/// table has a heading, a header and a row per stage for each kind. With
/// nothing counted, times are null in the JSON and `-` in the table.
#[tokio::test]
async fn timings_show_every_stage_of_both_kinds_of_call() {
    let dir = tempfile::tempdir().unwrap();
    let src = populated(dir.path()).await;
    let timings = src.record_timings().await.unwrap();
    let json = audit_cmd::timings_json(&timings);
    for kind in ["intents", "durable_only"] {
        for stage in ["queued", "prepared", "committed", "answered"] {
            let s = &json[kind][stage];
            assert_eq!(s["count"], 5, "{kind} {stage}: {s}");
            let (p50, max) = (s["p50_us"].as_u64(), s["max_us"].as_u64());
            assert!(p50.is_some() && max >= p50, "{kind} {stage}: {s}");
        }
    }
    let table = audit_cmd::timings_table(&timings);
    assert_eq!(table.len(), 2 * 6, "{table:#?}");
    let committed: Vec<&str> = table[4].split_whitespace().collect();
    assert_eq!(&committed[..2], ["committed", "5"], "{table:#?}");
    run_audit(AuditCommand::Timings { json: false }, Some(&src))
        .await
        .unwrap();

    let none = RecordTimings::default();
    assert_eq!(
        audit_cmd::timings_json(&none)["intents"]["committed"],
        serde_json::json!({"count": 0, "p50_us": null, "p90_us": null, "p99_us": null, "max_us": null})
    );
    let empty_table = audit_cmd::timings_table(&none);
    let row: Vec<&str> = empty_table[2].split_whitespace().collect();
    assert_eq!(row, ["queued", "0", "-", "-", "-", "-"]);
}

/// `sios audit verify BUNDLE --pubkey PUBKEY`, nothing else.
fn verify(bundle: Option<std::path::PathBuf>, pubkey: &std::path::Path) -> AuditCommand {
    AuditCommand::Verify {
        bundle,
        pubkey: pubkey.to_owned(),
        extends: None,
        keep_checkpoint: None,
        json: false,
    }
}
