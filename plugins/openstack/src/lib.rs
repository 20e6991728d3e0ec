//! `openstack`: the OpenStack provider plugin.
//!
//! Does what the upstream Cluster Stack Provider OpenStack operator does, as a sandboxed component:
//! credentials from a granted Secret holding `clouds.yaml` (+ `cloudName`, optional `cacert`),
//! Keystone v3 password or application-credential auth with the token kept in `state` until it
//! expires, the image endpoint from the catalog of the configured region, and node images created
//! and imported in Glance (web-download, or glance-direct upload where web-download is disabled).
//! All HTTP goes through the host's `http` capability, so only the granted hosts are reachable.

wit_bindgen::generate!({
    path: "../../wit",
    world: "provider",
});

mod addons;
mod cloud;
mod config;
mod glance;
mod images;
mod net;
mod orc;
mod patch;
mod store;
mod time;

use clusterstack::provider::types::{
    Capability, ClusterInfo, Error, ImageStatus, NodeImage, PluginInfo, ReleaseInfo,
};
use exports::clusterstack::provider::plugin::Guest;

struct OpenStack;

impl Guest for OpenStack {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "openstack".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            provider: "openstack".to_string(),
            capabilities: vec![
                Capability::Log,
                Capability::Http,
                Capability::Secrets,
                Capability::State,
            ],
        }
    }

    fn validate_config(config: String) -> Result<(), Error> {
        config::Config::parse(&config).map(drop)
    }

    fn reconcile_node_images(
        release: ReleaseInfo,
        images: Vec<NodeImage>,
    ) -> Result<Vec<ImageStatus>, Error> {
        let config = config::Config::load()?;
        images::reconcile(&config, &release, &images)
    }

    fn cleanup_node_images(release: ReleaseInfo, images: Vec<NodeImage>) -> Result<(), Error> {
        let config = config::Config::load()?;
        images::cleanup(&config, &release, &images)
    }

    fn patch_cluster_class(release: ReleaseInfo, objects: Vec<String>) -> Result<Vec<String>, Error> {
        let config = config::Config::load()?;
        patch::patch(&config.patch, &release, objects)
    }

    fn addon_values(cluster: ClusterInfo, values: String) -> Result<String, Error> {
        let config = config::Config::load()?;
        addons::values(&config, &cluster, &values)
    }
}

export!(OpenStack);

/// Writes one event into the host's log.
fn log(level: clusterstack::provider::log::Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    clusterstack::provider::log::log(level, message, &fields);
}
