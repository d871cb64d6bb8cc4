//! The appliance: every supervised process, started in order, routed to, and
//! stopped in reverse order.

use crate::governance::{Governor, Ruling};
use crate::spawn::Program;
use crate::supervisor::{
    self, BrainFacts, ChannelServer, Connection, Slot, SlotCommand, Transition,
};
use sios_config::{Config, StateLayout};
use sios_ipc::audit::{ActionResult, BrainRef, DraftKind, Receipt, RecordDraft};
use sios_ipc::latency::LiveHistogram;
use sios_ipc::recorder::Recorder;
use sios_ipc::{
    BrainStatus, Caller, ControlError, InferRequest, InferResponse, InvokeError, InvokeTimings,
    ProcessState, ProcessStatus, RestartReport, Role, StatusReport, TensorLimits, transport,
};
use sios_launch::ProcessLimits;
use sios_manifest::Manifest;
use sios_policy::{Action, Principal, Resource};
use std::collections::HashMap;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// How long the kernel waits for the audit service to acknowledge a record
/// before it gives up on the action (fails closed).
const AUDIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the appliance could not be set up.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum SetupError {
    #[error("cannot bind socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create {path}: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("brain `{0}` is enabled in the config but has no manifest in the catalog")]
    UnknownBrain(String),
    #[error(
        "[sandbox] mode = \"required\" but sios-kernel is not running as root, which it must to give each brain \
         its own uid, namespaces and cgroup; run it as root or set mode = \"auto\""
    )]
    SandboxUnavailable,
    #[error(
        "cannot give {path} to the sandboxed service's uid {uid}: {source}; the kernel must run as root \
         to sandbox the services (or set [sandbox] mode = \"off\" for development)"
    )]
    HandOver {
        path: PathBuf,
        uid: u32,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] sios_manifest::ManifestError),
    #[error(transparent)]
    Policy(#[from] crate::governance::GovernanceError),
    #[error("{what} not found at {path}; run deploy/setup.sh, or set paths.{field} in the config")]
    Missing {
        what: &'static str,
        field: &'static str,
        path: PathBuf,
    },
}

/// The running appliance.
#[derive(Debug)]
pub struct Appliance {
    config: Config,
    layout: StateLayout,
    /// In start order: audit, memory, then brains by name.
    slots: Vec<Arc<Slot>>,
    by_name: HashMap<String, Arc<Slot>>,
    started: Instant,
    /// Where governed brain calls spend their time (`Kernel::invoke_timings`).
    invoke_stages: InvokeStages,
    /// Whether children run sandboxed (`[sandbox] mode` and who we are).
    sandboxed: bool,
    limits: TensorLimits,
    request_timeout: Duration,
    shutdown: tokio::sync::Notify,
    /// Sends every audit record, coalescing concurrent actions' calls.
    recorder: Recorder,
    /// The policy in force and the client directory.
    pub governor: Governor,
    /// `[performance] low_latency_idle`, held for the appliance's lifetime.
    idle: sios_ipc::idle::IdleLatency,
    /// The live `sios audit tail --follow` sessions.
    pub(crate) followers: crate::audit_follow::Followers,
    /// Held by each operator change that is both saved and applied (brain
    /// enable/disable, policy load): one at a time, so that what is on disk
    /// and what runs cannot end up from two different requests.
    pub(crate) operator_changes: tokio::sync::Mutex<()>,
    /// Each uid's client connections and the bytes of its requests held,
    /// against `[limits]`; shared with the client socket's accept loop.
    pub(crate) connections: Arc<crate::connections::ConnectionLimit>,
    /// The bytes the memory service may be asked to hold at once, by the
    /// calls in flight to it: an eighth of its memory limit, as for a brain
    /// ([`crate::supervisor::REQUEST_SHARE_OF_MEMORY`]); see
    /// `operations::forward_memory_call`.
    pub(crate) memory_in_flight: Arc<sios_ipc::budget::ByteBudget>,
}

/// Who asks for an inference, as the kernel established it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requester {
    /// A client on the client socket, known by SO_PEERCRED.
    Client(Caller),
    /// A brain, known by the private channel the kernel handed it.
    Brain(String),
}

impl std::fmt::Display for Requester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requester::Client(caller) => write!(f, "client uid {}", caller.uid),
            Requester::Brain(name) => write!(f, "brain `{name}`"),
        }
    }
}

impl Requester {
    /// The actor field of its audit records.
    pub fn actor(&self) -> String {
        match self {
            Requester::Client(caller) => format!("uid:{}", caller.uid),
            Requester::Brain(name) => format!("brain:{name}"),
        }
    }

    /// Whose content its requests carry (keys the record's content hashes).
    pub fn subject(&self) -> String {
        self.actor()
    }
}

/// The outcome record that closes `intent`.
pub(crate) fn outcome_of(
    intent: &RecordDraft,
    intent_seq: u64,
    result: ActionResult,
) -> RecordDraft {
    let mut outcome = RecordDraft::new(
        intent.actor.clone(),
        intent.action.clone(),
        intent.resource.clone(),
        DraftKind::Outcome { intent_seq, result },
    );
    outcome.subject = intent.subject.clone();
    outcome
}

