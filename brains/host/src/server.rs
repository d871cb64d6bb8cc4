//! The tarpc `Brain` service over a loaded [`Engine`].
//!
//! Inference is CPU-bound and ONNX Runtime's `Session::run` needs exclusive
//! access, so the engine lives on one dedicated thread ([`spawn_worker`]) that
//! takes jobs from a bounded queue, one at a time. The async side only moves
//! bytes: many connections and many in-flight requests per connection are
//! served by a single-threaded runtime, and when the queue is full a request
//! waits for room instead of piling up memory.
//!
//! A job whose caller has gone away (deadline passed, or the request was
//! cancelled) is dropped unrun. If inference panics the process aborts: its
//! state can no longer be trusted, and the kernel restarts a brain that dies.

use crate::engine::{Engine, Inference};
use sios_ipc::transport::{accept_loop, serve_connection};
use sios_ipc::{Brain, BrainError, BrainInfo, InferRequest, InferResponse, Tensor};
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;
use tarpc::context::Context;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

/// Jobs that may wait for the inference thread before callers are held back.
pub const DEFAULT_QUEUE_DEPTH: usize = 64;

/// What a job's tensors are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The request's inputs, as the manifest declares them.
    Declared,
    /// An `embed_via` brain's upstream output, for the model itself.
    Upstream,
}

/// One inference for the worker thread.
#[derive(Debug)]
pub struct Job {
    pub inputs: Vec<Tensor>,
    pub stage: Stage,
    /// When the caller stops waiting (tarpc's deadline).
    pub deadline: Instant,
    pub reply: oneshot::Sender<Result<Inference, BrainError>>,
}

/// Moves `engine` onto its own thread and returns the queue feeding it. The
/// thread ends when every sender is dropped.
pub fn spawn_worker(
    mut engine: Engine,
    queue_depth: usize,
) -> io::Result<(mpsc::Sender<Job>, JoinHandle<()>)> {
    let (jobs, mut queue) = mpsc::channel::<Job>(queue_depth.max(1));
    let span = tracing::Span::current();
    let handle = std::thread::Builder::new()
        .name("inference".into())
        .spawn(move || {
            let _entered = span.enter();
            while let Some(job) = queue.blocking_recv() {
                if job.reply.is_closed() {
                    tracing::debug!("skipped a request whose caller stopped waiting");
                    continue;
                }
                if Instant::now() >= job.deadline {
                    let late = "the request's deadline passed while it waited for the model; retry with a longer deadline";
                    drop(job.reply.send(Err(BrainError::Runtime(late.into()))));
                    continue;
                }
                let still_wanted = || !job.reply.is_closed() && Instant::now() < job.deadline;
                let run = || match (job.stage, job.inputs.first()) {
                    (Stage::Upstream, Some(source)) => {
                        engine.infer_upstream(source, &still_wanted)
                    }
                    _ => engine.infer_while(&job.inputs, &still_wanted),
                };
                match catch_unwind(AssertUnwindSafe(run)) {
                    // The caller may have gone meanwhile; nothing to do then.
                    Ok(result) => drop(job.reply.send(result)),
                    Err(_) => {
                        tracing::error!(
                            "inference panicked; aborting so the kernel restarts this brain"
                        );
                        std::process::abort();
                    }
                }
            }
        })?;
    Ok((jobs, handle))
}

/// The `Brain` service: cheap to clone, one clone per connection.
#[derive(Clone, Debug)]
pub struct BrainServer {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Everything `describe` returns except the counter.
    info: BrainInfo,
    served: AtomicU64,
    jobs: mpsc::Sender<Job>,
    /// For `embed_via` brains: the upstream brain and which of its outputs
    /// to take, and the channel to the kernel to ask it through.
    upstream: Option<(crate::engine::Upstream, sios_ipc::BrainSupportClient)>,
    /// The frame limit shared with the kernel: no reply may exceed it.
    max_frame_bytes: usize,
}

/// Room in a reply frame for everything but the output tensors (tarpc's
/// envelope, the request id, model name and version).
const REPLY_OVERHEAD_BYTES: usize = 4096;
/// Most bytes one [`sios_ipc::Truncation`] takes in a reply besides its
/// input's name: the name's length and four counts, eight bytes each.
const TRUNCATION_BYTES: usize = 40;

