// `pub(crate)` is not exposed: exposing a method lets every process holding the authkey call
// it, a decision of the public API that `pub(crate)` does not make.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub(crate) fn secret(&self) -> String {
        format!("{}", self.x)
    }
}

async fn consumer(pair: &PairProxy) -> manager::Result<String> {
    pair.secret().await
}

fn main() {
    let _ = consumer;
    let _ = Pair::secret;
}
