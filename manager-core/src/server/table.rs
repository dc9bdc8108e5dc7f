//! The server's objects: every live referent, with its typeid's registration and the number of
//! references to it, in one array of slots.
//!
//! An object's id on the wire is its slot's version in the high 32 bits and the slot's index
//! in the low ones. An id is never 0 (an occupied slot has an odd version), and the id of a
//! released object is not handed out again until its slot has been reused about 2^31 times
//! (the version grows by 2 with each reuse and wraps around after that), so a stale id names
//! no object rather than another one. (These are the ids the `slotmap` crate made, which the
//! table used before it needed to find a slot by its index alone: a connection's references
//! name slots by index, see `refs.rs`.)
//!
//! Per object the table keeps one [`Slot`] of 24 B: the referent (a thin pointer, 8 B), the
//! version, the index of its typeid's registration in the table's list of them (where an
//! `Arc<Entry>` took 8 B), and a `u32` count of references. No allocation of its own and no
//! hash table, where an `Arc` per object and a `HashMap` by id took about 116 B.

use std::sync::Arc;

use crate::object::Referent;
use crate::registry::Entry;

/// A slot of the table: a live object, or a place free for one.
pub(super) struct Slot {
    /// The object; `None` while the slot is free.
    referent: Option<Referent>,
    /// Odd while the slot holds an object, even while it is free.
    version: u32,
    /// The index of the object's registration in [`ObjectTable::entries`]; while the slot is
    /// free, the index of the next free slot (`u32::MAX`: none).
    entry: u32,
    /// How many references to the object are held (by connections, by containers holding its
    /// proxy, and by the server for a shared instance). Saturates at `u32::MAX` (4 billion
    /// references to one object; the object then stays until shutdown).
    refs: u32,
}

/// No next free slot.
const NONE: u32 = u32::MAX;

/// The table of live objects by id (see the module documentation for what an id is).
pub(super) struct ObjectTable {
    slots: Vec<Slot>,
    /// The first free slot (`NONE`: every slot holds an object).
    free: u32,
    /// How many slots hold an object.
    live: usize,
    /// The registrations of the objects' typeids, each once (a registry has a few).
    entries: Vec<Arc<Entry>>,
    /// The index in `entries` of each registration, by its address.
    entry_index: foldhash::HashMap<usize, u32>,
}

impl Default for ObjectTable {
    fn default() -> Self {
        ObjectTable {
            slots: Vec::new(),
            free: NONE,
            live: 0,
            entries: Vec::new(),
            entry_index: Default::default(),
        }
    }
}

/// The index of the slot that `id` names.
pub(super) fn index_of(id: u64) -> u32 {
    id as u32
}

/// The id of the object in slot `index` at `version`.
fn id_of(index: u32, version: u32) -> u64 {
    (u64::from(version) << 32) | u64::from(index)
}

impl ObjectTable {
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
    pub(super) fn insert(&mut self, entry: Arc<Entry>, referent: Referent) -> u64 {
        let entry = self.intern(entry);
        self.live += 1;
        if let Some(slot) = self.slots.get_mut(self.free as usize) {
            let index = self.free;
            self.free = slot.entry;
            slot.version = slot.version.wrapping_add(1);
            *slot = Slot {
                referent: Some(referent),
                version: slot.version,
                entry,
                refs: 1,
            };
            return id_of(index, slot.version);
        }
        let index = self.slots.len() as u32;
        self.slots.push(Slot {
            referent: Some(referent),
            version: 1,
            entry,
            refs: 1,
        });
        id_of(index, 1)
    }

    /// The slot of object `id`, if it exists.
    fn slot(&self, id: u64) -> Option<&Slot> {
        let slot = self.slots.get(index_of(id) as usize)?;
        (slot.referent.is_some() && slot.version == (id >> 32) as u32).then_some(slot)
    }

    /// The slot of object `id`, if it exists, to change.
    fn slot_mut(&mut self, id: u64) -> Option<&mut Slot> {
        let slot = self.slots.get_mut(index_of(id) as usize)?;
        (slot.referent.is_some() && slot.version == (id >> 32) as u32).then_some(slot)
    }

    /// The registration and the referent of object `id`, if it exists.
    pub(super) fn get(&self, id: u64) -> Option<(Arc<Entry>, Referent)> {
        let slot = self.slot(id)?;
        Some((
            self.entries[slot.entry as usize].clone(),
            slot.referent.clone()?,
        ))
    }

    /// The typeid registration of object `id`, if it exists.
    pub(super) fn entry(&self, id: u64) -> Option<&Arc<Entry>> {
        self.slot(id).map(|slot| &self.entries[slot.entry as usize])
    }

    /// Whether object `id` exists.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.slot(id).is_some()
    }

    /// The id of the object in slot `index`, if the slot holds one.
    pub(super) fn id_at(&self, index: u32) -> Option<u64> {
        let slot = self.slots.get(index as usize)?;
        slot.referent.as_ref()?;
        Some(id_of(index, slot.version))
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
    /// its referent is returned: the caller drops it (and so maybe the value) after unlocking
    /// the table.
    #[must_use = "the referent is to be dropped outside the table lock"]
    pub(super) fn release(&mut self, id: u64, n: u64) -> Option<Referent> {
        let free = self.free;
        let slot = self.slot_mut(id)?;
        if slot.refs == u32::MAX {
            // Saturated: the count is no longer known, so the object stays.
            return None;
        }
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        slot.refs = slot.refs.saturating_sub(n);
        if slot.refs > 0 {
            return None;
        }
        slot.version = slot.version.wrapping_add(1);
        slot.entry = free;
        let referent = slot.referent.take();
        self.free = index_of(id);
        self.live -= 1;
        referent
    }

    /// How many objects are live.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// Every live object, with its id, its registration and how many references to it are
    /// held, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &Arc<Entry>, u64)> {
        self.slots.iter().enumerate().filter_map(|(index, slot)| {
            slot.referent.as_ref()?;
            Some((
                id_of(index as u32, slot.version),
                &self.entries[slot.entry as usize],
                u64::from(slot.refs),
            ))
        })
    }
}

#[cfg(test)]
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod tests {
    use super::*;

    /// The bytes the table keeps per object: keep a slot at 24 B.
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

    /// Only the ids of live objects name them: not 0, not an even version (a free slot's),
    /// not the index of a live object with another version.
    #[test]
    fn only_the_id_of_a_live_object_names_it() {
        let mut table = ObjectTable::default();
        let first = table.insert(probe_entry(), crate::object::referent(Probe));
        assert_eq!(first, 1 << 32, "index 0, version 1");
        assert!(!table.contains(0));
        assert!(!table.contains((2 << 32) | index_of(first) as u64));
        assert!(!table.contains((3 << 32) | index_of(first) as u64));
        assert_eq!(table.id_at(0), Some(first));
        assert_eq!(table.id_at(1), None);
        drop(table.release(first, 1));
        assert_eq!(table.id_at(0), None);
    }
}
