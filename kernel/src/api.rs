//! The client socket: the only way into the appliance.
//!
//! Each connection is identified once, by SO_PEERCRED (pid, uid, gid as the
//! Linux kernel recorded them at `connect`), never by anything the client
//! says. That identity travels with every request on the connection.

use crate::appliance::{Appliance, Requester};
use crate::audit_follow::Followers;
use sios_ipc::audit::{
    CheckpointPage, ConsistencyProof, Digest, InclusionProof, PublicKeyInfo, RecordPage,
    RecordTimings, RotationReport, SignedCheckpoint,
};
use sios_ipc::memory::{
    CompactReport, EraseReport, ExportPage, ExportRequest, ImportReport, ImportRequest, Item,
    ListPage, ListRequest, MemoryError, PutRequest, PutResponse, SearchRequest, SearchResponse,
};
use sios_ipc::transport;
use sios_ipc::{
    BrainStatus, Caller, ControlError, InferRequest, InferResponse, InvokeError, Kernel,
    RestartReport, StatusReport,
};
use sios_ipc::{FollowSession, FollowSummary, InvokeTimings, PolicyInfo};
use sios_policy::{Action, Resource};
use std::sync::Arc;
use tarpc::context::Context;
use tarpc::server::Serve as _;
use tokio::net::{UnixListener, UnixStream};

/// Requests one client connection may have open at once. Each may hold a
/// frame of up to `max_frame_bytes` in memory, so a client pipelining
/// requests must meet a limit; one more is refused with the server error
/// "server throttled the request.". The CLI sends one at a time; a program
/// that multiplexes its users over one connection gets this many.
pub const MAX_IN_FLIGHT_PER_CLIENT: usize = 64;

/// Requests one brain's channel may have open at once: above the brain
/// host's queue depth (64), since an `embed_via` brain calls its upstream
/// once for each request it serves.
pub const MAX_IN_FLIGHT_PER_BRAIN: usize = 256;

/// How long a connection over its uid's limit is kept to be told why:
/// long enough for its first request, too short to count as holding one.
const REFUSED_CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves the client socket until accepting fails for good. Each peer is
/// identified once (SO_PEERCRED); its requests run detached, so that each
/// action runs to its outcome record even if the client gives up
/// ([`transport::detached`]), at most [`MAX_IN_FLIGHT_PER_CLIENT`] at once,
/// and one uid holds at most `[limits] max_connections_per_uid`
/// connections ([`crate::connections::ConnectionLimit`]); a connection over that limit gets the
/// reason as the answer to its first request and is closed (or, with a few
/// of the uid's refused connections held already, closed at once).
pub async fn serve_clients(
    listener: UnixListener,
    appliance: Arc<Appliance>,
    max_frame_bytes: usize,
) -> std::io::Result<()> {
    let limit = Arc::clone(&appliance.connections);
    transport::accept_loop(listener, move |stream| {
        let Some(server) = KernelServer::for_connection(&appliance, &stream) else {
            return;
        };
        let uid = server.caller.uid;
        match limit.admit(uid) {
            Ok(open) => {
                let sizes = Arc::clone(&appliance);
                let answer_bound: transport::AnswerBound<sios_ipc::KernelRequest> =
                    Arc::new(move |req| sizes.client_answer_bound(req));
                tokio::spawn(async move {
                    transport::serve_detached(
                        stream,
                        max_frame_bytes,
                        MAX_IN_FLIGHT_PER_CLIENT,
                        Some((open.budget(), answer_bound)),
                        move |ctx, req| server.serve().serve(ctx, req),
                    )
                    .await;
                    drop(open);
                });
            }
            Err(refused) => {
                if refused.log {
                    tracing::warn!(uid, "refusing a client connection: {}", refused.message);
                }
                // Past a few held at once, a refused connection is closed
                // unanswered (see `MAX_EXPLAINING_PER_UID`).
                let Some(explaining) = refused.explain else {
                    return;
                };
                let message = refused.message;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        REFUSED_CONNECTION_GRACE,
                        transport::serve_detached::<
                            sios_ipc::KernelRequest,
                            sios_ipc::KernelResponse,
                            _,
                            _,
                        >(stream, max_frame_bytes, 1, None, move |_, _| {
                            let refusal = transport::refused_connection(&message);
                            async move { Err(refusal) }
                        }),
                    )
                    .await;
                    drop(explaining);
                });
            }
        }
    })
    .await
}

