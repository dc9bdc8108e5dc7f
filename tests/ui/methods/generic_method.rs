// A generic method cannot be exposed: the server cannot pick `T` from the bytes it receives.

pub struct Store {
    len: usize,
}

#[manager::shared]
impl Store {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push<T: serde::Serialize>(&mut self, value: T) {
        let _ = value;
        self.len += 1;
    }
}

fn main() {}
