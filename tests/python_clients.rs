//! Unmodified CPython clients (every CPython 3.x found on the machine) against a Rust manager:
//! the seed's consumer against a Rust producer, CPython's `SyncManager` proxies against the
//! built-in types, errors raised as the exceptions CPython raises, and reference counts.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

mod common;

use std::process::Command;

use common::python::{assert_sync_script_prints, interpreters, run_python, server, server_with};
use common::wait_until;
use manager::{Address, AuthKey};

const SYNC_SCRIPT: &str = r#"
import sys, queue, threading
from multiprocessing.managers import SyncManager, RemoteError

import multiprocessing
host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
# Proxies rebuilt from a pickle (a dict inside a list) authenticate with the process's key.
multiprocessing.current_process().authkey = key
m = SyncManager(address=(host, port), authkey=key)
m.connect()
checks = 0
def check(cond, what):
    global checks
    assert cond, what
    checks += 1

l = m.list([1, 2])
l.append(3); l += [4]
check(l[0] == 1 and l[-1] == 4 and len(l) == 4, "list basics")
check(l[1:3] == [2, 3], "list slice")
l[0] = 10; del l[1]
check(list(l[:]) == [10, 3, 4] and 3 in l and l.index(4) == 2 and l.count(3) == 1, "list edits")
check(l.pop() == 4 and l.pop(0) == 10, "list pop")
try:
    l[99]; check(False, "IndexError")
except IndexError:
    checks += 1

d = m.dict(a=1)
d["b"] = 2
check(d["a"] == 1 and d.get("zz") is None and d.get("zz", 5) == 5, "dict get")
check(sorted(d.keys()) == ["a", "b"] and sorted(d.items()) == [("a", 1), ("b", 2)], "dict views")
check("a" in d and len(d) == 2, "dict contains/len")
try:
    d["zz"]; check(False, "KeyError")
except KeyError as e:
    check(e.args == ("zz",), "KeyError args")
d.update({"c": 3}, e=5)
check(d.pop("c") == 3 and d.pop("nope", 7) == 7 and d.setdefault("f", 6) == 6, "dict pop/setdefault")
check(d.copy() == {"a": 1, "b": 2, "e": 5, "f": 6}, "dict copy")
check(list(d) == ["a", "b", "e", "f"] and [k for k in d] == list(d), "dict iterate")
# An iterator left half-way: released with the client's other proxies when it exits.
left = iter(d)
check(next(left) == "a", "dict next")

ns = m.Namespace(x=1)
ns.y = [1, "two"]
check(ns.x == 1 and ns.y == [1, "two"], "namespace")
try:
    ns.nope; check(False, "AttributeError")
except AttributeError:
    checks += 1

v = m.Value("i", 7); v.value = 8
check(v.value == 8, "Value")
a = m.Array("d", [1.0, 2.0]); a[1] = 3.5
check(len(a) == 2 and a[1] == 3.5, "Array")

q = m.Queue(2)
q.put({"job": 1}); q.put_nowait(2)
check(q.full() and q.qsize() == 2, "queue full")
try:
    q.put(3, timeout=0.05); check(False, "Full")
except queue.Full:
    checks += 1
check(q.get() == {"job": 1} and q.get_nowait() == 2 and q.empty(), "queue get")
try:
    q.get(timeout=0.05); check(False, "Empty")
except queue.Empty:
    checks += 1

jq = m.JoinableQueue()
jq.put("x"); jq.get(); jq.task_done(); jq.join()
checks += 1

lock = m.Lock()
check(lock.acquire() and not lock.acquire(timeout=0.05), "lock")
lock.release()
with lock:
    checks += 1
rl = m.RLock()
check(rl.acquire() and rl.acquire(), "rlock reentrant"); rl.release(); rl.release()
sem = m.BoundedSemaphore(2)
check(sem.acquire() and sem.acquire() and not sem.acquire(False), "semaphore")
sem.release(); sem.release()
try:
    sem.release(); check(False, "ValueError")
except ValueError:
    checks += 1

ev = m.Event()
check(not ev.is_set() and not ev.wait(0.05), "event unset")
ev.set()
check(ev.is_set() and ev.wait(), "event set")

cv = m.Condition()
cv.acquire()
check(cv.wait(0.05) is False, "condition wait timeout")
cv.notify_all(); cv.release()

b = m.Barrier(1)
check(b.parties == 1 and b.wait() == 0 and not b.broken, "barrier")

