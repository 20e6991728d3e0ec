//! The `stackhost` binary.

fn main() {
    // `stackhost crds`: print the CRDs (the lead wires the full CLI in cli.rs).
    if std::env::args().nth(1).as_deref() == Some("crds") {
        print!("{}", stackhost::api::crds_yaml());
    }
}
