//! Registry client: `oci-client` underneath, with what a controller needs on top:
//! retries with exponential backoff on 5xx, 429, timeouts and connection errors; a deadline per
//! request and an inactivity timeout per streamed chunk; size caps checked before and during a
//! download; digest and size verification of everything received; mirrors tried in order with
//! the digest enforced; and the plain-HTTP policy (loopback or explicitly insecure only).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use reqwest::header::HeaderValue;
use tokio::io::AsyncWriteExt;

use super::auth::Credentials;
use super::digest::{self, Hasher};
use super::error::{OciError, Result};
use super::manifest::{self, Descriptor, FetchedManifest};

/// How often and how patiently to retry transient failures.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts per endpoint, including the first (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled after each failure.
    pub initial_backoff: Duration,
    /// Upper bound for one wait.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // 4 attempts over ~1.4 s: rides out a registry restart or a load balancer hiccup
        // without holding a reconcile for long; the controller requeues after that anyway.
        RetryPolicy {
            attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    fn backoff(&self, failed_attempts: u32) -> Duration {
        let factor = 2u32.saturating_pow(failed_attempts.saturating_sub(1));
        self.initial_backoff.saturating_mul(factor).min(self.max_backoff)
    }
}

/// A mirror rule: references under `prefix` (`registry/repo-prefix`) are fetched from the
/// `endpoints` in order (each a `registry[/path]`, optionally `http://` for insecure ones),
/// then from the origin. Whatever a mirror serves must match the digest the reference pins or
/// resolved to, or it is skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub prefix: String,
    pub endpoints: Vec<String>,
}

impl FromStr for Mirror {
    type Err = OciError;

    /// `registry.example/plugins=mirror.local:5000/plugins,http://127.0.0.1:5001/p`
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: &str| OciError::InvalidReference {
            reference: s.to_string(),
            reason: format!("mirror rule {reason} (expected `PREFIX=ENDPOINT[,ENDPOINT...]`)"),
        };
        let (prefix, endpoints) = s.split_once('=').ok_or_else(|| bad("has no `=`"))?;
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| e.trim_end_matches('/').to_string())
            .collect();
        if prefix.trim().is_empty() || endpoints.is_empty() {
            return Err(bad("needs a prefix and at least one endpoint"));
        }
        Ok(Mirror {
            prefix: prefix.trim().trim_end_matches('/').to_string(),
            endpoints,
        })
    }
}

/// Registry client settings. The defaults suit a controller pulling plugins and releases.
#[derive(Debug, Clone)]
pub struct RegistryConfig {
    /// Registry hosts (`host[:port]`) that may be reached over plain HTTP. Loopback always may.
    pub insecure: Vec<String>,
    /// Mirror rules, tried in order before the origin.
    pub mirrors: Vec<Mirror>,
    /// Credentials per registry host.
    pub credentials: Credentials,
    /// Retry policy for transient failures.
    pub retry: RetryPolicy,
    /// Deadline for one request up to its response headers (and for small bodies).
    pub request_timeout: Duration,
    /// Longest silence tolerated while streaming a blob.
    pub read_timeout: Duration,
    /// Largest manifest accepted (the distribution spec suggests registries accept 4 MiB).
    pub max_manifest_bytes: u64,
    /// Largest config blob or signature payload accepted.
    pub max_config_bytes: u64,
    /// Largest layer accepted (a plugin or a release file).
    pub max_blob_bytes: u64,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            insecure: Vec::new(),
            mirrors: Vec::new(),
            credentials: Credentials::anonymous(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(30),
            max_manifest_bytes: 4 << 20,
            max_config_bytes: 1 << 20,
            // Plugins are a few MB; release chart tarballs with vendored sub-charts tens of MB.
            max_blob_bytes: 512 << 20,
        }
    }
}

/// Whether `host[:port]` is a loopback address.
pub fn is_loopback(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// One place a reference can be fetched from: the origin or a mirror.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The reference rewritten for this endpoint.
    pub reference: Reference,
    /// Whether this is a mirror (for messages).
    pub mirror: bool,
}

enum Failure {
    Retry(String),
    Fatal(OciError),
}

/// Render a reference the way users typed it: `registry/repo:tag` or `registry/repo@digest`.
pub fn display(r: &Reference) -> String {
    r.whole()
}

