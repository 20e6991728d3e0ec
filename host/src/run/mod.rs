//! `stackhost run`: the controller process. This module is the process around the controllers: the
//! Kubernetes client, leader election with a Lease (only the leader reconciles; standbys wait, but serve
//! what every replica serves, such as the runtime hooks), one HTTP listener with Prometheus metrics on
//! `/metrics` and probes on `/healthz` and `/readyz`, and graceful shutdown on SIGTERM/SIGINT
//! (controllers finish what they are doing, then the Lease is released so a standby takes over at once).

pub mod access;
pub mod certs;
pub mod lease;
pub mod rate;
mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use lease::{Attempt, Elector, LeaseSettings};

/// Options of the process (the controllers add their own).
#[derive(Debug, Clone, clap::Args)]
pub struct ProcessArgs {
    /// Kubeconfig to use; without it: $KUBECONFIG, ~/.kube/config, or the in-cluster service account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Address of the HTTP listener for /metrics, /healthz and /readyz.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub bind: SocketAddr,
    /// Serve /metrics over HTTPS on --metrics-bind instead of --bind, only to callers whose bearer
    /// token the API server authenticates (TokenReview) and whom RBAC allows `get` on the non-resource
    /// URL /metrics (SubjectAccessReview); stackhost then needs `create` on both review kinds.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pub metrics_secure: bool,
    /// Address of the HTTPS listener of --metrics-secure.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub metrics_bind: SocketAddr,
    /// Directory with `tls.crt` and `tls.key` for --metrics-secure, reloaded when they change; a
    /// self-signed certificate is generated at start without it.
    #[arg(long)]
    pub metrics_cert_dir: Option<PathBuf>,
    /// Elect a leader through a Lease so that several replicas can run; only the leader reconciles.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "stackhost-system")]
    pub leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(long, default_value = "stackhost-controller")]
    pub lease_name: String,
    /// How long the Lease stays valid without renewal (e.g. `15s`).
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub lease_duration: Duration,
    /// How often the leader renews the Lease and a standby retries (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub lease_renew: Duration,
    /// How long controllers get to finish their reconciles after SIGTERM.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Runs `work` until it ends, or until `grace` after `shutdown` turned true (then `None`): a watch that
/// keeps failing (e.g. CRDs not installed) must not keep the process from exiting.
pub async fn with_grace<F: Future>(work: F, shutdown: Shutdown, grace: Duration) -> Option<F::Output> {
    let deadline = async {
        until_shutdown(shutdown).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        out = work => Some(out),
        () = deadline => None,
    }
}

/// Parses `250ms`, `15s`, `5m`, `1h` or a number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration; use e.g. 250ms, 15s, 5m or 1h"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "" | "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        other => Err(format!("unknown unit {other:?} in {text:?}; use ms, s, m or h")),
    }
}

/// What `/healthz`, `/readyz` and the leader gauge report.
#[derive(Debug, Clone, Default)]
pub struct Health {
    inner: Arc<HealthInner>,
}

#[derive(Debug, Default)]
struct HealthInner {
    ready: AtomicBool,
    leading: AtomicBool,
    leader: std::sync::Mutex<String>,
    leader_gauge: Gauge,
    /// Set when the process serves the runtime hooks: true while their server accepts connections.
    hooks: std::sync::OnceLock<Arc<AtomicBool>>,
}

