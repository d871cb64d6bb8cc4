//! Deciding and recording: the two steps every request passes before it runs.
//!
//! [`Governor`] holds the active policy and the client directory. It turns
//! a requester the kernel identified (SO_PEERCRED for clients, the private
//! channel for brains) into a Cedar principal, and decides. It never looks at
//! anything a caller wrote about itself.
//!
//! The decision's audit record carries the SHA-256 of the active policy's
//! stored text (a JSON [`sios_policy::PolicyBundle`]: schema and policies,
//! canonical) and, in its `detail`, the [`DecisionRequest`] as JSON: with the
//! two, `sios audit replay` re-decides every recorded request offline.

use sha2::{Digest as _, Sha256};
use sios_ipc::audit::{Decision as RecordedDecision, Digest, Effect};
use sios_policy::{
    Action, ClientDirectory, Decision, DecisionRequest, LoadedPolicy, Principal, Resource,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// The policy in force, with the text the audit log stores for it.
#[derive(Debug)]
pub struct ActivePolicy {
    pub loaded: LoadedPolicy,
    /// The stored text: the policy bundle as JSON.
    pub text: String,
    /// SHA-256 of `text`: what decision records name.
    pub digest: Digest,
    /// Rulings already made under this policy (see [`RulingMemo`]).
    memo: RulingMemo,
}

/// At most this many rulings are remembered per policy; at the limit the
/// memo starts over. The working set of a running appliance is its callers
/// × the brains and namespaces they use × a few actions: hundreds.
const MAX_REMEMBERED_RULINGS: usize = 4096;

/// Rulings already made under one policy, by request.
///
/// A decision is a function of the policy and the request alone: the
/// context Cedar sees is empty, and every entity and attribute it sees is
/// built from the [`DecisionRequest`] (the principal as the kernel
/// identified it, with its groups and clearance; the resource with its
/// manifest's or namespace's attributes). So a request equal to one decided
/// before gets that decision again, with the same policy ids, hash and
/// replay detail, without Cedar evaluating it again; under load Cedar was
/// about a fifth of the kernel's CPU time per invoke. Any change to what
/// the policy could see makes a different request (a new group, a
/// re-manifested brain), and a new policy comes with an empty memo.
/// `sios audit replay` re-decides with Cedar itself, so a memo that ever
/// answered wrongly would show there.
#[derive(Debug, Default)]
struct RulingMemo {
    rulings: Mutex<HashMap<DecisionRequest, Decided>>,
}

/// What a ruling holds besides its request.
#[derive(Debug, Clone)]
struct Decided {
    decision: Decision,
    recorded: RecordedDecision,
    detail: String,
}

impl RulingMemo {
    fn get(&self, request: &DecisionRequest) -> Option<Decided> {
        let rulings = self.rulings.lock().unwrap_or_else(|p| p.into_inner());
        rulings.get(request).cloned()
    }

    fn remember(&self, request: &DecisionRequest, decided: &Decided) {
        let mut rulings = self.rulings.lock().unwrap_or_else(|p| p.into_inner());
        if rulings.len() >= MAX_REMEMBERED_RULINGS {
            // Callers naming ever new namespaces or keys must not grow it
            // without end; starting over costs one evaluation per request.
            rulings.clear();
        }
        rulings.insert(request.clone(), decided.clone());
    }
}

impl ActivePolicy {
    pub fn new(loaded: LoadedPolicy) -> ActivePolicy {
        // A bundle is strings and a hash: serialising it cannot fail.
        let text = serde_json::to_string(&loaded.bundle()).unwrap_or_default();
        let digest = Digest(Sha256::digest(text.as_bytes()).into());
        ActivePolicy {
            loaded,
            text,
            digest,
            memo: RulingMemo::default(),
        }
    }

    /// Decides `request` with Cedar, and makes what its record needs.
    fn evaluate(&self, request: &DecisionRequest) -> Decided {
        let decision = self.loaded.decide(request);
        let recorded = RecordedDecision {
            effect: if decision.allowed {
                Effect::Allow
            } else {
                Effect::Deny
            },
            policy_hash: self.digest,
            policy_ids: decision.policy_ids.clone(),
        };
        // A request is plain data: serialising it cannot fail.
        let detail = serde_json::to_string(request).unwrap_or_default();
        Decided {
            decision,
            recorded,
            detail,
        }
    }

    /// Re-loads a stored text (as `sios audit replay` does).
    pub fn from_text(text: &str) -> Result<ActivePolicy, String> {
        let bundle: sios_policy::PolicyBundle =
            serde_json::from_str(text).map_err(|e| format!("not a sios policy bundle: {e}"))?;
        let loaded = LoadedPolicy::from_bundle(&bundle).map_err(|e| e.to_string())?;
        Ok(ActivePolicy::new(loaded))
    }
}

/// Why a policy could not be made active.
#[derive(thiserror::Error, Debug)]
pub enum GovernanceError {
    #[error(transparent)]
    Policy(#[from] sios_policy::PolicyError),
    #[error("the [policy] section of the config is invalid: {0}")]
    Directory(#[from] sios_policy::DirectoryError),
    #[error(
        "the saved active policy {path} cannot be used: {reason}; remove it to fall back to the configured policy"
    )]
    Saved { path: PathBuf, reason: String },
}

/// The active policy and the client directory.
#[derive(Debug)]
pub struct Governor {
    active: RwLock<Arc<ActivePolicy>>,
    directory: ClientDirectory,
    /// Decisions made, how many came from the memo, and the time spent
    /// making them (see [`DecisionStats`]).
    decisions: AtomicU64,
    remembered: AtomicU64,
    deciding_ns: AtomicU64,
}

/// How much deciding has cost since start: every [`Governor::decide`] call,
/// timed from taking the active policy to a finished [`Ruling`] (Cedar's
/// evaluation, the recorded decision, the request serialised for replay; or,
/// for a request decided before under the same policy, the memo's answer).
/// The clock never reaches the decision; it only measures it. This is what
/// the policy adds to the request path, measured in the path itself
/// (`cargo bench -p sios-e2e --bench policy` reports it beside end-to-end
/// invoke latency).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecisionStats {
    pub decisions: u64,
    /// Of `decisions`, those answered from the memo of rulings already made
    /// under the same policy, without evaluating Cedar again.
    pub remembered: u64,
    pub deciding_ns: u64,
}

