//! HTTP: maps Kubernetes REST paths and query parameters onto discovery, OpenAPI and the object verbs, and
//! turns every failure into a `Status` response.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::api::{self, Inner, ListOptions, Target, WriteOptions};
use crate::delete::{self, DeleteOptions};
use crate::discovery;
use crate::error::{ApiError, ApiResult};
use crate::gnostic;
use crate::openapi;
use crate::select::{FieldSelector, LabelSelector};
use crate::table;
use crate::watch::{self, WatchParams};

/// Server settings shared by all requests of one cluster.
#[derive(Debug)]
pub struct Shared {
    /// The cluster state.
    pub inner: Arc<Inner>,
    /// Bookmark period of watches.
    pub bookmark_every: Duration,
    /// Authentication and authorization (enforced or not), and the tokens handed out.
    pub auth: Arc<crate::auth::Auth>,
    /// Run admission (webhooks and policies) on writes, as every API server does.
    pub admission: bool,
}

/// Largest request body the API server accepts.
const MAX_BODY: usize = 3 * 1024 * 1024;

/// The axum router of one cluster.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    // The real server takes bodies up to 3 MiB; read a bit more so larger ones get a proper Status (413).
    axum::Router::new()
        .fallback(handle)
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY + 1024))
        .with_state(shared)
}

fn json_response(code: u16, body: &Value, content_type: &str, warnings: &[String]) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    add_warnings(&mut resp, warnings);
    resp
}

fn add_warnings(resp: &mut Response, warnings: &[String]) {
    for w in warnings {
        // Warning header: 299 - "text" (quotes and non-ASCII stripped so the header stays valid).
        let text: String = w
            .chars()
            .filter(|c| c.is_ascii() && *c != '"' && !c.is_ascii_control())
            .collect();
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{text}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

fn error_response(e: &ApiError) -> Response {
    json_response(e.code, &e.to_status(), "application/json", &[])
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let query: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    tracing::debug!(%method, %uri, "request");
    if body.len() > MAX_BODY {
        return error_response(&ApiError::too_large(MAX_BODY));
    }
    if let Some(resp) = crate::auth::filter(
        &shared.auth,
        &shared.inner,
        &method,
        &path,
        &query,
        &headers,
        &body,
    ) {
        return resp;
    }
    let is_watch =
        method == Method::GET && matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    if is_watch {
        return match watch_request(&shared, &path, &query, &headers) {
            Ok(r) => r,
            Err(e) => error_response(&e),
        };
    }
    let shared2 = shared.clone();
    // Sync work under catch_unwind: a bug must become a 500, never take the server down.
    let run = || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dispatch(&shared2, &method, &path, &query, &headers, &body)
        }))
    };
    let writes = matches!(method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE");
    let (result, warnings) = if shared.admission && writes {
        let user = crate::auth::user_info(&shared.auth, &shared.inner, &headers);
        admitted(crate::admission::Session::new(user), run).await
    } else {
        (run(), Vec::new())
    };
    let mut resp = match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => error_response(&e),
        Err(_) => error_response(&ApiError::internal(format!(
            "the emulator failed while serving {method} {path}; this is a bug in kube-emulator"
        ))),
    };
    add_warnings(&mut resp, &warnings);
    resp
}

/// Run a write in admission passes: between passes the webhooks a pass waits for are called without the
/// store lock (see [`crate::admission`]). Returns the last pass's result and the admission warnings.
async fn admitted<T>(
    session: Arc<crate::admission::Session>,
    run: impl Fn() -> std::thread::Result<ApiResult<T>>,
) -> (std::thread::Result<ApiResult<T>>, Vec<String>) {
    for _ in 0..crate::admission::MAX_PASSES {
        let result = session.pass(&run);
        match session.take_pending() {
            Some(pending) => {
                let (key, outcome) = pending.run().await;
                session.remember(key, outcome);
            }
            None => return (result, session.warnings()),
        }
    }
    let e = ApiError::internal("the object kept changing while admission webhooks were called; try again");
    (Ok(Err(e)), session.warnings())
}

fn segments(path: &str) -> Vec<&str> {
    path.trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2;")
                || a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2,")
        })
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| {
                a.split(',').any(|p| {
                    p.contains("as=APIGroupDiscoveryList") && p.split(';').any(|x| x.trim() == "v=v2")
                })
            })
}

/// Whether `media_type` is among the types of the Accept header.
fn accepts(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|a| a.split(','))
        .any(|p| p.split(';').next().is_some_and(|t| t.trim() == media_type))
}

