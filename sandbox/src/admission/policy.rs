//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding (admissionregistration.k8s.io/v1, as
//! Kubernetes 1.30+ serves them): matchConstraints (resourceRules, excludeResourceRules, namespaceSelector,
//! objectSelector, matchPolicy), matchConditions, variables, validations (expression, message,
//! messageExpression, reason), paramKind with the binding's paramRef (name, namespace, selector,
//! parameterNotFoundAction), validationActions Deny/Warn/Audit and failurePolicy. Expressions see `object`,
//! `oldObject`, `request`, `params`, `namespaceObject` and `variables`.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Request;
use crate::error::ApiError;
use crate::store::Store;

const GROUP: &str = "admissionregistration.k8s.io";

/// A validation that failed (or could not be evaluated under failurePolicy Fail).
struct Decision {
    message: String,
    reason: String,
}

/// Evaluate every policy bound to the request: the warnings of `Warn` bindings and the first denial.
pub fn validate(store: &Store, req: &Request) -> (Vec<String>, Option<ApiError>) {
    let policies = store.list(&(GROUP.into(), "validatingadmissionpolicies".into()), None);
    if policies.is_empty() {
        return (Vec::new(), None);
    }
    let bindings = store.list(&(GROUP.into(), "validatingadmissionpolicybindings".into()), None);
    let namespace = super::namespace_of(store, req);
    let mut warnings = Vec::new();
    // (policy, binding, decision)
    let mut denied: Vec<(String, Option<String>, Decision)> = Vec::new();
    for policy in &policies {
        let name = crate::meta::meta_str(policy, "name").to_string();
        let spec = policy.get("spec").cloned().unwrap_or(Value::Null);
        let fail = spec.get("failurePolicy").and_then(Value::as_str) != Some("Ignore");
        let config_error = |denied: &mut Vec<_>, binding: Option<String>, e: String| {
            if fail {
                let what = if binding.is_some() { "binding" } else { "policy" };
                denied.push((
                    name.clone(),
                    binding,
                    Decision {
                        message: format!("failed to configure {what}: {e}"),
                        reason: String::new(),
                    },
                ));
            }
        };
        let version = match matches(spec.get("matchConstraints"), req, namespace.as_deref()) {
            Ok(Some(v)) => v,
            Ok(None) => continue,
            Err(e) => {
                config_error(&mut denied, None, e);
                continue;
            }
        };
        let versioned = req.in_version(&version);
        for binding in bindings
            .iter()
            .filter(|b| b.pointer("/spec/policyName").and_then(Value::as_str) == Some(name.as_str()))
        {
            let bname = crate::meta::meta_str(binding, "name").to_string();
            let bspec = binding.get("spec").cloned().unwrap_or(Value::Null);
            match bspec.get("matchResources").filter(|m| m.is_object()) {
                None => {}
                Some(m) => match binding_matches(m, req, namespace.as_deref()) {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(e) => {
                        config_error(&mut denied, Some(bname), e);
                        continue;
                    }
                },
            }
            let params = match params(store, &spec, &bspec, req) {
                Ok(p) => p,
                Err(e) => {
                    config_error(&mut denied, Some(bname), e);
                    continue;
                }
            };
            let actions: Vec<&str> = bspec
                .get("validationActions")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for param in &params {
                for decision in evaluate(&spec, &versioned, &req.version, param, namespace.as_deref(), fail) {
                    for action in &actions {
                        match *action {
                            "Deny" => denied.push((
                                name.clone(),
                                Some(bname.clone()),
                                Decision {
                                    message: decision.message.clone(),
                                    reason: decision.reason.clone(),
                                },
                            )),
                            "Warn" => warnings.push(format!(
                                "Validation failed for ValidatingAdmissionPolicy '{name}' with binding '{bname}': {}",
                                decision.message
                            )),
                            // Audit annotations go to the audit log, which the emulator does not keep.
                            _ => {}
                        }
                    }
                }
            }
        }
    }
    let error = denied.into_iter().next().map(|(policy, binding, d)| {
        let message = match binding {
            Some(b) => format!("ValidatingAdmissionPolicy '{policy}' with binding '{b}' denied request: {}", d.message),
            None => format!("ValidatingAdmissionPolicy '{policy}' denied request: {}", d.message),
        };
        let reason = if d.reason.is_empty() { "Invalid".to_string() } else { d.reason };
        let code = match reason.as_str() {
            "Forbidden" => 403,
            "Unauthorized" => 401,
            "RequestEntityTooLarge" => 413,
            _ => 422,
        };
        let name = req.shown_name();
        ApiError {
            code,
            reason: super::reason(&reason),
            message: format!("{} {name:?} is forbidden: {message}", req.qualified_resource()),
            details: Some(json!({"name": name, "group": req.rt.group, "kind": req.rt.plural, "causes": [{"message": message}]})),
        }
    });
    (warnings, error)
}

