//! Python's `repr()` of stored values, for `str(proxy)` and `repr(proxy)` of the built-in
//! containers (CPython's server answers those with `repr(referent)`).

use crate::value::Value;

/// `repr(value)` as CPython prints it.
pub fn repr(value: &Value) -> String {
    let mut out = String::new();
    write(&mut out, value);
    out
}

/// Whether only Python can print `value` as Python does: it holds an opaque object (whose
/// `repr` is its class's code), a set (printed in its hash order), or an int beyond `i128`.
/// The server then sends `repr(value)` for the client to evaluate (see
/// `builtins.repr` in the CPython server), rather than this module's rendering.
pub fn needs_python(value: &Value) -> bool {
    match value {
        Value::Opaque(_) | Value::Set(_) | Value::FrozenSet(_) | Value::BigInt(_) => true,
        Value::List(items) | Value::Tuple(items) => items.iter().any(needs_python),
        // A slice, a complex number or an exception, as a tagged one-entry map.
        Value::Map(pairs) if matches!(pairs.as_slice(), [(Value::Str(tag), _)] if tag.starts_with("$py:")) => {
            true
        }
        Value::Map(pairs) => pairs
            .iter()
            .any(|(k, v)| needs_python(k) || needs_python(v)),
        _ => false,
    }
}

/// `repr` of a dict given as its `(key, value)` pairs, in order.
pub fn repr_dict(pairs: &[(Value, Value)]) -> String {
    let mut out = String::new();
    write_dict(&mut out, pairs);
    out
}

fn write(out: &mut String, value: &Value) {
    match value {
        Value::None => out.push_str("None"),
        Value::Bool(true) => out.push_str("True"),
        Value::Bool(false) => out.push_str("False"),
        Value::Int(i) => out.push_str(&i.to_string()),
        Value::Float(f) => out.push_str(&float(*f)),
        Value::Str(s) => string(out, s),
        Value::Bytes(b) => bytes(out, b),
        Value::List(items) => {
            out.push('[');
            items_of(out, items);
            out.push(']');
        }
        Value::Tuple(items) => {
            out.push('(');
            items_of(out, items);
            if items.len() == 1 {
                out.push(',');
            }
            out.push(')');
        }
        Value::Map(pairs) => write_dict(out, pairs),
        Value::Proxy(token) => out.push_str(&format!(
            "<proxy, typeid {:?} id {}>",
            token.typeid, token.id
        )),
        // In stored order: Python prints a set in its hash order (see `needs_python`).
        Value::Set(items) if items.is_empty() => out.push_str("set()"),
        Value::FrozenSet(items) if items.is_empty() => out.push_str("frozenset()"),
        Value::Set(items) | Value::FrozenSet(items) => {
            let frozen = matches!(value, Value::FrozenSet(_));
            out.push_str(if frozen { "frozenset({" } else { "{" });
            items_of(out, items);
            out.push_str(if frozen { "})" } else { "}" });
        }
        Value::ByteArray(b) => {
            out.push_str("bytearray(");
            bytes(out, b);
            out.push(')');
        }
        Value::BigInt(b) => match crate::value_py::big_decimal(b) {
            Some(digits) => out.push_str(&digits),
            None => out.push_str(&format!("<an int of {} bytes>", b.len())),
        },
        Value::Opaque(o) => out.push_str(&format!("<{} object>", o.class())),
    }
}

fn items_of(out: &mut String, items: &[Value]) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, item);
    }
}

fn write_dict(out: &mut String, pairs: &[(Value, Value)]) {
    out.push('{');
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        write(out, key);
        out.push_str(": ");
        write(out, value);
    }
    out.push('}');
}

/// A float as Python's `repr`: the shortest string that reads back the same, with `.0` on
/// integral values, and an exponent (`1e+16`, `1e-05`) below 1e-4 and from 1e16 on.
fn float(f: f64) -> String {
    if f.is_nan() {
        return "nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.into();
    }
    let magnitude = f.abs();
    if magnitude != 0.0 && !(1e-4..1e16).contains(&magnitude) {
        // Rust's `{:e}` is the shortest round trip too: `1e16`, `1.5e-7`.
        let text = format!("{f:e}");
        let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
        let (sign, digits) = match exponent.strip_prefix('-') {
            Some(digits) => ('-', digits),
            None => ('+', exponent),
        };
        return format!("{mantissa}e{sign}{digits:0>2}");
    }
    // `{:?}` prints the shortest round trip without an exponent here, `.0` included.
    format!("{f:?}")
}

/// A str as Python's `repr`: single quotes unless it holds one and no double quote.
fn string(out: &mut String, s: &str) {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let code = c as u32;
                if code < 0x100 {
                    out.push_str(&format!("\\x{code:02x}"));
                } else if code < 0x10000 {
                    out.push_str(&format!("\\u{code:04x}"));
                } else {
                    out.push_str(&format!("\\U{code:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Bytes as Python's `repr`: `b'...'`, printable ASCII as is, the rest escaped.
fn bytes(out: &mut String, b: &[u8]) {
    let quote = if b.contains(&b'\'') && !b.contains(&b'"') {
        b'"'
    } else {
        b'\''
    };
    out.push('b');
    out.push(quote as char);
    for &byte in b {
        match byte {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c as char);
            }
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push(quote as char);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_print_as_python_prints_them() {
        let cases = [
            (Value::None, "None"),
            (Value::Bool(true), "True"),
            (Value::Int(-3), "-3"),
            (Value::Float(1.0), "1.0"),
            (Value::Float(0.1), "0.1"),
            (Value::Float(1e16), "1e+16"),
            (Value::Float(1e15), "1000000000000000.0"),
            (Value::Float(1.5e-7), "1.5e-07"),
            (Value::Float(0.0001), "0.0001"),
            (Value::Float(f64::NEG_INFINITY), "-inf"),
            (Value::Str("it's".into()), "\"it's\""),
            (Value::Str("a\nb'\"".into()), "'a\\nb\\'\"'"),
            (Value::Bytes(b"a\x00'".to_vec()), "b\"a\\x00'\""),
            (Value::Tuple(vec![Value::Int(1)]), "(1,)"),
            (
                Value::List(vec![Value::Int(1), Value::Str("x".into())]),
                "[1, 'x']",
            ),
            (
                Value::Map(vec![(Value::Str("k".into()), Value::None)]),
                "{'k': None}",
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(repr(&value), expected, "{value:?}");
        }
    }
}
