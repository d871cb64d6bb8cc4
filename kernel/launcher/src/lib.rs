//! The launch spec: what the kernel asks `sios-launch` to set up before it
//! execs a child, and the sandbox that every brain runs in.
//!
//! Every child of the kernel (audit, memory, each brain) is started as
//! `sios-launch <spec-json>`. The launcher is a tiny, single-threaded program:
//! it is where process-wide restrictions are applied, because some of them
//! (entering namespaces, in particular) are only possible from a process with
//! one thread, which the kernel, running tokio, is not. Each step is applied in
//! order and a failing step stops the launch with an error naming that step,
//! the path and the OS error (exit status [`EXIT_CONFIG`]); nothing is ever
//! exec'd half-restricted. `kernel/launcher/README.md` walks through the
//! sandbox step by step.
//!
//! # Layout
//! - this file: [`LaunchSpec`], [`SandboxSpec`] and the helpers the kernel uses
//!   to fill them ([`SandboxSpec::brain`], [`cgroup_path`]).
//! - [`jail`]: the launch itself — every sandbox step, one error variant each.
//! - [`seccomp`]: the seccomp policy as a table, and [`lock_down_exec`].
//! - [`cgroup`]: cgroup v1/v2 limits, joining, clean-up.
//! - [`elf`]: finds the shared libraries a program needs, so that only those
//!   are mounted into its root.
//! - [`record`]: what the launcher applied, kept where `inspect` can read it.
//! - [`inspect`]: reads back from /proc what is enforced on a running process
//!   (`sios sandbox show <brain>`), and renders it as a table.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub mod cgroup;
pub mod elf;
pub mod inspect;
pub mod jail;
pub mod record;
pub mod seccomp;

pub use seccomp::{LockDownError, lock_down_exec};

/// Exit status of the launcher (and of children) for a permanent
/// misconfiguration that a restart cannot fix (sysexits' EX_CONFIG). The
/// kernel marks such a process failed at once instead of restarting it.
pub const EXIT_CONFIG: i32 = 78;

/// The prefix of a line the launcher writes on stderr to tell the operator
/// something that did not stop the launch (e.g. cgroups unavailable). The
/// rest of the line is one sentence. The kernel should show each distinct
/// notice once (in `status` and the log), not on every restart.
pub const NOTICE_PREFIX: &str = "sios-launch: notice: ";

/// Everything the launcher needs to know.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LaunchSpec {
    /// Name of the process, for error messages.
    pub name: String,
    /// The program to exec, and its arguments (not including `argv[0]`).
    pub program: PathBuf,
    pub args: Vec<String>,
    /// The complete environment of the child: nothing else is inherited.
    pub env: Vec<(String, String)>,
    /// The kernel's pid. If the launcher's parent is no longer this process
    /// (the kernel died while launching), the launch is abandoned.
    pub parent_pid: u32,
    /// Resource limits.
    pub limits: ProcessLimits,
    /// The sandbox. `None` applies only the restrictions above and execs the
    /// program in place (the launcher's pid becomes the program's): for tests
    /// of the program itself, never for a production brain.
    #[serde(default)]
    pub sandbox: Option<SandboxSpec>,
}

/// rlimits applied before exec.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProcessLimits {
    /// RLIMIT_NOFILE.
    pub max_open_files: u64,
}

