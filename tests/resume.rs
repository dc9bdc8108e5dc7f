//! Short cuts lose nothing: a connection that breaks resumes its session (on 127.0.0.1, no
//! namespaces needed; `netns.rs` cuts real links).
//!
//! A relay in the test stands between a client and the server. Cut, it stops forwarding
//! without closing either socket (to both ends the connection goes silent, as over a cut
//! link: each side's liveness bound of 1 s passes); healed, it resets every connection it
//! carried (both ends get an RST, as after a router restart) and forwards new ones. Cases:
//!
//! - a 3 s cut in the middle of 1,000 appends (each with a proxy cloned and dropped: an incref
//!   and a release): afterwards the list holds each element once, in order, and the list has
//!   exactly the references it had;
//! - a lock held across a 3 s cut stays held by its client (another client cannot take it),
//!   and its release works after;
//! - a cut longer than the session's grace period: the client's pending and later calls fail
//!   with `SessionExpired`, and the server holds none of its objects;
//! - a connection the client drops still releases at once (no grace period for a close);
//! - a resume with a stolen session id and no secret is refused;
//! - with TLS (the `tls` feature), async and blocking callers across a cut: the same;
//! - a server of protocol 2 is refused for its version, clearly.

mod common;
#[cfg(feature = "tls")]
#[path = "common/pki.rs"]
mod pki;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, InProcessServer};
use manager::sync::{ListBlockingProxy, LockBlockingProxy};
use manager::{Address, AuthKey, BaseManager, BlockingManager, Error, Proxy as _, ServerConfig};

const KEY: &str = "resume";
const LIVENESS: Duration = Duration::from_secs(1);
const CUT: Duration = Duration::from_secs(3);

/// A TCP relay to a server, for any number of connections; see the module documentation.
struct Relay {
    address: Address,
    cut: Arc<AtomicBool>,
    pairs: Arc<Mutex<Vec<Pair>>>,
}

/// One connection the relay carries: both sockets, and the flag that ends its threads.
struct Pair {
    sockets: [TcpStream; 2],
    dead: Arc<AtomicBool>,
}

/// Makes the socket's close send an RST (a zero linger).
fn reset_on_close(socket: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a `linger` of the right size.
    let done = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(done, 0, "SO_LINGER");
}

impl Relay {
    fn to(target: &Address) -> Relay {
        let Address::Tcp(target) = target.clone() else {
            panic!("the relay forwards TCP")
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = Address::from(listener.local_addr().unwrap());
        let cut = Arc::new(AtomicBool::new(false));
        let pairs: Arc<Mutex<Vec<Pair>>> = Arc::default();
        let (cut_, pairs_) = (cut.clone(), pairs.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                for socket in [&client, &server] {
                    socket.set_nodelay(true).unwrap();
                }
                let dead = Arc::new(AtomicBool::new(false));
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server.try_clone().unwrap(), client.try_clone().unwrap()),
                ] {
                    let (cut, dead) = (cut_.clone(), dead.clone());
                    from.set_read_timeout(Some(Duration::from_millis(20)))
                        .unwrap();
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 64 * 1024];
                        while !dead.load(Ordering::Relaxed) {
                            if cut.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(10));
                                continue;
                            }
                            match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => {
                                    if to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock
                                            | std::io::ErrorKind::TimedOut
                                    ) => {}
                                Err(_) => break,
                            }
                        }
                        // A side that ended passes it on (a clean close stays clean).
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
                pairs_.lock().unwrap().push(Pair {
                    sockets: [client, server],
                    dead,
                });
            }
        });
        Relay {
            address,
            cut,
            pairs,
        }
    }

    /// Stops forwarding; every socket stays open.
    fn cut(&self) {
        self.cut.store(true, Ordering::Relaxed);
    }

    /// Resets both ends of every connection carried so far, and forwards again.
    fn heal(&self) {
        let pairs = std::mem::take(&mut *self.pairs.lock().unwrap());
        for pair in &pairs {
            for socket in &pair.sockets {
                reset_on_close(socket);
            }
            pair.dead.store(true, Ordering::Relaxed);
        }
        // The threads let go of their copies within a read timeout; the last close resets.
        std::thread::sleep(Duration::from_millis(100));
        drop(pairs);
        self.cut.store(false, Ordering::Relaxed);
    }
}

