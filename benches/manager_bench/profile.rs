//! `--profile WHAT`: one side of the round trip alone in this process, for a profiler.
//!
//! The bench's figures say how long a round trip takes; a profiler says where the time goes.
//! With `--profile` this process plays one side of `get_x` round trips and the other side runs
//! in a child process (which `valgrind` does not follow), so that
//! `valgrind --tool=callgrind` counts the instructions of that side only. Run it twice with
//! different `--calls` and divide the difference by the difference in calls for the cost of
//! one call, free of set-up: `benches/profile.sh` does exactly that.
//!
//! - `raw`, `async`, `blocking`: this process is the client (the raw client, the async proxy,
//!   the blocking proxy), against a server child.
//! - `server`, `raw-server`: this process is the server (the framework's, the raw one), and a
//!   child client (the async proxy, the raw client) makes the calls.

use std::time::Instant;

use manager::{Address, BaseManager, Process, Server, ServerConfig};

use super::{
    check_x, raw_frames, registry, write_frame, RawClient, RawReply, RawRequest, Res, SHARED,
    SHARED_BLOCKING, X,
};

/// Which side of the round trip this process plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Side {
    /// The raw baseline's client.
    Raw,
    /// The framework's async proxy.
    Async,
    /// The framework's blocking proxy.
    Blocking,
    /// The framework's server.
    Server,
    /// The raw baseline's server.
    RawServer,
}

impl std::str::FromStr for Side {
    type Err = String;

    fn from_str(s: &str) -> Result<Side, String> {
        Ok(match s {
            "raw" => Side::Raw,
            "async" => Side::Async,
            "blocking" => Side::Blocking,
            "server" => Side::Server,
            "raw-server" => Side::RawServer,
            other => {
                return Err(format!(
                    "--profile: {other:?} is none of raw, async, blocking, server, raw-server"
                ))
            }
        })
    }
}

/// Plays `side` for `calls` round trips over TCP, or a Unix socket at `unix`.
pub(crate) fn run(side: Side, calls: u64, unix: Option<std::path::PathBuf>) -> Res<()> {
    let address = match unix {
        Some(path) => Address::unix(path),
        // A port of our own: the raw server child's must be known before it listens.
        None => Address::from(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    match side {
        Side::Raw => {
            let mut server = Process::spawn(raw_server, (address.clone(), std::process::id()))?;
            let address = wait_for_listener(&address)?;
            runtime.block_on(async {
                let mut raw = RawClient::connect(&address).await?;
                for _ in 0..calls {
                    check_x(raw.get_x().await?)?;
                }
                Ok::<_, super::BoxError>(())
            })?;
            server.kill()?;
            if let Address::Unix(path) = &address {
                let _ = std::fs::remove_file(path);
            }
        }
        Side::Async => {
            let server = BaseManager::new(address)
                .config(server_config())
                .start(registry)?;
            let address = server.address().clone();
            runtime.block_on(async {
                let manager = BaseManager::new(address).connect_async().await?;
                let proxy = manager.create(&SHARED, ()).await?;
                for _ in 0..calls {
                    check_x(proxy.get_x().await?)?;
                }
                Ok::<_, super::BoxError>(())
            })?;
            server.shutdown()?;
        }
        Side::Blocking => {
            let server = BaseManager::new(address)
                .config(server_config())
                .start(registry)?;
            let manager = BaseManager::new(server.address().clone()).connect()?;
            let proxy = manager.create(&SHARED_BLOCKING, ())?;
            for _ in 0..calls {
                check_x(proxy.get_x()?)?;
            }
            drop((proxy, manager));
            server.shutdown()?;
        }
        Side::Server => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let key = manager::process::authkey();
                // No worker spin: under callgrind the spin's instructions would measure how slow
                // the run is made, not the work of a call.
                let mut config = server_config();
                config.worker_spin = std::time::Duration::ZERO;
                let server = Server::bind(registry()?, &address, key, config).await?;
                let stop = server.shutdown_handle();
                let address = server.address().clone();
                let served = tokio::spawn(server.serve_forever());
                let client = Process::spawn(client, (address, false, calls));
                let status = tokio::task::spawn_blocking(move || client?.join()).await??;
                stop.shutdown();
                served.await??;
                if !status.success() {
                    return Err(format!("the client failed: {status}").into());
                }
                Ok::<_, super::BoxError>(())
            })?;
        }
        Side::RawServer => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let (listener, address) = RawListener::bind(&address).await?;
                let client = Process::spawn(client, (address, true, calls));
                let serve = tokio::spawn(async move { listener.serve_one().await });
                let status = tokio::task::spawn_blocking(move || client?.join()).await??;
                serve.await??;
                if !status.success() {
                    return Err(format!("the client failed: {status}").into());
                }
                Ok::<_, super::BoxError>(())
            })?;
        }
    }
    eprintln!(
        "{side:?}: {calls} round trips in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A raw listener of either kind.
enum RawListener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, std::path::PathBuf),
}

