//! The per-core connection table: 4-tuple -> connection state.
//!
//! Values live in a slab addressed by [`ConnId`] (slot index plus generation, so a handle
//! to a closed connection is recognised as stale even after its slot is reused). The
//! 4-tuple index is a `hashbrown::HashTable` of 4-byte slab indices (the tuple itself is
//! stored once, in the slab), hashed with foldhash under a per-table random seed: the
//! key comes from the network, so an unseeded hash would let a peer aim collisions.
//!
//! Overhead per entry at 1,000,000 connections is about 10 bytes of index (5 bytes per
//! bucket, at most 2 buckets per entry) plus the slab slot header (generation, tuple and
//! enum tag, 20 bytes before `V`'s alignment padding); see the `table_million_entries`
//! test, which measures it with [`ConnTable::memory_usage`].

use core::fmt;
use core::hash::{BuildHasher, Hash, Hasher};
use core::net::Ipv4Addr;

use foldhash::fast::SeedableRandomState;
use foldhash::SharedSeed;
use hashbrown::HashTable;

/// A TCP connection's addresses and ports, from the local side's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FourTuple {
    /// Our IPv4 address.
    pub local_addr: Ipv4Addr,
    /// Our TCP port.
    pub local_port: u16,
    /// The peer's IPv4 address.
    pub remote_addr: Ipv4Addr,
    /// The peer's TCP port.
    pub remote_port: u16,
}

impl Hash for FourTuple {
    /// Hashes the tuple as one `u64` and one `u32` (two hasher rounds).
    fn hash<H: Hasher>(&self, state: &mut H) {
        let addrs =
            (u64::from(self.local_addr.to_bits()) << 32) | u64::from(self.remote_addr.to_bits());
        let ports = (u32::from(self.local_port) << 16) | u32::from(self.remote_port);
        state.write_u64(addrs);
        state.write_u32(ports);
    }
}

/// A handle to a connection in a [`ConnTable`]: slot index plus generation. Small and
/// `Copy`; stale after the connection is removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    index: u32,
    generation: u32,
}

impl ConnId {
    /// The slab slot index, dense from 0 and below the table's capacity: usable to index
    /// side arrays. Reused after removal (the generation tells uses apart).
    pub fn index(self) -> u32 {
        self.index
    }
}

/// Why [`ConnTable::insert`] refused an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// The table holds its configured capacity of connections.
    TableFull,
    /// A connection with this 4-tuple already exists.
    Duplicate(ConnId),
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::TableFull => f.write_str("connection table full"),
            InsertError::Duplicate(_) => f.write_str("connection with this 4-tuple exists"),
        }
    }
}

impl std::error::Error for InsertError {}

#[derive(Debug)]
enum SlotState<V> {
    Occupied { tuple: FourTuple, value: V },
    Vacant { next_free: u32 },
}

#[derive(Debug)]
struct Slot<V> {
    generation: u32,
    state: SlotState<V>,
}

const NIL: u32 = u32::MAX;

/// A bounded map from [`FourTuple`] to connection state `V`, with O(1) insert, lookup and
/// remove.
pub struct ConnTable<V> {
    index: HashTable<u32>,
    slots: Vec<Slot<V>>,
    free_head: u32,
    len: u32,
    capacity: u32,
    hasher: SeedableRandomState,
}

impl<V> fmt::Debug for ConnTable<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnTable")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

fn hash_of(hasher: &SeedableRandomState, tuple: &FourTuple) -> u64 {
    hasher.hash_one(tuple)
}

impl<V> ConnTable<V> {
    /// An empty table holding at most `capacity` connections (capped below `u32::MAX`),
    /// hashed under a random per-table seed. Memory grows with use.
    pub fn new(capacity: usize) -> Self {
        Self::with_hasher(capacity, SeedableRandomState::random())
    }

    /// As [`new`](Self::new), mixing in a caller-supplied seed (e.g. from the OS RNG)
    /// on top of the process-wide random seed.
    pub fn with_seed(capacity: usize, seed: u64) -> Self {
        Self::with_hasher(
            capacity,
            SeedableRandomState::with_seed(seed, SharedSeed::global_random()),
        )
    }

