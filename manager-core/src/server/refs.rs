//! Reference accounting: which objects a connection holds, how many references, and the
//! limit on how many objects one connection may hold.
//!
//! Lock order: a connection's `held` map, then the server's object table. Every path that
//! takes both takes them in that order; `release_all` takes `held` after the connection is
//! marked closed, so no reference is added to a closed connection.

use std::sync::Arc;

use foldhash::HashMap as FastMap;

use super::connection::Connection;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::object::Referent;
use crate::registry::Entry;
use crate::wire::{Reply, Token};

impl Connection {
    /// Fails when this connection may not hold one more object (`max_objects_per_connection`);
    /// taking another reference to an object it holds already is always allowed.
    pub(super) fn room_for(
        &self,
        object: Option<u64>,
        typeid: &str,
        method: &str,
    ) -> Result<(), RemoteError> {
        self.check_room(&self.held.lock(), object, typeid, method)
    }

    /// `room_for`, on the `held` map already locked (so that the check and the insert that
    /// follows it are one step, whatever runs alongside on other threads).
    fn check_room(
        &self,
        held: &FastMap<u64, u64>,
        object: Option<u64>,
        typeid: &str,
        method: &str,
    ) -> Result<(), RemoteError> {
        let max = self.state.config.max_objects_per_connection;
        if held.len() >= max && object.is_none_or(|id| !held.contains_key(&id)) {
            return Err(RemoteError::new(
                RemoteErrorKind::Limit,
                typeid,
                method,
                format!("this connection already holds {max} objects, its limit"),
            ));
        }
        Ok(())
    }

    /// Adds a new object to the table, with one reference held by this connection, unless the
    /// connection holds as many objects as it may (`(typeid, method)` name the request, for
    /// that error). On a connection that has closed (its references are being released) the
    /// object is not kept. (It then gets id 0, which names no object.)
    pub(super) fn insert(
        &self,
        entry: Arc<Entry>,
        referent: Arc<dyn Referent>,
        (typeid, method): (&str, &str),
    ) -> Result<Token, RemoteError> {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return Ok(self.token(0, &entry));
        }
        self.check_room(&held, None, typeid, method)?;
        let id = self.state.table.lock().insert(entry.clone(), referent);
        held.insert(id, 1);
        Ok(self.token(id, &entry))
    }

    pub(super) fn token(&self, id: u64, entry: &Entry) -> Token {
        Token {
            typeid: entry.typeid.to_string(),
            address: self.state.address.clone(),
            id,
            instance: self.state.instance,
        }
    }

    /// Takes one more reference to an existing object for this connection. Refused once the
    /// connection has closed, so that no reference outlives it. (The held map is locked
    /// first: `release_all` takes it after the connection is marked closed.)
    pub(super) fn acquire(&self, id: u64) -> Option<Token> {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return None;
        }
        let entry = self.state.table.lock().acquire(id, 1)?.clone();
        *held.entry(id).or_insert(0) += 1;
        Some(self.token(id, &entry))
    }

    /// `acquire`, unless the connection holds as many objects as it may and not this one.
    pub(super) fn acquire_within_limit(
        &self,
        id: u64,
        (typeid, method): (&str, &str),
    ) -> Result<Option<Token>, RemoteError> {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return Ok(None);
        }
        self.check_room(&held, Some(id), typeid, method)?;
        let Some(entry) = self.state.table.lock().acquire(id, 1).cloned() else {
            return Ok(None);
        };
        *held.entry(id).or_insert(0) += 1;
        Ok(Some(self.token(id, &entry)))
    }

    /// Takes a reference to object `id` for a token naming it as a `typeid` of the server run
    /// `instance` (0: not known), refusing a token of another run or of another typeid.
    pub(super) fn attach(&self, id: u64, typeid: &str, instance: u64) -> Reply {
        let refuse = |message: String| {
            Reply::Error(RemoteError::new(
                RemoteErrorKind::StaleToken,
                typeid,
                "attach",
                message,
            ))
        };
        if !self.state.issued(instance) {
            return refuse(self.state.stale_message(id, instance));
        }
        let actual = self.state.table.lock().entry(id).map(|e| e.typeid.clone());
        if let Some(actual) = actual.filter(|actual| &**actual != typeid) {
            return refuse(format!(
                "object {id} is a {actual}, not the {typeid} the token names: the token does \
                 not come from this server's objects"
            ));
        }
        match self.acquire_within_limit(id, ("", "attach")) {
            Err(limit) => Reply::Error(limit),
            Ok(Some(token)) => Reply::Proxy(token),
            Ok(None) => Reply::Error(RemoteError::new(
                RemoteErrorKind::UnknownObject,
                "",
                "attach",
                format!("object {id} does not exist (it may have been released)"),
            )),
        }
    }

    pub(super) fn incref(&self, id: u64) {
        let held = self
            .held
            .lock()
            .get_mut(&id)
            .map(|refs| *refs += 1)
            .is_some();
        if held {
            self.state.table.lock().acquire(id, 1);
        } else {
            tracing::warn!("incref of object {id}, which this connection does not hold; ignored");
        }
    }

    pub(super) fn decref(&self, id: u64) {
        let released = {
            let mut held = self.held.lock();
            match held.get_mut(&id) {
                Some(refs) => {
                    *refs -= 1;
                    if *refs == 0 {
                        held.remove(&id);
                    }
                    true
                }
                None => false,
            }
        };
        if released {
            self.state.release(id, 1);
        } else {
            tracing::warn!("decref of object {id}, which this connection does not hold; ignored");
        }
    }

    /// Releases every reference this connection holds, and every shared memory block it
    /// tracks (it is closing).
    pub(super) fn release_all(&self) {
        let held = std::mem::take(&mut *self.held.lock());
        for (id, refs) in held {
            self.state.release(id, refs);
        }
        self.state.segments.release_connection(self.id);
    }
}
