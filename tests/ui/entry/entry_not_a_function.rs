// `#[entry]` goes on a free function.

#[manager::entry]
struct Worker;

fn main() {}
