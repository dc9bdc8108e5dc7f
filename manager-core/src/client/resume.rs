//! A session that outlives its socket: the socket a connection uses now, and how the client
//! gets back to its session when that socket breaks.
//!
//! Both sides count the frames of a session, each in the order it sends them (the outbox's
//! lock orders them), and keep every frame they sent until the peer acknowledges it: the
//! client with [`Request::Ack`] every [`ACK_EVERY`] replies or [`ACK_BYTES`] of them, the server
//! answering with how many requests it has read. When the socket breaks (a read error, a
//! reset, a ping unanswered for the liveness bound; not a close by the server, which ends the
//! session), the client:
//!
//! 1. lets go of the old socket: nothing more is written to it (the outbox only keeps what is
//!    sent meanwhile), its tasks are stopped and its blocked readers leave it, so that nothing
//!    more is delivered from it;
//! 2. reconnects with backoff, runs the authkey handshake, and sends [`Request::Resume`]: the
//!    session's id, how many replies it has received, and a proof made with the session's
//!    secret (derived from the authkey at the first handshake; never on the wire) bound to
//!    this handshake, so that neither a session id nor a proof seen on the wire resumes;
//! 3. on [`ControlReply::Resumed`], sends again the requests after the ones the server has
//!    read, while the server sends again the replies after the ones the client has received.
//!
//! A call the server ran is thus not run again (its reply comes from the server's log), a call
//! it never read is sent again, and one-way messages (increfs, releases, cancels) are applied
//! once. Waiters keep waiting meanwhile, and calls made meanwhile are kept to be sent. When
//! the server no longer has the session (the grace period passed, or it restarted), or cannot
//! be reached within the grace period, every pending and later call fails with
//! [`Error::SessionExpired`]; when nothing listens at the address any more (the server
//! stopped), with [`Error::ConnectionClosed`].

use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{
    background_runtime, direct, keep_alive, read_plain, read_responses, Connection, Inner,
};
use crate::address::Address;
use crate::auth::{AuthKey, SessionKeys};
use crate::error::Error;
use crate::transport::{self, write_frames, SocketWriter, Stream};
use crate::wire::{self, ControlReply, Reply, Request, ResponseHead};

/// The client acknowledges the replies it received every this many.
pub(super) const ACK_EVERY: u64 = 64;

/// The client acknowledges the replies it received once they add up to this many bytes.
pub(super) const ACK_BYTES: u64 = 1 << 20;

/// The longest wait between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(1);

/// What a client needs to resume its session on a new socket.
pub(super) struct Resume {
    pub(super) authkey: AuthKey,
    pub(super) options: super::ConnectOptions,
    pub(super) keys: SessionKeys,
    /// How long the server keeps the session after a break (its welcome says).
    pub(super) grace: Duration,
    /// Where the connection's tasks run.
    pub(super) runtime: Handle,
}

/// The socket a connection uses now.
#[derive(Default)]
pub(super) struct Link {
    /// Counts the sockets of the session, so that a break seen late on an old one is ignored.
    number: u64,
    /// The socket, for blocked callers to read from their own thread (plain TCP and Unix).
    direct: Option<Arc<direct::Direct>>,
    /// The tasks that serve it: writer, reader, keep-alive.
    tasks: Vec<JoinHandle<()>>,
    /// Whether it has been taken for broken (a resume is under way, or the connection failed).
    broken: bool,
}

impl Link {
    /// The socket's number, and its handle for blocked callers.
    pub(super) fn direct(&self) -> (u64, Option<Arc<direct::Direct>>) {
        (self.number, self.direct.clone())
    }

    /// The socket's number.
    pub(super) fn number(&self) -> u64 {
        self.number
    }

    /// The first and only link of a connection that is never resumed (through shared memory).
    pub(super) fn only(direct: Arc<direct::Direct>, tasks: Vec<JoinHandle<()>>) -> Link {
        Link {
            number: 1,
            direct: Some(direct),
            tasks,
            broken: false,
        }
    }
}

