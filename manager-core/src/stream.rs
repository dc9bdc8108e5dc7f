//! Stream methods: a `#[shared]` method that returns [`Stream<T>`] hands its caller a sequence
//! of values produced as the caller consumes them, instead of one value.
//!
//! A [`Stream`] is built from an iterator ([`Stream::iter`], pulled on a server worker thread,
//! so it may block) or from a `futures::Stream` ([`Stream::from_stream`], polled in a task of
//! the server's). The caller's proxy method returns a [`RemoteStream<T>`](crate::RemoteStream)
//! (async, a `futures::Stream` of `Result<T, Error>`) or a
//! [`BlockingStream<T>`](crate::BlockingStream) (an `Iterator` of `Result<T, Error>`).
//!
//! The server produces at most [`STREAM_WINDOW`](crate::wire::STREAM_WINDOW) items ahead of
//! what the caller has consumed; dropping the caller's stream, or closing its connection,
//! stops the producer (the iterator or stream is dropped). An error the producer returns
//! ([`Stream::try_iter`], [`Stream::try_from_stream`]) or a panic in it ends the stream: it
//! arrives as the caller's last item, an [`Error::Remote`](crate::Error::Remote).

use std::fmt;
use std::marker::PhantomData;

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::Serialize;

use crate::object::ReturnValue;

/// One item as the server holds it: a value to encode, or the message of the producer's error.
pub(crate) type Item = Result<Box<dyn ReturnValue>, String>;

/// What produces a stream's items, its item type erased.
pub(crate) enum Producer {
    /// An iterator, pulled on a worker thread (it may block).
    Blocking(Box<dyn Iterator<Item = Item> + Send>),
    /// A stream, polled in a task.
    Async(BoxStream<'static, Item>),
}

/// The value a stream method returns: a sequence of `T` that the server sends to the caller
/// as the caller consumes it (see the [module documentation](self)).
///
/// ```
/// use manager_core::Stream;
///
/// pub struct Numbers;
///
/// #[manager_core::shared(crate = "manager_core")] // `#[manager::shared]` through the facade
/// impl Numbers {
///     /// `0..n`, produced as the caller reads them.
///     pub fn count(&self, n: u64) -> Stream<u64> {
///         Stream::iter(0..n)
///     }
/// }
/// ```
pub struct Stream<T> {
    producer: Producer,
    _item: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for Stream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.producer {
            Producer::Blocking(_) => "iterator",
            Producer::Async(_) => "stream",
        };
        f.debug_struct("Stream").field("producer", &kind).finish()
    }
}

impl<T: Serialize + Send + 'static> Stream<T> {
    /// The items of `iter`, pulled on a server worker thread as the caller consumes them (a
    /// `next` that blocks holds that thread, not the server). The iterator must own what it
    /// reads: the object's lock is not held while it runs.
    pub fn iter<I>(iter: I) -> Self
    where
        I: IntoIterator<Item = T>,
        I::IntoIter: Send + 'static,
    {
        Stream::erased(Producer::Blocking(Box::new(
            iter.into_iter()
                .map(|item| Ok(Box::new(item) as Box<dyn ReturnValue>)),
        )))
    }

    /// Like [`Stream::iter`], for an iterator that can fail: its first `Err(e)` ends the stream,
    /// and reaches the caller as its last item (an `Error::Remote` whose message is `e`).
    pub fn try_iter<I, E>(iter: I) -> Self
    where
        I: IntoIterator<Item = Result<T, E>>,
        I::IntoIter: Send + 'static,
        E: fmt::Display,
    {
        Stream::erased(Producer::Blocking(Box::new(iter.into_iter().map(|item| {
            item.map(|value| Box::new(value) as Box<dyn ReturnValue>)
                .map_err(|e| e.to_string())
        }))))
    }

    /// The items of `stream`, polled in a task of the server's as the caller consumes them.
    pub fn from_stream<S>(stream: S) -> Self
    where
        S: futures::Stream<Item = T> + Send + 'static,
    {
        Stream::erased(Producer::Async(
            stream
                .map(|item| Ok(Box::new(item) as Box<dyn ReturnValue>))
                .boxed(),
        ))
    }

    /// Like [`Stream::from_stream`], for a stream that can fail (see [`Stream::try_iter`]).
    pub fn try_from_stream<S, E>(stream: S) -> Self
    where
        S: futures::Stream<Item = Result<T, E>> + Send + 'static,
        E: fmt::Display,
    {
        Stream::erased(Producer::Async(
            stream
                .map(|item| {
                    item.map(|value| Box::new(value) as Box<dyn ReturnValue>)
                        .map_err(|e| e.to_string())
                })
                .boxed(),
        ))
    }

    fn erased(producer: Producer) -> Self {
        Stream {
            producer,
            _item: PhantomData,
        }
    }

    /// The stream with its item type erased, as the server takes it.
    pub fn into_erased(self) -> ErasedStream {
        ErasedStream(self.producer)
    }
}

impl<T: Serialize + Send + 'static> From<Vec<T>> for Stream<T> {
    fn from(items: Vec<T>) -> Self {
        Stream::iter(items)
    }
}

/// A [`Stream`] whose item type is erased: what a stream method's [`Outcome`](crate::Outcome)
/// carries to the server.
pub struct ErasedStream(pub(crate) Producer);

impl fmt::Debug for ErasedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErasedStream(..)")
    }
}
