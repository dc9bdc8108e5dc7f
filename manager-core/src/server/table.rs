//! The server's objects: every live referent, with its typeid's registration and the number of
//! references to it, in one slot map.
//!
//! An object's id on the wire is its slot map key as a `u64` ([`KeyData::as_ffi`]): the slot's
//! version in the high 32 bits, its index in the low ones. An id is never 0 (an occupied slot
//! has an odd version), and the id of a released object is not handed out again until its slot
//! has been reused about 2^31 times (the version grows by 2 with each reuse and wraps around
//! after that), so a stale id names no object rather than another one.
//!
//! Per object the table keeps one [`Slot`] (24 B) plus the slot map's own `u32` version, padded
//! to 32 B: no allocation of its own and no hash table, where an `Arc` per object and a
//! `HashMap` by id took about 116 B. The slot names its typeid's registration by its index in
//! the table's list of them (a `u32`, where an `Arc<Entry>` took 8 B), and counts references
//! in a `u32`.

use std::sync::Arc;

use slotmap::{DefaultKey, KeyData, SlotMap};

use crate::object::Referent;
use crate::registry::Entry;

/// A live object: the referent, its typeid's registration, and how many references to it are
/// held (by connections, by containers holding its proxy, and by the server for a shared
/// instance).
pub(super) struct Slot {
    referent: Arc<dyn Referent>,
    /// The index of its registration in [`ObjectTable::entries`].
    entry: u32,
    /// Saturates at `u32::MAX` (4 billion references to one object; the object then stays
    /// until shutdown).
    refs: u32,
}

/// The table of live objects by id (see the module documentation for what an id is).
#[derive(Default)]
pub(super) struct ObjectTable {
    slots: SlotMap<DefaultKey, Slot>,
    /// The registrations of the objects' typeids, each once (a registry has a few).
    entries: Vec<Arc<Entry>>,
    /// The index in `entries` of each registration, by its address.
    entry_index: foldhash::HashMap<usize, u32>,
}

impl ObjectTable {
    /// The slot map key of `id`, if `id` is one the table could have handed out: an id whose
    /// version is even (a vacant slot's) does not round-trip and names nothing.
    fn key(id: u64) -> Option<DefaultKey> {
        let key = KeyData::from_ffi(id);
        (key.as_ffi() == id).then(|| key.into())
    }

    /// The index of `entry` in `entries`, added if it is new.
    fn intern(&mut self, entry: Arc<Entry>) -> u32 {
        let entries = &mut self.entries;
        *self
            .entry_index
            .entry(Arc::as_ptr(&entry) as usize)
            .or_insert_with(|| {
                entries.push(entry);
                (entries.len() - 1) as u32
            })
    }

    /// Adds an object with one reference, and returns its id.
    pub(super) fn insert(&mut self, entry: Arc<Entry>, referent: Arc<dyn Referent>) -> u64 {
        let entry = self.intern(entry);
        let key = self.slots.insert(Slot {
            referent,
            entry,
            refs: 1,
        });
        slotmap::Key::data(&key).as_ffi()
    }

    /// The slot of object `id`, if it exists.
    fn slot(&self, id: u64) -> Option<&Slot> {
        self.slots.get(Self::key(id)?)
    }

