//! The verbs on objects (get, list, create, update, patch, apply; delete is in `delete`) with the API server's semantics:
//! resourceVersion preconditions, generation, status subresource, managedFields, finalizers, dry run.

use std::sync::{Arc, Mutex, MutexGuard};

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::apply;
use crate::error::{ApiError, ApiResult, Cause};
use crate::meta::{self, deleting, finalizers, meta_mut, meta_str, now, rv_of, set_finalizers};
use crate::patch;
use crate::resource::{self, Builtin, ResourceType};
use crate::select::{FieldSelector, LabelSelector};
use crate::store::{EventType, ResourceKey, Store};
use crate::validation;

/// Finalizer the emulator's CRD controller puts on CRDs so their objects go first.
pub const CRD_CLEANUP: &str = "customresourcecleanup.apiextensions.k8s.io";
/// Finalizer of foreground deletion.
pub const FOREGROUND: &str = "foregroundDeletion";

/// Shared state of one cluster.
#[derive(Debug)]
pub struct Inner {
    store: Mutex<Store>,
    /// Wakes the garbage collector (ownerReferences, namespaces, CRDs).
    pub gc: Arc<Notify>,
    /// Wakes the snapshot writer.
    pub changed: Arc<Notify>,
    /// Set to true when the cluster stops: open watches end so clients reconnect.
    pub closing: tokio::sync::watch::Sender<bool>,
}

impl Inner {
    /// A cluster with the built-in types and nothing stored.
    pub fn new(history: usize) -> Self {
        Inner {
            store: Mutex::new(Store::new(history)),
            gc: Arc::new(Notify::new()),
            changed: Arc::new(Notify::new()),
            closing: tokio::sync::watch::channel(false).0,
        }
    }

    /// Lock the store. A panic while holding the lock must not take every later request down with it.
    pub fn lock(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What a request addresses.
#[derive(Debug, Clone)]
pub struct Target {
    /// The resource type.
    pub rt: Arc<ResourceType>,
    /// The version in the URL.
    pub version: String,
    /// Namespace from the URL ("" for cluster-scoped or all namespaces).
    pub namespace: String,
    /// Name from the URL ("" for collections).
    pub name: String,
    /// Subresource ("" or `status`).
    pub sub: String,
}

impl Target {
    pub(crate) fn key(&self) -> ResourceKey {
        (self.rt.storage_group.clone(), self.rt.plural.clone())
    }

    fn schema(&self) -> Option<&Value> {
        self.rt.version(&self.version).and_then(|v| v.schema.as_deref())
    }

    fn status_sub(&self) -> bool {
        self.rt
            .version(&self.version)
            .is_some_and(|v| v.status_subresource)
    }
}

/// Options of a write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `fieldManager` (or derived from the User-Agent).
    pub manager: String,
    /// Whether `fieldManager` was in the request (server-side apply requires it).
    pub manager_given: bool,
    /// `fieldValidation=Strict`: unknown fields are errors instead of warnings.
    pub strict: bool,
    /// `force=true` for server-side apply.
    pub force: bool,
}

/// A successful write: status code, body, and `Warning` headers.
#[derive(Debug)]
pub struct Written {
    /// 200 or 201.
    pub code: u16,
    /// The object.
    pub body: Value,
    /// Warnings (unknown fields, deprecated versions).
    pub warnings: Vec<String>,
}

/// An object in the storage version (the form the store keeps).
pub(crate) fn storage_form(rt: &ResourceType, obj: Value) -> Value {
    let mut obj = obj;
    if let Some(hook) = &rt.conversion {
        return hook.convert(obj, &rt.storage_group, &rt.storage_version);
    }
    if rt.builtin == Some(Builtin::Event) && rt.group == "events.k8s.io" {
        obj = meta::event_from_v1(&obj);
    }
    obj["apiVersion"] = json!(if rt.storage_group.is_empty() {
        rt.storage_version.clone()
    } else {
        format!("{}/{}", rt.storage_group, rt.storage_version)
    });
    obj
}

/// An object as the requested version shows it.
pub fn view(rt: &ResourceType, version: &str, obj: &Value) -> Value {
    let mut out = if let Some(hook) = &rt.conversion {
        let mut obj = obj.clone();
        // A request body may leave apiVersion out: it is in the version of the URL.
        if obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            obj["apiVersion"] = json!(rt.api_version(version));
        }
        hook.convert(obj, &rt.group, version)
    } else if rt.builtin == Some(Builtin::Event) && rt.group == "events.k8s.io" {
        meta::event_to_v1(obj)
    } else {
        obj.clone()
    };
    out["apiVersion"] = json!(rt.api_version(version));
    out["kind"] = json!(rt.kind);
    out
}

fn decode_error(rt: &ResourceType, version: &str, detail: &str) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{version}\" cannot be handled as a {}: {detail}",
        rt.kind, rt.kind
    ))
}

