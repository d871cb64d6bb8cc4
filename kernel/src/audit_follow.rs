//! `sios audit tail --follow`: watching the audit log as one recorded action.
//!
//! Every read of the log is an action, and every action leaves an intent and
//! an outcome record. A follower that polled with ordinary reads would add
//! two records per poll, which its next poll would show it, for as long as it
//! watched. So following is one action that lasts: `audit_follow_start`
//! decides it (as `audit_read` on `audit:follow`) and records its intent;
//! the reads inside the session are part of that action; its outcome is
//! recorded when the session ends:
//! - the follower stops it (`audit_follow_stop`): `ok`;
//! - the follower sends nothing for [`FOLLOW_IDLE_SECS`] (killed, or its
//!   terminal closed): an error saying so;
//! - the appliance shuts down: an error saying so, recorded before the audit
//!   service stops.
//!
//! A session belongs to the client that started it (uid and pid, from
//! SO_PEERCRED); another client naming its number is told there is no such
//! session. At most [`MAX_FOLLOWERS`] run at once, since each polls the
//! audit service while its follower waits.

use crate::appliance::{Appliance, Requester};
use sios_ipc::{
    Caller, ControlError, FOLLOW_IDLE_SECS, FOLLOW_MAX_WAIT_MS, FollowSession, FollowSummary,
    MAX_FOLLOWERS, RecordPage,
};
use sios_policy::{Action, Resource};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// How often a waiting session looks for new records. The log has no
/// notification for readers; a quarter second is prompt for a person
/// watching and cheap for the audit service (one read of its last page).
const POLL: Duration = Duration::from_millis(250);

/// The most records one `audit_follow_next` returns.
const MAX_PAGE: u64 = 4096;

/// The live follow sessions of one appliance.
#[derive(Default)]
pub struct Followers {
    sessions: Mutex<HashMap<u64, Session>>,
    next_id: AtomicU64,
    /// Cancelled by [`Followers::end_all`]: the appliance is stopping. It
    /// also wakes sessions that wait for records, so that each one reads
    /// its Shutdown and records its outcome while the audit service runs.
    closing: CancellationToken,
}

impl std::fmt::Debug for Followers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.sessions.lock().map_or(0, |s| s.len());
        f.debug_struct("Followers").field("live", &live).finish()
    }
}

struct Session {
    /// The client that started it; nobody else may use it.
    owner: (u32, Option<i32>),
    commands: mpsc::Sender<Command>,
}

enum Command {
    Next {
        max: u64,
        wait: Duration,
        reply: oneshot::Sender<Result<RecordPage, ControlError>>,
    },
    Stop {
        reply: oneshot::Sender<FollowSummary>,
    },
    Shutdown,
}

/// How a session's action ended, for its outcome record.
#[derive(Debug)]
enum Ended {
    TooMany,
    Idle,
    Shutdown,
    AuditGone(String),
}

impl std::fmt::Display for Ended {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ended::TooMany => write!(
                f,
                "{MAX_FOLLOWERS} follow sessions already run; stop one (Ctrl-C in its terminal) \
                 and try again"
            ),
            Ended::Idle => write!(
                f,
                "the follower went away: no request for {FOLLOW_IDLE_SECS} s"
            ),
            Ended::Shutdown => write!(f, "the appliance shut down while the follower watched"),
            Ended::AuditGone(why) => write!(f, "the audit log could not be read: {why}"),
        }
    }
}

fn owner_of(caller: &Caller) -> (u32, Option<i32>) {
    (caller.uid, caller.pid)
}

fn no_session(session: u64) -> ControlError {
    ControlError::Failed(format!(
        "no follow session {session} for this client: it has ended (its follower stopped \
         it or sent nothing for {FOLLOW_IDLE_SECS} s; or the kernel restarted), or another \
         client started it; run `sios audit tail --follow` again"
    ))
}

impl Followers {
    /// Decides and records the follow action for `caller`, then starts its
    /// session. Returns once the session runs, or with the refusal.
    pub async fn start(
        appliance: &Arc<Appliance>,
        caller: &Caller,
        back: u64,
    ) -> Result<FollowSession, ControlError> {
        let followers = &appliance.followers;
        if followers.closing.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        let id = followers.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (commands, inbox) = mpsc::channel(4);
        let (started, running) = oneshot::channel();
        let task = {
            let appliance = Arc::clone(appliance);
            let requester = Requester::Client(caller.clone());
            let owner = owner_of(caller);
            tokio::spawn(async move {
                let ended = appliance
                    .governed(
                        &requester,
                        Action::AuditRead,
                        Resource::AuditLog,
                        "audit:follow".into(),
                        || async {
                            // Admitted and recorded: take a place, or say why not.
                            {
                                let mut sessions = appliance.followers.sessions.lock().unwrap();
                                // Checked under the lock that `end_all` takes
                                // after closing: a session is either seen and
                                // ended by it, or never begins.
                                if appliance.followers.closing.is_cancelled() {
                                    let _ = started.send(Err(()));
                                    return Err(Ended::Shutdown);
                                }
                                if sessions.len() >= MAX_FOLLOWERS {
                                    return Err(Ended::TooMany);
                                }
                                sessions.insert(id, Session { owner, commands });
                            }
                            run_session(&appliance, back, inbox, started).await
                        },
                    )
                    .await;
                appliance.followers.sessions.lock().unwrap().remove(&id);
                // A stop is answered only now, with the outcome recorded.
                match ended {
                    Ok((reply, summary)) => {
                        let _ = reply.send(summary);
                        Ok(())
                    }
                    Err(refusal) => Err(ControlError::from(refusal)),
                }
            })
        };
        match running.await {
            Ok(Ok(from_seq)) => Ok(FollowSession {
                session: id,
                from_seq,
            }),
            // The session never ran: the action was refused or failed
            // before it began; the task's result says how.
            Ok(Err(())) | Err(_) => match task.await {
                Ok(Err(refusal)) => Err(refusal),
                Ok(Ok(())) => Err(ControlError::Failed(
                    "the follow session ended as it began".into(),
                )),
                Err(panic) => Err(ControlError::Failed(format!(
                    "the follow session failed: {panic}"
                ))),
            },
        }
    }

