//! Python's slices of the built-in sequences: `(start, stop, step)` as pickled, and the
//! positions a slice names.

use super::*;

/// The `(start, stop)` of a pickled slice without a step (or with step 1); an error for any
/// other step. `None` when `value` is not a slice.
pub(super) fn slice_bounds(value: &Value) -> Option<Result<(Value, Value), String>> {
    let Value::Map(entries) = value else {
        return None;
    };
    match entries.as_slice() {
        [(Value::Str(tag), Value::Tuple(parts))] if tag == crate::python::pickle::SLICE_TAG => {
            match parts.as_slice() {
                [start, stop, Value::None] | [start, stop, Value::Int(1)] => {
                    Some(Ok((start.clone(), stop.clone())))
                }
                _ => Some(Err("slices with a step are not supported".into())),
            }
        }
        _ => None,
    }
}

/// The `(start, stop, step)` of a pickled slice, whatever its step.
pub(super) fn slice_parts(value: &Value) -> Option<(Value, Value, Value)> {
    let Value::Map(entries) = value else {
        return None;
    };
    match entries.as_slice() {
        [(Value::Str(tag), Value::Tuple(parts))] if tag == crate::python::pickle::SLICE_TAG => {
            match parts.as_slice() {
                [start, stop, step] => Some((start.clone(), stop.clone(), step.clone())),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The positions `seq[start:stop:step]` takes from a sequence of `len`, as Python's
/// `slice.indices` computes them.
pub(super) fn slice_positions(
    (start, stop, step): &(Value, Value, Value),
    len: usize,
) -> Result<Vec<usize>, String> {
    let int = |v: &Value| match v {
        Value::None => Ok(None),
        Value::Int(i) => Ok(Some(*i)),
        Value::Bool(b) => Ok(Some(i128::from(*b))),
        other => Err(format!(
            "slice indices must be integers or None or have an __index__ method, not {}",
            other.python_type()
        )),
    };
    let len = len as i128;
    let step = int(step)?.unwrap_or(1);
    if step == 0 {
        return Err("slice step cannot be zero".into());
    }
    let (lower, upper) = if step < 0 { (-1, len - 1) } else { (0, len) };
    let clamp = |v: Option<i128>, default: i128| match v {
        None => default,
        Some(i) if i < 0 => (i + len).max(lower),
        Some(i) => i.min(upper),
    };
    let (start, stop) = if step < 0 {
        (clamp(int(start)?, upper), clamp(int(stop)?, lower))
    } else {
        (clamp(int(start)?, lower), clamp(int(stop)?, upper))
    };
    let mut positions = Vec::new();
    let mut i = start;
    while (step > 0 && i < stop) || (step < 0 && i > stop) {
        positions.push(i as usize);
        i += step;
    }
    Ok(positions)
}

/// The `(start, stop, step)` of a pickled slice for the list methods that take a step, the
/// indices checked as Python checks them.
pub(super) fn stepped(value: &Value) -> Result<(Value, Value, Value), (&'static str, String)> {
    let Some(parts) = slice_parts(value) else {
        return Err(("TypeError", "expected a slice".into()));
    };
    if let Err(message) = slice_positions(&parts, 0) {
        let exception = if message.contains("zero") {
            "ValueError"
        } else {
            "TypeError"
        };
        return Err((exception, message));
    }
    let (start, stop, step) = parts;
    let step = match step {
        Value::None => Value::Int(1),
        Value::Bool(b) => Value::Int(i128::from(b)),
        other => other,
    };
    // Indices beyond i64 mean "the end" to a list of any real size.
    let clamp = |v: Value| match v {
        Value::Int(i) => Value::Int(i.clamp(i64::MIN.into(), i64::MAX.into())),
        Value::Bool(b) => Value::Int(i128::from(b)),
        other => other,
    };
    Ok((clamp(start), clamp(stop), clamp(step)))
}

/// The items Python's `list(value)` takes: those of a list, tuple or set, the characters of a
/// str, the bytes of bytes, the keys of a dict, the numbers of a `range` (of at most
/// [`crate::sync::MAX_REPEATED_ITEMS`]); for anything else, Python's `TypeError` message.
pub(super) fn iterate(value: Value) -> Result<Vec<Value>, String> {
    Ok(match value {
        Value::List(items) | Value::Tuple(items) | Value::Set(items) | Value::FrozenSet(items) => {
            items
        }
        Value::Str(text) => text.chars().map(|c| Value::Str(c.into())).collect(),
        Value::Bytes(bytes) | Value::ByteArray(bytes) => bytes
            .into_iter()
            .map(|b| Value::Int(i128::from(b)))
            .collect(),
        Value::Map(entries) => entries.into_iter().map(|(k, _)| k).collect(),
        Value::Opaque(ref opaque) if opaque.class() == "builtins.range" => {
            let Some((start, stop, step)) = range_of(opaque) else {
                return Err("'range' object is not iterable".into());
            };
            let count = if step > 0 && stop > start {
                (stop - start - 1) / step + 1
            } else if step < 0 && stop < start {
                (start - stop - 1) / -step + 1
            } else {
                0
            };
            if count > crate::sync::MAX_REPEATED_ITEMS as i128 {
                return Err(format!(
                    "a manager server reads ranges of at most {} numbers",
                    crate::sync::MAX_REPEATED_ITEMS
                ));
            }
            (0..count).map(|i| Value::Int(start + i * step)).collect()
        }
        other => return Err(format!("'{}' object is not iterable", other.python_type())),
    })
}

/// The `(start, stop, step)` of a pickled `range`.
fn range_of(opaque: &crate::value::Opaque) -> Option<(i128, i128, i128)> {
    use crate::python::PyObject;
    let options = pickle::DecodeOptions {
        opaque_globals: true,
        ..Default::default()
    };
    let PyValue::Object(object) = pickle::decode_with(opaque.pickle(), &options).ok()? else {
        return None;
    };
    let PyObject::Reduce {
        args: PyValue::Tuple(args),
        ..
    } = *object
    else {
        return None;
    };
    match args.as_slice() {
        [PyValue::Int(start), PyValue::Int(stop), PyValue::Int(step)] if *step != 0 => {
            Some((*start, *stop, *step))
        }
        _ => None,
    }
}
