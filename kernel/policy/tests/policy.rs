//! sios-policy's tests, one binary.
//!
//! - `matrix`: allow/deny over the shipped default policy: clients of every
//!   clearance, operators, unknown callers, brains calling brains, memory
//!   namespaces (owner, other, granted), services, ill-typed requests.
//! - `semantics`: forbid overrides permit; fail closed on evaluation errors.
//! - `determinism`: same input, same decision, across runs and re-loads in
//!   shuffled file order; the per-action index changes nothing.
//! - `hash`: content hash stable under layout, comments, order; changed by
//!   meaning.
//! - `refusal`: what is refused, and that messages name file:line:column.
//! - `replay`: canonical text and bundles re-decide identically.
//! - `directory`: uid/gid → principal, the `[policy]` config table.
//! - `formats`: pinned serde encodings of what the audit log records.

use sios_policy::{
    Action, Brain, BrainKind, Client, Decision, DecisionRequest, LoadedPolicy, MemoryNamespace,
    PolicyConfig, PolicyError, PolicySource, Principal, Process, Reason, Resource, SCHEMA, Service,
    Severity,
};
use std::collections::BTreeSet;

// ---- helpers ------------------------------------------------------------------

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn default_policy() -> LoadedPolicy {
    LoadedPolicy::shipped_default().expect("the shipped default policy loads")
}

fn schema() -> PolicySource {
    PolicySource::new("sios.cedarschema", SCHEMA)
}

fn load(files: &[(&str, &str)]) -> Result<LoadedPolicy, PolicyError> {
    let sources: Vec<PolicySource> = files
        .iter()
        .map(|(n, t)| PolicySource::new(*n, *t))
        .collect();
    LoadedPolicy::from_sources(&sources, &schema())
}

/// The clients of deploy/policy/clients.example.toml, via the real mapping.
fn example_config() -> PolicyConfig {
    #[derive(serde::Deserialize)]
    struct File {
        policy: PolicyConfig,
    }
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/policy/clients.example.toml"
    ))
    .expect("clients.example.toml is readable");
    toml::from_str::<File>(&text)
        .expect("clients.example.toml parses")
        .policy
}

fn client(uid: u32, gid: u32, extra: &[u32]) -> Principal {
    example_config()
        .directory()
        .expect("the example directory is valid")
        .principal_for(uid, gid, extra)
}

fn root() -> Principal {
    client(0, 0, &[])
}
fn alice() -> Principal {
    client(1000, 1000, &[]) // confidential, clinician
}
fn bob() -> Principal {
    client(1001, 1001, &[]) // internal
}
fn carol_auditor() -> Principal {
    client(1002, 1002, &[1500]) // internal, auditors via supplementary gid
}
fn stranger() -> Principal {
    client(4242, 4242, &[])
}
/// Restricted clearance but not a clinician (built by hand).
fn dave() -> Principal {
    Principal::Client(Client {
        uid: 1003,
        gid: 1003,
        name: "dave".into(),
        clearance: 3,
        groups: BTreeSet::new(),
        operator: false,
        known: true,
    })
}

fn brain(name: &str, kind: BrainKind, sensitivity: u8, callees: &[&str], ns: &[&str]) -> Brain {
    Brain {
        name: name.into(),
        kind,
        sensitivity,
        callees: set(callees),
        namespaces: set(ns),
    }
}
fn embedding() -> Brain {
    brain("text-embedding", BrainKind::Operational, 0, &[], &[])
}
fn legal() -> Brain {
    brain(
        "legal-review",
        BrainKind::Domain,
        1,
        &["text-embedding"],
        &[],
    )
}
fn clinical() -> Brain {
    brain(
        "clinical-notes",
        BrainKind::Domain,
        2,
        &["text-embedding"],
        &["clinical-cache"],
    )
}
fn psych() -> Brain {
    brain("psych-records", BrainKind::Domain, 3, &[], &[])
}
fn triage() -> Brain {
    brain(
        "triage",
        BrainKind::Operational,
        0,
        &["clinical-notes"],
        &[],
    )
}

fn req(principal: Principal, action: Action, resource: Resource) -> DecisionRequest {
    DecisionRequest {
        principal,
        action,
        resource,
    }
}
fn invoke(p: Principal, b: Brain) -> DecisionRequest {
    req(p, Action::Invoke, Resource::Brain(b))
}
fn call(from: Brain, to: Brain) -> DecisionRequest {
    req(
        Principal::Brain(from),
        Action::CallBrain,
        Resource::Brain(to),
    )
}
fn ns(name: &str, owner: &str) -> MemoryNamespace {
    MemoryNamespace::private(name, owner)
}
fn mem(p: Principal, action: Action, n: MemoryNamespace) -> DecisionRequest {
    req(p, action, Resource::MemoryNamespace(n))
}
fn gateway() -> Principal {
    Principal::Service(Service {
        name: "gateway".into(),
    })
}

