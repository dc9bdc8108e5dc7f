// An argument type without serde cannot be sent to the server.

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
