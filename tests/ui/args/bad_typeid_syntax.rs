// `method_to_typeid` pairs are `method: "Typeid"`.

pub struct Counter {
    n: i64,
}

#[manager::shared(method_to_typeid = { child => "Counter" })]
impl Counter {
    pub fn child(&self) -> Counter {
        Counter { n: self.n + 1 }
    }
}

fn main() {}