/// (request, allowed, deciding policy ids) over the shipped default policy.
fn matrix() -> Vec<(DecisionRequest, bool, Vec<&'static str>)> {
    let alice_ns = ns("alice-notes", "client:alice");
    let mut shared = ns("ward-7", "client:zed");
    shared.readers = set(&["client:bob"]);
    shared.writers = set(&["client:bob"]);
    let mut clinic = ns("clinic-shared", "client:zed");
    clinic.reader_groups = set(&["clinicians"]);
    let cache = ns("clinical-cache", "brain:clinical-notes");
    let foreign_cache = ns("clinical-cache", "client:alice");
    let process = Resource::Process(Process {
        name: "sios-memory".into(),
    });
    use Action::*;
    vec![
        // Clients invoking brains, by clearance.
        (
            invoke(alice(), embedding()),
            true,
            vec!["clients.invoke-operational"],
        ),
        (
            invoke(alice(), legal()),
            true,
            vec!["clients.invoke-domain"],
        ),
        (
            invoke(alice(), clinical()),
            true,
            vec!["clients.invoke-domain"],
        ),
        (
            invoke(alice(), psych()),
            false,
            vec!["clients.domain-above-clearance"],
        ),
        (
            invoke(bob(), embedding()),
            true,
            vec!["clients.invoke-operational"],
        ),
        (invoke(bob(), legal()), true, vec!["clients.invoke-domain"]),
        // Two forbids apply: above clearance, and not a clinician.
        (
            invoke(bob(), clinical()),
            false,
            vec!["clients.domain-above-clearance", "clinical.clinicians-only"],
        ),
        (
            invoke(bob(), psych()),
            false,
            vec!["clients.domain-above-clearance"],
        ),
        // Cleared for everything, but a group rule still forbids.
        (invoke(dave(), psych()), true, vec!["clients.invoke-domain"]),
        (
            invoke(dave(), clinical()),
            false,
            vec!["clinical.clinicians-only"],
        ),
        // Unknown callers get nothing but status.
        (invoke(stranger(), embedding()), false, vec![]),
        (
            invoke(stranger(), legal()),
            false,
            vec!["clients.domain-above-clearance"],
        ),
        (
            req(stranger(), Status, Resource::Appliance),
            true,
            vec!["everyone.status"],
        ),
        // Operators do everything.
        (
            invoke(root(), psych()),
            true,
            vec!["clients.invoke-domain", "operators.everything"],
        ),
        (
            invoke(root(), clinical()),
            true,
            vec!["clients.invoke-domain", "operators.everything"],
        ),
        (
            req(root(), Restart, process.clone()),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), Restart, Resource::Brain(legal())),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), PolicyLoad, Resource::Appliance),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), KeyRotate, Resource::Appliance),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), BrainDisable, Resource::Brain(psych())),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), BrainEnable, Resource::Brain(psych())),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), AuditRead, Resource::AuditLog),
            true,
            vec!["operators.everything"],
        ),
        (
            req(root(), Status, Resource::Appliance),
            true,
            vec!["everyone.status", "operators.everything"],
        ),
        (
            mem(root(), MemoryExport, alice_ns.clone()),
            true,
            vec!["operators.everything"],
        ),
        (
            mem(root(), MemoryErase, alice_ns.clone()),
            true,
            vec!["operators.everything"],
        ),
        // ... and nobody else does operator things.
        (req(alice(), Restart, process.clone()), false, vec![]),
        (req(alice(), PolicyLoad, Resource::Appliance), false, vec![]),
        (req(bob(), KeyRotate, Resource::Appliance), false, vec![]),
        (
            req(dave(), BrainDisable, Resource::Brain(psych())),
            false,
            vec![],
        ),
        (req(stranger(), Restart, process), false, vec![]),
        // Audit log: auditors (by supplementary gid) and operators.
        (
            req(carol_auditor(), AuditRead, Resource::AuditLog),
            true,
            vec!["auditors.read-audit-log"],
        ),
        (req(alice(), AuditRead, Resource::AuditLog), false, vec![]),
        (req(gateway(), AuditRead, Resource::AuditLog), false, vec![]),
        // Brains call exactly the brains their manifests name.
        (
            call(clinical(), embedding()),
            true,
            vec!["brains.call-declared-callees"],
        ),
        (
            call(triage(), clinical()),
            true,
            vec!["brains.call-declared-callees"],
        ),
        (call(clinical(), psych()), false, vec![]),
        (call(embedding(), clinical()), false, vec![]),
        (call(legal(), legal()), false, vec![]),
        // Memory: private to the owner ...
        (
            mem(alice(), MemoryRead, alice_ns.clone()),
            true,
            vec!["memory.owner"],
        ),
        (
            mem(alice(), MemoryWrite, alice_ns.clone()),
            true,
            vec!["memory.owner"],
        ),
        (
            mem(alice(), MemoryErase, alice_ns.clone()),
            true,
            vec!["memory.owner"],
        ),
        (
            mem(alice(), MemoryExport, alice_ns.clone()),
            true,
            vec!["memory.owner"],
        ),
        (mem(bob(), MemoryRead, alice_ns.clone()), false, vec![]),
        (mem(bob(), MemoryWrite, alice_ns.clone()), false, vec![]),
        (mem(dave(), MemoryRead, alice_ns.clone()), false, vec![]),
        (
            mem(Principal::Brain(clinical()), MemoryRead, alice_ns),
            false,
            vec![],
        ),
        // ... unless granted, and only what is granted.
        (
            mem(bob(), MemoryRead, shared.clone()),
            true,
            vec!["memory.granted-read"],
        ),
        (
            mem(bob(), MemoryWrite, shared.clone()),
            true,
            vec!["memory.granted-write"],
        ),
        (mem(bob(), MemoryErase, shared.clone()), false, vec![]),
        (mem(bob(), MemoryExport, shared.clone()), false, vec![]),
        (mem(alice(), MemoryRead, shared), false, vec![]),
        (
            mem(alice(), MemoryRead, clinic.clone()),
            true,
            vec!["memory.group-read"],
        ),
        (mem(alice(), MemoryWrite, clinic.clone()), false, vec![]),
        (mem(bob(), MemoryRead, clinic), false, vec![]),
        // Brains: their own namespace, and the ones their manifest names.
        (
            mem(Principal::Brain(clinical()), MemoryRead, cache.clone()),
            true,
            vec!["memory.brain-manifest", "memory.owner"],
        ),
        (
            mem(
                Principal::Brain(clinical()),
                MemoryWrite,
                foreign_cache.clone(),
            ),
            true,
            vec!["memory.brain-manifest"],
        ),
        (
            mem(Principal::Brain(clinical()), MemoryErase, foreign_cache),
            false,
            vec![],
        ),
        (
            mem(Principal::Brain(legal()), MemoryRead, cache),
            false,
            vec![],
        ),
        // Services and brains may ask for status, nothing else by default.
        (
            req(gateway(), Status, Resource::Appliance),
            true,
            vec!["everyone.status"],
        ),
        (
            req(Principal::Brain(triage()), Status, Resource::Appliance),
            true,
            vec!["everyone.status"],
        ),
        (invoke(gateway(), embedding()), false, vec![]),
    ]
}

// ---- matrix ---------------------------------------------------------------------

/// The kernel shares one loaded policy between threads.
#[test]
fn a_loaded_policy_can_be_shared_between_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<LoadedPolicy>();
    let policy = std::sync::Arc::new(default_policy());
    let want = policy.decide(&invoke(alice(), legal()));
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let p = policy.clone();
            std::thread::spawn(move || p.decide(&invoke(alice(), legal())))
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), want);
    }
}

