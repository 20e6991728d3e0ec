//! Authentication and authorization the way kube-apiserver does them with bearer tokens and RBAC, behind
//! [`crate::ClusterOptions::authorization`] (off by default: then every request acts as the admin).
//!
//! - Authentication: the kubeconfig's admin token (user `kubernetes-admin`, group `system:masters`), and
//!   ServiceAccount tokens from the TokenRequest subresource (`POST .../serviceaccounts/<name>/token`, what
//!   `kubectl create token` calls): user `system:serviceaccount:<ns>:<name>` with the groups
//!   `system:serviceaccounts`, `system:serviceaccounts:<ns>` and `system:authenticated`. A token is valid
//!   until it expires or its ServiceAccount is deleted. No token: `system:anonymous`; an unknown one: 401.
//! - Authorization: RBAC. ClusterRoleBindings grant everywhere, RoleBindings in their namespace (of a Role
//!   there or a ClusterRole); rules match apiGroups, resources (`resource/subresource`, `*/subresource`,
//!   `*`), resourceNames, verbs and nonResourceURLs (`*` suffix); ClusterRoles with an `aggregationRule`
//!   have the rules of the ClusterRoles their selectors match. `system:masters` may do anything. A denial
//!   is a 403 with the API server's message. The default ClusterRoles and bindings every cluster has
//!   (discovery, self reviews, health and version for everybody) are created with the cluster.
//! - Reviews: SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview,
//!   SelfSubjectRulesReview, TokenReview and SelfSubjectReview, so `kubectl auth can-i` and `kubectl auth
//!   whoami` work, and so do servers that check callers through the API (secure metrics).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Duration as ChronoDuration, SecondsFormat, Utc};
use serde_json::{json, Value};

use crate::api::Inner;
use crate::error::ApiError;
use crate::select::LabelSelector;

/// The bearer token of the kubeconfig the cluster writes (the cluster admin).
pub const ADMIN_TOKEN: &str = "kube-emulator";
/// The admin's user name, as kubeadm and kind name it.
pub const ADMIN_USER: &str = "kubernetes-admin";
/// The audience of the API server; tokens must carry it to authenticate against the API.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";
const RBAC: &str = "rbac.authorization.k8s.io";

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name, e.g. `system:serviceaccount:ns:name`.
    pub name: String,
    /// UID (the ServiceAccount's for its tokens).
    pub uid: String,
    /// Groups.
    pub groups: Vec<String>,
}

impl UserInfo {
    fn admin() -> Self {
        UserInfo {
            name: ADMIN_USER.into(),
            uid: String::new(),
            groups: vec!["system:masters".into(), "system:authenticated".into()],
        }
    }

    fn anonymous() -> Self {
        UserInfo {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    /// The user of a ServiceAccount's tokens.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".into(),
            ],
        }
    }

    fn to_json(&self) -> Value {
        let mut user = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            user["uid"] = json!(self.uid);
        }
        user
    }
}

/// What a request asks to do, as the API server's authorizers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, or for a
    /// non-resource request the lower-case HTTP method.
    pub verb: String,
    /// The object part; `None` for non-resource requests (discovery, /healthz, /version).
    pub resource: Option<ResourceAttributes>,
    /// The URL path of a non-resource request.
    pub path: String,
}

/// The resource part of [`Attributes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceAttributes {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource, e.g. `status`.
    pub subresource: String,
    /// Namespace ("" for cluster scope or all namespaces).
    pub namespace: String,
    /// Object name ("" for collections).
    pub name: String,
}

/// A ServiceAccount token handed out by TokenRequest.
#[derive(Debug, Clone)]
struct Issued {
    namespace: String,
    name: String,
    uid: String,
    audiences: Vec<String>,
    expires: DateTime<Utc>,
}

/// The authentication and authorization state of one cluster.
#[derive(Debug, Default)]
pub struct Auth {
    /// Whether requests are authenticated and authorized.
    pub enforce: bool,
    tokens: Mutex<HashMap<String, Issued>>,
}

impl Auth {
    /// Enforcing (`true`) or letting everybody act as the admin (`false`).
    pub fn new(enforce: bool) -> Self {
        Auth {
            enforce,
            tokens: Mutex::default(),
        }
    }

