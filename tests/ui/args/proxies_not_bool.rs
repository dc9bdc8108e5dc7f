// `proxies` takes `true` or `false`.

pub struct Pair {
    x: i64,
}

#[manager::shared(proxies = "no")]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
