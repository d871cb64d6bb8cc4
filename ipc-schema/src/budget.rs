//! How many bytes of one peer's requests a server holds at once.
//!
//! The frame limit bounds one request, and the in-flight limits bound how
//! many requests one connection has open; but a peer that may open many
//! connections could still fill every one of them with large requests and
//! make the server hold gigabytes. A [`ByteBudget`] is shared by all the
//! connections of one peer (the kernel keys it by uid, which the peer cannot
//! choose) and bounds the bytes of its requests in two stages:
//!
//! - **Reading** ([`GatedRead`]): once a frame's length is known, that many
//!   bytes are taken from the budget before its body is read, and given back
//!   once the frame has been decoded and the connection reads on. While the
//!   budget is spent the connection is simply not read, as if its peer were
//!   slow: the peer's writes wait in the socket, and nothing is refused.
//!   Frames that wait are read in turn: the first in line collects bytes as
//!   they come back, so a large frame is not passed over for ever by small
//!   ones, and the others wait holding nothing.
//! - **Serving** ([`ByteBudget::hold`]): a decoded request takes its size from
//!   the budget, or the most its answer may take if that is more and the
//!   server can tell (a read of a 1 MiB item is a request of a few dozen
//!   bytes), and keeps it until its answer is written to the socket
//!   ([`Unsent`], [`ReleasingWrite`]): through its action (for a detached
//!   request, to the action's end, whether or not anybody still waits for
//!   the reply), then while its answer waits for the peer to read. One that
//!   does not fit is refused at once with the reason, so a refused request
//!   costs nothing to keep.
//!
//! Each stage holds at most the whole budget, so one peer's requests and
//! their answers hold at most twice the budget in the server, whatever it
//! does; a peer that sends requests and never reads the answers gets its
//! next requests refused once its answers fill the budget. (An answer larger
//! than what its request took is counted in full only if the budget has room
//! for the rest at that moment: an answer whose size the server could not
//! tell beforehand, such as text.)
//!
//! The budget counts in KiB, so that a budget of terabytes still fits the
//! semaphore's counts; a request of a few bytes takes one KiB.

use crate::services::human_bytes;
use serde::Serialize;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, ReadBuf, Take};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::PollSemaphore;

/// The budget's unit, in bytes.
const UNIT_BYTES: u64 = 1024;

/// The length prefix of a frame (see [`crate::transport`]).
const HEADER_BYTES: usize = 4;

/// How often a peer's refusals are logged at most: a client retrying in a
/// loop would otherwise fill the log.
const WARN_EVERY: Duration = Duration::from_secs(1);

/// The bytes one peer's requests may hold in a server at once, in each of
/// the two stages the module describes.
#[derive(Debug)]
pub struct ByteBudget {
    /// Who the budget belongs to, as messages name it ("uid 1000").
    owner: String,
    /// The configuration key that sets it, named in refusals.
    setting: &'static str,
    limit_bytes: u64,
    units: u32,
    reading: Arc<Semaphore>,
    serving: Arc<Semaphore>,
    last_warning: Mutex<Option<Instant>>,
}

/// A request's share of its peer's budget while it is served; dropping it
/// gives the share back.
#[derive(Debug)]
pub struct Held {
    permit: OwnedSemaphorePermit,
}

/// One connection's answers not yet written to its socket, each with its
/// request's share of the peer's budget ([`Held`]): a share goes back once
/// as many bytes as its answer takes have been written
/// ([`ReleasingWrite`]), so a peer that does not read its answers cannot
/// make the server hold more of them than its budget. Bytes are matched to
/// answers in the order the answers were queued; a small reply that was
/// never queued (a refusal) thus gives back an earlier answer's share a
/// little early, never late.
#[derive(Debug, Default)]
pub struct Unsent {
    queue: Mutex<std::collections::VecDeque<(u64, Held)>>,
}

impl Unsent {
    fn push(&self, bytes: u64, held: Held) {
        self.lock().push_back((bytes, held));
    }

