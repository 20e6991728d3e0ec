//! GitHub releases as a release source (upstream's default source, §3.5).
//!
//! Fixed quirks: all pages are listed by following `Link: rel="next"` (upstream read only the first 30
//! releases, §9.1), tags are listed by `tag_name` (upstream used the release title), and there is no
//! extra "repository exists" call per listing. The API base URL is configurable (GitHub Enterprise,
//! tests) and the token optional.
//!
//! The token goes to the configured API host only: next-page links and asset URLs the API names must be
//! on that host (GitHub serves both there; an asset download's redirect to object storage is followed
//! without the token), a token is never sent over plain HTTP except to a loopback address, and an
//! HTTPS API is never left for plain HTTP. Each asset is capped in size and a release in asset count.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{BoxFuture, ReleaseSource};
use crate::release::download::CancelOnDrop;
use crate::release::error::ReleaseError;

/// Where and how to reach a GitHub repository.
#[derive(Clone, Default)]
pub struct GitHubConfig {
    /// API base, e.g. `https://api.github.com` (no trailing slash needed).
    pub api_url: String,
    /// Owner (organisation or user).
    pub owner: String,
    /// Repository.
    pub repository: String,
    /// Optional token, sent as `Authorization: Bearer`.
    pub token: Option<String>,
    /// Largest asset accepted ([`MAX_ASSET_BYTES`] when unset).
    pub max_asset_bytes: Option<u64>,
}

/// Largest release asset downloaded by default: the same cap as an OCI release layer.
pub const MAX_ASSET_BYTES: u64 = 512 << 20;
/// Most assets one release may have (a release has about six files).
pub const MAX_ASSETS: usize = 64;

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token.
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("owner", &self.owner)
            .field("repository", &self.repository)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("max_asset_bytes", &self.max_asset_bytes)
            .finish()
    }
}

/// Releases of one GitHub repository.
#[derive(Debug, Clone)]
pub struct GitHubSource {
    config: GitHubConfig,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct ReleaseJson {
    tag_name: String,
    #[serde(default)]
    draft: bool,
    #[serde(default)]
    assets: Vec<AssetJson>,
}

#[derive(Deserialize)]
struct AssetJson {
    name: String,
    url: String,
    #[serde(default)]
    size: u64,
}

/// The `rel="next"` URL of a `Link` header.
pub(crate) fn next_link(header: &str) -> Option<String> {
    header.split(',').find_map(|part| {
        let mut pieces = part.split(';');
        let url = pieces.next()?.trim();
        let is_next = pieces.any(|p| {
            let p = p.trim();
            p == "rel=\"next\"" || p == "rel=next"
        });
        (is_next && url.starts_with('<') && url.ends_with('>')).then(|| url[1..url.len() - 1].to_owned())
    })
}

impl GitHubSource {
    /// A source for `config`.
    pub fn new(mut config: GitHubConfig) -> Self {
        if config.api_url.is_empty() {
            config.api_url = "https://api.github.com".into();
        }
        while config.api_url.ends_with('/') {
            config.api_url.pop();
        }
        let agent = ureq::Agent::new_with_config(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(300)))
                // An HTTPS API is never left for plain HTTP, not even by a redirect. (ureq never
                // forwards the Authorization header on a redirect.)
                .https_only(config.api_url.starts_with("https://"))
                .user_agent("stackhost")
                .build(),
        );
        Self { config, agent }
    }

    fn repo_url(&self) -> String {
        format!(
            "{}/repos/{}/{}",
            self.config.api_url, self.config.owner, self.config.repository
        )
    }

    /// Scheme, host and port of `url`.
    fn origin_of(url: &str) -> Option<(String, String, Option<u16>)> {
        let url = url::Url::parse(url).ok()?;
        Some((
            url.scheme().to_owned(),
            url.host_str()?.to_owned(),
            url.port_or_known_default(),
        ))
    }

    /// `url`, named by the API as `what`, must be on the API host: the token goes nowhere else.
    fn on_api_host(&self, url: &str, what: &str) -> Result<(), ReleaseError> {
        let api = Self::origin_of(&self.config.api_url);
        if api.is_some() && Self::origin_of(url) == api {
            return Ok(());
        }
        Err(self.err(format!(
            "{what} {url} is not on the API host {}; refusing to follow it (credentials and \
             downloads stay on the configured API host)",
            self.config.api_url
        )))
    }

    fn get(&self, url: &str, accept: &str) -> Result<ureq::http::Response<ureq::Body>, ReleaseError> {
        let mut req = self
            .agent
            .get(url)
            .header("Accept", accept)
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(token) = &self.config.token {
            let plain = url.starts_with("http://");
            let loopback =
                Self::origin_of(url).is_some_and(|(_, host, _)| crate::oci::registry::is_loopback(&host));
            if plain && !loopback {
                return Err(self.err(format!(
                    "refusing to send the token over plain HTTP to {url}; use an https:// API URL"
                )));
            }
            req = req.header("Authorization", &format!("Bearer {token}"));
        }
        req.call().map_err(|e| self.err(format!("GET {url} failed: {e}")))
    }

    fn err(&self, message: String) -> ReleaseError {
        ReleaseError::Source {
            source_name: self.describe(),
            message,
        }
    }

    fn status_error(&self, url: &str, resp: &mut ureq::http::Response<ureq::Body>) -> ReleaseError {
        let status = resp.status();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        let detail = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let hint = match status.as_u16() {
            401 => " (check the token)",
            403 | 429 => " (rate limited or forbidden: configure a token)",
            _ => "",
        };
        self.err(format!("GET {url} returned {status}{hint}: {detail}"))
    }

    fn list_sync(&self) -> Result<Vec<String>, ReleaseError> {
        let mut url = Some(format!("{}/releases?per_page=100", self.repo_url()));
        let mut tags = Vec::new();
        let mut pages = 0;
        while let Some(current) = url.take() {
            pages += 1;
            if pages > 1000 {
                return Err(self.err("more than 1000 pages of releases; refusing to continue".into()));
            }
            let mut resp = self.get(&current, "application/vnd.github+json")?;
            if !resp.status().is_success() {
                return Err(self.status_error(&current, &mut resp));
            }
            url = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(next_link);
            if let Some(next) = &url {
                self.on_api_host(next, "the next page")?;
            }
            let body = resp
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| self.err(format!("GET {current}: reading the response failed: {e}")))?;
            let releases: Vec<ReleaseJson> = serde_json::from_str(&body)
                .map_err(|e| self.err(format!("GET {current}: unexpected response: {e}")))?;
            tags.extend(releases.into_iter().filter(|r| !r.draft).map(|r| r.tag_name));
        }
        Ok(tags)
    }

    fn download_sync(&self, tag: &str, dest: &Path, stop: &AtomicBool) -> Result<(), ReleaseError> {
        let url = format!("{}/releases/tags/{tag}", self.repo_url());
        let mut resp = self.get(&url, "application/vnd.github+json")?;
        if resp.status().as_u16() == 404 {
            return Err(ReleaseError::NotFound {
                tag: tag.to_owned(),
                source_name: self.describe(),
            });
        }
        if !resp.status().is_success() {
            return Err(self.status_error(&url, &mut resp));
        }
        let body = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| self.err(format!("GET {url}: reading the response failed: {e}")))?;
        let release: ReleaseJson = serde_json::from_str(&body)
            .map_err(|e| self.err(format!("GET {url}: unexpected response: {e}")))?;
        if release.assets.len() > MAX_ASSETS {
            return Err(self.err(format!(
                "release {tag} has {} assets, more than the {MAX_ASSETS} a release may have",
                release.assets.len()
            )));
        }
        let cap = self.config.max_asset_bytes.unwrap_or(MAX_ASSET_BYTES);
        let too_large = |name: &str| {
            self.err(format!(
                "release {tag}: asset {name} is larger than {cap} bytes, the limit of one release asset"
            ))
        };
        for asset in release.assets {
            if asset.name.is_empty() || asset.name.contains(['/', '\\']) || asset.name.starts_with('.') {
                return Err(self.err(format!(
                    "release {tag} has an asset with an unsafe name {:?}",
                    asset.name
                )));
            }
            self.on_api_host(&asset.url, &format!("asset {} at", asset.name))?;
            if asset.size > cap {
                return Err(too_large(&asset.name));
            }
            let mut resp = self.get(&asset.url, "application/octet-stream")?;
            if !resp.status().is_success() {
                return Err(self.status_error(&asset.url, &mut resp));
            }
            let path = dest.join(&asset.name);
            let mut file = std::fs::File::create(&path).map_err(ReleaseError::io("cannot create", &path))?;
            let mut reader = resp.body_mut().with_config().limit(u64::MAX).reader();
            let written = copy(&mut reader, &mut file, stop, cap)
                .map_err(|e| self.err(format!("downloading {} failed: {e}", asset.name)))?;
            if written > cap {
                return Err(too_large(&asset.name));
            }
        }
        Ok(())
    }
}

