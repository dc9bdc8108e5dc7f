// A stream's items travel by value: the item type must be serde.

use manager::Stream;

pub struct NotSerde;

pub struct Numbers;

#[manager::shared]
impl Numbers {
    pub fn things(&self) -> Stream<NotSerde> {
        Stream::iter(std::iter::empty())
    }
}

fn main() {}
