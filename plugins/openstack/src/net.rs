//! HTTP through the host's `http` capability, with errors that say what was being reached.

use crate::clusterstack::provider::http::{self, HttpError, Request, Response};
use crate::clusterstack::provider::types::{Error, Retry};

/// Timeout of one request (the host caps it at its own limit).
const TIMEOUT_MS: u32 = 20_000;
/// Retry hint when a service cannot be reached.
pub const UNREACHABLE_RETRY_SECONDS: u32 = 60;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self, what: &str) -> Result<serde_json::Value, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::Failed(format!(
                "{what}: the answer is not JSON ({e}): {}",
                self.snippet()
            ))
        })
    }

    /// The start of the body, for error messages.
    pub fn snippet(&self) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let text = text.trim();
        // OpenStack errors are JSON like {"error": {"message": ...}} or HTML; keep it short.
        let message = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.pointer("/error/message")
                    .or_else(|| v.pointer("/message"))
                    .and_then(|m| m.as_str().map(str::to_string))
            })
            .unwrap_or_else(|| text.replace('\n', " "));
        let mut cut: String = message.chars().take(300).collect();
        if cut.len() < message.len() {
            cut.push_str("...");
        }
        cut
    }
}

/// One request. `service` names what is reached in errors ("Keystone at http://...").
pub fn send(
    service: &str,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Result<Reply, Error> {
    let request = Request {
        method: method.to_string(),
        url: url.to_string(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body,
        timeout_ms: Some(TIMEOUT_MS),
    };
    match http::send(&request) {
        Ok(Response {
            status,
            headers,
            body,
        }) => Ok(Reply {
            status,
            headers,
            body,
        }),
        Err(HttpError::Denied(why)) => Err(Error::Denied(format!("{service}: {method} {url}: {why}"))),
        Err(HttpError::InvalidRequest(why)) => Err(Error::InvalidInput(format!(
            "{service}: {method} {url}: invalid request: {why}"
        ))),
        Err(HttpError::Timeout) => Err(unreachable(service, url, "no answer within the timeout")),
        Err(HttpError::Transport(why)) => Err(unreachable(service, url, &why)),
        Err(HttpError::TooLarge(limit)) => Err(Error::Failed(format!(
            "{service}: {method} {url}: the answer is larger than the host allows ({limit} bytes)"
        ))),
    }
}

/// A JSON request with an auth token.
pub fn json(
    service: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
    content_type: &str,
) -> Result<Reply, Error> {
    let mut headers = vec![("Accept", "application/json")];
    if body.is_some() {
        headers.push(("Content-Type", content_type));
    }
    if let Some(token) = token {
        headers.push(("X-Auth-Token", token));
    }
    let body = body.map(|b| serde_json::to_vec(b).unwrap_or_default());
    send(service, method, url, &headers, body)
}

/// The service did not answer: the host retries later; the message says where and why.
pub fn unreachable(service: &str, url: &str, why: &str) -> Error {
    Error::NotReady(Retry {
        retry_after_seconds: UNREACHABLE_RETRY_SECONDS,
        message: format!("{service} is not reachable ({url}): {why}"),
    })
}

/// A 5xx is the service's own trouble (retry later); anything else unexpected is a failure.
pub fn unexpected(service: &str, what: &str, reply: &Reply) -> Error {
    let text = format!("{service}: {what}: HTTP {}: {}", reply.status, reply.snippet());
    if reply.status >= 500 {
        Error::NotReady(Retry {
            retry_after_seconds: UNREACHABLE_RETRY_SECONDS,
            message: text,
        })
    } else {
        Error::Failed(text)
    }
}

/// `a` joined with a path `b`, with exactly one slash between.
pub fn join(a: &str, b: &str) -> String {
    format!("{}/{}", a.trim_end_matches('/'), b.trim_start_matches('/'))
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
