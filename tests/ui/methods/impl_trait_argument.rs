// An `impl Trait` argument has no concrete type for the server to decode.

pub struct Log {
    lines: Vec<String>,
}

#[manager::shared]
impl Log {
    pub fn push(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }
}

fn main() {}
