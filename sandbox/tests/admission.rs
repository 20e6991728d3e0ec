//! Admission as a real API server runs it: admission webhooks served by an HTTPS server written here (allow,
//! deny, patch, time out, unreachable, untrusted, reached through a Service), and ValidatingAdmissionPolicies
//! (Cluster API Provider OpenStack's immutability rule, params, warnings). kubectl shows the texts a user sees.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::Uri;
use axum::response::Response;
use base64::Engine;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube_emulator::tls::Tls;
use kube_emulator::Cluster;
use serde_json::{json, Value};

const KUBECTL: &str = "/usr/bin/kubectl";
const REPO_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

/// The AdmissionReview requests the test webhook received, with the path they came to.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A webhook server: `/allow` (with a warning), `/deny` (no code: the server makes it 400), `/deny-403`,
/// `/label` (a JSON patch adding the label `mutated=true`), `/slow` (answers after 5 s), `/wrong-uid`.
struct Webhook {
    port: u16,
    ca_bundle: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    async fn start(names: &[&str]) -> Webhook {
        let tls = Tls::generate_for(names).expect("webhook certificates");
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let seen: Seen = Arc::default();
        let app = axum::Router::new().fallback(review).with_state(seen.clone());
        let listener = tls.listener(tcp);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Webhook {
            port,
            ca_bundle: base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem),
            seen,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The requests received at `path`.
    fn requests(&self, path: &str) -> Vec<Value> {
        let seen = self.seen.lock().expect("seen");
        seen.iter()
            .filter(|(p, _)| p == path)
            .map(|(_, r)| r.clone())
            .collect()
    }
}

async fn review(State(seen): State<Seen>, uri: Uri, body: Bytes) -> Response {
    let review: Value = serde_json::from_slice(&body).unwrap_or_default();
    let req = review["request"].clone();
    seen.lock()
        .expect("seen")
        .push((uri.path().to_string(), req.clone()));
    let name = req["name"].as_str().unwrap_or_default().to_string();
    let mut response = json!({"uid": req["uid"], "allowed": true});
    match uri.path() {
        "/allow" => response["warnings"] = json!([format!("{name} was checked by the test webhook")]),
        "/deny" => {
            response["allowed"] = json!(false);
            response["status"] = json!({"message": format!("{name} is not welcome here")});
        }
        "/deny-403" => {
            response["allowed"] = json!(false);
            response["status"] =
                json!({"code": 403, "reason": "Forbidden", "message": "protected objects stay"});
        }
        "/label" => {
            let patch = if req
                .pointer("/object/metadata/labels")
                .is_some_and(Value::is_object)
            {
                json!([{"op": "add", "path": "/metadata/labels/mutated", "value": "true"}])
            } else {
                json!([{"op": "add", "path": "/metadata/labels", "value": {"mutated": "true"}}])
            };
            response["patchType"] = json!("JSONPatch");
            response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch.to_string()));
        }
        "/slow" => tokio::time::sleep(Duration::from_secs(5)).await,
        "/wrong-uid" => response["uid"] = json!("not-the-request"),
        _ => {}
    }
    let body = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response});
    let mut resp = Response::new(Body::from(body.to_string()));
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    resp
}

