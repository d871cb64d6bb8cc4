//! [`Recorder`]: the kernel's side of [`Audit::record`] under load: many
//! concurrent calls, few requests.
//!
//! Every governed action costs the kernel two `record` calls (its intent,
//! then its outcome). Sent one per request, 64 concurrent actions cost the
//! audit service 128 requests to decode, validate, answer and wake up for,
//! on its one thread, and that per-request work, not the disk, bounds the
//! rate (measured: 27,000 to 47,000 records/s at 64 clients, against
//! 157,000 to 200,000 with 64 drafts per request; `cargo bench -p
//! sios-audit`). So the kernel coalesces: a call that finds fewer than
//! [`MAX_IN_FLIGHT`] requests in flight is sent at once, alone
//! (one action at a time pays nothing for this); calls that find the
//! requests busy wait and leave together, as one [`Audit::record_each`]
//! request, when one of those comes back.
//!
//! Intents and outcomes share requests. The service answers a request once
//! its last call is answered, so an outcome riding with an intent waits for
//! the intent's signature too; but that signature is made while the batch
//! commits, and separate lanes for the two kinds (tried) made fewer and
//! smaller batches and no faster actions (45,800 to 52,900 records/s
//! against 52,900 to 57,500 at 64 concurrent actions, same runs).
//!
//! Each call keeps its own answer: [`Audit::record_each`] judges the calls
//! of a request one by one, so a refused call refuses only itself. If the
//! request itself fails (the service is down, the connection broke), every
//! call in it gets that error: none of them is acknowledged, and the kernel
//! fails closed for each action as it would have alone.
//!
//! A request is sent by a task of its own, not by the caller that started
//! it: a caller that gives up (its client hung up) must not strand the
//! calls of others riding in its request.

use crate::audit::{
    AuditClient, AuditError, DraftKind, MAX_CALLS_PER_REQUEST, MAX_DRAFTS_PER_CALL, Receipt,
    RecordDraft,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;

/// Requests in flight at once. Two keep the audit service busy:
/// while it commits one request, the next is already in its socket (with
/// one, the service idles for a round trip between batches).
pub const MAX_IN_FLIGHT: usize = 2;

/// Most calls one request carries (well under the service's own limit,
/// [`MAX_CALLS_PER_REQUEST`]).
pub const MAX_CALLS_PER_BATCH: usize = 256;
const _: () = assert!(MAX_CALLS_PER_BATCH <= MAX_CALLS_PER_REQUEST);

/// Where a request goes: the audit service's current connection, or why
/// there is none (the service is restarting, say). Asked once per request.
pub type Connect = dyn Fn() -> Result<AuditClient, String> + Send + Sync;

/// Why a call was not acknowledged.
#[derive(thiserror::Error, Clone, Debug, PartialEq)]
pub enum RecordError {
    /// The audit service answered the call with a refusal.
    #[error(transparent)]
    Refused(#[from] AuditError),
    /// The call never got an answer: no connection, no reply, or a reply
    /// that does not fit the request. It is not acknowledged: it may or may
    /// not be in the log, as with any request whose reply was lost, and the
    /// action must not run.
    #[error("{0}")]
    Unanswered(String),
}

/// Coalesces concurrent `record` calls to one audit service. Cheap to clone;
/// clones share the queue.
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("batch_bytes", &self.inner.batch_bytes)
            .finish_non_exhaustive()
    }
}

struct Inner {
    connect: Box<Connect>,
    timeout: Duration,
    /// Estimated encoded bytes one request may carry (a quarter of the
    /// connection's frame limit; one call larger than that goes alone).
    batch_bytes: usize,
    queue: Mutex<Queue>,
    calls: AtomicU64,
    requests: AtomicU64,
}

/// What a [`Recorder`] has sent so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecorderStats {
    /// `record` calls sent (answered or not).
    pub calls: u64,
    /// Requests they travelled in.
    pub requests: u64,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Call>,
    in_flight: usize,
}

struct Call {
    drafts: Vec<RecordDraft>,
    reply: oneshot::Sender<Result<Vec<Receipt>, RecordError>>,
}

