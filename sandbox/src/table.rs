//! `meta.k8s.io/v1` Table responses (what `kubectl get` prints): CRD printer columns evaluated with a JSONPath
//! subset, and the columns of the built-in kinds.

use serde_json::{json, Value};

use crate::meta::human_age;
use crate::resource::{Builtin, ResourceType};

/// Evaluate a printer-column JSONPath (`.spec.x`, `.items[0].y`, `.list[*].name`, `.conditions[?(@.type=="Ready")].status`).
pub fn jsonpath(obj: &Value, path: &str) -> Vec<Value> {
    let path = path
        .trim()
        .trim_start_matches('{')
        .trim_end_matches('}')
        .trim_start_matches('$');
    let mut cur = vec![obj.clone()];
    let mut rest = path;
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('.') {
            let end = r.find(['.', '[']).unwrap_or(r.len());
            let field = &r[..end];
            rest = &r[end..];
            if field.is_empty() {
                continue;
            }
            cur = cur.iter().filter_map(|v| v.get(field).cloned()).collect();
        } else if let Some(r) = rest.strip_prefix('[') {
            let Some(end) = find_close(r) else { return vec![] };
            let inner = &r[..end];
            rest = &r[end + 1..];
            cur = cur.iter().flat_map(|v| index(v, inner)).collect();
        } else {
            return vec![];
        }
    }
    cur
}

fn find_close(s: &str) -> Option<usize> {
    let mut depth = 0;
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '[' | '(') => depth += 1,
            (None, ')') => depth -= 1,
            (None, ']') if depth == 0 => return Some(i),
            (None, ']') => depth -= 1,
            _ => {}
        }
    }
    None
}

fn index(v: &Value, inner: &str) -> Vec<Value> {
    let Some(items) = v.as_array() else {
        return match inner.trim_matches(['\'', '"']) {
            "*" => v
                .as_object()
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default(),
            key => v.get(key).cloned().into_iter().collect(),
        };
    };
    if inner == "*" {
        return items.clone();
    }
    if let Ok(i) = inner.parse::<i64>() {
        let idx = if i < 0 { items.len() as i64 + i } else { i };
        return usize::try_from(idx)
            .ok()
            .and_then(|i| items.get(i))
            .cloned()
            .into_iter()
            .collect();
    }
    if let Some(filter) = inner.strip_prefix("?(").and_then(|f| f.strip_suffix(')')) {
        let (lhs, op, rhs) = if let Some((l, r)) = filter.split_once("==") {
            (l, "==", r)
        } else if let Some((l, r)) = filter.split_once("!=") {
            (l, "!=", r)
        } else {
            (filter, "exists", "")
        };
        let lhs = lhs.trim().trim_start_matches('@');
        let want = rhs.trim().trim_matches(['"', '\'']);
        return items
            .iter()
            .filter(|item| {
                let got = jsonpath(item, lhs);
                match op {
                    "exists" => !got.is_empty(),
                    _ => {
                        let eq = got.first().is_some_and(|g| {
                            g.as_str().map(str::to_string).unwrap_or_else(|| g.to_string()) == want
                        });
                        (op == "==") == eq
                    }
                }
            })
            .cloned()
            .collect();
    }
    vec![]
}

struct Column {
    name: String,
    ty: String,
    format: String,
    description: String,
    priority: i64,
    path: Option<String>,
}

fn col(name: &str, ty: &str, path: Option<&str>) -> Column {
    Column {
        name: name.into(),
        ty: ty.into(),
        format: if name == "Name" {
            "name".into()
        } else {
            String::new()
        },
        description: String::new(),
        priority: 0,
        path: path.map(str::to_string),
    }
}

fn columns(rt: &ResourceType, version: &str) -> Vec<Column> {
    let mut cols = vec![col("Name", "string", Some(".metadata.name"))];
    match rt.builtin {
        Some(Builtin::Namespace) => cols.push(col("Status", "string", Some(".status.phase"))),
        Some(Builtin::ConfigMap) => cols.push(col("Data", "integer", None)),
        Some(Builtin::Secret) => {
            cols.push(col("Type", "string", Some(".type")));
            cols.push(col("Data", "integer", None));
        }
        Some(Builtin::Generic) => match (rt.group.as_str(), rt.kind.as_str()) {
            ("apiregistration.k8s.io", "APIService") => {
                cols.push(col("Service", "string", None));
                cols.push(col("Available", "string", None));
            }
            ("storage.k8s.io", "CSIDriver") => {
                cols.push(col("AttachRequired", "boolean", Some(".spec.attachRequired")));
                cols.push(col("PodInfoOnMount", "boolean", Some(".spec.podInfoOnMount")));
                cols.push(col("StorageCapacity", "boolean", Some(".spec.storageCapacity")));
                cols.push(col("TokenRequests", "string", None));
                cols.push(col(
                    "RequiresRepublish",
                    "boolean",
                    Some(".spec.requiresRepublish"),
                ));
                cols.push(col("Modes", "string", None));
            }
            _ => {}
        },
        Some(Builtin::Lease) => cols.push(col("Holder", "string", Some(".spec.holderIdentity"))),
        Some(Builtin::Event) => {
            return vec![
                col("Last Seen", "string", Some(".lastTimestamp")),
                col("Type", "string", Some(".type")),
                col("Reason", "string", Some(".reason")),
                col("Object", "string", None),
                col("Message", "string", Some(".message")),
            ];
        }
        Some(Builtin::Crd) => {
            cols.push(col("Created At", "string", Some(".metadata.creationTimestamp")));
            return cols;
        }
        None => {
            let printer = rt
                .version(version)
                .map(|v| v.printer_columns.clone())
                .unwrap_or_default();
            let has_age = printer
                .iter()
                .any(|c| c.get("jsonPath").and_then(Value::as_str) == Some(".metadata.creationTimestamp"));
            for c in &printer {
                let s = |f: &str| c.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                cols.push(Column {
                    name: s("name"),
                    ty: s("type"),
                    format: s("format"),
                    description: s("description"),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    path: Some(s("jsonPath")),
                });
            }
            if !has_age {
                cols.push(col("Age", "date", Some(".metadata.creationTimestamp")));
            }
            return cols;
        }
    }
    cols.push(col("Age", "date", Some(".metadata.creationTimestamp")));
    cols
}

