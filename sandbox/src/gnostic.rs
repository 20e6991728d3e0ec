//! The OpenAPI v2 (Swagger 2.0) document in the protobuf form kubectl downloads: `GET /openapi/v2` with
//! `Accept: application/com.github.proto-openapi.spec.v2@v1.0+protobuf` answers a `openapi.v2.Document` of
//! gnostic's `OpenAPIv2.proto`. kubectl decodes nothing else there, so a JSON answer fails its client-side
//! validation with "proto: cannot parse invalid wire-format data".
//!
//! The encoder walks the JSON document of [`crate::openapi::v2`] and writes the fields gnostic defines, with
//! gnostic's field numbers. Free-form values (`default`, `enum`, `example`, `x-*` extensions) travel as
//! `Any.yaml` strings; JSON is valid YAML, which is how kube-openapi reads them back.

use serde_json::{Map, Value};

/// The media type kubectl asks for.
pub const MEDIA_TYPE: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// A protobuf message being written.
#[derive(Default)]
struct Msg(Vec<u8>);

impl Msg {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }

    /// A proto3 string: left out when empty.
    fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// A proto3 bool: left out when false.
    fn boolean(&mut self, field: u32, b: bool) {
        if b {
            self.tag(field, 0);
            self.varint(1);
        }
    }

    /// A proto3 int64: left out when 0; negative values are ten-byte two's complement varints.
    fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.tag(field, 0);
            self.varint(v as u64);
        }
    }

    /// A proto3 double (fixed64): left out when 0.
    fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.tag(field, 1);
            self.0.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A sub-message: always written, an empty one still marks the field as set.
    fn message(&mut self, field: u32, m: Msg) {
        self.bytes(field, &m.0);
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or_default()
}

fn int_of(v: &Value, key: &str) -> i64 {
    v.get(key).and_then(Value::as_i64).unwrap_or_default()
}

fn float_of(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or_default()
}

fn bool_of(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or_default()
}

/// `Any`: the value as YAML text (field 2).
fn any(v: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(2, &serde_json::to_string(v).unwrap_or_default());
    m
}

/// `NamedAny` entries for every `x-` key of an object (vendor extensions).
fn vendor_extensions(m: &mut Msg, field: u32, obj: &Value) {
    for (k, v) in obj.as_object().into_iter().flatten() {
        if k.starts_with("x-") {
            let mut named = Msg::default();
            named.string(1, k);
            named.message(2, any(v));
            m.message(field, named);
        }
    }
}

/// `openapi.v2.Schema`.
fn schema(s: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(1, str_of(s, "$ref"));
    m.string(2, str_of(s, "format"));
    m.string(3, str_of(s, "title"));
    m.string(4, str_of(s, "description"));
    if let Some(d) = s.get("default") {
        m.message(5, any(d));
    }
    m.double(6, float_of(s, "multipleOf"));
    m.double(7, float_of(s, "maximum"));
    m.boolean(8, bool_of(s, "exclusiveMaximum"));
    m.double(9, float_of(s, "minimum"));
    m.boolean(10, bool_of(s, "exclusiveMinimum"));
    m.int64(11, int_of(s, "maxLength"));
    m.int64(12, int_of(s, "minLength"));
    m.string(13, str_of(s, "pattern"));
    m.int64(14, int_of(s, "maxItems"));
    m.int64(15, int_of(s, "minItems"));
    m.boolean(16, bool_of(s, "uniqueItems"));
    m.int64(17, int_of(s, "maxProperties"));
    m.int64(18, int_of(s, "minProperties"));
    for r in s.get("required").and_then(Value::as_array).into_iter().flatten() {
        if let Some(r) = r.as_str() {
            m.bytes(19, r.as_bytes());
        }
    }
    for e in s.get("enum").and_then(Value::as_array).into_iter().flatten() {
        m.message(20, any(e));
    }
    match s.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            // A oneof member is written even with its default value.
            let mut item = Msg::default();
            item.tag(2, 0);
            item.varint(u64::from(*b));
            m.message(21, item);
        }
        Some(sub @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.message(1, schema(sub));
            m.message(21, item);
        }
        _ => {}
    }
    let types: Vec<&str> = match s.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let mut item = Msg::default();
        for t in types {
            item.bytes(1, t.as_bytes());
        }
        m.message(22, item);
    }
    match s.get("items") {
        Some(sub @ Value::Object(_)) => {
            let mut item = Msg::default();
            item.message(1, schema(sub));
            m.message(23, item);
        }
        Some(Value::Array(subs)) => {
            let mut item = Msg::default();
            for sub in subs {
                item.message(1, schema(sub));
            }
            m.message(23, item);
        }
        _ => {}
    }
    for sub in s.get("allOf").and_then(Value::as_array).into_iter().flatten() {
        m.message(24, schema(sub));
    }
    if let Some(props) = s.get("properties").and_then(Value::as_object) {
        m.message(25, named_schemas(props));
    }
    m.string(26, str_of(s, "discriminator"));
    m.boolean(27, bool_of(s, "readOnly"));
    if let Some(e) = s.get("example") {
        m.message(30, any(e));
    }
    vendor_extensions(&mut m, 31, s);
    m
}

