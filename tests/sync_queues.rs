//! The built-in queues (`Queue`, `JoinableQueue`), `Event` and `Barrier` across real sockets and
//! processes: Python's semantics, waits kept by the server (timeouts asserted by outcome, never
//! by duration), hundreds of waiters, and clients killed while they wait.

#[macro_use]
mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{wait_until, wait_until_async, within, ChildGuard, InProcessServer, TIMEOUT};
use manager::proxy::shape::Fallible;
use manager::sync::{
    BarrierBlockingProxy, EventBlockingProxy, EventProxy, JoinableQueueBlockingProxy,
    ListBlockingProxy, QueueBlockingProxy, QueueProxy,
};
use manager::{BaseManager, BlockingManager, Error, Manager, Process, Proxy as _, RemoteErrorKind};
use serde::{Deserialize, Serialize};

/// A short timeout, for waits that are expected to time out.
const SHORT: Duration = Duration::from_millis(50);

fn server() -> InProcessServer {
    InProcessServer::tcp(manager::sync::registry())
}

fn kind(error: Error) -> RemoteErrorKind {
    error
        .remote_kind()
        .unwrap_or_else(|| panic!("expected a remote error, got {error}"))
}

/// Polls `read` until it returns `expected`.
fn wait_for_count(what: &str, expected: u64, read: impl Fn() -> manager::Result<u64>) {
    wait_until(&format!("{what} == {expected}"), || match read() {
        Ok(n) if n == expected => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// Fails the test if `child` has ended (it was meant to be waiting).
fn still_running(child: &mut ChildGuard) {
    if !child.0.is_alive() {
        panic!("the child ended early: {:?}", child.0.join());
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Job {
    id: u32,
    name: String,
}

fn queue_is_fifo_and_reports_its_size() {
    let server = server();
    let manager = server.connect();
    let queue: QueueBlockingProxy<Job> = manager.queue(0).unwrap();
    assert_eq!(queue.maxsize().unwrap(), 0);
    assert!(queue.empty().unwrap());
    assert!(!queue.full().unwrap());
    for id in 0..100 {
        queue
            .put(&Job {
                id,
                name: format!("job {id}"),
            })
            .unwrap();
    }
    assert_eq!(queue.qsize().unwrap(), 100);
    assert!(!queue.empty().unwrap());
    assert!(!queue.full().unwrap(), "an unbounded queue is never full");
    for id in 0..100 {
        let job = if id % 2 == 0 {
            queue.get().unwrap()
        } else {
            queue.get_nowait().unwrap().expect("an item")
        };
        assert_eq!(job.id, id);
        assert_eq!(job.name, format!("job {id}"));
    }
    assert!(queue.empty().unwrap());
    assert_eq!(queue.get_nowait().unwrap(), None);
    assert_eq!(queue.get_timeout(SHORT).unwrap(), None);
    assert_eq!(queue.get_timeout(Duration::ZERO).unwrap(), None);
    assert_eq!(
        queue.n_waiting_get().unwrap(),
        0,
        "a timed-out get stops waiting"
    );

    // Python's errors, seen through the untyped calls.
    let base = queue.base();
    let empty = base
        .call_blocking::<Fallible<manager::value::Value, manager::RemoteError>>(
            "get",
            (false, None::<f64>),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(empty.kind, RemoteErrorKind::Empty);
    let negative = base
        .call_blocking::<Fallible<manager::value::Value, manager::RemoteError>>(
            "get",
            (true, Some(-1.0f64)),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(negative.kind, RemoteErrorKind::InvalidValue);
}

fn bounded_queue_is_full_and_put_times_out() {
    let server = server();
    let manager = server.connect();
    let queue: QueueBlockingProxy<i64> = manager.queue(2).unwrap();
    assert_eq!(queue.maxsize().unwrap(), 2);
    queue.put(&1).unwrap();
    assert!(queue.put_nowait(&2).unwrap());
    assert!(queue.full().unwrap());
    assert!(!queue.put_nowait(&3).unwrap(), "no room: not put");
    assert!(
        !queue.put_timeout(&3, SHORT).unwrap(),
        "still no room: not put"
    );
    assert_eq!(queue.qsize().unwrap(), 2);
    assert_eq!(queue.n_waiting_put().unwrap(), 0);
    let full = queue
        .base()
        .call_blocking::<Fallible<(), manager::RemoteError>>(
            "put",
            (manager::value::Value::Int(3), false, None::<f64>),
        )
        .unwrap()
        .unwrap_err();
    assert_eq!(full.kind, RemoteErrorKind::Full);

    // A put blocked on the full queue goes in as soon as a get makes room.
    let putter = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.put(&4))
    };
    wait_for_count("waiting puts", 1, || queue.n_waiting_put());
    assert_eq!(queue.get().unwrap(), 1);
    putter.join().unwrap().unwrap();
    assert_eq!(queue.n_waiting_put().unwrap(), 0);
    assert_eq!(queue.get().unwrap(), 2);
    assert_eq!(queue.get().unwrap(), 4);
    assert!(queue.put_timeout(&5, SHORT).unwrap(), "room: put at once");
    assert_eq!(queue.get_nowait().unwrap(), Some(5));
}

fn a_blocked_get_is_released_by_a_put() {
    let server = server();
    let manager = server.connect();
    let queue: QueueBlockingProxy<String> = manager.queue(0).unwrap();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let queue = queue.clone();
            std::thread::spawn(move || queue.get())
        })
        .collect();
    wait_for_count("waiting gets", 3, || queue.n_waiting_get());
    for word in ["a", "b", "c"] {
        queue.put(&word.to_string()).unwrap();
    }
    let got: BTreeSet<String> = getters
        .into_iter()
        .map(|getter| getter.join().unwrap().unwrap())
        .collect();
    assert_eq!(got, ["a", "b", "c"].map(String::from).into());
    assert_eq!(queue.n_waiting_get().unwrap(), 0);
    assert!(queue.empty().unwrap());
}

#[manager::entry]
fn produce(queue: QueueBlockingProxy<Option<u32>>, count: u32, consumers: u32) {
    for item in 0..count {
        queue.put(&Some(item)).expect("put");
    }
    for _ in 0..consumers {
        queue.put(&None).expect("put the end");
    }
}

#[manager::entry]
fn consume(
    id: u32,
    queue: QueueBlockingProxy<Option<u32>>,
    results: QueueBlockingProxy<(u32, u32)>,
) {
    while let Some(item) = queue.get().expect("get") {
        results.put(&(id, item)).expect("report");
    }
}

fn producer_and_consumer_processes_share_a_queue() {
    const ITEMS: u32 = 300;
    const CONSUMERS: u32 = 3;
    let server = server();
    let manager = server.connect();
    // Bounded, so that the producer also waits for the consumers.
    let queue: QueueBlockingProxy<Option<u32>> = manager.queue(10).unwrap();
    let results: QueueBlockingProxy<(u32, u32)> = manager.queue(0).unwrap();
    let mut children: Vec<ChildGuard> = (0..CONSUMERS)
        .map(|id| {
            ChildGuard(Process::spawn(consume, (id, queue.clone(), results.clone())).unwrap())
        })
        .collect();
    children.push(ChildGuard(
        Process::spawn(produce, (queue.clone(), ITEMS, CONSUMERS)).unwrap(),
    ));
    for child in &mut children {
        assert!(child.join().success(), "{:?}", child.0);
    }
    let mut seen = BTreeSet::new();
    let mut last: Vec<Option<u32>> = vec![None; CONSUMERS as usize];
    while let Some((consumer, item)) = results.get_nowait().unwrap() {
        assert!(seen.insert(item), "item {item} was delivered twice");
        // One producer, FIFO: each consumer sees its items in the order they were put.
        let previous = &mut last[consumer as usize];
        assert!(
            previous.is_none_or(|p| p < item),
            "consumer {consumer} got {item} after {previous:?}"
        );
        *previous = Some(item);
    }
    assert_eq!(
        seen,
        (0..ITEMS).collect::<BTreeSet<_>>(),
        "every item, once"
    );
    assert!(queue.empty().unwrap());
}

#[manager::entry]
fn work(queue: JoinableQueueBlockingProxy<Option<u32>>, processed: ListBlockingProxy<u32>) {
    loop {
        let item = queue.get().expect("get");
        if let Some(item) = item {
            // Slow enough that join() would return early if it did not wait.
            std::thread::sleep(Duration::from_millis(2));
            processed.append(&item).expect("record");
        }
        queue.task_done().expect("task_done");
        if item.is_none() {
            return;
        }
    }
}

fn joinable_queue_join_returns_after_every_task_done() {
    const ITEMS: u32 = 60;
    let server = server();
    let manager = server.connect();
    let queue: JoinableQueueBlockingProxy<Option<u32>> = manager.joinable_queue(0).unwrap();
    // Nothing put yet: join returns at once.
    queue.join().unwrap();
    let processed: ListBlockingProxy<u32> = manager.list(&[]).unwrap();
    for item in 0..ITEMS {
        queue.put(&Some(item)).unwrap();
    }
    queue.put(&None).unwrap();
    queue.put(&None).unwrap();
    let mut workers: Vec<ChildGuard> = (0..2)
        .map(|_| ChildGuard(Process::spawn(work, (queue.clone(), processed.clone())).unwrap()))
        .collect();
    queue.join().unwrap();
    // Each worker records an item before marking it done, so all are recorded by now.
    let mut done = processed.to_vec().unwrap();
    done.sort_unstable();
    assert_eq!(done, (0..ITEMS).collect::<Vec<_>>());
    for worker in &mut workers {
        assert!(worker.join().success());
    }
    let error = queue.task_done().unwrap_err();
    let remote = error.as_remote().expect("a remote error").clone();
    assert_eq!(
        remote.kind,
        RemoteErrorKind::InvalidValue,
        "ValueError, as CPython's"
    );
    assert!(
        remote.message.contains("task_done() called too many times"),
        "{remote:?}"
    );
    // A new item makes join wait again, until it is done.
    queue.put(&Some(99)).unwrap();
    let joiner = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.join())
    };
    assert_eq!(queue.get().unwrap(), Some(99));
    std::thread::sleep(SHORT);
    assert!(!joiner.is_finished(), "join returned before task_done");
    queue.task_done().unwrap();
    joiner.join().unwrap().unwrap();
}

#[manager::entry]
fn get_one(queue: QueueBlockingProxy<i64>, results: QueueBlockingProxy<i64>) {
    let item = queue.get().expect("get");
    results.put(&item).expect("report");
}

fn a_killed_getter_loses_no_item_and_stops_waiting() {
    let server = server();
    let manager = server.connect();
    let queue: QueueBlockingProxy<i64> = manager.queue(0).unwrap();
    let results: QueueBlockingProxy<i64> = manager.queue(0).unwrap();
    // The first getter waits longest: a put would go to it if it were still counted.
    let mut first = ChildGuard(Process::spawn(get_one, (queue.clone(), results.clone())).unwrap());
    wait_for_count("waiting gets", 1, || queue.n_waiting_get());
    let mut second = ChildGuard(Process::spawn(get_one, (queue.clone(), results.clone())).unwrap());
    wait_for_count("waiting gets", 2, || queue.n_waiting_get());
    still_running(&mut first);
    still_running(&mut second);

    first.0.kill().expect("SIGKILL the first getter");
    wait_for_count("waiting gets after the kill", 1, || queue.n_waiting_get());
    queue.put(&42).unwrap();
    assert_eq!(results.get_timeout(TIMEOUT).unwrap(), Some(42));
    assert!(second.join().success());
    assert_eq!(queue.n_waiting_get().unwrap(), 0);
    assert!(queue.empty().unwrap());
    assert!(results.empty().unwrap(), "the item went to one getter only");
}

#[manager::entry]
fn put_one(queue: QueueBlockingProxy<i64>, item: i64) {
    queue.put(&item).expect("put");
}

fn a_killed_putter_puts_nothing() {
    let server = server();
    let manager = server.connect();
    let queue: QueueBlockingProxy<i64> = manager.queue(1).unwrap();
    queue.put(&1).unwrap();
    let mut putter = ChildGuard(Process::spawn(put_one, (queue.clone(), 99i64)).unwrap());
    wait_for_count("waiting puts", 1, || queue.n_waiting_put());
    still_running(&mut putter);
    putter.0.kill().expect("SIGKILL the putter");
    wait_for_count("waiting puts after the kill", 0, || queue.n_waiting_put());
    assert_eq!(queue.get().unwrap(), 1);
    assert_eq!(queue.get_timeout(SHORT).unwrap(), None, "99 never went in");
}

fn two_hundred_waiters_on_one_event_are_released_by_one_set() {
    const WAITERS: usize = 200;
    const CONNECTIONS: usize = 4;
    let server = server();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut managers = Vec::new();
        for _ in 0..CONNECTIONS {
            managers.push(
                Manager::connect(server.address(), server.authkey())
                    .await
                    .unwrap(),
            );
        }
        let event = managers[0].event().await.unwrap();
        let mut waiters = Vec::new();
        for i in 0..WAITERS {
            let manager = &managers[i % CONNECTIONS];
            let proxy: EventProxy = manager.attach(event.base().token()).await.unwrap();
            waiters.push(tokio::spawn(async move {
                if i % 2 == 0 {
                    proxy.wait().await.map(|()| true)
                } else {
                    proxy.wait_timeout(TIMEOUT * 4).await
                }
            }));
        }
        wait_until_async("every waiter to wait", || async {
            match event.n_waiting().await {
                Ok(n) if n == WAITERS as u64 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        // Meanwhile other calls, on the waiters' connections too, are served.
        let observer = Manager::connect(server.address(), server.authkey())
            .await
            .unwrap();
        let queue: QueueProxy<u32> = managers[1].queue(0).await.unwrap();
        for i in 0..50 {
            queue.put(&i).await.unwrap();
            assert_eq!(queue.get().await.unwrap(), i);
        }
        assert!(!event.is_set().await.unwrap());
        let probe: EventProxy = observer.attach(event.base().token()).await.unwrap();
        assert!(
            !probe.wait_timeout(SHORT).await.unwrap(),
            "not set: times out"
        );
        assert!(
            waiters.iter().all(|w| !w.is_finished()),
            "no waiter returned early"
        );

        probe.set().await.unwrap();
        for waiter in waiters {
            let released = within("a waiter to be released", waiter).await.unwrap();
            assert!(released.unwrap(), "released by the set");
        }
        assert_eq!(event.n_waiting().await.unwrap(), 0);
        assert!(event.is_set().await.unwrap());
        assert!(
            event.wait_timeout(SHORT).await.unwrap(),
            "set: returns at once"
        );
        event.wait().await.unwrap();
        event.clear().await.unwrap();
        assert!(!event.is_set().await.unwrap());
        assert!(!event.wait_timeout(SHORT).await.unwrap());
    });
}

fn an_event_waiter_released_by_set_returns_true_even_if_cleared_at_once() {
    let server = server();
    let manager = server.connect();
    let event: EventBlockingProxy = manager.event().unwrap();
    let waiter = {
        let event = event.clone();
        std::thread::spawn(move || event.wait_timeout(TIMEOUT))
    };
    wait_for_count("waiting", 1, || event.n_waiting());
    event.set().unwrap();
    event.clear().unwrap();
    assert!(
        waiter.join().unwrap().unwrap(),
        "as Python: released, so true"
    );
    assert!(!event.is_set().unwrap());
}

#[manager::entry]
fn meet(barrier: BarrierBlockingProxy, results: QueueBlockingProxy<u64>) {
    let index = barrier.wait().expect("wait at the barrier");
    results.put(&index).expect("report");
}

fn barrier_trips_for_n_processes_with_distinct_indices() {
    const PARTIES: u64 = 4;
    let server = server();
    let manager = server.connect();
    let barrier = manager.barrier(PARTIES, None).unwrap();
    let results: QueueBlockingProxy<u64> = manager.queue(0).unwrap();
    assert_eq!(barrier.parties().unwrap(), PARTIES);
    for round in 0..2 {
        let mut children: Vec<ChildGuard> = (0..PARTIES - 1)
            .map(|_| ChildGuard(Process::spawn(meet, (barrier.clone(), results.clone())).unwrap()))
            .collect();
        wait_for_count("waiters at the barrier", PARTIES - 1, || {
            barrier.n_waiting()
        });
        for child in &mut children {
            still_running(child);
        }
        // The last to arrive trips the barrier, with the last index, as in Python.
        assert_eq!(barrier.wait().unwrap(), PARTIES - 1, "round {round}");
        for child in &mut children {
            assert!(child.join().success());
        }
        let mut indices = BTreeSet::from([PARTIES - 1]);
        while let Some(index) = results.get_nowait().unwrap() {
            assert!(indices.insert(index), "index {index} given twice");
        }
        assert_eq!(indices, (0..PARTIES).collect(), "round {round}");
        assert_eq!(barrier.n_waiting().unwrap(), 0);
        assert!(!barrier.broken().unwrap());
    }
}

/// Runs `parties` threads through `barrier` and returns their indices.
fn round(barrier: &BarrierBlockingProxy, parties: u64) -> BTreeSet<u64> {
    let threads: Vec<_> = (0..parties)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || barrier.wait())
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap().expect("a full round"))
        .collect()
}

