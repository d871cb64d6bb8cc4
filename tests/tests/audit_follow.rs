//! `sios audit tail --follow` on a real appliance: new records appear as
//! they are written; following is one action in the log (one intent when it
//! starts, one outcome when it stops, nothing per poll); a session serves
//! only the client that started it; a shutdown records the outcome of a
//! follow still running before the audit service stops.

use serde_json::Value;
use sios_e2e::{
    Options, TestAppliance, ctx, expect_success as ok, fixture, json_text, require_setup,
};
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Every record, as `sios audit tail --json` prints it.
fn records(app: &TestAppliance) -> Vec<Value> {
    ok(
        &app.sios(&["audit", "tail", "100000", "--json"]),
        "audit tail",
    )
    .lines()
    .map(|l| serde_json::from_str(l).expect("a JSON record per line"))
    .collect()
}

fn follow_intents(records: &[Value]) -> Vec<&Value> {
    records
        .iter()
        .filter(|r| r["kind"] == "intent" && r["resource"] == "audit:follow")
        .collect()
}

fn outcome_of<'a>(records: &'a [Value], intent: &Value) -> Option<&'a Value> {
    records
        .iter()
        .find(|r| r["kind"] == "outcome" && r["intent_seq"] == intent["seq"])
}

/// A running `sios audit tail --follow --json`, its lines read on a thread.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<Value>,
}

impl Follower {
    fn start(app: &TestAppliance, back: &str) -> Follower {
        let mut child = app
            .sios_command(&["audit", "tail", "--follow", "--json", back])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sios audit tail --follow");
        let stdout = child.stdout.take().expect("stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let record = serde_json::from_str(&line).expect("a JSON record per line");
                if send.send(record).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// Waits (up to 20 s) for a line that `wanted` accepts; returns it.
    fn expect(&self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let give_up = Instant::now() + Duration::from_secs(20);
        loop {
            let left = give_up.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(record) if wanted(&record) => return record,
                Ok(_) => {}
                Err(_) => panic!("the follower did not show {what} within 20 s"),
            }
        }
    }

    /// SIGINT (Ctrl-C), then its exit code and standard error.
    fn interrupt(mut self) -> (Option<i32>, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
        self.wait()
    }

    fn wait(&mut self) -> (Option<i32>, String) {
        let status = self.child.wait().expect("follower exit");
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().expect("stderr"), &mut stderr)
            .expect("read stderr");
        (status.code(), stderr)
    }
}

#[test]
fn following_shows_new_records_and_is_one_recorded_action() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let request = app.dir.path().join("request.json");
    std::fs::write(&request, json_text(&fixture("voice-activity").request)).expect("request");
    let request = request.display().to_string();

    // With one record back, the first line is the follow's own intent: the
    // session runs from there on.
    let follower = Follower::start(&app, "1");
    let own = follower.expect("its own intent", |r| r["resource"] == "audit:follow");
    assert_eq!(own["kind"], "intent");
    assert_eq!(own["action"], "audit_read");

    // An action taken now shows up, intent then outcome.
    ok(
        &app.sios(&["invoke", "voice-activity", "--input", &request]),
        "invoke",
    );
    let intent = follower.expect("the invoke's intent", |r| {
        r["kind"] == "intent" && r["action"] == "invoke"
    });
    let outcome = follower.expect("the invoke's outcome", |r| {
        r["kind"] == "outcome" && r["intent_seq"] == intent["seq"]
    });
    assert_eq!(outcome["result"], "ok", "{outcome}");

    // Several polls later (each waits at most 2 s), still one intent for the
    // follow and no outcome: the polls themselves are not recorded.
    std::thread::sleep(Duration::from_secs(5));
    let log = records(&app);
    let follows = follow_intents(&log);
    assert_eq!(follows.len(), 1, "one follow, one intent: {follows:#?}");
    assert!(
        outcome_of(&log, follows[0]).is_none(),
        "a follow still running has no outcome yet"
    );

    // A session serves only the client that started it: this test process
    // (another pid) naming any session number is told there is none.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let client = app.client().await;
        for session in 1..=4 {
            let refused = client
                .audit_follow_next(tarpc::context::current(), session, 10, 0)
                .await
                .expect("the kernel answers");
            let err = refused.expect_err("another client's session must be refused");
            assert!(
                err.to_string()
                    .contains(&format!("no follow session {session} for this client")),
                "{err}"
            );
        }
    });

    // At most MAX_FOLLOWERS at once: with the CLI's running, this process
    // gets the rest; one more is refused, and the refusal is recorded.
    runtime.block_on(async {
        let client = app.client().await;
        let ctx = tarpc::context::current;
        let mut mine = Vec::new();
        for _ in 1..sios_ipc::MAX_FOLLOWERS {
            let started = client.audit_follow_start(ctx(), 0).await.expect("answer");
            mine.push(started.expect("a follow session within the limit").session);
        }
        let refused = client.audit_follow_start(ctx(), 0).await.expect("answer");
        let err = refused.expect_err("one follow session too many");
        assert!(err.to_string().contains("already run"), "{err}");
        for session in mine {
            let summary = client
                .audit_follow_stop(ctx(), session)
                .await
                .expect("answer");
            summary.expect("its owner stops a session");
        }
    });
    let log = records(&app);
    let follows = follow_intents(&log);
    assert_eq!(follows.len(), 1 + sios_ipc::MAX_FOLLOWERS, "{follows:#?}");
    let results: Vec<_> = follows[1..]
        .iter()
        .map(|intent| outcome_of(&log, intent).expect("an outcome")["result"].clone())
        .collect();
    assert_eq!(
        results.iter().filter(|r| *r == "ok").count(),
        sios_ipc::MAX_FOLLOWERS - 1,
        "{results:?}"
    );
    assert_eq!(
        results.iter().filter(|r| *r == "error").count(),
        1,
        "{results:?}"
    );

    // Ctrl-C: the follower ends the session, which records its outcome.
    let (code, stderr) = follower.interrupt();
    assert_eq!(code, Some(0), "Ctrl-C ends a follow cleanly: {stderr}");
    assert!(stderr.contains("records shown"), "{stderr}");
    let log = records(&app);
    let cli_follow = log
        .iter()
        .find(|r| r["seq"] == own["seq"])
        .expect("its intent");
    let ended = outcome_of(&log, cli_follow).expect("the follow's outcome");
    assert_eq!(ended["result"], "ok", "{ended}");
}

