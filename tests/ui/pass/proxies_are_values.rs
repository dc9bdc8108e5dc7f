// Generated proxies are ordinary values: `Clone`, `Debug`, `Send + Sync`, and serde types, so
// they can be arguments of a `#[manager::entry]` function (`Process::spawn`) or of another
// shared method.

use serde::{de::DeserializeOwned, Serialize};

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

pub struct Board;

#[manager::shared]
impl Board {
    pub fn read(&self, pair: PairBlockingProxy) -> i64 {
        pair.get_x().unwrap_or(0)
    }
}

#[manager::entry]
fn worker(pair: PairBlockingProxy) -> manager::Result<()> {
    pair.get_x().map(drop)
}

fn value<T: Clone + std::fmt::Debug + Send + Sync + Serialize + DeserializeOwned + 'static>() {}

fn main() {
    value::<PairProxy>();
    value::<PairBlockingProxy>();
    let _ = worker;
}
