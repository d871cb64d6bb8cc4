//! Everything a client may ask the kernel besides inference: the audit log,
//! the policy, the sandbox report, customer memory. Each request is decided
//! by the policy and, when it acts on anything, recorded before it runs and
//! after it ends, through one path: [`Appliance::governed`].

use crate::appliance::{Appliance, Requester, outcome_of};
use crate::governance::{ActivePolicy, Ruling};
use crate::supervisor::Connection;
use sios_ipc::audit::{ActionResult, DraftKind, RecordDraft};
use sios_ipc::budget::ByteBudget;
use sios_ipc::memory::{self, MemoryError};
use sios_ipc::{AuditClient, ControlError, MemoryClient, PolicyInfo, Role, transport};
use sios_policy::{Action, LoadedPolicy, MemoryNamespace, PolicySource, Resource};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a governed request did not run, or failed.
#[derive(Debug)]
pub enum Refusal<E> {
    /// The policy said no (already recorded).
    Denied {
        action: String,
        resource: String,
        reason: String,
        principal: String,
    },
    /// It could not be recorded, so it did not run.
    Unrecorded(String),
    /// It ran and failed (recorded).
    Failed(E),
}

impl<E: std::fmt::Display> From<Refusal<E>> for ControlError {
    fn from(refusal: Refusal<E>) -> ControlError {
        match refusal {
            Refusal::Denied {
                action,
                resource,
                reason,
                principal,
            } => ControlError::Denied {
                principal,
                action,
                resource,
                reason,
            },
            Refusal::Unrecorded(reason) => ControlError::Unrecorded { reason },
            Refusal::Failed(err) => ControlError::Failed(err.to_string()),
        }
    }
}

impl From<Refusal<MemoryError>> for MemoryError {
    fn from(refusal: Refusal<MemoryError>) -> MemoryError {
        match refusal {
            Refusal::Denied { reason, .. } => MemoryError::Denied { reason },
            Refusal::Unrecorded(reason) => MemoryError::Unavailable(format!(
                "the action could not be recorded in the audit log: {reason}"
            )),
            Refusal::Failed(err) => err,
        }
    }
}

pub(crate) const SERVICE_TIMEOUT: Duration = Duration::from_secs(120);

/// The audit linking-key name of a memory data subject: its own key space,
/// apart from the principals (`uid:1000`, `brain:…`) whose requests carry
/// keyed digests, so that erasing a person never touches a client's key.
pub fn data_subject_link(subject: &str) -> String {
    format!("data-subject:{subject}")
}

/// The audit service's answer to one call, in words for an outcome record
/// or an operator: its own error, or that it did not answer.
pub(crate) fn audit_answer<T>(
    answer: Result<Result<T, sios_ipc::AuditError>, tarpc::client::RpcError>,
) -> Result<T, String> {
    match answer {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(rpc) => Err(format!("the audit service did not answer: {rpc}")),
    }
}

/// An error message as an outcome record keeps it. A request about a data
/// subject never puts the subject's id in the log: each occurrence of the id
/// is replaced by [`SUBJECT_PLACEHOLDER`] (the client still gets the whole
/// message). An id shorter than [`SHORTEST_REDACTED_ID`] would turn most
/// messages into placeholders, and one the placeholder itself contains
/// (`data`) would survive in it: a message containing such an id is left
/// out whole.
fn recorded_error(message: String, data_subject: Option<&str>) -> String {
    match data_subject {
        Some(id)
            if message.contains(id)
                && (id.len() < SHORTEST_REDACTED_ID || SUBJECT_PLACEHOLDER.contains(id)) =>
        {
            "the request failed; its message named the data subject, so the log leaves it out \
             (the client received it)"
                .into()
        }
        // No occurrence can form across a placeholder: it would hold the
        // placeholder's `<` or `>`, which no valid id has (ids are checked
        // before anything about them is recorded).
        Some(id) => message.replace(id, SUBJECT_PLACEHOLDER),
        None => message,
    }
}

/// What stands for a data subject's id in a recorded error message.
const SUBJECT_PLACEHOLDER: &str = "<the data subject>";

/// See [`recorded_error`].
const SHORTEST_REDACTED_ID: usize = 4;

