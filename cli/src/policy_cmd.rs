//! `sios policy …` and `sios audit replay`: the governance side of the CLI.
//!
//! `check`, `explain` (with `--dir`) and `replay` run offline on files with
//! the `sios-policy` library, exactly as the kernel decides. `load` and
//! `show` talk to the running kernel.

use clap::Subcommand;
use sha2::{Digest as _, Sha256};
use sios_audit::bundle::{BundleReader, Item};
use sios_audit::hex;
use sios_audit::record::{Kind, Record};
use sios_ipc::Effect;
use sios_policy::{
    Action, DecisionRequest, LoadedPolicy, MemoryNamespace, PolicyBundle, Principal, Process,
    Resource, SCHEMA, SCHEMA_FILE,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `sios policy …`
#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Validate a policy directory offline, as `load` would (no appliance needed).
    ///
    /// Reads every *.cedar file in DIR against DIR/sios.cedarschema (or the
    /// built-in schema). Prints the content hash and the policy ids; on any
    /// error or validation warning prints each problem as file:line:column
    /// and exits 1.
    Check {
        dir: PathBuf,
        /// Print {"content_hash", "policy_ids"} or {"problems": [...]} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Activate the policy in DIR on the running appliance (audited).
    ///
    /// Sends every *.cedar file and the optional sios.cedarschema to the
    /// kernel, which validates them and, only if they validate, makes them
    /// the active policy and stores the text in the audit log. A policy that
    /// does not validate is refused and the old one keeps deciding.
    Load { dir: PathBuf },
    /// Print the active policy: content hash, stored-text hash, ids, text.
    Show {
        /// Print {"content_hash", "record_hash", "policy_ids", "text"}.
        #[arg(long)]
        json: bool,
    },
    /// Decide one request without executing anything, and say why.
    ///
    /// PRINCIPAL is `client:<uid>` (mapped through the config's [policy]
    /// section, as the kernel maps SO_PEERCRED), `brain:<name>` (from its
    /// manifest in the catalog) or a JSON sios_policy::Principal, e.g.
    /// '{"type":"client","uid":1000,"gid":1000,"name":"alice","clearance":1,
    /// "groups":[],"operator":false,"known":true}'.
    ///
    /// RESOURCE is `brain:<name>`, `memory:<namespace>` (owner from the
    /// name's first segment, grants from the config's [[memory.namespaces]]),
    /// `process:<name>`, `audit`, `appliance`, or a JSON sios_policy::Resource.
    ///
    /// ACTION is one of invoke, call_brain, memory_read, memory_write,
    /// memory_erase, memory_export, restart, policy_load, key_rotate,
    /// brain_enable, brain_disable, audit_read, status, shutdown.
    ///
    /// The policy is DIR's if --dir is given, else the running appliance's
    /// active policy (fetched with its schema from the audit log).
    /// Exit status: 0 allowed, 1 denied.
    #[command(verbatim_doc_comment)]
    Explain {
        #[arg(long)]
        principal: String,
        #[arg(long)]
        action: String,
        #[arg(long)]
        resource: String,
        /// Decide against this policy directory instead of the active policy.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Print the explanation as JSON: {"request", "decision", "reason", "policies"}.
        #[arg(long)]
        json: bool,
    },
}

/// A failed policy command: message and exit status.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

pub fn failed(message: impl Into<String>) -> Failure {
    Failure {
        code: 1,
        message: message.into(),
    }
}

pub fn usage(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: 2,
        message: message.to_string(),
    }
}

/// `sios policy check DIR`.
pub fn check(dir: &Path, json: bool) -> Result<(), Failure> {
    match LoadedPolicy::load_dir(dir) {
        Ok(policy) => {
            if json {
                let doc = serde_json::json!({
                    "content_hash": policy.content_hash(),
                    "policy_ids": policy.policy_ids(),
                });
                println!("{doc}");
            } else {
                println!("ok: {}", policy.content_hash());
                for id in policy.policy_ids() {
                    println!("  {id}");
                }
            }
            Ok(())
        }
        Err(err) => {
            if json {
                let doc = serde_json::json!({
                    "problems": err.problems(),
                    "error": err.to_string(),
                });
                println!("{doc}");
            }
            // Naming a file for the directory is a usage error, as for `load`.
            if matches!(err, sios_policy::PolicyError::NotADirectory { .. }) {
                return Err(usage(err));
            }
            Err(failed(err.to_string()))
        }
    }
}

