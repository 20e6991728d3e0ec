//! Recorded HTTP for the `http` capability: a cassette replays interactions matched on method, URL and
//! body; `--record` sends requests for real and writes what happened, with secrets redacted.
//!
//! ```yaml
//! interactions:
//! - request:
//!     method: POST
//!     url: http://glance.example:9292/v2/images
//!     headers: {content-type: application/json, x-auth-token: <redacted>}
//!     json: {name: ubuntu-capi-image-v1.30.9}     # or `body: text`, or `bodyBase64: ...`
//!   response:
//!     status: 201
//!     headers: {content-type: application/json}
//!     json: {id: 1c2d..., status: queued}
//! - request: {method: GET, url: http://glance.example:9292/v2/images/1c2d...}
//!   error: timeout                                   # or {transport: "..."}, {too-large: 1024}
//! ```
//!
//! Headers are recorded for the reader but never matched. Redaction replaces each secret value the case
//! knows with `<secret:NAME/KEY>` (restored on replay), and the values of credential headers and of JSON
//! fields whose name contains `password` or `secret` with `<redacted>`; requests are redacted the same
//! way before they are matched, so a replay with the fixture's fake secrets matches a recording made with
//! real ones.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::HarnessError;
use crate::plugin::bindings::clusterstack::provider::http::{HttpError, Request, Response};
use crate::plugin::capability::{CaBundle, HttpTransport, UreqTransport};

/// What replaces a redacted header or field value.
pub const REDACTED: &str = "<redacted>";

/// Headers whose values are credentials, whatever they contain.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-auth-token",
    "x-subject-token",
    "x-storage-token",
    "x-api-key",
    "x-amz-security-token",
];

/// Response headers that would be wrong after the body is rewritten.
const DROPPED_HEADERS: &[&str] = &["content-length", "transfer-encoding", "connection"];

/// Secret values shorter than this are not searched for (they would match everywhere).
const MIN_SECRET_LEN: usize = 4;

/// The `cassette.yaml` file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cassette {
    #[serde(default)]
    pub interactions: Vec<Interaction>,
}

/// One request and what came back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interaction {
    pub request: RecordedRequest,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<RecordedResponse>,
    /// Written as `error: timeout` or `error: {transport: ...}` (not as YAML tags).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_yaml::with::singleton_map_recursive"
    )]
    pub error: Option<RecordedError>,
}

// No `deny_unknown_fields` on the two structs with a flattened body: serde does not support both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub method: String,
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub body: Body,
}

/// A body in the most readable form that keeps its meaning: JSON as YAML, text, or base64.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Body {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_base64: Option<String>,
}

impl Body {
    fn from_bytes(bytes: Option<&[u8]>) -> Body {
        let Some(bytes) = bytes.filter(|b| !b.is_empty()) else {
            return Body::default();
        };
        if let Ok(json) = serde_json::from_slice::<Value>(bytes) {
            if json.is_object() || json.is_array() {
                return Body {
                    json: Some(json),
                    ..Body::default()
                };
            }
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => Body {
                body: Some(text.to_string()),
                ..Body::default()
            },
            Err(_) => Body {
                body_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ..Body::default()
            },
        }
    }

    /// The bytes on the wire (JSON compact).
    fn to_bytes(&self) -> Result<Vec<u8>, String> {
        if let Some(json) = &self.json {
            return Ok(json.to_string().into_bytes());
        }
        if let Some(text) = &self.body {
            return Ok(text.clone().into_bytes());
        }
        if let Some(b64) = &self.body_base64 {
            return base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("bodyBase64 is not base64: {e}"));
        }
        Ok(Vec::new())
    }

    /// Equal as JSON when both are JSON, else byte for byte.
    fn matches(&self, other: &Body) -> bool {
        let (Ok(a), Ok(b)) = (self.to_bytes(), other.to_bytes()) else {
            return false;
        };
        match (
            serde_json::from_slice::<Value>(&a),
            serde_json::from_slice::<Value>(&b),
        ) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        }
    }

    fn describe(&self) -> String {
        match self.to_bytes() {
            Ok(bytes) if bytes.is_empty() => "no body".to_string(),
            Ok(bytes) => {
                let text = String::from_utf8_lossy(&bytes);
                let mut shown: String = text.chars().take(200).collect();
                if shown.len() < text.len() {
                    shown.push_str("...");
                }
                format!("body {shown}")
            }
            Err(e) => e,
        }
    }
}

/// A transport failure as recorded (the WIT `http-error` cases the network can produce).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordedError {
    Timeout,
    Transport(String),
    TooLarge(u64),
    InvalidRequest(String),
    Denied(String),
}

