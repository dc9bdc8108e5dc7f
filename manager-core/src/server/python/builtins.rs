//! How CPython's proxies of the built-in types call them: the names and argument shapes of
//! `SyncManager`'s proxies (`__getitem__`, `acquire(blocking, timeout)`, ...) mapped onto the
//! Rust methods of `manager::sync`, with CPython's argument checks and exceptions, and what
//! to do with each result before it goes back.

use super::*;

/// Whether `entry` is one of the built-in types of `manager::sync`.
pub(super) fn builtin(entry: &Entry) -> bool {
    entry.type_name.starts_with("manager_core::sync::")
}

/// How a CPython request to a built-in type maps onto its Rust method.
pub(super) struct Translated {
    pub(super) method: &'static str,
    pub(super) args: Vec<Value>,
    pub(super) kwds: Vec<(String, Value)>,
    pub(super) after: Post,
}

/// What to do with a result before it goes back.
pub(super) enum Post {
    Keep,
    /// The Python method returns `None` (`d[k] = v` returns nothing).
    Nothing,
    /// The value; on a `Key` error (the key is missing), this default instead.
    DefaultIfMissing(Value),
    /// A list of pairs that Python expects as a dict.
    Dict,
    /// `repr()` of the value, as a str.
    Repr,
    /// The slice `(start, stop, step)` of the list the value is.
    Slice((Value, Value, Value)),
    /// The list the value is, followed by these items (`list + other`).
    Concat(Vec<Value>),
    /// The list the value is, `n` times over (`list * n`; none for `n <= 0`).
    Repeat(i128),
    /// The list the value is, reversed (`reversed(list)`, which a client iterates).
    Reversed,
    /// `repr()` of the dict whose pairs the value lists, as a str.
    ReprDict,
    /// `KeyError(key)`, as `dict[key]` raises it.
    KeyErrorOf(Value),
    /// The position of the item in `list[start:stop]` (`list.index(x, start, stop)`), read
    /// from the whole list.
    IndexIn(Value, (Value, Value, Value)),
    /// A `multiprocessing.managers.Namespace` of the attributes the value lists (its
    /// `_getvalue()`), or `repr()` of it.
    Namespace {
        repr: bool,
    },
    /// `array.array(typecode, items)` of the `(typecode, items)` the value is, sliced if asked
    /// (an `Array`'s `_getvalue()` or slice), or `repr()` of it.
    Array {
        slice: Option<(Value, Value, Value)>,
        repr: bool,
    },
    /// `multiprocessing.managers.Value(typecode, value)` of the `(typecode, value)` the value
    /// is (a `Value`'s `_getvalue()`), or `repr()` of it.
    SharedValue {
        repr: bool,
    },
    /// A call on an `Iterator`: its end (an `Empty` error) is `StopIteration`, and a
    /// method its iterator lacks (an `Attribute` error) is answered as CPython's server
    /// answers a missing attribute.
    Iterator,
}

