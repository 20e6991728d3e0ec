//! The `stackhost` command line: one clap struct per subcommand, each with its `run`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use crate::plugin::capability::{CaBundle, MemoryState, StateStore as _, StaticSecrets, UreqTransport};
use crate::plugin::{self, Capabilities, EngineConfig, Grants, Limits, PluginHost, PluginSettings};

/// Exit code when the plugin returned its own `error`.
pub const EXIT_GUEST_ERROR: i32 = 1;
/// Exit code for a trap, a limit, a refused or invalid component.
pub const EXIT_PLUGIN_FAILURE: i32 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "stackhost",
    version,
    about = "Cluster Stacks controller with provider steps as sandboxed Wasm plugins"
)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, env = "STACKHOST_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with provider plugins (Wasm components).
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Manage cosign-format signing keys.
    #[command(subcommand)]
    Key(crate::oci::cli::KeyCommand),
    /// Push, pull and list cluster-stack releases in OCI registries.
    #[command(subcommand)]
    Release(crate::oci::cli::ReleaseCommand),
    /// Move artifacts to and from OCI image layouts (air gap).
    #[command(subcommand)]
    Oci(crate::oci::cli::OciCommand),
    /// Print the CustomResourceDefinitions (the content of crds/).
    Crds,
    /// Run the controllers: leader election, /metrics, /healthz, /readyz, graceful shutdown.
    // Boxed: the controllers' arguments are much larger than the other commands' (large_enum_variant).
    Run(Box<RunArgs>),
    /// Check a cluster run by the Cluster Stack Operator for the move to stackhost (dry run), and with
    /// --apply adopt its ClusterStacks, releases and what they applied. Exit 1 while anything blocks.
    Migrate(crate::migrate::cli::MigrateArgs),
    /// The embedded default: API emulator, CRDs, controllers, a sample plugin and release, reconciled.
    Sandbox(crate::sandbox::SandboxArgs),
    /// Internal: one Helm render, job on stdin, answer on stdout (the controllers run each render so).
    #[command(name = "internal-render", hide = true)]
    InternalRender,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub process: crate::run::ProcessArgs,
    #[command(flatten)]
    pub controllers: crate::controller::ControllerArgs,
    /// Serve the Cluster API runtime hooks (HTTPS) on this address, e.g. `0.0.0.0:9442`; off when unset.
    #[arg(long)]
    pub hooks_bind: Option<std::net::SocketAddr>,
    /// Directory with `tls.crt` and `tls.key` for the hooks server (a self-signed one otherwise).
    #[arg(long)]
    pub hooks_cert_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Show a component's digest, size, package/world, imports and exports (without compiling it).
    /// FILE is a local component; anything else is read as a registry reference (config blob only).
    Inspect(InspectArgs),
    /// Push a component as a CNCF Wasm OCI artifact.
    Push(crate::oci::cli::PluginPushArgs),
    /// Pull a plugin: resolve, check its world, verify its signature, download through the cache.
    Pull(crate::oci::cli::PluginPullArgs),
    /// Verify a plugin's cosign signature with a public key.
    Verify(crate::oci::cli::PluginVerifyArgs),
    /// Sign a plugin with a cosign private key (pushes `sha256-<digest>.sig`).
    Sign(crate::oci::cli::PluginSignArgs),
    /// Call one export with WAVE arguments, e.g. `'patch-cluster-class({...}, ["{}"])'`.
    Call(CallArgs),
    /// Turn a core module built for wasm32-wasip1 into a component (the offline build route).
    Componentize(ComponentizeArgs),
    /// Create a plugin crate from the template (builds offline; see docs/plugin-authors.md).
    New(crate::harness::cli::NewArgs),
    /// Run a plugin's fixtures: golden results, recorded HTTP, state; a table and JUnit XML.
    Test(crate::harness::cli::TestArgs),
    /// Time each fixture over many calls: p50/p99 wall time and fuel per call.
    Bench(crate::harness::cli::BenchArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The component file, or a registry reference.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: crate::oci::cli::RegistryArgs,
}

