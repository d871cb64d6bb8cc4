//! The tarpc services sios processes offer each other, and their messages.
//!
//! ```text
//!  sios (CLI) ──Kernel──▶ sios-kernel ──Brain──▶ sios-brain
//!                                    ├─Audit──▶ sios-audit
//!                                    └─Memory─▶ sios-memory
//! ```
//! Only the kernel is a client of the brain, audit and memory services; clients
//! only ever reach the kernel. Every error type here is serialisable so that a
//! failure keeps its meaning across the socket.

use crate::memory::{
    Item, ListPage, ListRequest, MemoryError, PutRequest, PutResponse, SearchRequest,
    SearchResponse,
};
use crate::tensor::{Tensor, TensorError, TensorSpec};
use serde::{Deserialize, Serialize};

/// An inference request: named input tensors (Open Inference Protocol shape).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct InferRequest {
    /// Optional caller-chosen id, echoed in the response.
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
}

/// An inference response: the model's output tensors.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct InferResponse {
    pub id: Option<String>,
    /// The brain that answered.
    pub model_name: String,
    /// The sha256 of the model file that produced the outputs.
    pub model_version: String,
    pub outputs: Vec<Tensor>,
    /// The texts the model read only the start of (empty when it read all
    /// of every text): a tokenising brain's model takes a bounded number of
    /// tokens, and its outputs are about that part alone.
    pub truncated: Vec<Truncation>,
}

/// A text a tokenising brain read only the start of.
///
/// Its model takes at most `max_tokens` tokens (the tokenizer's special
/// tokens included); the text's first `chars_read` characters filled them,
/// and the other `chars_total - chars_read` never reached the model.
/// Characters are Unicode scalar values, so the counts mean the same to
/// every client whatever its string encoding.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Truncation {
    /// The input tensor whose element was cut.
    pub input: String,
    /// The element's index in that tensor (row-major).
    pub element: u64,
    pub chars_read: u64,
    pub chars_total: u64,
    pub max_tokens: u64,
}

impl std::fmt::Display for Truncation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "read the first {} of {} characters of `{}` element {} (its model takes at most {} tokens)",
            self.chars_read, self.chars_total, self.input, self.element, self.max_tokens
        )
    }
}

/// What a brain says about itself once it is ready to serve.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BrainInfo {
    pub name: String,
    pub pid: u32,
    pub model_sha256: String,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Requests this process has served since it started.
    pub requests_served: u64,
}

/// Why a brain could not answer.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum BrainError {
    #[error(transparent)]
    Input(#[from] TensorError),
    #[error("input `{name}` could not be tokenised: {reason}")]
    Tokenize { name: String, reason: String },
    #[error("ONNX Runtime failed to run the model: {0}")]
    Runtime(String),
    #[error("the model produced output `{name}` of a type sios cannot carry: {reason}")]
    Output { name: String, reason: String },
}

/// The brain host's service; the kernel is its only client.
#[tarpc::service]
pub trait Brain {
    /// Returns once the model is loaded; used by the kernel as the readiness probe.
    async fn describe() -> BrainInfo;
    /// Runs the model once.
    async fn infer(request: InferRequest) -> Result<InferResponse, BrainError>;
}

/// The kernel's service for brains, on the socket pair the kernel hands each
/// brain at spawn (descriptor 4). The kernel knows the caller by the socket
/// alone: nothing a brain writes into a request can change who it is.
#[tarpc::service]
pub trait BrainSupport {
    /// Asks another brain for an inference. The kernel applies the caller's
    /// manifest capabilities, the policy and the audit log, as for a client.
    async fn call_brain(
        callee: String,
        request: InferRequest,
    ) -> Result<InferResponse, InvokeError>;

    // Customer memory, as the brain itself: it owns `brain:<name>/…` and may
    // use the namespaces its manifest's `capabilities.memory_namespaces`
    // declares, as the policy allows. Erasure, export, import and compaction
    // are the customer's and the operator's, never a brain's: they are not
    // offered here at all.

