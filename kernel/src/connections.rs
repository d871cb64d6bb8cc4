//! How many client connections one uid may hold open at once.
//!
//! Each connection may have [`crate::api::MAX_IN_FLIGHT_PER_CLIENT`]
//! requests open, so that cap bounds one connection; this one bounds how
//! many connections one user adds up, so that nobody who may reach the
//! socket can take every descriptor the kernel has (brains, services and
//! other users need them too). Counted by SO_PEERCRED uid, which the client
//! cannot choose.
//!
//! Each uid also has one [`ByteBudget`], shared by all its connections, that
//! bounds the bytes of its requests the kernel holds at once
//! (`[limits] max_request_bytes_per_uid`, see [`sios_ipc::budget`]).

use sios_ipc::ClientLoad;
use sios_ipc::budget::ByteBudget;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// The open-connection count per uid, shared by the accept loop and every
/// connection it admitted.
#[derive(Debug)]
pub struct ConnectionLimit {
    per_uid: usize,
    bytes_per_uid: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: HashMap<u32, usize>,
    /// Each uid's byte budget, kept once made: a request may outlive its
    /// connection (it runs detached), and a new connection must count
    /// against the same budget as the requests still running.
    budgets: HashMap<u32, Arc<ByteBudget>>,
    /// Refused connections per uid still held to be told why.
    explaining: HashMap<u32, usize>,
    /// When a refusal was last logged: a client retrying in a loop would
    /// otherwise fill the log.
    last_warning: Option<Instant>,
}

/// A refused connection's reason, in the words its client is sent.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    /// Whether this refusal should be logged (at most one a second).
    pub log: bool,
    /// Held while the refused connection is kept open to be told why;
    /// `None` once [`MAX_EXPLAINING_PER_UID`] of the uid's refused
    /// connections are held already: this one is closed at once, unanswered.
    pub explain: Option<Explaining>,
}

/// One refused connection kept open to be told why; dropping it gives the
/// place back.
#[derive(Debug)]
pub struct Explaining {
    limit: Arc<ConnectionLimit>,
    uid: u32,
}

/// Refused connections of one uid kept open at once to be told why. Each
/// holds a descriptor for a moment: a client reconnecting in a loop past its
/// limit must not turn those moments into descriptors without bound.
pub const MAX_EXPLAINING_PER_UID: usize = 8;

/// One admitted connection; dropping it gives the place back.
#[derive(Debug)]
pub struct OpenConnection {
    limit: Arc<ConnectionLimit>,
    uid: u32,
    budget: Arc<ByteBudget>,
}

impl OpenConnection {
    /// The byte budget of the connection's uid.
    pub fn budget(&self) -> Arc<ByteBudget> {
        Arc::clone(&self.budget)
    }
}

/// The configuration key of the per-uid byte budget, named in refusals.
pub const BYTES_SETTING: &str = "[limits] max_request_bytes_per_uid";

const WARN_EVERY: Duration = Duration::from_secs(1);

