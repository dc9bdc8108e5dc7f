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

    /// `item` stored in a sequence of this kind by `method`, with references for its proxies.
    pub(crate) fn store(
        self,
        item: Value,
        ctx: &CallContext,
        method: &str,
    ) -> Result<Stored, RemoteError> {
        Stored::new(ctx, item, self.typeid, method)
    }
}

/// `#[shared]` (the attribute given) on the impl block of `$object`, a sequence whose `items`
/// are a `Vec<Stored>`, with Python's indexing written once for every sequence: `len`,
/// `is_empty`, `getitem` and `setitem` (which checks the index, then stores what the type's own
/// `admit(item, method)` makes of the item), before the type's own methods. `$seq` is the
/// [`Sequence`] it is.
macro_rules! sequence_object {
    (#[$shared:meta] impl $object:ident as $seq:ident { $($methods:tt)* }) => {
        #[$shared]
        impl $object {
            /// The number of items.
            pub fn len(&self) -> u64 {
                self.items.len() as u64
            }

            /// Whether there are no items.
            pub fn is_empty(&self) -> bool {
                self.items.is_empty()
            }

            /// The item at `index` (Python's `seq[index]`; negative counts from the end).
            pub fn getitem(
                &self,
                index: i64,
                ctx: &crate::context::CallContext,
            ) -> Result<crate::value::Value, crate::error::RemoteError> {
                $seq.get(&self.items, index, ctx)
            }

            /// Replaces the item at `index` (Python's `seq[index] = item`).
            pub fn setitem(
                &mut self,
                index: i64,
                item: crate::value::Value,
                ctx: &crate::context::CallContext,
            ) -> Result<(), crate::error::RemoteError> {
                let at = $seq.position(index, self.items.len(), "setitem")?;
                let item = self.admit(item, "setitem")?;
                self.items[at] = $seq.store(item, ctx, "setitem")?;
                Ok(())
            }

            $($methods)*
        }
    };
}
pub(crate) use sequence_object;