pub(super) fn translate(
    typeid: &str,
    method: &str,
    mut args: Vec<Value>,
    kwds: Vec<(String, Value)>,
) -> Result<Translated, (&'static str, String)> {
    let same = |method: &'static str, args, kwds| Translated {
        method,
        args,
        kwds,
        after: Post::Keep,
    };
    let first = args.first().cloned().unwrap_or_default();
    // A dict key must be hashable, as in Python: a list or a dict (or a tuple holding one)
    // would be stored, and then break every copy of the dict back to Python.
    let keyed = matches!(
        method,
        "__getitem__"
            | "__setitem__"
            | "__delitem__"
            | "__contains__"
            | "get"
            | "pop"
            | "setdefault"
    );
    if typeid == "dict" && keyed {
        if let Some(kind) = unhashable(&first) {
            return Err(("TypeError", format!("unhashable type: '{kind}'")));
        }
    }
    let unsupported = || {
        Err((
            "AttributeError",
            format!("{typeid}.{method} is not supported by this server"),
        ))
    };
    Ok(match (typeid, method) {
        ("list", "__len__") | ("dict", "__len__") | ("Array", "__len__") => same("len", args, kwds),
        ("list", "__contains__") => same("contains", args, kwds),
        ("list", "__getitem__") | ("Array", "__getitem__") => match slice_bounds(&first) {
            Some(Ok((start, stop))) if typeid == "list" => {
                same("getslice", vec![start, stop], kwds)
            }
            // A step, or an Array: the slice is taken of the whole sequence, read at once.
            Some(_) => match slice_parts(&first) {
                Some(parts) => {
                    // Bad indices or a zero step fail here, before anything is read.
                    if let Err(message) = slice_positions(&parts, 0) {
                        let exception = if message.contains("zero") {
                            "ValueError"
                        } else {
                            "TypeError"
                        };
                        return Err((exception, message));
                    }
                    if typeid == "Array" {
                        Translated {
                            method: "typed",
                            args: Vec::new(),
                            kwds,
                            after: Post::Array {
                                slice: Some(parts),
                                repr: false,
                            },
                        }
                    } else {
                        Translated {
                            method: "to_vec",
                            args: Vec::new(),
                            kwds,
                            after: Post::Slice(parts),
                        }
                    }
                }
                None => return unsupported(),
            },
            None => same("getitem", args, kwds),
        },
        ("list", "__setitem__") | ("Array", "__setitem__") => match slice_bounds(&first) {
            Some(Ok((start, stop))) if typeid == "list" => {
                let items = args.pop().unwrap_or_default();
                same("setslice", vec![start, stop, items], kwds)
            }
            Some(Err(_)) if typeid == "list" => {
                let (start, stop, step) = stepped(&first)?;
                let items = args.pop().unwrap_or_default();
                same("set_extended_slice", vec![start, stop, step, items], kwds)
            }
            // array.array takes only an array into a slice, which no client can send here.
            Some(_) => {
                let item = args.get(1).map_or("NoneType", Value::python_type);
                return Err((
                    "TypeError",
                    format!("can only assign array (not \"{item}\") to array slice"),
                ));
            }
            None => same("setitem", args, kwds),
        },
        ("list", "__delitem__") => match slice_bounds(&first) {
            Some(Ok((start, stop))) => same("delslice", vec![start, stop], kwds),
            Some(Err(_)) => {
                let (start, stop, step) = stepped(&first)?;
                same("del_extended_slice", vec![start, stop, step], kwds)
            }
            None => same("delitem", args, kwds),
        },
        ("list", "__imul__") => match args.as_slice() {
            [count] if count.exact_int().is_some() && !matches!(count, Value::Float(_)) => {
                Translated {
                    method: "repeat",
                    args: vec![Value::Int(
                        count.exact_int().unwrap_or(0).clamp(-1, 1 << 40),
                    )],
                    kwds,
                    after: Post::Nothing,
                }
            }
            [other] => {
                return Err((
                    "TypeError",
                    format!(
                        "can't multiply sequence by non-int of type '{}'",
                        other.python_type()
                    ),
                ))
            }
            _ => return Err(("TypeError", "expected 1 argument".into())),
        },
        ("Namespace", "#GETVALUE" | "__repr__" | "__str__") => Translated {
            method: "items",
            args,
            kwds,
            after: Post::Namespace {
                repr: method != "#GETVALUE",
            },
        },
        ("Array", "#GETVALUE" | "__repr__" | "__str__") => Translated {
            method: "typed",
            args,
            kwds,
            after: Post::Array {
                slice: None,
                repr: method != "#GETVALUE",
            },
        },
        ("Value", "#GETVALUE" | "__repr__" | "__str__") => Translated {
            method: "typed",
            args,
            kwds,
            after: Post::SharedValue {
                repr: method != "#GETVALUE",
            },
        },
        // CPython's server answers these with repr(referent).
        ("list", "__repr__" | "__str__") => Translated {
            method: "to_vec",
            args,
            kwds,
            after: Post::Repr,
        },
        ("dict", "__repr__" | "__str__") => Translated {
            method: "items",
            args,
            kwds,
            after: Post::ReprDict,
        },
        ("list", "sort") => {
            let mut reverse = Value::Bool(false);
            let mut by = None;
            for (name, value) in kwds {
                match name.as_str() {
                    "reverse" => reverse = value,
                    "key" if value == Value::None => {}
                    // Builtins the server can apply itself, without running Python code.
                    "key" if matches!(&value, Value::Opaque(f) if matches!(f.class(), "builtins.abs" | "builtins.len")) => {
                        if let Value::Opaque(function) = &value {
                            by = Some(function.type_name().to_string());
                        }
                    }
                    "key" => {
                        let function = match &value {
                            Value::Opaque(function) => function.class().to_string(),
                            other => other.python_type().to_string(),
                        };
                        return Err((
                            "TypeError",
                            format!(
                                "sort(key={function}) is not supported by a Rust manager server: \
                                 it cannot run Python code (sort without a key, or sort on the \
                                 client)"
                            ),
                        ));
                    }
                    other => {
                        return Err((
                            "TypeError",
                            format!("'{other}' is an invalid keyword argument for sort()"),
                        ))
                    }
                }
            }
            if !args.is_empty() {
                return Err((
                    "TypeError",
                    "sort() takes no positional arguments".to_string(),
                ));
            }
            let reverse = match reverse {
                Value::Bool(b) => b,
                other => other.exact_int().is_some_and(|i| i != 0),
            };
            match by {
                Some(key) => same(
                    "sort_by_builtin",
                    vec![Value::Str(key), Value::Bool(reverse)],
                    Vec::new(),
                ),
                None => same("sort", vec![Value::Bool(reverse)], Vec::new()),
            }
        }
        // Read-only list arithmetic: the list is read at once and the result computed here, as
        // CPython's server returns `list + other` and `list * n` by value.
        ("list", "__add__") => match args.as_slice() {
            [Value::List(other)] => Translated {
                method: "to_vec",
                args: Vec::new(),
                kwds,
                after: Post::Concat(other.clone()),
            },
            [other] => {
                return Err((
                    "TypeError",
                    format!(
                        "can only concatenate list (not \"{}\") to list",
                        other.python_type()
                    ),
                ))
            }
            _ => return Err(("TypeError", "expected 1 argument".into())),
        },
        ("list", "__mul__" | "__rmul__") => match args.as_slice() {
            [count] if count.exact_int().is_some() && !matches!(count, Value::Float(_)) => {
                Translated {
                    method: "to_vec",
                    args: Vec::new(),
                    kwds,
                    after: Post::Repeat(count.exact_int().unwrap_or(0)),
                }
            }
            [other] => {
                return Err((
                    "TypeError",
                    format!(
                        "'{}' object cannot be interpreted as an integer",
                        other.python_type()
                    ),
                ))
            }
            _ => return Err(("TypeError", "expected 1 argument".into())),
        },
        ("list", "__reversed__") => Translated {
            method: "to_vec",
            args: Vec::new(),
            kwds,
            after: Post::Reversed,
        },
        ("list", "index") if args.len() > 1 => {
            if args.len() > 3 {
                return Err((
                    "TypeError",
                    format!("index expected at most 3 arguments, got {}", args.len()),
                ));
            }
            let mut args = args.into_iter();
            let item = args.next().unwrap_or_default();
            let bounds = (
                args.next().unwrap_or_default(),
                args.next().unwrap_or_default(),
                Value::None,
            );
            if let Err(message) = slice_positions(&bounds, 0) {
                return Err(("TypeError", message));
            }
            Translated {
                method: "to_vec",
                args: Vec::new(),
                kwds,
                after: Post::IndexIn(item, bounds),
            }
        }
        ("list", "index") => same("index", args, kwds),
        ("list", name) => match name {
            "append" => same("append", args, kwds),
            "count" => same("count", args, kwds),
            "extend" if args.len() == 1 => {
                let items =
                    iterate(args.pop().unwrap_or_default()).map_err(|e| ("TypeError", e))?;
                same("extend", vec![Value::List(items)], kwds)
            }
            "extend" => same("extend", args, kwds),
            "insert" => same("insert", args, kwds),
            "pop" => same("pop", args, kwds),
            "remove" => same("remove", args, kwds),
            "reverse" => same("reverse", args, kwds),
            "clear" => same("clear", args, kwds),
            "#GETVALUE" => same("to_vec", args, kwds),
            _ => return unsupported(),
        },
        ("dict", "__getitem__") => Translated {
            method: "getitem",
            args,
            kwds,
            after: Post::KeyErrorOf(first),
        },
        ("dict", "__setitem__") => Translated {
            method: "setitem",
            args,
            kwds,
            after: Post::Nothing,
        },
        ("dict", "__delitem__") => Translated {
            method: "pop",
            args,
            kwds,
            after: Post::KeyErrorOf(first),
        },
        ("dict", "__contains__") => same("contains_key", args, kwds),
        // A key that is missing is told by a `Key` error, not by a `None` result: a stored
        // `None` is a value like any other.
        ("dict", "get") => {
            if args.is_empty() || args.len() > 2 {
                return Err((
                    "TypeError",
                    if args.is_empty() {
                        "get expected at least 1 argument, got 0".to_string()
                    } else {
                        format!("get expected at most 2 arguments, got {}", args.len())
                    },
                ));
            }
            let default = args.get(1).cloned().unwrap_or_default();
            Translated {
                method: "getitem",
                args: args.into_iter().take(1).collect(),
                kwds,
                after: Post::DefaultIfMissing(default),
            }
        }
        ("dict", "pop") if args.len() >= 2 => {
            if args.len() > 2 {
                return Err((
                    "TypeError",
                    format!("pop expected at most 2 arguments, got {}", args.len()),
                ));
            }
            let default = args[1].clone();
            Translated {
                method: "pop",
                args: args.into_iter().take(1).collect(),
                kwds,
                after: Post::DefaultIfMissing(default),
            }
        }
        ("dict", "pop") => Translated {
            method: "pop",
            args,
            kwds,
            after: Post::KeyErrorOf(first),
        },
        ("dict", "update") => {
            if args.len() > 1 {
                return Err((
                    "TypeError",
                    format!("update expected at most 1 argument, got {}", args.len()),
                ));
            }
            let mut items = match args.pop() {
                Some(Value::Map(entries)) => entries,
                Some(Value::List(items)) | Some(Value::Tuple(items)) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, pair)| match pair {
                        Value::Tuple(mut kv) | Value::List(mut kv) if kv.len() == 2 => {
                            let v = kv.pop().unwrap_or_default();
                            Ok((kv.pop().unwrap_or_default(), v))
                        }
                        Value::Tuple(kv) | Value::List(kv) => Err((
                            "ValueError",
                            format!(
                                "dictionary update sequence element #{i} has length {}; 2 is \
                                 required",
                                kv.len()
                            ),
                        )),
                        _ => Err((
                            "TypeError",
                            format!(
                                "cannot convert dictionary update sequence element #{i} to a \
                                 sequence"
                            ),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
                Some(other) => {
                    return Err((
                        "TypeError",
                        format!("cannot update a dict from a {}", other.kind()),
                    ))
                }
                None => Vec::new(),
            };
            items.extend(kwds.into_iter().map(|(k, v)| (Value::Str(k), v)));
            let items = items
                .into_iter()
                .map(|(k, v)| Value::Tuple(vec![k, v]))
                .collect();
            same("update", vec![Value::List(items)], Vec::new())
        }
        ("dict", "copy") | ("dict", "#GETVALUE") => Translated {
            method: "items",
            args,
            kwds,
            after: Post::Dict,
        },
        // CPython's `DictProxy` maps `__iter__` to the `Iterator` typeid: `iter` is a stream
        // method, which a CPython client receives as an `Iterator` object (`call.rs`).
        ("dict", "__iter__") => same("iter", args, kwds),
        ("Iterator", "__next__") => Translated {
            method: "next",
            args,
            kwds,
            after: Post::Iterator,
        },
        ("Iterator", "close") => Translated {
            method: "close",
            args: vec![Value::List(args)],
            kwds,
            after: Post::Iterator,
        },
        // `send` and `throw`: a stream takes no values, as CPython's list and dict iterators
        // do not.
        ("Iterator", _) => return unsupported(),
        ("dict", name) => match name {
            "clear" => same("clear", args, kwds),
            "items" => same("items", args, kwds),
            "keys" => same("keys", args, kwds),
            "values" => same("values", args, kwds),
            "popitem" => same("popitem", args, kwds),
            "setdefault" => same("setdefault", args, kwds),
            _ => return unsupported(),
        },
        ("Namespace", "__getattribute__") => same("getattr", args, kwds),
        ("Namespace", "__setattr__") => same("setattr", args, kwds),
        ("Namespace", "__delattr__") => same("delattr", args, kwds),
        ("Barrier", "__getattribute__") => match &first {
            Value::Str(name) if name == "parties" => same("parties", Vec::new(), kwds),
            Value::Str(name) if name == "n_waiting" => same("n_waiting", Vec::new(), kwds),
            Value::Str(name) if name == "broken" => same("broken", Vec::new(), kwds),
            _ => return unsupported(),
        },
        ("Lock" | "RLock" | "Semaphore" | "BoundedSemaphore" | "Condition", "acquire") => {
            // threading's "wait forever" is a negative timeout; here it is None.
            let forever = |v: &mut Value| {
                if matches!(v, Value::Int(i) if *i < 0) || matches!(v, Value::Float(f) if *f < 0.0)
                {
                    *v = Value::None;
                }
            };
            if let Some(timeout) = args.get_mut(1) {
                forever(timeout);
            }
            let mut kwds = kwds;
            for (k, v) in &mut kwds {
                if k == "timeout" {
                    forever(v);
                }
            }
            same("acquire", args, kwds)
        }
        (_, name) => {
            let known = python_names(typeid).contains(&name)
                || matches!(name, "maxsize" | "get_value" | "locked");
            if !known {
                return unsupported();
            }
            let method: &'static str = python_names(typeid)
                .iter()
                .copied()
                .find(|n| *n == name)
                .unwrap_or(match name {
                    "maxsize" => "maxsize",
                    "get_value" => "get_value",
                    _ => "locked",
                });
            same(method, args, kwds)
        }
    })
}
