//! `list`: a shared list (Python's `ListProxy`).

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::proxy::Proxy;
use crate::sync::items::{read, BlockingItems, RemoteItems};
use crate::sync::sequence::{sequence_object, LIST};
use crate::sync::{builtin_proxy, encode, encode_all, typeids, Element, Stored, Typed};
use crate::value::Value;
use crate::Stream;

/// The server side of a shared list: its items, with the references their proxies hold.
pub struct ListObject {
    items: Vec<Stored>,
}

impl std::fmt::Debug for ListObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.items.iter().map(|stored| &stored.value))
            .finish()
    }
}

fn error(kind: RemoteErrorKind, method: &str, message: impl Into<String>) -> RemoteError {
    RemoteError::new(kind, typeids::LIST, method, message)
}

/// Resolves Python-style slice bounds into a range within `0..len`.
fn bounds(start: Option<i64>, stop: Option<i64>, len: usize) -> std::ops::Range<usize> {
    let clamp = |i: i64| -> usize {
        let i = if i < 0 { i + len as i64 } else { i };
        i.clamp(0, len as i64) as usize
    };
    let start = start.map_or(0, clamp);
    let stop = stop.map_or(len, clamp);
    start..stop.max(start)
}

/// The most items `repeat` may make, so that no client can make the server build a list of
/// any size it likes.
pub const MAX_REPEATED_ITEMS: usize = 1 << 22;

/// The positions `list[start:stop:step]` names in a list of `len`, as Python's
/// `slice.indices` computes them.
fn extended(start: Option<i64>, stop: Option<i64>, step: i64, len: usize) -> Vec<usize> {
    let len = len as i128;
    let step = i128::from(step);
    let (lower, upper) = if step < 0 { (-1, len - 1) } else { (0, len) };
    let clamp = |v: Option<i64>, default: i128| match v.map(i128::from) {
        None => default,
        Some(i) if i < 0 => (i + len).max(lower),
        Some(i) => i.min(upper),
    };
    let (start, stop) = if step < 0 {
        (clamp(start, upper), clamp(stop, lower))
    } else {
        (clamp(start, lower), clamp(stop, upper))
    };
    let mut positions = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        positions.push(i as usize);
        i += step;
    }
    positions
}

fn zero_step(method: &str) -> RemoteError {
    error(
        RemoteErrorKind::InvalidValue,
        method,
        "slice step cannot be zero",
    )
}

/// `key(value)` for the builtins `sort_by_builtin` honours, or Python's `TypeError` message.
fn builtin_key(key: &str, value: &Value) -> Result<Value, String> {
    match (key, value) {
        ("abs", Value::Bool(b)) => Ok(Value::Int(i128::from(*b))),
        ("abs", Value::Int(i)) => Ok(i.checked_abs().map_or(Value::Float(f64::MAX), Value::Int)),
        ("abs", Value::Float(f)) => Ok(Value::Float(f.abs())),
        ("abs", other) => Err(format!(
            "bad operand type for abs(): '{}'",
            other.python_type()
        )),
        ("len", Value::Str(s)) => Ok(Value::Int(s.chars().count() as i128)),
        ("len", Value::Bytes(b) | Value::ByteArray(b)) => Ok(Value::Int(b.len() as i128)),
        (
            "len",
            Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items),
        ) => Ok(Value::Int(items.len() as i128)),
        ("len", Value::Map(entries)) => Ok(Value::Int(entries.len() as i128)),
        ("len", other) => Err(format!(
            "object of type '{}' has no len()",
            other.python_type()
        )),
        (other, _) => Err(format!("sort(key={other}) is not one of abs and len")),
    }
}

impl ListObject {
    /// Reorders the items by `keys` (one per item) in Python's order, stably.
    fn sort_by_keys(&mut self, keys: &[Value], reverse: bool) -> Result<(), RemoteError> {
        let mut failed = None;
        let mut sorted: Vec<usize> = (0..self.items.len()).collect();
        sorted.sort_by(|&a, &b| {
            let (a, b) = (&keys[a], &keys[b]);
            match a.python_cmp(b) {
                Ok(order) if reverse => order.reverse(),
                Ok(order) => order,
                Err(message) => {
                    failed.get_or_insert(message);
                    std::cmp::Ordering::Equal
                }
            }
        });
        if let Some(message) = failed {
            return Err(error(RemoteErrorKind::BadArguments, "sort", message));
        }
        let mut items: Vec<Option<Stored>> = self.items.drain(..).map(Some).collect();
        self.items = sorted.into_iter().filter_map(|i| items[i].take()).collect();
        Ok(())
    }

