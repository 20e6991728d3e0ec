//! Helpers shared by the host's integration tests: the plugins built by `plugins/build`.

#![allow(dead_code)] // each test binary uses a different subset of these helpers

use std::path::PathBuf;

use stackhost::plugin::{EngineConfig, Grants, PluginHost, PluginSettings};

/// Bytes of `plugins/dist/<name>.wasm`; fails with what to run when the plugins are not built.
pub fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: build the plugins first with `plugins/build` (scripts/test does it)",
            path.display()
        )
    })
}

pub fn host() -> PluginHost {
    PluginHost::new(EngineConfig {
        max_instances: 32,
        ..EngineConfig::default()
    })
    .expect("engine")
}

pub fn settings(name: &str) -> PluginSettings {
    PluginSettings {
        name: name.to_string(),
        ..PluginSettings::default()
    }
}

/// Settings for `misbehaving`: it imports `state` and `http`.
pub fn misbehaving_settings() -> PluginSettings {
    PluginSettings {
        name: "misbehaving".to_string(),
        grants: Grants {
            http_hosts: vec!["allowed.invalid".into()],
            state: true,
            ..Grants::default()
        },
        ..PluginSettings::default()
    }
}

pub fn release() -> stackhost::plugin::types::ReleaseInfo {
    stackhost::plugin::types::ReleaseInfo {
        tag: "docker-ferrol-1-30-v2".into(),
        provider: "docker".into(),
        stack_name: "ferrol".into(),
        kubernetes_version: "v1.30.9".into(),
        version: "v2".into(),
    }
}

/// A ClusterClass-like object of at least `size` bytes, as JSON.
pub fn object_of_size(size: usize) -> String {
    // Each variable serialises to about 100 bytes; build once, then top up with an annotation.
    let variables: Vec<_> = (0..size / 110)
        .map(|i| {
            serde_json::json!({
                "name": format!("variable-{i}"),
                "required": false,
                "schema": {"openAPIV3Schema": {"type": "string", "default": format!("value-{i}")}}
            })
        })
        .collect();
    let mut object = serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "ClusterClass",
        "metadata": {"name": "ferrol-1-30-v2", "namespace": "cluster", "annotations": {"padding": ""}},
        "spec": {"variables": variables}
    });
    let missing = size.saturating_sub(object.to_string().len());
    object["metadata"]["annotations"]["padding"] = serde_json::Value::String("x".repeat(missing));
    object.to_string()
}

/// Copies a fixtures directory tree (small YAML files only).
pub fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read fixtures") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}
