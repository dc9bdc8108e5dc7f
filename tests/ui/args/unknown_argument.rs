// A misspelt argument of `#[shared]`.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposd = [get_x])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