    /// Issues a token for ServiceAccount `namespace/name` (which must exist), valid for `seconds` and
    /// `audiences` (the API's when empty); returns the token and its expiry.
    pub fn issue(
        &self,
        inner: &Inner,
        namespace: &str,
        name: &str,
        seconds: i64,
        audiences: Vec<String>,
    ) -> Result<(String, DateTime<Utc>), ApiError> {
        let sa = inner
            .lock()
            .get(&(String::new(), "serviceaccounts".into()), namespace, name)
            .ok_or_else(|| ApiError::not_found("", "serviceaccounts", name))?;
        let uid = sa["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let token = format!(
            "emu.{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let expires = Utc::now() + ChronoDuration::seconds(seconds);
        let audiences = if audiences.is_empty() {
            vec![API_AUDIENCE.to_owned()]
        } else {
            audiences
        };
        let issued = Issued {
            namespace: namespace.into(),
            name: name.into(),
            uid,
            audiences,
            expires,
        };
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        // Bounded: expired tokens are dropped whenever a new one is issued.
        let now = Utc::now();
        tokens.retain(|_, t| t.expires > now);
        tokens.insert(token.clone(), issued);
        Ok((token, expires))
    }

    /// The user a token belongs to, for `audience`; `Err` says why it is not valid.
    fn user_of_token(
        &self,
        inner: &Inner,
        token: &str,
        audience: &str,
    ) -> Result<(UserInfo, Vec<String>), String> {
        if token == ADMIN_TOKEN {
            return Ok((UserInfo::admin(), vec![API_AUDIENCE.into()]));
        }
        let issued = self
            .tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(token)
            .cloned()
            .ok_or("invalid bearer token")?;
        if issued.expires <= Utc::now() {
            return Err("invalid bearer token, token has expired".into());
        }
        if !issued.audiences.iter().any(|a| a == audience) {
            return Err("invalid bearer token, token audiences don't match".into());
        }
        let sa = inner.lock().get(
            &(String::new(), "serviceaccounts".into()),
            &issued.namespace,
            &issued.name,
        );
        match sa {
            Some(sa) if sa["metadata"]["uid"].as_str() == Some(issued.uid.as_str()) => Ok((
                UserInfo::service_account(&issued.namespace, &issued.name, &issued.uid),
                issued.audiences,
            )),
            _ => Err(format!(
                "invalid bearer token, service account {}/{} has been deleted",
                issued.namespace, issued.name
            )),
        }
    }

    /// The user of a request: its bearer token, or anonymous without one.
    fn authenticate(&self, inner: &Inner, headers: &HeaderMap) -> Result<UserInfo, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(UserInfo::anonymous());
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty());
        match token {
            Some(token) => self
                .user_of_token(inner, token, API_AUDIENCE)
                .map(|(user, _)| user)
                .map_err(|why| {
                    tracing::debug!(reason = %why, "unauthorized request");
                    unauthorized()
                }),
            None => Err(unauthorized()),
        }
    }
}

fn unauthorized() -> ApiError {
    ApiError {
        code: 401,
        reason: "Unauthorized",
        message: "Unauthorized".into(),
        details: None,
    }
}

/// The API server's RequestInfo: verb, resource, subresource, namespace and name of a request.
pub fn attributes(method: &Method, path: &str, query: &HashMap<String, String>) -> Attributes {
    let non_resource = || Attributes {
        verb: method.as_str().to_ascii_lowercase(),
        resource: None,
        path: path.to_owned(),
    };
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", version, rest @ ..] if !rest.is_empty() => ("", *version, rest.to_vec()),
        ["apis", group, version, rest @ ..] if !rest.is_empty() => (*group, *version, rest.to_vec()),
        _ => return non_resource(),
    };
    let mut verb = match *method {
        Method::POST => "create",
        Method::GET | Method::HEAD => "get",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE => "delete",
        _ => return non_resource(),
    }
    .to_owned();
    if rest.first() == Some(&"watch") {
        verb = "watch".into();
        rest.remove(0);
    }
    let mut attrs = ResourceAttributes {
        group: group.into(),
        version: version.into(),
        ..Default::default()
    };
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        attrs.namespace = rest[1].into();
        // `namespaces/<name>[/status|/finalize]` is the Namespace itself.
        if rest.len() > 2 && !matches!(rest[2], "status" | "finalize") {
            rest.drain(..2);
        }
    }
    attrs.resource = rest.first().copied().unwrap_or_default().into();
    attrs.name = rest.get(1).copied().unwrap_or_default().into();
    attrs.subresource = rest.get(2).copied().unwrap_or_default().into();
    let watching = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if attrs.name.is_empty() {
        verb = match verb.as_str() {
            "get" if watching => "watch".into(),
            "get" => "list".into(),
            "delete" => "deletecollection".into(),
            _ => verb,
        };
        // A list or watch of one object by its name is authorized for that name.
        if matches!(verb.as_str(), "list" | "watch") {
            if let Some(name) = query
                .get("fieldSelector")
                .and_then(|f| f.strip_prefix("metadata.name="))
                .filter(|n| !n.contains(','))
            {
                attrs.name = name.into();
            }
        }
    } else if verb == "get" && watching {
        verb = "watch".into();
    }
    Attributes {
        verb,
        resource: Some(attrs),
        path: path.to_owned(),
    }
}

/// The outcome of an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Allowed.
    pub allowed: bool,
    /// Which binding allowed it, or what went wrong while looking (a binding to a missing role).
    pub reason: String,
}

