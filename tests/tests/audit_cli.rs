//! Issue 3 through the `sios` CLI: every action leaves intent and outcome
//! records; an export verifies offline with the exported public key after
//! the appliance stopped; a flipped byte is caught and named; proofs; key
//! rotation; `kill -9` of the audit service loses nothing acknowledged.

use serde_json::Value;
use sios_audit::bundle::Item;
use sios_e2e::{
    IndependentVerifier, Options, TestAppliance, Verdict, bundle_items, fixture, json_text,
    require_setup, source_tree, write_bundle_items,
};
use std::path::Path;

use sios_e2e::expect_success as ok;

/// Every record, as `sios audit tail --json` prints it.
fn tail(app: &TestAppliance) -> Vec<Value> {
    let text = ok(
        &app.sios(&["audit", "tail", "100000", "--json"]),
        "audit tail",
    );
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
        .collect()
}

/// The last intent for `action` on a resource containing `resource`, and its outcome.
fn intent_and_outcome<'a>(
    records: &'a [Value],
    action: &str,
    resource: &str,
) -> (&'a Value, &'a Value) {
    let intent = records
        .iter()
        .rev()
        .find(|r| {
            r["kind"] == "intent"
                && r["action"] == action
                && r["resource"].as_str().unwrap_or("").contains(resource)
        })
        .unwrap_or_else(|| panic!("no intent record for {action} on {resource}: {records:#?}"));
    assert!(
        intent["decision"].is_object(),
        "intent without decision: {intent}"
    );
    let outcome = records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["intent_seq"] == intent["seq"])
        .unwrap_or_else(|| panic!("no outcome for intent {intent}"));
    assert!(
        outcome["seq"].as_u64() > intent["seq"].as_u64(),
        "outcome before its intent"
    );
    (intent, outcome)
}

fn write_request(dir: &Path, brain: &str) -> String {
    let path = dir.join(format!("{brain}.json"));
    std::fs::write(&path, json_text(&fixture(brain).request)).expect("request file");
    path.display().to_string()
}

