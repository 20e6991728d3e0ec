//! The admission configuration kinds as the API server stores them: defaults (`kubectl get -o yaml` shows
//! them) and the validation that refuses a configuration the API server would refuse
//! (`pkg/apis/admissionregistration/validation`), with its messages.

use serde_json::{json, Value};

use crate::error::Cause;

fn set_default(obj: &mut Value, field: &str, value: Value) {
    if obj.is_object() && obj.get(field).is_none_or(Value::is_null) {
        obj[field] = value;
    }
}

fn default_rules(rules: Option<&mut Value>) {
    for r in rules.and_then(Value::as_array_mut).into_iter().flatten() {
        set_default(r, "scope", json!("*"));
    }
}

/// Fill in the defaults of a webhook configuration, policy or binding (`kind` is the object's kind).
pub fn default(kind: &str, obj: &mut Value) {
    match kind {
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => {
            for hook in obj
                .get_mut("webhooks")
                .and_then(Value::as_array_mut)
                .into_iter()
                .flatten()
            {
                set_default(hook, "failurePolicy", json!("Fail"));
                set_default(hook, "matchPolicy", json!("Equivalent"));
                set_default(hook, "namespaceSelector", json!({}));
                set_default(hook, "objectSelector", json!({}));
                set_default(hook, "timeoutSeconds", json!(10));
                if kind == "MutatingWebhookConfiguration" {
                    set_default(hook, "reinvocationPolicy", json!("Never"));
                }
                default_rules(hook.get_mut("rules"));
                if let Some(service) = hook.pointer_mut("/clientConfig/service") {
                    set_default(service, "port", json!(443));
                }
            }
        }
        "ValidatingAdmissionPolicy" => {
            let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
                return;
            };
            set_default(spec, "failurePolicy", json!("Fail"));
            if let Some(m) = spec.get_mut("matchConstraints").filter(|m| m.is_object()) {
                default_match(m);
            }
        }
        "ValidatingAdmissionPolicyBinding" => {
            if let Some(m) = obj.pointer_mut("/spec/matchResources").filter(|m| m.is_object()) {
                default_match(m);
            }
        }
        _ => {}
    }
}

fn default_match(m: &mut Value) {
    set_default(m, "matchPolicy", json!("Equivalent"));
    set_default(m, "namespaceSelector", json!({}));
    set_default(m, "objectSelector", json!({}));
    default_rules(m.get_mut("resourceRules"));
    default_rules(m.get_mut("excludeResourceRules"));
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

fn invalid(field: String, value: &Value, msg: &str) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message: format!("Invalid value: {}: {msg}", shown(value)),
        field,
    }
}

fn required(field: String, msg: &str) -> Cause {
    Cause {
        reason: "FieldValueRequired".into(),
        message: if msg.is_empty() {
            "Required value".into()
        } else {
            format!("Required value: {msg}")
        },
        field,
    }
}

fn not_supported(field: String, value: &Value, supported: &[&str]) -> Cause {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    Cause {
        reason: "FieldValueNotSupported".into(),
        message: format!(
            "Unsupported value: {}: supported values: {}",
            shown(value),
            list.join(", ")
        ),
        field,
    }
}

fn one_of(obj: &Value, field: &str, path: &str, supported: &[&str], out: &mut Vec<Cause>) {
    if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
        if !v.as_str().is_some_and(|s| supported.contains(&s)) {
            out.push(not_supported(format!("{path}.{field}"), v, supported));
        }
    }
}

fn compiles(expression: &Value, path: String, out: &mut Vec<Cause>) {
    match expression.as_str().filter(|e| !e.is_empty()) {
        None => out.push(required(path, "")),
        Some(e) => {
            if let Err(msg) = crate::cel::compile(e) {
                out.push(invalid(path, expression, &msg));
            }
        }
    }
}

/// Check a webhook configuration, policy or binding as the API server does before storing it.
pub fn validate(kind: &str, obj: &Value, out: &mut Vec<Cause>) {
    match kind {
        "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => webhooks(kind, obj, out),
        "ValidatingAdmissionPolicy" => policy(obj, out),
        "ValidatingAdmissionPolicyBinding" => binding(obj, out),
        _ => {}
    }
}

