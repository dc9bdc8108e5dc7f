// A result type without serde cannot be sent back to the caller.

pub struct Point {
    pub x: i64,
}

pub struct Canvas {
    x: i64,
}

#[manager::shared]
impl Canvas {
    pub fn first(&self) -> Point {
        Point { x: self.x }
    }
}

fn main() {}
