//! Which ClusterStackReleases a ClusterStack should have: upstream's `makeDiff`,
//! `getLatestReadyClusterStackRelease` and the status strings (cso-behaviour.md §2.1 steps 5-15), as a
//! pure function over parsed names.
//!
//! Fixed quirks: every comparison is between parsed release names, so a hash release used by a Cluster
//! (`...-v0-sha.abc` class, dot form) is recognised as the release `...-v0-sha-abc` and kept (§9.4);
//! objects whose names do not parse are kept and reported instead of failing the whole reconcile.

use std::collections::BTreeSet;

use super::name::{NameError, ReleaseName};
use super::select::StackKey;
use super::version::Version;

/// An existing ClusterStackRelease owned by the ClusterStack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingRelease {
    /// Object name (the release tag).
    pub name: String,
    /// `status.ready`.
    pub ready: bool,
    /// `status.kubernetesVersion`, e.g. `v1.27.3`.
    pub kubernetes_version: String,
}

/// What the ClusterStack controller should do and report.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReleasePlan {
    /// Tags that must exist (created when missing), sorted.
    pub desired: Vec<String>,
    /// Existing objects to delete, sorted.
    pub delete: Vec<String>,
    /// `status.latestRelease`: `"<latest ready, dot form> | <its Kubernetes version>"`, or empty.
    pub latest_release: String,
    /// `status.usableVersions`: versions of the ready releases that are kept, dot form, ascending,
    /// joined with `", "`.
    pub usable_versions: String,
    /// Whether some release is ready (`ClusterStackReleaseAvailable`).
    pub available: bool,
    /// Existing objects whose names are not release tags (kept, reported as a Warning event).
    pub unparsable: Vec<(String, NameError)>,
}