/// A webhook entry calling `url` for `operations` on `resources` (core group).
fn hook(name: &str, url: &str, ca_bundle: &str, operations: &[&str], resources: &[&str]) -> Value {
    json!({
        "name": name,
        "clientConfig": {"url": url, "caBundle": ca_bundle},
        "rules": [{"operations": operations, "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    })
}

fn configuration(kind: &str, name: &str, webhooks: Vec<Value>) -> String {
    json!({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind, "metadata": {"name": name}, "webhooks": webhooks})
        .to_string()
}

fn cm(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}))
        .expect("configmap")
}

async fn create_err<K>(api: &Api<K>, obj: &K) -> (u16, String, String)
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(o) => panic!("expected a rejection, the server stored {o:?}"),
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone(), s.message.clone()),
        Err(e) => panic!("unexpected error {e}"),
    }
}

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(cluster: &Cluster) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "kubectl is missing at {KUBECTL}: run scripts/deps/emulator.sh"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Kubectl { dir, kubeconfig }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path())
            .output()
            .expect("kubectl runs")
    }

    fn write(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write manifest");
        p.to_string_lossy().into_owned()
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validating_webhooks_allow_deny_and_warn() {
    let cluster = Cluster::start().await.expect("cluster");
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let ca = &webhook.ca_bundle;
    let mut deny = hook(
        "deny.example.com",
        &webhook.url("/deny"),
        ca,
        &["CREATE"],
        &["configmaps"],
    );
    deny["objectSelector"] = json!({"matchLabels": {"welcome": "no"}});
    let mut protect = hook(
        "protect.example.com",
        &webhook.url("/deny-403"),
        ca,
        &["DELETE"],
        &["configmaps"],
    );
    protect["objectSelector"] = json!({"matchLabels": {"protected": "yes"}});
    let allow = hook(
        "allow.example.com",
        &webhook.url("/allow"),
        ca,
        &["CREATE", "UPDATE"],
        &["configmaps"],
    );
    cluster
        .apply_yaml(
            &configuration(
                "ValidatingWebhookConfiguration",
                "checks",
                vec![allow, deny, protect],
            ),
            "test",
        )
        .expect("webhook configuration");
    let client = cluster.client().expect("client");
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");

    cms.create(&PostParams::default(), &cm("plain", json!({})))
        .await
        .expect("allowed");
    let seen = webhook.requests("/allow");
    assert_eq!(seen.len(), 1, "{seen:?}");
    let r = &seen[0];
    assert_eq!(r["operation"], "CREATE");
    assert_eq!(
        r["kind"],
        json!({"group": "", "version": "v1", "kind": "ConfigMap"})
    );
    assert_eq!(
        r["resource"],
        json!({"group": "", "version": "v1", "resource": "configmaps"})
    );
    assert_eq!(
        (r["namespace"].as_str(), r["name"].as_str()),
        (Some("default"), Some("plain"))
    );
    assert_eq!(r["userInfo"]["username"], "kubernetes-admin");
    assert_eq!(
        (r["oldObject"].clone(), r["dryRun"].clone()),
        (Value::Null, json!(false))
    );
    assert_eq!(r["object"]["data"], json!({"k": "v"}));
    assert_eq!(r["options"]["kind"], "CreateOptions");

    // An update carries the stored object.
    let mut changed = cms.get("plain").await.expect("get");
    changed.data = Some([("k".to_string(), "w".to_string())].into());
    cms.replace("plain", &PostParams::default(), &changed)
        .await
        .expect("update allowed");
    let update = webhook.requests("/allow").pop().expect("update reviewed");
    assert_eq!(
        (
            update["operation"].as_str(),
            update["oldObject"]["data"]["k"].as_str()
        ),
        (Some("UPDATE"), Some("v"))
    );

    // A denial without a code is a 400 with the webhook's message, and nothing is stored.
    let (code, reason, message) = create_err(&cms, &cm("unwelcome", json!({"welcome": "no"}))).await;
    assert_eq!(
        (code, reason.as_str(), message.as_str()),
        (
            400,
            "",
            "admission webhook \"deny.example.com\" denied the request: unwelcome is not welcome here"
        )
    );
    assert!(cms.get_opt("unwelcome").await.expect("get").is_none());

    // kubectl shows the webhook's warning and the denial.
    let k = Kubectl::new(&cluster);
    let file = k.write(
        "unwelcome.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: unwelcome\n  labels:\n    welcome: \"no\"\n",
    );
    let out = k.run(&["create", "-f", &file]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("Warning: unwelcome was checked by the test webhook\n"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "Error from server: error when creating \"{file}\": admission webhook \"deny.example.com\" denied the request: unwelcome is not welcome here"
        )),
        "{err}"
    );

    // DELETE: the webhook sees the object as oldObject; its 403 stands.
    cms.create(&PostParams::default(), &cm("keep", json!({"protected": "yes"})))
        .await
        .expect("create");
    let out = k.run(&["delete", "configmap", "keep"]);
    assert_eq!(
        stderr(&out).trim(),
        "Error from server (Forbidden): admission webhook \"protect.example.com\" denied the request: protected objects stay"
    );
    let delete = webhook.requests("/deny-403").pop().expect("delete reviewed");
    assert_eq!(
        (
            delete["operation"].as_str(),
            delete["oldObject"]["metadata"]["name"].as_str(),
            delete["object"].clone()
        ),
        (Some("DELETE"), Some("keep"), Value::Null)
    );
    assert!(cms.get_opt("keep").await.expect("get").is_some());
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_webhooks_patch_before_validation_and_dry_run_needs_no_side_effects() {
    let cluster = Cluster::start().await.expect("cluster");
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let ca = &webhook.ca_bundle;
    let label = hook(
        "label.example.com",
        &webhook.url("/label"),
        ca,
        &["CREATE"],
        &["configmaps"],
    );
    cluster
        .apply_yaml(
            &configuration("MutatingWebhookConfiguration", "labels", vec![label]),
            "test",
        )
        .expect("mutating configuration");
    // Only objects the mutating webhook labelled reach the validating one.
    let mut seen_mutated = hook(
        "mutated.example.com",
        &webhook.url("/allow"),
        ca,
        &["CREATE"],
        &["configmaps"],
    );
    seen_mutated["objectSelector"] = json!({"matchLabels": {"mutated": "true"}});
    cluster
        .apply_yaml(
            &configuration("ValidatingWebhookConfiguration", "after", vec![seen_mutated]),
            "test",
        )
        .expect("validating configuration");
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), "default");

    let stored = cms
        .create(&PostParams::default(), &cm("m", json!({"a": "b"})))
        .await
        .expect("create");
    let labels = stored.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        (
            labels.get("mutated").map(String::as_str),
            labels.get("a").map(String::as_str)
        ),
        (Some("true"), Some("b"))
    );
    let validated = webhook.requests("/allow");
    assert_eq!(validated.len(), 1);
    assert_eq!(validated[0]["object"]["metadata"]["labels"]["mutated"], "true");
    let mutated = webhook.requests("/label");
    assert_eq!(mutated.len(), 1, "one call per request, whatever the passes");
    assert!(
        mutated[0]["object"]["metadata"].get("uid").is_none(),
        "mutating webhooks run before the uid is set"
    );
    assert!(validated[0]["object"]["metadata"]["uid"].is_string());
    assert_eq!(
        validated[0]["object"]["metadata"]["uid"].as_str(),
        stored.metadata.uid.as_deref()
    );

    // Dry run: webhooks with sideEffects None are called with dryRun; nothing is stored.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let shown = cms.create(&dry, &cm("dry", json!({}))).await.expect("dry run");
    assert_eq!(
        shown
            .metadata
            .labels
            .unwrap_or_default()
            .get("mutated")
            .map(String::as_str),
        Some("true")
    );
    assert_eq!(webhook.requests("/label").pop().expect("called")["dryRun"], true);
    assert!(cms.get_opt("dry").await.expect("get").is_none());

    // v1 webhooks must be free of side effects (or have none on dry run), as the API server checks.
    let mut effects = hook(
        "effects.example.com",
        &webhook.url("/allow"),
        ca,
        &["CREATE"],
        &["configmaps"],
    );
    effects["sideEffects"] = json!("Some");
    let refused = cluster
        .apply_yaml(
            &configuration("ValidatingWebhookConfiguration", "effects", vec![effects]),
            "test",
        )
        .expect_err("refused");
    assert!(
        refused.to_string().ends_with("ValidatingWebhookConfiguration.admissionregistration.k8s.io \"effects\" is invalid: webhooks[0].sideEffects: Unsupported value: \"Some\": supported values: \"None\", \"NoneOnDryRun\""),
        "{refused}"
    );
    cluster.shutdown().await.expect("shutdown");
}