fn denied(requester: &Requester, action: &str, resource: &str, ruling: &Ruling) -> InvokeError {
    InvokeError::Denied {
        principal: requester.to_string(),
        action: action.to_owned(),
        resource: resource.to_owned(),
        reason: ruling.reason(),
    }
}

/// The pieces that `start` hands to the slot tasks.
type Pending = Vec<(Arc<Slot>, mpsc::UnboundedReceiver<SlotCommand>)>;

impl Appliance {
    /// Binds every child's socket and prepares its slot; starts nothing.
    pub fn prepare(
        config: Config,
        layout: StateLayout,
    ) -> Result<(Arc<Appliance>, Pending), SetupError> {
        for (what, field, path) in [
            (
                "the brain catalog",
                "catalog_dir",
                &config.paths.catalog_dir,
            ),
            (
                "the models directory",
                "models_dir",
                &config.paths.models_dir,
            ),
            (
                "the ONNX Runtime library",
                "onnxruntime_lib",
                &config.paths.onnxruntime_lib,
            ),
        ] {
            if !path.exists() {
                return Err(SetupError::Missing {
                    what,
                    field,
                    path: path.clone(),
                });
            }
        }
        let catalog = sios_manifest::load_catalog(&config.paths.catalog_dir)?;
        let governor = Governor::start(&config.policy, &layout.active_policy())?;
        for name in &config.brains.enabled {
            if !catalog.iter().any(|m| &m.name == name) {
                return Err(SetupError::UnknownBrain(name.clone()));
            }
        }
        let brains: Vec<&Manifest> = catalog
            .iter()
            .filter(|m| config.brains.enabled.is_empty() || config.brains.enabled.contains(&m.name))
            .collect();

        let bin = config.paths.bin_dir();
        // Brains' private channels are served by the appliance, which exists
        // only once every slot does: the server finds it through this cell.
        let this: Arc<std::sync::OnceLock<std::sync::Weak<Appliance>>> = Arc::default();
        let channel = {
            let this = Arc::clone(&this);
            let max_frame = config.limits.max_frame_bytes;
            ChannelServer(Arc::new(move |brain: &str, stream| {
                if let Some(appliance) = this.get().and_then(std::sync::Weak::upgrade) {
                    // The peer of a socket pair is the kernel itself: the span is
                    // what names the brain when its channel misbehaves.
                    tokio::spawn(tracing::Instrument::instrument(
                        crate::api::serve_brain_channel(
                            stream,
                            appliance,
                            brain.to_owned(),
                            max_frame,
                        ),
                        tracing::warn_span!("brain_channel", brain = %brain),
                    ));
                }
            }))
        };
        let frame = config.limits.max_frame_bytes.to_string();
        let mut pending = Vec::new();
        let sandboxed = sandbox_children(&config.sandbox)?;
        // Names this run of the kernel to the audit service, the same for every
        // audit process it starts: intents left open under another name lost
        // the kernel that would record their outcomes (OAR.md §10).
        let kernel_session = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        for service in ["audit", "memory"] {
            let data_dir = layout.service_dir(service);
            create_private_dir(&data_dir)?;
            let sandbox = if sandboxed {
                let spec = service_sandbox(&config, &layout, service);
                // Files left by an unsandboxed run, an earlier version or
                // `sios keys init` (run as root) become the service's own.
                hand_over(&data_dir, spec.uid, spec.gid)?;
                Some(spec)
            } else {
                None
            };
            let mut program = Program {
                path: bin.join(format!("sios-{service}")),
                args: vec![
                    "--data-dir".into(),
                    data_dir.display().to_string(),
                    "--max-frame-bytes".into(),
                    frame.clone(),
                ],
                env: Vec::new(),
                limits: ProcessLimits {
                    max_open_files: 256,
                },
                sandbox,
            };
            if service == "audit" {
                program
                    .args
                    .extend(["--kernel-session".into(), kernel_session.clone()]);
            } else {
                let memory = &config.memory;
                program.args.extend([
                    "--owner-quota-mib".into(),
                    memory.owner_quota_mib.to_string(),
                    "--capacity-mib".into(),
                    memory.capacity_mib.to_string(),
                    "--max-items".into(),
                    memory.max_items.to_string(),
                ]);
            }
            let role = if service == "audit" {
                Role::Audit
            } else {
                Role::Memory
            };
            let socket = layout.service_socket(service);
            let listener = bind(&socket)?;
            pending.push(Slot::new(
                service.into(),
                role,
                socket,
                listener,
                program,
                None,
                None,
            ));
        }
        create_private_dir(&layout.brain_socket_dir())?;
        for (index, manifest) in brains.into_iter().enumerate() {
            let program = brain_program(&config, &layout, manifest, index, sandboxed)?;
            let facts = BrainFacts::of(manifest);
            let socket = layout.brain_socket(&manifest.name);
            let listener = bind(&socket)?;
            pending.push(Slot::new(
                manifest.name.clone(),
                Role::Brain,
                socket,
                listener,
                program,
                Some(facts),
                Some(channel.clone()),
            ));
        }

        let slots: Vec<Arc<Slot>> = pending.iter().map(|(slot, _)| Arc::clone(slot)).collect();
        let by_name: HashMap<String, Arc<Slot>> = slots
            .iter()
            .map(|s| (s.name.clone(), Arc::clone(s)))
            .collect();
        let audit = Arc::clone(&by_name["audit"]);
        let recorder = Recorder::new(
            move || match audit.connection() {
                Ok(Connection::Audit(client)) => Ok(client),
                _ => Err("the audit service is not ready".into()),
            },
            AUDIT_TIMEOUT,
            config.limits.max_frame_bytes,
        );
        let idle = sios_ipc::idle::IdleLatency::request(
            config.performance.low_latency_idle,
            Path::new(sios_ipc::idle::CPU_DMA_LATENCY),
        );
        let connections = crate::connections::ConnectionLimit::new(
            config.limits.max_connections_per_uid,
            config.limits.max_request_bytes_per_uid,
        );
        let memory_in_flight = crate::supervisor::share_of_memory(
            "the memory service",
            "[sandbox.services] memory_mib",
            config.sandbox.services.memory_mib,
        );
        let appliance = Appliance {
            connections,
            memory_in_flight,
            limits: TensorLimits {
                max_elements: config.limits.max_tensor_elements,
            },
            request_timeout: Duration::from_millis(config.limits.request_timeout_ms),
            config,
            layout,
            slots,
            by_name,
            started: Instant::now(),
            invoke_stages: InvokeStages::default(),
            sandboxed,
            shutdown: tokio::sync::Notify::new(),
            recorder,
            governor,
            idle,
            followers: Default::default(),
            operator_changes: tokio::sync::Mutex::new(()),
        };
        let appliance = Arc::new(appliance);
        let _ = this.set(Arc::downgrade(&appliance));
        Ok((appliance, pending))
    }

