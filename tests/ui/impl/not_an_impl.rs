// `#[shared]` goes on an impl block, not on the type.

#[manager::shared]
pub struct Pair {
    x: i64,
}

fn main() {}