/// `Properties` or `Definitions`: repeated `NamedSchema` in field 1.
fn named_schemas(map: &Map<String, Value>) -> Msg {
    let mut m = Msg::default();
    for (name, s) in map {
        let mut named = Msg::default();
        named.string(1, name);
        named.message(2, schema(s));
        m.message(1, named);
    }
    m
}

/// `ParametersItem` of a query or path parameter (`NonBodyParameter`), or a body parameter.
fn parameter(p: &Value) -> Msg {
    let mut param = Msg::default();
    match str_of(p, "in") {
        "body" => {
            let mut body = Msg::default();
            body.string(1, str_of(p, "description"));
            body.string(2, str_of(p, "name"));
            body.string(3, "body");
            body.boolean(4, bool_of(p, "required"));
            if let Some(s) = p.get("schema") {
                body.message(5, schema(s));
            }
            vendor_extensions(&mut body, 6, p);
            param.message(1, body);
        }
        place => {
            // Query and path sub-schemas share the leading fields; only the later numbers differ.
            let mut sub = Msg::default();
            sub.boolean(1, bool_of(p, "required"));
            sub.string(2, place);
            sub.string(3, str_of(p, "description"));
            sub.string(4, str_of(p, "name"));
            let (field, type_field, unique_field) = match place {
                "path" => (4, 5, 19),
                "header" => (1, 5, 19),
                "formData" => (2, 6, 20),
                _ => (3, 6, 20),
            };
            sub.string(type_field, str_of(p, "type"));
            sub.boolean(unique_field, bool_of(p, "uniqueItems"));
            let mut non_body = Msg::default();
            non_body.message(field, sub);
            param.message(2, non_body);
        }
    }
    let mut item = Msg::default();
    item.message(1, param);
    item
}

/// `Operation`.
fn operation(op: &Value) -> Msg {
    let mut m = Msg::default();
    m.string(3, str_of(op, "description"));
    m.string(5, str_of(op, "operationId"));
    for (field, key) in [(6, "produces"), (7, "consumes")] {
        for t in op.get(key).and_then(Value::as_array).into_iter().flatten() {
            if let Some(t) = t.as_str() {
                m.bytes(field, t.as_bytes());
            }
        }
    }
    for p in op
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(8, parameter(p));
    }
    if let Some(responses) = op.get("responses").and_then(Value::as_object) {
        let mut rs = Msg::default();
        for (code, r) in responses {
            let mut response = Msg::default();
            response.string(1, str_of(r, "description"));
            if let Some(s) = r.get("schema") {
                let mut item = Msg::default();
                item.message(1, schema(s));
                response.message(2, item);
            }
            let mut value = Msg::default();
            value.message(1, response);
            let mut named = Msg::default();
            named.string(1, code);
            named.message(2, value);
            rs.message(1, named);
        }
        m.message(9, rs);
    }
    vendor_extensions(&mut m, 13, op);
    m
}

/// `PathItem`.
fn path_item(item: &Value) -> Msg {
    let mut m = Msg::default();
    for (field, verb) in [
        (2, "get"),
        (3, "put"),
        (4, "post"),
        (5, "delete"),
        (6, "options"),
        (7, "head"),
        (8, "patch"),
    ] {
        if let Some(op) = item.get(verb) {
            m.message(field, operation(op));
        }
    }
    for p in item
        .get("parameters")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        m.message(9, parameter(p));
    }
    vendor_extensions(&mut m, 10, item);
    m
}