impl Recorder {
    /// `connect` yields the service's connection for each request;
    /// `timeout` bounds each request; `max_frame_bytes` is the connection's
    /// frame limit.
    pub fn new(
        connect: impl Fn() -> Result<AuditClient, String> + Send + Sync + 'static,
        timeout: Duration,
        max_frame_bytes: usize,
    ) -> Recorder {
        Recorder {
            inner: Arc::new(Inner {
                connect: Box::new(connect),
                timeout,
                batch_bytes: max_frame_bytes / 4,
                queue: Mutex::default(),
                calls: AtomicU64::new(0),
                requests: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> RecorderStats {
        RecorderStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            requests: self.inner.requests.load(Ordering::Relaxed),
        }
    }

    /// Records `drafts` as one call ([`Audit::record`]'s promise: durable,
    /// and for a call with an intent, covered by a signed checkpoint, when
    /// this returns `Ok`). Must run inside a tokio runtime.
    ///
    /// Every draft is first fitted to the record's limits
    /// ([`RecordDraft::fit_to_limits`]), so no client-chosen name can make
    /// an action unrecordable.
    pub async fn record(&self, mut drafts: Vec<RecordDraft>) -> Result<Vec<Receipt>, RecordError> {
        drafts.iter_mut().for_each(RecordDraft::fit_to_limits);
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.inner.queue();
            queue.waiting.push(Call { drafts, reply });
            if queue.in_flight < MAX_IN_FLIGHT {
                queue.in_flight += 1;
                Some(self.inner.take_batch(&mut queue))
            } else {
                None
            }
        };
        if let Some(batch) = start {
            tokio::spawn(Arc::clone(&self.inner).send(batch));
        }
        answer.await.unwrap_or_else(|_| {
            Err(RecordError::Unanswered(
                "the kernel's audit sender stopped before answering".into(),
            ))
        })
    }
}

impl Inner {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Every change under this lock is a push, a drain or a counter step:
        // a panic elsewhere cannot leave it half-done.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls that wait, oldest first, up to one request's worth (at
    /// least one call, whatever its size).
    fn take_batch(&self, queue: &mut Queue) -> Vec<Call> {
        let (mut drafts, mut bytes, mut count) = (0, 0, 0);
        for call in &queue.waiting {
            let size = call.drafts.iter().map(estimated_bytes).sum::<usize>();
            let fits = count < MAX_CALLS_PER_BATCH
                && drafts + call.drafts.len() <= MAX_DRAFTS_PER_CALL
                && bytes + size <= self.batch_bytes;
            if count > 0 && !fits {
                break;
            }
            drafts += call.drafts.len();
            bytes += size;
            count += 1;
        }
        queue.waiting.drain(..count).collect()
    }

    /// Sends `batch`, answers its calls, then the calls that queued
    /// meanwhile, until none waits.
    async fn send(self: Arc<Self>, mut batch: Vec<Call>) {
        let mut slot = Sending(Some(&self));
        loop {
            self.send_one(batch).await;
            let mut queue = self.queue();
            if queue.waiting.is_empty() {
                // Under the same lock as the look at the queue: a call that
                // arrives after it finds the slot free and sends itself.
                queue.in_flight -= 1;
                slot.0 = None;
                return;
            }
            batch = self.take_batch(&mut queue);
        }
    }

    async fn send_one(&self, batch: Vec<Call>) {
        let (calls, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|call| (call.drafts, call.reply))
            .unzip();
        match self.request(calls).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result.map_err(RecordError::from));
                }
            }
            Err(err) => {
                for reply in replies {
                    let _ = reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// One request: a single call as [`Audit::record`] (the common case at
    /// low load, and understood by every audit service), several as
    /// [`Audit::record_each`].
    async fn request(
        &self,
        mut calls: Vec<Vec<RecordDraft>>,
    ) -> Result<Vec<Result<Vec<Receipt>, AuditError>>, RecordError> {
        self.calls.fetch_add(calls.len() as u64, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let client = (self.connect)().map_err(RecordError::Unanswered)?;
        let ctx = crate::transport::context_with_timeout(self.timeout);
        let unanswered = |err: tarpc::client::RpcError| {
            RecordError::Unanswered(format!("the audit service did not answer: {err}"))
        };
        if calls.len() == 1 {
            let drafts = calls.pop().expect("one call");
            return Ok(vec![client.record(ctx, drafts).await.map_err(unanswered)?]);
        }
        let asked = calls.len();
        let results = client.record_each(ctx, calls).await.map_err(unanswered)??;
        if results.len() != asked {
            return Err(RecordError::Unanswered(format!(
                "the audit service answered {} of {asked} calls in one request; none is taken as recorded",
                results.len()
            )));
        }
        Ok(results)
    }
}

/// A sender's place among the [`MAX_IN_FLIGHT`], given back if the sender
/// ends without finishing (it panicked, or its runtime shut down), so that
/// later calls are still sent: without it, two such ends would leave every
/// later call waiting for ever. (The calls it carried are answered with an
/// error: their reply channels are dropped with it.)
struct Sending<'a>(Option<&'a Inner>);

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        if let Some(inner) = self.0 {
            inner.queue().in_flight -= 1;
        }
    }
}

