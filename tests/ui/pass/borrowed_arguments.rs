// Borrowed arguments: `&str`, `&[T]` and `&T` are sent as `String`, `Vec<T>` and `T`;
// `Vec<u8>` and `&[u8]` as one block of bytes. The proxies take the same types.

#[derive(serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub x: i64,
}

pub struct Log {
    bytes: Vec<u8>,
}

#[manager::shared]
impl Log {
    pub fn label(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.bytes.len())
    }

    pub fn sum(&self, values: &[i64]) -> i64 {
        values.iter().sum()
    }

    pub fn offset(&self, point: &Point) -> i64 {
        point.x
    }

    pub fn append(&mut self, bytes: &[u8]) -> usize {
        self.bytes.extend_from_slice(bytes);
        self.bytes.len()
    }

    pub fn replace(&mut self, bytes: Vec<u8>) -> Vec<u8> {
        std::mem::replace(&mut self.bytes, bytes)
    }
}

fn blocking(log: &LogBlockingProxy) -> manager::Result<()> {
    let _: String = log.label("n=")?;
    let _: i64 = log.sum(&[1, 2])?;
    let _: i64 = log.offset(&Point { x: 1 })?;
    let _: usize = log.append(b"ab")?;
    let _: Vec<u8> = log.replace(vec![1])?;
    Ok(())
}

fn main() {
    let _ = blocking;
}
