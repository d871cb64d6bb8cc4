//! OAR.md §7.2 and §8 against expectations written from the text alone.
//!
//! `services/audit/verifier-py/conformance/make_cases.py` builds about a
//! hundred damaged, forged, cut or mis-kept bundles from a real export (and
//! from small synthetic logs signed with keys of its own), each with the
//! verdict the spec requires: accepted, not a bundle, or refused by a named
//! check of §8.1 naming the record of §8.2. It also builds tampered proof
//! files, each to be found true, false, or not checkable with the key
//! given. Its author wrote the expectations from OAR.md without reading
//! sios's code. sios (`audit verify`, `audit verify-proof`) and the
//! independent verifier must each reach that verdict, and the same one as
//! each other.

use serde_json::Value;
use sios_e2e::{IndependentVerifier, bin_dir, source_tree};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One case of the manifest `make_cases.py` writes.
struct Case {
    name: String,
    kind: Kind,
    /// The bundle or proof file.
    file: PathBuf,
    pubkey: PathBuf,
    extra: Vec<String>,
    description: String,
    /// Bundles: "ok", "usage", `[check, seq]`, or null (refused by any
    /// check). Proofs: "ok", "failed" or "not-checked".
    expect: Value,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Bundle,
    Proof,
}

impl Case {
    fn from_json(v: &Value) -> Case {
        let text = |k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}"));
        let kind = match text("kind") {
            "bundle" => Kind::Bundle,
            "proof" => Kind::Proof,
            other => panic!("unknown kind of case {other:?} in {v}"),
        };
        Case {
            name: text("name").into(),
            kind,
            file: text(if kind == Kind::Bundle {
                "bundle"
            } else {
                "proof"
            })
            .into(),
            pubkey: text("pubkey").into(),
            extra: v["extra"]
                .as_array()
                .expect("extra")
                .iter()
                .map(|a| a.as_str().expect("an argument").to_owned())
                .collect(),
            description: text("description").into(),
            expect: v["expect"].clone(),
        }
    }
}

/// A verifier's verdict, reduced to what OAR.md fixes.
#[derive(Debug, PartialEq)]
enum Got {
    Ok,
    /// Exit 2: not a bundle (or another usage error).
    Usage,
    /// Exit 1: the check that failed and the record named (or null).
    Refused {
        check: Value,
        seq: Value,
    },
    /// A proof is false.
    Failed,
    /// The key given cannot check a proof (§7.2): no verdict on it.
    NotChecked,
}

/// A proof verifier's verdict: `not_checked` is its exit code for "the key
/// cannot check it" (sios: 2, with "NOT CHECKED" said; the independent
/// verifier: 3).
fn got_proof(out: &Output, who: &str, not_checked: i32) -> Result<Got, String> {
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match out.status.code() {
        Some(0) => Ok(Got::Ok),
        Some(1) => Ok(Got::Failed),
        Some(code) if code == not_checked && (code != 2 || said.contains("NOT CHECKED")) => {
            Ok(Got::NotChecked)
        }
        code => Err(format!("{who}: exit {code:?}: {said}")),
    }
}

fn got(out: &Output, who: &str) -> Result<Got, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let said = || format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let json = || -> Result<Value, String> {
        serde_json::from_str(stdout.trim())
            .map_err(|e| format!("{who} printed no JSON verdict ({e}): {}", said()))
    };
    match out.status.code() {
        Some(0) if json()?["ok"] == true => Ok(Got::Ok),
        Some(1) if json()?["ok"] == false => {
            let json = json()?;
            Ok(Got::Refused {
                check: json["check"].clone(),
                seq: json["seq"].clone(),
            })
        }
        Some(2) => Ok(Got::Usage),
        code => Err(format!(
            "{who}: exit {code:?} does not match its verdict: {}",
            said()
        )),
    }
}

fn meets(got: &Got, expect: &Value) -> bool {
    match (got, expect) {
        (Got::Ok, Value::String(s)) => s == "ok",
        (Got::Usage, Value::String(s)) => s == "usage",
        (Got::Failed, Value::String(s)) => s == "failed",
        (Got::NotChecked, Value::String(s)) => s == "not-checked",
        (Got::Refused { .. }, Value::Null) => true,
        (Got::Refused { check, seq }, Value::Array(want)) => {
            want.len() == 2 && *check == want[0] && *seq == want[1]
        }
        _ => false,
    }
}

