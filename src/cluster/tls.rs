//! TLS between nodes (`--cluster-tls-cert`, `--cluster-tls-key`,
//! `--cluster-ca`): mutual, with one CA for the cluster. Every node
//! presents its certificate both when it accepts and when it dials, and
//! accepts only peers whose certificate that CA signed; a dialing node
//! checks the peer's certificate against the host it dialed (so a
//! certificate names its node's address: an IP SAN, or a DNS name).
//!
//! The cookie is still checked inside the TLS session.

use std::{path::Path, sync::Arc};

use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use tokio_rustls::rustls;

use super::ClusterError;

/// Both sides of a node's TLS.
#[derive(Debug, Clone)]
pub struct ClusterTls {
    /// For the connections it accepts (peers must present a certificate).
    pub server: Arc<rustls::ServerConfig>,
    /// For the connections it dials (it presents its own).
    pub client: Arc<rustls::ClientConfig>,
}

fn bad(reason: String) -> ClusterError {
    ClusterError::Tls { reason }
}

impl ClusterTls {
    /// Loads a node's certificate chain and key, and the cluster's CA (all
    /// PEM); errors name the option and the file.
    pub fn load(cert: &Path, key: &Path, ca: &Path) -> Result<Self, ClusterError> {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| {
                bad(format!(
                    "--cluster-tls-cert {}: failed to read it: {e}",
                    cert.display()
                ))
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                bad(format!(
                    "--cluster-tls-cert {}: not a PEM certificate: {e}",
                    cert.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(bad(format!(
                "--cluster-tls-cert {}: no certificate in it",
                cert.display()
            )));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            bad(format!(
                "--cluster-tls-key {}: not a PEM private key: {e}",
                key.display()
            ))
        })?;
        let mut roots = rustls::RootCertStore::empty();
        let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .map_err(|e| {
                bad(format!(
                    "--cluster-ca {}: failed to read it: {e}",
                    ca.display()
                ))
            })?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                bad(format!(
                    "--cluster-ca {}: not a PEM certificate: {e}",
                    ca.display()
                ))
            })?;
        for c in cas {
            roots
                .add(c)
                .map_err(|e| bad(format!("--cluster-ca {}: {e}", ca.display())))?;
        }
        if roots.is_empty() {
            return Err(bad(format!(
                "--cluster-ca {}: no certificate in it",
                ca.display()
            )));
        }
        let roots = Arc::new(roots);
        // ring, as for the API's TLS.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .map_err(|e| bad(format!("--cluster-ca {}: {e}", ca.display())))?;
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("failed to set up TLS: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs.clone(), key_der.clone_key())
            .map_err(|e| bad(format!("--cluster-tls-cert/--cluster-tls-key: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("failed to set up TLS: {e}")))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key_der)
            .map_err(|e| bad(format!("--cluster-tls-cert/--cluster-tls-key: {e}")))?;
        Ok(Self {
            server: Arc::new(server),
            client: Arc::new(client),
        })
    }
}

/// The name a dialed peer's certificate must carry: the host of
/// `host:port` (an IP address or a DNS name).
pub fn server_name(addr: &str) -> Result<ServerName<'static>, String> {
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host:?} cannot be checked against a certificate: {e}"))
}
