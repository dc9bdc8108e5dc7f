//! `Namespace`: named attributes of any serde type (Python's `NamespaceProxy`).

use indexmap::IndexMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::sync::{builtin_proxy, encode, typeids, Stored, Typed};
use crate::value::Value;

/// The server side of a namespace: attributes by name, in the order they were first set.
pub struct NamespaceObject {
    attributes: IndexMap<String, Stored>,
}

impl NamespaceObject {
    /// A namespace with `attributes` (the arguments of `create`).
    pub fn new(
        (attributes,): (Vec<(String, Value)>,),
        ctx: &CallContext,
    ) -> Result<NamespaceObject, RemoteError> {
        let attributes = attributes
            .into_iter()
            .map(|(name, value)| Ok((name, Stored::new(ctx, value, typeids::NAMESPACE, "create")?)))
            .collect::<Result<_, RemoteError>>()?;
        Ok(NamespaceObject { attributes })
    }
}

fn no_attribute(method: &str, name: &str) -> RemoteError {
    RemoteError::new(
        RemoteErrorKind::Attribute,
        typeids::NAMESPACE,
        method,
        format!("'Namespace' object has no attribute '{name}'"),
    )
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [getattr, setattr, delattr, hasattr]
)]
impl NamespaceObject {
    /// The attribute `name`; an `Attribute` error when it is not set.
    pub fn getattr(&self, name: &str, ctx: &CallContext) -> Result<Value, RemoteError> {
        self.attributes
            .get(name)
            .map(|stored| stored.give(ctx))
            .ok_or_else(|| no_attribute("getattr", name))
    }

    /// Sets the attribute `name`.
    pub fn setattr(
        &mut self,
        name: &str,
        value: Value,
        ctx: &CallContext,
    ) -> Result<(), RemoteError> {
        let stored = Stored::new(ctx, value, typeids::NAMESPACE, "setattr")?;
        self.attributes.insert(name.to_owned(), stored);
        Ok(())
    }

    /// Removes the attribute `name`; an `Attribute` error when it is not set.
    pub fn delattr(&mut self, name: &str) -> Result<(), RemoteError> {
        self.attributes
            .shift_remove(name)
            .map(drop)
            .ok_or_else(|| no_attribute("delattr", name))
    }

    /// Whether the attribute `name` is set.
    pub fn hasattr(&self, name: &str) -> bool {
        self.attributes.contains_key(name)
    }

    /// The names of the attributes, in the order they were first set.
    pub fn names(&self) -> Vec<String> {
        self.attributes.keys().cloned().collect()
    }

    /// Every attribute and its value, in the order they were first set.
    pub fn items(&self, ctx: &CallContext) -> Vec<(String, Value)> {
        self.attributes
            .iter()
            .map(|(name, stored)| (name.clone(), stored.give(ctx)))
            .collect()
    }
}

/// A shared namespace (Python's `NamespaceProxy`): attributes of any serde type, by name.
pub struct NamespaceProxy(Typed<(), NamespaceObjectRawProxy>);

#[crate::blocking_twin(NamespaceBlockingProxy)]
impl NamespaceProxy {
    /// The attribute `name`, decoded as `T`; an `Attribute` error when it is not set, a decode
    /// error when it holds another type.
    pub async fn get<T: DeserializeOwned>(&self, name: &str) -> Result<T, Error> {
        self.0.decode(self.0.raw.getattr(name).await?)
    }

    /// Sets the attribute `name` to `value`.
    pub async fn set<T: Serialize>(&self, name: &str, value: &T) -> Result<(), Error> {
        self.0.raw.setattr(name, encode(value)?).await
    }

    /// Removes the attribute `name`; an `Attribute` error when it is not set.
    pub async fn del(&self, name: &str) -> Result<(), Error> {
        self.0.raw.delattr(name).await
    }

    /// Whether the attribute `name` is set.
    pub async fn has(&self, name: &str) -> Result<bool, Error> {
        self.0.raw.hasattr(name).await
    }

    /// The names of the attributes, in the order they were first set.
    pub async fn names(&self) -> Result<Vec<String>, Error>;
}

builtin_proxy! {
    NamespaceProxy for NamespaceObject,
    /// A shared namespace (Python's `NamespaceProxy`), with blocking methods.
    NamespaceBlockingProxy
}

/// Registers `Namespace` under its typeid.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    use crate::registry::Register;
    registry.register(Register::factory_with_context(
        typeids::NAMESPACE,
        NamespaceObject::new,
    ))?;
    Ok(())
}