fn webhooks(kind: &str, obj: &Value, out: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, hook) in obj
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let path = format!("webhooks[{i}]");
        let name = hook.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() {
            out.push(required(format!("{path}.name"), ""));
        } else if let Some(msg) = crate::kinds::subdomain_errors(name).first() {
            out.push(invalid(format!("{path}.name"), &json!(name), msg));
        } else if name.split('.').count() < 3 {
            out.push(invalid(
                format!("{path}.name"),
                &json!(name),
                "should be a domain with at least three segments separated by dots",
            ));
        }
        for (j, rule) in hook
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let ops = rule
                .get("operations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let rpath = format!("{path}.rules[{j}]");
            if ops.is_empty() {
                out.push(required(format!("{rpath}.operations"), ""));
            }
            if ops.len() > 1 && ops.iter().any(|o| o == "*") {
                out.push(invalid(
                    format!("{rpath}.operations"),
                    &Value::Array(ops.clone()),
                    "if '*' is present, must not specify other operations",
                ));
            }
            for (k, op) in ops.iter().enumerate() {
                let supported = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
                if !op.as_str().is_some_and(|o| supported.contains(&o)) {
                    out.push(not_supported(format!("{rpath}.operations[{k}]"), op, &supported));
                }
            }
            for field in ["apiGroups", "apiVersions", "resources"] {
                if rule
                    .get(field)
                    .and_then(Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    out.push(required(format!("{rpath}.{field}"), ""));
                }
            }
        }
        one_of(hook, "failurePolicy", &path, &["Fail", "Ignore"], out);
        one_of(hook, "matchPolicy", &path, &["Equivalent", "Exact"], out);
        match hook.get("sideEffects").filter(|v| !v.is_null()) {
            None => out.push(required(
                format!("{path}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some(_) => one_of(hook, "sideEffects", &path, &["None", "NoneOnDryRun"], out),
        }
        if let Some(t) = hook.get("timeoutSeconds").filter(|v| !v.is_null()) {
            if !t.as_i64().is_some_and(|t| (1..=30).contains(&t)) {
                out.push(invalid(
                    format!("{path}.timeoutSeconds"),
                    t,
                    "the timeout value must be between 1 and 30 seconds",
                ));
            }
        }
        if kind == "MutatingWebhookConfiguration" {
            one_of(hook, "reinvocationPolicy", &path, &["IfNeeded", "Never"], out);
        }
        client_config(hook.get("clientConfig"), &format!("{path}.clientConfig"), out);
        for (j, c) in hook
            .get("matchConditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            compiles(
                c.get("expression").unwrap_or(&Value::Null),
                format!("{path}.matchConditions[{j}].expression"),
                out,
            );
        }
        let versions: Vec<&str> = hook
            .get("admissionReviewVersions")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let vpath = format!("{path}.admissionReviewVersions");
        if versions.is_empty() {
            out.push(required(vpath, "must specify one of v1, v1beta1"));
        } else if !versions.iter().any(|v| *v == "v1" || *v == "v1beta1") {
            out.push(invalid(
                vpath,
                &json!(versions),
                "must include at least one of v1, v1beta1",
            ));
        }
        if !name.is_empty() {
            if names.contains(&name) {
                out.push(Cause {
                    reason: "FieldValueDuplicate".into(),
                    message: format!("Duplicate value: {name:?}"),
                    field: format!("{path}.name"),
                });
            }
            names.push(name);
        }
    }
}

fn client_config(cc: Option<&Value>, path: &str, out: &mut Vec<Cause>) {
    let cc = cc.cloned().unwrap_or(Value::Null);
    let url = cc.get("url").filter(|u| !u.is_null());
    let service = cc.get("service").filter(|s| !s.is_null());
    match (url, service) {
        (Some(_), Some(_)) | (None, None) => {
            out.push(required(
                path.to_string(),
                "exactly one of url or service is required",
            ));
        }
        (Some(url), None) => {
            const FORM: &str = "; desired format: https://host[/path]";
            let text = url.as_str().unwrap_or_default();
            match text.parse::<axum::http::Uri>() {
                Err(e) => out.push(required(
                    format!("{path}.url"),
                    &format!("url must be a valid URL: {e}{FORM}"),
                )),
                Ok(uri) => {
                    let scheme = uri.scheme_str().unwrap_or_default();
                    if scheme != "https" {
                        out.push(invalid(
                            format!("{path}.url"),
                            &json!(scheme),
                            &format!("'https' is the only allowed URL scheme{FORM}"),
                        ));
                    }
                    if uri.host().is_none_or(str::is_empty) {
                        out.push(invalid(
                            format!("{path}.url"),
                            &json!(""),
                            &format!("host must be provided{FORM}"),
                        ));
                    }
                    if let Some(q) = uri.query() {
                        out.push(invalid(
                            format!("{path}.url"),
                            &json!(q),
                            "query parameters are not permitted in the URL",
                        ));
                    }
                }
            }
        }
        (None, Some(svc)) => {
            let s = |f: &str| svc.get(f).and_then(Value::as_str).unwrap_or_default();
            if s("name").is_empty() {
                out.push(required(
                    format!("{path}.service.name"),
                    "service name is required",
                ));
            }
            if s("namespace").is_empty() {
                out.push(required(
                    format!("{path}.service.namespace"),
                    "service namespace is required",
                ));
            }
            let p = s("path");
            if !p.is_empty() && !p.starts_with('/') {
                out.push(invalid(
                    format!("{path}.service.path"),
                    &json!(p),
                    "must start with a '/'",
                ));
            }
            if let Some(port) = svc.get("port").filter(|p| !p.is_null()) {
                if !port.as_i64().is_some_and(|p| (1..=65535).contains(&p)) {
                    out.push(invalid(
                        format!("{path}.service.port"),
                        port,
                        "port is not valid: must be between 1 and 65535, inclusive",
                    ));
                }
            }
        }
    }
}

