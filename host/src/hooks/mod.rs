//! The Cluster API runtime-extension server (cso-behaviour.md §2.5): HTTPS, the Runtime SDK's
//! discovery and three lifecycle hooks with the request and response JSON of
//! `hooks.runtime.cluster.x-k8s.io/v1alpha1`, and the `ExtensionConfig` that registers it.
//!
//! - `AfterControlPlaneInitialized` (non-blocking): marks the ClusterAddon's `spec.hook`, which wakes its
//!   reconcile.
//! - `BeforeClusterUpgrade` (blocking): answers `retryAfterSeconds` until the ClusterAddon has applied the
//!   addons of the Cluster's class (`spec.clusterStack` equals the class and `status.ready`).
//! - `AfterClusterUpgrade`: logged.
//!
//! Unlike upstream the server keeps no memory between requests (upstream's record of patched hooks was
//! lost on restart, quirk 10): every answer is computed from the ClusterAddon, so any replica can answer.

pub mod admission;
pub mod client;
pub mod server;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};

use crate::addon::{
    cluster::topology_class, cluster_addon_name, HOOK_AFTER_CONTROL_PLANE_INITIALIZED,
    HOOK_BEFORE_CLUSTER_UPGRADE,
};
use crate::api::ClusterAddon;

pub use server::{start, HooksConfig, HooksError, HooksServer};

/// API version of hook requests and responses.
pub const HOOKS_API_VERSION: &str = "hooks.runtime.cluster.x-k8s.io/v1alpha1";
/// API group of hook requests and responses.
pub const HOOKS_GROUP: &str = "hooks.runtime.cluster.x-k8s.io";
/// The hook after the control plane answers.
pub const HOOK_AFTER_CLUSTER_UPGRADE: &str = "AfterClusterUpgrade";

/// The hooks served: (hook, handler name), upstream's handler names.
pub const HANDLERS: [(&str, &str); 3] = [
    (HOOK_BEFORE_CLUSTER_UPGRADE, "before-cluster-upgrade"),
    (
        HOOK_AFTER_CONTROL_PLANE_INITIALIZED,
        "after-control-plane-initialized",
    ),
    (HOOK_AFTER_CLUSTER_UPGRADE, "after-cluster-upgrade"),
];

/// Cluster API's `GVHToPath`: `/hooks.runtime.cluster.x-k8s.io/v1alpha1/<lowercased hook>/<handler>`.
pub fn handler_path(hook: &str, handler: &str) -> String {
    format!("/{HOOKS_API_VERSION}/{}/{handler}", hook.to_lowercase())
}

/// Path of the discovery endpoint.
pub fn discovery_path() -> String {
    format!("/{HOOKS_API_VERSION}/discovery")
}

/// The `DiscoveryResponse`: every handler with its hook, a 10 s timeout and failure policy `Fail`.
pub fn discovery_response() -> Value {
    let handlers: Vec<Value> = HANDLERS
        .iter()
        .map(|(hook, name)| {
            json!({
                "name": name,
                "requestHook": {"apiVersion": HOOKS_API_VERSION, "hook": hook},
                "timeoutSeconds": 10,
                "failurePolicy": "Fail",
            })
        })
        .collect();
    json!({
        "apiVersion": HOOKS_API_VERSION,
        "kind": "DiscoveryResponse",
        "status": "Success",
        "handlers": handlers,
    })
}

/// A hook response: `Success` or `Failure` with a message; `retryAfterSeconds` for blocking hooks.
pub fn response(hook: &str, failure: Option<String>, retry_after: Option<i64>) -> Value {
    let mut r = json!({
        "apiVersion": HOOKS_API_VERSION,
        "kind": format!("{hook}Response"),
        "status": if failure.is_some() { "Failure" } else { "Success" },
    });
    if let Some(message) = failure {
        r["message"] = json!(message);
    }
    if let Some(seconds) = retry_after {
        r["retryAfterSeconds"] = json!(seconds);
    }
    r
}