/// Parse a reference. A leading `http://` asks for plain HTTP, allowed only for loopback or
/// insecure registries; a leading `https://` is accepted and ignored.
pub fn parse_reference(s: &str, insecure: &[String]) -> Result<Reference> {
    let (rest, plain_http) = if let Some(rest) = s.strip_prefix("http://") {
        (rest, true)
    } else if let Some(rest) = s.strip_prefix("https://") {
        (rest, false)
    } else {
        (s, false)
    };
    let reference = Reference::from_str(rest).map_err(|e| OciError::InvalidReference {
        reference: s.to_string(),
        reason: format!("{e} (expected `registry/repository:tag` or `registry/repository@sha256:...`)"),
    })?;
    if let Some(d) = reference.digest() {
        digest::hex_part(s, d)?;
    }
    if plain_http && !is_loopback(reference.registry()) && !insecure.iter().any(|h| h == reference.registry())
    {
        return Err(OciError::InsecureRegistry {
            registry: reference.registry().to_string(),
        });
    }
    Ok(reference)
}

/// A registry client. Cheap to share behind an `Arc`; holds one HTTP client per registry host.
#[derive(Debug)]
pub struct Registry {
    config: RegistryConfig,
    clients: Mutex<HashMap<String, Arc<ClientHandle>>>,
    progress: Option<indicatif::MultiProgress>,
}

struct ClientHandle {
    client: Client,
    auth: RegistryAuth,
    /// Plain HTTP client for manifest GETs, which are streamed here to enforce the size cap
    /// while reading (oci-client buffers a manifest body whole).
    http: reqwest::Client,
    scheme: &'static str,
}

impl std::fmt::Debug for ClientHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandle").finish_non_exhaustive()
    }
}

impl Registry {
    /// A client with `config`.
    pub fn new(config: RegistryConfig) -> Self {
        Registry {
            config,
            clients: Mutex::new(HashMap::new()),
            progress: None,
        }
    }

    /// Show progress bars for blob transfers (CLI use).
    pub fn with_progress(mut self, progress: indicatif::MultiProgress) -> Self {
        self.progress = Some(progress);
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// Parse a reference under this client's insecure policy.
    pub fn parse(&self, s: &str) -> Result<Reference> {
        parse_reference(s, &self.config.insecure)
    }

    fn plain_http(&self, host: &str) -> bool {
        is_loopback(host) || self.config.insecure.iter().any(|h| h == host)
    }

    fn client_for(&self, host: &str) -> Arc<ClientHandle> {
        let mut clients = match self.clients.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        };
        clients
            .entry(host.to_string())
            .or_insert_with(|| {
                let protocol = if self.plain_http(host) {
                    ClientProtocol::Http
                } else {
                    ClientProtocol::Https
                };
                let client = Client::new(ClientConfig {
                    protocol,
                    connect_timeout: Some(self.config.request_timeout.min(Duration::from_secs(10))),
                    // No reqwest read timeout: deadlines are enforced around each request and each
                    // streamed chunk here, so the error says which one expired.
                    read_timeout: None,
                    // Blobs up to 512 MiB go in one PUT; chunked uploads add round trips for no gain here.
                    use_monolithic_push: true,
                    platform_resolver: None,
                    user_agent: concat!("stackhost/", env!("CARGO_PKG_VERSION")),
                    ..ClientConfig::default()
                });
                let http = reqwest::Client::builder()
                    .connect_timeout(self.config.request_timeout.min(Duration::from_secs(10)))
                    .user_agent(concat!("stackhost/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .unwrap_or_default();
                Arc::new(ClientHandle {
                    client,
                    auth: self.config.credentials.registry_auth(host),
                    http,
                    scheme: if self.plain_http(host) { "http" } else { "https" },
                })
            })
            .clone()
    }

    /// Where `reference` can be fetched from: matching mirrors first, then the origin.
    pub fn endpoints(&self, reference: &Reference) -> Result<Vec<Endpoint>> {
        let full = format!("{}/{}", reference.registry(), reference.repository());
        let mut out = Vec::new();
        for mirror in &self.config.mirrors {
            let rest = if full == mirror.prefix {
                ""
            } else if let Some(rest) = full.strip_prefix(&format!("{}/", mirror.prefix)) {
                rest
            } else {
                continue;
            };
            for endpoint in &mirror.endpoints {
                let joined = if rest.is_empty() {
                    endpoint.clone()
                } else {
                    format!("{endpoint}/{rest}")
                };
                let base = parse_reference(&format!("{joined}:latest"), &self.config.insecure)?;
                if joined.starts_with("http://") && !is_loopback(base.registry()) {
                    self.check_insecure(base.registry())?;
                }
                let rewritten = match (reference.tag(), reference.digest()) {
                    (_, Some(d)) => {
                        Reference::with_digest(base.registry().into(), base.repository().into(), d.into())
                    }
                    (Some(t), None) => {
                        Reference::with_tag(base.registry().into(), base.repository().into(), t.into())
                    }
                    (None, None) => {
                        Reference::with_tag(base.registry().into(), base.repository().into(), "latest".into())
                    }
                };
                out.push(Endpoint {
                    reference: rewritten,
                    mirror: true,
                });
            }
        }
        out.push(Endpoint {
            reference: reference.clone(),
            mirror: false,
        });
        Ok(out)
    }

    fn check_insecure(&self, host: &str) -> Result<()> {
        if self.plain_http(host) {
            Ok(())
        } else {
            Err(OciError::InsecureRegistry {
                registry: host.to_string(),
            })
        }
    }

    /// Run `op` against one endpoint with retries and backoff on transient failures.
    async fn retry<T, F, Fut>(&self, what: &str, endpoint: &Reference, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, Failure>>,
    {
        let attempts = self.config.retry.attempts.max(1);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                let wait = self.config.retry.backoff(attempt - 1);
                tracing::warn!(reference = %display(endpoint), what, attempt, ?wait, error = %last_error, "retrying registry request");
                tokio::time::sleep(wait).await;
            }
            match op().await {
                Ok(v) => return Ok(v),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(msg)) => last_error = format!("{what}: {msg}"),
            }
        }
        Err(OciError::Unavailable {
            reference: display(endpoint),
            registry: endpoint.registry().to_string(),
            attempts,
            last_error,
        })
    }

