//! Limits on what the store holds, and the running count they are checked
//! against.
//!
//! Three limits, from the config's `[memory]` section: the bytes one
//! owner's namespaces hold together ([`quota_owner`]: making more
//! namespaces gains nobody room), the bytes of the whole store and its
//! items. The last two bound more than the disk: the search index keeps
//! every embedding in RAM, and a store whose index does not fit in the
//! service's memory limit could never be opened again.
//!
//! An item counts as its namespace, key and stored row (sealed value,
//! metadata and embedding, with their nonces and tags): what it occupies,
//! not what the client sent. The count lives in memory: it is measured when
//! the store opens and changed only after a commit, under the writer lock,
//! so a write checked against it cannot race another.

use sios_ipc::memory::{
    DEFAULT_CAPACITY_MIB, DEFAULT_MAX_ITEMS, DEFAULT_OWNER_QUOTA_MIB, quota_owner,
};
use sios_ipc::{MemoryError, human_bytes};
use std::collections::{BTreeMap, HashMap};

const MIB: u64 = 1024 * 1024;

/// What the store may hold. [`Quotas::default`] is the shipped default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quotas {
    /// Bytes one owner's namespaces may hold together (`owner_quota_mib`).
    pub owner_bytes: u64,
    /// Bytes the whole store may hold (`capacity_mib`).
    pub total_bytes: u64,
    /// Items the whole store may hold (`max_items`).
    pub total_items: u64,
}

impl Quotas {
    /// The limits as the config states them (MiB, MiB, items).
    pub fn from_config(owner_quota_mib: u64, capacity_mib: u64, max_items: u64) -> Quotas {
        Quotas {
            owner_bytes: owner_quota_mib.saturating_mul(MIB),
            total_bytes: capacity_mib.saturating_mul(MIB),
            total_items: max_items,
        }
    }
}

impl Default for Quotas {
    fn default() -> Quotas {
        Quotas::from_config(
            DEFAULT_OWNER_QUOTA_MIB,
            DEFAULT_CAPACITY_MIB,
            DEFAULT_MAX_ITEMS,
        )
    }
}

/// What one item occupies, as the quotas count it.
pub fn stored_bytes(namespace: &str, key: &str, row_bytes: usize) -> u64 {
    (namespace.len() + key.len() + row_bytes) as u64
}

/// What the store holds now.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub items: u64,
    pub bytes: u64,
    /// Bytes per quota owner; an owner holding nothing is absent.
    pub by_owner: HashMap<String, u64>,
}

/// What one write adds to [`Usage`] (negative: frees).
#[derive(Debug, Default)]
pub struct UsageChange {
    items: i64,
    bytes: i64,
    by_owner: BTreeMap<String, i64>,
}

impl UsageChange {
    /// Counts an item of `namespace` coming (`items` = 1), going (-1) or
    /// replaced (0), with the bytes it gains or loses.
    pub fn add(&mut self, namespace: &str, items: i64, bytes: i64) {
        self.items += items;
        self.bytes += bytes;
        *self
            .by_owner
            .entry(quota_owner(namespace).to_owned())
            .or_default() += bytes;
    }
}

fn after(used: u64, delta: i64) -> u64 {
    used.saturating_add_signed(delta)
}

impl Usage {
    /// Counts one stored item (while measuring the store at open).
    pub fn count(&mut self, namespace: &str, bytes: u64) {
        self.items += 1;
        self.bytes += bytes;
        *self
            .by_owner
            .entry(quota_owner(namespace).to_owned())
            .or_default() += bytes;
    }

    /// Refuses `change` if it would take an owner or the store past a limit.
    /// Only growth is refused: a write that frees room (or keeps it) always
    /// passes, even over a limit lowered since, so that a client over its
    /// quota can still replace items with smaller ones.
    pub fn check(&self, change: &UsageChange, quotas: &Quotas) -> Result<(), MemoryError> {
        let refuse = |scope: String, would: u64, limit: u64, unit: &str, setting: &str| {
            Err(MemoryError::QuotaExceeded {
                scope,
                would,
                limit,
                unit: unit.into(),
                setting: setting.into(),
            })
        };
        for (owner, &delta) in &change.by_owner {
            let used = self.by_owner.get(owner).copied().unwrap_or(0);
            if delta > 0 && after(used, delta) > quotas.owner_bytes {
                return refuse(
                    format!("the memory of {owner}"),
                    after(used, delta),
                    quotas.owner_bytes,
                    "bytes",
                    "owner_quota_mib",
                );
            }
        }
        let store_wide = [
            (
                self.bytes,
                change.bytes,
                quotas.total_bytes,
                "bytes",
                "capacity_mib",
            ),
            (
                self.items,
                change.items,
                quotas.total_items,
                "items",
                "max_items",
            ),
        ];
        for (used, delta, limit, unit, setting) in store_wide {
            if delta > 0 && after(used, delta) > limit {
                return refuse(
                    "the memory store".into(),
                    after(used, delta),
                    limit,
                    unit,
                    setting,
                );
            }
        }
        Ok(())
    }

