// `crate` given twice to `#[entry]`.

#[manager::entry(crate = "::manager", crate = "::manager")]
fn worker() -> manager::Result<()> {
    Ok(())
}

fn main() {}
