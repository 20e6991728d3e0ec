//! Credentials (`clouds.yaml` from a granted Secret), Keystone v3 authentication with the token
//! kept in `state` until it expires, and the image endpoint from the catalog.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::clusterstack::provider::secrets::{self, SecretError};
use crate::clusterstack::provider::types::Error;
use crate::config::Config;
use crate::{net, store, time};

/// Re-authenticate this long before the token expires.
const TOKEN_MARGIN_SECONDS: u64 = 120;

/// `clouds.yaml` as openstacksdk/gophercloud read it (only the fields used here).
#[derive(Debug, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct CloudEntry {
    pub auth: AuthEntry,
    pub auth_type: Option<String>,
    pub region_name: Option<String>,
    pub interface: Option<String>,
    pub endpoint_type: Option<String>,
    pub identity_api_version: Option<serde_yaml::Value>,
    pub verify: Option<bool>,
    pub cacert: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthEntry {
    pub auth_url: Option<String>,
    pub username: Option<String>,
    pub user_id: Option<String>,
    pub password: Option<String>,
    pub project_name: Option<String>,
    pub project_id: Option<String>,
    pub tenant_name: Option<String>,
    pub tenant_id: Option<String>,
    pub user_domain_name: Option<String>,
    pub user_domain_id: Option<String>,
    pub project_domain_name: Option<String>,
    pub project_domain_id: Option<String>,
    pub domain_name: Option<String>,
    pub domain_id: Option<String>,
    pub application_credential_id: Option<String>,
    pub application_credential_name: Option<String>,
    pub application_credential_secret: Option<String>,
}

/// The cloud a call works with.
#[derive(Debug, Clone)]
pub struct Cloud {
    pub name: String,
    pub secret: String,
    /// Keystone v3 base URL, ending in `/v3`.
    pub auth_url: String,
    pub entry: CloudEntry,
    pub region: Option<String>,
    pub interface: String,
    pub cacert: Option<String>,
    /// `password` or `application credential`, for messages.
    pub method: &'static str,
    /// The body of `POST /v3/auth/tokens`.
    auth_body: serde_json::Value,
}

/// Reads an optional Secret key: absent when the key is missing or not granted.
fn optional_secret(key: &str) -> Option<String> {
    match secrets::get(key) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(SecretError::NotFound(_) | SecretError::Denied(_)) => None,
    }
}

impl Cloud {
    /// The cloud named by the configuration / the Secret's `cloudName` (default `openstack`).
    pub fn load(config: &Config) -> Result<Cloud, Error> {
        let secret = &config.secret;
        let key = format!("{secret}/clouds.yaml");
        let clouds_yaml = match secrets::get(&key) {
            Ok(bytes) => bytes,
            Err(SecretError::Denied(why)) => {
                return Err(Error::Denied(format!(
                    "cannot read {key}: {why}; grant the Secret key `{key}` to this plugin"
                )))
            }
            Err(SecretError::NotFound(why)) => {
                return Err(Error::InvalidInput(format!(
                    "cannot read {key}: {why}; create the Secret {secret:?} with a `clouds.yaml` key \
                     (and optionally `cloudName` and `cacert`)"
                )))
            }
        };
        let name = match &config.cloud_name {
            Some(name) => name.clone(),
            None => match optional_secret(&format!("{secret}/cloudName")) {
                // Upstream YAML-decodes the key, so `"openstack"` and `openstack\n` both work.
                Some(text) => {
                    serde_yaml::from_str::<String>(&text).unwrap_or_else(|_| text.trim().to_string())
                }
                None => "openstack".to_string(),
            },
        };
        let cacert = optional_secret(&format!("{secret}/cacert")).filter(|c| !c.trim().is_empty());
        Cloud::from_yaml(&clouds_yaml, &name, secret, config, cacert)
    }

