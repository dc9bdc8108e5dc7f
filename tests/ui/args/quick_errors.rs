// `quick` names exposed plain methods only: every mistake is reported, each on its name.

pub struct Counter {
    n: i64,
}

#[manager::shared(exposed = [get, wait], quick = [get, get, missing, hidden, wait])]
impl Counter {
    pub fn get(&self) -> i64 {
        self.n
    }

    pub fn hidden(&self) -> i64 {
        self.n
    }

    pub async fn wait(&self) -> i64 {
        self.n
    }
}

fn main() {}
