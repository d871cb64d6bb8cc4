//! Who runs the writer: a task on the caller's own runtime thread when the
//! program offers one, a background thread otherwise.
//!
//! The audit log has one writer (one redb write transaction at a time). A
//! dedicated writer thread fed by a channel costs every call two thread
//! hand-offs: the caller's thread wakes the writer, and the writer wakes the
//! caller's thread with the answer. On this machine each wake-up of a
//! sleeping thread takes 20 to 50 µs, against a durable commit of about
//! 200 µs, so at one client they were a third of the audit's added latency.
//!
//! Here the writer is a value in the queue's mutex, lent to whoever works:
//! - [`WriterQueue::commit_here`] is a future a program runs on its runtime
//!   (the audit service: on its one runtime thread). It performs the jobs
//!   that may run there ([`Worker::inline`]: appending records). Woken by a
//!   queued job, it first yields once, so that every request ready at that
//!   moment is decoded and queued, and every caller answered by the last
//!   batch sends its reply; then it performs the batch at the front of the
//!   queue in one go. One commit serves every call in the batch, and the
//!   answers reach their callers on the same thread, with no wake-up.
//! - The background thread performs everything else (key rotation,
//!   erasure, session start, flush, shutdown), every job while no
//!   `commit_here` runs (tests, tools: the old writer thread's behaviour),
//!   and the idle housekeeping.
//!
//! The writer is never held across an `await`, so a cancelled task cannot
//! strand it; a panic while it is lent stops the queue (every waiting caller
//! gets an error) instead of leaving callers waiting for ever.
//!
//! Blocking on a commit inside `commit_here` is deliberate: in the audit
//! service the runtime's thread exists to serve this log, and while it
//! commits, the requests that arrive wait in their sockets and form the next
//! batch.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// What the queue lends out.
pub(crate) trait Worker: Send + 'static {
    type Job: Send + 'static;
    /// Whether a caller may perform `job` (and the batch it starts) itself.
    fn inline(job: &Self::Job) -> bool;
    /// Removes the next unit of work from the front of `jobs` (never empty).
    fn next_batch(jobs: &mut VecDeque<Self::Job>) -> Vec<Self::Job>;
    /// Performs one unit of work. `false`: the worker has shut down for
    /// good and is dropped; the queue takes no more jobs.
    fn perform(&mut self, batch: Vec<Self::Job>) -> bool;
    /// Called by the background thread each idle period in which it had
    /// nothing to do (the worker may have been busy elsewhere meanwhile).
    fn idle(&mut self);
    /// Every handle is gone: finish up before being dropped.
    fn finish(&mut self);
}

/// The queue is stopped (shut down, or its worker panicked): the job was
/// not queued.
#[derive(Debug)]
pub(crate) struct Stopped;

struct State<W: Worker> {
    jobs: VecDeque<W::Job>,
    /// `None` while lent out, and for good once stopped.
    worker: Option<W>,
    /// Takes no more jobs.
    stopped: bool,
    /// Every handle has been dropped: finish and stop once the queue is empty.
    orphaned: bool,
    /// A [`WriterQueue::commit_here`] is running: inline jobs are its.
    inline_driver: bool,
}

impl<W: Worker> State<W> {
    /// Whether the job at the front belongs to the `commit_here` task.
    fn front_is_inline(&self) -> bool {
        self.inline_driver && self.jobs.front().is_some_and(W::inline)
    }
}

struct Hub<W: Worker> {
    state: Mutex<State<W>>,
    /// Wakes the background thread.
    work: Condvar,
    /// Wakes the `commit_here` task.
    inline_work: tokio::sync::Notify,
}

impl<W: Worker> Hub<W> {
    fn lock(&self) -> MutexGuard<'_, State<W>> {
        // A panic while holding this lock cannot leave `State` half-updated
        // in a way that matters: every change is a single push/pop/flag.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Performs the batch at the front of the queue with the writer (which
    /// `st` holds), unlocked meanwhile, then gives the writer back.
    fn perform_front(&self, mut st: MutexGuard<'_, State<W>>) {
        let batch = W::next_batch(&mut st.jobs);
        let mut lease = Lease::take(self, &mut st);
        drop(st);
        lease.perform(batch);
    }