impl RawListener {
    async fn bind(address: &Address) -> Res<(RawListener, Address)> {
        Ok(match address {
            Address::Tcp(host_port) => {
                let listener = tokio::net::TcpListener::bind(host_port.as_str()).await?;
                let bound = Address::from(listener.local_addr()?);
                (RawListener::Tcp(listener), bound)
            }
            Address::Unix(path) => {
                let _ = std::fs::remove_file(path);
                let listener = tokio::net::UnixListener::bind(path)?;
                (RawListener::Unix(listener, path.clone()), address.clone())
            }
        })
    }

    /// Serves the first client that connects until it hangs up.
    async fn serve_one(&self) -> Res<()> {
        match self {
            RawListener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                let (reader, writer) = stream.into_split();
                serve(reader, writer).await
            }
            RawListener::Unix(listener, _) => {
                let (stream, _) = listener.accept().await?;
                let (reader, writer) = stream.into_split();
                serve(reader, writer).await
            }
        }
    }
}

impl Drop for RawListener {
    fn drop(&mut self) {
        if let RawListener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The raw server's loop, for one client.
async fn serve<R, W>(reader: R, mut writer: W) -> Res<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use futures::StreamExt;
    let mut frames = raw_frames(reader);
    let mut reply = Vec::new();
    while let Some(frame) = frames.next().await {
        let answer = match postcard::from_bytes::<RawRequest>(&frame?)? {
            RawRequest::GetX => RawReply::X(X),
            RawRequest::Echo(data) => RawReply::Echo(data),
        };
        write_frame(&mut writer, &answer, &mut reply).await?;
    }
    Ok(())
}

/// The raw server for a client profile: serves the clients at `address` one after the
/// other, as long as `parent` lives.
#[manager::entry]
fn raw_server(address: Address, parent: u32) -> Res<()> {
    super::die_with_parent(parent);
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let (listener, _) = RawListener::bind(&address).await?;
        // The parent's probe that waits for this listener is a client too.
        loop {
            let _ = listener.serve_one().await;
        }
    })
}

/// Waits until something listens at `address` (the raw server child binds it).
fn wait_for_listener(address: &Address) -> Res<Address> {
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let up = match address {
            Address::Tcp(host_port) => std::net::TcpStream::connect(host_port.as_str()).is_ok(),
            Address::Unix(path) => path.exists(),
        };
        if up {
            return Ok(address.clone());
        }
        if Instant::now() > deadline {
            return Err(format!("nothing listens at {address} after 30 s").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The client child of a server profile: `calls` round trips with the async proxy (or the raw
/// client), then it hangs up.
#[manager::entry]
fn client(address: Address, raw: bool, calls: u64) -> Res<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        if raw {
            let mut raw = RawClient::connect(&address).await?;
            for _ in 0..calls {
                check_x(raw.get_x().await?)?;
            }
        } else {
            let manager = BaseManager::new(address).connect_async().await?;
            let proxy = manager.create(&SHARED, ()).await?;
            for _ in 0..calls {
                check_x(proxy.get_x().await?)?;
            }
        }
        Ok(())
    })
}

/// The configuration of our servers: the default, or with `PROFILE_SESSION_GRACE_MS` as its
/// `session_grace` (0: no resumable sessions, so no replay logs and no acknowledgements, to
/// count what they cost).
fn server_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    if let Ok(ms) = std::env::var("PROFILE_SESSION_GRACE_MS") {
        config.session_grace = std::time::Duration::from_millis(ms.parse().expect("milliseconds"));
    }
    config
}
