// `#[shared]` arguments that do not parse.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x], 42)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