fn server(grace: Duration) -> InProcessServer {
    let mut config = ServerConfig::default();
    config.liveness_timeout = LIVENESS;
    config.session_grace = grace;
    InProcessServer::start_with(
        manager::sync::registry(),
        Address::local_tcp(),
        AuthKey::from(KEY),
        config,
    )
}

fn client(address: &Address) -> BlockingManager {
    BaseManager::new(address.clone())
        .authkey(KEY)
        .liveness_timeout(LIVENESS)
        .connect()
        .unwrap()
}

/// The references the server counts for object `id`.
fn refcount(manager: &BlockingManager, id: u64) -> Option<u64> {
    let info = manager.debug_info().unwrap();
    info.objects.iter().find(|o| o.id == id).map(|o| o.refcount)
}

/// A 3 s cut in the middle of 1,000 appends: each element once, in order; the increfs and
/// releases sent around the cut applied once each.
#[test]
fn a_short_cut_in_the_middle_of_appends_loses_and_repeats_nothing() {
    let server = server(Duration::from_secs(20));
    let relay = Relay::to(server.address());
    let manager = client(&relay.address);
    let list: ListBlockingProxy<u64> = manager.list(&[]).unwrap();
    let observer = client(server.address());
    let id = list.base().token().id;
    let before = refcount(&observer, id).unwrap();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let appender = {
        let (list, done) = (list.clone(), done.clone());
        std::thread::spawn(move || {
            for i in 0..1000u64 {
                list.append(&i)?;
                done.store(i + 1, Ordering::Relaxed);
                // An incref and a release, one-way: applied once each, whatever the cut.
                drop(list.clone());
            }
            Ok::<_, Error>(())
        })
    };
    let started = Instant::now();
    wait_until("some appends", || match done.load(Ordering::Relaxed) {
        n if n >= 300 => Ok(()),
        n => Err(format!("{n} appended")),
    });
    println!("300 appends in {:?} before the cut", started.elapsed());
    relay.cut();
    std::thread::sleep(CUT);
    let healed = Instant::now();
    relay.heal();
    let at_heal = done.load(Ordering::Relaxed);
    let resumed = wait_until("an append to complete after the cut", || {
        match done.load(Ordering::Relaxed) {
            n if n > at_heal || n == 1000 => Ok(healed.elapsed()),
            n => Err(format!("{n} appended")),
        }
    });
    appender.join().unwrap().expect("no call failed");
    println!(
        "appends resumed {resumed:?} after the cut ended ({at_heal} done before); all done \
         {:?} after",
        healed.elapsed()
    );
    let got = list.to_vec().unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<u64>>(), "each once, in order");
    assert_eq!(refcount(&observer, id), Some(before), "references");
}

/// A lock held across a 3 s cut stays its client's: another client cannot take it meanwhile,
/// and the holder's release works after.
#[test]
fn a_lock_held_across_a_short_cut_stays_held_and_releases_after() {
    let server = server(Duration::from_secs(20));
    let relay = Relay::to(server.address());
    let holder = client(&relay.address);
    let lock = holder.lock().unwrap();
    lock.acquire().unwrap();
    let other = client(server.address());
    let there: LockBlockingProxy = other.attach(lock.base().token()).unwrap();
    relay.cut();
    // Past both liveness bounds: the server has taken the socket for broken.
    assert!(
        !there.acquire_timeout(CUT).unwrap(),
        "the lock left its holder during the cut"
    );
    relay.heal();
    assert!(
        !there.acquire_timeout(Duration::from_millis(500)).unwrap(),
        "the lock left its holder at the resume"
    );
    lock.release().expect("the holder releases after the cut");
    assert!(there.acquire_timeout(Duration::from_secs(10)).unwrap());
    there.release().unwrap();
}

