//! Length-delimited bincode frames over Unix-domain sockets.
//!
//! Every sios connection is a tarpc transport built here, so every connection
//! has the same hard frame-size limit. A frame that announces more than the
//! limit, or whose bytes do not decode, ends that one connection: the receiver
//! logs what happened in plain words and goes on serving everyone else.
//!
//! Wire format: a 4-byte big-endian length, then that many bytes of bincode
//! (1.x, tarpc's codec) encoding a tarpc `ClientMessage`/`Response`.

use crate::budget::{ByteBudget, GatedRead, ReleasingWrite, Unsent, encoded_size};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tarpc::server::{BaseChannel, Channel, Serve};
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Default largest frame: 16 MiB, room for a 4 Mi-element FP32 tensor plus
/// framing, small enough that one connection cannot make a process allocate
/// without bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// How the detail of the `tarpc::ServerError` that answers a refused
/// connection begins (see [`refused_connection`]). Clients recognise a
/// refusal by it, not by the error's kind: tarpc 0.38 writes the kind as an
/// `i32` and reads it as a `u32`, which bincode's variable-length integers
/// turn into another kind (`ConnectionRefused` arrives as
/// `ConnectionAborted`).
pub const REFUSED_CONNECTION: &str = "connection refused: ";

/// The server error that answers each request on a connection the server
/// refuses, `reason` saying why and what to do.
pub fn refused_connection(reason: &str) -> tarpc::ServerError {
    tarpc::ServerError::new(
        io::ErrorKind::ConnectionRefused,
        format!("{REFUSED_CONNECTION}{reason}"),
    )
}

/// The reason of a server error made by [`refused_connection`].
pub fn connection_refusal(err: &tarpc::ServerError) -> Option<&str> {
    err.detail.strip_prefix(REFUSED_CONNECTION)
}

/// A tarpc transport over a Unix stream.
pub type UnixTransport<In, Out> =
    tarpc::serde_transport::Transport<NoSigPipe, In, Out, Bincode<In, Out>>;

/// Wraps `stream` in length-delimited bincode framing with a hard size limit.
/// Its writes never raise SIGPIPE (see [`NoSigPipe`]).
pub fn framed<In, Out>(stream: UnixStream, max_frame_bytes: usize) -> UnixTransport<In, Out>
where
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    framed_io(NoSigPipe(stream), max_frame_bytes)
}

/// [`framed`] over any byte stream (a [`NoSigPipe`] socket, perhaps behind a
/// [`GatedRead`]).
fn framed_io<IO, In, Out>(
    io: IO,
    max_frame_bytes: usize,
) -> tarpc::serde_transport::Transport<IO, In, Out, Bincode<In, Out>>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec();
    tarpc::serde_transport::new(Framed::new(io, codec), Bincode::default())
}

/// A Unix stream whose writes never raise SIGPIPE: each is a `send` with
/// `MSG_NOSIGNAL`. A write to a peer that has gone fails with `BrokenPipe`,
/// an error the caller reports, where a plain `write` would also raise
/// SIGPIPE and kill a process that keeps the signal's default action. The
/// `sios` command keeps it (so that `sios … | head` ends quietly), and a
/// connection the kernel closed unanswered used to kill it without a word.
#[derive(Debug)]
pub struct NoSigPipe(UnixStream);

impl tokio::io::AsyncRead for NoSigPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for NoSigPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        use std::os::fd::AsRawFd as _;
        let stream = &self.get_mut().0;
        loop {
            std::task::ready!(stream.poll_write_ready(cx))?;
            // `try_io` clears the readiness when the socket would block, so
            // the next `poll_write_ready` waits for room again.
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                nix::sys::socket::send(
                    stream.as_raw_fd(),
                    buf,
                    nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
                )
                .map_err(io::Error::from)
            });
            match sent {
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
                done => return std::task::Poll::Ready(done),
            }
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        // A socket buffers nothing in user space.
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

/// Whether a transport error is the received bytes' fault (a frame over the
/// limit, or bytes that do not decode) rather than the connection's.
pub fn is_garbled(err: &io::Error) -> bool {
    matches!(
        innermost(err).kind(),
        io::ErrorKind::InvalidData | io::ErrorKind::Other
    )
}

/// The innermost I/O error inside `err`: the transport wraps the socket's
/// own errors (a reset, a broken pipe) in errors of kind `Other`.
fn innermost(err: &io::Error) -> &io::Error {
    match err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<io::Error>())
    {
        Some(inner) => innermost(inner),
        None => err,
    }
}