/// The files `sios policy load DIR` sends: every `*.cedar` and the schema.
pub fn policy_files(dir: &Path) -> Result<Vec<(String, String)>, Failure> {
    sios_policy::not_a_single_file(dir).map_err(usage)?;
    let entries = std::fs::read_dir(dir).map_err(|e| usage(format!("{}: {e}", dir.display())))?;
    let mut files = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| usage(format!("{}: {e}", dir.display())))?
            .path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let wanted = name == SCHEMA_FILE || path.extension().is_some_and(|e| e == "cedar");
        if wanted && path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| usage(format!("{}: {e}", path.display())))?;
            files.push((name.to_owned(), text));
        }
    }
    files.sort();
    if !files.iter().any(|(n, _)| n.ends_with(".cedar")) {
        return Err(usage(format!(
            "{} holds no policy files (*.cedar)",
            dir.display()
        )));
    }
    Ok(files)
}

/// Parses `--principal`.
pub fn parse_principal(text: &str, config: &sios_config::Config) -> Result<Principal, Failure> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| usage(format!("--principal is not a sios principal: {e}")));
    }
    if let Some(uid) = text.strip_prefix("client:") {
        let uid: u32 = uid
            .parse()
            .map_err(|_| usage("--principal client:<uid> wants a numeric uid"))?;
        let directory = config.policy.directory().map_err(usage)?;
        // Without the caller's gids, its primary gid is taken equal to its uid.
        return Ok(directory.principal_for(uid, uid, &[]));
    }
    if let Some(name) = text.strip_prefix("brain:") {
        return Ok(Principal::Brain(brain(name, config)?));
    }
    Err(usage(format!(
        "--principal {text:?}: give client:<uid>, brain:<name> or JSON"
    )))
}

/// Parses `--resource`.
pub fn parse_resource(text: &str, config: &sios_config::Config) -> Result<Resource, Failure> {
    if text.trim_start().starts_with('{') {
        return serde_json::from_str(text)
            .map_err(|e| usage(format!("--resource is not a sios resource: {e}")));
    }
    match text {
        "audit" => return Ok(Resource::AuditLog),
        "appliance" => return Ok(Resource::Appliance),
        _ => {}
    }
    if let Some(name) = text.strip_prefix("brain:") {
        return Ok(Resource::Brain(brain(name, config)?));
    }
    if let Some(name) = text.strip_prefix("process:") {
        return Ok(Resource::Process(Process { name: name.into() }));
    }
    if let Some(name) = text.strip_prefix("memory:") {
        let owner = name
            .split('/')
            .next()
            .filter(|first| first.starts_with("client:") || first.starts_with("brain:"))
            .unwrap_or_default();
        let mut ns = MemoryNamespace::private(name, owner);
        if let Some(grant) = config.memory.namespaces.iter().find(|g| g.name == name) {
            ns.readers = grant.readers.iter().cloned().collect();
            ns.writers = grant.writers.iter().cloned().collect();
            ns.reader_groups = grant.reader_groups.iter().cloned().collect();
            ns.writer_groups = grant.writer_groups.iter().cloned().collect();
        }
        return Ok(Resource::MemoryNamespace(ns));
    }
    Err(usage(format!(
        "--resource {text:?}: give brain:<name>, memory:<namespace>, process:<name>, audit, appliance or JSON"
    )))
}

/// A brain as the policy sees it, from its manifest in the catalog.
fn brain(name: &str, config: &sios_config::Config) -> Result<sios_policy::Brain, Failure> {
    let path = config.paths.catalog_dir.join(format!("{name}.toml"));
    let manifest = sios_manifest::Manifest::load(&path)
        .map_err(|e| usage(format!("brain {name}: {}: {e}", path.display())))?;
    Ok(sios_policy::Brain {
        name: manifest.name.clone(),
        kind: match manifest.kind {
            sios_manifest::BrainKind::Domain => sios_policy::BrainKind::Domain,
            sios_manifest::BrainKind::Operational => sios_policy::BrainKind::Operational,
        },
        sensitivity: manifest.sensitivity.level(),
        callees: manifest.capabilities.calls.iter().cloned().collect(),
        namespaces: manifest
            .capabilities
            .memory_namespaces
            .iter()
            .cloned()
            .collect(),
    })
}

/// Prints the explanation; `Ok(true)` if allowed.
pub fn explain(
    policy: &LoadedPolicy,
    principal: Principal,
    action: &str,
    resource: Resource,
    json: bool,
) -> Result<bool, Failure> {
    let action: Action = action.parse().map_err(usage)?;
    let explanation = policy.explain(&DecisionRequest {
        principal,
        action,
        resource,
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&explanation).unwrap_or_default()
        );
    } else {
        print!("{explanation}");
    }
    Ok(explanation.decision.allowed)
}

