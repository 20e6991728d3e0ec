//! Reads what a component imports and exports without compiling it (`stackhost plugin inspect`), and
//! turns a core wasm module into a component (`stackhost plugin componentize`).

use wasmparser::{Encoding, Parser, Payload};

use super::bindings::{PACKAGE, PACKAGE_VERSION};
use super::{contract, digest_of};

/// What `plugin inspect` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    pub digest: String,
    pub size: usize,
    /// `clusterstack:provider@0.1.0` when the component exports this host's interface.
    pub package: Option<String>,
    /// `provider` when the component fits the world (with every capability granted).
    pub world: Option<String>,
    /// Why it does not fit the world, if it does not.
    pub world_mismatch: Option<String>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

/// Lists the top-level imports and exports of a component.
pub fn inspect(bytes: &[u8]) -> Result<Inspection, String> {
    let mut imports = Vec::new();
    let mut exports = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| format!("not a WebAssembly binary: {e}"))? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding == Encoding::Module {
                    return Err(
                        "this is a core wasm module, not a component: turn it into one with \
                                `stackhost plugin componentize` (or build for wasm32-wasip2)"
                            .into(),
                    );
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 1 => {
                for import in reader {
                    imports.push(import.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            Payload::ComponentExportSection(reader) if depth == 1 => {
                for export in reader {
                    exports.push(export.map_err(|e| e.to_string())?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    let fits = contract::check(&imports, &exports);
    let exports_ours = exports.iter().any(|e| e.starts_with(&format!("{PACKAGE}/")));
    Ok(Inspection {
        digest: digest_of(bytes),
        size: bytes.len(),
        package: exports_ours.then(|| format!("{PACKAGE}@{PACKAGE_VERSION}")),
        world: fits.is_ok().then(|| "provider".to_string()),
        world_mismatch: fits.err(),
        imports,
        exports,
    })
}

/// Wraps a core module built for `wasm32-wasip1` (with wit-bindgen's component type section) into a
/// component, adapting WASI preview1 to 0.2 with the reactor adapter that matches this wasmtime.
pub fn componentize(core: &[u8]) -> Result<Vec<u8>, String> {
    if core.get(4..8) != Some(&[1, 0, 0, 0]) {
        return Err("expected a core wasm module (version 1); components need no componentize step".into());
    }
    wit_component::ComponentEncoder::default()
        .module(core)
        .and_then(|e| {
            e.adapter(
                "wasi_snapshot_preview1",
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
            )
        })
        .map(|e| e.validate(true))
        .and_then(|mut e| e.encode())
        .map_err(|e| format!("{e:#}"))
}