#[test]
fn every_action_is_recorded_and_the_export_verifies_offline() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity", "file-type"]));
    let work = app.dir.path().to_owned();
    let request = write_request(&work, "voice-activity");

    // One of each action type.
    ok(
        &app.sios(&["invoke", "voice-activity", "--input", &request]),
        "invoke",
    );
    ok(&app.sios(&["restart", "file-type"]), "restart");
    ok(&app.sios(&["brain", "disable", "file-type"]), "disable");
    ok(&app.sios(&["brain", "enable", "file-type"]), "enable");
    let ns = "client:ops/notes";
    ok(
        &app.sios(&sios_e2e::memory_put_args(ns, "alice", "k1", "v1", &[])),
        "memory put",
    );
    ok(
        &app.sios(&["memory", "get", "--namespace", ns, "k1"]),
        "memory get",
    );
    let exported = work.join("notes.jsonl").display().to_string();
    ok(
        &app.sios(&["memory", "export", "--namespace", ns, "-o", &exported]),
        "memory export",
    );
    ok(&app.sios(&["memory", "erase-subject", "alice"]), "erase");
    ok(&app.sios(&["keys", "rotate"]), "key rotate");

    // A policy that forbids restarts, loaded through the CLI (audited).
    let policy_dir = work.join("policy");
    std::fs::create_dir_all(&policy_dir).expect("policy dir");
    std::fs::copy(
        source_tree().join("deploy/policy/default.cedar"),
        policy_dir.join("default.cedar"),
    )
    .expect("copy default policy");
    std::fs::write(
        policy_dir.join("no-invoke.cedar"),
        "@id(\"test.no-invoke\")\nforbid(principal, action == Sios::Action::\"invoke\", resource);\n",
    )
    .expect("forbid file");
    ok(
        &app.sios(&["policy", "load", &policy_dir.display().to_string()]),
        "policy load",
    );
    let served = |app: &TestAppliance| -> u64 {
        let text = ok(&app.sios(&["brain", "list", "--json"]), "brain list");
        let doc: Value = serde_json::from_str(&text).expect("brain list JSON");
        doc["brains"]
            .as_array()
            .expect("brains")
            .iter()
            .find(|b| b["name"] == "voice-activity")
            .expect("voice-activity listed")["requests"]
            .as_u64()
            .expect("requests")
    };
    let before = served(&app);
    let denied = app.sios(&["invoke", "voice-activity", "--input", &request]);
    assert_eq!(denied.status.code(), Some(1), "a denied invoke exits 1");
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("test.no-invoke"),
        "the refusal names the forbid: {}",
        String::from_utf8_lossy(&denied.stderr)
    );
    assert_eq!(served(&app), before, "a denied invoke reached the brain");

    // The audit service's own stage timings, through the kernel: the calls
    // above were timed (an audit read itself, recorded below).
    let timings: Value = serde_json::from_str(&ok(
        &app.sios(&["audit", "timings", "--json"]),
        "audit timings",
    ))
    .expect("audit timings --json is one JSON object");
    for kind in ["intents", "durable_only"] {
        let committed = &timings[kind]["committed"];
        assert!(
            committed["count"].as_u64() > Some(0) && committed["p50_us"].as_u64() > Some(0),
            "{kind}: {timings}"
        );
    }

    let records = tail(&app);
    // The first invoke was allowed; the last one denied by the forbid.
    let invokes: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["action"] == "invoke")
        .collect();
    assert!(invokes.len() >= 2, "{invokes:#?}");
    assert_eq!(invokes[0]["decision"]["effect"], "allow");
    for (action, resource) in [
        ("memory_write", ns),
        ("memory_read", ns),
        ("memory_export", ns),
        ("memory_erase", "memory:subject/*"),
        ("key_rotate", ""),
        ("policy_load", ""),
        ("audit_read", "record-timings"),
    ] {
        let (intent, outcome) = intent_and_outcome(&records, action, resource);
        assert_eq!(intent["decision"]["effect"], "allow", "{intent}");
        assert_ne!(outcome["result"], "denied", "{outcome}");
    }
    let (intent, outcome) = intent_and_outcome(&records, "invoke", "voice-activity");
    assert_eq!(intent["decision"]["effect"], "deny", "{intent}");
    assert_eq!(
        intent["decision"]["policy_ids"],
        serde_json::json!(["test.no-invoke"])
    );
    assert_eq!(outcome["result"], "denied", "{outcome}");

    // Proofs, checked offline.
    let pubkey = work.join("operator.pub");
    ok(
        &app.sios(&["keys", "export-public", &pubkey.display().to_string()]),
        "export-public",
    );
    let proof = work.join("proof.json");
    let seq = intent["seq"].as_u64().expect("seq").to_string();
    ok(
        &app.sios(&["audit", "prove", &seq, "-o", &proof.display().to_string()]),
        "prove",
    );
    let bundle = work.join("log.oar");
    ok(
        &app.sios(&["audit", "export", &bundle.display().to_string()]),
        "export",
    );
    let across = proofs_across_the_rotation(&app, &bundle, &work);
    let stopped = app.stop();
    assert!(stopped.success(), "appliance stopped cleanly");

    // Offline: no appliance runs any more.
    let pk = pubkey.display().to_string();
    check_proofs_across_the_rotation(&app, &across, &pk, &bundle);
    ok(
        &app.sios(&[
            "audit",
            "verify-proof",
            &proof.display().to_string(),
            "--pubkey",
            &pk,
        ]),
        "verify-proof",
    );
    let verified = ok(
        &app.sios(&[
            "audit",
            "verify",
            &bundle.display().to_string(),
            "--pubkey",
            &pk,
        ]),
        "verify",
    );
    assert!(!verified.is_empty());
    let replayed = ok(
        &app.sios(&["audit", "replay", &bundle.display().to_string()]),
        "replay",
    );
    assert!(replayed.contains(" 0 divergent"), "{replayed}");
    the_independent_verifier_agrees(&app, &bundle, &pubkey, &verified);

    // One flipped byte in the middle of a record is caught and named.
    let mut bytes = std::fs::read(&bundle).expect("bundle");
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let tampered = work.join("tampered.oar");
    std::fs::write(&tampered, &bytes).expect("tampered bundle");
    let out = app.sios(&[
        "audit",
        "verify",
        &tampered.display().to_string(),
        "--pubkey",
        &pk,
    ]);
    assert_eq!(out.status.code(), Some(1), "tampered bundle verified");
    let why = String::from_utf8_lossy(&out.stderr).to_lowercase()
        + &String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(
        why.contains("record") || why.contains("checkpoint"),
        "the failure names what is bad: {why}"
    );
}

/// Proof files made while the appliance runs, against the last checkpoint
/// before the key rotation (OAR.md §7.2): a consistency proof from it to
/// the latest, and an inclusion proof of record 0 in it.
struct AcrossRotation {
    consistency: std::path::PathBuf,
    inclusion: std::path::PathBuf,
}