impl Health {
    /// The controllers have synced their watches and are reconciling.
    pub fn set_ready(&self, ready: bool) {
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Whether the controllers said they are ready.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Whether this process holds the Lease (always true without leader election).
    pub fn is_leading(&self) -> bool {
        self.inner.leading.load(Ordering::SeqCst)
    }

    fn set_leading(&self, leading: bool, leader: &str) {
        self.inner.leading.store(leading, Ordering::SeqCst);
        self.inner.leader_gauge.set(i64::from(leading));
        if let Ok(mut l) = self.inner.leader.lock() {
            leader.clone_into(&mut l);
        }
    }

    /// Makes `/readyz` depend on the runtime hook server (on every replica, leader or standby).
    pub fn require_hooks(&self, serving: Arc<AtomicBool>) {
        let _ = self.inner.hooks.set(serving);
    }

    /// `Some(serving)` when the process serves the runtime hooks.
    pub fn hooks_serving(&self) -> Option<bool> {
        self.inner.hooks.get().map(|s| s.load(Ordering::SeqCst))
    }

    /// The holder of the Lease as last seen.
    pub fn leader(&self) -> String {
        self.inner.leader.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// How the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Shut down on a signal (or the controllers returned).
    Stopped,
    /// Lost the Lease to another replica: exit non-zero so the pod restarts as a standby.
    LostLeadership,
}

/// A kube client from `--kubeconfig`, or inferred (env, ~/.kube/config, in-cluster).
/// `rate` limits its requests on the client side (see [`rate`]).
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    rate: Option<rate::ApiRate>,
) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("cannot read the kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("the kubeconfig {} is not usable", path.display()))?
        }
        None => kube::Config::infer().await.context(
            "no Kubernetes configuration found: pass --kubeconfig, set KUBECONFIG, or run in a pod",
        )?,
    };
    rate::client(config, rate).context("cannot build a Kubernetes client")
}

/// A shutdown signal for the controllers: resolves once SIGTERM/SIGINT arrived or leadership was lost.
pub type Shutdown = watch::Receiver<bool>;

