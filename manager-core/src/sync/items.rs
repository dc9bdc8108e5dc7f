//! Iterating a built-in container: the server reads each item of a live list or dict when it
//! produces it (as Python's list and dict iterators do), and the client decodes each into its
//! element type, taking over the proxies inside.
//!
//! A container's `iter` method returns a [`Stream`](crate::Stream) whose iterator holds the
//! container's referent (`CallContext::this`) and an index: each item is read under a read
//! lock taken for that item alone, on the worker thread that pulls it. The stream's window
//! bounds how far ahead of the caller the index runs.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use serde::de::DeserializeOwned;
use tokio::sync::{RwLock, RwLockReadGuard};

use crate::client::streams::{BlockingStream, RemoteStream};
use crate::client::Connection;
use crate::error::Error;
use crate::value::Value;

/// A read lock on `object` for one read: at once if it is free, else waiting for it (on a
/// worker thread, where a stream's iterator runs; it never runs in a task).
pub(crate) fn read<T>(object: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    match object.try_read() {
        Ok(guard) => guard,
        Err(_) => futures::executor::block_on(object.read()),
    }
}

/// The items of a built-in container, as an async proxy's `iter` returns them: a
/// `futures::Stream` of `Result<T, Error>`. Each item is read on the server when it is sent,
/// at most [`STREAM_WINDOW`](crate::wire::STREAM_WINDOW) items ahead of what this stream has
/// yielded. An error from the server (the connection closing, a dict whose size changed
/// meanwhile) is the last item; an item that does not decode as `T` is an error for that item
/// alone. Dropping the stream stops the server's iterator.
#[derive(Debug)]
pub struct RemoteItems<T> {
    stream: RemoteStream<Value>,
    conn: Connection,
    _item: PhantomData<fn() -> T>,
}

impl<T> RemoteItems<T> {
    pub(crate) fn new(stream: RemoteStream<Value>, conn: &Connection) -> Self {
        RemoteItems {
            stream,
            conn: conn.clone(),
            _item: PhantomData,
        }
    }

    /// The same stream as a blocking iterator (for a thread outside any runtime).
    pub fn into_blocking(self) -> BlockingItems<T> {
        BlockingItems {
            stream: self.stream.into_blocking(),
            conn: self.conn,
            _item: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> futures::Stream for RemoteItems<T> {
    type Item = Result<T, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let item = std::task::ready!(Pin::new(&mut self.stream).poll_next(cx));
        Poll::Ready(item.map(|item| item.and_then(|v| crate::proxy::decode_value(&self.conn, v))))
    }
}

/// The items of a built-in container, as a blocking proxy's `iter` returns them: an
/// `Iterator` of `Result<T, Error>` whose `next` waits for the item (see [`RemoteItems`]).
#[derive(Debug)]
pub struct BlockingItems<T> {
    stream: BlockingStream<Value>,
    conn: Connection,
    _item: PhantomData<fn() -> T>,
}

impl<T> BlockingItems<T> {
    pub(crate) fn new(stream: BlockingStream<Value>, conn: &Connection) -> Self {
        BlockingItems {
            stream,
            conn: conn.clone(),
            _item: PhantomData,
        }
    }

    /// The same stream as an async `futures::Stream`.
    pub fn into_async(self) -> RemoteItems<T> {
        RemoteItems {
            stream: self.stream.into_async(),
            conn: self.conn,
            _item: PhantomData,
        }
    }
}

impl<T: DeserializeOwned> Iterator for BlockingItems<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Result<T, Error>> {
        let item = self.stream.next()?;
        Some(item.and_then(|v| crate::proxy::decode_value(&self.conn, v)))
    }
}
