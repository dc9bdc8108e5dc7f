// A method mapped to a type returns that type's proxy: taking it as another proxy type is a
// compile error, not a surprise at run time.

pub struct Item {
    value: String,
}

#[manager::shared]
impl Item {
    pub fn get(&self) -> String {
        self.value.clone()
    }
}

pub struct Other;

#[manager::shared]
impl Other {
    pub fn ping(&self) {}
}

pub struct Pair {
    item: String,
}

#[manager::shared(method_to_typeid = { get_item: Item })]
impl Pair {
    pub fn get_item(&self) -> Item {
        Item {
            value: self.item.clone(),
        }
    }
}

fn use_it(pair: &PairBlockingProxy) -> manager::Result<()> {
    let other: OtherBlockingProxy = pair.get_item()?;
    other.ping()
}

fn main() {}
