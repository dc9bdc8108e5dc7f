//! Connections: TCP and Unix-socket addresses, authkey checks, and many concurrent calls (from
//! tasks and from threads) multiplexed over one connection, with real sockets.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use common::{wait_until_async, within, InProcessServer, TempPath, TIMEOUT};
use manager::{
    Address, AuthKey, BaseManager, BaseProxy, BlockingManager, Connection, Error, Manager, Proxy,
    Register, Registry, Server, ServerConfig, ShutdownHandle, Typeid,
};
use tokio::io::AsyncReadExt;

/// Echoes its arguments, counts calls, and can wait for a level set by another call.
#[derive(Default, Debug)]
pub struct Echo {
    calls: AtomicU64,
    level: AtomicU64,
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
impl Echo {
    /// Returns its arguments.
    pub fn echo(&self, tag: u64, text: String) -> (u64, String) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        (tag, text)
    }

    /// Returns `tag` after `delay_us` microseconds, so that responses come back out of order.
    pub async fn echo_later(&self, tag: u64, delay_us: u64) -> u64 {
        tokio::time::sleep(Duration::from_micros(delay_us)).await;
        self.calls.fetch_add(1, Ordering::SeqCst);
        tag
    }

    /// Waits (without holding a server thread) until the level reaches `n`, for at most a
    /// minute, and returns the level.
    pub async fn wait_for(&self, n: u64) -> u64 {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        // Counted out even if the server cancels the call.
        let _waiting = CountedOut(&self.waiting);
        for _ in 0..60_000 {
            if self.level.load(Ordering::SeqCst) >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.level.load(Ordering::SeqCst)
    }

    /// Sets the level.
    pub fn set(&self, n: u64) {
        self.level.store(n, Ordering::SeqCst);
    }

    /// How many `wait_for` calls are waiting.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::SeqCst)
    }

    /// How many echo calls ran.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

const ECHO: Typeid<EchoProxy> = Typeid::new("echo");
const ECHO_BLOCKING: Typeid<EchoBlockingProxy> = Typeid::new("echo");

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(Register::factory("echo", |(): ()| Echo::default()))
        .unwrap();
    registry
}

/// A server serving on the current runtime.
struct Running {
    address: Address,
    handle: ShutdownHandle,
    served: tokio::task::JoinHandle<manager::Result<()>>,
}

impl Running {
    async fn start(address: Address, key: &AuthKey) -> Running {
        Self::start_with(address, key, ServerConfig::default()).await
    }

    async fn start_with(address: Address, key: &AuthKey, config: ServerConfig) -> Running {
        let server = Server::bind(registry(), &address, key.clone(), config)
            .await
            .expect("cannot bind the server");
        Running {
            address: server.address().clone(),
            handle: server.shutdown_handle(),
            served: tokio::spawn(server.serve_forever()),
        }
    }

    async fn stop(self) {
        self.handle.shutdown();
        within("serve_forever to return", self.served)
            .await
            .expect("the server task panicked")
            .expect("serve_forever failed");
    }
}

/// Connects, creates an object, calls it, and checks what the server reports about itself.
async fn round_trip(address: &Address, key: &AuthKey) {
    let manager = Manager::connect(address, key)
        .await
        .expect("cannot connect");
    let echo = manager.create(&ECHO, ()).await.unwrap();
    assert_eq!(
        echo.echo(7, "seven".into()).await.unwrap(),
        (7, "seven".to_string())
    );
    assert_eq!(&echo.base().token().address, address);
    let mut info = manager.debug_info().await.unwrap();
    assert_eq!(&info.address, address);
    assert_eq!(info.objects.len(), 1);
    // A connection closed just before (an earlier round trip's, or the probe a second bind
    // makes of a live socket) is counted until the server has read its end.
    let settled = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while info.connections != 1 && std::time::Instant::now() < settled {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        info = manager.debug_info().await.unwrap();
    }
    assert_eq!(info.connections, 1);
}

