//! `docker`: the sample provider plugin of `stackhost sandbox` and the controller tests.
//!
//! - `reconcile-node-images`: each image is "pulled" for `pendingRounds` calls (reported pending with a
//!   one-second retry hint, progress kept in the `state` store), then ready as `<imageRegistry>/<name>`.
//! - `patch-cluster-class`: annotates every ClusterClass with the plugin that patched it and the ready
//!   node image ids of the release; every other object is returned unchanged.
//! - `cleanup-node-images`: forgets the images' progress.
//! - `addon-values`: sets `global.imageRegistry` (the Helm convention for "pull every image from here") to
//!   the configured `imageRegistry`, unless the release's values set it already.
//!
//! Config (`spec.config` of the ProviderPlugin): `{"imageRegistry": "docker.io", "pendingRounds": 1}`.

wit_bindgen::generate!({
    path: "../../wit",
    world: "provider",
});

use clusterstack::provider::types::{
    Capability, ClusterInfo, Error, ImageState, ImageStatus, NodeImage, PluginInfo, ReleaseInfo, Retry,
};
use clusterstack::provider::{config, log, state};
use exports::clusterstack::provider::plugin::Guest;
use serde_json::{Map, Value};

/// Annotation naming the plugin that patched a ClusterClass.
const PATCHED_BY: &str = "docker.clusterstack.x-k8s.io/patched-by";
/// Annotation listing the node image ids of the release.
const NODE_IMAGES: &str = "docker.clusterstack.x-k8s.io/node-images";

struct Settings {
    image_registry: String,
    pending_rounds: u64,
}

fn settings(text: &str) -> Result<Settings, Error> {
    let value: Value = serde_json::from_str(if text.trim().is_empty() { "{}" } else { text })
        .map_err(|e| Error::InvalidInput(format!("spec.config is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::InvalidInput("spec.config must be a JSON object".into()));
    };
    let mut s = Settings {
        image_registry: "docker.io".into(),
        pending_rounds: 1,
    };
    for (key, v) in &map {
        match (key.as_str(), v) {
            ("imageRegistry", Value::String(r)) if !r.is_empty() => s.image_registry = r.clone(),
            ("pendingRounds", Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 100) => {
                s.pending_rounds = n.as_u64().unwrap_or(1)
            }
            ("imageRegistry", _) => {
                return Err(Error::InvalidInput(
                    "spec.config.imageRegistry must be a non-empty string".into(),
                ))
            }
            ("pendingRounds", _) => {
                return Err(Error::InvalidInput(
                    "spec.config.pendingRounds must be a whole number from 0 to 100".into(),
                ))
            }
            (other, _) => {
                return Err(Error::InvalidInput(format!(
                    "spec.config.{other} is not a setting of the docker plugin (known: imageRegistry, pendingRounds)"
                )))
            }
        }
    }
    Ok(s)
}

fn progress_key(tag: &str, image: &str) -> String {
    format!("pull/{tag}/{image}")
}

fn ready_key(tag: &str) -> String {
    format!("ready/{tag}")
}

struct Docker;

impl Guest for Docker {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "docker".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            provider: "docker".to_string(),
            capabilities: vec![Capability::Log, Capability::State],
        }
    }

    fn validate_config(config: String) -> Result<(), Error> {
        settings(&config).map(drop)
    }

    fn reconcile_node_images(
        release: ReleaseInfo,
        images: Vec<NodeImage>,
    ) -> Result<Vec<ImageStatus>, Error> {
        let s = settings(&config::get())?;
        let mut ready = Vec::new();
        let mut out = Vec::new();
        for image in images {
            let key = progress_key(&release.tag, &image.name);
            let rounds: u64 = state::get(&key).and_then(|v| v.parse().ok()).unwrap_or(0);
            let state_ = if rounds < s.pending_rounds {
                state::set(&key, &(rounds + 1).to_string())
                    .map_err(|e| Error::Failed(format!("cannot record progress: {e:?}")))?;
                ImageState::Pending(Retry {
                    retry_after_seconds: 1,
                    message: format!("pulling {} ({}/{})", image.name, rounds + 1, s.pending_rounds),
                })
            } else {
                let id = format!("{}/{}", s.image_registry, image.name);
                ready.push(id.clone());
                ImageState::Ready(id)
            };
            out.push(ImageStatus {
                name: image.name,
                state: state_,
            });
        }
        if ready.len() == out.len() {
            state::set(&ready_key(&release.tag), &ready.join(","))
                .map_err(|e| Error::Failed(format!("cannot record ready images: {e:?}")))?;
            log::log(
                log::Level::Info,
                "node images ready",
                &[
                    ("release".into(), release.tag.clone()),
                    ("images".into(), ready.join(",")),
                ],
            );
        }
        Ok(out)
    }

    fn cleanup_node_images(release: ReleaseInfo, images: Vec<NodeImage>) -> Result<(), Error> {
        for image in images {
            state::delete(&progress_key(&release.tag, &image.name));
        }
        state::delete(&ready_key(&release.tag));
        Ok(())
    }

    fn patch_cluster_class(release: ReleaseInfo, objects: Vec<String>) -> Result<Vec<String>, Error> {
        let images = state::get(&ready_key(&release.tag)).unwrap_or_default();
        let mut out = Vec::with_capacity(objects.len());
        for (i, text) in objects.into_iter().enumerate() {
            let mut object: Value = serde_json::from_str(&text)
                .map_err(|e| Error::InvalidInput(format!("object {i} is not JSON: {e}")))?;
            if object.get("kind").and_then(Value::as_str) != Some("ClusterClass") {
                out.push(text);
                continue;
            }
            let metadata = object
                .as_object_mut()
                .and_then(|o| o.get_mut("metadata"))
                .and_then(Value::as_object_mut)
                .ok_or_else(|| Error::InvalidInput(format!("object {i}: ClusterClass without metadata")))?;
            let annotations = metadata
                .entry("annotations")
                .or_insert_with(|| Value::Object(Map::new()));
            let Some(annotations) = annotations.as_object_mut() else {
                return Err(Error::InvalidInput(format!(
                    "object {i}: metadata.annotations is not a mapping"
                )));
            };
            annotations.insert(
                PATCHED_BY.into(),
                Value::String(format!("docker-plugin {}", env!("CARGO_PKG_VERSION"))),
            );
            annotations.insert(NODE_IMAGES.into(), Value::String(images.clone()));
            out.push(object.to_string());
        }
        Ok(out)
    }

    fn addon_values(_cluster: ClusterInfo, values: String) -> Result<String, Error> {
        let s = settings(&config::get())?;
        let mut values: Value = serde_json::from_str(&values)
            .map_err(|e| Error::InvalidInput(format!("the addon values are not JSON: {e}")))?;
        let Some(map) = values.as_object_mut() else {
            return Err(Error::InvalidInput("the addon values must be a map".into()));
        };
        let global = map.entry("global").or_insert_with(|| Value::Object(Map::new()));
        let Some(global) = global.as_object_mut() else {
            return Err(Error::InvalidInput(
                "the addon value `global` must be a map (the docker plugin sets global.imageRegistry)".into(),
            ));
        };
        // A registry the release's values template chose stays.
        if !global.contains_key("imageRegistry") {
            global.insert("imageRegistry".into(), Value::String(s.image_registry));
        }
        Ok(values.to_string())
    }
}

export!(Docker);
