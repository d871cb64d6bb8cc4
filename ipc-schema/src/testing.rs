//! Helpers the services' own tests share to put a real binary under
//! conditions hard to make otherwise. No production path calls them.

use std::process::Command;

/// Makes the child started by `command` ignore SIGXFSZ, so that at its
/// file-size limit ([`cap_file_size`]) a write fails with EFBIG, as a write
/// to a full disk fails with ENOSPC, instead of killing it.
pub fn ignore_file_size_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt as _;
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec and only sets a signal's
    // disposition (async-signal-safe); an ignored disposition survives exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
}

/// Caps how far the process `pid` may grow any file: RLIMIT_FSIZE's soft
/// limit, set from outside with prlimit(2). The hard limit stays unlimited,
/// so the cap can be lifted again (`libc::RLIM_INFINITY`): a disk filling
/// up and space being freed, without root.
pub fn cap_file_size(pid: u32, bytes: u64) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    #[allow(unsafe_code)]
    // SAFETY: prlimit on a pid with a valid, initialised struct; the old
    // limit is not asked for (null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_FSIZE,
            &limit,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
}
