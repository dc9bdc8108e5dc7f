//! `dict`: a shared dictionary (Python's `DictProxy`), in insertion order.

use indexmap::IndexMap;

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::proxy::Proxy;
use crate::sync::items::{read, BlockingItems, RemoteItems, Walk};
use crate::sync::{builtin_proxy, encode, typeids, Element, Stored, Typed};
use crate::value::Value;
use crate::Stream;

/// One entry: the key (kept with the references its proxies hold) and the value.
struct Entry {
    _key: Stored,
    value: Stored,
}

/// The server side of a shared dictionary.
pub struct DictObject {
    map: IndexMap<Value, Entry>,
}

impl std::fmt::Debug for DictObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DictObject")
            .field("len", &self.map.len())
            .finish_non_exhaustive()
    }
}

fn missing(method: &str, key: &Value) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Key,
        typeids::DICT,
        method,
        format!("{key}"),
    )
}

impl DictObject {
    /// A dictionary of `items` (the arguments of `create`).
    pub fn new(
        (items,): (Vec<(Value, Value)>,),
        ctx: &CallContext,
    ) -> Result<DictObject, RemoteError> {
        let mut dict = DictObject {
            map: IndexMap::new(),
        };
        dict.put_all(items, ctx, "create")?;
        Ok(dict)
    }

