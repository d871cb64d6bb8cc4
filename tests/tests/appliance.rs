//! The appliance end to end: real kernel, real audit and memory services,
//! real brain processes running ONNX Runtime, real sockets, temp state dirs.
//!
//! Each test starts its own appliance. What each proves is in its name.

use serde_json::{Value, json};
use sios_e2e::{
    FIXTURE_BRAINS, Options, TestAppliance, assert_same_outputs, ctx, fixture, fixture_request,
    is_zombie_or_gone, json_text, require_setup,
};
use sios_ipc::{InvokeError, ProcessState, Role};
use std::io::Write as _;
use std::os::unix::net::UnixStream;
use std::time::Duration;

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_brain_answers_exactly_as_python_onnxruntime_does() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&FIXTURE_BRAINS));
    let status = app.status();
    let roles: Vec<(&str, Role, ProcessState)> = status
        .processes
        .iter()
        .map(|p| (p.name.as_str(), p.role, p.state))
        .collect();
    assert_eq!(roles[0], ("kernel", Role::Kernel, ProcessState::Ready));
    assert_eq!(roles[1], ("audit", Role::Audit, ProcessState::Ready));
    assert_eq!(roles[2], ("memory", Role::Memory, ProcessState::Ready));
    assert_eq!(roles.len(), 3 + FIXTURE_BRAINS.len(), "{roles:?}");

    for brain in FIXTURE_BRAINS {
        let fixture = fixture(brain);
        let out = app.sios_with_stdin(
            &["invoke", brain, "--input", "-"],
            Some(&json_text(&fixture.request)),
        );
        assert!(out.status.success(), "invoke {brain}: {}", stderr(&out));
        let response: Value = serde_json::from_slice(&out.stdout).expect("response JSON");
        assert_eq!(response["model_name"], brain);
        assert_same_outputs(&response, &fixture.response);
    }
    let status = app.status();
    for brain in FIXTURE_BRAINS {
        let p = status.processes.iter().find(|p| p.name == brain).unwrap();
        assert_eq!(p.requests, 1, "{brain} served exactly one request");
    }
    // The kernel timed each of those calls, stage by stage.
    let timings = app.invoke_timings();
    for stage in [
        &timings.decided,
        &timings.intent_recorded,
        &timings.brain_answered,
        &timings.outcome_recorded,
    ] {
        assert_eq!(stage.count(), FIXTURE_BRAINS.len() as u64, "{timings:?}");
    }
}

#[test]
fn the_services_are_separate_processes_owning_their_own_redb_files() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let pids = app.pids();
    let mut unique = pids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        pids.len(),
        "every process has its own pid: {pids:?}"
    );
    for service in ["audit", "memory"] {
        let mut pid = app.pid(service);
        let mut exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if exe.ends_with("sios-launch") {
            // Sandboxed (as root): the kernel supervises the launcher, and the
            // service runs as its only child.
            let [child] = children(pid)[..] else {
                panic!("the launcher {pid} has one child")
            };
            pid = child;
            exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        }
        assert!(
            exe.ends_with(format!("sios-{service}")),
            "{service} runs {}",
            exe.display()
        );
        assert!(
            app.state_dir
                .join(format!("{service}/{service}.redb"))
                .exists()
        );
    }
    let state_mode = std::fs::metadata(&app.state_dir).unwrap();
    let run_mode = std::fs::metadata(app.state_dir.join("run")).unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(state_mode.permissions().mode() & 0o777, 0o700);
    assert_eq!(run_mode.permissions().mode() & 0o777, 0o700);

    assert!(app.stop().success(), "graceful stop exits 0");
    // The kernel recorded every process becoming ready, in start order.
    let events = sios_e2e::audit_records(&app.state_dir);
    let ready: Vec<&str> = events
        .iter()
        .filter(|e| e.action == "process.ready")
        .map(|e| e.resource.as_str())
        .collect();
    assert_eq!(
        ready,
        ["process:audit", "process:memory", "process:voice-activity"],
        "started in order: audit, memory, brains"
    );
    let stopped: Vec<&str> = events
        .iter()
        .filter(|e| e.action == "process.stopped")
        .map(|e| e.resource.as_str())
        .collect();
    assert_eq!(
        stopped,
        ["process:voice-activity", "process:memory"],
        "stopped in reverse order: brains, memory, then audit (which cannot record its own stop)"
    );
    for pid in pids {
        assert!(is_zombie_or_gone(pid), "pid {pid} still running after stop");
    }
}

#[test]
fn ctrl_c_stops_every_process_in_order_and_each_stop_is_recorded() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let pids = app.pids();
    // Every process the kernel started is in a group of its own: Ctrl-C
    // reaches the kernel alone, which stops the others in reverse start
    // order, the audit service last, so that it can record every stop.
    let kernel_group =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(app.pid("kernel") as i32))).unwrap();
    for name in ["audit", "memory", "voice-activity"] {
        let pid = nix::unistd::Pid::from_raw(app.pid(name) as i32);
        assert_ne!(
            nix::unistd::getpgid(Some(pid)).unwrap(),
            kernel_group,
            "{name} shares the kernel's process group: a terminal's Ctrl-C would stop it behind the kernel's back"
        );
    }
    assert!(app.interrupt_group().success(), "Ctrl-C exits 0");
    let stopped: Vec<String> = sios_e2e::audit_records(&app.state_dir)
        .into_iter()
        .filter(|e| e.action == "process.stopped")
        .map(|e| e.resource)
        .collect();
    assert_eq!(
        stopped,
        ["process:voice-activity", "process:memory"],
        "each stop recorded, in reverse start order\n--- kernel log ---\n{}",
        app.log_text()
    );
    for pid in pids {
        assert!(
            is_zombie_or_gone(pid),
            "pid {pid} still running after Ctrl-C"
        );
    }
}

