//! Large requests against brains' memory limits, through the real kernel:
//! a request a brain can hold is served however large its batch (the brain
//! runs it in parts), and one it cannot is refused by the kernel before it
//! reaches the brain. Either way no brain is killed: before both rules, a
//! batch of 500 long texts (1 MB) got the shared text-embedding brain killed by
//! the OOM killer, and so did an 11 MB request to a 64 MiB brain, which any
//! client could repeat until the brain was marked failed. And one uid's
//! requests together hold a bounded number of bytes in the kernel.

use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sios_e2e::{Options, TestAppliance, ctx, process_tree, require_root, require_setup, signal};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn invoke(app: &TestAppliance, brain: &str, request: &Value) -> std::process::Output {
    let path = app.dir.path().join(format!("{brain}-request.json"));
    std::fs::write(&path, request.to_string()).expect("request file");
    app.sios(&[
        "invoke",
        brain,
        "--input",
        &path.display().to_string(),
        "--compact",
    ])
}

fn texts(texts: &[String]) -> Value {
    json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [texts.len()], "data": texts}]})
}

fn features(rows: usize) -> Value {
    let data: Vec<f32> = (0..rows * 30).map(|i| (i % 97) as f32 / 97.0).collect();
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 30], "data": data}]})
}

/// Every brain ready and never restarted.
fn none_restarted(app: &TestAppliance, after: &str) {
    for process in app.status().processes {
        assert_eq!(
            (process.state, process.restarts),
            (sios_ipc::ProcessState::Ready, 0),
            "{} after {after}",
            process.name
        );
    }
}

#[test]
fn a_brain_serves_what_it_can_hold_and_the_kernel_refuses_the_rest() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&["text-embedding", "legal", "anomaly-detect", "pii-tagger"]);
    // Room for the large batches on a slow machine (a debug build on two
    // busy CPUs); what is checked is that they are served, not how fast.
    options.extra_config = "[limits]\nrequest_timeout_ms = 120000\n".into();
    let app = TestAppliance::start(options);

    // 200 texts the model reads 256 tokens of (280 KB): run whole, their
    // attention alone would take some 600 MB; run in parts of 16 texts,
    // about 50 MB.
    let long = "Either party may terminate this agreement with thirty days notice. ".repeat(21);
    let batch: Vec<String> = (0..200).map(|i| format!("{i}: {long}")).collect();
    let out = invoke(&app, "text-embedding", &texts(&batch));
    assert!(out.status.success(), "{}", stderr(&out));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(response["outputs"][0]["shape"], json!([200, 384]));
    none_restarted(&app, "200 long texts to text-embedding");
    // The same through a specialist, which asks text-embedding through the
    // kernel for the whole batch.
    let out = invoke(&app, "legal", &texts(&batch));
    assert!(out.status.success(), "{}", stderr(&out));
    none_restarted(&app, "200 long texts to legal");
    // Many short texts whose embeddings no reply could carry: the brain
    // stops at the part that crosses the frame limit, rather than holding
    // every part's outputs (a million of them took it past 512 MiB).
    let many = vec!["a".to_owned(); 20_000];
    let out = invoke(&app, "text-embedding", &texts(&many));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("parts already take about")
            && stderr(&out).contains("send fewer inputs per request"),
        "{}",
        stderr(&out)
    );
    none_restarted(&app, "20,000 short texts to text-embedding");

    // anomaly-detect (64 MiB) takes 8 MiB at once: 60,000 rows of 30
    // features (7.2 MB) are served, 90,000 (10.8 MB) are refused with the
    // reason, and it never sees them.
    let out = invoke(&app, "anomaly-detect", &features(60_000));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = invoke(&app, "anomaly-detect", &features(90_000));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the request to brain `anomaly-detect` takes 10800")
            && stderr(&out).contains(
                "(10.3 MiB), more than the 8388608 it takes at once (its memory limit is \
                 64 MiB); send fewer or shorter inputs per request"
            ),
        "{}",
        stderr(&out)
    );
    // Four such requests at once: the brain runs one at a time but would
    // read and hold the others meanwhile (two at once got it killed), so
    // the kernel lets it hold no more bytes of requests at once than one
    // may take; the others wait their turn, and all four are served.
    let infer: sios_ipc::InferRequest =
        sios_ipc::kserve::parse_request(&features(60_000).to_string()).expect("a request");
    let runtime = sios_e2e::multi_thread_runtime(2);
    let answers = runtime.block_on(async {
        let client = app.client().await;
        let calls = (0..4).map(|_| client.invoke(ctx(), "anomaly-detect".into(), infer.clone()));
        futures::future::join_all(calls).await
    });
    for answer in answers {
        assert!(matches!(answer, Ok(Ok(_))), "{answer:?}");
    }
    none_restarted(&app, "four large requests at once to anomaly-detect");
    // One text of 9 MiB to a specialist: refused alike, before it could
    // be forwarded.
    let huge = vec!["Either party may terminate. ".repeat((9 << 20) / 28 + 1)];
    let out = invoke(&app, "legal", &texts(&huge));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("(9.0 MiB), more than the 8388608"),
        "{}",
        stderr(&out)
    );
    // pii-tagger's model needs some 2 MB per row of 256 characters: its
    // manifest allows 64 rows (a quarter of what got it killed), and the
    // kernel refuses more, however few bytes they take.
    let codepoints = |rows: usize| json!({"inputs": [{"name": "codepoints", "datatype": "INT32", "shape": [rows, 256], "data": vec![97; rows * 256]}]});
    let out = invoke(&app, "pii-tagger", &codepoints(64));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = invoke(&app, "pii-tagger", &codepoints(256));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "brain `pii-tagger` takes at most 64 rows per request (its model needs more memory \
             per row than most); this one has 256: send them in requests of 64 or fewer"
        ),
        "{}",
        stderr(&out)
    );
    none_restarted(&app, "the refused requests");
    let served = app
        .status()
        .processes
        .into_iter()
        .find(|p| p.name == "anomaly-detect")
        .expect("anomaly-detect")
        .requests;
    assert_eq!(served, 5, "the refused request never reached the brain");
}

