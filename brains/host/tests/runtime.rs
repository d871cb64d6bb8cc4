//! Loading ONNX Runtime: the errors a brain gives when the library is missing
//! or wrong, and the once-per-process rule. A test binary of its own, because
//! the runtime is process-global and these tests need a process where it was
//! never loaded.

mod common;

use sios_brain::{Engine, EngineError, RuntimeError, runtime};
use sios_manifest::{BrainKind, Manifest, ModelFile, TensorSpecToml};

/// One test, in order: each step depends on what the previous ones loaded.
#[test]
fn the_runtime_is_loaded_once_from_an_explicit_path_with_clear_errors() {
    // Before any load: an engine refuses, after verifying its files.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), b"model bytes").unwrap();
    let spec = || TensorSpecToml {
        name: "x".into(),
        datatype: "FP32".into(),
        shape: vec![-1],
    };
    let manifest = Manifest {
        name: "early".into(),
        kind: BrainKind::Operational,
        purpose: "tests".into(),
        model: ModelFile {
            file: "m.onnx".into(),
            sha256: sios_manifest::sha256_file(&dir.path().join("m.onnx")).unwrap(),
        },
        preprocess: None,
        sensitivity: Default::default(),
        labels: Default::default(),
        inputs: vec![spec()],
        outputs: vec![spec()],
        sandbox: Default::default(),
        capabilities: Default::default(),
        program: None,
    };
    assert!(matches!(
        Engine::load(&manifest, dir.path()),
        Err(EngineError::Runtime(RuntimeError::NotInitialised))
    ));

    // A path with nothing there.
    let missing = dir.path().join("libonnxruntime.so.1.32.0");
    let err = runtime::init(&missing).unwrap_err();
    assert!(
        matches!(err, RuntimeError::LibraryMissing { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("run deploy/setup.sh"), "{err}");

    // A file that is not a shared library at all.
    let text = dir.path().join("not-a-library.so");
    std::fs::write(&text, "not ELF").unwrap();
    let err = runtime::init(&text).unwrap_err();
    assert!(
        matches!(err, RuntimeError::LibraryUnusable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("run deploy/setup.sh"), "{err}");

    // A real shared library that is not ONNX Runtime.
    let libz = std::path::Path::new("/lib/x86_64-linux-gnu/libz.so.1");
    if libz.exists() {
        let err = runtime::init(libz).unwrap_err();
        assert!(err.to_string().contains("OrtGetApiBase"), "{err}");
    }
    assert_eq!(
        runtime::loaded_library(),
        None,
        "failed loads leave nothing behind"
    );

    let Some(_) =
        common::build_or_skip("the_runtime_is_loaded_once_from_an_explicit_path_with_clear_errors")
    else {
        return;
    };
    runtime::init(&common::library()).unwrap();
    // Idempotent for the same library, refused for another.
    runtime::init(&common::library()).unwrap();
    let other = common::build_dir().join("lib/libonnxruntime.so");
    let err = runtime::init(&other).unwrap_err();
    assert!(matches!(err, RuntimeError::AlreadyLoaded { .. }), "{err:?}");
    assert!(runtime::environment().is_ok());
}
