//! Field ownership (`metadata.managedFields`, FieldsV1) and server-side apply: who owns which field, conflicts,
//! forced takeover, and removal of fields a manager stopped applying.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// One path element in FieldsV1 notation: `f:name`, `k:{"name":"x"}`, `v:"x"`, or `.` (the list item itself).
pub type Path = Vec<String>;
/// A set of owned paths (leaves).
pub type FieldSet = BTreeSet<Path>;

/// How a list merges.
enum ListKind {
    Atomic,
    Map(Vec<String>),
    Set,
}

fn child_schema<'a>(schema: Option<&'a Value>, field: &str) -> Option<&'a Value> {
    let s = schema?;
    s.get("properties")
        .and_then(|p| p.get(field))
        .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
}

fn list_kind(schema: Option<&Value>, field: &str, items: &[Value]) -> ListKind {
    if let Some(s) = schema {
        match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("map") => {
                let keys = s
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                    .unwrap_or_default();
                return ListKind::Map(keys);
            }
            Some("set") => return ListKind::Set,
            // A schema without list-type means atomic, as for the real server.
            _ => return ListKind::Atomic,
        }
    }
    // Built-in kinds have no schema here: use their Go types' list-map keys.
    match field {
        "finalizers" => ListKind::Set,
        _ => match crate::patch::merge_key(field, items) {
            Some(key) => ListKind::Map(vec![key.to_string()]),
            None => ListKind::Atomic,
        },
    }
}

fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        m.insert(k.clone(), item.get(k)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

/// The fields a (partial) object sets. `skip_status`: drop `.status` (it belongs to the status subresource).
pub fn fields_of(obj: &Value, schema: Option<&Value>, skip_status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Value::Object(m) = obj else { return out };
    for (k, v) in m {
        if k == "apiVersion" || k == "kind" || (skip_status && k == "status") {
            continue;
        }
        let path = vec![format!("f:{k}")];
        if k == "metadata" {
            if let Value::Object(meta) = v {
                for (mk, mv) in meta {
                    if matches!(
                        mk.as_str(),
                        "name"
                            | "namespace"
                            | "uid"
                            | "resourceVersion"
                            | "creationTimestamp"
                            | "generation"
                            | "managedFields"
                            | "deletionTimestamp"
                            | "deletionGracePeriodSeconds"
                            | "selfLink"
                            | "generateName"
                    ) {
                        continue;
                    }
                    walk(mv, None, mk, vec![path[0].clone(), format!("f:{mk}")], &mut out);
                }
            }
            continue;
        }
        walk(v, child_schema(schema, k), k, path, &mut out);
    }
    out
}

fn walk(v: &Value, schema: Option<&Value>, field: &str, path: Path, out: &mut FieldSet) {
    match v {
        Value::Object(m)
            if !m.is_empty()
                && schema
                    .and_then(|s| s.get("x-kubernetes-map-type"))
                    .and_then(Value::as_str)
                    != Some("atomic") =>
        {
            for (k, c) in m {
                let mut p = path.clone();
                p.push(format!("f:{k}"));
                walk(c, child_schema(schema, k), k, p, out);
            }
        }
        Value::Array(items) if !items.is_empty() => match list_kind(schema, field, items) {
            ListKind::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for item in items {
                    let Some(key) = item_key(item, &keys) else {
                        out.insert(path.clone());
                        return;
                    };
                    let mut p = path.clone();
                    p.push(key);
                    let mut dot = p.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Value::Object(fields) = item {
                        for (k, c) in fields {
                            let mut cp = p.clone();
                            cp.push(format!("f:{k}"));
                            walk(c, child_schema(item_schema, k), k, cp, out);
                        }
                    }
                }
            }
            ListKind::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListKind::Atomic => {
                out.insert(path);
            }
        },
        _ => {
            out.insert(path);
        }
    }
}

/// FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for (i, seg) in path.iter().enumerate() {
            let entry = cur.entry(seg.clone()).or_insert_with(|| json!({}));
            if i + 1 == path.len() {
                break;
            }
            let Value::Object(next) = entry else { break };
            cur = next;
        }
    }
    Value::Object(root)
}

