//! An OpenStack cluster stack in the sandbox, for the controller tests and the bench: release
//! `openstack-scs-1-30-v<N>` built from tests/fixtures/openstack-stack with node images of the test's
//! choosing, put with plugins/dist/openstack.wasm into an OCI image layout, and the objects a user
//! applies (Secret with `clouds.yaml`, ProviderPlugin, ClusterStack).
//!
//! ```ignore
//! let release = write_release(dir, 1, &control_plane, &worker)?;    // a release directory
//! write_layout(&layout_dir, &[release])?;                            // plugin + releases
//! let sandbox = start(&layout_dir, cache).await?;                    // emulator, CRDs, controllers
//! apply(&sandbox.client, &clouds_yaml, &hosts, config, &["v1"]).await?;
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use stackhost::api::{ClusterStack, ClusterStackRelease, ProviderPlugin};
use stackhost::controller::ControllerArgs;
use stackhost::oci::layout::{add_plugin, add_release, Layout};
use stackhost::oci::registry::parse_reference;
use stackhost::sandbox::Sandbox;

pub const NS: &str = "default";
/// The plugin's reference inside the layout.
pub const PLUGIN_REF: &str = "stackhost.test/plugins/openstack:0.1.0";
/// The release repository inside the layout.
pub const RELEASES: &str = "stackhost.test/kaas/cluster-stacks";
/// The Secret with `clouds.yaml` (the plugin's default `secret`).
pub const SECRET: &str = "openstack";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openstack-stack")
}

/// The release tag of version `v<version>`.
pub fn tag(version: u32) -> String {
    format!("openstack-scs-1-30-v{version}")
}

/// A node image of the release: its Glance name and the URL Glance imports it from.
#[derive(Debug, Clone)]
pub struct Image {
    pub name: String,
    pub url: String,
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// `archive`: a chart archive with the single top directory `top` holding `dir`'s files.
fn pack_chart(dir: &Path, top: &str, archive: &Path) -> anyhow::Result<()> {
    let file = std::fs::File::create(archive).with_context(|| format!("creating {}", archive.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.mode(tar::HeaderMode::Deterministic);
    tar.append_dir_all(top, dir)?;
    tar.into_inner()?.finish()?;
    Ok(())
}

/// Writes release `openstack-scs-1-30-v<version>` into `dir/<tag>/`: metadata, the cluster-class chart
/// whose machine templates name the two node images, the addon chart, and `node-images.yaml` in the
/// upstream OpenStack schema (`openStackNodeImages` with `url` and `createOpts`).
pub fn write_release(
    dir: &Path,
    version: u32,
    control_plane: &Image,
    worker: &Image,
) -> anyhow::Result<PathBuf> {
    write_release_with(dir, version, control_plane, worker, true)
}

/// [`write_release`], with or without `node-images.yaml`.
pub fn write_release_with(
    dir: &Path,
    version: u32,
    control_plane: &Image,
    worker: &Image,
    node_images_file: bool,
) -> anyhow::Result<PathBuf> {
    let src = fixture();
    let tag = tag(version);
    let out = dir.join(&tag);
    std::fs::create_dir_all(&out)?;
    let v = format!("v{version}");
    let metadata = std::fs::read_to_string(src.join("metadata.yaml"))?
        .replace("clusterStack: v1", &format!("clusterStack: {v}"));
    std::fs::write(out.join("metadata.yaml"), metadata)?;
    std::fs::copy(
        src.join("cluster-addon-values.yaml"),
        out.join("cluster-addon-values.yaml"),
    )?;
    let entries: Vec<Value> = [control_plane, worker]
        .iter()
        .map(|image| {
            json!({
                "url": image.url,
                "createOpts": {
                    "name": image.name,
                    "disk_format": "qcow2",
                    "container_format": "bare",
                    "min_disk": 1,
                    "tags": ["capi", "v1.30.9"],
                    "properties": {"os_distro": "ubuntu", "os_version": "22.04"},
                }
            })
        })
        .collect();
    let node_images = json!({
        "apiVersion": "openstack.infrastructure.clusterstack.x-k8s.io/v1alpha1",
        "openStackNodeImages": entries,
    });
    if node_images_file {
        std::fs::write(out.join("node-images.yaml"), serde_yaml::to_string(&node_images)?)?;
    }

    let stage = tempfile::tempdir()?;
    let class = stage.path().join("cluster-class");
    copy_dir(&src.join("cluster-class"), &class)?;
    let chart =
        std::fs::read_to_string(class.join("Chart.yaml"))?.replace("version: v1", &format!("version: {v}"));
    std::fs::write(class.join("Chart.yaml"), chart)?;
    std::fs::write(
        class.join("values.yaml"),
        serde_yaml::to_string(&json!({
            "images": {"controlPlane": control_plane.name, "worker": worker.name},
            "flavors": {"controlPlane": "SCS-4V-8", "worker": "SCS-2V-4"},
        }))?,
    )?;
    pack_chart(
        &class,
        "openstack-scs-1-30-cluster-class",
        &out.join(format!("openstack-scs-1-30-cluster-class-{v}.tgz")),
    )?;
    pack_chart(
        &src.join("cluster-addon"),
        "openstack-scs-1-30-cluster-addon",
        &out.join("openstack-scs-1-30-cluster-addon-v1.tgz"),
    )?;
    Ok(out)
}

/// The node image of a release of the current shape (tests/fixtures/openstack-orc-stack): the ORC
/// `Image` object's name, the Glance name, the download URL and its sha256.
#[derive(Debug, Clone)]
pub struct OrcImage {
    pub object: String,
    pub name: String,
    pub url: String,
    pub sha256: String,
}

fn orc_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/openstack-orc-stack")
}

/// Writes release `openstack-scs-1-30-v<version>` of the current shape into `dir/<tag>/`: no
/// `node-images.yaml`, a cluster-class chart rendering the ORC `Image` and machine templates that
/// select it (`imageRef`, `filter.name`), `clusteraddon.yaml` and the addon archive with one folder per
/// stage (CCM, Cinder CSI).
pub fn write_orc_release(dir: &Path, version: u32, image: &OrcImage) -> anyhow::Result<PathBuf> {
    let src = orc_fixture();
    let tag = tag(version);
    let out = dir.join(&tag);
    std::fs::create_dir_all(&out)?;
    let v = format!("v{version}");
    let metadata = std::fs::read_to_string(src.join("metadata.yaml"))?
        .replace("clusterStack: v1", &format!("clusterStack: {v}"));
    std::fs::write(out.join("metadata.yaml"), metadata)?;
    std::fs::copy(src.join("clusteraddon.yaml"), out.join("clusteraddon.yaml"))?;

    let stage = tempfile::tempdir()?;
    let class = stage.path().join("cluster-class");
    copy_dir(&src.join("cluster-class"), &class)?;
    let chart =
        std::fs::read_to_string(class.join("Chart.yaml"))?.replace("version: v1", &format!("version: {v}"));
    std::fs::write(class.join("Chart.yaml"), chart)?;
    std::fs::write(
        class.join("values.yaml"),
        serde_yaml::to_string(&json!({
            "image": {"object": image.object, "name": image.name, "url": image.url, "sha256": image.sha256},
            "identityRef": {"name": SECRET, "cloudName": "openstack"},
            "flavors": {"controlPlane": "SCS-4V-8", "worker": "SCS-2V-4"},
        }))?,
    )?;
    pack_chart(
        &class,
        "openstack-scs-1-30-cluster-class",
        &out.join(format!("openstack-scs-1-30-cluster-class-{v}.tgz")),
    )?;
    // The addon archive: one top-level folder per stage.
    let file = std::fs::File::create(out.join(format!("openstack-scs-1-30-cluster-addon-{v}.tgz")))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::fast()));
    tar.mode(tar::HeaderMode::Deterministic);
    for stage in ["openstack-cinder-csi", "openstack-cloud-controller-manager"] {
        tar.append_dir_all(stage, src.join("cluster-addon").join(stage))?;
    }
    tar.into_inner()?.finish()?;
    Ok(out)
}

