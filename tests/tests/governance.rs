//! Governance end to end (issue 4; issue 6's isolation test): real client
//! processes running as different uids, identified by the kernel with
//! SO_PEERCRED, reach a real appliance through the client group
//! (`[policy] client_gid`) and get exactly what the policy gives them.
//!
//! Every denial is checked twice: the brain's served-request counter did not
//! move (the request never reached it), and the audit log holds the denial
//! (an intent with a deny decision and a `denied` outcome).
//!
//! Brain-to-brain calls: the allowed path is exercised here (legal asks the
//! text-embedding brain for its embedding, under policy, on every invoke);
//! the denied path is `brain_calls.rs`.

use serde_json::Value;
use sios_audit::record::{Kind, Record};
use sios_e2e::{Options, TestAppliance, audit_records, bin_dir, require_setup};
use sios_ipc::{ActionResult, Effect};
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Output};

/// The group allowed to connect, and the users (none exists in /etc/passwd:
/// the kernel knows callers by number only).
const CLIENTS_GID: u32 = 61000;
const ALICE: u32 = 61001;
const BOB: u32 = 61002;
const CAROL: u32 = 61003;
/// Primary gid: the auditors group of the config; in the client group as a
/// supplementary group only.
const DAVE: u32 = 61004;
const AUDITORS_GID: u32 = 61500;
/// Primary gid: the client group; an auditor through a supplementary group.
const ERIN: u32 = 61005;
/// In the client group, named nowhere in the config.
const STRANGER: u32 = 61009;
/// Not in the client group.
const OUTSIDER: u32 = 61010;

/// The `[policy]` section: the test's own uid is the operator.
fn policy_config() -> String {
    format!(
        r#"
[policy]
client_gid = {CLIENTS_GID}

[policy.operators]
uids = [{operator}]

[[policy.clients]]
uid = {ALICE}
name = "alice"
clearance = "confidential"
groups = ["clinicians"]

[[policy.clients]]
uid = {BOB}
name = "bob"
clearance = "internal"

[[policy.clients]]
uid = {CAROL}
name = "carol"
clearance = "public"

[[policy.clients]]
uid = {DAVE}
name = "dave"

[[policy.groups]]
gid = {AUDITORS_GID}
name = "auditors"
clearance = "internal"
"#,
        operator = nix::unistd::geteuid().as_raw()
    )
}

/// Starts the appliance and lets other uids walk to its socket: the test's
/// temporary directory is 0700 like any `tempdir`; the kernel itself opens
/// the state and run directories to the client group. `None` when not root
/// (skipped loudly; an error in CI, which runs as root).
fn start(brains: &[&str]) -> Option<TestAppliance> {
    if !sios_e2e::require_root("running clients as other uids") {
        return None;
    }
    let mut options = Options::brains(brains);
    options.extra_config = policy_config();
    let app = TestAppliance::start(options);
    std::fs::set_permissions(app.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    Some(app)
}

/// Runs `sios` as a real client process with credentials `uid`, primary
/// `gid` and supplementary `groups`, dropped in the child before it runs.
fn sios_as(
    app: &TestAppliance,
    (uid, gid, groups): (u32, u32, &[u32]),
    args: &[&str],
    stdin: Option<&str>,
) -> Output {
    use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};
    let groups: Vec<Gid> = groups.iter().map(|g| Gid::from_raw(*g)).collect();
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    let mut command = Command::new(bin_dir().join("sios"));
    command
        .arg("--state-dir")
        .arg(&app.state_dir)
        .args(args)
        .current_dir("/")
        .env_remove("SIOS_CONFIG");
    // std's `uid`/`gid` would clear the supplementary groups, and its
    // `groups` is unstable: drop everything here, groups first (while still
    // root), then the gid, then the uid.
    #[allow(unsafe_code)]
    // SAFETY: runs in the forked child before exec, making only the
    // async-signal-safe setgroups, setresgid and setresuid calls on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            setgroups(&groups)?;
            setresgid(gid, gid, gid)?;
            setresuid(uid, uid, uid)?;
            Ok(())
        });
    }
    sios_e2e::output_with_stdin(&mut command, stdin)
}

