//! Checks a component's imports and exports against the `provider` world before it is instantiated.
//!
//! Refusals name the import and say what to do: an unknown interface, a different (incompatible)
//! version of `clusterstack:provider`, a WASI interface the sandbox does not offer (sockets, http), or a
//! capability the ProviderPlugin does not grant.

use super::bindings::{EXPORT_INTERFACE, PACKAGE, PACKAGE_VERSION};
use super::Grants;

/// The WASI 0.2 packages a plugin may import. They are linked to an empty context: no preopened
/// directories, no environment, no sockets; stdout/stderr go to the host log.
const WASI_PACKAGES: &[&str] = &["cli", "clocks", "random", "io", "filesystem"];

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

/// Checks every import against the world and the grants, and that the `plugin` interface is exported.
pub fn check(imports: &[String], exports: &[String], grants: &Grants) -> Result<(), String> {
    let mut problems = Vec::new();
    for import in imports {
        if let Err(problem) = check_import(import, grants) {
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

fn check_import(import: &str, grants: &Grants) -> Result<(), String> {
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
            if !PROVIDER_IMPORTS.contains(&name.interface) {
                return Err(format!(
                    "import `{import}` is not an interface of `{PACKAGE}@{PACKAGE_VERSION}`"
                ));
            }
            let (granted, field) = match name.interface {
                "http" => (!grants.http_hosts.is_empty(), "spec.capabilities.httpHosts"),
                "secrets" => (!grants.secret_keys.is_empty(), "spec.capabilities.secrets"),
                "state" => (grants.state, "spec.capabilities.state"),
                _ => (true, ""),
            };
            if granted {
                Ok(())
            } else {
                Err(format!(
                    "import `{import}` is not granted to this plugin; grant it in the ProviderPlugin's {field} \
                     (or `--grant`/`--allow-http`/`--secret` on the command line)"
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
                    "import `{import}`: plugins get no sockets or direct network access; use \
                     `{PACKAGE}/http` with granted hosts instead"
                ))
            }
        }
        _ => Err(format!("import `{import}` is unknown to the provider world")),
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
        assert_eq!(check(&imports, &names(EXPORT), &Grants::default()), Ok(()));
        assert_eq!(
            check(
                &[],
                &names(&["clusterstack:provider/plugin@0.1.3"]),
                &Grants::default()
            ),
            Ok(())
        );
    }

    #[test]
    fn refusals_name_the_import_and_the_fix() {
        let cases = [
            ("clusterstack:provider/http@0.1.0", "spec.capabilities.httpHosts"),
            ("clusterstack:provider/secrets@0.1.0", "spec.capabilities.secrets"),
            ("clusterstack:provider/state@0.1.0", "spec.capabilities.state"),
            ("clusterstack:provider/log@0.2.0", "different version"),
            ("clusterstack:provider/log@1.0.0", "different version"),
            ("clusterstack:provider/shell@0.1.0", "not an interface"),
            ("wasi:sockets/tcp@0.2.0", "no sockets"),
            ("wasi:http/outgoing-handler@0.2.0", "no sockets"),
            ("wasi:cli/environment@0.3.0", "only WASI 0.2"),
            ("acme:evil/exfiltrate@1.0.0", "unknown"),
        ];
        for (import, expected) in cases {
            let err =
                check(&names(&[import]), &names(EXPORT), &Grants::default()).expect_err("must be refused");
            assert!(err.contains(&format!("`{import}`")), "{import}: {err}");
            assert!(err.contains(expected), "{import}: {err}");
        }
    }

    #[test]
    fn grants_let_capabilities_in() {
        let grants = Grants {
            http_hosts: names(&["a"]),
            secret_keys: names(&["s/k"]),
            state: true,
        };
        let imports = names(&[
            "clusterstack:provider/http@0.1.0",
            "clusterstack:provider/secrets@0.1.0",
            "clusterstack:provider/state@0.1.0",
        ]);
        assert_eq!(check(&imports, &names(EXPORT), &grants), Ok(()));
    }

    #[test]
    fn the_export_must_be_there_in_a_compatible_version() {
        let err = check(
            &[],
            &names(&["clusterstack:provider/other@0.1.0"]),
            &Grants::default(),
        )
        .expect_err("must be refused");
        assert!(
            err.contains("does not export `clusterstack:provider/plugin@0.1.0`"),
            "{err}"
        );
        let err = check(
            &[],
            &names(&["clusterstack:provider/plugin@0.2.0"]),
            &Grants::default(),
        )
        .expect_err("must be refused");
        assert!(
            err.contains("exports `clusterstack:provider/plugin@0.2.0`"),
            "{err}"
        );
    }
}
