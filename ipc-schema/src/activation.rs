//! Socket activation: how a child receives the listening socket the kernel
//! bound for it.
//!
//! The kernel binds each child's socket itself (so the path, its permissions
//! and its lifetime are the kernel's business), then starts the child with the
//! listening descriptor at [`LISTEN_FD`] and `SIOS_LISTEN_FD` set to that
//! number, in the manner of systemd's `LISTEN_FDS`. A child never binds or
//! connects to a path of its own choosing.

use std::io;
use std::os::fd::{FromRawFd, RawFd};

/// The descriptor number of a brain's private channel to the kernel (a
/// connected socket; see `sios_ipc::BrainSupport`). Services do not get one.
pub const KERNEL_FD: RawFd = 4;
/// The environment variable that names it.
pub const KERNEL_FD_ENV: &str = "SIOS_KERNEL_FD";

/// The descriptor number the listening socket is placed at in the child.
pub const LISTEN_FD: RawFd = 3;
/// The environment variable that names it.
pub const LISTEN_FD_ENV: &str = "SIOS_LISTEN_FD";

/// Why the inherited socket could not be taken over.
#[derive(thiserror::Error, Debug)]
pub enum ActivationError {
    #[error(
        "{LISTEN_FD_ENV} is not set: this program is started by sios-kernel, which hands it its socket; run `sios up` instead"
    )]
    NotActivated,
    #[error("an inherited-descriptor variable says {0:?}, not the number sios-kernel uses")]
    WrongDescriptor(String),
    #[error("an inherited descriptor is not the Unix socket sios-kernel hands over: {0}")]
    NotASocket(io::Error),
}

/// Takes ownership of the inherited listening socket. Call once, in `main`,
/// before starting the async runtime (it edits the environment); convert it
/// with `tokio::net::UnixListener::from_std` inside the runtime.
pub fn inherited_listener() -> Result<std::os::unix::net::UnixListener, ActivationError> {
    let value = std::env::var(LISTEN_FD_ENV).map_err(|_| ActivationError::NotActivated)?;
    if value.parse::<RawFd>().ok() != Some(LISTEN_FD) {
        return Err(ActivationError::WrongDescriptor(value));
    }
    // The variable is consumed: a grandchild must not believe it owns the socket.
    #[allow(unsafe_code)]
    // SAFETY: the process is still single-threaded when binaries call this
    // (before the tokio runtime starts), so no other thread reads the environment.
    unsafe {
        std::env::remove_var(LISTEN_FD_ENV)
    };
    #[allow(unsafe_code)]
    // SAFETY: the kernel placed a listening socket at LISTEN_FD and nothing in
    // this process has taken ownership of that descriptor yet (the variable
    // above is consumed on first use, so this runs at most once).
    let listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTEN_FD) };
    listener.local_addr().map_err(ActivationError::NotASocket)?;
    listener
        .set_nonblocking(true)
        .map_err(ActivationError::NotASocket)?;
    Ok(listener)
}

/// Takes ownership of the brain's channel to the kernel, if the kernel gave
/// one (`SIOS_KERNEL_FD=4`). Call in `main` before starting the async runtime.
pub fn inherited_kernel_channel() -> Result<Option<std::os::unix::net::UnixStream>, ActivationError>
{
    let Ok(value) = std::env::var(KERNEL_FD_ENV) else {
        return Ok(None);
    };
    if value.parse::<RawFd>().ok() != Some(KERNEL_FD) {
        return Err(ActivationError::WrongDescriptor(value));
    }
    #[allow(unsafe_code)]
    // SAFETY: single-threaded at this point (see `inherited_listener`).
    unsafe {
        std::env::remove_var(KERNEL_FD_ENV)
    };
    #[allow(unsafe_code)]
    // SAFETY: the kernel placed a connected socket at KERNEL_FD and nothing in
    // this process owns that descriptor (the variable is consumed above).
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(KERNEL_FD) };
    stream.peer_addr().map_err(ActivationError::NotASocket)?;
    stream
        .set_nonblocking(true)
        .map_err(ActivationError::NotASocket)?;
    Ok(Some(stream))
}

/// The parent's side of [`inherited_listener`], for starting a sios service
/// or brain binary directly (tests and tools; the kernel goes through its
/// launcher): binds `socket` and arranges for the child `command` spawns to
/// receive the listening descriptor at [`LISTEN_FD`], with [`LISTEN_FD_ENV`]
/// naming it. Drop the returned listener once the child is spawned: the
/// child holds its own copy, and the parent's would only keep it alive.
pub fn hand_listener(
    command: &mut std::process::Command,
    socket: &std::path::Path,
) -> io::Result<std::os::unix::net::UnixListener> {
    use std::os::fd::AsRawFd as _;
    use std::os::unix::process::CommandExt as _;
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    let fd = listener.as_raw_fd();
    command.env(LISTEN_FD_ENV, LISTEN_FD.to_string());
    #[allow(unsafe_code)]
    // SAFETY: the hook runs in the forked child before exec, where only
    // async-signal-safe calls are allowed; it makes one (fcntl or dup2) on
    // plain integers and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let result = if fd == LISTEN_FD {
                // dup2 onto itself would keep FD_CLOEXEC; clear it instead.
                libc::fcntl(fd, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, LISTEN_FD)
            };
            if result < 0 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        });
    }
    Ok(listener)
}