#[test]
fn a_brain_killed_mid_request_is_restarted_and_nobody_else_notices() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["text-embedding", "file-type"]));
    let victim_pid = app.pid("text-embedding");
    let runtime = sios_e2e::multi_thread_runtime(2);
    let (victim_errors, bystander_results) = runtime.block_on(async {
        let client = app.client().await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Keep the victim busy with a long text, from 8 callers at once.
        let long_text = "the quick brown fox jumps over the lazy dog ".repeat(40);
        let request = sios_ipc::InferRequest {
            id: None,
            inputs: vec![sios_ipc::Tensor::from_strings(
                "text",
                vec![1],
                &[long_text],
            )],
        };
        let mut victims = Vec::new();
        for _ in 0..8 {
            let (client, request, stop) = (client.clone(), request.clone(), stop.clone());
            victims.push(tokio::spawn(async move {
                let mut errors = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match client
                        .invoke(ctx(), "text-embedding".into(), request.clone())
                        .await
                    {
                        Ok(Ok(_)) => {}
                        Ok(Err(err)) => errors.push(err),
                        Err(rpc) => panic!("the kernel itself failed: {rpc}"),
                    }
                }
                errors
            }));
        }
        // Meanwhile another brain is asked continuously.
        let bystander = {
            let (client, stop) = (client.clone(), stop.clone());
            let request = fixture_request("file-type");
            tokio::spawn(async move {
                let mut results = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    results.push(
                        client
                            .invoke(ctx(), "file-type".into(), request.clone())
                            .await,
                    );
                }
                results
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(victim_pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut errors = Vec::new();
        for task in victims {
            errors.extend(task.await.unwrap());
        }
        (errors, bystander.await.unwrap())
    });

    // In-flight callers got a clear error: the brain was lost mid-request.
    assert!(
        victim_errors
            .iter()
            .any(|e| matches!(e, InvokeError::Lost { .. })),
        "no caller saw the brain die: {victim_errors:?}"
    );
    for err in &victim_errors {
        assert!(
            matches!(err, InvokeError::Lost { .. } | InvokeError::NotReady { .. }),
            "unexpected error: {err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("text-embedding"),
            "the error names the brain: {text}"
        );
    }
    // The bystander never failed.
    assert!(!bystander_results.is_empty());
    for result in &bystander_results {
        assert!(
            matches!(result, Ok(Ok(_))),
            "file-type failed while text-embedding died: {result:?}"
        );
    }
    // The victim came back, under a new pid, and serves correctly again.
    app.wait_for("text-embedding", "ready again", |p| {
        p.state == ProcessState::Ready && p.pid != Some(victim_pid)
    });
    let status = app.status();
    let victim = status
        .processes
        .iter()
        .find(|p| p.name == "text-embedding")
        .unwrap();
    assert_eq!(victim.restarts, 1);
    let fixture = fixture("text-embedding");
    let out = app.sios_with_stdin(
        &["invoke", "text-embedding", "--input", "-"],
        Some(&json_text(&fixture.request)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_outputs(
        &serde_json::from_slice(&out.stdout).unwrap(),
        &fixture.response,
    );
}

#[test]
fn a_brain_that_keeps_crashing_is_marked_failed_and_the_rest_keep_serving() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&["voice-activity", "file-type"]);
    options.extra_config =
        "[supervisor]\nmax_restarts = 2\nrestart_period_s = 600\nbackoff_initial_ms = 10\n".into();
    let app = TestAppliance::start(options);
    for round in 0..3 {
        app.wait_for("voice-activity", "ready", |p| {
            p.state == ProcessState::Ready
        });
        let pid = app.pid("voice-activity");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        app.wait_for("voice-activity", "restarted or failed", |p| {
            p.pid != Some(pid) || p.state == ProcessState::Failed
        });
        let _ = round;
    }
    app.wait_for("voice-activity", "failed", |p| {
        p.state == ProcessState::Failed
    });
    let status = app.status();
    let failed = status
        .processes
        .iter()
        .find(|p| p.name == "voice-activity")
        .unwrap();
    let why = failed.last_error.clone().unwrap_or_default();
    assert!(
        why.contains("killed by SIGKILL") && why.contains("sios restart voice-activity"),
        "{why}"
    );

    // The rest keep serving.
    let out = app.sios_with_stdin(
        &["invoke", "file-type", "--input", "-"],
        Some(&json_text(&fixture("file-type").request)),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    // The failed one refuses clearly, and `sios wait` reports it.
    let out = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some(&json_text(&fixture("voice-activity").request)),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is failed, not ready"),
        "{}",
        stderr(&out)
    );
    assert_eq!(app.sios(&["wait", "--timeout", "5"]).status.code(), Some(1));

    // An operator brings it back.
    let out = app.sios(&["restart", "voice-activity"]);
    assert!(out.status.success(), "{}", stderr(&out));
    app.wait_for("voice-activity", "ready", |p| {
        p.state == ProcessState::Ready
    });
}

#[test]
fn a_model_whose_hash_does_not_match_its_manifest_is_refused_and_the_rest_start() {
    if !require_setup() {
        return;
    }
    let catalog = tempfile::tempdir().unwrap();
    let source = sios_e2e::source_tree().join("brains/catalog");
    for brain in FIXTURE_BRAINS {
        let text = std::fs::read_to_string(source.join(format!("{brain}.toml"))).unwrap();
        let text = if brain == "file-type" {
            let manifest = sios_manifest::Manifest::load(&source.join("file-type.toml")).unwrap();
            text.replace(&manifest.model.sha256, &"0".repeat(64))
        } else {
            text
        };
        std::fs::write(catalog.path().join(format!("{brain}.toml")), text).unwrap();
    }
    let mut options = Options::brains(&FIXTURE_BRAINS);
    options.catalog_dir = Some(catalog.path().to_owned());
    let app = TestAppliance::start(options);
    let status = app.status();
    for p in &status.processes {
        if p.name == "file-type" {
            assert_eq!(p.state, ProcessState::Failed, "{p:?}");
            assert_eq!(p.restarts, 0, "a hash mismatch is not retried: {p:?}");
            let why = p.last_error.clone().unwrap_or_default();
            assert!(
                why.contains("sha256") && why.contains(&"0".repeat(64)),
                "{why}"
            );
        } else {
            assert_eq!(p.state, ProcessState::Ready, "{p:?}");
        }
    }
    let human = app.sios(&["status"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains("Refusing to load it"));
}

#[test]
fn bad_requests_get_clear_errors_and_the_appliance_keeps_serving() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&["voice-activity"]);
    options.extra_config = "[limits]\nmax_frame_bytes = 65536\n".into();
    let app = TestAppliance::start(options);
    let good = fixture("voice-activity").request;
    let invoke = |brain: &str, request: &Value| {
        app.sios_with_stdin(
            &["invoke", brain, "--input", "-"],
            Some(&json_text(request)),
        )
    };

    let out = invoke("no-such-brain", &good);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no brain named `no-such-brain`"),
        "{}",
        stderr(&out)
    );

    let mut wrong_dtype = good.clone();
    wrong_dtype["inputs"][2] =
        json!({"name": "sr", "datatype": "FP32", "shape": [], "data": [16000.0]});
    // A request at fault exits 2 (sent again unchanged it cannot succeed).
    let out = invoke("voice-activity", &wrong_dtype);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("input `sr` has datatype FP32, but this brain expects INT64"),
        "{}",
        stderr(&out)
    );

    let mut wrong_shape = good.clone();
    wrong_shape["inputs"][1]["shape"] = json!([2, 2, 64]);
    let out = invoke("voice-activity", &wrong_shape);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("input `state` has shape [2, 2, 64]"),
        "{}",
        stderr(&out)
    );

    let not_json = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some("{\"inputs\": ["),
    );
    assert_eq!(not_json.status.code(), Some(2));
    assert!(
        stderr(&not_json).contains("not valid JSON"),
        "{}",
        stderr(&not_json)
    );

    // A request larger than the frame limit: the connection is closed and the
    // kernel says why in its log.
    let mut huge = good.clone();
    huge["inputs"][0] = json!({"name": "input", "datatype": "FP32", "shape": [64, 576], "data": vec![0.0; 64 * 576]});
    let out = invoke("voice-activity", &huge);
    assert_ne!(out.status.code(), Some(0));

    // Garbage and oversized frames straight onto the socket.
    let mut garbage = UnixStream::connect(app.kernel_socket()).unwrap();
    garbage.write_all(&[0, 0, 0, 16]).unwrap();
    garbage.write_all(b"this is not rpc!").unwrap();
    let mut oversized = UnixStream::connect(app.kernel_socket()).unwrap();
    oversized.write_all(&u32::MAX.to_be_bytes()).unwrap();
    // The kernel may hang up as soon as it has read the length, so this write
    // is allowed to fail.
    let _ = oversized.write_all(&[0xAB; 1024]);
    for stream in [&mut garbage, &mut oversized] {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 16];
        let read = std::io::Read::read(stream, &mut buf);
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the kernel closes a misbehaving connection: {read:?}"
        );
    }

    // Still serving, and still correct.
    let out = invoke("voice-activity", &good);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_same_outputs(
        &serde_json::from_slice(&out.stdout).unwrap(),
        &fixture("voice-activity").response,
    );
    let log = app.log_text();
    assert!(log.contains("larger than the 65536-byte limit"), "{log}");
    assert!(log.contains("not a valid sios message"), "{log}");
}