    /// `bytes` more were written to the socket.
    fn written(&self, mut bytes: u64) {
        let mut queue = self.lock();
        while bytes > 0
            && let Some((left, _)) = queue.front_mut()
        {
            if *left > bytes {
                *left -= bytes;
                return;
            }
            bytes -= *left;
            queue.pop_front();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<(u64, Held)>> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl ByteBudget {
    /// A budget of `limit_bytes` in each stage for `owner` (named in
    /// refusals), set by the configuration key `setting`.
    pub fn new(owner: impl Into<String>, setting: &'static str, limit_bytes: u64) -> Arc<Self> {
        let units = units_of(limit_bytes).max(1);
        Arc::new(ByteBudget {
            owner: owner.into(),
            setting,
            limit_bytes,
            units,
            reading: Arc::new(Semaphore::new(units as usize)),
            serving: Arc::new(Semaphore::new(units as usize)),
            last_warning: Mutex::new(None),
        })
    }

    /// The most bytes each stage may hold.
    pub fn limit_bytes(&self) -> u64 {
        self.limit_bytes
    }

    /// Bytes of requests being served now (rounded up to KiB per request).
    pub fn serving_bytes(&self) -> u64 {
        u64::from(self.units - available(&self.serving)) * UNIT_BYTES
    }

    /// Bytes of frames being read now.
    pub fn reading_bytes(&self) -> u64 {
        u64::from(self.units - available(&self.reading)) * UNIT_BYTES
    }

    /// Takes `request`'s encoded size, or `answer_bound` if larger (the most
    /// its answer may take, when the server can tell: so that many small
    /// requests cannot add up to gigabytes of answers before any of them is
    /// counted; 0 when it cannot), from the serving stage until the
    /// returned [`Held`] is dropped, or refuses it, in words for the peer,
    /// if that would pass the budget.
    pub fn hold<Req: Serialize>(
        &self,
        request: &Req,
        answer_bound: u64,
    ) -> Result<Held, tarpc::ServerError> {
        let bytes = encoded_size(request).max(answer_bound);
        let wanted = units_of(bytes).max(1);
        match Arc::clone(&self.serving).try_acquire_many_owned(wanted) {
            Ok(permit) => Ok(Held { permit }),
            Err(_) => {
                let message = self.refusal(bytes);
                if self.should_warn() {
                    tracing::warn!("refusing a request: {message}");
                }
                Err(tarpc::ServerError::new(io::ErrorKind::Other, message))
            }
        }
    }

    /// Takes `bytes` from the serving stage, waiting in turn (first come,
    /// first served) until they are free, rather than refusing: for a
    /// server's own queue in front of something that must not hold more.
    /// A request larger than the whole budget waits for all of it.
    pub async fn wait_to_serve(&self, bytes: u64) -> Held {
        let wanted = units_of(bytes).clamp(1, self.units);
        let permit = Arc::clone(&self.serving)
            .acquire_many_owned(wanted)
            .await
            .expect("a budget's semaphore is never closed");
        Held { permit }
    }

    /// Keeps `held` (a request's share) until its answer, of `answer_bytes`,
    /// is written to the socket (see [`Unsent`]). An answer larger than the
    /// share takes the rest too if the budget has room for it now; it is
    /// never refused or delayed, since it is made already.
    pub fn until_sent(&self, mut held: Held, answer_bytes: u64, unsent: &Unsent) {
        let wanted = units_of(answer_bytes).min(self.units) as usize;
        let have = held.permit.num_permits();
        if wanted > have
            && let Ok(more) =
                Arc::clone(&self.serving).try_acquire_many_owned((wanted - have) as u32)
        {
            held.permit.merge(more);
        }
        unsent.push(answer_bytes, held);
    }

    /// Why a request of `bytes` was refused, and what to do.
    fn refusal(&self, bytes: u64) -> String {
        let held = self.serving_bytes();
        let over_all = bytes > self.limit_bytes;
        let situation = if over_all {
            format!(
                "this request of {} is larger than the whole limit of {}",
                human_bytes(bytes),
                human_bytes(self.limit_bytes)
            )
        } else {
            format!(
                "its requests being served and its answers not yet read hold {held}, \
                 and this one of {bytes} would pass the limit of {limit}",
                held = human_bytes(held),
                bytes = human_bytes(bytes),
                limit = human_bytes(self.limit_bytes)
            )
        };
        let remedy = if over_all {
            "send a smaller request, or ask the operator to raise the limit"
        } else {
            "read the answers already sent or wait for some requests to end, then send it \
             again; or send smaller requests, or ask the operator to raise the limit"
        };
        format!(
            "{owner}: {situation} ({setting}); {remedy}",
            owner = self.owner,
            setting = self.setting
        )
    }

    fn should_warn(&self) -> bool {
        let mut last = self
            .last_warning
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let due = last.is_none_or(|at| at.elapsed() >= WARN_EVERY);
        if due {
            *last = Some(Instant::now());
        }
        due
    }
}

fn available(semaphore: &Semaphore) -> u32 {
    u32::try_from(semaphore.available_permits()).unwrap_or(u32::MAX)
}

/// KiB needed for `bytes`, rounded up.
fn units_of(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT_BYTES)).unwrap_or(u32::MAX)
}

/// The bytes `request` takes in a frame: tarpc's codec is bincode 1 with
/// its default options. Blobs (tensors, texts, items) are counted by their
/// lengths without being walked, so this costs little even for a frame of
/// megabytes.
pub fn encoded_size<T: Serialize>(request: &T) -> u64 {
    use bincode::Options as _;
    bincode::DefaultOptions::new()
        .serialized_size(request)
        .unwrap_or(u64::MAX)
}

/// A connection's reading side that takes each frame's bytes from a
/// [`ByteBudget`] before reading the frame's body (the module's reading
/// stage). It reads a frame's 4-byte length, then waits for that many bytes
/// of budget, then reads exactly the body, so it never reads into the next
/// frame; the budget is given back when the connection reads on, which the
/// codec does only after it has decoded the frame before.
///
/// A frame longer than `max_frame_bytes` takes nothing: the codec refuses it
/// on its length and ends the connection before its body is read.
#[derive(Debug)]
pub struct GatedRead<IO> {
    io: Take<IO>,
    gate: PollSemaphore,
    budget_units: u32,
    max_frame_bytes: u64,
    header: [u8; HEADER_BYTES],
    header_len: usize,
    body_left: u64,
    body_units: u32,
    permit: Option<OwnedSemaphorePermit>,
}

impl<IO: AsyncRead + Unpin> GatedRead<IO> {
    pub fn new(io: IO, budget: &ByteBudget, max_frame_bytes: usize) -> Self {
        GatedRead {
            io: io.take(0),
            gate: PollSemaphore::new(Arc::clone(&budget.reading)),
            budget_units: budget.units,
            max_frame_bytes: max_frame_bytes as u64,
            header: [0; HEADER_BYTES],
            header_len: 0,
            body_left: 0,
            body_units: 0,
            permit: None,
        }
    }

