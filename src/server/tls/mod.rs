//! TLS for all three listeners (rustls on ring; no OpenSSL). One
//! certificate and key (`tls.cert_file`, `tls.key_file`) serve gRPC, the
//! operations plane and the browser/REST plane; `tls.client_ca_file` turns
//! on mutual TLS. The files are read again on SIGHUP and whenever their
//! size or modification time changes, so a certificate is rotated without a
//! restart: connections already open keep the one they shook hands with,
//! new ones get the new one. A file that fails to load keeps the old one in
//! service, and says so in the log.

pub mod listener;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_util::sync::CancellationToken;

use crate::server::metrics::ServerMetrics;
pub use listener::{Conn, Incoming, Peer};

/// Which listener a configuration is for: they differ only in the
/// application protocols offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plane {
    /// gRPC: HTTP/2 only.
    Grpc,
    /// Health, metrics and admin: HTTP/2 or HTTP/1.1.
    Operations,
    /// The page, WebSocket and REST: HTTP/1.1, where browsers open
    /// WebSockets.
    Web,
}

/// The files a server's TLS is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to one of these (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    fn paths(&self) -> impl Iterator<Item = &Path> {
        [Some(self.cert.as_path()), Some(self.key.as_path())]
            .into_iter()
            .chain(std::iter::once(self.client_ca.as_deref()))
            .flatten()
    }

    /// Size and modification time of every file: what the watcher compares.
    fn stamp(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.paths()
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                Some((m.len(), m.modified().ok()?))
            })
            .collect()
    }
}

/// One loaded certificate, ready for each plane.
struct Loaded {
    grpc: Arc<ServerConfig>,
    operations: Arc<ServerConfig>,
    web: Arc<ServerConfig>,
    /// The leaf certificate's notAfter, Unix seconds.
    not_after: i64,
    subject: String,
    stamp: Vec<Option<(u64, SystemTime)>>,
}

/// The server's TLS: the configuration new connections get, replaced in
/// place on reload.
#[derive(Clone)]
pub struct Tls {
    files: Arc<TlsFiles>,
    current: Arc<RwLock<Arc<Loaded>>>,
    metrics: Arc<ServerMetrics>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Reads the files; any problem is an error naming the file and what to
    /// do.
    pub fn load(files: TlsFiles, metrics: Arc<ServerMetrics>) -> anyhow::Result<Self> {
        let loaded = load(&files)?;
        metrics
            .tls_not_after
            .store(loaded.not_after, Ordering::Relaxed);
        tracing::info!(
            cert = %files.cert.display(),
            subject = %loaded.subject,
            expires = %format_unix(loaded.not_after),
            mutual = files.client_ca.is_some(),
            "TLS on: every listener needs TLS"
        );
        Ok(Self {
            files: Arc::new(files),
            current: Arc::new(RwLock::new(Arc::new(loaded))),
            metrics,
        })
    }

    /// What a new connection on `plane` shakes hands with.
    pub fn config(&self, plane: Plane) -> Arc<ServerConfig> {
        let loaded = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match plane {
            Plane::Grpc => loaded.grpc.clone(),
            Plane::Operations => loaded.operations.clone(),
            Plane::Web => loaded.web.clone(),
        }
    }

    /// Reads the files again when they changed (or always, when `force`).
    /// A failure leaves the certificate in service as it was.
    pub fn reload(&self, force: bool) {
        let stamp = self.files.stamp();
        if !force && stamp == self.current_stamp() {
            return;
        }
        match load(&self.files) {
            Ok(loaded) => {
                tracing::info!(
                    subject = %loaded.subject,
                    expires = %format_unix(loaded.not_after),
                    "TLS certificate reloaded; new connections use it"
                );
                self.metrics
                    .tls_not_after
                    .store(loaded.not_after, Ordering::Relaxed);
                self.metrics.tls_reloads.fetch_add(1, Ordering::Relaxed);
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
            }
            Err(e) => {
                self.metrics
                    .tls_reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                // Remember the stamp so a broken file is reported once, not
                // on every poll; a fixed file changes it again.
                let mut current = self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut kept = Loaded {
                    grpc: current.grpc.clone(),
                    operations: current.operations.clone(),
                    web: current.web.clone(),
                    not_after: current.not_after,
                    subject: current.subject.clone(),
                    stamp: Vec::new(),
                };
                kept.stamp = stamp;
                *current = Arc::new(kept);
                tracing::error!(
                    error = format!("{e:#}"),
                    "TLS reload failed; the previous certificate stays in service"
                );
            }
        }
    }

    fn current_stamp(&self) -> Vec<Option<(u64, SystemTime)>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .stamp
            .clone()
    }

    /// Reloads on SIGHUP and when the files change (checked every `poll`),
    /// until `closing`.
    pub fn spawn_reloader(&self, poll: Duration, closing: CancellationToken) {
        let tls = self.clone();
        // Registered before returning, so a SIGHUP from the moment the
        // server serves reloads rather than ending the process.
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .map_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP; certificate files are still watched"))
            .ok();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(poll);
            tick.tick().await;
            loop {
                #[cfg(unix)]
                let hangup = async {
                    match hup.as_mut() {
                        Some(s) => {
                            s.recv().await;
                        }
                        None => std::future::pending().await,
                    }
                };
                #[cfg(not(unix))]
                let hangup = std::future::pending::<()>();
                tokio::select! {
                    () = closing.cancelled() => return,
                    () = hangup => {
                        tracing::info!("SIGHUP: reloading the TLS certificate");
                        tls.reload(true);
                    }
                    _ = tick.tick() => tls.reload(false),
                }
            }
        });
    }
}

