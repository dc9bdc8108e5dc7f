//! CPython idioms on the built-in types, each checked against what CPython's own server
//! prints, under every CPython found: numbers and keys, sorting, values of any type, the rest
//! of the proxy surface, missing arguments and CPython's exception words, and keyword arguments of a registered typeid's create.

#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

mod common;

use common::python::{assert_sync_script_prints, interpreters, run_python, server};

const OPAQUE_VALUES: &str = r#"
import sys, datetime, decimal, fractions, uuid, collections, dataclasses
from multiprocessing.managers import SyncManager

@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int = 0

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
values = [
    datetime.datetime(2026, 12, 1, 1, 2, 3), datetime.date(2026, 1, 2), datetime.timedelta(3),
    datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc), decimal.Decimal("1.5"),
    fractions.Fraction(1, 3), uuid.UUID(int=2 ** 127 + 5), collections.OrderedDict(a=1),
    collections.Counter("aab"), collections.deque([1, 2], maxlen=5), range(3), ...,
    Point(1, 2), collections.defaultdict(list, a=[1]), 2 ** 200, -2 ** 130, {1, 2},
    frozenset({3}), bytearray(b"ab"), complex(1, 2),
]
l = m.list()
for v in values:
    l.append(v)
back = l[:]
print(all(type(a) is type(b) and a == b for a, b in zip(back, values)), len(back))
print([type(v).__name__ for v in back])
print(str(m.list([Point(1, 2), 2 ** 200, frozenset({3}), bytearray(b"ab")])))
d = m.dict()
d[Point(1, 2)] = "point"; d[datetime.date(2026, 1, 2)] = "date"
d[frozenset({1, 2})] = "frozenset"; d[2 ** 100] = "big"
print(d[Point(1, 2)], d[datetime.date(2026, 1, 2)], d[frozenset({2, 1})], d[2 ** 100], len(d))
print(Point(1, 2) in l, l.count(datetime.date(2026, 1, 2)), l.index(decimal.Decimal("1.5")))
for key in ({1}, bytearray(b"x")):
    try:
        d[key] = 1
    except TypeError as e:
        print("TypeError:", e)
q = m.Queue()
q.put(Point(3, 4))
print(q.get())
"#;

/// Whatever a CPython client pickles comes back as it went: objects the server does not build
/// (datetimes, decimals, dataclasses, any class) are kept as their pickles, compared and hashed
/// by them; big ints, sets, frozensets and bytearrays keep their types. They used to be refused.
#[test]
fn cpython_values_of_any_type_come_back_as_they_went() {
    assert_sync_script_prints(
        OPAQUE_VALUES,
        "True 20\n\
         ['datetime', 'date', 'timedelta', 'datetime', 'Decimal', 'Fraction', 'UUID', \
         'OrderedDict', 'Counter', 'deque', 'range', 'ellipsis', 'Point', 'defaultdict', 'int', \
         'int', 'set', 'frozenset', 'bytearray', 'complex']\n\
         [Point(x=1, y=2), 1606938044258990275541962092341162602522202993782792835301376, \
         frozenset({3}), bytearray(b'ab')]\n\
         point date frozenset big 4\n\
         True 1 4\n\
         TypeError: unhashable type: 'set'\n\
         TypeError: unhashable type: 'bytearray'\n\
         Point(x=3, y=4)\n",
    );
}

const NUMBERS: &str = r#"
import sys
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
d = m.dict()
d[1] = "a"
print(d[1.0], d[True], 1.0 in d, len(d))
d[1.0] = "b"
print(len(d), d[1], list(d.keys()))
l = m.list([1, 1.0, True, 2])
print(1.0 in l, l.count(True), l.index(2.0))
l.remove(1.0)
print(l[:])
for key in ([1], {"a": 1}, (1, [2])):
    try:
        d[key] = 2
        print("stored")
    except TypeError as e:
        print(e)
