// A type that derives `Deserialize` but not `Serialize`: one error, on the type.

#[derive(serde::Deserialize)]
pub struct Point {
    pub x: i64,
}

pub struct Canvas {
    points: Vec<i64>,
}

#[manager::shared]
impl Canvas {
    pub fn add(&mut self, point: Point) {
        self.points.push(point.x);
    }
}

fn main() {}
