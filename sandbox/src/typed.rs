//! Type checks of built-in objects, as the API server's JSON decoding into Go structs does them: a float in
//! an integer field (`replicas: 1.5`), a string where a number belongs, a number where a string belongs.
//! The emulator has no schemas for built-in kinds; the k8s-openapi types stand in for the Go structs. Only
//! wrong types are refused (400 BadRequest, like the decoder); a missing required field is the business of
//! validation, which the real API server does later (422) and the emulator does not do for these kinds.

use serde::de::DeserializeOwned;
use serde_json::Value;

use k8s_openapi::api::{
    admissionregistration::v1 as admission, apps::v1 as apps, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, networking::v1 as networking, policy::v1 as policy,
    rbac::v1 as rbac, scheduling::v1 as scheduling, storage::v1 as storage,
};

/// Why `obj` (of built-in `kind` in `group`) cannot be decoded, in the decoder's words; `None` when it
/// can, or when the kind is not a built-in one checked here.
pub fn decode_error(group: &str, kind: &str, obj: &Value) -> Option<String> {
    macro_rules! kinds {
        ($(($g:literal, $k:literal) => $t:ty),* $(,)?) => {
            match (group, kind) {
                $(($g, $k) => check::<$t>(kind, obj),)*
                _ => None,
            }
        };
    }
    kinds! {
        ("", "ConfigMap") => core::ConfigMap,
        ("", "Secret") => core::Secret,
        ("", "Namespace") => core::Namespace,
        ("", "Pod") => core::Pod,
        ("", "Service") => core::Service,
        ("", "ServiceAccount") => core::ServiceAccount,
        ("", "Endpoints") => core::Endpoints,
        ("", "PersistentVolumeClaim") => core::PersistentVolumeClaim,
        ("", "PersistentVolume") => core::PersistentVolume,
        ("", "Node") => core::Node,
        ("", "ResourceQuota") => core::ResourceQuota,
        ("", "LimitRange") => core::LimitRange,
        ("", "ReplicationController") => core::ReplicationController,
        ("apps", "Deployment") => apps::Deployment,
        ("apps", "DaemonSet") => apps::DaemonSet,
        ("apps", "StatefulSet") => apps::StatefulSet,
        ("apps", "ReplicaSet") => apps::ReplicaSet,
        ("apps", "ControllerRevision") => apps::ControllerRevision,
        ("batch", "Job") => batch::Job,
        ("batch", "CronJob") => batch::CronJob,
        ("coordination.k8s.io", "Lease") => coordination::Lease,
        ("rbac.authorization.k8s.io", "Role") => rbac::Role,
        ("rbac.authorization.k8s.io", "RoleBinding") => rbac::RoleBinding,
        ("rbac.authorization.k8s.io", "ClusterRole") => rbac::ClusterRole,
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => rbac::ClusterRoleBinding,
        ("policy", "PodDisruptionBudget") => policy::PodDisruptionBudget,
        ("networking.k8s.io", "Ingress") => networking::Ingress,
        ("networking.k8s.io", "NetworkPolicy") => networking::NetworkPolicy,
        ("storage.k8s.io", "StorageClass") => storage::StorageClass,
        ("scheduling.k8s.io", "PriorityClass") => scheduling::PriorityClass,
        ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => admission::ValidatingWebhookConfiguration,
        ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => admission::MutatingWebhookConfiguration,
    }
}

fn check<T: DeserializeOwned>(kind: &str, obj: &Value) -> Option<String> {
    // Go's decoder leaves a field alone when it meets `null`, whatever the field's type.
    let err = serde_path_to_error::deserialize::<_, T>(without_nulls(obj)).err()?;
    let inner = err.inner().to_string();
    // `invalid type: floating point `1.5`, expected i32`; a missing field or anything else is not a type.
    let rest = inner.strip_prefix("invalid type: ")?;
    let (got, expected) = rest.split_once(", expected ")?;
    if got == "null" {
        return None;
    }
    let numeric = matches!(expected.trim(), "i32" | "i64" | "u32" | "u64" | "f64");
    let what = match got.split_once(' ').map_or(got, |(first, _)| first) {
        // Go names the number only where a number was expected (`number 1.5` for an int32).
        "floating" | "integer" if numeric => {
            format!("number {}", got.split('`').nth(1).unwrap_or_default())
        }
        "floating" | "integer" => "number".to_owned(),
        "string" => "string".to_owned(),
        "boolean" => "bool".to_owned(),
        "map" => "object".to_owned(),
        "sequence" => "array".to_owned(),
        other => other.to_owned(),
    };
    let go_type = match expected.trim() {
        "i32" => "int32",
        "i64" => "int64",
        "u32" | "u64" => "int64",
        "f64" => "float64",
        "a string" => "string",
        "a boolean" => "bool",
        e if e.starts_with("a sequence") => "[]",
        _ => "object",
    };
    // Go writes `<struct>.<path>`; the struct's name is known here only for a top-level field.
    let path = err.path().to_string();
    let owner = if path.contains('.') { "" } else { kind };
    Some(format!(
        "json: cannot unmarshal {what} into Go struct field {owner}.{path} of type {go_type}"
    ))
}

/// `obj` without its `null` map entries, at any depth.
fn without_nulls(obj: &Value) -> Value {
    match obj {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn wrong_types_are_refused_and_missing_fields_are_not_the_decoders_business() {
        let deployment = |replicas: Value| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"replicas": replicas, "selector": {}, "template": {}}})
        };
        assert_eq!(
            decode_error("apps", "Deployment", &deployment(json!(1.5))).as_deref(),
            Some("json: cannot unmarshal number 1.5 into Go struct field .spec.replicas of type int32")
        );
        assert_eq!(
            decode_error("apps", "Deployment", &deployment(json!("two"))).as_deref(),
            Some("json: cannot unmarshal string into Go struct field .spec.replicas of type int32")
        );
        assert_eq!(decode_error("apps", "Deployment", &deployment(json!(2))), None);
        // Null is no value for Go's decoder; `kubectl create --dry-run -o yaml` writes such fields.
        let nulls = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web", "creationTimestamp": null},
                           "spec": {"selector": null, "template": {"spec": {"containers": null}}}});
        assert_eq!(decode_error("apps", "Deployment", &nulls), None);
        // Quantities may be numbers.
        let cpu = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                         "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 1}}}]}});
        assert_eq!(decode_error("", "Pod", &cpu), None);
        // No containers and no selector labels: invalid, but decodable.
        let bare = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {}});
        assert_eq!(decode_error("", "Pod", &bare), None);
        let cm =
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": 1}});
        assert_eq!(
            decode_error("", "ConfigMap", &cm).as_deref(),
            Some("json: cannot unmarshal number into Go struct field .data.a of type string")
        );
        assert_eq!(
            decode_error("example.com", "Thing", &cm),
            None,
            "not a built-in kind"
        );
    }
}
