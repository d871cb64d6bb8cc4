//! The seccomp policy of a sandboxed program, as data, and [`lock_down_exec`].
//!
//! A deny-list (the program's own syscalls, and ONNX Runtime's, are not
//! enumerated: an allow-list would break on the next ORT or glibc release).
//! Four filters are installed, the launcher's very last step before it execs
//! the program; where several match, the kernel applies the strictest:
//!
//! 1. (x86_64) any x32-ABI syscall kills the process: the x32 numbers
//!    (`nr | 0x40000000`) would otherwise walk around every rule below.
//! 2. [`KILLED`]: syscalls a brain never makes and an attacker wants (the
//!    network through io_uring, other processes, the mount table, new
//!    namespaces, the kernel's own code) kill the whole process with SIGSYS
//!    (`SECCOMP_RET_KILL_PROCESS`), so that an attempt is visible: the kernel
//!    reports "killed by SIGSYS" and restarts it. Also `clone` with any
//!    `CLONE_NEW*` flag, and every `execve`/`execveat` except the launcher's
//!    own (below). Any other architecture's syscalls (i386 `int 0x80`) kill.
//! 3. `socket()` for any family but `AF_UNIX` fails with `EAFNOSUPPORT`, as on
//!    a kernel built without networking: libraries that probe for IPv6 or
//!    netlink carry on, and there is nothing to reach anyway (empty network
//!    namespace).
//! 4. `clone3` fails with `ENOSYS`: its flags are behind a pointer that
//!    seccomp cannot read, and glibc falls back to `clone` (checked above)
//!    on ENOSYS.
//!
//! # execve after start
//! The filter must let exactly one `execve` through (the launcher's, of the
//! program) and no later one. Seccomp keeps no state, so the launcher execs
//! with `execveat(AT_FDCWD, program, argv, envp, 0, token)`: the sixth
//! argument is unused by the kernel, and the filter lets `execveat` through
//! only when it equals `token`, 64 random bits drawn by the launcher for this
//! one launch. The token exists only in the launcher's memory, which the
//! exec replaces: the running program cannot read it from anywhere (the BPF
//! program can only be dumped with CAP_SYS_ADMIN in the host's namespace), and
//! a wrong guess is SIGSYS for the whole process. No cooperation from the
//! program is needed, so a hostile or compromised program is held as well
//! as a well-behaved one. [`lock_down_exec`] is a second, unconditional layer
//! a program can add for itself once it has started (sios-brain does), which
//! does not rest on the token staying secret.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};
use std::collections::BTreeMap;

