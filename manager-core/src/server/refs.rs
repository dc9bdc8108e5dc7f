//! Reference accounting: which objects a connection holds, how many references, and the
//! limit on how many objects one connection may hold.
//!
//! Lock order: a connection's `held` map, then the server's object table. Every path that
//! takes both takes them in that order; `release_all` takes `held` after the connection is
//! marked closed, so no reference is added to a closed connection.

use std::sync::Arc;

use foldhash::{HashMap as FastMap, HashSet as FastSet};

use super::connection::Connection;
use super::table::index_of;
use crate::error::{RemoteError, RemoteErrorKind};
use crate::object::Referent;
use crate::registry::Entry;
use crate::wire::{Reply, Token};

/// The references one connection holds: which objects, and how many references to each.
///
/// Objects are named by their slot's index in the table (`u32`), not by their id: while the
/// connection holds a reference, the slot holds that object and no other, so the index says
/// which, and a set of `u32` takes 4 B a bucket where ids took 8 B. Callers that start from an
/// id the client sent check its version against the table. Most objects are held once by one
/// connection (its creator), so the indices are a set and only counts past one are kept in a
/// map beside it.
#[derive(Default)]
pub(super) struct Held {
    /// Every object held at least once.
    ids: FastSet<u32>,
    /// For objects held more than once: how many references past the first.
    extra: FastMap<u32, u64>,
}

impl Held {
    /// Whether at least one reference to the object in `id`'s slot is held (whether that is
    /// `id` itself, the table says).
    pub(super) fn contains(&self, id: u64) -> bool {
        self.ids.contains(&index_of(id))
    }

    /// How many distinct objects are held.
    pub(super) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Adds one reference to `id`.
    pub(super) fn add(&mut self, id: u64) {
        let index = index_of(id);
        if !self.ids.insert(index) {
            *self.extra.entry(index).or_insert(0) += 1;
        }
    }

    /// Drops one reference to `id`: `false` if none was held.
    pub(super) fn remove_one(&mut self, id: u64) -> bool {
        let index = index_of(id);
        if let Some(extra) = self.extra.get_mut(&index) {
            *extra -= 1;
            if *extra == 0 {
                self.extra.remove(&index);
            }
            true
        } else {
            self.ids.remove(&index)
        }
    }

    /// Every object held, by its slot's index, with how many references.
    pub(super) fn into_counts(self) -> impl Iterator<Item = (u32, u64)> {
        let Held { ids, mut extra } = self;
        ids.into_iter()
            .map(move |index| (index, 1 + extra.remove(&index).unwrap_or(0)))
    }
}

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
        held: &Held,
        object: Option<u64>,
        typeid: &str,
        method: &str,
    ) -> Result<(), RemoteError> {
        let max = self.state.config.max_objects_per_connection;
        if held.len() >= max && object.is_none_or(|id| !held.contains(id)) {
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
        referent: Referent,
        (typeid, method): (&str, &str),
    ) -> Result<Token, RemoteError> {
        let mut held = self.held.lock();
        if self.closed.is_cancelled() {
            return Ok(self.token(0, &entry));
        }
        self.check_room(&held, None, typeid, method)?;
        let id = self.state.table.lock().insert(entry.clone(), referent);
        held.add(id);
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
        held.add(id);
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
        held.add(id);
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
        let held = {
            let mut held = self.held.lock();
            // The held set names slots: the table checks that `id` is the object in this one.
            let taken = held.contains(id) && self.state.table.lock().acquire(id, 1).is_some();
            if taken {
                held.add(id);
            }
            taken
        };
        if !held {
            tracing::warn!("incref of object {id}, which this connection does not hold; ignored");
        }
    }

    pub(super) fn decref(&self, id: u64) {
        let released = {
            let mut held = self.held.lock();
            // The held set names slots: the table checks that `id` is the object in this one.
            held.contains(id) && self.state.table.lock().contains(id) && held.remove_one(id)
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
        for (index, refs) in held.into_counts() {
            // Held until now, so the slot still holds the object.
            let dropped = {
                let mut table = self.state.table.lock();
                table.id_at(index).and_then(|id| table.release(id, refs))
            };
            // The referent is dropped here, outside the table lock.
            drop(dropped);
        }
        self.state.segments.release_connection(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::Held;

    /// References are counted per object: the set holds the first, the map the rest.
    #[test]
    fn held_counts_each_reference() {
        let mut held = Held::default();
        assert!(!held.contains(7) && !held.remove_one(7));
        held.add(7);
        held.add(7);
        held.add(9);
        assert!(held.contains(7) && held.contains(9));
        assert_eq!(held.len(), 2);
        assert!(held.remove_one(7));
        assert!(held.contains(7), "one reference to 7 is left");
        held.add(7);
        held.add(7);
        let mut counts: Vec<_> = held.into_counts().collect();
        counts.sort();
        assert_eq!(counts, [(7, 3), (9, 1)]);

        // Ids of one slot at two versions are one object to the set: the table tells them
        // apart.
        let mut held = Held::default();
        held.add((1 << 32) | 5);
        assert!(held.contains((3 << 32) | 5));

        let mut held = Held::default();
        held.add(1);
        assert!(held.remove_one(1));
        assert!(!held.contains(1) && !held.remove_one(1));
        assert_eq!(held.len(), 0);
    }
}
