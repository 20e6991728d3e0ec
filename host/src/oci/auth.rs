//! Registry credentials: anonymous, basic, bearer tokens, Docker `config.json` and Kubernetes
//! `kubernetes.io/dockerconfigjson` (and legacy `dockercfg`) Secrets.
//!
//! Bearer *challenges* (`WWW-Authenticate: Bearer realm=...`) are answered by `oci-client`: it
//! fetches a token from the realm, anonymously or with the basic credentials found here.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use super::error::{OciError, Result};

/// One registry's credential.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// Username and password (sent as HTTP basic auth, or to a bearer token realm).
    Basic { username: String, password: String },
    /// A ready bearer token (Docker config `registrytoken`, or `--token`).
    Bearer(String),
}

impl fmt::Debug for Credential {
    // Never print secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credential::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// `sha256:<first 16 hex digits>` of the length-prefixed parts.
pub(crate) fn fingerprint(parts: &[&str]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    format!("sha256:{}", &hex::encode(h.finalize())[..16])
}

/// Credentials by registry host (`host[:port]`). Hosts not listed are accessed anonymously.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    by_host: BTreeMap<String, Credential>,
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, DockerAuthEntry>,
}

#[derive(Deserialize, Default)]
struct DockerAuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

#[derive(Deserialize)]
struct Secret {
    #[serde(default, rename = "type")]
    type_: Option<String>,
    #[serde(default)]
    data: BTreeMap<String, String>,
    #[serde(default, rename = "stringData")]
    string_data: BTreeMap<String, String>,
}

/// Normalise a config.json key (`https://index.docker.io/v1/`, `http://r:5000`, `r:5000`) to a host.
fn normalise_host(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "docker.io" | "registry-1.docker.io" => "index.docker.io".to_string(),
        other => other.to_string(),
    }
}

impl Credentials {
    /// No credentials at all: every registry is accessed anonymously.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Set the credential for one registry host.
    pub fn insert(&mut self, host: &str, credential: Credential) {
        self.by_host.insert(normalise_host(host), credential);
    }

    /// Add every entry of `other`, overriding entries for the same host.
    pub fn merge(&mut self, other: Credentials) {
        self.by_host.extend(other.by_host);
    }

