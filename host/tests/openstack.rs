//! The OpenStack provider plugin (plugins/openstack) against real Keystone and Glance (Debian's
//! packages, started on 127.0.0.1 by scripts/openstack-up.sh), called through the host runtime
//! the way the controller calls it: `http` granted to Keystone and Glance only, the Secret key
//! with `clouds.yaml`, and `state`.

mod common;
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stackhost::plugin::bindings::clusterstack::provider::http::{HttpError, Request, Response};
use stackhost::plugin::capability::{HttpTransport, MemoryState, StateStore, StaticSecrets, UreqTransport};
use stackhost::plugin::types::{ClusterInfo, Error, ImageState, ImageStatus, NodeImage, ReleaseInfo};
use stackhost::plugin::{Capabilities, Grants, GuestError, Plugin, PluginHost, PluginSettings};
use support::openstack::{unique, Auth, ImageServer, OpenStack};

const SECRET_KEYS: [&str; 3] = ["openstack/clouds.yaml", "openstack/cloudName", "openstack/cacert"];

/// The real HTTP transport, recording each request (method and URL) the plugin sent.
#[derive(Default)]
struct Recording {
    inner: UreqTransport,
    sent: Mutex<Vec<String>>,
}

impl HttpTransport for Recording {
    fn send(&self, request: &Request, timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
        self.sent
            .lock()
            .expect("lock")
            .push(format!("{} {}", request.method, request.url));
        self.inner.send(request, timeout, max_body)
    }
}

impl Recording {
    fn count(&self, needle: &str) -> usize {
        self.sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| r.contains(needle))
            .count()
    }

    fn count_exact(&self, request: &str) -> usize {
        self.sent
            .lock()
            .expect("lock")
            .iter()
            .filter(|r| *r == request)
            .count()
    }
}

/// One "controller": a plugin host, the plugin loaded with its grants, and its state store.
struct Setup {
    host: PluginHost,
    plugin: Plugin,
    state: Arc<MemoryState>,
    http: Arc<Recording>,
    secrets: BTreeMap<String, Vec<u8>>,
    config: String,
    hosts: Vec<String>,
}

impl Setup {
    fn new(os: &OpenStack, auth: Auth, config: Value) -> Setup {
        Setup::with(
            os,
            os.clouds_yaml("openstack", auth, Some(&os.region)),
            config,
            vec![],
        )
    }

    fn with(os: &OpenStack, clouds_yaml: String, config: Value, extra_hosts: Vec<String>) -> Setup {
        let mut secrets = BTreeMap::new();
        secrets.insert("openstack/clouds.yaml".to_string(), clouds_yaml.into_bytes());
        let mut hosts = os.http_hosts();
        hosts.extend(extra_hosts);
        let host = common::host();
        let state = Arc::new(MemoryState::default());
        let http = Arc::new(Recording::default());
        let config = config.to_string();
        let plugin = load(&host, &config, &secrets, &hosts, state.clone(), http.clone());
        Setup {
            host,
            plugin,
            state,
            http,
            secrets,
            config,
            hosts,
        }
    }

    /// A controller restart: a new host and plugin instance with the state persisted so far.
    fn restart(&mut self) {
        self.host = common::host();
        self.state = Arc::new(MemoryState::new(self.state.snapshot(), 1 << 20));
        self.plugin = load(
            &self.host,
            &self.config,
            &self.secrets,
            &self.hosts,
            self.state.clone(),
            self.http.clone(),
        );
    }

    fn reconcile(&self, release: &ReleaseInfo, images: &[NodeImage]) -> Result<Vec<ImageStatus>, GuestError> {
        let called = self.plugin.reconcile_node_images(release, images);
        called
            .result
            .unwrap_or_else(|e| panic!("reconcile-node-images did not run: {e}"))
    }

