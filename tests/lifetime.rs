//! Object lifetime (reference counting across proxies, connections and processes) and the
//! lifecycle of servers and processes, with real sockets and real child processes.
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_until, within, ChildGuard, InProcessServer, ProcessIdentity, TempPath};
use manager::{
    Address, BaseManager, BlockingManager, DebugInfo, Error, Manager, ObjectInfo, Process, Proxy,
    Register, Registry, Server, ServerConfig, Token, Typeid,
};

/// A referent whose drop the test can observe: it counts its own drops.
#[derive(Debug)]
pub struct Tracked {
    value: i64,
    drops: Arc<AtomicUsize>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.drops.fetch_add(1, Ordering::SeqCst);
    }
}

/// Holds `Tracked::make_later` until it is set.
static MAKE_LATER_RELEASED: AtomicBool = AtomicBool::new(false);
/// How many `Tracked::make_later` calls are waiting.
static MAKE_LATER_WAITING: AtomicU64 = AtomicU64::new(0);

/// Decrements its counter when dropped.
struct CountedOut(&'static AtomicU64);

impl Drop for CountedOut {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[manager::shared(method_to_typeid = { make_later: "tracked" })]
impl Tracked {
    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Adds `n` and returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value += n;
        self.value
    }

    /// The id of the process the referent lives in.
    pub fn pid(&self) -> u32 {
        std::process::id()
    }

    /// Once `MAKE_LATER_RELEASED` is set (for at most two minutes), a new object holding
    /// `value`, which the caller receives as a proxy.
    pub async fn make_later(&self, value: i64) -> Tracked {
        MAKE_LATER_WAITING.fetch_add(1, Ordering::SeqCst);
        let _waiting = CountedOut(&MAKE_LATER_WAITING);
        for _ in 0..120_000 {
            if MAKE_LATER_RELEASED.load(Ordering::SeqCst) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        Tracked {
            value,
            drops: self.drops.clone(),
        }
    }
}

const TRACKED: Typeid<TrackedBlockingProxy, (i64,)> = Typeid::new("tracked");
const TRACKED_ASYNC: Typeid<TrackedProxy, (i64,)> = Typeid::new("tracked");
const SHARED: Typeid<TrackedBlockingProxy> = Typeid::new("shared");
const SHARED_ASYNC: Typeid<TrackedProxy> = Typeid::new("shared");

/// Drop counters of the objects made by one registry.
#[derive(Clone, Default)]
struct Drops {
    tracked: Arc<AtomicUsize>,
    shared: Arc<AtomicUsize>,
}

impl Drops {
    fn tracked(&self) -> usize {
        self.tracked.load(Ordering::SeqCst)
    }

    fn shared(&self) -> usize {
        self.shared.load(Ordering::SeqCst)
    }
}

/// `tracked`: a new `Tracked(value)` per create; `shared`: one `Tracked(0)` for every client.
fn registry(drops: &Drops) -> Registry {
    let mut registry = Registry::new();
    let tracked = drops.tracked.clone();
    registry
        .register(Register::factory("tracked", move |(value,): (i64,)| {
            Tracked {
                value,
                drops: tracked.clone(),
            }
        }))
        .unwrap();
    registry
        .register(Register::shared(
            "shared",
            Tracked {
                value: 0,
                drops: drops.shared.clone(),
            },
        ))
        .unwrap();
    registry
}

/// The registry of servers started in a child process.
#[manager::entry]
fn server_registry() -> manager::Result<Registry> {
    Ok(registry(&Drops::default()))
}

/// A child that connects, takes references (two per tracked object, two to the shared one),
/// and then sits still until it is killed.
#[manager::entry]
fn hold_objects(address: Address, count: u32) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let mut held = Vec::new();
    for i in 0..count {
        let proxy = manager.create(&TRACKED, (i64::from(i),))?;
        held.push(proxy.clone());
        held.push(proxy);
    }
    let shared = manager.create(&SHARED, ())?;
    held.push(shared.clone());
    held.push(shared);
    // Bounded, in case the parent dies without killing us; the parent kills us long before.
    std::thread::sleep(Duration::from_secs(120));
    drop(held);
    Ok(())
}

/// A child that attaches to the object named by `token`, adds `n` to it, and then sits
/// still until it is killed.
#[manager::entry]
fn attach_and_hold(token: Token, n: i64) -> manager::Result<()> {
    let manager = BaseManager::new(token.address.clone()).connect()?;
    let proxy: TrackedBlockingProxy = manager.attach(&token)?;
    proxy.add(n)?;
    // Bounded, in case the parent dies without killing us; the parent kills us long before.
    std::thread::sleep(Duration::from_secs(120));
    drop(proxy);
    Ok(())
}

/// A child that writes its pid, its process name and its arguments to `path`, then exits with
/// `code`.
#[manager::entry]
fn report(path: PathBuf, words: Vec<String>, code: i32) {
    let text = format!(
        "{}\n{}\n{}",
        std::process::id(),
        manager::current_process_name(),
        words.join(" ")
    );
    std::fs::write(&path, text).expect("cannot write the report");
    std::process::exit(code);
}

/// A child whose entry returns an error.
#[manager::entry]
fn fail_with(message: String) -> Result<(), String> {
    Err(message)
}

/// Not an entry: it cannot be spawned.
fn not_an_entry() {}

fn object(info: &DebugInfo, id: u64) -> Option<&ObjectInfo> {
    info.objects.iter().find(|o| o.id == id)
}

fn typeid_objects<'a>(info: &'a DebugInfo, typeid: &str) -> Vec<&'a ObjectInfo> {
    info.objects.iter().filter(|o| o.typeid == typeid).collect()
}

