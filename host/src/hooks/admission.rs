//! The validating webhook (the guard rails the Cluster Stack Operator had), served next to the runtime
//! hooks on every replica:
//!
//! - `/validate-cluster` (Cluster API Clusters, create and update): a Cluster whose class is a cluster
//!   stack release (`<provider>-<stack>-<major>-<minor>-<version>`) needs that ClusterStackRelease in its
//!   namespace, Ready, with `spec.topology.version` equal to the release's Kubernetes version; an update
//!   that changes the class or version keeps the provider and stack and moves Kubernetes forward by at
//!   most one minor version (other updates pass). Clusters of other classes pass.
//! - `/validate-clusterstack` (ClusterStacks, delete): refused while a Cluster in the namespace uses a
//!   class of the stack.

use kube::api::Api;
use serde_json::{json, Value};

use crate::api::ClusterStackRelease;
use crate::controller::cluster_stack::{class_of, clusters_with_class};
use crate::release::{KubernetesVersion, ReleaseName};

/// The path of the Cluster check.
pub const CLUSTER_PATH: &str = "/validate-cluster";
/// The path of the ClusterStack check.
pub const CLUSTER_STACK_PATH: &str = "/validate-clusterstack";

/// The AdmissionReview answering `review`: allowed, or refused with `why` (HTTP 403 in the status, as
/// controller-runtime's webhooks answer).
pub fn response(review: &Value, verdict: Result<(), String>) -> Value {
    let uid = review["request"]["uid"].clone();
    let answer = match verdict {
        Ok(()) => json!({"uid": uid, "allowed": true}),
        Err(why) => json!({"uid": uid, "allowed": false,
                           "status": {"code": 403, "reason": "Forbidden", "message": why}}),
    };
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": answer})
}

/// Checks a Cluster being created or updated (`review.request`).
pub async fn check_cluster(client: &kube::Client, review: &Value) -> Result<(), String> {
    let request = &review["request"];
    let cluster = &request["object"];
    let Some(class) = class_of(cluster) else {
        return Ok(());
    };
    let Ok(release) = ReleaseName::parse_class(class) else {
        return Ok(());
    };
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let name = cluster["metadata"]["name"].as_str().unwrap_or_default();
    let tag = release.tag();
    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), namespace);
    let found = releases.get_opt(&tag).await.map_err(|e| {
        format!("cannot read ClusterStackRelease {namespace}/{tag} to check Cluster {name}: {e}")
    })?;
    let old = request["oldObject"].is_object().then(|| &request["oldObject"]);
    cluster_rules(namespace, name, cluster, old, &release, found.as_ref())
}

/// The rules of [`check_cluster`], given the release the Cluster's class names (if it exists).
fn cluster_rules(
    namespace: &str,
    name: &str,
    cluster: &Value,
    old: Option<&Value>,
    release: &ReleaseName,
    found: Option<&ClusterStackRelease>,
) -> Result<(), String> {
    let tag = release.tag();
    let version_of = |c: &Value| c["spec"]["topology"]["version"].clone();
    if old.is_some_and(|old| class_of(old) == class_of(cluster) && version_of(old) == version_of(cluster)) {
        // Updates that leave the topology alone (finalizers, labels, Cluster API's own writes) pass,
        // also while the release is not Ready.
        return Ok(());
    }
    let Some(csr) = found else {
        return Err(format!(
            "Cluster {namespace}/{name}: spec.topology class {} is a release of cluster stack {}/{} that \
             namespace {namespace} does not have: list version {} in a ClusterStack there first",
            release.class_name(),
            release.provider,
            release.name,
            release.version.dot(),
        ));
    };
    let status = csr.status.clone().unwrap_or_default();
    if !status.ready {
        let why = crate::api::condition::find(&status.conditions, crate::api::condition::READY)
            .and_then(|c| c.message.clone())
            .unwrap_or_else(|| "no status yet".to_owned());
        return Err(format!(
            "Cluster {namespace}/{name}: ClusterStackRelease {namespace}/{tag} is not ready ({why}); \
             create the Cluster once it is"
        ));
    }
    let wanted = status.kubernetes_version.unwrap_or_default();
    let version = cluster["spec"]["topology"]["version"]
        .as_str()
        .unwrap_or_default();
    if version.trim_start_matches('v') != wanted.trim_start_matches('v') {
        return Err(format!(
            "Cluster {namespace}/{name}: spec.topology.version {version:?} is not the Kubernetes version of \
             release {tag}; set it to {wanted:?}"
        ));
    }
    let Some(before) = old
        .and_then(class_of)
        .and_then(|c| ReleaseName::parse_class(c).ok())
    else {
        return Ok(());
    };
    if before.provider != release.provider || before.name != release.name {
        return Err(format!(
            "Cluster {namespace}/{name}: the class would move the Cluster from cluster stack {}/{} to {}/{}; \
             a Cluster stays with its provider and stack (create a new Cluster for another)",
            before.provider, before.name, release.provider, release.name
        ));
    }
    minor_step(&before.kubernetes, &release.kubernetes)
        .map_err(|why| format!("Cluster {namespace}/{name}: {why}"))
}

