//! The container image of `scripts/image`: built with buildah from this checkout and the test's
//! `stackhost` binary, pushed to the real `docker-registry`, pulled back with skopeo, and run from its
//! unpacked root filesystem the way a container runtime with `readOnlyRootFilesystem: true` runs it: the
//! image's entrypoint, environment, working directory and user, a read-only root, writable volumes only on
//! /tmp and /var/cache/stackhost, no new privileges. Needs root (buildah's vfs storage, mounts, chroot) and
//! scripts/deps/image.sh.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use support::TestRegistry;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(command: &mut Command) -> Output {
    let shown = format!("{command:?}");
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).expect("skopeo prints JSON")
}

/// What the image's config says about how to run it.
struct RunConfig {
    entrypoint: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
}

impl RunConfig {
    fn of(config: &Value) -> RunConfig {
        let c = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                .unwrap_or_default()
        };
        RunConfig {
            entrypoint: strings(&c["Entrypoint"]),
            env: strings(&c["Env"]),
            user: c["User"].as_str().unwrap_or_default().to_owned(),
            workdir: c["WorkingDir"].as_str().unwrap_or("/").to_owned(),
        }
    }
}

/// Runs the image's entrypoint with `args` in `rootfs`: a private mount namespace where the root is a
/// read-only bind mount, /tmp and /var/cache/stackhost are fresh tmpfs volumes, /proc and /dev are
/// mounted as a runtime does, then chroot, the image's user and working directory, its environment only.
fn run_in_image(rootfs: &Path, image: &RunConfig, args: &[&str]) -> Output {
    let (uid, gid) = image
        .user
        .split_once(':')
        .unwrap_or((image.user.as_str(), image.user.as_str()));
    let r = rootfs.display();
    let setup = format!(
        "set -e
         mkdir -p '{r}/proc' '{r}/dev'
         mount --bind '{r}' '{r}'
         mount -o remount,bind,ro '{r}'
         mount -t tmpfs -o mode=1777 tmp '{r}/tmp'
         mount -t tmpfs -o mode=1777 cache '{r}/var/cache/stackhost'
         mount -t proc proc '{r}/proc'
         mount --rbind /dev '{r}/dev'
         exec \"$@\""
    );
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--pid",
            "--fork",
            "--kill-child",
            "--",
            "sh",
            "-c",
            setup.as_str(),
            "sh",
        ])
        .args(["env", "-i"])
        .args(&image.env)
        .args(["/usr/bin/setpriv", "--no-new-privs", "/usr/bin/unshare"])
        .arg(format!("--root={r}"))
        .arg(format!("--wd={}", image.workdir))
        .args(["--setuid", uid, "--setgid", gid, "--"])
        .args(&image.entrypoint)
        .args(args);
    command.output().expect("run unshare")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_image_runs_stackhost_read_only_as_a_non_root_user() {
    assert!(
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout == b"0\n"),
        "this test builds and runs a container image: run it as root (buildah vfs storage, mounts, chroot)"
    );
    let registry = TestRegistry::start().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let archive = dir.path().join("stackhost.oci.tar");
    let reference = format!("{}/stackhost/stackhost:test", registry.addr);

    let built = run(Command::new(repo().join("scripts/image"))
        .current_dir(repo())
        .args(["--binary", env!("CARGO_BIN_EXE_stackhost")])
        .arg("--output")
        .arg(&archive)
        .args(["--push", &reference, "--insecure"]));
    let report = String::from_utf8_lossy(&built.stdout).into_owned();
    eprintln!("{report}{}", String::from_utf8_lossy(&built.stderr));
    let compressed: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("compressed "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("scripts/image reports the compressed size: {report}"));

    // What the registry serves: labels, a non-root user, the layers a node pulls.
    let tls = "--tls-verify=false";
    let remote = format!("docker://{reference}");
    let info = json(&run(Command::new("skopeo").args(["inspect", tls, &remote])));
    let labels = &info["Labels"];
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(labels["org.opencontainers.image.version"], version, "{info}");
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap_or_default();
    let head = run(Command::new("git")
        .current_dir(repo())
        .args(["rev-parse", "HEAD"]));
    assert_eq!(revision, String::from_utf8_lossy(&head.stdout).trim(), "{info}");
    assert!(
        labels["org.opencontainers.image.source"]
            .as_str()
            .is_some_and(|s| s.starts_with("https://")),
        "{info}"
    );
    let manifest = json(&run(
        Command::new("skopeo").args(["inspect", tls, "--raw", &remote])
    ));
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 3, "base, helm and stackhost layers: {manifest}");
    let pulled_size: u64 = layers.iter().filter_map(|l| l["size"].as_u64()).sum();
    assert_eq!(
        pulled_size, compressed,
        "the size scripts/image reports is what the registry serves"
    );
    let config = json(&run(
        Command::new("skopeo").args(["inspect", tls, "--config", &remote])
    ));
    let image = RunConfig::of(&config);
    assert_eq!(image.user, "65532:65532", "{config}");
    assert_eq!(image.entrypoint, ["/usr/local/bin/stackhost"], "{config}");

    // Pulled back and unpacked, layer by layer, as a runtime does.
    let pulled = dir.path().join("pulled");
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &remote])
        .arg(format!("oci:{}:test", pulled.display())));
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).expect("rootfs dir");
    for layer in layers {
        let digest = layer["digest"].as_str().expect("digest");
        let blob = pulled
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"));
        run(Command::new("tar").arg("-xzf").arg(&blob).arg("-C").arg(&rootfs));
    }
    for absent in ["bin/sh", "usr/bin/sh", "bin/bash", "usr/bin/apt-get"] {
        assert!(!rootfs.join(absent).exists(), "the image ships no {absent}");
    }
    for present in [
        "usr/local/lib/stackhost/libhelm_c.so",
        "etc/ssl/certs/ca-certificates.crt",
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "usr/share/stackhost/sample/index.json",
    ] {
        assert!(rootfs.join(present).is_file(), "the image ships {present}");
    }

    let out = run_in_image(&rootfs, &image, &["--version"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.trim(), format!("stackhost {version}"));

    // The root really is read-only: writing outside the volumes fails, naming the file.
    let out = run_in_image(
        &rootfs,
        &image,
        &["sandbox", "--once", "--kubeconfig", "/sandbox.kubeconfig"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("/sandbox.kubeconfig") && stderr.contains("Read-only file system"),
        "{stderr}"
    );

    // The whole embedded default inside the image: emulator, controllers, the sample plugin (compiled by
    // wasmtime), Helm rendering through libhelm_c.so, the sample Cluster's addons.
    let out = run_in_image(&rootfs, &image, &["sandbox", "--once", "--timeout", "120s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("release docker-ferrol-1-32-v1 ready"), "{stdout}");
    assert!(
        stdout.contains("addons of Cluster default/sample in its workload cluster"),
        "{stdout}"
    );
    assert!(
        stderr.contains("/usr/share/stackhost/sample"),
        "the sandbox reads the layout shipped in the image: {stderr}"
    );
    eprintln!(
        "image: {compressed} bytes compressed ({:.1} MB)",
        compressed as f64 / 1e6
    );
}