/// Serves the connection through `stream`, its next socket: starts its writer (taking the
/// frames of `rx`), its reader and its keep-alive.
pub(super) fn start_link(
    inner: &Arc<Inner>,
    stream: Stream,
    rx: mpsc::UnboundedReceiver<Bytes>,
    liveness: Duration,
) -> Result<(), Error> {
    let direct = match stream.plain_socket()? {
        Some(fd) => Some(Arc::new(direct::Direct::new(fd, wire::DEFAULT_MAX_FRAME)?)),
        None => None,
    };
    let written = inner.outbox.written();
    let weak = Arc::downgrade(inner);
    // Locked while the tasks start, so that none of them reports a break of a socket that is
    // not installed yet.
    let mut link = inner.link.write();
    let number = link.number + 1;
    // The keep-alive's timer lives on the client's own runtime, not the caller's: a runtime
    // with a timer armed pays for it at every park (about 700 instructions a call on a
    // current-thread runtime), and the pings need no runtime of the caller's.
    let keep_alive = background_runtime().spawn(keep_alive(weak.clone(), liveness, number));
    let mut tasks = vec![keep_alive];
    // A plain socket leaves the runtime's stream types: its reader task watches it through a
    // set of its own (`direct::Watch`), its writer task watches its writability only while it
    // waits for room (`SocketWriter`), so that no reply a blocked caller reads itself, nor the
    // server reading a request, wakes the runtime.
    let plain = match (&stream, &direct) {
        (Stream::Tcp(_) | Stream::Unix(_), Some(direct)) => direct.watch(),
        _ => None,
    };
    match (stream, direct.clone(), plain) {
        (Stream::Tcp(s), Some(direct), Some(watch)) => {
            let writer = SocketWriter::shutting_down_on_drop(s.into_std()?.as_fd())?;
            tasks.push(tokio::spawn(write_frames(writer, rx, written)));
            tasks.push(tokio::spawn(read_plain(weak, direct, watch, number)));
        }
        (Stream::Unix(s), Some(direct), Some(watch)) => {
            let writer = SocketWriter::shutting_down_on_drop(s.into_std()?.as_fd())?;
            tasks.push(tokio::spawn(write_frames(writer, rx, written)));
            tasks.push(tokio::spawn(read_plain(weak, direct, watch, number)));
        }
        (stream, _, _) => transport::with_split!(stream, |reader, writer| {
            tasks.push(tokio::spawn(write_frames(writer, rx, written)));
            tasks.push(tokio::spawn(read_responses(weak, reader, number)));
        }),
    }
    *link = Link {
        number,
        direct,
        tasks,
        broken: false,
    };
    Ok(())
}

/// Tells the server how many replies of the session this client has received.
pub(super) fn acknowledge(inner: &Inner, received: u64) {
    if inner.closed.load(Ordering::Acquire) {
        return;
    }
    inner.send_one_way(&Request::Ack { received });
}

/// Whether a reason a socket ended for is a failure of the socket (which a new one mends), not
/// of the server (which broke the protocol).
fn socket_failed(reason: &str) -> bool {
    reason.starts_with("the server closed the connection")
        || reason.starts_with("reading from the server failed")
        || reason.starts_with("waiting for the server failed")
}

/// Socket number `socket` of the connection ended, for `reason`: the session is resumed on a
/// new socket when it may be (`resumable`, or, when `None`, when the reason is the socket's),
/// else every call fails.
pub(super) fn link_broken(
    inner: &Arc<Inner>,
    socket: u64,
    reason: String,
    resumable: Option<bool>,
) {
    let resumable = resumable.unwrap_or_else(|| socket_failed(&reason));
    let direct = {
        let mut link = inner.link.write();
        if link.number != socket || link.broken {
            return;
        }
        link.broken = true;
        link.direct.clone()
    };
    match &inner.resume {
        Some(resume)
            if resumable
                && !inner.closed.load(Ordering::Acquire)
                && inner.outbox.is_resumable() =>
        {
            tracing::info!(
                "the connection to {} broke ({reason}); resuming its session",
                inner.address
            );
            resume
                .runtime
                .spawn(resume_session(Arc::downgrade(inner), socket, reason));
        }
        _ => {
            Connection::fail_all(inner, reason, false);
            // A caller blocked reading the socket wakes up and finds it ended.
            if let Some(direct) = direct {
                direct.shut_down();
            }
        }
    }
}

/// How one attempt to resume the session went, when it did not.
enum Attempt {
    /// Try again: the server could not be reached, or the attempt failed on the way.
    Retry(String),
    /// Nothing listens at the address any more: the server stopped, and the session with it.
    Gone(String),
    /// The server no longer has the session.
    Expired(String),
}

