//! Decoding of Kubernetes protobuf request bodies for the built-in kinds. kubectl's typed clients (`kubectl create
//! configmap|secret|namespace`) send `application/vnd.kubernetes.protobuf`; responses stay JSON, which those
//! clients also accept.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};

/// The 4-byte prefix of every Kubernetes protobuf body.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Debug)]
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

fn fields(mut b: &[u8]) -> ApiResult<Vec<(u32, Wire<'_>)>> {
    let bad = |what: &str| ApiError::bad_request(format!("the protobuf body is malformed: {what}"));
    let mut out = Vec::new();
    while !b.is_empty() {
        let (tag, n) = varint(b).ok_or_else(|| bad("truncated tag"))?;
        b = &b[n..];
        let field = u32::try_from(tag >> 3).map_err(|_| bad("field number too large"))?;
        match tag & 7 {
            0 => {
                let (v, n) = varint(b).ok_or_else(|| bad("truncated varint"))?;
                b = &b[n..];
                out.push((field, Wire::Varint(v)));
            }
            2 => {
                let (len, n) = varint(b).ok_or_else(|| bad("truncated length"))?;
                let len = usize::try_from(len).map_err(|_| bad("length too large"))?;
                let end = n
                    .checked_add(len)
                    .filter(|e| *e <= b.len())
                    .ok_or_else(|| bad("length past the end"))?;
                out.push((field, Wire::Bytes(&b[n..end])));
                b = &b[end..];
            }
            1 => {
                b = b.get(8..).ok_or_else(|| bad("truncated fixed64"))?;
                out.push((field, Wire::Fixed));
            }
            5 => {
                b = b.get(4..).ok_or_else(|| bad("truncated fixed32"))?;
                out.push((field, Wire::Fixed));
            }
            w => return Err(bad(&format!("unsupported wire type {w}"))),
        }
    }
    Ok(out)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

fn string(w: &Wire<'_>) -> Value {
    match w {
        Wire::Bytes(b) => json!(String::from_utf8_lossy(b)),
        _ => Value::Null,
    }
}

fn int(w: &Wire<'_>) -> Value {
    match w {
        // int32/int64 are two's complement varints.
        Wire::Varint(v) => json!(*v as i64),
        _ => Value::Null,
    }
}

fn boolean(w: &Wire<'_>) -> Value {
    match w {
        Wire::Varint(v) => json!(*v != 0),
        _ => Value::Null,
    }
}

fn bytes<'a>(w: &Wire<'a>) -> &'a [u8] {
    match w {
        Wire::Bytes(b) => b,
        _ => &[],
    }
}

/// A map<string,string> (or map<string,bytes> as base64 when `b64`) entry.
fn map_entry(w: &Wire<'_>, out: &mut Map<String, Value>, b64: bool) -> ApiResult<()> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (f, v) in fields(bytes(w))? {
        match f {
            1 => key = String::from_utf8_lossy(bytes(&v)).into_owned(),
            2 if b64 => value = json!(base64::engine::general_purpose::STANDARD.encode(bytes(&v))),
            2 => value = string(&v),
            _ => {}
        }
    }
    out.insert(key, value);
    Ok(())
}

fn time(w: &Wire<'_>) -> ApiResult<Value> {
    let mut secs = 0i64;
    for (f, v) in fields(bytes(w))? {
        if let (1, Wire::Varint(s)) = (f, v) {
            secs = s as i64;
        }
    }
    Ok(chrono::DateTime::from_timestamp(secs, 0)
        .map(|t| json!(t.format("%Y-%m-%dT%H:%M:%SZ").to_string()))
        .unwrap_or(Value::Null))
}

fn object(b: &[u8], spec: &[(u32, &str, Kind)]) -> ApiResult<Value> {
    let mut out = Map::new();
    for (f, v) in fields(b)? {
        let Some((_, name, kind)) = spec.iter().find(|(n, _, _)| *n == f) else {
            continue;
        };
        let name = name.to_string();
        match kind {
            // proto2 optional strings arrive even when empty; JSON omits them.
            Kind::Str if bytes(&v).is_empty() => {}
            Kind::Str => {
                out.insert(name, string(&v));
            }
            Kind::Int => {
                out.insert(name, int(&v));
            }
            Kind::Bool => {
                out.insert(name, boolean(&v));
            }
            Kind::Time => {
                out.insert(name, time(&v)?);
            }
            Kind::StrList => {
                let e = out.entry(name).or_insert(json!([]));
                if let Value::Array(a) = e {
                    a.push(string(&v));
                }
            }
            Kind::StrMap | Kind::BytesMap => {
                let e = out.entry(name).or_insert(json!({}));
                if let Value::Object(m) = e {
                    map_entry(&v, m, matches!(kind, Kind::BytesMap))?;
                }
            }
            Kind::Msg(sub) => {
                out.insert(name, object(bytes(&v), sub)?);
            }
            Kind::MsgList(sub) => {
                let item = object(bytes(&v), sub)?;
                let e = out.entry(name).or_insert(json!([]));
                if let Value::Array(a) = e {
                    a.push(item);
                }
            }
        }
    }
    Ok(Value::Object(out))
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Str,
    Int,
    Bool,
    Time,
    StrList,
    StrMap,
    BytesMap,
    Msg(&'static [(u32, &'static str, Kind)]),
    MsgList(&'static [(u32, &'static str, Kind)]),
}

