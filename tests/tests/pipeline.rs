//! `sios ask` and brain-to-brain calls through the kernel, with the real
//! router and domain specialists (embed_via brains that ask the embedding
//! brain through the kernel).

use serde_json::Value;
use sios_e2e::{Options, TestAppliance, require_setup};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

const BRAINS: [&str; 5] = [
    "text-embedding",
    "router",
    "legal",
    "clinical",
    "it-helpdesk",
];

#[test]
fn ask_routes_deterministically_and_names_the_brains_and_records_that_contributed() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&BRAINS));
    let question = "Either party may terminate this agreement with thirty days written notice.";
    let ask = |app: &TestAppliance| -> Value {
        let out = app.sios(&["ask", "--json", question]);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Nothing to ask about is the caller's mistake, said as such (every
    // brain would otherwise label even an empty text).
    for empty in ["", " \n\t "] {
        let out = app.sios(&["ask", empty]);
        assert!(!out.status.success());
        assert!(stderr(&out).contains("is empty"), "{}", stderr(&out));
    }
    let first = ask(&app);
    assert_eq!(first["route"][0][0], "legal", "{first:#}");
    assert_eq!(first["answers"][0]["brain"], "legal");
    assert_eq!(first["answers"][0]["label"], "termination", "{first:#}");
    let plan: Vec<&str> = first["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert_eq!(plan[0], "router");
    assert!(plan.contains(&"legal"));
    // The same input takes the same path to the same answer.
    let second = ask(&app);
    assert_eq!(first["plan"], second["plan"]);
    assert_eq!(first["route"], second["route"]);
    assert_eq!(first["answers"], second["answers"]);
    assert_eq!(first["partly_read"], serde_json::json!([]), "{first:#}");
    a_long_text_is_said_to_be_read_only_in_part(&app, question);
    // The answer names its audit records, and they are in the log: the plan
    // first, then each brain's intent and outcome, including the specialists'
    // own calls to the embedding brain, made through the kernel.
    let seqs: Vec<u64> = first["audit_seqs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_u64().unwrap())
        .collect();
    assert!(seqs.len() >= 7, "{seqs:?}");
    assert!(app.stop().success());
    let records = sios_e2e::audit_records(&app.state_dir);
    let by_seq = |seq: u64| records.iter().find(|r| r.seq == seq).unwrap();
    assert_eq!(by_seq(seqs[0]).action, "ask");
    assert!(
        by_seq(seqs[0]).detail.starts_with("plan:"),
        "{}",
        by_seq(seqs[0]).detail
    );
    let invoked: Vec<&str> = seqs.iter().map(|&s| by_seq(s).resource.as_str()).collect();
    assert!(
        invoked.contains(&"brain:router") && invoked.contains(&"brain:legal"),
        "{invoked:?}"
    );
    let brain_calls: Vec<_> = records
        .iter()
        .filter(|r| {
            r.actor == "brain:legal"
                && r.action == "brain.call"
                && r.resource == "brain:text-embedding"
        })
        .collect();
    assert!(
        !brain_calls.is_empty(),
        "legal asked the embedding brain through the kernel"
    );
    // Each call is an intent, and an outcome closes it.
    for call in brain_calls
        .iter()
        .filter(|r| r.kind == sios_audit::record::Kind::Intent)
    {
        assert!(
            records.iter().any(|r| matches!(
                r.kind,
                sios_audit::record::Kind::Outcome { intent_seq, .. } if intent_seq == call.seq
            )),
            "no outcome for the brain call in record {}",
            call.seq
        );
    }
    assert!(
        brain_calls
            .iter()
            .any(|r| r.kind == sios_audit::record::Kind::Intent),
        "{brain_calls:?}"
    );
}

/// A text longer than the brains read (256 tokens of the embedding
/// brain's model) gets an answer about its start, and says so: in `ask`'s
/// answer, and in a single invoke's response and on its standard error.
fn a_long_text_is_said_to_be_read_only_in_part(app: &TestAppliance, question: &str) {
    let long = format!("{question} ").repeat(100);
    let chars = long.chars().count() as u64;
    let out = app.sios(&["ask", "--json", &long]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let partly = answer["partly_read"].as_array().unwrap();
    let brains: Vec<&str> = partly
        .iter()
        .map(|p| p["brain"].as_str().unwrap())
        .collect();
    assert!(
        brains.contains(&"router") && brains.contains(&"legal"),
        "{answer:#}"
    );
    // Every text brain reads the same start of the text through the
    // embedding brain: the same part, a small share of the whole.
    let read = partly[0]["chars_read"].as_u64().unwrap();
    assert!(0 < read && read < chars / 4, "{read} of {chars}");
    for p in partly {
        assert_eq!(p["chars_read"].as_u64(), Some(read), "{answer:#}");
        assert_eq!(p["max_tokens"].as_u64(), Some(256), "{answer:#}");
    }
    let notes = answer["notes"].to_string();
    assert!(
        notes.contains(&format!("the text is {chars} characters long"))
            && notes.contains(&format!("its first {read} characters (256 tokens)")),
        "{notes}"
    );
    // The reading of the part is the reading of the text cut there.
    assert_eq!(answer["answers"][0]["label"], "termination", "{answer:#}");
    // A text of megabytes, more than any brain may be sent at once: each
    // brain gets its first megabyte, reads the same start, and the answer
    // says so of the whole text.
    let huge = format!("{question} ").repeat(10_000_000 / (question.len() + 1));
    let file = app.dir.path().join("huge.txt");
    std::fs::write(&file, &huge).unwrap();
    let out = app.sios(&["ask", "--json", "--file", &file.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["answers"][0]["label"], "termination", "{answer:#}");
    let partly = answer["partly_read"].as_array().unwrap();
    assert!(partly.len() >= 2, "{answer:#}");
    assert!(
        partly
            .iter()
            .all(|p| p["chars_read"].as_u64() == Some(read)),
        "{answer:#}"
    );
    assert!(
        answer["notes"].to_string().contains(&format!(
            "the text is {} characters long",
            huge.chars().count()
        )),
        "{answer:#}"
    );

    let request = serde_json::json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": [question, long]}]
    })
    .to_string();
    let out = app.sios_with_stdin(&["invoke", "legal", "--input", "-"], Some(&request));
    assert!(out.status.success(), "{}", stderr(&out));
    let response: Value = serde_json::from_slice(&out.stdout).unwrap();
    let said = response["parameters"]["sios_truncated"].as_str().unwrap();
    assert_eq!(
        said,
        format!(
            "read the first {read} of {chars} characters of `text` element 1 \
             (its model takes at most 256 tokens)"
        )
    );
    assert!(
        stderr(&out).contains(&format!("note: brain `legal` {said}")),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_brain_call_the_policy_forbids_is_refused_and_recorded() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&["text-embedding", "legal"]));
    let policy = tempfile::tempdir().unwrap();
    let default =
        std::fs::read_to_string(sios_e2e::source_tree().join("deploy/policy/default.cedar"))
            .unwrap();
    std::fs::write(
        policy.path().join("default.cedar"),
        format!(
            "{default}\n@id(\"test.legal-calls-nothing\")\nforbid (principal == Sios::Brain::\"legal\", action == Sios::Action::\"call_brain\", resource);\n"
        ),
    )
    .unwrap();
    let load = app.sios(&["policy", "load", policy.path().to_str().unwrap()]);
    assert!(load.status.success(), "{}", stderr(&load));
    let request = r#"{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"data":["The tenant shall pay rent monthly."]}]}"#;
    let out = app.sios_with_stdin(&["invoke", "legal", "--input", "-"], Some(request));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("denied") && stderr(&out).contains("test.legal-calls-nothing"),
        "{}",
        stderr(&out)
    );
    assert!(app.stop().success());
    let records = sios_e2e::audit_records(&app.state_dir);
    let denial = records
        .iter()
        .find(|r| r.actor == "brain:legal" && r.action == "brain.call")
        .expect("the refused call is on record");
    let decision = denial.decision.as_ref().expect("with its decision");
    assert!(
        format!("{decision:?}").contains("test.legal-calls-nothing"),
        "{decision:?}"
    );
}

