//! Reading packaged Helm charts (`.tgz`) without unpacking them: which chart directories they hold,
//! with the name and version of each `Chart.yaml`.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

/// One chart directory at the top of an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartEntry {
    /// Top-level directory in the archive.
    pub dir: String,
    /// `Chart.yaml` `name`.
    pub name: String,
    /// `Chart.yaml` `version`.
    pub version: String,
}

#[derive(Deserialize)]
struct ChartYaml {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    version: Option<serde_yaml::Value>,
}

/// Lists the charts (`<dir>/Chart.yaml`) at the top of a chart archive, sorted by directory.
/// Errors are plain text; the caller adds the release and file.
pub fn read_chart_archive(path: &Path) -> Result<Vec<ChartEntry>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut charts = Vec::new();
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzip tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a gzip tar archive: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .into_owned();
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || parts[1].as_os_str() != "Chart.yaml" {
            continue;
        }
        let dir = parts[0].as_os_str().to_string_lossy().into_owned();
        let mut text = String::new();
        entry
            .read_to_string(&mut text)
            .map_err(|e| format!("{dir}/Chart.yaml is unreadable: {e}"))?;
        let chart: ChartYaml =
            serde_yaml::from_str(&text).map_err(|e| format!("{dir}/Chart.yaml is not valid YAML: {e}"))?;
        let name = chart
            .name
            .filter(|n| !n.is_empty())
            .ok_or_else(|| format!("{dir}/Chart.yaml has no name"))?;
        let version = match chart.version {
            Some(serde_yaml::Value::String(s)) if !s.is_empty() => s,
            Some(serde_yaml::Value::Number(n)) => n.to_string(),
            _ => return Err(format!("{dir}/Chart.yaml has no version")),
        };
        charts.push(ChartEntry { dir, name, version });
    }
    if charts.is_empty() {
        return Err("no <chart>/Chart.yaml at the top of the archive".into());
    }
    charts.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(charts)
}

/// Unpacks a chart archive into `dest` (which must exist), e.g. the multi-stage addon archive whose
/// stages are rendered one chart directory at a time. Only regular files and directories inside
/// `dest` are written: links, devices and paths leaving `dest` are refused, as upstream's untar did.
pub fn unpack_chart_archive(path: &Path, dest: &Path) -> Result<(), String> {
    use std::path::Component;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzip tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("not a gzip tar archive: {e}"))?;
        let rel = entry
            .path()
            .map_err(|e| format!("bad entry name: {e}"))?
            .into_owned();
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!("entry {} leaves the archive directory", rel.display()));
        }
        let kind = entry.header().entry_type();
        let target = dest.join(&rel);
        if kind.is_dir() {
            std::fs::create_dir_all(&target)
                .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
        } else if kind.is_file() {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let mut out = std::fs::File::create(&target)
                .map_err(|e| format!("cannot create {}: {e}", target.display()))?;
            std::io::copy(&mut entry, &mut out)
                .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        } else {
            return Err(format!(
                "entry {} is a {kind:?}; only files and directories are allowed",
                rel.display()
            ));
        }
    }
    Ok(())
}
