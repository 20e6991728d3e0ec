//! ProviderPlugin controller: resolve the image reference, verify the signature, compile, validate the
//! config, swap the plugin in, report. The reference is resolved again every
//! `--plugin-refresh-interval`, so a tag that moves to a fixed digest is picked up without a restart.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use super::plugins::{load_state, new_capabilities};
use super::{fair, paused, Context};
use crate::api::condition::{self, false_condition, true_condition, types, READY};
use crate::api::{ConditionSeverity, ProviderPlugin, ProviderPluginStatus};
use crate::oci::auth::Credentials;
use crate::oci::fetch::PluginFetcher;
use crate::oci::signature::{PublicKey, SignaturePolicy, Verdict};
use crate::plugin::capability::{CaBundle, Capabilities, UreqTransport};
use crate::plugin::{Grants, Limits, PluginSettings};

pub(crate) const CONTROLLER: &str = "providerplugin";

/// A failed (or not yet finished) load step: the condition reason and a message that says what to do.
struct LoadError {
    reason: &'static str,
    message: String,
    /// Not a failure: the step is under way (the component is compiling); look again after this.
    pending: Option<std::time::Duration>,
}

fn fail(reason: &'static str) -> impl FnOnce(String) -> LoadError {
    move |message| LoadError {
        reason,
        message,
        pending: None,
    }
}

/// How often a ProviderPlugin whose component compiles in the background is looked at again.
const COMPILE_POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a reconcile waits (asleep, not blocking a thread) for a compile before it reports
/// `Compiling` and returns: long enough for a Rust plugin, far shorter than a Python one.
const COMPILE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The limits of a ProviderPlugin spec, defaults where unset; a deadline or memory over the admin's cap
/// (`--plugin-max-deadline`, `--plugin-max-memory-mib`) is refused, naming the field and the cap.
pub fn limits_of(pp: &ProviderPlugin, args: &super::ControllerArgs) -> Result<Limits, String> {
    let limits = Limits::from_spec(&pp.spec.limits).map_err(|e| e.to_string())?;
    if limits.deadline() > args.plugin_max_deadline {
        return Err(format!(
            "spec.limits.deadline {:?} is over the most this controller allows per call ({}s,              --plugin-max-deadline); lower it or ask the cluster admin",
            pp.spec.limits.deadline.as_deref().unwrap_or_default(),
            args.plugin_max_deadline.as_secs_f64()
        ));
    }
    if limits.memory_bytes as u64 > args.plugin_max_memory_mib << 20 {
        return Err(format!(
            "spec.limits.memory {:?} is over the most this controller allows per instance ({} MiB,              --plugin-max-memory-mib); lower it or ask the cluster admin",
            pp.spec.limits.memory.as_deref().unwrap_or_default(),
            args.plugin_max_memory_mib
        ));
    }
    Ok(limits)
}

/// Grants from `spec.capabilities`; `state` is always linked (a per-plugin store the host keeps).
pub fn grants_of(pp: &ProviderPlugin) -> Grants {
    Grants::from_capabilities(&pp.spec.capabilities, true)
}

/// The CA bundle of `spec.capabilities.httpCABundle`, read from the ProviderPlugin's namespace.
async fn ca_bundle(ctx: &Context, pp: &ProviderPlugin) -> Result<Option<CaBundle>, LoadError> {
    let Some(source) = &pp.spec.capabilities.http_ca_bundle else {
        return Ok(None);
    };
    let ns = pp.namespace().unwrap_or_default();
    let what = source.describe(&ns);
    let missing = fail("CABundleMissing");
    let pem = match (&source.config_map, &source.secret) {
        (Some(r), _) => {
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
            let cm = api
                .get_opt(&r.name)
                .await
                .map_err(|e| missing(format!("spec.capabilities.httpCABundle: cannot read {what}: {e}")))?;
            let cm = cm.ok_or_else(|| {
                fail("CABundleMissing")(format!(
                    "spec.capabilities.httpCABundle: ConfigMap {ns}/{} does not exist",
                    r.name
                ))
            })?;
            cm.data
                .and_then(|d| d.get(&r.key).map(|v| v.clone().into_bytes()))
                .or_else(|| cm.binary_data.and_then(|d| d.get(&r.key).map(|v| v.0.clone())))
        }
        (None, Some(r)) => ctx
            .secret_data(&ns, &r.name)
            .await
            .map_err(|e| fail("CABundleMissing")(format!("spec.capabilities.httpCABundle: {e}")))?
            .remove(&r.key),
        (None, None) => None,
    };
    let pem = pem.ok_or_else(|| {
        fail("CABundleMissing")(format!("spec.capabilities.httpCABundle: {what} does not exist"))
    })?;
    CaBundle::from_pem(&what, &pem)
        .map(Some)
        .map_err(|e| fail("CABundleInvalid")(format!("spec.capabilities.httpCABundle: {e}")))
}

