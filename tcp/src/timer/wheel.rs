//! A hierarchical timer wheel holding every per-connection timer of a worker.
//!
//! # Granularity
//!
//! Time is cut into ticks of `tick` (default 1 ms). A timer with deadline `d` is due at
//! its *expiry tick* `ceil(d / tick)`, and fires in the first call to
//! [`advance`](TimerWheel::advance) (or [`expire`](TimerWheel::expire)) whose `now`
//! satisfies `floor(now / tick) >= ceil(d / tick)`. So a timer never fires before its
//! deadline (`d <= ceil(d / tick) * tick <= now`) and, if the caller advances at every
//! tick boundary, at most one tick after it. A timer inserted with a deadline in the past
//! fires at the next advance.
//!
//! # Structure
//!
//! Six levels of 64 slots; level `l` slots span `64^l` ticks, so the wheel covers `2^36`
//! ticks (795 days at 1 ms) ahead of the current tick. An entry goes to the level of the
//! highest 6-bit digit in which its expiry tick differs from the current tick (as in
//! Linux and tokio), so lower levels always hold earlier timers. When the wheel reaches a
//! higher-level slot, its entries are re-inserted into lower levels (cascading). A
//! deadline beyond the covered range is clamped into the top level and re-cascaded each
//! time its slot comes round, until it is in range.
//!
//! Entries live in a slab with per-slot generations; a [`TimerId`] is an index plus the
//! generation, so a stale handle (timer already fired or cancelled) is recognised and
//! ignored. Each slot is an intrusive doubly linked list through the slab, so insert,
//! cancel and reschedule are O(1) and allocation-free once the slab has grown.

use core::cell::Cell;
use core::time::Duration;

use crate::time::Instant;

const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
const LEVELS: usize = 6;
/// Ticks covered by the whole wheel ahead of the current tick.
const WHEEL_SPAN: u64 = 1 << (SLOT_BITS * LEVELS as u32);
/// Marks the end of a list / no link.
const NIL: u32 = u32::MAX;
/// `level` value of entries on the due list (expiry tick already reached).
const DUE: u8 = u8::MAX;

/// A handle to a scheduled timer: slab index plus generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

#[derive(Debug)]
struct Entry<T> {
    value: T,
    /// Expiry tick: `ceil(deadline / tick)`.
    when: u64,
    deadline: Instant,
    prev: u32,
    next: u32,
    level: u8,
    slot: u8,
}

#[derive(Debug)]
enum SlabSlot<T> {
    Occupied(Entry<T>),
    Vacant { next_free: u32 },
}

#[derive(Debug)]
struct Node<T> {
    generation: u32,
    slot: SlabSlot<T>,
}

/// One level: 64 list heads and a bitmap of non-empty slots.
#[derive(Debug, Clone, Copy)]
struct Level {
    heads: [u32; SLOTS],
    occupied: u64,
}

/// A hierarchical timer wheel with values of type `T` (see the module documentation for
/// the exact firing rule).
#[derive(Debug)]
pub struct TimerWheel<T> {
    tick_micros: u64,
    /// Every timer with expiry tick `<= elapsed` has been moved to the due list or fired.
    elapsed: u64,
    levels: [Level; LEVELS],
    /// Timers whose expiry tick is already reached; they fire at the next advance.
    due: u32,
    nodes: Vec<Node<T>>,
    free_head: u32,
    len: usize,
    /// [`TimerWheel::next_deadline`]'s tick, remembered until the wheel changes (`None`:
    /// not known; `Some(None)`: no timer).
    next_tick: Cell<Option<Option<u64>>>,
}

impl<T> Default for TimerWheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> TimerWheel<T> {
    /// An empty wheel with a 1 ms tick, starting at [`Instant::ZERO`].
    pub fn new() -> Self {
        Self::with_tick(Duration::from_millis(1))
    }

    /// An empty wheel with the given tick (at least 1 µs), starting at [`Instant::ZERO`].
    pub fn with_tick(tick: Duration) -> Self {
        let tick_micros = u64::try_from(tick.as_micros()).unwrap_or(u64::MAX).max(1);
        TimerWheel {
            tick_micros,
            elapsed: 0,
            levels: [Level {
                heads: [NIL; SLOTS],
                occupied: 0,
            }; LEVELS],
            due: NIL,
            nodes: Vec::new(),
            free_head: NIL,
            len: 0,
            next_tick: Cell::new(None),
        }
    }

