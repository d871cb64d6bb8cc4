//! Issue 3, tamper tests on a real appliance's log, for the records the
//! kernel writes about itself: the operator's restart, disable and enable of
//! a brain (intent and outcome each, decided by the policy) and the
//! lifecycle events the kernel records as processes stop and start.
//!
//! For one record of each such kind, in a bundle exported through the CLI:
//! one flipped byte, and the record deleted. `sios audit verify --pubkey`
//! (offline, the appliance stopped) must exit 1 and name exactly that
//! record as the first bad one; the untouched bundle verifies.

use sios_audit::bundle::Item;
use sios_audit::record::{Kind, Record};
use sios_e2e::{
    Options, TestAppliance, bundle_items as items, require_setup, write_bundle_items as write,
};

const BRAIN: &str = "file-type";

use sios_e2e::expect_success as ok;

#[test]
fn tampering_with_any_kernel_recorded_kind_is_caught_and_the_record_named() {
    if !require_setup() {
        return;
    }
    let mut app = TestAppliance::start(Options::brains(&[BRAIN]));
    let work = app.dir.path().to_owned();
    ok(&app.sios(&["restart", BRAIN]), "restart");
    ok(&app.sios(&["brain", "disable", BRAIN]), "disable");
    ok(&app.sios(&["brain", "enable", BRAIN]), "enable");
    app.sios(&["wait", "--timeout", "60"]);
    let pubkey = work.join("operator.pub");
    let bundle = work.join("log.oar");
    ok(
        &app.sios(&["keys", "export-public", &pubkey.display().to_string()]),
        "export-public",
    );
    ok(
        &app.sios(&["audit", "export", &bundle.display().to_string()]),
        "export",
    );
    assert!(app.stop().success(), "appliance stopped cleanly");
    let (code, said) = app.audit_verify(&bundle, &pubkey);
    assert_eq!(code, Some(0), "the untouched export verifies: {said}");
    // Something other than a key given as the key (here, the bundle): a
    // usage error (2), not a verdict on the log, naming the file once.
    let (code, said) = app.audit_verify(&bundle, &bundle);
    assert_eq!(code, Some(2), "the bundle as its own key: {said}");
    let named = bundle.display().to_string();
    assert_eq!(
        said.matches(&named).count(),
        1,
        "the file named once: {said}"
    );
    assert!(said.contains("not a sios key file"), "{said}");

    // Positions of the records in the bundle, decoded.
    let all = items(&bundle);
    let records: Vec<(usize, Record)> = all
        .iter()
        .enumerate()
        .filter_map(|(at, item)| match item {
            Item::Record(bytes) => Some((at, Record::decode(bytes).unwrap())),
            _ => None,
        })
        .collect();
    // One record of each kind the kernel wrote about the brain: the
    // operator's actions on it (intent and outcome) and its lifecycle events.
    let mut kinds: Vec<(String, usize, u64)> = Vec::new();
    for (at, r) in &records {
        let about_brain =
            r.resource == format!("process:{BRAIN}") || r.resource == format!("brain:{BRAIN}");
        let kind = match &r.kind {
            Kind::Intent => "intent",
            Kind::Outcome { .. } => "outcome",
            Kind::Event => "event",
        };
        let name = format!("{kind} {} by {}", r.action, r.actor);
        if about_brain && !kinds.iter().any(|k| k.0 == name) {
            kinds.push((name, *at, r.seq));
        }
    }
    let names: Vec<&str> = kinds.iter().map(|k| k.0.as_str()).collect();
    println!("kinds tampered with: {names:#?}");
    for (wanted, what) in [
        ("intent", "restart"),
        ("outcome", "restart"),
        ("intent", "disable"),
        ("intent", "enable"),
        ("event", "by kernel"),
    ] {
        assert!(
            names
                .iter()
                .any(|n| n.starts_with(wanted) && n.contains(what)),
            "no {wanted} record for {what} among {names:#?}"
        );
    }

    for (name, at, seq) in &kinds {
        let Item::Record(bytes) = &all[*at] else {
            unreachable!()
        };
        // A flipped byte in the middle of the record.
        let mut flipped = all.clone();
        let mut changed = bytes.clone();
        let mid = changed.len() / 2;
        changed[mid] ^= 0x01;
        flipped[*at] = Item::Record(changed);
        // The record deleted.
        let mut deleted = all.clone();
        deleted.remove(*at);
        for (how, tampered) in [("flipped byte", flipped), ("deleted", deleted)] {
            let path = work.join("tampered.oar");
            write(&path, &tampered);
            let (code, said) = app.audit_verify(&path, &pubkey);
            assert_eq!(code, Some(1), "{name} ({how}): verified: {said}");
            assert!(
                said.contains(&format!("record {seq}:"))
                    || said.contains(&format!("record {seq} (")),
                "{name} at seq {seq} ({how}): the failure must name it first: {said}"
            );
        }
    }
}