#[test]
fn matrix_over_the_default_policy() {
    let policy = default_policy();
    let mut failures = Vec::new();
    for (r, allowed, ids) in matrix() {
        let d = policy.decide(&r);
        let ids: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
        if d.allowed != allowed || d.policy_ids != ids || !d.errors.is_empty() {
            failures.push(format!(
                "{:?} by {:?} on {:?}: got {d:?}, want allowed={allowed} ids={ids:?}",
                r.action, r.principal, r.resource
            ));
        }
        assert_eq!(d.policy_hash, policy.content_hash());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_request_that_does_not_fit_the_schema_is_denied_with_an_error() {
    let policy = default_policy();
    // Clients do not call brains; brains do not restart processes. Even an
    // operator's request is denied if it makes no sense.
    for r in [
        req(root(), Action::CallBrain, Resource::Brain(legal())),
        req(
            Principal::Brain(triage()),
            Action::Restart,
            Resource::Brain(legal()),
        ),
        req(root(), Action::Invoke, Resource::AuditLog),
    ] {
        let d = policy.decide(&r);
        assert!(!d.allowed, "{r:?}");
        assert_eq!(d.errors.len(), 1, "{d:?}");
        assert!(d.errors[0].contains("does not fit the schema"), "{d:?}");
    }
}

#[test]
fn a_brain_described_twice_differently_is_denied() {
    let policy = default_policy();
    let mut other = clinical();
    other.sensitivity = 0;
    let d = policy.decide(&call(clinical(), other));
    assert!(!d.allowed);
    assert!(d.errors[0].contains("twice"), "{d:?}");
    // The same brain, described identically, is one entity: a self-call the
    // manifest does not name is simply not permitted.
    let d = policy.decide(&call(clinical(), clinical()));
    assert_eq!((d.allowed, d.errors.len()), (false, 0));
}

#[test]
fn explain_names_the_deciding_policies() {
    let policy = default_policy();
    let e = policy.explain(&invoke(bob(), clinical()));
    assert_eq!(e.reason, Reason::Forbidden);
    assert_eq!(e.decision, policy.decide(&invoke(bob(), clinical())));
    let ids: Vec<&str> = e.policies.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        ["clients.domain-above-clearance", "clinical.clinicians-only"]
    );
    assert!(e.policies.iter().all(|p| p.effect == "forbid"));
    let shown = e.to_string();
    assert!(shown.starts_with("DENY invoke by client bob"), "{shown}");
    assert!(
        shown.contains("forbidden by clients.domain-above-clearance, clinical.clinicians-only")
    );
    assert!(shown.contains(policy.content_hash()));

    let e = policy.explain(&invoke(stranger(), embedding()));
    assert_eq!(e.reason, Reason::NoPermit);
    assert!(e.to_string().contains("default deny"));

    let e = policy.explain(&invoke(alice(), embedding()));
    assert_eq!(e.reason, Reason::Permitted);
    assert!(e.to_string().starts_with("ALLOW invoke by client alice"));
    assert!(
        e.policies[0]
            .text
            .contains("@id(\"clients.invoke-operational\")")
    );
}

// ---- semantics ----------------------------------------------------------------

#[test]
fn forbid_overrides_permit() {
    let policy = load(&[(
        "p.cedar",
        r#"
        @id("all") permit (principal is Sios::Client, action, resource);
        @id("no-bob") forbid (principal, action, resource) when { principal.id == "client:bob" };
        "#,
    )])
    .unwrap();
    let d = policy.decide(&invoke(alice(), psych()));
    assert_eq!(
        (d.allowed, d.policy_ids.clone()),
        (true, vec!["all".to_owned()])
    );
    let d = policy.decide(&invoke(bob(), embedding()));
    assert_eq!(
        (d.allowed, d.policy_ids.clone()),
        (false, vec!["no-bob".to_owned()])
    );
    assert!(d.errors.is_empty());
}

/// Regression guard for the reason sios exists as a wrapper at all: Cedar
/// skips a policy whose evaluation errors, so an erroring `forbid` lets the
/// request through. sios denies.
#[test]
fn a_forbid_that_errors_denies_overflow() {
    let text = r#"
        @id("all") permit (principal is Sios::Client, action, resource);
        @id("overflowing-forbid")
        forbid (principal is Sios::Client, action, resource)
        when { principal.clearance + 9223372036854775807 > 0 };
    "#;
    let policy = load(&[("p.cedar", text)]).unwrap();
    // clearance 0: no overflow, the forbid applies.
    let d = policy.decide(&invoke(stranger(), embedding()));
    assert!(!d.allowed);
    assert_eq!(d.policy_ids, ["overflowing-forbid"]);
    assert!(d.errors.is_empty());
    // clearance 2: the addition overflows; the request is still denied, and
    // the decision names the policy and the error.
    let d = policy.decide(&invoke(alice(), embedding()));
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, ["overflowing-forbid"]);
    assert_eq!(d.errors.len(), 1);
    assert!(d.errors[0].contains("overflow"), "{d:?}");
    assert_eq!(
        policy.explain(&invoke(alice(), embedding())).reason,
        Reason::Error
    );

    // Plain Cedar, same policies and request, allows it: that is the hole.
    use cedar_policy::{Authorizer, Context, Entities, PolicySet, Request};
    let pset: PolicySet = text.parse().unwrap();
    let schema: cedar_policy::Schema = SCHEMA.parse().unwrap();
    let entities = Entities::from_json_value(
        serde_json::json!([
            {"uid": {"type": "Sios::Client", "id": "alice"}, "parents": [], "attrs": {
                "id": "client:alice", "uid": 1000, "gid": 1000, "name": "alice",
                "clearance": 2, "groups": [], "operator": false, "known": true}},
            {"uid": {"type": "Sios::Brain", "id": "text-embedding"}, "parents": [], "attrs": {
                "id": "brain:text-embedding", "name": "text-embedding", "kind": "operational",
                "sensitivity": 0, "callees": [], "namespaces": []}}
        ]),
        Some(&schema),
    )
    .unwrap();
    let request = Request::new(
        r#"Sios::Client::"alice""#.parse().unwrap(),
        r#"Sios::Action::"invoke""#.parse().unwrap(),
        r#"Sios::Brain::"text-embedding""#.parse().unwrap(),
        Context::empty(),
        Some(&schema),
    )
    .unwrap();
    let raw = Authorizer::new().is_authorized(&request, &pset, &entities);
    assert_eq!(raw.decision(), cedar_policy::Decision::Allow);
    assert_eq!(raw.diagnostics().errors().count(), 1);
}

