//! TLS for both listeners (rustls with the ring provider, TLS 1.3 and 1.2): loading a
//! certificate chain and its key from PEM files into a server configuration. The collector
//! and the http process each load their own at start; the config check loads them too, so a
//! bad file stops the master at start (exit 78) instead of crash-looping a child.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key_file: PathBuf,
}

impl TlsFiles {
    /// Both keys or neither: `prefix` names them in the error ("tls_" or "http_tls_").
    pub fn from_keys(
        prefix: &str,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
    ) -> anyhow::Result<Option<TlsFiles>> {
        match (cert, key) {
            (None, None) => Ok(None),
            (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
                cert_file,
                key_file,
            })),
            _ => bail!("keys `{prefix}cert_file` and `{prefix}key_file`: set both or neither"),
        }
    }

    /// A server configuration offering `alpn` (empty: no ALPN).
    pub fn server_config(&self, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
        let certs = read_certs(&self.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&self.key_file).with_context(|| {
            format!(
                "cannot read a PEM private key from {}",
                self.key_file.display()
            )
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .with_context(|| {
                format!(
                    "the key in {} does not fit the certificate in {}",
                    self.key_file.display(),
                    self.cert_file.display()
                )
            })?;
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(Arc::new(config))
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read PEM certificates from {}", path.display()))?;
    if certs.is_empty() {
        bail!("{} holds no PEM certificate", path.display());
    }
    Ok(certs)
}
