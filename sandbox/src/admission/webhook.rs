//! Admission webhooks: `ValidatingWebhookConfiguration` and `MutatingWebhookConfiguration`
//! (admissionregistration.k8s.io/v1). Which webhooks a request calls (rules, matchPolicy, namespaceSelector,
//! objectSelector, matchConditions), the AdmissionReview (admission.k8s.io/v1) they get over HTTPS, and what
//! their answers do (JSON patches, warnings, denials, failurePolicy), with the API server's error texts.
//!
//! `clientConfig.url` is called as given. A `clientConfig.service` has no cluster network to reach it here,
//! so the emulator resolves it from the API: the Service (`externalName`, or the address and port of its
//! Endpoints or EndpointSlices, matched by the service port's name), with TLS verified for
//! `<name>.<namespace>.svc` as the API server does. `caBundle` is the only trust when given; without it the
//! system's roots are used.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio_rustls::rustls;

use super::{convert, Outcome, Request};
use crate::error::{ApiError, ApiResult};
use crate::store::Store;

const GROUP: &str = "admissionregistration.k8s.io";

/// One webhook of a configuration.
#[derive(Debug, Clone)]
pub struct Hook {
    /// The configuration's name.
    pub config: String,
    /// The webhook as configured.
    pub spec: Value,
}

impl Hook {
    fn str(&self, field: &str) -> &str {
        self.spec.get(field).and_then(Value::as_str).unwrap_or_default()
    }

    /// `webhooks[].name`.
    pub fn name(&self) -> &str {
        self.str("name")
    }

    fn ignores_failures(&self) -> bool {
        self.str("failurePolicy") == "Ignore"
    }

    fn timeout(&self) -> Duration {
        let secs = self
            .spec
            .get("timeoutSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(10);
        Duration::from_secs(secs.clamp(1, 30))
    }

    fn rules(&self) -> Vec<Value> {
        self.spec
            .get("rules")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }
}

/// The webhooks of all configurations of one kind, in the order the API server calls them (configurations
/// by name, webhooks as listed).
pub fn configurations(store: &Store, mutating: bool) -> Vec<Hook> {
    let plural = if mutating {
        "mutatingwebhookconfigurations"
    } else {
        "validatingwebhookconfigurations"
    };
    let mut configs = store.list(&(GROUP.into(), plural.into()), None);
    let name = |c: &Value| crate::meta::meta_str(c, "name").to_string();
    configs.sort_by_key(|c| name(c));
    configs
        .iter()
        .flat_map(|c| {
            let config = name(c);
            c.get("webhooks")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |spec| Hook {
                    config: config.clone(),
                    spec,
                })
        })
        .collect()
}

/// Where a webhook is reached.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The URL as the API server shows it in errors (`https://svc.ns.svc:443/path` for services).
    pub url: String,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to.
    pub port: u16,
    /// The name the serving certificate must be valid for.
    pub server_name: String,
    /// Path (and query) of the POST.
    pub path: String,
    /// PEM from `caBundle`.
    pub ca: Option<Vec<u8>>,
}

/// A webhook the request calls.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The webhook.
    pub hook: Hook,
    /// The version its rules matched (objects are sent in it).
    pub version: String,
    /// Where to call it, or why it cannot be reached (`Post "<url>": <reason>`).
    pub endpoint: Result<Endpoint, String>,
}

/// Webhook calls a pass stopped for.
#[derive(Debug)]
pub struct Pending {
    /// The memo key of the admission step.
    pub key: String,
    /// Mutating (called one after the other) or validating (called at once).
    pub mutating: bool,
    /// The request, in its own version.
    pub req: Request,
    /// The matching webhooks, in order.
    pub invocations: Vec<Invocation>,
}

