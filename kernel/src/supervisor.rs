//! Supervision of the kernel's children, OTP `one_for_one` style.
//!
//! Each child has a [`Slot`]: its fixed description, its listening socket
//! (bound once by the kernel and handed to every incarnation, so the path
//! never changes and never dangles), and its live state. One task per slot,
//! [`run_slot`], owns the child's process: it starts it, waits for its
//! readiness probe, watches it, and when it exits unexpectedly restarts it
//! after an exponential back-off — unless it has restarted more than
//! `max_restarts` times within `restart_period_s` (its *restart intensity*),
//! in which case it is marked `failed` and left for an operator. A child that
//! exits with status 78 (EX_CONFIG: a permanent misconfiguration such as a
//! model whose hash does not match its manifest) is marked failed at once.
//! Other children are never touched.

use crate::child_log;
use crate::spawn::{self, Program};
use sios_config::SupervisorConfig;
use sios_ipc::budget::ByteBudget;
use sios_ipc::{
    AuditClient, BrainClient, MemoryClient, ProcessState, ProcessStatus, Role, ServiceInfo,
    TensorSpec, transport,
};
use sios_launch::EXIT_CONFIG;
use std::collections::VecDeque;
use std::os::unix::net::UnixListener;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// The live connection to a ready child.
#[derive(Clone, Debug)]
pub enum Connection {
    Brain(BrainClient),
    Audit(AuditClient),
    Memory(MemoryClient),
}

/// What the kernel knows about a brain from its manifest. Replaced as a
/// whole by `sios brain reload`.
#[derive(Clone, Debug)]
pub struct BrainFacts {
    pub kind: sios_manifest::BrainKind,
    /// The brains it may call (manifest `capabilities.calls`).
    pub calls: Vec<String>,
    /// Output name → label per position (manifest `[labels]`).
    pub labels: std::collections::BTreeMap<String, Vec<String>>,
    /// 0 public … 3 restricted (manifest `sensitivity`).
    pub sensitivity: u8,
    /// Memory namespaces it may use (manifest `capabilities.memory_namespaces`).
    pub namespaces: Vec<String>,
    pub model_sha256: String,
    pub inputs: Vec<TensorSpec>,
    /// What it declares it answers (see [`BrainFacts::answer_bytes_bound`]).
    pub outputs: Vec<TensorSpec>,
    /// Its cgroup memory limit (manifest `sandbox.memory_mib`).
    pub memory_mib: u64,
    /// Most rows one request may hold (manifest `sandbox.max_rows`).
    pub max_rows: Option<u64>,
    /// The bytes of the requests in flight to this brain, at most
    /// [`BrainFacts::max_request_bytes`] between them: a request waits its
    /// turn in the kernel until the brain holds few enough.
    pub in_flight: Arc<ByteBudget>,
}

/// A request to a brain may take at most this share of the brain's memory
/// limit, and so may all the requests in flight to it together: the brain
/// runs one at a time, but reads and decodes the others while it does (two
/// requests of 7.2 MB sent at once got a 64 MiB brain killed, 2026-11-29,
/// before brains gave back what each request took; with that fixed, one at a
/// time peaks at 40 MB there). A brain holds a request about three times
/// over while serving it (the frame read, the decoded tensors, and the model's copy of them or,
/// for a brain that asks another, the frame it sends on), beside its model;
/// its model's working memory is bounded apart from that, by running large
/// batches in parts (`brains/host/src/rows.rs`). Measured on 64 MiB brains
/// before this bound: 8 MB requests served, 10.8 MB (anomaly-detect) and
/// 16.7 MB (safety-screen) got the brain killed by the OOM killer.
pub const REQUEST_SHARE_OF_MEMORY: u64 = 8;

/// What the requests in flight to a process with a memory limit of
/// `memory_mib` may make it hold at once: [`REQUEST_SHARE_OF_MEMORY`] of it.
/// One for each brain and one for the memory service.
pub fn share_of_memory(
    owner: impl Into<String>,
    setting: &'static str,
    memory_mib: u64,
) -> Arc<ByteBudget> {
    ByteBudget::new(owner, setting, (memory_mib << 20) / REQUEST_SHARE_OF_MEMORY)
}

impl BrainFacts {
    /// The most bytes one request to this brain may take (as
    /// [`sios_ipc::tensor::encoded_bytes_bound`] counts them).
    pub fn max_request_bytes(&self) -> u64 {
        self.in_flight.limit_bytes()
    }