/// The same hole through another runtime error: reading an attribute of an
/// entity the request does not carry (the validator cannot see that).
#[test]
fn a_forbid_that_errors_denies_missing_entity() {
    let policy = load(&[(
        "p.cedar",
        r#"
        @id("all") permit (principal is Sios::Client, action, resource);
        @id("ghost-forbid")
        forbid (principal is Sios::Client, action, resource)
        when { Sios::Brain::"ghost".sensitivity > principal.clearance };
        "#,
    )])
    .unwrap();
    let d = policy.decide(&invoke(alice(), embedding()));
    assert!(!d.allowed, "{d:?}");
    assert_eq!(d.policy_ids, ["ghost-forbid"]);
    assert!(d.errors[0].contains("ghost"), "{d:?}");
}

/// A permit that errors next to one that applies: still a deny (any error
/// anywhere), naming the failing permit rather than the one that applied.
#[test]
fn an_erroring_permit_also_denies() {
    let policy = load(&[(
        "p.cedar",
        r#"
        @id("ok") permit (principal is Sios::Client, action, resource);
        @id("broken") permit (principal is Sios::Client, action, resource)
        when { principal.uid * 9223372036854775807 > 0 };
        "#,
    )])
    .unwrap();
    let d = policy.decide(&invoke(alice(), embedding()));
    assert!(!d.allowed);
    assert_eq!(d.policy_ids, ["broken"]);
    assert_eq!(d.errors.len(), 1);
}

// ---- determinism ----------------------------------------------------------------

/// Splits default.cedar into one file per policy (keeping each one's comments).
fn split_default() -> Vec<(String, String)> {
    let mut files = Vec::new();
    let mut current = String::new();
    for line in sios_policy::DEFAULT_POLICY.lines() {
        if line.starts_with("@id(") && current.contains("@id(") {
            files.push(std::mem::take(&mut current));
        }
        current.push_str(line);
        current.push('\n');
    }
    files.push(current);
    files
        .into_iter()
        .enumerate()
        .map(|(i, t)| (format!("part-{i:02}.cedar"), t))
        .collect()
}

/// A small deterministic shuffle (no randomness in tests either).
fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in (1..items.len()).rev() {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = usize::try_from((x >> 33) % (i as u64 + 1)).unwrap();
        items.swap(i, j);
    }
}

#[test]
fn same_request_same_decision_1000_times() {
    let policy = default_policy();
    let requests: Vec<DecisionRequest> = matrix().into_iter().map(|(r, _, _)| r).collect();
    let first: Vec<Decision> = requests.iter().map(|r| policy.decide(r)).collect();
    for _ in 0..1000 {
        for (r, want) in requests.iter().zip(&first) {
            assert_eq!(&policy.decide(r), want);
        }
    }
    // Including failing decisions, whose errors come from a hash set in Cedar.
    let failing = load(&[(
        "p.cedar",
        r#"
        @id("a") forbid (principal is Sios::Client, action, resource) when { principal.uid * 9223372036854775807 > 0 };
        @id("b") forbid (principal is Sios::Client, action, resource) when { principal.gid * 9223372036854775807 > 0 };
        @id("c") permit (principal is Sios::Client, action, resource) when { principal.uid + 9223372036854775807 > 0 };
        "#,
    )])
    .unwrap();
    let want = failing.decide(&invoke(alice(), embedding()));
    assert_eq!(want.policy_ids, ["a", "b", "c"]);
    assert_eq!(want.errors.len(), 3);
    for _ in 0..1000 {
        assert_eq!(failing.decide(&invoke(alice(), embedding())), want);
    }
}

#[test]
fn reloads_in_shuffled_file_order_decide_identically() {
    let reference = default_policy();
    let requests: Vec<DecisionRequest> = matrix().into_iter().map(|(r, _, _)| r).collect();
    let want: Vec<Decision> = requests.iter().map(|r| reference.decide(r)).collect();
    let files = split_default();
    assert!(
        files.len() >= 10,
        "default.cedar should split into many files"
    );
    for seed in 0..20 {
        let mut files = files.clone();
        shuffle(&mut files, seed);
        // Rename too, so that the sorted file order changes with the seed.
        let renamed: Vec<(String, String)> = files
            .into_iter()
            .enumerate()
            .map(|(i, (_, t))| (format!("{i:02}.cedar"), t))
            .collect();
        let refs: Vec<(&str, &str)> = renamed
            .iter()
            .map(|(n, t)| (n.as_str(), t.as_str()))
            .collect();
        let policy = load(&refs).unwrap();
        assert_eq!(policy.content_hash(), reference.content_hash());
        assert_eq!(policy.text(), reference.text());
        for (r, w) in requests.iter().zip(&want) {
            assert_eq!(&policy.decide(r), w);
        }
    }
}

