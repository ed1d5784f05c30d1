//! Who may talk to the server at all, checked before anything else on
//! every plane — allowlist, then rate limit, then (in the session service)
//! authentication:
//! - CIDR allowlists: `STT_HTTP_ALLOWLIST` (or `server.http_allowlist`) for
//!   the operations and data planes, `STT_GRPC_ALLOWLIST` (or
//!   `server.grpc_allowlist`) for gRPC; a refused client gets ERR4008;
//! - trusted proxies (`STT_HTTP_TRUSTED_PROXIES`, `server.http_trusted_proxies`):
//!   only a request arriving from one has its `X-Forwarded-For` believed;
//! - `server.http_rate_limit_rps` / `_burst` per client address (ERR4010).
//!
//! The HTTP planes run [`http_guard`] as their outermost layer; it leaves
//! the client's address in the request as [`ClientIp`] for the handlers
//! (per-IP session caps and rate keys). gRPC runs [`GrpcGuard`] as an
//! interceptor on every service.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;

use crate::config::server::ServerSection;
use crate::error::{ErrorCode, SttError};
use crate::server::http::ApiError;
use crate::server::limits::HttpRateLimit;
use crate::server::metrics::ServerMetrics;
use crate::server::tls::Peer;

pub const ENV_HTTP_ALLOWLIST: &str = "STT_HTTP_ALLOWLIST";
pub const ENV_GRPC_ALLOWLIST: &str = "STT_GRPC_ALLOWLIST";
pub const ENV_TRUSTED_PROXIES: &str = "STT_HTTP_TRUSTED_PROXIES";

/// A set of networks; an address is in it when any network holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(Vec<IpNet>);

impl NetList {
    /// Parses CIDRs or bare addresses. A bad entry is an error naming
    /// `source`: skipping it could leave an empty list, which would let
    /// everyone in.
    pub fn parse<S: AsRef<str>>(entries: &[S], source: &str) -> anyhow::Result<Self> {
        let mut nets = Vec::new();
        for entry in entries
            .iter()
            .map(|e| e.as_ref().trim())
            .filter(|e| !e.is_empty())
        {
            let net = match entry.parse::<IpNet>() {
                Ok(net) => net,
                Err(_) => entry.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
                    anyhow::anyhow!(
                        "{source}: {entry:?} is neither an address nor a CIDR (e.g. 10.0.0.0/8, 192.168.1.7, fd00::/8)"
                    )
                })?,
            };
            nets.push(net.trunc());
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }
}

/// The list from `env` (comma-separated) when set, else the config's.
fn from_env_or(env: &str, config: &[String], key: &str) -> anyhow::Result<NetList> {
    match std::env::var(env) {
        Ok(v) => {
            let entries: Vec<&str> = v.split(',').collect();
            NetList::parse(&entries, env)
        }
        Err(_) => NetList::parse(config, key),
    }
}

/// The HTTP planes' checks, shared by both.
pub struct HttpAccess {
    allow: NetList,
    trusted: NetList,
    rate: Option<HttpRateLimit>,
    metrics: Arc<ServerMetrics>,
}

/// The client's address as the checks resolved it (the socket's, or the
/// one a trusted proxy forwarded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

impl HttpAccess {
    pub fn new(s: &ServerSection, metrics: Arc<ServerMetrics>) -> anyhow::Result<Self> {
        let allow = from_env_or(
            ENV_HTTP_ALLOWLIST,
            &s.http_allowlist,
            "server.http_allowlist",
        )?;
        let trusted = from_env_or(
            ENV_TRUSTED_PROXIES,
            &s.http_trusted_proxies,
            "server.http_trusted_proxies",
        )?;
        if !allow.is_empty() {
            tracing::info!(networks = ?allow.0, "HTTP allowlist on");
        }
        Ok(Self {
            allow,
            trusted,
            rate: HttpRateLimit::new(s.http_rate_limit_rps, s.http_rate_limit_burst),
            metrics,
        })
    }

    /// The client behind `peer`: `X-Forwarded-For` read from the right,
    /// past every trusted proxy, only when `peer` itself is trusted. A
    /// header from anyone else is ignored (it is the client's to forge).
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted.contains(peer) {
            return peer;
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map_while(|h| h.trim().parse::<IpAddr>().ok())
            .collect();
        let mut client = peer;
        for hop in hops.into_iter().rev() {
            client = hop.to_canonical();
            if !self.trusted.contains(client) {
                break;
            }
        }
        client
    }

