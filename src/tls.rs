//! TLS for those without a reverse proxy: the server's acceptor (rustls
//! with the ring provider), and the client's trust (the system's roots,
//! or the CA certificates in a `ca_file`).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the certificate file {}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not PEM certificates", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(certs)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server's TLS configuration from a PEM certificate chain and key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = certs(cert)?;
    let pem = std::fs::read(key)
        .with_context(|| format!("cannot read the key file {}", key.display()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            anyhow::anyhow!("{} holds no private key", key.display())
        }
        e => anyhow::anyhow!("{} is not a PEM private key: {e}", key.display()),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not go together")?;
    Ok(Arc::new(config))
}

/// The CA certificates in `ca_file`, each checked to be usable as a root.
pub fn ca_certs(ca_file: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = certs(ca_file)?;
    let mut roots = rustls::RootCertStore::empty();
    for c in &certs {
        roots
            .add(c.clone())
            .with_context(|| format!("a certificate in {} is not usable", ca_file.display()))?;
    }
    Ok(certs)
}