    /// The tick length.
    pub fn tick(&self) -> Duration {
        Duration::from_micros(self.tick_micros)
    }

    /// Number of scheduled timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// No timers are scheduled.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn expiry_tick(&self, deadline: Instant) -> u64 {
        deadline.total_micros().div_ceil(self.tick_micros)
    }

    fn tick_instant(&self, tick: u64) -> Instant {
        Instant::from_micros(tick.saturating_mul(self.tick_micros))
    }

    fn entry(&self, index: u32) -> Option<&Entry<T>> {
        match &self.nodes.get(index as usize)?.slot {
            SlabSlot::Occupied(e) => Some(e),
            SlabSlot::Vacant { .. } => None,
        }
    }

    fn entry_mut(&mut self, index: u32) -> Option<&mut Entry<T>> {
        match &mut self.nodes.get_mut(index as usize)?.slot {
            SlabSlot::Occupied(e) => Some(e),
            SlabSlot::Vacant { .. } => None,
        }
    }

    fn live_index(&self, id: TimerId) -> Option<u32> {
        let node = self.nodes.get(id.index as usize)?;
        match node.slot {
            SlabSlot::Occupied(_) if node.generation == id.generation => Some(id.index),
            _ => None,
        }
    }

    /// Schedules `value` to fire at `deadline`. O(1).
    pub fn insert(&mut self, deadline: Instant, value: T) -> TimerId {
        let entry = Entry {
            value,
            when: self.expiry_tick(deadline),
            deadline,
            prev: NIL,
            next: NIL,
            level: DUE,
            slot: 0,
        };
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let node = &mut self.nodes[index as usize];
            if let SlabSlot::Vacant { next_free } = node.slot {
                self.free_head = next_free;
            }
            node.slot = SlabSlot::Occupied(entry);
            index
        } else {
            let index = u32::try_from(self.nodes.len()).unwrap_or(NIL);
            debug_assert!(index != NIL, "timer slab exhausted");
            self.nodes.push(Node {
                generation: 0,
                slot: SlabSlot::Occupied(entry),
            });
            index
        };
        self.len += 1;
        self.link(index);
        TimerId {
            index,
            generation: self.nodes[index as usize].generation,
        }
    }

    /// Cancels a timer, returning its value, or `None` if it already fired or was
    /// cancelled. O(1).
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let index = self.live_index(id)?;
        self.unlink(index);
        let node = &mut self.nodes[index as usize];
        let old = core::mem::replace(
            &mut node.slot,
            SlabSlot::Vacant {
                next_free: self.free_head,
            },
        );
        node.generation = node.generation.wrapping_add(1);
        self.free_head = index;
        self.len -= 1;
        match old {
            SlabSlot::Occupied(e) => Some(e.value),
            SlabSlot::Vacant { .. } => None,
        }
    }

    /// Moves a pending timer to a new deadline, keeping its id; returns `false` if the
    /// timer already fired or was cancelled. O(1).
    pub fn reschedule(&mut self, id: TimerId, deadline: Instant) -> bool {
        let Some(index) = self.live_index(id) else {
            return false;
        };
        self.unlink(index);
        let when = self.expiry_tick(deadline);
        if let Some(e) = self.entry_mut(index) {
            e.when = when;
            e.deadline = deadline;
        }
        self.link(index);
        true
    }

    /// The value of a pending timer.
    pub fn get(&self, id: TimerId) -> Option<&T> {
        self.entry(self.live_index(id)?).map(|e| &e.value)
    }

    /// The value of a pending timer, mutably.
    pub fn get_mut(&mut self, id: TimerId) -> Option<&mut T> {
        let index = self.live_index(id)?;
        self.entry_mut(index).map(|e| &mut e.value)
    }

    /// The deadline a pending timer was scheduled with.
    pub fn deadline(&self, id: TimerId) -> Option<Instant> {
        self.entry(self.live_index(id)?).map(|e| e.deadline)
    }

    /// Where an entry with expiry tick `when` goes: `None` for the due list, else
    /// `(level, slot)`.
    fn place(&self, when: u64) -> Option<(usize, usize)> {
        if when <= self.elapsed {
            return None;
        }
        // Clamp far deadlines to the top level; they re-cascade when their slot comes.
        let when = when.min(self.elapsed.saturating_add(WHEEL_SPAN - 1));
        let differing = (self.elapsed ^ when) | (SLOTS as u64 - 1);
        let significant = 63 - differing.leading_zeros();
        let level = ((significant / SLOT_BITS) as usize).min(LEVELS - 1);
        let slot = ((when >> (SLOT_BITS * level as u32)) as usize) & (SLOTS - 1);
        Some((level, slot))
    }

    fn link(&mut self, index: u32) {
        self.next_tick.set(None);
        let Some(when) = self.entry(index).map(|e| e.when) else {
            return;
        };
        let place = self.place(when);
        let head = match place {
            None => self.due,
            Some((level, slot)) => self.levels[level].heads[slot],
        };
        if let Some(e) = self.entry_mut(index) {
            e.prev = NIL;
            e.next = head;
            (e.level, e.slot) = match place {
                None => (DUE, 0),
                Some((level, slot)) => (level as u8, slot as u8),
            };
        }
        if let Some(h) = self.entry_mut(head) {
            h.prev = index;
        }
        match place {
            None => self.due = index,
            Some((level, slot)) => {
                self.levels[level].heads[slot] = index;
                self.levels[level].occupied |= 1 << slot;
            }
        }
    }

    fn unlink(&mut self, index: u32) {
        self.next_tick.set(None);
        let Some((prev, next, level, slot)) =
            self.entry(index).map(|e| (e.prev, e.next, e.level, e.slot))
        else {
            return;
        };
        if let Some(p) = self.entry_mut(prev) {
            p.next = next;
        } else if level == DUE {
            self.due = next;
        } else {
            let l = &mut self.levels[level as usize];
            l.heads[slot as usize] = next;
            if next == NIL {
                l.occupied &= !(1 << slot);
            }
        }
        if let Some(n) = self.entry_mut(next) {
            n.prev = prev;
        }
    }

    /// The earliest non-empty wheel slot: `(level, slot, first tick it covers)`.
    fn next_slot(&self) -> Option<(usize, usize, u64)> {
        for (level, l) in self.levels.iter().enumerate() {
            if l.occupied == 0 {
                continue;
            }
            let shift = SLOT_BITS * level as u32;
            let current = ((self.elapsed >> shift) as usize) & (SLOTS - 1);
            // Search the slots after the current one first, wrapping round (only the
            // top level, holding clamped entries, can have slots at or before it).
            let rotated = l.occupied.rotate_right(((current + 1) % SLOTS) as u32);
            let slot = (current + 1 + rotated.trailing_zeros() as usize) % SLOTS;
            let level_span = 1u64 << (shift + SLOT_BITS);
            let base = self.elapsed & !(level_span - 1);
            let mut start = base.saturating_add((slot as u64) << shift);
            if start <= self.elapsed {
                start = start.saturating_add(level_span);
            }
            return Some((level, slot, start));
        }
        None
    }

    /// A time at or before the earliest timer's expiry tick: the exact expiry tick when
    /// the earliest timer is within 64 ticks, otherwise the start of the slot holding it
    /// (waking then just cascades). A time in the past means timers are due. `None` if
    /// no timer is scheduled.
    pub fn next_deadline(&self) -> Option<Instant> {
        if let Some(tick) = self.next_tick.get() {
            // Checked against the search wherever debug assertions are on.
            debug_assert_eq!(tick, self.search_next_tick(), "stale next deadline");
            return tick.map(|t| self.tick_instant(t));
        }
        let tick = self.search_next_tick();
        self.next_tick.set(Some(tick));
        tick.map(|t| self.tick_instant(t))
    }

    /// The tick [`TimerWheel::next_deadline`] stands for, found from the bitmaps.
    fn search_next_tick(&self) -> Option<u64> {
        if self.due != NIL {
            Some(self.elapsed)
        } else {
            self.next_slot().map(|(_, _, start)| start)
        }
    }

    /// Fires every timer whose expiry tick is at or before `now`'s tick, calling
    /// `fire(id, value)` for each (by expiry tick, timers already overdue when inserted
    /// first); returns how many fired. A `now` earlier than a previous one is treated as
    /// the previous one.
    pub fn advance(&mut self, now: Instant, mut fire: impl FnMut(TimerId, T)) -> usize {
        let mut fired = 0;
        while let Some((id, value)) = self.pop_expired(now) {
            fire(id, value);
            fired += 1;
        }
        fired
    }

    /// Removes and returns one timer due at `now` (same rule and order as
    /// [`advance`](Self::advance)), or `None` once none is left, leaving the wheel at
    /// `now`. Between calls the caller may insert, cancel or reschedule timers (e.g. re-arm
    /// a retransmission timer from its handler); a timer inserted already due comes out
    /// of a later call.
    pub fn pop_expired(&mut self, now: Instant) -> Option<(TimerId, T)> {
        let target = now.total_micros() / self.tick_micros;
        loop {
            if self.due != NIL {
                let index = self.due;
                let generation = self.nodes.get(index as usize).map_or(0, |n| n.generation);
                let id = TimerId { index, generation };
                if let Some(value) = self.cancel(id) {
                    return Some((id, value));
                }
                // Unreachable: the due list holds only live entries.
                self.due = NIL;
                self.next_tick.set(None);
                continue;
            }
            match self.next_slot() {
                Some((level, slot, start)) if start <= target => self.cascade(level, slot, start),
                _ => {
                    if target > self.elapsed {
                        self.elapsed = target;
                        self.next_tick.set(None);
                    }
                    return None;
                }
            }
        }
    }

    /// Moves the wheel to `start` and re-places the entries of slot `(level, slot)`
    /// relative to it: those now due go to the due list, the rest to lower levels.
    fn cascade(&mut self, level: usize, slot: usize, start: u64) {
        self.next_tick.set(None);
        self.elapsed = start;
        let l = &mut self.levels[level];
        let mut index = l.heads[slot];
        l.heads[slot] = NIL;
        l.occupied &= !(1 << slot);
        while index != NIL {
            let next = self.entry(index).map_or(NIL, |e| e.next);
            self.link(index);
            index = next;
        }
    }

    /// [`advance`](Self::advance), collecting the fired values into `out`.
    pub fn expire(&mut self, now: Instant, out: &mut Vec<T>) -> usize {
        self.advance(now, |_, v| out.push(v))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::cmp::Reverse;
    use std::collections::{BTreeSet, BinaryHeap, HashMap};

    fn ms(n: u64) -> Instant {
        Instant::from_millis(n)
    }

    fn fired_at(w: &mut TimerWheel<u32>, now: Instant) -> Vec<u32> {
        let mut out = Vec::new();
        w.expire(now, &mut out);
        out
    }

    #[test]
    fn wheel_deadline_reached_fires_not_before() {
        let mut w = TimerWheel::new();
        w.insert(ms(10), 1);
        w.insert(Instant::from_micros(10_500), 2);
        assert_eq!(fired_at(&mut w, ms(9)), [] as [u32; 0]);
        assert_eq!(
            fired_at(&mut w, Instant::from_micros(9_999)),
            [] as [u32; 0]
        );
        assert_eq!(fired_at(&mut w, ms(10)), [1]);
        // 10.5 ms rounds up to tick 11.
        assert_eq!(
            fired_at(&mut w, Instant::from_micros(10_900)),
            [] as [u32; 0]
        );
        assert_eq!(fired_at(&mut w, ms(11)), [2]);
        assert!(w.is_empty());
    }

    #[test]
    fn wheel_cancelled_timer_never_fires() {
        let mut w = TimerWheel::new();
        let a = w.insert(ms(5), 1);
        let b = w.insert(ms(5), 2);
        assert_eq!(w.cancel(a), Some(1));
        assert_eq!(w.cancel(a), None);
        assert_eq!(fired_at(&mut w, ms(100)), [2]);
        // Stale handle after firing; the slot is reused with a new generation.
        assert_eq!(w.cancel(b), None);
        let c = w.insert(ms(200), 3);
        assert!(c.index == a.index || c.index == b.index);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.get(c), Some(&3));
    }

    #[test]
    fn wheel_long_deadline_cascades_exactly() {
        let mut w = TimerWheel::new();
        // 2*MSL of 30 s, a two-hour keepalive and a far "never" clamp.
        w.insert(ms(60_000), 1);
        w.insert(ms(7_200_000), 2);
        w.insert(Instant::from_micros(u64::MAX), 3);
        assert_eq!(w.next_deadline(), Some(ms(4096 * 14)));
        assert_eq!(fired_at(&mut w, ms(59_999)), [] as [u32; 0]);
        assert_eq!(w.next_deadline(), Some(ms(60_000)));
        assert_eq!(fired_at(&mut w, ms(60_000)), [1]);
        assert_eq!(fired_at(&mut w, ms(7_199_999)), [] as [u32; 0]);
        assert_eq!(fired_at(&mut w, ms(7_200_000)), [2]);
        assert_eq!(fired_at(&mut w, ms(1 << 40)), [] as [u32; 0]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn wheel_past_deadline_fires_next_advance() {
        let mut w = TimerWheel::new();
        fired_at(&mut w, ms(1000));
        w.insert(ms(3), 7);
        assert_eq!(w.next_deadline(), Some(ms(1000)));
        assert_eq!(fired_at(&mut w, ms(1000)), [7]);
        assert_eq!(w.next_deadline(), None);
    }

    #[test]
    fn wheel_reschedule_moves_deadline() {
        let mut w = TimerWheel::new();
        let a = w.insert(ms(50), 1);
        assert!(w.reschedule(a, ms(20)));
        assert_eq!(w.deadline(a), Some(ms(20)));
        assert_eq!(fired_at(&mut w, ms(20)), [1]);
        assert!(!w.reschedule(a, ms(30)));
    }

    #[test]
    fn wheel_pop_expired_rearm_in_handler_fires_each_period() {
        let mut w = TimerWheel::new();
        w.insert(ms(10), 0u32);
        let mut fired = Vec::new();
        // A periodic 10 ms timer re-armed from its handler, advanced in one 55 ms jump.
        while let Some((_, n)) = w.pop_expired(ms(55)) {
            fired.push(n);
            w.insert(ms(10 * (u64::from(n) + 2)), n + 1);
        }
        assert_eq!(fired, [0, 1, 2, 3, 4]);
        assert_eq!(w.next_deadline(), Some(ms(60)));
    }

    #[test]
    fn wheel_coarse_tick_rounds_up() {
        let mut w = TimerWheel::with_tick(Duration::from_millis(10));
        w.insert(ms(11), 1);
        assert_eq!(w.next_deadline(), Some(ms(20)));
        assert_eq!(fired_at(&mut w, ms(19)), [] as [u32; 0]);
        assert_eq!(fired_at(&mut w, ms(20)), [1]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Insert at `now + delta` microseconds (may be in the past when negative).
        Insert(i64),
        Cancel(usize),
        Reschedule(usize, i64),
        /// Advance by `delta` microseconds.
        Advance(u64),
    }

    fn delta() -> impl Strategy<Value = i64> {
        prop_oneof![
            -5_000i64..5_000,
            -5_000i64..300_000,
            0i64..20_000_000,
            0i64..(1 << 42),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => delta().prop_map(Op::Insert),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => (any::<usize>(), delta()).prop_map(|(i, d)| Op::Reschedule(i, d)),
            3 => prop_oneof![0u64..3_000, 0u64..400_000, 0u64..50_000_000, 0u64..(1 << 43)]
                .prop_map(Op::Advance),
        ]
    }

    fn w_deadline(deadlines: &HashMap<u32, u64>, v: u32) -> u64 {
        deadlines.get(&v).copied().unwrap_or(u64::MAX)
    }

    proptest! {
        // Oracle: a binary heap keyed by expiry tick `ceil(deadline / tick)`; at each
        // advance the wheel must fire exactly the timers with expiry tick <= floor(now /
        // tick), none before its deadline, and next_deadline must never be later than the
        // earliest pending expiry tick (or the current tick, for overdue timers).
        #[test]
        fn wheel_ops_match_binary_heap_oracle(
            tick_us in prop_oneof![Just(1000u64), 1u64..5_000],
            start in prop_oneof![Just(0u64), 0u64..(1 << 45)],
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            let mut w: TimerWheel<u32> = TimerWheel::with_tick(Duration::from_micros(tick_us));
            let mut now = start;
            w.advance(Instant::from_micros(now), |_, _| unreachable!());
            let mut heap: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
            let mut live: HashMap<u32, (TimerId, u64, u64)> = HashMap::new();
            let mut ids: Vec<u32> = Vec::new();
            let mut next_value = 0u32;
            let mut deadline_of: HashMap<u32, u64> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(d) => {
                        let deadline = now.saturating_add_signed(d);
                        let id = w.insert(Instant::from_micros(deadline), next_value);
                        let when = deadline.div_ceil(tick_us);
                        heap.push(Reverse((when, next_value)));
                        live.insert(next_value, (id, when, deadline));
                        ids.push(next_value);
                        deadline_of.insert(next_value, deadline);
                        next_value += 1;
                    }
                    Op::Cancel(i) if !ids.is_empty() => {
                        let v = ids[i % ids.len()];
                        let want = live.remove(&v);
                        let got = want.and_then(|(id, _, _)| w.cancel(id));
                        prop_assert_eq!(got, want.map(|_| v));
                    }
                    Op::Reschedule(i, d) if !ids.is_empty() => {
                        let v = ids[i % ids.len()];
                        let deadline = now.saturating_add_signed(d);
                        let when = deadline.div_ceil(tick_us);
                        if let Some(entry) = live.get_mut(&v) {
                            prop_assert!(w.reschedule(entry.0, Instant::from_micros(deadline)));
                            entry.1 = when;
                            entry.2 = deadline;
                            deadline_of.insert(v, deadline);
                            heap.push(Reverse((when, v)));
                        }
                    }
                    Op::Advance(d) => {
                        now = now.saturating_add(d);
                        let target = now / tick_us;
                        let mut want = BTreeSet::new();
                        while let Some(Reverse((when, v))) = heap.peek().copied() {
                            if when > target {
                                break;
                            }
                            heap.pop();
                            // Skip stale heap entries (cancelled or rescheduled).
                            if live.get(&v).is_some_and(|e| e.1 == when) {
                                live.remove(&v);
                                want.insert(v);
                            }
                        }
                        let mut got = BTreeSet::new();
                        let mut early = Vec::new();
                        w.advance(Instant::from_micros(now), |id, v| {
                            got.insert(v);
                            if w_deadline(&deadline_of, v) > now {
                                early.push((id, v));
                            }
                        });
                        prop_assert!(early.is_empty(), "fired early: {:?}", early);
                        prop_assert_eq!(&got, &want);
                    }
                    _ => {}
                }
                prop_assert_eq!(w.len(), live.len());
                let earliest = live.values().map(|e| e.1).min();
                match (w.next_deadline(), earliest) {
                    (None, None) => {}
                    (Some(t), Some(when)) => {
                        // Overdue timers report the current tick.
                        let due_tick = when.max(now / tick_us);
                        prop_assert!(t.total_micros() <= due_tick.saturating_mul(tick_us));
                    }
                    (a, b) => prop_assert!(false, "next_deadline {:?} vs earliest {:?}", a, b),
                }
            }
        }

        // No timer fires before its deadline.
        #[test]
        fn wheel_fired_timer_deadline_not_after_now(
            deadlines in proptest::collection::vec(0u64..10_000_000, 1..50),
            steps in proptest::collection::vec(0u64..700_000, 1..40),
        ) {
            let mut w = TimerWheel::new();
            for &d in &deadlines {
                w.insert(Instant::from_micros(d), d);
            }
            let mut now = 0;
            for s in steps {
                now += s;
                w.advance(Instant::from_micros(now), |_, d| assert!(d <= now));
            }
        }
    }
}
