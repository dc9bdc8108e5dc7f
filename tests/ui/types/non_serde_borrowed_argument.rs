// `&T` and `&[T]` arguments are sent as `T` and `Vec<T>`: `T` must be serde.

pub struct Point {
    pub x: i64,
}

pub struct Canvas {
    points: Vec<i64>,
}

#[manager::shared]
impl Canvas {
    pub fn add(&mut self, point: &Point) {
        self.points.push(point.x);
    }

    pub fn add_all(&mut self, points: &[Point]) {
        self.points.extend(points.iter().map(|p| p.x));
    }
}

fn main() {}
