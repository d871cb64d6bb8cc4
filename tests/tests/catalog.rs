//! The shipped catalog: fifty distinct brains, each a real model with a card,
//! all started by default, each answering its own fixture exactly.

use serde_json::Value;
use sios_e2e::{Options, TestAppliance, require_setup, source_tree};
use std::collections::BTreeSet;

fn catalog() -> Vec<sios_manifest::Manifest> {
    sios_manifest::load_catalog(&source_tree().join("brains/catalog")).expect("the catalog loads")
}

#[test]
fn the_catalog_has_25_domain_and_25_operational_brains_each_a_distinct_model_with_a_card() {
    let brains = catalog();
    let domain = brains
        .iter()
        .filter(|m| m.kind == sios_manifest::BrainKind::Domain)
        .count();
    let operational = brains.len() - domain;
    assert_eq!(
        (domain, operational),
        (25, 25),
        "domain and operational brains"
    );
    let hashes: BTreeSet<&str> = brains.iter().map(|m| m.model.sha256.as_str()).collect();
    assert_eq!(hashes.len(), brains.len(), "no two brains share a model");
    for m in &brains {
        assert!(m.purpose.len() > 80, "{}: a one-paragraph purpose", m.name);
        let card = source_tree().join(format!("brains/models/cards/{}.md", m.name));
        let documented = card.exists() || source_tree().join("brains/models/README.md").exists();
        assert!(documented, "{} has a model card", m.name);
    }
}

#[test]
fn the_full_catalog_starts_by_default_and_every_brain_is_listed_ready() {
    if !require_setup() {
        return;
    }
    let names: Vec<String> = catalog().into_iter().map(|m| m.name).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let app = TestAppliance::start(Options::brains(&refs));
    let out = app.sios(&["brain", "list", "--json"]);
    assert!(out.status.success());
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let brains = list["brains"].as_array().unwrap();
    assert_eq!(brains.len(), names.len());
    for b in brains {
        assert_eq!(b["state"], "ready", "{b}");
        for field in ["name", "kind", "state", "model_sha256", "requests"] {
            assert!(!b[field].is_null(), "{field} in {b}");
        }
    }
    // With the screening brains installed, `ask` screens before it routes.
    let out = app.sios(&[
        "ask",
        "--json",
        "The warehouse shipment to Rotterdam is delayed by customs.",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["plan"][0], "safety-screen", "{answer:#}");
    assert_eq!(answer["plan"][1], "pii-screen", "{answer:#}");
    assert_eq!(answer["route"][0][0], "logistics", "{answer:#}");
}

/// A request shaped to a brain's declared inputs: its reference fixture's
/// when that fits, else text for BYTES and zeros for numbers, batch of one.
fn request_for(manifest: &sios_manifest::Manifest) -> sios_ipc::InferRequest {
    let fixture = source_tree().join(format!("build/fixtures/{}.json", manifest.name));
    if let Ok(text) = std::fs::read_to_string(&fixture) {
        let doc: Value = serde_json::from_str(&text).unwrap();
        if let Ok(request) = sios_ipc::kserve::parse_request(&doc["request"].to_string())
            && sios_ipc::tensor::validate(
                &request.inputs,
                &manifest.input_specs(),
                Default::default(),
            )
            .is_ok()
        {
            return request;
        }
    }
    let inputs = manifest
        .input_specs()
        .into_iter()
        .map(|spec| {
            let shape: Vec<u64> = spec
                .shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d as u64 })
                .collect();
            let count = shape.iter().product::<u64>() as usize;
            match spec.datatype {
                sios_ipc::DataType::Bytes => sios_ipc::Tensor::from_strings(
                    spec.name,
                    shape,
                    &vec!["The shipment arrived two days late."; count],
                ),
                sios_ipc::DataType::Fp32 => {
                    sios_ipc::Tensor::from_elements(spec.name, shape, &vec![0.5f32; count])
                }
                sios_ipc::DataType::Int64 => {
                    sios_ipc::Tensor::from_elements(spec.name, shape, &vec![1i64; count])
                }
                sios_ipc::DataType::Int32 => {
                    sios_ipc::Tensor::from_elements(spec.name, shape, &vec![65i32; count])
                }
                other => panic!("{}: no generic request for {other}", manifest.name),
            }
        })
        .collect();
    sios_ipc::InferRequest { id: None, inputs }
}

#[test]
fn every_brain_answers_a_request_shaped_to_its_declared_inputs() {
    if !require_setup() {
        return;
    }
    let manifests = catalog();
    let names: Vec<&str> = manifests.iter().map(|m| m.name.as_str()).collect();
    let app = TestAppliance::start(Options::brains(&names));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = app.client().await;
        for manifest in &manifests {
            let response = client
                .invoke(
                    sios_e2e::ctx(),
                    manifest.name.clone(),
                    request_for(manifest),
                )
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{}: {e}", manifest.name));
            let declared: Vec<String> = manifest
                .output_specs()
                .into_iter()
                .map(|s| s.name)
                .collect();
            let got: Vec<String> = response.outputs.iter().map(|t| t.name.clone()).collect();
            assert_eq!(
                got, declared,
                "{} returns its declared outputs",
                manifest.name
            );
        }
    });
}

