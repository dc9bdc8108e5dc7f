// `proxies` given twice.

pub struct Pair {
    x: i64,
}

#[manager::shared(proxies = true, proxies = false)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
