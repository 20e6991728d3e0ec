//! Cluster API's conversion webhook for `Cluster` and `ClusterClass` (`cluster.x-k8s.io`), in process:
//! v1beta1 (what most manifests still use) and v1beta2 (the hub and storage version of Cluster API 1.11).
//!
//! Field moves follow Cluster API's `api/core/v1beta1/conversion.go`: references carry `apiGroup` instead of
//! `apiVersion` in v1beta2, `topology.class` became `topology.classRef`, durations became `...Seconds`
//! integers under `deletion`, `machineHealthCheck` became `healthCheck` with `checks` and `remediation`,
//! ClusterClass template references moved out of `template`/`ref`, and the v1beta2 conditions moved from
//! `status.v1beta2` to `status` (the old ones to `status.deprecated.v1beta1`).
//!
//! Like Cluster API, the v1beta1 form carries the whole v1beta2 object (without metadata) in the annotation
//! [`DATA_ANNOTATION`]. When a v1beta1 object comes back, every v1beta2 field that v1beta1 cannot show is
//! taken from there, so a round trip through v1beta1 loses nothing.

use serde_json::{json, Map, Value};

use crate::conversion::{Context, Converter};

/// The API group.
pub const GROUP: &str = "cluster.x-k8s.io";
/// Where the v1beta1 form keeps the v1beta2 object.
pub const DATA_ANNOTATION: &str = "cluster.x-k8s.io/conversion-data";
const HUB: &str = "v1beta2";
const SPOKE: &str = "v1beta1";

/// The converter for Cluster and ClusterClass; register it with [`crate::Cluster::add_converter`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterApiConversion;

impl Converter for ClusterApiConversion {
    fn handles(&self, group: &str, kind: &str) -> bool {
        group == GROUP && matches!(kind, "Cluster" | "ClusterClass")
    }

    fn convert(&self, obj: Value, to_version: &str, cx: &Context<'_>) -> Value {
        let from = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .and_then(|a| a.split_once('/'))
            .map(|(_, v)| v.to_string())
            .unwrap_or_default();
        match (from.as_str(), to_version) {
            (SPOKE, HUB) => to_hub(obj),
            (HUB, SPOKE) => to_spoke(&obj, cx),
            // Versions Cluster API no longer serves convert through the hub in Cluster API; the emulator has
            // only these two, anything else keeps its fields.
            _ => obj,
        }
    }
}

/// How a moved value changes between the versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum How {
    /// Same value.
    Same,
    /// A Go duration string in v1beta1, whole seconds in v1beta2.
    Seconds,
    /// A core ObjectReference in v1beta1, a contract-versioned reference (`apiGroup`, kind, name) in v1beta2.
    ContractRef,
    /// A core ObjectReference in v1beta1, `apiVersion`, kind and name in v1beta2.
    TemplateRef,
    /// A list of `{type, status, timeout}` in v1beta1, `{type, status, timeoutSeconds}` in v1beta2.
    Conditions,
    /// A map of failure domain name to `{controlPlane, attributes}` in v1beta1, a list with `name` in v1beta2.
    FailureDomains,
}

/// (v1beta1 path, v1beta2 path, how). Paths are dotted and relative to the object the table applies to.
type Table = &'static [(&'static str, &'static str, How)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    /// v1beta1 -> v1beta2.
    Up,
    /// v1beta2 -> v1beta1.
    Down,
}

/// Namespace and lookups of the object being converted.
struct Scope<'a> {
    namespace: String,
    cx: Option<&'a Context<'a>>,
}

const DELETION: Table = &[
    (
        "nodeDrainTimeout",
        "deletion.nodeDrainTimeoutSeconds",
        How::Seconds,
    ),
    (
        "nodeVolumeDetachTimeout",
        "deletion.nodeVolumeDetachTimeoutSeconds",
        How::Seconds,
    ),
    (
        "nodeDeletionTimeout",
        "deletion.nodeDeletionTimeoutSeconds",
        How::Seconds,
    ),
];