    /// The rows of `inputs`: the largest first dimension among the inputs
    /// the manifest declares batch-major (first dimension -1), if any.
    pub fn rows_of(&self, inputs: &[sios_ipc::Tensor]) -> Option<u64> {
        inputs
            .iter()
            .filter(|t| {
                self.inputs
                    .iter()
                    .any(|spec| spec.name == t.name && spec.shape.first() == Some(&-1))
            })
            .filter_map(|t| t.shape.first().copied())
            .max()
    }

    /// The most bytes its answer to `inputs` may take, from the outputs its
    /// manifest declares: each variable dimension (`-1`) at the largest
    /// variable dimension of the request (its batch, mostly; rows × rows for
    /// a pairwise matrix), at each element's size, plus each tensor's
    /// header. An output of text (`BYTES`) cannot be sized beforehand and
    /// counts nothing here; its bytes are counted once made.
    pub fn answer_bytes_bound(&self, inputs: &[sios_ipc::Tensor]) -> u64 {
        let variable = inputs
            .iter()
            .filter_map(|t| {
                let spec = self.inputs.iter().find(|s| s.name == t.name)?;
                spec.shape
                    .iter()
                    .zip(&t.shape)
                    .filter(|(declared, _)| **declared < 0)
                    .map(|(_, &actual)| actual)
                    .max()
            })
            .max()
            .unwrap_or(1);
        self.outputs
            .iter()
            .map(|out| {
                let Some(size) = out.datatype.element_size() else {
                    return 0;
                };
                let elements = out.shape.iter().fold(1u64, |n, &dim| {
                    n.saturating_mul(u64::try_from(dim).unwrap_or(variable))
                });
                let header = sios_ipc::tensor::tensor_header_bytes(&out.name, out.shape.len());
                elements
                    .saturating_mul(size as u64)
                    .saturating_add(header as u64)
            })
            .fold(0u64, u64::saturating_add)
    }

    /// What the kernel keeps of `manifest` (at start and at each reload).
    pub fn of(manifest: &sios_manifest::Manifest) -> BrainFacts {
        BrainFacts {
            in_flight: share_of_memory(
                format!("brain `{}`", manifest.name),
                "sandbox.memory_mib",
                manifest.sandbox.memory_mib,
            ),
            labels: manifest.labels.clone(),
            sensitivity: manifest.sensitivity.level(),
            namespaces: manifest.capabilities.memory_namespaces.clone(),
            calls: manifest.capabilities.calls.clone(),
            kind: manifest.kind,
            model_sha256: manifest.model.sha256.clone(),
            inputs: manifest.input_specs(),
            outputs: manifest.output_specs(),
            memory_mib: manifest.sandbox.memory_mib,
            max_rows: manifest.sandbox.max_rows,
        }
    }
}

/// Operator commands for one slot's task.
#[derive(Debug)]
pub enum SlotCommand {
    /// Stop the current incarnation (if any) and start a fresh one; answers
    /// once the new one is ready or has failed.
    Restart(oneshot::Sender<()>),
    /// Stop for good (appliance shutdown); answers once the process is gone.
    Stop(oneshot::Sender<()>),
    /// Stop and stay stopped until enabled; answers once the process is gone.
    Disable(oneshot::Sender<()>),
    /// Start again after `Disable` (or after a failure); answers once ready
    /// or failed. A running process is left alone.
    Enable(oneshot::Sender<()>),
}

#[derive(Debug)]
struct Live {
    state: ProcessState,
    pid: Option<u32>,
    restarts: u32,
    ready_since: Option<Instant>,
    last_error: Option<String>,
    connection: Option<Connection>,
}

/// Serves a brain's private channel to the kernel (the kernel's end of the
/// socket pair handed to each incarnation), knowing the brain by name.
#[derive(Clone)]
pub struct ChannelServer(pub Arc<ServeChannel>);

/// The function behind a [`ChannelServer`]: brain name, kernel end of its channel.
pub type ServeChannel = dyn Fn(&str, tokio::net::UnixStream) + Send + Sync;

impl std::fmt::Debug for ChannelServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChannelServer")
    }
}

