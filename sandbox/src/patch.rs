//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch for built-in kinds.

use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Most bytes the `copy` operations of one JSON patch may add (the API server's JSONPatchMaxCopyBytes).
pub const MAX_COPY_BYTES: usize = 3 << 20;

/// RFC 6902 JSON patch.
pub fn json_patch(target: &mut Value, patch: &Value) -> ApiResult<()> {
    let ops = patch
        .as_array()
        .ok_or_else(|| ApiError::bad_request("json patch must be a JSON array of operations"))?;
    // What `copy` operations add, summed up: the API server caps it (JSONPatchMaxCopyBytes), or a
    // few hundred bytes of doubling copies build an object of gigabytes before anything is stored.
    let mut copied = 0usize;
    for (i, op) in ops.iter().enumerate() {
        let get = |f: &str| op.get(f).and_then(Value::as_str);
        let kind = get("op")
            .ok_or_else(|| ApiError::bad_request(format!("json patch operation {i} has no \"op\"")))?;
        let path = get("path").ok_or_else(|| {
            ApiError::bad_request(format!("json patch operation {i} ({kind}) has no \"path\""))
        })?;
        let value = || {
            op.get("value").cloned().ok_or_else(|| {
                ApiError::bad_request(format!(
                    "json patch operation {i} ({kind} {path}) has no \"value\""
                ))
            })
        };
        let from = || {
            get("from").ok_or_else(|| {
                ApiError::bad_request(format!("json patch operation {i} ({kind}) has no \"from\""))
            })
        };
        match kind {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            "move" => {
                let v = remove(target, from()?)?;
                add(target, path, v)?;
            }
            "copy" => {
                let v = target
                    .pointer(from()?)
                    .ok_or_else(|| missing(from().unwrap_or_default()))?;
                copied += serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
                if copied > MAX_COPY_BYTES {
                    return Err(ApiError::unprocessable_patch(format!(
                        "the server rejected our request due to an error in our request: Unable to \
                         complete the copy, the accumulated size increase of copy is {copied}, exceeding \
                         the limit {MAX_COPY_BYTES}"
                    )));
                }
                let v = v.clone();
                add(target, path, v)?;
            }
            "test" => {
                // Like the API server's json-patch: a missing path tests equal to null (kube-rs's finalizer
                // helper relies on this).
                let want = value()?;
                let got = target.pointer(path).cloned().unwrap_or(Value::Null);
                if got != want {
                    return Err(ApiError::unprocessable_patch(format!(
                        "testing value {path} failed"
                    )));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "json patch operation {i} has unknown op {other:?}"
                )))
            }
        }
    }
    Ok(())
}

fn missing(path: &str) -> ApiError {
    ApiError::unprocessable_patch(format!("the server rejected our request due to an error in our request: jsonpatch: path {path} does not exist"))
}

fn unescape(s: &str) -> String {
    s.replace("~1", "/").replace("~0", "~")
}

fn split(path: &str) -> ApiResult<(String, String)> {
    if path.is_empty() {
        return Err(ApiError::bad_request(
            "json patch on the whole document (path \"\") is not supported",
        ));
    }
    let idx = path
        .rfind('/')
        .ok_or_else(|| ApiError::bad_request(format!("json patch path {path:?} must start with '/'")))?;
    Ok((path[..idx].to_string(), unescape(&path[idx + 1..])))
}

fn add(target: &mut Value, path: &str, v: Value) -> ApiResult<()> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => {
            m.insert(last, v);
            Ok(())
        }
        Some(Value::Array(a)) => {
            if last == "-" {
                a.push(v);
                return Ok(());
            }
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i > a.len() {
                return Err(missing(path));
            }
            a.insert(i, v);
            Ok(())
        }
        _ => Err(missing(path)),
    }
}

fn remove(target: &mut Value, path: &str) -> ApiResult<Value> {
    let (parent, last) = split(path)?;
    match target.pointer_mut(&parent) {
        Some(Value::Object(m)) => m.remove(&last).ok_or_else(|| missing(path)),
        Some(Value::Array(a)) => {
            let i: usize = last.parse().map_err(|_| missing(path))?;
            if i >= a.len() {
                return Err(missing(path));
            }
            Ok(a.remove(i))
        }
        _ => Err(missing(path)),
    }
}