fn shared_object(info: &DebugInfo) -> &ObjectInfo {
    let shared = typeid_objects(info, "shared");
    assert_eq!(shared.len(), 1, "exactly one shared instance: {info:?}");
    shared[0]
}

/// Polls the server through `observer` until object `id` has `expected` references (`None`:
/// until it is gone).
fn wait_refcount(observer: &BlockingManager, id: u64, expected: Option<u64>) {
    wait_until(
        &format!("object {id} to have refcount {expected:?}"),
        || {
            let info = observer.debug_info().map_err(|e| e.to_string())?;
            let refcount = object(&info, id).map(|o| o.refcount);
            if refcount == expected {
                Ok(())
            } else {
                Err(format!("{info:?}"))
            }
        },
    )
}

/// Polls until the server holds `objects` objects, the shared instance has `shared_refs`
/// references and `connections` connections are open.
fn wait_server_state(
    observer: &BlockingManager,
    objects: usize,
    shared_refs: u64,
    connections: u64,
) {
    wait_until(
        &format!("{objects} objects, shared refcount {shared_refs}, {connections} connections"),
        || {
            let info = observer.debug_info().map_err(|e| e.to_string())?;
            let ok = info.objects.len() == objects
                && shared_object(&info).refcount == shared_refs
                && info.connections == connections;
            if ok {
                Ok(())
            } else {
                Err(format!("{info:?}"))
            }
        },
    )
}

fn each_proxy_holds_one_reference_clone_adds_one_drop_releases_one() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let client = server.connect();
    let observer = server.connect();

    let a = client.create(&TRACKED, (1,)).unwrap();
    let id = a.base().token().id;
    wait_refcount(&observer, id, Some(1));

    let b = a.clone();
    wait_refcount(&observer, id, Some(2));
    let c = b.clone();
    wait_refcount(&observer, id, Some(3));

    // Every clone names the same object.
    assert_eq!(b.base().token(), a.base().token());
    assert_eq!(c.add(1).unwrap(), 2);
    assert_eq!(a.get().unwrap(), 2);

    drop(b);
    wait_refcount(&observer, id, Some(2));
    drop(a);
    wait_refcount(&observer, id, Some(1));
    assert_eq!(drops.tracked(), 0, "dropped while a proxy still holds it");
    assert_eq!(
        c.get().unwrap(),
        2,
        "the last proxy still reaches the object"
    );

    drop(c);
    wait_refcount(&observer, id, None);
    wait_until("the referent to be dropped", || match drops.tracked() {
        1 => Ok(()),
        n => Err(format!("{n} drops")),
    });
}