outer = m.list()
inner = m.dict(k="v")
outer.append(inner)
del inner
check(outer[0]["k"] == "v", "a proxy inside a list")
print("ok", checks)
"#;

#[test]
fn cpython_sync_manager_proxies_work_against_the_builtin_types() {
    for python in interpreters() {
        let (server, host, port) = server(manager::sync::registry());
        let out = run_python(&python, SYNC_SCRIPT, &host, &port);
        assert!(out.trim().starts_with("ok "), "{}: {out}", python.display());
        // Everything the Python client made is released once it has gone: the dicts and lists
        // its proxies held were decref'd, and nothing is held by a dead connection.
        let observer = server.connect();
        wait_until(
            "the Python client's objects to be released",
            || match observer.number_of_objects() {
                Ok(0) => Ok(()),
                other => Err(format!(
                    "{}: {other:?} {:?}",
                    python.display(),
                    observer.debug_info()
                )),
            },
        );
    }
}

const SEED_CONSUMER: &str = r#"
import sys
from multiprocessing.managers import BaseManager

class ItemWrapper: pass

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register('ItemWrapper', ItemWrapper)
mgr.register('get_pair')
mgr.connect()

p = mgr.get_pair()
proxy1 = p.get_item()
print("proxy1 sees item as : " + str(proxy1.get_wrapped_item()))
old_val = proxy1.get_wrapped_item()
proxy1._callmethod('set_wrapped_item', (7,))
print("proxy1 changes item from {0} to {1}".format(old_val, proxy1.get_wrapped_item()))

proxy2 = mgr.get_pair().get_item()
print("proxy2 sees item as : " + str(proxy2.get_wrapped_item()))
old_val = proxy2.get_wrapped_item()
proxy2.set_wrapped_item(11)
print("proxy2 changes item from {0} to {1}".format(old_val, proxy2.get_wrapped_item()))
print("proxy1 sees item as : " + str(proxy1.get_wrapped_item()))
"#;

/// The seed's `Pair` and `ItemWrapper`, with an item of any value (the seed sets ints).
mod seed {
    use std::sync::{Arc, Mutex};

    use manager::value::Value;
    use manager::{Register, Registry};

    #[derive(Clone)]
    pub struct Item(pub Arc<Mutex<Value>>);

    pub struct Pair {
        pub x: i64,
        pub i: Item,
    }

    #[manager::shared(method_to_typeid = { get_item: "ItemWrapper" })]
    impl Pair {
        pub fn get_item(&self) -> Item {
            self.i.clone()
        }
        pub fn get_x(&self) -> i64 {
            self.x
        }
        pub fn set_x(&mut self, new_x: i64) {
            self.x = new_x;
        }
    }

    pub struct ItemWrapper {
        item: Item,
    }

    #[manager::shared]
    impl ItemWrapper {
        pub fn set_wrapped_item(&self, new_item: Value) {
            *self.item.0.lock().unwrap() = new_item;
        }
        pub fn get_wrapped_item(&self) -> Value {
            self.item.0.lock().unwrap().clone()
        }
    }

    pub fn registry(item: Item) -> Registry {
        let mut registry = Registry::new();
        registry
            .register(
                Register::<ItemWrapper>::new("ItemWrapper")
                    .from_result(|item: Item| ItemWrapper { item }),
            )
            .unwrap();
        registry
            .register(
                Register::shared("get_pair", Pair { x: 15, i: item })
                    .exposed(["get_item", "get_x"]),
            )
            .unwrap();
        registry
    }
}

#[test]
fn the_seed_consumer_runs_unchanged_against_a_rust_producer() {
    use std::sync::{Arc, Mutex};
    for python in interpreters() {
        let item = seed::Item(Arc::new(Mutex::new(manager::value::Value::Str(
            "intialized".into(),
        ))));
        let (server, host, port) = server(seed::registry(item.clone()));
        let out = run_python(&python, SEED_CONSUMER, &host, &port);
        assert_eq!(
            out,
            "proxy1 sees item as : intialized\n\
             proxy1 changes item from intialized to 7\n\
             proxy2 sees item as : 7\n\
             proxy2 changes item from 7 to 11\n\
             proxy1 sees item as : 11\n",
            "{}",
            python.display()
        );
        // The producer sees what the consumer did.
        assert_eq!(*item.0.lock().unwrap(), manager::value::Value::Int(11));
        // The ItemWrappers the consumer received are released once it has gone; only the
        // shared pair stays.
        let observer = server.connect();
        wait_until("the wrappers to be released", || {
            match observer.number_of_objects() {
                Ok(1) => Ok(()),
                other => Err(format!("{other:?} {:?}", observer.debug_info())),
            }
        });
    }
}

