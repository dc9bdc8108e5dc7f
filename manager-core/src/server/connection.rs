//! One native client connection: its state, and the loop that reads its requests.
//!
//! The read loop decodes each request and answers what needs no method body at once (creates,
//! reference counts, control requests); calls are handed to `dispatch`, which runs plain method
//! bodies on the worker threads and `async` methods in tasks, so the loop never runs user code
//! and is never held up by it.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foldhash::HashMap as FastMap;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;

use super::dispatch::{runs_factory, Work};
use super::in_flight::InFlight;
use super::{panic_message, Args, State};
use crate::context::{Cleanup, Host, Retained};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::transport::{Outbox, ReadHalf};
use crate::value::Value;
use crate::wire::{self, Control, ControlReply, Reply, Request};

/// A client connection: what it holds, and where its replies go. CPython clients' connections
/// are `Connection`s too, without an outbox of their own (see `python`).
pub(super) struct Connection {
    pub(super) id: u64,
    pub(super) state: Arc<State>,
    /// The objects this connection holds references to, with how many: object id -> count.
    pub(super) held: Mutex<super::refs::Held>,
    /// Where replies go: written by whoever made them, or queued for the writer task.
    pub(super) outbox: Outbox,
    /// Cancelled when the connection closes or the server stops.
    pub(super) closed: CancellationToken,
    /// What objects asked to run when this connection closes (one per object), such as
    /// releasing a lock the client holds.
    pub(super) cleanups: Mutex<HashMap<u64, Cleanup>>,
    /// Permits for calls in flight (`ServerConfig::max_in_flight`).
    pub(super) in_flight: Arc<InFlight>,
    /// The async calls running, by request id, so that a client can cancel one.
    pub(super) calls: Mutex<FastMap<u64, CancellationToken>>,
    /// The session this connection is, when it may outlive a broken socket (`session`).
    pub(super) session: Option<super::session::Session>,
    /// How many request frames of the session the read loop has handled.
    pub(super) received: AtomicU64,
    /// The streams it has open (see `streams`).
    pub(super) streams: super::streams::Streams,
}

/// How a connection's read loop ended, when the client did not break the protocol.
pub(super) enum Ended {
    /// The client closed it, or the server closed it (stopping, or a reply that cannot be
    /// sent): the session ends.
    Closed,
    /// The socket went silent past the liveness bound, or a new connection resumed the
    /// session: the session may be resumed.
    Broken(String),
    /// Reading the socket failed (a reset): the session may be resumed, unless the peer is on
    /// this host, whose reset means its process closed the socket or died.
    Failed(String),
}

impl Connection {
    /// A connection of `state`'s, replying through `outbox`; a session that may be resumed
    /// when it has `keys`.
    pub(super) fn new(
        state: Arc<State>,
        outbox: Outbox,
        keys: Option<crate::auth::SessionKeys>,
    ) -> Connection {
        Connection {
            id: state.next_connection(),
            session: keys.map(super::session::Session::new),
            received: AtomicU64::new(0),
            held: Mutex::new(Default::default()),
            outbox,
            closed: state.stop.child_token(),
            cleanups: Mutex::new(HashMap::new()),
            in_flight: InFlight::new(state.config.max_in_flight),
            calls: Mutex::new(FastMap::default()),
            streams: super::streams::Streams::new(),
            state,
        }
    }

    /// Ends the connection: its calls are cancelled, its streams stopped, its cleanups run, its
    /// references released.
    pub(super) fn close(&self) {
        self.closed.cancel();
        self.stop_streams();
        self.run_cleanups();
        self.release_all();
    }