/// Parse a request body (JSON or YAML).
pub fn parse_body(body: &[u8], content_type: &str) -> ApiResult<Value> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "the request body is empty: send the object as JSON or YAML",
        ));
    }
    if content_type.contains("protobuf") {
        return crate::proto::decode(body);
    }
    if content_type.contains("yaml") {
        let text = std::str::from_utf8(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not UTF-8: {e}")))?;
        serde_yaml::from_str(text)
            .map_err(|e| ApiError::bad_request(format!("error converting YAML to JSON: {e}")))
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
    }
}

/// Type checks the Go structs would make while decoding a built-in kind (400 like the real server):
/// metadata and Secret data here, every field of the common built-in kinds in [`crate::typed`].
fn decode_checks(t: &Target, obj: &Value) -> ApiResult<()> {
    let rt = &t.rt;
    if !obj.is_object() {
        return Err(decode_error(rt, &t.version, "the body must be a JSON object"));
    }
    if let Some(m) = obj.get("metadata") {
        if !m.is_object() && !m.is_null() {
            return Err(decode_error(
                rt,
                &t.version,
                "json: cannot unmarshal metadata into Go struct field of type v1.ObjectMeta",
            ));
        }
        for f in ["labels", "annotations"] {
            if let Some(map) = m.get(f) {
                let ok = map.is_null() || map.as_object().is_some_and(|o| o.values().all(Value::is_string));
                if !ok {
                    return Err(decode_error(rt, &t.version, &format!("json: cannot unmarshal into Go struct field ObjectMeta.metadata.{f} of type map[string]string")));
                }
            }
        }
    }
    if matches!(rt.builtin, Some(Builtin::Secret)) {
        for f in ["data", "stringData"] {
            if let Some(d) = obj.get(f).and_then(Value::as_object) {
                for (k, v) in d {
                    let Some(s) = v.as_str() else {
                        return Err(decode_error(rt, &t.version, &format!("json: cannot unmarshal into Go struct field Secret.{f} of type string (key {k:?})")));
                    };
                    if f == "data" && base64::engine::general_purpose::STANDARD.decode(s).is_err() {
                        return Err(decode_error(
                            rt,
                            &t.version,
                            &format!("illegal base64 data in data[{k:?}]"),
                        ));
                    }
                }
            }
        }
    }
    if t.schema().is_none() {
        if let Some(why) = crate::typed::decode_error(&rt.group, &rt.kind, obj) {
            return Err(decode_error(rt, &t.version, &why));
        }
    }
    Ok(())
}

fn check_type_meta(t: &Target, obj: &Value) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or_default();
    let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{}'",
            truncate(&obj.to_string())
        )));
    }
    if kind != t.rt.kind {
        return Err(ApiError::bad_request(format!(
            "the kind of the object ({kind}) does not match the kind served at this URL ({})",
            t.rt.kind
        )));
    }
    let want = t.rt.api_version(&t.version);
    if !api_version.is_empty() && api_version != want {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({want})"
        )));
    }
    Ok(())
}

fn truncate(s: &str) -> String {
    if s.len() > 200 {
        format!(
            "{}...",
            &s[..s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s.to_string()
    }
}

/// GET one object.
pub fn get(inner: &Inner, t: &Target) -> ApiResult<Value> {
    let store = inner.lock();
    let obj = store
        .get(&t.key(), &t.namespace, &t.name)
        .ok_or_else(|| ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name))?;
    Ok(view(&t.rt, &t.version, &obj))
}

/// List parameters.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    /// labelSelector.
    pub labels: LabelSelector,
    /// fieldSelector.
    pub fields: FieldSelector,
    /// limit (0: all).
    pub limit: usize,
    /// continue token.
    pub continue_token: String,
}

/// A list result: items as stored (shared), shown in the requested version when serialized.
#[derive(Debug)]
pub struct Listed {
    /// `kind` of the list.
    pub kind: String,
    /// `apiVersion` of the list and its items.
    pub api_version: String,
    /// List metadata (resourceVersion, continue).
    pub metadata: Value,
    /// Stored objects.
    pub items: Vec<Arc<Value>>,
    rt: Arc<ResourceType>,
    version: String,
}

impl Listed {
    /// Items in the requested version.
    pub fn views(&self) -> Vec<Value> {
        self.items
            .iter()
            .map(|o| view(&self.rt, &self.version, o))
            .collect()
    }

    /// The list object.
    pub fn to_value(&self) -> Value {
        json!({"kind": self.kind, "apiVersion": self.api_version, "metadata": self.metadata, "items": self.views()})
    }

    /// Serialize without copying objects that are already in the requested form.
    pub fn to_json(&self) -> Vec<u8> {
        #[derive(serde::Serialize)]
        #[serde(untagged)]
        enum Item<'a> {
            Stored(&'a Value),
            Shown(Value),
        }
        #[derive(serde::Serialize)]
        struct Body<'a> {
            kind: &'a str,
            #[serde(rename = "apiVersion")]
            api_version: &'a str,
            metadata: &'a Value,
            items: Vec<Item<'a>>,
        }
        let converted = self.rt.builtin == Some(Builtin::Event) && self.rt.group == "events.k8s.io";
        let items = self
            .items
            .iter()
            .map(|o| {
                let same = !converted
                    && o.get("apiVersion").and_then(Value::as_str) == Some(self.api_version.as_str())
                    && o.get("kind").and_then(Value::as_str) == Some(self.rt.kind.as_str());
                if same {
                    Item::Stored(o)
                } else {
                    Item::Shown(view(&self.rt, &self.version, o))
                }
            })
            .collect();
        serde_json::to_vec(&Body {
            kind: &self.kind,
            api_version: &self.api_version,
            metadata: &self.metadata,
            items,
        })
        .unwrap_or_default()
    }
}