/// One supervised child.
#[derive(Debug)]
pub struct Slot {
    pub name: String,
    pub role: Role,
    pub socket: PathBuf,
    brain: Option<std::sync::RwLock<Arc<BrainFacts>>>,
    /// How to start the next incarnation; a brain reload may replace it.
    program: std::sync::RwLock<Arc<Program>>,
    listener: UnixListener,
    /// For brains: serves the private channel each incarnation gets.
    channel: Option<ChannelServer>,
    live: Mutex<Live>,
    /// Requests routed to this child and answered successfully.
    pub requests: AtomicU64,
    /// The last line the child wrote to stderr: often the reason it died.
    last_stderr: Mutex<Option<String>>,
    commands: mpsc::UnboundedSender<SlotCommand>,
    /// Woken by [`Slot::connection_lost`]: the slot's task restarts the child.
    lost: tokio::sync::Notify,
}

impl Slot {
    /// Creates a slot and the receiving end of its command queue.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        role: Role,
        socket: PathBuf,
        listener: UnixListener,
        program: Program,
        brain: Option<BrainFacts>,
        channel: Option<ChannelServer>,
    ) -> (Arc<Slot>, mpsc::UnboundedReceiver<SlotCommand>) {
        let (commands, queue) = mpsc::unbounded_channel();
        let slot = Slot {
            name,
            role,
            socket,
            brain: brain.map(|facts| std::sync::RwLock::new(Arc::new(facts))),
            program: std::sync::RwLock::new(Arc::new(program)),
            listener,
            channel,
            live: Mutex::new(Live {
                // Not yet spawned: to an operator, that is starting.
                state: ProcessState::Starting,
                pid: None,
                restarts: 0,
                ready_since: None,
                last_error: None,
                connection: None,
            }),
            requests: AtomicU64::new(0),
            last_stderr: Mutex::new(None),
            commands,
            lost: tokio::sync::Notify::new(),
        };
        (Arc::new(slot), queue)
    }

    /// The brain's manifest facts; `None` for services.
    pub fn brain_facts(&self) -> Option<Arc<BrainFacts>> {
        self.brain
            .as_ref()
            .map(|facts| Arc::clone(&facts.read().unwrap_or_else(|p| p.into_inner())))
    }

    /// Replaces the brain's manifest facts (before restarting it on a new model).
    /// Replaces how the next incarnation is started (the running one is
    /// not touched).
    pub fn set_program(&self, program: Program) {
        *self.program.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(program);
    }

    fn program(&self) -> Arc<Program> {
        Arc::clone(&self.program.read().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn set_brain_facts(&self, new: BrainFacts) {
        if let Some(facts) = &self.brain {
            *facts.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The connection, if the child is ready.
    pub fn connection(&self) -> Result<Connection, (ProcessState, Option<String>)> {
        let live = self.live();
        match (&live.connection, live.state) {
            (Some(conn), ProcessState::Ready) => Ok(conn.clone()),
            _ => Err((live.state, live.last_error.clone())),
        }
    }

    pub fn state(&self) -> ProcessState {
        self.live().state
    }

    pub fn pid(&self) -> Option<u32> {
        self.live().pid
    }

    pub fn status(&self) -> ProcessStatus {
        let live = self.live();
        ProcessStatus {
            name: self.name.clone(),
            role: self.role,
            pid: live.pid,
            state: live.state,
            restarts: live.restarts,
            uptime_s: live.ready_since.map(|t| t.elapsed().as_secs_f64()),
            socket: Some(self.socket.display().to_string()),
            requests: self.requests.load(Ordering::Relaxed),
            last_error: match (&live.last_error, live.state) {
                (Some(why), ProcessState::Ready) => Some(format!("restarted after: {why}")),
                (why, _) => why.clone(),
            },
            holds: None,
            in_flight: self
                .brain_facts()
                .map(|facts| sios_ipc::InFlight::of(&facts.in_flight)),
        }
    }

    /// [`Slot::status`], with a ready service asked for its health first: a
    /// service that answers but cannot do its job (its storage refuses
    /// writes) or does not answer in time is reported `degraded`, with why.
    pub async fn checked_status(&self) -> ProcessStatus {
        let mut status = self.status();
        let (fault, holds) = match self.connection() {
            Ok(Connection::Audit(client)) => health(
                &self.name,
                client
                    .ready(transport::context_with_timeout(HEALTH_TIMEOUT))
                    .await,
            ),
            Ok(Connection::Memory(client)) => health(
                &self.name,
                client
                    .ready(transport::context_with_timeout(HEALTH_TIMEOUT))
                    .await,
            ),
            // A brain has no storage; its failures surface as exits.
            Ok(Connection::Brain(_)) | Err(_) => (None, None),
        };
        status.holds = holds;
        if let Some(fault) = fault {
            status.state = ProcessState::Degraded;
            status.last_error = Some(fault);
        }
        status
    }

    /// Sends a command and waits for its answer.
    pub async fn command(&self, make: impl FnOnce(oneshot::Sender<()>) -> SlotCommand) -> bool {
        let (done, answered) = oneshot::channel();
        self.commands.send(make(done)).is_ok() && answered.await.is_ok()
    }

    /// Called by the router when a ready child's connection broke mid-request:
    /// no further requests are sent to it, and its slot's task restarts it
    /// (a crash like any other, with back-off and an audit record), since a
    /// child that is alive but unreachable would otherwise never serve again.
    pub fn connection_lost(&self) {
        let mut live = self.live();
        if live.state == ProcessState::Ready {
            live.connection = None;
            live.state = ProcessState::Restarting;
            self.lost.notify_one();
        }
    }
}

/// A state change worth telling the audit log and the operator about.
#[derive(Debug, Clone)]
pub struct Transition {
    pub name: String,
    pub action: &'static str,
    pub detail: String,
}

/// How one incarnation ended.
enum Ended {
    /// The process exited on its own.
    Exited(String, bool),
    /// An operator asked for a restart.
    Restart(oneshot::Sender<()>),
    /// The appliance is stopping.
    Stop(oneshot::Sender<()>),
    /// An operator disabled it.
    Disable(oneshot::Sender<()>),
}

/// Crashes within the restart period: the restart intensity.
struct CrashHistory {
    period: Duration,
    times: VecDeque<Instant>,
    consecutive: u32,
}

impl CrashHistory {
    /// Records a crash of an incarnation that was up for `uptime`; returns how
    /// many crashes fall within the period.
    fn record(&mut self, uptime: Option<Duration>) -> u32 {
        let now = Instant::now();
        if uptime.is_some_and(|u| u >= self.period) {
            self.consecutive = 0;
        }
        self.consecutive += 1;
        self.times.push_back(now);
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.period)
        {
            self.times.pop_front();
        }
        self.times.len() as u32
    }

    /// An operator's deliberate restart or enable forgives past crashes.
    fn forgive(&mut self) {
        self.times.clear();
        self.consecutive = 0;
    }
}

/// How long a child whose connection broke may take to exit on its own
/// before it is stopped and restarted as unreachable.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Owns one child for the life of the appliance.
#[allow(clippy::too_many_arguments)]
pub async fn run_slot(
    slot: Arc<Slot>,
    mut commands: mpsc::UnboundedReceiver<SlotCommand>,
    launcher: PathBuf,
    config: SupervisorConfig,
    max_frame_bytes: usize,
    events: mpsc::UnboundedSender<Transition>,
    first_ready: oneshot::Sender<()>,
    start_disabled: bool,
) {
    // Who is waiting for the next incarnation to be ready (or to fail to be):
    // the kernel's start sequence, an operator's `restart` or `enable`.
    let mut waiters = vec![first_ready];
    let mut crashes = CrashHistory {
        period: Duration::from_secs(config.restart_period_s),
        times: VecDeque::new(),
        consecutive: 0,
    };
    let emit = |action: &'static str, detail: String| {
        let _ = events.send(Transition {
            name: slot.name.clone(),
            action,
            detail,
        });
    };
    // Parked (failed or disabled): nothing runs until an operator acts.
    let mut parked = start_disabled.then_some(ProcessState::Disabled);

    loop {
        if let Some(state) = parked.take() {
            {
                let mut live = slot.live();
                live.state = state;
                live.pid = None;
                live.ready_since = None;
                live.connection = None;
            }
            notify(&mut waiters);
            match commands.recv().await {
                Some(SlotCommand::Restart(done)) => {
                    crashes.forgive();
                    {
                        let mut live = slot.live();
                        live.restarts += 1;
                        live.last_error = None;
                    }
                    emit(
                        "process.restart",
                        format!("restarted by operator while {}", state.as_str()),
                    );
                    waiters.push(done);
                }
                Some(SlotCommand::Enable(done)) => {
                    crashes.forgive();
                    slot.live().last_error = None;
                    emit("process.enabled", "enabled by operator".into());
                    waiters.push(done);
                }
                Some(SlotCommand::Disable(done)) => {
                    if state != ProcessState::Disabled {
                        emit("process.disabled", "disabled by operator".into());
                    }
                    parked = Some(ProcessState::Disabled);
                    let _ = done.send(());
                    continue;
                }
                Some(SlotCommand::Stop(done)) => {
                    slot.live().state = ProcessState::Stopped;
                    let _ = done.send(());
                    return;
                }
                None => return,
            }
        }

        let ended = run_incarnation(
            &slot,
            &mut commands,
            &launcher,
            &config,
            max_frame_bytes,
            &emit,
            &mut waiters,
        )
        .await;
        match ended {
            Ended::Stop(done) => {
                slot.live().state = ProcessState::Stopped;
                notify(&mut waiters);
                let _ = done.send(());
                return;
            }
            Ended::Disable(done) => {
                emit("process.disabled", "disabled by operator".into());
                parked = Some(ProcessState::Disabled);
                let _ = done.send(());
            }
            Ended::Restart(done) => {
                // An operator restart is deliberate: it does not count against
                // the restart intensity, and it clears a failed state.
                crashes.forgive();
                {
                    let mut live = slot.live();
                    live.restarts += 1;
                    live.last_error = None;
                }
                emit("process.restart", "restarted by operator".into());
                waiters.push(done);
            }
            Ended::Exited(reason, permanent) => {
                let uptime = slot.live().ready_since.map(|t| t.elapsed());
                let recent = crashes.record(uptime);
                if permanent || recent > config.max_restarts {
                    let why = if permanent {
                        format!(
                            "{reason}; not restarting: this is a configuration problem a restart cannot fix"
                        )
                    } else {
                        format!(
                            "{reason}; crashed {recent} times within {} s (limit {}), giving up until an operator runs `sios restart {}`",
                            config.restart_period_s, config.max_restarts, slot.name
                        )
                    };
                    tracing::error!(process = %slot.name, "{why}");
                    slot.live().last_error = Some(why.clone());
                    emit("process.failed", why);
                    parked = Some(ProcessState::Failed);
                    continue;
                }
                let backoff = backoff(&config, crashes.consecutive);
                tracing::warn!(process = %slot.name, "{reason}; restarting in {} ms", backoff.as_millis());
                {
                    let mut live = slot.live();
                    live.state = ProcessState::Restarting;
                    live.last_error = Some(reason.clone());
                }
                emit("process.exited", reason);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    command = commands.recv() => match command {
                        Some(SlotCommand::Restart(done) | SlotCommand::Enable(done)) => waiters.push(done),
                        Some(SlotCommand::Disable(done)) => {
                            emit("process.disabled", "disabled by operator".into());
                            parked = Some(ProcessState::Disabled);
                            let _ = done.send(());
                            continue;
                        }
                        Some(SlotCommand::Stop(done)) => {
                            slot.live().state = ProcessState::Stopped;
                            let _ = done.send(());
                            return;
                        }
                        None => return,
                    }
                }
                slot.live().restarts += 1;
            }
        }
    }
}

