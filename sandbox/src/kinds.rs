//! What the real API server checks per built-in kind beyond the common metadata rules: the rule each kind's name
//! follows (Kubernetes `pkg/apis/<group>/validation`), and the fields and defaults of the built-in kinds whose
//! validation decides whether a rendered chart is accepted (APIService, CSIDriver).

use serde_json::{json, Value};

use crate::error::Cause;
use crate::resource::ResourceType;

/// The rule an object's `metadata.name` must follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds, custom resources).
    Subdomain,
    /// RFC 1123 label (Namespace, StatefulSet).
    Label,
    /// RFC 1035 label (Service).
    Dns1035Label,
    /// Anything usable as one URL path segment (RBAC kinds, PodDisruptionBudget).
    PathSegment,
    /// A subdomain of at most 52 characters, so the Jobs a CronJob creates still have valid names.
    CronJob,
    /// A path segment equal to `spec.version + "." + spec.group` (APIService).
    ApiService {
        /// The name the spec requires.
        required: String,
    },
}

/// The name rule of `rt` for the object `obj` (an APIService's rule depends on its spec).
pub fn name_rule(rt: &ResourceType, obj: &Value) -> NameRule {
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("", "Namespace") | ("apps", "StatefulSet") => NameRule::Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("batch", "CronJob") => NameRule::CronJob,
        ("rbac.authorization.k8s.io", _) | ("policy", "PodDisruptionBudget") if rt.builtin.is_some() => {
            NameRule::PathSegment
        }
        ("apiregistration.k8s.io", "APIService") if rt.builtin.is_some() => {
            let s = |p: &str| obj.pointer(p).and_then(Value::as_str).unwrap_or_default();
            NameRule::ApiService {
                required: format!("{}.{}", s("/spec/version"), s("/spec/group")),
            }
        }
        _ => NameRule::Subdomain,
    }
}

const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let end = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && b.iter().all(inner) && b.first().is_some_and(end) && b.last().is_some_and(end)
}

fn is_subdomain(s: &str) -> bool {
    s.split('.').all(is_label)
}

/// Errors of an RFC 1123 subdomain (`IsDNS1123Subdomain`).
pub fn subdomain_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 253 {
        out.push("must be no more than 253 characters".into());
    }
    if !is_subdomain(name) {
        out.push(SUBDOMAIN_MSG.into());
    }
    out
}

/// Errors of an RFC 1123 label (`IsDNS1123Label`).
pub fn label_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 63 {
        out.push("must be no more than 63 characters".into());
    }
    if !is_label(name) {
        if is_subdomain(name) {
            out.push("must not contain dots".into());
        } else {
            out.push(LABEL_MSG.into());
        }
    }
    out
}

/// Errors of an RFC 1035 label (`IsDNS1035Label`).
pub fn dns1035_errors(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    if name.len() > 63 {
        out.push("must be no more than 63 characters".into());
    }
    if !(is_label(name) && name.as_bytes()[0].is_ascii_lowercase()) {
        out.push(DNS1035_MSG.into());
    }
    out
}

/// Errors of a URL path segment name (`IsValidPathSegmentName`): every create is held to it.
pub fn path_segment_errors(name: &str) -> Vec<String> {
    if name == "." || name == ".." {
        return vec![format!("may not be '{name}'")];
    }
    ["/", "%"]
        .iter()
        .filter(|c| name.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// What is wrong with `name` under `rule` (empty when it is valid), in the real server's words.
pub fn name_errors(rule: &NameRule, name: &str) -> Vec<String> {
    let specific = match rule {
        NameRule::Subdomain => subdomain_errors(name),
        NameRule::Label => label_errors(name),
        NameRule::Dns1035Label => dns1035_errors(name),
        NameRule::PathSegment => path_segment_errors(name),
        NameRule::CronJob => {
            let mut out = subdomain_errors(name);
            if name.len() > 52 {
                out.push("must be no more than 52 characters".into());
            }
            out
        }
        NameRule::ApiService { required } => {
            let segment = path_segment_errors(name);
            if !segment.is_empty() {
                segment
            } else if name != required {
                vec![format!("must be `spec.version+\".\"+spec.group`: {required:?}")]
            } else {
                vec![]
            }
        }
    };
    if specific.is_empty() {
        // The server checks every name as a path segment after the kind's own rule.
        path_segment_errors(name)
    } else {
        specific
    }
}

/// Fill in the defaults the real server sets on built-in kinds whose fields clients read back.
pub fn default(rt: &ResourceType, obj: &mut Value) {
    if rt.builtin.is_none() {
        return;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("admissionregistration.k8s.io", kind) => crate::admission::config::default(kind, obj),
        ("apiregistration.k8s.io", "APIService") => {
            if let Some(service) = obj.pointer_mut("/spec/service").filter(|s| s.is_object()) {
                if service.get("port").is_none_or(Value::is_null) {
                    service["port"] = json!(443);
                }
            }
        }
        ("storage.k8s.io", "CSIDriver") => {
            if !obj.get("spec").is_some_and(Value::is_object) {
                obj["spec"] = json!({});
            }
            let spec = &mut obj["spec"];
            for (field, value) in [
                ("attachRequired", json!(true)),
                ("podInfoOnMount", json!(false)),
                ("requiresRepublish", json!(false)),
                ("storageCapacity", json!(false)),
                ("seLinuxMount", json!(false)),
                ("fsGroupPolicy", json!("ReadWriteOnceWithFSType")),
                ("volumeLifecycleModes", json!(["Persistent"])),
            ] {
                let empty = match spec.get(field) {
                    None | Some(Value::Null) => true,
                    Some(Value::Array(a)) => a.is_empty(),
                    _ => false,
                };
                if empty {
                    spec[field] = value;
                }
            }
        }
        _ => {}
    }
}

fn invalid(field: &str, shown: String, msg: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {shown}: {msg}"),
        field: field.into(),
    }
}

fn required(field: &str, msg: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: if msg.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {msg}")
        },
        field: field.into(),
    }
}

