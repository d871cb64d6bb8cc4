//! A hostile brain, started by the kernel like any other (manifest `program =
//! "sios-hostile-brain"`, same launcher, same sandbox), turns on the kernel
//! over its own channel (fd 4): it calls a brain its manifest does not name,
//! claims another identity in every part of the payload it controls, reads,
//! writes and searches a client's and another brain's memory, sends
//! an operator action down a channel that offers none, and floods the channel
//! with garbage and oversized frames. Each attempt's real outcome comes back
//! in its reply (see `tests/hostile-brain/src/brain.rs`) and is checked here,
//! with the audit log afterwards: the kernel knows the brain by its channel
//! alone, so the claims change nothing, every denial is recorded under
//! `brain:hostile`, the forbidden brain never runs, and a flood costs the
//! hostile brain its channel and nobody else anything.

use sios_e2e::{
    HostileBrain, Options, TestAppliance, bin_dir, ctx, hostile_catalog, require_setup, source_tree,
};
use sios_ipc::memory::{Embedding, PutRequest, Value};
use sios_ipc::{InferRequest, KernelClient, Tensor};
use std::collections::BTreeMap;
use std::path::Path;

/// The real manifests the test needs: the hostile brain's one declared
/// callee, the brain it must not reach, and a bystander that uses its own
/// kernel channel (legal embeds via text-embedding).
const REAL: [&str; 3] = ["router", "text-embedding", "legal"];

/// Writes the test catalog: copies of the real manifests and the hostile one.
fn catalog(dir: &Path) {
    hostile_catalog(
        dir,
        &REAL,
        &HostileBrain {
            name: "hostile",
            purpose: "Test only: a compromised brain that attacks the kernel over its channel.",
            memory_mib: 64,
            calls: &["text-embedding"],
        },
    );
}

fn text(strings: &[&str]) -> InferRequest {
    InferRequest {
        id: None,
        inputs: vec![Tensor::from_strings(
            "text",
            vec![strings.len() as u64],
            strings,
        )],
    }
}

/// Asks the hostile brain to run `phases`; returns attempt → (outcome, detail).
async fn attack(client: &KernelClient, phases: &[&str]) -> BTreeMap<String, (String, String)> {
    let response = client
        .invoke(ctx(), "hostile".into(), text(phases))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("the hostile brain answers as a brain: {e}"));
    let report = response
        .outputs
        .iter()
        .find(|t| t.name == "report")
        .expect("a report");
    let report = report
        .strings()
        .unwrap()
        .iter()
        .map(|line| {
            let line = String::from_utf8_lossy(line);
            let mut parts = line.splitn(3, '\t');
            let attempt = parts.next().unwrap().to_owned();
            let outcome = parts.next().unwrap_or_default().to_owned();
            let detail = parts.next().unwrap_or_default().to_owned();
            (attempt, (outcome, detail))
        })
        .collect();
    // Shown with --nocapture: what the kernel did to each attempt.
    eprintln!("{phases:?}: {report:#?}");
    report
}

fn outcome<'a>(
    report: &'a BTreeMap<String, (String, String)>,
    attempt: &str,
) -> &'a (String, String) {
    report
        .get(attempt)
        .unwrap_or_else(|| panic!("no `{attempt}` in the report: {report:#?}"))
}

/// The kernel still serves everyone else: a client's call, and a bystander
/// brain's call over its own channel (legal asks text-embedding).
async fn others_still_served(client: &KernelClient) {
    for brain in ["text-embedding", "legal"] {
        client
            .invoke(
                ctx(),
                brain.into(),
                text(&["The tenant must pay rent monthly."]),
            )
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("{brain} must keep serving: {e}"));
    }
}

async fn requests(client: &KernelClient, brain: &str) -> u64 {
    client
        .brains(ctx())
        .await
        .unwrap()
        .unwrap()
        .into_iter()
        .find(|b| b.name == brain)
        .unwrap_or_else(|| panic!("no brain {brain}"))
        .requests
}