fn notify(waiters: &mut Vec<oneshot::Sender<()>>) {
    for waiter in waiters.drain(..) {
        let _ = waiter.send(());
    }
}

fn backoff(config: &SupervisorConfig, consecutive_crashes: u32) -> Duration {
    let exponent = consecutive_crashes.saturating_sub(1).min(20);
    let ms = config.backoff_initial_ms.saturating_mul(1u64 << exponent);
    Duration::from_millis(ms.min(config.backoff_max_ms))
}

/// Starts the child, waits until it is ready, and watches it until it ends.
async fn run_incarnation(
    slot: &Arc<Slot>,
    commands: &mut mpsc::UnboundedReceiver<SlotCommand>,
    launcher: &std::path::Path,
    config: &SupervisorConfig,
    max_frame_bytes: usize,
    emit: &impl Fn(&'static str, String),
    waiters: &mut Vec<oneshot::Sender<()>>,
) -> Ended {
    let spawned_at = Instant::now();
    // A fresh private channel per incarnation: a dead brain's channel dies
    // with it, and nothing else ever holds the other end.
    let channel = match slot
        .channel
        .as_ref()
        .map(|_| std::os::unix::net::UnixStream::pair())
        .transpose()
    {
        Ok(pair) => pair,
        Err(err) => {
            return Ended::Exited(format!("could not create its kernel channel: {err}"), false);
        }
    };
    let spawned = spawn::spawn(
        &slot.name,
        launcher,
        &slot.program(),
        &slot.listener,
        channel.as_ref().map(|(_, child_end)| child_end),
    );
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            let reason = format!("could not start {}: {err}", launcher.display());
            return Ended::Exited(reason, true);
        }
    };
    if let (Some(server), Some((kernel_end, child_end))) = (&slot.channel, channel) {
        drop(child_end);
        let serving = kernel_end
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(kernel_end));
        match serving {
            Ok(stream) => (server.0)(&slot.name, stream),
            Err(err) => {
                tracing::error!(process = %slot.name, error = %err, "cannot serve its kernel channel")
            }
        }
    }
    let pid = child.id();
    {
        let mut live = slot.live();
        live.state = ProcessState::Starting;
        live.pid = pid;
        live.ready_since = None;
        live.connection = None;
    }
    *slot.last_stderr.lock().unwrap_or_else(|p| p.into_inner()) = None;
    let stderr_done = child
        .stderr
        .take()
        .map(|stderr| tokio::spawn(forward_stderr(Arc::clone(slot), stderr)));

    // Phase 1: until ready.
    let ready_timeout = Duration::from_millis(config.ready_timeout_ms);
    let probe = probe_ready(slot, max_frame_bytes, ready_timeout);
    tokio::pin!(probe);
    let ready = loop {
        tokio::select! {
            probed = &mut probe => break probed,
            status = child.wait() => {
                let status = status.ok();
                if let Some(task) = stderr_done { let _ = task.await; }
                return exited(slot, status, "before becoming ready");
            }
            command = commands.recv() => {
                if let Some(SlotCommand::Enable(done)) = command {
                    // Already starting: the caller waits for readiness like the rest.
                    waiters.push(done);
                    continue;
                }
                stop_child(&mut child, config).await;
                return from_command(command);
            }
        }
    };
    let connection = match ready {
        Ok(connection) => connection,
        Err(reason) => {
            stop_child(&mut child, config).await;
            if let Some(task) = stderr_done {
                let _ = task.await;
            }
            let stderr = slot
                .last_stderr
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let reason = match stderr {
                Some(line) => format!("{reason} (last words: {line})"),
                None => reason,
            };
            return Ended::Exited(reason, false);
        }
    };
    {
        let mut live = slot.live();
        live.state = ProcessState::Ready;
        live.ready_since = Some(Instant::now());
        // `last_error` stays: after an automatic restart, `sios status` still
        // says why the previous incarnation died (seccomp, the OOM killer…)
        // until an operator restarts or enables it.
        live.connection = Some(connection);
    }
    let took = spawned_at.elapsed();
    tracing::info!(process = %slot.name, pid = ?pid, ready_ms = took.as_millis() as u64, "ready");
    emit(
        "process.ready",
        format!("pid {} ready in {} ms", pid.unwrap_or(0), took.as_millis()),
    );
    notify(waiters);

    // Phase 2: serving, until it exits or is told to stop.
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.ok();
                if let Some(task) = stderr_done { let _ = task.await; }
                return exited(slot, status, "while serving");
            }
            command = commands.recv() => {
                if let Some(SlotCommand::Enable(done)) = command {
                    // Enabling a running process changes nothing.
                    let _ = done.send(());
                    continue;
                }
                {
                    let mut live = slot.live();
                    live.connection = None;
                    live.state = ProcessState::Stopped;
                }
                stop_child(&mut child, config).await;
                return from_command(command);
            }
            () = slot.lost.notified() => {
                if slot.live().connection.is_some() {
                    // A notice meant for an earlier incarnation.
                    continue;
                }
                // A dying child breaks its connection before its exit is
                // seen (its launcher exits after it): wait a moment, so that
                // its death, with its reason, is what gets reported.
                if let Ok(status) = tokio::time::timeout(EXIT_GRACE, child.wait()).await {
                    if let Some(task) = stderr_done { let _ = task.await; }
                    return exited(slot, status.ok(), "while serving");
                }
                stop_child(&mut child, config).await;
                if let Some(task) = stderr_done { let _ = task.await; }
                return Ended::Exited(
                    "its connection to the kernel broke mid-request while it still ran; \
                     restarted so that it serves again"
                        .into(),
                    false,
                );
            }
        }
    }
}