/// The namespace of a verification key's Secret: the ProviderPlugin's own. Naming another one is refused
/// before anything is read, so a ProviderPlugin cannot probe which Secrets exist elsewhere.
fn key_namespace<'a>(own: &'a str, key: &'a crate::api::SecretKeyRef) -> Result<&'a str, String> {
    match key.namespace.as_deref() {
        None => Ok(own),
        Some(ns) if ns == own => Ok(own),
        Some(other) => Err(format!(
            "{other:?} is not the ProviderPlugin's namespace {own:?}; a ProviderPlugin reads its keys only \
             from its own namespace: copy Secret {other}/{} there and drop the namespace",
            key.name
        )),
    }
}

async fn policy(ctx: &Context, pp: &ProviderPlugin) -> Result<SignaturePolicy, LoadError> {
    let ns = pp.namespace().unwrap_or_default();
    let mut keys = Vec::new();
    for (i, k) in pp.spec.verification.keys.iter().enumerate() {
        let key_ns = key_namespace(&ns, k).map_err(|e| {
            fail("VerificationKeyInvalid")(format!("spec.verification.keys[{i}].namespace: {e}"))
        })?;
        let data = ctx
            .secret_data(key_ns, &k.name)
            .await
            .map_err(|e| fail("VerificationKeyMissing")(format!("spec.verification.keys[{i}]: {e}")))?;
        let pem = data.get(&k.key).ok_or_else(|| {
            fail("VerificationKeyMissing")(format!(
                "spec.verification.keys[{i}]: Secret {key_ns}/{} has no key `{}`",
                k.name, k.key
            ))
        })?;
        let origin = format!("{key_ns}/{}/{}", k.name, k.key);
        keys.push(
            PublicKey::from_pem(&origin, pem)
                .map_err(|e| fail("VerificationKeyInvalid")(format!("spec.verification.keys[{i}]: {e}")))?,
        );
    }
    Ok(SignaturePolicy {
        keys,
        allow_unsigned: pp.spec.verification.allow_unsigned,
    })
}

