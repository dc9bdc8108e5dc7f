//! `Value`: one shared value (Python's `ValueProxy`), and `Array`: a fixed-length shared
//! sequence (Python's `Array`).

use crate::context::CallContext;
use crate::error::{Error, RemoteError, RemoteErrorKind};
use crate::sync::list::indexed_methods;
use crate::sync::sequence::{sequence_object, ARRAY};
use crate::sync::typecode::{coerce, CreateArgs, TYPECODES};
use crate::sync::{builtin_proxy, encode, encode_all, typeids, Element, Stored, Typed};
use crate::value::Value;

/// The server side of a shared value.
pub struct ValueObject {
    value: Stored,
    typecode: Option<String>,
}

impl ValueObject {
    /// A shared value holding `value` (the argument of `create`; a CPython client adds the
    /// typecode of `manager.Value(typecode, value)`, which Python does not check either).
    pub fn new(
        CreateArgs(value, typecode): CreateArgs<Value>,
        ctx: &CallContext,
    ) -> Result<ValueObject, RemoteError> {
        Ok(ValueObject {
            value: Stored::new(ctx, value, typeids::VALUE, "create")?,
            typecode,
        })
    }
}

#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [get, set, typed]
)]
impl ValueObject {
    /// The value.
    pub fn get(&self, ctx: &CallContext) -> Value {
        self.value.give(ctx)
    }

    /// Replaces the value.
    pub fn set(&mut self, value: Value, ctx: &CallContext) -> Result<(), RemoteError> {
        self.value = Stored::new(ctx, value, typeids::VALUE, "set")?;
        Ok(())
    }

    /// The typecode given at creation, if any, and the value.
    pub fn typed(&self, ctx: &CallContext) -> (Option<String>, Value) {
        (self.typecode.clone(), self.value.give(ctx))
    }
}

/// One shared value of type `T` (Python's `ValueProxy`), with async methods.
pub struct ValueProxy<T>(Typed<T, ValueObjectRawProxy>);

#[crate::blocking_twin(ValueBlockingProxy)]
impl<T: Element> ValueProxy<T> {
    /// The value.
    pub async fn get(&self) -> Result<T, Error> {
        self.0.decode(self.0.raw.get().await?)
    }

    /// Replaces the value.
    pub async fn set(&self, value: &T) -> Result<(), Error> {
        self.0.raw.set(encode(value)?).await
    }
}

builtin_proxy! {
    ValueProxy<T> for ValueObject,
    /// One shared value of type `T` (Python's `ValueProxy`), with blocking methods.
    ValueBlockingProxy
}

/// The server side of a shared array: a sequence whose length never changes.
pub struct ArrayObject {
    items: Vec<Stored>,
    typecode: Option<String>,
}

impl ArrayObject {
    /// An array of `items` (the argument of `create`). A CPython client adds the typecode of
    /// `manager.Array(typecode, items)`; then every item must be what `array.array` of that
    /// typecode takes (see [`coerce`]), as in Python.
    pub fn new(
        CreateArgs(items, typecode): CreateArgs<Vec<Value>>,
        ctx: &CallContext,
    ) -> Result<ArrayObject, RemoteError> {
        if let Some(code) = &typecode {
            if !TYPECODES.contains(&code.as_str()) {
                return Err(RemoteError::new(
                    RemoteErrorKind::InvalidValue,
                    typeids::ARRAY,
                    "create",
                    "bad typecode (must be b, B, u, h, H, i, I, l, L, q, Q, f or d)",
                ));
            }
        }
        let items = items
            .into_iter()
            .map(|item| {
                let item = coerce(typecode.as_deref(), item, "create")?;
                Stored::new(ctx, item, typeids::ARRAY, "create")
            })
            .collect::<Result<_, _>>()?;
        Ok(ArrayObject { items, typecode })
    }

    /// What the array stores of `item`: the item as `array.array` of the typecode takes it.
    fn admit(&self, item: Value, method: &str) -> Result<Value, RemoteError> {
        coerce(self.typecode.as_deref(), item, method)
    }
}

sequence_object! {
#[crate::shared(
    crate = "crate",
    proxies = raw,
    // Bounded by their arguments and results, never by the size of the object, and never
    // waiting: no worker thread needed (see `server::quick`).
    quick = [len, is_empty, getitem, setitem]
)]
impl ArrayObject as ARRAY {
    /// Replaces every item; `items` must have the array's length.
    pub fn assign(&mut self, items: Vec<Value>, ctx: &CallContext) -> Result<(), RemoteError> {
        if items.len() != self.items.len() {
            return Err(RemoteError::new(
                RemoteErrorKind::InvalidValue,
                typeids::ARRAY,
                "assign",
                format!(
                    "an array of {} items cannot take {} items: its length is fixed",
                    self.items.len(),
                    items.len()
                ),
            ));
        }
        self.items = items
            .into_iter()
            .map(|item| {
                let item = coerce(self.typecode.as_deref(), item, "assign")?;
                Stored::new(ctx, item, typeids::ARRAY, "assign")
            })
            .collect::<Result<_, _>>()?;
        Ok(())
    }

    /// Every item, in order.
    pub fn to_vec(&self, ctx: &CallContext) -> Vec<Value> {
        self.items.iter().map(|stored| stored.give(ctx)).collect()
    }

    /// The typecode given at creation, if any, and every item.
    pub fn typed(&self, ctx: &CallContext) -> (Option<String>, Vec<Value>) {
        (self.typecode.clone(), self.to_vec(ctx))
    }
}
}

/// A fixed-length shared array of `T` (Python's `Array`), with async methods.
pub struct ArrayProxy<T>(Typed<T, ArrayObjectRawProxy>);

indexed_methods!(ArrayProxy, ArrayBlockingProxy);

#[crate::blocking_twin(ArrayBlockingProxy)]
impl<T: Element> ArrayProxy<T> {
    /// Replaces every item; `items` must have the array's length.
    pub async fn assign(&self, items: &[T]) -> Result<(), Error> {
        self.0.raw.assign(encode_all(items)?).await
    }

    /// Every item, in order.
    pub async fn to_vec(&self) -> Result<Vec<T>, Error> {
        self.0.decode(Value::List(self.0.raw.to_vec().await?))
    }
}

builtin_proxy! {
    ArrayProxy<T> for ArrayObject,
    /// A fixed-length shared array of `T` (Python's `Array`), with blocking methods.
    ArrayBlockingProxy
}

/// Registers `Value` and `Array` under their typeids.
pub(crate) fn register(registry: &mut crate::registry::Registry) -> Result<(), Error> {
    use crate::registry::Register;
    registry.register(Register::factory_with_context(
        typeids::VALUE,
        ValueObject::new,
    ))?;
    registry.register(Register::factory_with_context(
        typeids::ARRAY,
        ArrayObject::new,
    ))?;
    Ok(())
}
