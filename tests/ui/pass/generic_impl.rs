// A generic impl block is shared for every choice of its parameters: each registration fixes
// them, so one impl serves two typeids, and one pair of (non-generic) proxies serves both.

use manager::{Register, Registry};

pub struct Counter<const STEP: i64> {
    n: i64,
}

#[manager::shared]
impl<const STEP: i64> Counter<STEP> {
    pub fn bump(&mut self) -> i64 {
        self.n += STEP;
        self.n
    }
}

fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("by_one", |(): ()| Counter::<1> { n: 0 }))?;
    registry.register(Register::factory("by_ten", |(): ()| Counter::<10> { n: 0 }))?;
    Ok(registry)
}

fn blocking(counter: &CounterBlockingProxy) -> manager::Result<i64> {
    counter.bump()
}

async fn asynchronous(counter: &CounterProxy) -> manager::Result<i64> {
    counter.bump().await
}

fn main() {
    let _ = (registry, blocking, asynchronous);
}