/// Plans the releases of `stack`.
///
/// - `existing`: ClusterStackReleases owned by the ClusterStack.
/// - `latest_remote`: newest release in the source (autoSubscribe), if any.
/// - `spec_versions`: `spec.versions` (dot form); an invalid entry is an error naming it.
/// - `in_use_classes`: `spec.topology.class` of the Clusters in the namespace.
/// - `channel`: `spec.channel`, preferred when choosing the latest ready release.
pub fn plan_releases(
    stack: &StackKey,
    channel: &str,
    existing: &[ExistingRelease],
    latest_remote: Option<&ReleaseName>,
    spec_versions: &[String],
    in_use_classes: &[String],
) -> Result<ReleasePlan, NameError> {
    let mut plan = ReleasePlan::default();
    let mut parsed: Vec<(&ExistingRelease, ReleaseName)> = Vec::new();
    for e in existing {
        match ReleaseName::parse_tag(&e.name) {
            Ok(n) => parsed.push((e, n)),
            Err(err) => plan.unparsable.push((e.name.clone(), err)),
        }
    }

    // Latest ready: the newest ready release of the ClusterStack's channel, else the newest ready one.
    let ready: Vec<&(&ExistingRelease, ReleaseName)> = parsed.iter().filter(|(e, _)| e.ready).collect();
    let latest_ready = ready
        .iter()
        .filter(|(_, n)| n.version.channel() == channel)
        .max_by(|a, b| a.1.version.cmp(&b.1.version))
        .or_else(|| ready.iter().max_by(|a, b| a.1.version.cmp(&b.1.version)));
    if let Some((e, n)) = latest_ready {
        plan.latest_release = format!("{} | {}", n.class_name(), e.kubernetes_version);
        plan.available = true;
    }
    let mut in_spec = BTreeSet::new();
    for v in spec_versions {
        in_spec.insert(ReleaseName::new(
            &stack.provider,
            &stack.name,
            &stack.kubernetes.dot(),
            v,
        )?);
    }
    let in_use: BTreeSet<ReleaseName> = in_use_classes
        .iter()
        .filter_map(|c| ReleaseName::parse_class(c).ok())
        .filter(|n| n.provider == stack.provider && n.name == stack.name)
        .collect();

    let mut desired: BTreeSet<ReleaseName> = BTreeSet::new();
    for (e, n) in &parsed {
        let keep = latest_remote == Some(n)
            || latest_ready.is_some_and(|(_, l)| l == n)
            || in_spec.contains(n)
            || in_use.contains(n);
        if keep {
            desired.insert(n.clone());
        } else {
            plan.delete.push(e.name.clone());
        }
    }
    // Usable: ready releases that stay (upstream listed the ones it was about to delete too, #57).
    let mut usable: Vec<&Version> = ready
        .iter()
        .filter(|(_, n)| desired.contains(n))
        .map(|(_, n)| &n.version)
        .collect();
    usable.sort();
    plan.usable_versions = usable.iter().map(|v| v.dot()).collect::<Vec<_>>().join(", ");
    desired.extend(latest_remote.cloned());
    desired.extend(in_spec);
    plan.desired = desired.iter().map(ReleaseName::tag).collect();
    plan.desired.sort();
    plan.delete.sort();
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::release::version::KubernetesVersion;

    fn stack() -> StackKey {
        StackKey {
            provider: "docker".into(),
            name: "ferrol".into(),
            kubernetes: KubernetesVersion { major: 1, minor: 21 },
        }
    }

    fn e(name: &str, ready: bool) -> ExistingRelease {
        ExistingRelease {
            name: name.into(),
            ready,
            kubernetes_version: "v1.21.5".into(),
        }
    }

    fn tag(s: &str) -> ReleaseName {
        ReleaseName::parse_tag(s).expect("tag")
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    /// Upstream's TestMakeDiff cases.
    #[test]
    fn upstream_make_diff_cases() {
        let (r1, r2, r3, r4) = (
            "docker-ferrol-1-21-v1",
            "docker-ferrol-1-21-v2",
            "docker-ferrol-1-21-v3",
            "docker-ferrol-1-21-v4",
        );
        // latest (r3) != latest ready (r2), r2 in use, spec adds r4 -> keep r2, create r3 r4, delete r1.
        let p = plan_releases(
            &stack(),
            "stable",
            &[e(r1, false), e(r2, true)],
            Some(&tag(r3)),
            &strings(&["v4"]),
            &strings(&[r2]),
        )
        .expect("plan");
        assert_eq!(p.desired, [r2, r3, r4]);
        assert_eq!(p.delete, [r1]);
        // latest = latest ready = r3 in use, spec r4 -> delete r1 r2.
        let p = plan_releases(
            &stack(),
            "stable",
            &[e(r1, false), e(r2, false), e(r3, true)],
            Some(&tag(r3)),
            &strings(&["v4"]),
            &strings(&[r3]),
        )
        .expect("plan");
        assert_eq!(
            (p.desired.clone(), p.delete.clone()),
            (strings(&[r3, r4]), strings(&[r1, r2]))
        );
        // latest = latest ready = r4, r3 in use, empty spec.
        let p = plan_releases(
            &stack(),
            "stable",
            &[e(r1, false), e(r2, false), e(r3, false), e(r4, true)],
            Some(&tag(r4)),
            &[],
            &strings(&[r3]),
        )
        .expect("plan");
        assert_eq!((p.desired, p.delete), (strings(&[r3, r4]), strings(&[r1, r2])));
    }

    #[test]
    fn status_strings_and_numeric_order() {
        let existing = [
            e("docker-ferrol-1-21-v9", true),
            e("docker-ferrol-1-21-v10", true),
            e("docker-ferrol-1-21-v3", false),
        ];
        let p = plan_releases(&stack(), "stable", &existing, None, &[], &[]).expect("plan");
        assert_eq!(p.latest_release, "docker-ferrol-1-21-v10 | v1.21.5");
        assert_eq!(
            p.usable_versions, "v10",
            "v9 is ready but neither latest, pinned nor in use"
        );
        assert!(p.available);
        assert_eq!(p.delete, ["docker-ferrol-1-21-v3", "docker-ferrol-1-21-v9"]);
        let pinned =
            plan_releases(&stack(), "stable", &existing, None, &strings(&["v9"]), &[]).expect("plan");
        assert_eq!(pinned.usable_versions, "v9, v10");
        let none = plan_releases(
            &stack(),
            "stable",
            &[e("docker-ferrol-1-21-v3", false)],
            None,
            &[],
            &[],
        )
        .expect("plan");
        assert_eq!(
            (
                none.latest_release.as_str(),
                none.usable_versions.as_str(),
                none.available
            ),
            ("", "", false)
        );
    }

    #[test]
    fn hash_release_in_use_by_its_class_name_is_kept() {
        let existing = [
            e("docker-ferrol-1-21-v0-sha-abcdef1", true),
            e("docker-ferrol-1-21-v0-sha-1234567", false),
        ];
        let p = plan_releases(
            &stack(),
            "custom",
            &existing,
            None,
            &[],
            &strings(&["docker-ferrol-1-21-v0-sha.abcdef1"]),
        )
        .expect("plan");
        assert_eq!(p.desired, ["docker-ferrol-1-21-v0-sha-abcdef1"]);
        assert_eq!(p.delete, ["docker-ferrol-1-21-v0-sha-1234567"]);
        assert_eq!(
            p.latest_release, "docker-ferrol-1-21-v0-sha.abcdef1 | v1.21.5",
            "dot form, as upstream #221 asked"
        );
        // Pinned hash versions are accepted in dot form.
        let p =
            plan_releases(&stack(), "custom", &[], None, &strings(&["v0-sha.abcdef1"]), &[]).expect("plan");
        assert_eq!(p.desired, ["docker-ferrol-1-21-v0-sha-abcdef1"]);
    }

    #[test]
    fn bad_names_are_reported_not_fatal_and_bad_spec_versions_are_errors() {
        let p = plan_releases(
            &stack(),
            "stable",
            &[e("hand-made", true)],
            None,
            &[],
            &strings(&["garbage"]),
        )
        .expect("plan");
        assert_eq!(p.unparsable.len(), 1);
        assert!(
            p.delete.is_empty(),
            "objects that are not release tags are never deleted"
        );
        let err = plan_releases(&stack(), "stable", &[], None, &strings(&["v1", "1.0"]), &[])
            .expect_err("bad version");
        assert_eq!(
            err.to_string(),
            "invalid release name \"docker-ferrol-1.21-1.0\": invalid version \"1.0\": expected vN or vN-<channel>.<patch> (dot form), e.g. v1, v1-alpha.1, v0-sha.hipstsw"
        );
    }
}