    /// Starts every child in order: the audit service, then memory (each
    /// ready, or failed, before the next starts), then all brains at once.
    /// Returns when every child is ready or failed.
    pub async fn start(self: &Arc<Self>, pending: Pending) {
        let launcher = self.config.paths.bin_dir().join("sios-launch");
        let disabled = self.disabled_brains();
        let (events, transitions) = mpsc::unbounded_channel();
        tokio::spawn(Arc::clone(self).record_transitions(transitions));
        let mut brains = Vec::new();
        for (slot, commands) in pending {
            let (ready_tx, ready_rx) = oneshot::channel();
            let role = slot.role;
            let start_disabled = role == Role::Brain && disabled.contains(&slot.name);
            tokio::spawn(supervisor::run_slot(
                slot,
                commands,
                launcher.clone(),
                self.config.supervisor.clone(),
                self.config.limits.max_frame_bytes,
                events.clone(),
                ready_tx,
                start_disabled,
            ));
            if role == Role::Brain {
                brains.push(ready_rx);
            } else {
                let _ = ready_rx.await;
                if role == Role::Audit {
                    self.record_activation("kernel", "policy in force at start")
                        .await;
                }
            }
        }
        for ready in brains {
            let _ = ready.await;
        }
    }

    /// Writes lifecycle transitions to the audit log as they happen.
    async fn record_transitions(
        self: Arc<Self>,
        mut transitions: mpsc::UnboundedReceiver<Transition>,
    ) {
        while let Some(first) = transitions.recv().await {
            let mut batch = vec![first];
            while let Ok(more) = transitions.try_recv() {
                batch.push(more);
            }
            self.record_events(batch).await;
        }
    }

    /// Appends lifecycle transitions to the audit log and waits until they are
    /// durable. A failure is logged, never fatal: the process it describes has
    /// already started or stopped.
    async fn record_events(&self, transitions: Vec<Transition>) {
        let count = transitions.len();
        let events: Vec<RecordDraft> = transitions
            .into_iter()
            .map(|t| {
                let mut event = RecordDraft::new(
                    "kernel",
                    t.action,
                    format!("process:{}", t.name),
                    DraftKind::Event,
                );
                event.detail = t.detail;
                event
            })
            .collect();
        if let Err(reason) = self.record(events).await {
            tracing::warn!(count, "lifecycle events not recorded: {reason}");
        }
    }

    /// Records that the active policy is in force, with its text (stored
    /// content-addressed), so every later decision names a policy the log holds.
    pub async fn record_activation(&self, actor: &str, detail: &str) {
        let active = self.governor.active();
        let mut event = RecordDraft::new(actor, "policy.activate", "appliance", DraftKind::Event);
        event.policy_text = Some(active.text.clone());
        event.detail = format!("{detail}: {}", active.loaded.content_hash());
        if let Err(reason) = self.record(vec![event]).await {
            tracing::error!(
                "the active policy could not be recorded: {reason}; requests will be refused until it is"
            );
        }
    }

    /// The request path of `invoke`. Each step happens in this order, and a
    /// step that refuses ends the request before any later step runs.
    pub async fn invoke(
        &self,
        requester: &Requester,
        brain: &str,
        request: InferRequest,
    ) -> Result<InferResponse, InvokeError> {
        self.invoke_recorded(requester, brain, request)
            .await
            .map(|(response, _)| response)
    }