fn from_command(command: Option<SlotCommand>) -> Ended {
    match command {
        Some(SlotCommand::Restart(done)) => Ended::Restart(done),
        Some(SlotCommand::Stop(done)) => Ended::Stop(done),
        Some(SlotCommand::Disable(done)) => Ended::Disable(done),
        // Handled by the callers before they stop the child.
        Some(SlotCommand::Enable(done)) => Ended::Restart(done),
        // The kernel is going away: behave as a stop nobody waits for.
        None => Ended::Stop(oneshot::channel().0),
    }
}

fn exited(slot: &Slot, status: Option<ExitStatus>, when: &str) -> Ended {
    {
        let mut live = slot.live();
        live.connection = None;
        live.ready_since = None;
    }
    let stderr = slot
        .last_stderr
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let how = describe_exit(status);
    // The launcher's own explanation ("sios-launch: <name>: killed by
    // seccomp …") reads better without its prefix.
    let prefix = format!("sios-launch: {}: ", slot.name);
    let reason = match stderr {
        Some(line) => format!(
            "{how} {when}: {}",
            line.strip_prefix(&prefix).unwrap_or(&line)
        ),
        None => format!("{how} {when}"),
    };
    let permanent = status.and_then(|s| s.code()) == Some(EXIT_CONFIG);
    Ended::Exited(reason, permanent)
}