    /// What the store holds against its limits, for `sios status`.
    pub fn describe(&self, quotas: &Quotas) -> String {
        let mut text = format!(
            "{} of {} items, {} of {}",
            self.items,
            quotas.total_items,
            human_bytes(self.bytes),
            human_bytes(quotas.total_bytes)
        );
        if let Some((owner, bytes)) = self.by_owner.iter().max_by_key(|(_, b)| **b) {
            text += &format!(
                "; fullest owner {owner}: {} of {}",
                human_bytes(*bytes),
                human_bytes(quotas.owner_bytes)
            );
        }
        text
    }

    /// Why the store takes no new item, if it is at a store-wide limit:
    /// then memory cannot do its job, and `sios status` says so.
    pub fn full(&self, quotas: &Quotas) -> Option<String> {
        let (what, setting) = if self.items >= quotas.total_items {
            ("items", "max_items")
        } else if self.bytes >= quotas.total_bytes {
            ("bytes", "capacity_mib")
        } else {
            return None;
        };
        Some(format!(
            "the memory store is full ({}); writes that add {what} are refused: delete items \
             or raise `[memory] {setting}` in the config",
            self.describe(quotas)
        ))
    }

    /// Takes a committed change into the count.
    pub fn apply(&mut self, change: UsageChange) {
        self.items = after(self.items, change.items);
        self.bytes = after(self.bytes, change.bytes);
        for (owner, delta) in change.by_owner {
            let used = self.by_owner.entry(owner).or_default();
            *used = after(*used, delta);
        }
        self.by_owner.retain(|_, bytes| *bytes > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: Quotas = Quotas {
        owner_bytes: 100,
        total_bytes: 150,
        total_items: 3,
    };

    fn change(entries: &[(&str, i64, i64)]) -> UsageChange {
        let mut change = UsageChange::default();
        for (namespace, items, bytes) in entries {
            change.add(namespace, *items, *bytes);
        }
        change
    }

    #[test]
    fn an_owner_is_limited_across_all_its_namespaces() {
        let mut usage = Usage::default();
        usage.apply(change(&[("client:a/one", 1, 60)]));
        let err = usage
            .check(&change(&[("client:a/two", 1, 41)]), &SMALL)
            .unwrap_err();
        assert!(
            matches!(&err, MemoryError::QuotaExceeded { scope, would: 101, limit: 100, setting, .. }
                if scope == "the memory of client:a" && setting == "owner_quota_mib"),
            "{err}"
        );
        assert!(err.to_string().contains("owner_quota_mib"), "{err}");
        // Another owner has its own quota; the store's total still binds.
        usage
            .check(&change(&[("client:b/x", 1, 40)]), &SMALL)
            .unwrap();
        let err = usage
            .check(&change(&[("tenant/acme", 1, 95)]), &SMALL)
            .unwrap_err();
        assert!(
            matches!(&err, MemoryError::QuotaExceeded { setting, .. } if setting == "capacity_mib"),
            "{err}"
        );
    }

    #[test]
    fn items_are_limited_and_freeing_always_passes() {
        let mut usage = Usage::default();
        usage.apply(change(&[("t/1", 1, 10), ("t/2", 1, 10), ("t/3", 1, 10)]));
        let err = usage.check(&change(&[("t/4", 1, 1)]), &SMALL).unwrap_err();
        assert!(
            matches!(&err, MemoryError::QuotaExceeded { unit, would: 4, .. } if unit == "items"),
            "{err}"
        );
        // A replacement adds no item.
        usage.check(&change(&[("t/1", 0, 5)]), &SMALL).unwrap();
        // Over a limit lowered since, shrinking still passes.
        let lowered = Quotas {
            owner_bytes: 1,
            ..SMALL
        };
        usage.check(&change(&[("t/1", 0, -5)]), &lowered).unwrap();
        usage.apply(change(&[("t/1", -1, -10), ("t/2", -1, -10)]));
        assert_eq!((usage.items, usage.bytes), (1, 10));
        assert_eq!(usage.by_owner.keys().collect::<Vec<_>>(), ["t/3"]);
    }

    #[test]
    fn a_full_store_says_which_limit_and_what_to_do() {
        let mut usage = Usage::default();
        assert_eq!(usage.full(&SMALL), None);
        usage.apply(change(&[("client:a/x", 1, 60), ("t/1", 1, 10)]));
        assert_eq!(
            usage.describe(&SMALL),
            "2 of 3 items, 70 B of 150 B; fullest owner client:a: 60 B of 100 B"
        );
        assert_eq!(usage.full(&SMALL), None);
        usage.apply(change(&[("t/2", 1, 10)]));
        let full = usage.full(&SMALL).expect("at max_items");
        assert!(full.contains("`[memory] max_items`"), "{full}");
    }

    #[test]
    fn counting_at_open_matches_applying_changes() {
        let mut counted = Usage::default();
        counted.count("client:a/x", 7);
        counted.count("brain:legal/cache", 5);
        let mut applied = Usage::default();
        applied.apply(change(&[("client:a/x", 1, 7), ("brain:legal/y", 1, 5)]));
        assert_eq!(counted, applied);
    }
}