/// LIST: returns the list object.
pub fn list(inner: &Inner, t: &Target, opts: &ListOptions) -> ApiResult<Value> {
    list_shared(inner, t, opts).map(|l| l.to_value())
}

/// LIST without copying the objects.
pub fn list_shared(inner: &Inner, t: &Target, opts: &ListOptions) -> ApiResult<Listed> {
    let store = inner.lock();
    let (start, rv) = if opts.continue_token.is_empty() {
        (None, store.current_rv())
    } else {
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&opts.continue_token)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        let Some(c) = raw else {
            return Err(ApiError::bad_request("continue key is not valid: illegal base64 data or JSON; start the list again without continue"));
        };
        let ns = c
            .get("ns")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let name = c
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let rv = c.get("rv").and_then(Value::as_u64).unwrap_or(0);
        if rv < store.compacted_rv() {
            return Err(ApiError::gone("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter."));
        }
        (Some((ns, name)), rv)
    };
    let ns = if t.rt.namespaced && !t.namespace.is_empty() {
        Some(t.namespace.as_str())
    } else {
        None
    };
    let mut items = Vec::new();
    let mut more = false;
    let mut last_key = None;
    // Selectors see the requested version; only events.k8s.io Events differ from their stored form.
    let converted =
        t.rt.conversion.is_some() || (t.rt.builtin == Some(Builtin::Event) && t.rt.group == "events.k8s.io");
    store.scan(&t.key(), ns, start.as_ref(), |key, obj| {
        let matches = |o: &Value| opts.labels.matches(o) && opts.fields.matches(o);
        let ok = if converted {
            matches(&view(&t.rt, &t.version, obj))
        } else {
            matches(obj)
        };
        if !ok {
            return true;
        }
        if opts.limit > 0 && items.len() >= opts.limit {
            // One more match shows a next page exists; remainingItemCount is optional in the API.
            more = true;
            return false;
        }
        last_key = Some(key.clone());
        items.push(obj.clone());
        true
    });
    drop(store);
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if more {
        if let Some((ns, name)) = last_key {
            let token = json!({"rv": rv, "ns": ns, "name": name});
            metadata["continue"] =
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string()));
        }
    }
    Ok(Listed {
        kind: t.rt.list_kind.clone(),
        api_version: t.rt.api_version(&t.version),
        metadata,
        items,
        rt: t.rt.clone(),
        version: t.version.clone(),
    })
}

fn ensure_namespace(store: &Store, t: &Target, creating: bool) -> ApiResult<()> {
    if !t.rt.namespaced {
        return Ok(());
    }
    if t.namespace.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{} is namespaced: the request must name a namespace (/namespaces/<ns>/{})",
            t.rt.kind, t.rt.plural
        )));
    }
    let ns = store
        .get(&(String::new(), "namespaces".into()), "", &t.namespace)
        .ok_or_else(|| ApiError::not_found("", "namespaces", &t.namespace))?;
    if creating && deleting(&ns) {
        return Err(ApiError::forbidden(format!("{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated", t.rt.plural, meta_str(&ns, "name"), t.namespace)));
    }
    Ok(())
}

/// Validation common to create and update; fills in defaults and prunes. Returns warnings.
fn admit(t: &Target, obj: &mut Value, old: Option<&Value>, strict: bool) -> ApiResult<Vec<String>> {
    let mut causes: Vec<Cause> = Vec::new();
    let name = meta_str(obj, "name").to_string();
    crate::kinds::default(&t.rt, obj);
    validation::check_metadata(obj, &crate::kinds::name_rule(&t.rt, obj), &mut causes);
    crate::kinds::validate(&t.rt, obj, &mut causes);
    let mut warnings = Vec::new();
    if let Some(schema) = t.schema() {
        let report = validation::validate(schema, obj, old);
        if !report.unknown.is_empty() {
            if strict {
                let list: Vec<String> = report
                    .unknown
                    .iter()
                    .map(|u| format!("unknown field \"{}\"", u.trim_start_matches('.')))
                    .collect();
                return Err(ApiError::bad_request(format!(
                    "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
                    t.rt.kind,
                    t.version,
                    t.rt.kind,
                    list.join(", ")
                )));
            }
            warnings.extend(
                report
                    .unknown
                    .iter()
                    .map(|u| format!("unknown field \"{}\"", u.trim_start_matches('.'))),
            );
        }
        let mut found = report.causes;
        if let Some(old) = old {
            // Validation ratcheting (on by default since 1.30): a value that did not change may stay invalid.
            found.retain(|c| c.reason == "FieldValueRequired" || !validation::unchanged(old, obj, &c.field));
        }
        causes.extend(found);
    }
    if let Some(w) =
        t.rt.version(&t.version)
            .and_then(|v| v.deprecation_warning.clone())
    {
        warnings.push(w);
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(&t.rt.kind, &t.rt.group, &name, causes));
    }
    Ok(warnings)
}

