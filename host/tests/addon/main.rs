//! The ClusterAddon controller and the runtime hooks against two API emulators (management and
//! workload), with the real Cluster API CRDs, real Helm (libhelm_c.so) and releases packed from
//! tests/fixtures/addon; `stackhost run` as a process with the sample plugin and release; and the real
//! SCS docker stack built from source, from ClusterStack to addons and an upgrade; pausing with the Cluster.

mod env;
mod hooks;
mod inmemory;
mod legacy;
mod multi_stage;
mod paused;
mod real_charts;
mod real_stack;
mod run;
