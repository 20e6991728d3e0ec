//! Errors of the ClusterAddon controller. Most failures a user can fix become conditions on the
//! ClusterAddon (with the object and field to look at) and a requeue; these are what is left: API
//! failures against the management cluster, and the texts of the conditions.

use std::path::PathBuf;

/// A failed ClusterAddon reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The management cluster's API failed.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done, with the object.
        action: String,
        /// kube's error.
        #[source]
        source: kube::Error,
    },
    /// The finalizer helper failed (adding or removing the finalizer, or the reconcile inside it).
    #[error("finalizer of ClusterAddon {object}: {message}")]
    Finalizer {
        /// `namespace/name`.
        object: String,
        /// What failed.
        message: String,
    },
    /// The object has no namespace (a ClusterAddon is namespaced; seen only with broken input).
    #[error("ClusterAddon {0} has no namespace")]
    NoNamespace(String),
    /// A scratch directory could not be prepared.
    #[error("cannot prepare {}: {reason}", path.display())]
    WorkDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// A kube error with what was being done.
    pub fn kube(action: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let action = action.into();
        move |source| Self::Kube { action, source }
    }
}

/// Why the values of an addon chart could not be built (becomes `HelmChartTemplated=False`).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValuesError {
    /// The template file could not be read.
    #[error("cannot read {file} of release {release}: {reason}")]
    Read {
        /// File name within the release (`cluster-addon-values.yaml`, `<stage>/overwrite.yaml`).
        file: String,
        /// Release tag.
        release: String,
        /// Why.
        reason: String,
    },
    /// An object the template refers to (`.ControlPlane`, `.InfraCluster`) could not be read.
    #[error("cannot read {what} {object} of the Cluster for {file}: {reason}")]
    Lookup {
        /// `ControlPlane` or `InfraCluster`.
        what: &'static str,
        /// `Kind namespace/name`.
        object: String,
        /// File being templated.
        file: String,
        /// Why.
        reason: String,
    },
    /// Helm rejected the template (syntax, unknown function, failed `required`).
    #[error("{file} of release {release} is not a valid template: {reason}")]
    Template {
        /// File name.
        file: String,
        /// Release tag.
        release: String,
        /// Helm's message, with the line in the file.
        reason: String,
    },
    /// The template rendered something that is not a map of values (upstream panicked, quirk 16).
    #[error("{file} of release {release} rendered {found}; expected a YAML map of values, optionally inside a `values: |` block")]
    NotAMap {
        /// File name.
        file: String,
        /// Release tag.
        release: String,
        /// What it rendered (`nothing`, `a list`, `invalid YAML: …`).
        found: String,
    },
    /// The provider plugin's `addon-values` step failed or returned something unusable.
    #[error("provider plugin step addon-values for {provider} failed on {chart}: {reason}")]
    Plugin {
        /// Provider name.
        provider: String,
        /// Chart or stage.
        chart: String,
        /// Why.
        reason: String,
    },
}