/// Turns a transport error into a sentence an operator can act on, on one
/// line (a decoder's message may span several).
pub fn describe_error(err: &io::Error, max_frame_bytes: usize) -> String {
    let text = err
        .to_string()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    if text.contains("frame size too big") {
        format!(
            "the peer sent a frame larger than the {max_frame_bytes}-byte limit; \
             the connection was closed (raise max_frame_bytes in the config if such requests are legitimate)"
        )
    } else if is_garbled(err) {
        format!(
            "the peer sent bytes that are not a valid sios message ({text}); the connection was closed"
        )
    } else {
        format!("connection error: {text}")
    }
}

/// Serves one connection with `serve` until the peer hangs up or misbehaves,
/// then logs how it ended. Requests on the connection run concurrently.
///
/// Not spawned here: `Serve::serve` is an `async fn` in a trait, so only the
/// caller, which knows the concrete service, can prove the future is `Send`.
pub async fn serve_connection<S>(stream: UnixStream, max_frame_bytes: usize, serve: S)
where
    S: Serve + Clone,
    S::Req: for<'de> Deserialize<'de>,
    S::Resp: Serialize,
{
    serve_connection_limited(stream, max_frame_bytes, usize::MAX, serve).await;
}

/// [`serve_connection`] with at most `max_in_flight` requests of this
/// connection open at once; tarpc refuses one more with the server error
/// "server throttled the request." (sent along with the next reply). For sockets
/// whose peers are not the kernel itself, so that one peer pipelining
/// requests cannot make the process hold any number of them in memory.
pub async fn serve_connection_limited<S>(
    stream: UnixStream,
    max_frame_bytes: usize,
    max_in_flight: usize,
    serve: S,
) where
    S: Serve + Clone,
    S::Req: for<'de> Deserialize<'de>,
    S::Resp: Serialize,
{
    let peer = peer_label(&stream);
    serve_io(
        NoSigPipe(stream),
        &peer,
        max_frame_bytes,
        max_in_flight,
        serve,
    )
    .await;
}

/// Serves one connection's byte stream `io` (its peer named `peer` in the
/// log) as [`serve_connection_limited`] describes.
async fn serve_io<IO, S>(io: IO, peer: &str, max_frame_bytes: usize, max_in_flight: usize, serve: S)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    S: Serve + Clone,
    S::Req: for<'de> Deserialize<'de>,
    S::Resp: Serialize,
{
    let mut failure = None;
    let transport = framed_io::<IO, tarpc::ClientMessage<S::Req>, tarpc::Response<S::Resp>>(
        io,
        max_frame_bytes,
    )
    .inspect_err(|err| failure = Some(describe_error(err, max_frame_bytes)));
    // `inspect_err` keeps the Sink half, so the channel can still reply.
    BaseChannel::with_defaults(transport)
        .max_concurrent_requests(max_in_flight)
        .execute(serve)
        .for_each_concurrent(None, |response| response)
        .await;
    if let Some(reason) = failure {
        tracing::warn!(peer = %peer, "{reason}");
    }
}

/// The most bytes the answer to a request may take, as the server can tell
/// from the request (0 when it cannot): see [`ByteBudget::hold`].
pub type AnswerBound<Req> = Arc<dyn Fn(&Req) -> u64 + Send + Sync>;

/// One connection's part in its peer's [`ByteBudget`]: the budget, how the
/// server sizes answers, and the connection's answers not yet written.
struct Budgeted<Req> {
    budget: Arc<ByteBudget>,
    answer_bound: AnswerBound<Req>,
    unsent: Arc<Unsent>,
}

impl<Req> Clone for Budgeted<Req> {
    fn clone(&self) -> Self {
        Budgeted {
            budget: Arc::clone(&self.budget),
            answer_bound: Arc::clone(&self.answer_bound),
            unsent: Arc::clone(&self.unsent),
        }
    }
}

/// Wraps a request handler so that each request runs to completion on its
/// own task, whatever the client does meanwhile.
///
/// tarpc drops a handler's future when its client cancels the request, when
/// the request's deadline passes, or when the connection closes. For the
/// kernel that would be wrong: an action whose intent is already recorded
/// could stop between acting and recording its outcome, or stop half done,
/// leaving an open intent in the audit log while the appliance runs on.
/// Detached, the action finishes and its outcome is recorded; only the reply
/// is lost, because nobody waits for it.
///
/// At most `max_in_flight` detached requests of one connection run at once;
/// more wait for a place. (tarpc forgets a cancelled request at once, so
/// without this a client that sent and cancelled in a loop could start any
/// number of them.) Build one per connection.
///
/// With a `budget`, each request first takes its size, or the most its
/// answer may take if larger, from it, or is refused at once with the reason
/// ([`ByteBudget::hold`]), and keeps it until its answer is written to the
/// connection's socket ([`Unsent`]).
///
/// `handle` is usually `move |ctx, req| server.serve().serve(ctx, req)`: the
/// closure names the concrete service, so the compiler can prove its future
/// `Send`, which a generic `Serve` bound cannot yet express.
fn detached<Req, Resp, Fut, F>(
    max_in_flight: usize,
    budget: Option<Budgeted<Req>>,
    handle: F,
) -> tarpc::server::ServeFn<
    Req,
    Resp,
    impl FnOnce(tarpc::context::Context, Req) -> DetachedReply<Resp> + Clone,
