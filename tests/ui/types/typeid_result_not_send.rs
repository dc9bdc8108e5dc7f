// A `method_to_typeid` result becomes an object in the server, shared between its threads: it
// must be `Send + 'static`.

use std::rc::Rc;

pub struct Tree {
    root: i64,
}

#[manager::shared(method_to_typeid = { root: "Node" })]
impl Tree {
    pub fn root(&self) -> Rc<i64> {
        Rc::new(self.root)
    }
}

fn main() {}
