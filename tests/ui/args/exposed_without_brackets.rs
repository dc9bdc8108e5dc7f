// `exposed` takes a bracketed list.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = get_x)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
