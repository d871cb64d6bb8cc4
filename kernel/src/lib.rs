//! sios-kernel: the supervisor. Small and trusted: it spawns every other
//! process, supervises them, identifies every caller, and routes every
//! request. It holds no customer data at rest.
//!
//! # Layout
//! - [`appliance`]: the set of processes, start/stop order, the request path.
//! - [`operations`]: audit, policy, sandbox and memory requests, each governed.
//! - [`audit_follow`]: `sios audit tail --follow`, one recorded action per session.
//! - [`memory_access`]: every memory request, for clients and brains alike.
//! - [`governance`]: the policy in force; deciding every request.
//! - [`supervisor`]: one task per child: spawn, readiness, restart policy.
//! - [`child_log`]: children's stderr, passed on with bounded memory and rate.
//! - [`spawn`]: the single launch path (through `sios-launch`) for every child.
//! - [`ask`]: `sios ask`, the deterministic multi-brain pipeline.
//! - [`disk`]: the state directory's free space, for `sios status`.
//! - [`api`]: the client socket's service, with SO_PEERCRED identity.

pub mod answer_bounds;
pub mod api;
pub mod appliance;
pub mod ask;
pub mod audit_follow;
pub mod child_log;
pub mod connections;
pub mod disk;
pub mod governance;
pub mod memory_access;
pub mod operations;
pub mod service_manager;
pub mod spawn;
pub mod supervisor;