/// Merge keys of lists in the built-in kinds (`patchMergeKey` in their Go types).
pub fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "ownerReferences" => Some("uid"),
        "conditions" => Some("type"),
        "containers" | "initContainers" | "ephemeralContainers" | "env" | "volumes" | "imagePullSecrets" => {
            Some("name")
        }
        "volumeMounts" => Some("mountPath"),
        "volumeDevices" => Some("devicePath"),
        "hostAliases" => Some("ip"),
        "topologySpreadConstraints" => Some("topologyKey"),
        // Container ports merge on containerPort, Service ports on port.
        "ports" if items.iter().any(|i| i.get("containerPort").is_some()) => Some("containerPort"),
        "ports" => Some("port"),
        _ => None,
    }
}

/// Strategic merge patch for the built-in kinds: merge patch plus merge-keyed lists, `$patch: replace|delete`,
/// `$retainKeys`, `$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>` (order is ignored).
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = p.clone();
        clean.remove("$patch");
        *target = Value::Object(clean);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        t.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in p {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Some(del)) = (t.get_mut(field), v.as_array()) {
                list.retain(|x| !del.contains(x));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let items = v.as_array().map(Vec::as_slice).unwrap_or_default();
        if k == "finalizers" {
            // patchStrategy merge on a list of strings: union.
            if let (Some(Value::Array(list)), Some(add)) = (t.get_mut(k), v.as_array()) {
                for f in add {
                    if !list.contains(f) {
                        list.push(f.clone());
                    }
                }
                continue;
            }
        }
        match (merge_key(k, items), v) {
            (Some(key), Value::Array(items)) => {
                let entry = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !entry.is_array() {
                    *entry = Value::Array(vec![]);
                }
                if let Value::Array(list) = entry {
                    for item in items {
                        let id = item.get(key).cloned();
                        let pos = list
                            .iter()
                            .position(|x| id.is_some() && x.get(key) == id.as_ref());
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(i), true) => {
                                list.remove(i);
                            }
                            (Some(i), false) => strategic_merge_patch(&mut list[i], item),
                            (None, true) => {}
                            (None, false) => list.push(item.clone()),
                        }
                    }
                }
            }
            (None, Value::Object(_)) => strategic_merge_patch(t.entry(k.clone()).or_insert(Value::Null), v),
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_deletes_with_null() {
        let mut t = json!({"a": {"b": 1, "c": 2}, "d": [1]});
        merge_patch(&mut t, &json!({"a": {"b": null, "e": 3}, "d": [2]}));
        assert_eq!(t, json!({"a": {"c": 2, "e": 3}, "d": [2]}));
    }

    #[test]
    fn json_patch_ops_and_errors() {
        let mut t = json!({"spec": {"list": [1, 2]}});
        let ops = json!([{"op": "add", "path": "/spec/list/-", "value": 3}, {"op": "replace", "path": "/spec/list/0", "value": 0},
            {"op": "test", "path": "/spec/list/2", "value": 3}, {"op": "move", "from": "/spec/list", "path": "/spec/moved"}]);
        assert!(json_patch(&mut t, &ops).is_ok());
        assert_eq!(t, json!({"spec": {"moved": [0, 2, 3]}}));
        let err = json_patch(&mut t, &json!([{"op": "remove", "path": "/spec/nope"}]))
            .err()
            .map(|e| (e.code, e.message));
        assert_eq!(err.map(|e| e.0), Some(422));
    }

    #[test]
    fn strategic_merge_containers_by_name() {
        let mut t = json!({"spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "s:1"}]}}}});
        strategic_merge_patch(
            &mut t,
            &json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "app"}, {"name": "side"}], "containers": [{"name": "app", "image": "a:2"}]}}}}),
        );
        assert_eq!(
            t["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:2", "ports": [{"containerPort": 80}]}, {"name": "side", "image": "s:1"}])
        );
    }

    #[test]
    fn strategic_merge_keyed_lists() {
        let mut t = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "2", "name": "b"}]}, "data": {"x": "1"}});
        strategic_merge_patch(
            &mut t,
            &json!({"metadata": {"ownerReferences": [{"uid": "2", "$patch": "delete"}, {"uid": "3", "name": "c"}]}, "data": {"$patch": "replace", "y": "2"}}),
        );
        assert_eq!(
            t,
            json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}, {"uid": "3", "name": "c"}]}, "data": {"y": "2"}})
        );
    }
}
