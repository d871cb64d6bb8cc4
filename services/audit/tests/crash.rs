//! The real `sios-audit` binary, started the way the kernel starts it
//! (listening socket at descriptor 3, `SIOS_LISTEN_FD=3`), hammered by
//! concurrent clients and killed with SIGKILL mid-append, several times.
//! After each restart every acknowledged record must be there with the
//! acknowledged hash, the chain and tree must continue, and the whole log
//! must verify offline. Bad frames and drafts on its socket cost only their
//! own connection or call. The kernel's [`Recorder`] coalesces concurrent
//! calls into shared requests, each call keeping its own answer, and fails
//! every call it could not get answered when the service dies. The service
//! times each call by stage and reports it over the socket. A disk that
//! stops taking writes gets every call refused with what to do, and the log
//! reopens by itself once it takes them again.

use sios_audit::AuditLog;
use sios_audit::keys;
use sios_audit::verify::verify_bundle;
use sios_ipc::activation::hand_listener;
use sios_ipc::recorder::{RecordError, Recorder};
use sios_ipc::testing::{cap_file_size, ignore_file_size_signal};
use sios_ipc::transport::{DEFAULT_MAX_FRAME_BYTES, client_config, context_with_timeout, framed};
use sios_ipc::{ActionResult, AuditClient, AuditError, Digest, DraftKind, RecordDraft};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Service {
    child: Child,
    socket: PathBuf,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(data: &Path, run: &Path) -> Service {
    spawn_with(data, run, |_| {})
}

/// [`spawn`], with `configure` applied to the command first.
fn spawn_with(data: &Path, run: &Path, configure: impl FnOnce(&mut Command)) -> Service {
    let socket = run.join("audit.sock");
    let _ = std::fs::remove_file(&socket);
    let mut command = Command::new(env!("CARGO_BIN_EXE_sios-audit"));
    command
        .arg("--data-dir")
        .arg(data)
        .env("SIOS_LOG", "warn")
        .stdin(Stdio::null());
    configure(&mut command);
    let listener = hand_listener(&mut command, &socket).unwrap();
    let child = command.spawn().unwrap();
    drop(listener);
    Service { child, socket }
}

async fn connect(service: &Service) -> AuditClient {
    let stream = tokio::net::UnixStream::connect(&service.socket)
        .await
        .unwrap();
    let client = AuditClient::new(client_config(), framed(stream, DEFAULT_MAX_FRAME_BYTES)).spawn();
    // The socket accepts before the log is open; `ready` answers once it is.
    client
        .ready(context_with_timeout(Duration::from_secs(30)))
        .await
        .unwrap();
    client
}

fn ctx() -> tarpc::context::Context {
    context_with_timeout(Duration::from_secs(10))
}

/// Opens the log in `data` in process (its service stopped): every
/// acknowledged record is there with the acknowledged hash, and an export of
/// the whole log, written to `bundle`, verifies offline.
async fn reopened_log_holds_and_verifies(
    data: &Path,
    acked: &[(u64, Digest)],
    bundle: &Path,
) -> sios_audit::verify::VerifyReport {
    let log = AuditLog::open(data).unwrap();
    for &(seq, hash) in acked {
        let page = log.read(seq, 1, 1 << 20).unwrap();
        assert_eq!(
            sios_audit::record::Record::hash_of(&page.records[0]),
            hash.0,
            "record {seq}"
        );
    }
    sios_audit::export::write_bundle(&log, bundle)
        .await
        .unwrap();
    verify_bundle(bundle, &data.join(keys::PUBLIC_FILE)).unwrap()
}

fn intent_of(actor: &str, i: u64) -> RecordDraft {
    let mut d = RecordDraft::new(
        actor,
        "invoke",
        format!("brain:b{}", i % 5),
        DraftKind::Intent,
    );
    d.subject = Some(actor.to_owned());
    d.input_digests = vec![Digest([i as u8; 32])];
    d
}

fn outcome_of(intent: &RecordDraft, intent_seq: u64) -> RecordDraft {
    RecordDraft {
        kind: DraftKind::Outcome {
            intent_seq,
            result: ActionResult::Ok,
        },
        input_digests: vec![],
        output_digests: vec![Digest([1; 32])],
        ..intent.clone()
    }
}

/// One client: intent, then outcome, for ever; every acknowledged receipt
/// is kept as (seq, record hash).
async fn hammer(client: AuditClient, id: u64, acked: Arc<Mutex<Vec<(u64, Digest)>>>) {
    let actor = format!("uid:{}", 1000 + id);
    for i in 0.. {
        let d = intent_of(&actor, i);
        let Ok(Ok(r)) = client.record(ctx(), vec![d.clone()]).await else {
            return;
        };
        acked.lock().unwrap().push((r[0].seq, r[0].record_hash));
        let o = outcome_of(&d, r[0].seq);
        let Ok(Ok(r)) = client.record(ctx(), vec![o]).await else {
            return;
        };
        acked.lock().unwrap().push((r[0].seq, r[0].record_hash));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_append_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let acked: Arc<Mutex<Vec<(u64, Digest)>>> = Arc::default();
    let mut sizes = Vec::new();
    for round in 0..4u64 {
        let mut service = spawn(&data, &run);
        let client = connect(&service).await;
        // Everything acknowledged before this start is still there.
        let so_far = acked.lock().unwrap().clone();
        for &(seq, hash) in &so_far {
            let page = client.read(ctx(), seq, 1).await.unwrap().unwrap();
            assert_eq!(page.records.len(), 1, "record {seq} lost");
            assert_eq!(
                sios_audit::record::Record::hash_of(&page.records[0]),
                hash.0,
                "record {seq} changed"
            );
        }
        let size = client.checkpoint(ctx()).await.unwrap().unwrap().size;
        sizes.push(size);
        let tasks: Vec<_> = (0..16)
            .map(|id| tokio::spawn(hammer(client.clone(), id, acked.clone())))
            .collect();
        // Let at least 20 more acknowledgements happen (bounded wait), then
        // kill at a different point each round, while appends are in flight.
        let before = acked.lock().unwrap().len();
        let give_up = std::time::Instant::now() + Duration::from_secs(20);
        while acked.lock().unwrap().len() < before + 20 && std::time::Instant::now() < give_up {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(7 + 31 * round)).await;
        service.child.kill().unwrap();
        service.child.wait().unwrap();
        for t in tasks {
            t.await.unwrap();
        }
    }
    assert!(
        sizes.windows(2).all(|w| w[1] > w[0]),
        "the log grew every round: {sizes:?}"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "only {} records were acknowledged",
        acked.len()
    );
    // Reopen in process: the tree continues and the whole log verifies.
    let report =
        reopened_log_holds_and_verifies(&data, &acked, &dir.path().join("after-crashes.bundle"))
            .await;
    assert!(report.records >= acked.len() as u64);
    // Each start (a new listening socket: a new kernel session) closed the
    // intents the killed round left open, so only the last round's remain:
    // at most one per client.
    assert!(
        report.open_intents <= 16,
        "{} intents left open: earlier rounds' were not closed",
        report.open_intents
    );
    println!("{} acknowledged; {report}", acked.len());
}

/// Bad input on the service's own socket: garbage bytes, a frame announcing
/// more than the limit, a frame cut off by its sender dying mid-write, a
/// draft the log must refuse, and batched requests over the limits. Each
/// costs only its own connection (or call, or request);
/// the service, which commits on the thread that reads the sockets, keeps
/// serving, and what was acknowledged before is still there.
#[tokio::test(flavor = "current_thread")]
async fn bad_frames_and_drafts_cost_only_their_own_connection() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut service = spawn(&data, dir.path());
    let client = connect(&service).await;
    let mut d = RecordDraft::new("uid:1000", "invoke", "brain:b", DraftKind::Intent);
    d.subject = Some("uid:1000".into());
    d.input_digests = vec![Digest([3; 32])];
    let intent = client
        .record(ctx(), vec![d.clone()])
        .await
        .unwrap()
        .unwrap();

    let huge = (DEFAULT_MAX_FRAME_BYTES as u32 + 1).to_be_bytes().to_vec();
    let mut garbage = 16u32.to_be_bytes().to_vec();
    garbage.extend([0xff; 16]);
    let mut cut = 100u32.to_be_bytes().to_vec();
    cut.extend([0; 10]);
    for (what, bytes, expect_close) in [
        ("garbage", garbage, true),
        ("an oversized frame", huge, true),
        ("a frame cut off mid-write", cut, false),
    ] {
        let mut raw = tokio::net::UnixStream::connect(&service.socket)
            .await
            .unwrap();
        raw.write_all(&bytes).await.unwrap();
        if expect_close {
            let mut buf = [0u8; 64];
            let read = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what}: the service kept the connection open"));
            assert!(
                matches!(read, Ok(0) | Err(_)),
                "{what}: closed without an answer, got {read:?}"
            );
        }
        drop(raw);
        assert!(
            service.child.try_wait().unwrap().is_none(),
            "{what} killed the service"
        );
    }

    // A draft that would break the log is refused, with the reason, and
    // writes nothing.
    let mut wrong = d.clone();
    wrong.kind = DraftKind::Outcome {
        intent_seq: intent[0].seq + 1000,
        result: ActionResult::Ok,
    };
    let refused = client.record(ctx(), vec![wrong]).await.unwrap();
    let err = refused.expect_err("an outcome of no open intent");
    println!("refused: {err}");
    assert!(err.to_string().contains("is not open"), "{err}");

    // A request of more calls than one may carry is refused whole; a call
    // of too many drafts inside one is refused alone, and its neighbour is
    // recorded.
    let too_many = vec![Vec::new(); sios_ipc::MAX_CALLS_PER_REQUEST + 1];
    let refused = client.record_each(ctx(), too_many).await.unwrap();
    assert!(
        matches!(&refused, Err(AuditError::TooLarge(_))),
        "{refused:?}"
    );
    let event = RecordDraft::new("kernel", "test.event", "process:test", DraftKind::Event);
    let oversized = vec![event.clone(); sios_ipc::MAX_DRAFTS_PER_CALL + 1];
    let answers = client
        .record_each(ctx(), vec![oversized, vec![event]])
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(&answers[0], Err(AuditError::TooLarge(_))),
        "{:?}",
        answers[0]
    );
    let neighbour = answers[1].as_ref().expect("the neighbouring call");
    assert_eq!(neighbour[0].seq, intent[0].seq + 1);

    // The good connection still works, and the chain goes on.
    let mut o = d;
    o.kind = DraftKind::Outcome {
        intent_seq: intent[0].seq,
        result: ActionResult::Ok,
    };
    o.input_digests = vec![];
    let outcome = client.record(ctx(), vec![o]).await.unwrap().unwrap();
    assert_eq!(outcome[0].seq, intent[0].seq + 2);
    drop(client);
    drop(service);
    let log = AuditLog::open(&data).unwrap();
    let page = log.read(intent[0].seq, 3, 1 << 20).unwrap();
    assert_eq!(page.records.len(), 3);
    assert_eq!(
        sios_audit::record::Record::hash_of(&page.records[0]),
        intent[0].record_hash.0
    );
}

