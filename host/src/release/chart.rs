//! Reading packaged Helm charts (`.tgz`) without unpacking them: which chart directories they hold,
//! with the name and version of each `Chart.yaml`; and unpacking them. Both stay within
//! [`ArchiveLimits`].

use std::io::Read;
use std::path::Path;

use serde::Deserialize;

/// What one chart archive of a release may expand to. The archives come from a source the ClusterStack's
/// creator chose, so a small archive must not expand into gigabytes on the controller (a zip bomb). The
/// defaults are Helm's own loader limits (100 MiB per chart, 5 MiB per file); the real SCS stacks use a
/// small part of them (see docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArchiveLimits {
    /// Most bytes all entries of one archive may expand to.
    pub total_bytes: u64,
    /// Most bytes one entry may expand to.
    pub entry_bytes: u64,
    /// Most entries (files and directories) in one archive.
    pub entries: u64,
}

impl Default for ArchiveLimits {
    fn default() -> Self {
        Self {
            total_bytes: 100 << 20,
            entry_bytes: 5 << 20,
            entries: 10_000,
        }
    }
}

impl ArchiveLimits {
    /// Walks `path`'s entries within the limits, calling `each` with every entry; the entry's reader
    /// stops (with an error) at the entry limit, so a lying tar header cannot push past it.
    fn walk(
        &self,
        path: &Path,
        mut each: impl FnMut(&std::path::Path, tar::EntryType, &mut dyn Read) -> Result<(), String>,
    ) -> Result<(), String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let entries = archive
            .entries()
            .map_err(|e| format!("not a gzip tar archive: {e}"))?;
        let (mut count, mut total) = (0u64, 0u64);
        for entry in entries {
            let entry = entry.map_err(|e| format!("not a gzip tar archive: {e}"))?;
            count += 1;
            if count > self.entries {
                return Err(format!(
                    "the archive has more than {} entries (the limit per chart archive)",
                    self.entries
                ));
            }
            let rel = entry
                .path()
                .map_err(|e| format!("bad entry name: {e}"))?
                .into_owned();
            let size = entry.size();
            if size > self.entry_bytes {
                return Err(format!(
                    "{} expands to {size} bytes, over the limit of {} bytes per file",
                    rel.display(),
                    self.entry_bytes
                ));
            }
            total += size;
            if total > self.total_bytes {
                return Err(format!(
                    "the archive expands to more than {} bytes (the limit per chart archive); {} is where it \
                     passes it",
                    self.total_bytes,
                    rel.display()
                ));
            }
            let kind = entry.header().entry_type();
            // take(): the reader never yields more than the header promised, even if the stream would.
            let mut bounded = entry.take(size);
            each(&rel, kind, &mut bounded)?;
        }
        Ok(())
    }
}

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
pub fn read_chart_archive(path: &Path, limits: &ArchiveLimits) -> Result<Vec<ChartEntry>, String> {
    let mut charts = Vec::new();
    limits.walk(path, |path, _, entry| {
        let parts: Vec<_> = path.components().collect();
        if parts.len() != 2 || parts[1].as_os_str() != "Chart.yaml" {
            return Ok(());
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
        Ok(())
    })?;
    if charts.is_empty() {
        return Err("no <chart>/Chart.yaml at the top of the archive".into());
    }
    charts.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(charts)
}

/// Unpacks a chart archive into `dest` (which must exist), e.g. the multi-stage addon archive whose
/// stages are rendered one chart directory at a time. Only regular files and directories inside
/// `dest` are written: links, devices and paths leaving `dest` are refused, as upstream's untar did.
pub fn unpack_chart_archive(path: &Path, dest: &Path, limits: &ArchiveLimits) -> Result<(), String> {
    use std::path::Component;
    limits.walk(path, |rel, kind, entry| {
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(format!("entry {} leaves the archive directory", rel.display()));
        }
        let target = dest.join(rel);
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
            std::io::copy(entry, &mut out).map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        } else {
            return Err(format!(
                "entry {} is a {kind:?}; only files and directories are allowed",
                rel.display()
            ));
        }
        Ok(())
    })
}