/// The sandbox a program runs in. Every field is enforced or the launch
/// fails; the only exception is cgroups, which a host may not offer (see
/// [`CgroupSpec`]).
///
/// What is always applied when a sandbox is given, whatever the fields say:
/// every capability dropped (effective, permitted, inheritable, ambient and
/// the bounding set), securebits locked, NO_NEW_PRIVS, parent-death signal,
/// RLIMIT_CORE = 0, a seccomp filter (see [`seccomp`]) that also refuses any
/// `execve` after the program has started.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SandboxSpec {
    /// Namespaces to create.
    pub namespaces: Namespaces,
    /// The unprivileged uid and gid the program runs as, as seen from the
    /// host (with a user namespace, the same number is mapped inside, and
    /// nothing else is: root does not exist inside). 0 is refused. Give each
    /// brain its own (e.g. [`BRAIN_UID_BASE`] + its index) so that per-user
    /// limits and signals never reach another brain.
    pub uid: u32,
    pub gid: u32,
    /// Files and directories the program may read. Each is mounted read-only
    /// and non-executable at the same path inside the sandbox (so the
    /// program's arguments stay valid). Must exist. Subdirectories that are
    /// mount points are not carried along (non-recursive bind).
    #[serde(default)]
    pub ro_paths: Vec<PathBuf>,
    /// Shared libraries the program loads at run time with `dlopen` (ONNX
    /// Runtime): mounted read-only and executable. The program itself is
    /// always mounted; the ELF dependencies of the program and of these
    /// libraries (libc, libstdc++, the dynamic loader, …) are found by the
    /// launcher and mounted file by file at the path the loader searches.
    #[serde(default)]
    pub libraries: Vec<PathBuf>,
    /// Directories the program may write (a service's own state directory).
    /// Empty for brains.
    #[serde(default)]
    pub rw_paths: Vec<PathBuf>,
    /// A private tmpfs at /tmp of this many MiB (nosuid, nodev, noexec).
    /// `None`: there is no /tmp.
    #[serde(default)]
    pub tmp_mib: Option<u64>,
    /// Whether and how /proc is mounted. Needs the pid namespace.
    #[serde(default)]
    pub proc: ProcMount,
    /// Put read-only copies of the files that describe the CPU in the root
    /// (/sys/devices/system/cpu/{possible,present,online,kernel_max}, and
    /// /proc/cpuinfo when `proc` is `None`): ONNX Runtime reads them to pick
    /// its CPU code paths, and warns and guesses without them. A snapshot,
    /// not a mount: nothing else of /sys or /proc comes along.
    #[serde(default)]
    pub cpu_info: bool,
    /// Device nodes to make available, at the same path. Only
    /// [`ALLOWED_DEVICES`] are accepted; there is no other /dev.
    #[serde(default)]
    pub devices: Vec<PathBuf>,
    /// rlimits beyond `ProcessLimits`.
    pub limits: SandboxLimits,
    /// cgroup limits, where the host has cgroups to give.
    #[serde(default)]
    pub cgroup: Option<CgroupSpec>,
    /// Landlock: restrict the filesystem to exactly the paths above, even if
    /// a mount were missed. `true` unless the operator turned it off for a
    /// kernel without Landlock (a launch with `true` on such a kernel fails).
    #[serde(default = "yes")]
    pub landlock: bool,
    /// Hostname inside the UTS namespace (default: the process name).
    #[serde(default)]
    pub hostname: Option<String>,
}

fn yes() -> bool {
    true
}

/// Which namespaces the child gets of its own.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// Its own user namespace: capabilities inside are worthless outside,
    /// and only its own uid/gid are mapped.
    pub user: bool,
    /// An empty network namespace: no interface but a loopback that is down.
    pub net: bool,
    /// Its own mount namespace with a minimal root (pivot_root). Needed for
    /// `ro_paths` etc. to mean anything.
    pub mount: bool,
    /// Its own pid namespace: it sees only itself (pid 1).
    pub pid: bool,
    /// Its own System V IPC and POSIX message queue namespace.
    pub ipc: bool,
    /// Its own hostname.
    pub uts: bool,
}

impl Namespaces {
    /// Every namespace: what a brain gets.
    pub const ALL: Namespaces = Namespaces {
        user: true,
        net: true,
        mount: true,
        pid: true,
        ipc: true,
        uts: true,
    };
}

/// /proc inside the sandbox.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ProcMount {
    /// No /proc at all.
    #[default]
    None,
    /// /proc with only the process directories of the sandbox's own pid
    /// namespace (`subset=pid,hidepid=invisible`): no /proc/sys, /proc/kcore,
    /// /proc/cpuinfo… Enough for a program that reads /proc/self.
    Pids,
    /// A complete /proc of the sandbox's pid namespace.
    Full,
}