    /// Calls `reconcile-node-images` until no image is pending (as the controller does, faster).
    fn reconcile_until_settled(&self, release: &ReleaseInfo, images: &[NodeImage]) -> Vec<ImageStatus> {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let statuses = self
                .reconcile(release, images)
                .unwrap_or_else(|e| panic!("reconcile-node-images: {e}"));
            if !statuses.iter().any(|s| matches!(s.state, ImageState::Pending(_))) {
                return statuses;
            }
            assert!(
                Instant::now() < deadline,
                "images still pending after 90 s: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }
}

fn load(
    host: &PluginHost,
    config: &str,
    secrets: &BTreeMap<String, Vec<u8>>,
    hosts: &[String],
    state: Arc<MemoryState>,
    http: Arc<Recording>,
) -> Plugin {
    let settings = PluginSettings {
        name: "openstack".to_string(),
        grants: Grants {
            http_hosts: hosts.to_vec(),
            secret_keys: SECRET_KEYS.iter().map(|k| k.to_string()).collect(),
            state: true,
        },
        capabilities: Capabilities {
            config: Arc::from(config),
            http,
            secrets: Arc::new(StaticSecrets(secrets.clone())),
            state,
            ..Capabilities::default()
        },
        ..PluginSettings::default()
    };
    host.load(&common::plugin_bytes("openstack"), settings)
        .unwrap_or_else(|e| panic!("load plugins/dist/openstack.wasm: {e}"))
}

fn release(tag: &str) -> ReleaseInfo {
    ReleaseInfo {
        tag: tag.to_string(),
        provider: "openstack".into(),
        stack_name: "scs".into(),
        kubernetes_version: "v1.30.9".into(),
        version: "v1".into(),
    }
}

fn node_image(name: &str, url: &str, properties: &[(&str, Value)]) -> NodeImage {
    NodeImage {
        name: name.to_string(),
        url: url.to_string(),
        checksum: None,
        disk_format: "qcow2".into(),
        container_format: "bare".into(),
        properties: properties
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn ready_id(status: &ImageStatus) -> String {
    match &status.state {
        ImageState::Ready(id) => id.clone(),
        other => panic!("image {} is not ready: {other:?}", status.name),
    }
}

fn failed_reason(status: &ImageStatus) -> String {
    match &status.state {
        ImageState::Failed(why) => why.clone(),
        other => panic!("image {} did not fail: {other:?}", status.name),
    }
}

#[test]
fn images_become_active_in_glance_and_repeated_calls_create_nothing() {
    let os = OpenStack::shared();
    eprintln!("Keystone + Glance started in {:.1} s", os.startup.as_secs_f64());
    let server = ImageServer::shared();
    let setup = Setup::new(os, Auth::Password, json!({"import": {"pollSeconds": 5}}));
    let (worker, control) = (unique("worker"), unique("control-plane"));
    let images = vec![
        node_image(&worker, &server.url("tiny.qcow2"), &[]),
        node_image(
            &control,
            &server.url("tiny.qcow2"),
            &[
                ("tags", json!(["capi", "v1.30.9"])),
                ("min_disk", json!(2)),
                (
                    "properties",
                    json!({"os_distro": "ubuntu", "os_version": "22.04"}),
                ),
            ],
        ),
    ];
    let rel = release(&unique("openstack-scs-1-30-v1"));

    let first = setup.reconcile(&rel, &images).expect("first call");
    for status in &first {
        let ImageState::Pending(retry) = &status.state else {
            panic!("a new image is pending first: {status:?}")
        };
        assert_eq!(retry.retry_after_seconds, 5);
        assert!(retry.message.contains("web-download"), "{}", retry.message);
    }
    let settled = setup.reconcile_until_settled(&rel, &images);
    let ids: Vec<String> = settled.iter().map(ready_id).collect();
    for (image, id) in images.iter().zip(&ids) {
        let glance = os.image(id).expect("the reported id exists in Glance");
        assert_eq!(glance["status"], "active");
        assert_eq!(glance["name"], image.name.as_str());
        assert_eq!(glance["disk_format"], "qcow2");
        assert_eq!(
            glance["owner"],
            os.project_id.as_str(),
            "created in the user's project"
        );
        assert!(glance["size"].as_u64().unwrap_or(0) > 0, "{glance}");
    }
    let control_image = os.image(&ids[1]).expect("the image exists");
    let mut tags: Vec<&str> = control_image["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    tags.sort_unstable(); // Glance keeps tags as a set
    assert_eq!(tags, ["capi", "v1.30.9"]);
    assert_eq!(control_image["min_disk"], 2);
    assert_eq!(control_image["os_distro"], "ubuntu");

    // Repeated calls, a controller restart: the same ids, nothing new in Glance.
    let again = setup.reconcile(&rel, &images).expect("repeated call");
    assert_eq!(again.iter().map(ready_id).collect::<Vec<_>>(), ids);
    let mut restarted = setup;
    restarted.restart();
    let after_restart = restarted.reconcile(&rel, &images).expect("after restart");
    assert_eq!(after_restart.iter().map(ready_id).collect::<Vec<_>>(), ids);
    // The token was reused across all these calls and the restart (it lives in `state`).
    assert_eq!(
        restarted.http.count("/auth/tokens"),
        1,
        "{:?}",
        restarted.http.sent.lock().expect("lock")
    );
    // Even with the state lost, the images are found by name (and tags), not created again.
    let fresh = Setup::new(os, Auth::Password, json!({}));
    let found = fresh.reconcile(&rel, &images).expect("with empty state");
    assert_eq!(found.iter().map(ready_id).collect::<Vec<_>>(), ids);
    assert_eq!(
        fresh.http.count("POST http://127.0.0.1"),
        1,
        "only the token request posts"
    );
    for image in &images {
        assert_eq!(
            os.images_named(&image.name).len(),
            1,
            "{} exists once",
            image.name
        );
    }
}

#[test]
fn application_credentials_work_like_passwords() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::ApplicationCredential, json!({}));
    let name = unique("appcred");
    let images = [node_image(&name, &ImageServer::shared().url("tiny.qcow2"), &[])];
    let settled = setup.reconcile_until_settled(&release(&unique("rel")), &images);
    let glance = os.image(&ready_id(&settled[0])).expect("the image exists");
    assert_eq!(glance["status"], "active");
    assert_eq!(glance["owner"], os.project_id.as_str());
}

#[test]
fn a_wrong_password_is_a_clear_failure() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::WrongPassword, json!({}));
    let images = [node_image(
        &unique("never"),
        &ImageServer::shared().url("tiny.qcow2"),
        &[],
    )];
    let Err(GuestError(Error::Failed(why))) = setup.reconcile(&release("r"), &images) else {
        panic!("a wrong password must fail the call")
    };
    assert!(why.contains("rejected the credentials"), "{why}");
    assert!(why.contains("HTTP 401"), "{why}");
    assert!(why.contains("\"stackhost\""), "names the user: {why}");
    assert!(why.contains(&os.keystone), "names Keystone: {why}");
    assert!(
        why.contains("Secret \"openstack\""),
        "says where to fix it: {why}"
    );
}

#[test]
fn glance_down_is_not_ready_and_names_the_endpoint() {
    let os = OpenStack::shared();
    // A region whose image endpoint is a port nothing listens on: Keystone answers, Glance does not.
    let dead = format!("127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    });
    let region = unique("RegionDown");
    os.add_region(&region, &format!("http://{dead}"));
    let clouds = os.clouds_yaml("openstack", Auth::Password, Some(&region));
    let setup = Setup::with(os, clouds.clone(), json!({}), vec![dead.clone()]);
    let images = [node_image(
        &unique("down"),
        &ImageServer::shared().url("tiny.qcow2"),
        &[],
    )];
    let Err(GuestError(Error::NotReady(retry))) = setup.reconcile(&release("r"), &images) else {
        panic!("an unreachable Glance must be not-ready")
    };
    assert!(retry.message.contains("not reachable"), "{}", retry.message);
    assert!(
        retry.message.contains(&dead),
        "names the endpoint: {}",
        retry.message
    );
    assert!(
        retry.message.contains(&region),
        "names the region: {}",
        retry.message
    );
    assert!(retry.retry_after_seconds > 0);

    // The same cloud without the Glance host granted: denied, and the message says what to grant.
    let ungranted = Setup::with(os, clouds, json!({}), vec![]);
    let Err(GuestError(Error::Denied(why))) = ungranted.reconcile(&release("r"), &images) else {
        panic!("an ungranted Glance host must be denied")
    };
    let port = dead.rsplit(':').next().expect("port");
    assert!(why.contains(&format!("(port {port})")), "names the host: {why}");
    assert!(why.contains("spec.capabilities.httpHosts"), "{why}");

    // A region that does not exist at all.
    let nowhere = Setup::new(os, Auth::Password, json!({"region": "Atlantis"}));
    let Err(GuestError(Error::Failed(why))) = nowhere.reconcile(&release("r"), &images) else {
        panic!("an unknown region must fail")
    };
    assert!(
        why.contains("region Atlantis") && why.contains(&os.glance),
        "{why}"
    );
}

#[test]
fn killed_and_deactivated_images_fail_with_their_status() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::Password, json!({}));
    let url = ImageServer::shared().url("tiny.qcow2");
    let images = vec![
        node_image(&unique("killed"), &url, &[]),
        node_image(&unique("deact"), &url, &[]),
    ];
    let rel = release(&unique("rel"));
    let ids: Vec<String> = setup
        .reconcile_until_settled(&rel, &images)
        .iter()
        .map(ready_id)
        .collect();
    os.set_status_in_database(&ids[0], "killed");
    os.deactivate(&ids[1]);
    let statuses = setup.reconcile(&rel, &images).expect("call");
    let killed = failed_reason(&statuses[0]);
    assert!(
        killed.contains("status killed") && killed.contains(&ids[0]),
        "{killed}"
    );
    let deactivated = failed_reason(&statuses[1]);
    assert!(
        deactivated.contains("status deactivated") && deactivated.contains(&ids[1]),
        "{deactivated}"
    );
    // Nothing was created to replace them.
    let creates = format!("POST {}/v2/images", os.glance);
    assert_eq!(
        setup.http.count_exact(&creates),
        2,
        "{:?}",
        setup.http.sent.lock().expect("lock")
    );
    assert_eq!(os.image(&ids[0]).expect("the image exists")["status"], "killed");
}

