//! Length-delimited bincode frames over Unix-domain sockets.
//!
//! Every sios connection is a tarpc transport built here, so every connection
//! has the same hard frame-size limit. A frame that announces more than the
//! limit, or whose bytes do not decode, ends that one connection: the receiver
//! logs what happened in plain words and goes on serving everyone else.
//!
//! Wire format: a 4-byte big-endian length, then that many bytes of bincode
//! (1.x, tarpc's codec) encoding a tarpc `ClientMessage`/`Response`.

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;
use std::time::{Duration, Instant};
use tarpc::server::{BaseChannel, Channel, Serve};
use tarpc::tokio_serde::formats::Bincode;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Default largest frame: 16 MiB, room for a 4 Mi-element FP32 tensor plus
/// framing, small enough that one connection cannot make a process allocate
/// without bound.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A tarpc transport over a Unix stream.
pub type UnixTransport<In, Out> =
    tarpc::serde_transport::Transport<UnixStream, In, Out, Bincode<In, Out>>;

/// Wraps `stream` in length-delimited bincode framing with a hard size limit.
pub fn framed<In, Out>(stream: UnixStream, max_frame_bytes: usize) -> UnixTransport<In, Out>
where
    In: for<'de> Deserialize<'de>,
    Out: Serialize,
{
    let codec = LengthDelimitedCodec::builder()
        .max_frame_length(max_frame_bytes)
        .new_codec();
    tarpc::serde_transport::new(Framed::new(stream, codec), Bincode::default())
}

/// Turns a transport error into a sentence an operator can act on.
pub fn describe_error(err: &io::Error, max_frame_bytes: usize) -> String {
    let text = err.to_string();
    if text.contains("frame size too big") {
        format!(
            "the peer sent a frame larger than the {max_frame_bytes}-byte limit; \
             the connection was closed (raise max_frame_bytes in the config if such requests are legitimate)"
        )
    } else if err.kind() == io::ErrorKind::InvalidData || err.kind() == io::ErrorKind::Other {
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
    let peer = peer_label(&stream);
    let mut failure = None;
    let transport =
        framed::<tarpc::ClientMessage<S::Req>, tarpc::Response<S::Resp>>(stream, max_frame_bytes)
            .inspect_err(|err| failure = Some(describe_error(err, max_frame_bytes)));
    // `inspect_err` keeps the Sink half, so the channel can still reply.
    BaseChannel::with_defaults(transport)
        .execute(serve)
        .for_each_concurrent(None, |response| response)
        .await;
    if let Some(reason) = failure {
        tracing::warn!(peer = %peer, "{reason}");
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
/// `handle` is usually `move |ctx, req| server.clone().serve().serve(ctx, req)`:
/// the closure names the concrete service, so the compiler can prove its
/// future `Send`, which a generic `Serve` bound cannot yet express.
pub fn detached<Req, Resp, Fut, F>(
    handle: F,
) -> tarpc::server::ServeFn<
    Req,
    Resp,
    impl FnOnce(tarpc::context::Context, Req) -> DetachedReply<Resp> + Clone,
>
where
    Req: tarpc::RequestName,
    Resp: Send + 'static,
    Fut: std::future::Future<Output = Result<Resp, tarpc::ServerError>> + Send + 'static,
    F: FnOnce(tarpc::context::Context, Req) -> Fut + Clone,
{
    tarpc::server::serve(move |ctx, req| {
        let task = tokio::spawn(handle(ctx, req));
        DetachedReply(task)
    })
}

/// The reply of a [`detached`] request: its task's result, or a server error
/// if the task panicked (the panic itself is logged by the task's runtime).
#[derive(Debug)]
pub struct DetachedReply<Resp>(tokio::task::JoinHandle<Result<Resp, tarpc::ServerError>>);

impl<Resp> std::future::Future for DetachedReply<Resp> {
    type Output = Result<Resp, tarpc::ServerError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| {
                Err(tarpc::ServerError::new(
                    io::ErrorKind::Other,
                    format!("the request's handler failed ({err}); see the kernel log"),
                ))
            })
        })
    }
}

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
