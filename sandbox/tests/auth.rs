//! Authentication and RBAC (`ClusterOptions::authorization`) with the real kubectl: `kubectl create token`,
//! requests as the ServiceAccount, the API server's 403 messages, Roles, ClusterRoles, bindings,
//! resourceNames, subresources, aggregation, nonResourceURLs, `kubectl auth can-i` and `whoami`,
//! impersonation, SubjectAccessReview and TokenReview.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kube_emulator::{Cluster, ClusterOptions};
use serde_json::{json, Value};

const KUBECTL: &str = "/usr/bin/kubectl";

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl with the kubeconfig `text`.
    fn with(text: &str) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "kubectl is missing at {KUBECTL}: run scripts/deps/emulator.sh"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(&kubeconfig, text).expect("kubeconfig");
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

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} should fail but printed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `kubectl auth can-i ...`: "yes" or "no" (exit code 0 or 1).
    fn can_i(&self, args: &[&str]) -> String {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert_eq!(
            out.status.success(),
            answer == "yes",
            "exit code and answer agree: {answer} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        answer
    }

    fn apply(&self, yaml: &str) {
        let path = self.dir.path().join("manifest.yaml");
        std::fs::write(&path, yaml).expect("write manifest");
        self.ok(&["apply", "-f", &path.to_string_lossy()]);
    }

    /// POSTs `body` to `path` with `kubectl create --raw` and returns the answer.
    fn post(&self, path: &str, body: &Value) -> Value {
        let file = self.dir.path().join("body.json");
        std::fs::write(&file, body.to_string()).expect("write body");
        let out = self.ok(&["create", "--raw", path, "-f", &file.to_string_lossy()]);
        serde_json::from_str(&out).expect("JSON answer")
    }
}