#[test]
fn an_import_over_the_timeout_fails() {
    let os = OpenStack::shared();
    let server = ImageServer::shared();
    let setup = Setup::new(
        os,
        Auth::Password,
        json!({"import": {"timeoutSeconds": 2, "pollSeconds": 1}}),
    );
    // The image server never answers this URL: Glance's download hangs, the image stays importing.
    let images = [node_image(&unique("slow"), &server.url("stall/slow.qcow2"), &[])];
    let rel = release(&unique("rel"));
    let first = setup.reconcile(&rel, &images).expect("first call");
    assert!(matches!(first[0].state, ImageState::Pending(_)), "{first:?}");
    let started = Instant::now();
    let why = loop {
        let statuses = setup.reconcile(&rel, &images).expect("call");
        match &statuses[0].state {
            ImageState::Pending(_) => {}
            ImageState::Failed(why) => break why.clone(),
            ImageState::Ready(id) => panic!("a stalled import became ready: {id}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no timeout after 30 s"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "failed before the timeout: {why}"
    );
    assert!(why.contains("import timeout of 2 s"), "{why}");
    assert!(why.contains("web-download"), "{why}");
    assert_eq!(server.hits("/stall/slow.qcow2"), 1, "Glance fetched the URL once");
}

#[test]
fn a_failed_download_reports_the_import_failure() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::Password, json!({"import": {"pollSeconds": 1}}));
    let images = [node_image(
        &unique("missing"),
        &ImageServer::shared().url("no-such.qcow2"),
        &[],
    )];
    let statuses = setup.reconcile_until_settled(&release(&unique("rel")), &images);
    let why = failed_reason(&statuses[0]);
    assert!(
        why.contains("web-download import") && why.contains("failed"),
        "{why}"
    );
}

