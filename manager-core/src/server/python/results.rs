//! What goes back to a CPython client: results converted to Python values, proxies as
//! CPython's server pickles them, and the [`Post`] step each translated request asks for.

use super::*;
use crate::python::pickle::MANAGERS_MODULE;
use crate::python::PyObject;

/// `repr(value)` for a CPython client: this server's rendering of plain data, or, for what
/// only Python can print as Python does (an opaque object, a set, a big int), a pickle of the
/// call `builtins.repr(value)`, which the client's unpickler makes. The server runs nothing;
/// the client calls `repr` on a value it would have unpickled anyway.
pub(super) fn python_repr(state: &State, value: Value) -> PyValue {
    if !crate::python::repr::needs_python(&value) {
        return PyValue::str(crate::python::repr::repr(&value));
    }
    client_repr(to_python(state, value))
}

pub(super) fn client_repr(value: PyValue) -> PyValue {
    call_of("builtins", "repr", vec![value])
}

/// The proxy CPython's own server would pickle for an object: the registered proxy class of a
/// built-in typeid, else an `AutoProxy` that carries its exposed methods (without them the
/// receiving client would ask for them over a connection it does not authenticate).
pub(super) fn python_proxy(state: &State, token: Token) -> PyValue {
    let class = match token.typeid.as_str() {
        "list" => Some("ListProxy"),
        "dict" => Some("DictProxy"),
        "Namespace" => Some("NamespaceProxy"),
        "Value" => Some("ValueProxy"),
        "Array" => Some("ArrayProxy"),
        "Event" => Some("EventProxy"),
        "Lock" | "RLock" | "Semaphore" | "BoundedSemaphore" => Some("AcquirerProxy"),
        "Condition" => Some("ConditionProxy"),
        "Barrier" => Some("BarrierProxy"),
        "Iterator" => Some("IteratorProxy"),
        _ => None,
    };
    let builtin = state
        .table
        .lock()
        .entry(token.id)
        .is_some_and(|entry| builtin(entry));
    match class {
        Some(class) if builtin => PyValue::Proxy(Box::new(PyProxy::of_class(class, token))),
        _ => {
            let PyValue::Tuple(names) = exposed_of(state, token.id) else {
                unreachable!("exposed_of returns a tuple")
            };
            let names: Vec<&str> = names.iter().filter_map(PyValue::as_str).collect();
            PyValue::Proxy(Box::new(PyProxy::auto(token, Some(&names))))
        }
    }
}

/// Converts a result for a CPython client, proxies included.
pub(super) fn to_python(state: &State, value: Value) -> PyValue {
    match value {
        Value::Proxy(token) => python_proxy(state, token),
        Value::List(items) => {
            PyValue::List(items.into_iter().map(|v| to_python(state, v)).collect())
        }
        Value::Tuple(items) => {
            PyValue::Tuple(items.into_iter().map(|v| to_python(state, v)).collect())
        }
        Value::Map(entries) if entries.iter().any(|(k, v)| has_proxy(k) || has_proxy(v)) => {
            PyValue::Dict(
                entries
                    .into_iter()
                    .map(|(k, v)| (to_python(state, k), to_python(state, v)))
                    .collect(),
            )
        }
        other => PyValue::from_value(other),
    }
}

/// `(key, value)` tuples, as the pairs of a Python dict (anything else a key without a value).
fn python_pairs(state: &State, pairs: Vec<Value>) -> Vec<(PyValue, PyValue)> {
    pairs
        .into_iter()
        .map(|pair| match pair {
            Value::Tuple(mut kv) if kv.len() == 2 => {
                let v = kv.pop().unwrap_or_default();
                (
                    to_python(state, kv.pop().unwrap_or_default()),
                    to_python(state, v),
                )
            }
            other => (to_python(state, other), PyValue::None),
        })
        .collect()
}

fn has_proxy(value: &Value) -> bool {
    !value.tokens().is_empty()
}

