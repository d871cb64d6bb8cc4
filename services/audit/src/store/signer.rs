//! The signer thread: signs the latest committed tree for the intents that
//! wait for it, overlapping the commit when it can (see the module docs of
//! [`super`], "Group commit").

use super::{Shared, signed};
use crate::checkpoint::Checkpoint;
use crate::keys::SecretKey;
use crate::merkle::Hash;
use sios_ipc::{AuditError, Receipt};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// An intent call waiting for the checkpoint that covers its records.
pub(super) struct Waiter {
    pub(super) reply: oneshot::Sender<Result<Vec<Receipt>, AuditError>>,
    pub(super) receipts: Vec<Receipt>,
    /// When the batch holding its intent was committed (for
    /// [`StageTimings::answered`]).
    pub(super) committed_at: Instant,
}

/// What the signer thread works from; guarded by `Signer::state`.
#[derive(Default)]
struct SignerState {
    /// The latest committed tree not yet signed, the key to sign it with,
    /// and when the oldest unsigned commit happened.
    target: Option<(u64, Hash, Arc<SecretKey>, Instant)>,
    /// Intent calls whose records are in `target`.
    waiters: Vec<Waiter>,
    /// A tree being committed right now, to sign while the commit runs.
    tentative: Option<(u64, Hash, Arc<SecretKey>)>,
    /// The signature of the last tentative tree: used if that very tree
    /// (same size and root, hence same body) is committed.
    presigned: Option<(u64, Hash, String)>,
    /// Sign now even without waiters (flush, rotation, shutdown).
    urgent: bool,
    /// True while a signature is being computed.
    busy: bool,
    /// Looks in a row that found nothing to sign (see `signer_loop`).
    empty_looks: u32,
    /// The signer waits without a deadline: a commit must wake it.
    asleep: bool,
    stop: bool,
}