/// Serves one brain's private channel (its descriptor 4) until it closes:
/// the brain is known by the channel alone. Brain-to-brain calls are actions
/// like any other, so they too run detached to their outcome records.
pub async fn serve_brain_channel(
    stream: UnixStream,
    appliance: Arc<Appliance>,
    brain: String,
    max_frame_bytes: usize,
) {
    // A brain's requests and their answers are bounded in the kernel as one
    // client uid's are: a brain that read memory in a loop and never read
    // the answers would otherwise make the kernel hold them all.
    let budget = sios_ipc::budget::ByteBudget::new(
        format!("brain `{brain}`"),
        crate::connections::BYTES_SETTING,
        appliance.config().limits.max_request_bytes_per_uid,
    );
    let sizes = Arc::clone(&appliance);
    let answer_bound: transport::AnswerBound<sios_ipc::BrainSupportRequest> =
        Arc::new(move |req| sizes.brain_channel_answer_bound(req));
    let server = BrainSupportServer::new(appliance, brain);
    transport::serve_detached(
        stream,
        max_frame_bytes,
        MAX_IN_FLIGHT_PER_BRAIN,
        Some((budget, answer_bound)),
        move |ctx, req| sios_ipc::BrainSupport::serve(server).serve(ctx, req),
    )
    .await;
}

/// Audit reads: each is decided (`audit_read` on the log) and, when
/// allowed, forwarded to the audit service method of the same shape. One
/// line per method: `name(args) -> reply => "label", service_method;`.
macro_rules! audit_queries {
    ($($method:ident($($arg:ident: $ty:ty),*) -> $out:ty => $label:literal, $call:ident;)*) => {
        $(
            async fn $method(self, _: Context, $($arg: $ty),*) -> Result<$out, ControlError> {
                self.appliance
                    .audit_query(&self.requester(), $label, |c, ctx| async move {
                        c.$call(ctx, $($arg),*).await
                    })
                    .await
            }
        )*
    };
}

/// The item-level memory methods clients and brains share: each forwards to
/// the one implementation in [`crate::memory_access`] with the requester
/// the connection (client socket or brain channel) established.
macro_rules! item_memory_forwards {
    () => {
        async fn memory_put(
            self,
            _: Context,
            request: PutRequest,
        ) -> Result<PutResponse, MemoryError> {
            self.appliance.memory_put(&self.requester(), request).await
        }

        async fn memory_get(
            self,
            _: Context,
            namespace: String,
            key: String,
        ) -> Result<Item, MemoryError> {
            self.appliance
                .memory_get(&self.requester(), namespace, key)
                .await
        }

        async fn memory_list(
            self,
            _: Context,
            request: ListRequest,
        ) -> Result<ListPage, MemoryError> {
            self.appliance.memory_list(&self.requester(), request).await
        }

        async fn memory_delete(
            self,
            _: Context,
            namespace: String,
            key: String,
        ) -> Result<(), MemoryError> {
            self.appliance
                .memory_delete(&self.requester(), namespace, key)
                .await
        }

        async fn memory_search(
            self,
            _: Context,
            request: SearchRequest,
        ) -> Result<SearchResponse, MemoryError> {
            self.appliance
                .memory_search(&self.requester(), request)
                .await
        }
    };
}

/// One client connection's view of the kernel.
#[derive(Clone, Debug)]
pub struct KernelServer {
    appliance: Arc<Appliance>,
    caller: Caller,
}

impl KernelServer {
    /// Identifies the peer of `stream`; `None` (and a log line) if the
    /// operating system cannot say who it is, in which case the connection is
    /// dropped unserved.
    pub fn for_connection(appliance: &Arc<Appliance>, stream: &UnixStream) -> Option<KernelServer> {
        match stream
            .peer_cred()
            .and_then(|cred| Ok((cred, crate::governance::peer_groups(stream)?)))
        {
            Ok((cred, groups)) => {
                let caller = Caller {
                    pid: cred.pid(),
                    uid: cred.uid(),
                    gid: cred.gid(),
                    groups,
                };
                tracing::info!(pid = ?caller.pid, uid = caller.uid, gid = caller.gid, "client connected");
                Some(KernelServer {
                    appliance: Arc::clone(appliance),
                    caller,
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, "refusing a client whose credentials cannot be read (SO_PEERCRED, SO_PEERGROUPS)");
                None
            }
        }
    }
}

/// A governed operator action's result: its own error if it ran and failed,
/// the refusal otherwise.
fn control<T>(
    result: Result<T, crate::operations::Refusal<ControlError>>,
) -> Result<T, ControlError> {
    match result {
        Err(crate::operations::Refusal::Failed(err)) => Err(err),
        other => other.map_err(ControlError::from),
    }
}

impl KernelServer {
    fn requester(&self) -> Requester {
        Requester::Client(self.caller.clone())
    }

