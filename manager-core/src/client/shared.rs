//! The client's side of a connection through shared memory (see `transport::shm`): asking for
//! it, and the tasks that serve it.
//!
//! The hello that asks for it is the connection's first frame, sent and answered before the
//! connection's tasks start. A server that takes it answers with
//! [`wire::features::SHARED_MEMORY`] and hands the memory over the socket; one that does not
//! (older, or with `ServerConfig::shared_memory` off) answers it as it answers any hello, and
//! the connection goes on over the socket, that exchange counted as the session's first
//! request and reply.

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::{direct, keep_alive, read_plain, Inner};
use crate::error::Error;
use crate::transport::shm::{self, RingWriter, Side};
use crate::transport::{write_frames, Stream};
use crate::wire::{self, Control, ControlReply, Hello, Reply, Request, ResponseHead};

/// The request id of the hello that asks for shared memory.
pub(super) const HELLO_ID: u64 = 1;

/// How the hello that asked for shared memory was answered.
pub(super) enum Answer {
    /// With the memory: the server's features, and this side of it.
    Memory(u64, Arc<Side>),
    /// On the socket: the server's features (0 for a server that predates the hello).
    Socket(u64),
}

/// Sends the hello that asks for shared memory as the first frame on `stream` (a Unix socket)
/// and reads the answer, and the memory if it comes.
pub(super) async fn ask(stream: &mut Stream) -> Result<Answer, Error> {
    let Stream::Unix(socket) = stream else {
        return Ok(Answer::Socket(0));
    };
    let mut buf = wire::start_frame(32);
    let op = Control::Ping;
    wire::put(&mut buf, &Request::Control { id: HELLO_ID, op }, "request")?;
    let hello = Hello {
        features: wire::features::ALL | wire::features::SHARED_MEMORY,
    };
    wire::put(&mut buf, &hello, "hello")?;
    let frame = wire::finish(buf, wire::DEFAULT_MAX_FRAME)?;
    socket.write_all(&frame).await?;
    let body = stream
        .read_message(wire::DEFAULT_MAX_FRAME, "response")
        .await?;
    let (head, _) = wire::take::<ResponseHead>(&body, "response")?;
    let known = wire::features::ALL | wire::features::SHARED_MEMORY;
    match head.reply {
        _ if head.id != HELLO_ID => Err(Error::Protocol(format!(
            "the server answered request {} to the hello",
            head.id
        ))),
        Reply::Control(ControlReply::Hello(hello))
            if hello.features & wire::features::SHARED_MEMORY != 0 =>
        {
            let Stream::Unix(socket) = stream else {
                unreachable!("checked above")
            };
            let side = shm::take_over(socket).await?;
            Ok(Answer::Memory(hello.features & known, side))
        }
        Reply::Control(ControlReply::Hello(hello)) => {
            Ok(Answer::Socket(hello.features & wire::features::ALL))
        }
        Reply::Control(ControlReply::Pong) => Ok(Answer::Socket(0)),
        Reply::Error(e) => Err(Error::Remote(e)),
        other => Err(Error::Protocol(format!(
            "expected an answer to the hello, got {other:?}"
        ))),
    }
}

/// Serves the connection through `side`: the writer task (which also holds the socket, and
/// ends the memory when the socket ends or the connection is dropped), the reader task, and
/// the keep-alive.
pub(super) fn start(
    inner: &Arc<Inner>,
    stream: Stream,
    side: Arc<Side>,
    rx: mpsc::UnboundedReceiver<Bytes>,
    liveness: Duration,
) -> Result<(), Error> {
    let Stream::Unix(socket) = stream else {
        return Err(Error::Protocol("shared memory is for Unix sockets".into()));
    };
    let direct = Arc::new(direct::Direct::ring(side.clone(), wire::DEFAULT_MAX_FRAME));
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let written = inner.outbox.written();
    let mut link = inner.link.write();
    let writer_side = side.clone();
    let tasks = vec![
        tokio::spawn(keep_alive(weak.clone(), liveness, 1)),
        tokio::spawn(async move {
            tokio::select! {
                why = shm::closed(&socket) => writer_side.end(why),
                () = write_frames(RingWriter(writer_side.clone()), rx, written) => {
                    writer_side.end("the connection was dropped")
                }
            }
            // Dropping the socket tells the server.
            drop(socket);
        }),
        tokio::spawn(read_plain(weak, direct.clone(), direct::RingHalf(side), 1)),
    ];
    *link = super::resume::Link::only(direct, tasks);
    Ok(())
}
