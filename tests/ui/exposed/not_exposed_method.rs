// A method left out of `exposed` has no method on the typed proxies.

pub struct Pair {
    x: i64,
}

#[manager::shared(exposed = [get_x])]
impl Pair {
    pub fn get_x(&self) -> i64 {
        self.x
    }

    pub fn set_x(&mut self, x: i64) {
        self.x = x;
    }
}

fn consumer(pair: &PairBlockingProxy) -> manager::Result<()> {
    pair.set_x(1)?;
    Ok(())
}

async fn async_consumer(pair: &PairProxy) -> manager::Result<()> {
    pair.set_x(1).await?;
    Ok(())
}

fn main() {
    let _ = consumer;
    let _ = async_consumer;
}
