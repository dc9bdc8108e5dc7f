// A method that returns a borrow cannot be called remotely: results travel by value.

use std::borrow::Cow;

pub struct Pair {
    x: i64,
    name: String,
}

#[manager::shared]
impl Pair {
    pub fn x(&self) -> &i64 {
        &self.x
    }

    pub fn name<'a>(&'a self) -> Option<Cow<'a, str>> {
        Some(Cow::Borrowed(&self.name))
    }
}

fn main() {}