print(d.copy())
print(str(m.list([1, "it's", 2.5, None, (1,), b"x"])), str(m.dict({"a": [1e16, True]})))
print(m.list("abc")[:], m.list((1, 2))[:], m.list({"k": 1})[:], m.list(b"ab")[:])
s = m.list(list(range(10)))
print(s[::2], s[::-3], s[7:2:-2], s[-3:], s[100:], s[::-1][:3])
a = m.Array("i", [1, 2, 3])
# Slices of an Array are array.array('i', [...]), as CPython's own server returns them.
print(a[:], a[::-1], a[1:])
try:
    s[::0]
except ValueError as e:
    print("ValueError:", e)
def error(call):
    try:
        call()
        return "no error"
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
two = m.list([1, 2])
print(two + [3], two * 2, 2 * two, list(reversed(two)), two[:])
two += [3]
print(two[:], error(lambda: two + (4,)), error(lambda: two * 1.5))
# The server builds no list of any size a client asks for (CPython's would try).
print(error(lambda: two * (1 << 40)).split(":")[0])
"#;

/// Numbers compare as Python's: `1`, `1.0` and `True` are one key, and `in`, `count`,
/// `index` and `remove` find one for the other (they used to be different values); an
/// unhashable key is CPython's `TypeError` (it used to be stored, and then broke every copy
/// of the dict).
#[test]
fn cpython_numbers_and_dict_keys_behave_as_in_cpython() {
    assert_sync_script_prints(
        NUMBERS,
        "a a True 1\n1 b [1]\nTrue 3 3\n[1.0, True, 2]\n\
             unhashable type: 'list'\nunhashable type: 'dict'\nunhashable type: 'list'\n\
             {1: 'b'}\n\
             [1, \"it's\", 2.5, None, (1,), b'x'] {'a': [1e+16, True]}\n\
             ['a', 'b', 'c'] [1, 2] ['k'] [97, 98]\n\
             [0, 2, 4, 6, 8] [9, 6, 3, 0] [7, 5, 3] [7, 8, 9] [] [9, 8, 7]\n\
             array('i', [1, 2, 3]) array('i', [3, 2, 1]) array('i', [2, 3])\n\
             ValueError: slice step cannot be zero\n\
             [1, 2, 3] [1, 2, 1, 2] [1, 2, 1, 2] [2, 1] [1, 2]\n\
             [1, 2, 3] TypeError: can only concatenate list (not \"tuple\") to list \
             TypeError: 'float' object cannot be interpreted as an integer\n\
             MemoryError\n",
    );
}

const SORT: &str = r#"
import sys
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
l = m.list([3, 1.5, True, -2, 10])
l.sort()
print(l[:])
l.sort(reverse=True)
print(l[:])
w = m.list(["pear", "apple", "fig"])
w.sort(key=None)
print(w[:])
t = m.list([(2, "b"), (1, "z"), (2, "a")])
t.sort()
print(t[:])
def error(call):
    try:
        call()
        return "no error"
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
mixed = m.list([1, "a"])
print(error(lambda: mixed.sort()), mixed[:])
# abs and len the server applies itself; any other key function is Python code, which a
# server that runs no Python code refuses, naming it.
w.sort(key=len)
print(w[:])
refused = error(lambda: w.sort(key=str))
print(refused.split(":")[0], "builtins.str" in refused, w[:])
"#;

/// `list.sort()` in Python's order, with `reverse`; items Python cannot compare are its
/// `TypeError` and leave the list as it was; `key=abs` and `key=len` are applied by the
/// server; any other `key` function is refused with a `TypeError` that says why (a Rust
/// server cannot run Python code).
#[test]
fn cpython_list_sort_sorts_as_python_sorts() {
    assert_sync_script_prints(
        SORT,
        "[-2, True, 1.5, 3, 10]\n[10, 3, 1.5, True, -2]\n['apple', 'fig', 'pear']\n\
             [(1, 'z'), (2, 'a'), (2, 'b')]\n\
             TypeError: '<' not supported between instances of 'str' and 'int' [1, 'a']\n\
             ['fig', 'pear', 'apple']\n\
             TypeError True ['fig', 'pear', 'apple']\n",
    );
}

const PROXY_SURFACE: &str = r#"
import sys
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
def error(call):
    try:
        r = call()
        return "no error %r" % (r,)
    except Exception as e:
        return "%s: %s" % (type(e).__name__, str(e).strip().splitlines()[-1])
