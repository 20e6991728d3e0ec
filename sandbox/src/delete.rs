//! DELETE: preconditions, finalizers and deletionTimestamp, propagation (Background, Foreground, Orphan),
//! deletecollection and dry run. The garbage collector finishes what these start.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::{after_remove, view, Inner, ListOptions, Target, Written, FOREGROUND};
use crate::error::{ApiError, ApiResult};
use crate::meta::{self, deleting, finalizers, meta_mut, meta_str, now, set_finalizers};
use crate::resource::{Builtin, ResourceType};
use crate::store::{EventType, Store};

/// DeleteOptions of a request.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Background (default), Foreground or Orphan.
    pub propagation: String,
    /// preconditions.uid.
    pub uid: Option<String>,
    /// preconditions.resourceVersion.
    pub rv: Option<String>,
    /// dryRun.
    pub dry_run: bool,
}

impl DeleteOptions {
    /// From the query and an optional `DeleteOptions` body.
    pub fn from_request(
        body: Option<&Value>,
        query_policy: Option<&str>,
        query_orphan: Option<&str>,
        dry_run: bool,
    ) -> ApiResult<Self> {
        let mut o = DeleteOptions {
            dry_run,
            ..Default::default()
        };
        if let Some(b) = body {
            o.propagation = b
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if b.get("orphanDependents").and_then(Value::as_bool) == Some(true) {
                o.propagation = "Orphan".into();
            }
            o.uid = b
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_string);
            o.rv = b
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
            if b.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
            {
                o.dry_run = true;
            }
        }
        if let Some(p) = query_policy {
            o.propagation = p.to_string();
        }
        if query_orphan == Some("true") {
            o.propagation = "Orphan".into();
        }
        if !matches!(
            o.propagation.as_str(),
            "" | "Background" | "Foreground" | "Orphan"
        ) {
            return Err(ApiError::bad_request(format!("DeleteOptions.propagationPolicy: Unsupported value: {:?}: supported values: \"Foreground\", \"Background\", \"Orphan\"", o.propagation)));
        }
        Ok(o)
    }
}

/// DELETE one object. Returns the object (with deletionTimestamp when finalizers hold it).
pub fn delete(inner: &Inner, t: &Target, opts: &DeleteOptions) -> ApiResult<Written> {
    let mut store = inner.lock();
    let Some(old) = store.get(&t.key(), &t.namespace, &t.name) else {
        return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name));
    };
    if let Some(uid) = &opts.uid {
        if uid != meta_str(&old, "uid") {
            return Err(ApiError::conflict_message(
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&old, "uid")
                ),
                json!({"name": t.name, "group": t.rt.group, "kind": t.rt.plural}),
            ));
        }
    }
    if let Some(rv) = &opts.rv {
        if rv != meta_str(&old, "resourceVersion") {
            return Err(ApiError::conflict_message(format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", meta_str(&old, "resourceVersion")), json!({"name": t.name, "group": t.rt.group, "kind": t.rt.plural})));
        }
    }
    crate::admission::delete(&store, t, &view(&t.rt, &t.version, &old), opts.dry_run)?;
    let out = delete_locked(&mut store, &t.rt, &old, &opts.propagation, opts.dry_run);
    drop(store);
    if !opts.dry_run {
        inner.gc.notify_one();
        inner.changed.notify_one();
    }
    // Built-in kinds answer an immediate deletion with a success Status; custom resources (and objects that
    // stay because of finalizers) answer with the object, as the real registries do.
    let gone = !deleting(&out);
    if gone
        && matches!(
            t.rt.builtin,
            Some(Builtin::ConfigMap | Builtin::Secret | Builtin::Event | Builtin::Lease | Builtin::Generic)
        )
    {
        let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
            "details": {"name": t.name, "group": t.rt.group, "kind": t.rt.plural, "uid": meta_str(&out, "uid")}});
        return Ok(Written {
            code: 200,
            body,
            warnings: vec![],
        });
    }
    Ok(Written {
        code: 200,
        body: view(&t.rt, &t.version, &out),
        warnings: vec![],
    })
}