#[test]
fn a_disabled_specialist_is_never_called_and_both_switches_are_on_record() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&BRAINS));
    let question = "Either party may terminate this agreement with thirty days written notice.";
    assert!(app.sios(&["brain", "disable", "legal"]).status.success());
    let out = app.sios(&["ask", "--json", question]);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let plan: Vec<&str> = answer["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(
        !plan.contains(&"legal"),
        "a disabled brain is not asked: {answer:#}"
    );
    let notes = answer["notes"].to_string();
    assert!(
        notes.contains("legal") && notes.contains("disabled"),
        "{notes}"
    );
    let list: Value =
        serde_json::from_slice(&app.sios(&["brain", "list", "--json"]).stdout).unwrap();
    let legal = list["brains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "legal")
        .unwrap()
        .clone();
    assert_eq!(
        (legal["state"].as_str(), legal["requests"].as_u64()),
        (Some("disabled"), Some(0))
    );

    assert!(app.sios(&["brain", "enable", "legal"]).status.success());
    let answer: Value =
        serde_json::from_slice(&app.sios(&["ask", "--json", question]).stdout).unwrap();
    assert_eq!(answer["answers"][0]["brain"], "legal", "{answer:#}");

    assert!(app.stop().success());
    let records = sios_e2e::audit_records(&app.state_dir);
    for action in ["brain_disable", "brain_enable"] {
        let intents = records
            .iter()
            .filter(|r| {
                r.action == action && r.resource == "brain:legal" && r.kind.name() == "intent"
            })
            .count();
        let outcomes = records
            .iter()
            .filter(|r| {
                r.action == action && r.resource == "brain:legal" && r.kind.name() == "outcome"
            })
            .count();
        assert_eq!((intents, outcomes), (1, 1), "{action} is on record");
    }
}