/// Whether the client asked for `PartialObjectMetadata` (kube-rs `metadata_watcher`, `Api::get_metadata`).
fn wants_metadata(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|p| p.contains("as=PartialObjectMetadata") && p.contains("g=meta.k8s.io"))
        })
}

/// An object reduced to `PartialObjectMetadata`.
pub fn partial(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

fn table_include(headers: &HeaderMap, query: &HashMap<String, String>) -> Option<String> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok())?;
    if accept
        .split(',')
        .any(|p| p.contains("as=Table") && p.contains("g=meta.k8s.io"))
    {
        Some(
            query
                .get("includeObject")
                .cloned()
                .unwrap_or_else(|| "Metadata".into()),
        )
    } else {
        None
    }
}

const AGG: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

fn dispatch(
    shared: &Shared,
    method: &Method,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let segs = segments(path);
    let inner = &shared.inner;
    let ok = |v: Value| Ok(json_response(200, &v, "application/json", &[]));
    let get_only = |r: ApiResult<Response>| {
        if *method == Method::GET {
            r
        } else {
            Err(ApiError::method_not_allowed(method.as_str(), path))
        }
    };
    match segs.as_slice() {
        ["version"] => get_only(ok(discovery::version())),
        ["healthz" | "livez" | "readyz"] => {
            let mut r = Response::new(Body::from("ok"));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(r)
        }
        ["api"] => get_only(if wants_aggregated(headers) {
            Ok(json_response(
                200,
                &discovery::aggregated(&inner.lock().registry, true),
                AGG,
                &[],
            ))
        } else {
            ok(discovery::api_versions())
        }),
        ["apis"] => get_only(if wants_aggregated(headers) {
            Ok(json_response(
                200,
                &discovery::aggregated(&inner.lock().registry, false),
                AGG,
                &[],
            ))
        } else {
            ok(discovery::api_groups(&inner.lock().registry))
        }),
        ["api", v] => get_only(
            discovery::resource_list(&inner.lock().registry, "", v)
                .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ),
        ["apis", g] => get_only(
            discovery::api_group(&inner.lock().registry, g).map_or_else(|| Err(ApiError::no_route(path)), ok),
        ),
        ["apis", g, v] => get_only(
            discovery::resource_list(&inner.lock().registry, g, v)
                .map_or_else(|| Err(ApiError::no_route(path)), ok),
        ),
        ["openapi", "v2"] => get_only({
            let doc = openapi::v2(&inner.lock().registry);
            if accepts(headers, gnostic::MEDIA_TYPE) || accepts(headers, gnostic::CONTENT_TYPE) {
                let mut r = Response::new(Body::from(gnostic::encode(&doc)));
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(gnostic::CONTENT_TYPE),
                );
                Ok(r)
            } else {
                ok(doc)
            }
        }),
        ["openapi", "v3"] => get_only(ok(openapi::v3_root(&inner.lock().registry))),
        ["openapi", "v3", "api", v] => get_only(ok(openapi::v3_group_version(&inner.lock().registry, "", v))),
        ["openapi", "v3", "apis", g, v] => {
            get_only(ok(openapi::v3_group_version(&inner.lock().registry, g, v)))
        }
        ["api", v, rest @ ..] => {
            let t = target(inner, "", v, rest, path)?;
            verb(shared, t, method, query, headers, body)
        }
        ["apis", g, v, rest @ ..] => {
            let t = target(inner, g, v, rest, path)?;
            verb(shared, t, method, query, headers, body)
        }
        _ => Err(ApiError::no_route(path)),
    }
}

/// Resolve `[namespaces/<ns>/]<plural>[/<name>[/<sub>]]`.
fn target(inner: &Inner, group: &str, version: &str, rest: &[&str], path: &str) -> ApiResult<Target> {
    let reg = inner.lock().registry.clone();
    let (ns, rest) = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if reg.get(group, version, plural).is_some_and(|t| t.namespaced) =>
        {
            (ns.to_string(), {
                let mut v = vec![*plural];
                v.extend_from_slice(tail);
                v
            })
        }
        other => (String::new(), other.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, "", ""),
        [p, n] => (*p, *n, ""),
        [p, n, s] => (*p, *n, *s),
        _ => return Err(ApiError::no_route(path)),
    };
    let Some(rt) = reg.get(group, version, plural) else {
        return Err(ApiError::no_route(path));
    };
    let served_sub = sub.is_empty()
        || (sub == "status" && rt.version(version).is_some_and(|v| v.status_subresource))
        || (sub == "scale" && rt.version(version).is_some_and(|v| v.scale.is_some()));
    if !served_sub {
        return Err(ApiError::no_route(path));
    }
    Ok(Target {
        rt,
        version: version.to_string(),
        namespace: ns,
        name: name.to_string(),
        sub: sub.to_string(),
    })
}

