//! A client that gives up cannot cut an action short (OAR.md §5: every
//! intent gets its outcome). tarpc drops a request's handler when the client
//! cancels it, when its deadline passes, or when the connection closes; the
//! kernel runs each request on its own task so that the action still runs to
//! its outcome record and only the reply goes unread.
//!
//! The brain is frozen (SIGSTOP) so that each request is surely past its
//! intent record and waiting on the brain when its client gives up, in the
//! three ways a client can: its deadline passes, it cancels, and its process
//! is killed. Once the brain is thawed, every intent must get an `ok`
//! outcome with the brain's outputs while the appliance keeps running.

use serde_json::Value;
use sios_e2e::{
    Options, TestAppliance, ctx, fixture, fixture_request, json_text, process_tree, require_setup,
    signal,
};
use sios_ipc::transport;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sios_e2e::expect_success as ok;

const BRAIN: &str = "file-type";
/// How long each client waits before giving up on the frozen brain.
const PATIENCE: Duration = Duration::from_millis(300);

/// The log's invoke intents and, for each, its outcome if it has one.
fn invokes(app: &TestAppliance) -> Vec<(Value, Option<Value>)> {
    let records: Vec<Value> = ok(
        &app.sios(&["audit", "tail", "100000", "--json"]),
        "audit tail",
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
    .collect();
    records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["action"] == "invoke")
        .map(|intent| {
            let outcome = records
                .iter()
                .find(|r| r["kind"] == "outcome" && r["intent_seq"] == intent["seq"]);
            (intent.clone(), outcome.cloned())
        })
        .collect()
}

/// Polls the log until `done` holds for its invokes, or panics after 30 s
/// with `what` and the invokes seen.
fn wait_for_invokes(
    app: &TestAppliance,
    what: &str,
    done: impl Fn(&[(Value, Option<Value>)]) -> bool,
) -> Vec<(Value, Option<Value>)> {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let seen = invokes(app);
        if done(&seen) {
            return seen;
        }
        assert!(
            Instant::now() < give_up,
            "{what}; the log's invokes: {seen:#?}\n--- kernel log ---\n{}",
            app.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_action_whose_client_gives_up_still_runs_to_its_outcome_record() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&[BRAIN]));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let brain = process_tree(app.pid(BRAIN));
    for &pid in &brain {
        signal(pid, Signal::SIGSTOP);
    }

    runtime.block_on(async {
        let client = app.client().await;
        // 1. The request's deadline passes.
        let expired = client
            .invoke(
                transport::context_with_timeout(PATIENCE),
                BRAIN.into(),
                fixture_request(BRAIN),
            )
            .await;
        assert!(
            matches!(expired, Err(tarpc::client::RpcError::DeadlineExceeded)),
            "a frozen brain cannot answer within the deadline: {expired:?}"
        );
        // 2. The client cancels: dropping the call sends tarpc's Cancel.
        let cancelled = tokio::time::timeout(
            PATIENCE,
            client.invoke(ctx(), BRAIN.into(), fixture_request(BRAIN)),
        )
        .await;
        assert!(
            cancelled.is_err(),
            "the frozen brain answered: {cancelled:?}"
        );
    });

    // 3. The client's process dies with its request in flight.
    let input = app.dir.path().join("request.json");
    std::fs::write(&input, json_text(&fixture(BRAIN).request)).expect("request file");
    let mut cli = app
        .sios_command(&["invoke", BRAIN, "--input", &input.display().to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn sios invoke");
    wait_for_invokes(
        &app,
        "the killed client's intent was never recorded",
        |seen| seen.len() == 3,
    );
    cli.kill().expect("kill the client");
    cli.wait().expect("reap the client");
    std::thread::sleep(PATIENCE);

    for &pid in &brain {
        signal(pid, Signal::SIGCONT);
    }
    let seen = wait_for_invokes(
        &app,
        "an intent whose client gave up never got its outcome: the kernel dropped the action",
        |seen| seen.iter().all(|(_, outcome)| outcome.is_some()),
    );
    assert_eq!(seen.len(), 3, "{seen:#?}");
    for (intent, outcome) in &seen {
        let outcome = outcome.as_ref().expect("checked above");
        assert_eq!(
            outcome["result"], "ok",
            "the brain answered, so the action succeeded: {intent} → {outcome}"
        );
        assert!(
            outcome["outputs"]
                .as_array()
                .is_some_and(|outputs| !outputs.is_empty()),
            "the outcome records the outputs nobody read: {outcome}"
        );
    }

    // The appliance serves on as before.
    let answer = runtime.block_on(async {
        app.client()
            .await
            .invoke(ctx(), BRAIN.into(), fixture_request(BRAIN))
            .await
    });
    assert!(
        matches!(answer, Ok(Ok(_))),
        "a later request is answered: {answer:?}"
    );
}

/// One uid holds at most `[limits] max_connections_per_uid` connections:
/// one more is told why (the CLI prints it and exits 1) and closed, and a
/// closed connection gives its place back. Counted per SO_PEERCRED uid.
#[test]
fn connections_over_the_per_uid_limit_are_told_why_and_closed() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&[]);
    options.extra_config = "[limits]\nmax_connections_per_uid = 3\n".into();
    let app = TestAppliance::start(options);
    let held: Vec<std::os::unix::net::UnixStream> = (0..3)
        .map(|_| std::os::unix::net::UnixStream::connect(app.kernel_socket()).expect("connect"))
        .collect();
    // The kernel accepts in order: the CLI's connection comes after the three.
    let refused = app.sios(&["status"]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("max_connections_per_uid") && stderr.contains("3 connections open"),
        "{stderr}"
    );
    // The memory and audit commands say the same, not that a service is down.
    for args in [
        &["memory", "ls", "-n", "client:ops/x"][..],
        &["audit", "tail"],
    ] {
        let out = app.sios(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("the kernel refused the connection")
                && stderr.contains("max_connections_per_uid")
                && !stderr.contains("unavailable"),
            "{args:?}: {stderr}"
        );
    }
    // A client reconnecting in a loop past its limit: only a few of its
    // refused connections are held to be told why (MAX_EXPLAINING_PER_UID,
    // 8), the rest closed at once, so the kernel's descriptors stay bounded.
    let kernel_fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", app.kernel_pid()))
            .expect("the kernel's descriptors")
            .count()
    };
    let before = kernel_fds();
    let flood: Vec<std::os::unix::net::UnixStream> = (0..64)
        .map(|_| std::os::unix::net::UnixStream::connect(app.kernel_socket()).expect("connect"))
        .collect();
    // Well inside the 1 s a refused connection is held, long enough for the
    // kernel to accept all 64.
    std::thread::sleep(Duration::from_millis(300));
    let during = kernel_fds();
    assert!(
        during <= before + 8 + 4,
        "64 refused connections took {} more descriptors in the kernel",
        during.saturating_sub(before)
    );
    // A command refused meanwhile, told why or closed unanswered, still
    // points at the limit.
    let flooded = app.sios(&["status"]);
    let stderr = String::from_utf8_lossy(&flooded.stderr);
    assert_eq!(flooded.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("max_connections_per_uid"), "{stderr}");
    drop(flood);
    drop(held);
    // Closing is noticed by the kernel's connection tasks: poll until the
    // places are free (a failure here means they never came back).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = app.sios(&["status"]);
        if status.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "closed connections never gave their places back: {}",
            String::from_utf8_lossy(&status.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
