//! The ClusterAddon controller and the runtime hooks against two API emulators (management and
//! workload), with the real Cluster API CRDs, real Helm (libhelm_c.so) and releases packed from
//! tests/fixtures/addon.

mod env;
mod hooks;
mod inmemory;
mod legacy;
mod multi_stage;