/// Restarts the hostile brain, which gives it a fresh channel to the kernel.
async fn fresh_channel(client: &KernelClient) {
    let report = client
        .restart(ctx(), "hostile".into())
        .await
        .unwrap()
        .expect("restart the hostile brain");
    assert_eq!(report.state, sios_ipc::ProcessState::Ready, "{report:?}");
}

/// After a flood the channel is gone: every call fails in transport, none
/// reaches the kernel's request path.
fn channel_is_gone(report: &BTreeMap<String, (String, String)>) {
    for attempt in ["call_allowed", "call_forbidden", "claim_in_id"] {
        assert_eq!(outcome(report, attempt).0, "transport", "{report:#?}");
    }
}

#[test]
fn a_hostile_brain_gets_only_its_own_rights_over_its_channel() {
    if !require_setup() {
        return;
    }
    assert!(
        bin_dir().join("sios-hostile-brain").exists(),
        "sios-hostile-brain is missing: `cargo build --workspace --bins` builds it"
    );
    let catalog_dir = tempfile::tempdir().unwrap();
    catalog(catalog_dir.path());
    let mut brains: Vec<&str> = REAL.to_vec();
    brains.push("hostile");
    let mut appliance = TestAppliance::start(Options {
        catalog_dir: Some(catalog_dir.path().to_owned()),
        ..Options::brains(&brains)
    });
    for p in appliance.status().processes {
        assert_eq!(
            p.state,
            sios_ipc::ProcessState::Ready,
            "{p:?}\n{}",
            appliance.log_text()
        );
    }
    // The kernel ran the manifest's program, inside the sandbox every brain gets.
    let out = appliance.sios(&["sandbox", "show", "hostile", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sandbox: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        sandbox["program"]
            .as_str()
            .is_some_and(|p| p.ends_with("/sios-hostile-brain")),
        "{sandbox:#}"
    );
    assert_eq!(sandbox["seccomp_mode"], 2, "{sandbox:#}");
    assert_eq!(sandbox["no_new_privs"], true, "{sandbox:#}");
    assert!(
        sandbox["uid"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u.as_u64() != Some(0)),
        "{sandbox:#}"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = appliance.client().await;

        // 1. Calls: the declared callee answers; the undeclared one is
        //    denied, and claims of another identity change nothing.
        let report = attack(&client, &["calls"]).await;
        let (allowed, detail) = outcome(&report, "call_allowed");
        assert_eq!(allowed, "ok", "{detail}");
        assert!(detail.contains("sentence_embedding"), "{detail}");
        let (forbidden, denial) = outcome(&report, "call_forbidden");
        assert_eq!(forbidden, "denied", "{denial}");
        assert!(
            denial.contains("brain `hostile`") && denial.contains("brain `router`"),
            "{denial}"
        );
        for claim in ["claim_in_id", "claim_in_text"] {
            // Word for word the denial without the claim: same principal,
            // same reason.
            assert_eq!(
                outcome(&report, claim),
                &("denied".to_owned(), denial.clone()),
                "{claim}"
            );
        }
        // A tensor the router does not declare is refused before the policy
        // is even asked; a callee named like a principal is no brain at all.
        let (refused, detail) = outcome(&report, "claim_in_tensor_name");
        assert_eq!(refused, "refused", "{detail}");
        assert!(detail.contains("principal=operator"), "{detail}");
        let (refused, detail) = outcome(&report, "claim_as_callee");
        assert_eq!(refused, "refused", "{detail}");
        assert!(detail.contains("no brain named `brain:router`"), "{detail}");
        assert_eq!(requests(&client, "router").await, 0);

        // 2. Memory: its own namespace is its own; a client's and another
        //    brain's are not, whatever it writes into the item.
        let secret = || PutRequest {
            namespace: "client:ops/secrets".into(),
            key: "plan".into(),
            subject: "ops".into(),
            value: Value::Text("the operator's plan".into()),
            metadata: Default::default(),
            embedding: Some(Embedding(vec![0.6, 0.8])),
        };
        client
            .memory_put(ctx(), secret())
            .await
            .unwrap()
            .expect("the operator writes a client namespace");
        let report = attack(&client, &["memory"]).await;
        for attempt in ["memory_own_put", "memory_own_get"] {
            assert_eq!(outcome(&report, attempt).0, "ok", "{report:#?}");
        }
        assert!(
            outcome(&report, "memory_own_get")
                .1
                .contains("overwritten by a hostile brain")
        );
        for attempt in [
            "memory_read_client",
            "memory_read_brain",
            "memory_write_client",
            "memory_claim_write_client",
            "memory_search_client",
            "memory_search_all",
        ] {
            assert_eq!(
                outcome(&report, attempt).0,
                "denied",
                "{attempt}: {report:#?}"
            );
        }
        // Word for word the plain write's denial: the claim changed nothing.
        assert_eq!(
            outcome(&report, "memory_claim_write_client"),
            outcome(&report, "memory_write_client")
        );
        let item = client
            .memory_get(ctx(), "client:ops/secrets".into(), "plan".into())
            .await
            .unwrap()
            .expect("the client's item is still there");
        assert_eq!(item.value, secret().value, "untouched by the hostile brain");

        // 3. An operator action sent down the brain channel (which offers
        //    none): the kernel does not understand it, drops the channel and
        //    stays up; the brain's calls then fail in transport.
        let report = attack(&client, &["operator", "calls"]).await;
        let (result, detail) = outcome(&report, "operator_shutdown");
        assert_eq!(result, "transport", "{detail}");
        channel_is_gone(&report);
        others_still_served(&client).await;

        // 4. A flood of garbage frames, then 5. a frame announced larger than
        //    any limit, each on a fresh channel: the kernel hangs up on that
        //    channel only.
        for flood in ["garbage", "oversized"] {
            fresh_channel(&client).await;
            let report = attack(&client, &["calls"]).await;
            assert_eq!(outcome(&report, "call_allowed").0, "ok", "{report:#?}");
            let report = attack(&client, &[flood, "calls"]).await;
            let (result, detail) = outcome(&report, &format!("flood_{flood}"));
            assert_eq!(result, "closed", "{flood}: {detail}");
            channel_is_gone(&report);
            others_still_served(&client).await;
        }
        assert_eq!(requests(&client, "router").await, 0, "the router never ran");
        // The kernel answered the hostile brain's own requests all along.
        assert!(requests(&client, "hostile").await >= 5);
    });

    // 6. A reply no frame can carry: the brain's connection to the kernel
    //    breaks while its process lives on. The request fails as lost, and
    //    the kernel restarts the brain rather than leave it unreachable.
    let before = appliance.pid("hostile");
    let broken = runtime.block_on(async {
        let client = appliance.client().await;
        client
            .invoke(ctx(), "hostile".into(), text(&["overlong-reply"]))
            .await
            .unwrap()
    });
    assert!(
        matches!(broken, Err(sios_ipc::InvokeError::Lost { .. })),
        "{broken:?}"
    );
    appliance.wait_for("hostile", "ready again under a new pid", |p| {
        p.state == sios_ipc::ProcessState::Ready && p.pid.is_some_and(|pid| pid != before)
    });
    let report = runtime.block_on(async { attack(&appliance.client().await, &["calls"]).await });
    assert_eq!(outcome(&report, "call_allowed").0, "ok", "{report:#?}");
    // The kernel said which brain's channel it dropped, and why, each time
    // (the socket pair's peer credentials are the kernel's own).
    let log = appliance.log_text();
    // (A reason may run over several lines: match the line that opens it.)
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("brain_channel{brain=hostile}: the peer sent"))
        .collect();
    assert_eq!(
        dropped.len(),
        3,
        "one line per dropped channel: {dropped:#?}"
    );
    assert!(
        dropped.iter().any(|l| l.contains("frame larger than the")),
        "{dropped:#?}"
    );
    appliance.stop();

    let records = sios_e2e::audit_records(&appliance.state_dir);
    // Every request for the router came from the hostile brain's channel,
    // whatever it claimed, and each was denied: intent with the deny
    // decision, then a denied outcome. Four rounds of `calls` reached the
    // policy with the forbidden callee three times each (plain, claim in the
    // id, claim in the text): three before the restart, one after; the
    // rounds after a flood never got through.
    let router: Vec<_> = records
        .iter()
        .filter(|r| r.resource == "brain:router")
        .collect();
    assert!(!router.is_empty());
    for record in &router {
        assert_eq!(record.actor, "brain:hostile", "{record:?}");
    }
    let intents: Vec<_> = router
        .iter()
        .filter(|r| r.kind.name() == "intent")
        .collect();
    assert_eq!(intents.len(), 12, "{router:#?}");
    for intent in &intents {
        assert!(
            format!("{:?}", intent.decision).contains("Deny"),
            "{intent:?}"
        );
    }
    assert_eq!(
        router
            .iter()
            .filter(|r| format!("{:?}", r.kind).contains("Denied"))
            .count(),
        12
    );
    // Its memory attempts on others' namespaces: each denied and recorded
    // under its own identity, never under the one it claimed.
    let memory_denials: Vec<&str> = records
        .iter()
        .filter(|r| r.resource.starts_with("memory:") && format!("{:?}", r.kind).contains("Denied"))
        .map(|r| {
            assert_eq!(r.actor, "brain:hostile", "{r:?}");
            r.resource.as_str()
        })
        .collect();
    assert_eq!(
        memory_denials.len(),
        6,
        "all six refused: {memory_denials:#?}"
    );
    for resource in [
        "memory:brain:legal/notes",         // read another brain's
        "memory:search:client:ops/secrets", // search the client's
        "memory:search:*",                  // search everything
    ] {
        assert!(
            memory_denials.contains(&resource),
            "{resource}: {memory_denials:#?}"
        );
    }
    // No record names a claimed identity as its actor.
    for record in &records {
        assert!(
            !record.actor.contains("operator") && record.actor != "brain:router",
            "{record:?}"
        );
    }
    // The allowed calls are recorded under the same identity.
    assert!(
        records
            .iter()
            .any(|r| r.actor == "brain:hostile" && r.resource == "brain:text-embedding")
    );
}

