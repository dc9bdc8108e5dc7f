//! Shared memory blocks through a manager: [`Manager`] and [`BlockingManager`] make, track,
//! release and list them.

use super::{SharedArray, SharedBytes};
use crate::client::Connection;
use crate::error::Error;
use crate::wire::{features, Control, ControlReply};
use crate::{BlockingManager, Manager};

/// A server that predates shared memory blocks would close the connection on the request.
fn allowed(conn: &Connection) -> Result<(), Error> {
    if conn.server_has(features::SEGMENTS) {
        Ok(())
    } else {
        Err(Error::Protocol(
            "the server predates shared memory blocks: it did not list them in its hello".into(),
        ))
    }
}

/// The size in bytes of `len` values of `T`.
fn array_size<T>(len: usize) -> Result<u64, Error> {
    len.checked_mul(std::mem::size_of::<T>())
        .map(|size| size as u64)
        .ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "{len} values of {} do not fit in memory",
                    std::any::type_name::<T>()
                ),
            ))
        })
}

/// The name in a [`ControlReply::Segment`], mapped.
fn opened(reply: ControlReply) -> Result<SharedBytes, Error> {
    match reply {
        ControlReply::Segment(name) => SharedBytes::open(&name).map_err(|e| match e {
            Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Error::Io(std::io::Error::new(
                    e.kind(),
                    format!(
                        "the server made the shared memory block {name:?}, but it is not on \
                         this host: shared memory blocks are for clients on the server's host"
                    ),
                ))
            }
            other => other,
        }),
        other => Err(Error::Protocol(format!(
            "expected a shared memory block, got {other:?}"
        ))),
    }
}

fn tracked(reply: ControlReply) -> Result<(), Error> {
    match reply {
        ControlReply::Tracked => Ok(()),
        other => Err(Error::Protocol(format!("expected Tracked, got {other:?}"))),
    }
}

fn released(reply: ControlReply) -> Result<bool, Error> {
    match reply {
        ControlReply::Released { unlinked } => Ok(unlinked),
        other => Err(Error::Protocol(format!("expected Released, got {other:?}"))),
    }
}

fn listed(reply: ControlReply) -> Result<Vec<String>, Error> {
    match reply {
        ControlReply::Segments(names) => Ok(names),
        other => Err(Error::Protocol(format!(
            "expected a list of segments, got {other:?}"
        ))),
    }
}

impl Manager {
    /// A new shared memory block of `len` bytes (zeroed), made by the server on its host and
    /// tracked by this manager's connection: its name (for CPython's
    /// `shared_memory.SharedMemory(name)` or [`SharedBytes::open`]) is unlinked when the last
    /// connection that tracks it closes, or at the server's shutdown. See
    /// [`crate::shared_memory`].
    pub async fn shared_bytes(&self, len: usize) -> Result<SharedBytes, Error> {
        let conn = self.connection();
        allowed(conn)?;
        opened(
            conn.control(Control::CreateSegment { size: len as u64 })
                .await?,
        )
    }

    /// A new shared memory block holding `len` zeroed values of `T`, as
    /// [`Manager::shared_bytes`] makes one.
    pub async fn shared_array<T: bytemuck::Pod>(
        &self,
        len: usize,
    ) -> Result<SharedArray<T>, Error> {
        let conn = self.connection();
        allowed(conn)?;
        let size = array_size::<T>(len)?;
        SharedArray::over(opened(
            conn.control(Control::CreateSegment { size }).await?,
        )?)
    }

    /// Tracks the existing block `name` (one a CPython process made, say) for this connection
    /// too, so that it stays while this connection lives. CPython's `track_segment`.
    pub async fn track_segment(&self, name: &str) -> Result<(), Error> {
        let conn = self.connection();
        allowed(conn)?;
        let name = name.to_string();
        tracked(conn.control(Control::TrackSegment { name }).await?)
    }

    /// Stops tracking `name` for this connection; the name is unlinked if no other connection
    /// tracks it (then `true`). An error if this connection did not track it.
    pub async fn release_segment(&self, name: &str) -> Result<bool, Error> {
        let conn = self.connection();
        allowed(conn)?;
        let name = name.to_string();
        released(conn.control(Control::ReleaseSegment { name }).await?)
    }

    /// The names of every block the server tracks, for any connection (CPython's
    /// `list_segments`), in the order first tracked.
    pub async fn segments(&self) -> Result<Vec<String>, Error> {
        let conn = self.connection();
        allowed(conn)?;
        listed(conn.control(Control::Segments).await?)
    }
}

impl BlockingManager {
    /// Blocking form of [`Manager::shared_bytes`].
    pub fn shared_bytes(&self, len: usize) -> Result<SharedBytes, Error> {
        let conn = self.connection();
        allowed(conn)?;
        opened(conn.control_blocking(Control::CreateSegment { size: len as u64 })?)
    }

    /// Blocking form of [`Manager::shared_array`].
    pub fn shared_array<T: bytemuck::Pod>(&self, len: usize) -> Result<SharedArray<T>, Error> {
        let conn = self.connection();
        allowed(conn)?;
        let size = array_size::<T>(len)?;
        SharedArray::over(opened(
            conn.control_blocking(Control::CreateSegment { size })?,
        )?)
    }

    /// Blocking form of [`Manager::track_segment`].
    pub fn track_segment(&self, name: &str) -> Result<(), Error> {
        let conn = self.connection();
        allowed(conn)?;
        let name = name.to_string();
        tracked(conn.control_blocking(Control::TrackSegment { name })?)
    }

    /// Blocking form of [`Manager::release_segment`].
    pub fn release_segment(&self, name: &str) -> Result<bool, Error> {
        let conn = self.connection();
        allowed(conn)?;
        let name = name.to_string();
        released(conn.control_blocking(Control::ReleaseSegment { name })?)
    }

    /// Blocking form of [`Manager::segments`].
    pub fn segments(&self) -> Result<Vec<String>, Error> {
        let conn = self.connection();
        allowed(conn)?;
        listed(conn.control_blocking(Control::Segments)?)
    }
}