const OWNER_REF: &[(u32, &str, Kind)] = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];
pub(crate) const OBJECT_META: &[(u32, &str, Kind)] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "generation", Kind::Int),
    (11, "labels", Kind::StrMap),
    (12, "annotations", Kind::StrMap),
    (13, "ownerReferences", Kind::MsgList(OWNER_REF)),
    (14, "finalizers", Kind::StrList),
];
pub(crate) const OBJECT_REF: &[(u32, &str, Kind)] = &[
    (1, "kind", Kind::Str),
    (2, "namespace", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (7, "fieldPath", Kind::Str),
];
const CONFIG_MAP: &[(u32, &str, Kind)] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::StrMap),
    (3, "binaryData", Kind::BytesMap),
    (4, "immutable", Kind::Bool),
];
const SECRET: &[(u32, &str, Kind)] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "data", Kind::BytesMap),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::StrMap),
    (5, "immutable", Kind::Bool),
];
const NAMESPACE_SPEC: &[(u32, &str, Kind)] = &[(1, "finalizers", Kind::StrList)];
const NAMESPACE: &[(u32, &str, Kind)] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(NAMESPACE_SPEC)),
];
const LEASE_SPEC: &[(u32, &str, Kind)] = &[
    (1, "holderIdentity", Kind::Str),
    (2, "leaseDurationSeconds", Kind::Int),
    (5, "leaseTransitions", Kind::Int),
];
const LEASE: &[(u32, &str, Kind)] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "spec", Kind::Msg(LEASE_SPEC)),
];
const EVENT_SOURCE: &[(u32, &str, Kind)] = &[(1, "component", Kind::Str), (2, "host", Kind::Str)];
const EVENT: &[(u32, &str, Kind)] = &[
    (1, "metadata", Kind::Msg(OBJECT_META)),
    (2, "involvedObject", Kind::Msg(OBJECT_REF)),
    (3, "reason", Kind::Str),
    (4, "message", Kind::Str),
    (5, "source", Kind::Msg(EVENT_SOURCE)),
    (6, "firstTimestamp", Kind::Time),
    (7, "lastTimestamp", Kind::Time),
    (8, "count", Kind::Int),
    (9, "type", Kind::Str),
    (12, "action", Kind::Str),
    (14, "reportingComponent", Kind::Str),
    (15, "reportingInstance", Kind::Str),
];
const DELETE_OPTIONS: &[(u32, &str, Kind)] = &[
    (3, "orphanDependents", Kind::Bool),
    (4, "propagationPolicy", Kind::Str),
    (5, "dryRun", Kind::StrList),
];

/// Decode a protobuf body into the JSON form of the object.
pub fn decode(body: &[u8]) -> ApiResult<Value> {
    let rest = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| ApiError::bad_request("the protobuf body does not start with the k8s\\0 magic"))?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (f, v) in fields(rest)? {
        match f {
            1 => {
                for (tf, tv) in fields(bytes(&v))? {
                    match tf {
                        1 => api_version = String::from_utf8_lossy(bytes(&tv)).into_owned(),
                        2 => kind = String::from_utf8_lossy(bytes(&tv)).into_owned(),
                        _ => {}
                    }
                }
            }
            2 => raw = bytes(&v),
            _ => {}
        }
    }
    let spec = match kind.as_str() {
        "ConfigMap" => CONFIG_MAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "Lease" => LEASE,
        "Event" => EVENT,
        "DeleteOptions" => DELETE_OPTIONS,
        other => match crate::auth::proto_fields(other) {
            Some(spec) => spec,
            None => {
                return Err(ApiError::unsupported_media_type(&format!(
                    "application/vnd.kubernetes.protobuf for kind {other:?} (send JSON instead)"
                )))
            }
        },
    };
    let mut obj = object(raw, spec)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![((n << 3) | 2) as u8, payload.len() as u8];
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn decodes_a_configmap_like_kubectl_sends() {
        let meta = [
            field(1, b"cm1"),
            field(11, &[field(1, b"app"), field(2, b"web")].concat()),
        ]
        .concat();
        let cm = [
            field(1, &meta),
            field(2, &[field(1, b"a"), field(2, b"b")].concat()),
        ]
        .concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &type_meta), field(2, &cm)].concat();
        let obj = decode(&body).expect("decodes");
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm1", "labels": {"app": "web"}}, "data": {"a": "b"}})
        );
    }

    #[test]
    fn garbage_is_a_bad_request() {
        let err = decode(b"k8s\x00\x0a\xff").err().map(|e| e.code);
        assert_eq!(err, Some(400));
    }
}
