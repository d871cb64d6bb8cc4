//! Which policies can apply to a request, decided from their scopes alone, so
//! that Cedar evaluates only those ("policy slicing").
//!
//! A policy's scope (`principal …, action …, resource …`) is evaluated before
//! its conditions and cannot fail; a policy whose scope does not match is
//! neither satisfied nor evaluated further, so leaving it out changes no
//! decision, no reason and no error. The index is exact for sios because
//! principal and resource entities never have parents (see `entities`): there,
//! `principal in E` holds exactly when `principal == E`.
//!
//! Slots are keyed by (action, principal type, resource type), for the
//! combinations the schema allows. Within a slot, policies that name a
//! specific principal or resource (`resource == Sios::Brain::"legal"`) are
//! kept apart, and a policy set is prebuilt for each named uid (and each
//! named pair), so a per-brain rule costs only requests about that brain.

use crate::entities::{CedarModel, Kind};
use crate::model::Action;
use cedar_policy::{
    ActionConstraint, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint, Schema,
};
use std::collections::{BTreeSet, HashMap};

/// Past this many prebuilt sets in one slot, uid-specific policies are
/// simply kept in the slot's set (still correct, a little slower).
const MAX_REFINED_SETS: usize = 1024;

/// Whether a scope clause can match requests with a given entity type.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Scope {
    Never,
    Any,
    Only(EntityUid),
}

fn principal_scope(c: PrincipalConstraint, ty: &EntityTypeName) -> Scope {
    match c {
        PrincipalConstraint::Any => Scope::Any,
        PrincipalConstraint::Is(t) => is(&t, ty),
        PrincipalConstraint::Eq(u) | PrincipalConstraint::In(u) => only(u, ty),
        PrincipalConstraint::IsIn(t, u) => both(is(&t, ty), only(u, ty)),
    }
}

fn resource_scope(c: ResourceConstraint, ty: &EntityTypeName) -> Scope {
    match c {
        ResourceConstraint::Any => Scope::Any,
        ResourceConstraint::Is(t) => is(&t, ty),
        ResourceConstraint::Eq(u) | ResourceConstraint::In(u) => only(u, ty),
        ResourceConstraint::IsIn(t, u) => both(is(&t, ty), only(u, ty)),
    }
}

fn is(t: &EntityTypeName, ty: &EntityTypeName) -> Scope {
    if t == ty { Scope::Any } else { Scope::Never }
}

fn only(u: EntityUid, ty: &EntityTypeName) -> Scope {
    if u.type_name() == ty {
        Scope::Only(u)
    } else {
        Scope::Never
    }
}

fn both(a: Scope, b: Scope) -> Scope {
    match (a, b) {
        (Scope::Never, _) | (_, Scope::Never) => Scope::Never,
        (Scope::Any, s) | (s, Scope::Any) => s,
        (Scope::Only(x), Scope::Only(y)) => {
            if x == y {
                Scope::Only(x)
            } else {
                Scope::Never
            }
        }
    }
}

fn admits(scope: &Scope, uid: Option<&EntityUid>) -> bool {
    match scope {
        Scope::Never => false,
        Scope::Any => true,
        Scope::Only(u) => Some(u) == uid,
    }
}

fn action_matches(p: &Policy, ancestry: &std::collections::HashSet<EntityUid>) -> bool {
    match p.action_constraint() {
        ActionConstraint::Any => true,
        ActionConstraint::Eq(uid) => ancestry.contains(&uid),
        ActionConstraint::In(uids) => uids.iter().any(|u| ancestry.contains(u)),
    }
}

#[derive(Debug)]
struct Slot {
    /// Policies for requests naming no uid that any policy of the slot names.
    plain: PolicySet,
    principal_uids: BTreeSet<EntityUid>,
    resource_uids: BTreeSet<EntityUid>,
    /// Keyed by (named principal uid, named resource uid).
    refined: HashMap<(Option<EntityUid>, Option<EntityUid>), PolicySet>,
}

/// Prebuilt policy subsets; see the module doc.
#[derive(Debug)]
pub(crate) struct PolicyIndex {
    /// Per action ([`Action::index`]): every policy whose action scope matches.
    by_action: Vec<PolicySet>,
    slots: HashMap<(Action, Kind, Kind), Slot>,
}

fn set_of<'a>(policies: impl Iterator<Item = &'a Policy>) -> Result<PolicySet, String> {
    PolicySet::from_policies(policies.cloned()).map_err(|e| e.to_string())
}