/// A client of the client group (its primary gid), Dave (auditors primary,
/// client group supplementary) or Erin (the other way round).
fn credentials(uid: u32) -> (u32, u32, &'static [u32]) {
    if uid == DAVE {
        (DAVE, AUDITORS_GID, &[CLIENTS_GID])
    } else if uid == ERIN {
        (ERIN, CLIENTS_GID, &[AUDITORS_GID])
    } else {
        (uid, CLIENTS_GID, &[])
    }
}

fn client(app: &TestAppliance, uid: u32, args: &[&str]) -> Output {
    sios_as(app, credentials(uid), args, None)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        stderr(out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn refused(out: &Output, what: &str, reason: &str) {
    assert!(
        !out.status.success(),
        "{what} should be refused, but succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(out).contains(reason),
        "{what}: want {reason:?} in: {}",
        stderr(out)
    );
}

const LEGAL_REQUEST: &str = r#"{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["The tenant must pay rent monthly."]}]}"#;
const FINANCE_REQUEST: &str = r#"{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["Quarterly revenue fell short of the forecast."]}]}"#;
const READABILITY_REQUEST: &str =
    r#"{"inputs":[{"name":"counts","datatype":"FP32","shape":[1,6],"data":[120,8,180,14,30,2]}]}"#;

fn invoke(app: &TestAppliance, uid: u32, brain: &str, request: &str) -> Output {
    sios_as(
        app,
        credentials(uid),
        &["invoke", brain, "--input", "-", "--compact"],
        Some(request),
    )
}

/// Served requests per brain, from `sios brain list --json` (as the operator).
fn served(app: &TestAppliance) -> HashMap<String, u64> {
    let doc: Value =
        serde_json::from_str(&ok(&app.sios(&["brain", "list", "--json"]), "brain list")).unwrap();
    doc["brains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["name"].as_str().unwrap().to_owned(),
                b["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Runs `request`, which must be refused with `reason`, and checks that no
/// brain served anything meanwhile.
fn denied(app: &TestAppliance, what: &str, reason: &str, request: impl FnOnce() -> Output) {
    let before = served(app);
    let timed = app.invoke_timings().brain_answered.count();
    refused(&request(), what, reason);
    assert_eq!(
        served(app),
        before,
        "{what}: a denied request reached a brain"
    );
    assert_eq!(
        app.invoke_timings().brain_answered.count(),
        timed,
        "{what}: the kernel timed a brain call for a denied request"
    );
}

/// The intents `actor` left on `resource` with a deny decision, each closed
/// by a `denied` outcome.
fn denials(records: &[Record], actor: &str, resource: &str) -> usize {
    let intents: Vec<&Record> = records
        .iter()
        .filter(|r| {
            r.kind == Kind::Intent
                && r.actor == actor
                && r.resource == resource
                && r.decision
                    .as_ref()
                    .is_some_and(|d| d.effect == Effect::Deny)
        })
        .collect();
    for intent in &intents {
        assert!(
            records.iter().any(|r| r.kind
                == Kind::Outcome {
                    intent_seq: intent.seq,
                    result: ActionResult::Denied
                }),
            "the denial at record {} has no `denied` outcome",
            intent.seq
        );
    }
    intents.len()
}

/// Allowed intents (`Effect::Allow`) of `actor` on `resource`.
fn allowed(records: &[Record], actor: &str, resource: &str) -> usize {
    records
        .iter()
        .filter(|r| {
            r.kind == Kind::Intent
                && r.actor == actor
                && r.resource == resource
                && r.decision
                    .as_ref()
                    .is_some_and(|d| d.effect == Effect::Allow)
        })
        .count()
}

fn uid(u: u32) -> String {
    format!("uid:{u}")
}

#[test]
fn clients_of_different_uids_get_exactly_what_the_policy_gives_them() {
    if !require_setup() {
        return;
    }
    // finance: domain, internal; legal: domain, confidential (both ask
    // text-embedding for embeddings); readability: operational, public.
    let Some(mut app) = start(&["text-embedding", "finance", "legal", "readability"]) else {
        return;
    };

    // ---- Who can connect at all ------------------------------------------
    let run = app.state_dir.join("run");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(
        mode(&app.state_dir),
        0o710,
        "state dir: group may pass, not list"
    );
    assert_eq!(mode(&run), 0o710);
    assert_eq!(mode(&run.join("kernel.sock")) & 0o077, 0o060);
    for shared in [app.state_dir.clone(), run.clone(), run.join("kernel.sock")] {
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(std::fs::metadata(&shared).unwrap().gid(), CLIENTS_GID);
    }
    for other in ["audit.sock", "memory.sock", "brains"] {
        assert_eq!(
            mode(&run.join(other)) & 0o077,
            0,
            "run/{other} must stay private"
        );
    }
    for private in ["audit", "memory", "kernel"] {
        let path = app.state_dir.join(private);
        if path.exists() {
            assert_eq!(
                mode(&path) & 0o077,
                0,
                "{} must stay private",
                path.display()
            );
        }
    }
    // A uid outside the client group cannot even reach the socket.
    let outsider = sios_as(&app, (OUTSIDER, OUTSIDER, &[]), &["status"], None);
    assert!(!outsider.status.success(), "an outsider connected");
    assert!(
        stderr(&outsider).contains("permission denied") && stderr(&outsider).contains("client_gid"),
        "the outsider is told why: {}",
        stderr(&outsider)
    );
    // Inside the group, the kernel knows each caller by SO_PEERCRED.
    let who = ok(&client(&app, BOB, &["status", "--json"]), "bob's status");
    assert!(who.contains("\"processes\""), "{who}");
    // The file system stopped the outsider: the kernel, which logs every
    // connection with its SO_PEERCRED uid, saw Bob connect and never it.
    assert!(app.log_text().contains(&format!("uid={BOB}")));
    assert!(
        !app.log_text().contains(&format!("uid={OUTSIDER}")),
        "the kernel accepted a connection from the outsider"
    );

    // ---- Invoke: clearance against brain sensitivity ---------------------
    let before = served(&app);
    ok(
        &invoke(&app, ALICE, "legal", LEGAL_REQUEST),
        "alice invokes legal",
    );
    ok(
        &invoke(&app, BOB, "finance", FINANCE_REQUEST),
        "bob invokes finance",
    );
    ok(
        &invoke(&app, CAROL, "readability", READABILITY_REQUEST),
        "carol invokes readability",
    );
    let after = served(&app);
    for brain in ["legal", "finance", "readability"] {
        assert_eq!(
            after[brain],
            before[brain] + 1,
            "{brain} served one request"
        );
    }
    // Both domain brains asked for their embedding, through the kernel.
    assert_eq!(after["text-embedding"], before["text-embedding"] + 2);

    // Bob (internal) is permitted domain brains by "clients.invoke-domain",
    // but the forbid on confidential brains wins: forbid overrides permit.
    denied(
        &app,
        "bob invokes legal",
        "forbidden by clients.domain-above-clearance",
        || invoke(&app, BOB, "legal", LEGAL_REQUEST),
    );
    // Carol (public) may not use an internal domain brain.
    denied(
        &app,
        "carol invokes finance",
        "forbidden by clients.domain-above-clearance",
        || invoke(&app, CAROL, "finance", FINANCE_REQUEST),
    );

    // ---- A caller the config does not name --------------------------------
    // It gets what the policy gives an unknown caller: status, nothing else.
    ok(
        &client(&app, STRANGER, &["status"]),
        "the stranger's status",
    );
    denied(
        &app,
        "the stranger invokes readability",
        "no policy permits it",
        || invoke(&app, STRANGER, "readability", READABILITY_REQUEST),
    );
    denied(
        &app,
        "the stranger invokes finance",
        "forbidden by clients.domain-above-clearance",
        || invoke(&app, STRANGER, "finance", FINANCE_REQUEST),
    );

    // ---- Operator actions -------------------------------------------------
    let pid = app.pid("readability");
    let hash_before = ok(&app.sios(&["policy", "show", "--json"]), "policy show");
    denied(
        &app,
        "bob restarts readability",
        "no policy permits it",
        || client(&app, BOB, &["restart", "readability"]),
    );
    assert_eq!(app.pid("readability"), pid, "the brain was not restarted");
    let policy_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        policy_dir.path().join("open.cedar"),
        "@id(\"open\") permit (principal, action, resource);\n",
    )
    .unwrap();
    std::fs::set_permissions(policy_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let policy_path = policy_dir.path().display().to_string();
    denied(&app, "bob loads a policy", "no policy permits it", || {
        client(&app, BOB, &["policy", "load", &policy_path])
    });
    assert_eq!(
        ok(&app.sios(&["policy", "show", "--json"]), "policy show"),
        hash_before,
        "a refused load changed the active policy"
    );

    // ---- Audit reads: the auditors group --------------------------------
    // Dave reaches the socket through his supplementary group; the kernel
    // sees his primary gid, which the config names "auditors".
    let tail = ok(
        &client(&app, DAVE, &["audit", "tail", "5"]),
        "dave reads the audit log",
    );
    assert!(!tail.is_empty());
    // Erin's membership is a supplementary group, which the kernel reads
    // with SO_PEERGROUPS (SO_PEERCRED has the primary gid only).
    ok(
        &client(&app, ERIN, &["audit", "tail", "5"]),
        "erin reads the audit log",
    );
    denied(
        &app,
        "bob reads the audit log",
        "no policy permits it",
        || client(&app, BOB, &["audit", "tail", "5"]),
    );

    // ---- Memory: a namespace is private to its owner ----------------------
    let put = |uid: u32, ns: &str, key: &str, value: &str| {
        client(
            &app,
            uid,
            &sios_e2e::memory_put_args(ns, "patient-7", key, value, &["--embedding", "1,0,0"]),
        )
    };
    ok(
        &put(ALICE, "client:alice/notes", "visit", "alice's secret"),
        "alice writes her namespace",
    );
    ok(
        &put(BOB, "client:bob/notes", "memo", "bob's memo"),
        "bob writes his namespace",
    );
    let got = ok(
        &client(
            &app,
            ALICE,
            &[
                "memory",
                "get",
                "--namespace",
                "client:alice/notes",
                "visit",
            ],
        ),
        "alice reads her namespace",
    );
    assert!(got.contains("alice's secret"), "{got}");
    let alice_ns = "client:alice/notes";
    for (what, args) in [
        (
            "get",
            vec!["memory", "get", "--namespace", alice_ns, "visit"],
        ),
        ("ls", vec!["memory", "ls", "--namespace", alice_ns]),
        ("export", vec!["memory", "export", "--namespace", alice_ns]),
        (
            "search",
            vec![
                "memory",
                "search",
                "--embedding",
                "1,0,0",
                "--namespace",
                alice_ns,
            ],
        ),
        (
            "write",
            sios_e2e::memory_put_args(alice_ns, "x", "k", "v", &[]),
        ),
    ] {
        let out = client(&app, BOB, &args);
        refused(
            &out,
            &format!("bob's memory {what} of alice's namespace"),
            "denied",
        );
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("alice's secret"),
            "bob's {what} leaked alice's item"
        );
    }
    // And the other way round; and the stranger gets neither.
    refused(
        &client(
            &app,
            ALICE,
            &["memory", "get", "--namespace", "client:bob/notes", "memo"],
        ),
        "alice reads bob's namespace",
        "denied",
    );
    refused(
        &client(
            &app,
            STRANGER,
            &["memory", "get", "--namespace", alice_ns, "visit"],
        ),
        "the stranger reads alice's namespace",
        "denied",
    );
    // Searching everything is an operator's business.
    refused(
        &client(&app, BOB, &["memory", "search", "--embedding", "1,0,0"]),
        "bob searches every namespace",
        "denied",
    );

    app.stop();
    let records = audit_records(&app.state_dir);
    // Every denial above is on record, by the uid the kernel saw.
    for (actor, resource, count) in [
        (BOB, "brain:legal", 1),
        (CAROL, "brain:finance", 1),
        (STRANGER, "brain:readability", 1),
        (STRANGER, "brain:finance", 1),
        (BOB, "process:readability", 1),
        (BOB, "appliance:policy", 1),
        (BOB, "audit:tail", 1),
        // get, ls, export, write; and the search, decided per namespace.
        (BOB, "memory:client:alice/notes", 4),
        (BOB, "memory:search:client:alice/notes", 1),
        (ALICE, "memory:client:bob/notes", 1),
        (STRANGER, "memory:client:alice/notes", 1),
        (BOB, "memory:search:*", 1),
    ] {
        assert_eq!(
            denials(&records, &uid(actor), resource),
            count,
            "denials of uid {actor} on {resource}"
        );
    }
    // The allowed requests, by the same uids, are recorded as allowed.
    for (actor, resource) in [
        (uid(ALICE), "brain:legal"),
        (uid(BOB), "brain:finance"),
        (uid(CAROL), "brain:readability"),
        (uid(DAVE), "audit:tail"),
        (uid(ERIN), "audit:tail"),
        ("brain:legal".to_owned(), "brain:text-embedding"),
        ("brain:finance".to_owned(), "brain:text-embedding"),
        (uid(ALICE), "memory:client:alice/notes"),
    ] {
        assert!(
            allowed(&records, &actor, resource) >= 1,
            "no allowed decision of {actor} on {resource}"
        );
    }
    // Nobody outside the group left any trace: it never got in.
    assert!(!records.iter().any(|r| r.actor == uid(OUTSIDER)));
}

/// A rule for a second policy version: Bob may no longer use readability.
const BOB_NO_READABILITY: &str = "@id(\"bob.no-readability\")\nforbid (principal is Sios::Client, action == Sios::Action::\"invoke\", resource is Sios::Brain)\n  when { principal.name == \"bob\" && resource.name == \"readability\" };\n";

/// The files of a policy directory, as `sios policy load` sends them.
fn policy_files(dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            (
                path.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&path).unwrap(),
            )
        })
        .collect()
}

/// A policy directory holding the shipped default policy and `extra` files.
fn policy_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        sios_e2e::source_tree().join("deploy/policy/default.cedar"),
        dir.path().join("default.cedar"),
    )
    .unwrap();
    for (name, text) in extra {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    dir
}

