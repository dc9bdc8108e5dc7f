//! What a shared list and a shared array have in common: Python's indexing of a sequence of
//! stored values, with CPython's messages.

use crate::context::CallContext;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::sync::{typeids, Stored};
use crate::value::Value;

/// A kind of sequence: its typeid, and the word CPython's messages name it by.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sequence {
    typeid: &'static str,
    word: &'static str,
}

/// A `list`.
pub(crate) const LIST: Sequence = Sequence {
    typeid: typeids::LIST,
    word: "list",
};

/// An `Array`.
pub(crate) const ARRAY: Sequence = Sequence {
    typeid: typeids::ARRAY,
    word: "array",
};

impl Sequence {
    /// Resolves a Python-style `index` (negative counts from the end) among `len` items. Out
    /// of range, the error says what CPython's sequence says for `method`.
    pub(crate) fn position(
        self,
        index: i64,
        len: usize,
        method: &str,
    ) -> Result<usize, RemoteError> {
        let resolved = if index < 0 { index + len as i64 } else { index };
        if resolved < 0 || resolved >= len as i64 {
            let message = match method {
                "setitem" | "delitem" => format!("{} assignment index out of range", self.word),
                "pop" => "pop index out of range".to_string(),
                _ => format!("{} index out of range", self.word),
            };
            return Err(RemoteError::new(
                RemoteErrorKind::Index,
                self.typeid,
                method,
                message,
            ));
        }
        Ok(resolved as usize)
    }

    /// Python's `seq[index]`: a copy of the item, handing the caller its proxies.
    pub(crate) fn get(
        self,
        items: &[Stored],
        index: i64,
        ctx: &CallContext,
    ) -> Result<Value, RemoteError> {
        let at = self.position(index, items.len(), "getitem")?;
        Ok(items[at].give(ctx))
    }

    /// Python's `seq[index] = item`: the index is checked first, then `item` is made what the
    /// sequence stores by `check`, then stored with references for its proxies.
    pub(crate) fn set(
        self,
        items: &mut [Stored],
        index: i64,
        item: Value,
        check: impl FnOnce(Value) -> Result<Value, RemoteError>,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let at = self.position(index, items.len(), "setitem")?;
        items[at] = Stored::new(ctx, check(item)?, self.typeid, "setitem")?;
        Ok(())
    }
}
