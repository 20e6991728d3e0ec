//! The local harness for plugin authors: run a plugin's fixtures under the controller's runtime and
//! limits, compare with golden outputs, replay (or record) HTTP, and time calls.
//!
//! Each case loads the component into the same `PluginHost` the controller uses, with the limits and
//! grants the fixture's ProviderPlugin-style settings give, `Determinism::Fixed` clocks and randomness,
//! a cassette behind the `http` capability, the fixture's secrets and a `MemoryState` seeded from the
//! fixture. Nothing here reimplements the runtime: the harness only supplies capability back-ends.

pub mod cassette;
pub mod cli;
pub mod fixture;
pub mod golden;
pub mod report;
pub mod scaffold;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::plugin::capability::{CaBundle, HttpTransport, MemoryState, StateStore as _, StaticSecrets};
use crate::plugin::{
    CallReport, Capabilities, EngineConfig, GuestError, Plugin, PluginError, PluginHost, PluginSettings,
};
use cassette::{Cassette, Record, Redactor, Replay};
use fixture::{Case, Export, Input, Suite};

/// Why the harness could not run (as opposed to a case that failed).
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A fixture file is missing, unreadable or malformed; the path says which.
    #[error("{}: {reason}", path.display())]
    Fixture { path: PathBuf, reason: String },
    /// There is no component to test where the command looked.
    #[error("no plugin component at {}: {hint}", path.display())]
    NoComponent { path: PathBuf, hint: String },
    /// Writing a golden file, a cassette or a scaffolded file failed.
    #[error("cannot write {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    /// `plugin new` was asked for something it cannot create.
    #[error("plugin new: {0}")]
    Scaffold(String),
    /// The Wasm engine could not be set up.
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(String),
}

/// How `plugin test` treats goldens and HTTP.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Rewrite `expected.yaml` / `expected-state.yaml` with what the plugin produced.
    pub bless: bool,
    /// Send HTTP for real (cases with granted hosts) and write each case's `cassette.yaml`.
    pub record: bool,
    /// Secret values that replace the fixture's (real credentials for `--record`).
    pub secrets: BTreeMap<String, Vec<u8>>,
    /// CA certificates `--record` trusts besides the public roots (`--ca-file`).
    pub ca_bundle: Option<CaBundle>,
}

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    /// It differed (or had no golden) and `--bless` rewrote the golden.
    Blessed,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "FAIL",
            Verdict::Blessed => "blessed",
        }
    }
}

/// The result of one case: verdict, what was wrong (readable, with diffs), and what the call cost.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: String,
    pub export: Export,
    pub description: Option<String>,
    pub verdict: Verdict,
    /// Each problem is a self-contained message (a diff, a cassette miss, a fixture error).
    pub problems: Vec<String>,
    /// What the harness did besides checking (files written).
    pub notes: Vec<String>,
    pub report: CallReport,
}

/// The HTTP back-end of one case.
enum Http {
    Replay(Arc<Replay>),
    Record(Arc<Record>),
}

/// What one call of a case produced.
struct Executed {
    outcome: Value,
    failure: Option<PluginError>,
    report: CallReport,
    state_granted: bool,
    initial_state: BTreeMap<String, String>,
    state: BTreeMap<String, String>,
    http: Http,
}

/// A component under test and the host that runs it.
#[derive(Debug)]
pub struct Harness {
    host: PluginHost,
    component: Vec<u8>,
    name: String,
}