/// Check the fields of built-in kinds the emulator validates (after [`default`]).
pub fn validate(rt: &ResourceType, obj: &Value, out: &mut Vec<Cause>) {
    if rt.builtin.is_none() {
        return;
    }
    match (rt.group.as_str(), rt.kind.as_str()) {
        ("apiregistration.k8s.io", "APIService") => validate_api_service(obj, out),
        ("admissionregistration.k8s.io", kind) => crate::admission::config::validate(kind, obj, out),
        ("", "ConfigMap") => {
            data_keys(obj, "data", out);
            data_keys(obj, "binaryData", out);
        }
        // `stringData` is merged into `data` before this runs.
        ("", "Secret") => data_keys(obj, "data", out),
        _ => {}
    }
}

/// The keys of a ConfigMap's or Secret's `field` (`IsConfigMapKey` of apimachinery): at most 253
/// characters of `[-._a-zA-Z0-9]`, not `.` or `..`, not starting with `..`.
fn data_keys(obj: &Value, field: &str, out: &mut Vec<Cause>) {
    let Some(map) = obj.get(field).and_then(Value::as_object) else {
        return;
    };
    for key in map.keys() {
        let path = format!("{field}[{key}]");
        let shown = format!("{key:?}");
        if key.len() > 253 {
            out.push(invalid(
                &path,
                shown.clone(),
                "must be no more than 253 characters",
            ));
        }
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
        {
            out.push(invalid(
                &path,
                shown.clone(),
                "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  \
                 or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
            ));
        }
        let chdir = match key.as_str() {
            "." => Some("must not be '.'"),
            ".." => Some("must not be '..'"),
            k if k.starts_with("..") => Some("must not start with '..'"),
            _ => None,
        };
        if let Some(msg) = chdir {
            out.push(invalid(&path, shown, msg));
        }
    }
}

/// `ValidateAPIService` of kube-aggregator.
fn validate_api_service(obj: &Value, out: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    let s = |f: &str| spec.get(f).and_then(Value::as_str).unwrap_or_default();
    let n = |f: &str| spec.get(f).and_then(Value::as_i64).unwrap_or(0);
    let (group, version) = (s("group"), s("version"));
    if group.is_empty() && version != "v1" {
        out.push(required(
            "spec.group",
            "only v1 may have an empty group and it better be legacy kube",
        ));
    }
    if !group.is_empty() {
        for msg in subdomain_errors(group) {
            out.push(invalid("spec.group", format!("{group:?}"), &msg));
        }
    }
    for msg in dns1035_errors(version) {
        out.push(invalid("spec.version", format!("{version:?}"), &msg));
    }
    let group_priority = n("groupPriorityMinimum");
    if group_priority <= 0 || group_priority > 20000 {
        out.push(invalid(
            "spec.groupPriorityMinimum",
            group_priority.to_string(),
            "must be positive and less than 20000",
        ));
    }
    let version_priority = n("versionPriority");
    if version_priority <= 0 || version_priority > 1000 {
        out.push(invalid(
            "spec.versionPriority",
            version_priority.to_string(),
            "must be positive and less than 1000",
        ));
    }
    let ca = s("caBundle");
    let ca_len = (ca.len() / 4 * 3).saturating_sub(ca.bytes().rev().take_while(|c| *c == b'=').count());
    let insecure = spec.get("insecureSkipTLSVerify").and_then(Value::as_bool) == Some(true);
    let Some(service) = spec.get("service").filter(|v| v.is_object()) else {
        if ca_len != 0 {
            out.push(invalid(
                "spec.caBundle",
                format!("\"{ca_len} bytes\""),
                "local APIServices may not have a caBundle",
            ));
        }
        if insecure {
            out.push(invalid(
                "spec.insecureSkipTLSVerify",
                "true".into(),
                "local APIServices may not have insecureSkipTLSVerify",
            ));
        }
        return;
    };
    let field = |f: &str| service.get(f).and_then(Value::as_str).unwrap_or_default();
    if field("namespace").is_empty() {
        out.push(required("spec.service.namespace", ""));
    }
    if field("name").is_empty() {
        out.push(required("spec.service.name", ""));
    }
    let port = service.get("port").and_then(Value::as_i64).unwrap_or(0);
    if !(1..=65535).contains(&port) {
        out.push(invalid(
            "spec.service.port",
            port.to_string(),
            "port is not valid: must be between 1 and 65535, inclusive",
        ));
    }
    if insecure && ca_len > 0 {
        out.push(invalid(
            "spec.insecureSkipTLSVerify",
            "true".into(),
            "may not be true if caBundle is present",
        ));
    }
}

