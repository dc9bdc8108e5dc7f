// An entry function must be one concrete function.

#[manager::entry]
fn worker<T: Default>() -> manager::Result<()> {
    let _ = T::default();
    Ok(())
}

fn main() {}
