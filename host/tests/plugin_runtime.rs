//! The plugin runtime against real plugins from plugins/: every misbehaviour is contained and typed,
//! and the host keeps serving other calls right after.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use stackhost::plugin::types::{Error as WitError, ImageState, NodeImage};
use stackhost::plugin::{EngineConfig, GuestError, Limits, PluginError, PluginHost};

/// Calls `validate-config(behaviour)` on `misbehaving` and returns the failure.
fn misbehave(
    host: &PluginHost,
    behaviour: &str,
    limits: Limits,
) -> Result<Result<(), GuestError>, PluginError> {
    let mut settings = misbehaving_settings();
    settings.limits = limits;
    let plugin = host
        .load(&plugin_bytes("misbehaving"), settings)
        .expect("load misbehaving");
    plugin.validate_config(behaviour).result
}

fn noop_still_works(host: &PluginHost) {
    let plugin = host
        .load(&plugin_bytes("noop"), settings("noop"))
        .expect("load noop");
    let objects = vec![r#"{"kind":"ClusterClass"}"#.to_string()];
    let called = plugin.patch_cluster_class(&release(), &objects);
    assert_eq!(called.result.expect("noop call").expect("noop result"), objects);
}

#[test]
fn each_misbehaviour_gives_its_typed_error_and_the_host_keeps_serving() {
    let host = host();
    let small = Limits {
        fuel: 50_000_000,
        memory_bytes: 16 << 20,
        ..Limits::default()
    };

    match misbehave(&host, "loop", small.clone()) {
        Err(PluginError::OutOfFuel { limit, function, .. }) => {
            assert_eq!(limit, 50_000_000);
            assert_eq!(function, "validate-config");
        }
        other => panic!("loop: expected OutOfFuel, got {other:?}"),
    }
    noop_still_works(&host);

    match misbehave(&host, "alloc", small.clone()) {
        Err(e @ PluginError::MemoryLimit { .. }) => {
            let PluginError::MemoryLimit { limit, requested, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*limit, 16 << 20);
            assert!(*requested > 16 << 20, "{e}");
            assert!(e.to_string().contains("spec.limits.memory"), "{e}");
        }
        other => panic!("alloc: expected MemoryLimit, got {other:?}"),
    }
    noop_still_works(&host);

    match misbehave(&host, "trap", small.clone()) {
        Err(e @ PluginError::Trap { .. }) => {
            let text = e.to_string();
            assert!(
                text.contains("misbehaving plugin: trap requested"),
                "the panic message reaches the user: {text}"
            );
            assert!(text.contains("unreachable"), "{text}");
        }
        other => panic!("trap: expected Trap, got {other:?}"),
    }
    noop_still_works(&host);

    match misbehave(&host, "huge-output", Limits::default()) {
        Err(PluginError::ResultTooLarge { size, limit, .. }) => {
            assert_eq!(limit, Limits::default().max_result_bytes);
            assert!(size >= 24 << 20, "{size}");
        }
        other => panic!("huge-output: expected ResultTooLarge, got {other:?}"),
    }
    noop_still_works(&host);

    match misbehave(&host, "forbidden-http", small.clone()) {
        Ok(Err(GuestError(WitError::Denied(why)))) => {
            assert!(why.contains("\"forbidden.invalid\""), "{why}");
            assert!(why.contains("spec.capabilities.httpHosts"), "{why}");
        }
        other => panic!("forbidden-http: expected the guest's Denied error, got {other:?}"),
    }
    noop_still_works(&host);

    match misbehave(&host, "guest-error", small.clone()) {
        Ok(Err(GuestError(WitError::Failed(why)))) => assert!(why.contains("guest error requested")),
        other => panic!("guest-error: expected the guest's Failed error, got {other:?}"),
    }
    assert!(matches!(misbehave(&host, "ok", small), Ok(Ok(()))));
    noop_still_works(&host);
}

#[test]
fn every_call_sees_a_fresh_reset_memory_even_when_pages_stay_resident() {
    // The default engine keeps instance memory resident between calls and resets only dirty pages
    // (PAGEMAP_SCAN): a static the guest bumps must read 1 again on every call.
    let host = host();
    let plugin = host
        .load(&plugin_bytes("misbehaving"), misbehaving_settings())
        .expect("load");
    assert!(matches!(plugin.validate_config("later:count").result, Ok(Ok(()))));
    for _ in 0..20 {
        let called = plugin.patch_cluster_class(&release(), &[]);
        match called.result {
            Ok(Err(GuestError(WitError::Failed(message)))) => {
                assert_eq!(message, "calls seen by this instance: 1")
            }
            other => panic!("expected the count as a guest error, got {other:?}"),
        }
    }
}

#[test]
fn a_stored_behaviour_applies_to_every_export() {
    let host = host();
    let plugin = host
        .load(&plugin_bytes("misbehaving"), misbehaving_settings())
        .expect("load");
    assert!(matches!(plugin.validate_config("guest-error").result, Ok(Err(_))));
    let images = vec![NodeImage {
        name: "ubuntu-capi-image-v1.30.9".into(),
        url: "http://images.invalid/ubuntu.qcow2".into(),
        checksum: None,
        disk_format: "qcow2".into(),
        container_format: "bare".into(),
        properties: vec![],
    }];
    assert!(matches!(
        plugin.reconcile_node_images(&release(), &images).result,
        Ok(Err(GuestError(WitError::Failed(_))))
    ));
    assert!(matches!(plugin.validate_config("ok").result, Ok(Ok(()))));
    let statuses = plugin
        .reconcile_node_images(&release(), &images)
        .result
        .expect("call")
        .expect("ok");
    assert_eq!(
        statuses[0].state,
        ImageState::Ready("ubuntu-capi-image-v1.30.9".into())
    );
}

#[test]
fn the_deadline_stops_a_guest_that_fuel_would_not() {
    let host = host();
    let limits = Limits {
        fuel: u64::MAX / 2,
        deadline_ms: 200,
        ..Limits::default()
    };
    match misbehave(&host, "loop", limits) {
        Err(e @ PluginError::Deadline { deadline_ms: 200, .. }) => {
            assert!(e.to_string().contains("deadline of 200 ms"), "{e}")
        }
        other => panic!("expected Deadline, got {other:?}"),
    }
    noop_still_works(&host);
}

#[test]
fn fuel_is_deterministic_for_the_same_input() {
    let host = host();
    let plugin = host.load(&plugin_bytes("noop"), settings("noop")).expect("load");
    let objects = vec![object_of_size(10_000)];
    let fuel: Vec<u64> = (0..5)
        .map(|_| plugin.patch_cluster_class(&release(), &objects).report.fuel_used)
        .collect();
    assert!(fuel[0] > 0);
    assert!(fuel.iter().all(|f| *f == fuel[0]), "{fuel:?}");
    // Strings are copied by the host, so their length costs no fuel; more list elements are more guest work.
    let more = vec![object_of_size(100); 50];
    assert!(plugin.patch_cluster_class(&release(), &more).report.fuel_used > fuel[0]);
}

#[test]
fn memory_cap_applies_and_peak_memory_is_reported() {
    let host = host();
    let plugin = host.load(&plugin_bytes("noop"), settings("noop")).expect("load");
    let called = plugin.patch_cluster_class(&release(), &[object_of_size(100_000)]);
    assert!(called.result.is_ok());
    let peak = called.report.peak_memory_bytes;
    assert!(
        peak >= 100_000 && peak <= Limits::default().memory_bytes,
        "{peak}"
    );

    // The same call with a cap below what the input needs fails on the memory limit, not elsewhere.
    let mut tight = settings("noop");
    tight.limits.memory_bytes = 2 << 20;
    let plugin = host.load(&plugin_bytes("noop"), tight).expect("load");
    match plugin
        .patch_cluster_class(&release(), &[object_of_size(4 << 20)])
        .result
    {
        Err(PluginError::MemoryLimit { limit, .. }) => assert_eq!(limit, 2 << 20),
        other => panic!("expected MemoryLimit, got {other:?}"),
    }
}

#[test]
fn ungranted_imports_load_and_each_call_gets_the_typed_denial() {
    let host = host();
    // misbehaving imports `http` and `state`; nothing is granted.
    let plugin = host
        .load(&plugin_bytes("misbehaving"), settings("misbehaving"))
        .expect("loads without grants");
    match plugin.validate_config("later:x").result {
        Ok(Err(GuestError(WitError::Failed(message)))) => {
            assert!(message.contains("QuotaExceeded(0)"), "{message}")
        }
        other => panic!("state without a grant: expected quota-exceeded(0), got {other:?}"),
    }
    let mut state_only = settings("misbehaving");
    state_only.grants.state = true;
    let plugin = host.load(&plugin_bytes("misbehaving"), state_only).expect("load");
    match plugin.validate_config("forbidden-http").result {
        Ok(Err(GuestError(WitError::Denied(message)))) => {
            assert!(message.contains("spec.capabilities.httpHosts"), "{message}")
        }
        other => panic!("http without a grant: expected denied, got {other:?}"),
    }
}

#[test]
fn bad_bytes_are_a_bad_component_not_a_crash() {
    let host = host();
    let err = host
        .load(b"\0asm\x0d\0\x01\0garbage", settings("garbage"))
        .expect_err("must refuse");
    assert!(matches!(err, PluginError::BadComponent { .. }), "{err:?}");
    let err = host
        .load(b"definitely not wasm", settings("text"))
        .expect_err("must refuse");
    assert!(err.to_string().contains("plugin text@sha256:"), "{err}");
    noop_still_works(&host);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_calls_across_plugins() {
    let host = host();
    let noop = host
        .load(&plugin_bytes("noop"), settings("noop"))
        .expect("load noop");
    let misbehaving = host
        .load(&plugin_bytes("misbehaving"), misbehaving_settings())
        .expect("load");
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..100 {
        let noop = noop.clone();
        let misbehaving = misbehaving.clone();
        calls.spawn(async move {
            let object = format!(r#"{{"call":{i}}}"#);
            match i % 4 {
                0 => {
                    let called = misbehaving
                        .offload("validate-config", |p| p.validate_config("trap"))
                        .await;
                    assert!(
                        matches!(called.result, Err(PluginError::Trap { .. })),
                        "{:?}",
                        called.result
                    );
                }
                1 => {
                    let called = misbehaving
                        .offload("validate-config", |p| p.validate_config("ok"))
                        .await;
                    assert!(matches!(called.result, Ok(Ok(()))), "{:?}", called.result);
                }
                _ => {
                    let objects = vec![object.clone()];
                    let called = noop
                        .offload("patch", move |p| p.patch_cluster_class(&release(), &objects))
                        .await;
                    assert_eq!(called.result.expect("call").expect("ok"), vec![object]);
                }
            }
        });
    }
    while let Some(joined) = calls.join_next().await {
        joined.expect("call task");
    }
    assert_eq!(noop.stats().calls, 50);
    assert_eq!(noop.stats().failures, 0);
    assert_eq!(misbehaving.stats().calls, 50);
    assert_eq!(misbehaving.stats().failures, 25);
}

/// A `MakeWriter` that keeps everything logged in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Runs `f` with the host's log captured; returns its result and the log text.
fn with_captured_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8(captured.0.lock().expect("log").clone()).expect("utf8");
    (result, log)
}

#[test]
fn plugin_stdout_and_stderr_go_to_the_host_log_tagged_with_the_plugin() {
    let ((), log) = with_captured_log(|| {
        let host = host();
        let plugin = host
            .load(&plugin_bytes("misbehaving"), misbehaving_settings())
            .expect("load");
        assert!(matches!(plugin.validate_config("print").result, Ok(Ok(()))));
    });
    let stdout_line = log
        .lines()
        .find(|l| l.contains("hello on stdout"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        stdout_line.contains("plugin=\"misbehaving@sha256:"),
        "{stdout_line}"
    );
    assert!(stdout_line.contains("stream=\"stdout\""), "{stdout_line}");
    assert!(
        log.lines()
            .any(|l| l.contains("hello on stderr") && l.contains("stream=\"stderr\"")),
        "{log}"
    );
}

#[test]
fn a_plugin_flooding_the_log_writes_one_call_budget_and_ends_at_its_deadline() {
    let (result, log) = with_captured_log(|| {
        let limits = Limits {
            fuel: u64::MAX / 2,
            deadline_ms: 300,
            ..Limits::default()
        };
        misbehave(&host(), "log-flood", limits)
    });
    assert!(
        matches!(result, Err(PluginError::Deadline { deadline_ms: 300, .. })),
        "{result:?}"
    );
    let flood: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("log-flood log-flood"))
        .collect();
    // The budget of one call (docs/security.md): 32 KiB of messages and fields; each line also carries a
    // timestamp, level, target and the plugin's name and digest.
    let bytes: usize = flood.iter().map(|l| l.len()).sum();
    assert!(
        !flood.is_empty() && bytes <= (32 << 10) + flood.len() * 256,
        "{} lines, {bytes} bytes",
        flood.len()
    );
    let notes: Vec<&str> = log.lines().filter(|l| l.contains("were dropped")).collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("misbehaving@sha256:"), "{}", notes[0]);
}

#[test]
fn compiled_code_is_cached_on_disk_and_a_corrupt_cache_is_recompiled() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = || EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
        ..EngineConfig::default()
    };
    let bytes = plugin_bytes("noop");
    let first = PluginHost::new(config()).expect("engine");
    first.load(&bytes, settings("noop")).expect("load");
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .expect("cache dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let digest = stackhost::plugin::digest_of(&bytes);
    let name = cached[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(name.starts_with(digest.trim_start_matches("sha256:")), "{name}");

    // A restarted host loads the cached code and it works.
    let second = PluginHost::new(config()).expect("engine");
    let plugin = second.load(&bytes, settings("noop")).expect("load from cache");
    assert!(plugin
        .patch_cluster_class(&release(), &["{}".into()])
        .result
        .is_ok());

    // A corrupt cache entry is detected (checksum) and recompiled instead of executed.
    let mut code = std::fs::read(&cached[0]).expect("read");
    let middle = code.len() / 2;
    code[middle] ^= 0xff;
    std::fs::write(&cached[0], &code).expect("corrupt");
    let third = PluginHost::new(config()).expect("engine");
    let plugin = third
        .load(&bytes, settings("noop"))
        .expect("load despite corrupt cache");
    assert!(plugin
        .patch_cluster_class(&release(), &["{}".into()])
        .result
        .is_ok());
    assert_ne!(
        std::fs::read(&cached[0]).expect("read"),
        code,
        "the corrupt entry was rewritten"
    );
}

// Python (componentize-py) and JavaScript (componentize-js) components: each imports the whole world,
// the Python one also `wasi:sockets`. They load with nothing granted, and the sandbox holds.

/// One host for the Python and JavaScript components, its compiled code cached under the target
/// directory: each component compiles once (tens of seconds), not once per test or run.
fn pyjs_host() -> &'static PluginHost {
    static HOST: std::sync::OnceLock<PluginHost> = std::sync::OnceLock::new();
    HOST.get_or_init(|| {
        PluginHost::new(EngineConfig {
            max_instances: 8,
            cache_dir: Some(std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("plugin-cache")),
            ..EngineConfig::default()
        })
        .expect("engine")
    })
}