/// Kind-specific preparation of a new object.
fn prepare_create(t: &Target, obj: &mut Value, ts: &str) -> ApiResult<()> {
    match t.rt.builtin {
        Some(Builtin::Namespace) => {
            obj["spec"] = json!({"finalizers": ["kubernetes"]});
            obj["status"] = json!({"phase": "Active"});
            let name = meta_str(obj, "name").to_string();
            let m = meta_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            labels["kubernetes.io/metadata.name"] = json!(name);
        }
        Some(Builtin::Secret) => secret_string_data(obj),
        Some(Builtin::Crd) => {
            resource::crd_to_type(obj)?;
            obj["status"] = resource::crd_status(obj, ts);
            let mut f = finalizers(obj);
            if !f.iter().any(|x| x == CRD_CLEANUP) {
                f.push(CRD_CLEANUP.into());
            }
            set_finalizers(obj, &f);
        }
        _ => {}
    }
    Ok(())
}

fn secret_string_data(obj: &mut Value) {
    if obj
        .get("type")
        .is_none_or(|t| t.is_null() || t.as_str() == Some(""))
    {
        obj["type"] = json!("Opaque");
    }
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        if !obj.get("data").is_some_and(Value::is_object) {
            obj["data"] = json!({});
        }
        for (k, v) in sd {
            obj["data"][k] =
                json!(base64::engine::general_purpose::STANDARD.encode(v.as_str().unwrap_or_default()));
        }
    }
}

/// Drop what the server owns from a client's metadata.
fn reset_server_fields(obj: &mut Value) {
    let m = meta_mut(obj);
    for f in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        m.remove(f);
    }
}

/// POST: create an object.
pub fn create(inner: &Inner, t: &Target, mut obj: Value, opts: &WriteOptions) -> ApiResult<Written> {
    decode_checks(t, &obj)?;
    check_type_meta(t, &obj)?;
    let body_ns = meta_str(&obj, "namespace").to_string();
    if t.rt.namespaced && !body_ns.is_empty() && body_ns != t.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let mut store = inner.lock();
    ensure_namespace(&store, t, true)?;
    let mut obj_ref = obj.take();
    {
        let m = meta_mut(&mut obj_ref);
        if t.rt.namespaced {
            m.insert("namespace".into(), json!(t.namespace));
        } else {
            m.remove("namespace");
        }
        let name = m
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            if let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
                // The same name in every admission pass of the request.
                let suffix = crate::admission::stable("generateName", || {
                    uuid::Uuid::new_v4()
                        .simple()
                        .to_string()
                        .chars()
                        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                        .take(5)
                        .collect()
                });
                m.insert("name".into(), json!(format!("{prefix}{suffix}")));
            }
        }
        m.remove("managedFields");
    }
    reset_server_fields(&mut obj_ref);
    meta::normalize(&mut obj_ref);
    let mut obj = storage_form(&t.rt, view(&t.rt, &t.version, &obj_ref));
    if t.status_sub() && t.rt.builtin.is_none() {
        // Custom resources with a status subresource drop status on create.
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    let ts = now();
    prepare_create(t, &mut obj, &ts)?;
    let mut shown = view(&t.rt, &t.version, &obj);
    crate::admission::mutate(
        &store,
        t,
        crate::admission::Operation::Create,
        &mut shown,
        None,
        opts.dry_run,
    )?;
    let warnings = admit(t, &mut shown, None, opts.strict)?;
    let mut obj = storage_form(&t.rt, shown);
    let name = meta_str(&obj, "name").to_string();
    if store.get(&t.key(), &t.namespace, &name).is_some() {
        return Err(ApiError::already_exists(&t.rt.group, &t.rt.plural, &name));
    }
    {
        let m = meta_mut(&mut obj);
        m.insert(
            "uid".into(),
            json!(crate::admission::stable("uid", || uuid::Uuid::new_v4().to_string())),
        );
        m.insert("creationTimestamp".into(), json!(ts));
        if t.rt.has_generation() {
            m.insert("generation".into(), json!(1));
        }
    }
    let av = t.rt.api_version(&t.version);
    let writer = apply::Writer {
        schema: t.schema(),
        manager: &opts.manager,
        api_version: &av,
        subresource: "",
        now: &ts,
        skip_status: false,
    };
    apply::record_update(None, &mut obj, &writer);
    finish_create(inner, &mut store, t, obj, opts, warnings)
}

/// Largest object etcd stores: its default `--max-request-bytes` (1.5 MiB). The API server stores
/// built-in kinds as protobuf and custom resources as JSON; the emulator measures the JSON.
pub const MAX_STORED_BYTES: usize = 3 << 19;

