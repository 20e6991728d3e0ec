//! Real Keystone v3 and Glance v2 (Debian's packages) for tests, started by `scripts/openstack-up.sh`
//! on free loopback ports, plus a small HTTP server for the image data Glance downloads.
//!
//! ```ignore
//! let os = support::openstack::OpenStack::shared();      // started once per test binary
//! let clouds = os.clouds_yaml(Auth::Password);           // a clouds.yaml for the Secret
//! let hosts = os.http_hosts();                           // grant these to the plugin
//! let images = support::openstack::ImageServer::start(); // qcow2 for web-download
//! ```
//! The services are stopped when the test binary exits (the script watches its pid) or on `stop`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// How the plugin authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// User `stackhost` with its password, scoped to project `stackhost`.
    Password,
    /// The application credential of user `stackhost`.
    ApplicationCredential,
    /// User `stackhost` with a wrong password.
    WrongPassword,
}

/// A running Keystone + Glance pair and the credentials the set-up created.
#[derive(Debug)]
pub struct OpenStack {
    pub dir: PathBuf,
    /// Keystone v3 base URL (`http://127.0.0.1:PORT/v3`).
    pub keystone: String,
    /// Glance base URL (`http://127.0.0.1:PORT`).
    pub glance: String,
    pub keystone_port: u16,
    pub glance_port: u16,
    pub region: String,
    pub user: String,
    pub password: String,
    pub project: String,
    pub project_id: String,
    pub admin_password: String,
    pub application_credential_id: String,
    pub application_credential_secret: String,
    /// How long `scripts/openstack-up.sh` took.
    pub startup: Duration,
    _tmp: Option<tempfile::TempDir>,
}

static SHARED: OnceLock<OpenStack> = OnceLock::new();

