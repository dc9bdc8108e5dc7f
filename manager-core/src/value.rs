//! A self-describing, codec-neutral value: what the built-in shared types store.
//!
//! A server that hosts a list or a queue does not know the Rust type its clients put in it, and a
//! Python client and a Rust client must be able to share one queue. So built-in types store
//! [`Value`]s: a small tree of none, booleans, integers, floats, strings, bytes, lists, tuples,
//! maps (in insertion order) and proxy tokens. A Rust `i64` and a Python `int` are the same
//! stored value. Typed clients convert on their side: [`to_value`] turns any `Serialize` type into
//! a value and [`from_value`] turns a value back into any `Deserialize` type, with a clear error
//! when the shapes do not match.
//!
//! The mapping follows serde's externally tagged data model (as JSON does): structs become maps
//! with string keys, unit variants become strings, other variants a one-entry map from the
//! variant's name to its content; `Option::None` and `()` become `None`.

use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};
use serde::ser;
use serde::{Deserialize, Serialize, Serializer};

use crate::wire::Token;

/// A self-describing value, stored by the built-in shared types.
///
/// Converting a `Value` with [`to_value`] or [`from_value`] gives back the same value, so a
/// typed container of `Value`s stores them as they are. Decoding refuses values nested deeper
/// than [`MAX_DEPTH`], so that no input can overflow the stack of the process decoding it.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename = "$manager::Value")]
pub enum Value {
    /// No value: `None`, `()`.
    #[default]
    None,
    /// A boolean.
    Bool(bool),
    /// An integer (any Rust integer up to 64 bits, and `i128` within its range).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A string (also a `char`).
    Str(String),
    /// A byte string.
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A sequence (`Vec`, slices, sets).
    List(Vec<Value>),
    /// A fixed-size sequence (tuples, tuple structs).
    Tuple(Vec<Value>),
    /// A map in insertion order (maps, structs, enum variants with content).
    Map(Vec<(Value, Value)>),
    /// A reference to a server-side object: a proxy stored inside a container.
    Proxy(Token),
    /// A Python `set`, in the order it was pickled; equal to any set or frozenset of the same
    /// items. A Rust client reads it as a sequence (`Vec<T>`, `HashSet<T>`).
    Set(Vec<Value>),
    /// A Python `frozenset`, as [`Value::Set`].
    FrozenSet(Vec<Value>),
    /// A Python `bytearray`; equal to the bytes it holds. A Rust client reads it as bytes.
    ByteArray(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A Python `int` beyond `i128`, as little-endian two's complement in its shortest form
    /// (as pickle carries it). Reading it as a Rust integer is an error.
    BigInt(#[serde(with = "serde_bytes")] Vec<u8>),
    /// A Python object the server keeps as its pickle (a `datetime`, a `Decimal`, an
    /// instance of a class): see [`Opaque`]. Reading it as any other Rust type is an error
    /// that names its class.
    Opaque(Opaque),
}

pub use crate::value_py::Opaque;

/// How deeply a [`Value`] may nest when it is decoded.
pub const MAX_DEPTH: usize = 128;

thread_local! {
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    /// A [`Value`] on its way out of a [`Value`] deserializer into a [`Value`] (see
    /// [`VALUE_NEWTYPE`]).
    static HANDED: std::cell::Cell<Option<Value>> = const { std::cell::Cell::new(None) };
}

/// The newtype name through which a [`Value`] asks its deserializer for itself. Any other
/// deserializer sees a newtype, which serde's formats (postcard, JSON) read as what it wraps, the
/// value's usual form. A [`Value`] deserializer (the arguments of a CPython client's call, a
/// `Value` read back from a `Value`) hands itself over whole instead of being taken apart and
/// rebuilt node by node.
const VALUE_NEWTYPE: &str = "$manager::Value::whole";

/// The derived decoding of [`Value`], wrapped by its depth-checking `Deserialize`.
#[derive(Deserialize)]
#[serde(remote = "Value", rename = "$manager::Value")]
enum ValueDef {
    None,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Proxy(Token),
    Set(Vec<Value>),
    FrozenSet(Vec<Value>),
    ByteArray(#[serde(with = "serde_bytes")] Vec<u8>),
    BigInt(#[serde(with = "serde_bytes")] Vec<u8>),
    Opaque(Opaque),
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        struct Level;
        impl Drop for Level {
            fn drop(&mut self) {
                DEPTH.with(|depth| depth.set(depth.get().saturating_sub(1)));
            }
        }
        let depth = DEPTH.with(|depth| {
            depth.set(depth.get() + 1);
            depth.get()
        });
        let _level = Level;
        if depth > MAX_DEPTH {
            return Err(de::Error::custom(format!(
                "a value nested more than {MAX_DEPTH} levels deep"
            )));
        }
        read_newtype(deserializer, VALUE_NEWTYPE, "a value")
    }
}

impl<'de> Carried<'de> for Value {
    fn read<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        ValueDef::deserialize(deserializer)
    }

    fn unit() -> Option<Result<Value, String>> {
        Some(
            HANDED
                .take()
                .ok_or_else(|| "a unit where a value was expected".to_string()),
        )
    }
}

/// What one of the wire's named newtype structs carries (a whole [`Value`], a proxy's token),
/// for [`read_newtype`].
pub(crate) trait Carried<'de>: Sized {
    /// Decodes the content of the newtype struct.
    fn read<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;

    /// What a unit in the newtype's place stands for (a value handed over beside the
    /// encoding); `None`, the default, refuses it as serde does.
    fn unit() -> Option<Result<Self, String>> {
        None
    }
}

/// The visitor of a newtype struct carrying a `T`, `expecting` naming it in errors.
struct Newtype<T> {
    expecting: &'static str,
    carried: std::marker::PhantomData<fn() -> T>,
}

impl<'de, T: Carried<'de>> Visitor<'de> for Newtype<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expecting)
    }

    fn visit_newtype_struct<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<T, D::Error> {
        T::read(deserializer)
    }

    fn visit_unit<E: de::Error>(self) -> Result<T, E> {
        match T::unit() {
            Some(carried) => carried.map_err(E::custom),
            None => Err(E::invalid_type(de::Unexpected::Unit, &self)),
        }
    }
}