fn proofs_across_the_rotation(app: &TestAppliance, bundle: &Path, work: &Path) -> AcrossRotation {
    let items = bundle_items(bundle);
    let rotation = items
        .iter()
        .filter_map(record_of)
        .find(|r| r.action == "key.rotate")
        .expect("the export holds the rotation")
        .seq;
    let sizes: Vec<u64> = items
        .iter()
        .filter_map(|i| match i {
            Item::Checkpoint(n) => n.lines().nth(1).and_then(|l| l.parse().ok()),
            _ => None,
        })
        .collect();
    let old = sizes
        .iter()
        .copied()
        .filter(|s| *s <= rotation)
        .max()
        .expect("a checkpoint before the rotation");
    let new = *sizes.last().expect("checkpoints");
    let across = AcrossRotation {
        consistency: work.join("across-consistency.json"),
        inclusion: work.join("across-inclusion.json"),
    };
    let (old, new) = (old.to_string(), new.to_string());
    let path = |p: &Path| p.display().to_string();
    ok(
        &app.sios(&[
            "audit",
            "consistency",
            &old,
            &new,
            "-o",
            &path(&across.consistency),
        ]),
        "consistency across the rotation",
    );
    ok(
        &app.sios(&[
            "audit",
            "prove",
            "0",
            "--tree-size",
            &old,
            "-o",
            &path(&across.inclusion),
        ]),
        "prove in a checkpoint before the rotation",
    );
    across
}

/// With only the current key: the consistency proof checks out, and says
/// the smaller checkpoint is proven by the larger; the inclusion proof is
/// not called false but "not checked" (exit 2), naming the key that signed.
/// With the export (which holds the rotation) as well, the inclusion proof
/// checks out with the current key, and both name the earlier key in force.
fn check_proofs_across_the_rotation(
    app: &TestAppliance,
    across: &AcrossRotation,
    pk: &str,
    bundle: &Path,
) {
    let consistency = across.consistency.display().to_string();
    let said = ok(
        &app.sios(&["audit", "verify-proof", &consistency, "--pubkey", pk]),
        "verify-proof across the rotation",
    );
    assert!(said.contains("proven by the larger"), "{said}");
    let inclusion = across.inclusion.display().to_string();
    let out = app.sios(&["audit", "verify-proof", &inclusion, "--pubkey", pk]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{said}");
    assert!(
        said.contains("NOT CHECKED") && said.contains("key rotation"),
        "{said}"
    );
    let export = bundle.display().to_string();
    for proof in [&inclusion, &consistency] {
        let said = ok(
            &app.sios(&[
                "audit",
                "verify-proof",
                proof,
                "--pubkey",
                pk,
                "--bundle",
                &export,
            ]),
            "verify-proof with the export",
        );
        assert!(
            said.contains("in force at that size, per the export"),
            "{said}"
        );
    }
    // The same verdicts as JSON, for scripts: the exit status and the
    // object's verdict agree.
    let inclusion_json = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify-proof",
            &inclusion,
            "--pubkey",
            pk,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = app.sios(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out:?}"));
        (out.status.code(), v)
    };
    let (code, v) = inclusion_json(&[]);
    assert_eq!(
        (code, &v["verdict"]),
        (Some(2), &"not-checked".into()),
        "{v}"
    );
    let (code, v) = inclusion_json(&["--bundle", &export]);
    assert_eq!((code, &v["verdict"]), (Some(0), &"holds".into()), "{v}");
    assert_eq!(v["proof"], "inclusion", "{v}");
    assert_eq!(v["seq"], 0, "{v}");
    assert_eq!(v["signed_by"].as_array().map(Vec::len), Some(1), "{v}");
}

/// A name is the client's choice and may be longer than a record field
/// allows: it is fitted into the record (its head, its length and its
/// SHA-256), never a reason to leave the action unrecorded.
/// The files at or under `path` whose bytes contain `needle`.
fn files_holding(path: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![path.to_owned()];
    while let Some(path) = todo.pop() {
        if path.is_dir() {
            for entry in std::fs::read_dir(&path).expect("read dir") {
                todo.push(entry.expect("dir entry").path());
            }
        } else if std::fs::read(&path)
            .expect("read file")
            .windows(needle.len())
            .any(|w| w == needle)
        {
            found.push(path.display().to_string());
        }
    }
    found
}

