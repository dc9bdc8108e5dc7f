//! `spawn_list`: processes started by spawning, and a registered callable that returns a list.
//!
//! The seed sets the start method to "spawn" and registers a top-level function that returns a
//! new built-in list (`["set by <process name>"]`) for every call, served with the list's own
//! proxy type; a second process appends to the list it gets and prints both items. Rust never
//! forks: every process here is spawned by running this executable again. Run with
//! `cargo run --example spawn_list`.

use manager::sync::{ListBlockingProxy, ListObject};
use manager::{current_process_name, Address, BaseManager, Process, Register, Registry, Typeid};

/// The seed's `top_level_function`: a new built-in list, made in the server process, that says
/// which process made it (Python: `Manager().list(["set by ..."])`).
pub(crate) fn top_level_function() -> ListObject {
    ListObject::from_items([format!("set by {}", current_process_name())])
        .expect("a string is a plain value")
}

/// Process A's registry (Python: `register('get_my_items', callable=top_level_function,
/// proxytype=ListProxy)`): each create calls the function and serves the list it returns.
#[manager::entry]
pub(crate) fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("get_my_items", |(): ()| {
        top_level_function()
    }))?;
    Ok(registry)
}

/// The proxy type is the built-in list's, as the seed's `proxytype=ListProxy`.
const GET_MY_ITEMS: Typeid<ListBlockingProxy<String>> = Typeid::new("get_my_items");

/// Process A: starts the manager, and keeps it running while process B uses it.
#[manager::entry]
pub(crate) fn process_a(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).start(registry)?;
    let status = Process::spawn(process_b, (manager.address().clone(),))?.join()?;
    manager.shutdown()?;
    if !status.success() {
        return Err(manager::Error::Process(format!(
            "process B failed: {status}"
        )));
    }
    Ok(())
}

/// Process B: connects, gets a list, appends to it and prints both items.
#[manager::entry]
pub(crate) fn process_b(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let proxy_items = manager.create(&GET_MY_ITEMS, ())?;
    proxy_items.append(&"Educative is Great !".to_string())?;

    println!("{}", proxy_items.get(0)?);
    println!("{}", proxy_items.get(1)?);
    Ok(())
}

/// Spawns process A, as the seed's `__main__` does.
pub(crate) fn run() -> manager::Result<()> {
    let status = Process::spawn(process_a, (Address::local_tcp(),))?.join()?;
    if !status.success() {
        return Err(manager::Error::Process(format!(
            "process A failed: {status}"
        )));
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
