//! Fetches `/metrics.json` and `/system` over HTTP and turns each round into
//! a [`Poll`]. Runs as its own task so a slow or dead server never holds up
//! the screen or the keys; it knows nothing of terminals.

use std::time::Duration;

use reqwest::{Client, Url};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use super::state::{parse_metrics, parse_system, Poll};
use crate::UsageError;

/// A request that takes longer than this counts as a failed poll; the next
/// one still starts on schedule.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// A host that does not answer the TCP handshake is reported sooner.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Polls one server's two endpoints.
#[derive(Debug, Clone)]
pub struct Poller {
    /// Keeps the connection alive between polls, so a poll is one request on
    /// an open socket rather than a new handshake each second.
    client: Client,
    pub metrics_url: Url,
    pub system_url: Url,
    /// `STT_OBSERVABILITY_TOKEN`, sent as a bearer token when the server
    /// guards its metrics with one.
    token: Option<String>,
}

impl Poller {
    /// Checks both URLs; a malformed one is a usage error.
    pub fn new(
        metrics_url: &str,
        system_url: &str,
        tls: Option<&crate::client::tls::ClientTls>,
    ) -> anyhow::Result<Self> {
        let parse = |flag: &str, s: &str| {
            Url::parse(s).map_err(|e| UsageError(format!("{flag} `{s}` is not a URL: {e}")))
        };
        let metrics_url = parse("--metrics-url", metrics_url)?;
        let system_url = parse("--system-url", system_url)?;
        let mut builder = Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = tls {
            builder = tls.http(builder)?;
        }
        let client = builder
            .build()
            .map_err(|e| anyhow::anyhow!("cannot set up the HTTP client: {e}"))?;
        let token = std::env::var(crate::env::ENV_OBSERVABILITY_TOKEN)
            .ok()
            .filter(|t| !t.trim().is_empty());
        Ok(Self {
            client,
            metrics_url,
            system_url,
            token,
        })
    }

    /// Both endpoints, concurrently.
    pub async fn poll(&self) -> Poll {
        let (metrics, system) =
            tokio::join!(self.get(&self.metrics_url), self.get(&self.system_url));
        Poll {
            metrics: metrics.and_then(|b| parse_metrics(&b)),
            system: system.and_then(|b| parse_system(&b)),
        }
    }

    /// `/system` alone (the capacity bench's CPU and RSS).
    pub async fn system(&self) -> Result<super::state::System, String> {
        self.get(&self.system_url)
            .await
            .and_then(|b| parse_system(&b))
    }

    /// Polls every `every` until the receiver goes away. A poll that overruns
    /// delays the next rather than bunching them up.
    pub async fn run(self, every: Duration, tx: mpsc::Sender<Poll>) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let poll = self.poll().await;
            if tx.send(poll).await.is_err() {
                return;
            }
        }
    }

    async fn get(&self, url: &Url) -> Result<String, String> {
        let mut req = self.client.get(url.clone());
        if let Some(t) = &self.token {
            req = req.bearer_auth(t.trim());
        }
        let resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            return Err(format!(
                "GET {url}: HTTP 401: the server guards its metrics; set {} to its token",
                crate::env::ENV_OBSERVABILITY_TOKEN
            ));
        }
        if !status.is_success() {
            return Err(format!("GET {url}: HTTP {status}"));
        }
        resp.text()
            .await
            .map_err(|e| format!("GET {url}: reading the body: {}", describe(&e)))
    }
}

/// "GET url: connection refused" rather than reqwest's outermost "error
/// sending request": the innermost cause is the one a person can act on.
fn describe(e: &reqwest::Error) -> String {
    let url = e.url().map_or_else(String::new, |u| format!("GET {u}: "));
    if e.is_timeout() {
        return format!("{url}no answer within {} s", REQUEST_TIMEOUT.as_secs());
    }
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    format!("{url}{cur}")
}

/// `--interval` as a duration: finite and at least 0.1 s, so a typo cannot
/// turn the dashboard into a busy loop against the server.
pub fn interval(sec: f64) -> Result<Duration, UsageError> {
    if (0.1..=3600.0).contains(&sec) {
        Ok(Duration::from_secs_f64(sec))
    } else {
        Err(UsageError(format!(
            "--interval must be between 0.1 and 3600 seconds, got {sec}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_bounds() {
        assert_eq!(interval(1.0).ok(), Some(Duration::from_secs(1)));
        assert!(interval(0.0).is_err());
        assert!(interval(f64::NAN).is_err());
        assert!(interval(-1.0).is_err());
    }

    #[test]
    fn malformed_urls_are_usage_errors() {
        let err = Poller::new("not a url", "http://127.0.0.1:1/system", None).expect_err("bad url");
        assert!(err.is::<UsageError>());
        assert!(err.to_string().contains("--metrics-url"), "{err}");
    }

    #[tokio::test]
    async fn a_dead_port_is_a_failed_poll_not_an_error() {
        // Port 1 on loopback: nothing listens there.
        let p = Poller::new(
            "http://127.0.0.1:1/metrics.json",
            "http://127.0.0.1:1/system",
            None,
        )
        .expect("urls");
        let poll = p.poll().await;
        let err = poll.metrics.expect_err("nothing listens on port 1");
        assert!(
            err.starts_with("GET http://127.0.0.1:1/metrics.json: "),
            "{err}"
        );
        assert!(poll.system.is_err());
    }
}
