//! Stream methods: a `#[shared]` method returning `manager::Stream<T>` hands its caller the
//! items as it consumes them, within a bounded window, and its producer stops when the
//! caller's stream is dropped or its connection closes.
//!
//! Real processes and real sockets: the server runs in a child process (`BaseManager::start`);
//! one client is a spawned process that is killed mid-stream. What the producers did is read
//! from counters on the object (items produced, producers alive); durations are asserted only
//! as generous ceilings ("did not wait for the 3 s item").
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, ChildGuard};
use futures::StreamExt;
use manager::wire::STREAM_WINDOW;
use manager::{
    Address, BaseManager, BlockingManager, Error, Process, Register, Registry, RemoteErrorKind,
    Stream, Typeid,
};

/// The ceiling on a call that must not wait for a 3 s item.
const QUICK: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// The shared type.
// ---------------------------------------------------------------------------------------------

/// What a source's producers have done: items made, producers alive.
#[derive(Debug, Default)]
pub struct Counters {
    produced: AtomicU64,
    alive: AtomicU64,
}

/// Counts a producer alive for as long as it lives (the iterator or stream holds it).
#[derive(Debug)]
struct Alive(Arc<Counters>);

impl Alive {
    fn new(counters: &Arc<Counters>) -> Alive {
        counters.alive.fetch_add(1, Ordering::SeqCst);
        Alive(counters.clone())
    }

    /// Counts one item made, and returns it.
    fn made(&self, item: u64) -> u64 {
        self.0.produced.fetch_add(1, Ordering::SeqCst);
        item
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.fetch_sub(1, Ordering::SeqCst);
    }
}

/// An object whose stream methods count what they produce.
#[derive(Debug, Default)]
pub struct Source {
    counters: Arc<Counters>,
}

#[manager::shared]
impl Source {
    /// `0..n`, pulled from an iterator on a worker thread.
    pub fn count(&self, n: u64) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::iter((0..n).map(move |i| alive.made(i)))
    }

    /// `0..n`, polled from a `futures::Stream` in a task.
    pub fn count_async(&self, n: u64) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::from_stream(futures::stream::iter(0..n).map(move |i| alive.made(i)))
    }

    /// 0, 1, 2... without end, from an iterator.
    pub fn endless(&self) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::iter((0..).map(move |i| alive.made(i)))
    }

    /// 0, 1, 2... without end, from a `futures::Stream`.
    pub fn endless_async(&self) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::from_stream(futures::stream::iter(0..).map(move |i| alive.made(i)))
    }

    /// `0..at`, then an error.
    pub fn failing(&self, at: u64) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::try_iter((0..).map(move |i| match i < at {
            true => Ok(alive.made(i)),
            false => Err(format!("no item {i}")),
        }))
    }

    /// `0..at`, then a panic in the producer.
    pub fn panicking(&self, at: u64) -> Stream<u64> {
        let alive = Alive::new(&self.counters);
        Stream::from_stream(futures::stream::iter(0..).map(move |i| {
            assert!(i < at, "no item {i} {}", common::INTENTIONAL);
            alive.made(i)
        }))
    }

    /// One item, after 3 s (an iterator whose `next` blocks).
    pub fn sleepy(&self) -> Stream<String> {
        Stream::iter(std::iter::once_with(|| {
            std::thread::sleep(Duration::from_secs(3));
            "late".to_string()
        }))
    }

    /// Items made by this object's producers so far.
    pub fn produced(&self) -> u64 {
        self.counters.produced.load(Ordering::SeqCst)
    }

    /// This object's producers alive now.
    pub fn alive(&self) -> u64 {
        self.counters.alive.load(Ordering::SeqCst)
    }
}

const SOURCE: Typeid<SourceBlockingProxy> = Typeid::new("source");

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("source", |()| Source::default()))?;
    Ok(registry)
}

fn start() -> BlockingManager {
    BaseManager::new(Address::local_tcp())
        .start(registry)
        .expect("cannot start the server")
}

/// Waits until `source` has made no item for a while, and returns how many it made.
fn settled(source: &SourceBlockingProxy) -> u64 {
    let mut last = source.produced().unwrap();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = source.produced().unwrap();
        if now == last {
            return now;
        }
        last = now;
    }
}

