//! OpenAPI documents: enough of v3 (and a v2 stub) for `kubectl apply` to use server-side field validation, and
//! for `kubectl explain` on custom resources.

use serde_json::{json, Map, Value};

use crate::resource::{Registry, ResourceType};

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// `/openapi/v3`: the list of group-version documents.
pub fn v3_root(reg: &Registry) -> Value {
    let mut paths = Map::new();
    for (group, versions) in reg.groups() {
        for v in versions {
            let p = gv_path(&group, &v);
            // The hash changes whenever the group-version's schemas do, so kubectl's cache stays fresh.
            let doc = v3_group_version(reg, &group, &v).to_string();
            let hash = doc.bytes().fold(0xcbf29ce484222325u64, |h, b| {
                (h ^ b as u64).wrapping_mul(0x100000001b3)
            });
            paths.insert(
                p.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash:016X}")}),
            );
        }
    }
    json!({"paths": paths})
}

fn reverse_domain(group: &str) -> String {
    if group.is_empty() {
        return "io.k8s.api.core".into();
    }
    let mut parts: Vec<&str> = group.split('.').collect();
    parts.reverse();
    parts.join(".")
}

/// The schema name of a kind.
pub fn definition_name(t: &ResourceType, version: &str) -> String {
    format!("{}.{}.{}", reverse_domain(&t.group), version, t.kind)
}

