//! The streams a connection serves: the producer of each, and the credit that bounds it.
//!
//! A stream method's call is answered with `Reply::StreamOpened` under the call's request id;
//! a task of the connection's then sends the producer's items as `Reply::StreamItem`s under
//! the same id, and one `Reply::StreamEnd`. The task takes one permit of the stream's credit
//! (a semaphore that starts at `STREAM_WINDOW`) per item it sends, and the client gives permits
//! back with `Request::StreamCredit` as it consumes: so at most a window of items is ever
//! on its way or waiting in the client. An iterator is pulled on a worker thread, as many
//! items at a time as the credit allows (it may block, and must not hold a task's thread); a
//! `futures::Stream` is polled in the task. The stream's cancellation token is a child of the
//! connection's: the client's `Request::StreamCancel`, the connection closing or the server
//! stopping drops the producer where it waits.
//!
//! The producer waits in its stream's [`Control`] between items, so that a cancel drops it
//! before the next request of the connection is read, not later in the task: a client that
//! cancels a subscription and then asks how many are open (or exits, and its parent asks)
//! sees it gone. Only an iterator in the middle of a `next()` on a worker is dropped when that
//! returns.

use std::sync::Arc;

use foldhash::HashMap as FastMap;
use futures::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::panic_message;
use super::reply::{encode_response, Finished};
use crate::error::{RemoteError, RemoteErrorKind};
use crate::object::ReturnValue;
use crate::registry::Entry;
use crate::stream::{ErasedStream, Producer};
use crate::wire::{Reply, STREAM_WINDOW};

/// The open streams of one connection, by the request id that opened them.
pub(super) struct Streams {
    open: Mutex<FastMap<u64, Arc<Control>>>,
    /// Where producers run: the runtime the connection was made in (a stream may be opened
    /// by a worker thread, which has none).
    runtime: Option<tokio::runtime::Handle>,
}

impl Streams {
    pub(super) fn new() -> Streams {
        Streams {
            open: Mutex::new(FastMap::default()),
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }
}

/// What the read loop reaches of a running stream.
struct Control {
    /// Items the producer may still send before the client consumes more.
    credit: Semaphore,
    stop: CancellationToken,
    /// The producer, while it waits (for credit, or for its next item when it is a
    /// `futures::Stream`, whose polls take the lock for as long as each lasts); `None` while an
    /// iterator runs on a worker, and once the stream is stopped or ended.
    producer: Mutex<Option<Producer>>,
}

impl Control {
    /// Stops the stream and drops its producer now, unless an iterator's `next()` runs on a
    /// worker (it is dropped when that returns).
    fn stop(&self) {
        self.stop.cancel();
        let producer = self.producer.lock().take();
        drop(producer);
    }
}

/// How a producer ended: ran out (`Ok`), failed (the error is sent as the stream's end), or
/// was stopped (nothing is sent: nobody reads it).
enum End {
    Done(Option<RemoteError>),
    Stopped,
}

impl Connection {
    /// Answers call `id` with `Reply::StreamOpened` and starts the stream's producer.
    pub(super) fn open_stream(
        self: &Arc<Self>,
        id: u64,
        entry: &Entry,
        index: usize,
        stream: ErasedStream,
    ) {
        let name = (entry.typeid.to_string(), entry.methods[index].name);
        let Some(runtime) = self.streams.runtime.clone() else {
            return self.send_error(
                RemoteError::new(
                    RemoteErrorKind::Runtime,
                    &name.0,
                    name.1,
                    "this connection cannot run streams (it was made outside a runtime)",
                ),
                id,
            );
        };
        let control = Arc::new(Control {
            credit: Semaphore::new(STREAM_WINDOW as usize),
            stop: self.closed.child_token(),
            producer: Mutex::new(Some(stream.0)),
        });
        self.streams.open.lock().insert(id, control.clone());
        // Queued before any item: the client knows the id is a stream when its items arrive.
        self.send(
            id,
            Reply::StreamOpened {
                window: STREAM_WINDOW,
            },
        );
        let conn = self.clone();
        runtime.spawn(async move {
            let blocking = matches!(*control.producer.lock(), Some(Producer::Blocking(_)));
            let end = match blocking {
                true => conn.pull(id, &control, &name).await,
                false => conn.poll(id, &control, &name).await,
            };
            // Dropped here if it ended by itself (or was stopped while it ran).
            control.stop();
            {
                let mut open = conn.streams.open.lock();
                if open.get(&id).is_some_and(|c| Arc::ptr_eq(c, &control)) {
                    open.remove(&id);
                }
            }
            if let End::Done(error) = end {
                conn.send(id, Reply::StreamEnd { error });
            }
        });
    }

    /// The client consumed `n` items of stream `id`: let its producer send as many more, up
    /// to a window ahead (a client that grants more than it was sent gains nothing).
    pub(super) fn stream_credit(&self, id: u64, n: u32) {
        if let Some(control) = self.streams.open.lock().get(&id) {
            let room = (STREAM_WINDOW as usize).saturating_sub(control.credit.available_permits());
            control.credit.add_permits((n as usize).min(room));
        }
    }