/// The real CAPO and ORC CRDs this stack needs (tests/fixtures/real-crds, unchanged upstream files).
pub fn install_real_crds(sandbox: &Sandbox) -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-crds");
    for file in [
        "capo/infrastructure.cluster.x-k8s.io_openstackclustertemplates.yaml",
        "capo/infrastructure.cluster.x-k8s.io_openstackmachinetemplates.yaml",
        "orc/openstack.k-orc.cloud_images.yaml",
    ] {
        let path = dir.join(file);
        sandbox
            .cluster
            .apply_yaml(&std::fs::read_to_string(&path)?, "stackhost-tests")
            .with_context(|| format!("installing {}", path.display()))?;
    }
    Ok(())
}

/// An OCI image layout in `dir` with plugins/dist/openstack.wasm and the given release directories.
pub fn write_layout(dir: &Path, releases: &[PathBuf]) -> anyhow::Result<()> {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/openstack.wasm");
    let component = std::fs::read(&wasm)
        .with_context(|| format!("{}: build the plugins first with `plugins/build`", wasm.display()))?;
    let mut layout = Layout::create(dir)?;
    add_plugin(
        &mut layout,
        &parse_reference(PLUGIN_REF, &[])?,
        "openstack.wasm",
        &component,
    )?;
    for release in releases {
        let tag = release
            .file_name()
            .and_then(|n| n.to_str())
            .context("release directory name")?;
        add_release(
            &mut layout,
            &parse_reference(&format!("{RELEASES}:{tag}"), &[])?,
            release,
        )?;
    }
    Ok(())
}

/// Controller options: plugins and releases from the layout, fast retries.
pub fn controller_args(layout: &Path, cache: &Path) -> ControllerArgs {
    ControllerArgs {
        oci_layout: Some(layout.to_path_buf()),
        release_source: Some(format!("oci://{RELEASES}")),
        cache_dir: Some(cache.to_path_buf()),
        plugin_refresh_interval: Duration::from_secs(30),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        render_program: Some(env!("CARGO_BIN_EXE_stackhost").into()),
        ..ControllerArgs::default()
    }
}

