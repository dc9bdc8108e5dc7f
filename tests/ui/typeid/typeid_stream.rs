// A stream method cannot be mapped by `method_to_typeid`: its items travel by value.

use manager::Stream;

pub struct Numbers;

#[manager::shared(method_to_typeid = { count: "Counter" })]
impl Numbers {
    pub fn count(&self, n: u64) -> Stream<u64> {
        Stream::iter(0..n)
    }
}

fn main() {}
