//! The plugin artifact format: the CNCF Wasm OCI artifact layout (config
//! `application/vnd.wasm.config.v0+json` listing the component's imports and exports, one
//! `application/wasm` layer), plus reading the older `application/vnd.wasm.content.layer.v1+wasm`
//! layout. The world check runs on the config, before the layer is downloaded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::{OciError, Result};
use super::manifest::{Descriptor, Manifest};

/// Config media type of the CNCF Wasm artifact format.
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the CNCF Wasm artifact format.
pub const WASM_LAYER: &str = "application/wasm";
/// Config media type of the older wasm-to-oci layout.
pub const LEGACY_WASM_CONFIG: &str = "application/vnd.wasm.config.v1+json";
/// Layer media type of the older wasm-to-oci layout.
pub const LEGACY_WASM_LAYER: &str = "application/vnd.wasm.content.layer.v1+wasm";

/// The package of the plugin contract.
pub const PROVIDER_PACKAGE: &str = "clusterstack:provider";
/// The interfaces of the contract a plugin may import.
pub const PROVIDER_IMPORTS: &[&str] = &["log", "config", "http", "secrets", "state", "types"];
/// The interface every plugin exports.
pub const PROVIDER_EXPORT: &str = "plugin";
/// The export as the current contract names it.
pub const PROVIDER_EXPORT_NAME: &str = "clusterstack:provider/plugin@0.1.0";

/// The `component` section of the config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentWorld {
    #[serde(default)]
    pub imports: Vec<String>,
    #[serde(default)]
    pub exports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// `application/vnd.wasm.config.v0+json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WasmConfig {
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub layer_digests: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<ComponentWorld>,
}

impl WasmConfig {
    /// Parse config bytes; `reference` names the artifact in errors.
    pub fn parse(reference: &str, bytes: &[u8]) -> Result<Self> {
        serde_json::from_slice(bytes).map_err(|e| OciError::NotAPlugin {
            reference: reference.to_string(),
            reason: format!("config blob is not a valid `{WASM_CONFIG_V0}` document: {e}"),
        })
    }
}

