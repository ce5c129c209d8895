//! Failover across the configured RPC URLs, in order of preference.
//!
//! Every request goes to one endpoint: the preferred one while it answers, the next one down the list,
//! at once, when it fails: at the transport (refused connection, HTTP 429 or 5xx, a body that does not
//! parse), by taking longer than the request timeout, or with a JSON-RPC error that is trouble rather
//! than an answer (`-32603`, `-32005`, a rate limit, "header not found": [`Trouble::is_transient`]).
//! A revert or a rejected parameter is the answer, not a reason to switch. When every endpoint
//! failed fast, they are asked again (three rounds at most, within the request timeout); then the
//! last failure is returned. Every request the keeper makes is idempotent (reads, and sends of a
//! signed transaction, which a node that has it already takes as done). While on a fallback the preferred endpoint is tried again
//! every [`RETRY_PREFERRED_AFTER`], so a short outage of the primary does not leave the keeper on a
//! slower, rate-limited backup for good.
//!
//! alloy's `FallbackLayer` races requests across several endpoints at once, which spends every
//! endpoint's quota on every request; a keeper sending transactions wants one endpoint at a time.

use alloy::{
    rpc::json_rpc::{RequestPacket, ResponsePacket},
    transports::{BoxTransport, TransportError, TransportErrorKind, TransportFut},
};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};
use tower::Service;

use super::{metered::response_trouble, trouble::Trouble};

/// How long to stay on a fallback before trying the preferred endpoint again.
pub const RETRY_PREFERRED_AFTER: Duration = Duration::from_secs(30);

/// One endpoint: its transport and its URL with credentials redacted, for logs.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The transport.
    pub transport: BoxTransport,
    /// The redacted URL.
    pub shown: String,
}

/// Endpoints tried in order; see the module docs.
#[derive(Debug, Clone)]
pub struct Failover {
    endpoints: Arc<Vec<Endpoint>>,
    /// Index of the endpoint in use.
    current: Arc<AtomicUsize>,
    /// When we left the preferred endpoint.
    left_preferred: Arc<Mutex<Option<Instant>>>,
    /// How long one endpoint may take to answer.
    timeout: Duration,
}

/// The request timeout when none is set: long enough for any request a keeper makes of a healthy
/// node.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl Failover {
    /// Failover over `endpoints` (at least one), preferring them in order.
    pub fn new(endpoints: Vec<Endpoint>) -> Self {
        assert!(!endpoints.is_empty(), "failover needs an endpoint");
        Self {
            endpoints: Arc::new(endpoints),
            current: Arc::new(AtomicUsize::new(0)),
            left_preferred: Arc::new(Mutex::new(None)),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Gives each endpoint `timeout` to answer before the next is asked.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The order to try the endpoints in for the next request.
    fn order(&self) -> Vec<usize> {
        let n = self.endpoints.len();
        let mut start = self.current.load(Ordering::Relaxed);
        if start != 0 {
            let retry_preferred = self
                .left_preferred
                .lock()
                .ok()
                .and_then(|t| *t)
                .is_some_and(|t| t.elapsed() >= RETRY_PREFERRED_AFTER);
            if retry_preferred {
                start = 0;
            }
        }
        (0..n).map(|i| (start + i) % n).collect()
    }

    fn settle_on(&self, index: usize) {
        let previous = self.current.swap(index, Ordering::Relaxed);
        if previous == index {
            return;
        }
        if let Ok(mut left) = self.left_preferred.lock() {
            *left = (index != 0).then(Instant::now);
        }
        tracing::warn!(
            from = %self.endpoints[previous].shown,
            to = %self.endpoints[index].shown,
            "RPC failover"
        );
    }
}

impl Service<RequestPacket> for Failover {
    type Response = ResponsePacket;
    type Error = TransportError;
    type Future = TransportFut<'static>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each endpoint's transport is polled when it is called.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: RequestPacket) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let started = Instant::now();
            let mut last = None;
            for round in 0..ROUNDS {
                if round > 0 {
                    // Every endpoint failed fast (an error, not silence): ask again shortly, while
                    // the request's time lasts. A one-off 500 or a dropped connection then costs
                    // the keeper a few milliseconds, not a block.
                    let fast = matches!(&last, Some((_, trouble)) if *trouble != Trouble::Timeout);
                    if !fast || started.elapsed() >= this.timeout {
                        break;
                    }
                    tokio::time::sleep(RETRY_PAUSE * round as u32).await;
                }
                for index in this.order() {
                    let mut transport = this.endpoints[index].transport.clone();
                    let call = transport.call(request.clone());
                    let answer = match tokio::time::timeout(this.timeout, call).await {
                        Ok(answer) => answer,
                        Err(_) => Err(TransportErrorKind::custom_str(&format!(
                            "request timed out after {} ms",
                            this.timeout.as_millis()
                        ))),
                    };
                    let trouble = match &answer {
                        Ok(response) => response_trouble(response).filter(|t| t.is_transient()),
                        Err(e) => Some(Trouble::of(e)),
                    };
                    let Some(trouble) = trouble else {
                        this.settle_on(index);
                        return answer;
                    };
                    metrics::counter!(RPC_RETRIES, "kind" => trouble.label()).increment(1);
                    tracing::debug!(endpoint = %this.endpoints[index].shown, kind = trouble.label(), "RPC endpoint failed");
                    last = Some((answer, trouble));
                }
            }
            last.expect("at least one endpoint was tried").0
        })
    }
}

/// Rounds over the endpoints for one request, when they fail fast.
const ROUNDS: usize = 3;

/// The pause before the second round (twice it before the third).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Endpoint failures the failover met, by `kind`: each was retried or failed over, so what reaches
/// the keeper (`cascade_rpc_errors_total`) is fewer.
pub const RPC_RETRIES: &str = "cascade_rpc_retries_total";

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::{
        providers::{Provider, ProviderBuilder},
        rpc::client::ClientBuilder,
        transports::{IntoBoxTransport, http::Http},
    };

    fn endpoint(url: &str) -> Endpoint {
        Endpoint {
            transport: Http::new(url.parse().unwrap()).into_box_transport(),
            shown: url.to_owned(),
        }
    }

    /// A JSON-RPC server on loopback answering every request with chain id 7.
    async fn chain_id_server() -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let n = socket.read(&mut buf).await.unwrap_or(0);
                    let text = String::from_utf8_lossy(&buf[..n]);
                    let id = text
                        .split("\"id\":")
                        .nth(1)
                        .and_then(|s| s.split([',', '}']).next())
                        .unwrap_or("0")
                        .to_owned();
                    let body = format!(r#"{{"jsonrpc":"2.0","id":{id},"result":"0x7"}}"#);
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        url
    }

    #[tokio::test]
    async fn a_dead_primary_fails_over_to_the_next_url() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let dead = "http://127.0.0.1:9";
        let live = chain_id_server().await;
        let failover = Failover::new(vec![endpoint(dead), endpoint(&live)]);
        let client = ClientBuilder::default().transport(failover.clone(), true);
        let rpc = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_client(client);
        assert_eq!(rpc.get_chain_id().await.unwrap(), 7);
        assert_eq!(failover.current.load(Ordering::Relaxed), 1);
        // Stays on the fallback without re-trying the dead primary on every request.
        assert_eq!(failover.order(), vec![1, 0]);
    }

    #[tokio::test]
    async fn every_url_down_is_an_error() {
        let failover = Failover::new(vec![endpoint("http://127.0.0.1:9")]);
        let client = ClientBuilder::default().transport(failover, true);
        let rpc = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_client(client);
        assert!(rpc.get_chain_id().await.is_err());
    }
}
