// An exposed method needs a receiver: the server calls it on the object it holds.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x, new])]
impl Pair {
    pub fn new(x: i64) -> Self {
        Pair { x }
    }

    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