/// The held-out set of a head: texts and their labels.
fn heldout(brain: &str) -> Vec<(String, String)> {
    let path = source_tree().join(format!("brains/models/data/heldout/{brain}.jsonl"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["text"].as_str().unwrap().to_owned(),
                v["label"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The brain's top label for each text, through the appliance, in batches
/// small enough for a brain's memory limit.
async fn classify(
    client: &sios_ipc::KernelClient,
    manifest: &sios_manifest::Manifest,
    texts: &[String],
) -> Vec<String> {
    let mut labels = Vec::new();
    for batch in texts.chunks(64) {
        labels.extend(classify_batch(client, manifest, batch).await);
    }
    labels
}

async fn classify_batch<S: AsRef<[u8]>>(
    client: &sios_ipc::KernelClient,
    manifest: &sios_manifest::Manifest,
    texts: &[S],
) -> Vec<String> {
    let request = sios_ipc::InferRequest {
        id: None,
        inputs: vec![sios_ipc::Tensor::from_strings(
            "text",
            vec![texts.len() as u64],
            texts,
        )],
    };
    let response = client
        .invoke(sios_e2e::ctx(), manifest.name.clone(), request)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}: {e}", manifest.name));
    let labels = &manifest.labels["probabilities"];
    let probabilities = response.outputs[0].to_elements::<f32>().unwrap();
    probabilities
        .chunks(labels.len())
        .map(|row| {
            let best = (0..row.len()).fold(0, |b, i| if row[i] > row[b] { i } else { b });
            labels[best].clone()
        })
        .collect()
}

fn card(brain: &str) -> Value {
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(source_tree().join("brains/models/cards/heads.json")).unwrap(),
    )
    .unwrap();
    metrics["heads"][brain].clone()
}

#[test]
fn domain_heads_and_the_router_reach_their_stated_held_out_accuracy_and_route_deterministically() {
    if !require_setup() {
        return;
    }
    let manifests = catalog();
    let heads: Vec<&sios_manifest::Manifest> = manifests
        .iter()
        .filter(|m| m.kind == sios_manifest::BrainKind::Domain || m.name == "router")
        .collect();
    let mut names: Vec<&str> = heads.iter().map(|m| m.name.as_str()).collect();
    names.push("text-embedding");
    let app = TestAppliance::start(Options::brains(&names));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let routed_first = runtime.block_on(async {
        let client = app.client().await;
        let mut routing_examples = Vec::new();
        for manifest in heads.iter().filter(|m| m.name != "router") {
            let examples = heldout(&manifest.name);
            let texts: Vec<String> = examples.iter().map(|(t, _)| t.clone()).collect();
            let got = classify(&client, manifest, &texts).await;
            let correct = got.iter().zip(&examples).filter(|(g, (_, want))| *g == want).count();
            let accuracy = correct as f64 / examples.len() as f64;
            let stated = card(&manifest.name);
            eprintln!(
                "{}: held-out accuracy {accuracy:.3} ({correct}/{}); card states {} (guaranteed {})",
                manifest.name,
                examples.len(),
                stated["heldout_accuracy"],
                stated["accuracy_floor"]
            );
            assert!(
                accuracy + 1e-9 >= stated["accuracy_floor"].as_f64().unwrap(),
                "{} below the accuracy its card guarantees",
                manifest.name
            );
            routing_examples.extend(examples.into_iter().map(|(text, _)| (text, manifest.name.clone())));
        }
        // The router, on the same held-out texts labelled by domain.
        let router = heads.iter().find(|m| m.name == "router").unwrap();
        let texts: Vec<String> = routing_examples.iter().map(|(t, _)| t.clone()).collect();
        let routed = classify(&client, router, &texts).await;
        let correct = routed.iter().zip(&routing_examples).filter(|(g, (_, want))| *g == want).count();
        let rate = correct as f64 / texts.len() as f64;
        let stated = card("router");
        eprintln!("router: routes {rate:.3} of {} held-out texts right; card states {}", texts.len(), stated["heldout_accuracy"]);
        assert!(rate + 1e-9 >= stated["accuracy_floor"].as_f64().unwrap());
        (texts, routed)
    });

    // Routing depends only on the input: the same texts route identically
    // after a restart, and with the catalog's files written in another order.
    let (texts, routed) = routed_first;
    let sample: Vec<String> = texts.iter().step_by(37).cloned().collect();
    let expected: Vec<String> = routed.iter().step_by(37).cloned().collect();
    let shuffled = tempfile::tempdir().unwrap();
    for name in names.iter().rev() {
        let from = source_tree().join(format!("brains/catalog/{name}.toml"));
        std::fs::copy(from, shuffled.path().join(format!("{name}.toml"))).unwrap();
    }
    let mut app = app;
    for round in 0..3 {
        let mut again = if round < 2 {
            assert!(app.stop().success());
            TestAppliance::restart_in(app)
        } else {
            drop(app);
            let mut options = Options::brains(&names);
            options.catalog_dir = Some(shuffled.path().to_owned());
            TestAppliance::start(options)
        };
        let router = heads.iter().find(|m| m.name == "router").unwrap();
        let now =
            runtime.block_on(async { classify(&again.client().await, router, &sample).await });
        assert_eq!(now, expected, "routing changed on round {round}");
        if round == 2 {
            assert!(again.stop().success());
            return;
        }
        app = again;
    }
}

/// The verification brain reads a claim and its evidence as two texts
/// (interleaved: claim, evidence, claim, evidence, ...) and, on the held-out
/// pairs, gets at least as many right as its card states, with the card's
/// macro-F1; an odd number of texts is refused, not paired wrongly.
#[test]
fn verification_reads_claim_and_evidence_apart_and_reaches_its_cards_figures() {
    if !require_setup() {
        return;
    }
    let path = source_tree().join("brains/models/data/heldout/verification.jsonl");
    let pairs: Vec<(String, String, String)> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let field = |k: &str| v[k].as_str().unwrap().to_owned();
            (field("claim"), field("evidence"), field("label"))
        })
        .collect();
    let manifest = catalog()
        .into_iter()
        .find(|m| m.name == "verification")
        .unwrap();
    let labels = manifest.labels["probabilities"].clone();
    let app = TestAppliance::start(Options::brains(&["text-embedding", "verification"]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (predicted, odd) = runtime.block_on(async {
        let client = app.client().await;
        let mut predicted = Vec::new();
        for batch in pairs.chunks(32) {
            let texts: Vec<&str> = batch
                .iter()
                .flat_map(|(claim, evidence, _)| [claim.as_str(), evidence.as_str()])
                .collect();
            predicted.extend(classify_batch(&client, &manifest, &texts).await);
        }
        let odd = client
            .invoke(
                sios_e2e::ctx(),
                "verification".into(),
                sios_ipc::InferRequest {
                    id: None,
                    inputs: vec![sios_ipc::Tensor::from_strings(
                        "text",
                        vec![3],
                        &["a claim", "its evidence", "a claim without evidence"],
                    )],
                },
            )
            .await
            .unwrap();
        (predicted, odd)
    });
    assert_eq!(predicted.len(), pairs.len(), "one answer per pair");
    let odd = odd.expect_err("three texts are not pairs");
    // ONNX Runtime's own words, naming the graph's pairing step.
    assert!(
        odd.to_string().contains("verification") && odd.to_string().contains("'pair_up'"),
        "{odd}"
    );

    let correct = predicted
        .iter()
        .zip(&pairs)
        .filter(|(got, (_, _, want))| *got == want)
        .count();
    // Macro-F1 over the three labels.
    let f1 = |label: &String| {
        let tp = predicted
            .iter()
            .zip(&pairs)
            .filter(|(g, p)| *g == label && &p.2 == label)
            .count() as f64;
        let predicted_n = predicted.iter().filter(|g| *g == label).count() as f64;
        let actual_n = pairs.iter().filter(|p| &p.2 == label).count() as f64;
        let (precision, recall) = (tp / predicted_n.max(1.0), tp / actual_n.max(1.0));
        if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        }
    };
    let macro_f1 = labels.iter().map(f1).sum::<f64>() / labels.len() as f64;
    let metrics: Value = serde_json::from_str(
        &std::fs::read_to_string(source_tree().join("brains/models/cards/operational_heads.json"))
            .unwrap(),
    )
    .unwrap();
    let stated = &metrics["heads"]["verification"];
    eprintln!(
        "verification: held-out {correct}/{} right (accuracy {:.3}), macro-F1 {macro_f1:.3}; card states {}/{} ({}), macro-F1 {}",
        pairs.len(),
        correct as f64 / pairs.len() as f64,
        stated["heldout_correct"],
        stated["heldout_examples"],
        stated["heldout_accuracy"],
        stated["heldout_macro_f1"]
    );
    assert_eq!(
        stated["heldout_examples"].as_u64(),
        Some(pairs.len() as u64)
    );
    assert!(
        correct as u64 >= stated["heldout_correct"].as_u64().unwrap(),
        "below the card's held-out figure"
    );
    assert!(macro_f1 + 5e-4 >= stated["heldout_macro_f1"].as_f64().unwrap());
    // Well above chance (1/3): the model reads the pair, not one blurred text.
    assert!(correct as f64 / pairs.len() as f64 >= stated["accuracy_floor"].as_f64().unwrap());
}