/// `machineHealthCheck` (v1beta1) and `healthCheck` (v1beta2) of a topology or class.
const HEALTH_CHECK: Table = &[
    ("machineHealthCheck.enable", "healthCheck.enabled", How::Same),
    (
        "machineHealthCheck.nodeStartupTimeout",
        "healthCheck.checks.nodeStartupTimeoutSeconds",
        How::Seconds,
    ),
    (
        "machineHealthCheck.unhealthyConditions",
        "healthCheck.checks.unhealthyNodeConditions",
        How::Conditions,
    ),
    (
        "machineHealthCheck.unhealthyMachineConditions",
        "healthCheck.checks.unhealthyMachineConditions",
        How::Conditions,
    ),
    (
        "machineHealthCheck.maxUnhealthy",
        "healthCheck.remediation.triggerIf.unhealthyLessThanOrEqualTo",
        How::Same,
    ),
    (
        "machineHealthCheck.unhealthyRange",
        "healthCheck.remediation.triggerIf.unhealthyInRange",
        How::Same,
    ),
    (
        "machineHealthCheck.remediationTemplate",
        "healthCheck.remediation.templateRef",
        How::TemplateRef,
    ),
];

/// A MachineDeployment's strategy (v1beta1) spread over rollout, deletion and health check (v1beta2).
const MD_STRATEGY: Table = &[
    ("strategy.type", "rollout.strategy.type", How::Same),
    (
        "strategy.rollingUpdate.maxSurge",
        "rollout.strategy.rollingUpdate.maxSurge",
        How::Same,
    ),
    (
        "strategy.rollingUpdate.maxUnavailable",
        "rollout.strategy.rollingUpdate.maxUnavailable",
        How::Same,
    ),
    ("strategy.rollingUpdate.deletePolicy", "deletion.order", How::Same),
    (
        "strategy.remediation.maxInFlight",
        "healthCheck.remediation.maxInFlight",
        How::Same,
    ),
];

const CLUSTER: Table = &[
    (
        "spec.infrastructureRef",
        "spec.infrastructureRef",
        How::ContractRef,
    ),
    ("spec.controlPlaneRef", "spec.controlPlaneRef", How::ContractRef),
    ("spec.topology.class", "spec.topology.classRef.name", How::Same),
    (
        "spec.topology.classNamespace",
        "spec.topology.classRef.namespace",
        How::Same,
    ),
    (
        "status.conditions",
        "status.deprecated.v1beta1.conditions",
        How::Same,
    ),
    (
        "status.failureReason",
        "status.deprecated.v1beta1.failureReason",
        How::Same,
    ),
    (
        "status.failureMessage",
        "status.deprecated.v1beta1.failureMessage",
        How::Same,
    ),
    ("status.v1beta2.conditions", "status.conditions", How::Same),
    ("status.v1beta2.controlPlane", "status.controlPlane", How::Same),
    ("status.v1beta2.workers", "status.workers", How::Same),
    (
        "status.controlPlaneReady",
        "status.initialization.controlPlaneInitialized",
        How::Same,
    ),
    (
        "status.infrastructureReady",
        "status.initialization.infrastructureProvisioned",
        How::Same,
    ),
    (
        "status.failureDomains",
        "status.failureDomains",
        How::FailureDomains,
    ),
];

const CLUSTER_CLASS: Table = &[
    (
        "spec.infrastructure.ref",
        "spec.infrastructure.templateRef",
        How::TemplateRef,
    ),
    (
        "spec.infrastructureNamingStrategy",
        "spec.infrastructure.naming",
        How::Same,
    ),
    (
        "spec.controlPlane.ref",
        "spec.controlPlane.templateRef",
        How::TemplateRef,
    ),
    (
        "spec.controlPlane.machineInfrastructure.ref",
        "spec.controlPlane.machineInfrastructure.templateRef",
        How::TemplateRef,
    ),
    (
        "spec.controlPlane.namingStrategy",
        "spec.controlPlane.naming",
        How::Same,
    ),
    (
        "status.conditions",
        "status.deprecated.v1beta1.conditions",
        How::Same,
    ),
    ("status.v1beta2.conditions", "status.conditions", How::Same),
];

