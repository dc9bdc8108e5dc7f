// An `unsafe` method cannot be called from another process: nothing there can uphold its
// contract.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub unsafe fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