/// The payload of a `#RETURN` reply for `value`, after the step `after`; or, when that step
/// finds an error, the whole error reply.
pub(super) fn finish(state: &State, value: Value, after: Post) -> Result<PyValue, PyValue> {
    let convert = |value| to_python(state, value);
    Ok(match after {
        Post::Keep | Post::KeyErrorOf(_) | Post::DefaultIfMissing(_) | Post::Iterator => {
            convert(value)
        }
        Post::Nothing => PyValue::None,
        Post::Repr => python_repr(state, value),
        Post::Concat(other) => match value {
            Value::List(mut items) => {
                items.extend(other);
                convert(Value::List(items))
            }
            other => convert(other),
        },
        Post::Repeat(n) => match value {
            Value::List(items) => {
                let n = usize::try_from(n.max(0)).unwrap_or(0);
                convert(Value::List(
                    std::iter::repeat_n(items, n).flatten().collect(),
                ))
            }
            other => convert(other),
        },
        Post::Reversed => match value {
            Value::List(mut items) => {
                items.reverse();
                convert(Value::List(items))
            }
            other => convert(other),
        },
        Post::Slice(parts) => match value {
            // The indices were checked when the request was translated.
            Value::List(items) => {
                let positions = slice_positions(&parts, items.len()).unwrap_or_default();
                convert(Value::List(
                    positions.into_iter().map(|i| items[i].clone()).collect(),
                ))
            }
            other => convert(other),
        },
        Post::ReprDict => {
            let pairs: Vec<(Value, Value)> = match value {
                Value::List(pairs) => pairs
                    .into_iter()
                    .filter_map(|pair| match pair {
                        Value::Tuple(mut kv) if kv.len() == 2 => {
                            let v = kv.pop()?;
                            Some((kv.pop()?, v))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            if pairs.iter().any(|(k, v)| {
                crate::python::repr::needs_python(k) || crate::python::repr::needs_python(v)
            }) {
                return Ok(client_repr(PyValue::Dict(
                    pairs
                        .into_iter()
                        .map(|(k, v)| (convert(k), convert(v)))
                        .collect(),
                )));
            }
            PyValue::str(crate::python::repr::repr_dict(&pairs))
        }
        Post::Dict => match value {
            Value::List(pairs) => PyValue::Dict(python_pairs(state, pairs)),
            other => convert(other),
        },
        Post::IndexIn(item, bounds) => match value {
            Value::List(items) => {
                let positions = slice_positions(&bounds, items.len()).unwrap_or_default();
                match positions.into_iter().find(|&i| items[i] == item) {
                    Some(i) => PyValue::Int(i as i128),
                    None => {
                        return Err(raise(
                            "builtins",
                            "ValueError",
                            vec![PyValue::str(format!(
                                "{} is not in list",
                                crate::python::repr::repr(&item)
                            ))],
                        ))
                    }
                }
            }
            other => convert(other),
        },
        Post::Namespace { repr } => {
            let attributes = match value {
                Value::List(pairs) => python_pairs(state, pairs),
                _ => Vec::new(),
            };
            let namespace = object(PyObject::Build {
                obj: object(PyObject::NewObj {
                    cls: global(MANAGERS_MODULE, "Namespace"),
                    args: PyValue::Tuple(Vec::new()),
                }),
                state: PyValue::Dict(attributes),
            });
            if repr {
                client_repr(namespace)
            } else {
                namespace
            }
        }
        Post::Array { slice, repr } => {
            let (typecode, items) = typed(value);
            let items = match (slice, items) {
                (Some(parts), Value::List(items)) => {
                    let positions = slice_positions(&parts, items.len()).unwrap_or_default();
                    Value::List(positions.into_iter().map(|i| items[i].clone()).collect())
                }
                (_, items) => items,
            };
            let array = match typecode {
                Value::Str(code) => {
                    call_of("array", "array", vec![PyValue::Str(code), convert(items)])
                }
                // An array a Rust client made has no typecode: a list.
                _ => convert(items),
            };
            if repr {
                client_repr(array)
            } else {
                array
            }
        }
        Post::SharedValue { repr } => {
            let (typecode, inner) = typed(value);
            let shared = call_of(
                MANAGERS_MODULE,
                "Value",
                vec![PyValue::from_value(typecode), convert(inner)],
            );
            if repr {
                client_repr(shared)
            } else {
                shared
            }
        }
    })
}

/// The `(typecode, content)` a `typed()` call returns.
fn typed(value: Value) -> (Value, Value) {
    match value {
        Value::Tuple(mut parts) if parts.len() == 2 => {
            let content = parts.pop().unwrap_or_default();
            (parts.pop().unwrap_or_default(), content)
        }
        other => (Value::None, other),
    }
}

fn object(object: PyObject) -> PyValue {
    PyValue::Object(Box::new(object))
}

/// A class or function, by name, for the client to import when it unpickles the reply.
fn global(module: &str, name: &str) -> PyValue {
    object(PyObject::Global {
        module: module.into(),
        name: name.into(),
    })
}

/// A pickle of the call `module.name(*args)`, made by the client's unpickler.
fn call_of(module: &str, name: &str, args: Vec<PyValue>) -> PyValue {
    object(PyObject::Reduce {
        func: global(module, name),
        args: PyValue::Tuple(args),
    })
}
