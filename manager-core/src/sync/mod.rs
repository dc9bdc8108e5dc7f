//! Built-in shared types: Python's `SyncManager` (`list`, `dict`, `Namespace`, `Value`, `Array`,
//! `Queue`, `JoinableQueue`, `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`, `Condition`,
//! `Event`, `Barrier`).
//!
//! The server side of each type stores [`Value`]s, so one server hosts lists and queues for
//! clients of any value type and any language. The client side is a typed proxy
//! (`ListProxy<T>`, `QueueProxy<T>`, ...) that converts through serde; a value of the wrong
//! type is a decode error for that caller only. Every proxy has a blocking twin
//! (`ListBlockingProxy<T>`, ...) for code without a runtime.
//!
//! Start a server that hosts them with [`registry`]:
//!
//! ```
//! use manager_core::{sync, Address, BaseManager};
//! # fn main() -> manager_core::Result<()> {
//! manager_core::init();
//! let manager = BaseManager::new(Address::local_tcp()).start(sync::registry)?;
//! let list = manager.list(&[1, 2, 3])?;
//! list.append(&4)?;
//! assert_eq!(list.to_vec()?, vec![1, 2, 3, 4]);
//! # manager.shutdown() }
//! ```
//!
//! Proxies can be stored in containers (a queue inside a dict): the container keeps the object
//! alive while it holds the proxy, and a proxy taken out works in any process.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::{CallContext, Retained};
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::proxy::Proxy;
use crate::registry::{Register, Registry};
use crate::value::{to_value, Value};

#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod barrier;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod condition;
mod containers;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod dict;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod event;
mod items;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod iterator;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod list;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod lock;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod namespace;
#[cfg(feature = "python")]
pub(crate) mod python;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod queue;
pub(crate) mod release;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod semaphore;
mod sequence;
pub(crate) mod settle;
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod shared_value;
mod typecode;
mod wait;

pub use barrier::{BarrierBlockingProxy, BarrierProxy};
pub use condition::{ConditionBlockingProxy, ConditionProxy};
pub use dict::{DictBlockingProxy, DictObject, DictProxy};
pub use event::{EventBlockingProxy, EventProxy};
pub use items::{BlockingItems, RemoteItems};
pub use list::{ListBlockingProxy, ListObject, ListProxy, MAX_REPEATED_ITEMS};
pub use lock::{LockBlockingProxy, LockProxy, RLockBlockingProxy, RLockProxy};
pub use namespace::{NamespaceBlockingProxy, NamespaceProxy};
pub use queue::{
    JoinableQueueBlockingProxy, JoinableQueueProxy, QueueBlockingProxy, QueueObject, QueueProxy,
};
pub use release::{BlockingLockGuard, LockGuard};
pub use semaphore::{
    BoundedSemaphoreBlockingProxy, BoundedSemaphoreProxy, SemaphoreBlockingProxy, SemaphoreProxy,
};
pub use shared_value::{ArrayBlockingProxy, ArrayProxy, ValueBlockingProxy, ValueProxy};

/// The typeids of the built-in types, as Python's `SyncManager` names them.
pub mod typeids {
    /// `list`: [`super::ListProxy`].
    pub const LIST: &str = "list";
    /// `dict`: [`super::DictProxy`].
    pub const DICT: &str = "dict";
    /// `Namespace`: [`super::NamespaceProxy`].
    pub const NAMESPACE: &str = "Namespace";
    /// `Value`: [`super::ValueProxy`].
    pub const VALUE: &str = "Value";
    /// `Array`: [`super::ArrayProxy`].
    pub const ARRAY: &str = "Array";
    /// `Queue`: [`super::QueueProxy`].
    pub const QUEUE: &str = "Queue";
    /// `JoinableQueue`: [`super::JoinableQueueProxy`].
    pub const JOINABLE_QUEUE: &str = "JoinableQueue";
    /// `Event`: [`super::EventProxy`].
    pub const EVENT: &str = "Event";
    /// `Barrier`: [`super::BarrierProxy`].
    pub const BARRIER: &str = "Barrier";
    /// `Lock`: [`super::LockProxy`].
    pub const LOCK: &str = "Lock";
    /// `RLock`: [`super::RLockProxy`].
    pub const RLOCK: &str = "RLock";
    /// `Semaphore`: [`super::SemaphoreProxy`].
    pub const SEMAPHORE: &str = "Semaphore";
    /// `BoundedSemaphore`: [`super::BoundedSemaphoreProxy`].
    pub const BOUNDED_SEMAPHORE: &str = "BoundedSemaphore";
    /// `Condition`: [`super::ConditionProxy`].
    pub const CONDITION: &str = "Condition";
    /// `Iterator`: what a CPython client gets for a stream (`for key in dict`), served one
    /// item per `__next__`; no create method, and no Rust proxy (Rust clients receive a
    /// stream as one: [`super::DictProxy::iter`]).
    pub const ITERATOR: &str = "Iterator";
}