fn write_options(query: &HashMap<String, String>, headers: &HeaderMap) -> ApiResult<WriteOptions> {
    let manager = match query.get("fieldManager") {
        Some(m) if m.len() > 128 => {
            return Err(ApiError::bad_request(
                "fieldManager: Too long: may not be more than 128 bytes",
            ))
        }
        Some(m) => m.clone(),
        None => {
            let ua = headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("unknown");
            // The real server names the manager after the User-Agent's program ("kubectl", "kube-rs").
            ua.split('/').next().unwrap_or("unknown").to_string()
        }
    };
    let dry_run = match query.get("dryRun").map(String::as_str) {
        None | Some("") => false,
        Some("All") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "dryRun: Unsupported value: {other:?}: supported values: \"All\""
            )))
        }
    };
    let strict = match query.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") | Some("Ignore") => false,
        Some("Strict") => true,
        Some(other) => return Err(ApiError::bad_request(format!("fieldValidation: Unsupported value: {other:?}: supported values: \"Ignore\", \"Strict\", \"Warn\""))),
    };
    let force = matches!(query.get("force").map(String::as_str), Some("true" | "1"));
    Ok(WriteOptions {
        dry_run,
        manager_given: query.contains_key("fieldManager"),
        manager,
        strict,
        force,
    })
}

fn list_options(query: &HashMap<String, String>) -> ApiResult<ListOptions> {
    Ok(ListOptions {
        labels: LabelSelector::parse(query.get("labelSelector").map(String::as_str).unwrap_or_default())?,
        fields: FieldSelector::parse(query.get("fieldSelector").map(String::as_str).unwrap_or_default())?,
        limit: match query.get("limit") {
            Some(l) if !l.is_empty() => l.parse().map_err(|_| {
                ApiError::bad_request(format!(
                    "limit: invalid value {l:?}: must be a non-negative integer"
                ))
            })?,
            _ => 0,
        },
        continue_token: query.get("continue").cloned().unwrap_or_default(),
    })
}

fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string()
}

fn written(w: api::Written) -> Response {
    json_response(w.code, &w.body, "application/json", &w.warnings)
}

fn verb(
    shared: &Shared,
    t: Target,
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let inner = &shared.inner;
    let collection = t.name.is_empty();
    if t.sub == "scale" {
        return scale(inner, &t, method, query, headers, body);
    }
    match (method.as_str(), collection) {
        ("GET", true) => {
            if !t.sub.is_empty() {
                return Err(ApiError::method_not_allowed("GET", &t.sub));
            }
            let opts = list_options(query)?;
            let list = api::list_shared(inner, &t, &opts)?;
            if wants_metadata(headers) {
                let items: Vec<Value> = list.items.iter().map(|o| partial(o)).collect();
                let body = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list.metadata, "items": items});
                return Ok(json_response(
                    200,
                    &body,
                    "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1",
                    &[],
                ));
            }
            match table_include(headers, query) {
                Some(include) => Ok(json_response(
                    200,
                    &table::table(&t.rt, &t.version, &list.views(), list.metadata.clone(), &include),
                    "application/json;as=Table;v=v1;g=meta.k8s.io",
                    &[],
                )),
                None => {
                    let mut resp = Response::new(Body::from(list.to_json()));
                    resp.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    Ok(resp)
                }
            }
        }
        ("GET", false) => {
            let obj = api::get(inner, &t)?;
            if wants_metadata(headers) {
                return Ok(json_response(
                    200,
                    &partial(&obj),
                    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1",
                    &[],
                ));
            }
            match table_include(headers, query) {
                Some(include) => Ok(json_response(
                    200,
                    &table::table(&t.rt, &t.version, &[obj], json!({}), &include),
                    "application/json;as=Table;v=v1;g=meta.k8s.io",
                    &[],
                )),
                None => Ok(json_response(200, &obj, "application/json", &[])),
            }
        }
        ("POST", true) => {
            let obj = api::parse_body(body, &content_type(headers))?;
            Ok(written(api::create(
                inner,
                &t,
                obj,
                &write_options(query, headers)?,
            )?))
        }
        ("PUT", false) => {
            let obj = api::parse_body(body, &content_type(headers))?;
            Ok(written(api::update(
                inner,
                &t,
                obj,
                &write_options(query, headers)?,
            )?))
        }
        ("PATCH", false) => {
            let ct = content_type(headers);
            Ok(written(api::patch(
                inner,
                &t,
                &ct,
                body,
                &write_options(query, headers)?,
            )?))
        }
        ("DELETE", _) => {
            let opts_body = if body.iter().all(u8::is_ascii_whitespace) {
                None
            } else {
                Some(api::parse_body(body, &content_type(headers))?)
            };
            let dry = write_options(query, headers)?.dry_run;
            let opts = DeleteOptions::from_request(
                opts_body.as_ref(),
                query.get("propagationPolicy").map(String::as_str),
                query.get("orphanDependents").map(String::as_str),
                dry,
            )?;
            if collection {
                Ok(json_response(
                    200,
                    &delete::delete_collection(inner, &t, &list_options(query)?, &opts)?,
                    "application/json",
                    &[],
                ))
            } else {
                Ok(written(delete::delete(inner, &t, &opts)?))
            }
        }
        (m, _) => Err(ApiError::method_not_allowed(
            m,
            &format!("{}{}", t.rt.plural, if collection { "" } else { "/{name}" }),
        )),
    }
}

