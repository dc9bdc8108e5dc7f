//! Vanished peers: a link that goes silent without a FIN (a host that lost power or network)
//! is detected within the liveness bound on both sides.
//!
//! A relay in the test stands between a client and the server and, when cut, stops forwarding
//! without closing either socket: to both ends the connection is half-open, as over a cut
//! link. (Network namespaces would do the same with a blackhole route; the relay needs no
//! privileges and runs everywhere.)

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, InProcessServer};
use manager::{Address, AuthKey, BaseManager, Error, Proxy as _, ServerConfig};

const KEY: &str = "liveness";
const LIVENESS: Duration = Duration::from_secs(1);

/// A TCP relay to `target` for one client; `cut` stops it forwarding (both sockets stay open).
struct Relay {
    address: Address,
    cut: Arc<AtomicBool>,
}

impl Relay {
    fn to(target: &Address) -> Relay {
        let Address::Tcp(target) = target.clone() else {
            panic!("the relay forwards TCP")
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = Address::from(listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let cut_ = cut.clone();
        std::thread::spawn(move || {
            let (client, _) = listener.accept().unwrap();
            let server = TcpStream::connect(&target).unwrap();
            for (mut from, mut to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                let cut = cut_.clone();
                from.set_read_timeout(Some(Duration::from_millis(20)))
                    .unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    // Held open for a while after the cut, then let go (the test is over).
                    let mut cut_at = None;
                    loop {
                        if cut.load(Ordering::Relaxed) {
                            let since = *cut_at.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(30) {
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        match from.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if to.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                });
            }
        });
        Relay { address, cut }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }
}

fn server() -> InProcessServer {
    let mut config = ServerConfig::default();
    config.liveness_timeout = LIVENESS;
    // A vanished client's session is kept this long after the bound, for it to resume.
    config.session_grace = LIVENESS;
    InProcessServer::start_with(
        manager::sync::registry(),
        Address::local_tcp(),
        AuthKey::from(KEY),
        config,
    )
}

fn client(address: &Address) -> manager::BlockingManager {
    BaseManager::new(address.clone())
        .authkey(KEY)
        .liveness_timeout(LIVENESS)
        .connect()
        .unwrap()
}

/// A client holding a `Lock` vanishes behind a cut link: the server drops it within the bound
/// (the liveness timeout, then the session's grace period, for it to come back) and releases
/// the lock, which a second client then acquires; its objects are released.
#[test]
fn a_vanished_client_loses_its_lock_to_another() {
    let server = server();
    let relay = Relay::to(server.address());
    let vanishing = client(&relay.address);
    let lock = vanishing.lock().unwrap();
    lock.acquire().unwrap();
    let other = client(server.address());
    let lock_there: manager::sync::LockBlockingProxy = other.attach(lock.base().token()).unwrap();
    let before = other.debug_info().unwrap();
    assert_eq!(before.connections, 2);

    relay.cut();
    let cut = Instant::now();
    assert!(
        lock_there.acquire_timeout(Duration::from_secs(20)).unwrap(),
        "the vanished client's lock was never released"
    );
    let waited = cut.elapsed();
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    let after = wait_until("the vanished client's connection to go", || {
        let info = other.debug_info().map_err(|e| e.to_string())?;
        if info.connections == 1 {
            Ok(info)
        } else {
            Err(format!("{info:?}"))
        }
    });
    assert_eq!(
        after.objects.len(),
        1,
        "only the lock, held by the other client"
    );
    std::mem::forget(vanishing); // its drop would wait on the cut link
}

/// The server's host vanishes behind a cut link: a call in flight without any deadline, and a
/// later one, fail with `ConnectionClosed` within the bound, saying why.
#[test]
fn a_vanished_server_fails_every_call_within_the_bound() {
    let server = server();
    let relay = Relay::to(server.address());
    let manager = client(&relay.address);
    let queue = manager.queue::<i64>(0).unwrap();
    assert_eq!(manager.connection().default_timeout(), None);
    let pending = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.get())
    };
    std::thread::sleep(Duration::from_millis(200));
    relay.cut();
    let cut = Instant::now();
    let result = pending.join().unwrap();
    let waited = cut.elapsed();
    match result {
        Err(Error::ConnectionClosed(reason)) => {
            assert!(reason.contains("did not answer a ping"), "{reason}")
        }
        other => panic!("expected ConnectionClosed, got {other:?}"),
    }
    assert!(waited < Duration::from_secs(10), "took {waited:?}");
    assert!(matches!(queue.put(&1), Err(Error::ConnectionClosed(_))));
    std::mem::forget(manager);
}