    /// [`Appliance::invoke`], also returning the sequence numbers of the
    /// intent and outcome records it left.
    pub async fn invoke_recorded(
        &self,
        requester: &Requester,
        brain: &str,
        request: InferRequest,
    ) -> Result<(InferResponse, [u64; 2]), InvokeError> {
        let mut clock = StageClock::start();
        // 1. Resolve: the brain must exist in this appliance.
        let slot = self
            .by_name
            .get(brain)
            .filter(|s| s.role == Role::Brain)
            .ok_or_else(|| InvokeError::UnknownBrain {
                name: brain.to_owned(),
            })?;
        let facts = slot
            .brain_facts()
            .ok_or_else(|| InvokeError::UnknownBrain {
                name: brain.to_owned(),
            })?;
        // 2. Validate against the manifest, so a malformed request never
        //    reaches the brain.
        sios_ipc::tensor::validate(&request.inputs, &facts.inputs, self.limits).map_err(
            |source| InvokeError::BadInput {
                name: brain.to_owned(),
                source,
            },
        )?;
        //    And no larger than the brain can hold: past its memory limit
        //    the brain would be killed mid-request, and any client could
        //    keep it down by asking again.
        let bytes = sios_ipc::tensor::encoded_bytes_bound(&request.inputs) as u64;
        if bytes > facts.max_request_bytes() {
            return Err(InvokeError::TooLarge {
                name: brain.to_owned(),
                bytes,
                limit: facts.max_request_bytes(),
                memory_mib: facts.memory_mib,
            });
        }
        if let (Some(max_rows), Some(rows)) = (facts.max_rows, facts.rows_of(&request.inputs))
            && rows > max_rows
        {
            return Err(InvokeError::TooManyRows {
                name: brain.to_owned(),
                rows,
                max_rows,
            });
        }
        // 3. Decide, by the policy alone (which knows each brain's callees
        //    from its manifest), and 4. record the intent durably, with the
        //    decision, before anything runs. A denial is recorded as an
        //    intent and a "denied" outcome, and nothing else happens.
        let (action, action_name) = match requester {
            Requester::Client(_) => (Action::Invoke, "invoke"),
            Requester::Brain(_) => (Action::CallBrain, "brain.call"),
        };
        let ruling = self.governor.decide(
            self.principal(requester),
            action,
            Resource::Brain(self.policy_brain(brain, &facts)),
        );
        let mut intent = RecordDraft::new(
            requester.actor(),
            action_name,
            format!("brain:{brain}"),
            DraftKind::Intent,
        );
        intent.decision = Some(ruling.recorded.clone());
        intent.detail = ruling.detail();
        intent.brain =
            sios_ipc::audit::Digest::from_hex(&facts.model_sha256).map(|model_sha256| BrainRef {
                id: brain.to_owned(),
                model_sha256,
            });
        intent.subject = Some(requester.subject());
        intent.input_digests = vec![sios_ipc::audit::Digest(sios_ipc::tensor::digest(
            &request.inputs,
        ))];
        if !ruling.allowed() {
            let outcome = outcome_of(&intent, 0, ActionResult::Denied);
            self.record_denial(intent, outcome)
                .await
                .map_err(|reason| InvokeError::Unrecorded { reason })?;
            return Err(denied(
                requester,
                action_name,
                &format!("brain `{brain}`"),
                &ruling,
            ));
        }
        //    Wait for the brain's turn: the requests in flight to it hold at
        //    most what one request may (`BrainFacts::in_flight`), so that
        //    several large ones sent at once cannot together get it killed.
        //    The wait counts against the request's timeout; nothing has run.
        let timed_out = || InvokeError::Timeout {
            name: brain.to_owned(),
            timeout_ms: self.request_timeout.as_millis() as u64,
        };
        let waiting = Instant::now();
        let turn = tokio::time::timeout(self.request_timeout, facts.in_flight.wait_to_serve(bytes))
            .await
            .map_err(|_| timed_out())?;
        let Ok(Connection::Brain(client)) = slot.connection() else {
            let (state, last_error) = match slot.connection() {
                Err(e) => e,
                Ok(_) => (slot.state(), None),
            };
            return Err(not_ready(brain, state, last_error));
        };
        let decided = clock.lap();
        let intent_seq = self
            .record(vec![intent.clone()])
            .await
            .map_err(|reason| InvokeError::Unrecorded { reason })?[0]
            .seq;
        let intent_recorded = clock.lap();
        // 5. Route.
        let ctx =
            transport::context_with_timeout(self.request_timeout.saturating_sub(waiting.elapsed()));
        let outcome = client.infer(ctx, request).await;
        // The brain holds the request no longer: the next may go.
        drop(turn);
        let brain_answered = clock.lap();
        // 6. Record the outcome, and only then answer.
        let result = match outcome {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(source)) => Err(InvokeError::Brain {
                name: brain.to_owned(),
                source,
            }),
            Err(tarpc::client::RpcError::DeadlineExceeded) => Err(timed_out()),
            Err(err) => {
                slot.connection_lost();
                Err(InvokeError::Lost {
                    name: brain.to_owned(),
                    reason: err.to_string(),
                })
            }
        };
        let mut outcome = outcome_of(
            &intent,
            intent_seq,
            match &result {
                Ok(_) => ActionResult::Ok,
                Err(InvokeError::Lost { .. }) => ActionResult::ProcessDied,
                Err(err) => ActionResult::Error(err.to_string()),
            },
        );
        if let Ok(response) = &result {
            outcome.output_digests = vec![sios_ipc::audit::Digest(sios_ipc::tensor::digest(
                &response.outputs,
            ))];
        }
        let outcome_seq = self
            .record(vec![outcome])
            .await
            .map_err(|reason| InvokeError::Unrecorded { reason })?[0]
            .seq;
        let stages = &self.invoke_stages;
        stages.decided.record(decided);
        stages.intent_recorded.record(intent_recorded);
        stages.brain_answered.record(brain_answered);
        stages.outcome_recorded.record(clock.lap());
        if result.is_ok() {
            slot.requests.fetch_add(1, Ordering::Relaxed);
        }
        result.map(|response| (response, [intent_seq, outcome_seq]))
    }

    /// Where governed brain calls spent their time since the kernel started.
    pub fn invoke_timings(&self) -> InvokeTimings {
        let stages = &self.invoke_stages;
        InvokeTimings {
            decided: stages.decided.snapshot(),
            intent_recorded: stages.intent_recorded.snapshot(),
            brain_answered: stages.brain_answered.snapshot(),
            outcome_recorded: stages.outcome_recorded.snapshot(),
        }
    }

    /// The policy's view of a requester.
    pub fn principal(&self, requester: &Requester) -> Principal {
        match requester {
            Requester::Client(caller) => {
                self.governor.client(caller.uid, caller.gid, &caller.groups)
            }
            Requester::Brain(name) => match self.facts_of(name) {
                Some(facts) => Principal::Brain(self.policy_brain(name, &facts)),
                // A channel outlived its brain's manifest: it gets nothing.
                None => Principal::Service(sios_policy::Service {
                    name: format!("unknown-brain-{name}"),
                }),
            },
        }
    }

    /// The policy's view of a brain, from its manifest.
    fn policy_brain(&self, name: &str, facts: &BrainFacts) -> sios_policy::Brain {
        sios_policy::Brain {
            name: name.to_owned(),
            kind: match facts.kind {
                sios_manifest::BrainKind::Domain => sios_policy::BrainKind::Domain,
                sios_manifest::BrainKind::Operational => sios_policy::BrainKind::Operational,
            },
            sensitivity: facts.sensitivity,
            callees: facts.calls.iter().cloned().collect(),
            namespaces: facts.namespaces.iter().cloned().collect(),
        }
    }

    /// Appends `drafts` to the audit log; returns once they are durable (and,
    /// for intents, covered by a signed checkpoint). Fails closed: without the
    /// audit service nothing is recorded, so nothing may run.
    /// Concurrent actions' calls share requests (`sios_ipc::recorder`).
    pub async fn record(&self, drafts: Vec<RecordDraft>) -> Result<Vec<Receipt>, String> {
        self.recorder
            .record(drafts)
            .await
            .map_err(|err| err.to_string())
    }

    /// Records a denied request: its intent (with the deny decision) and a
    /// "denied" outcome, in one call.
    async fn record_denial(
        &self,
        intent: RecordDraft,
        mut outcome: RecordDraft,
    ) -> Result<(), String> {
        let receipts = self.record(vec![intent]).await?;
        if let DraftKind::Outcome { intent_seq, .. } = &mut outcome.kind {
            *intent_seq = receipts[0].seq;
        }
        self.record(vec![outcome]).await.map(|_| ())
    }

    /// `sios status`: the kernel first, then every child in start order,
    /// the services' health checked (`Slot::checked_status`).
    pub async fn status(&self) -> StatusReport {
        let kernel = ProcessStatus {
            name: "kernel".into(),
            role: Role::Kernel,
            pid: Some(std::process::id()),
            state: ProcessState::Ready,
            restarts: 0,
            uptime_s: Some(self.started.elapsed().as_secs_f64()),
            socket: Some(self.layout.kernel_socket().display().to_string()),
            requests: 0,
            last_error: None,
            holds: None,
            in_flight: None,
        };
        let mut children =
            futures::future::join_all(self.slots.iter().map(|s| s.checked_status())).await;
        if let Some(memory) = children.iter_mut().find(|p| p.role == Role::Memory) {
            memory.in_flight = Some(sios_ipc::InFlight::of(&self.memory_in_flight));
        }
        StatusReport {
            state_dir: self.layout.root.display().to_string(),
            version: env!("CARGO_PKG_VERSION").into(),
            processes: std::iter::once(kernel).chain(children).collect(),
            disk: crate::disk::space(&self.layout.root),
            cpu_idle: self.idle.describe(),
            clients: self.connections.loads(),
        }
    }

    /// Restarts one child; every other process keeps running untouched.
    pub async fn restart(&self, name: &str) -> Result<RestartReport, ControlError> {
        let slot = self.by_name.get(name).ok_or_else(|| {
            if name == "kernel" {
                ControlError::NotRestartable {
                    name: name.into(),
                    reason: "the kernel is the supervisor; restart the appliance with `sios down` and `sios up`".into(),
                }
            } else {
                ControlError::UnknownProcess { name: name.into() }
            }
        })?;
        let old_pid = slot.pid();
        tracing::info!(process = name, "restart requested by operator");
        if !slot.command(SlotCommand::Restart).await {
            return Err(ControlError::ShuttingDown);
        }
        Ok(RestartReport {
            name: name.into(),
            old_pid,
            new_pid: slot.pid(),
            state: slot.state(),
        })
    }

    /// The policy's view of a supervised process: a brain with its manifest
    /// attributes, else a plain process.
    pub fn process_resource(&self, name: &str) -> Resource {
        match self.facts_of(name) {
            Some(facts) => Resource::Brain(self.policy_brain(name, &facts)),
            None => Resource::Process(sios_policy::Process {
                name: name.to_owned(),
            }),
        }
    }

    /// The slot of a supervised process.
    pub(crate) fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.by_name.get(name)
    }

    pub(crate) fn layout(&self) -> &StateLayout {
        &self.layout
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// True if the brain is part of this appliance (whatever its state).
    pub fn has_brain(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|s| s.role == Role::Brain)
    }

    /// What the kernel keeps of brain `name`'s manifest; `None` for a name
    /// that is not a brain's.
    pub(crate) fn facts_of(&self, name: &str) -> Option<Arc<BrainFacts>> {
        self.by_name.get(name).and_then(|s| s.brain_facts())
    }

    /// The brain's `[labels]` (output name → labels), empty if none.
    pub fn labels_of(&self, name: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        self.facts_of(name)
            .map(|facts| facts.labels.clone())
            .unwrap_or_default()
    }

    /// `sios brain list`: every brain, in catalog order.
    pub fn brains(&self) -> Vec<BrainStatus> {
        self.slots
            .iter()
            .filter(|s| s.role == Role::Brain)
            .filter_map(|s| brain_status(s))
            .collect()
    }

    pub(crate) fn brain_slot(&self, name: &str) -> Result<&Arc<Slot>, ControlError> {
        match self.by_name.get(name) {
            Some(slot) if slot.role == Role::Brain => Ok(slot),
            Some(_) => Err(ControlError::NotABrain { name: name.into() }),
            None => Err(ControlError::UnknownProcess { name: name.into() }),
        }
    }

    fn status_of(slot: &Slot) -> Result<BrainStatus, ControlError> {
        brain_status(slot).ok_or_else(|| ControlError::NotABrain {
            name: slot.name.clone(),
        })
    }

    /// Stops a brain and keeps it stopped, across appliance restarts too.
    pub async fn disable_brain(&self, name: &str) -> Result<BrainStatus, ControlError> {
        self.set_brain_disabled(name, true).await
    }

    /// Starts a disabled brain; returns when it is ready or failed.
    pub async fn enable_brain(&self, name: &str) -> Result<BrainStatus, ControlError> {
        self.set_brain_disabled(name, false).await
    }

    /// Records the choice first (so it holds across restarts), then tells
    /// the brain's slot.
    async fn set_brain_disabled(
        &self,
        name: &str,
        disabled: bool,
    ) -> Result<BrainStatus, ControlError> {
        let slot = self.brain_slot(name)?;
        let _one_at_a_time = self.operator_changes.lock().await;
        self.persist_disabled(name, disabled)?;
        let command = if disabled {
            SlotCommand::Disable
        } else {
            SlotCommand::Enable
        };
        if !slot.command(command).await {
            return Err(ControlError::ShuttingDown);
        }
        Self::status_of(slot)
    }

    /// Re-reads the brain's manifest and restarts it on the model it pins.
    /// A manifest that does not load leaves the running brain untouched.
    pub async fn reload_brain(&self, name: &str) -> Result<BrainStatus, ControlError> {
        let slot = self.brain_slot(name)?;
        let path = self.config.paths.catalog_dir.join(format!("{name}.toml"));
        let reload_error = |reason: String| ControlError::Reload {
            name: name.into(),
            reason,
        };
        let manifest = Manifest::load(&path).map_err(|e| reload_error(e.to_string()))?;
        // Check the pinned model now, so that a wrong hash is refused while the
        // old brain still serves.
        sios_manifest::read_verified(&self.config.paths.models_dir, &manifest.model)
            .map_err(|e| reload_error(e.to_string()))?;
        // The program and its sandbox come from the manifest too (a missing
        // program is refused here, likewise). The brain keeps its place in
        // the catalog, hence its uid.
        let index = self
            .slots
            .iter()
            .filter(|s| s.role == Role::Brain)
            .position(|s| s.name == name)
            .expect("brain_slot found it");
        let program = brain_program(&self.config, &self.layout, &manifest, index, self.sandboxed)
            .map_err(|e| reload_error(e.to_string()))?;
        slot.set_program(program);
        slot.set_brain_facts(BrainFacts::of(&manifest));
        tracing::info!(brain = name, sha256 = %manifest.model.sha256, "reloading");
        if slot.state() != ProcessState::Disabled && !slot.command(SlotCommand::Restart).await {
            return Err(ControlError::ShuttingDown);
        }
        Self::status_of(slot)
    }

    /// The brains an operator disabled (an absent or unreadable file: none,
    /// with a warning for the unreadable case).
    fn disabled_brains(&self) -> Vec<String> {
        let path = self.layout.disabled_brains();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), error = %err, "ignoring an unreadable list of disabled brains");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        }
    }

    /// Adds or removes `name` in the disabled list, atomically and durably.
    fn persist_disabled(&self, name: &str, disabled: bool) -> Result<(), ControlError> {
        let mut names = self.disabled_brains();
        names.retain(|n| n != name);
        if disabled {
            names.push(name.to_owned());
        }
        names.sort();
        let persist = |e: std::io::Error| ControlError::Persist(e.to_string());
        let dir = self.layout.kernel_dir();
        create_private_dir(&dir).map_err(|e| ControlError::Persist(e.to_string()))?;
        let json =
            serde_json::to_vec_pretty(&names).map_err(|e| ControlError::Persist(e.to_string()))?;
        write_atomically(&self.layout.disabled_brains(), &json).map_err(persist)
    }

    /// Asks the kernel's main loop to stop the appliance.
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }

    /// Resolves when someone called [`Appliance::request_shutdown`].
    pub async fn shutdown_requested(&self) {
        self.shutdown.notified().await;
    }

    /// Stops every child in reverse start order: all brains (together), then
    /// memory, then audit; each stop is recorded in the audit log before the
    /// next group stops, so every stop but the audit service's own is on record.
    pub async fn stop(&self) {
        // Their outcomes need the audit service, which stops last.
        self.followers.end_all().await;
        let (brains, services): (Vec<_>, Vec<_>) =
            self.slots.iter().partition(|s| s.role == Role::Brain);
        futures::future::join_all(brains.iter().map(|s| s.command(SlotCommand::Stop))).await;
        self.record_events(brains.iter().map(|s| stopped(s)).collect())
            .await;
        for slot in services.iter().rev().filter(|s| s.role != Role::Audit) {
            slot.command(SlotCommand::Stop).await;
            self.record_events(vec![stopped(slot)]).await;
        }
        if let Some(audit) = self.by_name.get("audit") {
            audit.command(SlotCommand::Stop).await;
        }
    }
}

