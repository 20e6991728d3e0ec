//! Admission, as the API server runs it on every write: mutating webhooks on the object as the request made
//! it (before schema validation), then ValidatingAdmissionPolicies and validating webhooks on the final object
//! (after schema validation), for create, update (PUT, PATCH, apply, `/status`, `/scale`) and delete.
//! Requests for the admission configuration kinds themselves are exempt, as in the API server.
//!
//! The write path is synchronous and holds the store lock, while webhooks are HTTPS calls that may take
//! seconds (and may call back into the API). So admission works like the API server's optimistic
//! concurrency: a request's writes run in passes inside a [`Session`]. A hook that needs webhook answers
//! records what to ask ([`webhook::Pending`]) and fails the pass before anything is stored; the server asks
//! the webhooks without the lock and runs the request again. The next pass computes the same input and takes
//! the recorded answer. If the object changed in between, the input differs and the webhooks are asked
//! again, as the API server's update retries do. Policies (CEL, no I/O) are evaluated in each pass.
//!
//! Writes made in process ([`crate::Cluster::apply_yaml`], the garbage collector) run without a session and
//! are not admitted, like the API server's own loopback writes of built-in controllers are not in practice.

pub mod config;
pub mod policy;
pub mod webhook;

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Map, Value};

use crate::api::Target;
use crate::error::{ApiError, ApiResult};
use crate::resource::ResourceType;
use crate::store::Store;

/// The admission operation of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// POST, or server-side apply of a new object.
    Create,
    /// PUT and PATCH (also of subresources).
    Update,
    /// DELETE (also each object of a deletecollection).
    Delete,
}

impl Operation {
    /// `CREATE`, `UPDATE`, `DELETE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
        }
    }

    fn options_kind(self) -> &'static str {
        match self {
            Operation::Create => "CreateOptions",
            Operation::Update => "UpdateOptions",
            Operation::Delete => "DeleteOptions",
        }
    }
}

/// What admission sees of one request (the API server's `admission.Attributes`).
#[derive(Debug, Clone)]
pub struct Request {
    /// The operation.
    pub op: Operation,
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// The version of the request (objects are in this version).
    pub version: String,
    /// The subresource ("" or `status`, `scale`).
    pub sub: String,
    /// The namespace; for a Namespace object, its own name (as the API server sets it).
    pub namespace: String,
    /// The object's name.
    pub name: String,
    /// The new object (none for DELETE).
    pub object: Option<Value>,
    /// The stored object (none for CREATE).
    pub old: Option<Value>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `userInfo` of the AdmissionReview.
    pub user: Value,
}

impl Request {
    /// Whether the request addresses a Namespace object.
    pub fn is_namespace(&self) -> bool {
        self.rt.group.is_empty() && self.rt.plural == "namespaces"
    }