/// A Kubernetes upgrade moves one minor version at a time and never back.
fn minor_step(from: &KubernetesVersion, to: &KubernetesVersion) -> Result<(), String> {
    if from.major == to.major && (to.minor == from.minor || to.minor == from.minor + 1) {
        return Ok(());
    }
    if (to.major, to.minor) < (from.major, from.minor) {
        return Err(format!(
            "Kubernetes {from} cannot go back to {to}; downgrades are not supported"
        ));
    }
    Err(format!(
        "Kubernetes {from} cannot go to {to} in one step; upgrade one minor version at a time ({from} -> {}.{})",
        from.major,
        from.minor + 1
    ))
}

/// Checks a ClusterStack being deleted (`review.request.oldObject`).
pub async fn check_cluster_stack(client: &kube::Client, review: &Value) -> Result<(), String> {
    let request = &review["request"];
    if request["operation"] != "DELETE" {
        return Ok(());
    }
    let stack = &request["oldObject"];
    let namespace = request["namespace"].as_str().unwrap_or_default();
    let clusters = clusters_with_class(client, namespace)
        .await
        .map_err(|e| format!("cannot list the Clusters of namespace {namespace}: {e}"))?;
    stack_rules(namespace, stack, &clusters)
}

/// The rule of [`check_cluster_stack`], given the Clusters of the namespace as `(name, class)`.
fn stack_rules(namespace: &str, stack: &Value, clusters: &[(String, String)]) -> Result<(), String> {
    let spec = &stack["spec"];
    let name = stack["metadata"]["name"].as_str().unwrap_or_default();
    let kubernetes = spec["kubernetesVersion"]
        .as_str()
        .and_then(|v| KubernetesVersion::parse_dot(v).ok());
    let users: Vec<&str> = clusters
        .iter()
        .filter(|(_, class)| {
            ReleaseName::parse_class(class).is_ok_and(|r| {
                spec["provider"] == r.provider.as_str()
                    && spec["name"] == r.name.as_str()
                    && kubernetes.as_ref() == Some(&r.kubernetes)
            })
        })
        .map(|(cluster, _)| cluster.as_str())
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    Err(format!(
        "ClusterStack {namespace}/{name} is in use by Cluster(s) {}; delete them or move them to another \
         cluster stack first",
        users.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(class: &str, version: &str) -> Value {
        json!({"metadata": {"name": "c1"}, "spec": {"topology": {"class": class, "version": version}}})
    }

    fn ready_release(tag: &str, kubernetes: &str, ready: bool) -> ClusterStackRelease {
        serde_json::from_value(json!({
            "apiVersion": "clusterstack.x-k8s.io/v1alpha1", "kind": "ClusterStackRelease",
            "metadata": {"name": tag, "namespace": "ns"},
            "spec": {},
            "status": {"ready": ready, "kubernetesVersion": kubernetes},
        }))
        .expect("a release")
    }

    fn check(new: &Value, old: Option<&Value>, found: Option<&ClusterStackRelease>) -> Result<(), String> {
        let release = ReleaseName::parse_class(class_of(new).expect("class")).expect("release class");
        cluster_rules("ns", "c1", new, old, &release, found)
    }

    #[test]
    fn clusters_need_their_ready_release_and_its_kubernetes_version() {
        let release = ready_release("docker-ferrol-1-32-v2", "v1.32.2", true);
        let good = cluster("docker-ferrol-1-32-v2", "v1.32.2");
        assert_eq!(check(&good, None, Some(&release)), Ok(()));
        let err = check(&good, None, None).expect_err("no release");
        assert!(
            err.contains("namespace ns does not have: list version v2 in a ClusterStack"),
            "{err}"
        );
        let err = check(
            &good,
            None,
            Some(&ready_release("docker-ferrol-1-32-v2", "v1.32.2", false)),
        )
        .expect_err("not ready");
        assert!(
            err.contains("is not ready (no status yet); create the Cluster once it is"),
            "{err}"
        );
        let err =
            check(&cluster("docker-ferrol-1-32-v2", "v1.32.1"), None, Some(&release)).expect_err("version");
        assert!(
            err.ends_with(
                "is not the Kubernetes version of release docker-ferrol-1-32-v2; set it to \"v1.32.2\""
            ),
            "{err}"
        );
    }

    #[test]
    fn updates_keep_the_stack_and_move_one_minor_forward() {
        let next = ready_release("docker-ferrol-1-33-v1", "v1.33.1", true);
        let new = cluster("docker-ferrol-1-33-v1", "v1.33.1");
        assert_eq!(
            check(
                &new,
                Some(&cluster("docker-ferrol-1-32-v2", "v1.32.2")),
                Some(&next)
            ),
            Ok(())
        );
        // An update that leaves class and version alone passes, even with the release gone.
        assert_eq!(check(&new, Some(&new), None), Ok(()));
        let err = check(
            &new,
            Some(&cluster("docker-other-1-32-v2", "v1.32.2")),
            Some(&next),
        )
        .expect_err("stack");
        assert!(
            err.contains("from cluster stack docker/other to docker/ferrol"),
            "{err}"
        );
        let err = check(
            &new,
            Some(&cluster("docker-ferrol-1-31-v2", "v1.31.2")),
            Some(&next),
        )
        .expect_err("jump");
        assert!(
            err.contains("Kubernetes 1.31 cannot go to 1.33 in one step"),
            "{err}"
        );
        let older = ready_release("docker-ferrol-1-31-v1", "v1.31.1", true);
        let err = check(
            &cluster("docker-ferrol-1-31-v1", "v1.31.1"),
            Some(&new),
            Some(&older),
        )
        .expect_err("back");
        assert!(err.contains("downgrades are not supported"), "{err}");
    }

    #[test]
    fn a_stack_in_use_cannot_be_deleted() {
        let stack = json!({"metadata": {"name": "ferrol"},
                           "spec": {"provider": "docker", "name": "ferrol", "kubernetesVersion": "1.32"}});
        let clusters = [
            ("a".to_owned(), "docker-ferrol-1-32-v2".to_owned()),
            ("b".to_owned(), "docker-ferrol-1-33-v1".to_owned()),
            ("c".to_owned(), "something-else".to_owned()),
        ];
        let err = stack_rules("ns", &stack, &clusters).expect_err("in use");
        assert!(
            err.starts_with("ClusterStack ns/ferrol is in use by Cluster(s) a;"),
            "{err}"
        );
        assert_eq!(stack_rules("ns", &stack, &clusters[1..]), Ok(()));
    }
}
