//! What a decision is about: principals, actions, resources, as plain Rust
//! values, and the decision itself.
//!
//! A [`DecisionRequest`] carries every attribute the policy can see, so it is
//! exactly what the audit log records: `sios audit replay` rebuilds the Cedar
//! entities from it alone. Every collection is a `BTreeSet`, so a request
//! serializes to the same bytes on every machine.
//!
//! The Cedar side of the model (entity types, attributes, actions) is declared
//! in `deploy/policy/sios.cedarschema`; [`crate::entities`] turns these values
//! into Cedar entities.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The highest clearance or sensitivity level.
pub const MAX_LEVEL: u8 = 3;

/// Names of the levels shared by clearances and sensitivities, index = level.
pub const LEVEL_NAMES: [&str; 4] = ["public", "internal", "confidential", "restricted"];

/// Who asks.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Principal {
    /// A program or person on the host, identified by SO_PEERCRED.
    Client(Client),
    /// A brain asking the kernel, identified by the socket the kernel gave it.
    Brain(Brain),
    /// One of sios's own services.
    Service(Service),
}

/// A client, as [`crate::ClientDirectory::principal_for`] maps it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Client {
    pub uid: u32,
    pub gid: u32,
    /// The config's name for this uid, or `uid-<uid>` for an unknown caller.
    pub name: String,
    /// 0..=3, see [`LEVEL_NAMES`].
    pub clearance: u8,
    pub groups: BTreeSet<String>,
    /// The config lists this uid or one of its gids as an operator.
    pub operator: bool,
    /// The config names this uid or one of its gids.
    pub known: bool,
}

/// Whether a brain is a subject-matter specialist or a piece of machinery
/// (the same two kinds as a manifest's `kind`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum BrainKind {
    Domain,
    Operational,
}

impl BrainKind {
    /// The value of the `kind` attribute the policy sees.
    pub fn as_str(self) -> &'static str {
        match self {
            BrainKind::Domain => "domain",
            BrainKind::Operational => "operational",
        }
    }
}

/// A brain, as its manifest declares it. The same value describes a brain as
/// a principal (it calls) and as a resource (it is invoked, restarted, …).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Brain {
    pub name: String,
    pub kind: BrainKind,
    /// 0..=3, see [`LEVEL_NAMES`].
    pub sensitivity: u8,
    /// Brains the manifest says it may call (`capabilities.calls`).
    pub callees: BTreeSet<String>,
    /// Memory namespaces the manifest names (`capabilities.memory_namespaces`).
    pub namespaces: BTreeSet<String>,
}

/// One of sios's own services (`audit`, `memory`, `gateway`, …).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Service {
    pub name: String,
}

impl Principal {
    /// The principal id the policy sees as `principal.id`, and that memory
    /// namespaces name as owner or grantee: `client:<name>`, `brain:<name>`,
    /// `service:<name>`.
    pub fn id(&self) -> String {
        match self {
            Principal::Client(c) => format!("client:{}", c.name),
            Principal::Brain(b) => format!("brain:{}", b.name),
            Principal::Service(s) => format!("service:{}", s.name),
        }
    }
}

/// What is asked about.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Resource {
    Brain(Brain),
    MemoryNamespace(MemoryNamespace),
    AuditLog,
    /// A supervised process that is not a brain.
    Process(Process),
    /// The appliance as a whole (status, policy, keys).
    Appliance,
}

/// A memory namespace and who may use it besides its owner.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct MemoryNamespace {
    pub name: String,
    /// Principal id of the owner ([`Principal::id`]), e.g. `client:alice`.
    pub owner: String,
    /// Principal ids granted read.
    #[serde(default)]
    pub readers: BTreeSet<String>,
    /// Principal ids granted write.
    #[serde(default)]
    pub writers: BTreeSet<String>,
    /// Client groups granted read.
    #[serde(default)]
    pub reader_groups: BTreeSet<String>,
    /// Client groups granted write.
    #[serde(default)]
    pub writer_groups: BTreeSet<String>,
}

