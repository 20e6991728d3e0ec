//! The plugin's configuration: the ProviderPlugin's `spec.config` (JSON).
//!
//! ```json
//! {
//!   "secret": "openstack",
//!   "cloudName": "openstack",
//!   "region": "RegionOne",
//!   "interface": "public",
//!   "import": {"method": "auto", "timeoutSeconds": 0, "pollSeconds": 30},
//!   "patch": {"mode": "machine-templates", "field": "id", "variables": {"workerImage": "ubuntu-capi-image-v1.30.9"}},
//!   "cleanup": {"enabled": false},
//!   "addons": {"ccm": "openstack-cloud-controller-manager", "csi": "openstack-cinder-csi"},
//!   "orc": "none"
//! }
//! ```
//! Every field is optional; unknown fields are refused so a typo is not silently ignored.

use serde::Deserialize;

use crate::clusterstack::provider::types::Error;

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Name of the Secret with `clouds.yaml`, `cloudName` (optional) and `cacert` (optional); the
    /// plugin reads the keys `<secret>/clouds.yaml`, `<secret>/cloudName`, `<secret>/cacert`.
    pub secret: String,
    /// The cloud in `clouds.yaml`; overrides the Secret's `cloudName` key (default `openstack`).
    pub cloud_name: Option<String>,
    /// Region of the image endpoint; overrides the cloud's `region_name`.
    pub region: Option<String>,
    /// Endpoint interface (`public`, `internal`, `admin`); overrides the cloud's `interface`.
    pub interface: Option<String>,
    pub import: Import,
    pub patch: Patch,
    pub cleanup: Cleanup,
    pub addons: Addons,
    /// Who imports the images of ORC `Image` objects the cluster-class chart renders.
    pub orc: OrcMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrcMode {
    /// No ORC controller runs: the plugin imports the image, points the machine templates at it
    /// and leaves the `Image` objects out of what is applied.
    #[default]
    None,
    /// ORC is installed: `Image` objects are applied as rendered and ORC imports them.
    External,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secret: "openstack".to_string(),
            cloud_name: None,
            region: None,
            interface: None,
            import: Import::default(),
            patch: Patch::default(),
            cleanup: Cleanup::default(),
            addons: Addons::default(),
            orc: OrcMode::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportMethod {
    /// web-download when Glance offers it, otherwise glance-direct.
    Auto,
    WebDownload,
    GlanceDirect,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Import {
    pub method: ImportMethod,
    /// An import that is not active this many seconds after it started fails (0: wait forever,
    /// as upstream's default `--image-import-timeout`).
    pub timeout_seconds: u64,
    /// Retry hint while an image is queued or importing (upstream polls every 30 s).
    pub poll_seconds: u32,
}

impl Default for Import {
    fn default() -> Self {
        Import {
            method: ImportMethod::Auto,
            timeout_seconds: 0,
            poll_seconds: 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PatchMode {
    /// Leave the ClusterClass as rendered (upstream: images are referenced by name only).
    None,
    /// `OpenStackMachineTemplate`s whose `image.filter.name` names a node image.
    MachineTemplates,
    /// Defaults of the ClusterClass variables listed in `variables`.
    Variables,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImageField {
    /// The Glance image id.
    Id,
    /// The image name (as created).
    Name,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Patch {
    pub mode: PatchMode,
    pub field: ImageField,
    /// ClusterClass variable name -> node image name, for mode `variables`.
    pub variables: std::collections::BTreeMap<String, String>,
}

impl Default for Patch {
    fn default() -> Self {
        Patch {
            mode: PatchMode::MachineTemplates,
            field: ImageField::Id,
            variables: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Cleanup {
    /// Delete images this plugin created once no release references them (upstream never does).
    pub enabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Addons {
    /// Values key of the OpenStack cloud controller manager chart ("" to leave it alone).
    pub ccm: String,
    /// Values key of the Cinder CSI chart ("" to leave it alone).
    pub csi: String,
    /// Name of the Secret the charts create with `cloud.conf`.
    pub secret_name: String,
}

impl Default for Addons {
    fn default() -> Self {
        Addons {
            ccm: "openstack-cloud-controller-manager".to_string(),
            csi: "openstack-cinder-csi".to_string(),
            secret_name: "cloud-config".to_string(),
        }
    }
}

impl Config {
    /// Parses and checks a configuration; errors name the field.
    pub fn parse(text: &str) -> Result<Config, Error> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        let config: Config =
            serde_json::from_str(text).map_err(|e| Error::InvalidInput(format!("spec.config: {e}")))?;
        if config.secret.trim().is_empty() || config.secret.contains('/') {
            return Err(Error::InvalidInput(format!(
                "spec.config.secret: {:?} is not a Secret name",
                config.secret
            )));
        }
        if config.import.poll_seconds == 0 {
            return Err(Error::InvalidInput(
                "spec.config.import.pollSeconds: must be at least 1".to_string(),
            ));
        }
        if let Some(interface) = &config.interface {
            if !matches!(interface.as_str(), "public" | "internal" | "admin") {
                return Err(Error::InvalidInput(format!(
                    "spec.config.interface: {interface:?} is not one of public, internal, admin"
                )));
            }
        }
        if config.patch.mode == PatchMode::Variables && config.patch.variables.is_empty() {
            return Err(Error::InvalidInput(
                "spec.config.patch.variables: mode `variables` needs at least one \
                 `<variable>: <node image name>` entry"
                    .to_string(),
            ));
        }
        Ok(config)
    }

    /// The configuration the host hands this call.
    pub fn load() -> Result<Config, Error> {
        Config::parse(&crate::clusterstack::provider::config::get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_upstream() {
        let c = Config::parse("{}").unwrap();
        assert_eq!(c.secret, "openstack");
        assert_eq!(c.import.method, ImportMethod::Auto);
        assert_eq!(c.import.timeout_seconds, 0);
        assert_eq!(c.import.poll_seconds, 30);
        assert!(!c.cleanup.enabled);
    }

    #[test]
    fn typos_and_bad_values_name_the_field() {
        let Err(Error::InvalidInput(e)) = Config::parse(r#"{"import": {"timeout": 3}}"#) else {
            panic!()
        };
        assert!(e.contains("timeout"), "{e}");
        let Err(Error::InvalidInput(e)) = Config::parse(r#"{"import": {"method": "ftp"}}"#) else {
            panic!()
        };
        assert!(e.contains("ftp"), "{e}");
        let Err(Error::InvalidInput(e)) = Config::parse(r#"{"patch": {"mode": "variables"}}"#) else {
            panic!()
        };
        assert!(e.contains("patch.variables"), "{e}");
    }
}
