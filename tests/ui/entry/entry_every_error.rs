// Every reason at once: generic and async, and a bad argument.

#[manager::entry(krate = "::manager")]
async fn worker<T>(value: T) -> manager::Result<()> {
    let _ = value;
    Ok(())
}

fn main() {}
