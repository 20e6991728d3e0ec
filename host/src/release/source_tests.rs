//! Tests of release assets, the cache and the sources (local directory, GitHub against a loopback
//! server serving recorded API responses).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::*;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn releases() -> PathBuf {
    fixtures().join("releases")
}

fn copy_release(tag: &str, to: &Path) -> PathBuf {
    let dest = to.join(tag);
    std::fs::create_dir_all(&dest).expect("mkdir");
    for e in std::fs::read_dir(releases().join(tag)).expect("fixture") {
        let e = e.expect("entry");
        std::fs::copy(e.path(), dest.join(e.file_name())).expect("copy");
    }
    dest
}

#[test]
fn fixture_releases_load_with_their_layouts() {
    let v1 =
        ReleaseAssets::load(&releases().join("docker-ferrol-1-32-v1"), "docker-ferrol-1-32-v1").expect("v1");
    assert_eq!(v1.metadata.kubernetes, "v1.32.2");
    assert_eq!(v1.cluster_class.name, "docker-ferrol-1-32-cluster-class");
    assert_eq!(v1.cluster_class.version, "v1");
    assert!(
        matches!(&v1.addon_layout, AddonLayout::Legacy { values: Some(p) } if p.ends_with("cluster-addon-values.yaml"))
    );
    assert!(v1.node_images.is_some());

    let v2 =
        ReleaseAssets::load(&releases().join("docker-ferrol-1-32-v2"), "docker-ferrol-1-32-v2").expect("v2");
    let dirs: Vec<&str> = v2.cluster_addon_charts.iter().map(|c| c.dir.as_str()).collect();
    assert_eq!(dirs, ["cni", "metrics-server"]);
    let AddonLayout::MultiStage { config, .. } = &v2.addon_layout else {
        panic!("v2 is multi-stage")
    };
    let stages: Vec<&str> = config.addon_stages["BeforeClusterUpgrade"]
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(stages, ["cni", "metrics-server"]);
    let post = config.addon_stages["BeforeClusterUpgrade"][1]
        .wait_for_post_condition
        .as_ref()
        .expect("post");
    assert_eq!(post.conditions, "ms.status.readyReplicas == ms.spec.replicas");
}

/// The committed chart archives hold exactly the files of tests/fixtures/release-sources.
#[test]
fn fixture_archives_match_their_sources() {
    let src = fixtures().join("release-sources");
    let cases = [
        (
            "docker-ferrol-1-32-v1/docker-ferrol-1-32-cluster-class-v1.tgz",
            "cluster-class-v1",
            Some("docker-ferrol-1-32-cluster-class"),
        ),
        (
            "docker-ferrol-1-32-v1/docker-ferrol-1-32-cluster-addon-v1.tgz",
            "cluster-addon-v1",
            Some("docker-ferrol-1-32-cluster-addon"),
        ),
        (
            "docker-ferrol-1-32-v2/docker-ferrol-1-32-cluster-class-v2.tgz",
            "cluster-class-v2",
            Some("docker-ferrol-1-32-cluster-class"),
        ),
        (
            "docker-ferrol-1-32-v2/docker-ferrol-1-32-cluster-addon-v2.tgz",
            "cluster-addon-v2",
            None,
        ),
    ];
    for (archive, dir, top) in cases {
        let file = std::fs::File::open(releases().join(archive)).expect("archive");
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut in_archive = BTreeMap::new();
        for entry in tar.entries().expect("tar") {
            let mut entry = entry.expect("entry");
            if entry.header().entry_type().is_file() {
                let path = entry.path().expect("path").to_string_lossy().into_owned();
                let path = match top {
                    Some(t) => path
                        .strip_prefix(&format!("{t}/"))
                        .expect("under the chart directory")
                        .to_owned(),
                    None => path,
                };
                let mut text = String::new();
                entry.read_to_string(&mut text).expect("text");
                in_archive.insert(path, text);
            }
        }
        let mut in_sources = BTreeMap::new();
        let base = src.join(dir);
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p
                        .strip_prefix(&base)
                        .expect("prefix")
                        .to_string_lossy()
                        .into_owned();
                    in_sources.insert(rel, std::fs::read_to_string(&p).expect("read"));
                }
            }
        }
        assert!(
            in_archive == in_sources,
            "{archive} is stale: run scripts/build-fixture-releases.sh"
        );
    }
}

