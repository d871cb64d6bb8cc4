//! `cargo bench -p sios-audit --bench audit`: the audit log's numbers and
//! their physical anchors, measured in the same run on the same disk, printed
//! as one table with the comparisons (DESIGN.md "Numbers we hold ourselves to").
//!
//! Anchors: one durable redb commit (also with the committing thread held
//! on each CPU in turn: the floor itself moves with where the waiting
//! thread runs), redb's own throughput in 4096-record batches, one ML-DSA-65 signature (the service's signer, libcrux-ml-dsa,
//! and the ml-dsa crate it replaced) and verification. Subjects: durable
//! appends under 64 concurrent appenders in process; through the service
//! (the real `sios-audit` binary in its own process, started as the kernel
//! starts it, with its socket handed over as fd 3): calls of 1, 64 and 1024
//! records from one client, and 64 concurrent clients (each on its own
//! connection, and 64 actions at a time through one `Recorder`, as the
//! kernel sends them); the added latency of
//! one governed action at one client (intent, then outcome), from a
//! single-threaded client and from a task on a 2-worker runtime (as the
//! kernel's request handlers run), each action paired with a
//! floor sample (one raw commit and one signature taken right before it),
//! and its intent and its outcome each beside their part of the floor (so
//! the table shows which call the time over the floor goes to) and split
//! by the log's own stage timings (`Audit::record_timings`: queued,
//! prepared, committed, answered; the rest is outside the log); the same
//! actions back to back, with nothing between them, against blocks of
//! back-to-back commits and signatures;
//! beside the same action in process and one disk-free RPC round trip,
//! warm, after 300 µs idle and right after a durable commit at the sending
//! end (as every reply of the service is sent); and the offline
//! verification rate of a 1,000,000-record export.
//!
//! Set `SIOS_BENCH_DIR` to measure another disk (default: the system temp dir).
//! Set `SIOS_BENCH_QUICK=1` for a short run (100 000-record export).
//! Set `SIOS_BENCH_LOW_LATENCY_IDLE=1` to hold every CPU polling for the
//! whole run (`[performance] low_latency_idle`; root only): the floor and
//! the actions then both run without halted CPUs.
//! Set `SIOS_BENCH_BASELINE_AUDIT` to another `sios-audit` binary to compare
//! this build's one-client latency and its 64 clients' throughput with it,
//! round by round, in the same run.

use redb::{Database, Durability, TableDefinition};
use sios_audit::AuditLog;

// The allocator `sios-audit` and the kernel (its client) run with, so that
// the in-process rows and the clients measure the code as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sios_audit::keys::SecretKey;
use sios_ipc::recorder::Recorder;
use sios_ipc::transport::{DEFAULT_MAX_FRAME_BYTES, client_config, context_with_timeout, framed};
use sios_ipc::{
    ActionResult, AuditClient, Digest, DraftKind, RecordDraft, RecordTimings, StageTimings,
};
use std::time::{Duration, Instant};

const RAW: TableDefinition<u64, &[u8]> = TableDefinition::new("raw");