#[test]
fn several_images_with_the_name_are_an_error_naming_them() {
    let os = OpenStack::shared();
    let name = unique("twice");
    let a = os.create_image(
        json!({"name": name, "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}),
    );
    let b = os.create_image(
        json!({"name": name, "disk_format": "qcow2", "container_format": "bare", "visibility": "public"}),
    );
    let setup = Setup::new(os, Auth::Password, json!({}));
    let statuses = setup
        .reconcile(
            &release("r"),
            &[node_image(&name, &ImageServer::shared().url("tiny.qcow2"), &[])],
        )
        .expect("call");
    let why = failed_reason(&statuses[0]);
    assert!(
        why.contains("too many images") && why.contains(&a) && why.contains(&b),
        "{why}"
    );
    assert_eq!(os.images_named(&name).len(), 2, "nothing created");
}

#[test]
fn glance_direct_uploads_through_the_plugin() {
    let os = OpenStack::shared();
    let server = ImageServer::shared();
    server.qcow2("direct.qcow2", "8M");
    let sha256 = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            std::fs::read(server.path("direct.qcow2")).expect("image file"),
        ))
    };
    let clouds = os.clouds_yaml("openstack", Auth::Password, Some(&os.region));
    let setup = Setup::with(
        os,
        clouds.clone(),
        json!({"import": {"method": "glance-direct"}}),
        vec![server.host()],
    );
    let mut image = node_image(&unique("direct"), &server.url("direct.qcow2"), &[]);
    image.checksum = Some(format!("sha256:{sha256}"));
    let before = server.hits("/direct.qcow2");
    let statuses = setup.reconcile_until_settled(&release(&unique("rel")), std::slice::from_ref(&image));
    let glance = os.image(&ready_id(&statuses[0])).expect("the image exists");
    assert_eq!(glance["status"], "active");
    assert_eq!(
        glance["size"].as_u64().expect("size"),
        std::fs::metadata(server.path("direct.qcow2"))
            .expect("image file")
            .len()
    );
    assert_eq!(
        server.hits("/direct.qcow2") - before,
        1,
        "the plugin downloaded it once"
    );
    assert!(
        setup.http.count("/stage") == 1,
        "{:?}",
        setup.http.sent.lock().expect("lock")
    );

    // A wrong checksum is refused before anything is uploaded.
    image.name = unique("direct-bad");
    image.checksum = Some(format!("sha256:{}", "0".repeat(64)));
    let statuses = setup
        .reconcile(&release("r"), std::slice::from_ref(&image))
        .expect("call");
    let why = failed_reason(&statuses[0]);
    assert!(why.contains(&sha256) && why.contains("the release says"), "{why}");

    // Without the image host granted, glance-direct cannot download: denied, naming the host.
    let ungranted = Setup::with(os, clouds, json!({"import": {"method": "glance-direct"}}), vec![]);
    image.name = unique("direct-denied");
    image.checksum = None;
    let Err(GuestError(Error::Denied(why))) = ungranted.reconcile(&release("r"), &[image]) else {
        panic!("the image host is not granted")
    };
    assert!(
        why.contains("glance-direct") && why.contains("127.0.0.1"),
        "{why}"
    );
}

#[test]
fn auto_import_uses_glance_direct_where_web_download_is_disabled() {
    // A Glance of its own that offers only glance-direct.
    let os = OpenStack::start(&[("GLANCE_IMPORT_METHODS", "glance-direct")]);
    let server = ImageServer::shared();
    let clouds = os.clouds_yaml("openstack", Auth::Password, Some(&os.region));
    let setup = Setup::with(&os, clouds, json!({}), vec![server.host()]);
    let images = [node_image(&unique("auto"), &server.url("tiny.qcow2"), &[])];
    let first = setup.reconcile(&release("r"), &images).expect("first call");
    let ImageState::Pending(retry) = &first[0].state else {
        panic!("{first:?}")
    };
    assert!(retry.message.contains("glance-direct"), "{}", retry.message);
    let statuses = setup.reconcile_until_settled(&release("r"), &images);
    assert_eq!(
        os.image(&ready_id(&statuses[0])).expect("the image exists")["status"],
        "active"
    );

    // This Glance goes down: the next call is not-ready and names it; nothing is forgotten.
    os.stop_glance();
    let Err(GuestError(Error::NotReady(retry))) = setup.reconcile(&release("r"), &images) else {
        panic!("a stopped Glance must be not-ready")
    };
    assert!(
        retry.message.contains("not reachable") && retry.message.contains(&os.glance),
        "{}",
        retry.message
    );
}