/// A cut longer than the grace period: the session ends on the server (nothing of it left),
/// and the client's pending and later calls fail with `SessionExpired`.
#[test]
fn a_cut_longer_than_the_grace_period_expires_the_session() {
    let server = server(Duration::from_secs(2));
    let relay = Relay::to(server.address());
    let manager = client(&relay.address);
    let observer = client(server.address());
    let baseline = observer.number_of_objects().unwrap();
    let queue = manager.queue::<i64>(0).unwrap();
    let lock = manager.lock().unwrap();
    lock.acquire().unwrap();
    assert_eq!(observer.number_of_objects().unwrap(), baseline + 2);
    let pending = {
        let queue = queue.clone();
        std::thread::spawn(move || queue.get())
    };
    std::thread::sleep(Duration::from_millis(200));
    relay.cut();
    let cut = Instant::now();
    match pending.join().unwrap() {
        Err(Error::SessionExpired(reason)) => {
            println!("the pending call: {reason}");
            assert!(reason.contains("session_grace"), "{reason}");
        }
        other => panic!("expected SessionExpired, got {other:?}"),
    }
    assert!(
        cut.elapsed() < Duration::from_secs(20),
        "{:?}",
        cut.elapsed()
    );
    assert!(matches!(queue.put(&1), Err(Error::SessionExpired(_))));
    wait_until(
        "the server to release the expired session",
        || match observer.number_of_objects() {
            Ok(n) if n == baseline => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    relay.heal();
    assert!(matches!(lock.release(), Err(Error::SessionExpired(_))));
    std::mem::forget((queue, lock, manager));
}

/// A connection its client drops releases what it held at once: a close is not a break.
#[test]
fn a_dropped_connection_releases_at_once() {
    let server = server(Duration::from_secs(60));
    let observer = client(server.address());
    let baseline = observer.number_of_objects().unwrap();
    let manager = client(server.address());
    let lock = manager.lock().unwrap();
    lock.acquire().unwrap();
    let there: LockBlockingProxy = observer.attach(lock.base().token()).unwrap();
    // No release: the close must give the lock back (the proxy's drop only drops a reference).
    drop(lock);
    drop(manager);
    assert!(
        there.acquire_timeout(Duration::from_secs(10)).unwrap(),
        "the closed connection's lock was kept for its grace period"
    );
    drop(there);
    wait_until("the objects to go", || match observer.number_of_objects() {
        Ok(n) if n == baseline => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// A resume that names a live session but proves nothing is refused, and the session goes on.
#[test]
fn a_stolen_session_id_does_not_resume() {
    use manager::wire::{ControlReply, Reply, Request, ResponseHead};
    let server = server(Duration::from_secs(60));
    let manager = client(server.address());
    let list: ListBlockingProxy<u64> = manager.list(&[1]).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let Address::Tcp(host_port) = server.address().clone() else {
        unreachable!()
    };
    let answer: ResponseHead = runtime.block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(host_port.as_str())
            .await
            .unwrap();
        manager::auth::client_handshake(&mut stream, &AuthKey::from(KEY))
            .await
            .unwrap();
        let len = stream.read_u32().await.unwrap() as usize;
        let mut welcome = vec![0u8; len];
        stream.read_exact(&mut welcome).await.unwrap();
        // Any session id: without the session's secret, the proof cannot be right.
        let request = Request::Resume {
            session: 1,
            proof: [7; 32],
            received: 0,
        };
        let body = postcard::to_stdvec(&request).unwrap();
        stream.write_u32(body.len() as u32).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let len = stream.read_u32().await.unwrap() as usize;
        let mut answer = vec![0u8; len];
        stream.read_exact(&mut answer).await.unwrap();
        postcard::from_bytes(&answer).unwrap()
    });
    match answer.reply {
        Reply::Error(e) => assert_eq!(e.kind, manager::RemoteErrorKind::SessionExpired),
        Reply::Control(ControlReply::Resumed(_)) => panic!("resumed without the secret"),
        other => panic!("{other:?}"),
    }
    assert_eq!(list.to_vec().unwrap(), vec![1]);
}

/// Over TLS (the reader task reads every reply there), an async caller and a blocking one
/// across a 3 s cut: every call once, in order.
#[cfg(feature = "tls")]
#[test]
fn a_short_cut_over_tls_loses_nothing_for_async_and_blocking_callers() {
    let pki = pki::Pki::new();
    let mut config = ServerConfig::default();
    config.liveness_timeout = LIVENESS;
    config.session_grace = Duration::from_secs(20);
    config.tls = Some(pki.server());
    let server = InProcessServer::start_with(
        manager::sync::registry(),
        Address::local_tcp(),
        AuthKey::from(KEY),
        config,
    );
    let relay = Relay::to(server.address());
    let base = BaseManager::new(relay.address.clone())
        .authkey(KEY)
        .liveness_timeout(LIVENESS)
        .tls(pki.client());
    let manager = base.clone().connect().unwrap();
    let list: ListBlockingProxy<u64> = manager.list(&[]).unwrap();
    let token = list.base().token().clone();
    let blocking = {
        let list = list.clone();
        std::thread::spawn(move || {
            for i in 0..300u64 {
                list.append(&i)?;
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok::<_, Error>(())
        })
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let other: ListBlockingProxy<u64> = manager.list(&[]).unwrap();
    let other_token = other.base().token().clone();
    let asynchronous = runtime.spawn(async move {
        let manager = base.connect_async().await?;
        let list: manager::sync::ListProxy<u64> = manager.attach(&other_token).await?;
        for i in 0..300u64 {
            list.append(&i).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<_, Error>(())
    });
    std::thread::sleep(Duration::from_millis(500));
    relay.cut();
    std::thread::sleep(CUT);
    relay.heal();
    blocking.join().unwrap().expect("no blocking call failed");
    runtime
        .block_on(asynchronous)
        .unwrap()
        .expect("no async call failed");
    let want: Vec<u64> = (0..300).collect();
    assert_eq!(list.to_vec().unwrap(), want);
    assert_eq!(other.to_vec().unwrap(), want);
    assert_eq!(token.id, list.base().token().id);
}

/// A server of protocol 2 (its welcome has no `session_grace`) is told apart by its version,
/// not taken for a broken peer.
#[test]
fn a_server_of_protocol_2_is_refused_for_its_version() {
    use tokio::io::AsyncWriteExt;
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = Address::from(listener.local_addr().unwrap());
    runtime.spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        manager::auth::server_handshake(&mut stream, &AuthKey::from(KEY))
            .await
            .unwrap();
        // Protocol 2's welcome: version, address, refusal, CPython address, liveness.
        let welcome = (
            2u32,
            address_of(&stream),
            None::<String>,
            None::<Address>,
            Duration::from_secs(30),
        );
        let body = postcard::to_stdvec(&welcome).unwrap();
        stream.write_u32(body.len() as u32).await.unwrap();
        stream.write_all(&body).await.unwrap();
        let _ = tokio::time::sleep(Duration::from_secs(5)).await;
    });
    match BaseManager::new(address).authkey(KEY).connect() {
        Err(Error::Protocol(message)) => {
            assert!(message.contains("protocol version 2"), "{message}")
        }
        other => panic!("expected a protocol error, got {:?}", other.map(|_| ())),
    }
}

fn address_of(stream: &tokio::net::TcpStream) -> Address {
    Address::from(stream.local_addr().unwrap())
}