/// A batch that outlives its request's deadline stops after the part it is
/// on, instead of holding the brain for the rest of it: the next request,
/// queued behind it, is answered within its own deadline (10 s, for what
/// takes one part and a short text).
#[test]
fn a_batch_past_its_deadline_stops_and_the_next_request_is_served() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&["text-embedding"]);
    options.extra_config = "[limits]\nrequest_timeout_ms = 10000\n".into();
    let app = TestAppliance::start(options);
    // Some 30 parts of 16 long texts: far more than 10 s of work, where
    // one part takes a second or two.
    let long = "Either party may terminate this agreement with thirty days notice. ".repeat(30);
    let batch: Vec<String> = (0..500).map(|i| format!("{i}: {long}")).collect();
    let out = invoke(&app, "text-embedding", &texts(&batch));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("took longer than 10000 ms and was abandoned"),
        "{}",
        stderr(&out)
    );
    // Were the brain still on the abandoned batch, this one would wait for
    // it and be abandoned too.
    let out = invoke(&app, "text-embedding", &texts(&["a short note".to_owned()]));
    assert!(out.status.success(), "{}", stderr(&out));
    none_restarted(&app, "an abandoned batch");
}

/// The invoke intents in the audit log.
fn invoke_intents(app: &TestAppliance) -> usize {
    records(app, "intent", "invoke")
}

