// `#[shared]` goes on an inherent impl block, not a trait impl.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Default for Pair {
    fn default() -> Self {
        Pair { x: 0 }
    }
}

fn main() {}
