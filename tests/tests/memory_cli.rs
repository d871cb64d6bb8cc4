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
        app.sios(&[
            "memory",
            "put",
            "--namespace",
            ns,
            "--subject",
            subject,
            key,
            value,
            "--embedding",
            emb,
            "--meta",
            "source=test",
            "--json",
        ])
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
}
