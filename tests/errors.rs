//! Errors: what a caller sees when a method panics, is not exposed, does not exist, gets the
//! wrong arguments or returns `Err`; what happens to a connection that breaks the protocol; and
//! what clients and servers see when the other side vanishes. Real sockets, real processes.
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{wait_until, within, ChildGuard, InProcessServer, TempPath, INTENTIONAL, TIMEOUT};
use manager::proxy::shape::Fallible;
use manager::{
    Address, AuthKey, BaseManager, BaseProxy, BlockingManager, Error, Manager, Process, Proxy,
    Register, Registry, RemoteError, RemoteErrorKind, Server, ServerConfig, Typeid,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The error `Calc::checked_div` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MathError {
    /// A division by zero, of `numerator`.
    DivideByZero {
        /// What was divided.
        numerator: i64,
    },
    /// A result that does not fit, described.
    Overflow(String),
}

/// A value whose encoding always fails.
#[derive(Debug, Deserialize)]
pub struct Unencodable;

impl Serialize for Unencodable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be encoded",
        ))
    }
}

/// A calculator that can also panic, fail, and hold a caller at a gate.
#[derive(Default, Debug)]
pub struct Calc {
    value: i64,
    open: AtomicBool,
    waiting: AtomicU64,
}

/// Decrements its counter when dropped.
struct CountedOut<'a>(&'a AtomicU64);

impl Drop for CountedOut<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[manager::shared]
impl Calc {
    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Adds `n`, returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value += n;
        self.value
    }

    /// Greets `name`.
    pub fn greet(&self, name: String) -> String {
        format!("hello {name}")
    }

    /// Panics with `message`.
    pub fn boom(&self, message: String) -> i64 {
        panic!("{message}")
    }

    /// Panics while holding the object's write lock.
    pub fn boom_mut(&mut self) {
        self.value += 1000;
        panic!("boom while holding the write lock {INTENTIONAL}")
    }

    /// Panics after an await.
    pub async fn boom_async(&self) -> u64 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        panic!("boom after an await {INTENTIONAL}")
    }

    /// `a / b`, or a typed error.
    pub fn checked_div(&self, a: i64, b: i64) -> Result<i64, MathError> {
        if b == 0 {
            return Err(MathError::DivideByZero { numerator: a });
        }
        a.checked_div(b)
            .ok_or_else(|| MathError::Overflow(format!("{a} / {b}")))
    }

    /// Waits (for at most two minutes) until someone calls `open`; returns whether it opened.
    pub async fn wait_open(&self) -> bool {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Counted out even if the server cancels the call.
        let _waiting = CountedOut(&self.waiting);
        for _ in 0..120_000 {
            if self.open.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.open.load(Ordering::SeqCst)
    }

    /// A result that cannot be encoded.
    pub fn unencodable(&self) -> Unencodable {
        Unencodable
    }

    /// `n` times the letter x.
    pub fn repeat(&self, n: usize) -> String {
        "x".repeat(n)
    }

    /// Opens the gate.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// How many callers wait at the gate.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }
}

/// Another shared type, whose proxies a client may name for a typeid of `Calc` by mistake.
#[derive(Debug)]
pub struct Meter;

#[manager::shared]
impl Meter {
    /// The reading.
    pub fn get(&self) -> i64 {
        0
    }
}

const CALC: Typeid<CalcBlockingProxy, (i64,)> = Typeid::new("calc");
/// `calc` declared with the proxy of another type: `get` has the same name and arity, so only
/// the server's check at create tells them apart.
const CALC_AS_METER: Typeid<MeterBlockingProxy, (i64,)> = Typeid::new("calc");
const CALC_AS_METER_ASYNC: Typeid<MeterProxy, (i64,)> = Typeid::new("calc");
const CALC_AS_LIST: Typeid<manager::sync::ListBlockingProxy<i64>, (i64,)> = Typeid::new("calc");
const NARROW: Typeid<CalcBlockingProxy, (i64,)> = Typeid::new("calc_narrow");
const GATE: Typeid<CalcBlockingProxy> = Typeid::new("gate");
const GATE_ASYNC: Typeid<CalcProxy> = Typeid::new("gate");