    pub fn from_yaml(
        clouds_yaml: &[u8],
        name: &str,
        secret: &str,
        config: &Config,
        cacert: Option<String>,
    ) -> Result<Cloud, Error> {
        let file: CloudsFile = serde_yaml::from_slice(clouds_yaml).map_err(|e| {
            Error::InvalidInput(format!(
                "Secret {secret:?} key clouds.yaml is not valid YAML: {e}"
            ))
        })?;
        let known: Vec<&str> = file.clouds.keys().map(String::as_str).collect();
        let entry = file.clouds.get(name).cloned().ok_or_else(|| {
            Error::InvalidInput(format!(
                "Secret {secret:?} key clouds.yaml has no cloud {name:?} (it has: {}); set the \
                 Secret's `cloudName` key or spec.config.cloudName",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
        let bad = |why: String| {
            Error::InvalidInput(format!(
                "Secret {secret:?} key clouds.yaml, cloud {name:?}: {why}"
            ))
        };
        let auth = &entry.auth;
        let auth_url = auth
            .auth_url
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| bad("auth.auth_url is missing".to_string()))?;
        let auth_url = auth_url.trim().trim_end_matches('/');
        let auth_url = if auth_url.ends_with("/v3") {
            auth_url.to_string()
        } else {
            format!("{auth_url}/v3")
        };
        let auth_type = entry.auth_type.clone().unwrap_or_else(|| {
            if auth.application_credential_secret.is_some() {
                "v3applicationcredential".to_string()
            } else {
                "password".to_string()
            }
        });
        let (method, auth_body) = match auth_type.as_str() {
            "password" | "v3password" => ("password", password_body(auth).map_err(bad)?),
            "v3applicationcredential" | "applicationcredential" | "application_credential" => {
                ("application credential", appcred_body(auth).map_err(bad)?)
            }
            other => {
                return Err(bad(format!(
                    "auth_type {other:?} is not supported; use password or v3applicationcredential"
                )))
            }
        };
        let interface = config
            .interface
            .clone()
            .or_else(|| entry.interface.clone())
            .or_else(|| entry.endpoint_type.clone())
            .unwrap_or_else(|| "public".to_string());
        let interface = interface.trim_end_matches("URL").to_string();
        Ok(Cloud {
            name: name.to_string(),
            secret: secret.to_string(),
            auth_url,
            region: config.region.clone().or_else(|| entry.region_name.clone()),
            interface,
            cacert,
            method,
            auth_body,
            entry,
        })
    }

    /// Identifies these credentials in the token cache without storing them (SHA-256 of the auth
    /// URL and request, truncated: the key shows nothing of the password).
    fn fingerprint(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(format!("{}\n{}", self.auth_url, self.auth_body).as_bytes());
        digest[..12].iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn domain(name: &Option<String>, id: &Option<String>, fallback: &AuthEntry) -> serde_json::Value {
    if let Some(id) = id.as_ref().or(fallback.domain_id.as_ref()) {
        json!({ "id": id })
    } else {
        let name = name
            .as_ref()
            .or(fallback.domain_name.as_ref())
            .map(String::as_str)
            .unwrap_or("Default");
        json!({ "name": name })
    }
}

fn password_body(auth: &AuthEntry) -> Result<serde_json::Value, String> {
    let password = auth
        .password
        .as_ref()
        .ok_or("auth.password is missing (password auth)")?;
    let user = match (&auth.user_id, &auth.username) {
        (Some(id), _) => json!({ "id": id, "password": password }),
        (None, Some(name)) => json!({
            "name": name,
            "domain": domain(&auth.user_domain_name, &auth.user_domain_id, auth),
            "password": password,
        }),
        (None, None) => return Err("auth.username or auth.user_id is missing (password auth)".into()),
    };
    let project = match (
        auth.project_id.as_ref().or(auth.tenant_id.as_ref()),
        auth.project_name.as_ref().or(auth.tenant_name.as_ref()),
    ) {
        (Some(id), _) => json!({ "id": id }),
        (None, Some(name)) => json!({
            "name": name,
            "domain": domain(&auth.project_domain_name, &auth.project_domain_id, auth),
        }),
        (None, None) => {
            return Err(
                "auth.project_name or auth.project_id is missing: images are created in a project".into(),
            )
        }
    };
    Ok(json!({ "auth": {
        "identity": { "methods": ["password"], "password": { "user": user } },
        "scope": { "project": project },
    }}))
}

fn appcred_body(auth: &AuthEntry) -> Result<serde_json::Value, String> {
    let secret = auth
        .application_credential_secret
        .as_ref()
        .ok_or("auth.application_credential_secret is missing")?;
    let credential = match (&auth.application_credential_id, &auth.application_credential_name) {
        (Some(id), _) => json!({ "id": id, "secret": secret }),
        (None, Some(name)) => {
            let user = match (&auth.user_id, &auth.username) {
                (Some(id), _) => json!({ "id": id }),
                (None, Some(user)) => json!({
                    "name": user,
                    "domain": domain(&auth.user_domain_name, &auth.user_domain_id, auth),
                }),
                (None, None) => {
                    return Err("auth.application_credential_name needs auth.username or auth.user_id".into())
                }
            };
            json!({ "name": name, "secret": secret, "user": user })
        }
        (None, None) => {
            return Err(
                "auth.application_credential_id or auth.application_credential_name is missing".into(),
            )
        }
    };
    Ok(json!({ "auth": { "identity": {
        "methods": ["application_credential"],
        "application_credential": credential,
    }}}))
}

/// One image endpoint from the catalog.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Endpoint {
    interface: String,
    region: String,
    url: String,
}

/// A token as kept in `state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CachedToken {
    token: String,
    expires_at: u64,
    endpoints: Vec<Endpoint>,
}

/// An authenticated session against one cloud's Glance.
pub struct Session {
    pub cloud: Cloud,
    token: String,
    /// Glance base URL (without `/v2`).
    pub glance: String,
    pub region: String,
    /// Whether the token came from the cache (for tests and logs).
    pub reused_token: bool,
}

impl Session {
    pub fn open(config: &Config) -> Result<Session, Error> {
        let cloud = Cloud::load(config)?;
        Session::with_cloud(cloud)
    }

    pub fn with_cloud(cloud: Cloud) -> Result<Session, Error> {
        let key = format!("token/{}", cloud.fingerprint());
        let cached: Option<CachedToken> = store::get(&key);
        let (cached, reused) = match cached {
            Some(t) if t.expires_at > time::now() + TOKEN_MARGIN_SECONDS => (t, true),
            _ => {
                let fresh = authenticate(&cloud)?;
                store::set(&key, &fresh)?;
                (fresh, false)
            }
        };
        let endpoint = pick_endpoint(&cloud, &cached.endpoints)?;
        let glance = endpoint.url.trim_end_matches('/');
        let glance = glance.strip_suffix("/v2").unwrap_or(glance).to_string();
        Ok(Session {
            token: cached.token,
            glance,
            region: endpoint.region.clone(),
            reused_token: reused,
            cloud,
        })
    }

    /// `Glance at http://... (region R)` for messages.
    pub fn glance_label(&self) -> String {
        format!("Glance at {} (region {})", self.glance, self.region)
    }

    /// A Glance API call (`path` below the base URL, e.g. `/v2/images`). A 401 with a cached
    /// token (revoked, or Keystone restarted with new keys) re-authenticates once.
    pub fn glance(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
        content_type: &str,
    ) -> Result<net::Reply, Error> {
        let url = net::join(&self.glance, path);
        let label = self.glance_label();
        let reply = net::json(&label, method, &url, Some(&self.token), body, content_type)?;
        if reply.status == 401 && self.reused_token {
            self.reauthenticate()?;
            return net::json(&label, method, &url, Some(&self.token), body, content_type);
        }
        if reply.status == 401 {
            return Err(Error::Failed(format!(
                "{label} rejected a fresh Keystone token: HTTP 401: {}",
                reply.snippet()
            )));
        }
        Ok(reply)
    }

    /// Raw upload (glance-direct staging).
    pub fn glance_upload(&mut self, path: &str, data: Vec<u8>) -> Result<net::Reply, Error> {
        let url = net::join(&self.glance, path);
        let label = self.glance_label();
        net::send(
            &label,
            "PUT",
            &url,
            &[
                ("Content-Type", "application/octet-stream"),
                ("X-Auth-Token", &self.token),
            ],
            Some(data),
        )
    }

    /// Raw download (an image's data, to verify its hash).
    pub fn glance_download(&mut self, path: &str) -> Result<net::Reply, Error> {
        let url = net::join(&self.glance, path);
        let label = self.glance_label();
        net::send(&label, "GET", &url, &[("X-Auth-Token", &self.token)], None)
    }

    fn reauthenticate(&mut self) -> Result<(), Error> {
        let key = format!("token/{}", self.cloud.fingerprint());
        store::delete(&key);
        let fresh = authenticate(&self.cloud)?;
        store::set(&key, &fresh)?;
        self.token = fresh.token;
        self.reused_token = false;
        Ok(())
    }
}

fn authenticate(cloud: &Cloud) -> Result<CachedToken, Error> {
    let url = format!("{}/auth/tokens", cloud.auth_url);
    let label = format!("Keystone at {}", cloud.auth_url);
    let reply = net::json(
        &label,
        "POST",
        &url,
        None,
        Some(&cloud.auth_body),
        "application/json",
    )?;
    match reply.status {
        200 | 201 => {}
        401 | 403 => {
            let who = cloud
                .entry
                .auth
                .username
                .clone()
                .or_else(|| cloud.entry.auth.user_id.clone())
                .or_else(|| cloud.entry.auth.application_credential_id.clone())
                .or_else(|| cloud.entry.auth.application_credential_name.clone())
                .unwrap_or_default();
            return Err(Error::Failed(format!(
                "{label} rejected the credentials of cloud {:?} ({} auth as {who:?}): HTTP {}: {}; \
                 fix `clouds.yaml` in Secret {:?}",
                cloud.name,
                cloud.method,
                reply.status,
                reply.snippet(),
                cloud.secret
            )));
        }
        _ => return Err(net::unexpected(&label, "authentication", &reply)),
    }
    let token = reply
        .header("X-Subject-Token")
        .ok_or_else(|| Error::Failed(format!("{label}: the token answer has no X-Subject-Token header")))?
        .to_string();
    let body = reply.json(&label)?;
    let expires_at = body
        .pointer("/token/expires_at")
        .and_then(|v| v.as_str())
        .and_then(time::parse_iso8601)
        .unwrap_or_else(|| time::now() + 600);
    let mut endpoints = Vec::new();
    for service in body
        .pointer("/token/catalog")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        if service.get("type").and_then(|t| t.as_str()) != Some("image") {
            continue;
        }
        for e in service
            .get("endpoints")
            .and_then(|e| e.as_array())
            .into_iter()
            .flatten()
        {
            let field = |k: &str| e.get(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let region = Some(field("region_id"))
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| field("region"));
            endpoints.push(Endpoint {
                interface: field("interface"),
                region,
                url: field("url"),
            });
        }
    }
    Ok(CachedToken {
        token,
        expires_at,
        endpoints,
    })
}

fn pick_endpoint<'a>(cloud: &Cloud, endpoints: &'a [Endpoint]) -> Result<&'a Endpoint, Error> {
    let listed = || {
        if endpoints.is_empty() {
            "the catalog has no image service".to_string()
        } else {
            let all: Vec<String> = endpoints
                .iter()
                .map(|e| format!("{} {} {}", e.region, e.interface, e.url))
                .collect();
            format!("image endpoints in the catalog: {}", all.join("; "))
        }
    };
    let candidates: Vec<&Endpoint> = endpoints
        .iter()
        .filter(|e| e.interface == cloud.interface)
        .filter(|e| cloud.region.as_ref().is_none_or(|r| &e.region == r))
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::Failed(format!(
            "cloud {:?}: no {} image endpoint{} ({}); set region_name in clouds.yaml or spec.config.region",
            cloud.name,
            cloud.interface,
            cloud
                .region
                .as_ref()
                .map(|r| format!(" in region {r}"))
                .unwrap_or_default(),
            listed()
        ))),
        [first, rest @ ..] if rest.iter().all(|e| e.region == first.region) => Ok(first),
        _ => Err(Error::InvalidInput(format!(
            "cloud {:?}: several regions have an image endpoint and none is configured ({}); set \
             region_name in clouds.yaml or spec.config.region",
            cloud.name,
            listed()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cloud(yaml: &str, name: &str) -> Result<Cloud, Error> {
        Cloud::from_yaml(yaml.as_bytes(), name, "openstack", &Config::default(), None)
    }

    #[test]
    fn password_and_application_credentials_become_keystone_bodies() {
        let yaml = r#"
clouds:
  openstack:
    auth:
      auth_url: http://127.0.0.1:5000
      username: u
      password: p
      project_name: proj
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  appcred:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://127.0.0.1:5000/v3/
      application_credential_id: abc
      application_credential_secret: s3cret
"#;
        let c = cloud(yaml, "openstack").unwrap();
        assert_eq!(c.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(c.method, "password");
        assert_eq!(c.auth_body["auth"]["scope"]["project"]["name"], "proj");
        assert_eq!(
            c.auth_body["auth"]["identity"]["password"]["user"]["domain"]["name"],
            "Default"
        );
        let a = cloud(yaml, "appcred").unwrap();
        assert_eq!(a.auth_url, "http://127.0.0.1:5000/v3");
        assert_eq!(
            a.auth_body["auth"]["identity"]["application_credential"]["id"],
            "abc"
        );
        assert_ne!(c.fingerprint(), a.fingerprint());
        let Err(Error::InvalidInput(e)) = cloud(yaml, "other") else {
            panic!()
        };
        assert!(
            e.contains("no cloud \"other\"") && e.contains("appcred, openstack"),
            "{e}"
        );
    }

    #[test]
    fn missing_fields_are_named() {
        let Err(Error::InvalidInput(e)) = cloud(
            "clouds: {openstack: {auth: {auth_url: x, username: u}}}",
            "openstack",
        ) else {
            panic!()
        };
        assert!(e.contains("auth.password"), "{e}");
    }

    #[test]
    fn endpoint_choice_by_region_and_interface() {
        let c = cloud(
            "clouds: {openstack: {auth: {auth_url: x, username: u, password: p, project_id: q}}}",
            "openstack",
        )
        .unwrap();
        let e = |region: &str, interface: &str| Endpoint {
            region: region.into(),
            interface: interface.into(),
            url: format!("http://{region}/{interface}"),
        };
        let eps = vec![e("A", "public"), e("A", "internal"), e("B", "public")];
        assert!(matches!(pick_endpoint(&c, &eps), Err(Error::InvalidInput(_))));
        let mut b = c.clone();
        b.region = Some("B".into());
        assert_eq!(pick_endpoint(&b, &eps).unwrap().url, "http://B/public");
        b.region = Some("C".into());
        let Err(Error::Failed(m)) = pick_endpoint(&b, &eps) else {
            panic!()
        };
        assert!(
            m.contains("region C") && m.contains("A public http://A/public"),
            "{m}"
        );
    }
}