fn load_err(dir: &Path, tag: &str) -> String {
    ReleaseAssets::load(dir, tag).expect_err("invalid").to_string()
}

#[test]
fn invalid_releases_say_what_is_wrong() {
    let tmp = tempfile::tempdir().expect("tmp");
    let tag = "docker-ferrol-1-32-v1";

    let dir = copy_release(tag, &tmp.path().join("a"));
    std::fs::remove_file(dir.join("metadata.yaml")).expect("rm");
    assert!(load_err(&dir, tag).starts_with(
        "release docker-ferrol-1-32-v1: metadata.yaml is missing (every release needs one; looked in "
    ));

    let dir = copy_release(tag, &tmp.path().join("b"));
    std::fs::write(
        dir.join("metadata.yaml"),
        "versions: {clusterStack: v2, kubernetes: v1.32.2, components: {clusterAddon: v1}}",
    )
    .expect("w");
    assert_eq!(load_err(&dir, tag), "release docker-ferrol-1-32-v1: metadata.yaml versions.clusterStack is v2 but the release tag says v1");

    let dir = copy_release(tag, &tmp.path().join("c"));
    std::fs::write(
        dir.join("metadata.yaml"),
        "versions: {clusterStack: v1, kubernetes: v1.31.0, components: {clusterAddon: v1}}",
    )
    .expect("w");
    assert_eq!(load_err(&dir, tag), "release docker-ferrol-1-32-v1: metadata.yaml versions.kubernetes is v1.31.0 but the release tag is for Kubernetes 1.32");

    let dir = copy_release(tag, &tmp.path().join("d"));
    std::fs::write(
        dir.join("metadata.yaml"),
        "versions: {clusterStack: v1, kubernetes: v1.32.2}",
    )
    .expect("w");
    assert_eq!(
        load_err(&dir, tag),
        "release docker-ferrol-1-32-v1: metadata.yaml: versions.components.clusterAddon is missing or empty"
    );

    let dir = copy_release(tag, &tmp.path().join("e"));
    std::fs::remove_file(dir.join("docker-ferrol-1-32-cluster-class-v1.tgz")).expect("rm");
    assert_eq!(
        load_err(&dir, tag),
        "release docker-ferrol-1-32-v1: docker-ferrol-1-32-cluster-class-v1.tgz is missing (expected the cluster-class chart; found docker-ferrol-1-32-cluster-addon-v1.tgz)"
    );

    let dir = copy_release(tag, &tmp.path().join("f"));
    std::fs::write(dir.join("docker-ferrol-1-32-cluster-addon-v1.tgz"), "not gzip").expect("w");
    assert!(load_err(&dir, tag).starts_with(
        "release docker-ferrol-1-32-v1: chart docker-ferrol-1-32-cluster-addon-v1.tgz is not a valid Helm chart archive: "
    ));

    let dir = copy_release("docker-ferrol-1-32-v2", &tmp.path().join("g"));
    std::fs::write(
        dir.join("clusteraddon.yaml"),
        "addonStages:\n  AfterControlPlaneInitialized:\n    - {name: csi, action: apply}\n",
    )
    .expect("w");
    assert_eq!(
        load_err(&dir, "docker-ferrol-1-32-v2"),
        "release docker-ferrol-1-32-v2: clusteraddon.yaml is invalid: stage \"csi\" of hook AfterControlPlaneInitialized has no chart directory in docker-ferrol-1-32-cluster-addon-v2.tgz (it has: cni, metrics-server)"
    );
    std::fs::write(
        dir.join("clusteraddon.yaml"),
        "addonStages:\n  AfterControlPlaneInitialized:\n    - {name: cni, action: upgrade}\n",
    )
    .expect("w");
    assert!(load_err(&dir, "docker-ferrol-1-32-v2")
        .starts_with("release docker-ferrol-1-32-v2: clusteraddon.yaml is invalid: "));

    assert!(load_err(&releases().join(tag), "docker_ferrol-1-32-v1").starts_with("invalid release name"));
}