/// The audit log outlives an erasure, so a data subject's id never enters
/// it: requests about a subject are recorded on `memory:subject/*` with the
/// subject's pseudonym, and erasing the subject destroys the linking key
/// behind the pseudonym (present in `audit.redb` before, gone after).
#[test]
fn a_data_subject_is_recorded_only_by_a_pseudonym_that_erasure_unlinks() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&[]));
    let (person, stranger) = (
        "patient-q7k2x9@clinic.example",
        "nobody-w4m8z1@clinic.example",
    );
    let ns = "client:ops/records";
    for key in ["visit-1", "visit-2"] {
        ok(
            &app.sios(&sios_e2e::memory_put_args(ns, person, key, "notes", &[])),
            "memory put",
        );
    }
    let work = app.dir.path().to_owned();
    let exported = work.join("person.jsonl").display().to_string();
    ok(
        &app.sios(&["memory", "export", "--subject", person, "-o", &exported]),
        "export the person",
    );
    let unknown = app.sios(&[
        "memory",
        "export",
        "--subject",
        stranger,
        "-o",
        &work.join("stranger.jsonl").display().to_string(),
    ]);
    assert!(
        !unknown.status.success(),
        "a subject nobody stored exported"
    );
    // The kernel refuses an invalid id before anything is recorded (no
    // erasure could remove a linking key named after it); asked directly,
    // since the CLI refuses such an id itself.
    let invalid = sios_e2e::multi_thread_runtime(1).block_on(async {
        app.client()
            .await
            .memory_export(
                sios_e2e::ctx(),
                sios_ipc::ExportRequest {
                    scope: sios_ipc::ExportScope::Subject("not valid!".into()),
                    after: None,
                    limit: 10,
                },
            )
            .await
            .expect("the kernel answers")
    });
    assert!(
        matches!(invalid, Err(sios_ipc::MemoryError::InvalidName { .. })),
        "{invalid:?}"
    );
    let audit_dir = app.state_dir.join("audit");
    let link = format!("data-subject:{person}");
    assert_eq!(
        files_holding(&audit_dir, link.as_bytes()).len(),
        1,
        "before the erasure, audit.redb holds the subject's linking key under its name"
    );
    ok(
        &app.sios(&["memory", "erase-subject", person]),
        "erase the person",
    );
    // Asked for again after the erasure, the person is unknown; the linking
    // key that request's record needed must not bring their id back.
    let again = app.sios(&[
        "memory",
        "export",
        "--subject",
        person,
        "-o",
        &work.join("again.jsonl").display().to_string(),
    ]);
    assert!(!again.status.success(), "an erased subject exported");
    // Erasing someone never stored: nothing to erase (exit 1), and, as
    // above, no key is left under their name.
    let nobody = app.sios(&["memory", "erase-subject", stranger]);
    assert_eq!(
        nobody.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&nobody.stderr)
    );

    let records = tail(&app);
    let about_subjects: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["resource"] == "memory:subject/*")
        .collect();
    let actions: Vec<&str> = about_subjects
        .iter()
        .map(|r| r["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        actions,
        [
            "memory_export",
            "memory_export",
            "memory_erase",
            "memory_export",
            "memory_erase"
        ],
        "{about_subjects:#?}"
    );
    let pseudonym = |r: &Value| -> String {
        let hex = r["subject"]
            .as_str()
            .unwrap_or_else(|| panic!("no pseudonym: {r}"));
        assert_eq!(hex.len(), 64, "{r}");
        hex.to_owned()
    };
    // The person's export and erasure share a pseudonym; the stranger's differs.
    assert_eq!(pseudonym(about_subjects[0]), pseudonym(about_subjects[2]));
    assert_ne!(pseudonym(about_subjects[0]), pseudonym(about_subjects[1]));
    // After the erasure the person's pseudonym is a new one: nothing links.
    assert_ne!(pseudonym(about_subjects[0]), pseudonym(about_subjects[3]));
    let outcome_of = |intent: &Value| {
        records
            .iter()
            .find(|r| r["kind"] == "outcome" && r["intent_seq"] == intent["seq"])
            .unwrap_or_else(|| panic!("no outcome for {intent}"))
    };
    assert_eq!(outcome_of(about_subjects[1])["result"], "error");
    assert_eq!(outcome_of(about_subjects[2])["result"], "ok");
    assert_eq!(outcome_of(about_subjects[3])["result"], "error");
    // The stranger's export failed, so its key was never kept: their
    // erasure request got a new one, and the two link to nothing.
    assert_ne!(pseudonym(about_subjects[1]), pseudonym(about_subjects[4]));

    let bundle = work.join("log.oar");
    ok(
        &app.sios(&["audit", "export", &bundle.display().to_string()]),
        "audit export",
    );
    assert!(app.stop().success(), "appliance stopped cleanly");
    for id in [person, stranger] {
        assert_eq!(
            files_holding(&bundle, id.as_bytes()).len(),
            0,
            "the exported log names {id}"
        );
    }
    // Nor does anything else the appliance keeps (the memory service's
    // files included: erasure is for good there too), and a subject asked
    // about but never stored leaves no trace either.
    for id in [person, stranger] {
        assert_eq!(
            files_holding(&app.state_dir, id.as_bytes()),
            Vec::<String>::new(),
            "the appliance's files still hold {id}"
        );
    }
}