/// One RBAC rule.
fn rule_allows(rule: &Value, attrs: &Attributes) -> bool {
    let list = |field: &str| -> Vec<&str> {
        rule[field]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let verbs = list("verbs");
    if !verbs.iter().any(|v| *v == "*" || *v == attrs.verb) {
        return false;
    }
    match &attrs.resource {
        None => list("nonResourceURLs").iter().any(|u| {
            *u == "*" || *u == attrs.path || (u.ends_with('*') && attrs.path.starts_with(&u[..u.len() - 1]))
        }),
        Some(r) => {
            if !list("apiGroups").iter().any(|g| *g == "*" || *g == r.group) {
                return false;
            }
            let combined = if r.subresource.is_empty() {
                r.resource.clone()
            } else {
                format!("{}/{}", r.resource, r.subresource)
            };
            let resource_ok = list("resources").iter().any(|res| {
                *res == "*"
                    || *res == combined
                    || (!r.subresource.is_empty()
                        && res.len() == r.subresource.len() + 2
                        && res.starts_with("*/")
                        && res.ends_with(r.subresource.as_str()))
            });
            if !resource_ok {
                return false;
            }
            let names = list("resourceNames");
            names.is_empty() || names.iter().any(|n| *n == r.name)
        }
    }
}

fn subject_matches(subject: &Value, user: &UserInfo) -> bool {
    let s = |f: &str| subject[f].as_str().unwrap_or_default();
    match s("kind") {
        "User" => s("name") == user.name,
        "Group" => user.groups.iter().any(|g| g == s("name")),
        "ServiceAccount" => {
            !s("namespace").is_empty()
                && user.name == format!("system:serviceaccount:{}:{}", s("namespace"), s("name"))
        }
        _ => false,
    }
}

fn describe_subject(subject: &Value, binding_namespace: &str) -> String {
    let s = |f: &str| subject[f].as_str().unwrap_or_default();
    if s("kind") == "ServiceAccount" {
        let ns = if s("namespace").is_empty() {
            binding_namespace
        } else {
            s("namespace")
        };
        format!("{} \"{}/{ns}\"", s("kind"), s("name"))
    } else {
        format!("{} \"{}\"", s("kind"), s("name"))
    }
}

/// A label selector of an aggregation rule (`matchLabels`, `matchExpressions`) as selector text.
fn selector_text(selector: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(labels) = selector["matchLabels"].as_object() {
        for (k, v) in labels {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    for e in selector["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        parts.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            _ => format!("!{key}"),
        });
    }
    parts.join(",")
}

/// The rules of a role: its own, or for a ClusterRole with an `aggregationRule` those of every
/// ClusterRole one of its selectors matches (what the aggregation controller writes into it).
fn role_rules(role: &Value, cluster_roles: &[Arc<Value>]) -> Vec<Value> {
    let Some(selectors) = role["aggregationRule"]["clusterRoleSelectors"].as_array() else {
        return role["rules"].as_array().cloned().unwrap_or_default();
    };
    let mut rules = Vec::new();
    for selector in selectors {
        let Ok(parsed) = LabelSelector::parse(&selector_text(selector)) else {
            continue;
        };
        if parsed.is_empty() {
            continue;
        }
        for other in cluster_roles {
            if other["metadata"]["name"] != role["metadata"]["name"] && parsed.matches(other) {
                for rule in other["rules"].as_array().into_iter().flatten() {
                    if !rules.contains(rule) {
                        rules.push(rule.clone());
                    }
                }
            }
        }
    }
    rules
}

/// RBAC: whether `user` may do `attrs`.
pub fn authorize(inner: &Inner, user: &UserInfo, attrs: &Attributes) -> Decision {
    if user.groups.iter().any(|g| g == "system:masters") {
        return Decision {
            allowed: true,
            reason: String::new(),
        };
    }
    let store = inner.lock();
    let key = |plural: &str| (RBAC.to_owned(), plural.to_owned());
    let cluster_roles = store.list(&key("clusterroles"), None);
    let cluster_role = |name: &str| {
        cluster_roles
            .iter()
            .find(|r| r["metadata"]["name"].as_str() == Some(name))
            .cloned()
    };
    let mut errors: Vec<String> = Vec::new();
    let allowed_by = |rules: Vec<Value>, source: String| -> Option<Decision> {
        rules.iter().any(|r| rule_allows(r, attrs)).then(|| Decision {
            allowed: true,
            reason: format!("RBAC: allowed by {source}"),
        })
    };
    for binding in store.list(&key("clusterrolebindings"), None) {
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
        for subject in binding["subjects"].as_array().into_iter().flatten() {
            if !subject_matches(subject, user) {
                continue;
            }
            let Some(role) = cluster_role(role_name) else {
                errors.push(format!("clusterrole.{RBAC} \"{role_name}\" not found"));
                continue;
            };
            let source = format!(
                "ClusterRoleBinding \"{}\" of ClusterRole \"{role_name}\" to {}",
                binding["metadata"]["name"].as_str().unwrap_or_default(),
                describe_subject(subject, "")
            );
            if let Some(d) = allowed_by(role_rules(&role, &cluster_roles), source) {
                return d;
            }
        }
    }
    let namespace = attrs
        .resource
        .as_ref()
        .map(|r| r.namespace.as_str())
        .unwrap_or_default();
    if !namespace.is_empty() {
        for binding in store.list(&key("rolebindings"), Some(namespace)) {
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or_default();
            let role_name = binding["roleRef"]["name"].as_str().unwrap_or_default();
            for subject in binding["subjects"].as_array().into_iter().flatten() {
                if !subject_matches(subject, user) {
                    continue;
                }
                let role = if role_kind == "ClusterRole" {
                    cluster_role(role_name)
                } else {
                    store.get(&key("roles"), namespace, role_name)
                };
                let Some(role) = role else {
                    errors.push(format!(
                        "{}.{RBAC} \"{role_name}\" not found",
                        role_kind.to_ascii_lowercase()
                    ));
                    continue;
                };
                let source = format!(
                    "RoleBinding \"{}/{namespace}\" of {role_kind} \"{role_name}\" to {}",
                    binding["metadata"]["name"].as_str().unwrap_or_default(),
                    describe_subject(subject, namespace)
                );
                if let Some(d) = allowed_by(role_rules(&role, &cluster_roles), source) {
                    return d;
                }
            }
        }
    }
    Decision {
        allowed: false,
        reason: match errors.len() {
            0 => String::new(),
            1 => format!("RBAC: {}", errors[0]),
            _ => format!("RBAC: [{}]", errors.join(", ")),
        },
    }
}

/// The 403 of a denied request, worded as the API server words it.
pub fn forbidden(user: &UserInfo, attrs: &Attributes, reason: &str) -> ApiError {
    let user = &user.name;
    let Some(r) = &attrs.resource else {
        let mut message = format!(
            "forbidden: User \"{user}\" cannot {} path \"{}\"",
            attrs.verb, attrs.path
        );
        if !reason.is_empty() {
            message.push_str(&format!(": {reason}"));
        }
        return ApiError {
            details: Some(json!({})),
            ..ApiError::forbidden(message)
        };
    };
    let resource = if r.subresource.is_empty() {
        r.resource.clone()
    } else {
        format!("{}/{}", r.resource, r.subresource)
    };
    let mut why = if r.namespace.is_empty() {
        format!(
            "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" at the cluster scope",
            attrs.verb, r.group
        )
    } else {
        format!(
            "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" in the namespace \"{}\"",
            attrs.verb, r.group, r.namespace
        )
    };
    if !reason.is_empty() {
        why.push_str(&format!(": {reason}"));
    }
    let qualified = if r.group.is_empty() {
        r.resource.clone()
    } else {
        format!("{}.{}", r.resource, r.group)
    };
    let message = if r.name.is_empty() {
        format!("{qualified} is forbidden: {why}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {why}", r.name)
    };
    let mut details = json!({"group": r.group, "kind": r.resource});
    if !r.name.is_empty() {
        details["name"] = json!(r.name);
    }
    ApiError {
        details: Some(details),
        ..ApiError::forbidden(message)
    }
}

fn respond(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn error(e: &ApiError) -> Response {
    respond(e.code, &e.to_status())
}

/// The `userInfo` admission reviews carry for a request (the admin when requests are not authenticated).
pub fn user_info(auth: &Auth, inner: &Inner, headers: &HeaderMap) -> Value {
    let user = if auth.enforce {
        auth.authenticate(inner, headers)
            .unwrap_or_else(|_| UserInfo::anonymous())
    } else {
        UserInfo::admin()
    };
    user.to_json()
}

/// Runs before every request: authenticates and authorizes it (when enforcing) and serves the
/// authentication and authorization endpoints. `Some` is the response; `None` lets the request through.
pub fn filter(
    auth: &Auth,
    inner: &Inner,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Response> {
    let mut user = if auth.enforce {
        match auth.authenticate(inner, headers) {
            Ok(user) => user,
            Err(e) => return Some(error(&e)),
        }
    } else {
        UserInfo::admin()
    };
    if headers.contains_key("impersonate-user") {
        match impersonate(auth, inner, &user, headers) {
            Ok(as_user) => user = as_user,
            Err(e) => return Some(error(&e)),
        }
    }
    let attrs = attributes(method, path, query);
    if auth.enforce {
        let decision = authorize(inner, &user, &attrs);
        if !decision.allowed {
            tracing::debug!(user = %user.name, verb = %attrs.verb, path, "forbidden");
            return Some(error(&forbidden(&user, &attrs, &decision.reason)));
        }
    }
    let r = attrs.resource.as_ref()?;
    if attrs.verb != "create" {
        return None;
    }
    let served = match (r.group.as_str(), r.resource.as_str(), r.subresource.as_str()) {
        ("", "serviceaccounts", "token") => token_request(auth, inner, r, body),
        ("authentication.k8s.io", "tokenreviews", "") => token_review(auth, inner, body),
        ("authentication.k8s.io", "selfsubjectreviews", "") => Ok(self_subject_review(&user, body)),
        ("authorization.k8s.io", "selfsubjectaccessreviews", "") => {
            access_review(auth, inner, body, Some(&user), "", "SelfSubjectAccessReview")
        }
        ("authorization.k8s.io", "subjectaccessreviews", "") => {
            access_review(auth, inner, body, None, "", "SubjectAccessReview")
        }
        ("authorization.k8s.io", "localsubjectaccessreviews", "") => {
            access_review(auth, inner, body, None, &r.namespace, "LocalSubjectAccessReview")
        }
        ("authorization.k8s.io", "selfsubjectrulesreviews", "") => rules_review(auth, inner, &user, body),
        _ => return None,
    };
    Some(match served {
        Ok((code, body)) => respond(code, &body),
        Err(e) => error(&e),
    })
}

/// `Impersonate-User` and `Impersonate-Group` (`kubectl --as`, `--as-group`): the caller must be
/// allowed to `impersonate` the user (or the ServiceAccount) and each group.
fn impersonate(
    auth: &Auth,
    inner: &Inner,
    caller: &UserInfo,
    headers: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let name = headers
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let mut checks = Vec::new();
    let mut user = match name
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    {
        Some((ns, sa)) => {
            checks.push(ResourceAttributes {
                resource: "serviceaccounts".into(),
                namespace: ns.into(),
                name: sa.into(),
                ..Default::default()
            });
            let mut u = UserInfo::service_account(ns, sa, "");
            if !groups.is_empty() {
                u.groups = groups.clone();
            }
            u
        }
        None => {
            checks.push(ResourceAttributes {
                resource: "users".into(),
                name: name.clone(),
                ..Default::default()
            });
            UserInfo {
                name,
                uid: String::new(),
                groups: groups.clone(),
            }
        }
    };
    for group in &groups {
        checks.push(ResourceAttributes {
            resource: "groups".into(),
            name: group.clone(),
            ..Default::default()
        });
    }
    if auth.enforce {
        for check in checks {
            let attrs = Attributes {
                verb: "impersonate".into(),
                resource: Some(check),
                path: String::new(),
            };
            let decision = authorize(inner, caller, &attrs);
            if !decision.allowed {
                return Err(forbidden(caller, &attrs, &decision.reason));
            }
        }
    }
    if user.name != "system:anonymous" && !user.groups.iter().any(|g| g == "system:authenticated") {
        user.groups.push("system:authenticated".into());
    }
    Ok(user)
}

fn parse(body: &[u8], kind: &str) -> Result<Value, ApiError> {
    if body.starts_with(b"k8s\0") {
        // kubectl's typed clients (`create token`, `auth can-i`, `auth whoami`) send protobuf.
        return crate::proto::decode(body);
    }
    let value: Value = serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("the body of the {kind} is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(format!(
            "the body of the {kind} must be an object"
        )));
    }
    Ok(value)
}