/// A MachineDeployment or MachinePool class of a ClusterClass.
const WORKER_CLASS: Table = &[
    (
        "template.bootstrap.ref",
        "bootstrap.templateRef",
        How::TemplateRef,
    ),
    (
        "template.infrastructure.ref",
        "infrastructure.templateRef",
        How::TemplateRef,
    ),
    ("template.metadata", "metadata", How::Same),
    ("namingStrategy", "naming", How::Same),
];

const PATCH: Table = &[
    (
        "external.generateExtension",
        "external.generatePatchesExtension",
        How::Same,
    ),
    (
        "external.validateExtension",
        "external.validateTopologyExtension",
        How::Same,
    ),
];

const VARIABLE: Table = &[("metadata", "deprecatedV1Beta1Metadata", How::Same)];

/// Apply a table to `obj` in one direction: every source value is taken out first (emptied parents go),
/// then written to its target, so tables may swap places (the conditions do).
fn moves(obj: &mut Value, table: Table, dir: Dir, scope: &Scope<'_>) {
    let mut taken = Vec::new();
    for (spoke, hub, how) in table {
        let (from, to) = match dir {
            Dir::Up => (spoke, hub),
            Dir::Down => (hub, spoke),
        };
        if let Some(v) = take(obj, from) {
            taken.push((to, convert_value(v, *how, dir, scope)));
        }
    }
    for (to, v) in taken {
        if let Some(v) = v {
            put(obj, to, v);
        }
    }
}

fn convert_value(v: Value, how: How, dir: Dir, scope: &Scope<'_>) -> Option<Value> {
    Some(match (how, dir) {
        (How::Same, _) => v,
        (How::Seconds, Dir::Up) => json!(parse_duration(v.as_str()?)?),
        (How::Seconds, Dir::Down) => json!(format_duration(v.as_i64()?)),
        (How::ContractRef, Dir::Up) => {
            let api_version = v.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
            let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
            json!({"apiGroup": group, "kind": v.get("kind"), "name": v.get("name")})
        }
        (How::ContractRef, Dir::Down) => {
            let group = v.get("apiGroup").and_then(Value::as_str).unwrap_or_default();
            let kind = v.get("kind").and_then(Value::as_str).unwrap_or_default();
            // Cluster API asks the referenced CRD for the version of its contract; the emulator uses the
            // version the CRD stores, and v1beta1 when no CRD serves the kind.
            let version = scope
                .cx
                .and_then(|cx| cx.storage_version(group, kind))
                .unwrap_or_else(|| SPOKE.to_string());
            let mut r =
                json!({"apiVersion": format!("{group}/{version}"), "kind": kind, "name": v.get("name")});
            if !scope.namespace.is_empty() {
                r["namespace"] = json!(scope.namespace);
            }
            r
        }
        (How::TemplateRef, Dir::Up) => {
            json!({"apiVersion": v.get("apiVersion"), "kind": v.get("kind"), "name": v.get("name")})
        }
        (How::TemplateRef, Dir::Down) => {
            let mut r = v;
            if let Some(m) = r.as_object_mut() {
                m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "name"));
            }
            r
        }
        (How::Conditions, _) => Value::Array(
            v.as_array()?
                .iter()
                .map(|c| {
                    let mut c = c.clone();
                    let (from, to) = match dir {
                        Dir::Up => ("timeout", "timeoutSeconds"),
                        Dir::Down => ("timeoutSeconds", "timeout"),
                    };
                    if let Some(t) = take(&mut c, from) {
                        if let Some(t) = convert_value(t, How::Seconds, dir, scope) {
                            put(&mut c, to, t);
                        }
                    }
                    c
                })
                .collect(),
        ),
        (How::FailureDomains, Dir::Up) => Value::Array(
            v.as_object()?
                .iter()
                .map(|(name, fd)| {
                    let mut item = json!({"name": name});
                    for (k, x) in fd.as_object().into_iter().flatten() {
                        item[k] = x.clone();
                    }
                    item
                })
                .collect(),
        ),
        (How::FailureDomains, Dir::Down) => {
            let mut out = Map::new();
            for fd in v.as_array()? {
                let mut fd = fd.clone();
                let name = take(&mut fd, "name")?.as_str()?.to_string();
                out.insert(name, fd);
            }
            Value::Object(out)
        }
    })
}

