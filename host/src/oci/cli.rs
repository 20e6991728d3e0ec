//! `stackhost plugin push|pull|verify|sign|inspect`, `key generate`, `release build|push|pull|tags`
//! and `oci export|import`: clap definitions and handlers. Each command has an
//! `async fn run(self) -> anyhow::Result<i32>` returning the process exit code; the top-level
//! CLI only dispatches.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};

use super::auth::{Credential, Credentials};
use super::cache::BlobCache;
use super::fetch::PluginFetcher;
use super::layout::{self, Layout};
use super::registry::{display, Mirror, Registry, RegistryConfig};
use super::release;
use super::signature::{self, PublicKey, SignaturePolicy, SigningKey, Verdict};
use super::source::Source;

/// Registry access options shared by all commands.
#[derive(Debug, Clone, Args)]
pub struct RegistryArgs {
    /// Allow plain HTTP to the registries named in this command's references.
    #[arg(long)]
    pub insecure: bool,
    /// A registry host that may be reached over plain HTTP (repeatable). Loopback always may.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "STACKHOST_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Mirror rule `PREFIX=ENDPOINT[,ENDPOINT...]`, tried before the origin with the digest enforced (repeatable).
    #[arg(long = "mirror", value_name = "RULE")]
    pub mirrors: Vec<String>,
    /// Docker config.json with registry credentials [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json].
    #[arg(long, value_name = "FILE")]
    pub docker_config: Option<PathBuf>,
    /// A Kubernetes Secret manifest (JSON or YAML) of type kubernetes.io/dockerconfigjson.
    #[arg(long, value_name = "FILE")]
    pub pull_secret: Option<PathBuf>,
    /// Username for the registry of the reference (with --password).
    #[arg(long, env = "STACKHOST_REGISTRY_USERNAME")]
    pub username: Option<String>,
    /// Password for the registry of the reference.
    #[arg(long, env = "STACKHOST_REGISTRY_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Bearer token for the registry of the reference.
    #[arg(long, env = "STACKHOST_REGISTRY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read artifacts from this OCI image layout directory instead of a registry (air gap).
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// Content-addressed cache directory [default: ~/.cache/stackhost/oci].
    #[arg(long, env = "STACKHOST_OCI_CACHE", value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Seconds to wait for a registry answer before retrying.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    /// Attempts per registry request (5xx, 429, timeouts and connection errors are retried).
    #[arg(long, default_value_t = 4)]
    pub attempts: u32,
    /// Largest manifest accepted, in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_manifest_bytes: u64,
    /// Largest config or signature payload accepted, in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_config_bytes: u64,
    /// Largest layer accepted, in bytes.
    #[arg(long, default_value_t = 512 << 20)]
    pub max_blob_bytes: u64,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl RegistryArgs {
    /// Build a registry client; `references` are the references this command touches (for
    /// `--insecure` and `--username`).
    pub fn registry(&self, references: &[&str]) -> anyhow::Result<Registry> {
        let hosts: Vec<String> = references
            .iter()
            .filter_map(|r| {
                let r = r.trim_start_matches("http://").trim_start_matches("https://");
                r.parse::<oci_client::Reference>()
                    .ok()
                    .map(|r| r.registry().to_string())
            })
            .collect();
        let mut insecure = self.insecure_registries.clone();
        if self.insecure {
            insecure.extend(hosts.iter().cloned());
        }
        let mut credentials = match &self.docker_config {
            Some(path) => Credentials::from_docker_config_file(path)?,
            None => Credentials::from_default_docker_config()?,
        };
        if let Some(path) = &self.pull_secret {
            let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            credentials.merge(Credentials::from_kubernetes_secret(
                &path.display().to_string(),
                &bytes,
            )?);
        }
        let explicit = match (&self.username, &self.password, &self.token) {
            (_, _, Some(token)) => Some(Credential::Bearer(token.clone())),
            (Some(u), Some(p), None) => Some(Credential::Basic {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(_), None, None) => bail!("--username needs --password (or STACKHOST_REGISTRY_PASSWORD)"),
            _ => None,
        };
        if let Some(c) = explicit {
            for h in &hosts {
                credentials.insert(h, c.clone());
            }
        }
        let mirrors = self
            .mirrors
            .iter()
            .map(|m| m.parse::<Mirror>())
            .collect::<Result<Vec<_>, _>>()?;
        let config = RegistryConfig {
            insecure,
            mirrors,
            credentials,
            retry: super::registry::RetryPolicy {
                attempts: self.attempts.max(1),
                ..Default::default()
            },
            request_timeout: Duration::from_secs(self.timeout.max(1)),
            read_timeout: Duration::from_secs(self.timeout.max(1)),
            max_manifest_bytes: self.max_manifest_bytes,
            max_config_bytes: self.max_config_bytes,
            max_blob_bytes: self.max_blob_bytes,
        };
        let registry = Registry::new(config);
        Ok(if self.no_progress || !std::io::stderr().is_terminal() {
            registry
        } else {
            registry.with_progress(indicatif::MultiProgress::new())
        })
    }

    /// The source to read from: the layout directory if given, else the registry.
    pub fn source(&self, references: &[&str]) -> anyhow::Result<Source> {
        Ok(match &self.layout {
            Some(dir) => Source::Layout(Arc::new(Layout::open(dir)?)),
            None => Source::Registry(Arc::new(self.registry(references)?)),
        })
    }

    /// The blob cache.
    pub fn cache(&self) -> anyhow::Result<Arc<BlobCache>> {
        let root = self.cache_dir.clone().unwrap_or_else(BlobCache::default_root);
        Ok(Arc::new(BlobCache::open(root)?))
    }
}

/// Trust options for pulling.
#[derive(Debug, Clone, Args)]
pub struct TrustArgs {
    /// Trusted cosign public key (cosign.pub); repeatable. Signatures are verified before use.
    #[arg(long = "key", value_name = "PUB")]
    pub keys: Vec<PathBuf>,
    /// Accept plugins that have no signature at all (a signature that fails is still refused).
    #[arg(long)]
    pub allow_unsigned: bool,
}

impl TrustArgs {
    fn policy(&self) -> anyhow::Result<SignaturePolicy> {
        let keys = self
            .keys
            .iter()
            .map(|k| PublicKey::from_file(k))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() && !self.allow_unsigned {
            bail!("no trusted key: pass --key cosign.pub (or --allow-unsigned to accept unsigned plugins explicitly)");
        }
        Ok(SignaturePolicy {
            keys,
            allow_unsigned: self.allow_unsigned,
        })
    }
}

/// `stackhost plugin ...` commands that talk to registries.
#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Push a component as a CNCF Wasm OCI artifact.
    Push(PluginPushArgs),
    /// Pull a plugin: resolve, check its world, verify its signature, download through the cache.
    Pull(PluginPullArgs),
    /// Verify a plugin's cosign signature with a public key.
    Verify(PluginVerifyArgs),
    /// Sign a plugin with a cosign private key (pushes `sha256-<digest>.sig`).
    Sign(PluginSignArgs),
    /// Describe a remote plugin from its manifest and config only (no component download).
    Inspect(PluginInspectArgs),
}

impl PluginCommand {
    /// Run the command.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self {
            PluginCommand::Push(a) => a.run().await,
            PluginCommand::Pull(a) => a.run().await,
            PluginCommand::Verify(a) => a.run().await,
            PluginCommand::Sign(a) => a.run().await,
            PluginCommand::Inspect(a) => a.run().await,
        }
    }
}