#[test]
fn the_per_action_index_changes_no_decision() {
    // The default policy, plus policies that use action groups and lists.
    let extra = r#"
        @id("x.admin-group") permit (principal is Sios::Client, action in Sios::Action::"admin", resource)
          when { principal.name == "bob" };
        @id("x.memory-list") forbid (principal, action in [Sios::Action::"memory_erase", Sios::Action::"memory_export"], resource)
          when { principal.id == "client:alice" };
        @id("x.any") forbid (principal is Sios::Client, action, resource) when { principal.uid == 1003 };
        @id("x.legal-bob") forbid (principal == Sios::Client::"bob", action, resource == Sios::Brain::"legal-review");
        @id("x.legal-for-dave") permit (principal, action == Sios::Action::"invoke", resource in Sios::Brain::"legal-review")
          when { principal has clearance && principal.clearance == 3 };
        @id("x.alice-anything") permit (principal is Sios::Client in Sios::Client::"alice", action, resource is Sios::Brain);
        @id("x.triage-calls") forbid (principal == Sios::Brain::"triage", action, resource);
        @id("x.ns") permit (principal in Sios::Client::"bob", action == Sios::Action::"memory_read", resource == Sios::MemoryNamespace::"alice-notes");
        @id("x.other-type") forbid (principal in Sios::Brain::"legal-review", action == Sios::Action::"status", resource);
    "#;
    let policy = load(&[
        ("default.cedar", sios_policy::DEFAULT_POLICY),
        ("extra.cedar", extra),
    ])
    .unwrap();
    let mut requests: Vec<DecisionRequest> = matrix().into_iter().map(|(r, _, _)| r).collect();
    // Every action for a few principals and resources, sensible or not.
    let resources = [
        Resource::Brain(legal()),
        Resource::AuditLog,
        Resource::Appliance,
        Resource::MemoryNamespace(ns("alice-notes", "client:alice")),
        Resource::Process(Process { name: "p".into() }),
    ];
    for p in [
        alice(),
        bob(),
        dave(),
        root(),
        stranger(),
        Principal::Brain(triage()),
        Principal::Brain(legal()),
        gateway(),
    ] {
        for a in Action::ALL {
            for r in &resources {
                requests.push(req(p.clone(), a, r.clone()));
            }
        }
    }
    let mut allowed = 0;
    for r in &requests {
        let d = policy.decide(r);
        assert_eq!(d, policy.decide_unindexed(r), "{r:?}");
        allowed += usize::from(d.allowed);
    }
    assert!(
        allowed > 50,
        "the comparison should cover allows too ({allowed})"
    );
    // The uid-specific rules do what they say.
    let d = policy.decide(&invoke(bob(), legal()));
    assert_eq!(
        (d.allowed, d.policy_ids),
        (false, vec!["x.legal-bob".to_owned()])
    );
    let d = policy.decide(&req(
        Principal::Brain(triage()),
        Action::Status,
        Resource::Appliance,
    ));
    assert_eq!(
        (d.allowed, d.policy_ids),
        (false, vec!["x.triage-calls".to_owned()])
    );
    let d = policy.decide(&mem(
        bob(),
        Action::MemoryRead,
        ns("alice-notes", "client:alice"),
    ));
    assert_eq!((d.allowed, d.policy_ids), (true, vec!["x.ns".to_owned()]));
    let d = policy.decide(&req(
        alice(),
        Action::BrainDisable,
        Resource::Brain(psych()),
    ));
    assert_eq!(
        (d.allowed, d.policy_ids),
        (true, vec!["x.alice-anything".to_owned()])
    );
    // The group rule does what it says.
    let d = policy.decide(&req(bob(), Action::KeyRotate, Resource::Appliance));
    assert_eq!(d.policy_ids, ["x.admin-group"]);
    let d = policy.decide(&mem(alice(), Action::MemoryErase, ns("a", "client:alice")));
    assert_eq!(
        (d.allowed, d.policy_ids),
        (false, vec!["x.memory-list".to_owned()])
    );
}

// ---- hash -------------------------------------------------------------------------

