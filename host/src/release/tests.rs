//! Table tests of release names and versions against upstream's grammar and string forms.

use std::cmp::Ordering;

use super::*;

#[test]
fn dot_form_versions() {
    // (input, major, channel, patch, dash form)
    let ok = [
        ("v1", 1, "stable", "", "v1"),
        ("v0", 0, "stable", "", "v0"),
        ("v12", 12, "stable", "", "v12"),
        ("v1-alpha.1", 1, "alpha", "1", "v1-alpha-1"),
        ("v3-alpha.0", 3, "alpha", "0", "v3-alpha-0"),
        ("v0-sha.hipstsw", 0, "sha", "hipstsw", "v0-sha-hipstsw"),
        ("v0-sha.3960147", 0, "sha", "3960147", "v0-sha-3960147"),
        ("v2-custom.10", 2, "custom", "10", "v2-custom-10"),
        ("v1-beta_2.rc_1", 1, "beta_2", "rc_1", "v1-beta_2-rc_1"),
    ];
    for (s, major, channel, patch, dash) in ok {
        let v = Version::parse_dot(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!(
            (v.major(), v.channel(), v.patch()),
            (major, channel, patch),
            "{s}"
        );
        assert_eq!(v.dash(), dash, "{s}");
        assert_eq!(v.dot(), s, "{s}");
        assert_eq!(Version::parse_dash(dash).as_ref(), Ok(&v), "{dash}");
    }
    // Rejected as upstream's regex rejects them, plus an explicit `stable` channel.
    for bad in [
        "",
        "1",
        "v",
        "V1",
        "v1-alpha",
        "v1-alpha-1.0",
        "v1.0-alpha.1",
        "v1-alpha.",
        "v1-.1",
        "v-1",
        "v1.0",
        "v1-alpha.1.0",
        "v1-al pha.1",
        "v1-alpha-1",
        " v1",
        "v1 ",
    ] {
        assert_eq!(
            Version::parse_dot(bad),
            Err(VersionError::InvalidDotForm(bad.into())),
            "{bad:?}"
        );
    }
    assert_eq!(
        Version::parse_dot("v1-stable.1"),
        Err(VersionError::ExplicitStable("v1-stable.1".into()))
    );
    assert_eq!(
        Version::parse_dot("v1-alpha").expect_err("invalid").to_string(),
        "invalid version \"v1-alpha\": expected vN or vN-<channel>.<patch> (dot form), e.g. v1, v1-alpha.1, v0-sha.hipstsw"
    );
}

#[test]
fn dash_form_versions() {
    for bad in ["v1-alpha.1", "v1-alpha", "v1-alpha-1-2", "v1--1", "v0-sha.x"] {
        assert_eq!(
            Version::parse_dash(bad),
            Err(VersionError::InvalidDashForm(bad.into())),
            "{bad}"
        );
    }
    assert!(Version::parse_dash("v0-sha-hipstsw").is_ok_and(|v| v.is_hash()));
}

#[test]
fn comparison_is_parsed_never_string() {
    let v = |s| Version::parse_dot(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    let cases = [
        ("v2", "v10", Ordering::Less),
        ("v10", "v9", Ordering::Greater),
        ("v1", "v1", Ordering::Equal),
        ("v1-alpha.9", "v1-alpha.10", Ordering::Less), // upstream compared "9" > "10" as strings
        ("v1-alpha.10", "v2-alpha.0", Ordering::Less),
        ("v1-alpha.01", "v1-alpha.1", Ordering::Equal),
        ("v1-alpha.2", "v1-alpha.rc", Ordering::Less), // numbers before words
        ("v0-sha.abc", "v0-sha.abd", Ordering::Less),
    ];
    for (a, b, want) in cases {
        assert_eq!(v(a).compare(&v(b)), Ok(want), "{a} vs {b}");
        assert_eq!(v(b).compare(&v(a)), Ok(want.reverse()), "{b} vs {a}");
    }
    assert_eq!(
        v("v1")
            .compare(&v("v1-alpha.1"))
            .expect_err("different channels")
            .to_string(),
        "cannot compare versions with different channels stable and alpha"
    );
    // Sorting mixed channels is still deterministic (channel first), unlike upstream.
    let mut all = [
        v("v2"),
        v("v1-beta.1"),
        v("v10"),
        v("v1-alpha.10"),
        v("v1-alpha.9"),
        v("v1"),
    ];
    all.sort();
    let dots: Vec<String> = all.iter().map(Version::dot).collect();
    assert_eq!(
        dots,
        ["v1-alpha.9", "v1-alpha.10", "v1-beta.1", "v1", "v2", "v10"]
    );
}

#[test]
fn kubernetes_versions() {
    let ok = [
        ("1.27", 1, 27),
        ("1.9", 1, 9),
        ("10.1", 10, 1),
        ("1.100", 1, 100),
        ("2.0", 2, 0),
    ];
    for (s, major, minor) in ok {
        let k = KubernetesVersion::parse_dot(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        assert_eq!((k.major, k.minor), (major, minor));
        assert_eq!(k.dot(), s);
        assert_eq!(k.dash(), s.replace('.', "-"));
    }
    for bad in [
        "1", "1.27.3", "v1.27", "1.", ".27", "a.b", "01.27", "1.027", "1-27", "",
    ] {
        assert_eq!(
            KubernetesVersion::parse_dot(bad),
            Err(VersionError::InvalidKubernetes(bad.into())),
            "{bad}"
        );
    }
    assert_eq!(
        KubernetesVersion::parse_dot("0.27"),
        Err(VersionError::ZeroKubernetesMajor("0.27".into()))
    );
    assert!(KubernetesVersion::parse_dot("1.10").ok() > KubernetesVersion::parse_dot("1.9").ok());
    // Full versions from metadata.yaml.
    for (s, dot) in [
        ("v1.27.3", "1.27"),
        ("1.30.0", "1.30"),
        ("v1.31.0-rc.1", "1.31"),
        ("v10.2.1", "10.2"),
        ("v1.27", "1.27"),
    ] {
        assert_eq!(
            KubernetesVersion::parse_full(s).map(|k| k.dot()),
            Ok(dot.into()),
            "{s}"
        );
    }
    for bad in ["latest", "v1", "v1.x.3", "v1.27.x", ""] {
        assert!(KubernetesVersion::parse_full(bad).is_err(), "{bad}");
    }
}

#[test]
fn release_tags_and_class_names() {
    // (tag, class name, provider, name, k8s, version dot, helm release name, cluster-class chart)
    let cases = [
        (
            "docker-ferrol-1-27-v1",
            "docker-ferrol-1-27-v1",
            "docker",
            "ferrol",
            "1.27",
            "v1",
            "docker-ferrol-1-27",
            "docker-ferrol-1-27-cluster-class-v1.tgz",
        ),
        (
            "docker-ferrol-1-27-v1-alpha-0",
            "docker-ferrol-1-27-v1-alpha.0",
            "docker",
            "ferrol",
            "1.27",
            "v1-alpha.0",
            "docker-ferrol-1-27",
            "docker-ferrol-1-27-cluster-class-v1-alpha.0.tgz",
        ),
        (
            "openstack-scs-1-30-v0-sha-lvlvyfw",
            "openstack-scs-1-30-v0-sha.lvlvyfw",
            "openstack",
            "scs",
            "1.30",
            "v0-sha.lvlvyfw",
            "openstack-scs-1-30",
            "openstack-scs-1-30-cluster-class-v0-sha.lvlvyfw.tgz",
        ),
        (
            "docker-ferrol-10-1-v12",
            "docker-ferrol-10-1-v12",
            "docker",
            "ferrol",
            "10.1",
            "v12",
            "docker-ferrol-10-1",
            "docker-ferrol-10-1-cluster-class-v12.tgz",
        ),
        (
            "p2-n3-1-100-v3",
            "p2-n3-1-100-v3",
            "p2",
            "n3",
            "1.100",
            "v3",
            "p2-n3-1-100",
            "p2-n3-1-100-cluster-class-v3.tgz",
        ),
    ];
    for (tag, class, provider, name, k8s, version, helm, chart) in cases {
        let r = ReleaseName::parse_tag(tag).unwrap_or_else(|e| panic!("{tag}: {e}"));
        assert_eq!(
            (
                r.provider.as_str(),
                r.name.as_str(),
                r.kubernetes.dot(),
                r.version.dot()
            ),
            (provider, name, k8s.to_owned(), version.to_owned()),
            "{tag}"
        );
        assert_eq!(r.tag(), tag);
        assert_eq!(r.class_name(), class);
        assert_eq!(r.helm_release_name(), helm);
        assert_eq!(r.cluster_class_chart_file(), chart);
        assert_eq!(ReleaseName::parse_class(class).as_ref(), Ok(&r), "{class}");
        assert_eq!(tag_from_class(class).as_deref(), Ok(tag));
        assert_eq!(ReleaseName::new(provider, name, k8s, version).as_ref(), Ok(&r));
    }
    let r = ReleaseName::parse_tag("docker-ferrol-1-27-v3").expect("tag");
    let addon = Version::parse_dot("v2").expect("v2");
    assert_eq!(
        r.cluster_addon_chart_file(&addon),
        "docker-ferrol-1-27-cluster-addon-v2.tgz"
    );
}

#[test]
fn invalid_release_names_say_why() {
    let cases = [
        ("docker-ferrol-1-27", "invalid release name \"docker-ferrol-1-27\": expected <provider>-<name>-<k8sMajor>-<k8sMinor>-<version> (dash form), e.g. docker-ferrol-1-27-v1 or docker-ferrol-1-27-v0-sha-hipstsw"),
        ("docker-ferrol-1-27-v0-sha.x", "invalid release name \"docker-ferrol-1-27-v0-sha.x\": expected <provider>-<name>-<k8sMajor>-<k8sMinor>-<version> (dash form), e.g. docker-ferrol-1-27-v1 or docker-ferrol-1-27-v0-sha-hipstsw"),
        ("-ferrol-1-27-v1", "invalid provider \"\": use lowercase letters and digits only (it is the first segment of release names)"),
        ("docker--1-27-v1", "invalid cluster stack name \"\": use lowercase letters and digits only (it is the second segment of release names)"),
        ("Docker-ferrol-1-27-v1", "invalid provider \"Docker\": use lowercase letters and digits only (it is the first segment of release names)"),
        ("docker-ferrol-x-27-v1", "invalid release name \"docker-ferrol-x-27-v1\": invalid Kubernetes version \"x.27\": expected <major>.<minor> with numbers, e.g. 1.32"),
        ("docker-ferrol-0-27-v1", "invalid release name \"docker-ferrol-0-27-v1\": invalid Kubernetes version \"0.27\": the major version must be at least 1"),
        ("docker-ferrol-1-27-1", "invalid release name \"docker-ferrol-1-27-1\": invalid version \"1\": expected vN or vN-<channel>-<patch> (dash form), e.g. v1, v1-alpha-1, v0-sha-hipstsw"),
        ("docker-ferrol-1-27-v1-stable-1", "invalid release name \"docker-ferrol-1-27-v1-stable-1\": invalid version \"v1-stable-1\": the stable channel is written without a suffix (vN)"),
    ];
    for (tag, want) in cases {
        assert_eq!(
            ReleaseName::parse_tag(tag).expect_err(tag).to_string(),
            want,
            "{tag}"
        );
    }
    assert!(
        ReleaseName::parse_class("docker-ferrol-1-27-v0-sha-x").is_err(),
        "dash form is not a class name"
    );
    assert!(ReleaseName::parse_class("docker-ferrol-1-27-v1-alpha").is_err());
    assert_eq!(
        ReleaseName::new("my-provider", "ferrol", "1.27", "v1").expect_err("dash").to_string(),
        "invalid provider \"my-provider\": use lowercase letters and digits only (it is the first segment of release names)"
    );
    assert!(
        ReleaseName::new("docker", "ferrol", "1.27", "v1-alpha-1").is_err(),
        "versions in spec are dot form"
    );
}

#[test]
fn hash_class_and_tag_refer_to_the_same_release() {
    // Upstream compared these two strings literally and concluded "not in use" (§9.4).
    let class = ReleaseName::parse_class("docker-ferrol-1-27-v0-sha.hipstsw").expect("class");
    let tag = ReleaseName::parse_tag("docker-ferrol-1-27-v0-sha-hipstsw").expect("tag");
    assert_eq!(class, tag);
}