/// The program a manifest names is looked up only in the kernel's bin
/// directory: a name that is not a file there, or that is a path, stops the
/// appliance before anything starts, with the brain and the program named.
#[test]
fn a_manifest_program_outside_the_bin_dir_or_missing_is_refused() {
    if !require_setup() {
        return;
    }
    for (program, expected) in [
        ("sios-nothing", "names program `sios-nothing`, but"),
        ("../sios-brain", "must be a plain file name"),
        ("/bin/sh", "must be a plain file name"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let catalog_dir = dir.path().join("catalog");
        std::fs::create_dir(&catalog_dir).unwrap();
        catalog(&catalog_dir);
        let manifest = catalog_dir.join("hostile.toml");
        let text = std::fs::read_to_string(&manifest).unwrap().replace(
            "program = \"sios-hostile-brain\"",
            &format!("program = {program:?}"),
        );
        std::fs::write(&manifest, text).unwrap();
        let layout = sios_config::StateLayout::new(dir.path().join("state"));
        for d in [layout.root.clone(), layout.run_dir()] {
            sios_kernel::appliance::create_private_dir(&d).unwrap();
        }
        let mut config = sios_config::Config::default();
        config.paths.catalog_dir = catalog_dir;
        config.paths.models_dir = source_tree().join("build/models");
        config.paths.onnxruntime_lib = source_tree().join("build/lib/libonnxruntime.so.1.32.0");
        config.paths.bin_dir = Some(bin_dir());
        config.brains.enabled = vec!["text-embedding".into(), "hostile".into()];
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime.block_on(async {
            match sios_kernel::appliance::Appliance::prepare(config, layout) {
                Ok(_) => panic!("program {program:?} must be refused"),
                Err(err) => err.to_string(),
            }
        });
        assert!(err.contains(expected), "{program}: {err}");
        assert!(
            err.contains("hostile"),
            "{program}: the brain is named: {err}"
        );
    }
}