fn object_without_references_is_dropped_on_server() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let client = server.connect();
    let observer = server.connect();
    assert_eq!(
        observer.number_of_objects().unwrap(),
        1,
        "only the shared one"
    );

    let proxies: Vec<_> = (0..10)
        .map(|i| client.create(&TRACKED, (i,)).unwrap())
        .collect();
    assert_eq!(observer.number_of_objects().unwrap(), 11);
    assert_eq!(drops.tracked(), 0);

    let first = proxies[0].base().token().id;
    let mut proxies = proxies.into_iter();
    drop(proxies.next());
    wait_refcount(&observer, first, None);
    wait_until("one referent dropped", || match drops.tracked() {
        1 => Ok(()),
        n => Err(format!("{n} drops")),
    });
    assert_eq!(observer.number_of_objects().unwrap(), 10);

    drop(proxies);
    wait_until("every referent dropped", || match drops.tracked() {
        10 => Ok(()),
        n => Err(format!("{n} drops")),
    });
    wait_server_state(&observer, 1, 1, 2);
    assert_eq!(drops.shared(), 0, "the shared instance is not dropped");
}

fn closing_connection_releases_every_reference_it_held() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let observer = server.connect();

    // A client on a runtime of its own: shutting that runtime down closes its socket while
    // every proxy is still alive, so no decref is ever sent.
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (address, authkey) = (server.address().clone(), server.authkey().clone());
    let (proxies, manager) = client_runtime.block_on(async move {
        let manager = Manager::connect(&address, &authkey).await.unwrap();
        let mut proxies = Vec::new();
        for i in 0..5 {
            let proxy = manager.create(&TRACKED_ASYNC, (i,)).await.unwrap();
            proxies.push(proxy.clone());
            proxies.push(proxy);
        }
        let shared = manager.create(&SHARED_ASYNC, ()).await.unwrap();
        proxies.push(shared.clone());
        proxies.push(shared);
        (proxies, manager)
    });
    wait_until("the client's references", || {
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        let tracked = typeid_objects(&info, "tracked");
        let ok = tracked.len() == 5
            && tracked.iter().all(|o| o.refcount == 2)
            && shared_object(&info).refcount == 3
            && info.connections == 2;
        if ok {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });

    client_runtime.shutdown_timeout(Duration::from_secs(5));

    wait_server_state(&observer, 1, 1, 1);
    wait_until("the client's referents to be dropped", || {
        match drops.tracked() {
            5 => Ok(()),
            n => Err(format!("{n} drops")),
        }
    });
    assert_eq!(drops.shared(), 0, "the shared instance survives");

    // Dropping the orphaned proxies afterwards is harmless.
    drop(proxies);
    drop(manager);
    assert_eq!(observer.number_of_objects().unwrap(), 1);
    assert_eq!(drops.tracked(), 5);
}

fn sigkilled_child_leaves_no_objects_behind() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let observer = server.connect();

    let mut child = ChildGuard(
        Process::spawn(hold_objects, (server.address().clone(), 4u32)).expect("cannot spawn"),
    );
    wait_until("the child's references", || {
        if !child.0.is_alive() {
            panic!("the child ended early: {:?}", child.0.join());
        }
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        let tracked = typeid_objects(&info, "tracked");
        let ok = tracked.len() == 4
            && tracked.iter().all(|o| o.refcount == 2)
            && shared_object(&info).refcount == 3
            && info.connections == 2;
        if ok {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });

    child.0.kill().expect("cannot kill the child");
    assert!(!child.0.is_alive());

    wait_server_state(&observer, 1, 1, 1);
    wait_until("the child's referents to be dropped", || {
        match drops.tracked() {
            4 => Ok(()),
            n => Err(format!("{n} drops")),
        }
    });
    assert_eq!(drops.shared(), 0);
}

fn token_attached_in_another_process_takes_its_own_reference() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let client = server.connect();
    let observer = server.connect();
    let tracked = client.create(&TRACKED, (1,)).unwrap();
    let id = tracked.base().token().id;

    let mut child = ChildGuard(
        Process::spawn(attach_and_hold, (tracked.base().token().clone(), 5i64))
            .expect("cannot spawn"),
    );
    wait_until("the child's reference and its call", || {
        if !child.0.is_alive() {
            panic!("the child ended early: {:?}", child.0.join());
        }
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        let refcount = object(&info, id).map(|o| o.refcount);
        let value = tracked.get().map_err(|e| e.to_string())?;
        if refcount == Some(2) && value == 6 && info.connections == 3 {
            Ok(())
        } else {
            Err(format!("value {value}, {info:?}"))
        }
    });

    child.0.kill().expect("cannot kill the child");
    wait_refcount(&observer, id, Some(1));
    assert_eq!(drops.tracked(), 0, "the parent's reference keeps it alive");
    assert_eq!(tracked.get().unwrap(), 6);

    // A released object cannot be attached again.
    let token = tracked.base().token().clone();
    drop(tracked);
    wait_refcount(&observer, id, None);
    let error = observer.attach::<TrackedBlockingProxy>(&token).unwrap_err();
    let remote = error.as_remote().expect("a remote error");
    assert_eq!(
        remote.kind,
        manager::RemoteErrorKind::UnknownObject,
        "{remote:?}"
    );
}

