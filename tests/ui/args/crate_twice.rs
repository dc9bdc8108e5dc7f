// `crate` given twice: the second is reported, on its own token.

pub struct Pair {
    x: i64,
}

#[manager::shared(crate = "::manager", crate = "::manager")]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