fn calc(value: i64) -> Calc {
    Calc {
        value,
        ..Calc::default()
    }
}

/// `calc`: a new `Calc(value)` per create; `calc_narrow`: the same, with only `get` and
/// `greet` exposed; `panicky`: a factory that panics; `gate`: one `Calc` shared by everyone.
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(Register::factory("calc", |(value,): (i64,)| calc(value)))
        .unwrap();
    registry
        .register(
            Register::factory("calc_narrow", |(value,): (i64,)| calc(value))
                .exposed(["get", "greet"]),
        )
        .unwrap();
    registry
        .register(Register::factory("panicky", |(): ()| -> Calc {
            panic!("the factory refuses {INTENTIONAL}")
        }))
        .unwrap();
    registry
        .register(Register::shared("gate", Calc::default()))
        .unwrap();
    registry
}

/// A child that connects, waits at the gate, and is killed while its call is in flight.
#[manager::entry]
fn call_and_vanish(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let _calc = manager.create(&CALC, (1,))?;
    let gate = manager.create(&GATE, ())?;
    gate.wait_open()?;
    Ok(())
}

/// A child that runs a server on a Unix socket until it is killed.
#[manager::entry]
fn serve_at(path: PathBuf) -> manager::Result<()> {
    BaseManager::new(Address::unix(path)).serve_forever_blocking(registry())
}

/// The remote error inside `error`, or a panic naming what was expected.
fn remote(error: Error, kind: RemoteErrorKind) -> RemoteError {
    match error {
        Error::Remote(remote) => {
            assert_eq!(remote.kind, kind, "{remote:?}");
            remote
        }
        other => panic!("expected a remote {kind} error, got {other:?}"),
    }
}

fn assert_connection_closed<T: std::fmt::Debug>(result: manager::Result<T>) {
    match result {
        Err(Error::ConnectionClosed(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
}

fn panic_in_method_is_error_for_caller_and_server_keeps_serving() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (5,)).unwrap();

    let error = remote(
        calc.boom(format!("kaboom 42 {INTENTIONAL}")).unwrap_err(),
        RemoteErrorKind::Panic,
    );
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc", "boom")
    );
    assert!(error.message.contains("kaboom 42"), "{error:?}");
    assert_eq!(calc.get().unwrap(), 5, "the same proxy keeps working");

    let error = remote(calc.boom_mut().unwrap_err(), RemoteErrorKind::Panic);
    assert_eq!(error.method, "boom_mut");
    assert!(error.message.contains("write lock"), "{error:?}");
    // The lock is not poisoned: the object still serves reads and writes.
    assert_eq!(calc.add(1).unwrap(), 1006);

    let error = remote(calc.boom_async().unwrap_err(), RemoteErrorKind::Panic);
    assert_eq!(error.method, "boom_async");
    assert!(error.message.contains("after an await"), "{error:?}");

    let error = remote(
        client.create_dynamic("panicky", ()).unwrap_err(),
        RemoteErrorKind::Panic,
    );
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("panicky", "create")
    );
    assert!(error.message.contains("the factory refuses"), "{error:?}");

    // Other clients are served as before.
    let other = server.connect();
    let fresh = other.create(&CALC, (9,)).unwrap();
    assert_eq!(fresh.add(1).unwrap(), 10);
    assert_eq!(calc.get().unwrap(), 1006);
    assert_eq!(other.number_of_objects().unwrap(), 3);
}

fn remote_error_carries_typeid_method_and_message() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();

    let message = format!("the message {INTENTIONAL}");
    let error = calc.boom(message.clone()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!("remote error in calc.boom: {message}"),
        "{error:?}"
    );
    let remote = error.as_remote().expect("a remote error");
    assert_eq!(remote.kind, RemoteErrorKind::Panic);
    assert_eq!(remote.typeid, "calc");
    assert_eq!(remote.method, "boom");
    assert_eq!(remote.message, message);

    let error = remote_error(client.create_dynamic("nonexistent", ()).unwrap_err());
    assert_eq!(error.kind, RemoteErrorKind::UnknownTypeid);
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("nonexistent", "create")
    );
    assert!(error.message.contains("nonexistent"), "{error:?}");
    assert!(
        error.message.contains("calc") && error.message.contains("gate"),
        "the message lists the registered typeids: {error:?}"
    );
    // A remote error survives the trip intact; the connection is still usable.
    assert_eq!(calc.get().unwrap(), 1);
}