    /// Stores (or replaces) one item; durable when it returns.
    async fn memory_put(request: PutRequest) -> Result<PutResponse, MemoryError>;
    /// Reads one item.
    async fn memory_get(namespace: String, key: String) -> Result<Item, MemoryError>;
    /// One page of a namespace, in key order.
    async fn memory_list(request: ListRequest) -> Result<ListPage, MemoryError>;
    /// Deletes one item.
    async fn memory_delete(namespace: String, key: String) -> Result<(), MemoryError>;
    /// Nearest stored items to an embedding; name the namespaces to search.
    async fn memory_search(request: SearchRequest) -> Result<SearchResponse, MemoryError>;
}

/// Which part of the appliance a process plays.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Kernel,
    Audit,
    Memory,
    Brain,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kernel => "kernel",
            Role::Audit => "audit",
            Role::Memory => "memory",
            Role::Brain => "brain",
        }
    }
}

/// The supervisor's view of one process.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Spawned, not yet answering its readiness probe.
    Starting,
    /// Answering requests.
    Ready,
    /// Exited unexpectedly; waiting out its back-off before the next start.
    Restarting,
    /// Exceeded its restart intensity, or cannot start at all (e.g. a model
    /// whose hash does not match its manifest). Needs an operator.
    Failed,
    /// Stopped on purpose (shutdown in progress).
    Stopped,
    /// Turned off by an operator.
    Disabled,
    /// Running and answering, but unable to do its job: a service whose
    /// storage refuses writes (a full disk), or one that did not answer its
    /// health check. `last_error` says why and what to do. Reported by
    /// `sios status` only; the supervisor never holds a process in it.
    Degraded,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Starting => "starting",
            ProcessState::Ready => "ready",
            ProcessState::Restarting => "restarting",
            ProcessState::Failed => "failed",
            ProcessState::Stopped => "stopped",
            ProcessState::Disabled => "disabled",
            ProcessState::Degraded => "degraded",
        }
    }
}

/// One row of `sios status`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ProcessStatus {
    pub name: String,
    pub role: Role,
    pub pid: Option<u32>,
    pub state: ProcessState,
    /// Restarts since the appliance started.
    pub restarts: u32,
    /// Seconds since the current incarnation became ready.
    pub uptime_s: Option<f64>,
    /// The Unix socket the process serves on.
    pub socket: Option<String>,
    /// Requests the kernel has routed to it successfully.
    pub requests: u64,
    /// Why it last stopped or failed, in words for an operator.
    pub last_error: Option<String>,
    /// What a service holds, against its limits ([`ServiceInfo::holds`]).
    pub holds: Option<String>,
    /// For a brain or the memory service: the bytes of its share (an eighth
    /// of its memory limit) taken by the kernel's requests in flight to it,
    /// and by the first one waiting, which collects what is left until it
    /// can go. Requests past the share wait their turn in the kernel.
    #[serde(default)]
    pub in_flight: Option<InFlight>,
}

/// What the requests in flight to one process may make it hold.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct InFlight {
    pub bytes: u64,
    pub limit_bytes: u64,
}

impl InFlight {
    pub fn of(budget: &crate::budget::ByteBudget) -> InFlight {
        InFlight {
            bytes: budget.serving_bytes(),
            limit_bytes: budget.limit_bytes(),
        }
    }
}

/// The whole appliance, as `sios status` shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StatusReport {
    pub state_dir: String,
    pub version: String,
    /// The kernel first, then the services, then the brains, in start order.
    pub processes: Vec<ProcessStatus>,
    /// Room on the filesystem holding the state directory, where the audit
    /// log and memory grow; `None` if it could not be read.
    pub disk: Option<DiskSpace>,
    /// `[performance] low_latency_idle`: whether CPUs are held polling, or
    /// why they could not be; `None` when not asked for.
    pub cpu_idle: Option<String>,
    /// Each uid with connections open or requests held in the kernel, by
    /// uid (the asker's own connection among them).
    #[serde(default)]
    pub clients: Vec<ClientLoad>,
}

/// What one uid holds in the kernel now, against its limits.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClientLoad {
    pub uid: u32,
    /// Client connections open, and `[limits] max_connections_per_uid`.
    pub connections: u64,
    pub connection_limit: u64,
    /// Bytes of its frames being read, and of its requests being served
    /// (each rounded up to KiB), each bounded by `limit_bytes`.
    pub reading_bytes: u64,
    pub serving_bytes: u64,
    /// `[limits] max_request_bytes_per_uid`.
    pub limit_bytes: u64,
}

