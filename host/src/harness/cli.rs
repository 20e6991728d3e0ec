//! `stackhost plugin new | test | bench`: arguments and what each prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use super::fixture::Suite;
use super::report::{self, BenchRow};
use super::{scaffold, Harness, HarnessError, Options, Verdict};
use crate::plugin::capability::CaBundle;

/// Exit code when a case failed.
pub const EXIT_CASE_FAILED: i32 = 1;

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (crate and component name): lowercase letters, digits, hyphens.
    pub name: String,
    /// Where to create the crate (default: ./NAME); must not exist or be empty.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The plugin's language: `rust` (a crate), `python` (componentize-py) or `js` (componentize-js).
    #[arg(long, value_enum, default_value_t = scaffold::Lang::Rust)]
    pub lang: scaffold::Lang,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// A plugin crate directory (tests its dist/NAME.wasm) or a component file.
    pub plugin: PathBuf,
    /// The fixtures directory (default: the crate's fixtures/).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Rewrite expected.yaml and expected-state.yaml with what the plugin produced.
    #[arg(long)]
    pub bless: bool,
    /// Write a JUnit XML report to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Send HTTP to the real hosts (cases with capabilities.httpHosts) and write each case's cassette.yaml,
    /// secrets redacted.
    #[arg(long)]
    pub record: bool,
    /// A secret value replacing the fixture's, `NAME/KEY=VALUE` or `NAME/KEY=@FILE` (real credentials
    /// for --record); repeatable.
    #[arg(long = "secret", value_name = "NAME/KEY=VALUE")]
    pub secrets: Vec<String>,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    pub case: Option<String>,
    /// PEM file of CA certificates --record trusts besides the public roots (the ProviderPlugin's
    /// spec.capabilities.httpCABundle); repeatable.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
    /// Where compiled code is kept between runs [default: $XDG_CACHE_HOME/stackhost/compiled or
    /// ~/.cache/stackhost/compiled]; `none` compiles every run.
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// A plugin crate directory (its dist/NAME.wasm) or a component file.
    pub plugin: PathBuf,
    /// The fixtures directory (default: the crate's fixtures/).
    #[arg(long)]
    pub fixtures: Option<PathBuf>,
    /// Measured calls per case.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Calls per case before measuring.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Run only the cases whose name contains this text.
    #[arg(long)]
    pub case: Option<String>,
    /// Where compiled code is kept between runs (as for `plugin test`).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

/// The compiled-code cache of `plugin test` and `plugin bench`: a large component (Python ~18 MB,
/// JavaScript ~12 MB) takes tens of seconds to compile, an unchanged one loads from here in milliseconds.
fn cache_dir(given: Option<&Path>) -> Option<PathBuf> {
    match given {
        Some(dir) if dir == Path::new("none") => None,
        Some(dir) => Some(dir.to_path_buf()),
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
            .map(|base| base.join("stackhost/compiled")),
    }
}

impl NewArgs {
    pub fn run(self) -> anyhow::Result<i32> {
        let dir = self.dir.clone().unwrap_or_else(|| PathBuf::from(&self.name));
        let files = scaffold::scaffold(&self.name, &dir, self.lang)?;
        println!("created {} ({} files)", dir.display(), files.len());
        println!("next:");
        println!(
            "  cd {} && ./build             # -> dist/{}.wasm",
            dir.display(),
            self.name
        );
        if self.lang != scaffold::Lang::Rust {
            println!("  (the first build installs its pinned toolchain: componentize-py or componentize-js)");
        }
        println!("  stackhost plugin test .      # run fixtures/");
        println!("the guide: docs/plugin-authors.md in stackhost");
        Ok(0)
    }
}

/// The component to run and where its fixtures are by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub component: PathBuf,
    pub fixtures: PathBuf,
    pub name: String,
}

/// Resolves `PLUGIN_DIR_OR_FILE`: a component file (fixtures in `../NAME/fixtures` beside a `dist/`,
/// else `./fixtures` beside the file), or a crate directory (`dist/NAME.wasm` in it, or in its parent
/// for a crate inside stackhost's plugins/ workspace).
pub fn resolve(plugin: &Path) -> Result<Target, HarnessError> {
    if plugin.is_file() {
        let name = plugin
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".into());
        let parent = plugin.parent().unwrap_or(Path::new("."));
        let beside_dist = parent.parent().map(|root| root.join(&name).join("fixtures"));
        let fixtures = match beside_dist {
            Some(dir) if parent.file_name().is_some_and(|n| n == "dist") && dir.is_dir() => dir,
            _ => parent.join("fixtures"),
        };
        return Ok(Target {
            component: plugin.to_path_buf(),
            fixtures,
            name,
        });
    }
    if !plugin.is_dir() {
        return Err(HarnessError::NoComponent {
            path: plugin.to_path_buf(),
            hint: "no such file or directory; pass a plugin crate directory or a .wasm component".into(),
        });
    }
    let name = package_name(plugin).unwrap_or_else(|| {
        plugin
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "plugin".into())
    });
    let file = format!("{name}.wasm");
    let own = plugin.join("dist").join(&file);
    let workspace = plugin.join("..").join("dist").join(&file);
    let component = if own.exists() || !workspace.exists() {
        own
    } else {
        workspace
    };
    if !component.exists() {
        return Err(HarnessError::NoComponent {
            path: component,
            hint: format!(
                "build it first: `{}/build` for a crate made by `stackhost plugin new`, or `plugins/build {name}` \
                 for a crate in stackhost's plugins/ workspace",
                plugin.display()
            ),
        });
    }
    warn_if_stale(plugin, &component);
    Ok(Target {
        component,
        fixtures: plugin.join("fixtures"),
        name,
    })
}