#[tokio::test]
async fn tcp_address_serves_clients() {
    let key = AuthKey::random();
    let server = Running::start(Address::local_tcp(), &key).await;
    match &server.address {
        Address::Tcp(host_port) => {
            let addr: std::net::SocketAddr = host_port.parse().expect("a socket address");
            assert!(addr.ip().is_loopback());
            assert_ne!(addr.port(), 0, "the server reports the port it got");
        }
        other => panic!("expected a TCP address, got {other}"),
    }
    round_trip(&server.address, &key).await;
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_address_serves_clients() {
    let key = AuthKey::random();
    let socket = TempPath::socket("unix");
    let server = Running::start(socket.address(), &key).await;
    assert_eq!(server.address, socket.address());
    assert!(socket.path().exists());
    round_trip(&server.address, &key).await;
    server.stop().await;
    assert!(
        !socket.path().exists(),
        "the socket file is removed when the server stops"
    );
}

#[tokio::test]
async fn wrong_authkey_gives_auth_error_and_server_keeps_serving() {
    let key = AuthKey::from("the right key");
    let socket = TempPath::socket("auth");
    for address in [Address::local_tcp(), socket.address()] {
        let server = Running::start(address, &key).await;
        for wrong in [
            AuthKey::from("the wrong key"),
            AuthKey::from(""),
            AuthKey::random(),
        ] {
            let error = Manager::connect(&server.address, &wrong).await.unwrap_err();
            assert!(matches!(error, Error::Auth(_)), "{error:?}");
            // Every refused client is followed by a client with the right key.
            round_trip(&server.address, &key).await;
        }
        let error = BaseManager::new(server.address.clone())
            .authkey("another wrong key")
            .connect_async()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Auth(_)), "{error:?}");
        round_trip(&server.address, &key).await;
        server.stop().await;
    }
}

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout_and_others_are_served() {
    let key = AuthKey::random();
    let mut config = ServerConfig::default();
    config.handshake_timeout = Duration::from_millis(200);
    let server = Running::start_with(Address::local_tcp(), &key, config).await;
    let Address::Tcp(host_port) = &server.address else {
        panic!("expected a TCP address")
    };
    let mut silent = tokio::net::TcpStream::connect(host_port.as_str())
        .await
        .unwrap();
    let mut hello = [0u8; 40];
    within("the server's greeting", silent.read_exact(&mut hello))
        .await
        .unwrap();
    assert_eq!(&hello[..8], manager::auth::MAGIC);

    // While it says nothing, other clients are served.
    round_trip(&server.address, &key).await;

    // Then the server gives up on it and closes the socket.
    within("the server to close the silent connection", async {
        let mut buf = [0u8; 64];
        if let Ok(n @ 1..) = silent.read(&mut buf).await {
            panic!("unexpected {n} bytes from the server");
        }
    })
    .await;
    round_trip(&server.address, &key).await;
    server.stop().await;
}