fn abandoned_call_returning_a_proxy_releases_its_object() {
    MAKE_LATER_RELEASED.store(false, Ordering::SeqCst);
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let observer = server.connect();
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (address, authkey) = (server.address().clone(), server.authkey().clone());
    let (manager, maker) = client_runtime.block_on(async move {
        let manager = Manager::connect(&address, &authkey).await.unwrap();
        let maker = manager.create(&TRACKED_ASYNC, (0,)).await.unwrap();
        (manager, maker)
    });
    let call = client_runtime.spawn({
        let maker = maker.clone();
        async move { maker.make_later::<TrackedProxy>(42).await }
    });
    wait_until(
        "the call to wait in the server",
        || match MAKE_LATER_WAITING.load(Ordering::SeqCst) {
            1 => Ok(()),
            n => Err(format!("{n} waiting")),
        },
    );

    // The caller gives up: the client tells the server to cancel the call. Either the cancel
    // arrives first (the method is dropped and makes nothing), or the server has already made
    // the object and sent a proxy nobody wants, which the client releases. No object is left.
    call.abort();
    let aborted = client_runtime.block_on(call);
    assert!(aborted.is_err_and(|e| e.is_cancelled()));
    MAKE_LATER_RELEASED.store(true, Ordering::SeqCst);

    wait_until("the unwanted object to be released", || {
        let info = observer.debug_info().map_err(|e| e.to_string())?;
        let tracked = typeid_objects(&info, "tracked");
        if MAKE_LATER_WAITING.load(Ordering::SeqCst) == 0 && tracked.len() == 1 {
            Ok(())
        } else {
            Err(format!("{info:?}"))
        }
    });
    // Made and released (one drop), or never made (none).
    assert!(drops.tracked() <= 1, "{} drops", drops.tracked());

    // A call that is awaited gets its proxy, which holds the one reference.
    let made = client_runtime
        .block_on(async { within("make_later", maker.make_later::<TrackedProxy>(7)).await })
        .unwrap();
    let made_id = made.base().token().id;
    wait_refcount(&observer, made_id, Some(1));
    assert_eq!(client_runtime.block_on(made.get()).unwrap(), 7);
    drop((made, maker, manager));
    wait_server_state(&observer, 1, 1, 1);
    client_runtime.shutdown_timeout(Duration::from_secs(5));
}

fn shared_instance_survives_all_clients() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let observer = server.connect();
    let info = observer.debug_info().unwrap();
    let shared = shared_object(&info);
    let shared_id = shared.id;
    assert_eq!(shared.refcount, 1, "the server's own reference");

    for round in 1..=3 {
        let client = server.connect();
        let proxy = client.create(&SHARED, ()).unwrap();
        assert_eq!(proxy.base().token().id, shared_id, "the same object");
        let copy = proxy.clone();
        assert_eq!(copy.add(10).unwrap(), 10 * round, "state carried over");
        wait_refcount(&observer, shared_id, Some(3));
        drop(proxy);
        drop(copy);
        drop(client);
        wait_server_state(&observer, 1, 1, 1);
        assert_eq!(
            drops.shared(),
            0,
            "round {round}: the shared instance was dropped"
        );
    }

    // A client whose connection closes without releasing anything leaves it alive too.
    let client = server.connect();
    let proxy = client.create(&SHARED, ()).unwrap();
    assert_eq!(proxy.get().unwrap(), 30);
    std::mem::forget(proxy);
    drop(client);
    wait_refcount(&observer, shared_id, Some(2));
    assert_eq!(drops.shared(), 0);
}