    /// The slot of object `id`, if it exists, to change.
    fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        self.slots.get_mut(Self::key(id)?)
    }

    /// The registration and the referent of object `id`, if it exists.
    pub(super) fn get(&self, id: u64) -> Option<(Arc<Entry>, Arc<dyn Referent>)> {
        self.slot(id).map(|slot| {
            (
                self.entries[slot.entry as usize].clone(),
                slot.referent.clone(),
            )
        })
    }

    /// The typeid registration of object `id`, if it exists.
    pub(super) fn entry(&self, id: u64) -> Option<&Arc<Entry>> {
        self.slot(id).map(|slot| &self.entries[slot.entry as usize])
    }

    /// Whether object `id` exists.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.slot(id).is_some()
    }

    /// Takes `n` more references to object `id`, and returns its registration; `None` (taking
    /// nothing) if it does not exist.
    pub(super) fn acquire(&mut self, id: u64, n: u64) -> Option<&Arc<Entry>> {
        let slot = self.slot_mut(id)?;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        slot.refs = slot.refs.saturating_add(n);
        let entry = slot.entry as usize;
        Some(&self.entries[entry])
    }

    /// Drops `n` references to object `id`. When none are left the object leaves the table and
    /// its slot is returned: the caller drops it (and so maybe the referent) after unlocking
    /// the table.
    #[must_use = "the slot is to be dropped outside the table lock"]
    pub(super) fn release(&mut self, id: u64, n: u64) -> Option<Slot> {
        let key = Self::key(id)?;
        let slot = self.slots.get_mut(key)?;
        if slot.refs == u32::MAX {
            // Saturated: the count is no longer known, so the object stays.
            return None;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        slot.refs = slot.refs.saturating_sub(n);
        if slot.refs == 0 {
            self.slots.remove(key)
        } else {
            None
        }
    }

    /// How many objects are live.
    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Every live object, with its id, its registration and how many references to it are
    /// held, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Arc<Entry>, u64)> {
        self.slots.iter().map(|(key, slot)| {
            (
                slotmap::Key::data(&key).as_ffi(),
                &self.entries[slot.entry as usize],
                u64::from(slot.refs),
            )
        })
    }
}

#[cfg(test)]
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod tests {
    use super::*;

    /// The bytes the table keeps per object are a slot plus the slot map's `u32` version:
    /// keep a slot at 24 B (32 B with the version, after padding).
    #[test]
    fn a_slot_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 24);
    }

    /// A type to fill the table with.
    struct Probe;

    #[crate::shared(crate = "crate", proxies = false)]
    impl Probe {
        /// Does nothing.
        pub fn ping(&self) {}
    }

    /// The registration of `Probe`.
    fn probe_entry() -> Arc<Entry> {
        let mut registry = crate::registry::Registry::new();
        registry
            .register(crate::registry::Register::<Probe>::new("Probe"))
            .unwrap();
        registry.get("Probe").unwrap().clone()
    }

    /// An object lives while it has references; once released, its id names nothing, even
    /// after its slot is reused.
    #[test]
    fn references_keep_an_object_and_a_released_id_names_nothing() {
        let mut table = ObjectTable::default();
        let entry = probe_entry();
        let id = table.insert(entry.clone(), crate::object::referent(Probe));
        assert_ne!(id, 0);
        assert_eq!(table.len(), 1);
        assert!(table.get(id).is_some());
        assert_eq!(&*table.acquire(id, 2).unwrap().typeid, "Probe");
        assert_eq!(
            table
                .iter()
                .map(|(i, _, refs)| (i, refs))
                .collect::<Vec<_>>(),
            [(id, 3)]
        );
        assert!(table.release(id, 2).is_none());
        assert!(table.release(id, 1).is_some());
        assert!(!table.contains(id));
        assert!(table.acquire(id, 1).is_none());
        assert!(table.release(id, 1).is_none());
        // The slot is reused under a new version: the old id still names nothing.
        let again = table.insert(entry, crate::object::referent(Probe));
        assert_ne!(again, id);
        assert_eq!(again as u32, id as u32);
        assert!(table.get(id).is_none());
        assert!(table.get(again).is_some());
    }

    /// Only ids the slot map could have handed out are looked up.
    #[test]
    fn ids_round_trip_and_others_name_nothing() {
        assert!(ObjectTable::key(0).is_none());
        // Index 1, version 1: a key the slot map hands out.
        let id = (1u64 << 32) | 1;
        assert!(ObjectTable::key(id).is_some());
        // The same index with an even version (a vacant slot's) is no id.
        assert!(ObjectTable::key((2u64 << 32) | 1).is_none());
    }
}
