//! TLS (the `tls` feature): a loopback server with TLS and an authkey, clients that trust it or
//! not, clients without TLS, client certificates, a TLS server started in a child process,
//! proxies that travel to spawned processes (as arguments, inside a queue and a dict) and
//! reconnect with the TLS configuration those inherit (the `manager` command with TLS is tested
//! in `manager-cli/tests/tls.rs`). Certificates are made at run time (`common/pki.rs`).
//!
//! This binary starts a server process by re-running itself, so it has its own `main`
//! (`harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;
#[path = "common/pki.rs"]
mod pki;
#[path = "tls/travel.rs"]
mod travel;
use travel::{
    a_process_without_tls_configuration_fails_with_a_tls_error,
    proxies_that_travel_reconnect_with_the_inherited_tls_configuration,
};

use std::path::Path;

use common::InProcessServer;
use manager::{
    Address, AuthKey, BaseManager, BlockingManager, ConnectOptions, Error, Manager, Register,
    Registry, Server, ServerConfig, TlsClientConfig, TlsServerConfig, Typeid,
};
use pki::Pki;

/// A counter, the object the tests create and call.
#[derive(Debug)]
pub struct Counter {
    value: i64,
}

#[manager::shared]
impl Counter {
    /// Adds `n` and returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value += n;
        self.value
    }

    /// Gives `data` back: a large frame through the TLS session.
    pub fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

const COUNTER: Typeid<CounterBlockingProxy, (i64,)> = Typeid::new("counter");
const COUNTER_ASYNC: Typeid<CounterProxy, (i64,)> = Typeid::new("counter");

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("counter", |(value,): (i64,)| Counter {
        value,
    }))?;
    Ok(registry)
}

pub(crate) fn config_with(tls: TlsServerConfig) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.tls = Some(tls);
    config
}

pub(crate) fn tls_server(tls: TlsServerConfig, authkey: &AuthKey) -> InProcessServer {
    InProcessServer::start_with(
        registry().expect("the registry"),
        Address::local_tcp(),
        authkey.clone(),
        config_with(tls),
    )
}

pub(crate) fn connect(
    server: &InProcessServer,
    tls: TlsClientConfig,
) -> manager::Result<BlockingManager> {
    BlockingManager::connect_with(
        server.address(),
        server.authkey(),
        &ConnectOptions::new().tls(tls),
    )
}

/// Creates a counter through `manager` and calls it.
fn use_counter(manager: &BlockingManager) {
    let counter = manager.create(&COUNTER, (40,)).expect("create over TLS");
    assert_eq!(counter.add(2).expect("call over TLS"), 42);
}

fn expect_tls(result: manager::Result<BlockingManager>, says: &str) -> String {
    match result {
        Err(Error::Tls(message)) => {
            assert!(message.contains(says), "{says:?} is not in {message:?}");
            message
        }
        Err(other) => panic!("expected a TLS error saying {says:?}, got {other:?}: {other}"),
        Ok(_) => panic!("expected a TLS error saying {says:?}, and the connection was made"),
    }
}

fn client_that_trusts_the_ca_creates_and_calls() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &AuthKey::random());
    use_counter(&connect(&server, pki.client()).unwrap());
    // The name may be the IP address the certificate is issued for too.
    let by_ip = TlsClientConfig::new(pki.path("ca.pem"), "127.0.0.1");
    let manager = connect(&server, by_ip).unwrap();
    use_counter(&manager);
    // Large frames, many calls at once, both ways through the TLS session.
    let counter = manager.create(&COUNTER, (0,)).unwrap();
    std::thread::scope(|scope| {
        for t in 0..4u8 {
            let counter = &counter;
            scope.spawn(move || {
                for i in 0..8usize {
                    let data = vec![t; (i + 1) * 300_000];
                    assert_eq!(counter.echo(data.clone()).unwrap(), data);
                }
            });
        }
    });
    // The async client, through BaseManager.
    let base = BaseManager::new(server.address().clone())
        .authkey(server.authkey().clone())
        .tls(pki.client());
    server.runtime().block_on(async {
        let manager: Manager = base.connect_async().await.unwrap();
        let counter = manager.create(&COUNTER_ASYNC, (1,)).await.unwrap();
        assert_eq!(counter.add(1).await.unwrap(), 2);
    });
}

/// Four threads on one blocking proxy and two async tasks share one TLS connection and call
/// without any deadline: every call must return within a generous ceiling (see
/// `common::stress`). Over TLS the reader task reads every reply (the session lives on the
/// I/O thread), for blocked threads and tasks alike.
fn threads_and_tasks_share_a_tls_connection_without_deadlines() {
    const CALLS: u64 = 5_000;
    let pki = Pki::new();
    let server = tls_server(pki.server(), &AuthKey::random());
    let manager = connect(&server, pki.client()).unwrap();
    assert_eq!(manager.connection().default_timeout(), None);
    let counter = manager.create(&COUNTER, (0,)).unwrap();
    let async_counter = counter.clone().into_async();
    let tag_of = |data: Vec<u8>| u64::from_le_bytes(data.try_into().expect("8 bytes back"));
    common::stress::every_call_returns(
        4,
        2,
        CALLS,
        move |tag| tag_of(counter.echo(tag.to_le_bytes().to_vec()).unwrap()),
        move |tag| {
            let counter = async_counter.clone();
            async move { tag_of(counter.echo(tag.to_le_bytes().to_vec()).await.unwrap()) }
        },
    );
}

fn authkey_is_still_required_over_tls() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &AuthKey::random());
    let wrong = BlockingManager::connect_with(
        server.address(),
        &AuthKey::from("not the key"),
        &ConnectOptions::new().tls(pki.client()),
    );
    assert!(matches!(wrong, Err(Error::Auth(_))), "{wrong:?}");
    use_counter(&connect(&server, pki.client()).unwrap());
}

