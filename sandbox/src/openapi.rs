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

/// `/openapi/v2`: a minimal Swagger 2.0 document with one definition per kind.
pub fn v2(reg: &Registry) -> Value {
    let mut defs = Map::new();
    // Built-in kinds are left out on purpose: kubectl then uses its compiled-in types for strategic merge.
    for t in reg.all().filter(|t| t.builtin.is_none()) {
        for v in &t.versions {
            defs.insert(definition_name(t, &v.name), object_schema(t, &v.name));
        }
    }
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.32.0"}, "paths": {}, "definitions": defs})
}
