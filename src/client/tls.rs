//! TLS for the clients: what to trust (the Mozilla roots, or a CA file for
//! a private certificate) and, for servers with mutual TLS, the client's own
//! certificate. The gRPC commands and the HTTP pollers (dashboard, bench)
//! read the same files.

use std::path::{Path, PathBuf};

use crate::UsageError;

/// A client's TLS settings (`--tls`, `--tls-ca-file`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Trust these CA certificates instead of the public roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for servers that require one.
    pub identity: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry [default: the host
    /// dialled].
    pub server_name: Option<String>,
}

fn read(path: &Path, flag: &str) -> Result<Vec<u8>, UsageError> {
    std::fs::read(path)
        .map_err(|e| UsageError(format!("cannot read {flag} {}: {e}", path.display())))
}

impl ClientTls {
    /// The tonic configuration for dialling `host`.
    pub fn grpc(&self, host: &str) -> Result<tonic::transport::ClientTlsConfig, UsageError> {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        let mut cfg = ClientTlsConfig::new().domain_name(
            self.server_name
                .clone()
                .unwrap_or_else(|| host.trim_start_matches('[').trim_end_matches(']').into()),
        );
        cfg = match &self.ca_file {
            Some(ca) => cfg.ca_certificate(Certificate::from_pem(read(ca, "--tls-ca-file")?)),
            None => cfg.with_webpki_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            cfg = cfg.identity(Identity::from_pem(
                read(cert, "--tls-cert-file")?,
                read(key, "--tls-key-file")?,
            ));
        }
        Ok(cfg)
    }

    /// Adds the CA and the client certificate to an HTTP client.
    pub fn http(
        &self,
        mut builder: reqwest::ClientBuilder,
    ) -> Result<reqwest::ClientBuilder, UsageError> {
        if let Some(ca) = &self.ca_file {
            let pem = read(ca, "--tls-ca-file")?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                UsageError(format!(
                    "--tls-ca-file {} is not a PEM certificate file: {e}",
                    ca.display()
                ))
            })? {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = &self.identity {
            let mut pem = read(cert, "--tls-cert-file")?;
            pem.push(b'\n');
            pem.extend(read(key, "--tls-key-file")?);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
                UsageError(format!(
                    "--tls-cert-file/--tls-key-file do not make a client certificate: {e}"
                ))
            })?;
            builder = builder.identity(id);
        }
        Ok(builder)
    }
}
