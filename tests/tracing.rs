//! One span per call on each side, linked across processes: a client with a `tracing` layer of
//! its own calls servers run as child processes with `MANAGER_LOG=debug`, whose one log line
//! per call carries the span fields; the server's span names the client's span as its parent,
//! in the same trace, and a call made from inside a method body continues that trace.
//!
//! A custom-harness binary (`harness = false`): the same executable is the server when
//! `TRACING_TEST_SERVE` is set.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

#[macro_use]
mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{Child, ChildStderr, Command, Stdio};
use std::sync::{Arc, Mutex};

use manager::trace::{Propagation, TraceContext};
use manager::{
    Address, AuthKey, BlockingManager, Register, Registry, Server, ServerConfig, Typeid,
};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::Layer;

const KEY: &str = "tracing-test-key";

/// A relay: echoes, fails, or forwards a number to the relay of another server.
#[derive(Debug, Default)]
pub struct Relay;

#[manager::shared]
impl Relay {
    /// Returns `n`.
    pub fn echo(&self, n: i64) -> i64 {
        n
    }

    /// Always fails.
    pub fn fail(&self) -> Result<i64, String> {
        Err("no".into())
    }

    /// Asks the relay of the server at `address` to echo `n` (a call from a method body).
    pub fn forward(&self, address: String, n: i64) -> Result<i64, String> {
        let address: Address = address.parse().map_err(|e| format!("{e}"))?;
        let other =
            BlockingManager::connect(&address, &AuthKey::from(KEY)).map_err(|e| e.to_string())?;
        let relay = other.create(&RELAY, ()).map_err(|e| e.to_string())?;
        relay.echo(n).map_err(|e| e.to_string())
    }
}

const RELAY: Typeid<RelayBlockingProxy, ()> = Typeid::new("Relay");

fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(Register::factory("Relay", |(): ()| Relay))
        .expect("a consistent registry");
    registry
}

/// The context the propagation hooks of the last test inject, as an OpenTelemetry layer's
/// span would hold it.
const INJECTED: TraceContext = TraceContext {
    trace_id: 0x0af7651916cd43dd8448eb211c80319c,
    span_id: 0xb7ad6b7169203331,
    flags: 1,
};

/// Hooks as an OpenTelemetry bridge installs them: the client's context comes from its span
/// (here, a fixed one), and the server hands the remote parent to its span (here, a log line).
fn install_propagation() {
    manager::trace::set_propagation(Propagation {
        inject: |_span| Some(INJECTED),
        extract: |_span, parent| {
            tracing::info!(traceparent = %parent.traceparent(), "remote parent");
        },
    });
}

/// The client mode: one call to the server at `address`, with a subscriber and the hooks.
fn client(address: &str) -> ! {
    install_propagation();
    manager::process::init_logging();
    let address: Address = address.parse().expect("an address");
    let manager = BlockingManager::connect(&address, &AuthKey::from(KEY)).expect("connect");
    let relay = manager.create(&RELAY, ()).expect("create");
    assert_eq!(relay.echo(11).expect("echo"), 11);
    std::process::exit(0)
}

/// The server mode: serves at a free port, prints it, and stops when stdin closes.
fn serve() -> ! {
    if std::env::var_os("TRACING_TEST_HOOKS").is_some() {
        install_propagation();
    }
    manager::process::init_logging();
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let server = Server::bind(
            registry(),
            &Address::tcp("127.0.0.1:0"),
            AuthKey::from(KEY),
            ServerConfig::default(),
        )
        .await
        .expect("bind");
        println!("{}", server.address());
        let stop = server.shutdown_handle();
        std::thread::spawn(move || {
            // The parent holds our stdin: its end closing (the test over, or dead) stops us.
            let _ = std::io::stdin().read_line(&mut String::new());
            stop.shutdown();
        });
        server.serve_forever().await.expect("serve");
    });
    std::process::exit(0)
}

/// A server child process, with its log lines.
struct ServerChild {
    child: Child,
    address: Address,
    log: BufReader<ChildStderr>,
}

impl ServerChild {
    fn start() -> ServerChild {
        Self::start_with(&[])
    }