/// Room on one filesystem.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DiskSpace {
    /// Bytes the appliance's processes may still use (statvfs `f_bavail`).
    pub free_bytes: u64,
    pub total_bytes: u64,
    /// Set when free space runs low: what will happen, and what to do.
    pub warning: Option<String>,
}

/// A size as an operator says it: 1536 → "1.5 KiB".
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Who is calling the kernel, as the kernel itself established it (never as
/// the caller claims). Returned by [`Kernel::whoami`] so a client can see what
/// the kernel sees.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary gids, as the Linux kernel recorded them at `connect`
    /// (SO_PEERGROUPS); the policy's group mapping counts them like `gid`.
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// Why the kernel refused or failed an `invoke`.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum InvokeError {
    #[error("no brain named `{name}`; `sios status` lists the brains of this appliance")]
    UnknownBrain { name: String },
    #[error("brain `{name}` is {state}, not ready: {hint}")]
    NotReady {
        name: String,
        state: String,
        hint: String,
    },
    #[error("brain `{name}` refused the request: {source}")]
    BadInput {
        name: String,
        #[source]
        source: TensorError,
    },
    #[error("brain `{name}` failed: {source}")]
    Brain {
        name: String,
        #[source]
        source: BrainError,
    },
    #[error(
        "brain `{name}` stopped answering mid-request ({reason}); it is being restarted, retry in a moment"
    )]
    Lost { name: String, reason: String },
    #[error(
        "the request to brain `{name}` took longer than {timeout_ms} ms and was abandoned; send \
         fewer inputs per request, or raise [limits] request_timeout_ms"
    )]
    Timeout { name: String, timeout_ms: u64 },
    #[error("denied: {principal} may not {action} {resource} ({reason})")]
    Denied {
        principal: String,
        action: String,
        resource: String,
        reason: String,
    },
    #[error("brain `{name}` called brain `{callee}`, which failed: {reason}")]
    Upstream {
        name: String,
        callee: String,
        reason: String,
    },
    #[error(
        "refused: the action could not be recorded in the audit log ({reason}); sios does not act unrecorded"
    )]
    Unrecorded { reason: String },
    /// The request itself is malformed (not a brain's input: those are
    /// [`InvokeError::BadInput`]).
    #[error("bad request: {reason}")]
    BadRequest { reason: String },
    /// Well-formed, but more than the brain can hold at once.
    #[error(
        "the request to brain `{name}` takes {bytes} bytes ({:.1} MiB), more than the {limit} it \
         takes at once (its memory limit is {memory_mib} MiB); send fewer or shorter inputs per \
         request",
        *bytes as f64 / 1048576.0
    )]
    TooLarge {
        name: String,
        bytes: u64,
        limit: u64,
        memory_mib: u64,
    },
    /// Well-formed, but more rows than the brain's model can run at once.
    #[error(
        "brain `{name}` takes at most {max_rows} rows per request (its model needs more memory \
         per row than most); this one has {rows}: send them in requests of {max_rows} or fewer"
    )]
    TooManyRows {
        name: String,
        rows: u64,
        max_rows: u64,
    },
}

impl InvokeError {
    /// Whether the request itself is at fault (malformed, or more than its
    /// brain takes at once): sending it again unchanged cannot succeed.
    /// The CLI exits 2 for these, as for a bad memory request.
    pub fn is_bad_request(&self) -> bool {
        matches!(
            self,
            InvokeError::BadInput { .. }
                | InvokeError::Brain {
                    source: BrainError::Input(_),
                    ..
                }
                | InvokeError::BadRequest { .. }
                | InvokeError::TooLarge { .. }
                | InvokeError::TooManyRows { .. }
        )
    }
}

