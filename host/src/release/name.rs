//! Release names: the release tag (dash form) and the ClusterClass name (dot form) of a cluster stack
//! release, e.g. `docker-ferrol-1-27-v0-sha-hipstsw` and `docker-ferrol-1-27-v0-sha.hipstsw`
//! (cso-behaviour.md §3.1).
//!
//! Names are always compared parsed, never as strings: upstream compared dot-form class names with
//! dash-form release names in several places (§9.4), which made hash releases look unused.

use std::fmt;

use super::version::{KubernetesVersion, Version, VersionError};

/// A name that is not `<provider>-<name>-<k8sMajor>-<k8sMinor>-<version>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Wrong number of `-` separated parts.
    #[error(
        "invalid release name {name:?}: expected <provider>-<name>-<k8sMajor>-<k8sMinor>-<version> ({form} form), e.g. {example}"
    )]
    Format {
        /// The rejected name.
        name: String,
        /// `dash` or `dot`.
        form: &'static str,
        /// An example of the expected form.
        example: &'static str,
    },
    /// Provider empty or not lowercase alphanumeric.
    #[error("invalid provider {0:?}: use lowercase letters and digits only (it is the first segment of release names)")]
    Provider(String),
    /// Name empty or not lowercase alphanumeric.
    #[error("invalid cluster stack name {0:?}: use lowercase letters and digits only (it is the second segment of release names)")]
    Name(String),
    /// The version or Kubernetes part.
    #[error("invalid release name {name:?}: {source}")]
    Version {
        /// The rejected name.
        name: String,
        /// What is wrong with the version part.
        source: VersionError,
    },
}

/// One release of a cluster stack: provider, stack name, Kubernetes minor and version.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseName {
    /// Provider, e.g. `docker`.
    pub provider: String,
    /// Cluster stack name, e.g. `ferrol`.
    pub name: String,
    /// Kubernetes `<major>.<minor>`.
    pub kubernetes: KubernetesVersion,
    /// Cluster stack version.
    pub version: Version,
}

fn check_segment(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

impl ReleaseName {
    /// From ClusterStack fields: provider, name, `1.27`, and a dot-form version (`v1-alpha.1`).
    pub fn new(provider: &str, name: &str, kubernetes: &str, version: &str) -> Result<Self, NameError> {
        Self::checked(provider, name)?;
        let wrap = |source| NameError::Version {
            name: format!("{provider}-{name}-{kubernetes}-{version}"),
            source,
        };
        Ok(Self {
            provider: provider.to_owned(),
            name: name.to_owned(),
            kubernetes: KubernetesVersion::parse_dot(kubernetes).map_err(wrap)?,
            version: Version::parse_dot(version).map_err(wrap)?,
        })
    }

    fn checked(provider: &str, name: &str) -> Result<(), NameError> {
        if !check_segment(provider) {
            return Err(NameError::Provider(provider.to_owned()));
        }
        if !check_segment(name) {
            return Err(NameError::Name(name.to_owned()));
        }
        Ok(())
    }

    /// Parses a release tag / ClusterStackRelease name (dash form), e.g. `docker-ferrol-1-27-v1-alpha-0`.
    pub fn parse_tag(tag: &str) -> Result<Self, NameError> {
        let parts: Vec<&str> = tag.split('-').collect();
        let version = match parts.len() {
            5 => parts[4].to_owned(),
            7 => parts[4..7].join("-"),
            _ => {
                return Err(NameError::Format {
                    name: tag.to_owned(),
                    form: "dash",
                    example: "docker-ferrol-1-27-v1 or docker-ferrol-1-27-v0-sha-hipstsw",
                })
            }
        };
        Self::checked(parts[0], parts[1])?;
        let wrap = |source| NameError::Version {
            name: tag.to_owned(),
            source,
        };
        Ok(Self {
            provider: parts[0].to_owned(),
            name: parts[1].to_owned(),
            kubernetes: KubernetesVersion::from_parts(parts[2], parts[3]).map_err(wrap)?,
            version: Version::parse_dash(&version).map_err(wrap)?,
        })
    }

    /// Parses a ClusterClass name / `cluster.spec.topology.class` (dot form), e.g. `docker-ferrol-1-27-v0-sha.hipstsw`.
    pub fn parse_class(class: &str) -> Result<Self, NameError> {
        let parts: Vec<&str> = class.split('-').collect();
        let version = match parts.len() {
            5 => parts[4].to_owned(),
            6 => parts[4..6].join("-"),
            _ => {
                return Err(NameError::Format {
                    name: class.to_owned(),
                    form: "dot",
                    example: "docker-ferrol-1-27-v1 or docker-ferrol-1-27-v0-sha.hipstsw",
                })
            }
        };
        Self::checked(parts[0], parts[1])?;
        let wrap = |source| NameError::Version {
            name: class.to_owned(),
            source,
        };
        Ok(Self {
            provider: parts[0].to_owned(),
            name: parts[1].to_owned(),
            kubernetes: KubernetesVersion::from_parts(parts[2], parts[3]).map_err(wrap)?,
            version: Version::parse_dot(&version).map_err(wrap)?,
        })
    }

    /// The release tag (dash form): ClusterStackRelease name, OCI tag, GitHub release, cache directory.
    pub fn tag(&self) -> String {
        format!("{}-{}", self.stack_prefix(), self.version.dash())
    }

    /// The ClusterClass name (dot form), as the chart convention `{{ .Release.Name }}-{{ .Chart.Version }}` yields.
    pub fn class_name(&self) -> String {
        format!("{}-{}", self.stack_prefix(), self.version.dot())
    }

    /// `<provider>-<name>-<major>-<minor>`: the Helm release name of the cluster-class chart (upstream: the
    /// first four dash segments of the release name) and the prefix of chart names.
    pub fn stack_prefix(&self) -> String {
        format!("{}-{}-{}", self.provider, self.name, self.kubernetes.dash())
    }

    /// Helm release name for the cluster-class chart (§2.2).
    pub fn helm_release_name(&self) -> String {
        self.stack_prefix()
    }

    /// File name of the cluster-class chart: `<prefix>-cluster-class-<version dot form>.tgz`.
    pub fn cluster_class_chart_file(&self) -> String {
        format!("{}-cluster-class-{}.tgz", self.stack_prefix(), self.version.dot())
    }

    /// File name of the cluster-addon chart for an addon version (from metadata): `<prefix>-cluster-addon-<v>.tgz`.
    pub fn cluster_addon_chart_file(&self, addon_version: &Version) -> String {
        format!(
            "{}-cluster-addon-{}.tgz",
            self.stack_prefix(),
            addon_version.dot()
        )
    }

    /// Whether `other` is a release of the same stack (provider, name, Kubernetes minor).
    pub fn same_stack(&self, other: &Self) -> bool {
        self.provider == other.provider && self.name == other.name && self.kubernetes == other.kubernetes
    }
}

impl fmt::Display for ReleaseName {
    /// The release tag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag())
    }
}

/// A ClusterClass name (dot form) to its release tag (dash form): upstream's
/// `ConvertFromClusterClassToClusterStackFormat`, but by parsing instead of replacing the only `.`.
pub fn tag_from_class(class: &str) -> Result<String, NameError> {
    ReleaseName::parse_class(class).map(|r| r.tag())
}