/// A port nothing listens on.
async fn closed_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_slow_and_untrusted_webhooks_follow_the_failure_policy() {
    let cluster = Cluster::start().await.expect("cluster");
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let other_ca = base64::engine::general_purpose::STANDARD.encode(Tls::generate().expect("ca").ca_pem);
    let port = closed_port().await;
    let case = |name: &str, url: String, ca: &str, policy: &str| {
        let mut h = hook(
            &format!("{name}.example.com"),
            &url,
            ca,
            &["CREATE"],
            &["configmaps"],
        );
        h["objectSelector"] = json!({"matchLabels": {"case": name}});
        h["failurePolicy"] = json!(policy);
        h
    };
    let refused_url = format!("https://127.0.0.1:{port}/validate");
    let mut slow = case("slow", webhook.url("/slow"), &webhook.ca_bundle, "Fail");
    slow["timeoutSeconds"] = json!(1);
    let hooks = vec![
        case("refused", refused_url.clone(), &webhook.ca_bundle, "Fail"),
        case("ignored", refused_url, &webhook.ca_bundle, "Ignore"),
        case("untrusted", webhook.url("/allow"), &other_ca, "Fail"),
        slow,
        case("confused", webhook.url("/wrong-uid"), &webhook.ca_bundle, "Fail"),
    ];
    cluster
        .apply_yaml(
            &configuration("ValidatingWebhookConfiguration", "failures", hooks),
            "test",
        )
        .expect("configuration");
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().expect("client"), "default");
    let internal = |name: &str, reason: String| {
        (
            500,
            "InternalError".to_string(),
            format!("Internal error occurred: failed calling webhook \"{name}.example.com\": {reason}"),
        )
    };
    assert_eq!(
        create_err(&cms, &cm("a", json!({"case": "refused"}))).await,
        internal("refused", format!("failed to call webhook: Post \"https://127.0.0.1:{port}/validate?timeout=10s\": dial tcp 127.0.0.1:{port}: connect: connection refused"))
    );
    cms.create(&PostParams::default(), &cm("b", json!({"case": "ignored"})))
        .await
        .expect("failurePolicy Ignore lets it pass");
    assert_eq!(
        create_err(&cms, &cm("c", json!({"case": "untrusted"}))).await,
        internal("untrusted", format!("failed to call webhook: Post \"{}?timeout=10s\": tls: failed to verify certificate: x509: certificate signed by unknown authority", webhook.url("/allow")))
    );
    assert!(
        webhook.requests("/allow").is_empty(),
        "no request reaches a server the caBundle does not trust"
    );
    assert_eq!(
        create_err(&cms, &cm("d", json!({"case": "slow"}))).await,
        internal(
            "slow",
            format!(
                "failed to call webhook: Post \"{}?timeout=1s\": context deadline exceeded",
                webhook.url("/slow")
            )
        )
    );
    let (code, _, message) = create_err(&cms, &cm("e", json!({"case": "confused"}))).await;
    let uid = webhook.requests("/wrong-uid")[0]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let expected = internal(
        "confused",
        format!("received invalid webhook response: expected response.uid={uid:?}, got \"not-the-request\""),
    );
    assert_eq!((code, message), (expected.0, expected.2));
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_subresources_and_selectors_decide_which_webhooks_run() {
    let cluster = Cluster::start().await.expect("cluster");
    let webhook = Webhook::start(&["webhook.hooks.svc"]).await;
    // The Service and its Endpoints lead to the webhook server; TLS is checked for webhook.hooks.svc.
    cluster
        .apply_yaml(
            &format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: hooks\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-a\n  labels:\n    team: a\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-b\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: webhook\n  namespace: hooks\nspec:\n  ports:\n  - name: https\n    port: 443\n    targetPort: 9443\n---\napiVersion: v1\nkind: Endpoints\nmetadata:\n  name: webhook\n  namespace: hooks\nsubsets:\n- addresses:\n  - ip: 127.0.0.1\n  ports:\n  - name: https\n    port: {}\n",
                webhook.port
            ),
            "test",
        )
        .expect("namespaces and service");
    let status_hook = json!({
        "name": "status.example.com",
        "clientConfig": {"service": {"namespace": "hooks", "name": "webhook", "path": "/allow"}, "caBundle": webhook.ca_bundle},
        "rules": [{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/status"], "scope": "Namespaced"}],
        "namespaceSelector": {"matchExpressions": [{"key": "team", "operator": "In", "values": ["a"]}]},
        "matchConditions": [{"name": "not-quiet", "expression": "object.metadata.name != 'quiet'"}],
        "sideEffects": "None",
        "admissionReviewVersions": ["v1"],
    });
    cluster
        .apply_yaml(
            &configuration("ValidatingWebhookConfiguration", "status", vec![status_hook]),
            "test",
        )
        .expect("configuration");
    let client = cluster.client().expect("client");
    let pod = |name: &str| -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .expect("pod")
    };
    let status = json!({"status": {"phase": "Running"}});
    for (ns, name) in [("team-a", "loud"), ("team-a", "quiet"), ("team-b", "loud")] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
        pods.create(&PostParams::default(), &pod(name))
            .await
            .expect("create pod");
        pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .expect("status");
    }
    let seen = webhook.requests("/allow");
    assert_eq!(
        seen.len(),
        1,
        "only the status update of team-a/loud matches: {seen:?}"
    );
    assert_eq!(
        (
            seen[0]["namespace"].as_str(),
            seen[0]["name"].as_str(),
            seen[0]["subResource"].as_str()
        ),
        (Some("team-a"), Some("loud"), Some("status"))
    );
    assert_eq!(seen[0]["object"]["status"]["phase"], "Running");
    cluster.shutdown().await.expect("shutdown");
}

