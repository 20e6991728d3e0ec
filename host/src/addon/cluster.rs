//! Cluster API Clusters as the addon controller reads them: the `cluster.x-k8s.io` Cluster is read
//! through v1beta1 (what Cluster Stacks' ClusterClasses and upstream use) and both shapes are understood,
//! `spec.topology.class` (v1beta1) and `spec.topology.classRef.name` (v1beta2), object references with
//! `apiVersion` (v1beta1) or `apiGroup` (v1beta2).

use kube::api::{Api, ApiResource, DynamicObject};
use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use serde_json::Value;

/// Group of Cluster API core kinds.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// Version the addon controller reads Clusters in.
pub const CAPI_VERSION: &str = "v1beta1";

/// The `Cluster` kind.
pub fn cluster_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CAPI_GROUP, CAPI_VERSION, "Cluster"),
        "clusters",
    )
}

/// Clusters in one namespace.
pub fn clusters(client: kube::Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client, namespace, &cluster_resource())
}

/// The Cluster's ClusterClass name (dot form), if it has a managed topology.
pub fn topology_class(cluster: &Value) -> Option<&str> {
    let topology = &cluster["spec"]["topology"];
    topology["class"]
        .as_str()
        .or_else(|| topology["classRef"]["name"].as_str())
        .filter(|c| !c.is_empty())
}

/// The Cluster's `spec.topology.version` (Kubernetes version), if it has a managed topology.
pub fn topology_version(cluster: &Value) -> Option<&str> {
    cluster["spec"]["topology"]["version"]
        .as_str()
        .filter(|v| !v.is_empty())
}

/// Name of the Secret holding the workload kubeconfig (Cluster API's `secret.Kubeconfig` suffix).
pub fn kubeconfig_secret_name(cluster: &str) -> String {
    format!("{cluster}-kubeconfig")
}

/// Reads the object a Cluster references at `field` (`controlPlaneRef`, `infrastructureRef`) in the
/// Cluster's namespace; `Ok(None)` when the reference is not set.
pub async fn referenced_object(
    client: &kube::Client,
    cluster: &Value,
    field: &str,
) -> Result<Option<Value>, String> {
    let reference = &cluster["spec"][field];
    let (Some(kind), Some(name)) = (reference["kind"].as_str(), reference["name"].as_str()) else {
        return Ok(None);
    };
    let namespace = reference["namespace"]
        .as_str()
        .or_else(|| cluster["metadata"]["namespace"].as_str())
        .unwrap_or("default");
    let resource = match reference["apiVersion"].as_str() {
        Some(api_version) => {
            let (group, version) = crate::apply::split_api_version(api_version);
            resolve(client, group, Some(version), kind).await?
        }
        None => {
            let group = reference["apiGroup"].as_str().unwrap_or_default();
            resolve(client, group, None, kind).await?
        }
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource);
    let object = api
        .get(name)
        .await
        .map_err(|e| format!("{kind} {namespace}/{name}: {e}"))?;
    serde_json::to_value(object).map(Some).map_err(|e| e.to_string())
}

/// The resource of `group`/`kind` in `version`, or in the group's preferred version.
async fn resolve(
    client: &kube::Client,
    group: &str,
    version: Option<&str>,
    kind: &str,
) -> Result<ApiResource, String> {
    let discovery = Discovery::new(client.clone())
        .filter(&[group])
        .run()
        .await
        .map_err(|e| format!("discovery of {group}: {e}"))?;
    let api_group = discovery
        .groups()
        .find(|g| g.name() == group)
        .ok_or_else(|| format!("the API group {group:?} of {kind} is not served"))?;
    let found = match version {
        Some(v) => api_group
            .versioned_resources(v)
            .into_iter()
            .find(|(r, _)| r.kind == kind),
        // Per kind its most stable version: a kind need not be served in its group's preferred version.
        None => api_group
            .resources_by_stability()
            .into_iter()
            .find(|(r, _)| r.kind == kind),
    };
    found
        .map(|(r, _)| r)
        .ok_or_else(|| format!("{kind} is not served in {group}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn class_from_either_api_version() {
        let v1beta1 = json!({"spec": {"topology": {"class": "docker-ferrol-1-32-v1", "version": "v1.32.2"}}});
        let v1beta2 = json!({"spec": {"topology": {"classRef": {"name": "docker-ferrol-1-32-v2"}}}});
        assert_eq!(topology_class(&v1beta1), Some("docker-ferrol-1-32-v1"));
        assert_eq!(topology_version(&v1beta1), Some("v1.32.2"));
        assert_eq!(topology_class(&v1beta2), Some("docker-ferrol-1-32-v2"));
        assert_eq!(topology_class(&json!({"spec": {}})), None);
        assert_eq!(
            topology_class(&json!({"spec": {"topology": {"class": ""}}})),
            None
        );
    }
}
