//! Deciding: Cedar's answer, made fail-closed and deterministic.
//!
//! Cedar's semantics are kept (default deny, any applicable `forbid` beats
//! every `permit`) with one change: Cedar *skips* a policy whose evaluation
//! errors, so a `forbid` that overflows would let a request through. Here any
//! error anywhere (building the entities, a request that does not fit the
//! schema, any policy failing to evaluate) makes the decision a deny that
//! names the failing policies and says why.
//!
//! Determinism: the decision is a function of the loaded policy and the
//! request alone (no clock, no randomness, no I/O); every list in it is
//! sorted, because Cedar reports reasons and errors in hash-set order.

use crate::entities::Kind;
use crate::load::LoadedPolicy;
use crate::model::{Decision, DecisionRequest, Reason};
use cedar_policy::{AuthorizationError, Context, Effect, Request};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

impl LoadedPolicy {
    /// Decides `req`. Never panics, never fails: anything that goes wrong is a
    /// deny with `errors` saying what.
    pub fn decide(&self, req: &DecisionRequest) -> Decision {
        self.decide_in(true, req)
    }

    /// Decides against the whole policy set instead of the subset the index
    /// selects. Gives the same decision as [`LoadedPolicy::decide`] (tested);
    /// kept for the tests and the benchmark's comparison.
    #[doc(hidden)]
    pub fn decide_unindexed(&self, req: &DecisionRequest) -> Decision {
        self.decide_in(false, req)
    }

    fn deny(&self, policy_ids: BTreeSet<String>, errors: BTreeSet<String>) -> Decision {
        Decision {
            allowed: false,
            policy_ids: policy_ids.into_iter().collect(),
            policy_hash: self.content_hash().to_owned(),
            errors: errors.into_iter().collect(),
        }
    }

    fn decide_in(&self, index: bool, req: &DecisionRequest) -> Decision {
        let built = match self.model.build(req, None) {
            Ok(b) => b,
            Err(e) => return self.deny(BTreeSet::new(), BTreeSet::from([e])),
        };
        let principal_kind = Kind::of_principal(&req.principal);
        let resource_kind = Kind::of_resource(&req.resource);
        let selected = self.index.select(
            req.action,
            (principal_kind, &built.principal),
            (resource_kind, &built.resource),
        );
        let misfit = || {
            format!(
                "the request does not fit the schema: action `{}` does not apply to \
                 principal type `{}` and resource type `{}`",
                req.action,
                self.model.type_name(principal_kind),
                self.model.type_name(resource_kind)
            )
        };
        // The index has a slot for exactly the (action, principal type,
        // resource type) combinations the schema allows, each checked against
        // the schema with an empty context at load time, so the request need
        // not be validated again. The unindexed path lets Cedar check it, as
        // a cross-check in tests.
        let (set, schema) = match (index, selected) {
            (_, None) => return self.deny(BTreeSet::new(), BTreeSet::from([misfit()])),
            (true, Some(set)) => (set, None),
            (false, Some(_)) => (&self.full, Some(&self.schema)),
        };
        let request = match Request::new(
            built.principal,
            built.action,
            built.resource,
            Context::empty(),
            schema,
        ) {
            Ok(r) => r,
            Err(_) => return self.deny(BTreeSet::new(), BTreeSet::from([misfit()])),
        };
        let response = self
            .authorizer
            .is_authorized(&request, set, &built.entities);
        let reasons: BTreeSet<String> = response
            .diagnostics()
            .reason()
            .map(|id| id.to_string())
            .collect();
        let mut errored = BTreeSet::new();
        let mut errors = BTreeSet::new();
        for e in response.diagnostics().errors() {
            match e {
                AuthorizationError::PolicyEvaluationError(pe) => {
                    errored.insert(pe.policy_id().to_string());
                }
            }
            // Display only: Cedar's `help()` may list attributes in hash-map
            // order, its Display text does not.
            errors.insert(e.to_string());
        }
        if !errors.is_empty() {
            // Fail closed. Name the failing policies, and any forbid that
            // applied as well (Cedar's reasons for a deny are forbids; for an
            // allow they are permits, which did not decide this).
            let mut ids = errored;
            if response.decision() == cedar_policy::Decision::Deny {
                ids.extend(reasons);
            }
            return self.deny(ids, errors);
        }
        Decision {
            allowed: response.decision() == cedar_policy::Decision::Allow,
            policy_ids: reasons.into_iter().collect(),
            policy_hash: self.content_hash().to_owned(),
            errors: Vec::new(),
        }
    }

