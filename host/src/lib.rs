//! stackhost

pub mod oci;