/// "exited with status 3", "killed by SIGKILL", …
pub fn describe_exit(status: Option<ExitStatus>) -> String {
    match status {
        None => "vanished (its exit status could not be read)".into(),
        Some(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => {
                let name = nix::sys::signal::Signal::try_from(sig)
                    .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned());
                format!("killed by {name}")
            }
            _ => "exited".into(),
        },
    }
}

/// SIGTERM, then SIGKILL after the grace period.
async fn stop_child(child: &mut tokio::process::Child, config: &SupervisorConfig) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let grace = Duration::from_millis(config.stop_timeout_ms);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!(
            pid = pid.as_raw(),
            "did not stop within {} ms of SIGTERM; sending SIGKILL",
            grace.as_millis()
        );
    }
    let _ = child.kill().await;
}

/// How long `sios status` waits for a service's health answer. The answer
/// touches no disk, so only a wedged service takes this long.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// What service `name`'s `ready` answer says is wrong with it, if
/// anything, and what it says it holds.
fn health(
    name: &str,
    answer: Result<ServiceInfo, tarpc::client::RpcError>,
) -> (Option<String>, Option<String>) {
    match answer {
        Ok(info) => (info.fault, info.holds),
        Err(tarpc::client::RpcError::DeadlineExceeded) => (
            Some(format!(
                "did not answer its health check within {} s: it may be wedged; if this \
                 persists, `sios restart {name}`",
                HEALTH_TIMEOUT.as_secs()
            )),
            None,
        ),
        Err(err) => (Some(format!("its health check failed: {err}")), None),
    }
}

