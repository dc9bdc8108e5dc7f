// `io::Result<T>` is a one-argument alias: `#[shared]` cannot see its error type, so it is a
// plain value, and `io::Error` is not serde. The message says to write `Result<T, E>`.

pub struct Files;

#[manager::shared]
impl Files {
    pub fn read(&self, path: String) -> std::io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

fn main() {}
