//! TLS for both directions, with rustls and its `ring` provider.
//!
//! Outbound connections verify the remote's certificate against the
//! system's roots plus any extra CA files the admin names (test set-ups
//! make their own CA). The only way to skip verification is
//! [`OutboundTls::insecure_for_local_development`], named so that nobody
//! turns it on by accident.

use std::{path::Path, sync::Arc};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime, pem::PemObject},
};

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path} holds no certificate")]
    NoCertificate { path: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

// rustls deprecates ring's provider only because it lacks post-quantum key
// exchange; aws-lc-rs would add a large C build to every checkout, and
// Matrix servers negotiate classic X25519 today.
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |reason: String| TlsError::File {
        path: path.display().to_string(),
        reason,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.display().to_string(),
        });
    }
    Ok(certificates)
}

/// A listener's TLS: the certificate chain and private key from PEM files.
pub fn server_config(certificate: &Path, private_key: &Path) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(certificate)?;
    let key = PrivateKeyDer::from_pem_file(private_key).map_err(|e| TlsError::File {
        path: private_key.display().to_string(),
        reason: e.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How outbound connections check the certificates they are shown.
pub enum OutboundTls<'a> {
    /// System roots plus the CA certificates in these PEM files.
    Verified {
        extra_ca_files: &'a [std::path::PathBuf],
    },
    /// Accept any certificate. Only for a development set-up on one machine.
    InsecureForLocalDevelopment,
}

impl OutboundTls<'_> {
    pub fn insecure_for_local_development() -> Self {
        OutboundTls::InsecureForLocalDevelopment
    }
}

/// The client side of outbound federation connections.
pub fn client_config(mode: OutboundTls<'_>) -> Result<ClientConfig, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut config = match mode {
        OutboundTls::Verified { extra_ca_files } => {
            let mut roots = RootCertStore::empty();
            // An unreadable system store only means fewer roots; the
            // admin's own CA files must load.
            let system = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(system.certs);
            for path in extra_ca_files {
                for certificate in read_certificates(path)? {
                    roots.add(certificate)?;
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        OutboundTls::InsecureForLocalDevelopment => {
            tracing::warn!("outbound TLS certificates are NOT verified (local development only)");
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(
                    provider().signature_verification_algorithms,
                )))
                .with_no_client_auth()
        }
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Checks handshake signatures (so the connection is still a real TLS
/// session) but not who the certificate belongs to.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_schemes()
    }
}
