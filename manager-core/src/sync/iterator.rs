//! `Iterator`: a stream served one item per call, which is how CPython clients take a stream.
//!
//! CPython's `DictProxy.__iter__` asks for a proxy of typeid `Iterator`
//! (`_method_to_typeid_ = {'__iter__': 'Iterator'}`) and its `IteratorProxy` calls `__next__`
//! until the server raises `StopIteration`. A CPython client calling any stream method (the
//! built-in dict's `iter`, or a `#[shared]` method returning `Stream<T>`) gets such an object:
//! it holds the stream's producer and pulls one item per `next` call, on the worker thread the
//! call runs on. One item per call is CPython's own flow control, so no window is needed; the
//! object's release (the client's proxy going away, or the server stopping) drops the
//! producer.

use futures::StreamExt;
use parking_lot::Mutex;

use crate::error::{RemoteError, RemoteErrorKind};
use crate::stream::{ErasedStream, Producer};
use crate::sync::typeids;
use crate::value::{to_value, Value};

/// The server side of an `Iterator`: a stream's producer, pulled one item per call.
pub struct IteratorObject {
    /// `None` once the stream ended or was closed. A `Mutex` for `Sync` only: the methods
    /// that use it take `&mut self`, and reach it without locking.
    producer: Mutex<Option<Producer>>,
    /// The CPython class this iterator stands for (`dict_keyiterator`), for a built-in
    /// container's iterator: it has `__next__` alone, and is asked again after an error (it
    /// says itself whether the error recurs, as CPython's do). `None` for a user's stream
    /// method, which can also be closed, and ends at its first error (as a generator does).
    class: Option<&'static str>,
    /// Where an async producer runs (the runtime the object was made in).
    runtime: Option<tokio::runtime::Handle>,
}

impl std::fmt::Debug for IteratorObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IteratorObject")
            .field("class", &self.class)
            .finish_non_exhaustive()
    }
}

fn error(kind: RemoteErrorKind, method: &str, message: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, typeids::ITERATOR, method, message)
}

impl IteratorObject {
    /// An iterator over `stream`; `class` names the CPython iterator class it stands for, when
    /// it iterates a built-in container.
    pub fn new((stream, class): (ErasedStream, Option<&'static str>)) -> IteratorObject {
        IteratorObject {
            producer: Mutex::new(Some(stream.0)),
            class,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Pulls one item from `producer`, waiting for it.
    fn pull(&self, producer: &mut Producer) -> Option<crate::stream::Item> {
        match producer {
            Producer::Blocking(iter) => iter.next(),
            Producer::Async(stream) => match &self.runtime {
                // A worker thread, outside the runtime: the producer may need its timers and
                // sockets.
                Some(runtime) if tokio::runtime::Handle::try_current().is_err() => {
                    runtime.block_on(stream.next())
                }
                _ => futures::executor::block_on(stream.next()),
            },
        }
    }
}

#[crate::shared(crate = "crate", proxies = false)]
impl IteratorObject {
    /// The next item (Python's `__next__`).
    ///
    /// An `Empty` error once there is none (CPython clients get `StopIteration`), the
    /// producer's error as a `Runtime` one.
    pub fn next(&mut self) -> Result<Value, RemoteError> {
        const METHOD: &str = "next";
        // Taken out while it runs: if it panics, it is dropped, and the iterator is over.
        let Some(mut producer) = self.producer.get_mut().take() else {
            return Err(error(
                RemoteErrorKind::Empty,
                METHOD,
                "the iterator is exhausted",
            ));
        };
        match self.pull(&mut producer) {
            None => Err(error(
                RemoteErrorKind::Empty,
                METHOD,
                "the iterator is exhausted",
            )),
            Some(Err(message)) => {
                if self.class.is_some() {
                    *self.producer.get_mut() = Some(producer);
                }
                Err(error(RemoteErrorKind::Runtime, METHOD, message))
            }
            Some(Ok(item)) => {
                *self.producer.get_mut() = Some(producer);
                let item: &dyn erased_serde::Serialize = &*item;
                to_value(item).map_err(|e| {
                    error(
                        RemoteErrorKind::Encode,
                        METHOD,
                        format!("an item of the stream cannot be sent: {e}"),
                    )
                })
            }
        }
    }

    /// Stops the stream and drops its producer (a generator's `close`).
    ///
    /// Later calls of [`next`](Self::next) find it exhausted. `args` are the positional
    /// arguments the caller gave, which must be none (Python's `close()` takes none). A
    /// built-in container's iterator has no `close` in CPython, and is an `Attribute` error
    /// here too, whatever the arguments (Python looks for the attribute first).
    pub fn close(&mut self, args: Vec<Value>) -> Result<(), RemoteError> {
        if let Some(class) = self.class {
            return Err(error(
                RemoteErrorKind::Attribute,
                "close",
                format!("'{class}' object has no attribute 'close'"),
            ));
        }
        if !args.is_empty() {
            return Err(error(
                RemoteErrorKind::BadArguments,
                "close",
                format!("close() takes no arguments ({} given)", args.len()),
            ));
        }
        self.producer.get_mut().take();
        Ok(())
    }
}
