//! `cascade run`: the daemon. Checks the config against the chain, then follows it, liquidating every
//! position that becomes liquidatable and profitable, until SIGINT / SIGTERM.

use crate::{
    config::{Config, MetricsConfig},
    keeper::{
        Keeper,
        startup::{self, RunOptions, Running},
        summary,
    },
    telemetry::metrics,
    watcher::follow::follow,
};
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Arguments of `cascade run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Send liquidations to a local anvil fork of the chain instead of the chain itself, and report
    /// what each would have earned. Nothing is sent upstream.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete the store and rebuild it from the chain.
    #[arg(long)]
    pub rebuild_store: bool,
}

/// Runs `cascade run` until SIGINT / SIGTERM.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let running = startup::start(
        &config,
        &args.config,
        &RunOptions {
            dry_run: args.dry_run,
            rebuild_store: args.rebuild_store,
            key: None,
        },
    )
    .await?;
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let _ = crate::telemetry::shutdown_signal().await;
        tracing::info!("shutting down: journaling what is in flight and flushing the store");
        on_signal.cancel();
    });
    let keeper = run_keeper(running, config.metrics.as_ref(), cancel).await?;
    if !keeper.outcomes().is_empty() {
        println!("{}", summary::table(keeper.outcomes()));
    }
    Ok(())
}

/// Follows the chain with a started keeper until `cancel` fires; serves metrics when configured.
/// Returns the keeper, with every outcome of the run. The journal is written before each send, so stopping at any
/// point loses nothing; the store is flushed on the way out.
pub async fn run_keeper(
    mut running: Running,
    metrics_config: Option<&MetricsConfig>,
    cancel: CancellationToken,
) -> eyre::Result<Keeper> {
    if let Some(m) = metrics_config {
        let bound = metrics::serve(
            m.listen,
            running.meter.clone(),
            running.liveness.clone(),
            cancel.clone(),
        )
        .await?;
        tracing::info!(metrics = %format!("http://{bound}/metrics"), health = %format!("http://{bound}/health"), "serving metrics");
    }
    tracing::info!(heads = ?running.heads, positions = running.watcher.len(), "keeper running");
    let result = follow(
        &mut running.watcher,
        running.heads.clone(),
        running.block_time,
        cancel,
        &mut running.keeper,
    )
    .await;
    running.store.flush()?;
    result?;
    Ok(running.keeper)
}