/// `plugin push FILE REF`.
#[derive(Debug, Args)]
pub struct PluginPushArgs {
    /// The component (.wasm).
    pub file: PathBuf,
    /// Target reference, e.g. registry.example/plugins/openstack:v1.
    pub reference: String,
    /// Manifest annotation KEY=VALUE (repeatable).
    #[arg(long = "annotation", short = 'a', value_name = "KEY=VALUE")]
    pub annotations: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

fn parse_annotations(items: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|a| {
            a.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("annotation `{a}` is not KEY=VALUE"))
        })
        .collect()
}

impl PluginPushArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let registry = self.registry.registry(&[&self.reference])?;
        let r = registry.parse(&self.reference)?;
        let bytes = std::fs::read(&self.file).with_context(|| format!("reading {}", self.file.display()))?;
        let digest = super::fetch::push_plugin(
            &registry,
            &self.file.display().to_string(),
            &bytes,
            &r,
            parse_annotations(&self.annotations)?,
        )
        .await?;
        println!("{}/{}@{digest}", r.registry(), r.repository());
        Ok(0)
    }
}

/// `plugin pull REF`.
#[derive(Debug, Args)]
pub struct PluginPullArgs {
    /// The plugin reference.
    pub reference: String,
    /// Also write the component to this file.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    #[command(flatten)]
    pub trust: TrustArgs,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl PluginPullArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let fetcher = PluginFetcher::new(
            self.registry.source(&[&self.reference])?,
            self.registry.cache()?,
            self.trust.policy()?,
        );
        let plugin = fetcher.pull(&self.reference).await?;
        if let Some(out) = &self.output {
            let tmp = out.with_extension("part");
            std::fs::write(&tmp, plugin.bytes.as_slice())
                .with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        }
        let signed = match &plugin.verdict {
            Verdict::Signed(v) => format!("signed ({})", v.key),
            Verdict::UnsignedAllowed => "UNSIGNED (allowed by --allow-unsigned)".into(),
        };
        println!("reference: {}", plugin.reference);
        println!("manifest:  {}", plugin.manifest_digest);
        println!(
            "component: {} ({} bytes, cache {:?})",
            plugin.component_digest,
            plugin.bytes.len(),
            plugin.cache
        );
        println!("signature: {signed}");
        Ok(0)
    }
}