>
where
    Req: tarpc::RequestName + Serialize,
    Resp: Serialize + Send + 'static,
    Fut: Future<Output = Result<Resp, tarpc::ServerError>> + Send + 'static,
    F: FnOnce(tarpc::context::Context, Req) -> Fut + Clone,
{
    let places = Arc::new(Semaphore::new(max_in_flight));
    tarpc::server::serve(move |ctx, req| -> DetachedReply<Resp> {
        let held = match budget
            .as_ref()
            .map(|b| b.budget.hold(&req, (b.answer_bound)(&req)))
            .transpose()
        {
            Ok(held) => held,
            Err(refusal) => return Box::pin(std::future::ready(Err(refusal))),
        };
        let work = handle(ctx, req);
        let until_sent = budget.map(|b| (b.budget, b.unsent));
        Box::pin(async move {
            let place = places.acquire_owned().await.map_err(|_| {
                tarpc::ServerError::new(io::ErrorKind::Other, "the server is stopping".into())
            })?;
            let task = tokio::spawn(async move {
                let _place = place;
                (work.await, held)
            });
            match task.await {
                Ok((answer, held)) => {
                    if let (Ok(answer), Some(held), Some((budget, unsent))) =
                        (&answer, held, until_sent)
                    {
                        budget.until_sent(held, encoded_size(answer), &unsent);
                    }
                    answer
                }
                Err(err) => Err(tarpc::ServerError::new(
                    io::ErrorKind::Other,
                    format!("the request's handler failed ({err}); see the server's log"),
                )),
            }
        })
    })
}

/// Serves one connection whose requests run [`detached`]: at most
/// `max_in_flight` open on the channel and at most as many running, so that
/// neither pipelining nor cancelling lets one peer pile up work. With a
/// `budget` (shared by all of one peer's connections), the bytes of the
/// peer's frames being read and of its requests being served are bounded too
/// ([`crate::budget`]).
pub async fn serve_detached<Req, Resp, Fut, F>(
    stream: UnixStream,
    max_frame_bytes: usize,
    max_in_flight: usize,
    budget: Option<(Arc<ByteBudget>, AnswerBound<Req>)>,
    handle: F,
) where
    Req: tarpc::RequestName + Serialize + for<'de> Deserialize<'de>,
    Resp: Serialize + Send + 'static,
    Fut: Future<Output = Result<Resp, tarpc::ServerError>> + Send + 'static,
    F: FnOnce(tarpc::context::Context, Req) -> Fut + Clone,
{
    let peer = peer_label(&stream);
    let io = NoSigPipe(stream);
    let Some((budget, answer_bound)) = budget else {
        let serve = detached(max_in_flight, None, handle);
        return serve_io(io, &peer, max_frame_bytes, max_in_flight, serve).await;
    };
    let unsent = Arc::new(Unsent::default());
    let io = GatedRead::new(
        ReleasingWrite::new(io, Arc::clone(&unsent)),
        &budget,
        max_frame_bytes,
    );
    let budgeted = Budgeted {
        budget,
        answer_bound,
        unsent,
    };
    let serve = detached(max_in_flight, Some(budgeted), handle);
    serve_io(io, &peer, max_frame_bytes, max_in_flight, serve).await;
}

/// The reply of a [`detached`] request: its task's result, or a server error
/// if the task panicked (the panic itself is logged by the runtime).
pub type DetachedReply<Resp> =
    Pin<Box<dyn Future<Output = Result<Resp, tarpc::ServerError>> + Send>>;

/// Accepts connections on `listener` for ever and hands each to
/// `on_connection` (which typically spawns [`serve_connection`] with the
/// service it builds for that peer). A failed accept is logged and retried.
pub async fn accept_loop(
    listener: UnixListener,
    mut on_connection: impl FnMut(UnixStream),
) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => on_connection(stream),
            // Running out of descriptors is transient: back off, keep serving.
            Err(err) if is_transient_accept_error(&err) => {
                tracing::warn!(error = %err, "accept failed; retrying shortly");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

fn is_transient_accept_error(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM)
    ) || err.kind() == io::ErrorKind::ConnectionAborted
        || err.kind() == io::ErrorKind::Interrupted
}