/// The signer thread. It signs the latest committed tree whenever an intent
/// waits for it (or, with only outcomes and events committed, after
/// [`IDLE_SIGN`]); one signature covers every batch committed before it
/// started. The writer never waits for it, so commits and signatures overlap.
pub(super) struct Signer {
    state: Arc<(Mutex<SignerState>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// How long committed records may stay without a signed checkpoint when no
/// intent waits for one.
pub const IDLE_SIGN: Duration = Duration::from_millis(20);

/// Looks every [`IDLE_SIGN`] that find nothing to sign before the signer
/// stops looking and waits to be woken (one second): a busy log's outcomes
/// then wake nobody, and an idle log's signer does not tick for ever.
const EMPTY_LOOKS_BEFORE_SLEEP: u32 = 50;

impl Signer {
    pub(super) fn start(shared: Arc<Shared>, origin: String) -> std::io::Result<Signer> {
        let state: Arc<(Mutex<SignerState>, std::sync::Condvar)> = Arc::default();
        let st = state.clone();
        let thread = std::thread::Builder::new()
            .name("audit-signer".into())
            .spawn(move || {
                signs_without_preempting();
                signer_loop(&st, &shared, &origin)
            })?;
        Ok(Signer {
            state,
            thread: Some(thread),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SignerState> {
        self.state.0.lock().expect("signer lock")
    }

    /// A batch with intents is about to be committed: start signing its tree
    /// now, so that signature and commit overlap. Only a tree that is then
    /// committed gets published (see `signer_loop`).
    ///
    /// Waking this thread costs the writer 15-25 µs here. Signing on the
    /// writer's own thread inside the commit instead (writeback started with
    /// `sync_file_range`, then the signature, then `fdatasync`) was measured
    /// on 2026-11-28 and is worse: the writeback did not proceed while the
    /// writer signed, and an intent's commit took 484 µs against 348 µs.
    pub(super) fn presign(&self, size: u64, root: Hash, key: Arc<SecretKey>) {
        let mut st = self.lock();
        if !st.busy {
            st.tentative = Some((size, root, key));
            drop(st);
            self.state.1.notify_all();
        }
    }

    /// A batch of `size` records with `root` is committed. If the signature
    /// of exactly this tree is already made (the usual case for a batch with
    /// intents: signing took less time than the commit), it is published
    /// and the waiters answered right here, by the writer, sparing
    /// them a wake-up of the signer thread; otherwise the signer does it.
    /// Without waiters the tree is only noted: the signer signs it within
    /// [`IDLE_SIGN`] without being woken.
    pub(super) fn committed(
        &self,
        shared: &Shared,
        size: u64,
        root: Hash,
        key: Arc<SecretKey>,
        mut waiters: Vec<Waiter>,
    ) {
        let mut st = self.lock();
        if !waiters.is_empty() {
            let ready = st.presigned.take_if(|p| p.0 == size && p.1 == root);
            if let Some((_, _, note)) = ready {
                // This signature covers every batch committed before.
                if st.target.as_ref().is_some_and(|t| t.0 <= size) {
                    st.target = None;
                }
                if st.tentative.as_ref().is_some_and(|t| t.0 <= size) {
                    st.tentative = None;
                }
                waiters.append(&mut st.waiters);
                drop(st);
                publish(shared, size, root, note, waiters);
                return;
            }
        }
        let since = st.target.as_ref().map_or_else(Instant::now, |t| t.3);
        st.target = Some((size, root, key, since));
        // Without waiters, a looking signer finds this tree within IDLE_SIGN
        // (see `signer_loop`): waking it would cost every outcome a wake-up
        // of the other CPU just as its reply is sent (measured: 30 µs per
        // action at one client). Only a signer that stopped looking is woken.
        let wake = !waiters.is_empty() || st.asleep;
        st.waiters.extend(waiters);
        drop(st);
        if wake {
            self.state.1.notify_all();
        }
    }

    /// Signs whatever is committed and unsigned, and waits until done.
    pub(super) fn drain(&self) {
        let mut st = self.lock();
        st.urgent = true;
        self.state.1.notify_all();
        while st.target.is_some() || st.busy {
            st = self.state.1.wait(st).expect("signer lock");
        }
        st.urgent = false;
    }

    /// Signs what is pending, then ends the thread (which lets go of the database).
    pub(super) fn stop(&mut self) {
        self.drain();
        self.lock().stop = true;
        self.state.1.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Makes the calling thread (the signer) `SCHED_BATCH`: its wake-ups never
/// preempt a running thread. The writer wakes the signer just before it
/// commits (to sign while the commit runs); as a normal thread, the signer
/// preempted the writer on its own CPU and delayed the commit it was meant
/// to overlap by ~85 µs at one client (measured: an intent's preparation
/// took 109 µs instead of 23). As a batch thread it runs on the idle CPU or
/// once the writer blocks in the commit's `fdatasync`, and keeps its normal
/// share of CPU time. An unprivileged thread may always lower itself to
/// `SCHED_BATCH`; if the kernel refuses, the signer still works, only slower.
fn signs_without_preempting() {
    let param = libc::sched_param { sched_priority: 0 };
    #[allow(unsafe_code)]
    // SAFETY: pid 0 names the calling thread only; `param` is a valid,
    // initialised struct that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "could not make the signer thread SCHED_BATCH; intents may wait longer"
        );
    }
}

fn signer_loop(state: &(Mutex<SignerState>, std::sync::Condvar), shared: &Shared, origin: &str) {
    let (lock, cv) = state;
    let mut st = lock.lock().expect("signer lock");
    loop {
        if st.stop {
            return;
        }
        let due = match &st.target {
            None => None,
            Some(_) if st.urgent || !st.waiters.is_empty() => Some(Duration::ZERO),
            Some(t) => Some(IDLE_SIGN.saturating_sub(t.3.elapsed())),
        };
        if due != Some(Duration::ZERO)
            && let Some((size, root, key)) = st.tentative.take()
        {
            st.busy = true;
            drop(st);
            let body = Checkpoint {
                origin: origin.to_owned(),
                size,
                root,
            };
            let note = body.sign(&[key.as_ref()]);
            st = lock.lock().expect("signer lock");
            st.presigned = Some((size, root, note));
            st.busy = false;
            cv.notify_all();
            continue;
        }
        if due.is_some() {
            st.empty_looks = 0;
        }
        match due {
            // A commit nobody waits for sets `target` without waking this
            // thread unless it is asleep (see `Signer::committed`): look
            // again within IDLE_SIGN, until a second of looks found nothing.
            None if st.empty_looks < EMPTY_LOOKS_BEFORE_SLEEP => {
                st.empty_looks += 1;
                st = cv.wait_timeout(st, IDLE_SIGN).expect("signer lock").0;
                continue;
            }
            None => {
                st.asleep = true;
                st = cv.wait(st).expect("signer lock");
                st.asleep = false;
                // Whatever woke it (a commit, an intent's presign) is activity:
                // look again for a while rather than fall straight back asleep.
                st.empty_looks = 0;
                continue;
            }
            Some(wait) if !wait.is_zero() => {
                st = cv.wait_timeout(st, wait).expect("signer lock").0;
                continue;
            }
            Some(_) => {}
        }
        let (size, root, key, _) = st.target.take().expect("target checked above");
        let waiters = std::mem::take(&mut st.waiters);
        let presigned = st.presigned.take().filter(|p| p.0 == size && p.1 == root);
        if st.tentative.as_ref().is_some_and(|t| t.0 <= size) {
            st.tentative = None;
        }
        st.busy = true;
        drop(st);
        let note = match presigned {
            // The same body, already signed while the batch was committing.
            Some((_, _, note)) => note,
            None => Checkpoint {
                origin: origin.to_owned(),
                size,
                root,
            }
            .sign(&[key.as_ref()]),
        };
        publish(shared, size, root, note, waiters);
        st = lock.lock().expect("signer lock");
        st.busy = false;
        cv.notify_all();
    }
}

/// Makes a signed checkpoint the latest, queues it to be stored with the
/// next commit, and answers the intent calls it covers.
fn publish(shared: &Shared, size: u64, root: Hash, note: String, waiters: Vec<Waiter>) {
    shared.stats.signatures.fetch_add(1, Ordering::Relaxed);
    // Queued before it becomes the latest: whoever saw it as the latest
    // then finds it in `checkpoints` too.
    shared
        .unstored
        .lock()
        .expect("unstored lock")
        .push(size, note.clone(), Instant::now());
    let mut latest = shared.latest.lock().expect("latest lock");
    if size > latest.size {
        *latest = signed(size, root, note);
    }
    drop(latest);
    let answered = &shared.stats.timings.intents.answered;
    for mut w in waiters {
        for r in &mut w.receipts {
            r.checkpoint_size = Some(size);
        }
        let _ = w.reply.send(Ok(w.receipts));
        answered.record(w.committed_at.elapsed());
    }
}
