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