fn tempdir() -> tempfile::TempDir {
    match std::env::var_os("SIOS_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    }
}

/// Runs `task(0)` to `task(n - 1)` at once, as tasks of the current
/// runtime, and returns how long until the last one finished.
async fn concurrently<F, Fut>(n: u64, task: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let t = Instant::now();
    let tasks: Vec<_> = (0..n).map(|c| tokio::spawn(task(c))).collect();
    for done in futures::future::join_all(tasks).await {
        done.unwrap();
    }
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// A draft the size of a typical governed invoke's intent (~250 bytes encoded).
fn intent(i: u64) -> RecordDraft {
    let actor = format!("uid:{}", 1000 + i % 64);
    let mut d = RecordDraft::new(
        &actor,
        "invoke",
        format!("brain:b{}", i % 50),
        DraftKind::Intent,
    );
    d.decision = Some(sios_ipc::Decision {
        effect: sios_ipc::Effect::Allow,
        policy_hash: Digest([7; 32]),
        policy_ids: vec!["invoke-domain".into()],
    });
    d.brain = Some(sios_ipc::BrainRef {
        id: format!("b{}", i % 50),
        model_sha256: Digest([9; 32]),
    });
    d.subject = Some(actor);
    d.input_digests = vec![Digest([(i % 251) as u8; 32])];
    d
}

/// The outcome closing `intent` (recorded at `intent_seq`), as the kernel
/// writes it: same actor, action and resource, the output's digest.
fn outcome(intent: RecordDraft, intent_seq: u64) -> RecordDraft {
    RecordDraft {
        kind: DraftKind::Outcome {
            intent_seq,
            result: ActionResult::Ok,
        },
        decision: None,
        input_digests: vec![],
        output_digests: vec![Digest([1; 32])],
        ..intent
    }
}

fn event(i: u64) -> RecordDraft {
    let mut d = intent(i);
    d.kind = DraftKind::Event;
    d
}

/// The audit service's own binary, started the way the kernel starts it.
struct Service {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

/// The `sios-audit` binary built with this bench.
const THIS_BUILD: &str = env!("CARGO_BIN_EXE_sios-audit");

impl Service {
    /// Starts `program` (a `sios-audit` binary) on a log in `dir`.
    fn spawn(program: &std::ffi::OsStr, dir: &std::path::Path) -> Service {
        let socket = dir.join("audit.sock");
        let mut command = std::process::Command::new(program);
        command
            .arg("--data-dir")
            .arg(dir.join("service"))
            .env("SIOS_LOG", "warn")
            .stdin(std::process::Stdio::null());
        let listener = sios_ipc::activation::hand_listener(&mut command, &socket).unwrap();
        let child = command.spawn().expect("starting sios-audit");
        drop(listener);
        Service { child, socket }
    }

    /// SIGTERM, as `sios down` stops it, and wait for it to exit.
    fn stop(mut self) {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid, which has not been reaped.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

struct Row {
    what: String,
    value: String,
    note: String,
}

fn row(
    rows: &mut Vec<Row>,
    what: impl Into<String>,
    value: impl Into<String>,
    note: impl Into<String>,
) {
    let r = Row {
        what: what.into(),
        value: value.into(),
        note: note.into(),
    };
    println!("  {:<58} {:>16}  {}", r.what, r.value, r.note);
    rows.push(r);
}

async fn connect(socket: &std::path::Path) -> AuditClient {
    let stream = sios_ipc::transport::connect(socket, Duration::from_secs(30))
        .await
        .unwrap();
    let client = AuditClient::new(client_config(), framed(stream, DEFAULT_MAX_FRAME_BYTES)).spawn();
    // The socket accepts before the log is open; `ready` answers once it is.
    client.ready(ctx()).await.unwrap();
    client
}

fn ctx() -> tarpc::context::Context {
    context_with_timeout(Duration::from_secs(30))
}

/// Medians of one way of recording an action: the whole action, and each
/// of its two calls alone (each call timed on its own; medians taken apart,
/// so the parts' medians need not add up to the whole's exactly).
struct Split {
    total: Duration,
    /// The intent's call: durable and covered by a signed checkpoint.
    intent: Duration,
    /// The outcome's call: durable.
    outcome: Duration,
    /// The same calls as the log itself timed them, stage by stage
    /// (`None`: a baseline build without `record_timings`).
    stages: Option<RecordTimings>,
}

/// Timings of one way of recording an action, to take medians of.
#[derive(Default)]
struct SplitSamples {
    total: Vec<Duration>,
    intent: Vec<Duration>,
    outcome: Vec<Duration>,
}

impl SplitSamples {
    fn push(&mut self, intent: Duration, outcome: Duration) {
        self.total.push(intent + outcome);
        self.intent.push(intent);
        self.outcome.push(outcome);
    }

    fn medians(self, stages: Option<RecordTimings>) -> Split {
        Split {
            total: median(self.total),
            intent: median(self.intent),
            outcome: median(self.outcome),
            stages,
        }
    }
}

/// Medians of the one-action-at-a-time loop.
struct ActionLatency {
    /// Intent (durable + signed), then outcome (durable), through the service.
    service: Split,
    /// The same through an `AuditLog` in this process, committing on this
    /// runtime's thread as the service does.
    in_process: Split,
    /// One disk-free RPC (`ready`), right after the previous one.
    rpc: Duration,
    /// The same after 300 µs with both ends idle, as each call of an action
    /// finds them (the other side waited for a commit meanwhile).
    rpc_after_idle: Duration,
    /// The same sent right after a durable commit at the sending end.
    rpc_after_commit: Duration,
    floor_commit: Duration,
    floor_sign: Duration,
}

impl ActionLatency {
    /// max(one signature, one durable commit) for the intent (they can
    /// overlap) plus one durable commit for the outcome.
    fn floor(&self) -> Duration {
        self.floor_sign.max(self.floor_commit) + self.floor_commit
    }
}

/// A durable write transaction into `db` holding one record, to commit.
fn one_record(db: &Database, key: u64) -> redb::WriteTransaction {
    let mut txn = db.begin_write().unwrap();
    txn.set_durability(Durability::Immediate).unwrap();
    txn.open_table(RAW)
        .unwrap()
        .insert(key, [0xabu8; 260].as_slice())
        .unwrap();
    txn
}

/// One durable commit of one record into `db`, timed (the floor's commit).
fn raw_commit(db: &Database, key: u64) -> Duration {
    let txn = one_record(db, key);
    let t = Instant::now();
    txn.commit().unwrap();
    t.elapsed()
}

/// The CPUs this process may run on (at most [`MAX_CPUS_PROBED`]).
fn allowed_cpus() -> Vec<usize> {
    #[allow(unsafe_code)]
    // SAFETY: `set` is a plain bitmask owned by this frame, and its size is
    // the one passed; pid 0 names the calling thread.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        set
    };
    #[allow(unsafe_code)]
    // SAFETY: `cpu` is below CPU_SETSIZE, the set's capacity.
    let is_set = |cpu: &usize| unsafe { libc::CPU_ISSET(*cpu, &set) };
    (0..libc::CPU_SETSIZE as usize)
        .filter(is_set)
        .take(MAX_CPUS_PROBED)
        .collect()
}

/// A large machine is probed on its first CPUs only, to keep the run short.
const MAX_CPUS_PROBED: usize = 8;

/// Holds the calling thread on `cpu`; false if the kernel refused.
fn hold_on_cpu(cpu: usize) -> bool {
    #[allow(unsafe_code)]
    // SAFETY: as in `allowed_cpus`; `cpu` is below CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// One durable commit's p50 with the committing thread held on each CPU in
/// turn, fastest first. A commit's thread sleeps in the flush and is woken
/// by the disk's completion interrupt: woken on the CPU that took the
/// interrupt, it runs at once; woken on another (idle) CPU, it waits for
/// that CPU to be woken too, which on a virtual machine can cost more than
/// the disk. The spread is how much the floor itself moves with placement.
fn commits_by_cpu(db: &Database) -> Vec<(usize, Duration)> {
    let mut out: Vec<(usize, Duration)> = std::thread::scope(|scope| {
        allowed_cpus()
            .into_iter()
            .filter_map(|cpu| {
                scope
                    .spawn(move || {
                        if !hold_on_cpu(cpu) {
                            return None;
                        }
                        let lat = (0..100u64)
                            .map(|i| {
                                let d = raw_commit(db, 2_000_000 + cpu as u64 * 1000 + i);
                                // Let the CPUs go idle between commits, as
                                // they do between one client's actions.
                                std::thread::sleep(Duration::from_micros(300));
                                d
                            })
                            .collect();
                        Some((cpu, median(lat)))
                    })
                    .join()
                    .expect("commit probe thread")
            })
            .collect()
    });
    out.sort_by_key(|(_, d)| *d);
    out
}

/// Medians of [`sign_while_committing`].
struct Overlap {
    both: Duration,
    commit: Duration,
    sign: Duration,
}

/// One signature on a second thread while this one makes a durable commit,
/// as the service overlaps an intent's signature with its commit: the
/// floor's max(sign, commit) assumes they do not slow each other, which
/// two CPUs shared with the disk's own work need not grant. The signing
/// thread is woken for each pair, as the service's signer is.
fn sign_while_committing(key: &SecretKey, bodies: &[String], path: &std::path::Path) -> Overlap {
    let db = Database::create(path).unwrap();
    let (to_signer, jobs) = std::sync::mpsc::channel::<usize>();
    let (to_main, done) = std::sync::mpsc::channel::<Instant>();
    let (mut both, mut commit, mut sign) = (Vec::new(), Vec::new(), Vec::new());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            for i in jobs {
                std::hint::black_box(key.sign(bodies[i % bodies.len()].as_bytes()));
                to_main.send(Instant::now()).unwrap();
            }
        });
        for i in 0..300u64 {
            let txn = one_record(&db, i);
            let start = Instant::now();
            to_signer.send(i as usize).unwrap();
            txn.commit().unwrap();
            let committed = Instant::now();
            let signed = done.recv().unwrap();
            commit.push(committed - start);
            sign.push(signed - start);
            both.push(committed.max(signed) - start);
        }
        drop(to_signer);
    });
    Overlap {
        both: median(both),
        commit: median(commit),
        sign: median(sign),
    }
}

/// The service's own stage timings so far, on a connection of their own: a
/// baseline build without the `record_timings` method drops the connection
/// that asks, which must not be the one being measured.
async fn service_timings(socket: &std::path::Path) -> Option<RecordTimings> {
    connect(socket).await.record_timings(ctx()).await.ok()?.ok()
}

/// How many calls of 64 intents each of the 64 clients sends.
fn calls_of_64(quick: bool) -> u64 {
    if quick { 5 } else { 15 }
}

/// 64 clients (a connection each), each sending `calls` calls of 64
/// intents back to back: records/s, durable and signed.
async fn sixty_four_clients(socket: &std::path::Path, calls: u64) -> f64 {
    let clients: Vec<AuditClient> =
        futures::future::join_all((0..64).map(|_| connect(socket))).await;
    let took = concurrently(64, |c| {
        let client = clients[c as usize].clone();
        async move {
            for k in 0..calls {
                let drafts = (0..64u64)
                    .map(|i| intent(c * 100_000 + k * 64 + i))
                    .collect();
                client.record(ctx(), drafts).await.unwrap().unwrap();
            }
        }
    })
    .await;
    (64 * calls * 64) as f64 / took.as_secs_f64()
}

/// One client, one action at a time: intent (durable + signed), then outcome
/// (durable). The disk's commit latency swings by 10× within minutes when
/// other work shares it, so each action is paired with a floor sample taken
/// right before it: one raw durable commit on the same disk and one
/// signature. Floor and latency then see the same conditions.
async fn one_action_at_a_time(
    socket: &std::path::Path,
    log: &AuditLog,
    bodies: &[String],
    key: &SecretKey,
    dir: &std::path::Path,
) -> ActionLatency {
    let client = connect(socket).await;
    let committer = tokio::spawn(log.commit_here());
    let floor_db = dir.join("floor.redb");
    let _ = std::fs::remove_file(&floor_db);
    let raw = Database::create(&floor_db).unwrap();
    let (mut lat, mut lat_local) = (SplitSamples::default(), SplitSamples::default());
    let (mut rpc, mut rpc_idle, mut rpc_after_commit) = (Vec::new(), Vec::new(), Vec::new());
    let (mut floor_commit, mut floor_sign) = (Vec::new(), Vec::new());
    let service_stages = service_timings(socket).await;
    let local_stages = log.stats().record_timings();
    for i in 0..300u64 {
        floor_commit.push(raw_commit(&raw, i));
        floor_sign.push(timed_signature(key, &bodies[i as usize % bodies.len()]));
        let (intent_took, outcome_took) = action_through(&client, i).await;
        lat.push(intent_took, outcome_took);
        // One RPC that touches no disk: what each of the two calls above
        // pays for the socket and tarpc alone.
        let t = Instant::now();
        client.ready(ctx()).await.unwrap();
        rpc.push(t.elapsed());
        // Blocking on purpose: this thread's CPU goes idle as it does while
        // the service commits.
        std::thread::sleep(Duration::from_micros(300));
        let t = Instant::now();
        client.ready(ctx()).await.unwrap();
        rpc_idle.push(t.elapsed());
        // The same action in process, without the socket and RPC.
        let t = Instant::now();
        let r = log.record(vec![intent(i)]).await.unwrap();
        let intent_took = t.elapsed();
        let o = outcome(intent(i), r[0].seq);
        let t = Instant::now();
        log.record(vec![o]).await.unwrap();
        lat_local.push(intent_took, t.elapsed());
        // One disk-free RPC sent right after a durable commit returned at
        // the sending end, as each reply of the service is. On this VM the
        // flush leaves its CPU slow for a while, which each of the action's
        // two replies pays (measured 68-74 µs against 33 µs warm).
        raw_commit(&raw, 1_000_000 + i);
        let t = Instant::now();
        client.ready(ctx()).await.unwrap();
        rpc_after_commit.push(t.elapsed());
    }
    committer.abort();
    let _ = committer.await;
    let service_stages = match (service_stages, service_timings(socket).await) {
        (Some(before), Some(after)) => Some(after.since(&before)),
        _ => None,
    };
    let local_stages = log.stats().record_timings().since(&local_stages);
    ActionLatency {
        service: lat.medians(service_stages),
        in_process: lat_local.medians(Some(local_stages)),
        rpc: median(rpc),
        rpc_after_idle: median(rpc_idle),
        rpc_after_commit: median(rpc_after_commit),
        floor_commit: median(floor_commit),
        floor_sign: median(floor_sign),
    }
}

/// One ML-DSA-65 signature of `body`, timed (the floor's signature).
fn timed_signature(key: &SecretKey, body: &str) -> Duration {
    let t = Instant::now();
    std::hint::black_box(key.sign(body.as_bytes()));
    t.elapsed()
}

/// Action `n` through the service: its intent (durable and signed), then its
/// outcome (durable); each call timed.
async fn action_through(client: &AuditClient, n: u64) -> (Duration, Duration) {
    let t = Instant::now();
    let r = client
        .record(ctx(), vec![intent(n)])
        .await
        .unwrap()
        .unwrap();
    let intent_took = t.elapsed();
    let t = Instant::now();
    client
        .record(ctx(), vec![outcome(intent(n), r[0].seq)])
        .await
        .unwrap()
        .unwrap();
    (intent_took, t.elapsed())
}

/// One client sending actions back to back (a closed loop: each intent right
/// after the previous outcome's reply), against a floor taken the same way:
/// blocks of back-to-back raw commits and of signatures, alternating with
/// blocks of actions so that all three see the same conditions. The
/// interleaved measurement above puts other work between actions; this one
/// puts none.
struct BackToBack {
    floor_commit: Duration,
    floor_sign: Duration,
    action: Duration,
}

async fn back_to_back(
    socket: &std::path::Path,
    bodies: &[String],
    key: &SecretKey,
    dir: &std::path::Path,
    rounds: u64,
) -> BackToBack {
    const BLOCK: u64 = 100;
    let client = connect(socket).await;
    let floor_db = dir.join("floor-b2b.redb");
    let _ = std::fs::remove_file(&floor_db);
    let raw = Database::create(&floor_db).unwrap();
    let (mut commits, mut signs, mut actions) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for i in 0..BLOCK {
            commits.push(raw_commit(&raw, round * BLOCK + i));
        }
        for i in 0..BLOCK {
            let body = &bodies[(round * BLOCK + i) as usize % bodies.len()];
            signs.push(timed_signature(key, body));
        }
        for i in 0..BLOCK {
            let (intent_took, outcome_took) =
                action_through(&client, 2_000_000 + round * BLOCK + i).await;
            actions.push(intent_took + outcome_took);
        }
    }
    BackToBack {
        floor_commit: median(commits),
        floor_sign: median(signs),
        action: median(actions),
    }
}