/// A source that counts downloads and can be told to deliver a broken release.
#[derive(Debug)]
struct Counting {
    inner: LocalDirSource,
    downloads: AtomicUsize,
    break_metadata: bool,
}

impl ReleaseSource for Counting {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn list_releases(&self) -> source::BoxFuture<'_, Result<Vec<String>, ReleaseError>> {
        self.inner.list_releases()
    }
    fn download<'a>(
        &'a self,
        tag: &'a str,
        dest: &'a Path,
    ) -> source::BoxFuture<'a, Result<(), ReleaseError>> {
        Box::pin(async move {
            self.downloads.fetch_add(1, Ordering::SeqCst);
            tokio::task::yield_now().await;
            self.inner.download(tag, dest).await?;
            if self.break_metadata {
                std::fs::write(dest.join("metadata.yaml"), "versions: {}").expect("break");
            }
            Ok(())
        })
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
fn cache_downloads_once_and_never_exposes_a_broken_release() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = Arc::new(ReleaseCache::open(tmp.path()).expect("cache"));
    let name = ReleaseName::parse_tag("docker-ferrol-1-32-v1").expect("tag");
    let source = Arc::new(Counting {
        inner: LocalDirSource::new(releases()),
        downloads: AtomicUsize::new(0),
        break_metadata: false,
    });
    runtime().block_on(async {
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (cache, source, name) = (cache.clone(), source.clone(), name.clone());
            tasks.push(tokio::spawn(async move {
                cache.fetch(source.as_ref(), &name).await.map(|a| a.dir)
            }));
        }
        for t in tasks {
            assert_eq!(
                t.await.expect("join").expect("fetch"),
                cache.path_of(source.as_ref(), &name)
            );
        }
    });
    assert_eq!(
        source.downloads.load(Ordering::SeqCst),
        1,
        "concurrent fetches download once"
    );
    assert!(cache.get(source.as_ref(), &name).expect("valid").is_some());

    let broken = Counting {
        inner: LocalDirSource::new(releases()),
        downloads: AtomicUsize::new(0),
        break_metadata: true,
    };
    let v2 = ReleaseName::parse_tag("docker-ferrol-1-32-v2").expect("tag");
    let err = runtime()
        .block_on(cache.fetch(&broken, &v2))
        .expect_err("broken release");
    assert_eq!(
        err.to_string(),
        "release docker-ferrol-1-32-v2: metadata.yaml: versions.clusterStack is missing or empty"
    );
    let mut left: Vec<String> = std::fs::read_dir(cache.source_dir(&broken))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        ["docker-ferrol-1-32-v1", "source.txt"],
        "no partial or invalid release left behind"
    );

    let missing = ReleaseName::parse_tag("docker-ferrol-1-32-v9").expect("tag");
    let err = runtime()
        .block_on(cache.fetch(&LocalDirSource::new(releases()), &missing))
        .expect_err("absent");
    assert_eq!(
        err.to_string(),
        format!(
            "release docker-ferrol-1-32-v9 not found in local directory {}",
            releases().display()
        )
    );

    cache.evict(source.as_ref(), &name).expect("evict");
    assert!(cache.get(source.as_ref(), &name).expect("no error").is_none());

    // Another source with the same tag gets its own directory (per-ClusterStack sources).
    let other_root = tmp.path().join("other-source");
    copy_release("docker-ferrol-1-32-v1", &other_root);
    let other = LocalDirSource::new(&other_root);
    let assets = runtime()
        .block_on(cache.fetch(&other, &name))
        .expect("other source");
    assert_ne!(cache.source_dir(&other), cache.source_dir(source.as_ref()));
    assert!(assets.dir.starts_with(cache.source_dir(&other)));
}

