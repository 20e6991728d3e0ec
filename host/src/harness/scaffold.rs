//! `stackhost plugin new`: a ready-to-build plugin from the templates in host/templates (a Rust crate,
//! a Python app for componentize-py or a JavaScript module for componentize-js), each with the same
//! example logic and fixtures, and this host's own copy of the contract (wit/) so plugin and host agree.

use std::path::{Path, PathBuf};

use super::HarnessError;

/// `(path in the new plugin, template text, executable)`: the Rust crate.
const RUST: &[(&str, &str, bool)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/plugin/Cargo.toml.tmpl"),
        false,
    ),
    // Versions already used by stackhost's plugins/, so an offline machine has them in its cargo cache.
    (
        "Cargo.lock",
        include_str!("../../templates/plugin/Cargo.lock.tmpl"),
        false,
    ),
    ("build", include_str!("../../templates/plugin/build.tmpl"), true),
    (
        "README.md",
        include_str!("../../templates/plugin/README.md.tmpl"),
        false,
    ),
    (
        ".gitignore",
        include_str!("../../templates/plugin/gitignore.tmpl"),
        false,
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/plugin/src/lib.rs.tmpl"),
        false,
    ),
];

/// The Python plugin (componentize-py).
const PYTHON: &[(&str, &str, bool)] = &[
    (
        "app.py",
        include_str!("../../templates/plugin-python/app.py.tmpl"),
        false,
    ),
    (
        "pyproject.toml",
        include_str!("../../templates/plugin-python/pyproject.toml.tmpl"),
        false,
    ),
    (
        "build",
        include_str!("../../templates/plugin-python/build.tmpl"),
        true,
    ),
    (
        "README.md",
        include_str!("../../templates/plugin-python/README.md.tmpl"),
        false,
    ),
    (
        ".gitignore",
        include_str!("../../templates/plugin-python/gitignore.tmpl"),
        false,
    ),
];

/// The JavaScript plugin (componentize-js).
const JS: &[(&str, &str, bool)] = &[
    (
        "plugin.js",
        include_str!("../../templates/plugin-js/plugin.js.tmpl"),
        false,
    ),
    (
        "package.json",
        include_str!("../../templates/plugin-js/package.json.tmpl"),
        false,
    ),
    // The same helper stackhost's own plugins/build-pyjs uses.
    (
        "componentize.mjs",
        include_str!("../../../scripts/deps/pyjs/componentize.mjs"),
        false,
    ),
    (
        "build",
        include_str!("../../templates/plugin-js/build.tmpl"),
        true,
    ),
    (
        "README.md",
        include_str!("../../templates/plugin-js/README.md.tmpl"),
        false,
    ),
    (
        ".gitignore",
        include_str!("../../templates/plugin-js/gitignore.tmpl"),
        false,
    ),
];

/// Fixtures and the contract: the same for every language, so `plugin test` and `plugin bench` work
/// unchanged.
const COMMON: &[(&str, &str, bool)] = &[
    (
        "fixtures/plugin.yaml",
        include_str!("../../templates/plugin/fixtures/plugin.yaml"),
        false,
    ),
    (
        "fixtures/config.yaml",
        include_str!("../../templates/plugin/fixtures/config.yaml"),
        false,
    ),
    (
        "fixtures/secrets.yaml",
        include_str!("../../templates/plugin/fixtures/secrets.yaml"),
        false,
    ),
    (
        "fixtures/release.yaml",
        include_str!("../../templates/plugin/fixtures/release.yaml"),
        false,
    ),
    (
        "fixtures/images.yaml",
        include_str!("../../templates/plugin/fixtures/images.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-creates-missing-image/case.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-creates-missing-image/case.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-creates-missing-image/cassette.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-creates-missing-image/cassette.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-creates-missing-image/expected.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-creates-missing-image/expected.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-creates-missing-image/expected-state.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-creates-missing-image/expected-state.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-finds-active-image/case.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-finds-active-image/case.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-finds-active-image/cassette.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-finds-active-image/cassette.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-finds-active-image/expected.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-finds-active-image/expected.yaml"),
        false,
    ),
    (
        "fixtures/reconcile-finds-active-image/expected-state.yaml",
        include_str!("../../templates/plugin/fixtures/reconcile-finds-active-image/expected-state.yaml"),
        false,
    ),
    (
        "fixtures/validate-config-needs-endpoint/case.yaml",
        include_str!("../../templates/plugin/fixtures/validate-config-needs-endpoint/case.yaml"),
        false,
    ),
    (
        "fixtures/validate-config-needs-endpoint/config.yaml",
        include_str!("../../templates/plugin/fixtures/validate-config-needs-endpoint/config.yaml"),
        false,
    ),
    (
        "fixtures/validate-config-needs-endpoint/expected.yaml",
        include_str!("../../templates/plugin/fixtures/validate-config-needs-endpoint/expected.yaml"),
        false,
    ),
    // The contract, exactly as this host implements it.
    ("wit/config.wit", include_str!("../../../wit/config.wit"), false),
    ("wit/http.wit", include_str!("../../../wit/http.wit"), false),
    ("wit/log.wit", include_str!("../../../wit/log.wit"), false),
    (
        "wit/provider.wit",
        include_str!("../../../wit/provider.wit"),
        false,
    ),
    ("wit/secrets.wit", include_str!("../../../wit/secrets.wit"), false),
    ("wit/state.wit", include_str!("../../../wit/state.wit"), false),
    ("wit/types.wit", include_str!("../../../wit/types.wit"), false),
    ("wit/world.wit", include_str!("../../../wit/world.wit"), false),
];

