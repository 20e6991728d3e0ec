//! Raw HTTP against the emulator: every failure is a `Status` with the right code and reason, and malformed
//! requests of every kind get a 4xx answer instead of taking the server down.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use kube_emulator::{Cluster, ClusterOptions};
use serde_json::{json, Value};

/// One HTTP/1.1 request; returns (status code, body).
fn request(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connect");
    let head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
    s.write_all(head.as_bytes()).expect("write head");
    s.write_all(body).expect("write body");
    let mut out = Vec::new();
    s.read_to_end(&mut out).expect("read");
    let text = String::from_utf8_lossy(&out);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body_start = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
        .unwrap_or(out.len());
    (code, out[body_start..].to_vec())
}

fn status(addr: SocketAddr, method: &str, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    let (code, body) = request(addr, method, path, content_type, body.as_bytes());
    (code, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn assert_status(got: (u16, Value), code: u16, reason: &str, message_part: &str) {
    let (c, body) = got;
    assert_eq!(c, code, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["reason"], reason, "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(message_part),
        "message {message:?} lacks {message_part:?}"
    );
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failure_is_a_status_with_code_and_reason() {
    let cluster = Cluster::start_with(ClusterOptions {
        history: 3,
        ..Default::default()
    })
    .await
    .expect("cluster");
    let a = cluster.addr();
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}})
        .to_string();
    tokio::task::spawn_blocking(move || {
        assert_status(status(a, "POST", CMS, "application/json", "{not json"), 400, "BadRequest", "not valid JSON");
        assert_status(status(a, "POST", CMS, "application/yaml", "a: [unclosed"), 400, "BadRequest", "error converting YAML to JSON");
        assert_status(status(a, "POST", CMS, "application/json", "{\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"y\"}}"), 400, "BadRequest", "Object 'Kind' is missing");
        assert_status(status(a, "POST", CMS, "application/json", "{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"y\"},\"data\":{\"a\":1}}"), 400, "BadRequest", "ConfigMap in version \"v1\" cannot be handled as a ConfigMap");
        assert_status(status(a, "POST", CMS, "application/json", "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"y\"}}"), 400, "BadRequest", "does not match the kind");
        assert_eq!(status(a, "POST", CMS, "application/json", &cm).0, 201);
        assert_status(status(a, "POST", CMS, "application/json", &cm), 409, "AlreadyExists", "configmaps \"x\" already exists");
        assert_status(status(a, "GET", &format!("{CMS}/nope"), "application/json", ""), 404, "NotFound", "configmaps \"nope\" not found");
        assert_status(status(a, "GET", "/apis/nothing.example.com/v1/things", "application/json", ""), 404, "NotFound", "the server could not find the requested resource");
        assert_status(status(a, "POST", &format!("{CMS}/x"), "application/json", &cm), 405, "MethodNotAllowed", "does not allow this method");
        let stale = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "resourceVersion": "1"}}).to_string();
        assert_status(status(a, "PUT", &format!("{CMS}/x"), "application/json", &stale), 409, "Conflict", "the object has been modified");
        assert_status(status(a, "PATCH", &format!("{CMS}/x"), "text/plain", "{}"), 415, "UnsupportedMediaType", "accepted media types include");
        assert_status(status(a, "PATCH", &format!("{CMS}/x"), "application/json-patch+json", "[{\"op\":\"remove\",\"path\":\"/data/zz\"}]"), 422, "Invalid", "/data/zz");
        let bad_name = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "UPPER"}}).to_string();
        assert_status(status(a, "POST", CMS, "application/json", &bad_name), 422, "Invalid", "ConfigMap \"UPPER\" is invalid: metadata.name");
        assert_status(status(a, "GET", &format!("{CMS}?labelSelector=a%20in%20b"), "application/json", ""), 400, "BadRequest", "unable to parse requirement");
        assert_status(status(a, "GET", &format!("{CMS}?continue=%21%21"), "application/json", ""), 400, "BadRequest", "continue key is not valid");
        assert_status(status(a, "POST", &format!("{CMS}?dryRun=Some"), "application/json", &cm), 400, "BadRequest", "dryRun: Unsupported value");
        assert_status(status(a, "PATCH", &format!("{CMS}/x"), "application/apply-patch+yaml", "data: {}"), 400, "BadRequest", "requires the fieldManager");
        let frozen = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "frozen"}, "data": {"a": "1"}, "immutable": true}).to_string();
        assert_eq!(status(a, "POST", CMS, "application/json", &frozen).0, 201);
        assert_status(
            status(a, "PATCH", &format!("{CMS}/frozen"), "application/merge-patch+json", "{\"data\":{\"a\":\"2\"}}"),
            422,
            "Invalid",
            "ConfigMap \"frozen\" is invalid: data: Forbidden: field is immutable when `immutable` is set",
        );
        let huge = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "huge"}, "data": {"a": "x".repeat(3 * 1024 * 1024)}}).to_string();
        assert_status(status(a, "POST", CMS, "application/json", &huge), 413, "RequestEntityTooLarge", "limit is 3145728");
        // The history holds 3 events: an old continue token is 410 Expired.
        for i in 0..5 {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("h{i}")}}).to_string();
            assert_eq!(status(a, "POST", CMS, "application/json", &body).0, 201);
        }
        let token = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"rv": 2, "ns": "default", "name": "a"}).to_string())
        };
        assert_status(status(a, "GET", &format!("{CMS}?limit=1&continue={token}"), "application/json", ""), 410, "Expired", "too old");
    })
    .await
    .expect("requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_never_take_the_server_down() {
    let cluster = Cluster::start().await.expect("cluster");
    let a = cluster.addr();
    tokio::task::spawn_blocking(move || {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let bodies: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"null".to_vec(),
            b"[]".to_vec(),
            b"\"string\"".to_vec(),
            b"{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":\"x\"}".to_vec(),
            b"{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":[1]}}".to_vec(),
            b"{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"ok\",\"labels\":{\"a\":{}}}}".to_vec(),
            b"{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"ok\",\"ownerReferences\":\"x\",\"finalizers\":7}}".to_vec(),
            deep.into_bytes(),
            vec![0xff, 0xfe, 0x00, 0x01],
            b"k8s\x00\x0a\x05\x0a\x02v1".to_vec(),
            b"k8s\x00\x12\xff\xff\xff\xff\x0f".to_vec(),
        ];
        let content_types = ["application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/merge-patch+json", "application/json-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml"];
        let targets = [
            ("POST", CMS.to_string()),
            ("PUT", format!("{CMS}/ok")),
            ("PATCH", format!("{CMS}/ok?fieldManager=fuzz")),
            ("DELETE", format!("{CMS}/ok")),
            ("POST", "/api/v1/namespaces".to_string()),
            ("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions".to_string()),
            ("PATCH", "/api/v1/namespaces/default?fieldManager=fuzz".to_string()),
            ("POST", "/apis/apps/v1/namespaces/default/deployments".to_string()),
            ("PUT", "/apis/apps/v1/namespaces/default/deployments/ok/scale".to_string()),
            ("PATCH", "/apis/apps/v1/namespaces/default/deployments/ok/scale".to_string()),
        ];
        // Make sure PUT/PATCH/DELETE have something to chew on.
        let seed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ok"}}).to_string();
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ok"}, "spec": {"replicas": 1}}).to_string();
        let _ = status(a, "POST", "/apis/apps/v1/namespaces/default/deployments", "application/json", &deployment);
        for (method, path) in &targets {
            for ct in content_types {
                for body in &bodies {
                    let _ = status(a, "POST", CMS, "application/json", &seed);
                    let (code, _) = request(a, method, path, ct, body);
                    assert!((200..500).contains(&code), "{method} {path} ({ct}) with {:?} gave {code}", String::from_utf8_lossy(&body[..body.len().min(40)]));
                }
            }
        }
        for path in ["/api/v1/namespaces/default/configmaps/ok/status", "/apis", "/apis/x", "/api/v2/pods", "/openapi/v3/apis/x/y", "/%ff", "/api/v1/namespaces/a/b/c/d/e/f"] {
            let (code, _) = request(a, "GET", path, "application/json", b"");
            assert!((200..500).contains(&code), "GET {path} gave {code}");
        }
        // Still serving.
        assert_eq!(request(a, "GET", "/version", "application/json", b"").0, 200);
    })
    .await
    .expect("requests");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_etcds_limit_are_refused_also_when_a_patch_grows_them() {
    let cluster = Cluster::start().await.expect("cluster");
    let a = cluster.addr();
    let cm = |name: &str, size: usize| {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"a": "x".repeat(size)}})
            .to_string()
    };
    let etcd_refuses = |got: (u16, Value)| {
        let (code, body) = got;
        assert_eq!(code, 500, "{body}");
        assert_eq!(body["kind"], "Status", "{body}");
        assert_eq!(body["message"], "etcdserver: request is too large", "{body}");
        assert!(
            body.get("reason").is_none(),
            "an etcd error has no reason: {body}"
        );
    };
    tokio::task::spawn_blocking(move || {
        // Under the 3 MiB body limit, over etcd's 1.5 MiB.
        etcd_refuses(status(a, "POST", CMS, "application/json", &cm("two-mib", 2 << 20)));
        assert_eq!(status(a, "GET", &format!("{CMS}/two-mib"), "application/json", "").0, 404);
        assert_eq!(status(a, "POST", CMS, "application/json", &cm("one-mib", 1 << 20)).0, 201);
        // A merge patch that grows it past the limit.
        let grow = json!({"data": {"b": "y".repeat(1 << 20)}}).to_string();
        etcd_refuses(status(a, "PATCH", &format!("{CMS}/one-mib"), "application/merge-patch+json", &grow));
        let (code, stored) = status(a, "GET", &format!("{CMS}/one-mib"), "application/json", "");
        assert_eq!(code, 200);
        assert!(stored["data"].get("b").is_none(), "nothing of the refused patch is stored");

        // A small JSON patch of doubling copies: refused by the size its copies add, before the object
        // is built (20 doublings of 4 KiB would be 4 GiB).
        assert_eq!(status(a, "POST", CMS, "application/json", &cm("seed", 10)).0, 201);
        let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations", "value": {"n": "z".repeat(4096)}})];
        for i in 0..20 {
            ops.push(json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}));
        }
        let patch = Value::Array(ops).to_string();
        assert!(patch.len() < 8192, "a small patch: {} bytes", patch.len());
        assert_status(
            status(a, "PATCH", &format!("{CMS}/seed"), "application/json-patch+json", &patch),
            422,
            "Invalid",
            "Unable to complete the copy, the accumulated size increase of copy is",
        );
        let (_, refused) = status(a, "PATCH", &format!("{CMS}/seed"), "application/json-patch+json", &patch);
        assert!(
            refused["message"].as_str().unwrap_or_default().ends_with("exceeding the limit 3145728"),
            "{refused}"
        );
    })
    .await
    .expect("requests");
}