fn a_typeid_declared_with_another_types_proxy_is_refused_at_create_naming_both() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let check = |error: Error, proxy_for: &str| {
        let error = remote(error, RemoteErrorKind::WrongType);
        assert_eq!(
            (error.typeid.as_str(), error.method.as_str()),
            ("calc", "create")
        );
        assert!(
            error.message.contains("errors::Calc") && error.message.contains(proxy_for),
            "the message names the typeid's type and the proxy's: {error:?}"
        );
    };
    check(
        client.create(&CALC_AS_METER, (1,)).unwrap_err(),
        "errors::Meter",
    );
    check(
        client.create(&CALC_AS_LIST, (1,)).unwrap_err(),
        "sync::list::ListObject",
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let manager = Manager::connect(server.address(), server.authkey())
            .await
            .unwrap();
        check(
            manager
                .create(&CALC_AS_METER_ASYNC, (1,))
                .await
                .unwrap_err(),
            "errors::Meter",
        );
    });
    // Nothing was made, and the right declaration still works on the same connection.
    assert_eq!(
        client.number_of_objects().unwrap(),
        1,
        "only the shared gate"
    );
    assert_eq!(client.create(&CALC, (7,)).unwrap().get().unwrap(), 7);
    // The untyped form is not checked, as Python's is not.
    let base = client.create_dynamic("calc", (8,)).unwrap();
    assert_eq!(base.call_method_blocking::<_, i64>("get", ()).unwrap(), 8);
}

fn remote_error(error: Error) -> RemoteError {
    match error {
        Error::Remote(remote) => remote,
        other => panic!("expected a remote error, got {other:?}"),
    }
}

fn calling_non_exposed_method_names_method_and_typeid() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let narrow = client.create(&NARROW, (3,)).unwrap();
    assert_eq!(narrow.get().unwrap(), 3);
    assert_eq!(narrow.greet("you".into()).unwrap(), "hello you");
    assert_eq!(
        narrow.base().get_methods_blocking().unwrap(),
        ["get", "greet"]
    );

    // Through the typed proxy, which has every method of the impl block.
    let error = remote(narrow.add(1).unwrap_err(), RemoteErrorKind::NotExposed);
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc_narrow", "add")
    );
    assert!(
        error.message.contains("\"add\"") && error.message.contains("calc_narrow"),
        "{error:?}"
    );
    assert!(error.to_string().contains("calc_narrow.add"), "{error}");

    // Through the dynamic call_method.
    let base: &BaseProxy = narrow.base();
    let error = remote(
        base.call_method_blocking::<_, i64>("add", (1i64,))
            .unwrap_err(),
        RemoteErrorKind::NotExposed,
    );
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc_narrow", "add")
    );
    assert_eq!(narrow.get().unwrap(), 3, "the refused method did not run");
}

fn unknown_method_name_is_no_such_method() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (3,)).unwrap();
    let error = remote(
        calc.base()
            .call_method_blocking::<_, ()>("no_such_method", ())
            .unwrap_err(),
        RemoteErrorKind::NoSuchMethod,
    );
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc", "no_such_method")
    );
    assert!(
        error.message.contains("no_such_method") && error.message.contains("Calc"),
        "{error:?}"
    );
    assert_eq!(calc.get().unwrap(), 3);
}