fn number_of_objects_and_debug_info_report_id_typeid_refcount() {
    let drops = Drops::default();
    let server = InProcessServer::tcp(registry(&drops));
    let client = server.connect();
    let observer = server.connect();

    let info = observer.debug_info().unwrap();
    assert_eq!(info.objects.len(), 1);
    assert_eq!(observer.number_of_objects().unwrap(), 1);
    assert_eq!(&info.address, server.address());

    let a = client.create(&TRACKED, (5,)).unwrap();
    let b = client.create(&TRACKED, (6,)).unwrap();
    let b2 = b.clone();
    let s = client.create(&SHARED, ()).unwrap();
    let (a_id, b_id, s_id) = (
        a.base().token().id,
        b.base().token().id,
        s.base().token().id,
    );
    wait_refcount(&observer, b_id, Some(2));

    assert_eq!(observer.number_of_objects().unwrap(), 3);
    assert_eq!(client.number_of_objects().unwrap(), 3);
    let info = observer.debug_info().unwrap();
    assert_eq!(info.objects.len(), 3);
    assert_eq!(info.connections, 2);
    assert_eq!(&info.address, server.address());
    let ids: Vec<u64> = info.objects.iter().map(|o| o.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted, "objects are listed in id order");

    for (id, typeid, refcount) in [
        (a_id, "tracked", 1),
        (b_id, "tracked", 2),
        (s_id, "shared", 2),
    ] {
        let o = object(&info, id).unwrap_or_else(|| panic!("object {id} missing: {info:?}"));
        assert_eq!(o.typeid, typeid);
        assert!(
            o.type_name.ends_with("Tracked"),
            "type_name {:?}",
            o.type_name
        );
        assert_eq!(o.refcount, refcount, "{o:?}");
    }
    assert_eq!(a.base().token().typeid, "tracked");
    assert_eq!(&a.base().token().address, server.address());

    drop((a, b, b2, s));
    wait_server_state(&observer, 1, 1, 2);
    assert_eq!(observer.number_of_objects().unwrap(), 1);
}

fn start_runs_server_in_child_process_and_shutdown_stops_it() {
    let manager = BaseManager::new(Address::local_tcp())
        .start(server_registry)
        .expect("cannot start the server");
    let pid = manager.server_process().expect("a started server").pid();
    assert_ne!(pid, std::process::id());
    let server = ProcessIdentity::of(pid);
    assert!(server.exists());
    match manager.address() {
        Address::Tcp(host_port) => assert!(!host_port.ends_with(":0"), "{host_port}"),
        other => panic!("expected a TCP address, got {other}"),
    }

    let tracked = manager.create(&TRACKED, (3,)).unwrap();
    assert_eq!(tracked.add(4).unwrap(), 7);
    assert_eq!(
        tracked.pid().unwrap(),
        pid,
        "the referent lives in the server"
    );
    let other = BaseManager::new(manager.address().clone())
        .connect()
        .unwrap();
    assert_eq!(other.number_of_objects().unwrap(), 2);

    manager.shutdown().expect("shutdown failed");
    assert!(!server.exists(), "server process {pid} is still there");

    // Later calls fail clearly on both connections.
    let error = tracked.get().unwrap_err();
    assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
    let error = other.number_of_objects().unwrap_err();
    assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
}

fn dropping_started_manager_stops_server_process() {
    let manager = BaseManager::new(Address::local_tcp())
        .start(server_registry)
        .expect("cannot start the server");
    let pid = manager.server_process().expect("a started server").pid();
    let server = ProcessIdentity::of(pid);
    assert!(server.exists());
    let address = manager.address().clone();
    let clone = manager.clone();
    let tracked = manager.create(&TRACKED, (1,)).unwrap();
    assert_eq!(tracked.get().unwrap(), 1);

    drop(manager);
    assert!(
        server.exists(),
        "a clone of the manager still holds the server"
    );
    assert_eq!(clone.number_of_objects().unwrap(), 2);

    // The last clone goes while a proxy is still alive.
    drop(clone);
    assert!(!server.exists(), "server process {pid} is still there");
    let error = tracked.get().unwrap_err();
    assert!(matches!(error, Error::ConnectionClosed(_)), "{error:?}");
    let error = BaseManager::new(address).connect().unwrap_err();
    assert!(matches!(error, Error::Connect { .. }), "{error:?}");
}

