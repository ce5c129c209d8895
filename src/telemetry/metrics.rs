//! Prometheus metrics and the health endpoint.
//!
//! Metrics are recorded with the `metrics` facade wherever the event happens (the keeper's stages,
//! outcomes, the market's liquidations); RPC request counts come from the transport's [`RpcMeter`] and
//! are copied in at each scrape. `/health` answers 503 when no new block was processed for longer
//! than the configured staleness, so an orchestrator restarts a keeper stuck on a dead endpoint.

use crate::chain::metered::RpcMeter;
use axum::{Router, extract::State, http::StatusCode, routing::get};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// Per-stage latency, seconds from the block being received: `stage` is one of [`Stage`].
pub const STAGE_SECONDS: &str = "cascade_stage_seconds";
/// JSON-RPC calls by `method`.
pub const RPC_REQUESTS: &str = "cascade_rpc_requests_total";
/// Failed JSON-RPC calls by `method`.
pub const RPC_ERRORS: &str = "cascade_rpc_errors_total";
/// Positions the watcher tracks.
pub const POSITIONS: &str = "cascade_positions_tracked";
/// Debt (USD) by health-factor `band`.
pub const AT_RISK_DEBT: &str = "cascade_debt_usd_by_health";
/// Our liquidations by `outcome`: attempted, won, lost, reverted, cancelled, dropped.
pub const LIQUIDATIONS: &str = "cascade_liquidations_total";
/// Realised profit of our included liquidations, USD, after gas.
pub const REALISED_PROFIT: &str = "cascade_realised_profit_usd";
/// Every liquidation on the market, by anyone.
pub const MARKET_LIQUIDATIONS: &str = "cascade_market_liquidations_total";
/// Debt repaid by every liquidation on the market, USD.
pub const MARKET_LIQUIDATED_DEBT: &str = "cascade_market_liquidated_debt_usd";
/// Blocks a winner was ahead of us on a position we had planned.
pub const LOST_BY_BLOCKS: &str = "cascade_lost_by_blocks";
/// The last block processed.
pub const HEAD_BLOCK: &str = "cascade_head_block";
/// Plans refused, by `reason`.
pub const REFUSALS: &str = "cascade_plans_refused_total";

/// The stages of a liquidation, each timed from the block's arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Positions re-priced.
    Repriced,
    /// Plan made (sized, priced, simulated).
    Planned,
    /// Transaction signed and journaled.
    Signed,
    /// `eth_sendRawTransaction` (or the bundle) returned.
    Sent,
    /// Receipt seen.
    Included,
}

impl Stage {
    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Repriced => "repriced",
            Self::Planned => "planned",
            Self::Signed => "signed",
            Self::Sent => "sent",
            Self::Included => "included",
        }
    }
}

/// Records `stage` as reached `since` the block arrived.
pub fn stage(stage: Stage, since: Instant) {
    stage_took(stage, since.elapsed());
}

/// Records that `stage` was reached `took` after the block arrived (when it was timed elsewhere).
pub fn stage_took(stage: Stage, took: std::time::Duration) {
    metrics::histogram!(STAGE_SECONDS, "stage" => stage.label()).record(took);
}

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(STAGE_SECONDS.into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 15.0, 60.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        metrics_exporter_prometheus::Matcher::Full(LOST_BY_BLOCKS.into()),
                        &[0.0, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0],
                    )
                })
                .expect("bucket lists are non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness): keep rendering ours.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// When the keeper last processed a new block, for `/health`.
#[derive(Debug, Clone)]
pub struct Liveness {
    last: Arc<Mutex<Option<(u64, Instant)>>>,
    stale_after: Duration,
}

impl Liveness {
    /// Stale when no block for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            last: Arc::new(Mutex::new(None)),
            stale_after,
        }
    }

    /// A new block was processed.
    pub fn block(&self, number: u64) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((number, Instant::now()));
        }
        metrics::gauge!(HEAD_BLOCK).set(number as f64);
    }

    /// `Ok(description)` when fresh, `Err(description)` when stale or before the first block.
    pub fn check(&self) -> Result<String, String> {
        match self.last.lock().ok().and_then(|l| *l) {
            None => Err("no block processed yet".into()),
            Some((n, at)) if at.elapsed() > self.stale_after => Err(format!(
                "stale: last block {n} processed {} s ago (limit {} s)",
                at.elapsed().as_secs(),
                self.stale_after.as_secs()
            )),
            Some((n, at)) => Ok(format!(
                "ok: block {n} processed {} ms ago",
                at.elapsed().as_millis()
            )),
        }
    }
}

#[derive(Clone)]
struct Served {
    handle: PrometheusHandle,
    meter: RpcMeter,
    liveness: Liveness,
}

/// Serves `/metrics` and `/health` on `listen` until `cancel` fires. Returns once the port is bound
/// (the error names the address when it cannot be).
pub async fn serve(
    listen: SocketAddr,
    meter: RpcMeter,
    liveness: Liveness,
    cancel: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let state = Served {
        handle: install(),
        meter,
        liveness,
    };
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/health", get(health))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!(
                "cannot serve metrics on {listen}: {e} (set [metrics] listen to a free address)"
            ),
        )
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        let shutdown = async move { cancel.cancelled().await };
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(bound)
}

async fn render(State(s): State<Served>) -> String {
    let counts = s.meter.snapshot();
    for (method, n) in &counts.by_method {
        metrics::counter!(RPC_REQUESTS, "method" => method.clone()).absolute(*n);
    }
    for (method, n) in &counts.errors_by_method {
        metrics::counter!(RPC_ERRORS, "method" => method.clone()).absolute(*n);
    }
    s.handle.render()
}

async fn health(State(s): State<Served>) -> (StatusCode, String) {
    match s.liveness.check() {
        Ok(msg) => (StatusCode::OK, msg),
        Err(msg) => (StatusCode::SERVICE_UNAVAILABLE, msg),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_stale_without_recent_blocks() {
        let live = Liveness::new(Duration::from_millis(30));
        assert!(live.check().is_err(), "no block yet");
        live.block(7);
        assert!(live.check().unwrap().contains("block 7"));
        std::thread::sleep(Duration::from_millis(60));
        let err = live.check().unwrap_err();
        assert!(err.contains("stale") && err.contains("block 7"), "{err}");
    }
}