/// Resolve, verify, compile and validate; on success the plugin serves from now on.
async fn load(
    ctx: &Context,
    pp: &ProviderPlugin,
) -> Result<(Arc<super::plugins::LoadedPlugin>, bool), LoadError> {
    let ns = pp.namespace().unwrap_or_default();
    let name = pp.name_any();
    let generation = pp.metadata.generation.unwrap_or_default();
    let limits = limits_of(pp, &ctx.args).map_err(fail("InvalidSpec"))?;
    let grants = grants_of(pp);
    let ca_bundle = ca_bundle(ctx, pp).await?;
    let policy = policy(ctx, pp).await?;
    let host = pp.spec.image.split('/').next().unwrap_or_default().to_string();
    let source = ctx.oci_source(
        pp.spec.insecure_registry.then_some(host.as_str()),
        Credentials::anonymous(),
    );
    let fetcher = PluginFetcher::new(source, ctx.blobs.clone(), policy);
    let pulled = fetcher.pull(&pp.spec.image).await.map_err(|e| {
        let reason = match &e {
            crate::oci::error::OciError::Unsigned { .. } => "SignatureMissing",
            crate::oci::error::OciError::BadSignature { .. } => "SignatureInvalid",
            crate::oci::error::OciError::NotAPlugin { .. }
            | crate::oci::error::OciError::UnsupportedWorld { .. } => "IncompatiblePlugin",
            _ => "PullFailed",
        };
        fail(reason)(format!("spec.image {}: {e}", pp.spec.image))
    })?;
    if let Some(current) = ctx.plugins.get(&ns, &name) {
        if current.plugin.digest() == pulled.component_digest && current.generation == generation {
            return Ok((current, false));
        }
    }
    let verified_by = match &pulled.verdict {
        Verdict::Signed(v) => v.key.clone(),
        Verdict::UnsignedAllowed => "unsigned (allowUnsigned)".to_string(),
    };
    let (state, secret) = load_state(
        &ctx.client,
        ctx.args.plugin_state_namespace.as_deref(),
        &ns,
        &name,
    )
    .await
    .map_err(fail("StateUnavailable"))?;
    let capabilities = new_capabilities(state, secret);
    let config = pp
        .spec
        .config
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "{}".to_string());
    let settings = PluginSettings {
        name: format!("{ns}/{name}"),
        limits,
        grants,
        capabilities: Capabilities {
            config: Arc::from(config.as_str()),
            secrets: capabilities.0.clone(),
            state: capabilities.1.clone(),
            http: Arc::new(UreqTransport::new(ca_bundle.as_ref())),
            ..Capabilities::default()
        },
        ..PluginSettings::default()
    };
    // Compiling a large component (Python ~18 MB, JavaScript ~12 MB) takes tens of seconds: it runs on
    // a thread of its own while this reconcile returns and reports it; the last good plugin serves.
    // A small one (Rust, well under a second) is waited for briefly, without blocking a thread.
    let mut waited = std::time::Duration::ZERO;
    while let crate::plugin::Compilation::Running { elapsed } = ctx
        .plugins
        .host
        .compile_in_background(&pulled.component_digest, pulled.bytes.clone())
    {
        if waited < COMPILE_WAIT {
            tokio::time::sleep(COMPILE_WAIT / 20).await;
            waited += COMPILE_WAIT / 20;
            continue;
        }
        return Err(LoadError {
            reason: "Compiling",
            message: format!(
                "compiling {} ({:.1} MB) for {} s; large components (Python, JavaScript) take up to a \
                 minute the first time, then load from the compiled-code cache",
                pulled.component_digest,
                pulled.bytes.len() as f64 / 1e6,
                elapsed.as_secs()
            ),
            pending: Some(COMPILE_POLL),
        });
    }
    let host_ = ctx.plugins.host.clone();
    let bytes = pulled.bytes.clone();
    let plugin = tokio::task::spawn_blocking(move || host_.load(&bytes, settings))
        .await
        .map_err(|e| fail("CompileFailed")(format!("the compiler panicked: {e}")))?
        .map_err(|e| {
            let reason = match &e {
                crate::plugin::PluginError::Refused { .. } => "ImportRefused",
                crate::plugin::PluginError::BadComponent { .. } => "InvalidComponent",
                _ => "CompileFailed",
            };
            fail(reason)(e.to_string())
        })?;
    // The plugin judges its own config before it serves anything.
    let validated = plugin
        .offload("validate-config", move |p| p.validate_config(&config))
        .await;
    ctx.metrics.plugin_call(
        &format!("{ns}/{name}"),
        &validated.report,
        validated.result.as_ref().map(|r| r.is_ok()),
    );
    match validated.result {
        Ok(Ok(())) => {}
        Ok(Err(guest)) => return Err(fail("InvalidConfig")(format!("spec.config: {guest}"))),
        Err(e) => return Err(fail("PluginFailed")(format!("validate-config: {e}"))),
    }
    // What the plugin says it needs, compared with the grants on the status.
    let info = plugin.offload("info", |p| p.info()).await;
    ctx.metrics.plugin_call(
        &format!("{ns}/{name}"),
        &info.report,
        info.result.as_ref().map(|_| true),
    );
    let requested = info
        .result
        .map_err(|e| fail("PluginFailed")(format!("info: {e}")))?
        .capabilities;
    let granted_secrets = pp
        .spec
        .capabilities
        .secrets
        .iter()
        .map(|g| (g.name.clone(), g.keys.clone()))
        .collect();
    ctx.plugins.install(
        &ns,
        &name,
        plugin,
        pulled.manifest_digest,
        generation,
        verified_by,
        granted_secrets,
        capabilities,
        requested,
    );
    let loaded = ctx
        .plugins
        .get(&ns, &name)
        .ok_or_else(|| fail("CompileFailed")("the plugin vanished right after loading".into()))?;
    Ok((loaded, true))
}

