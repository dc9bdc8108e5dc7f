//! A pickle codec for the subset of pickle that `multiprocessing.managers` traffic uses.
//!
//! # Decoding
//!
//! [`decode`] reads protocols 2 to 5 as CPython 3.6+ writes them (`ForkingPickler` uses
//! protocol 4 from 3.8 on, 3 before, 5 from 3.14) and returns a [`PyValue`]: plain data, never
//! an object that was imported or called. The opcodes understood are `PROTO`, `FRAME`, `STOP`,
//! the memo (`MEMOIZE`, `PUT`/`BINPUT`/`LONG_BINPUT`, `GET`/`BINGET`/`LONG_BINGET`), `MARK`,
//! `POP`, `POP_MARK`, `DUP`, `NONE`, `NEWTRUE`/`NEWFALSE`, `BININT`/`BININT1`/`BININT2`,
//! `LONG1`/`LONG4`, `BINFLOAT`, `SHORT_BINUNICODE`/`BINUNICODE`/`BINUNICODE8`,
//! `SHORT_BINBYTES`/`BINBYTES`/`BINBYTES8`/`BYTEARRAY8`, the tuple, list, dict, set and
//! frozenset opcodes, `GLOBAL`/`STACK_GLOBAL`, `REDUCE`, `NEWOBJ` and `BUILD`. Anything else
//! (persistent ids, out-of-band buffers, the extension registry, protocol 0/1 object opcodes)
//! is refused.
//!
//! Globals are checked against an allow-list **when they are read**, before anything else
//! happens; a global outside it is refused with [`PickleError::Refused`]. Allowed globals only
//! ever select how data is interpreted:
//!
//! | pickled | decoded as |
//! |---|---|
//! | `multiprocessing.managers.Token` (`NEWOBJ` + `BUILD` with the state tuple or dict) | [`PyValue::Token`] |
//! | `multiprocessing.managers.RebuildProxy(<proxy class>, token, serializer, kwds)`, the proxy class being `AutoProxy`, `ListProxy`, `DictProxy`, ... | [`PyValue::Proxy`] |
//! | a builtin exception class (`builtins.ValueError`, ...), `_queue.Empty`, `queue.Empty`/`Full`/`ShutDown`, `threading.BrokenBarrierError`, `multiprocessing.managers.RemoteError`, `multiprocessing.context.*Error`, called by `REDUCE` with its args, optionally followed by `BUILD` with a state | [`PyValue::Exception`] |
//! | `builtins.slice` | [`PyValue::Slice`] |
//! | `builtins.complex` | [`PyValue::Complex`] |
//! | `builtins.bytearray` (protocols 2-4), `BYTEARRAY8` (protocol 5) | [`PyValue::ByteArray`] |
//! | `builtins.set`/`frozenset` (protocols 2-3), `EMPTY_SET`/`ADDITEMS`/`FROZENSET` (4+) | [`PyValue::Set`]/[`PyValue::FrozenSet`] |
//! | `builtins.list` (how `ForkingPickler` sends dict views), `builtins.bytes` and `_codecs.encode` (bytes under protocol 2) | [`PyValue::List`], [`PyValue::Bytes`] |
//!
//! Protocol 2's renamed modules (`__builtin__`, `exceptions`, `Queue`) are read as their
//! Python 3 names. [`DecodeOptions::proxy_classes`] adds user proxy classes;
//! [`DecodeOptions::opaque_globals`] keeps any other global symbolically as a [`PyObject`]
//! (still never resolved, nor called: the manager server uses it to keep such objects as
//! [`Value::Opaque`]s, see [`PyValue::into_value`]).
//!
//! Limits: every length prefix is checked against the bytes actually left before anything is
//! allocated; nesting is bounded ([`DecodeOptions::max_depth`]); memo references that would
//! copy a shared object many times (a "billion laughs" pickle) are bounded
//! ([`DecodeOptions::max_copied_nodes`], [`DecodeOptions::max_copied_bytes`]); recursive
//! structures (a list containing itself) are refused; integers beyond `i128` are kept as
//! [`PyValue::BigInt`]; trailing bytes after `STOP` are refused. No input makes the decoder
//! panic.
//!
//! # Encoding
//!
//! [`encode`] writes protocol 4 (with one `FRAME` unless [`EncodeOptions::frame`] is off, and
//! without memo, which CPython does not need), in the shapes CPython itself writes:
//! `STACK_GLOBAL('multiprocessing.managers', 'Token') EMPTY_TUPLE NEWOBJ (typeid, address, id)
//! BUILD` for a token, `STACK_GLOBAL(module, name) args REDUCE [state BUILD]` for an exception,
//! `RebuildProxy(...)` for a proxy. CPython 3.6 and later load everything it writes.
//!
//! # Conventions
//!
//! - A token's `id` is the object's id written as lowercase hex without leading zeros, as
//!   CPython writes `'%x' % id(obj)`; decoding accepts any hex string that fits a `u64`.
//! - A token's address is `(host, port)` for [`Address::Tcp`] (`"[::1]:5"` ↔ `('::1', 5)`),
//!   a `str` path for [`Address::Unix`], and `bytes` for a Linux abstract socket (a path that
//!   starts with a NUL byte), as CPython reports them.
//! - [`PyValue::into_value`] and [`PyValue::from_value`] convert to and from the codec-neutral
//!   [`Value`]; see there for how sets, slices, exceptions and proxies map.

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;

use crate::address::Address;
use crate::value::{Opaque, Value};
use crate::wire::Token;

/// The module of CPython's manager classes.
pub const MANAGERS_MODULE: &str = "multiprocessing.managers";

/// The key of the one-entry [`Value::Map`] that stands for a Python `slice`:
/// `{SLICE_TAG: (start, stop, step)}`.
pub const SLICE_TAG: &str = "$py:slice";
/// The key of the one-entry [`Value::Map`] that stands for a Python `complex`:
/// `{COMPLEX_TAG: (real, imag)}`.
pub const COMPLEX_TAG: &str = "$py:complex";
/// The key of the one-entry [`Value::Map`] that stands for a Python exception:
/// `{EXCEPTION_TAG: (module, name, args, state)}`, `state` being `None` when the exception had
/// none.
pub const EXCEPTION_TAG: &str = "$py:exception";

/// The proxy classes of `multiprocessing.managers` that may appear in a pickled proxy.
const PROXY_CLASSES: &[&str] = &[
    "BaseProxy",
    "AutoProxy",
    "IteratorProxy",
    "AcquirerProxy",
    "ConditionProxy",
    "EventProxy",
    "BarrierProxy",
    "NamespaceProxy",
    "ValueProxy",
    "BaseListProxy",
    "ListProxy",
    "DictProxy",
    "_BaseDictProxy",
    "SetProxy",
    "_BaseSetProxy",
    "ArrayProxy",
    "BasePoolProxy",
    "PoolProxy",
];

/// The exception classes of `builtins` (CPython 3.6 to 3.13).
const BUILTIN_EXCEPTIONS: &[&str] = &[
    "ArithmeticError",
    "AssertionError",
    "AttributeError",
    "BaseException",
    "BaseExceptionGroup",
    "BlockingIOError",
    "BrokenPipeError",
    "BufferError",
    "BytesWarning",
    "ChildProcessError",
    "ConnectionAbortedError",
    "ConnectionError",
    "ConnectionRefusedError",
    "ConnectionResetError",
    "DeprecationWarning",
    "EOFError",
    "EncodingWarning",
    "EnvironmentError",
    "Exception",
    "ExceptionGroup",
    "FileExistsError",
    "FileNotFoundError",
    "FloatingPointError",
    "FutureWarning",
    "GeneratorExit",
    "IOError",
    "ImportError",
    "ImportWarning",
    "IndentationError",
    "IndexError",
    "InterruptedError",
    "IsADirectoryError",
    "KeyError",
    "KeyboardInterrupt",
    "LookupError",
    "MemoryError",
    "ModuleNotFoundError",
    "NameError",
    "NotADirectoryError",
    "NotImplementedError",
    "OSError",
    "OverflowError",
    "PendingDeprecationWarning",
    "PermissionError",
    "ProcessLookupError",
    "PythonFinalizationError",
    "RecursionError",
    "ReferenceError",
    "ResourceWarning",
    "RuntimeError",
    "RuntimeWarning",
    "StopAsyncIteration",
    "StopIteration",
    "SyntaxError",
    "SyntaxWarning",
    "SystemError",
    "SystemExit",
    "TabError",
    "TimeoutError",
    "TypeError",
    "UnboundLocalError",
    "UnicodeDecodeError",
    "UnicodeEncodeError",
    "UnicodeError",
    "UnicodeTranslateError",
    "UnicodeWarning",
    "UserWarning",
    "ValueError",
    "Warning",
    "ZeroDivisionError",
];

/// Exception classes outside `builtins` that manager traffic carries.
const OTHER_EXCEPTIONS: &[(&str, &str)] = &[
    ("_queue", "Empty"),
    ("queue", "Empty"),
    ("queue", "Full"),
    ("queue", "ShutDown"),
    ("threading", "BrokenBarrierError"),
    ("multiprocessing.managers", "RemoteError"),
    ("multiprocessing.context", "ProcessError"),
    ("multiprocessing.context", "BufferTooShort"),
    ("multiprocessing.context", "TimeoutError"),
    ("multiprocessing.context", "AuthenticationError"),
];

// ---------------------------------------------------------------------------------------------
// The value model
// ---------------------------------------------------------------------------------------------

/// A Python value as pickled in manager traffic: [`Value`]'s kinds plus the shapes only Python
/// has (sets, slices, complex numbers, bytearrays, exceptions, tokens and proxies).
///
/// Dicts keep their insertion order; sets keep the order they were pickled in. Floats compare
/// as `f64` does (so `NaN != NaN`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum PyValue {
    /// `None`.
    #[default]
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An `int` within `i128`.
    Int(i128),
    /// An `int` beyond `i128`: little-endian two's complement, shortest form (as `LONG1` and
    /// `LONG4` carry it).
    BigInt(Vec<u8>),
    /// A `float`.
    Float(f64),
    /// A `complex`.
    Complex {
        /// The real part.
        re: f64,
        /// The imaginary part.
        im: f64,
    },
    /// A `str`.
    Str(String),
    /// A `bytes`.
    Bytes(Vec<u8>),
    /// A `bytearray`.
    ByteArray(Vec<u8>),
    /// A `list`.
    List(Vec<PyValue>),
    /// A `tuple`.
    Tuple(Vec<PyValue>),
    /// A `dict`, in insertion order.
    Dict(Vec<(PyValue, PyValue)>),
    /// A `set`, in pickled order.
    Set(Vec<PyValue>),
    /// A `frozenset`, in pickled order.
    FrozenSet(Vec<PyValue>),
    /// A `slice(start, stop, step)`.
    Slice {
        /// `slice.start`.
        start: Box<PyValue>,
        /// `slice.stop`.
        stop: Box<PyValue>,
        /// `slice.step`.
        step: Box<PyValue>,
    },
    /// A `multiprocessing.managers.Token`, as sent in `#PROXY` replies and `get_methods`.
    Token(Token),
    /// A pickled proxy: `RebuildProxy(<class>, token, serializer, kwds)`.
    Proxy(Box<PyProxy>),
    /// An exception instance, as sent in `#ERROR` replies.
    Exception(PyException),
    /// Any other object, kept symbolically; only produced with
    /// [`DecodeOptions::opaque_globals`].
    Object(Box<PyObject>),
    /// An object already in its opaque form (its pickle): written as it is. Made by
    /// [`PyValue::from_value`] from a [`Value::Opaque`].
    Opaque(Opaque),
}

/// A proxy pickled by `BaseProxy.__reduce__`: `RebuildProxy(func, token, serializer, kwds)`.
#[derive(Debug, Clone, PartialEq)]
pub struct PyProxy {
    /// The module of the proxy class (`multiprocessing.managers` for CPython's own).
    pub module: String,
    /// The proxy class: `AutoProxy` (with `{'exposed': (...)}` in `kwds`), or the registered
    /// proxy type, such as `DictProxy` or `ListProxy`.
    pub class: String,
    /// The object the proxy refers to.
    pub token: Token,
    /// The serializer name, `'pickle'`.
    pub serializer: String,
    /// Keyword arguments for the proxy class (`exposed`, ...), in order.
    pub kwds: Vec<(PyValue, PyValue)>,
}

impl PyProxy {
    /// `RebuildProxy(AutoProxy, token, 'pickle', {'exposed': exposed})` — what CPython sends
    /// for an auto proxy. Without `exposed`, the receiving client asks the server for the
    /// exposed methods (`get_methods`) when it rebuilds the proxy.
    pub fn auto(token: Token, exposed: Option<&[&str]>) -> Self {
        let kwds = match exposed {
            Some(names) => vec![(
                PyValue::str("exposed"),
                PyValue::Tuple(names.iter().map(|n| PyValue::str(*n)).collect()),
            )],
            None => Vec::new(),
        };
        PyProxy {
            module: MANAGERS_MODULE.to_string(),
            class: "AutoProxy".to_string(),
            token,
            serializer: "pickle".to_string(),
            kwds,
        }
    }

    /// `RebuildProxy(<class>, token, 'pickle', {})` for a proxy class of
    /// `multiprocessing.managers` such as `DictProxy` or `ListProxy`.
    pub fn of_class(class: &str, token: Token) -> Self {
        PyProxy {
            module: MANAGERS_MODULE.to_string(),
            class: class.to_string(),
            token,
            serializer: "pickle".to_string(),
            kwds: Vec::new(),
        }
    }
}

/// An exception instance: `module.name(*args)`, and the state `BUILD` applied to it (the
/// instance `__dict__`, e.g. `{'name': ..., 'args': ...}` for an `AttributeError` from
/// CPython 3.12+, or a user exception's attributes).
#[derive(Debug, Clone, PartialEq)]
pub struct PyException {
    /// The module of the class: `builtins`, `_queue`, ...
    pub module: String,
    /// The class name: `ValueError`, `Empty`, ...
    pub name: String,
    /// `exception.args`.
    pub args: Vec<PyValue>,
    /// The state applied with `BUILD`, usually a dict; `None` when there was none.
    pub state: Option<Box<PyValue>>,
}

impl PyException {
    /// An exception of class `module.name` with these arguments and no state.
    pub fn new(module: &str, name: &str, args: Vec<PyValue>) -> Self {
        PyException {
            module: module.to_string(),
            name: name.to_string(),
            args,
            state: None,
        }
    }

    /// A builtin exception, such as `PyException::builtin("ValueError", vec!["boom".into()])`.
    pub fn builtin(name: &str, args: Vec<PyValue>) -> Self {
        PyException::new("builtins", name, args)
    }

    /// The same exception with a state dict, applied by `BUILD` when Python loads it.
    pub fn with_state(mut self, state: Vec<(PyValue, PyValue)>) -> Self {
        self.state = Some(Box::new(PyValue::Dict(state)));
        self
    }

    /// `module.name`, or just `name` for builtins: how Python names the class in messages.
    pub fn qualified_name(&self) -> String {
        if self.module == "builtins" {
            self.name.clone()
        } else {
            format!("{}.{}", self.module, self.name)
        }
    }
}

