// Arguments not separated by `,`.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x] proxies = false)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