/// A type that can be stored in a built-in container: any serde type (proxies included).
pub trait Element: Serialize + DeserializeOwned {}
impl<T: Serialize + DeserializeOwned> Element for T {}

/// The registry of every built-in type, under Python's `SyncManager` typeids.
#[crate::entry(crate = "crate")]
pub fn registry() -> Registry {
    let mut registry = Registry::new();
    register(&mut registry).expect("the built-in registrations are consistent");
    registry
}

/// Adds every built-in type to `registry`, so that a server can host them beside its own types.
pub fn register(registry: &mut Registry) -> Result<(), Error> {
    list::register(registry)?;
    dict::register(registry)?;
    namespace::register(registry)?;
    shared_value::register(registry)?;
    queue::register(registry)?;
    event::register(registry)?;
    barrier::register(registry)?;
    lock::register(registry)?;
    semaphore::register(registry)?;
    condition::register(registry)?;
    registry.register(
        Register::<iterator::IteratorObject>::new(typeids::ITERATOR)
            .from_result(iterator::IteratorObject::new),
    )?;
    Ok(())
}

/// A value kept by a container, with a reference to every object its proxies name, so that a
/// proxy stored in a list keeps its object alive.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) value: Value,
    _refs: Retained,
}

impl Stored {
    /// Stores `value`, taking references for its proxies. Fails when a proxy names an object
    /// that does not exist.
    pub(crate) fn new(
        ctx: &CallContext,
        value: Value,
        typeid: &str,
        method: &str,
    ) -> Result<Stored, RemoteError> {
        let refs = ctx.retain(&value).map_err(|message| {
            RemoteError::new(RemoteErrorKind::InvalidValue, typeid, method, message)
        })?;
        Ok(Stored { value, _refs: refs })
    }

    /// A copy of the value to return to the caller, handing the caller a reference for each of
    /// its proxies.
    pub(crate) fn give(&self, ctx: &CallContext) -> Value {
        ctx.hand_out(&self.value);
        self.value.clone()
    }
}

/// Declares, for each built-in type, the method of [`Manager`](crate::Manager) (async) and
/// of [`BlockingManager`](crate::BlockingManager) (blocking) that creates one, with the same
/// docs: `fn name<T: Bound>(arguments) -> XProxy, XBlockingProxy = typeid, create arguments;`.
macro_rules! constructors {
    ($(
        $(#[$doc:meta])*
        fn $name:ident $(<$g:ident: $bound:path>)? ($($arg:ident: $ty:ty),*)
            -> $proxy:ty, $blocking:ty = $typeid:expr, $args:expr;
    )*) => {
        impl $crate::manager::Manager {$(
            $(#[$doc])*
            pub async fn $name $(<$g: $bound>)? (&self $(, $arg: $ty)*) -> Result<$proxy, Error> {
                self.create_dynamic($typeid, $args)
                    .await
                    .map($crate::proxy::Proxy::from_base)
            }
        )*}

        impl $crate::manager::BlockingManager {$(
            $(#[$doc])*
            pub fn $name $(<$g: $bound>)? (&self $(, $arg: $ty)*) -> Result<$blocking, Error> {
                self.create_dynamic($typeid, $args)
                    .map($crate::proxy::Proxy::from_base)
            }
        )*}
    };
}
pub(crate) use constructors;

/// Converts the items a Rust factory or method gives a built-in object into values: plain
/// values only, as the references a proxy inside one needs are taken for a call's connection
/// (from a method that has a `&CallContext`, use the object's `new`).
pub(crate) fn initial_values<T: Serialize>(
    items: impl IntoIterator<Item = T>,
    typeid: &str,
) -> Result<Vec<Value>, Error> {
    items
        .into_iter()
        .map(|item| {
            let value = encode(&item)?;
            if value.tokens().is_empty() {
                Ok(value)
            } else {
                Err(Error::encode(
                    std::any::type_name::<T>(),
                    format!(
                        "a {typeid} made with from_items cannot hold proxies; make it with new(..., ctx) in a method that takes a &CallContext"
                    ),
                ))
            }
        })
        .collect()
}

/// Converts a typed element into a value, for sending.
pub(crate) fn encode<T: Serialize + ?Sized>(item: &T) -> Result<Value, Error> {
    to_value(item).map_err(|e| Error::encode(std::any::type_name::<T>(), e))
}

/// Converts typed elements into values, for sending.
pub(crate) fn encode_all<T: Serialize>(items: &[T]) -> Result<Vec<Value>, Error> {
    items.iter().map(encode).collect()
}

/// The common part of every typed built-in proxy: the raw proxy that `#[shared(proxies =
/// raw)]` generated from the type's server impl (`EventObjectRawProxy`), whose methods the
/// typed layer calls, and the element type `T` it converts.
pub(crate) struct Typed<T, R> {
    pub(crate) raw: R,
    _element: PhantomData<fn() -> T>,
}

impl<T, R: Clone> Clone for Typed<T, R> {
    fn clone(&self) -> Self {
        Typed {
            raw: self.raw.clone(),
            _element: PhantomData,
        }
    }
}

impl<T, R: Proxy> std::fmt::Debug for Typed<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.raw.base().fmt(f)
    }
}

impl<T, R: Proxy> Proxy for Typed<T, R> {
    fn from_base(base: crate::proxy::BaseProxy) -> Self {
        Typed {
            raw: R::from_base(base),
            _element: PhantomData,
        }
    }

    fn base(&self) -> &crate::proxy::BaseProxy {
        self.raw.base()
    }
}

impl<T, R: Proxy> Serialize for Typed<T, R> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.base().serialize(serializer)
    }
}

