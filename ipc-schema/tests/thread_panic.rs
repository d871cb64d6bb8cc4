//! `process::abort_when_thread_panics`, in a real process: this test binary
//! runs itself as the child, with `SIOS_THREAD_PANIC_CHILD` naming the
//! thread that panics.

use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

const CHILD: &str = "SIOS_THREAD_PANIC_CHILD";

/// In the child: installs the hook for `audit-` threads, then panics on a
/// thread of the given name and reports how that ended.
#[test]
fn child() {
    let Ok(name) = std::env::var(CHILD) else {
        return;
    };
    sios_ipc::process::abort_when_thread_panics("audit-");
    let joined = std::thread::Builder::new()
        .name(name)
        .spawn(|| panic!("deliberate"))
        .unwrap()
        .join();
    // Reached only if the process survived the panic.
    println!("survived: joined with panic = {}", joined.is_err());
}

fn run_child(thread: &str) -> std::process::Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, thread)
        .output()
        .unwrap()
}

#[test]
fn a_panic_on_a_named_thread_ends_the_process_and_others_unwind() {
    let fatal = run_child("audit-writer");
    assert_eq!(
        fatal.status.signal(),
        Some(libc_sigabrt()),
        "the process outlived its writer: {:?} {}",
        fatal.status,
        String::from_utf8_lossy(&fatal.stdout)
    );
    let harmless = run_child("some-helper");
    assert!(harmless.status.success(), "{harmless:?}");
    assert!(
        String::from_utf8_lossy(&harmless.stdout).contains("survived: joined with panic = true"),
        "{}",
        String::from_utf8_lossy(&harmless.stdout)
    );
}

fn libc_sigabrt() -> i32 {
    nix::sys::signal::Signal::SIGABRT as i32
}
