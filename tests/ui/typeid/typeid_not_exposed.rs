// `method_to_typeid` names a method that exists but is not in `exposed`.

pub struct Counter {
    n: i64,
}

#[manager::shared(exposed = [get], method_to_typeid = { child: "Counter" })]
impl Counter {
    pub fn get(&self) -> i64 {
        self.n
    }

    pub fn child(&self) -> Counter {
        Counter { n: self.n + 1 }
    }
}

fn main() {}
