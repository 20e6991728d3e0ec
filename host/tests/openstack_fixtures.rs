//! The OpenStack plugin's fixtures (plugins/openstack/fixtures), recorded against real Keystone and
//! Glance by their record.sh, replayed offline: every case passes, a request the cassette does not
//! hold fails its case with a cassette miss, and the committed cassettes carry no credentials.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    repo().join("plugins/openstack/fixtures")
}

/// The binary under test; `STACKHOST_BIN` overrides it (worktrees sharing one target dir overwrite
/// each other's `target/release/stackhost`).
fn bin() -> String {
    std::env::var("STACKHOST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackhost").to_string())
}

fn stackhost(args: &[&str]) -> Output {
    common::plugin_bytes("openstack");
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run stackhost")
}

fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// The case directories (those with a case.yaml).
fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .expect("read fixtures")
        .flatten()
        .filter(|e| e.path().join("case.yaml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

#[test]
fn every_recorded_case_passes_offline() {
    let out = stackhost(&["plugin", "test", path(&repo().join("plugins/openstack"))]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let cases = cases();
    for required in [
        "validate-config",
        "reconcile-creates-image",
        "reconcile-finds-active-image",
        "reconcile-wrong-password",
        "patch-cluster-class",
        "addon-values",
        "cleanup-node-images",
    ] {
        assert!(cases.iter().any(|c| c == required), "missing case {required}");
    }
    for case in &cases {
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(case.as_str()))
            .unwrap_or_else(|| panic!("no row for {case}:\n{stdout}"));
        assert_eq!(row.split_whitespace().nth(1), Some("pass"), "{row}\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("openstack: {} passed, 0 failed", cases.len())),
        "{stdout}"
    );
}

#[test]
fn the_recorded_answers_are_what_the_goldens_say() {
    let read = |case: &str, file: &str| {
        std::fs::read_to_string(fixtures().join(case).join(file)).expect("read golden")
    };
    // Created and import started: pending, and the id Glance gave is kept in state.
    let created = read("reconcile-creates-image", "expected.yaml");
    assert!(
        created.contains("pending:") && created.contains("started (web-download)"),
        "{created}"
    );
    let state = read("reconcile-creates-image", "expected-state.yaml");
    assert!(
        state.contains("image/ubuntu-capi-image-v1.32.5") && state.contains("\"created\":true"),
        "{state}"
    );
    // Already active: ready with the Glance id from the recording.
    let active = read("reconcile-finds-active-image", "expected.yaml");
    let cassette = read("reconcile-finds-active-image", "cassette.yaml");
    let id = active
        .lines()
        .find_map(|l| l.trim().strip_prefix("ready: "))
        .unwrap_or_else(|| panic!("not ready: {active}"))
        .trim()
        .to_string();
    assert!(cassette.contains(&id), "the id comes from Glance's answer");
    // A wrong password: the failure names Keystone, the user and the Secret to fix.
    let wrong = read("reconcile-wrong-password", "expected.yaml");
    assert!(
        wrong.contains("failed:")
            && wrong.contains("rejected the credentials of cloud")
            && wrong.contains("\"stackhost\"")
            && wrong.contains("HTTP 401")
            && wrong.contains("Secret"),
        "{wrong}"
    );
    // Cleanup deleted the image in Glance.
    let cleanup = read("cleanup-node-images", "cassette.yaml");
    assert!(cleanup.contains("method: DELETE"), "{cleanup}");
}

#[test]
fn a_request_the_cassette_does_not_hold_fails_the_case() {
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("fixtures");
    common::copy_tree(&fixtures(), &copy);
    // The plugin now looks for another image name than the one recorded.
    let images = copy.join("reconcile-creates-image/images.yaml");
    let text = std::fs::read_to_string(&images).expect("read");
    std::fs::write(
        &images,
        text.replace("ubuntu-capi-image-v1.32.5", "ubuntu-capi-image-v1.32.6"),
    )
    .expect("write");
    let component = repo().join("plugins/dist/openstack.wasm");
    let out = stackhost(&["plugin", "test", path(&component), "--fixtures", path(&copy)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout.contains("cassette miss: the plugin sent GET http://127.0.0.1:9292/v2/images?limit=100&name=ubuntu-capi-image-v1.32.6"),
        "{stdout}"
    );
    assert!(stdout.contains("1 failed"), "only that case fails: {stdout}");

    // A recorded answer that no longer matches the request body (the create options changed).
    let copy2 = dir.path().join("fixtures2");
    common::copy_tree(&fixtures(), &copy2);
    let images = copy2.join("reconcile-creates-image/images.yaml");
    let text = std::fs::read_to_string(&images).expect("read");
    std::fs::write(&images, text.replace("visibility: private", "visibility: shared")).expect("write");
    let out = stackhost(&["plugin", "test", path(&component), "--fixtures", path(&copy2)]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stdout.contains("cassette miss: the plugin sent POST http://127.0.0.1:9292/v2/images")
            && stdout.contains("recorded with another body"),
        "{stdout}"
    );
}

#[test]
fn committed_cassettes_hold_no_password_or_token() {
    let mut seen = 0;
    for case in cases() {
        let path = fixtures().join(&case).join("cassette.yaml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        seen += 1;
        for leak in ["user-secret", "fixture-password", "not-the-password", "gAAAAA"] {
            assert!(!text.contains(leak), "{} contains {leak:?}", path.display());
        }
        if text.contains("/v3/auth/tokens") {
            assert!(text.contains("password: <redacted>"), "{}", path.display());
        }
        if text.contains("x-subject-token") {
            assert!(text.contains("x-subject-token: <redacted>"), "{}", path.display());
        }
        assert!(!text.contains("x-auth-token: gA"), "{}", path.display());
    }
    assert!(seen >= 4, "expected recorded cassettes, found {seen}");
}