impl BrainServer {
    /// Moves `engine` onto its inference thread (see [`spawn_worker`]) and
    /// returns the service in front of it, with the thread's handle.
    pub fn start(
        engine: Engine,
        queue_depth: usize,
        max_frame_bytes: usize,
        kernel: Option<sios_ipc::BrainSupportClient>,
    ) -> io::Result<(BrainServer, JoinHandle<()>)> {
        let upstream = match (engine.upstream().cloned(), kernel) {
            (Some(upstream), Some(kernel)) => Some((upstream, kernel)),
            (Some(upstream), None) => {
                return Err(io::Error::other(format!(
                    "this brain embeds via brain `{}` but the kernel gave it no channel to ask it through \
                     (SIOS_KERNEL_FD); brains are started by sios-kernel",
                    upstream.brain
                )));
            }
            (None, _) => None,
        };
        let info = BrainInfo {
            name: engine.name().to_owned(),
            pid: std::process::id(),
            model_sha256: engine.model_sha256().to_owned(),
            inputs: engine.input_specs().to_vec(),
            outputs: engine.output_specs().to_vec(),
            requests_served: 0,
        };
        // A batch run in parts stops once its outputs could not be sent.
        let engine = engine.with_max_output_bytes(max_frame_bytes);
        let (jobs, worker) = spawn_worker(engine, queue_depth)?;
        let server = BrainServer {
            shared: Arc::new(Shared {
                info,
                served: AtomicU64::new(0),
                jobs,
                upstream,
                max_frame_bytes,
            }),
        };
        Ok((server, worker))
    }

    /// Inferences answered successfully so far.
    pub fn requests_served(&self) -> u64 {
        self.shared.served.load(Ordering::Relaxed)
    }

    /// Serves every connection accepted on `listener` until accepting fails
    /// for good.
    pub async fn run(self, listener: UnixListener) -> io::Result<()> {
        let max_frame_bytes = self.shared.max_frame_bytes;
        accept_loop(listener, |stream| {
            let connection = serve_connection(stream, max_frame_bytes, self.clone().serve());
            tokio::spawn(connection.instrument(tracing::Span::current()));
        })
        .await
    }
}

impl Brain for BrainServer {
    async fn describe(self, _: Context) -> BrainInfo {
        BrainInfo {
            requests_served: self.requests_served(),
            ..self.shared.info.clone()
        }
    }

    async fn infer(
        self,
        context: Context,
        request: InferRequest,
    ) -> Result<InferResponse, BrainError> {
        let stopped = || {
            BrainError::Runtime(
                "the brain's inference thread has stopped; it is being restarted".into(),
            )
        };
        // What the model did not read: the upstream brain's cuts when it
        // read the text for this one, else the engine's own.
        let (inputs, stage, upstream_truncated) = match &self.shared.upstream {
            None => (request.inputs, Stage::Declared, Vec::new()),
            Some((upstream, kernel)) => {
                // Check the request here: it is forwarded, not run, and the
                // engine never sees it.
                sios_ipc::tensor::validate(
                    &request.inputs,
                    &self.shared.info.inputs,
                    sios_ipc::TensorLimits::default(),
                )?;
                let ask = InferRequest {
                    id: request.id.clone(),
                    inputs: request.inputs,
                };
                let answer = kernel
                    .call_brain(context, upstream.brain.clone(), ask)
                    .await
                    .map_err(|e| BrainError::Runtime(format!("the kernel did not answer: {e}")))?
                    .map_err(|e| BrainError::Runtime(e.to_string()))?;
                let source = answer
                    .outputs
                    .into_iter()
                    .find(|t| t.name == upstream.output)
                    .ok_or_else(|| BrainError::Output {
                        name: upstream.output.clone(),
                        reason: format!("brain `{}` did not return it", upstream.brain),
                    })?;
                (vec![source], Stage::Upstream, answer.truncated)
            }
        };
        let (reply, answer) = oneshot::channel();
        let job = Job {
            inputs,
            stage,
            deadline: context.deadline,
            reply,
        };
        self.shared.jobs.send(job).await.map_err(|_| stopped())?;
        let Inference {
            outputs,
            mut truncated,
        } = answer.await.map_err(|_| stopped())??;
        truncated.extend(upstream_truncated);
        // A reply over the frame limit could not be sent: the connection
        // would break mid-request and the kernel would lose the brain until
        // it restarted. Say what happened and what to do instead.
        let reply_bytes = sios_ipc::tensor::encoded_bytes_bound(&outputs)
            + truncated
                .iter()
                .map(|cut| TRUNCATION_BYTES + cut.input.len())
                .sum::<usize>()
            + REPLY_OVERHEAD_BYTES;
        if reply_bytes > self.shared.max_frame_bytes {
            return Err(BrainError::Output {
                name: outputs.first().map(|t| t.name.clone()).unwrap_or_default(),
                reason: format!(
                    "the outputs take about {reply_bytes} bytes, more than the {}-byte frame limit; \
                     send fewer inputs per request (or raise [limits] max_frame_bytes)",
                    self.shared.max_frame_bytes
                ),
            });
        }
        self.shared.served.fetch_add(1, Ordering::Relaxed);
        Ok(InferResponse {
            id: request.id,
            model_name: self.shared.info.name.clone(),
            model_version: self.shared.info.model_sha256.clone(),
            outputs,
            truncated,
        })
    }
}