    /// Wakes whoever performs the front job (call with the lock held, after
    /// a change to the queue or to who holds the writer).
    fn wake_next(&self, st: &State<W>) {
        if st.front_is_inline() {
            self.inline_work.notify_one();
        } else if !st.jobs.is_empty() || st.orphaned {
            self.work.notify_one();
        }
    }
}

/// The writer, lent out of the queue; given back (or, after a panic or a
/// shutdown, the queue stopped) when dropped.
struct Lease<'a, W: Worker> {
    hub: &'a Hub<W>,
    worker: Option<W>,
}

impl<'a, W: Worker> Lease<'a, W> {
    /// Lends the writer out of `st`, which holds it.
    fn take(hub: &'a Hub<W>, st: &mut State<W>) -> Lease<'a, W> {
        Lease {
            hub,
            worker: st.worker.take(),
        }
    }

    fn perform(&mut self, batch: Vec<W::Job>) {
        let worker = self.worker.as_mut().expect("a lease holds its worker");
        if !worker.perform(batch) {
            self.worker = None;
        }
    }
}

impl<W: Worker> Drop for Lease<'_, W> {
    fn drop(&mut self) {
        let mut st = self.hub.lock();
        match self.worker.take() {
            Some(worker) if !std::thread::panicking() => {
                st.worker = Some(worker);
                self.hub.wake_next(&st);
            }
            // Shut down, or the worker panicked: dropping the queued jobs
            // drops their reply channels, so every waiting caller gets an error.
            _ => {
                st.stopped = true;
                st.jobs.clear();
                self.hub.work.notify_all();
            }
        }
    }
}

/// A handle to the queue; clones share it. When the last handle is
/// dropped, the background thread finishes the queued jobs, calls
/// [`Worker::finish`] and ends.
pub(crate) struct WriterQueue<W: Worker> {
    hub: Arc<Hub<W>>,
    background: Arc<Background<W>>,
}

impl<W: Worker> Clone for WriterQueue<W> {
    fn clone(&self) -> Self {
        WriterQueue {
            hub: self.hub.clone(),
            background: self.background.clone(),
        }
    }
}

/// Marks the `commit_here` task gone, handing its jobs to the background thread.
struct Driver<'a, W: Worker>(&'a Hub<W>);

impl<W: Worker> Drop for Driver<'_, W> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.inline_driver = false;
        self.0.wake_next(&st);
    }
}

