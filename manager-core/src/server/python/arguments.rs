//! The arguments of CPython's calls on the built-in types, checked as CPython checks them:
//! hashable keys, required parameters with CPython's words when one is missing, and defaults.

use super::*;

/// The Python type name of what makes `value` unhashable (a list, a dict, or a tuple holding
/// one), if anything does.
pub(super) fn unhashable(value: &Value) -> Option<&'static str> {
    match value {
        Value::List(_) => Some("list"),
        Value::Map(_) => Some("dict"),
        Value::Set(_) => Some("set"),
        Value::ByteArray(_) => Some("bytearray"),
        Value::Tuple(items) => items.iter().find_map(unhashable),
        _ => None,
    }
}

/// The default of a parameter a CPython client left out.
pub(super) fn default_for(param: &str) -> Value {
    match param {
        "block" | "blocking" => Value::Bool(true),
        "n" => Value::Int(1),
        "owner" => Value::Int(0),
        _ => Value::None,
    }
}

/// Whether a built-in type's parameter must be given, as CPython's methods require it (the item
/// of `put`/`append`/`insert`, the key and value of `d[k] = v`, ...): left out, it is a
/// `TypeError`, never a stored `None`. `pop`'s index is optional.
pub(super) fn required(method: &str, param: &str) -> bool {
    match param {
        "item" | "key" | "value" | "items" | "name" | "obj" => true,
        "index" => method != "pop",
        _ => false,
    }
}

/// CPython's words for a required argument left out of a built-in type's method, `given`
/// being how many were passed (as 3.10 and later print them; 3.8 and 3.9 name some methods
/// without their class).
fn missing(method: &str, param: &str, given: usize) -> String {
    match method {
        "append" | "extend" | "remove" | "count" => {
            format!("list.{method}() takes exactly one argument ({given} given)")
        }
        "insert" => format!("insert expected 2 arguments, got {given}"),
        "index" | "setdefault" | "pop" | "get" => {
            format!("{method} expected at least 1 argument, got {given}")
        }
        // CPython's own words, with their empty name.
        "__setitem__" => format!(" expected 2 arguments, got {given}"),
        "put" | "put_nowait" => {
            format!("Queue.{method}() missing 1 required positional argument: '{param}'")
        }
        _ => format!("{method}() missing 1 required positional argument: '{param}'"),
    }
}

/// Arranges positional and keyword arguments in the order of the method's parameters. For a
/// built-in type's method (`builtin`: the name the client called), a required parameter left
/// out is a `TypeError` in CPython's words.
pub(super) fn arrange(
    params: &[&str],
    args: Vec<Value>,
    mut kwds: Vec<(String, Value)>,
    builtin: Option<&str>,
) -> Result<Value, RemoteError> {
    let bad = |message: String| RemoteError::new(RemoteErrorKind::BadArguments, "", "", message);
    if args.len() > params.len() {
        return Err(bad(format!(
            "takes {} positional arguments but {} were given",
            params.len(),
            args.len()
        )));
    }
    let given = args.len();
    let mut arranged = args;
    for param in &params[arranged.len()..] {
        match kwds.iter().position(|(k, _)| k == param) {
            Some(i) => arranged.push(kwds.remove(i).1),
            None => match builtin {
                Some(method) if required(method, param) => {
                    return Err(bad(missing(method, param, given)))
                }
                _ => arranged.push(default_for(param)),
            },
        }
    }
    if let Some((k, _)) = kwds.first() {
        return Err(bad(format!("got an unexpected keyword argument {k:?}")));
    }
    Ok(Value::Tuple(arranged))
}
