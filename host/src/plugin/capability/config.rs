//! `clusterstack:provider/config`: the plugin's configuration, the same text `validate-config` saw.

use crate::plugin::bindings::clusterstack::provider::config::Host;
use crate::plugin::store::CallState;

impl Host for CallState {
    fn get(&mut self) -> String {
        self.host_calls += 1;
        self.caps.config.to_string()
    }
}