#[derive(Debug, Args)]
pub struct ComponentizeArgs {
    /// The core module (`target/wasm32-wasip1/release/NAME.wasm`).
    pub core: PathBuf,
    /// Where to write the component.
    #[arg(short, long)]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct CallArgs {
    /// The component file.
    pub file: PathBuf,
    /// The call in WAVE syntax: `FUNCTION(ARG, ...)`.
    pub call: String,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub grants: GrantArgs,
    /// The plugin's configuration (JSON), returned by its `config.get`.
    #[arg(long, default_value = "{}")]
    pub config: String,
    /// Directory for compiled code, so the next call does not recompile.
    #[arg(long, env = "STACKHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Print the per-call report as JSON on stderr.
    #[arg(long)]
    pub report_json: bool,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Fuel per call.
    #[arg(long, default_value_t = Limits::default().fuel)]
    pub fuel: u64,
    /// Linear memory cap in MiB (1 to 4096: a 32-bit guest addresses at most 4 GiB).
    #[arg(long, default_value_t = (Limits::default().memory_bytes >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub memory_mib: u64,
    /// Wall-clock deadline per call in milliseconds (1 ms to 1 hour; there is no "no deadline").
    #[arg(long, default_value_t = Limits::default().deadline_ms,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub deadline_ms: u64,
    /// Largest result in bytes.
    #[arg(long, default_value_t = Limits::default().max_result_bytes)]
    pub max_result_bytes: usize,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            fuel: self.fuel,
            // At most 4096 MiB (the parser's range): fits usize on every 64-bit host.
            memory_bytes: usize::try_from(self.memory_mib << 20).unwrap_or(usize::MAX),
            deadline_ms: self.deadline_ms,
            max_result_bytes: self.max_result_bytes,
        }
    }
}

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Grant `http` to this host (`host`, `host:port`, `*.domain`); repeatable.
    #[arg(long = "allow-http", value_name = "HOST")]
    pub http_hosts: Vec<String>,
    /// Grant a secret key with its value: `NAME/KEY=VALUE`, or `NAME/KEY=@FILE`; repeatable.
    #[arg(long = "secret", value_name = "NAME/KEY=VALUE")]
    pub secrets: Vec<String>,
    /// Grant `state`, starting from and saved back to this JSON file (a map of strings).
    #[arg(long = "state", value_name = "FILE")]
    pub state_file: Option<PathBuf>,
    /// Grant `state` in memory for this one call.
    #[arg(long)]
    pub grant_state: bool,
    /// Trust the CA certificates of this PEM file for `http` besides the public roots (what a
    /// ProviderPlugin's spec.capabilities.httpCABundle does); repeatable.
    #[arg(long = "ca-file", value_name = "PEM")]
    pub ca_files: Vec<PathBuf>,
}

impl GrantArgs {
    fn grants_and_caps(
        &self,
        config: &str,
    ) -> anyhow::Result<(Grants, Capabilities, Option<Arc<MemoryState>>)> {
        let mut secrets = BTreeMap::new();
        for spec in &self.secrets {
            let (key, value) = parse_secret(spec)?;
            secrets.insert(key, value);
        }
        let initial: BTreeMap<String, String> = match &self.state_file {
            Some(path) if path.exists() => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("--state {}", path.display()))?;
                serde_json::from_str(&text).with_context(|| {
                    format!("--state {}: expected a JSON object of strings", path.display())
                })?
            }
            _ => BTreeMap::new(),
        };
        let state = (self.state_file.is_some() || self.grant_state)
            .then(|| Arc::new(MemoryState::new(initial, 1 << 20)));
        serde_json::from_str::<serde_json::Value>(config).context("--config is not valid JSON")?;
        let grants = Grants {
            http_hosts: self.http_hosts.clone(),
            secret_keys: secrets.keys().cloned().collect(),
            state: state.is_some(),
        };
        let mut caps = Capabilities {
            config: Arc::from(config),
            ..Capabilities::default()
        };
        caps.secrets = Arc::new(StaticSecrets(secrets));
        let bundles = self
            .ca_files
            .iter()
            .map(|path| CaBundle::from_file(path).map_err(|e| anyhow::anyhow!("--ca-file: {e}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(bundle) = CaBundle::merge(bundles) {
            caps.http = Arc::new(UreqTransport::new(Some(&bundle)));
        }
        if let Some(state) = &state {
            caps.state = state.clone();
        }
        Ok((grants, caps, state))
    }
}

/// `--secret NAME/KEY=VALUE` or `NAME/KEY=@FILE` as the key and its value.
pub(crate) fn parse_secret(spec: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let (key, value) = spec
        .split_once('=')
        .with_context(|| format!("--secret {spec:?}: expected NAME/KEY=VALUE or NAME/KEY=@FILE"))?;
    if !key.contains('/') {
        bail!("--secret {spec:?}: the key must be NAME/KEY (the Secret's name, a slash, the key)");
    }
    let value = match value.strip_prefix('@') {
        Some(path) => std::fs::read(path).with_context(|| format!("--secret {key}: cannot read {path}"))?,
        None => value.as_bytes().to_vec(),
    };
    Ok((key.to_string(), value))
}