/// Loads a stored policy text (a JSON policy bundle) as replay and explain need it.
pub fn policy_from_stored(text: &str) -> Result<LoadedPolicy, String> {
    let bundle: PolicyBundle =
        serde_json::from_str(text).map_err(|e| format!("not a sios policy bundle: {e}"))?;
    LoadedPolicy::from_bundle(&bundle).map_err(|e| e.to_string())
}

/// The active policy from `policy_show`'s canonical text, against the
/// built-in schema (used when the stored bundle cannot be fetched).
pub fn policy_from_canonical(text: &str) -> Result<LoadedPolicy, String> {
    LoadedPolicy::from_text(text, SCHEMA).map_err(|e| e.to_string())
}

/// What `sios audit replay` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub records: u64,
    pub decisions: u64,
    pub replayed: u64,
    pub policies: u64,
    pub divergent: Vec<Divergence>,
}

#[derive(Debug, serde::Serialize)]
pub struct Divergence {
    pub seq: u64,
    pub action: String,
    pub reason: String,
}

/// Re-decides every decision record of the bundle against the policy text
/// the record names.
pub fn replay(bundle: &Path) -> Result<ReplayReport, Failure> {
    let file = std::fs::File::open(bundle)
        .map_err(|e| usage(format!("cannot open {}: {e}", bundle.display())))?;
    let mut reader = BundleReader::new(file).map_err(|e| {
        failed(format!(
            "{}: not a sios audit bundle: {e}",
            bundle.display()
        ))
    })?;
    let mut texts: HashMap<[u8; 32], String> = HashMap::new();
    let mut loaded: HashMap<[u8; 32], Result<LoadedPolicy, String>> = HashMap::new();
    let mut pending: Vec<Record> = Vec::new();
    let mut report = ReplayReport::default();
    // Policy texts follow the record that activates them; a decision record
    // may name a policy whose text comes later in the bundle (or earlier),
    // so records are decided once the whole bundle has been read.
    loop {
        let item = reader
            .next_item()
            .map_err(|e| failed(format!("{}: {e}", bundle.display())))?;
        match item {
            None | Some(Item::End { .. }) => break,
            Some(Item::Policy(text)) => {
                let digest: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                texts.insert(digest, text);
            }
            Some(Item::Record(bytes)) => {
                report.records += 1;
                let record = Record::decode(&bytes).map_err(|e| {
                    failed(format!(
                        "record {} does not decode: {e}",
                        report.records - 1
                    ))
                })?;
                if record.kind == Kind::Intent && record.decision.is_some() {
                    pending.push(record);
                }
            }
            Some(_) => {}
        }
    }
    report.policies = texts.len() as u64;
    for record in pending {
        report.decisions += 1;
        let Some(recorded) = &record.decision else {
            continue;
        };
        let diverge = |reason: String| Divergence {
            seq: record.seq,
            action: record.action.clone(),
            reason,
        };
        let request: DecisionRequest = match serde_json::from_str(&record.detail) {
            Ok(request) => request,
            Err(e) => {
                report.divergent.push(diverge(format!(
                    "its detail is not a recorded decision request: {e}"
                )));
                continue;
            }
        };
        let digest = recorded.policy_hash;
        let Some(text) = texts.get(&digest) else {
            report.divergent.push(diverge(format!(
                "it names policy text {} which the bundle does not hold",
                hex(&digest)
            )));
            continue;
        };
        let policy = loaded
            .entry(digest)
            .or_insert_with(|| policy_from_stored(text));
        let policy = match policy {
            Ok(policy) => policy,
            Err(e) => {
                report.divergent.push(diverge(format!(
                    "its policy text {} does not load: {e}",
                    hex(&digest)
                )));
                continue;
            }
        };
        let decision = policy.decide(&request);
        report.replayed += 1;
        let recorded_allowed = recorded.effect == Effect::Allow;
        let mut recorded_ids = recorded.policy_ids.clone();
        recorded_ids.sort();
        let mut ids = decision.policy_ids.clone();
        ids.sort();
        if decision.allowed != recorded_allowed || ids != recorded_ids {
            let verdict = |allowed: bool| if allowed { "allow" } else { "deny" };
            report.divergent.push(diverge(format!(
                "recorded {} by [{}], re-decided {} by [{}]",
                verdict(recorded_allowed),
                recorded_ids.join(", "),
                verdict(decision.allowed),
                ids.join(", ")
            )));
        }
    }
    report.divergent.sort_by_key(|d| d.seq);
    Ok(report)
}
