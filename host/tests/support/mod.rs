//! Test support for the OCI tests: the real Debian `docker-registry` started on 127.0.0.1 with
//! its own config and data directory, a loopback fault-injecting proxy for conditions the real
//! registry cannot produce (5xx, hangs, 403, bearer challenges), and generated components.
#![allow(dead_code)] // each test binary uses a different subset

pub mod openstack;
pub mod openstack_stack;
pub mod proxy;
pub mod release;
pub mod trickle;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `docker-registry`, stopped on drop.
pub struct TestRegistry {
    child: Child,
    pub addr: String,
    pub dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl TestRegistry {
    /// Anonymous registry.
    pub async fn start() -> Self {
        Self::start_inner(None).await
    }

    /// Registry with htpasswd (HTTP basic) auth for one user.
    pub async fn start_with_basic_auth(user: &str, password: &str) -> Self {
        Self::start_inner(Some((user, password))).await
    }

    async fn start_inner(auth: Option<(&str, &str)>) -> Self {
        let bin = which("docker-registry").unwrap_or_else(|| {
            panic!("`docker-registry` is not installed: run scripts/deps/oci.sh (installs Debian's docker-registry)")
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog: {{disabled: true}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n  delete: {{enabled: true}}\n  redirect: {{disable: true}}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let hash = bcrypt::hash(password, 4).expect("bcrypt");
            let htpasswd = dir.path().join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("write htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: stackhost-test\n    path: {}\n",
                htpasswd.display()
            ));
        }
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new(bin)
            .arg("serve")
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let reg = TestRegistry { child, addr, dir };
        reg.wait_ready().await;
        reg
    }

    async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = format!("http://{}/v2/", self.addr);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().as_u16() == 200 || r.status().as_u16() == 401 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default();
        panic!("docker-registry on {} did not become ready:\n{log}", self.addr);
    }

    /// Where the registry stores blob `digest` on disk (to simulate corruption at rest).
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// A valid component whose world is `imports` -> exports `clusterstack:provider/plugin@0.1.0`,
/// padded with `pad` bytes of data.
pub fn component(imports: &[&str], pad: usize) -> Vec<u8> {
    component_exporting(imports, "clusterstack:provider/plugin@0.1.0", pad)
}

/// A valid component with the given imports and one exported (empty) instance.
pub fn component_exporting(imports: &[&str], export: &str, pad: usize) -> Vec<u8> {
    let mut wat = String::from("(component\n");
    for i in imports {
        wat.push_str(&format!("  (import \"{i}\" (instance))\n"));
    }
    let mut data = String::with_capacity(pad * 3);
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..pad {
        // xorshift: incompressible padding, deterministic.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        data.push_str(&format!("\\{:02x}", x as u8));
    }
    let pages = pad / 65536 + 1;
    wat.push_str(&format!(
        "  (core module $m (memory (export \"memory\") {pages}) (data (i32.const 0) \"{data}\"))\n"
    ));
    wat.push_str("  (core instance $i (instantiate $m))\n");
    wat.push_str("  (instance $plugin)\n");
    wat.push_str(&format!("  (export \"{export}\" (instance $plugin))\n)\n"));
    wat::parse_str(&wat).expect("valid component text")
}

/// The imports of a typical provider plugin.
pub const PROVIDER_IMPORTS: &[&str] = &[
    "clusterstack:provider/types@0.1.0",
    "clusterstack:provider/log@0.1.0",
    "clusterstack:provider/http@0.1.0",
    "wasi:cli/stderr@0.2.0",
];

/// Write `bytes` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).expect("write file");
    p
}

/// The `state` store of ProviderPlugin `namespace/name`, read from its Secret as stackhost keeps it.
pub async fn plugin_state(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    use k8s_openapi::api::core::v1::Secret;
    let (ns, secret) = stackhost::controller::plugins::state_secret(None, namespace, name);
    let secret = kube::Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&secret)
        .await?;
    let data = secret.data.unwrap_or_default();
    let json = data
        .get(stackhost::controller::plugins::STATE_KEY)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no {} in the state Secret",
                stackhost::controller::plugins::STATE_KEY
            )
        })?;
    Ok(serde_json::from_slice(&json.0)?)
}