/// The plugin's name: `name` of `package.json` (JavaScript), else `name = "..."` of the `[package]`
/// table of `Cargo.toml` (Rust) or the `[project]` table of `pyproject.toml` (Python).
fn package_name(dir: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(dir.join("package.json")) {
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        return json.get("name").and_then(|n| n.as_str()).map(str::to_string);
    }
    let (text, table) = match std::fs::read_to_string(dir.join("Cargo.toml")) {
        Ok(text) => (text, "[package]"),
        Err(_) => (
            std::fs::read_to_string(dir.join("pyproject.toml")).ok()?,
            "[project]",
        ),
    };
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == table;
        } else if in_package {
            if let Some(value) = line.strip_prefix("name").map(str::trim_start) {
                if let Some(value) = value.strip_prefix('=') {
                    return Some(value.trim().trim_matches('"').to_string());
                }
            }
        }
    }
    None
}

/// Warns when a source file is newer than the component (a forgotten rebuild).
fn warn_if_stale(dir: &Path, component: &Path) {
    let Ok(built) = std::fs::metadata(component).and_then(|m| m.modified()) else {
        return;
    };
    let mut stack = vec![
        dir.join("src"),
        dir.join("Cargo.toml"),
        dir.join("wit"),
        dir.join("app.py"),
        dir.join("plugin.js"),
    ];
    while let Some(path) = stack.pop() {
        if let Ok(entries) = std::fs::read_dir(&path) {
            stack.extend(entries.flatten().map(|e| e.path()));
        } else if std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .is_ok_and(|modified| modified > built)
        {
            eprintln!(
                "warning: {} is newer than {}: rebuild the plugin, or the tests run old code",
                path.display(),
                component.display()
            );
            return;
        }
    }
}

fn load(
    plugin: &Path,
    fixtures: Option<&Path>,
    case: Option<&str>,
    cache: Option<&Path>,
) -> anyhow::Result<(Harness, Suite)> {
    let target = resolve(plugin)?;
    let fixtures = fixtures.map(Path::to_path_buf).unwrap_or(target.fixtures);
    let suite = Suite::load(&fixtures, case)?;
    let bytes = std::fs::read(&target.component)
        .with_context(|| format!("cannot read {}", target.component.display()))?;
    Ok((Harness::new(bytes, &target.name, cache_dir(cache))?, suite))
}

impl TestArgs {
    pub async fn run(self) -> anyhow::Result<i32> {
        let mut secrets = BTreeMap::new();
        for spec in &self.secrets {
            let (key, value) = crate::cli::parse_secret(spec)?;
            secrets.insert(key, value);
        }
        let bundles = self
            .ca_files
            .iter()
            .map(|path| CaBundle::from_file(path).map_err(|e| anyhow::anyhow!("--ca-file: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let options = Options {
            bless: self.bless,
            record: self.record,
            secrets,
            ca_bundle: CaBundle::merge(bundles),
        };
        let (harness, suite) = load(
            &self.plugin,
            self.fixtures.as_deref(),
            self.case.as_deref(),
            self.cache_dir.as_deref(),
        )?;
        let (harness, results) = tokio::task::spawn_blocking(move || {
            let results = harness.test(&suite, &options);
            (harness, results)
        })
        .await
        .context("the test run panicked")?;
        print!("{}", report::test_summary(harness.name(), &results));
        if let Some(path) = &self.junit {
            super::write_file(path, &report::junit(harness.name(), &results))?;
        }
        let failed = results.iter().any(|r| r.verdict == Verdict::Fail);
        Ok(if failed { EXIT_CASE_FAILED } else { 0 })
    }
}

impl BenchArgs {
    pub async fn run(self) -> anyhow::Result<i32> {
        anyhow::ensure!(self.runs > 0, "--runs must be at least 1");
        let (harness, suite) = load(
            &self.plugin,
            self.fixtures.as_deref(),
            self.case.as_deref(),
            self.cache_dir.as_deref(),
        )?;
        let (runs, warmup) = (self.runs, self.warmup);
        let rows = tokio::task::spawn_blocking(move || {
            suite
                .cases
                .iter()
                .map(|case| BenchRow {
                    case: case.name.clone(),
                    outcome: harness.bench_case(case, warmup, runs),
                })
                .collect::<Vec<_>>()
        })
        .await
        .context("the benchmark panicked")?;
        print!("{}", report::bench_summary(&rows));
        let failed = rows.iter().any(|r| r.outcome.is_err());
        Ok(if failed { EXIT_CASE_FAILED } else { 0 })
    }
}