/// The per-item tables of a kind's lists, applied after the kind's own table.
fn lists(obj: &mut Value, kind: &str, dir: Dir, scope: &Scope<'_>) {
    let each = |obj: &mut Value, path: &str, f: &dyn Fn(&mut Value)| {
        if let Some(Value::Array(items)) = pointer_mut(obj, path) {
            items.iter_mut().for_each(f);
        }
    };
    let variable = |v: &mut Value| {
        if dir == Dir::Up {
            // `definitionFrom` is gone in v1beta2 (Cluster API drops it too).
            take(v, "definitionFrom");
        }
    };
    match kind {
        "Cluster" => {
            let cp = "spec.topology.controlPlane";
            if let Some(cp) = pointer_mut(obj, cp) {
                moves(cp, DELETION, dir, scope);
                moves(cp, HEALTH_CHECK, dir, scope);
                each(cp, "variables.overrides", &variable);
            }
            each(obj, "spec.topology.variables", &variable);
            each(obj, "spec.topology.workers.machineDeployments", &|md| {
                moves(md, DELETION, dir, scope);
                moves(md, MD_STRATEGY, dir, scope);
                moves(md, HEALTH_CHECK, dir, scope);
                each(md, "variables.overrides", &variable);
            });
            each(obj, "spec.topology.workers.machinePools", &|mp| {
                moves(mp, DELETION, dir, scope);
                each(mp, "variables.overrides", &variable);
            });
            if dir == Dir::Up {
                // Gone in v1beta2.
                take(obj, "spec.topology.rolloutAfter");
            }
        }
        _ => {
            if let Some(cp) = pointer_mut(obj, "spec.controlPlane") {
                moves(cp, DELETION, dir, scope);
                moves(cp, HEALTH_CHECK, dir, scope);
            }
            each(obj, "spec.workers.machineDeployments", &|md| {
                moves(md, WORKER_CLASS, dir, scope);
                moves(md, DELETION, dir, scope);
                moves(md, MD_STRATEGY, dir, scope);
                moves(md, HEALTH_CHECK, dir, scope);
            });
            each(obj, "spec.workers.machinePools", &|mp| {
                moves(mp, WORKER_CLASS, dir, scope);
                moves(mp, DELETION, dir, scope);
            });
            each(obj, "spec.patches", &|p| moves(p, PATCH, dir, scope));
            each(obj, "spec.variables", &|v| moves(v, VARIABLE, dir, scope));
            each(obj, "status.variables", &|v| {
                each(v, "definitions", &|d| moves(d, VARIABLE, dir, scope));
            });
        }
    }
}

/// The field moves of one direction, without the annotation.
fn shape(obj: &mut Value, dir: Dir, scope: &Scope<'_>) {
    let kind = obj
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let table = if kind == "Cluster" { CLUSTER } else { CLUSTER_CLASS };
    // Lists first going down (their paths are v1beta2 paths until the table moves their parents) and last
    // going up; the tables above never move a list's parent, so the order only matters for clarity.
    if dir == Dir::Down {
        lists(obj, &kind, dir, scope);
        moves(obj, table, dir, scope);
    } else {
        moves(obj, table, dir, scope);
        lists(obj, &kind, dir, scope);
    }
    obj["apiVersion"] = json!(format!("{GROUP}/{}", if dir == Dir::Up { HUB } else { SPOKE }));
}