/// An object outside the allow-list, kept as the opcodes that would have built it. Produced
/// only with [`DecodeOptions::opaque_globals`]; nothing in it was ever resolved or called.
#[derive(Debug, Clone, PartialEq)]
pub enum PyObject {
    /// A class or function, by name (`GLOBAL`/`STACK_GLOBAL`).
    Global {
        /// The module.
        module: String,
        /// The qualified name inside the module.
        name: String,
    },
    /// `func(*args)` (`REDUCE`).
    Reduce {
        /// The callable.
        func: PyValue,
        /// The argument tuple.
        args: PyValue,
    },
    /// `cls.__new__(cls, *args)` (`NEWOBJ`).
    NewObj {
        /// The class.
        cls: PyValue,
        /// The argument tuple.
        args: PyValue,
    },
    /// `obj.__setstate__(state)` or `obj.__dict__.update(state)` (`BUILD`).
    Build {
        /// The object.
        obj: PyValue,
        /// The state.
        state: PyValue,
    },
    /// `obj.extend(items)` or `obj.append(item)` for each (`APPEND`/`APPENDS` on an object,
    /// as a `deque` is pickled).
    Extend {
        /// The object.
        obj: PyValue,
        /// The items.
        items: Vec<PyValue>,
    },
    /// `obj[key] = value` for each entry (`SETITEM`/`SETITEMS` on an object, as an
    /// `OrderedDict` or a `defaultdict` is pickled).
    SetItems {
        /// The object.
        obj: PyValue,
        /// The entries.
        entries: Vec<(PyValue, PyValue)>,
    },
    /// `cls.__new__(cls, *args, **kwargs)` (`NEWOBJ_EX`).
    NewObjEx {
        /// The class.
        cls: PyValue,
        /// The argument tuple.
        args: PyValue,
        /// The keyword arguments.
        kwargs: PyValue,
    },
}

impl PyObject {
    /// The class (or function) that builds the object, `module.name`, as the pickle names it.
    pub fn class_name(&self) -> String {
        let of = |value: &PyValue| match value {
            PyValue::Object(object) => object.class_name(),
            PyValue::Opaque(opaque) => opaque.class().to_string(),
            other => other.kind().to_string(),
        };
        match self {
            PyObject::Global { module, name } => format!("{module}.{name}"),
            PyObject::Reduce { func, .. } => of(func),
            PyObject::NewObj { cls, .. } | PyObject::NewObjEx { cls, .. } => of(cls),
            PyObject::Build { obj, .. }
            | PyObject::Extend { obj, .. }
            | PyObject::SetItems { obj, .. } => of(obj),
        }
    }
}

impl PyValue {
    /// A `str` value.
    pub fn str(s: impl Into<String>) -> Self {
        PyValue::Str(s.into())
    }

    /// A `slice(start, stop, step)`.
    pub fn slice(start: PyValue, stop: PyValue, step: PyValue) -> Self {
        PyValue::Slice {
            start: Box::new(start),
            stop: Box::new(stop),
            step: Box::new(step),
        }
    }

    /// The Python name of the value's type, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            PyValue::None => "NoneType",
            PyValue::Bool(_) => "bool",
            PyValue::Int(_) | PyValue::BigInt(_) => "int",
            PyValue::Float(_) => "float",
            PyValue::Complex { .. } => "complex",
            PyValue::Str(_) => "str",
            PyValue::Bytes(_) => "bytes",
            PyValue::ByteArray(_) => "bytearray",
            PyValue::List(_) => "list",
            PyValue::Tuple(_) => "tuple",
            PyValue::Dict(_) => "dict",
            PyValue::Set(_) => "set",
            PyValue::FrozenSet(_) => "frozenset",
            PyValue::Slice { .. } => "slice",
            PyValue::Token(_) => "Token",
            PyValue::Proxy(_) => "proxy",
            PyValue::Exception(_) => "exception",
            PyValue::Object(_) | PyValue::Opaque(_) => "object",
        }
    }

    /// The string, if this is a `str`.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            PyValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to the codec-neutral [`Value`]:
    ///
    /// | Python | [`Value`] |
    /// |---|---|
    /// | `None`, `bool`, `int`, `float`, `str`, `bytes`, `list`, `tuple`, `dict` | the same kind |
    /// | an `int` beyond `i128` | [`Value::BigInt`] |
    /// | `bytearray`, `set`, `frozenset` | [`Value::ByteArray`], [`Value::Set`], [`Value::FrozenSet`] |
    /// | any other object ([`PyValue::Object`]) | [`Value::Opaque`]: its class and pickle |
    /// | `Token`, a pickled proxy | [`Value::Proxy`] (the proxy class and its `kwds` are dropped) |
    /// | `slice(a, b, c)` | `{SLICE_TAG: (a, b, c)}` |
    /// | `complex(re, im)` | `{COMPLEX_TAG: (re, im)}` |
    /// | an exception | `{EXCEPTION_TAG: (module, name, args, state or None)}` |
    ///
    /// The tagged one-entry maps (see [`SLICE_TAG`] and the others) come back as the Python
    /// shapes through [`PyValue::from_value`], as every kind does except proxy classes
    /// (proxies come back as `AutoProxy`).
    pub fn into_value(self) -> Result<Value, PickleError> {
        Ok(match self {
            PyValue::None => Value::None,
            PyValue::Bool(b) => Value::Bool(b),
            PyValue::Int(i) => Value::Int(i),
            PyValue::BigInt(b) => Value::BigInt(b),
            PyValue::Float(f) => Value::Float(f),
            PyValue::Str(s) => Value::Str(s),
            PyValue::Bytes(b) => Value::Bytes(b),
            PyValue::ByteArray(b) => Value::ByteArray(b),
            PyValue::List(items) => Value::List(values(items)?),
            PyValue::Set(items) => Value::Set(values(items)?),
            PyValue::FrozenSet(items) => Value::FrozenSet(values(items)?),
            PyValue::Tuple(items) => Value::Tuple(values(items)?),
            PyValue::Dict(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((k.into_value()?, v.into_value()?)))
                    .collect::<Result<_, PickleError>>()?,
            ),
            PyValue::Token(token) => Value::Proxy(token),
            PyValue::Proxy(proxy) => Value::Proxy(proxy.token),
            PyValue::Slice { start, stop, step } => tagged(
                SLICE_TAG,
                Value::Tuple(vec![
                    start.into_value()?,
                    stop.into_value()?,
                    step.into_value()?,
                ]),
            ),
            PyValue::Complex { re, im } => tagged(
                COMPLEX_TAG,
                Value::Tuple(vec![Value::Float(re), Value::Float(im)]),
            ),
            PyValue::Exception(e) => tagged(
                EXCEPTION_TAG,
                Value::Tuple(vec![
                    Value::Str(e.module),
                    Value::Str(e.name),
                    Value::Tuple(values(e.args)?),
                    match e.state {
                        Some(state) => state.into_value()?,
                        None => Value::None,
                    },
                ]),
            ),
            PyValue::Object(object) => Value::Opaque(Opaque::of_object(&object)?),
            PyValue::Opaque(opaque) => Value::Opaque(opaque),
        })
    }

    /// Converts a [`Value`] into the Python value a CPython peer should load:
    /// [`Value::Map`] becomes a `dict` (in order), [`Value::Proxy`] a proxy pickled as
    /// `RebuildProxy(AutoProxy, token, 'pickle', {})` (the receiving client asks the server
    /// for its methods; build a [`PyProxy`] or a [`PyValue::Token`] yourself for anything
    /// else), and the tagged one-entry maps of [`PyValue::into_value`] become the slice,
    /// complex number or exception they stand for.
    pub fn from_value(value: Value) -> PyValue {
        match value {
            Value::None => PyValue::None,
            Value::Bool(b) => PyValue::Bool(b),
            Value::Int(i) => PyValue::Int(i),
            Value::BigInt(b) => PyValue::BigInt(b),
            Value::Float(f) => PyValue::Float(f),
            Value::Str(s) => PyValue::Str(s),
            Value::Bytes(b) => PyValue::Bytes(b),
            Value::ByteArray(b) => PyValue::ByteArray(b),
            Value::Set(items) => PyValue::Set(items.into_iter().map(PyValue::from).collect()),
            Value::FrozenSet(items) => {
                PyValue::FrozenSet(items.into_iter().map(PyValue::from).collect())
            }
            Value::Opaque(opaque) => PyValue::Opaque(opaque),
            Value::List(items) => PyValue::List(items.into_iter().map(PyValue::from).collect()),
            Value::Tuple(items) => PyValue::Tuple(items.into_iter().map(PyValue::from).collect()),
            Value::Proxy(token) => PyValue::Proxy(Box::new(PyProxy::auto(token, None))),
            Value::Map(entries) => match untag(entries) {
                Ok(special) => special,
                Err(entries) => PyValue::Dict(
                    entries
                        .into_iter()
                        .map(|(k, v)| (PyValue::from(k), PyValue::from(v)))
                        .collect(),
                ),
            },
        }
    }
}

impl From<Value> for PyValue {
    fn from(value: Value) -> Self {
        PyValue::from_value(value)
    }
}

impl From<&str> for PyValue {
    fn from(s: &str) -> Self {
        PyValue::Str(s.to_string())
    }
}

impl From<String> for PyValue {
    fn from(s: String) -> Self {
        PyValue::Str(s)
    }
}

impl From<i64> for PyValue {
    fn from(i: i64) -> Self {
        PyValue::Int(i128::from(i))
    }
}

impl From<bool> for PyValue {
    fn from(b: bool) -> Self {
        PyValue::Bool(b)
    }
}

impl From<PyException> for PyValue {
    fn from(e: PyException) -> Self {
        PyValue::Exception(e)
    }
}

impl From<PyProxy> for PyValue {
    fn from(p: PyProxy) -> Self {
        PyValue::Proxy(Box::new(p))
    }
}

impl From<Token> for PyValue {
    fn from(t: Token) -> Self {
        PyValue::Token(t)
    }
}

fn values(items: Vec<PyValue>) -> Result<Vec<Value>, PickleError> {
    items.into_iter().map(PyValue::into_value).collect()
}

fn tagged(tag: &str, content: Value) -> Value {
    Value::Map(vec![(Value::Str(tag.to_string()), content)])
}

/// The Python shape a tagged one-entry map stands for, or the entries back.
fn untag(mut entries: Vec<(Value, Value)>) -> Result<PyValue, Vec<(Value, Value)>> {
    if entries.len() != 1 {
        return Err(entries);
    }
    match entries.pop() {
        Some((Value::Str(tag), Value::Tuple(items))) => match tagged_shape(&tag, items) {
            Ok(value) => Ok(value),
            Err(items) => Err(vec![(Value::Str(tag), Value::Tuple(items))]),
        },
        Some(entry) => Err(vec![entry]),
        None => Err(entries),
    }
}

/// The Python shape of a tag's content, or the content back when it does not fit.
fn tagged_shape(tag: &str, items: Vec<Value>) -> Result<PyValue, Vec<Value>> {
    match tag {
        SLICE_TAG => {
            let [start, stop, step]: [Value; 3] = items.try_into()?;
            Ok(PyValue::slice(start.into(), stop.into(), step.into()))
        }
        COMPLEX_TAG => {
            let [re, im]: [Value; 2] = items.try_into()?;
            let real = |v: &Value| match v {
                Value::Float(f) => Some(*f),
                Value::Int(i) => Some(*i as f64),
                _ => None,
            };
            match (real(&re), real(&im)) {
                (Some(re), Some(im)) => Ok(PyValue::Complex { re, im }),
                _ => Err(vec![re, im]),
            }
        }
        EXCEPTION_TAG => {
            let [module, name, args, state]: [Value; 4] = items.try_into()?;
            match (module, name, args) {
                (Value::Str(module), Value::Str(name), Value::Tuple(args)) => {
                    Ok(PyValue::Exception(PyException {
                        module,
                        name,
                        args: args.into_iter().map(PyValue::from).collect(),
                        state: match state {
                            Value::None => None,
                            state => Some(Box::new(PyValue::from(state))),
                        },
                    }))
                }
                (module, name, args) => Err(vec![module, name, args, state]),
            }
        }
        _ => Err(items),
    }
}

fn describe_object(object: &PyObject) -> String {
    match object {
        PyObject::Global { module, name } => format!("{module}.{name}"),
        PyObject::Reduce { func, .. } => format!("a call of {}", describe(func)),
        PyObject::NewObj { cls, .. } | PyObject::NewObjEx { cls, .. } => {
            format!("an instance of {}", describe(cls))
        }
        PyObject::Build { obj, .. }
        | PyObject::Extend { obj, .. }
        | PyObject::SetItems { obj, .. } => describe(obj),
    }
}

fn describe(value: &PyValue) -> String {
    match value {
        PyValue::Object(object) => describe_object(object),
        other => other.kind().to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why a pickle could not be decoded or a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PickleError {
    /// The data ended before the pickle did.
    #[error("pickle data truncated at byte {offset}: {what}")]
    Truncated {
        /// Where the missing bytes should have been.
        offset: usize,
        /// What was being read.
        what: String,
    },
    /// A global outside the allow-list; it was not resolved.
    #[error(
        "refused to unpickle the global {module}.{name}: only plain data, exceptions, slices \
         and manager tokens and proxies are accepted"
    )]
    Refused {
        /// The module named by the pickle.
        module: String,
        /// The name inside the module.
        name: String,
    },
    /// An opcode this codec does not implement.
    #[error("unsupported pickle opcode {opcode:#04x} at byte {offset}")]
    Unsupported {
        /// The opcode byte.
        opcode: u8,
        /// Its position.
        offset: usize,
    },
    /// A limit was exceeded (nesting depth, size, copies through the memo, integer size).
    #[error("pickle exceeds a limit: {0}")]
    Limit(String),
    /// The pickle is malformed, or a value has the wrong shape.
    #[error("invalid pickle{}: {message}", offset.map(|o| format!(" at byte {o}")).unwrap_or_default())]
    Invalid {
        /// Where, when known.
        offset: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A value cannot be written as a pickle.
    #[error("cannot pickle: {0}")]
    Encode(String),
}

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/// Limits and policies of [`decode_with`].
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// The deepest nesting of containers accepted. Default 256.
    pub max_depth: usize,
    /// How many values may be copied through memo references (an object referenced twice is
    /// copied once), beyond one per byte of the pickle (so that `['x'] * n`, one memo
    /// reference per item, always decodes). Default one million.
    pub max_copied_nodes: usize,
    /// How many `str`/`bytes` bytes may be copied through memo references. Default 64 MiB.
    pub max_copied_bytes: usize,
    /// Keep globals outside the allow-list as [`PyObject`]s instead of refusing them. They are
    /// never resolved or called either way. Default off. The manager server turns it on, and
    /// stores such objects as [`Value::Opaque`]s.
    pub opaque_globals: bool,
    /// More proxy classes, `(module, name)`, accepted as the first argument of
    /// `RebuildProxy` besides those of `multiprocessing.managers`.
    pub proxy_classes: Vec<(String, String)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_depth: 256,
            max_copied_nodes: 1_000_000,
            max_copied_bytes: 64 << 20,
            opaque_globals: false,
            proxy_classes: Vec::new(),
        }
    }
}

/// Decodes one pickle with the default [`DecodeOptions`].
pub fn decode(data: &[u8]) -> Result<PyValue, PickleError> {
    decode_with(data, &DecodeOptions::default())
}

/// Decodes one pickle. The whole of `data` must be the pickle: bytes after `STOP` are an
/// error.
pub fn decode_with(data: &[u8], options: &DecodeOptions) -> Result<PyValue, PickleError> {
    // A plain tree of data (most requests) in one pass; anything else from the start, below.
    if let Some(value) = super::tree::decode_tree(data, options.max_depth) {
        return Ok(value);
    }
    // Most opcodes that make a node take 2 bytes or more; a small request (a method call) then
    // needs no growth of these vectors.
    let nodes = (data.len() / 4).clamp(8, 1024);
    let mut machine = Machine {
        data,
        pos: 0,
        options,
        arena: Vec::with_capacity(nodes),
        uses: Vec::with_capacity(nodes),
        stack: Vec::with_capacity(nodes.min(64)),
        marks: Vec::new(),
        memo: Memo::with_capacity(nodes),
    };
    let root = machine.run()?;
    let Machine { arena, uses, .. } = machine;
    Builder {
        on_path: vec![false; arena.len()],
        arena,
        uses,
        options,
        copied_nodes: 0,
        copy_budget: options.max_copied_nodes.saturating_add(data.len()),
        copied_bytes: 0,
    }
    .build(root)
}