/// Reads the newtype struct `name` carrying a `T` (`expecting` names it in errors).
pub(crate) fn read_newtype<'de, D: serde::Deserializer<'de>, T: Carried<'de>>(
    deserializer: D,
    name: &'static str,
    expecting: &'static str,
) -> Result<T, D::Error> {
    deserializer.deserialize_newtype_struct(
        name,
        Newtype {
            expecting,
            carried: std::marker::PhantomData,
        },
    )
}

/// Equality as Python's: `True == 1 == 1.0` (so they are one key of a dict, and `1.0 in [1]`),
/// `0.0 == -0.0`; a float is equal to itself bitwise too, so that NaN can be found and be a key
/// (Python finds a NaN in a container by identity). Everything else compares by kind and
/// contents.
impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::None, Value::None) => true,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits() || a == b,
            (Value::Bool(_) | Value::Int(_) | Value::Float(_), _)
            | (_, Value::Bool(_) | Value::Int(_) | Value::Float(_)) => {
                match (self.exact_int(), other.exact_int()) {
                    (Some(a), Some(b)) => a == b,
                    _ => false,
                }
            }
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a) | Value::ByteArray(a), Value::Bytes(b) | Value::ByteArray(b)) => {
                a == b
            }
            (Value::Set(a) | Value::FrozenSet(a), Value::Set(b) | Value::FrozenSet(b)) => {
                same_items(a, b)
            }
            (Value::BigInt(a), Value::BigInt(b)) => a == b,
            (Value::Opaque(a), Value::Opaque(b)) => a == b,
            (Value::List(a), Value::List(b)) => a == b,
            (Value::Tuple(a), Value::Tuple(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Proxy(a), Value::Proxy(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Value {}

/// Whether two sets hold the same items, whatever their order.
fn same_items(a: &[Value], b: &[Value]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let b: std::collections::HashSet<&Value> = b.iter().collect();
    a.iter().all(|item| b.contains(item))
}

/// Consistent with equality: a bool, an int and a float of an integral value hash alike; a
/// set and a frozenset hash alike whatever their order; bytes and a bytearray alike.
impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        if let Some(int) = self.exact_int() {
            std::mem::discriminant(&Value::Int(0)).hash(state);
            int.hash(state);
            return;
        }
        match self {
            Value::ByteArray(b) => {
                std::mem::discriminant(&Value::Bytes(Vec::new())).hash(state);
                b.hash(state);
                return;
            }
            Value::Set(items) | Value::FrozenSet(items) => {
                std::mem::discriminant(&Value::Set(Vec::new())).hash(state);
                // The same for any order: a sum of the items' own hashes, each taken with a
                // fixed-key hasher.
                let sum = items.iter().fold(0u64, |sum, item| {
                    let mut hasher = std::hash::DefaultHasher::new();
                    item.hash(&mut hasher);
                    sum.wrapping_add(hasher.finish())
                });
                sum.hash(state);
                return;
            }
            _ => {}
        }
        std::mem::discriminant(self).hash(state);
        match self {
            Value::None | Value::Bool(_) | Value::Int(_) => {}
            Value::Float(f) => f.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
            Value::List(items) | Value::Tuple(items) => items.hash(state),
            Value::Map(entries) => entries.hash(state),
            Value::Proxy(token) => token.hash(state),
            Value::BigInt(b) => b.hash(state),
            Value::Opaque(o) => o.hash(state),
            Value::Set(_) | Value::FrozenSet(_) | Value::ByteArray(_) => {}
        }
    }
}

impl Value {
    /// The integer a bool, an int or an integral float stands for, as Python's numeric
    /// equality sees it.
    pub(crate) fn exact_int(&self) -> Option<i128> {
        match *self {
            Value::Bool(b) => Some(i128::from(b)),
            Value::Int(i) => Some(i),
            // In range (|f| < 2^127) and integral: the conversion is exact.
            Value::Float(f) if f.fract() == 0.0 && f.abs() < 1.7014118346046923e38 => {
                Some(f as i128)
            }
            _ => None,
        }
    }

    /// Orders two values as Python's `<` does: numbers (bools, ints, floats) by value, strs and
    /// bytes by their code points and bytes, lists with lists and tuples with tuples item by
    /// item. Anything else (`None`, dicts, proxies, or two kinds Python does not compare) is
    /// Python's `TypeError` message.
    pub fn python_cmp(&self, other: &Value) -> Result<std::cmp::Ordering, String> {
        use std::cmp::Ordering;
        let number = |v: &Value| match *v {
            Value::Bool(b) => Some(f64::from(u8::from(b))),
            Value::Int(i) => Some(i as f64),
            Value::Float(f) => Some(f),
            Value::BigInt(ref b) => Some(crate::value_py::big_to_f64(b)),
            _ => None,
        };
        match (self, other) {
            (Value::Str(a), Value::Str(b)) => Ok(a.cmp(b)),
            (Value::Bytes(a), Value::Bytes(b)) => Ok(a.cmp(b)),
            (Value::List(a), Value::List(b)) | (Value::Tuple(a), Value::Tuple(b)) => {
                for (x, y) in a.iter().zip(b) {
                    if x != y {
                        return x.python_cmp(y);
                    }
                }
                Ok(a.len().cmp(&b.len()))
            }
            _ => match (self.exact_int(), other.exact_int()) {
                (Some(a), Some(b)) => Ok(a.cmp(&b)),
                _ => match (number(self), number(other)) {
                    // NaN compares as neither smaller nor larger, as in Python.
                    (Some(a), Some(b)) => Ok(a.partial_cmp(&b).unwrap_or(Ordering::Equal)),
                    _ => Err(format!(
                        "'<' not supported between instances of '{}' and '{}'",
                        self.python_type(),
                        other.python_type()
                    )),
                },
            },
        }
    }

    /// The name of the Python type a CPython client sees for this value.
    pub fn python_type(&self) -> &str {
        match self {
            Value::None => "NoneType",
            Value::Map(_) => "dict",
            Value::Proxy(_) => "BaseProxy",
            Value::BigInt(_) => "int",
            Value::Opaque(o) => o.type_name(),
            other => other.kind(),
        }
    }

    /// The name of the value's kind, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "none",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Map(_) => "map",
            Value::Proxy(_) => "proxy",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::ByteArray(_) => "bytearray",
            Value::BigInt(_) => "big int",
            Value::Opaque(_) => "opaque Python object",
        }
    }

    /// Every proxy token inside this value, depth first.
    pub fn tokens(&self) -> Vec<&Token> {
        let mut found = Vec::new();
        self.collect_tokens(&mut found);
        found
    }

    fn collect_tokens<'a>(&'a self, found: &mut Vec<&'a Token>) {
        match self {
            Value::Proxy(token) => found.push(token),
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => items.iter().for_each(|v| v.collect_tokens(found)),
            Value::Map(entries) => entries.iter().for_each(|(k, v)| {
                k.collect_tokens(found);
                v.collect_tokens(found);
            }),
            _ => {}
        }
    }
}

