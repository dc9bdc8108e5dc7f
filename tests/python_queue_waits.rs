//! CPython clients' waiting queue calls between processes (every CPython 3.8+ found): a `get`
//! waiting in one client process is answered when another process puts (the server finishes
//! the waiting call on the putter's side and writes its reply: see `server::python::waiting`),
//! with every semantic of CPython's server: items in order and none lost with many waiters,
//! items larger than a socket's buffer, timeouts (`Empty`, `Full`), a `put` waiting for room
//! released by a `get`, `join` released by `task_done`, waiting clients that die.

mod common;

use common::python::assert_sync_script_prints;

const WAITS: &str = r#"
import sys, os, signal, queue, time, multiprocessing as mp
from multiprocessing.managers import SyncManager

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mp.current_process().authkey = key

def connect():
    m = SyncManager(address=(host, port), authkey=key)
    m.connect()
    return m

def getter(q, results, count):
    connect()
    got = [q.get() for _ in range(count)]
    results.put(got)

def big_getter(q, results):
    connect()
    item = q.get()
    results.put((len(item), item[:3], item[-3:]))

def putter(q, results):
    connect()
    q.put(2)
    results.put("put")

def joiner(jq, results):
    connect()
    jq.join()
    results.put("joined")

def waiter(q, started):
    connect()
    started.set()
    q.get()

if __name__ == "__main__":
    ctx = mp.get_context("fork")
    m = connect()
    results = m.Queue()

    # Four processes wait on one queue; every item reaches exactly one of them, each one's in
    # the order put.
    q = m.Queue()
    children = [ctx.Process(target=getter, args=(q, results, 50)) for _ in range(4)]
    for c in children:
        c.start()
    time.sleep(0.3)
    for i in range(200):
        q.put(i)
    got = [results.get(timeout=60) for _ in children]
    for c in children:
        c.join()
    print("every item once:", sorted(sum(got, [])) == list(range(200)))
    print("each in order:", all(g == sorted(g) for g in got))

    # An item far larger than a socket's buffer, to a waiting getter.
    child = ctx.Process(target=big_getter, args=(q, results))
    child.start()
    time.sleep(0.3)
    q.put(b"abc" + b"x" * (8 << 20) + b"xyz")
    print("big item:", results.get(timeout=60))
    child.join()

    # Timeouts kept by the server.
    try:
        q.get(timeout=0.2)
    except queue.Empty:
        print("get timed out: Empty")
    bounded = m.Queue(1)
    bounded.put(1)
    try:
        bounded.put(9, timeout=0.2)
    except queue.Full:
        print("put timed out: Full")

    # A put waiting for room, released by a get of another process.
    child = ctx.Process(target=putter, args=(bounded, results))
    child.start()
    time.sleep(0.3)
    print("first:", bounded.get(timeout=60))
    print("putter:", results.get(timeout=60))
    print("second:", bounded.get(timeout=60))
    child.join()

    # join waits for every task_done.
    jq = m.JoinableQueue()
    jq.put("job")
    child = ctx.Process(target=joiner, args=(jq, results))
    child.start()
    time.sleep(0.3)
    print("still joining:", results.empty())
    jq.get()
    jq.task_done()
    print("joiner:", results.get(timeout=60))
    child.join()

    # Waiting getters killed one after another take nothing with them.
    started = m.Event()
    for _ in range(3):
        child = ctx.Process(target=waiter, args=(q, started))
        child.start()
        started.wait(60)
        started.clear()
        time.sleep(0.3)
        os.kill(child.pid, signal.SIGKILL)
        child.join()
    time.sleep(0.2)
    for i in range(3):
        q.put(i)
    print("all left:", [q.get(timeout=60) for _ in range(3)])

    # The same connection goes on after each of these waits.
    q.put("last")
    print("last:", q.get())
"#;

#[test]
fn waiting_cpython_queue_calls_are_answered_across_processes() {
    assert_sync_script_prints(
        WAITS,
        "every item once: True\neach in order: True\n\
         big item: (8388614, b'abc', b'xyz')\n\
         get timed out: Empty\nput timed out: Full\n\
         first: 1\nputter: put\nsecond: 2\n\
         still joining: True\njoiner: joined\n\
         all left: [0, 1, 2]\n\
         last: last\n",
    );
}