/// What a global names, once it passed the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    Token,
    RebuildProxy,
    ProxyClass,
    Exception,
    Slice,
    ByteArray,
    Bytes,
    Complex,
    Set,
    FrozenSet,
    List,
    CodecsEncode,
    Other,
}

/// One object built by the pickle machine. Containers hold indices into the arena, so that an
/// object stays one object however many memo references point at it, and later mutation
/// (`APPEND` after `MEMOIZE`) is seen through all of them, as in Python.
#[derive(Debug)]
enum Node {
    None,
    Bool(bool),
    Int(i128),
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    ByteArray(Vec<u8>),
    List(Vec<usize>),
    Tuple(Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Set(Vec<usize>),
    FrozenSet(Vec<usize>),
    Global {
        module: String,
        name: String,
        known: Known,
    },
    Reduce(usize, usize),
    NewObj(usize, usize),
    NewObjEx(usize, usize, usize),
    Build(usize, usize),
    /// Items appended to an object (`APPENDS` on what `REDUCE` made: a `deque`).
    Extend(usize, Vec<usize>),
    /// Entries set on an object (`SETITEMS` on what `REDUCE` made: an `OrderedDict`).
    SetItems(usize, Vec<(usize, usize)>),
    /// A value kept in its pickled form (a str with a lone surrogate).
    Opaque(Opaque),
    /// A node whose content was moved out while building the result.
    Taken,
}

impl Node {
    /// Whether the node is an object built by a class (so `APPEND`/`SETITEM` on it are calls of
    /// its methods, kept symbolically).
    fn is_object(&self) -> bool {
        matches!(
            self,
            Node::Reduce(..)
                | Node::NewObj(..)
                | Node::NewObjEx(..)
                | Node::Build(..)
                | Node::Extend(..)
                | Node::SetItems(..)
        )
    }
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    options: &'a DecodeOptions,
    arena: Vec<Node>,
    /// How many times each node is referenced from another node (or as the result).
    uses: Vec<u32>,
    stack: Vec<usize>,
    marks: Vec<usize>,
    memo: Memo,
}

/// The unpickler's memo: key -> arena index. Keys written in order from 0 (all `MEMOIZE`
/// writes, and what CPython's `BINPUT`s write) are kept in a vector; any other key in a map, so
/// that a key of 4 billion costs one entry, not a vector of that length.
struct Memo {
    /// `dense[key]`, or [`Memo::ABSENT`].
    dense: Vec<usize>,
    sparse: HashMap<u64, usize>,
    /// How many keys are stored (what `MEMOIZE` takes as its key).
    len: usize,
}

impl Memo {
    const ABSENT: usize = usize::MAX;

    fn with_capacity(capacity: usize) -> Memo {
        Memo {
            dense: Vec::with_capacity(capacity),
            sparse: HashMap::new(),
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: u64) -> Option<usize> {
        match usize::try_from(key).ok().and_then(|k| self.dense.get(k)) {
            Some(&index) if index != Memo::ABSENT => Some(index),
            Some(_) => None,
            None => self.sparse.get(&key).copied(),
        }
    }

    fn insert(&mut self, key: u64, index: usize) {
        match usize::try_from(key) {
            Ok(k) if k < self.dense.len() => {
                if self.dense[k] == Memo::ABSENT {
                    self.len += 1;
                }
                self.dense[k] = index;
            }
            Ok(k) if k == self.dense.len() && !self.sparse.contains_key(&key) => {
                self.dense.push(index);
                self.len += 1;
            }
            _ => {
                if self.sparse.insert(key, index).is_none() {
                    self.len += 1;
                }
            }
        }
    }
}

impl<'a> Machine<'a> {
    fn invalid(&self, offset: usize, message: impl Into<String>) -> PickleError {
        PickleError::Invalid {
            offset: Some(offset),
            message: message.into(),
        }
    }

    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], PickleError> {
        let left = self.data.len() - self.pos;
        if n > left as u64 {
            return Err(PickleError::Truncated {
                offset: self.pos,
                what: format!("{what} needs {n} bytes, {left} left"),
            });
        }
        let n = n as usize;
        let bytes = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], PickleError> {
        let bytes = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, PickleError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `\n`-terminated line (protocol 0 operands of `GLOBAL`, `PUT`, `GET`).
    fn line(&mut self, what: &str) -> Result<&'a str, PickleError> {
        let start = self.pos;
        let rest = &self.data[start..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(PickleError::Truncated {
                offset: start,
                what: format!("{what}: no end of line"),
            });
        };
        self.pos = start + end + 1;
        std::str::from_utf8(&rest[..end])
            .map_err(|_| self.invalid(start, format!("{what} is not UTF-8")))
    }

    fn decimal(&mut self, what: &str) -> Result<u64, PickleError> {
        let start = self.pos;
        let line = self.line(what)?;
        line.trim()
            .parse::<u64>()
            .map_err(|_| self.invalid(start, format!("{what} {line:?} is not a number")))
    }

    fn utf8(&self, offset: usize, bytes: &[u8]) -> Result<String, PickleError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            self.invalid(
                offset,
                "a str that is not valid UTF-8 (lone surrogates are not supported)",
            )
        })
    }

    fn node(&mut self, node: Node) -> usize {
        self.arena.push(node);
        self.uses.push(0);
        self.arena.len() - 1
    }

    fn push(&mut self, node: Node) {
        let index = self.node(node);
        self.stack.push(index);
    }

    fn used(&mut self, index: usize) {
        self.uses[index] = self.uses[index].saturating_add(1);
    }

    /// The bottom of the current mark frame: items below it are out of reach.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self, offset: usize) -> Result<usize, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.invalid(offset, "unpickling stack underflow"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self, offset: usize) -> Result<usize, PickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.invalid(offset, "unpickling stack underflow"));
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    fn pop_mark(&mut self, offset: usize) -> Result<Vec<usize>, PickleError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.invalid(offset, "no MARK before an opcode that needs one"));
        };
        Ok(self.stack.split_off(mark))
    }

    fn memo_get(&mut self, offset: usize, key: u64) -> Result<(), PickleError> {
        match self.memo.get(key) {
            Some(index) => {
                self.stack.push(index);
                Ok(())
            }
            None => Err(self.invalid(offset, format!("memo key {key} was never stored"))),
        }
    }

    fn memo_put(&mut self, offset: usize, key: u64) -> Result<(), PickleError> {
        let top = self.top(offset)?;
        self.memo.insert(key, top);
        Ok(())
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), PickleError> {
        // Protocol 2 writes some Python 3 names under their Python 2 names (fix_imports).
        let module = match module {
            "__builtin__" | "exceptions" => "builtins",
            "Queue" => "queue",
            "copy_reg" => "copyreg",
            other => other,
        };
        let known = classify(module, name, self.options).ok_or_else(|| PickleError::Refused {
            module: module.to_string(),
            name: name.to_string(),
        })?;
        self.push(Node::Global {
            module: module.to_string(),
            name: name.to_string(),
            known,
        });
        Ok(())
    }

    fn append(&mut self, offset: usize, list: usize, items: Vec<usize>) -> Result<(), PickleError> {
        for &item in &items {
            self.used(item);
        }
        match &mut self.arena[list] {
            Node::List(existing) | Node::Extend(_, existing) => {
                existing.extend(items);
                Ok(())
            }
            node if node.is_object() && self.options.opaque_globals => {
                // The object keeps its identity, as with BUILD.
                let before = std::mem::replace(node, Node::Taken);
                let inner = self.node(before);
                self.used(inner);
                self.arena[list] = Node::Extend(inner, items);
                Ok(())
            }
            _ => Err(self.invalid(offset, "APPEND to something that is not a list")),
        }
    }

    fn set_items(
        &mut self,
        offset: usize,
        dict: usize,
        items: Vec<usize>,
    ) -> Result<(), PickleError> {
        if items.len() % 2 == 1 {
            return Err(self.invalid(offset, "SETITEMS with an odd number of items"));
        }
        for &item in &items {
            self.used(item);
        }
        let pairs = items.chunks_exact(2).map(|pair| (pair[0], pair[1]));
        match &mut self.arena[dict] {
            Node::Dict(entries) | Node::SetItems(_, entries) => {
                entries.extend(pairs);
                Ok(())
            }
            node if node.is_object() && self.options.opaque_globals => {
                let pairs = pairs.collect();
                let before = std::mem::replace(node, Node::Taken);
                let inner = self.node(before);
                self.used(inner);
                self.arena[dict] = Node::SetItems(inner, pairs);
                Ok(())
            }
            _ => Err(self.invalid(offset, "SETITEM on something that is not a dict")),
        }
    }

    fn run(&mut self) -> Result<usize, PickleError> {
        loop {
            let offset = self.pos;
            let opcode = self.u8("an opcode")?;
            match opcode {
                // PROTO
                0x80 => {
                    let protocol = self.u8("the protocol number")?;
                    if protocol > 5 {
                        return Err(
                            self.invalid(offset, format!("unsupported protocol {protocol}"))
                        );
                    }
                }
                // FRAME: the frame's length is only checked; frames need no other handling.
                0x95 => {
                    let len = self.u64("a frame length")?;
                    let left = (self.data.len() - self.pos) as u64;
                    if len > left {
                        return Err(PickleError::Truncated {
                            offset,
                            what: format!("a frame of {len} bytes, {left} left"),
                        });
                    }
                }
                // STOP
                b'.' => {
                    let result = self.pop(offset)?;
                    if self.pos != self.data.len() {
                        return Err(self.invalid(
                            self.pos,
                            format!("{} bytes after STOP", self.data.len() - self.pos),
                        ));
                    }
                    self.used(result);
                    return Ok(result);
                }
                // MARK, POP, POP_MARK, DUP
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    if self.stack.len() > self.floor() {
                        self.stack.pop();
                    } else {
                        self.pop_mark(offset)?;
                    }
                }
                b'1' => {
                    self.pop_mark(offset)?;
                }
                b'2' => {
                    let top = self.top(offset)?;
                    self.stack.push(top);
                }
                // The memo: MEMOIZE, PUT, BINPUT, LONG_BINPUT, GET, BINGET, LONG_BINGET
                0x94 => {
                    let key = self.memo.len() as u64;
                    self.memo_put(offset, key)?;
                }
                b'p' => {
                    let key = self.decimal("a PUT index")?;
                    self.memo_put(offset, key)?;
                }
                b'q' => {
                    let key = u64::from(self.u8("a BINPUT index")?);
                    self.memo_put(offset, key)?;
                }
                b'r' => {
                    let key = u64::from(self.u32("a LONG_BINPUT index")?);
                    self.memo_put(offset, key)?;
                }
                b'g' => {
                    let key = self.decimal("a GET index")?;
                    self.memo_get(offset, key)?;
                }
                b'h' => {
                    let key = u64::from(self.u8("a BINGET index")?);
                    self.memo_get(offset, key)?;
                }
                b'j' => {
                    let key = u64::from(self.u32("a LONG_BINGET index")?);
                    self.memo_get(offset, key)?;
                }
                // Constants
                b'N' => self.push(Node::None),
                0x88 => self.push(Node::Bool(true)),
                0x89 => self.push(Node::Bool(false)),
                // Integers: BININT1, BININT2, BININT, LONG1, LONG4
                b'K' => {
                    let v = self.u8("a BININT1")?;
                    self.push(Node::Int(i128::from(v)));
                }
                b'M' => {
                    let v = u16::from_le_bytes(self.array("a BININT2")?);
                    self.push(Node::Int(i128::from(v)));
                }
                b'J' => {
                    let v = i32::from_le_bytes(self.array("a BININT")?);
                    self.push(Node::Int(i128::from(v)));
                }
                0x8a => {
                    let n = self.u8("a LONG1 length")?;
                    let bytes = self.take(u64::from(n), "a LONG1")?;
                    self.push(int_node(bytes));
                }
                0x8b => {
                    let n = i32::from_le_bytes(self.array("a LONG4 length")?);
                    if n < 0 {
                        return Err(self.invalid(offset, "LONG4 with a negative length"));
                    }
                    let bytes = self.take(n as u64, "a LONG4")?;
                    self.push(int_node(bytes));
                }
                // BINFLOAT: big-endian
                b'G' => {
                    let v = f64::from_be_bytes(self.array("a BINFLOAT")?);
                    self.push(Node::Float(v));
                }
                // str: SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                0x8c | b'X' | 0x8d => {
                    let len = match opcode {
                        0x8c => u64::from(self.u8("a str length")?),
                        b'X' => u64::from(self.u32("a str length")?),
                        _ => self.u64("a str length")?,
                    };
                    let at = self.pos;
                    let bytes = self.take(len, "a str")?;
                    match self.utf8(at, bytes) {
                        Ok(s) => self.push(Node::Str(s)),
                        // A str with a lone surrogate (`'\ud800'`, pickled as UTF-8 with
                        // surrogatepass) has no Rust form: kept as the opcode that makes it.
                        Err(_) if self.options.opaque_globals => {
                            let mut body = vec![0x8d];
                            body.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
                            body.extend_from_slice(bytes);
                            self.push(Node::Opaque(Opaque::from_body("builtins.str", &body)));
                        }
                        Err(e) => return Err(e),
                    }
                }
                // bytes: SHORT_BINBYTES, BINBYTES, BINBYTES8; BYTEARRAY8
                b'C' | b'B' | 0x8e | 0x96 => {
                    let len = match opcode {
                        b'C' => u64::from(self.u8("a bytes length")?),
                        b'B' => u64::from(self.u32("a bytes length")?),
                        _ => self.u64("a bytes length")?,
                    };
                    let bytes = self.take(len, "a bytes")?.to_vec();
                    self.push(if opcode == 0x96 {
                        Node::ByteArray(bytes)
                    } else {
                        Node::Bytes(bytes)
                    });
                }
                // Tuples: EMPTY_TUPLE, TUPLE1, TUPLE2, TUPLE3, TUPLE
                b')' => self.push(Node::Tuple(Vec::new())),
                0x85..=0x87 => {
                    let n = usize::from(opcode - 0x84);
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop(offset)?);
                    }
                    items.reverse();
                    for &item in &items {
                        self.used(item);
                    }
                    self.push(Node::Tuple(items));
                }
                b't' => {
                    let items = self.pop_mark(offset)?;
                    for &item in &items {
                        self.used(item);
                    }
                    self.push(Node::Tuple(items));
                }
                // Lists: EMPTY_LIST, APPEND, APPENDS, LIST
                b']' => self.push(Node::List(Vec::new())),
                b'a' => {
                    let item = self.pop(offset)?;
                    let list = self.top(offset)?;
                    self.append(offset, list, vec![item])?;
                }
                b'e' => {
                    let items = self.pop_mark(offset)?;
                    let list = self.top(offset)?;
                    self.append(offset, list, items)?;
                }
                b'l' => {
                    let items = self.pop_mark(offset)?;
                    for &item in &items {
                        self.used(item);
                    }
                    self.push(Node::List(items));
                }
                // Dicts: EMPTY_DICT, SETITEM, SETITEMS, DICT
                b'}' => self.push(Node::Dict(Vec::new())),
                b's' => {
                    let value = self.pop(offset)?;
                    let key = self.pop(offset)?;
                    let dict = self.top(offset)?;
                    self.set_items(offset, dict, vec![key, value])?;
                }
                b'u' => {
                    let items = self.pop_mark(offset)?;
                    let dict = self.top(offset)?;
                    self.set_items(offset, dict, items)?;
                }
                b'd' => {
                    let items = self.pop_mark(offset)?;
                    let dict = self.node(Node::Dict(Vec::new()));
                    self.set_items(offset, dict, items)?;
                    self.stack.push(dict);
                }
                // Sets: EMPTY_SET, ADDITEMS, FROZENSET
                0x8f => self.push(Node::Set(Vec::new())),
                0x90 => {
                    let items = self.pop_mark(offset)?;
                    let set = self.top(offset)?;
                    for &item in &items {
                        self.used(item);
                    }
                    match &mut self.arena[set] {
                        Node::Set(existing) => existing.extend(items),
                        _ => {
                            return Err(
                                self.invalid(offset, "ADDITEMS to something that is not a set")
                            )
                        }
                    }
                }
                0x91 => {
                    let items = self.pop_mark(offset)?;
                    for &item in &items {
                        self.used(item);
                    }
                    self.push(Node::FrozenSet(items));
                }
                // Globals: GLOBAL (text operands), STACK_GLOBAL
                b'c' => {
                    let module = self.line("a GLOBAL module")?;
                    let name = self.line("a GLOBAL name")?;
                    self.global(module, name)?;
                }
                0x93 => {
                    let name = self.pop(offset)?;
                    let module = self.pop(offset)?;
                    let (Node::Str(module), Node::Str(name)) =
                        (&self.arena[module], &self.arena[name])
                    else {
                        return Err(self.invalid(offset, "STACK_GLOBAL needs two str"));
                    };
                    let (module, name) = (module.clone(), name.clone());
                    self.global(&module, &name)?;
                }
                // Objects: REDUCE, NEWOBJ, BUILD. Nothing is called: they become nodes.
                // NEWOBJ_EX: cls, args, kwargs.
                0x92 => {
                    let kwargs = self.pop(offset)?;
                    let args = self.pop(offset)?;
                    let cls = self.pop(offset)?;
                    for index in [cls, args, kwargs] {
                        self.used(index);
                    }
                    self.push(Node::NewObjEx(cls, args, kwargs));
                }
                b'R' | 0x81 => {
                    let args = self.pop(offset)?;
                    let callable = self.pop(offset)?;
                    self.used(args);
                    self.used(callable);
                    self.push(if opcode == b'R' {
                        Node::Reduce(callable, args)
                    } else {
                        Node::NewObj(callable, args)
                    });
                }
                b'b' => {
                    let state = self.pop(offset)?;
                    let obj = self.top(offset)?;
                    self.used(state);
                    // The object keeps its identity (memo references see the built object).
                    let before = std::mem::replace(&mut self.arena[obj], Node::Taken);
                    let inner = self.node(before);
                    self.used(inner);
                    self.arena[obj] = Node::Build(inner, state);
                }
                other => {
                    return Err(PickleError::Unsupported {
                        opcode: other,
                        offset,
                    })
                }
            }
        }
    }
}