/// A recorder over one connection, as the kernel holds one.
fn recorder_over(client: AuditClient) -> Recorder {
    Recorder::new(
        move || Ok(client.clone()),
        Duration::from_secs(10),
        DEFAULT_MAX_FRAME_BYTES,
    )
}

/// 64 tasks record actions at once through one recorder, as the kernel's
/// request handlers do; one of them slips in a call the log must refuse.
/// The calls share far fewer requests than there are calls, every call gets
/// its own answer (the bad one its refusal, which costs nobody else), every
/// acknowledged record is in the log with its acknowledged hash, and the
/// log verifies. One action alone travels as a plain `record`, one call per
/// request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_shares_requests_and_each_call_keeps_its_answer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let service = spawn(&data, dir.path());
    let recorder = recorder_over(connect(&service).await);

    let before = recorder.stats();
    let lone = intent_of("uid:999", 0);
    let seq = recorder.record(vec![lone.clone()]).await.unwrap()[0].seq;
    recorder.record(vec![outcome_of(&lone, seq)]).await.unwrap();
    let after = recorder.stats();
    assert_eq!(
        (after.calls - before.calls, after.requests - before.requests),
        (2, 2),
        "one action alone: one request per call"
    );

    const TASKS: u64 = 64;
    const ACTIONS: u64 = 10;
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let actor = format!("uid:{}", 1000 + task);
                let mut acked = Vec::new();
                for i in 0..ACTIONS {
                    let intent = intent_of(&actor, i);
                    let r = recorder.record(vec![intent.clone()]).await.unwrap();
                    acked.push((r[0].seq, r[0].record_hash));
                    assert!(r[0].checkpoint_size.is_some_and(|size| size > r[0].seq));
                    let o = recorder
                        .record(vec![outcome_of(&intent, r[0].seq)])
                        .await
                        .unwrap();
                    acked.push((o[0].seq, o[0].record_hash));
                    if task == 7 && i == 3 {
                        // An outcome of an intent that is not open.
                        let wrong = outcome_of(&intent, r[0].seq);
                        let refused = recorder.record(vec![wrong]).await;
                        assert!(
                            matches!(
                                &refused,
                                Err(RecordError::Refused(AuditError::InvalidDraft { .. }))
                            ),
                            "{refused:?}"
                        );
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await.unwrap());
    }
    let stats = recorder.stats();
    let (calls, requests) = (stats.calls - after.calls, stats.requests - after.requests);
    println!("{calls} calls in {requests} requests");
    assert_eq!(calls, TASKS * ACTIONS * 2 + 1);
    assert!(
        requests * 2 < calls,
        "{calls} concurrent calls took {requests} requests: not coalesced"
    );

    drop(recorder);
    drop(service);
    let report =
        reopened_log_holds_and_verifies(&data, &acked, &dir.path().join("recorder.bundle")).await;
    // Whatever the service wrote before the lone intent, then two records
    // per action.
    assert_eq!(report.records, seq + 2 + TASKS * ACTIONS * 2);
    assert_eq!(report.open_intents, 0);
}

