//! `manager`: run a manager server that hosts the built-in shared types, and inspect or stop a
//! running one.
//!
//! ```text
//! MANAGER_AUTHKEY=... manager serve --address 127.0.0.1:50000
//! MANAGER_AUTHKEY=... manager info --address 127.0.0.1:50000 [--json]
//! MANAGER_AUTHKEY=... manager shutdown --address 127.0.0.1:50000
//! MANAGER_AUTHKEY=... manager serve --address 0.0.0.0:50000 --tls-cert server.pem --tls-key server.key
//! MANAGER_AUTHKEY=... manager info --address manager.example:50000 --tls-ca ca.pem
//! ```
//!
//! Exit codes: 0 success; 1 the operation failed (server unreachable, wrong authkey, cannot
//! bind, ...); 2 bad usage (bad arguments, a malformed address, no authkey, an unreadable key
//! file).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use manager::{Address, AuthKey, ConnectOptions, Error, Manager, Server, ServerConfig};
use tokio::signal::unix::{signal, SignalKind};

mod authkey;
mod table;
mod tls;
mod types;

const ABOUT: &str =
    "Run a manager server hosting the built-in shared types, or inspect and stop one";

const LONG_ABOUT: &str = "\
Run a manager server hosting the built-in shared types (list, ...), or inspect and stop a \
running one.

Every command needs the server's authkey: from the MANAGER_AUTHKEY environment variable, or \
from a file named by --authkey-file (its contents, less a trailing newline). The key is never \
printed or logged.

Addresses are host:port for TCP (port 0 lets the system pick one) or unix:/path for a Unix \
socket.

TLS (TCP only, PEM files): `serve --tls-cert --tls-key [--tls-client-ca]` serves it; \
`info` and `shutdown` connect with it given `--tls-ca [--tls-server-name] [--tls-client-cert \
--tls-client-key]`. The authkey handshake still runs inside TLS. Serve beyond loopback with TLS: \
without it, everything after the handshake travels in the clear.

Exit codes: 0 success; 1 the operation failed (unreachable server, wrong authkey, cannot bind); \
2 bad usage (bad arguments, a malformed address, no authkey).";

const MAIN_EXAMPLES: &str = "\
Examples:
  # a server on a fixed port, key from the environment
  export MANAGER_AUTHKEY=\"$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n')\"
  manager serve --address 127.0.0.1:50000 &

  # what it holds, as a table or as JSON
  manager info --address 127.0.0.1:50000
  manager info --address 127.0.0.1:50000 --json

  # stop it
  manager shutdown --address 127.0.0.1:50000

  # reachable from other machines: with TLS, and clients that check its certificate
  manager serve --address 0.0.0.0:50000 --tls-cert server.pem --tls-key server.key &
  manager info --address manager.example:50000 --tls-ca ca.pem";

const SERVE_LONG_ABOUT: &str = "\
Serve every built-in shared type (the registry of manager::sync) at ADDR until a client sends \
shutdown or the process gets SIGINT or SIGTERM; then exit 0. A Unix socket file is removed on \
exit.

Once listening, prints one line `serving on ADDR` to stdout, with the address actually bound \
(the real port when port 0 was asked for). Logs go to stderr, at the level named by MANAGER_LOG \
(default warn).

The authkey comes from --authkey-file, else from a new key written to --generate-authkey-file, \
else from MANAGER_AUTHKEY. With none of them the server refuses to start: it never runs without \
a key its operator chose.";

const SERVE_EXAMPLES: &str = "\
Examples:
  # key from the environment, a port the system picks
  MANAGER_AUTHKEY=s3cret manager serve --address 127.0.0.1:0

  # reachable from other machines: TLS with the server's certificate chain and key, clients
  # checked against a client CA too, key from a file (keep it mode 600)
  manager serve --address 0.0.0.0:50000 --authkey-file /etc/manager/key \\
      --tls-cert /etc/manager/server.pem --tls-key /etc/manager/server.key \\
      --tls-client-ca /etc/manager/clients-ca.pem

  # a fresh random key, written to a new file (mode 600) that clients then read
  manager serve --address unix:/run/manager.sock --generate-authkey-file ./manager.key
  manager info --address unix:/run/manager.sock --authkey-file ./manager.key";

const INFO_LONG_ABOUT: &str = "\
Print the objects a server holds (id, typeid, Rust type, reference count), its number of open \
connections, this one included, the calls running now (with their age) and, per typeid and \
method, the calls made, their errors and their total and mean time.