/// Runs a parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Plugin(PluginCommand::Inspect(args)) if !args.file.exists() => {
            let reference = args.file.to_string_lossy().into_owned();
            crate::oci::cli::PluginInspectArgs {
                reference,
                json: args.json,
                registry: args.registry,
            }
            .run()
            .await
        }
        Command::Plugin(PluginCommand::Inspect(args)) => inspect(args),
        Command::Plugin(PluginCommand::Call(args)) => call(args).await,
        Command::Plugin(PluginCommand::Componentize(args)) => componentize(args),
        Command::Plugin(PluginCommand::New(args)) => args.run(),
        Command::Plugin(PluginCommand::Test(args)) => args.run().await,
        Command::Plugin(PluginCommand::Bench(args)) => args.run().await,
        Command::Plugin(PluginCommand::Push(args)) => args.run().await,
        Command::Plugin(PluginCommand::Pull(args)) => args.run().await,
        Command::Plugin(PluginCommand::Verify(args)) => args.run().await,
        Command::Plugin(PluginCommand::Sign(args)) => args.run().await,
        Command::Key(command) => command.run().await,
        Command::Release(command) => command.run().await,
        Command::Oci(command) => command.run().await,
        Command::Crds => {
            print!("{}", crate::api::crds_yaml());
            Ok(0)
        }
        Command::Run(args) => run_controllers(*args).await,
        Command::Migrate(args) => args.run().await,
        Command::Sandbox(args) => crate::sandbox::run_sandbox(args).await,
        Command::InternalRender => Ok(crate::render::child::serve()),
    }
}

async fn run_controllers(args: RunArgs) -> anyhow::Result<i32> {
    let client = crate::run::client(args.process.kubeconfig.as_deref(), args.controllers.api_rate()).await?;
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = Arc::new(controller_context(
        client.clone(),
        args.controllers,
        &mut registry,
    )?);
    // The hooks are served by every replica, leader or standby: Cluster API calls whichever one the
    // Service picks, and a hook that does not answer blocks Cluster creation and upgrades.
    let health = crate::run::Health::default();
    let (hooks_stop, hooks_stopped) = tokio::sync::watch::channel(false);
    let hooks = match args.hooks_bind {
        Some(addr) => {
            let config = crate::hooks::HooksConfig {
                addr,
                cert_dir: args.hooks_cert_dir.clone(),
                ..crate::hooks::HooksConfig::default()
            };
            // Unusable certificates stop the process at once.
            let server = crate::hooks::start(client.clone(), config, hooks_stopped).await?;
            health.require_hooks(server.serving());
            Some(server)
        }
        None => None,
    };
    let ended = crate::run::serve(
        &args.process,
        client.clone(),
        registry,
        health,
        |shutdown, health| async move {
            let addons = crate::controller::addons::addon_config(&ctx);
            let addon_run = async {
                let run = crate::addon::run(client.clone(), addons, shutdown.clone());
                crate::run::with_grace(run, shutdown.clone(), std::time::Duration::from_secs(10))
                    .await
                    .unwrap_or(Ok(()))
            };
            let (controllers, addons) = tokio::join!(
                crate::controller::run(ctx.clone(), shutdown.clone(), move || health.set_ready(true)),
                addon_run,
            );
            controllers?;
            addons.map_err(|e| anyhow::anyhow!("ClusterAddon controller: {e}"))
        },
    )
    .await;
    let _ = hooks_stop.send(true);
    if let Some(server) = hooks {
        server.stopped().await;
    }
    let ended = ended?;
    Ok(match ended {
        crate::run::Ended::Stopped => 0,
        crate::run::Ended::LostLeadership => 1,
    })
}

/// The controllers' shared context: plugin host, renderer, caches and metrics.
pub fn controller_context(
    client: kube::Client,
    args: crate::controller::ControllerArgs,
    registry: &mut prometheus_client::registry::Registry,
) -> anyhow::Result<crate::controller::Context> {
    // Compiled code is kept across restarts (a Python plugin takes tens of seconds to compile, its
    // cached code loads in milliseconds), keyed by digest and the engine's compatibility hash.
    let host = plugin::PluginHost::new(plugin::EngineConfig {
        cache_dir: Some(args.cache_root().join("compiled")),
        ..plugin::EngineConfig::default()
    })?;
    // Each render runs in a child process: a looping template is stopped at --render-timeout, a
    // hoarding one at --render-max-memory-mib.
    let limits = args.render_limits();
    let renderer: Arc<dyn crate::render::Renderer> = Arc::new(match &args.render_program {
        Some(program) => crate::render::ProcessRenderer::new(program, limits),
        None => crate::render::ProcessRenderer::current_exe(limits)?,
    });
    let metrics = crate::controller::Metrics::new(registry);
    crate::controller::Context::new(
        client,
        args,
        crate::controller::PluginRegistry::new(host),
        renderer,
        metrics,
    )
}