/// Whether brains and services are sandboxed, by `[sandbox] mode` and who we are.
fn sandbox_children(config: &sios_config::SandboxConfig) -> Result<bool, SetupError> {
    use sios_config::SandboxMode;
    let root = nix::unistd::geteuid().is_root();
    match (config.mode, root) {
        (SandboxMode::Off, _) => {
            tracing::warn!(
                "[sandbox] mode = \"off\": brains and services run WITHOUT their sandbox (development only)"
            );
            Ok(false)
        }
        (_, true) => Ok(true),
        (SandboxMode::Auto, false) => {
            tracing::warn!(
                "sios-kernel is not running as root, so brains and services run WITHOUT their sandbox (namespaces, \
                 own uids, seccomp, cgroups); run the appliance as root, or set [sandbox] mode = \"required\" to refuse this"
            );
            Ok(false)
        }
        (SandboxMode::Required, false) => Err(SetupError::SandboxUnavailable),
    }
}

/// The sandbox of a service (`audit` or `memory`): its own uid and gid, its
/// own state directory writable and nothing else of the host's files, the
/// limits of `[sandbox.services]`. Public so that tests can run a hostile
/// program under exactly this profile.
pub fn service_sandbox(
    config: &Config,
    layout: &StateLayout,
    service: &str,
) -> sios_launch::SandboxSpec {
    let id = if service == "audit" {
        sios_launch::AUDIT_UID
    } else {
        sios_launch::MEMORY_UID
    };
    sios_launch::SandboxSpec::service(&sios_launch::ServiceSandbox {
        name: service.to_owned(),
        uid: id,
        gid: id,
        state_dir: layout.service_dir(service),
        memory_mib: config.sandbox.services.memory_mib,
        max_processes: config.sandbox.services.max_processes,
        cgroup_path: sios_launch::cgroup_path(&layout.root, service),
    })
}

