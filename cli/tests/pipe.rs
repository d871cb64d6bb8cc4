//! The CLI as a shell pipeline uses it, and the same SIGPIPE disposition
//! against a kernel that hangs up.

use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Stdio};

/// `sios … | head -1` must not panic once `head` has stopped reading: the
/// CLI ends by SIGPIPE, silently, as Unix tools do.
#[test]
fn a_reader_that_stops_early_ends_the_cli_quietly() {
    let (reader, writer) = std::io::pipe().unwrap();
    // The reader is gone before the CLI writes a byte: its first write fails.
    drop(reader);
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy");
    let out = Command::new(env!("CARGO_BIN_EXE_sios"))
        .args(["policy", "check", policy])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(nix::libc::SIGPIPE),
        "ended by SIGPIPE ({:?}); stderr: {stderr}",
        out.status
    );
    assert!(stderr.is_empty(), "nothing on stderr: {stderr}");
}

/// That disposition must not reach the kernel's socket: a connection the
/// kernel closes without answering (as it does past a uid's connection
/// limit) gets a sentence and exit 1, not a silent death by SIGPIPE when
/// the request is written.
#[test]
fn a_kernel_that_hangs_up_is_reported_not_a_sigpipe() {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir(state.path().join("run")).unwrap();
    let listener =
        std::os::unix::net::UnixListener::bind(state.path().join("run/kernel.sock")).unwrap();
    // Closes every connection as soon as it is queued, before the CLI has
    // written its request: polled, since waking a thread blocked in
    // `accept` can take longer than the CLI takes to write (and a close
    // after the write is a reset, which raises no SIGPIPE).
    listener.set_nonblocking(true).unwrap();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let closer = {
        let done = done.clone();
        std::thread::spawn(move || {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((connection, _)) => drop(connection),
                    Err(_) => std::thread::yield_now(),
                }
            }
        })
    };
    // Whether the close comes before the write is a race the closer wins
    // only some of the time, so the CLI runs 50 times (the ipc-schema test
    // `sigpipe` checks the transport itself deterministically).
    let runs: Vec<_> = (0..50)
        .map(|_| {
            Command::new(env!("CARGO_BIN_EXE_sios"))
                .arg("--state-dir")
                .arg(state.path())
                .arg("status")
                .output()
                .unwrap()
        })
        .collect();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    closer.join().unwrap();
    for out in runs {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            None,
            "killed by signal {:?} (13 is SIGPIPE); stderr: {stderr}",
            out.status.signal()
        );
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("the kernel closed the connection without answering")
                && stderr.contains("max_connections_per_uid"),
            "{stderr}"
        );
    }
}
