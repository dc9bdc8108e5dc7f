// A method left out of `exposed` (or private, or `pub(crate)`) is still an ordinary method of
// the type in its own process; only the proxies lack it.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn reset(&mut self) {
        self.x = 0;
    }

    pub(crate) fn double(&self) -> i64 {
        self.x * 2
    }
}

fn main() {
    let mut pair = Pair { x: 3 };
    assert_eq!(pair.double(), 6);
    pair.reset();
    assert_eq!(pair.get_x(), 0);
}