/// Reconciles one ProviderPlugin.
pub async fn reconcile(pp: Arc<ProviderPlugin>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let Some(_slot) = ctx.slot(CONTROLLER, pp.as_ref()) else {
        return Ok(Action::requeue(fair::DEFERRED));
    };
    let started = Instant::now();
    let ns = pp.namespace().unwrap_or_default();
    let name = pp.name_any();
    let api: Api<ProviderPlugin> = Api::namespaced(ctx.client.clone(), &ns);
    tracing::debug!(
        plugin = %format!("{ns}/{name}"),
        generation = ?pp.metadata.generation,
        resource_version = ?pp.metadata.resource_version,
        "reconciling ProviderPlugin"
    );
    // Work on the object as the API has it now: a timer-triggered reconcile may carry an older copy.
    let pp = match api.get_opt(&name).await? {
        Some(fresh) => Arc::new(fresh),
        None => {
            ctx.plugins.remove(&ns, &name);
            return Ok(Action::await_change());
        }
    };
    if pp.metadata.deletion_timestamp.is_some() {
        ctx.plugins.remove(&ns, &name);
        return Ok(Action::await_change());
    }
    // A paused ProviderPlugin is neither resolved nor reloaded; a plugin already loaded stays in use.
    if let Some(action) = paused::gate(&ctx.client, pp.as_ref(), paused::own_annotation(pp.as_ref())).await? {
        return Ok(action);
    }
    let now = super::now();
    let mut status = pp.status.clone().unwrap_or_default();
    let outcome = load(&ctx, &pp).await;
    let key = format!("pp/{ns}/{name}");
    let action = match outcome {
        Ok((loaded, swapped)) => {
            ctx.succeeded(&key);
            if swapped {
                let previous = status.resolved_digest.clone();
                ctx.event(
                    pp.as_ref(),
                    EventType::Normal,
                    "PluginLoaded",
                    "Load",
                    match previous {
                        Some(p) if p != loaded.plugin.digest() => format!(
                            "now serving {} (was {p}); calls in flight finish on the old one",
                            loaded.plugin.digest()
                        ),
                        _ => format!("serving {} ({})", loaded.plugin.digest(), loaded.verified_by),
                    },
                )
                .await;
            }
            status.resolved_digest = Some(loaded.plugin.digest().to_string());
            status.verified_by = Some(loaded.verified_by.clone());
            status.imports = loaded.plugin.imports().to_vec();
            status.exports = loaded.plugin.exports().to_vec();
            status.last_load_error = None;
            condition::set(&mut status.conditions, true_condition(types::PLUGIN_LOADED), &now);
            let (report, granted) = capability_report(&loaded);
            status.capabilities = Some(report);
            condition::set(&mut status.conditions, granted, &now);
            Action::requeue(ctx.args.plugin_refresh_interval)
        }
        Err(LoadError {
            reason,
            message,
            pending: Some(again),
        }) => {
            // Under way, not failed: no Warning event, no backoff, the last good plugin serves.
            condition::set(
                &mut status.conditions,
                false_condition(types::PLUGIN_LOADED, ConditionSeverity::Info, reason, &message),
                &now,
            );
            Action::requeue(again)
        }
        Err(e) => {
            ctx.plugins
                .failed(&ns, &name, format!("{}: {}", e.reason, e.message));
            let serving = ctx.plugins.get(&ns, &name);
            let message = match &serving {
                Some(p) => format!(
                    "{} (the last good plugin {} keeps serving)",
                    e.message,
                    p.plugin.digest()
                ),
                None => e.message.clone(),
            };
            if status.last_load_error.as_deref() != Some(message.as_str()) {
                ctx.event(pp.as_ref(), EventType::Warning, e.reason, "Load", message.clone())
                    .await;
            }
            status.last_load_error = Some(message.clone());
            condition::set(
                &mut status.conditions,
                false_condition(types::PLUGIN_LOADED, ConditionSeverity::Error, e.reason, &message),
                &now,
            );
            Action::requeue(ctx.backoff(&key))
        }
    };
    if let Some(loaded) = ctx.plugins.get(&ns, &name) {
        let stats = loaded.plugin.stats();
        status.calls.total = stats.calls;
        status.calls.errors = stats.guest_errors;
        status.calls.traps = stats.failures;
        status.calls.fuel_consumed = stats.fuel;
    }
    // Ready while some plugin serves, even if the latest load failed (that shows in PluginLoaded).
    let ready = match ctx.plugins.get(&ns, &name) {
        Some(_) => true_condition(READY),
        None => {
            let c = condition::find(&status.conditions, types::PLUGIN_LOADED).cloned();
            false_condition(
                READY,
                ConditionSeverity::Error,
                c.as_ref()
                    .and_then(|c| c.reason.as_deref())
                    .unwrap_or("NotLoaded"),
                c.as_ref()
                    .and_then(|c| c.message.as_deref())
                    .unwrap_or("not loaded yet"),
            )
        }
    };
    condition::set(&mut status.conditions, ready, &now);
    status.observed_generation = pp.metadata.generation;
    write_status(&api, &name, &pp.status, status).await?;
    let result = if ctx.plugins.get(&ns, &name).is_some() {
        "ok"
    } else {
        "requeue"
    };
    ctx.metrics.reconciled(CONTROLLER, result, started.elapsed());
    Ok(action)
}

