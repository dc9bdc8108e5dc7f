// `method_to_typeid` given twice, and one method mapped twice inside it.

pub struct Pair {
    x: i64,
}

#[manager::shared(
    method_to_typeid = { get_x: "Int", get_x: "Int" },
    method_to_typeid = { get_x: "Int" },
)]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

fn main() {}
