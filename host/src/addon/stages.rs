//! The pure part of a multi-stage addon run (cso-behaviour.md §2.4.3–2.4.5): which stages a hook runs,
//! their initial status, and at the end which objects remain applied and which are stale.

use std::collections::BTreeMap;

use crate::api::{Resource, StageStatus};
use crate::apply::ObjectKey;
use crate::release::assets::{AddonStage, ClusterAddonConfig, StageAction};

/// Stage phases (upstream's strings).
pub mod phase {
    /// Not started.
    pub const PENDING: &str = "Pending";
    /// Waiting for `waitForPreCondition`.
    pub const WAITING_FOR_PRE_CONDITION: &str = "waitingForPreCondition";
    /// Applying or deleting the chart's objects.
    pub const APPLYING_OR_DELETING: &str = "applyingOrDeleting";
    /// Waiting for `waitForPostCondition`.
    pub const WAITING_FOR_POST_CONDITION: &str = "waitingForPostCondition";
    /// Finished.
    pub const DONE: &str = "done";
}

/// `apply` or `delete`, as written in `status.stages[].action`.
pub fn action_name(action: StageAction) -> &'static str {
    match action {
        StageAction::Apply => "apply",
        StageAction::Delete => "delete",
    }
}

/// The stages of `hook`; a release that lists no `BeforeClusterUpgrade` stages upgrades with its
/// `AfterControlPlaneInitialized` stages (the full set of addons), so an upgrade never prunes everything.
pub fn stages_for<'a>(config: &'a ClusterAddonConfig, hook: &'a str) -> (&'a str, &'a [AddonStage]) {
    for candidate in [hook, super::HOOK_AFTER_CONTROL_PLANE_INITIALIZED] {
        if let Some((name, stages)) = config
            .addon_stages
            .get_key_value(candidate)
            .filter(|(_, s)| !s.is_empty())
        {
            return (name.as_str(), stages.as_slice());
        }
    }
    (hook, &[])
}

/// `status.stages` at the start of a run: every stage `Pending`.
pub fn initial_stages(stages: &[AddonStage]) -> Vec<StageStatus> {
    stages
        .iter()
        .map(|s| StageStatus {
            name: s.name.clone(),
            action: action_name(s.action).to_owned(),
            phase: phase::PENDING.to_owned(),
            resources: Vec::new(),
        })
        .collect()
}

/// Whether `status.stages` still describes `stages` (a release edited under a running hook does not).
pub fn matches(status: &[StageStatus], stages: &[AddonStage]) -> bool {
    status.len() == stages.len()
        && status
            .iter()
            .zip(stages)
            .all(|(st, s)| st.name == s.name && st.action == action_name(s.action))
}

/// The end of a run: the objects applied by the run's `apply` stages (minus those a later `delete`
/// stage removed), and the objects of `previous` (what was applied before the run) that are neither,
/// i.e. stale and to be deleted.
pub fn outcome(previous: &[Resource], stages: &[StageStatus]) -> (Vec<Resource>, Vec<Resource>) {
    let mut applied: BTreeMap<ObjectKey, Resource> = BTreeMap::new();
    let mut deleted: BTreeMap<ObjectKey, Resource> = BTreeMap::new();
    for stage in stages {
        for r in &stage.resources {
            let key = ObjectKey::of_resource(r);
            if stage.action == "delete" {
                applied.remove(&key);
                deleted.insert(key, r.clone());
            } else {
                deleted.remove(&key);
                applied.insert(key, r.clone());
            }
        }
    }
    let stale = previous
        .iter()
        .filter(|r| {
            let key = ObjectKey::of_resource(r);
            !applied.contains_key(&key) && !deleted.contains_key(&key)
        })
        .cloned()
        .collect();
    (applied.into_values().collect(), stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(kind: &str, name: &str) -> Resource {
        Resource {
            version: "v1".into(),
            kind: kind.into(),
            namespace: "kube-system".into(),
            name: name.into(),
            ..Default::default()
        }
    }

    fn stage(action: &str, resources: Vec<Resource>) -> StageStatus {
        StageStatus {
            name: "s".into(),
            action: action.into(),
            phase: phase::DONE.into(),
            resources,
        }
    }

    #[test]
    fn stale_objects_are_what_the_run_no_longer_applies() {
        let previous = vec![
            res("ConfigMap", "a"),
            res("ConfigMap", "b"),
            res("ConfigMap", "c"),
        ];
        let stages = vec![
            stage("apply", vec![res("ConfigMap", "a"), res("Secret", "b")]),
            stage("delete", vec![res("ConfigMap", "c")]),
        ];
        let (applied, stale) = outcome(&previous, &stages);
        assert_eq!(applied, vec![res("ConfigMap", "a"), res("Secret", "b")]);
        // `ConfigMap b` is gone from the release (a Secret of the same name does not keep it);
        // `c` was deleted by its stage already.
        assert_eq!(stale, vec![res("ConfigMap", "b")]);
    }

    #[test]
    fn a_later_apply_stage_revives_a_deleted_object() {
        let stages = vec![
            stage("delete", vec![res("ConfigMap", "a")]),
            stage("apply", vec![res("ConfigMap", "a")]),
        ];
        let (applied, stale) = outcome(&[], &stages);
        assert_eq!(applied, vec![res("ConfigMap", "a")]);
        assert!(stale.is_empty());
    }

    #[test]
    fn upgrade_without_its_own_stages_uses_the_create_stages() {
        let config: ClusterAddonConfig = serde_yaml::from_str(
            "addonStages:\n  AfterControlPlaneInitialized:\n    - {name: cni, action: apply}\n",
        )
        .expect("config");
        let (hook, stages) = stages_for(&config, super::super::HOOK_BEFORE_CLUSTER_UPGRADE);
        assert_eq!(hook, "AfterControlPlaneInitialized");
        assert_eq!(stages.len(), 1);
        assert_eq!(initial_stages(stages)[0].phase, "Pending");
    }
}