impl fmt::Display for Value {
    /// A Python-like rendering: `None`, `True`, `3`, `'text'`, `b'..'`, `[1, 2]`, `{'a': 1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            Value::None => f.write_str("None"),
            Value::Bool(true) => f.write_str("True"),
            Value::Bool(false) => f.write_str("False"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                if items.len() == 1 {
                    f.write_str(",")?;
                }
                f.write_str(")")
            }
            Value::Map(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            Value::Proxy(token) => write!(
                f,
                "<proxy {} #{} at {}>",
                token.typeid, token.id, token.address
            ),
            Value::Set(items) | Value::FrozenSet(items) => {
                let frozen = matches!(self, Value::FrozenSet(_));
                match (frozen, items.is_empty()) {
                    (false, true) => f.write_str("set()"),
                    (true, true) => f.write_str("frozenset()"),
                    _ => {
                        f.write_str(if frozen { "frozenset({" } else { "{" })?;
                        seq(f, items)?;
                        f.write_str(if frozen { "})" } else { "}" })
                    }
                }
            }
            Value::ByteArray(b) => write!(f, "bytearray(b{:?})", String::from_utf8_lossy(b)),
            Value::BigInt(b) => match crate::value_py::big_decimal(b) {
                Some(digits) => f.write_str(&digits),
                None => write!(f, "<an int of {} bytes>", b.len()),
            },
            Value::Opaque(o) => write!(f, "{o}"),
        }
    }
}

