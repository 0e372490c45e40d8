//! TLS (rustls) on every listener, from one certificate chain and key in PEM files: OTLP/gRPC and
//! Flight SQL through tonic's own TLS, OTLP/HTTP and the query port through a listener that
//! finishes each handshake before axum sees the connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;

/// Makes ring the process' TLS crypto provider, once: reqwest's `https://` clients (scrapes)
/// find their provider there, and building one without it panics.
pub fn install_crypto_provider() {
    // Err only when a provider is installed already, which is as good.
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// `[tls]` in the config: both files, or neither (plain TCP, as before).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, PEM, leaf first.
    pub cert_file: Option<PathBuf>,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

/// A loaded certificate and key, ready for both kinds of server.
#[derive(Clone)]
pub struct Tls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    acceptor: TlsAcceptor,
}

/// A handshake that has not finished in this long is dropped: a client that connects and sends
/// nothing must not hold a task forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Tls {
    /// `None` when TLS is not configured; an error naming the file when it is and cannot be used.
    pub fn load(config: &TlsConfig) -> Result<Option<Tls>, String> {
        let (cert_file, key_file) = match (&config.cert_file, &config.key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                return Err(
                    "tls.cert_file and tls.key_file go together: set both or neither".into(),
                );
            }
        };
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(|e| format!("tls.{what} {}: {e}", path.display()))
        };
        let cert_pem = read(cert_file, "cert_file")?;
        let key_pem = read(key_file, "key_file")?;
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("tls.cert_file {}: {e}", cert_file.display()))?;
        if chain.is_empty() {
            return Err(format!(
                "tls.cert_file {}: no PEM certificate in it",
                cert_file.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|e| format!("tls.key_file {}: {e}", key_file.display()))?;
        let mut server = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| {
            format!(
                "tls: the key in {} does not fit the certificate in {}: {e}",
                key_file.display(),
                cert_file.display()
            )
        })?;
        // HTTP/2 for gRPC clients of the HTTP doors, HTTP/1.1 for everyone else.
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Some(Tls {
            cert_pem,
            key_pem,
            acceptor: TlsAcceptor::from(Arc::new(server)),
        }))
    }

    /// The same certificate for a tonic server.
    pub fn tonic(&self) -> tonic::transport::ServerTlsConfig {
        tonic::transport::ServerTlsConfig::new().identity(tonic::transport::Identity::from_pem(
            &self.cert_pem,
            &self.key_pem,
        ))
    }

    /// A listener for axum whose connections are TLS streams.
    pub fn listener(&self, listener: TcpListener) -> TlsListener {
        let local = listener.local_addr().ok();
        let (sender, receiver) = mpsc::channel(64);
        let acceptor = self.acceptor.clone();
        tokio::spawn(async move {
            loop {
                let (mut stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                if sender.is_closed() {
                    return;
                }
                crate::server::set_nodelay(&mut stream);
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                // Handshakes run side by side, so a slow one does not hold up the others.
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let _ = sender.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        TlsListener { receiver, local }
    }
}

/// Connections whose TLS handshake has finished.
pub struct TlsListener {
    receiver: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.receiver.recv().await {
            Some(accepted) => accepted,
            // The accept task only stops when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the listener has no local address"))
    }
}