/// Roughly the bytes `draft` takes on the wire: its strings and digests,
/// plus a margin for the fixed fields. Only used to keep requests well
/// inside the frame limit.
fn estimated_bytes(draft: &RecordDraft) -> usize {
    let strings = draft.actor.len()
        + draft.action.len()
        + draft.resource.len()
        + draft.detail.len()
        + draft.subject.as_ref().map_or(0, String::len)
        + draft.policy_text.as_ref().map_or(0, String::len)
        + draft.brain.as_ref().map_or(0, |b| b.id.len() + 32)
        + draft.decision.as_ref().map_or(0, |d| {
            32 + d.policy_ids.iter().map(|id| id.len() + 8).sum::<usize>()
        })
        + match &draft.kind {
            DraftKind::Outcome {
                result: crate::audit::ActionResult::Error(reason),
                ..
            } => reason.len(),
            _ => 0,
        };
    strings + 32 * (draft.input_digests.len() + draft.output_digests.len()) + 128
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(max_frame_bytes: usize) -> Recorder {
        Recorder::new(
            || Err("no service in this test".into()),
            Duration::from_secs(1),
            max_frame_bytes,
        )
    }

    fn waiting(sizes: &[(usize, usize)]) -> Queue {
        let waiting = sizes
            .iter()
            .map(|&(drafts, detail)| {
                let mut draft = RecordDraft::new("kernel", "test", "nothing", DraftKind::Event);
                draft.detail = "x".repeat(detail);
                Call {
                    drafts: vec![draft; drafts],
                    reply: oneshot::channel().0,
                }
            })
            .collect();
        Queue {
            waiting,
            in_flight: 1,
        }
    }

    fn batch_sizes(recorder: &Recorder, queue: &mut Queue) -> Vec<usize> {
        let mut sizes = Vec::new();
        while !queue.waiting.is_empty() {
            sizes.push(recorder.inner.take_batch(queue).len());
        }
        sizes
    }

    /// A sender that dies (here: its connection source panics) gives its
    /// place back: every call gets an error, and none waits for ever, also
    /// after more such deaths than there are places.
    #[test]
    fn a_sender_that_dies_answers_with_an_error_and_frees_its_place() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let recorder = Recorder::new(
            || panic!("a connection source that fails hard (this panic is expected)"),
            Duration::from_secs(1),
            16 << 20,
        );
        runtime.block_on(async {
            for _ in 0..MAX_IN_FLIGHT * 2 + 1 {
                let draft = RecordDraft::new("kernel", "test", "nothing", DraftKind::Event);
                let answer =
                    tokio::time::timeout(Duration::from_secs(10), recorder.record(vec![draft]))
                        .await
                        .expect("a call waited for ever after senders died");
                assert!(
                    matches!(&answer, Err(RecordError::Unanswered(_))),
                    "{answer:?}"
                );
            }
        });
        assert_eq!(recorder.inner.queue().in_flight, 0);
    }

    #[test]
    fn a_batch_stops_at_the_call_limit() {
        let r = recorder(16 << 20);
        let mut queue = waiting(&vec![(1, 0); MAX_CALLS_PER_BATCH * 2 + 3]);
        assert_eq!(
            batch_sizes(&r, &mut queue),
            [MAX_CALLS_PER_BATCH, MAX_CALLS_PER_BATCH, 3]
        );
    }

    #[test]
    fn a_batch_stops_at_the_draft_limit() {
        let r = recorder(16 << 20);
        let mut queue = waiting(&[(MAX_DRAFTS_PER_CALL - 1, 0), (2, 0), (1, 0)]);
        assert_eq!(batch_sizes(&r, &mut queue), [1, 2]);
    }

    #[test]
    fn a_batch_stays_inside_its_share_of_the_frame_and_a_big_call_goes_alone() {
        // 4 KiB frames: 1 KiB of estimated bytes per request.
        let r = recorder(4096);
        let mut queue = waiting(&[(1, 300), (1, 300), (1, 300), (1, 5000), (1, 10)]);
        assert_eq!(batch_sizes(&r, &mut queue), [2, 1, 1, 1]);
    }
}
