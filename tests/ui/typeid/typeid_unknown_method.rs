// `method_to_typeid` names a method that the impl block does not have.

pub struct List {
    items: Vec<i64>,
}

#[manager::shared(method_to_typeid = { iter: "Iterator" })]
impl List {
    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

fn main() {}