/// Syscalls that kill the process, each with why a brain never needs it.
pub const KILLED: &[(&str, i64, &str)] = &[
    (
        "execve",
        libc::SYS_execve,
        "a new program would shed the sandbox's code identity",
    ),
    (
        "ptrace",
        libc::SYS_ptrace,
        "reads and writes another process's memory",
    ),
    (
        "process_vm_readv",
        libc::SYS_process_vm_readv,
        "reads another process's memory",
    ),
    (
        "process_vm_writev",
        libc::SYS_process_vm_writev,
        "writes another process's memory",
    ),
    (
        "mount",
        libc::SYS_mount,
        "changes what the filesystem shows",
    ),
    ("umount2", libc::SYS_umount2, "uncovers what a mount hides"),
    ("pivot_root", libc::SYS_pivot_root, "changes the root"),
    ("chroot", libc::SYS_chroot, "changes the root"),
    ("open_tree", libc::SYS_open_tree, "new mount API"),
    ("move_mount", libc::SYS_move_mount, "new mount API"),
    ("fsopen", libc::SYS_fsopen, "new mount API"),
    ("fsconfig", libc::SYS_fsconfig, "new mount API"),
    ("fsmount", libc::SYS_fsmount, "new mount API"),
    ("fspick", libc::SYS_fspick, "new mount API"),
    ("mount_setattr", libc::SYS_mount_setattr, "new mount API"),
    (
        "unshare",
        libc::SYS_unshare,
        "new namespaces: fresh capabilities, more kernel surface",
    ),
    ("setns", libc::SYS_setns, "enters another namespace"),
    (
        "kexec_load",
        libc::SYS_kexec_load,
        "replaces the running kernel",
    ),
    (
        "kexec_file_load",
        libc::SYS_kexec_file_load,
        "replaces the running kernel",
    ),
    ("reboot", libc::SYS_reboot, "stops the machine"),
    ("init_module", libc::SYS_init_module, "loads kernel code"),
    ("finit_module", libc::SYS_finit_module, "loads kernel code"),
    (
        "delete_module",
        libc::SYS_delete_module,
        "unloads kernel code",
    ),
    ("bpf", libc::SYS_bpf, "loads programs into the kernel"),
    (
        "perf_event_open",
        libc::SYS_perf_event_open,
        "side channels, a long record of kernel bugs",
    ),
    (
        "userfaultfd",
        libc::SYS_userfaultfd,
        "the classic tool for winning kernel races",
    ),
    (
        "io_uring_setup",
        libc::SYS_io_uring_setup,
        "io_uring performs syscalls seccomp never sees (socket, connect…)",
    ),
    (
        "io_uring_enter",
        libc::SYS_io_uring_enter,
        "io_uring, as above",
    ),
    (
        "io_uring_register",
        libc::SYS_io_uring_register,
        "io_uring, as above",
    ),
    (
        "keyctl",
        libc::SYS_keyctl,
        "kernel keyrings are not namespaced",
    ),
    (
        "add_key",
        libc::SYS_add_key,
        "kernel keyrings are not namespaced",
    ),
    (
        "request_key",
        libc::SYS_request_key,
        "kernel keyrings are not namespaced",
    ),
    (
        "open_by_handle_at",
        libc::SYS_open_by_handle_at,
        "opens files by handle, around the mount tree",
    ),
    ("swapon", libc::SYS_swapon, "host administration"),
    ("swapoff", libc::SYS_swapoff, "host administration"),
    ("acct", libc::SYS_acct, "host administration"),
    ("quotactl", libc::SYS_quotactl, "host administration"),
    (
        "settimeofday",
        libc::SYS_settimeofday,
        "sets the host's clock",
    ),
    (
        "clock_settime",
        libc::SYS_clock_settime,
        "sets the host's clock",
    ),
];

/// Syscalls that fail with an errno instead, and why not a kill.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "socket(!AF_UNIX)",
        "EAFNOSUPPORT: as on a kernel without networking, so library probes carry on",
    ),
    (
        "clone3",
        "ENOSYS: glibc falls back to clone, whose flags the filter can read",
    ),
];

/// `CLONE_NEW*` flags: `clone` with any of them kills.
const CLONE_NEW: [i32; 7] = [
    libc::CLONE_NEWNS,
    libc::CLONE_NEWCGROUP,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWNET,
];

/// Errors building or installing a filter.
#[derive(thiserror::Error, Debug)]
#[error("{0}")]
pub struct SeccompError(String);

impl SeccompError {
    pub(crate) fn from_io(what: &str, err: std::io::Error) -> Self {
        SeccompError(format!("{what}: {err}"))
    }
}

impl From<seccompiler::Error> for SeccompError {
    fn from(err: seccompiler::Error) -> Self {
        SeccompError(err.to_string())
    }
}

impl From<seccompiler::BackendError> for SeccompError {
    fn from(err: seccompiler::BackendError) -> Self {
        SeccompError(err.to_string())
    }
}

fn arch() -> Result<TargetArch, SeccompError> {
    std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError(e.to_string()))
}

fn compile(
    rules: BTreeMap<i64, Vec<SeccompRule>>,
    action: SeccompAction,
) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, action, arch()?)?;
    Ok(filter.try_into()?)
}