    fn with_hasher(capacity: usize, hasher: SeedableRandomState) -> Self {
        ConnTable {
            index: HashTable::new(),
            slots: Vec::new(),
            free_head: NIL,
            len: 0,
            capacity: u32::try_from(capacity).unwrap_or(NIL - 1).min(NIL - 1),
            hasher,
        }
    }

    /// Pre-allocates room for `additional` more connections (still bounded by capacity).
    pub fn reserve(&mut self, additional: usize) {
        let room = (self.capacity - self.len) as usize;
        let additional = additional.min(room);
        let hasher = &self.hasher;
        let slots = &self.slots;
        self.index
            .reserve(additional, |&i| match slots.get(i as usize) {
                Some(Slot {
                    state: SlotState::Occupied { tuple, .. },
                    ..
                }) => hash_of(hasher, tuple),
                _ => 0,
            });
        let free = self.slots.len() - self.len as usize;
        self.slots.reserve(additional.saturating_sub(free));
    }

    /// The configured maximum number of connections.
    pub fn capacity(&self) -> usize {
        self.capacity as usize
    }

    /// Number of connections held.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// No connections are held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Heap bytes owned by the table itself (hash index and slab, including `V` inline
    /// but not anything `V` points to).
    pub fn memory_usage(&self) -> usize {
        self.index.allocation_size() + self.slots.capacity() * core::mem::size_of::<Slot<V>>()
    }