/// `plugin verify REF --key PUB`.
#[derive(Debug, Args)]
pub struct PluginVerifyArgs {
    /// The plugin reference.
    pub reference: String,
    /// Trusted cosign public key (repeatable).
    #[arg(long = "key", value_name = "PUB", required = true)]
    pub keys: Vec<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl PluginVerifyArgs {
    /// Run: exit 0 when a trusted key signed the digest, 1 otherwise (with the reason).
    pub async fn run(self) -> anyhow::Result<i32> {
        let source = self.registry.source(&[&self.reference])?;
        let policy = TrustArgs {
            keys: self.keys,
            allow_unsigned: false,
        }
        .policy()?;
        let r = source.parse(&self.reference)?;
        let digest = source.fetch_manifest(&r).await?.digest;
        match signature::verify(&source, None, &r, &digest, &policy).await {
            Ok(Verdict::Signed(v)) => {
                println!(
                    "verified: {} {} signed by {} (as {})",
                    self.reference, v.digest, v.key, v.signed_reference
                );
                Ok(0)
            }
            Ok(Verdict::UnsignedAllowed) => Ok(1),
            Err(e @ (super::OciError::Unsigned { .. } | super::OciError::BadSignature { .. })) => {
                eprintln!("verification failed: {e}");
                Ok(1)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Read a key password: `--password-file`, else `COSIGN_PASSWORD` (as cosign does).
fn key_password(file: Option<&Path>) -> anyhow::Result<Vec<u8>> {
    if let Some(f) = file {
        let s = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        return Ok(s.trim_end_matches(['\n', '\r']).as_bytes().to_vec());
    }
    match std::env::var("COSIGN_PASSWORD") {
        Ok(p) => Ok(p.into_bytes()),
        Err(_) => bail!("no key password: set COSIGN_PASSWORD (may be empty) or pass --password-file"),
    }
}

/// `plugin sign REF --key KEY`.
#[derive(Debug, Args)]
pub struct PluginSignArgs {
    /// The plugin reference (resolved to its digest; the digest is what is signed).
    pub reference: String,
    /// Cosign private key (cosign.key).
    #[arg(long, value_name = "KEY")]
    pub key: PathBuf,
    /// File holding the key password [default: $COSIGN_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl PluginSignArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let key = SigningKey::from_file(&self.key, &key_password(self.password_file.as_deref())?)?;
        let registry = self.registry.registry(&[&self.reference])?;
        let r = registry.parse(&self.reference)?;
        let digest = registry.resolve(&r).await?;
        let sig = signature::sign(&registry, &r, &digest, &key).await?;
        println!("signed {digest}: {}", display(&sig));
        Ok(0)
    }
}

/// `plugin inspect REF` for a remote reference.
#[derive(Debug, Args)]
pub struct PluginInspectArgs {
    /// The plugin reference.
    pub reference: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl PluginInspectArgs {
    /// Run: exit 0, or 1 when the declared world is not supported.
    pub async fn run(self) -> anyhow::Result<i32> {
        let source = self.registry.source(&[&self.reference])?;
        let cache = self.registry.cache()?;
        let fetcher = PluginFetcher::new(source, cache, SignaturePolicy::default());
        let info = fetcher.inspect(&self.reference).await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&info)?);
        } else {
            println!("reference: {}", info.reference);
            println!("manifest:  {}", info.manifest_digest);
            println!(
                "component: {} ({} bytes, {} layout)",
                info.component_digest, info.component_size, info.layout
            );
            if let Some(world) = info.config.as_ref().and_then(|c| c.component.as_ref()) {
                println!("imports:");
                for i in &world.imports {
                    println!("  {i}");
                }
                println!("exports:");
                for e in &world.exports {
                    println!("  {e}");
                }
            }
            match &info.world_check {
                Ok(()) => println!("world:     supported"),
                Err(reason) => println!("world:     NOT SUPPORTED: {reason}"),
            }
        }
        Ok(if info.world_check.is_ok() { 0 } else { 1 })
    }
}

/// `stackhost key ...`.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a cosign key pair (ECDSA P-256): PREFIX.key (encrypted) and PREFIX.pub.
    Generate(KeyGenerateArgs),
}

impl KeyCommand {
    /// Run the command.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self {
            KeyCommand::Generate(a) => a.run().await,
        }
    }
}