/// The webhooks among `hooks` whose rules and selectors match the request.
pub fn select(
    store: &Store,
    hooks: &[Hook],
    req: &Request,
    namespace: Option<&Value>,
) -> ApiResult<Vec<Invocation>> {
    let mut out = Vec::new();
    for hook in hooks {
        let equivalent = hook.str("matchPolicy") != "Exact";
        let Some(version) = super::matching_version(&hook.rules(), req, equivalent) else {
            continue;
        };
        let selected = super::namespace_selected(hook.spec.get("namespaceSelector"), req, namespace)
            .and_then(|ns| Ok(ns && super::object_selected(hook.spec.get("objectSelector"), req)?))
            .map_err(|e| ApiError::internal(format!("Internal error occurred: {e}")))?;
        if !selected {
            continue;
        }
        out.push(Invocation {
            hook: hook.clone(),
            version,
            endpoint: endpoint(store, &hook.spec, hook.timeout()),
        });
    }
    Ok(out)
}

fn timeout_query(t: Duration) -> String {
    format!("?timeout={}s", t.as_secs())
}

/// Resolve `clientConfig`.
fn endpoint(store: &Store, spec: &Value, timeout: Duration) -> Result<Endpoint, String> {
    let cc = spec.get("clientConfig").cloned().unwrap_or(Value::Null);
    let ca = match cc
        .get("caBundle")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    {
        Some(b) => Some(
            base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("clientConfig.caBundle is not base64: {e}"))?,
        ),
        None => None,
    };
    if let Some(url) = cc.get("url").and_then(Value::as_str) {
        let shown = format!("Post \"{url}{}\"", timeout_query(timeout));
        let uri: axum::http::Uri = url.parse().map_err(|e| format!("{shown}: {e}"))?;
        if uri.scheme_str() != Some("https") {
            return Err(format!(
                "{shown}: unsupported protocol scheme; webhooks are called over https"
            ));
        }
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        return Ok(Endpoint {
            url: url.to_string(),
            port: uri.port_u16().unwrap_or(443),
            server_name: host.clone(),
            host,
            path: uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            ca,
        });
    }
    let Some(svc) = cc.get("service").filter(|s| s.is_object()) else {
        return Err("the webhook has neither clientConfig.url nor clientConfig.service".into());
    };
    let s = |f: &str| svc.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    let (ns, name) = (s("namespace"), s("name"));
    let path = Some(s("path"))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".into());
    let port = svc.get("port").and_then(Value::as_u64).unwrap_or(443) as u16;
    let server_name = format!("{name}.{ns}.svc");
    let url = format!("https://{server_name}:{port}{path}");
    let shown = format!("Post \"{url}{}\"", timeout_query(timeout));
    let (host, target_port) =
        service_address(store, &ns, &name, port).map_err(|e| format!("{shown}: {e}"))?;
    Ok(Endpoint {
        url,
        host,
        port: target_port,
        server_name,
        path,
        ca,
    })
}

/// Where a Service's port leads: its `externalName`, or an address of its endpoints.
fn service_address(store: &Store, ns: &str, name: &str, port: u16) -> Result<(String, u16), String> {
    let Some(service) = store.get(&(String::new(), "services".into()), ns, name) else {
        return Err(format!("service \"{name}\" not found"));
    };
    if let Some(external) = service.pointer("/spec/externalName").and_then(Value::as_str) {
        return Ok((external.to_string(), port));
    }
    let ports = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(sp) = ports
        .iter()
        .find(|p| p.get("port").and_then(Value::as_u64) == Some(u64::from(port)))
    else {
        return Err(format!("service \"{name}\" has no port {port}"));
    };
    let port_name = sp.get("name").and_then(Value::as_str).unwrap_or_default();
    let target = match sp.get("targetPort") {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as u16),
        Some(Value::String(_)) => None,
        _ => Some(port),
    };
    let pick = |ports: Option<&Vec<Value>>| -> Option<u16> {
        let ports = ports.cloned().unwrap_or_default();
        ports
            .iter()
            .find(|p| p.get("name").and_then(Value::as_str).unwrap_or_default() == port_name)
            .or_else(|| if ports.len() == 1 { ports.first() } else { None })
            .and_then(|p| p.get("port").and_then(Value::as_u64))
            .map(|p| p as u16)
            .or(target)
    };
    if let Some(ep) = store.get(&(String::new(), "endpoints".into()), ns, name) {
        for subset in ep.get("subsets").and_then(Value::as_array).into_iter().flatten() {
            let ip = subset.pointer("/addresses/0/ip").and_then(Value::as_str);
            if let (Some(ip), Some(p)) = (ip, pick(subset.get("ports").and_then(Value::as_array))) {
                return Ok((ip.to_string(), p));
            }
        }
    }
    for slice in store.list(&("discovery.k8s.io".into(), "endpointslices".into()), Some(ns)) {
        if slice
            .pointer("/metadata/labels/kubernetes.io~1service-name")
            .and_then(Value::as_str)
            != Some(name)
        {
            continue;
        }
        let ip = slice.pointer("/endpoints/0/addresses/0").and_then(Value::as_str);
        if let (Some(ip), Some(p)) = (ip, pick(slice.get("ports").and_then(Value::as_array))) {
            return Ok((ip.to_string(), p));
        }
    }
    Err(format!("no endpoints available for service \"{name}\""))
}

