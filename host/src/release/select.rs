//! Choosing releases: the newest release of a stack and channel among a source's tags
//! (upstream `getLatestReleaseFromRemoteRepository`), by parsed comparison.

use super::name::{NameError, ReleaseName};
use super::version::KubernetesVersion;

/// The stack a ClusterStack follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackKey {
    /// Provider.
    pub provider: String,
    /// Cluster stack name.
    pub name: String,
    /// Kubernetes minor.
    pub kubernetes: KubernetesVersion,
}

/// Outcome of [`latest_release`]: the newest match, and the tags that did not parse (upstream emitted a
/// `FailedToParseClusterStackRelease` Warning event per such tag and skipped it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Latest {
    /// Newest release of the stack and channel, if any.
    pub latest: Option<ReleaseName>,
    /// Tags that are not release names, with the reason.
    pub unparsable: Vec<(String, NameError)>,
}

/// The newest release among `tags` for `stack` whose parsed channel is `channel` (`stable`, `custom`, ...).
///
/// Hash releases (`v0-sha.<hash>`) have channel `sha` and no order, so they are never picked here:
/// they are used by pinning them in `spec.versions` (as upstream, where channel `custom` never matched them).
pub fn latest_release<'a>(
    tags: impl IntoIterator<Item = &'a str>,
    stack: &StackKey,
    channel: &str,
) -> Latest {
    let mut out = Latest::default();
    for tag in tags {
        match ReleaseName::parse_tag(tag) {
            Err(e) => out.unparsable.push((tag.to_owned(), e)),
            Ok(r) => {
                if r.provider != stack.provider
                    || r.name != stack.name
                    || r.kubernetes != stack.kubernetes
                    || r.version.channel() != channel
                {
                    continue;
                }
                let newer = match &out.latest {
                    None => true,
                    Some(cur) => r.version.compare(&cur.version).is_ok_and(|o| o.is_gt()),
                };
                if newer {
                    out.latest = Some(r);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> StackKey {
        StackKey {
            provider: "docker".into(),
            name: "ferrol".into(),
            kubernetes: KubernetesVersion::parse_dot(k).expect("k8s"),
        }
    }

    #[test]
    fn picks_numerically_newest_of_channel_and_stack() {
        let tags = [
            "docker-ferrol-1-27-v9",
            "docker-ferrol-1-27-v10",
            "docker-ferrol-1-28-v11",
            "openstack-ferrol-1-27-v12",
            "docker-ferrol-1-27-v13-custom-1",
            "docker-ferrol-1-27-v0-sha-abcdef1",
            "not-a-release",
        ];
        let got = latest_release(tags, &key("1.27"), "stable");
        assert_eq!(got.latest.map(|r| r.tag()), Some("docker-ferrol-1-27-v10".into()));
        assert_eq!(got.unparsable.len(), 1);
        assert_eq!(got.unparsable[0].0, "not-a-release");

        let custom = latest_release(
            [
                "docker-ferrol-1-27-v1-custom-9",
                "docker-ferrol-1-27-v1-custom-10",
                "docker-ferrol-1-27-v1",
            ],
            &key("1.27"),
            "custom",
        );
        assert_eq!(
            custom.latest.map(|r| r.tag()),
            Some("docker-ferrol-1-27-v1-custom-10".into())
        );
        assert_eq!(
            latest_release(["docker-ferrol-1-27-v0-sha-abc"], &key("1.27"), "custom").latest,
            None
        );
    }

    #[test]
    fn multi_digit_kubernetes_majors_and_minors() {
        let got = latest_release(
            [
                "docker-ferrol-10-1-v2",
                "docker-ferrol-1-10-v3",
                "docker-ferrol-1-1-v4",
            ],
            &key("1.10"),
            "stable",
        );
        assert_eq!(got.latest.map(|r| r.tag()), Some("docker-ferrol-1-10-v3".into()));
        assert_eq!(
            latest_release(["docker-ferrol-10-1-v2"], &key("10.1"), "stable")
                .latest
                .map(|r| r.tag()),
            Some("docker-ferrol-10-1-v2".into())
        );
    }
}
