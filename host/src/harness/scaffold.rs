//! `stackhost plugin new`: a ready-to-build plugin crate from the template in host/templates/plugin,
//! with this host's own copy of the contract (wit/) so the crate and the host always agree.

use std::path::{Path, PathBuf};

use super::HarnessError;

/// `(path in the new crate, template text, executable)`.
const TEMPLATE: &[(&str, &str, bool)] = &[
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

/// Writes a new plugin crate named `name` into `dir` (which must not exist or be empty); returns the
/// files written.
pub fn scaffold(name: &str, dir: &Path) -> Result<Vec<PathBuf>, HarnessError> {
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
    let mut written = Vec::with_capacity(TEMPLATE.len());
    for (relative, text, executable) in TEMPLATE {
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
        let files = scaffold("my-plugin", &target).expect("scaffold");
        assert!(files.contains(&target.join("wit/world.wit")));
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).expect("Cargo.toml");
        assert!(cargo.contains("name = \"my-plugin\""), "{cargo}");
        let build = std::fs::read_to_string(target.join("build")).expect("build");
        assert!(build.contains("lib=my_plugin"), "{build}");
        assert!(!files
            .iter()
            .any(|f| std::fs::read_to_string(f).expect("read").contains("{{")));
        let again = scaffold("my-plugin", &target).expect_err("not empty");
        assert!(again.to_string().contains("is not empty"), "{again}");
    }
}
