//! The object store of one cluster: objects as JSON keyed by (group, resource) and (namespace, name), the global
//! resourceVersion counter, and the bounded event history that watches replay from.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use crate::resource::Registry;

/// Kind of change of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Object created.
    Added,
    /// Object changed.
    Modified,
    /// Object removed.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object.
#[derive(Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// Storage key: group and plural.
    pub key: ResourceKey,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// What happened.
    pub etype: EventType,
    /// The object after the change (the last state for deletions).
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub old: Option<Arc<Value>>,
    /// The watch line of this event in the storage version, serialized once for all watchers.
    pub line: std::sync::OnceLock<Vec<u8>>,
}

/// (storage group, plural).
pub type ResourceKey = (String, String);
/// Events to replay and a receiver for the ones after them.
pub type Replay = (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>);
/// (namespace, name).
pub type ObjectKey = (String, String);

/// The state of one cluster.
#[derive(Debug)]
pub struct Store {
    rv: u64,
    /// The served types.
    pub registry: Registry,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Arc<Value>>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    compacted_rv: u64,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Store {
    /// An empty store with the built-in types.
    pub fn new(history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(65536);
        Store {
            rv: 1,
            registry: Registry::new(),
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_cap,
            compacted_rv: 0,
            tx,
        }
    }

    /// The last resourceVersion handed out.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// Take the next resourceVersion.
    pub fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The oldest resourceVersion a watch can start from.
    pub fn compacted_rv(&self) -> u64 {
        self.compacted_rv
    }

    /// One object.
    pub fn get(&self, key: &ResourceKey, ns: &str, name: &str) -> Option<Arc<Value>> {
        self.objects
            .get(key)?
            .get(&(ns.to_string(), name.to_string()))
            .cloned()
    }

    /// All objects of a type, in (namespace, name) order, optionally in one namespace.
    pub fn list(&self, key: &ResourceKey, ns: Option<&str>) -> Vec<Arc<Value>> {
        let Some(map) = self.objects.get(key) else {
            return vec![];
        };
        match ns {
            Some(ns) => map
                .range((ns.to_string(), String::new())..)
                .take_while(|((n, _), _)| n == ns)
                .map(|(_, v)| v.clone())
                .collect(),
            None => map.values().cloned().collect(),
        }
    }

    /// Visit the objects of a type in (namespace, name) order, optionally in one namespace, after a key;
    /// `f` returns false to stop early.
    pub fn scan(
        &self,
        key: &ResourceKey,
        ns: Option<&str>,
        after: Option<&ObjectKey>,
        mut f: impl FnMut(&ObjectKey, &Arc<Value>) -> bool,
    ) {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let Some(map) = self.objects.get(key) else { return };
        let lower = match (after, ns) {
            (Some(a), _) => Excluded(a.clone()),
            (None, Some(ns)) => Included((ns.to_string(), String::new())),
            (None, None) => Unbounded,
        };
        for (k, v) in map.range((lower, Unbounded)) {
            if ns.is_some_and(|ns| k.0 != ns) {
                if ns.is_some_and(|ns| k.0.as_str() > ns) {
                    break;
                }
                continue;
            }
            if !f(k, v) {
                break;
            }
        }
    }

    /// Number of objects of every type.
    pub fn len(&self) -> usize {
        self.objects.values().map(BTreeMap::len).sum()
    }

    /// Whether the store holds no objects.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every stored type key.
    pub fn keys(&self) -> Vec<ResourceKey> {
        self.objects.keys().cloned().collect()
    }

    /// Store an object (its metadata.resourceVersion already set to `rv`) and record the event.
    pub fn put(
        &mut self,
        key: &ResourceKey,
        obj: Value,
        rv: u64,
        etype: EventType,
        old: Option<Arc<Value>>,
    ) -> Arc<Value> {
        let (ns, name) = object_key(&obj);
        let obj = Arc::new(obj);
        self.objects
            .entry(key.clone())
            .or_default()
            .insert((ns.clone(), name), obj.clone());
        self.record(Event {
            rv,
            key: key.clone(),
            namespace: ns,
            etype,
            object: obj.clone(),
            old,
            line: Default::default(),
        });
        obj
    }

    /// Remove an object; `last` is its final state (resourceVersion = `rv`).
    pub fn remove(&mut self, key: &ResourceKey, last: Value, rv: u64) -> Arc<Value> {
        let (ns, name) = object_key(&last);
        let old = self
            .objects
            .get_mut(key)
            .and_then(|m| m.remove(&(ns.clone(), name)));
        let obj = Arc::new(last);
        self.record(Event {
            rv,
            key: key.clone(),
            namespace: ns,
            etype: EventType::Deleted,
            object: obj.clone(),
            old,
            line: Default::default(),
        });
        obj
    }

    /// Drop all objects of a type without events (a CRD going away after its objects were deleted).
    pub fn drop_type(&mut self, key: &ResourceKey) {
        self.objects.remove(key);
    }

    fn record(&mut self, event: Event) {
        let event = Arc::new(event);
        self.history.push_back(event.clone());
        while self.history.len() > self.history_cap {
            if let Some(e) = self.history.pop_front() {
                self.compacted_rv = e.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// Events after `rv` (exclusive) plus a receiver for later ones, taken atomically. `None` when `rv` is older
    /// than the kept history.
    pub fn watch_from(&self, rv: u64) -> Option<Replay> {
        if rv < self.compacted_rv {
            return None;
        }
        let start = self.history.partition_point(|e| e.rv <= rv);
        Some((
            self.history.range(start..).cloned().collect(),
            self.tx.subscribe(),
        ))
    }

    /// A receiver for events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Every object, for snapshots.
    pub fn dump(&self) -> Vec<(ResourceKey, Arc<Value>)> {
        let mut out = Vec::new();
        for (k, m) in &self.objects {
            for v in m.values() {
                out.push((k.clone(), v.clone()));
            }
        }
        out
    }

    /// Restore from a snapshot (no events).
    pub fn restore(&mut self, rv: u64, objects: Vec<(ResourceKey, Value)>) {
        self.rv = rv;
        self.compacted_rv = rv;
        for (k, v) in objects {
            let ok = object_key(&v);
            self.objects.entry(k).or_default().insert(ok, Arc::new(v));
        }
    }
}

/// (namespace, name) of an object.
pub fn object_key(obj: &Value) -> ObjectKey {
    let s = |p: &str| {
        obj.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (s("/metadata/namespace"), s("/metadata/name"))
}