/// Parse FieldsV1 JSON back into a set of leaf paths.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn rec(v: &Value, path: &mut Path, out: &mut FieldSet) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, c) in m {
                    path.push(k.clone());
                    rec(c, path, out);
                    path.pop();
                }
            }
            _ => {
                if !path.is_empty() {
                    out.insert(path.clone());
                }
            }
        }
    }
    let mut out = FieldSet::new();
    rec(v, &mut Vec::new(), &mut out);
    out
}

/// The value at a FieldsV1 path, if present.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        if seg == "." {
            return Some(cur);
        }
        if let Some(f) = seg.strip_prefix("f:") {
            cur = cur.get(f)?;
        } else if let Some(k) = seg.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).ok()?;
            cur = cur
                .as_array()?
                .iter()
                .find(|item| keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))?;
        } else if let Some(v) = seg.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|x| **x == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field at a path (and a list item for `k:`/`v:` paths). Empty parent maps are left alone.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    if last == "." {
        // The item itself: remove it from its list.
        remove_at(obj, parent);
        return;
    }
    let mut cur = obj;
    for seg in parent {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else if let Some(k) = seg.strip_prefix("k:") {
            let Ok(keys) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            cur.as_array_mut().and_then(|a| {
                a.iter_mut()
                    .find(|item| keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)))
            })
        } else {
            None
        };
        let Some(n) = next else { return };
        cur = n;
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:") {
        if let (Ok(keys), Some(a)) = (serde_json::from_str::<Map<String, Value>>(k), cur.as_array_mut()) {
            a.retain(|item| !keys.iter().all(|(kk, kv)| item.get(kk) == Some(kv)));
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(want), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            a.retain(|x| *x != want);
        }
    }
}

/// Merge an applied configuration into a live object: maps recursively, keyed lists by key, sets by value,
/// everything else replaced.
pub fn merge_applied(live: &mut Value, applied: &Value, schema: Option<&Value>, field: &str) {
    match (live, applied) {
        (Value::Object(l), Value::Object(a))
            if schema
                .and_then(|s| s.get("x-kubernetes-map-type"))
                .and_then(Value::as_str)
                != Some("atomic") =>
        {
            for (k, v) in a {
                if field.is_empty() && (k == "apiVersion" || k == "kind") {
                    l.insert(k.clone(), v.clone());
                    continue;
                }
                match l.get_mut(k) {
                    Some(existing) => merge_applied(existing, v, child_schema(schema, k), k),
                    None => {
                        l.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (Value::Array(l), Value::Array(a)) => match list_kind(schema, field, a) {
            ListKind::Map(keys) => {
                let item_schema = schema.and_then(|s| s.get("items"));
                for item in a {
                    let key = item_key(item, &keys);
                    match l.iter_mut().find(|x| key.is_some() && item_key(x, &keys) == key) {
                        Some(existing) => merge_applied(existing, item, item_schema, ""),
                        None => l.push(item.clone()),
                    }
                }
            }
            ListKind::Set => {
                for item in a {
                    if !l.contains(item) {
                        l.push(item.clone());
                    }
                }
            }
            ListKind::Atomic => *l = a.clone(),
        },
        (l, a) => *l = a.clone(),
    }
}

/// A managedFields entry.
#[derive(Debug, Clone)]
pub struct Manager {
    /// Manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// `group/version` the fields were written in.
    pub api_version: String,
    /// "" or `status`.
    pub subresource: String,
    /// Time of the last change.
    pub time: String,
    /// Owned fields.
    pub fields: FieldSet,
}

/// Read `metadata.managedFields`.
pub fn managers(obj: &Value) -> Vec<Manager> {
    let Some(list) = obj.pointer("/metadata/managedFields").and_then(Value::as_array) else {
        return vec![];
    };
    list.iter()
        .map(|e| {
            let s = |f: &str| e.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
            Manager {
                manager: s("manager"),
                operation: s("operation"),
                api_version: s("apiVersion"),
                subresource: s("subresource"),
                time: s("time"),
                fields: e.get("fieldsV1").map(from_fields_v1).unwrap_or_default(),
            }
        })
        .collect()
}

/// Write `metadata.managedFields` (entries without fields are dropped).
pub fn set_managers(obj: &mut Value, list: &[Manager]) {
    let entries: Vec<Value> = list
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({"manager": m.manager, "operation": m.operation, "apiVersion": m.api_version, "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&m.fields)});
            if !m.subresource.is_empty() {
                e["subresource"] = json!(m.subresource);
            }
            e
        })
        .collect();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        if entries.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(entries));
        }
    }
}

/// Who writes, through which endpoint, and how the kind's lists merge.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    /// The version's schema (list types, atomic maps), if any.
    pub schema: Option<&'a Value>,
    /// Field manager.
    pub manager: &'a str,
    /// `group/version` of the request.
    pub api_version: &'a str,
    /// "" or `status`.
    pub subresource: &'a str,
    /// Time stamp for changed entries.
    pub now: &'a str,
    /// Leave `.status` out (it belongs to the status subresource).
    pub skip_status: bool,
}