/// Why a conversion to or from a [`Value`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ser::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

impl de::Error for ValueError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        ValueError(msg.to_string())
    }
}

/// Converts any serialisable value into a [`Value`].
pub fn to_value<T: Serialize + ?Sized>(value: &T) -> Result<Value, ValueError> {
    value.serialize(ValueSerializer)
}

/// Converts a [`Value`] into a `T`, failing clearly when the shapes do not match.
pub fn from_value<T: DeserializeOwned>(value: Value) -> Result<T, ValueError> {
    T::deserialize(value)
}

/// The serializer behind [`to_value`].
struct ValueSerializer;

fn int<T: TryInto<i128>>(v: T) -> Result<Value, ValueError> {
    v.try_into()
        .map(Value::Int)
        .map_err(|_| ValueError("integer out of range".into()))
}

fn tagged(variant: &str, content: Value) -> Value {
    Value::Map(vec![(Value::Str(variant.to_string()), content)])
}

impl Serializer for ValueSerializer {
    type Ok = Value;
    type Error = ValueError;
    type SerializeSeq = SeqBuilder;
    type SerializeTuple = SeqBuilder;
    type SerializeTupleStruct = SeqBuilder;
    type SerializeTupleVariant = SeqBuilder;
    type SerializeMap = MapBuilder;
    type SerializeStruct = MapBuilder;
    type SerializeStructVariant = MapBuilder;

