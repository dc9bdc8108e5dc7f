//! `spawn_list`: processes started by spawning, and a registered callable that returns a list.
//!
//! The seed sets the start method to "spawn" and registers a top-level function that returns a
//! new list (`["set by <process name>"]`) for every call; a second process appends to the list
//! it gets and prints both items. Rust never forks: every process here is spawned by running
//! this executable again. Run with `cargo run --example spawn_list`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use manager::{current_process_name, Address, BaseManager, Process, Register, Registry, Typeid};

/// A list of strings held by the server.
#[derive(Debug)]
pub struct Items(Vec<String>);

#[manager::shared]
impl Items {
    /// Appends `item`.
    pub fn append(&mut self, item: String) {
        self.0.push(item);
    }

    /// The item at `index`, or an error message when there is none.
    pub fn get(&self, index: usize) -> Result<String, String> {
        self.0
            .get(index)
            .cloned()
            .ok_or_else(|| format!("list index {index} out of range"))
    }

    /// How many items the list holds.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The seed's `top_level_function`: a new list, made in the server process, that says which
/// process made it.
pub fn top_level_function() -> Items {
    Items(vec![format!("set by {}", current_process_name())])
}

/// Process A's registry (Python: `register('get_my_items', callable=top_level_function,
/// proxytype=ListProxy)`).
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("get_my_items", |(): ()| {
        top_level_function()
    }))?;
    Ok(registry)
}

const GET_MY_ITEMS: Typeid<ItemsBlockingProxy> = Typeid::new("get_my_items");

/// Process A: starts the manager, and keeps it running while process B uses it.
#[manager::entry]
pub fn process_a(address: Address) -> manager::Result<()> {
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
pub fn process_b(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let proxy_items = manager.create(&GET_MY_ITEMS, ())?;
    proxy_items.append("Educative is Great !".to_string())?;

    for index in 0..2 {
        match proxy_items.get(index)? {
            Ok(item) => println!("{item}"),
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

/// Spawns process A, as the seed's `__main__` does.
pub fn run() -> manager::Result<()> {
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
