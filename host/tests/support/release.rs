//! Cluster-stack releases made from the fixtures, for tests and benches: a copy under another stack name,
//! a cluster-class chart with one more template, a chart archive that expands far past the limits.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// `tests/fixtures/releases/<tag>`.
pub fn fixture(tag: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/releases")
        .join(tag)
}

/// Fixture release `tag` copied to `root/<new tag>`, its stack name `from` replaced by `to` in its file
/// names, in the paths inside its chart archives and in the text of every file (so `ferrol` -> `ferrol7`
/// turns `docker-ferrol-1-32-v1` into the release `docker-ferrol7-1-32-v1`). Returns the new directory.
pub fn renamed(root: &Path, tag: &str, from: &str, to: &str) -> anyhow::Result<PathBuf> {
    let dest = root.join(tag.replace(from, to));
    std::fs::create_dir_all(&dest)?;
    for entry in std::fs::read_dir(fixture(tag))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().replace(from, to);
        if name.ends_with(".tgz") {
            rewrite_archive(&entry.path(), &dest.join(name), from, to)?;
        } else {
            let text = std::fs::read_to_string(entry.path())?;
            std::fs::write(dest.join(name), text.replace(from, to))?;
        }
    }
    Ok(dest)
}

/// Copies a gzipped tar archive with `from` replaced by `to` in entry paths and (UTF-8) contents.
fn rewrite_archive(src: &Path, dest: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(File::open(src)?));
    let mut builder = builder(dest)?;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().replace(from, to);
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if let Ok(text) = std::str::from_utf8(&data) {
            data = text.replace(from, to).into_bytes();
        }
        let mut header = entry.header().clone();
        header.set_size(data.len() as u64);
        builder.append_data(&mut header, path, data.as_slice())?;
    }
    builder.into_inner()?.finish()?;
    Ok(())
}

fn builder(dest: &Path) -> std::io::Result<tar::Builder<flate2::write::GzEncoder<File>>> {
    Ok(tar::Builder::new(flate2::write::GzEncoder::new(
        File::create(dest)?,
        flate2::Compression::fast(),
    )))
}

/// The cluster-class chart archive of the release in `dir`, and the chart's directory inside it.
fn cluster_class(dir: &Path) -> anyhow::Result<(PathBuf, String)> {
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if let Some(stem) = name.strip_suffix(".tgz") {
            if let Some((chart, _version)) = stem.rsplit_once('-') {
                if chart.ends_with("-cluster-class") {
                    return Ok((dir.join(&name), chart.to_string()));
                }
            }
        }
    }
    anyhow::bail!("no cluster-class chart archive in {}", dir.display())
}

/// Adds template `file` with `text` to the cluster-class chart of the release in `dir`.
pub fn add_template(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    extend_cluster_class(dir, |builder, chart| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_size(text.len() as u64);
        builder.append_data(&mut header, format!("{chart}/templates/{file}"), text.as_bytes())
    })
}

/// Adds `count` files of `size` zero bytes each (`files/zeros-<n>`) to the cluster-class chart of the
/// release in `dir`: zeros compress about a thousandfold, so a small archive expands past any cap.
pub fn add_zero_files(dir: &Path, count: usize, size: u64) -> anyhow::Result<()> {
    extend_cluster_class(dir, |builder, chart| {
        for n in 0..count {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(size);
            builder.append_data(
                &mut header,
                format!("{chart}/files/zeros-{n}"),
                std::io::repeat(0).take(size),
            )?;
        }
        Ok(())
    })
}

/// Rewrites the cluster-class chart archive of the release in `dir`: its entries, then what `extra`
/// appends (given the chart's directory inside the archive).
fn extend_cluster_class(
    dir: &Path,
    extra: impl FnOnce(&mut tar::Builder<flate2::write::GzEncoder<File>>, &str) -> std::io::Result<()>,
) -> anyhow::Result<()> {
    let (archive, chart) = cluster_class(dir)?;
    let original = std::fs::read(&archive)?;
    let mut builder = builder(&archive)?;
    let mut entries = tar::Archive::new(flate2::read::GzDecoder::new(original.as_slice()));
    for entry in entries.entries()? {
        let mut entry = entry?;
        let mut header = entry.header().clone();
        let path = entry.path()?.into_owned();
        builder.append_data(&mut header, path, &mut entry)?;
    }
    extra(&mut builder, &chart)?;
    builder.into_inner()?.finish()?;
    Ok(())
}
