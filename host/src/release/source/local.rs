//! A local directory of releases, one subdirectory per tag (`<root>/<tag>/metadata.yaml`, ...): upstream's
//! local mode (`<release-dir>/cluster-stacks/<tag>/`), and the sandbox's bundled sample releases.

use std::path::{Path, PathBuf};

use super::{BoxFuture, ReleaseSource};
use crate::release::error::ReleaseError;

/// Releases in subdirectories of `root`.
#[derive(Debug, Clone)]
pub struct LocalDirSource {
    root: PathBuf,
}

impl LocalDirSource {
    /// A source reading `<root>/<tag>/`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn list_sync(&self) -> Result<Vec<String>, ReleaseError> {
        let rd =
            std::fs::read_dir(&self.root).map_err(ReleaseError::io("cannot list releases in", &self.root))?;
        let mut tags = Vec::new();
        for entry in rd {
            let entry = entry.map_err(ReleaseError::io("cannot list releases in", &self.root))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().join("metadata.yaml").is_file() {
                tags.push(name);
            }
        }
        tags.sort();
        Ok(tags)
    }

    fn download_sync(&self, tag: &str, dest: &Path) -> Result<(), ReleaseError> {
        // A tag is one path segment; refuse anything that could leave the root.
        let from = self.root.join(tag);
        if tag.is_empty() || tag.contains(['/', '\\']) || tag.starts_with('.') || !from.is_dir() {
            return Err(ReleaseError::NotFound {
                tag: tag.to_owned(),
                source_name: self.describe(),
            });
        }
        let rd = std::fs::read_dir(&from).map_err(ReleaseError::io("cannot read", &from))?;
        for entry in rd {
            let entry = entry.map_err(ReleaseError::io("cannot read", &from))?;
            let path = entry.path();
            // Releases are flat sets of files (§3.2); subdirectories are not part of a release.
            if path.is_file() {
                let to = dest.join(entry.file_name());
                std::fs::copy(&path, &to).map_err(ReleaseError::io("cannot copy", &path))?;
            }
        }
        Ok(())
    }
}

impl ReleaseSource for LocalDirSource {
    fn describe(&self) -> String {
        format!("local directory {}", self.root.display())
    }

    fn list_releases(&self) -> BoxFuture<'_, Result<Vec<String>, ReleaseError>> {
        Box::pin(async move { self.list_sync() })
    }

    fn download<'a>(&'a self, tag: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), ReleaseError>> {
        Box::pin(async move { self.download_sync(tag, dest) })
    }
}
