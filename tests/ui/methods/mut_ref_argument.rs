// A `&mut` argument cannot be shared: the change would stay in the server.

pub struct Buffer {
    data: Vec<u8>,
}

#[manager::shared]
impl Buffer {
    pub fn read_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.data);
    }
}

fn main() {}