impl ConnectionLimit {
    /// At most `per_uid` connections per uid, whose requests hold at most
    /// `bytes_per_uid` in each stage of [`sios_ipc::budget`].
    pub fn new(per_uid: usize, bytes_per_uid: u64) -> Arc<ConnectionLimit> {
        Arc::new(ConnectionLimit {
            per_uid,
            bytes_per_uid,
            state: Mutex::new(State::default()),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits one more connection of `uid`, or says why not.
    pub fn admit(self: &Arc<Self>, uid: u32) -> Result<OpenConnection, Refused> {
        let mut state = self.state();
        let open = state.open.entry(uid).or_default();
        if *open < self.per_uid {
            *open += 1;
            let budget = state.budgets.entry(uid).or_insert_with(|| {
                ByteBudget::new(format!("uid {uid}"), BYTES_SETTING, self.bytes_per_uid)
            });
            return Ok(OpenConnection {
                limit: Arc::clone(self),
                uid,
                budget: Arc::clone(budget),
            });
        }
        let message = format!(
            "uid {uid} already has {open} connections open to the kernel, its limit \
             ([limits] max_connections_per_uid); close some (each may carry many requests) \
             or ask the operator to raise the limit",
            open = *open
        );
        let log = state
            .last_warning
            .is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if log {
            state.last_warning = Some(Instant::now());
        }
        let explaining = state.explaining.entry(uid).or_default();
        let explain = (*explaining < MAX_EXPLAINING_PER_UID).then(|| {
            *explaining += 1;
            Explaining {
                limit: Arc::clone(self),
                uid,
            }
        });
        Err(Refused {
            message,
            log,
            explain,
        })
    }

    /// What each uid with a connection open or bytes held has in the
    /// kernel now, by uid.
    pub fn loads(&self) -> Vec<ClientLoad> {
        let state = self.state();
        let mut loads: Vec<ClientLoad> = state
            .budgets
            .iter()
            .map(|(&uid, budget)| ClientLoad {
                uid,
                connections: state.open.get(&uid).copied().unwrap_or(0) as u64,
                connection_limit: self.per_uid as u64,
                reading_bytes: budget.reading_bytes(),
                serving_bytes: budget.serving_bytes(),
                limit_bytes: budget.limit_bytes(),
            })
            .filter(|load| load.connections + load.reading_bytes + load.serving_bytes > 0)
            .collect();
        loads.sort_by_key(|load| load.uid);
        loads
    }

    /// Connections `uid` holds open now.
    pub fn open(&self, uid: u32) -> usize {
        self.state().open.get(&uid).copied().unwrap_or(0)
    }
}

/// Gives one of `uid`'s places in `counts` back, forgetting a uid at zero.
fn release(counts: &mut HashMap<u32, usize>, uid: u32) {
    if let Some(count) = counts.get_mut(&uid) {
        *count = count.saturating_sub(1);
        if *count == 0 {
            counts.remove(&uid);
        }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        release(&mut self.limit.state().open, self.uid);
    }
}

impl Drop for Explaining {
    fn drop(&mut self) {
        release(&mut self.limit.state().explaining, self.uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_gets_its_own_places_back_when_it_closes() {
        let limit = ConnectionLimit::new(2, 1 << 20);
        let a1 = limit.admit(1000).unwrap();
        let _a2 = limit.admit(1000).unwrap();
        let refused = limit.admit(1000).unwrap_err();
        assert!(refused.log, "the first refusal is logged");
        assert!(
            refused.message.contains("uid 1000")
                && refused.message.contains("max_connections_per_uid"),
            "{}",
            refused.message
        );
        assert!(!limit.admit(1000).unwrap_err().log, "one log line a second");
        // Another uid is not affected.
        let _b = limit.admit(1001).unwrap();
        drop(a1);
        assert_eq!(limit.open(1000), 1);
        let _a3 = limit.admit(1000).unwrap();
        assert_eq!(limit.open(1000), 2);
    }

    #[test]
    fn only_a_few_refused_connections_per_uid_are_held_to_be_told_why() {
        let limit = ConnectionLimit::new(1, 1 << 20);
        let _open = limit.admit(1000).unwrap();
        let mut held: Vec<Explaining> = (0..MAX_EXPLAINING_PER_UID)
            .map(|_| limit.admit(1000).unwrap_err().explain.expect("told why"))
            .collect();
        assert!(
            limit.admit(1000).unwrap_err().explain.is_none(),
            "a reconnect loop is closed at once past the cap"
        );
        // Another uid's refusals are still explained.
        let _other = limit.admit(1001).unwrap();
        assert!(limit.admit(1001).unwrap_err().explain.is_some());
        held.pop();
        assert!(limit.admit(1000).unwrap_err().explain.is_some());
        drop(held);
        assert!(!limit.state().explaining.contains_key(&1000));
    }

    #[test]
    fn a_uid_keeps_one_byte_budget_across_its_connections() {
        let limit = ConnectionLimit::new(4, 1 << 20);
        let first = limit.admit(1000).unwrap();
        let second = limit.admit(1000).unwrap();
        assert!(Arc::ptr_eq(&first.budget(), &second.budget()));
        assert!(!Arc::ptr_eq(
            &first.budget(),
            &limit.admit(1001).unwrap().budget()
        ));
        // A request may run on after its connection closed: the uid's next
        // connection must count against the same budget.
        let budget = first.budget();
        drop((first, second));
        assert!(Arc::ptr_eq(&budget, &limit.admit(1000).unwrap().budget()));
        assert_eq!(budget.limit_bytes(), 1 << 20);
    }

    #[test]
    fn loads_list_the_uids_holding_something_in_uid_order() {
        let limit = ConnectionLimit::new(4, 1 << 20);
        let _b = limit.admit(1001).unwrap();
        let a = limit.admit(1000).unwrap();
        let _a2 = limit.admit(1000).unwrap();
        // A request of about 5,000 bytes.
        let policy = sios_ipc::KernelRequest::PolicyLoad {
            files: vec![("p.cedar".into(), "x".repeat(4990))],
        };
        let held = a.budget().hold(&policy, 0).unwrap();
        let gone = limit.admit(1002).unwrap();
        drop(gone);
        let load = |uid, connections, serving_bytes| ClientLoad {
            uid,
            connections,
            connection_limit: 4,
            reading_bytes: 0,
            serving_bytes,
            limit_bytes: 1 << 20,
        };
        assert_eq!(
            limit.loads(),
            vec![load(1000, 2, 5 * 1024), load(1001, 1, 0)],
            "1002 holds nothing and is left out"
        );
        // A request running on after its connections closed still shows.
        drop((a, _a2));
        assert_eq!(
            limit.loads(),
            vec![load(1000, 0, 5 * 1024), load(1001, 1, 0)]
        );
        drop(held);
        assert_eq!(limit.loads(), vec![load(1001, 1, 0)]);
    }

    #[test]
    fn a_uid_with_nothing_open_is_forgotten() {
        let limit = ConnectionLimit::new(1, 1 << 20);
        drop(limit.admit(7).unwrap());
        assert!(limit.state().open.is_empty());
    }
}
