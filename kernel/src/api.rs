//! The client socket: the only way into the appliance.
//!
//! Each connection is identified once, by SO_PEERCRED (pid, uid, gid as the
//! Linux kernel recorded them at `connect`), never by anything the client
//! says. That identity travels with every request on the connection.

use crate::appliance::{Appliance, Requester};
use sios_ipc::{
    BrainStatus, Caller, ControlError, InferRequest, InferResponse, InvokeError, Kernel,
    RestartReport, StatusReport,
};
use std::sync::Arc;
use tarpc::context::Context;
use tokio::net::UnixStream;

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
        match stream.peer_cred() {
            Ok(cred) => {
                let caller = Caller {
                    pid: cred.pid(),
                    uid: cred.uid(),
                    gid: cred.gid(),
                };
                tracing::info!(pid = ?caller.pid, uid = caller.uid, gid = caller.gid, "client connected");
                Some(KernelServer {
                    appliance: Arc::clone(appliance),
                    caller,
                })
            }
            Err(err) => {
                tracing::warn!(error = %err, "refusing a client whose credentials cannot be read (SO_PEERCRED)");
                None
            }
        }
    }
}

impl Kernel for KernelServer {
    async fn status(self, _: Context) -> StatusReport {
        self.appliance.status()
    }

    async fn whoami(self, _: Context) -> Caller {
        self.caller
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

    async fn ask(self, _: Context, text: String) -> Result<sios_ipc::AskAnswer, InvokeError> {
        let requester = Requester::Client(self.caller.clone());
        self.appliance.ask(&requester, &text).await
    }

    async fn restart(self, _: Context, name: String) -> Result<RestartReport, ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, process = %name, "restart requested");
        self.appliance.restart(&name).await
    }

    async fn shutdown(self, _: Context) -> Result<(), ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, "shutdown requested");
        self.appliance.request_shutdown();
        Ok(())
    }

    async fn brains(self, _: Context) -> Vec<BrainStatus> {
        self.appliance.brains()
    }

    async fn brain_disable(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, brain = %name, "disable requested");
        self.appliance.disable_brain(&name).await
    }

    async fn brain_enable(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, brain = %name, "enable requested");
        self.appliance.enable_brain(&name).await
    }

    async fn brain_reload(self, _: Context, name: String) -> Result<BrainStatus, ControlError> {
        tracing::info!(uid = self.caller.uid, pid = ?self.caller.pid, brain = %name, "reload requested");
        self.appliance.reload_brain(&name).await
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
}

impl sios_ipc::BrainSupport for BrainSupportServer {
    async fn call_brain(
        self,
        _: Context,
        callee: String,
        request: InferRequest,
    ) -> Result<InferResponse, InvokeError> {
        let requester = Requester::Brain(self.brain.clone());
        let result = self.appliance.invoke(&requester, &callee, request).await;
        if let Err(err) = &result {
            tracing::info!(brain = %self.brain, callee = %callee, error = %err, "brain-to-brain call refused or failed");
        }
        result
    }
}
