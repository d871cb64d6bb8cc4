//! Decision latency, measured (never asserted): `cargo bench -p sios-policy`.
//!
//! Prints one table. Each row times `decide` call by call over a mix of
//! requests and reports p50/p99/max, and "slowest": the most expensive request
//! of the mix, taken at its fastest run (its cost without scheduling noise),
//! next to the anchors measured in the same run: Cedar's own `is_authorized` on a single trivial policy (the floor of
//! any Cedar decision) and DESIGN.md's target, p99 ≤ 20 µs.
//!
//! Workloads:
//! - `default`: the shipped policy (14 policies), a mix of client invokes,
//!   brain-to-brain calls, memory, operator and status requests.
//! - `50x20x30`: 50 brains, 20 clients, 30 policies (the default plus 16
//!   per-brain group rules), every client invoking every brain plus calls and
//!   memory requests.
//!
//! `indexed` is what the kernel calls (`decide`: only the policies whose
//! action scope can match); `whole set` evaluates every policy
//! (`decide_unindexed`), which is what plain Cedar does.

use sios_policy::{
    Action, Brain, BrainKind, Client, DecisionRequest, LoadedPolicy, MemoryNamespace, PolicySource,
    Principal, Process, Resource, SCHEMA,
};
use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::{Duration, Instant};

const TARGET_P99_US: f64 = 20.0;

fn set(items: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    items.into_iter().collect()
}

fn client(i: u32, clearance: u8, groups: &[String], operator: bool) -> Principal {
    Principal::Client(Client {
        uid: 1000 + i,
        gid: 1000 + i,
        name: format!("user{i}"),
        clearance,
        groups: set(groups.iter().cloned()),
        operator,
        known: true,
    })
}

fn brain(i: usize, n: usize) -> Brain {
    let domain = i.is_multiple_of(2);
    Brain {
        name: brain_name(i),
        kind: if domain {
            BrainKind::Domain
        } else {
            BrainKind::Operational
        },
        sensitivity: u8::try_from(i % 4).unwrap_or(0),
        callees: set((1..=3).map(|k| brain_name((i + k) % n))),
        namespaces: set([format!("ns-{i:02}")]),
    }
}

fn brain_name(i: usize) -> String {
    if i.is_multiple_of(10) {
        format!("clinical-{i:02}")
    } else {
        format!("brain-{i:02}")
    }
}

fn namespace(i: usize) -> MemoryNamespace {
    let mut ns = MemoryNamespace::private(format!("ns-{i:02}"), format!("client:user{}", i % 20));
    ns.readers = set([format!("client:user{}", (i + 1) % 20)]);
    ns.reader_groups = set([format!("team-{:02}", i % 16)]);
    ns
}

/// 50 brains × 20 clients, plus calls, memory and operator requests.
fn requests(brains: usize, clients: u32) -> Vec<DecisionRequest> {
    let bs: Vec<Brain> = (0..brains).map(|i| brain(i, brains)).collect();
    let cs: Vec<Principal> = (0..clients)
        .map(|i| {
            let groups: Vec<String> = vec![
                format!("team-{:02}", i % 16),
                if i.is_multiple_of(3) {
                    "clinicians".into()
                } else {
                    "staff".into()
                },
            ];
            client(i, u8::try_from(i % 4).unwrap_or(0), &groups, i == 0)
        })
        .collect();
    let mut out = Vec::new();
    for c in &cs {
        for b in &bs {
            out.push(DecisionRequest {
                principal: c.clone(),
                action: Action::Invoke,
                resource: Resource::Brain(b.clone()),
            });
        }
        for (i, action) in [Action::MemoryRead, Action::MemoryWrite, Action::MemoryErase]
            .into_iter()
            .enumerate()
        {
            out.push(DecisionRequest {
                principal: c.clone(),
                action,
                resource: Resource::MemoryNamespace(namespace(i * 7)),
            });
        }
        out.push(DecisionRequest {
            principal: c.clone(),
            action: Action::Restart,
            resource: Resource::Process(Process {
                name: "sios-memory".into(),
            }),
        });
        out.push(DecisionRequest {
            principal: c.clone(),
            action: Action::Status,
            resource: Resource::Appliance,
        });
    }
    for (i, b) in bs.iter().enumerate() {
        for k in [1, 2, 5] {
            out.push(DecisionRequest {
                principal: Principal::Brain(b.clone()),
                action: Action::CallBrain,
                resource: Resource::Brain(bs[(i + k) % bs.len()].clone()),
            });
        }
        out.push(DecisionRequest {
            principal: Principal::Brain(b.clone()),
            action: Action::MemoryRead,
            resource: Resource::MemoryNamespace(namespace(i)),
        });
    }
    // Interleave deterministically so consecutive requests differ.
    let n = out.len();
    let mut mixed = Vec::with_capacity(n);
    let step = 7919 % n.max(1);
    let mut j = 0;
    for _ in 0..n {
        mixed.push(out[j].clone());
        j = (j + step) % n;
    }
    mixed
}

/// The default policy plus 16 per-brain group rules: 30 policies.
fn policy_30() -> LoadedPolicy {
    let mut extra = String::new();
    for i in 0..16 {
        extra.push_str(&format!(
            "@id(\"team.brain-{i:02}\")\nforbid (principal is Sios::Client, action == Sios::Action::\"invoke\", \
             resource == Sios::Brain::\"{}\")\nunless {{ principal.groups.contains(\"team-{i:02}\") || principal.operator }};\n\n",
            brain_name(i * 3 + 1)
        ));
    }
    LoadedPolicy::from_sources(
        &[
            PolicySource::new("default.cedar", sios_policy::DEFAULT_POLICY),
            PolicySource::new("teams.cedar", extra),
        ],
        &PolicySource::new("sios.cedarschema", SCHEMA),
    )
    .expect("the benchmark policy loads")
}