impl From<&HttpError> for RecordedError {
    fn from(e: &HttpError) -> Self {
        match e {
            HttpError::Timeout => RecordedError::Timeout,
            HttpError::Transport(m) => RecordedError::Transport(m.clone()),
            HttpError::TooLarge(n) => RecordedError::TooLarge(*n),
            HttpError::InvalidRequest(m) => RecordedError::InvalidRequest(m.clone()),
            HttpError::Denied(m) => RecordedError::Denied(m.clone()),
        }
    }
}

impl From<RecordedError> for HttpError {
    fn from(e: RecordedError) -> Self {
        match e {
            RecordedError::Timeout => HttpError::Timeout,
            RecordedError::Transport(m) => HttpError::Transport(m),
            RecordedError::TooLarge(n) => HttpError::TooLarge(n),
            RecordedError::InvalidRequest(m) => HttpError::InvalidRequest(m),
            RecordedError::Denied(m) => HttpError::Denied(m),
        }
    }
}

impl Cassette {
    pub fn load(path: &Path) -> Result<Cassette, HarnessError> {
        let cassette: Cassette = super::fixture::read_yaml(path)?;
        for (i, interaction) in cassette.interactions.iter().enumerate() {
            let problem = match (&interaction.response, &interaction.error) {
                (None, None) => Some("has neither `response` nor `error`"),
                (Some(_), Some(_)) => Some("has both `response` and `error`"),
                _ => None,
            };
            if let Some(problem) = problem {
                return Err(HarnessError::Fixture {
                    path: path.to_path_buf(),
                    reason: format!("interaction {} ({}) {problem}", i + 1, interaction.request.url),
                });
            }
        }
        Ok(cassette)
    }

    pub fn to_yaml(&self) -> String {
        let body = serde_yaml::to_string(self).unwrap_or_default();
        format!(
            "# Recorded by `stackhost plugin test --record`; secrets are redacted. Requests are matched on\n\
             # method, URL and body (headers are not matched). See docs/plugin-authors.md.\n{body}"
        )
    }
}

/// Replaces secret values and credentials, so recordings can be committed.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// `(NAME/KEY, value)`, longest values first so a value inside another is not half-replaced.
    secrets: Vec<(String, Vec<u8>)>,
}

impl Redactor {
    pub fn new(secrets: &BTreeMap<String, Vec<u8>>) -> Redactor {
        let mut secrets: Vec<_> = secrets
            .iter()
            .filter(|(_, v)| v.len() >= MIN_SECRET_LEN)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        secrets.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        Redactor { secrets }
    }

    fn bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let mut out = bytes.to_vec();
        for (key, value) in &self.secrets {
            out = replace(&out, value, format!("<secret:{key}>").as_bytes());
        }
        out
    }

    fn text(&self, text: &str) -> String {
        String::from_utf8_lossy(&self.bytes(text.as_bytes())).into_owned()
    }

    /// Puts the fixture's secret values back where a recording has `<secret:NAME/KEY>`.
    fn restore(&self, text: &str) -> String {
        let mut out = text.to_string();
        for (key, value) in &self.secrets {
            out = out.replace(&format!("<secret:{key}>"), &String::from_utf8_lossy(value));
        }
        out
    }

    fn headers<'a>(&self, headers: impl Iterator<Item = &'a (String, String)>) -> BTreeMap<String, String> {
        let mut map: BTreeMap<String, String> = BTreeMap::new();
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            if DROPPED_HEADERS.contains(&name.as_str()) {
                continue;
            }
            let value = if CREDENTIAL_HEADERS.contains(&name.as_str()) {
                REDACTED.to_string()
            } else {
                self.text(value)
            };
            map.entry(name)
                .and_modify(|v| {
                    v.push_str(", ");
                    v.push_str(&value);
                })
                .or_insert(value);
        }
        map
    }

    fn body(&self, bytes: Option<&[u8]>) -> Body {
        let mut body = Body::from_bytes(bytes.map(|b| self.bytes(b)).as_deref());
        if let Some(json) = &mut body.json {
            redact_fields(json);
        }
        body
    }

    pub fn request(&self, request: &Request) -> RecordedRequest {
        RecordedRequest {
            method: request.method.to_ascii_uppercase(),
            url: self.text(&request.url),
            headers: self.headers(request.headers.iter()),
            body: self.body(request.body.as_deref()),
        }
    }

    pub fn response(&self, response: &Response) -> RecordedResponse {
        RecordedResponse {
            status: response.status,
            headers: self.headers(response.headers.iter()),
            body: self.body(Some(&response.body)),
        }
    }
}

