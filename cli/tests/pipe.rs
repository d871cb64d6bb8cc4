//! The CLI as a shell pipeline uses it, and against a kernel socket whose
//! peer misbehaves: hangs up before answering, or answers garbage.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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

/// A policy file named where its directory belongs is a usage error (exit
/// 2) that names the directory, for `check` offline and for `load` before
/// any appliance is asked.
#[test]
fn one_policy_file_instead_of_its_directory_is_refused_with_the_directory_named() {
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy");
    let file = format!("{policy}/default.cedar");
    let state = tempfile::tempdir().unwrap();
    for command in ["check", "load"] {
        let out = Command::new(env!("CARGO_BIN_EXE_sios"))
            .args(["--state-dir"])
            .arg(state.path())
            .args(["policy", command, &file])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command}: {stderr}");
        assert!(
            stderr.contains("is a file, not a policy directory")
                && stderr.contains(&format!("`{policy}`")),
            "{command}: {stderr}"
        );
    }
}

/// An input named by mistake (here one that never ends) is refused at the
/// most the command could use, before any appliance is asked, instead of
/// being read until this process's memory runs out.
#[test]
fn an_endless_input_file_is_refused_at_what_the_command_can_use() {
    let state = tempfile::tempdir().unwrap();
    for (args, says) in [
        (
            &["invoke", "legal", "--input", "/dev/zero"][..],
            "/dev/zero is larger than 128 MiB, more than any request that fits a frame",
        ),
        (
            &["ask", "--file", "/dev/zero"][..],
            "/dev/zero is larger than 16 MiB, more than one request can carry",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sios"))
            .arg("--state-dir")
            .arg(state.path())
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // The offline audit commands' small files alike: a public key, a kept
    // checkpoint, a proof.
    let public = state.path().join("signing.pub");
    sios_audit::keys::write_public(
        &public,
        sios_audit::keys::SecretKey::generate("sios/audit/pipe-test")
            .unwrap()
            .public(),
    )
    .unwrap();
    let public = public.display().to_string();
    for (args, says) in [
        (
            vec!["audit", "verify", "bundle.oar", "--pubkey", "/dev/zero"],
            "/dev/zero: not a sios key file: it is larger than 64 KiB, which no public key \
             file is",
        ),
        (
            vec![
                "audit",
                "verify",
                "bundle.oar",
                "--pubkey",
                &public,
                "--extends",
                "/dev/zero",
            ],
            "/dev/zero is larger than 64 KiB, more than a checkpoint note",
        ),
        (
            vec!["audit", "verify-proof", "/dev/zero", "--pubkey", &public],
            "/dev/zero is larger than 1 MiB, more than a proof file",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_sios"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert_eq!(
            stderr.matches("/dev/zero").count(),
            1,
            "named once: {stderr}"
        );
    }
}

/// A stand-in for the kernel at `<state>/run/kernel.sock`: a thread that
/// hands each connection to `answer` as soon as it is queued, until dropped.
struct FakeKernel {
    state: tempfile::TempDir,
    done: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKernel {
    fn start(answer: fn(UnixStream)) -> FakeKernel {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir(state.path().join("run")).unwrap();
        let listener = UnixListener::bind(state.path().join("run/kernel.sock")).unwrap();
        // Polled, not blocked in `accept`: waking a blocked thread can take
        // longer than the CLI takes to write its request.
        listener.set_nonblocking(true).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let thread = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((connection, _)) => {
                            connection.set_nonblocking(false).unwrap();
                            answer(connection);
                        }
                        Err(_) => std::thread::yield_now(),
                    }
                }
            })
        };
        FakeKernel {
            state,
            done,
            thread: Some(thread),
        }
    }

    fn sios_status(&self) -> Output {
        Command::new(env!("CARGO_BIN_EXE_sios"))
            .arg("--state-dir")
            .arg(self.state.path())
            .arg("status")
            .output()
            .unwrap()
    }
}

impl Drop for FakeKernel {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `sios status` ended by itself with exit 1 and a message holding `words`.
fn assert_reported(out: &Output, words: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        None,
        "killed by signal {:?} (13 is SIGPIPE); stderr: {stderr}",
        out.status.signal()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for word in words {
        assert!(stderr.contains(word), "no {word:?} in: {stderr}");
    }
}

/// That disposition must not reach the kernel's socket: a connection the
/// kernel closes without answering (as it does past a uid's connection
/// limit) gets a sentence and exit 1, not a silent death by SIGPIPE when
/// the request is written.
#[test]
fn a_kernel_that_hangs_up_is_reported_not_a_sigpipe() {
    // Closed as soon as it is queued, before the CLI has written its
    // request (a close after the write is a reset, which raises no SIGPIPE).
    let kernel = FakeKernel::start(drop);
    // Whether the close comes before the write is a race the closer wins
    // only some of the time, so the CLI runs 50 times (the ipc-schema test
    // `sigpipe` checks the transport itself deterministically).
    let runs: Vec<_> = (0..50).map(|_| kernel.sios_status()).collect();
    for out in runs {
        assert_reported(
            &out,
            &[
                "the kernel closed the connection without answering",
                "max_connections_per_uid",
            ],
        );
    }
}

/// Reads the request, then answers with `frame` and hangs up.
fn answer_with(mut connection: UnixStream, frame: &[u8]) {
    let _ = connection.read(&mut [0u8; 64 * 1024]);
    let _ = connection.write_all(frame);
}

/// An answer that is not a sios message, or announces a frame over the
/// limit, is named as such, not taken for a hang-up.
#[test]
fn a_kernel_answer_that_cannot_be_read_is_named() {
    let garbage = FakeKernel::start(|c| answer_with(c, &[0, 0, 0, 12, 0xff, 0xff, 0xff, 0xff]));
    assert_reported(
        &garbage.sios_status(),
        &[
            "the kernel's answer could not be read",
            "not a valid sios message",
        ],
    );
    let oversized = FakeKernel::start(|c| answer_with(c, &0x7fff_ffffu32.to_be_bytes()));
    assert_reported(
        &oversized.sios_status(),
        &[
            "the kernel's answer could not be read",
            "larger than the 16777216-byte limit",
        ],
    );
}