fn namespace_of(obj: &Value) -> String {
    obj.pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// v1beta2 -> v1beta1, with the v1beta2 object in the annotation.
fn to_spoke(hub: &Value, cx: &Context<'_>) -> Value {
    let scope = Scope {
        namespace: namespace_of(hub),
        cx: Some(cx),
    };
    let mut spoke = hub.clone();
    shape(&mut spoke, Dir::Down, &scope);
    let mut data = hub.clone();
    if let Some(m) = data.as_object_mut() {
        m.remove("metadata");
    }
    if !spoke.get("metadata").is_some_and(Value::is_object) {
        spoke["metadata"] = json!({});
    }
    let meta = &mut spoke["metadata"];
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = json!({});
    }
    meta["annotations"][DATA_ANNOTATION] = json!(data.to_string());
    spoke
}

/// v1beta1 -> v1beta2, restoring from the annotation what v1beta1 cannot show.
fn to_hub(spoke: Value) -> Value {
    let mut hub = spoke;
    let data = hub
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
        .and_then(|a| a.remove(DATA_ANNOTATION));
    if hub
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .is_some_and(Map::is_empty)
    {
        if let Some(m) = hub.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("annotations");
        }
    }
    let scope = Scope {
        namespace: namespace_of(&hub),
        cx: None,
    };
    shape(&mut hub, Dir::Up, &scope);
    let old = data
        .as_ref()
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str::<Value>(s).ok());
    if let Some(mut old) = old {
        // Compare v1beta1 shapes without reference lookups: both sides use the same fallback.
        old["metadata"] = json!({"namespace": scope.namespace});
        old["kind"] = hub.get("kind").cloned().unwrap_or(Value::Null);
        let seen = down_plain(&old, &scope);
        for top in ["spec", "status"] {
            if let Some(old_part) = old.get(top).cloned() {
                let mut path = vec![Seg::Key(top.to_string())];
                match hub.get_mut(top) {
                    Some(new_part) => restore(new_part, &old_part, &mut path, &old, &seen, &scope),
                    None => {
                        if invisible(&old, &path, &seen, &scope) {
                            hub[top] = old_part;
                        }
                    }
                }
            }
        }
    }
    hub
}

fn down_plain(hub: &Value, scope: &Scope<'_>) -> Value {
    let mut v = hub.clone();
    shape(&mut v, Dir::Down, scope);
    v
}

