//! The CLI as a shell pipeline uses it.

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