async fn cluster() -> Cluster {
    Cluster::start_with(ClusterOptions {
        authorization: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("start the emulator")
}

const FORBIDDEN_LIST: &str = "Error from server (Forbidden): secrets is forbidden: User \"system:serviceaccount:x:y\" cannot list resource \"secrets\" in API group \"\" in the namespace \"z\"";

#[tokio::test(flavor = "multi_thread")]
async fn a_service_account_token_gets_exactly_what_rbac_grants() {
    let cluster = cluster().await;
    let admin = Kubectl::with(&cluster.kubeconfig());
    admin.ok(&["create", "namespace", "x"]);
    admin.ok(&["create", "namespace", "z"]);
    admin.ok(&["-n", "x", "create", "serviceaccount", "y"]);
    admin.ok(&[
        "-n",
        "z",
        "create",
        "secret",
        "generic",
        "s1",
        "--from-literal=k=v",
    ]);
    admin.ok(&[
        "-n",
        "z",
        "create",
        "secret",
        "generic",
        "s2",
        "--from-literal=k=v",
    ]);
    let token = admin.ok(&["-n", "x", "create", "token", "y"]).trim().to_owned();
    assert!(!token.is_empty());
    let sa = Kubectl::with(&cluster.kubeconfig_with_token(&token));

    let whoami = sa.ok(&["auth", "whoami"]);
    for expected in [
        "system:serviceaccount:x:y",
        "system:serviceaccounts:x",
        "system:authenticated",
    ] {
        assert!(whoami.contains(expected), "{whoami}");
    }

    // Nothing granted yet: the API server's message, and can-i says no.
    let stderr = sa.fails(&["-n", "z", "get", "secrets"]);
    assert!(stderr.contains(FORBIDDEN_LIST), "{stderr}");
    assert_eq!(sa.can_i(&["list", "secrets", "-n", "z"]), "no");

    // A Role in z bound to the ServiceAccount: list in z only, no delete.
    admin.ok(&[
        "-n",
        "z",
        "create",
        "role",
        "secret-reader",
        "--verb=get,list",
        "--resource=secrets",
    ]);
    admin.ok(&[
        "-n",
        "z",
        "create",
        "rolebinding",
        "secret-reader",
        "--role=secret-reader",
        "--serviceaccount=x:y",
    ]);
    let listed = sa.ok(&["-n", "z", "get", "secrets", "-o", "name"]);
    assert_eq!(listed.lines().count(), 2, "{listed}");
    assert_eq!(sa.can_i(&["list", "secrets", "-n", "z"]), "yes");
    assert_eq!(sa.can_i(&["list", "secrets", "-n", "default"]), "no");
    assert_eq!(sa.can_i(&["delete", "secrets", "-n", "z"]), "no");
    let stderr = sa.fails(&["-n", "z", "delete", "secret", "s1"]);
    assert!(
        stderr.contains("secrets \"s1\" is forbidden: User \"system:serviceaccount:x:y\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"z\""),
        "{stderr}"
    );

    // resourceNames: only s1 of ConfigMaps-like access to secrets in x.
    admin.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: one-secret, namespace: x}\nrules:\n- apiGroups: [\"\"]\n  resources: [secrets]\n  resourceNames: [only]\n  verbs: [get]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: one-secret, namespace: x}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: one-secret}\nsubjects:\n- {kind: ServiceAccount, name: \"y\", namespace: x}\n",
    );
    admin.ok(&[
        "-n",
        "x",
        "create",
        "secret",
        "generic",
        "only",
        "--from-literal=k=v",
    ]);
    admin.ok(&[
        "-n",
        "x",
        "create",
        "secret",
        "generic",
        "other",
        "--from-literal=k=v",
    ]);
    sa.ok(&["-n", "x", "get", "secret", "only"]);
    let stderr = sa.fails(&["-n", "x", "get", "secret", "other"]);
    assert!(stderr.contains("secrets \"other\" is forbidden"), "{stderr}");
    assert_eq!(sa.can_i(&["get", "secrets/only", "-n", "x"]), "yes");
    assert_eq!(sa.can_i(&["list", "secrets", "-n", "x"]), "no");

    // Subresources need their own rule; an aggregated ClusterRole collects the rules of the roles it selects.
    admin.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: aggregate}\naggregationRule:\n  clusterRoleSelectors:\n  - matchLabels: {example.com/aggregate-to-aggregate: \"true\"}\nrules: []\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {name: part, labels: {example.com/aggregate-to-aggregate: \"true\"}}\nrules:\n- apiGroups: [apps]\n  resources: [deployments/status]\n  verbs: [patch]\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [\"*\"]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: aggregate}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: aggregate}\nsubjects:\n- {kind: ServiceAccount, name: \"y\", namespace: x}\n",
    );
    assert_eq!(
        sa.can_i(&["patch", "deployments", "--subresource=status", "-A"]),
        "yes"
    );
    assert_eq!(sa.can_i(&["patch", "deployments", "-A"]), "no");
    sa.ok(&["get", "configmaps", "-A"]);
    sa.ok(&["-n", "z", "create", "configmap", "made-by-sa"]);

    // Non-resource URLs: health for everybody, nothing else without a rule.
    assert_eq!(sa.can_i(&["get", "/healthz"]), "yes");
    assert_eq!(sa.can_i(&["get", "/logs"]), "no");
    let stderr = sa.fails(&["get", "--raw", "/logs"]);
    assert!(
        stderr.contains("forbidden: User \"system:serviceaccount:x:y\" cannot get path \"/logs\""),
        "{stderr}"
    );

    // A binding to a role that does not exist is named in the denial.
    admin.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: dangling, namespace: default}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: missing}\nsubjects:\n- {kind: ServiceAccount, name: \"y\", namespace: x}\n",
    );
    let stderr = sa.fails(&["-n", "default", "get", "pods"]);
    assert!(
        stderr.contains("cannot list resource \"pods\" in API group \"\" in the namespace \"default\": RBAC: role.rbac.authorization.k8s.io \"missing\" not found"),
        "{stderr}"
    );

    // The admin may impersonate: `kubectl --as` sees what the ServiceAccount sees; the ServiceAccount may not.
    let as_sa = ["--as=system:serviceaccount:x:y"];
    assert_eq!(admin.can_i(&[as_sa[0], "list", "secrets", "-n", "z"]), "yes");
    // kubectl prints the server's reason after "no": the dangling binding above is in `default`.
    assert_eq!(
        admin.can_i(&[as_sa[0], "list", "secrets", "-n", "default"]),
        "no - RBAC: role.rbac.authorization.k8s.io \"missing\" not found"
    );
    let stderr = sa.fails(&["--as=kubernetes-admin", "get", "pods"]);
    assert!(
        stderr.contains("users \"kubernetes-admin\" is forbidden: User \"system:serviceaccount:x:y\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"),
        "{stderr}"
    );

    // SubjectAccessReview and TokenReview, as a server checking its callers asks them.
    let review = admin.post(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        &json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {"user": "system:serviceaccount:x:y", "groups": ["system:serviceaccounts"],
                         "resourceAttributes": {"namespace": "z", "verb": "list", "resource": "secrets"}}}),
    );
    assert_eq!(review["status"]["allowed"], true, "{review}");
    assert_eq!(
        review["status"]["reason"],
        "RBAC: allowed by RoleBinding \"secret-reader/z\" of Role \"secret-reader\" to ServiceAccount \"y/x\""
    );
    let review = admin.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": token}}),
    );
    assert_eq!(review["status"]["authenticated"], true, "{review}");
    assert_eq!(review["status"]["user"]["username"], "system:serviceaccount:x:y");
    let review = admin.post(
        "/apis/authentication.k8s.io/v1/tokenreviews",
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {"token": "forged"}}),
    );
    assert_eq!(review["status"]["authenticated"], false, "{review}");
    // Reviews of others are not for everybody.
    let stderr = sa.fails(&[
        "create",
        "--raw",
        "/apis/authentication.k8s.io/v1/tokenreviews",
        "-f",
        "/dev/null",
    ]);
    assert!(
        stderr.contains("cannot create resource \"tokenreviews\""),
        "{stderr}"
    );

    // A deleted ServiceAccount's tokens stop working; unknown tokens are 401.
    admin.ok(&["-n", "x", "delete", "serviceaccount", "y"]);
    // kubectl words a 401 in two ways: the Status message, or (when its discovery cache gets the 401 first)
    // client-go's own text for it.
    let unauthorized = |s: &str| {
        s.contains("Unauthorized") || s.contains("the server has asked for the client to provide credentials")
    };
    let stderr = sa.fails(&["-n", "z", "get", "secrets"]);
    assert!(unauthorized(&stderr), "{stderr}");
    let forged = Kubectl::with(&cluster.kubeconfig_with_token("forged"));
    let stderr = forged.fails(&["get", "namespaces"]);
    assert!(unauthorized(&stderr), "{stderr}");
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_authorization_everybody_is_the_admin_and_tokens_still_work() {
    let cluster = Cluster::start().await.expect("start the emulator");
    let admin = Kubectl::with(&cluster.kubeconfig());
    admin.ok(&["create", "serviceaccount", "y"]);
    let token = admin
        .ok(&["create", "token", "y", "--duration=20m"])
        .trim()
        .to_owned();
    let sa = Kubectl::with(&cluster.kubeconfig_with_token(&token));
    sa.ok(&["get", "secrets"]);
    assert_eq!(sa.can_i(&["delete", "namespaces"]), "yes");
    assert!(
        admin.ok(&["get", "clusterroles", "-o", "name"]).is_empty(),
        "the default RBAC policy exists only with authorization on"
    );
    let stderr = admin.fails(&["create", "token", "y", "--duration=1m"]);
    assert!(
        stderr.contains("may not specify a duration less than 10 minutes"),
        "{stderr}"
    );
    cluster.shutdown().await.expect("shutdown");
}
