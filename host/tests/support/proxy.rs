//! A loopback HTTP/1.1 proxy in front of a real registry that can inject faults the real
//! registry never produces: 5xx answers, hangs, 403, and a bearer-token challenge with its own
//! token endpoint. It also records requests so tests can prove what was (not) downloaded.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with requests that pass the one-shot faults.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Forward to the upstream registry.
    Forward,
    /// Answer every request with this status and an OCI error envelope.
    Status(u16, &'static str),
    /// Demand `Authorization: Bearer <token>`; `/token` issues it for the basic credentials.
    Bearer {
        user: String,
        password: String,
        token: String,
    },
}

#[derive(Debug)]
pub struct State {
    pub upstream: String,
    pub mode: Mutex<Mode>,
    /// Answer the next N requests with 503.
    pub fail_next: AtomicUsize,
    /// Never answer the next N requests.
    pub hang_next: AtomicUsize,
    /// `METHOD path` of every request seen.
    pub log: Mutex<Vec<String>>,
}

pub struct Proxy {
    pub addr: String,
    pub state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let state = Arc::new(State {
            upstream: upstream.to_string(),
            mode: Mutex::new(Mode::Forward),
            fail_next: AtomicUsize::new(0),
            hang_next: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let own = addr.clone();
        let task = tokio::spawn(async move {
            let client = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client");
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (s, client, own) = (s.clone(), client.clone(), own.clone());
                tokio::spawn(async move {
                    let _ = handle(sock, s, client, own).await;
                });
            }
        });
        Proxy { addr, state, task }
    }

    pub fn set_mode(&self, mode: Mode) {
        *self.state.mode.lock().expect("mode") = mode;
    }

    /// Requests seen whose line contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.state
            .log
            .lock()
            .expect("log")
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    pub fn requests(&self) -> Vec<String> {
        self.state.log.lock().expect("log").clone()
    }
}

async fn handle(
    mut sock: TcpStream,
    state: Arc<State>,
    client: reqwest::Client,
    own: String,
) -> std::io::Result<()> {
    // Read the head.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let request_line = lines.next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or("GET").to_string();
    let path = parts.next().unwrap_or("/").to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            l.split_once(':')
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect();
    let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    state.log.lock().expect("log").push(format!("{method} {path}"));

    if take(&state.hang_next) {
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        return Ok(());
    }
    if take(&state.fail_next) {
        return respond(
            &mut sock,
            503,
            &[("content-type", "text/plain")],
            b"upstream overloaded",
        )
        .await;
    }
    let mode = state.mode.lock().expect("mode").clone();
    let mut auth_to_forward = header("authorization");
    match mode {
        Mode::Forward => {}
        Mode::Status(code, envelope_code) => {
            let body = format!(
                r#"{{"errors":[{{"code":"{envelope_code}","message":"injected by test proxy","detail":null}}]}}"#
            );
            return respond(
                &mut sock,
                code,
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await;
        }
        Mode::Bearer {
            user,
            password,
            token,
        } => {
            use base64::Engine as _;
            if path.starts_with("/token") {
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
                );
                if header("authorization").as_deref() == Some(expected.as_str()) {
                    let body = format!(r#"{{"token":"{token}","expires_in":300}}"#);
                    return respond(
                        &mut sock,
                        200,
                        &[("content-type", "application/json")],
                        body.as_bytes(),
                    )
                    .await;
                }
                return respond(
                    &mut sock,
                    401,
                    &[("content-type", "application/json")],
                    br#"{"details":"bad credentials"}"#,
                )
                .await;
            }
            if header("authorization").as_deref() != Some(format!("Bearer {token}").as_str()) {
                let challenge = format!(r#"Bearer realm="http://{own}/token",service="stackhost-test""#);
                let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":null}]}"#;
                return respond(
                    &mut sock,
                    401,
                    &[
                        ("content-type", "application/json"),
                        ("www-authenticate", &challenge),
                    ],
                    body,
                )
                .await;
            }
            auth_to_forward = None;
        }
    }

    // Forward.
    let url = format!("http://{}{}", state.upstream, path);
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = client.request(m, &url);
    for (k, v) in &headers {
        if ["accept", "content-type", "range"].contains(&k.as_str()) {
            req = req.header(k.as_str(), v.as_str());
        }
    }
    if let Some(a) = auth_to_forward {
        req = req.header("authorization", a);
    }
    if !body.is_empty() {
        req = req.body(body);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return respond(&mut sock, 502, &[], e.to_string().as_bytes()).await,
    };
    let status = resp.status().as_u16();
    let keep: Vec<(String, String)> = resp
        .headers()
        .iter()
        .filter(|(k, _)| {
            [
                "content-type",
                "docker-content-digest",
                "location",
                "www-authenticate",
                "docker-upload-uuid",
                "range",
            ]
            .contains(&k.as_str())
        })
        .map(|(k, v)| {
            let mut v = v.to_str().unwrap_or_default().to_string();
            if k.as_str() == "location" {
                v = v.replace(&state.upstream, &own);
            }
            (k.to_string(), v)
        })
        .collect();
    let body = resp.bytes().await.unwrap_or_default();
    let refs: Vec<(&str, &str)> = keep.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body: &[u8] = if method == "HEAD" { &[] } else { &body };
    respond(&mut sock, status, &refs, body).await
}

fn take(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

async fn respond(
    sock: &mut TcpStream,
    status: u16,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    sock.write_all(out.as_bytes()).await?;
    sock.write_all(body).await?;
    sock.shutdown().await
}
