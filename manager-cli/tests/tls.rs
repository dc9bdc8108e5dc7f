//! The `manager` command with TLS (the `tls` feature): `manager serve` with a certificate, a key
//! and a client CA on 0.0.0.0, reached by `info` and `shutdown` with the CA and a client
//! certificate, and refused, saying why, without them. Certificates are made at run time.

#![cfg(feature = "tls")]

#[path = "../../tests/common/pki.rs"]
mod pki;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use manager::sync::ListBlockingProxy;
use manager::{AuthKey, BlockingManager, ConnectOptions};
use pki::Pki;

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

#[test]
fn the_command_serves_and_is_reached_with_tls() {
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
    let list: ListBlockingProxy<i64> = client.list(&[1, 2]).unwrap();
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
