//! Structural-schema handling of custom resources, in the API server's order: pruning of unknown fields,
//! defaulting, OpenAPI v3 validation, then `x-kubernetes-validations` CEL rules. Messages follow the real server.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::{Map, Value};

use crate::cel::{self, Outcome};
use crate::error::Cause;

/// The outcome of validating one object.
#[derive(Debug, Default)]
pub struct Report {
    /// Validation failures (422).
    pub causes: Vec<Cause>,
    /// Fields removed by pruning, as `.spec.foo` paths (warnings, or errors with fieldValidation=Strict).
    pub unknown: Vec<String>,
}

fn cause(reason: &str, field: &str, message: String) -> Cause {
    Cause {
        reason: reason.into(),
        field: field.into(),
        message,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value as `Invalid value: ...` shows it.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Number(_) | Value::Bool(_) => v.to_string(),
        Value::Null => "\"null\"".into(),
        other => format!("\"{}\"", type_name(other)),
    }
}

fn join(path: &str, seg: &str) -> String {
    if path.is_empty() {
        seg.to_string()
    } else {
        format!("{path}.{seg}")
    }
}

/// Prune, default and validate an object against its version's schema. `old` is the stored object on updates.
pub fn validate(schema: &Value, obj: &mut Value, old: Option<&Value>) -> Report {
    let mut report = Report::default();
    prune_root(schema, obj, &mut report.unknown);
    default(schema, obj);
    // Root: apiVersion, kind and metadata are the server's, not the schema's.
    if let (Some(props), Some(m)) = (
        schema.get("properties").and_then(Value::as_object),
        obj.as_object(),
    ) {
        for (k, v) in m {
            if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(s) = props.get(k) {
                check(s, v, old.and_then(|o| o.get(k)), k, &mut report.causes);
            }
        }
        if let Some(req) = schema.get("required").and_then(Value::as_array) {
            for r in req.iter().filter_map(Value::as_str) {
                if !m.contains_key(r) {
                    report
                        .causes
                        .push(cause("FieldValueRequired", r, "Required value".into()));
                }
            }
        }
    }
    rules(schema, obj, old, "", &mut report.causes, true);
    report
}

fn prune_root(schema: &Value, obj: &mut Value, unknown: &mut Vec<String>) {
    let Some(m) = obj.as_object_mut() else { return };
    let props = schema.get("properties").and_then(Value::as_object);
    let keys: Vec<String> = m.keys().cloned().collect();
    for k in keys {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match props.and_then(|p| p.get(&k)) {
            Some(s) => {
                if let Some(v) = m.get_mut(&k) {
                    prune(s, v, &format!(".{k}"), unknown);
                }
            }
            None if preserves(schema) => {}
            None => {
                m.remove(&k);
                unknown.push(format!(".{k}"));
            }
        }
    }
}

fn preserves(schema: &Value) -> bool {
    schema
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true)
}

fn prune(schema: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            let embedded = schema
                .get("x-kubernetes-embedded-resource")
                .and_then(Value::as_bool)
                == Some(true);
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let sub = props.and_then(|p| p.get(&k)).or(additional);
                match sub {
                    Some(s) => {
                        if let Some(c) = m.get_mut(&k) {
                            prune(s, c, &format!("{path}.{k}"), unknown);
                        }
                    }
                    None if preserves(schema)
                        || (embedded && matches!(k.as_str(), "apiVersion" | "kind" | "metadata")) => {}
                    None if props.is_none()
                        && schema.get("additionalProperties") == Some(&Value::Bool(true)) => {}
                    None => {
                        m.remove(&k);
                        unknown.push(format!("{path}.{k}"));
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune(s, item, &format!("{path}[{i}]"), unknown);
                }
            }
        }
        _ => {}
    }
}

/// Apply `default`s of absent (or null and not nullable) properties, recursively.
pub fn default(schema: &Value, v: &mut Value) {
    match v {
        Value::Object(m) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (k, s) in props {
                    let nullable = s.get("nullable").and_then(Value::as_bool) == Some(true);
                    if let Some(d) = s.get("default") {
                        match m.get(k) {
                            None => {
                                m.insert(k.clone(), d.clone());
                            }
                            Some(Value::Null) if !nullable => {
                                m.insert(k.clone(), d.clone());
                            }
                            _ => {}
                        }
                    }
                    if let Some(c) = m.get_mut(k) {
                        default(s, c);
                    }
                }
            }
            if let Some(s) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                for c in m.values_mut() {
                    default(s, c);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for item in items {
                    default(s, item);
                }
            }
        }
        _ => {}
    }
}