    /// A list of `items` (the arguments of `create`).
    pub fn new((items,): (Vec<Value>,), ctx: &CallContext) -> Result<ListObject, RemoteError> {
        let items = items
            .into_iter()
            .map(|item| Stored::new(ctx, item, typeids::LIST, "create"))
            .collect::<Result<_, _>>()?;
        Ok(ListObject { items })
    }

    /// A list of `items`, for a factory or a `method_to_typeid = { m: "list" }` method that
    /// returns a built-in list (the seed's `top_level_function`); clients use a
    /// [`ListProxy`]`<T>` on it. The items must be plain values, not proxies.
    ///
    /// ```
    /// use manager_core::sync::ListObject;
    /// use manager_core::{Register, Registry};
    /// # fn main() -> manager_core::Result<()> {
    /// let mut registry = Registry::new();
    /// registry.register(Register::factory("get_my_items", |(): ()| {
    ///     ListObject::from_items(["set by the server"]).expect("a string is a plain value")
    /// }))?;
    /// # Ok(()) }
    /// ```
    pub fn from_items<T: serde::Serialize>(
        items: impl IntoIterator<Item = T>,
    ) -> Result<ListObject, Error> {
        let items = crate::sync::initial_values(items, typeids::LIST)?;
        let ctx = CallContext::detached(0);
        Ok(ListObject {
            items: items
                .into_iter()
                .map(|item| Stored::new(&ctx, item, typeids::LIST, "create"))
                .collect::<Result<_, _>>()?,
        })
    }

    fn position(&self, item: &Value, method: &str) -> Result<usize, RemoteError> {
        self.items
            .iter()
            .position(|stored| &stored.value == item)
            .ok_or_else(|| {
                let message = match method {
                    "remove" => "list.remove(x): x not in list".to_string(),
                    _ => format!("{item} is not in list"),
                };
                error(RemoteErrorKind::InvalidValue, method, message)
            })
    }

    /// What the list stores of `item`: the item itself.
    fn admit(&self, item: Value, _method: &str) -> Result<Value, RemoteError> {
        Ok(item)
    }
}

sequence_object! {
#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [append, extend, pop, len, is_empty, getitem, setitem]
)]
impl ListObject as LIST {
    /// Appends `item`.
    pub fn append(&mut self, item: Value, ctx: &CallContext) -> Result<(), RemoteError> {
        self.items
            .push(Stored::new(ctx, item, typeids::LIST, "append")?);
        Ok(())
    }

    /// Appends every item of `items`.
    pub fn extend(&mut self, items: Vec<Value>, ctx: &CallContext) -> Result<(), RemoteError> {
        let stored: Vec<Stored> = items
            .into_iter()
            .map(|item| Stored::new(ctx, item, typeids::LIST, "extend"))
            .collect::<Result<_, _>>()?;
        self.items.extend(stored);
        Ok(())
    }

    /// Inserts `item` before `index` (clamped to the list, as Python does).
    pub fn insert(
        &mut self,
        index: i64,
        item: Value,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let at = bounds(Some(index), None, self.items.len()).start;
        self.items
            .insert(at, Stored::new(ctx, item, typeids::LIST, "insert")?);
        Ok(())
    }

    /// Removes and returns the item at `index` (the last one by default).
    pub fn pop(&mut self, index: Option<i64>, ctx: &CallContext) -> Result<Value, RemoteError> {
        if self.items.is_empty() {
            return Err(error(RemoteErrorKind::Index, "pop", "pop from empty list"));
        }
        let at = LIST.position(index.unwrap_or(-1), self.items.len(), "pop")?;
        Ok(self.items.remove(at).give(ctx))
    }

    /// Removes the first item equal to `item`.
    pub fn remove(&mut self, item: Value) -> Result<(), RemoteError> {
        let at = self.position(&item, "remove")?;
        self.items.remove(at);
        Ok(())
    }

    /// The position of the first item equal to `item`.
    pub fn index(&self, item: Value) -> Result<u64, RemoteError> {
        self.position(&item, "index").map(|i| i as u64)
    }

