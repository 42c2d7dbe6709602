//! Which topics this node needs from NATS: the union of every worker's topics with a
//! local subscriber, kept from the workers' change events (sans-IO, no NATS here).
//!
//! A worker reports a topic when its first local subscriber arrives and when its last
//! one leaves; when its report queue was full it later sends its whole topic set
//! instead ([`Interest::snapshot`]), which replaces what was known of it. A topic wanted
//! by no worker is released only after the linger, so a client that resubscribes at
//! once does not churn NATS subscriptions.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the caller must do with the NATS subscriptions.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Subscribe to this topic (no subscription for it exists).
    Subscribe(Arc<str>),
    /// Unsubscribe (no worker has wanted it for the linger).
    Unsubscribe(Arc<str>),
}

/// The topics wanted, by worker, and the subscriptions held.
#[derive(Debug)]
pub struct Interest {
    by_worker: Vec<HashSet<Arc<str>>>,
    /// Workers wanting each topic.
    wanted: HashMap<Arc<str>, usize>,
    /// Subscriptions held; `Some(at)`: nobody wants it, release at `at`.
    held: HashMap<Arc<str>, Option<Instant>>,
    /// How many of `held` are lingering (so [`Interest::expired`] scans only then).
    lingering: usize,
    linger: Duration,
}

impl Interest {
    /// For `workers` workers, releasing unwanted subscriptions after `linger`.
    pub fn new(workers: usize, linger: Duration) -> Interest {
        Interest {
            by_worker: vec![HashSet::new(); workers],
            wanted: HashMap::new(),
            held: HashMap::new(),
            lingering: 0,
            linger,
        }
    }

    /// Worker `worker` now has (`on`) or no longer has local subscribers of `topic`.
    pub fn changed(
        &mut self,
        worker: usize,
        topic: Arc<str>,
        on: bool,
        now: Instant,
    ) -> Option<Action> {
        let set = self.by_worker.get_mut(worker)?;
        if on {
            if set.insert(Arc::clone(&topic)) {
                return self.add(topic);
            }
        } else if set.remove(&topic) {
            self.sub(&topic, now);
        }
        None
    }

    /// Worker `worker`'s whole topic set, replacing what was known of it.
    pub fn snapshot(&mut self, worker: usize, topics: Vec<Arc<str>>, now: Instant) -> Vec<Action> {
        let Some(old) = self.by_worker.get_mut(worker) else {
            return Vec::new();
        };
        let new: HashSet<Arc<str>> = topics.into_iter().collect();
        let gone: Vec<Arc<str>> = old.difference(&new).cloned().collect();
        let came: Vec<Arc<str>> = new.difference(old).cloned().collect();
        *old = new;
        for t in &gone {
            self.sub(t, now);
        }
        came.into_iter().filter_map(|t| self.add(t)).collect()
    }

    fn add(&mut self, topic: Arc<str>) -> Option<Action> {
        *self.wanted.entry(Arc::clone(&topic)).or_insert(0) += 1;
        match self.held.get_mut(&topic) {
            Some(release) => {
                // Wanted again within the linger: keep the subscription.
                if release.take().is_some() {
                    self.lingering -= 1;
                }
                None
            }
            None => {
                self.held.insert(Arc::clone(&topic), None);
                Some(Action::Subscribe(topic))
            }
        }
    }

    fn sub(&mut self, topic: &Arc<str>, now: Instant) {
        if let Some(n) = self.wanted.get_mut(topic) {
            *n -= 1;
            if *n == 0 {
                self.wanted.remove(topic);
                if let Some(release) = self.held.get_mut(topic) {
                    if release.replace(now + self.linger).is_none() {
                        self.lingering += 1;
                    }
                }
            }
        }
    }

    /// The subscriptions whose linger ended by `now` (forgotten here).
    pub fn expired(&mut self, now: Instant) -> Vec<Action> {
        if self.lingering == 0 {
            return Vec::new();
        }
        let due: Vec<Arc<str>> = self
            .held
            .iter()
            .filter(|(_, r)| r.is_some_and(|at| at <= now))
            .map(|(t, _)| Arc::clone(t))
            .collect();
        for t in &due {
            self.held.remove(t);
        }
        self.lingering -= due.len();
        due.into_iter().map(Action::Unsubscribe).collect()
    }

    /// Subscriptions held (including lingering ones).
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn t(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    #[test]
    fn interest_first_worker_subscribes_last_one_releases_after_linger() {
        let now = Instant::now();
        let linger = Duration::from_millis(100);
        let mut i = Interest::new(2, linger);
        assert_eq!(
            i.changed(0, t("a"), true, now),
            Some(Action::Subscribe(t("a")))
        );
        assert_eq!(i.changed(1, t("a"), true, now), None, "already held");
        assert_eq!(i.changed(0, t("a"), true, now), None, "repeated report");
        assert_eq!(i.changed(0, t("a"), false, now), None);
        assert!(
            i.expired(now + linger * 2).is_empty(),
            "worker 1 still wants it"
        );
        assert_eq!(i.changed(1, t("a"), false, now), None);
        assert!(i.expired(now + linger / 2).is_empty(), "lingering");
        assert_eq!(i.held(), 1);
        assert_eq!(i.expired(now + linger), vec![Action::Unsubscribe(t("a"))]);
        assert_eq!(i.held(), 0);
        assert_eq!(
            i.changed(0, t("a"), true, now),
            Some(Action::Subscribe(t("a")))
        );
    }

    #[test]
    fn interest_wanted_again_within_linger_keeps_subscription() {
        let now = Instant::now();
        let linger = Duration::from_millis(100);
        let mut i = Interest::new(1, linger);
        i.changed(0, t("a"), true, now);
        i.changed(0, t("a"), false, now);
        assert_eq!(i.changed(0, t("a"), true, now), None);
        assert!(i.expired(now + linger * 10).is_empty());
    }

    #[test]
    fn interest_snapshot_replaces_worker_view() {
        let now = Instant::now();
        let linger = Duration::ZERO;
        let mut i = Interest::new(2, linger);
        i.changed(0, t("a"), true, now);
        i.changed(0, t("b"), true, now);
        i.changed(1, t("b"), true, now);
        // Worker 0's reports were lost: it now has b and c.
        let acts = i.snapshot(0, vec![t("b"), t("c")], now);
        assert_eq!(acts, vec![Action::Subscribe(t("c"))]);
        assert_eq!(i.expired(now), vec![Action::Unsubscribe(t("a"))]);
        // b is still wanted by both; dropping worker 0's b keeps it for worker 1.
        assert!(i.snapshot(0, vec![t("c")], now).is_empty());
        assert!(i.expired(now).is_empty());
        assert_eq!(
            i.changed(5, t("x"), true, now),
            None,
            "unknown worker ignored"
        );
    }
}