#[test]
fn cache_removes_leftovers_of_interrupted_downloads() {
    let tmp = tempfile::tempdir().expect("tmp");
    let source = tmp.path().join("cluster-stacks/0123456789abcdef");
    // The cache's own temporary directory, and those of an OCI pull into it (killed mid-way).
    let leftovers = [
        ".partial-docker-ferrol-1-32-v1-1-0",
        "..partial-docker-ferrol-1-32-v1-1-0.partial-1",
        ".docker-ferrol-1-32-v1.old-1",
    ];
    for name in leftovers {
        std::fs::create_dir_all(source.join(name)).expect("mkdir");
        std::fs::write(source.join(name).join("metadata.yaml"), "half").expect("w");
    }
    let kept = copy_release("docker-ferrol-1-32-v1", &source);
    ReleaseCache::open(tmp.path()).expect("open");
    for name in leftovers {
        assert!(!source.join(name).exists(), "{name} survived");
    }
    assert!(kept.join("metadata.yaml").is_file(), "published releases stay");
}

/// A source that writes a file and then never finishes.
#[derive(Debug)]
struct Hanging;

impl ReleaseSource for Hanging {
    fn describe(&self) -> String {
        "a hanging source".into()
    }
    fn list_releases(&self) -> source::BoxFuture<'_, Result<Vec<String>, ReleaseError>> {
        Box::pin(std::future::pending())
    }
    fn download<'a>(
        &'a self,
        _tag: &'a str,
        dest: &'a Path,
    ) -> source::BoxFuture<'a, Result<(), ReleaseError>> {
        Box::pin(async move {
            std::fs::write(dest.join("metadata.yaml"), "half").expect("write");
            std::future::pending().await
        })
    }
}