/// Checks a request's `apiVersion`, `kind` and `cluster`; returns the Cluster's namespace and name.
fn request_cluster(hook: &str, request: &Value) -> Result<(String, String), String> {
    if request["apiVersion"] != HOOKS_API_VERSION || request["kind"] != format!("{hook}Request") {
        return Err(format!(
            "expected a {hook}Request of {HOOKS_API_VERSION}, got kind {} of {}",
            request["kind"], request["apiVersion"]
        ));
    }
    let meta = &request["cluster"]["metadata"];
    match (meta["namespace"].as_str(), meta["name"].as_str()) {
        (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => Ok((ns.to_owned(), name.to_owned())),
        _ => Err(format!(
            "the {hook}Request has no cluster.metadata.name and namespace"
        )),
    }
}

/// Answers one hook request (the JSON body of the POST).
pub async fn handle(client: &kube::Client, hook: &str, request: &Value, retry_after: i64) -> Value {
    let (ns, name) = match request_cluster(hook, request) {
        Ok(c) => c,
        Err(e) => return response(hook, Some(e), None),
    };
    let blocking = hook == HOOK_BEFORE_CLUSTER_UPGRADE;
    if hook == HOOK_AFTER_CLUSTER_UPGRADE {
        tracing::info!(cluster = %format!("{ns}/{name}"), "cluster upgrade finished");
        return response(hook, None, Some(0));
    }
    let addons: Api<ClusterAddon> = Api::namespaced(client.clone(), &ns);
    let addon_name = cluster_addon_name(&name);
    let addon = match addons.get_opt(&addon_name).await {
        Ok(Some(a)) => a,
        Ok(None) if !blocking => return response(hook, None, None),
        Ok(None) => {
            // Created by the controller as soon as it sees the Cluster; until then, wait.
            return response(hook, None, Some(retry_after));
        }
        Err(e) => {
            return response(
                hook,
                Some(format!("cannot read ClusterAddon {ns}/{addon_name}: {e}")),
                blocking.then_some(retry_after),
            )
        }
    };
    let class = topology_class(&request["cluster"]).unwrap_or_default();
    let status = addon.status.clone().unwrap_or_default();
    let applied =
        addon.spec.cluster_stack == class && status.ready && status.applying_cluster_stack.is_empty();
    if applied {
        return response(hook, None, blocking.then_some(0));
    }
    if addon.spec.hook != hook && (blocking || addon.spec.cluster_stack.is_empty()) {
        // Wakes the ClusterAddon's reconcile and shows which hook waits for it.
        let patch = json!({"spec": {"hook": hook}});
        if let Err(e) = addons
            .patch(&addon_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            return response(
                hook,
                Some(format!("cannot mark ClusterAddon {ns}/{addon_name}: {e}")),
                blocking.then_some(retry_after),
            );
        }
    }
    tracing::info!(cluster = %format!("{ns}/{name}"), hook, class, "addons not applied yet");
    response(hook, None, blocking.then_some(retry_after))
}

/// Where Cluster API reaches the hook server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Service in the management cluster (the usual deployment).
    Service {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
        /// Port.
        port: u16,
    },
    /// A URL (the sandbox, or a server outside the cluster).
    Url(String),
}

/// The `ExtensionConfig` (`runtime.cluster.x-k8s.io/v1alpha1`) that registers the server with Cluster
/// API, for every namespace, trusting `ca_pem`.
pub fn extension_config(name: &str, endpoint: &Endpoint, ca_pem: &str) -> Value {
    use base64::Engine as _;
    let mut client_config = json!({
        "caBundle": base64::engine::general_purpose::STANDARD.encode(ca_pem),
    });
    match endpoint {
        Endpoint::Service {
            namespace,
            name,
            port,
        } => {
            client_config["service"] = json!({"namespace": namespace, "name": name, "port": port});
        }
        Endpoint::Url(url) => client_config["url"] = json!(url),
    }
    json!({
        "apiVersion": "runtime.cluster.x-k8s.io/v1alpha1",
        "kind": "ExtensionConfig",
        "metadata": {"name": name},
        "spec": {
            "clientConfig": client_config,
            "namespaceSelector": {},
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_gvh_to_path() {
        assert_eq!(
            handler_path("BeforeClusterUpgrade", "before-cluster-upgrade"),
            "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterupgrade/before-cluster-upgrade"
        );
        assert_eq!(
            discovery_path(),
            "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery"
        );
    }

    #[test]
    fn wrong_request_kind_is_a_failure_response() {
        let req = json!({"apiVersion": HOOKS_API_VERSION, "kind": "AfterClusterUpgradeRequest",
                         "cluster": {"metadata": {"name": "c", "namespace": "n"}}});
        let err = request_cluster("BeforeClusterUpgrade", &req).expect_err("an error");
        assert!(err.contains("expected a BeforeClusterUpgradeRequest"), "{err}");
        let r = response("BeforeClusterUpgrade", Some(err), Some(10));
        assert_eq!(r["kind"], "BeforeClusterUpgradeResponse");
        assert_eq!(r["status"], "Failure");
        assert_eq!(r["retryAfterSeconds"], 10);
    }
}
