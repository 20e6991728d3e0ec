//! `clusterstack:provider/state`: a small per-plugin key/value store the host keeps between calls.
//!
//! Writes go through at once (not at the end of the call), so a plugin that records "image created"
//! and then traps does not create the image again on the next call.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::plugin::bindings::clusterstack::provider::state::{Host, StateError};
use crate::plugin::store::CallState;

/// Storage behind the `state` capability (in memory, a file, or a Kubernetes object).
pub trait StateStore: Send + Sync {
    fn get(&self, key: &str) -> Option<String>;
    /// Stores `value`; fails with the quota when the store would grow past it.
    fn set(&self, key: &str, value: &str) -> Result<(), u64>;
    fn delete(&self, key: &str);
    /// The whole store (sorted by key).
    fn snapshot(&self) -> BTreeMap<String, String>;
}

/// An in-memory store with a byte quota (keys plus values); 1 MiB by default.
#[derive(Debug)]
pub struct MemoryState {
    entries: Mutex<BTreeMap<String, String>>,
    quota: u64,
}

impl Default for MemoryState {
    fn default() -> Self {
        MemoryState::new(BTreeMap::new(), 1 << 20)
    }
}

impl MemoryState {
    pub fn new(entries: BTreeMap<String, String>, quota: u64) -> Self {
        MemoryState {
            entries: Mutex::new(entries),
            quota,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        // A poisoned lock only means another call panicked mid-update of a plain map: keep going.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl StateStore for MemoryState {
    fn get(&self, key: &str) -> Option<String> {
        self.lock().get(key).cloned()
    }

    fn set(&self, key: &str, value: &str) -> Result<(), u64> {
        let mut entries = self.lock();
        let used: u64 = entries
            .iter()
            .filter(|(k, _)| k.as_str() != key)
            .map(|(k, v)| (k.len() + v.len()) as u64)
            .sum();
        if used + (key.len() + value.len()) as u64 > self.quota {
            return Err(self.quota);
        }
        entries.insert(key.to_string(), value.to_string());
        Ok(())
    }

    fn delete(&self, key: &str) {
        self.lock().remove(key);
    }

    fn snapshot(&self) -> BTreeMap<String, String> {
        self.lock().clone()
    }
}

/// Without the `state` grant the plugin sees an empty store with a quota of 0 bytes: `state` has no
/// `denied` case, and `quota-exceeded(0)` is the typed answer a plugin already handles. The host
/// logs why, so the plugin's author finds the missing grant.
impl CallState {
    fn state_granted(&self, operation: &str) -> bool {
        if !self.grants.state {
            tracing::warn!(
                target: "plugin",
                plugin = &*self.plugin,
                operation,
                "state is not granted to this plugin: it sees an empty store with a quota of 0 bytes"
            );
        }
        self.grants.state
    }
}

impl Host for CallState {
    fn get(&mut self, key: String) -> Option<String> {
        self.host_calls += 1;
        if !self.state_granted("get") {
            return None;
        }
        self.caps.state.get(&key)
    }

    fn set(&mut self, key: String, value: String) -> Result<(), StateError> {
        self.host_calls += 1;
        if !self.state_granted("set") {
            return Err(StateError::QuotaExceeded(0));
        }
        self.caps
            .state
            .set(&key, &value)
            .map_err(StateError::QuotaExceeded)
    }

    fn delete(&mut self, key: String) {
        self.host_calls += 1;
        if self.state_granted("delete") {
            self.caps.state.delete(&key);
        }
    }

    fn keys(&mut self, prefix: String) -> Vec<String> {
        self.host_calls += 1;
        if !self.state_granted("keys") {
            return Vec::new();
        }
        self.caps
            .state
            .snapshot()
            .into_keys()
            .filter(|k| k.starts_with(&prefix))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_counts_keys_and_values_and_replacing_frees_the_old_value() {
        let store = MemoryState::new(BTreeMap::new(), 10);
        assert_eq!(store.set("a", "1234"), Ok(()));
        assert_eq!(store.set("a", "123456789"), Ok(()));
        assert_eq!(store.set("b", "1"), Err(10));
        store.delete("a");
        assert_eq!(store.set("b", "1"), Ok(()));
        assert_eq!(
            store.snapshot().into_iter().collect::<Vec<_>>(),
            vec![("b".into(), "1".into())]
        );
    }
}
