//! The I/O of `stackhost migrate`: read the cluster into a [`Snapshot`], execute a report's adoptions.

use std::collections::{BTreeSet, HashMap};

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::Value;

use super::{describe_target, Applied, Report, Snapshot, SourceCheck, Target};
use crate::api::ReleaseSourceSpec;
use crate::controller::Context;

/// Field manager of the adoption patches.
const FIELD_MANAGER: &str = "stackhost-migrate";

fn status_text(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.code),
        other => other.to_string(),
    }
}

async fn list_values<K>(api: Api<K>) -> Result<Vec<Value>, kube::Error>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let items = api.list(&ListParams::default()).await?.items;
    Ok(items
        .into_iter()
        .filter_map(|o| serde_json::to_value(o).ok())
        .collect())
}

fn own_resource(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: crate::api::GROUP.into(),
        version: crate::api::VERSION.into(),
        api_version: format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Reads everything [`super::assess`] needs. `namespace` narrows the ClusterStack kinds (the
/// cluster-wide checks stay cluster-wide); `ctx` resolves and lists release sources exactly as the
/// controllers will.
pub async fn gather(client: &kube::Client, namespace: Option<&str>, ctx: &Context) -> Snapshot {
    let mut snap = Snapshot::default();
    let unreadable = |what: &str, e: kube::Error| (what.to_owned(), status_text(&e));
    let mut failures = Vec::new();

    match list_values(Api::<CustomResourceDefinition>::all(client.clone())).await {
        Ok(crds) => {
            snap.crds = crds
                .into_iter()
                .filter(|c| c.pointer("/spec/group").and_then(Value::as_str) == Some(crate::api::GROUP))
                .collect()
        }
        Err(e) => failures.push(unreadable("CustomResourceDefinitions", e)),
    }
    match list_values(Api::<Deployment>::all(client.clone())).await {
        Ok(d) => snap.deployments = d,
        Err(e) => failures.push(unreadable("Deployments (all namespaces)", e)),
    }
    match list_values(Api::<ValidatingWebhookConfiguration>::all(client.clone())).await {
        Ok(w) => snap
            .webhooks
            .extend(with_kind(w, "ValidatingWebhookConfiguration")),
        Err(e) => failures.push(unreadable("ValidatingWebhookConfigurations", e)),
    }
    match list_values(Api::<MutatingWebhookConfiguration>::all(client.clone())).await {
        Ok(w) => snap.webhooks.extend(with_kind(w, "MutatingWebhookConfiguration")),
        Err(e) => failures.push(unreadable("MutatingWebhookConfigurations", e)),
    }
    match kube::discovery::group(client, "runtime.cluster.x-k8s.io").await {
        Ok(group) => {
            if let Some((ar, _)) = group.recommended_kind("ExtensionConfig") {
                match list_values(Api::<DynamicObject>::all_with(client.clone(), &ar)).await {
                    Ok(e) => snap.extension_configs = e,
                    Err(e) => failures.push(unreadable("ExtensionConfigs", e)),
                }
            }
        }
        // Cluster API's runtime SDK is not installed: nothing registers hooks.
        Err(kube::Error::Discovery(_)) => {}
        Err(e) => failures.push(unreadable("the runtime.cluster.x-k8s.io API group", e)),
    }

    let served = |plural: &str| {
        snap.crds
            .iter()
            .any(|c| c.pointer("/spec/names/plural").and_then(Value::as_str) == Some(plural))
    };
    let (has_stacks, has_releases, has_addons, has_plugins) = (
        served("clusterstacks"),
        served("clusterstackreleases"),
        served("clusteraddons"),
        served("providerplugins"),
    );
    let api = |kind: &str, plural: &str| {
        let ar = own_resource(kind, plural);
        match namespace {
            Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar),
            None => Api::<DynamicObject>::all_with(client.clone(), &ar),
        }
    };
    for (served, kind, plural, into) in [
        (
            has_stacks,
            "ClusterStack",
            "clusterstacks",
            &mut snap.cluster_stacks,
        ),
        (
            has_releases,
            "ClusterStackRelease",
            "clusterstackreleases",
            &mut snap.releases,
        ),
        (has_addons, "ClusterAddon", "clusteraddons", &mut snap.addons),
    ] {
        if !served {
            continue;
        }
        match list_values(api(kind, plural)).await {
            Ok(items) => *into = items,
            Err(e) => failures.push(unreadable(&format!("{kind}s"), e)),
        }
    }
    if has_plugins {
        match list_values(api("ProviderPlugin", "providerplugins")).await {
            Ok(items) => {
                snap.provider_plugins = items
                    .iter()
                    .map(|p| {
                        format!(
                            "{}/{}",
                            super::s(p, "/metadata/namespace"),
                            super::s(p, "/metadata/name")
                        )
                    })
                    .collect()
            }
            Err(e) => failures.push(unreadable("ProviderPlugins", e)),
        }
    }
    snap.unreadable = failures;

    // Release sources, each listed once however many ClusterStacks share it.
    let mut listed: HashMap<String, Result<BTreeSet<String>, String>> = HashMap::new();
    for cs in &snap.cluster_stacks {
        let key = super::key_of(cs);
        let ns = super::s(cs, "/metadata/namespace");
        let spec: Option<ReleaseSourceSpec> = match cs.pointer("/spec/source").filter(|v| !v.is_null()) {
            None => None,
            Some(v) => match serde_json::from_value(v.clone()) {
                Ok(spec) => Some(spec),
                Err(e) => {
                    snap.sources.insert(
                        key,
                        SourceCheck::Unusable(format!("spec.source is not valid: {e}")),
                    );
                    continue;
                }
            },
        };
        let check = match ctx.release_source(ns, spec.as_ref()).await {
            Err(why) => SourceCheck::Unusable(why),
            Ok(source) => {
                let tags = match listed.get(&source.id()) {
                    Some(tags) => tags.clone(),
                    None => {
                        let tags = ctx
                            .list_tags(source.as_ref(), true)
                            .await
                            .map(|t| t.into_iter().collect::<BTreeSet<_>>());
                        listed.insert(source.id(), tags.clone());
                        tags
                    }
                };
                match tags {
                    Ok(tags) => SourceCheck::Listed {
                        source: source.describe(),
                        tags,
                    },
                    Err(why) => SourceCheck::Unusable(format!("cannot list {}: {why}", source.describe())),
                }
            }
        };
        snap.sources.insert(key, check);
    }

    // What each release applied, read back with its kind resolved by discovery.
    let mut kinds: HashMap<(String, String, String), Option<(ApiResource, bool)>> = HashMap::new();
    for r in &snap.releases {
        let rkey = super::key_of(r);
        let rns = super::s(r, "/metadata/namespace");
        let resources = r
            .pointer("/status/resources")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut objects = Vec::new();
        for res in &resources {
            let (group, version, kind, name) = (
                super::s(res, "/group"),
                super::s(res, "/version"),
                super::s(res, "/kind"),
                super::s(res, "/name"),
            );
            if kind.is_empty() || name.is_empty() {
                continue;
            }
            let gvk = (group.to_owned(), version.to_owned(), kind.to_owned());
            if !kinds.contains_key(&gvk) {
                let resolved =
                    match kube::discovery::pinned_kind(client, &GroupVersionKind::gvk(group, version, kind))
                        .await
                    {
                        Ok((ar, caps)) => Some((ar, caps.scope == kube::discovery::Scope::Namespaced)),
                        Err(_) => None,
                    };
                kinds.insert(gvk.clone(), resolved);
            }
            let declared = super::s(res, "/namespace");
            let Some(Some((ar, namespaced))) = kinds.get(&gvk).cloned() else {
                let target = Target {
                    group: group.into(),
                    version: version.into(),
                    kind: kind.into(),
                    plural: String::new(),
                    namespace: declared.into(),
                    name: name.into(),
                };
                objects.push((
                    describe_target(&target),
                    Applied::Unreadable("the API server does not serve this kind".into()),
                ));
                continue;
            };
            // CSO sent every namespaced object to the release's namespace (cso-behaviour.md §2.6).
            let ns = match (namespaced, declared.is_empty()) {
                (false, _) => "",
                (true, true) => rns,
                (true, false) => declared,
            };
            let target = Target {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                plural: ar.plural.clone(),
                namespace: ns.into(),
                name: name.into(),
            };
            let api = if namespaced {
                Api::<DynamicObject>::namespaced_with(client.clone(), ns, &ar)
            } else {
                Api::<DynamicObject>::all_with(client.clone(), &ar)
            };
            let applied = match api.get_opt(name).await {
                Ok(Some(o)) => Applied::Found {
                    target: target.clone(),
                    metadata: serde_json::to_value(&o.metadata).unwrap_or(Value::Null),
                },
                Ok(None) => Applied::Missing,
                Err(e) => Applied::Unreadable(status_text(&e)),
            };
            objects.push((describe_target(&target), applied));
        }
        snap.applied.insert(rkey, objects);
    }
    snap
}

fn with_kind(items: Vec<Value>, kind: &str) -> impl Iterator<Item = Value> + '_ {
    items.into_iter().map(move |mut v| {
        v["kind"] = Value::String(kind.to_owned());
        v
    })
}

/// Executes the adoptions of `report`, one merge patch per object, in report order. Returns each
/// object with its outcome; an object changed since the check fails with a conflict and stays as it is.
pub async fn execute(client: &kube::Client, report: &Report) -> Vec<(String, Result<(), String>)> {
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    let mut out = Vec::new();
    for (finding, adoption) in report.adoptions() {
        let t = &adoption.target;
        let ar = ApiResource {
            group: t.group.clone(),
            version: t.version.clone(),
            api_version: if t.group.is_empty() {
                t.version.clone()
            } else {
                format!("{}/{}", t.group, t.version)
            },
            kind: t.kind.clone(),
            plural: t.plural.clone(),
        };
        let api = if t.namespace.is_empty() {
            Api::<DynamicObject>::all_with(client.clone(), &ar)
        } else {
            Api::<DynamicObject>::namespaced_with(client.clone(), &t.namespace, &ar)
        };
        let outcome = match api.patch(&t.name, &params, &Patch::Merge(&adoption.patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Err(format!(
                "it changed since the check ({}); run the check again",
                s.message
            )),
            Err(e) => Err(status_text(&e)),
        };
        out.push((finding.object.clone(), outcome));
    }
    out
}
