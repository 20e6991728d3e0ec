//! Cluster stack versions (`v1`, `v1-alpha.1`, `v0-sha.hipstsw`) and Kubernetes `<major>.<minor>`.
//!
//! Grammar and string forms are upstream's (`pkg/version`, `pkg/kubernetesversion`, cso-behaviour.md
//! §3.3/§3.4). Fixed quirks: patches compare numerically when both are numbers (upstream compared
//! strings, so `10 < 9`, §9.5); Kubernetes majors may have several digits (§9.17); a version whose
//! explicit channel word is `stable` is rejected, because its dash form would silently drop the patch.

use std::cmp::Ordering;
use std::fmt;

/// The channel of versions without a suffix (`v1`, `v2`, ...).
pub const STABLE: &str = "stable";

/// A version string that does not follow the grammar, or two versions that cannot be compared.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Not `vN` or `vN-<channel>.<patch>` (dot form).
    #[error("invalid version {0:?}: expected vN or vN-<channel>.<patch> (dot form), e.g. v1, v1-alpha.1, v0-sha.hipstsw")]
    InvalidDotForm(String),
    /// Not `vN` or `vN-<channel>-<patch>` (dash form).
    #[error("invalid version {0:?}: expected vN or vN-<channel>-<patch> (dash form), e.g. v1, v1-alpha-1, v0-sha-hipstsw")]
    InvalidDashForm(String),
    /// `v1-stable.1`: the stable channel has no patch part.
    #[error("invalid version {0:?}: the stable channel is written without a suffix (vN)")]
    ExplicitStable(String),
    /// Versions of different channels have no order.
    #[error("cannot compare versions with different channels {0} and {1}")]
    DifferentChannels(String, String),
    /// Not `<major>.<minor>`.
    #[error("invalid Kubernetes version {0:?}: expected <major>.<minor> with numbers, e.g. 1.32")]
    InvalidKubernetes(String),
    /// A Kubernetes major version of 0.
    #[error("invalid Kubernetes version {0:?}: the major version must be at least 1")]
    ZeroKubernetesMajor(String),
}

/// A cluster stack version: major, channel (`stable` or the word before the patch) and patch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Version {
    major: u64,
    /// `None` for stable; otherwise (channel, patch).
    pre: Option<(String, String)>,
}