/// A decision, with what the audit record needs.
#[derive(Debug, Clone)]
pub struct Ruling {
    pub decision: Decision,
    pub request: DecisionRequest,
    pub recorded: RecordedDecision,
    /// `request` as JSON, made once while deciding.
    detail: String,
}

impl Ruling {
    pub fn allowed(&self) -> bool {
        self.decision.allowed
    }

    /// The request as JSON, for the record's `detail` (replay reads it back).
    pub fn detail(&self) -> String {
        self.detail.clone()
    }

    /// One line on why it was denied, for the caller.
    pub fn reason(&self) -> String {
        if !self.decision.errors.is_empty() {
            format!(
                "the policy could not be evaluated, so it denies: {}",
                self.decision.errors.join("; ")
            )
        } else if self.decision.policy_ids.is_empty() {
            "no policy permits it (deny by default)".into()
        } else {
            format!("forbidden by {}", self.decision.policy_ids.join(", "))
        }
    }
}

impl Governor {
    /// The active policy at start: the one last activated with `sios policy
    /// load` (saved at `saved`), else the configured directory, else the
    /// built-in default.
    pub fn start(
        config: &sios_policy::PolicyConfig,
        saved: &Path,
    ) -> Result<Governor, GovernanceError> {
        let directory = config.directory()?;
        let loaded = if saved.exists() {
            let saved_err = |reason: String| GovernanceError::Saved {
                path: saved.to_owned(),
                reason,
            };
            let text = std::fs::read_to_string(saved).map_err(|e| saved_err(e.to_string()))?;
            let active = ActivePolicy::from_text(&text).map_err(saved_err)?;
            return Ok(Governor::new(active, directory));
        } else if let Some(dir) = &config.dir {
            LoadedPolicy::load_dir(dir)?
        } else {
            LoadedPolicy::shipped_default()?
        };
        Ok(Governor::new(ActivePolicy::new(loaded), directory))
    }