impl Appliance {
    /// Decides, records the intent, runs `run`, records the outcome.
    pub async fn governed<T, E, Fut>(
        &self,
        requester: &Requester,
        action: Action,
        resource: Resource,
        resource_label: String,
        run: impl FnOnce() -> Fut,
    ) -> Result<T, Refusal<E>>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        self.governed_about(requester, action, resource, resource_label, None, run)
            .await
    }

    /// [`Appliance::governed`] for a request about one data subject (a
    /// memory erasure or export of everything about them). The records name
    /// the subject only by its pseudonym (OAR.md §3.4, field 10) under the
    /// linking key of [`data_subject_link`]`(subject)`, never by its id:
    /// the log outlives an erasure, and after one the pseudonym links to
    /// nobody. Only the intent carries it; its outcome points at the intent.
    pub async fn governed_about<T, E, Fut>(
        &self,
        requester: &Requester,
        action: Action,
        resource: Resource,
        resource_label: String,
        data_subject: Option<&str>,
        run: impl FnOnce() -> Fut,
    ) -> Result<T, Refusal<E>>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let ruling = self
            .governor
            .decide(self.principal(requester), action, resource);
        self.carry_out(requester, ruling, resource_label, data_subject, run)
            .await
    }

    /// Acts on a ruling already made: records the intent with it, then
    /// either a `denied` outcome (and `run` never runs) or runs `run` and
    /// records how it ended.
    async fn carry_out<T, E, Fut>(
        &self,
        requester: &Requester,
        ruling: Ruling,
        resource_label: String,
        data_subject: Option<&str>,
        run: impl FnOnce() -> Fut,
    ) -> Result<T, Refusal<E>>
    where
        E: std::fmt::Display,
        Fut: Future<Output = Result<T, E>>,
    {
        let action_name = ruling.request.action.as_str();
        let mut intent = RecordDraft::new(
            requester.actor(),
            action_name,
            resource_label.clone(),
            DraftKind::Intent,
        );
        intent.decision = Some(ruling.recorded.clone());
        intent.detail = ruling.detail();
        // Only an allowed request names the person's linking key: a denied
        // one must not make the audit service keep a key under their id. Nor
        // may one about a person the memory does not hold (an export of an
        // unknown id, an erasure done already): a key made for it is kept
        // only if the request succeeds (OAR.md §3.4).
        if ruling.allowed() && data_subject.is_some() {
            intent.subject = data_subject.map(data_subject_link);
            intent.link_kept_on_success = true;
        }
        // The outcome names its intent; it needs no pseudonym of its own (and
        // after an erasure, asking for one would mint a fresh linking key).
        let outcome_of = |intent: &RecordDraft, seq: u64, result: ActionResult| {
            let mut outcome = outcome_of(intent, seq, result);
            if data_subject.is_some() {
                outcome.subject = None;
            }
            outcome
        };
        if !ruling.allowed() {
            let receipts = self
                .record(vec![intent.clone()])
                .await
                .map_err(Refusal::Unrecorded)?;
            let outcome = outcome_of(&intent, receipts[0].seq, ActionResult::Denied);
            self.record(vec![outcome])
                .await
                .map_err(Refusal::Unrecorded)?;
            return Err(Refusal::Denied {
                action: action_name.to_owned(),
                resource: resource_label,
                reason: ruling.reason(),
                principal: requester.to_string(),
            });
        }
        let seq = self
            .record(vec![intent.clone()])
            .await
            .map_err(Refusal::Unrecorded)?[0]
            .seq;
        let result = run().await;
        let ended = match &result {
            Ok(_) => ActionResult::Ok,
            Err(err) => ActionResult::Error(recorded_error(err.to_string(), data_subject)),
        };
        self.record(vec![outcome_of(&intent, seq, ended)])
            .await
            .map_err(Refusal::Unrecorded)?;
        result.map_err(Refusal::Failed)
    }

    /// Decides a read of the appliance's own state, recording only a denial.
    pub async fn allowed_to_read(
        &self,
        requester: &Requester,
        action: Action,
        resource: Resource,
        label: &str,
    ) -> Result<(), ControlError> {
        let ruling = self
            .governor
            .decide(self.principal(requester), action, resource);
        if ruling.allowed() {
            return Ok(());
        }
        let refused: Result<(), Refusal<String>> = self
            .carry_out(requester, ruling, label.to_owned(), None, || async {
                Ok::<(), String>(())
            })
            .await;
        refused.map_err(ControlError::from)
    }

    fn service(&self, name: &str) -> Option<Connection> {
        self.slot(name)
            .filter(|s| matches!(s.role, Role::Audit | Role::Memory))
            .and_then(|s| s.connection().ok())
    }

    pub(crate) fn audit_client(&self) -> Result<AuditClient, String> {
        match self.service("audit") {
            Some(Connection::Audit(client)) => Ok(client),
            _ => Err("the audit service is not ready".into()),
        }
    }

    fn memory_client(&self) -> Result<MemoryClient, MemoryError> {
        match self.service("memory") {
            Some(Connection::Memory(client)) => Ok(client),
            _ => Err(MemoryError::Unavailable(
                "the memory service is not ready; `sios status` says why".into(),
            )),
        }
    }

    // ---- The audit log ---------------------------------------------------

    /// Reads from the audit log on behalf of `requester` (decided as
    /// `audit_read` and recorded like any other access).
    pub async fn audit_query<T, Fut>(
        &self,
        requester: &Requester,
        what: &str,
        query: impl FnOnce(AuditClient, tarpc::context::Context) -> Fut,
    ) -> Result<T, ControlError>
    where
        Fut: Future<Output = Result<Result<T, sios_ipc::AuditError>, tarpc::client::RpcError>>,
    {
        let client = self
            .audit_client()
            .map_err(|reason| ControlError::Unrecorded { reason })?;
        self.governed(
            requester,
            Action::AuditRead,
            Resource::AuditLog,
            format!("audit:{what}"),
            || async move {
                audit_answer(query(client, transport::context_with_timeout(SERVICE_TIMEOUT)).await)
            },
        )
        .await
        .map_err(ControlError::from)
    }

    /// Rotates the signing key (decided as `key_rotate`).
    pub async fn key_rotate(
        &self,
        requester: &Requester,
    ) -> Result<sios_ipc::audit::RotationReport, ControlError> {
        let client = self
            .audit_client()
            .map_err(|reason| ControlError::Unrecorded { reason })?;
        let by = requester.actor();
        self.governed(
            requester,
            Action::KeyRotate,
            Resource::Appliance,
            "appliance:signing-key".into(),
            || async move {
                audit_answer(
                    client
                        .rotate_key(transport::context_with_timeout(SERVICE_TIMEOUT), by)
                        .await,
                )
            },
        )
        .await
        .map_err(ControlError::from)
    }

    // ---- Policy -------------------------------------------------------------

    pub fn policy_info(&self) -> PolicyInfo {
        let active = self.governor.active();
        PolicyInfo {
            content_hash: active.loaded.content_hash().to_owned(),
            record_hash: active.digest.to_hex(),
            policy_ids: active
                .loaded
                .policy_ids()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            text: active.loaded.text().to_owned(),
        }
    }

    /// Validates and activates a policy (decided as `policy_load`): recorded
    /// with its text before it takes effect, saved so that it survives a
    /// restart. A policy that does not validate changes nothing.
    pub async fn policy_load(
        &self,
        requester: &Requester,
        files: Vec<(String, String)>,
    ) -> Result<PolicyInfo, ControlError> {
        let (schemas, policies): (Vec<_>, Vec<_>) = files
            .into_iter()
            .map(|(name, text)| PolicySource::new(name, text))
            .partition(|source| source.name.ends_with(".cedarschema"));
        let schema = schemas
            .into_iter()
            .next()
            .unwrap_or_else(|| PolicySource::new(sios_policy::SCHEMA_FILE, sios_policy::SCHEMA));
        self.governed(
            requester,
            Action::PolicyLoad,
            Resource::Appliance,
            "appliance:policy".into(),
            || async {
                let loaded =
                    LoadedPolicy::from_sources(&policies, &schema).map_err(|e| e.to_string())?;
                let candidate = ActivePolicy::new(loaded);
                // Recorded, saved and activated as one: two loads at once
                // must not leave one saved and the other in force.
                let _one_at_a_time = self.operator_changes.lock().await;
                let mut event = RecordDraft::new(
                    requester.actor(),
                    "policy.activate",
                    "appliance",
                    DraftKind::Event,
                );
                event.policy_text = Some(candidate.text.clone());
                event.detail = format!(
                    "activated by {requester}: {}",
                    candidate.loaded.content_hash()
                );
                self.record(vec![event]).await?;
                crate::appliance::create_private_dir(&self.layout().kernel_dir())
                    .map_err(|e| e.to_string())?;
                crate::appliance::write_atomically(
                    &self.layout().active_policy(),
                    candidate.text.as_bytes(),
                )
                .map_err(|e| format!("cannot save the active policy: {e}"))?;
                self.governor.activate(candidate);
                Ok::<(), String>(())
            },
        )
        .await
        .map_err(ControlError::from)?;
        Ok(self.policy_info())
    }

    // ---- Sandbox -----------------------------------------------------------

    /// The enforced sandbox of a running brain, read back from /proc.
    pub async fn sandbox_report(
        &self,
        requester: &Requester,
        name: &str,
    ) -> Result<String, ControlError> {
        self.allowed_to_read(
            requester,
            Action::Status,
            Resource::Appliance,
            "appliance:sandbox",
        )
        .await?;
        let slot = self
            .slot(name)
            .ok_or_else(|| ControlError::UnknownProcess { name: name.into() })?;
        let pid = slot.pid().ok_or_else(|| {
            ControlError::Failed(format!(
                "`{name}` is not running ({})",
                slot.state().as_str()
            ))
        })?;
        let report = tokio::task::spawn_blocking(move || sios_launch::inspect::report(pid))
            .await
            .map_err(|e| ControlError::Failed(e.to_string()))?
            .map_err(|e| ControlError::Failed(e.to_string()))?;
        serde_json::to_string(&report).map_err(|e| ControlError::Failed(e.to_string()))
    }

    // ---- Memory --------------------------------------------------------------

    /// The policy's view of a namespace. Its owner is the principal its name
    /// starts with (`client:alice/notes` is client alice's, `brain:legal/cache`
    /// brain legal's); grants come from the `[[memory.namespaces]]` config.
    pub fn namespace(&self, name: &str) -> MemoryNamespace {
        let owner = memory::namespace_principal(name).unwrap_or_default();
        let mut namespace = MemoryNamespace::private(name, owner);
        if let Some(grant) = self
            .config()
            .memory
            .namespaces
            .iter()
            .find(|g| g.name == name)
        {
            namespace.readers = grant.readers.iter().cloned().collect();
            namespace.writers = grant.writers.iter().cloned().collect();
            namespace.reader_groups = grant.reader_groups.iter().cloned().collect();
            namespace.writer_groups = grant.writer_groups.iter().cloned().collect();
        }
        namespace
    }

    /// One memory operation on one namespace: decided, recorded, forwarded.
    /// `holds` is the most bytes the call may make the memory service hold:
    /// its request or its answer, whichever may be larger (see
    /// [`forward_memory_call`]).
    pub async fn memory_op<T, Fut>(
        &self,
        requester: &Requester,
        action: Action,
        namespace: &str,
        holds: usize,
        call: impl FnOnce(MemoryClient, tarpc::context::Context) -> Fut,
    ) -> Result<T, MemoryError>
    where
        Fut: Future<Output = Result<Result<T, MemoryError>, tarpc::client::RpcError>>,
    {
        memory::validate_namespace(namespace)?;
        let client = self.memory_client()?;
        let resource = Resource::MemoryNamespace(self.namespace(namespace));
        let in_flight = Arc::clone(&self.memory_in_flight);
        Ok(self
            .governed(
                requester,
                action,
                resource,
                format!("memory:{namespace}"),
                || forward_memory_call(in_flight, holds, client, call),
            )
            .await?)
    }

    /// A memory operation over a scope that is not one plain namespace
    /// (`subject/<id>`, `*`): decided on that scope, recorded, forwarded.
    #[allow(clippy::too_many_arguments)]
    pub async fn memory_scoped<T, Fut>(
        &self,
        requester: &Requester,
        action: Action,
        scope: &str,
        label: String,
        data_subject: Option<&str>,
        holds: usize,
        call: impl FnOnce(MemoryClient, tarpc::context::Context) -> Fut,
    ) -> Result<T, MemoryError>
    where
        Fut: Future<Output = Result<Result<T, MemoryError>, tarpc::client::RpcError>>,
    {
        let client = self.memory_client()?;
        let resource = Resource::MemoryNamespace(self.namespace(scope));
        let in_flight = Arc::clone(&self.memory_in_flight);
        Ok(self
            .governed_about(requester, action, resource, label, data_subject, || {
                forward_memory_call(in_flight, holds, client, call)
            })
            .await?)
    }

    /// Decides every namespace an operation spans before any of it runs.
    /// A denial is recorded like any other, on `memory:<operation>:<namespace>`.
    pub async fn memory_allowed_everywhere(
        &self,
        requester: &Requester,
        action: Action,
        operation: &str,
        namespaces: &[String],
    ) -> Result<(), MemoryError> {
        for name in namespaces {
            memory::validate_namespace(name)?;
            let ruling = self.governor.decide(
                self.principal(requester),
                action,
                Resource::MemoryNamespace(self.namespace(name)),
            );
            if ruling.allowed() {
                continue;
            }
            let label = format!("memory:{operation}:{name}");
            let refused: Result<(), Refusal<MemoryError>> = self
                .carry_out(requester, ruling, label, None, || async { Ok(()) })
                .await;
            return Err(match refused {
                Err(Refusal::Denied { reason, .. }) => MemoryError::Denied {
                    reason: format!(
                        "{requester} may not {} memory:{name}: {reason}",
                        action.as_str()
                    ),
                },
                Err(other) => other.into(),
                // Not reached: a denied ruling never runs.
                Ok(()) => MemoryError::Denied {
                    reason: format!("{requester} may not {} memory:{name}", action.as_str()),
                },
            });
        }
        Ok(())
    }
}

