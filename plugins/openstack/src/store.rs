//! The host's `state` capability, with JSON values.
//!
//! Keys: `token/<fingerprint>` (a Keystone token and its image endpoints, until it expires),
//! `image/<name>` (the Glance image this plugin uses for a node image, and its import),
//! `release/<tag>` (the node images of a release, for patching and cleanup).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::clusterstack::provider::state::{self, StateError};
use crate::clusterstack::provider::types::Error;

pub fn get<T: DeserializeOwned>(key: &str) -> Option<T> {
    // An entry that no longer parses (an older plugin version) is treated as absent.
    state::get(key).and_then(|text| serde_json::from_str(&text).ok())
}

pub fn set<T: Serialize>(key: &str, value: &T) -> Result<(), Error> {
    let text = serde_json::to_string(value).unwrap_or_default();
    state::set(key, &text).map_err(|StateError::QuotaExceeded(quota)| {
        Error::Failed(format!(
            "the plugin's state store is full (quota {quota} bytes) while saving {key:?}; \
             raise the ProviderPlugin's state quota"
        ))
    })
}

pub fn delete(key: &str) {
    state::delete(key)
}