fn policy(obj: &Value, out: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    one_of(&spec, "failurePolicy", "spec", &["Fail", "Ignore"], out);
    let list = |f: &str| spec.get(f).and_then(Value::as_array).cloned().unwrap_or_default();
    if list("validations").is_empty() && list("auditAnnotations").is_empty() {
        out.push(required(
            "spec.validations".into(),
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    for (i, v) in list("validations").iter().enumerate() {
        compiles(
            v.get("expression").unwrap_or(&Value::Null),
            format!("spec.validations[{i}].expression"),
            out,
        );
        if let Some(m) = v
            .get("messageExpression")
            .filter(|m| m.as_str().is_some_and(|m| !m.is_empty()))
        {
            compiles(m, format!("spec.validations[{i}].messageExpression"), out);
        }
        one_of(
            v,
            "reason",
            &format!("spec.validations[{i}]"),
            &["Forbidden", "Invalid", "RequestEntityTooLarge", "Unauthorized"],
            out,
        );
    }
    for (i, v) in list("variables").iter().enumerate() {
        compiles(
            v.get("expression").unwrap_or(&Value::Null),
            format!("spec.variables[{i}].expression"),
            out,
        );
    }
    for (i, c) in list("matchConditions").iter().enumerate() {
        compiles(
            c.get("expression").unwrap_or(&Value::Null),
            format!("spec.matchConditions[{i}].expression"),
            out,
        );
    }
    if spec
        .pointer("/matchConstraints/resourceRules")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        out.push(required("spec.matchConstraints.resourceRules".into(), ""));
    }
}

fn binding(obj: &Value, out: &mut Vec<Cause>) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    if spec
        .get("policyName")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        out.push(required("spec.policyName".into(), ""));
    }
    let actions: Vec<Value> = spec
        .get("validationActions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if actions.is_empty() {
        out.push(required(
            "spec.validationActions".into(),
            "at least one validation action is required",
        ));
    }
    for (i, a) in actions.iter().enumerate() {
        let supported = ["Audit", "Deny", "Warn"];
        if !a.as_str().is_some_and(|a| supported.contains(&a)) {
            out.push(not_supported(
                format!("spec.validationActions[{i}]"),
                a,
                &supported,
            ));
        }
    }
    if actions.iter().any(|a| a == "Deny") && actions.iter().any(|a| a == "Warn") {
        out.push(invalid(
            "spec.validationActions".into(),
            &Value::Array(actions.clone()),
            "validationActions must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_configurations_are_defaulted_and_checked() {
        let mut c = json!({"webhooks": [
            {"name": "a.b.c", "clientConfig": {"service": {"name": "s", "namespace": "n"}}, "sideEffects": "None",
             "admissionReviewVersions": ["v1"], "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
            {"name": "short", "clientConfig": {"url": "http://x/y"}, "timeoutSeconds": 31, "admissionReviewVersions": ["v2"]},
        ]});
        default("MutatingWebhookConfiguration", &mut c);
        assert_eq!(c["webhooks"][0]["failurePolicy"], "Fail");
        assert_eq!(c["webhooks"][0]["reinvocationPolicy"], "Never");
        assert_eq!(c["webhooks"][0]["rules"][0]["scope"], "*");
        assert_eq!(c["webhooks"][0]["clientConfig"]["service"]["port"], 443);
        let mut out = Vec::new();
        validate("MutatingWebhookConfiguration", &c, &mut out);
        let shown: Vec<String> = out
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        assert_eq!(
            shown,
            [
                "webhooks[1].name: Invalid value: \"short\": should be a domain with at least three segments separated by dots",
                "webhooks[1].sideEffects: Required value: must specify one of None, NoneOnDryRun",
                "webhooks[1].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 and 30 seconds",
                "webhooks[1].clientConfig.url: Invalid value: \"http\": 'https' is the only allowed URL scheme; desired format: https://host[/path]",
                "webhooks[1].admissionReviewVersions: Invalid value: [\"v2\"]: must include at least one of v1, v1beta1",
            ]
        );
    }
}