/// `<redacted>` for every JSON field whose name says it holds a credential.
fn redact_fields(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                let key = key.to_ascii_lowercase();
                if (key.contains("password") || key.contains("secret")) && v.is_string() {
                    *v = Value::String(REDACTED.to_string());
                } else {
                    redact_fields(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_fields),
        _ => {}
    }
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() || haystack.len() < needle.len() {
        return haystack.to_vec();
    }
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// A request the cassette had no answer for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Miss {
    pub method: String,
    pub url: String,
    pub body: String,
    /// What the cassette has near it (the same method and URL with another body, or already used).
    pub note: Option<String>,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.method, self.url, self.body)?;
        if let Some(note) = &self.note {
            write!(f, "; {note}")?;
        }
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Answers from a cassette: the first unused interaction that matches; a miss is a transport error
/// for the guest and is remembered for the report.
#[derive(Debug)]
pub struct Replay {
    path: PathBuf,
    interactions: Vec<Interaction>,
    redactor: Redactor,
    used: Mutex<Vec<bool>>,
    misses: Mutex<Vec<Miss>>,
}

impl Replay {
    pub fn new(path: PathBuf, cassette: Cassette, redactor: Redactor) -> Arc<Replay> {
        let used = vec![false; cassette.interactions.len()];
        Arc::new(Replay {
            path,
            interactions: cassette.interactions,
            redactor,
            used: Mutex::new(used),
            misses: Mutex::new(Vec::new()),
        })
    }

    pub fn misses(&self) -> Vec<Miss> {
        lock(&self.misses).clone()
    }

    /// Interactions no request used, as `METHOD URL`.
    pub fn unused(&self) -> Vec<String> {
        let used = lock(&self.used);
        self.interactions
            .iter()
            .zip(used.iter())
            .filter(|(_, used)| !**used)
            .map(|(i, _)| format!("{} {}", i.request.method, i.request.url))
            .collect()
    }

    fn answer(&self, interaction: &Interaction) -> Result<Response, HttpError> {
        if let Some(error) = &interaction.error {
            return Err(error.clone().into());
        }
        let Some(recorded) = &interaction.response else {
            return Err(HttpError::Transport(
                "cassette interaction without a response".into(),
            ));
        };
        let body = recorded.body.to_bytes().map_err(HttpError::Transport)?;
        let body = self
            .redactor
            .restore(&String::from_utf8_lossy(&body))
            .into_bytes();
        Ok(Response {
            status: recorded.status,
            headers: recorded
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), self.redactor.restore(v)))
                .collect(),
            body,
        })
    }
}

impl HttpTransport for Replay {
    fn send(&self, request: &Request, _timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
        let asked = self.redactor.request(request);
        let found = {
            let mut used = lock(&self.used);
            let index = self.interactions.iter().enumerate().position(|(i, it)| {
                !used[i]
                    && it.request.method.eq_ignore_ascii_case(&asked.method)
                    && it.request.url == asked.url
                    && it.request.body.matches(&asked.body)
            });
            if let Some(i) = index {
                used[i] = true;
            }
            index
        };
        let Some(index) = found else {
            let same_target = |it: &&Interaction| {
                it.request.method.eq_ignore_ascii_case(&asked.method) && it.request.url == asked.url
            };
            let note = if self
                .interactions
                .iter()
                .filter(same_target)
                .any(|it| it.request.body.matches(&asked.body))
            {
                Some("recorded, but it already answered an earlier identical request (each interaction answers once)".into())
            } else {
                self.interactions
                    .iter()
                    .find(same_target)
                    .map(|it| format!("recorded with another body: {}", it.request.body.describe()))
            };
            let miss = Miss {
                method: asked.method.clone(),
                url: asked.url.clone(),
                body: asked.body.describe(),
                note,
            };
            let message = format!("cassette miss: {miss} is not in {}", self.path.display());
            lock(&self.misses).push(miss);
            return Err(HttpError::Transport(message));
        };
        let response = self.answer(&self.interactions[index])?;
        if response.body.len() > max_body {
            return Err(HttpError::TooLarge(max_body as u64));
        }
        Ok(response)
    }
}

/// Sends requests for real and keeps every exchange for the cassette.
pub struct Record {
    real: UreqTransport,
    redactor: Redactor,
    interactions: Mutex<Vec<Interaction>>,
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").finish_non_exhaustive()
    }
}

impl Record {
    /// Records through a real transport that trusts the public roots and the `ca` bundle.
    pub fn new(redactor: Redactor, ca: Option<&CaBundle>) -> Arc<Record> {
        Arc::new(Record {
            real: UreqTransport::new(ca),
            redactor,
            interactions: Mutex::new(Vec::new()),
        })
    }

    /// What was recorded so far, redacted.
    pub fn cassette(&self) -> Cassette {
        Cassette {
            interactions: lock(&self.interactions).clone(),
        }
    }
}

