// A `&CallContext` parameter is passed by the server, anywhere in the list: the proxies do
// not have it.

use manager::CallContext;

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn add(&mut self, context: &CallContext, by: i64) -> i64 {
        let _ = context;
        self.x += by;
        self.x
    }

    pub fn get_x(&self, _context: &manager::CallContext) -> i64 {
        self.x
    }
}

fn blocking(pair: &PairBlockingProxy) -> manager::Result<i64> {
    pair.add(1)?;
    pair.get_x()
}

async fn asynchronous(pair: &PairProxy) -> manager::Result<i64> {
    pair.add(1).await
}

fn main() {
    let _ = (blocking, asynchronous);
}