const REFUSALS: &str = r#"
import sys
from multiprocessing.managers import BaseManager, RemoteError

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register('get_pair')
mgr.connect()
p = mgr.get_pair()
print(p.get_x())
try:
    p._callmethod('set_x', (7,))
    print("set_x allowed")
except RemoteError as e:
    print("set_x refused:", "not in exposed" in str(e))
try:
    p._callmethod('get_x', ("too", "many"))
except TypeError as e:
    print("wrong arguments: TypeError")
bad = BaseManager(address=(host, port), authkey=b"wrong")
try:
    bad.connect()
    print("wrong key accepted")
except Exception as e:
    print("wrong key:", type(e).__name__)
"#;

#[test]
fn cpython_clients_get_cpython_errors() {
    use std::sync::{Arc, Mutex};
    for python in interpreters() {
        let item = seed::Item(Arc::new(Mutex::new(manager::value::Value::None)));
        let (_server, host, port) = server(seed::registry(item));
        let out = run_python(&python, REFUSALS, &host, &port);
        assert_eq!(
            out,
            "15\nset_x refused: True\nwrong arguments: TypeError\nwrong key: AuthenticationError\n",
            "{}",
            python.display()
        );
    }
}

const REFUSED_VALUE: &str = r#"
import sys
from multiprocessing.managers import SyncManager, RemoteError

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
q = m.Queue()
d = m.dict()
loop = []
loop.append(loop)
try:
    q.put(loop)
    print("stored")
except RemoteError as e:
    print("refused:", "recursive" in str(e))
# The same thread's connection goes on serving every proxy.
q.put(1)
print(q.get())
d["k"] = 2
print(d["k"])
looped = {}
looped["self"] = looped
try:
    d["loop"] = looped
    print("stored")
except RemoteError as e:
    print("refused:", "recursive" in str(e))
print(len(d))
"#;

/// A value the server will not unpickle (a list or dict that contains itself) gets an error
/// reply in CPython's form, and the connection goes on serving that client thread's other
/// proxies (it used to be dropped, and the client saw a bare
/// `EOFError`, then `BrokenPipeError` on every proxy of the thread).
#[test]
fn a_refused_value_is_an_error_reply_and_the_connection_goes_on() {
    assert_sync_script_prints(REFUSED_VALUE, "refused: True\n1\n2\nrefused: True\n1\n");
}

const STORE_A_DATE: &str = r#"
import sys, datetime
from multiprocessing.managers import BaseManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register('get_pair')
mgr.register('ItemWrapper')
mgr.connect()
item = mgr.get_pair().get_item()
if sys.argv[4] == "store":
    item.set_wrapped_item(datetime.date(2026, 12, 1))
print(repr(item.get_wrapped_item()))
"#;