impl PolicyIndex {
    pub(crate) fn build(
        model: &CedarModel,
        schema: &Schema,
        policies: &[Policy],
    ) -> Result<Self, String> {
        let kind_of = |t: &EntityTypeName| Kind::ALL.into_iter().find(|k| model.type_name(*k) == t);
        let mut by_action = Vec::with_capacity(Action::ALL.len());
        let mut slots = HashMap::new();
        for action in Action::ALL {
            let ancestry = model.action_ancestry(action);
            let mine: Vec<&Policy> = policies
                .iter()
                .filter(|p| action_matches(p, ancestry))
                .collect();
            by_action.push(set_of(mine.iter().copied())?);
            let uid = &model.action_uids()[action.index()];
            let principals: Vec<Kind> = schema
                .principals_for_action(uid)
                .map(|it| it.filter_map(kind_of).collect())
                .unwrap_or_default();
            let resources: Vec<Kind> = schema
                .resources_for_action(uid)
                .map(|it| it.filter_map(kind_of).collect())
                .unwrap_or_default();
            for &pk in &principals {
                for &rk in &resources {
                    // The kernel sends an empty context and skips Cedar's own
                    // request validation for combinations indexed here.
                    let sample = |k: Kind| {
                        EntityUid::from_type_name_and_id(
                            model.type_name(k).clone(),
                            cedar_policy::EntityId::new("sample"),
                        )
                    };
                    cedar_policy::Request::new(
                        sample(pk),
                        uid.clone(),
                        sample(rk),
                        cedar_policy::Context::empty(),
                        Some(schema),
                    )
                    .map_err(|e| {
                        format!(
                            "the schema does not accept what the kernel sends for `{action}` \
                             (an empty context): {e}"
                        )
                    })?;
                    let scoped: Vec<(&Policy, Scope, Scope)> = mine
                        .iter()
                        .map(|p| {
                            (
                                *p,
                                principal_scope(p.principal_constraint(), model.type_name(pk)),
                                resource_scope(p.resource_constraint(), model.type_name(rk)),
                            )
                        })
                        .filter(|(_, ps, rs)| *ps != Scope::Never && *rs != Scope::Never)
                        .collect();
                    let named = |principal: bool| {
                        scoped
                            .iter()
                            .filter_map(|(_, ps, rs)| match if principal { ps } else { rs } {
                                Scope::Only(u) => Some(u.clone()),
                                _ => None,
                            })
                            .collect::<BTreeSet<EntityUid>>()
                    };
                    let principal_uids = named(true);
                    let resource_uids = named(false);
                    let pick = |pu: Option<&EntityUid>, ru: Option<&EntityUid>| {
                        set_of(
                            scoped
                                .iter()
                                .filter(|(_, ps, rs)| admits(ps, pu) && admits(rs, ru))
                                .map(|(p, _, _)| *p),
                        )
                    };
                    let combos = (principal_uids.len() + 1) * (resource_uids.len() + 1);
                    let slot = if combos > MAX_REFINED_SETS {
                        Slot {
                            plain: set_of(scoped.iter().map(|(p, _, _)| *p))?,
                            principal_uids: BTreeSet::new(),
                            resource_uids: BTreeSet::new(),
                            refined: HashMap::new(),
                        }
                    } else {
                        let mut refined = HashMap::new();
                        let pus: Vec<Option<&EntityUid>> = std::iter::once(None)
                            .chain(principal_uids.iter().map(Some))
                            .collect();
                        let rus: Vec<Option<&EntityUid>> = std::iter::once(None)
                            .chain(resource_uids.iter().map(Some))
                            .collect();
                        for pu in &pus {
                            for ru in &rus {
                                if pu.is_some() || ru.is_some() {
                                    refined.insert((pu.cloned(), ru.cloned()), pick(*pu, *ru)?);
                                }
                            }
                        }
                        Slot {
                            plain: pick(None, None)?,
                            principal_uids,
                            resource_uids,
                            refined,
                        }
                    };
                    slots.insert((action, pk, rk), slot);
                }
            }
        }
        Ok(PolicyIndex { by_action, slots })
    }

    /// Every policy whose action scope matches `action`.
    pub(crate) fn for_action(&self, action: Action) -> &PolicySet {
        &self.by_action[action.index()]
    }

    /// The policies that can apply to this request; `None` if the schema
    /// does not allow this action for these principal and resource types.
    pub(crate) fn select(
        &self,
        action: Action,
        (pk, pu): (Kind, &EntityUid),
        (rk, ru): (Kind, &EntityUid),
    ) -> Option<&PolicySet> {
        let slot = self.slots.get(&(action, pk, rk))?;
        let pu = slot.principal_uids.contains(pu).then(|| pu.clone());
        let ru = slot.resource_uids.contains(ru).then(|| ru.clone());
        if pu.is_none() && ru.is_none() {
            return Some(&slot.plain);
        }
        // Complete by construction; the fallback is merely never wrong.
        Some(
            slot.refined
                .get(&(pu, ru))
                .unwrap_or_else(|| self.for_action(action)),
        )
    }
}