    /// What the appliance runs and how it does (status, the brain list,
    /// timings) is the policy's `status` action; a refusal is recorded.
    /// (`whoami` is not: it tells callers only about themselves, and is how a
    /// refused one learns what the kernel sees.)
    async fn may_read_status(&self, label: &str) -> Result<(), ControlError> {
        self.appliance
            .allowed_to_read(
                &self.requester(),
                Action::Status,
                Resource::Appliance,
                label,
            )
            .await
    }

    /// An operator action on one brain (disable, enable, reload): the name
    /// is checked first (an unknown brain is an input error, not a policy
    /// question), then the action is decided, recorded and run.
    async fn brain_control<'a, Fut>(
        &'a self,
        name: &'a str,
        action: Action,
        run: impl FnOnce(&'a Appliance, &'a str) -> Fut,
    ) -> Result<BrainStatus, ControlError>
    where
        Fut: std::future::Future<Output = Result<BrainStatus, ControlError>>,
    {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, brain = %name, action = action.as_str(), "brain control requested");
        let app: &Appliance = &self.appliance;
        app.brain_slot(name)?;
        let resource = app.process_resource(name);
        control(
            app.governed(
                &self.requester(),
                action,
                resource,
                format!("brain:{name}"),
                || run(app, name),
            )
            .await,
        )
    }
}

impl Kernel for KernelServer {
    async fn status(self, _: Context) -> Result<StatusReport, ControlError> {
        self.may_read_status("appliance:status").await?;
        Ok(self.appliance.status().await)
    }

    async fn whoami(self, _: Context) -> Caller {
        self.caller
    }

    async fn invoke_timings(self, _: Context) -> Result<InvokeTimings, ControlError> {
        self.may_read_status("appliance:invoke-timings").await?;
        Ok(self.appliance.invoke_timings())
    }

    async fn invoke(
        self,
        _: Context,
        brain: String,
        request: InferRequest,
    ) -> Result<InferResponse, InvokeError> {
        let requester = Requester::Client(self.caller.clone());
        let result = self.appliance.invoke(&requester, &brain, request).await;
        if let Err(err) = &result {
            tracing::debug!(uid = self.caller.uid, brain = %brain, error = %err, "invoke failed");
        }
        result
    }

    async fn ask(
        self,
        _: Context,
        request: sios_ipc::AskRequest,
    ) -> Result<sios_ipc::AskAnswer, InvokeError> {
        self.appliance.ask(&self.requester(), &request).await
    }