/// Starts a thread waiting at `barrier` and returns once the barrier counts it.
fn waiting_thread(
    barrier: &BarrierBlockingProxy,
    expected: u64,
) -> std::thread::JoinHandle<manager::Result<u64>> {
    let thread = {
        let barrier = barrier.clone();
        std::thread::spawn(move || barrier.wait())
    };
    wait_for_count("waiters at the barrier", expected, || barrier.n_waiting());
    thread
}

fn barrier_abort_reset_and_timeouts_follow_python() {
    let server = server();
    let manager = server.connect();
    let barrier = manager.barrier(2, None).unwrap();
    assert_eq!(round(&barrier, 2), BTreeSet::from([0, 1]));

    // Abort breaks the barrier for the waiter present and for later ones, until reset.
    let waiter = waiting_thread(&barrier, 1);
    barrier.abort().unwrap();
    assert_eq!(
        kind(waiter.join().unwrap().unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    assert!(barrier.broken().unwrap());
    assert_eq!(barrier.n_waiting().unwrap(), 0);
    assert_eq!(
        kind(barrier.wait().unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    barrier.reset().unwrap();
    assert!(!barrier.broken().unwrap());
    assert_eq!(round(&barrier, 2), BTreeSet::from([0, 1]));

    // Reset with a waiter present: it gets BrokenBarrier, the barrier stays usable.
    let waiter = waiting_thread(&barrier, 1);
    barrier.reset().unwrap();
    assert_eq!(
        kind(waiter.join().unwrap().unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    assert!(!barrier.broken().unwrap());
    assert_eq!(round(&barrier, 2), BTreeSet::from([0, 1]));

    // A wait that times out breaks the barrier, for the other waiter too.
    let trio = manager.barrier(3, None).unwrap();
    let waiter = waiting_thread(&trio, 1);
    assert_eq!(
        kind(trio.wait_timeout(Duration::ZERO).unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    assert!(trio.broken().unwrap());
    assert_eq!(
        kind(waiter.join().unwrap().unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    trio.reset().unwrap();
    assert_eq!(round(&trio, 3), BTreeSet::from([0, 1, 2]));

    // The barrier's own timeout applies to waits that give none.
    let hasty = manager.barrier(2, Some(SHORT)).unwrap();
    assert_eq!(
        kind(hasty.wait().unwrap_err()),
        RemoteErrorKind::BrokenBarrier
    );
    assert!(hasty.broken().unwrap());
    hasty.reset().unwrap();
    assert_eq!(round(&hasty, 2), BTreeSet::from([0, 1]));

    // One party: every wait trips it at once.
    let alone = manager.barrier(1, None).unwrap();
    assert_eq!(alone.wait().unwrap(), 0);
    assert_eq!(alone.wait().unwrap(), 0);

    assert_eq!(
        kind(manager.barrier(0, None).unwrap_err()),
        RemoteErrorKind::InvalidValue
    );
}

#[manager::entry]
fn wait_at(barrier: BarrierBlockingProxy) -> manager::Result<()> {
    barrier.wait().map(drop)
}

fn a_killed_barrier_waiter_stops_counting() {
    let server = server();
    let manager = server.connect();
    let barrier = manager.barrier(3, None).unwrap();
    let mut doomed = ChildGuard(Process::spawn(wait_at, (barrier.clone(),)).unwrap());
    wait_for_count("waiters at the barrier", 1, || barrier.n_waiting());
    let mut survivor = ChildGuard(Process::spawn(wait_at, (barrier.clone(),)).unwrap());
    wait_for_count("waiters at the barrier", 2, || barrier.n_waiting());
    still_running(&mut doomed);

    doomed.0.kill().expect("SIGKILL a waiter");
    wait_for_count("waiters after the kill", 1, || barrier.n_waiting());
    assert!(!barrier.broken().unwrap(), "a withdrawal does not break it");
    still_running(&mut survivor);

    // Two more parties complete the round with the survivor.
    let indices = round(&barrier, 2);
    assert!(survivor.join().success());
    assert_eq!(indices.len(), 2);
    assert!(indices.iter().all(|i| *i < 3), "{indices:?}");
    assert_eq!(barrier.n_waiting().unwrap(), 0);
}

#[manager::entry]
fn pass_list_back(
    inbox: QueueBlockingProxy<ListBlockingProxy<i64>>,
    outbox: QueueBlockingProxy<ListBlockingProxy<i64>>,
) -> manager::Result<()> {
    let list = inbox.get()?;
    list.append(&4)?;
    outbox.put(&list)
}

fn a_proxy_put_in_a_queue_works_in_another_process() {
    let server = server();
    let manager = server.connect();
    let inbox: QueueBlockingProxy<ListBlockingProxy<i64>> = manager.queue(0).unwrap();
    let outbox: QueueBlockingProxy<ListBlockingProxy<i64>> = manager.queue(0).unwrap();
    let list = manager.list(&[1i64, 2, 3]).unwrap();
    let list_id = list.base().token().id;
    inbox.put(&list).unwrap();
    // The queue keeps the list alive once our proxy is gone.
    drop(list);
    let alive = |manager: &BlockingManager| {
        manager
            .debug_info()
            .unwrap()
            .objects
            .iter()
            .any(|o| o.id == list_id)
    };
    std::thread::sleep(SHORT);
    assert!(alive(&manager), "the queued proxy keeps the list alive");

    let mut child =
        ChildGuard(Process::spawn(pass_list_back, (inbox.clone(), outbox.clone())).unwrap());
    assert!(child.join().success());
    let list = outbox
        .get_timeout(TIMEOUT)
        .unwrap()
        .expect("the list came back");
    assert_eq!(list.to_vec().unwrap(), vec![1, 2, 3, 4]);

    // A list left in a queue is freed with the queue.
    inbox.put(&list).unwrap();
    drop(list);
    std::thread::sleep(SHORT);
    assert!(alive(&manager));
    drop(inbox);
    wait_until("the list to be freed with its queue", || {
        if alive(&manager) {
            Err("still there".to_string())
        } else {
            Ok(())
        }
    });
}

fn python_typeids_are_served() {
    let server = server();
    let manager = BaseManager::new(server.address().clone())
        .authkey(server.authkey().clone())
        .connect()
        .unwrap();
    // Created by name with the arguments Python's SyncManager passes.
    let made = [
        manager.create_dynamic("Queue", (0i64,)),
        manager.create_dynamic("JoinableQueue", (-1i64,)),
        manager.create_dynamic("Event", ()),
        manager.create_dynamic("Barrier", (2u64, None::<f64>)),
    ];
    let typeids: Vec<String> = made
        .into_iter()
        .map(|proxy| proxy.unwrap().token().typeid.clone())
        .collect();
    assert_eq!(typeids, ["Queue", "JoinableQueue", "Event", "Barrier"]);
    // A negative maxsize is no limit, as in Python.
    let unbounded: QueueBlockingProxy<u8> = QueueBlockingProxy::from_base(
        manager
            .create_dynamic("Queue", (-5i64,))
            .expect("a negative maxsize"),
    );
    assert_eq!(unbounded.maxsize().unwrap(), 0);
    for i in 0..10 {
        assert!(unbounded.put_nowait(&i).unwrap());
    }
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(queue_is_fifo_and_reports_its_size),
        case!(bounded_queue_is_full_and_put_times_out),
        case!(a_blocked_get_is_released_by_a_put),
        case!(producer_and_consumer_processes_share_a_queue),
        case!(joinable_queue_join_returns_after_every_task_done),
        case!(a_killed_getter_loses_no_item_and_stops_waiting),
        case!(a_killed_putter_puts_nothing),
        case!(two_hundred_waiters_on_one_event_are_released_by_one_set),
        case!(an_event_waiter_released_by_set_returns_true_even_if_cleared_at_once),
        case!(barrier_trips_for_n_processes_with_distinct_indices),
        case!(barrier_abort_reset_and_timeouts_follow_python),
        case!(a_killed_barrier_waiter_stops_counting),
        case!(a_proxy_put_in_a_queue_works_in_another_process),
        case!(python_typeids_are_served),
    ]);
}
