//! Writes on a sios connection whose peer has gone fail with an error and
//! never raise SIGPIPE, even in a process that keeps SIGPIPE's default
//! action (as `sios` does, so that `sios … | head` ends quietly). The write
//! runs in a child (this test binary, run again with `SIOS_SIGPIPE_CHILD`),
//! since a SIGPIPE would kill the whole process.

use futures::SinkExt as _;
use std::os::unix::process::ExitStatusExt as _;
use std::process::Command;

const CHILD: &str = "SIOS_SIGPIPE_CHILD";

/// In the child: SIGPIPE's default action, then a frame sent to a peer
/// that has closed its end; prints how the send ended.
#[test]
fn child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: installs the default disposition, not a handler; this test
    // binary runs only this test in the child.
    unsafe {
        nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        )
        .expect("SIGPIPE's default action");
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        drop(theirs);
        let mut transport = sios_ipc::transport::framed::<String, String>(ours, 1 << 20);
        let sent = transport.send("are you there?".to_owned()).await;
        match sent {
            Ok(()) => println!("sent: ok"),
            Err(err) => println!("sent: error: {err}"),
        }
    });
}

#[test]
fn a_write_to_a_peer_that_has_gone_is_an_error_not_a_sigpipe() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        None,
        "the write killed the process with signal {:?} (13 is SIGPIPE); stdout: {stdout}",
        out.status.signal()
    );
    assert!(out.status.success(), "the child failed: {stdout}");
    assert!(
        stdout.contains("sent: error:") && stdout.contains("Broken pipe"),
        "{stdout}"
    );
}
