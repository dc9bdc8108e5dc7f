// `exposed` names a method that the impl block does not have.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x, get_z])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn set_x(&mut self, x: i64) {
        self.x = x;
    }
}

fn main() {}
