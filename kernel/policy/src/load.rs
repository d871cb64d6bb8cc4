//! Loading a policy: read, parse, validate strictly, canonicalise, hash, and
//! index by action.
//!
//! A policy is loaded whole or not at all. What is refused: any parse error,
//! any schema error or warning, any validation error **or warning** (Cedar's
//! validator only warns about a policy that can never apply), a policy without
//! an `@id`, two policies with the same `@id`, templates, and a schema that
//! does not describe the entities and actions the kernel sends.
//!
//! # Canonical text and content hash
//! Each policy is re-printed from Cedar's own AST (via its JSON form), which
//! drops whitespace and comments and normalises syntax (`unless { c }` becomes
//! `when { !(c) }`, redundant parentheses go). The canonical text is those
//! policies sorted by `@id`, separated by one blank line. The content hash is
//! `sha256:` + hex SHA-256 of
//! ```text
//! "sios-policy/1\n" || "schema sha256:<hex of the canonical schema JSON>\n" || canonical text
//! ```
//! where the canonical schema JSON is Cedar's JSON form of the schema with
//! object keys sorted, so the schema's comments and layout do not count
//! either. The canonical text re-loads (with the same schema) to the same
//! hash: that is what the audit log stores and what replay re-loads.
//!
//! The printer is Cedar's, so the form is tied to the pinned `cedar-policy`
//! version; the tests pin it, so an upgrade that changes it cannot go
//! unnoticed (old logs would stop replaying to their recorded hashes).

use crate::entities::{CedarModel, sample_requests};
use crate::error::{PolicyError, Problem, Severity, from_diagnostic, line_col};
use crate::index::PolicyIndex;
use cedar_policy::{
    Authorizer, Effect, Policy, PolicyId, PolicySet, Schema, SchemaFragment, ValidationMode,
    Validator,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// The schema file `load_dir` looks for in a policy directory.
pub const SCHEMA_FILE: &str = "sios.cedarschema";

/// The shipped schema (`deploy/policy/sios.cedarschema`), built in.
pub const SCHEMA: &str = include_str!("../../../deploy/policy/sios.cedarschema");

/// The shipped default policy (`deploy/policy/default.cedar`), built in.
pub const DEFAULT_POLICY: &str = include_str!("../../../deploy/policy/default.cedar");

/// Version tag mixed into every content hash; bump if the canonical form changes.
const HASH_DOMAIN: &str = "sios-policy/1\n";

/// One policy or schema file: its name (for messages) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicySource {
    pub name: String,
    pub text: String,
}

impl PolicySource {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        PolicySource {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// What the audit log stores when a policy is activated: enough to re-load
/// exactly this policy, addressed by its hash.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PolicyBundle {
    /// [`LoadedPolicy::content_hash`].
    pub content_hash: String,
    /// The schema text, as loaded.
    pub schema: String,
    /// [`LoadedPolicy::text`], the canonical policy text.
    pub policies: String,
}

/// One policy of a loaded set.
#[derive(Clone, Debug)]
pub(crate) struct PolicyInfo {
    pub id: String,
    pub effect: Effect,
    /// Canonical text, `@id` included.
    pub text: String,
}

/// A policy set that parsed, validated without errors or warnings against
/// its schema, and is ready to decide.
pub struct LoadedPolicy {
    pub(crate) schema: Schema,
    schema_text: String,
    pub(crate) model: CedarModel,
    /// Sorted by id.
    pub(crate) policies: Vec<PolicyInfo>,
    /// Every policy.
    pub(crate) full: PolicySet,
    /// Subsets of `full` by action and scope.
    pub(crate) index: PolicyIndex,
    text: String,
    hash: String,
    pub(crate) authorizer: Authorizer,
}

impl fmt::Debug for LoadedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedPolicy")
            .field("content_hash", &self.hash)
            .field(
                "policies",
                &self
                    .policies
                    .iter()
                    .map(|p| p.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> Result<String, PolicyError> {
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })
}

impl LoadedPolicy {
    /// Loads every `*.cedar` file in `dir` (in file-name order, which does not
    /// change the meaning) against `dir/sios.cedarschema`, or against the
    /// built-in [`SCHEMA`] if the directory has none.
    pub fn load_dir(dir: &Path) -> Result<LoadedPolicy, PolicyError> {
        let schema_path = dir.join(SCHEMA_FILE);
        let schema = if schema_path.exists() {
            PolicySource::new(schema_path.display().to_string(), read(&schema_path)?)
        } else {
            PolicySource::new(format!("<built-in {SCHEMA_FILE}>"), SCHEMA)
        };
        Self::load_dir_inner(dir, schema)
    }

