//! Calling a runtime-extension server the way Cluster API does: discovery first, then a POST of the
//! hook request to the path of the handler discovery named. Used by the sandbox's in-memory
//! infrastructure and by tests.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::{discovery_path, handler_path, HOOKS_API_VERSION};

/// A discovered extension server.
#[derive(Debug, Clone)]
pub struct HookClient {
    http: reqwest::Client,
    base: String,
    /// Hook -> handler name, from discovery.
    handlers: BTreeMap<String, String>,
}

impl HookClient {
    /// Connects to `base` (`https://host:port`) trusting `ca_pem`, and runs discovery.
    pub async fn discover(base: &str, ca_pem: &str) -> Result<Self, String> {
        let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).map_err(|e| format!("invalid CA: {e}"))?;
        let http = reqwest::Client::builder()
            .add_root_certificate(ca)
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot build an HTTPS client: {e}"))?;
        let base = base.trim_end_matches('/').to_owned();
        let discovery = post(
            &http,
            &format!("{base}{}", discovery_path()),
            &json!({
                "apiVersion": HOOKS_API_VERSION, "kind": "DiscoveryRequest"
            }),
        )
        .await?;
        if discovery["status"] != "Success" {
            return Err(format!("discovery failed: {discovery}"));
        }
        let handlers = discovery["handlers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| {
                Some((
                    h["requestHook"]["hook"].as_str()?.to_owned(),
                    h["name"].as_str()?.to_owned(),
                ))
            })
            .collect();
        Ok(Self { http, base, handlers })
    }

    /// The hooks the server registered.
    pub fn hooks(&self) -> Vec<&str> {
        self.handlers.keys().map(String::as_str).collect()
    }

    /// Calls `hook` for `cluster` with the hook's extra request fields (e.g. `fromKubernetesVersion`);
    /// returns the response. A hook the server did not register answers `None`.
    pub async fn call(&self, hook: &str, cluster: &Value, extra: Value) -> Result<Option<Value>, String> {
        let Some(handler) = self.handlers.get(hook) else {
            return Ok(None);
        };
        let mut request = json!({
            "apiVersion": HOOKS_API_VERSION,
            "kind": format!("{hook}Request"),
            "settings": {},
            "cluster": cluster,
        });
        if let (Some(req), Value::Object(extra)) = (request.as_object_mut(), extra) {
            req.extend(extra);
        }
        let url = format!("{}{}", self.base, handler_path(hook, handler));
        post(&self.http, &url, &request).await.map(Some)
    }
}

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status();
    let text = response.text().await.map_err(|e| format!("POST {url}: {e}"))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("POST {url} answered {status} with non-JSON ({e}): {text}"))
}