    /// A dictionary of `items`, for a factory or a `method_to_typeid = { m: "dict" }` method
    /// that returns a built-in dict; clients use a [`DictProxy`]`<K, V>` on it. Keys and values
    /// must be plain values, not proxies.
    pub fn from_items<K: serde::Serialize, V: serde::Serialize>(
        items: impl IntoIterator<Item = (K, V)>,
    ) -> Result<DictObject, Error> {
        let pairs = crate::sync::initial_values(items, typeids::DICT)?;
        let pairs = pairs
            .into_iter()
            .map(|pair| match pair {
                Value::Tuple(mut kv) if kv.len() == 2 => {
                    let value = kv.pop().expect("two items");
                    let key = kv.pop().expect("two items");
                    Ok((key, value))
                }
                other => Err(Error::encode("a (key, value) pair", format!("got {other}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DictObject::new((pairs,), &CallContext::detached(0))?)
    }

    fn entry(
        ctx: &CallContext,
        key: &Value,
        value: Value,
        method: &str,
    ) -> Result<Entry, RemoteError> {
        Ok(Entry {
            _key: Stored::new(ctx, key.clone(), typeids::DICT, method)?,
            value: Stored::new(ctx, value, typeids::DICT, method)?,
        })
    }

    fn put_all(
        &mut self,
        items: Vec<(Value, Value)>,
        ctx: &CallContext,
        method: &str,
    ) -> Result<(), RemoteError> {
        // Every entry is checked before any is stored, so a refused update changes nothing.
        let entries: Vec<(Value, Entry)> = items
            .into_iter()
            .map(|(key, value)| Self::entry(ctx, &key, value, method).map(|entry| (key, entry)))
            .collect::<Result<_, _>>()?;
        self.map.extend(entries);
        Ok(())
    }

    /// A stream of `pick(key, entry)` for each entry, read by position when the stream
    /// produces it, as Python's dict iterator reads. A change of the dictionary's size since
    /// the stream began ends it with Python's `RuntimeError` (and every later pull fails the
    /// same way, as in Python); so does a change of its keys that moved the key last produced
    /// (removed, or shifted by a removal before it), which Python also reports, rather than
    /// skip an item unseen.
    fn walk(
        &self,
        ctx: &CallContext,
        pick: fn(&Value, &Entry, &CallContext) -> Value,
    ) -> Stream<Value> {
        let Some(this) = ctx.this::<DictObject>() else {
            // A detached call (a unit test): no live object to come back to.
            let items: Vec<Value> = self.map.iter().map(|(k, e)| pick(k, e, ctx)).collect();
            return Stream::iter(items);
        };
        let (ctx, size) = (ctx.clone(), self.map.len());
        let mut walk = Walk::Going {
            next: 0,
            last: None,
        };
        Stream::try_iter(std::iter::from_fn(move || {
            let dict = read(&this);
            let (key, entry) = match walk.step(&dict.map, size)? {
                Ok(at) => dict
                    .map
                    .get_index(at)
                    .expect("step gives a position in the map"),
                Err(message) => return Some(Err(message)),
            };
            Some(Ok(pick(key, entry, &ctx)))
        }))
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [get, getitem, setitem, remove, pop, popitem, contains_key, len, is_empty, setdefault]
)]
impl DictObject {
    /// The value for `key`, if any.
    pub fn get(&self, key: Value, ctx: &CallContext) -> Option<Value> {
        self.map.get(&key).map(|entry| entry.value.give(ctx))
    }

    /// The value for `key`; a `Key` error when there is none (Python's `dict[key]`).
    pub fn getitem(&self, key: Value, ctx: &CallContext) -> Result<Value, RemoteError> {
        self.map
            .get(&key)
            .map(|entry| entry.value.give(ctx))
            .ok_or_else(|| missing("getitem", &key))
    }

    /// Sets `key` to `value`, returning the value it replaces.
    pub fn setitem(
        &mut self,
        key: Value,
        value: Value,
        ctx: &CallContext,
    ) -> Result<Option<Value>, RemoteError> {
        let entry = Self::entry(ctx, &key, value, "setitem")?;
        Ok(self.map.insert(key, entry).map(|old| old.value.give(ctx)))
    }

    /// Removes `key`, returning its value if it was there.
    pub fn remove(&mut self, key: Value, ctx: &CallContext) -> Option<Value> {
        self.map.shift_remove(&key).map(|old| old.value.give(ctx))
    }

    /// Removes `key` and returns its value; a `Key` error when there is none (Python's
    /// `dict.pop(key)`).
    pub fn pop(&mut self, key: Value, ctx: &CallContext) -> Result<Value, RemoteError> {
        self.map
            .shift_remove(&key)
            .map(|old| old.value.give(ctx))
            .ok_or_else(|| missing("pop", &key))
    }

    /// Removes and returns the last inserted entry; a `Key` error when empty.
    pub fn popitem(&mut self, ctx: &CallContext) -> Result<(Value, Value), RemoteError> {
        let (key, entry) = self.map.pop().ok_or_else(|| {
            RemoteError::new(
                RemoteErrorKind::Key,
                typeids::DICT,
                "popitem",
                "popitem(): dictionary is empty",
            )
        })?;
        ctx.hand_out(&key);
        Ok((key, entry.value.give(ctx)))
    }

    /// Whether `key` is present (Python's `key in dict`).
    pub fn contains_key(&self, key: Value) -> bool {
        self.map.contains_key(&key)
    }

    /// The keys, in insertion order.
    pub fn keys(&self, ctx: &CallContext) -> Vec<Value> {
        self.map
            .keys()
            .map(|key| {
                ctx.hand_out(key);
                key.clone()
            })
            .collect()
    }

    /// The values, in insertion order.
    pub fn values(&self, ctx: &CallContext) -> Vec<Value> {
        self.map
            .values()
            .map(|entry| entry.value.give(ctx))
            .collect()
    }

    /// The keys one by one, each read when it is produced (Python's `for key in dict`).
    ///
    /// Read by position when the stream produces each (a window ahead of the caller at most).
    /// If the dictionary's size changes meanwhile, the stream ends with Python's
    /// `RuntimeError: dictionary changed size during iteration`; if a removal moved the keys
    /// still to come (the size the same), with `dictionary keys changed during iteration`. It
    /// keeps the dictionary's value alive while it runs.
    pub fn iter(&self, ctx: &CallContext) -> Stream<Value> {
        self.walk(ctx, |key, _, ctx| {
            ctx.hand_out(key);
            key.clone()
        })
    }

    /// The entries one by one, each a `(key, value)` tuple read when it is produced.
    ///
    /// As [`iter`](Self::iter) reads the keys (Python's `for key, value in dict.items()`).
    pub fn iter_items(&self, ctx: &CallContext) -> Stream<Value> {
        self.walk(ctx, |key, entry, ctx| {
            ctx.hand_out(key);
            Value::Tuple(vec![key.clone(), entry.value.give(ctx)])
        })
    }

    /// The entries, in insertion order.
    pub fn items(&self, ctx: &CallContext) -> Vec<(Value, Value)> {
        self.map
            .iter()
            .map(|(key, entry)| {
                ctx.hand_out(key);
                (key.clone(), entry.value.give(ctx))
            })
            .collect()
    }

    /// The number of entries.
    pub fn len(&self) -> u64 {
        self.map.len() as u64
    }

    /// Whether the dictionary is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.map.clear();
    }

    /// Sets every entry of `items`.
    pub fn update(
        &mut self,
        items: Vec<(Value, Value)>,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        self.put_all(items, ctx, "update")
    }

    /// The value for `key`, after setting it to `default` if it was missing.
    pub fn setdefault(
        &mut self,
        key: Value,
        default: Value,
        ctx: &CallContext,
    ) -> Result<Value, RemoteError> {
        if !self.map.contains_key(&key) {
            let entry = Self::entry(ctx, &key, default, "setdefault")?;
            self.map.insert(key.clone(), entry);
        }
        Ok(self.map[&key].value.give(ctx))
    }
}

/// A shared dictionary from `K` to `V` (Python's `DictProxy`), with async methods.
pub struct DictProxy<K, V>(Typed<(K, V), DictObjectRawProxy>);

#[crate::blocking_twin(DictBlockingProxy)]
impl<K: Element, V: Element> DictProxy<K, V> {
    /// The value for `key`, if any.
    pub async fn get(&self, key: &K) -> Result<Option<V>, Error> {
        let value = self.0.raw.get(encode(key)?).await?;
        value.map(|v| self.0.decode(v)).transpose()
    }

    /// The value for `key`; a `Key` error when there is none (Python's `dict[key]`).
    pub async fn get_item(&self, key: &K) -> Result<V, Error> {
        self.0.decode(self.0.raw.getitem(encode(key)?).await?)
    }

    /// Sets `key` to `value`, returning the value it replaces (Python's `dict[key] = value`).
    pub async fn insert(&self, key: &K, value: &V) -> Result<Option<V>, Error> {
        let old = self.0.raw.setitem(encode(key)?, encode(value)?).await?;
        old.map(|v| self.0.decode(v)).transpose()
    }

    /// Removes `key`, returning its value if it was there.
    pub async fn remove(&self, key: &K) -> Result<Option<V>, Error> {
        let old = self.0.raw.remove(encode(key)?).await?;
        old.map(|v| self.0.decode(v)).transpose()
    }

    /// Removes `key` and returns its value; a `Key` error when there is none.
    pub async fn pop(&self, key: &K) -> Result<V, Error> {
        self.0.decode(self.0.raw.pop(encode(key)?).await?)
    }

    /// Removes and returns the last inserted entry; a `Key` error when empty.
    pub async fn popitem(&self) -> Result<(K, V), Error> {
        let (key, value) = self.0.raw.popitem().await?;
        self.0.decode(Value::Tuple(vec![key, value]))
    }

    /// Whether `key` is present.
    pub async fn contains_key(&self, key: &K) -> Result<bool, Error> {
        self.0.raw.contains_key(encode(key)?).await
    }

    /// The keys, in insertion order.
    pub async fn keys(&self) -> Result<Vec<K>, Error> {
        self.0.decode(Value::List(self.0.raw.keys().await?))
    }

    /// The values, in insertion order.
    pub async fn values(&self) -> Result<Vec<V>, Error> {
        self.0.decode(Value::List(self.0.raw.values().await?))
    }

    /// The entries, in insertion order.
    pub async fn items(&self) -> Result<Vec<(K, V)>, Error> {
        let items = self.0.raw.items().await?;
        let items = items
            .into_iter()
            .map(|(k, v)| Value::Tuple(vec![k, v]))
            .collect();
        self.0.decode(Value::List(items))
    }

    /// The number of entries.
    pub async fn len(&self) -> Result<u64, Error>;

    /// Whether the dictionary is empty.
    pub async fn is_empty(&self) -> Result<bool, Error>;

    /// Removes every entry.
    pub async fn clear(&self) -> Result<(), Error>;

    /// Sets every entry of `items`; if one cannot be stored, none is.
    pub async fn update(&self, items: &[(K, V)]) -> Result<(), Error> {
        let items: Vec<(Value, Value)> = items
            .iter()
            .map(|(k, v)| Ok((encode(k)?, encode(v)?)))
            .collect::<Result<_, Error>>()?;
        self.0.raw.update(items).await
    }

    /// The value for `key`, after setting it to `default` if it was missing.
    pub async fn setdefault(&self, key: &K, default: &V) -> Result<V, Error> {
        let value = self
            .0
            .raw
            .setdefault(encode(key)?, encode(default)?)
            .await?;
        self.0.decode(value)
    }
}

// Not in the blocking twin: the blocking forms yield an `Iterator`, not a blocked stream.
impl<K: Element, V: Element> DictProxy<K, V> {
    /// The keys one by one, in insertion order, as Python's `for key in dict` sees them: the
    /// server reads each when it sends it, at most a stream window
    /// ([`STREAM_WINDOW`](crate::wire::STREAM_WINDOW)) ahead of what the stream has yielded.
    /// If the dictionary's size changes meanwhile (an insert or a removal by any client), the
    /// stream ends with an error (kind `Runtime`), as Python raises `RuntimeError: dictionary
    /// changed size during iteration`; so it does, with `dictionary keys changed during
    /// iteration`, when a removal and an insert moved the keys still to come. For a copy that
    /// cannot fail, use [`keys`](Self::keys). Dropping the stream stops the server's iterator.
    pub async fn iter(&self) -> Result<RemoteItems<K>, Error> {
        let stream = self.0.raw.iter().await?;
        Ok(RemoteItems::new(stream, self.0.base().connection()))
    }

    /// The entries one by one, as [`iter`](Self::iter) reads them (for a copy, use
    /// [`items`](Self::items)).
    pub async fn iter_items(&self) -> Result<RemoteItems<(K, V)>, Error> {
        let stream = self.0.raw.iter_items().await?;
        Ok(RemoteItems::new(stream, self.0.base().connection()))
    }
}

impl<K: Element, V: Element> DictBlockingProxy<K, V> {
    /// The keys one by one, as [`DictProxy::iter`] gives them, as a blocking `Iterator`.
    pub fn iter(&self) -> Result<BlockingItems<K>, Error> {
        let base = self.0 .0.base();
        let stream = base.call_stream_blocking::<Value>("iter", ())?;
        Ok(BlockingItems::new(stream, base.connection()))
    }

    /// The entries one by one, as [`DictProxy::iter_items`] gives them.
    pub fn iter_items(&self) -> Result<BlockingItems<(K, V)>, Error> {
        let base = self.0 .0.base();
        let stream = base.call_stream_blocking::<Value>("iter_items", ())?;
        Ok(BlockingItems::new(stream, base.connection()))
    }
}

builtin_proxy! {
    DictProxy<K, V> for DictObject,
    /// A shared dictionary from `K` to `V` (Python's `DictProxy`), with blocking methods.
    DictBlockingProxy
}

/// Registers `dict` under its typeid.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    let dict = crate::registry::Register::factory_with_context(typeids::DICT, DictObject::new);
    registry.register(dict)?;
    Ok(())
}