    /// Loads every `*.cedar` file in `dir` against the schema file `schema`.
    pub fn load_dir_with_schema(dir: &Path, schema: &Path) -> Result<LoadedPolicy, PolicyError> {
        let schema = PolicySource::new(schema.display().to_string(), read(schema)?);
        Self::load_dir_inner(dir, schema)
    }

    fn load_dir_inner(dir: &Path, schema: PolicySource) -> Result<LoadedPolicy, PolicyError> {
        not_a_single_file(dir)?;
        let read_dir_err = |source| PolicyError::Read {
            path: dir.to_owned(),
            source,
        };
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir_err)? {
            let path = entry.map_err(read_dir_err)?.path();
            if path.extension().is_some_and(|e| e == "cedar") && path.is_file() {
                paths.push(path);
            }
        }
        paths.sort();
        if paths.is_empty() {
            return Err(PolicyError::NoPolicies {
                dir: dir.to_owned(),
            });
        }
        let sources = paths
            .iter()
            .map(|p| Ok(PolicySource::new(p.display().to_string(), read(p)?)))
            .collect::<Result<Vec<_>, PolicyError>>()?;
        Self::from_sources(&sources, &schema)
    }

    /// The shipped default policy against the shipped schema.
    pub fn shipped_default() -> Result<LoadedPolicy, PolicyError> {
        Self::from_sources(
            &[PolicySource::new(
                "<built-in default.cedar>",
                DEFAULT_POLICY,
            )],
            &PolicySource::new(format!("<built-in {SCHEMA_FILE}>"), SCHEMA),
        )
    }

    /// Re-loads a canonical text ([`LoadedPolicy::text`]) with its schema text,
    /// e.g. from the audit log for replay.
    pub fn from_text(policy_text: &str, schema_text: &str) -> Result<LoadedPolicy, PolicyError> {
        Self::from_sources(
            &[PolicySource::new("<policy text>", policy_text)],
            &PolicySource::new("<schema text>", schema_text),
        )
    }

    /// Re-loads a stored bundle, and checks that it hashes to what it says.
    pub fn from_bundle(bundle: &PolicyBundle) -> Result<LoadedPolicy, PolicyError> {
        let loaded = Self::from_text(&bundle.policies, &bundle.schema)?;
        if loaded.hash != bundle.content_hash {
            return Err(PolicyError::HashMismatch {
                expected: bundle.content_hash.clone(),
                actual: loaded.hash,
            });
        }
        Ok(loaded)
    }

    /// Loads policies from in-memory files. The order of `policies` does not
    /// change the result.
    pub fn from_sources(
        policies: &[PolicySource],
        schema: &PolicySource,
    ) -> Result<LoadedPolicy, PolicyError> {
        let (schema_parsed, model, schema_hash) = load_schema(schema)?;
        // Sort by name so that messages come out in the same order whatever
        // order the files were given in.
        let mut files: Vec<&PolicySource> = policies.iter().collect();
        files.sort_by(|a, b| (&a.name, &a.text).cmp(&(&b.name, &b.text)));

        let mut problems = Vec::new();
        let mut parsed: Vec<(Policy, usize)> = Vec::new(); // (policy with its @id as id, file index)
        let mut seen: BTreeMap<String, String> = BTreeMap::new(); // id -> "file:line"
        for (index, file) in files.iter().enumerate() {
            parse_file(file, index, &mut parsed, &mut seen, &mut problems);
        }
        if parsed.is_empty() && problems.is_empty() {
            problems.push(Problem {
                file: files
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                line: None,
                column: None,
                severity: Severity::Error,
                message: "there are no policies; an empty policy would deny everything, \
                          operators included"
                    .into(),
                help: None,
            });
        }
        if !problems.is_empty() {
            return Err(PolicyError::Refused { problems });
        }

        let file_of: BTreeMap<String, usize> = parsed
            .iter()
            .map(|(p, i)| (p.id().to_string(), *i))
            .collect();
        let full =
            PolicySet::from_policies(parsed.iter().map(|(p, _)| p.clone())).map_err(|e| {
                refused_one(
                    &files[0].name,
                    format!("cannot assemble the policy set: {e}"),
                )
            })?;

        // Strict validation; warnings count as problems.
        let result = Validator::new(schema_parsed.clone()).validate(&full, ValidationMode::Strict);
        let place = |id: &cedar_policy::PolicyId| -> &PolicySource {
            files[file_of.get(AsRef::<str>::as_ref(id)).copied().unwrap_or(0)]
        };
        for e in result.validation_errors() {
            let f = place(e.policy_id());
            problems.push(from_diagnostic(
                &f.name,
                &f.text,
                Severity::Error,
                e,
                e.to_string(),
            ));
        }
        for w in result.validation_warnings() {
            let f = place(w.policy_id());
            let mut p = from_diagnostic(&f.name, &f.text, Severity::Warning, w, w.to_string());
            p.help.get_or_insert_with(|| {
                "sios refuses validator warnings: a policy that can never apply, or text \
                 that looks like something it is not, is almost always a mistake"
                    .into()
            });
            problems.push(p);
        }
        if !problems.is_empty() {
            sort_problems(&mut problems);
            return Err(PolicyError::Refused { problems });
        }

        // Canonical form, sorted by id.
        let mut infos = Vec::with_capacity(parsed.len());
        for (policy, index) in &parsed {
            let canonical =
                canonical_text(policy).map_err(|e| refused_one(&files[*index].name, e))?;
            infos.push(PolicyInfo {
                id: policy.id().to_string(),
                effect: policy.effect(),
                text: canonical,
            });
        }
        infos.sort_by(|a, b| a.id.cmp(&b.id));
        let mut text = infos
            .iter()
            .map(|p| p.text.as_str())
            .collect::<Vec<_>>()
            .join("\n\n");
        text.push('\n');
        let mut h = Sha256::new();
        h.update(HASH_DOMAIN.as_bytes());
        h.update(format!("schema {schema_hash}\n").as_bytes());
        h.update(text.as_bytes());
        let hash = format!("sha256:{}", hex::encode(h.finalize()));

        // Prebuilt subsets per action and scope; changes no decision (tested).
        let policies_only: Vec<Policy> = parsed.iter().map(|(p, _)| p.clone()).collect();
        let index = PolicyIndex::build(&model, &schema_parsed, &policies_only)
            .map_err(|e| refused_one(&schema.name, e))?;

        Ok(LoadedPolicy {
            schema: schema_parsed,
            schema_text: schema.text.clone(),
            model,
            policies: infos,
            full,
            index,
            text,
            hash,
            authorizer: Authorizer::new(),
        })
    }

