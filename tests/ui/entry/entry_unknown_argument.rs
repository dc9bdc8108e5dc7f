// `#[entry]` takes only `crate = "..."`.

#[manager::entry(name = "worker")]
fn worker() -> manager::Result<()> {
    Ok(())
}

fn main() {}