/// CAPO's immutability rule for OpenStackMachineTemplates, shared with the controller's OpenStack tests.
const POLICY: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/fixtures/capo-immutable-templates.yaml"
));

const TEMPLATE: &str = r#"apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: OpenStackMachineTemplate
metadata:
  name: workers
  namespace: default
spec:
  template:
    spec:
      flavor:
        filter:
          name: m1.small
      image:
        filter:
          name: ubuntu-22.04
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capo_immutability_as_a_validating_admission_policy() {
    let cluster = Cluster::start().await.expect("cluster");
    let crd = std::fs::read_to_string(format!(
        "{REPO_FIXTURES}/real-crds/capo/infrastructure.cluster.x-k8s.io_openstackmachinetemplates.yaml"
    ))
    .expect("CAPO CRD");
    cluster.apply_yaml(&crd, "test").expect("CRD");
    cluster.apply_yaml(POLICY, "test").expect("policy");
    let k = Kubectl::new(&cluster);
    let file = k.write("template.yaml", TEMPLATE);
    let out = k.run(&["apply", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Labels may change; the spec may not.
    let out = k.run(&["label", "openstackmachinetemplate", "workers", "tier=gold"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let denied = "ValidatingAdmissionPolicy 'openstackmachinetemplate-immutable' with binding 'openstackmachinetemplate-immutable' denied request: OpenStackMachineTemplate spec.template.spec field is immutable. Please create a new resource instead.";
    let out = k.run(&[
        "patch",
        "openstackmachinetemplate",
        "workers",
        "--type=merge",
        "-p",
        r#"{"spec":{"template":{"spec":{"flavor":{"filter":{"name":"m1.large"}}}}}}"#,
    ]);
    // kubectl prints each cause as `field: message`; the policy's cause has no field (as on a real cluster).
    assert_eq!(
        stderr(&out).trim(),
        format!("The openstackmachinetemplates \"workers\" is invalid: : {denied}")
    );
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "infrastructure.cluster.x-k8s.io",
                "v1beta2",
                "OpenStackMachineTemplate",
            ),
            "openstackmachinetemplates",
        ),
    );
    let patch = json!({"spec": {"template": {"spec": {"flavor": {"filter": {"name": "m1.large"}}}}}});
    match api.patch("workers", &PatchParams::default(), &Patch::Merge(&patch)).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            (s.code, s.reason.as_str(), s.message.clone()),
            (422, "Invalid", format!("openstackmachinetemplates.infrastructure.cluster.x-k8s.io \"workers\" is forbidden: {denied}"))
        ),
        other => panic!("expected the policy to deny, got {other:?}"),
    }
    let stored = api.get("workers").await.expect("get");
    assert_eq!(
        stored.data["spec"]["template"]["spec"]["flavor"],
        json!({"filter": {"name": "m1.small"}})
    );
    // A new template is the way to change it.
    let out = k.run(&[
        "apply",
        "-f",
        &k.write(
            "new.yaml",
            &TEMPLATE
                .replace("workers", "workers-2")
                .replace("m1.small", "m1.large"),
        ),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    cluster.shutdown().await.expect("shutdown");
}

const RESERVED: &str = r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: reserved-names
spec:
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["configmaps"]
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: apps
  variables:
  - name: name
    expression: object.metadata.name
  validations:
  - expression: "!(variables.name in params.data)"
    messageExpression: "'the name ' + variables.name + ' is reserved by ' + params.metadata.name"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: reserved-names
spec:
  policyName: reserved-names
  validationActions: ["Deny"]
  paramRef:
    name: reserved
    namespace: default
    parameterNotFoundAction: Deny
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: reserved-names-warn
spec:
  policyName: reserved-names
  validationActions: ["Warn"]
  paramRef:
    name: discouraged
    namespace: default
    parameterNotFoundAction: Allow
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_with_params_deny_and_warn() {
    let cluster = Cluster::start().await.expect("cluster");
    cluster
        .apply_yaml(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: reserved\n  namespace: default\ndata:\n  admin: \"\"\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: discouraged\n  namespace: default\ndata:\n  legacy: \"\"\n",
            "test",
        )
        .expect("params");
    cluster.apply_yaml(RESERVED, "test").expect("policy");
    let client = cluster.client().expect("client");
    let apps: Api<ConfigMap> = Api::namespaced(client.clone(), "apps");
    assert_eq!(
        create_err(&apps, &cm("admin", json!({}))).await,
        (403, "Forbidden".into(), "configmaps \"admin\" is forbidden: ValidatingAdmissionPolicy 'reserved-names' with binding 'reserved-names' denied request: the name admin is reserved by reserved".into())
    );
    // Other namespaces are not selected.
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &cm("admin", json!({})))
        .await
        .expect("not in apps");
    // Warn: kubectl prints the warning and the object is created.
    let k = Kubectl::new(&cluster);
    let file = k.write(
        "legacy.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: legacy\n  namespace: apps\n",
    );
    let out = k.run(&["create", "-f", &file]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim(),
        "Warning: Validation failed for ValidatingAdmissionPolicy 'reserved-names' with binding 'reserved-names-warn': the name legacy is reserved by discouraged"
    );
    // Without its param, the Deny binding refuses everything it matches.
    Api::<ConfigMap>::namespaced(client.clone(), "default")
        .delete("reserved", &DeleteParams::default())
        .await
        .expect("delete param");
    assert_eq!(
        create_err(&apps, &cm("anything", json!({}))).await,
        (422, "Invalid".into(), "configmaps \"anything\" is forbidden: ValidatingAdmissionPolicy 'reserved-names' with binding 'reserved-names' denied request: failed to configure binding: no params found for policy binding with `Deny` parameterNotFoundAction".into())
    );
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivalent_versions_reach_a_webhook_in_the_version_it_names() {
    let cluster = Cluster::start().await.expect("cluster");
    let crd = std::fs::read_to_string(format!(
        "{REPO_FIXTURES}/real-crds/capo/infrastructure.cluster.x-k8s.io_openstackmachinetemplates.yaml"
    ))
    .expect("CAPO CRD");
    cluster.apply_yaml(&crd, "test").expect("CRD");
    let webhook = Webhook::start(&["127.0.0.1"]).await;
    let mut v1beta2 = hook(
        "templates.example.com",
        &webhook.url("/allow"),
        &webhook.ca_bundle,
        &["CREATE"],
        &[],
    );
    v1beta2["rules"] = json!([{"operations": ["CREATE"], "apiGroups": ["infrastructure.cluster.x-k8s.io"],
        "apiVersions": ["v1beta2"], "resources": ["openstackmachinetemplates"]}]);
    let mut exact = v1beta2.clone();
    exact["name"] = json!("exact.example.com");
    exact["matchPolicy"] = json!("Exact");
    cluster
        .apply_yaml(
            &configuration(
                "ValidatingWebhookConfiguration",
                "templates",
                vec![v1beta2, exact],
            ),
            "test",
        )
        .expect("configuration");
    let api: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().expect("client"),
        "default",
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(
                "infrastructure.cluster.x-k8s.io",
                "v1beta1",
                "OpenStackMachineTemplate",
            ),
            "openstackmachinetemplates",
        ),
    );
    let template: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "OpenStackMachineTemplate",
        "metadata": {"name": "old-style"},
        "spec": {"template": {"spec": {"flavor": "m1.small", "image": {"filter": {"name": "ubuntu"}}}}}}))
    .expect("template");
    api.create(&PostParams::default(), &template)
        .await
        .expect("create through v1beta1");
    // Only the Equivalent webhook is called, with the object in v1beta2 and the request's own version noted.
    let seen = webhook.requests("/allow");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0]["kind"]["version"], "v1beta2");
    assert_eq!(seen[0]["requestKind"]["version"], "v1beta1");
    assert_eq!(
        seen[0]["object"]["apiVersion"],
        "infrastructure.cluster.x-k8s.io/v1beta2"
    );
    cluster.shutdown().await.expect("shutdown");
}