/// Refuses an object etcd would refuse, as the API server relays it.
fn check_stored_size(obj: &Value) -> ApiResult<()> {
    let size = serde_json::to_vec(obj).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_STORED_BYTES {
        return Err(ApiError::etcd_too_large());
    }
    Ok(())
}

fn finish_create(
    inner: &Inner,
    store: &mut Store,
    t: &Target,
    mut obj: Value,
    opts: &WriteOptions,
    warnings: Vec<String>,
) -> ApiResult<Written> {
    let shown = view(&t.rt, &t.version, &obj);
    crate::admission::validate(
        store,
        t,
        crate::admission::Operation::Create,
        &shown,
        None,
        opts.dry_run,
    )?;
    if opts.dry_run {
        return Ok(Written {
            code: 201,
            body: view(&t.rt, &t.version, &obj),
            warnings,
        });
    }
    if t.rt.builtin == Some(Builtin::Crd) {
        let rtype = resource::crd_to_type(&obj)?;
        store.registry.insert_crd(rtype);
    }
    check_stored_size(&obj)?;
    let rv = store.next_rv();
    meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
    let stored = store.put(&t.key(), obj, rv, EventType::Added, None);
    inner.changed.notify_one();
    Ok(Written {
        code: 201,
        body: view(&t.rt, &t.version, &stored),
        warnings,
    })
}

/// How an update came in, for managedFields.
enum Op {
    Update,
    Apply,
}