impl OpenStack {
    /// One Keystone + Glance for the whole test binary (starting them takes ~20-40 s).
    pub fn shared() -> &'static OpenStack {
        SHARED.get_or_init(|| OpenStack::start(&[]))
    }

    /// A new pair in a temporary directory. `env` adds variables for the script, e.g.
    /// `("GLANCE_IMPORT_METHODS", "glance-direct")`.
    pub fn start(env: &[(&str, &str)]) -> OpenStack {
        let tmp = tempfile::Builder::new()
            .prefix("stackhost-openstack-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let (ks, gl) = (free_port(), free_port());
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(repo_root().join("scripts/openstack-up.sh"))
            .arg(&dir)
            .env("KS_PORT", ks.to_string())
            .env("GL_PORT", gl.to_string())
            .env("OWNER_PID", std::process::id().to_string())
            .envs(env.iter().copied())
            .output()
            .expect("run scripts/openstack-up.sh");
        if !output.status.success() {
            let log = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
            panic!(
                "scripts/openstack-up.sh failed ({}): {}\n{}\nkeystone.out: {}\nglance.out: {}\n\
                 (install the services with scripts/deps/openstack.sh)",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                log("keystone.out"),
                log("glance.out")
            );
        }
        let startup = started.elapsed();
        let env: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("env.json")).expect("env.json written by openstack-up.sh"),
        )
        .expect("env.json is JSON");
        let s = |k: &str| env[k].as_str().unwrap_or_default().to_string();
        OpenStack {
            keystone: s("keystone"),
            glance: s("glance"),
            keystone_port: ks,
            glance_port: gl,
            region: s("region"),
            user: s("user"),
            password: s("password"),
            project: s("project"),
            project_id: s("projectId"),
            admin_password: s("adminPassword"),
            application_credential_id: s("applicationCredentialId"),
            application_credential_secret: s("applicationCredentialSecret"),
            startup,
            dir,
            _tmp: Some(tmp),
        }
    }

    /// Stops both services (also done when the test binary exits).
    pub fn stop(&self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/openstack-down.sh"))
            .arg(&self.dir)
            .status();
    }

    /// Stops Glance only (Keystone keeps answering): "Glance is down".
    pub fn stop_glance(&self) {
        let pid = std::fs::read_to_string(self.dir.join("glance.pid")).expect("glance.pid");
        let _ = Command::new("kill").arg(pid.trim()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.glance_port)).is_ok() {
            assert!(Instant::now() < deadline, "Glance did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The hosts the plugin must be granted (`127.0.0.1:<keystone>`, `127.0.0.1:<glance>`).
    pub fn http_hosts(&self) -> Vec<String> {
        vec![
            format!("127.0.0.1:{}", self.keystone_port),
            format!("127.0.0.1:{}", self.glance_port),
        ]
    }

    /// A `clouds.yaml` with one cloud `name` using `auth` (region given or none).
    pub fn clouds_yaml(&self, name: &str, auth: Auth, region: Option<&str>) -> String {
        let mut cloud = match auth {
            Auth::Password | Auth::WrongPassword => json!({
                "auth": {
                    "auth_url": self.keystone.trim_end_matches("/v3"),
                    "username": self.user,
                    "password": if auth == Auth::Password { self.password.as_str() } else { "not-the-password" },
                    "project_name": self.project,
                    "user_domain_name": "Default",
                    "project_domain_name": "Default",
                },
                "auth_type": "password",
            }),
            Auth::ApplicationCredential => json!({
                "auth": {
                    "auth_url": self.keystone,
                    "application_credential_id": self.application_credential_id,
                    "application_credential_secret": self.application_credential_secret,
                },
                "auth_type": "v3applicationcredential",
            }),
        };
        cloud["interface"] = json!("public");
        cloud["identity_api_version"] = json!(3);
        if let Some(region) = region {
            cloud["region_name"] = json!(region);
        }
        serde_yaml::to_string(&json!({ "clouds": { name: cloud } })).expect("yaml")
    }

    /// An admin token (project `admin`), for checks the plugin's user cannot do.
    pub fn admin_token(&self) -> String {
        let (status, headers, body) = http(
            "POST",
            &format!("{}/auth/tokens", self.keystone),
            None,
            Some(json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "name": "admin", "domain": {"id": "default"}, "password": self.admin_password}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})),
        );
        assert_eq!(status, 201, "admin auth: {body}");
        headers
            .into_iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("x-subject-token"))
            .map(|(_, v)| v)
            .expect("X-Subject-Token")
    }

    /// The image as Glance reports it (admin view), `None` when it does not exist.
    pub fn image(&self, id: &str) -> Option<Value> {
        let (status, _, body) = http(
            "GET",
            &format!("{}/v2/images/{id}", self.glance),
            Some(&self.admin_token()),
            None,
        );
        match status {
            200 => Some(body),
            404 => None,
            other => panic!("GET image {id}: HTTP {other}: {body}"),
        }
    }

    /// All images (any project) with this name.
    pub fn images_named(&self, name: &str) -> Vec<Value> {
        let (status, _, body) = http(
            "GET",
            &format!("{}/v2/images?name={name}&limit=1000", self.glance),
            Some(&self.admin_token()),
            None,
        );
        assert_eq!(status, 200, "list images: {body}");
        body["images"].as_array().cloned().unwrap_or_default()
    }

    /// Creates an image record directly (as a user of the cloud would), returns its id.
    pub fn create_image(&self, body: Value) -> String {
        let (status, _, reply) = http(
            "POST",
            &format!("{}/v2/images", self.glance),
            Some(&self.admin_token()),
            Some(body),
        );
        assert_eq!(status, 201, "create image: {reply}");
        reply["id"].as_str().expect("id").to_string()
    }

    /// Deactivates an active image (admin action).
    pub fn deactivate(&self, id: &str) {
        let (status, _, body) = http(
            "POST",
            &format!("{}/v2/images/{id}/actions/deactivate", self.glance),
            Some(&self.admin_token()),
            None,
        );
        assert_eq!(status, 204, "deactivate {id}: {body}");
    }

    /// Sets an image's status in Glance's database (how an image becomes `killed`: Glance has no
    /// API for it; it happens when an upload fails mid-way).
    pub fn set_status_in_database(&self, id: &str, status: &str) {
        let db = self.dir.join("glance.db");
        let script = format!(
            "import sqlite3; c = sqlite3.connect({:?}, timeout=10); c.execute(\"update images set status=? where id=?\", ({status:?}, {id:?})); c.commit()",
            db.display().to_string()
        );
        let out = Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(script)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    /// Adds a region whose image endpoint is `url` (e.g. a closed port: "Glance is down").
    pub fn add_region(&self, region: &str, image_url: &str) {
        let token = self.admin_token();
        let ks = &self.keystone;
        let (status, _, body) = http(
            "POST",
            &format!("{ks}/regions"),
            Some(&token),
            Some(json!({"region": {"id": region}})),
        );
        assert!(status == 201 || status == 409, "create region: {body}");
        let (_, _, services) = http("GET", &format!("{ks}/services?type=image"), Some(&token), None);
        let service = services["services"][0]["id"]
            .as_str()
            .expect("image service")
            .to_string();
        let (status, _, body) = http(
            "POST",
            &format!("{ks}/endpoints"),
            Some(&token),
            Some(
                json!({"endpoint": {"service_id": service, "interface": "public", "url": image_url, "region_id": region}}),
            ),
        );
        assert_eq!(status, 201, "create endpoint: {body}");
    }

    /// The Glance log (for failure messages).
    pub fn glance_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("glance.log")).unwrap_or_default()
    }
}