    /// The decision with the deciding policies spelled out, for
    /// `sios policy explain`. Executes nothing; the same as [`decide`](Self::decide)
    /// plus look-ups.
    pub fn explain(&self, req: &DecisionRequest) -> Explanation {
        let decision = self.decide(req);
        let reason = if !decision.errors.is_empty() {
            Reason::Error
        } else if decision.allowed {
            Reason::Permitted
        } else if decision.policy_ids.is_empty() {
            Reason::NoPermit
        } else {
            Reason::Forbidden
        };
        let policies = decision
            .policy_ids
            .iter()
            .filter_map(|id| self.policy(id))
            .map(|p| ExplainedPolicy {
                id: p.id.clone(),
                effect: match p.effect {
                    Effect::Permit => "permit".into(),
                    Effect::Forbid => "forbid".into(),
                },
                text: p.text.clone(),
            })
            .collect();
        Explanation {
            request: req.clone(),
            reason,
            decision,
            policies,
        }
    }
}

/// A policy named by a decision.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ExplainedPolicy {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: String,
    /// Canonical text.
    pub text: String,
}

/// What `sios policy explain` prints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub request: DecisionRequest,
    pub decision: Decision,
    pub reason: Reason,
    /// The policies in `decision.policy_ids`, in that order.
    pub policies: Vec<ExplainedPolicy>,
}

impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.decision.allowed {
            "ALLOW"
        } else {
            "DENY"
        };
        let why = match self.reason {
            Reason::Permitted => "permitted by",
            Reason::Forbidden => "forbidden by",
            Reason::NoPermit => "no policy permits it (default deny)",
            Reason::Error => "deciding failed, so it is denied (fail closed); failing policies:",
        };
        let ids = self.decision.policy_ids.join(", ");
        writeln!(
            f,
            "{verdict} {} by {} on {}",
            self.request.action,
            describe_principal(&self.request.principal),
            describe_resource(&self.request.resource)
        )?;
        if ids.is_empty() {
            writeln!(f, "  {why}")?;
        } else {
            writeln!(f, "  {why} {ids}")?;
        }
        for e in &self.decision.errors {
            writeln!(f, "  error: {e}")?;
        }
        writeln!(f, "  policy {}", self.decision.policy_hash)?;
        for p in &self.policies {
            writeln!(f)?;
            for line in p.text.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

fn describe_principal(p: &crate::model::Principal) -> String {
    use crate::model::Principal;
    match p {
        Principal::Client(c) => format!(
            "client {} (uid {}, clearance {}{}{})",
            c.name,
            c.uid,
            c.clearance,
            if c.operator { ", operator" } else { "" },
            if c.known { "" } else { ", unknown" }
        ),
        Principal::Brain(b) => format!("brain {}", b.name),
        Principal::Service(s) => format!("service {}", s.name),
    }
}

fn describe_resource(r: &crate::model::Resource) -> String {
    use crate::model::Resource;
    match r {
        Resource::Brain(b) => format!(
            "brain {} ({}, sensitivity {})",
            b.name,
            b.kind.as_str(),
            b.sensitivity
        ),
        Resource::MemoryNamespace(m) => format!("memory namespace {} (owner {})", m.name, m.owner),
        Resource::AuditLog => "the audit log".into(),
        Resource::Process(p) => format!("process {}", p.name),
        Resource::Appliance => "the appliance".into(),
    }
}

/// Re-decides one recorded request against a recorded policy, for
/// `sios audit replay`. To replay many records, load the policy once with
/// [`LoadedPolicy::from_text`] (or `from_bundle`) and call `decide`.
pub fn replay(
    policy_text: &str,
    schema_text: &str,
    request: &DecisionRequest,
) -> Result<Decision, crate::PolicyError> {
    Ok(LoadedPolicy::from_text(policy_text, schema_text)?.decide(request))
}
