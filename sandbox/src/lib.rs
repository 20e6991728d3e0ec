//! In-process Kubernetes API emulator: serves the Kubernetes REST API on 127.0.0.1 for tests,
//! kubectl and `stackhost sandbox`.
