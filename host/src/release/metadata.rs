//! `metadata.yaml` of a release (cso-behaviour.md §3.2.1): cluster stack, Kubernetes and component versions.
//!
//! Versions are normalised as upstream does. Fixed quirk §9.6: `components.nodeImage` is optional
//! (upstream failed on a missing one although its validation called it optional).

use serde::Deserialize;

use super::version::{KubernetesVersion, Version};

/// What is wrong with a `metadata.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// Not YAML, or fields of the wrong type.
    #[error("metadata.yaml is not valid: {0}")]
    Yaml(String),
    /// A required field is missing or empty.
    #[error("metadata.yaml: {0} is missing or empty")]
    Missing(&'static str),
    /// A version field does not parse.
    #[error("metadata.yaml: {field} {value:?} is invalid: {reason}")]
    Invalid {
        /// The field path, e.g. `versions.clusterStack`.
        field: &'static str,
        /// Its value.
        value: String,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMetadata {
    #[serde(default)]
    versions: Option<RawVersions>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawVersions {
    #[serde(default)]
    cluster_stack: Option<serde_yaml::Value>,
    #[serde(default)]
    kubernetes: Option<serde_yaml::Value>,
    #[serde(default)]
    components: Option<RawComponents>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawComponents {
    #[serde(default)]
    cluster_addon: Option<serde_yaml::Value>,
    #[serde(default)]
    node_image: Option<serde_yaml::Value>,
}

/// A validated `metadata.yaml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// `versions.clusterStack` (written in dot form).
    pub cluster_stack: Version,
    /// `versions.kubernetes` as written, e.g. `v1.27.3` (copied to the release status, used as `--kube-version`).
    pub kubernetes: String,
    /// `versions.kubernetes` parsed to `<major>.<minor>`.
    pub kubernetes_minor: KubernetesVersion,
    /// `versions.components.clusterAddon`.
    pub cluster_addon: Version,
    /// `versions.components.nodeImage`, when given.
    pub node_image: Option<Version>,
}

/// A scalar as text (YAML turns `1` into a number; the message should still show it), or empty.
fn scalar(v: Option<serde_yaml::Value>, field: &'static str) -> Result<String, MetadataError> {
    use serde_yaml::Value;
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.trim().to_owned()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        Some(Value::Bool(b)) => Ok(b.to_string()),
        Some(_) => Err(MetadataError::Invalid {
            field,
            value: "<not a string>".into(),
            reason: "must be a string".into(),
        }),
    }
}

fn non_empty(v: Option<serde_yaml::Value>, field: &'static str) -> Result<String, MetadataError> {
    let s = scalar(v, field)?;
    if s.is_empty() {
        return Err(MetadataError::Missing(field));
    }
    Ok(s)
}

fn version(v: Option<serde_yaml::Value>, field: &'static str) -> Result<Version, MetadataError> {
    let s = non_empty(v, field)?;
    // csctl writes the dot form; accept the dash form too, as upstream's normalisation did in effect.
    Version::parse_dot(&s)
        .or_else(|_| Version::parse_dash(&s))
        .map_err(|e| MetadataError::Invalid {
            field,
            value: s,
            reason: e.to_string(),
        })
}

impl Metadata {
    /// Parses and validates the text of a `metadata.yaml`.
    pub fn parse(text: &str) -> Result<Self, MetadataError> {
        let raw: RawMetadata = serde_yaml::from_str(text).map_err(|e| MetadataError::Yaml(e.to_string()))?;
        let versions = raw.versions.ok_or(MetadataError::Missing("versions"))?;
        let components = versions.components;
        let (addon, node) = match components {
            Some(c) => (c.cluster_addon, c.node_image),
            None => (None, None),
        };
        let cluster_stack = version(versions.cluster_stack, "versions.clusterStack")?;
        let kubernetes = non_empty(versions.kubernetes, "versions.kubernetes")?;
        let kubernetes_minor =
            KubernetesVersion::parse_full(&kubernetes).map_err(|e| MetadataError::Invalid {
                field: "versions.kubernetes",
                value: kubernetes.clone(),
                reason: format!("{e} (expected a full version like v1.27.3)"),
            })?;
        Ok(Self {
            cluster_stack,
            kubernetes,
            kubernetes_minor,
            cluster_addon: version(addon, "versions.components.clusterAddon")?,
            node_image: match scalar(node, "versions.components.nodeImage")? {
                s if s.is_empty() => None,
                s => Some(version(
                    Some(serde_yaml::Value::String(s)),
                    "versions.components.nodeImage",
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UPSTREAM: &str = "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1
versions:
  clusterStack: v3
  kubernetes: v1.27.3
  components:
    clusterAddon: v2
    nodeImage: v2
";

    #[test]
    fn parses_upstream_metadata() {
        let m = Metadata::parse(UPSTREAM).expect("valid");
        assert_eq!(m.cluster_stack, Version::stable(3));
        assert_eq!(m.kubernetes, "v1.27.3");
        assert_eq!(m.kubernetes_minor.dot(), "1.27");
        assert_eq!(m.cluster_addon.dash(), "v2");
        assert_eq!(m.node_image.map(|v| v.dot()), Some("v2".into()));
    }

    #[test]
    fn hash_versions_normalise_like_upstream() {
        let m = Metadata::parse(
            "versions: {clusterStack: v0-sha.hipstsw, kubernetes: v1.27.7, components: {clusterAddon: v0-sha.hipstsw}}",
        )
        .expect("valid");
        assert_eq!(m.cluster_stack.dash(), "v0-sha-hipstsw");
        assert_eq!(m.cluster_addon.dot(), "v0-sha.hipstsw");
        assert_eq!(m.node_image, None, "nodeImage is optional (upstream quirk fixed)");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("", "metadata.yaml: versions is missing or empty"),
            ("versions: {kubernetes: v1.27.3, components: {clusterAddon: v1}}", "metadata.yaml: versions.clusterStack is missing or empty"),
            ("versions: {clusterStack: v1, components: {clusterAddon: v1}}", "metadata.yaml: versions.kubernetes is missing or empty"),
            ("versions: {clusterStack: v1, kubernetes: v1.27.3}", "metadata.yaml: versions.components.clusterAddon is missing or empty"),
            ("versions: {clusterStack: '', kubernetes: v1.27.3, components: {clusterAddon: v1}}", "metadata.yaml: versions.clusterStack is missing or empty"),
            (
                "versions: {clusterStack: 1, kubernetes: v1.27.3, components: {clusterAddon: v1}}",
                "metadata.yaml: versions.clusterStack \"1\" is invalid: invalid version \"1\": expected vN or vN-<channel>-<patch> (dash form), e.g. v1, v1-alpha-1, v0-sha-hipstsw",
            ),
            (
                "versions: {clusterStack: v1, kubernetes: latest, components: {clusterAddon: v1}}",
                "metadata.yaml: versions.kubernetes \"latest\" is invalid: invalid Kubernetes version \"latest\": expected <major>.<minor> with numbers, e.g. 1.32 (expected a full version like v1.27.3)",
            ),
            (
                "versions: {clusterStack: v1, kubernetes: v1.27.3, components: {clusterAddon: v1, nodeImage: x}}",
                "metadata.yaml: versions.components.nodeImage \"x\" is invalid: invalid version \"x\": expected vN or vN-<channel>-<patch> (dash form), e.g. v1, v1-alpha-1, v0-sha-hipstsw",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Metadata::parse(text).expect_err(text).to_string(), want, "{text}");
        }
        assert!(Metadata::parse("versions: [1, 2]")
            .expect_err("list")
            .to_string()
            .starts_with("metadata.yaml is not valid: "));
    }
}