fn format_ok(format: &str, s: &str) -> bool {
    static RES: OnceLock<Vec<(&'static str, Regex)>> = OnceLock::new();
    let res = RES.get_or_init(|| {
        [
            ("uuid", r"^(?i)[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$"),
            ("date", r"^\d{4}-\d{2}-\d{2}$"),
            ("date-time", r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"),
            ("email", r"^[^@\s]+@[^@\s]+\.[^@\s]+$"),
            ("hostname", r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,61}[a-zA-Z0-9])?)*$"),
            ("mac", r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$"),
            ("byte", r"^[A-Za-z0-9+/]*={0,2}$"),
            ("duration", r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$"),
        ]
        .into_iter()
        .filter_map(|(n, r)| Regex::new(r).ok().map(|r| (n, r)))
        .collect()
    });
    match format {
        "ipv4" => s.parse::<std::net::Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<std::net::Ipv6Addr>().is_ok(),
        "cidr" => s.split_once('/').is_some_and(|(ip, bits)| {
            ip.parse::<std::net::IpAddr>().is_ok() && bits.parse::<u8>().is_ok_and(|b| b <= 128)
        }),
        "uri" => s.contains(':') && !s.contains(' '),
        "byte" => s.len().is_multiple_of(4) && res.iter().any(|(n, r)| *n == "byte" && r.is_match(s)),
        _ => match res.iter().find(|(n, _)| *n == format) {
            Some((_, r)) => r.is_match(s),
            None => true,
        },
    }
}

fn pattern(p: &str) -> Option<Regex> {
    static CACHE: OnceLock<std::sync::Mutex<std::collections::HashMap<String, Option<Regex>>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut c = cache.lock().ok()?;
    c.entry(p.to_string())
        .or_insert_with(|| Regex::new(p).ok())
        .clone()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fmt_num(f: f64) -> String {
    if f.fract() == 0.0 && f.abs() < 1e15 {
        format!("{}", f as i64)
    } else {
        format!("{f}")
    }
}

/// OpenAPI v3 checks of one value (not CEL).
fn check(schema: &Value, v: &Value, old: Option<&Value>, path: &str, out: &mut Vec<Cause>) {
    let nullable = schema.get("nullable").and_then(Value::as_bool) == Some(true);
    let int_or_string = schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true);
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    if v.is_null() {
        if !nullable && !ty.is_empty() {
            out.push(cause(
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"null\": {path} in body must be of type {ty}: \"null\""),
            ));
        }
        return;
    }
    let actual = type_name(v);
    let type_ok = match ty {
        "" => true,
        "number" => matches!(actual, "number" | "integer"),
        "integer" => actual == "integer" || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        t => t == actual,
    } || (int_or_string && matches!(actual, "integer" | "string"));
    if int_or_string && !matches!(actual, "integer" | "string") {
        out.push(cause(
            "FieldValueTypeInvalid",
            path,
            format!(
                "Invalid value: \"{actual}\": {path} in body must be of type integer,string: \"{actual}\""
            ),
        ));
        return;
    }
    if !type_ok {
        out.push(cause(
            "FieldValueTypeInvalid",
            path,
            format!("Invalid value: \"{actual}\": {path} in body must be of type {ty}: \"{actual}\""),
        ));
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(v) {
            let list: Vec<String> = allowed
                .iter()
                .map(|a| {
                    if a.is_string() {
                        a.to_string()
                    } else {
                        format!("{a}")
                    }
                })
                .collect();
            out.push(cause(
                "FieldValueNotSupported",
                path,
                format!(
                    "Unsupported value: {}: supported values: {}",
                    show(v),
                    list.join(", ")
                ),
            ));
        }
    }
    for sub in ["allOf"] {
        if let Some(list) = schema.get(sub).and_then(Value::as_array) {
            for s in list {
                check(s, v, old, path, out);
            }
        }
    }
    for (key, need_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            let passing = list
                .iter()
                .filter(|s| {
                    let mut errs = Vec::new();
                    check(s, v, old, path, &mut errs);
                    errs.is_empty()
                        && s.get("required")
                            .and_then(Value::as_array)
                            .is_none_or(|r| r.iter().filter_map(Value::as_str).all(|f| v.get(f).is_some()))
                })
                .count();
            if passing == 0 || (need_one && passing > 1) {
                let what = if need_one {
                    "must validate one and only one schema (oneOf)"
                } else {
                    "must validate at least one schema (anyOf)"
                };
                out.push(cause(
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {}: {path} in body {what}", show(v)),
                ));
            }
        }
    }
    match v {
        Value::String(s) => {
            if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
                if s.chars().count() as u64 > max {
                    out.push(cause(
                        "FieldValueTooLong",
                        path,
                        format!("Too long: may not be more than {max} bytes"),
                    ));
                }
            }
            if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
                if (s.chars().count() as u64) < min {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {s:?}: {path} in body should be at least {min} chars long"),
                    ));
                }
            }
            if let Some(p) = schema.get("pattern").and_then(Value::as_str) {
                if pattern(p).is_some_and(|r| !r.is_match(s)) {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {s:?}: {path} in body should match '{p}'"),
                    ));
                }
            }
            if let Some(f) = schema.get("format").and_then(Value::as_str) {
                if !int_or_string && !format_ok(f, s) {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {s:?}: {path} in body must be of type {f}: {s:?}"),
                    ));
                }
            }
        }
        Value::Number(n) => {
            let f = n.as_f64().unwrap_or_default();
            let excl_min = schema.get("exclusiveMinimum").and_then(Value::as_bool) == Some(true);
            let excl_max = schema.get("exclusiveMaximum").and_then(Value::as_bool) == Some(true);
            if let Some(min) = schema.get("minimum").and_then(num) {
                if f < min || (excl_min && f == min) {
                    let rel = if excl_min {
                        "greater than"
                    } else {
                        "greater than or equal to"
                    };
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {v}: {path} in body should be {rel} {}",
                            fmt_num(min)
                        ),
                    ));
                }
            }
            if let Some(max) = schema.get("maximum").and_then(num) {
                if f > max || (excl_max && f == max) {
                    let rel = if excl_max {
                        "less than"
                    } else {
                        "less than or equal to"
                    };
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {v}: {path} in body should be {rel} {}",
                            fmt_num(max)
                        ),
                    ));
                }
            }
            if let Some(m) = schema.get("multipleOf").and_then(num) {
                if m != 0.0 && (f / m).fract() != 0.0 {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {v}: {path} in body should be a multiple of {}",
                            fmt_num(m)
                        ),
                    ));
                }
            }
            match schema.get("format").and_then(Value::as_str) {
                Some("int32") if n.as_i64().is_some_and(|i| i32::try_from(i).is_err()) => {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {v}: {path} in body must be of type int32: {v}"),
                    ));
                }
                _ => {}
            }
        }
        Value::Array(items) => {
            if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
                if (items.len() as u64) < min {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should have at least {min} items",
                            items.len()
                        ),
                    ));
                }
            }
            if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
                if items.len() as u64 > max {
                    out.push(cause(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", items.len()),
                    ));
                }
            }
            let list_type = schema.get("x-kubernetes-list-type").and_then(Value::as_str);
            if list_type == Some("set") || schema.get("uniqueItems").and_then(Value::as_bool) == Some(true) {
                for (i, item) in items.iter().enumerate() {
                    if items[..i].contains(item) {
                        out.push(cause(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!(
                                "Duplicate value: {}",
                                if item.is_object() {
                                    item.to_string()
                                } else {
                                    show(item)
                                }
                            ),
                        ));
                    }
                }
            }
            let keys: Vec<&str> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| k.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if list_type == Some("map") && !keys.is_empty() {
                let key_of = |x: &Value| {
                    keys.iter()
                        .map(|k| x.get(*k).cloned().unwrap_or(Value::Null))
                        .collect::<Vec<_>>()
                };
                for (i, item) in items.iter().enumerate() {
                    let k = key_of(item);
                    if items[..i].iter().any(|o| key_of(o) == k) {
                        let shown: Map<String, Value> =
                            keys.iter().zip(k).map(|(n, v)| (n.to_string(), v)).collect();
                        out.push(cause(
                            "FieldValueDuplicate",
                            &format!("{path}[{i}]"),
                            format!(
                                "Duplicate value: map[string]interface {{}}{}",
                                Value::Object(shown)
                            ),
                        ));
                    }
                }
            }
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(
                        s,
                        item,
                        correlate(schema, old, item, i),
                        &format!("{path}[{i}]"),
                        out,
                    );
                }
            }
        }
        Value::Object(m) => {
            if let Some(req) = schema.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !m.contains_key(r) {
                        out.push(cause(
                            "FieldValueRequired",
                            &join(path, r),
                            "Required value".into(),
                        ));
                    }
                }
            }
            if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
                if m.len() as u64 > max {
                    out.push(cause(
                        "FieldValueTooMany",
                        path,
                        format!("Too many: {}: must have at most {max} items", m.len()),
                    ));
                }
            }
            if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
                if (m.len() as u64) < min {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {path} in body should have at least {min} properties",
                            m.len()
                        ),
                    ));
                }
            }
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, c) in m {
                let embedded_meta = schema
                    .get("x-kubernetes-embedded-resource")
                    .and_then(Value::as_bool)
                    == Some(true)
                    && matches!(k.as_str(), "apiVersion" | "kind" | "metadata");
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    if !embedded_meta || props.and_then(|p| p.get(k)).is_some() {
                        check(s, c, old.and_then(|o| o.get(k)), &join(path, k), out);
                    }
                }
            }
        }
        Value::Bool(_) | Value::Null => {}
    }
}

