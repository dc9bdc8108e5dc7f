// A generic impl block can be shared (the registration fixes its parameters), but its proxies
// are not generic, so an exposed method cannot name a parameter of the block.

pub struct Cell<T> {
    value: T,
}

#[manager::shared]
impl<T: Clone> Cell<T> {
    pub fn get(&self) -> T {
        self.value.clone()
    }
}

fn main() {}