/// Delete with the store locked (also used by the garbage collector). Returns the resulting object state.
pub fn delete_locked(
    store: &mut Store,
    rt: &ResourceType,
    old: &Arc<Value>,
    propagation: &str,
    dry_run: bool,
) -> Value {
    let key = (rt.storage_group.clone(), rt.plural.clone());
    let mut obj = (**old).clone();
    let mut fins = finalizers(&obj);
    let propagation = if propagation.is_empty() {
        "Background"
    } else {
        propagation
    };
    if propagation == "Orphan" && !dry_run {
        orphan_dependents(store, meta_str(old, "uid"));
    }
    if propagation == "Foreground" && !fins.iter().any(|f| f == FOREGROUND) {
        fins.push(FOREGROUND.into());
    }
    let namespace_pending = rt.builtin == Some(Builtin::Namespace);
    if fins.is_empty() && !namespace_pending {
        if dry_run {
            return obj;
        }
        let rv = store.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = store.remove(&key, obj, rv);
        after_remove(store, rt, &last);
        return (*last).clone();
    }
    if deleting(&obj) && finalizers(&obj) == fins {
        return obj;
    }
    set_finalizers(&mut obj, &fins);
    if !deleting(&obj) {
        let m = meta_mut(&mut obj);
        m.insert("deletionTimestamp".into(), json!(now()));
        m.insert("deletionGracePeriodSeconds".into(), json!(0));
        if let Some(g) = m.get("generation").and_then(Value::as_i64) {
            m.insert("generation".into(), json!(g + 1));
        }
        if namespace_pending {
            obj["status"] = json!({"phase": "Terminating"});
        }
    }
    if dry_run {
        return obj;
    }
    let rv = store.next_rv();
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
    (*store.put(&key, obj, rv, EventType::Modified, Some(old.clone()))).clone()
}

/// Remove ownerReferences to `uid` from every object.
fn orphan_dependents(store: &mut Store, uid: &str) {
    for key in store.keys() {
        for obj in store.list(&key, None) {
            if !meta::owner_uids(&obj).iter().any(|u| u == uid) {
                continue;
            }
            let mut new = (*obj).clone();
            if let Some(Value::Array(refs)) = new.pointer_mut("/metadata/ownerReferences") {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(uid));
                if refs.is_empty() {
                    meta_mut(&mut new).remove("ownerReferences");
                }
            }
            let rv = store.next_rv();
            meta_mut(&mut new).insert("resourceVersion".into(), json!(rv.to_string()));
            store.put(&key, new, rv, EventType::Modified, Some(obj.clone()));
        }
    }
}

/// DELETE on a collection (with selectors).
pub fn delete_collection(
    inner: &Inner,
    t: &Target,
    list_opts: &ListOptions,
    opts: &DeleteOptions,
) -> ApiResult<Value> {
    let mut store = inner.lock();
    let ns = if t.rt.namespaced && !t.namespace.is_empty() {
        Some(t.namespace.as_str())
    } else {
        None
    };
    let mut selected = Vec::new();
    for obj in store.list(&t.key(), ns) {
        let shown = view(&t.rt, &t.version, &obj);
        if !list_opts.labels.matches(&shown) || !list_opts.fields.matches(&shown) {
            continue;
        }
        // Every object is admitted before any goes, so a pass that waits for webhooks deletes nothing.
        crate::admission::delete(&store, t, &shown, opts.dry_run)?;
        selected.push(obj);
    }
    let mut items = Vec::new();
    for obj in selected {
        let out = delete_locked(&mut store, &t.rt, &obj, &opts.propagation, opts.dry_run);
        items.push(view(&t.rt, &t.version, &out));
    }
    let rv = store.current_rv();
    drop(store);
    inner.gc.notify_one();
    inner.changed.notify_one();
    Ok(
        json!({"kind": t.rt.list_kind, "apiVersion": t.rt.api_version(&t.version), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    )
}