fn wrong_argument_types_and_counts_are_bad_arguments() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (10,)).unwrap();
    let base = calc.base();

    let check = |error: Error, method: &str| {
        let error = remote(error, RemoteErrorKind::BadArguments);
        assert_eq!(
            (error.typeid.as_str(), error.method.as_str()),
            ("calc", method)
        );
        assert!(!error.message.is_empty());
    };
    // A number where a string is expected.
    check(
        base.call_method_blocking::<_, String>("greet", (7u64,))
            .unwrap_err(),
        "greet",
    );
    // A string where a number is expected.
    check(
        base.call_method_blocking::<_, i64>("add", ("text",))
            .unwrap_err(),
        "add",
    );
    // Too few arguments.
    check(
        base.call_method_blocking::<_, i64>("add", ()).unwrap_err(),
        "add",
    );
    // Too many arguments.
    check(
        base.call_method_blocking::<_, i64>("add", (1i64, 2i64))
            .unwrap_err(),
        "add",
    );
    check(
        base.call_method_blocking::<_, i64>("get", (1i64,))
            .unwrap_err(),
        "get",
    );
    // A factory's arguments are checked too.
    let error = remote(
        client.create_dynamic("calc", ("x", "y")).unwrap_err(),
        RemoteErrorKind::BadArguments,
    );
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc", "create")
    );

    assert_eq!(calc.get().unwrap(), 10, "no refused call ran");
    assert_eq!(calc.add(1).unwrap(), 11, "the connection still works");
}

fn fallible_method_delivers_typed_error() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (0,)).unwrap();

    assert_eq!(calc.checked_div(8, 2).unwrap(), Ok(4));
    assert_eq!(
        calc.checked_div(7, 0).unwrap(),
        Err(MathError::DivideByZero { numerator: 7 })
    );
    assert_eq!(
        calc.checked_div(i64::MIN, -1).unwrap(),
        Err(MathError::Overflow(format!("{} / -1", i64::MIN)))
    );

    let base = calc.base();
    let result: Result<i64, MathError> = base
        .call_blocking::<Fallible<i64, MathError>>("checked_div", (1i64, 0i64))
        .unwrap();
    assert_eq!(result, Err(MathError::DivideByZero { numerator: 1 }));

    // Read as a plain value, an `Err` is not silently mistaken for one.
    let error = base
        .call_method_blocking::<_, i64>("checked_div", (1i64, 0i64))
        .unwrap_err();
    assert!(
        matches!(&error, Error::Protocol(message) if message.contains("MathError")),
        "{error:?}"
    );
    assert_eq!(calc.checked_div(9, 3).unwrap(), Ok(3));
}

fn unencodable_result_is_an_encode_error_naming_typeid_and_method() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();
    let error = remote(calc.unencodable().unwrap_err(), RemoteErrorKind::Encode);
    assert!(error.message.contains("could not encode"), "{error:?}");
    assert_eq!(calc.get().unwrap(), 1, "the connection still works");
    assert_eq!(
        (error.typeid.as_str(), error.method.as_str()),
        ("calc", "unencodable"),
        "{error:?}"
    );
}

fn result_over_the_frame_limit_is_an_encode_error_and_connection_survives() {
    let mut config = ServerConfig::default();
    config.max_frame = 1024;
    let server = InProcessServer::start_with(
        registry(),
        Address::local_tcp(),
        manager::process::authkey(),
        config,
    );
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();
    assert_eq!(calc.repeat(1000).unwrap().len(), 1000);
    let error = remote(calc.repeat(5000).unwrap_err(), RemoteErrorKind::Encode);
    assert!(error.message.contains("1024"), "names the limit: {error:?}");
    assert_eq!(calc.get().unwrap(), 1, "the connection still works");
    assert_eq!(client.debug_info().unwrap().connections, 1);
}

fn reply_over_a_tiny_frame_limit_fails_the_call_instead_of_hanging() {
    // So small that even the error saying a reply is too large does not fit.
    let mut config = ServerConfig::default();
    config.max_frame = 48;
    let server = InProcessServer::start_with(
        registry(),
        Address::local_tcp(),
        manager::process::authkey(),
        config,
    );
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();
    let (done, result) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(calc.repeat(200).map(|text| text.len()));
    });
    match result.recv_timeout(TIMEOUT) {
        Ok(Err(Error::Remote(_) | Error::ConnectionClosed(_))) => {}
        Ok(other) => panic!("expected an error, got {other:?}"),
        Err(_) => panic!("the call got no answer at all: it hangs"),
    }
}