fn read(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

fn inspect(args: InspectArgs) -> anyhow::Result<i32> {
    let bytes = read(&args.file)?;
    let inspection = match plugin::inspect(&bytes) {
        Ok(inspection) => inspection,
        Err(why) => {
            eprintln!("error: {}: {why}", args.file.display());
            return Ok(EXIT_PLUGIN_FAILURE);
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
        return Ok(0);
    }
    println!("digest:  {}", inspection.digest);
    println!("size:    {} bytes", inspection.size);
    println!(
        "package: {}",
        inspection
            .package
            .as_deref()
            .unwrap_or("(none: not a clusterstack:provider plugin)")
    );
    match (&inspection.world, &inspection.world_mismatch) {
        (Some(world), _) => println!("world:   {world}"),
        (None, Some(why)) => println!("world:   (does not fit the provider world: {why})"),
        (None, None) => println!("world:   (unknown)"),
    }
    println!("imports:");
    for import in &inspection.imports {
        println!("  {import}");
    }
    println!("exports:");
    for export in &inspection.exports {
        println!("  {export}");
    }
    Ok(0)
}

fn componentize(args: ComponentizeArgs) -> anyhow::Result<i32> {
    let core = read(&args.core)?;
    let component =
        plugin::componentize(&core).map_err(|why| anyhow::anyhow!("{}: {why}", args.core.display()))?;
    let tmp = args.output.with_extension("wasm.tmp");
    std::fs::write(&tmp, &component).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &args.output).with_context(|| format!("cannot write {}", args.output.display()))?;
    Ok(0)
}

async fn call(args: CallArgs) -> anyhow::Result<i32> {
    let bytes = read(&args.file)?;
    let (grants, capabilities, state) = args.grants.grants_and_caps(&args.config)?;
    let host = PluginHost::new(EngineConfig {
        cache_dir: args.cache_dir.clone(),
        max_instances: 4,
        ..EngineConfig::default()
    })?;
    let name = args
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let settings = PluginSettings {
        name,
        limits: args.limits.limits(),
        grants,
        capabilities,
        ..PluginSettings::default()
    };
    let plugin = match host.load(&bytes, settings) {
        Ok(plugin) => plugin,
        Err(error) => {
            eprintln!("error: {error}");
            return Ok(EXIT_PLUGIN_FAILURE);
        }
    };
    let expression = args.call.clone();
    let called = plugin.offload("call", move |p| p.call_wave(&expression)).await;
    if args.report_json {
        eprintln!("{}", serde_json::to_string(&called.report)?);
    } else {
        eprintln!("{}", called.report);
    }
    if let (Some(state), Some(path)) = (state, &args.grants.state_file) {
        let text = serde_json::to_string_pretty(&state.snapshot())?;
        std::fs::write(path, text).with_context(|| format!("cannot save --state {}", path.display()))?;
    }
    match called.result {
        Ok(outcome) => {
            println!("{}", outcome.text);
            Ok(if outcome.is_guest_error {
                EXIT_GUEST_ERROR
            } else {
                0
            })
        }
        Err(error) => {
            eprintln!("error: {error}");
            Ok(EXIT_PLUGIN_FAILURE)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    fn call_with(flags: &[&str]) -> Result<Cli, clap::Error> {
        let mut argv = vec!["stackhost", "plugin", "call", "p.wasm", "info()"];
        argv.extend_from_slice(flags);
        Cli::try_parse_from(argv)
    }

    #[test]
    fn limits_outside_their_range_are_refused_naming_the_flag() {
        for flags in [
            ["--memory-mib", "0"],
            ["--memory-mib", "18014398509481984"],
            ["--deadline-ms", "0"],
            ["--deadline-ms", "3600001"],
        ] {
            let err = call_with(&flags).expect_err("out of range");
            assert!(err.to_string().contains(flags[0]), "{flags:?}: {err}");
        }
        let Ok(Cli {
            command: Command::Plugin(PluginCommand::Call(args)),
            ..
        }) = call_with(&["--memory-mib", "4096", "--deadline-ms", "1"])
        else {
            panic!("the largest memory and the shortest deadline are valid");
        };
        assert_eq!(args.limits.limits().memory_bytes, 4096 << 20);
        assert_eq!(args.limits.limits().deadline_ms, 1);
    }
}