    /// Runs the cleanups objects registered for this connection; a panicking one is logged.
    pub(super) fn run_cleanups(&self) {
        let cleanups = std::mem::take(&mut *self.cleanups.lock());
        for (object, cleanup) in cleanups {
            if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(cleanup)) {
                tracing::warn!(
                    "the cleanup of object {object} panicked: {}",
                    panic_message(&panic)
                );
            }
        }
    }

    /// Reads and handles requests until the connection ends; `superseded` ends it as broken
    /// (a new connection resumes the session).
    pub(super) async fn read_requests<R: ReadHalf>(
        self: &Arc<Self>,
        reader: R,
        superseded: CancellationToken,
    ) -> Result<Ended, Error> {
        let mut frames = FramedRead::new(reader, wire::frame_codec(self.state.config.max_frame));
        // Made once: a new one per request would register and unregister a waiter each time.
        // They are polled only when no frame is ready (each poll takes a lock), so before a
        // frame is handled the tokens are asked directly.
        let closed = self.closed.cancelled();
        tokio::pin!(closed);
        let superseded_token = superseded;
        let superseded = superseded_token.cancelled();
        tokio::pin!(superseded);
        let mut received = self.received.load(Ordering::Relaxed);
        let max_queued = self.state.config.max_queued_reply_bytes as u64;
        // A client pings when it has nothing to say; one silent for `liveness` is gone. The
        // timer is re-armed only when it fires (a frame just notes the time).
        let liveness = self.liveness();
        let mut last_heard = tokio::time::Instant::now();
        let silence = tokio::time::sleep(liveness);
        tokio::pin!(silence);
        loop {
            // With `max_in_flight` calls running (on workers, in tasks, or waiting for either),
            // the socket is left unread and TCP pushes back on the client. (Only this task
            // takes permits, so one is still free when the request read next needs it.)
            if !self.in_flight.has_room() {
                tokio::select! {
                    _ = &mut closed => return Ok(Ended::Closed),
                    () = self.in_flight.room() => {}
                }
            }
            // A client that does not read its answers is not read from either.
            if !self.outbox.queued().is_below(max_queued) {
                tokio::select! {
                    _ = &mut closed => return Ok(Ended::Closed),
                    () = self.outbox.queued().below(max_queued) => {}
                }
            }
            let frame = tokio::select! {
                biased;
                frame = frames.next() => frame,
                _ = &mut closed => return Ok(Ended::Closed),
                _ = &mut superseded => return Ok(superseded_by_resume()),
                () = &mut silence => {
                    let quiet = last_heard.elapsed();
                    if quiet >= liveness {
                        tracing::warn!(
                            "dropping connection {}: nothing from its client for {quiet:.1?} \
                             (ServerConfig::liveness_timeout), its host may have vanished",
                            self.id
                        );
                        return Ok(Ended::Broken(format!(
                            "nothing from the client for {quiet:.1?}"
                        )));
                    }
                    silence.as_mut().reset(last_heard + liveness);
                    continue;
                }
            };
            // A request read from a socket whose session has moved on is the new
            // connection's to run (it is sent again there), and one read after a close is
            // not run at all, however fast a client sends.
            if superseded_token.is_cancelled() {
                return Ok(superseded_by_resume());
            }
            if self.closed.is_cancelled() {
                return Ok(Ended::Closed);
            }
            last_heard = tokio::time::Instant::now();
            match frame {
                None => return Ok(Ended::Closed),
                Some(Err(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                    return Err(Error::Protocol(format!("bad frame: {e}")))
                }
                Some(Err(e)) => return Ok(Ended::Failed(format!("reading failed: {e}"))),
                Some(Ok(frame)) => {
                    self.handle(frame.freeze())?;
                    // Counted once handled: a resume sends again only what was not.
                    received += 1;
                    self.received.store(received, Ordering::Relaxed);
                }
            }
        }
    }

    /// How long the client may be silent before it is taken for vanished
    /// (`ServerConfig::liveness_timeout`, at least 100 ms).
    pub(super) fn liveness(&self) -> Duration {
        self.state
            .config
            .liveness_timeout
            .max(Duration::from_millis(100))
    }

    /// Handles one request. An error closes the connection (the client broke the protocol).
    pub(super) fn handle(self: &Arc<Self>, frame: Bytes) -> Result<(), Error> {
        let (request, args) = wire::take::<Request<'_>>(&frame, "request")?;
        let args_at = frame.len() - args.len();
        match request {
            Request::Call { id, object, method } => {
                self.call(id, object, method, frame.clone(), args_at, None);
            }
            Request::TracedCall {
                id,
                object,
                method,
                trace,
            } => {
                self.call(id, object, method, frame.clone(), args_at, Some(trace));
            }
            Request::Cancel { id } => {
                if let Some(call) = self.calls.lock().remove(&id) {
                    call.cancel();
                }
                // A stream call whose caller gave up after it opened.
                self.stream_cancel(id);
            }
            Request::CreateAs {
                id,
                typeid,
                object_type,
            } if self.wrong_type(typeid, object_type).is_some() => {
                let refusal = self.wrong_type(typeid, object_type).expect("checked");
                self.send(id, Reply::Error(refusal));
            }
            Request::Create { id, typeid } | Request::CreateAs { id, typeid, .. }
                if runs_factory(&self.state, typeid) =>
            {
                // A factory is user code: it runs on a worker thread, as a plain method does.
                let Some(permit) = self.in_flight.try_take() else {
                    return Err(Error::Protocol("no call permit for a create".into()));
                };
                let (conn, typeid) = (self.clone(), typeid.to_string());
                self.state.workers.spawn(Work::Other(Box::new(move || {
                    let _permit = permit;
                    let reply = conn.create(&typeid, Args::Native(&frame[args_at..]));
                    conn.send(id, reply);
                })));
            }
            Request::Create { id, typeid } | Request::CreateAs { id, typeid, .. } => {
                let reply = self.create(typeid, Args::Native(&frame[args_at..]));
                self.send(id, reply);
            }
            Request::IncRef { object } => self.incref(object),
            Request::DecRef { object } => self.decref(object),
            Request::Attach {
                id,
                object,
                typeid,
                instance,
            } => {
                let reply = self.attach(object, typeid, instance);
                self.send(id, reply);
            }
            Request::Control {
                id,
                op: Control::Ping,
            } if wire::take::<wire::Hello>(args, "hello").is_ok() => {
                // A client's Hello after a ping's head (see `wire::Hello`): answer with ours.
                // (A later client's may say more: what follows the fields known here is not
                // read. Bytes that are no Hello are ignored, as after any head without
                // arguments: the ping gets its pong.)
                let hello = wire::Hello {
                    features: wire::features::ALL,
                };
                self.send(id, Reply::Control(ControlReply::Hello(hello)));
            }
            Request::Control { id, op } => {
                let reply = self.control(op);
                let stopping = matches!(reply, Reply::Control(ControlReply::ShuttingDown));
                self.send(id, reply);
                if stopping {
                    self.state.stop.cancel();
                }
            }
            Request::Ack { received } => {
                self.outbox.acked(received).map_err(Error::Protocol)?;
                let mine = self.received.load(Ordering::Relaxed);
                self.send(0, Reply::Control(ControlReply::Received(mine)));
            }
            Request::Resume { .. } => {
                return Err(Error::Protocol(
                    "a resume is the first frame of a connection, or nothing".into(),
                ))
            }
            Request::StreamCredit { id, n } => self.stream_credit(id, n),
            Request::StreamCancel { id } => self.stream_cancel(id),
        }
        Ok(())
    }

    pub(super) fn control(&self, op: Control) -> Reply {
        let reply = match op {
            Control::Ping => ControlReply::Pong,
            Control::NumberOfObjects => {
                ControlReply::NumberOfObjects(self.state.table.lock().len() as u64)
            }
            Control::DebugInfo => ControlReply::DebugInfo(self.state.debug_info()),
            Control::Shutdown => ControlReply::ShuttingDown,
            Control::Describe => ControlReply::Describe(self.state.registry.describe()),
            op @ (Control::CreateSegment { .. }
            | Control::TrackSegment { .. }
            | Control::ReleaseSegment { .. }
            | Control::Segments) => return self.segment_control(op),
            Control::Methods { object } => {
                let entry = {
                    let held = self.held.lock();
                    held.contains(object)
                        .then(|| self.state.table.lock().entry(object).cloned())
                        .flatten()
                };
                match entry {
                    Some(entry) => ControlReply::Methods(entry.exposed_names()),
                    None => {
                        return Reply::Error(RemoteError::new(
                            RemoteErrorKind::UnknownObject,
                            "",
                            "get_methods",
                            format!("object {object} does not exist or this connection holds no reference to it"),
                        ))
                    }
                }
            }
        };
        Reply::Control(reply)
    }
}

