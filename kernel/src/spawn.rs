//! The one path by which the kernel starts a child process.
//!
//! Every child (audit, memory, each brain) is exec'd as
//! `sios-launch <spec-json>`, with exactly one descriptor besides stdio: its
//! listening socket at fd 3. The launcher, single-threaded, applies the
//! process restrictions and execs the real program (see `sios-launch`).
//!
//! Why not `fork` + restrict here: the kernel runs a multi-threaded tokio
//! runtime, and a forked child of a multi-threaded process may only call
//! async-signal-safe functions until it execs; entering namespaces needs a
//! single-threaded process. So the only thing done between fork and exec
//! here is one `dup2`.

use sios_ipc::activation::{LISTEN_FD, LISTEN_FD_ENV};
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
}

/// Starts one incarnation of `program` through the launcher, handing it `listener`.
///
/// Must be called from a tokio worker thread, never from `spawn_blocking`:
/// the launcher sets PR_SET_PDEATHSIG, which fires when the *thread* that
/// forked it exits, and blocking-pool threads exit when idle.
pub fn spawn(
    name: &str,
    launcher: &Path,
    program: &Program,
    listener: &UnixListener,
) -> std::io::Result<tokio::process::Child> {
    let mut env = vec![(LISTEN_FD_ENV.to_owned(), LISTEN_FD.to_string())];
    if let Ok(level) = std::env::var("SIOS_LOG") {
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
    };
    let listen_fd = listener.as_raw_fd();
    let mut command = tokio::process::Command::new(launcher);
    command
        .arg(spec.to_arg())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    #[allow(unsafe_code)]
    // SAFETY: the closure runs in the forked child before exec and calls only
    // `dup2`/`fcntl`, which are async-signal-safe; it allocates nothing and
    // touches no lock.
    unsafe {
        command.pre_exec(move || place_at_listen_fd(listen_fd));
    }
    command.spawn()
}

/// Puts `fd` at [`LISTEN_FD`] without close-on-exec. Every other descriptor
/// the kernel owns is close-on-exec (Rust opens everything that way), so this
/// is the only one the child inherits besides stdio.
fn place_at_listen_fd(fd: RawFd) -> std::io::Result<()> {
    if fd == LISTEN_FD {
        // dup2 onto itself would keep FD_CLOEXEC; clear it instead.
        let flags = nix::fcntl::FdFlag::empty();
        #[allow(unsafe_code)]
        // SAFETY: `fd` is open for the whole of this call, in this
        // single-threaded child.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_SETFD(flags))?;
    } else {
        #[allow(unsafe_code)]
        // SAFETY: dup2 on two integers; the target is not owned by any Rust
        // object in this child, which is about to exec.
        let result = unsafe { libc::dup2(fd, LISTEN_FD) };
        if result < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
