//! The catalog (brains/catalog/*.toml) parses, and pins exactly the digests
//! the reproducible model build pins (brains/models/SHA256SUMS). Needs no
//! `build/`.

mod common;

use std::collections::HashMap;

#[test]
fn every_catalog_manifest_pins_the_digest_the_model_build_pins() {
    let catalog = sios_manifest::load_catalog(&common::workspace().join("brains/catalog")).unwrap();
    let names: Vec<&str> = catalog.iter().map(|m| m.name.as_str()).collect();
    for brain in common::BRAINS {
        assert!(
            names.contains(&brain),
            "{brain} missing from the catalog: {names:?}"
        );
    }
    let sums =
        std::fs::read_to_string(common::workspace().join("brains/models/SHA256SUMS")).unwrap();
    let pinned: HashMap<&str, &str> = sums
        .lines()
        .filter_map(|line| line.split_once("  "))
        .map(|(digest, file)| (file, digest))
        .collect();
    for manifest in &catalog {
        for file in std::iter::once(&manifest.model).chain(manifest.tokenizer()) {
            assert_eq!(
                pinned.get(file.file.as_str()),
                Some(&file.sha256.as_str()),
                "{}: {} is not pinned to the same digest in brains/models/SHA256SUMS",
                manifest.name,
                file.file
            );
        }
    }
}
