//! Shared helpers for stackhost's integration tests (paths to built plugins, fixtures).
