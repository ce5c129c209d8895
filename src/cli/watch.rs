//! `cascade watch`: follow the chain and report positions as they become liquidatable.

use crate::{
    chain,
    cli::positions::open_watcher,
    config::Config,
    units::u256_to_f64,
    watcher::follow::{Heads, follow},
};
use std::{collections::BTreeSet, path::PathBuf, time::Duration};
use tokio_util::sync::CancellationToken;

/// Arguments of `cascade watch`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file.
    #[arg(long)]
    pub config: PathBuf,
    /// Delete the store and rebuild it from the chain.
    #[arg(long)]
    pub rebuild_store: bool,
}

/// Runs `cascade watch` until SIGINT / SIGTERM.
pub async fn run(args: Args) -> eyre::Result<()> {
    let config = Config::load(&args.config)?;
    let (store, mut watcher, url) = open_watcher(&config, &args.config, args.rebuild_store).await?;
    let block_time = Duration::from_secs(config.chain.block_time_secs.unwrap_or(12));
    let heads = Heads::for_url(&url, block_time);
    tracing::info!(rpc = %chain::redact_url(&url), ?heads, "following the chain");

    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        let _ = crate::telemetry::shutdown_signal().await;
        on_signal.cancel();
    });
    let mut known = BTreeSet::new();
    follow(&mut watcher, heads, block_time, cancel, &mut |_: &_, report: crate::watcher::SyncReport| {
        let Some(block) = report.block else {
            return Ok::<_, eyre::Report>(());
        };
        tracing::info!(
            block = block.number,
            loaded = report.loaded,
            repriced = report.repriced,
            reprice_us = report.reprice_time.as_micros() as u64,
            liquidatable = report.liquidatable.len(),
            reorg_depth = report.reorg_depth,
            "block"
        );
        let now: BTreeSet<_> = report.liquidatable.iter().map(|c| c.user).collect();
        for c in report.liquidatable.iter().filter(|c| !known.contains(&c.user)) {
            tracing::warn!(
                borrower = %c.user,
                hf = %c.health_factor,
                onchain_hf = %c.onchain_health_factor.map(|h| h.to_string()).unwrap_or_else(|| "?".into()),
                debt_usd = u256_to_f64(c.debt_base) / 1e8,
                "liquidatable"
            );
        }
        known = now;
        Ok(())
    })
    .await?;
    store.flush()?;
    Ok(())
}