/// Lets go of socket number `socket`, which broke for `reason`, then reconnects until the
/// session is resumed, or cannot be.
async fn resume_session(inner: Weak<Inner>, socket: u64, reason: String) {
    let broke = Instant::now();
    {
        let Some(inner) = inner.upgrade() else { return };
        let (tasks, direct) = {
            let mut link = inner.link.write();
            (std::mem::take(&mut link.tasks), link.direct.take())
        };
        // From here on what is sent is kept for the next socket.
        inner.outbox.detach();
        if let Some(direct) = &direct {
            direct.shut_down();
        }
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        // A caller still reading the old socket leaves it (it was shut down): once it has,
        // nothing more is delivered from it, and what was received is known.
        if let Some(direct) = &direct {
            while !direct.retire() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        inner.outbox.writer_stopped();
    }
    let mut delay = Duration::ZERO;
    let mut last = String::from("no attempt finished");
    loop {
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) || inner.link.read().number != socket {
            return;
        }
        let resume = inner.resume.as_ref().expect("only sessions resume");
        let left = (broke + resume.grace).saturating_duration_since(Instant::now());
        if left.is_zero() {
            let message = format!(
                "the connection to {} broke ({reason}), and the server could not be reached \
                 again within its session grace period of {:?} (ServerConfig::session_grace): \
                 {last}",
                inner.address, resume.grace
            );
            Connection::fail_all(&inner, message, true);
            return;
        }
        let limit = resume.options.connect_timeout.min(left);
        let attempt = match tokio::time::timeout(limit, reconnect(&inner, resume)).await {
            Ok(attempt) => attempt,
            Err(_) => Err(Attempt::Retry(format!("reconnecting took over {limit:?}"))),
        };
        match attempt {
            Ok(()) => {
                tracing::info!(
                    "resumed the session with {} after {:.1?}",
                    inner.address,
                    broke.elapsed()
                );
                return;
            }
            Err(Attempt::Retry(why)) => last = why,
            Err(Attempt::Gone(why)) => {
                let message = format!("{reason}; reconnecting: {why}");
                Connection::fail_all(&inner, message, false);
                return;
            }
            Err(Attempt::Expired(why)) => {
                // A server that closed the connection itself ended the session: say it closed.
                let closed = reason.starts_with("the server closed the connection");
                let message = format!(
                    "the connection to {} broke ({reason}), and the session could not be \
                     resumed: {why}",
                    inner.address
                );
                Connection::fail_all(&inner, message, !closed);
                return;
            }
        }
        delay = if delay.is_zero() {
            resume.options.reconnect_delay
        } else {
            (delay * 2).min(MAX_RECONNECT_DELAY)
        };
        drop(inner);
        tokio::time::sleep(delay).await;
    }
}

/// One attempt to resume the session on a new socket.
async fn reconnect(inner: &Arc<Inner>, resume: &Resume) -> Result<(), Attempt> {
    let address: &Address = &inner.address;
    let mut stream = match transport::connect(address, resume.options.tls.as_ref()).await {
        Ok(stream) => stream,
        Err(Error::Connect { source, .. })
            if matches!(
                source.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
            ) =>
        {
            return Err(Attempt::Gone(format!(
                "nothing listens at {address}: {source}"
            )))
        }
        Err(e) => return Err(Attempt::Retry(e.to_string())),
    };
    let (welcome, handshake) = match stream.handshake_client(&resume.authkey).await {
        Ok(done) => done,
        // Refused: the key is not the server's (any more). A handshake cut short is retried.
        Err(e @ Error::Auth(_)) if e.to_string().contains("refused our authkey") => {
            return Err(Attempt::Gone(e.to_string()))
        }
        Err(e @ (Error::Protocol(_) | Error::Tls(_))) => return Err(Attempt::Gone(e.to_string())),
        Err(e) => return Err(Attempt::Retry(e.to_string())),
    };
    let received = inner.received.load(Ordering::Acquire);
    let request = Request::Resume {
        session: resume.keys.id,
        proof: handshake.resume_proof(&resume.keys),
        received,
    };
    let retry = |e: Error| Attempt::Retry(e.to_string());
    stream
        .send_message(&request, "request")
        .await
        .map_err(retry)?;
    let answer = stream
        .read_message(64 * 1024, "response")
        .await
        .map_err(retry)?;
    let (head, _) = wire::take::<ResponseHead>(&answer, "response").map_err(retry)?;
    match head.reply {
        Reply::Control(ControlReply::Resumed(read)) => {
            let rx = inner
                .outbox
                .attach(&stream, read)
                .map_err(Attempt::Expired)?;
            let liveness = match welcome.liveness {
                Duration::ZERO => resume.options.liveness_timeout,
                server => server.min(resume.options.liveness_timeout),
            };
            start_link(inner, stream, rx, liveness).map_err(retry)
        }
        Reply::Error(refused) => Err(Attempt::Expired(refused.message)),
        other => Err(Attempt::Gone(format!(
            "the server answered a resume with {other:?}"
        ))),
    }
}
