//! Iterating a built-in container: the server reads each item of a live list or dict when it
//! produces it (as Python's list and dict iterators do), and the client decodes each into its
//! element type, taking over the proxies inside.
//!
//! A container's `iter` method returns a [`Stream`](crate::Stream) whose iterator holds the
//! container's referent (`CallContext::this`) and an index: each item is read under a read
//! lock taken for that item alone, on the worker thread that pulls it. The stream's window
//! bounds how far ahead of the caller the index runs. A dict's index is a [`Walk`], which
//! also fails as Python's dict iterator fails when the dict changes under it.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::object::{Handle, ReadGuard, Shared};
use indexmap::IndexMap;
use serde::de::DeserializeOwned;

use crate::client::streams::{BlockingStream, RemoteStream};
use crate::client::Connection;
use crate::error::Error;
use crate::value::Value;

/// A read lock on `object` for one read: at once if it is free, else waiting for it (on a
/// worker thread, where a stream's iterator runs; it never runs in a task).
pub(crate) fn read<T: Shared>(object: &Handle<T>) -> ReadGuard<'_, T> {
    object.blocking_read()
}

/// Where a dict's stream is: Python's dict iterator, over an `IndexMap` read afresh at each
/// step.
pub(crate) enum Walk {
    /// At position `next`, having produced `last` before it.
    Going { next: usize, last: Option<Value> },
    /// The size changed: every pull fails.
    SizeChanged,
    /// Ran out, or failed for changed keys: nothing more.
    Ended,
}

impl Walk {
    /// The position in `map` of the next entry to produce, for a walk that began on a map of
    /// `size` entries; or the error to end with; `None` at the end.
    pub(crate) fn step<V>(
        &mut self,
        map: &IndexMap<Value, V>,
        size: usize,
    ) -> Option<Result<usize, &'static str>> {
        let Walk::Going { next, last } = self else {
            return match self {
                Walk::SizeChanged => Some(Err(CHANGED_SIZE)),
                _ => None,
            };
        };
        if map.len() != size {
            *self = Walk::SizeChanged;
            return Some(Err(CHANGED_SIZE));
        }
        if let Some(last) = last {
            if map.get_index_of(last) != Some(*next - 1) {
                *self = Walk::Ended;
                return Some(Err(KEYS_CHANGED));
            }
        }
        let Some((key, _)) = map.get_index(*next) else {
            *self = Walk::Ended;
            return None;
        };
        *last = Some(key.clone());
        *next += 1;
        Some(Ok(*next - 1))
    }
}

/// What Python's dict iterator raises (a `RuntimeError`) when the dict's size changes under it.
const CHANGED_SIZE: &str = "dictionary changed size during iteration";

/// What Python's dict iterator raises when the keys change under it, its size the same.
const KEYS_CHANGED: &str = "dictionary keys changed during iteration";

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::Value;

    fn map(keys: &[&str]) -> IndexMap<Value, ()> {
        keys.iter()
            .map(|k| (Value::Str(k.to_string()), ()))
            .collect()
    }

    fn walk() -> Walk {
        Walk::Going {
            next: 0,
            last: None,
        }
    }

    #[test]
    fn a_walk_gives_every_position_then_ends() {
        let (m, mut w) = (map(&["a", "b"]), walk());
        assert_eq!(w.step(&m, 2), Some(Ok(0)));
        assert_eq!(w.step(&m, 2), Some(Ok(1)));
        assert_eq!(w.step(&m, 2), None);
        assert_eq!(w.step(&m, 2), None);
    }

    #[test]
    fn a_change_of_size_fails_every_later_step() {
        let mut w = walk();
        assert_eq!(w.step(&map(&["a", "b"]), 2), Some(Ok(0)));
        assert_eq!(w.step(&map(&["a", "b", "c"]), 2), Some(Err(CHANGED_SIZE)));
        // Even once the size is back, as Python's iterator stays failed.
        assert_eq!(w.step(&map(&["a", "b"]), 2), Some(Err(CHANGED_SIZE)));
    }

    #[test]
    fn keys_that_moved_under_the_same_size_fail_once_then_end() {
        let mut w = walk();
        assert_eq!(w.step(&map(&["a", "b", "c"]), 3), Some(Ok(0)));
        // "a" removed, "q" added: "b" would be skipped.
        let changed = map(&["b", "c", "q"]);
        assert_eq!(w.step(&changed, 3), Some(Err(KEYS_CHANGED)));
        assert_eq!(w.step(&changed, 3), None);
    }

    #[test]
    fn a_later_key_replaced_is_walked_on_as_python_does() {
        let mut w = walk();
        assert_eq!(w.step(&map(&["a", "b", "c"]), 3), Some(Ok(0)));
        // "c" removed, "q" added after it: nothing before the position moved.
        let changed = map(&["a", "b", "q"]);
        assert_eq!(w.step(&changed, 3), Some(Ok(1)));
        assert_eq!(w.step(&changed, 3), Some(Ok(2)));
        assert_eq!(w.step(&changed, 3), None);
    }
}
