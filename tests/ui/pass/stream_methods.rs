// A method returning `Stream<T>` is a stream method: the async proxy returns a
// `RemoteStream<T>` (a `futures::Stream` of `Result<T, Error>`), the blocking proxy a
// `BlockingStream<T>` (an `Iterator` of them).

use manager::{BlockingStream, RemoteStream, Stream};

pub struct Numbers {
    n: u64,
}

#[manager::shared]
impl Numbers {
    pub fn count(&self) -> Stream<u64> {
        Stream::iter(0..self.n)
    }

    pub async fn names(&self, prefix: String) -> manager::Stream<String> {
        Stream::from_stream(futures::stream::iter(vec![format!("{prefix}0")]))
    }
}

async fn asynchronous(numbers: &NumbersProxy) -> manager::Result<Vec<u64>> {
    use futures::StreamExt as _;
    let stream: RemoteStream<u64> = numbers.count().await?;
    let names: RemoteStream<String> = numbers.names("n".into()).await?;
    drop(names);
    stream.map(|item| item).collect::<Vec<_>>().await.into_iter().collect()
}

fn blocking(numbers: &NumbersBlockingProxy) -> manager::Result<Vec<u64>> {
    let stream: BlockingStream<u64> = numbers.count()?;
    stream.collect()
}

fn main() {
    let _ = asynchronous;
    let _ = blocking;
}
