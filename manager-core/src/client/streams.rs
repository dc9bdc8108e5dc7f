//! The client side of stream methods: the typed streams a proxy's stream method returns.
//!
//! A stream call is a call whose waiter also registers a sink for the request id before the
//! request leaves, so that no item the server sends after its `StreamOpened` answer can
//! arrive before the sink. The reader hands each `StreamItem` and the `StreamEnd` of the id to
//! the sink: a bounded channel of `STREAM_WINDOW` items (and the end), which the server cannot
//! overrun as long as it keeps to the credit. The consumer grants credit back
//! (`Request::StreamCredit`) every half window it consumes, and dropping it before the end
//! sends `Request::StreamCancel`. When the connection closes, the sinks are dropped and every
//! open stream ends with the connection's error.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Connection, Inner, Response};
use crate::error::{Error, RemoteError};
use crate::wire::{self, Reply, Request, STREAM_WINDOW};

/// What the reader hands a stream's consumer.
pub(super) enum Message {
    Item(Response),
    End(Option<RemoteError>),
}

/// Where the reader puts a stream's items.
pub(super) type Sink = mpsc::Sender<Message>;

/// Hands a stream frame to its consumer. `response` is given back when it is not one.
pub(super) fn deliver(inner: &Inner, id: u64, response: Response) -> Option<Response> {
    match response.reply {
        Reply::StreamItem => {
            let sink = inner.streams.lock().get(&id).cloned();
            if let Some(sink) = sink {
                if sink.try_send(Message::Item(response)).is_err() {
                    // More than the window: the server broke the protocol. The consumer,
                    // finding its sink gone, ends with an error.
                    inner.streams.lock().remove(&id);
                }
            }
            // No sink: a stream its consumer dropped, whose items were on their way.
            None
        }
        Reply::StreamEnd { error } => {
            if let Some(sink) = inner.streams.lock().remove(&id) {
                let _ = sink.try_send(Message::End(error));
            }
            None
        }
        _ => Some(response),
    }
}

/// An open stream, untyped: its channel, and what it owes the server.
#[derive(Debug)]
struct Opened {
    conn: Connection,
    id: u64,
    items: mpsc::Receiver<Message>,
    /// Items consumed since the last credit sent.
    consumed: u32,
    done: bool,
}

impl Opened {
    /// What the consumer gets for `message` (`None` when the stream has ended).
    fn take(&mut self, message: Option<Message>) -> Option<Result<Response, Error>> {
        match message {
            Some(Message::Item(response)) => {
                self.consumed += 1;
                if self.consumed >= STREAM_WINDOW / 2 {
                    self.conn.notify(&Request::StreamCredit {
                        id: self.id,
                        n: self.consumed,
                    });
                    self.consumed = 0;
                }
                Some(Ok(response))
            }
            Some(Message::End(error)) => {
                self.done = true;
                error.map(|e| Err(Error::Remote(e)))
            }
            None => {
                self.done = true;
                Some(Err(if self.conn.is_closed() {
                    self.conn.closed_error()
                } else {
                    Error::Protocol(format!(
                        "the server sent more of stream {} than its window of {STREAM_WINDOW} items",
                        self.id
                    ))
                }))
            }
        }
    }
}

impl Drop for Opened {
    fn drop(&mut self) {
        if !self.done && self.conn.inner.streams.lock().remove(&self.id).is_some() {
            self.conn.notify(&Request::StreamCancel { id: self.id });
        }
    }
}

fn decode<T: DeserializeOwned>(item: Result<Response, Error>, id: u64) -> Result<T, Error> {
    let response = item?;
    wire::decode_payload(response.payload(), "").map_err(|e| match e {
        Error::Decode { message, .. } => Error::Decode {
            what: format!("an item of stream {id}"),
            message,
        },
        other => other,
    })
}

/// The items of a stream method, as the async proxy returns them: a `futures::Stream` of
/// `Result<T, Error>`. An error from the producer, or the connection closing, is the last item.
/// Dropping it stops the producer on the server.
#[derive(Debug)]
pub struct RemoteStream<T> {
    opened: Opened,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> futures::Stream for RemoteStream<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let opened = &mut self.opened;
        if opened.done {
            return Poll::Ready(None);
        }
        let message = std::task::ready!(opened.items.poll_recv(cx));
        let id = opened.id;
        Poll::Ready(opened.take(message).map(|item| decode(item, id)))
    }
}

