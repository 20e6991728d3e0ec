//! `clusterstack:provider/secrets`: read-only access to the Secret keys granted to this plugin.

use std::collections::BTreeMap;

use crate::plugin::bindings::clusterstack::provider::secrets::{Host, SecretError};
use crate::plugin::store::CallState;

/// Where granted secret values come from (Kubernetes Secrets in the controller, a fixture in tests).
pub trait SecretSource: Send + Sync {
    /// The value of `<secret-name>/<key>`, if it exists.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
}

/// A fixed set of secret values.
#[derive(Debug, Clone, Default)]
pub struct StaticSecrets(pub BTreeMap<String, Vec<u8>>);

impl SecretSource for StaticSecrets {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.0.get(key).cloned()
    }
}

impl Host for CallState {
    fn get(&mut self, key: String) -> Result<Vec<u8>, SecretError> {
        self.host_calls += 1;
        if !self.grants.allows_secret(&key) {
            return Err(SecretError::Denied(format!(
                "secret key {key:?} is not granted to this plugin; add it to the ProviderPlugin's \
                 spec.capabilities.secrets"
            )));
        }
        self.caps.secrets.get(&key).ok_or_else(|| {
            SecretError::NotFound(format!(
                "secret key {key:?} is granted but the Secret or key does not exist"
            ))
        })
    }
}
