//! Tells the service manager the kernel runs under (systemd, with
//! `Type=notify` as `deploy/sios.service` has) when the appliance is ready
//! and when it is stopping: the sd_notify protocol, one datagram of
//! newline-separated `KEY=value` assignments sent to the Unix socket that
//! `$NOTIFY_SOCKET` names (a path, or `@name` for an abstract socket).
//!
//! Why the kernel says it itself: systemd then counts the unit as started
//! exactly when every process is ready or failed, without a second command
//! (`sios wait`) in the unit. Every command a unit runs makes systemd set up
//! its `StateDirectory=` again, mode and group included, which raced the
//! kernel opening that directory to `[policy] client_gid`.
//!
//! Without `$NOTIFY_SOCKET` (not started by a service manager) nothing is
//! sent. The variable never reaches the kernel's children: they are started
//! with a cleared environment (`spawn.rs`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The variable a service manager sets to its notification socket.
pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";

/// Sends `assignments` (e.g. `"READY=1\nSTATUS=…"`) to the socket in
/// `$NOTIFY_SOCKET`. `Ok(false)` when there is none.
pub fn notify(assignments: &str) -> io::Result<bool> {
    match std::env::var_os(NOTIFY_SOCKET_ENV) {
        Some(socket) if !socket.is_empty() => send(&socket, assignments).map(|()| true),
        _ => Ok(false),
    }
}

/// Sends one datagram to `socket`: a path, or `@name` for an abstract socket.
pub fn send(socket: &OsStr, assignments: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let target = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt as _;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(socket)?,
    };
    UnixDatagram::unbound()?.send_to_addr(assignments.as_bytes(), &target)?;
    Ok(())
}

/// `READY=1` with a status line saying how many processes are ready.
pub fn ready(ready: usize, total: usize) -> String {
    format!("READY=1\nSTATUS={ready} of {total} processes ready")
}

/// `STOPPING=1` with why.
pub fn stopping(reason: &str) -> String {
    format!("STOPPING=1\nSTATUS=stopping: {reason}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_path_socket_receives_the_assignments_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let manager = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), &ready(53, 53)).unwrap();
        assert_eq!(
            received(&manager),
            "READY=1\nSTATUS=53 of 53 processes ready"
        );
        send(path.as_os_str(), &stopping("SIGTERM")).unwrap();
        assert_eq!(received(&manager), "STOPPING=1\nSTATUS=stopping: SIGTERM");
    }

    #[test]
    fn an_abstract_socket_is_named_with_a_leading_at() {
        use std::os::linux::net::SocketAddrExt as _;
        let name = format!("sios-notify-test-{}", std::process::id());
        let manager =
            UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap())
                .unwrap();
        send(OsStr::new(&format!("@{name}")), "READY=1").unwrap();
        assert_eq!(received(&manager), "READY=1");
    }

    #[test]
    fn a_socket_nobody_listens_on_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        let err = send(dir.path().join("none").as_os_str(), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
