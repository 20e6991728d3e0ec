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
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) memory: MemoryLimiter,
    pub(crate) caps: Arc<Capabilities>,
    pub(crate) grants: Arc<Grants>,
    /// `name@sha256:abcd1234` for logs.
    pub(crate) plugin: Arc<str>,
    pub(crate) host_calls: u32,
    pub(crate) stdout: MemoryOutputPipe,
    pub(crate) stderr: MemoryOutputPipe,
}

impl CallState {
    pub(crate) fn new(
        caps: Arc<Capabilities>,
        grants: Arc<Grants>,
        plugin: Arc<str>,
        memory_limit: usize,
        determinism: Determinism,
    ) -> Self {
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
        CallState {
            wasi: builder.build(),
            table: ResourceTable::new(),
            memory: MemoryLimiter::new(memory_limit),
            caps,
            grants,
            plugin,
            host_calls: 0,
            stdout,
            stderr,
        }
    }

    /// Sends what the guest wrote to stdout/stderr into the host log, one event per line.
    pub(crate) fn flush_output(&self) -> String {
        let plugin = &*self.plugin;
        for line in String::from_utf8_lossy(&self.stdout.contents()).lines() {
            tracing::info!(target: "plugin", plugin, stream = "stdout", "{line}");
        }
        let stderr = String::from_utf8_lossy(&self.stderr.contents()).into_owned();
        for line in stderr.lines() {
            tracing::warn!(target: "plugin", plugin, stream = "stderr", "{line}");
        }
        stderr
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
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