fn blocking_call_inside_async_runtime_is_an_error() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let error = calc.get().unwrap_err();
        assert!(matches!(error, Error::BlockingInAsync), "{error:?}");
        let error = client.number_of_objects().unwrap_err();
        assert!(matches!(error, Error::BlockingInAsync), "{error:?}");
        let error = BlockingManager::connect(server.address(), server.authkey()).unwrap_err();
        assert!(matches!(error, Error::BlockingInAsync), "{error:?}");
    });
    // Outside the runtime the same proxy works.
    assert_eq!(calc.get().unwrap(), 1);
}

/// Writes `bytes` on a freshly authenticated raw connection and waits for the server to close
/// it. Returns the bytes the server sent back before closing (none are expected).
async fn send_raw_and_wait_for_close(address: &Address, key: &AuthKey, bytes: &[u8]) -> Vec<u8> {
    let Address::Tcp(host_port) = address else {
        panic!("expected a TCP address")
    };
    let mut stream = tokio::net::TcpStream::connect(host_port.as_str())
        .await
        .unwrap();
    manager::auth::client_handshake(&mut stream, key)
        .await
        .expect("the handshake with the right key");
    // The server's welcome frame (protocol version and address) follows the handshake.
    let welcome_len = stream.read_u32().await.expect("the welcome frame's length") as usize;
    let mut welcome = vec![0u8; welcome_len];
    stream
        .read_exact(&mut welcome)
        .await
        .expect("the welcome frame");
    // The server may close while we are still writing: that is fine.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    within("the server to close the connection", async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    received
}

