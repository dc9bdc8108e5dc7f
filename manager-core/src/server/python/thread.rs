//! A CPython method connection served by a thread of its own.
//!
//! A CPython method connection is one client thread that waits for each reply, so it gains
//! nothing from the runtime's multiplexing and pays for it on every call: a readiness wait
//! (`epoll_wait`) before each read, a wake-up through the runtime, and, for a plain method, a
//! hand-off to a worker thread and back. Once a connection is accepted for method calls, its
//! socket leaves the runtime for a thread that blocks in `read` (the kernel wakes it with the
//! request, one system call), runs the call there, plain bodies included (as CPython's server
//! does, with a thread per connection), and writes the reply. A queue's `get`, `put` or `join`
//! that must wait is left for whoever wakes it to finish and answer (see `waiting`), and the
//! thread reads on. Another call that waits (a lock, an event) is polled once on the thread
//! and, if it must wait, awaited there while the socket is watched through the runtime:
//! anything the client sends meanwhile means it is gone, and the call is dropped, as on a
//! runtime task.
//!
//! Threads are bounded by `ServerConfig::max_workers`; past the bound, and on a runtime that
//! is not multi-threaded (whose driver runs only when its one thread is free), connections
//! stay on runtime tasks.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;

use super::framing::{read_frame, ReplyBuffer};
use super::waiting::{self, Parked};
use super::watch::Watch;
use super::*;

pub(super) use crate::server::socket::Socket;

/// A runtime stream that can leave the runtime, in blocking mode.
pub(super) trait IntoSocket {
    fn into_socket(self) -> std::io::Result<Socket>;
}

impl IntoSocket for tokio::net::TcpStream {
    fn into_socket(self) -> std::io::Result<Socket> {
        let socket = self.into_std()?;
        socket.set_nonblocking(false)?;
        Ok(Socket::Tcp(socket))
    }
}

impl IntoSocket for tokio::net::UnixStream {
    fn into_socket(self) -> std::io::Result<Socket> {
        let socket = self.into_std()?;
        socket.set_nonblocking(false)?;
        Ok(Socket::Unix(socket))
    }
}

/// A thread slot, given back when the connection's thread ends.
pub(super) struct Slot(Arc<State>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.python.threads.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A slot for one more connection thread, if the bound and the runtime allow one.
pub(super) fn slot(state: &Arc<State>) -> Option<Slot> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if !multi_thread {
        return None;
    }
    let threads = &state.python.threads;
    let bound = state.config.max_workers.max(1);
    threads
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < bound).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(state.clone()))
}

