//! Calls an export by a WAVE call expression (`patch-cluster-class({tag: "t", ...}, ["{}"])`), the syntax
//! `wasmtime run --invoke` uses; used by `stackhost plugin call`.

use wasm_wave::untyped::UntypedFuncCall;
use wasmtime::component::Val;

use super::bindings::{EXPORT_INTERFACE, PACKAGE};
use super::{Called, Plugin, PluginError, WireSize};

/// The call itself is wrong (not the plugin): unknown export, arguments of the wrong type.
#[derive(Debug)]
pub(crate) struct BadCall(pub String);

impl std::fmt::Display for BadCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadCall {}

/// The result of a WAVE call, printed back in WAVE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaveOutcome {
    /// The result value in WAVE syntax (empty for functions without a result).
    pub text: String,
    /// Whether the function returned the `err` case of its `result` (the plugin's own error).
    pub is_guest_error: bool,
}

impl WireSize for WaveOutcome {
    fn wire_size(&self) -> usize {
        self.text.len()
    }
}

impl Plugin {
    /// Calls one export of the `plugin` interface with WAVE-encoded arguments.
    pub fn call_wave(&self, expression: &str) -> Called<WaveOutcome> {
        let parsed = match UntypedFuncCall::parse(expression) {
            Ok(parsed) => parsed,
            Err(e) => {
                return Called {
                    result: Err(PluginError::BadCall {
                        plugin: self.inner.label.to_string(),
                        reason: format!("cannot parse {expression:?} as a WAVE call: {e}"),
                    }),
                    report: super::CallReport {
                        function: expression.to_string(),
                        ..Default::default()
                    },
                }
            }
        };
        let function = parsed.name().to_string();
        let interface = self
            .exports()
            .iter()
            .find(|e| e.starts_with(&format!("{PACKAGE}/{EXPORT_INTERFACE}@")))
            .cloned()
            .unwrap_or_default();
        let called = self.run(&function, |linked, store| {
            let instance = linked.pre.instantiate(&mut *store)?;
            let bad = |why: String| wasmtime::Error::new(BadCall(why));
            let iface = instance
                .get_export_index(&mut *store, None, &interface)
                .ok_or_else(|| bad(format!("the plugin does not export {interface}")))?;
            let func = instance
                .get_export_index(&mut *store, Some(&iface), &function)
                .and_then(|index| instance.get_func(&mut *store, index))
                .ok_or_else(|| {
                    bad(format!(
                        "no function `{function}` in {interface}; try info, validate-config, reconcile-node-images, \
                         cleanup-node-images, patch-cluster-class or addon-values"
                    ))
                })?;
            let ty = func.ty(&*store);
            let param_types: Vec<_> = ty.params().map(|(_, t)| t).collect();
            let params = parsed
                .to_wasm_params::<Val>(param_types.iter())
                .map_err(|e| bad(format!("arguments of `{function}` do not match its type: {e}")))?;
            let mut results = vec![Val::Bool(false); ty.results().len()];
            func.call(&mut *store, &params, &mut results)?;
            let is_guest_error = matches!(results.first(), Some(Val::Result(Err(_))));
            let text = match results.first() {
                Some(value) => wasm_wave::to_string(value).map_err(|e| bad(format!("cannot print the result: {e}")))?,
                None => String::new(),
            };
            Ok(WaveOutcome { text, is_guest_error })
        });
        if matches!(
            called.result,
            Ok(WaveOutcome {
                is_guest_error: true,
                ..
            })
        ) {
            self.inner
                .stats
                .guest_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        called
    }
}
