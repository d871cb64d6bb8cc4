//! Backing up and restoring the appliance's state the way the README's
//! "Backup and restore" says: a copy of the state directory taken while
//! the appliance is down, put back later. What the test pins is what an
//! operator and an auditor must know about it: the restored appliance
//! serves again, with its memory as it was at the copy (an erasure made
//! since is undone), and its audit log continues from the copy, which
//! verifies on its own, while an auditor who kept a checkpoint of the
//! later log is told that the history was forked.

use serde_json::Value;
use sios_e2e::{Options, TestAppliance, fixture, memory_put_args, require_setup};
use std::path::Path;

const BRAIN: &str = "voice-activity";
const NS: &str = "tenant/clinic";

fn ok(out: &std::process::Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Copies the directory `from` to the new `to`, file modes kept; the
/// kernel's sockets and lock (`run/`) are not state.
fn copy_state(from: &Path, to: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::create_dir(to).expect("backup dir");
    let mode = std::fs::metadata(from).expect("dir").permissions().mode();
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).expect("mode");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type().expect("file type");
        if kind.is_dir() {
            if entry.file_name() != "run" {
                copy_state(&source, &target);
            }
        } else if kind.is_file() {
            std::fs::copy(&source, &target).expect("copy");
        } else {
            panic!("{} is neither a file nor a directory", source.display());
        }
    }
}

fn invoke(app: &TestAppliance, request: &str) {
    ok(
        &app.sios(&["invoke", BRAIN, "--input", request, "--compact"]),
        "invoke",
    );
}

fn put(app: &TestAppliance, subject: &str, key: &str, value: &str) {
    ok(
        &app.sios(&memory_put_args(NS, subject, key, value, &[])),
        &format!("put {key}"),
    );
}

fn get(app: &TestAppliance, key: &str) -> std::process::Output {
    app.sios(&["memory", "get", "--namespace", NS, key])
}

/// Exports the audit log to `name` in the test's directory and verifies
/// it with `extra` arguments.
fn export_and_verify(app: &TestAppliance, name: &str, extra: &[&str]) -> sios_e2e::Verdict {
    let work = app.dir.path();
    let bundle = work.join(name);
    ok(
        &app.sios(&["audit", "export", &bundle.display().to_string()]),
        "audit export",
    );
    app.audit_verify_json(&bundle, &work.join("signing.pub"), extra)
}

#[test]
fn a_copy_taken_while_down_restores_and_an_auditor_sees_the_fork() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&[BRAIN]));
    let work = app.dir.path().to_owned();
    let request = work.join("request.json");
    std::fs::write(&request, fixture(BRAIN).request.to_string()).expect("request");
    let request = request.display().to_string();
    ok(
        &app.sios(&[
            "keys",
            "export-public",
            &work.join("signing.pub").display().to_string(),
        ]),
        "export-public",
    );
    invoke(&app, &request);
    put(&app, "alice", "alice-visit", "Seen on Monday.");
    assert!(app.stop().success());
    let backup = work.join("backup");
    copy_state(&app.state_dir, &backup);

    // Later: more work, an erasure, and an auditor who keeps the last
    // checkpoint they verified.
    let app = TestAppliance::restart_in(app);
    let before = export_and_verify(&app, "at-backup.oar", &[]);
    assert_eq!(before.code, Some(0), "{}", before.said);
    let at_backup = before.json["records"].as_u64().expect("records");
    invoke(&app, &request);
    put(&app, "bob", "bob-visit", "Seen on Tuesday.");
    ok(
        &app.sios(&["memory", "erase-subject", "alice"]),
        "erase alice",
    );
    assert!(!get(&app, "alice-visit").status.success(), "erased");
    let kept = work.join("kept.note").display().to_string();
    let later = export_and_verify(&app, "later.oar", &["--keep-checkpoint", &kept]);
    assert_eq!(later.code, Some(0), "{}", later.said);
    let seen = later.json["records"].as_u64().expect("records");
    assert!(seen > at_backup, "{seen} after {at_backup}");
    let mut app = app;
    assert!(app.stop().success());

    // The restore: the state directory's contents put back from the copy.
    for part in ["audit", "memory", "kernel"] {
        let live = app.state_dir.join(part);
        if live.exists() {
            std::fs::remove_dir_all(&live).expect("remove");
        }
        // A part the copy lacks (the kernel's own state is made only by
        // an operator's choices) was not there at the copy.
        if backup.join(part).exists() {
            copy_state(&backup.join(part), &live);
        }
    }
    let app = TestAppliance::restart_in(app);
    let status = app.status();
    assert!(
        status
            .processes
            .iter()
            .all(|p| p.state == sios_ipc::ProcessState::Ready),
        "{status:?}"
    );
    // Memory is as it was at the copy: alice's item is back (the erasure
    // came after the copy, so it must be made again), bob's is not there.
    let alice = get(&app, "alice-visit");
    assert!(
        ok(&alice, "get alice after the restore").contains("Seen on Monday."),
        "the copy holds what the erasure removed later"
    );
    let bob = get(&app, "bob-visit");
    assert_eq!(bob.status.code(), Some(1), "bob's item came after the copy");

    // The audit log continues from the copy. Grown past what the auditor
    // saw, it verifies on its own, but not as an extension of the log the
    // auditor kept a checkpoint of: its records after the copy differ.
    for round in 0.. {
        let alone = export_and_verify(&app, &format!("restored-{round}.oar"), &[]);
        assert_eq!(
            alone.code,
            Some(0),
            "the restored log alone: {}",
            alone.said
        );
        if alone.json["records"].as_u64().expect("records") > seen {
            break;
        }
        invoke(&app, &request);
    }
    let forked = export_and_verify(&app, "restored.oar", &["--extends", &kept]);
    assert_eq!(forked.code, Some(1), "{}", forked.said);
    assert_eq!(forked.json["check"], Value::from("X-d"), "{}", forked.said);
}