    fn start_with(env: &[(&str, &str)]) -> ServerChild {
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .env("TRACING_TEST_SERVE", "1")
            .envs(env.iter().copied())
            .env("MANAGER_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn a server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the server's address");
        let address = line.trim().parse().expect("an address");
        let log = BufReader::new(child.stderr.take().expect("stderr"));
        ServerChild {
            child,
            address,
            log,
        }
    }

    /// The fields of the server's span in the next `call finished` line for `method`.
    fn finished(&mut self, method: &str) -> HashMap<String, String> {
        self.next_line("manager_core::server::call", method)
    }

    /// The fields of the innermost span of the next `call finished` line of `target` for
    /// `method`, skipping other lines.
    fn next_line(&mut self, target: &str, method: &str) -> HashMap<String, String> {
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.log.read_line(&mut line).expect("the server's log");
            assert!(
                read > 0,
                "the server's log ended before a line for {method}"
            );
            let plain = strip_ansi(&line);
            if plain.contains(&format!(": {target}: call finished")) {
                let fields = span_fields(&plain);
                if fields.get("method").map(String::as_str) == Some(method) {
                    eprintln!("server: {}", plain.trim_end());
                    return fields;
                }
            }
        }
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        if self.child.wait_timeout_or_kill().is_err() {
            let _ = self.child.kill();
        }
    }
}

trait WaitOrKill {
    fn wait_timeout_or_kill(&mut self) -> std::io::Result<()>;
}

