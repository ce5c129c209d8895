//! A JSON-RPC proxy that fails on purpose: between the keeper and a node, it fails a share of the
//! requests the way hosted endpoints fail in a busy hour (HTTP 500 and 429, answers seconds late,
//! bodies cut short, JSON-RPC errors such as `-32603`, connections dropped or a gateway's 504 after
//! the node acted on the request), and can make the endpoint vanish for a while. Which requests fail is drawn from a
//! seed, so a run can be repeated; faults stop after a set time, so a run ends clean. It listens on
//! loopback only: it is a test bench, not a service.
//!
//! `cascade fault-proxy` runs one; the fault suite (`tests/faults.rs`, `make faults`) runs the
//! keeper through it.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// One way of failing a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FaultKind {
    /// HTTP 500, the request not forwarded.
    Http500,
    /// HTTP 429, the request not forwarded.
    Http429,
    /// Forwarded and answered, seconds late.
    Delay,
    /// Forwarded; the answer's body cut in half.
    Malformed,
    /// Not forwarded; a JSON-RPC error (`-32603`, `-32005` or "header not found") in a 200 answer.
    RpcError,
    /// Forwarded (the node acts on it), then the connection closed without an answer.
    Drop,
    /// Forwarded (the node acts on it); after the delay, HTTP 504 instead of its answer: a gateway
    /// that gave up waiting for a slow node.
    Http504,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [Self; 7] = [
        Self::Http500,
        Self::Http429,
        Self::Delay,
        Self::Malformed,
        Self::RpcError,
        Self::Drop,
        Self::Http504,
    ];

    /// Its name on the command line and in figures.
    pub fn name(self) -> &'static str {
        match self {
            Self::Http500 => "http500",
            Self::Http429 => "http429",
            Self::Delay => "delay",
            Self::Malformed => "malformed",
            Self::RpcError => "rpc-error",
            Self::Drop => "drop",
            Self::Http504 => "http504",
        }
    }
}

impl std::str::FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|k| k.name()).collect();
                format!("unknown fault {s:?}: one of {}", names.join(", "))
            })
    }
}

/// What to fail, how often, and for how long.
#[derive(Debug, Clone)]
pub struct FaultPlan {
    /// The share of requests failed, 0 to 1.
    pub rate: f64,
    /// The kinds drawn from, evenly.
    pub kinds: Vec<FaultKind>,
    /// Seeds the draws.
    pub seed: u64,
    /// How late a delayed answer is: uniformly between these.
    pub delay: (Duration, Duration),
    /// Faults only this long after the proxy starts (for ever when `None`).
    pub active_for: Option<Duration>,
    /// Only requests calling one of these JSON-RPC methods fail (in a batch, any of its calls); every
    /// request when empty.
    pub methods: Vec<String>,
}

impl Default for FaultPlan {
    fn default() -> Self {
        Self {
            rate: 0.2,
            kinds: FaultKind::ALL.to_vec(),
            seed: 1,
            delay: (Duration::from_secs(2), Duration::from_secs(6)),
            active_for: None,
            methods: Vec::new(),
        }
    }
}

/// What the proxy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests received.
    pub requests: u64,
    /// Requests failed, by kind.
    pub faulted: std::collections::BTreeMap<FaultKind, u64>,
    /// Connections refused during outages.
    pub outage_drops: u64,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// It listens on loopback only.
    #[error("the fault proxy listens on loopback only, not {0}")]
    NotLoopback(SocketAddr),
    /// The port could not be bound.
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// The rate is not a share.
    #[error("the fault rate must be between 0 and 1, not {0}")]
    Rate(f64),
}

struct Shared {
    upstream: String,
    plan: Mutex<FaultPlan>,
    rng: Mutex<u64>,
    started: Instant,
    outage_until: Mutex<Option<Instant>>,
    stats: Mutex<FaultStats>,
    client: reqwest::Client,
    stopped: AtomicBool,
    connections: AtomicU64,
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::Relaxed);
        self.task.abort();
    }
}

