//! Blocking proxies whose methods are written once, as `async fn`s.
//!
//! A built-in type's typed layer (`ListProxy<T>`: encoding `T`, decoding what comes back) is
//! written once, async. Its blocking twin runs that same body on the caller's thread with
//! [`run`], which marks the thread while it polls: every [`BaseProxy::call`] made there takes
//! the blocking path ([`BaseProxy::call_blocking`]: the caller reads its own reply, under the
//! proxy's deadline, without a runtime), so the body completes where it is first polled. One
//! body, one blocking call path: the two can no longer drift apart.
//!
//! [`BaseProxy::call`]: super::BaseProxy::call
//! [`BaseProxy::call_blocking`]: super::BaseProxy::call_blocking

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll};

use crate::error::Error;

thread_local! {
    static BLOCKING: Cell<bool> = const { Cell::new(false) };
}

/// Whether the current thread is running a blocking proxy's body (see [`run`]).
pub(crate) fn active() -> bool {
    BLOCKING.with(Cell::get)
}

/// Runs a proxy method's async body to its end on this thread, its calls blocking. Refused
/// inside an async runtime, where blocking would stall the runtime's thread.
pub(crate) fn run<F, T>(body: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>>,
{
    crate::client::ensure_blocking_allowed()?;
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            BLOCKING.with(|b| b.set(self.0));
        }
    }
    let _reset = Reset(BLOCKING.with(|b| b.replace(true)));
    let mut body = pin!(body);
    match body
        .as_mut()
        .poll(&mut Context::from_waker(futures::task::noop_waker_ref()))
    {
        Poll::Ready(output) => output,
        // A body that waits for something besides its calls: wait for it here.
        Poll::Pending => futures::executor::block_on(body),
    }
}
