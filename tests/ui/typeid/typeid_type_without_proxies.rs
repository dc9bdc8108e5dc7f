// `method_to_typeid` maps to a type that has no `#[shared]` impl, so there is no proxy for the
// method to return: the error is on the user's type.

pub struct Item(String);

pub struct Pair {
    item: String,
}

#[manager::shared(method_to_typeid = { get_item: Item })]
impl Pair {
    pub fn get_item(&self) -> Item {
        Item(self.item.clone())
    }
}

fn main() {}