/// Linux errno values used above (kept here to avoid a libc dependency).
mod libc_errno {
    pub const ENOMEM: i32 = 12;
    pub const ENFILE: i32 = 23;
    pub const EMFILE: i32 = 24;
    pub const ENOBUFS: i32 = 105;
}

/// `pid=… uid=… gid=…` of the peer, for logs.
pub fn peer_label(stream: &UnixStream) -> String {
    match stream.peer_cred() {
        Ok(cred) => format!(
            "pid={} uid={} gid={}",
            cred.pid().map_or_else(|| "?".into(), |p| p.to_string()),
            cred.uid(),
            cred.gid()
        ),
        Err(err) => format!("unknown peer ({err})"),
    }
}

/// Connects to a Unix socket, retrying until `timeout` while the path does
/// not exist yet or nobody listens.
pub async fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let give_up = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path).await {
            Ok(stream) => return Ok(stream),
            Err(err)
                if Instant::now() < give_up
                    && matches!(
                        err.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                    ) =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(err) => return Err(err),
        }
    }
}

/// A tarpc context whose deadline is `timeout` from now.
pub fn context_with_timeout(timeout: Duration) -> tarpc::context::Context {
    let mut ctx = tarpc::context::current();
    ctx.deadline = Instant::now() + timeout;
    ctx
}

/// Client settings for every sios connection: many requests multiplexed
/// over one socket (the kernel shares one connection per brain among all
/// callers).
pub fn client_config() -> tarpc::client::Config {
    let mut config = tarpc::client::Config::default();
    config.max_in_flight_requests = 4096;
    config.pending_request_buffer = 1024;
    config
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tarpc::service]
    trait Slow {
        /// Waits for the gate, then returns how many had finished before it.
        async fn work() -> usize;
    }

    #[derive(Clone)]
    struct SlowServer {
        started: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
        gate: Arc<Semaphore>,
    }

    impl Slow for SlowServer {
        async fn work(self, _: tarpc::context::Context) -> usize {
            self.started.fetch_add(1, Ordering::SeqCst);
            self.gate.acquire().await.expect("open").forget();
            self.finished.fetch_add(1, Ordering::SeqCst)
        }
    }

    async fn until(what: &str, check: impl Fn() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(10);
        while !check() {
            assert!(Instant::now() < give_up, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn detached_requests_outlive_their_client_and_both_limits_hold() {
        let server = SlowServer {
            started: Arc::default(),
            finished: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
        };
        let (ours, theirs) = UnixStream::pair().expect("socket pair");
        let serving = server.clone();
        // Two detached at once; three open on the channel.
        tokio::spawn(serve_connection_limited(
            ours,
            1 << 20,
            3,
            detached(2, None, move |ctx, req| serving.serve().serve(ctx, req)),
        ));
        let client = SlowClient::new(client_config(), framed(theirs, 1 << 20)).spawn();
        let ctx = || context_with_timeout(Duration::from_secs(30));

        // Two requests start, and their client gives up on both.
        for _ in 0..2 {
            let gave_up = tokio::time::timeout(Duration::from_millis(50), client.work(ctx())).await;
            assert!(gave_up.is_err(), "the gate is shut: {gave_up:?}");
        }
        until("both cancelled requests started", || {
            server.started.load(Ordering::SeqCst) == 2
        })
        .await;

        // The channel forgot them, but they still hold both places: the next
        // requests wait, and past three open ones the channel refuses more.
        // (Spawned in order on this one-thread runtime, they reach the
        // server in order: the fourth is the one refused.)
        let sent: Vec<_> = (0..4)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.work(ctx()).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(server.started.load(Ordering::SeqCst), 2, "no third place");

        // The cancelled two run to their end, then the waiting three. (tarpc
        // sends the refusal with the next replies, not on its own.)
        server.gate.add_permits(2);
        until("the cancelled requests finished", || {
            server.finished.load(Ordering::SeqCst) == 2
        })
        .await;
        server.gate.add_permits(3);
        let mut answers = Vec::new();
        for task in sent {
            answers.push(task.await.expect("task"));
        }
        let refused = answers.pop().expect("four");
        assert!(
            matches!(
                &refused,
                Err(tarpc::client::RpcError::Server(e)) if e.detail.contains("throttled")
            ),
            "{refused:?}"
        );
        let mut answers: Vec<usize> = answers.into_iter().map(|a| a.expect("answered")).collect();
        answers.sort_unstable();
        assert_eq!(answers, vec![2, 3, 4]);
    }
}