#[tokio::test]
async fn unix_socket_in_use_is_refused_and_stale_socket_is_replaced() {
    let key = AuthKey::random();
    let socket = TempPath::socket("stale");
    // A stale socket file: bound, then its listener dropped without removing the file.
    drop(std::os::unix::net::UnixListener::bind(socket.path()).unwrap());
    assert!(socket.path().exists());
    let server = Running::start(socket.address(), &key).await;
    round_trip(&server.address, &key).await;

    // A live server's socket is not taken over.
    match Server::bind(
        registry(),
        &socket.address(),
        key.clone(),
        ServerConfig::default(),
    )
    .await
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse, "{e}"),
        Err(other) => panic!("expected an address-in-use error, got {other:?}"),
        Ok(_) => panic!("a second server bound the path of a live one"),
    }
    round_trip(&server.address, &key).await;

    // A file that is not a socket is never replaced.
    let file = TempPath::file("not-a-socket");
    std::fs::write(file.path(), "keep me").unwrap();
    match Server::bind(
        registry(),
        &file.address(),
        key.clone(),
        ServerConfig::default(),
    )
    .await
    {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists, "{e}"),
        Err(other) => panic!("expected an already-exists error, got {other:?}"),
        Ok(_) => panic!("a server replaced a regular file"),
    }
    assert_eq!(std::fs::read_to_string(file.path()).unwrap(), "keep me");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_connection_carries_concurrent_calls_from_many_tasks() {
    const TASKS: u64 = 32;
    const CALLS: u64 = 100;
    let key = AuthKey::random();
    let server = Running::start(Address::local_tcp(), &key).await;
    let manager = Manager::connect(&server.address, &key).await.unwrap();
    let echo = manager.create(&ECHO, ()).await.unwrap();

    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let echo = echo.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..CALLS {
                let tag = task * 1_000_000 + i;
                // Varying delays make the server answer out of order.
                let got = echo.echo_later(tag, (tag * 7919) % 700).await.unwrap();
                assert_eq!(got, tag);
                let (got, text) = echo.echo(tag, format!("text {tag}")).await.unwrap();
                assert_eq!((got, text), (tag, format!("text {tag}")));
            }
        }));
    }
    for task in tasks {
        within("a calling task", task)
            .await
            .expect("a calling task failed");
    }
    assert_eq!(echo.calls().await.unwrap(), TASKS * CALLS * 2);
    let info = manager.debug_info().await.unwrap();
    assert_eq!(info.connections, 1, "every call went over one connection");
    assert_eq!(info.objects[0].refcount, 1, "every clone was released");
    drop((echo, manager));
    server.stop().await;
}

#[test]
fn one_connection_carries_concurrent_blocking_calls_from_many_threads() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 200;
    let server = InProcessServer::start(registry(), Address::local_tcp(), AuthKey::random());
    let manager = server.connect();
    let echo = manager.create(&ECHO_BLOCKING, ()).unwrap();

    let (done, results) = mpsc::channel();
    for thread in 0..THREADS {
        let echo = echo.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                for i in 0..CALLS {
                    let tag = thread * 1_000_000 + i;
                    let got = echo.echo_later(tag, (tag * 104_729) % 500).unwrap();
                    assert_eq!(got, tag);
                    let (got, text) = echo.echo(tag, format!("thread {thread}")).unwrap();
                    assert_eq!((got, text), (tag, format!("thread {thread}")));
                }
            }));
            let _ = done.send(outcome.is_ok());
        });
    }
    drop(done);
    for _ in 0..THREADS {
        let ok = results
            .recv_timeout(TIMEOUT)
            .expect("a calling thread did not finish in time");
        assert!(ok, "a calling thread got a wrong result");
    }
    assert_eq!(echo.calls().unwrap(), THREADS * CALLS * 2);
    let info = manager.debug_info().unwrap();
    assert_eq!(info.connections, 1, "every call went over one connection");
}

