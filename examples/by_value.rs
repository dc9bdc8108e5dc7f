//! `by_value`: without `method_to_typeid`, a method's result is a copy.
//!
//! The seed's last example drops the mapping: `get_item` returns a copy of the item, so the
//! consumer's changes touch only its own copies, and the producer still sees "intialized".
//! Run with `cargo run --example by_value`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use serde::{Deserialize, Serialize};

use manager::{Address, BaseManager, Process, Register, Registry, Typeid};

/// The seed's `Item`, a plain value: it travels by value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Item {
    item: String,
}

impl Default for Item {
    /// A new item, "intialized" (sic, as in the seed).
    fn default() -> Self {
        Item {
            item: "intialized".to_string(),
        }
    }
}

impl Item {
    /// Replaces the item's value.
    pub fn change(&mut self, new_item: String) {
        self.item = new_item;
    }

    /// The item's value.
    pub fn retrieve(&self) -> String {
        self.item.clone()
    }
}

/// The seed's `Pair`, holding an item.
#[derive(Debug)]
pub struct Pair {
    x: i64,
    y: i64,
    i: Item,
}

#[manager::shared]
impl Pair {
    /// A pair with a fresh item.
    pub fn new(x: i64, y: i64) -> Self {
        Pair {
            x,
            y,
            i: Item::default(),
        }
    }

    /// A copy of the item the pair holds.
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
}

/// The producer's registry: the shared pair, with no mapping for `get_item`.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::shared("get_pair", Pair::new(15, 6)))?;
    Ok(registry)
}

const GET_PAIR: Typeid<PairBlockingProxy> = Typeid::new("get_pair");

/// The consumer process, line by line the seed's.
#[manager::entry]
pub fn consumer_process(address: Address) -> manager::Result<()> {
    let mgr = BaseManager::new(address).connect()?;

    let p = mgr.create(&GET_PAIR, ())?;
    let mut item1 = p.get_item()?;
    println!("proxy1 sees item as : {}", item1.retrieve());
    let old_val = item1.retrieve();
    item1.change("7".to_string());
    println!(
        "proxy1 changes item from {} to {}",
        old_val,
        item1.retrieve()
    );

    let p2 = mgr.create(&GET_PAIR, ())?;
    let mut item2 = p2.get_item()?;
    println!("proxy2 sees item as : {}", item2.retrieve());
    let old_val = item2.retrieve();
    item2.change("11".to_string());
    println!(
        "proxy2 changes item from {} to {}",
        old_val,
        item2.retrieve()
    );
    println!("proxy1 sees item as : {}", item1.retrieve());
    Ok(())
}

/// The producer process: starts the manager, lets the consumer work, then looks at the item.
#[manager::entry]
pub fn producer_process(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).start(registry)?;
    let status = Process::spawn(consumer_process, (manager.address().clone(),))?.join()?;
    let item = manager.create(&GET_PAIR, ())?.get_item()?;
    println!(
        "\nAfter changes in consumer process, the producer process sees item as = {}",
        item.retrieve()
    );
    manager.shutdown()?;
    if !status.success() {
        return Err(manager::Error::Process(format!(
            "the consumer failed: {status}"
        )));
    }
    Ok(())
}

/// Runs the producer in its own process, as the seed's `__main__` does.
pub fn run() -> manager::Result<()> {
    let status = Process::spawn(producer_process, (Address::local_tcp(),))?.join()?;
    if !status.success() {
        return Err(manager::Error::Process(format!(
            "the producer failed: {status}"
        )));
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