fn object_schema(t: &ResourceType, version: &str) -> Value {
    let gvk = json!([{"group": t.group, "version": version, "kind": t.kind}]);
    let mut schema = match t.version(version).and_then(|v| v.schema.as_deref()) {
        Some(s) => s.clone(),
        None => {
            json!({"type": "object", "description": format!("{} is a built-in kind served by the emulator.", t.kind), "x-kubernetes-preserve-unknown-fields": true})
        }
    };
    if let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) {
        props.entry("apiVersion").or_insert(json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
        props.entry("kind").or_insert(json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
        props.insert("metadata".into(), json!({"type": "object", "description": "Standard object's metadata.", "x-kubernetes-preserve-unknown-fields": true}));
    }
    schema["x-kubernetes-group-version-kind"] = gvk;
    schema
}

/// `/openapi/v3/apis/<group>/<version>` (or `api/v1`).
pub fn v3_group_version(reg: &Registry, group: &str, version: &str) -> Value {
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for t in reg
        .all()
        .filter(|t| t.group == group && t.version(version).is_some())
    {
        let def = definition_name(t, version);
        let prefix = if group.is_empty() {
            format!("/api/{version}")
        } else {
            format!("/apis/{group}/{version}")
        };
        let path = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        let gvk = json!({"group": t.group, "version": version, "kind": t.kind});
        let reference = json!({"$ref": format!("#/components/schemas/{def}")});
        let params = json!([
            {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
            {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
        ]);
        paths.insert(
            path,
            json!({
                "get": {"operationId": format!("read{}", t.kind), "x-kubernetes-action": "get", "x-kubernetes-group-version-kind": gvk,
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}}},
                "put": {"operationId": format!("replace{}", t.kind), "x-kubernetes-action": "put", "x-kubernetes-group-version-kind": gvk, "parameters": params,
                        "requestBody": {"content": {"*/*": {"schema": reference}}, "required": true},
                        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}}},
                "patch": {"operationId": format!("patch{}", t.kind), "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk, "parameters": params,
                          "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}}},
                "parameters": [{"name": "name", "in": "path", "required": true, "schema": {"type": "string", "uniqueItems": true}}],
            }),
        );
        schemas.insert(def, object_schema(t, version));
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

/// A CRD's OpenAPI v3 schema as the real server publishes it in v2 (apiextensions' `ToStructuralOpenAPIV2`):
/// v2 has no `anyOf`/`oneOf`/`not` and no `nullable`, and kubectl's v2 model rejects an array without
/// `items` or an object that lists properties it may not check. So junctors go, a nullable value loses its
/// type, a value that keeps unknown fields loses its properties and items, and a nullable property is no
/// longer required.
pub fn to_v2(schema: &Value) -> Value {
    let Some(obj) = schema.as_object() else {
        return schema.clone();
    };
    let mut out = Map::new();
    for (k, v) in obj {
        let v = match k.as_str() {
            "allOf" | "anyOf" | "oneOf" | "not" | "nullable" => continue,
            "properties" => match v.as_object() {
                Some(props) => {
                    Value::Object(props.iter().map(|(name, p)| (name.clone(), to_v2(p))).collect())
                }
                None => continue,
            },
            "items" | "additionalProperties" if v.is_object() => to_v2(v),
            _ => v.clone(),
        };
        out.insert(k.clone(), v);
    }
    let flag = |key: &str| obj.get(key).and_then(Value::as_bool) == Some(true);
    if flag("nullable") {
        for k in ["type", "items", "properties"] {
            out.remove(k);
        }
    }
    if flag("x-kubernetes-preserve-unknown-fields") {
        out.remove("items");
        out.remove("properties");
    }
    if out.get("type").and_then(Value::as_str) == Some("array") && !out.contains_key("items") {
        out.remove("type");
    }
    let nullable = |s: &Value| s.get("nullable").and_then(Value::as_bool) == Some(true);
    if obj.get("additionalProperties").is_some_and(nullable) {
        out.remove("required");
    } else if let (Some(Value::Array(required)), Some(props)) = (
        out.get("required").cloned(),
        obj.get("properties").and_then(Value::as_object),
    ) {
        let kept: Vec<Value> = required
            .into_iter()
            .filter(|r| !r.as_str().and_then(|n| props.get(n)).is_some_and(nullable))
            .collect();
        out.insert("required".into(), Value::Array(kept));
    }
    Value::Object(out)
}

/// `/openapi/v2`: a Swagger 2.0 document with a PATCH path per kind (so kubectl sees `fieldValidation` there
/// too) and one definition per custom resource version. Built-in kinds get no definition on purpose: kubectl
/// then computes strategic merge patches from its compiled-in types, as it must for them.
pub fn v2(reg: &Registry) -> Value {
    let mut defs = Map::new();
    let mut paths = Map::new();
    for t in reg.all() {
        for v in &t.versions {
            let def = definition_name(t, &v.name);
            let gvk = json!({"group": t.group, "version": v.name, "kind": t.kind});
            let mut params =
                vec![json!({"name": "body", "in": "body", "required": true, "schema": {"type": "object"}})];
            for (name, ty) in [
                ("dryRun", "string"),
                ("fieldManager", "string"),
                ("fieldValidation", "string"),
                ("force", "boolean"),
            ] {
                params.push(json!({"name": name, "in": "query", "type": ty, "uniqueItems": true}));
            }
            let prefix = if t.group.is_empty() {
                format!("/api/{}", v.name)
            } else {
                format!("/apis/{}/{}", t.group, v.name)
            };
            let path = if t.namespaced {
                format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
            } else {
                format!("{prefix}/{}/{{name}}", t.plural)
            };
            let mut response = json!({"description": "OK"});
            if t.builtin.is_none() {
                response["schema"] = json!({"$ref": format!("#/definitions/{def}")});
                defs.insert(def, to_v2(&object_schema(t, &v.name)));
            }
            paths.insert(
                path,
                json!({
                    "patch": {
                        "operationId": format!("patch{}", t.kind),
                        "consumes": ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"],
                        "produces": ["application/json"],
                        "parameters": params,
                        "responses": {"200": response},
                        "x-kubernetes-action": "patch",
                        "x-kubernetes-group-version-kind": gvk,
                    },
                    "parameters": [{"name": "name", "in": "path", "required": true, "type": "string", "uniqueItems": true}],
                }),
            );
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": paths, "definitions": defs})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v2_schemas_drop_what_kubectl_cannot_model() {
        let v3 = json!({"type": "object", "required": ["a", "n"], "properties": {
            "a": {"type": "array", "x-kubernetes-preserve-unknown-fields": true, "items": {"type": "string"}},
            "n": {"type": "object", "nullable": true, "properties": {"x": {"type": "string"}}},
            "u": {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": true},
            "k": {"type": "object", "x-kubernetes-preserve-unknown-fields": true, "properties": {"y": {"type": "string"}}},
        }});
        let v2 = to_v2(&v3);
        assert_eq!(
            v2,
            json!({"type": "object", "required": ["a"], "properties": {
                "a": {"x-kubernetes-preserve-unknown-fields": true},
                "n": {},
                "u": {"x-kubernetes-int-or-string": true},
                "k": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            }})
        );
    }
}