/// Blocked threads read their own replies off the socket while async tasks wait on the same
/// connection: every reply must reach its caller, whoever reads it, with large replies arriving
/// in many pieces and a timed-out call's late reply read and dropped on the way.
/// The connection is made on the background I/O thread (a blocking manager), or on a runtime
/// with two workers (`on_runtime`), where the I/O driver may run beside the reader task.
fn blocking_and_async_callers_share_one_connection(address: Address, on_runtime: bool) {
    const THREADS: u64 = 4;
    const TASKS: u64 = 4;
    const CALLS: u64 = 150;
    let server = InProcessServer::start(registry(), address, AuthKey::random());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let base = if on_runtime {
        runtime.block_on(async {
            let manager = Manager::connect(server.address(), server.authkey())
                .await
                .unwrap();
            manager.create(&ECHO, ()).await.unwrap().base().clone()
        })
    } else {
        let manager = server.connect();
        manager.create(&ECHO_BLOCKING, ()).unwrap().base().clone()
    };

    // A call that misses its deadline leaves a reply to come later, which whoever reads next
    // must skip.
    let hasty = base.with_timeout(Duration::from_millis(20));
    match hasty.call_method_blocking::<_, u64>("echo_later", (1u64, 300_000u64)) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }

    let big = "x".repeat(1 << 20);
    let (done, results) = mpsc::channel();
    for thread in 0..THREADS {
        let base = base.clone();
        let done = done.clone();
        let big = big.clone();
        std::thread::spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
                for i in 0..CALLS {
                    let tag = thread * 1_000_000 + i;
                    let got: u64 = base
                        .call_method_blocking("echo_later", (tag, (tag * 7919) % 400))
                        .unwrap();
                    assert_eq!(got, tag);
                    let text = if i % 25 == 0 {
                        big.clone()
                    } else {
                        format!("t{tag}")
                    };
                    let got: (u64, String) = base
                        .call_method_blocking("echo", (tag, text.clone()))
                        .unwrap();
                    assert_eq!(got, (tag, text));
                }
            }));
            let _ = done.send(outcome.is_ok());
        });
    }
    let tasks: Vec<_> = (0..TASKS)
        .map(|task| {
            let base = base.clone();
            let big = big.clone();
            runtime.spawn(async move {
                for i in 0..CALLS {
                    let tag = 500_000_000 + task * 1_000_000 + i;
                    let got: u64 = base
                        .call_method("echo_later", (tag, (tag * 104_729) % 400))
                        .await
                        .unwrap();
                    assert_eq!(got, tag);
                    let text = if i % 25 == 0 {
                        big.clone()
                    } else {
                        format!("a{tag}")
                    };
                    let got: (u64, String) =
                        base.call_method("echo", (tag, text.clone())).await.unwrap();
                    assert_eq!(got, (tag, text));
                }
            })
        })
        .collect();
    drop(done);
    for _ in 0..THREADS {
        let ok = results
            .recv_timeout(TIMEOUT)
            .expect("a calling thread did not finish in time");
        assert!(ok, "a calling thread got a wrong result");
    }
    runtime.block_on(async {
        for task in tasks {
            within("a calling task", task)
                .await
                .expect("a calling task failed");
        }
    });
    // Every call ran once (the hasty one was cancelled by the server when it timed out).
    let calls: u64 = base.call_method_blocking("calls", ()).unwrap();
    let all = (THREADS + TASKS) * CALLS * 2;
    assert!(calls == all || calls == all + 1, "{calls} calls for {all}");
    let info = server.connect().debug_info().unwrap();
    assert_eq!(
        info.connections, 2,
        "every call went over one connection (and this question over another)"
    );
}

#[test]
fn blocking_and_async_callers_share_one_tcp_connection() {
    blocking_and_async_callers_share_one_connection(Address::local_tcp(), false);
}

#[test]
fn blocking_and_async_callers_share_one_unix_connection() {
    let socket = TempPath::socket("mixed");
    blocking_and_async_callers_share_one_connection(Address::unix(socket.path()), false);
}

#[test]
fn blocking_and_async_callers_share_a_connection_made_on_a_runtime() {
    blocking_and_async_callers_share_one_connection(Address::local_tcp(), true);
}

#[test]
fn proxies_are_send_sync_clone() {
    fn check<T: Send + Sync + Clone + 'static>() {}
    check::<EchoProxy>();
    check::<EchoBlockingProxy>();
    check::<BaseProxy>();
    check::<Manager>();
    check::<BlockingManager>();
    check::<Connection>();
    check::<Typeid<EchoProxy>>();
}