    fn new(active: ActivePolicy, directory: ClientDirectory) -> Governor {
        Governor {
            active: RwLock::new(Arc::new(active)),
            directory,
            decisions: AtomicU64::new(0),
            remembered: AtomicU64::new(0),
            deciding_ns: AtomicU64::new(0),
        }
    }

    /// What deciding has cost so far.
    pub fn stats(&self) -> DecisionStats {
        DecisionStats {
            decisions: self.decisions.load(Ordering::Relaxed),
            remembered: self.remembered.load(Ordering::Relaxed),
            deciding_ns: self.deciding_ns.load(Ordering::Relaxed),
        }
    }

    pub fn active(&self) -> Arc<ActivePolicy> {
        Arc::clone(&self.active.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Makes `policy` the active one (the caller records and saves it).
    pub fn activate(&self, policy: ActivePolicy) -> Arc<ActivePolicy> {
        let policy = Arc::new(policy);
        *self.active.write().unwrap_or_else(|p| p.into_inner()) = Arc::clone(&policy);
        policy
    }

    /// The principal for a client the kernel identified by SO_PEERCRED
    /// (uid, primary gid) and SO_PEERGROUPS (supplementary gids).
    pub fn client(&self, uid: u32, gid: u32, groups: &[u32]) -> Principal {
        self.directory.principal_for(uid, gid, groups)
    }

    /// Decides `principal` doing `action` to `resource` under the active policy.
    pub fn decide(&self, principal: Principal, action: Action, resource: Resource) -> Ruling {
        let started = Instant::now();
        let active = self.active();
        let request = DecisionRequest {
            principal,
            action,
            resource,
        };
        let decided = match active.memo.get(&request) {
            Some(decided) => {
                self.remembered.fetch_add(1, Ordering::Relaxed);
                decided
            }
            None => {
                let decided = active.evaluate(&request);
                active.memo.remember(&request, &decided);
                decided
            }
        };
        let ruling = Ruling {
            decision: decided.decision,
            request,
            recorded: decided.recorded,
            detail: decided.detail,
        };
        let elapsed = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.decisions.fetch_add(1, Ordering::Relaxed);
        self.deciding_ns.fetch_add(elapsed, Ordering::Relaxed);
        ruling
    }
}

/// The supplementary groups of the peer of `socket`, as the Linux kernel
/// recorded them when it connected (SO_PEERGROUPS, Linux 4.13+): like
/// SO_PEERCRED's uid and gid, nothing the peer can change afterwards. An
/// error is the caller's to refuse the connection on: a principal missing a
/// group could escape a `forbid` written about that group.
pub fn peer_groups(socket: &impl std::os::fd::AsRawFd) -> std::io::Result<Vec<u32>> {
    const GID: usize = std::mem::size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * GID)
            .map_err(|_| std::io::Error::other("too many supplementary groups"))?;
        #[allow(unsafe_code)]
        // SAFETY: `groups` is a live, writable buffer of exactly `len` bytes;
        // the kernel writes at most `len` bytes into it and stores in `len`
        // how many it wrote (or, failing with ERANGE, how many it needs).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = usize::try_from(len).unwrap_or(usize::MAX) / GID;
        if rc == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ERANGE) && needed > groups.len() {
            groups.resize(needed, 0);
            continue;
        }
        return Err(err);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sios_policy::{Brain, BrainKind, Client, DEFAULT_POLICY, SCHEMA};
    use std::collections::BTreeSet;

