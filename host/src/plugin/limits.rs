//! Per-plugin limits and capability grants, with defaults that make sense for provider work.

use std::time::Duration;

/// Resource limits applied to every call of one plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Fuel per call (roughly one unit per wasm instruction). Deterministic: the same input uses the same
    /// fuel. 2e9 is a few seconds of pure compute, far above what provider glue needs.
    pub fuel: u64,
    /// Cap on the guest's linear memory in bytes (64 MiB: room for parsing large API answers).
    pub memory_bytes: usize,
    /// Wall-clock deadline per call in milliseconds, a backstop for time spent in host calls (30 s).
    pub deadline_ms: u64,
    /// Cap on the size of a call's result in bytes (4 MiB: a rendered ClusterClass is ~100 KB).
    pub max_result_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 2_000_000_000,
            memory_bytes: 64 << 20,
            deadline_ms: 30_000,
            max_result_bytes: 4 << 20,
        }
    }
}

impl Limits {
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// The limits for a ProviderPlugin's `spec.limits`: each field given replaces its default.
    pub fn from_spec(spec: &crate::api::PluginLimits) -> Result<Limits, crate::api::LimitError> {
        let mut limits = Limits::default();
        if let Some(fuel) = spec.fuel {
            limits.fuel = fuel;
        }
        if let Some(memory) = &spec.memory {
            let bytes = crate::api::parse_memory(memory)?;
            limits.memory_bytes =
                usize::try_from(bytes).map_err(|_| crate::api::LimitError::Memory(memory.clone()))?;
        }
        if let Some(deadline) = &spec.deadline {
            limits.deadline_ms = crate::api::parse_deadline(deadline)?.as_millis() as u64;
        }
        Ok(limits)
    }
}

/// What a plugin is allowed to reach. `log` and `config` always work; `http`, `secrets` and `state`
/// answer every call that these grants do not cover with their typed `denied` error.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Grants {
    /// Hosts the `http` capability may reach: `example.com`, `example.com:8443`, `*.example.com`,
    /// `127.0.0.1:9292`. Empty: every request is denied.
    #[serde(default)]
    pub http_hosts: Vec<String>,
    /// Secret keys the `secrets` capability may read, as `<secret-name>/<key>`. Empty: every read is denied.
    #[serde(default)]
    pub secret_keys: Vec<String>,
    /// Whether the per-plugin key/value `state` store is granted. Without it the plugin sees an empty
    /// store with a quota of 0 bytes (`state` has no `denied` case): `set` fails with `quota-exceeded(0)`.
    #[serde(default)]
    pub state: bool,
}

impl Grants {
    /// The grants of a ProviderPlugin's `spec.capabilities`: a Secret granted without keys grants all of
    /// its keys (`<secret>/*`). `state` says whether the per-plugin store is linked.
    pub fn from_capabilities(caps: &crate::api::Capabilities, state: bool) -> Grants {
        Grants {
            http_hosts: caps.http_hosts.clone(),
            secret_keys: caps
                .secrets
                .iter()
                .flat_map(|g| {
                    if g.keys.is_empty() {
                        vec![format!("{}/*", g.name)]
                    } else {
                        g.keys.iter().map(|k| format!("{}/{k}", g.name)).collect()
                    }
                })
                .collect(),
            state,
        }
    }

    /// Whether `<secret>/<key>` is granted: listed exactly, or its Secret is granted whole (`<secret>/*`).
    pub fn allows_secret(&self, key: &str) -> bool {
        let secret = key.split_once('/').map(|(s, _)| s);
        self.secret_keys
            .iter()
            .any(|granted| granted == key || (secret.is_some() && granted.strip_suffix("/*") == secret))
    }

    /// Whether `host` (and `port`) of a URL matches one of the granted host patterns.
    pub fn allows_host(&self, host: &str, port: Option<u16>) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.http_hosts.iter().any(|pattern| {
            let pattern = pattern.trim().to_ascii_lowercase();
            let (pattern_host, pattern_port) = split_host_port(&pattern);
            if let Some(p) = pattern_port {
                if Some(p) != port {
                    return false;
                }
            }
            match pattern_host.strip_prefix("*.") {
                Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
                None => host == pattern_host,
            }
        })
    }
}

/// Splits `host:port` (and `[v6]:port`) into its parts.
fn split_host_port(pattern: &str) -> (&str, Option<u16>) {
    if let Some(rest) = pattern.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match pattern.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (pattern, None),
        },
        _ => (pattern, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(hosts: &[&str]) -> Grants {
        Grants {
            http_hosts: hosts.iter().map(|h| h.to_string()).collect(),
            ..Grants::default()
        }
    }

    #[test]
    fn host_patterns_match_exactly_what_they_say() {
        let g = grants(&[
            "keystone.example.com",
            "*.glance.example",
            "127.0.0.1:9292",
            "[::1]:5000",
        ]);
        assert!(g.allows_host("keystone.example.com", Some(443)));
        assert!(g.allows_host("KEYSTONE.example.com.", None));
        assert!(!g.allows_host("evil-keystone.example.com", Some(443)));
        assert!(g.allows_host("a.glance.example", Some(80)));
        assert!(!g.allows_host("glance.example", Some(80)));
        assert!(!g.allows_host("a.glance.example.evil", Some(80)));
        assert!(g.allows_host("127.0.0.1", Some(9292)));
        assert!(!g.allows_host("127.0.0.1", Some(9293)));
        assert!(g.allows_host("::1", Some(5000)));
        assert!(!grants(&[]).allows_host("keystone.example.com", None));
    }
}