/// Why an operator action failed.
#[derive(thiserror::Error, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ControlError {
    #[error("no process named `{name}`; `sios status` lists them")]
    UnknownProcess { name: String },
    #[error("`{name}` cannot be restarted this way: {reason}")]
    NotRestartable { name: String, reason: String },
    #[error("the appliance is shutting down")]
    ShuttingDown,
    #[error("`{name}` is not a brain; `sios brain list` lists the brains")]
    NotABrain { name: String },
    #[error("brain `{name}` was not reloaded, the running one is untouched: {reason}")]
    Reload { name: String, reason: String },
    #[error("the kernel could not save its state: {0}")]
    Persist(String),
    #[error("denied: {principal} may not {action} {resource} ({reason})")]
    Denied {
        principal: String,
        action: String,
        resource: String,
        reason: String,
    },
    #[error(
        "refused: the action could not be recorded in the audit log ({reason}); sios does not act unrecorded"
    )]
    Unrecorded { reason: String },
    #[error("{0}")]
    Failed(String),
}

/// The policy in force, as `sios policy show` prints it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PolicyInfo {
    /// `sha256:…` of the canonical policy (stable under whitespace,
    /// comments and order; changed by any change of meaning).
    pub content_hash: String,
    /// SHA-256 of the stored text that decision records name, as hex.
    pub record_hash: String,
    pub policy_ids: Vec<String>,
    /// The canonical policy text.
    pub text: String,
}

/// One row of `sios brain list`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BrainStatus {
    pub name: String,
    /// `domain` or `operational`.
    pub kind: String,
    pub state: ProcessState,
    pub pid: Option<u32>,
    /// The sha256 of the model the manifest pins (and the running process verified).
    pub model_sha256: String,
    /// Requests routed to it and answered successfully.
    pub requests: u64,
}

/// What a restart did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RestartReport {
    pub name: String,
    pub old_pid: Option<u32>,
    pub new_pid: Option<u32>,
    pub state: ProcessState,
}

/// A session ends when its follower has sent no request for this long.
pub const FOLLOW_IDLE_SECS: u64 = 30;
/// The longest one `audit_follow_next` waits for a record.
pub const FOLLOW_MAX_WAIT_MS: u64 = 10_000;
/// At most this many follow sessions run at once (each polls the audit
/// service while it waits).
pub const MAX_FOLLOWERS: usize = 8;

/// A follow session, as `audit_follow_start` opened it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FollowSession {
    /// Names the session in the calls that follow (random, not guessable).
    pub session: u64,
    /// The seq of the first record the session will deliver.
    pub from_seq: u64,
}

/// What a follow session delivered, as its end reported it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FollowSummary {
    pub delivered: u64,
    /// The seq the next record after the delivered ones will have.
    pub next_seq: u64,
}

/// The kernel's client-facing service, on the client socket.
#[tarpc::service]
pub trait Kernel {
    /// Every process, its state and its numbers (decided as `status`).
    async fn status() -> Result<StatusReport, ControlError>;
    /// What the kernel knows about the caller (from SO_PEERCRED).
    async fn whoami() -> Caller;
    /// Runs one inference on one brain.
    async fn invoke(brain: String, request: InferRequest) -> Result<InferResponse, InvokeError>;
    /// Runs the deterministic pipeline on a text: screening brains, then
    /// (when asked) recall from the asker's memory, the router, then the
    /// domain specialists it picks.
    async fn ask(request: crate::ask::AskRequest) -> Result<crate::ask::AskAnswer, InvokeError>;
    /// Restarts one process; every other process keeps its pid.
    async fn restart(name: String) -> Result<RestartReport, ControlError>;
    /// Stops the appliance gracefully (reverse start order).
    async fn shutdown() -> Result<(), ControlError>;
    /// Every brain: kind, state, model hash, requests served (decided as
    /// `status`).
    async fn brains() -> Result<Vec<BrainStatus>, ControlError>;
    /// Stops a brain and keeps it stopped (across appliance restarts too);
    /// requests for it are refused with a clear message.
    async fn brain_disable(name: String) -> Result<BrainStatus, ControlError>;
    /// Starts a disabled brain; returns once it is ready or failed.
    async fn brain_enable(name: String) -> Result<BrainStatus, ControlError>;
    /// Re-reads the brain's manifest and restarts it on the model it pins
    /// (whose hash the brain re-checks before loading).
    async fn brain_reload(name: String) -> Result<BrainStatus, ControlError>;

