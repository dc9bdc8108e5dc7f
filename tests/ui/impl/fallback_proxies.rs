// With an error in the attribute, the proxies are still generated with the methods that are
// fine, so the code that uses them (and an editor completing it) reports nothing more: the
// only error is the attribute's.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x, set_x], proxies = ture)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn set_x(&mut self, x: i64) {
        self.x = x;
    }
}

fn consumer(pair: &PairBlockingProxy) -> manager::Result<i64> {
    pair.set_x(1)?;
    pair.clone().with_timeout(std::time::Duration::from_secs(1)).get_x()
}

async fn async_consumer(pair: PairProxy) -> manager::Result<i64> {
    pair.into_blocking().into_async().get_x().await
}

fn main() {
    let _ = (consumer, async_consumer);
}
