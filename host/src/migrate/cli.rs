//! `stackhost migrate`: its flags and its run.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;

use super::{assess, execute, gather, render_text, Options};
use crate::controller::ControllerArgs;
use crate::oci::registry::Mirror;

/// Exit code when something blocks the migration (or an adoption failed).
pub const EXIT_BLOCKED: i32 = 1;

/// Flags of `stackhost migrate`. The source flags are `stackhost run`'s: give the values stackhost will
/// run with, so the check lists the releases where the controllers will look for them.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Kubeconfig of the management cluster; without it: $KUBECONFIG or ~/.kube/config.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Make the adoptions (refused while anything blocks). Without it the check changes nothing.
    #[arg(long)]
    pub apply: bool,
    /// Print the report as JSON on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Only ClusterStacks, ClusterStackReleases and ClusterAddons of this namespace (stackhost's
    /// --namespace); CSO's Deployment, webhooks and the CRDs are checked cluster-wide.
    #[arg(long)]
    pub namespace: Option<String>,
    /// The label stackhost will watch (`key=value`, its --watch-label): adopted objects get it.
    #[arg(long, value_parser = crate::controller::context::parse_label)]
    pub watch_label: Option<(String, String)>,
    /// Release source stackhost will use for ClusterStacks without `spec.source` (its --release-source,
    /// the chart's `releaseSource`).
    #[arg(long, env = "STACKHOST_RELEASE_SOURCE")]
    pub release_source: Option<String>,
    /// Read OCI releases from this OCI image layout (its --oci-layout).
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Registry credentials, a Docker `config.json` (its --registry-config).
    #[arg(long, env = "STACKHOST_REGISTRY_CONFIG", value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// Registry mirror, `PREFIX=ENDPOINT[,ENDPOINT...]` (its --registry-mirror); repeatable.
    #[arg(long = "registry-mirror", value_name = "RULE", value_parser = crate::controller::context::parse_mirror)]
    pub registry_mirrors: Vec<Mirror>,
    /// GitHub API base URL for `github://` sources.
    #[arg(long, default_value = "https://api.github.com")]
    pub github_api_url: String,
}

impl MigrateArgs {
    /// Checks the cluster, prints the report and, with `--apply` and nothing blocking, adopts.
    /// Returns 0 when nothing blocks (and every adoption was made), [`EXIT_BLOCKED`] otherwise.
    pub async fn run(self) -> anyhow::Result<i32> {
        let client = crate::run::client(self.kubeconfig.as_deref(), None).await?;
        // Release listings only: the caches the context opens stay empty and go with the process.
        let cache = tempfile::Builder::new()
            .prefix("stackhost-migrate")
            .tempdir()
            .context("cannot create a temporary cache directory")?;
        let options = Options {
            watch_label: self.watch_label.clone(),
            release_source: self.release_source.clone(),
        };
        let args = ControllerArgs {
            namespace: self.namespace.clone(),
            watch_label: self.watch_label,
            release_source: self.release_source,
            oci_layout: self.oci_layout,
            cache_dir: Some(cache.path().to_path_buf()),
            registry_config: self.registry_config,
            registry_mirrors: self.registry_mirrors,
            github_api_url: self.github_api_url,
            ..ControllerArgs::default()
        };
        let mut metrics = prometheus_client::registry::Registry::default();
        let ctx = crate::cli::controller_context(client.clone(), args, &mut metrics)?;
        let snapshot = gather(&client, self.namespace.as_deref(), &ctx).await;
        let report = assess(&snapshot, &options);
        let cluster = self
            .kubeconfig
            .as_ref()
            .map(|p| format!("kubeconfig {}", p.display()))
            .unwrap_or_else(|| "the current kubeconfig".into());
        let outcomes = match (self.apply, report.blocked()) {
            (true, false) => Some(execute(&client, &report).await),
            (true, true) => Some(Vec::new()),
            (false, _) => None,
        };
        if self.json {
            let json = serde_json::json!({
                "blocked": report.blocked(),
                "findings": report.findings,
                "applied": outcomes.as_ref().map(|o| o.iter().map(|(object, outcome)| serde_json::json!({
                    "object": object,
                    "error": outcome.as_ref().err(),
                })).collect::<Vec<_>>()),
            });
            println!("{}", serde_json::to_string_pretty(&json)?);
        } else {
            print!("{}", render_text(&report, &cluster, outcomes.as_deref()));
        }
        let failed = outcomes
            .as_ref()
            .is_some_and(|o| o.iter().any(|(_, r)| r.is_err()));
        Ok(if report.blocked() || failed {
            EXIT_BLOCKED
        } else {
            0
        })
    }
}
