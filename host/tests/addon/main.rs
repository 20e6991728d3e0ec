//! The ClusterAddon controller and the runtime hooks against two API emulators (management and
//! workload), with the real Cluster API CRDs, real Helm (libhelm_c.so) and releases packed from
//! tests/fixtures/addon; and `stackhost run` as a process with the sample plugin and release.

mod env;
mod hooks;
mod inmemory;
mod legacy;
mod multi_stage;
mod real_charts;
mod run;
