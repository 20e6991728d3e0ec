//! Why a plugin could not be loaded or a call did not produce a result.
//!
//! A guest's own `error` (the WIT `result<_, error>`) is *not* here: that is data the plugin returned and
//! the caller turns into a condition. These variants are failures of the plugin as a program.

use std::fmt;

/// A plugin load or call failed. Every variant names what happened and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The bytes are not a WebAssembly component, or wasmtime refused to compile them.
    #[error("plugin {plugin}: not a valid component: {reason}")]
    BadComponent { plugin: String, reason: String },

    /// The component imports something the host does not provide or the ProviderPlugin does not grant.
    #[error("plugin {plugin}: refused at load: {reason}")]
    Refused { plugin: String, reason: String },

    /// The call used up its fuel budget (deterministic: the same input uses the same fuel).
    #[error("plugin {plugin}: out of fuel after {limit} units in `{function}`; raise spec.limits.fuel or fix the plugin's loop")]
    OutOfFuel {
        plugin: String,
        function: String,
        limit: u64,
    },

    /// The wall-clock deadline passed (a backstop for time spent in host calls or a stuck guest).
    #[error("plugin {plugin}: deadline of {deadline_ms} ms passed in `{function}`; raise spec.limits.deadline or check the plugin's host calls")]
    Deadline {
        plugin: String,
        function: String,
        deadline_ms: u64,
    },

    /// The guest tried to grow its linear memory past the limit.
    #[error("plugin {plugin}: memory limit of {limit} bytes reached in `{function}` (it asked for {requested} bytes); raise spec.limits.memory or fix the plugin")]
    MemoryLimit {
        plugin: String,
        function: String,
        limit: usize,
        requested: usize,
    },

    /// The guest trapped (a panic, `unreachable`, an out-of-bounds access, ...).
    #[error("plugin {plugin}: trapped in `{function}`: {trap}{}{}", stderr_suffix(.stderr), backtrace_suffix(.backtrace))]
    Trap {
        plugin: String,
        function: String,
        trap: String,
        backtrace: String,
        stderr: String,
    },

    /// The result is larger than the host accepts.
    #[error("plugin {plugin}: the result of `{function}` is {size} bytes, over the limit of {limit} bytes")]
    ResultTooLarge {
        plugin: String,
        function: String,
        size: usize,
        limit: usize,
    },

    /// The plugin asked for a capability it was not granted in a way that could not be answered with a
    /// typed error.
    #[error("plugin {plugin}: capability denied in `{function}`: {reason}")]
    Denied {
        plugin: String,
        function: String,
        reason: String,
    },

    /// The call itself was malformed (unknown export, arguments that do not match its type).
    #[error("plugin {plugin}: bad call: {reason}")]
    BadCall { plugin: String, reason: String },

    /// The host could not run the call (e.g. no instance slot); retry later.
    #[error("plugin {plugin}: host could not run `{function}`: {reason}")]
    Host {
        plugin: String,
        function: String,
        reason: String,
    },
}

impl PluginError {
    /// A short stable name for the kind of failure (metrics labels, condition reasons).
    pub fn kind(&self) -> &'static str {
        match self {
            PluginError::BadComponent { .. } => "BadComponent",
            PluginError::Refused { .. } => "Refused",
            PluginError::OutOfFuel { .. } => "OutOfFuel",
            PluginError::Deadline { .. } => "Deadline",
            PluginError::MemoryLimit { .. } => "MemoryLimit",
            PluginError::Trap { .. } => "Trap",
            PluginError::ResultTooLarge { .. } => "ResultTooLarge",
            PluginError::Denied { .. } => "Denied",
            PluginError::BadCall { .. } => "BadCall",
            PluginError::Host { .. } => "Host",
        }
    }

    /// True for the failures that are the plugin's fault at run time (traps and limits).
    pub fn is_plugin_failure(&self) -> bool {
        matches!(
            self,
            PluginError::OutOfFuel { .. }
                | PluginError::Deadline { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::Trap { .. }
                | PluginError::ResultTooLarge { .. }
                | PluginError::Denied { .. }
        )
    }
}

/// Bytes of a plugin's stderr that a trap message carries (its end: where the panic message is).
const STDERR_IN_MESSAGE: usize = 2 << 10;

fn stderr_suffix(stderr: &str) -> String {
    let stderr = stderr.trim_end();
    if stderr.trim().is_empty() {
        return String::new();
    }
    let mut start = stderr.len().saturating_sub(STDERR_IN_MESSAGE);
    while !stderr.is_char_boundary(start) {
        start += 1;
    }
    let cut = if start > 0 {
        format!("[{start} earlier bytes cut]\n")
    } else {
        String::new()
    };
    format!("\nplugin stderr:\n{cut}{}", &stderr[start..])
}

fn backtrace_suffix(backtrace: &str) -> String {
    if backtrace.trim().is_empty() {
        String::new()
    } else {
        format!("\n{}", backtrace.trim_end())
    }
}

/// A guest's typed error, as returned by the plugin (the WIT `error` variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestError(pub super::bindings::types::Error);

impl fmt::Display for GuestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use super::bindings::types::Error;
        match &self.0 {
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
            Error::NotReady(r) => write!(
                f,
                "not ready (retry in {}s): {}",
                r.retry_after_seconds, r.message
            ),
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for GuestError {}