#[test]
fn a_download_stopped_half_way_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = Arc::new(ReleaseCache::open(tmp.path()).expect("cache"));
    let name = ReleaseName::parse_tag("docker-ferrol-1-32-v1").expect("tag");
    runtime().block_on(async {
        let fetch = cache.fetch(&Hanging, &name);
        assert!(tokio::time::timeout(std::time::Duration::from_millis(200), fetch)
            .await
            .is_err());
    });
    let left: Vec<String> = std::fs::read_dir(cache.source_dir(&Hanging))
        .expect("dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["source.txt"], "the partial download is removed");

    // Through the background downloads: the deadline ends it with a message naming it.
    let downloads = download::Downloads::new(cache.clone(), std::time::Duration::from_millis(200), 1);
    let source: Arc<dyn ReleaseSource> = Arc::new(Hanging);
    let err = runtime().block_on(async {
        loop {
            match downloads.poll("ns/a", source.clone(), &name) {
                download::Download::Done(result) => break (*result).expect_err("deadline"),
                download::Download::Held(_) => panic!("nothing was held"),
                _ => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
    });
    assert_eq!(
        err.to_string(),
        "release docker-ferrol-1-32-v1: the download from a hanging source did not finish within 0.2s \
         (--release-download-timeout); it is retried with backoff"
    );
}

#[test]
fn local_source_lists_release_directories() {
    let tags = runtime()
        .block_on(LocalDirSource::new(releases()).list_releases())
        .expect("list");
    assert_eq!(tags, ["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]);
    let err = runtime()
        .block_on(LocalDirSource::new(releases()).download("../releases", Path::new("/tmp")))
        .expect_err("escape");
    assert!(matches!(err, ReleaseError::NotFound { .. }));
}

/// A loopback HTTP server answering like the GitHub API from the recorded responses.
struct FakeGitHub {
    base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

fn serve_github(token: Option<&'static str>) -> FakeGitHub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (b, log) = (base.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut headers = BTreeMap::new();
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
            log.lock()
                .expect("log")
                .push(format!("{path} auth={:?}", headers.get("authorization")));
            let recorded = |f: &str| {
                std::fs::read_to_string(fixtures().join("github").join(f))
                    .expect("recorded")
                    .replace("{base}", &b)
            };
            let repo = "/repos/SovereignCloudStack/cluster-stacks";
            // Object storage URLs are pre-signed: no token there (and clients must not send it).
            let authorised = path.starts_with("/storage/")
                || token.is_none_or(|t| headers.get("authorization") == Some(&format!("Bearer {t}")));
            let (status, extra, body): (&str, String, Vec<u8>) = if !authorised {
                (
                    "401 Unauthorized",
                    String::new(),
                    br#"{"message":"Bad credentials"}"#.to_vec(),
                )
            } else if path == format!("{repo}/releases?per_page=100") {
                let link = format!("<{b}/repositories/42/releases?per_page=100&page=2>; rel=\"next\", <{b}/repositories/42/releases?per_page=100&page=2>; rel=\"last\"");
                (
                    "200 OK",
                    format!("Link: {link}\r\n"),
                    recorded("releases-page1.json").into_bytes(),
                )
            } else if path == "/repositories/42/releases?per_page=100&page=2" {
                (
                    "200 OK",
                    String::new(),
                    recorded("releases-page2.json").into_bytes(),
                )
            } else if path == format!("{repo}/releases/tags/docker-ferrol-1-32-v1") {
                (
                    "200 OK",
                    String::new(),
                    recorded("release-docker-ferrol-1-32-v1.json").into_bytes(),
                )
            } else if let Some(id) = path.strip_prefix(&format!("{repo}/releases/assets/")) {
                if headers.get("accept").map(String::as_str) != Some("application/octet-stream") {
                    ("415 Unsupported Media Type", String::new(), Vec::new())
                } else if id == "9002" {
                    // GitHub redirects asset downloads to its object storage.
                    (
                        "302 Found",
                        format!("Location: {b}/storage/docker-ferrol-1-32-cluster-class-v1.tgz\r\n"),
                        Vec::new(),
                    )
                } else {
                    let name = match id {
                        "9001" => "metadata.yaml",
                        "9003" => "docker-ferrol-1-32-cluster-addon-v1.tgz",
                        "9004" => "cluster-addon-values.yaml",
                        _ => "node-images.yaml",
                    };
                    (
                        "200 OK",
                        String::new(),
                        std::fs::read(releases().join("docker-ferrol-1-32-v1").join(name)).expect("asset"),
                    )
                }
            } else if let Some(name) = path.strip_prefix("/storage/") {
                (
                    "200 OK",
                    String::new(),
                    std::fs::read(releases().join("docker-ferrol-1-32-v1").join(name)).expect("asset"),
                )
            } else {
                (
                    "404 Not Found",
                    String::new(),
                    br#"{"message":"Not Found"}"#.to_vec(),
                )
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body));
        }
    });
    FakeGitHub { base, requests }
}

fn github(server: &FakeGitHub, token: Option<&str>) -> GitHubSource {
    GitHubSource::new(GitHubConfig {
        api_url: format!("{}/", server.base),
        owner: "SovereignCloudStack".into(),
        repository: "cluster-stacks".into(),
        token: token.map(str::to_owned),
        max_asset_bytes: None,
    })
}

#[test]
fn github_lists_all_pages_by_tag_and_skips_drafts() {
    let server = serve_github(None);
    let tags = runtime()
        .block_on(github(&server, None).list_releases())
        .expect("list");
    assert_eq!(
        tags,
        [
            "docker-ferrol-1-32-v2",
            "openstack-scs-1-32-v0-sha-lvlvyfw",
            "docker-ferrol-1-32-v1"
        ]
    );
    assert_eq!(server.requests.lock().expect("log").len(), 2, "two pages");
}

#[test]
fn github_release_downloads_into_the_cache_with_a_token() {
    let server = serve_github(Some("t0ken"));
    let tmp = tempfile::tempdir().expect("tmp");
    let cache = ReleaseCache::open(tmp.path()).expect("cache");
    let name = ReleaseName::parse_tag("docker-ferrol-1-32-v1").expect("tag");
    let assets = runtime()
        .block_on(cache.fetch(&github(&server, Some("t0ken")), &name))
        .unwrap_or_else(|e| panic!("{e}: {:?}", server.requests.lock().expect("log")));
    assert_eq!(assets.metadata.kubernetes, "v1.32.2");
    for file in [
        "docker-ferrol-1-32-cluster-class-v1.tgz",
        "docker-ferrol-1-32-cluster-addon-v1.tgz",
        "metadata.yaml",
    ] {
        assert_eq!(
            std::fs::read(assets.dir.join(file)).expect("downloaded"),
            std::fs::read(releases().join("docker-ferrol-1-32-v1").join(file)).expect("fixture"),
            "{file}"
        );
    }

    let err = runtime().block_on(cache.fetch(
        &github(&server, Some("wrong")),
        &ReleaseName::parse_tag("docker-ferrol-1-32-v2").expect("tag"),
    ));
    let text = err.expect_err("bad token").to_string();
    assert!(
        text.contains("returned 401 Unauthorized (check the token): Bad credentials"),
        "{text}"
    );

    let missing = ReleaseName::parse_tag("docker-ferrol-1-32-v7").expect("tag");
    let err = runtime()
        .block_on(cache.fetch(&github(&server, Some("t0ken")), &missing))
        .expect_err("absent");
    assert_eq!(
        err.to_string(),
        format!(
            "release docker-ferrol-1-32-v7 not found in GitHub SovereignCloudStack/cluster-stacks ({})",
            server.base
        )
    );
}

/// A loopback HTTP server answering `path -> (status, extra header lines, body)` (404 otherwise), and
/// logging `path auth=<Authorization header>` of every request.
fn serve_routes(
    routes: impl Fn(&str, &str) -> Option<(&'static str, String, Vec<u8>)> + Send + 'static,
) -> FakeGitHub {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (log, b) = (requests.clone(), base.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut auth = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("authorization") {
                        auth = Some(v.trim().to_owned());
                    }
                }
            }
            log.lock().expect("log").push(format!("{path} auth={auth:?}"));
            let (status, extra, body) =
                routes(&b, &path).unwrap_or(("404 Not Found", String::new(), b"{}".to_vec()));
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
                body.len()
            );
            let _ = stream
                .write_all(head.as_bytes())
                .and_then(|()| stream.write_all(&body));
        }
    });
    FakeGitHub { base, requests }
}

