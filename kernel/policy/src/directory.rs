//! Who a client is: mapping the uid and gids the kernel reads with
//! SO_PEERCRED to a principal with a name, a clearance, groups and the
//! operator role.
//!
//! The kernel embeds [`PolicyConfig`] as the `[policy]` table of its config
//! file; `deploy/policy/clients.example.toml` is a worked example:
//! ```toml
//! [policy.operators]
//! uids = [0]           # root, written out: no uid is an operator by itself
//! gids = []
//!
//! [[policy.clients]]
//! uid = 1000
//! name = "alice"
//! clearance = "confidential"   # or 2
//! groups = ["clinicians"]
//!
//! [[policy.groups]]
//! gid = 1500
//! name = "auditors"
//! clearance = "internal"
//! ```
//! Nothing about a caller comes from the caller: only its uid and gids, which
//! the kernel reads from the socket, and this configuration.

use crate::model::{Client, LEVEL_NAMES, MAX_LEVEL, Principal};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// The `[policy]` table of the kernel's config.
///
/// `PolicyConfig::default()` (what a config without a `[policy]` table means)
/// is the shipped default: uid 0 is the only operator and no client is named.
/// Writing `[policy.operators]` replaces that list entirely: `uids = []`
/// leaves the appliance without operators.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Directory of the policy to activate at start (`*.cedar` and optionally
    /// `sios.cedarschema`); `None` means the built-in default policy.
    pub dir: Option<PathBuf>,
    /// Who holds the operator role.
    pub operators: Operators,
    /// Named users.
    pub clients: Vec<ClientEntry>,
    /// Named groups.
    pub groups: Vec<GroupEntry>,
    /// The gid whose members (primary or supplementary) may connect to the
    /// kernel's client socket. `None` (the default): only the kernel's own
    /// uid can, because the state and run directories stay 0700. Being able
    /// to connect grants nothing by itself: every request is still decided
    /// by the policy for the principal the caller maps to.
    pub client_gid: Option<u32>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            dir: None,
            // The shipped default, explicit: root is an operator because this
            // line says so, not because it is uid 0.
            operators: Operators {
                uids: vec![0],
                gids: Vec::new(),
            },
            clients: Vec::new(),
            groups: Vec::new(),
            client_gid: None,
        }
    }
}

/// Operators: every client whose uid, primary gid or a supplementary gid is
/// listed here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Operators {
    pub uids: Vec<u32>,
    pub gids: Vec<u32>,
}

/// A named user.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientEntry {
    pub uid: u32,
    /// The name policies and memory owners use (`client:<name>`).
    pub name: String,
    #[serde(default)]
    pub clearance: Level,
    /// Group names, in addition to those of the groups its gids map to.
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A named group: every client with this primary or supplementary gid is a
/// member and has at least this clearance.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GroupEntry {
    pub gid: u32,
    pub name: String,
    #[serde(default)]
    pub clearance: Level,
}

/// A clearance or sensitivity level, 0..=3. Written in config as a number or
/// as one of `public`, `internal`, `confidential`, `restricted`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Level(pub u8);

impl Level {
    /// The level's name.
    pub fn name(self) -> &'static str {
        LEVEL_NAMES
            .get(usize::from(self.0))
            .copied()
            .unwrap_or("out-of-range")
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(i64),
            Name(String),
        }
        let expected = || {
            format!(
                "a level from 0 to {MAX_LEVEL} or one of {}",
                LEVEL_NAMES.join(", ")
            )
        };
        match Raw::deserialize(d)? {
            Raw::Number(n) => u8::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_LEVEL)
                .map(Level)
                .ok_or_else(|| serde::de::Error::custom(format!("{n} is not {}", expected()))),
            Raw::Name(name) => LEVEL_NAMES
                .iter()
                .position(|l| *l == name)
                .and_then(|i| u8::try_from(i).ok())
                .map(Level)
                .ok_or_else(|| {
                    serde::de::Error::custom(format!("\"{name}\" is not {}", expected()))
                }),
        }
    }
}

