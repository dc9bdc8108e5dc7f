//! Events: a shared object emits typed events through `manager::events::Events`, and clients
//! subscribe through a stream method. Every subscriber gets every event in order; one that
//! falls behind is told how many it missed and holds up nobody; a subscription ends when its
//! stream is dropped or its client's connection closes.
//!
//! Real processes and real sockets: the server runs in a child process (`BaseManager::start`);
//! one subscriber is a spawned process that is killed. What the server holds is read through
//! the object (its count of open subscriptions); durations only as generous ceilings.
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use common::{wait_until, ChildGuard};
use futures::StreamExt;
use manager::events::{Event, Events};
use manager::{
    Address, BaseManager, BlockingManager, Process, Proxy as _, Register, Registry, Stream, Typeid,
};

/// The ceiling on a call that must not wait for a subscriber.
const QUICK: Duration = Duration::from_secs(2);

/// An object that emits the numbers it is told to.
#[derive(Debug)]
pub struct Ticker {
    ticks: Events<u64>,
}

#[manager::shared]
impl Ticker {
    /// Emits `from..to`, one event each; returns how many subscribers the last one reached.
    pub fn tick(&self, from: u64, to: u64) -> usize {
        (from..to).fold(0, |_, n| self.ticks.emit(n))
    }

    /// A subscription to the ticks emitted from now on.
    pub fn ticks(&self) -> Stream<Event<u64>> {
        self.ticks.subscribe()
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.ticks.subscribers()
    }
}

/// `ticker(capacity)`: a ticker whose subscribers may fall `capacity` events behind.
const TICKER: Typeid<TickerBlockingProxy, (usize,)> = Typeid::new("ticker");

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("ticker", |(capacity,): (usize,)| {
        Ticker {
            ticks: Events::new(capacity),
        }
    }))?;
    Ok(registry)
}

fn start() -> BlockingManager {
    BaseManager::new(Address::local_tcp())
        .start(registry)
        .expect("cannot start the server")
}

/// Waits until `ticker` counts `n` open subscriptions.
fn wait_subscribers(ticker: &TickerBlockingProxy, n: usize) {
    wait_until(&format!("{n} subscriptions"), || {
        match ticker.subscribers().map_err(|e| e.to_string())? {
            seen if seen == n => Ok(()),
            seen => Err(format!("{seen} open")),
        }
    });
}

/// What a subscriber made of its events: the ticks in the order received, and how many it
/// was told it missed.
fn account(events: impl IntoIterator<Item = Event<u64>>) -> (Vec<u64>, u64) {
    let (mut ticks, mut missed) = (Vec::new(), 0);
    for event in events {
        match event {
            Event::Emitted(n) => ticks.push(n),
            Event::Missed(n) => missed += n,
        }
    }
    (ticks, missed)
}

/// Two subscribers, one blocking and one async, each get every event, in order.
fn every_subscriber_gets_every_event_in_order() {
    let manager = start();
    let ticker = manager.create(&TICKER, (4096,)).unwrap();
    let blocking = ticker.ticks().unwrap();
    let async_ticker = ticker.clone().into_async();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let async_stream = runtime.block_on(async_ticker.ticks()).unwrap();
    wait_subscribers(&ticker, 2);
    assert_eq!(
        ticker.tick(0, 1000).unwrap(),
        2,
        "the last tick reached both"
    );
    let (ticks, missed) = account(blocking.take(1000).map(Result::unwrap));
    assert_eq!((ticks, missed), ((0..1000).collect(), 0));
    let received: Vec<_> = runtime.block_on(
        async_stream
            .take(1000)
            .map(Result::unwrap)
            .collect::<Vec<_>>(),
    );
    assert_eq!(account(received), ((0..1000).collect(), 0));
}

