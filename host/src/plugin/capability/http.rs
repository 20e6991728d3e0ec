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

/// The real transport: ureq, no redirects, statuses returned as data.
#[derive(Debug)]
pub struct UreqTransport {
    agent: ureq::Agent,
}

impl Default for UreqTransport {
    fn default() -> Self {
        let config = ureq::Agent::config_builder()
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_global(Some(DEFAULT_REQUEST_TIMEOUT))
            .build();
        UreqTransport {
            agent: ureq::Agent::new_with_config(config),
        }
    }
}

impl HttpTransport for UreqTransport {
    fn send(&self, request: &Request, timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
        let mut builder = ureq::http::Request::builder()
            .method(request.method.as_str())
            .uri(&request.url);
        for (name, value) in &request.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let built = builder
            .body(request.body.clone().unwrap_or_default())
            .map_err(|e| HttpError::InvalidRequest(e.to_string()))?;
        let built = self
            .agent
            .configure_request(built)
            .timeout_global(Some(timeout))
            .build();
        let response = self.agent.run(built).map_err(transport_error)?;
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

fn transport_error(error: ureq::Error) -> HttpError {
    match error {
        ureq::Error::Timeout(_) => HttpError::Timeout,
        ureq::Error::BodyExceedsLimit(limit) => HttpError::TooLarge(limit),
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