// current_thread: the server, the client and the waiting call share one thread, so a call that
// blocked it would stop everything.
#[tokio::test]
async fn waiting_async_method_does_not_block_other_calls() {
    let key = AuthKey::random();
    let server = Running::start(Address::local_tcp(), &key).await;
    let manager = Manager::connect(&server.address, &key).await.unwrap();
    let echo = manager.create(&ECHO, ()).await.unwrap();

    let waiter = tokio::spawn({
        let echo = echo.clone();
        async move { echo.wait_for(3).await }
    });
    wait_until_async("the call to wait in the server", || async {
        match echo.waiting().await {
            Ok(1) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    for level in 1..=2 {
        let answer = within(
            "a call behind the waiting one",
            echo.echo(level, "go".into()),
        )
        .await;
        assert_eq!(answer.unwrap(), (level, "go".to_string()));
        within("set", echo.set(level)).await.unwrap();
    }
    assert_eq!(
        within("waiting()", echo.waiting()).await.unwrap(),
        1,
        "the level is below 3: the call still waits"
    );
    assert!(!waiter.is_finished());

    within("set", echo.set(3)).await.unwrap();
    let level = within("the waiting call", waiter)
        .await
        .expect("the waiting task panicked")
        .expect("the waiting call failed");
    assert_eq!(level, 3);
    drop((echo, manager));
    server.stop().await;
}

/// Four threads on one blocking proxy and two async tasks on the same connection call without
/// any deadline, as in the hang found in a benchmark run (one caller parked for good, its
/// reply unread in the socket, the reader task asleep): every call must return within a
/// generous ceiling (see `common::stress`). The blocking callers read the socket themselves
/// and the reader task reads the tasks' replies, so the socket changes hands all the time. The
/// connection is made on the background I/O thread (a blocking manager), or on a runtime with
/// two workers (`on_runtime`), where the I/O driver may run beside the reader task.
fn threads_and_tasks_share_a_connection_without_deadlines(address: Address, on_runtime: bool) {
    const CALLS: u64 = 20_000;
    let server = InProcessServer::start(registry(), address, AuthKey::random());
    let echo = if on_runtime {
        server.runtime().block_on(async {
            let manager = Manager::connect(server.address(), server.authkey())
                .await
                .unwrap();
            let echo = manager.create(&ECHO, ()).await.unwrap();
            assert_eq!(manager.connection().default_timeout(), None);
            echo.into_blocking()
        })
    } else {
        let manager = server.connect();
        assert_eq!(manager.connection().default_timeout(), None);
        manager.create(&ECHO_BLOCKING, ()).unwrap()
    };
    let async_echo = echo.clone().into_async();
    common::stress::every_call_returns(
        4,
        2,
        CALLS,
        move |tag| echo.echo(tag, String::new()).unwrap().0,
        move |tag| {
            let echo = async_echo.clone();
            async move { echo.echo(tag, String::new()).await.unwrap().0 }
        },
    );
}

#[test]
fn threads_and_tasks_share_a_tcp_connection_without_deadlines() {
    threads_and_tasks_share_a_connection_without_deadlines(Address::local_tcp(), false);
}

#[test]
fn threads_and_tasks_share_a_unix_connection_without_deadlines() {
    let socket = TempPath::socket("no-deadlines");
    threads_and_tasks_share_a_connection_without_deadlines(Address::unix(socket.path()), false);
}

#[test]
fn threads_and_tasks_share_a_tcp_connection_made_on_a_runtime_without_deadlines() {
    threads_and_tasks_share_a_connection_without_deadlines(Address::local_tcp(), true);
}

/// A peer that accepts the connection and never answers the handshake (a server whose host
/// vanished behind a live listener, a wrong port): `connect()` gives up after its timeout
/// with a `Timeout` error instead of waiting for ever.
#[test]
fn connect_gives_up_after_its_timeout() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = Address::from(listener.local_addr().unwrap());
    let silent = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        drop(stream);
    });
    let started = std::time::Instant::now();
    let result = manager::BaseManager::new(address)
        .connect_timeout(Duration::from_millis(500))
        .connect();
    match result {
        Err(manager::Error::Timeout(message)) => {
            assert!(message.contains("connect_timeout"), "{message}")
        }
        Err(other) => panic!("expected a Timeout, got {other}"),
        Ok(_) => panic!("connected to a peer that never answered"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "connect() waited for the silent peer"
    );
    silent.join().unwrap();
}
