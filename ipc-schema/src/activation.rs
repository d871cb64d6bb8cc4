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
