//! Calling stream methods through a [`BaseProxy`].

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::BaseProxy;
use crate::client::streams::{BlockingStream, RemoteStream};
use crate::error::Error;

impl BaseProxy {
    /// Calls `method`, a stream method (one returning [`Stream<T>`](crate::Stream)), with
    /// `args` (a tuple), and returns its items as they arrive. The call fails as any call
    /// does (no such method, bad arguments, the proxy's deadline for the stream to open); an
    /// error in the stream's producer is its last item.
    pub async fn call_stream<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<RemoteStream<T>, Error> {
        if super::blocking::active() {
            return self
                .call_stream_blocking(method, args)
                .map(BlockingStream::into_async);
        }
        self.conn
            .open_stream(self.token.id, method, &args, self.timeout())
            .await
    }

    /// The blocking form of [`BaseProxy::call_stream`].
    pub fn call_stream_blocking<T: DeserializeOwned>(
        &self,
        method: &str,
        args: impl Serialize,
    ) -> Result<BlockingStream<T>, Error> {
        self.conn
            .open_stream_blocking(self.token.id, method, &args, self.timeout())
    }
}