    /// The client dropped stream `id`: stop its producer.
    pub(super) fn stream_cancel(&self, id: u64) {
        let control = self.streams.open.lock().remove(&id);
        if let Some(control) = control {
            control.stop();
        }
    }

    /// The connection is closing: stops every stream and drops its producer.
    pub(super) fn stop_streams(&self) {
        let open = std::mem::take(&mut *self.streams.open.lock());
        for control in open.into_values() {
            control.stop();
        }
    }

    /// Waits for credit to send at least one item, and takes all there is (at most a window).
    /// `None` when the stream is stopped meanwhile.
    async fn take_credit(control: &Control) -> Option<usize> {
        tokio::select! {
            biased;
            _ = control.stop.cancelled() => return None,
            permit = control.credit.acquire() => permit.ok()?.forget(),
        }
        let more = control.credit.available_permits();
        if let Ok(permits) = control.credit.try_acquire_many(more as u32) {
            permits.forget();
            return Some(1 + more);
        }
        Some(1)
    }

    /// Sends one item; the error to end the stream with if it cannot be encoded.
    fn send_item(
        &self,
        id: u64,
        value: Box<dyn ReturnValue>,
        (typeid, method): &(String, &'static str),
    ) -> Result<(), RemoteError> {
        let finished = Finished::Payload(Reply::StreamItem, value);
        match encode_response(
            self.outbox.frame_buffer(),
            id,
            finished,
            None,
            self.state.config.max_frame,
        ) {
            Ok(frame) => {
                self.outbox.send_buffer(frame);
                Ok(())
            }
            Err(failed) => Err(RemoteError::new(
                RemoteErrorKind::Encode,
                typeid,
                *method,
                format!("an item of the stream cannot be sent: {}", failed.error),
            )),
        }
    }

    /// Runs an iterator producer: batches of as many items as the credit allows, each pulled
    /// on a worker thread, which sends the items as it makes them.
    async fn pull(
        self: &Arc<Self>,
        id: u64,
        control: &Arc<Control>,
        name: &(String, &'static str),
    ) -> End {
        loop {
            let Some(batch) = Connection::take_credit(control).await else {
                return End::Stopped;
            };
            let Some(Producer::Blocking(mut iter)) = control.producer.lock().take() else {
                return End::Stopped;
            };
            let (conn, control2, name2) = (self.clone(), control.clone(), name.clone());
            let pulled = self
                .state
                .on_worker(move || {
                    for _ in 0..batch {
                        if control2.stop.is_cancelled() {
                            return (iter, Some(End::Stopped));
                        }
                        let end = match iter.next() {
                            None => End::Done(None),
                            Some(Ok(value)) => match conn.send_item(id, value, &name2) {
                                Ok(()) => continue,
                                Err(error) => End::Done(Some(error)),
                            },
                            Some(Err(message)) => End::Done(Some(producer_error(&name2, message))),
                        };
                        return (iter, Some(end));
                    }
                    (iter, None)
                })
                .await;
            match pulled {
                Ok((_, Some(end))) => return end,
                Ok((back, None)) => {
                    let mut slot = control.producer.lock();
                    if control.stop.is_cancelled() {
                        return End::Stopped;
                    }
                    *slot = Some(Producer::Blocking(back));
                }
                Err(panic) => return End::Done(Some(producer_panic(name, &panic))),
            }
        }
    }

    /// Runs a `futures::Stream` producer in this task.
    async fn poll(
        self: &Arc<Self>,
        id: u64,
        control: &Control,
        name: &(String, &'static str),
    ) -> End {
        // The next item, polled with the producer's lock held for each poll; `None` when the
        // producer is gone (stopped).
        let next = || {
            futures::future::poll_fn(|cx| match &mut *control.producer.lock() {
                Some(Producer::Async(stream)) => stream.poll_next_unpin(cx).map(Some),
                _ => std::task::Poll::Ready(None),
            })
        };
        loop {
            let Some(batch) = Connection::take_credit(control).await else {
                return End::Stopped;
            };
            for _ in 0..batch {
                let next = tokio::select! {
                    biased;
                    _ = control.stop.cancelled() => return End::Stopped,
                    next = std::panic::AssertUnwindSafe(next()).catch_unwind() => next,
                };
                match next {
                    Err(panic) => return End::Done(Some(producer_panic(name, &panic))),
                    Ok(None) => return End::Stopped,
                    Ok(Some(None)) => return End::Done(None),
                    Ok(Some(Some(Err(message)))) => {
                        return End::Done(Some(producer_error(name, message)))
                    }
                    Ok(Some(Some(Ok(value)))) => {
                        if let Err(error) = self.send_item(id, value, name) {
                            return End::Done(Some(error));
                        }
                    }
                }
            }
        }
    }
}

fn producer_error((typeid, method): &(String, &'static str), message: String) -> RemoteError {
    RemoteError::new(RemoteErrorKind::Runtime, typeid, *method, message)
}

fn producer_panic(
    (typeid, method): &(String, &'static str),
    panic: &Box<dyn std::any::Any + Send>,
) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Panic,
        typeid,
        *method,
        format!("the stream's producer panicked: {}", panic_message(panic)),
    )
}