fn timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`.
fn token_request(
    auth: &Auth,
    inner: &Inner,
    r: &ResourceAttributes,
    body: &[u8],
) -> Result<(u16, Value), ApiError> {
    let mut request = parse(body, "TokenRequest")?;
    let seconds = request["spec"]["expirationSeconds"].as_i64().unwrap_or(3600);
    if seconds < 600 {
        return Err(ApiError::invalid(
            "TokenRequest",
            "authentication.k8s.io",
            &r.name,
            vec![crate::error::Cause {
                reason: "FieldValueInvalid".into(),
                message: format!("Invalid value: {seconds}: may not specify a duration less than 10 minutes"),
                field: "spec.expirationSeconds".into(),
            }],
        ));
    }
    let audiences: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let (token, expires) = auth.issue(inner, &r.namespace, &r.name, seconds, audiences.clone())?;
    request["apiVersion"] = json!("authentication.k8s.io/v1");
    request["kind"] = json!("TokenRequest");
    request["metadata"] =
        json!({"name": r.name, "namespace": r.namespace, "creationTimestamp": timestamp(Utc::now())});
    request["spec"]["expirationSeconds"] = json!(seconds);
    request["spec"]["audiences"] = json!(if audiences.is_empty() {
        vec![API_AUDIENCE.to_owned()]
    } else {
        audiences
    });
    request["status"] = json!({"token": token, "expirationTimestamp": timestamp(expires)});
    Ok((201, request))
}

fn review_body(mut request: Value, api_version: &str, kind: &str, status: Value) -> Value {
    request["apiVersion"] = json!(api_version);
    request["kind"] = json!(kind);
    request["metadata"] = json!({"creationTimestamp": null});
    request["status"] = status;
    request
}

/// `POST /apis/authentication.k8s.io/v1/tokenreviews`.
fn token_review(auth: &Auth, inner: &Inner, body: &[u8]) -> Result<(u16, Value), ApiError> {
    let request = parse(body, "TokenReview")?;
    let token = request["spec"]["token"].as_str().unwrap_or_default().to_owned();
    let wanted: Vec<String> = request["spec"]["audiences"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let audience = wanted.first().cloned().unwrap_or_else(|| API_AUDIENCE.to_owned());
    let status = match auth.user_of_token(inner, &token, &audience) {
        Ok((user, audiences)) => {
            let matched: Vec<String> = if wanted.is_empty() {
                vec![API_AUDIENCE.to_owned()]
            } else {
                wanted.into_iter().filter(|a| audiences.contains(a)).collect()
            };
            json!({"authenticated": true, "user": user.to_json(), "audiences": matched})
        }
        Err(why) => json!({"authenticated": false, "user": {}, "error": format!("[{why}]")}),
    };
    Ok((
        201,
        review_body(request, "authentication.k8s.io/v1", "TokenReview", status),
    ))
}

/// `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`kubectl auth whoami`).
fn self_subject_review(user: &UserInfo, body: &[u8]) -> (u16, Value) {
    let request = parse(body, "SelfSubjectReview").unwrap_or_else(|_| json!({}));
    (
        201,
        review_body(
            request,
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            json!({"userInfo": user.to_json()}),
        ),
    )
}