    /// Reads at most `most` bytes into `buf`; how many it read.
    fn read_at_most(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        most: u64,
    ) -> Poll<io::Result<usize>> {
        self.io.set_limit(most);
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
        Poll::Ready(Ok(buf.filled().len() - before))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for GatedRead<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.header_len == HEADER_BYTES && this.body_left == 0 {
            // The frame before is read whole, and the codec decoded it before
            // asking for more: its bytes go back to the budget.
            this.permit = None;
            this.header_len = 0;
        }
        if this.header_len < HEADER_BYTES {
            let before = buf.filled().len();
            let got = ready!(this.read_at_most(cx, buf, (HEADER_BYTES - this.header_len) as u64))?;
            this.header[this.header_len..this.header_len + got]
                .copy_from_slice(&buf.filled()[before..before + got]);
            this.header_len += got;
            if this.header_len == HEADER_BYTES {
                let length = u64::from(u32::from_be_bytes(this.header));
                this.body_left = length;
                this.body_units = if length <= this.max_frame_bytes {
                    // A frame larger than the whole budget waits for all of
                    // it (the server's configuration refuses such a budget).
                    units_of(length).min(this.budget_units)
                } else {
                    0
                };
            }
            return Poll::Ready(Ok(()));
        }
        if this.permit.is_none() && this.body_units > 0 {
            match ready!(this.gate.poll_acquire_many(cx, this.body_units)) {
                Some(permit) => this.permit = Some(permit),
                None => return Poll::Ready(Err(io::Error::other("the server is stopping"))),
            }
        }
        let got = ready!(this.read_at_most(cx, buf, this.body_left))?;
        this.body_left -= got as u64;
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for GatedRead<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io.get_mut()).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io.get_mut()).poll_shutdown(cx)
    }
}

/// A connection's writing side that tells its [`Unsent`] answers how many
/// bytes went out, so that their shares of the budget go back as the peer
/// reads them. Reads pass through untouched.
#[derive(Debug)]
pub struct ReleasingWrite<IO> {
    io: IO,
    unsent: Arc<Unsent>,
}

