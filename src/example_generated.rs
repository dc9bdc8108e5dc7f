//! What `#[shared]` generates, rendered: this module exists in the docs only (and in this
//! crate's tests), as `bitflags`' `example_generated` does. Its source is the impl block of
//! [`ExampleCounter`] below, under `#[manager::shared(method_to_typeid = { fork: ExampleCounter })]`;
//! everything else on this page was generated from it:
//!
//! - [`ExampleCounterProxy`], the async proxy, and [`ExampleCounterBlockingProxy`], the
//!   blocking one: one method per exposed method, each returning `manager::Result<...>`,
//!   carrying the method's docs; `into_blocking` / `into_async` and `with_timeout`; `Clone`,
//!   `Debug`, serde (a proxy travels to another process as its token) and [`Proxy`](crate::Proxy);
//! - `impl Shared for ExampleCounter` (the dispatcher, see "Trait Implementations" on
//!   [`ExampleCounter`]) and `impl SharedProxies for ExampleCounter`.
//!
//! ```text
//! pub struct ExampleCounter { n: i64 }
//!
//! #[manager::shared(method_to_typeid = { fork: ExampleCounter })]
//! impl ExampleCounter {
//!     pub fn new(n: i64) -> Self { ... }                 // no `self`: not exposed
//!     pub fn get(&self) -> i64 { ... }                   // -> manager::Result<i64>
//!     pub fn add(&mut self, by: i64) -> i64 { ... }      // -> manager::Result<i64>
//!     pub fn checked_div(&self, by: i64) -> Result<i64, String> { ... }
//!                                                        // -> manager::Result<Result<i64, String>>
//!     pub fn label(&self, prefix: &str) -> String { ... } // takes `&str`, sends a `String`
//!     pub fn bytes(&self, data: &[u8]) -> Vec<u8> { ... } // one block of bytes each way
//!     pub fn caller(&self, context: &CallContext) -> u64 { ... } // no `context` on the proxies
//!     pub async fn later(&self) -> i64 { ... }           // the same on the proxies
//!     pub fn fork(&self) -> ExampleCounter { ... }       // -> manager::Result<ExampleCounterProxy>
//!     fn reset(&mut self) { ... }                        // not `pub`: not exposed
//! }
//! ```

use crate::CallContext;

/// The shared type of the example: a counter.
#[derive(Debug)]
pub struct ExampleCounter {
    n: i64,
}

#[crate::shared(crate = "crate", method_to_typeid = { fork: ExampleCounter })]
impl ExampleCounter {
    /// A counter at `n`. Not exposed: it takes no `self`.
    pub fn new(n: i64) -> Self {
        ExampleCounter { n }
    }

    /// The count.
    pub fn get(&self) -> i64 {
        self.n
    }

    /// Adds `by` (under the object's write lock) and returns the new count.
    pub fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    /// The count divided by `by`; an `Err` reaches the caller as `Ok(Err(..))`.
    pub fn checked_div(&self, by: i64) -> Result<i64, String> {
        self.n
            .checked_div(by)
            .ok_or_else(|| "division by zero".to_string())
    }

    /// `prefix` and the count.
    pub fn label(&self, prefix: &str) -> String {
        format!("{prefix}{}", self.n)
    }

    /// `data` with the count's low byte appended.
    pub fn bytes(&self, data: &[u8]) -> Vec<u8> {
        let mut out = data.to_vec();
        out.push(self.n as u8);
        out
    }

    /// The id of the caller's connection: the server passes the context.
    pub fn caller(&self, context: &CallContext) -> u64 {
        context.connection_id()
    }

    /// The count, from an `async fn` (run in the server's tasks, holding the read lock).
    pub async fn later(&self) -> i64 {
        self.n
    }

    /// A new counter object in the server, at the same count: the proxies return its proxy.
    pub fn fork(&self) -> ExampleCounter {
        ExampleCounter { n: self.n }
    }

    /// Not exposed: it is not `pub`.
    #[allow(dead_code, reason = "an example of a method that is not exposed")]
    fn reset(&mut self) {
        self.n = 0;
    }
}
