//! OCI artifacts against the real `docker-registry` (started per test on 127.0.0.1), with a
//! fault-injecting loopback proxy where the real registry cannot produce a condition.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use stackhost::oci::auth::{Credential, Credentials};
use stackhost::oci::cache::{BlobCache, CacheOutcome};
use stackhost::oci::fetch::{push_plugin, PluginFetcher};
use stackhost::oci::layout::{self, Layout};
use stackhost::oci::manifest::{Descriptor, Manifest, OCI_MANIFEST};
use stackhost::oci::registry::{Registry, RegistryConfig, RetryPolicy};
use stackhost::oci::signature::{self, PublicKey, SignaturePolicy, SigningKey, Verdict};
use stackhost::oci::source::Source;
use stackhost::oci::{artifact, release, OciError};
use support::proxy::{Mode, Proxy};
use support::{component, TestRegistry, PROVIDER_IMPORTS};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn fast_config() -> RegistryConfig {
    RegistryConfig {
        retry: RetryPolicy {
            attempts: 3,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(100),
        },
        request_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(2),
        ..RegistryConfig::default()
    }
}

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(fast_config()))
}

struct Keys {
    signer: SigningKey,
    public_pem: String,
}

fn keys() -> Keys {
    let k = signature::generate_key(b"test").expect("generate key");
    Keys {
        signer: SigningKey::from_pem(Path::new("cosign.key"), k.private_pem.as_bytes(), b"test")
            .expect("load key"),
        public_pem: k.public_pem,
    }
}

fn policy(keys: &Keys) -> SignaturePolicy {
    SignaturePolicy {
        keys: vec![PublicKey::from_pem("cosign.pub", keys.public_pem.as_bytes()).expect("pub")],
        allow_unsigned: false,
    }
}

fn fetcher(registry: &Arc<Registry>, cache: &Path, policy: SignaturePolicy) -> PluginFetcher {
    PluginFetcher::new(
        Source::Registry(registry.clone()),
        Arc::new(BlobCache::open(cache).expect("cache")),
        policy,
    )
}

/// Push a provider component to `reference`; returns (manifest digest, component bytes).
async fn push(registry: &Registry, reference: &str, pad: usize) -> (String, Vec<u8>) {
    let bytes = component(PROVIDER_IMPORTS, pad);
    let r = registry.parse(reference).expect("reference");
    let digest = push_plugin(registry, "test.wasm", &bytes, &r, BTreeMap::new())
        .await
        .expect("push");
    (digest, bytes)
}

async fn sign(registry: &Registry, reference: &str, digest: &str, keys: &Keys) {
    let r = registry.parse(reference).expect("reference");
    signature::sign(registry, &r, digest, &keys.signer)
        .await
        .expect("sign");
}

fn layer_digest(bytes: &[u8]) -> String {
    stackhost::oci::digest::sha256(bytes)
}

#[tokio::test]
async fn push_sign_pull_verify_then_warm_cache() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let keys = keys();
    let reference = format!("{}/plugins/noop:v1", reg.addr);
    let (digest, bytes) = push(&registry, &reference, 1000).await;
    sign(&registry, &reference, &digest, &keys).await;

    let cache = tempfile::tempdir()?;
    let f = fetcher(&registry, cache.path(), policy(&keys));
    let pulled = f.pull(&reference).await?;
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(pulled.component_digest, layer_digest(&bytes));
    assert_eq!(pulled.bytes.as_slice(), bytes.as_slice());
    assert_eq!(pulled.cache, CacheOutcome::Fetched);
    assert!(matches!(&pulled.verdict, Verdict::Signed(v) if v.digest == digest && v.key == "cosign.pub"));
    let world = pulled
        .config
        .as_ref()
        .and_then(|c| c.component.clone())
        .ok_or("no world")?;
    assert_eq!(world.imports, PROVIDER_IMPORTS);
    assert_eq!(world.exports, [artifact::PROVIDER_EXPORT_NAME]);

    let again = f.pull(&reference).await?;
    assert_eq!(again.cache, CacheOutcome::Hit);

    // Pinned by digest works too, and inspect reads the config only.
    let pinned = format!("{}/plugins/noop@{digest}", reg.addr);
    assert_eq!(f.pull(&pinned).await?.manifest_digest, digest);
    let info = f.inspect(&reference).await?;
    assert_eq!(info.component_digest, layer_digest(&bytes));
    assert_eq!(info.world_check, Ok(()));
    Ok(())
}