fn classify(module: &str, name: &str, options: &DecodeOptions) -> Option<Known> {
    let known = match (module, name) {
        (MANAGERS_MODULE, "Token") => Known::Token,
        (MANAGERS_MODULE, "RebuildProxy") => Known::RebuildProxy,
        (MANAGERS_MODULE, n) if PROXY_CLASSES.contains(&n) => Known::ProxyClass,
        ("builtins", "slice") => Known::Slice,
        ("builtins", "bytearray") => Known::ByteArray,
        ("builtins", "bytes") => Known::Bytes,
        ("builtins", "complex") => Known::Complex,
        ("builtins", "set") => Known::Set,
        ("builtins", "frozenset") => Known::FrozenSet,
        ("builtins", "list") => Known::List,
        ("_codecs", "encode") => Known::CodecsEncode,
        ("builtins", n) if BUILTIN_EXCEPTIONS.contains(&n) => Known::Exception,
        (m, n) if OTHER_EXCEPTIONS.contains(&(m, n)) => Known::Exception,
        (m, n)
            if options
                .proxy_classes
                .iter()
                .any(|(pm, pn)| pm == m && pn == n) =>
        {
            Known::ProxyClass
        }
        _ if options.opaque_globals => Known::Other,
        _ => return None,
    };
    Some(known)
}

/// The node of a `LONG1`/`LONG4` integer: an `Int` within `i128`, else a `BigInt`.
fn int_node(bytes: &[u8]) -> Node {
    match int_from_le(bytes) {
        Ok(v) => Node::Int(v),
        Err(_) => Node::BigInt(crate::value_py::shortest(bytes.to_vec())),
    }
}

/// A little-endian two's complement integer (`LONG1`/`LONG4`), refused beyond `i128`.
pub(super) fn int_from_le(bytes: &[u8]) -> Result<i128, &'static str> {
    let Some(&last) = bytes.last() else {
        return Ok(0);
    };
    let negative = last & 0x80 != 0;
    let fill = if negative { 0xff } else { 0x00 };
    if bytes.len() > 16 {
        let fits = bytes[16..].iter().all(|&b| b == fill) && (bytes[15] & 0x80 != 0) == negative;
        if !fits {
            return Err("an integer does not fit in 128 bits");
        }
    }
    let mut buf = [fill; 16];
    let n = bytes.len().min(16);
    buf[..n].copy_from_slice(&bytes[..n]);
    Ok(i128::from_le_bytes(buf))
}

/// Turns the arena into a tree of values, interpreting the allowed globals. It works with an
/// explicit task stack, not recursion, so no nesting depth can exhaust the thread's stack.
struct Builder<'a> {
    arena: Vec<Node>,
    uses: Vec<u32>,
    /// The nodes being built (an ancestor of the current one): meeting one again is a cycle.
    on_path: Vec<bool>,
    options: &'a DecodeOptions,
    copied_nodes: usize,
    /// The most values that may be copied: [`DecodeOptions::max_copied_nodes`] plus the size
    /// of the pickle.
    copy_budget: usize,
    copied_bytes: usize,
}

/// The shape of a node, copied (or moved) out of the arena.
enum Shape {
    Leaf(PyValue),
    Seq(SeqKind, Vec<usize>),
    Dict(Vec<(usize, usize)>),
    Global(String, String),
    Reduce(usize, usize),
    NewObj(usize, usize),
    NewObjEx(usize, usize, usize),
    Build(usize, usize),
    Extend(usize, Vec<usize>),
    SetItems(usize, Vec<(usize, usize)>),
}

#[derive(Clone, Copy)]
enum SeqKind {
    List,
    Tuple,
    Set,
    FrozenSet,
}

#[derive(Clone, Copy)]
enum OpaqueKind {
    Reduce,
    NewObj,
    Build,
    /// Pops the object, then this many items.
    Extend(usize),
    /// Pops the object, then this many entries.
    SetItems(usize),
    /// Pops the class, the arguments and the keyword arguments.
    NewObjEx,
}

/// What is left to do. Values are built on an output stack: a `Visit` pushes one value, the
/// other tasks pop the values of their operands and push the value they make.
enum Task {
    Visit {
        index: usize,
        depth: usize,
        unique: bool,
    },
    /// The node is no longer an ancestor of what is built next.
    Leave(usize),
    Seq(SeqKind, usize),
    Dict(usize),
    /// Pops the argument tuple of a call of an allowed global.
    Reduce {
        module: String,
        name: String,
        known: Known,
    },
    /// Pops token, serializer and kwds.
    Proxy {
        module: String,
        class: String,
    },
    /// Pops a token's state.
    Token,
    /// Pops an exception's state, then the exception.
    ExceptionState,
    /// Pops two operands.
    Opaque(OpaqueKind),
}

fn shape_error(message: impl Into<String>) -> PickleError {
    PickleError::Invalid {
        offset: None,
        message: message.into(),
    }
}

fn pop_value(out: &mut Vec<PyValue>) -> Result<PyValue, PickleError> {
    out.pop()
        .ok_or_else(|| shape_error("internal error: a value is missing"))
}

fn pop_values(out: &mut Vec<PyValue>, n: usize) -> Result<Vec<PyValue>, PickleError> {
    let at = out
        .len()
        .checked_sub(n)
        .ok_or_else(|| shape_error("internal error: values are missing"))?;
    Ok(out.split_off(at))
}

impl Builder<'_> {
    fn global_of(&self, index: usize) -> Option<(&str, &str, Known)> {
        match &self.arena[index] {
            Node::Global {
                module,
                name,
                known,
            } => Some((module, name, *known)),
            _ => None,
        }
    }

    fn build(mut self, root: usize) -> Result<PyValue, PickleError> {
        let mut tasks = Vec::with_capacity(self.arena.len().min(64) * 2);
        tasks.push(Task::Visit {
            index: root,
            depth: 0,
            unique: true,
        });
        let mut out: Vec<PyValue> = Vec::with_capacity(self.arena.len().min(64));
        while let Some(task) = tasks.pop() {
            match task {
                Task::Visit {
                    index,
                    depth,
                    unique,
                } => self.visit(index, depth, unique, &mut tasks, &mut out)?,
                Task::Leave(index) => self.on_path[index] = false,
                Task::Seq(kind, len) => {
                    let items = pop_values(&mut out, len)?;
                    out.push(match kind {
                        SeqKind::List => PyValue::List(items),
                        SeqKind::Tuple => PyValue::Tuple(items),
                        SeqKind::Set => PyValue::Set(items),
                        SeqKind::FrozenSet => PyValue::FrozenSet(items),
                    });
                }
                Task::Dict(len) => {
                    let flat = pop_values(&mut out, 2 * len)?;
                    let mut entries = Vec::with_capacity(len);
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        entries.push((k, v));
                    }
                    out.push(PyValue::Dict(entries));
                }
                Task::Reduce {
                    module,
                    name,
                    known,
                } => {
                    let args = pop_value(&mut out)?;
                    out.push(reduce(module, name, known, args)?);
                }
                Task::Proxy { module, class } => {
                    let mut items = pop_values(&mut out, 3)?.into_iter();
                    let bad = |message: String| shape_error(format!("RebuildProxy: {message}"));
                    let token = match items.next().unwrap_or_default() {
                        PyValue::Token(token) => token,
                        other => {
                            return Err(bad(format!("expected a Token, got a {}", other.kind())))
                        }
                    };
                    let serializer = match items.next().unwrap_or_default() {
                        PyValue::Str(s) => s,
                        other => return Err(bad(format!("the serializer is a {}", other.kind()))),
                    };
                    let kwds = match items.next().unwrap_or_default() {
                        PyValue::Dict(entries) => entries,
                        other => return Err(bad(format!("kwds is a {}", other.kind()))),
                    };
                    out.push(PyValue::Proxy(Box::new(PyProxy {
                        module,
                        class,
                        token,
                        serializer,
                        kwds,
                    })));
                }
                Task::Token => {
                    let state = pop_value(&mut out)?;
                    out.push(PyValue::Token(token_from_state(state)?));
                }
                Task::ExceptionState => {
                    let state = pop_value(&mut out)?;
                    match pop_value(&mut out)? {
                        PyValue::Exception(mut e) if e.state.is_none() => {
                            e.state = Some(Box::new(state));
                            out.push(PyValue::Exception(e));
                        }
                        _ => return Err(shape_error("an exception built twice")),
                    }
                }
                Task::Opaque(OpaqueKind::Extend(n)) => {
                    let items = pop_values(&mut out, n)?;
                    let obj = pop_value(&mut out)?;
                    out.push(PyValue::Object(Box::new(PyObject::Extend { obj, items })));
                }
                Task::Opaque(OpaqueKind::SetItems(n)) => {
                    let flat = pop_values(&mut out, 2 * n)?;
                    let obj = pop_value(&mut out)?;
                    let mut entries = Vec::with_capacity(n);
                    let mut flat = flat.into_iter();
                    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
                        entries.push((k, v));
                    }
                    out.push(PyValue::Object(Box::new(PyObject::SetItems {
                        obj,
                        entries,
                    })));
                }
                Task::Opaque(OpaqueKind::NewObjEx) => {
                    let kwargs = pop_value(&mut out)?;
                    let args = pop_value(&mut out)?;
                    let cls = pop_value(&mut out)?;
                    out.push(PyValue::Object(Box::new(PyObject::NewObjEx {
                        cls,
                        args,
                        kwargs,
                    })));
                }
                Task::Opaque(kind) => {
                    let second = pop_value(&mut out)?;
                    let first = pop_value(&mut out)?;
                    out.push(PyValue::Object(Box::new(match kind {
                        OpaqueKind::Reduce => PyObject::Reduce {
                            func: first,
                            args: second,
                        },
                        OpaqueKind::NewObj => PyObject::NewObj {
                            cls: first,
                            args: second,
                        },
                        OpaqueKind::Build
                        | OpaqueKind::Extend(_)
                        | OpaqueKind::SetItems(_)
                        | OpaqueKind::NewObjEx => PyObject::Build {
                            obj: first,
                            state: second,
                        },
                    })));
                }
            }
        }
        match (out.pop(), out.is_empty()) {
            (Some(value), true) => Ok(value),
            _ => Err(shape_error("internal error: unbalanced values")),
        }
    }

    fn shape(&mut self, index: usize, unique: bool) -> Result<Shape, PickleError> {
        if unique {
            // Used once: move big contents out instead of copying them.
            let node = std::mem::replace(&mut self.arena[index], Node::Taken);
            match node {
                Node::Str(s) => return Ok(Shape::Leaf(PyValue::Str(s))),
                Node::Bytes(b) => return Ok(Shape::Leaf(PyValue::Bytes(b))),
                Node::ByteArray(b) => return Ok(Shape::Leaf(PyValue::ByteArray(b))),
                Node::List(items) => return Ok(Shape::Seq(SeqKind::List, items)),
                Node::Tuple(items) => return Ok(Shape::Seq(SeqKind::Tuple, items)),
                Node::Dict(entries) => return Ok(Shape::Dict(entries)),
                Node::Set(items) => return Ok(Shape::Seq(SeqKind::Set, items)),
                Node::FrozenSet(items) => return Ok(Shape::Seq(SeqKind::FrozenSet, items)),
                Node::Extend(o, items) => return Ok(Shape::Extend(o, items)),
                Node::SetItems(o, entries) => return Ok(Shape::SetItems(o, entries)),
                // Small nodes stay: parents inspect globals and objects in place.
                other => self.arena[index] = other,
            }
        } else {
            let bytes = match &self.arena[index] {
                Node::Str(s) => s.len(),
                Node::Bytes(b) | Node::ByteArray(b) => b.len(),
                _ => 0,
            };
            self.copied_bytes += bytes;
            if self.copied_bytes > self.options.max_copied_bytes {
                return Err(PickleError::Limit(format!(
                    "memo references copy more than {} bytes",
                    self.options.max_copied_bytes
                )));
            }
        }
        Ok(match &self.arena[index] {
            Node::None => Shape::Leaf(PyValue::None),
            Node::Bool(b) => Shape::Leaf(PyValue::Bool(*b)),
            Node::Int(i) => Shape::Leaf(PyValue::Int(*i)),
            Node::BigInt(b) => Shape::Leaf(PyValue::BigInt(b.clone())),
            Node::Opaque(o) => Shape::Leaf(PyValue::Opaque(o.clone())),
            Node::Float(f) => Shape::Leaf(PyValue::Float(*f)),
            Node::Str(s) => Shape::Leaf(PyValue::Str(s.clone())),
            Node::Bytes(b) => Shape::Leaf(PyValue::Bytes(b.clone())),
            Node::ByteArray(b) => Shape::Leaf(PyValue::ByteArray(b.clone())),
            Node::List(items) => Shape::Seq(SeqKind::List, items.clone()),
            Node::Tuple(items) => Shape::Seq(SeqKind::Tuple, items.clone()),
            Node::Dict(entries) => Shape::Dict(entries.clone()),
            Node::Set(items) => Shape::Seq(SeqKind::Set, items.clone()),
            Node::FrozenSet(items) => Shape::Seq(SeqKind::FrozenSet, items.clone()),
            Node::Global { module, name, .. } => Shape::Global(module.clone(), name.clone()),
            Node::Reduce(f, a) => Shape::Reduce(*f, *a),
            Node::NewObj(c, a) => Shape::NewObj(*c, *a),
            Node::NewObjEx(c, a, k) => Shape::NewObjEx(*c, *a, *k),
            Node::Build(o, s) => Shape::Build(*o, *s),
            Node::Extend(o, items) => Shape::Extend(*o, items.clone()),
            Node::SetItems(o, entries) => Shape::SetItems(*o, entries.clone()),
            Node::Taken => return Err(shape_error("an object is used after it was consumed")),
        })
    }

    fn visit(
        &mut self,
        index: usize,
        depth: usize,
        unique: bool,
        tasks: &mut Vec<Task>,
        out: &mut Vec<PyValue>,
    ) -> Result<(), PickleError> {
        if depth > self.options.max_depth {
            return Err(PickleError::Limit(format!(
                "nesting deeper than {} levels",
                self.options.max_depth
            )));
        }
        let unique = unique && self.uses[index] <= 1;
        if !unique {
            self.copied_nodes += 1;
            if self.copied_nodes > self.copy_budget {
                return Err(PickleError::Limit(format!(
                    "memo references copy more than {} values",
                    self.copy_budget
                )));
            }
        }
        if self.on_path[index] {
            return Err(shape_error(
                "a recursive structure (an object that contains itself)",
            ));
        }
        let shape = self.shape(index, unique)?;
        if !matches!(shape, Shape::Leaf(_)) {
            // Until its operands are built, this node is an ancestor of whatever is visited.
            self.on_path[index] = true;
            tasks.push(Task::Leave(index));
        }
        let child = |index: usize| Task::Visit {
            index,
            depth: depth + 1,
            unique,
        };
        match shape {
            Shape::Leaf(value) => out.push(value),
            Shape::Seq(kind, items) => {
                tasks.push(Task::Seq(kind, items.len()));
                tasks.extend(items.into_iter().rev().map(child));
            }
            Shape::Dict(entries) => {
                tasks.push(Task::Dict(entries.len()));
                for (k, v) in entries.into_iter().rev() {
                    tasks.push(child(v));
                    tasks.push(child(k));
                }
            }
            Shape::Global(module, name) => {
                if !self.options.opaque_globals {
                    return Err(shape_error(format!(
                        "the class or function {module}.{name} itself (not an instance of it) \
                         is not supported"
                    )));
                }
                out.push(PyValue::Object(Box::new(PyObject::Global { module, name })));
            }
            Shape::Reduce(func, args) => match self.global_of(func) {
                Some((_, _, Known::RebuildProxy)) => {
                    let items = match &self.arena[args] {
                        Node::Tuple(items) if items.len() == 4 => items.clone(),
                        _ => {
                            return Err(shape_error(
                                "RebuildProxy: expects (proxy class, token, serializer, kwds)",
                            ))
                        }
                    };
                    let (module, class) = match self.global_of(items[0]) {
                        Some((module, name, Known::ProxyClass)) => {
                            (module.to_string(), name.to_string())
                        }
                        Some((module, name, _)) => {
                            return Err(shape_error(format!(
                                "RebuildProxy: {module}.{name} is not a proxy class"
                            )))
                        }
                        None => {
                            return Err(shape_error(
                                "RebuildProxy: the first argument is not a proxy class",
                            ))
                        }
                    };
                    let unique = unique && self.uses[args] <= 1;
                    tasks.push(Task::Proxy { module, class });
                    for &item in items[1..].iter().rev() {
                        tasks.push(Task::Visit {
                            index: item,
                            depth: depth + 2,
                            unique,
                        });
                    }
                }
                Some((module, name, known)) if known != Known::Other => {
                    tasks.push(Task::Reduce {
                        module: module.to_string(),
                        name: name.to_string(),
                        known,
                    });
                    tasks.push(child(args));
                }
                _ => self.opaque(OpaqueKind::Reduce, func, args, tasks, child)?,
            },
            Shape::NewObj(cls, args) => {
                if let Some((_, _, Known::Token)) = self.global_of(cls) {
                    return Err(shape_error(
                        "a Token without its state (NEWOBJ without BUILD)",
                    ));
                }
                self.opaque(OpaqueKind::NewObj, cls, args, tasks, child)?;
            }
            Shape::Build(obj, state) => match &self.arena[obj] {
                // A Token: NEWOBJ(Token, ()) then BUILD with its state.
                Node::NewObj(cls, args)
                    if matches!(self.global_of(*cls), Some((_, _, Known::Token))) =>
                {
                    if !matches!(&self.arena[*args], Node::Tuple(items) if items.is_empty()) {
                        return Err(shape_error("Token.__new__ takes no arguments"));
                    }
                    tasks.push(Task::Token);
                    tasks.push(child(state));
                }
                // An exception with attributes: REDUCE(exception class, args) then BUILD.
                Node::Reduce(func, _)
                    if matches!(self.global_of(*func), Some((_, _, Known::Exception))) =>
                {
                    tasks.push(Task::ExceptionState);
                    tasks.push(child(state));
                    tasks.push(child(obj));
                }
                _ => self.opaque(OpaqueKind::Build, obj, state, tasks, child)?,
            },
            Shape::NewObjEx(cls, args, kwargs) => {
                self.opaque(OpaqueKind::NewObjEx, cls, args, tasks, child)?;
                // The keyword arguments are built last, so they are popped first.
                tasks.insert(tasks.len() - 2, child(kwargs));
            }
            Shape::Extend(obj, items) => {
                self.opaque(OpaqueKind::Extend(items.len()), obj, obj, tasks, child)?;
                // Replace the object's second visit by the items.
                tasks.pop();
                let object = tasks.pop();
                tasks.extend(items.into_iter().rev().map(child));
                tasks.extend(object);
            }
            Shape::SetItems(obj, entries) => {
                self.opaque(OpaqueKind::SetItems(entries.len()), obj, obj, tasks, child)?;
                tasks.pop();
                let object = tasks.pop();
                for (k, v) in entries.into_iter().rev() {
                    tasks.push(child(v));
                    tasks.push(child(k));
                }
                tasks.extend(object);
            }
        }
        Ok(())
    }

    /// Schedules a [`PyObject`] of two operands, when opaque globals are allowed.
    fn opaque(
        &self,
        kind: OpaqueKind,
        first: usize,
        second: usize,
        tasks: &mut Vec<Task>,
        child: impl Fn(usize) -> Task,
    ) -> Result<(), PickleError> {
        if !self.options.opaque_globals {
            let what = match self.global_of(first) {
                Some((module, name, _)) => format!("{module}.{name}"),
                None => "an object that is not a class".to_string(),
            };
            return Err(shape_error(format!(
                "{what} is not built that way in manager traffic"
            )));
        }
        tasks.push(Task::Opaque(kind));
        tasks.push(child(second));
        tasks.push(child(first));
        Ok(())
    }
}