    /// Try each endpoint in order; content errors (digest/size) and unavailability move on to
    /// the next one, anything else (401, 404 at the origin, ...) is returned as is. The error of
    /// the origin, or of the last endpoint, is reported when all fail.
    async fn across_endpoints<T, F, Fut>(&self, reference: &Reference, mut op: F) -> Result<T>
    where
        F: FnMut(Endpoint) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let endpoints = self.endpoints(reference)?;
        let mut first_mirror_error: Option<OciError> = None;
        for endpoint in endpoints {
            let is_mirror = endpoint.mirror;
            let label = display(&endpoint.reference);
            match op(endpoint).await {
                Ok(v) => return Ok(v),
                Err(e) if is_mirror => {
                    tracing::warn!(mirror = %label, error = %e, "mirror failed, trying the next source");
                    first_mirror_error.get_or_insert(e);
                }
                Err(e) => {
                    // The origin failed too. A content error at a mirror is the more telling
                    // message when the origin is merely unreachable.
                    return Err(match (e, first_mirror_error) {
                        (OciError::Unavailable { .. }, Some(m)) if m.is_content_error() => m,
                        (e, _) => e,
                    });
                }
            }
        }
        Err(first_mirror_error.unwrap_or_else(|| OciError::Registry {
            reference: display(reference),
            message: "no endpoint to fetch from".into(),
        }))
    }

    fn classify(&self, e: OciDistributionError, endpoint: &Reference, operation: &'static str) -> Failure {
        let reference = display(endpoint);
        let registry = endpoint.registry().to_string();
        match e {
            OciDistributionError::UnauthorizedError { .. }
            | OciDistributionError::AuthenticationFailure(_) => {
                Failure::Fatal(OciError::Unauthorized { reference, registry })
            }
            OciDistributionError::ImageManifestNotFoundError(_) => {
                Failure::Fatal(OciError::NotFound { reference })
            }
            OciDistributionError::RegistryError { envelope, .. } => {
                let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
                if codes.iter().any(|c| matches!(c, OciErrorCode::Unauthorized)) {
                    Failure::Fatal(OciError::Unauthorized { reference, registry })
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Denied)) {
                    Failure::Fatal(OciError::Forbidden {
                        reference,
                        registry,
                        operation,
                    })
                } else if codes.iter().any(|c| {
                    matches!(
                        c,
                        OciErrorCode::ManifestUnknown
                            | OciErrorCode::NameUnknown
                            | OciErrorCode::BlobUnknown
                            | OciErrorCode::NotFound
                    )
                }) {
                    Failure::Fatal(OciError::NotFound { reference })
                } else if codes.iter().any(|c| matches!(c, OciErrorCode::Toomanyrequests)) {
                    Failure::Retry(envelope.to_string())
                } else {
                    Failure::Fatal(OciError::Registry {
                        reference,
                        message: envelope.to_string(),
                    })
                }
            }
            OciDistributionError::ServerError { code, message, .. } => match code {
                401 => Failure::Fatal(OciError::Unauthorized { reference, registry }),
                403 => Failure::Fatal(OciError::Forbidden {
                    reference,
                    registry,
                    operation,
                }),
                404 => Failure::Fatal(OciError::NotFound { reference }),
                408 | 429 | 500..=599 => Failure::Retry(format!("HTTP {code} {}", message.trim())),
                _ => Failure::Fatal(OciError::Registry {
                    reference,
                    message: format!("HTTP {code}: {}", message.trim()),
                }),
            },
            OciDistributionError::RequestError(e) => {
                if e.is_timeout() || e.is_connect() || e.is_request() || e.is_body() || e.is_decode() {
                    Failure::Retry(error_chain(&e))
                } else {
                    Failure::Fatal(OciError::Registry {
                        reference,
                        message: error_chain(&e),
                    })
                }
            }
            OciDistributionError::IoError(e) => Failure::Retry(e.to_string()),
            OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
                expected,
                actual,
            }) => Failure::Fatal(OciError::DigestMismatch {
                reference,
                what: "manifest".into(),
                expected,
                actual,
            }),
            other => Failure::Fatal(OciError::Registry {
                reference,
                message: other.to_string(),
            }),
        }
    }

    async fn timed<T>(
        &self,
        endpoint: &Reference,
        fut: impl Future<Output = std::result::Result<T, OciDistributionError>>,
        operation: &'static str,
    ) -> std::result::Result<T, Failure> {
        match tokio::time::timeout(self.config.request_timeout, fut).await {
            Err(_) => {
                Failure::Retry(format!("no answer within {:?}", self.config.request_timeout)).into_err()
            }
            Ok(Err(e)) => Err(self.classify(e, endpoint, operation)),
            Ok(Ok(v)) => Ok(v),
        }
    }

    /// Fetch a manifest, following mirrors. If `reference` pins a digest, every source must serve
    /// exactly that; otherwise the digest of the bytes received is returned for pinning.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let cap = self.config.max_manifest_bytes;
        let shown = display(reference);
        self.across_endpoints(reference, |endpoint| {
            let shown = shown.clone();
            async move {
                let handle = self.client_for(endpoint.reference.resolve_registry());
                let r = &endpoint.reference;
                let (bytes, content_type) = self
                    .retry("manifest", r, || self.get_manifest_once(&handle, r, &shown, cap))
                    .await?;
                let actual = digest::sha256(&bytes);
                if let Some(expected) = reference.digest() {
                    if expected != actual {
                        return Err(OciError::DigestMismatch {
                            reference: display(r),
                            what: "manifest".into(),
                            expected: expected.to_string(),
                            actual,
                        });
                    }
                }
                let media_type = manifest::declared_media_type(&bytes)
                    .or(content_type)
                    .unwrap_or_else(|| manifest::OCI_MANIFEST.to_string());
                Ok(FetchedManifest {
                    digest: actual,
                    media_type,
                    bytes,
                })
            }
        })
        .await
    }

    /// One manifest GET, streamed with the size cap enforced while reading. Token negotiation
    /// (anonymous, basic, bearer challenge) is oci-client's; the request itself is ours.
    async fn get_manifest_once(
        &self,
        handle: &ClientHandle,
        r: &Reference,
        shown: &str,
        cap: u64,
    ) -> std::result::Result<(Vec<u8>, Option<String>), Failure> {
        let token = self
            .timed(
                r,
                handle.client.auth(r, &handle.auth, RegistryOperation::Pull),
                "pull",
            )
            .await?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            handle.scheme,
            r.resolve_registry(),
            r.repository(),
            r.digest().or(r.tag()).unwrap_or("latest")
        );
        let accept = [
            manifest::OCI_MANIFEST,
            manifest::DOCKER_MANIFEST,
            manifest::OCI_INDEX,
        ]
        .join(", ");
        let mut request = handle.http.get(&url).header(reqwest::header::ACCEPT, accept);
        request = match (&token, &handle.auth) {
            (Some(token), _) => request.bearer_auth(token),
            (None, RegistryAuth::Basic(user, password)) => request.basic_auth(user, Some(password)),
            (None, RegistryAuth::Bearer(token)) => request.bearer_auth(token),
            (None, RegistryAuth::Anonymous) => request,
        };
        let response = match tokio::time::timeout(self.config.request_timeout, request.send()).await {
            Err(_) => {
                return Err(Failure::Retry(format!(
                    "no answer within {:?}",
                    self.config.request_timeout
                )))
            }
            Ok(Err(e)) => return Err(self.classify(OciDistributionError::RequestError(e), r, "pull")),
            Ok(Ok(resp)) => resp,
        };
        let status = response.status();
        if !status.is_success() {
            let code = status.as_u16();
            let body = tokio::time::timeout(self.config.read_timeout, response.bytes())
                .await
                .ok()
                .and_then(|b| b.ok())
                .unwrap_or_default();
            let body = &body[..body.len().min(4096)];
            let error = match serde_json::from_slice::<oci_client::errors::OciEnvelope>(body) {
                Ok(envelope) if code != 401 && !(500..=599).contains(&code) && code != 429 => {
                    OciDistributionError::RegistryError { envelope, url }
                }
                _ => OciDistributionError::ServerError {
                    code,
                    url,
                    message: String::from_utf8_lossy(body).into_owned(),
                },
            };
            return Err(self.classify(error, r, "pull"));
        }
        let too_large = |size: u64| {
            Failure::Fatal(OciError::TooLarge {
                reference: shown.to_string(),
                what: "manifest".into(),
                size,
                cap,
                flag: "manifest",
            })
        };
        if let Some(len) = response.content_length().filter(|len| *len > cap) {
            return Err(too_large(len));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string());
        let mut stream = response.bytes_stream();
        let mut bytes = Vec::new();
        loop {
            match tokio::time::timeout(self.config.read_timeout, stream.next()).await {
                Err(_) => {
                    return Err(Failure::Retry(format!(
                        "manifest body stalled for {:?}",
                        self.config.read_timeout
                    )))
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(Failure::Retry(format!("reading manifest: {}", error_chain(&e))))
                }
                Ok(Some(Ok(chunk))) => {
                    bytes.extend_from_slice(&chunk);
                    if bytes.len() as u64 > cap {
                        return Err(too_large(bytes.len() as u64));
                    }
                }
            }
        }
        Ok((bytes, content_type))
    }

    /// Resolve a reference to its manifest digest (fetching the manifest once).
    pub async fn resolve(&self, reference: &Reference) -> Result<String> {
        Ok(self.fetch_manifest(reference).await?.digest)
    }

    /// Fetch a small blob (config, signature payload) into memory, verified.
    pub async fn fetch_blob_bytes(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>> {
        let cap = self.config.max_config_bytes;
        self.check_cap(reference, desc, what, cap, "config")?;
        let mut out = Vec::new();
        self.fetch_blob(reference, desc, what, &mut BlobSink::Memory(&mut out))
            .await?;
        Ok(out)
    }

    /// Fetch a layer into `path` (created or truncated), verified; `path` holds exactly the
    /// blob on success and unspecified content on error.
    pub async fn fetch_blob_to_file(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
        path: &Path,
    ) -> Result<()> {
        self.check_cap(reference, desc, what, self.config.max_blob_bytes, "blob")?;
        self.fetch_blob(reference, desc, what, &mut BlobSink::File(path))
            .await
    }

    fn check_cap(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
        cap: u64,
        flag: &'static str,
    ) -> Result<()> {
        if desc.size > cap {
            return Err(OciError::TooLarge {
                reference: display(reference),
                what: format!("{what} {}", desc.digest),
                size: desc.size,
                cap,
                flag,
            });
        }
        digest::hex_part(&display(reference), &desc.digest)?;
        Ok(())
    }

    async fn fetch_blob(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
        sink: &mut BlobSink<'_>,
    ) -> Result<()> {
        let digest_ref = reference.clone_with_digest(desc.digest.clone());
        // Mirrors and retries need a fresh sink per try, so the loop is spelled out here.
        let endpoints = self.endpoints(&digest_ref)?;
        let mut first_mirror_error: Option<OciError> = None;
        for endpoint in endpoints {
            let r = endpoint.reference.clone();
            let result = self.retry_blob(&r, desc, what, sink).await;
            match result {
                Ok(()) => return Ok(()),
                Err(e) if endpoint.mirror => {
                    tracing::warn!(mirror = %display(&r), error = %e, "mirror failed, trying the next source");
                    first_mirror_error.get_or_insert(e);
                }
                Err(e) => {
                    return Err(match (e, first_mirror_error) {
                        (OciError::Unavailable { .. }, Some(m)) if m.is_content_error() => m,
                        (e, _) => e,
                    })
                }
            }
        }
        Err(first_mirror_error.unwrap_or_else(|| OciError::NotFound {
            reference: display(reference),
        }))
    }

    async fn retry_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        what: &str,
        sink: &mut BlobSink<'_>,
    ) -> Result<()> {
        let attempts = self.config.retry.attempts.max(1);
        let mut last_error = String::new();
        for attempt in 1..=attempts {
            if attempt > 1 {
                let wait = self.config.retry.backoff(attempt - 1);
                tracing::warn!(reference = %display(r), what, attempt, ?wait, error = %last_error, "retrying blob download");
                tokio::time::sleep(wait).await;
            }
            match self.stream_blob_once(r, desc, what, sink).await {
                Ok(()) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Retry(msg)) => last_error = format!("{what}: {msg}"),
            }
        }
        Err(OciError::Unavailable {
            reference: display(r),
            registry: r.registry().to_string(),
            attempts,
            last_error,
        })
    }

    async fn stream_blob_once(
        &self,
        r: &Reference,
        desc: &Descriptor,
        what: &str,
        sink: &mut BlobSink<'_>,
    ) -> std::result::Result<(), Failure> {
        let handle = self.client_for(r.resolve_registry());
        handle
            .client
            .store_auth_if_needed(r.resolve_registry(), &handle.auth)
            .await;
        let mut stream = self
            .timed(r, handle.client.pull_blob_stream(r, desc.digest.as_str()), "pull")
            .await?;
        let mut writer = sink.open().await.map_err(Failure::Fatal)?;
        let bar = self.progress_bar(desc, what);
        let mut hasher = Hasher::new();
        let shown = display(r);
        loop {
            let next = match tokio::time::timeout(self.config.read_timeout, stream.next()).await {
                Err(_) => {
                    return Err(Failure::Retry(format!(
                        "no data for {:?} after {} of {} bytes",
                        self.config.read_timeout,
                        hasher.len(),
                        desc.size
                    )))
                }
                Ok(n) => n,
            };
            match next {
                None => break,
                Some(Ok(chunk)) => {
                    hasher.update(&chunk);
                    if hasher.len() > desc.size {
                        return Err(Failure::Fatal(OciError::SizeMismatch {
                            reference: shown,
                            what: what.to_string(),
                            digest: desc.digest.clone(),
                            expected: desc.size,
                            received: hasher.len(),
                        }));
                    }
                    writer.write(&chunk).await.map_err(Failure::Fatal)?;
                    if let Some(bar) = &bar {
                        bar.set_position(hasher.len());
                    }
                }
                Some(Err(e)) => {
                    let is_digest = e
                        .get_ref()
                        .is_some_and(|inner| inner.is::<oci_client::errors::DigestError>());
                    if !is_digest {
                        return Err(Failure::Retry(format!("reading {what}: {e}")));
                    }
                    // oci-client's own check fired at the end of the stream; report ours below.
                    break;
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        if hasher.len() != desc.size {
            return Err(Failure::Fatal(OciError::SizeMismatch {
                reference: shown,
                what: what.to_string(),
                digest: desc.digest.clone(),
                expected: desc.size,
                received: hasher.len(),
            }));
        }
        let actual = hasher.finish();
        if actual != desc.digest {
            return Err(Failure::Fatal(OciError::DigestMismatch {
                reference: shown,
                what: what.to_string(),
                expected: desc.digest.clone(),
                actual,
            }));
        }
        writer.finish().await.map_err(Failure::Fatal)?;
        Ok(())
    }

    fn progress_bar(&self, desc: &Descriptor, what: &str) -> Option<indicatif::ProgressBar> {
        let progress = self.progress.as_ref()?;
        if desc.size < (1 << 20) {
            return None;
        }
        let bar = progress.add(indicatif::ProgressBar::new(desc.size));
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:20} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what.to_string());
        Some(bar)
    }

    fn upload_spinner(&self, size: u64, what: &str) -> Option<indicatif::ProgressBar> {
        let progress = self.progress.as_ref()?;
        if size < (1 << 20) {
            return None;
        }
        let bar = progress.add(indicatif::ProgressBar::new_spinner());
        bar.set_message(format!("uploading {what} ({} KiB)", size / 1024));
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    }

    /// Whether the repository of `reference` already has blob `digest`.
    pub async fn blob_exists(&self, reference: &Reference, digest: &str) -> Result<bool> {
        let handle = self.client_for(reference.resolve_registry());
        self.retry("blob check", reference, || async {
            self.timed(reference, handle.client.blob_exists(reference, digest), "push")
                .await
        })
        .await
    }

    /// Upload a blob unless the repository has it already. Pushes go to the origin only.
    pub async fn push_blob(&self, reference: &Reference, bytes: &[u8], what: &str) -> Result<Descriptor> {
        let digest = digest::sha256(bytes);
        let handle = self.client_for(reference.resolve_registry());
        // Authenticate for push up front so a 401/403 is reported as such.
        self.auth_push(reference, &handle).await?;
        if !self.blob_exists(reference, &digest).await? {
            let bar = self.upload_spinner(bytes.len() as u64, what);
            let data = bytes::Bytes::copy_from_slice(bytes);
            self.retry(what, reference, || async {
                self.timed(
                    reference,
                    handle.client.push_blob(reference, data.clone(), &digest),
                    "push",
                )
                .await
            })
            .await?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        }
        Ok(Descriptor::for_bytes("", bytes))
    }

    async fn auth_push(&self, reference: &Reference, handle: &ClientHandle) -> Result<()> {
        self.retry("authenticate", reference, || async {
            self.timed(
                reference,
                handle
                    .client
                    .auth(reference, &handle.auth, RegistryOperation::Push),
                "push",
            )
            .await
        })
        .await
        .map(|_| ())
    }

    /// Upload a manifest under `reference`'s tag (or digest); returns its digest.
    pub async fn push_manifest(
        &self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<String> {
        let handle = self.client_for(reference.resolve_registry());
        let content_type = HeaderValue::from_str(media_type).map_err(|_| OciError::Registry {
            reference: display(reference),
            message: format!("media type `{media_type}` is not a valid header value"),
        })?;
        let data = bytes::Bytes::copy_from_slice(bytes);
        self.retry("manifest push", reference, || async {
            self.timed(
                reference,
                handle
                    .client
                    .push_manifest_raw(reference, data.clone(), content_type.clone()),
                "push",
            )
            .await
        })
        .await?;
        Ok(digest::sha256(bytes))
    }

    /// All tags of the repository of `reference`, sorted.
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>> {
        self.across_endpoints(reference, |endpoint| async move {
            let r = &endpoint.reference;
            let handle = self.client_for(r.resolve_registry());
            let resp = self
                .retry("tag list", r, || async {
                    self.timed(r, handle.client.list_tags(r, &handle.auth, None, None), "pull")
                        .await
                })
                .await?;
            let mut tags = resp.tags;
            tags.sort();
            Ok(tags)
        })
        .await
    }
}

impl Failure {
    fn into_err<T>(self) -> std::result::Result<T, Failure> {
        Err(self)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Where a streamed blob goes.
enum BlobSink<'a> {
    Memory(&'a mut Vec<u8>),
    File(&'a Path),
}

enum BlobWriter<'a> {
    Memory(&'a mut Vec<u8>),
    File(tokio::fs::File, &'a Path),
}

impl BlobSink<'_> {
    async fn open(&mut self) -> Result<BlobWriter<'_>> {
        match self {
            BlobSink::Memory(v) => {
                v.clear();
                Ok(BlobWriter::Memory(v))
            }
            BlobSink::File(path) => {
                let path: &Path = path;
                let file = tokio::fs::File::create(path)
                    .await
                    .map_err(|e| OciError::io("creating download file", path, e))?;
                Ok(BlobWriter::File(file, path))
            }
        }
    }
}

impl BlobWriter<'_> {
    async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            BlobWriter::Memory(v) => {
                v.extend_from_slice(chunk);
                Ok(())
            }
            BlobWriter::File(f, path) => f
                .write_all(chunk)
                .await
                .map_err(|e| OciError::io("writing download file", *path, e)),
        }
    }

    async fn finish(self) -> Result<()> {
        match self {
            BlobWriter::Memory(_) => Ok(()),
            BlobWriter::File(mut f, path) => {
                f.flush()
                    .await
                    .map_err(|e| OciError::io("writing download file", path, e))?;
                f.sync_all()
                    .await
                    .map_err(|e| OciError::io("syncing download file", path, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.1.2.3",
            "[::1]:5000",
            "::1",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["registry.example", "10.0.0.1:5000", "localhost.example:80"] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn plain_http_is_refused_for_remote_registries_unless_insecure() {
        let err = parse_reference("http://registry.example/p/noop:v1", &[])
            .expect_err("should fail")
            .to_string();
        assert!(
            err.contains("refusing plain HTTP to registry `registry.example`"),
            "{err}"
        );
        assert!(err.contains("--insecure registry.example"), "{err}");
        assert!(parse_reference("http://registry.example/p/noop:v1", &["registry.example".into()]).is_ok());
        assert!(parse_reference("http://127.0.0.1:5000/p/noop:v1", &[]).is_ok());
    }

    #[test]
    fn bad_references_are_explained() {
        let err = parse_reference("Not A Ref", &[])
            .expect_err("should fail")
            .to_string();
        assert!(err.contains("invalid OCI reference `Not A Ref`"), "{err}");
        let err = parse_reference("r.example/p@sha256:abc", &[])
            .expect_err("should fail")
            .to_string();
        assert!(err.contains("invalid OCI reference"), "{err}");
    }

    #[test]
    fn mirror_rules_rewrite_prefixes_and_keep_the_origin_last() -> Result<()> {
        let config = RegistryConfig {
            mirrors: vec!["registry.example/plugins=127.0.0.1:5001/cache,127.0.0.1:5002".parse()?],
            ..RegistryConfig::default()
        };
        let registry = Registry::new(config);
        let r = registry.parse("registry.example/plugins/openstack:v1")?;
        let e: Vec<String> = registry
            .endpoints(&r)?
            .iter()
            .map(|e| display(&e.reference))
            .collect();
        assert_eq!(
            e,
            [
                "127.0.0.1:5001/cache/openstack:v1",
                "127.0.0.1:5002/openstack:v1",
                "registry.example/plugins/openstack:v1"
            ]
        );
        let other = registry.parse("registry.example/pluginsx/a:v1")?;
        assert_eq!(registry.endpoints(&other)?.len(), 1);
        let err = "nothing".parse::<Mirror>().expect_err("should fail").to_string();
        assert!(err.contains("PREFIX=ENDPOINT"), "{err}");
        Ok(())
    }

    #[test]
    fn mirror_over_plain_http_must_be_loopback_or_insecure() -> Result<()> {
        let registry = Registry::new(RegistryConfig {
            mirrors: vec!["registry.example/p=http://mirror.example/p".parse()?],
            ..RegistryConfig::default()
        });
        let r = registry.parse("registry.example/p/a:v1")?;
        let err = registry.endpoints(&r).expect_err("should fail").to_string();
        assert!(
            err.contains("refusing plain HTTP to registry `mirror.example`"),
            "{err}"
        );
        Ok(())
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            attempts: 5,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
        };
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(3), Duration::from_millis(300));
    }
}