const BASE: &str = r#"
// Two rules.
@id("a")
permit (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { resource.sensitivity <= principal.clearance };

@id("b")
forbid (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { resource.name like "clinical-*" }
unless { principal.groups.contains("clinicians") };
"#;

fn hash_of(files: &[(&str, &str)]) -> String {
    load(files).unwrap().content_hash().to_owned()
}

#[test]
fn content_hash_is_stable_under_layout_comments_and_order() {
    let base = hash_of(&[("p.cedar", BASE)]);
    assert!(
        base.starts_with("sha256:") && base.len() == 7 + 64,
        "{base}"
    );
    let same = [
        // Layout squeezed, comments gone.
        r#"@id("a") permit(principal is Sios::Client,action==Sios::Action::"invoke",resource is Sios::Brain) when {resource.sensitivity<=principal.clearance};
@id("b") forbid(principal is Sios::Client,action==Sios::Action::"invoke",resource is Sios::Brain) when {resource.name like "clinical-*"} unless {principal.groups.contains("clinicians")};"#,
        // Order swapped, comments added, redundant parentheses.
        r#"
// b first
@id("b")
forbid (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { (resource.name like "clinical-*") }   // trailing comment
unless { ((principal.groups.contains("clinicians"))) };
// then a
@id("a") permit (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { ((resource.sensitivity <= principal.clearance)) };
"#,
        // principal["attr"] is principal.attr.
        r#"
@id("a") permit (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { resource["sensitivity"] <= principal["clearance"] };
@id("b") forbid (principal is Sios::Client, action == Sios::Action::"invoke", resource is Sios::Brain)
when { resource.name like "clinical-*" } unless { principal.groups.contains("clinicians") };
"#,
    ];
    for (i, text) in same.iter().enumerate() {
        assert_eq!(hash_of(&[("p.cedar", text)]), base, "variant {i}");
    }
    // Split across files, in either order and under any names.
    let (a, b) = BASE.split_at(BASE.find("@id(\"b\")").unwrap());
    assert_eq!(hash_of(&[("1.cedar", a), ("2.cedar", b)]), base);
    assert_eq!(hash_of(&[("1.cedar", b), ("2.cedar", a)]), base);
    assert_eq!(hash_of(&[("z.cedar", a), ("a.cedar", b)]), base);
    // The schema's comments and layout do not count either.
    let reformatted_schema = SCHEMA.replace("  ", "\t").replace("// ", "// note: ");
    let p = LoadedPolicy::from_sources(
        &[PolicySource::new("p.cedar", BASE)],
        &PolicySource::new("s", reformatted_schema),
    )
    .unwrap();
    assert_eq!(p.content_hash(), base);
}

#[test]
fn content_hash_changes_with_meaning() {
    let base = hash_of(&[("p.cedar", BASE)]);
    let changes = [
        ("<= to <", BASE.replace("<= principal", "< principal")),
        ("string literal", BASE.replace("clinical-*", "clinic-*")),
        ("forbid to permit", BASE.replace("forbid", "permit")),
        (
            "unless dropped",
            BASE.replace("unless { principal.groups.contains(\"clinicians\") }", ""),
        ),
        ("an @id", BASE.replace("@id(\"b\")", "@id(\"c\")")),
        (
            "another annotation",
            BASE.replace("@id(\"b\")", "@id(\"b\") @reason(\"x\")"),
        ),
        (
            "an attribute",
            BASE.replace("principal.clearance", "principal.uid"),
        ),
        (
            "a policy dropped",
            BASE[..BASE.find("@id(\"b\")").unwrap()].to_owned(),
        ),
        (
            "a policy added",
            format!(
                "{BASE}\n@id(\"c\") permit (principal, action == Sios::Action::\"status\", resource);"
            ),
        ),
    ];
    let mut seen = BTreeSet::from([base.clone()]);
    for (what, text) in &changes {
        assert_ne!(text, BASE, "{what}");
        let h = hash_of(&[("p.cedar", text)]);
        assert!(seen.insert(h), "changing {what} did not change the hash");
    }
    // A change of schema meaning changes it too (an extra declared action).
    let schema = SCHEMA.replace(
        "action status",
        "action reboot appliesTo { principal: Client, resource: Appliance };\n  action status",
    );
    let p = LoadedPolicy::from_sources(
        &[PolicySource::new("p.cedar", BASE)],
        &PolicySource::new("s", schema),
    )
    .unwrap();
    assert_ne!(p.content_hash(), base);
}

/// Hashes in audit logs depend on this form. It is Cedar's own printer
/// (cedar-policy pinned to 4.14.1); if an upgrade changes it, old logs no
/// longer replay to the same hash, and this test says so first.
#[test]
fn the_canonical_form_is_pinned() {
    let p = load(&[("p.cedar", BASE)]).unwrap();
    assert_eq!(
        p.text(),
        r#"@id("a")
permit(
  principal is Sios::Client,
  action == Sios::Action::"invoke",
  resource is Sios::Brain
) when {
  resource.sensitivity <= principal.clearance
};

@id("b")
forbid(
  principal is Sios::Client,
  action == Sios::Action::"invoke",
  resource is Sios::Brain
) when {
  (resource.name like "clinical-*") && (!principal.groups.contains("clinicians"))
};
"#
    );
}

#[test]
fn canonical_text_is_a_fixed_point() {
    let policy = default_policy();
    let again = LoadedPolicy::from_text(policy.text(), SCHEMA).unwrap();
    assert_eq!(again.text(), policy.text());
    assert_eq!(again.content_hash(), policy.content_hash());
    assert_eq!(again.policy_ids(), policy.policy_ids());
    assert!(!policy.text().contains("//"), "comments are not canonical");
}

// ---- refusal ----------------------------------------------------------------------

fn refused(files: &[(&str, &str)]) -> PolicyError {
    match load(files) {
        Ok(p) => panic!("loaded, but should be refused: {p:?}"),
        Err(e) => e,
    }
}

#[test]
fn a_validation_error_is_refused_with_file_line_and_column() {
    let text = "@id(\"ok\") permit (principal, action == Sios::Action::\"status\", resource);\n\n\
                @id(\"typo\")\npermit (principal is Sios::Client, action, resource)\n  when { principal.clearence > 1 };\n";
    let e = refused(&[
        ("ok.cedar", sios_policy::DEFAULT_POLICY),
        ("mine.cedar", text),
    ]);
    let msg = e.to_string();
    assert!(msg.starts_with("policy refused, 1 problem:"), "{msg}");
    assert!(msg.contains("mine.cedar:5:10: error:"), "{msg}");
    assert!(msg.contains("clearence"), "{msg}");
    assert!(msg.contains("did you mean `clearance`?"), "{msg}");
    let p = &e.problems()[0];
    assert_eq!(
        (p.file.as_str(), p.line, p.column),
        ("mine.cedar", Some(5), Some(10))
    );
    assert_eq!(p.severity, Severity::Error);
}

#[test]
fn a_parse_error_is_refused_with_its_place() {
    let e = refused(&[(
        "p.cedar",
        "@id(\"a\")\npermit (principal, action, resource)\nwhen { principal.id == };\n",
    )]);
    let p = &e.problems()[0];
    assert_eq!((p.line, p.severity), (Some(3), Severity::Error));
    assert!(e.to_string().contains("p.cedar:3:"), "{e}");
}

#[test]
fn a_warning_only_policy_set_is_refused() {
    // Type-correct, but can never apply: clients never call brains. Cedar's
    // validator passes it with warnings only.
    let text = "@id(\"never\")\npermit (principal is Sios::Client, action == Sios::Action::\"call_brain\", resource);\n";
    let pset: cedar_policy::PolicySet = text.parse().unwrap();
    let schema: cedar_policy::Schema = SCHEMA.parse().unwrap();
    let result =
        cedar_policy::Validator::new(schema).validate(&pset, cedar_policy::ValidationMode::Strict);
    assert!(result.validation_passed(), "Cedar itself lets it pass");
    assert!(result.validation_warnings().count() > 0);

    let e = refused(&[("never.cedar", text)]);
    assert!(!e.problems().is_empty());
    assert!(e.problems().iter().all(|p| p.severity == Severity::Warning));
    assert!(
        e.to_string()
            .contains("never.cedar:1:1: warning (refused):"),
        "{e}"
    );
    assert!(e.to_string().contains("impossible"), "{e}");
}

#[test]
fn policies_without_ids_duplicates_and_templates_are_refused() {
    let e = refused(&[(
        "p.cedar",
        "@id(\"a\") permit (principal, action, resource);\n\npermit (principal, action, resource);\n",
    )]);
    assert!(
        e.to_string()
            .contains("p.cedar:3:1: error: this policy has no @id"),
        "{e}"
    );

    let e = refused(&[
        (
            "a.cedar",
            "@id(\"same\") permit (principal, action == Sios::Action::\"status\", resource);\n",
        ),
        (
            "b.cedar",
            "\n@id(\"same\") forbid (principal, action == Sios::Action::\"status\", resource);\n",
        ),
    ]);
    assert!(
        e.to_string().contains(
            "b.cedar:2:1: error: @id(\"same\") is already used by the policy at a.cedar:1"
        ),
        "{e}"
    );

    let e = refused(&[(
        "p.cedar",
        "@id(\"bad id\") permit (principal, action, resource);",
    )]);
    assert!(e.to_string().contains("not a usable policy id"), "{e}");

    let e = refused(&[(
        "p.cedar",
        "@id(\"t\") permit (principal == ?principal, action, resource);",
    )]);
    assert!(e.to_string().contains("template"), "{e}");

    let e = refused(&[("p.cedar", "// nothing but a comment\n")]);
    assert!(e.to_string().contains("no policies"), "{e}");
}

#[test]
fn a_bad_schema_is_refused() {
    let bad = [
        // Not a schema.
        (
            SCHEMA.replace(
                "id: String,          // principal id: \"client:<name>\"",
                "id: Strin,",
            ),
            "failed to resolve type",
        ),
        // Missing an attribute the kernel sends.
        (
            SCHEMA.replace("known: Bool,", ""),
            "does not describe what the kernel sends",
        ),
        // Asking for a context the kernel does not send.
        (
            SCHEMA.replace(
                "    resource: Appliance,\n  };\n}",
                "    resource: Appliance,\n    context: { reason: String },\n  };\n}",
            ),
            "an empty context",
        ),
        // Missing an action the kernel asks about.
        (
            SCHEMA.replace("action status appliesTo", "action statuz appliesTo"),
            "does not declare Sios::Action::\"status\"",
        ),
    ];
    for (schema, want) in bad {
        assert_ne!(schema, SCHEMA);
        let e = LoadedPolicy::from_sources(
            &[PolicySource::new(
                "p.cedar",
                "@id(\"a\") permit (principal, action, resource);",
            )],
            &PolicySource::new("bad.cedarschema", schema),
        )
        .unwrap_err();
        assert!(e.to_string().contains(want), "want {want:?} in: {e}");
        assert!(e.to_string().contains("bad.cedarschema"), "{e}");
    }
}

#[test]
fn load_dir_reads_sorted_cedar_files_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in split_default() {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    std::fs::write(dir.path().join("README.md"), "not policy").unwrap();
    // No schema in the directory: the built-in one.
    let p = LoadedPolicy::load_dir(dir.path()).unwrap();
    assert_eq!(p.content_hash(), default_policy().content_hash());
    // A schema in the directory is used (here: the same text, reformatted).
    std::fs::write(
        dir.path().join("sios.cedarschema"),
        SCHEMA.replace("  ", "    "),
    )
    .unwrap();
    let p = LoadedPolicy::load_dir(dir.path()).unwrap();
    assert_eq!(p.content_hash(), default_policy().content_hash());
    assert_eq!(p.schema_text(), SCHEMA.replace("  ", "    "));
    // Or given separately.
    let schema_file = dir.path().join("elsewhere.cedarschema");
    std::fs::write(&schema_file, SCHEMA).unwrap();
    let p = LoadedPolicy::load_dir_with_schema(dir.path(), &schema_file).unwrap();
    assert_eq!(p.content_hash(), default_policy().content_hash());

    // An error names the file by its path.
    std::fs::write(
        dir.path().join("zz-broken.cedar"),
        "@id(\"z\")\npermit (principal, action, resource) when { nope };\n",
    )
    .unwrap();
    let e = LoadedPolicy::load_dir(dir.path()).unwrap_err();
    let path = dir.path().join("zz-broken.cedar").display().to_string();
    assert!(e.to_string().contains(&format!("{path}:2:")), "{e}");

    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        LoadedPolicy::load_dir(empty.path()),
        Err(PolicyError::NoPolicies { .. })
    ));
    assert!(matches!(
        LoadedPolicy::load_dir(&empty.path().join("missing")),
        Err(PolicyError::Read { .. })
    ));

    // One file named instead of its directory: refused, naming the directory.
    let one_file = dir.path().join("zz-broken.cedar");
    let e = LoadedPolicy::load_dir(&one_file).unwrap_err();
    assert!(matches!(e, PolicyError::NotADirectory { .. }), "{e:?}");
    let parent = format!("`{}`", dir.path().display());
    assert!(e.to_string().contains(&parent), "{e}");
}

#[test]
fn the_shipped_files_are_what_is_built_in() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/policy");
    let p = LoadedPolicy::load_dir(std::path::Path::new(dir)).unwrap();
    assert_eq!(p.content_hash(), default_policy().content_hash());
    assert_eq!(p.schema_text(), SCHEMA);
}

// ---- replay ---------------------------------------------------------------------

#[test]
fn replay_from_the_canonical_text_gives_the_same_decisions() {
    let policy = default_policy();
    let text = policy.text().to_owned();
    let schema_text = policy.schema_text().to_owned();
    let reloaded = LoadedPolicy::from_text(&text, &schema_text).unwrap();
    for (r, _, _) in matrix() {
        // Through the serialized request, as replay reads it from the log.
        let stored = serde_json::to_string(&r).unwrap();
        let r2: DecisionRequest = serde_json::from_str(&stored).unwrap();
        assert_eq!(r2, r);
        let want = policy.decide(&r);
        assert_eq!(reloaded.decide(&r2), want);
        assert_eq!(sios_policy::replay(&text, &schema_text, &r2).unwrap(), want);
    }
}

#[test]
fn bundles_round_trip_and_detect_tampering() {
    let policy = default_policy();
    let bundle = policy.bundle();
    assert_eq!(bundle.content_hash, policy.content_hash());
    let json = serde_json::to_string(&bundle).unwrap();
    let back: sios_policy::PolicyBundle = serde_json::from_str(&json).unwrap();
    let reloaded = LoadedPolicy::from_bundle(&back).unwrap();
    assert_eq!(reloaded.content_hash(), policy.content_hash());

    let mut tampered = bundle.clone();
    tampered.policies = tampered.policies.replace("\"auditors\"", "\"everyone\"");
    assert!(matches!(
        LoadedPolicy::from_bundle(&tampered),
        Err(PolicyError::HashMismatch { .. })
    ));
    let mut tampered = bundle;
    tampered.schema = tampered
        .schema
        .replace("entity AuditLog;", "entity AuditLog;\n  entity Extra;");
    let e = LoadedPolicy::from_bundle(&tampered).unwrap_err();
    assert!(matches!(e, PolicyError::HashMismatch { .. }), "{e}");
}

// ---- directory ----------------------------------------------------------------

fn as_client(p: Principal) -> Client {
    match p {
        Principal::Client(c) => c,
        other => panic!("not a client: {other:?}"),
    }
}

#[test]
fn callers_map_to_principals_by_uid_and_gids() {
    let alice = as_client(alice());
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.clearance, 2);
    assert_eq!(alice.groups, set(&["clinicians"]));
    assert!(alice.known && !alice.operator);

    // Group membership by supplementary gid raises clearance and adds the group.
    let bob_clin = as_client(client(1001, 1001, &[1501, 1500]));
    assert_eq!(bob_clin.clearance, 2);
    assert_eq!(bob_clin.groups, set(&["auditors", "clinicians"]));

    // Unknown: clearance 0, no groups, not known, named by uid.
    let s = as_client(stranger());
    assert_eq!(
        (
            s.name.as_str(),
            s.clearance,
            s.groups.len(),
            s.known,
            s.operator
        ),
        ("uid-4242", 0, 0, false, false)
    );

    // An unknown uid in a named group is known, with the group's clearance.
    let g = as_client(client(4242, 1500, &[]));
    assert_eq!((g.clearance, g.known), (1, true));

    // Root is an operator because the config lists uid 0.
    assert!(as_client(root()).operator);
}

#[test]
fn root_is_an_operator_only_if_configured() {
    // No [policy] table at all: the shipped default, uid 0 listed explicitly.
    assert_eq!(PolicyConfig::default().operators.uids, vec![0]);
    // An operators table without uid 0: root is an ordinary, unknown caller.
    let cfg: PolicyConfig = toml::from_str("[operators]\ngids = [27]\n").unwrap();
    let dir = cfg.directory().unwrap();
    let root = as_client(dir.principal_for(0, 0, &[]));
    assert!(!root.operator && !root.known);
    assert!(
        !default_policy()
            .decide(&req(
                Principal::Client(root),
                Action::Restart,
                Resource::Appliance
            ))
            .allowed
    );
    // Operator by supplementary gid.
    assert!(as_client(dir.principal_for(1000, 1000, &[27])).operator);
    // An empty table means no operators.
    let cfg: PolicyConfig = toml::from_str("[operators]\n").unwrap();
    assert!(!as_client(cfg.directory().unwrap().principal_for(0, 0, &[])).operator);
}

#[test]
fn the_policy_config_table_parses_and_is_checked() {
    let cfg = example_config();
    assert_eq!(cfg.clients.len(), 3);
    assert_eq!(cfg.clients[2].clearance, sios_policy::Level(1));
    assert!(cfg.directory().is_ok());
    // Round trip through TOML.
    let again: PolicyConfig = toml::from_str(&toml::to_string(&cfg).unwrap()).unwrap();
    assert_eq!(again, cfg);
    // Who may connect: nobody but the kernel's uid unless a group is named.
    assert_eq!(cfg.client_gid, None);
    assert_eq!(PolicyConfig::default().client_gid, None);
    let open: PolicyConfig = toml::from_str("client_gid = 990\n").unwrap();
    assert_eq!(open.client_gid, Some(990));

    for (text, want) in [
        (
            "[[clients]]\nuid = 1\nname = \"a\"\nclearance = 4\n",
            "4 is not a level",
        ),
        (
            "[[clients]]\nuid = 1\nname = \"a\"\nclearance = \"secret\"\n",
            "\"secret\" is not a level",
        ),
        (
            "[[clients]]\nuid = 1\nname = \"a\"\nclearence = 1\n",
            "unknown field",
        ),
    ] {
        let e = toml::from_str::<PolicyConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "want {want:?} in {e}");
    }
    for (text, want) in [
        ("[[clients]]\nuid = 1\nname = \"Alice\"\n", "not usable"),
        ("[[clients]]\nuid = 1\nname = \"uid-2\"\n", "not usable"),
        (
            "[[clients]]\nuid = 1\nname = \"a\"\n[[clients]]\nuid = 1\nname = \"b\"\n",
            "uid 1 is listed twice",
        ),
        (
            "[[clients]]\nuid = 1\nname = \"a\"\n[[clients]]\nuid = 2\nname = \"a\"\n",
            "used twice",
        ),
        (
            "[[groups]]\ngid = 1\nname = \"g\"\n[[groups]]\ngid = 1\nname = \"h\"\n",
            "gid 1 is listed twice",
        ),
    ] {
        let cfg: PolicyConfig = toml::from_str(text).unwrap();
        let e = cfg.directory().unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?} in {e}");
    }
}