impl FaultProxy {
    /// Starts a proxy on `listen` (loopback; port 0 picks one) in front of the JSON-RPC endpoint
    /// `upstream`, failing requests as `plan` says.
    pub async fn start(
        upstream: &str,
        listen: SocketAddr,
        plan: FaultPlan,
    ) -> Result<Self, ProxyError> {
        if !listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(listen));
        }
        if !(0.0..=1.0).contains(&plan.rate) {
            return Err(ProxyError::Rate(plan.rate));
        }
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| ProxyError::Bind(listen, e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ProxyError::Bind(listen, e))?;
        let shared = Arc::new(Shared {
            upstream: upstream.to_owned(),
            rng: Mutex::new(plan.seed),
            plan: Mutex::new(plan),
            started: Instant::now(),
            outage_until: Mutex::new(None),
            stats: Mutex::default(),
            client: reqwest::Client::new(),
            stopped: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&shared);
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                if accepting.stopped.load(Ordering::Relaxed) {
                    return;
                }
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let shared = Arc::clone(&accepting);
                tokio::spawn(async move { serve(shared, socket).await });
            }
        });
        Ok(Self { addr, shared, task })
    }

    /// The proxy's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes the share of requests failed.
    pub fn set_rate(&self, rate: f64) {
        lock(&self.shared.plan).rate = rate.clamp(0.0, 1.0);
    }

    /// Makes the endpoint vanish for `duration`: every connection is closed at once, unanswered.
    pub fn outage(&self, duration: Duration) {
        *lock(&self.shared.outage_until) = Some(Instant::now() + duration);
    }

    /// What it did so far.
    pub fn stats(&self) -> FaultStats {
        lock(&self.shared.stats).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// splitmix64: the next draw of the seeded sequence.
fn draw(state: &Mutex<u64>) -> u64 {
    let mut s = lock(state);
    *s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Shared {
    fn in_outage(&self) -> bool {
        lock(&self.outage_until).is_some_and(|until| Instant::now() < until)
    }

    /// The fault for the next request (`body`), if any, and the delay of a late answer.
    fn choose(&self, body: &[u8]) -> (Option<FaultKind>, Duration) {
        let plan = lock(&self.plan).clone();
        let active = plan.active_for.is_none_or(|d| self.started.elapsed() < d)
            && (plan.methods.is_empty() || methods(body).iter().any(|m| plan.methods.contains(m)));
        let roll = draw(&self.rng);
        let pick = draw(&self.rng);
        let late = draw(&self.rng);
        let (lo, hi) = plan.delay;
        let span = hi.saturating_sub(lo).as_millis().max(1) as u64;
        let delay = lo + Duration::from_millis(late % span);
        let fault =
            (active && !plan.kinds.is_empty() && (roll as f64 / u64::MAX as f64) < plan.rate)
                .then(|| plan.kinds[(pick % plan.kinds.len() as u64) as usize]);
        (fault, delay)
    }

    fn count(&self, fault: Option<FaultKind>) {
        let mut stats = lock(&self.stats);
        stats.requests += 1;
        if let Some(kind) = fault {
            *stats.faulted.entry(kind).or_default() += 1;
        }
    }

    async fn forward(&self, body: &[u8]) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let response = self
            .client
            .post(&self.upstream)
            .header("content-type", "application/json")
            .body(body.to_vec())
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.bytes().await?.to_vec()))
    }
}

/// One connection: HTTP/1.1 requests, one after the other, until the client or a fault closes it.
async fn serve(shared: Arc<Shared>, mut socket: TcpStream) {
    let _ = socket.set_nodelay(true);
    loop {
        let Some(body) = read_request(&mut socket).await else {
            return;
        };
        if shared.in_outage() {
            lock(&shared.stats).outage_drops += 1;
            return;
        }
        let (fault, delay) = shared.choose(&body);
        shared.count(fault);
        let (status, answer) = match fault {
            Some(FaultKind::Http500) => (500, b"internal server error".to_vec()),
            Some(FaultKind::Http429) => (429, b"too many requests".to_vec()),
            Some(FaultKind::RpcError) => (200, rpc_error(&body, draw(&shared.rng))),
            Some(FaultKind::Delay) => {
                tokio::time::sleep(delay).await;
                match shared.forward(&body).await {
                    Ok(answer) => answer,
                    Err(_) => return,
                }
            }
            Some(FaultKind::Http504) => {
                let _ = shared.forward(&body).await;
                tokio::time::sleep(delay).await;
                (504, b"gateway timeout".to_vec())
            }
            Some(FaultKind::Drop) => {
                // The node gets it (a transaction is sent); the client hears nothing.
                let _ = shared.forward(&body).await;
                return;
            }
            Some(FaultKind::Malformed) => match shared.forward(&body).await {
                Ok((status, mut answer)) => {
                    answer.truncate(answer.len() / 2);
                    (status, answer)
                }
                Err(_) => return,
            },
            None => match shared.forward(&body).await {
                Ok(answer) => answer,
                Err(_) => (502, b"upstream unreachable".to_vec()),
            },
        };
        if write_response(&mut socket, status, &answer).await.is_err() {
            return;
        }
    }
}