/// Device nodes a sandbox may be given.
pub const ALLOWED_DEVICES: [&str; 5] = [
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// rlimits of a sandboxed program (RLIMIT_NOFILE is `ProcessLimits`'s,
/// RLIMIT_CORE is always 0).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SandboxLimits {
    /// RLIMIT_NPROC: threads and processes of the sandbox's uid. Brains: the
    /// manifest's `max_pids`. Stops a fork bomb even without cgroups.
    pub max_processes: u64,
    /// RLIMIT_AS in MiB. Glibc and ONNX Runtime reserve address space far
    /// beyond what they use (per-thread malloc arenas): leave `None` unless
    /// measured; prefer `data_mib`.
    #[serde(default)]
    pub address_space_mib: Option<u64>,
    /// RLIMIT_DATA in MiB (heap + private writable mappings): the memory
    /// ceiling that holds without cgroups. Brains: the manifest's
    /// `memory_mib`. When a cgroup memory limit is in force the launcher sets
    /// [`jail::DATA_HEADROOM`] times this, so that the cgroup, which counts
    /// what is really used, decides (see there).
    #[serde(default)]
    pub data_mib: Option<u64>,
}

/// cgroup limits for one sandboxed program.
///
/// The launcher creates `<root>/<controller>/<path>` (cgroup v1, one per
/// controller) or `<root>/<path>` (cgroup v2), writes the limits, moves the
/// program in before it execs, and removes the directory after it exits.
/// Where the host has no cgroup controller to give (not root, v2 controllers
/// not delegated, not mounted), the launcher writes one
/// [`NOTICE_PREFIX`] line on stderr and carries on: the rlimits still hold.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CgroupSpec {
    /// Relative path of the group, e.g. `sios/<state-dir hash>/<brain>` (see
    /// [`cgroup_path`]), so that two appliances on one host never collide.
    pub path: String,
    /// memory.limit_in_bytes (v1) / memory.max (v2), in MiB. Swap is not
    /// allowed on top where the host accounts for it.
    #[serde(default)]
    pub memory_mib: Option<u64>,
    /// CPU weight, 1–10000, 100 = a fair share (cgroup v2 semantics);
    /// cpu.shares = weight × 1024 / 100 on v1.
    #[serde(default)]
    pub cpu_weight: Option<u32>,
    /// pids.max.
    #[serde(default)]
    pub max_pids: Option<u32>,
    /// Where cgroups are mounted; `None` = `/sys/fs/cgroup`.
    #[serde(default)]
    pub root: Option<PathBuf>,
}

/// First uid (and gid) of the range brains run as: brain number `i` of the
/// catalog (sorted by name) runs as `BRAIN_UID_BASE + i`. Nothing on a host
/// normally uses this range; an operator who does can move it in the config.
pub const BRAIN_UID_BASE: u32 = 600_000;

/// uid (and gid) of the audit service when it is sandboxed: its own, so that
/// no brain and not the memory service can read its log or its signing key,
/// just below the brains' range.
pub const AUDIT_UID: u32 = BRAIN_UID_BASE - 2;
/// uid (and gid) of the memory service when it is sandboxed.
pub const MEMORY_UID: u32 = BRAIN_UID_BASE - 1;

/// The cgroup path of one process of the appliance whose state directory is
/// `state_dir`: `sios/<first 16 hex digits of sha256(state dir)>/<name>`.
pub fn cgroup_path(state_dir: &Path, name: &str) -> String {
    use sha2::Digest as _;
    use std::os::unix::ffi::OsStrExt as _;
    let digest = sha2::Sha256::digest(state_dir.as_os_str().as_bytes());
    format!("sios/{}/{name}", &hex::encode(digest)[..16])
}