/// Connects to the child's socket and asks it whether it is ready.
async fn probe_ready(
    slot: &Slot,
    max_frame_bytes: usize,
    timeout: Duration,
) -> Result<Connection, String> {
    let ctx = transport::context_with_timeout(timeout);
    let stream = transport::connect(&slot.socket, timeout)
        .await
        .map_err(|e| format!("could not connect to {}: {e}", slot.socket.display()))?;
    let config = transport::client_config();
    let not_ready = |e: tarpc::client::RpcError| match e {
        tarpc::client::RpcError::DeadlineExceeded => {
            format!("did not become ready within {} ms", timeout.as_millis())
        }
        other => format!("readiness probe failed: {other}"),
    };
    match slot.role {
        Role::Brain => {
            let client =
                BrainClient::new(config, transport::framed(stream, max_frame_bytes)).spawn();
            let info = client.describe(ctx).await.map_err(not_ready)?;
            if let Some(facts) = slot.brain_facts()
                && info.model_sha256 != facts.model_sha256
            {
                return Err(format!(
                    "reports model {} but its manifest pins {}",
                    info.model_sha256, facts.model_sha256
                ));
            }
            Ok(Connection::Brain(client))
        }
        Role::Audit => {
            let client =
                AuditClient::new(config, transport::framed(stream, max_frame_bytes)).spawn();
            client.ready(ctx).await.map_err(not_ready)?;
            Ok(Connection::Audit(client))
        }
        Role::Memory => {
            let client =
                MemoryClient::new(config, transport::framed(stream, max_frame_bytes)).spawn();
            client.ready(ctx).await.map_err(not_ready)?;
            Ok(Connection::Memory(client))
        }
        Role::Kernel => Err("the kernel does not supervise itself".into()),
    }
}

