// Several mistakes in one attribute: every one is reported, each on its token, in one build.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposd = [get_x], proxies = 1, exposed = [get_x, nope], exposed = [get_x])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