l = m.list([1, 2, 3])
l *= 2
print(l[:])
l = m.list(range(10))
l[::2] = ["a"] * 5
print(l[:], error(lambda: l.__setitem__(slice(None, None, 2), [1])))
del l[1::3]
print(l[:])
l[::-1] = list(range(len(l)))
print(l[:], error(lambda: l.__delitem__(slice(None, None, 0))))
l.extend("xy"); l += (7,)
print(l[-3:])
l2 = m.list([1, 2, 3, 1, 2, 3])
print(l2.index(2, 2), l2.index(3, -2), error(lambda: l2.index(1, 1, 3)))
ns = m.Namespace(b=1, a=[1, 2])
print(ns._getvalue(), str(ns), type(ns._getvalue()).__name__)
a = m.Array("i", [1, 2, 3])
print(a._getvalue(), str(a), a[:], a[::2])
print(error(lambda: a.__setitem__(0, 1.5)), error(lambda: a.__setitem__(0, 2 ** 40)), a[:])
print(error(lambda: m.Array("i", [1.5])).split(":")[0])
print(m.Array("d", [1, 2])[:], str(m.Value("i", 8)), m.Value("d", 1.5)._getvalue())
src = m.dict(a=1, b=2)
dst = m.dict(c=3)
dst.update(src)
print(dst.copy(), m.dict(src).copy(), m.list(m.list([5, 6]))[:])
into = m.list([0]); into.extend(m.list([1, 2])); print(into[:])
print(error(lambda: m.Pool(2)).split(":")[0], "runs no Python code" in error(lambda: m.Pool(2)))
"#;

/// The rest of the proxy surface of `SyncManager`'s types: `l *= n`, slice assignment and
/// deletion with a step, `index` with bounds, `_getvalue()` and `str()` of `Namespace`, `Array`
/// (an `array.array` of its typecode, whose items it checks as `array.array` does) and
/// `Value`, updates from other proxies, and `Pool` refused, saying why.
#[test]
fn cpython_proxy_surface_is_served() {
    assert_sync_script_prints(
        PROXY_SURFACE,
        "[1, 2, 3, 1, 2, 3]\n\
         ['a', 1, 'a', 3, 'a', 5, 'a', 7, 'a', 9] ValueError: attempt to assign sequence of \
         size 1 to extended slice of size 5\n\
         ['a', 'a', 3, 5, 'a', 'a', 9]\n\
         [6, 5, 4, 3, 2, 1, 0] ValueError: slice step cannot be zero\n\
         ['x', 'y', 7]\n\
         4 5 ValueError: 1 is not in list\n\
         Namespace(a=[1, 2], b=1) Namespace(a=[1, 2], b=1) Namespace\n\
         array('i', [1, 2, 3]) array('i', [1, 2, 3]) array('i', [1, 2, 3]) array('i', [1, 3])\n\
         TypeError: 'float' object cannot be interpreted as an integer OverflowError: signed \
         integer is greater than maximum array('i', [1, 2, 3])\n\
         RemoteError\n\
         array('d', [1.0, 2.0]) Value('i', 8) Value('d', 1.5)\n\
         {'c': 3, 'a': 1, 'b': 2} {'a': 1, 'b': 2} [5, 6]\n\
         [0, 1, 2]\n\
         NotImplementedError True\n",
    );
}

/// A factory whose parameters are named for CPython's keyword arguments, and one whose are not.
mod keywords {
    use manager::{Register, Registry};

    pub struct Pair {
        x: i64,
        y: i64,
    }

    #[manager::shared]
    impl Pair {
        pub fn get(&self) -> (i64, i64) {
            (self.x, self.y)
        }
    }

    pub fn registry() -> Registry {
        let mut registry = Registry::new();
        registry
            .register(
                Register::factory("Pair", |(x, y): (i64, i64)| Pair { x, y }).params(["x", "y"]),
            )
            .unwrap();
        registry
            .register(Register::factory("Bare", |(x,): (i64,)| Pair { x, y: 0 }))
            .unwrap();
        registry
    }
}

