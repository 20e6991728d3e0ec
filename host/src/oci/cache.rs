//! Content-addressed blob cache on disk: `<root>/blobs/sha256/<hex>`.
//!
//! - Entries are written to `<root>/tmp/` and renamed into place only after the download was
//!   verified and synced, so a crash never leaves a half-written entry under its digest.
//! - Every read re-hashes the file; a corrupt or truncated entry is removed and fetched again.
//! - Concurrent requests for one digest in this process share a single download.
//!   (Across processes, two downloads may race; both rename verified files, so either wins.)

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::digest;
use super::error::{OciError, Result};

/// The on-disk cache.
#[derive(Debug)]
pub struct BlobCache {
    root: PathBuf,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    counter: AtomicU64,
}

/// Where a cached blob came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Read from disk and verified.
    Hit,
    /// Downloaded now.
    Fetched,
    /// The cached file was corrupt or partial; it was removed and downloaded again.
    Refetched,
}

impl BlobCache {
    /// Open (and create) a cache rooted at `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&dir).map_err(|e| OciError::io("creating cache directory", &dir, e))?;
        }
        Ok(BlobCache {
            root,
            inflight: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
        })
    }

    /// The default location: `$STACKHOST_CACHE_DIR`, else `$XDG_CACHE_HOME/stackhost/oci`,
    /// else `~/.cache/stackhost/oci`.
    pub fn default_root() -> PathBuf {
        if let Some(dir) = std::env::var_os("STACKHOST_CACHE_DIR") {
            return PathBuf::from(dir).join("oci");
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("stackhost").join("oci")
    }

    /// The cache root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the entry for `digest` (whether or not it exists).
    pub fn path_of(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest, digest)?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// Read and verify the entry for `digest`. `Ok(None)` if absent; a corrupt entry is
    /// removed and reported as absent (with a warning).
    pub async fn read(&self, digest: &str) -> Result<Option<Vec<u8>>> {
        Ok(match self.read_checked(digest).await? {
            Lookup::Valid(bytes) => Some(bytes),
            Lookup::Missing | Lookup::Corrupt => None,
        })
    }

    async fn read_checked(&self, digest: &str) -> Result<Lookup> {
        let path = self.path_of(digest)?;
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Lookup::Missing),
            Err(e) => return Err(OciError::io("reading cache entry", &path, e)),
        };
        if digest::sha256(&bytes) == digest {
            return Ok(Lookup::Valid(bytes));
        }
        tracing::warn!(path = %path.display(), digest, "cache entry is corrupt or partial; removing it");
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(OciError::io("removing corrupt cache entry", &path, e)),
        }
        Ok(Lookup::Corrupt)
    }

    /// A fresh temporary path inside the cache (same file system as the entries).
    fn temp_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(digest, digest)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        Ok(self
            .root
            .join("tmp")
            .join(format!("{hex}.{}.{n}.part", std::process::id())))
    }

    fn lock_for(&self, digest: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = match self.inflight.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(digest.to_string()).or_default().clone()
    }

    /// Store `bytes` under their digest atomically; returns the digest.
    pub async fn insert(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest::sha256(bytes);
        let tmp = self.temp_path(&digest)?;
        tokio::fs::write(&tmp, bytes)
            .await
            .map_err(|e| OciError::io("writing cache entry", &tmp, e))?;
        self.commit(&tmp, &digest).await?;
        Ok(digest)
    }

    async fn commit(&self, tmp: &Path, digest: &str) -> Result<()> {
        let file = tokio::fs::File::open(tmp)
            .await
            .map_err(|e| OciError::io("opening downloaded file", tmp, e))?;
        file.sync_all()
            .await
            .map_err(|e| OciError::io("syncing downloaded file", tmp, e))?;
        let dest = self.path_of(digest)?;
        tokio::fs::rename(tmp, &dest)
            .await
            .map_err(|e| OciError::io("moving download into the cache", &dest, e))
    }

    /// The verified bytes of `digest`, from disk or by running `fetch` once: `fetch` writes the
    /// blob to the temporary path it is given and must verify it (as the registry client does).
    /// Concurrent callers for the same digest wait for one `fetch`.
    pub async fn get_or_fetch<F, Fut>(&self, digest: &str, fetch: F) -> Result<(Vec<u8>, CacheOutcome)>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let lock = self.lock_for(digest);
        let _guard = lock.lock().await;
        let was_corrupt = match self.read_checked(digest).await? {
            Lookup::Valid(bytes) => return Ok((bytes, CacheOutcome::Hit)),
            Lookup::Missing => false,
            Lookup::Corrupt => true,
        };
        let tmp = self.temp_path(digest)?;
        let result = fetch(tmp.clone()).await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        let bytes = tokio::fs::read(&tmp)
            .await
            .map_err(|e| OciError::io("reading downloaded file", &tmp, e))?;
        // Belt and braces: never commit anything that does not hash to its name.
        if digest::sha256(&bytes) != digest {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(OciError::DigestMismatch {
                reference: tmp.display().to_string(),
                what: "downloaded blob".into(),
                expected: digest.to_string(),
                actual: digest::sha256(&bytes),
            });
        }
        self.commit(&tmp, digest).await?;
        let outcome = if was_corrupt {
            CacheOutcome::Refetched
        } else {
            CacheOutcome::Fetched
        };
        Ok((bytes, outcome))
    }
}