/// Checks a plugin name: lowercase letters, digits and single hyphens, starting with a letter.
pub fn check_name(name: &str) -> Result<(), HarnessError> {
    let ok = name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && !name.contains("--")
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(HarnessError::Scaffold(format!(
            "{name:?} is not a valid plugin name: use lowercase letters, digits and single hyphens, starting \
             with a letter (at most 63 characters), e.g. `openstack-images`"
        )))
    }
}

/// The language of a new plugin (`plugin new --lang`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    #[default]
    Rust,
    Python,
    Js,
}

/// Writes a new plugin named `name` in `lang` into `dir` (which must not exist or be empty); returns
/// the files written.
pub fn scaffold(name: &str, dir: &Path, lang: Lang) -> Result<Vec<PathBuf>, HarnessError> {
    check_name(name)?;
    if let Ok(mut entries) = std::fs::read_dir(dir) {
        if entries.next().is_some() {
            return Err(HarnessError::Scaffold(format!(
                "{} exists and is not empty; choose another --dir",
                dir.display()
            )));
        }
    } else if dir.exists() {
        return Err(HarnessError::Scaffold(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let lib_name = name.replace('-', "_");
    let own = match lang {
        Lang::Rust => RUST,
        Lang::Python => PYTHON,
        Lang::Js => JS,
    };
    let mut written = Vec::with_capacity(own.len() + COMMON.len());
    for (relative, text, executable) in own.iter().chain(COMMON) {
        let path = dir.join(relative);
        let text = text.replace("{{name}}", name).replace("{{lib_name}}", &lib_name);
        super::write_file(&path, &text)?;
        if *executable {
            make_executable(&path)?;
        }
        written.push(path);
    }
    Ok(written)
}

fn make_executable(path: &Path) -> Result<(), HarnessError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|e| HarnessError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_with_an_example_of_a_good_one() {
        for good in ["noop", "openstack-images", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "Open", "1a", "a-", "a--b", "a_b", "a/b"] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains("e.g. `openstack-images`"), "{err}");
        }
    }

    #[test]
    fn scaffold_fills_in_the_name_and_refuses_a_non_empty_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("my-plugin");
        let files = scaffold("my-plugin", &target, Lang::Rust).expect("scaffold");
        assert!(files.contains(&target.join("wit/world.wit")));
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains("name = \"my-plugin\""), "{cargo}");
        let build = std::fs::read_to_string(target.join("build")).expect("build");
        assert!(build.contains("lib=my_plugin"), "{build}");
        assert!(!files
            .iter()
            .any(|f| std::fs::read_to_string(f).expect("read").contains("{{")));
        let again = scaffold("my-plugin", &target, Lang::Rust).expect_err("not empty");
        assert!(again.to_string().contains("is not empty"), "{again}");
    }

    #[test]
    fn python_and_js_plugins_get_their_sources_and_the_same_fixtures() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (lang, source, manifest) in [
            (Lang::Python, "app.py", "pyproject.toml"),
            (Lang::Js, "plugin.js", "package.json"),
        ] {
            let target = dir.path().join(source);
            let files = scaffold("my-plugin", &target, lang).expect("scaffold");
            let text = std::fs::read_to_string(target.join(source)).expect("source");
            assert!(text.contains("\"my-plugin\""), "{text}");
            let manifest = std::fs::read_to_string(target.join(manifest)).expect("manifest");
            assert!(manifest.contains("\"my-plugin\""), "{manifest}");
            assert!(files.contains(&target.join("fixtures/reconcile-creates-missing-image/cassette.yaml")));
            assert!(files.contains(&target.join("wit/world.wit")));
            assert!(!target.join("Cargo.toml").exists());
        }
    }
}