/// The old item that corresponds to a new list item: by map keys for `x-kubernetes-list-type: map`, else none.
fn correlate<'a>(schema: &Value, old: Option<&'a Value>, item: &Value, _i: usize) -> Option<&'a Value> {
    let keys: Vec<&str> = schema
        .get("x-kubernetes-list-map-keys")
        .and_then(Value::as_array)
        .map(|k| k.iter().filter_map(Value::as_str).collect())?;
    if schema.get("x-kubernetes-list-type").and_then(Value::as_str) != Some("map") {
        return None;
    }
    old?.as_array()?
        .iter()
        .find(|o| keys.iter().all(|k| o.get(*k) == item.get(*k)))
}

/// Evaluate every `x-kubernetes-validations` rule in the schema tree.
fn rules(schema: &Value, v: &Value, old: Option<&Value>, path: &str, out: &mut Vec<Cause>, root: bool) {
    // Values of the wrong type were already reported; their rules cannot run.
    if v.is_null() || !type_matches(schema, v) {
        return;
    }
    if let Some(list) = schema.get("x-kubernetes-validations").and_then(Value::as_array) {
        for r in list {
            let Some(text) = r.get("rule").and_then(Value::as_str) else {
                continue;
            };
            let compiled = match cel::compile(text) {
                Ok(c) => c,
                Err(e) => {
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!("Invalid value: {}: {e}", show(v)),
                    ));
                    continue;
                }
            };
            let optional_old = r.get("optionalOldSelf").and_then(Value::as_bool) == Some(true);
            if compiled.uses_old_self && old.is_none() && !optional_old {
                continue;
            }
            let self_value = if root { strip_root(v) } else { v.clone() };
            let old_value = old.map(|o| if root { strip_root(o) } else { o.clone() });
            match cel::eval(&compiled, &self_value, old_value.as_ref()) {
                Outcome::Pass => {}
                Outcome::Fail => {
                    let msg = r
                        .get("messageExpression")
                        .and_then(Value::as_str)
                        .and_then(|e| cel::eval_string(e, &self_value, old_value.as_ref()))
                        .or_else(|| r.get("message").and_then(Value::as_str).map(str::to_string))
                        .unwrap_or_else(|| format!("failed rule: {text}"));
                    let field = match r.get("fieldPath").and_then(Value::as_str) {
                        Some(fp) => format!(
                            "{path}{}",
                            if path.is_empty() {
                                fp.trim_start_matches('.')
                            } else {
                                fp
                            }
                        ),
                        None => path.to_string(),
                    };
                    let (reason, text) = match r.get("reason").and_then(Value::as_str) {
                        Some("FieldValueForbidden") => ("FieldValueForbidden", format!("Forbidden: {msg}")),
                        Some("FieldValueRequired") => {
                            ("FieldValueRequired", format!("Required value: {msg}"))
                        }
                        Some("FieldValueDuplicate") => {
                            ("FieldValueDuplicate", format!("Duplicate value: {msg}"))
                        }
                        _ => (
                            "FieldValueInvalid",
                            format!("Invalid value: {}: {msg}", show_cel(schema, v)),
                        ),
                    };
                    out.push(cause(reason, &field, text));
                }
                Outcome::Error(e) => {
                    // A rule that reads an absent field without has() errors in the real server too.
                    out.push(cause(
                        "FieldValueInvalid",
                        path,
                        format!(
                            "Invalid value: {}: {e} evaluating rule: {text}",
                            show_cel(schema, v)
                        ),
                    ));
                }
            }
        }
    }
    match v {
        Value::Object(m) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties").filter(|a| a.is_object());
            for (k, c) in m {
                if root && matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
                    continue;
                }
                if let Some(s) = props.and_then(|p| p.get(k)).or(additional) {
                    rules(s, c, old.and_then(|o| o.get(k)), &join(path, k), out, false);
                }
            }
        }
        Value::Array(items) => {
            if let Some(s) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    rules(
                        s,
                        item,
                        correlate(schema, old, item, i),
                        &format!("{path}[{i}]"),
                        out,
                        false,
                    );
                }
            }
        }
        _ => {}
    }
}