#[test]
fn a_shutdown_records_the_outcome_of_a_running_follow() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let mut follower = Follower::start(&app, "1");
    follower.expect("its own intent", |r| r["resource"] == "audit:follow");

    assert!(app.stop().success(), "the appliance stops cleanly");
    // The kernel is gone: the follower says so and fails.
    let (code, stderr) = follower.wait();
    assert_eq!(
        code,
        Some(1),
        "a follow whose appliance stopped fails: {stderr}"
    );
    assert!(
        stderr.contains("shutting down"),
        "the follower says why it stopped: {stderr}"
    );

    let app = TestAppliance::restart_in(app);
    let log = records(&app);
    let follows = follow_intents(&log);
    assert_eq!(follows.len(), 1, "{follows:#?}");
    let ended = outcome_of(&log, follows[0]).expect("an outcome recorded at shutdown");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("shut down"),
        "the outcome says the appliance shut down: {ended}"
    );
}

/// A follower may wait up to `FOLLOW_MAX_WAIT_MS` for records, longer than
/// a shutdown waits for follow sessions to end. The shutdown wakes it, so its
/// outcome is recorded before anything stops, not found later by whatever
/// record the stopping writes.
#[test]
fn a_shutdown_wakes_a_follower_waiting_as_long_as_it_may() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let runtime = sios_e2e::multi_thread_runtime(1);
    let client = runtime.block_on(app.client());
    let session = runtime
        .block_on(client.audit_follow_start(ctx(), 0))
        .expect("answer")
        .expect("a follow session")
        .session;
    let waiting = runtime.spawn(async move {
        client
            .audit_follow_next(ctx(), session, 10, sios_ipc::FOLLOW_MAX_WAIT_MS)
            .await
    });
    // Its request is with the kernel, waiting on a quiet log.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!waiting.is_finished(), "the quiet log keeps it waiting");

    assert!(app.stop().success(), "the appliance stops cleanly");
    drop(runtime.block_on(waiting));

    let app = TestAppliance::restart_in(app);
    let log = records(&app);
    let follows = follow_intents(&log);
    assert_eq!(follows.len(), 1, "{follows:#?}");
    let ended = outcome_of(&log, follows[0]).expect("an outcome recorded at shutdown");
    assert!(
        ended["error"]
            .as_str()
            .unwrap_or_default()
            .contains("shut down"),
        "{ended}"
    );
    let first_stop = log
        .iter()
        .find(|r| r["action"] == "process.stopped")
        .expect("the shutdown's process.stopped records");
    assert!(
        ended["seq"].as_u64() < first_stop["seq"].as_u64(),
        "the follow's outcome ({}) comes before the first process stopped ({}): the \
         shutdown woke the waiting follower rather than give up on it",
        ended["seq"],
        first_stop["seq"]
    );
}

#[test]
fn a_follower_killed_outright_is_ended_after_its_silence() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&["voice-activity"]));
    let mut follower = Follower::start(&app, "1");
    let own = follower.expect("its own intent", |r| r["resource"] == "audit:follow");
    follower.child.kill().expect("SIGKILL the follower");
    follower.child.wait().expect("reap the follower");

    // The kernel notices the silence after FOLLOW_IDLE_SECS and records how
    // the action ended; until then it is still open.
    let silence = Duration::from_secs(sios_ipc::FOLLOW_IDLE_SECS);
    let give_up = Instant::now() + silence + Duration::from_secs(30);
    let ended = loop {
        let log = records(&app);
        if let Some(outcome) = outcome_of(&log, &own) {
            break outcome.clone();
        }
        assert!(
            Instant::now() < give_up,
            "no outcome {:?} after the follower died",
            silence + Duration::from_secs(30)
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(ended["result"], "error", "{ended}");
    let error = ended["error"].as_str().unwrap_or_default();
    assert!(error.contains("went away"), "{ended}");
    let took = ended["time_unix_ms"].as_u64().unwrap() - own["time_unix_ms"].as_u64().unwrap();
    assert!(
        took >= silence.as_millis() as u64,
        "ended after {took} ms, before {silence:?} of silence"
    );
}
