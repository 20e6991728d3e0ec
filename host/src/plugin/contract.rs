//! Checks a component's imports and exports against the `provider` world before it is instantiated.
//!
//! Refusals name the import and say what to do: an unknown interface, a different (incompatible)
//! version of `clusterstack:provider`, or a WASI interface the sandbox does not offer (`wasi:http`).
//!
//! A capability the ProviderPlugin does not grant is not refused: Python and JavaScript toolchains
//! import every interface of the world whether the code uses it or not. Each call of an ungranted
//! capability gets the typed `denied` answer instead (see `capability`), and the controller compares
//! what the plugin's `info()` asks for with the grants ([`missing_grants`]).

use super::bindings::types::Capability;
use super::bindings::{EXPORT_INTERFACE, PACKAGE, PACKAGE_VERSION};
use super::Grants;

/// The WASI 0.2 packages a plugin may import. They are linked to an empty context: no preopened
/// directories, no environment; `sockets` deny every socket, address and name lookup with
/// `access-denied` before any OS socket exists; stdout/stderr go to the host log.
const WASI_PACKAGES: &[&str] = &["cli", "clocks", "random", "io", "filesystem", "sockets"];

/// Interfaces of `clusterstack:provider` a plugin may import.
const PROVIDER_IMPORTS: &[&str] = &["types", "log", "config", "http", "secrets", "state"];

/// An import or export name split into its parts: `ns:pkg/iface@version`.
#[derive(Debug, PartialEq, Eq)]
pub struct InterfaceName<'a> {
    pub namespace: &'a str,
    pub package: &'a str,
    pub interface: &'a str,
    pub version: Option<&'a str>,
}

impl<'a> InterfaceName<'a> {
    pub fn parse(name: &'a str) -> Option<Self> {
        let (path, version) = match name.split_once('@') {
            Some((path, version)) => (path, Some(version)),
            None => (name, None),
        };
        let (package, interface) = path.split_once('/')?;
        let (namespace, package) = package.split_once(':')?;
        Some(InterfaceName {
            namespace,
            package,
            interface,
            version,
        })
    }
}

/// Whether `version` is compatible with what the host implements (same major; for 0.x the same minor).
fn compatible(version: Option<&str>, implemented: &str) -> bool {
    let Some(version) = version else { return false };
    let parts = |v: &str| -> Option<(u64, u64)> {
        let mut it = v.split(['.', '-', '+']);
        Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
    };
    match (parts(version), parts(implemented)) {
        (Some((0, minor)), Some((0, host_minor))) => minor == host_minor,
        (Some((major, _)), Some((host_major, _))) => major == host_major,
        _ => false,
    }
}