impl HttpTransport for Record {
    fn send(&self, request: &Request, timeout: Duration, max_body: usize) -> Result<Response, HttpError> {
        let result = self.real.send(request, timeout, max_body);
        let (response, error) = match &result {
            Ok(response) => (Some(self.redactor.response(response)), None),
            Err(error) => (None, Some(RecordedError::from(error))),
        };
        lock(&self.interactions).push(Interaction {
            request: self.redactor.request(request),
            response,
            error,
        });
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets() -> BTreeMap<String, Vec<u8>> {
        BTreeMap::from([("cloud/password".to_string(), b"hunter22".to_vec())])
    }

    fn request(body: &str) -> Request {
        Request {
            method: "post".into(),
            url: "http://keystone.test/v3/auth/tokens?pw=hunter22".into(),
            headers: vec![
                ("X-Auth-Token".into(), "abc".into()),
                ("Content-Type".into(), "application/json".into()),
            ],
            body: Some(body.as_bytes().to_vec()),
            timeout_ms: None,
        }
    }

    #[test]
    fn redaction_removes_secret_values_credential_headers_and_password_fields() {
        let redactor = Redactor::new(&secrets());
        let recorded = redactor.request(&request(r#"{"auth":{"password":"other","user":"u hunter22"}}"#));
        let yaml = serde_yaml::to_string(&recorded).expect("yaml");
        assert!(!yaml.contains("hunter22"), "{yaml}");
        assert!(!yaml.contains("other"), "{yaml}");
        assert!(!yaml.contains("abc"), "{yaml}");
        assert_eq!(recorded.method, "POST");
        assert_eq!(
            recorded.url,
            "http://keystone.test/v3/auth/tokens?pw=<secret:cloud/password>"
        );
        assert_eq!(recorded.headers["x-auth-token"], REDACTED);
        assert_eq!(
            recorded.body.json,
            Some(serde_json::json!({"auth": {"password": REDACTED, "user": "u <secret:cloud/password>"}}))
        );
    }

    #[test]
    fn replay_matches_method_url_and_body_once_and_reports_misses() {
        let redactor = Redactor::new(&secrets());
        let recorded = redactor.request(&request(r#"{"a": 1}"#));
        let cassette = Cassette {
            interactions: vec![Interaction {
                request: recorded,
                response: Some(RecordedResponse {
                    status: 201,
                    headers: BTreeMap::new(),
                    body: Body {
                        body: Some("token <secret:cloud/password>".into()),
                        ..Body::default()
                    },
                }),
                error: None,
            }],
        };
        let replay = Replay::new("c.yaml".into(), cassette, redactor);
        // JSON bodies match by value, not by spacing.
        let response = replay
            .send(&request(r#"{ "a":1 }"#), Duration::from_secs(1), 1 << 20)
            .expect("replayed");
        assert_eq!(response.status, 201);
        assert_eq!(response.body, b"token hunter22");
        assert!(replay.unused().is_empty());
        // Used once: the same request again is a miss, named with the nearest recording.
        let Err(HttpError::Transport(why)) =
            replay.send(&request(r#"{"a":2}"#), Duration::from_secs(1), 1 << 20)
        else {
            panic!("expected a miss");
        };
        assert!(
            why.starts_with("cassette miss: POST http://keystone.test/"),
            "{why}"
        );
        let misses = replay.misses();
        assert_eq!(misses.len(), 1);
        assert_eq!(
            misses[0].note.as_deref(),
            Some(r#"recorded with another body: body {"a":1}"#)
        );
    }

    #[test]
    fn cassette_yaml_round_trips_errors_and_the_body_forms() {
        let yaml = "interactions:\n\
            - request: {method: GET, url: 'http://a/'}\n  error: timeout\n\
            - request: {method: GET, url: 'http://b/'}\n  error: {transport: refused}\n\
            - request: {method: POST, url: 'http://c/', json: {a: 1}}\n  response: {status: 200, body: hi}\n";
        let cassette: Cassette = serde_yaml::from_str(yaml).expect("parse");
        assert_eq!(cassette.interactions[0].error, Some(RecordedError::Timeout));
        assert_eq!(
            cassette.interactions[1].error,
            Some(RecordedError::Transport("refused".into()))
        );
        assert_eq!(
            cassette.interactions[2].request.body.json,
            Some(serde_json::json!({"a": 1}))
        );
        let written = cassette.to_yaml();
        assert!(written.contains("error: timeout\n"), "{written}");
        assert!(written.contains("error:\n    transport: refused\n"), "{written}");
        let again: Cassette = serde_yaml::from_str(&written).expect("parse again");
        assert_eq!(again, cassette);
    }
}
