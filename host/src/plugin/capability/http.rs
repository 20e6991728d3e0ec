//! `clusterstack:provider/http`: outbound HTTP, only to hosts the ProviderPlugin grants.
//!
//! The grant is checked here, before anything leaves the host; redirects are not followed (a granted
//! host could otherwise send the plugin anywhere); the response body is capped.

use std::time::Duration;

use crate::plugin::bindings::clusterstack::provider::http::{Host, HttpError, Request, Response};
use crate::plugin::store::CallState;

/// Longest a single plugin HTTP request may take, whatever the plugin asks for.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Used when the plugin gives no timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends a request that has already passed the grant check (real network, or a recorded cassette).
pub trait HttpTransport: Send + Sync {
    fn send(&self, request: &Request, timeout: Duration, max_body: usize) -> Result<Response, HttpError>;
}

/// CA certificates a plugin's HTTPS trusts besides the public roots (the ProviderPlugin's
/// `spec.capabilities.httpCABundle`, `--ca-file` on the command line).
#[derive(Clone)]
pub struct CaBundle {
    certs: Vec<ureq::tls::Certificate<'static>>,
    /// Where the bundle came from, for messages (`ConfigMap ns/name key ca.crt`, a file name).
    origin: String,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("origin", &self.origin)
            .field("certificates", &self.certs.len())
            .finish()
    }
}

impl CaBundle {
    /// Parses PEM text with one or more `CERTIFICATE` blocks (other blocks are ignored); each one
    /// must be a certificate rustls accepts as a trust anchor.
    pub fn from_pem(origin: &str, pem: &[u8]) -> Result<CaBundle, String> {
        let mut certs = Vec::new();
        for (i, item) in ureq::tls::parse_pem(pem).enumerate() {
            match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => {
                    let der = tokio_rustls::rustls::pki_types::CertificateDer::from(cert.der());
                    tokio_rustls::rustls::RootCertStore::empty()
                        .add(der)
                        .map_err(|e| {
                            format!(
                                "{origin}: PEM block {} is not a usable CA certificate: {e}",
                                i + 1
                            )
                        })?;
                    certs.push(cert);
                }
                Ok(_) => {}
                Err(e) => return Err(format!("{origin}: not valid PEM: {e}")),
            }
        }
        if certs.is_empty() {
            return Err(format!(
                "{origin}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it"
            ));
        }
        Ok(CaBundle {
            certs,
            origin: origin.to_string(),
        })
    }

    /// Reads a PEM file.
    pub fn from_file(path: &std::path::Path) -> Result<CaBundle, String> {
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        CaBundle::from_pem(&path.display().to_string(), &pem)
    }

    /// Several bundles as one (`--ca-file` given more than once).
    pub fn merge(bundles: Vec<CaBundle>) -> Option<CaBundle> {
        let origin = bundles
            .iter()
            .map(|b| b.origin.clone())
            .collect::<Vec<_>>()
            .join(", ");
        let certs: Vec<_> = bundles.into_iter().flat_map(|b| b.certs).collect();
        (!certs.is_empty()).then_some(CaBundle { certs, origin })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// The real transport: ureq, no redirects, statuses returned as data. With a CA bundle, a server
/// certificate is accepted when it chains to the bundle or to the public (Mozilla) roots.
#[derive(Debug)]
pub struct UreqTransport {
    /// Trusts the public roots.
    agent: ureq::Agent,
    /// Trusts the bundle's CAs; tried first when there is a bundle.
    private: Option<(ureq::Agent, String)>,
}

fn agent(roots: ureq::tls::RootCerts) -> ureq::Agent {
    let config = ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(DEFAULT_REQUEST_TIMEOUT))
        .tls_config(ureq::tls::TlsConfig::builder().root_certs(roots).build())
        .build();
    ureq::Agent::new_with_config(config)
}

impl Default for UreqTransport {
    fn default() -> Self {
        UreqTransport::new(None)
    }
}

impl UreqTransport {
    /// A transport trusting the public roots and, when given, the bundle's CAs.
    pub fn new(bundle: Option<&CaBundle>) -> UreqTransport {
        UreqTransport {
            agent: agent(ureq::tls::RootCerts::WebPki),
            private: bundle.map(|b| {
                (
                    agent(ureq::tls::RootCerts::new_with_certs(&b.certs)),
                    b.origin.clone(),
                )
            }),
        }
    }

    fn run(
        &self,
        agent: &ureq::Agent,
        request: &Request,
        timeout: Duration,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_str())
            .uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = builder.body(request.body.clone().unwrap_or_default())?;
        let built = agent
            .configure_request(built)
            .timeout_global(Some(timeout))
            .build();
        agent.run(built)
    }
}

/// Whether the TLS handshake failed because the server's certificate is not trusted (then no byte
/// of the request was sent, so trying the other trust store is safe).
fn untrusted(error: &ureq::Error) -> bool {
    use tokio_rustls::rustls::{CertificateError, Error as TlsError};
    // ureq reports a failed handshake as an I/O error wrapping the rustls error.
    let tls = match error {
        ureq::Error::Rustls(e) => Some(e),
        ureq::Error::Io(e) => e.get_ref().and_then(|inner| inner.downcast_ref::<TlsError>()),
        _ => None,
    };
    matches!(
        tls,
        Some(TlsError::InvalidCertificate(
            CertificateError::UnknownIssuer | CertificateError::BadSignature
        ))
    )
}