/// What the kernel knows about one brain, to build its sandbox.
#[derive(Clone, Debug)]
pub struct BrainSandbox {
    /// The brain's name (becomes its hostname).
    pub name: String,
    /// `BRAIN_UID_BASE + index` (or an operator's choice).
    pub uid: u32,
    pub gid: u32,
    /// The manifest file.
    pub manifest: PathBuf,
    /// The brain's own files in the models directory: the model, and the
    /// tokenizer if the manifest has one. Not the whole directory: a brain
    /// must not read another brain's model.
    pub model_files: Vec<PathBuf>,
    /// The ONNX Runtime shared library.
    pub onnxruntime: PathBuf,
    /// Operator's `extra_ro_paths` for this brain.
    pub extra_ro_paths: Vec<PathBuf>,
    /// From the manifest's `[sandbox]` section.
    pub memory_mib: u64,
    pub cpu_weight: u32,
    pub max_pids: u32,
    /// [`cgroup_path`] of the appliance's state directory and this brain.
    pub cgroup_path: String,
}

/// What the kernel knows about one service (audit, memory), to build its
/// sandbox.
#[derive(Clone, Debug)]
pub struct ServiceSandbox {
    /// `audit` or `memory` (becomes its hostname).
    pub name: String,
    /// [`AUDIT_UID`] or [`MEMORY_UID`]; its state directory must be owned by it.
    pub uid: u32,
    pub gid: u32,
    /// Its own state directory: the only path it sees besides its program
    /// and the libraries that program needs.
    pub state_dir: PathBuf,
    /// cgroup memory limit.
    pub memory_mib: u64,
    /// RLIMIT_NPROC and pids.max: its threads (tokio's blocking pool may
    /// grow to 512) and nothing else, since the uid is its own.
    pub max_processes: u32,
    /// [`cgroup_path`] of the appliance's state directory and this service.
    pub cgroup_path: String,
}

impl SandboxSpec {
    /// The sandbox of one brain: every namespace, a root holding only the
    /// brain's program, libraries, ONNX Runtime, manifest and model files (all
    /// read-only) and a copy of the CPU description; nothing writable, no
    /// /dev, no /tmp, no /proc.
    pub fn brain(brain: &BrainSandbox) -> SandboxSpec {
        let mut ro_paths = vec![brain.manifest.clone()];
        ro_paths.extend(brain.model_files.iter().cloned());
        ro_paths.extend(brain.extra_ro_paths.iter().cloned());
        SandboxSpec {
            namespaces: Namespaces::ALL,
            uid: brain.uid,
            gid: brain.gid,
            ro_paths,
            libraries: vec![brain.onnxruntime.clone()],
            rw_paths: Vec::new(),
            tmp_mib: None,
            proc: ProcMount::None,
            cpu_info: true,
            devices: Vec::new(),
            limits: SandboxLimits {
                max_processes: u64::from(brain.max_pids),
                address_space_mib: None,
                data_mib: Some(brain.memory_mib),
            },
            cgroup: Some(CgroupSpec {
                path: brain.cgroup_path.clone(),
                memory_mib: Some(brain.memory_mib),
                cpu_weight: Some(brain.cpu_weight),
                max_pids: Some(brain.max_pids),
                root: None,
            }),
            landlock: true,
            hostname: Some(brain.name.clone()),
        }
    }

    /// The sandbox of one service: every namespace (so no network at all),
    /// a root holding only its program, the libraries it links and its own
    /// state directory (writable, noexec); no /proc, no /dev, no /tmp; its
    /// own uid. No RLIMIT_DATA: redb keeps a cache on the heap, and an
    /// allocation failure would abort the audit log mid-commit, where the
    /// cgroup's limit is a clear, recorded kill followed by a restart.
    pub fn service(service: &ServiceSandbox) -> SandboxSpec {
        SandboxSpec {
            namespaces: Namespaces::ALL,
            uid: service.uid,
            gid: service.gid,
            ro_paths: Vec::new(),
            libraries: Vec::new(),
            rw_paths: vec![service.state_dir.clone()],
            tmp_mib: None,
            proc: ProcMount::None,
            cpu_info: false,
            devices: Vec::new(),
            limits: SandboxLimits {
                max_processes: u64::from(service.max_processes),
                address_space_mib: None,
                data_mib: None,
            },
            cgroup: Some(CgroupSpec {
                path: service.cgroup_path.clone(),
                memory_mib: Some(service.memory_mib),
                cpu_weight: Some(100),
                max_pids: Some(service.max_processes),
                root: None,
            }),
            landlock: true,
            hostname: Some(service.name.clone()),
        }
    }
}