/// A subscriber that reads nothing does not hold up the emitter, nor another subscriber;
/// when it reads, it is told how many it missed, and what it got and missed add up.
fn a_slow_subscriber_is_told_what_it_missed_and_blocks_nobody() {
    let manager = start();
    let ticker = manager.create(&TICKER, (16,)).unwrap();
    let slow = ticker.ticks().unwrap();
    // The reader has a connection of its own.
    let reader = connect(&manager)
        .attach::<TickerBlockingProxy>(ticker.base().token())
        .unwrap()
        .ticks()
        .unwrap();
    wait_subscribers(&ticker, 2);
    // The reader reads in a thread of its own while the ticks are emitted, in batches the
    // queue can hold, so that it keeps up.
    let reading = std::thread::spawn(move || until(reader, 999));
    let started = Instant::now();
    for batch in 0..100 {
        ticker.tick(batch * 10, batch * 10 + 10).unwrap();
    }
    let took = started.elapsed();
    assert!(
        took < QUICK * 5,
        "emitting waited for the slow subscriber: {took:?}"
    );
    let (ticks, missed) = reading.join().unwrap();
    assert_eq!(ticks.len() as u64 + missed, 1000);
    assert!(
        ticks.windows(2).all(|w| w[0] < w[1]),
        "out of order: {ticks:?}"
    );
    // The slow one: what it got and what it was told it missed add up to every tick.
    ticker.tick(1000, 1001).unwrap();
    let (got, missed) = until(slow, 1000);
    assert!(
        missed > 0,
        "the slow subscriber was not told it missed anything"
    );
    assert_eq!(
        got.len() as u64 + missed,
        1001,
        "got {got:?}, missed {missed}"
    );
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
}

/// Reads `stream` until tick `last` arrives: the ticks received, and how many were missed.
fn until(stream: manager::BlockingStream<Event<u64>>, last: u64) -> (Vec<u64>, u64) {
    let (mut got, mut missed) = (Vec::new(), 0);
    for event in stream {
        match event.unwrap() {
            Event::Emitted(n) => {
                got.push(n);
                if n == last {
                    break;
                }
            }
            Event::Missed(n) => missed += n,
        }
    }
    (got, missed)
}

/// Another connection to the server `manager` is connected to.
fn connect(manager: &BlockingManager) -> BlockingManager {
    BaseManager::new(manager.address().clone())
        .connect()
        .expect("cannot connect")
}

/// Subscribes, then waits to be killed.
#[manager::entry]
fn subscribe_in_child(ticker: TickerBlockingProxy) -> Result<(), String> {
    let _ticks = ticker.ticks().map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

/// Subscribes and returns: the stream drops as it returns.
#[manager::entry]
fn subscribe_and_return(ticker: TickerBlockingProxy) -> Result<(), String> {
    let _ticks = ticker.ticks().map_err(|e| e.to_string())?;
    Ok(())
}

/// Dropping the stream ends the subscription, before the next call of its connection is
/// answered, and before its process, once joined, is seen to have exited; so does its
/// client's death.
fn a_subscription_ends_with_its_stream_or_its_connection() {
    let manager = start();
    let ticker = manager.create(&TICKER, (16,)).unwrap();
    for round in 0..20 {
        let ticks = ticker.ticks().unwrap();
        assert_eq!(ticker.subscribers().unwrap(), 1, "round {round}");
        drop(ticks);
        assert_eq!(
            ticker.subscribers().unwrap(),
            0,
            "round {round}: the dropped stream's subscription was still open"
        );
    }
    for round in 0..5 {
        let mut child =
            ChildGuard(Process::spawn(subscribe_and_return, (ticker.clone(),)).unwrap());
        assert!(child.join().success(), "round {round}: the child failed");
        assert_eq!(
            ticker.subscribers().unwrap(),
            0,
            "round {round}: a joined process's subscription was still open"
        );
    }

    let mut child = ChildGuard(Process::spawn(subscribe_in_child, (ticker.clone(),)).unwrap());
    wait_subscribers(&ticker, 1);
    // Events for a subscriber that is gone are emitted as for any other.
    ticker.tick(0, 100).unwrap();
    child.0.kill().unwrap();
    let _ = child.join();
    wait_subscribers(&ticker, 0);
    assert_eq!(ticker.tick(100, 101).unwrap(), 0);
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(every_subscriber_gets_every_event_in_order),
        case!(a_slow_subscriber_is_told_what_it_missed_and_blocks_nobody),
        case!(a_subscription_ends_with_its_stream_or_its_connection),
    ]);
}