impl MemoryNamespace {
    /// A namespace owned by `owner` with no grants.
    pub fn private(name: impl Into<String>, owner: impl Into<String>) -> Self {
        MemoryNamespace {
            name: name.into(),
            owner: owner.into(),
            readers: BTreeSet::new(),
            writers: BTreeSet::new(),
            reader_groups: BTreeSet::new(),
            writer_groups: BTreeSet::new(),
        }
    }
}

/// A supervised process that is not a brain.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Process {
    pub name: String,
}

/// Every action the kernel decides. The names are the schema's action ids
/// (`Sios::Action::"invoke"`, …) and the serde names.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// A client (or the gateway) uses a brain.
    Invoke,
    /// A brain asks the kernel to call another brain.
    CallBrain,
    MemoryRead,
    MemoryWrite,
    MemoryErase,
    MemoryExport,
    /// Restart a brain or another supervised process.
    Restart,
    /// Activate a new policy.
    PolicyLoad,
    /// Rotate the operator's signing key.
    KeyRotate,
    BrainEnable,
    BrainDisable,
    /// Read or export the audit log.
    AuditRead,
    /// Ask whether the appliance is up and what runs.
    Status,
    /// Stop the whole appliance (`sios down`).
    Shutdown,
}

impl Action {
    /// Every action, in declaration order.
    pub const ALL: [Action; 14] = [
        Action::Invoke,
        Action::CallBrain,
        Action::MemoryRead,
        Action::MemoryWrite,
        Action::MemoryErase,
        Action::MemoryExport,
        Action::Restart,
        Action::PolicyLoad,
        Action::KeyRotate,
        Action::BrainEnable,
        Action::BrainDisable,
        Action::AuditRead,
        Action::Status,
        Action::Shutdown,
    ];

    /// The schema's action id.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Invoke => "invoke",
            Action::CallBrain => "call_brain",
            Action::MemoryRead => "memory_read",
            Action::MemoryWrite => "memory_write",
            Action::MemoryErase => "memory_erase",
            Action::MemoryExport => "memory_export",
            Action::Restart => "restart",
            Action::PolicyLoad => "policy_load",
            Action::KeyRotate => "key_rotate",
            Action::BrainEnable => "brain_enable",
            Action::BrainDisable => "brain_disable",
            Action::AuditRead => "audit_read",
            Action::Status => "status",
            Action::Shutdown => "shutdown",
        }
    }

    /// Position in [`Action::ALL`]. Every table indexed by it is built by
    /// iterating `Action::ALL`, so the index is always in range.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name given is not one of [`Action::ALL`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error(
    "unknown action `{0}`; the actions are: invoke, call_brain, memory_read, memory_write, memory_erase, memory_export, restart, policy_load, key_rotate, brain_enable, brain_disable, audit_read, status, shutdown"
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.to_owned()))
    }
}

/// One question put to the policy. This is what the audit log records with
/// each decision, and all that replay needs besides the policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct DecisionRequest {
    pub principal: Principal,
    pub action: Action,
    pub resource: Resource,
}

/// The answer. Equal requests against equal policies give equal decisions,
/// field for field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Decision {
    /// True only if some `permit` applied, no `forbid` applied, and nothing
    /// failed while deciding (fail closed).
    pub allowed: bool,
    /// The `@id`s of the policies that determined the decision, sorted:
    /// the permits that applied (allow); the forbids that applied and the
    /// policies whose evaluation failed (deny); empty for a deny because no
    /// permit applied.
    pub policy_ids: Vec<String>,
    /// [`crate::LoadedPolicy::content_hash`] of the policy that decided.
    pub policy_hash: String,
    /// Why deciding failed, sorted; non-empty means denied.
    pub errors: Vec<String>,
}

/// Why a decision came out the way it did (derived from a [`Decision`]).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// At least one permit applied and no forbid did.
    Permitted,
    /// A forbid applied.
    Forbidden,
    /// No permit applied (the default).
    NoPermit,
    /// Deciding failed somewhere; the request is denied (fail closed).
    Error,
}