/// The value of a call of an allowed global: `module.name(*args)`, interpreted, not run.
fn reduce(
    module: String,
    name: String,
    known: Known,
    args: PyValue,
) -> Result<PyValue, PickleError> {
    let what = format!("{module}.{name}");
    let bad = |message: &str| shape_error(format!("{what}: {message}"));
    let PyValue::Tuple(items) = args else {
        return Err(bad(&format!(
            "the arguments are a {}, not a tuple",
            args.kind()
        )));
    };
    Ok(match known {
        Known::Exception => PyValue::Exception(PyException {
            module,
            name,
            args: items,
            state: None,
        }),
        Known::Slice => {
            let mut items = items.into_iter();
            match items.len() {
                1 => PyValue::slice(
                    PyValue::None,
                    items.next().unwrap_or_default(),
                    PyValue::None,
                ),
                2 | 3 => {
                    let start = items.next().unwrap_or_default();
                    let stop = items.next().unwrap_or_default();
                    PyValue::slice(start, stop, items.next().unwrap_or_default())
                }
                _ => return Err(bad("expects 1 to 3 arguments")),
            }
        }
        Known::Complex => {
            let part = |v: Option<&PyValue>| match v {
                None => Some(0.0),
                Some(PyValue::Float(f)) => Some(*f),
                Some(PyValue::Int(i)) => Some(*i as f64),
                Some(PyValue::Bool(b)) => Some(f64::from(u8::from(*b))),
                _ => None,
            };
            match (items.len() <= 2, part(items.first()), part(items.get(1))) {
                (true, Some(re), Some(im)) => PyValue::Complex { re, im },
                _ => return Err(bad("expects up to two real numbers")),
            }
        }
        Known::ByteArray | Known::Bytes => {
            let bytes = match items.as_slice() {
                [] => Vec::new(),
                [PyValue::Bytes(b)] | [PyValue::ByteArray(b)] => b.clone(),
                [PyValue::Str(s), PyValue::Str(encoding)] if is_latin1(encoding) => {
                    latin1(s).ok_or_else(|| bad("a str that is not latin-1"))?
                }
                _ => return Err(bad("unexpected arguments")),
            };
            if known == Known::ByteArray {
                PyValue::ByteArray(bytes)
            } else {
                PyValue::Bytes(bytes)
            }
        }
        Known::CodecsEncode => match items.as_slice() {
            [PyValue::Str(s), PyValue::Str(encoding)] if is_latin1(encoding) => {
                PyValue::Bytes(latin1(s).ok_or_else(|| bad("a str that is not latin-1"))?)
            }
            _ => {
                return Err(bad(
                    "only encode(str, 'latin1') is accepted (bytes under protocol 2)",
                ))
            }
        },
        Known::Set | Known::FrozenSet | Known::List => {
            let mut items = items;
            let content = match items.len() {
                0 => Vec::new(),
                1 => match items.pop().unwrap_or_default() {
                    PyValue::List(v)
                    | PyValue::Tuple(v)
                    | PyValue::Set(v)
                    | PyValue::FrozenSet(v) => v,
                    other => return Err(bad(&format!("cannot iterate over a {}", other.kind()))),
                },
                _ => return Err(bad("expects at most one argument")),
            };
            match known {
                Known::Set => PyValue::Set(content),
                Known::FrozenSet => PyValue::FrozenSet(content),
                _ => PyValue::List(content),
            }
        }
        Known::Token | Known::ProxyClass | Known::RebuildProxy | Known::Other => {
            return Err(bad("is not called that way in manager traffic"))
        }
    })
}

fn is_latin1(encoding: &str) -> bool {
    matches!(
        encoding,
        "latin1" | "latin-1" | "latin_1" | "iso-8859-1" | "iso8859-1"
    )
}

fn latin1(s: &str) -> Option<Vec<u8>> {
    s.chars().map(|c| u8::try_from(u32::from(c)).ok()).collect()
}

/// A token from the state `BUILD` applies to it: `(typeid, address, id)`, a dict with those
/// keys, or `(None, dict)` (the slots form).
fn token_from_state(state: PyValue) -> Result<Token, PickleError> {
    let bad = |message: String| shape_error(format!("Token state: {message}"));
    let (typeid, address, id) = match state {
        PyValue::Tuple(items) if items.len() == 3 => {
            let mut items = items.into_iter();
            let typeid = items.next().unwrap_or_default();
            let address = items.next().unwrap_or_default();
            (typeid, address, items.next().unwrap_or_default())
        }
        PyValue::Tuple(items) if items.len() == 2 && items[0] == PyValue::None => {
            let mut items = items.into_iter();
            let _ = items.next();
            return token_from_state(items.next().unwrap_or_default());
        }
        PyValue::Dict(entries) => {
            let get = |key: &str| {
                entries
                    .iter()
                    .position(|(k, _)| k.as_str() == Some(key))
                    .map(|i| entries[i].1.clone())
                    .ok_or_else(|| bad(format!("no {key:?}")))
            };
            (get("typeid")?, get("address")?, get("id")?)
        }
        other => {
            return Err(bad(format!(
                "expected (typeid, address, id), got a {}",
                other.kind()
            )))
        }
    };
    let PyValue::Str(typeid) = typeid else {
        return Err(bad(format!("the typeid is a {}", typeid.kind())));
    };
    let address = address_from_py(&address)?;
    let id = match id {
        PyValue::Str(s) => id_from_hex(&s)
            .ok_or_else(|| bad(format!("the id {s:?} is not a hexadecimal object id")))?,
        other => return Err(bad(format!("the id is a {}", other.kind()))),
    };
    Ok(Token {
        typeid,
        address,
        id,
        instance: 0,
    })
}

/// An object id as CPython writes it in a token (`'%x' % id(obj)`).
pub fn id_to_hex(id: u64) -> String {
    format!("{id:x}")
}

/// The object id of a token's id string: hexadecimal digits that fit a `u64`.
pub fn id_from_hex(text: &str) -> Option<u64> {
    // Every request names its object so: one pass, no sign, no radix machinery.
    if text.is_empty() || text.len() > 16 {
        return None;
    }
    text.bytes().try_fold(0u64, |id, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return None,
        };
        Some(id << 4 | u64::from(digit))
    })
}

/// An [`Address`] from a pickled manager address: `(host, port)`, a `str` socket path, or the
/// `bytes` of a Linux abstract socket.
pub fn address_from_py(value: &PyValue) -> Result<Address, PickleError> {
    let bad = |message: String| shape_error(format!("address: {message}"));
    match value {
        PyValue::Tuple(items) => match items.as_slice() {
            [PyValue::Str(host), PyValue::Int(port)] => {
                let port = u16::try_from(*port)
                    .map_err(|_| bad(format!("port {port} is out of range")))?;
                Ok(Address::from((host.as_str(), port)))
            }
            _ => Err(bad("expected (host, port)".to_string())),
        },
        PyValue::Str(path) if !path.is_empty() => Ok(Address::Unix(PathBuf::from(path))),
        PyValue::Bytes(path) if path.first() == Some(&0) => {
            use std::os::unix::ffi::OsStringExt;
            Ok(Address::Unix(PathBuf::from(std::ffi::OsString::from_vec(
                path.clone(),
            ))))
        }
        other => Err(bad(format!("a {} is not a manager address", other.kind()))),
    }
}