// CEL failures show the schema's type, not the value (as the real server does).
fn type_matches(schema: &Value, v: &Value) -> bool {
    match schema.get("type").and_then(Value::as_str) {
        Some("object") => v.is_object(),
        Some("array") => v.is_array(),
        Some("string") => v.is_string(),
        Some("integer") => v.is_i64() || v.is_u64(),
        Some("number") => v.is_number(),
        Some("boolean") => v.is_boolean(),
        _ => true,
    }
}

fn show_cel(schema: &Value, v: &Value) -> String {
    match schema.get("type").and_then(Value::as_str) {
        Some(t) => format!("{t:?}"),
        None => format!("\"{}\"", type_name(v)),
    }
}

// Root rules see apiVersion, kind and the metadata name fields only.
fn strip_root(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "name" || k == "generateName");
    }
    v
}

/// Check a CRD version's schema is structural enough to serve, and that its CEL rules compile.
pub fn check_structural(schema: &Value, path: &str, out: &mut Vec<Cause>) {
    fn walk(s: &Value, path: &str, out: &mut Vec<Cause>) {
        let Some(m) = s.as_object() else {
            out.push(cause(
                "FieldValueInvalid",
                path,
                "Invalid value: must be an object".into(),
            ));
            return;
        };
        let has_type = m
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| !t.is_empty());
        let free = m.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true)
            || m.get("x-kubernetes-preserve-unknown-fields")
                .and_then(Value::as_bool)
                == Some(true);
        if !has_type && !free {
            out.push(cause(
                "FieldValueRequired",
                &format!("{path}.type"),
                "Required value: must not be empty for specified object fields".into(),
            ));
        }
        if let Some(t) = m.get("type").and_then(Value::as_str) {
            if !matches!(
                t,
                "object" | "array" | "string" | "integer" | "number" | "boolean"
            ) {
                out.push(cause("FieldValueNotSupported", &format!("{path}.type"), format!("Unsupported value: {t:?}: supported values: \"array\", \"boolean\", \"integer\", \"number\", \"object\", \"string\"")));
            }
        }
        if let Some(p) = m.get("pattern").and_then(Value::as_str) {
            if Regex::new(p).is_err() {
                out.push(cause(
                    "FieldValueInvalid",
                    &format!("{path}.pattern"),
                    format!("Invalid value: {p:?}: must be a valid regular expression"),
                ));
            }
        }
        if let Some(list) = m.get("x-kubernetes-validations").and_then(Value::as_array) {
            for (i, r) in list.iter().enumerate() {
                if let Some(text) = r.get("rule").and_then(Value::as_str) {
                    let field = format!("{path}.x-kubernetes-validations[{i}].rule");
                    match cel::compile(text) {
                        Err(e) => out.push(cause(
                            "FieldValueInvalid",
                            &field,
                            format!("Invalid value: {text:?}: {e}"),
                        )),
                        Ok(rule) => {
                            let root = path.ends_with("openAPIV3Schema");
                            for f in cel::undefined_fields(&rule, s, root) {
                                out.push(cause("FieldValueInvalid", &field, format!("Invalid value: {text:?}: compilation failed: ERROR: <input>: undefined field '{f}'")));
                            }
                        }
                    }
                }
            }
        }
        if let Some(props) = m.get("properties").and_then(Value::as_object) {
            for (k, c) in props {
                walk(c, &format!("{path}.properties[{k}]"), out);
            }
        }
        for key in ["items", "additionalProperties"] {
            if let Some(c) = m.get(key).filter(|c| c.is_object()) {
                walk(c, &format!("{path}.{key}"), out);
            }
        }
    }
    walk(schema, path, out);
}