/// The two calls of an action, each beside its part of the floor: where
/// the time over the floor goes.
fn split_rows(rows: &mut Vec<Row>, action: &ActionLatency, split: &Split) {
    let intent_floor = action.floor_sign.max(action.floor_commit);
    let stages = split.stages.as_ref();
    for (what, took, part, floor, stages) in [
        (
            "  its intent alone: durable + signed (p50)",
            split.intent,
            "max(sign, commit)",
            intent_floor,
            stages.map(|s| &s.intents),
        ),
        (
            "  its outcome alone: durable (p50)",
            split.outcome,
            "one commit",
            action.floor_commit,
            stages.map(|s| &s.durable_only),
        ),
    ] {
        row(
            rows,
            what,
            format!("{:.0} µs", us(took)),
            format!(
                "{part} = {:.0} µs; {:+.0} µs over it",
                us(floor),
                us(took) - us(floor)
            ),
        );
        if let Some(stages) = stages {
            stage_row(rows, stages, took, action.floor_commit);
        }
    }
}

/// One call's time as the log measured it, stage by stage (medians, from
/// the log's own histograms), and what is left of the call's median outside
/// the log: the socket both ways and the RPC layers at both ends.
fn stage_row(rows: &mut Vec<Row>, stages: &StageTimings, call: Duration, floor_commit: Duration) {
    let medians: Vec<(&str, Duration)> = stages
        .stages()
        .into_iter()
        .filter_map(|(name, h)| Some((name, h.quantile(0.5)?)))
        .collect();
    if medians.len() < 4 {
        return; // the log did not time these calls
    }
    let inside: Duration = medians.iter().map(|(_, d)| *d).sum();
    let parts: Vec<String> = medians
        .iter()
        .map(|(name, d)| format!("{name} {:.0}", us(*d)))
        .collect();
    row(
        rows,
        "    in the log, stage by stage (p50 each)",
        format!("{:.0} µs", us(inside)),
        format!(
            "{} µs (the commit {:+.0} µs over the floor's); outside the log {:.0} µs",
            parts.join(" + "),
            us(medians[2].1) - us(floor_commit),
            us(call) - us(inside)
        ),
    );
}

