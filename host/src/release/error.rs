//! Errors of the release layer: names, metadata, assets, sources and the cache.

use std::path::PathBuf;

use super::metadata::MetadataError;
use super::name::NameError;

/// Why a release could not be listed, fetched or validated. Messages name the release, file or field.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// The release tag is not a valid release name.
    #[error(transparent)]
    Name(#[from] NameError),
    /// `metadata.yaml` is missing, unreadable or invalid.
    #[error("release {tag}: {source}")]
    Metadata {
        /// Release tag.
        tag: String,
        /// What is wrong.
        source: MetadataError,
    },
    /// A required file of the release is absent.
    #[error("release {tag}: {file} is missing ({hint})")]
    MissingFile {
        /// Release tag.
        tag: String,
        /// The expected file name.
        file: String,
        /// What is there instead, or what to do.
        hint: String,
    },
    /// The release contradicts its own name.
    #[error("release {tag}: {message}")]
    Inconsistent {
        /// Release tag.
        tag: String,
        /// What does not match.
        message: String,
    },
    /// A chart archive is unreadable or not a Helm chart.
    #[error("release {tag}: chart {file} is not a valid Helm chart archive: {reason}")]
    Chart {
        /// Release tag.
        tag: String,
        /// Archive file name.
        file: String,
        /// Why.
        reason: String,
    },
    /// `clusteraddon.yaml` or `node-images.yaml` is invalid.
    #[error("release {tag}: {file} is invalid: {reason}")]
    Config {
        /// Release tag.
        tag: String,
        /// File name.
        file: &'static str,
        /// Why.
        reason: String,
    },
    /// File system error on a path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The source does not have the release.
    #[error("release {tag} not found in {source_name}")]
    NotFound {
        /// Release tag.
        tag: String,
        /// The source, e.g. `local directory /x` or `GitHub SovereignCloudStack/cluster-stacks`.
        source_name: String,
    },
    /// The download did not finish within its deadline.
    #[error(
        "release {tag}: the download from {source_name} did not finish within {}s \
         (--release-download-timeout); it is retried with backoff",
        after.as_secs_f64()
    )]
    TimedOut {
        /// Release tag.
        tag: String,
        /// The source.
        source_name: String,
        /// The deadline.
        after: std::time::Duration,
    },
    /// The source served content that does not match its digest or declared size (tampered with or
    /// corrupt, at the source or a mirror); nothing of it was used.
    #[error("{source_name}: {message}")]
    Integrity {
        /// The source.
        source_name: String,
        /// What did not match.
        message: String,
    },
    /// The source failed (network, HTTP status, authentication).
    #[error("{source_name}: {message}")]
    Source {
        /// The source.
        source_name: String,
        /// What failed.
        message: String,
    },
}

impl ReleaseError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { action, path, source }
    }
}
