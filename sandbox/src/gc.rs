//! The cluster's background controllers: ownerReference garbage collection (background and foreground),
//! namespace deletion, and CRD cleanup (objects of a deleted CRD go before the CRD).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::{Inner, CRD_CLEANUP, FOREGROUND};
use crate::delete::delete_locked;
use crate::meta::{deleting, finalizers, meta_mut, meta_str, owner_uids, set_finalizers};
use crate::resource::Builtin;
use crate::store::{EventType, Store};

/// Run the collector until the cluster is dropped.
pub async fn run(inner: std::sync::Weak<Inner>, wake: Arc<tokio::sync::Notify>) {
    loop {
        // Hold no strong reference while idle, so dropping the Cluster ends this task.
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
        }
        let Some(strong) = inner.upgrade() else { return };
        let changed = {
            let mut store = strong.lock();
            collect(&mut store)
        };
        if changed {
            strong.changed.notify_one();
        }
    }
}

/// One collection pass, repeated until nothing changes. Returns whether anything changed.
pub fn collect(store: &mut Store) -> bool {
    let mut any = false;
    for _ in 0..100 {
        if !pass(store) {
            break;
        }
        any = true;
    }
    any
}

fn pass(store: &mut Store) -> bool {
    let mut changed = false;
    // uid -> (object, is being deleted in the foreground)
    let mut owners: HashMap<String, bool> = HashMap::new();
    let mut all: Vec<((String, String), Arc<Value>)> = Vec::new();
    for key in store.keys() {
        for obj in store.list(&key, None) {
            let fg = deleting(&obj) && finalizers(&obj).iter().any(|f| f == FOREGROUND);
            owners.insert(meta_str(&obj, "uid").to_string(), fg);
            all.push((key.clone(), obj));
        }
    }
    let mut has_dependents: HashMap<String, bool> = HashMap::new();
    for (key, obj) in &all {
        let uids = owner_uids(obj);
        if uids.is_empty() {
            continue;
        }
        // Only dependents with blockOwnerDeletion hold an owner in foreground deletion.
        for r in obj
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true) {
                if let Some(u) = r.get("uid").and_then(Value::as_str) {
                    has_dependents.insert(u.to_string(), true);
                }
            }
        }
        let all_gone = uids.iter().all(|u| !owners.contains_key(u));
        let owner_foreground = uids.iter().any(|u| owners.get(u) == Some(&true));
        if (all_gone || owner_foreground) && !deleting(obj) {
            let Some(rt) = store.registry.by_plural(&key.0, &key.1) else {
                continue;
            };
            delete_locked(store, &rt, obj, "Background", false);
            changed = true;
        }
    }
    for (key, obj) in &all {
        if !deleting(obj) {
            continue;
        }
        let Some(rt) = store.registry.by_plural(&key.0, &key.1) else {
            continue;
        };
        let uid = meta_str(obj, "uid").to_string();
        let mut fins = finalizers(obj);
        // Foreground: the owner goes once its dependents are gone.
        if fins.iter().any(|f| f == FOREGROUND) && !has_dependents.get(&uid).copied().unwrap_or(false) {
            fins.retain(|f| f != FOREGROUND);
            changed |= finalize(store, key, obj, &fins);
            continue;
        }
        match rt.builtin {
            Some(Builtin::Namespace) => {
                let ns = meta_str(obj, "name").to_string();
                let mut remaining = 0;
                for k in store.keys() {
                    let Some(t) = store.registry.by_plural(&k.0, &k.1) else {
                        continue;
                    };
                    if !t.namespaced {
                        continue;
                    }
                    for o in store.list(&k, Some(&ns)) {
                        remaining += 1;
                        if !deleting(&o) {
                            delete_locked(store, &t, &o, "Background", false);
                            changed = true;
                        }
                    }
                }
                if remaining == 0 {
                    let mut new = (**obj).clone();
                    new["spec"] = json!({});
                    changed |= finalize(store, key, &Arc::new(new), &fins);
                }
            }
            Some(Builtin::Crd) if fins.iter().any(|f| f == CRD_CLEANUP) => {
                let group = obj
                    .pointer("/spec/group")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let plural = obj
                    .pointer("/spec/names/plural")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let ckey = (group.clone(), plural.clone());
                let mut remaining = 0;
                if let Some(t) = store.registry.by_plural(&group, &plural) {
                    for o in store.list(&ckey, None) {
                        remaining += 1;
                        if !deleting(&o) {
                            delete_locked(store, &t, &o, "Background", false);
                            changed = true;
                        }
                    }
                }
                if remaining == 0 {
                    fins.retain(|f| f != CRD_CLEANUP);
                    changed |= finalize(store, key, obj, &fins);
                }
            }
            _ => {}
        }
    }
    changed
}

/// Store new finalizers of an object being deleted; remove it when none are left.
fn finalize(store: &mut Store, key: &(String, String), obj: &Arc<Value>, fins: &[String]) -> bool {
    let Some(current) = store.get(key, meta_str(obj, "namespace"), meta_str(obj, "name")) else {
        return false;
    };
    let mut new = (**obj).clone();
    set_finalizers(&mut new, fins);
    let rv = store.next_rv();
    meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
    let ns_pending = new
        .pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    if fins.is_empty() && !ns_pending {
        let last = store.remove(key, new, rv);
        if key.0 == "apiextensions.k8s.io" {
            let group = last
                .pointer("/spec/group")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let plural = last
                .pointer("/spec/names/plural")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            store.registry.remove(&group, &plural);
            store.drop_type(&(group, plural));
        }
    } else {
        store.put(key, new, rv, EventType::Modified, Some(current));
    }
    true
}
