//! Shared memory blocks the server tracks for its connections (see
//! [`crate::shared_memory`]): which connections track which names, and the unlinking of a name
//! when the last connection that tracks it closes, when that connection releases it, or at
//! shutdown.
//!
//! Lock order: the table of segments is a leaf (nothing else is locked while it is held).
//! `shm_unlink` runs after it is unlocked.

use std::sync::Arc;

use foldhash::HashMap as FastMap;
use indexmap::IndexMap;
use parking_lot::Mutex;

use super::connection::Connection;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::shared_memory;
use crate::wire::{Control, ControlReply, Reply};

/// Every tracked name, with how many connections track it, and each connection's names.
#[derive(Default)]
pub(super) struct Segments {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Name -> how many connections track it, in the order first tracked.
    names: IndexMap<Arc<str>, u64>,
    /// Connection id -> the names it tracks.
    by_connection: FastMap<u64, indexmap::IndexSet<Arc<str>>>,
}

impl Inner {
    /// Drops one tracker of `name`: `true` if none is left (the caller unlinks it).
    fn untrack(&mut self, name: &str) -> bool {
        match self.names.get_mut(name) {
            Some(count) if *count > 1 => {
                *count -= 1;
                false
            }
            Some(_) => {
                self.names.shift_remove(name);
                true
            }
            None => false,
        }
    }
}

impl Segments {
    /// Tracks the existing block `name` for `conn`: `Ok(false)` if it already did.
    pub(super) fn track(&self, conn: &Connection, name: &str) -> Result<bool, String> {
        shared_memory::check_name(name)?;
        let mut inner = self.inner.lock();
        // `Connection::close` cancels the token before it releases: after this check under
        // the lock, the release that follows sees this name.
        if conn.closed.is_cancelled() {
            return Err("the connection is closing".into());
        }
        let max = conn.state.config.max_segments_per_connection;
        let mine = inner.by_connection.entry(conn.id).or_default();
        if mine.contains(name) {
            return Ok(false);
        }
        if mine.len() >= max {
            return Err(format!(
                "this connection already tracks {max} shared memory blocks, its limit \
                 (ServerConfig::max_segments_per_connection)"
            ));
        }
        let name: Arc<str> = name.into();
        mine.insert(name.clone());
        *inner.names.entry(name).or_insert(0) += 1;
        Ok(true)
    }

    /// Stops tracking `name` for `conn`: `Ok(true)` if the name was unlinked (no connection
    /// tracks it any more); an error if `conn` did not track it.
    pub(super) fn release(&self, conn: &Connection, name: &str) -> Result<bool, String> {
        let unlink = {
            let mut inner = self.inner.lock();
            let tracked = inner
                .by_connection
                .get_mut(&conn.id)
                .is_some_and(|mine| mine.shift_remove(name));
            if !tracked {
                return Err(format!(
                    "{name:?} is not a shared memory block this connection tracks"
                ));
            }
            inner.untrack(name)
        };
        if unlink {
            shared_memory::unlink(name);
        }
        Ok(unlink)
    }

    /// Releases every name connection `id` tracks (it is closing).
    pub(super) fn release_connection(&self, id: u64) {
        let gone: Vec<Arc<str>> = {
            let mut inner = self.inner.lock();
            let Some(mine) = inner.by_connection.remove(&id) else {
                return;
            };
            mine.into_iter()
                .filter(|name| inner.untrack(name))
                .collect()
        };
        for name in gone {
            shared_memory::unlink(&name);
        }
    }

    /// Every tracked name, in the order first tracked.
    pub(super) fn names(&self) -> Vec<String> {
        let inner = self.inner.lock();
        inner.names.keys().map(|name| name.to_string()).collect()
    }

    /// Unlinks every name still tracked (the server has stopped).
    pub(super) fn unlink_all(&self) {
        let names = std::mem::take(&mut *self.inner.lock()).names;
        for name in names.keys() {
            shared_memory::unlink(name);
        }
    }
}

impl Connection {
    /// Answers the control requests about shared memory blocks.
    pub(super) fn segment_control(&self, op: Control) -> Reply {
        let segments = &self.state.segments;
        let (method, answer) = match op {
            Control::CreateSegment { size } => ("create_segment", self.create_segment(size)),
            Control::TrackSegment { name } => (
                "track_segment",
                shared_memory::exists(&name)
                    .map_err(|e| format!("no shared memory block {name:?}: {e}"))
                    .and_then(|()| segments.track(self, &name))
                    .map(|_| ControlReply::Tracked),
            ),
            Control::ReleaseSegment { name } => (
                "release_segment",
                segments
                    .release(self, &name)
                    .map(|unlinked| ControlReply::Released { unlinked }),
            ),
            Control::Segments => (
                "list_segments",
                Ok(ControlReply::Segments(segments.names())),
            ),
            other => (
                "control",
                Err(format!("{other:?} is not about shared memory")),
            ),
        };
        match answer {
            Ok(reply) => Reply::Control(reply),
            Err(message) => Reply::Error(RemoteError::new(
                RemoteErrorKind::InvalidValue,
                "",
                method,
                message,
            )),
        }
    }

    /// Makes a block of `size` bytes and tracks it for this connection, in one step: a client
    /// that dies at any moment after asking leaves no block behind.
    pub(super) fn create_segment(&self, size: u64) -> Result<ControlReply, String> {
        let name = shared_memory::create(size)
            .map_err(|e| format!("cannot make a shared memory block of {size} bytes: {e}"))?;
        match self.state.segments.track(self, &name) {
            Ok(_) => Ok(ControlReply::Segment(name)),
            Err(message) => {
                shared_memory::unlink(&name);
                Err(message)
            }
        }
    }
}