struct Stats {
    p50: f64,
    p99: f64,
    max: f64,
    /// The slowest request, each taken at its fastest run: cost without
    /// scheduling noise.
    worst_best: f64,
    allowed: usize,
    n: usize,
}

/// Times `f` on every request, `rounds` times, call by call.
fn measure(
    reqs: &[DecisionRequest],
    rounds: usize,
    mut f: impl FnMut(&DecisionRequest) -> bool,
) -> Stats {
    // Warm up.
    for r in reqs.iter().take(2000) {
        black_box(f(r));
    }
    let mut samples = Vec::with_capacity(reqs.len() * rounds);
    let mut best = vec![Duration::MAX; reqs.len()];
    let mut allowed = 0;
    for _ in 0..rounds {
        for (i, r) in reqs.iter().enumerate() {
            let t = Instant::now();
            let ok = black_box(f(black_box(r)));
            let d = t.elapsed();
            samples.push(d);
            best[i] = best[i].min(d);
            allowed += usize::from(ok);
        }
    }
    samples.sort_unstable();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        us(samples[i])
    };
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        max: us(*samples.last().unwrap_or(&Duration::ZERO)),
        worst_best: us(best.into_iter().max().unwrap_or(Duration::ZERO)),
        allowed: allowed / rounds.max(1),
        n: reqs.len(),
    }
}

/// Plain Cedar on one trivial policy and a one-entity store: the floor.
fn cedar_floor() -> Stats {
    use cedar_policy::{Authorizer, Context, Entities, Entity, EntityUid, PolicySet, Request};
    let pset: PolicySet = "permit (principal, action, resource);"
        .parse()
        .expect("trivial policy parses");
    let p: EntityUid = r#"User::"alice""#.parse().expect("uid parses");
    let a: EntityUid = r#"Action::"view""#.parse().expect("uid parses");
    let r: EntityUid = r#"Doc::"d""#.parse().expect("uid parses");
    let authorizer = Authorizer::new();
    let dummy: Vec<DecisionRequest> = requests(5, 2);
    measure(&dummy, 200, |_| {
        let entities =
            Entities::from_entities([Entity::with_uid(p.clone())], None).expect("entities build");
        let req = Request::new(p.clone(), a.clone(), r.clone(), Context::empty(), None)
            .expect("request builds");
        authorizer.is_authorized(&req, &pset, &entities).decision() == cedar_policy::Decision::Allow
    })
}

fn row(name: &str, policies: usize, s: &Stats) {
    let verdict = if s.p99 <= TARGET_P99_US { "yes" } else { "NO" };
    println!(
        "| {name:<38} | {policies:>8} | {:>8} | {:>7} | {:>8.2} | {:>8.2} | {:>8.1} | {:>10.2} | {verdict:>11} |",
        s.n, s.allowed, s.p50, s.p99, s.max, s.worst_best
    );
}

fn main() {
    let t = Instant::now();
    let default = LoadedPolicy::shipped_default().expect("the default policy loads");
    let load_default = t.elapsed();
    let t = Instant::now();
    let p30 = policy_30();
    let load_30 = t.elapsed();

    let mix_default = requests(12, 8);
    let mix_30 = requests(50, 20);
    let rounds_default = (200_000 / mix_default.len()).max(1);
    let rounds_30 = (300_000 / mix_30.len()).max(1);

    println!("sios-policy decision latency (cedar-policy 4.14.1), one thread, call by call");
    println!();
    println!(
        "| {:<38} | {:>8} | {:>8} | {:>7} | {:>8} | {:>8} | {:>8} | {:>10} | {:>11} |",
        "workload",
        "policies",
        "requests",
        "allowed",
        "p50 µs",
        "p99 µs",
        "max µs",
        "slowest µs",
        "p99 ≤ 20 µs"
    );
    println!(
        "|{:-<40}|{:->10}|{:->10}|{:->9}|{:->10}|{:->10}|{:->10}|{:->12}|{:->13}|",
        "", "", "", "", "", "", "", "", ""
    );
    let floor = cedar_floor();
    row("cedar is_authorized, 1 trivial policy", 1, &floor);
    let n_default = default.policy_ids().len();
    let n_30 = p30.policy_ids().len();
    let d_idx = measure(&mix_default, rounds_default, |r| default.decide(r).allowed);
    row("default, indexed (decide)", n_default, &d_idx);
    let d_all = measure(&mix_default, rounds_default, |r| {
        default.decide_unindexed(r).allowed
    });
    row("default, whole set", n_default, &d_all);
    let b_idx = measure(&mix_30, rounds_30, |r| p30.decide(r).allowed);
    row("50 brains x 20 clients x 30, indexed", n_30, &b_idx);
    let b_all = measure(&mix_30, rounds_30, |r| p30.decide_unindexed(r).allowed);
    row("50 brains x 20 clients x 30, whole", n_30, &b_all);
    println!();
    println!(
        "indexed p50 over the Cedar floor: default {:.1}x, 30-policy {:.1}x; target p99 ≤ {TARGET_P99_US} µs (DESIGN.md)",
        d_idx.p50 / floor.p50,
        b_idx.p50 / floor.p50
    );
    println!(
        "load (parse + strict validation + canonical form + index): default {:.2} ms, 30-policy {:.2} ms",
        load_default.as_secs_f64() * 1e3,
        load_30.as_secs_f64() * 1e3
    );
}
