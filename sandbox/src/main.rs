//! `kube-emulator`: one emulated cluster for kubectl scripts and people. Writes the kubeconfig once serving and
//! runs until SIGINT/SIGTERM, then writes the state file (if any).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kube_emulator::{Cluster, ClusterOptions};

/// Serve an emulated Kubernetes API on 127.0.0.1.
#[derive(Debug, Parser)]
#[command(name = "kube-emulator", version)]
struct Args {
    /// Where to write the kubeconfig that points at the emulator.
    #[arg(long, env = "KUBE_EMULATOR_KUBECONFIG")]
    kubeconfig: PathBuf,
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0, env = "KUBE_EMULATOR_PORT")]
    port: u16,
    /// State file: loaded at start when present, kept up to date while running.
    #[arg(long, env = "KUBE_EMULATOR_STATE")]
    state: Option<PathBuf>,
    /// Manifests (files or directories of .yaml/.yml/.json) to server-side apply before serving, in order.
    #[arg(long = "apply", value_name = "PATH")]
    apply: Vec<PathBuf>,
    /// Serve HTTPS with a freshly generated CA (written into the kubeconfig).
    #[arg(long, env = "KUBE_EMULATOR_TLS")]
    tls: bool,
    /// Authenticate requests (the kubeconfig's admin token, ServiceAccount tokens from `kubectl create
    /// token`) and authorize them with RBAC, as a real API server does.
    #[arg(long, env = "KUBE_EMULATOR_AUTHORIZATION")]
    authorization: bool,
    /// Run admission webhooks and ValidatingAdmissionPolicies on writes, as every API server does
    /// (`--admission=false` turns it off).
    #[arg(long, env = "KUBE_EMULATOR_ADMISSION", default_value_t = true, action = clap::ArgAction::Set)]
    admission: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let cluster = Cluster::start_with(ClusterOptions {
        port: args.port,
        state_file: args.state.clone(),
        authorization: args.authorization,
        admission: args.admission,
        ..Default::default()
    })
    .await
    .context("starting the emulator")?;
    for path in &args.apply {
        for file in manifest_files(path).with_context(|| format!("reading {}", path.display()))? {
            let text =
                std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let applied = cluster
                .apply_yaml(&text, "kube-emulator")
                .with_context(|| format!("applying {}", file.display()))?;
            tracing::info!(file = %file.display(), objects = applied.len(), "applied");
        }
    }
    cluster
        .write_kubeconfig(&args.kubeconfig)
        .context("writing the kubeconfig")?;
    println!(
        "kube-emulator serving on {} (kubeconfig {})",
        cluster.url(),
        args.kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    cluster
        .shutdown()
        .await
        .context("writing the state file on shutdown")?;
    Ok(())
}

/// A file, or the manifest files of a directory in name order.
fn manifest_files(path: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}