#[test]
fn an_oversized_name_is_recorded_shortened_and_the_action_still_answered() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let name = "n".repeat(5000);
    let out = app.sios(&["restart", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "there is no such process");
    assert!(
        stderr.contains("no process named") && !stderr.contains("record"),
        "the operator hears that the name is unknown, not that the audit failed: {stderr}"
    );
    let records = tail(&app);
    let (intent, outcome) = intent_and_outcome(&records, "restart", "process:nnnn");
    let resource = intent["resource"].as_str().expect("resource");
    assert!(resource.len() <= 512, "{resource}");
    assert!(
        resource.contains("… [5008 bytes, sha256:"),
        "the fitted name says how long the whole was: {resource}"
    );
    assert_eq!(outcome["resource"], intent["resource"]);
    assert_eq!(outcome["result"], "error", "{outcome}");
    let error = outcome["error"].as_str().expect("error text");
    assert!(
        error.len() <= 4096 && error.starts_with("no process named `nnnn"),
        "{error}"
    );
}

#[test]
fn killing_the_audit_service_loses_no_acknowledged_record() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let work = app.dir.path().to_owned();
    let request = write_request(&work, "voice-activity");
    let mut acknowledged = 0;
    for round in 0..3 {
        for _ in 0..5 {
            if app
                .sios(&["invoke", "voice-activity", "--input", &request, "--compact"])
                .status
                .success()
            {
                acknowledged += 1;
            }
        }
        let pid = app.pid("audit");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9 audit");
        app.wait_for("audit", &format!("back after kill {round}"), |p| {
            p.pid.is_some_and(|p| p != pid) && p.state == sios_ipc::ProcessState::Ready
        });
    }
    assert!(acknowledged >= 10, "most invokes answered: {acknowledged}");
    let pubkey = work.join("operator.pub");
    ok(
        &app.sios(&["keys", "export-public", &pubkey.display().to_string()]),
        "export-public",
    );
    let bundle = work.join("log.oar");
    ok(
        &app.sios(&["audit", "export", &bundle.display().to_string()]),
        "export",
    );
    app.stop();
    let records = sios_e2e::audit_records(&app.state_dir);
    let succeeded = records
        .iter()
        .filter(|r| {
            r.action == "invoke"
                && matches!(
                    r.kind,
                    sios_audit::record::Kind::Outcome {
                        result: sios_ipc::ActionResult::Ok,
                        ..
                    }
                )
        })
        .count();
    assert!(
        succeeded >= acknowledged,
        "{acknowledged} invokes acknowledged, {succeeded} ok outcomes recorded"
    );
    ok(
        &app.sios(&[
            "audit",
            "verify",
            &bundle.display().to_string(),
            "--pubkey",
            &pubkey.display().to_string(),
        ]),
        "verify after kills",
    );
}

/// What `sios audit verify` printed after `what` and before `until`
/// ("OK: 12 records (" → "12").
fn said_between<'a>(said: &'a str, what: &str, until: &str) -> Option<&'a str> {
    let from = said.find(what)? + what.len();
    let len = said[from..].find(until)?;
    Some(&said[from..from + len])
}