    fn serialize_bool(self, v: bool) -> Result<Value, ValueError> {
        Ok(Value::Bool(v))
    }
    fn serialize_i8(self, v: i8) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_i16(self, v: i16) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_i32(self, v: i32) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_i64(self, v: i64) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_i128(self, v: i128) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_u8(self, v: u8) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_u16(self, v: u16) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_u32(self, v: u32) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_u64(self, v: u64) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_u128(self, v: u128) -> Result<Value, ValueError> {
        int(v)
    }
    fn serialize_f32(self, v: f32) -> Result<Value, ValueError> {
        Ok(Value::Float(f64::from(v)))
    }
    fn serialize_f64(self, v: f64) -> Result<Value, ValueError> {
        Ok(Value::Float(v))
    }
    fn serialize_char(self, v: char) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_str(self, v: &str) -> Result<Value, ValueError> {
        Ok(Value::Str(v.to_string()))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Value, ValueError> {
        Ok(Value::Bytes(v.to_vec()))
    }
    fn serialize_none(self) -> Result<Value, ValueError> {
        Ok(Value::None)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Value, ValueError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Value, ValueError> {
        Ok(Value::None)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Value, ValueError> {
        Ok(Value::None)
    }
    fn serialize_unit_variant(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Value, ValueError> {
        if name == VALUE_NAME {
            return Ok(Value::None);
        }
        Ok(Value::Str(variant.to_string()))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        if name == TOKEN_NEWTYPE {
            // A proxy serialised inside a value: keep it a proxy, not a map.
            return value
                .serialize(ValueSerializer)
                .and_then(|v| from_value::<Token>(v).map(Value::Proxy));
        }
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Value, ValueError> {
        let content = value.serialize(self)?;
        if name == VALUE_NAME {
            return own_variant(variant, content);
        }
        Ok(tagged(variant, content))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder::new(len, Shape::List))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder::new(Some(len), Shape::Tuple))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder::new(Some(len), Shape::Tuple))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<SeqBuilder, ValueError> {
        Ok(SeqBuilder::new(Some(len), Shape::Variant(variant)))
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder::new(len, None))
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder::new(Some(len), None))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<MapBuilder, ValueError> {
        Ok(MapBuilder::new(Some(len), Some(variant)))
    }
}

/// The name under which [`Value`] itself goes through serde, so that converting a `Value`
/// into a value is the identity rather than an externally tagged map.
const VALUE_NAME: &str = "$manager::Value";

/// Rebuilds a [`Value`] from its own variant, serialised through [`ValueSerializer`].
fn own_variant(variant: &str, content: Value) -> Result<Value, ValueError> {
    Ok(match (variant, content) {
        ("Tuple", Value::List(items)) => Value::Tuple(items),
        ("Map", Value::List(entries)) => Value::Map(
            entries
                .into_iter()
                .map(|entry| match entry {
                    Value::Tuple(mut pair) | Value::List(mut pair) if pair.len() == 2 => {
                        let value = pair.pop().expect("two items");
                        let key = pair.pop().expect("two items");
                        Ok((key, value))
                    }
                    other => Err(ValueError(format!(
                        "a map entry must be a pair, not a {}",
                        other.kind()
                    ))),
                })
                .collect::<Result<_, _>>()?,
        ),
        ("Proxy", content) => Value::Proxy(from_value(content)?),
        ("Set", Value::List(items)) => Value::Set(items),
        ("FrozenSet", Value::List(items)) => Value::FrozenSet(items),
        ("ByteArray", Value::Bytes(b)) => Value::ByteArray(b),
        ("BigInt", Value::Bytes(b)) => Value::BigInt(b),
        ("Opaque", content) => Value::Opaque(from_value(content)?),
        (_, content) => content,
    })
}

/// The variant name and content a [`Value`] deserialises itself from.
fn own_parts(value: Value) -> (&'static str, Value) {
    match value {
        Value::None => ("None", Value::None),
        Value::Bool(b) => ("Bool", Value::Bool(b)),
        Value::Int(i) => ("Int", Value::Int(i)),
        Value::Float(f) => ("Float", Value::Float(f)),
        Value::Str(s) => ("Str", Value::Str(s)),
        Value::Bytes(b) => ("Bytes", Value::Bytes(b)),
        Value::List(items) => ("List", Value::List(items)),
        Value::Tuple(items) => ("Tuple", Value::List(items)),
        Value::Map(entries) => (
            "Map",
            Value::List(
                entries
                    .into_iter()
                    .map(|(k, v)| Value::Tuple(vec![k, v]))
                    .collect(),
            ),
        ),
        Value::Proxy(token) => ("Proxy", Value::Map(token_entries(token))),
        Value::Set(items) => ("Set", Value::List(items)),
        Value::FrozenSet(items) => ("FrozenSet", Value::List(items)),
        Value::ByteArray(b) => ("ByteArray", Value::Bytes(b)),
        Value::BigInt(b) => ("BigInt", Value::Bytes(b)),
        Value::Opaque(o) => (
            "Opaque",
            Value::Map(vec![
                (
                    Value::Str("class".into()),
                    Value::Str(o.class().to_string()),
                ),
                (
                    Value::Str("pickle".into()),
                    Value::Bytes(o.pickle().to_vec()),
                ),
            ]),
        ),
    }
}

/// The newtype name under which a proxy serialises its token, so that [`to_value`] stores it as
/// [`Value::Proxy`].
pub const TOKEN_NEWTYPE: &str = "$manager::Token";

enum Shape {
    List,
    Tuple,
    Variant(&'static str),
}

struct SeqBuilder {
    items: Vec<Value>,
    shape: Shape,
}

impl SeqBuilder {
    fn new(len: Option<usize>, shape: Shape) -> Self {
        SeqBuilder {
            items: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            shape,
        }
    }

    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.items.push(value.serialize(ValueSerializer)?);
        Ok(())
    }

    fn finish(self) -> Value {
        match self.shape {
            Shape::List => Value::List(self.items),
            Shape::Tuple => Value::Tuple(self.items),
            Shape::Variant(variant) => tagged(variant, Value::Tuple(self.items)),
        }
    }
}

impl ser::SerializeSeq for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTuple for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleStruct for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeTupleVariant for SeqBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        self.push(value)
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

struct MapBuilder {
    entries: Vec<(Value, Value)>,
    key: Option<Value>,
    variant: Option<&'static str>,
}

impl MapBuilder {
    fn new(len: Option<usize>, variant: Option<&'static str>) -> Self {
        MapBuilder {
            entries: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
            variant,
        }
    }

    fn finish(self) -> Value {
        let map = Value::Map(self.entries);
        match self.variant {
            Some(variant) => tagged(variant, map),
            None => map,
        }
    }
}

impl ser::SerializeMap for MapBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ValueError> {
        self.key = Some(key.serialize(ValueSerializer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ValueError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ValueError("a map value came before its key".into()))?;
        self.entries.push((key, value.serialize(ValueSerializer)?));
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStruct for MapBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        self.entries.push((
            Value::Str(key.to_string()),
            value.serialize(ValueSerializer)?,
        ));
        Ok(())
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl ser::SerializeStructVariant for MapBuilder {
    type Ok = Value;
    type Error = ValueError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ValueError> {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> Result<Value, ValueError> {
        Ok(self.finish())
    }
}

impl Value {
    fn unexpected(&self) -> de::Unexpected<'_> {
        match self {
            Value::None => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Int(i) => match i64::try_from(*i) {
                Ok(i) => de::Unexpected::Signed(i),
                Err(_) => de::Unexpected::Other("a large integer"),
            },
            Value::Float(f) => de::Unexpected::Float(*f),
            Value::Str(s) => de::Unexpected::Str(s),
            Value::Bytes(b) => de::Unexpected::Bytes(b),
            Value::List(_) | Value::Tuple(_) => de::Unexpected::Seq,
            Value::Map(_) => de::Unexpected::Map,
            Value::Proxy(_) => de::Unexpected::Other("a proxy"),
            Value::Set(_) | Value::FrozenSet(_) => de::Unexpected::Seq,
            Value::ByteArray(b) => de::Unexpected::Bytes(b),
            Value::BigInt(_) => de::Unexpected::Other("an integer beyond 128 bits"),
            Value::Opaque(o) => de::Unexpected::Other(o.class()),
        }
    }

    fn invalid<E: de::Error>(&self, expected: &dyn de::Expected) -> E {
        match self {
            Value::Opaque(o) => E::custom(format_args!(
                "a Python {} object (kept by the server as its pickle, never built) cannot be \
                 read as {expected}; read it as a Value or an Opaque",
                o.class()
            )),
            _ => E::invalid_type(self.unexpected(), expected),
        }
    }
}

impl<'de> IntoDeserializer<'de, ValueError> for Value {
    type Deserializer = Value;
    fn into_deserializer(self) -> Value {
        self
    }
}

macro_rules! deserialize_int {
    ($($method:ident => $visit:ident: $ty:ty),* $(,)?) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
            match self {
                Value::Int(i) => match <$ty>::try_from(i) {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(ValueError(format!(
                        "integer {i} does not fit in {}", stringify!($ty)
                    ))),
                },
                other => Err(other.invalid(&visitor)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Value {
    type Error = ValueError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::None => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Int(i) => match (i64::try_from(i), u64::try_from(i)) {
                (Ok(n), _) => visitor.visit_i64(n),
                (_, Ok(n)) => visitor.visit_u64(n),
                _ => visitor.visit_i128(i),
            },
            Value::Float(f) => visitor.visit_f64(f),
            Value::Str(s) => visitor.visit_string(s),
            Value::Bytes(b) => visitor.visit_byte_buf(b),
            Value::List(items) | Value::Tuple(items) => visit_seq(items, visitor),
            Value::Map(entries) => visit_map(entries, visitor),
            Value::Proxy(token) => Value::Map(token_entries(token)).deserialize_any(visitor),
            Value::Set(items) | Value::FrozenSet(items) => visit_seq(items, visitor),
            Value::ByteArray(b) => visitor.visit_byte_buf(b),
            other @ (Value::BigInt(_) | Value::Opaque(_)) => Err(other.invalid(&visitor)),
        }
    }

    deserialize_int! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_i128 => visit_i128: i128,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
        deserialize_u128 => visit_u128: u128,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Float(f) => visitor.visit_f64(f),
            // An integer is a fine float (Python clients send 1 for 1.0).
            Value::Int(i) => visitor.visit_f64(i as f64),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Bool(b) => visitor.visit_bool(b),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Str(s) => visitor.visit_string(s),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_byte_buf(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Bytes(b) | Value::ByteArray(b) => visitor.visit_byte_buf(b),
            Value::Str(s) => visitor.visit_string(s),
            Value::List(items) | Value::Tuple(items) => visit_seq(items, visitor),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::None => visitor.visit_none(),
            other => visitor.visit_some(other),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            // An empty tuple is `()` too (the arguments of a method that takes none).
            Value::None => visitor.visit_unit(),
            Value::Tuple(items) | Value::List(items) if items.is_empty() => visitor.visit_unit(),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        if name == VALUE_NEWTYPE {
            // A `Value` is asking for itself: moved, not rebuilt.
            HANDED.set(Some(self));
            return visitor.visit_unit();
        }
        if name == TOKEN_NEWTYPE {
            return match self {
                Value::Proxy(token) => {
                    visitor.visit_newtype_struct(Value::Map(token_entries(token)))
                }
                other => Err(ValueError(format!(
                    "expected a proxy, found a {}",
                    other.kind()
                ))),
            };
        }
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::List(items)
            | Value::Tuple(items)
            | Value::Set(items)
            | Value::FrozenSet(items) => visit_seq(items, visitor),
            Value::Bytes(bytes) | Value::ByteArray(bytes) => visit_seq(
                bytes.into_iter().map(|b| Value::Int(b.into())).collect(),
                visitor,
            ),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        match self {
            Value::Map(entries) => visit_map(entries, visitor),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        match self {
            Value::Map(entries) => visit_map(entries, visitor),
            Value::List(items) | Value::Tuple(items) => visit_seq(items, visitor),
            Value::Proxy(token) => visit_map(token_entries(token), visitor),
            other => Err(other.invalid(&visitor)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        if name == VALUE_NAME {
            let (variant, content) = own_parts(self);
            return visitor.visit_enum(EnumAccess {
                variant: Value::Str(variant.to_string()),
                content,
            });
        }
        match self {
            Value::Str(variant) => visitor.visit_enum(variant.into_deserializer()),
            Value::Map(mut entries) if entries.len() == 1 => {
                let (variant, content) = entries.pop().expect("one entry");
                visitor.visit_enum(EnumAccess { variant, content })
            }
            other => Err(ValueError(format!(
                "expected an enum (a variant name, or a map of one variant to its content), found a {}",
                other.kind()
            ))),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        self.deserialize_string(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ValueError> {
        visitor.visit_unit()
    }
}

fn token_entries(token: Token) -> Vec<(Value, Value)> {
    let address = to_value(&token.address).unwrap_or(Value::None);
    vec![
        (Value::Str("typeid".into()), Value::Str(token.typeid)),
        (Value::Str("address".into()), address),
        (Value::Str("id".into()), Value::Int(token.id.into())),
        (
            Value::Str("instance".into()),
            Value::Int(token.instance.into()),
        ),
    ]
}

fn visit_seq<'de, V: Visitor<'de>>(items: Vec<Value>, visitor: V) -> Result<V::Value, ValueError> {
    let len = items.len();
    let mut access = de::value::SeqDeserializer::new(items.into_iter());
    let value = visitor.visit_seq(&mut access)?;
    access.end().map_err(|_| {
        ValueError(format!(
            "a sequence of {len} items has more items than expected"
        ))
    })?;
    Ok(value)
}

fn visit_map<'de, V: Visitor<'de>>(
    entries: Vec<(Value, Value)>,
    visitor: V,
) -> Result<V::Value, ValueError> {
    let mut access = de::value::MapDeserializer::new(entries.into_iter());
    let value = visitor.visit_map(&mut access)?;
    access.end()?;
    Ok(value)
}

struct EnumAccess {
    variant: Value,
    content: Value,
}

impl<'de> de::EnumAccess<'de> for EnumAccess {
    type Error = ValueError;
    type Variant = Value;

    fn variant_seed<V: de::DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, Value), ValueError> {
        Ok((seed.deserialize(self.variant)?, self.content))
    }
}

impl<'de> de::VariantAccess<'de> for Value {
    type Error = ValueError;

    fn unit_variant(self) -> Result<(), ValueError> {
        match self {
            Value::None => Ok(()),
            other => Err(ValueError(format!(
                "expected a unit variant, found a {}",
                other.kind()
            ))),
        }
    }

    fn newtype_variant_seed<T: de::DeserializeSeed<'de>>(
        self,
        seed: T,
    ) -> Result<T::Value, ValueError> {
        seed.deserialize(self)
    }

    fn tuple_variant<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_seq(self, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ValueError> {
        de::Deserializer::deserialize_map(self, visitor)
    }
}

#[cfg(test)]
mod numeric_equality_tests {
    use super::Value;
    use std::hash::{BuildHasher, RandomState};

    #[test]
    fn bools_ints_and_integral_floats_are_equal_and_hash_alike() {
        let hasher = RandomState::new();
        let same = [Value::Int(1), Value::Float(1.0), Value::Bool(true)];
        for a in &same {
            for b in &same {
                assert_eq!(a, b);
                assert_eq!(hasher.hash_one(a), hasher.hash_one(b), "{a:?} {b:?}");
            }
        }
        assert_eq!(Value::Float(0.0), Value::Float(-0.0));
        assert_eq!(
            hasher.hash_one(Value::Float(0.0)),
            hasher.hash_one(Value::Float(-0.0))
        );
        assert_eq!(Value::Bool(false), Value::Int(0));
        assert_ne!(Value::Float(0.5), Value::Int(0));
        assert_ne!(Value::Int(1), Value::Str("1".into()));
        assert_ne!(Value::None, Value::Int(0));
        let nan = Value::Float(f64::NAN);
        assert_eq!(
            nan,
            nan.clone(),
            "a NaN is found by itself, as by identity in Python"
        );
        assert_eq!(
            Value::Tuple(vec![Value::Int(1), Value::Float(2.0)]),
            Value::Tuple(vec![Value::Float(1.0), Value::Int(2)])
        );
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Shape {
        Dot,
        Circle(f64),
        Rect { w: u32, h: u32 },
        Pair(i8, i8),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Record {
        name: String,
        tags: Vec<String>,
        shape: Shape,
        maybe: Option<u64>,
        bytes: serde_bytes::ByteBuf,
        pair: (i32, bool),
        map: BTreeMap<String, i64>,
    }

    #[test]
    fn round_trips_rich_types() {
        for shape in [
            Shape::Dot,
            Shape::Circle(1.5),
            Shape::Rect { w: 2, h: 3 },
            Shape::Pair(-1, 1),
        ] {
            let record = Record {
                name: "r".into(),
                tags: vec!["a".into(), "b".into()],
                shape,
                maybe: Some(u64::MAX),
                bytes: serde_bytes::ByteBuf::from(vec![0, 255]),
                pair: (-7, true),
                map: BTreeMap::from([("k".to_string(), 9)]),
            };
            let value = to_value(&record).unwrap();
            let back: Record = from_value(value.clone()).unwrap();
            assert_eq!(back, record, "{value}");
        }
    }

    #[test]
    fn python_like_shapes() {
        assert_eq!(to_value(&7i64).unwrap(), Value::Int(7));
        assert_eq!(to_value(&7u8).unwrap(), to_value(&7i64).unwrap());
        assert_eq!(
            to_value(&(1, "x")).unwrap(),
            Value::Tuple(vec![Value::Int(1), Value::Str("x".into())])
        );
        assert_eq!(
            to_value(&vec![1, 2]).unwrap(),
            Value::List(vec![Value::Int(1), Value::Int(2)])
        );
        assert_eq!(to_value(&None::<i32>).unwrap(), Value::None);
        assert_eq!(
            Value::List(vec![Value::Int(1), Value::Str("a".into())]).to_string(),
            "[1, \"a\"]"
        );
    }

    #[test]
    fn mismatched_types_are_clear_errors() {
        let err = from_value::<i64>(Value::Str("seven".into())).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
        let err = from_value::<u8>(Value::Int(300)).unwrap_err();
        assert!(err.to_string().contains("does not fit in u8"), "{err}");
        let err = from_value::<(i32, i32)>(Value::Tuple(vec![Value::Int(1)])).unwrap_err();
        assert!(err.to_string().contains("invalid length"), "{err}");
    }

    #[test]
    fn a_value_converts_to_itself() {
        let value = Value::Map(vec![
            (
                Value::Str("k".into()),
                Value::Tuple(vec![Value::None, Value::Float(2.0)]),
            ),
            (
                Value::Int(1),
                Value::Proxy(Token {
                    typeid: "list".into(),
                    address: crate::Address::tcp("127.0.0.1:1"),
                    id: 9,
                    instance: 7,
                }),
            ),
            (
                Value::Bytes(vec![1]),
                Value::List(vec![Value::Bool(true), Value::Str("s".into())]),
            ),
        ]);
        assert_eq!(to_value(&value).unwrap(), value);
        assert_eq!(from_value::<Value>(value.clone()).unwrap(), value);
    }

    #[test]
    fn deep_nesting_is_refused_not_overflowed() {
        // Encoded by hand: a List tag and a length of 1, over and over, then None.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[6, 1]);
        }
        bytes.push(0);
        let err = postcard::from_bytes::<Value>(&bytes).unwrap_err();
        assert!(!err.to_string().is_empty());
        let mut ok = Value::None;
        for _ in 0..100 {
            ok = Value::List(vec![ok]);
        }
        let bytes = postcard::to_stdvec(&ok).unwrap();
        assert_eq!(postcard::from_bytes::<Value>(&bytes).unwrap(), ok);
    }

    #[test]
    fn values_survive_postcard() {
        let value = Value::Map(vec![
            (
                Value::Str("k".into()),
                Value::List(vec![Value::Float(1.5), Value::Bytes(vec![1, 2])]),
            ),
            (
                Value::Int(-3),
                Value::Tuple(vec![Value::None, Value::Bool(true)]),
            ),
        ]);
        let bytes = postcard::to_stdvec(&value).unwrap();
        let back: Value = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, value);
    }
}