fn load(files: &TlsFiles) -> anyhow::Result<Loaded> {
    let stamp = files.stamp();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| pem_error(&files.cert, "tls.cert_file", &e))?;
    let Some(leaf) = certs.first() else {
        anyhow::bail!(
            "{} holds no certificate (tls.cert_file): expected PEM `-----BEGIN CERTIFICATE-----` blocks, the server's first",
            files.cert.display()
        );
    };
    let (not_after, subject) = validity(leaf)
        .with_context(|| format!("cannot read the certificate in {}", files.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| pem_error(&files.key, "tls.key_file", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("no TLS protocol version available")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            let cas = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| pem_error(ca, "tls.client_ca_file", &e))?;
            let (added, _) = roots.add_parsable_certificates(cas);
            if added == 0 {
                anyhow::bail!(
                    "{} holds no usable CA certificate (tls.client_ca_file)",
                    ca.display()
                );
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| format!("cannot verify clients against {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let base = builder.with_single_cert(certs, key).with_context(|| {
        format!(
            "{} and {} do not make a usable certificate and key (does the key belong to the certificate?)",
            files.cert.display(),
            files.key.display()
        )
    })?;
    let with_alpn = |protocols: &[&[u8]]| {
        let mut cfg = base.clone();
        cfg.alpn_protocols = protocols.iter().map(|p| p.to_vec()).collect();
        Arc::new(cfg)
    };
    Ok(Loaded {
        grpc: with_alpn(&[b"h2"]),
        operations: with_alpn(&[b"h2", b"http/1.1"]),
        web: with_alpn(&[b"http/1.1"]),
        not_after,
        subject,
        stamp,
    })
}

fn pem_error(path: &Path, key: &str, e: &rustls::pki_types::pem::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "cannot read {} ({key}): {e}; expected a PEM file",
        path.display()
    )
}

/// The leaf's notAfter (Unix seconds) and subject.
fn validity(der: &CertificateDer<'_>) -> anyhow::Result<(i64, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    Ok((
        cert.validity().not_after.timestamp(),
        cert.subject().to_string(),
    ))
}

/// Unix seconds as RFC 3339, for the log.
fn format_unix(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0).map_or_else(|| secs.to_string(), |t| t.to_rfc3339())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_pair(dir: &Path, name: &str) -> TlsFiles {
        let cert = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        let files = TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: None,
        };
        std::fs::write(&files.cert, cert.cert.pem()).unwrap();
        std::fs::write(&files.key, cert.signing_key.serialize_pem()).unwrap();
        files
    }

    #[test]
    fn loads_a_pair_and_reads_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "localhost");
        let metrics = Arc::new(ServerMetrics::default());
        let tls = Tls::load(files, metrics.clone()).unwrap();
        let not_after = metrics.tls_not_after.load(Ordering::Relaxed);
        // rcgen's default validity runs to 4096.
        assert!(not_after > 4_000_000_000, "{not_after}");
        assert_eq!(tls.config(Plane::Grpc).alpn_protocols, vec![b"h2".to_vec()]);
        assert_eq!(
            tls.config(Plane::Web).alpn_protocols,
            vec![b"http/1.1".to_vec()]
        );
    }

    #[test]
    fn a_key_that_does_not_match_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let a = write_pair(dir.path(), "a");
        let other = tempfile::tempdir().unwrap();
        let b = write_pair(other.path(), "b");
        let mixed = TlsFiles {
            key: b.key.clone(),
            ..a
        };
        let e = Tls::load(mixed, Arc::default()).unwrap_err();
        assert!(format!("{e:#}").contains("does the key belong"), "{e:#}");
        let missing = TlsFiles {
            cert: dir.path().join("nope.pem"),
            key: b.key,
            client_ca: None,
        };
        let e = Tls::load(missing, Arc::default()).unwrap_err();
        assert!(format!("{e:#}").contains("tls.cert_file"), "{e:#}");
    }

    #[test]
    fn a_broken_reload_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pair(dir.path(), "localhost");
        let metrics = Arc::new(ServerMetrics::default());
        let tls = Tls::load(files.clone(), metrics.clone()).unwrap();
        let before = tls.config(Plane::Grpc);
        std::fs::write(&files.cert, "not a certificate").unwrap();
        tls.reload(true);
        assert!(Arc::ptr_eq(&before, &tls.config(Plane::Grpc)));
        assert_eq!(metrics.tls_reload_failures.load(Ordering::Relaxed), 1);
        // Unchanged files are not read again.
        tls.reload(false);
        assert_eq!(metrics.tls_reload_failures.load(Ordering::Relaxed), 1);
        // A good pair is picked up.
        write_pair(dir.path(), "rotated");
        tls.reload(true);
        assert!(!Arc::ptr_eq(&before, &tls.config(Plane::Grpc)));
        assert_eq!(metrics.tls_reloads.load(Ordering::Relaxed), 1);
    }
}
