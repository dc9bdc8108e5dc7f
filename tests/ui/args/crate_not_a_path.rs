// `crate` takes a path in a string.

pub struct Pair {
    x: i64,
}

#[manager::shared(crate = manager)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

pub struct Other {
    x: i64,
}

#[manager::shared(crate = "not a path")]
impl Other {
    pub fn get_y(&self) -> i64 {
        self.x
    }
}

fn main() {}