#[test]
fn an_invalid_policy_is_refused_and_the_old_one_keeps_deciding() {
    if !require_setup() {
        return;
    }
    let Some(mut app) = start(&["readability"]) else {
        return;
    };
    let show = || ok(&app.sios(&["policy", "show", "--json"]), "policy show");
    let active = show();
    // A request the policy allows and one it denies, decided again after
    // every refused load: same decisions, by the same policy.
    let decide = |round: &str| {
        let before = served(&app)["readability"];
        ok(
            &invoke(&app, BOB, "readability", READABILITY_REQUEST),
            &format!("{round}: bob invokes readability"),
        );
        assert_eq!(served(&app)["readability"], before + 1);
        denied(
            &app,
            &format!("{round}: the stranger invokes readability"),
            "no policy permits it",
            || invoke(&app, STRANGER, "readability", READABILITY_REQUEST),
        );
    };
    decide("before");

    // An attribute the schema does not declare: a validation error.
    let typo = policy_dir(&[(
        "mine.cedar",
        "@id(\"typo\")\npermit (principal is Sios::Client, action, resource)\n  when { principal.clearence > 1 };\n",
    )]);
    // A schema that does not parse.
    let schema =
        std::fs::read_to_string(sios_e2e::source_tree().join("deploy/policy/sios.cedarschema"))
            .unwrap()
            .replace("known: Bool,", "known: Boo,");
    let schema_place = schema
        .lines()
        .enumerate()
        .find_map(|(n, line)| {
            line.find("Boo,")
                .map(|c| format!("sios.cedarschema:{}:{}: error:", n + 1, c + 1))
        })
        .unwrap();
    let bad_schema = policy_dir(&[("sios.cedarschema", &schema)]);
    // Valid, but can never apply (clients never call brains): a warning,
    // which sios refuses like an error.
    let warning = policy_dir(&[(
        "never.cedar",
        "@id(\"never\")\npermit (principal is Sios::Client, action == Sios::Action::\"call_brain\", resource);\n",
    )]);
    for (dir, wants) in [
        (
            &typo,
            vec![
                "mine.cedar:3:10: error:",
                "clearence",
                "did you mean `clearance`?",
            ],
        ),
        (
            &bad_schema,
            vec![schema_place.as_str(), "failed to resolve type: Boo"],
        ),
        (
            &warning,
            vec!["never.cedar:1:1: warning (refused):", "impossible"],
        ),
    ] {
        let out = app.sios(&["policy", "load", &dir.path().display().to_string()]);
        assert!(!out.status.success(), "an invalid policy was loaded");
        let message = stderr(&out);
        for want in wants {
            assert!(message.contains(want), "want {want:?} in: {message}");
        }
        assert_eq!(show(), active, "a refused policy changed the active one");
        decide("after a refused load");
    }

    // The same path does take a valid policy (so the checks above can fail).
    let stricter = policy_dir(&[("bob.cedar", BOB_NO_READABILITY)]);
    ok(
        &app.sios(&["policy", "load", &stricter.path().display().to_string()]),
        "loading a valid policy",
    );
    assert_ne!(show(), active);
    denied(
        &app,
        "bob invokes readability under the new policy",
        "forbidden by bob.no-readability",
        || invoke(&app, BOB, "readability", READABILITY_REQUEST),
    );

    // What the appliance runs is the policy's `status` action too: a policy
    // that keeps it from unknown callers keeps `status` and the brain list
    // from them (and records each refusal); known callers still see both.
    let private = policy_dir(&[
        ("bob.cedar", BOB_NO_READABILITY),
        ("private.cedar", STATUS_FOR_KNOWN_CALLERS),
    ]);
    ok(
        &app.sios(&["policy", "load", &private.path().display().to_string()]),
        "loading a policy that keeps status from strangers",
    );
    for args in [&["status"][..], &["brain", "list"]] {
        let out = client(&app, STRANGER, args);
        refused(
            &out,
            &format!("the stranger's {args:?}"),
            "forbidden by status.known-callers-only",
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        ok(&client(&app, BOB, args), &format!("bob's {args:?}"));
    }
    app.stop();
    let records = audit_records(&app.state_dir);
    for resource in ["appliance:status", "appliance:brains"] {
        assert_eq!(denials(&records, &uid(STRANGER), resource), 1, "{resource}");
    }
}

/// A rule that keeps `status` (and the brain list) from unknown callers.
const STATUS_FOR_KNOWN_CALLERS: &str = "@id(\"status.known-callers-only\")\nforbid (principal is Sios::Client, action == Sios::Action::\"status\", resource)\n  unless { principal.known };\n";

/// Requests in flight at once in the replay workload.
const CONCURRENCY: usize = 64;
/// Requests per policy version.
const PER_VERSION: usize = 1008;

/// The workload's request `i`: who asks which brain. Alice, Bob and Carol
/// use the operational readability brain (allowed), the stranger too
/// (denied by default); Bob and Carol also try the confidential legal brain
/// (forbidden by clearance). Under the second policy Bob's readability
/// requests are forbidden as well.
fn workload_request(i: usize) -> (u32, &'static str) {
    match i % 6 {
        0 | 1 => (ALICE, "readability"),
        2 => (BOB, "readability"),
        3 => (CAROL, "readability"),
        4 => (STRANGER, "readability"),
        _ => (if i % 12 == 5 { BOB } else { CAROL }, "legal"),
    }
}

#[test]
fn replay_re_decides_thousands_of_requests_and_catches_a_re_signed_tampered_decision() {
    use sios_kernel::appliance::{Appliance, Requester};
    if !require_setup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let layout = sios_config::StateLayout::new(dir.path().join("state"));
    // The same config the other tests give `sios up`, read the same way.
    let config_path = dir.path().join("config.toml");
    let tree = sios_e2e::source_tree();
    std::fs::write(
        &config_path,
        format!(
            "[paths]\ncatalog_dir = {:?}\nmodels_dir = {:?}\nonnxruntime_lib = {:?}\nbin_dir = {:?}\n\n[brains]\nenabled = [\"readability\", \"legal\"]\n{}",
            tree.join("brains/catalog").display().to_string(),
            tree.join("build/models").display().to_string(),
            tree.join("build/lib/libonnxruntime.so.1.32.0").display().to_string(),
            bin_dir().display().to_string(),
            policy_config().replace(&format!("client_gid = {CLIENTS_GID}"), ""),
        ),
    )
    .unwrap();
    let config = sios_config::Config::load(Some(&config_path), &layout.root).unwrap();
    for d in [layout.root.clone(), layout.run_dir()] {
        sios_kernel::appliance::create_private_dir(&d).unwrap();
    }
    let client = |uid: u32| {
        Requester::Client(sios_ipc::Caller {
            pid: None,
            uid,
            gid: CLIENTS_GID,
            groups: Vec::new(),
        })
    };
    let request = || sios_ipc::kserve::parse_request(READABILITY_REQUEST).unwrap();
    let legal_request = || sios_ipc::kserve::parse_request(LEGAL_REQUEST).unwrap();
    let second = policy_dir(&[("bob.cedar", BOB_NO_READABILITY)]);
    let runtime = sios_e2e::multi_thread_runtime(2);
    let (allowed_n, denied_n) = runtime.block_on(async {
        let (appliance, pending) = Appliance::prepare(config, layout.clone()).unwrap();
        appliance.start(pending).await;
        let mut outcomes = (0usize, 0usize);
        for version in 0..2 {
            if version == 1 {
                let files = policy_files(second.path());
                let operator = client(nix::unistd::geteuid().as_raw());
                appliance.policy_load(&operator, files).await.unwrap();
            }
            use futures::StreamExt as _;
            let results: Vec<_> = futures::stream::iter(0..PER_VERSION)
                .map(|i| {
                    let (uid, brain) = workload_request(i);
                    let requester = client(uid);
                    let appliance = std::sync::Arc::clone(&appliance);
                    let body = if brain == "legal" {
                        legal_request()
                    } else {
                        request()
                    };
                    async move { appliance.invoke(&requester, brain, body).await }
                })
                .buffer_unordered(CONCURRENCY)
                .collect()
                .await;
            for result in results {
                match result {
                    Ok(_) => outcomes.0 += 1,
                    Err(sios_ipc::InvokeError::Denied { .. }) => outcomes.1 += 1,
                    Err(other) => panic!("the workload failed: {other}"),
                }
            }
        }
        appliance.stop().await;
        outcomes
    });
    // Per 6 requests: Alice twice, Carol once allowed; Bob allowed only
    // under the first policy.
    assert_eq!(allowed_n, PER_VERSION / 6 * 4 + PER_VERSION / 6 * 3);
    assert_eq!(denied_n, 2 * PER_VERSION - allowed_n);

    // Export the log as an auditor gets it, with the operator's public key.
    let audit_dir = layout.service_dir("audit");
    let bundle = dir.path().join("log.bundle");
    let pubkey = dir.path().join("operator.pub");
    sios_audit::keys::export_public(&audit_dir, &pubkey).unwrap();
    {
        let log = sios_audit::AuditLog::open(&audit_dir).unwrap();
        runtime
            .block_on(sios_audit::export::write_bundle(&log, &bundle))
            .unwrap();
        log.close();
    }
    let sios = |args: &[&str]| {
        Command::new(bin_dir().join("sios"))
            .args(args)
            .output()
            .unwrap()
    };
    let path = |p: &std::path::Path| p.display().to_string();
    ok(
        &sios(&[
            "audit",
            "verify",
            &path(&bundle),
            "--pubkey",
            &path(&pubkey),
        ]),
        "verify the export",
    );
    let replay = |bundle: &std::path::Path| {
        let out = sios(&["audit", "replay", &path(bundle), "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("replay JSON ({e}): {}", stderr(&out)));
        (out, report)
    };
    let (out, report) = replay(&bundle);
    assert!(
        out.status.success(),
        "replay of the untouched log: {}",
        stderr(&out)
    );
    assert_eq!(report["divergent"], serde_json::json!([]));
    assert_eq!(
        report["policies"], 2,
        "the start-up policy and the loaded one"
    );
    let decisions = report["replayed"].as_u64().unwrap();
    assert!(
        decisions >= (2 * PER_VERSION) as u64,
        "every request's decision was re-decided: {report}"
    );

    // The forgery: one of Bob's denials under the second policy rewritten
    // as the first policy's allow, and the whole log re-signed with a key
    // the forger holds, so that every signature verifies against it.
    let records = audit_records(&layout.root);
    let origin = records[0].resource.clone();
    let target = records
        .iter()
        .filter(|r| {
            r.kind == Kind::Intent
                && r.actor == uid(BOB)
                && r.resource == "brain:readability"
                && r.decision
                    .as_ref()
                    .is_some_and(|d| d.effect == Effect::Deny)
        })
        .nth(7)
        .expect("bob's denials under the second policy")
        .seq;
    let forger = sios_audit::keys::SecretKey::from_seed(&origin, [7; 32]).unwrap();
    let forger_pub = dir.path().join("forger.pub");
    sios_audit::keys::write_public(&forger_pub, forger.public()).unwrap();
    let tampered = dir.path().join("tampered.bundle");
    let summary = sios_audit::resign::resign(
        std::fs::File::open(&bundle).unwrap(),
        std::fs::File::create(&tampered).unwrap(),
        std::slice::from_ref(&forger),
        |record| {
            if record.seq == target {
                let decision = record.decision.as_mut().unwrap();
                decision.effect = Effect::Allow;
                decision.policy_ids = vec!["clients.invoke-operational".into()];
            }
        },
    )
    .unwrap();
    assert_eq!(summary.edited, [target]);
    // Signatures alone cannot tell: the forged bundle verifies against the
    // forger's key (and, of course, not against the operator's).
    ok(
        &sios(&[
            "audit",
            "verify",
            &path(&tampered),
            "--pubkey",
            &path(&forger_pub),
        ]),
        "verify the re-signed bundle with the forger's key",
    );
    assert!(
        !sios(&[
            "audit",
            "verify",
            &path(&tampered),
            "--pubkey",
            &path(&pubkey)
        ])
        .status
        .success()
    );
    // Replay does: exactly that record, and a failing exit.
    let (out, report) = replay(&tampered);
    assert!(!out.status.success(), "replay accepted a forged decision");
    let divergent = report["divergent"].as_array().unwrap();
    assert_eq!(divergent.len(), 1, "{report}");
    assert_eq!(divergent[0]["seq"], target);
    assert!(
        divergent[0]["reason"]
            .as_str()
            .unwrap()
            .contains("recorded allow by [clients.invoke-operational], re-decided deny by [bob.no-readability]"),
        "{report}"
    );
    assert!(
        stderr(&out).contains(&format!("record {target} ")),
        "{}",
        stderr(&out)
    );
}