/// Record an update (PUT, PATCH, CREATE) by `w.manager`: fields it changed move to it.
pub fn record_update(old: Option<&Value>, new: &mut Value, w: &Writer<'_>) {
    let Writer {
        schema,
        manager,
        api_version,
        subresource,
        now,
        skip_status,
    } = *w;
    let mut list = old.map(managers).unwrap_or_default();
    let new_fields = fields_of(new, schema, skip_status);
    let old_fields = old.map(|o| fields_of(o, schema, skip_status)).unwrap_or_default();
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let removed: FieldSet = old_fields.difference(&new_fields).cloned().collect();
    for m in &mut list {
        m.fields.retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    if !changed.is_empty() {
        match list
            .iter_mut()
            .find(|m| m.manager == manager && m.operation == "Update" && m.subresource == subresource)
        {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now.to_string();
                m.api_version = api_version.to_string();
            }
            None => list.push(Manager {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource.into(),
                time: now.into(),
                fields: changed,
            }),
        }
    }
    set_managers(new, &list);
}

fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let keys: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let inner: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// Server-side apply of `applied` by `manager` onto `live` (None: the object does not exist yet).
/// Returns the new object with managedFields updated, or a 409 listing the conflicts.
pub fn apply(live: Option<&Value>, applied: &Value, w: &Writer<'_>, force: bool) -> ApiResult<Value> {
    let Writer {
        schema,
        manager,
        api_version,
        subresource,
        now,
        skip_status,
    } = *w;
    let mut list = live.map(managers).unwrap_or_default();
    let applied_fields = fields_of(applied, schema, skip_status);
    let base = live.cloned().unwrap_or_else(|| json!({}));
    // Conflicts: fields another manager owns with a different value.
    let mut conflicts: Vec<(String, String, String)> = Vec::new();
    for m in &list {
        if m.manager == manager && m.operation == "Apply" || m.subresource != subresource {
            continue;
        }
        for p in applied_fields.intersection(&m.fields) {
            if p.last().map(String::as_str) == Some(".") {
                continue;
            }
            if value_at(&base, p) != value_at(applied, p) {
                conflicts.push((m.manager.clone(), m.api_version.clone(), display_path(p)));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        let n = conflicts.len();
        let message = if n == 1 {
            format!(
                "Apply failed with 1 conflict: conflict with \"{}\" using {}: {}",
                conflicts[0].0, conflicts[0].1, conflicts[0].2
            )
        } else {
            let lines: Vec<String> = conflicts
                .iter()
                .map(|(m, v, p)| format!("conflict with \"{m}\" using {v}: {p}"))
                .collect();
            format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
        };
        let causes: Vec<Value> = conflicts.iter().map(|(m, v, p)| json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": p})).collect();
        return Err(ApiError::conflict_message(message, json!({"causes": causes})));
    }
    // Fields this manager applied before and dropped now: removed unless someone else owns them.
    let previous = list
        .iter()
        .find(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
        .map(|m| m.fields.clone())
        .unwrap_or_default();
    let mut obj = base.clone();
    for p in previous.difference(&applied_fields) {
        let shared = list.iter().any(|m| {
            !(m.manager == manager && m.operation == "Apply")
                && m.subresource == subresource
                && m.fields.contains(p)
        });
        if !shared {
            remove_at(&mut obj, p);
        }
    }
    merge_applied(&mut obj, applied, schema, "");
    // Ownership: forced conflicts move to this manager; equal values are shared.
    if force {
        for m in &mut list {
            if m.manager == manager && m.operation == "Apply" {
                continue;
            }
            m.fields
                .retain(|p| !(applied_fields.contains(p) && value_at(&base, p) != value_at(applied, p)));
        }
    }
    match list
        .iter_mut()
        .find(|m| m.manager == manager && m.operation == "Apply" && m.subresource == subresource)
    {
        Some(m) => {
            if m.fields != applied_fields {
                m.time = now.to_string();
            }
            m.fields = applied_fields;
            m.api_version = api_version.to_string();
        }
        None => list.push(Manager {
            manager: manager.into(),
            operation: "Apply".into(),
            api_version: api_version.into(),
            subresource: subresource.into(),
            time: now.into(),
            fields: applied_fields,
        }),
    }
    set_managers(&mut obj, &list);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn w<'a>(manager: &'a str, schema: Option<&'a Value>) -> Writer<'a> {
        Writer {
            schema,
            manager,
            api_version: "v1",
            subresource: "",
            now: NOW,
            skip_status: false,
        }
    }

    #[test]
    fn apply_then_drop_field_removes_it() {
        let first = apply(None, &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1", "y": "2"}}), &w("mgr", None), false).expect("succeeds");
        assert_eq!(first["data"], json!({"x": "1", "y": "2"}));
        let second = apply(
            Some(&first),
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}}),
            &w("mgr", None),
            false,
        )
        .expect("succeeds");
        assert_eq!(second["data"], json!({"x": "1"}));
    }

    #[test]
    fn conflict_then_force() {
        let mut live =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}});
        record_update(None, &mut live, &w("kubectl-edit", None));
        let applied =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "2"}});
        let err = apply(Some(&live), &applied, &w("ssa", None), false)
            .err()
            .map(|e| e.message)
            .expect("succeeds");
        assert_eq!(
            err,
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.x"
        );
        let forced = apply(Some(&live), &applied, &w("ssa", None), true).expect("succeeds");
        assert_eq!(forced["data"]["x"], "2");
        let owners: Vec<String> = managers(&forced).into_iter().map(|m| m.manager).collect();
        assert_eq!(owners, ["ssa"]);
    }

    #[test]
    fn builtin_containers_are_a_map_keyed_by_name() {
        let app = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "a:1"}]}}}});
        let first = apply(None, &app, &w("app-manager", None), false).expect("succeeds");
        let side = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "s:1"}]}}}});
        let both = apply(Some(&first), &side, &w("injector", None), false).expect("succeeds");
        assert_eq!(
            both["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "a:1"}, {"name": "sidecar", "image": "s:1"}])
        );
    }

    #[test]
    fn keyed_lists_merge_by_key() {
        let schema = json!({"properties": {"spec": {"properties": {"items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"], "items": {"type": "object"}}}}}});
        let a = apply(
            None,
            &json!({"spec": {"items": [{"name": "a", "v": 1}]}}),
            &w("one", Some(&schema)),
            false,
        )
        .expect("succeeds");
        let b = apply(
            Some(&a),
            &json!({"spec": {"items": [{"name": "b", "v": 2}]}}),
            &w("two", Some(&schema)),
            false,
        )
        .expect("succeeds");
        assert_eq!(
            b["spec"]["items"],
            json!([{"name": "a", "v": 1}, {"name": "b", "v": 2}])
        );
        let fields = to_fields_v1(&fields_of(&b, Some(&schema), false));
        assert!(
            fields.pointer("/f:spec/f:items/k:{\"name\":\"a\"}/.").is_some(),
            "{fields}"
        );
    }
}
