// The error type of a `Result<T, E>` travels to the caller too: it must be serde.

#[derive(Debug)]
pub struct Oops;

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> Result<i64, Oops> {
        Ok(self.x)
    }
}

fn main() {}
