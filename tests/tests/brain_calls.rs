//! A brain may call only the brains its manifest names: the kernel knows the
//! caller by the channel it handed the brain, and the default policy permits
//! exactly the manifest's callees. Driven through the kernel's own request
//! path (`Appliance::invoke` with the identity the channel server gives),
//! with real audit and brain processes, so a brain that tried an undeclared
//! call through its channel would meet exactly this.

use sios_config::{Config, StateLayout};
use sios_e2e::{bin_dir, require_setup, source_tree};
use sios_ipc::{InferRequest, InvokeError, Tensor};
use sios_kernel::appliance::{Appliance, Requester};

#[test]
fn a_brain_calling_a_brain_its_manifest_does_not_name_is_denied_and_recorded() {
    if !require_setup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = StateLayout::new(dir.path().join("state"));
    let mut config = Config::default();
    config.paths.catalog_dir = source_tree().join("brains/catalog");
    config.paths.models_dir = source_tree().join("build/models");
    config.paths.onnxruntime_lib = source_tree().join("build/lib/libonnxruntime.so.1.32.0");
    config.paths.bin_dir = Some(bin_dir());
    config.brains.enabled = vec!["text-embedding".into(), "legal".into(), "router".into()];
    for d in [layout.root.clone(), layout.run_dir()] {
        sios_kernel::appliance::create_private_dir(&d).unwrap();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
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