const KEYWORDS: &str = r#"
import sys
from multiprocessing.managers import BaseManager, RemoteError

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register("Pair")
mgr.register("Bare")
mgr.connect()
def error(call):
    try:
        return repr(call())
    except RemoteError as e:
        return "RemoteError: " + [l for l in str(e).splitlines() if l.strip() and l[0] != "-"][-1]
print(mgr.Pair(1, y=3).get(), mgr.Pair(y=4, x=2).get(), mgr.Bare(5).get())
print(error(lambda: mgr.Pair(1, z=2)))
print(error(lambda: mgr.Pair(1, x=2)))
print(error(lambda: mgr.Pair(y=2)))
print(error(lambda: mgr.Bare(x=1)).split(":")[0:2])
"#;

/// Keyword arguments of a registered typeid's create (`manager.Pair(1, y=3)`) reach the
/// factory by the names `Register::params` gives its parameters, with CPython's `TypeError`s
/// for names it lacks; a factory without names refuses keywords, saying so.
#[test]
fn cpython_creates_take_keyword_arguments_by_the_names_the_registry_gives() {
    for python in interpreters() {
        let (_server, host, port) = server(keywords::registry());
        let out = run_python(&python, KEYWORDS, &host, &port);
        assert_eq!(
            out,
            "(1, 3) (2, 4) (5, 0)\n\
             RemoteError: TypeError: Pair() got an unexpected keyword argument 'z'\n\
             RemoteError: TypeError: Pair() got multiple values for argument 'x'\n\
             RemoteError: TypeError: Pair() missing 1 required positional argument: 'x'\n\
             ['RemoteError', ' TypeError']\n",
            "{}",
            python.display()
        );
    }
}

const QUIET_WRONG_ANSWERS: &str = r#"
import sys
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
d = m.dict()
d["none"] = None
print(d.get("none", "default"), d.get("missing", "default"), d.get("missing"))
print(d.pop("none", "default"), d.pop("missing", "default"))
def type_error(call):
    try:
        call()
        return "no error"
    except TypeError:
        return "TypeError"
q = m.Queue()
l = m.list()
print(type_error(lambda: q.put()), q.qsize())
print(type_error(lambda: l.append()), type_error(lambda: l.insert(0)), len(l))
print(type_error(lambda: d.setdefault()), type_error(lambda: d.__setitem__("k")), len(d))
print(type_error(lambda: d.update({"a": 1}, {"b": 2})), len(d))
l.append(1)
print(l.pop(), len(l))
"#;

/// Idioms that used to give silently wrong answers: `d.get(k, default)` and `d.pop(k,
/// default)` returned the default for a stored `None`; missing arguments were stored as
/// `None` (`q.put()`, `l.append()`, `l.insert(0)`, `d.setdefault()`, `d[k]` with no value);
/// `d.update(a, b)` dropped `a`. CPython's answers, and its `TypeError`s, now.
#[test]
fn cpython_idioms_get_cpython_answers() {
    assert_sync_script_prints(
        QUIET_WRONG_ANSWERS,
        "None default None\nNone default\nTypeError 0\nTypeError TypeError 0\n\
             TypeError TypeError 0\nTypeError 0\n1 0\n",
    );
}

const EXCEPTIONS: &str = r#"
import sys
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
l = m.list([1, 2])
def error(call):
    try:
        call()
        return "no error"
    except Exception as e:
        return "%s: %s" % (type(e).__name__, e)
print(error(lambda: l[5]))
print(error(lambda: l.__setitem__(5, 0)))
print(error(lambda: l.__delitem__(5)))
print(error(lambda: l.pop(5)))
print(error(lambda: l.remove(9)))
print(error(lambda: m.list().pop()))
print(error(lambda: m.JoinableQueue().task_done()))
"#;

/// The exceptions CPython's own server sends for list and queue misuse: the same types and
/// the same words.
#[test]
fn cpython_clients_get_cpython_exceptions_word_for_word() {
    assert_sync_script_prints(
        EXCEPTIONS,
        "IndexError: list index out of range\n\
             IndexError: list assignment index out of range\n\
             IndexError: list assignment index out of range\n\
             IndexError: pop index out of range\n\
             ValueError: list.remove(x): x not in list\n\
             IndexError: pop from empty list\n\
             ValueError: task_done() called too many times\n",
    );
}