    /// Sorts the items in place, stably, in Python's order (`reverse` for descending); items
    /// Python cannot compare are an `InvalidValue` error (Python's `TypeError` message) and
    /// leave the list as it was.
    pub fn sort(&mut self, reverse: bool) -> Result<(), RemoteError> {
        let keys: Vec<Value> = self.items.iter().map(|s| s.value.clone()).collect();
        self.sort_by_keys(&keys, reverse)
    }

    /// Sorts as [`sort`](Self::sort) does, by `key(item)` for one of the builtins a server can
    /// apply without running Python code: `"abs"` or `"len"` (Python's `sort(key=abs)`).
    pub fn sort_by_builtin(&mut self, key: String, reverse: bool) -> Result<(), RemoteError> {
        let keys = self
            .items
            .iter()
            .map(|stored| builtin_key(&key, &stored.value))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|message| error(RemoteErrorKind::BadArguments, "sort", message))?;
        self.sort_by_keys(&keys, reverse)
    }

    /// How many items equal `item`.
    pub fn count(&self, item: Value) -> u64 {
        self.items
            .iter()
            .filter(|stored| stored.value == item)
            .count() as u64
    }

    /// Removes the item at `index` (Python's `del list[index]`).
    pub fn delitem(&mut self, index: i64) -> Result<(), RemoteError> {
        let at = LIST.position(index, self.items.len(), "delitem")?;
        self.items.remove(at);
        Ok(())
    }

    /// The items from `start` to `stop` (Python's `list[start:stop]`).
    pub fn getslice(&self, start: Option<i64>, stop: Option<i64>, ctx: &CallContext) -> Vec<Value> {
        self.items[bounds(start, stop, self.items.len())]
            .iter()
            .map(|stored| stored.give(ctx))
            .collect()
    }

    /// Replaces the items from `start` to `stop` with `items` (Python's
    /// `list[start:stop] = items`).
    pub fn setslice(
        &mut self,
        start: Option<i64>,
        stop: Option<i64>,
        items: Vec<Value>,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let range = bounds(start, stop, self.items.len());
        let stored: Vec<Stored> = items
            .into_iter()
            .map(|item| Stored::new(ctx, item, typeids::LIST, "setslice"))
            .collect::<Result<_, _>>()?;
        self.items.splice(range, stored);
        Ok(())
    }

    /// Removes the items from `start` to `stop` (Python's `del list[start:stop]`).
    pub fn delslice(&mut self, start: Option<i64>, stop: Option<i64>) {
        let range = bounds(start, stop, self.items.len());
        self.items.drain(range);
    }

    /// Replaces the items `list[start:stop:step]` names with `items`, one for one (Python's
    /// `list[::2] = items`); a step of 1 is [`setslice`](Self::setslice).
    pub fn set_extended_slice(
        &mut self,
        start: Option<i64>,
        stop: Option<i64>,
        step: i64,
        items: Vec<Value>,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        const METHOD: &str = "set_extended_slice";
        if step == 0 {
            return Err(zero_step(METHOD));
        }
        if step == 1 {
            return self.setslice(start, stop, items, ctx);
        }
        let positions = extended(start, stop, step, self.items.len());
        if positions.len() != items.len() {
            return Err(error(
                RemoteErrorKind::InvalidValue,
                METHOD,
                format!(
                    "attempt to assign sequence of size {} to extended slice of size {}",
                    items.len(),
                    positions.len()
                ),
            ));
        }
        let stored: Vec<Stored> = items
            .into_iter()
            .map(|item| Stored::new(ctx, item, typeids::LIST, METHOD))
            .collect::<Result<_, _>>()?;
        for (at, item) in positions.into_iter().zip(stored) {
            self.items[at] = item;
        }
        Ok(())
    }

    /// Removes the items `list[start:stop:step]` names (Python's `del list[::2]`).
    pub fn del_extended_slice(
        &mut self,
        start: Option<i64>,
        stop: Option<i64>,
        step: i64,
    ) -> Result<(), RemoteError> {
        if step == 0 {
            return Err(zero_step("del_extended_slice"));
        }
        let mut doomed = vec![false; self.items.len()];
        for at in extended(start, stop, step, self.items.len()) {
            doomed[at] = true;
        }
        let mut doomed = doomed.into_iter();
        self.items.retain(|_| !doomed.next().unwrap_or(false));
        Ok(())
    }

    /// Repeats the items in place, `n` times over (Python's `list *= n`; `n <= 0` empties the
    /// list). A list past [`MAX_REPEATED_ITEMS`] is refused.
    pub fn repeat(&mut self, n: i64, ctx: &CallContext) -> Result<(), RemoteError> {
        if n <= 0 {
            self.items.clear();
            return Ok(());
        }
        if self.items.is_empty() {
            // Nothing to repeat, however large `n` is: no loop over it.
            return Ok(());
        }
        let total = (self.items.len() as u128).saturating_mul(n as u128);
        if total > MAX_REPEATED_ITEMS as u128 {
            return Err(error(
                RemoteErrorKind::Limit,
                "repeat",
                format!("a manager server builds lists of at most {MAX_REPEATED_ITEMS} items by repetition"),
            ));
        }
        let copies: Vec<Value> = self
            .items
            .iter()
            .map(|stored| stored.value.clone())
            .collect();
        for _ in 1..n {
            for value in &copies {
                self.items
                    .push(Stored::new(ctx, value.clone(), typeids::LIST, "repeat")?);
            }
        }
        Ok(())
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.items.clear();
    }

    /// Reverses the items in place.
    pub fn reverse(&mut self) {
        self.items.reverse();
    }

    /// Whether an item equals `item` (Python's `item in list`).
    pub fn contains(&self, item: Value) -> bool {
        self.items.iter().any(|stored| stored.value == item)
    }

    /// Every item, in order.
    pub fn to_vec(&self, ctx: &CallContext) -> Vec<Value> {
        self.items.iter().map(|stored| stored.give(ctx)).collect()
    }

    /// The items one by one, each read when it is produced (Python's `for x in list`).
    ///
    /// As Python's list iterator: an index that advances, each item read as it is stored when
    /// the stream produces it (a window ahead of the caller at most), so that items changed or
    /// appended meanwhile are seen; the stream ends when the index passes the end. It keeps
    /// the list's value alive while it runs.
    pub fn iter(&self, ctx: &CallContext) -> Stream<Value> {
        let Some(this) = ctx.this::<ListObject>() else {
            // A detached call (a unit test): no live object to come back to.
            return Stream::iter(self.to_vec(ctx));
        };
        let (ctx, mut index) = (ctx.clone(), 0);
        Stream::iter(std::iter::from_fn(move || {
            let item = read(&this).items.get(index).map(|stored| stored.give(&ctx));
            index += 1;
            item
        }))
    }
}
}