/// Sends one memory call once `holds` bytes of the memory service's share
/// are free ([`Appliance::memory_in_flight`]), and gives them back when its
/// answer is in. The memory service keeps each answer (a page of up to
/// 4 MiB, an item of up to 1.1 MiB) in memory, several times over, until
/// the kernel has read it; a client that sent many reads at once got it
/// killed by the out-of-memory killer (measured: 4,096 pipelined reads of a
/// 1 MiB item against its 4 GiB limit), and with it every other caller's
/// requests in flight. The call waits in turn (first come, first served)
/// within its timeout; the wait comes after the intent is recorded, so a
/// request refused for want of room is recorded with that reason.
async fn forward_memory_call<T, Fut>(
    in_flight: Arc<ByteBudget>,
    holds: usize,
    client: MemoryClient,
    call: impl FnOnce(MemoryClient, tarpc::context::Context) -> Fut,
) -> Result<T, MemoryError>
where
    Fut: Future<Output = Result<Result<T, MemoryError>, tarpc::client::RpcError>>,
{
    let started = Instant::now();
    let wait = in_flight.wait_to_serve(holds as u64);
    let Ok(turn) = tokio::time::timeout(SERVICE_TIMEOUT, wait).await else {
        return Err(MemoryError::Busy(format!(
            "the requests already sent to it held all the {} it may be asked to hold at once \
             (an eighth of `[sandbox.services] memory_mib`) for {} s",
            sios_ipc::services::human_bytes(in_flight.limit_bytes()),
            SERVICE_TIMEOUT.as_secs()
        )));
    };
    let ctx = transport::context_with_timeout(SERVICE_TIMEOUT.saturating_sub(started.elapsed()));
    let answer = match call(client, ctx).await {
        Ok(result) => result,
        Err(rpc) => Err(MemoryError::Unavailable(format!(
            "the memory service did not answer: {rpc}"
        ))),
    };
    drop(turn);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_error_never_holds_the_data_subject_id() {
        let id = "patient-7@clinic.example";
        let kept = recorded_error(
            format!("memory:subject/{id} failed: {id}{id} is busy"),
            Some(id),
        );
        assert_eq!(
            kept,
            "memory:subject/<the data subject> failed: <the data subject><the data subject> is busy"
        );
        // Overlapping occurrences leave none behind either.
        let kept = recorded_error("abababab".into(), Some("abab"));
        assert!(!kept.contains("abab"), "{kept}");
        // A short id would turn everything into placeholders: left out whole.
        let kept = recorded_error("a write failed".into(), Some("a"));
        assert!(kept.contains("named the data subject") && !kept.contains("write"));
        // So is one whose id the placeholder itself contains.
        let kept = recorded_error("subject busy".into(), Some("subject"));
        assert!(
            kept.contains("leaves it out") && !kept.contains("busy"),
            "{kept}"
        );
        // Other requests' messages, and messages without the id, are kept.
        assert_eq!(recorded_error("disk full".into(), Some(id)), "disk full");
        assert_eq!(recorded_error(format!("{id}!"), None), format!("{id}!"));
    }
}
