//! Same as helm_signals.rs, in the other order: wasmtime installs its trap handlers before the Go
//! runtime is loaded (the Go runtime then chains to them for faults outside Go code).
//! The Helm SDK is a Go c-shared library with its own runtime, threads and signal handlers. These tests
//! run in their own process (one integration-test binary) and check, with the library loaded and used,
//! that tokio still receives SIGTERM/SIGINT for graceful shutdown and that wasmtime traps stay
//! ordinary errors (toolchain.md §3).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use stackhost::release::ReleaseAssets;
use stackhost::render::{HelmLibRenderer, RenderRequest, Renderer};

fn render_once() -> usize {
    let tag = "docker-ferrol-1-32-v1";
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/releases")
        .join(tag);
    let assets = ReleaseAssets::load(&dir, tag).expect("fixture release");
    let helm = HelmLibRenderer::discover().unwrap_or_else(|e| panic!("{e}"));
    let objs: Vec<Value> = helm
        .render(&RenderRequest::cluster_class(
            &assets,
            "docker-ferrol-1-32",
            "cluster",
        ))
        .expect("render");
    objs.len()
}

fn kill_self(signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// A module whose export loads far outside its one page of memory: an out-of-bounds trap.
const TRAPPING_WASM: &[u8] = &[
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
    0x01, 0x05, 0x01, 0x60, 0x00, 0x01, 0x7f, // type: () -> i32
    0x03, 0x02, 0x01, 0x00, // function 0 has type 0
    0x05, 0x03, 0x01, 0x00, 0x01, // memory: min 1 page
    0x07, 0x07, 0x01, 0x03, b'o', b'o', b'b', 0x00, 0x00, // export "oob" = func 0
    0x0a, 0x0b, 0x01, 0x09, 0x00, 0x41, 0x80, 0x80, 0x08, 0x28, 0x02, 0x00,
    0x0b, // i32.load (i32.const 0x20000)
];

fn trap_three_times(engine: &wasmtime::Engine) {
    let module = wasmtime::Module::new(engine, TRAPPING_WASM).expect("module");
    let mut store = wasmtime::Store::new(engine, ());
    let instance = wasmtime::Instance::new(&mut store, &module, &[]).expect("instance");
    let oob = instance
        .get_typed_func::<(), i32>(&mut store, "oob")
        .expect("export");
    for _ in 0..3 {
        let err = oob.call(&mut store, ()).expect_err("must trap");
        assert_eq!(
            err.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::MemoryOutOfBounds),
            "{err:?}"
        );
    }
}

#[test]
fn wasmtime_first_then_the_go_runtime() {
    // Default config: signals-based traps (a guard-page fault becomes a trap via SIGSEGV).
    let engine = wasmtime::Engine::default();
    trap_three_times(&engine);
    assert_eq!(render_once(), 6);
    trap_three_times(&engine);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut sig =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("handler");
        kill_self("-TERM");
        let got = tokio::time::timeout(Duration::from_secs(30), sig.recv()).await;
        assert_eq!(
            got,
            Ok(Some(())),
            "tokio did not receive SIGTERM with libhelm_c loaded"
        );
    });
    assert_eq!(render_once(), 6);
}