/// The JSON-RPC methods `request` calls (several in a batch; none when it does not parse).
fn methods(request: &[u8]) -> Vec<String> {
    let method = |call: &serde_json::Value| call.get("method")?.as_str().map(str::to_owned);
    match serde_json::from_slice::<serde_json::Value>(request) {
        Ok(serde_json::Value::Array(calls)) => calls.iter().filter_map(method).collect(),
        Ok(call) => method(&call).into_iter().collect(),
        Err(_) => Vec::new(),
    }
}

/// A JSON-RPC error answering `request` (its id kept): one of the errors hosted endpoints give under
/// load, drawn by `pick`.
fn rpc_error(request: &[u8], pick: u64) -> Vec<u8> {
    let id = serde_json::from_slice::<serde_json::Value>(request)
        .ok()
        .and_then(|v| v.get("id").cloned())
        .unwrap_or(serde_json::Value::Null);
    let (code, message) = match pick % 3 {
        0 => (-32603, "internal error"),
        1 => (-32005, "limit exceeded"),
        _ => (-32000, "header not found"),
    };
    serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
        .to_string()
        .into_bytes()
}

/// Reads one HTTP request and returns its body; `None` when the connection ends or the request does
/// not parse.
async fn read_request(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(4096);
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 || buf.len() > 1 << 20 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(1 << 16)];
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(body)
}

