//! TLS to the master (rustls, ring, TLS 1.3): the master's certificate is verified against a
//! CA bundle and the server name, or pinned by its SHA-256, or both (docs/PROTOCOL.md,
//! section 1.1). A certificate that fails either check ends the handshake before any
//! protocol byte is sent.
//!
//! The crypto provider holds only what a TLS 1.3 client of our master needs, because every
//! algorithm listed is linked into the binary and the agent must stay under 2 MB: one AEAD
//! (AES-128-GCM) and one key exchange (P-256 ECDHE: its code and ~150 KB of tables are
//! linked anyway to verify ECDSA certificates), plus signature verification for ECDSA
//! P-256/P-384, Ed25519 and RSA certificates. Leaving out X25519 and ChaCha20-Poly1305
//! saved ~80 KB on x86_64; the master offers every rustls default, so they always agree.

use std::sync::Arc;

use anyhow::{anyhow, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{
    verify_tls12_signature, verify_tls13_signature, CryptoProvider, GetRandomFailed, KeyProvider,
    SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::sign::SigningKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::TlsSettings;

/// A ready client configuration and the name it checks.
#[derive(Clone)]
pub struct Client {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tls::Client")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Reads the CA file; errors name the key and the file.
    pub fn new(settings: &TlsSettings) -> anyhow::Result<Client> {
        let provider = Arc::new(provider());
        let server_name = ServerName::try_from(settings.server_name.clone()).map_err(|_| {
            anyhow!(
                "invalid tls_server_name: {:?} is not a DNS name or IP address",
                settings.server_name
            )
        })?;
        let ca = match &settings.ca_file {
            None => None,
            Some(path) => {
                let mut roots = RootCertStore::empty();
                let certs = CertificateDer::pem_file_iter(path)
                    .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                    .with_context(|| {
                        format!(
                            "invalid tls_ca_file: cannot read PEM certificates from {}",
                            path.display()
                        )
                    })?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(anyhow!(
                        "invalid tls_ca_file: {} holds no usable CA certificate",
                        path.display()
                    ));
                }
                Some(
                    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .context("invalid tls_ca_file")?,
                )
            }
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .context("TLS protocol versions")?;
        let config = match (settings.pin_sha256, ca) {
            (None, Some(ca)) => builder.with_webpki_verifier(ca).with_no_client_auth(),
            (Some(pin), ca) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier { pin, ca, provider }))
                .with_no_client_auth(),
            (None, None) => return Err(anyhow!("TLS needs tls_ca_file or tls_pin_sha256")),
        };
        Ok(Client {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
        })
    }

    /// The handshake; a failure is described for the log (the pin's own words instead of
    /// rustls' debug form of a custom error).
    pub async fn connect(&self, tcp: TcpStream) -> Result<TlsStream<TcpStream>, String> {
        self.connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| describe(&e))
    }
}

fn describe(error: &std::io::Error) -> String {
    match error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => {
            format!("invalid peer certificate: {}", other.0)
        }
        _ => error.to_string(),
    }
}

/// Accepts exactly the certificate whose DER form hashes to `pin` (and, with `ca`, only if
/// the CA check passes too). The handshake signature is still verified against that
/// certificate's key, so a copy of the certificate without its key does not pass.
#[derive(Debug)]
struct PinVerifier {
    pin: [u8; 32],
    ca: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

/// The pin check's failure, as the agent logs it.
#[derive(Debug, thiserror::Error)]
#[error("the certificate's SHA-256 is {got}, not the configured tls_pin_sha256")]
struct PinMismatch {
    got: String,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(ca) = &self.ca {
            ca.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        let got: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, end_entity.as_ref())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        if got != self.pin {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(PinMismatch {
                    got: hex::encode(got),
                })),
            )));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The agent's crypto provider: see the module comment.
fn provider() -> CryptoProvider {
    use rustls::crypto::ring::{cipher_suite, kx_group};
    CryptoProvider {
        cipher_suites: vec![cipher_suite::TLS13_AES_128_GCM_SHA256],
        kx_groups: vec![kx_group::SECP256R1],
        signature_verification_algorithms: SIGNATURES,
        secure_random: &Random,
        key_provider: &NoKeys,
    }
}

/// Certificates and handshakes signed with ECDSA (P-256, P-384), Ed25519 or RSA: what CAs
/// and `openssl req` produce. (rustls' list for ring, TLS 1.3 mappings.)
static SIGNATURES: WebPkiSupportedAlgorithms = WebPkiSupportedAlgorithms {
    all: &[
        webpki::ring::ECDSA_P256_SHA256,
        webpki::ring::ECDSA_P256_SHA384,
        webpki::ring::ECDSA_P384_SHA256,
        webpki::ring::ECDSA_P384_SHA384,
        webpki::ring::ED25519,
        webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
        webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512,
        webpki::ring::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
        webpki::ring::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
        webpki::ring::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
    ],
    mapping: &[
        (
            SignatureScheme::ECDSA_NISTP384_SHA384,
            &[webpki::ring::ECDSA_P384_SHA384],
        ),
        (
            SignatureScheme::ECDSA_NISTP256_SHA256,
            &[webpki::ring::ECDSA_P256_SHA256],
        ),
        (SignatureScheme::ED25519, &[webpki::ring::ED25519]),
        (
            SignatureScheme::RSA_PSS_SHA512,
            &[webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA384,
            &[webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
        ),
        (
            SignatureScheme::RSA_PSS_SHA256,
            &[webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
        ),
    ],
};

/// The operating system's randomness, through ring (for the key exchange and the nonces).
#[derive(Debug)]
struct Random;

impl SecureRandom for Random {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        use ring::rand::SecureRandom as _;
        ring::rand::SystemRandom::new()
            .fill(buf)
            .map_err(|_| GetRandomFailed)
    }
}

/// The agent presents no certificate, so it never loads a private key.
#[derive(Debug)]
struct NoKeys;

impl KeyProvider for NoKeys {
    fn load_private_key(
        &self,
        _key: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        Err(rustls::Error::General(
            "the agent uses no private key".into(),
        ))
    }
}