/// OAR.md must let a stranger write a verifier from it alone (issue 3,
/// point 1). `services/audit/verifier-py/oar_verify.py` is one, written in
/// Python from OAR.md by an engineer who never read this implementation.
/// It judges the same bundle as `sios audit verify` (every action type, a
/// key rotation, a denial, a policy text): the same root, counts and keys.
/// Then each tampering the issue lists and each row of OAR.md §8.2, made the
/// way a forger would (the bundle's framing intact, its end item
/// recounted): both reach the same verdict, name the same failing check
/// and the same first bad record; both accept what §0 says a bundle alone
/// cannot show, and both catch the cut tail against a kept checkpoint.
fn the_independent_verifier_agrees(
    app: &TestAppliance,
    bundle: &Path,
    pubkey: &Path,
    sios_said: &str,
) {
    let Some(independent) = IndependentVerifier::find() else {
        return;
    };
    let verdict = independent.bundle(bundle, pubkey, &[]);
    assert_eq!(
        verdict.code,
        Some(0),
        "the untouched export: {}",
        verdict.said
    );
    let json = &verdict.json;
    assert_eq!(json["ok"], true, "{}", verdict.said);
    let said = |what, until| {
        said_between(sios_said, what, until).unwrap_or_else(|| {
            panic!("`sios audit verify` said no {what:?}…{until:?}: {sios_said}")
        })
    };
    assert_eq!(
        json["root"].as_str(),
        Some(said("; root ", "\n").trim()),
        "{json}"
    );
    assert_eq!(
        json["records"].to_string(),
        said("OK: ", " record"),
        "{json}"
    );
    assert_eq!(
        json["checkpoints"].to_string(),
        said("), ", " signed checkpoint"),
        "{json}"
    );
    let keys: Vec<&str> = json["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(keys.len(), 2, "the first key and the rotated one: {json}");
    for key in said("keys ", " of log").split(" -> ") {
        assert!(keys.iter().any(|k| k.contains(key)), "key {key} in {json}");
    }

    let work = bundle.parent().expect("bundle dir");
    let tampered = tampered_copies_agree(app, &independent, bundle, pubkey);
    // The same on the conformance sample, whose layout (a checkpoint after
    // nearly every record, as a slow machine's group commit leaves it) this
    // export may not have.
    let sample = source_tree().join("services/audit/verifier-py/conformance");
    tampered_copies_agree(
        app,
        &independent,
        &sample.join("sample.oar"),
        &sample.join("sample.pub"),
    );
    // §8.3: the tail cut back, against the checkpoint kept from the whole.
    let kept = work.join("kept.note");
    let keep = kept.display().to_string();
    let ours = app.audit_verify_json(bundle, pubkey, &["--keep-checkpoint", &keep]);
    assert_eq!(ours.code, Some(0), "{}", ours.said);
    let cut = &tampered
        .iter()
        .find(|(how, _)| how.starts_with("the tail cut"))
        .expect("the cut case")
        .1;
    let path = work.join("cut.oar");
    write_bundle_items(&path, cut);
    let extends = ["--extends", keep.as_str()];
    let theirs = independent.bundle(&path, pubkey, &extends);
    let ours = app.audit_verify_json(&path, pubkey, &extends);
    agree("the tail cut, --extends the whole", &ours, &theirs);
    assert_eq!(ours.json["check"], "X-b", "{}", ours.said);
    // Not a bundle at all: no verdict on any log (exit 2), still JSON.
    let not_a_bundle = work.join("notes.txt");
    std::fs::write(&not_a_bundle, "minutes of the board meeting\n").expect("a text file");
    let ours = app.audit_verify_json(&not_a_bundle, pubkey, &[]);
    assert_eq!(ours.code, Some(2), "{}", ours.said);
    assert_eq!(ours.json["check"], Value::Null, "{}", ours.said);
    assert!(
        ours.said.contains("not a sios audit bundle") && ours.said.contains("notes.txt"),
        "{}",
        ours.said
    );
    // The file itself cut short, and the wrong public key.
    let bytes = std::fs::read(bundle).expect("bundle");
    let short = work.join("short.oar");
    std::fs::write(&short, &bytes[..bytes.len() - 2000]).expect("short bundle");
    let other = work.join("other.pub");
    sios_audit::keys::write_public(
        &other,
        sios_audit::keys::SecretKey::generate("sios/audit/someone-else")
            .expect("a key")
            .public(),
    )
    .expect("other public key");
    for (how, path, key) in [
        ("the file cut short", short.as_path(), pubkey),
        ("the wrong public key", bundle, other.as_path()),
    ] {
        let theirs = independent.bundle(path, key, &[]);
        let ours = app.audit_verify_json(path, key, &[]);
        agree(how, &ours, &theirs);
        assert_eq!(ours.code, Some(1), "{how}: {}", ours.said);
    }
}

/// Each of `tamperings` of `bundle`, written beside the export, checked by
/// both verifiers, which must agree; each is refused, except what OAR.md §0
/// says a bundle alone cannot show. Returns the tampered copies.
fn tampered_copies_agree(
    app: &TestAppliance,
    independent: &IndependentVerifier,
    bundle: &Path,
    pubkey: &Path,
) -> Vec<(&'static str, Vec<Item>)> {
    let path = app.dir.path().join("forged.oar");
    let tampered = tamperings(&bundle_items(bundle));
    for (how, items) in &tampered {
        write_bundle_items(&path, items);
        let theirs = independent.bundle(&path, pubkey, &[]);
        let ours = app.audit_verify_json(&path, pubkey, &[]);
        let how = format!("{how} ({})", bundle.display());
        agree(&how, &ours, &theirs);
        if how.starts_with("a checkpoint removed") || how.starts_with("the tail cut") {
            // OAR.md §0, promise 3: what a bundle alone cannot show.
            assert_eq!(ours.code, Some(0), "{how}: {}", ours.said);
        } else {
            assert_eq!(ours.code, Some(1), "{how}: sios verified it: {}", ours.said);
        }
    }
    tampered
}

/// Both verifiers reach the same verdict: the same exit code, and on
/// failure the same check of OAR.md §8.1 and the same record (§8.2).
fn agree(how: &str, ours: &Verdict, theirs: &Verdict) {
    let context = || {
        format!(
            "{how}:\n  sios: {}\n  independent: {}",
            ours.said, theirs.said
        )
    };
    assert_eq!(ours.code, theirs.code, "{}", context());
    assert_eq!(ours.json["ok"], theirs.json["ok"], "{}", context());
    if ours.json["ok"] == false {
        assert_eq!(ours.json["check"], theirs.json["check"], "{}", context());
        assert_eq!(ours.json["seq"], theirs.json["seq"], "{}", context());
    }
}

/// The record an item holds (a real export's records all decode).
fn record_of(item: &Item) -> Option<sios_audit::record::Record> {
    match item {
        Item::Record(bytes) => Some(sios_audit::record::Record::decode(bytes).expect("a record")),
        _ => None,
    }
}

/// A record that a run of records may pass through: no policy text follows
/// it and it introduces no key (a rotation's hand-over checkpoint must stay).
fn plain_record(item: &Item) -> bool {
    record_of(item).is_some_and(|r| r.policy.is_none() && r.public_key.is_none())
}

/// `items` with the checkpoints inside two runs of plain records taken out:
/// three in a row starting at an event (after record 0), and two in a row in
/// the second half. Where the appliance's group commit put checkpoints is a
/// matter of timing (on a slow machine one follows every record), while the
/// §8.2 rows need records no checkpoint separates. Taking out a checkpoint
/// that a later one covers is what OAR.md §0 says a bundle alone cannot
/// show, so the result still verifies, and `tamperings` checks that it does.
fn with_runs_of_records(items: &[Item]) -> Vec<Item> {
    let mut items = items.to_vec();
    // The records from `first` on, `len` of them, with nothing but
    // checkpoints between, and a checkpoint after the last that covers them:
    // the positions of those checkpoints.
    let inner_checkpoints = |items: &[Item], first: usize, len: usize| -> Option<Vec<usize>> {
        let mut seen = 0;
        let mut inner = Vec::new();
        for (at, item) in items.iter().enumerate().skip(first) {
            match item {
                Item::Record(_) if plain_record(item) => {
                    seen += 1;
                    if seen == len {
                        let covered = items[at..].iter().any(|i| matches!(i, Item::Checkpoint(_)));
                        return covered.then_some(inner);
                    }
                }
                Item::Checkpoint(_) => inner.push(at),
                _ => return None,
            }
        }
        None
    };
    let is_event =
        |item: &Item| record_of(item).is_some_and(|r| r.kind == sios_audit::record::Kind::Event);
    let records: Vec<usize> = (0..items.len())
        .filter(|&i| matches!(items[i], Item::Record(_)))
        .collect();
    let later = records[records.len() / 2..]
        .iter()
        .find_map(|&at| inner_checkpoints(&items, at, 2))
        .expect("two plain records in the second half");
    let earlier = records[1..]
        .iter()
        .filter(|&&at| is_event(&items[at]))
        .find_map(|&at| inner_checkpoints(&items, at, 3))
        .expect("an event and two plain records after it");
    // Both found in the same items: take them out from the end, once each
    // (the runs may overlap), so that no removal moves another.
    let mut gone: Vec<usize> = later.into_iter().chain(earlier).collect();
    gone.sort_unstable();
    gone.dedup();
    for at in gone.into_iter().rev() {
        items.remove(at);
    }
    items
}

/// The changes the issue lists and each row of OAR.md §8.2, made to a real
/// export the way a forger would (framing intact, the end item recounted).
fn tamperings(export: &[Item]) -> Vec<(&'static str, Vec<Item>)> {
    use sios_audit::record::Record;
    let items = &with_runs_of_records(export)[..];
    let positions = |want: fn(&Item) -> bool| -> Vec<usize> {
        (0..items.len()).filter(|&i| want(&items[i])).collect()
    };
    let records = positions(|i| matches!(i, Item::Record(_)));
    let checkpoints = positions(|i| matches!(i, Item::Checkpoint(_)));
    let policies = positions(|i| matches!(i, Item::Policy(_)));
    let decode = |at: usize| record_of(&items[at]).expect("a record");
    // A middle record with a record right after it, and no policy text.
    let mid = *records[records.len() / 2..]
        .iter()
        .find(|&&i| plain_record(&items[i]) && plain_record(&items[i + 1]))
        .expect("two records in a row");
    // An event with two records straight after it (`with_runs_of_records`
    // made sure of one): §8.2's look-ahead rows need a chain no checkpoint
    // interrupts, and an event has no intent or outcome check to trip first.
    let chained = *records[1..]
        .iter()
        .find(|&&i| {
            matches!(decode(i).kind, sios_audit::record::Kind::Event)
                && matches!(items[i + 1], Item::Record(_))
                && matches!(items[i + 2], Item::Record(_))
        })
        .expect("three records in a row");
    let checkpoint = checkpoints[checkpoints.len() / 2];
    let last_checkpoint = *checkpoints.last().expect("a checkpoint");
    let Item::Checkpoint(note) = &items[checkpoint] else {
        unreachable!()
    };
    // Changes one base64 character of `line` of the note, keeping it base64.
    let note_with = |line: usize, from_end: usize| -> Item {
        let mut lines: Vec<String> = note.split('\n').map(str::to_owned).collect();
        let target = &mut lines[line];
        let at = target.len() - from_end;
        let was = target.as_bytes()[at];
        let now = if was == b'A' { "B" } else { "A" };
        target.replace_range(at..at + 1, now);
        Item::Checkpoint(lines.join("\n"))
    };
    let signature_line = note.split('\n').count() - 2; // the note ends with "\n"
    let with = |changes: &[(usize, Item)]| {
        let mut t = items.to_vec();
        for (at, item) in changes {
            t[*at] = item.clone();
        }
        t
    };
    let record_with = |at: usize, change: &dyn Fn(&mut Record)| {
        let mut r = decode(at);
        change(&mut r);
        Item::Record(r.encode())
    };
    let mut out: Vec<(&'static str, Vec<Item>)> = Vec::new();
    out.push((
        "a checkpoint removed inside runs of records",
        items.to_vec(),
    ));

    let mut flipped = items.to_vec();
    if let Item::Record(bytes) = &mut flipped[mid] {
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
    }
    out.push(("a byte flipped in a record", flipped));
    let mut deleted = items.to_vec();
    deleted.remove(mid);
    out.push(("a record deleted", deleted));
    let mut swapped = items.to_vec();
    swapped.swap(mid, mid + 1);
    out.push(("two records swapped", swapped));
    out.push((
        "a checkpoint's signature changed",
        with(&[(checkpoint, note_with(signature_line, 10))]),
    ));
    out.push((
        "a checkpoint's root changed",
        with(&[(checkpoint, note_with(2, 5))]),
    ));
    out.push((
        "a record's link changed",
        with(&[(chained + 1, record_with(chained + 1, &|r| r.prev = [9; 32]))]),
    ));
    out.push((
        "a record's text changed",
        with(&[(chained, record_with(chained, &|r| r.resource.push('x')))]),
    ));
    let last = *records.last().expect("records");
    out.push((
        "the last record changed",
        with(&[(last, record_with(last, &|r| r.resource.push('x')))]),
    ));
    // A record changed and every link after it rewritten, up to the record
    // after the next checkpoint.
    let next_checkpoint = *checkpoints
        .iter()
        .find(|&&c| c > chained)
        .expect("a checkpoint after it");
    let until = *records
        .iter()
        .find(|&&r| r > next_checkpoint)
        .expect("a record after that checkpoint");
    let mut rewritten = with(&[(chained, record_with(chained, &|r| r.resource.push('x')))]);
    let mut prev = match &rewritten[chained] {
        Item::Record(b) => Record::hash_of(b),
        _ => unreachable!(),
    };
    for &at in records.iter().filter(|&&r| r > chained && r <= until) {
        let mut r = decode(at);
        r.prev = prev;
        let bytes = r.encode();
        prev = Record::hash_of(&bytes);
        rewritten[at] = Item::Record(bytes);
    }
    out.push(("records rewritten with their links", rewritten));
    let Item::Checkpoint(size_note) = &items[checkpoint] else {
        unreachable!()
    };
    let size: u64 = size_note
        .lines()
        .nth(1)
        .and_then(|l| l.parse().ok())
        .expect("size");
    out.push((
        "a checkpoint's size changed",
        with(&[(
            checkpoint,
            Item::Checkpoint(size_note.replacen(
                &format!("\n{size}\n"),
                &format!("\n{}\n", size + 1),
                1,
            )),
        )]),
    ));
    let mut repeated = items.to_vec();
    repeated.insert(last_checkpoint + 1, items[last_checkpoint].clone());
    out.push(("the last checkpoint repeated", repeated));
    let mut removed = items.to_vec();
    let before_last = records[records.len() - 2];
    removed.drain(before_last..last_checkpoint);
    out.push(("records removed before the last checkpoint", removed));
    let policy = *policies.first().expect("the export holds a policy text");
    let mut added = items.to_vec();
    added.insert(mid + 1, items[policy].clone());
    out.push(("a policy text added", added));
    out.push((
        "a policy text changed",
        with(&[(
            policy,
            Item::Policy("forbid(principal, action, resource);".into()),
        )]),
    ));
    let mut dropped = items.to_vec();
    dropped.remove(policy);
    out.push(("a policy text removed", dropped));
    // Any checkpoint but a key rotation's hand-over (signed by the old key
    // and the new), which a bundle must keep (OAR.md §6.3): which one falls
    // in the middle depends on how the calls were batched.
    let single_signed: Vec<usize> = checkpoints
        .iter()
        .copied()
        .filter(|&c| match &items[c] {
            Item::Checkpoint(note) => {
                note.lines().filter(|l| l.starts_with('\u{2014}')).count() == 1
            }
            _ => false,
        })
        .collect();
    let mut without = items.to_vec();
    without.remove(single_signed[single_signed.len() / 2]);
    out.push(("a checkpoint removed, the end recounted", without));
    let mut cut = items.to_vec();
    cut.truncate(checkpoints[checkpoints.len() - 2] + 1);
    out.push(("the tail cut back to an earlier checkpoint", cut));
    out
}
