//! Turning a [`DecisionRequest`] into what Cedar evaluates: entity uids, the
//! entities with their attributes, and the action entity with its groups.
//!
//! Everything here is a pure function of the request and of the schema's
//! action hierarchy, which is computed once per loaded policy.
//!
//! # Why `cedar-policy-core`
//! The public `cedar_policy::Entity::new` re-evaluates every attribute as an
//! expression and `Entities::from_entities` recomputes a transitive closure;
//! together that was ~10 µs of a ~17 µs decision. Here the entities are built
//! from values with `cedar-policy-core` (pinned to the same exact version as
//! `cedar-policy`, whose types it shares) and stored with
//! `TCComputation::AssumeAlreadyComputed`, which is exact for sios: principal
//! and resource entities have no parents, and the action entity comes from the
//! schema with its ancestors already complete. At load time the same builder
//! is run on one request of every entity shape *with* the schema, so a schema
//! that does not describe what is built here is refused.

use crate::model::{Action, Brain, Client, DecisionRequest, MemoryNamespace, Principal, Resource};
use cedar_policy::{Entities, EntityId, EntityTypeName, EntityUid, Schema};
use cedar_policy_core::ast::{self as cast, PartialValue, Value};
use cedar_policy_core::entities as cent;
use cedar_policy_core::extensions::Extensions;
use std::collections::{BTreeSet, HashSet};
use std::str::FromStr;
use std::sync::Arc;

/// The schema's namespace.
pub(crate) const NAMESPACE: &str = "Sios";

/// Entity id of the one `Sios::AuditLog` entity.
pub(crate) const AUDIT_LOG_ID: &str = "audit";
/// Entity id of the one `Sios::Appliance` entity.
pub(crate) const APPLIANCE_ID: &str = "appliance";

/// The entity types a principal or resource can have, as indexes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Client,
    Brain,
    Service,
    MemoryNamespace,
    AuditLog,
    Process,
    Appliance,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] = [
        Kind::Client,
        Kind::Brain,
        Kind::Service,
        Kind::MemoryNamespace,
        Kind::AuditLog,
        Kind::Process,
        Kind::Appliance,
    ];

    fn basename(self) -> &'static str {
        match self {
            Kind::Client => "Client",
            Kind::Brain => "Brain",
            Kind::Service => "Service",
            Kind::MemoryNamespace => "MemoryNamespace",
            Kind::AuditLog => "AuditLog",
            Kind::Process => "Process",
            Kind::Appliance => "Appliance",
        }
    }

    pub(crate) fn of_principal(p: &Principal) -> Kind {
        match p {
            Principal::Client(_) => Kind::Client,
            Principal::Brain(_) => Kind::Brain,
            Principal::Service(_) => Kind::Service,
        }
    }

    pub(crate) fn of_resource(r: &Resource) -> Kind {
        match r {
            Resource::Brain(_) => Kind::Brain,
            Resource::MemoryNamespace(_) => Kind::MemoryNamespace,
            Resource::AuditLog => Kind::AuditLog,
            Resource::Process(_) => Kind::Process,
            Resource::Appliance => Kind::Appliance,
        }
    }
}

/// Cedar names resolved once per loaded policy.
#[derive(Debug, Clone)]
pub(crate) struct CedarModel {
    /// Indexed by `Kind as usize`.
    types: Vec<EntityTypeName>,
    /// Indexed by [`Action::index`].
    action_uids: Vec<EntityUid>,
    /// The action entities (with their groups as ancestors), same index.
    action_entities: Vec<Option<Arc<cast::Entity>>>,
    /// For each action (same index), the action itself and every group it is in.
    action_ancestry: Vec<HashSet<EntityUid>>,
}

/// The three uids of a request and the entity store to decide it against.
pub(crate) struct CedarRequest {
    pub principal: EntityUid,
    pub action: EntityUid,
    pub resource: EntityUid,
    pub entities: Entities,
}

fn type_name(basename: &str) -> Result<EntityTypeName, String> {
    EntityTypeName::from_str(&format!("{NAMESPACE}::{basename}"))
        .map_err(|e| format!("`{NAMESPACE}::{basename}` is not a valid entity type name: {e}"))
}