/// Copies the child's stderr to the kernel's, line by line and tagged with
/// its name, remembering the last line as the likely reason for a death.
/// Bounded ([`child_log`]): a long line is cut, a flood is thinned, and
/// what was dropped is said.
async fn forward_stderr(slot: Arc<Slot>, stderr: tokio::process::ChildStderr) {
    let mut reader = tokio::io::BufReader::new(stderr);
    let mut throttle = child_log::Throttle::new(child_log::LINES_PER_SECOND);
    let name = &slot.name;
    loop {
        let line = match child_log::next_line(&mut reader, child_log::MAX_LINE_BYTES).await {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(err) => {
                tracing::warn!(process = %name, error = %err, "cannot read its stderr any more");
                break;
            }
        };
        let text = String::from_utf8_lossy(&line.text);
        let cut = match line.cut {
            0 => String::new(),
            n => format!(" [… {n} more bytes dropped]"),
        };
        let trimmed = text.trim();
        if !trimmed.is_empty() {
            *slot.last_stderr.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(format!("{trimmed}{cut}"));
        }
        match throttle.admit(Instant::now()) {
            child_log::Verdict::Pass { dropped } => {
                say_dropped(name, dropped);
                eprintln!("[{name}] {text}{cut}");
            }
            child_log::Verdict::Drop => {}
        }
    }
    say_dropped(name, throttle.unreported());
}

fn say_dropped(name: &str, dropped: u64) {
    if dropped > 0 {
        eprintln!(
            "[{name}] ({dropped} lines dropped: more than {} a second)",
            child_log::LINES_PER_SECOND
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog_facts(brain: &str) -> BrainFacts {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../brains/catalog/{brain}.toml"));
        BrainFacts::of(&sios_manifest::Manifest::load(&path).expect("a catalog manifest"))
    }

    /// An answer's bound follows the brain's declared outputs and the
    /// request's batch, and is never below what the brain really answers
    /// (checked against the encoded sizes of answers of those shapes).
    #[test]
    fn an_answer_is_bounded_by_the_declared_outputs_at_the_requests_batch() {
        use sios_ipc::{DataType, Tensor, TensorData};
        let packed = |name: &str, datatype: DataType, shape: Vec<u64>| {
            let bytes = shape.iter().product::<u64>() as usize * datatype.element_size().unwrap();
            Tensor {
                name: name.into(),
                datatype,
                shape,
                data: TensorData::Packed(vec![0; bytes]),
            }
        };
        let encoded = |outputs: &[Tensor]| sios_ipc::budget::encoded_size(&outputs.to_vec());
        // 200 texts in, 200 embeddings of 384 floats out.
        let embedding = catalog_facts("text-embedding");
        let texts = Tensor::from_strings("text", vec![200], &vec!["a"; 200]);
        let bound = embedding.answer_bytes_bound(std::slice::from_ref(&texts));
        let answer = [packed("sentence_embedding", DataType::Fp32, vec![200, 384])];
        assert!(bound >= encoded(&answer), "{bound} < {}", encoded(&answer));
        assert!(bound < encoded(&answer) + 1024, "{bound}");
        // 10 rows in: a 10 × 10 similarity matrix and 10 cluster ids out.
        let dedup = catalog_facts("dedup");
        let rows = dedup
            .inputs
            .iter()
            .map(|spec| {
                let shape = spec
                    .shape
                    .iter()
                    .map(|&d| if d < 0 { 10 } else { d as u64 })
                    .collect();
                packed(&spec.name, spec.datatype, shape)
            })
            .collect::<Vec<_>>();
        let bound = dedup.answer_bytes_bound(&rows);
        let answer = [
            packed("similarity", DataType::Fp32, vec![10, 10]),
            packed("duplicate_of", DataType::Int64, vec![10]),
        ];
        assert!(bound >= encoded(&answer), "{bound} < {}", encoded(&answer));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let config = SupervisorConfig {
            backoff_initial_ms: 20,
            backoff_max_ms: 100,
            ..SupervisorConfig::default()
        };
        let ms: Vec<u128> = (1..=5).map(|n| backoff(&config, n).as_millis()).collect();
        assert_eq!(ms, vec![20, 40, 80, 100, 100]);
        assert_eq!(backoff(&config, u32::MAX).as_millis(), 100);
    }

    #[test]
    fn exits_are_described_in_words() {
        assert_eq!(
            describe_exit(Some(ExitStatus::from_raw(3 << 8))),
            "exited with status 3"
        );
        assert_eq!(
            describe_exit(Some(ExitStatus::from_raw(9))),
            "killed by SIGKILL"
        );
        assert_eq!(
            describe_exit(Some(ExitStatus::from_raw(31))),
            "killed by SIGSYS"
        );
    }
}
