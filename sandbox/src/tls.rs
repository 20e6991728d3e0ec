//! HTTPS for a cluster: a fresh CA and a serving certificate for 127.0.0.1/localhost per cluster, and an axum
//! listener that completes TLS handshakes off the accept loop.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Certificate generation or TLS setup failed.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// rcgen refused the parameters.
    #[error("cannot generate the cluster certificates: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate or key.
    #[error("cannot configure TLS: {0}")]
    Configure(#[from] rustls::Error),
}

/// The CA and the server configuration of one cluster.
#[derive(Debug, Clone)]
pub struct Tls {
    /// PEM of the CA certificate (for kubeconfig `certificate-authority-data`).
    pub ca_pem: String,
    /// DER of the CA certificate (for `kube::Config::root_cert`).
    pub ca_der: Vec<u8>,
    config: Arc<ServerConfig>,
}

impl Tls {
    /// A new CA and a serving certificate for `127.0.0.1` and `localhost`.
    pub fn generate() -> Result<Self, TlsError> {
        Self::generate_for(&["127.0.0.1", "localhost"])
    }

    /// A new CA and a serving certificate for `names` (DNS names or IP addresses), e.g. an admission
    /// webhook's `name.namespace.svc`.
    pub fn generate_for(names: &[&str]) -> Result<Self, TlsError> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kube-emulator-ca");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        let cert = params.signed_by(&key, &ca)?;
        Self::new(
            vec![cert.der().clone(), ca.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            ca.pem(),
        )
    }

    /// A server with the certificate `chain` (leaf first) and its `key`, e.g. read from files; `ca_pem`
    /// is what clients are told to trust (its first certificate becomes `ca_der`).
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        ca_pem: String,
    ) -> Result<Self, TlsError> {
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
        // The server speaks HTTP/1.1 only.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem,
            ca_der,
            config: Arc::new(config),
        })
    }

    /// A server whose certificate `resolver` picks at each handshake (e.g. one reloaded from files when
    /// they change); `ca_pem` is what clients are told to trust.
    pub fn with_resolver(
        resolver: Arc<dyn rustls::server::ResolvesServerCert>,
        ca_pem: String,
    ) -> Result<Self, TlsError> {
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(resolver);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            ca_pem,
            ca_der,
            config: Arc::new(config),
        })
    }

    /// Wrap a TCP listener.
    pub fn listener(&self, tcp: TcpListener) -> TlsListener {
        let local = tcp.local_addr().ok();
        let acceptor = TlsAcceptor::from(self.config.clone());
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                // Handshakes run on their own so one slow client cannot block the others.
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        TlsListener { rx, local, task }
    }
}

/// An axum listener yielding TLS streams.
#[derive(Debug)]
pub struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            // The accept task only ends when aborted; wait for shutdown instead of spinning.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the TLS listener has no local address"))
    }
}
