//! Release sources: where release tags are listed and release files are fetched from.
//!
//! Implemented here: a local directory ([`LocalDirSource`]) and GitHub releases ([`GitHubSource`]).
//! The OCI registry and OCI layout sources implement the same trait in the `oci` module.

mod github;
mod local;

pub use github::{GitHubConfig, GitHubSource};
pub use local::LocalDirSource;

use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use super::error::ReleaseError;

/// A boxed future, so sources can be chosen at run time (`dyn ReleaseSource`).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Somewhere releases live.
pub trait ReleaseSource: Send + Sync + std::fmt::Debug {
    /// Human-readable name for messages, e.g. `local directory /srv/releases`.
    fn describe(&self) -> String;

    /// Identity of the source for the cache: two sources with the same id serve the same releases.
    /// Defaults to [`ReleaseSource::describe`].
    fn id(&self) -> String {
        self.describe()
    }

    /// Where the source's bytes come from (a registry host, an API host): downloads from one origin
    /// share its download slots. Defaults to [`ReleaseSource::describe`].
    fn origin(&self) -> String {
        self.describe()
    }

    /// All release tags (or names) the source offers; callers parse and filter them.
    fn list_releases(&self) -> BoxFuture<'_, Result<Vec<String>, ReleaseError>>;

    /// Writes every file of release `tag` into the existing, empty directory `dest`.
    /// [`super::ReleaseCache`] validates the result and publishes it atomically.
    fn download<'a>(&'a self, tag: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), ReleaseError>>;
}
