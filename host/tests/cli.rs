//! `stackhost plugin ...` as a user runs it: outputs, exit codes, and where plugin output goes.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

fn dist(name: &str) -> PathBuf {
    common::plugin_bytes(name); // fails with a clear message when the plugins are not built
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"))
}

fn stackhost(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run stackhost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const RELEASE: &str = r#"{tag: "docker-ferrol-1-30-v2", provider: "docker", stack-name: "ferrol", kubernetes-version: "v1.30.9", version: "v2"}"#;

#[test]
fn call_prints_the_result_in_wave_and_the_report_on_stderr() {
    let noop = dist("noop");
    let call = format!(r#"patch-cluster-class({RELEASE}, ["{{\"kind\":\"ClusterClass\"}}"])"#);
    let out = stackhost(&["plugin", "call", noop.to_str().expect("path"), &call]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), r#"ok(["{\"kind\":\"ClusterClass\"}"])"#);
    let stderr = text(&out.stderr);
    assert!(stderr.contains("patch-cluster-class: fuel "), "{stderr}");
    assert!(stderr.contains("host calls 0"), "{stderr}");
}

#[test]
fn exit_codes_separate_guest_errors_from_traps_and_limits() {
    let plugin = dist("misbehaving");
    let path = plugin.to_str().expect("path");
    let run = |behaviour: &str, extra: &[&str]| {
        let call = format!(r#"validate-config("{behaviour}")"#);
        let mut args = vec![
            "plugin",
            "call",
            path,
            call.as_str(),
            "--grant-state",
            "--allow-http",
            "allowed.invalid",
        ];
        args.extend_from_slice(extra);
        stackhost(&args)
    };

    let out = run("guest-error", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("err(failed(\"misbehaving plugin: guest error requested\"))"),
        "{}",
        text(&out.stdout)
    );

    let out = run("loop", &["--fuel", "1000000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("out of fuel after 1000000 units in `validate-config`"),
        "{}",
        text(&out.stderr)
    );

    let out = run("trap", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("misbehaving plugin: trap requested"),
        "{}",
        text(&out.stderr)
    );

    let out = run("ok", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok");
}

#[test]
fn plugin_output_goes_to_the_log_on_stderr_never_to_stdout() {
    let plugin = dist("misbehaving");
    let out = stackhost(&[
        "plugin",
        "call",
        plugin.to_str().expect("path"),
        r#"validate-config("print")"#,
        "--grant-state",
        "--allow-http",
        "allowed.invalid",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok", "stdout holds only the result");
    let log_line = text(&out.stderr)
        .lines()
        .find(|l| l.contains("hello on stdout"))
        .map(str::to_string);
    let log_line = log_line.unwrap_or_else(|| panic!("not in the log: {}", text(&out.stderr)));
    assert!(log_line.contains("plugin=\"misbehaving@sha256:"), "{log_line}");
}

#[test]
fn ungranted_capabilities_and_bad_calls_are_explained() {
    // misbehaving imports `http` and `state`: it loads without grants, and its http call gets the
    // typed denial (exit 1: the plugin's own error), naming the grant to add.
    let plugin = dist("misbehaving");
    let out = stackhost(&[
        "plugin",
        "call",
        plugin.to_str().expect("path"),
        r#"validate-config("forbidden-http")"#,
        "--grant-state",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("err(denied(") && stdout.contains("spec.capabilities.httpHosts"),
        "{stdout}"
    );

    let noop = dist("noop");
    let out = stackhost(&["plugin", "call", noop.to_str().expect("path"), "frobnicate()"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no function `frobnicate`"),
        "{}",
        text(&out.stderr)
    );

    let out = stackhost(&[
        "plugin",
        "call",
        noop.to_str().expect("path"),
        "validate-config(42)",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("arguments of `validate-config` do not match its type"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn inspect_lists_digest_world_imports_and_exports() {
    let plugin = dist("misbehaving");
    let out = stackhost(&["plugin", "inspect", plugin.to_str().expect("path"), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let bytes = std::fs::read(&plugin).expect("read");
    assert_eq!(json["digest"], stackhost::plugin::digest_of(&bytes));
    assert_eq!(json["size"], bytes.len());
    assert_eq!(json["package"], "clusterstack:provider@0.1.0");
    assert_eq!(json["world"], "provider");
    let imports: Vec<&str> = json["imports"]
        .as_array()
        .expect("imports")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        imports.contains(&"clusterstack:provider/http@0.1.0"),
        "{imports:?}"
    );
    assert_eq!(
        json["exports"],
        serde_json::json!(["clusterstack:provider/plugin@0.1.0"])
    );

    let not_wasm = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(not_wasm.path(), b"hello").expect("write");
    let out = stackhost(&["plugin", "inspect", not_wasm.path().to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a WebAssembly binary"),
        "{}",
        text(&out.stderr)
    );
}