/// What a Rust program sees of a value only Python can build: a `Value::Opaque` with its
/// class and pickle, which goes back to Python unchanged; read as a Rust type, an error that
/// names the class.
#[test]
fn a_rust_program_sees_an_opaque_value_by_its_class() {
    use std::sync::{Arc, Mutex};
    let python = interpreters().into_iter().next_back();
    let Some(python) = python else { return };
    let item = seed::Item(Arc::new(Mutex::new(manager::value::Value::None)));
    let (_server, host, port) = server(seed::registry(item.clone()));
    let run = |mode: &str| {
        let output = Command::new(&python)
            .args(["-c", STORE_A_DATE, &host, &port, "py-key", mode])
            .output()
            .expect("run python");
        assert!(output.status.success(), "{output:?}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    assert_eq!(run("store"), "datetime.date(2026, 12, 1)\n");
    let stored = item.0.lock().unwrap().clone();
    let manager::value::Value::Opaque(opaque) = &stored else {
        panic!("not opaque: {stored:?}")
    };
    assert_eq!(opaque.class(), "datetime.date");
    let error = manager::value::from_value::<i64>(stored.clone()).unwrap_err();
    assert!(error.to_string().contains("datetime.date"), "{error}");
    // A Rust program that puts it back (here: through postcard, as a native client sends it)
    // gives Python its date again.
    let bytes = postcard::to_stdvec(&stored).unwrap();
    let again: manager::value::Value = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(again, stored);
    *item.0.lock().unwrap() = again;
    assert_eq!(run("read"), "datetime.date(2026, 12, 1)\n");
}

const UNREGISTERED: &str = r#"
import sys
from multiprocessing.managers import BaseManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register('get_pair')          # 'ItemWrapper' is not registered
mgr.connect()
p = mgr.get_pair()
try:
    p.get_item()
    print("no error")
except KeyError as e:
    print("KeyError", e.args[0])
"#;

#[test]
fn a_proxy_the_cpython_client_cannot_build_does_not_leak() {
    use std::sync::{Arc, Mutex};
    for python in interpreters() {
        let item = seed::Item(Arc::new(Mutex::new(manager::value::Value::None)));
        let (server, host, port) = server(seed::registry(item));
        let out = run_python(&python, UNREGISTERED, &host, &port);
        assert_eq!(out, "KeyError ItemWrapper\n", "{}", python.display());
        // CPython's own server keeps that ItemWrapper forever; here it goes with the
        // connection that received it.
        let observer = server.connect();
        wait_until(
            "the unbuilt proxy's object to be released",
            || match observer.number_of_objects() {
                Ok(1) => Ok(()),
                other => Err(format!("{other:?} {:?}", observer.debug_info())),
            },
        );
    }
}

/// A CPython manager serving the seed's `Pair` and `ItemWrapper`; prints its port, then
/// serves until shut down (`serve_forever`) or until stdin closes (`start`).
const PY_SERVER: &str = r#"
import sys, time
from multiprocessing.managers import BaseManager

class Item:
    def __init__(self): self.item = "intialized"
    def change(self, new_item): self.item = new_item
    def retrieve(self): return self.item

class ItemWrapper:
    def __init__(self, res): self.item = res
    def set_wrapped_item(self, new_item): self.item.change(new_item)
    def get_wrapped_item(self): return self.item.retrieve()

class Pair:
    def __init__(self, x, y):
        self.x = x; self.y = y; self.i = Item()
    def get_item(self): return self.i
    def get_x(self): return self.x
    def set_x(self, new_x): self.x = new_x
    def fail(self): raise ValueError("boom")

mode, key = sys.argv[1], sys.argv[2].encode()
pair = Pair(15, 6)
BaseManager.register('ItemWrapper', ItemWrapper)
BaseManager.register('get_pair', callable=lambda: pair, exposed=['get_x', 'get_item', 'fail'],
                     method_to_typeid={'get_item': 'ItemWrapper'})
BaseManager.register('Pair', Pair)
m = BaseManager(address=('127.0.0.1', 0), authkey=key)
if mode == "serve_forever":
    server = m.get_server()
    print(server.address[1], flush=True)
    server.serve_forever()
else:
    m.start()
    print(m.address[1], flush=True)
    sys.stdin.readline()
    m.shutdown()
"#;

/// A typed proxy over the CPython `Pair`, written the way CPython's proxies are.
struct PairPy(manager::python::client::PyBaseProxy);

impl manager::python::client::PyProxyType for PairPy {
    fn from_base(base: manager::python::client::PyBaseProxy) -> Self {
        PairPy(base)
    }
}

impl PairPy {
    fn get_x(&self) -> manager::Result<i64> {
        self.0.call_method_blocking("get_x", ())
    }
    fn set_x(&self, x: i64) -> manager::Result<()> {
        self.0.call_method_blocking("set_x", (x,))
    }
}

#[test]
fn a_rust_client_calls_objects_in_a_cpython_manager() {
    use manager::python::client::{PyBaseProxy, PyManager, PyProxyType};
    use std::io::{BufRead, Write};
    for python in interpreters() {
        for mode in ["serve_forever", "start"] {
            let mut child = Command::new(&python)
                .args(["-c", PY_SERVER, mode, "py-key"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("run the CPython server");
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let address = Address::tcp(format!("127.0.0.1:{}", line.trim()));
            let what = format!("{} {mode}", python.display());
            let result = std::panic::catch_unwind(|| {
                let manager = PyManager::connect_blocking(&address, &AuthKey::from("py-key"))
                    .expect("connect");
                assert!(matches!(
                    PyManager::connect_blocking(&address, &AuthKey::from("wrong")),
                    Err(manager::Error::Auth(_))
                ));
                // Typed, through a proxy written by hand; a factory with arguments.
                let pair = PairPy::from_base(manager.create_blocking("Pair", (1, 3)).unwrap());
                assert_eq!(pair.get_x().unwrap(), 1);
                pair.set_x(9).unwrap();
                assert_eq!(pair.get_x().unwrap(), 9);
                // Dynamic, on the shared instance: not exposed, errors, method_to_typeid.
                let shared = manager.create_blocking("get_pair", ()).unwrap();
                assert_eq!(
                    shared.call_method_blocking::<_, i64>("get_x", ()).unwrap(),
                    15
                );
                let refused = shared
                    .call_method_blocking::<_, ()>("set_x", (1,))
                    .unwrap_err();
                assert_eq!(
                    refused.remote_kind(),
                    Some(manager::RemoteErrorKind::NotExposed),
                    "{refused}"
                );
                let failed = shared
                    .call_method_blocking::<_, ()>("fail", ())
                    .unwrap_err();
                assert_eq!(
                    failed.remote_kind(),
                    Some(manager::RemoteErrorKind::InvalidValue),
                    "{failed}"
                );
                assert!(failed.to_string().contains("boom"), "{failed}");
                let wrapper: PyBaseProxy =
                    shared.call_method_proxy_blocking("get_item", ()).unwrap();
                assert_eq!(wrapper.typeid(), "ItemWrapper");
                wrapper
                    .call_method_blocking::<_, ()>("set_wrapped_item", (7,))
                    .unwrap();
                let again: PyBaseProxy = shared.call_method_proxy_blocking("get_item", ()).unwrap();
                assert_eq!(
                    again
                        .call_method_blocking::<_, i64>("get_wrapped_item", ())
                        .unwrap(),
                    7
                );
                // Proxies release their references: CPython drops every entry (its shared
                // instance too, which it registers anew at every create).
                drop((pair, wrapper, again, shared));
                wait_until("the CPython objects to be released", || {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    match rt.block_on(manager.number_of_objects()) {
                        Ok(0) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                });
                if mode == "serve_forever" {
                    let rt = tokio::runtime::Runtime::new().unwrap();
                    rt.block_on(manager.shutdown()).unwrap();
                }
            });
            if mode == "start" {
                let _ = child.stdin.as_mut().unwrap().write_all(b"done\n");
            }
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            if let Err(panic) = result {
                eprintln!("failed with {what}");
                std::panic::resume_unwind(panic);
            }
        }
    }
}

/// A type with stream methods, for CPython clients: each stream reaches them as an
/// `Iterator` proxy.
mod numbers {
    use futures::StreamExt;
    use manager::Stream;

    pub struct Numbers;

    #[manager::shared]
    impl Numbers {
        /// `0..n`, from an iterator.
        pub fn count(&self, n: u64) -> Stream<u64> {
            Stream::iter(0..n)
        }
        /// `0..n`, from a `futures::Stream` that waits on the runtime's timer for each.
        pub fn count_async(&self, n: u64) -> Stream<u64> {
            Stream::from_stream(futures::stream::iter(0..n).then(|i| async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                i
            }))
        }
        /// `0..n`, then an error.
        pub fn failing(&self, n: u64) -> Stream<u64> {
            Stream::try_iter((0..=n).map(move |i| {
                if i < n {
                    Ok(i)
                } else {
                    Err(format!("no item {i}"))
                }
            }))
        }
    }

    pub fn registry(with_builtins: bool) -> manager::Registry {
        let mut registry = manager::Registry::new();
        if with_builtins {
            manager::sync::register(&mut registry).unwrap();
        }
        registry
            .register(manager::Register::factory("Numbers", |()| Numbers))
            .unwrap();
        registry
    }
}

const STREAMS: &str = r#"
import sys
from multiprocessing.managers import BaseManager, IteratorProxy, RemoteError

def last_line(e):
    return [l for l in str(e).splitlines() if l.strip() and not l.startswith("---")][-1]

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
BaseManager.register('Iterator', proxytype=IteratorProxy, create_method=False)
BaseManager.register('Numbers')
m = BaseManager(address=(host, port), authkey=key)
m.connect()
n = m.Numbers()
try:
    print(list(n.count(5)), list(n.count_async(3)), type(n.count(1)).__name__)
except RemoteError as e:
    print("refused:", last_line(e))
    sys.exit(0)
it = n.failing(2)
print(next(it), next(it))
try:
    next(it)
except RuntimeError as e:
    print("RuntimeError:", e)
print(next(it, "ended"))
it = n.count(10)
print(next(it))
it.close()
print(next(it, "closed"))
try:
    it.send(None)
except RemoteError as e:
    print("send:", last_line(e))
del it
before = m._number_of_objects()
it = n.count(10)
next(it)
during = m._number_of_objects() - before
del it
print("objects:", during, m._number_of_objects() - before)
"#;

#[test]
fn cpython_clients_iterate_stream_methods() {
    for python in interpreters() {
        let (served, host, port) = server(numbers::registry(true));
        let out = run_python(&python, STREAMS, &host, &port);
        assert_eq!(
            out,
            "[0, 1, 2, 3, 4] [0, 1, 2] IteratorProxy\n\
             0 1\n\
             RuntimeError: no item 2\n\
             ended\n\
             0\n\
             closed\n\
             send: KeyError: 'send'\n\
             objects: 1 0\n",
            "{}",
            python.display()
        );
        // The Numbers object goes with the client; every Iterator went with its proxy.
        let observer = served.connect();
        wait_until("the client's objects to be released", || {
            match observer.number_of_objects() {
                Ok(0) => Ok(()),
                other => Err(format!("{other:?} {:?}", observer.debug_info())),
            }
        });
        // A server without the built-in types has no Iterator typeid: the call says so.
        let (_bare, host, port) = server(numbers::registry(false));
        let out = run_python(&python, STREAMS, &host, &port);
        assert!(
            out.starts_with("refused: RuntimeError: this method returns a stream")
                && out.contains("Iterator"),
            "{}: {out}",
            python.display()
        );
    }
}

const KILLED_WAITER: &str = r#"
import sys, os, signal, time, multiprocessing as mp
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mp.current_process().authkey = key
m = SyncManager(address=(host, port), authkey=key)
m.connect()
q = m.Queue()
lock = m.Lock()
started = m.Event()

def waiter():
    lock.acquire()
    started.set()
    q.get()

if __name__ == "__main__":
    child = mp.get_context("fork").Process(target=waiter)
    child.start()
    print("started:", started.wait(60))
    # Long enough for the child's get to reach the server and wait there (if it did not, the
    # checks below pass anyway: they only ever fail when a dead client's call lives on).
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    time.sleep(0.2)
    q.put("item")
    print("got:", q.get(timeout=60))
    print("lock:", lock.acquire(timeout=60))
"#;

/// A CPython client killed while its call waits (a `get` on an empty queue) loses that call:
/// the item put next goes to the living client, not to the dead one's waiter; and the lock it
/// held is released when its connection closes. (Method connections are served by threads of
/// their own: the wait is watched for the client going away.)
#[test]
fn a_killed_cpython_client_waiting_on_a_queue_takes_nothing_with_it() {
    assert_sync_script_prints(KILLED_WAITER, "started: True\ngot: item\nlock: True\n");
}

const WATCHED: &str = r#"
import sys, os, signal, time, multiprocessing as mp
from multiprocessing.managers import SyncManager

address, key = (sys.argv[1], int(sys.argv[2])), sys.argv[3].encode()
mp.current_process().authkey = key

def connect():
    (m := SyncManager(address=address, authkey=key)).connect()
    return m

def caller(d, l, n):
    connect()
    for i in range(n):
        l.append(i)
        d[os.getpid()] = i

def sleeper(d):
    connect()
    d['sleeper'] = 1
    time.sleep(60)

if __name__ == '__main__':
    m = connect()
    d, l, q = m.dict(), m.list(), m.Queue()
    ctx = mp.get_context('fork')
    # Calls one after the other from several processes, each with its own connection thread.
    procs = [ctx.Process(target=caller, args=(d, l, 300)) for _ in range(3)]
    for p in procs: p.start()
    for p in procs: p.join()
    print("calls:", len(l), sorted(d.values()))
    # Pauses between calls longer than any watch.
    for i in range(3):
        time.sleep(0.05)
        l.append(i)
    print("after pauses:", len(l))
    # A client killed between its calls: its connection closes while watched.
    child = ctx.Process(target=sleeper, args=(d,))
    child.start()
    while 'sleeper' not in d.keys():
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.join()
    # A waiting get, then calls on the same connection.
    q.put("x")
    print("queue:", q.get(), q.qsize(), len(d))
"#;

#[test]
fn a_server_that_watches_its_sockets_answers_cpython_clients_the_same() {
    let mut config = manager::ServerConfig::default();
    config.python_spin = std::time::Duration::from_micros(200);
    for python in interpreters() {
        let (_server, host, port) = server_with(manager::sync::registry(), config.clone());
        let out = run_python(&python, WATCHED, &host, &port);
        assert_eq!(
            out,
            "calls: 900 [299, 299, 299]\nafter pauses: 903\nqueue: x 0 4\n",
            "{}",
            python.display()
        );
    }
}