/// Why a call failed: the webhook could not be called (subject to failurePolicy), or the request fails
/// with this error whatever the policy says (a denial, dry run unsupported, a broken patch).
enum CallError {
    Calling(String),
    Status(ApiError),
}

/// What an allowing webhook answered.
struct Answer {
    patch: Option<Value>,
}

impl Pending {
    /// Ask the webhooks; the outcome goes to the session under [`Pending::key`].
    pub async fn run(self) -> (String, Outcome) {
        let outcome = if self.mutating {
            self.run_mutating().await
        } else {
            self.run_validating().await
        };
        (self.key, outcome)
    }

    async fn run_validating(&self) -> Outcome {
        let calls = self.invocations.iter().map(|inv| async move {
            let req = self.req.in_version(&inv.version);
            let mut warnings = Vec::new();
            let result = call(inv, &req, &self.req.version, false, &mut warnings).await;
            (inv, result, warnings)
        });
        let mut out = Outcome::default();
        for (inv, result, warnings) in futures_util::future::join_all(calls).await {
            out.warnings.extend(warnings);
            if out.error.is_none() {
                out.error = failure(inv, result.err());
            }
        }
        out
    }

    async fn run_mutating(&self) -> Outcome {
        let mut out = Outcome::default();
        let mut current = self.req.clone();
        let mut changed_any = false;
        // Webhooks with reinvocationPolicy IfNeeded run once more when a later webhook changed the object.
        let mut reinvocable: Vec<usize> = Vec::new();
        let mut again = vec![false; self.invocations.len()];
        for (i, inv) in self.invocations.iter().enumerate() {
            match self.step(inv, &mut current, &mut out.warnings).await {
                Ok(changed) => {
                    if changed {
                        changed_any = true;
                        for j in &reinvocable {
                            again[*j] = true;
                        }
                    }
                }
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
            if inv.hook.str("reinvocationPolicy") == "IfNeeded" {
                reinvocable.push(i);
            }
        }
        for (i, inv) in self.invocations.iter().enumerate().filter(|(i, _)| again[*i]) {
            tracing::debug!(
                webhook = inv.hook.name(),
                round = 1,
                index = i,
                "reinvoking webhook"
            );
            match self.step(inv, &mut current, &mut out.warnings).await {
                Ok(changed) => changed_any |= changed,
                Err(e) => {
                    out.error = Some(e);
                    return out;
                }
            }
        }
        if changed_any {
            out.object = current.object;
        }
        out
    }

    /// Call one mutating webhook on the current object; true when its patch changed the object.
    async fn step(
        &self,
        inv: &Invocation,
        current: &mut Request,
        warnings: &mut Vec<String>,
    ) -> Result<bool, ApiError> {
        // The object may have changed since the selectors were checked.
        match super::object_selected(inv.hook.spec.get("objectSelector"), current) {
            Ok(true) => {}
            Ok(false) => return Ok(false),
            Err(e) => return Err(ApiError::internal(format!("Internal error occurred: {e}"))),
        }
        let versioned = current.in_version(&inv.version);
        let answer = match call(inv, &versioned, &self.req.version, true, warnings).await {
            Ok(Some(a)) => a,
            Ok(None) => return Ok(false),
            Err(e) => {
                return match failure(inv, Some(e)) {
                    Some(e) => Err(e),
                    None => Ok(false),
                }
            }
        };
        let Some(patch) = answer.patch else {
            return Ok(false);
        };
        if patch.as_array().is_some_and(Vec::is_empty) {
            return Ok(false);
        }
        let Some(mut obj) = versioned.object.clone() else {
            return Err(ApiError::internal(format!(
                "Internal error occurred: admission webhook {:?} attempted to modify the object, which is not supported for this operation",
                inv.hook.name()
            )));
        };
        crate::patch::json_patch(&mut obj, &patch)
            .map_err(|e| ApiError::internal(format!("Internal error occurred: {}", e.message)))?;
        let back = convert(&self.req.rt, &obj, &self.req.version);
        let changed = Some(&back) != current.object.as_ref();
        current.object = Some(back);
        Ok(changed)
    }
}

/// The request's error for a failed call, or none when failurePolicy Ignore lets it pass.
fn failure(inv: &Invocation, e: Option<CallError>) -> Option<ApiError> {
    match e? {
        CallError::Status(e) => Some(e),
        CallError::Calling(reason) => {
            let err = format!("failed calling webhook {:?}: {reason}", inv.hook.name());
            if inv.hook.ignores_failures() {
                tracing::warn!(webhook = inv.hook.name(), error = %err, "failed calling webhook, failing open");
                return None;
            }
            tracing::warn!(webhook = inv.hook.name(), error = %err, "failed calling webhook, failing closed");
            Some(ApiError {
                code: 500,
                reason: "InternalError",
                message: format!("Internal error occurred: {err}"),
                details: Some(json!({"causes": [{"message": err}]})),
            })
        }
    }
}

/// The 1.32 API server's `ToStatusErr`: the webhook's status with the denial in front of its message.
fn denial(name: &str, result: Option<&Value>) -> ApiError {
    let r = result.cloned().unwrap_or(json!({}));
    let s = |f: &str| r.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    let by = format!("admission webhook {name:?} denied the request");
    let message = match (s("message"), s("reason")) {
        (m, _) if !m.is_empty() => format!("{by}: {m}"),
        (_, reason) if !reason.is_empty() => format!("{by}: {reason}"),
        _ => format!("{by} without explanation"),
    };
    let code = r.get("code").and_then(Value::as_u64).unwrap_or(0);
    ApiError {
        code: if !(400..=599).contains(&code) {
            400
        } else {
            code as u16
        },
        reason: super::reason(&s("reason")),
        message,
        details: r.get("details").filter(|d| d.is_object()).cloned(),
    }
}

/// Evaluate matchConditions: `Ok(false)` skips the webhook.
fn conditions_match(inv: &Invocation, req: &Request, request_version: &str) -> Result<bool, CallError> {
    let conditions = inv
        .hook
        .spec
        .get("matchConditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if conditions.is_empty() {
        return Ok(true);
    }
    let vars = super::cel_variables(req, request_version);
    let mut errors = Vec::new();
    for c in &conditions {
        let name = c.get("name").and_then(Value::as_str).unwrap_or_default();
        let expression = c.get("expression").and_then(Value::as_str).unwrap_or_default();
        let result = crate::cel::compile(expression).and_then(|rule| crate::cel::eval_with(&rule, &vars));
        match result {
            Ok(cel::Value::Bool(true)) => {}
            Ok(cel::Value::Bool(false)) => return Ok(false),
            Ok(other) => errors.push(format!("matchCondition {name:?}: expected a bool, got {other:?}")),
            Err(e) => errors.push(format!("expression '{expression}' resulted in error: {e}")),
        }
    }
    if errors.is_empty() {
        return Ok(true);
    }
    if inv.hook.ignores_failures() {
        return Ok(false);
    }
    let joined = if errors.len() == 1 {
        errors.remove(0)
    } else {
        format!("[{}]", errors.join(", "))
    };
    Err(CallError::Status(ApiError {
        code: 403,
        reason: "Forbidden",
        message: format!(
            "{} {:?} is forbidden: {joined}",
            req.qualified_resource(),
            req.shown_name()
        ),
        details: Some(json!({"name": req.shown_name(), "group": req.rt.group, "kind": req.rt.plural})),
    }))
}

/// Call one webhook with the request in the webhook's version. `Ok(None)`: its matchConditions skip it.
async fn call(
    inv: &Invocation,
    req: &Request,
    request_version: &str,
    mutating: bool,
    warnings: &mut Vec<String>,
) -> Result<Option<Answer>, CallError> {
    if !conditions_match(inv, req, request_version)? {
        return Ok(None);
    }
    let name = inv.hook.name();
    if req.dry_run {
        match inv.hook.str("sideEffects") {
            "None" | "NoneOnDryRun" => {}
            "" => return Err(CallError::Calling("Webhook SideEffects is nil".into())),
            _ => {
                return Err(CallError::Status(ApiError::bad_request(format!(
                    "admission webhook {name:?} does not support dry run"
                ))))
            }
        }
    }
    let versions = inv
        .hook
        .spec
        .get("admissionReviewVersions")
        .and_then(Value::as_array);
    if !versions.is_some_and(|v| v.iter().any(|x| x.as_str() == Some("v1"))) {
        return Err(CallError::Calling(
            "could not create admission objects: webhook does not accept the admission.k8s.io/v1 AdmissionReview (the only version the emulator sends)".into(),
        ));
    }
    let endpoint = inv
        .endpoint
        .as_ref()
        .map_err(|e| CallError::Calling(format!("failed to call webhook: {e}")))?;
    let uid = uuid::Uuid::new_v4().to_string();
    let mut request = req.review(request_version);
    request["uid"] = json!(uid);
    let review = json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request});
    let timeout = inv.hook.timeout();
    let shown = format!("Post \"{}{}\"", endpoint.url, timeout_query(timeout));
    let (status, body) = post(endpoint, timeout, serde_json::to_vec(&review).unwrap_or_default())
        .await
        .map_err(|e| CallError::Calling(format!("failed to call webhook: {shown}: {e}")))?;
    if !(200..300).contains(&status) {
        return Err(CallError::Calling(format!(
            "failed to call webhook: {}",
            http_error(status, &body)
        )));
    }
    let response = verify(&uid, mutating, &body)
        .map_err(|e| CallError::Calling(format!("received invalid webhook response: {e}")))?;
    warnings.extend(
        response
            .get("warnings")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_string),
    );
    if response.get("allowed").and_then(Value::as_bool) != Some(true) {
        return Err(CallError::Status(denial(name, response.get("status"))));
    }
    let patch = match response
        .get("patch")
        .and_then(Value::as_str)
        .filter(|p| !p.is_empty())
    {
        None => None,
        Some(p) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(p)
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .filter(Value::is_array);
            match decoded {
                Some(patch) => Some(patch),
                None => {
                    return Err(CallError::Calling(
                        "received undecodable patch in webhook response: not a base64-encoded JSON patch"
                            .into(),
                    ))
                }
            }
        }
    };
    Ok(Some(Answer { patch }))
}