/// The fields of built-in kinds an update may not change, as the API server's update validation refuses
/// them (422): workload selectors, a Job's template, a StatefulSet's spec beyond the fields it lets
/// change, a binding's `roleRef`, a StorageClass's provisioner, parameters and policies.
pub fn immutable_changes(group: &str, kind: &str, old: &Value, new: &Value) -> Vec<Cause> {
    let changed = |path: &str| old.pointer(path) != new.pointer(path);
    let shown = |path: &str| new.pointer(path).map_or("null".to_owned(), Value::to_string);
    let invalid = |field: &str, path: &str, what: &str| Cause {
        reason: "FieldValueInvalid".into(),
        field: field.into(),
        message: format!("Invalid value: {}: {what}", shown(path)),
    };
    let forbidden = |field: &str, message: &str| Cause {
        reason: "FieldValueForbidden".into(),
        field: field.into(),
        message: format!("Forbidden: {message}"),
    };
    let mut out = Vec::new();
    match (group, kind) {
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") if changed("/spec/selector") => {
            out.push(invalid("spec.selector", "/spec/selector", "field is immutable"));
        }
        ("apps", "StatefulSet") => {
            const MUTABLE: [&str; 6] = [
                "replicas",
                "ordinals",
                "template",
                "updateStrategy",
                "persistentVolumeClaimRetentionPolicy",
                "minReadySeconds",
            ];
            // Fields left out of the new object are defaulted back by the server: only set ones count.
            let spec = new["spec"].as_object().into_iter().flatten();
            if spec
                .filter(|(k, _)| !MUTABLE.contains(&k.as_str()))
                .any(|(k, v)| old["spec"].get(k) != Some(v))
            {
                out.push(forbidden(
                    "spec",
                    "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', \
                     'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
                ));
            }
        }
        ("batch", "Job") => {
            for (field, path) in [
                ("spec.selector", "/spec/selector"),
                ("spec.template", "/spec/template"),
            ] {
                if changed(path) {
                    out.push(invalid(field, path, "field is immutable"));
                }
            }
        }
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") if changed("/roleRef") => {
            out.push(invalid("roleRef", "/roleRef", "cannot change roleRef"));
        }
        ("storage.k8s.io", "StorageClass") => {
            // reclaimPolicy and volumeBindingMode are defaulted: left out, they stay as they were.
            let set = |field: &str| new.get(field).is_some();
            for field in ["parameters", "provisioner", "reclaimPolicy"] {
                if (field != "reclaimPolicy" || set(field)) && changed(&format!("/{field}")) {
                    out.push(forbidden(field, &format!("updates to {field} are forbidden.")));
                }
            }
            if set("volumeBindingMode") && changed("/volumeBindingMode") {
                out.push(forbidden("volumeBindingMode", "field is immutable"));
            }
        }
        _ => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_each_kinds_rule() {
        let ok = |rule: &NameRule, name: &str| name_errors(rule, name).is_empty();
        assert!(ok(&NameRule::PathSegment, "system:metrics-server"));
        assert!(ok(&NameRule::PathSegment, "Cilium_Operator"));
        assert_eq!(name_errors(&NameRule::PathSegment, ".."), ["may not be '..'"]);
        assert_eq!(
            name_errors(&NameRule::PathSegment, "a/b%c"),
            ["may not contain '/'", "may not contain '%'"]
        );
        assert!(!ok(&NameRule::Subdomain, "system:metrics-server"));
        assert!(ok(&NameRule::Subdomain, "a.b-c"));
        assert_eq!(name_errors(&NameRule::Label, "a.b"), ["must not contain dots"]);
        assert!(ok(&NameRule::Dns1035Label, "hubble-peer"));
        assert_eq!(name_errors(&NameRule::Dns1035Label, "1abc"), [DNS1035_MSG]);
        assert_eq!(
            name_errors(&NameRule::CronJob, &"a".repeat(53)),
            ["must be no more than 52 characters"]
        );
        let api = NameRule::ApiService {
            required: "v1beta1.metrics.k8s.io".into(),
        };
        assert!(ok(&api, "v1beta1.metrics.k8s.io"));
        assert_eq!(
            name_errors(&api, "metrics"),
            [r#"must be `spec.version+"."+spec.group`: "v1beta1.metrics.k8s.io""#]
        );
    }
}
