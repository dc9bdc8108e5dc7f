//! Creating the built-in containers from a manager: Python's `manager.list(...)`,
//! `manager.dict(...)`, `manager.Namespace()`, `manager.Value(...)`, `manager.Array(...)`.

use serde::Serialize;

use crate::error::Error;
use crate::manager::{BlockingManager, Manager};
use crate::proxy::Proxy;
use crate::sync::{
    encode, typeids, ArrayBlockingProxy, ArrayProxy, DictBlockingProxy, DictProxy, Element,
    ListBlockingProxy, ListProxy, NamespaceBlockingProxy, NamespaceProxy, ValueBlockingProxy,
    ValueProxy,
};
use crate::value::Value;

fn values<T: Serialize>(items: &[T]) -> Result<Vec<Value>, Error> {
    items.iter().map(encode).collect()
}

fn pairs<K: Serialize, V: Serialize>(items: &[(K, V)]) -> Result<Vec<(Value, Value)>, Error> {
    items
        .iter()
        .map(|(k, v)| Ok((encode(k)?, encode(v)?)))
        .collect()
}

impl Manager {
    /// A new shared list holding `items` (Python: `manager.list(items)`).
    pub async fn list<T: Element>(&self, items: &[T]) -> Result<ListProxy<T>, Error> {
        let base = self
            .create_dynamic(typeids::LIST, (values(items)?,))
            .await?;
        Ok(Proxy::from_base(base))
    }

    /// A new shared dictionary holding `items` (Python: `manager.dict(items)`).
    pub async fn dict<K: Element, V: Element>(
        &self,
        items: &[(K, V)],
    ) -> Result<DictProxy<K, V>, Error> {
        let base = self.create_dynamic(typeids::DICT, (pairs(items)?,)).await?;
        Ok(Proxy::from_base(base))
    }

    /// A new, empty shared namespace (Python: `manager.Namespace()`).
    pub async fn namespace(&self) -> Result<NamespaceProxy, Error> {
        let base = self
            .create_dynamic(typeids::NAMESPACE, (Vec::<(String, Value)>::new(),))
            .await?;
        Ok(Proxy::from_base(base))
    }

    /// A new shared value holding `value` (Python: `manager.Value(typecode, value)`).
    pub async fn value<T: Element>(&self, value: &T) -> Result<ValueProxy<T>, Error> {
        let base = self
            .create_dynamic(typeids::VALUE, (encode(value)?,))
            .await?;
        Ok(Proxy::from_base(base))
    }

    /// A new fixed-length shared array holding `items` (Python: `manager.Array(typecode, items)`).
    pub async fn array<T: Element>(&self, items: &[T]) -> Result<ArrayProxy<T>, Error> {
        let base = self
            .create_dynamic(typeids::ARRAY, (values(items)?,))
            .await?;
        Ok(Proxy::from_base(base))
    }
}

impl BlockingManager {
    /// A new shared list holding `items` (Python: `manager.list(items)`).
    pub fn list<T: Element>(&self, items: &[T]) -> Result<ListBlockingProxy<T>, Error> {
        let base = self.create_dynamic(typeids::LIST, (values(items)?,))?;
        Ok(Proxy::from_base(base))
    }

    /// A new shared dictionary holding `items` (Python: `manager.dict(items)`).
    pub fn dict<K: Element, V: Element>(
        &self,
        items: &[(K, V)],
    ) -> Result<DictBlockingProxy<K, V>, Error> {
        let base = self.create_dynamic(typeids::DICT, (pairs(items)?,))?;
        Ok(Proxy::from_base(base))
    }

    /// A new, empty shared namespace (Python: `manager.Namespace()`).
    pub fn namespace(&self) -> Result<NamespaceBlockingProxy, Error> {
        let base = self.create_dynamic(typeids::NAMESPACE, (Vec::<(String, Value)>::new(),))?;
        Ok(Proxy::from_base(base))
    }

    /// A new shared value holding `value` (Python: `manager.Value(typecode, value)`).
    pub fn value<T: Element>(&self, value: &T) -> Result<ValueBlockingProxy<T>, Error> {
        let base = self.create_dynamic(typeids::VALUE, (encode(value)?,))?;
        Ok(Proxy::from_base(base))
    }

    /// A new fixed-length shared array holding `items` (Python: `manager.Array(typecode, items)`).
    pub fn array<T: Element>(&self, items: &[T]) -> Result<ArrayBlockingProxy<T>, Error> {
        let base = self.create_dynamic(typeids::ARRAY, (values(items)?,))?;
        Ok(Proxy::from_base(base))
    }
}