    fn governor() -> Governor {
        let saved = tempfile::tempdir().expect("temp dir");
        Governor::start(
            &sios_policy::PolicyConfig::default(),
            &saved.path().join("none"),
        )
        .expect("the shipped policy")
    }

    fn alice(groups: &[&str]) -> Principal {
        Principal::Client(Client {
            uid: 1000,
            gid: 1000,
            name: "alice".into(),
            clearance: 1,
            groups: groups.iter().map(|g| g.to_string()).collect(),
            operator: false,
            known: true,
        })
    }

    fn clinical_triage() -> Resource {
        Resource::Brain(Brain {
            name: "clinical-triage".into(),
            kind: BrainKind::Domain,
            sensitivity: 1,
            callees: BTreeSet::new(),
            namespaces: BTreeSet::new(),
        })
    }

    /// What a ruling says, all of it.
    fn said(ruling: &Ruling) -> (Decision, RecordedDecision, String) {
        (
            ruling.decision.clone(),
            ruling.recorded.clone(),
            ruling.detail(),
        )
    }

    #[test]
    fn a_request_decided_before_gets_the_same_ruling_from_the_memo() {
        let governor = governor();
        let first = governor.decide(alice(&[]), Action::Invoke, clinical_triage());
        assert!(!first.allowed(), "clinical brains are for clinicians only");
        let again = governor.decide(alice(&[]), Action::Invoke, clinical_triage());
        assert_eq!(said(&again), said(&first));
        assert_eq!(again.request, first.request);
        let stats = governor.stats();
        assert_eq!((stats.decisions, stats.remembered), (2, 1));
        // The memo's answer is what Cedar says.
        let active = governor.active();
        assert_eq!(active.loaded.decide(&again.request), again.decision);
    }

    #[test]
    fn anything_the_policy_could_see_changed_is_decided_afresh() {
        let governor = governor();
        assert!(
            !governor
                .decide(alice(&[]), Action::Invoke, clinical_triage())
                .allowed()
        );
        // The same caller in the clinicians group is another request.
        let clinician = governor.decide(alice(&["clinicians"]), Action::Invoke, clinical_triage());
        assert!(clinician.allowed(), "{}", clinician.reason());
        assert_eq!(governor.stats().remembered, 0);
    }

    #[test]
    fn a_new_policy_starts_with_an_empty_memo() {
        let governor = governor();
        let before = governor.decide(alice(&["clinicians"]), Action::Invoke, clinical_triage());
        assert!(before.allowed(), "{}", before.reason());
        let stricter = format!(
            "{DEFAULT_POLICY}\n@id(\"test.no-invoke\")\nforbid(principal, action == Sios::Action::\"invoke\", resource);\n"
        );
        let loaded = LoadedPolicy::from_text(&stricter, SCHEMA).expect("the stricter policy");
        governor.activate(ActivePolicy::new(loaded));
        let after = governor.decide(alice(&["clinicians"]), Action::Invoke, clinical_triage());
        assert!(!after.allowed());
        assert_eq!(after.decision.policy_ids, vec!["test.no-invoke".to_owned()]);
        assert_ne!(after.recorded.policy_hash, before.recorded.policy_hash);
        assert_eq!(governor.stats().remembered, 0);
    }

    #[test]
    fn the_memo_never_holds_more_than_its_limit() {
        let governor = governor();
        for n in 0..MAX_REMEMBERED_RULINGS + 10 {
            let namespace =
                sios_policy::MemoryNamespace::private(format!("client:alice/n{n}"), "client:alice");
            governor.decide(
                alice(&[]),
                Action::MemoryRead,
                Resource::MemoryNamespace(namespace),
            );
        }
        let active = governor.active();
        let held = active.memo.rulings.lock().expect("memo").len();
        assert!(held <= MAX_REMEMBERED_RULINGS && held > 0, "{held}");
    }
}
