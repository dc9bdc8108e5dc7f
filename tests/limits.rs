//! Server limits (connections, calls in flight, objects per connection), call deadlines and
//! the cancellation of server-side work, over real sockets.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, InProcessServer};
use manager::{
    Address, AuthKey, BaseManager, Error, Manager, Register, Registry, RemoteErrorKind,
    ServerConfig, Typeid,
};
use tokio::sync::Notify;

/// A gate: `pass` waits until `open`, counting who is inside and who gave up.
#[derive(Debug)]
pub struct Gate {
    open: Arc<Notify>,
    inside: Arc<AtomicUsize>,
    most_inside: Arc<AtomicUsize>,
    dropped: Arc<AtomicUsize>,
}

/// Counts a waiter whose call was dropped before the gate opened.
struct Leaving(Arc<AtomicUsize>, Arc<AtomicUsize>, bool);

impl Drop for Leaving {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
        if !self.2 {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[manager::shared]
impl Gate {
    /// Waits for the gate to open.
    pub async fn pass(&self) -> u64 {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_inside.fetch_max(now, Ordering::SeqCst);
        let mut leaving = Leaving(self.inside.clone(), self.dropped.clone(), false);
        self.open.notified().await;
        leaving.2 = true;
        1
    }

    /// Lets every waiter through.
    pub fn open(&self) {
        self.open.notify_waiters();
    }

    /// How many waiters are inside.
    pub fn inside(&self) -> u64 {
        self.inside.load(Ordering::SeqCst) as u64
    }

    /// The most waiters that were inside at once.
    pub fn most_inside(&self) -> u64 {
        self.most_inside.load(Ordering::SeqCst) as u64
    }

    /// How many waiters left without passing (their calls were cancelled).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::SeqCst) as u64
    }
}

fn gate() -> Gate {
    Gate {
        open: Arc::new(Notify::new()),
        inside: Arc::new(AtomicUsize::new(0)),
        most_inside: Arc::new(AtomicUsize::new(0)),
        dropped: Arc::new(AtomicUsize::new(0)),
    }
}

/// A small object, many of which one connection may try to hold.
#[derive(Debug)]
pub struct Token;

#[manager::shared]
impl Token {
    /// Answers 1.
    pub fn one(&self) -> u8 {
        1
    }
}

const GATE: Typeid<GateProxy> = Typeid::new("gate");
const BLOCKING_GATE: Typeid<GateBlockingProxy> = Typeid::new("gate");
const TOKEN: Typeid<TokenBlockingProxy> = Typeid::new("token");

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry.register(Register::shared("gate", gate())).unwrap();
    registry
        .register(Register::factory("token", |(): ()| Token))
        .unwrap();
    registry
}

fn server(config: ServerConfig) -> InProcessServer {
    InProcessServer::start_with(
        registry(),
        Address::local_tcp(),
        AuthKey::from("limits"),
        config,
    )
}

fn config() -> ServerConfig {
    ServerConfig::default()
}

#[test]
fn calls_in_flight_are_capped_by_backpressure() {
    let mut config = config();
    config.max_in_flight = 2;
    let server = server(config);
    let address = server.address().clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let manager = Manager::connect(&address, &AuthKey::from("limits"))
            .await
            .unwrap();
        let gate = manager.create(&GATE, ()).await.unwrap();
        let waiters: Vec<_> = (0..6)
            .map(|_| {
                let gate = gate.clone();
                tokio::spawn(async move { gate.pass().await })
            })
            .collect();
        // Only two calls run; the others wait unread in the socket.
        let observer = Manager::connect(&address, &AuthKey::from("limits"))
            .await
            .unwrap();
        let watch = observer.create(&GATE, ()).await.unwrap();
        for _ in 0..3000 {
            if watch.inside().await.unwrap() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(watch.inside().await.unwrap(), 2);
        // Open until everyone got through: each opening lets the next two in.
        let mut passed = 0;
        let mut waiters = waiters.into_iter();
        let mut pending: Vec<_> = Vec::new();
        for waiter in waiters.by_ref() {
            pending.push(waiter);
        }
        for round in 0.. {
            if passed == 6 {
                break;
            }
            assert!(round < 6000, "the waiters did not all pass: {passed} of 6");
            watch.open().await.unwrap();
            tokio::time::sleep(Duration::from_millis(5)).await;
            let (done, rest): (Vec<_>, Vec<_>) = pending.into_iter().partition(|w| w.is_finished());
            for waiter in done {
                assert_eq!(waiter.await.unwrap().unwrap(), 1);
                passed += 1;
            }
            pending = rest;
        }
        assert_eq!(
            watch.most_inside().await.unwrap(),
            2,
            "never more than max_in_flight calls ran at once"
        );
    });
}

