//! TLS beyond the first process: proxies of a TLS server passed to spawned processes (as
//! arguments, and inside a queue and a dict of another server) reconnect with the default TLS
//! configuration the child inherited; a child without one fails with `Error::Tls` saying why.
//! And the `manager` command serving with TLS, reached by `info` and `shutdown` with TLS.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use manager::sync::{BlockingDictProxy, BlockingListProxy, BlockingQueueProxy};
use manager::{AuthKey, BlockingManager, ConnectOptions, Error, Process};

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
    queue: BlockingQueueProxy<CounterBlockingProxy>,
    dict: BlockingDictProxy<String, CounterBlockingProxy>,
    report: BlockingListProxy<String>,
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

pub fn proxies_that_travel_reconnect_with_the_inherited_tls_configuration() {
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
    let queue: BlockingQueueProxy<CounterBlockingProxy> = containers.queue(0).unwrap();
    queue.put(&counter).unwrap();
    let dict: BlockingDictProxy<String, CounterBlockingProxy> = containers.dict(&[]).unwrap();
    dict.insert(&"counter".to_string(), &counter).unwrap();
    let report: BlockingListProxy<String> = containers.list(&[]).unwrap();
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

pub fn a_process_without_tls_configuration_fails_with_a_tls_error() {
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
    let queue: BlockingQueueProxy<CounterBlockingProxy> = containers.queue(0).unwrap();
    queue.put(&counter).unwrap();
    let dict: BlockingDictProxy<String, CounterBlockingProxy> = containers.dict(&[]).unwrap();
    dict.insert(&"counter".to_string(), &counter).unwrap();
    let report: BlockingListProxy<String> = containers.list(&[]).unwrap();
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

/// A `manager` process, killed and reaped when dropped.
struct Command_(Child);

impl Drop for Command_ {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `manager ARGS` with `key` as its authkey.
fn manager_command(key: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_manager"));
    command
        .args(args)
        .env("MANAGER_AUTHKEY", key)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `manager ARGS` to its end: its exit code, stdout and stderr.
fn run(key: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = manager_command(key, args).output().expect("run manager");
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

pub fn the_command_serves_and_is_reached_with_tls() {
    let pki = Pki::new();
    let key = format!("cli-tls-{}", std::process::id());
    let path = |name: &str| pki.path(name).display().to_string();
    let (cert, server_key, ca) = (path("server.pem"), path("server.key"), path("ca.pem"));
    let (client_cert, client_key) = (path("client.pem"), path("client.key"));
    let mut serve = manager_command(
        &key,
        &[
            "serve",
            "--address",
            "0.0.0.0:0",
            "--tls-cert",
            &cert,
            "--tls-key",
            &server_key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let mut served = Command_(serve.spawn().expect("spawn manager serve"));
    let stdout = served.0.stdout.take().unwrap();
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("manager serve announces its address");
    let port = line
        .strip_prefix("serving on 0.0.0.0:")
        .unwrap_or_else(|| panic!("unexpected announcement {line:?}"));
    let address = format!("127.0.0.1:{port}");

    // `info` with the CA and a client certificate; the name checked is 127.0.0.1 (--address).
    let with_tls = [
        "--address",
        &address,
        "--tls-ca",
        &ca,
        "--tls-client-cert",
        &client_cert,
        "--tls-client-key",
        &client_key,
    ];
    let (code, out, err) = run(&key, &[&["info", "--json"][..], &with_tls].concat());
    assert_eq!(code, Some(0), "info over TLS failed: {err}");
    assert!(out.contains("\"connections\""), "{out}");
    // A library client with the same settings is served too.
    let client = BlockingManager::connect_with(
        &manager::Address::tcp(address.clone()),
        &AuthKey::from(key.as_str()),
        &ConnectOptions::new().tls(pki.client_with_cert()),
    )
    .unwrap();
    let list: BlockingListProxy<i64> = client.list(&[1, 2]).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec![1, 2]);

    // Without TLS, with the wrong name, without the client certificate: refused, saying why.
    let (code, _, err) = run(&key, &["info", "--address", &address]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("requires TLS"), "{err}");
    let wrong_name = [&with_tls[..], &["--tls-server-name", "elsewhere.test"]].concat();
    let (code, _, err) = run(&key, &[&["info"][..], &wrong_name].concat());
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not trusted"), "{err}");
    let (code, _, err) = run(&key, &["info", "--address", &address, "--tls-ca", &ca]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("client certificate"), "{err}");
    // Usage: a client certificate needs its key.
    let (code, _, err) = run(
        &key,
        &[
            "info",
            "--address",
            &address,
            "--tls-ca",
            &ca,
            "--tls-client-cert",
            &client_cert,
        ],
    );
    assert_eq!(code, Some(2), "{err}");

    drop(list);
    drop(client);
    let (code, out, err) = run(&key, &[&["shutdown"][..], &with_tls].concat());
    assert_eq!(code, Some(0), "shutdown over TLS failed: {err}");
    assert!(out.contains("shut down"), "{out}");
    let status = served.0.wait().expect("wait for manager serve");
    let mut serve_err = String::new();
    let _ = served
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut serve_err);
    assert!(
        status.success(),
        "manager serve ended with {status}: {serve_err}"
    );
    // Served on 0.0.0.0 with TLS: no warning about plaintext.
    assert!(!serve_err.contains("warning: serving on"), "{serve_err}");
}
