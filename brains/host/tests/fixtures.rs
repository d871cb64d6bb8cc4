//! Every catalog brain, loaded with `Engine` exactly as `sios-brain` loads it,
//! answers its reference request (`build/fixtures/<brain>.json`, computed by
//! Python onnxruntime 1.32.0 with the same session settings) with the same
//! outputs, bit for bit.

mod common;

use sios_brain::{Engine, runtime};
use sios_manifest::Manifest;
use std::time::Instant;

fn check(brain: &str) {
    let Some(_) = common::build_or_skip(brain) else {
        return;
    };
    runtime::init(&common::library()).unwrap();
    let manifest = Manifest::load(&common::manifest_path(brain)).unwrap();
    let started = Instant::now();
    let mut engine = Engine::load(&manifest, &common::models_dir()).unwrap();
    let loaded = started.elapsed();
    let fixture = common::fixture(brain);

    let started = Instant::now();
    let outputs = engine.infer(&fixture.request.inputs).unwrap().outputs;
    let first = started.elapsed();
    common::assert_bitwise_equal(brain, &outputs, &fixture.outputs);
    // Twice: a second run (warm caches, reused buffers) must not drift either.
    let started = Instant::now();
    let again = engine.infer(&fixture.request.inputs).unwrap().outputs;
    let second = started.elapsed();
    common::assert_bitwise_equal(brain, &again, &fixture.outputs);
    eprintln!(
        "{brain}: Engine::load {loaded:?}, first infer {first:?}, second {second:?}: bitwise equal"
    );
}

#[test]
fn text_embedding_matches_the_reference_bit_for_bit() {
    check("text-embedding");
}

#[test]
fn file_type_matches_the_reference_bit_for_bit() {
    check("file-type");
}

#[test]
fn voice_activity_matches_the_reference_bit_for_bit() {
    check("voice-activity");
}