fn main() {
    let quick = std::env::var_os("SIOS_BENCH_QUICK").is_some();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    println!(
        "sios-audit bench ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    // Held for the whole run (the descriptor lives until `main` returns).
    let idle = sios_ipc::idle::IdleLatency::request(
        std::env::var_os("SIOS_BENCH_LOW_LATENCY_IDLE").is_some(),
        std::path::Path::new(sios_ipc::idle::CPU_DMA_LATENCY),
    );
    if let Some(said) = idle.describe() {
        println!("  cpu idle for this run: {said}");
    }

    // Anchors.
    let dir = tempdir();
    let db = Database::create(dir.path().join("raw.redb")).unwrap();
    let value = vec![0xabu8; 260];
    let mut commit_lat = Vec::new();
    for i in 0..200u64 {
        commit_lat.push(raw_commit(&db, i));
    }
    let commit = median(commit_lat);
    row(
        &mut rows,
        "anchor: one durable redb commit (p50)",
        format!("{:.0} µs", us(commit)),
        "",
    );
    let by_cpu = commits_by_cpu(&db);
    if let (Some(best), Some(worst)) = (by_cpu.first(), by_cpu.last()) {
        let list: Vec<String> = by_cpu
            .iter()
            .map(|(cpu, d)| format!("CPU {cpu}: {:.0}", us(*d)))
            .collect();
        row(
            &mut rows,
            "anchor: the same, committing thread held on one CPU (p50)",
            format!("{:.0}–{:.0} µs", us(best.1), us(worst.1)),
            format!(
                "{} µs; the CPU taking the disk's interrupts wakes its waiter without a cross-CPU wake-up",
                list.join(", ")
            ),
        );
    }
    let batches = 50u64;
    let t = Instant::now();
    for b in 0..batches {
        let mut txn = db.begin_write().unwrap();
        txn.set_durability(Durability::Immediate).unwrap();
        {
            let mut table = txn.open_table(RAW).unwrap();
            for i in 0..4096u64 {
                table
                    .insert(1_000_000 + b * 4096 + i, value.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let raw_rate = (batches * 4096) as f64 / t.elapsed().as_secs_f64();
    row(
        &mut rows,
        "anchor: redb raw, 4096-record durable batches",
        format!("{raw_rate:.0} rec/s"),
        "(DESIGN.md: ~340k/s)",
    );
    drop(db);

    let key = std::sync::Arc::new(SecretKey::from_seed("sios/audit/bench", [3; 32]).unwrap());
    // Distinct bodies: ML-DSA signing loops a message-dependent number of
    // times, so one repeated message would measure one fixed count.
    let bodies: Vec<String> = (0..300u64)
        .map(|i| {
            format!(
                "sios/audit/bench\n{}\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
                1000 + i
            )
        })
        .collect();
    let mut sign_lat = Vec::new();
    let mut sigs = Vec::new();
    for body in &bodies {
        let t = Instant::now();
        sigs.push(key.sign(body.as_bytes()));
        sign_lat.push(t.elapsed());
    }
    let sign_mean = sign_lat.iter().sum::<Duration>() / sign_lat.len() as u32;
    let sign = median(sign_lat);
    row(
        &mut rows,
        "anchor: one ML-DSA-65 signature (libcrux-ml-dsa, p50)",
        format!("{:.0} µs", us(sign)),
        format!("mean {:.0} µs; the service's signer", us(sign_mean)),
    );
    // The signer used before: the same key and bodies through the `ml-dsa`
    // crate (same bytes out; keys.rs tests check that).
    {
        use ml_dsa::signature::Signer as _;
        let old = ml_dsa::SigningKey::<ml_dsa::MlDsa65>::from_seed(&[3u8; 32].into());
        let mut lat = Vec::new();
        for body in &bodies {
            let t = Instant::now();
            let sig: ml_dsa::Signature<ml_dsa::MlDsa65> = old.sign(body.as_bytes());
            lat.push(t.elapsed());
            std::hint::black_box(sig);
        }
        let old_sign = median(lat);
        row(
            &mut rows,
            "anchor: one ML-DSA-65 signature (ml-dsa crate, p50)",
            format!("{:.0} µs", us(old_sign)),
            format!(
                "the previous signer (DESIGN.md: ~800 µs); libcrux is {:.1}× faster",
                old_sign.as_secs_f64() / sign.as_secs_f64()
            ),
        );
    }
    let mut verify_lat = Vec::new();
    for (body, sig) in bodies.iter().zip(&sigs) {
        let t = Instant::now();
        assert!(key.public().verify(body.as_bytes(), sig));
        verify_lat.push(t.elapsed());
    }
    row(
        &mut rows,
        "anchor: one ML-DSA-65 verification (p50)",
        format!("{:.0} µs", us(median(verify_lat))),
        "",
    );
    let both = sign_while_committing(&key, &bodies, &dir.path().join("overlap.redb"));
    row(
        &mut rows,
        "anchor: a signature and a durable commit at once (p50)",
        format!("{:.0} µs", us(both.both)),
        format!(
            "until both are done; the commit took {:.0} µs, the signature {:.0} µs \
             (from the start, its thread woken); the floor counts the larger alone",
            us(both.commit),
            us(both.sign)
        ),
    );

    // 64 concurrent appenders in process.
    let (rate64, batches64) = runtime.block_on(async {
        let dir = tempdir();
        let log = AuditLog::open(dir.path()).unwrap();
        // As in the service: commits on a runtime thread.
        let committer = tokio::spawn(log.commit_here());
        let per_task = if quick { 20 } else { 60 };
        let took = concurrently(64, |task| {
            let log = log.clone();
            async move {
                for c in 0..per_task {
                    let drafts = (0..64u64)
                        .map(|i| intent(task * 1_000_000 + c * 64 + i))
                        .collect();
                    log.record(drafts).await.unwrap();
                }
            }
        })
        .await;
        let rate = (64 * per_task * 64) as f64 / took.as_secs_f64();
        let batches = log
            .stats()
            .batches
            .load(std::sync::atomic::Ordering::Relaxed);
        committer.abort();
        log.close();
        (rate, batches)
    });
    row(
        &mut rows,
        "append, 64 concurrent appenders × calls of 64 intents",
        format!("{rate64:.0} rec/s"),
        format!(
            "target ≥ 100000 ({:.2}× target, {:.2}× redb raw; {batches64} batches)",
            rate64 / 100_000.0,
            rate64 / raw_rate
        ),
    );

    // Through the service: the real `sios-audit` binary in its own process,
    // as the kernel starts it (its listening socket inherited as fd 3), with
    // its own log; the in-process rows use a second log on the same disk.
    let dir = tempdir();
    let service = Service::spawn(THIS_BUILD.as_ref(), dir.path());
    let log = AuditLog::open(&dir.path().join("local")).unwrap();
    let (svc_rate, (recorder_rate, per_request), svc64_rate) = runtime.block_on(async {
        let connect = || connect(&service.socket);
        let client = connect().await;
        // One client, calls of 1 / 64 / 1024 intents (each answered durable + signed).
        for (size, calls) in [(1u64, 300u64), (64, 60), (1024, 20)] {
            let t = Instant::now();
            for c in 0..calls {
                let drafts = (0..size).map(|i| intent(c * size + i)).collect();
                client.record(ctx(), drafts).await.unwrap().unwrap();
            }
            let rate = (calls * size) as f64 / t.elapsed().as_secs_f64();
            row(
                &mut rows,
                format!("service: 1 client, calls of {size} intents"),
                format!("{rate:.0} rec/s"),
                "durable + signed per call",
            );
        }
        // 64 clients (one connection each), each doing actions back to back.
        let clients: Vec<AuditClient> = futures::future::join_all((0..64).map(|_| connect())).await;
        let per_client = if quick { 30 } else { 100 };
        let took = concurrently(64, |c| {
            let client = clients[c as usize].clone();
            async move {
                for i in 0..per_client {
                    let d = intent(c * 1000 + i);
                    let r = client
                        .record(ctx(), vec![d.clone()])
                        .await
                        .unwrap()
                        .unwrap();
                    let o = outcome(d, r[0].seq);
                    client.record(ctx(), vec![o]).await.unwrap().unwrap();
                }
            }
        })
        .await;
        let rate = (64 * per_client * 2) as f64 / took.as_secs_f64();
        // The same 64 actions at a time, sent as the kernel sends them: its
        // request handlers share one connection through a `Recorder`, which
        // coalesces the calls that meet in flight into shared requests.
        let recorder = {
            let client = connect().await;
            Recorder::new(
                move || Ok(client.clone()),
                Duration::from_secs(30),
                DEFAULT_MAX_FRAME_BYTES,
            )
        };
        let took = concurrently(64, |c| {
            let recorder = recorder.clone();
            async move {
                for i in 0..per_client {
                    let d = intent(c * 1000 + i);
                    let r = recorder.record(vec![d.clone()]).await.unwrap();
                    recorder.record(vec![outcome(d, r[0].seq)]).await.unwrap();
                }
            }
        })
        .await;
        let recorder_rate = (64 * per_client * 2) as f64 / took.as_secs_f64();
        let stats = recorder.stats();
        let per_request = stats.calls as f64 / stats.requests as f64;
        let rate64 = sixty_four_clients(&service.socket, calls_of_64(quick)).await;
        (rate, (recorder_rate, per_request), rate64)
    });
    // One client, one action at a time, as one caller with a single-threaded
    // runtime does it; then the same from a task on the 2-worker runtime,
    // as the kernel's request handlers run (its idle worker must be woken
    // for each reply). `block_on` alone would run the loop on this thread,
    // outside the workers, and add two thread wake-ups to every call.
    let single = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let action = single.block_on(one_action_at_a_time(
        &service.socket,
        &log,
        &bodies,
        &key,
        dir.path(),
    ));
    let closed_loop = single.block_on(back_to_back(
        &service.socket,
        &bodies,
        &key,
        dir.path(),
        if quick { 3 } else { 10 },
    ));
    let action_mt = {
        let (socket, log, bodies) = (service.socket.clone(), log.clone(), bodies.clone());
        let (key, dir) = (key.clone(), dir.path().to_owned());
        runtime.block_on(async move {
            tokio::spawn(
                async move { one_action_at_a_time(&socket, &log, &bodies, &key, &dir).await },
            )
            .await
            .unwrap()
        })
    };
    service.stop();
    log.close();
    row(
        &mut rows,
        "service: 64 clients × calls of 64 intents",
        format!("{svc64_rate:.0} rec/s"),
        format!("{:.2}× the 100000 target", svc64_rate / 100_000.0),
    );
    row(
        &mut rows,
        "service: 64 clients × (intent + outcome), one action each",
        format!("{svc_rate:.0} rec/s"),
        format!(
            "{:.2}× the 100000 target; a connection each, one record per request",
            svc_rate / 100_000.0
        ),
    );
    row(
        &mut rows,
        "  the same 64 at once through the kernel's Recorder",
        format!("{recorder_rate:.0} rec/s"),
        format!(
            "{:.2}× the 100000 target; one connection, {per_request:.1} calls per request",
            recorder_rate / 100_000.0
        ),
    );
    row(
        &mut rows,
        "floor, interleaved with the actions: one durable commit (p50)",
        format!("{:.0} µs", us(action.floor_commit)),
        "",
    );
    row(
        &mut rows,
        "floor, interleaved with the actions: one signature (p50)",
        format!("{:.0} µs", us(action.floor_sign)),
        "",
    );
    let floor = action.floor();
    row(
        &mut rows,
        "service: one client, intent + outcome latency (p50)",
        format!("{:.0} µs", us(action.service.total)),
        format!(
            "floor max(sign, commit) + commit = {:.0} µs → {:.2}× (target ≤ 1.5×)",
            us(floor),
            action.service.total.as_secs_f64() / floor.as_secs_f64()
        ),
    );
    split_rows(&mut rows, &action, &action.service);
    {
        let floor = closed_loop.floor_sign.max(closed_loop.floor_commit) + closed_loop.floor_commit;
        row(
            &mut rows,
            "  the same back to back, nothing between actions (p50)",
            format!("{:.0} µs", us(closed_loop.action)),
            format!(
                "{:.2}× its own floor of {:.0} µs (blocks of back-to-back commits, {:.0} µs, \
                 and signatures, {:.0} µs, alternating with blocks of actions)",
                closed_loop.action.as_secs_f64() / floor.as_secs_f64(),
                us(floor),
                us(closed_loop.floor_commit),
                us(closed_loop.floor_sign)
            ),
        );
    }
    row(
        &mut rows,
        "  the same from a task on a 2-worker runtime (p50)",
        format!("{:.0} µs", us(action_mt.service.total)),
        format!(
            "{:.2}× its own interleaved floor of {:.0} µs",
            action_mt.service.total.as_secs_f64() / action_mt.floor().as_secs_f64(),
            us(action_mt.floor())
        ),
    );
    row(
        &mut rows,
        "in process (no socket): intent + outcome latency (p50)",
        format!("{:.0} µs", us(action.in_process.total)),
        format!(
            "{:.2}× the floor; the rest of the service line is the two RPCs",
            action.in_process.total.as_secs_f64() / floor.as_secs_f64()
        ),
    );
    split_rows(&mut rows, &action, &action.in_process);
    // The disk-free RPC, and what the action in process plus two of them
    // would take.
    for (what, rpc, sum) in [
        (
            "one RPC round trip without disk work (`ready`, p50)",
            action.rpc,
            "in process + 2 RPCs",
        ),
        (
            "  the same after 300 µs idle at both ends (p50)",
            action.rpc_after_idle,
            "in process + 2 of these",
        ),
        (
            "  the same sent right after a durable commit (p50)",
            action.rpc_after_commit,
            "as each reply is; in process + 2 of these",
        ),
    ] {
        let total = action.in_process.total + 2 * rpc;
        row(
            &mut rows,
            what,
            format!("{:.0} µs", us(rpc)),
            format!(
                "{sum} = {:.0} µs = {:.2}× the floor",
                us(total),
                total.as_secs_f64() / floor.as_secs_f64()
            ),
        );
    }

    // Before and after, in the same run: with SIOS_BENCH_BASELINE_AUDIT
    // naming another build of `sios-audit` (say, the last release), the
    // one-client action and the 64 clients' calls of 64 intents are
    // measured with each binary in turn, three rounds, each on a fresh log.
    if let Some(baseline) = std::env::var_os("SIOS_BENCH_BASELINE_AUDIT") {
        for round in 1..=3 {
            for (name, program) in [
                ("this build", std::ffi::OsStr::new(THIS_BUILD)),
                ("baseline", baseline.as_os_str()),
            ] {
                let dir = tempdir();
                let service = Service::spawn(program, dir.path());
                let log = AuditLog::open(&dir.path().join("local")).unwrap();
                let a = single.block_on(one_action_at_a_time(
                    &service.socket,
                    &log,
                    &bodies,
                    &key,
                    dir.path(),
                ));
                service.stop();
                log.close();
                row(
                    &mut rows,
                    format!("A/B round {round}, {name}: intent + outcome (p50)"),
                    format!("{:.0} µs", us(a.service.total)),
                    format!(
                        "{:.2}× its interleaved floor of {:.0} µs",
                        a.service.total.as_secs_f64() / a.floor().as_secs_f64(),
                        us(a.floor())
                    ),
                );
                split_rows(&mut rows, &a, &a.service);
                let dir = tempdir();
                let service = Service::spawn(program, dir.path());
                let rate =
                    runtime.block_on(sixty_four_clients(&service.socket, calls_of_64(quick)));
                service.stop();
                row(
                    &mut rows,
                    format!("A/B round {round}, {name}: 64 clients × calls of 64 intents"),
                    format!("{rate:.0} rec/s"),
                    format!("{:.2}× the 100000 target", rate / 100_000.0),
                );
            }
        }
    }

    // Verify rate on a large export.
    let n: u64 = if quick { 100_000 } else { 1_000_000 };
    let (verify_rate, checkpoints, bundle_mb) = runtime.block_on(async {
        let dir = tempdir();
        let log = AuditLog::open(&dir.path().join("data")).unwrap();
        concurrently(8, |task| {
            let log = log.clone();
            async move {
                let mut done = 0;
                while done < n / 8 {
                    let k = 1024.min(n / 8 - done);
                    let drafts = (0..k).map(|i| event(task * n + done + i)).collect();
                    log.record(drafts).await.unwrap();
                    done += k;
                }
            }
        })
        .await;
        log.flush().await.unwrap();
        let bundle = dir.path().join("export.bundle");
        let summary = sios_audit::export::write_bundle(&log, &bundle)
            .await
            .unwrap();
        let mb = std::fs::metadata(&bundle).unwrap().len() as f64 / 1e6;
        let pubkey = dir.path().join("data").join(sios_audit::keys::PUBLIC_FILE);
        // Warm the page cache the way an auditor's copy would be: read once.
        let _ = std::fs::read(&bundle).unwrap();
        let t = Instant::now();
        let report = sios_audit::verify::verify_bundle(&bundle, &pubkey).unwrap();
        let rate = report.records as f64 / t.elapsed().as_secs_f64();
        log.close();
        (rate, summary.checkpoints, mb)
    });
    row(
        &mut rows,
        format!("verify a {n}-record export ({checkpoints} checkpoints, {bundle_mb:.0} MB)"),
        format!("{verify_rate:.0} rec/s"),
        format!("target ≥ 200000 ({:.2}× target)", verify_rate / 200_000.0),
    );
    let _ = rows;
}
