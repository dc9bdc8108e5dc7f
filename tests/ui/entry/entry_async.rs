// An entry function runs in a fresh process with no runtime: it cannot be async.

#[manager::entry]
async fn worker() -> manager::Result<()> {
    Ok(())
}

fn main() {}