fn serve_forever_in_process_stops_on_client_shutdown() {
    let drops = Drops::default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let key = manager::AuthKey::random();
        let server = Server::bind(
            registry(&drops),
            &Address::local_tcp(),
            key.clone(),
            ServerConfig::default(),
        )
        .await
        .unwrap();
        let address = server.address().clone();
        let served = tokio::spawn(server.serve_forever());

        let client = Manager::connect(&address, &key).await.unwrap();
        let tracked = client.create(&TRACKED_ASYNC, (2,)).await.unwrap();
        assert_eq!(tracked.add(1).await.unwrap(), 3);
        client.shutdown().await.expect("shutdown failed");

        within("serve_forever to return", served)
            .await
            .expect("the server task panicked")
            .expect("serve_forever failed");
        let error = Manager::connect(&address, &key).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error:?}");
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
}

fn base_manager_serve_forever_stops_on_client_shutdown() {
    let socket = TempPath::socket("serve-forever");
    let base = BaseManager::new(socket.address());
    let serving = std::thread::spawn({
        let base = base.clone();
        move || base.serve_forever_blocking(registry(&Drops::default()))
    });
    let client = wait_until("the server to listen", || {
        if serving.is_finished() {
            panic!("serve_forever ended early");
        }
        base.connect().map_err(|e| e.to_string())
    });
    let tracked = client.create(&TRACKED, (4,)).unwrap();
    assert_eq!(tracked.get().unwrap(), 4);
    assert_eq!(&tracked.base().token().address, &socket.address());

    client.shutdown().expect("shutdown failed");
    wait_until("serve_forever to return", || {
        if serving.is_finished() {
            Ok(())
        } else {
            Err("still serving".to_string())
        }
    });
    serving
        .join()
        .expect("the serving thread panicked")
        .expect("serve_forever failed");
    assert!(
        !socket.path().exists(),
        "the socket file is removed when the server stops"
    );
}

fn process_spawn_runs_entry_with_arguments_and_reports_exit_status() {
    let out = TempPath::file("report");
    let words = vec!["hello".to_string(), "from the parent".to_string()];
    let mut child = ChildGuard(
        Process::spawn(report, (out.path().to_path_buf(), words, 7)).expect("cannot spawn"),
    );
    let (pid, name) = (child.0.pid(), child.0.name().to_string());
    assert_ne!(pid, std::process::id());
    let status = child.join();
    assert_eq!(status.code(), Some(7), "{status}");
    assert!(!child.0.is_alive());

    let text = std::fs::read_to_string(out.path()).expect("the child wrote no report");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [pid.to_string().as_str(), &name, "hello from the parent"]
    );

    let mut ok = ChildGuard(
        Process::spawn_with_name(
            report,
            (out.path().to_path_buf(), Vec::<String>::new(), 0),
            "reporter",
        )
        .expect("cannot spawn"),
    );
    assert!(ok.join().success());
    let text = std::fs::read_to_string(out.path()).unwrap();
    assert_eq!(text.lines().nth(1), Some("reporter"));

    let mut failing =
        ChildGuard(Process::spawn(fail_with, ("on purpose".to_string(),)).expect("cannot spawn"));
    let status = failing.join();
    assert!(!status.success());
    assert_eq!(status.code(), Some(1), "{status}");

    let error = Process::spawn(not_an_entry, ()).unwrap_err();
    assert!(
        matches!(&error, Error::Process(message) if message.contains("#[manager::entry]")),
        "{error:?}"
    );
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(each_proxy_holds_one_reference_clone_adds_one_drop_releases_one),
        case!(object_without_references_is_dropped_on_server),
        case!(closing_connection_releases_every_reference_it_held),
        case!(sigkilled_child_leaves_no_objects_behind),
        case!(token_attached_in_another_process_takes_its_own_reference),
        case!(abandoned_call_returning_a_proxy_releases_its_object),
        case!(shared_instance_survives_all_clients),
        case!(number_of_objects_and_debug_info_report_id_typeid_refcount),
        case!(start_runs_server_in_child_process_and_shutdown_stops_it),
        case!(dropping_started_manager_stops_server_process),
        case!(serve_forever_in_process_stops_on_client_shutdown),
        case!(base_manager_serve_forever_stops_on_client_shutdown),
        case!(process_spawn_runs_entry_with_arguments_and_reports_exit_status),
    ]);
}
