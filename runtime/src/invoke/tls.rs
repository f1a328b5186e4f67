//! TLS for `https://` function endpoints: which servers to trust and which
//! certificate to present, from StateFun's transport keys ([`TlsFiles`]).
//!
//! The files are read once, when the endpoint's client is built at start; a
//! file that cannot be read or holds nothing usable stops the start with the
//! key, the file and the problem. Trust is the system's roots unless
//! `trust_cacerts` names the CAs to trust instead; `client_cert` and
//! `client_key` are presented to a server that asks (mutual TLS), the key
//! decrypted with `client_key_password` if it is encrypted ([`super::pkcs8`]).
//! rustls on aws-lc-rs, the stack the AWS SDK's client uses too.

use std::path::Path;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsFiles;

/// The TLS settings of an endpoint; for an `http://` one (`https` false),
/// settings that are never used and read no file.
pub fn client_config(files: &TlsFiles, https: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    if !https {
        return Ok(builder.with_root_certificates(RootCertStore::empty()).with_no_client_auth());
    }
    let roots = match &files.trust_cacerts {
        Some(path) => roots_from(path)?,
        None => system_roots()?,
    };
    let builder = builder.with_root_certificates(roots);
    let (Some(cert), Some(key)) = (&files.client_cert, &files.client_key) else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = certificates(cert, "transport.client_cert")?;
    let private_key = match &files.client_key_password {
        Some(password) => encrypted_key(key, password)?,
        None => PrivateKeyDer::from_pem_file(key).map_err(|e| {
            format!(
                "transport.client_key: {}: no unencrypted PEM private key (PKCS#8, PKCS#1 or SEC1) could be read \
                 (an encrypted one needs transport.client_key_password): {e}",
                key.display()
            )
        })?,
    };
    builder.with_client_auth_cert(chain, private_key).map_err(|e| {
        format!(
            "transport.client_cert and transport.client_key ({} and {}) do not make a client identity: {e}",
            cert.display(),
            key.display()
        )
    })
}

/// The encrypted PKCS#8 key of a PEM file, decrypted with `password` (which no message repeats).
fn encrypted_key(path: &Path, password: &str) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("transport.client_key: {}: {e}", path.display()))?;
    if !super::pkcs8::is_encrypted(&text) {
        return Err(format!(
            "transport.client_key: {}: transport.client_key_password is given, but the file holds no encrypted \
             PKCS#8 key (-----BEGIN ENCRYPTED PRIVATE KEY-----; `openssl pkcs8 -topk8 -v2 aes-256-cbc` writes one)",
            path.display()
        ));
    }
    let der = super::pkcs8::decrypt_pem(&text, password)
        .map_err(|e| format!("transport.client_key: {}: {e}", path.display()))?;
    Ok(PrivateKeyDer::Pkcs8(der.into()))
}

/// The certificates of a PEM file; at least one.
fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let unreadable = |e: rustls_pki_types::pem::Error| format!("{key}: {}: {e}", path.display());
    let certificates =
        CertificateDer::pem_file_iter(path).map_err(unreadable)?.collect::<Result<Vec<_>, _>>().map_err(unreadable)?;
    if certificates.is_empty() {
        return Err(format!("{key}: {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display()));
    }
    Ok(certificates)
}

fn roots_from(path: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for certificate in certificates(path, "transport.trust_cacerts")? {
        roots.add(certificate).map_err(|e| {
            format!("transport.trust_cacerts: {}: a certificate cannot be trusted: {e}", path.display())
        })?;
    }
    Ok(roots)
}

fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let problems: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(format!(
            "no trusted CA certificates in the system's store ({}); install the ca-certificates package or give \
             transport.trust_cacerts",
            if problems.is_empty() { "it is empty".to_owned() } else { problems.join("; ") }
        ));
    }
    Ok(roots)
}