/// `VerifyAdmissionResponse`: the response of an AdmissionReview v1.
fn verify(uid: &str, mutating: bool, body: &[u8]) -> Result<Value, String> {
    let review: Value = serde_json::from_slice(body).map_err(|e| format!("the response is not JSON: {e}"))?;
    let s = |v: &Value, f: &str| v.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
    let (api_version, kind) = (s(&review, "apiVersion"), s(&review, "kind"));
    if api_version != "admission.k8s.io/v1" || kind != "AdmissionReview" {
        return Err(format!(
            "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got {api_version}, Kind={kind}"
        ));
    }
    let Some(response) = review.get("response").filter(|r| r.is_object()) else {
        return Err("webhook response was absent".into());
    };
    let got = s(response, "uid");
    if got != uid {
        return Err(format!("expected response.uid={uid:?}, got {got:?}"));
    }
    let has_patch = response
        .get("patch")
        .and_then(Value::as_str)
        .is_some_and(|p| !p.is_empty());
    if has_patch {
        if !mutating {
            return Err("validating webhook may not return response.patch".into());
        }
        match s(response, "patchType").as_str() {
            "JSONPatch" => {}
            "" => return Err("webhook returned response.patch but not response.patchType".into()),
            other => {
                return Err(format!(
                    "webhook returned invalid response.patchType of {other:?}"
                ))
            }
        }
    }
    Ok(response.clone())
}

