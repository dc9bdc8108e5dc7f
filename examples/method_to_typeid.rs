//! `method_to_typeid`: a method's result comes back as a proxy to a new server-side object.
//!
//! The seed maps `Pair.get_item` to the typeid `ItemWrapper`: the server wraps the pair's item
//! in an `ItemWrapper` and returns a proxy to it, so a change made through the proxy changes
//! the item the shared pair holds. proxy1 sees "intialized" and sets 7; proxy2 sees 7 and sets
//! 11; proxy1 sees 11; and so does the producer. Run with `cargo run --example method_to_typeid`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use std::sync::{Arc, Mutex};

use manager::{Address, BaseManager, Process, Proxy as _, Register, Registry, Typeid};

/// The seed's `Item`. Cloning it shares the state: the server-side `ItemWrapper` and the pair
/// hold the same item, as Python's references do.
#[derive(Clone, Debug)]
pub struct Item(Arc<Mutex<String>>);

impl Default for Item {
    /// A new item, "intialized" (sic, as in the seed).
    fn default() -> Self {
        Item(Arc::new(Mutex::new("intialized".to_string())))
    }
}

impl Item {
    /// Replaces the item's value.
    pub fn change(&self, new_item: String) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = new_item;
    }

    /// The item's value.
    pub fn retrieve(&self) -> String {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The seed's `Pair`, holding an item.
#[derive(Debug)]
pub struct Pair {
    x: i64,
    y: i64,
    i: Item,
}

// Mapped to the type `ItemWrapper` (Python maps to the typeid string 'ItemWrapper', which
// works here too): `get_item` then returns `ItemWrapperProxy` / `ItemWrapperBlockingProxy`,
// checked at compile time, and the server makes objects of the typeid "ItemWrapper".
#[manager::shared(method_to_typeid = { get_item: ItemWrapper })]
impl Pair {
    /// A pair with a fresh item.
    pub fn new(x: i64, y: i64) -> Self {
        Pair {
            x,
            y,
            i: Item::default(),
        }
    }

    /// The item the pair holds; mapped to `ItemWrapper`, so callers get a proxy.
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

/// The seed's `ItemWrapper`: made in the server from `get_item`'s result.
#[derive(Debug)]
pub struct ItemWrapper {
    item: Item,
}

#[manager::shared]
impl ItemWrapper {
    /// Wraps the item (Python: `ItemWrapper(res)`).
    pub fn new(res: Item) -> Self {
        ItemWrapper { item: res }
    }

    /// Changes the wrapped item.
    pub fn set_wrapped_item(&self, new_item: String) {
        self.item.change(new_item);
    }

    /// The wrapped item's value.
    pub fn get_wrapped_item(&self) -> String {
        self.item.retrieve()
    }
}

/// The producer's registry (Python: `register('ItemWrapper', ItemWrapper)` and
/// `register('get_pair', callable=lambda: pair, method_to_typeid={'get_item': 'ItemWrapper'})`;
/// the mapping is declared on the impl block, where the typed proxy sees it too).
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::<ItemWrapper>::new("ItemWrapper").from_result(ItemWrapper::new))?;
    registry.register(Register::shared("get_pair", Pair::new(15, 6)))?;
    Ok(registry)
}

const GET_PAIR: Typeid<PairBlockingProxy> = Typeid::new("get_pair");

/// The consumer process, line by line the seed's.
#[manager::entry]
pub fn consumer_process(address: Address) -> manager::Result<()> {
    let mgr = BaseManager::new(address).connect()?;

    let p = mgr.create(&GET_PAIR, ())?;
    let proxy1 = p.get_item()?;
    println!("proxy1 sees item as : {}", proxy1.get_wrapped_item()?);
    let old_val = proxy1.get_wrapped_item()?;
    // The dynamic path, as the seed's `proxy1._callmethod('set_wrapped_item', (7,))`.
    proxy1
        .base()
        .call_method_blocking::<_, ()>("set_wrapped_item", ("7",))?;
    println!(
        "proxy1 changes item from {} to {}",
        old_val,
        proxy1.get_wrapped_item()?
    );

    let proxy2 = mgr.create(&GET_PAIR, ())?.get_item()?;
    println!("proxy2 sees item as : {}", proxy2.get_wrapped_item()?);
    let old_val = proxy2.get_wrapped_item()?;
    proxy2.set_wrapped_item("11".to_string())?;
    println!(
        "proxy2 changes item from {} to {}",
        old_val,
        proxy2.get_wrapped_item()?
    );
    println!("proxy1 sees item as : {}", proxy1.get_wrapped_item()?);
    Ok(())
}

/// The producer process: starts the manager, lets the consumer work, then looks at the item.
#[manager::entry]
pub fn producer_process(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).start(registry)?;
    let status = Process::spawn(consumer_process, (manager.address().clone(),))?.join()?;
    let item: ItemWrapperBlockingProxy = manager.create(&GET_PAIR, ())?.get_item()?;
    println!(
        "\nAfter changes in consumer process, the producer process sees item as = {}",
        item.get_wrapped_item()?
    );
    drop(item);
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