// ---------------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------------

/// 10,000 items arrive complete and in order, from an iterator and from a `futures::Stream`,
/// through the blocking iterator and through the async stream.
fn ten_thousand_items_arrive_complete_and_in_order() {
    let manager = start();
    let source = manager.create(&SOURCE, ()).unwrap();
    let items: Vec<u64> = source
        .count(10_000)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items, (0..10_000).collect::<Vec<_>>());
    let items: Vec<u64> = source
        .count_async(10_000)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items, (0..10_000).collect::<Vec<_>>());

    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = manager.address().clone();
    let token = manager::Proxy::base(&source).token().clone();
    runtime.block_on(async move {
        let manager = BaseManager::new(address).connect_async().await.unwrap();
        let source: SourceProxy = manager.attach(&token).await.unwrap();
        for stream in [
            source.count(10_000).await.unwrap(),
            source.count_async(10_000).await.unwrap(),
        ] {
            let items: Vec<u64> = stream.map(Result::unwrap).collect().await;
            assert_eq!(items, (0..10_000).collect::<Vec<_>>());
        }
    });
    assert_eq!(source.alive().unwrap(), 0, "a finished producer is dropped");
}

/// A consumer that reads slowly (here: not at all for a while) keeps the producer within the
/// window ahead of what it consumed, for iterators and streams alike.
fn a_slow_consumer_keeps_the_server_within_the_window() {
    let manager = start();
    for asynchronous in [false, true] {
        let source = manager.create(&SOURCE, ()).unwrap();
        let mut stream = match asynchronous {
            false => source.endless().unwrap(),
            true => source.endless_async().unwrap(),
        };
        let window = u64::from(STREAM_WINDOW);
        let mut consumed = 0u64;
        for step in [0u64, 1, 10, 100, 1000] {
            for _ in 0..step {
                assert_eq!(stream.next().unwrap().unwrap(), consumed);
                consumed += 1;
            }
            let produced = settled(&source);
            assert!(
                produced <= consumed + window,
                "produced {produced} with {consumed} consumed: more than the window of {window} ahead"
            );
            assert!(
                produced >= consumed.max(1),
                "produced {produced} with {consumed} consumed"
            );
        }
        drop(stream);
        wait_until("the producer to be dropped", || {
            match source.alive().unwrap() {
                0 => Ok(()),
                n => Err(format!("{n} alive")),
            }
        });
    }
}

/// Dropping the client's stream stops its producer: the count stops advancing, and the
/// producer is dropped.
fn dropping_the_stream_stops_the_producer() {
    let manager = start();
    for asynchronous in [false, true] {
        let source = manager.create(&SOURCE, ()).unwrap();
        let stream = match asynchronous {
            false => source.endless().unwrap(),
            true => source.endless_async().unwrap(),
        };
        let taken: Vec<u64> = stream.take(500).map(Result::unwrap).collect();
        assert_eq!(taken.len(), 500);
        // `take` has dropped the stream.
        wait_until("the producer to be dropped", || {
            match source.alive().unwrap() {
                0 => Ok(()),
                n => Err(format!("{n} alive")),
            }
        });
        let produced = settled(&source);
        assert!(
            produced <= 500 + u64::from(STREAM_WINDOW),
            "produced {produced}"
        );
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(source.produced().unwrap(), produced, "the producer went on");
    }
}

/// An error the producer returns, or a panic in it, is the stream's last item.
fn an_error_mid_stream_arrives_as_the_last_item() {
    let manager = start();
    let source = manager.create(&SOURCE, ()).unwrap();
    let items: Vec<Result<u64, Error>> = source.failing(5).unwrap().collect();
    assert_eq!(items.len(), 6, "{items:?}");
    for (i, item) in items[..5].iter().enumerate() {
        assert_eq!(*item.as_ref().unwrap(), i as u64);
    }
    match &items[5] {
        Err(Error::Remote(e)) => {
            assert_eq!(e.kind, RemoteErrorKind::Runtime);
            assert!(e.message.contains("no item 5"), "{e}");
        }
        other => panic!("expected the producer's error, got {other:?}"),
    }

    let items: Vec<Result<u64, Error>> = source.panicking(3).unwrap().collect();
    assert_eq!(items.len(), 4, "{items:?}");
    match &items[3] {
        Err(Error::Remote(e)) => {
            assert_eq!(e.kind, RemoteErrorKind::Panic);
            assert!(e.message.contains("no item 3"), "{e}");
        }
        other => panic!("expected the producer's panic, got {other:?}"),
    }
    // The server goes on serving, and the producers are gone.
    assert_eq!(source.alive().unwrap(), 0);
}

