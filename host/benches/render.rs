//! Rendering and release-loading speed: the real Helm SDK (libhelm_c.so) on the sample release.
//! Run: `cargo bench -p stackhost --bench render`.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use stackhost::release::{ReleaseAssets, ReleaseName};
use stackhost::render::{HelmLibRenderer, RenderRequest, Renderer};

fn bench(c: &mut Criterion) {
    let tag = "docker-ferrol-1-32-v1";
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/releases")
        .join(tag);
    let assets = ReleaseAssets::load(&dir, tag).expect("fixture release");
    let helm = HelmLibRenderer::discover().unwrap_or_else(|e| panic!("{e}"));
    let req = RenderRequest::cluster_class(&assets, "docker-ferrol-1-32", "cluster");
    c.bench_function("render cluster-class chart (libhelm_c)", |b| {
        b.iter(|| helm.render(&req).expect("render"))
    });
    c.bench_function("load and validate release directory", |b| {
        b.iter(|| ReleaseAssets::load(&dir, tag).expect("load"))
    });
    c.bench_function("parse release tag", |b| {
        b.iter(|| ReleaseName::parse_tag("openstack-scs-1-30-v0-sha-lvlvyfw").expect("tag"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
