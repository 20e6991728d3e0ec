//! Conversion of custom resources between their versions by in-process converters: what a conversion webhook
//! (`spec.conversion.strategy: Webhook`) does on a real cluster. Without a converter a kind's versions differ
//! only in `apiVersion` (strategy None).
//!
//! A [`Converter`] is registered per group and kinds ([`crate::Cluster::add_converter`]). It stands for the
//! provider's webhook, which real installs add to their CRDs with a patch; so it applies to those kinds
//! whatever strategy the installed CRD declares. Objects are stored in the CRD's storage version and shown in
//! the version each request asks for; the emulator calls the converter in both directions.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use serde_json::Value;

/// Converts the objects of some custom resource kinds between versions.
///
/// Conversion must be total: a stored object is valid in its version, so every served version can show it.
/// What a version cannot express goes into an annotation (as Cluster API does), not into an error.
pub trait Converter: Send + Sync + fmt::Debug {
    /// Whether this converter handles `kind` of `group`.
    fn handles(&self, group: &str, kind: &str) -> bool;

    /// `obj` (its `apiVersion` names its version) in `to_version`. The result carries `apiVersion`
    /// `<group>/<to_version>`.
    fn convert(&self, obj: Value, to_version: &str, cx: &Context<'_>) -> Value;
}

/// What a converter may look up while converting.
#[derive(Debug)]
pub struct Context<'a> {
    versions: &'a KindVersions,
}

impl<'a> Context<'a> {
    /// A context over the given kind versions.
    pub fn new(versions: &'a KindVersions) -> Self {
        Context { versions }
    }

    /// The version the cluster stores `kind` of `group` in, if a CRD serves it: converters that turn a
    /// group-only reference into an `apiVersion` use it.
    pub fn storage_version(&self, group: &str, kind: &str) -> Option<String> {
        self.versions.get(group, kind)
    }
}

/// Storage versions of the served custom resource kinds, by (group, kind); kept by the registry.
#[derive(Debug, Default)]
pub struct KindVersions(RwLock<BTreeMap<(String, String), String>>);

impl KindVersions {
    fn get(&self, group: &str, kind: &str) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(group.to_string(), kind.to_string()))
            .cloned()
    }

    /// Record the storage version of a kind.
    pub fn set(&self, group: &str, kind: &str, version: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((group.into(), kind.into()), version.into());
    }

    /// Forget a kind (its CRD is gone).
    pub fn remove(&self, group: &str, kind: &str) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(group.to_string(), kind.to_string()));
    }
}

/// The converter of one resource type, with the lookups it needs.
#[derive(Clone)]
pub struct Hook {
    converter: Arc<dyn Converter>,
    versions: Arc<KindVersions>,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("converter", &self.converter)
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// `obj` in `version` of `group`.
    pub fn convert(&self, obj: Value, group: &str, version: &str) -> Value {
        let want = format!("{group}/{version}");
        let mut out = if obj.get("apiVersion").and_then(Value::as_str) == Some(want.as_str()) {
            obj
        } else {
            let cx = Context::new(&self.versions);
            self.converter.convert(obj, version, &cx)
        };
        out["apiVersion"] = Value::String(want);
        out
    }
}

/// The converters of one cluster and the kind versions they look up.
#[derive(Debug, Default)]
pub struct Conversions {
    converters: RwLock<Vec<Arc<dyn Converter>>>,
    /// Storage versions of the served custom kinds.
    pub versions: Arc<KindVersions>,
}

impl Conversions {
    /// Register a converter; a later one wins for the kinds both handle.
    pub fn add(&self, c: Arc<dyn Converter>) {
        self.converters.write().unwrap_or_else(|p| p.into_inner()).push(c);
    }

    /// The hook for `kind` of `group`, if a converter handles it.
    pub fn hook(&self, group: &str, kind: &str) -> Option<Hook> {
        let converters = self.converters.read().unwrap_or_else(|p| p.into_inner());
        converters
            .iter()
            .rev()
            .find(|c| c.handles(group, kind))
            .map(|c| Hook {
                converter: c.clone(),
                versions: self.versions.clone(),
            })
    }
}