#[test]
fn an_expired_or_revoked_token_is_replaced() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::Password, json!({}));
    let images = [node_image(
        &unique("token"),
        &ImageServer::shared().url("tiny.qcow2"),
        &[],
    )];
    let rel = release(&unique("rel"));
    let id = ready_id(&setup.reconcile_until_settled(&rel, &images)[0]);
    assert_eq!(setup.http.count("/auth/tokens"), 1);
    let (key, cached) = setup
        .state
        .snapshot()
        .into_iter()
        .find(|(k, _)| k.starts_with("token/"))
        .expect("the token is kept in state");
    let mut token: Value = serde_json::from_str(&cached).expect("JSON");
    assert!(!cached.contains(&os.password), "the state holds no password");

    // Expired: a new token is requested before Glance is called.
    token["expiresAt"] = json!(0);
    setup.state.set(&key, &token.to_string()).expect("state");
    assert_eq!(ready_id(&setup.reconcile(&rel, &images).expect("call")[0]), id);
    assert_eq!(setup.http.count("/auth/tokens"), 2);

    // Revoked (Glance answers 401 although the token looks valid): re-authenticated once.
    let mut token: Value =
        serde_json::from_str(&setup.state.get(&key).expect("token in state")).expect("JSON");
    token["token"] = json!("gAAAA-not-a-token");
    setup.state.set(&key, &token.to_string()).expect("state");
    assert_eq!(ready_id(&setup.reconcile(&rel, &images).expect("call")[0]), id);
    assert_eq!(setup.http.count("/auth/tokens"), 3);
    let renewed: Value = serde_json::from_str(&setup.state.get(&key).expect("token in state")).expect("JSON");
    assert_ne!(renewed["token"], "gAAAA-not-a-token");
}

fn cluster_class_objects(worker: &str) -> Vec<String> {
    vec![
        // Rendered by Helm and serialised by the host: compact JSON, keys in chart order.
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterClass",
               "metadata": {"name": "scs-1-30-v1", "namespace": "cluster"},
               "spec": {"variables": [
                   {"name": "workerImage", "required": false, "schema": {"openAPIV3Schema": {"type": "string", "default": "placeholder"}}},
                   {"name": "dnsServers", "required": false, "schema": {"openAPIV3Schema": {"type": "array"}}}],
                        "workers": {"machineDeployments": [{"class": "default-worker", "template": {"infrastructure": {"ref": {
                            "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
                            "name": "scs-1-30-v1-worker"}}}}]}}})
        .to_string(),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
               "metadata": {"name": "scs-1-30-v1-worker", "namespace": "cluster"},
               "spec": {"template": {"spec": {"flavor": "SCS-2V-4", "image": {"filter": {"name": worker}},
                                               "identityRef": {"name": "openstack", "cloudName": "openstack"}}}}})
        .to_string(),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
               "metadata": {"name": "scs-1-30-v1-other"},
               "spec": {"template": {"spec": {"image": {"filter": {"name": "not-a-node-image"}}}}}})
        .to_string(),
        // Odd spacing: must come back byte-for-byte.
        "{ \"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"x\"} }".to_string(),
    ]
}

#[test]
fn patch_cluster_class_writes_the_glance_ids() {
    let os = OpenStack::shared();
    let worker = unique("patch-worker");
    let images = [node_image(&worker, &ImageServer::shared().url("tiny.qcow2"), &[])];
    let rel = release(&unique("rel"));
    let setup = Setup::new(os, Auth::Password, json!({}));
    let objects = cluster_class_objects(&worker);

    // Before the images are reconciled the ids are unknown: not ready.
    let Err(GuestError(Error::NotReady(retry))) = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
    else {
        panic!("patching before the images exist must wait")
    };
    assert!(retry.message.contains(&rel.tag), "{}", retry.message);

    let id = ready_id(&setup.reconcile_until_settled(&rel, &images)[0]);
    let patched = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("patch");
    assert_eq!(patched.len(), objects.len());
    // CAPO refuses changes of a template's spec: the patched template is a new one, named after its
    // content, and the ClusterClass points at it.
    let template: Value = serde_json::from_str(&patched[1]).expect("JSON");
    assert_eq!(template["spec"]["template"]["spec"]["image"], json!({"id": id}));
    let name = template["metadata"]["name"].as_str().expect("name");
    let suffix = name
        .strip_prefix("scs-1-30-v1-worker-")
        .expect("the rendered name and a hash");
    assert!(
        suffix.len() == 8 && suffix.chars().all(|c| c.is_ascii_hexdigit()),
        "{name}"
    );
    assert_eq!(
        patched[1],
        objects[1]
            .replace(
                &format!("{{\"filter\":{{\"name\":\"{worker}\"}}}}"),
                &format!("{{\"id\":\"{id}\"}}")
            )
            .replace("\"scs-1-30-v1-worker\"", &format!("\"{name}\"")),
        "only the image and the name changed, key order kept"
    );
    assert_eq!(
        patched[0],
        objects[0].replace("\"scs-1-30-v1-worker\"", &format!("\"{name}\"")),
        "the ClusterClass refers to the new template, nothing else changed"
    );
    let again = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("patch");
    assert_eq!(again, patched, "the same content gets the same name");
    assert_eq!(patched[2], objects[2], "other images are left alone");
    assert_eq!(
        patched[3], objects[3],
        "unrelated objects are byte-for-byte as rendered"
    );

    // Mode `variables`: the variable's default becomes the id (or the name), nothing else changes.
    let by_variable = Setup::with(
        os,
        os.clouds_yaml("openstack", Auth::Password, Some(&os.region)),
        json!({"patch": {"mode": "variables", "variables": {"workerImage": worker}}}),
        vec![],
    );
    by_variable.reconcile_until_settled(&rel, &images);
    let patched = by_variable
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("patch");
    assert_eq!(
        patched[0],
        objects[0].replace("\"default\":\"placeholder\"", &format!("\"default\":\"{id}\""))
    );
    assert_eq!(&patched[1..], &objects[1..]);

    // A variable the ClusterClass does not have is named in the error.
    let missing = Setup::with(
        os,
        os.clouds_yaml("openstack", Auth::Password, Some(&os.region)),
        json!({"patch": {"mode": "variables", "variables": {"controlPlaneImage": worker}}}),
        vec![],
    );
    missing.reconcile_until_settled(&rel, &images);
    let Err(GuestError(Error::InvalidInput(why))) = missing
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
    else {
        panic!("a missing variable is an error")
    };
    assert!(why.contains("controlPlaneImage"), "{why}");
}