#[derive(Debug, Clone)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Whether removing `path` from the v1beta2 object `old` leaves its v1beta1 form unchanged: then v1beta1
/// cannot show that value and a v1beta1 writer cannot have meant to remove it.
fn invisible(old: &Value, path: &[Seg], seen: &Value, scope: &Scope<'_>) -> bool {
    let mut probe = old.clone();
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut cur = &mut probe;
    for seg in parents {
        cur = match (seg, cur) {
            (Seg::Key(k), Value::Object(m)) => match m.get_mut(k) {
                Some(v) => v,
                None => return false,
            },
            (Seg::Index(i), Value::Array(a)) => match a.get_mut(*i) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match (last, cur) {
        (Seg::Key(k), Value::Object(m)) => {
            m.remove(k);
        }
        _ => return false,
    }
    down_plain(&probe, scope) == *seen
}

/// Put back into `new` the values of `old` that v1beta1 could not carry.
fn restore(new: &mut Value, old: &Value, path: &mut Vec<Seg>, root: &Value, seen: &Value, scope: &Scope<'_>) {
    match (new, old) {
        (Value::Object(n), Value::Object(o)) => {
            for (k, ov) in o {
                path.push(Seg::Key(k.clone()));
                match n.get_mut(k) {
                    Some(nv) => restore(nv, ov, path, root, seen, scope),
                    None => {
                        if invisible(root, path, seen, scope) {
                            n.insert(k.clone(), ov.clone());
                        }
                    }
                }
                path.pop();
            }
        }
        (Value::Array(n), Value::Array(o)) => {
            let name = |v: &Value| v.get("name").and_then(Value::as_str).map(str::to_string);
            let named = n.iter().chain(o.iter()).all(|v| name(v).is_some());
            for (oi, ov) in o.iter().enumerate() {
                let target = if named {
                    n.iter_mut().find(|nv| name(nv) == name(ov))
                } else if n.len() == o.len() {
                    n.get_mut(oi)
                } else {
                    None
                };
                if let Some(nv) = target {
                    path.push(Seg::Index(oi));
                    restore(nv, ov, path, root, seen, scope);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn pointer_mut<'a>(obj: &'a mut Value, path: &str) -> Option<&'a mut Value> {
    let mut cur = obj;
    for seg in path.split('.') {
        cur = cur.get_mut(seg)?;
    }
    Some(cur)
}

/// Remove the value at `path`; parents it leaves empty go too.
fn take(obj: &mut Value, path: &str) -> Option<Value> {
    let segs: Vec<&str> = path.split('.').collect();
    let (last, parents) = segs.split_last()?;
    let parent = if parents.is_empty() {
        Some(&mut *obj)
    } else {
        pointer_mut(obj, &parents.join("."))
    };
    let v = parent?.as_object_mut()?.remove(*last)?;
    for depth in (1..parents.len() + 1).rev() {
        let p = segs[..depth].join(".");
        let empty = pointer_mut(obj, &p)
            .and_then(|x| x.as_object())
            .is_some_and(Map::is_empty);
        if !empty {
            break;
        }
        let (up, key) = segs[..depth].split_last().map(|(k, up)| (up.join("."), *k))?;
        let holder = if up.is_empty() {
            Some(&mut *obj)
        } else {
            pointer_mut(obj, &up)
        };
        if let Some(m) = holder.and_then(Value::as_object_mut) {
            m.remove(key);
        }
    }
    Some(v)
}

/// Write `v` at `path`, creating objects on the way.
fn put(obj: &mut Value, path: &str, v: Value) {
    let mut cur = obj;
    let segs: Vec<&str> = path.split('.').collect();
    let Some((last, parents)) = segs.split_last() else {
        return;
    };
    for seg in parents {
        if !cur.get(*seg).is_some_and(Value::is_object) {
            cur[*seg] = json!({});
        }
        cur = &mut cur[*seg];
    }
    cur[*last] = v;
}

/// Seconds of a Go duration string (`1h2m3s`, `90s`, `1.5m`, `500ms`), rounded like Cluster API.
fn parse_duration(s: &str) -> Option<i64> {
    let mut rest = s.trim();
    let negative = rest.starts_with('-');
    rest = rest.trim_start_matches(['-', '+']);
    if rest == "0" {
        return Some(0);
    }
    let mut nanos = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        nanos += number * unit;
        rest = &rest[u..];
    }
    let secs = (nanos / 1e9).round() as i64;
    Some(if negative { -secs } else { secs })
}

/// Go's `time.Duration.String()` of whole seconds: `0s`, `30s`, `10m0s`, `1h0m0s`.
fn format_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".into();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{sign}{m}m{sec}s")
    } else {
        format!("{sign}{sec}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversion::KindVersions;

    fn cx_convert(obj: Value, to: &str) -> Value {
        let versions = KindVersions::default();
        versions.set("infrastructure.cluster.x-k8s.io", "DockerCluster", "v1beta2");
        let cx = Context::new(&versions);
        ClusterApiConversion.convert(obj, to, &cx)
    }

    fn scs_cluster() -> Value {
        json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "tenant"},
            "spec": {
                "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}, "services": {"cidrBlocks": ["10.96.0.0/12"]}},
                "controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443},
                "infrastructureRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DockerCluster", "name": "c1-x", "namespace": "tenant"},
                "topology": {
                    "class": "docker-scs-1-32-v1", "version": "v1.32.2",
                    "controlPlane": {"replicas": 1, "nodeDrainTimeout": "10m0s",
                        "machineHealthCheck": {"enable": true, "maxUnhealthy": "40%", "unhealthyConditions": [{"type": "Ready", "status": "False", "timeout": "5m0s"}]}},
                    "variables": [{"name": "apiserver_loadbalancer", "value": "octavia-ovn", "definitionFrom": ""}],
                    "workers": {"machineDeployments": [{"class": "default-worker", "name": "md-0", "replicas": 3,
                        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "deletePolicy": "Oldest"}}}]}
                }
            },
            "status": {"phase": "Provisioned", "controlPlaneReady": true, "infrastructureReady": true,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "v1beta2": {"conditions": [{"type": "Available", "status": "True", "reason": "Available", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
                "failureDomains": {"az1": {"controlPlane": true}}}
        })
    }

    #[test]
    fn a_v1beta1_cluster_moves_into_the_v1beta2_shape() {
        let hub = cx_convert(scs_cluster(), "v1beta2");
        assert_eq!(hub["apiVersion"], "cluster.x-k8s.io/v1beta2");
        let t = &hub["spec"]["topology"];
        assert_eq!(t["classRef"], json!({"name": "docker-scs-1-32-v1"}));
        assert_eq!(t.get("class"), None);
        assert_eq!(t["controlPlane"]["deletion"]["nodeDrainTimeoutSeconds"], 600);
        assert_eq!(
            t["controlPlane"]["healthCheck"],
            json!({"enabled": true, "checks": {"unhealthyNodeConditions": [{"type": "Ready", "status": "False", "timeoutSeconds": 300}]},
                   "remediation": {"triggerIf": {"unhealthyLessThanOrEqualTo": "40%"}}})
        );
        assert_eq!(
            t["variables"],
            json!([{"name": "apiserver_loadbalancer", "value": "octavia-ovn"}])
        );
        let md = &t["workers"]["machineDeployments"][0];
        assert_eq!(
            md["rollout"],
            json!({"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}})
        );
        assert_eq!(md["deletion"], json!({"order": "Oldest"}));
        assert_eq!(md.get("strategy"), None);
        assert_eq!(
            hub["spec"]["infrastructureRef"],
            json!({"apiGroup": "infrastructure.cluster.x-k8s.io", "kind": "DockerCluster", "name": "c1-x"})
        );
        assert_eq!(hub["spec"]["controlPlaneEndpoint"]["host"], "10.0.0.1");
        let s = &hub["status"];
        assert_eq!(s["conditions"][0]["type"], "Available");
        assert_eq!(s["deprecated"]["v1beta1"]["conditions"][0]["type"], "Ready");
        assert_eq!(
            s["initialization"],
            json!({"controlPlaneInitialized": true, "infrastructureProvisioned": true})
        );
        assert_eq!(
            s["failureDomains"],
            json!([{"name": "az1", "controlPlane": true}])
        );
        assert_eq!(s.get("v1beta2"), None);
    }

    #[test]
    fn v1beta2_to_v1beta1_and_back_loses_nothing() {
        let mut hub = cx_convert(scs_cluster(), "v1beta2");
        // Fields v1beta1 cannot show: an explicit false, a machine condition with its own names.
        hub["spec"]["paused"] = json!(false);
        hub["spec"]["topology"]["workers"]["machineDeployments"][0]["deletion"]
            ["nodeDeletionTimeoutSeconds"] = json!(7);
        let spoke = cx_convert(hub.clone(), "v1beta1");
        assert_eq!(spoke["spec"]["topology"]["class"], "docker-scs-1-32-v1");
        assert_eq!(
            spoke["spec"]["infrastructureRef"],
            json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DockerCluster", "name": "c1-x", "namespace": "tenant"})
        );
        assert_eq!(
            spoke["spec"]["topology"]["workers"]["machineDeployments"][0]["nodeDeletionTimeout"],
            "7s"
        );
        assert_eq!(
            spoke["status"]["failureDomains"],
            json!({"az1": {"controlPlane": true}})
        );
        assert!(spoke["metadata"]["annotations"][DATA_ANNOTATION].is_string());
        let back = cx_convert(spoke, "v1beta2");
        assert_eq!(back, hub);
    }

    #[test]
    fn a_v1beta1_edit_wins_over_the_annotation() {
        let hub = cx_convert(scs_cluster(), "v1beta2");
        let mut spoke = cx_convert(hub, "v1beta1");
        spoke["spec"]["topology"]["version"] = json!("v1.32.3");
        spoke["spec"]["topology"]["workers"]["machineDeployments"][0]["replicas"] = json!(5);
        if let Some(cp) = spoke["spec"]["topology"]["controlPlane"].as_object_mut() {
            cp.remove("machineHealthCheck");
        }
        let back = cx_convert(spoke, "v1beta2");
        assert_eq!(back["spec"]["topology"]["version"], "v1.32.3");
        assert_eq!(
            back["spec"]["topology"]["workers"]["machineDeployments"][0]["replicas"],
            5
        );
        assert_eq!(back["spec"]["topology"]["controlPlane"].get("healthCheck"), None);
        assert_eq!(back["metadata"].get("annotations"), None);
    }

    #[test]
    fn cluster_class_template_references_move() {
        let cc = json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterClass", "metadata": {"name": "cc", "namespace": "t"},
        "spec": {
            "infrastructure": {"ref": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DockerClusterTemplate", "name": "i", "namespace": "t"}},
            "controlPlane": {"ref": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlaneTemplate", "name": "cp"},
                "machineInfrastructure": {"ref": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DockerMachineTemplate", "name": "cpm"}}},
            "workers": {"machineDeployments": [{"class": "default-worker", "template": {
                "bootstrap": {"ref": {"apiVersion": "bootstrap.cluster.x-k8s.io/v1beta1", "kind": "KubeadmConfigTemplate", "name": "b"}},
                "infrastructure": {"ref": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DockerMachineTemplate", "name": "w"}}}}]},
            "patches": [{"name": "p", "external": {"generateExtension": "gen"}}],
            "variables": [{"name": "v", "required": false, "schema": {"openAPIV3Schema": {"type": "string"}}}]
        }});
        let hub = cx_convert(cc.clone(), "v1beta2");
        assert_eq!(
            hub["spec"]["infrastructure"],
            json!({"templateRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DockerClusterTemplate", "name": "i"}})
        );
        assert_eq!(
            hub["spec"]["controlPlane"]["machineInfrastructure"]["templateRef"]["name"],
            "cpm"
        );
        let md = &hub["spec"]["workers"]["machineDeployments"][0];
        assert_eq!(md["bootstrap"]["templateRef"]["kind"], "KubeadmConfigTemplate");
        assert_eq!(md["infrastructure"]["templateRef"]["name"], "w");
        assert_eq!(md.get("template"), None);
        assert_eq!(
            hub["spec"]["patches"][0]["external"],
            json!({"generatePatchesExtension": "gen"})
        );
        let spoke = cx_convert(hub.clone(), "v1beta1");
        assert_eq!(spoke["spec"]["workers"], cc["spec"]["workers"]);
        assert_eq!(cx_convert(spoke, "v1beta2"), hub);
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10m0s"), Some(600));
        assert_eq!(parse_duration("1h30m"), Some(5400));
        assert_eq!(parse_duration("1.5s"), Some(2));
        assert_eq!(parse_duration("500ms"), Some(1));
        assert_eq!(parse_duration("ten"), None);
        assert_eq!(format_duration(600), "10m0s");
        assert_eq!(format_duration(3600), "1h0m0s");
        assert_eq!(format_duration(7), "7s");
    }
}
