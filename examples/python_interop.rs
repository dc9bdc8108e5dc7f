//! `python_interop`: unmodified CPython processes use a Rust manager.
//!
//! The Rust server hosts the built-in types and the seed's `Pair`/`ItemWrapper`, for native
//! clients on one address and for CPython's `multiprocessing.managers` clients on another. A
//! Python `SyncManager` and this Rust process share one queue and one dict.
//! Run with `cargo run --example python_interop` (needs `python3`).

use std::process::Command;
use std::sync::{Arc, Mutex};

use manager::proxy::shape::Dynamic;
use manager::value::Value;
use manager::{Address, BaseManager, Register, Registry, ServerConfig};

/// The seed's `Item`: cloning shares the state, as a Python reference does. It holds any
/// value, since the seed's consumer sets it to ints.
#[derive(Clone, Debug)]
pub struct Item(Arc<Mutex<Value>>);

/// The seed's `Pair`.
#[derive(Debug)]
pub struct Pair {
    x: i64,
    y: i64,
    i: Item,
}

#[manager::shared(method_to_typeid = { get_item: "ItemWrapper" })]
impl Pair {
    /// The item, as a proxy to an `ItemWrapper`.
    pub fn get_item(&self) -> Item {
        self.i.clone()
    }
    /// Returns `x`.
    pub fn get_x(&self) -> i64 {
        self.x
    }
    /// Returns `y`.
    pub fn get_y(&self) -> i64 {
        self.y
    }
    /// Sets `x`.
    pub fn set_x(&mut self, new_x: i64) {
        self.x = new_x;
    }
    /// Sets `y`.
    pub fn set_y(&mut self, new_y: i64) {
        self.y = new_y;
    }
}

/// The seed's `ItemWrapper`.
#[derive(Debug)]
pub struct ItemWrapper {
    item: Item,
}