impl<T> RemoteStream<T> {
    /// The same stream as a blocking iterator (for a thread outside any runtime).
    pub fn into_blocking(self) -> BlockingStream<T> {
        BlockingStream {
            opened: self.opened,
            _item: PhantomData,
        }
    }
}

/// The items of a stream method, as the blocking proxy returns them: an `Iterator` of
/// `Result<T, Error>`, whose `next` blocks until the next item arrives. An error from the
/// producer, or the connection closing, is the last item. Dropping it stops the producer.
#[derive(Debug)]
pub struct BlockingStream<T> {
    opened: Opened,
    _item: PhantomData<fn() -> T>,
}

impl<T: DeserializeOwned> Iterator for BlockingStream<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        let opened = &mut self.opened;
        if opened.done {
            return None;
        }
        if let Err(e) = super::ensure_blocking_allowed() {
            return Some(Err(e));
        }
        let message = opened.items.blocking_recv();
        let id = opened.id;
        opened.take(message).map(|item| decode(item, id))
    }
}

impl<T> BlockingStream<T> {
    /// The same stream as an async `futures::Stream`.
    pub fn into_async(self) -> RemoteStream<T> {
        RemoteStream {
            opened: self.opened,
            _item: PhantomData,
        }
    }
}

impl Connection {
    /// Calls stream method `method` of `object` and waits for the stream to open.
    pub(crate) async fn open_stream<T, A: Serialize>(
        &self,
        object: u64,
        method: &str,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<RemoteStream<T>, Error> {
        let (sink, items) = mpsc::channel(STREAM_WINDOW as usize + 1);
        let mut opened_id = 0;
        let call = Connection::call_frame(object, method, args);
        let response = self
            .request_with(
                |id, buf: &mut bytes::BytesMut| {
                    opened_id = id;
                    self.inner.streams.lock().insert(id, sink);
                    call(id, buf)
                },
                timeout,
            )
            .await;
        self.opened(opened_id, response, items)
    }

    /// The blocking form of [`Connection::open_stream`].
    pub(crate) fn open_stream_blocking<T, A: Serialize>(
        &self,
        object: u64,
        method: &str,
        args: &A,
        timeout: Option<Duration>,
    ) -> Result<BlockingStream<T>, Error> {
        let (sink, items) = mpsc::channel(STREAM_WINDOW as usize + 1);
        let mut opened_id = 0;
        let call = Connection::call_frame(object, method, args);
        let response = self.request_blocking_with(
            |id, buf: &mut bytes::BytesMut| {
                opened_id = id;
                self.inner.streams.lock().insert(id, sink);
                call(id, buf)
            },
            timeout,
        );
        self.opened(opened_id, response, items)
            .map(RemoteStream::into_blocking)
    }

    fn opened<T>(
        &self,
        id: u64,
        response: Result<Response, Error>,
        items: mpsc::Receiver<Message>,
    ) -> Result<RemoteStream<T>, Error> {
        let mut opened = Opened {
            conn: self.clone(),
            id,
            items,
            consumed: 0,
            // Until the stream is open, dropping it has nothing to cancel but the sink.
            done: true,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => {
                self.inner.streams.lock().remove(&id);
                return Err(e);
            }
        };
        match response.reply {
            Reply::StreamOpened { window } if window <= STREAM_WINDOW => {
                opened.done = false;
                Ok(RemoteStream {
                    opened,
                    _item: PhantomData,
                })
            }
            other => {
                self.inner.streams.lock().remove(&id);
                Err(match other {
                    Reply::Error(e) => Error::Remote(e),
                    Reply::StreamOpened { window } => Error::Protocol(format!(
                        "the server opened a stream with a window of {window} items, more than {STREAM_WINDOW}"
                    )),
                    other => Error::Protocol(format!(
                        "expected a stream, got {other:?} (is the method a stream method?)"
                    )),
                })
            }
        }
    }
}
