// A shared method cannot take a name that the generated proxies already use.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn into_blocking(&self) -> i64 {
        self.x
    }
}

fn main() {}
