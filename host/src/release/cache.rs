//! The on-disk release cache: `<root>/cluster-stacks/<source>/<tag>/`, downloaded once and validated
//! before it becomes visible. `<source>` is a hash of the source's id, because with per-ClusterStack
//! sources two sources may publish different releases under the same tag (upstream had one process-wide
//! source and keyed by tag only).
//!
//! A download goes to a temporary sibling directory and is renamed into place only after
//! [`ReleaseAssets::load`] accepted it, so a crash or a failed download never leaves a half-downloaded
//! release where readers look (upstream used the directory's existence as the only marker, §3.6).
//! Leftover temporary directories from a crash are removed when the cache is opened; a download stopped
//! half-way (its deadline passed, its release was deleted) removes its own at once.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::assets::ReleaseAssets;
use super::chart::ArchiveLimits;
use super::error::ReleaseError;
use super::name::ReleaseName;
use super::source::ReleaseSource;

const TMP_PREFIX: &str = ".partial-";

/// A download's temporary directory, removed when dropped.
struct Partial(PathBuf);

impl Drop for Partial {
    fn drop(&mut self) {
        // Best effort: a leftover is never read, and open() removes it.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A cache of validated releases under one root directory.
#[derive(Debug)]
pub struct ReleaseCache {
    dir: PathBuf,
    /// One lock per tag, so concurrent reconciles of one release download it once.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counter: AtomicU64,
    limits: ArchiveLimits,
}

impl ReleaseCache {
    /// Opens (creating) the cache at `<root>/cluster-stacks/` and removes leftovers of interrupted downloads.
    pub fn open(root: &Path) -> Result<Self, ReleaseError> {
        let dir = root.join("cluster-stacks");
        std::fs::create_dir_all(&dir).map_err(ReleaseError::io("cannot create release cache", &dir))?;
        let rd = std::fs::read_dir(&dir).map_err(ReleaseError::io("cannot read release cache", &dir))?;
        for source_dir in rd.flatten().filter(|e| e.path().is_dir()) {
            for entry in std::fs::read_dir(source_dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                // Only release directories and source.txt are published; a hidden entry is a leftover
                // of a download cut short: ours (`.partial-`), or an OCI pull's (`..partial-…`, `.old-`).
                if entry.file_name().to_string_lossy().starts_with('.') {
                    // Best effort: a leftover that cannot be removed is harmless, it is never read.
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        Ok(Self {
            dir,
            locks: Mutex::default(),
            counter: AtomicU64::new(0),
            limits: ArchiveLimits::default(),
        })
    }

    /// Validates releases (and later unpacks their addon archives) within `limits`.
    pub fn with_limits(mut self, limits: ArchiveLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Directory of one source's releases: `cluster-stacks/<first 16 hex digits of sha256(source id)>`.
    pub fn source_dir(&self, source: &dyn ReleaseSource) -> PathBuf {
        use sha2::Digest;
        let digest = hex::encode(sha2::Sha256::digest(source.id().as_bytes()));
        self.dir.join(&digest[..16])
    }

    /// Directory a release lives in once cached.
    pub fn path_of(&self, source: &dyn ReleaseSource, release: &ReleaseName) -> PathBuf {
        self.source_dir(source).join(release.tag())
    }

    /// The cached release, if it is there (validated again: files may have been edited by hand).
    pub fn get(
        &self,
        source: &dyn ReleaseSource,
        release: &ReleaseName,
    ) -> Result<Option<ReleaseAssets>, ReleaseError> {
        let path = self.path_of(source, release);
        if !path.is_dir() {
            return Ok(None);
        }
        ReleaseAssets::load_within(&path, &release.tag(), self.limits).map(Some)
    }

    fn lock_for(&self, tag: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(tag.to_owned()).or_default().clone()
    }

    /// The release from the cache, downloading it from `source` first if needed.
    pub async fn fetch(
        &self,
        source: &dyn ReleaseSource,
        release: &ReleaseName,
    ) -> Result<ReleaseAssets, ReleaseError> {
        let tag = release.tag();
        let source_dir = self.source_dir(source);
        let lock = self.lock_for(&source_dir.join(&tag).to_string_lossy());
        let _guard = lock.lock().await;
        if let Some(assets) = self.get(source, release)? {
            return Ok(assets);
        }
        std::fs::create_dir_all(&source_dir).map_err(ReleaseError::io("cannot create", &source_dir))?;
        // Say which source the hashed directory belongs to, for people looking at the cache.
        let _ = std::fs::write(source_dir.join("source.txt"), format!("{}\n", source.describe()));
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let tmp = source_dir.join(format!("{TMP_PREFIX}{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(ReleaseError::io("cannot create", &tmp))?;
        // Removed however this ends: failed, published (then it is gone already), or stopped half-way
        // because the future was dropped (a deadline, a deleted release). open() removes what a crash
        // leaves.
        let _partial = Partial(tmp.clone());
        self.download_into(source, release, &tmp).await
    }

    async fn download_into(
        &self,
        source: &dyn ReleaseSource,
        release: &ReleaseName,
        tmp: &Path,
    ) -> Result<ReleaseAssets, ReleaseError> {
        let tag = release.tag();
        source.download(&tag, tmp).await?;
        // Validate before publishing: an invalid release never appears in the cache.
        ReleaseAssets::load_within(tmp, &tag, self.limits)?;
        let final_path = self.path_of(source, release);
        match std::fs::rename(tmp, &final_path) {
            Ok(()) => {}
            // Another process published the same release first: keep theirs.
            Err(_) if final_path.is_dir() => {
                let _ = std::fs::remove_dir_all(tmp);
            }
            Err(e) => return Err(ReleaseError::io("cannot publish release into", final_path)(e)),
        }
        ReleaseAssets::load_within(&final_path, &tag, self.limits)
    }

    /// Removes a cached release (e.g. after its assets turned out to be broken).
    pub fn evict(&self, source: &dyn ReleaseSource, release: &ReleaseName) -> Result<(), ReleaseError> {
        let path = self.path_of(source, release);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ReleaseError::io("cannot remove", path)(e)),
        }
    }
}