impl<'de, T, R: Proxy> serde::Deserialize<'de> for Typed<T, R> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        crate::proxy::BaseProxy::deserialize(deserializer).map(Proxy::from_base)
    }
}

impl<T, R: Proxy> Typed<T, R> {
    /// Decodes a value a method returned, taking over the proxies inside it.
    pub(crate) fn decode<V: DeserializeOwned>(&self, value: Value) -> Result<V, Error> {
        crate::proxy::decode_value(self.base().connection(), value)
    }
}

/// Implements the pieces every typed built-in proxy shares: `Proxy`, serde (a proxy stored in a
/// container or passed to a process), `with_timeout`, and the blocking twin's type, whose
/// methods `#[blocking_twin]` generates from the async proxy's.
macro_rules! builtin_proxy {
    (
        $(#[$doc:meta])*
        $proxy:ident $(<$($g:ident),*>)? for $object:ty, $(#[$bdoc:meta])* $blocking:ident
    ) => {
        $crate::sync::builtin_proxy!(@around $proxy $(<$($g),*>)? for $object);

        impl$(<$($g),*>)? $proxy$(<$($g),*>)? {
            /// The same proxy with the blocking API.
            pub fn into_blocking(self) -> $blocking$(<$($g),*>)? {
                $blocking(self)
            }

            /// The same proxy, its calls with the deadline `timeout` instead of the
            /// connection's default: a call that misses it fails with `Error::Timeout` (and
            /// the server stops a call still waiting, such as a `get` on an empty queue).
            pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
                // The raw proxy is defined in this module, by `#[shared(proxies = raw)]`.
                self.0.raw.base.set_timeout(Some(timeout));
                self
            }
        }

        $(#[$bdoc])*
        pub struct $blocking$(<$($g),*>)?($proxy$(<$($g),*>)?);

        $crate::sync::builtin_proxy!(@around $blocking $(<$($g),*>)? for $object);

        impl$(<$($g: $crate::sync::Element),*>)? $blocking$(<$($g),*>)? {
            /// The same proxy with the async API.
            pub fn into_async(self) -> $proxy$(<$($g),*>)? {
                self.0
            }

            /// The same proxy, its calls with the deadline `timeout` instead of the
            /// connection's default: a call that misses it fails with `Error::Timeout`.
            pub fn with_timeout(self, timeout: std::time::Duration) -> Self {
                $blocking(self.0.with_timeout(timeout))
            }
        }
    };
    // `Proxy`, `Clone`, `Debug` and serde for `$wrapper`, a tuple struct around a proxy (the
    // `Typed` layer, or the async proxy in its blocking twin), as the proxy inside does them.
    (@around $wrapper:ident $(<$($g:ident),*>)? for $object:ty) => {
        impl$(<$($g),*>)? $crate::proxy::Proxy for $wrapper$(<$($g),*>)? {
            fn from_base(base: $crate::proxy::BaseProxy) -> Self {
                $wrapper($crate::proxy::Proxy::from_base(base))
            }
            fn base(&self) -> &$crate::proxy::BaseProxy {
                $crate::proxy::Proxy::base(&self.0)
            }
            fn object_type() -> Option<&'static str> {
                Some(std::any::type_name::<$object>())
            }
        }

        impl$(<$($g),*>)? Clone for $wrapper$(<$($g),*>)? {
            fn clone(&self) -> Self {
                $wrapper(self.0.clone())
            }
        }

        impl$(<$($g),*>)? std::fmt::Debug for $wrapper$(<$($g),*>)? {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_tuple(stringify!($wrapper)).field(&self.0).finish()
            }
        }

        impl$(<$($g),*>)? serde::Serialize for $wrapper$(<$($g),*>)? {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(serializer)
            }
        }

        impl<'de $($(, $g)*)?> serde::Deserialize<'de> for $wrapper$(<$($g),*>)? {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                serde::Deserialize::deserialize(deserializer).map($wrapper)
            }
        }
    };
}
pub(crate) use builtin_proxy;
