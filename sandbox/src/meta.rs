//! Small helpers on object metadata and time stamps, and the core/events.k8s.io Event conversion.

use serde_json::{json, Map, Value};

/// Now, as Kubernetes writes `metav1.Time` (RFC 3339, seconds).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `metadata` as a mutable map, created when absent or not an object (the object itself too).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = json!({});
    }
    let Value::Object(root) = obj else {
        unreachable!("the object was just made a map")
    };
    let entry = root.entry("metadata").or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    match entry {
        Value::Object(m) => m,
        _ => unreachable!("metadata was just made a map"),
    }
}

/// Drop what Go's `omitempty` would not print: empty strings, maps and lists in metadata.
pub fn normalize(obj: &mut Value) {
    if let Some(Value::Object(m)) = obj.get_mut("metadata") {
        m.retain(|_, v| match v {
            Value::String(s) => !s.is_empty(),
            Value::Object(o) => !o.is_empty(),
            Value::Array(a) => !a.is_empty(),
            Value::Null => false,
            _ => true,
        });
    }
}

/// A string field of metadata.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.finalizers`.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default()
}

/// Set `metadata.finalizers` (removed when empty).
pub fn set_finalizers(obj: &mut Value, list: &[String]) {
    let m = meta_mut(obj);
    if list.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(list));
    }
}

/// Owner uids from `metadata.ownerReferences`.
pub fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.get("uid"))
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// The resourceVersion as a number (0 when unset or not a number).
pub fn rv_of(obj: &Value) -> u64 {
    meta_str(obj, "resourceVersion").parse().unwrap_or(0)
}

/// Whether deletion was requested.
pub fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

const RENAMES: [(&str, &str); 9] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("source", "deprecatedSource"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("related", "related"),
];

/// core/v1 Event -> events.k8s.io/v1 Event.
pub fn event_to_v1(core: &Value) -> Value {
    let mut out = core.clone();
    if let Value::Object(m) = &mut out {
        for (from, to) in RENAMES {
            if let Some(v) = m.remove(from) {
                m.insert(to.into(), v);
            }
        }
        m.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    }
    out
}

/// events.k8s.io/v1 Event -> core/v1 Event (the storage form).
pub fn event_from_v1(ev: &Value) -> Value {
    let mut out = ev.clone();
    if let Value::Object(m) = &mut out {
        for (to, from) in RENAMES {
            if let Some(v) = m.remove(from) {
                m.insert(to.into(), v);
            }
        }
        m.insert("apiVersion".into(), json!("v1"));
        if let (Some(ctrl), None) = (m.get("reportingComponent").cloned(), m.get("source")) {
            m.insert("source".into(), json!({"component": ctrl}));
        }
        if !m.contains_key("lastTimestamp") {
            if let Some(t) = m.get("eventTime").cloned() {
                m.insert("lastTimestamp".into(), t);
            }
        }
    }
    out
}

/// Age as `kubectl get` prints it (`5s`, `3m2s`, `4h`, `2d`).
pub fn human_age(created: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(created) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        if secs % 60 == 0 {
            format!("{m}m")
        } else {
            format!("{m}m{}s", secs % 60)
        }
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        if m % 60 == 0 {
            format!("{h}h")
        } else {
            format!("{h}h{}m", m % 60)
        }
    } else if h < 48 {
        format!("{h}h")
    } else if d < 8 {
        if h % 24 == 0 {
            format!("{d}d")
        } else {
            format!("{d}d{}h", h % 24)
        }
    } else if d < 730 {
        format!("{d}d")
    } else {
        format!("{}y", d / 365)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_conversion_round_trips() {
        let core = json!({"apiVersion": "v1", "kind": "Event", "involvedObject": {"name": "x"}, "message": "hi", "reason": "Done"});
        let v1 = event_to_v1(&core);
        assert_eq!(v1["regarding"]["name"], "x");
        assert_eq!(v1["note"], "hi");
        assert_eq!(event_from_v1(&v1), core);
    }
}
