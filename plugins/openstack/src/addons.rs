//! `addon-values`: the cloud configuration the OpenStack cloud controller manager and the Cinder
//! CSI driver need in a workload cluster, from the same `clouds.yaml` the images use.
//!
//! Into the values of the charts (keys from `spec.config.addons`):
//! - `<ccm>.cloudConfig.global` (the chart renders it into `cloud.conf`), `<ccm>.secret` (create the
//!   Secret), `<ccm>.cluster.name`;
//! - `<csi>.secret` with `data."cloud.conf"` (the Cinder CSI chart takes the file as is).
//!
//! Everything else in the values is kept; these keys are overwritten.

use serde_json::{json, Map, Value};

use crate::cloud::Cloud;
use crate::clusterstack::provider::types::{ClusterInfo, Error};
use crate::config::Config;

/// Where the charts mount the cloud config Secret (both charts use /etc/config).
const CA_FILE: &str = "/etc/config/cacert";

pub fn values(config: &Config, cluster: &ClusterInfo, values: &str) -> Result<String, Error> {
    let mut values: Value = if values.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(values).map_err(|e| {
            Error::InvalidInput(format!(
                "the addon values of cluster {}/{} are not JSON: {e}",
                cluster.namespace, cluster.name
            ))
        })?
    };
    if !values.is_object() {
        return Err(Error::InvalidInput(format!(
            "the addon values of cluster {}/{} are not a map",
            cluster.namespace, cluster.name
        )));
    }
    let cloud = Cloud::load(config)?;
    let global = global_section(&cloud);
    let conf = cloud_conf(&global);
    let addons = &config.addons;
    if !addons.ccm.is_empty() {
        let mut secret = json!({ "enabled": true, "create": true, "name": addons.secret_name });
        if let Some(ca) = &cloud.cacert {
            secret["data"] = json!({ "cacert": ca });
        }
        merge(
            &mut values,
            &json!({ &addons.ccm: {
                "cloudConfig": { "global": Value::Object(global.clone()) },
                "secret": secret,
                "cluster": { "name": cluster.name },
            }}),
        );
    }
    if !addons.csi.is_empty() {
        let mut data = json!({ "cloud.conf": conf });
        if let Some(ca) = &cloud.cacert {
            data["cacert"] = json!(ca);
        }
        merge(
            &mut values,
            &json!({ &addons.csi: { "secret": {
                "enabled": true,
                "create": true,
                "name": format!("cinder-csi-{}", addons.secret_name),
                "data": data,
            }}}),
        );
    }
    Ok(serde_json::to_string(&values).unwrap_or_default())
}

/// The `[Global]` section of cloud-provider-openstack's `cloud.conf`.
fn global_section(cloud: &Cloud) -> Map<String, Value> {
    let a = &cloud.entry.auth;
    let mut g = Map::new();
    let mut put = |k: &str, v: &Option<String>| {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            g.insert(k.to_string(), json!(v));
        }
    };
    put("auth-url", &Some(cloud.auth_url.clone()));
    put("region", &cloud.region);
    if cloud.method == "application credential" {
        put("application-credential-id", &a.application_credential_id);
        put("application-credential-name", &a.application_credential_name);
        put("application-credential-secret", &a.application_credential_secret);
        put("username", &a.username);
        put("user-id", &a.user_id);
        put("user-domain-name", &a.user_domain_name);
    } else {
        put("username", &a.username);
        put("user-id", &a.user_id);
        put("password", &a.password);
        put("tenant-id", &a.project_id.clone().or(a.tenant_id.clone()));
        put("tenant-name", &a.project_name.clone().or(a.tenant_name.clone()));
        put("domain-id", &a.user_domain_id.clone().or(a.domain_id.clone()));
        put(
            "domain-name",
            &a.user_domain_name.clone().or(a.domain_name.clone()),
        );
        put("tenant-domain-id", &a.project_domain_id);
        put("tenant-domain-name", &a.project_domain_name);
    }
    if cloud.entry.verify == Some(false) {
        g.insert("tls-insecure".to_string(), json!("true"));
    }
    if cloud.cacert.is_some() {
        g.insert("ca-file".to_string(), json!(CA_FILE));
    }
    g
}

/// `cloud.conf` text (INI) with the `[Global]` section.
fn cloud_conf(global: &Map<String, Value>) -> String {
    let mut text = String::from("[Global]\n");
    for (k, v) in global {
        let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        // Quote values so that `#`, `;` or spaces in a password survive the INI parser.
        text.push_str(&format!(
            "{k} = \"{}\"\n",
            v.replace('\\', "\\\\").replace('"', "\\\"")
        ));
    }
    text
}

/// Deep merge: maps merge key by key, anything else in `patch` replaces what `base` has.
fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_what_it_does_not_set() {
        let mut base = json!({"a": {"keep": 1, "set": 1}, "b": 2});
        merge(&mut base, &json!({"a": {"set": 2, "new": 3}}));
        assert_eq!(base, json!({"a": {"keep": 1, "set": 2, "new": 3}, "b": 2}));
    }

    #[test]
    fn cloud_conf_quotes_values() {
        let mut g = Map::new();
        g.insert("password".into(), json!("a#b\"c"));
        assert_eq!(cloud_conf(&g), "[Global]\npassword = \"a#b\\\"c\"\n");
    }
}