// ---- formats ------------------------------------------------------------------------

/// The audit log records these; their encoding must not drift silently.
#[test]
fn request_and_decision_encodings_are_pinned() {
    let r = mem(
        Principal::Brain(clinical()),
        Action::MemoryWrite,
        ns("clinical-cache", "brain:clinical-notes"),
    );
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"principal":{"type":"brain","name":"clinical-notes","kind":"domain","sensitivity":2,"callees":["text-embedding"],"namespaces":["clinical-cache"]},"action":"memory_write","resource":{"type":"memory_namespace","name":"clinical-cache","owner":"brain:clinical-notes","readers":[],"writers":[],"reader_groups":[],"writer_groups":[]}}"#
    );
    let r = req(alice(), Action::AuditRead, Resource::AuditLog);
    assert_eq!(
        serde_json::to_string(&r).unwrap(),
        r#"{"principal":{"type":"client","uid":1000,"gid":1000,"name":"alice","clearance":2,"groups":["clinicians"],"operator":false,"known":true},"action":"audit_read","resource":{"type":"audit_log"}}"#
    );
    let d = Decision {
        allowed: true,
        policy_ids: vec!["a".into()],
        policy_hash: "sha256:00".into(),
        errors: vec![],
    };
    assert_eq!(
        serde_json::to_string(&d).unwrap(),
        r#"{"allowed":true,"policy_ids":["a"],"policy_hash":"sha256:00","errors":[]}"#
    );
    // Action names are the schema's.
    for a in Action::ALL {
        assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        assert_eq!(a.as_str().parse::<Action>().unwrap(), a);
    }
    assert!("reboot".parse::<Action>().is_err());
}