    fn sender(&self, caller: &Caller, session: u64) -> Result<mpsc::Sender<Command>, ControlError> {
        if self.closing.is_cancelled() {
            return Err(ControlError::ShuttingDown);
        }
        let sessions = self.sessions.lock().unwrap();
        match sessions.get(&session) {
            Some(s) if s.owner == owner_of(caller) => Ok(s.commands.clone()),
            _ => Err(no_session(session)),
        }
    }

    /// The records after the session's cursor.
    pub async fn next(
        &self,
        caller: &Caller,
        session: u64,
        max: u64,
        wait_ms: u64,
    ) -> Result<RecordPage, ControlError> {
        let (reply, answer) = oneshot::channel();
        let command = Command::Next {
            max: max.clamp(1, MAX_PAGE),
            wait: Duration::from_millis(wait_ms.min(FOLLOW_MAX_WAIT_MS)),
            reply,
        };
        self.sender(caller, session)?
            .send(command)
            .await
            .map_err(|_| no_session(session))?;
        answer.await.map_err(|_| no_session(session))?
    }

    /// Ends the session; its outcome is recorded once this returns.
    pub async fn stop(&self, caller: &Caller, session: u64) -> Result<FollowSummary, ControlError> {
        let (reply, answer) = oneshot::channel();
        self.sender(caller, session)?
            .send(Command::Stop { reply })
            .await
            .map_err(|_| no_session(session))?;
        answer.await.map_err(|_| no_session(session))
    }

    /// Ends every session (appliance shutdown) and waits, up to a few
    /// seconds, until their outcomes are recorded (each session leaves the
    /// table only then), so that none is left open in the log.
    pub async fn end_all(&self) {
        self.closing.cancel();
        let senders: Vec<_> = {
            let sessions = self.sessions.lock().unwrap();
            sessions.values().map(|s| s.commands.clone()).collect()
        };
        for sender in senders {
            let _ = sender.send(Command::Shutdown).await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self.sessions.lock().unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A stop's answer, sent once the session's outcome is recorded.
type StopReply = (oneshot::Sender<FollowSummary>, FollowSummary);

/// One session's life, between its intent and its outcome.
async fn run_session(
    appliance: &Appliance,
    back: u64,
    mut inbox: mpsc::Receiver<Command>,
    started: oneshot::Sender<Result<u64, ()>>,
) -> Result<StopReply, Ended> {
    let size = match read(appliance, 0, 0).await {
        Ok(page) => page.tree_size,
        Err(why) => {
            let _ = started.send(Err(()));
            return Err(Ended::AuditGone(why));
        }
    };
    let mut cursor = size.saturating_sub(back);
    let mut delivered = 0u64;
    let _ = started.send(Ok(cursor));
    let idle = Duration::from_secs(FOLLOW_IDLE_SECS);
    loop {
        let command = match tokio::time::timeout(idle, inbox.recv()).await {
            Err(_) | Ok(None) => return Err(Ended::Idle),
            Ok(Some(command)) => command,
        };
        match command {
            Command::Next { max, wait, reply } => {
                let page = wait_for_records(appliance, cursor, max, wait).await;
                if let Ok(page) = &page {
                    cursor += page.records.len() as u64;
                    delivered += page.records.len() as u64;
                }
                let failed = page.as_ref().err().map(ToString::to_string);
                let _ = reply.send(page);
                if let Some(why) = failed {
                    return Err(Ended::AuditGone(why));
                }
            }
            Command::Stop { reply } => {
                let summary = FollowSummary {
                    delivered,
                    next_seq: cursor,
                };
                return Ok((reply, summary));
            }
            Command::Shutdown => return Err(Ended::Shutdown),
        }
    }
}

/// Reads from `cursor` on, polling until a record comes, `wait` passes or
/// the appliance starts to stop.
async fn wait_for_records(
    appliance: &Appliance,
    cursor: u64,
    max: u64,
    wait: Duration,
) -> Result<RecordPage, ControlError> {
    let closing = &appliance.followers.closing;
    let deadline = Instant::now() + wait;
    loop {
        let page = read(appliance, cursor, max)
            .await
            .map_err(ControlError::Failed)?;
        if !page.records.is_empty() || Instant::now() >= deadline || closing.is_cancelled() {
            return Ok(page);
        }
        let pause = POLL.min(deadline.saturating_duration_since(Instant::now()));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = closing.cancelled() => {}
        }
    }
}

/// One read of the log by the kernel itself, inside a recorded session.
async fn read(appliance: &Appliance, from_seq: u64, max: u64) -> Result<RecordPage, String> {
    let client = appliance.audit_client()?;
    let ctx = sios_ipc::transport::context_with_timeout(Duration::from_secs(30));
    crate::operations::audit_answer(client.read(ctx, from_seq, max).await)
}