#[tokio::test]
async fn unsigned_and_wrongly_signed_plugins_are_refused_with_reference_digest_and_reason() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let registry = registry();
    let keys = keys();
    let other = keys_other();
    let reference = format!("{}/plugins/unsigned:v1", reg.addr);
    let (digest, bytes) = push(&registry, &reference, 10).await;
    let via_proxy = format!("{}/plugins/unsigned:v1", proxy.addr);

    let cache = tempfile::tempdir()?;
    let err = fetcher(&registry, cache.path(), policy(&keys))
        .pull(&via_proxy)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unsigned { .. }), "{msg}");
    assert!(
        msg.contains(&via_proxy) && msg.contains(&digest) && msg.contains(&signature::signature_tag(&digest)),
        "{msg}"
    );
    // Refused before the component was downloaded.
    assert_eq!(
        proxy.count(&format!(
            "GET /v2/plugins/unsigned/blobs/{}",
            layer_digest(&bytes)
        )),
        0
    );

    // Explicitly allowed: accepted, and says so.
    let allowing = SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    let pulled = fetcher(&registry, cache.path(), allowing)
        .pull(&reference)
        .await?;
    assert_eq!(pulled.verdict, Verdict::UnsignedAllowed);

    // Signed by someone else: refused even when unsigned would be allowed.
    sign(&registry, &reference, &digest, &other).await;
    let lenient = SignaturePolicy {
        allow_unsigned: true,
        ..policy(&keys)
    };
    let err = fetcher(&registry, cache.path(), lenient)
        .pull(&reference)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::BadSignature { .. }), "{msg}");
    assert!(
        msg.contains("does not verify with the trusted key(s) cosign.pub") && msg.contains(&digest),
        "{msg}"
    );

    // A valid signature of a *different* digest copied under this digest's tag is refused.
    let other_ref = format!("{}/plugins/unsigned:v2", reg.addr);
    let (digest2, _) = push(&registry, &other_ref, 20).await;
    sign(&registry, &other_ref, &digest2, &keys).await;
    let sig2 = registry
        .fetch_manifest(&registry.parse(&format!(
            "{}/plugins/unsigned:{}",
            reg.addr,
            signature::signature_tag(&digest2)
        ))?)
        .await?;
    let target = registry.parse(&format!(
        "{}/plugins/unsigned:{}",
        reg.addr,
        signature::signature_tag(&digest)
    ))?;
    registry.push_manifest(&target, &sig2.bytes, OCI_MANIFEST).await?;
    let err = fetcher(&registry, cache.path(), policy(&keys))
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(
        err.to_string()
            .contains(&format!("is for {digest2}, not for this digest")),
        "{err}"
    );
    Ok(())
}

fn keys_other() -> Keys {
    keys()
}

#[tokio::test]
async fn wrong_media_types_are_refused_naming_what_was_expected() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let r = registry.parse(&format!("{}/plugins/image:v1", reg.addr))?;
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"not a tarball";
    registry.push_blob(&r, config, "config").await?;
    registry.push_blob(&r, layer, "layer").await?;
    let m = Manifest::new(
        Descriptor::for_bytes("application/vnd.oci.image.config.v1+json", config),
        vec![Descriptor::for_bytes(
            "application/vnd.oci.image.layer.v1.tar",
            layer,
        )],
    );
    registry.push_manifest(&r, &m.to_bytes(), OCI_MANIFEST).await?;
    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    let err = f
        .pull(&format!("{}/plugins/image:v1", reg.addr))
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::WrongMediaType { .. }), "{msg}");
    assert!(msg.contains("config has media type `application/vnd.oci.image.config.v1+json`, expected `application/vnd.wasm.config.v0+json`"), "{msg}");

    // A wasm config with a non-wasm layer.
    let r2 = registry.parse(&format!("{}/plugins/badlayer:v1", reg.addr))?;
    let wasm_config =
        br#"{"created":"2026-01-01T00:00:00Z","architecture":"wasm","os":"wasip2","layerDigests":[]}"#;
    registry.push_blob(&r2, wasm_config, "config").await?;
    registry.push_blob(&r2, layer, "layer").await?;
    let m = Manifest::new(
        Descriptor::for_bytes(artifact::WASM_CONFIG_V0, wasm_config),
        vec![Descriptor::for_bytes(
            "application/vnd.oci.image.layer.v1.tar+gzip",
            layer,
        )],
    );
    registry.push_manifest(&r2, &m.to_bytes(), OCI_MANIFEST).await?;
    let err = f
        .pull(&format!("{}/plugins/badlayer:v1", reg.addr))
        .await
        .expect_err("should fail");
    assert!(
        err.to_string().contains(
            "layer has media type `application/vnd.oci.image.layer.v1.tar+gzip`, expected `application/wasm`"
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn the_older_wasm_layout_is_read_and_its_world_checked_from_the_bytes() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let cache = tempfile::tempdir()?;
    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    for (name, imports) in [
        ("good", PROVIDER_IMPORTS),
        ("evil", &["acme:evil/backdoor@1.0.0"][..]),
    ] {
        let bytes = component(imports, 10);
        let r = registry.parse(&format!("{}/plugins/legacy-{name}:v1", reg.addr))?;
        registry.push_blob(&r, b"{}", "config").await?;
        registry.push_blob(&r, &bytes, "layer").await?;
        let m = Manifest::new(
            Descriptor::for_bytes(artifact::LEGACY_WASM_CONFIG, b"{}"),
            vec![Descriptor::for_bytes(artifact::LEGACY_WASM_LAYER, &bytes)],
        );
        registry.push_manifest(&r, &m.to_bytes(), OCI_MANIFEST).await?;
    }
    let f = fetcher(&registry, cache.path(), allow());
    let pulled = f.pull(&format!("{}/plugins/legacy-good:v1", reg.addr)).await?;
    assert!(pulled.config.is_none());
    let err = f
        .pull(&format!("{}/plugins/legacy-evil:v1", reg.addr))
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::UnsupportedWorld { .. }), "{err}");
    assert!(
        err.to_string().contains("import `acme:evil/backdoor@1.0.0`"),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn an_unsupported_world_is_refused_at_push_and_before_download_at_pull() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let registry = registry();
    let evil = component(
        &[
            "clusterstack:provider/log@0.1.0",
            "wasi:sockets/tcp@0.2.0",
            "acme:evil/backdoor@1.0.0",
        ],
        10,
    );
    let r = registry.parse(&format!("{}/plugins/evil:v1", reg.addr))?;
    let err = push_plugin(&registry, "evil.wasm", &evil, &r, BTreeMap::new())
        .await
        .expect_err("should fail");
    assert!(
        err.to_string()
            .contains("`evil.wasm`: unsupported world: import `acme:evil/backdoor@1.0.0`"),
        "{err}"
    );

    // Someone pushed it anyway (config written by another tool): refused from the config alone.
    let world = artifact::component_world(&evil)?;
    let config = serde_json::to_vec(&serde_json::json!({
        "created": "2026-01-01T00:00:00Z", "architecture": "wasm", "os": "wasip2",
        "layerDigests": [layer_digest(&evil)], "component": world
    }))?;
    registry.push_blob(&r, &config, "config").await?;
    registry.push_blob(&r, &evil, "layer").await?;
    let m = Manifest::new(
        Descriptor::for_bytes(artifact::WASM_CONFIG_V0, &config),
        vec![Descriptor::for_bytes(artifact::WASM_LAYER, &evil)],
    );
    registry.push_manifest(&r, &m.to_bytes(), OCI_MANIFEST).await?;
    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    let err = f
        .pull(&format!("{}/plugins/evil:v1", proxy.addr))
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::UnsupportedWorld { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("import `acme:evil/backdoor@1.0.0` is from package `acme:evil`"),
        "{err}"
    );
    assert_eq!(
        proxy.count(&format!("/blobs/{}", layer_digest(&evil))),
        0,
        "{:?}",
        proxy.requests()
    );

    // A different major version of the contract is named as such.
    let v1 = component(&["clusterstack:provider/log@1.0.0"], 10);
    let err = push_plugin(&registry, "v1.wasm", &v1, &r, BTreeMap::new())
        .await
        .expect_err("should fail");
    assert!(err.to_string().contains("`clusterstack:provider/log@1.0.0` is from clusterstack:provider@1.0.0, a different major version"), "{err}");
    Ok(())
}