#[test]
fn addon_values_carry_the_cloud_config_for_ccm_and_csi() {
    let os = OpenStack::shared();
    let cluster = ClusterInfo {
        name: "workload-1".into(),
        namespace: "cluster".into(),
        kubernetes_version: "v1.30.9".into(),
        object: "{}".into(),
    };
    let user_values = json!({"openstack-cloud-controller-manager": {"replicaCount": 2}, "metrics-server": {"enabled": true}});
    let setup = Setup::new(os, Auth::Password, json!({}));
    let out = setup
        .plugin
        .addon_values(&cluster, &user_values.to_string())
        .result
        .expect("the call ran")
        .expect("values");
    let values: Value = serde_json::from_str(&out).expect("JSON");
    let ccm = &values["openstack-cloud-controller-manager"];
    assert_eq!(ccm["replicaCount"], 2, "user values are kept");
    assert_eq!(values["metrics-server"]["enabled"], true);
    let global = &ccm["cloudConfig"]["global"];
    assert_eq!(global["auth-url"], os.keystone.as_str());
    assert_eq!(global["username"], os.user.as_str());
    assert_eq!(global["password"], os.password.as_str());
    assert_eq!(global["tenant-name"], os.project.as_str());
    assert_eq!(global["region"], os.region.as_str());
    assert_eq!(ccm["secret"]["create"], true);
    assert_eq!(ccm["cluster"]["name"], "workload-1");
    let conf = values["openstack-cinder-csi"]["secret"]["data"]["cloud.conf"]
        .as_str()
        .expect("cloud.conf in the CSI secret");
    assert!(conf.starts_with("[Global]\n"), "{conf}");
    assert!(
        conf.contains(&format!("auth-url = \"{}\"", os.keystone)),
        "{conf}"
    );
    assert!(
        conf.contains(&format!("password = \"{}\"", os.password)),
        "{conf}"
    );

    let appcred = Setup::new(os, Auth::ApplicationCredential, json!({"addons": {"csi": ""}}));
    let out = appcred
        .plugin
        .addon_values(&cluster, "{}")
        .result
        .expect("the call ran")
        .expect("values");
    let values: Value = serde_json::from_str(&out).expect("JSON");
    let global = &values["openstack-cloud-controller-manager"]["cloudConfig"]["global"];
    assert_eq!(
        global["application-credential-id"],
        os.application_credential_id.as_str()
    );
    assert_eq!(
        global["application-credential-secret"],
        os.application_credential_secret.as_str()
    );
    assert!(global.get("password").is_none());
    assert!(values.get("openstack-cinder-csi").is_none(), "csi disabled");

    let Err(GuestError(Error::InvalidInput(why))) = setup
        .plugin
        .addon_values(&cluster, "[1]")
        .result
        .expect("the call ran")
    else {
        panic!("values that are not a map are refused")
    };
    assert!(why.contains("cluster/workload-1"), "{why}");
}

#[test]
fn cleanup_deletes_unreferenced_images_only_when_enabled() {
    let os = OpenStack::shared();
    let url = ImageServer::shared().url("tiny.qcow2");
    let shared_name = unique("shared");
    let images = [node_image(&shared_name, &url, &[])];
    let (v1, v2) = (release(&unique("v1")), release(&unique("v2")));

    let setup = Setup::new(os, Auth::Password, json!({"cleanup": {"enabled": true}}));
    let id = ready_id(&setup.reconcile_until_settled(&v1, &images)[0]);
    assert_eq!(
        ready_id(&setup.reconcile_until_settled(&v2, &images)[0]),
        id,
        "shared by both releases"
    );
    setup
        .plugin
        .cleanup_node_images(&v1, &images)
        .result
        .expect("the call ran")
        .expect("cleanup v1");
    assert!(os.image(&id).is_some(), "v2 still uses it");
    setup
        .plugin
        .cleanup_node_images(&v2, &images)
        .result
        .expect("the call ran")
        .expect("cleanup v2");
    assert!(os.image(&id).is_none(), "deleted once no release uses it");

    // Disabled (the default, as upstream): the image stays.
    let keep = Setup::new(os, Auth::Password, json!({}));
    let kept_images = [node_image(&unique("kept"), &url, &[])];
    let id = ready_id(&keep.reconcile_until_settled(&v1, &kept_images)[0]);
    keep.plugin
        .cleanup_node_images(&v1, &kept_images)
        .result
        .expect("the call ran")
        .expect("cleanup");
    assert_eq!(os.image(&id).expect("the image exists")["status"], "active");
}

