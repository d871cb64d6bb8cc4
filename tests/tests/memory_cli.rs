//! Issue 6 through the `sios` CLI: put/get/ls/search/rm/erase-subject/
//! export/import through the kernel, with the JSON shapes scripts rely on.

use serde_json::Value;
use sios_e2e::{Options, TestAppliance, require_setup};
use std::process::Output;

fn json(out: &Output, what: &str) -> Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn memory_round_trip_through_the_kernel() {
    if !require_setup() {
        return;
    }
    let app = TestAppliance::start(Options::brains(&[]));
    let ns = "client:ops/crm";
    let put = |key: &str, subject: &str, value: &str, emb: &str| {
        app.sios(&sios_e2e::memory_put_args(
            ns,
            subject,
            key,
            value,
            &["--embedding", emb, "--meta", "source=test", "--json"],
        ))
    };
    let p = json(&put("a", "alice", "alpha", "1,0,0"), "put a");
    assert_eq!(p["namespace"], ns);
    assert_eq!(p["key"], "a");
    assert_eq!(p["created"], true);
    json(&put("b", "bob", "beta", "0,1,0"), "put b");
    json(&put("c", "alice", "gamma", "0.9,0.1,0"), "put c");

    let got = json(
        &app.sios(&["memory", "get", "--namespace", ns, "a", "--json"]),
        "get",
    );
    assert_eq!(got["value"]["text"], "alpha");
    assert_eq!(got["subject"], "alice");
    assert_eq!(got["metadata"]["source"], "test");

    let ls = app.sios(&["memory", "ls", "--namespace", ns, "--json"]);
    assert!(ls.status.success());
    let keys: Vec<String> = String::from_utf8_lossy(&ls.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("ls line")["key"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys, ["a", "b", "c"]);

    let hits = json(
        &app.sios(&[
            "memory",
            "search",
            "--embedding",
            "1,0,0",
            "-k",
            "2",
            "--json",
        ]),
        "search",
    );
    let hit_keys: Vec<&str> = hits["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect();
    assert_eq!(hit_keys, ["a", "c"]);

    // Export the namespace, remove and erase, import it back.
    let file = app.dir.path().join("crm.jsonl");
    let f = file.display().to_string();
    let exported = json(
        &app.sios(&["memory", "export", "--namespace", ns, "-o", &f, "--json"]),
        "export",
    );
    assert_eq!(exported["items"], 3);
    // An export the disk will not take (here: a file-size limit of zero, as
    // a full disk would refuse it) fails with exit 1, says that nothing was
    // left and that it can be run again, and leaves no file at all.
    let refused = app.dir.path().join("refused.jsonl");
    let sios = app.sios_command(&[
        "memory",
        "export",
        "--namespace",
        ns,
        "-o",
        &refused.display().to_string(),
    ]);
    let out = std::process::Command::new("sh")
        .args(["-c", "trap '' XFSZ; ulimit -f 0; exec \"$0\" \"$@\""])
        .arg(sios.get_program())
        .args(sios.get_args())
        .output()
        .expect("run sios under sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("writing the export failed") && stderr.contains("can be run again"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(app.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("refused"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let rm = json(
        &app.sios(&["memory", "rm", "--namespace", ns, "b", "--json"]),
        "rm",
    );
    assert_eq!(rm["deleted"], true);
    let gone = app.sios(&["memory", "get", "--namespace", ns, "b"]);
    assert_eq!(gone.status.code(), Some(1), "deleted item still readable");
    let erased = json(
        &app.sios(&["memory", "erase-subject", "alice", "--json"]),
        "erase",
    );
    assert_eq!(erased["items_erased"], 2);
    let gone = app.sios(&["memory", "get", "--namespace", ns, "a"]);
    assert_eq!(gone.status.code(), Some(1), "erased item still readable");
    let imported = json(&app.sios(&["memory", "import", &f, "--json"]), "import");
    assert_eq!(imported["items"], 3);
    let got = json(
        &app.sios(&["memory", "get", "--namespace", ns, "c", "--json"]),
        "get c",
    );
    assert_eq!(got["value"]["text"], "gamma");
    // The same export from standard input (`-`) restores what was deleted.
    let rm = json(
        &app.sios(&["memory", "rm", "--namespace", ns, "c", "--json"]),
        "rm c",
    );
    assert_eq!(rm["deleted"], true);
    let export = std::fs::read_to_string(&f).expect("the export file");
    let imported = json(
        &app.sios_with_stdin(&["memory", "import", "-", "--json"], Some(&export)),
        "import -",
    );
    assert_eq!(
        (imported["items"].clone(), imported["created"].clone()),
        (3.into(), 1.into())
    );
    let got = json(
        &app.sios(&["memory", "get", "--namespace", ns, "c", "--json"]),
        "get c after import -",
    );
    assert_eq!(got["value"]["text"], "gamma");
}

/// The `[memory]` limits reach the memory service through the kernel: a
/// write past one is refused (exit 1) with the setting named, and stores
/// nothing; deleting makes room.
#[test]
fn a_memory_limit_from_the_config_refuses_a_write_and_names_the_setting() {
    if !require_setup() {
        return;
    }
    let mut options = Options::brains(&[]);
    options.extra_config = "[memory]\nmax_items = 2\n".into();
    let app = TestAppliance::start(options);
    let ns = "client:ops/limited";
    let put = |key: &str| app.sios(&sios_e2e::memory_put_args(ns, "s", key, "v", &["--json"]));
    json(&put("a"), "put a");
    let memory_status = |app: &TestAppliance| {
        let status = app.sios(&["status", "--json"]);
        let doc: Value = serde_json::from_slice(&status.stdout).expect("status JSON");
        let memory = doc["processes"]
            .as_array()
            .expect("processes")
            .iter()
            .find(|p| p["name"] == "memory")
            .expect("memory listed")
            .clone();
        (status.status.code(), memory)
    };
    let (code, memory) = memory_status(&app);
    assert_eq!((code, &memory["state"]), (Some(0), &Value::from("ready")));
    assert!(
        memory["holds"]
            .as_str()
            .is_some_and(|h| h.starts_with("1 of 2 items")),
        "{memory}"
    );
    json(&put("b"), "put b");
    // Full: `sios status` says so, and what to do.
    let (code, memory) = memory_status(&app);
    assert_eq!(
        (code, &memory["state"]),
        (Some(1), &Value::from("degraded"))
    );
    assert!(
        memory["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("memory store is full") && e.contains("[memory] max_items")),
        "{memory}"
    );
    let refused = put("c");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[memory] max_items") && stderr.contains("nothing was stored"),
        "{stderr}"
    );
    let gone = app.sios(&["memory", "get", "--namespace", ns, "c"]);
    assert_eq!(gone.status.code(), Some(1), "a refused put was stored");
    json(
        &app.sios(&["memory", "rm", "--namespace", ns, "a", "--json"]),
        "rm a",
    );
    json(&put("c"), "put c after making room");

    // An import sent in chunks (1,000 items each) that meets the limit
    // part-way says how much of the file is in.
    drop(app);
    let mut options = Options::brains(&[]);
    options.extra_config = "[memory]\nmax_items = 1500\n".into();
    let app = TestAppliance::start(options);
    let header = sios_ipc::memory::ExportLine::Header(sios_ipc::memory::ExportHeader::new(
        sios_ipc::memory::ExportScope::Namespace(ns.into()),
        1,
    ));
    let mut file = header.to_json() + "\n";
    for n in 0..2000 {
        let item = sios_ipc::memory::ExportLine::Item(sios_ipc::Item {
            namespace: ns.into(),
            key: format!("k{n:04}"),
            subject: "s".into(),
            value: sios_ipc::Value::Text("v".into()),
            metadata: Default::default(),
            created_ms: 1,
            updated_ms: 1,
            embedding: None,
        });
        file += &(item.to_json() + "\n");
    }
    let path = app.dir.path().join("big.jsonl");
    std::fs::write(&path, file).unwrap();
    let stopped = app.sios(&["memory", "import", &path.display().to_string()]);
    let stderr = String::from_utf8_lossy(&stopped.stderr);
    assert_eq!(stopped.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("[memory] max_items")
            && stderr.contains("the first 1000 of the file's 2000 items were imported"),
        "{stderr}"
    );
    json(
        &app.sios(&["memory", "get", "--namespace", ns, "k0999", "--json"]),
        "an item of the first chunk",
    );
}

/// Issue 6 point 5: a write acknowledged to the caller survives `kill -9` of
/// the kernel (the memory service dies with it), under concurrent writers,
/// twice over, and the database opens cleanly after each.
#[test]
fn acknowledged_writes_survive_kill_9_of_the_kernel() {
    use std::sync::Mutex;
    if !require_setup() {
        return;
    }
    let ns = "client:ops/journal";
    let mut app = TestAppliance::start(Options::brains(&[]));
    let acknowledged = Mutex::new(Vec::new());
    for round in 0..2 {
        std::thread::scope(|scope| {
            for writer in 0..4 {
                let (app, acknowledged) = (&app, &acknowledged);
                scope.spawn(move || {
                    for n in 0.. {
                        let key = format!("r{round}-w{writer}-{n}");
                        let value = format!("entry {key}");
                        let out =
                            app.sios(&sios_e2e::memory_put_args(ns, "journal", &key, &value, &[]));
                        if !out.status.success() {
                            // The kernel is gone; this write was never acknowledged.
                            break;
                        }
                        acknowledged.lock().unwrap().push((key, value));
                    }
                });
            }
            // Let the writers get going, then kill the kernel mid-stream.
            // A deadline, not a timing assertion: if the writers stop early
            // (a put refused before any kill), fail with the log rather than
            // wait forever.
            let target = 25 * (round + 1);
            let give_up = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while acknowledged.lock().unwrap().len() < target {
                if std::time::Instant::now() > give_up {
                    app.kill_kernel_now();
                    panic!(
                        "round {round}: only {} of {target} writes acknowledged before the kill\n{}",
                        acknowledged.lock().unwrap().len(),
                        app.log_text()
                    );
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            app.kill_kernel_now();
        });
        app.kill_kernel();
        app = TestAppliance::restart_in(app);
        assert!(
            app.status()
                .processes
                .iter()
                .all(|p| p.state == sios_ipc::ProcessState::Ready),
            "round {round}: the appliance (memory included) came back: {}",
            app.log_text()
        );
    }
    let acknowledged = acknowledged.into_inner().unwrap();
    assert!(acknowledged.len() >= 50);
    for (key, value) in &acknowledged {
        let out = app.sios(&["memory", "get", "--namespace", ns, key]);
        assert!(
            out.status.success(),
            "acknowledged write {key} lost after kill -9 of the kernel: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), value);
    }
}
