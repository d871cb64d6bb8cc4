//! A brain may call only the brains its manifest names: the kernel knows the
//! caller by the channel it handed the brain, and the default policy permits
//! exactly the manifest's callees. Driven through the kernel's own request
//! path (`Appliance::invoke` with the identity the channel server gives),
//! with real audit and brain processes, so a brain that tried an undeclared
//! call through its channel would meet exactly this.

use sios_config::{Config, StateLayout};
use sios_e2e::{bin_dir, require_setup, source_tree};
use sios_ipc::{
    Embedding, InferRequest, InvokeError, MemoryError, PutRequest, SearchRequest, Tensor, Value,
};
use sios_kernel::appliance::{Appliance, Requester};

/// A state dir, config and runtime for an in-process kernel with `brains`
/// from the source tree's catalog (real audit, memory and brain processes).
fn appliance_setup(
    brains: &[&str],
) -> (
    tempfile::TempDir,
    StateLayout,
    Config,
    tokio::runtime::Runtime,
) {
    let dir = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(dir.path().join("state"));
    let mut config = Config::default();
    config.paths.catalog_dir = source_tree().join("brains/catalog");
    config.paths.models_dir = source_tree().join("build/models");
    config.paths.onnxruntime_lib = source_tree().join("build/lib/libonnxruntime.so.1.32.0");
    config.paths.bin_dir = Some(bin_dir());
    config.brains.enabled = brains.iter().map(|b| b.to_string()).collect();
    for d in [layout.root.clone(), layout.run_dir()] {
        sios_kernel::appliance::create_private_dir(&d).unwrap();
    }
    let runtime = sios_e2e::multi_thread_runtime(2);
    (dir, layout, config, runtime)
}

#[test]
fn a_brain_calling_a_brain_its_manifest_does_not_name_is_denied_and_recorded() {
    if !require_setup() {
        return;
    }
    let (_dir, layout, config, runtime) = appliance_setup(&["text-embedding", "legal", "router"]);
    runtime.block_on(async {
        let (appliance, pending) = Appliance::prepare(config, layout.clone()).unwrap();
        appliance.start(pending).await;
        let request = || InferRequest {
            id: None,
            inputs: vec![Tensor::from_strings(
                "text",
                vec![1],
                &["The rent is due monthly."],
            )],
        };
        let legal = Requester::Brain("legal".into());
        // Declared (legal's manifest: calls = ["text-embedding"]): allowed.
        appliance
            .invoke(&legal, "text-embedding", request())
            .await
            .expect("a declared callee answers");
        // Undeclared: denied by the policy, and the router never runs.
        let denied = appliance.invoke(&legal, "router", request()).await;
        match denied {
            Err(InvokeError::Denied {
                principal, reason, ..
            }) => {
                assert_eq!(principal, "brain `legal`");
                assert!(reason.contains("no policy permits it"), "{reason}");
            }
            other => panic!("an undeclared callee must be denied, got {other:?}"),
        }
        assert_eq!(
            appliance
                .brains()
                .iter()
                .find(|b| b.name == "router")
                .unwrap()
                .requests,
            0
        );
        appliance.stop().await;
    });
    let records = sios_e2e::audit_records(&layout.root);
    let denial: Vec<_> = records
        .iter()
        .filter(|r| r.actor == "brain:legal" && r.resource == "brain:router")
        .collect();
    assert_eq!(
        denial.len(),
        2,
        "an intent with the deny decision and a denied outcome"
    );
    assert_eq!(denial[0].kind.name(), "intent");
    assert!(format!("{:?}", denial[0].decision).contains("Deny"));
    assert!(format!("{:?}", denial[1].kind).contains("Denied"));
}

/// Issue 6 point 6: a brain remembers and recalls through the kernel, as
/// itself. Driven through the same kernel function the brain's channel
/// server calls (`BrainSupport::memory_*` forwards to it with the channel's
/// identity), with the real memory and audit services.
#[test]
fn a_brain_uses_its_own_memory_and_no_one_elses() {
    if !require_setup() {
        return;
    }
    let (_dir, layout, config, runtime) = appliance_setup(&[]);
    runtime.block_on(async {
        let (appliance, pending) = Appliance::prepare(config, layout.clone()).unwrap();
        appliance.start(pending).await;
        let legal = Requester::Brain("legal".into());
        let put = |namespace: &str, key: &str| PutRequest {
            namespace: namespace.into(),
            key: key.into(),
            subject: "case-7".into(),
            value: Value::Text("clause 4 was disputed".into()),
            metadata: Default::default(),
            embedding: Some(Embedding(vec![0.6, 0.8])),
        };
        // Its own namespace: write, read back, find by embedding.
        appliance
            .memory_put(&legal, put("brain:legal/cases", "c7"))
            .await
            .expect("a brain writes its own namespace");
        let item = appliance
            .memory_get(&legal, "brain:legal/cases".into(), "c7".into())
            .await
            .expect("and reads it back");
        assert_eq!(item.value, Value::Text("clause 4 was disputed".into()));
        let search = |namespaces: Option<Vec<String>>| SearchRequest {
            query: Embedding(vec![0.6, 0.8]),
            k: 1,
            namespaces,
            metadata: Default::default(),
            include_values: false,
        };
        let found = appliance
            .memory_search(&legal, search(Some(vec!["brain:legal/cases".into()])))
            .await
            .expect("and searches it");
        assert_eq!(found.hits[0].key, "c7");
        // Another brain's and a client's namespaces are not its own.
        let operator = Requester::Client(sios_ipc::Caller {
            pid: None,
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            groups: Vec::new(),
        });
        appliance
            .memory_put(&operator, put("client:ops/cases", "c7"))
            .await
            .expect("the operator writes a client namespace");
        for namespace in ["client:ops/cases", "brain:clinical/notes"] {
            match appliance
                .memory_get(&legal, namespace.into(), "c7".into())
                .await
            {
                Err(MemoryError::Denied { .. }) => {}
                other => panic!("legal must not read {namespace}: {other:?}"),
            }
        }
        // Searching everything is nobody's own namespace.
        let everywhere = appliance.memory_search(&legal, search(None)).await;
        assert!(
            matches!(everywhere, Err(MemoryError::Denied { .. })),
            "{everywhere:?}"
        );
        appliance.stop().await;
    });
    let records = sios_e2e::audit_records(&layout.root);
    let legal: Vec<_> = records
        .iter()
        .filter(|r| r.actor == "brain:legal")
        .collect();
    assert!(
        legal
            .iter()
            .any(|r| r.resource == "memory:brain:legal/cases" && r.kind.name() == "intent"),
        "the brain's own writes are recorded as its own"
    );
    let denied: Vec<&str> = legal
        .iter()
        .filter(|r| format!("{:?}", r.kind).contains("Denied"))
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(
        denied,
        [
            "memory:client:ops/cases",
            "memory:brain:clinical/notes",
            "memory:search:*"
        ],
        "the three refused requests are on record"
    );
}