/// How many of the last 1,000 records are of `kind` for `action`.
fn records(app: &TestAppliance, kind: &str, action: &str) -> usize {
    let out = app.sios(&["audit", "tail", "1000", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("a JSON record per line"))
        .filter(|record| record["kind"] == kind && record["action"] == action)
        .count()
}

/// What the test's own uid holds in the kernel.
fn my_load(status: &sios_ipc::StatusReport) -> Option<&sios_ipc::ClientLoad> {
    let uid = nix::unistd::getuid().as_raw();
    status.clients.iter().find(|c| c.uid == uid)
}

/// One uid's requests hold at most `[limits] max_request_bytes_per_uid` in
/// the kernel at once, over all its connections: with two requests of 6 MB
/// held (their brain frozen: one sent to it, the other waiting its turn in
/// the kernel, since the brain may hold only one that large), a third of
/// 6 MB from another connection of the same uid would pass 16 MiB and is
/// refused at once with the reason, before any record or brain sees it;
/// once the two are served, the same request is served.
#[test]
fn one_uids_requests_hold_at_most_its_byte_budget_in_the_kernel() {
    if !require_setup() {
        return;
    }
    const BRAIN: &str = "anomaly-detect";
    let mut options = Options::brains(&[BRAIN]);
    // The held requests wait for the frozen brain longer than the default
    // 30 s on a slow machine.
    options.extra_config =
        "[limits]\nmax_request_bytes_per_uid = 16777216\nrequest_timeout_ms = 120000\n".into();
    let app = TestAppliance::start(options);
    // 50,000 rows of 30 features: 6,000,000 bytes, within the brain's
    // 8 MiB; two fit the 16 MiB budget, three do not.
    let request = features(50_000);
    let infer: sios_ipc::InferRequest =
        sios_ipc::kserve::parse_request(&request.to_string()).expect("a KServe request");
    let brain = process_tree(app.pid(BRAIN));
    for &pid in &brain {
        signal(pid, Signal::SIGSTOP);
    }
    let runtime = sios_e2e::multi_thread_runtime(2);
    let client = runtime.block_on(app.client());
    let held: Vec<_> = (0..2)
        .map(|_| {
            let (client, infer) = (client.clone(), infer.clone());
            runtime.spawn(async move { client.invoke(ctx(), BRAIN.into(), infer).await })
        })
        .collect();
    // Both held: `sios status` shows their bytes (and its own request's),
    // and the brain's share (an eighth of 64 MiB) taken whole: one request
    // has its turn at the brain, and the other, first in line, collects
    // what is left of the share until it can go.
    let share_taken = Some(sios_ipc::InFlight {
        bytes: 8 << 20,
        limit_bytes: 8 << 20,
    });
    let status = app.wait_for_status("held the two requests, one at the brain", |status| {
        my_load(status).is_some_and(|load| load.serving_bytes >= 12_000_000)
            && status
                .processes
                .iter()
                .any(|p| p.name == BRAIN && p.in_flight == share_taken)
    });
    let load = my_load(&status).expect("checked");
    assert!(
        load.connections >= 2 && load.serving_bytes < 12_100_000 && load.limit_bytes == 16 << 20,
        "{load:?}"
    );
    // The one with its turn records its intent next; the other has none
    // while it waits.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while invoke_intents(&app) == 0 {
        assert!(std::time::Instant::now() < give_up, "no intent recorded");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(
        invoke_intents(&app),
        1,
        "the second waits its turn for the brain, not yet begun"
    );
    let uid = nix::unistd::getuid();
    let text = app.sios(&["status"]);
    let text = String::from_utf8_lossy(&text.stdout);
    for words in [
        &format!("client uid {uid}: ")[..],
        "in flight to it: 8.0 MiB of its 8.0 MiB share (requests past it wait in the kernel)",
    ] {
        assert!(text.contains(words), "{words}\n{text}");
    }

    let out = invoke(&app, BRAIN, &request);
    let said = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    for words in [
        &format!(
            "the kernel refused the request: uid {uid}: its requests being served and its \
             answers not yet read hold 11."
        )[..],
        "MiB, and this one of 5.7 MiB would pass the limit of 16.0 MiB",
        "([limits] max_request_bytes_per_uid); read the answers already sent or wait for some \
         requests to end, then send it again",
    ] {
        assert!(said.contains(words), "{words}\n{said}");
    }
    assert_eq!(
        invoke_intents(&app),
        1,
        "a refused request is never recorded as an action"
    );
    assert!(
        app.log_text().contains("refusing a request: uid"),
        "the kernel logs the refusal\n{}",
        app.log_text()
    );

    for &pid in &brain {
        signal(pid, Signal::SIGCONT);
    }
    for answer in held {
        let answer = runtime.block_on(answer).expect("the client task");
        assert!(
            matches!(answer, Ok(Ok(_))),
            "a held request is served: {answer:?}"
        );
    }
    let out = invoke(&app, BRAIN, &request);
    assert!(
        out.status.success(),
        "served once the budget is free: {}",
        stderr(&out)
    );
    none_restarted(&app, "the budget's refusal");
}

/// Stores `value` as the item `scan` of `client:ops/large` (the test's uid
/// is an operator, which owns `client:ops/…`).
fn store_large_item(
    app: &TestAppliance,
    runtime: &tokio::runtime::Runtime,
    value: sios_ipc::memory::Value,
) {
    let put = sios_ipc::memory::PutRequest {
        namespace: "client:ops/large".into(),
        key: "scan".into(),
        subject: "patient-7".into(),
        value,
        metadata: Default::default(),
        embedding: None,
    };
    runtime.block_on(async {
        app.client()
            .await
            .memory_put(ctx(), put)
            .await
            .expect("rpc")
            .expect("a large item is stored")
    });
}

/// Many reads of a large item at once, from many connections: the kernel
/// lets the calls in flight to the memory service ask it to hold at most an
/// eighth of its memory limit in answers (the rest wait their turn in the
/// kernel), so it serves them all and lives. Before, 4,096 pipelined reads of
/// a 1 MiB item got it killed by the out-of-memory killer, and with it every
/// other caller's memory requests in flight; with its limit at 64 MiB, as
/// here, 48 reads at once did the same (twice in two runs, within a second).
#[test]
fn many_large_memory_reads_at_once_are_all_served_and_the_memory_service_lives() {
    if !require_setup() || !require_root("the memory service's cgroup memory limit") {
        return;
    }
    // One small brain: an empty list would start the whole catalog.
    let mut options = Options::brains(&["anomaly-detect"]);
    options.extra_config = "[sandbox.services]\nmemory_mib = 64\n".into();
    let app = TestAppliance::start(options);
    let value = sios_ipc::memory::Value::Bytes(vec![0x5a; sios_ipc::memory::MAX_VALUE_BYTES]);
    let runtime = sios_e2e::multi_thread_runtime(2);
    store_large_item(&app, &runtime, value.clone());
    let served = runtime.block_on(async {
        let mut readers = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let client = app.client().await;
            for _ in 0..6 {
                let client = client.clone();
                readers.spawn(async move {
                    client
                        .memory_get(ctx(), "client:ops/large".into(), "scan".into())
                        .await
                        .expect("rpc")
                        .map(|item| item.value.len())
                });
            }
        }
        readers.join_all().await
    });
    assert_eq!(served.len(), 48);
    for answer in served {
        assert_eq!(answer, Ok(value.len()), "every read is served in full");
    }
    none_restarted(&app, "48 reads of a 1 MiB item at once");
}