#[test]
fn github_token_and_downloads_stay_on_the_api_host_and_assets_are_capped() {
    let elsewhere = serve_routes(|_, _| Some(("200 OK", String::new(), b"[]".to_vec())));
    let other = elsewhere.base.clone();
    let api = serve_routes(move |base, path| {
        let release = |assets: String| {
            Some((
                "200 OK",
                String::new(),
                format!(r#"{{"tag_name": "docker-ferrol-1-32-v1", "assets": [{assets}]}}"#).into_bytes(),
            ))
        };
        match path {
            "/repos/o/r/releases?per_page=100" => Some((
                "200 OK",
                format!("Link: <{other}/repos/o/r/releases?page=2>; rel=\"next\"\r\n"),
                b"[]".to_vec(),
            )),
            "/repos/o/r/releases/tags/elsewhere" => release(format!(
                r#"{{"name": "metadata.yaml", "url": "{other}/assets/1", "size": 10}}"#
            )),
            "/repos/o/r/releases/tags/declared-large" => release(format!(
                r#"{{"name": "metadata.yaml", "url": "{base}/repos/o/r/releases/assets/2", "size": 2048}}"#
            )),
            "/repos/o/r/releases/tags/large" => release(format!(
                r#"{{"name": "metadata.yaml", "url": "{base}/repos/o/r/releases/assets/2", "size": 10}}"#
            )),
            "/repos/o/r/releases/assets/2" => Some(("200 OK", String::new(), vec![b'#'; 2048])),
            _ => None,
        }
    });
    let source = |api_url: &str| {
        GitHubSource::new(GitHubConfig {
            api_url: api_url.to_owned(),
            owner: "o".into(),
            repository: "r".into(),
            token: Some("s3cret".into()),
            max_asset_bytes: Some(1024),
        })
    };
    let gh = source(&api.base);
    let rt = runtime();

    // A next page on another host is not followed.
    let err = rt.block_on(gh.list_releases()).expect_err("next page elsewhere");
    assert!(
        err.to_string().contains(&format!(
            "the next page {}/repos/o/r/releases?page=2 is not on the API host {}; refusing to follow it",
            elsewhere.base, api.base
        )),
        "{err}"
    );

    // Neither is an asset on another host.
    let dest = tempfile::tempdir().expect("tmp");
    let err = rt
        .block_on(gh.download("elsewhere", dest.path()))
        .expect_err("asset elsewhere");
    assert!(
        err.to_string().contains(&format!(
            "asset metadata.yaml at {}/assets/1 is not on the API host",
            elsewhere.base
        )),
        "{err}"
    );
    assert!(
        elsewhere.requests.lock().expect("log").is_empty(),
        "the other host was asked: {:?}",
        elsewhere.requests.lock().expect("log")
    );

    // Assets over the cap are refused, by their declared size and by what they send.
    for tag in ["declared-large", "large"] {
        let err = rt.block_on(gh.download(tag, dest.path())).expect_err("too large");
        assert!(
            err.to_string().contains(&format!(
                "release {tag}: asset metadata.yaml is larger than 1024 bytes, the limit of one release asset"
            )),
            "{err}"
        );
    }

    // A token never goes over plain HTTP to a host that is not loopback (refused before connecting).
    let err = rt
        .block_on(source("http://github.invalid").list_releases())
        .expect_err("plain http");
    assert!(
        err.to_string().contains(
            "refusing to send the token over plain HTTP to http://github.invalid/repos/o/r/releases"
        ),
        "{err}"
    );
}

#[test]
fn github_unreachable_is_a_source_error() {
    // A port nothing listens on: bind, learn the port, close.
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let src = GitHubSource::new(GitHubConfig {
        api_url: format!("http://127.0.0.1:{port}"),
        owner: "o".into(),
        repository: "r".into(),
        token: None,
        max_asset_bytes: None,
    });
    let err = runtime().block_on(src.list_releases()).expect_err("down");
    assert!(matches!(err, ReleaseError::Source { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("GitHub o/r (http://127.0.0.1:{port}): GET http://127.0.0.1:{port}/repos/o/r/releases?per_page=100 failed: ")), "{err}");
}

#[test]
fn multi_stage_addon_unpacks_into_one_chart_per_stage() {
    let tmp = tempfile::tempdir().expect("tmp");
    let v2 =
        ReleaseAssets::load(&releases().join("docker-ferrol-1-32-v2"), "docker-ferrol-1-32-v2").expect("v2");
    let charts = v2
        .unpack_cluster_addon(&tmp.path().join("addon"))
        .expect("unpack");
    let names: Vec<&str> = charts.keys().map(String::as_str).collect();
    assert_eq!(names, ["cni", "metrics-server"]);
    assert!(charts["cni"].join("overwrite.yaml").is_file());
    assert!(charts["metrics-server"]
        .join("templates/metrics-server.yaml")
        .is_file());

    // An archive with a path escaping the destination is refused.
    let evil = tmp.path().join("evil.tgz");
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(&evil).expect("create"),
        flate2::Compression::default(),
    ));
    let data = b"x";
    let mut header = tar::Header::new_gnu();
    header.set_size(1);
    header.set_mode(0o644);
    // Write the name bytes directly: the tar crate's safe setters refuse `..` themselves.
    header.as_old_mut().name[..9].copy_from_slice(b"../escape");
    header.set_cksum();
    builder.append(&header, &data[..]).expect("append");
    builder.into_inner().expect("finish").finish().expect("gzip");
    let err =
        chart::unpack_chart_archive(&evil, &tmp.path().join("out"), &Default::default()).expect_err("escape");
    assert_eq!(err, "entry ../escape leaves the archive directory");
    assert!(!tmp.path().join("escape").exists());
}

