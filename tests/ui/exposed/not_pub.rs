// Without `exposed`, only `pub` methods are exposed: calling a private one through a proxy
// says it is not exposed, and lists the exposed methods.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn set_x(&mut self, x: i64) {
        self.x = x;
    }

    fn reset(&mut self) {
        self.x = 0;
    }
}

fn consumer(pair: &PairBlockingProxy) -> manager::Result<()> {
    pair.reset()
}

fn main() {
    let _ = consumer;
    let _ = Pair::reset;
}
