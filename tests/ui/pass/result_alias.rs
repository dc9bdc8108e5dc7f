// A one-argument `Result` alias is a plain value to `#[shared]`: fine when the alias's error
// type is serde. The proxy returns it as it is, inside `manager::Result`.

pub type Result<T> = std::result::Result<T, String>;

pub struct Pair {
    x: i64,
}

#[manager::shared]
impl Pair {
    pub fn get_x(&self) -> Result<i64> {
        Ok(self.x)
    }

    pub fn checked(&self, ok: bool) -> std::result::Result<i64, String> {
        if ok { Ok(self.x) } else { Err("no".into()) }
    }
}

fn blocking(pair: &PairBlockingProxy) -> manager::Result<()> {
    let _plain: Result<i64> = pair.get_x()?;
    let _fallible: std::result::Result<i64, String> = pair.checked(true)?;
    Ok(())
}

fn main() {
    let _ = blocking;
}
