//! TLS beyond the first process: proxies of a TLS server passed to spawned processes (as
//! arguments, and inside a queue and a dict of another server) reconnect with the default TLS
//! configuration the child inherited; a child without one fails with `Error::Tls` saying why.

use manager::sync::{DictBlockingProxy, ListBlockingProxy, QueueBlockingProxy};
use manager::{Error, Process};

use super::common::{ChildGuard, InProcessServer, TempPath};
use super::pki::Pki;
use super::{connect, tls_server, CounterBlockingProxy, COUNTER};

/// Sets this process's default client TLS configuration for as long as it lives, and clears it
/// when dropped (also when a test fails).
struct DefaultTls;

impl DefaultTls {
    fn set(config: Option<manager::TlsClientConfig>) -> DefaultTls {
        manager::tls::set_default_client_config(config);
        DefaultTls
    }
}

impl Drop for DefaultTls {
    fn drop(&mut self) {
        manager::tls::set_default_client_config(None);
    }
}

/// In a spawned child: adds `n` to the counter it was given, whose proxy reconnects to its TLS
/// server with the configuration the child inherited.
#[manager::entry]
fn add_in_child(counter: CounterBlockingProxy, n: i64) -> manager::Result<()> {
    counter.add(n)?;
    Ok(())
}

/// In a spawned child: takes a counter's proxy out of `queue` and another out of `dict` (both
/// served without TLS on a Unix socket; the counters live on a TLS server), adds 10 through
/// each, and writes what happened to `report`.
#[manager::entry]
fn take_and_add(
    queue: QueueBlockingProxy<CounterBlockingProxy>,
    dict: DictBlockingProxy<String, CounterBlockingProxy>,
    report: ListBlockingProxy<String>,
) -> manager::Result<()> {
    let describe = |taken: manager::Result<CounterBlockingProxy>| match taken {
        Ok(counter) => match counter.add(10) {
            Ok(value) => format!("added, now {value}"),
            Err(e) => format!("the call failed: {e:?}"),
        },
        Err(Error::Tls(why)) => format!("TLS error: {why}"),
        Err(other) => format!("another error: {other:?}"),
    };
    report.append(&describe(queue.get()))?;
    report.append(&describe(dict.get_item(&"counter".to_string())))?;
    Ok(())
}

/// A server of the built-in types on a Unix socket, without TLS (TLS is for TCP only).
fn plain_unix_server(socket: &TempPath) -> InProcessServer {
    InProcessServer::start(
        manager::sync::registry(),
        socket.address(),
        manager::process::authkey(),
    )
}

pub(crate) fn proxies_that_travel_reconnect_with_the_inherited_tls_configuration() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &manager::process::authkey());
    // The server name left empty: each address's host (127.0.0.1, in the certificate).
    let mut inherited = pki.client();
    inherited.server_name = String::new();
    let _default = DefaultTls::set(Some(inherited));
    let manager = connect(&server, pki.client()).unwrap();
    let counter = manager.create(&COUNTER, (40,)).unwrap();

    let mut child = ChildGuard(Process::spawn(add_in_child, (counter.clone(), 2)).unwrap());
    assert!(child.join().success(), "the child could not add over TLS");
    assert_eq!(counter.add(0).unwrap(), 42);

    let socket = TempPath::socket("tls-travel");
    let plain = plain_unix_server(&socket);
    let containers = plain.connect();
    let queue: QueueBlockingProxy<CounterBlockingProxy> = containers.queue(0).unwrap();
    queue.put(&counter).unwrap();
    let dict: DictBlockingProxy<String, CounterBlockingProxy> = containers.dict(&[]).unwrap();
    dict.insert(&"counter".to_string(), &counter).unwrap();
    let report: ListBlockingProxy<String> = containers.list(&[]).unwrap();
    let mut child = ChildGuard(
        Process::spawn(take_and_add, (queue.clone(), dict.clone(), report.clone())).unwrap(),
    );
    assert!(child.join().success(), "{:?}", report.to_vec());
    assert_eq!(
        report.to_vec().unwrap(),
        vec!["added, now 52".to_string(), "added, now 62".to_string()]
    );
    assert_eq!(counter.add(0).unwrap(), 62);
}

pub(crate) fn a_process_without_tls_configuration_fails_with_a_tls_error() {
    let pki = Pki::new();
    let server = tls_server(pki.server(), &manager::process::authkey());
    let _default = DefaultTls::set(None);
    // This process reaches the server with TLS of its own; its children have no default.
    let manager = connect(&server, pki.client()).unwrap();
    let counter = manager.create(&COUNTER, (1,)).unwrap();

    match Process::spawn(add_in_child, (counter.clone(), 1)) {
        Err(Error::Tls(why)) => {
            assert!(why.contains("no default TLS configuration"), "{why}");
            assert!(why.contains("requires TLS"), "{why}");
        }
        Err(other) => panic!("expected a TLS error, got {other:?}"),
        Ok(_) => panic!("a child without TLS took over a proxy of a TLS server"),
    }

    let socket = TempPath::socket("tls-none");
    let plain = plain_unix_server(&socket);
    let containers = plain.connect();
    let queue: QueueBlockingProxy<CounterBlockingProxy> = containers.queue(0).unwrap();
    queue.put(&counter).unwrap();
    let dict: DictBlockingProxy<String, CounterBlockingProxy> = containers.dict(&[]).unwrap();
    dict.insert(&"counter".to_string(), &counter).unwrap();
    let report: ListBlockingProxy<String> = containers.list(&[]).unwrap();
    let mut child = ChildGuard(
        Process::spawn(take_and_add, (queue.clone(), dict.clone(), report.clone())).unwrap(),
    );
    assert!(child.join().success(), "{:?}", report.to_vec());
    let report = report.to_vec().unwrap();
    assert_eq!(report.len(), 2, "{report:?}");
    for line in &report {
        assert!(
            line.starts_with("TLS error:") && line.contains("no default TLS configuration"),
            "not a TLS error that says why: {line}"
        );
    }
    assert_eq!(counter.add(0).unwrap(), 1, "nothing was added");
}
