// A generic impl block cannot be shared: the server must hold one concrete type.

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
