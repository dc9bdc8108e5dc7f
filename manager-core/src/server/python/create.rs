//! `create` requests of CPython clients: the arguments of the built-in types' factories from
//! what `SyncManager`'s constructors send, and the typeids a Rust server refuses.

use super::*;

/// The arguments of a built-in type's factory, from what CPython's `SyncManager` sends.
pub(super) fn create_args(
    typeid: &str,
    args: Vec<Value>,
    kwds: Vec<(String, Value)>,
    params: Option<&[String]>,
) -> Result<Value, String> {
    let kw = |name: &str| kwds.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let pairs = |value: Value| -> Result<Value, String> {
        match value {
            Value::Map(entries) => Ok(Value::List(
                entries
                    .into_iter()
                    .map(|(k, v)| Value::Tuple(vec![k, v]))
                    .collect(),
            )),
            Value::List(items) | Value::Tuple(items) => Ok(Value::List(items)),
            other => Err(format!("cannot make a dict from a {}", other.kind())),
        }
    };
    let plain = |args: Vec<Value>, kwds: &Vec<(String, Value)>| -> Result<Value, String> {
        if kwds.is_empty() {
            return Ok(Value::Tuple(args));
        }
        let Some(params) = params else {
            return Err(format!(
                "{typeid}() takes no keyword arguments here: the server does not know the names \
                 of its factory's parameters (Register::params names them)"
            ));
        };
        by_name(typeid, params, args, kwds.clone())
    };
    let mut args = args;
    match typeid {
        // list(iterable): the items of a list or tuple, the characters of a str, the bytes of
        // bytes, the keys of a dict, as Python's list() takes them.
        "list" => {
            if args.len() > 1 {
                return Err(format!(
                    "list expected at most 1 argument, got {}",
                    args.len()
                ));
            }
            let items = match args.pop() {
                None => Vec::new(),
                Some(value) => iterate(value)?,
            };
            Ok(Value::Tuple(vec![Value::List(items)]))
        }
        "dict" => {
            let mut items = match args.pop() {
                Some(value) => pairs(value)?,
                None => Value::List(Vec::new()),
            };
            if let Value::List(items) = &mut items {
                for (k, v) in kwds {
                    items.push(Value::Tuple(vec![Value::Str(k), v]));
                }
            }
            Ok(Value::Tuple(vec![items]))
        }
        "Namespace" => Ok(Value::Tuple(vec![Value::List(
            kwds.into_iter()
                .map(|(k, v)| Value::Tuple(vec![Value::Str(k), v]))
                .collect(),
        )])),
        // Value(typecode, value, lock=True), Array(typecode, sequence, lock=True): the typecode
        // goes along (an Array checks its items against it, as array.array does; a Value keeps
        // it for its repr, and Python checks nothing either); the lock means nothing here.
        "Value" => {
            let typecode = args.first().cloned().or_else(|| kw("typecode"));
            match args.into_iter().nth(1).or_else(|| kw("value")) {
                Some(value) => Ok(Value::Tuple(vec![value, typecode_of(typecode)?])),
                None => Err("Value(typecode, value) needs a value".into()),
            }
        }
        "Array" => {
            let typecode = typecode_of(args.first().cloned().or_else(|| kw("typecode")))?;
            match args.into_iter().nth(1).or_else(|| kw("sequence")) {
                Some(Value::Tuple(items)) | Some(Value::List(items)) => {
                    Ok(Value::Tuple(vec![Value::List(items), typecode]))
                }
                Some(other) => Ok(Value::Tuple(vec![Value::List(iterate(other)?), typecode])),
                None => Err("Array(typecode, sequence) needs a sequence".into()),
            }
        }
        "Queue" | "JoinableQueue" => Ok(Value::Tuple(vec![args
            .pop()
            .or_else(|| kw("maxsize"))
            .unwrap_or(Value::Int(0))])),
        "Semaphore" | "BoundedSemaphore" => Ok(Value::Tuple(vec![args
            .pop()
            .or_else(|| kw("value"))
            .unwrap_or(Value::Int(1))])),
        "Barrier" => {
            let parties = args.first().cloned().or_else(|| kw("parties"));
            let timeout = args.get(2).cloned().or_else(|| kw("timeout"));
            match parties {
                Some(parties) => Ok(Value::Tuple(vec![parties, timeout.unwrap_or(Value::None)])),
                None => Err("Barrier(parties) needs parties".into()),
            }
        }
        "Lock" | "RLock" | "Event" | "Condition" => Ok(Value::Tuple(Vec::new())),
        _ => plain(args, &kwds),
    }
}

/// Positional and keyword arguments in the order of `params`, the factory's parameters. Trailing
/// parameters left out stay out (the factory may take fewer); one left out before a given one
/// is a `TypeError`, as is a keyword that names no parameter or one given twice.
fn by_name(
    typeid: &str,
    params: &[String],
    args: Vec<Value>,
    mut kwds: Vec<(String, Value)>,
) -> Result<Value, String> {
    if args.len() > params.len() {
        return Err(format!(
            "{typeid}() takes {} positional arguments but {} were given",
            params.len(),
            args.len()
        ));
    }
    let mut arranged = args;
    let mut missing = None;
    for param in &params[arranged.len()..] {
        match kwds.iter().position(|(k, _)| k == param) {
            Some(i) => {
                if let Some(missing) = missing {
                    return Err(format!(
                        "{typeid}() missing 1 required positional argument: '{missing}'"
                    ));
                }
                arranged.push(kwds.remove(i).1);
            }
            None => {
                missing.get_or_insert(param);
            }
        }
    }
    if let Some((k, _)) = kwds.first() {
        return Err(match params.iter().position(|p| p == k) {
            Some(_) => format!("{typeid}() got multiple values for argument '{k}'"),
            None => format!("{typeid}() got an unexpected keyword argument '{k}'"),
        });
    }
    Ok(Value::Tuple(arranged))
}

/// The typecode of `Value` and `Array` (a one-character str), as the factory takes it.
fn typecode_of(typecode: Option<Value>) -> Result<Value, String> {
    match typecode {
        Some(Value::Str(code)) => Ok(Value::Str(code)),
        None | Some(Value::None) => Ok(Value::None),
        Some(other) => Err(format!(
            "array() argument 1 must be a unicode character, not {}",
            other.python_type()
        )),
    }
}

/// Why a typeid cannot be served to CPython clients, if it cannot: `Pool` runs Python
/// functions, which a Rust server cannot do.
pub(super) fn refused_typeid(typeid: &str) -> Option<String> {
    matches!(typeid, "Pool" | "ThreadPool").then(|| {
        format!(
            "{typeid} is not served by a Rust manager server: a pool runs Python functions, and \
             a Rust server runs no Python code (use a multiprocessing.Pool in the client, or \
             CPython's own manager for pools)"
        )
    })
}