impl WaitOrKill for Child {
    fn wait_timeout_or_kill(&mut self) -> std::io::Result<()> {
        let deadline = std::time::Instant::now() + common::TIMEOUT;
        while std::time::Instant::now() < deadline {
            if self.try_wait()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        self.kill()?;
        self.wait().map(|_| ())
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `key=value` fields inside the last (innermost) `call{...}` of a fmt log line.
fn span_fields(line: &str) -> HashMap<String, String> {
    let start = line.rfind("call{").expect("a call span") + "call{".len();
    let end = start + line[start..].find('}').expect("the span's end");
    line[start..end]
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// The spans this process closed, with their fields: a test layer of its own.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<HashMap<String, String>>>>);

struct Fields(HashMap<String, String>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.0
            .insert(field.name().to_string(), text.trim_matches('"').to_string());
    }
}

impl<S> Layer<S> for Captured
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = Fields(HashMap::new());
        attrs.record(&mut fields);
        fields
            .0
            .insert("target".into(), attrs.metadata().target().to_string());
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            if let Some(fields) = span.extensions_mut().get_mut::<Fields>() {
                values.record(fields);
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(&id) {
            if let Some(fields) = span.extensions_mut().remove::<Fields>() {
                self.0.lock().unwrap().push(fields.0);
            }
        }
    }
}

impl Captured {
    fn client_call(&self, method: &str) -> HashMap<String, String> {
        let spans = self.0.lock().unwrap();
        let span = spans
            .iter()
            .rev()
            .find(|s| {
                s.get("target").map(String::as_str) == Some("manager_core::client::call")
                    && s.get("method").map(String::as_str) == Some(method)
            })
            .unwrap_or_else(|| panic!("no client span for {method} among {spans:?}"))
            .clone();
        eprintln!("client: {span:?}");
        span
    }
}

fn captured() -> &'static Captured {
    static CAPTURED: std::sync::OnceLock<Captured> = std::sync::OnceLock::new();
    CAPTURED.get_or_init(|| {
        let captured = Captured::default();
        let subscriber = tracing_subscriber::registry().with(captured.clone());
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        captured.clone()
    })
}

fn the_server_span_is_the_child_of_the_client_span() {
    let spans = captured();
    let mut server = ServerChild::start();
    let manager = BlockingManager::connect(&server.address, &AuthKey::from(KEY)).unwrap();
    let relay = manager.create(&RELAY, ()).unwrap();
    assert_eq!(relay.echo(7).unwrap(), 7);
    let client = spans.client_call("echo");
    let served = server.finished("echo");
    for (key, value) in [("typeid", "Relay"), ("method", "echo"), ("outcome", "ok")] {
        assert_eq!(client[key], value, "client span {client:?}");
        assert_eq!(served[key], value, "server span {served:?}");
    }
    assert_eq!(client["object"], served["object"]);
    assert_eq!(client["request"], served["request"]);
    assert!(served.contains_key("connection"));
    assert_eq!(served["trace_id"], client["trace_id"], "one trace");
    assert_eq!(
        served["parent_id"], client["span_id"],
        "the client's span is the parent"
    );
    assert_ne!(served["span_id"], client["span_id"]);
    assert_eq!(client["trace_id"].len(), 32);

    // A raised error is an outcome of its own, on both sides.
    assert_eq!(relay.fail().unwrap(), Err("no".to_string()));
    assert_eq!(spans.client_call("fail")["outcome"], "raised");
    assert_eq!(server.finished("fail")["outcome"], "raised");
}

fn a_call_from_a_method_body_continues_the_trace() {
    let spans = captured();
    let mut front = ServerChild::start();
    let mut back = ServerChild::start();
    let manager = BlockingManager::connect(&front.address, &AuthKey::from(KEY)).unwrap();
    let relay = manager.create(&RELAY, ()).unwrap();
    assert_eq!(relay.forward(back.address.to_string(), 5).unwrap(), Ok(5));
    let client = spans.client_call("forward");
    // The front server's client span of its call to the back server, logged as it ends,
    // inside the front's span of `forward`.
    let inner = front.next_line("manager_core::client::call", "echo");
    let forwarded = front.finished("forward");
    let echoed = back.finished("echo");
    assert_eq!(forwarded["parent_id"], client["span_id"]);
    assert_eq!(inner["trace_id"], client["trace_id"]);
    assert_eq!(
        echoed["parent_id"], inner["span_id"],
        "the front's client span is the parent"
    );
    assert_eq!(
        echoed["trace_id"], client["trace_id"],
        "the same trace, two hops on"
    );
}

fn without_a_subscriber_a_call_carries_no_context() {
    // A process with no subscriber (this one before `captured()` ran would be one; a fresh
    // server child's client side is another): its spans are disabled and its requests plain
    // `Call`s, which the log shows as a server span without a parent.
    let mut server = ServerChild::start();
    let no_subscriber = tracing::subscriber::NoSubscriber::default();
    let echoed = tracing::subscriber::with_default(no_subscriber, || {
        let manager = BlockingManager::connect(&server.address, &AuthKey::from(KEY)).unwrap();
        let relay = manager.create(&RELAY, ()).unwrap();
        relay.echo(3).unwrap()
    });
    assert_eq!(echoed, 3);
    let served = server.finished("echo");
    assert!(!served.contains_key("parent_id"), "no parent: {served:?}");
    assert_eq!(
        served["trace_id"].len(),
        32,
        "the server starts a trace of its own"
    );
}

fn propagation_hooks_supply_and_receive_the_context() {
    let mut server = ServerChild::start_with(&[("TRACING_TEST_HOOKS", "1")]);
    let status = Command::new(std::env::current_exe().expect("the test binary"))
        .env("TRACING_TEST_CLIENT", server.address.to_string())
        .env("MANAGER_LOG", "debug")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run the client");
    assert!(status.success(), "the client failed: {status}");
    let mut line = String::new();
    let extracted = loop {
        line.clear();
        assert!(
            server.log.read_line(&mut line).expect("the log") > 0,
            "no remote parent line"
        );
        let plain = strip_ansi(&line);
        if plain.contains("remote parent") {
            break plain;
        }
    };
    eprintln!("server: {}", extracted.trim_end());
    assert!(extracted.contains(&INJECTED.traceparent()), "{extracted}");
    let served = server.finished("echo");
    assert_eq!(served["trace_id"], INJECTED.trace_hex());
    assert_eq!(served["parent_id"], INJECTED.span_hex());
}

fn main() {
    if std::env::var_os("TRACING_TEST_SERVE").is_some() {
        serve();
    }
    if let Some(address) = std::env::var_os("TRACING_TEST_CLIENT") {
        client(&address.to_string_lossy());
    }
    manager::init();
    common::run_tests(vec![
        case!(the_server_span_is_the_child_of_the_client_span),
        case!(a_call_from_a_method_body_continues_the_trace),
        case!(without_a_subscriber_a_call_carries_no_context),
        case!(propagation_hooks_supply_and_receive_the_context),
    ]);
}
