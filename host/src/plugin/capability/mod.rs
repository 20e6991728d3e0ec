//! Host capabilities: one module per imported WIT interface, each with its `Host` impl.
//! They run on the call's `CallState`; tests call them directly, without Wasm.

pub mod config;
pub mod http;
pub mod log;
pub mod secrets;
pub mod state;

use std::sync::Arc;

pub use http::{CaBundle, HttpTransport, UreqTransport};
pub use secrets::{SecretSource, StaticSecrets};
pub use state::{MemoryState, StateStore};

/// Everything a plugin's calls may reach, fixed when the plugin is loaded.
#[derive(Clone)]
pub struct Capabilities {
    /// The plugin's configuration (JSON) returned by `config.get`.
    pub config: Arc<str>,
    pub http: Arc<dyn HttpTransport>,
    pub secrets: Arc<dyn SecretSource>,
    pub state: Arc<dyn StateStore>,
    /// Largest HTTP response body handed to the guest.
    pub http_max_body: usize,
}

impl std::fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capabilities")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            config: Arc::from("{}"),
            http: Arc::new(UreqTransport::default()),
            secrets: Arc::new(StaticSecrets::default()),
            state: Arc::new(MemoryState::default()),
            http_max_body: 16 << 20,
        }
    }
}