/// The attributes an access review asks about.
fn review_attributes(spec: &Value, namespace_override: &str) -> Result<Attributes, ApiError> {
    let s = |v: &Value, f: &str| v[f].as_str().unwrap_or_default().to_owned();
    if let Some(r) = spec.get("resourceAttributes").filter(|v| v.is_object()) {
        let mut namespace = s(r, "namespace");
        if !namespace_override.is_empty() {
            namespace = namespace_override.to_owned();
        }
        return Ok(Attributes {
            verb: s(r, "verb"),
            resource: Some(ResourceAttributes {
                group: s(r, "group"),
                version: s(r, "version"),
                resource: s(r, "resource"),
                subresource: s(r, "subresource"),
                namespace,
                name: s(r, "name"),
            }),
            path: String::new(),
        });
    }
    if let Some(n) = spec.get("nonResourceAttributes").filter(|v| v.is_object()) {
        return Ok(Attributes {
            verb: s(n, "verb"),
            resource: None,
            path: s(n, "path"),
        });
    }
    Err(ApiError::invalid_message(
        "spec.resourceAttributes: Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified",
    ))
}

/// Self, subject and local subject access reviews: `self_user` for the self review, else the spec's.
fn access_review(
    auth: &Auth,
    inner: &Inner,
    body: &[u8],
    self_user: Option<&UserInfo>,
    namespace: &str,
    kind: &str,
) -> Result<(u16, Value), ApiError> {
    let request = parse(body, kind)?;
    let spec = &request["spec"];
    let attrs = review_attributes(spec, namespace)?;
    let user = match self_user {
        Some(user) => user.clone(),
        None => {
            let name = spec["user"].as_str().unwrap_or_default();
            let groups: Vec<String> = spec["groups"]
                .as_array()
                .map(|a| a.iter().filter_map(|g| g.as_str().map(str::to_owned)).collect())
                .unwrap_or_default();
            if name.is_empty() && groups.is_empty() {
                return Err(ApiError::invalid_message(
                    "spec.user: Invalid value: \"\": at least one of user or group must be specified",
                ));
            }
            UserInfo {
                name: name.to_owned(),
                uid: spec["uid"].as_str().unwrap_or_default().to_owned(),
                groups,
            }
        }
    };
    let decision = if auth.enforce {
        authorize(inner, &user, &attrs)
    } else {
        Decision {
            allowed: true,
            reason: String::new(),
        }
    };
    let mut status = json!({"allowed": decision.allowed});
    if !decision.reason.is_empty() {
        status["reason"] = json!(decision.reason);
    }
    Ok((201, review_body(request, "authorization.k8s.io/v1", kind, status)))
}

