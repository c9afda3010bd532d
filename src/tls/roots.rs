//! Building the rustls client configuration for a mode: trusted roots from `sslrootcert`, and
//! the verifier the mode asks for.

use super::verify::{ChainOnly, NoVerification};
use super::SslMode;
use crate::config::BuildError;
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// The ring provider, shared by every config.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

fn builder() -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the ring provider supports TLS 1.2 and 1.3")
}

/// Encryption without any certificate check (`prefer`, `require` without a root).
pub(super) fn unverified_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                builder()
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(NoVerification::new(provider())))
                    .with_no_client_auth(),
            )
        })
        .clone()
}

/// The mode actually used (`require` with a root file is `verify-ca`) and its config.
pub(super) fn client_config(
    mode: SslMode,
    root_cert: Option<&Path>,
) -> Result<(SslMode, Arc<ClientConfig>), BuildError> {
    let mode = match (mode, root_cert) {
        (SslMode::Require, Some(_)) => SslMode::VerifyCa,
        (mode, _) => mode,
    };
    if !mode.verifies_chain() {
        return Ok((mode, unverified_config()));
    }
    let path = match root_cert {
        Some(path) => path.to_path_buf(),
        None => default_root_file().ok_or_else(|| {
            BuildError::field(
                "sslrootcert",
                format!(
                    "`sslmode={mode}` needs the certificate authority: give sslrootcert=<PEM file> \
                     (or put it in ~/.postgresql/root.crt)"
                ),
            )
        })?,
    };
    let roots = Arc::new(load_roots(&path)?);
    let webpki = WebPkiServerVerifier::builder_with_provider(roots.clone(), provider())
        .build()
        .map_err(|e| BuildError::field("sslrootcert", format!("{}: {e}", path.display())))?;
    let config = if mode == SslMode::VerifyFull {
        builder().with_webpki_verifier(webpki).with_no_client_auth()
    } else {
        builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnly::new(webpki)))
            .with_no_client_auth()
    };
    Ok((mode, Arc::new(config)))
}

/// libpq's default root file, when it exists.
fn default_root_file() -> Option<PathBuf> {
    let home = std::env::var_os("HOME")?;
    let path = Path::new(&home).join(".postgresql/root.crt");
    path.is_file().then_some(path)
}

/// Every certificate in a PEM file.
fn load_roots(path: &Path) -> Result<RootCertStore, BuildError> {
    let shown = path.display();
    let bad = |reason: String| BuildError::field("sslrootcert", format!("{shown}: {reason}"));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(format!("cannot be read ({e})")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("is not a PEM file ({e})")))?;
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(certs);
    if added == 0 {
        return Err(bad("holds no usable certificate".into()));
    }
    Ok(store)
}