/// Store `new` as the next state of `old` with every update rule applied. `new` is in the requested version.
fn commit(
    inner: &Inner,
    store: &mut Store,
    t: &Target,
    old: &Arc<Value>,
    mut new: Value,
    opts: &WriteOptions,
    op: Op,
) -> ApiResult<Written> {
    let old_view = view(&t.rt, &t.version, old);
    crate::admission::mutate(
        store,
        t,
        crate::admission::Operation::Update,
        &mut new,
        Some(&old_view),
        opts.dry_run,
    )?;
    // Immutable and server-owned metadata comes from the stored object.
    {
        let m = meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "generation",
            "selfLink",
        ] {
            match old_view.pointer(&format!("/metadata/{f}")) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.insert("name".into(), json!(t.name));
    }
    new["apiVersion"] = json!(t.rt.api_version(&t.version));
    new["kind"] = json!(t.rt.kind);
    // Status subresource rules.
    let status_sub = t.status_sub();
    if t.sub == "status" {
        let status = new.get("status").cloned();
        let mut only_status = old_view.clone();
        match status {
            Some(s) => only_status["status"] = s,
            None => {
                if let Some(m) = only_status.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        // Server-side apply computed the managers already; keep them.
        if let (Op::Apply, Some(mf)) = (&op, new.pointer("/metadata/managedFields").cloned()) {
            meta_mut(&mut only_status).insert("managedFields".into(), mf);
        }
        new = only_status;
    } else if status_sub {
        match old_view.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    match t.rt.builtin {
        Some(Builtin::Namespace) if t.sub.is_empty() => {
            new["status"] = old_view
                .get("status")
                .cloned()
                .unwrap_or(json!({"phase": "Active"}));
            if new.get("spec").is_none() {
                new["spec"] = old_view.get("spec").cloned().unwrap_or(json!({}));
            }
        }
        Some(Builtin::Secret) => secret_string_data(&mut new),
        _ => {}
    }
    // Immutable ConfigMaps and Secrets keep their data and stay immutable.
    if matches!(t.rt.builtin, Some(Builtin::ConfigMap | Builtin::Secret))
        && old_view.get("immutable") == Some(&Value::Bool(true))
    {
        let mut causes = Vec::new();
        for f in ["data", "binaryData"] {
            if old_view.get(f) != new.get(f) {
                causes.push(Cause {
                    reason: "FieldValueForbidden".into(),
                    field: f.into(),
                    message: "Forbidden: field is immutable when `immutable` is set".into(),
                });
            }
        }
        if new.get("immutable") != Some(&Value::Bool(true)) {
            causes.push(Cause {
                reason: "FieldValueForbidden".into(),
                field: "immutable".into(),
                message: "Forbidden: field is immutable when `immutable` is set".into(),
            });
        }
        if !causes.is_empty() {
            return Err(ApiError::invalid(&t.rt.kind, &t.rt.group, &t.name, causes));
        }
    }
    if t.sub.is_empty() {
        let causes = crate::kinds::immutable_changes(&t.rt.group, &t.rt.kind, &old_view, &new);
        if !causes.is_empty() {
            return Err(ApiError::invalid(&t.rt.kind, &t.rt.group, &t.name, causes));
        }
    }
    match t.rt.builtin {
        Some(Builtin::Crd) if t.sub.is_empty() => {
            resource::crd_to_type(&new)?;
            let ts = now();
            new["status"] = resource::crd_status(&new, &ts);
        }
        _ => {}
    }
    // No new finalizers on an object that is going away.
    if deleting(&old_view) {
        let before = finalizers(&old_view);
        if let Some(added) = finalizers(&new).into_iter().find(|f| !before.contains(f)) {
            let name = meta_str(&new, "name").to_string();
            return Err(ApiError::invalid(&t.rt.kind, &t.rt.group, &name, vec![Cause { reason: "FieldValueForbidden".into(), field: "metadata.finalizers".into(), message: format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers []string{{{added:?}}}") }]));
        }
    }
    meta::normalize(&mut new);
    let warnings = admit(t, &mut new, Some(&old_view), opts.strict)?;
    // Generation: bumps when anything but metadata changes (and status, when it is a subresource).
    if t.rt.has_generation() {
        let strip = |v: &Value| {
            let mut v = v.clone();
            if let Some(m) = v.as_object_mut() {
                m.remove("metadata");
                if status_sub {
                    m.remove("status");
                }
            }
            v
        };
        let gen = old_view
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let gen = if strip(&old_view) != strip(&new) {
            gen + 1
        } else {
            gen
        };
        meta_mut(&mut new).insert("generation".into(), json!(gen));
    }
    let ts = now();
    if let Op::Update = op {
        let av = t.rt.api_version(&t.version);
        // managedFields sent by the client are kept as they are (that is how a client resets them).
        let client_set = new.pointer("/metadata/managedFields").is_some_and(|m| {
            *m != old_view
                .pointer("/metadata/managedFields")
                .cloned()
                .unwrap_or(Value::Null)
        });
        if !client_set {
            meta_mut(&mut new).insert(
                "managedFields".into(),
                old_view
                    .pointer("/metadata/managedFields")
                    .cloned()
                    .unwrap_or(json!([])),
            );
            let writer = apply::Writer {
                schema: t.schema(),
                manager: &opts.manager,
                api_version: &av,
                subresource: &t.sub,
                now: &ts,
                skip_status: status_sub && t.sub.is_empty(),
            };
            apply::record_update(Some(&old_view), &mut new, &writer);
        }
    }
    crate::admission::validate(
        store,
        t,
        crate::admission::Operation::Update,
        &new,
        Some(&old_view),
        opts.dry_run,
    )?;
    // A no-op write stores nothing and keeps the resourceVersion.
    let comparable = |v: &Value| {
        let mut v = v.clone();
        let m = meta_mut(&mut v);
        m.remove("resourceVersion");
        if let Some(Value::Array(list)) = m.get_mut("managedFields") {
            for e in list {
                if let Some(e) = e.as_object_mut() {
                    e.remove("time");
                }
            }
        }
        v
    };
    if comparable(&old_view) == comparable(&new) {
        return Ok(Written {
            code: 200,
            body: old_view,
            warnings,
        });
    }
    let mut stored = storage_form(&t.rt, new);
    if opts.dry_run {
        meta_mut(&mut stored).insert("resourceVersion".into(), json!(rv_of(old).to_string()));
        return Ok(Written {
            code: 200,
            body: view(&t.rt, &t.version, &stored),
            warnings,
        });
    }
    // Finalizers all gone on an object being deleted: it goes now.
    if deleting(&stored) && finalizers(&stored).is_empty() && !namespace_finalizers_pending(&stored, &t.rt) {
        let rv = store.next_rv();
        meta_mut(&mut stored).insert("resourceVersion".into(), json!(rv.to_string()));
        let last = store.remove(&t.key(), stored, rv);
        after_remove(store, &t.rt, &last);
        inner.gc.notify_one();
        inner.changed.notify_one();
        return Ok(Written {
            code: 200,
            body: view(&t.rt, &t.version, &last),
            warnings,
        });
    }
    if t.rt.builtin == Some(Builtin::Crd) && !deleting(&stored) {
        store.registry.insert_crd(resource::crd_to_type(&stored)?);
    }
    check_stored_size(&stored)?;
    let rv = store.next_rv();
    meta_mut(&mut stored).insert("resourceVersion".into(), json!(rv.to_string()));
    let saved = store.put(&t.key(), stored, rv, EventType::Modified, Some(old.clone()));
    inner.changed.notify_one();
    Ok(Written {
        code: 200,
        body: view(&t.rt, &t.version, &saved),
        warnings,
    })
}

fn namespace_finalizers_pending(obj: &Value, rt: &ResourceType) -> bool {
    rt.builtin == Some(Builtin::Namespace)
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty())
}

/// Bookkeeping after an object is gone for good.
pub(crate) fn after_remove(store: &mut Store, rt: &ResourceType, last: &Value) {
    if rt.builtin == Some(Builtin::Crd) {
        let group = last
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let plural = last
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        store.registry.remove(&group, &plural);
        store.drop_type(&(group, plural));
    }
}

/// PUT: replace an object (or its status).
pub fn update(inner: &Inner, t: &Target, obj: Value, opts: &WriteOptions) -> ApiResult<Written> {
    decode_checks(t, &obj)?;
    check_type_meta(t, &obj)?;
    let body_name = meta_str(&obj, "name");
    if !body_name.is_empty() && body_name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let body_ns = meta_str(&obj, "namespace");
    if t.rt.namespaced && !body_ns.is_empty() && body_ns != t.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    let mut store = inner.lock();
    let Some(old) = store.get(&t.key(), &t.namespace, &t.name) else {
        return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name));
    };
    let want_rv = meta_str(&obj, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(&t.rt.group, &t.rt.plural, &t.name));
    }
    commit(inner, &mut store, t, &old, obj, opts, Op::Update)
}

/// PATCH in any of the four patch types.
pub fn patch(
    inner: &Inner,
    t: &Target,
    content_type: &str,
    body: &[u8],
    opts: &WriteOptions,
) -> ApiResult<Written> {
    let ct = content_type.split(';').next().unwrap_or_default().trim();
    if ct == "application/apply-patch+yaml" || ct == "application/apply-patch+cbor" {
        let applied = parse_body(body, "yaml")?;
        return server_side_apply(inner, t, applied, opts);
    }
    let patch_doc = match ct {
        "application/json-patch+json"
        | "application/merge-patch+json"
        | "application/strategic-merge-patch+json" => parse_body(body, "json")?,
        other => return Err(ApiError::unsupported_media_type(other)),
    };
    if ct == "application/strategic-merge-patch+json" && t.rt.builtin.is_none() {
        return Err(ApiError::unsupported_media_type(&format!(
            "{ct} (strategic merge patch is not supported for custom resources; use --type merge or json)"
        )));
    }
    let mut store = inner.lock();
    let Some(old) = store.get(&t.key(), &t.namespace, &t.name) else {
        return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name));
    };
    let mut doc = view(&t.rt, &t.version, &old);
    match ct {
        "application/json-patch+json" => patch::json_patch(&mut doc, &patch_doc)?,
        "application/merge-patch+json" => {
            if !patch_doc.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            patch::merge_patch(&mut doc, &patch_doc)
        }
        _ => {
            if !patch_doc.is_object() {
                return Err(ApiError::bad_request(
                    "a strategic merge patch must be a JSON object",
                ));
            }
            patch::strategic_merge_patch(&mut doc, &patch_doc)
        }
    }
    decode_checks(t, &doc)?;
    let want_rv = meta_str(&doc, "resourceVersion");
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(&t.rt.group, &t.rt.plural, &t.name));
    }
    if meta_str(&doc, "name") != t.name {
        return Err(ApiError::bad_request(format!(
            "the patch changes metadata.name to {:?}; names are immutable",
            meta_str(&doc, "name")
        )));
    }
    commit(inner, &mut store, t, &old, doc, opts, Op::Update)
}