#[test]
fn config_and_secret_problems_name_what_to_fix() {
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::Password, json!({}));
    let info = setup.plugin.info().result.expect("the call ran");
    assert_eq!(info.provider, "openstack");
    let Err(GuestError(Error::InvalidInput(why))) = setup
        .plugin
        .validate_config(r#"{"import": {"timout": 5}}"#)
        .result
        .expect("the call ran")
    else {
        panic!("a typo is refused")
    };
    assert!(why.contains("timout"), "{why}");

    let wrong_cloud = Setup::new(os, Auth::Password, json!({"cloudName": "other"}));
    let Err(GuestError(Error::InvalidInput(why))) =
        wrong_cloud.reconcile(&release("r"), &[node_image("x", "http://x", &[])])
    else {
        panic!("an unknown cloud is refused")
    };
    assert!(
        why.contains("no cloud \"other\"") && why.contains("openstack"),
        "{why}"
    );

    // cloudName from the Secret, as upstream (YAML-decoded).
    let mut named = Setup::with(
        os,
        os.clouds_yaml("mycloud", Auth::Password, Some(&os.region)),
        json!({}),
        vec![],
    );
    named
        .secrets
        .insert("openstack/cloudName".into(), b"\"mycloud\"\n".to_vec());
    named.restart();
    let images = [node_image(
        &unique("named"),
        &ImageServer::shared().url("tiny.qcow2"),
        &[],
    )];
    assert!(matches!(
        named.reconcile(&release("r"), &images).expect("call")[0].state,
        ImageState::Pending(_)
    ));
}

#[test]
fn a_release_without_node_images_passes_straight_through() {
    // Issue 14 item 5: the plugin returned early for an empty list without recording the release,
    // so `patch-cluster-class` waited forever for node images the release does not have.
    let os = OpenStack::shared();
    let setup = Setup::new(os, Auth::Password, json!({}));
    let rel = release(&unique("no-images"));
    let statuses = setup.reconcile(&rel, &[]).expect("reconcile-node-images");
    assert!(statuses.is_empty());
    let objects = cluster_class_objects("ubuntu-capi-image-v1.30.9");
    let patched = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("a release without node images is patched at once");
    assert_eq!(patched, objects, "nothing to patch");
    assert_eq!(setup.http.count(""), 0, "no OpenStack call is needed");
}

/// An ORC `Image` as the current SCS cluster-class chart renders it, for the file `file` of the
/// shared image server; `resource.name` differs from the object's name to tell the two apart.
fn orc_image(object: &str, glance_name: &str, file: &str, sha256: &str) -> Value {
    json!({
        "apiVersion": "openstack.k-orc.cloud/v1alpha1", "kind": "Image",
        "metadata": {"name": object, "namespace": "cluster"},
        "spec": {
            "cloudCredentialsRef": {"cloudName": "openstack", "secretName": "openstack"},
            "managementPolicy": "managed",
            "resource": {
                "name": glance_name,
                "content": {"diskFormat": "qcow2",
                            "download": {"url": ImageServer::shared().url(file),
                                         "hash": {"algorithm": "sha256", "value": sha256}}},
                "properties": {"architecture": "x86_64",
                               "hardware": {"diskBus": "scsi", "qemuGuestAgent": true, "rngModel": "virtio",
                                            "scsiModel": "virtio-scsi", "vifModel": "virtio"},
                               "minDiskGB": 2, "minMemoryMB": 512,
                               "operatingSystem": {"distro": "ubuntu", "version": "22.04"}}
            }
        }
    })
}

fn sha256_of(file: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(
        std::fs::read(ImageServer::shared().path(file)).expect("image file"),
    ))
}

/// The cluster-class objects of a current stack: the ORC Image, a control-plane template that
/// references it with `imageRef`, a worker template that names its Glance image with `filter`.
fn orc_cluster_class_objects(image: &Value, glance_name: &str) -> Vec<String> {
    let object = image["metadata"]["name"].as_str().expect("name");
    vec![
        image.to_string(),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
               "metadata": {"name": "control-plane", "namespace": "cluster"},
               "spec": {"template": {"spec": {"flavor": "SCS-4V-8", "image": {"imageRef": {"name": object}}}}}})
        .to_string(),
        json!({"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
               "metadata": {"name": "worker", "namespace": "cluster"},
               "spec": {"template": {"spec": {"flavor": "SCS-2V-4", "image": {"filter": {"name": glance_name}}}}}})
        .to_string(),
    ]
}