/// What `validate-config(behaviour)` of misbehaving-py/-js reported (its `failed` text), or the failure.
fn probe(name: &str, behaviour: &str, limits: Limits) -> Result<String, PluginError> {
    let mut settings = settings(name);
    settings.limits = limits;
    let plugin = pyjs_host().load(&plugin_bytes(name), settings).expect("load");
    match plugin.validate_config(behaviour).result? {
        Ok(()) => Ok("ok".into()),
        Err(GuestError(WitError::Failed(text))) => Ok(text),
        Err(other) => panic!("{name} {behaviour}: unexpected guest error {other:?}"),
    }
}

#[test]
fn python_and_javascript_plugins_get_typed_denials_for_what_is_not_granted() {
    for name in ["misbehaving-py", "misbehaving-js"] {
        let http = probe(name, "http", Limits::default()).expect("call");
        assert!(
            http.contains("enied") && http.contains("spec.capabilities.httpHosts"),
            "{name}: {http}"
        );
        let state = probe(name, "state", Limits::default()).expect("call");
        assert!(
            state.contains("uota") && state.ends_with(": 0"),
            "{name}: {state}"
        );
    }
}

#[test]
fn python_sockets_files_and_environment_are_denied() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let connect = probe("misbehaving-py", &format!("connect:{port}"), Limits::default()).expect("call");
    assert!(connect.starts_with("connect: PermissionError"), "{connect}");
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "no connection reached the listener"
    );
    let lookup = probe("misbehaving-py", "lookup", Limits::default()).expect("call");
    assert!(
        lookup.starts_with("lookup: ") && !lookup.contains("resolved"),
        "{lookup}"
    );
    let file = probe("misbehaving-py", "file", Limits::default()).expect("call");
    assert!(file.starts_with("file: "), "no file is readable: {file}");
    assert_eq!(
        probe("misbehaving-py", "env", Limits::default()).expect("call"),
        "env: {}"
    );
}