#[test]
fn restarting_one_brain_leaves_every_other_pid_unchanged() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&FIXTURE_BRAINS));
    let before = app.status();
    let out = app.sios(&["restart", "file-type"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("now ready"));
    let after = app.status();
    for (b, a) in before.processes.iter().zip(&after.processes) {
        assert_eq!(b.name, a.name);
        if a.name == "file-type" {
            assert_ne!(a.pid, b.pid, "the restarted brain has a new pid");
            assert_eq!(a.restarts, b.restarts + 1);
            assert_eq!(a.state, ProcessState::Ready);
        } else {
            assert_eq!(
                a.pid, b.pid,
                "{} was touched by restarting file-type",
                a.name
            );
        }
    }
    let unknown = app.sios(&["restart", "no-such"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("no process named `no-such`"));
}

#[test]
fn the_kernel_knows_its_caller_from_the_socket_not_from_the_caller() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let caller = runtime.block_on(async { app.client().await.whoami(ctx()).await.unwrap() });
    assert_eq!(caller.pid, Some(std::process::id() as i32));
    assert_eq!(caller.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(caller.gid, nix::unistd::getegid().as_raw());
    assert!(app.log_text().contains(&format!(
        "client connected pid=Some({})",
        std::process::id()
    )));
}

#[test]
fn down_stops_everything_and_a_second_kernel_on_the_same_state_dir_is_refused() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    // A second kernel on the same state directory refuses to start.
    let second = app.sios(&["up"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        stderr(&second).contains("another sios kernel is already running"),
        "{}",
        stderr(&second)
    );

    let pids = app.pids();
    let out = app.sios(&["down"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(app.stop().success());
    for pid in pids {
        assert!(is_zombie_or_gone(pid), "pid {pid} survived `sios down`");
    }
    let out = app.sios(&["status"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "status of a stopped appliance exits 3"
    );
    assert!(stderr(&out).contains("sios is not running"));
}

#[test]
fn operators_disable_enable_and_reload_brains_one_by_one() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity", "file-type"]));
    let list = |app: &TestAppliance| -> Value {
        let out = app.sios(&["brain", "list", "--json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let brains = list(&app);
    let names: Vec<&str> = brains["brains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["file-type", "voice-activity"]);
    for b in brains["brains"].as_array().unwrap() {
        assert_eq!(b["kind"], "operational");
        assert_eq!(b["state"], "ready");
        assert_eq!(b["model_sha256"].as_str().unwrap().len(), 64);
        assert!(b["requests"].is_u64());
    }

    // Disable: stopped, refused with a clear message, the other untouched.
    let other_pid = app.pid("file-type");
    let out = app.sios(&["brain", "disable", "voice-activity"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = app.status();
    let vad = status
        .processes
        .iter()
        .find(|p| p.name == "voice-activity")
        .unwrap();
    assert_eq!((vad.state, vad.pid), (ProcessState::Disabled, None));
    assert_eq!(app.pid("file-type"), other_pid);
    let request = json_text(&fixture("voice-activity").request);
    let out = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some(&request),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("an operator disabled it"),
        "{}",
        stderr(&out)
    );
    // `wait` counts a disabled brain as settled, not failed.
    assert!(app.sios(&["wait", "--timeout", "10"]).status.success());

    // Enable: serving again.
    let out = app.sios(&["brain", "enable", "voice-activity"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some(&request),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Reload: a new pid on the same (re-verified) model.
    let before = app.pid("voice-activity");
    let out = app.sios(&["brain", "reload", "voice-activity"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(app.pid("voice-activity"), before);
    assert_eq!(app.pid("file-type"), other_pid);

    let out = app.sios(&["brain", "disable", "audit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("`audit` is not a brain"),
        "{}",
        stderr(&out)
    );
}

/// `sios brain reload` takes the program from the manifest as well: one
/// naming a program that is not in the bin directory is refused and the
/// running brain keeps serving; put right, the reload starts it anew.
#[test]
fn a_reload_reads_the_program_from_the_manifest() {
    if !require_setup() {
        return;
    }
    let catalog = tempfile::tempdir().expect("temp dir");
    let source = sios_e2e::source_tree().join("brains/catalog/voice-activity.toml");
    let manifest = catalog.path().join("voice-activity.toml");
    let text = std::fs::read_to_string(&source).expect("the voice-activity manifest");
    assert!(
        !text.contains("\nprogram"),
        "the test adds the program key itself"
    );
    std::fs::write(&manifest, &text).expect("test catalog");
    let mut options = Options::brains(&["voice-activity"]);
    options.catalog_dir = Some(catalog.path().to_owned());
    let app = TestAppliance::start(options);
    let before = app.pid("voice-activity");
    let request = json_text(&fixture("voice-activity").request);

    std::fs::write(
        &manifest,
        format!("program = \"sios-no-such-program\"\n{text}"),
    )
    .unwrap();
    let out = app.sios(&["brain", "reload", "voice-activity"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sios-no-such-program"),
        "the refusal names the program: {}",
        stderr(&out)
    );
    assert_eq!(
        app.pid("voice-activity"),
        before,
        "the running brain is untouched"
    );
    let out = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some(&request),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    std::fs::write(&manifest, format!("program = \"sios-brain\"\n{text}")).unwrap();
    let out = app.sios(&["brain", "reload", "voice-activity"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(app.pid("voice-activity"), before);
    let out = app.sios_with_stdin(
        &["invoke", "voice-activity", "--input", "-"],
        Some(&request),
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_disabled_brain_stays_disabled_across_an_appliance_restart() {
    if !require_setup() {
        return;
    }
    const BRAINS: [&str; 2] = ["voice-activity", "file-type"];
    let mut app = TestAppliance::start(Options::brains(&BRAINS));
    // Operators acting at once on different brains: every change succeeds
    // and none is lost from the saved list (one read-modify-write at a time).
    let runtime = sios_e2e::multi_thread_runtime(2);
    runtime.block_on(async {
        let client = app.client().await;
        for disable in [true, false, true] {
            let changes = BRAINS.map(|brain| {
                let client = client.clone();
                tokio::spawn(async move {
                    let ctx = sios_e2e::ctx();
                    let done = if disable {
                        client.brain_disable(ctx, brain.into()).await
                    } else {
                        client.brain_enable(ctx, brain.into()).await
                    };
                    done.expect("answer")
                        .unwrap_or_else(|e| panic!("{brain} (disable: {disable}): {e}"))
                })
            });
            for change in changes {
                change.await.expect("task");
            }
        }
    });
    assert!(app.stop().success());
    let state_dir = app.state_dir.clone();
    let again = TestAppliance::restart_in(app);
    let status = again.status();
    assert_eq!(state_dir, again.state_dir);
    for brain in BRAINS {
        let process = status.processes.iter().find(|p| p.name == brain).unwrap();
        assert_eq!(process.state, ProcessState::Disabled, "{process:?}");
    }
}

/// Mounts a 32 MiB tmpfs on `dir`: a disk the test can fill.
fn mount_small_disk(dir: &std::path::Path) {
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m,mode=0700", "sios-test-disk"])
        .arg(dir)
        .status()
        .expect("run mount");
    assert!(mounted.success(), "mount a tmpfs on {}", dir.display());
}

/// Detaches the small disk when the test ends, however it ends.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("--lazy")
            .arg(&self.0)
            .status();
    }
}

/// Fills the filesystem holding `dir` with one file, to the last byte it
/// takes; returns the file.
fn fill_disk(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0xA5u8; 64 * 1024];
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(err) => {
                assert_eq!(err.raw_os_error(), Some(nix::libc::ENOSPC), "{err}");
                break;
            }
        }
    }
    path
}

/// Runs `attempt` (the i-th try) until it fails, at most 500 times, and
/// checks the refusal: exit 1, naming the cause (ENOSPC), the full disk's
/// directory `dir` and what to do. Returns what it said.
fn first_refusal_on_a_full_disk(
    dir: &std::path::Path,
    attempt: impl FnMut(usize) -> std::process::Output,
) -> String {
    let refused = (0..500)
        .map(attempt)
        .find(|out| !out.status.success())
        .expect("nothing was refused on a full disk");
    let why = stderr(&refused);
    eprintln!("refused: {why}");
    assert_eq!(refused.status.code(), Some(1), "{why}");
    assert!(
        why.contains("No space left on device")
            && why.contains("free space on the disk holding")
            && why.contains(&dir.display().to_string()),
        "the refusal names the cause, the place and what to do: {why}"
    );
    why
}

/// `sios wait` exits 1 and names `name` as degraded.
fn assert_wait_says_degraded(app: &TestAppliance, name: &str) {
    let wait = app.sios(&["wait", "--timeout", "5"]);
    assert_eq!(wait.status.code(), Some(1), "{}", stderr(&wait));
    assert!(
        stderr(&wait).contains(&format!("{name} is degraded")),
        "{}",
        stderr(&wait)
    );
}

/// Waits (at most 15 s) until `sios status` shows `name` ready again.
fn wait_until_ready_again(app: &TestAppliance, name: &str) {
    let give_up = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = app.status();
        let process = status.processes.iter().find(|p| p.name == name).unwrap();
        if process.state == ProcessState::Ready {
            return;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{name} still {process:?} 15 s after space was freed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_disk_shows_in_status_refuses_actions_saying_what_to_do_and_service_resumes_once_space_is_freed()
 {
    if !require_setup()
        || !sios_e2e::require_root("mounting a small filesystem as the state directory")
    {
        return;
    }
    let mut app = TestAppliance::start(Options {
        prepare_state_dir: Some(mount_small_disk),
        ..Options::brains(&["file-type"])
    });
    let _unmount = Unmount(app.state_dir.clone());
    let request = json_text(&fixture("file-type").request);
    let invoke = |app: &TestAppliance| {
        app.sios_with_stdin(&["invoke", "file-type", "--input", "-"], Some(&request))
    };
    let first = invoke(&app);
    assert!(first.status.success(), "{}", stderr(&first));
    let disk = app.status().disk.expect("status reports the disk");
    assert!(
        disk.total_bytes == 32 << 20 && disk.warning.is_none(),
        "{disk:?}"
    );

    let filler = fill_disk(&app.state_dir);
    // Once the audit log must grow, every action is refused, and says why.
    first_refusal_on_a_full_disk(&app.state_dir, |_| invoke(&app));

    // `sios status` shows it (and `app.status` checks it exits 1), and
    // warns of the disk.
    let status = app.status();
    let disk = status.disk.as_ref().expect("status reports the disk");
    assert!(disk.free_bytes < 1 << 20, "{disk:?}");
    let warning = disk.warning.as_deref().unwrap_or_default();
    assert!(
        warning.contains("every action is refused") && warning.contains("free space there"),
        "{disk:?}"
    );
    let audit = status.processes.iter().find(|p| p.name == "audit").unwrap();
    assert_eq!(audit.state, ProcessState::Degraded, "{audit:?}");
    let fault = audit.last_error.as_deref().unwrap_or_default();
    assert!(
        fault.contains("No space left on device")
            && fault.contains("free space on the disk holding"),
        "{fault}"
    );
    let human = app.sios(&["status"]);
    let shown = String::from_utf8_lossy(&human.stdout);
    eprintln!("{shown}");
    assert!(
        shown.contains("degraded")
            && shown.contains("No space left on device")
            && shown.contains(warning),
        "{shown}"
    );
    assert_wait_says_degraded(&app, "audit");

    // Space freed: the audit log reopens by itself, status says so, and
    // actions run again.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until_ready_again(&app, "audit");
    let after = invoke(&app);
    assert!(after.status.success(), "{}", stderr(&after));

    // Nothing acknowledged was lost: the whole log verifies offline.
    let work = app.dir.path().to_owned();
    let pubkey = work.join("operator.pub");
    let bundle = work.join("after-full-disk.oar");
    for args in [
        vec!["keys", "export-public", pubkey.to_str().unwrap()],
        vec!["audit", "export", bundle.to_str().unwrap()],
    ] {
        let out = app.sios(&args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    }
    assert!(app.stop().success(), "the appliance stopped cleanly");
    let verified = app.sios(&[
        "audit",
        "verify",
        bundle.to_str().unwrap(),
        "--pubkey",
        pubkey.to_str().unwrap(),
    ]);
    assert!(verified.status.success(), "{}", stderr(&verified));
}

/// A small disk for the memory service alone: `<state>/memory` on its own
/// 32 MiB tmpfs, the rest of the state directory on the test's disk.
fn mount_small_memory_disk(state_dir: &std::path::Path) {
    let dir = state_dir.join("memory");
    std::fs::create_dir_all(&dir).expect("memory dir");
    mount_small_disk(&dir);
}

/// Memory's disk fills while the audit log's does not: memory alone goes
/// `degraded` in `sios status` with the cause and what to do, its requests
/// are refused saying so, invokes (which need no memory) still run and are
/// recorded, and once space is freed memory serves again with nothing lost.
#[test]
fn a_full_memory_disk_degrades_memory_alone_and_it_resumes_once_space_is_freed() {
    if !require_setup()
        || !sios_e2e::require_root("mounting a small filesystem for the memory service")
    {
        return;
    }
    let app = TestAppliance::start(Options {
        prepare_state_dir: Some(mount_small_memory_disk),
        ..Options::brains(&["file-type"])
    });
    let memory_dir = app.state_dir.join("memory");
    let _unmount = Unmount(memory_dir.clone());
    let ns = "client:ops/notes";
    let value = "x".repeat(4096);
    let put = |app: &TestAppliance, key: &str| {
        app.sios(&sios_e2e::memory_put_args(ns, "alice", key, &value, &[]))
    };
    let kept = put(&app, "kept");
    assert!(kept.status.success(), "{}", stderr(&kept));

    let filler = fill_disk(&memory_dir);
    first_refusal_on_a_full_disk(&memory_dir, |i| put(&app, &format!("more-{i}")));

    // Memory alone is degraded; `app.status` checks that status exits 1.
    let status = app.status();
    let state_of = |name: &str| {
        status
            .processes
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("{name} in status"))
            .clone()
    };
    let memory = state_of("memory");
    assert_eq!(memory.state, ProcessState::Degraded, "{memory:?}");
    let fault = memory.last_error.as_deref().unwrap_or_default();
    assert!(
        fault.contains("No space left on device") && fault.contains("memory is closed"),
        "{fault}"
    );
    for name in ["audit", "file-type"] {
        assert_eq!(state_of(name).state, ProcessState::Ready, "{name}");
    }
    assert_wait_says_degraded(&app, "memory");
    // The rest of the appliance serves, and records.
    let request = json_text(&fixture("file-type").request);
    let invoked = app.sios_with_stdin(&["invoke", "file-type", "--input", "-"], Some(&request));
    assert!(invoked.status.success(), "{}", stderr(&invoked));

    // Space freed: memory reopens by itself and what it held is all there.
    std::fs::remove_file(&filler).expect("remove the filler");
    wait_until_ready_again(&app, "memory");
    let got = app.sios(&["memory", "get", "--namespace", ns, "kept"]);
    assert!(got.status.success(), "{}", stderr(&got));
    assert!(
        String::from_utf8_lossy(&got.stdout).contains(&"x".repeat(4096)),
        "the item stored before the disk filled is intact"
    );
    let again = put(&app, "after");
    assert!(again.status.success(), "{}", stderr(&again));
}

/// How often each idle state that halts a CPU (exit latency above 0 µs) has
/// been entered, over all CPUs; `None` without cpuidle.
fn halting_idle_entries() -> Option<u64> {
    let mut total = None;
    for cpu in std::fs::read_dir("/sys/devices/system/cpu").ok()?.flatten() {
        let Ok(states) = std::fs::read_dir(cpu.path().join("cpuidle")) else {
            continue;
        };
        for state in states.flatten() {
            let read = |f: &str| std::fs::read_to_string(state.path().join(f)).ok();
            let latency: u64 = read("latency")?.trim().parse().ok()?;
            if latency > 0 {
                let usage: u64 = read("usage")?.trim().parse().ok()?;
                *total.get_or_insert(0) += usage;
            }
        }
    }
    total
}

/// Whether process `pid` has /dev/cpu_dma_latency open.
fn holds_cpu_dma_latency(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| target == std::path::Path::new("/dev/cpu_dma_latency"))
        })
}

/// `[performance] low_latency_idle = true`: the kernel holds 0 µs on
/// /dev/cpu_dma_latency for as long as it runs, `sios status` says so, and
/// while it is held no CPU enters an idle state that halts it.
#[test]
fn low_latency_idle_holds_the_cpus_polling_while_the_appliance_runs() {
    if !require_setup() || !sios_e2e::require_root("holding /dev/cpu_dma_latency (PM QoS)") {
        return;
    }
    assert!(
        std::path::Path::new("/dev/cpu_dma_latency").exists(),
        "this kernel has no /dev/cpu_dma_latency"
    );
    let mut app = TestAppliance::start(Options {
        extra_config: "[performance]\nlow_latency_idle = true\n".into(),
        ..Options::brains(&["file-type"])
    });
    let status = app.status();
    let said = status.cpu_idle.clone().unwrap_or_default();
    assert!(said.starts_with("polling"), "{said}");
    let shown = String::from_utf8_lossy(&app.sios(&["status"]).stdout).to_string();
    assert!(shown.contains("cpu idle: polling"), "{shown}");
    let kernel = app.pid("kernel");
    let held = holds_cpu_dma_latency(kernel);
    assert!(held, "the kernel holds /dev/cpu_dma_latency open");
    if let Some(before) = halting_idle_entries() {
        std::thread::sleep(Duration::from_millis(300));
        let after = halting_idle_entries().unwrap();
        assert_eq!(after, before, "a CPU halted while polling was held");
    }
    assert!(app.stop().success(), "the appliance stopped cleanly");
}

/// Without `[performance]`, nothing is held and status has no such line.
#[test]
fn by_default_the_machines_own_idle_policy_applies() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["file-type"]));
    assert_eq!(app.status().cpu_idle, None);
    let kernel = app.pid("kernel");
    let held = holds_cpu_dma_latency(kernel);
    assert!(!held);
}

/// The `[Service]` settings of a systemd unit, key → values in order.
fn service_settings(unit: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut settings = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut in_service = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').expect("key=value");
            settings
                .entry(key.to_owned())
                .or_default()
                .push(value.to_owned());
        }
    }
    settings
}

#[test]
fn the_systemd_unit_verifies_and_runs_the_appliance_as_its_settings_say() {
    if !require_setup()
        || !sios_e2e::require_root("running the unit's settings (a private network namespace)")
    {
        return;
    }
    // The unit as shipped, pointed at this checkout's binaries.
    let tree = sios_e2e::source_tree();
    let bin = sios_e2e::bin_dir();
    let here = |text: &str| {
        text.replace("/opt/sios/target/release", bin.to_str().unwrap())
            .replace("/opt/sios", tree.to_str().unwrap())
    };
    let shipped = std::fs::read_to_string(tree.join("deploy/sios.service")).unwrap();
    let work = tempfile::tempdir().unwrap();
    let unit = here(&shipped).replace("/var/lib/sios", work.path().to_str().unwrap());
    let unit_path = work.path().join("sios.service");
    std::fs::write(&unit_path, &unit).unwrap();

    // systemd's own checker: known keys, valid values, executables there.
    match std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_path)
        .output()
    {
        Ok(out) => assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "systemd-analyze verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out)
        ),
        Err(err) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "systemd-analyze is needed in CI: {err}"
            );
            eprintln!("SKIPPED the systemd-analyze half: {err}");
        }
    }

    // The settings this test carries out below, and that the appliance
    // relies on.
    let settings = service_settings(&shipped);
    let one = |key: &str| -> &str {
        match settings.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{key}: {other:?}"),
        }
    };
    assert_eq!(one("Type"), "notify");
    assert_eq!(one("NotifyAccess"), "main");
    assert_eq!(one("KillMode"), "mixed");
    assert_eq!(one("KillSignal"), "SIGTERM");
    assert_eq!(one("PrivateNetwork"), "yes");
    assert_eq!(one("NoNewPrivileges"), "yes");
    assert_eq!(one("ProtectSystem"), "strict");
    // systemd makes /var/lib/sios (0700) and leaves it writable.
    assert_eq!(one("StateDirectory"), "sios");
    assert_eq!(one("StateDirectoryMode"), "0700");
    // TestAppliance gives the kernel the same variable, naming its own
    // temporary state dir.
    assert_eq!(
        one("Environment"),
        format!("{}=/var/lib/sios", sios_config::STATE_DIR_ENV)
    );
    let argv = |line: &str| -> Vec<String> {
        here(line)
            .trim_start_matches('-')
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };

    // ExecStart as systemd runs it with these settings: in a network
    // namespace holding only loopback, in a mount namespace where the file
    // system is read-only but for the state directory (TestAppliance's, in
    // SIOS_STATE_DIR as the unit's Environment= sets it), with no_new_privs,
    // in a session of its own (TestAppliance starts it in its own process
    // group).
    let mut command: Vec<String> = [
        "unshare",
        "--net",
        "--mount",
        "--propagation",
        "private",
        "setpriv",
        "--no-new-privs",
        "sh",
        "-c",
        "ip link set lo up \
         && mount --bind \"$SIOS_STATE_DIR\" \"$SIOS_STATE_DIR\" \
         && mount -o remount,bind,ro / \
         && exec \"$@\"",
        "sh",
    ]
    .map(str::to_owned)
    .to_vec();
    // systemd's notification socket, as Type=notify gives the main process.
    let notify_path = work.path().join("notify");
    let service_manager = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    service_manager
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let notified = || {
        let mut buf = [0u8; 512];
        let n = service_manager.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    command.extend([
        "env".into(),
        format!("NOTIFY_SOCKET={}", notify_path.display()),
    ]);
    command.extend(argv(one("ExecStart")));
    // The unit runs the default catalog; one brain proves the same here.
    let mut app = TestAppliance::start(Options {
        kernel_command: Some(command),
        ..Options::brains(&["file-type"])
    });
    // The started kernel is in the namespace and under no_new_privs.
    let kernel = app.pid("kernel");
    let own = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
    assert_ne!(
        own(&kernel.to_string()),
        own("self"),
        "the kernel runs in a network namespace of its own"
    );
    let proc_status = std::fs::read_to_string(format!("/proc/{kernel}/status")).unwrap();
    assert!(
        proc_status.contains("NoNewPrivs:\t1"),
        "the kernel runs with no_new_privs"
    );
    let mounts = std::fs::read_to_string(format!("/proc/{kernel}/mountinfo")).unwrap();
    let options_of = |point: &str| sios_e2e::mount_options(&mounts, point);
    assert!(
        options_of("/").starts_with("ro"),
        "the file system is read-only for the kernel"
    );
    assert!(
        options_of(app.state_dir.to_str().unwrap()).starts_with("rw"),
        "the state directory is writable for the kernel"
    );

    // Started, as systemd learns it: once every process is ready.
    assert!(!settings.contains_key("ExecStartPost"));
    assert_eq!(notified(), "READY=1\nSTATUS=4 of 4 processes ready");
    let request = json_text(&fixture("file-type").request);
    let out = app.sios_with_stdin(&["invoke", "file-type", "--input", "-"], Some(&request));
    assert!(out.status.success(), "{}", stderr(&out));

    // `systemctl stop` with KillMode=mixed: SIGTERM to the main process
    // alone. It must leave nothing for the SIGKILL that follows, and every
    // stop must be recorded.
    let pids = app.pids();
    assert!(app.stop().success(), "the kernel exits 0 on SIGTERM");
    assert_eq!(notified(), "STOPPING=1\nSTATUS=stopping: SIGTERM");
    for pid in pids {
        assert!(is_zombie_or_gone(pid), "pid {pid} outlived the kernel");
    }
    let stopped: Vec<String> = sios_e2e::audit_records(&app.state_dir)
        .into_iter()
        .filter(|e| e.action == "process.stopped")
        .map(|e| e.resource)
        .collect();
    assert_eq!(stopped, ["process:file-type", "process:memory"]);
}

#[test]
fn a_wedged_service_shows_as_degraded_until_it_answers_again() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["file-type"]));
    // Stopped (as a hung process would be), it answers nothing. Sandboxed,
    // the service runs below the pid the kernel started (its launcher).
    let audit = with_descendants(app.pid("audit"));
    let signal_all = |signal| {
        for &pid in &audit {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
        }
    };
    signal_all(nix::sys::signal::Signal::SIGSTOP);
    let status = app.status();
    signal_all(nix::sys::signal::Signal::SIGCONT);
    let wedged = status.processes.iter().find(|p| p.name == "audit").unwrap();
    assert_eq!(wedged.state, ProcessState::Degraded, "{wedged:?}");
    let why = wedged.last_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("did not answer its health check") && why.contains("`sios restart audit`"),
        "{why}"
    );
    // The others were not held up by it.
    for p in status.processes.iter().filter(|p| p.name != "audit") {
        assert_eq!(p.state, ProcessState::Ready, "{p:?}");
    }
    let status = app.status();
    let audit = status.processes.iter().find(|p| p.name == "audit").unwrap();
    assert_eq!(audit.state, ProcessState::Ready, "{audit:?}");
}

/// The processes `pid` started (its main thread's children).
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .map(|child| child.parse().expect("a pid"))
        .collect()
}

/// `root` and every process below it, parents first.
fn with_descendants(root: u32) -> Vec<u32> {
    let mut family = vec![root];
    let mut i = 0;
    while i < family.len() {
        family.extend(children(family[i]));
        i += 1;
    }
    family
}
