//! `process::abort_when_thread_panics`, in a real process: this test binary
//! runs itself as the child, with `SIOS_THREAD_PANIC_CHILD` naming the
//! thread that panics.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

const CHILD: &str = "SIOS_THREAD_PANIC_CHILD";
/// Set: the child's panic happens inside `process::catch_panic`.
const CAUGHT: &str = "SIOS_THREAD_PANIC_CAUGHT";

/// In the child: installs the hook for `audit-` threads, then panics on a
/// thread of the given name and reports how that ended.
#[test]
fn child() {
    let Ok(name) = std::env::var(CHILD) else {
        return;
    };
    sios_ipc::process::abort_when_thread_panics("audit-");
    let caught = std::env::var_os(CAUGHT).is_some();
    let joined = std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            if caught {
                let result = sios_ipc::process::catch_panic(|| panic!("deliberate"));
                println!("caught: {result:?}");
            } else {
                panic!("deliberate")
            }
        })
        .unwrap()
        .join();
    // Reached only if the process survived the panic.
    println!("survived: joined with panic = {}", joined.is_err());
}

fn run_child(thread: &str, caught: bool) -> std::process::Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, thread);
    if caught {
        command.env(CAUGHT, "1");
    }
    command.output().unwrap()
}

#[test]
fn a_panic_on_a_named_thread_ends_the_process_and_others_unwind() {
    let fatal = run_child("audit-writer", false);
    assert_eq!(
        fatal.status.signal(),
        Some(libc_sigabrt()),
        "the process outlived its writer: {:?} {}",
        fatal.status,
        String::from_utf8_lossy(&fatal.stdout)
    );
    let harmless = run_child("some-helper", false);
    assert!(harmless.status.success(), "{harmless:?}");
    assert!(
        String::from_utf8_lossy(&harmless.stdout).contains("survived: joined with panic = true"),
        "{}",
        String::from_utf8_lossy(&harmless.stdout)
    );
}

/// A panic the code expects and handles (`process::catch_panic`, as the
/// audit log does around opening a possibly damaged file) is returned to
/// it, even on a watched thread.
#[test]
fn a_caught_panic_on_a_named_thread_is_returned_not_fatal() {
    let caught = run_child("audit-writer", true);
    let stdout = String::from_utf8_lossy(&caught.stdout);
    assert!(caught.status.success(), "{:?} {stdout}", caught.status);
    assert!(
        stdout.contains(r#"caught: Err("deliberate")"#)
            && stdout.contains("survived: joined with panic = false"),
        "{stdout}"
    );
}

fn libc_sigabrt() -> i32 {
    nix::sys::signal::Signal::SIGABRT as i32
}

/// `process::serve_with_companion`: a server whose companion task (the
/// audit service's committer) panics stops serving and returns an error,
/// rather than accepting requests nothing will carry out. Without that, the
/// call below never returns.
#[test]
fn a_server_whose_companion_panics_returns_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::os::unix::net::UnixListener::bind(dir.path().join("s.sock")).unwrap();
    // As `activation::inherited_listener` hands it over.
    listener.set_nonblocking(true).unwrap();
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let served = sios_ipc::process::serve_with_companion(
            "test service",
            listener,
            async { panic!("deliberate") },
            drop,
        );
        let _ = done.send(served);
    });
    let served = result
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the server kept running without its companion");
    let err = served.expect_err("a server without its companion reported success");
    assert!(err.to_string().contains("panicked"), "{err}");
}