impl CedarModel {
    /// Resolves the names and reads the action hierarchy from `schema`.
    /// Fails if the schema lacks an action the kernel asks about.
    pub(crate) fn new(schema: &Schema) -> Result<Self, String> {
        let action_type = type_name("Action")?;
        let action_uids: Vec<EntityUid> = Action::ALL
            .iter()
            .map(|a| {
                EntityUid::from_type_name_and_id(action_type.clone(), EntityId::new(a.as_str()))
            })
            .collect();
        let declared: HashSet<&EntityUid> = schema.actions().collect();
        let missing: Vec<String> = action_uids
            .iter()
            .filter(|uid| !declared.contains(uid))
            .map(|uid| uid.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the schema does not declare {}, which the kernel asks about; \
                 keep every action of the shipped sios.cedarschema",
                missing.join(", ")
            ));
        }
        let store = schema
            .action_entities()
            .map_err(|e| format!("the schema's actions do not form a valid hierarchy: {e}"))?;
        let action_entities = action_uids
            .iter()
            .map(|uid| {
                store
                    .get(uid)
                    .map(|e| Arc::new(AsRef::<cast::Entity>::as_ref(e).clone()))
            })
            .collect();
        let action_ancestry = action_uids
            .iter()
            .map(|uid| {
                let mut set: HashSet<EntityUid> = store
                    .ancestors(uid)
                    .map(|it| it.cloned().collect())
                    .unwrap_or_default();
                set.insert(uid.clone());
                set
            })
            .collect();
        Ok(CedarModel {
            types: Kind::ALL
                .iter()
                .map(|k| type_name(k.basename()))
                .collect::<Result<_, _>>()?,
            action_uids,
            action_entities,
            action_ancestry,
        })
    }

    /// The action uids, indexed by [`Action::index`].
    pub(crate) fn action_uids(&self) -> &[EntityUid] {
        &self.action_uids
    }

    /// The action and every action group it belongs to.
    pub(crate) fn action_ancestry(&self, action: Action) -> &HashSet<EntityUid> {
        &self.action_ancestry[action.index()]
    }

    pub(crate) fn type_name(&self, kind: Kind) -> &EntityTypeName {
        &self.types[kind as usize]
    }

    fn uid(&self, kind: Kind, id: &str) -> EntityUid {
        EntityUid::from_type_name_and_id(self.type_name(kind).clone(), EntityId::new(id))
    }

    pub(crate) fn principal_uid(&self, p: &Principal) -> EntityUid {
        match p {
            Principal::Client(c) => self.uid(Kind::Client, &c.name),
            Principal::Brain(b) => self.uid(Kind::Brain, &b.name),
            Principal::Service(s) => self.uid(Kind::Service, &s.name),
        }
    }

    pub(crate) fn resource_uid(&self, r: &Resource) -> EntityUid {
        match r {
            Resource::Brain(b) => self.uid(Kind::Brain, &b.name),
            Resource::MemoryNamespace(m) => self.uid(Kind::MemoryNamespace, &m.name),
            Resource::AuditLog => self.uid(Kind::AuditLog, AUDIT_LOG_ID),
            Resource::Process(p) => self.uid(Kind::Process, &p.name),
            Resource::Appliance => self.uid(Kind::Appliance, APPLIANCE_ID),
        }
    }

    fn client_entity(&self, uid: EntityUid, c: &Client) -> cast::Entity {
        entity(
            uid,
            vec![
                ("id", string(format!("client:{}", c.name))),
                ("uid", Value::from(i64::from(c.uid))),
                ("gid", Value::from(i64::from(c.gid))),
                ("name", string(&c.name)),
                ("clearance", Value::from(i64::from(c.clearance))),
                ("groups", strings(&c.groups)),
                ("operator", Value::from(c.operator)),
                ("known", Value::from(c.known)),
            ],
        )
    }

    fn brain_entity(&self, uid: EntityUid, b: &Brain) -> cast::Entity {
        let callees = b
            .callees
            .iter()
            .map(|name| Value::from(cast::EntityUID::from(self.uid(Kind::Brain, name))));
        entity(
            uid,
            vec![
                ("id", string(format!("brain:{}", b.name))),
                ("name", string(&b.name)),
                ("kind", string(b.kind.as_str())),
                ("sensitivity", Value::from(i64::from(b.sensitivity))),
                ("callees", Value::set(callees, None)),
                ("namespaces", strings(&b.namespaces)),
            ],
        )
    }

    fn namespace_entity(&self, uid: EntityUid, m: &MemoryNamespace) -> cast::Entity {
        entity(
            uid,
            vec![
                ("name", string(&m.name)),
                ("owner", string(&m.owner)),
                ("readers", strings(&m.readers)),
                ("writers", strings(&m.writers)),
                ("reader_groups", strings(&m.reader_groups)),
                ("writer_groups", strings(&m.writer_groups)),
            ],
        )
    }

    fn principal_entity(&self, uid: EntityUid, p: &Principal) -> cast::Entity {
        match p {
            Principal::Client(c) => self.client_entity(uid, c),
            Principal::Brain(b) => self.brain_entity(uid, b),
            Principal::Service(s) => entity(
                uid,
                vec![
                    ("id", string(format!("service:{}", s.name))),
                    ("name", string(&s.name)),
                ],
            ),
        }
    }

    fn resource_entity(&self, uid: EntityUid, r: &Resource) -> cast::Entity {
        match r {
            Resource::Brain(b) => self.brain_entity(uid, b),
            Resource::MemoryNamespace(m) => self.namespace_entity(uid, m),
            Resource::Process(p) => entity(uid, vec![("name", string(&p.name))]),
            Resource::AuditLog | Resource::Appliance => entity(uid, Vec::new()),
        }
    }

    /// The entities Cedar needs for `req`. With `schema`, they are also
    /// checked against it (done once per entity shape at load time, not per
    /// request).
    pub(crate) fn build(
        &self,
        req: &DecisionRequest,
        schema: Option<&Schema>,
    ) -> Result<CedarRequest, String> {
        let principal = self.principal_uid(&req.principal);
        let resource = self.resource_uid(&req.resource);
        let action = self.action_uids[req.action.index()].clone();
        let mut entities = Vec::with_capacity(3);
        entities.push(self.principal_entity(principal.clone(), &req.principal));
        if principal == resource {
            // A brain asking about itself: one entity, described once.
            let same = matches!((&req.principal, &req.resource),
                (Principal::Brain(a), Resource::Brain(b)) if a == b);
            if !same {
                return Err(format!(
                    "the request describes {principal} twice, with different attributes"
                ));
            }
        } else {
            entities.push(self.resource_entity(resource.clone(), &req.resource));
        }
        let store = match schema {
            None => {
                let action_entity = self.action_entities[req.action.index()]
                    .as_ref()
                    .map(|a| a.as_ref().clone());
                cent::Entities::from_entities(
                    entities.into_iter().chain(action_entity),
                    None::<&cent::NoEntitiesSchema>,
                    // Exact: see the module doc.
                    cent::TCComputation::AssumeAlreadyComputed,
                    Extensions::all_available(),
                )
            }
            Some(schema) => cent::Entities::from_entities(
                entities,
                Some(&cedar_policy_core::validator::CoreSchema::new(
                    schema.as_ref(),
                )),
                cent::TCComputation::ComputeNow,
                Extensions::all_available(),
            ),
        }
        .map_err(|e| format!("the request's entities are not valid: {e}"))?;
        Ok(CedarRequest {
            principal,
            action,
            resource,
            entities: Entities::from(store),
        })
    }
}

