// Every method in error is reported in one build; the fine one still gets its proxy method.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn by_value(self) -> i64 {
        self.x
    }

    pub fn name(&self) -> &str {
        "pair"
    }

    pub fn add(&mut self, by: &mut i64) {
        self.x += *by;
    }
}

fn consumer(pair: &PairBlockingProxy) -> manager::Result<i64> {
    pair.get_x()
}

fn main() {
    let _ = consumer;
}