fn is_word(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl Version {
    /// Parses the dot form (`v1`, `v1-alpha.1`, `v0-sha.hipstsw`), as in `spec.versions` and ClusterClass names.
    pub fn parse_dot(s: &str) -> Result<Self, VersionError> {
        Self::parse_with(s, '.').map_err(|e| e.unwrap_or_else(|| VersionError::InvalidDotForm(s.to_owned())))
    }

    /// Parses the dash form (`v1`, `v1-alpha-1`, `v0-sha-hipstsw`), as in release tags.
    pub fn parse_dash(s: &str) -> Result<Self, VersionError> {
        Self::parse_with(s, '-').map_err(|e| e.unwrap_or_else(|| VersionError::InvalidDashForm(s.to_owned())))
    }

    fn parse_with(s: &str, sep: char) -> Result<Self, Option<VersionError>> {
        let rest = s.strip_prefix('v').ok_or(None)?;
        let (major, suffix) = match rest.split_once('-') {
            Some((m, suffix)) => (m, Some(suffix)),
            None => (rest, None),
        };
        if major.is_empty() || !major.chars().all(|c| c.is_ascii_digit()) {
            return Err(None);
        }
        let major: u64 = major.parse().map_err(|_| None)?;
        let pre = match suffix {
            None => None,
            Some(suffix) => {
                let (channel, patch) = suffix.split_once(sep).ok_or(None)?;
                if !is_word(channel) || !is_word(patch) {
                    return Err(None);
                }
                if channel == STABLE {
                    return Err(Some(VersionError::ExplicitStable(s.to_owned())));
                }
                Some((channel.to_owned(), patch.to_owned()))
            }
        };
        Ok(Self { major, pre })
    }

    /// A stable version `vN`.
    pub fn stable(major: u64) -> Self {
        Self { major, pre: None }
    }

    /// The major number.
    pub fn major(&self) -> u64 {
        self.major
    }

    /// `stable`, or the channel word (`alpha`, `sha`, `custom`, ...).
    pub fn channel(&self) -> &str {
        self.pre.as_ref().map_or(STABLE, |(c, _)| c.as_str())
    }

    /// The patch part (empty for stable versions).
    pub fn patch(&self) -> &str {
        self.pre.as_ref().map_or("", |(_, p)| p.as_str())
    }

    /// Whether this is a hash version (`v0-sha.<hash>`, csctl's hash mode).
    pub fn is_hash(&self) -> bool {
        self.channel() == "sha"
    }

    /// Dash form: `v1`, `v1-alpha-1` (release tags, ClusterStack status summary names).
    pub fn dash(&self) -> String {
        match &self.pre {
            None => format!("v{}", self.major),
            Some((c, p)) => format!("v{}-{c}-{p}", self.major),
        }
    }

    /// Dot form: `v1`, `v1-alpha.1` (ClusterClass names, `spec.versions`, chart versions).
    pub fn dot(&self) -> String {
        match &self.pre {
            None => format!("v{}", self.major),
            Some((c, p)) => format!("v{}-{c}.{p}", self.major),
        }
    }

    /// Order within one channel: major numerically, then patch (numerically when both are numbers).
    pub fn compare(&self, other: &Self) -> Result<Ordering, VersionError> {
        if self.channel() != other.channel() {
            return Err(VersionError::DifferentChannels(
                self.channel().to_owned(),
                other.channel().to_owned(),
            ));
        }
        Ok(self
            .major
            .cmp(&other.major)
            .then_with(|| compare_patch(self.patch(), other.patch())))
    }
}

/// Numbers before words, numbers numerically, words (hashes) by string, so the order is total.
fn compare_patch(a: &str, b: &str) -> Ordering {
    fn num(s: &str) -> Option<&str> {
        (!s.is_empty() && s.chars().all(|c| c.is_ascii_digit())).then(|| s.trim_start_matches('0'))
    }
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x.len().cmp(&y.len()).then_with(|| x.cmp(y)),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

impl fmt::Display for Version {
    /// The dot form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dot())
    }
}

/// Total order for deterministic sorting: channel name, then [`Version::compare`] within a channel.
/// Use [`Version::compare`] where versions of different channels must not be ordered.
impl Ord for Version {
    fn cmp(&self, other: &Self) -> Ordering {
        self.channel()
            .cmp(other.channel())
            .then_with(|| self.major.cmp(&other.major))
            .then_with(|| compare_patch(self.patch(), other.patch()))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Kubernetes `<major>.<minor>` of a cluster stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KubernetesVersion {
    /// Major, at least 1.
    pub major: u32,
    /// Minor.
    pub minor: u32,
}

fn parse_number(s: &str) -> Option<u32> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0')) {
        return None;
    }
    s.parse().ok()
}

impl KubernetesVersion {
    /// From the two numbers of a release tag (`"1"`, `"27"`).
    pub fn from_parts(major: &str, minor: &str) -> Result<Self, VersionError> {
        let whole = format!("{major}.{minor}");
        let (Some(major), Some(minor)) = (parse_number(major), parse_number(minor)) else {
            return Err(VersionError::InvalidKubernetes(whole));
        };
        if major == 0 {
            return Err(VersionError::ZeroKubernetesMajor(whole));
        }
        Ok(Self { major, minor })
    }

    /// From `<major>.<minor>` as in `spec.kubernetesVersion`.
    pub fn parse_dot(s: &str) -> Result<Self, VersionError> {
        let (major, minor) = s
            .split_once('.')
            .ok_or_else(|| VersionError::InvalidKubernetes(s.to_owned()))?;
        Self::from_parts(major, minor).map_err(|e| match e {
            VersionError::InvalidKubernetes(_) => VersionError::InvalidKubernetes(s.to_owned()),
            VersionError::ZeroKubernetesMajor(_) => VersionError::ZeroKubernetesMajor(s.to_owned()),
            other => other,
        })
    }

    /// From a full version with optional `v` and patch, as in `metadata.yaml` (`v1.27.3`).
    pub fn parse_full(s: &str) -> Result<Self, VersionError> {
        let bad = || VersionError::InvalidKubernetes(s.to_owned());
        let rest = s.strip_prefix('v').unwrap_or(s);
        let mut parts = rest.splitn(3, '.');
        let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        // The patch may carry a pre-release (`3-rc.1`); only its presence is checked here.
        if let Some(patch) = parts.next() {
            let digits = patch.split(['-', '+']).next().unwrap_or("");
            if parse_number(digits).is_none() {
                return Err(bad());
            }
        }
        Self::from_parts(major, minor).map_err(|_| bad())
    }

    /// `1-27` (release tags).
    pub fn dash(&self) -> String {
        format!("{}-{}", self.major, self.minor)
    }

    /// `1.27` (`spec.kubernetesVersion`).
    pub fn dot(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for KubernetesVersion {
    /// The dot form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dot())
    }
}