impl Host for Connection {
    fn on_close(&self, object: u64, cleanup: Cleanup) {
        self.cleanups.lock().insert(object, cleanup);
        // Closed meanwhile: `close` may have taken the cleanups already.
        if self.closed.is_cancelled() {
            self.run_cleanups();
        }
    }

    fn retain(&self, value: &Value) -> Result<Retained, String> {
        let state = &self.state;
        let mine: Vec<_> = value
            .tokens()
            .into_iter()
            .filter(|token| token.address == state.address)
            .collect();
        if let Some(stale) = mine.iter().find(|t| !state.issued(t.instance)) {
            return Err(state.stale_message(stale.id, stale.instance));
        }
        let ids: Vec<u64> = mine.iter().map(|token| token.id).collect();
        if !ids.is_empty() {
            let mut table = state.table.lock();
            if let Some(missing) = ids.iter().find(|id| !table.contains(**id)) {
                return Err(format!(
                    "the value holds a proxy to object {missing}, which does not exist on this server"
                ));
            }
            for id in &ids {
                table.acquire(*id, 1);
            }
        }
        let owner: std::sync::Weak<dyn crate::context::Release> = Arc::downgrade(state) as _;
        Ok(Retained::new(owner, ids))
    }

    fn hand_out(&self, value: &Value) {
        for token in value.tokens() {
            if token.address == self.state.address && self.acquire(token.id).is_none() {
                tracing::warn!("a returned value names object {}, which is gone", token.id);
            }
        }
    }

    fn referent(&self, object: u64) -> Option<crate::object::Referent> {
        let (_, referent) = self.state.table.lock().get(object)?;
        Some(referent)
    }
}

/// How a connection ends whose session a new connection resumed.
pub(super) fn superseded_by_resume() -> Ended {
    Ended::Broken("a new connection resumed the session".into())
}
