//! Rendering with a `helm` binary (`helm template`), used when one is on PATH, like upstream did.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{manifests_from_rendered, RenderError, RenderRequest, Renderer};

/// Runs `helm template` for each render.
#[derive(Debug, Clone)]
pub struct HelmBinRenderer {
    helm: PathBuf,
}

impl HelmBinRenderer {
    /// The `helm` found on PATH, if any.
    pub fn from_path() -> Option<Self> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("helm"))
            .find(|p| p.is_file())
            .map(|helm| Self { helm })
    }

    /// A specific `helm` binary.
    pub fn new(helm: impl Into<PathBuf>) -> Self {
        Self { helm: helm.into() }
    }

    /// The arguments of `helm template` for a request (values come on stdin).
    pub fn args(req: &RenderRequest<'_>) -> Vec<String> {
        let mut args = vec![
            "template".to_owned(),
            req.release_name.to_owned(),
            req.chart.to_string_lossy().into_owned(),
            "--namespace".to_owned(),
            req.namespace.to_owned(),
            "--values".to_owned(),
            "-".to_owned(),
        ];
        if let Some(kv) = req.kube_version {
            args.extend(["--kube-version".to_owned(), kv.to_owned()]);
        }
        if req.include_crds {
            args.push("--include-crds".to_owned());
        }
        args
    }
}

fn run(helm: &Path, args: &[String], stdin: &str) -> std::io::Result<std::process::Output> {
    let mut child = Command::new(helm)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        // helm may exit before reading its values (e.g. on a bad flag); its exit status tells why.
        match input.write_all(stdin.as_bytes()) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            other => other?,
        }
    }
    child.wait_with_output()
}

impl Renderer for HelmBinRenderer {
    fn name(&self) -> String {
        format!("helm binary {}", self.helm.display())
    }

    fn render(&self, req: &RenderRequest<'_>) -> Result<Vec<serde_json::Value>, RenderError> {
        // JSON is YAML, so the values go to `--values -` unchanged.
        let values = if req.values.is_null() {
            "{}".to_owned()
        } else {
            req.values.to_string()
        };
        let output = run(&self.helm, &Self::args(req), &values)
            .map_err(|e| RenderError::HelmBinary(format!("cannot run {}: {e}", self.helm.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if stderr.contains("panic:") || stderr.starts_with("goroutine ") {
            return Err(RenderError::HelmPanicked {
                chart: req.chart.to_owned(),
                detail: stderr,
            });
        }
        if !output.status.success() {
            return Err(RenderError::Helm {
                op: "render".into(),
                chart: req.chart.to_owned(),
                detail: stderr.trim().to_owned(),
            });
        }
        let stdout = String::from_utf8(output.stdout).map_err(|e| RenderError::Output(e.to_string()))?;
        manifests_from_rendered(req.chart, [("helm template".to_owned(), stdout)])
    }

    fn package(&self, chart_dir: &Path, destination: &Path) -> Result<PathBuf, RenderError> {
        let args = [
            "package".to_owned(),
            chart_dir.to_string_lossy().into_owned(),
            "--destination".to_owned(),
            destination.to_string_lossy().into_owned(),
        ];
        let output = run(&self.helm, &args, "")
            .map_err(|e| RenderError::HelmBinary(format!("cannot run {}: {e}", self.helm.display())))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            return Err(RenderError::Helm {
                op: "package".into(),
                chart: chart_dir.to_owned(),
                detail: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
            });
        }
        // "Successfully packaged chart and saved it to: <path>"
        stdout
            .rsplit_once(": ")
            .map(|(_, path)| PathBuf::from(path.trim()))
            .ok_or_else(|| RenderError::Output(format!("helm package printed {stdout:?}")))
    }
}