fn watch_request(
    shared: &Shared,
    path: &str,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let segs = segments(path);
    let t = match segs.as_slice() {
        ["api", v, rest @ ..] => target(&shared.inner, "", v, rest, path)?,
        ["apis", g, v, rest @ ..] => target(&shared.inner, g, v, rest, path)?,
        _ => return Err(ApiError::no_route(path)),
    };
    let list = list_options(query)?;
    let mut fields = list.fields;
    if !t.name.is_empty() {
        // Watching one object: a field selector on its name.
        fields = FieldSelector::parse(&format!("metadata.name={}", t.name))?;
    }
    let timeout = match query.get("timeoutSeconds") {
        Some(s) if !s.is_empty() => {
            let secs: u64 = s
                .parse()
                .map_err(|_| ApiError::bad_request(format!("timeoutSeconds: invalid value {s:?}")))?;
            // A day is plenty; it keeps the deadline arithmetic far from overflow.
            Some(Duration::from_secs(secs.min(86_400)))
        }
        _ => None,
    };
    let send_initial_events = matches!(query.get("sendInitialEvents").map(String::as_str), Some("true"));
    let bookmarks = matches!(query.get("allowWatchBookmarks").map(String::as_str), Some("true"));
    if send_initial_events
        && (!bookmarks || query.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan"))
    {
        return Err(ApiError::invalid_message("sendInitialEvents requires setting resourceVersionMatch to NotOlderThan and allowWatchBookmarks=true"));
    }
    let params = WatchParams {
        resource_version: query.get("resourceVersion").cloned().unwrap_or_default(),
        send_initial_events,
        bookmarks,
        timeout,
        labels: list.labels,
        fields,
        table: table_include(headers, query),
        metadata_only: wants_metadata(headers),
        bookmark_every: shared.bookmark_every,
    };
    let rx = watch::start(&shared.inner, t, params);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(Bytes::from(line)), rx))
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let ct = if table_include(headers, query).is_some() {
        "application/json;as=Table;v=v1;g=meta.k8s.io"
    } else {
        "application/json"
    };
    if let Ok(v) = HeaderValue::from_str(ct) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, private"),
    );
    Ok(resp)
}

/// The `/scale` subresource (autoscaling/v1 Scale).
fn scale(
    inner: &Inner,
    t: &Target,
    method: &Method,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    match method.as_str() {
        "GET" => Ok(json_response(
            200,
            &api::get_scale(inner, t)?,
            "application/json",
            &[],
        )),
        "PUT" => {
            let wanted = api::parse_body(body, &content_type(headers))?;
            Ok(written(api::update_scale(
                inner,
                t,
                |_| Ok(wanted),
                &write_options(query, headers)?,
            )?))
        }
        "PATCH" => {
            let ct = content_type(headers);
            let ct = ct.split(';').next().unwrap_or_default().trim().to_string();
            let doc = api::parse_body(body, "json")?;
            let next = |mut current: Value| -> ApiResult<Value> {
                match ct.as_str() {
                    "application/json-patch+json" => crate::patch::json_patch(&mut current, &doc)?,
                    "application/merge-patch+json" => crate::patch::merge_patch(&mut current, &doc),
                    "application/strategic-merge-patch+json" => {
                        crate::patch::strategic_merge_patch(&mut current, &doc)
                    }
                    other => return Err(ApiError::unsupported_media_type(other)),
                }
                Ok(current)
            };
            Ok(written(api::update_scale(
                inner,
                t,
                next,
                &write_options(query, headers)?,
            )?))
        }
        m => Err(ApiError::method_not_allowed(m, "scale")),
    }
}