    /// Adds a connection. Fails with [`InsertError::TableFull`] at capacity and with
    /// [`InsertError::Duplicate`] if the tuple is already present.
    pub fn insert(&mut self, tuple: FourTuple, value: V) -> Result<ConnId, InsertError> {
        if let Some(id) = self.lookup(&tuple) {
            return Err(InsertError::Duplicate(id));
        }
        if self.len >= self.capacity {
            return Err(InsertError::TableFull);
        }
        let state = SlotState::Occupied { tuple, value };
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let slot = &mut self.slots[index as usize];
            if let SlotState::Vacant { next_free } = slot.state {
                self.free_head = next_free;
            }
            slot.state = state;
            index
        } else {
            // len < capacity < u32::MAX and no free slot: slots.len() == len fits.
            let index = self.slots.len() as u32;
            self.slots.push(Slot {
                generation: 0,
                state,
            });
            index
        };
        self.len += 1;
        let hasher = &self.hasher;
        let slots = &self.slots;
        self.index
            .insert_unique(hash_of(hasher, &tuple), index, |&i| {
                match slots.get(i as usize) {
                    Some(Slot {
                        state: SlotState::Occupied { tuple, .. },
                        ..
                    }) => hash_of(hasher, tuple),
                    _ => 0,
                }
            });
        Ok(ConnId {
            index,
            generation: self.slots[index as usize].generation,
        })
    }

    /// The connection with this 4-tuple and its state, mutably: [`ConnTable::lookup`]
    /// and [`ConnTable::get_mut`] in one probe.
    #[inline]
    pub fn lookup_mut(&mut self, tuple: &FourTuple) -> Option<(ConnId, &mut V)> {
        let hash = hash_of(&self.hasher, tuple);
        let slots = &self.slots;
        let &index = self.index.find(hash, |&i| {
            matches!(slots.get(i as usize),
                Some(Slot { state: SlotState::Occupied { tuple: t, .. }, .. }) if t == tuple)
        })?;
        match self.slots.get_mut(index as usize)? {
            Slot {
                generation,
                state: SlotState::Occupied { value, .. },
            } => Some((
                ConnId {
                    index,
                    generation: *generation,
                },
                value,
            )),
            Slot { .. } => None,
        }
    }

    /// The connection with this 4-tuple.
    pub fn lookup(&self, tuple: &FourTuple) -> Option<ConnId> {
        let hash = hash_of(&self.hasher, tuple);
        let slots = &self.slots;
        let &index = self.index.find(hash, |&i| {
            matches!(slots.get(i as usize),
                Some(Slot { state: SlotState::Occupied { tuple: t, .. }, .. }) if t == tuple)
        })?;
        let generation = slots.get(index as usize)?.generation;
        Some(ConnId { index, generation })
    }

    fn slot(&self, id: ConnId) -> Option<(&FourTuple, &V)> {
        match self.slots.get(id.index as usize)? {
            Slot {
                generation,
                state: SlotState::Occupied { tuple, value },
            } if *generation == id.generation => Some((tuple, value)),
            _ => None,
        }
    }

    /// The state of a live connection.
    pub fn get(&self, id: ConnId) -> Option<&V> {
        self.slot(id).map(|(_, v)| v)
    }

    /// The state of a live connection, mutably.
    pub fn get_mut(&mut self, id: ConnId) -> Option<&mut V> {
        self.get_with_tuple_mut(id).map(|(_, v)| v)
    }

    /// The 4-tuple and the state of a live connection, the state mutably (one lookup).
    pub fn get_with_tuple_mut(&mut self, id: ConnId) -> Option<(&FourTuple, &mut V)> {
        match self.slots.get_mut(id.index as usize)? {
            Slot {
                generation,
                state: SlotState::Occupied { tuple, value },
            } if *generation == id.generation => Some((tuple, value)),
            _ => None,
        }
    }

    /// The 4-tuple of a live connection.
    pub fn tuple(&self, id: ConnId) -> Option<&FourTuple> {
        self.slot(id).map(|(t, _)| t)
    }

    /// Removes a connection, returning its state; `None` if `id` is stale.
    pub fn remove(&mut self, id: ConnId) -> Option<V> {
        let tuple = *self.tuple(id)?;
        let hash = hash_of(&self.hasher, &tuple);
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == id.index) {
            entry.remove();
        }
        let slot = &mut self.slots[id.index as usize];
        let old = core::mem::replace(
            &mut slot.state,
            SlotState::Vacant {
                next_free: self.free_head,
            },
        );
        slot.generation = slot.generation.wrapping_add(1);
        self.free_head = id.index;
        self.len -= 1;
        match old {
            SlotState::Occupied { value, .. } => Some(value),
            SlotState::Vacant { .. } => None,
        }
    }

    /// All live connections, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (ConnId, &FourTuple, &V)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match &slot.state {
                SlotState::Occupied { tuple, value } => Some((
                    ConnId {
                        index: i as u32,
                        generation: slot.generation,
                    },
                    tuple,
                    value,
                )),
                SlotState::Vacant { .. } => None,
            })
    }

    /// All live connections, in slot order, with mutable state.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ConnId, &FourTuple, &mut V)> + '_ {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, slot)| match &mut slot.state {
                SlotState::Occupied { tuple, value } => Some((
                    ConnId {
                        index: i as u32,
                        generation: slot.generation,
                    },
                    &*tuple,
                    value,
                )),
                SlotState::Vacant { .. } => None,
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn tuple(n: u32) -> FourTuple {
        FourTuple {
            local_addr: Ipv4Addr::new(198, 18, 0, 1),
            local_port: 443,
            remote_addr: Ipv4Addr::from_bits(0xC613_0000 | (n >> 16)),
            remote_port: n as u16,
        }
    }

    #[test]
    fn table_insert_lookup_remove_roundtrip() {
        let mut t = ConnTable::new(4);
        let a = t.insert(tuple(1), "a").unwrap();
        let b = t.insert(tuple(2), "b").unwrap();
        assert_eq!(t.lookup(&tuple(1)), Some(a));
        assert_eq!(t.get(b), Some(&"b"));
        *t.get_mut(b).unwrap() = "B";
        assert_eq!(t.remove(b), Some("B"));
        assert_eq!(t.lookup(&tuple(2)), None);
        assert_eq!(t.get(b), None);
        assert_eq!(t.remove(b), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn table_stale_id_after_reuse_rejected() {
        let mut t = ConnTable::new(4);
        let a = t.insert(tuple(1), 1).unwrap();
        t.remove(a);
        let c = t.insert(tuple(3), 3).unwrap();
        assert_eq!(c.index(), a.index());
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None);
        assert_eq!(t.get(c), Some(&3));
    }

    #[test]
    fn table_full_insert_rejected() {
        let mut t = ConnTable::new(2);
        t.insert(tuple(1), ()).unwrap();
        let b = t.insert(tuple(2), ()).unwrap();
        assert_eq!(t.insert(tuple(3), ()), Err(InsertError::TableFull));
        assert_eq!(t.insert(tuple(2), ()), Err(InsertError::Duplicate(b)));
        t.remove(b);
        assert!(t.insert(tuple(3), ()).is_ok());
    }

    #[test]
    fn table_iter_yields_live_entries() {
        let mut t = ConnTable::new(8);
        let ids: Vec<_> = (0..5).map(|i| t.insert(tuple(i), i).unwrap()).collect();
        t.remove(ids[2]);
        for (_, _, v) in t.iter_mut() {
            *v += 10;
        }
        let mut seen: Vec<_> = t.iter().map(|(id, tp, v)| (id, *tp, *v)).collect();
        seen.sort_by_key(|e| e.2);
        let want: Vec<_> = [0, 1, 3, 4]
            .iter()
            .map(|&i| (ids[i as usize], tuple(i), i + 10))
            .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn table_million_entries_lookups_hit() {
        const N: u32 = 1_000_000;
        let mut t: ConnTable<u32> = ConnTable::with_seed(N as usize, 7);
        let ids: Vec<ConnId> = (0..N).map(|i| t.insert(tuple(i), i).unwrap()).collect();
        assert_eq!(t.len(), N as usize);
        assert_eq!(t.insert(tuple(N), N), Err(InsertError::TableFull));
        for i in (0..N).step_by(7) {
            let id = t.lookup(&tuple(i)).unwrap();
            assert_eq!(id, ids[i as usize]);
            assert_eq!(t.get(id), Some(&i));
        }
        assert_eq!(t.lookup(&tuple(N + 1)), None);
        let per_entry = t.memory_usage() as f64 / f64::from(N);
        let overhead = per_entry - core::mem::size_of::<u32>() as f64;
        println!("table: {per_entry:.1} bytes/entry incl. 4-byte value, {overhead:.1} overhead");
        assert!(overhead < 64.0, "table overhead {overhead} bytes/entry");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8),
        Remove(u8),
        Lookup(u8),
    }

    proptest! {
        // Oracle: the table against a HashMap from tuple to value, with stale ids.
        #[test]
        fn table_ops_match_hashmap_model(ops in proptest::collection::vec(prop_oneof![
            any::<u8>().prop_map(Op::Insert),
            any::<u8>().prop_map(Op::Remove),
            any::<u8>().prop_map(Op::Lookup),
        ], 0..200)) {
            let mut t = ConnTable::new(40);
            let mut model: HashMap<u8, ConnId> = HashMap::new();
            let mut stale = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(k) => {
                        let r = t.insert(tuple(u32::from(k) * 65_537), k);
                        match model.get(&k) {
                            Some(&id) => prop_assert_eq!(r, Err(InsertError::Duplicate(id))),
                            None if model.len() == 40 => prop_assert_eq!(r, Err(InsertError::TableFull)),
                            None => { model.insert(k, r.unwrap()); }
                        }
                    }
                    Op::Remove(k) => {
                        let id = model.remove(&k);
                        prop_assert_eq!(id.and_then(|id| t.remove(id)), id.map(|_| k));
                        stale.extend(id);
                    }
                    Op::Lookup(k) => {
                        prop_assert_eq!(t.lookup(&tuple(u32::from(k) * 65_537)), model.get(&k).copied());
                    }
                }
                prop_assert_eq!(t.len(), model.len());
                for id in &stale {
                    prop_assert_eq!(t.get(*id), None);
                }
            }
        }
    }
}