/// `POST /apis/authorization.k8s.io/v1/selfsubjectrulesreviews` (`kubectl auth can-i --list`): the
/// rules that apply to the caller in `spec.namespace`.
fn rules_review(auth: &Auth, inner: &Inner, user: &UserInfo, body: &[u8]) -> Result<(u16, Value), ApiError> {
    let request = parse(body, "SelfSubjectRulesReview")?;
    let namespace = request["spec"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    let mut push = |rule: &Value| {
        let pick = |fields: &[&str]| {
            let mut out = json!({});
            for f in fields {
                if let Some(v) = rule
                    .get(*f)
                    .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                {
                    out[*f] = v.clone();
                }
            }
            out
        };
        if rule
            .get("nonResourceURLs")
            .is_some_and(|v| v.as_array().is_some_and(|a| !a.is_empty()))
        {
            non_resource_rules.push(pick(&["verbs", "nonResourceURLs"]));
        } else {
            resource_rules.push(pick(&["verbs", "apiGroups", "resources", "resourceNames"]));
        }
    };
    if !auth.enforce || user.groups.iter().any(|g| g == "system:masters") {
        push(&json!({"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}));
        push(&json!({"verbs": ["*"], "nonResourceURLs": ["*"]}));
    } else {
        let store = inner.lock();
        let key = |plural: &str| (RBAC.to_owned(), plural.to_owned());
        let cluster_roles = store.list(&key("clusterroles"), None);
        let find = |name: &str| {
            cluster_roles
                .iter()
                .find(|r| r["metadata"]["name"].as_str() == Some(name))
                .cloned()
        };
        for binding in store.list(&key("clusterrolebindings"), None) {
            let applies = binding["subjects"]
                .as_array()
                .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)));
            if let (true, Some(role)) = (
                applies,
                find(binding["roleRef"]["name"].as_str().unwrap_or_default()),
            ) {
                role_rules(&role, &cluster_roles).iter().for_each(&mut push);
            }
        }
        if !namespace.is_empty() {
            for binding in store.list(&key("rolebindings"), Some(&namespace)) {
                let applies = binding["subjects"]
                    .as_array()
                    .is_some_and(|s| s.iter().any(|s| subject_matches(s, user)));
                let name = binding["roleRef"]["name"].as_str().unwrap_or_default();
                let role = if binding["roleRef"]["kind"] == "ClusterRole" {
                    find(name)
                } else {
                    store.get(&key("roles"), &namespace, name)
                };
                if let (true, Some(role)) = (applies, role) {
                    role_rules(&role, &cluster_roles)
                        .iter()
                        .filter(|r| r.get("nonResourceURLs").is_none())
                        .for_each(&mut push);
                }
            }
        }
    }
    let status =
        json!({"resourceRules": resource_rules, "nonResourceRules": non_resource_rules, "incomplete": false});
    Ok((
        201,
        review_body(
            request,
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            status,
        ),
    ))
}

/// The ClusterRoles and ClusterRoleBindings every API server creates at start (its bootstrap policy),
/// as far as this emulator serves what they grant.
pub fn bootstrap_policy() -> Vec<Value> {
    let labels = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let annotations = json!({"rbac.authorization.kubernetes.io/autoupdate": "true"});
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": name, "labels": labels, "annotations": annotations}, "rules": rules})
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({"apiGroup": RBAC, "kind": "Group", "name": g}))
            .collect();
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": name, "labels": labels, "annotations": annotations},
               "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": name}, "subjects": subjects})
    };
    vec![
        role(
            "cluster-admin",
            json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
                   {"nonResourceURLs": ["*"], "verbs": ["*"]}]),
        ),
        role(
            "system:discovery",
            json!([{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi",
                                        "/openapi/*", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        role(
            "system:basic-user",
            json!([{"apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"]},
                   {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]}]),
        ),
        role(
            "system:public-info-viewer",
            json!([{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}]),
        ),
        binding("cluster-admin", &["system:masters"]),
        binding("system:discovery", &["system:authenticated"]),
        binding("system:basic-user", &["system:authenticated"]),
        binding(
            "system:public-info-viewer",
            &["system:authenticated", "system:unauthenticated"],
        ),
    ]
}