impl HttpTransport for UreqTransport {
    fn send(&self, request: &Request, timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
        let response = match &self.private {
            Some((private, origin)) => match self.run(private, request, timeout) {
                Err(e) if untrusted(&e) => self.run(&self.agent, request, timeout).map_err(|e| {
                    if untrusted(&e) {
                        untrusted_error(request, &e, Some(origin))
                    } else {
                        transport_error(e)
                    }
                }),
                other => other.map_err(transport_error),
            },
            None => self.run(&self.agent, request, timeout).map_err(|e| {
                if untrusted(&e) {
                    untrusted_error(request, &e, None)
                } else {
                    transport_error(e)
                }
            }),
        }?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .into_body()
            .with_config()
            .limit(max_body as u64 + 1)
            .read_to_vec()
            .map_err(transport_error)?;
        if body.len() > max_body {
            return Err(HttpError::TooLarge(max_body as u64));
        }
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// The server's certificate chains to no trusted CA: name the host and where trust comes from.
fn untrusted_error(request: &Request, error: &ureq::Error, bundle: Option<&str>) -> HttpError {
    let host = url::Url::parse(&request.url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(match u.port_or_known_default() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| request.url.clone());
    HttpError::Transport(match bundle {
        None => format!(
            "TLS: the certificate of {host} is not signed by a trusted CA ({error}); the plugin trusts \
             only the public roots: if {host} uses a private CA, give its certificate in the \
             ProviderPlugin's spec.capabilities.httpCABundle (--ca-file for `stackhost plugin call/test`)"
        ),
        Some(origin) => format!(
            "TLS: the certificate of {host} is signed neither by the CA bundle ({origin}) nor by a public \
             root ({error}); put the CA that signed it into the bundle"
        ),
    })
}

fn transport_error(error: ureq::Error) -> HttpError {
    match error {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::BodyExceedsLimit(limit) => HttpError::TooLarge(limit),
        ureq::Error::Http(e) => HttpError::InvalidRequest(e.to_string()),
        other => HttpError::Transport(other.to_string()),
    }
}

/// Checks a request against the grants; `Ok` carries the timeout to use.
pub fn check(grants: &crate::plugin::Grants, request: &Request) -> Result<Duration, HttpError> {
    let url = url::Url::parse(&request.url)
        .map_err(|e| HttpError::InvalidRequest(format!("bad URL {:?}: {e}", request.url)))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(HttpError::InvalidRequest(format!(
            "URL {:?}: only http and https are supported",
            request.url
        )));
    }
    let host = url
        .host_str()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if !grants.allows_host(host, url.port_or_known_default()) {
        return Err(HttpError::Denied(format!(
            "host {host:?} (port {}) is not granted to this plugin; add it to the ProviderPlugin's \
             spec.capabilities.httpHosts",
            url.port_or_known_default().unwrap_or_default()
        )));
    }
    if !matches!(
        request.method.as_str(),
        "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE"
    ) {
        return Err(HttpError::InvalidRequest(format!(
            "method {:?} is not supported",
            request.method
        )));
    }
    let asked = request.timeout_ms.map(|ms| Duration::from_millis(u64::from(ms)));
    Ok(asked.unwrap_or(DEFAULT_REQUEST_TIMEOUT).min(MAX_REQUEST_TIMEOUT))
}

impl Host for CallState {
    fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        self.host_calls += 1;
        let timeout = check(&self.grants, &request)?;
        tracing::debug!(target: "plugin", plugin = &*self.plugin, method = %request.method, url = %request.url, "http request");
        self.caps.http.send(&request, timeout, self.caps.http_max_body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::Grants;

    fn request(url: &str) -> Request {
        Request {
            method: "GET".into(),
            url: url.into(),
            headers: vec![],
            body: None,
            timeout_ms: Some(90_000),
        }
    }

    #[test]
    fn ungranted_hosts_are_denied_with_a_message_that_says_what_to_do() {
        let grants = Grants {
            http_hosts: vec!["keystone.example:5000".into()],
            ..Grants::default()
        };
        let Err(HttpError::Denied(why)) = check(&grants, &request("http://glance.example:9292/v2/images"))
        else {
            panic!("expected a denial");
        };
        assert!(why.contains("\"glance.example\""), "{why}");
        assert!(why.contains("spec.capabilities.httpHosts"), "{why}");
        assert_eq!(
            check(&grants, &request("http://keystone.example:5000/v3")),
            Ok(MAX_REQUEST_TIMEOUT)
        );
        assert!(matches!(
            check(&grants, &request("file:///etc/passwd")),
            Err(HttpError::InvalidRequest(_))
        ));
        assert!(matches!(
            check(&grants, &request("not a url")),
            Err(HttpError::InvalidRequest(_))
        ));
    }
}