/// The plugin's requested capabilities against its grants, and the `CapabilitiesGranted` condition.
fn capability_report(
    loaded: &super::plugins::LoadedPlugin,
) -> (crate::api::CapabilityReport, crate::api::Condition) {
    use crate::plugin::contract::{capability_name, missing_grants};
    let missing = missing_grants(&loaded.requested, loaded.plugin.grants());
    let report = crate::api::CapabilityReport {
        requested: loaded
            .requested
            .iter()
            .map(|c| capability_name(*c).to_string())
            .collect(),
        not_granted: missing
            .iter()
            .map(|(c, _)| capability_name(*c).to_string())
            .collect(),
    };
    let condition = if missing.is_empty() {
        true_condition(types::CAPABILITIES_GRANTED)
    } else {
        let gaps: Vec<String> = missing
            .iter()
            .map(|(c, field)| format!("`{}` (grant it in {field})", capability_name(*c)))
            .collect();
        false_condition(
            types::CAPABILITIES_GRANTED,
            ConditionSeverity::Warning,
            "CapabilityNotGranted",
            format!(
                "the plugin's info() asks for {} but the ProviderPlugin does not grant it: each such call \
                 gets the typed `denied` error",
                gaps.join(", ")
            ),
        )
    };
    (report, condition)
}

async fn write_status(
    api: &Api<ProviderPlugin>,
    name: &str,
    old: &Option<ProviderPluginStatus>,
    status: ProviderPluginStatus,
) -> Result<(), kube::Error> {
    let Some(patch) = super::status::merge_patch(old.as_ref(), &status) else {
        return Ok(());
    };
    api.patch_status(name, &PatchParams::default(), &patch)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(namespace: Option<&str>) -> crate::api::SecretKeyRef {
        crate::api::SecretKeyRef {
            name: "cosign".into(),
            namespace: namespace.map(str::to_owned),
            key: "cosign.pub".into(),
        }
    }

    #[test]
    fn verification_keys_come_from_the_plugins_own_namespace_only() {
        assert_eq!(key_namespace("team-a", &key(None)), Ok("team-a"));
        assert_eq!(key_namespace("team-a", &key(Some("team-a"))), Ok("team-a"));
        let err = key_namespace("team-a", &key(Some("kube-system"))).expect_err("foreign namespace");
        assert!(
            err.contains("\"kube-system\" is not the ProviderPlugin's namespace \"team-a\""),
            "{err}"
        );
        assert!(err.contains("copy Secret kube-system/cosign there"), "{err}");
    }
}