/// A chart archive with one chart whose `Chart.yaml` is followed by `extra` entries of the given sizes.
fn archive_with(path: &Path, extra: &[(&str, usize)]) {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        std::fs::File::create(path).expect("create"),
        flate2::Compression::fast(),
    ));
    let mut add = |name: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).expect("append");
    };
    add("c/Chart.yaml", b"name: c\nversion: 1.0.0\n");
    for (name, size) in extra {
        add(name, &vec![0u8; *size]);
    }
    builder.into_inner().expect("finish").finish().expect("gzip");
}

#[test]
fn chart_archives_that_expand_past_the_limits_are_refused_before_they_are_written() {
    let tmp = tempfile::tempdir().expect("tmp");
    let limits = chart::ArchiveLimits {
        total_bytes: 3 << 20,
        entry_bytes: 2 << 20,
        entries: 5,
    };
    // One entry over the per-file limit (it compresses to a few KiB: a zip bomb in small).
    let big = tmp.path().join("big.tgz");
    archive_with(&big, &[("c/templates/bomb.yaml", (2 << 20) + 1)]);
    assert!(std::fs::metadata(&big).expect("size").len() < 64 << 10);
    let err = chart::read_chart_archive(&big, &limits).expect_err("entry limit");
    assert_eq!(
        err,
        "c/templates/bomb.yaml expands to 2097153 bytes, over the limit of 2097152 bytes per file"
    );
    let out = tmp.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    assert!(chart::unpack_chart_archive(&big, &out, &limits).is_err());
    assert!(
        !out.join("c/templates/bomb.yaml").exists(),
        "nothing of the refused entry is written"
    );

    // Entries each within the limit, together over the total.
    let many = tmp.path().join("many.tgz");
    archive_with(&many, &[("c/a", 2 << 20), ("c/b", 2 << 20)]);
    let err = chart::read_chart_archive(&many, &limits).expect_err("total limit");
    assert!(
        err.starts_with("the archive expands to more than 3145728 bytes"),
        "{err}"
    );
    assert!(err.ends_with("c/b is where it passes it"), "{err}");

    // Too many entries.
    let names: Vec<String> = (0..5).map(|i| format!("c/f{i}")).collect();
    let entries: Vec<(&str, usize)> = names.iter().map(|n| (n.as_str(), 1)).collect();
    let crowded = tmp.path().join("crowded.tgz");
    archive_with(&crowded, &entries);
    let err = chart::read_chart_archive(&crowded, &limits).expect_err("entry count");
    assert_eq!(
        err,
        "the archive has more than 5 entries (the limit per chart archive)"
    );

    // The defaults take the real sample releases.
    assert!(ReleaseAssets::load(&releases().join("docker-ferrol-1-32-v2"), "docker-ferrol-1-32-v2").is_ok());
}