    // ---- The audit log (decided as `audit_read`; each read is recorded) ----
    async fn audit_tail(n: u64) -> Result<crate::audit::RecordPage, ControlError>;
    async fn audit_read(from_seq: u64, max: u64) -> Result<crate::audit::RecordPage, ControlError>;
    async fn audit_checkpoint() -> Result<crate::audit::SignedCheckpoint, ControlError>;
    async fn audit_checkpoints(
        after_size: u64,
        max: u64,
    ) -> Result<crate::audit::CheckpointPage, ControlError>;
    async fn audit_prove_inclusion(
        seq: u64,
        tree_size: Option<u64>,
    ) -> Result<crate::audit::InclusionProof, ControlError>;
    async fn audit_prove_consistency(
        old_size: u64,
        new_size: u64,
    ) -> Result<crate::audit::ConsistencyProof, ControlError>;
    async fn audit_public_keys() -> Result<Vec<crate::audit::PublicKeyInfo>, ControlError>;
    async fn audit_policy_text(hash: crate::audit::Digest) -> Result<String, ControlError>;
    /// Starts following the log (`sios audit tail --follow`). Following is
    /// one action, decided as `audit_read` on `audit:follow`: its intent is
    /// recorded now, its outcome when the session ends (`audit_follow_stop`,
    /// no request from the follower for [`FOLLOW_IDLE_SECS`], or shutdown).
    /// The reads inside the session are not recorded one by one, or each
    /// would add records for the next to show. `back`: how many of the
    /// latest records to deliver first.
    async fn audit_follow_start(back: u64) -> Result<FollowSession, ControlError>;
    /// The records after the session's cursor (at most `max`), waiting up to
    /// `wait_ms` (capped at [`FOLLOW_MAX_WAIT_MS`]) for at least one; an
    /// empty page when none came. Only the client that started the session
    /// may use it.
    async fn audit_follow_next(
        session: u64,
        max: u64,
        wait_ms: u64,
    ) -> Result<crate::audit::RecordPage, ControlError>;
    /// Ends a follow session; its outcome is recorded before this returns.
    async fn audit_follow_stop(session: u64) -> Result<FollowSummary, ControlError>;
    /// Rotates the operator's signing key (decided as `key_rotate`, recorded).
    async fn key_rotate() -> Result<crate::audit::RotationReport, ControlError>;

    // ---- Policy ----
    /// The policy in force.
    async fn policy_show() -> PolicyInfo;
    /// Validates and activates a policy: `(file name, text)` pairs, `*.cedar`
    /// and optionally `sios.cedarschema`. Recorded with its text; a policy
    /// that does not validate is refused and the active one stays.
    async fn policy_load(files: Vec<(String, String)>) -> Result<PolicyInfo, ControlError>;

    // ---- Sandbox ----
    /// What is actually enforced on a running brain, read back from /proc,
    /// as `sios_launch::inspect::SandboxReport` JSON.
    async fn sandbox_report(name: String) -> Result<String, ControlError>;

    // ---- Memory (each decided by the policy and recorded) ----
    async fn memory_put(
        request: crate::memory::PutRequest,
    ) -> Result<crate::memory::PutResponse, crate::memory::MemoryError>;
    async fn memory_get(
        namespace: String,
        key: String,
    ) -> Result<crate::memory::Item, crate::memory::MemoryError>;
    async fn memory_list(
        request: crate::memory::ListRequest,
    ) -> Result<crate::memory::ListPage, crate::memory::MemoryError>;
    async fn memory_delete(
        namespace: String,
        key: String,
    ) -> Result<(), crate::memory::MemoryError>;
    async fn memory_search(
        request: crate::memory::SearchRequest,
    ) -> Result<crate::memory::SearchResponse, crate::memory::MemoryError>;
    async fn memory_erase_subject(
        subject: String,
    ) -> Result<crate::memory::EraseReport, crate::memory::MemoryError>;
    async fn memory_export(
        request: crate::memory::ExportRequest,
    ) -> Result<crate::memory::ExportPage, crate::memory::MemoryError>;
    async fn memory_import(
        request: crate::memory::ImportRequest,
    ) -> Result<crate::memory::ImportReport, crate::memory::MemoryError>;
    async fn memory_compact() -> Result<crate::memory::CompactReport, crate::memory::MemoryError>;

