//! Per-call state: a fresh `Store` for every call, with the WASI context, limits and capabilities.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capability::Capabilities;
use super::Grants;

/// Bytes of stdout/stderr kept per call; past it the guest's writes fail.
pub const OUTPUT_CAPTURE: usize = 1 << 20;

/// Lines a plugin may write into the host log per call: its `log` calls, stdout and stderr together.
pub const LOG_LINES_PER_CALL: u32 = 100;
/// Bytes a plugin may write into the host log per call (same budget as [`LOG_LINES_PER_CALL`]).
pub const LOG_BYTES_PER_CALL: usize = 32 << 10;
/// Longest single log line; longer ones are cut (and say so).
pub const LOG_LINE_MAX: usize = 4 << 10;

/// What a call has written into the host log so far, and what it was refused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    lines: u32,
    bytes: usize,
    /// Lines dropped over the budget.
    pub dropped_lines: u64,
    /// Bytes dropped over the budget.
    pub dropped_bytes: u64,
}

impl LogBudget {
    /// Whether a line of `len` bytes still fits; counts it as written or as dropped.
    pub fn admit(&mut self, len: usize) -> bool {
        if self.lines < LOG_LINES_PER_CALL && self.bytes + len <= LOG_BYTES_PER_CALL {
            self.lines += 1;
            self.bytes += len;
            true
        } else {
            self.dropped_lines += 1;
            self.dropped_bytes += len as u64;
            false
        }
    }

    /// Logs, once, how much the call was refused (nothing when it stayed within the budget).
    pub fn report(&self, plugin: &str) {
        if self.dropped_lines > 0 {
            tracing::warn!(
                target: "plugin",
                plugin,
                dropped_lines = self.dropped_lines,
                dropped_bytes = self.dropped_bytes,
                "the plugin's log output of this call was cut at {LOG_LINES_PER_CALL} lines / {} KiB; \
                 {} more lines ({} bytes) were dropped",
                LOG_BYTES_PER_CALL >> 10,
                self.dropped_lines,
                self.dropped_bytes
            );
        }
    }
}

/// `line` cut to [`LOG_LINE_MAX`] bytes (on a character boundary), marked when cut.
pub fn cut_line(line: &str) -> std::borrow::Cow<'_, str> {
    if line.len() <= LOG_LINE_MAX {
        return line.into();
    }
    let mut end = LOG_LINE_MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... [{} bytes cut]", &line[..end], line.len() - end).into()
}

/// How clocks and randomness behave inside the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Determinism {
    /// Real clocks and OS randomness (the controller).
    #[default]
    Real,
    /// Fixed clocks and seeded randomness, so runs are reproducible (the plugin test harness).
    Fixed { seed: u64, unix_seconds: u64 },
}

/// The data of one call's `Store`.
pub struct CallState {
    /// Built on the guest's first WASI call (`WasiView::ctx`), so components that import no WASI
    /// (and calls that never reach it) skip the per-call cost of seeding random generators and
    /// clocks. Always built from the same fixed settings: no preopens, env, args or network.
    wasi: Option<Wasi>,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryLimiter,
    pub(crate) caps: Arc<Capabilities>,
    pub(crate) grants: Arc<Grants>,
    /// `name@sha256:abcd1234` for logs.
    pub(crate) plugin: Arc<str>,
    pub(crate) host_calls: u32,
    pub(crate) log: LogBudget,
    determinism: Determinism,
}

/// A built WASI context and the pipes capturing the guest's stdout and stderr.
struct Wasi {
    ctx: WasiCtx,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Wasi {
    fn new(determinism: Determinism) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPTURE);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPTURE);
        let mut builder = WasiCtx::builder();
        // No preopened directories, no environment, no arguments, no sockets: the WASI defaults
        // plus an explicit "no network", and stdio captured into the host's log.
        builder
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        if let Determinism::Fixed { seed, unix_seconds } = determinism {
            builder
                .secure_random(fixed::Rng::new(seed))
                .insecure_random(fixed::Rng::new(seed ^ 0x5eed))
                .insecure_random_seed(u128::from(seed))
                .wall_clock(fixed::Clock(unix_seconds))
                .monotonic_clock(fixed::Clock(0));
        }
        Wasi {
            ctx: builder.build(),
            stdout,
            stderr,
        }
    }
}

impl CallState {
    pub(crate) fn new(
        caps: Arc<Capabilities>,
        grants: Arc<Grants>,
        plugin: Arc<str>,
        memory_limit: usize,
        determinism: Determinism,
    ) -> Self {
        CallState {
            wasi: None,
            table: ResourceTable::new(),
            memory: MemoryLimiter::new(memory_limit),
            caps,
            grants,
            plugin,
            host_calls: 0,
            log: LogBudget::default(),
            determinism,
        }
    }

    /// Whether the guest has used WASI in this call (the context is built on first use).
    #[cfg(test)]
    pub(crate) fn wasi_built(&self) -> bool {
        self.wasi.is_some()
    }