    async fn restart(self, _: Context, name: String) -> Result<RestartReport, ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, process = %name, "restart requested");
        let app = &self.appliance;
        let resource = app.process_resource(&name);
        control(
            app.governed(
                &self.requester(),
                Action::Restart,
                resource,
                format!("process:{name}"),
                || app.restart(&name),
            )
            .await,
        )
    }

    async fn shutdown(self, _: Context) -> Result<(), ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, "shutdown requested");
        let app = &self.appliance;
        control(
            app.governed(
                &self.requester(),
                Action::Shutdown,
                Resource::Appliance,
                "appliance".into(),
                || async {
                    app.request_shutdown();
                    Ok::<(), ControlError>(())
                },
            )
            .await,
        )
    }

    async fn brains(self, _: Context) -> Result<Vec<BrainStatus>, ControlError> {
        self.may_read_status("appliance:brains").await?;
        Ok(self.appliance.brains())
    }

    async fn brain_disable(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        self.brain_control(&name, Action::BrainDisable, Appliance::disable_brain)
            .await
    }

    async fn brain_enable(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        self.brain_control(&name, Action::BrainEnable, Appliance::enable_brain)
            .await
    }

    async fn brain_reload(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        self.brain_control(&name, Action::Restart, Appliance::reload_brain)
            .await
    }

    audit_queries! {
        audit_tail(n: u64) -> RecordPage => "tail", tail;
        audit_read(from_seq: u64, max: u64) -> RecordPage => "read", read;
        audit_checkpoint() -> SignedCheckpoint => "checkpoint", checkpoint;
        audit_checkpoints(after_size: u64, max: u64) -> CheckpointPage => "checkpoints", checkpoints;
        audit_prove_inclusion(seq: u64, tree_size: Option<u64>) -> InclusionProof => "prove", prove_inclusion;
        audit_prove_consistency(old_size: u64, new_size: u64) -> ConsistencyProof => "consistency", prove_consistency;
        audit_public_keys() -> Vec<PublicKeyInfo> => "public-keys", public_keys;
        audit_policy_text(hash: Digest) -> String => "policy-text", policy_text;
        audit_record_timings() -> RecordTimings => "record-timings", record_timings;
    }

    async fn audit_follow_start(
        self,
        _: Context,
        back: u64,
    ) -> Result<FollowSession, ControlError> {
        Followers::start(&self.appliance, &self.caller, back).await
    }

    async fn audit_follow_next(
        self,
        _: Context,
        session: u64,
        max: u64,
        wait_ms: u64,
    ) -> Result<RecordPage, ControlError> {
        self.appliance
            .followers
            .next(&self.caller, session, max, wait_ms)
            .await
    }

    async fn audit_follow_stop(
        self,
        _: Context,
        session: u64,
    ) -> Result<FollowSummary, ControlError> {
        self.appliance.followers.stop(&self.caller, session).await
    }

    async fn key_rotate(self, _: Context) -> Result<RotationReport, ControlError> {
        self.appliance.key_rotate(&self.requester()).await
    }

    async fn policy_show(self, _: Context) -> PolicyInfo {
        self.appliance.policy_info()
    }

    async fn policy_load(
        self,
        _: Context,
        files: Vec<(String, String)>,
    ) -> Result<PolicyInfo, ControlError> {
        self.appliance.policy_load(&self.requester(), files).await
    }

    async fn sandbox_report(self, _: Context, name: String) -> Result<String, ControlError> {
        self.appliance
            .sandbox_report(&self.requester(), &name)
            .await
    }

    item_memory_forwards!();

    async fn memory_erase_subject(
        self,
        _: Context,
        subject: String,
    ) -> Result<EraseReport, MemoryError> {
        self.appliance
            .memory_erase_subject(&self.requester(), subject)
            .await
    }

    async fn memory_export(
        self,
        _: Context,
        request: ExportRequest,
    ) -> Result<ExportPage, MemoryError> {
        self.appliance
            .memory_export(&self.requester(), request)
            .await
    }

    async fn memory_import(
        self,
        _: Context,
        request: ImportRequest,
    ) -> Result<ImportReport, MemoryError> {
        self.appliance
            .memory_import(&self.requester(), request)
            .await
    }

    async fn memory_compact(self, _: Context) -> Result<CompactReport, MemoryError> {
        self.appliance.memory_compact(&self.requester()).await
    }
}

/// A brain's private channel to the kernel. The brain is known by the
/// channel the kernel created for it; nothing in a request can change that.
#[derive(Clone, Debug)]
pub struct BrainSupportServer {
    appliance: Arc<Appliance>,
    brain: String,
}

impl BrainSupportServer {
    pub fn new(appliance: Arc<Appliance>, brain: String) -> BrainSupportServer {
        BrainSupportServer { appliance, brain }
    }

    fn requester(&self) -> Requester {
        Requester::Brain(self.brain.clone())
    }
}

impl sios_ipc::BrainSupport for BrainSupportServer {
    async fn call_brain(
        self,
        _: Context,
        callee: String,
        request: InferRequest,
    ) -> Result<InferResponse, InvokeError> {
        let result = self
            .appliance
            .invoke(&self.requester(), &callee, request)
            .await;
        if let Err(err) = &result {
            tracing::info!(brain = %self.brain, callee = %callee, error = %err, "brain-to-brain call refused or failed");
        }
        result
    }

    item_memory_forwards!();
}