enum Lookup {
    Valid(Vec<u8>),
    Missing,
    Corrupt,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn tmpdir() -> tempfile::TempDir {
        tempfile::tempdir().expect("temp dir")
    }

    #[tokio::test]
    async fn corrupt_and_partial_entries_are_detected_and_fetched_again() -> Result<()> {
        let dir = tmpdir();
        let cache = BlobCache::open(dir.path())?;
        let blob = b"component bytes".to_vec();
        let digest = cache.insert(&blob).await?;
        assert_eq!(cache.read(&digest).await?, Some(blob.clone()));

        // A partial write (as after a crash of some other writer) is not served.
        let path = cache.path_of(&digest)?;
        std::fs::write(&path, &blob[..5]).map_err(|e| OciError::io("t", &path, e))?;
        let fetches = AtomicUsize::new(0);
        let (bytes, outcome) = cache
            .get_or_fetch(&digest, |tmp| {
                fetches.fetch_add(1, Ordering::SeqCst);
                let blob = blob.clone();
                async move {
                    tokio::fs::write(&tmp, blob)
                        .await
                        .map_err(|e| OciError::io("t", tmp, e))
                }
            })
            .await?;
        assert_eq!(bytes, blob);
        assert_eq!(outcome, CacheOutcome::Refetched);
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        // Now it is a hit.
        let (_, outcome) = cache
            .get_or_fetch(&digest, |_| async { panic!("must not fetch a valid entry") })
            .await?;
        assert_eq!(outcome, CacheOutcome::Hit);
        Ok(())
    }

    #[tokio::test]
    async fn a_fetch_that_writes_wrong_bytes_is_never_committed() -> Result<()> {
        let dir = tmpdir();
        let cache = BlobCache::open(dir.path())?;
        let digest = digest::sha256(b"right");
        let err = cache
            .get_or_fetch(&digest, |tmp| async move {
                tokio::fs::write(&tmp, b"wrong")
                    .await
                    .map_err(|e| OciError::io("t", tmp, e))
            })
            .await
            .expect_err("should fail");
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
        assert_eq!(cache.read(&digest).await?, None);
        let leftovers =
            std::fs::read_dir(dir.path().join("tmp")).map_err(|e| OciError::io("t", dir.path(), e))?;
        assert_eq!(leftovers.count(), 0, "temporary files are cleaned up");
        Ok(())
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_fetch() -> Result<()> {
        let dir = tmpdir();
        let cache = Arc::new(BlobCache::open(dir.path())?);
        let blob = vec![7u8; 100_000];
        let digest = digest::sha256(&blob);
        let fetches = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (cache, blob, digest, fetches) =
                (cache.clone(), blob.clone(), digest.clone(), fetches.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .get_or_fetch(&digest, |tmp| async move {
                        fetches.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        tokio::fs::write(&tmp, blob)
                            .await
                            .map_err(|e| OciError::io("t", tmp, e))
                    })
                    .await
            }));
        }
        for t in tasks {
            let (bytes, _) = t.await.map_err(|e| OciError::Registry {
                reference: "t".into(),
                message: e.to_string(),
            })??;
            assert_eq!(bytes.len(), 100_000);
        }
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        Ok(())
    }
}