#[test]
fn orc_images_are_imported_with_their_properties_and_checksum() {
    let os = OpenStack::shared();
    let server = ImageServer::shared();
    server.qcow2("orc.qcow2", "64M");
    let sha256 = sha256_of("orc.qcow2");
    let (object, glance_name) = (unique("node-image"), unique("ubuntu-capi-image"));
    let image = orc_image(&object, &glance_name, "orc.qcow2", &sha256);
    // The host turns the rendered ORC Image into a node image (stackhost::release::orc_node_images).
    let images = stackhost::release::orc_node_images(std::slice::from_ref(&image));
    assert_eq!(images[0].name, glance_name);
    let setup = Setup::new(os, Auth::Password, json!({"import": {"pollSeconds": 1}}));
    let rel = release(&unique("orc"));

    let statuses = setup.reconcile_until_settled(&rel, &images);
    let id = ready_id(&statuses[0]);
    let glance = only_image(os, &glance_name);
    assert_eq!(glance["id"], id.as_str());
    assert_eq!(glance["status"], "active");
    assert_eq!(glance["owner"], os.project_id.as_str());
    for (key, value) in [
        ("disk_format", json!("qcow2")),
        ("container_format", json!("bare")),
        ("min_disk", json!(2)),
        ("min_ram", json!(512)),
        ("architecture", json!("x86_64")),
        ("os_distro", json!("ubuntu")),
        ("os_version", json!("22.04")),
        ("hw_disk_bus", json!("scsi")),
        ("hw_scsi_model", json!("virtio-scsi")),
        ("hw_vif_model", json!("virtio")),
        ("hw_rng_model", json!("virtio")),
        ("hw_qemu_guest_agent", json!("yes")),
    ] {
        assert_eq!(glance[key], value, "{key} of {glance}");
    }
    // Glance hashes with sha512 here, so the plugin read the image back once to check the sha256.
    assert_eq!(glance["os_hash_algo"], "sha512");
    assert_eq!(setup.http.count(&format!("/v2/images/{id}/file")), 1);
    let again = setup.reconcile(&rel, &images).expect("repeated call");
    assert_eq!(ready_id(&again[0]), id);
    assert_eq!(
        setup.http.count(&format!("/v2/images/{id}/file")),
        1,
        "verified once"
    );
    assert_eq!(os.images_named(&glance_name).len(), 1, "nothing created twice");

    // The templates point at the image by id; the ORC Image is not applied (no ORC manages it).
    let objects = orc_cluster_class_objects(&image, &glance_name);
    let patched = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("patch");
    assert_eq!(patched.len(), 2, "the ORC Image is left out: {patched:?}");
    for text in &patched {
        let template: Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(
            template["spec"]["template"]["spec"]["image"],
            json!({"id": id}),
            "{text}"
        );
    }

    // With the state lost (a new controller), the image is found by name, not created again.
    let fresh = Setup::new(os, Auth::Password, json!({}));
    assert_eq!(ready_id(&fresh.reconcile(&rel, &images).expect("found")[0]), id);
    assert_eq!(os.images_named(&glance_name).len(), 1);
}

#[test]
fn an_orc_image_with_a_wrong_hash_fails() {
    let os = OpenStack::shared();
    let glance_name = unique("orc-wrong-hash");
    let image = orc_image(&unique("node-image"), &glance_name, "tiny.qcow2", &"0".repeat(64));
    let images = stackhost::release::orc_node_images(&[image]);
    let setup = Setup::new(os, Auth::Password, json!({"import": {"pollSeconds": 1}}));
    let statuses = setup.reconcile_until_settled(&release(&unique("orc")), &images);
    let why = failed_reason(&statuses[0]);
    assert!(
        why.contains(&glance_name)
            && why.contains(&sha256_of("tiny.qcow2"))
            && why.contains("the ORC Image says")
            && why.contains("delete the image in Glance"),
        "{why}"
    );
}

#[test]
fn with_orc_installed_images_and_templates_are_left_to_orc() {
    let os = OpenStack::shared();
    let glance_name = unique("orc-external");
    let image = orc_image(
        &unique("node-image"),
        &glance_name,
        "tiny.qcow2",
        &sha256_of("tiny.qcow2"),
    );
    let images = stackhost::release::orc_node_images(std::slice::from_ref(&image));
    let setup = Setup::new(os, Auth::Password, json!({"orc": "external"}));
    let rel = release(&unique("orc"));
    let statuses = setup.reconcile(&rel, &images).expect("reconcile-node-images");
    assert!(matches!(statuses[0].state, ImageState::Ready(_)), "{statuses:?}");
    let objects = orc_cluster_class_objects(&image, &glance_name);
    let patched = setup
        .plugin
        .patch_cluster_class(&rel, &objects)
        .result
        .expect("the call ran")
        .expect("patch");
    assert_eq!(patched, objects, "the Image and the templates stay as rendered");
    assert_eq!(setup.http.count(""), 0, "ORC imports the image, not the plugin");
    assert!(os.images_named(&glance_name).is_empty());
}

/// The one Glance image named `name`.
fn only_image(os: &OpenStack, name: &str) -> Value {
    let found = os.images_named(name);
    assert_eq!(found.len(), 1, "exactly one image {name} in Glance: {found:?}");
    found[0].clone()
}