/// A shared list of `T` (Python's `ListProxy`), with async methods.
pub struct ListProxy<T>(Typed<T, ListObjectRawProxy>);

/// The methods a list shares with an array, whose raw proxies both have `len`, `is_empty`,
/// `getitem` and `setitem`, on `$proxy` and its blocking twin.
macro_rules! indexed_methods {
    ($proxy:ident, $blocking:ident) => {
        #[crate::blocking_twin($blocking)]
        impl<T: Element> $proxy<T> {
            /// The number of items.
            pub async fn len(&self) -> Result<u64, Error>;

            /// Whether there are no items.
            pub async fn is_empty(&self) -> Result<bool, Error>;

            /// The item at `index` (negative counts from the end); an `Index` error out of
            /// range.
            pub async fn get(&self, index: i64) -> Result<T, Error> {
                self.0.decode(self.0.raw.getitem(index).await?)
            }

            /// Replaces the item at `index`.
            pub async fn set(&self, index: i64, item: &T) -> Result<(), Error> {
                self.0.raw.setitem(index, encode(item)?).await
            }
        }
    };
}
pub(crate) use indexed_methods;

indexed_methods!(ListProxy, ListBlockingProxy);

#[crate::blocking_twin(ListBlockingProxy)]
impl<T: Element> ListProxy<T> {
    /// Appends `item`.
    pub async fn append(&self, item: &T) -> Result<(), Error> {
        self.0.raw.append(encode(item)?).await
    }

    /// Appends every item of `items`.
    pub async fn extend(&self, items: &[T]) -> Result<(), Error> {
        self.0.raw.extend(encode_all(items)?).await
    }

