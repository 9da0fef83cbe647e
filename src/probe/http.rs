//! The real probe: `GET /about/health`, then `GET /colibri/stats`, over HTTP.
//!
//! The caller bounds the time a probe takes; this side bounds the bytes it reads, by the
//! announced length first and then chunk by chunk, so a bridge that streams without end
//! costs at most `max_body_bytes` of memory.

use reqwest::StatusCode;

use super::schedule::Transport;
use super::{Cause, Outcome, Stats};
use crate::catalog::Bridge;

/// Probes bridges over HTTP with one shared connection pool.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    max_body_bytes: usize,
}

impl Http {
    /// A client that reads at most `max_body_bytes` of any answer, ignores proxies and
    /// follows no redirect: a bridge answers for itself, and a redirect's target would
    /// escape the checks made on registered URLs.
    pub fn new(max_body_bytes: usize) -> Result<Http, reqwest::Error> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Http {
            client,
            max_body_bytes,
        })
    }

    async fn fetch(&self, url: &str) -> Result<(StatusCode, Vec<u8>), Outcome> {
        let mut response = self.client.get(url).send().await.map_err(failure)?;
        let status = response.status();
        let limit = self.max_body_bytes;
        let too_large = || Outcome::Failed(Cause::Body, format!("body larger than {limit} bytes"));
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(failure)? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    async fn health(&self, base: &str) -> Result<(), Outcome> {
        match self.fetch(&format!("{base}/about/health")).await? {
            (status, _) if status.is_success() => Ok(()),
            (status, body) if status.is_server_error() => {
                let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
                let why = format!("health answered {status}: {}", text.trim());
                Err(Outcome::Unhealthy(why, None))
            }
            (status, _) => Err(Outcome::Failed(
                Cause::Status,
                format!("health answered {status}"),
            )),
        }
    }

    async fn stats(&self, base: &str) -> Outcome {
        let (status, body) = match self.fetch(&format!("{base}/colibri/stats")).await {
            Ok(answer) => answer,
            Err(failure) => return failure,
        };
        if status == StatusCode::NOT_FOUND {
            return Outcome::PassNoStats;
        }
        if !status.is_success() {
            return Outcome::Failed(Cause::Status, format!("stats answered {status}"));
        }
        match serde_json::from_slice::<Stats>(&body) {
            Ok(stats) if stats.healthy == Some(false) => {
                Outcome::Unhealthy("stats report healthy: false".to_owned(), Some(stats))
            }
            Ok(stats) => Outcome::Pass(Some(stats)),
            Err(error) => {
                Outcome::Failed(Cause::Body, format!("stats are not valid JSON: {error}"))
            }
        }
    }
}

impl Transport for Http {
    async fn probe(&self, bridge: &Bridge) -> Outcome {
        let base = bridge.url.trim_end_matches('/');
        if let Err(failure) = self.health(base).await {
            return failure;
        }
        if !bridge.stats {
            return Outcome::Pass(None);
        }
        self.stats(base).await
    }
}

fn failure(error: reqwest::Error) -> Outcome {
    let cause = if error.is_timeout() {
        Cause::Timeout
    } else if error.is_connect() {
        Cause::Connect
    } else {
        Cause::Body
    };
    Outcome::Failed(cause, error.to_string())
}
