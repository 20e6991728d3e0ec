//! Values of the addon charts (cso-behaviour.md §2.4.6, §3.2.5): `cluster-addon-values.yaml` (legacy) or
//! `<stage>/overwrite.yaml` (multi-stage), a template over `.Cluster`, `.ControlPlane` and
//! `.InfraCluster`, rendered with Helm's own engine (the same one that renders the charts, so the same
//! functions: sprig, `toYaml`, `required`, …).
//!
//! Helm renders charts, not loose templates, so the file becomes the body of a named template in a
//! one-template chart whose only manifest is a ConfigMap carrying the base64 of the result. The file's
//! first line stays on line 1, so Helm's line numbers point into the user's file. The result is YAML:
//! when its top-level `values` is a string (upstream's `values: |` block) that string is the values,
//! otherwise the whole document is; either must be a map (upstream panicked otherwise, quirk 16).

use std::path::Path;

use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::error::ValuesError;
use crate::render::{RenderError, RenderRequest, Renderer};

/// Name of the named template holding the user's file.
const TEMPLATE_NAME: &str = "stackhost.addon-values";

/// The lookup objects a values template sees.
#[derive(Debug, Clone, Default)]
pub struct TemplateInput {
    /// The Cluster API Cluster.
    pub cluster: Value,
    /// The object at `spec.controlPlaneRef`, when set.
    pub control_plane: Option<Value>,
    /// The object at `spec.infrastructureRef`, when set.
    pub infra_cluster: Option<Value>,
}

impl TemplateInput {
    /// The Helm values of the values chart: `Cluster`, `ControlPlane`, `InfraCluster` (empty maps when
    /// absent, so `{{ .ControlPlane.spec }}` renders empty instead of failing).
    fn values(&self) -> Value {
        let or_empty = |v: &Option<Value>| v.clone().unwrap_or_else(|| json!({}));
        json!({
            "Cluster": self.cluster,
            "ControlPlane": or_empty(&self.control_plane),
            "InfraCluster": or_empty(&self.infra_cluster),
        })
    }
}

/// Renders the values template `text` (the content of `file` in release `release`) with Helm in a
/// scratch chart under `scratch`, and returns the values map.
pub fn render_values(
    renderer: &dyn Renderer,
    scratch: &Path,
    text: &str,
    input: &TemplateInput,
    file: &str,
    release: &str,
) -> Result<Value, ValuesError> {
    let template_err = |reason: String| ValuesError::Template {
        file: file.to_owned(),
        release: release.to_owned(),
        reason,
    };
    let chart = scratch.join("stackhost-addon-values");
    write_chart(&chart, text).map_err(|e| template_err(format!("cannot write the values chart: {e}")))?;
    let values = input.values();
    let req = RenderRequest {
        chart: &chart,
        values: &values,
        release_name: "addon-values",
        namespace: super::ADDON_NAMESPACE,
        kube_version: None,
        include_crds: false,
    };
    let rendered = renderer.render(&req).map_err(|e| match e {
        RenderError::Helm { detail, .. } | RenderError::HelmPanicked { detail, .. } => {
            template_err(clean_helm_message(&detail))
        }
        other => template_err(other.to_string()),
    })?;
    let encoded = rendered
        .iter()
        .find_map(|o| o["data"]["values"].as_str())
        .ok_or_else(|| template_err("Helm returned no output for the values template".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|e| template_err(format!("unexpected output from Helm: {e}")))?;
    // Helm drops `<no value>` (a missing map key) from its output; the values file is rendered the same way.
    let output = String::from_utf8_lossy(&bytes).replace("<no value>", "");
    parse_values(&output).map_err(|found| ValuesError::NotAMap {
        file: file.to_owned(),
        release: release.to_owned(),
        found,
    })
}

/// The values map from a rendered values file: the `values: |` block string when there is one, else
/// the whole document. `Err` says what was found instead of a map.
pub fn parse_values(output: &str) -> Result<Value, String> {
    if output.trim().is_empty() {
        return Err("nothing".into());
    }
    let doc: Value = serde_yaml::from_str(output).map_err(|e| format!("invalid YAML: {e}"))?;
    let values = match doc {
        Value::Object(ref map) => match map.get("values") {
            Some(Value::String(inner)) => {
                let inner: Value = serde_yaml::from_str(inner)
                    .map_err(|e| format!("a `values` block with invalid YAML: {e}"))?;
                match inner {
                    // `values: ""` (or only comments): no values.
                    Value::Null => Value::Object(Map::new()),
                    other => other,
                }
            }
            _ => doc,
        },
        other => other,
    };
    match values {
        Value::Object(_) => Ok(values),
        Value::Null => Err("nothing".into()),
        Value::Array(_) => Err("a list".into()),
        Value::String(s) => Err(format!("the string {s:?}")),
        other => Err(format!("the scalar {other}")),
    }
}

fn write_chart(chart: &Path, text: &str) -> std::io::Result<()> {
    let templates = chart.join("templates");
    std::fs::create_dir_all(&templates)?;
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: stackhost-addon-values\nversion: 0.1.0\ndescription: values template of a cluster addon\n",
    )?;
    // The user's text starts on line 1 of _values.tpl, so Helm's line numbers match the file.
    std::fs::write(
        templates.join("_values.tpl"),
        format!("{{{{- define \"{TEMPLATE_NAME}\" -}}}}{{{{- with .Values -}}}}{text}\n{{{{- end -}}}}{{{{- end -}}}}\n"),
    )?;
    std::fs::write(
        templates.join("values.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: addon-values\ndata:\n  values: {{{{ include \"{TEMPLATE_NAME}\" . | b64enc | quote }}}}\n"
        ),
    )
}

/// Helm's message names the scratch chart's files; say "line N" of the user's file instead.
fn clean_helm_message(detail: &str) -> String {
    detail
        .replace("stackhost-addon-values/templates/_values.tpl:", "line ")
        .replace("stackhost-addon-values/templates/values.yaml", "the values file")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_block_string_is_the_values() {
        let v = parse_values("values: |\n  a:\n    b: 1\n").expect("map");
        assert_eq!(v, json!({"a": {"b": 1}}));
    }

    #[test]
    fn a_plain_map_is_the_values() {
        let v = parse_values("a: 1\nvalues:\n  nested: true\n").expect("map");
        assert_eq!(v, json!({"a": 1, "values": {"nested": true}}));
    }

    #[test]
    fn empty_or_non_map_output_is_an_error_not_a_panic() {
        assert_eq!(parse_values("").expect_err("an error"), "nothing");
        assert_eq!(parse_values("- a\n- b\n").expect_err("an error"), "a list");
        assert_eq!(
            parse_values("hello").expect_err("an error"),
            "the string \"hello\""
        );
        assert_eq!(parse_values("values: \"\"\n").expect("empty block"), json!({}));
        assert_eq!(
            parse_values("values: |\n  - x\n").expect_err("an error"),
            "a list",
            "a values block must hold a map as well"
        );
    }
}