    /// `sha256:<64 hex>`, stable under whitespace, comments, and the order of
    /// policies and files; changed by any change of meaning (and of `@id`s or
    /// other annotations). Covers the schema too, also canonically.
    pub fn content_hash(&self) -> &str {
        &self.hash
    }

    /// The canonical policy text: what the audit log stores on activation.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The schema text, as loaded.
    pub fn schema_text(&self) -> &str {
        &self.schema_text
    }

    /// The hash, the schema and the canonical text, ready to store.
    pub fn bundle(&self) -> PolicyBundle {
        PolicyBundle {
            content_hash: self.hash.clone(),
            schema: self.schema_text.clone(),
            policies: self.text.clone(),
        }
    }

    /// Every policy's `@id`, sorted.
    pub fn policy_ids(&self) -> Vec<&str> {
        self.policies.iter().map(|p| p.id.as_str()).collect()
    }

    /// The canonical text of one policy.
    pub fn policy_text(&self, id: &str) -> Option<&str> {
        self.policy(id).map(|p| p.text.as_str())
    }

    pub(crate) fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.policies
            .binary_search_by(|p| p.id.as_str().cmp(id))
            .ok()
            .map(|i| &self.policies[i])
    }
}

fn refused_one(file: &str, message: String) -> PolicyError {
    PolicyError::Refused {
        problems: vec![Problem {
            file: file.to_owned(),
            line: None,
            column: None,
            severity: Severity::Error,
            message,
            help: None,
        }],
    }
}

fn sort_problems(problems: &mut [Problem]) {
    problems.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.severity, &a.message)
            .cmp(&(&b.file, b.line, b.column, b.severity, &b.message))
    });
}