/// Polls until the server reports `connections` open connections.
fn wait_connections(observer: &BlockingManager, connections: u64) {
    wait_until(&format!("{connections} connections"), || {
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        if info.connections == connections {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    })
}

fn malformed_frame_closes_only_that_connection() {
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();

    let garbage: [&[u8]; 3] = [
        &[0xff; 16],      // an overlong varint where the request head starts
        &[0x09, 1, 2, 3], // a request variant that does not exist
        &[],              // an empty frame
    ];
    for (round, body) in garbage.into_iter().enumerate() {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        let received = server.runtime().block_on(send_raw_and_wait_for_close(
            server.address(),
            server.authkey(),
            &frame,
        ));
        assert!(received.is_empty(), "no answer to garbage: {received:?}");
        wait_connections(&client, 1);
        assert_eq!(
            calc.add(1).unwrap(),
            2 + round as i64,
            "the other client keeps working"
        );
    }
    let later = server.connect();
    assert_eq!(later.number_of_objects().unwrap(), 2);
}

fn oversized_frame_prefix_closes_only_that_connection() {
    // The default limit.
    let server = InProcessServer::tcp(registry());
    let client = server.connect();
    let calc = client.create(&CALC, (1,)).unwrap();
    let over_default = (manager::wire::DEFAULT_MAX_FRAME as u32 + 1).to_be_bytes();
    for prefix in [over_default, u32::MAX.to_be_bytes()] {
        let received = server.runtime().block_on(send_raw_and_wait_for_close(
            server.address(),
            server.authkey(),
            &prefix,
        ));
        assert!(received.is_empty(), "{received:?}");
        wait_connections(&client, 1);
        assert_eq!(calc.get().unwrap(), 1);
    }

    // A configured limit, with the whole oversized frame actually sent.
    let mut config = ServerConfig::default();
    config.max_frame = 1024;
    let server = InProcessServer::start_with(
        registry(),
        Address::local_tcp(),
        manager::process::authkey(),
        config,
    );
    let client = server.connect();
    let calc = client.create(&CALC, (2,)).unwrap();
    let mut frame = 1025u32.to_be_bytes().to_vec();
    frame.extend_from_slice(&[0u8; 1025]);
    let received = server.runtime().block_on(send_raw_and_wait_for_close(
        server.address(),
        server.authkey(),
        &frame,
    ));
    assert!(received.is_empty(), "{received:?}");
    wait_connections(&client, 1);
    assert_eq!(calc.get().unwrap(), 2);
    assert_eq!(
        calc.greet("x".repeat(900)).unwrap().len(),
        906,
        "frames under the limit still pass"
    );
}

fn client_vanishing_mid_call_leaves_server_running() {
    let server = InProcessServer::tcp(registry());
    let observer = server.connect();
    let gate = observer.create(&GATE, ()).unwrap();
    let gate_id = gate.base().token().id;
    let mut child = ChildGuard(
        Process::spawn(call_and_vanish, (server.address().clone(),)).expect("cannot spawn"),
    );
    wait_until("the child to wait at the gate", || {
        if !child.0.is_alive() {
            panic!("the child ended early: {:?}", child.0.join());
        }
        match gate.waiting() {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    let info = observer.debug_info().unwrap();
    assert_eq!(info.connections, 2);
    assert_eq!(
        info.objects.len(),
        2,
        "the gate and the child's calc: {info:?}"
    );

    child.0.kill().expect("cannot kill the child");

    // Its references go, whether the call it left behind is cancelled or still runs.
    wait_until("the child's references to be released", || {
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        let gate_refs = info
            .objects
            .iter()
            .find(|o| o.id == gate_id)
            .map(|o| o.refcount);
        if info.objects.len() == 1 && gate_refs == Some(2) {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });

    // Let the orphaned call finish if it still runs: its answer has nowhere to go.
    gate.open().unwrap();
    wait_until("the orphaned call to end", || match gate.waiting() {
        Ok(0) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    wait_connections(&observer, 1);

    // The server goes on serving old and new clients.
    assert!(!server.has_stopped());
    let fresh = server.connect();
    let calc = fresh.create(&CALC, (41,)).unwrap();
    assert_eq!(calc.add(1).unwrap(), 42);
    assert!(gate.wait_open().unwrap());
    assert_eq!(observer.number_of_objects().unwrap(), 2);
}

fn vanished_client_is_not_counted_while_its_orphaned_call_runs() {
    let server = InProcessServer::tcp(registry());
    let observer = server.connect();
    let gate = observer.create(&GATE, ()).unwrap();
    let mut child = ChildGuard(
        Process::spawn(call_and_vanish, (server.address().clone(),)).expect("cannot spawn"),
    );
    wait_until("the child to wait at the gate", || {
        if !child.0.is_alive() {
            panic!("the child ended early: {:?}", child.0.join());
        }
        match gate.waiting() {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(observer.debug_info().unwrap().connections, 2);
    child.0.kill().expect("cannot kill the child");

    // The peer is gone (the server has read EOF and released its references), so its
    // connection is no longer open, even though the call it left behind still runs.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_connections(&observer, 1);
    }));
    // Release the orphaned call whatever happened, so that nothing is left running.
    gate.open().unwrap();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

fn server_death_fails_pending_and_later_calls_with_connection_closed() {
    let socket = TempPath::socket("dying-server");
    let mut server =
        ChildGuard(Process::spawn(serve_at, (socket.path().to_path_buf(),)).expect("cannot spawn"));
    let base = BaseManager::new(socket.address());
    let manager = wait_until("the server to listen", || {
        if !server.0.is_alive() {
            panic!("the server ended early: {:?}", server.0.join());
        }
        base.connect().map_err(|e| e.to_string())
    });
    let gate = manager.create(&GATE, ()).unwrap();

    // A blocking call pending in another thread.
    let (done, pending) = mpsc::channel();
    std::thread::spawn({
        let gate = gate.clone();
        move || {
            let _ = done.send(gate.wait_open());
        }
    });
    // An async call pending on another connection.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let async_manager = runtime.block_on(base.connect_async()).unwrap();
    let async_gate = runtime
        .block_on(async_manager.create(&GATE_ASYNC, ()))
        .unwrap();
    let async_pending = runtime.spawn({
        let async_gate = async_gate.clone();
        async move { async_gate.wait_open().await }
    });
    wait_until("both calls to be pending in the server", || {
        match gate.waiting() {
            Ok(2) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });

    server.0.kill().expect("cannot kill the server");

    let result = pending
        .recv_timeout(TIMEOUT)
        .expect("the pending blocking call hung after the server died");
    assert_connection_closed(result);
    let result = runtime
        .block_on(async { within("the pending async call", async_pending).await })
        .expect("the async task panicked");
    assert_connection_closed(result);

    // Later calls fail at once, with the same clear error.
    assert!(manager.connection().is_closed());
    assert_connection_closed(gate.waiting());
    assert_connection_closed(gate.clone().open());
    assert_connection_closed(manager.number_of_objects());
    assert_connection_closed(manager.create(&CALC, (1,)));
    runtime.block_on(async {
        assert_connection_closed(within("a later async call", async_gate.waiting()).await);
        assert_connection_closed(
            within("a later create", async_manager.create(&GATE_ASYNC, ())).await,
        );
    });
    drop((async_gate, async_manager));
    runtime.shutdown_timeout(Duration::from_secs(5));
}

/// Serves `registry()` on a fresh runtime in this process, connects one async client, and
/// runs `body` with the client's manager and the server's shutdown handle; `served` resolves
/// when `serve_forever` returns.
fn with_in_process_server<F, Fut>(body: F)
where
    F: FnOnce(
        Manager,
        manager::ShutdownHandle,
        tokio::task::JoinHandle<manager::Result<()>>,
    ) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = AuthKey::random();
        let server = Server::bind(
            registry(),
            &Address::local_tcp(),
            key.clone(),
            ServerConfig::default(),
        )
        .await
        .unwrap();
        let address = server.address().clone();
        let handle = server.shutdown_handle();
        let served = tokio::spawn(server.serve_forever());
        let manager = Manager::connect(&address, &key).await.unwrap();
        body(manager, handle, served).await;
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
}

fn in_process_shutdown_closes_idle_connections() {
    with_in_process_server(|manager, handle, served| async move {
        let calc = manager
            .create_dynamic("calc", (1i64,))
            .await
            .map(CalcProxy::from_base)
            .unwrap();
        assert_eq!(calc.get().await.unwrap(), 1);
        handle.shutdown();
        within("serve_forever to return", served)
            .await
            .unwrap()
            .unwrap();
        let result = within("a call after shutdown", calc.get()).await;
        assert_connection_closed(result);
        assert_connection_closed(
            within("a create after shutdown", manager.number_of_objects()).await,
        );
    });
}

fn in_process_shutdown_fails_pending_calls_with_connection_closed() {
    with_in_process_server(|manager, handle, served| async move {
        let gate = manager.create(&GATE_ASYNC, ()).await.unwrap();
        let pending = tokio::spawn({
            let gate = gate.clone();
            async move { gate.wait_open().await }
        });
        common::wait_until_async("the call to be pending", || async {
            match gate.waiting().await {
                Ok(1) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;

        handle.shutdown();
        within("serve_forever to return", served)
            .await
            .unwrap()
            .unwrap();
        // The server was asked to close its connections: the pending call must fail now, not
        // hang until the method happens to return.
        let result = within("the pending call after shutdown", pending)
            .await
            .expect("the task panicked");
        assert_connection_closed(result);
        assert_connection_closed(gate.waiting().await);
    });
}

fn main() {
    manager::init();
    common::quiet_intentional_panics();
    common::run_tests(vec![
        case!(panic_in_method_is_error_for_caller_and_server_keeps_serving),
        case!(remote_error_carries_typeid_method_and_message),
        case!(a_typeid_declared_with_another_types_proxy_is_refused_at_create_naming_both),
        case!(calling_non_exposed_method_names_method_and_typeid),
        case!(unknown_method_name_is_no_such_method),
        case!(wrong_argument_types_and_counts_are_bad_arguments),
        case!(fallible_method_delivers_typed_error),
        case!(unencodable_result_is_an_encode_error_naming_typeid_and_method),
        case!(result_over_the_frame_limit_is_an_encode_error_and_connection_survives),
        case!(reply_over_a_tiny_frame_limit_fails_the_call_instead_of_hanging),
        case!(blocking_call_inside_async_runtime_is_an_error),
        case!(malformed_frame_closes_only_that_connection),
        case!(oversized_frame_prefix_closes_only_that_connection),
        case!(client_vanishing_mid_call_leaves_server_running),
        case!(server_death_fails_pending_and_later_calls_with_connection_closed),
        case!(vanished_client_is_not_counted_while_its_orphaned_call_runs),
        case!(in_process_shutdown_closes_idle_connections),
        case!(in_process_shutdown_fails_pending_calls_with_connection_closed),
    ]);
}