    /// Inserts `item` before `index`.
    pub async fn insert(&self, index: i64, item: &T) -> Result<(), Error> {
        self.0.raw.insert(index, encode(item)?).await
    }

    /// Removes and returns the last item; an `Index` error when the list is empty.
    pub async fn pop(&self) -> Result<T, Error> {
        self.0.decode(self.0.raw.pop(None).await?)
    }

    /// Removes and returns the item at `index`.
    pub async fn pop_at(&self, index: i64) -> Result<T, Error> {
        self.0.decode(self.0.raw.pop(Some(index)).await?)
    }

    /// Removes the first item equal to `item`; an `InvalidValue` error when there is none.
    pub async fn remove(&self, item: &T) -> Result<(), Error> {
        self.0.raw.remove(encode(item)?).await
    }

    /// The position of the first item equal to `item`.
    pub async fn index(&self, item: &T) -> Result<u64, Error> {
        self.0.raw.index(encode(item)?).await
    }

    /// How many items equal `item`.
    pub async fn count(&self, item: &T) -> Result<u64, Error> {
        self.0.raw.count(encode(item)?).await
    }

    /// Removes the item at `index`.
    pub async fn delete(&self, index: i64) -> Result<(), Error> {
        self.0.raw.delitem(index).await
    }

    /// The items from `start` to `stop` (`None` for the ends), Python's `list[start:stop]`.
    pub async fn slice(&self, start: Option<i64>, stop: Option<i64>) -> Result<Vec<T>, Error> {
        self.0
            .decode(Value::List(self.0.raw.getslice(start, stop).await?))
    }

    /// Replaces the items from `start` to `stop` with `items`.
    pub async fn set_slice(
        &self,
        start: Option<i64>,
        stop: Option<i64>,
        items: &[T],
    ) -> Result<(), Error> {
        self.0.raw.setslice(start, stop, encode_all(items)?).await
    }

    /// Removes the items from `start` to `stop`.
    pub async fn delete_slice(&self, start: Option<i64>, stop: Option<i64>) -> Result<(), Error> {
        self.0.raw.delslice(start, stop).await
    }

    /// Removes every item.
    pub async fn clear(&self) -> Result<(), Error>;

    /// Reverses the items in place.
    pub async fn reverse(&self) -> Result<(), Error>;

    /// Sorts the items in place in Python's order (`reverse` for descending); items Python
    /// cannot compare (a str and an int, `None`s) are a `BadArguments` error.
    pub async fn sort(&self, reverse: bool) -> Result<(), Error>;

    /// Whether an item equals `item`.
    pub async fn contains(&self, item: &T) -> Result<bool, Error> {
        self.0.raw.contains(encode(item)?).await
    }

    /// Every item, in order.
    pub async fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.0.decode(Value::List(self.0.raw.to_vec().await?))
    }
}

// Not in the blocking twin: the blocking form yields an `Iterator`, not a blocked stream.
impl<T: Element> ListProxy<T> {
    /// The items one by one, as Python's `for x in list` sees them: the server reads each
    /// item when it sends it, at most a stream window
    /// ([`STREAM_WINDOW`](crate::wire::STREAM_WINDOW)) ahead of what the stream has yielded,
    /// so items changed or appended meanwhile (by any client) are seen, and the stream ends
    /// when its index passes the end of the list. Dropping the stream stops the server's
    /// iterator.
    pub async fn iter(&self) -> Result<RemoteItems<T>, Error> {
        let stream = self.0.raw.iter().await?;
        Ok(RemoteItems::new(stream, self.0.base().connection()))
    }
}

impl<T: Element> ListBlockingProxy<T> {
    /// The items one by one, as [`ListProxy::iter`] gives them, as a blocking `Iterator`.
    pub fn iter(&self) -> Result<BlockingItems<T>, Error> {
        let base = self.0 .0.base();
        let stream = base.call_stream_blocking::<Value>("iter", ())?;
        Ok(BlockingItems::new(stream, base.connection()))
    }
}

builtin_proxy! {
    ListProxy<T> for ListObject,
    /// A shared list of `T` (Python's `ListProxy`), with blocking methods.
    ListBlockingProxy
}

/// Registers `list` under its typeid.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    let list = crate::registry::Register::factory_with_context(typeids::LIST, ListObject::new);
    registry.register(list)?;
    Ok(())
}
