//! `clusterstack:provider/log`: structured logging into the host's log, tagged with the plugin.

use crate::plugin::bindings::clusterstack::provider::log::{Host, Level};
use crate::plugin::store::{cut_line, CallState};

impl Host for CallState {
    /// Within the call's log budget (`store::LOG_LINES_PER_CALL`, `LOG_BYTES_PER_CALL`); what is over it is
    /// counted and reported once when the call ends.
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.host_calls += 1;
        let message = cut_line(&message);
        let fields = cut_line(
            &fields
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        )
        .into_owned();
        if !self.log.admit(message.len() + fields.len()) {
            return;
        }
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "plugin", plugin, fields, "{message}"),
            Level::Debug => tracing::debug!(target: "plugin", plugin, fields, "{message}"),
            Level::Info => tracing::info!(target: "plugin", plugin, fields, "{message}"),
            Level::Warn => tracing::warn!(target: "plugin", plugin, fields, "{message}"),
            Level::Error => tracing::error!(target: "plugin", plugin, fields, "{message}"),
        }
    }
}
