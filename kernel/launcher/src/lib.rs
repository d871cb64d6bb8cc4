//! The launch spec: what the kernel asks `sios-launch` to set up before it
//! execs a child.
//!
//! Every child of the kernel (audit, memory, each brain) is started as
//! `sios-launch <spec-json>`. The launcher is a tiny, single-threaded program:
//! it is where process-wide restrictions are applied, because some of them
//! (entering namespaces, in particular) are only possible from a process with
//! one thread, which the kernel, running tokio, is not. Each step is applied in
//! order and a failing step stops the launch with an error naming that step;
//! nothing is ever exec'd half-restricted.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Exit status of the launcher (and of children) for a permanent
/// misconfiguration that a restart cannot fix (sysexits' EX_CONFIG). The
/// kernel marks such a process failed at once instead of restarting it.
pub const EXIT_CONFIG: i32 = 78;

/// Everything the launcher needs to know.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// Name of the process, for error messages.
    pub name: String,
    /// The program to exec, and its arguments (not including argv[0]).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment of the child: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// The kernel's pid. If the launcher's parent is no longer this process
    /// (the kernel died while launching), the launch is abandoned.
    pub parent_pid: u32,
    /// Resource limits.
    pub limits: ProcessLimits,
}

/// rlimits applied before exec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessLimits {
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
}

impl LaunchSpec {
    /// The spec as the single argument the launcher takes.
    pub fn to_arg(&self) -> String {
        // A LaunchSpec holds only strings, paths and integers: serialising it
        // cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the launcher's argument.
    pub fn from_arg(arg: &str) -> Result<LaunchSpec, serde_json::Error> {
        serde_json::from_str(arg)
    }
}
