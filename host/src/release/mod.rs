//! Cluster stack releases: names and versions, `metadata.yaml`, the asset set of a release,
//! release sources, the on-disk cache, and building a release from stack sources as csctl does.

pub mod assets;
pub mod build;
pub mod cache;
pub mod chart;
pub mod download;
pub mod error;
pub mod metadata;
pub mod name;
pub mod node_images;
pub mod plan;
pub mod select;
pub mod source;
pub mod version;

pub use assets::{AddonLayout, ClusterAddonConfig, ReleaseAssets};
pub use cache::ReleaseCache;
pub use download::{Download, Downloads};
pub use error::ReleaseError;
pub use metadata::{Metadata, MetadataError};
pub use name::{tag_from_class, NameError, ReleaseName};
pub use node_images::{orc_node_images, parse_node_images, ORC_IMAGE_PROPERTY};
pub use plan::{plan_releases, ExistingRelease, ReleasePlan};
pub use select::{latest_release, Latest, StackKey};
pub use source::{GitHubConfig, GitHubSource, LocalDirSource, ReleaseSource};
pub use version::{KubernetesVersion, Version, VersionError};

#[cfg(test)]
mod source_tests;
#[cfg(test)]
mod tests;
