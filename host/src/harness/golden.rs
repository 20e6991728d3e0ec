//! Golden outputs: a call's outcome as a YAML document spelled like wit/types.wit, compared by value
//! and shown as a line diff when it differs.
//!
//! `expected.yaml` holds exactly one of `ok: <result>`, `error: {<error case>: ...}` (the plugin's own
//! typed error) or `failure: <Kind>` (a trap or a limit, e.g. `OutOfFuel`). Strings that carry JSON
//! (patched objects, addon values) are shown as YAML.

use serde_json::{json, Map, Value};

use crate::plugin::types::{Capability, Error as WitError, ImageState, ImageStatus, PluginInfo};
use crate::plugin::{GuestError, PluginError};

/// The outcome of a typed call as a golden document.
pub fn outcome<T>(result: &Result<Result<T, GuestError>, PluginError>, ok: impl Fn(&T) -> Value) -> Value {
    match result {
        Ok(Ok(value)) => json!({ "ok": ok(value) }),
        Ok(Err(GuestError(error))) => json!({ "error": error_value(error) }),
        Err(failure) => json!({ "failure": failure.kind() }),
    }
}

pub fn error_value(error: &WitError) -> Value {
    match error {
        WitError::InvalidInput(m) => json!({ "invalid-input": m }),
        WitError::NotReady(r) => {
            json!({ "not-ready": { "retry-after-seconds": r.retry_after_seconds, "message": r.message } })
        }
        WitError::Denied(m) => json!({ "denied": m }),
        WitError::Failed(m) => json!({ "failed": m }),
    }
}

pub fn info_value(info: &PluginInfo) -> Value {
    let capabilities: Vec<&str> = info
        .capabilities
        .iter()
        .map(|c| match c {
            Capability::Log => "log",
            Capability::Http => "http",
            Capability::Secrets => "secrets",
            Capability::State => "state",
        })
        .collect();
    json!({
        "name": info.name,
        "version": info.version,
        "provider": info.provider,
        "capabilities": capabilities,
    })
}

pub fn statuses_value(statuses: &[ImageStatus]) -> Value {
    Value::Array(
        statuses
            .iter()
            .map(|s| {
                let state = match &s.state {
                    ImageState::Pending(r) => json!({
                        "pending": { "retry-after-seconds": r.retry_after_seconds, "message": r.message }
                    }),
                    ImageState::Ready(id) => json!({ "ready": id }),
                    ImageState::Failed(why) => json!({ "failed": why }),
                };
                json!({ "name": s.name, "state": state })
            })
            .collect(),
    )
}

/// A JSON text as a value (so it reads as YAML); text that is not JSON stays a string.
pub fn json_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

pub fn state_value(state: &std::collections::BTreeMap<String, String>) -> Value {
    Value::Object(
        state
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect::<Map<_, _>>(),
    )
}

/// YAML text of a golden document, as `--bless` writes it.
pub fn to_yaml(value: &Value) -> String {
    serde_yaml::to_string(value).unwrap_or_else(|e| format!("# cannot print as YAML: {e}\n"))
}

/// A readable line diff of two YAML texts (`-` expected, `+` actual) with three lines of context.
pub fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    // Longest common subsequence table; golden files are small, and the cut-off keeps it so.
    if a.len() * b.len() > 4_000_000 {
        return format!("--- expected\n{expected}\n+++ actual\n{actual}");
    }
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    const CONTEXT: usize = 3;
    let changed: Vec<usize> = (0..ops.len()).filter(|&k| ops[k].0 != ' ').collect();
    let mut out = String::from("--- expected\n+++ actual\n");
    let mut last_shown: Option<usize> = None;
    for (k, (mark, line)) in ops.iter().enumerate() {
        let near = changed.iter().any(|&c| k + CONTEXT >= c && k <= c + CONTEXT);
        if !near {
            continue;
        }
        if last_shown.is_some_and(|l| k > l + 1) || (last_shown.is_none() && k > 0) {
            out.push_str("  ...\n");
        }
        out.push(*mark);
        out.push(' ');
        out.push_str(line);
        out.push('\n');
        last_shown = Some(k);
    }
    if last_shown.is_some_and(|l| l + 1 < ops.len()) {
        out.push_str("  ...\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_marks_changed_lines_with_context() {
        let expected = "a\nb\nc\nd\ne\nf\ng\nh\ni\n";
        let actual = "a\nb\nc\nd\ne\nF\ng\nh\ni\n";
        let d = diff(expected, actual);
        assert_eq!(
            d,
            "--- expected\n+++ actual\n  ...\n  c\n  d\n  e\n- f\n+ F\n  g\n  h\n  i\n"
        );
    }

    #[test]
    fn outcomes_are_spelled_like_the_wit_types() {
        let failed: Result<Result<(), GuestError>, PluginError> =
            Ok(Err(GuestError(WitError::Failed("nope".into()))));
        assert_eq!(
            outcome(&failed, |_| Value::Null),
            json!({"error": {"failed": "nope"}})
        );
        let fuel: Result<Result<(), GuestError>, PluginError> = Err(PluginError::OutOfFuel {
            plugin: "p".into(),
            function: "info".into(),
            limit: 1,
        });
        assert_eq!(to_yaml(&outcome(&fuel, |_| Value::Null)), "failure: OutOfFuel\n");
        assert_eq!(json_text(r#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(json_text("plain"), json!("plain"));
    }
}