async fn write_response(socket: &mut TcpStream, status: u16, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Status",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    // One write: a head and a body sent apart wait on the peer's delayed acknowledgement.
    let mut message = head.into_bytes();
    message.extend_from_slice(body);
    socket.write_all(&message).await?;
    socket.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::trouble::Trouble;
    use alloy::providers::{Provider, ProviderBuilder};

    /// A JSON-RPC server on loopback answering every request with chain id 7.
    async fn chain_id_server() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while let Some(body) = read_request(&mut socket).await {
                        let id = serde_json::from_slice::<serde_json::Value>(&body)
                            .ok()
                            .and_then(|v| v.get("id").cloned())
                            .unwrap_or_default();
                        let answer =
                            serde_json::json!({"jsonrpc": "2.0", "id": id, "result": "0x7"})
                                .to_string();
                        if write_response(&mut socket, 200, answer.as_bytes())
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        url
    }

    fn client(url: &str) -> alloy::providers::DynProvider {
        ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_http(url.parse().unwrap())
            .erased()
    }

    fn loopback() -> SocketAddr {
        "127.0.0.1:0".parse().unwrap()
    }

    /// A proxy on loopback in front of `upstream`, failing as `plan` says.
    async fn failing(upstream: &str, plan: FaultPlan) -> FaultProxy {
        FaultProxy::start(upstream, loopback(), plan).await.unwrap()
    }

    #[tokio::test]
    async fn every_kind_fails_as_a_hosted_endpoint_does() {
        let upstream = chain_id_server().await;
        let expected = [
            (FaultKind::Http500, Trouble::ServerError),
            (FaultKind::Http429, Trouble::RateLimited),
            (FaultKind::Malformed, Trouble::Malformed),
            (FaultKind::Drop, Trouble::Connection),
            (FaultKind::Http504, Trouble::Timeout),
        ];
        for (kind, trouble) in expected {
            let proxy = failing(
                &upstream,
                FaultPlan {
                    rate: 1.0,
                    kinds: vec![kind],
                    delay: (Duration::from_millis(10), Duration::from_millis(20)),
                    ..Default::default()
                },
            )
            .await;
            let err = client(&proxy.url()).get_chain_id().await.unwrap_err();
            assert_eq!(Trouble::of(&err), trouble, "{kind:?}: {err}");
        }
        let proxy = failing(
            &upstream,
            FaultPlan {
                rate: 1.0,
                kinds: vec![FaultKind::RpcError],
                ..Default::default()
            },
        )
        .await;
        for _ in 0..3 {
            let err = client(&proxy.url()).get_chain_id().await.unwrap_err();
            assert!(Trouble::of(&err).is_transient(), "{err}");
        }
        // A late answer still arrives.
        let proxy = failing(
            &upstream,
            FaultPlan {
                rate: 1.0,
                kinds: vec![FaultKind::Delay],
                delay: (Duration::from_millis(50), Duration::from_millis(60)),
                ..Default::default()
            },
        )
        .await;
        let started = Instant::now();
        assert_eq!(client(&proxy.url()).get_chain_id().await.unwrap(), 7);
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[tokio::test]
    async fn the_share_failed_follows_the_rate_and_the_seed_repeats_it() {
        let upstream = chain_id_server().await;
        let run = |seed| {
            let upstream = upstream.clone();
            async move {
                let proxy = failing(
                    &upstream,
                    FaultPlan {
                        rate: 0.3,
                        kinds: vec![FaultKind::Http500],
                        seed,
                        ..Default::default()
                    },
                )
                .await;
                let rpc = client(&proxy.url());
                let mut outcomes = Vec::new();
                for _ in 0..200 {
                    outcomes.push(rpc.get_chain_id().await.is_ok());
                }
                outcomes
            }
        };
        let first = run(42).await;
        let failed = first.iter().filter(|ok| !**ok).count();
        assert!((40..=80).contains(&failed), "{failed} of 200 at 30%");
        assert_eq!(
            run(42).await,
            first,
            "the same seed fails the same requests"
        );
        assert_ne!(run(43).await, first);
    }

    #[tokio::test]
    async fn an_outage_refuses_everything_until_it_ends_and_faults_stop_when_bounded() {
        let upstream = chain_id_server().await;
        let proxy = failing(
            &upstream,
            FaultPlan {
                rate: 1.0,
                kinds: vec![FaultKind::Http500],
                active_for: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        )
        .await;
        let rpc = client(&proxy.url());
        assert!(rpc.get_chain_id().await.is_err(), "faults while active");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(rpc.get_chain_id().await.unwrap(), 7, "clean after its time");
        proxy.outage(Duration::from_millis(300));
        assert!(rpc.get_chain_id().await.is_err(), "gone during the outage");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert_eq!(rpc.get_chain_id().await.unwrap(), 7, "back after it");
        assert!(proxy.stats().outage_drops >= 1);
    }

    #[tokio::test]
    async fn only_the_methods_named_fail() {
        let upstream = chain_id_server().await;
        let proxy = failing(
            &upstream,
            FaultPlan {
                rate: 1.0,
                kinds: vec![FaultKind::Http500],
                methods: vec!["eth_chainId".to_owned()],
                ..Default::default()
            },
        )
        .await;
        let rpc = client(&proxy.url());
        for _ in 0..3 {
            assert!(rpc.get_chain_id().await.is_err(), "eth_chainId fails");
            assert_eq!(rpc.get_block_number().await.unwrap(), 7, "others pass");
        }
        let stats = proxy.stats();
        assert_eq!((stats.requests, stats.faulted[&FaultKind::Http500]), (6, 3));
        assert_eq!(
            methods(br#"[{"method":"eth_call"},{"method":"eth_getLogs"}]"#),
            ["eth_call", "eth_getLogs"]
        );
        assert!(methods(b"not json").is_empty());
    }

    #[tokio::test]
    async fn it_listens_on_loopback_only() {
        let err = FaultProxy::start(
            "http://127.0.0.1:1",
            "0.0.0.0:0".parse().unwrap(),
            FaultPlan::default(),
        )
        .await
        .err()
        .unwrap();
        assert!(matches!(err, ProxyError::NotLoopback(_)));
    }
}