/// The Python form of an [`Address`]: `(host, port)` for TCP, a `str` path for a Unix socket,
/// `bytes` for a Linux abstract socket.
pub fn address_to_py(address: &Address) -> Result<PyValue, PickleError> {
    match address {
        Address::Tcp(host_port) => {
            let parsed = host_port.rsplit_once(':').and_then(|(host, port)| {
                let host = host
                    .strip_prefix('[')
                    .and_then(|h| h.strip_suffix(']'))
                    .unwrap_or(host);
                Some((host, port.parse::<u16>().ok()?))
            });
            match parsed {
                Some((host, port)) if !host.is_empty() => Ok(PyValue::Tuple(vec![
                    PyValue::str(host),
                    PyValue::Int(i128::from(port)),
                ])),
                _ => Err(PickleError::Encode(format!(
                    "the address {host_port:?} is not host:port"
                ))),
            }
        }
        Address::Unix(path) => {
            use std::os::unix::ffi::OsStrExt;
            let bytes = path.as_os_str().as_bytes();
            if bytes.first() == Some(&0) {
                Ok(PyValue::Bytes(bytes.to_vec()))
            } else {
                match std::str::from_utf8(bytes) {
                    Ok(s) if !s.is_empty() => Ok(PyValue::str(s)),
                    _ => Err(PickleError::Encode(format!(
                        "the socket path {} is not UTF-8 text",
                        path.display()
                    ))),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding
// ---------------------------------------------------------------------------------------------

/// Options of [`encode_with`].
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Wrap the pickle in one protocol-4 `FRAME`, as CPython does. Default on; CPython loads
    /// both forms.
    pub frame: bool,
    /// The deepest nesting written; deeper values are an error. Default 256.
    pub max_depth: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            frame: true,
            max_depth: 256,
        }
    }
}

/// Encodes a value as a protocol-4 pickle with the default [`EncodeOptions`].
pub fn encode(value: &PyValue) -> Result<Vec<u8>, PickleError> {
    encode_with(value, &EncodeOptions::default())
}

/// Encodes a value as a protocol-4 pickle. Fails only for a token whose address has no Python
/// form or a value nested deeper than [`EncodeOptions::max_depth`].
pub fn encode_with(value: &PyValue, options: &EncodeOptions) -> Result<Vec<u8>, PickleError> {
    let mut out = Vec::with_capacity(64);
    encode_into(value, options, &mut out)?;
    Ok(out)
}

/// [`encode_with`], appending the pickle to `out` (a buffer reused from message to message,
/// after a frame header for instance). On an error, `out` holds a partial pickle after what
/// it held.
pub fn encode_into(
    value: &PyValue,
    options: &EncodeOptions,
    out: &mut Vec<u8>,
) -> Result<(), PickleError> {
    out.extend_from_slice(&[0x80, 4]);
    if options.frame {
        // The frame's length is written once the body is.
        out.push(0x95);
        out.extend_from_slice(&[0; 8]);
    }
    let body = out.len();
    Encoder {
        out,
        max_depth: options.max_depth,
    }
    .value(value, 0)?;
    out.push(b'.');
    if options.frame {
        let len = (out.len() - body) as u64;
        out[body - 8..body].copy_from_slice(&len.to_le_bytes());
    }
    Ok(())
}

/// The opcodes that write `value`, without `PROTO`, `FRAME` and `STOP` (what an opaque value
/// keeps, and what goes inside a larger pickle).
pub(crate) fn encode_body(value: &PyValue) -> Result<Vec<u8>, PickleError> {
    let mut body = Vec::new();
    Encoder {
        out: &mut body,
        max_depth: EncodeOptions::default().max_depth,
    }
    .value(value, 0)?;
    Ok(body)
}

/// Items per `APPENDS`/`SETITEMS`/`ADDITEMS` batch, as CPython writes them.
const BATCH: usize = 1000;

struct Encoder<'a> {
    out: &'a mut Vec<u8>,
    max_depth: usize,
}

impl Encoder<'_> {
    fn int(&mut self, i: i128) {
        if (0..=0xff).contains(&i) {
            self.out.extend_from_slice(&[b'K', i as u8]);
        } else if (0..=0xffff).contains(&i) {
            self.out.push(b'M');
            self.out.extend_from_slice(&(i as u16).to_le_bytes());
        } else if (i128::from(i32::MIN)..=i128::from(i32::MAX)).contains(&i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&(i as i32).to_le_bytes());
        } else {
            let bytes = i.to_le_bytes();
            let mut n = bytes.len();
            while n > 1 {
                let (last, prev) = (bytes[n - 1], bytes[n - 2]);
                if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[0x8a, n as u8]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    fn str(&mut self, s: &str) {
        let len = s.len();
        if len < 256 {
            self.out.extend_from_slice(&[0x8c, len as u8]);
        } else if let Ok(len) = u32::try_from(len) {
            self.out.push(b'X');
            self.out.extend_from_slice(&len.to_le_bytes());
        } else {
            self.out.push(0x8d);
            self.out.extend_from_slice(&(len as u64).to_le_bytes());
        }
        self.out.extend_from_slice(s.as_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        let len = b.len();
        if len < 256 {
            self.out.extend_from_slice(&[b'C', len as u8]);
        } else if let Ok(len) = u32::try_from(len) {
            self.out.push(b'B');
            self.out.extend_from_slice(&len.to_le_bytes());
        } else {
            self.out.push(0x8e);
            self.out.extend_from_slice(&(len as u64).to_le_bytes());
        }
        self.out.extend_from_slice(b);
    }

    fn float(&mut self, f: f64) {
        self.out.push(b'G');
        self.out.extend_from_slice(&f.to_be_bytes());
    }

    fn global(&mut self, module: &str, name: &str) {
        self.str(module);
        self.str(name);
        self.out.push(0x93);
    }

    fn tuple(&mut self, items: &[PyValue], depth: usize) -> Result<(), PickleError> {
        if items.is_empty() {
            self.out.push(b')');
            return Ok(());
        }
        let short = items.len() <= 3;
        if !short {
            self.out.push(b'(');
        }
        for item in items {
            self.value(item, depth + 1)?;
        }
        self.out.push(if short {
            0x84 + items.len() as u8
        } else {
            b't'
        });
        Ok(())
    }

    fn batched(&mut self, items: &[PyValue], op: u8, depth: usize) -> Result<(), PickleError> {
        for chunk in items.chunks(BATCH) {
            self.out.push(b'(');
            for item in chunk {
                self.value(item, depth + 1)?;
            }
            self.out.push(op);
        }
        Ok(())
    }

    fn dict(&mut self, entries: &[(PyValue, PyValue)], depth: usize) -> Result<(), PickleError> {
        self.out.push(b'}');
        for chunk in entries.chunks(BATCH) {
            self.out.push(b'(');
            for (k, v) in chunk {
                self.value(k, depth + 1)?;
                self.value(v, depth + 1)?;
            }
            self.out.push(b'u');
        }
        Ok(())
    }

    fn token(&mut self, token: &Token) -> Result<(), PickleError> {
        self.global(MANAGERS_MODULE, "Token");
        self.out.extend_from_slice(&[b')', 0x81]);
        self.str(&token.typeid);
        let address = address_to_py(&token.address)?;
        self.value(&address, 0)?;
        self.str(&id_to_hex(token.id));
        self.out.extend_from_slice(&[0x87, b'b']);
        Ok(())
    }

    fn value(&mut self, value: &PyValue, depth: usize) -> Result<(), PickleError> {
        if depth > self.max_depth {
            return Err(PickleError::Encode(format!(
                "the value is nested deeper than {} levels",
                self.max_depth
            )));
        }
        match value {
            PyValue::None => self.out.push(b'N'),
            PyValue::Bool(true) => self.out.push(0x88),
            PyValue::Bool(false) => self.out.push(0x89),
            PyValue::Int(i) => self.int(*i),
            PyValue::BigInt(b) => {
                match u8::try_from(b.len()) {
                    Ok(n) => self.out.extend_from_slice(&[0x8a, n]),
                    Err(_) => {
                        self.out.push(0x8b);
                        let n = i32::try_from(b.len()).map_err(|_| {
                            PickleError::Encode("an integer of more than 2 GiB".into())
                        })?;
                        self.out.extend_from_slice(&n.to_le_bytes());
                    }
                }
                self.out.extend_from_slice(b);
            }
            PyValue::Opaque(opaque) => self.out.extend_from_slice(opaque.body()),
            PyValue::Float(f) => self.float(*f),
            PyValue::Complex { re, im } => {
                self.global("builtins", "complex");
                self.float(*re);
                self.float(*im);
                self.out.extend_from_slice(&[0x86, b'R']);
            }
            PyValue::Str(s) => self.str(s),
            PyValue::Bytes(b) => self.bytes(b),
            PyValue::ByteArray(b) => {
                // Protocol 4 has no bytearray opcode: CPython writes bytearray(bytes).
                self.global("builtins", "bytearray");
                if b.is_empty() {
                    self.out.push(b')');
                } else {
                    self.bytes(b);
                    self.out.push(0x85);
                }
                self.out.push(b'R');
            }
            PyValue::List(items) => {
                self.out.push(b']');
                self.batched(items, b'e', depth)?;
            }
            PyValue::Tuple(items) => self.tuple(items, depth)?,
            PyValue::Dict(entries) => self.dict(entries, depth)?,
            PyValue::Set(items) => {
                self.out.push(0x8f);
                self.batched(items, 0x90, depth)?;
            }
            PyValue::FrozenSet(items) => {
                self.out.push(b'(');
                for item in items {
                    self.value(item, depth + 1)?;
                }
                self.out.push(0x91);
            }
            PyValue::Slice { start, stop, step } => {
                self.global("builtins", "slice");
                self.value(start, depth + 1)?;
                self.value(stop, depth + 1)?;
                self.value(step, depth + 1)?;
                self.out.extend_from_slice(&[0x87, b'R']);
            }
            PyValue::Token(token) => self.token(token)?,
            PyValue::Proxy(proxy) => {
                self.global(MANAGERS_MODULE, "RebuildProxy");
                self.out.push(b'(');
                self.global(&proxy.module, &proxy.class);
                self.token(&proxy.token)?;
                self.str(&proxy.serializer);
                self.dict(&proxy.kwds, depth + 1)?;
                self.out.extend_from_slice(b"tR");
            }
            PyValue::Exception(e) => {
                self.global(&e.module, &e.name);
                self.tuple(&e.args, depth)?;
                self.out.push(b'R');
                if let Some(state) = &e.state {
                    self.value(state, depth + 1)?;
                    self.out.push(b'b');
                }
            }
            PyValue::Object(object) => match object.as_ref() {
                PyObject::Global { module, name } => self.global(module, name),
                PyObject::Reduce { func, args } => self.pair(func, args, b'R', depth)?,
                PyObject::NewObj { cls, args } => self.pair(cls, args, 0x81, depth)?,
                PyObject::Build { obj, state } => self.pair(obj, state, b'b', depth)?,
                PyObject::NewObjEx { cls, args, kwargs } => {
                    self.value(cls, depth + 1)?;
                    self.value(args, depth + 1)?;
                    self.value(kwargs, depth + 1)?;
                    self.out.push(0x92);
                }
                PyObject::Extend { obj, items } => {
                    self.value(obj, depth + 1)?;
                    self.batched(items, b'e', depth)?;
                }
                PyObject::SetItems { obj, entries } => {
                    self.value(obj, depth + 1)?;
                    for chunk in entries.chunks(BATCH) {
                        self.out.push(b'(');
                        for (k, v) in chunk {
                            self.value(k, depth + 1)?;
                            self.value(v, depth + 1)?;
                        }
                        self.out.push(b'u');
                    }
                }
            },
        }
        Ok(())
    }

    fn pair(&mut self, a: &PyValue, b: &PyValue, op: u8, depth: usize) -> Result<(), PickleError> {
        self.value(a, depth + 1)?;
        self.value(b, depth + 1)?;
        self.out.push(op);
        Ok(())
    }
}

impl fmt::Display for PyValue {
    /// A Python-like rendering, for messages and logs (not guaranteed to equal `repr`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[PyValue]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{item}")?;
            }
            Ok(())
        }
        match self {
            PyValue::None => f.write_str("None"),
            PyValue::Bool(true) => f.write_str("True"),
            PyValue::Bool(false) => f.write_str("False"),
            PyValue::Int(i) => write!(f, "{i}"),
            PyValue::BigInt(b) => match crate::value_py::big_decimal(b) {
                Some(digits) => f.write_str(&digits),
                None => write!(f, "<an int of {} bytes>", b.len()),
            },
            PyValue::Opaque(o) => write!(f, "{o}"),
            PyValue::Float(x) => write!(f, "{x:?}"),
            PyValue::Complex { re, im } => write!(f, "({re:?}{im:+?}j)"),
            PyValue::Str(s) => write!(f, "{s:?}"),
            PyValue::Bytes(b) => write!(f, "b{:?}", String::from_utf8_lossy(b)),
            PyValue::ByteArray(b) => write!(f, "bytearray(b{:?})", String::from_utf8_lossy(b)),
            PyValue::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            PyValue::Tuple(items) => {
                f.write_str("(")?;
                seq(f, items)?;
                f.write_str(if items.len() == 1 { ",)" } else { ")" })
            }
            PyValue::Set(items) | PyValue::FrozenSet(items) => {
                if matches!(self, PyValue::FrozenSet(_)) {
                    f.write_str("frozenset(")?;
                }
                if items.is_empty() {
                    f.write_str(if matches!(self, PyValue::Set(_)) {
                        "set()"
                    } else {
                        ""
                    })?;
                } else {
                    f.write_str("{")?;
                    seq(f, items)?;
                    f.write_str("}")?;
                }
                if matches!(self, PyValue::FrozenSet(_)) {
                    f.write_str(")")?;
                }
                Ok(())
            }
            PyValue::Dict(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k}: {v}")?;
                }
                f.write_str("}")
            }
            PyValue::Slice { start, stop, step } => write!(f, "slice({start}, {stop}, {step})"),
            PyValue::Token(t) => write!(
                f,
                "Token(typeid={:?}, address={}, id={:?})",
                t.typeid,
                t.address,
                id_to_hex(t.id)
            ),
            PyValue::Proxy(p) => write!(
                f,
                "<{} of Token(typeid={:?}, address={}, id={:?})>",
                p.class,
                p.token.typeid,
                p.token.address,
                id_to_hex(p.token.id)
            ),
            PyValue::Exception(e) => {
                write!(f, "{}(", e.qualified_name())?;
                seq(f, &e.args)?;
                f.write_str(")")
            }
            PyValue::Object(object) => write!(f, "<{}>", describe_object(object)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The captured frames: `(label, sender, payload)`.
    fn captured() -> Vec<(String, String, Vec<u8>)> {
        include_str!("testdata/captured_frames.txt")
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(fields.len(), 5, "bad fixture line {line:?}");
                let label = format!("{} #{} {}", fields[0], fields[1], fields[2]);
                let payload = hex::decode(fields[4]).expect("fixture hex");
                (label, fields[3].to_string(), payload)
            })
            .collect()
    }

    fn opaque() -> DecodeOptions {
        DecodeOptions {
            opaque_globals: true,
            ..DecodeOptions::default()
        }
    }

    fn hexs(text: &str) -> Vec<u8> {
        hex::decode(text.split_whitespace().collect::<String>()).unwrap()
    }

    fn s(text: &str) -> PyValue {
        PyValue::str(text)
    }

    fn int(i: i128) -> PyValue {
        PyValue::Int(i)
    }

    fn tcp_token(typeid: &str, port: u16, id: u64) -> Token {
        Token {
            typeid: typeid.to_string(),
            address: Address::from(("127.0.0.1", port)),
            id,
            instance: 0,
        }
    }

    #[test]
    fn every_captured_frame_round_trips() {
        let frames = captured();
        assert!(frames.len() > 400, "{} frames", frames.len());
        let mut refused = 0;
        for (label, _, payload) in &frames {
            let value = decode_with(payload, &opaque())
                .unwrap_or_else(|e| panic!("{label}: {e}\n{}", hex::encode(payload)));
            for frame in [true, false] {
                let options = EncodeOptions {
                    frame,
                    ..EncodeOptions::default()
                };
                let bytes = encode_with(&value, &options).unwrap();
                let again = decode_with(&bytes, &opaque()).unwrap();
                assert_eq!(again, value, "{label} (frame {frame})");
            }
            // Without opaque globals, only the frames carrying the capture's own classes are
            // refused, and they are refused by name.
            match decode(payload) {
                Ok(plain) => assert_eq!(plain, value, "{label}"),
                Err(PickleError::Refused { module, .. }) => {
                    assert_eq!(module, "capture_types", "{label}");
                    refused += 1;
                }
                Err(e) => panic!("{label}: {e}"),
            }
        }
        // `Pair` (#GETVALUE) and `MyError` (a user exception), in a few captures.
        assert!(refused > 0 && refused < 20, "{refused} refused");
    }

    #[test]
    fn proxy_reply_with_a_token() {
        // research notes §4.4.3: ('#PROXY', (('get_wrapped_item', 'set_wrapped_item'), Token(...)))
        let frame = hexs(
            "80 04 95 8f 00 00 00 00 00 00 00 8c 06 23 50 52 4f 58 59 94 8c 10 67 65 74 5f 77 72 61 70 70 65
             64 5f 69 74 65 6d 94 8c 10 73 65 74 5f 77 72 61 70 70 65 64 5f 69 74 65 6d 94 86 94 8c 18 6d 75
             6c 74 69 70 72 6f 63 65 73 73 69 6e 67 2e 6d 61 6e 61 67 65 72 73 94 8c 05 54 6f 6b 65 6e 94 93
             94 29 81 94 8c 0b 49 74 65 6d 57 72 61 70 70 65 72 94 8c 09 31 32 37 2e 30 2e 30 2e 31 94 4d 03
             a1 86 94 8c 0c 37 66 34 37 38 37 35 35 34 35 64 30 94 87 94 62 86 94 86 94 2e",
        );
        let token = tcp_token("ItemWrapper", 41219, 0x7f47875545d0);
        let expected = PyValue::Tuple(vec![
            s("#PROXY"),
            PyValue::Tuple(vec![
                PyValue::Tuple(vec![s("get_wrapped_item"), s("set_wrapped_item")]),
                PyValue::Token(token.clone()),
            ]),
        ]);
        assert_eq!(decode(&frame).unwrap(), expected);
        // Our encoding of the token is CPython's, without the memo opcodes.
        let bytes = encode_with(
            &PyValue::Token(token),
            &EncodeOptions {
                frame: false,
                ..EncodeOptions::default()
            },
        )
        .unwrap();
        let mut want = vec![0x80, 4, 0x8c, 24];
        want.extend_from_slice(b"multiprocessing.managers");
        want.extend_from_slice(&[0x8c, 5]);
        want.extend_from_slice(b"Token");
        want.extend_from_slice(&[0x93, 0x29, 0x81, 0x8c, 11]);
        want.extend_from_slice(b"ItemWrapper");
        want.extend_from_slice(&[0x8c, 9]);
        want.extend_from_slice(b"127.0.0.1");
        want.extend_from_slice(&[0x4d, 0x03, 0xa1, 0x86, 0x8c, 12]);
        want.extend_from_slice(b"7f47875545d0");
        want.extend_from_slice(&[0x87, 0x62, 0x2e]);
        assert_eq!(bytes, want);
    }

    #[test]
    fn proxy_passed_as_an_argument() {
        // research notes §4.4.9: p.set_x(item), a RebuildProxy(AutoProxy, token, ...)
        let frame = captured()
            .into_iter()
            .find(|(label, _, _)| label == "py311 #147 CS")
            .map(|(_, _, payload)| payload)
            .expect("frame 147 of py311");
        let token = tcp_token("ItemWrapper", 41219, 0x7f47875545d0);
        let expected = PyValue::Tuple(vec![
            s("7f478784e550"),
            s("set_x"),
            PyValue::Tuple(vec![PyValue::from(PyProxy::auto(
                token.clone(),
                Some(&["get_wrapped_item", "set_wrapped_item"]),
            ))]),
            PyValue::Dict(vec![]),
        ]);
        let value = decode(&frame).unwrap();
        assert_eq!(value, expected);
        let Value::Tuple(items) = value.into_value().unwrap() else {
            panic!("not a tuple")
        };
        assert_eq!(items[2], Value::Tuple(vec![Value::Proxy(token)]));
    }

    #[test]
    fn exceptions_from_3_11_and_3_13() {
        let find = |label: &str| {
            captured()
                .into_iter()
                .find(|(l, _, _)| l == label)
                .map(|(_, _, payload)| payload)
                .unwrap_or_else(|| panic!("no frame {label}"))
        };
        let message = "'Pair' object has no attribute 'no_such_attribute'";
        let old = decode(&find("py311 #98 SC")).unwrap();
        let plain = PyException::builtin("AttributeError", vec![s(message)]);
        assert_eq!(
            old,
            PyValue::Tuple(vec![s("#ERROR"), PyValue::Exception(plain.clone())])
        );
        // 3.12+ adds a state dict (3.13 sends the same bytes, deduplicated from the fixture); its
        // 'args' is a memo reference to the args tuple.
        let new = decode(&find("py312 #98 SC")).unwrap();
        let with_state = plain.with_state(vec![
            (s("name"), s("no_such_attribute")),
            (s("args"), PyValue::Tuple(vec![s(message)])),
        ]);
        assert_eq!(
            new,
            PyValue::Tuple(vec![s("#ERROR"), PyValue::Exception(with_state)])
        );
        let boom = decode(&find("py311 #94 SC")).unwrap();
        assert_eq!(
            boom,
            PyValue::Tuple(vec![
                s("#ERROR"),
                PyException::builtin("ValueError", vec![s("boom")]).into()
            ])
        );
    }

    #[test]
    fn the_echo_frame_of_every_primitive() {
        let frame = captured()
            .into_iter()
            .find(|(label, _, _)| label == "py311 #69 CS")
            .map(|(_, _, payload)| payload)
            .unwrap();
        let value = decode(&frame).unwrap();
        let PyValue::Tuple(request) = value else {
            panic!()
        };
        let PyValue::Tuple(args) = &request[2] else {
            panic!()
        };
        let PyValue::Tuple(values) = &args[0] else {
            panic!()
        };
        let expected = vec![
            PyValue::None,
            PyValue::Bool(true),
            PyValue::Bool(false),
            int(0),
            int(1),
            int(-1),
            int(255),
            int(65535),
            int(2147483648),
            int(9223372036854775808),
            int(-1180591620717411303424),
            PyValue::Float(1.5),
            s("str"),
            s("é€"),
            PyValue::Bytes(b"bytes".to_vec()),
            PyValue::ByteArray(b"ba".to_vec()),
            PyValue::List(vec![int(1), s("a")]),
            PyValue::Dict(vec![
                (s("k"), int(1)),
                (int(2), PyValue::List(vec![int(3)])),
            ]),
            PyValue::Tuple(vec![int(1)]),
            PyValue::Tuple(vec![int(1), int(2)]),
            PyValue::Tuple(vec![int(1), int(2), int(3)]),
            PyValue::Tuple(vec![int(1), int(2), int(3), int(4)]),
            PyValue::Tuple(vec![]),
            PyValue::List(vec![]),
            PyValue::Dict(vec![]),
            PyValue::Set(vec![int(1), int(2)]),
            PyValue::FrozenSet(vec![int(3)]),
            PyValue::Complex { re: 3.0, im: 4.0 },
        ];
        assert_eq!(values, &expected);
    }

    #[test]
    fn protocols_2_3_and_5() {
        // pickle.dumps([b'ab', b'', bytearray(b'x'), bytearray(), {1}, frozenset(), 'é',
        //   slice(1, 2), 3+4j, e, Token('t', ('127.0.0.1', 5), 'ab'), -2**70, 1.5,
        //   (1, 2, 3, 4), {'k': [1]}], protocol=p) with e = ValueError('x'); e.code = 42
        let p2 = "80025d710028635f636f646563730a656e636f64650a710158020000006162710258060000006c6174696e317103867104527105635f5f6275696c74696e5f5f0a62797465730a710629527107635f5f6275696c74696e5f5f0a6279746561727261790a710868015801000000787109680386710a52710b85710c52710d68082952710e635f5f6275696c74696e5f5f0a7365740a710f5d71104b0161857111527112635f5f6275696c74696e5f5f0a66726f7a656e7365740a71135d71148571155271165802000000c3a97117635f5f6275696c74696e5f5f0a736c6963650a71184b014b024e87711952711a635f5f6275696c74696e5f5f0a636f6d706c65780a711b47400800000000000047401000000000000086711c52711d63657863657074696f6e730a56616c75654572726f720a711e580100000078711f8571205271217d71225804000000636f646571234b2a7362636d756c746970726f63657373696e672e6d616e61676572730a546f6b656e0a712429817125580100000074712658090000003132372e302e302e3171274b0586712858020000006162712987712a628a090000000000000000c0473ff8000000000000284b014b024b034b0474712b7d712c58010000006b712d5d712e4b016173652e";
        let p3 = "80035d71002843026162710143007102636275696c74696e730a6279746561727261790a71034301787104857105527106680329527107636275696c74696e730a7365740a71085d71094b016185710a52710b636275696c74696e730a66726f7a656e7365740a710c5d710d85710e52710f5802000000c3a97110636275696c74696e730a736c6963650a71114b014b024e877112527113636275696c74696e730a636f6d706c65780a7114474008000000000000474010000000000000867115527116636275696c74696e730a56616c75654572726f720a7117580100000078711885711952711a7d711b5804000000636f6465711c4b2a7362636d756c746970726f63657373696e672e6d616e61676572730a546f6b656e0a711d2981711e580100000074711f58090000003132372e302e302e3171204b05867121580200000061627122877123628a090000000000000000c0473ff8000000000000284b014b024b034b047471247d712558010000006b71265d71274b016173652e";
        let p5 = "80059507010000000000005d942843026162944300949601000000000000007894960000000000000000948f94284b01902891948c02c3a9948c086275696c74696e73948c05736c6963659493944b014b024e8794529468088c07636f6d706c65789493944740080000000000004740100000000000008694529468088c0a56616c75654572726f729493948c017894859452947d948c04636f6465944b2a73628c186d756c746970726f63657373696e672e6d616e6167657273948c05546f6b656e9493942981948c0174948c093132372e302e302e31944b0586948c026162948794628a090000000000000000c0473ff8000000000000284b014b024b034b0474947d948c016b945d944b016173652e";
        let expected = PyValue::List(vec![
            PyValue::Bytes(b"ab".to_vec()),
            PyValue::Bytes(vec![]),
            PyValue::ByteArray(b"x".to_vec()),
            PyValue::ByteArray(vec![]),
            PyValue::Set(vec![int(1)]),
            PyValue::FrozenSet(vec![]),
            s("é"),
            PyValue::slice(int(1), int(2), PyValue::None),
            PyValue::Complex { re: 3.0, im: 4.0 },
            PyException::builtin("ValueError", vec![s("x")])
                .with_state(vec![(s("code"), int(42))])
                .into(),
            PyValue::Token(Token {
                typeid: "t".into(),
                address: Address::from(("127.0.0.1", 5)),
                id: 0xab,
                instance: 0,
            }),
            int(-(1 << 70)),
            PyValue::Float(1.5),
            PyValue::Tuple(vec![int(1), int(2), int(3), int(4)]),
            PyValue::Dict(vec![(s("k"), PyValue::List(vec![int(1)]))]),
        ]);
        for (protocol, data) in [(2, p2), (3, p3), (5, p5)] {
            let value = decode(&hex::decode(data).unwrap())
                .unwrap_or_else(|e| panic!("protocol {protocol}: {e}"));
            assert_eq!(value, expected, "protocol {protocol}");
        }
    }

    #[test]
    fn integers_up_to_i128() {
        for i in [
            0,
            1,
            -1,
            255,
            256,
            65535,
            65536,
            i128::from(i32::MIN),
            i128::from(i32::MAX),
            i128::from(i32::MIN) - 1,
            i128::from(i32::MAX) + 1,
            i128::from(i64::MAX) + 1,
            -128,
            -129,
            i128::MAX,
            i128::MIN,
        ] {
            let bytes = encode(&int(i)).unwrap();
            assert_eq!(decode(&bytes).unwrap(), int(i), "{i}");
        }
        // 2**127 takes 17 bytes: a BigInt, written back the same.
        let mut long = vec![0x80, 4, 0x8a, 17];
        long.extend_from_slice(&[0; 15]);
        long.extend_from_slice(&[0x80, 0x00, b'.']);
        let mut two_127 = vec![0; 15];
        two_127.extend_from_slice(&[0x80, 0x00]);
        assert_eq!(decode(&long).unwrap(), PyValue::BigInt(two_127.clone()));
        let again = encode_with(
            &PyValue::BigInt(two_127),
            &EncodeOptions {
                frame: false,
                ..Default::default()
            },
        );
        assert_eq!(again.unwrap(), long);
        // -2**127 - 1 too.
        let mut long = vec![0x80, 4, 0x8a, 17];
        long.extend_from_slice(&[0xff; 15]);
        long.extend_from_slice(&[0x7f, 0xff, b'.']);
        assert!(matches!(decode(&long), Ok(PyValue::BigInt(b)) if b.len() == 17));
        // A 17-byte encoding of a small number is fine (sign extension).
        let mut padded = vec![0x80, 4, 0x8a, 17, 5];
        padded.extend_from_slice(&[0; 16]);
        padded.push(b'.');
        assert_eq!(decode(&padded).unwrap(), int(5));
        // LONG4
        let mut long4 = vec![0x80, 4, 0x8b, 2, 0, 0, 0, 0x01, 0x80, b'.'];
        assert_eq!(decode(&long4).unwrap(), int(-32767));
        long4[3] = 0xff;
        long4[6] = 0xff;
        assert!(decode(&long4).is_err());
    }

    #[test]
    fn huge_length_prefixes_are_refused_before_allocating() {
        let cases: Vec<Vec<u8>> = vec![
            // BINBYTES8 of 2**60
            [&[0x80, 4, 0x8e][..], &(1u64 << 60).to_le_bytes(), b"."].concat(),
            // BYTEARRAY8 and BINUNICODE8 of 2**63
            [&[0x80, 5, 0x96][..], &(1u64 << 63).to_le_bytes()].concat(),
            [&[0x80, 4, 0x8d][..], &u64::MAX.to_le_bytes()].concat(),
            // BINBYTES / BINUNICODE of 4 GiB - 1
            [&[0x80, 4, b'B'][..], &u32::MAX.to_le_bytes()].concat(),
            [&[0x80, 4, b'X'][..], &u32::MAX.to_le_bytes()].concat(),
            // A FRAME longer than the data
            [&[0x80, 4, 0x95][..], &u64::MAX.to_le_bytes(), b"N."].concat(),
            // LONG4 of 2 GiB
            [&[0x80, 4, 0x8b][..], &i32::MAX.to_le_bytes()].concat(),
        ];
        for data in cases {
            let e = decode(&data).unwrap_err();
            assert!(matches!(e, PickleError::Truncated { .. }), "{e}");
        }
    }

    #[test]
    fn nesting_memo_copies_and_recursion_are_bounded() {
        // [[[...]]] 10_000 deep: EMPTY_LIST * n then APPEND * (n - 1).
        let n = 10_000;
        let mut deep = vec![0x80, 4];
        deep.extend(vec![b']'; n]);
        deep.extend(vec![b'a'; n - 1]);
        deep.push(b'.');
        let e = decode(&deep).unwrap_err();
        assert!(matches!(e, PickleError::Limit(_)), "{e}");
        // At the limit it decodes, and the value goes through everything else on a test
        // thread's stack (2 MiB) in a debug build.
        let n = DecodeOptions::default().max_depth;
        let mut ok = vec![0x80, 4];
        ok.extend(vec![b']'; n]);
        ok.extend(vec![b'a'; n - 1]);
        ok.push(b'.');
        let value = decode(&ok).unwrap();
        let bytes = encode(&value).unwrap();
        assert_eq!(decode(&bytes).unwrap(), value);
        let back = PyValue::from_value(value.clone().into_value().unwrap());
        assert_eq!(back, value);
        assert_eq!(format!("{value}").len(), 2 * n);
        // Billion laughs: t0 = [..]; t(i+1) = (t(i), t(i)), 60 levels: 2**60 copies.
        let mut laughs = vec![0x80, 4, b']', 0x94];
        for i in 0..60u8 {
            laughs.extend_from_slice(&[b'h', i, b'h', i, 0x86, 0x94]);
        }
        laughs.push(b'.');
        let e = decode(&laughs).unwrap_err();
        assert!(matches!(e, PickleError::Limit(_)), "{e}");
        // Many memo references to one small str are fine, beyond the copy limit: ['x'] * 1_100_000.
        let mut many = vec![0x80, 4, b']', 0x94, b'(', 0x8c, 1, b'x', 0x94];
        for _ in 1..1_100_000 {
            many.extend_from_slice(&[b'h', 1]);
        }
        many.extend_from_slice(b"e.");
        match decode(&many).unwrap() {
            PyValue::List(items) => assert_eq!(items.len(), 1_100_000),
            other => panic!("{}", other.kind()),
        }
        // A big str referenced many times: bounded by the byte budget.
        let big = vec![b'x'; 1 << 20];
        let mut copies = vec![0x80, 4, b'X'];
        copies.extend_from_slice(&(big.len() as u32).to_le_bytes());
        copies.extend_from_slice(&big);
        copies.extend_from_slice(&[0x94, b'(']);
        for _ in 0..200 {
            copies.extend_from_slice(&[b'h', 0]);
        }
        copies.extend_from_slice(b"t.");
        let e = decode(&copies).unwrap_err();
        assert!(matches!(e, PickleError::Limit(_)), "{e}");
        // A list that contains itself: l = []; l.append(l)
        let recursive = [0x80, 4, b']', 0x94, b'h', 0, b'a', b'.'];
        let e = decode(&recursive).unwrap_err();
        assert!(e.to_string().contains("recursive"), "{e}");
        // Encoding is bounded too.
        let mut value = PyValue::None;
        for _ in 0..300 {
            value = PyValue::List(vec![value]);
        }
        assert!(matches!(encode(&value), Err(PickleError::Encode(_))));
    }

    #[test]
    fn memo_references_see_later_mutation() {
        // x = []; t = (x, x) where x is filled after being memoized, then referenced.
        // EMPTY_LIST MEMOIZE  BINGET 0  K 1 APPEND  TUPLE2 -> ([1], [1])
        let data = [0x80, 4, b']', 0x94, b'h', 0, b'K', 1, b'a', 0x86, b'.'];
        let one = PyValue::List(vec![int(1)]);
        assert_eq!(
            decode(&data).unwrap(),
            PyValue::Tuple(vec![one.clone(), one])
        );
    }

    #[test]
    fn globals_outside_the_allow_list_are_refused() {
        let refused = |data: &[u8], module: &str, name: &str| {
            match decode(data) {
                Err(PickleError::Refused { module: m, name: n }) => {
                    assert_eq!((m.as_str(), n.as_str()), (module, name))
                }
                other => panic!("{module}.{name}: {other:?}"),
            }
            // Even with opaque globals, nothing is called: it stays a symbol.
            let value = decode_with(data, &opaque()).unwrap();
            assert!(matches!(value, PyValue::Object(_)), "{value:?}");
        };
        // GLOBAL 'os system' (protocol 0 operands), REDUCE ('echo hi',)
        refused(
            b"\x80\x02cos\nsystem\nX\x07\x00\x00\x00echo hi\x85R.",
            "os",
            "system",
        );
        // STACK_GLOBAL('builtins', 'eval')
        refused(
            b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93\x8c\x011\x85R.",
            "builtins",
            "eval",
        );
        refused(
            b"\x80\x04\x8c\x08builtins\x8c\x07getattr\x93.",
            "builtins",
            "getattr",
        );
        refused(
            b"\x80\x04\x8c\x18multiprocessing.managers\x8c\x0bBaseManager\x93.",
            "multiprocessing.managers",
            "BaseManager",
        );
        // A proxy class is not callable by itself, and a bare class is not data.
        let bare = b"\x80\x04\x8c\x08builtins\x8c\x0aValueError\x93.";
        assert!(decode(bare).is_err());
        let called = b"\x80\x04\x8c\x18multiprocessing.managers\x8c\x09AutoProxy\x93)R.";
        assert!(decode(called).is_err());
        // More proxy classes can be allowed.
        let options = DecodeOptions {
            proxy_classes: vec![("myapp".into(), "MyProxy".into())],
            ..DecodeOptions::default()
        };
        let mut proxy = PyProxy::auto(tcp_token("x", 1, 2), None);
        proxy.module = "myapp".into();
        proxy.class = "MyProxy".into();
        let bytes = encode(&PyValue::from(proxy.clone())).unwrap();
        assert!(matches!(decode(&bytes), Err(PickleError::Refused { .. })));
        assert_eq!(decode_with(&bytes, &options).unwrap(), PyValue::from(proxy));
    }

    #[test]
    fn tokens_and_addresses() {
        let tokens = [
            tcp_token("dict", 50000, 1),
            Token {
                typeid: "list".into(),
                address: Address::from(("::1", 7)),
                id: u64::MAX,
                instance: 0,
            },
            Token {
                typeid: "Queue".into(),
                address: Address::unix("/tmp/mgr.sock"),
                id: 0x7f00,
                instance: 0,
            },
            Token {
                typeid: "Abstract".into(),
                address: Address::unix(std::ffi::OsString::from_vec(b"\0abstract-mgr".to_vec())),
                id: 0,
                instance: 0,
            },
        ];
        use std::os::unix::ffi::OsStringExt;
        for token in tokens {
            let value = PyValue::Token(token.clone());
            assert_eq!(decode(&encode(&value).unwrap()).unwrap(), value);
            let proxy = PyValue::from(PyProxy::of_class("DictProxy", token.clone()));
            assert_eq!(decode(&encode(&proxy).unwrap()).unwrap(), proxy);
        }
        assert_eq!(
            address_to_py(&Address::from(("::1", 7))).unwrap(),
            PyValue::Tuple(vec![s("::1"), int(7)])
        );
        assert!(address_to_py(&Address::tcp("no-port")).is_err());
        assert_eq!(id_from_hex("7f478784e550"), Some(0x7f478784e550));
        assert_eq!(id_from_hex("7F"), Some(0x7f));
        for bad in ["", "xyz", "-1", "0x10", "11111111111111111"] {
            assert_eq!(id_from_hex(bad), None, "{bad}");
        }
        assert_eq!(id_to_hex(0x7f478784e550), "7f478784e550");
        // A token whose id is not hex is refused clearly.
        let mut bad = PyValue::Token(tcp_token("t", 1, 1));
        let bytes = encode(&bad).unwrap();
        let text = String::from_utf8_lossy(&bytes).replace("\u{8c}\u{1}1", "");
        let _ = text;
        if let PyValue::Token(t) = &mut bad {
            t.id = 0;
        }
        let mut bytes = encode(&bad).unwrap();
        let at = bytes.len() - 4; // ... 8c 01 '0' 87 62 2e
        assert_eq!(bytes[at], b'0');
        bytes[at] = b'z';
        let e = decode(&bytes).unwrap_err();
        assert!(e.to_string().contains("not a hexadecimal object id"), "{e}");
        // The dict form of the state is accepted too.
        let dict_state = PyValue::Object(Box::new(PyObject::Build {
            obj: PyValue::Object(Box::new(PyObject::NewObj {
                cls: PyValue::Object(Box::new(PyObject::Global {
                    module: MANAGERS_MODULE.into(),
                    name: "Token".into(),
                })),
                args: PyValue::Tuple(vec![]),
            })),
            state: PyValue::Tuple(vec![
                PyValue::None,
                PyValue::Dict(vec![
                    (s("typeid"), s("t")),
                    (s("address"), PyValue::Tuple(vec![s("127.0.0.1"), int(1)])),
                    (s("id"), s("ff")),
                ]),
            ]),
        }));
        assert_eq!(
            decode(&encode(&dict_state).unwrap()).unwrap(),
            PyValue::Token(Token {
                typeid: "t".into(),
                address: Address::from(("127.0.0.1", 1)),
                id: 0xff,
                instance: 0,
            })
        );
    }

    #[test]
    fn conversions_to_and_from_value() {
        let token = tcp_token("dict", 1, 2);
        let exception = PyException::new("_queue", "Empty", vec![])
            .with_state(vec![(s("extra"), PyValue::Bool(true))]);
        let py = PyValue::List(vec![
            PyValue::Set(vec![int(1), int(2)]),
            PyValue::FrozenSet(vec![s("a")]),
            PyValue::ByteArray(b"ba".to_vec()),
            PyValue::slice(int(1), PyValue::None, int(-1)),
            PyValue::Complex { re: 1.0, im: -2.5 },
            PyValue::Exception(exception.clone()),
            PyValue::Token(token.clone()),
            PyValue::from(PyProxy::auto(token.clone(), Some(&["a"]))),
            PyValue::Dict(vec![(s("b"), int(1)), (s("a"), int(2))]),
        ]);
        let value = py.into_value().unwrap();
        let Value::List(items) = &value else { panic!() };
        assert_eq!(items[0], Value::Set(vec![Value::Int(1), Value::Int(2)]));
        assert_eq!(items[1], Value::FrozenSet(vec![Value::Str("a".into())]));
        assert_eq!(items[2], Value::ByteArray(b"ba".to_vec()));
        assert_eq!(
            items[3],
            Value::Map(vec![(
                Value::Str(SLICE_TAG.into()),
                Value::Tuple(vec![Value::Int(1), Value::None, Value::Int(-1)])
            )])
        );
        assert_eq!(items[6], Value::Proxy(token.clone()));
        assert_eq!(items[7], Value::Proxy(token.clone()));
        assert_eq!(
            items[8],
            Value::Map(vec![
                (Value::Str("b".into()), Value::Int(1)),
                (Value::Str("a".into()), Value::Int(2))
            ])
        );
        // Back: tagged maps become the Python shapes again; sets and bytearrays keep their
        // types.
        let PyValue::List(back) = PyValue::from_value(value) else {
            panic!()
        };
        assert_eq!(back[0], PyValue::Set(vec![int(1), int(2)]));
        assert_eq!(back[1], PyValue::FrozenSet(vec![s("a")]));
        assert_eq!(back[2], PyValue::ByteArray(b"ba".to_vec()));
        assert_eq!(back[3], PyValue::slice(int(1), PyValue::None, int(-1)));
        assert_eq!(back[4], PyValue::Complex { re: 1.0, im: -2.5 });
        assert_eq!(back[5], PyValue::Exception(exception));
        assert_eq!(back[6], PyValue::from(PyProxy::auto(token, None)));
        // A map that only looks a bit like a tag stays a dict.
        let lookalike = Value::Map(vec![(Value::Str(SLICE_TAG.into()), Value::Int(1))]);
        assert!(matches!(PyValue::from_value(lookalike), PyValue::Dict(_)));
        // Other objects become opaque values: their class and pickle, written back as they
        // came.
        let object = PyValue::Object(Box::new(PyObject::Global {
            module: "m".into(),
            name: "n".into(),
        }));
        let Value::Opaque(opaque) = object.into_value().unwrap() else {
            panic!("not opaque")
        };
        assert_eq!(opaque.class(), "m.n");
        assert_eq!(opaque.pickle(), b"\x80\x04\x8c\x01m\x8c\x01n\x93.");
        let inside = PyValue::List(vec![PyValue::from_value(Value::Opaque(opaque))]);
        let framed = EncodeOptions {
            frame: false,
            ..Default::default()
        };
        assert_eq!(
            encode_with(&inside, &framed).unwrap(),
            b"\x80\x04](\x8c\x01m\x8c\x01n\x93e."
        );
    }

    #[test]
    fn no_input_makes_the_decoder_panic() {
        use rand::{Rng, SeedableRng};
        let frames = captured();
        let mut decoded = 0usize;
        for (_, _, payload) in &frames {
            for len in 0..payload.len() {
                let _ = decode_with(&payload[..len], &opaque());
            }
            for i in 0..payload.len() {
                for mask in [0x01u8, 0x80, 0xff] {
                    let mut flipped = payload.clone();
                    flipped[i] ^= mask;
                    if decode_with(&flipped, &opaque()).is_ok() {
                        decoded += 1;
                    }
                    let _ = decode(&flipped);
                }
            }
        }
        assert!(decoded > 0);
        // Random opcode soup, biased towards the opcodes the decoder knows.
        let alphabet: &[u8] = b"\x80\x95.(0124\x94pqrghjN\x88\x89KMJ\x8a\x8bG\x8cX\x8dCB\x8e\x96)\x85\x86\x87t]ael}sud\x8f\x90\x91c\x93R\x81b";
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        for _ in 0..20_000 {
            let len = rng.gen_range(0..64);
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.gen_bool(0.7) {
                        alphabet[rng.gen_range(0..alphabet.len())]
                    } else {
                        rng.gen()
                    }
                })
                .collect();
            let _ = decode(&data);
            let _ = decode_with(&data, &opaque());
        }
    }

    /// Python's view of a pickle: a canonical form that compares exceptions, tokens and
    /// stand-ins for classes the test cannot import by their content.
    const PY_COMPARE: &str = r#"