/// How client-go describes a non-2xx answer.
fn http_error(status: u16, body: &[u8]) -> String {
    if let Ok(s) = serde_json::from_slice::<Value>(body) {
        if s.get("kind").and_then(Value::as_str) == Some("Status") {
            if let Some(m) = s.get("message").and_then(Value::as_str) {
                return m.to_string();
            }
        }
    }
    match status {
        400 => "the server rejected our request for an unknown reason".into(),
        401 => "Unauthorized".into(),
        403 => "forbidden".into(),
        404 => "the server could not find the requested resource".into(),
        503 => "the server is currently unable to handle the request".into(),
        500..=599 => format!(
            "an error on the server ({:?}) has prevented the request from succeeding",
            String::from_utf8_lossy(body).trim()
        ),
        other => {
            format!("the server responded with the status code {other} but did not return more information")
        }
    }
}

fn tls_config(ca: Option<&[u8]>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(pem) => {
            for cert in CertificateDer::pem_slice_iter(pem) {
                let cert =
                    cert.map_err(|e| format!("x509: the caBundle holds no valid PEM certificate: {e}"))?;
                roots.add(cert).map_err(|e| format!("x509: {e}"))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Go's words for a TLS failure.
fn tls_error(e: &std::io::Error, server_name: &str) -> String {
    use rustls::CertificateError;
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        // A CA of the same name that did not sign the certificate is as unknown to Go as any other.
        Some(rustls::Error::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature,
        )) => "tls: failed to verify certificate: x509: certificate signed by unknown authority".into(),
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!("tls: failed to verify certificate: x509: certificate is not valid for {server_name}"),
        Some(other) => format!("tls: {other}"),
        None => e.to_string(),
    }
}

/// POST JSON over HTTPS; the status and body of the answer.
async fn post(ep: &Endpoint, timeout: Duration, body: Vec<u8>) -> Result<(u16, Vec<u8>), String> {
    use axum::http::header;
    use http_body_util::BodyExt;
    let work = async {
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::ConnectionRefused => {
                    format!("dial tcp {}:{}: connect: connection refused", ep.host, ep.port)
                }
                _ => format!("dial tcp {}:{}: {e}", ep.host, ep.port),
            })?;
        let config = tls_config(ep.ca.as_deref())?;
        let name =
            rustls::pki_types::ServerName::try_from(ep.server_name.clone()).map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| tls_error(&e, &ep.server_name))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(connection);
        let path = format!(
            "{}{}{}",
            ep.path,
            if ep.path.contains('?') { "&" } else { "?" },
            &timeout_query(timeout)[1..]
        );
        let request = axum::http::Request::post(path)
            .header(header::HOST, format!("{}:{}", ep.server_name, ep.port))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, */*")
            .header(header::USER_AGENT, "kube-apiserver-admission")
            .body(http_body_util::Full::new(axum::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        driver.abort();
        Ok((status, bytes.to_vec()))
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err("context deadline exceeded".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_read_like_the_api_server() {
        let e = denial(
            "deny.example.com",
            Some(&json!({"message": "no", "code": 403, "reason": "Forbidden"})),
        );
        assert_eq!(
            (e.code, e.reason, e.message.as_str()),
            (
                403,
                "Forbidden",
                "admission webhook \"deny.example.com\" denied the request: no"
            )
        );
        let e = denial("d", None);
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "admission webhook \"d\" denied the request without explanation"
            )
        );
        let e = denial("d", Some(&json!({"reason": "because", "code": 200})));
        assert_eq!(
            (e.code, e.message.as_str()),
            (400, "admission webhook \"d\" denied the request: because")
        );
    }

    #[test]
    fn responses_are_verified() {
        let ok = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u", "allowed": true}});
        assert!(verify("u", false, ok.to_string().as_bytes()).is_ok());
        assert_eq!(
            verify("v", false, ok.to_string().as_bytes()).err().as_deref(),
            Some("expected response.uid=\"v\", got \"u\"")
        );
        let patch = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"uid": "u", "allowed": true, "patch": "W10="}});
        assert_eq!(
            verify("u", true, patch.to_string().as_bytes()).err().as_deref(),
            Some("webhook returned response.patch but not response.patchType")
        );
    }
}