/// CAPO's webhook rule for OpenStackMachineTemplates as a ValidatingAdmissionPolicy: the template's spec
/// never changes ("Please create a new resource instead").
const CAPO_TEMPLATES_IMMUTABLE: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/capo-immutable-templates.yaml"
));

/// The sandbox (API emulator, CRDs including the two CAPO kinds of the stack, CAPO's immutability rule,
/// controllers).
pub async fn start(layout: &Path, cache: &Path) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::start(controller_args(layout, cache)).await?;
    sandbox
        .cluster
        .apply_yaml(
            &std::fs::read_to_string(fixture().join("crds.yaml"))?,
            "stackhost-tests",
        )
        .context("installing the OpenStack template CRDs")?;
    immutable_templates(&sandbox)?;
    Ok(sandbox)
}

/// The sandbox with the real CAPO and ORC CRDs instead of the hand-made template CRDs.
pub async fn start_with_real_crds(layout: &Path, cache: &Path) -> anyhow::Result<Sandbox> {
    let sandbox = Sandbox::start(controller_args(layout, cache)).await?;
    install_real_crds(&sandbox)?;
    immutable_templates(&sandbox)?;
    Ok(sandbox)
}

fn immutable_templates(sandbox: &Sandbox) -> anyhow::Result<()> {
    sandbox
        .cluster
        .apply_yaml(CAPO_TEMPLATES_IMMUTABLE, "stackhost-tests")
        .context("installing CAPO's immutability rule")?;
    Ok(())
}

/// Creates or replaces the Secret holding `clouds.yaml`.
pub async fn put_secret(client: &kube::Client, clouds_yaml: &str) -> anyhow::Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS},
        "stringData": {"clouds.yaml": clouds_yaml}
    }))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), NS);
    api.patch(
        SECRET,
        &PatchParams::apply("stackhost-tests").force(),
        &Patch::Apply(&secret),
    )
    .await?;
    Ok(())
}

/// The ProviderPlugin: http to `hosts` (Keystone and Glance), the Secret's keys, `config`.
pub fn provider_plugin(hosts: &[String], config: Value) -> ProviderPlugin {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ProviderPlugin",
        "metadata": {"name": "openstack", "namespace": NS},
        "spec": {
            "image": PLUGIN_REF,
            "verification": {"allowUnsigned": true},
            "limits": {"deadline": "60s"},
            "capabilities": {
                "httpHosts": hosts,
                "secrets": [{"name": SECRET, "keys": ["clouds.yaml", "cloudName", "cacert"]}]
            },
            "config": config
        }
    }))
    .expect("valid ProviderPlugin")
}

/// The ClusterStack following the given versions of openstack/scs for Kubernetes 1.30.
pub fn cluster_stack(versions: &[&str]) -> ClusterStack {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ClusterStack",
        "metadata": {"name": "scs", "namespace": NS},
        "spec": {
            "provider": "openstack", "name": "scs", "kubernetesVersion": "1.30",
            "autoSubscribe": false, "versions": versions
        }
    }))
    .expect("valid ClusterStack")
}

/// What a user applies: the Secret, the ProviderPlugin, the ClusterStack.
pub async fn apply(
    client: &kube::Client,
    clouds_yaml: &str,
    hosts: &[String],
    config: Value,
    versions: &[&str],
) -> anyhow::Result<()> {
    put_secret(client, clouds_yaml).await?;
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    pps.create(&Default::default(), &provider_plugin(hosts, config))
        .await?;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(&Default::default(), &cluster_stack(versions))
        .await?;
    Ok(())
}

/// Any namespaced API of the emulator by group, version and kind.
pub fn dynamic_api(client: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// The OpenStackMachineTemplates of the emulator.
pub fn machine_templates(client: &kube::Client) -> Api<DynamicObject> {
    dynamic_api(
        client,
        "infrastructure.cluster.x-k8s.io",
        "v1beta1",
        "OpenStackMachineTemplate",
    )
}

/// The ClusterClasses of the emulator.
pub fn cluster_classes(client: &kube::Client) -> Api<DynamicObject> {
    dynamic_api(client, "cluster.x-k8s.io", "v1beta2", "ClusterClass")
}

/// Changes an annotation of the release: the controller reconciles it again at once.
pub async fn force_reconcile(client: &kube::Client, tag: &str, value: &str) -> anyhow::Result<()> {
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    api.patch(
        tag,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {"stackhost.test/force": value}}})),
    )
    .await?;
    Ok(())
}

/// Sum of the samples of metric `name` (e.g. `stackhost_plugin_calls_total`) whose labels contain
/// every one of `labels` (e.g. `function="reconcile-node-images"`).
pub fn metric(sandbox: &Sandbox, name: &str, labels: &[&str]) -> f64 {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &sandbox.registry).is_err() {
        return 0.0;
    }
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && labels.iter().all(|s| l.contains(s)))
        .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
        .sum()
}