/// A client that sends reads of a large item and never reads the answers:
/// each read takes its uid's budget for the most its answer may take, and
/// keeps it until the answer is written to the socket, so the kernel holds
/// at most the budget in such answers; the uid's next read is refused with
/// what to do, and everything comes back once the connections close. Before,
/// the kernel held every answer: 4,096 such reads of a 1 MiB item took it
/// from 58 MB to 1.6 GB in 4 s, and 256 connections could have taken 16 GiB.
#[test]
fn a_client_that_never_reads_its_answers_holds_at_most_its_budget_in_the_kernel() {
    if !require_setup() {
        return;
    }
    // One small brain: an empty list would start the whole catalog.
    let mut options = Options::brains(&["anomaly-detect"]);
    options.extra_config = "[limits]\nmax_request_bytes_per_uid = 16777216\n".into();
    let app = TestAppliance::start(options);
    let runtime = sios_e2e::multi_thread_runtime(2);
    let value = sios_ipc::memory::Value::Bytes(vec![0x5a; sios_ipc::memory::MAX_VALUE_BYTES]);
    store_large_item(&app, &runtime, value);
    // Four connections, each with 16 reads written and none of the answers
    // read: 64 reads of up to 1.1 MiB each, four times the budget.
    let silent: Vec<_> = (0..4)
        .map(|_| {
            use std::io::Write as _;
            let mut socket =
                std::os::unix::net::UnixStream::connect(app.kernel_socket()).expect("connect");
            for id in 0..16 {
                let message = tarpc::ClientMessage::Request(tarpc::Request {
                    context: ctx(),
                    id,
                    message: sios_ipc::KernelRequest::MemoryGet {
                        namespace: "client:ops/large".into(),
                        key: "scan".into(),
                    },
                });
                // tarpc's frames: a 4-byte big-endian length, then bincode
                // with its default options.
                let body = bincode::Options::serialize(bincode::DefaultOptions::new(), &message)
                    .expect("encode");
                socket
                    .write_all(&(body.len() as u32).to_be_bytes())
                    .expect("write");
                socket.write_all(&body).expect("write");
            }
            socket
        })
        .collect();
    let status = app.wait_for_status("held the unread answers", |status| {
        my_load(status).is_some_and(|load| load.serving_bytes >= 12 << 20)
    });
    assert!(my_load(&status).expect("checked").serving_bytes <= 16 << 20);
    // Every read let in has run to its outcome: what is held now is only
    // their answers, waiting to be read.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (begun, ended) = (
            records(&app, "intent", "memory_read"),
            records(&app, "outcome", "memory_read"),
        );
        if begun >= 12 && begun == ended {
            break;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "{begun} reads begun, {ended} ended"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let load = my_load(&app.status()).cloned().expect("still connected");
    assert!(
        load.serving_bytes >= 12 << 20 && load.serving_bytes <= load.limit_bytes,
        "the unread answers still hold their shares: {load:?}"
    );
    let out = app.sios(&["memory", "get", "--namespace", "client:ops/large", "scan"]);
    let said = stderr(&out);
    assert!(!out.status.success(), "{said}");
    for words in [
        "its answers not yet read hold",
        "limit of 16.0 MiB ([limits] max_request_bytes_per_uid)",
        "read the answers already sent",
    ] {
        assert!(said.contains(words), "{words}\n{said}");
    }
    drop(silent);
    app.wait_for_status("gave back what the unread answers held", |status| {
        my_load(status).is_none_or(|load| load.serving_bytes <= 1 << 10)
    });
    let out = app.sios(&[
        "memory",
        "get",
        "--namespace",
        "client:ops/large",
        "scan",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}