/// Parses, checks and hashes the schema.
fn load_schema(src: &PolicySource) -> Result<(Schema, CedarModel, String), PolicyError> {
    let mut problems = Vec::new();
    let schema = match Schema::from_cedarschema_str(&src.text) {
        Ok((schema, warnings)) => {
            for w in warnings {
                problems.push(from_diagnostic(
                    &src.name,
                    &src.text,
                    Severity::Warning,
                    &w,
                    w.to_string(),
                ));
            }
            Some(schema)
        }
        Err(e) => {
            problems.push(from_diagnostic(
                &src.name,
                &src.text,
                Severity::Error,
                &e,
                e.to_string(),
            ));
            None
        }
    };
    let schema = match schema {
        Some(s) if problems.is_empty() => s,
        _ => {
            sort_problems(&mut problems);
            return Err(PolicyError::Refused { problems });
        }
    };
    let model = CedarModel::new(&schema).map_err(|m| refused_one(&src.name, m))?;
    // Every entity shape the kernel sends must conform to the schema, or
    // every request would fail (closed) at run time.
    for req in sample_requests() {
        model.build(&req, Some(&schema)).map_err(|m| {
            refused_one(
                &src.name,
                format!("the schema does not describe what the kernel sends: {m}"),
            )
        })?;
    }
    let fragment_json = SchemaFragment::from_cedarschema_str(&src.text)
        .map_err(|e| refused_one(&src.name, e.to_string()))
        .and_then(|(fragment, _)| {
            fragment
                .to_json_value()
                .map_err(|e| refused_one(&src.name, e.to_string()))
        })?;
    let mut canonical = String::new();
    canonical_json(&fragment_json, &mut canonical);
    let hash = format!(
        "sha256:{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    Ok((schema, model, hash))
}

/// JSON with object keys sorted, no whitespace. (Cedar turns on serde_json's
/// `preserve_order`, so a `Value`'s own key order is insertion order.)
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// A policy re-printed from Cedar's AST: no comments, no layout, `@id` kept.
fn canonical_text(policy: &Policy) -> Result<String, String> {
    let json = policy
        .to_json()
        .map_err(|e| format!("policy `{}`: cannot convert to JSON: {e}", policy.id()))?;
    let reparsed = Policy::from_json(Some(policy.id().clone()), json)
        .map_err(|e| format!("policy `{}`: cannot convert from JSON: {e}", policy.id()))?;
    reparsed
        .to_cedar()
        .ok_or_else(|| format!("policy `{}` cannot be printed as Cedar text", policy.id()))
}

/// Refuses a single file named where a policy's directory belongs (every
/// reader of a policy directory asks this first): the policy is all its
/// `*.cedar` files together.
pub fn not_a_single_file(dir: &Path) -> Result<(), PolicyError> {
    if dir.is_file() {
        return Err(PolicyError::NotADirectory {
            path: dir.to_owned(),
        });
    }
    Ok(())
}

/// True for a usable `@id`: 1–128 characters of `A-Z a-z 0-9 . _ - : /`.
pub fn is_valid_policy_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-:/".contains(&b))
}

/// Parses one file, appending its policies (renamed to their `@id`) and
/// problems.
fn parse_file(
    file: &PolicySource,
    index: usize,
    parsed: &mut Vec<(Policy, usize)>,
    seen: &mut BTreeMap<String, String>,
    problems: &mut Vec<Problem>,
) {
    let set = match PolicySet::from_str(&file.text) {
        Ok(set) => set,
        Err(errors) => {
            for e in errors.iter() {
                problems.push(from_diagnostic(
                    &file.name,
                    &file.text,
                    Severity::Error,
                    e,
                    e.to_string(),
                ));
            }
            return;
        }
    };
    let problem = |offset: Option<usize>, message: String, help: Option<&str>| {
        let (line, column) = match offset.map(|o| line_col(&file.text, o)) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        Problem {
            file: file.name.clone(),
            line,
            column,
            severity: Severity::Error,
            message,
            help: help.map(str::to_owned),
        }
    };
    for t in set.templates() {
        let offset = file.text.find(&t.to_cedar());
        problems.push(problem(
            offset,
            "this is a template (it uses ?principal or ?resource); sios loads only complete policies"
                .into(),
            Some("write the entity in place of the slot, one policy per entity"),
        ));
    }
    // The parser names policies policy0, policy1, … in source order.
    let mut policies: Vec<&Policy> = set.policies().collect();
    policies.sort_by_key(|p| {
        AsRef::<str>::as_ref(p.id())
            .strip_prefix("policy")
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let mut cursor = 0;
    for policy in policies {
        // Find where it starts, for messages.
        let offset = policy.to_cedar().and_then(|src| {
            let found = file.text.get(cursor..)?.find(&src)? + cursor;
            cursor = found + src.len();
            Some(found)
        });
        let Some(id) = policy.annotation("id") else {
            problems.push(problem(
                offset,
                "this policy has no @id".into(),
                Some(
                    "put a line like @id(\"clients.invoke-operational\") above it: \
                     decisions and the audit log name policies by their @id",
                ),
            ));
            continue;
        };
        if !is_valid_policy_id(id) {
            problems.push(problem(
                offset,
                format!("@id(\"{id}\") is not a usable policy id"),
                Some("use 1-128 characters of letters, digits and . _ - : /"),
            ));
            continue;
        }
        let here = match offset.map(|o| line_col(&file.text, o)) {
            Some((l, _)) => format!("{}:{l}", file.name),
            None => file.name.clone(),
        };
        if let Some(first) = seen.get(id) {
            problems.push(problem(
                offset,
                format!("@id(\"{id}\") is already used by the policy at {first}"),
                Some("every policy needs its own @id"),
            ));
            continue;
        }
        seen.insert(id.to_owned(), here);
        parsed.push((policy.new_id(PolicyId::new(id)), index));
    }
}