impl LaunchSpec {
    /// The spec as the single argument the launcher takes.
    pub fn to_arg(&self) -> String {
        // A LaunchSpec holds only strings, paths, booleans and integers:
        // serialising it cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses the launcher's argument.
    pub fn from_arg(arg: &str) -> Result<LaunchSpec, serde_json::Error> {
        serde_json::from_str(arg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_without_a_sandbox_still_parses() {
        // What today's kernel sends: no `sandbox` key.
        let arg = r#"{"name":"audit","program":"/bin/true","args":[],"env":[],"parent_pid":1,"limits":{"max_open_files":256}}"#;
        let spec = LaunchSpec::from_arg(arg).unwrap();
        assert_eq!(spec.sandbox, None);
    }

    #[test]
    fn a_brain_sandbox_round_trips_and_holds_only_its_own_model() {
        let brain = BrainSandbox {
            name: "voice-activity".into(),
            uid: BRAIN_UID_BASE + 2,
            gid: BRAIN_UID_BASE + 2,
            manifest: "/c/voice-activity.toml".into(),
            model_files: vec!["/m/voice-activity.onnx".into()],
            onnxruntime: "/l/libonnxruntime.so.1.32.0".into(),
            extra_ro_paths: vec![],
            memory_mib: 256,
            cpu_weight: 100,
            max_pids: 8,
            cgroup_path: cgroup_path(Path::new("/var/lib/sios"), "voice-activity"),
        };
        let spec = LaunchSpec {
            name: "voice-activity".into(),
            program: "/b/sios-brain".into(),
            args: vec![],
            env: vec![],
            parent_pid: 1,
            limits: ProcessLimits { max_open_files: 64 },
            sandbox: Some(SandboxSpec::brain(&brain)),
        };
        let back = LaunchSpec::from_arg(&spec.to_arg()).unwrap();
        assert_eq!(back, spec);
        let sandbox = back.sandbox.unwrap();
        assert_eq!(
            sandbox.ro_paths,
            vec![
                PathBuf::from("/c/voice-activity.toml"),
                "/m/voice-activity.onnx".into()
            ]
        );
        assert!(sandbox.rw_paths.is_empty());
        assert_eq!(sandbox.namespaces, Namespaces::ALL);
    }

    #[test]
    fn a_service_sandbox_writes_only_its_own_state_dir() {
        let spec = SandboxSpec::service(&ServiceSandbox {
            name: "audit".into(),
            uid: AUDIT_UID,
            gid: AUDIT_UID,
            state_dir: "/var/lib/sios/audit".into(),
            memory_mib: 4096,
            max_processes: 1024,
            cgroup_path: cgroup_path(Path::new("/var/lib/sios"), "audit"),
        });
        assert_eq!(spec.namespaces, Namespaces::ALL);
        assert_eq!(spec.rw_paths, vec![PathBuf::from("/var/lib/sios/audit")]);
        assert!(spec.ro_paths.is_empty() && spec.libraries.is_empty());
        assert_eq!(spec.proc, ProcMount::None);
        assert!(spec.landlock && spec.uid != 0 && spec.uid != MEMORY_UID);
        const { assert!(AUDIT_UID < BRAIN_UID_BASE && MEMORY_UID < BRAIN_UID_BASE) };
    }

    #[test]
    fn cgroup_paths_differ_per_state_dir_and_are_stable() {
        let a = cgroup_path(Path::new("/var/lib/sios"), "x");
        let b = cgroup_path(Path::new("/tmp/other"), "x");
        assert_ne!(a, b);
        assert_eq!(a, cgroup_path(Path::new("/var/lib/sios"), "x"));
        assert!(a.starts_with("sios/") && a.ends_with("/x") && a.len() == 5 + 16 + 2);
    }
}