/// Reads 10 items of an endless stream, then waits to be killed.
#[manager::entry]
fn consume_in_child(source: SourceBlockingProxy) -> Result<(), String> {
    let stream = source.endless().map_err(|e| e.to_string())?;
    for item in stream.take(10) {
        item.map_err(|e| e.to_string())?;
    }
    let _stream = source.endless().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

/// A client process killed mid-stream frees the server's producer: its connection closes,
/// which ends its streams.
fn a_client_that_dies_mid_stream_frees_the_producer() {
    let manager = start();
    let source = manager.create(&SOURCE, ()).unwrap();
    let mut child = ChildGuard(Process::spawn(consume_in_child, (source.clone(),)).unwrap());
    // The child's second stream is open (the first ran 10 items and was dropped).
    wait_until("the child's stream to open", || {
        match (source.produced().unwrap(), source.alive().unwrap()) {
            (produced, 1) if produced > 10 => Ok(()),
            seen => Err(format!("(produced, alive) = {seen:?}")),
        }
    });
    child.0.kill().unwrap();
    let _ = child.join();
    wait_until(
        "the dead client's producer to be dropped",
        || match source.alive().unwrap() {
            0 => Ok(()),
            n => Err(format!("{n} alive")),
        },
    );
    let produced = settled(&source);
    assert!(
        produced <= 10 + 2 * u64::from(STREAM_WINDOW),
        "produced {produced}"
    );
}

/// While a stream is open, stalled on its window or on a producer that blocks, other calls on
/// the same connection are answered at once, and other streams run.
fn other_calls_run_while_a_stream_is_open() {
    let manager = start();
    let source = manager.create(&SOURCE, ()).unwrap();
    let stalled = source.endless().unwrap();
    let mut sleepy = source.sleepy().unwrap();
    let started = Instant::now();
    assert!(source.produced().unwrap() <= u64::from(STREAM_WINDOW));
    let items: Vec<u64> = source
        .count(1000)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(items.len(), 1000);
    assert!(
        started.elapsed() < QUICK,
        "other calls waited for a blocked stream: {:?}",
        started.elapsed()
    );
    assert_eq!(sleepy.next().unwrap().unwrap(), "late");
    assert!(sleepy.next().is_none());
    drop(stalled);
}

/// A stream's item type is checked on the client: an async proxy's stream is a
/// `futures::Stream`, usable with its combinators.
fn an_async_stream_works_with_stream_combinators() {
    let manager = start();
    let source = manager.create(&SOURCE, ()).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let address = manager.address().clone();
    let token = manager::Proxy::base(&source).token().clone();
    runtime.block_on(async move {
        let manager = BaseManager::new(address).connect_async().await.unwrap();
        let source: SourceProxy = manager.attach(&token).await.unwrap();
        let evens: Vec<u64> = source
            .endless_async()
            .await
            .unwrap()
            .map(Result::unwrap)
            .filter(|i| std::future::ready(i % 2 == 0))
            .take(100)
            .collect()
            .await;
        assert_eq!(evens, (0..200).step_by(2).collect::<Vec<_>>());
    });
}

fn main() {
    // Before `init`, which runs the server in the child: its producers panic on purpose.
    common::quiet_intentional_panics();
    manager::init();
    common::run_tests(vec![
        case!(ten_thousand_items_arrive_complete_and_in_order),
        case!(a_slow_consumer_keeps_the_server_within_the_window),
        case!(dropping_the_stream_stops_the_producer),
        case!(an_error_mid_stream_arrives_as_the_last_item),
        case!(a_client_that_dies_mid_stream_frees_the_producer),
        case!(other_calls_run_while_a_stream_is_open),
        case!(an_async_stream_works_with_stream_combinators),
    ]);
}