import pickle, sys, multiprocessing.managers as mm

class Stub:
    def __init__(self, name): self.name = name
    def __call__(self, *a, **k): return ('<call %s>' % self.name, a, k)
    def __eq__(self, o): return isinstance(o, Stub) and o.name == self.name
    def __hash__(self): return hash(self.name)

_classes = {}
def stub_class(module, name):
    if (module, name) not in _classes:
        class C:
            def __init__(self, *args): self._args = args
            def __setstate__(self, state): self._state = state
        C.__module__, C.__name__, C.__qualname__ = module, name, name
        _classes[(module, name)] = C
    return _classes[(module, name)]

class U(pickle.Unpickler):
    def find_class(self, module, name):
        if module == 'multiprocessing.managers' and name != 'Token':
            return Stub(module + '.' + name)
        if module == 'capture_types':
            return stub_class(module, name)
        return super().find_class(module, name)

def canon(o):
    t = type(o)
    if isinstance(o, BaseException):
        return ('exc', t.__module__, t.__qualname__, canon(o.args),
                canon(sorted(vars(o).items())), canon(getattr(o, 'name', None)))
    if isinstance(o, mm.Token):
        return ('token', o.typeid, canon(o.address), o.id)
    if isinstance(o, Stub):
        return ('stub', o.name)
    if t in _classes.values():
        return ('obj', t.__module__, t.__qualname__, canon(getattr(o, '_args', None)),
                canon(getattr(o, '_state', None)))
    if isinstance(o, dict):
        return ('dict', tuple((canon(k), canon(v)) for k, v in o.items()))
    if isinstance(o, (list, tuple)):
        return (t.__name__, tuple(canon(x) for x in o))
    if isinstance(o, (set, frozenset)):
        return (t.__name__, frozenset(canon(x) for x in o))
    return (t.__name__, o)

