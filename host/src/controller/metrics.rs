//! Prometheus metrics of the controllers: reconciles, their durations, plugin calls, fuel and traps.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::plugin::{CallReport, PluginError};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: &'static str,
    /// `ok`, `requeue` (a step is waiting or failed and is retried) or `error` (API error).
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `<namespace>/<ProviderPlugin name>`.
    pub plugin: String,
    pub function: String,
    /// `ok`, `guest_error` (the plugin returned its `error`), or the failure kind (`trap`, `fuel`, ...).
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FuelLabels {
    pub plugin: String,
    pub function: String,
}

/// All metrics of the controllers; cheap to clone.
#[derive(Clone, Debug)]
pub struct Metrics {
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Family<ControllerLabel, Histogram>,
    plugin_calls: Family<CallLabels, Counter>,
    plugin_fuel: Family<FuelLabels, Counter>,
    plugin_call_seconds: Family<FuelLabels, Histogram>,
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.5, 14))
}

impl Metrics {
    /// Creates the metrics and registers them under the `stackhost_` prefix.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            reconciles: Family::default(),
            reconcile_seconds: Family::new_with_constructor(seconds_histogram),
            plugin_calls: Family::default(),
            plugin_fuel: Family::default(),
            plugin_call_seconds: Family::new_with_constructor(seconds_histogram),
        };
        let r = registry.sub_registry_with_prefix("stackhost");
        r.register(
            "reconciles",
            "Reconciles by controller and result",
            m.reconciles.clone(),
        );
        r.register(
            "reconcile_duration_seconds",
            "Wall time of one reconcile",
            m.reconcile_seconds.clone(),
        );
        r.register(
            "plugin_calls",
            "Plugin calls by plugin, export and outcome (trap, fuel, memory, deadline, ... are failures)",
            m.plugin_calls.clone(),
        );
        r.register(
            "plugin_fuel",
            "Wasm fuel consumed by plugin calls",
            m.plugin_fuel.clone(),
        );
        r.register(
            "plugin_call_duration_seconds",
            "Wall time of one plugin call",
            m.plugin_call_seconds.clone(),
        );
        m
    }

    /// Records one reconcile.
    pub fn reconciled(&self, controller: &'static str, result: &'static str, took: Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { controller, result })
            .inc();
        self.reconcile_seconds
            .get_or_create(&ControllerLabel { controller })
            .observe(took.as_secs_f64());
    }

    /// Records a reconcile deferred because its namespace had its share of workers in flight
    /// (`result="deferred"`; no duration: nothing ran).
    pub fn deferred(&self, controller: &'static str) {
        self.reconciles
            .get_or_create(&ReconcileLabels {
                controller,
                result: "deferred",
            })
            .inc();
    }

    /// Records one plugin call; `outcome` is `Ok(true)` for success, `Ok(false)` for a guest error.
    pub fn plugin_call(&self, plugin: &str, report: &CallReport, outcome: Result<bool, &PluginError>) {
        let outcome = match outcome {
            Ok(true) => "ok".to_string(),
            Ok(false) => "guest_error".to_string(),
            Err(e) => e.kind().to_string(),
        };
        let fuel = FuelLabels {
            plugin: plugin.to_string(),
            function: report.function.clone(),
        };
        self.plugin_calls
            .get_or_create(&CallLabels {
                plugin: plugin.to_string(),
                function: report.function.clone(),
                outcome,
            })
            .inc();
        self.plugin_fuel.get_or_create(&fuel).inc_by(report.fuel_used);
        self.plugin_call_seconds
            .get_or_create(&fuel)
            .observe(report.wall.as_secs_f64());
    }
}
