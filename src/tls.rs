//! TLS with rustls (ring provider): termination on `server.tls` with ALPN
//! h2 + http/1.1, and client configs for `https://` upstream endpoints.
//!
//! The certificate and key are re-read when a reload points `server.tls` at
//! other files, and when the files themselves change (size or mtime, looked
//! at no more than once a second as connections arrive), so a renewed
//! certificate is picked up by new connections without a restart. The
//! rustls config is swapped behind an `ArcSwap`: connections already up keep
//! the config they were accepted with. A file that fails to load is logged
//! and the previous certificate stays in service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::time::Instant;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::types::TlsFiles;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} {path}: {message}")]
    Pem {
        /// `certificate`, `key` or `CA`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// rustls refused the certificate/key pair or the roots.
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn pem_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn read_certs(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(what, path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(what, path, e))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "no CERTIFICATE block found"));
    }
    Ok(certs)
}

/// Builds the server config for `files`: the chain, the key, ALPN h2 and http/1.1.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(&files.cert, "certificate")?;
    let key =
        PrivateKeyDer::from_pem_file(&files.key).map_err(|e| pem_error("key", &files.key, e))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What identifies the loaded files: their paths, sizes and mtimes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    files: TlsFiles,
    meta: [Option<(u64, SystemTime)>; 2],
}

impl Stamp {
    fn of(files: &TlsFiles) -> Stamp {
        let meta = |p: &Path| {
            std::fs::metadata(p)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
        };
        Stamp {
            files: files.clone(),
            meta: [meta(&files.cert), meta(&files.key)],
        }
    }
}

/// The terminating side: the live rustls config, re-read when its files change.
pub struct ServerTls {
    config: ArcSwap<ServerConfig>,
    stamp: Mutex<(Stamp, Instant)>,
}

/// How often the files are looked at (on connection arrival).
const CHECK_EVERY: Duration = Duration::from_secs(1);

impl ServerTls {
    /// Loads `files`; an error here stops startup.
    pub fn new(files: &TlsFiles) -> Result<ServerTls, TlsError> {
        let stamp = Stamp::of(files);
        let config = server_config(files)?;
        Ok(ServerTls {
            config: ArcSwap::new(config),
            stamp: Mutex::new((stamp, Instant::now())),
        })
    }

    /// The acceptor for a connection arriving now, under the live config's
    /// `files` (`None` when a reload removed `server.tls`, which needs a
    /// restart: the loaded files stay in use); re-reads them first when
    /// they changed.
    pub fn acceptor(&self, files: Option<&TlsFiles>) -> TlsAcceptor {
        let loaded = self
            .stamp
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .files
            .clone();
        self.refresh(files.unwrap_or(&loaded), false);
        TlsAcceptor::from(self.config.load_full())
    }

    /// Re-reads the files when they (or their paths) changed; `force`
    /// skips the once-a-second throttle. Returns true when a new
    /// certificate went live.
    pub fn refresh(&self, files: &TlsFiles, force: bool) -> bool {
        let now = Instant::now();
        let stamp = {
            let mut guard = self.stamp.lock().unwrap_or_else(|p| p.into_inner());
            let paths_changed = guard.0.files != *files;
            if !force && !paths_changed && now.saturating_duration_since(guard.1) < CHECK_EVERY {
                return false;
            }
            guard.1 = now;
            let stamp = Stamp::of(files);
            if stamp == guard.0 {
                return false;
            }
            // Claimed: concurrent callers see the new stamp and do not re-read.
            guard.0 = stamp.clone();
            stamp
        };
        match server_config(&stamp.files) {
            Ok(config) => {
                self.config.store(config);
                tracing::info!(cert = %files.cert.display(), "TLS certificate (re)loaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate reload failed; keeping the previous one");
                false
            }
        }
    }
}

/// A connector for `https://` upstreams: the system roots, or only the CA
/// in `ca` when given, offering `alpn` (`http/1.1`, or `h2` for
/// `protocol = "h2"` upstreams).
pub fn connector(ca: Option<&Path>, alpn: &[u8]) -> Result<TlsConnector, TlsError> {
    let roots = match ca {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path, "CA")? {
                roots.add(cert)?;
            }
            roots
        }
        None => system_roots().clone(),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The platform's trusted roots, loaded once.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "could not load some system root certificates");
        }
        let mut roots = RootCertStore::empty();
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system root certificates");
        roots
    })
}