#[manager::shared]
impl ItemWrapper {
    /// Changes the wrapped item.
    pub fn set_wrapped_item(&self, new_item: Value) {
        *self.item.0.lock().unwrap_or_else(|e| e.into_inner()) = new_item;
    }
    /// The wrapped item.
    pub fn get_wrapped_item(&self) -> Value {
        self.item
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The server's registry: the built-in types, the shared pair and the wrapper.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    manager::sync::register(&mut registry)?;
    registry.register(
        Register::<ItemWrapper>::new("ItemWrapper").from_result(|item: Item| ItemWrapper { item }),
    )?;
    registry.register(Register::shared(
        "get_pair",
        Pair {
            x: 15,
            y: 6,
            i: Item(Arc::new(Mutex::new(Value::Str("intialized".into())))),
        },
    ))?;
    Ok(registry)
}

/// The seed's consumer, unchanged but for the address and the key.
const CONSUMER: &str = r#"
import sys
from multiprocessing.managers import BaseManager

class ItemWrapper: pass

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
mgr = BaseManager(address=(host, port), authkey=key)
mgr.register('ItemWrapper', ItemWrapper)
mgr.register('get_pair')
mgr.connect()

p = mgr.get_pair()
proxy1 = p.get_item()
print("proxy1 sees item as : " + str(proxy1.get_wrapped_item()))
old_val = proxy1.get_wrapped_item()
proxy1._callmethod('set_wrapped_item', (7,))
print("proxy1 changes item from {0} to {1}".format(old_val, proxy1.get_wrapped_item()))

proxy2 = mgr.get_pair().get_item()
print("proxy2 sees item as : " + str(proxy2.get_wrapped_item()))
old_val = proxy2.get_wrapped_item()
proxy2.set_wrapped_item(11)
print("proxy2 changes item from {0} to {1}".format(old_val, proxy2.get_wrapped_item()))
print("proxy1 sees item as : " + str(proxy1.get_wrapped_item()))
"#;

/// A Python `SyncManager` client sharing a queue and a dict with this process.
const SYNC: &str = r#"
import sys
from multiprocessing.managers import SyncManager, BaseProxy

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
m = SyncManager(address=(host, port), authkey=key)
m.connect()
q = m.Queue()
d = m.dict()
print("python made a queue and a dict")
sys.stdout.flush()
sys.stdin.readline()  # the Rust side has put its work in
while not q.empty():
    job = q.get()
    d[job["name"]] = job["n"] * job["n"]
q.put({"name": "from python", "n": 3})
print("python squared", len(d), "jobs")
"#;

fn python(script: &str, args: &[String]) -> std::io::Result<std::process::Child> {
    Command::new(std::env::var("MANAGER_PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
}

/// Starts the server and runs both Python clients against it.
pub fn run() -> manager::Result<()> {
    let key = "python-interop";
    let mut config = ServerConfig::default();
    config.python_address = Some(Address::tcp("127.0.0.1:0"));
    let manager = BaseManager::new(Address::local_tcp())
        .authkey(key)
        .config(config)
        .start(registry)?;
    let Some(Address::Tcp(python_at)) = manager.connection().python_address().cloned() else {
        return Err(manager::Error::Process(
            "the server takes no CPython clients".into(),
        ));
    };
    let (host, port) = python_at.rsplit_once(':').expect("host:port");
    let args = [host.to_string(), port.to_string(), key.to_string()];

    // The seed's consumer in CPython, against the Rust producer.
    let consumer = python(CONSUMER, &args)?.wait_with_output()?;
    print!("{}", String::from_utf8_lossy(&consumer.stdout));
    if !consumer.status.success() {
        return Err(manager::Error::Process(format!(
            "the Python consumer failed: {}",
            consumer.status
        )));
    }
    let pair = manager.create_dynamic("get_pair", ())?;
    let item = match pair.call_blocking::<Dynamic>("get_item", ())? {
        manager::CallResult::Proxy(item) => item,
        manager::CallResult::Value(_) => unreachable!("get_item is mapped"),
    };
    let seen: Value = item.call_method_blocking("get_wrapped_item", ())?;
    println!("\nAfter changes in consumer process, the producer process sees item as = {seen}");

    // A Python SyncManager and this process share one queue and one dict.
    let mut sync = python(SYNC, &args)?;
    let mut out = std::io::BufReader::new(sync.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line)?;
    print!("{line}");
    let objects = manager.debug_info()?.objects;
    let queue_id = objects
        .iter()
        .rev()
        .find(|o| o.typeid == "Queue")
        .map(|o| o.id);
    let dict_id = objects
        .iter()
        .rev()
        .find(|o| o.typeid == "dict")
        .map(|o| o.id);
    let (Some(queue_id), Some(dict_id)) = (queue_id, dict_id) else {
        return Err(manager::Error::Process(
            "the Python client made no queue".into(),
        ));
    };
    let token = |id, typeid: &str| manager::Token {
        typeid: typeid.into(),
        address: manager.connection().server_address().clone(),
        id,
        instance: 0,
    };
    let queue: manager::sync::QueueBlockingProxy<Job> =
        manager.attach(&token(queue_id, "Queue"))?;
    let dict: manager::sync::DictBlockingProxy<String, i64> =
        manager.attach(&token(dict_id, "dict"))?;
    for (name, n) in [("a", 2), ("b", 4)] {
        queue.put(&Job {
            name: name.into(),
            n,
        })?;
    }
    std::io::Write::write_all(sync.stdin.as_mut().expect("stdin"), b"go\n")?;
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest)?;
    print!("{rest}");
    if !sync.wait()?.success() {
        return Err(manager::Error::Process(
            "the Python SyncManager client failed".into(),
        ));
    }
    println!("rust reads the dict: {:?}", dict.items()?);
    println!("rust gets from the queue: {:?}", queue.get()?);
    manager.shutdown()
}

/// A job, as both languages see it: a dict with a name and a number.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Job {
    name: String,
    n: i64,
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
