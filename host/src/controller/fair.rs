//! Fair share of reconcile workers between namespaces.
//!
//! Each controller runs `--concurrency` reconciles at once. Without a cap, one namespace with many
//! objects whose reconciles are slow (a looping template that renders until `--render-timeout`, a
//! plugin that spends its whole deadline) holds every worker, and the objects of every other namespace
//! wait behind it. [`NamespaceSlots`] caps the reconciles one namespace has in flight per controller
//! (`--namespace-concurrency`); a reconcile over the cap does nothing and comes back after
//! [`DEFERRED`], so the worker goes to the next object in the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::Metrics;

/// How long a reconcile over its namespace's share waits before it is tried again.
pub const DEFERRED: Duration = Duration::from_millis(500);

/// Reconciles in flight per (controller, namespace), capped.
#[derive(Debug)]
pub struct NamespaceSlots {
    cap: usize,
    held: Mutex<HashMap<(&'static str, String), usize>>,
}

impl NamespaceSlots {
    /// At most `cap` reconciles per controller and namespace (at least one).
    pub fn new(cap: usize) -> Arc<Self> {
        Arc::new(NamespaceSlots {
            cap: cap.max(1),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// The share of `concurrency` workers one namespace gets when `--namespace-concurrency` is not
    /// set: half, at least one. Half leaves the other half to every other namespace.
    pub fn default_cap(concurrency: u16) -> usize {
        (usize::from(concurrency) / 2).max(1)
    }

    /// A slot for one reconcile of `controller` in `namespace`, or `None` when the namespace already
    /// has its share in flight. The slot is given back when dropped.
    pub fn try_take(self: &Arc<Self>, controller: &'static str, namespace: &str) -> Option<Slot> {
        let key = (controller, namespace.to_owned());
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(key.clone()).or_default();
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }

    /// [`NamespaceSlots::try_take`], counting a refusal as a deferred reconcile of `controller`.
    pub fn take(
        self: &Arc<Self>,
        controller: &'static str,
        namespace: &str,
        metrics: Option<&Metrics>,
    ) -> Option<Slot> {
        let slot = self.try_take(controller, namespace);
        if let (None, Some(metrics)) = (&slot, metrics) {
            metrics.deferred(controller);
        }
        slot
    }

    fn give_back(&self, key: &(&'static str, String)) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                held.remove(key);
            }
        }
    }
}

/// One reconcile's place in its namespace's share (see [`NamespaceSlots::try_take`]).
#[derive(Debug)]
pub struct Slot {
    slots: Arc<NamespaceSlots>,
    key: (&'static str, String),
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.give_back(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_gets_its_share_and_no_more_while_others_still_get_theirs() {
        let slots = NamespaceSlots::new(2);
        let a1 = slots.try_take("release", "a");
        let a2 = slots.try_take("release", "a");
        assert!(a1.is_some() && a2.is_some());
        assert!(
            slots.try_take("release", "a").is_none(),
            "a third reconcile of a is over the cap"
        );
        assert!(slots.try_take("release", "b").is_some(), "b is not held up by a");
        assert!(
            slots.try_take("stack", "a").is_some(),
            "each controller has its own share"
        );
        drop(a1);
        assert!(
            slots.try_take("release", "a").is_some(),
            "a slot given back can be taken"
        );
        drop(a2);
        assert!(
            slots.held.lock().expect("not poisoned").is_empty(),
            "no entry stays for idle namespaces"
        );
    }

    #[test]
    fn the_default_share_is_half_the_workers_and_at_least_one() {
        assert_eq!(NamespaceSlots::default_cap(8), 4);
        assert_eq!(NamespaceSlots::default_cap(4), 2);
        assert_eq!(NamespaceSlots::default_cap(1), 1);
        assert_eq!(NamespaceSlots::new(0).cap, 1);
    }
}