/// Checks every import against the world, and that the `plugin` interface is exported.
pub fn check(imports: &[String], exports: &[String]) -> Result<(), String> {
    let mut problems = Vec::new();
    for import in imports {
        if let Err(problem) = check_import(import) {
            problems.push(problem);
        }
    }
    let wanted = format!("{PACKAGE}/{EXPORT_INTERFACE}");
    let exported = exports
        .iter()
        .find(|e| e.split('@').next() == Some(wanted.as_str()));
    match exported {
        None => problems.push(format!(
            "it does not export `{wanted}@{PACKAGE_VERSION}`: build it against the `provider` world of wit/"
        )),
        Some(export) => {
            let version = export.split_once('@').map(|(_, v)| v);
            if !compatible(version, PACKAGE_VERSION) {
                problems.push(format!(
                    "it exports `{export}`, but this host implements `{wanted}@{PACKAGE_VERSION}`: rebuild the plugin \
                     against wit/ of this stackhost version"
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn check_import(import: &str) -> Result<(), String> {
    let Some(name) = InterfaceName::parse(import) else {
        return Err(format!(
            "import `{import}` is not an interface of the provider world"
        ));
    };
    match (name.namespace, name.package) {
        ("clusterstack", "provider") => {
            if !compatible(name.version, PACKAGE_VERSION) {
                return Err(format!(
                    "import `{import}` is a different version of `{PACKAGE}`; this host implements \
                     {PACKAGE_VERSION}: rebuild the plugin against wit/ of this stackhost version"
                ));
            }
            if PROVIDER_IMPORTS.contains(&name.interface) {
                Ok(())
            } else {
                Err(format!(
                    "import `{import}` is not an interface of `{PACKAGE}@{PACKAGE_VERSION}`"
                ))
            }
        }
        ("wasi", package) => {
            if !compatible(name.version, "0.2.0") {
                return Err(format!("import `{import}`: only WASI 0.2 is supported"));
            }
            if WASI_PACKAGES.contains(&package) {
                Ok(())
            } else {
                Err(format!(
                    "import `{import}`: plugins get no direct network access; use \
                     `{PACKAGE}/http` with granted hosts instead"
                ))
            }
        }
        _ => Err(format!("import `{import}` is unknown to the provider world")),
    }
}

/// The capabilities a plugin's `info()` asks for that `grants` does not give, each with the
/// ProviderPlugin field that grants it. Calls of these capabilities get the typed `denied` answer.
pub fn missing_grants(requested: &[Capability], grants: &Grants) -> Vec<(Capability, &'static str)> {
    let mut missing: Vec<(Capability, &'static str)> = Vec::new();
    for capability in requested {
        let gap = match capability {
            Capability::Log => None,
            Capability::Http if grants.http_hosts.is_empty() => Some("spec.capabilities.httpHosts"),
            Capability::Secrets if grants.secret_keys.is_empty() => Some("spec.capabilities.secrets"),
            Capability::State if !grants.state => Some("the state grant"),
            _ => None,
        };
        if let Some(field) = gap {
            if !missing.iter().any(|(c, _)| c == capability) {
                missing.push((*capability, field));
            }
        }
    }
    missing
}

/// The WIT name of a capability (`http`), as `info()` and the ProviderPlugin status spell it.
pub fn capability_name(capability: Capability) -> &'static str {
    match capability {
        Capability::Log => "log",
        Capability::Http => "http",
        Capability::Secrets => "secrets",
        Capability::State => "state",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    const EXPORT: &[&str] = &["clusterstack:provider/plugin@0.1.0"];

    #[test]
    fn the_minimal_world_is_accepted() {
        let imports = names(&[
            "clusterstack:provider/types@0.1.0",
            "wasi:cli/stderr@0.2.6",
            "wasi:io/streams@0.2.0",
        ]);
        assert_eq!(check(&imports, &names(EXPORT)), Ok(()));
        assert_eq!(
            check(&[], &names(&["clusterstack:provider/plugin@0.1.3"])),
            Ok(())
        );
    }

    #[test]
    fn every_capability_and_wasi_sockets_load_whatever_is_granted() {
        // What componentize-py and componentize-js components import.
        let imports = names(&[
            "clusterstack:provider/http@0.1.0",
            "clusterstack:provider/secrets@0.1.0",
            "clusterstack:provider/state@0.1.0",
            "wasi:sockets/tcp@0.2.0",
            "wasi:sockets/ip-name-lookup@0.2.0",
            "wasi:filesystem/preopens@0.2.0",
        ]);
        assert_eq!(check(&imports, &names(EXPORT)), Ok(()));
    }

    #[test]
    fn refusals_name_the_import_and_the_fix() {
        let cases = [
            ("clusterstack:provider/log@0.2.0", "different version"),
            ("clusterstack:provider/log@1.0.0", "different version"),
            ("clusterstack:provider/shell@0.1.0", "not an interface"),
            (
                "wasi:http/outgoing-handler@0.2.0",
                "use `clusterstack:provider/http`",
            ),
            ("wasi:cli/environment@0.3.0", "only WASI 0.2"),
            ("acme:evil/exfiltrate@1.0.0", "unknown"),
        ];
        for (import, expected) in cases {
            let err = check(&names(&[import]), &names(EXPORT)).expect_err("must be refused");
            assert!(err.contains(&format!("`{import}`")), "{import}: {err}");
            assert!(err.contains(expected), "{import}: {err}");
        }
    }

    #[test]
    fn missing_grants_name_the_field_that_grants_them() {
        let all = [
            Capability::Log,
            Capability::Http,
            Capability::Secrets,
            Capability::State,
        ];
        let missing = missing_grants(&all, &Grants::default());
        assert_eq!(
            missing,
            vec![
                (Capability::Http, "spec.capabilities.httpHosts"),
                (Capability::Secrets, "spec.capabilities.secrets"),
                (Capability::State, "the state grant"),
            ]
        );
        let grants = Grants {
            http_hosts: names(&["a"]),
            secret_keys: names(&["s/k"]),
            state: true,
        };
        assert!(missing_grants(&all, &grants).is_empty());
        assert_eq!(
            missing_grants(&[Capability::Http, Capability::Http], &Grants::default()).len(),
            1
        );
    }

    #[test]
    fn the_export_must_be_there_in_a_compatible_version() {
        let err = check(&[], &names(&["clusterstack:provider/other@0.1.0"])).expect_err("must be refused");
        assert!(
            err.contains("does not export `clusterstack:provider/plugin@0.1.0`"),
            "{err}"
        );
        let err = check(&[], &names(&["clusterstack:provider/plugin@0.2.0"])).expect_err("must be refused");
        assert!(
            err.contains("exports `clusterstack:provider/plugin@0.2.0`"),
            "{err}"
        );
    }
}
