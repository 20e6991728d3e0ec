//! `stackhost plugin new | test | bench` as a plugin author runs them: the table and exit code, readable
//! diffs, --bless, cassette replay and misses, limits, --record against a local server with the secret
//! redacted, and a scaffolded crate that builds, passes its own fixtures and records.

mod common;

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/harness")
        .join(name)
}

/// `plugins/dist/<name>.wasm`, failing with what to run when the plugins are not built.
fn dist(name: &str) -> String {
    common::plugin_bytes(name);
    repo()
        .join("plugins/dist")
        .join(format!("{name}.wasm"))
        .to_string_lossy()
        .into_owned()
}

/// The binary under test; `STACKHOST_BIN` overrides it (worktrees sharing one target dir overwrite
/// each other's `target/release/stackhost`).
fn bin() -> String {
    std::env::var("STACKHOST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackhost").to_string())
}

fn stackhost(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run stackhost")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn show(out: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr))
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn noop_passes_its_fixtures_with_a_table_and_junit() {
    dist("noop");
    let dir = tempfile::tempdir().expect("tempdir");
    let junit = dir.path().join("junit.xml");
    let crate_dir = repo().join("plugins/noop");
    let out = stackhost(&["plugin", "test", path(&crate_dir), "--junit", path(&junit)]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let header: Vec<&str> = stdout.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(
        header,
        ["CASE", "RESULT", "FUEL", "WALL", "PEAK", "MEMORY", "HOST", "CALLS"],
        "{stdout}"
    );
    for case in [
        "addon-values",
        "cleanup-node-images",
        "info",
        "patch-cluster-class",
        "reconcile-node-images",
        "validate-config",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{case} ")))
            .unwrap_or_else(|| panic!("no row for {case}: {stdout}"));
        assert!(row.contains(" pass "), "{row}");
        assert!(
            row.contains(" us") || row.contains(" ms"),
            "wall time shown: {row}"
        );
    }
    assert!(stdout.ends_with("noop: 6 passed, 0 failed\n"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(
        xml.contains(r#"<testsuite name="noop" tests="6" failures="0""#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="patch-cluster-class" classname="noop.patch-cluster-class""#),
        "{xml}"
    );
}

#[test]
fn a_wrong_golden_gives_a_readable_diff_and_a_non_zero_exit() {
    let noop = dist("noop");
    let dir = tempfile::tempdir().expect("tempdir");
    let junit = dir.path().join("junit.xml");
    let wrong = fixtures("noop-wrong");
    let out = stackhost(&[
        "plugin",
        "test",
        &noop,
        "--fixtures",
        path(&wrong),
        "--case",
        "patch-cluster-class-wrong",
        "--junit",
        path(&junit),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "=== FAIL patch-cluster-class-wrong `patch-cluster-class` (deliberately wrong golden (expects a \
             patch noop does not make))\nthe result differs from "
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("patch-cluster-class-wrong/expected.yaml:\n--- expected\n+++ actual\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-         customImage: registry.example/node:v1.32.5-patched\n+         customImage: kindest/node:v1.32.5\n"),
        "the diff shows the expected and the actual line: {stdout}"
    );
    assert!(stdout.ends_with("noop: 0 passed, 1 failed\n"), "{stdout}");
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert!(xml.contains(r#"failures="1""#), "{xml}");
    assert!(
        xml.contains("+         customImage: kindest/node:v1.32.5"),
        "{xml}"
    );
}

#[test]
fn a_fixture_that_exceeds_fuel_fails_and_names_the_limit() {
    let noop = dist("noop");
    let out = stackhost(&[
        "plugin",
        "test",
        &noop,
        "--fixtures",
        path(&fixtures("noop-wrong")),
        "--case",
        "out-of-fuel",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    let row = stdout.lines().nth(1).expect("a row");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells[..3],
        ["out-of-fuel", "FAIL", "1000"],
        "fuel used is the whole budget: {row}"
    );
    assert!(stdout.contains("+ failure: OutOfFuel\n"), "{stdout}");
    assert!(
        stdout.contains("the call failed: plugin noop@sha256:")
            && stdout.contains(": out of fuel after 1000 units in `info`; raise spec.limits.fuel"),
        "{stdout}"
    );
}

#[test]
fn bless_rewrites_the_goldens_and_the_next_run_passes() {
    let noop = dist("noop");
    let dir = tempfile::tempdir().expect("tempdir");
    let fx = dir.path().join("fixtures");
    common::copy_tree(&fixtures("noop-wrong"), &fx);
    std::fs::remove_file(fx.join("info/expected.yaml")).expect("remove a golden");

    let before = stackhost(&["plugin", "test", &noop, "--fixtures", path(&fx)]);
    assert_eq!(before.status.code(), Some(1), "{}", show(&before));
    let stdout = text(&before.stdout);
    assert!(
        stdout.contains("info/expected.yaml: check the result below and run with --bless"),
        "{stdout}"
    );
    assert!(stdout.ends_with("noop: 0 passed, 3 failed\n"), "{stdout}");

    let blessed = stackhost(&["plugin", "test", &noop, "--fixtures", path(&fx), "--bless"]);
    assert_eq!(blessed.status.code(), Some(0), "{}", show(&blessed));
    assert!(
        text(&blessed.stdout).ends_with("noop: 0 passed, 0 failed, 3 blessed\n"),
        "{}",
        show(&blessed)
    );
    let golden = std::fs::read_to_string(fx.join("patch-cluster-class-wrong/expected.yaml")).expect("golden");
    assert!(golden.contains("customImage: kindest/node:v1.32.5"), "{golden}");
    let info = std::fs::read_to_string(fx.join("info/expected.yaml")).expect("golden");
    assert!(
        info.starts_with("ok:\n  capabilities:\n  - log\n  name: noop\n"),
        "{info}"
    );

    let after = stackhost(&["plugin", "test", &noop, "--fixtures", path(&fx)]);
    assert_eq!(after.status.code(), Some(0), "{}", show(&after));
    assert!(
        text(&after.stdout).ends_with("noop: 3 passed, 0 failed\n"),
        "{}",
        show(&after)
    );
}

#[test]
fn cassettes_replay_and_a_miss_is_reported_as_such() {
    let misbehaving = dist("misbehaving");
    let out = stackhost(&[
        "plugin",
        "test",
        &misbehaving,
        "--fixtures",
        path(&fixtures("misbehaving")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    let verdict = |case: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{case} ")))
            .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
    };
    assert_eq!(verdict("http-replayed").as_deref(), Some("pass"), "{stdout}");
    assert_eq!(
        verdict("loop-stopped-by-fuel").as_deref(),
        Some("pass"),
        "{stdout}"
    );
    assert_eq!(verdict("http-not-recorded").as_deref(), Some("FAIL"), "{stdout}");
    assert!(
        stdout.contains("cassette miss: the plugin sent GET http://forbidden.invalid/ (no body), which "),
        "{stdout}"
    );
    assert!(
        stdout.contains("http-not-recorded/cassette.yaml does not hold; record it with `stackhost plugin test ... --record`"),
        "{stdout}"
    );
    assert!(stdout.ends_with("misbehaving: 2 passed, 1 failed\n"), "{stdout}");
}

#[test]
fn bench_prints_percentiles_and_fuel_per_case() {
    dist("noop");
    let out = stackhost(&[
        "plugin",
        "bench",
        path(&repo().join("plugins/noop")),
        "--runs",
        "20",
        "--warmup",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let mut lines = stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .expect("header")
        .split("  ")
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header.iter().map(|c| c.trim()).collect::<Vec<_>>(),
        ["CASE", "RUNS", "P50", "P99", "FUEL/CALL", "PEAK MEMORY"]
    );
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 6, "{stdout}");
    for row in rows {
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells[1], "20", "{row}");
        let fuel: u64 = cells[6].parse().expect("fuel is a number");
        assert!(fuel > 0, "{row}");
    }
}

/// A tiny image service: answers the scaffolded plugin's lookups only with the right token, and
/// echoes the token in its answer (so the recording must redact it from a body too).
struct ImageService {
    port: u16,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ImageService {
    fn start(token: &'static str) -> ImageService {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stopped) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).expect("blocking");
                        count.fetch_add(1, Ordering::Relaxed);
                        serve(stream, token);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        ImageService { port, requests, stop }
    }
}

impl Drop for ImageService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: std::net::TcpStream, token: &str) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    reader.read_line(&mut request_line).expect("request line");
    let mut auth = String::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        match name.to_ascii_lowercase().as_str() {
            "x-auth-token" => auth = value.trim().to_string(),
            "content-length" => length = value.trim().parse().unwrap_or(0),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("body");
    let (status, answer) = if auth != token {
        ("401 Unauthorized", r#"{"error":"bad token"}"#.to_string())
    } else if request_line.starts_with("GET /v2/images?name=") {
        (
            "200 OK",
            format!(r#"{{"images":[{{"id":"img-42","status":"active","checked_with":"{token}"}}]}}"#),
        )
    } else {
        ("404 Not Found", r#"{"error":"no such route"}"#.to_string())
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

#[test]
fn a_scaffolded_plugin_builds_passes_its_fixtures_and_records_with_the_secret_redacted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let crate_dir = dir.path().join("example-provider");
    let out = stackhost(&["plugin", "new", "example-provider", "--dir", path(&crate_dir)]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("./build"), "{}", show(&out));

    // The template's own build script, as an author runs it (the guest target dir is kept between
    // test runs so only the first one compiles std and the dependencies).
    let guest_target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("harness-template-target");
    let build = Command::new(crate_dir.join("build"))
        .env("STACKHOST", bin())
        .env("PLUGIN_TARGET_DIR", &guest_target)
        .output()
        .expect("run the template's build script");
    assert!(build.status.success(), "{}", show(&build));
    assert!(crate_dir.join("dist/example-provider.wasm").exists());

    let own = stackhost(&["plugin", "test", path(&crate_dir)]);
    assert_eq!(own.status.code(), Some(0), "{}", show(&own));
    assert!(
        text(&own.stdout).ends_with("example-provider: 3 passed, 0 failed\n"),
        "{}",
        show(&own)
    );

    // Record against a local service with a real token; the fixture itself only has a fake one.
    const REAL_TOKEN: &str = "real-token-0123456789";
    let service = ImageService::start(REAL_TOKEN);
    let fx = dir.path().join("recorded");
    let case = fx.join("reconcile");
    std::fs::create_dir_all(&case).expect("mkdir");
    let host = format!("127.0.0.1:{}", service.port);
    std::fs::write(
        fx.join("plugin.yaml"),
        format!(
            "capabilities:\n  httpHosts: [\"{host}\"]\n  secrets:\n  - name: credentials\n    keys: [token]\nstate: true\n"
        ),
    )
    .expect("write");
    std::fs::write(fx.join("config.yaml"), format!("endpoint: http://{host}\n")).expect("write");
    std::fs::write(fx.join("secrets.yaml"), "credentials/token: fake-token\n").expect("write");
    std::fs::copy(crate_dir.join("fixtures/release.yaml"), fx.join("release.yaml")).expect("copy");
    std::fs::copy(crate_dir.join("fixtures/images.yaml"), case.join("images.yaml")).expect("copy");
    std::fs::write(case.join("case.yaml"), "export: reconcile-node-images\n").expect("write");

    let secret = format!("credentials/token={REAL_TOKEN}");
    let recorded = stackhost(&[
        "plugin",
        "test",
        path(&crate_dir),
        "--fixtures",
        path(&fx),
        "--record",
        "--bless",
        "--secret",
        &secret,
    ]);
    assert_eq!(recorded.status.code(), Some(0), "{}", show(&recorded));
    assert!(
        text(&recorded.stdout).contains("reconcile: recorded 1 interaction(s) into "),
        "{}",
        show(&recorded)
    );
    assert_eq!(service.requests.load(Ordering::Relaxed), 1, "one real request");
    let cassette = std::fs::read_to_string(case.join("cassette.yaml")).expect("cassette written");
    assert!(
        !cassette.contains(REAL_TOKEN),
        "the token is redacted:\n{cassette}"
    );
    assert!(cassette.contains("x-auth-token: <redacted>"), "{cassette}");
    assert!(
        cassette.contains("checked_with: <secret:credentials/token>"),
        "{cassette}"
    );
    assert!(
        cassette.contains(&format!(
            "url: http://{host}/v2/images?name=ubuntu-capi-image-v1.32.5"
        )),
        "{cassette}"
    );
    let golden = std::fs::read_to_string(case.join("expected.yaml")).expect("golden");
    assert!(golden.contains("ready: img-42"), "{golden}");
    let state = std::fs::read_to_string(case.join("expected-state.yaml")).expect("state golden");
    assert_eq!(state, "image/ubuntu-capi-image-v1.32.5: img-42\n");

    // Replay: the service is gone, the fixture's fake token is used, and the case still passes.
    drop(service);
    let replayed = stackhost(&["plugin", "test", path(&crate_dir), "--fixtures", path(&fx)]);
    assert_eq!(replayed.status.code(), Some(0), "{}", show(&replayed));
    assert!(
        text(&replayed.stdout).ends_with("example-provider: 1 passed, 0 failed\n"),
        "{}",
        show(&replayed)
    );
}

/// The compiled-code cache shared by the Python and JavaScript cases: each component compiles once
/// (tens of seconds) per target dir, not once per `stackhost` run.
fn pyjs_cache() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")
}

#[test]
fn the_docker_plugin_in_python_and_javascript_passes_the_rust_plugins_fixtures() {
    let cache = pyjs_cache();
    let mut tables = Vec::new();
    for name in ["docker", "docker-py", "docker-js"] {
        dist(name);
        let dir = repo().join("plugins").join(name);
        let out = stackhost(&["plugin", "test", path(&dir), "--cache-dir", path(&cache)]);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", show(&out));
        let stdout = text(&out.stdout);
        assert!(
            stdout.ends_with(&format!("{name}: 15 passed, 0 failed\n")),
            "{stdout}"
        );
        tables.push(stdout);
    }
    // The same cases, by the same names, in all three (fixtures/ of the ports link to plugins/docker's).
    let cases = |table: &str| -> Vec<String> {
        table
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| !c.is_empty() && !c.ends_with(':'))
            .collect()
    };
    assert_eq!(cases(&tables[0]), cases(&tables[1]));
    assert_eq!(cases(&tables[0]), cases(&tables[2]));
}

#[test]
fn python_and_javascript_templates_build_offline_and_pass_their_fixtures() {
    let tools = repo().join(".tools");
    assert!(
        tools.join("py/bin/componentize-py").exists() && tools.join("js/node_modules").is_dir(),
        "{}: run scripts/deps/pyjs.sh (scripts/install-deps.sh does)",
        tools.display()
    );
    let dir = tempfile::tempdir().expect("tempdir");
    for (lang, source) in [("python", "app.py"), ("js", "plugin.js")] {
        let plugin_dir = dir.path().join(format!("example-{lang}"));
        let name = format!("example-{lang}");
        let out = stackhost(&["plugin", "new", &name, "--lang", lang, "--dir", path(&plugin_dir)]);
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert!(plugin_dir.join(source).exists());
        // The toolchains the project installed, instead of the template's own first-run install.
        if lang == "js" {
            std::os::unix::fs::symlink(tools.join("js/node_modules"), plugin_dir.join("node_modules"))
                .expect("link node_modules");
        }
        let build = Command::new(plugin_dir.join("build"))
            .env("COMPONENTIZE_PY", tools.join("py/bin/componentize-py"))
            .output()
            .expect("run the template's build script");
        assert!(build.status.success(), "{lang}: {}", show(&build));
        let out = stackhost(&[
            "plugin",
            "test",
            path(&plugin_dir),
            "--cache-dir",
            path(&pyjs_cache()),
        ]);
        assert_eq!(out.status.code(), Some(0), "{lang}: {}", show(&out));
        assert!(
            text(&out.stdout).ends_with(&format!("{name}: 3 passed, 0 failed\n")),
            "{}",
            show(&out)
        );
    }
}