/// The `key` of each memory hit in a JSON array of hits.
fn keys_of(hits: &Value) -> Vec<&str> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["key"].as_str().unwrap())
        .collect()
}

/// Issue 6 point 6: memory stored with the embedding brain's vectors is
/// found by meaning, and `sios ask --recall` consults it on the asker's
/// behalf (embedding and search both decided and recorded as the asker's).
#[test]
fn ask_recalls_the_askers_memory_by_meaning() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&BRAINS));
    let ns = "client:ops/leases";
    let notes = [
        (
            "late-rent",
            "The tenant at unit 4 paid the rent late for three months in a row.",
        ),
        (
            "printer",
            "The office printer on floor two jams when printing double-sided.",
        ),
        (
            "notice",
            "The landlord must give sixty days notice before ending the lease.",
        ),
    ];
    for (key, text) in notes {
        let out = app.sios(&[
            "memory",
            "put",
            "--namespace",
            ns,
            "--subject",
            "tenant-4",
            key,
            text,
            "--embed",
        ]);
        assert!(out.status.success(), "put {key}: {}", stderr(&out));
        assert!(
            !stderr(&out).contains("note:"),
            "put {key}: {}",
            stderr(&out)
        );
    }
    // A note longer than the embedding brain reads is stored whole, and the
    // operator is told that its embedding stands for its start.
    let minutes = "The board discussed the lease renewal terms at length. ".repeat(60);
    let out = app.sios(&[
        "memory",
        "put",
        "--namespace",
        "client:ops/minutes",
        "--subject",
        "board",
        "board-2026",
        &minutes,
        "--embed",
    ]);
    assert!(out.status.success(), "put minutes: {}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "note: the text is {} characters long",
            minutes.chars().count()
        )) && said.contains("text-embedding its first")
            && said.contains("the embedding stands for that part only"),
        "{said}"
    );
    let out = app.sios(&[
        "memory",
        "get",
        "--namespace",
        "client:ops/minutes",
        "board-2026",
    ]);
    assert!(out.status.success(), "get minutes: {}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(minutes.trim_end()),
        "stored whole"
    );
    // Search by text: the embedding brain embeds the query; the nearest note
    // is the one about late rent, not the printer.
    let out = app.sios(&[
        "memory",
        "search",
        "--namespace",
        ns,
        "--text",
        "overdue rent payments",
        "-k",
        "3",
        "--json",
    ]);
    assert!(out.status.success(), "search: {}", stderr(&out));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    let keys = keys_of(&found["hits"]);
    assert_eq!(keys.len(), 3, "{found:#}");
    assert_eq!(keys[0], "late-rent", "{found:#}");
    assert_eq!(keys[2], "printer", "{found:#}");

    let question = "Can we end the lease of a tenant who keeps paying the rent late?";
    let out = app.sios(&["ask", "--json", "--recall", ns, "--recall-k", "2", question]);
    assert!(out.status.success(), "{}", stderr(&out));
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    let recalled = keys_of(&answer["recalled"]);
    assert_eq!(recalled.len(), 2, "{answer:#}");
    assert!(!recalled.contains(&"printer"), "{answer:#}");
    assert_eq!(
        answer["recalled"][0]["value"]["text"]
            .as_str()
            .map(|t| t.contains("sixty days") || t.contains("late")),
        Some(true),
        "{answer:#}"
    );
    let plan: Vec<&str> = answer["plan"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap())
        .collect();
    assert!(plan.contains(&"text-embedding"), "{plan:?}");
    assert!(answer["answers"].as_array().is_some_and(|a| !a.is_empty()));

    // A recall count out of range is the caller's mistake, said as such.
    let out = app.sios(&["ask", "--recall", ns, "--recall-k", "0", question]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("ask for 1 to 20"), "{}", stderr(&out));

    assert!(app.stop().success());
    // The plan recorded before anything ran names the recall step, and the
    // search is on record as the asker's memory read.
    let records = sios_e2e::audit_records(&app.state_dir);
    assert!(
        records.iter().any(|r| r.action == "ask"
            && r.detail
                .contains("memory recall (2 nearest in client:ops/leases)")),
        "the plan names the recall step"
    );
    assert!(
        records.iter().any(|r| r.actor.starts_with("uid:")
            && r.resource.contains("memory:search:client:ops/leases")),
        "the recall's search is recorded"
    );
}