impl Drop for OpenStack {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking JSON request: status, headers and the JSON body (`Null` when empty or not JSON).
pub fn http(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Vec<(String, String)>, Value) {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build(),
    );
    let mut request = ureq::http::Request::builder()
        .method(method)
        .uri(url)
        .header("Accept", "application/json");
    if let Some(token) = token {
        request = request.header("X-Auth-Token", token);
    }
    if body.is_some() {
        request = request.header("Content-Type", "application/json");
    }
    let request = request
        .body(body.map(|b| b.to_string().into_bytes()).unwrap_or_default())
        .expect("request");
    let response = agent
        .run(request)
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    let text = response.into_body().read_to_string().unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

/// Serves image files on 127.0.0.1 for Glance's web-download (and the plugin's glance-direct
/// download): `/<name>` from its directory; `/stall/<name>` answers nothing for `stall` (an import
/// that never finishes); anything else is 404. Counts requests per path.
pub struct ImageServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    hits: Arc<std::sync::Mutex<Vec<String>>>,
    pub stall: Duration,
}

impl ImageServer {
    pub fn start() -> ImageServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let hits = Arc::new(std::sync::Mutex::new(Vec::new()));
        let root = dir.path().to_path_buf();
        let counter = hits.clone();
        let stall = Duration::from_secs(90);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let root = root.clone();
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, &root, &counter, stall));
            }
        });
        ImageServer {
            port,
            dir,
            hits,
            stall,
        }
    }

    /// One server per test binary with a 16 MiB `tiny.qcow2`, shared by its tests.
    pub fn shared() -> &'static ImageServer {
        static SERVER: std::sync::OnceLock<ImageServer> = std::sync::OnceLock::new();
        SERVER.get_or_init(|| {
            let server = ImageServer::start();
            server.qcow2("tiny.qcow2", "16M");
            server
        })
    }

    /// Writes a small qcow2 (made by `qemu-img`) under `name` and returns its URL.
    pub fn qcow2(&self, name: &str, size: &str) -> String {
        let path = self.dir.path().join(name);
        let out = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&path)
            .arg(size)
            .output()
            .expect("qemu-img (install with scripts/deps/openstack.sh)");
        assert!(
            out.status.success(),
            "qemu-img: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(name)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// How many requests asked for `path` (e.g. `/tiny.qcow2`).
    pub fn hits(&self, path: &str) -> usize {
        self.hits
            .lock()
            .expect("lock")
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve(stream: TcpStream, root: &Path, hits: &std::sync::Mutex<Vec<String>>, stall: Duration) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut header = String::new();
        match reader.read_line(&mut header) {
            Ok(0) | Err(_) => break,
            Ok(_) if header == "\r\n" || header == "\n" => break,
            Ok(_) => {}
        }
    }
    hits.lock().expect("lock").push(path.clone());
    let mut stream = stream;
    if path.starts_with("/stall/") {
        std::thread::sleep(stall);
        return;
    }
    let file = root.join(path.trim_start_matches('/'));
    let data = (!path.contains(".."))
        .then(|| std::fs::read(&file).ok())
        .flatten();
    let _ = match data {
        Some(data) => stream
            .write_all(
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    data.len()
                )
                .as_bytes(),
            )
            .and_then(|_| stream.write_all(&data)),
        None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
    };
    let _ = stream.flush();
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name no other test uses (tests share one Glance).
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