#[test]
fn python_and_javascript_plugins_are_held_by_fuel_memory_deadline_and_fresh_instances() {
    for name in ["misbehaving-py", "misbehaving-js"] {
        let fuel = Limits {
            fuel: 200_000_000,
            ..Limits::default()
        };
        match probe(name, "loop", fuel) {
            Err(PluginError::OutOfFuel { limit, .. }) => assert_eq!(limit, 200_000_000),
            other => panic!("{name} loop: expected OutOfFuel, got {other:?}"),
        }
        let memory = Limits {
            memory_bytes: 48 << 20,
            ..Limits::default()
        };
        match probe(name, "alloc", memory) {
            Err(PluginError::MemoryLimit { limit, .. }) => assert_eq!(limit, 48 << 20),
            other => panic!("{name} alloc: expected MemoryLimit, got {other:?}"),
        }
        let deadline = Limits {
            fuel: u64::MAX / 2,
            deadline_ms: 300,
            ..Limits::default()
        };
        match probe(name, "loop", deadline) {
            Err(PluginError::Deadline { deadline_ms, .. }) => assert_eq!(deadline_ms, 300),
            other => panic!("{name} loop: expected Deadline, got {other:?}"),
        }
        let plugin = pyjs_host()
            .load(&plugin_bytes(name), settings(name))
            .expect("load");
        for _ in 0..3 {
            match plugin.validate_config("count").result {
                Ok(Err(GuestError(WitError::Failed(m)))) => {
                    assert_eq!(m, "calls seen by this instance: 1", "{name}")
                }
                other => panic!("{name} count: {other:?}"),
            }
        }
    }
}

#[test]
fn a_background_compile_returns_at_once_and_the_load_then_finds_the_code() {
    use stackhost::plugin::Compilation;
    let host = host();
    let bytes = std::sync::Arc::new(plugin_bytes("noop"));
    let digest = stackhost::plugin::digest_of(&bytes);
    // Nothing compiled yet: the call starts a thread and says so instead of compiling.
    assert!(matches!(
        host.compile_in_background(&digest, bytes.clone()),
        Compilation::Running { .. }
    ));
    let mut polls = 0;
    while host.compile_in_background(&digest, bytes.clone()) != Compilation::Done {
        polls += 1;
        assert!(polls < 600, "noop compiles in well under a minute");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let plugin = host.load(&bytes, settings("noop")).expect("load");
    assert!(plugin.info().result.is_ok());
}