/// Whether a name is an RFC 1123 subdomain (the rule for most object names).
pub fn dns_subdomain(name: &str) -> bool {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$").ok()
    });
    name.len() <= 253 && re.as_ref().is_some_and(|r| r.is_match(name))
}

/// Whether a name is an RFC 1123 label (namespaces).
pub fn dns_label(name: &str) -> bool {
    name.len() <= 63 && !name.contains('.') && dns_subdomain(name)
}

/// Check metadata.name, labels and annotations the way the real server does.
pub fn check_metadata(obj: &Value, label_name: bool, out: &mut Vec<Cause>) {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if name.is_empty() {
        out.push(cause(
            "FieldValueRequired",
            "metadata.name",
            "Required value: name or generateName is required".into(),
        ));
    } else if obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .is_some_and(|v| v.starts_with("rbac.authorization.k8s.io/"))
    {
        // RBAC objects are named by path segment rules (`system:discovery`), not as DNS names.
        let problem = match name {
            "." | ".." => Some(format!("may not be '{name}'")),
            _ if name.contains('/') => Some("may not contain '/'".to_owned()),
            _ if name.contains('%') => Some("may not contain '%'".to_owned()),
            _ => None,
        };
        if let Some(problem) = problem {
            out.push(cause(
                "FieldValueInvalid",
                "metadata.name",
                format!("Invalid value: {name:?}: {problem}"),
            ));
        }
    } else if label_name && !dns_label(name) {
        out.push(cause("FieldValueInvalid", "metadata.name", format!("Invalid value: {name:?}: a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")));
    } else if !label_name && !dns_subdomain(name) {
        out.push(cause("FieldValueInvalid", "metadata.name", format!("Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")));
    }
    static VALUE: OnceLock<Option<Regex>> = OnceLock::new();
    let value_re = VALUE.get_or_init(|| Regex::new(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$").ok());
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let ok_key = k.rsplit('/').next().is_some_and(|n| {
                !n.is_empty() && n.len() <= 63 && value_re.as_ref().is_some_and(|r| r.is_match(n))
            });
            if !ok_key {
                out.push(cause("FieldValueInvalid", "metadata.labels", format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")));
            }
            match v.as_str() {
                Some(s) if s.len() <= 63 && value_re.as_ref().is_some_and(|r| r.is_match(s)) => {}
                Some(s) => out.push(cause("FieldValueInvalid", "metadata.labels", format!("Invalid value: {s:?}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"))),
                None => out.push(cause("FieldValueTypeInvalid", &format!("metadata.labels.{k}"), "Invalid value: must be a string".into())),
            }
        }
    }
    if let Some(ann) = obj.pointer("/metadata/annotations").and_then(Value::as_object) {
        let total: usize = ann
            .iter()
            .map(|(k, v)| k.len() + v.as_str().map(str::len).unwrap_or(0))
            .sum();
        if total > 262_144 {
            out.push(cause(
                "FieldValueTooLong",
                "metadata.annotations",
                "Too long: may not be more than 262144 bytes".into(),
            ));
        }
        for (k, v) in ann {
            if !v.is_string() {
                out.push(cause(
                    "FieldValueTypeInvalid",
                    &format!("metadata.annotations.{k}"),
                    "Invalid value: must be a string".into(),
                ));
            }
        }
    }
}

/// The value at a dotted cause path (`spec.items[0].name`), if it resolves.
fn value_at_path<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = obj;
    for part in path.split('.') {
        let (field, indexes) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !field.is_empty() {
            cur = cur.get(field)?;
        }
        for idx in indexes.split('[').filter(|x| !x.is_empty()) {
            let i: usize = idx.trim_end_matches(']').parse().ok()?;
            cur = cur.get(i)?;
        }
    }
    Some(cur)
}

/// Whether the value at a cause's field path is the same in both objects (for ratcheting).
pub fn unchanged(old: &Value, new: &Value, path: &str) -> bool {
    if path.is_empty() {
        return false;
    }
    match (value_at_path(old, path), value_at_path(new, path)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}