    /// Sends what the guest wrote to stdout/stderr into the host log, one event per line, within the
    /// call's log budget, and says once how much was dropped over it. Returns stderr (for trap messages).
    pub(crate) fn flush_output(&mut self) -> String {
        let plugin = self.plugin.clone();
        let mut stderr = String::new();
        if let Some(wasi) = &self.wasi {
            for line in String::from_utf8_lossy(&wasi.stdout.contents()).lines() {
                let line = cut_line(line);
                if self.log.admit(line.len()) {
                    tracing::info!(target: "plugin", plugin = &*plugin, stream = "stdout", "{line}");
                }
            }
            stderr = String::from_utf8_lossy(&wasi.stderr.contents()).into_owned();
            for line in stderr.lines() {
                let line = cut_line(line);
                if self.log.admit(line.len()) {
                    tracing::warn!(target: "plugin", plugin = &*plugin, stream = "stderr", "{line}");
                }
            }
        }
        self.log.report(&plugin);
        stderr
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let determinism = self.determinism;
        let wasi = self.wasi.get_or_insert_with(|| Wasi::new(determinism));
        WasiCtxView {
            ctx: &mut wasi.ctx,
            table: &mut self.table,
        }
    }
}

/// Caps linear memory and tables, and remembers the peak and any refused growth.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit: usize,
    /// Largest total of linear memory seen in this call.
    pub peak: usize,
    current: usize,
    /// The size asked for when growth was refused.
    pub refused: Option<usize>,
}

impl MemoryLimiter {
    pub fn new(limit: usize) -> Self {
        MemoryLimiter {
            limit,
            peak: 0,
            current: 0,
            refused: None,
        }
    }
}

/// Most table elements a plugin may have (function tables of real plugins hold a few thousand).
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.current - current.min(self.current) + desired;
        if total > self.limit {
            self.refused = Some(total);
            return Ok(false);
        }
        self.current = total;
        self.peak = self.peak.max(total);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// Fixed clocks and a small seeded generator for reproducible runs.
mod fixed {
    use std::time::Duration;

    use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

    /// splitmix64: tiny, seeded, good enough for reproducible guest randomness in tests.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }
    }

    impl Rng {
        fn step(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
    }

    impl rand_core::TryRng for Rng {
        type Error = std::convert::Infallible;

        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok((self.step() >> 32) as u32)
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(self.step())
        }
        fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Self::Error> {
            for chunk in dest.chunks_mut(8) {
                let bytes = self.step().to_le_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
            Ok(())
        }
    }

    /// A clock standing still at a fixed time.
    pub struct Clock(pub u64);

    impl HostWallClock for Clock {
        fn resolution(&self) -> Duration {
            Duration::from_secs(1)
        }
        fn now(&self) -> Duration {
            Duration::from_secs(self.0)
        }
    }

    impl HostMonotonicClock for Clock {
        fn resolution(&self) -> u64 {
            1
        }
        fn now(&self) -> u64 {
            self.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(determinism: Determinism) -> CallState {
        CallState::new(
            Arc::new(Capabilities::default()),
            Arc::new(Grants::default()),
            Arc::from("test@sha256:0"),
            1 << 20,
            determinism,
        )
    }

    /// Counts the events each target emits, and keeps their messages.
    #[derive(Default, Clone)]
    struct Events(Arc<std::sync::Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Message(String);
            impl tracing::field::Visit for Message {
                fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                    if field.name() == "message" {
                        self.0 = format!("{value:?}");
                    }
                }
            }
            let mut m = Message(String::new());
            event.record(&mut m);
            self.0.lock().expect("events").push(m.0);
        }
    }

    #[test]
    fn a_flooding_plugin_writes_at_most_its_log_budget_and_the_host_says_so_once() {
        use crate::plugin::bindings::clusterstack::provider::log::{Host, Level};
        use tracing_subscriber::layer::SubscriberExt as _;
        let events = Events::default();
        let subscriber = tracing_subscriber::registry().with(events.clone());
        let mut s = state(Determinism::Real);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..10_000 {
                s.log(Level::Info, format!("line {i} {}", "x".repeat(1000)), vec![]);
            }
            // One huge line is cut, not passed on whole.
            s.log(Level::Error, "y".repeat(1 << 20), vec![]);
            s.ctx();
            s.flush_output();
        });
        let seen = events.0.lock().expect("events").clone();
        let lines = seen.iter().filter(|m| m.starts_with("line ")).count();
        assert_eq!(
            lines,
            (LOG_BYTES_PER_CALL / 1007).min(LOG_LINES_PER_CALL as usize)
        );
        assert!(
            seen.iter().all(|m| m.len() <= LOG_LINE_MAX + 64),
            "a line over the cap was logged"
        );
        let notes: Vec<&String> = seen.iter().filter(|m| m.contains("were dropped")).collect();
        assert_eq!(notes.len(), 1, "said once: {notes:?}");
        assert!(
            notes[0].contains(&format!("{} more lines", 10_001 - lines)),
            "{}",
            notes[0]
        );
        assert_eq!(s.log.dropped_lines, 10_001 - lines as u64);
    }

    #[test]
    fn a_long_line_is_cut_on_a_character_boundary_and_says_how_much() {
        let line = "ä".repeat(LOG_LINE_MAX);
        let cut = cut_line(&line);
        assert!(cut.len() <= LOG_LINE_MAX + 32, "{}", cut.len());
        assert!(
            cut.ends_with(&format!("... [{} bytes cut]", line.len() - LOG_LINE_MAX)),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert_eq!(cut_line("short"), "short");
    }

    #[test]
    fn wasi_is_built_on_first_use_only_and_then_kept() {
        let mut s = state(Determinism::Real);
        assert!(!s.wasi_built());
        assert_eq!(s.flush_output(), "", "no WASI yet: nothing captured");
        s.ctx();
        assert!(s.wasi_built());
        let first: *const WasiCtx = &s.wasi.as_ref().expect("built").ctx;
        s.ctx();
        assert!(
            std::ptr::eq(first, &s.wasi.as_ref().expect("built").ctx),
            "built once per call"
        );
    }
}
