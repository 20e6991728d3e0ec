//! Serving certificates read from a directory (`tls.crt`, `tls.key`, optional `ca.crt`, as cert-manager
//! writes a Secret volume) and reloaded when the files change: every TLS handshake compares the files'
//! size, modification time and inode with the loaded ones (two `stat` calls) and reads them again on a
//! difference, so a rotated certificate is served from the next connection on without a restart. A
//! half-written pair (new certificate, old key) is not loaded: the previous certificate keeps serving
//! until the pair matches again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube_emulator::tls::Tls;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

/// Why the certificate directory cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct CertError {
    /// The file (or the directory).
    pub path: PathBuf,
    /// Why, and what to do.
    pub reason: String,
}

/// What identifies one version of the files: (size, modification time, inode) of each.
type Stamp = Vec<Option<(u64, std::time::SystemTime, u64)>>;

/// A certificate and key from a directory, reloaded when the files change.
#[derive(Debug)]
pub struct CertDir {
    dir: PathBuf,
    /// The flag that named the directory, for messages.
    flag: &'static str,
    current: Mutex<(Stamp, Arc<CertifiedKey>)>,
}

impl CertDir {
    /// Loads `tls.crt` and `tls.key` from `dir` (named by `flag` in messages); fails when they are
    /// missing, not PEM, or do not belong together.
    pub fn load(dir: &Path, flag: &'static str) -> Result<Self, CertError> {
        let stamp = stamp(dir);
        let key = load_pair(dir, flag)?;
        Ok(CertDir {
            dir: dir.to_path_buf(),
            flag,
            current: Mutex::new((stamp, Arc::new(key))),
        })
    }

    /// PEM for clients to trust: `ca.crt` when present, else `tls.crt`.
    pub fn ca_pem(&self) -> Result<String, CertError> {
        let ca = self.dir.join("ca.crt");
        let file = if ca.is_file() {
            ca
        } else {
            self.dir.join("tls.crt")
        };
        std::fs::read_to_string(&file).map_err(|e| CertError {
            path: file,
            reason: e.to_string(),
        })
    }

    /// A TLS server configuration that serves the current certificate of the directory.
    pub fn tls(self: Arc<Self>) -> Result<Tls, CertError> {
        let ca_pem = self.ca_pem()?;
        let dir = self.dir.clone();
        Tls::with_resolver(self, ca_pem).map_err(|e| CertError {
            path: dir,
            reason: e.to_string(),
        })
    }

    /// The certificate to serve now, reloaded first when the files changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let now = stamp(&self.dir);
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.0 != now {
            match load_pair(&self.dir, self.flag) {
                Ok(key) => {
                    tracing::info!(dir = %self.dir.display(), "reloaded the serving certificate");
                    *current = (now, Arc::new(key));
                }
                Err(e) => {
                    // Remember the stamp so that the same broken files are reported once.
                    tracing::warn!(error = %e, "cannot reload the serving certificate; keeping the previous one");
                    current.0 = now;
                }
            }
        }
        current.1.clone()
    }
}

impl ResolvesServerCert for CertDir {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn stamp(dir: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    ["tls.crt", "tls.key"]
        .iter()
        .map(|f| {
            // `metadata` follows symlinks: a Secret volume swaps its `..data` link on an update.
            std::fs::metadata(dir.join(f))
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?, m.ino())))
        })
        .collect()
}

fn load_pair(dir: &Path, flag: &str) -> Result<CertifiedKey, CertError> {
    let hint = format!(
        "{flag} needs tls.crt and tls.key in PEM (as cert-manager writes them); leave it unset for a \
         generated certificate"
    );
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let bad = |path: &Path| {
        let path = path.to_path_buf();
        let hint = hint.clone();
        move |e: rustls::pki_types::pem::Error| CertError {
            path,
            reason: format!("{e}; {hint}"),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(bad(&cert_path))?
        .collect::<Result<_, _>>()
        .map_err(bad(&cert_path))?;
    if certs.is_empty() {
        return Err(CertError {
            path: cert_path,
            reason: format!("no PEM certificate in the file; {hint}"),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(bad(&key_path))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError {
            path: key_path.clone(),
            reason: format!("{e}; {hint}"),
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|e| CertError {
        path: dir.to_path_buf(),
        reason: format!("tls.key does not belong to tls.crt: {e}"),
    })?;
    Ok(certified)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).expect("params");
        let cert = params.self_signed(&key).expect("cert");
        std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
        std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
        cert.pem()
    }

    fn leaf(key: &CertifiedKey) -> Vec<u8> {
        key.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_served_and_a_mismatched_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_pair(dir.path(), "one.example");
        let certs = CertDir::load(dir.path(), "--hooks-cert-dir").expect("loads");
        let first = leaf(&certs.current());

        let second_pem = write_pair(dir.path(), "two.example");
        let second = leaf(&certs.current());
        assert_ne!(first, second, "the rotated certificate is served");
        let expected = CertificateDer::from_pem_slice(second_pem.as_bytes()).expect("pem");
        assert_eq!(second, expected.to_vec());

        // A new certificate whose key is not there yet: the previous pair keeps serving.
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["three.example".to_owned()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        std::fs::write(dir.path().join("tls.crt"), format!("{}\n", cert.pem())).expect("tls.crt");
        assert_eq!(leaf(&certs.current()), second);
    }

    #[test]
    fn missing_files_name_the_flag() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = CertDir::load(dir.path(), "--metrics-cert-dir").expect_err("no files");
        let text = err.to_string();
        assert!(
            text.contains("tls.crt") && text.contains("--metrics-cert-dir"),
            "{text}"
        );
    }
}
