// A typeid declared with `Typeid::without_create` (Python's `create_method=False`) cannot be
// passed to `create`.

use manager::{Address, BaseManager, Typeid};

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

const PAIR: Typeid<PairBlockingProxy, (), manager::NoCreate> = Typeid::without_create("Pair");

fn main() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).connect()?;
    let pair = manager.create(&PAIR, ())?;
    let _ = pair.get_x()?;
    Ok(())
}
