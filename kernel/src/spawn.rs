//! The one path by which the kernel starts a child process.
//!
//! Every child (audit, memory, each brain) is exec'd as
//! `sios-launch <spec-json>`, with no descriptor besides stdio but its
//! listening socket at fd 3 and, for a brain, its private channel to the
//! kernel at fd 4 (the socket that *is* the brain's identity). The launcher,
//! single-threaded, applies the process restrictions and execs the real
//! program (see `sios-launch`).
//!
//! Why not `fork` + restrict here: the kernel runs a multi-threaded tokio
//! runtime, and a forked child of a multi-threaded process may only call
//! async-signal-safe functions until it execs; entering namespaces needs a
//! single-threaded process. So the only thing done here between fork and
//! exec is placing the inherited descriptors (`fcntl`, `dup2`).

use sios_ipc::activation::{KERNEL_FD, KERNEL_FD_ENV, LISTEN_FD, LISTEN_FD_ENV};
use sios_launch::{LaunchSpec, ProcessLimits};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// What to run for one child, independent of any one incarnation.
#[derive(Clone, Debug)]
pub struct Program {
    pub path: PathBuf,
    pub args: Vec<String>,
    /// Environment beyond `SIOS_LISTEN_FD` and `SIOS_LOG`, which every child gets.
    pub env: Vec<(String, String)>,
    pub limits: ProcessLimits,
    /// The sandbox the launcher builds before exec; `None` runs unsandboxed.
    pub sandbox: Option<sios_launch::SandboxSpec>,
}

/// Starts one incarnation of `program` through the launcher, handing it
/// `listener` (at descriptor 3) and, for brains, its end of a private channel
/// to the kernel (at descriptor 4).
///
/// Must be called from a tokio worker thread, never from `spawn_blocking`:
/// the launcher sets PR_SET_PDEATHSIG, which fires when the *thread* that
/// forked it exits, and blocking-pool threads exit when idle.
pub fn spawn(
    name: &str,
    launcher: &Path,
    program: &Program,
    listener: &UnixListener,
    kernel_channel: Option<&std::os::unix::net::UnixStream>,
) -> std::io::Result<tokio::process::Child> {
    let mut env = vec![(LISTEN_FD_ENV.to_owned(), LISTEN_FD.to_string())];
    if kernel_channel.is_some() {
        env.push((KERNEL_FD_ENV.to_owned(), KERNEL_FD.to_string()));
    }
    // A setting that does not parse was reported once, by the kernel; each
    // child then logs with the default instead of saying so again.
    if let Ok(level) = std::env::var("SIOS_LOG")
        && sios_ipc::process::is_log_filter(&level)
    {
        env.push(("SIOS_LOG".to_owned(), level));
    }
    env.extend(program.env.iter().cloned());
    let spec = LaunchSpec {
        name: name.to_owned(),
        program: program.path.clone(),
        args: program.args.clone(),
        env,
        parent_pid: std::process::id(),
        limits: program.limits.clone(),
        sandbox: program.sandbox.clone(),
    };
    let listen_fd = listener.as_raw_fd();
    let kernel_fd = kernel_channel.map(|c| c.as_raw_fd());
    let mut command = tokio::process::Command::new(launcher);
    command
        .arg(spec.to_arg())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        // A process group of its own: Ctrl-C in the terminal running
        // `sios up` (or anything else that signals the kernel's whole group)
        // reaches the kernel alone, which then stops the children in reverse
        // start order with the audit service last, so that every stop is
        // recorded. Sharing the group, the audit service stopped at the same
        // instant as everyone else and the stops went unrecorded.
        // The child still dies with the kernel: the launcher sets a
        // parent-death signal.
        .process_group(0);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and calls only
    // `fcntl` and `dup2`, which are async-signal-safe; it allocates nothing
    // and touches no lock.
    unsafe {
        command.pre_exec(move || place_descriptors(listen_fd, kernel_fd));
    }
    command.spawn()
}

/// Puts `listen` at [`LISTEN_FD`] and `kernel` (if any) at [`KERNEL_FD`],
/// both without close-on-exec. Every other descriptor the kernel owns is
/// close-on-exec (Rust opens everything that way), so these are the only ones
/// the child inherits besides stdio.
///
/// Both are first duplicated above 10 (close-on-exec), so that neither can
/// be overwritten by the other's `dup2` whatever numbers they started at.
fn place_descriptors(listen: RawFd, kernel: Option<RawFd>) -> std::io::Result<()> {
    let listen_high = dup_high(listen)?;
    let kernel_high = kernel.map(dup_high).transpose()?;
    dup_onto(listen_high, LISTEN_FD)?;
    if let Some(fd) = kernel_high {
        dup_onto(fd, KERNEL_FD)?;
    }
    Ok(())
}

fn dup_high(fd: RawFd) -> std::io::Result<RawFd> {
    #[allow(unsafe_code)]
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on an integer descriptor; no memory is touched.
    let high = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
    if high < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(high)
}

/// dup2 clears close-on-exec on the target, which is what the child needs.
fn dup_onto(fd: RawFd, target: RawFd) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: dup2 on two integers; the target is not owned by any Rust
    // object in this child, which is about to exec.
    let result = unsafe { libc::dup2(fd, target) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