/// Encode a Swagger 2.0 JSON document as an `openapi.v2.Document`.
pub fn encode(doc: &Value) -> Vec<u8> {
    let mut m = Msg::default();
    m.string(1, str_of(doc, "swagger"));
    if let Some(info) = doc.get("info") {
        let mut i = Msg::default();
        i.string(1, str_of(info, "title"));
        i.string(2, str_of(info, "version"));
        i.string(3, str_of(info, "description"));
        m.message(2, i);
    }
    if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
        let mut ps = Msg::default();
        for (path, item) in paths {
            let mut named = Msg::default();
            named.string(1, path);
            named.message(2, path_item(item));
            ps.message(2, named);
        }
        m.message(8, ps);
    }
    if let Some(defs) = doc.get("definitions").and_then(Value::as_object) {
        m.message(9, named_schemas(defs));
    }
    vendor_extensions(&mut m, 16, doc);
    m.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Reads (field, wire type, payload) triples; payload is the bytes of length-delimited fields.
    fn fields(mut b: &[u8]) -> Vec<(u32, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let varint = |b: &mut &[u8]| {
            let mut v = 0u64;
            let mut shift = 0;
            loop {
                let byte = b[0];
                *b = &b[1..];
                v |= u64::from(byte & 0x7f) << shift;
                shift += 7;
                if byte & 0x80 == 0 {
                    return v;
                }
            }
        };
        while !b.is_empty() {
            let tag = varint(&mut b);
            let (field, wire) = ((tag >> 3) as u32, (tag & 7) as u8);
            match wire {
                0 => out.push((field, 0, varint(&mut b).to_le_bytes().to_vec())),
                1 => {
                    out.push((field, 1, b[..8].to_vec()));
                    b = &b[8..];
                }
                2 => {
                    let len = varint(&mut b) as usize;
                    out.push((field, 2, b[..len].to_vec()));
                    b = &b[len..];
                }
                w => panic!("wire type {w}"),
            }
        }
        out
    }

    fn field(b: &[u8], n: u32) -> Vec<Vec<u8>> {
        fields(b)
            .into_iter()
            .filter(|(f, _, _)| *f == n)
            .map(|(_, _, p)| p)
            .collect()
    }

    /// The payload of the first occurrence of field `n`.
    fn one(b: &[u8], n: u32) -> Vec<u8> {
        field(b, n).remove(0)
    }

    #[test]
    fn schema_fields_use_gnostic_numbers_and_wire_types() {
        let s = json!({"type": "object", "description": "d", "required": ["a"], "maximum": 2.5, "maxLength": 3,
            "additionalProperties": false, "properties": {"a": {"type": "array", "items": {"type": "string"}}},
            "x-kubernetes-preserve-unknown-fields": true, "enum": ["x"], "default": {"k": 1}});
        let b = schema(&s).0;
        let all = fields(&b);
        assert!(all
            .iter()
            .any(|(f, w, p)| *f == 7 && *w == 1 && p == &2.5f64.to_le_bytes().to_vec()));
        assert!(all.iter().any(|(f, w, _)| *f == 11 && *w == 0));
        assert_eq!(field(&b, 19), [b"a".to_vec()]);
        // type is a TypeItem message holding the strings.
        assert_eq!(field(&one(&b, 22), 1), [b"object".to_vec()]);
        // additionalProperties: false is the oneof's boolean member, written although false.
        assert_eq!(fields(&one(&b, 21)), [(2, 0, 0u64.to_le_bytes().to_vec())]);
        // properties -> NamedSchema{name, Schema{items: ItemsItem{schema}}}.
        let named = one(&one(&b, 25), 1);
        assert_eq!(field(&named, 1), [b"a".to_vec()]);
        let items = one(&one(&one(&named, 2), 23), 1);
        assert_eq!(field(&one(&items, 22), 1), [b"string".to_vec()]);
        // Free-form values are Any{yaml}.
        assert_eq!(field(&one(&b, 20), 2), [b"\"x\"".to_vec()]);
        assert_eq!(field(&one(&b, 5), 2), [b"{\"k\":1}".to_vec()]);
        let ext = one(&b, 31);
        assert_eq!(field(&ext, 1), [b"x-kubernetes-preserve-unknown-fields".to_vec()]);
        assert_eq!(field(&one(&ext, 2), 2), [b"true".to_vec()]);
    }

    #[test]
    fn long_documents_use_multi_byte_lengths() {
        let long = "x".repeat(300);
        let doc = json!({"swagger": "2.0", "definitions": {"a": {"description": long}}});
        let b = encode(&doc);
        let s = one(&one(&one(&b, 9), 1), 2);
        assert_eq!(field(&s, 4), [long.into_bytes()]);
    }
}