/// Server-side apply (creates the object when missing).
pub fn server_side_apply(
    inner: &Inner,
    t: &Target,
    applied: Value,
    opts: &WriteOptions,
) -> ApiResult<Written> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("an apply configuration must be an object"));
    }
    if opts.manager.is_empty() || !opts.manager_given {
        return Err(ApiError::bad_request(
            "PATCH, application/apply-patch+yaml requires the fieldManager query parameter",
        ));
    }
    decode_checks(t, &applied)?;
    check_type_meta(t, &applied)?;
    let mut applied = applied;
    // Apply configurations may leave the name out (typical for status patches): the URL names the object.
    if meta_str(&applied, "name").is_empty() {
        meta_mut(&mut applied).insert("name".into(), json!(t.name));
    }
    let name = meta_str(&applied, "name");
    if name != t.name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let mut store = inner.lock();
    let existing = store.get(&t.key(), &t.namespace, &t.name);
    let av = t.rt.api_version(&t.version);
    let ts = now();
    let skip_status = t.status_sub() && t.sub.is_empty();
    match existing {
        None => {
            if !t.sub.is_empty() {
                return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name));
            }
            ensure_namespace(&store, t, true)?;
            let writer = apply::Writer {
                schema: t.schema(),
                manager: &opts.manager,
                api_version: &av,
                subresource: "",
                now: &ts,
                skip_status,
            };
            let mut obj = apply::apply(None, &applied, &writer, opts.force)?;
            {
                // As on create: a cluster-scoped object has no namespace, whatever the applied manifest says.
                let m = meta_mut(&mut obj);
                if t.rt.namespaced {
                    m.insert("namespace".into(), json!(t.namespace));
                } else {
                    m.remove("namespace");
                }
            }
            let managed = obj.pointer("/metadata/managedFields").cloned();
            reset_server_fields(&mut obj);
            meta::normalize(&mut obj);
            let mut obj = storage_form(&t.rt, obj);
            if skip_status && t.rt.builtin.is_none() {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
            prepare_create(t, &mut obj, &ts)?;
            let mut shown = view(&t.rt, &t.version, &obj);
            crate::admission::mutate(
                &store,
                t,
                crate::admission::Operation::Create,
                &mut shown,
                None,
                opts.dry_run,
            )?;
            let warnings = admit(t, &mut shown, None, opts.strict)?;
            let mut obj = storage_form(&t.rt, shown);
            {
                let m = meta_mut(&mut obj);
                m.insert(
                    "uid".into(),
                    json!(crate::admission::stable("uid", || uuid::Uuid::new_v4().to_string())),
                );
                m.insert("creationTimestamp".into(), json!(ts));
                if t.rt.has_generation() {
                    m.insert("generation".into(), json!(1));
                }
                if let Some(mf) = managed {
                    m.insert("managedFields".into(), mf);
                }
            }
            finish_create(inner, &mut store, t, obj, opts, warnings)
        }
        Some(old) => {
            let old_view = view(&t.rt, &t.version, &old);
            let want_rv = meta_str(&applied, "resourceVersion");
            if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
                return Err(ApiError::conflict(&t.rt.group, &t.rt.plural, &t.name));
            }
            let writer = apply::Writer {
                schema: t.schema(),
                manager: &opts.manager,
                api_version: &av,
                subresource: &t.sub,
                now: &ts,
                skip_status,
            };
            let new = apply::apply(Some(&old_view), &applied, &writer, opts.force)?;
            commit(inner, &mut store, t, &old, new, opts, Op::Apply)
        }
    }
}