/// Serves the rest of a method connection on a thread of its own; returns when the thread is
/// done (or at once when the server stops: the socket is shut down, and the thread leaves
/// after the call it may be running). `leftover` is what was read past the last request.
pub(super) async fn serve_on_thread(
    state: Arc<State>,
    me: Arc<Connection>,
    socket: Socket,
    leftover: Vec<u8>,
    slot: Slot,
) {
    let watcher = match socket.try_clone() {
        Ok(watcher) => watcher,
        Err(e) => {
            tracing::debug!("cannot serve a CPython connection on a thread: {e}");
            me.close();
            state.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<()>();
    let handle = tokio::runtime::Handle::current();
    let spawned = {
        let (state, me) = (state.clone(), me.clone());
        std::thread::Builder::new()
            .name("manager-python".into())
            .spawn(move || {
                let _slot = slot;
                serve_thread(&state, &me, &handle, socket, leftover);
                state.connections.fetch_sub(1, Ordering::Relaxed);
                drop(done_tx);
            })
    };
    if let Err(e) = spawned {
        // The socket went with the closure: the client sees the connection close.
        tracing::warn!("cannot start a thread for a CPython connection: {e}");
        me.close();
        state.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    tokio::select! {
        _ = done_rx => {}
        _ = me.closed.cancelled() => watcher.shutdown(),
    }
}

/// The request loop of a connection's thread.
fn serve_thread(
    state: &Arc<State>,
    me: &Arc<Connection>,
    handle: &tokio::runtime::Handle,
    socket: Socket,
    leftover: Vec<u8>,
) {
    let fd = Some(socket.as_raw_fd()).filter(|_| matches!(socket, Socket::Tcp(_)));
    let mut reader =
        std::io::BufReader::with_capacity(16 * 1024, std::io::Cursor::new(leftover).chain(&socket));
    let mut methods = true;
    // Where a waiting queue call is left for its waker to answer (see `waiting`), and whether
    // one was left since the last read.
    let mut parked: Option<Arc<Parked>> = None;
    let mut left_waiting = false;
    let mut replies = ReplyBuffer::default();
    let mut watch = Watch::new(state.config.python_spin);
    // What was read before the connection came here is in the reader, not the socket.
    let mut watched = false;
    loop {
        if std::mem::replace(&mut watched, true) && !left_waiting && reader.buffer().is_empty() {
            // A waiting call's client sends nothing until it is answered by another thread.
            watch.before_read(&socket, &state.python.watching);
        }
        let wants_ack = |len: usize| {
            if len > SMALL_WRITE {
                quick_ack(fd);
            }
        };
        let read = read_frame(&mut reader, state.config.max_frame, wants_ack);
        if std::mem::take(&mut left_waiting) && !parked.as_ref().is_some_and(|p| p.settle()) {
            // The client sent something, or left, before the call it waits on was answered;
            // or the answer could not be sent.
            break;
        }
        let payload = match read {
            Ok(Some(payload)) => payload,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("closing a CPython connection: {e}");
                break;
            }
        };
        // Decoded where it was read; nothing of the frame is needed after.
        let request = request_of(state, payload.bytes(&reader));
        payload.consume(&mut reader);
        let (reply, after) = match request {
            Err(answer) => answer,
            Ok(request) if request.ident.is_none() => {
                let _entered = handle.enter();
                futures::executor::block_on(control(me, request, &mut methods))
            }
            Ok(request) => match run_call(me, handle, &socket, &mut parked, request) {
                Ran::Reply(reply) => (reply, After::Continue),
                Ran::LeftWaiting => {
                    left_waiting = true;
                    waiting::finish_deferred();
                    continue;
                }
                Ran::Gone => break,
            },
        };
        if me.closed.is_cancelled() {
            break;
        }
        let sent = replies
            .frame(&reply)
            .and_then(|frame| Ok((&socket).write_all(frame)?));
        // The client has its reply: now the waiting calls of other clients that this call woke.
        waiting::finish_deferred();
        if let Err(e) = sent {
            tracing::debug!("cannot answer a CPython client: {e}");
            break;
        }
        match after {
            After::Continue => {}
            After::Close => break,
            After::Stop => {
                state.stop.cancel();
                break;
            }
        }
    }
    if let Some(parked) = &parked {
        parked.close();
    }
    // Cleanups (locks the client held) may wake runtime tasks.
    let _entered = handle.enter();
    waiting::finish_deferred();
    me.close();
}

/// How a call on a connection's thread went.
enum Ran {
    /// Done: the reply to send.
    Reply(PyValue),
    /// Left waiting, for whoever wakes it to answer (see `waiting`).
    LeftWaiting,
    /// The client went away (or the server stopped) while it waited.
    Gone,
}

/// Runs one call on the connection's thread.
fn run_call(
    me: &Arc<Connection>,
    handle: &tokio::runtime::Handle,
    socket: &Socket,
    parked: &mut Option<Arc<Parked>>,
    request: Request,
) -> Ran {
    let _entered = handle.enter();
    if waiting::parks(&me.state, &request) {
        if parked.is_none() {
            *parked = Parked::new(socket, me, handle)
                .inspect_err(|e| tracing::debug!("a CPython connection that cannot park: {e}"))
                .ok();
        }
        if let Some(parked) = parked {
            let me = me.clone();
            let call = Box::pin(async move { call_in(&me, request, Exec::Thread).await });
            return parked.start(call).map_or(Ran::LeftWaiting, Ran::Reply);
        }
    }
    let mut call = std::pin::pin!(call_in(me, request, Exec::Thread));
    // Most calls finish at their first poll: no waiting, no watching.
    if let Some(reply) = waiting::deferring(|| call.as_mut().now_or_never()) {
        return Ran::Reply(reply);
    }
    // It waits; what it woke first must not wait with it.
    waiting::finish_deferred();
    // Meanwhile a CPython client sends nothing; anything it sends means it is gone.
    let gone = async {
        let watched = socket.try_clone().and_then(|clone| {
            // SAFETY: the clone owns its descriptor (a std socket), which stays open, and is
            // the one `as_raw_fd` returns, for as long as the `AsyncFd` that owns the clone.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(
                    clone,
                    tokio::io::Interest::READABLE,
                )
            }
            .map_err(std::io::Error::from)
        });
        match watched {
            Ok(watched) => {
                let _ = watched.readable().await;
            }
            // Not watched: the call's end (or the server's stop) ends the wait.
            Err(_) => std::future::pending().await,
        }
    };
    futures::executor::block_on(async {
        tokio::select! {
            reply = call => Ran::Reply(reply),
            _ = gone => Ran::Gone,
            _ = me.closed.cancelled() => Ran::Gone,
        }
    })
}
