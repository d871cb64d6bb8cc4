//! The `sios-brain` binary, started the way the kernel starts it: listening
//! socket at descriptor 3 with `SIOS_LISTEN_FD=3`, `ORT_DISABLE_TELEMETRY=1`.
//! Checks that it serves `describe` and `infer` over tarpc, counts requests,
//! refuses bad requests, and that it fails to start with one clear line when
//! it must.

#![allow(unsafe_code)] // one pre_exec hook, documented where it is used

mod common;

use sios_ipc::activation::hand_listener;
use sios_ipc::transport::{DEFAULT_MAX_FRAME_BYTES, client_config, context_with_timeout, framed};
use sios_ipc::{BrainClient, BrainError, InferRequest, Tensor, TensorError};
use sios_manifest::Manifest;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running brain process, killed when dropped.
struct Brain {
    child: Child,
    socket: PathBuf,
    spawned: Instant,
    _dir: tempfile::TempDir,
}

impl Drop for Brain {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The brain binary with its arguments and the kernel's environment, but no
/// socket yet.
fn command(manifest: &Path, library: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sios-brain"));
    command
        .arg("--manifest")
        .arg(manifest)
        .arg("--models-dir")
        .arg(common::models_dir())
        .arg("--onnxruntime")
        .arg(library)
        .env("ORT_DISABLE_TELEMETRY", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    command
}

/// Binds a socket in a fresh directory and arranges for `command` to receive
/// it at descriptor 3. Drop the listener once the child is spawned.
fn hand_socket(command: &mut Command) -> (tempfile::TempDir, PathBuf, UnixListener) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("brain.sock");
    let listener = hand_listener(command, &socket).unwrap();
    (dir, socket, listener)
}

/// Starts `command` with its socket, as the kernel would.
fn spawn(mut command: Command) -> Brain {
    let (dir, socket, listener) = hand_socket(&mut command);
    let spawned = Instant::now();
    let child = command.spawn().unwrap();
    // The child holds the socket now; the parent's copy would only keep it alive.
    drop(listener);
    Brain {
        child,
        socket,
        spawned,
        _dir: dir,
    }
}

async fn connect(brain: &Brain) -> BrainClient {
    let stream = tokio::net::UnixStream::connect(&brain.socket)
        .await
        .unwrap();
    BrainClient::new(client_config(), framed(stream, DEFAULT_MAX_FRAME_BYTES)).spawn()
}

fn ctx() -> tarpc::context::Context {
    context_with_timeout(Duration::from_secs(60))
}

/// `(threads, PSS KiB)` of a running process, from /proc.
fn footprint(pid: u32) -> (u64, u64) {
    let field = |file: &str, key: &str| -> u64 {
        let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap();
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    (field("status", "Threads:"), field("smaps_rollup", "Pss:"))
}

/// Runs a brain that must fail to start; returns the last line of its stderr.
fn failure_line(mut command: Command) -> String {
    let (_dir, _socket, listener) = hand_socket(&mut command);
    let child = command.stderr(Stdio::piped()).spawn().unwrap();
    drop(listener);
    let output = child.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(78),
        "a brain that cannot start exits with EX_CONFIG (78), which the kernel does not retry"
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    stderr.lines().last().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "current_thread")]
async fn serves_each_catalog_brain_and_counts_what_it_served() {
    let Some(_) = common::build_or_skip("serves_each_catalog_brain_and_counts_what_it_served")
    else {
        return;
    };
    for name in common::BRAINS {
        let manifest = Manifest::load(&common::manifest_path(name)).unwrap();
        let brain = spawn(command(&common::manifest_path(name), &common::library()));
        let client = connect(&brain).await;

        // describe() is the kernel's readiness probe: it answers once the model is loaded.
        let info = client.describe(ctx()).await.unwrap();
        let ready = brain.spawned.elapsed();
        assert_eq!(info.name, name);
        assert_eq!(info.pid, brain.child.id());
        assert_eq!(info.model_sha256, manifest.model.sha256);
        assert_eq!(info.inputs, manifest.input_specs());
        assert_eq!(info.outputs, manifest.output_specs());
        assert_eq!(info.requests_served, 0);

        let fixture = common::fixture(name);
        let request = InferRequest {
            id: Some("fixture".into()),
            inputs: fixture.request.inputs.clone(),
        };
        let response = client.infer(ctx(), request).await.unwrap().unwrap();
        assert_eq!(response.id.as_deref(), Some("fixture"));
        assert_eq!(response.model_name, name);
        assert_eq!(response.model_version, manifest.model.sha256);
        common::assert_bitwise_equal(name, &response.outputs, &fixture.outputs);

        let junk = Tensor::from_elements("no-such-input", vec![1], &[0u8]);
        let refused = client
            .infer(
                ctx(),
                InferRequest {
                    id: None,
                    inputs: vec![junk],
                },
            )
            .await
            .unwrap();
        assert!(
            matches!(refused, Err(BrainError::Input(TensorError::Unknown { .. }))),
            "{refused:?}"
        );

        // Several connections and requests at once are all answered.
        let mut answers = Vec::new();
        for _ in 0..4 {
            let client = connect(&brain).await;
            let inputs = fixture.request.inputs.clone();
            answers.push(tokio::spawn(async move {
                client.infer(ctx(), InferRequest { id: None, inputs }).await
            }));
        }
        for answer in answers {
            let outputs = answer.await.unwrap().unwrap().unwrap().outputs;
            common::assert_bitwise_equal(name, &outputs, &fixture.outputs);
        }
        assert_eq!(client.describe(ctx()).await.unwrap().requests_served, 5);

        let (threads, pss_kib) = footprint(brain.child.id());
        assert!(
            threads <= u64::from(manifest.sandbox.max_pids),
            "{name}: {threads} threads, over the manifest's max_pids {}",
            manifest.sandbox.max_pids
        );
        eprintln!(
            "{name}: exec to ready (describe answered) {:.1} ms; {threads} threads; PSS {:.1} MiB (sandbox memory_mib {})",
            ready.as_secs_f64() * 1e3,
            pss_kib as f64 / 1024.0,
            manifest.sandbox.memory_mib
        );
    }
}

/// A reply that no frame could carry is refused with words that say what to
/// do, and the connection (so the kernel's hold on the brain) survives it.
#[tokio::test(flavor = "current_thread")]
async fn a_reply_over_the_frame_limit_is_refused_and_the_connection_lives_on() {
    let Some(_) = common::build_or_skip(
        "a_reply_over_the_frame_limit_is_refused_and_the_connection_lives_on",
    ) else {
        return;
    };
    const LIMIT: usize = 64 * 1024;
    let mut command = command(&common::manifest_path("text-embedding"), &common::library());
    command.arg("--max-frame-bytes").arg(LIMIT.to_string());
    let brain = spawn(command);
    let stream = tokio::net::UnixStream::connect(&brain.socket)
        .await
        .unwrap();
    let client = BrainClient::new(client_config(), framed(stream, LIMIT)).spawn();
    let texts = |n: usize| InferRequest {
        id: None,
        inputs: vec![Tensor::from_strings(
            "text",
            vec![n as u64],
            &vec!["a short sentence"; n],
        )],
    };
    // 64 embeddings of 384 floats: about 98 KB, over the 64 KiB limit.
    let refused = client.infer(ctx(), texts(64)).await.unwrap();
    match refused {
        Err(BrainError::Output { reason, .. }) => assert!(
            reason.contains("frame limit") && reason.contains("fewer inputs"),
            "{reason}"
        ),
        other => panic!("an oversized reply must be refused: {other:?}"),
    }
    let answered = client.infer(ctx(), texts(2)).await.unwrap();
    assert!(answered.is_ok(), "{answered:?}");
}

#[test]
fn refuses_to_start_unless_telemetry_is_disabled() {
    for value in [None, Some("0")] {
        let mut command = command(&common::manifest_path("voice-activity"), &common::library());
        match value {
            None => command.env_remove("ORT_DISABLE_TELEMETRY"),
            Some(v) => command.env("ORT_DISABLE_TELEMETRY", v),
        };
        let line = failure_line(command);
        assert!(
            line.contains("ORT_DISABLE_TELEMETRY=1 is not in the environment"),
            "{line}"
        );
    }
}

#[test]
fn a_missing_runtime_library_says_to_run_setup() {
    let missing = Path::new("/nonexistent/libonnxruntime.so.1.32.0");
    let line = failure_line(command(&common::manifest_path("voice-activity"), missing));
    assert!(
        line.contains("does not exist") && line.contains("deploy/setup.sh"),
        "{line}"
    );
}

#[test]
fn a_model_hash_mismatch_stops_the_brain_with_one_line() {
    let Some(_) = common::build_or_skip("a_model_hash_mismatch_stops_the_brain_with_one_line")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read_to_string(common::manifest_path("voice-activity")).unwrap();
    let pinned = Manifest::load(&common::manifest_path("voice-activity"))
        .unwrap()
        .model
        .sha256;
    let tampered = dir.path().join("voice-activity.toml");
    std::fs::write(&tampered, original.replace(&pinned, &"0".repeat(64))).unwrap();
    let line = failure_line(command(&tampered, &common::library()));
    assert!(
        line.starts_with("sios-brain: brain `voice-activity` cannot start: "),
        "{line}"
    );
    assert!(line.contains("Refusing to load it"), "{line}");
}