/// `.spec.replicas` -> `/spec/replicas`.
fn json_pointer(path: &str) -> String {
    path.trim_start_matches('.')
        .split('.')
        .fold(String::new(), |acc, seg| format!("{acc}/{seg}"))
}

/// The `autoscaling/v1` Scale of an object.
fn scale_view(t: &Target, obj: &Value) -> ApiResult<Value> {
    let Some(scale) = t.rt.version(&t.version).and_then(|v| v.scale.clone()) else {
        return Err(ApiError::no_route(&format!("{}/{}/scale", t.rt.plural, t.name)));
    };
    let int = |p: &str| obj.pointer(&json_pointer(p)).and_then(Value::as_i64).unwrap_or(0);
    let selector = scale
        .label_selector
        .as_deref()
        .and_then(|p| obj.pointer(&json_pointer(p)))
        .map(|s| match s {
            Value::String(s) => s.clone(),
            // A LabelSelector object (workload kinds): its matchLabels as a selector string.
            other => other
                .get("matchLabels")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default(),
        });
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    let mut status = json!({"replicas": int(&scale.status_replicas)});
    if let Some(sel) = selector {
        status["selector"] = json!(sel);
    }
    Ok(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {"name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"), "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp")},
        "spec": {"replicas": int(&scale.spec_replicas)},
        "status": status,
    }))
}

/// GET `/scale`.
pub fn get_scale(inner: &Inner, t: &Target) -> ApiResult<Value> {
    let main = Target {
        sub: String::new(),
        ..t.clone()
    };
    scale_view(t, &get(inner, &main)?)
}

/// PUT or PATCH `/scale`: `next` turns the current Scale into the wanted one; only spec.replicas is used.
pub fn update_scale(
    inner: &Inner,
    t: &Target,
    next: impl FnOnce(Value) -> ApiResult<Value>,
    opts: &WriteOptions,
) -> ApiResult<Written> {
    let main = Target {
        sub: String::new(),
        ..t.clone()
    };
    let mut store = inner.lock();
    let Some(old) = store.get(&main.key(), &main.namespace, &main.name) else {
        return Err(ApiError::not_found(&t.rt.group, &t.rt.plural, &t.name));
    };
    let mut doc = view(&t.rt, &t.version, &old);
    let wanted = next(scale_view(t, &doc)?)?;
    let want_rv = wanted
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if !want_rv.is_empty() && want_rv != meta_str(&old, "resourceVersion") {
        return Err(ApiError::conflict(&t.rt.group, &t.rt.plural, &t.name));
    }
    let Some(replicas) = wanted.pointer("/spec/replicas").and_then(Value::as_i64) else {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            &t.name,
            vec![Cause {
                reason: "FieldValueRequired".into(),
                field: "spec.replicas".into(),
                message: "Required value: an integer number of replicas".into(),
            }],
        ));
    };
    if replicas < 0 {
        return Err(ApiError::invalid(
            "Scale",
            "autoscaling",
            &t.name,
            vec![Cause {
                reason: "FieldValueInvalid".into(),
                field: "spec.replicas".into(),
                message: format!("Invalid value: {replicas}: must be greater than or equal to 0"),
            }],
        ));
    }
    let scale =
        t.rt.version(&t.version)
            .and_then(|v| v.scale.clone())
            .ok_or_else(|| ApiError::no_route("scale"))?;
    let pointer = json_pointer(&scale.spec_replicas);
    let (parent, last) = pointer.rsplit_once('/').unwrap_or(("", ""));
    let mut cur = &mut doc;
    for seg in parent.split('/').filter(|s| !s.is_empty()) {
        if !cur.get(seg).is_some_and(Value::is_object) {
            cur[seg] = json!({});
        }
        cur = &mut cur[seg];
    }
    cur[last] = json!(replicas);
    let written = commit(inner, &mut store, &main, &old, doc, opts, Op::Update)?;
    Ok(Written {
        code: 200,
        body: scale_view(t, &written.body)?,
        warnings: written.warnings,
    })
}
