//! Shared by the integration tests: where the workspace's `build/` and catalog
//! are, and the skip-or-fail rule for tests that need them.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::Write as _;
use std::path::{Path, PathBuf};

pub const BRAINS: [&str; 3] = ["text-embedding", "file-type", "voice-activity"];

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn build_dir() -> PathBuf {
    workspace().join("build")
}

pub fn library() -> PathBuf {
    build_dir().join("lib/libonnxruntime.so.1.32.0")
}

pub fn models_dir() -> PathBuf {
    build_dir().join("models")
}

pub fn manifest_path(brain: &str) -> PathBuf {
    workspace().join(format!("brains/catalog/{brain}.toml"))
}

/// True when `CI` is set to something other than "" or "false" (deploy/test.sh
/// exports `CI=""` when it runs outside CI).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false")
}

/// `build/` if it exists. Without it: a loud SKIPPED line and `None` on a
/// developer's machine, a failure in CI (`CI` set), where deploy/setup.sh must
/// have run.
pub fn build_or_skip(test: &str) -> Option<PathBuf> {
    let build = build_dir();
    if build.is_dir() {
        return Some(build);
    }
    assert!(
        !in_ci(),
        "{test}: {} is missing; CI must run deploy/setup.sh before the tests",
        build.display()
    );
    // Straight to the stderr handle: the harness captures `eprintln!` and
    // shows nothing of a passing test.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {test}: {} is absent (run deploy/setup.sh to build it)",
        build.display()
    );
    None
}

/// The reference request and response of `brain`, from `build/fixtures`.
pub struct Fixture {
    pub request: sios_ipc::InferRequest,
    pub outputs: Vec<sios_ipc::Tensor>,
}

pub fn fixture(brain: &str) -> Fixture {
    let path = build_dir().join(format!("fixtures/{brain}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["brain"], brain, "{}", path.display());
    let request = sios_ipc::kserve::parse_request(&doc["request"].to_string()).unwrap();
    let outputs = doc["response"]["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, t)| sios_ipc::kserve::parse_tensor(i, t).unwrap())
        .collect();
    Fixture { request, outputs }
}

/// Asserts `got` equals the reference `want` bit for bit, with a useful
/// message (first differing element, largest difference) when it does not.
pub fn assert_bitwise_equal(brain: &str, got: &[sios_ipc::Tensor], want: &[sios_ipc::Tensor]) {
    use sios_ipc::DataType;
    let names = |ts: &[sios_ipc::Tensor]| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(got), names(want), "{brain}: output names and order");
    for (g, w) in got.iter().zip(want) {
        assert_eq!(
            (g.datatype, &g.shape),
            (w.datatype, &w.shape),
            "{brain}: `{}` type and shape",
            w.name
        );
        if g.data == w.data {
            continue;
        }
        let name = &w.name;
        if w.datatype == DataType::Fp32 {
            let (g, w) = (
                g.to_elements::<f32>().unwrap(),
                w.to_elements::<f32>().unwrap(),
            );
            let differing: Vec<usize> = (0..g.len())
                .filter(|&i| g[i].to_bits() != w[i].to_bits())
                .collect();
            let max_abs = differing
                .iter()
                .map(|&i| (g[i] - w[i]).abs())
                .fold(0f32, f32::max);
            let max_ulps = differing
                .iter()
                .map(|&i| (g[i].to_bits() as i64 - w[i].to_bits() as i64).unsigned_abs())
                .max()
                .unwrap_or(0);
            let first = differing[0];
            panic!(
                "{brain}: `{}` differs from the Python reference in {} of {} elements (first #{first}: {} vs {}; \
                 max |diff| {max_abs:e}, max {max_ulps} ulp)",
                name,
                differing.len(),
                g.len(),
                g[first],
                w[first]
            );
        }
        panic!("{brain}: `{name}` differs from the Python reference");
    }
}
