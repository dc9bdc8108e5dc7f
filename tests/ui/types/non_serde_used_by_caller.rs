// A non-serde argument used through the proxies, the dispatcher and a registration: still
// one error, on the type, and none in the code that uses the proxy.

pub struct Point {
    pub x: i64,
}

#[derive(Default)]
pub struct Canvas {
    points: Vec<i64>,
}

#[manager::shared]
impl Canvas {
    pub fn add(&mut self, point: Point) {
        self.points.push(point.x);
    }
}

fn consumer(canvas: &CanvasBlockingProxy) -> manager::Result<()> {
    canvas.add(Point { x: 1 })
}

fn main() {
    let _ = consumer;
}