#[tokio::test]
async fn a_tampered_blob_is_a_digest_mismatch_and_never_cached() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let reference = format!("{}/plugins/tampered:v1", reg.addr);
    let (_, bytes) = push(&registry, &reference, 5000).await;
    let file = reg.blob_file(&layer_digest(&bytes));
    let mut stored = std::fs::read(&file)?;
    let last = stored.len() - 1;
    stored[last] ^= 0xff; // same length, different content: corruption at rest
    std::fs::write(&file, &stored)?;

    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    let err = f.pull(&reference).await.expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{msg}");
    assert!(
        msg.contains(&format!(
            "component digest mismatch: expected {}",
            layer_digest(&bytes)
        )),
        "{msg}"
    );
    let cached = BlobCache::open(cache.path())?.read(&layer_digest(&bytes)).await?;
    assert!(cached.is_none(), "nothing from a failed download is cached");
    Ok(())
}

#[tokio::test]
async fn a_truncated_blob_is_reported_with_both_sizes() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let reference = format!("{}/plugins/truncated:v1", reg.addr);
    let (_, bytes) = push(&registry, &reference, 5000).await;
    let file = reg.blob_file(&layer_digest(&bytes));
    let stored = std::fs::read(&file)?;
    std::fs::write(&file, &stored[..stored.len() / 2])?;

    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    let err = f.pull(&reference).await.expect_err("should fail");
    let msg = err.to_string();
    assert!(
        matches!(err, OciError::SizeMismatch { expected, received, .. } if expected == bytes.len() as u64 && received == (bytes.len() / 2) as u64),
        "{msg}"
    );
    assert!(msg.contains("truncated"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn manifests_and_layers_over_the_caps_are_refused() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let open = registry();
    let reference = format!("{}/plugins/big:v1", reg.addr);
    let (_, bytes) = push(&open, &reference, 200_000).await;
    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    let cache = tempfile::tempdir()?;

    let small_blobs = Arc::new(Registry::new(RegistryConfig {
        max_blob_bytes: 100_000,
        ..fast_config()
    }));
    let err = fetcher(&small_blobs, cache.path(), allow())
        .pull(&format!("{}/plugins/big:v1", proxy.addr))
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::TooLarge { cap: 100_000, .. }), "{msg}");
    assert!(
        msg.contains("over the cap of 100000 bytes") && msg.contains("--max-blob-bytes"),
        "{msg}"
    );
    assert_eq!(
        proxy.count(&format!("/blobs/{}", layer_digest(&bytes))),
        0,
        "refused before download"
    );

    let small_manifests = Arc::new(Registry::new(RegistryConfig {
        max_manifest_bytes: 100,
        ..fast_config()
    }));
    let err = fetcher(&small_manifests, cache.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::TooLarge { cap: 100, .. }), "{err}");
    assert!(err.to_string().contains("manifest is"), "{err}");
    Ok(())
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_then_reported() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let registry = registry();
    push(&registry, &format!("{}/plugins/flaky:v1", reg.addr), 10).await;
    let reference = format!("{}/plugins/flaky:v1", proxy.addr);
    let cache = tempfile::tempdir()?;
    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };

    // Two 503s, then the registry recovers: the pull succeeds.
    proxy
        .state
        .fail_next
        .store(2, std::sync::atomic::Ordering::SeqCst);
    fetcher(&registry, cache.path(), allow()).pull(&reference).await?;
    assert_eq!(
        proxy.state.fail_next.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "both failures were consumed by retries"
    );

    // 429 Too Many Requests is retried as well.
    proxy.set_mode(Mode::Status(429, "TOOMANYREQUESTS"));
    let cache3 = tempfile::tempdir()?;
    let err = fetcher(&registry, cache3.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::Unavailable { attempts: 3, .. }), "{err}");
    assert!(err.to_string().contains("HTTP 429"), "{err}");
    proxy.set_mode(Mode::Forward);

    // Persistently failing: a clear error after the configured attempts.
    proxy
        .state
        .fail_next
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let cache2 = tempfile::tempdir()?;
    let err = fetcher(&registry, cache2.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unavailable { attempts: 3, .. }), "{msg}");
    assert!(
        msg.contains(&format!("registry `{}` unavailable after 3 attempts", proxy.addr))
            && msg.contains("HTTP 503"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn timeouts_are_retried_then_reported() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let registry = Arc::new(Registry::new(RegistryConfig {
        // Long enough for a loaded CI machine to answer, short enough to keep the test quick.
        request_timeout: Duration::from_secs(1),
        read_timeout: Duration::from_secs(1),
        ..fast_config()
    }));
    push(&registry, &format!("{}/plugins/slow:v1", reg.addr), 10).await;
    let reference = format!("{}/plugins/slow:v1", proxy.addr);
    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };

    proxy
        .state
        .hang_next
        .store(1, std::sync::atomic::Ordering::SeqCst);
    let cache = tempfile::tempdir()?;
    fetcher(&registry, cache.path(), allow()).pull(&reference).await?;

    proxy
        .state
        .hang_next
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let cache2 = tempfile::tempdir()?;
    let err = fetcher(&registry, cache2.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unavailable { .. }), "{msg}");
    assert!(msg.contains("no answer within 1s"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn basic_auth_against_the_real_registry_from_flags_docker_config_and_pull_secret() -> TestResult {
    let reg = TestRegistry::start_with_basic_auth("alice", "s3cret").await;
    let host = reg.addr.clone();
    let reference = format!("{host}/plugins/private:v1");
    let with = |c: Credentials| {
        Arc::new(Registry::new(RegistryConfig {
            credentials: c,
            ..fast_config()
        }))
    };
    let mut good = Credentials::anonymous();
    good.insert(
        &host,
        Credential::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        },
    );
    push(&with(good.clone()), &reference, 10).await;

    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    let cache = tempfile::tempdir()?;
    // Anonymous: 401, with what to do.
    let err = fetcher(&with(Credentials::anonymous()), cache.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Unauthorized { .. }), "{msg}");
    assert!(
        msg.contains("401 Unauthorized") && msg.contains("provide credentials"),
        "{msg}"
    );
    // Wrong password: 401 as well.
    let mut bad = Credentials::anonymous();
    bad.insert(
        &host,
        Credential::Basic {
            username: "alice".into(),
            password: "nope".into(),
        },
    );
    let err = fetcher(&with(bad), cache.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");

    // From a Docker config.json and from a Kubernetes dockerconfigjson Secret.
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
    let config = format!(r#"{{"auths":{{"http://{host}":{{"auth":"{auth}"}}}}}}"#);
    let creds = Credentials::from_docker_config_json("config.json", config.as_bytes())?;
    fetcher(&with(creds), cache.path(), allow())
        .pull(&reference)
        .await?;
    let secret = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": "pull", "namespace": "cso-system"},
        "data": {".dockerconfigjson": base64::engine::general_purpose::STANDARD.encode(&config)}
    });
    let creds = Credentials::from_kubernetes_secret("secret cso-system/pull", secret.to_string().as_bytes())?;
    let cache2 = tempfile::tempdir()?;
    let pulled = fetcher(&with(creds), cache2.path(), allow())
        .pull(&reference)
        .await?;
    assert_eq!(pulled.cache, CacheOutcome::Fetched);
    Ok(())
}