fn entity(uid: EntityUid, attrs: Vec<(&'static str, Value)>) -> cast::Entity {
    cast::Entity::new_with_attr_partial_value(
        uid.into(),
        attrs
            .into_iter()
            .map(|(k, v)| (k.into(), PartialValue::from(v))),
        HashSet::new(),
        HashSet::new(),
        [],
    )
}

fn string(s: impl Into<String>) -> Value {
    Value::from(s.into())
}

fn strings(set: &BTreeSet<String>) -> Value {
    Value::set(set.iter().map(|s| string(s.as_str())), None)
}

/// One request per principal and resource type, used at load time to check
/// that the schema accepts every entity shape the kernel sends.
pub(crate) fn sample_requests() -> Vec<DecisionRequest> {
    use crate::model::{BrainKind, Process, Service};
    let brain = Brain {
        name: "sample-brain".into(),
        kind: BrainKind::Domain,
        sensitivity: 1,
        callees: BTreeSet::from(["other-brain".to_owned()]),
        namespaces: BTreeSet::from(["sample".to_owned()]),
    };
    let client = Principal::Client(Client {
        uid: 1000,
        gid: 1000,
        name: "sample".into(),
        clearance: 1,
        groups: BTreeSet::from(["staff".to_owned()]),
        operator: false,
        known: true,
    });
    let resources = [
        Resource::Brain(brain.clone()),
        Resource::MemoryNamespace(MemoryNamespace::private("sample", "client:sample")),
        Resource::AuditLog,
        Resource::Process(Process {
            name: "sios-audit".into(),
        }),
        Resource::Appliance,
    ];
    let principals = [
        client,
        Principal::Brain(Brain {
            name: "caller-brain".into(),
            ..brain
        }),
        Principal::Service(Service {
            name: "gateway".into(),
        }),
    ];
    principals
        .iter()
        .flat_map(|p| {
            resources.iter().map(|r| DecisionRequest {
                principal: p.clone(),
                action: Action::Status,
                resource: r.clone(),
            })
        })
        .collect()
}