    fn check(&self, ip: IpAddr) -> Result<(), SttError> {
        if !self.allow.is_empty() && !self.allow.contains(ip) {
            return Err(SttError::new(
                ErrorCode::Err4008,
                format!("client address {ip} is not allowed here ({ENV_HTTP_ALLOWLIST})"),
            ));
        }
        if let Some(rate) = &self.rate {
            if let Err(wait) = rate.check(ip) {
                return Err(SttError::new(
                    ErrorCode::Err4010,
                    format!(
                        "too many requests from {ip} (server.http_rate_limit_rps); retry in {:.1} s",
                        wait.as_secs_f64()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Middleware, outermost on both HTTP planes: allowlist, then rate limit;
/// leaves [`ClientIp`] for the handlers. A refused WebSocket upgrade is an
/// HTTP 403/429 before the socket opens.
pub async fn http_guard(
    State(access): State<Arc<HttpAccess>>,
    mut req: Request,
    next: Next,
) -> Response {
    let peer = req
        .extensions()
        .get::<ConnectInfo<Peer>>()
        .map(|ConnectInfo(Peer(a))| a.ip());
    let Some(peer) = peer else {
        // Served without connection info (a router under test): nothing
        // to check against.
        return next.run(req).await;
    };
    let ip = access.client_ip(peer, req.headers());
    if let Err(e) = access.check(ip) {
        access.metrics.count_error(e.code);
        let retry = e.code == ErrorCode::Err4010;
        let mut resp = ApiError(e).into_response();
        if retry {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        return resp;
    }
    req.extensions_mut().insert(ClientIp(ip));
    next.run(req).await
}

/// The gRPC allowlist, as an interceptor on every gRPC service (health and
/// reflection too).
#[derive(Clone)]
pub struct GrpcGuard {
    allow: Arc<NetList>,
    metrics: Arc<ServerMetrics>,
}

impl GrpcGuard {
    pub fn new(s: &ServerSection, metrics: Arc<ServerMetrics>) -> anyhow::Result<Self> {
        let allow = from_env_or(
            ENV_GRPC_ALLOWLIST,
            &s.grpc_allowlist,
            "server.grpc_allowlist",
        )
        .context("cannot read the gRPC allowlist")?;
        if !allow.is_empty() {
            tracing::info!(networks = ?allow.0, "gRPC allowlist on");
        }
        Ok(Self {
            allow: Arc::new(allow),
            metrics,
        })
    }

    /// Refuses a call from outside the allowlist with ERR4008.
    pub fn check(&self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.allow.is_empty() {
            return Ok(req);
        }
        match req.remote_addr().map(|a| a.ip()) {
            Some(ip) if self.allow.contains(ip) => Ok(req),
            ip => {
                let e = SttError::new(
                    ErrorCode::Err4008,
                    format!(
                        "client address {} is not allowed here ({ENV_GRPC_ALLOWLIST})",
                        ip.map_or_else(|| "unknown".to_string(), |ip| ip.to_string())
                    ),
                );
                tracing::warn!(code = %e.code, "{}", e.message);
                self.metrics.count_error(e.code);
                Err(tonic::Status::new(e.code.grpc_code(), e.to_string()))
            }
        }
    }
}

pub const ENV_ALLOW_INSECURE_WS: &str = "STT_ALLOW_INSECURE_WS";

/// Whether CreateSession needs a key or a signed token on this server.
pub fn sessions_need_auth(f: &crate::config::server::ServerFile, keys_in_env: bool) -> bool {
    use crate::config::server::AuthProfile;
    match f.auth.create_session_auth_profile {
        AuthProfile::ApiKey | AuthProfile::SignedToken => true,
        AuthProfile::None => false,
        AuthProfile::Auto => f.server.require_api_key || f.auth.keys_file.is_some() || keys_in_env,
    }
}

fn is_loopback(host: &str) -> bool {
    let h = host.trim().trim_start_matches('[').trim_end_matches(']');
    h.is_empty()
        || h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

fn truthy(v: Option<&str>) -> bool {
    v.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Where the browser/REST plane listens. Anyone who reaches it can open a
/// session, so without authentication it stays on loopback: an explicit
/// public `server.ws_host` then refuses to start (the original's rule)
/// unless `STT_ALLOW_INSECURE_WS=1`; with `ws_host` unset it follows
/// `server.host` only when sessions need authentication.
pub fn data_plane_host(
    f: &crate::config::server::ServerFile,
    keys_in_env: bool,
    allow_insecure: Option<&str>,
) -> anyhow::Result<String> {
    let auth = sessions_need_auth(f, keys_in_env);
    let insecure = truthy(allow_insecure);
    let host = match &f.server.ws_host {
        Some(h) => h.clone(),
        None if auth || insecure || is_loopback(&f.server.host) => f.server.host.clone(),
        None => {
            tracing::info!(
                "the browser/REST plane listens on 127.0.0.1 only: sessions need no authentication. Set API keys (stt keys, auth.keys_file) to open it on server.host, or server.ws_host with {ENV_ALLOW_INSECURE_WS}=1 for a trusted network"
            );
            return Ok("127.0.0.1".into());
        }
    };
    if auth || is_loopback(&host) {
        return Ok(host);
    }
    let why = format!(
        "the browser/REST plane (server.ws_host {host:?}) is bound to a non-loopback address without CreateSession auth. Set auth.create_session_auth_profile (api_key or signed_token), API keys (auth.keys_file) or server.require_api_key. For local testing only, set {ENV_ALLOW_INSECURE_WS}=1 to bypass"
    );
    if insecure {
        tracing::warn!("{why}; starting only because {ENV_ALLOW_INSECURE_WS} is set");
        Ok(host)
    } else {
        anyhow::bail!(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> NetList {
        NetList::parse(entries, "test").unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses() {
        let l = list(&["10.0.0.0/8", "192.168.1.7", " fd00::/8 "]);
        assert!(l.contains("10.1.2.3".parse().unwrap()));
        assert!(l.contains("192.168.1.7".parse().unwrap()));
        assert!(!l.contains("192.168.1.8".parse().unwrap()));
        assert!(l.contains("fd00::1".parse().unwrap()));
        // An IPv4 client on a dual-stack socket.
        assert!(l.contains("::ffff:10.0.0.1".parse().unwrap()));
        let e = NetList::parse(&["10.0.0.0/8", "nonsense"], "STT_HTTP_ALLOWLIST").unwrap_err();
        assert!(e.to_string().contains("STT_HTTP_ALLOWLIST"), "{e}");
    }

    fn access(trusted: &[&str]) -> HttpAccess {
        HttpAccess {
            allow: NetList::default(),
            trusted: list(trusted),
            rate: None,
            metrics: Arc::default(),
        }
    }

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    #[test]
    fn forwarded_for_only_from_a_trusted_proxy() {
        let a = access(&["10.0.0.0/8"]);
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let stranger: IpAddr = "203.0.113.9".parse().unwrap();
        // From the proxy: the hop before it.
        assert_eq!(
            a.client_ip(proxy, &xff("198.51.100.4")).to_string(),
            "198.51.100.4"
        );
        // A chain: past every trusted hop, not the spoofable leftmost.
        assert_eq!(
            a.client_ip(proxy, &xff("1.2.3.4, 198.51.100.4, 10.0.0.7"))
                .to_string(),
            "198.51.100.4"
        );
        // From anyone else the header is ignored.
        assert_eq!(a.client_ip(stranger, &xff("1.2.3.4")), stranger);
        // A proxy with no header is the client.
        assert_eq!(a.client_ip(proxy, &HeaderMap::new()), proxy);
    }

    #[test]
    fn the_data_plane_stays_private_without_auth() {
        use crate::config::server::{AuthProfile, ServerFile};
        let mut f = ServerFile::default();
        f.server.host = "0.0.0.0".into();
        // Unset: loopback without auth, server.host with it.
        assert_eq!(data_plane_host(&f, false, None).unwrap(), "127.0.0.1");
        assert_eq!(data_plane_host(&f, true, None).unwrap(), "0.0.0.0");
        // Explicitly public without auth: refused unless allowed.
        f.server.ws_host = Some("0.0.0.0".into());
        let e = data_plane_host(&f, false, None).unwrap_err();
        assert!(e.to_string().contains("STT_ALLOW_INSECURE_WS"), "{e}");
        assert!(data_plane_host(&f, false, Some("0")).is_err());
        assert_eq!(data_plane_host(&f, false, Some("true")).unwrap(), "0.0.0.0");
        f.auth.create_session_auth_profile = AuthProfile::SignedToken;
        assert_eq!(data_plane_host(&f, false, None).unwrap(), "0.0.0.0");
        // Loopback is always fine.
        f.auth.create_session_auth_profile = AuthProfile::None;
        f.server.ws_host = Some("::1".into());
        assert_eq!(data_plane_host(&f, false, None).unwrap(), "::1");
    }
}