#[tokio::test]
async fn bearer_token_challenges_are_answered_and_403_is_reported() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    push(&registry(), &format!("{}/plugins/tokened:v1", reg.addr), 10).await;
    proxy.set_mode(Mode::Bearer {
        user: "bob".into(),
        password: "pw".into(),
        token: "t0ken".into(),
    });
    let reference = format!("{}/plugins/tokened:v1", proxy.addr);
    let allow = || SignaturePolicy {
        keys: vec![],
        allow_unsigned: true,
    };
    let with = |user: &str, pw: &str| {
        let mut c = Credentials::anonymous();
        c.insert(
            &proxy.addr,
            Credential::Basic {
                username: user.into(),
                password: pw.into(),
            },
        );
        Arc::new(Registry::new(RegistryConfig {
            credentials: c,
            ..fast_config()
        }))
    };
    let cache = tempfile::tempdir()?;
    fetcher(&with("bob", "pw"), cache.path(), allow())
        .pull(&reference)
        .await?;
    assert!(
        proxy.count("GET /token") >= 1,
        "a token was fetched from the realm: {:?}",
        proxy.requests()
    );

    let cache2 = tempfile::tempdir()?;
    let err = fetcher(&with("bob", "wrong"), cache2.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::Unauthorized { .. }), "{err}");

    proxy.set_mode(Mode::Status(403, "DENIED"));
    let err = fetcher(&with("bob", "pw"), cache2.path(), allow())
        .pull(&reference)
        .await
        .expect_err("should fail");
    let msg = err.to_string();
    assert!(matches!(err, OciError::Forbidden { .. }), "{msg}");
    assert!(
        msg.contains("403 Forbidden") && msg.contains("lack pull access"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_tags_and_repositories_are_not_found() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    push(&registry, &format!("{}/plugins/present:v1", reg.addr), 10).await;
    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    for missing in [
        format!("{}/plugins/present:v9", reg.addr),
        format!("{}/plugins/absent:v1", reg.addr),
    ] {
        let err = f.pull(&missing).await.expect_err("should fail");
        assert!(matches!(err, OciError::NotFound { .. }), "{err}");
        assert!(
            err.to_string().contains(&format!("`{missing}` not found")),
            "{err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn concurrent_pulls_of_one_digest_share_one_download_and_corrupt_cache_is_refetched() -> TestResult {
    let reg = TestRegistry::start().await;
    let proxy = Proxy::start(&reg.addr).await;
    let registry = registry();
    let (_, bytes) = push(&registry, &format!("{}/plugins/popular:v1", reg.addr), 300_000).await;
    let reference = format!("{}/plugins/popular:v1", proxy.addr);
    let cache = tempfile::tempdir()?;
    let f = fetcher(
        &registry,
        cache.path(),
        SignaturePolicy {
            keys: vec![],
            allow_unsigned: true,
        },
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (f, reference) = (f.clone(), reference.clone());
        tasks.push(tokio::spawn(async move { f.pull(&reference).await }));
    }
    for t in tasks {
        assert_eq!(t.await??.bytes.len(), bytes.len());
    }
    let blob_path = format!("GET /v2/plugins/popular/blobs/{}", layer_digest(&bytes));
    assert_eq!(proxy.count(&blob_path), 1, "{:?}", proxy.requests());

    // Corrupt the cached file: detected on read and fetched again.
    let cached = BlobCache::open(cache.path())?.path_of(&layer_digest(&bytes))?;
    std::fs::write(&cached, b"garbage")?;
    let again = f.pull(&reference).await?;
    assert_eq!(again.cache, CacheOutcome::Refetched);
    assert_eq!(again.bytes.as_slice(), bytes.as_slice());
    assert_eq!(proxy.count(&blob_path), 2);
    Ok(())
}

#[tokio::test]
async fn mirrors_are_tried_first_and_their_content_must_match_the_digest() -> TestResult {
    let origin = TestRegistry::start().await;
    let mirror = TestRegistry::start().await;
    let plain = registry();
    let keys = keys();
    let origin_ref = format!("{}/plugins/mirrored:v1", origin.addr);
    let (digest, bytes) = push(&plain, &origin_ref, 5000).await;
    sign(&plain, &origin_ref, &digest, &keys).await;
    // The mirror holds an exact copy (manifest, blobs, signature) under a prefix.
    let staging = tempfile::tempdir()?;
    let mut l = Layout::create(staging.path())?;
    layout::export_one(&plain, &mut l, &plain.parse(&origin_ref)?).await?;
    layout::import(&plain, &l, Some(&format!("{}/cache", mirror.addr))).await?;

    let origin_proxy = Proxy::start(&origin.addr).await;
    let mirror_proxy = Proxy::start(&mirror.addr).await;
    let rule = format!(
        "{}/plugins={}/cache/plugins",
        origin_proxy.addr, mirror_proxy.addr
    );
    let mirrored = Arc::new(Registry::new(RegistryConfig {
        mirrors: vec![rule.parse()?],
        ..fast_config()
    }));
    let reference = format!("{}/plugins/mirrored:v1", origin_proxy.addr);

    let cache = tempfile::tempdir()?;
    let pulled = fetcher(&mirrored, cache.path(), policy(&keys))
        .pull(&reference)
        .await?;
    assert_eq!(pulled.manifest_digest, digest);
    assert_eq!(
        origin_proxy.count("/blobs/"),
        0,
        "served by the mirror: {:?}",
        origin_proxy.requests()
    );

    // The mirror's copy rots: the digest is enforced and the origin serves it instead.
    let file = mirror.blob_file(&layer_digest(&bytes));
    let mut stored = std::fs::read(&file)?;
    stored[100] ^= 1;
    std::fs::write(&file, &stored)?;
    let cache2 = tempfile::tempdir()?;
    let pulled = fetcher(&mirrored, cache2.path(), policy(&keys))
        .pull(&reference)
        .await?;
    assert_eq!(pulled.bytes.as_slice(), bytes.as_slice());
    assert_eq!(origin_proxy.count(&format!("/blobs/{}", layer_digest(&bytes))), 1);

    // With the origin down, the mirror's bad content is the reported reason.
    origin_proxy
        .state
        .fail_next
        .store(1000, std::sync::atomic::Ordering::SeqCst);
    let cache3 = tempfile::tempdir()?;
    let err = fetcher(&mirrored, cache3.path(), policy(&keys))
        .pull(&reference)
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");
    assert!(
        err.to_string().contains(&mirror_proxy.addr),
        "names the mirror: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn air_gap_export_to_tar_import_elsewhere_and_read_a_layout_without_registry() -> TestResult {
    let reg = TestRegistry::start().await;
    let target = TestRegistry::start().await;
    let registry = registry();
    let keys = keys();
    let reference = format!("{}/plugins/airgap:v1", reg.addr);
    let (digest, bytes) = push(&registry, &reference, 2000).await;
    sign(&registry, &reference, &digest, &keys).await;
    let release_dir = tempfile::tempdir()?;
    write_release(release_dir.path());
    let release_ref = format!("{}/kaas/cluster-stacks:docker-ferrol-1-27-v1", reg.addr);
    release::push(&registry, release_dir.path(), &registry.parse(&release_ref)?).await?;

    let out = tempfile::tempdir()?;
    let tarball = out.path().join("bundle.tar");
    let staging = out.path().join("staging");
    let mut l = Layout::create(&staging)?;
    layout::export_one(&registry, &mut l, &registry.parse(&reference)?).await?;
    layout::export_one(&registry, &mut l, &registry.parse(&release_ref)?).await?;
    layout::write_tar(&staging, &tarball)?;
    drop(reg); // the source registry is gone from here on

    // Controller reads straight from the layout directory: no registry at all.
    let unpacked = out.path().join("unpacked");
    layout::unpack_tar(&tarball, &unpacked)?;
    let source = Source::Layout(Arc::new(Layout::open(&unpacked)?));
    let cache = tempfile::tempdir()?;
    let f = PluginFetcher::new(
        source.clone(),
        Arc::new(BlobCache::open(cache.path())?),
        policy(&keys),
    );
    let pulled = f.pull(&reference).await?;
    assert_eq!(pulled.bytes.as_slice(), bytes.as_slice());
    assert!(matches!(pulled.verdict, Verdict::Signed(_)));
    let dest = out.path().join("release");
    let got = release::pull(&source, &source.parse(&release_ref)?, &dest).await?;
    assert_eq!(got.files.kubernetes_version, "v1.27.3");
    assert_eq!(
        std::fs::read(dest.join("metadata.yaml"))?,
        std::fs::read(release_dir.path().join("metadata.yaml"))?
    );

    // Import into another registry under a new prefix; the signature comes along.
    let to = format!("{}/mirror", target.addr);
    let pushed = layout::import(&registry, &Layout::open(&unpacked)?, Some(&to)).await?;
    assert!(pushed.contains(&format!("{to}/plugins/airgap:v1")), "{pushed:?}");
    let cache2 = tempfile::tempdir()?;
    let pulled = fetcher(&registry, cache2.path(), policy(&keys))
        .pull(&format!("{to}/plugins/airgap:v1"))
        .await?;
    assert_eq!(pulled.manifest_digest, digest);
    assert!(matches!(pulled.verdict, Verdict::Signed(_)));
    Ok(())
}

fn write_release(dir: &Path) {
    support::write(
        dir,
        "metadata.yaml",
        b"apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: v1\n  kubernetes: v1.27.3\n  components:\n    clusterAddon: v1\n    nodeImage: v1\n",
    );
    support::write(
        dir,
        "docker-ferrol-1-27-cluster-class-v1.tgz",
        &[0x1f, 0x8b, 8, 0, 1, 2, 3],
    );
    support::write(
        dir,
        "docker-ferrol-1-27-cluster-addon-v1.tgz",
        &[0x1f, 0x8b, 8, 0, 4, 5, 6],
    );
    support::write(dir, "cluster-addon-values.yaml", b"values: |\n  a: b\n");
    support::write(dir, "node-images.yaml", b"dockerImages: [controlplaneamd64]\n");
}

#[tokio::test]
async fn releases_push_list_pull_in_csctl_layout() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let dir = tempfile::tempdir()?;
    write_release(dir.path());
    let repo = format!("{}/kaas/cluster-stacks", reg.addr);
    for tag in ["docker-ferrol-1-27-v1", "docker-ferrol-1-27-v2"] {
        release::push(&registry, dir.path(), &registry.parse(&format!("{repo}:{tag}"))?).await?;
    }
    // A signature tag in the same repository is not a release.
    let keys = keys();
    let r1 = registry.parse(&format!("{repo}:docker-ferrol-1-27-v1"))?;
    let d1 = registry.resolve(&r1).await?;
    signature::sign(&registry, &r1, &d1, &keys.signer).await?;
    let source = Source::Registry(registry.clone());
    let tags = release::list_tags(&source, &registry.parse(&format!("{repo}:latest"))?).await?;
    assert_eq!(tags, ["docker-ferrol-1-27-v1", "docker-ferrol-1-27-v2"]);

    // The manifest follows csctl: artifact type, titles, layer media types.
    let m = registry.fetch_manifest(&r1).await?.parse("t")?;
    assert_eq!(m.artifact_type.as_deref(), Some(release::ARTIFACT_TYPE));
    assert_eq!(
        m.annotations.get("kubernetesVersion").map(String::as_str),
        Some("v1.27.3")
    );
    let class = m
        .layers
        .iter()
        .find(|l| l.title() == Some("docker-ferrol-1-27-cluster-class-v1.tgz"))
        .ok_or("no class layer")?;
    assert_eq!(class.media_type, "application/vnd.scs.cluster-class.v1.tar+gzip");

    let out = tempfile::tempdir()?;
    let dest = out.path().join("docker-ferrol-1-27-v1");
    let pulled = release::pull(&source, &r1, &dest).await?;
    assert_eq!(pulled.digest, d1);
    for name in &pulled.files.files {
        assert_eq!(
            std::fs::read(dest.join(name))?,
            std::fs::read(dir.path().join(name))?,
            "{name}"
        );
    }
    assert_eq!(pulled.files.files.len(), 5);

    // Incomplete release directories are refused before anything is pushed.
    std::fs::remove_file(dir.path().join("docker-ferrol-1-27-cluster-addon-v1.tgz"))?;
    let err = release::push(&registry, dir.path(), &registry.parse(&format!("{repo}:broken"))?)
        .await
        .expect_err("should fail");
    assert!(err.to_string().contains("no cluster-addon chart"), "{err}");

    // A plugin is not a release.
    let plugin_ref = format!("{}/plugins/noop:v1", reg.addr);
    push(&registry, &plugin_ref, 10).await;
    let err = release::pull(&source, &registry.parse(&plugin_ref)?, &out.path().join("x"))
        .await
        .expect_err("should fail");
    assert!(matches!(err, OciError::WrongMediaType { .. }), "{err}");
    assert!(
        !out.path().join("x").exists(),
        "nothing half-written is left behind"
    );
    Ok(())
}

#[tokio::test]
async fn release_files_named_outside_the_directory_are_refused() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry();
    let r = registry.parse(&format!("{}/kaas/cluster-stacks:evil", reg.addr))?;
    let payload = b"owned";
    registry.push_blob(&r, payload, "layer").await?;
    registry.push_blob(&r, b"{}", "config").await?;
    let mut layer = Descriptor::for_bytes("application/vnd.scs.metadata.layer.v1+yaml", payload);
    layer
        .annotations
        .insert("org.opencontainers.image.title".into(), "../../etc/evil".into());
    let mut m = Manifest::new(Descriptor::for_bytes(release::EMPTY_CONFIG, b"{}"), vec![layer]);
    m.artifact_type = Some(release::ARTIFACT_TYPE.into());
    registry.push_manifest(&r, &m.to_bytes(), OCI_MANIFEST).await?;
    let out = tempfile::tempdir()?;
    let err = release::pull(&Source::Registry(registry.clone()), &r, &out.path().join("rel"))
        .await
        .expect_err("should fail");
    assert!(
        err.to_string()
            .contains("file name `../../etc/evil` is not a plain file name"),
        "{err}"
    );
    Ok(())
}

/// The CLI surface as the lead wires it: `stackhost plugin|key|release|oci ...`.
#[derive(clap::Parser, Debug)]
enum TestCli {
    #[command(subcommand)]
    Plugin(stackhost::oci::cli::PluginCommand),
    #[command(subcommand)]
    Key(stackhost::oci::cli::KeyCommand),
    #[command(subcommand)]
    Release(stackhost::oci::cli::ReleaseCommand),
    #[command(subcommand)]
    Oci(stackhost::oci::cli::OciCommand),
}

async fn cli(args: &[&str]) -> anyhow::Result<i32> {
    use clap::Parser;
    let mut argv = vec!["stackhost"];
    argv.extend_from_slice(args);
    match TestCli::try_parse_from(argv)? {
        TestCli::Plugin(c) => c.run().await,
        TestCli::Key(c) => c.run().await,
        TestCli::Release(c) => c.run().await,
        TestCli::Oci(c) => c.run().await,
    }
}

#[tokio::test]
async fn cli_key_generate_push_sign_verify_inspect_export_import() -> TestResult {
    let reg = TestRegistry::start().await;
    let other = TestRegistry::start().await;
    let dir = tempfile::tempdir()?;
    let d = |name: &str| dir.path().join(name).display().to_string();
    std::fs::write(dir.path().join("pw"), "correct horse\n")?;
    let cache = d("cache");
    let common = ["--no-progress", "--cache-dir", cache.as_str()];

    assert_eq!(
        cli(&[
            "key",
            "generate",
            "--output-prefix",
            &d("cosign"),
            "--password-file",
            &d("pw")
        ])
        .await?,
        0
    );
    assert_eq!(
        cli(&[
            "key",
            "generate",
            "--output-prefix",
            &d("other"),
            "--password-file",
            &d("pw")
        ])
        .await?,
        0
    );
    let err = cli(&[
        "key",
        "generate",
        "--output-prefix",
        &d("cosign"),
        "--password-file",
        &d("pw"),
    ])
    .await
    .expect_err("should fail");
    assert!(err.to_string().contains("exists; pass --force"), "{err}");

    let wasm = support::write(dir.path(), "noop.wasm", &component(PROVIDER_IMPORTS, 100));
    let reference = format!("{}/plugins/noop:v1", reg.addr);
    let mut args = vec![
        "plugin",
        "push",
        wasm.to_str().ok_or("path")?,
        &reference,
        "-a",
        "org.opencontainers.image.version=1.0.0",
    ];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);

    let key = d("cosign.key");
    let mut args = vec!["plugin", "sign", &reference, "--key", &key, "--password-file"];
    let pw = d("pw");
    args.push(&pw);
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);

    let public = d("cosign.pub");
    let other_pub = d("other.pub");
    let mut args = vec!["plugin", "verify", &reference, "--key", &public];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    let mut args = vec!["plugin", "verify", &reference, "--key", &other_pub];
    args.extend(common);
    assert_eq!(cli(&args).await?, 1, "a wrong key fails verification");

    let mut args = vec!["plugin", "inspect", &reference, "--json"];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);

    let out = d("noop-out.wasm");
    let mut args = vec!["plugin", "pull", &reference, "--key", &public, "-o", &out];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    assert_eq!(std::fs::read(&out)?, std::fs::read(&wasm)?);
    let mut args = vec!["plugin", "pull", &reference];
    args.extend(common);
    let err = cli(&args).await.expect_err("should fail");
    assert!(err.to_string().contains("no trusted key: pass --key"), "{err}");

    let tarball = d("bundle.tar");
    let mut args = vec!["oci", "export", &reference, &tarball];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    let to = format!("{}/imported", other.addr);
    let mut args = vec!["oci", "import", &tarball, "--to", &to];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    let imported = format!("{to}/plugins/noop:v1");
    let mut args = vec!["plugin", "verify", &imported, "--key", &public];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0, "the signature travelled with the artifact");

    // Export to a directory and pull from it with no registry involved (`--layout`).
    let layout_dir = d("layout");
    let mut args = vec!["oci", "export", &reference, &layout_dir];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    drop(reg);
    let offline_cache = d("offline-cache");
    let out2 = d("offline.wasm");
    let args = vec![
        "plugin",
        "pull",
        &reference,
        "--key",
        &public,
        "--layout",
        &layout_dir,
        "--cache-dir",
        &offline_cache,
        "-o",
        &out2,
        "--no-progress",
    ];
    assert_eq!(cli(&args).await?, 0);
    assert_eq!(std::fs::read(&out2)?, std::fs::read(&wasm)?);

    // Plain HTTP to a non-loopback registry is refused up front.
    let mut args = vec![
        "plugin",
        "pull",
        "http://registry.example/plugins/noop:v1",
        "--allow-unsigned",
    ];
    args.extend(common);
    let err = cli(&args).await.expect_err("should fail");
    assert!(
        err.to_string()
            .contains("refusing plain HTTP to registry `registry.example`"),
        "{err}"
    );

    let rel = dir.path().join("rel");
    std::fs::create_dir(&rel)?;
    write_release(&rel);
    let rel_ref = format!("{}/kaas/cluster-stacks:docker-ferrol-1-27-v1", other.addr);
    let rel_dir = rel.display().to_string();
    let mut args = vec!["release", "push", &rel_dir, &rel_ref];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    let repo = format!("{}/kaas/cluster-stacks", other.addr);
    let mut args = vec!["release", "tags", &repo];
    args.extend(common);
    assert_eq!(cli(&args).await?, 0);
    Ok(())
}

#[test]
fn cli_definitions_are_consistent() {
    use clap::CommandFactory;
    TestCli::command().debug_assert();
}
