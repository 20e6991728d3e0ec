//! `noop`: the smallest valid provider plugin, and the template for plugin authors.
//! Every export returns its input unchanged; node images are reported ready under their own name.

wit_bindgen::generate!({
    path: "../../wit",
    world: "provider",
});

use clusterstack::provider::types::{
    Capability, ClusterInfo, Error, ImageState, ImageStatus, NodeImage, PluginInfo, ReleaseInfo,
};
use exports::clusterstack::provider::plugin::Guest;

struct Noop;

impl Guest for Noop {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "noop".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            provider: "noop".to_string(),
            capabilities: vec![Capability::Log],
        }
    }

    fn validate_config(_config: String) -> Result<(), Error> {
        Ok(())
    }

    fn reconcile_node_images(
        _release: ReleaseInfo,
        images: Vec<NodeImage>,
    ) -> Result<Vec<ImageStatus>, Error> {
        Ok(images
            .into_iter()
            .map(|image| ImageStatus {
                state: ImageState::Ready(image.name.clone()),
                name: image.name,
            })
            .collect())
    }

    fn cleanup_node_images(_release: ReleaseInfo, _images: Vec<NodeImage>) -> Result<(), Error> {
        Ok(())
    }

    fn patch_cluster_class(_release: ReleaseInfo, objects: Vec<String>) -> Result<Vec<String>, Error> {
        Ok(objects)
    }

    fn addon_values(_cluster: ClusterInfo, values: String) -> Result<String, Error> {
        Ok(values)
    }
}

export!(Noop);
