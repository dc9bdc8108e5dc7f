// A method that takes `self` by value cannot run on an object the server keeps.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x, into_x])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn into_x(self) -> i64 {
        self.x
    }
}

fn main() {}
