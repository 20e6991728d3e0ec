//! Status writes: one merge patch per reconcile that turns the saved status into the new one.
//!
//! The status types leave empty fields out when serialised (`skip_serializing_if`), and a JSON merge
//! patch (RFC 7386) leaves absent fields as they are. Patching the new status as it serialises would
//! therefore never clear a field that became empty: a `lastLoadError` after a recovery, an empty
//! `summary`, a `pluginDigest` after a switch to `noProvider`. [`merge_patch`] writes `null` for each
//! of those, so the stored status is exactly the new one.

use kube::api::Patch;
use serde::Serialize;
use serde_json::{Map, Value};

/// The merge patch `{"status": ...}` that turns `old` into `new`; `None` when they are equal.
pub fn merge_patch<S: Serialize + PartialEq>(old: Option<&S>, new: &S) -> Option<Patch<Value>> {
    if old == Some(new) {
        return None;
    }
    let new = serde_json::to_value(new).unwrap_or(Value::Null);
    let old = old
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(Value::Null);
    Some(Patch::Merge(serde_json::json!({ "status": diff(&old, &new) })))
}

/// The RFC 7386 merge patch from `old` to `new`: changed members as their new value (objects
/// recursively), removed members as `null`. Arrays and scalars are replaced whole.
fn diff(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(old), Value::Object(new)) => {
            let mut patch = Map::new();
            for (key, value) in new {
                match old.get(key) {
                    Some(before) if before == value => {}
                    Some(before) => {
                        patch.insert(key.clone(), diff(before, value));
                    }
                    None => {
                        patch.insert(key.clone(), value.clone());
                    }
                }
            }
            for key in old.keys().filter(|k| !new.contains_key(*k)) {
                patch.insert(key.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Applies a merge patch as the API server does (RFC 7386).
    fn apply(target: &Value, patch: &Value) -> Value {
        match (target, patch) {
            (Value::Object(target), Value::Object(patch)) => {
                let mut out = target.clone();
                for (key, value) in patch {
                    if value.is_null() {
                        out.remove(key);
                    } else {
                        let merged = apply(out.get(key).unwrap_or(&Value::Null), value);
                        out.insert(key.clone(), merged);
                    }
                }
                Value::Object(out)
            }
            (_, Value::Object(_)) => apply(&json!({}), patch),
            _ => patch.clone(),
        }
    }

    #[test]
    fn the_patch_turns_the_old_status_into_exactly_the_new_one() {
        let cases = [
            // A field that became empty (and is left out when serialised) is removed.
            (
                json!({"summary": [{"name": "v1"}], "usableVersions": "v1", "ready": true}),
                json!({"ready": false}),
            ),
            // Nested objects change member by member; arrays are replaced whole.
            (
                json!({"capabilities": {"requested": ["http"], "notGranted": ["http"]}, "conditions": [1, 2]}),
                json!({"capabilities": {"requested": ["http"]}, "conditions": [2]}),
            ),
            // From nothing saved yet.
            (Value::Null, json!({"lastLoadError": "bad", "ready": false})),
            // A scalar replaced by an object and back.
            (json!({"a": 1}), json!({"a": {"b": 2}})),
            (json!({"a": {"b": 2}}), json!({"a": 1})),
        ];
        for (old, new) in cases {
            let Some(Patch::Merge(patch)) = merge_patch(Some(&old), &new) else {
                panic!("{old} -> {new}: no merge patch");
            };
            let stored = apply(&json!({"status": old}), &patch);
            assert_eq!(stored["status"], new, "{old} -> {new} with {patch}");
        }
    }

    #[test]
    fn an_unchanged_status_is_not_written() {
        let status = json!({"ready": true});
        assert!(merge_patch(Some(&status), &status).is_none());
        assert!(merge_patch(None, &status).is_some());
    }
}