--types prints what the server serves instead: each typeid with its Rust type, whether clients \
may create it, and its exposed methods as signatures (parameter and result types as written, \
async or not, the typeid a method_to_typeid result becomes) with the summary of each doc comment.

--json prints the server's DebugInfo as JSON instead: {\"objects\": [{\"id\", \"typeid\", \
\"type_name\", \"refcount\"}, ...], \"connections\": N, \"address\": {\"Tcp\": \"host:port\"} or \
{\"Unix\": \"/path\"}, \"running\": [...], \"methods\": [...]}; with --types, a list of \
{\"typeid\", \"type_name\", \"create_method\", \"source\", \"params\", \"methods\": [{\"name\", \
\"params\": [{\"name\", \"ty\"}], \"returns\", \"receiver\", \"is_async\", \"method_to_typeid\", \
\"doc\"}], \"events\"}.";

const INFO_EXAMPLES: &str = "\
Examples:
  MANAGER_AUTHKEY=s3cret manager info --address 127.0.0.1:50000
  manager info --address unix:/run/manager.sock --authkey-file ./manager.key --json | jq '.objects'

  # what it serves: typeids and their methods, as text or JSON
  MANAGER_AUTHKEY=s3cret manager info --address 127.0.0.1:50000 --types
  MANAGER_AUTHKEY=s3cret manager info --address 127.0.0.1:50000 --types --json | jq '.[].typeid'

  # a server with TLS: the CA that signed its certificate (and, if the server asks for one,
  # this client's certificate); the name checked is the host of --address unless given
  manager info --address manager.example:50000 --authkey-file ./manager.key --tls-ca ca.pem
  manager info --address 10.0.0.5:50000 --tls-ca ca.pem --tls-server-name manager.example \\
      --tls-client-cert client.pem --tls-client-key client.key";

const SHUTDOWN_LONG_ABOUT: &str = "\
Ask the server at ADDR to stop. It stops accepting clients, closes the open connections and \
exits; proxies held by other clients fail from then on.";

const SHUTDOWN_EXAMPLES: &str = "\
Examples:
  MANAGER_AUTHKEY=s3cret manager shutdown --address 127.0.0.1:50000
  manager shutdown --address unix:/run/manager.sock --authkey-file ./manager.key
  manager shutdown --address manager.example:50000 --tls-ca ca.pem";

#[derive(Debug, Parser)]
#[command(
    name = "manager",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_long_help = MAIN_EXAMPLES,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the built-in shared types at an address until told to stop
    #[command(long_about = SERVE_LONG_ABOUT, after_long_help = SERVE_EXAMPLES)]
    Serve(ServeArgs),
    /// Print the objects, connections and calls of a running server, or what it serves
    #[command(long_about = INFO_LONG_ABOUT, after_long_help = INFO_EXAMPLES)]
    Info(InfoArgs),
    /// Ask a running server to stop
    #[command(long_about = SHUTDOWN_LONG_ABOUT, after_long_help = SHUTDOWN_EXAMPLES)]
    Shutdown(ShutdownArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Where to listen: host:port (port 0 picks a free port) or unix:/path/to/socket
    #[arg(long, short, value_name = "ADDR", value_parser = parse_address)]
    address: Address,

    /// Read the authkey from this file (its contents, less a trailing newline) instead of
    /// MANAGER_AUTHKEY
    #[arg(long, value_name = "PATH")]
    authkey_file: Option<PathBuf>,

    /// Write a fresh random authkey to this new file (mode 600; an existing file is never
    /// overwritten) and serve with it; clients read it with --authkey-file
    #[arg(long, value_name = "PATH", conflicts_with = "authkey_file")]
    generate_authkey_file: Option<PathBuf>,

    /// Also take unmodified CPython clients (multiprocessing.managers' SyncManager or
    /// BaseManager) at this second address; announced as `serving CPython clients on ADDR`
    #[arg(long, value_name = "ADDR", value_parser = parse_address)]
    python_address: Option<Address>,

    /// How long the thread of a CPython client's connection watches for its next request
    /// before it sleeps, in microseconds (ServerConfig::python_spin; default 0: no watching)
    #[arg(long, value_name = "MICROSECONDS", requires = "python_address")]
    python_spin_us: Option<u64>,

    #[command(flatten)]
    tls: tls::ServeTls,
}

#[derive(Debug, Args)]
struct ClientArgs {
    /// The server's address: host:port or unix:/path/to/socket
    #[arg(long, short, value_name = "ADDR", value_parser = parse_address)]
    address: Address,

