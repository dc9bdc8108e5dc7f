//! The arguments of `Value` and `Array`'s `create`, and `array.array`'s typecodes: what an item
//! of each must be, as Python checks it.

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};

use crate::error::{RemoteError, RemoteErrorKind};
use crate::sync::typeids;
use crate::value::Value;

/// The arguments of a `create` that a CPython client sends with a typecode: `(content,)` from a
/// Rust client, `(content, typecode)` from `manager.Value(typecode, value)` or
/// `manager.Array(typecode, items)` in Python.
#[derive(Debug)]
pub(crate) struct CreateArgs<T>(pub(crate) T, pub(crate) Option<String>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for CreateArgs<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Args<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Args<T> {
            type Value = CreateArgs<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("(content,) or (content, typecode)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<CreateArgs<T>, A::Error> {
                let content = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                // A native tuple of one item ends here; a value tuple may hold the typecode.
                let typecode = seq.next_element::<Option<String>>()?.flatten();
                Ok(CreateArgs(content, typecode))
            }
        }
        deserializer.deserialize_tuple(1, Args(std::marker::PhantomData))
    }
}

/// The typecodes of `array.array` (`w` is 3.13's).
pub(crate) const TYPECODES: &[&str] = &[
    "b", "B", "u", "w", "h", "H", "i", "I", "l", "L", "q", "Q", "f", "d",
];

/// `item` as an `array.array` of `typecode` stores it: an int within the typecode's range
/// (a bool is an int), a float for `f` and `d` (an int becomes one), one character for `u`.
/// Anything else is Python's `TypeError`; an int out of range is a `Limit` error, which a
/// CPython client gets as `OverflowError`. Without a typecode, anything goes.
pub(crate) fn coerce(
    typecode: Option<&str>,
    item: Value,
    method: &str,
) -> Result<Value, RemoteError> {
    let Some(code) = typecode else {
        return Ok(item);
    };
    let type_error = |message: String| {
        RemoteError::new(
            RemoteErrorKind::BadArguments,
            typeids::ARRAY,
            method,
            message,
        )
    };
    let overflow =
        |message: &str| RemoteError::new(RemoteErrorKind::Limit, typeids::ARRAY, method, message);
    let range: Option<(i128, i128, &str)> = match code {
        "b" => Some((i8::MIN.into(), i8::MAX.into(), "signed char")),
        "B" => Some((0, u8::MAX.into(), "unsigned byte integer")),
        "h" => Some((i16::MIN.into(), i16::MAX.into(), "signed short integer")),
        "H" => Some((0, u16::MAX.into(), "unsigned short")),
        "i" => Some((i32::MIN.into(), i32::MAX.into(), "signed integer")),
        "I" => Some((0, u32::MAX.into(), "unsigned int")),
        "l" | "q" => Some((i64::MIN.into(), i64::MAX.into(), "C long")),
        "L" | "Q" => Some((0, u64::MAX.into(), "C unsigned long")),
        _ => None,
    };
    if let Some((min, max, what)) = range {
        return match item {
            Value::Bool(b) => Ok(Value::Int(i128::from(b))),
            Value::Int(i) if i < min => Err(overflow(&if min == 0 {
                format!("can't convert negative value to {what}")
            } else {
                format!("{what} is less than minimum")
            })),
            Value::Int(i) if i > max => Err(overflow(&format!("{what} is greater than maximum"))),
            Value::Int(i) => Ok(Value::Int(i)),
            Value::BigInt(_) => Err(overflow(&format!(
                "Python int too large to convert to {what}"
            ))),
            other => Err(type_error(format!(
                "'{}' object cannot be interpreted as an integer",
                other.python_type()
            ))),
        };
    }
    match (code, item) {
        ("f" | "d", Value::Float(f)) => Ok(Value::Float(f)),
        ("f" | "d", Value::Int(i)) => Ok(Value::Float(i as f64)),
        ("f" | "d", Value::Bool(b)) => Ok(Value::Float(f64::from(u8::from(b)))),
        ("f" | "d", other) => Err(type_error(format!(
            "must be real number, not {}",
            other.python_type()
        ))),
        ("u" | "w", Value::Str(s)) if s.chars().count() == 1 => Ok(Value::Str(s)),
        (_, other) => Err(type_error(format!(
            "array item must be a unicode character, not {}",
            other.python_type()
        ))),
    }
}
