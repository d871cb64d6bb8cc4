//! sios governance: every request the kernel routes is first decided here.
//!
//! The policy is data (Cedar policies, validated against
//! `deploy/policy/sios.cedarschema`), evaluated deterministically: the same
//! policy and the same [`DecisionRequest`] give the same [`Decision`], field
//! for field, on every machine. Default deny; a `forbid` overrides any
//! `permit`; and, unlike plain Cedar, **fail closed**: a policy whose
//! evaluation errors denies the request instead of being skipped.
//!
//! # How the kernel uses it
//! ```
//! use sios_policy::{Action, DecisionRequest, LoadedPolicy, PolicyConfig, Resource};
//!
//! // At start (and on `sios policy load <dir>`, keeping the old one on error):
//! let policy = LoadedPolicy::shipped_default()?; // or LoadedPolicy::load_dir(dir)?
//! let clients = PolicyConfig::default().directory()?; // from the config's [policy]
//! // Store policy.bundle() in the audit log, addressed by policy.content_hash().
//!
//! // On every request: identity from SO_PEERCRED, never from the message.
//! let req = DecisionRequest {
//!     principal: clients.principal_for(0, 0, &[]),
//!     action: Action::Status,
//!     resource: Resource::Appliance,
//! };
//! let decision = policy.decide(&req);
//! assert!(decision.allowed);
//! // Record (req, decision) in the audit log before acting; act only if allowed.
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//! - `model`: principals, resources, actions, requests and decisions as plain
//!   serde values (what the audit log records).
//! - `entities`: those values as Cedar entities.
//! - `load`: reading, strict validation, canonical text, content hash.
//! - `index`: which policies can apply to a request, from their scopes.
//! - `decide`: fail-closed, deterministic decisions; `explain`; `replay`.
//! - `directory`: the `[policy]` config table and uid/gid → principal.
//! - `error`: problems with file, line and column.

mod decide;
mod directory;
mod entities;
mod error;
mod index;
mod load;
mod model;

pub use decide::{ExplainedPolicy, Explanation, replay};
pub use directory::{
    ClientDirectory, ClientEntry, DirectoryError, GroupEntry, Level, Operators, PolicyConfig,
};
pub use error::{PolicyError, Problem, Severity};
pub use load::{
    DEFAULT_POLICY, LoadedPolicy, PolicyBundle, PolicySource, SCHEMA, SCHEMA_FILE,
    is_valid_policy_id, not_a_single_file,
};
pub use model::{
    Action, Brain, BrainKind, Client, Decision, DecisionRequest, LEVEL_NAMES, MAX_LEVEL,
    MemoryNamespace, Principal, Process, Reason, Resource, Service, UnknownAction,
};