/// `key generate`.
#[derive(Debug, Args)]
pub struct KeyGenerateArgs {
    /// Output path prefix.
    #[arg(long, default_value = "cosign")]
    pub output_prefix: PathBuf,
    /// File holding the password [default: $COSIGN_PASSWORD].
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}

impl KeyGenerateArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let password = key_password(self.password_file.as_deref())?;
        let key_path = self.output_prefix.with_extension("key");
        let pub_path = self.output_prefix.with_extension("pub");
        for p in [&key_path, &pub_path] {
            if p.exists() && !self.force {
                bail!("{} exists; pass --force to overwrite", p.display());
            }
        }
        let key = signature::generate_key(&password)?;
        write_private(&key_path, key.private_pem.as_bytes())?;
        std::fs::write(&pub_path, key.public_pem.as_bytes())
            .with_context(|| format!("writing {}", pub_path.display()))?;
        println!("private key: {}", key_path.display());
        println!("public key:  {}", pub_path.display());
        Ok(0)
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `stackhost release ...`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Build a release from cluster stack sources as `csctl create` does (metadata.yaml, hashes.json,
    /// the charts packaged with Helm, the addon archive), into OUT/<tag>/.
    Build(ReleaseBuildArgs),
    /// Push a release directory (metadata.yaml, chart tarballs, ...) as a csctl-compatible artifact.
    Push(ReleasePushArgs),
    /// Download a release artifact into a directory (atomically).
    Pull(ReleasePullArgs),
    /// List the release tags of a repository.
    Tags(ReleaseTagsArgs),
}

impl ReleaseCommand {
    /// Run the command.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self {
            ReleaseCommand::Build(a) => a.run(),
            ReleaseCommand::Push(a) => {
                let registry = a.registry.registry(&[&a.reference])?;
                let r = registry.parse(&a.reference)?;
                let digest = release::push(&registry, &a.dir, &r).await?;
                println!("{}@{digest}", display(&r));
                Ok(0)
            }
            ReleaseCommand::Pull(a) => {
                let source = a.registry.source(&[&a.reference])?;
                let r = source.parse(&a.reference)?;
                let pulled = release::pull(&source, &r, &a.dir).await?;
                println!("{} {} -> {}", a.reference, pulled.digest, pulled.dir.display());
                for f in &pulled.files.files {
                    println!("  {f}");
                }
                Ok(0)
            }
            ReleaseCommand::Tags(a) => {
                let source = a.registry.source(&[&a.repository])?;
                let with_tag = if a
                    .repository
                    .rsplit('/')
                    .next()
                    .is_some_and(|last| last.contains(':'))
                {
                    a.repository.clone()
                } else {
                    format!("{}:latest", a.repository)
                };
                let r = source.parse(&with_tag)?;
                for t in release::list_tags(&source, &r).await? {
                    println!("{t}");
                }
                Ok(0)
            }
        }
    }
}