/// Makes `dir` and everything under it owned by `uid`:`gid`, leaving modes
/// alone (the audit secret key stays 0600: readable by the audit service's
/// uid and root only). Symbolic links are changed themselves, never
/// followed, so a link planted in the directory cannot hand over a file
/// elsewhere. Called before the service starts: no incarnation of it is
/// alive (each dies with its kernel), so nothing changes the tree while it
/// is walked.
pub fn hand_over(dir: &Path, uid: u32, gid: u32) -> Result<(), SetupError> {
    use std::os::unix::fs::MetadataExt as _;
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| SetupError::HandOver { path, uid, source }
    };
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(err(&path))?;
        if meta.uid() != uid || meta.gid() != gid {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(err(&path))?;
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(err(&path))? {
                pending.push(entry.map_err(err(&path))?.path());
            }
        }
    }
    Ok(())
}

/// glibc's allocator settings for brains (see [`brain_program`]): blocks of
/// 128 KiB and more are mapped on their own and unmapped when freed.
pub const BRAIN_MALLOC_TUNABLES: &str = "glibc.malloc.mmap_threshold=131072";

/// How to run brain number `index` of the catalog: its program (from its
/// manifest, in the kernel's bin directory), its arguments, and its sandbox
/// when `sandboxed`. Public so that benchmarks spawn a brain exactly as the
/// kernel does.
pub fn brain_program(
    config: &Config,
    layout: &StateLayout,
    manifest: &Manifest,
    index: usize,
    sandboxed: bool,
) -> Result<Program, SetupError> {
    let manifest_path = config
        .paths
        .catalog_dir
        .join(format!("{}.toml", manifest.name));
    Ok(Program {
        path: manifest.program_path(&config.paths.bin_dir())?,
        args: vec![
            "--manifest".into(),
            manifest_path.display().to_string(),
            "--models-dir".into(),
            config.paths.models_dir.display().to_string(),
            "--onnxruntime".into(),
            config.paths.onnxruntime_lib.display().to_string(),
            "--max-frame-bytes".into(),
            config.limits.max_frame_bytes.to_string(),
        ],
        env: vec![
            // ONNX Runtime writes telemetry files unless told not to.
            ("ORT_DISABLE_TELEMETRY".into(), "1".into()),
            // A fixed mmap threshold: glibc otherwise raises it to the size
            // of the largest block freed, so after one large request every
            // later buffer that size comes from the heap and stays held when
            // freed. A brain must give back what a request took: with the
            // default, a 64 MiB brain kept 15-22 MB more after each 7.2 MB
            // request until its memory limit killed it (2026-11-29).
            ("GLIBC_TUNABLES".into(), BRAIN_MALLOC_TUNABLES.into()),
        ],
        limits: ProcessLimits {
            max_open_files: manifest.sandbox.max_open_files,
        },
        sandbox: sandboxed.then(|| brain_sandbox(config, layout, manifest, &manifest_path, index)),
    })
}