fn cell(c: &Column, obj: &Value, rt: &ResourceType) -> Value {
    let Some(path) = &c.path else {
        return match c.name.as_str() {
            "Data" => json!(obj
                .get("data")
                .and_then(Value::as_object)
                .map(|m| m.len())
                .unwrap_or(0)),
            "Object" => {
                let io = obj
                    .get("involvedObject")
                    .or_else(|| obj.get("regarding"))
                    .cloned()
                    .unwrap_or(Value::Null);
                json!(format!(
                    "{}/{}",
                    io.get("kind")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_lowercase(),
                    io.get("name").and_then(Value::as_str).unwrap_or_default()
                ))
            }
            "Service" => match obj.pointer("/spec/service") {
                Some(svc) if svc.is_object() => json!(format!(
                    "{}/{}",
                    svc.get("namespace").and_then(Value::as_str).unwrap_or_default(),
                    svc.get("name").and_then(Value::as_str).unwrap_or_default()
                )),
                _ => json!("Local"),
            },
            "Available" => {
                let available = obj
                    .pointer("/status/conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some("Available"))
                    });
                let s = |c: &Value, f: &str| c.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
                json!(match available {
                    None => "Unknown".to_string(),
                    Some(c) if s(c, "status") == "True" => "True".to_string(),
                    Some(c) => format!("{} ({})", s(c, "status"), s(c, "reason")),
                })
            }
            "TokenRequests" => {
                let audiences: Vec<&str> = obj
                    .pointer("/spec/tokenRequests")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.get("audience").and_then(Value::as_str))
                            .collect()
                    })
                    .unwrap_or_default();
                json!(if audiences.is_empty() {
                    "<unset>".to_string()
                } else {
                    audiences.join(",")
                })
            }
            "Modes" => {
                let modes: Vec<&str> = obj
                    .pointer("/spec/volumeLifecycleModes")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                json!(if modes.is_empty() {
                    "<none>".to_string()
                } else {
                    modes.join(",")
                })
            }
            _ => Value::Null,
        };
    };
    let found = jsonpath(obj, path);
    if found.is_empty() {
        return Value::Null;
    }
    if c.ty == "date" || (rt.builtin == Some(Builtin::Event) && c.name == "Last Seen") {
        return json!(found[0].as_str().map(human_age).unwrap_or_default());
    }
    if found.len() == 1 {
        let v = &found[0];
        return match (c.ty.as_str(), v) {
            ("string", Value::String(_))
            | ("integer", Value::Number(_))
            | ("number", Value::Number(_))
            | ("boolean", Value::Bool(_)) => v.clone(),
            (_, Value::String(s)) => json!(s),
            (_, other) => json!(other.to_string()),
        };
    }
    json!(found
        .iter()
        .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
        .collect::<Vec<_>>()
        .join(","))
}

/// A Table of objects. `include_object`: `None`, `Metadata` (default) or `Object`.
pub fn table(
    rt: &ResourceType,
    version: &str,
    objects: &[Value],
    list_meta: Value,
    include_object: &str,
) -> Value {
    let cols = columns(rt, version);
    let defs: Vec<Value> = cols
        .iter()
        .map(|c| json!({"name": c.name, "type": if c.ty == "date" { "string" } else { c.ty.as_str() }, "format": c.format, "description": c.description, "priority": c.priority}))
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let cells: Vec<Value> = cols.iter().map(|c| cell(c, o, rt)).collect();
            let object = match include_object {
                "None" => Value::Null,
                "Object" => o.clone(),
                _ => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o.get("metadata").cloned().unwrap_or(json!({}))}),
            };
            json!({"cells": cells, "object": object})
        })
        .collect();
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta, "columnDefinitions": defs, "rows": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let obj = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]}, "spec": {"list": [{"n": "a"}, {"n": "b"}]}});
        assert_eq!(
            jsonpath(&obj, ".status.conditions[?(@.type==\"Ready\")].status"),
            vec![json!("True")]
        );
        assert_eq!(jsonpath(&obj, ".spec.list[*].n"), vec![json!("a"), json!("b")]);
        assert_eq!(jsonpath(&obj, ".spec.list[1].n"), vec![json!("b")]);
        assert!(jsonpath(&obj, ".spec.missing").is_empty());
    }
}