    /// Hosts with credentials.
    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
    }

    /// The credential for `host`, if any.
    pub fn get(&self, host: &str) -> Option<&Credential> {
        self.by_host.get(&normalise_host(host))
    }

    /// Who these credentials make a requester of `host`: `anonymous`, or a one-way fingerprint of the
    /// credential (never the secret itself). Caches of what was fetched with credentials are keyed by it,
    /// so content one tenant's credentials fetched is never served to a requester without them.
    pub fn identity(&self, host: &str) -> String {
        match self.get(host) {
            None => "anonymous".to_owned(),
            Some(Credential::Basic { username, password }) => fingerprint(&["basic", username, password]),
            Some(Credential::Bearer(token)) => fingerprint(&["bearer", token]),
        }
    }

    /// What `oci-client` should send to `host`.
    pub fn registry_auth(&self, host: &str) -> RegistryAuth {
        match self.get(host) {
            None => RegistryAuth::Anonymous,
            Some(Credential::Basic { username, password }) => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Some(Credential::Bearer(token)) => RegistryAuth::Bearer(token.clone()),
        }
    }

    /// Parse a Docker `config.json` (the `auths` map). `origin` names it in errors.
    pub fn from_docker_config_json(origin: &str, json: &[u8]) -> Result<Self> {
        let config: DockerConfig = serde_json::from_slice(json).map_err(|e| OciError::Credentials {
            origin: origin.to_string(),
            reason: format!("not a Docker config.json (expected {{\"auths\": {{...}}}}): {e}"),
        })?;
        Self::from_auths(origin, config.auths)
    }

    fn from_auths(origin: &str, auths: BTreeMap<String, DockerAuthEntry>) -> Result<Self> {
        let mut creds = Credentials::default();
        for (key, entry) in auths {
            let bad = |reason: String| OciError::Credentials {
                origin: origin.to_string(),
                reason: format!("entry `{key}`: {reason}"),
            };
            let credential = if let Some(token) = entry.registrytoken.filter(|t| !t.is_empty()) {
                Credential::Bearer(token)
            } else if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }
            } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| bad(format!("`auth` is not base64: {e}")))?;
                let decoded = String::from_utf8(decoded).map_err(|_| bad("`auth` is not UTF-8".into()))?;
                let (username, password) = decoded
                    .split_once(':')
                    .ok_or_else(|| bad("`auth` must decode to `username:password`".into()))?;
                Credential::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                }
            } else if entry.identitytoken.is_some() {
                return Err(bad(
                    "`identitytoken` (OAuth2 refresh token) is not supported; use a username/password or registry token".into(),
                ));
            } else {
                // Entries managed by credential helpers carry no secret here.
                continue;
            };
            creds.insert(&key, credential);
        }
        Ok(creds)
    }

    /// Read a Docker config file.
    pub fn from_docker_config_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| OciError::io("reading Docker config", path, e))?;
        Self::from_docker_config_json(&path.display().to_string(), &bytes)
    }

    /// The Docker config Docker itself would use: `$DOCKER_CONFIG/config.json`, else
    /// `~/.docker/config.json`. A missing file means anonymous access, not an error.
    pub fn from_default_docker_config() -> Result<Self> {
        let path = match std::env::var_os("DOCKER_CONFIG") {
            Some(dir) => PathBuf::from(dir).join("config.json"),
            None => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(".docker").join("config.json"),
                None => return Ok(Self::default()),
            },
        };
        if !path.exists() {
            return Ok(Self::default());
        }
        Self::from_docker_config_file(&path)
    }

    /// Parse a Kubernetes Secret (JSON or YAML, as `kubectl get secret -o json|yaml` prints it)
    /// of type `kubernetes.io/dockerconfigjson` (key `.dockerconfigjson`) or the legacy
    /// `kubernetes.io/dockercfg` (key `.dockercfg`), with base64 `data` or plain `stringData`.
    pub fn from_kubernetes_secret(origin: &str, manifest: &[u8]) -> Result<Self> {
        let bad = |reason: String| OciError::Credentials {
            origin: origin.to_string(),
            reason,
        };
        let secret: Secret = serde_yaml::from_slice(manifest)
            .map_err(|e| bad(format!("not a Kubernetes Secret manifest: {e}")))?;
        let lookup = |key: &str| -> Result<Option<Vec<u8>>> {
            if let Some(v) = secret.string_data.get(key) {
                return Ok(Some(v.as_bytes().to_vec()));
            }
            match secret.data.get(key) {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .map(Some)
                    .map_err(|e| bad(format!("data[{key}] is not base64: {e}"))),
                None => Ok(None),
            }
        };
        if let Some(json) = lookup(".dockerconfigjson")? {
            return Self::from_docker_config_json(&format!("{origin} (.dockerconfigjson)"), &json);
        }
        if let Some(json) = lookup(".dockercfg")? {
            let auths: BTreeMap<String, DockerAuthEntry> = serde_json::from_slice(&json)
                .map_err(|e| bad(format!(".dockercfg is not a JSON map of registries: {e}")))?;
            return Self::from_auths(&format!("{origin} (.dockercfg)"), auths);
        }
        Err(bad(format!(
            "Secret of type `{}` has no `.dockerconfigjson` key; create it with `kubectl create secret docker-registry`",
            secret.type_.as_deref().unwrap_or("<none>")
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"auths": {
        "https://index.docker.io/v1/": {"auth": "dXNlcjpwYXNz"},
        "registry.example:5000": {"username": "u2", "password": "p:2"},
        "tokens.example": {"registrytoken": "tok"},
        "helper.example": {}
    }}"#;

    #[test]
    fn docker_config_entries_become_per_host_credentials() -> Result<()> {
        let c = Credentials::from_docker_config_json("test", CONFIG.as_bytes())?;
        assert_eq!(
            c.registry_auth("docker.io"),
            RegistryAuth::Basic("user".into(), "pass".into())
        );
        assert_eq!(
            c.registry_auth("registry.example:5000"),
            RegistryAuth::Basic("u2".into(), "p:2".into())
        );
        assert_eq!(
            c.registry_auth("tokens.example"),
            RegistryAuth::Bearer("tok".into())
        );
        assert_eq!(c.registry_auth("helper.example"), RegistryAuth::Anonymous);
        assert_eq!(c.registry_auth("other.example"), RegistryAuth::Anonymous);
        Ok(())
    }

    #[test]
    fn kubernetes_dockerconfigjson_secret_in_yaml_and_json() -> Result<()> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(CONFIG);
        let yaml = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: pull}}\ntype: kubernetes.io/dockerconfigjson\ndata:\n  .dockerconfigjson: {b64}\n"
        );
        let c = Credentials::from_kubernetes_secret("secret ns/pull", yaml.as_bytes())?;
        assert_eq!(
            c.registry_auth("tokens.example"),
            RegistryAuth::Bearer("tok".into())
        );
        let json = serde_json::json!({"kind": "Secret", "type": "kubernetes.io/dockercfg",
            "stringData": {".dockercfg": "{\"r.example\": {\"auth\": \"dXNlcjpwYXNz\"}}"}});
        let c = Credentials::from_kubernetes_secret("s", json.to_string().as_bytes())?;
        assert_eq!(
            c.registry_auth("r.example"),
            RegistryAuth::Basic("user".into(), "pass".into())
        );
        Ok(())
    }

    #[test]
    fn malformed_credentials_name_the_entry() {
        let err = Credentials::from_docker_config_json("cfg.json", br#"{"auths": {"r": {"auth": "!!"}}}"#)
            .expect_err("should fail")
            .to_string();
        assert!(
            err.contains("cfg.json") && err.contains("entry `r`") && err.contains("base64"),
            "{err}"
        );
        let err = Credentials::from_kubernetes_secret(
            "secret ns/x",
            b"kind: Secret\ntype: Opaque\ndata: {a: Yg==}\n",
        )
        .expect_err("should fail")
        .to_string();
        assert!(
            err.contains("secret ns/x") && err.contains(".dockerconfigjson"),
            "{err}"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Credential::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