/// `release push DIR REF`.
#[derive(Debug, Args)]
pub struct ReleasePushArgs {
    /// The release directory.
    pub dir: PathBuf,
    /// Target reference, e.g. registry.example/kaas/cluster-stacks:openstack-scs-1-30-v1.
    pub reference: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `release build STACK_DIR --out DIR`.
#[derive(Debug, Args)]
pub struct ReleaseBuildArgs {
    /// The cluster stack folder (csctl.yaml, cluster-class/, cluster-addon/, ...).
    pub stack: PathBuf,
    /// Where the release folder `<tag>/` goes (a folder of releases, as `--release-source dir:` reads).
    #[arg(long, short, default_value = ".release")]
    pub out: PathBuf,
    /// How the version is chosen: `hash` gives `v0-sha.<hash of the stack's content>`.
    #[arg(long, short, value_enum, default_value = "hash")]
    pub mode: crate::release::build::BuildMode,
}

impl ReleaseBuildArgs {
    fn run(self) -> anyhow::Result<i32> {
        let helm = crate::render::default_renderer().context("Helm is needed to package the charts")?;
        let built = crate::release::build::build(&self.stack, &self.out, self.mode, helm.as_ref())?;
        println!("{}", built.dir.display());
        for file in &built.files {
            println!("  {file}");
        }
        println!(
            "ClusterStack version {} (Kubernetes {}); Clusters use class {} with topology.version {}",
            built.version,
            built
                .kubernetes
                .rsplit_once('.')
                .map_or(built.kubernetes.as_str(), |(minor, _)| minor)
                .trim_start_matches('v'),
            built.class,
            built.kubernetes
        );
        Ok(0)
    }
}

/// `release pull REF DIR`.
#[derive(Debug, Args)]
pub struct ReleasePullArgs {
    /// The release reference.
    pub reference: String,
    /// Destination directory (replaced atomically).
    pub dir: PathBuf,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `release tags REPO`.
#[derive(Debug, Args)]
pub struct ReleaseTagsArgs {
    /// The repository, e.g. registry.example/kaas/cluster-stacks.
    pub repository: String,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

/// `stackhost oci ...`.
#[derive(Debug, Subcommand)]
pub enum OciCommand {
    /// Copy artifacts (with their signatures) into an OCI image layout directory or .tar.
    Export(ExportArgs),
    /// Push every artifact of an OCI image layout directory or .tar into a registry.
    Import(ImportArgs),
}

impl OciCommand {
    /// Run the command.
    pub async fn run(self) -> anyhow::Result<i32> {
        match self {
            OciCommand::Export(a) => a.run().await,
            OciCommand::Import(a) => a.run().await,
        }
    }
}

/// `oci export REF... DEST`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// References to export, then the destination: a directory, or a file ending in .tar.
    #[arg(required = true, num_args = 2..)]
    pub items: Vec<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl ExportArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let Some((dest, refs)) = self.items.split_last() else {
            bail!("usage: stackhost oci export REF... DIR|FILE.tar");
        };
        let ref_strs: Vec<&str> = refs.iter().map(String::as_str).collect();
        let registry = self.registry.registry(&ref_strs)?;
        let dest = PathBuf::from(dest);
        let as_tar = dest.extension().is_some_and(|e| e == "tar");
        let staging = if as_tar {
            let parent = dest
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            tempfile::Builder::new()
                .prefix(".stackhost-export")
                .tempdir_in(parent)
                .with_context(|| format!("creating a staging directory in {}", parent.display()))?
                .keep()
        } else {
            dest.clone()
        };
        let mut layout = Layout::create(&staging)?;
        for r in refs {
            let reference = registry.parse(r)?;
            let digest = layout::export_one(&registry, &mut layout, &reference).await?;
            println!("{r} {digest}");
        }
        if as_tar {
            layout::write_tar(&staging, &dest)?;
            std::fs::remove_dir_all(&staging).ok();
        }
        println!("wrote {}", dest.display());
        Ok(0)
    }
}

/// `oci import SRC`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// An OCI image layout directory or .tar written by `oci export`.
    pub source: PathBuf,
    /// Push under this registry[/prefix] instead of the original registry of each artifact.
    #[arg(long, value_name = "REGISTRY[/PREFIX]")]
    pub to: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

impl ImportArgs {
    /// Run.
    pub async fn run(self) -> anyhow::Result<i32> {
        let (dir, _guard) = if self.source.is_file() {
            let tmp = tempfile::tempdir().context("creating a temporary directory")?;
            layout::unpack_tar(&self.source, tmp.path())?;
            (tmp.path().to_path_buf(), Some(tmp))
        } else {
            (self.source.clone(), None)
        };
        let layout = Layout::open(&dir)?;
        let targets: Vec<String> = match &self.to {
            Some(to) => vec![format!("{to}/x:y")],
            None => layout
                .entries()
                .iter()
                .filter_map(|e| e.annotations.get(super::manifest::ANNOTATION_IMAGE_NAME).cloned())
                .collect(),
        };
        let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
        let registry = self.registry.registry(&target_refs)?;
        for pushed in layout::import(&registry, &layout, self.to.as_deref()).await? {
            println!("{pushed}");
        }
        Ok(0)
    }
}