/// Protobuf field numbers of the kinds of this module (and of ServiceAccounts and RBAC objects), which
/// kubectl's typed clients send as `application/vnd.kubernetes.protobuf`; see [`crate::proto`].
pub(crate) fn proto_fields(kind: &str) -> Option<&'static [(u32, &'static str, ProtoKind)]> {
    Some(match kind {
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => ROLE_BINDING,
        "TokenRequest" => TOKEN_REQUEST,
        "TokenReview" => TOKEN_REVIEW,
        "SelfSubjectReview" => SELF_SUBJECT_REVIEW,
        "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview" => ACCESS_REVIEW,
        "SelfSubjectRulesReview" => RULES_REVIEW,
        _ => return None,
    })
}

use crate::proto::{Kind as ProtoKind, OBJECT_META, OBJECT_REF};
type Fields = &'static [(u32, &'static str, ProtoKind)];

const LOCAL_REF: Fields = &[(1, "name", ProtoKind::Str)];
const SERVICE_ACCOUNT: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "secrets", ProtoKind::MsgList(OBJECT_REF)),
    (3, "imagePullSecrets", ProtoKind::MsgList(LOCAL_REF)),
    (4, "automountServiceAccountToken", ProtoKind::Bool),
];
const POLICY_RULE: Fields = &[
    (1, "verbs", ProtoKind::StrList),
    (2, "apiGroups", ProtoKind::StrList),
    (3, "resources", ProtoKind::StrList),
    (4, "resourceNames", ProtoKind::StrList),
    (5, "nonResourceURLs", ProtoKind::StrList),
];
const SELECTOR_REQUIREMENT: Fields = &[
    (1, "key", ProtoKind::Str),
    (2, "operator", ProtoKind::Str),
    (3, "values", ProtoKind::StrList),
];
const LABEL_SELECTOR: Fields = &[
    (1, "matchLabels", ProtoKind::StrMap),
    (2, "matchExpressions", ProtoKind::MsgList(SELECTOR_REQUIREMENT)),
];
const AGGREGATION_RULE: Fields = &[(1, "clusterRoleSelectors", ProtoKind::MsgList(LABEL_SELECTOR))];
const ROLE: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "rules", ProtoKind::MsgList(POLICY_RULE)),
    (3, "aggregationRule", ProtoKind::Msg(AGGREGATION_RULE)),
];
const SUBJECT: Fields = &[
    (1, "kind", ProtoKind::Str),
    (2, "apiGroup", ProtoKind::Str),
    (3, "name", ProtoKind::Str),
    (4, "namespace", ProtoKind::Str),
];
const ROLE_REF: Fields = &[
    (1, "apiGroup", ProtoKind::Str),
    (2, "kind", ProtoKind::Str),
    (3, "name", ProtoKind::Str),
];
const ROLE_BINDING: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "subjects", ProtoKind::MsgList(SUBJECT)),
    (3, "roleRef", ProtoKind::Msg(ROLE_REF)),
];
const TOKEN_REQUEST_SPEC: Fields = &[
    (1, "audiences", ProtoKind::StrList),
    (4, "expirationSeconds", ProtoKind::Int),
];
const TOKEN_REQUEST: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "spec", ProtoKind::Msg(TOKEN_REQUEST_SPEC)),
];
const TOKEN_REVIEW_SPEC: Fields = &[(1, "token", ProtoKind::Str), (2, "audiences", ProtoKind::StrList)];
const TOKEN_REVIEW: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "spec", ProtoKind::Msg(TOKEN_REVIEW_SPEC)),
];
const SELF_SUBJECT_REVIEW: Fields = &[(1, "metadata", ProtoKind::Msg(OBJECT_META))];
const RESOURCE_ATTRIBUTES: Fields = &[
    (1, "namespace", ProtoKind::Str),
    (2, "verb", ProtoKind::Str),
    (3, "group", ProtoKind::Str),
    (4, "version", ProtoKind::Str),
    (5, "resource", ProtoKind::Str),
    (6, "subresource", ProtoKind::Str),
    (7, "name", ProtoKind::Str),
];
const NON_RESOURCE_ATTRIBUTES: Fields = &[(1, "path", ProtoKind::Str), (2, "verb", ProtoKind::Str)];
const ACCESS_REVIEW_SPEC: Fields = &[
    (1, "resourceAttributes", ProtoKind::Msg(RESOURCE_ATTRIBUTES)),
    (
        2,
        "nonResourceAttributes",
        ProtoKind::Msg(NON_RESOURCE_ATTRIBUTES),
    ),
    (3, "user", ProtoKind::Str),
    (4, "groups", ProtoKind::StrList),
    (6, "uid", ProtoKind::Str),
];
const ACCESS_REVIEW: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "spec", ProtoKind::Msg(ACCESS_REVIEW_SPEC)),
];
const RULES_REVIEW_SPEC: Fields = &[(1, "namespace", ProtoKind::Str)];
const RULES_REVIEW: Fields = &[
    (1, "metadata", ProtoKind::Msg(OBJECT_META)),
    (2, "spec", ProtoKind::Msg(RULES_REVIEW_SPEC)),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn res(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: Some(ResourceAttributes {
                group: group.into(),
                version: "v1".into(),
                resource: resource.into(),
                subresource: sub.into(),
                namespace: ns.into(),
                name: name.into(),
            }),
            path: String::new(),
        }
    }

    #[test]
    fn request_info_follows_the_api_server() {
        let a = attributes(&Method::GET, "/api/v1/namespaces/z/secrets", &q(&[]));
        assert_eq!(a.verb, "list");
        assert_eq!(
            a.resource
                .as_ref()
                .map(|r| (r.namespace.as_str(), r.resource.as_str())),
            Some(("z", "secrets"))
        );
        let a = attributes(&Method::GET, "/api/v1/secrets", &q(&[("watch", "true")]));
        assert_eq!(a.verb, "watch");
        let a = attributes(
            &Method::GET,
            "/api/v1/namespaces/z/secrets",
            &q(&[("fieldSelector", "metadata.name=s")]),
        );
        assert_eq!(a.resource.map(|r| r.name), Some("s".to_owned()));
        let a = attributes(
            &Method::PATCH,
            "/apis/x.io/v1/namespaces/n/things/t/status",
            &q(&[]),
        );
        assert_eq!(
            a.resource,
            res("patch", "x.io", "things", "status", "n", "t").resource
        );
        let a = attributes(&Method::GET, "/api/v1/namespaces/n", &q(&[]));
        assert_eq!(a.resource, res("get", "", "namespaces", "", "n", "n").resource);
        let a = attributes(&Method::DELETE, "/api/v1/namespaces/n/pods", &q(&[]));
        assert_eq!(a.verb, "deletecollection");
        let a = attributes(
            &Method::POST,
            "/api/v1/namespaces/n/serviceaccounts/sa/token",
            &q(&[]),
        );
        assert_eq!(a.verb, "create");
        assert_eq!(
            a.resource,
            res("create", "", "serviceaccounts", "token", "n", "sa").resource
        );
        for path in ["/apis", "/api/v1", "/apis/apps/v1", "/healthz", "/openapi/v3"] {
            let a = attributes(&Method::GET, path, &q(&[]));
            assert_eq!(
                (a.verb.as_str(), a.resource, a.path.as_str()),
                ("get", None, path)
            );
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let rule =
            json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["a"]});
        assert!(rule_allows(&rule, &res("get", "", "secrets", "", "n", "a")));
        assert!(!rule_allows(&rule, &res("get", "", "secrets", "", "n", "b")));
        assert!(!rule_allows(&rule, &res("list", "", "secrets", "", "n", "")));
        let rule = json!({"apiGroups": ["x.io"], "resources": ["*/status"], "verbs": ["*"]});
        assert!(rule_allows(
            &rule,
            &res("patch", "x.io", "things", "status", "n", "t")
        ));
        assert!(!rule_allows(&rule, &res("patch", "x.io", "things", "", "n", "t")));
        assert!(!rule_allows(
            &rule,
            &res("patch", "y.io", "things", "status", "n", "t")
        ));
        let rule = json!({"apiGroups": ["x.io"], "resources": ["things"], "verbs": ["patch"]});
        assert!(
            !rule_allows(&rule, &res("patch", "x.io", "things", "status", "n", "t")),
            "a subresource needs its own rule"
        );
        let rule = json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]});
        let path = |p: &str| Attributes {
            verb: "get".into(),
            resource: None,
            path: p.into(),
        };
        assert!(rule_allows(&rule, &path("/apis/apps/v1")));
        assert!(!rule_allows(&rule, &path("/api")));
    }

    #[test]
    fn denials_are_worded_like_the_api_server() {
        let user = UserInfo::service_account("x", "y", "u");
        let e = forbidden(&user, &res("list", "", "secrets", "", "z", ""), "");
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "secrets is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"secrets\" in API group \"\" in the namespace \"z\""
        );
        let e = forbidden(
            &user,
            &res("patch", "x.io", "things", "status", "", "t"),
            "RBAC: clusterrole.rbac.authorization.k8s.io \"r\" not found",
        );
        assert_eq!(
            e.message,
            "things.x.io \"t\" is forbidden: User \"system:serviceaccount:x:y\" cannot patch resource \"things/status\" in API group \"x.io\" at the cluster scope: RBAC: clusterrole.rbac.authorization.k8s.io \"r\" not found"
        );
        let e = forbidden(
            &user,
            &Attributes {
                verb: "get".into(),
                resource: None,
                path: "/metrics".into(),
            },
            "",
        );
        assert_eq!(
            e.message,
            "forbidden: User \"system:serviceaccount:x:y\" cannot get path \"/metrics\""
        );
    }

    #[test]
    fn aggregation_selectors_become_label_selectors() {
        let s = json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "c", "operator": "In", "values": ["d", "e"]}, {"key": "f", "operator": "Exists"}]});
        assert_eq!(selector_text(&s), "a=b,c in (d,e),f");
    }
}