/// The launcher's filters, in installation order (see the module doc).
/// `exec_token` is the value `execveat`'s sixth argument must carry.
pub fn launcher_filters(exec_token: u64) -> Result<Vec<BpfProgram>, SeccompError> {
    let mut filters = Vec::new();
    if cfg!(target_arch = "x86_64") {
        filters.push(x32_guard());
    }

    let mut kill: BTreeMap<i64, Vec<SeccompRule>> =
        KILLED.iter().map(|(_, nr, _)| (*nr, Vec::new())).collect();
    kill.insert(
        libc::SYS_execveat,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            5,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::Ne,
            exec_token,
        )?])?],
    );
    let clone_rules = CLONE_NEW
        .iter()
        .map(|flag| {
            let flag = *flag as u32 as u64;
            Ok(SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )?])?)
        })
        .collect::<Result<Vec<_>, SeccompError>>()?;
    kill.insert(libc::SYS_clone, clone_rules);
    filters.push(compile(kill, SeccompAction::KillProcess)?);

    let socket = BTreeMap::from([(
        libc::SYS_socket,
        vec![SeccompRule::new(vec![SeccompCondition::new(
            0,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::Ne,
            libc::AF_UNIX as u64,
        )?])?],
    )]);
    filters.push(compile(
        socket,
        SeccompAction::Errno(libc::EAFNOSUPPORT as u32),
    )?);

    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    filters.push(compile(clone3, SeccompAction::Errno(libc::ENOSYS as u32))?);
    Ok(filters)
}

/// Kills any syscall numbered in the x32 range.
fn x32_guard() -> BpfProgram {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JMP_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    const X32_SYSCALL_BIT: u32 = 0x4000_0000;
    vec![
        // A = seccomp_data.nr
        sock_filter {
            code: BPF_LD_W_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        sock_filter {
            code: BPF_JMP_JGE_K,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_KILL_PROCESS,
        },
        sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ]
}

/// Installs `filters` on the calling thread (the launcher is single-threaded).
pub fn install(filters: &[BpfProgram]) -> Result<(), SeccompError> {
    for filter in filters {
        seccompiler::apply_filter(filter)?;
    }
    Ok(())
}

/// Why [`lock_down_exec`] failed.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum LockDownError {
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(nix::Error),
    #[error("seccomp filter denying execve: {0}")]
    Filter(SeccompError),
}

/// Forbids `execve` and `execveat` to every thread of the calling process,
/// for good: a later attempt kills the process with SIGSYS.
///
/// Call once the program has started and before it reads anything an
/// attacker controls (first thing in `main` is simplest). The sandbox
/// already refuses any exec after the launcher's (see the module doc); this
/// makes the same promise without resting on the launcher's token, and
/// holds for a program started without a sandbox too. Sets NO_NEW_PRIVS
/// (required to install a filter without privileges).
pub fn lock_down_exec() -> Result<(), LockDownError> {
    nix::sys::prctl::set_no_new_privs().map_err(LockDownError::NoNewPrivs)?;
    let rules = BTreeMap::from([
        (libc::SYS_execve, Vec::new()),
        (libc::SYS_execveat, Vec::new()),
    ]);
    let filter = compile(rules, SeccompAction::KillProcess).map_err(LockDownError::Filter)?;
    seccompiler::apply_filter_all_threads(&filter).map_err(|e| LockDownError::Filter(e.into()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_launcher_filters_compile() {
        let filters = launcher_filters(0x1234_5678_9abc_def0).unwrap();
        assert_eq!(
            filters.len(),
            if cfg!(target_arch = "x86_64") { 4 } else { 3 }
        );
        assert!(filters.iter().all(|f| !f.is_empty() && f.len() < 4096));
    }

    #[test]
    fn every_killed_syscall_is_named_once() {
        let mut names: Vec<_> = KILLED.iter().map(|(n, _, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), KILLED.len());
    }
}
