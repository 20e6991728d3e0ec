//! CEL pre/post conditions of multi-stage addons (cso-behaviour.md §2.4.4): each listed workload object is
//! bound to its `key` as a map, and the expression must evaluate to `true`.
//!
//! Unlike upstream, an object that does not exist (yet) holds the stage ("waiting for it") instead of
//! failing it, so a condition can wait for an object to appear; compile errors name the expression.

use std::sync::Arc;

use cel::{Context, Env, Program};
use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiResource, Discovery};
use serde_json::Value;

use crate::release::assets::StageCondition;

/// What evaluating a condition found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The expression is true.
    Met,
    /// Not yet: false, non-bool, or an object is missing; the message says which.
    Waiting(String),
    /// The condition cannot ever be evaluated as written (compile error, unknown kind).
    Invalid(String),
}

fn env() -> Arc<Env> {
    static ENV: std::sync::OnceLock<Arc<Env>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Env::stdlib();
        let _ = env.add_extension(cel::extensions::strings);
        let _ = env.add_extension(cel::extensions::lists);
        Arc::new(env)
    })
    .clone()
}

/// Compiles the expression; the parser never takes the controller down.
fn compile(text: &str) -> Result<Program, String> {
    let owned = text.to_owned();
    std::panic::catch_unwind(move || env().compile(&owned))
        .map_err(|_| "the CEL parser gave up on this expression".to_owned())
        .and_then(|r| r.map_err(|e| e.to_string()))
}

/// Evaluates `expression` with the given variables (pure: no I/O).
pub fn evaluate(expression: &str, variables: &[(String, Value)]) -> Outcome {
    let program = match compile(expression) {
        Ok(p) => p,
        Err(e) => return Outcome::Invalid(format!("cannot compile {expression:?}: {e}")),
    };
    let variables: Vec<(String, cel::Value)> = variables
        .iter()
        .map(|(k, v)| (k.clone(), kube_emulator::cel::to_cel(v)))
        .collect();
    let run = move || {
        let mut ctx = Context::with_env(env());
        for (k, v) in variables {
            ctx.add_variable_from_value(k, v);
        }
        program.execute(&ctx).map_err(|e| e.to_string())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(Ok(cel::Value::Bool(true))) => Outcome::Met,
        Ok(Ok(cel::Value::Bool(false))) => Outcome::Waiting(format!("{expression} is false")),
        Ok(Ok(other)) => Outcome::Waiting(format!("{expression} evaluated to {other:?}, not a bool")),
        // Missing fields (`status.readyReplicas` before the first status) are "not yet", not invalid.
        Ok(Err(e)) => Outcome::Waiting(format!("{expression}: {e}")),
        Err(_) => Outcome::Invalid(format!("the CEL interpreter failed on {expression:?}")),
    }
}

/// Fetches the condition's objects from the workload cluster and evaluates it.
pub async fn check(workload: &kube::Client, condition: &StageCondition) -> Outcome {
    let mut variables = Vec::new();
    for object in &condition.objects {
        let (group, version) = crate::apply::split_api_version(&object.api_version);
        let resource = match resolve(workload, group, version, &object.kind).await {
            Ok(Some(r)) => r,
            Ok(None) => {
                return Outcome::Waiting(format!(
                    "{} {} is not served yet (waiting for its CRD)",
                    object.api_version, object.kind
                ))
            }
            Err(e) => return Outcome::Waiting(e),
        };
        let namespace = if object.namespace.is_empty() {
            super::ADDON_NAMESPACE
        } else {
            &object.namespace
        };
        let api: Api<DynamicObject> = if resource.1 {
            Api::namespaced_with(workload.clone(), namespace, &resource.0)
        } else {
            Api::all_with(workload.clone(), &resource.0)
        };
        let where_ = if resource.1 {
            format!("{} {namespace}/{}", object.kind, object.name)
        } else {
            format!("{} {}", object.kind, object.name)
        };
        match api.get_opt(&object.name).await {
            Ok(Some(found)) => match serde_json::to_value(found) {
                Ok(v) => variables.push((object.key.clone(), v)),
                Err(e) => return Outcome::Waiting(format!("{where_}: {e}")),
            },
            Ok(None) => return Outcome::Waiting(format!("{where_} does not exist yet")),
            Err(e) => return Outcome::Waiting(format!("cannot read {where_}: {e}")),
        }
    }
    evaluate(&condition.conditions, &variables)
}

/// The resource for a kind and whether it is namespaced; `None` when the server does not serve it.
async fn resolve(
    client: &kube::Client,
    group: &str,
    version: &str,
    kind: &str,
) -> Result<Option<(ApiResource, bool)>, String> {
    let discovery = Discovery::new(client.clone())
        .filter(&[group])
        .run()
        .await
        .map_err(|e| format!("discovery of {group:?} in the workload cluster: {e}"))?;
    let found = discovery
        .groups()
        .find(|g| g.name() == group)
        .and_then(|g| {
            g.versioned_resources(version)
                .into_iter()
                .find(|(r, _)| r.kind == kind)
        })
        .map(|(r, caps)| (r, caps.scope == kube::discovery::Scope::Namespaced));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn evaluates_over_named_objects() {
        let vars = vec![
            ("a".to_owned(), json!({"spec": {"replicas": 2}})),
            ("b".to_owned(), json!({"spec": {"replicas": 2}, "status": {}})),
        ];
        assert_eq!(
            evaluate("a.spec.replicas == b.spec.replicas", &vars),
            Outcome::Met
        );
        assert!(
            matches!(evaluate("a.spec.replicas == 3", &vars), Outcome::Waiting(m) if m.contains("is false"))
        );
        assert!(matches!(
            evaluate("b.status.readyReplicas == 2", &vars),
            Outcome::Waiting(_)
        ));
        assert!(
            matches!(evaluate("a.spec.replicas", &vars), Outcome::Waiting(m) if m.contains("not a bool"))
        );
        assert!(
            matches!(evaluate("a.spec.replicas ==", &vars), Outcome::Invalid(m) if m.contains("cannot compile"))
        );
    }
}