/// The service is killed while calls ride in requests and wait in the
/// recorder's lanes: every call comes back with an error (none hangs, none
/// is taken as recorded), and once the service is back the same recorder
/// records again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_service_dies_every_waiting_call_fails_and_the_recorder_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut service = spawn(&data, dir.path());
    let current: Arc<Mutex<Option<AuditClient>>> =
        Arc::new(Mutex::new(Some(connect(&service).await)));
    let source = current.clone();
    let recorder = Recorder::new(
        move || {
            source
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| "the audit service is not ready".to_owned())
        },
        Duration::from_secs(10),
        DEFAULT_MAX_FRAME_BYTES,
    );
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..32u64)
        .map(|task| {
            let (recorder, stop) = (recorder.clone(), stop.clone());
            tokio::spawn(async move {
                let actor = format!("uid:{}", 2000 + task);
                let (mut ok, mut failed) = (0u32, 0u32);
                for i in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    match recorder.record(vec![intent_of(&actor, i)]).await {
                        Ok(_) => ok += 1,
                        Err(RecordError::Unanswered(_)) => failed += 1,
                        Err(other) => panic!("unexpected refusal: {other}"),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    while recorder.stats().calls < 200 && std::time::Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    *current.lock().unwrap() = None;
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for task in tasks {
        // Every task ends: no call waits for ever on a dead service.
        let (o, f) = tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("a call hung after the service died")
            .unwrap();
        ok += o;
        failed += f;
    }
    println!("{ok} acknowledged, {failed} failed");
    assert!(ok > 0 && failed > 0, "{ok} acknowledged, {failed} failed");

    let service = spawn(&data, dir.path());
    *current.lock().unwrap() = Some(connect(&service).await);
    let again = recorder.record(vec![intent_of("uid:3000", 0)]).await;
    assert!(again.is_ok(), "{again:?}");
}

/// The service times every `record` call it handles, stage by stage, and
/// tells over its socket. After ten lone actions and one refused outcome,
/// the calls between two snapshots are counted exactly: each call once in
/// `queued` (the refused one too), each batch once in `prepared` and
/// `committed`, each answered call once in `answered`; one intent batch and
/// one outcome batch per action. A durable commit's median is never zero.
#[tokio::test(flavor = "current_thread")]
async fn record_timings_count_every_call_and_batch_by_stage() {
    let dir = tempfile::tempdir().unwrap();
    let service = spawn(&dir.path().join("data"), dir.path());
    let client = connect(&service).await;
    let before = client.record_timings(ctx()).await.unwrap().unwrap();

    const ACTIONS: u64 = 10;
    for i in 0..ACTIONS {
        let intent = intent_of("uid:1000", i);
        let r = client.record(ctx(), vec![intent.clone()]).await.unwrap();
        let outcome = outcome_of(&intent, r.unwrap()[0].seq);
        client.record(ctx(), vec![outcome]).await.unwrap().unwrap();
    }
    // An outcome of an intent that does not exist: refused before any batch.
    let refused = outcome_of(&intent_of("uid:1000", 0), 1_000_000);
    let answer = client.record(ctx(), vec![refused]).await.unwrap();
    assert!(answer.is_err(), "an outcome without its intent is refused");

    let after = client.record_timings(ctx()).await.unwrap().unwrap();
    let run = after.since(&before);
    for (kind, stages, queued) in [
        ("intent", &run.intents, ACTIONS),
        ("outcome", &run.durable_only, ACTIONS + 1),
    ] {
        let counts: Vec<(&str, u64)> = stages
            .stages()
            .iter()
            .map(|(name, h)| (*name, h.count()))
            .collect();
        assert_eq!(
            counts,
            [
                ("queued", queued),
                ("prepared", ACTIONS),
                ("committed", ACTIONS),
                ("answered", ACTIONS)
            ],
            "{kind} calls by stage"
        );
        let commit = stages.committed.quantile(0.5).unwrap();
        assert!(
            commit > Duration::ZERO,
            "{kind}: a durable commit took {commit:?}"
        );
    }
}

/// A service whose log a full disk closed: its file size capped just over
/// what it holds (the process's RLIMIT_FSIZE, as a full disk refuses
/// writes), then calls of 64 events sent until one was refused.
struct ClosedByFullDisk {
    dir: tempfile::TempDir,
    data: PathBuf,
    service_log: PathBuf,
    service: Service,
    client: AuditClient,
    /// Every record acknowledged before the refusal.
    acked: Vec<(u64, Digest)>,
    refused: AuditError,
}

/// Call `i` of [`ClosedByFullDisk`]: 64 events, 200 bytes of detail each.
fn events_call(i: u64) -> Vec<RecordDraft> {
    (0..64)
        .map(|k| {
            let mut d = intent_of("uid:1000", i * 64 + k);
            d.kind = DraftKind::Event;
            d.detail = "x".repeat(200);
            d
        })
        .collect()
}

/// Sends one more call of events: its first record follows the last one
/// acknowledged, and its records join `acked`.
async fn next_call_continues_the_chain(client: &AuditClient, acked: &mut Vec<(u64, Digest)>) {
    let receipts = client.record(ctx(), events_call(0)).await.unwrap().unwrap();
    let last = acked.last().unwrap().0;
    assert_eq!(
        receipts[0].seq,
        last + 1,
        "the chain continues after {last}"
    );
    acked.extend(receipts.iter().map(|r| (r.seq, r.record_hash)));
}

async fn closed_by_full_disk() -> ClosedByFullDisk {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    let service_log = dir.path().join("service.log");
    let stderr = std::fs::File::create(&service_log).unwrap();
    let service = spawn_with(&data, &run, |command| {
        ignore_file_size_signal(command);
        // Its own debug lines too: they tell each reopening apart.
        command
            .env("SIOS_LOG", "warn,sios_audit=debug")
            .stderr(stderr);
    });
    let client = connect(&service).await;
    let mut acked: Vec<(u64, Digest)> = Vec::new();
    for i in 0..3 {
        let receipts = client.record(ctx(), events_call(i)).await.unwrap().unwrap();
        acked.extend(receipts.iter().map(|r| (r.seq, r.record_hash)));
    }
    let log_file = data.join("audit.redb");
    cap_file_size(
        service.child.id(),
        std::fs::metadata(&log_file).unwrap().len() + 256 * 1024,
    );
    let mut refused = None;
    for i in 3..10_000 {
        match client.record(ctx(), events_call(i)).await.unwrap() {
            Ok(receipts) => acked.extend(receipts.iter().map(|r| (r.seq, r.record_hash))),
            Err(err) => {
                refused = Some(err);
                break;
            }
        }
    }
    ClosedByFullDisk {
        dir,
        data,
        service_log,
        service,
        client,
        acked,
        refused: refused.expect("the capped log never refused a call"),
    }
}

/// A disk that stops taking writes, made without root: the service's
/// file-size limit is lowered to just above its log's size, so a commit
/// that must grow the file fails (EFBIG, as a full disk fails with ENOSPC).
/// Every call is then refused with the cause and what to do, nothing is
/// acknowledged that is not durable, and the service stays up. Once the
/// limit is lifted ("space freed") the log reopens by itself within a
/// second, the next call continues the chain right after the last
/// acknowledged record, and the whole log verifies.
#[tokio::test(flavor = "current_thread")]
async fn a_full_disk_refuses_records_clearly_and_the_log_reopens_once_space_is_freed() {
    let ClosedByFullDisk {
        dir,
        data,
        service_log,
        mut service,
        client,
        mut acked,
        refused,
    } = closed_by_full_disk().await;
    let pid = service.child.id();
    let text = refused.to_string();
    assert!(
        matches!(refused, AuditError::Storage(_))
            && text.contains("File too large")
            && text.contains("free space on the disk holding")
            && text.contains(&data.display().to_string()),
        "the refusal names the cause, the place and what to do: {text}"
    );
    // Still full: refused again, at once, and the service is still there.
    for _ in 0..3 {
        let again = client
            .record(ctx(), events_call(0))
            .await
            .unwrap()
            .unwrap_err();
        assert!(again.to_string().contains("the log is closed"), "{again}");
        assert_eq!(again.to_string(), text, "the same words each time");
    }
    assert!(
        service.child.try_wait().unwrap().is_none(),
        "the service died"
    );
    // Its health answer (what `sios status` shows) carries the same words,
    // and keeps them while the disk is full, through the writer's idle
    // reopen attempts (once a second).
    for _ in 0..3 {
        assert_eq!(
            client.ready(ctx()).await.unwrap().fault.as_deref(),
            Some(text.as_str()),
            "`ready` reports the closed log"
        );
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    // Space freed: the log reopens by itself (reads come back without any
    // write to reopen it), and the next call is recorded right after the
    // last acknowledged record.
    cap_file_size(pid, libc::RLIM_INFINITY);
    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    while client.ready(ctx()).await.unwrap().fault.is_some() {
        assert!(
            std::time::Instant::now() < give_up,
            "the log did not report itself healthy within 10 s of space being freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while client.tail(ctx(), 1).await.unwrap().is_err() {
        assert!(
            std::time::Instant::now() < give_up,
            "the log did not reopen by itself within 10 s of space being freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    next_call_continues_the_chain(&client, &mut acked).await;
    drop(client);
    service.child.kill().unwrap();
    service.child.wait().unwrap();
    // One full disk: one error and one recovery in the service's log, and
    // no reopening in between (the disk had no room: reopening would only
    // have failed again on the checkpoints it still had to store, each
    // second, and shown a healthy log in between).
    let logged = std::fs::read_to_string(&service_log).unwrap();
    for (line, times) in [
        ("the audit log is closed:", 1),
        ("the audit log is closed again", 0),
        ("the audit log reopened", 1),
        ("the audit log takes writes again", 1),
    ] {
        assert_eq!(
            logged.matches(line).count(),
            times,
            "{line:?} in the service's log:\n{logged}"
        );
    }
    let report =
        reopened_log_holds_and_verifies(&data, &acked, &dir.path().join("after-full-disk.bundle"))
            .await;
    assert_eq!(report.records, acked.last().unwrap().0 + 1);
}

/// A log file damaged while the log is closed (here: overwritten while a
/// full disk kept it closed) is blamed on the file, not on the disk: the
/// refusals and `ready` say to put back a backup, not to free space, and
/// no longer promise that nothing is lost. Once the good file is back the
/// log reopens by itself and the chain continues after the last
/// acknowledged record.
#[tokio::test(flavor = "current_thread")]
async fn a_log_file_damaged_while_closed_is_blamed_on_the_file_and_the_good_one_serves_again() {
    let ClosedByFullDisk {
        dir,
        data,
        service,
        client,
        mut acked,
        refused,
        ..
    } = closed_by_full_disk().await;
    assert!(
        refused
            .to_string()
            .contains("free space on the disk holding"),
        "{refused}"
    );
    let log_file = data.join("audit.redb");
    let good = std::fs::read(&log_file).unwrap();
    let garbage: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&log_file, &garbage).unwrap();
    cap_file_size(service.child.id(), libc::RLIM_INFINITY);

    let give_up = std::time::Instant::now() + Duration::from_secs(10);
    let fault = loop {
        let fault = client.ready(ctx()).await.unwrap().fault.unwrap_or_default();
        if fault.contains("cannot be read as its database") {
            break fault;
        }
        assert!(
            std::time::Instant::now() < give_up,
            "the damaged file was not reported within 10 s: {fault:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        fault.contains(&log_file.display().to_string())
            && fault.contains("put back the latest backup")
            && !fault.contains("free space")
            && !fault.contains("nothing acknowledged is lost"),
        "{fault}"
    );
    let again = client
        .record(ctx(), events_call(0))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(again.to_string(), fault, "a refusal says what `ready` says");

    std::fs::write(&log_file, &good).unwrap();
    while client.ready(ctx()).await.unwrap().fault.is_some() {
        assert!(
            std::time::Instant::now() < give_up + Duration::from_secs(10),
            "the log did not reopen within 10 s of its good file coming back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    next_call_continues_the_chain(&client, &mut acked).await;
    drop(client);
    drop(service);
    let report =
        reopened_log_holds_and_verifies(&data, &acked, &dir.path().join("after-damage.bundle"))
            .await;
    assert_eq!(report.records, acked.last().unwrap().0 + 1);
}