#[test]
fn connections_over_the_limit_are_refused_with_a_clear_error() {
    let mut config = config();
    config.max_connections = 2;
    let server = server(config);
    let base = BaseManager::new(server.address().clone()).authkey("limits");
    let first = base.connect().unwrap();
    let second = base.connect().unwrap();
    let refused = base.connect().unwrap_err();
    assert_eq!(
        refused.remote_kind(),
        Some(RemoteErrorKind::Limit),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("limit of 2 connections"),
        "{refused}"
    );
    // The two admitted clients are unaffected.
    assert_eq!(first.number_of_objects().unwrap(), 1);
    drop(second);
    let third = wait_until("a free connection slot", || {
        base.connect().map_err(|e| e.to_string())
    });
    assert_eq!(third.number_of_objects().unwrap(), 1);
}

#[test]
fn objects_per_connection_are_capped() {
    let mut config = config();
    config.max_objects_per_connection = 3;
    let server = server(config);
    let manager = server.connect();
    let held: Vec<_> = (0..3)
        .map(|_| manager.create(&TOKEN, ()).unwrap())
        .collect();
    let refused = manager.create(&TOKEN, ()).unwrap_err();
    assert_eq!(
        refused.remote_kind(),
        Some(RemoteErrorKind::Limit),
        "{refused}"
    );
    // More references to an object it holds are fine: a clone is not a new object.
    let again = held[0].clone();
    assert_eq!(again.one().unwrap(), 1);
    // Another connection has its own allowance.
    let other = server.connect();
    assert!(other.create(&TOKEN, ()).is_ok());
    // Dropping one makes room again.
    drop(held);
    drop(again);
    wait_until("room for one more object", || {
        manager.create(&TOKEN, ()).map_err(|e| e.to_string())
    });
}

#[test]
fn a_blocking_call_past_its_deadline_times_out_and_is_cancelled_on_the_server() {
    let server = server(config());
    let manager = server.connect();
    let gate = manager.create(&BLOCKING_GATE, ()).unwrap();
    let dropped_before = gate.dropped().unwrap();
    let slow = gate.clone().with_timeout(Duration::from_millis(50));
    match slow.pass() {
        Err(Error::Timeout(what)) => assert!(what.contains("50ms"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The server dropped the waiting call: nobody is left inside the gate.
    wait_until("the cancelled call to leave the gate", || {
        match (gate.inside(), gate.dropped()) {
            (Ok(0), Ok(dropped)) if dropped == dropped_before + 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // The proxy without a deadline still works, and so does the connection.
    assert_eq!(gate.inside().unwrap(), 0);
}

#[test]
fn dropping_an_async_call_cancels_it_on_the_server() {
    let server = server(config());
    let address = server.address().clone();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let manager = Manager::connect(&address, &AuthKey::from("limits"))
            .await
            .unwrap();
        let gate = manager.create(&GATE, ()).await.unwrap();
        let dropped_before = gate.dropped().await.unwrap();
        let call = tokio::spawn({
            let gate = gate.clone();
            async move { gate.pass().await }
        });
        for _ in 0..3000 {
            if gate.inside().await.unwrap() == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(gate.inside().await.unwrap(), 1);
        call.abort();
        let _ = call.await;
        for _ in 0..3000 {
            if gate.inside().await.unwrap() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            gate.inside().await.unwrap(),
            0,
            "the server-side call was dropped"
        );
        assert_eq!(gate.dropped().await.unwrap(), dropped_before + 1);
    });
}

#[test]
fn the_connection_default_deadline_applies_to_every_proxy() {
    let server = server(config());
    let manager = server.connect();
    manager
        .connection()
        .set_default_timeout(Some(Duration::from_millis(30)));
    let gate = manager.create(&BLOCKING_GATE, ()).unwrap();
    assert!(matches!(gate.pass(), Err(Error::Timeout(_))));
    manager.connection().set_default_timeout(None);
    assert_eq!(manager.connection().default_timeout(), None);
    // The timed-out call was cancelled on the server...
    wait_until("the timed-out call to be cancelled", || {
        match gate.dropped() {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // ...and calls within a generous deadline complete.
    let quick = gate.with_timeout(Duration::from_secs(30));
    assert_eq!(quick.inside().unwrap(), 0);
}
