//! Discovery documents: `/version`, `/api`, `/apis`, group and group-version resource lists, and the aggregated
//! discovery (`apidiscovery.k8s.io/v2`) that kubectl 1.32 asks for first.

use serde_json::{json, Value};

use crate::resource::{Registry, ResourceType};

/// The Kubernetes version the emulator reports.
pub fn version() -> Value {
    json!({
        "major": "1", "minor": "32", "gitVersion": "v1.32.0-kube-emulator", "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64",
    })
}

/// `/api`.
pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]})
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": vs, "preferredVersion": vs.first().cloned().unwrap_or(Value::Null)})
}

/// `/apis`.
pub fn api_groups(reg: &Registry) -> Value {
    let groups: Vec<Value> = reg
        .groups()
        .into_iter()
        .filter(|(g, _)| !g.is_empty())
        .map(|(g, vs)| group_doc(&g, &vs))
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/<group>`.
pub fn api_group(reg: &Registry, group: &str) -> Option<Value> {
    reg.groups().into_iter().find(|(g, _)| g == group).map(|(g, vs)| {
        let mut d = group_doc(&g, &vs);
        d["kind"] = json!("APIGroup");
        d["apiVersion"] = json!("v1");
        d
    })
}

fn types_in<'a>(
    reg: &'a Registry,
    group: &'a str,
    version: &'a str,
) -> impl Iterator<Item = &'a std::sync::Arc<ResourceType>> + 'a {
    reg.all()
        .filter(move |t| t.group == group && t.version(version).is_some())
}

/// `/api/v1` or `/apis/<group>/<version>`.
pub fn resource_list(reg: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for t in types_in(reg, group, version) {
        let mut r = json!({
            "name": t.plural, "singularName": t.singular, "namespaced": t.namespaced, "kind": t.kind, "verbs": t.verbs(),
            "storageVersionHash": format!("{:x}", fxhash(&format!("{}/{}/{}", t.group, t.storage_version, t.plural))),
        });
        if !t.short_names.is_empty() {
            r["shortNames"] = json!(t.short_names);
        }
        if !t.categories.is_empty() {
            r["categories"] = json!(t.categories);
        }
        resources.push(r);
        if t.version(version).is_some_and(|v| v.status_subresource) {
            resources.push(json!({"name": format!("{}/status", t.plural), "singularName": "", "namespaced": t.namespaced, "kind": t.kind, "verbs": ["get", "patch", "update"]}));
        }
        if t.version(version).is_some_and(|v| v.scale.is_some()) {
            resources.push(json!({"name": format!("{}/scale", t.plural), "singularName": "", "namespaced": t.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}))
}

fn fxhash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Aggregated discovery for `/api` (core = true) or `/apis`.
pub fn aggregated(reg: &Registry, core: bool) -> Value {
    let mut items = Vec::new();
    for (group, versions) in reg.groups() {
        if group.is_empty() != core {
            continue;
        }
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| {
                let resources: Vec<Value> = types_in(reg, &group, v)
                    .map(|t| {
                        let mut r = json!({
                            "resource": t.plural, "responseKind": {"group": t.group, "version": v, "kind": t.kind},
                            "scope": if t.namespaced { "Namespaced" } else { "Cluster" }, "singularResource": t.singular, "verbs": t.verbs(),
                        });
                        if !t.short_names.is_empty() {
                            r["shortNames"] = json!(t.short_names);
                        }
                        if !t.categories.is_empty() {
                            r["categories"] = json!(t.categories);
                        }
                        let mut subs = Vec::new();
                        if t.version(v).is_some_and(|x| x.status_subresource) {
                            subs.push(json!({"subresource": "status", "responseKind": {"group": t.group, "version": v, "kind": t.kind}, "verbs": ["get", "patch", "update"]}));
                        }
                        if t.version(v).is_some_and(|x| x.scale.is_some()) {
                            subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
                        }
                        if !subs.is_empty() {
                            r["subresources"] = json!(subs);
                        }
                        r
                    })
                    .collect();
                json!({"version": v, "resources": resources, "freshness": "Current"})
            })
            .collect();
        let mut item = json!({"metadata": {"creationTimestamp": null}, "versions": vs});
        if !group.is_empty() {
            item["metadata"]["name"] = json!(group);
        }
        items.push(item);
    }
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_resources_have_short_names_and_status() {
        let reg = Registry::new();
        let list = resource_list(&reg, "", "v1").expect("succeeds");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .map(|a| a.iter().filter_map(|r| r["name"].as_str()).collect())
            .expect("succeeds");
        assert!(
            names.contains(&"configmaps") && names.contains(&"namespaces/status"),
            "{names:?}"
        );
        let agg = aggregated(&reg, false);
        assert!(agg["items"]
            .as_array()
            .is_some_and(|i| i.iter().any(|g| g["metadata"]["name"] == "coordination.k8s.io")));
    }
}