    // ---- Added later: last, so that every method above keeps its number on the wire ----
    /// Where the audit service's `record` calls spent their time since it
    /// started (decided as `audit_read`, recorded).
    async fn audit_record_timings() -> Result<crate::audit::RecordTimings, ControlError>;
    /// Where the kernel's governed brain calls (invokes, and brains calling
    /// brains) that ran spent their time since it started (decided as
    /// `status`).
    async fn invoke_timings() -> Result<InvokeTimings, ControlError>;
}

/// The stages of a governed brain call inside the kernel, in order
/// ([`Kernel::invoke_timings`]). Calls that were denied, or failed before
/// the brain was asked, are not counted. Take one before and one after a
/// run and subtract ([`crate::latency::Histogram::since`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeTimings {
    /// From the request's arrival to a ruling and a drafted intent:
    /// resolving the brain, validating the tensors, the policy's decision,
    /// and any wait for the brain's turn while it holds other large requests.
    pub decided: crate::latency::Histogram,
    /// Recording the intent: a round trip to the audit service, answered
    /// once durable and covered by a signed checkpoint.
    pub intent_recorded: crate::latency::Histogram,
    /// The brain's round trip: the request over its socket, its inference,
    /// its answer.
    pub brain_answered: crate::latency::Histogram,
    /// Recording the outcome: a round trip to the audit service, answered
    /// once durable.
    pub outcome_recorded: crate::latency::Histogram,
}

impl InvokeTimings {
    /// What was recorded after `earlier`.
    pub fn since(&self, earlier: &InvokeTimings) -> InvokeTimings {
        InvokeTimings {
            decided: self.decided.since(&earlier.decided),
            intent_recorded: self.intent_recorded.since(&earlier.intent_recorded),
            brain_answered: self.brain_answered.since(&earlier.brain_answered),
            outcome_recorded: self.outcome_recorded.since(&earlier.outcome_recorded),
        }
    }
}

/// What a service says when it is ready.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    pub name: String,
    pub pid: u32,
    /// The redb file the service owns.
    pub database: String,
    /// Why the service cannot do its job although it answers (its storage
    /// refuses writes, say), in words for an operator; `None` when healthy.
    pub fault: Option<String>,
    /// What it holds, against its limits, in words for an operator
    /// (`sios status` shows it under the service).
    pub holds: Option<String>,
}

// The memory service's trait `Memory` and `MemoryError` live in `crate::memory`.

#[cfg(test)]
mod tests {
    use super::{BrainError, InvokeError, human_bytes};
    use crate::tensor::TensorError;

    #[test]
    fn a_request_at_fault_is_told_apart_from_a_refusal_or_a_failure() {
        let name = || "legal".to_owned();
        let input = || TensorError::Duplicate {
            name: "text".into(),
        };
        for bad in [
            InvokeError::BadInput {
                name: name(),
                source: input(),
            },
            InvokeError::Brain {
                name: name(),
                source: BrainError::Input(input()),
            },
            InvokeError::BadRequest {
                reason: "recall_k 0".into(),
            },
            InvokeError::TooLarge {
                name: name(),
                bytes: 9,
                limit: 8,
                memory_mib: 64,
            },
            InvokeError::TooManyRows {
                name: name(),
                rows: 65,
                max_rows: 64,
            },
        ] {
            assert!(bad.is_bad_request(), "{bad}");
        }
        for not in [
            InvokeError::UnknownBrain { name: name() },
            InvokeError::Brain {
                name: name(),
                source: BrainError::Runtime("oom".into()),
            },
            InvokeError::Timeout {
                name: name(),
                timeout_ms: 30_000,
            },
            InvokeError::Denied {
                principal: "uid:1000".into(),
                action: "invoke".into(),
                resource: name(),
                reason: "forbid".into(),
            },
            InvokeError::Unrecorded {
                reason: "disk full".into(),
            },
        ] {
            assert!(!not.is_bad_request(), "{not}");
        }
    }

    #[test]
    fn sizes_read_as_an_operator_would_say_them() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