/// The top-level imports and exports of a component (instance names such as
/// `clusterstack:provider/log@0.1.0`). Refuses core modules and anything not Wasm.
pub fn component_world(bytes: &[u8]) -> std::result::Result<ComponentWorld, String> {
    use wasmparser::{Encoding, Parser, Payload};
    let mut world = ComponentWorld::default();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| format!("not a WebAssembly component: {e}"))?;
        match payload {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != Encoding::Component {
                    return Err("this is a core WebAssembly module, not a component; \
                                build it as a component (see plugins/build)"
                        .into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    let import = import.map_err(|e| format!("reading imports: {e}"))?;
                    world.imports.push(import.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    let export = export.map_err(|e| format!("reading exports: {e}"))?;
                    world.exports.push(export.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    if depth != 0 && world.imports.is_empty() && world.exports.is_empty() {
        return Err("not a WebAssembly component: truncated".into());
    }
    Ok(world)
}

/// Split `ns:pkg/iface@version` into (`ns:pkg`, `iface`, `version`).
fn split_interface(name: &str) -> Option<(&str, &str, Option<&str>)> {
    let (path, version) = match name.split_once('@') {
        Some((p, v)) => (p, Some(v)),
        None => (name, None),
    };
    let (package, iface) = path.split_once('/')?;
    package.contains(':').then_some((package, iface, version))
}

fn major(version: &str) -> Option<u64> {
    version.split('.').next()?.parse().ok()
}

/// Check a declared world against what this host supports: imports only from
/// `clusterstack:provider@0.x` (`log`, `config`, `http`, `secrets`, `state`, `types`) and
/// `wasi:*@0.2.*`; the export `clusterstack:provider/plugin@0.x`. The error names the import.
pub fn check_component_world(world: &ComponentWorld) -> std::result::Result<(), String> {
    for import in &world.imports {
        let Some((package, iface, version)) = split_interface(import) else {
            return Err(format!(
                "import `{import}` is not an interface of a package; the host provides only \
                 {PROVIDER_PACKAGE}@0.x interfaces and wasi:*@0.2"
            ));
        };
        if package == PROVIDER_PACKAGE {
            let Some(version) = version else {
                return Err(format!(
                    "import `{import}` has no version; expected {PROVIDER_PACKAGE}/{iface}@0.x"
                ));
            };
            if major(version) != Some(0) {
                return Err(format!(
                    "import `{import}` is from {PROVIDER_PACKAGE}@{version}, a different major version; \
                     this host supports {PROVIDER_PACKAGE}@0.x"
                ));
            }
            if !PROVIDER_IMPORTS.contains(&iface) {
                return Err(format!(
                    "import `{import}` is not a capability this host provides; \
                     {PROVIDER_PACKAGE}@0.x has {}",
                    PROVIDER_IMPORTS.join(", ")
                ));
            }
        } else if package.starts_with("wasi:") {
            let ok = version.is_some_and(|v| v.starts_with("0.2."));
            if !ok {
                return Err(format!(
                    "import `{import}` is not WASI 0.2; the host links wasi:*@0.2.x only"
                ));
            }
        } else {
            return Err(format!(
                "import `{import}` is from package `{package}`, which this host does not provide; \
                 plugins may import {PROVIDER_PACKAGE}@0.x and wasi:*@0.2 only"
            ));
        }
    }
    let exports_plugin = world.exports.iter().any(|e| {
        split_interface(e).is_some_and(|(p, i, v)| {
            p == PROVIDER_PACKAGE && i == PROVIDER_EXPORT && v.and_then(major) == Some(0)
        })
    });
    if !exports_plugin {
        return Err(format!(
            "the component does not export `{PROVIDER_EXPORT_NAME}` (it exports: {})",
            if world.exports.is_empty() {
                "nothing".to_string()
            } else {
                world.exports.join(", ")
            }
        ));
    }
    Ok(())
}

/// Check the world a config declares, before the component is downloaded. The error says
/// which import (or the missing export) is the problem.
pub fn check_world(config: &WasmConfig) -> std::result::Result<(), String> {
    let world = config
        .component
        .as_ref()
        .ok_or("config has no `component` section listing imports and exports")?;
    check_component_world(world)
}

/// [`check_world`] for the artifact `reference`, as an [`OciError`].
pub fn check_config(reference: &str, config: &WasmConfig) -> Result<()> {
    if config.component.is_none() {
        return Err(OciError::NotAPlugin {
            reference: reference.to_string(),
            reason: "config has no `component` section listing imports and exports".into(),
        });
    }
    check_world(config).map_err(|reason| OciError::UnsupportedWorld {
        reference: reference.to_string(),
        reason,
    })
}

/// Which of the two layouts a manifest uses, and its component layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginLayout {
    /// CNCF format: the config lists the world.
    Cncf { config: Descriptor, layer: Descriptor },
    /// Older wasm-to-oci format: the world is read from the component bytes.
    Legacy { layer: Descriptor },
}

impl PluginLayout {
    /// The component layer.
    pub fn layer(&self) -> &Descriptor {
        match self {
            PluginLayout::Cncf { layer, .. } | PluginLayout::Legacy { layer } => layer,
        }
    }
}

/// Recognise a plugin manifest, refusing other media types with what was expected.
pub fn plugin_layout(reference: &str, manifest: &Manifest) -> Result<PluginLayout> {
    let wrong = |what: String, found: &str, expected: &str| OciError::WrongMediaType {
        reference: reference.to_string(),
        what,
        found: found.to_string(),
        expected: expected.to_string(),
    };
    let find = |media_type: &str| -> Result<Descriptor> {
        match manifest.layers.as_slice() {
            [single] if single.media_type == media_type => Ok(single.clone()),
            [single] => Err(wrong(
                "layer".into(),
                &single.media_type,
                &format!("`{media_type}`"),
            )),
            [] => Err(OciError::NotAPlugin {
                reference: reference.to_string(),
                reason: "manifest has no layers".into(),
            }),
            many => Err(OciError::NotAPlugin {
                reference: reference.to_string(),
                reason: format!(
                    "manifest has {} layers; a plugin artifact has exactly one component layer",
                    many.len()
                ),
            }),
        }
    };
    match manifest.config.media_type.as_str() {
        WASM_CONFIG_V0 => Ok(PluginLayout::Cncf {
            config: manifest.config.clone(),
            layer: find(WASM_LAYER)?,
        }),
        LEGACY_WASM_CONFIG => Ok(PluginLayout::Legacy {
            layer: find(LEGACY_WASM_LAYER)?,
        }),
        other => Err(wrong(
            "config".into(),
            other,
            &format!("`{WASM_CONFIG_V0}` (or the older `{LEGACY_WASM_CONFIG}`)"),
        )),
    }
}

/// A plugin artifact ready to push: config and manifest bytes plus the layer.
#[derive(Debug, Clone)]
pub struct PluginArtifact {
    pub config: WasmConfig,
    pub config_bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl PluginArtifact {
    /// Describe `component` (its world must be supported) as a CNCF Wasm artifact.
    pub fn new(file: &str, component: &[u8], annotations: BTreeMap<String, String>) -> Result<Self> {
        let world = component_world(component).map_err(|reason| OciError::NotAPlugin {
            reference: file.to_string(),
            reason,
        })?;
        check_component_world(&world).map_err(|reason| OciError::UnsupportedWorld {
            reference: file.to_string(),
            reason,
        })?;
        let layer = Descriptor::for_bytes(WASM_LAYER, component);
        let config = WasmConfig {
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            author: None,
            description: None,
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![layer.digest.clone()],
            component: Some(world),
        };
        let config_bytes = serde_json::to_vec(&config).map_err(|e| OciError::NotAPlugin {
            reference: file.to_string(),
            reason: e.to_string(),
        })?;
        let mut manifest = Manifest::new(Descriptor::for_bytes(WASM_CONFIG_V0, &config_bytes), vec![layer]);
        manifest.annotations = annotations;
        Ok(PluginArtifact {
            config,
            config_bytes,
            manifest,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(imports: &[&str], exports: &[&str]) -> ComponentWorld {
        ComponentWorld {
            imports: imports.iter().map(|s| s.to_string()).collect(),
            exports: exports.iter().map(|s| s.to_string()).collect(),
            target: None,
        }
    }

    #[test]
    fn the_provider_world_is_accepted() {
        let w = world(
            &[
                "clusterstack:provider/types@0.1.0",
                "clusterstack:provider/log@0.1.0",
                "clusterstack:provider/http@0.1.2",
                "wasi:cli/stderr@0.2.3",
                "wasi:io/streams@0.2.0",
            ],
            &[PROVIDER_EXPORT_NAME],
        );
        assert_eq!(check_component_world(&w), Ok(()));
    }

    #[test]
    fn unknown_worlds_are_refused_naming_the_import() {
        let cases = [
            (
                "wasi:filesystem/types@0.3.0",
                "`wasi:filesystem/types@0.3.0` is not WASI 0.2",
            ),
            ("clusterstack:provider/log@1.0.0", "different major version"),
            (
                "clusterstack:provider/shell@0.1.0",
                "`clusterstack:provider/shell@0.1.0` is not a capability",
            ),
            ("acme:evil/backdoor@1.0.0", "package `acme:evil`"),
            ("clusterstack:provider/log", "has no version"),
        ];
        for (import, expected) in cases {
            let err =
                check_component_world(&world(&[import], &[PROVIDER_EXPORT_NAME])).expect_err("should fail");
            assert!(err.contains(expected) && err.contains(import), "{import}: {err}");
        }
        let err = check_component_world(&world(&[], &["wasi:cli/run@0.2.0"])).expect_err("should fail");
        assert!(
            err.contains("does not export `clusterstack:provider/plugin@0.1.0`")
                && err.contains("wasi:cli/run"),
            "{err}"
        );
    }

    #[test]
    fn configs_without_a_world_are_refused() {
        let mut config = WasmConfig {
            created: "2026-01-01T00:00:00Z".into(),
            author: None,
            description: None,
            architecture: "wasm".into(),
            os: "wasip2".into(),
            layer_digests: vec![],
            component: None,
        };
        let err = check_world(&config).expect_err("should fail");
        assert!(err.contains("no `component` section"), "{err}");
        config.component = Some(world(
            &["clusterstack:provider/secrets@0.1.0"],
            &[PROVIDER_EXPORT_NAME],
        ));
        assert_eq!(check_world(&config), Ok(()));
        config.component = Some(world(
            &["clusterstack:provider/state@2.0.0"],
            &[PROVIDER_EXPORT_NAME],
        ));
        let err = check_config("reg/p:v1", &config)
            .expect_err("should fail")
            .to_string();
        assert!(
            err.contains("`reg/p:v1`: unsupported world: import `clusterstack:provider/state@2.0.0`"),
            "{err}"
        );
    }

    #[test]
    fn layouts_are_recognised_and_wrong_media_types_named() {
        let layer = Descriptor::for_bytes(WASM_LAYER, b"x");
        let m = Manifest::new(Descriptor::for_bytes(WASM_CONFIG_V0, b"{}"), vec![layer.clone()]);
        assert!(matches!(plugin_layout("r", &m), Ok(PluginLayout::Cncf { .. })));
        let legacy = Manifest::new(
            Descriptor::for_bytes(LEGACY_WASM_CONFIG, b"{}"),
            vec![Descriptor::for_bytes(LEGACY_WASM_LAYER, b"x")],
        );
        assert!(matches!(
            plugin_layout("r", &legacy),
            Ok(PluginLayout::Legacy { .. })
        ));
        let image = Manifest::new(
            Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", b"{}"),
            vec![layer],
        );
        let err = plugin_layout("reg/x:v1", &image)
            .expect_err("should fail")
            .to_string();
        assert!(
            err.contains("`reg/x:v1`: config has media type `application/vnd.oci.image.config.v1+json`"),
            "{err}"
        );
        let tgz = Manifest::new(
            Descriptor::for_bytes(WASM_CONFIG_V0, b"{}"),
            vec![Descriptor::for_bytes(
                "application/vnd.oci.image.layer.v1.tar+gzip",
                b"x",
            )],
        );
        let err = plugin_layout("r", &tgz).expect_err("should fail").to_string();
        assert!(err.contains("layer has media type `application/vnd.oci.image.layer.v1.tar+gzip`, expected `application/wasm`"), "{err}");
    }

    #[test]
    fn core_modules_and_garbage_are_not_components() {
        let err = component_world(b"\0asm\x01\0\0\0").expect_err("should fail");
        assert!(err.contains("core WebAssembly module"), "{err}");
        let err = component_world(b"hello").expect_err("should fail");
        assert!(err.contains("not a WebAssembly component"), "{err}");
    }
}