import io
bad = 0
lines = open(sys.argv[1]).read().split('\n')
for n, line in enumerate(l for l in lines if l):
    label, theirs, ours = line.split(' ')
    a = canon(U(io.BytesIO(bytes.fromhex(theirs))).load())
    b = canon(U(io.BytesIO(bytes.fromhex(ours))).load())
    if a != b:
        bad += 1
        print('DIFF', label, a, b)
print('COMPARED', n + 1, 'BAD', bad)
"#;

    #[test]
    fn cpython_loads_our_encoding_of_every_frame_it_sent() {
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string());
        if std::process::Command::new(&python)
            .arg("--version")
            .output()
            .is_err()
        {
            println!("SKIPPED: {python} not found; CPython cannot check our encoding");
            return;
        }
        let mut lines = String::new();
        let mut count = 0;
        for (label, sender, payload) in captured() {
            if sender != "cpython" {
                continue;
            }
            let value = decode_with(&payload, &opaque()).unwrap();
            for frame in [true, false] {
                let options = EncodeOptions {
                    frame,
                    ..EncodeOptions::default()
                };
                let ours = encode_with(&value, &options).unwrap();
                lines.push_str(&format!(
                    "{}/{frame} {} {}\n",
                    label.replace(' ', "_"),
                    hex::encode(&payload),
                    hex::encode(ours)
                ));
                count += 1;
            }
        }
        let path =
            std::env::temp_dir().join(format!("manager-pickle-frames-{}.txt", std::process::id()));
        std::fs::write(&path, lines).unwrap();
        let output = std::process::Command::new(&python)
            .arg("-c")
            .arg(PY_COMPARE)
            .arg(&path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains(&format!("COMPARED {count} BAD 0")),
            "{stdout}\n{stderr}"
        );
    }
}