    /// Read the authkey from this file (its contents, less a trailing newline) instead of
    /// MANAGER_AUTHKEY
    #[arg(long, value_name = "PATH")]
    authkey_file: Option<PathBuf>,

    /// Give up after this many seconds without an answer
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    timeout: u64,

    #[command(flatten)]
    tls: tls::ClientTls,
}

#[derive(Debug, Args)]
struct InfoArgs {
    #[command(flatten)]
    client: ClientArgs,

    /// Print the server's DebugInfo as JSON instead of a table
    #[arg(long)]
    json: bool,

    /// Print what the server serves instead: each typeid with its Rust type, create method,
    /// and exposed methods (parameters, result, async or not, method_to_typeid target, doc
    /// line); with --json, as JSON
    #[arg(long, conflicts_with = "python")]
    types: bool,

    /// The server is a CPython manager (multiprocessing.managers): print its object count
    /// and its own debug_info() text
    #[arg(long)]
    python: bool,
}

#[derive(Debug, Args)]
struct ShutdownArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// Parses `--address`, with a message that says what is expected.
fn parse_address(text: &str) -> Result<Address, String> {
    text.parse::<Address>().map_err(|e| {
        let detail = match e {
            Error::Protocol(message) => message,
            other => other.to_string(),
        };
        format!(
            "{detail}; expected host:port (such as 127.0.0.1:50000) or unix:/path (such as unix:/tmp/manager.sock)"
        )
    })
}

/// Why a command failed: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// The operation failed (exit code 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Failure {
            code: 1,
            message: message.into(),
        }
    }

    /// The command was used wrongly (exit code 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    manager::process::init_logging();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Info(args) => info(args),
        Command::Shutdown(args) => shutdown(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("manager: error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

fn runtime(multi_thread: bool) -> Result<tokio::runtime::Runtime, Failure> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .map_err(|e| Failure::failed(format!("cannot start the async runtime: {e}")))
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let key = authkey::server_key(
        args.authkey_file.as_deref(),
        args.generate_authkey_file.as_deref(),
    )?;
    runtime(true)?.block_on(async move {
        // The handlers are in place before the address is announced: a signal sent as soon as
        // `serving on` is read still stops the server cleanly.
        let signal_error = |e| Failure::failed(format!("cannot install a signal handler: {e}"));
        let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;

        let mut config = ServerConfig::default();
        config.python_address = args.python_address.clone();
        config.tls = args.tls.config();
        if let Some(micros) = args.python_spin_us {
            config.python_spin = std::time::Duration::from_micros(micros);
        }
        let server = Server::bind(manager::sync::registry(), &args.address, key, config)
            .await
            .map_err(|e| {
                // A key generated for a server that never ran would only be in the way of a retry.
                if let Some(path) = &args.generate_authkey_file {
                    let _ = std::fs::remove_file(path);
                }
                Failure::failed(format!("cannot serve on {}: {e}", args.address))
            })?;

        let stop = server.shutdown_handle();
        tokio::spawn(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
                () = stop.stopped() => return,
            };
            tracing::info!("received {name}; shutting down");
            stop.shutdown();
        });

        if let Some(python) = server.python_address() {
            use std::io::Write as _;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "serving CPython clients on {python}").and_then(|()| out.flush());
        }
        if config_has_tls(&args) {
            tracing::debug!("serving TLS on {}", server.address());
        } else {
            warn_if_exposed(server.address(), "serve with TLS: --tls-cert and --tls-key");
        }
        if let Some(python) = server.python_address() {
            warn_if_exposed(
                python,
                "CPython's protocol has no TLS: keep --python-address on a trusted network",
            );
        }
        announce(server.address());
        server
            .serve_forever()
            .await
            .map_err(|e| Failure::failed(format!("the server failed: {e}")))
    })
}

/// Whether `serve` was asked for TLS.
fn config_has_tls(args: &ServeArgs) -> bool {
    args.tls.config().is_some()
}

/// Warns on stderr when `address`, served without TLS, is reachable from other machines:
/// everything after the authkey handshake travels in the clear and is not authenticated
/// message by message. `remedy` says what to do about it.
fn warn_if_exposed(address: &Address, remedy: &str) {
    let Address::Tcp(at) = address else {
        return;
    };
    let host = manager::tls::host_of(at);
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        eprintln!(
            "manager: warning: serving on {address}, reachable from other machines, without \
             TLS: after the authkey handshake all traffic is unencrypted and not authenticated \
             message by message. Keep it on loopback or a trusted network, or {remedy}."
        );
    }
}