/// Both verifiers on one case: `None` when both reach the required verdict.
fn check(case: &Case, sios: &Path, independent: &IndependentVerifier) -> Option<String> {
    let extra: Vec<&str> = case.extra.iter().map(String::as_str).collect();
    let run_sios = |args: &[&str]| {
        Command::new(sios)
            .args(args)
            .arg(&case.file)
            .arg("--pubkey")
            .arg(&case.pubkey)
            .args(&extra)
            .output()
            .expect("running sios")
    };
    let (ours, theirs) = match case.kind {
        Kind::Bundle => (
            got(
                &run_sios(&["audit", "verify", "--json"]),
                "sios audit verify",
            ),
            got(
                &independent.bundle_output(&case.file, &case.pubkey, &extra),
                "the independent verifier",
            ),
        ),
        Kind::Proof => (
            got_proof(
                &run_sios(&["audit", "verify-proof"]),
                "sios audit verify-proof",
                2,
            ),
            got_proof(
                &independent.proof_output(&case.file, &case.pubkey, &extra),
                "the independent verifier",
                3,
            ),
        ),
    };
    let fine = |g: &Result<Got, String>| g.as_ref().is_ok_and(|g| meets(g, &case.expect));
    if fine(&ours) && fine(&theirs) && ours == theirs {
        return None;
    }
    Some(format!(
        "{} ({}): OAR.md requires {}\n    sios: {ours:?}\n    independent: {theirs:?}",
        case.name, case.description, case.expect
    ))
}

#[test]
fn both_verifiers_reach_the_verdict_oar_md_requires_in_every_conformance_case() {
    let Some(independent) = IndependentVerifier::find() else {
        return;
    };
    let sios = bin_dir().join("sios");
    let work = tempfile::tempdir().expect("a temporary directory");
    let script = source_tree().join("services/audit/verifier-py/conformance/make_cases.py");
    let made = independent.python(&[script.as_os_str(), work.path().as_os_str()]);
    assert!(
        made.status.success(),
        "make_cases.py failed: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(work.path().join("cases.json")).expect("make_cases.py wrote cases.json"),
    )
    .expect("cases.json is JSON");
    let cases: Vec<Case> = manifest
        .as_array()
        .expect("a list of cases")
        .iter()
        .map(Case::from_json)
        .collect();
    assert!(cases.len() >= 120, "only {} cases", cases.len());
    // Every kind of verdict is exercised, not just refusals.
    for (kind, verdict) in [
        (Kind::Bundle, "ok"),
        (Kind::Bundle, "usage"),
        (Kind::Proof, "ok"),
        (Kind::Proof, "failed"),
        (Kind::Proof, "not-checked"),
    ] {
        assert!(
            cases.iter().any(|c| c.kind == kind && c.expect == verdict),
            "no {verdict} case"
        );
    }
    // Proofs are also checked with an export (OAR.md §7.2), both ways.
    for verdict in ["ok", "failed"] {
        assert!(
            cases.iter().any(|c| c.kind == Kind::Proof
                && c.extra.first().is_some_and(|a| a == "--bundle")
                && c.expect == verdict),
            "no {verdict} proof case with --bundle"
        );
    }

    // Two at a time: each case runs two verifier processes.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let halves: Vec<_> = [0, 1]
            .into_iter()
            .map(|half| {
                let (cases, sios, independent) = (&cases, &sios, &independent);
                scope.spawn(move || {
                    cases
                        .iter()
                        .skip(half)
                        .step_by(2)
                        .filter_map(|case| check(case, sios, independent))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        halves
            .into_iter()
            .flat_map(|h| h.join().expect("a checking thread"))
            .collect()
    });
    assert!(
        failures.is_empty(),
        "{} of {} conformance cases not met:\n  {}",
        failures.len(),
        cases.len(),
        failures.join("\n  ")
    );
}
