//! Prometheus metrics and the health endpoint.
//!
//! Metrics are recorded with the `metrics` facade wherever the event happens (the keeper's stages,
//! outcomes, the market's liquidations); RPC request counts come from the transport's [`RpcMeter`] and
//! are copied in at each scrape. `/health` answers 503 when no new block was processed for longer
//! than the configured staleness (three block times by default), so an orchestrator or an alert sees
//! a keeper gone blind within seconds; its body says how far behind the head the keeper is.

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
/// Failed JSON-RPC calls by `method` and `kind` (`chain::trouble::Trouble`'s labels: timeout,
/// connection, rate_limited, server_error, internal, limit_exceeded, malformed, header_not_found,
/// revert, rejected).
pub const RPC_ERRORS: &str = "cascade_rpc_errors_total";
/// The wait before the next retry of a failed sync, seconds (0 while syncs succeed).
pub const RPC_BACKOFF: &str = "cascade_rpc_backoff_seconds";
/// Blocks between the newest head seen and the last block processed.
pub const LAG_BLOCKS: &str = "cascade_lag_blocks";
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
/// The cascade map's headline: debt (USD) that a fall of `drop` percent (5, 10, 20) of the market's
/// largest volatile collateral makes liquidatable, `kind` = `round0` (at the fallen price alone) or
/// `cascade` (after the forced sales and the oracle following the pools).
pub const LIQUIDATABLE_DEBT: &str = "cascade_liquidatable_debt_usd";
/// Plans refused, by `reason`.
pub const REFUSALS: &str = "cascade_plans_refused_total";

/// Every metric the keeper exports (the dashboard in `docs/grafana/cascade.json` charts each).
pub const ALL: [&str; 16] = [
    STAGE_SECONDS,
    RPC_REQUESTS,
    RPC_ERRORS,
    crate::chain::failover::RPC_RETRIES,
    RPC_BACKOFF,
    LAG_BLOCKS,
    POSITIONS,
    AT_RISK_DEBT,
    LIQUIDATIONS,
    REALISED_PROFIT,
    MARKET_LIQUIDATIONS,
    MARKET_LIQUIDATED_DEBT,
    LOST_BY_BLOCKS,
    HEAD_BLOCK,
    LIQUIDATABLE_DEBT,
    REFUSALS,
];

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

/// The wait before the next retry of a failed sync.
pub fn set_backoff(wait: Duration) {
    metrics::gauge!(RPC_BACKOFF).set(wait.as_secs_f64());
}

/// The default staleness of `/health` on a chain of `block_time`: three blocks, and never under
/// three seconds (a block can be late).
pub fn default_stale_after(block_time: Duration) -> Duration {
    (block_time * 3).max(Duration::from_secs(3))
}

/// When the keeper last processed a new block, and the newest head it has seen, for `/health`.
#[derive(Debug, Clone)]
pub struct Liveness {
    state: Arc<Mutex<LivenessState>>,
    stale_after: Duration,
}

#[derive(Debug, Default)]
struct LivenessState {
    /// The last block processed, and when.
    processed: Option<(u64, Instant)>,
    /// The newest head seen.
    head: Option<u64>,
}

/// What `/health` says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HealthReport {
    /// `ok`, or `stale`.
    pub status: &'static str,
    /// The last block processed.
    pub block: Option<u64>,
    /// The newest head seen.
    pub head: Option<u64>,
    /// Blocks between them.
    pub lag_blocks: Option<u64>,
    /// Milliseconds since the last block was processed.
    pub since_block_ms: Option<u64>,
    /// The staleness limit, milliseconds.
    pub stale_after_ms: u64,
}

impl Liveness {
    /// Stale when no block for `stale_after`.
    pub fn new(stale_after: Duration) -> Self {
        Self {
            state: Arc::default(),
            stale_after,
        }
    }

    /// A new block was processed.
    pub fn block(&self, number: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.processed = Some((number, Instant::now()));
            s.head = s.head.max(Some(number));
            metrics::gauge!(LAG_BLOCKS).set(lag(&s).unwrap_or(0) as f64);
        }
        metrics::gauge!(HEAD_BLOCK).set(number as f64);
    }

    /// A head arrived (before it is processed).
    pub fn head(&self, number: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.head = s.head.max(Some(number));
            metrics::gauge!(LAG_BLOCKS).set(lag(&s).unwrap_or(0) as f64);
        }
    }

    /// Fresh (`Ok`) or stale (`Err`, also before the first block), with the figures.
    pub fn check(&self) -> Result<HealthReport, HealthReport> {
        let s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let since = s.processed.map(|(_, at)| at.elapsed());
        let fresh = since.is_some_and(|e| e <= self.stale_after);
        let report = HealthReport {
            status: if fresh { "ok" } else { "stale" },
            block: s.processed.map(|(n, _)| n),
            head: s.head,
            lag_blocks: lag(&s),
            since_block_ms: since.map(|e| e.as_millis() as u64),
            stale_after_ms: self.stale_after.as_millis() as u64,
        };
        if fresh { Ok(report) } else { Err(report) }
    }
}

fn lag(s: &LivenessState) -> Option<u64> {
    Some(s.head?.saturating_sub(s.processed?.0))
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
    for ((method, kind), n) in &counts.errors {
        metrics::counter!(RPC_ERRORS, "method" => method.clone(), "kind" => *kind).absolute(*n);
    }
    s.handle.render()
}

async fn health(State(s): State<Served>) -> (StatusCode, String) {
    let (status, report) = match s.liveness.check() {
        Ok(report) => (StatusCode::OK, report),
        Err(report) => (StatusCode::SERVICE_UNAVAILABLE, report),
    };
    (
        status,
        serde_json::to_string(&report).unwrap_or_else(|_| report.status.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dashboard_charts_every_metric() {
        let dashboard: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/grafana/cascade.json"))
                .expect("the dashboard is JSON");
        let exprs: Vec<String> = dashboard["panels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
            .map(|t| t["expr"].as_str().unwrap().to_string())
            .collect();
        for name in ALL {
            assert!(
                exprs.iter().any(|e| e.contains(name)),
                "no panel charts {name}"
            );
        }
    }

    #[test]
    fn health_is_stale_without_recent_blocks_and_says_how_far_behind() {
        let live = Liveness::new(Duration::from_secs(3600));
        assert_eq!(live.check().unwrap_err().status, "stale", "no block yet");
        live.block(7);
        let ok = live.check().unwrap();
        assert_eq!(
            (ok.status, ok.block, ok.lag_blocks),
            ("ok", Some(7), Some(0))
        );
        live.head(10);
        assert_eq!(live.check().unwrap().lag_blocks, Some(3));
        // A limit already passed: stale, whatever the wall clock does.
        let stale = Liveness::new(Duration::ZERO);
        stale.block(7);
        std::thread::sleep(Duration::from_millis(2));
        let report = stale.check().unwrap_err();
        assert_eq!((report.status, report.block), ("stale", Some(7)));
    }

    #[test]
    fn staleness_defaults_to_three_block_times_and_three_seconds_at_least() {
        assert_eq!(
            default_stale_after(Duration::from_secs(12)),
            Duration::from_secs(36)
        );
        assert_eq!(
            default_stale_after(Duration::from_secs(1)),
            Duration::from_secs(3)
        );
    }
}
