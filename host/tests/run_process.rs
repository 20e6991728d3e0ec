//! `stackhost run` as a process against the API emulator: two replicas elect one leader through a Lease,
//! probes and metrics say who leads, SIGTERM hands over at once, a stolen Lease stops the old leader; the
//! clients it builds keep to `--kube-api-qps`.

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};

struct Replica {
    child: Child,
    port: u16,
}

impl Replica {
    fn start(kubeconfig: &std::path::Path) -> Replica {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_stackhost"))
            .args(["run", "--kubeconfig"])
            .arg(kubeconfig)
            .args(["--bind", &format!("127.0.0.1:{port}")])
            .args(["--leader-election-namespace", "default"])
            .args(["--lease-duration", "4s", "--lease-renew", "200ms"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stackhost run");
        Replica { child, port }
    }

    fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.port, path)
    }

    /// Waits until `path` answers and `check` accepts the answer.
    fn wait_for(&self, path: &str, what: &str, check: impl Fn(u16, &str) -> bool) -> (u16, String) {
        let started = Instant::now();
        loop {
            if let Some((code, body)) = self.get(path) {
                if check(code, &body) {
                    return (code, body);
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what} on {path}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(&mut self) -> (Option<i32>, String) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let status = self.child.wait().expect("wait");
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_string(&mut stderr);
        }
        (status.code(), stderr)
    }

    fn wait_exit(&mut self) -> (Option<i32>, String) {
        let started = Instant::now();
        while self.child.try_wait().ok().flatten().is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "replica did not exit"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.terminate()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

fn leader_metric(body: &str) -> Option<&str> {
    body.lines().find_map(|l| l.strip_prefix("stackhost_leader "))
}

#[tokio::test(flavor = "multi_thread")]
async fn replicas_elect_one_leader_and_hand_over_on_sigterm() -> anyhow::Result<()> {
    let cluster = kube_emulator::Cluster::start().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let leases: Api<Lease> = Api::namespaced(cluster.client()?, "default");

    let first = Replica::start(&kubeconfig);
    let kc = kubeconfig.clone();
    let (first, second) = tokio::task::spawn_blocking(move || {
        first.wait_for("/readyz", "the first replica to lead", |c, b| {
            c == 200 && b == "ok\n"
        });
        let (_, metrics) = first.wait_for("/metrics", "metrics", |c, _| c == 200);
        assert_eq!(leader_metric(&metrics), Some("1"), "{metrics}");
        assert_eq!(first.get("/healthz"), Some((200, "ok\n".to_owned())));

        let second = Replica::start(&kc);
        let (_, standby) = second.wait_for("/readyz", "the second replica to stand by", |c, b| {
            c == 200 && b.starts_with("standby")
        });
        let (_, metrics) = second.wait_for("/metrics", "metrics", |c, _| c == 200);
        assert_eq!(leader_metric(&metrics), Some("0"), "{metrics}");
        (first, (second, standby))
    })
    .await?;
    let (second, standby) = second;
    let mut first = first;

    let lease = leases.get("stackhost-controller").await?;
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.clone())
        .unwrap_or_default();
    assert!(
        standby.contains(&holder),
        "standby names the leader {holder}: {standby}"
    );

    // SIGTERM: the leader stops cleanly and releases the Lease; the standby takes over.
    let (code, stderr) = tokio::task::spawn_blocking(move || first.terminate()).await?;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("released the leader-election Lease"), "{stderr}");
    let second = tokio::task::spawn_blocking(move || {
        second.wait_for("/metrics", "the standby to take over", |_, b| {
            leader_metric(b) == Some("1")
        });
        second
    })
    .await?;
    let lease = leases.get("stackhost-controller").await?;
    let spec = lease.spec.clone().unwrap_or_default();
    assert_ne!(spec.holder_identity.as_deref(), Some(holder.as_str()));
    assert_eq!(spec.lease_transitions, Some(1));

    // Somebody else takes the Lease (e.g. after a network partition): the old leader stops, non-zero.
    let mut stolen = lease;
    if let Some(spec) = stolen.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
        spec.lease_duration_seconds = Some(3600);
        spec.renew_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        ));
    }
    leases
        .replace("stackhost-controller", &PostParams::default(), &stolen)
        .await?;
    let mut second = second;
    let (code, stderr) = tokio::task::spawn_blocking(move || second.wait_exit()).await?;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("lost the leader-election Lease"), "{stderr}");
    cluster.shutdown().await?;
    Ok(())
}

/// Lists namespaces `n` times with `client`; how long that took.
async fn list_namespaces(client: kube::Client, n: usize) -> Duration {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client);
    let started = Instant::now();
    for _ in 0..n {
        namespaces
            .list(&Default::default())
            .await
            .expect("list namespaces");
    }
    started.elapsed()
}

#[tokio::test]
async fn the_management_and_workload_clients_keep_to_the_api_rate() {
    let cluster = kube_emulator::Cluster::start().await.expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    // 2 at once, then one per 200 ms: 7 requests take at least 5 x 200 ms.
    let rate = stackhost::run::rate::ApiRate::from_flags(5.0, Some(2));
    let management = stackhost::run::client(Some(&kubeconfig), rate)
        .await
        .expect("client");
    let took = list_namespaces(management, 7).await;
    assert!(took >= Duration::from_millis(1000), "7 requests in {took:?}");
    let workload = stackhost::addon::workload::client_from_kubeconfig(&cluster.kubeconfig(), rate)
        .await
        .expect("workload client");
    let took = list_namespaces(workload, 7).await;
    assert!(took >= Duration::from_millis(1000), "7 requests in {took:?}");
}

#[test]
fn bad_flags_are_reported_with_the_flag_to_fix() {
    let out = Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args(["run", "--kubeconfig", "/nonexistent/kubeconfig"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read the kubeconfig /nonexistent/kubeconfig"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args(["run", "--lease-duration", "soon"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--lease-duration") && stderr.contains("15s"),
        "{stderr}"
    );

    let out = Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args(["run", "--kube-api-qps=-1"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("--kube-api-qps") && stderr.contains("from 0 (no limit) to 10000"),
        "{stderr}"
    );
}