/// The sandbox of brain number `index` of the catalog: its own uid and gid,
/// only its own files, the limits its manifest asks for.
fn brain_sandbox(
    config: &Config,
    layout: &StateLayout,
    manifest: &Manifest,
    manifest_path: &Path,
    index: usize,
) -> sios_launch::SandboxSpec {
    let id = sios_launch::BRAIN_UID_BASE + index as u32;
    let mut model_files = vec![config.paths.models_dir.join(&manifest.model.file)];
    if let Some(tokenizer) = manifest.tokenizer() {
        model_files.push(config.paths.models_dir.join(&tokenizer.file));
    }
    sios_launch::SandboxSpec::brain(&sios_launch::BrainSandbox {
        name: manifest.name.clone(),
        uid: id,
        gid: id,
        manifest: manifest_path.to_owned(),
        model_files,
        onnxruntime: config.paths.onnxruntime_lib.clone(),
        extra_ro_paths: config
            .sandbox
            .extra_ro_paths
            .get(&manifest.name)
            .cloned()
            .unwrap_or_default(),
        memory_mib: manifest.sandbox.memory_mib,
        cpu_weight: manifest.sandbox.cpu_weight,
        max_pids: manifest.sandbox.max_pids,
        cgroup_path: sios_launch::cgroup_path(&layout.root, &manifest.name),
    })
}