/// Waits until `shutdown` turns true.
pub async fn until_shutdown(mut shutdown: Shutdown) {
    // An error means the sender is gone, which is also the end.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Runs the process: listener, signals, leader election, then `controllers` until shutdown.
/// `controllers` is called once this process leads (at once without leader election) and must return
/// soon after its [`Shutdown`] turns true; it sets [`Health::set_ready`] when its watches have synced.
/// What every replica serves (the runtime hooks) runs outside, registered in `health`.
pub async fn serve<F, Fut>(
    args: &ProcessArgs,
    client: kube::Client,
    mut registry: Registry,
    health: Health,
    controllers: F,
) -> anyhow::Result<Ended>
where
    F: FnOnce(Shutdown, Health) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    registry.register(
        "stackhost_leader",
        "1 when this process holds the leader-election Lease and reconciles",
        health.inner.leader_gauge.clone(),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .with_context(|| format!("cannot listen on {} (--bind)", args.bind))?;
    let registry = Arc::new(registry);
    let secure = if args.metrics_secure {
        let tls = match &args.metrics_cert_dir {
            Some(dir) => Arc::new(certs::CertDir::load(dir, "--metrics-cert-dir")?).tls()?,
            None => kube_emulator::tls::Tls::generate()
                .context("cannot generate a certificate for --metrics-secure")?,
        };
        let tcp = tokio::net::TcpListener::bind(args.metrics_bind)
            .await
            .with_context(|| format!("cannot listen on {} (--metrics-bind)", args.metrics_bind))?;
        tracing::info!(address = %args.metrics_bind, "serving /metrics over HTTPS to authorized callers");
        Some(tokio::spawn(server::serve_secure(
            tls.listener(tcp),
            registry.clone(),
            client.clone(),
            until_shutdown(stop_rx.clone()),
        )))
    } else {
        None
    };
    tracing::info!(
        address = %args.bind,
        metrics = !args.metrics_secure,
        "serving /healthz and /readyz"
    );
    let plain = tokio::spawn(server::serve(
        listener,
        registry,
        health.clone(),
        args.leader_elect,
        args.metrics_secure,
        until_shutdown(stop_rx.clone()),
    ));
    let server = async move {
        let _ = plain.await;
        if let Some(secure) = secure {
            let _ = secure.await;
        }
    };
    let server = tokio::spawn(server);
    tokio::spawn(signals(stop_tx.clone()));

    let elector = args.leader_elect.then(|| {
        Elector::new(
            client.clone(),
            LeaseSettings {
                namespace: args.leader_election_namespace.clone(),
                name: args.lease_name.clone(),
                identity: identity(),
                duration: args.lease_duration,
                renew_every: args.lease_renew,
            },
        )
    });
    let elector = elector.map(Arc::new);
    if let Some(elector) = &elector {
        if !acquire(elector, &health, stop_rx.clone()).await {
            server.await.ok();
            return Ok(Ended::Stopped);
        }
    } else {
        health.set_leading(true, "");
    }

    let lost = Arc::new(AtomicBool::new(false));
    let renewer = elector
        .clone()
        .map(|e| tokio::spawn(keep_leading(e, health.clone(), stop_tx.clone(), lost.clone())));
    let mut work = tokio::spawn(controllers(stop_rx.clone(), health.clone()));
    let result = tokio::select! {
        joined = &mut work => Some(joined),
        () = until_shutdown(stop_rx.clone()) => None,
    };
    let result = match result {
        Some(joined) => joined,
        None => match tokio::time::timeout(args.shutdown_timeout, &mut work).await {
            Ok(joined) => joined,
            Err(_) => {
                tracing::warn!(timeout = ?args.shutdown_timeout, "controllers did not stop in time; aborting");
                work.abort();
                Ok(Ok(()))
            }
        },
    };
    health.set_ready(false);
    let _ = stop_tx.send(true);
    if let Some(renewer) = renewer {
        renewer.abort();
    }
    if let Some(elector) = &elector {
        if !lost.load(Ordering::SeqCst) {
            match elector.release().await {
                Ok(()) => tracing::info!("released the leader-election Lease"),
                Err(e) => tracing::warn!(error = %e, "could not release the Lease; it expires on its own"),
            }
        }
    }
    server.await.ok();
    match result {
        Ok(Ok(())) if lost.load(Ordering::SeqCst) => Ok(Ended::LostLeadership),
        Ok(Ok(())) => Ok(Ended::Stopped),
        Ok(Err(e)) => Err(e.context("the controllers stopped with an error")),
        Err(join) => Err(anyhow::anyhow!("the controllers panicked: {join}")),
    }
}

/// Tries until this process leads; false when shutdown came first.
async fn acquire(elector: &Elector, health: &Health, stop: Shutdown) -> bool {
    let settings = elector.settings();
    let mut last_holder = String::new();
    loop {
        match elector.try_acquire().await {
            Ok(Attempt::Leading) => {
                tracing::info!(lease = %settings.name, identity = %settings.identity, "became the leader");
                health.set_leading(true, &settings.identity);
                return true;
            }
            Ok(Attempt::Following { holder }) => {
                if holder != last_holder {
                    tracing::info!(leader = %holder, "standing by; another replica leads");
                    last_holder.clone_from(&holder);
                }
                health.set_leading(false, &holder);
            }
            Err(e) => tracing::warn!(error = %e, lease = %settings.name, "cannot read or write the Lease"),
        }
        tokio::select! {
            () = tokio::time::sleep(settings.renew_every) => {}
            () = until_shutdown(stop.clone()) => return false,
        }
    }
}

/// Renews the Lease; on losing it, stops the controllers.
async fn keep_leading(
    elector: Arc<Elector>,
    health: Health,
    stop: watch::Sender<bool>,
    lost: Arc<AtomicBool>,
) {
    let settings = elector.settings().clone();
    let mut last_renewal = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(settings.renew_every).await;
        match elector.try_acquire().await {
            Ok(Attempt::Leading) => last_renewal = tokio::time::Instant::now(),
            Ok(Attempt::Following { holder }) => {
                tracing::error!(leader = %holder, "lost the leader-election Lease; stopping the controllers");
                health.set_leading(false, &holder);
                lost.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
                return;
            }
            Err(e) if last_renewal.elapsed() >= settings.duration => {
                tracing::error!(error = %e, "could not renew the Lease before it expired; stopping the controllers");
                health.set_leading(false, "");
                lost.store(true, Ordering::SeqCst);
                let _ = stop.send(true);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "could not renew the Lease; retrying"),
        }
    }
}

/// Turns SIGTERM and SIGINT into a shutdown.
async fn signals(stop: watch::Sender<bool>) {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        () = term => tracing::info!("SIGTERM: shutting down"),
    }
    let _ = stop.send(true);
}

/// `<hostname>_<suffix>`, as client-go builds leader identities (the pod name is the hostname in a pod).
fn identity() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "stackhost".to_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}_{:08x}", nanos ^ std::process::id().rotate_left(16))
}