fn client_that_does_not_trust_the_server_is_refused_and_the_server_goes_on() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &AuthKey::random());
    let wrong_ca = TlsClientConfig::new(pki.path("other-ca.pem"), "localhost");
    let message = expect_tls(connect(&server, wrong_ca), "not trusted");
    assert!(message.contains("UnknownIssuer"), "{message}");
    let wrong_name = TlsClientConfig::new(pki.path("ca.pem"), "elsewhere.test");
    expect_tls(connect(&server, wrong_name), "not trusted");
    use_counter(&connect(&server, pki.client()).unwrap());
}

fn client_without_tls_is_told_the_server_requires_it_and_the_server_goes_on() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &AuthKey::random());
    let plain = BlockingManager::connect(server.address(), server.authkey());
    expect_tls(plain, "requires TLS");
    use_counter(&connect(&server, pki.client()).unwrap());
}

fn tls_client_of_a_server_without_tls_is_told_so() {
    let pki = Pki::new();
    let authkey = AuthKey::random();
    let server = InProcessServer::start(registry().unwrap(), Address::local_tcp(), authkey);
    expect_tls(connect(&server, pki.client()), "did not answer in TLS");
    use_counter(&server.connect());
}

fn client_certificates_when_required() {
    let pki = Pki::new();
    let required = pki.server().client_ca(pki.path("ca.pem"));
    let server = tls_server(required, &AuthKey::random());
    use_counter(&connect(&server, pki.client_with_cert()).unwrap());
    expect_tls(
        connect(&server, pki.client()),
        "requires a client certificate",
    );
    let stranger = pki
        .client()
        .client_cert(pki.path("stranger.pem"), pki.path("stranger.key"));
    expect_tls(connect(&server, stranger), "server refused our certificate");
    // A client certificate does not replace the authkey.
    let wrong_key = BlockingManager::connect_with(
        server.address(),
        &AuthKey::from("not the key"),
        &ConnectOptions::new().tls(pki.client_with_cert()),
    );
    assert!(matches!(wrong_key, Err(Error::Auth(_))), "{wrong_key:?}");
    use_counter(&connect(&server, pki.client_with_cert()).unwrap());
}

fn start_serves_tls_in_a_child_process() {
    let pki = Pki::new();
    let authkey = AuthKey::random();
    let base = BaseManager::new(Address::local_tcp())
        .authkey(authkey.clone())
        .server_tls(pki.server().client_ca(pki.path("ca.pem")))
        .tls(pki.client_with_cert());
    let manager = base.start(registry).expect("start a TLS server process");
    use_counter(&manager);
    let address = manager.address().clone();
    // Another client of the same manager settings reaches it; one without TLS does not.
    let again = BaseManager::new(address.clone())
        .authkey(authkey.clone())
        .tls(pki.client_with_cert())
        .connect()
        .unwrap();
    use_counter(&again);
    let plain = BlockingManager::connect(&address, &authkey);
    expect_tls(plain, "requires TLS");
    drop(again);
    manager.shutdown().unwrap();
}

fn bad_configurations_are_refused_clearly() {
    let pki = Pki::new();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bind = |address: Address, tls: TlsServerConfig| {
        runtime.block_on(Server::bind(
            registry().unwrap(),
            &address,
            AuthKey::random(),
            config_with(tls),
        ))
    };
    let socket = common::TempPath::socket("tls");
    match bind(socket.address(), pki.server()) {
        Err(Error::Tls(message)) => assert!(message.contains("Unix socket"), "{message}"),
        other => panic!("TLS on a Unix socket: {:?}", other.map(|_| ())),
    }
    assert!(!socket.path().exists(), "nothing was bound");
    let missing = TlsServerConfig::new(pki.path("missing.pem"), pki.path("server.key"));
    match bind(Address::local_tcp(), missing) {
        Err(Error::Tls(message)) => assert!(message.contains("missing.pem"), "{message}"),
        other => panic!("a missing certificate file: {:?}", other.map(|_| ())),
    }
    let mismatched = TlsServerConfig::new(pki.path("server.pem"), pki.path("client.key"));
    assert!(matches!(
        bind(Address::local_tcp(), mismatched),
        Err(Error::Tls(_))
    ));
    let unix = BlockingManager::connect_with(
        &socket.address(),
        &AuthKey::random(),
        &ConnectOptions::new().tls(pki.client()),
    );
    expect_tls(unix, "Unix socket");
    let no_ca = TlsClientConfig::new(Path::new("/nonexistent/ca.pem"), "localhost");
    let address = Address::tcp("127.0.0.1:9");
    let missing_ca = BlockingManager::connect_with(
        &address,
        &AuthKey::random(),
        &ConnectOptions::new().tls(no_ca),
    );
    expect_tls(missing_ca, "/nonexistent/ca.pem");
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(client_that_trusts_the_ca_creates_and_calls),
        case!(threads_and_tasks_share_a_tls_connection_without_deadlines),
        case!(authkey_is_still_required_over_tls),
        case!(client_that_does_not_trust_the_server_is_refused_and_the_server_goes_on),
        case!(client_without_tls_is_told_the_server_requires_it_and_the_server_goes_on),
        case!(tls_client_of_a_server_without_tls_is_told_so),
        case!(client_certificates_when_required),
        case!(start_serves_tls_in_a_child_process),
        case!(bad_configurations_are_refused_clearly),
        case!(proxies_that_travel_reconnect_with_the_inherited_tls_configuration),
        case!(a_process_without_tls_configuration_fails_with_a_tls_error),
    ]);
}