/// Owns the background thread; dropped with the last handle.
struct Background<W: Worker> {
    hub: Arc<Hub<W>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<W: Worker> Drop for Background<W> {
    fn drop(&mut self) {
        self.hub.lock().orphaned = true;
        self.hub.work.notify_all();
    }
}

impl<W: Worker> WriterQueue<W> {
    /// Starts the background thread (named `name`); `idle` is how long it
    /// waits for work before calling [`Worker::idle`].
    pub(crate) fn start(worker: W, name: &str, idle: Duration) -> std::io::Result<WriterQueue<W>> {
        let hub = Arc::new(Hub {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                worker: Some(worker),
                stopped: false,
                orphaned: false,
                inline_driver: false,
            }),
            work: Condvar::new(),
            inline_work: tokio::sync::Notify::new(),
        });
        let thread = {
            let hub = hub.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || background(&hub, idle))?
        };
        Ok(WriterQueue {
            background: Arc::new(Background {
                hub: hub.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            hub,
        })
    }

    /// Queues a job for whoever performs it: the `commit_here` task if the
    /// job may run inline and the task runs, else the background thread.
    /// Its answer comes through whatever channel the job carries.
    pub(crate) fn submit(&self, job: W::Job) -> Result<(), Stopped> {
        let mut st = self.hub.lock();
        if st.stopped {
            return Err(Stopped);
        }
        st.jobs.push_back(job);
        self.hub.wake_next(&st);
        Ok(())
    }

    /// Performs the inline jobs on the thread that polls this future, until
    /// it is dropped (see the module doc). Run it as a task of its own.
    pub(crate) async fn commit_here(self) {
        let hub = &self.hub;
        {
            let mut st = hub.lock();
            if st.inline_driver || st.stopped {
                return;
            }
            st.inline_driver = true;
            // Jobs queued before now may have gone to the background thread.
            hub.wake_next(&st);
        }
        let _driver = Driver(hub);
        loop {
            hub.inline_work.notified().await;
            // Let every ready request queue its job, and every caller the
            // last batch answered send its reply, before the next commit.
            tokio::task::yield_now().await;
            let st = hub.lock();
            if st.stopped {
                return;
            }
            if !st.front_is_inline() || st.worker.is_none() {
                // Not ours, or the writer is lent out: whoever gives it
                // back wakes the right performer.
                continue;
            }
            // Giving the writer back wakes this task again if more is queued.
            hub.perform_front(st);
        }
    }

    /// Waits until the background thread has ended (after a shutdown job, or
    /// a panic that stopped the queue).
    pub(crate) fn join(&self) {
        let thread = self
            .background
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}

fn background<W: Worker>(hub: &Hub<W>, idle: Duration) {
    let mut st = hub.lock();
    loop {
        if st.stopped {
            return;
        }
        if st.worker.is_some() {
            if !st.jobs.is_empty() && !st.front_is_inline() {
                hub.perform_front(st);
                st = hub.lock();
                continue;
            }
            if st.orphaned && st.jobs.is_empty() {
                let mut worker = st.worker.take().expect("checked above");
                st.stopped = true;
                drop(st);
                worker.finish();
                return;
            }
        }
        let (guard, timeout) = hub
            .work
            .wait_timeout(st, idle)
            .unwrap_or_else(|e| e.into_inner());
        st = guard;
        if timeout.timed_out() && st.jobs.is_empty() && !st.stopped && st.worker.is_some() {
            let mut lease = Lease::take(hub, &mut st);
            drop(st);
            lease.worker.as_mut().expect("just lent").idle();
            drop(lease);
            st = hub.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Which thread performed each batch, and the numbers it added.
    type Performed = Arc<Mutex<Vec<(std::thread::ThreadId, Vec<u32>)>>>;

    /// Records which thread performed each batch and how big it was.
    struct Probe {
        log: Performed,
        finished: Arc<AtomicUsize>,
    }

    enum Job {
        Add(u32, tokio::sync::oneshot::Sender<()>),
        Control(std::sync::mpsc::Sender<()>),
        Shutdown,
        Panic,
    }

    impl Worker for Probe {
        type Job = Job;
        fn inline(job: &Job) -> bool {
            matches!(job, Job::Add(..))
        }
        fn next_batch(jobs: &mut VecDeque<Job>) -> Vec<Job> {
            let mut batch = vec![jobs.pop_front().expect("not empty")];
            if matches!(batch[0], Job::Add(..)) {
                while jobs.front().is_some_and(Self::inline) {
                    batch.push(jobs.pop_front().expect("checked"));
                }
            }
            batch
        }
        fn perform(&mut self, batch: Vec<Job>) -> bool {
            // The batch is logged before anyone is answered, so a caller
            // that has its answer finds its batch in the log.
            let seen = batch
                .iter()
                .filter_map(|job| match job {
                    Job::Add(n, _) => Some(*n),
                    _ => None,
                })
                .collect();
            self.log
                .lock()
                .unwrap()
                .push((std::thread::current().id(), seen));
            let mut keep = true;
            for job in batch {
                match job {
                    Job::Add(_, reply) => {
                        let _ = reply.send(());
                    }
                    Job::Control(done) => {
                        let _ = done.send(());
                    }
                    Job::Shutdown => keep = false,
                    Job::Panic => panic!("probe asked to panic"),
                }
            }
            keep
        }
        fn idle(&mut self) {}
        fn finish(&mut self) {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe() -> (WriterQueue<Probe>, Performed, Arc<AtomicUsize>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let finished = Arc::new(AtomicUsize::new(0));
        let queue = WriterQueue::start(
            Probe {
                log: log.clone(),
                finished: finished.clone(),
            },
            "probe-writer",
            Duration::from_millis(5),
        )
        .unwrap();
        (queue, log, finished)
    }

    fn add(queue: &WriterQueue<Probe>, n: u32) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        queue.submit(Job::Add(n, tx)).unwrap();
        rx
    }

    fn current_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    #[test]
    fn with_commit_here_a_call_is_performed_on_the_runtime_thread() {
        let (queue, log, _) = probe();
        current_thread().block_on(async {
            tokio::spawn(queue.clone().commit_here());
            // Let the task start first: a job queued before it runs goes to
            // the background thread (by design), which made this test race.
            tokio::task::yield_now().await;
            add(&queue, 7).await.unwrap();
        });
        let log = log.lock().unwrap();
        assert_eq!(*log, vec![(std::thread::current().id(), vec![7])]);
    }

    #[test]
    fn callers_ready_together_share_one_batch() {
        let (queue, log, _) = probe();
        current_thread().block_on(async {
            tokio::spawn(queue.clone().commit_here());
            let calls = (0..16u32).map(|n| {
                let queue = queue.clone();
                tokio::spawn(async move { add(&queue, n).await.unwrap() })
            });
            for call in futures::future::join_all(calls).await {
                call.unwrap();
            }
        });
        let log = log.lock().unwrap();
        assert_eq!(
            log.len(),
            1,
            "one batch for 16 callers ready at once: {log:?}"
        );
        assert_eq!(log[0].1, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn without_commit_here_the_background_thread_performs_everything() {
        let (queue, log, _) = probe();
        current_thread().block_on(async {
            add(&queue, 1).await.unwrap();
            add(&queue, 2).await.unwrap();
        });
        let log = log.lock().unwrap();
        assert_eq!(
            log.iter().map(|l| l.1.clone()).collect::<Vec<_>>(),
            vec![vec![1], vec![2]]
        );
        assert!(log.iter().all(|(t, _)| *t != std::thread::current().id()));
    }

    #[test]
    fn control_jobs_run_in_order_on_the_background_thread() {
        let (queue, log, _) = probe();
        let (done, wait) = std::sync::mpsc::channel();
        current_thread().block_on(async {
            tokio::spawn(queue.clone().commit_here());
            // Let the task start first (see the test above).
            tokio::task::yield_now().await;
            // The control job is queued first: the inline job must not
            // overtake it.
            queue.submit(Job::Control(done)).unwrap();
            add(&queue, 1).await.unwrap();
        });
        wait.recv().unwrap();
        let log = log.lock().unwrap();
        let me = std::thread::current().id();
        assert_eq!(log.len(), 2, "{log:?}");
        assert!(
            log[0].1.is_empty() && log[0].0 != me,
            "the control batch comes first, on the background thread: {log:?}"
        );
        assert_eq!(log[1], (me, vec![1]));
    }

    #[test]
    fn jobs_left_by_a_dropped_commit_here_go_to_the_background_thread() {
        let (queue, log, _) = probe();
        let rt = current_thread();
        rt.block_on(async {
            tokio::spawn(queue.clone().commit_here());
            // Let the task start.
            tokio::task::yield_now().await;
        });
        // A job for the task, which never runs again.
        let pending = add(&queue, 5);
        drop(rt);
        futures::executor::block_on(pending).unwrap();
        assert_eq!(log.lock().unwrap().last().unwrap().1, vec![5]);
    }

    #[test]
    fn a_panic_stops_the_queue_and_fails_the_waiting_callers() {
        let (queue, _, _) = probe();
        queue.submit(Job::Panic).unwrap();
        queue.join();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(queue.submit(Job::Add(1, tx)).is_err());
        drop(rx);
    }

    #[test]
    fn shutdown_stops_the_queue() {
        let (queue, _, finished) = probe();
        queue.submit(Job::Shutdown).unwrap();
        queue.join();
        let (tx, _rx) = tokio::sync::oneshot::channel();
        assert!(queue.submit(Job::Add(1, tx)).is_err());
        assert_eq!(
            finished.load(Ordering::SeqCst),
            0,
            "finish is for orphaned queues"
        );
    }

    #[test]
    fn dropping_every_handle_finishes_the_worker() {
        let (queue, _, finished) = probe();
        let hub = queue.hub.clone();
        drop(queue);
        for _ in 0..1000 {
            if finished.load(Ordering::SeqCst) == 1 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(finished.load(Ordering::SeqCst), 1);
        assert!(hub.lock().stopped);
    }
}