/// Copies until the end, until more than `cap` bytes were copied (the count says so), or until `stop`
/// (nobody waits for the download any more).
fn copy(
    reader: &mut impl Read,
    file: &mut std::fs::File,
    stop: &AtomicBool,
    cap: u64,
) -> std::io::Result<u64> {
    let mut buf = vec![0u8; 64 << 10];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::other("stopped: the download is no longer wanted"));
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n])?;
        total += n as u64;
        if total > cap {
            return Ok(total);
        }
    }
}

impl ReleaseSource for GitHubSource {
    fn describe(&self) -> String {
        format!(
            "GitHub {}/{} ({})",
            self.config.owner, self.config.repository, self.config.api_url
        )
    }

    fn id(&self) -> String {
        let requester = match &self.config.token {
            Some(token) => crate::oci::auth::fingerprint(&["token", token]),
            None => "anonymous".to_owned(),
        };
        format!("{} as {requester}", self.describe())
    }

    fn origin(&self) -> String {
        self.config.api_url.clone()
    }

    fn list_releases(&self) -> BoxFuture<'_, Result<Vec<String>, ReleaseError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.list_sync())
                .await
                .map_err(|e| ReleaseError::Source {
                    source_name: self.describe(),
                    message: e.to_string(),
                })?
        })
    }

    fn download<'a>(&'a self, tag: &'a str, dest: &'a Path) -> BoxFuture<'a, Result<(), ReleaseError>> {
        let this = self.clone();
        let (tag, dest) = (tag.to_owned(), dest.to_owned());
        Box::pin(async move {
            // The copy runs on a blocking thread: dropping this future (a deadline, a deleted
            // release) tells it to stop.
            let stop = CancelOnDrop::default();
            let flag: Arc<AtomicBool> = stop.0.clone();
            let result = tokio::task::spawn_blocking(move || this.download_sync(&tag, &dest, &flag)).await;
            drop(stop);
            result.map_err(|e| ReleaseError::Source {
                source_name: self.describe(),
                message: e.to_string(),
            })?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::next_link;

    #[test]
    fn link_header_next() {
        let h = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        let last = r#"<https://x/releases?page=4>; rel="prev", <https://x/releases?page=1>; rel="first""#;
        assert_eq!(next_link(last), None);
    }
}
