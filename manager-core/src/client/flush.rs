//! Waiting until the server has applied what a connection sent without waiting: the one-way
//! messages (a dropped proxy's `DecRef`, a dropped stream's `StreamCancel`, a call given up)
//! and the releases of dropped lock guards, whose answers nobody awaits.
//!
//! Such a message is applied in the server some time after it was sent, and nothing orders
//! it before another process's later call: a worker that drops its guard and exits may be
//! joined by its parent before the server has seen the release. [`Connection::flush`] closes
//! that gap for one connection: the server reads a connection's frames in order and applies
//! each one-way message before it reads the next frame, so the answer to a ping sent after
//! them means they took effect; the releases are awaited by their own answers. A process
//! spawned by [`crate::Process::spawn`] flushes every connection it has open before it exits
//! ([`flush_process`]), so its parent, once it has joined it, sees everything it did.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::{Connection, Inner};
use crate::error::Error;
use crate::wire::{Control, ControlReply};

/// The connections this process has opened, for [`flush_process`]; dead entries are pruned
/// as new ones come.
static OPEN: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());

/// Notes a new connection of this process.
pub(super) fn register(inner: &Arc<Inner>) {
    let mut open = OPEN.lock();
    open.retain(|conn| conn.strong_count() > 0);
    open.push(Arc::downgrade(inner));
}

impl Connection {
    /// Waits until the server has applied everything this connection sent before the call:
    /// its one-way messages (references of dropped proxies, cancelled streams) and the
    /// releases of lock guards dropped in this process, which are sent without waiting.
    ///
    /// Calls made after a drop on the *same* object from this process already see the
    /// release; flush before telling *another* process to look (or before exiting: a process
    /// spawned by [`crate::Process::spawn`] flushes its connections itself when its function
    /// returns).
    ///
    /// ```no_run
    /// # async fn example(conn: manager_core::Connection) -> manager_core::Result<()> {
    /// conn.flush().await?; // what this process dropped is now applied in the server
    /// # Ok(()) }
    /// ```
    pub async fn flush(&self) -> Result<(), Error> {
        match self.control(Control::Ping).await? {
            ControlReply::Pong => {}
            other => {
                return Err(Error::Protocol(format!(
                    "expected a pong to the flush, got {other:?}"
                )))
            }
        }
        if let Some(unsettled) = self.inner.unsettled.get() {
            unsettled.settle_all().await;
        }
        Ok(())
    }

    /// [`Connection::flush`], blocking the calling thread.
    pub fn flush_blocking(&self) -> Result<(), Error> {
        crate::proxy::blocking::run(self.flush())
    }
}

/// Flushes every open connection of this process at once ([`Connection::flush`]), waiting at
/// most `limit` in all; a connection that fails or is closed is skipped (the server releases
/// what a closed connection held when it sees it close). Returns how many were flushed.
pub(crate) fn flush_process(limit: Duration) -> usize {
    let open: Vec<Connection> = OPEN
        .lock()
        .iter()
        .filter_map(Weak::upgrade)
        .map(|inner| Connection { inner })
        .filter(|conn| !conn.is_closed())
        .collect();
    if open.is_empty() {
        return 0;
    }
    if super::ensure_blocking_allowed().is_err() {
        // Inside a runtime's thread nothing may block it: a caller there flushes each
        // connection itself.
        return 0;
    }
    let all = futures::future::join_all(open.iter().map(Connection::flush));
    match futures::executor::block_on(super::within(limit, all)) {
        Ok(results) => results.iter().filter(|r| r.is_ok()).count(),
        Err(_) => {
            tracing::warn!(
                "flushing this process's {} connections took longer than {limit:?}; exiting \
                 without waiting for the rest",
                open.len()
            );
            0
        }
    }
}
