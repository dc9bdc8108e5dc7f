//! Deadlines on every built-in blocking proxy: a connection default, a per-proxy timeout, and
//! calls that miss them. Every built-in blocking call goes through the one blocking call
//! primitive (`BaseProxy::call_blocking`), so each must work, and time out, as generated
//! proxies do.

mod common;

use std::time::{Duration, Instant};

use common::InProcessServer;
use manager::{Address, AuthKey, BlockingManager, Error, ServerConfig};

fn server() -> InProcessServer {
    InProcessServer::start_with(
        manager::sync::registry(),
        Address::local_tcp(),
        AuthKey::from("deadlines"),
        ServerConfig::default(),
    )
}

/// How the calls of `exercise` get their deadline.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    /// The connection's default timeout.
    Default,
    /// `with_timeout` on each proxy, with no default.
    PerProxy,
}

const LONG: Duration = Duration::from_secs(30);

/// Calls at least one method of every built-in blocking proxy; each must succeed.
fn exercise(manager: &BlockingManager, deadline: Deadline) {
    macro_rules! timed {
        ($proxy:expr) => {
            match deadline {
                Deadline::Default => $proxy,
                Deadline::PerProxy => $proxy.with_timeout(LONG),
            }
        };
    }
    let list = timed!(manager.list::<i64>(&[1, 2]).unwrap());
    list.append(&3).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![1, 2, 3]);
    assert_eq!(list.pop().unwrap(), 3);

    let dict = timed!(manager.dict::<String, i64>(&[]).unwrap());
    dict.insert(&"a".to_string(), &1).unwrap();
    assert_eq!(dict.get(&"a".to_string()).unwrap(), Some(1));

    let namespace = timed!(manager.namespace().unwrap());
    namespace.set("x", &5i64).unwrap();
    assert_eq!(namespace.get::<i64>("x").unwrap(), 5);

    let value = timed!(manager.value(&1.5f64).unwrap());
    value.set(&2.5).unwrap();
    assert_eq!(value.get().unwrap(), 2.5);

    let array = timed!(manager.array(&[1i64, 2, 3]).unwrap());
    array.set(0, &9).unwrap();
    assert_eq!(array.to_vec().unwrap(), vec![9, 2, 3]);

    let queue = timed!(manager.queue::<String>(0).unwrap());
    queue.put(&"job".to_string()).unwrap();
    assert_eq!(queue.get().unwrap(), "job");

    let joinable = timed!(manager.joinable_queue::<i64>(0).unwrap());
    joinable.put(&1).unwrap();
    assert_eq!(joinable.get().unwrap(), 1);
    joinable.task_done().unwrap();
    joinable.join().unwrap();

    let lock = timed!(manager.lock().unwrap());
    drop(lock.lock().unwrap());
    assert!(!lock.locked().unwrap());

    let rlock = timed!(manager.rlock().unwrap());
    let outer = rlock.lock().unwrap();
    drop(rlock.lock().unwrap());
    drop(outer);

    let semaphore = timed!(manager.semaphore(2).unwrap());
    semaphore.acquire().unwrap();
    assert_eq!(semaphore.get_value().unwrap(), 1);
    semaphore.release().unwrap();

    let bounded = timed!(manager.bounded_semaphore(1).unwrap());
    drop(bounded.lock().unwrap());
    assert_eq!(bounded.get_value().unwrap(), 1);

    let condition = timed!(manager.condition().unwrap());
    {
        let _held = condition.lock().unwrap();
        condition.notify_all().unwrap();
        assert!(!condition.wait_timeout(Duration::from_millis(10)).unwrap());
    }

    let event = timed!(manager.event().unwrap());
    event.set().unwrap();
    assert!(event.is_set().unwrap());
    event.wait().unwrap();

    let barrier = timed!(manager.barrier(1, None).unwrap());
    assert_eq!(barrier.wait().unwrap(), 0);
    assert_eq!(barrier.parties().unwrap(), 1);
}

#[test]
fn every_built_in_blocking_proxy_works_under_a_connection_default_timeout() {
    let server = server();
    let manager = server.connect();
    manager.connection().set_default_timeout(Some(LONG));
    exercise(&manager, Deadline::Default);
}

#[test]
fn every_built_in_blocking_proxy_works_under_a_per_proxy_timeout() {
    let server = server();
    let manager = server.connect();
    exercise(&manager, Deadline::PerProxy);
}

/// Asserts that `call` failed with `Error::Timeout` well before the 30 s default it must not
/// have waited for (a generous ceiling: it proves only "did not wait forever").
fn assert_times_out<T: std::fmt::Debug>(what: &str, call: impl FnOnce() -> Result<T, Error>) {
    let start = Instant::now();
    let result = call();
    assert!(
        matches!(result, Err(Error::Timeout(_))),
        "{what}: expected a timeout, got {result:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{what} took {:?}",
        start.elapsed()
    );
}

#[test]
fn built_in_blocking_calls_that_miss_their_deadline_time_out_and_lose_nothing() {
    let server = server();
    let manager = server.connect();
    let short = Duration::from_millis(100);

    // Per proxy: a get from an empty queue, a wait for an event nobody sets, a lock another
    // client holds.
    let queue = manager.queue::<String>(0).unwrap();
    assert_times_out("queue.get", || queue.clone().with_timeout(short).get());
    queue.put(&"next".to_string()).unwrap();
    assert_eq!(
        queue.get().unwrap(),
        "next",
        "the timed-out get took the item that came after it"
    );

    let event = manager.event().unwrap();
    assert_times_out("event.wait", || event.clone().with_timeout(short).wait());

    let other = server.connect();
    let lock = manager.lock().unwrap();
    let held = lock.lock().unwrap();
    let theirs: manager::sync::LockBlockingProxy =
        other.attach(manager::Proxy::base(&lock).token()).unwrap();
    assert_times_out("lock.acquire", || {
        theirs.clone().with_timeout(short).acquire()
    });
    drop(held);
    // The timed-out acquisition did not take the lock behind its caller's back.
    assert!(theirs.try_acquire().unwrap(), "the lock stayed taken");
    theirs.release().unwrap();

    let barrier = manager.barrier(2, None).unwrap();
    assert_times_out("barrier.wait", || {
        barrier.clone().with_timeout(short).wait()
    });

    // The connection default: the same calls, with no per-proxy timeout.
    manager.connection().set_default_timeout(Some(short));
    assert_times_out("queue.get under the default", || queue.get());
    assert_times_out("event.wait under the default", || event.wait());
    manager.connection().set_default_timeout(None);
    queue.put(&"last".to_string()).unwrap();
    assert_eq!(queue.get().unwrap(), "last");
}