impl Harness {
    /// A harness for the component bytes; `name` is used in logs and reports. Compiled code is kept
    /// in `cache_dir` (when given), so a second run of an unchanged plugin does not compile again.
    pub fn new(component: Vec<u8>, name: &str, cache_dir: Option<PathBuf>) -> Result<Harness, HarnessError> {
        let host = PluginHost::new(EngineConfig {
            max_instances: 4,
            cache_dir,
            ..EngineConfig::default()
        })
        .map_err(|e| HarnessError::Runtime(format!("{e:#}")))?;
        Ok(Harness {
            host,
            component,
            name: name.to_string(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs every case of the suite.
    pub fn test(&self, suite: &Suite, options: &Options) -> Vec<CaseResult> {
        suite
            .cases
            .iter()
            .map(|case| self.test_case(case, options))
            .collect()
    }

    /// Runs one case and checks it against its goldens (or rewrites them with `bless`).
    pub fn test_case(&self, case: &Case, options: &Options) -> CaseResult {
        let mut result = CaseResult {
            name: case.name.clone(),
            export: case.export,
            description: case.spec.description.clone(),
            verdict: Verdict::Pass,
            problems: Vec::new(),
            notes: Vec::new(),
            report: CallReport {
                function: case.export.name().to_string(),
                ..CallReport::default()
            },
        };
        let executed = match self.execute(case, options) {
            Ok(executed) => executed,
            Err(error) => {
                result.problems.push(format!("fixture error: {error}"));
                result.verdict = Verdict::Fail;
                return result;
            }
        };
        result.report = executed.report.clone();
        let mut blessed = false;
        if let Err(problem) = check_golden(
            &case.dir.join(fixture::EXPECTED_FILE),
            &executed.outcome,
            options.bless,
            &mut blessed,
        ) {
            result.problems.push(problem);
        }
        if let Some(failure) = &executed.failure {
            if !result.problems.is_empty() {
                result.problems.push(format!("the call failed: {failure}"));
            }
        }
        if executed.state_granted {
            let path = case.dir.join(fixture::EXPECTED_STATE_FILE);
            let state = golden::state_value(&executed.state);
            if path.exists() || options.bless {
                if let Err(problem) = check_golden(&path, &state, options.bless, &mut blessed) {
                    result.problems.push(problem);
                }
            } else if executed.state != executed.initial_state {
                result.problems.push(format!(
                    "the call changed `state` but there is no {}; check the state below and run with --bless \
                     to save it:\n{}",
                    fixture::EXPECTED_STATE_FILE,
                    golden::to_yaml(&state)
                ));
            }
        }
        match &executed.http {
            Http::Replay(replay) => {
                let cassette = case.dir.join(fixture::CASSETTE_FILE);
                for miss in replay.misses() {
                    result.problems.push(format!(
                        "cassette miss: the plugin sent {miss}, which {} does not hold; record it with \
                         `stackhost plugin test ... --record` against a real endpoint or add it by hand",
                        cassette.display()
                    ));
                }
                let unused = replay.unused();
                if !unused.is_empty() && replay.misses().is_empty() && result.problems.is_empty() {
                    result.problems.push(format!(
                        "{} recorded interaction(s) in {} were never requested: {}; the plugin now sends \
                         fewer requests than when this was recorded: record again or remove them",
                        unused.len(),
                        cassette.display(),
                        unused.join(", ")
                    ));
                }
            }
            Http::Record(record) => {
                let cassette = record.cassette();
                let path = case.dir.join(fixture::CASSETTE_FILE);
                match write_file(&path, &cassette.to_yaml()) {
                    Ok(()) => result.notes.push(format!(
                        "recorded {} interaction(s) into {}",
                        cassette.interactions.len(),
                        path.display()
                    )),
                    Err(e) => result.problems.push(e.to_string()),
                }
            }
        }
        if blessed {
            result
                .notes
                .push(format!("blessed: rewrote the goldens in {}", case.dir.display()));
        }
        result.verdict = if !result.problems.is_empty() {
            Verdict::Fail
        } else if blessed {
            Verdict::Blessed
        } else {
            Verdict::Pass
        };
        result
    }

    /// Calls the case's export `runs` times (after `warmup` calls), each in a fresh sandbox with fresh
    /// capabilities, and returns the reports; the first failure ends the series.
    pub fn bench_case(&self, case: &Case, warmup: usize, runs: usize) -> Result<Vec<CallReport>, String> {
        let options = Options::default();
        let mut reports = Vec::with_capacity(runs);
        for i in 0..warmup + runs {
            let executed = self
                .execute(case, &options)
                .map_err(|e| format!("fixture error: {e}"))?;
            if let Some(failure) = executed.failure {
                return Err(failure.to_string());
            }
            if let Http::Replay(replay) = &executed.http {
                if let Some(miss) = replay.misses().first() {
                    return Err(format!("cassette miss: {miss}"));
                }
            }
            if i >= warmup {
                reports.push(executed.report);
            }
        }
        Ok(reports)
    }

    /// Loads the component with the case's settings and makes the call.
    fn execute(&self, case: &Case, options: &Options) -> Result<Executed, HarnessError> {
        let mut secrets = case.secrets()?;
        secrets.extend(options.secrets.clone());
        let grants = case.grants();
        let limits = case.limits()?;
        let redactor = Redactor::new(&secrets);
        let http = if options.record && !grants.http_hosts.is_empty() {
            Http::Record(Record::new(redactor, options.ca_bundle.as_ref()))
        } else {
            let path = case.dir.join(fixture::CASSETTE_FILE);
            let cassette = if path.exists() {
                Cassette::load(&path)?
            } else {
                Cassette::default()
            };
            Http::Replay(Replay::new(path, cassette, redactor))
        };
        let transport: Arc<dyn HttpTransport> = match &http {
            Http::Replay(replay) => replay.clone(),
            Http::Record(record) => record.clone(),
        };
        let initial_state = case.initial_state()?;
        let state = Arc::new(MemoryState::new(initial_state.clone(), fixture::STATE_QUOTA));
        let input = case.input()?;
        let capabilities = Capabilities {
            config: Arc::from(case.config()?),
            http: transport,
            secrets: Arc::new(StaticSecrets(secrets)),
            state: state.clone(),
            ..Capabilities::default()
        };
        let state_granted = grants.state;
        let settings = PluginSettings {
            name: self.name.clone(),
            limits,
            grants,
            capabilities,
            determinism: case.determinism(),
        };
        let (outcome, failure, report) = match self.host.load(&self.component, settings) {
            Ok(plugin) => call(&plugin, case.export, input),
            Err(error) => (
                serde_json::json!({ "failure": error.kind() }),
                Some(error),
                CallReport {
                    function: case.export.name().to_string(),
                    ..CallReport::default()
                },
            ),
        };
        Ok(Executed {
            outcome,
            failure,
            report,
            state_granted,
            initial_state,
            state: state.snapshot(),
            http,
        })
    }
}

/// Makes the typed call for the input and turns its result into a golden document.
fn call(plugin: &Plugin, export: Export, input: Input) -> (Value, Option<PluginError>, CallReport) {
    fn done<T>(
        result: Result<Result<T, GuestError>, PluginError>,
        report: CallReport,
        ok: impl Fn(&T) -> Value,
    ) -> (Value, Option<PluginError>, CallReport) {
        let outcome = golden::outcome(&result, ok);
        (outcome, result.err(), report)
    }
    let unit = |_: &()| Value::Null;
    match input {
        Input::None => {
            let c = plugin.info();
            done(c.result.map(Ok), c.report, golden::info_value)
        }
        Input::Config(config) => {
            let c = plugin.validate_config(&config);
            done(c.result, c.report, unit)
        }
        Input::Images(release, images) if export == Export::CleanupNodeImages => {
            let c = plugin.cleanup_node_images(&release, &images);
            done(c.result, c.report, unit)
        }
        Input::Images(release, images) => {
            let c = plugin.reconcile_node_images(&release, &images);
            done(c.result, c.report, |s: &Vec<_>| golden::statuses_value(s))
        }
        Input::Objects(release, objects) => {
            let c = plugin.patch_cluster_class(&release, &objects);
            done(c.result, c.report, |objects: &Vec<String>| {
                Value::Array(objects.iter().map(|o| golden::json_text(o)).collect())
            })
        }
        Input::Values(cluster, values) => {
            let c = plugin.addon_values(&cluster, &values);
            done(c.result, c.report, |v: &String| golden::json_text(v))
        }
    }
}

/// Compares `actual` with the golden file at `path`; with `bless`, rewrites the file when it differs
/// or is missing (and sets `blessed`).
fn check_golden(path: &Path, actual: &Value, bless: bool, blessed: &mut bool) -> Result<(), String> {
    let actual_yaml = golden::to_yaml(actual);
    let expected: Option<Value> = if path.exists() {
        match fixture::read_yaml(path) {
            Ok(value) => Some(value),
            Err(_) if bless => None,
            Err(error) => return Err(error.to_string()),
        }
    } else {
        None
    };
    if expected.as_ref() == Some(actual) {
        return Ok(());
    }
    if bless {
        write_file(path, &actual_yaml).map_err(|e| e.to_string())?;
        *blessed = true;
        return Ok(());
    }
    Err(match expected {
        None => format!(
            "no {}: check the result below and run with --bless to save it as the golden:\n{actual_yaml}",
            path.display()
        ),
        Some(expected) => format!(
            "the result differs from {}:\n{}",
            path.display(),
            golden::diff(&golden::to_yaml(&expected), &actual_yaml)
        ),
    })
}

/// Writes a file through a temporary beside it, creating its directory.
pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), HarnessError> {
    let err = |e: std::io::Error| HarnessError::Write {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// p50 and p99 (nearest rank) of the wall times, and the most fuel one call used.
pub fn percentiles(reports: &[CallReport]) -> (Duration, Duration, u64) {
    let mut walls: Vec<Duration> = reports.iter().map(|r| r.wall).collect();
    walls.sort();
    let rank = |p: f64| -> Duration {
        if walls.is_empty() {
            return Duration::ZERO;
        }
        let index = ((p * walls.len() as f64).ceil() as usize).clamp(1, walls.len()) - 1;
        walls[index]
    };
    let fuel = reports.iter().map(|r| r.fuel_used).max().unwrap_or(0);
    (rank(0.50), rank(0.99), fuel)
}