/// Whether `MatchResources` select the request: the version its rules matched, or `None`.
fn matches(
    constraints: Option<&Value>,
    req: &Request,
    namespace: Option<&Value>,
) -> Result<Option<String>, String> {
    let Some(m) = constraints.filter(|m| m.is_object()) else {
        return Ok(None);
    };
    if !super::namespace_selected(m.get("namespaceSelector"), req, namespace)?
        || !super::object_selected(m.get("objectSelector"), req)?
    {
        return Ok(None);
    }
    let rules = |f: &str| m.get(f).and_then(Value::as_array).cloned().unwrap_or_default();
    let equivalent = m.get("matchPolicy").and_then(Value::as_str) != Some("Exact");
    let named = |r: &Value| {
        let names: Vec<&str> = r
            .get("resourceNames")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        names.is_empty() || names.contains(&req.name.as_str())
    };
    let excluded: Vec<Value> = rules("excludeResourceRules")
        .into_iter()
        .filter(|r| named(r))
        .collect();
    if super::matching_version(&excluded, req, equivalent).is_some() {
        return Ok(None);
    }
    let included: Vec<Value> = rules("resourceRules").into_iter().filter(|r| named(r)).collect();
    Ok(super::matching_version(&included, req, equivalent))
}

/// A binding's `matchResources` narrow what the policy matches; without resource rules they match all of it.
fn binding_matches(m: &Value, req: &Request, namespace: Option<&Value>) -> Result<bool, String> {
    if m.get("resourceRules")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        let mut all = m.clone();
        all["resourceRules"] = json!([{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*", "*/*"]}]);
        return Ok(matches(Some(&all), req, namespace)?.is_some());
    }
    Ok(matches(Some(m), req, namespace)?.is_some())
}

/// The param objects a binding validates with (`[None]` without paramKind or paramRef).
fn params(store: &Store, spec: &Value, bspec: &Value, req: &Request) -> Result<Vec<Option<Value>>, String> {
    let (Some(kind), Some(param_ref)) = (
        spec.get("paramKind").filter(|p| p.is_object()),
        bspec.get("paramRef").filter(|p| p.is_object()),
    ) else {
        return Ok(vec![None]);
    };
    let api_version = kind.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = kind.get("kind").and_then(Value::as_str).unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let Some(rt) = store.registry.by_kind(group, version, kind_name) else {
        return Err(format!(
            "failed to find resource referenced by paramKind: '{api_version}, Kind={kind_name}'"
        ));
    };
    let s = |f: &str| {
        param_ref
            .get(f)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let namespace = if rt.namespaced {
        match (s("namespace"), req.namespace.as_str()) {
            (ns, _) if !ns.is_empty() => Some(ns),
            (_, ns) if !ns.is_empty() && !req.is_namespace() => Some(ns.to_string()),
            _ => {
                return Err(
                    "cannot use namespaced paramRef in policy binding that matches cluster-scoped resources"
                        .into(),
                )
            }
        }
    } else {
        if !s("namespace").is_empty() {
            return Err("paramRef.namespace must not be provided for a cluster-scoped `paramKind`".into());
        }
        None
    };
    let key = (rt.storage_group.clone(), rt.plural.clone());
    let ns = namespace.as_deref().unwrap_or_default();
    let found: Vec<Arc<Value>> = if !s("name").is_empty() {
        store.get(&key, ns, &s("name")).into_iter().collect()
    } else if let Some(selector) = param_ref.get("selector") {
        let mut out = Vec::new();
        for o in store.list(&key, namespace.as_deref()) {
            let labels = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            if super::selects(Some(selector), &labels)? {
                out.push(o);
            }
        }
        out
    } else {
        return Err("one of name or selector must be provided".into());
    };
    if found.is_empty() {
        if s("parameterNotFoundAction") == "Deny" {
            return Err("no params found for policy binding with `Deny` parameterNotFoundAction".into());
        }
        return Ok(Vec::new());
    }
    Ok(found
        .iter()
        .map(|o| Some(crate::api::view(&rt, version, o)))
        .collect())
}

/// Evaluate a policy's matchConditions, variables and validations: its failed validations.
fn evaluate(
    spec: &Value,
    req: &Request,
    request_version: &str,
    param: &Option<Value>,
    namespace: Option<&Value>,
    fail: bool,
) -> Vec<Decision> {
    let mut vars = super::cel_variables(req, request_version);
    vars.push((
        "params",
        param.as_ref().map(crate::cel::to_cel).unwrap_or(cel::Value::Null),
    ));
    vars.push((
        "namespaceObject",
        namespace.map(crate::cel::to_cel).unwrap_or(cel::Value::Null),
    ));
    let eval = |expr: &str, vars: &[(&str, cel::Value)]| {
        crate::cel::compile(expr)
            .and_then(|rule| crate::cel::eval_with(&rule, vars))
            .map_err(|e| format!("expression '{expr}' resulted in error: {e}"))
    };
    let list = |f: &str| spec.get(f).and_then(Value::as_array).cloned().unwrap_or_default();
    let str_of = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    // Variables see the ones before them.
    let mut cel_vars: std::collections::HashMap<cel::objects::Key, cel::Value> = Default::default();
    vars.push((
        "variables",
        cel::Value::Map(cel::objects::Map {
            map: Arc::new(cel_vars.clone()),
        }),
    ));
    for v in list("variables") {
        let name = str_of(&v, "name");
        if let Ok(value) = eval(&str_of(&v, "expression"), &vars) {
            cel_vars.insert(cel::objects::Key::String(Arc::new(name.clone())), value);
            vars.pop();
            vars.push((
                "variables",
                cel::Value::Map(cel::objects::Map {
                    map: Arc::new(cel_vars.clone()),
                }),
            ));
        }
    }
    let mut errors = Vec::new();
    for c in list("matchConditions") {
        match eval(&str_of(&c, "expression"), &vars) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Vec::new(),
            Ok(other) => errors.push(format!(
                "matchCondition '{}' did not evaluate to a bool: {other:?}",
                str_of(&c, "name")
            )),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return if fail {
            vec![Decision {
                message: errors.join(", "),
                reason: String::new(),
            }]
        } else {
            Vec::new()
        };
    }
    let mut out = Vec::new();
    for v in list("validations") {
        let expression = str_of(&v, "expression");
        let reason = str_of(&v, "reason");
        match eval(&expression, &vars) {
            Ok(cel::Value::Bool(true)) => {}
            Ok(_) => {
                let from_expression = Some(str_of(&v, "messageExpression"))
                    .filter(|m| !m.is_empty())
                    .and_then(|m| match eval(&m, &vars) {
                        Ok(cel::Value::String(s)) => Some(s.trim().to_string()),
                        _ => None,
                    })
                    .filter(|m| !m.is_empty() && !m.contains('\n'));
                let message = from_expression
                    .or_else(|| Some(str_of(&v, "message")).filter(|m| !m.is_empty()))
                    .unwrap_or_else(|| format!("failed expression: {}", expression.trim()));
                out.push(Decision {
                    message,
                    reason: if reason.is_empty() {
                        "Invalid".into()
                    } else {
                        reason
                    },
                });
            }
            Err(e) if fail => out.push(Decision {
                message: e,
                reason: String::new(),
            }),
            Err(_) => {}
        }
    }
    out
}
