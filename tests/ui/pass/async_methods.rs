// `async fn` methods: `&self` and `&mut self`, holding their lock across `.await`; the proxies
// look the same as for plain methods.

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub async fn get_x(&self) -> i64 {
        self.x
    }

    pub async fn set_x(&mut self, x: i64) -> Result<i64, String> {
        let old = self.x;
        self.x = x;
        Ok(old)
    }
}

fn blocking(pair: &PairBlockingProxy) -> manager::Result<i64> {
    let _old: Result<i64, String> = pair.set_x(2)?;
    pair.get_x()
}

async fn asynchronous(pair: &PairProxy) -> manager::Result<i64> {
    pair.get_x().await
}

fn main() {
    let _ = (blocking, asynchronous);
}