/// Why a `[policy]` table cannot be used.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DirectoryError {
    #[error(
        "[policy] {what} name \"{name}\" is not usable: use 1-64 characters of a-z, 0-9, \
         '.', '_' and '-', starting with a letter or digit, and not starting with \"uid-\" \
         (reserved for callers the config does not name)"
    )]
    BadName { what: &'static str, name: String },
    #[error("[policy] uid {uid} is listed twice in [[policy.clients]]")]
    DuplicateUid { uid: u32 },
    #[error("[policy] gid {gid} is listed twice in [[policy.groups]]")]
    DuplicateGid { gid: u32 },
    #[error("[policy] the {what} name \"{name}\" is used twice")]
    DuplicateName { what: &'static str, name: String },
}

/// True for a usable client or group name.
fn is_valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && !name.starts_with("uid-")
}

impl PolicyConfig {
    /// Checks the table and indexes it for look-ups.
    pub fn directory(&self) -> Result<ClientDirectory, DirectoryError> {
        let mut clients = BTreeMap::new();
        let mut names = BTreeSet::new();
        for c in &self.clients {
            if !is_valid_name(&c.name) {
                return Err(DirectoryError::BadName {
                    what: "client",
                    name: c.name.clone(),
                });
            }
            if let Some(g) = c.groups.iter().find(|g| !is_valid_name(g)) {
                return Err(DirectoryError::BadName {
                    what: "group",
                    name: g.clone(),
                });
            }
            if !names.insert(c.name.clone()) {
                return Err(DirectoryError::DuplicateName {
                    what: "client",
                    name: c.name.clone(),
                });
            }
            if clients.insert(c.uid, c.clone()).is_some() {
                return Err(DirectoryError::DuplicateUid { uid: c.uid });
            }
        }
        let mut groups = BTreeMap::new();
        let mut group_names = BTreeSet::new();
        for g in &self.groups {
            if !is_valid_name(&g.name) {
                return Err(DirectoryError::BadName {
                    what: "group",
                    name: g.name.clone(),
                });
            }
            if !group_names.insert(g.name.clone()) {
                return Err(DirectoryError::DuplicateName {
                    what: "group",
                    name: g.name.clone(),
                });
            }
            if groups.insert(g.gid, g.clone()).is_some() {
                return Err(DirectoryError::DuplicateGid { gid: g.gid });
            }
        }
        Ok(ClientDirectory {
            operator_uids: self.operators.uids.iter().copied().collect(),
            operator_gids: self.operators.gids.iter().copied().collect(),
            clients,
            groups,
        })
    }
}

/// A checked [`PolicyConfig`], ready to map callers to principals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientDirectory {
    operator_uids: BTreeSet<u32>,
    operator_gids: BTreeSet<u32>,
    clients: BTreeMap<u32, ClientEntry>,
    groups: BTreeMap<u32, GroupEntry>,
}

impl ClientDirectory {
    /// The principal for a caller with this uid, primary gid and
    /// supplementary gids (as the kernel read them from the socket; pass `&[]`
    /// if it only has SO_PEERCRED's primary gid).
    ///
    /// - name: the config's, or `uid-<uid>` for a uid it does not name;
    /// - groups: the client entry's groups plus the names of the configured
    ///   groups among its gids;
    /// - clearance: the highest of the client entry's and those groups';
    /// - operator: its uid or any of its gids is listed under operators;
    /// - known: any of the above matched.
    ///
    /// An unknown caller gets clearance 0, no groups, `known = false`.
    pub fn principal_for(&self, uid: u32, gid: u32, supplementary_gids: &[u32]) -> Principal {
        let gids: BTreeSet<u32> = std::iter::once(gid)
            .chain(supplementary_gids.iter().copied())
            .collect();
        let entry = self.clients.get(&uid);
        let member_of: Vec<&GroupEntry> = gids.iter().filter_map(|g| self.groups.get(g)).collect();
        let mut groups: BTreeSet<String> = entry
            .map(|e| e.groups.iter().cloned().collect())
            .unwrap_or_default();
        groups.extend(member_of.iter().map(|g| g.name.clone()));
        let clearance = entry
            .map(|e| e.clearance)
            .into_iter()
            .chain(member_of.iter().map(|g| g.clearance))
            .max()
            .unwrap_or_default();
        let operator = self.operator_uids.contains(&uid)
            || gids.iter().any(|g| self.operator_gids.contains(g));
        Principal::Client(Client {
            uid,
            gid,
            name: entry.map_or_else(|| format!("uid-{uid}"), |e| e.name.clone()),
            clearance: clearance.0,
            groups,
            operator,
            known: entry.is_some() || !member_of.is_empty() || operator,
        })
    }
}