    /// The labels of the object and of the old object.
    pub fn labels_object(&self) -> (Map<String, Value>, Map<String, Value>) {
        let labels = |o: &Option<Value>| {
            o.as_ref()
                .and_then(|o| o.pointer("/metadata/labels"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        (labels(&self.object), labels(&self.old))
    }

    /// The request in another served version of its resource (a rule matched an equivalent version).
    pub fn in_version(&self, version: &str) -> Request {
        if version == self.version {
            return self.clone();
        }
        let convert = |o: &Option<Value>| o.as_ref().map(|o| convert(&self.rt, o, version));
        Request {
            object: convert(&self.object),
            old: convert(&self.old),
            version: version.to_string(),
            ..self.clone()
        }
    }

    /// The `request` of an AdmissionReview (also CEL's `request` variable), without `uid`; `request_version`
    /// is the version the client used.
    pub fn review(&self, request_version: &str) -> Value {
        let g = &self.rt.group;
        let mut r = json!({
            "kind": {"group": g, "version": self.version, "kind": self.rt.kind},
            "resource": {"group": g, "version": self.version, "resource": self.rt.plural},
            "requestKind": {"group": g, "version": request_version, "kind": self.rt.kind},
            "requestResource": {"group": g, "version": request_version, "resource": self.rt.plural},
            "operation": self.op.as_str(),
            "userInfo": self.user,
            "object": self.object.clone().unwrap_or(Value::Null),
            "oldObject": self.old.clone().unwrap_or(Value::Null),
            "dryRun": self.dry_run,
            "options": {"kind": self.op.options_kind(), "apiVersion": "meta.k8s.io/v1"},
        });
        if !self.sub.is_empty() {
            r["subResource"] = json!(self.sub);
            r["requestSubResource"] = json!(self.sub);
        }
        if !self.name.is_empty() {
            r["name"] = json!(self.name);
        }
        if !self.namespace.is_empty() {
            r["namespace"] = json!(self.namespace);
        }
        r
    }

    /// The name error messages show (`Unknown` when the request has none).
    pub fn shown_name(&self) -> String {
        if !self.name.is_empty() {
            return self.name.clone();
        }
        let m = |f: &str| {
            self.object
                .as_ref()
                .and_then(|o| o.pointer(&format!("/metadata/{f}")))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        [m("name"), m("generateName")]
            .into_iter()
            .find(|s| !s.is_empty())
            .unwrap_or_else(|| "Unknown".into())
    }

    /// `plural.group` (or `plural` for the core group).
    pub fn qualified_resource(&self) -> String {
        if self.rt.group.is_empty() {
            self.rt.plural.clone()
        } else {
            format!("{}.{}", self.rt.plural, self.rt.group)
        }
    }
}

/// An object in another served version of its type.
pub fn convert(rt: &ResourceType, obj: &Value, version: &str) -> Value {
    crate::api::view(rt, version, &crate::api::storage_form(rt, obj.clone()))
}

/// The answer of webhooks to one admission step, kept for the next pass.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    /// The object after mutating webhooks (in the request's version).
    pub object: Option<Value>,
    /// Warnings for the client.
    pub warnings: Vec<String>,
    /// The error the request fails with.
    pub error: Option<ApiError>,
}

/// The admission state of one HTTP request across its passes.
#[derive(Debug)]
pub struct Session {
    user: Value,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    memo: HashMap<String, Outcome>,
    pending: Option<webhook::Pending>,
    warnings: Vec<String>,
    stable: HashMap<String, String>,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Session>>> = const { RefCell::new(None) };
}

/// Clears the thread's session when a pass ends, also by a panic.
struct Active;

impl Drop for Active {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

/// At most this many passes per request; more means the object changes under every pass.
pub const MAX_PASSES: usize = 16;

impl Session {
    /// A session for a request made by `user` (`userInfo` JSON).
    pub fn new(user: Value) -> Arc<Session> {
        Arc::new(Session {
            user,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one pass of the request's synchronous work with the hooks active.
    pub fn pass<T>(self: &Arc<Self>, work: impl FnOnce() -> T) -> T {
        self.lock().warnings.clear();
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        let _active = Active;
        work()
    }

    /// The webhook calls the last pass waits for, if it stopped for them.
    pub fn take_pending(&self) -> Option<webhook::Pending> {
        self.lock().pending.take()
    }

    /// Keep the webhooks' answer for the next pass.
    pub fn remember(&self, key: String, outcome: Outcome) {
        self.lock().memo.insert(key, outcome);
    }

    /// Warnings of the last pass, for `Warning` headers.
    pub fn warnings(&self) -> Vec<String> {
        self.lock().warnings.clone()
    }

    fn add_warnings(&self, w: &[String]) {
        self.lock().warnings.extend(w.iter().cloned());
    }
}

fn current() -> Option<Arc<Session>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// A value that stays the same in every pass of the current request (generated names, uids); without a
/// session, `make()`.
pub fn stable(key: &str, make: impl FnOnce() -> String) -> String {
    match current() {
        Some(s) => s
            .lock()
            .stable
            .entry(key.to_string())
            .or_insert_with(make)
            .clone(),
        None => make(),
    }
}

/// The error a pass stops with while webhooks are asked; the server never shows it.
fn pending_error() -> ApiError {
    ApiError::internal("admission webhooks are being called; the request runs again with their answers")
}

/// The admission configuration kinds, which admission never applies to (so a broken webhook cannot lock
/// itself in).
fn exempt(rt: &ResourceType) -> bool {
    rt.group == "admissionregistration.k8s.io"
        && matches!(
            rt.plural.as_str(),
            "validatingwebhookconfigurations"
                | "mutatingwebhookconfigurations"
                | "validatingadmissionpolicies"
                | "validatingadmissionpolicybindings"
                | "mutatingadmissionpolicies"
                | "mutatingadmissionpolicybindings"
        )
}

fn request(
    t: &Target,
    op: Operation,
    object: Option<&Value>,
    old: Option<&Value>,
    dry_run: bool,
    user: &Value,
) -> Request {
    let name = if t.name.is_empty() {
        object
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    } else {
        t.name.clone()
    };
    let is_namespace = t.rt.group.is_empty() && t.rt.plural == "namespaces";
    Request {
        op,
        rt: t.rt.clone(),
        version: t.version.clone(),
        sub: t.sub.clone(),
        namespace: if is_namespace {
            name.clone()
        } else {
            t.namespace.clone()
        },
        name,
        object: object.cloned(),
        old: old.cloned(),
        dry_run,
        user: user.clone(),
    }
}

/// The key of an admission step: everything its answer depends on, without the timestamps a pass sets anew.
fn memo_key(step: &str, req: &Request) -> String {
    let strip = |o: &Option<Value>| {
        let mut o = o.clone().unwrap_or(Value::Null);
        if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("creationTimestamp");
            if let Some(Value::Array(list)) = m.get_mut("managedFields") {
                for e in list.iter_mut().filter_map(Value::as_object_mut) {
                    e.remove("time");
                }
            }
        }
        o
    };
    json!([
        step,
        req.op.as_str(),
        req.rt.group,
        req.rt.plural,
        req.version,
        req.sub,
        req.namespace,
        req.name,
        req.dry_run,
        strip(&req.object),
        strip(&req.old)
    ])
    .to_string()
}

/// The Namespace object a namespaced request is in (for namespaceSelector and `namespaceObject`).
pub fn namespace_of(store: &Store, req: &Request) -> Option<Arc<Value>> {
    if req.namespace.is_empty() || req.is_namespace() {
        return None;
    }
    store.get(&(String::new(), "namespaces".into()), "", &req.namespace)
}

/// Mutating admission of a create or update: may replace `obj` with what the webhooks made of it.
pub fn mutate(
    store: &Store,
    t: &Target,
    op: Operation,
    obj: &mut Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<()> {
    let Some(session) = current() else {
        return Ok(());
    };
    if exempt(&t.rt) {
        return Ok(());
    }
    let req = request(t, op, Some(obj), old, dry_run, &session.user);
    if let Some(o) = webhooks(store, &session, req, true)? {
        *obj = o;
    }
    Ok(())
}

/// Validating admission of a create or update, on the final object (after schema validation).
pub fn validate(
    store: &Store,
    t: &Target,
    op: Operation,
    obj: &Value,
    old: Option<&Value>,
    dry_run: bool,
) -> ApiResult<()> {
    let Some(session) = current() else {
        return Ok(());
    };
    if exempt(&t.rt) {
        return Ok(());
    }
    let req = request(t, op, Some(obj), old, dry_run, &session.user);
    validating(store, &session, req)
}

/// Admission of a delete (mutating webhooks see no object and may not patch; then policies and validating
/// webhooks with `oldObject`).
pub fn delete(store: &Store, t: &Target, old: &Value, dry_run: bool) -> ApiResult<()> {
    let Some(session) = current() else {
        return Ok(());
    };
    if exempt(&t.rt) {
        return Ok(());
    }
    let name = old
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let t = Target {
        name: name.to_string(),
        ..t.clone()
    };
    let req = request(&t, Operation::Delete, None, Some(old), dry_run, &session.user);
    webhooks(store, &session, req.clone(), true)?;
    validating(store, &session, req)
}

fn validating(store: &Store, session: &Session, req: Request) -> ApiResult<()> {
    // The API server's plugin order: ValidatingAdmissionPolicy, then ValidatingAdmissionWebhook.
    let (warnings, denied) = policy::validate(store, &req);
    session.add_warnings(&warnings);
    if let Some(e) = denied {
        return Err(e);
    }
    webhooks(store, session, req, false).map(|_| ())
}

/// Run the matching webhooks of one kind: from the memo when this input was answered, else stop the pass.
fn webhooks(store: &Store, session: &Session, req: Request, mutating: bool) -> ApiResult<Option<Value>> {
    let configs = webhook::configurations(store, mutating);
    if configs.is_empty() {
        return Ok(None);
    }
    let key = memo_key(if mutating { "mutating" } else { "validating" }, &req);
    let known = session.lock().memo.get(&key).cloned();
    if let Some(outcome) = known {
        session.add_warnings(&outcome.warnings);
        return match outcome.error {
            Some(e) => Err(e),
            None => Ok(outcome.object),
        };
    }
    let namespace = namespace_of(store, &req).map(|n| (*n).clone());
    let invocations = webhook::select(store, &configs, &req, namespace.as_ref())?;
    if invocations.is_empty() {
        return Ok(None);
    }
    session.lock().pending = Some(webhook::Pending {
        key,
        mutating,
        req,
        invocations,
    });
    Err(pending_error())
}

/// Whether a `metav1.LabelSelector` (JSON; absent or `{}` selects everything) selects `labels`.
pub fn selects(selector: Option<&Value>, labels: &Map<String, Value>) -> Result<bool, String> {
    let Some(sel) = selector.filter(|s| !s.is_null()) else {
        return Ok(true);
    };
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    if let Some(ml) = sel.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in ml {
            if label(k) != v.as_str() {
                return Ok(false);
            }
        }
    }
    for e in sel
        .get("matchExpressions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let key = e.get("key").and_then(Value::as_str).unwrap_or_default();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or_default();
        let ok = match op {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            other => return Err(format!("{other:?} is not a valid label selector operator")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether one rule (`RuleWithOperations`, or a policy's `NamedRuleWithOperations`) matches the request
/// in `version`.
pub fn rule_matches(rule: &Value, req: &Request, version: &str) -> bool {
    let list = |f: &str| -> Vec<String> {
        rule.get(f)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let has = |f: &str, v: &str| list(f).iter().any(|x| x == "*" || x == v);
    if !has("operations", req.op.as_str()) || !has("apiGroups", &req.rt.group) || !has("apiVersions", version)
    {
        return false;
    }
    let resource = list("resources").iter().any(|r| {
        let (res, sub) = r.split_once('/').unwrap_or((r.as_str(), ""));
        (res == "*" || res == req.rt.plural) && (sub == "*" || sub == req.sub)
    });
    if !resource {
        return false;
    }
    match rule.get("scope").and_then(Value::as_str).unwrap_or("*") {
        // A Namespace is cluster-scoped even though its requests carry its name as their namespace.
        "Namespaced" => !req.is_namespace() && !req.namespace.is_empty(),
        "Cluster" => req.is_namespace() || req.namespace.is_empty(),
        _ => true,
    }
}

/// The version whose rules match: the request's own, or (matchPolicy `Equivalent`) another served version of
/// the same resource.
pub fn matching_version(rules: &[Value], req: &Request, equivalent: bool) -> Option<String> {
    if rules.iter().any(|r| rule_matches(r, req, &req.version)) {
        return Some(req.version.clone());
    }
    if !equivalent {
        return None;
    }
    // Earlier rules first, as the API server honours them.
    rules.iter().find_map(|r| {
        req.rt
            .versions
            .iter()
            .filter(|v| v.name != req.version)
            .find(|v| rule_matches(r, req, &v.name))
            .map(|v| v.name.clone())
    })
}

/// Whether the namespace selector selects the request: cluster-scoped objects always match; a Namespace is
/// matched by its own labels.
pub fn namespace_selected(
    selector: Option<&Value>,
    req: &Request,
    namespace: Option<&Value>,
) -> Result<bool, String> {
    if req.is_namespace() {
        let (new, old) = req.labels_object();
        return selects(selector, if req.object.is_some() { &new } else { &old });
    }
    if req.namespace.is_empty() {
        return Ok(true);
    }
    let labels = namespace
        .and_then(|n| n.pointer("/metadata/labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    selects(selector, &labels)
}

/// Whether the object selector selects the object or the old object.
pub fn object_selected(selector: Option<&Value>, req: &Request) -> Result<bool, String> {
    let (new, old) = req.labels_object();
    Ok((req.object.is_some() && selects(selector, &new)?) || (req.old.is_some() && selects(selector, &old)?))
}

/// CEL variables of admission expressions: `object`, `oldObject`, `request` (plus what the caller adds).
pub fn cel_variables(req: &Request, request_version: &str) -> Vec<(&'static str, cel::Value)> {
    let to = |o: &Option<Value>| o.as_ref().map(crate::cel::to_cel).unwrap_or(cel::Value::Null);
    vec![
        ("object", to(&req.object)),
        ("oldObject", to(&req.old)),
        ("request", crate::cel::to_cel(&req.review(request_version))),
    ]
}

/// `Status.reason` values as `'static` strings (webhooks choose their own).
pub fn reason(r: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "",
        "Unauthorized",
        "Forbidden",
        "NotFound",
        "AlreadyExists",
        "Conflict",
        "Gone",
        "Invalid",
        "ServerTimeout",
        "StoreReadError",
        "Timeout",
        "TooManyRequests",
        "BadRequest",
        "MethodNotAllowed",
        "NotAcceptable",
        "RequestEntityTooLarge",
        "UnsupportedMediaType",
        "InternalError",
        "Expired",
        "ServiceUnavailable",
    ];
    static OTHERS: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    if let Some(k) = KNOWN.iter().find(|k| **k == r) {
        return k;
    }
    let mut others = OTHERS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(k) = others.iter().find(|k| **k == r) {
        return k;
    }
    // A webhook's own reason: kept once per distinct text (a handful in practice).
    let leaked: &'static str = Box::leak(r.to_string().into_boxed_str());
    others.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: Operation, plural: &str, sub: &str, ns: &str) -> Request {
        let reg = crate::resource::Registry::new();
        let group = if plural == "deployments" { "apps" } else { "" };
        Request {
            op,
            rt: reg.by_plural(group, plural).expect("served"),
            version: "v1".into(),
            sub: sub.into(),
            namespace: ns.into(),
            name: "x".into(),
            object: Some(json!({"metadata": {"labels": {"app": "a"}}})),
            old: None,
            dry_run: false,
            user: json!({}),
        }
    }

    #[test]
    fn rules_match_like_the_api_server() {
        let rule = |res: &[&str], scope: &str| json!({"operations": ["CREATE"], "apiGroups": ["", "apps"], "apiVersions": ["v1"], "resources": res, "scope": scope});
        let pod = req(Operation::Create, "pods", "", "default");
        let status = req(Operation::Create, "pods", "status", "default");
        assert!(rule_matches(&rule(&["*"], "*"), &pod, "v1"));
        assert!(!rule_matches(&rule(&["*"], "*"), &status, "v1"));
        assert!(rule_matches(&rule(&["*/*"], "*"), &status, "v1"));
        assert!(rule_matches(&rule(&["pods/status"], "*"), &status, "v1"));
        assert!(rule_matches(&rule(&["pods/*"], "*"), &pod, "v1"));
        assert!(!rule_matches(&rule(&["pods"], "Cluster"), &pod, "v1"));
        assert!(!rule_matches(&rule(&["deployments"], "*"), &pod, "v1"));
        assert!(!rule_matches(
            &rule(&["pods"], "*"),
            &req(Operation::Update, "pods", "", "default"),
            "v1"
        ));
        let mut ns = req(Operation::Create, "namespaces", "", "x");
        ns.namespace = "x".into();
        assert!(rule_matches(&rule(&["namespaces"], "Cluster"), &ns, "v1"));
        assert!(!rule_matches(&rule(&["namespaces"], "Namespaced"), &ns, "v1"));
    }

    #[test]
    fn label_selectors_select() {
        let labels = json!({"app": "a", "tier": "web"});
        let labels = labels.as_object().expect("map");
        let sel = |v: Value| selects(Some(&v), labels);
        assert_eq!(sel(json!({})), Ok(true));
        assert_eq!(sel(json!({"matchLabels": {"app": "a"}})), Ok(true));
        assert_eq!(sel(json!({"matchLabels": {"app": "b"}})), Ok(false));
        assert_eq!(
            sel(json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web"]}]})),
            Ok(true)
        );
        assert_eq!(
            sel(json!({"matchExpressions": [{"key": "x", "operator": "NotIn", "values": ["y"]}]})),
            Ok(true)
        );
        assert_eq!(
            sel(json!({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]})),
            Ok(false)
        );
        assert!(sel(json!({"matchExpressions": [{"key": "app", "operator": "Near"}]})).is_err());
    }
}