fn brain_status(slot: &Slot) -> Option<BrainStatus> {
    let facts = slot.brain_facts()?;
    let status = slot.status();
    Some(BrainStatus {
        name: slot.name.clone(),
        kind: match facts.kind {
            sios_manifest::BrainKind::Domain => "domain".into(),
            sios_manifest::BrainKind::Operational => "operational".into(),
        },
        state: status.state,
        pid: status.pid,
        model_sha256: facts.model_sha256.clone(),
        requests: status.requests,
    })
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new
/// file, never a torn one. The kernel's own state, in its private directory.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    sios_ipc::new_file::replace(path, bytes, 0o644)
}

fn stopped(slot: &Slot) -> Transition {
    Transition {
        name: slot.name.clone(),
        action: "process.stopped",
        detail: "stopped on appliance shutdown".into(),
    }
}

fn not_ready(brain: &str, state: ProcessState, last_error: Option<String>) -> InvokeError {
    let hint = match state {
        ProcessState::Failed => format!(
            "it failed ({}); fix the cause, then `sios restart {brain}`",
            last_error.as_deref().unwrap_or("see the kernel log")
        ),
        ProcessState::Disabled => {
            format!("an operator disabled it; `sios brain enable {brain}` turns it back on")
        }
        ProcessState::Stopped => "the appliance is stopping".into(),
        _ => "it is starting or restarting; retry in a moment".into(),
    };
    InvokeError::NotReady {
        name: brain.to_owned(),
        state: state.as_str().into(),
        hint,
    }
}

/// Binds a listening socket at `path`, replacing a stale one. Only the
/// kernel's own run directory is ever passed here, and the kernel holds its
/// lock, so a socket file found there is a leftover of a dead kernel.
pub fn bind(path: &Path) -> Result<UnixListener, SetupError> {
    let bind_err = |source| SetupError::Bind {
        path: path.to_owned(),
        source,
    };
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(bind_err(e)),
    }
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    listener.set_nonblocking(true).map_err(bind_err)?;
    Ok(listener)
}

/// Creates `path` (and parents) with mode 0700, and tightens it if it exists.
pub fn create_private_dir(path: &Path) -> Result<(), SetupError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let err = |source| SetupError::CreateDir {
        path: path.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// [`InvokeTimings`] being recorded: one histogram per stage.
#[derive(Debug, Default)]
struct InvokeStages {
    decided: LiveHistogram,
    intent_recorded: LiveHistogram,
    brain_answered: LiveHistogram,
    outcome_recorded: LiveHistogram,
}

/// Times consecutive stages: each lap is the time since the previous one.
struct StageClock(Instant);

impl StageClock {
    fn start() -> StageClock {
        StageClock(Instant::now())
    }

    fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let lap = now - self.0;
        self.0 = now;
        lap
    }
}