/// Prints `serving on ADDR` to stdout at once. A closed stdout does not stop the server.
fn announce(address: &Address) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "serving on {address}").and_then(|()| out.flush()) {
        tracing::warn!("cannot print the address to stdout: {e}");
    }
}

/// Connects to the server named by `args` and runs `work` with the connection, within the
/// timeout.
fn with_manager<T, F, Fut>(args: &ClientArgs, work: F) -> Result<T, Failure>
where
    F: FnOnce(Manager) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let key: AuthKey = authkey::client_key(args.authkey_file.as_deref())?;
    let address = &args.address;
    let mut options = ConnectOptions::new().connect_timeout(Duration::from_secs(args.timeout));
    options.tls = args.tls.config(address);
    runtime(false)?.block_on(async {
        let job = async {
            let manager = Manager::connect_with(address, &key, &options).await?;
            work(manager).await
        };
        match tokio::time::timeout(Duration::from_secs(args.timeout), job).await {
            Ok(result) => result.map_err(|e| explain(&e, address)),
            Err(_) => Err(Failure::failed(format!(
                "no answer from {address} within {} s (--timeout)",
                args.timeout
            ))),
        }
    })
}

/// A message for a failed client command that says what to check.
fn explain(error: &Error, address: &Address) -> Failure {
    match error {
        Error::Connect { source, .. } => Failure::failed(format!(
            "cannot reach a manager server at {address}: {source} (is `manager serve` running there?)"
        )),
        Error::Auth(message) => Failure::failed(format!(
            "authentication with the server at {address} failed: {message}; \
             the authkey (MANAGER_AUTHKEY or --authkey-file) must be the server's"
        )),
        Error::Protocol(message) => Failure::failed(format!(
            "the server at {address} does not speak this manager protocol: {message}"
        )),
        Error::Tls(message) => Failure::failed(format!(
            "TLS with the server at {address} failed: {message} (a server started with \
             --tls-cert needs --tls-ca here; one without it, no TLS options)"
        )),
        other => Failure::failed(format!("{other} (server at {address})")),
    }
}

fn info(args: InfoArgs) -> Result<(), Failure> {
    if args.python {
        if args.client.tls.given() {
            return Err(Failure::usage(
                "--python takes no TLS options: CPython's manager protocol has no TLS",
            ));
        }
        return python_info(&args);
    }
    if args.types {
        let types = with_manager(
            &args.client,
            |manager| async move { manager.describe().await },
        )?;
        let text = if args.json {
            let mut json = serde_json::to_string_pretty(&types)
                .map_err(|e| Failure::failed(format!("cannot encode the answer as JSON: {e}")))?;
            json.push('\n');
            json
        } else {
            types::render(&types)
        };
        return print(&text);
    }
    let info = with_manager(
        &args.client,
        |manager| async move { manager.debug_info().await },
    )?;
    let text = if args.json {
        let mut json = serde_json::to_string_pretty(&info)
            .map_err(|e| Failure::failed(format!("cannot encode the answer as JSON: {e}")))?;
        json.push('\n');
        json
    } else {
        table::render(&info)
    };
    print(&text)
}

/// `info --python`: a CPython manager's object count and its own debug text.
fn python_info(args: &InfoArgs) -> Result<(), Failure> {
    let key: AuthKey = authkey::client_key(args.client.authkey_file.as_deref())?;
    let address = &args.client.address;
    let (objects, debug) = runtime(false)?.block_on(async {
        let job = async {
            let manager = manager::python::client::PyManager::connect(address, &key).await?;
            let objects = manager.number_of_objects().await?;
            let debug = manager.debug_info().await?;
            Ok::<_, Error>((objects, debug))
        };
        match tokio::time::timeout(Duration::from_secs(args.client.timeout), job).await {
            Ok(result) => result.map_err(|e| explain(&e, address)),
            Err(_) => Err(Failure::failed(format!(
                "no answer from {address} within {} s (--timeout)",
                args.client.timeout
            ))),
        }
    })?;
    let text = if args.json {
        let json = serde_json::json!({ "objects": objects, "debug_info": debug });
        format!(
            "{}\n",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        )
    } else {
        format!("server   {address} (CPython)\nobjects  {objects}\n\n{debug}\n")
    };
    print(&text)
}

fn shutdown(args: ShutdownArgs) -> Result<(), Failure> {
    with_manager(
        &args.client,
        |manager| async move { manager.shutdown().await },
    )?;
    print(&format!(
        "asked the server at {} to shut down\n",
        args.client.address
    ))
}

fn print(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|e| Failure::failed(format!("cannot write to stdout: {e}")))
}