impl<IO> ReleasingWrite<IO> {
    pub fn new(io: IO, unsent: Arc<Unsent>) -> Self {
        ReleasingWrite { io, unsent }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for ReleasingWrite<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for ReleasingWrite<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let sent = ready!(Pin::new(&mut this.io).poll_write(cx, buf))?;
        this.unsent.written(sent as u64);
        Poll::Ready(Ok(sent))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;
    use tokio::io::AsyncWriteExt as _;
    use tokio::net::UnixStream;
    use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

    const KIB: u64 = 1024;
    const MAX_FRAME: usize = 4 << 20;

    fn frame(body_bytes: usize, fill: u8) -> Vec<u8> {
        let mut frame = (body_bytes as u32).to_be_bytes().to_vec();
        frame.resize(4 + body_bytes, fill);
        frame
    }

    /// One gated connection: the peer's end, and the server's decoded frames.
    fn connection(
        budget: &ByteBudget,
    ) -> (
        UnixStream,
        FramedRead<GatedRead<UnixStream>, LengthDelimitedCodec>,
    ) {
        let (peer, ours) = UnixStream::pair().expect("socket pair");
        let codec = LengthDelimitedCodec::builder()
            .max_frame_length(MAX_FRAME)
            .new_codec();
        let frames = FramedRead::new(GatedRead::new(ours, budget, MAX_FRAME), codec);
        (peer, frames)
    }

    /// A read: a request of a few bytes whose answer may take 40 KiB.
    fn large_read(budget: &ByteBudget) -> Result<Held, tarpc::ServerError> {
        budget.hold(&"read", 40 * KIB)
    }

    #[tokio::test]
    async fn an_answer_keeps_its_share_until_its_bytes_are_written() {
        let budget = ByteBudget::new("uid 1000", "[limits] test_setting", 100 * KIB);
        let unsent = Arc::new(Unsent::default());
        let (_peer, ours) = UnixStream::pair().expect("socket pair");
        let mut writer = ReleasingWrite::new(ours, Arc::clone(&unsent));
        // A request takes the most its answer may take.
        let held = large_read(&budget).expect("fits");
        assert_eq!(budget.serving_bytes(), 40 * KIB);
        // Its answer of 30 KiB keeps the share until all of it is written.
        budget.until_sent(held, 30 * KIB, &unsent);
        writer.write_all(&[1; 20 * 1024]).await.unwrap();
        assert_eq!(budget.serving_bytes(), 40 * KIB, "two thirds written");
        writer.write_all(&[1; 10 * 1024]).await.unwrap();
        assert_eq!(budget.serving_bytes(), 0, "written whole");
        // An answer larger than its request's share takes the rest while
        // there is room for it...
        let held = budget.hold(&"status", 0).expect("fits");
        budget.until_sent(held, 50 * KIB, &unsent);
        assert_eq!(budget.serving_bytes(), 50 * KIB);
        let held = large_read(&budget).expect("fits");
        budget.until_sent(held, 40 * KIB, &unsent);
        // ...and a peer that reads none of them gets its next request
        // refused, with what to do.
        let refused = large_read(&budget).expect_err("unread answers fill it");
        for words in [
            "its answers not yet read hold 90.0 KiB",
            "read the answers already sent",
        ] {
            assert!(
                refused.detail.contains(words),
                "{words}: {}",
                refused.detail
            );
        }
        // A connection that ends gives back what its answers held.
        drop((writer, unsent));
        assert_eq!(budget.serving_bytes(), 0);
    }

    #[test]
    fn a_request_that_would_pass_the_budget_is_refused_until_others_end() {
        let budget = ByteBudget::new("uid 1000", "[limits] test_setting", 100 * KIB);
        let blob = |bytes: usize| serde_bytes::ByteBuf::from(vec![7u8; bytes]);
        let first = budget.hold(&blob(60 * 1024), 0).expect("fits");
        assert_eq!(budget.serving_bytes(), 61 * KIB, "rounded up to KiB");
        let refused = budget.hold(&blob(60 * 1024), 0).expect_err("over");
        for words in [
            "uid 1000",
            "[limits] test_setting",
            "not yet read hold 61.0 KiB",
            "this one of 60.0 KiB",
            "limit of 100.0 KiB",
            "wait for some requests to end",
        ] {
            assert!(
                refused.detail.contains(words),
                "{words}: {}",
                refused.detail
            );
        }
        // Small requests still fit beside it.
        let small = budget.hold(&"status", 0).expect("a small request fits");
        drop((first, small));
        assert_eq!(budget.serving_bytes(), 0, "every share given back");
        let second = budget
            .hold(&blob(60 * 1024), 0)
            .expect("fits once the first ended");
        drop(second);
        let whole = budget
            .hold(&blob(200 * 1024), 0)
            .expect_err("larger than all");
        assert!(
            whole.detail.contains("larger than the whole limit")
                && whole.detail.contains("send a smaller request"),
            "{}",
            whole.detail
        );
    }

    #[tokio::test]
    async fn waiting_to_serve_takes_turns_and_never_holds_more_than_the_budget() {
        let budget = ByteBudget::new("brain `x`", "sandbox.memory_mib", 100 * KIB);
        let first = budget.wait_to_serve(70 * KIB).await;
        // A second that would pass the budget waits...
        let mut second = Box::pin(budget.wait_to_serve(70 * KIB));
        let early = tokio::time::timeout(Duration::from_millis(100), &mut second).await;
        assert!(early.is_err(), "served past the budget");
        assert!(budget.serving_bytes() <= 100 * KIB);
        // ...and is served once the first is done.
        drop(first);
        let second = second.await;
        assert_eq!(budget.serving_bytes(), 70 * KIB);
        drop(second);
        // One larger than the whole budget waits for all of it, not for ever.
        let whole = budget.wait_to_serve(500 * KIB).await;
        assert_eq!(budget.serving_bytes(), 100 * KIB);
        drop(whole);
    }

    #[test]
    fn a_request_is_sized_as_its_frame_carries_it() {
        let text = "x".repeat(5000);
        // bincode 1, default options: a varint length, then the bytes.
        assert_eq!(encoded_size(&text), 5000 + 3);
    }

    /// Two connections of one peer share the reading stage: while the first
    /// connection's frame is held (decoded, not yet handed on), the second's
    /// frame, which would pass the budget, is not read at all; it is read as
    /// soon as the first connection reads on, and nothing is lost or refused.
    #[tokio::test]
    async fn a_frame_past_the_budget_waits_to_be_read_until_another_is_handed_on() {
        let budget = ByteBudget::new("uid 1000", "[limits] test_setting", 1 << 20);
        let (mut peer_a, mut frames_a) = connection(&budget);
        let (mut peer_b, mut frames_b) = connection(&budget);
        // Each write fills the socket buffer, so each peer writes on a task.
        let a = frame(700 * 1024, b'a');
        let b = frame(700 * 1024, b'b');
        let writer_a = tokio::spawn(async move {
            peer_a.write_all(&a).await.expect("write a");
            peer_a
        });
        let writer_b = tokio::spawn(async move {
            peer_b.write_all(&b).await.expect("write b");
            peer_b
        });
        let got_a = frames_a.next().await.expect("a frame").expect("decoded");
        assert!(got_a.len() == 700 * 1024 && got_a.iter().all(|&byte| byte == b'a'));
        assert_eq!(budget.reading_bytes(), 700 * KIB, "held until read on");
        // B's frame would pass the budget: only its length is read.
        let waited = tokio::time::timeout(Duration::from_millis(300), frames_b.next()).await;
        assert!(waited.is_err(), "B's frame was read past the budget");
        // B, first in line, has collected what was free, and no more.
        assert_eq!(budget.reading_bytes(), 1024 * KIB);
        // A reads on (it finds nothing more yet): A's frame is given back.
        let idle = tokio::time::timeout(Duration::from_millis(50), frames_a.next()).await;
        assert!(idle.is_err(), "A's peer sent one frame only");
        let got_b = frames_b.next().await.expect("b frame").expect("decoded");
        assert!(got_b.len() == 700 * 1024 && got_b.iter().all(|&byte| byte == b'b'));
        assert_eq!(budget.reading_bytes(), 700 * KIB);
        let (_peer_a, mut peer_b) = (writer_a.await.unwrap(), writer_b.await.unwrap());
        // Small frames pass one after another on one connection.
        for n in 0..3u8 {
            peer_b.write_all(&frame(10, n)).await.expect("write");
        }
        for n in 0..3u8 {
            let got = frames_b.next().await.expect("frame").expect("decoded");
            assert_eq!(&got[..], &[n; 10]);
        }
        assert_eq!(
            budget.reading_bytes(),
            KIB,
            "only the last small frame held"
        );
        drop(peer_b);
        assert!(
            frames_b.next().await.is_none(),
            "the peer's end ends the stream"
        );
        assert_eq!(budget.reading_bytes(), 0);
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_ends_the_connection_without_taking_the_budget() {
        let budget = ByteBudget::new("uid 1000", "[limits] test_setting", 1 << 20);
        let (mut peer, mut frames) = connection(&budget);
        peer.write_all(&((MAX_FRAME as u32) + 1).to_be_bytes())
            .await
            .expect("write");
        let err = frames
            .next()
            .await
            .expect("an error")
            .expect_err("over the limit");
        assert!(err.to_string().contains("frame size too big"), "{err}");
        assert_eq!(budget.reading_bytes(), 0);
    }
}
