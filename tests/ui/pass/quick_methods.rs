// Methods listed in `quick` are ordinary methods on the proxies; only the server runs them
// differently (where it reads the request).

pub struct Counter {
    n: i64,
}

#[manager::shared(quick = [get, bump])]
impl Counter {
    pub fn get(&self) -> i64 {
        self.n
    }

    pub fn bump(&mut self) -> i64 {
        self.n += 1;
        self.n
    }

    pub fn slow(&self, ms: u64) -> i64 {
        std::thread::sleep(std::time::Duration::from_millis(ms));
        self.n
    }
}

fn blocking(counter: &CounterBlockingProxy) -> manager::Result<i64> {
    counter.bump()?;
    counter.slow(1)?;
    counter.get()
}

async fn asynchronous(counter: &CounterProxy) -> manager::Result<i64> {
    counter.bump().await
}

fn main() {
    let _ = (blocking, asynchronous);
}
